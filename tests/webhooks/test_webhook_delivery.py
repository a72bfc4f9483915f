"""Delivering webhooks (SPEC §6): a real HTTP server on 127.0.0.1 stands in for the CRM and
records every request; it can answer 500, 410, 429 with Retry-After, hang, or be down.

Time is injected (`Clock`), so back-off, Retry-After and the 24-hour limit are checked
without waiting. Also here: the per-call order (a hangup never before its connect, even
when the connect's first delivery fails), a 200-event outage and its recovery, `webhooks
retry`, and kill -9 of a deliverer in the middle of a send.

The CRM stand-in is tests/crm_standin.py; the `crm` fixture is in conftest.py.
"""

import contextlib
import io
import os
import signal
import subprocess
import sys
import time

import pytest

from callexchange.cli import webhooks as cli_webhooks
from callexchange.webhooks import retry
from callexchange.webhooks.deliverer import _BOOT, PROBE_INTERVAL
from callexchange.config import load_config
from callexchange.webhooks.spool import Spool
from callexchange.webhooks.deliverer import Deliverer
from callexchange.webhooks.payload import make_record
from testconfig import config_text
from clock import Clock
from crm_standin import SECRET
from paths import LIB


def make_config(tmp_path, url, **webhook):
    values = {"url": url, "secret": SECRET, "timeout": "2"}
    values.update(webhook)
    path = tmp_path / "callexchange.ini"
    path.write_text(config_text(tmp_path, 5038, webhook=values))
    return load_config(str(path))


def call_variables(uniqueid, **extra):
    values = {"CX_UNIQUEID": uniqueid, "CX_DESTINATION": "12127773456",
              "CX_EXTENSION": "2001", "CX_ANI": "12125550100", "CX_CRM_ID": "",
              "CX_RECORDING": ""}
    values.update(extra)
    return values


ANSWERED = {"DIALSTATUS": "ANSWER", "ANSWEREDTIME": "25", "HANGUPCAUSE": "16"}


def spool_event(spool, config, event, uniqueid, now, **extra):
    variables = call_variables(uniqueid, **(ANSWERED if event == "hangup" else {}))
    variables.update(extra)
    record = make_record(event, variables, config.webhook, config.recordings.base_url, now=now)
    return spool.add(record)


@pytest.fixture
def setup(tmp_path, crm):
    config = make_config(tmp_path, crm.url)
    spool = Spool.for_state_dir(config.state.dir)
    clock = Clock()
    deliverer = Deliverer(config, spool, clock=clock, random=lambda: 0.999999)
    return config, spool, clock, deliverer


# --- delivered, gone, retried --------------------------------------------------------------

def test_deliver_posts_each_event_once_and_empties_the_spool(setup, crm):
    config, spool, clock, deliverer = setup
    spool_event(spool, config, "connect", "1732700000.1", clock.now)
    spool_event(spool, config, "hangup", "1732700000.1", clock.now)
    summary = deliverer.deliver()
    assert summary["delivered"] == 2
    assert crm.ids() == ["msg_1732700000.1_connect", "msg_1732700000.1_hangup"]
    assert spool.pending() == [] and spool.dead() == []
    request = crm.requests[0]
    assert request.headers["content-type"] == "application/json"
    assert request.headers["x-callexchange-event"] == "connect"
    assert request.headers["webhook-signature"].startswith("v1,")


def test_deliveries_reuse_one_keep_alive_connection(setup, crm):
    config, spool, clock, deliverer = setup
    for n in range(5):
        spool_event(spool, config, "hangup", "1732700000.%d" % n, clock.now)
    deliverer.deliver()
    assert len({r.connection for r in crm.requests}) == 1


def test_a_410_stops_the_event_and_keeps_it_as_dead(setup, crm):
    config, spool, clock, deliverer = setup
    crm.answer(410, times=1)
    spool_event(spool, config, "connect", "1732700000.1", clock.now)
    spool_event(spool, config, "hangup", "1732700000.1", clock.now)
    summary = deliverer.deliver()
    assert summary["gone"] == 1 and summary["delivered"] == 1
    assert crm.ids() == ["msg_1732700000.1_connect", "msg_1732700000.1_hangup"]
    dead = spool.dead()
    assert [e.event for e in dead] == ["connect"]
    assert "410" in spool.read(dead[0].name, dead=True)["dead_reason"]
    clock.advance(3600)
    deliverer.deliver()
    assert len(crm.requests) == 2  # never re-sent by itself


@pytest.mark.parametrize("status, expected", [
    # Refused by a CRM that is up (4xx): this event backs off alone, doubling from 5 s.
    (400, [5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 320.0]),
    # The CRM is unwell (5xx): the event waits for the CRM, probed at least every 30 s.
    (500, [5.0, 10.0, 20.0, 30.0, 30.0, 30.0, 30.0]),
])
def test_a_failed_event_is_retried_with_exponential_backoff(setup, crm, status, expected):
    config, spool, clock, deliverer = setup
    crm.answer(status)
    spool_event(spool, config, "connect", "1732700000.1", clock.now)
    waits = []
    for _ in range(7):
        deliverer.deliver()
        record = spool.read(spool.pending()[0].name)
        waits.append(round(record["next_at"] - clock.now, 3))
        assert record["last_error"].startswith("HTTP %d" % status)
        clock.now = max(record["next_at"], deliverer.endpoint_state().get("next_at", 0))
    # random() is ~1: the full delay.
    assert waits == expected
    assert len(crm.requests) == 7
    crm.answer(200)
    deliverer.deliver()
    assert spool.pending() == [] and len(crm.requests) == 8


def test_backoff_has_jitter_between_half_and_full_delay():
    assert retry.backoff_delay(1, 0.0) == 2.5
    assert retry.backoff_delay(3, 0.5) == pytest.approx(20 * 0.75)
    assert retry.backoff_delay(40, 0.999) <= retry.BACKOFF_CAP


def test_nothing_is_sent_before_the_next_try_is_due(setup, crm):
    config, spool, clock, deliverer = setup
    crm.answer(500, times=1)
    spool_event(spool, config, "connect", "1732700000.1", clock.now)
    deliverer.deliver()
    clock.advance(4)
    deliverer.deliver()
    assert len(crm.requests) == 1
    clock.advance(1.01)
    deliverer.deliver()
    assert len(crm.requests) == 2 and spool.pending() == []


def test_retry_after_seconds_is_honoured(setup, crm):
    config, spool, clock, deliverer = setup
    crm.answer(429, retry_after=120, times=1)
    spool_event(spool, config, "connect", "1732700000.1", clock.now)
    deliverer.deliver()
    record = spool.read(spool.pending()[0].name)
    assert record["next_at"] == pytest.approx(clock.now + 120)
    clock.advance(119)
    deliverer.deliver()
    assert len(crm.requests) == 1
    clock.advance(1)
    deliverer.deliver()
    assert len(crm.requests) == 2 and spool.pending() == []


def test_retry_after_as_an_http_date_is_honoured():
    now = 1_732_700_000.0
    date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(now + 300))
    assert retry.parse_retry_after(date, now) == pytest.approx(300)
    assert retry.parse_retry_after("soon", now) is None
    assert retry.parse_retry_after("", now) is None


def test_an_unreachable_crm_pauses_sends_and_new_events_probe_it(setup, crm):
    config, spool, clock, deliverer = setup
    crm.down()
    for n in range(3):
        spool_event(spool, config, "hangup", "1732700000.%d" % n, clock.now)
    summary = deliverer.deliver()
    # One probe, not three doomed connections.
    assert summary["retry"] == 1 and summary["blocked"] is True
    assert [spool.read(e.name).get("attempts", 0) for e in spool.pending()] == [1, 0, 0]
    state = deliverer.endpoint_state()
    assert state["failures"] == 1 and "ConnectionError" in state["last_error"]
    # While backing off, an event never tried before may probe, once per PROBE_INTERVAL.
    assert deliverer.deliver()["retry"] == 0
    clock.advance(PROBE_INTERVAL)
    assert deliverer.next_due() <= clock.now  # the probe is due
    assert deliverer.deliver()["retry"] == 1
    assert deliverer.endpoint_state()["failures"] == 2
    crm.up()
    spool_event(spool, config, "connect", "1732700000.9", clock.now)
    clock.advance(PROBE_INTERVAL)
    summary = deliverer.deliver()
    # The probe (the oldest event never tried) got through: the CRM is back, everything
    # due goes.
    assert summary["delivered"] >= 2 and summary["blocked"] is False
    assert crm.ids()[0] in ("msg_1732700000.1_hangup", "msg_1732700000.2_hangup")
    assert "msg_1732700000.9_connect" in crm.ids()
    assert deliverer.endpoint_state() == {}
    clock.advance(60)
    deliverer.deliver()
    assert spool.pending() == [] and len(crm.ids()) == 4


def test_a_hanging_crm_times_out_and_is_retried(tmp_path, crm):
    config = make_config(tmp_path, crm.url, timeout="0.3")
    spool = Spool.for_state_dir(config.state.dir)
    clock = Clock()
    deliverer = Deliverer(config, spool, clock=clock, random=lambda: 0.0)
    crm.hang()
    spool_event(spool, config, "connect", "1732700000.1", clock.now)
    started = time.monotonic()
    summary = deliverer.deliver()
    assert time.monotonic() - started < 2
    assert summary["retry"] == 1 and "Timeout" in summary["last_error"]
    crm.release()
    clock.advance(3)
    deliverer.deliver()
    assert spool.pending() == []
    assert crm.ids() == ["msg_1732700000.1_connect"] * 2


# --- per-call order -----------------------------------------------------------------------

def test_a_hangup_waits_for_its_connect_even_when_the_connect_fails(setup, crm):
    config, spool, clock, deliverer = setup
    crm.answer(400, times=1)  # the CRM refuses the connect once: not an outage
    spool_event(spool, config, "connect", "1732700000.1", clock.now)
    spool_event(spool, config, "hangup", "1732700000.1", clock.now)
    spool_event(spool, config, "hangup", "1732700000.2", clock.now)
    deliverer.deliver()
    # The other call goes on; this call's hangup waits.
    assert crm.ids() == ["msg_1732700000.1_connect", "msg_1732700000.2_hangup"]
    clock.advance(5)
    deliverer.deliver()
    assert crm.ids()[2:] == ["msg_1732700000.1_connect", "msg_1732700000.1_hangup"]


def test_a_hangup_spooled_before_its_connect_is_still_sent_after_it(setup, crm):
    config, spool, clock, deliverer = setup
    spool_event(spool, config, "hangup", "1732700000.1", clock.now)
    spool_event(spool, config, "connect", "1732700000.1", clock.now)
    deliverer.deliver()
    assert crm.ids() == ["msg_1732700000.1_connect", "msg_1732700000.1_hangup"]


def test_a_dead_connect_lets_its_hangup_go(setup, crm):
    config, spool, clock, deliverer = setup
    crm.answer(410, times=1)
    spool_event(spool, config, "connect", "1732700000.1", clock.now)
    spool_event(spool, config, "hangup", "1732700000.1", clock.now)
    deliverer.deliver()
    assert crm.ids() == ["msg_1732700000.1_connect", "msg_1732700000.1_hangup"]
    assert spool.pending() == []


def test_an_outage_of_200_events_is_delivered_in_order_after_recovery(setup, crm):
    config, spool, clock, deliverer = setup
    crm.down()
    for n in range(100):
        spool_event(spool, config, "connect", "1732700000.%03d" % n, clock.now + n)
        spool_event(spool, config, "hangup", "1732700000.%03d" % n, clock.now + n)
    for _ in range(5):  # an hour of failing probes
        deliverer.deliver()
        clock.advance(720)
    assert len(spool.pending()) == 200
    crm.up()
    summary = deliverer.deliver(all_now=True)
    assert summary["delivered"] == 200 and spool.pending() == []
    ids = crm.ids()
    assert len(set(ids)) == 200
    for n in range(100):
        assert ids.index("msg_1732700000.%03d_connect" % n) < \
            ids.index("msg_1732700000.%03d_hangup" % n)


# --- 24 hours, then dead; webhooks retry --------------------------------------------------

def run_cli(handler, argv, config):
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--config")
    cli_webhooks.register(parser.add_subparsers())
    args = parser.parse_args(["--config", config.path] + list(argv))
    output = []

    class Out:
        def write(self, text):
            output.append(text)

    status = args.handler(args, out=Out())
    return status, "".join(output)


def test_an_event_is_dead_after_24_hours_and_retry_sends_it_again(setup, crm):
    # (A CRM that is down is probed every 30 s instead: see the outage tests.)
    status, tries = 422, (15, 40)  # refused by a CRM that is up: ~30 tries in a day
    config, spool, clock, deliverer = setup
    crm.answer(status)
    spool_event(spool, config, "connect", "1732700000.1", clock.now)
    attempts = 0
    while spool.pending():
        deliverer.deliver()
        attempts += 1
        clock.now = max([clock.now + 1] + [spool.read(e.name).get("next_at", 0)
                                            for e in spool.pending()]
                        + [deliverer.endpoint_state().get("next_at", 0)])
        assert attempts < 100
    dead = spool.dead()
    assert len(dead) == 1
    record = spool.read(dead[0].name, dead=True)
    assert "24 hours" in record["dead_reason"] and "HTTP %d" % status in record["dead_reason"]
    assert clock.now - record["occurred"] >= retry.MAX_AGE
    sent = len(crm.requests)
    assert tries[0] < sent < tries[1]

    status, text = run_cli(None, ["webhooks", "status"], config)
    assert status == 0 and "dead: 1" in text and "msg_1732700000.1_connect" in text

    crm.answer(200)
    status, text = run_cli(None, ["webhooks", "retry", "msg_1732700000.1_connect"], config)
    assert status == 0 and "delivered 1" in text
    assert spool.dead() == [] and spool.pending() == []
    assert crm.requests[-1].id == "msg_1732700000.1_connect"
    assert crm.requests[-1].body == crm.requests[0].body


def test_retry_all_dead(setup, crm):
    config, spool, clock, deliverer = setup
    crm.answer(410)
    for n in range(3):
        spool_event(spool, config, "hangup", "1732700000.%d" % n, clock.now)
    deliverer.deliver()
    assert len(spool.dead()) == 3
    crm.answer(200)
    status, text = run_cli(None, ["webhooks", "retry", "--all-dead"], config)
    assert status == 0 and "queued 3" in text and "delivered 3" in text
    assert spool.dead() == []


def test_retry_of_an_unknown_id_fails(setup):
    config = setup[0]
    status, _ = run_cli(None, ["webhooks", "retry", "msg_nope_connect"], config)
    assert status == 1


def test_status_lists_pending_events_with_their_last_error(setup, crm):
    config, spool, clock, deliverer = setup
    crm.answer(500)
    spool_event(spool, config, "connect", "1732700000.7", clock.now)
    deliverer.deliver()
    status, text = run_cli(None, ["webhooks", "status"], config)
    assert "pending: 1" in text and "HTTP 500" in text and "msg_1732700000.7_connect" in text
    assert "deliverer: not running" in text


def test_deliver_command_sends_what_is_due_and_all_now_ignores_backoff(setup, crm):
    config, spool, clock, deliverer = setup
    crm.answer(500, times=1)
    spool_event(spool, config, "connect", "1732700000.1", time.time())
    status, text = run_cli(None, ["webhooks", "deliver"], config)
    assert status == 0 and "to retry 1" in text and "pending 1" in text
    status, text = run_cli(None, ["webhooks", "deliver"], config)
    assert len(crm.requests) == 1  # backing off
    status, text = run_cli(None, ["webhooks", "deliver", "--all-now"], config)
    assert "delivered 1" in text and "pending 0" in text


def test_secret_prints_a_standard_webhooks_secret(setup):
    import base64

    status, text = run_cli(None, ["webhooks", "secret"], setup[0])
    secret = text.strip()
    assert status == 0 and secret.startswith("whsec_")
    assert len(base64.b64decode(secret[6:], validate=True)) >= 24
    assert run_cli(None, ["webhooks", "secret"], setup[0])[1].strip() != secret


def test_a_secret_that_cannot_sign_is_a_config_error_naming_its_line(tmp_path, crm):
    from callexchange.config import ConfigError
    with pytest.raises(ConfigError) as raised:
        make_config(tmp_path, crm.url, secret="not base64!")
    assert "[webhook] secret must be whsec_<base64>" in str(raised.value)
    assert ":%d:" % raised.value.line in str(raised.value) and raised.value.line > 0
    assert "not base64" not in str(raised.value)


def test_a_bad_secret_keeps_events_unsent(tmp_path, crm):
    # (The config refuses one; this is the deliverer's own guard, should one get through.)
    config = make_config(tmp_path, crm.url)
    config.webhook.secret = "not base64!"
    spool = Spool.for_state_dir(config.state.dir)
    deliverer = Deliverer(config, spool, clock=Clock())
    spool_event(spool, config, "connect", "1732700000.1", 1_732_700_000)
    summary = deliverer.deliver()
    assert summary["retry"] == 1 and "whsec_" in summary["last_error"]
    assert crm.requests == []


def test_tls_is_verified_unless_turned_off(tmp_path):
    seen = {}

    class Session:
        def post(self, url, **kwargs):
            seen.update(kwargs)
            raise webhooks_requests().exceptions.ConnectionError("stop here")

    for setting, expected in (("yes", True), ("no", False)):
        config = make_config(tmp_path, "https://crm.example.test/hook", verify_tls=setting,
                             timeout="7")
        Deliverer(config, session=Session()).send(
            make_record("connect", call_variables("1.2"), config.webhook, now=1))
        assert seen["verify"] is expected
        assert seen["timeout"] == (7.0, 7.0) and seen["allow_redirects"] is False


def webhooks_requests():
    import requests

    return requests


# --- kill -9 of the deliverer in the middle of a send --------------------------------------

def start_background_deliverer(config):
    return subprocess.Popen(
        [sys.executable, "-c", _BOOT, LIB, config.path],
        env=dict(os.environ, CALLEXCHANGE_WEBHOOK_LINGER="1"),
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_a_deliverer_killed_mid_send_leaves_the_event_to_be_sent_again(tmp_path, crm):
    config = make_config(tmp_path, crm.url, timeout="30")
    spool = Spool.for_state_dir(config.state.dir)
    name = spool_event(spool, config, "connect", "1732700000.1", time.time())
    before = open(os.path.join(spool.new, name), "rb").read()
    crm.hang()
    process = start_background_deliverer(config)
    try:
        crm.wait_for(1)
        assert spool.lock_holder() == process.pid
        process.send_signal(signal.SIGKILL)
        process.wait(5)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    # Nothing half-done: the event is in new/, byte for byte as written.
    assert [e.name for e in spool.pending()] == [name]
    assert open(os.path.join(spool.new, name), "rb").read() == before
    assert spool.lock_holder() is None  # the kernel dropped the dead process's flock
    crm.release()
    crm.answer(200)
    process = start_background_deliverer(config)
    assert process.wait(20) == 0
    requests = crm.wait_for(2)
    assert [r.id for r in requests] == ["msg_1732700000.1_connect"] * 2
    assert requests[0].body == requests[1].body
    assert spool.pending() == []


def test_only_one_deliverer_runs_at_a_time(tmp_path, crm):
    config = make_config(tmp_path, crm.url)
    spool = Spool.for_state_dir(config.state.dir)
    lock = spool.try_lock()
    try:
        assert spool.try_lock() is None
        assert spool.lock_holder() == os.getpid()
    finally:
        os.close(lock)
    assert spool.lock_holder() is None


def test_a_new_event_wakes_the_lingering_deliverer(tmp_path, crm):
    config = make_config(tmp_path, crm.url)
    spool = Spool.for_state_dir(config.state.dir)
    spool_event(spool, config, "connect", "1732700000.1", time.time())
    crm.answer(400, times=1)  # refused, but the CRM is up: only this call waits
    process = subprocess.Popen(
        [sys.executable, "-c", _BOOT, LIB, config.path],
        env=dict(os.environ, CALLEXCHANGE_WEBHOOK_LINGER="1"))
    try:
        crm.wait_for(1)
        # The connect is retried in 2.5-5 s, more than the linger: the deliverer waits a
        # second for new events, and one comes.
        time.sleep(0.2)
        assert spool.lock_holder() == process.pid
        spool_event(spool, config, "hangup", "1732700000.2", time.time())
        assert spool.wake() is True
        requests = crm.wait_for(2, timeout=2)
        assert requests[1].id == "msg_1732700000.2_hangup"
        # Then a second without events: it exits; the connect waits for the timer.
        assert process.wait(10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert [e.event for e in spool.pending()] == ["connect"]
    assert spool.read(spool.pending()[0].name)["attempts"] == 1


# --- a long-running deliverer and the admin ----------------------------------------------

def test_a_deliverer_takes_up_an_edited_webhook_url(tmp_path, crm):
    from crm_standin import CrmStandIn
    config = make_config(tmp_path, crm.url)
    spool = Spool.for_state_dir(config.state.dir)
    deliverer = Deliverer(config, spool)
    spool_event(spool, config, "connect", "1732700000.1", time.time())
    deliverer.deliver()
    assert crm.wait_for(1)[0].id == "msg_1732700000.1_connect"
    other = CrmStandIn()
    try:
        make_config(tmp_path, other.url)  # the admin points [webhook] url elsewhere
        spool_event(spool, config, "connect", "1732700000.2", time.time())
        assert deliverer.refresh_config() is True
        deliverer.deliver()
        assert other.wait_for(1)[0].id == "msg_1732700000.2_connect"
        assert len(crm.requests) == 1
        assert deliverer.refresh_config() is False  # nothing changed since
    finally:
        other.close()


def test_a_broken_edit_keeps_the_last_good_config(tmp_path, crm):
    config = make_config(tmp_path, crm.url)
    deliverer = Deliverer(config, Spool.for_state_dir(config.state.dir))
    with open(config.path, "a") as handle:
        handle.write("\nbogus = 1\n")
    assert deliverer.refresh_config() is False
    assert deliverer.webhook.url == crm.url


def test_an_all_now_wake_up_is_told_apart_from_a_hooks(tmp_path):
    spool = Spool(str(tmp_path / "webhooks"))
    fd = spool.listen()
    try:
        assert spool.wake() is True
        assert Spool.drain(fd) is False
        assert spool.wake(all_now=True) is True
        spool.wake()
        assert Spool.drain(fd) is True
        assert Spool.drain(fd) is False
    finally:
        os.close(fd)


def test_deliver_all_now_makes_a_running_deliverer_ignore_its_back_off(tmp_path, crm):
    config = make_config(tmp_path, crm.url)
    spool = Spool.for_state_dir(config.state.dir)
    crm.down()
    spool_event(spool, config, "connect", "1732700000.1", time.time())
    process = subprocess.Popen(
        [sys.executable, "-c", _BOOT, LIB, config.path],
        env=dict(os.environ, CALLEXCHANGE_WEBHOOK_LINGER="30"),
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not spool.read(spool.pending()[0].name).get("attempts"):
            assert time.monotonic() < deadline, "the deliverer never tried"
            time.sleep(0.05)
        assert process.poll() is None  # backing off from the CRM, still running
        crm.up()
        crm.answer(200)
        out = io.StringIO()
        from callexchange.cli import main
        with contextlib.redirect_stdout(out):
            assert main(["--config", config.path, "webhooks", "deliver", "--all-now"]) == 0
        assert "back-off ignored" in out.getvalue()
        # Sent at once, not after the back-off (at least 2.5 s, then 5, 10...).
        (request,) = crm.wait_for(1, timeout=2.0)
        assert request.id == "msg_1732700000.1_connect"
    finally:
        process.kill()
        process.wait()
