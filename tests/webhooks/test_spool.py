"""The webhook spool (lib/callexchange/spool.py): Maildir-style publishing, the per-call
order, the deliverer's lock and wake-up FIFO, and what a kill -9 leaves behind.

Every check of the queue contract runs on a fresh `Spool` object over the same directory
too (close and reopen), as scrapy/queuelib's tests do: the spool is its files, nothing else.
"""

import json
import os
import select
import signal
import subprocess
import sys
import time

import pytest
from paths import LIB

from callexchange.webhooks.spool import call_key, dumps_compact, Spool



def record(event, call, body="{}", **extra):
    value = {"v": 1, "id": "msg_%s_%s" % (call, event), "event": event, "call": call,
             "occurred": 1732700000, "body": body}
    value.update(extra)
    return value


@pytest.fixture(params=["same", "reopened"])
def spools(request, tmp_path):
    """(writer, reader): the same object, or a second Spool over the same directory."""
    writer = Spool(str(tmp_path / "webhooks"))
    reader = writer if request.param == "same" else Spool(str(tmp_path / "webhooks"))
    return writer, reader


def test_add_publishes_a_complete_record_into_new(spools):
    writer, reader = spools
    name = writer.add(record("connect", "1732700000.1", body='{"a":"é"}'))
    assert os.listdir(writer.tmp) == []
    assert [e.name for e in reader.pending()] == [name]
    stored = reader.read(name)
    assert stored["body"] == '{"a":"é"}' and stored["created_ns"] > 0
    entry = reader.pending()[0]
    assert (entry.event, entry.call_key) == ("connect", "1732700000.1")


def test_chains_put_each_calls_connect_first_and_calls_in_creation_order(spools):
    writer, reader = spools
    writer.add(record("hangup", "2"))
    writer.add(record("hangup", "1"))
    writer.add(record("connect", "1"))
    writer.add(record("connect", "3"))
    chains = reader.chains()
    assert [[(e.call_key, e.event) for e in chain] for chain in chains] == [
        [("2", "hangup")], [("1", "connect"), ("1", "hangup")], [("3", "connect")]]


def test_remove_bury_revive_and_find(spools):
    writer, reader = spools
    first = writer.add(record("connect", "1"))
    second = writer.add(record("hangup", "1"))
    reader.update(first, dict(reader.read(first), attempts=3, last_error="HTTP 500"))
    assert writer.read(first)["attempts"] == 3
    reader.bury(first, dict(reader.read(first), dead_reason="gone"))
    assert [e.name for e in writer.pending()] == [second]
    assert [e.name for e in writer.dead()] == [first]
    assert writer.read(first, dead=True)["dead_reason"] == "gone"
    assert reader.find("msg_1_connect") == (writer.dead()[0], True)
    assert reader.find(second) == (writer.pending()[0], False)
    assert reader.find("msg_9_connect") is None
    reader.revive(first, dict(writer.read(first, dead=True), attempts=0))
    assert {e.name for e in writer.pending()} == {first, second}
    reader.remove(first)
    reader.remove(first)  # twice is harmless
    assert [e.name for e in writer.pending()] == [second]


def test_unknown_files_in_new_are_ignored(spools):
    writer, reader = spools
    writer.add(record("connect", "1"))
    open(os.path.join(writer.new, "README"), "w").close()
    open(os.path.join(writer.new, "123.4.ringing.x"), "w").close()
    assert len(reader.pending()) == 1


def test_add_refuses_an_unknown_event(tmp_path):
    with pytest.raises(ValueError):
        Spool(str(tmp_path)).add(record("ringing", "1"))


def test_call_key_keeps_names_safe():
    assert call_key("1732700000.483920174622") == "1732700000.483920174622"
    assert call_key("../../etc/passwd") == "..-..-etc-passwd"
    assert "/" not in call_key("a/b") and call_key("") == "-"
    assert len(call_key("9" * 500)) == 100


def test_dumps_compact_escapes_control_characters_like_json():
    text = 'a"b\\c\n\t\x01\u2028é'
    assert json.loads(dumps_compact({"x": text})) == {"x": text}
    with pytest.raises(TypeError):
        dumps_compact(1.5)


def test_sweep_tmp_removes_only_stale_files(tmp_path):
    spool = Spool(str(tmp_path))
    spool.ensure()
    old = os.path.join(spool.tmp, "old")
    fresh = os.path.join(spool.tmp, "fresh")
    for path in (old, fresh):
        open(path, "w").close()
    os.utime(old, (time.time() - 700, time.time() - 700))
    assert spool.sweep_tmp() == 1
    assert os.listdir(spool.tmp) == ["fresh"]


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
def test_root_working_in_someone_elses_spool_leaves_files_they_can_read(tmp_path):
    import pwd

    nobody = pwd.getpwnam("nobody")
    root = tmp_path / "webhooks"
    root.mkdir()
    os.chown(str(root), nobody.pw_uid, nobody.pw_gid)
    spool = Spool(str(root))
    name = spool.add(record("connect", "1"))
    spool.update(name, dict(spool.read(name), attempts=1))
    os.close(spool.try_lock())
    for path in (spool.new, spool.tmp, spool.dead_dir, spool.wake_path, spool.lock_path,
                 os.path.join(spool.new, name)):
        assert os.stat(path).st_uid == nobody.pw_uid, path


# --- lock and wake-up ---------------------------------------------------------------------

def test_the_lock_is_exclusive_across_processes_and_names_its_holder(tmp_path):
    spool = Spool(str(tmp_path))
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; sys.path.insert(0, sys.argv[1]);"
         "from callexchange.webhooks.spool import Spool; fd = Spool(sys.argv[2]).try_lock();"
         "print(fd is not None, flush=True); time.sleep(30)", LIB, str(tmp_path)],
        stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == b"True"
        assert spool.try_lock() is None
        assert spool.lock_holder() == holder.pid
    finally:
        holder.kill()
        holder.wait()
    fd = spool.try_lock()
    assert fd is not None
    os.close(fd)


def test_wake_reaches_a_listener_and_says_when_there_is_none(tmp_path):
    spool = Spool(str(tmp_path))
    assert spool.wake() is False  # no FIFO yet
    spool.ensure()
    assert spool.wake() is False  # FIFO, nobody listening
    fd = spool.listen()
    try:
        assert select.select([fd], [], [], 0)[0] == []
        assert spool.wake() is True
        assert select.select([fd], [], [], 1)[0] == [fd]
        spool.drain(fd)
        # The hook closed its end: no end-of-file storm for the listener.
        assert select.select([fd], [], [], 0.05)[0] == []
        for _ in range(70000):  # a full FIFO is not an error
            spool.wake()
    finally:
        os.close(fd)
    assert spool.wake() is False


# --- kill -9 ------------------------------------------------------------------------------

WRITER = """
import os, sys, time
sys.path.insert(0, sys.argv[1])
from callexchange.webhooks.spool import Spool
spool = Spool(sys.argv[2])
pause = float(sys.argv[3])
if pause:
    # The fault comes from outside the spool: this process's own os.rename, patched,
    # stops every publish between the tmp file's fsync and its rename into new/.
    real_rename = os.rename
    def rename(source, target):
        time.sleep(pause)
        real_rename(source, target)
    os.rename = rename
n = 0
while True:
    n += 1
    spool.add({"v": 1, "id": "msg_%d_connect" % n, "event": "connect", "call": str(n),
               "occurred": 1732700000, "body": "x" * 20000})
    print(n, flush=True)
"""


def test_a_writer_killed_before_the_rename_publishes_nothing(tmp_path):
    spool = Spool(str(tmp_path / "webhooks"))
    writer = subprocess.Popen([sys.executable, "-c", WRITER, LIB, spool.root, "30"],
                              stdout=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while not (os.path.isdir(spool.tmp) and os.listdir(spool.tmp)):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        writer.send_signal(signal.SIGKILL)
        writer.wait(5)
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
    assert spool.pending() == []
    assert len(os.listdir(spool.tmp)) == 1
    assert spool.sweep_tmp(older_than=0) == 1
    assert os.listdir(spool.tmp) == []


def test_a_writer_killed_at_any_instant_leaves_complete_events_or_nothing(tmp_path):
    spool = Spool(str(tmp_path / "webhooks"))
    for delay in (0.0, 0.003, 0.011, 0.023, 0.037, 0.05, 0.071, 0.09):
        writer = subprocess.Popen([sys.executable, "-c", WRITER, LIB, spool.root, "0"],
                                  stdout=subprocess.PIPE)
        try:
            writer.stdout.readline()  # it is writing
            time.sleep(delay)
            writer.send_signal(signal.SIGKILL)
            writer.wait(5)
        finally:
            if writer.poll() is None:
                writer.kill()
                writer.wait()
    entries = spool.pending()
    assert len(entries) >= 8
    for entry in entries:
        stored = spool.read(entry.name)  # parses: complete JSON
        assert stored["body"] == "x" * 20000 and stored["event"] == "connect"
