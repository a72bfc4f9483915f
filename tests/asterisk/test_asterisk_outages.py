"""When the PBX or the CRM is not there: Asterisk stopped, frozen (SIGSTOP) and restarted,
and a CRM that is down while calls end. The gateway must answer a clear error within its
deadline and never place a call it did not report; the webhooks of calls that ended while
the CRM was down arrive once it is back, each exactly once.
"""

import time

import pytest

import harness
from call_checks import check_call_that_never_connected, check_connected_call

# The CGI's deadline ([ami] connect_timeout 1 + timeout 2 in the bench's config), plus an
# interpreter start and its imports.
DEADLINE = 1 + 2 + 3


def refused_call(pbx, destination):
    """A POST that must fail: its reply, and how long it took."""
    params = {"extension": harness.ANSWERING_AGENTS[0], "destination": destination,
              "call_in_out": False}
    started = time.monotonic()
    response = pbx.post(params)
    return response, time.monotonic() - started


def check_refused(response, seconds, destination):
    body = response.json()
    assert response.status_code == 503, body
    assert response.headers["Content-Type"] == "application/json; charset=utf-8"
    assert body["status"] == "503 Service Unavailable" and body["icon"] == "error"
    assert body["message"] == "We fail on making a call. caller : %s, callee : %s" % (
        harness.ANSWERING_AGENTS[0], destination)
    assert "uniqueid" not in body  # nothing was sent to Asterisk
    assert seconds < DEADLINE, seconds
    return body


def test_asterisk_stopped_is_a_503_at_once_and_a_restarted_asterisk_places_calls(pbx):
    crm_before = len(pbx.crm.requests)
    pbx.asterisk.stop()
    try:
        response, seconds = refused_call(pbx, "12125557001")
        body = check_refused(response, seconds, "12125557001")
        assert "refused" in body["error"].lower() or "connect" in body["error"].lower(), body
    finally:
        pbx.restart()
    # The softphone did not register again: its contact survived the restart in AstDB.
    call = pbx.place("after restart", harness.SIPP_AGENT, "12125557011", False)
    pbx.wait_until_over([call])
    check_connected_call(pbx, call)
    assert len(pbx.crm.requests) == crm_before + 2  # the new call's two webhooks, no others


def test_a_frozen_asterisk_is_a_503_within_the_deadline_and_calls_go_once_it_thaws(pbx):
    pbx.asterisk.freeze()
    try:
        # The kernel still accepts the TCP connection; no banner ever comes.
        response, seconds = refused_call(pbx, "12125557021")
        check_refused(response, seconds, "12125557021")
    finally:
        pbx.asterisk.thaw()
    call = pbx.place("after thaw", harness.BUSY_AGENTS[2], "12125557031", True)
    pbx.wait_until_over([call])
    check_call_that_never_connected(pbx, call, "busy", 17)
    # The frozen request never sent its Originate: no call of it after the thaw.
    assert [r for r in pbx.crm.requests if r.json["dialed_number"] == "12125557021"] == []


@pytest.mark.usefixtures("crm_up")
def test_webhooks_of_calls_that_end_while_the_crm_is_down_arrive_once_it_is_back(pbx):
    calls = pbx.place_all([
        ("agent first", harness.ANSWERING_AGENTS[10], "12125557041", False, {}),
        ("dialer", harness.ANSWERING_AGENTS[11], "12125557051", True, {}),
    ])
    deadline = time.monotonic() + 30
    while not all(pbx.webhooks(c.uniqueid, "connect") for c in calls):
        assert time.monotonic() < deadline, "no connects"
        time.sleep(0.1)
    pbx.crm.down()
    # Both calls end (the lead hangs up) while nobody listens.
    while not all(pbx.observer.call_over(c.uniqueid) for c in calls):
        assert time.monotonic() < deadline, "the calls did not end"
        time.sleep(0.1)
    assert all(pbx.webhooks(c.uniqueid, "hangup") == [] for c in calls)
    # The hook spooled the hangups and the deliverer has tried (and failed) to send.
    while len(pbx.spool_pending()) < 2:
        assert time.monotonic() < deadline, "the hangups were not spooled"
        time.sleep(0.1)
    back = time.time()
    pbx.crm.up()
    pbx.wait_until_over(calls, timeout=60)
    for call in calls:
        [hangup] = pbx.webhooks(call.uniqueid, "hangup")
        assert hangup.time >= back
        check_connected_call(pbx, call)
