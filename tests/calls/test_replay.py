"""replay.py: stored replies for Idempotency-Key and double clicks."""

import os
import threading
import time

from callexchange.calls.replay import PRUNE_EVERY, ReplayStore
from clock import Clock

BODY = {"status": "true", "uniqueid": "1732700000.000000000001"}


def test_first_request_finds_nothing_and_its_twin_gets_the_stored_reply(tmp_path):
    store = ReplayStore(str(tmp_path), ttl=60)
    with store.guard("key-1", "fp") as guard:
        assert (guard.previous, guard.mismatch) == (None, False)
        guard.remember(200, BODY)
    with store.guard("key-1", "fp") as guard:
        assert guard.previous == (200, BODY)
        assert guard.mismatch is False


def test_a_reply_not_remembered_is_not_replayed(tmp_path):
    store = ReplayStore(str(tmp_path), ttl=60)
    with store.guard("key-1"):
        pass                                    # the call failed: nothing stored
    with store.guard("key-1") as guard:
        assert guard.previous is None


def test_same_key_with_another_fingerprint_is_a_mismatch(tmp_path):
    store = ReplayStore(str(tmp_path), ttl=60)
    with store.guard("key-1", "body-a") as guard:
        guard.remember(200, BODY)
    with store.guard("key-1", "body-b") as guard:
        assert guard.mismatch is True
        assert guard.previous is None


def test_keys_are_independent(tmp_path):
    store = ReplayStore(str(tmp_path), ttl=60)
    with store.guard("key-1") as guard:
        guard.remember(200, BODY)
    with store.guard("key-2") as guard:
        assert guard.previous is None


def test_entries_expire_after_ttl(tmp_path):
    clock = Clock()
    store = ReplayStore(str(tmp_path), ttl=5, clock=clock)
    with store.guard("key-1", "fp") as guard:
        guard.remember(200, BODY)
    clock.now += 4.9
    with store.guard("key-1", "fp") as guard:
        assert guard.previous == (200, BODY)
    clock.now += 0.2
    with store.guard("key-1", "other") as guard:
        assert (guard.previous, guard.mismatch) == (None, False)   # expired: a new request
        guard.remember(200, {"second": True})
    with store.guard("key-1", "other") as guard:
        assert guard.previous == (200, {"second": True})


def test_torn_entry_is_treated_as_absent(tmp_path):
    store = ReplayStore(str(tmp_path), ttl=60)
    with store.guard("key-1") as guard:
        guard.remember(200, BODY)
    [name] = os.listdir(tmp_path)
    with open(tmp_path / name, "r+b") as handle:
        data = handle.read()
        handle.seek(0)
        handle.truncate()
        handle.write(data[: len(data) // 2])
    with store.guard("key-1") as guard:
        assert (guard.previous, guard.mismatch) == (None, False)


def test_entry_that_is_not_an_object_is_treated_as_absent(tmp_path):
    store = ReplayStore(str(tmp_path), ttl=60)
    with store.guard("key-1"):
        pass
    [name] = os.listdir(tmp_path)
    (tmp_path / name).write_text("[1, 2]")
    with store.guard("key-1") as guard:
        assert guard.previous is None


def test_a_shorter_second_reply_overwrites_the_first_cleanly(tmp_path):
    clock = Clock()
    store = ReplayStore(str(tmp_path), ttl=5, clock=clock)
    with store.guard("k") as guard:
        guard.remember(200, {"long": "x" * 500})
    clock.now += 10
    with store.guard("k") as guard:
        guard.remember(200, {"s": 1})
    with store.guard("k") as guard:
        assert guard.previous == (200, {"s": 1})


def test_file_names_are_digests_not_the_keys(tmp_path):
    store = ReplayStore(str(tmp_path), ttl=60)
    with store.guard("secret-idempotency-key") as guard:
        guard.remember(200, BODY)
    [name] = os.listdir(tmp_path)
    assert len(name) == 64 and "secret" not in name


def test_a_concurrent_twin_waits_for_the_first_and_gets_its_reply(tmp_path):
    store = ReplayStore(str(tmp_path), ttl=60)
    entered = threading.Event()
    seen = []

    def first():
        with store.guard("k") as guard:
            entered.set()
            time.sleep(0.2)                     # the AMI exchange
            guard.remember(200, BODY)

    def twin():
        entered.wait(5)
        with store.guard("k") as guard:
            seen.append(guard.previous)

    threads = [threading.Thread(target=first), threading.Thread(target=twin)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert seen == [(200, BODY)]


def test_prune_removes_expired_entries_at_most_once_per_period(tmp_path):
    # prune goes by the files' mtime (it never opens them), so age them with utime
    clock = Clock(time.time())
    store = ReplayStore(str(tmp_path), ttl=60, clock=clock)
    for key in ("old", "new"):
        with store.guard(key) as guard:
            guard.remember(200, BODY)
    old = store._path("old")
    os.utime(old, (clock.now - 120, clock.now - 120))

    store.prune()
    assert not os.path.exists(old)
    assert os.path.exists(store._path("new"))

    clock.now += 120                            # "new" has expired too, but the last
    store.prune()                               # sweep was less than PRUNE_EVERY ago
    assert os.path.exists(store._path("new"))
    clock.now += PRUNE_EVERY
    store.prune()
    assert [n for n in os.listdir(tmp_path) if len(n) == 64] == []
