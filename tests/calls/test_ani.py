"""ani.py: the caller ID choice (a pure function) and the durable usage ledger."""

import multiprocessing
import os
import time
from types import SimpleNamespace

import pytest

from callexchange.calls.ani import (KEEP_DAYS, AniLedger, candidates_for, choose_caller_id,
                                    read_flagged)

POOL = ("111111", "222222", "333333")


# --- choose_caller_id --------------------------------------------------------------------

@pytest.mark.parametrize("candidates, usage, flagged, limit, expected", [
    # least used wins; ties go to the number listed first
    (POOL, {}, set(), 200, ("111111", True)),
    (POOL, {"111111": 1}, set(), 200, ("222222", True)),
    (POOL, {"111111": 1, "222222": 1}, set(), 200, ("333333", True)),
    (POOL, {"111111": 3, "222222": 1, "333333": 1}, set(), 200, ("222222", True)),
    (("222222", "111111"), {}, set(), 200, ("222222", True)),
    # flagged numbers are skipped while a clean one is left
    (POOL, {}, {"111111"}, 200, ("222222", True)),
    (POOL, {"333333": 50}, {"111111", "222222"}, 200, ("333333", True)),
    # numbers at their daily limit are skipped while a clean one is left
    (POOL, {"111111": 200, "222222": 7}, set(), 200, ("333333", True)),
    (POOL, {"111111": 199}, set(), 200, ("222222", True)),
    (("111111",), {"111111": 199}, set(), 200, ("111111", True)),
    (("111111",), {"111111": 200}, set(), 200, ("111111", False)),
    # nothing clean: the least used of all, and clean False (the call still goes)
    (POOL, {"111111": 5, "222222": 2, "333333": 9}, set(POOL), 200, ("222222", False)),
    (POOL, {"111111": 3, "222222": 3, "333333": 3}, set(), 3, ("111111", False)),
    (("111111", "222222"), {"111111": 0, "222222": 4}, {"111111"}, 4, ("111111", False)),
    (("111111",), {}, {"111111"}, 200, ("111111", False)),
    # usage of numbers outside the pool does not matter
    (("111111", "222222"), {"999999": 0, "111111": 1}, set(), 200, ("222222", True)),
])
def test_choose_caller_id(candidates, usage, flagged, limit, expected):
    assert choose_caller_id(candidates, usage, flagged, limit) == expected


def test_choose_caller_id_without_candidates_is_an_error():
    with pytest.raises(ValueError):
        choose_caller_id((), {}, set(), 200)


def test_choose_caller_id_does_not_change_its_inputs():
    usage, flagged = {"111111": 1}, {"222222"}
    choose_caller_id(POOL, usage, flagged, 200)
    assert usage == {"111111": 1} and flagged == {"222222"}


# --- pools and the flagged file ----------------------------------------------------------

def test_candidates_for_the_region_else_the_default():
    settings = SimpleNamespace(default=("12125550100",),
                               pools={"DE": ("4930123456",), "FR": ()})
    assert candidates_for(settings, "DE") == ("4930123456",)
    assert candidates_for(settings, "GB") == ("12125550100",)
    assert candidates_for(settings, "FR") == ("12125550100",)   # an empty pool
    assert candidates_for(settings, "") == ("12125550100",)


def test_read_flagged(tmp_path):
    path = tmp_path / "flagged"
    path.write_text("# reported as spam\n+12125550100\n\n 12125550101  # since May\n"
                    "#4930123456\n")
    assert read_flagged(str(path)) == {"12125550100", "12125550101"}


def test_read_flagged_without_a_file(tmp_path):
    assert read_flagged("") == frozenset()
    assert read_flagged(str(tmp_path / "missing")) == frozenset()


# --- the ledger --------------------------------------------------------------------------

def test_reserve_counts_and_rotates(tmp_path):
    ledger = AniLedger(str(tmp_path))
    chosen = [ledger.reserve(POOL[:2], frozenset(), 200)[0] for _ in range(5)]
    assert chosen == ["111111", "222222", "111111", "222222", "111111"]
    assert ledger.usage() == {"111111": 3, "222222": 2}


def test_counts_are_durable_across_ledger_objects(tmp_path):
    AniLedger(str(tmp_path)).reserve(POOL, frozenset(), 200)
    assert AniLedger(str(tmp_path)).usage() == {"111111": 1}
    assert AniLedger(str(tmp_path)).reserve(POOL, frozenset(), 200) == ("222222", True)


def test_reserve_reports_clean_false_over_the_limit(tmp_path):
    ledger = AniLedger(str(tmp_path))
    assert ledger.reserve(("111111",), frozenset(), 1) == ("111111", True)
    assert ledger.reserve(("111111",), frozenset(), 1) == ("111111", False)
    assert ledger.usage() == {"111111": 2}


def test_release_gives_a_reservation_back(tmp_path):
    ledger = AniLedger(str(tmp_path))
    number, _ = ledger.reserve(POOL, frozenset(), 200)
    ledger.reserve(POOL, frozenset(), 200)
    ledger.release(number)
    assert ledger.usage() == {"111111": 0, "222222": 1}
    assert ledger.reserve(POOL, frozenset(), 200)[0] == "111111"


def test_release_after_midnight_gives_back_the_day_it_was_counted_on(tmp_path):
    # A call counted at 23:59:59 whose Originate fails after midnight: yesterday's count
    # goes down, today's is left alone.
    now = [time.mktime((2024, 7, 1, 23, 59, 59, 0, 0, -1))]
    ledger = AniLedger(str(tmp_path), clock=lambda: now[0])
    reserved = ledger.reserve(("111111",), frozenset(), 200)
    assert (tuple(reserved), reserved.day) == (("111111", True), "2024-07-01")
    now[0] += 2
    ledger.reserve(("111111",), frozenset(), 200)   # today's first call
    ledger.release(reserved[0], reserved.day)
    assert ledger.usage("2024-07-01") == {"111111": 0}
    assert ledger.usage() == {"111111": 1}


def test_release_never_goes_below_zero(tmp_path):
    ledger = AniLedger(str(tmp_path))
    ledger.release("111111")
    number, _ = ledger.reserve(POOL, frozenset(), 200)
    ledger.release(number)
    ledger.release(number)
    assert ledger.usage() == {"111111": 0}


def test_counts_are_per_day_and_old_days_are_forgotten(tmp_path):
    now = [time.mktime((2024, 7, 1, 12, 0, 0, 0, 0, -1))]
    ledger = AniLedger(str(tmp_path), clock=lambda: now[0])
    ledger.reserve(POOL, frozenset(), 200)
    ledger.reserve(POOL, frozenset(), 200)
    assert ledger.usage() == {"111111": 1, "222222": 1}

    now[0] += 86400                                           # the next day starts at zero
    assert ledger.usage() == {}
    assert ledger.reserve(POOL, frozenset(), 200) == ("111111", True)
    assert ledger.usage("2024-07-01") == {"111111": 1, "222222": 1}

    now[0] += (KEEP_DAYS + 1) * 86400                         # a week later: swept
    ledger.reserve(POOL, frozenset(), 200)
    files = sorted(os.listdir(tmp_path / "ani"))
    assert "usage-2024-07-01.json" not in files
    assert "usage-2024-07-02.json" not in files


def test_torn_usage_file_reads_as_no_usage(tmp_path):
    ledger = AniLedger(str(tmp_path))
    ledger.reserve(POOL, frozenset(), 200)
    [usage_file] = [n for n in os.listdir(tmp_path / "ani") if n.startswith("usage-")]
    (tmp_path / "ani" / usage_file).write_text('{"111111": ')
    assert ledger.usage() == {}
    assert ledger.reserve(POOL, frozenset(), 200) == ("111111", True)


def test_no_temp_file_is_left_behind(tmp_path):
    ledger = AniLedger(str(tmp_path))
    for _ in range(3):
        ledger.reserve(POOL, frozenset(), 200)
    assert not [n for n in os.listdir(tmp_path / "ani") if n.endswith(".tmp")]


# --- concurrent processes ----------------------------------------------------------------

def _reserve_many(state_dir, count, start):
    start.wait(10)
    ledger = AniLedger(state_dir)
    for _ in range(count):
        ledger.reserve(POOL, frozenset(), 10 ** 6)


def test_concurrent_processes_never_lose_or_double_a_count(tmp_path):
    context = multiprocessing.get_context("fork")
    start = context.Event()
    workers = [context.Process(target=_reserve_many, args=(str(tmp_path), 25, start))
               for _ in range(8)]
    for worker in workers:
        worker.start()
    start.set()
    for worker in workers:
        worker.join(60)
    assert [worker.exitcode for worker in workers] == [0] * 8
    usage = AniLedger(str(tmp_path)).usage()
    assert sum(usage.values()) == 200
    # every reservation saw all earlier ones, so the rotation stayed even
    assert sorted(usage.values()) == [66, 67, 67]


def test_flagged_numbers_are_read_as_digits_like_the_pools(tmp_path):
    from callexchange.calls.ani import read_flagged
    path = tmp_path / "flagged"
    path.write_text("+49 30 123456   # reported 2024-07-03\n0044-20-7946-0958\n\n# none\n")
    assert read_flagged(str(path)) == frozenset({"4930123456", "442079460958"})


def test_a_region_without_a_pool_uses_its_calling_codes_main_region():
    # phonenumbers puts +44 7911 123456 in GG: the GB pool serves it, not the default.
    settings = SimpleNamespace(default=("12125550100",), pools={"GB": ("442071234567",)})
    assert candidates_for(settings, "GG", "GB") == ("442071234567",)
    assert candidates_for(settings, "GG", None) == ("12125550100",)


def test_threads_asking_at_once_share_one_write_and_one_sync(tmp_path, monkeypatch):
    """The persistent mode's threads: while one waits for the flock (held here, as
    another process would), the others queue; one batch is then counted, in order, with
    one fdatasync, before any of them returns."""
    import fcntl
    import threading

    ledger = AniLedger(str(tmp_path))
    ledger.reserve(POOL, frozenset(), 10 ** 6)            # the record exists: in place
    synced = []
    real = os.fdatasync
    monkeypatch.setattr(os, "fdatasync", lambda fd: (synced.append(fd), real(fd))[1])
    holder = os.open(os.path.join(ledger.directory, "usage.lock"), os.O_RDWR)
    fcntl.flock(holder, fcntl.LOCK_EX)
    results = []
    threads = [threading.Thread(target=lambda: results.append(
        AniLedger(str(tmp_path)).reserve(POOL, frozenset(), 10 ** 6))) for _ in range(8)]
    for thread in threads:
        thread.start()
    from callexchange.calls import ani
    committer = ani._committer(ledger.directory)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with committer.changed:
            if len(committer.queue) == 8:
                break
    assert results == [] and len(committer.queue) == 8    # nobody returned before the sync
    os.close(holder)                                       # the other process is done
    for thread in threads:
        thread.join(10)
    assert len(results) == 8 and len(synced) == 1
    assert sorted(ledger.usage().values()) == [3, 3, 3]
    assert sorted(number for number, _ in results) == sorted(POOL * 3)[1:]


def test_a_batch_that_cannot_be_written_fails_every_call_in_it(tmp_path):
    ledger = AniLedger(str(tmp_path / "file"))
    (tmp_path / "file").write_text("a file where the state dir should be")
    with pytest.raises(OSError):
        ledger.reserve(POOL, frozenset(), 10 ** 6)
    # The next caller is not stuck behind the failed one.
    with pytest.raises(OSError):
        ledger.reserve(POOL, frozenset(), 10 ** 6)
