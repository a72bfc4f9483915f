"""calls/quota.py: per-key call counts, exact under concurrent processes, and slots given
back on the day they were counted."""

import json
import os
import subprocess
import sys
import time

import pytest
from paths import LIB

from callexchange.calls.quota import CallQuota, Refused, Usage
from callexchange.keys import NO_LIMITS, KeyLimits
from callexchange.statedir import read_record
from clock import Clock

NOON = time.mktime((2024, 11, 27, 12, 0, 0, 0, 0, -1))   # local time, as the day is


@pytest.fixture
def clock():
    return Clock(NOON)


@pytest.fixture
def quota(tmp_path, clock):
    return CallQuota(str(tmp_path / "state"), clock)


def test_every_keys_calls_are_counted_even_without_limits(quota):
    for _ in range(3):
        quota.reserve("acme", NO_LIMITS)
    quota.reserve("other", NO_LIMITS)
    assert quota.usage() == {"acme": Usage(3), "other": Usage(1)}


def test_a_refused_call_is_not_counted(quota):
    limits = KeyLimits(None, None, 2)
    quota.reserve("acme", limits)
    quota.reserve("acme", limits)
    with pytest.raises(Refused) as refused:
        quota.reserve("acme", limits)
    assert refused.value.refusal.rule == "daily_cap"
    assert quota.usage()["acme"] == Usage(2, None, {"daily_cap": 1})


def test_the_minute_slides_with_the_clock(quota, clock):
    limits = KeyLimits(None, 2, None)
    quota.reserve("acme", limits)
    clock.now += 30
    quota.reserve("acme", limits)
    clock.now += 29.9
    with pytest.raises(Refused) as refused:
        quota.reserve("acme", limits)
    assert refused.value.refusal.rule == "rate_limit"
    assert quota.usage()["acme"] == Usage(2, 2, {"rate_limit": 1})
    clock.now += 0.2                     # the first call is now 60.1 s old
    quota.reserve("acme", limits)
    assert quota.usage()["acme"] == Usage(3, 2, {"rate_limit": 1})


def test_a_released_slot_frees_the_minute_and_the_day(quota):
    limits = KeyLimits(None, 1, 1)
    slot = quota.reserve("acme", limits)
    with pytest.raises(Refused):
        quota.reserve("acme", limits)
    quota.release(slot)
    assert quota.usage()["acme"] == Usage(0, None, {"rate_limit": 1})  # none left in the minute
    quota.reserve("acme", limits)


def test_a_slot_given_back_after_midnight_leaves_the_new_day_alone(quota, clock):
    clock.now = time.mktime((2024, 11, 27, 23, 59, 59, 0, 0, -1))
    late = quota.reserve("acme", NO_LIMITS)
    clock.now += 2                        # 00:00:01 the next day
    quota.reserve("acme", NO_LIMITS)
    quota.release(late)                   # the refused call of yesterday
    assert quota.usage()["acme"] == Usage(1)   # today's call still counted
    days = json.loads(read_record(quota.path))["days"]
    assert days == {"2024-11-27": {"acme": 0}, "2024-11-28": {"acme": 1}}


def test_old_days_and_old_minutes_are_dropped(quota, clock):
    quota.reserve("acme", KeyLimits(None, 5, None))
    clock.now += 3 * 86400
    quota.reserve("other", NO_LIMITS)
    state = json.loads(read_record(quota.path))
    assert list(state["days"]) == ["2024-11-30"]
    assert state["recent"] == {}


def test_a_missing_or_broken_counts_file_starts_from_zero(quota):
    assert quota.usage() == {}
    quota.reserve("acme", NO_LIMITS)
    with open(quota.path, "w") as handle:
        handle.write("{not json")
    assert quota.usage() == {}
    quota.reserve("acme", NO_LIMITS)
    assert quota.usage() == {"acme": Usage(1)}


WORKER = """
import json, sys
sys.path.insert(0, {lib!r})
from callexchange.calls.quota import CallQuota, Refused, Usage
from callexchange.keys import KeyLimits
state, now, attempts, minute, day, give_back = sys.argv[1:7]
quota = CallQuota(state, lambda: float(now))
limits = KeyLimits(None, int(minute) or None, int(day) or None)
placed = refused = returned = 0
for attempt in range(int(attempts)):
    try:
        slot = quota.reserve("acme", limits)
    except Refused:
        refused += 1
        continue
    placed += 1
    if give_back == "yes" and attempt % 2:
        quota.release(slot)   # e.g. Asterisk was unreachable
        returned += 1
print(json.dumps([placed, refused, returned]))
"""


def run_workers(tmp_path, processes, attempts, minute=0, day=0, give_back=False):
    """`processes` concurrent CGI-like processes, each asking `attempts` times."""
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(lib=LIB))
    state = str(tmp_path / "state")
    os.makedirs(state, exist_ok=True)
    children = [subprocess.Popen([sys.executable, str(script), state, str(NOON),
                                  str(attempts), str(minute), str(day),
                                  "yes" if give_back else "no"],
                                 stdout=subprocess.PIPE, text=True)
                for _ in range(processes)]
    totals = [0, 0, 0]
    for child in children:
        out, _ = child.communicate(timeout=120)
        assert child.returncode == 0
        for index, value in enumerate(json.loads(out)):
            totals[index] += value
    return totals, CallQuota(state, lambda: NOON).usage()["acme"]


def test_the_per_minute_limit_is_exact_under_concurrent_processes(tmp_path):
    (placed, refused, _), usage = run_workers(tmp_path, processes=16, attempts=10, minute=30)
    assert (placed, refused) == (30, 130)
    assert usage == Usage(30, 30, {"rate_limit": 130})


def test_the_daily_cap_is_exact_under_concurrent_processes(tmp_path):
    (placed, refused, _), usage = run_workers(tmp_path, processes=16, attempts=10, day=50)
    assert (placed, refused) == (50, 110)
    assert usage == Usage(50, None, {"daily_cap": 110})


def test_counts_stay_exact_when_slots_are_given_back_concurrently(tmp_path):
    (placed, refused, returned), usage = run_workers(tmp_path, processes=12, attempts=10,
                                                     give_back=True)
    assert (placed, refused, returned) == (120, 0, 60)
    assert usage == Usage(60)


def test_refusals_are_counted_by_rule_for_today(quota, clock):
    quota.record_refusal("acme", "emergency")
    quota.record_refusal("acme", "emergency")
    quota.record_refusal("acme", "region")
    limits = KeyLimits(None, None, 1)
    quota.reserve("acme", limits)
    with pytest.raises(Refused):
        quota.reserve("acme", limits)
    assert quota.usage()["acme"] == Usage(1, None, {"emergency": 2, "region": 1,
                                                    "daily_cap": 1})
    clock.now += 86400
    assert quota.usage() == {}     # a new day: nothing yet


def _newest_header(path):
    data = open(path, "rb").read()
    headers = [data[i * len(data) // 2:].split(b"\n", 1)[0] for i in (0, 1)]
    return max((h for h in headers if h.startswith(b"cx-record 1 ")),
               key=lambda h: int(h.split(b" ")[2]))


def test_counts_that_limit_a_key_are_synced_and_counts_that_only_describe_one_are_not(
        quota, monkeypatch):
    synced = []
    real = os.fdatasync
    monkeypatch.setattr(os, "fdatasync", lambda fd: (synced.append(fd), real(fd))[1])
    quota.reserve("plain", NO_LIMITS)          # lays the file out (atomic_write, fsync)
    synced.clear()
    quota.reserve("plain", NO_LIMITS)
    assert synced == [] and _newest_header(quota.path).endswith(b" lazy")
    quota.reserve("capped", KeyLimits(None, None, 100))
    # The lazy copy first, then this one: a crash mid-write keeps a synced copy.
    assert len(synced) == 2 and not _newest_header(quota.path).endswith(b" lazy")
    quota.reserve("rated", KeyLimits(None, 10, None))
    assert len(synced) == 3
    assert {label: usage.today for label, usage in quota.usage().items()} == {
        "plain": 2, "capped": 1, "rated": 1}
