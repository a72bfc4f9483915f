"""After a CRM outage: deliveries that verify with the official Standard Webhooks library
(each attempt signed at its own time), and prompt recovery: the CRM is probed at least
every 30 s while events are pending, and the backlog goes within 60 s of its return, in
order per call, with no new call and nothing run by hand, whoever is running: the
deliverer a hook started, or only the timer's `webhooks deliver --for 50`.

Time is injected (the deliverer's clock and its wait for wake-ups) wherever it can be, so
hours of outage take seconds; one test has a real outage of a second, with the real hook
and the real background deliverer.
"""

import argparse
import io
import json
import os
import time

import pytest

from callexchange.cli import webhooks as cli_webhooks
from callexchange.webhooks.deliverer import CRM_BACKOFF_CAP, Deliverer
from callexchange.webhooks.spool import Spool
from crm_standin import verify_request
from test_agi_hook import CALL, HANGUP, Pbx, wait_until
from test_webhook_delivery import Clock, make_config, spool_event

HOUR = 3600.0


class Outage:
    """The CRM down (connection refused) or answering 503 until the injected clock
    reaches `ends_at`, then healthy; `tick()` is called on every wait of the deliverer."""

    def __init__(self, crm, clock, kind, ends_at):
        self.crm, self.clock, self.kind, self.ends_at = crm, clock, kind, ends_at
        self.over = False
        if kind == "refused":
            crm.down()
        else:
            crm.answer(503)

    def tick(self):
        if not self.over and self.clock.now >= self.ends_at:
            self.over = True
            if self.kind == "refused":
                self.crm.up()
            self.crm.answer(200)


def fake_wait(clock, outage, limit=20000):
    """A wait for the FIFO that lets injected time pass instead of real time."""
    calls = []

    def wait(fd, seconds):
        calls.append(seconds)
        assert len(calls) < limit, "the deliverer spins"
        clock.advance(max(seconds, 0.0))
        outage.tick()
        return False
    return wait


def spool_calls(spool, config, clock, count):
    for n in range(count):
        spool_event(spool, config, "connect", "1732700000.%02d" % n, clock.now)
        spool_event(spool, config, "hangup", "1732700000.%02d" % n, clock.now)


def assert_in_order_per_call(ids, count):
    assert sorted(set(ids)) == sorted(["msg_1732700000.%02d_%s" % (n, event)
                                       for n in range(count) for event in ("connect", "hangup")])
    for n in range(count):
        connect = [i for i, x in enumerate(ids) if x == "msg_1732700000.%02d_connect" % n]
        hangup = [i for i, x in enumerate(ids) if x == "msg_1732700000.%02d_hangup" % n]
        assert max(connect) < min(hangup), "call %d's hangup went before its connect" % n


def attempt_times(crm):
    """The injected clock at each attempt: the attempt's own webhook-timestamp."""
    return [int(r.headers["webhook-timestamp"]) for r in crm.requests]


# --- Standard Webhooks to the letter after an hour-long outage -------------------------------

def test_deliveries_after_an_hour_long_outage_verify_with_the_official_library(tmp_path, crm):
    config = make_config(tmp_path, crm.url, extended="yes")
    spool = Spool.for_state_dir(config.state.dir)
    clock = Clock(time.time() - HOUR)  # the event happened an hour ago...
    deliverer = Deliverer(config, spool, clock=clock, random=lambda: 0.5)
    occurred = int(clock.now)
    spool_event(spool, config, "connect", "1732700000.01", clock.now)
    spool_event(spool, config, "hangup", "1732700000.01", clock.now)
    crm.answer(503)  # ...and the CRM was unwell ever since
    while clock.now < time.time() - 1:
        deliverer.deliver()
        clock.now = min(time.time(), max(clock.now + 1, deliverer.next_due()))
    failed = list(crm.requests)
    assert len(failed) > HOUR / CRM_BACKOFF_CAP - 5  # probed all along
    crm.answer(200)
    clock.now = max(time.time(), deliverer.next_due())  # the CRM is back: the next probe
    assert deliverer.deliver()["delivered"] == 2
    connect, hangup = crm.requests[-2:]
    for request in (connect, hangup):
        # Verified as a CRM would, now, with the library's own clock and 5-minute rule.
        body = verify_request(request)
        assert body["timestamp"] == occurred  # the event's time stays in the body
        assert request.headers["x-callexchange-event-time"] == str(occurred)
        assert int(request.headers["webhook-timestamp"]) == int(clock.now)
    assert connect.id == "msg_1732700000.01_connect" and hangup.id == "msg_1732700000.01_hangup"
    # Every failed attempt was signed at its own time, as the library checks it then.
    for request in failed:
        assert request.id == "msg_1732700000.01_connect"
        verify_request(request, now=int(request.headers["webhook-timestamp"]))
    stamps = [int(r.headers["webhook-timestamp"]) for r in failed]
    assert stamps == sorted(set(stamps)) and stamps[0] == occurred  # one time per attempt


# --- prompt recovery, the deliverer a hook started -------------------------------------------

@pytest.mark.parametrize("kind", ["refused", "503"])
def test_the_lingering_deliverer_probes_all_along_and_sends_the_backlog_on_recovery(
        tmp_path, crm, kind):
    config = make_config(tmp_path, crm.url)
    spool = Spool.for_state_dir(config.state.dir)
    clock = Clock()
    start = clock.now
    outage = Outage(crm, clock, kind, ends_at=start + 2 * HOUR + 17)
    spool_calls(spool, config, clock, 10)
    deliverer = Deliverer(config, spool, clock=clock)
    summary = deliverer.serve(linger=60, wait=fake_wait(clock, outage))
    # It stayed for the whole outage (the CRM's back-off never outgrows its linger) and
    # left a minute after the last delivery.
    assert summary["delivered"] == 20 and spool.pending() == []
    times = attempt_times(crm)
    delivered = [t for t in times if t >= outage.ends_at]
    assert len(delivered) == 20
    assert max(delivered) <= outage.ends_at + 60
    assert_in_order_per_call([r.id for r in crm.requests if
                              int(r.headers["webhook-timestamp"]) >= outage.ends_at], 10)
    assert clock.now - max(delivered) >= 60
    if kind == "503":
        probes = [t for t in times if t < outage.ends_at]
        gaps = [b - a for a, b in zip([start] + probes, probes + [min(delivered)])]
        assert max(gaps) <= CRM_BACKOFF_CAP + 1
        # One request at a time, not the whole backlog on every probe.
        assert len(probes) < 20 + 2 * HOUR / 2.5


# --- prompt recovery, only the timer running ----------------------------------------------

def run_deliver(config, clock, wait, *argv):
    parser = argparse.ArgumentParser()
    parser.add_argument("--config")
    cli_webhooks.register(parser.add_subparsers())
    args = parser.parse_args(["--config", config.path, "webhooks", "deliver"] + list(argv))
    out = io.StringIO()
    status = args.handler(args, out=out, clock=clock, wait=wait)
    assert status == 0
    return out.getvalue()


@pytest.mark.parametrize("kind", ["refused", "503"])
def test_the_timers_deliver_alone_probes_and_sends_the_backlog_within_a_minute(
        tmp_path, crm, kind):
    config = make_config(tmp_path, crm.url)
    spool = Spool.for_state_dir(config.state.dir)
    clock = Clock()
    start = clock.now
    outage = Outage(crm, clock, kind, ends_at=start + HOUR + 41)
    spool_calls(spool, config, clock, 5)
    wait = fake_wait(clock, outage)
    runs = 0
    while spool.pending():
        # systemd's timer (or cron): `webhooks deliver --quiet --for 50` every minute.
        minute = start + 60 * runs
        assert clock.now <= minute + 1, "a run overran its minute"
        clock.now = minute
        outage.tick()
        run_deliver(config, clock, wait, "--quiet", "--for", "50")
        runs += 1
        assert runs < 200
    times = attempt_times(crm)
    delivered = [t for t in times if t >= outage.ends_at]
    assert len(delivered) == 10 and max(delivered) <= outage.ends_at + 60
    assert_in_order_per_call([r.id for r in crm.requests
                              if int(r.headers["webhook-timestamp"]) >= outage.ends_at], 5)
    if kind == "503":
        probes = [t for t in times if t < outage.ends_at]
        gaps = [b - a for a, b in zip(probes, probes[1:] + [min(delivered)])]
        assert max(gaps) <= 60  # at least one probe a minute, between runs too


def test_a_long_back_off_left_by_an_older_version_does_not_hold_the_timers_deliver(
        tmp_path, crm):
    # What the issue saw: minutes of outage, then 38 minutes of CRM-wide back-off that
    # the timer's run respected. A state like that is honoured for 30 s at most.
    config = make_config(tmp_path, crm.url)
    spool = Spool.for_state_dir(config.state.dir)
    clock = Clock()
    spool_calls(spool, config, clock, 2)
    for entry in spool.pending():
        record = spool.read(entry.name)
        record.update(attempts=9, next_at=clock.now + 38 * 60, last_attempt_at=clock.now,
                      last_status=None, last_error="ConnectionError: refused")
        spool.update(entry.name, record)
    spool.ensure()
    with open(spool.endpoint_path, "w") as handle:
        json.dump({"failures": 9, "next_at": clock.now + 38 * 60, "last_at": clock.now,
                   "since": clock.now - 300, "last_error": "ConnectionError"}, handle)
    clock.advance(60)
    text = run_deliver(config, clock, fake_wait(clock, Outage(crm, clock, "503", 0)),
                       "--for", "50")
    assert "delivered 4" in text and spool.pending() == []
    assert_in_order_per_call(crm.ids(), 2)


def test_retry_after_from_the_crm_is_honoured_in_full(tmp_path, crm):
    # The one longer pause: the CRM asked for it.
    config = make_config(tmp_path, crm.url)
    spool = Spool.for_state_dir(config.state.dir)
    clock = Clock()
    deliverer = Deliverer(config, spool, clock=clock)
    crm.answer(503, retry_after=600, times=1)
    spool_calls(spool, config, clock, 1)
    deliverer.deliver()
    assert deliverer.next_due() == pytest.approx(clock.now + 600)
    clock.advance(599)
    assert deliverer.deliver()["delivered"] == 0 and len(crm.requests) == 1
    clock.advance(1)
    assert deliverer.deliver()["delivered"] == 2


# --- a real outage of a second, with the real hook and background deliverer ------------------

def test_after_a_real_outage_the_hooks_deliverer_sends_everything_by_itself(tmp_path, crm):
    pbx = Pbx(tmp_path, crm.url)
    pbx.environ.pop("CALLEXCHANGE_WEBHOOK_LINGER")  # the real linger: 60 s
    try:
        crm.down()
        for n in range(3):
            uniqueid = "1732700000.%02d" % n
            assert pbx.hook("connect", dict(CALL, CX_UNIQUEID=uniqueid)).returncode == 0
            assert pbx.hook("hangup", dict(HANGUP, CX_UNIQUEID=uniqueid)).returncode == 0
        # The deliverer tried, found the CRM down, and stays, backing off.
        wait_until(lambda: os.path.exists(pbx.spool.endpoint_path))
        assert pbx.spool.lock_holder()
        time.sleep(1)  # the outage
        crm.up()
        back = time.monotonic()
        requests = crm.wait_for(6, timeout=CRM_BACKOFF_CAP + 10)
        assert time.monotonic() - back < CRM_BACKOFF_CAP + 5
        assert_in_order_per_call([r.id for r in requests], 3)
        for request in requests:
            verify_request(request)
        wait_until(lambda: pbx.spool.pending() == [])
    finally:
        pbx.kill_deliverer()
