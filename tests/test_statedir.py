"""The state dir's one atomic write and one ownership rule (callexchange.statedir)."""
import json
import os
import pwd
import subprocess
import sys

import pytest
from paths import LIB

from callexchange.statedir import (StateDir, atomic_file, atomic_write, owner_for, read_record,
                                   write_record)


def test_the_layout_names_every_part_under_the_root():
    state = StateDir("/srv/cx")
    assert [state.ani, state.idempotency, state.dedupe, state.numbers,
            state.recordings_index, state.webhooks] == [
        "/srv/cx/ani", "/srv/cx/idempotency", "/srv/cx/dedupe", "/srv/cx/numbers",
        "/srv/cx/recordings-index", "/srv/cx/webhooks"]


def test_atomic_write_replaces_the_file_whole_and_leaves_no_temporary(tmp_path):
    final = tmp_path / "counts.json"
    final.write_text("old")
    atomic_write(str(final), '{"a": 1}')
    assert final.read_text() == '{"a": 1}'
    assert os.listdir(tmp_path) == ["counts.json"]


def test_a_failed_write_keeps_the_old_file_and_removes_the_temporary(tmp_path):
    final = tmp_path / "state"
    final.write_bytes(b"good copy")
    with pytest.raises(RuntimeError):
        with atomic_file(str(final)) as handle:
            handle.write(b"half of the new")
            raise RuntimeError("killed mid-write")
    assert final.read_bytes() == b"good copy"
    assert os.listdir(tmp_path) == ["state"]


def test_the_mode_is_kept_whatever_the_umask(tmp_path):
    old = os.umask(0o077)
    try:
        atomic_write(str(tmp_path / "shard.json"), b"{}", mode=0o644)
    finally:
        os.umask(old)
    assert os.stat(tmp_path / "shard.json").st_mode & 0o777 == 0o644


def test_an_explicit_temporary_name_is_used_and_renamed_over_the_final(tmp_path):
    (tmp_path / "tmp").mkdir()
    (tmp_path / "new").mkdir()
    with atomic_file(str(tmp_path / "new" / "event"), temporary=str(tmp_path / "tmp" / "event"),
                     sync_directory=True) as handle:
        handle.write(b"{}")
        assert os.listdir(tmp_path / "tmp") == ["event"]
        assert os.listdir(tmp_path / "new") == []
    assert os.listdir(tmp_path / "tmp") == []
    assert (tmp_path / "new" / "event").read_bytes() == b"{}"


def test_a_writer_killed_before_the_rename_leaves_the_final_file_untouched(tmp_path):
    final = tmp_path / "keys"
    final.write_text("old keys")
    child = subprocess.run(
        [sys.executable, "-c",
         "import os, sys; sys.path.insert(0, sys.argv[1])\n"
         "from callexchange.statedir import atomic_file\n"
         "with atomic_file(sys.argv[2]) as handle:\n"
         "    handle.write(b'new keys'); handle.flush(); os._exit(9)\n",
         LIB, str(final)])
    assert child.returncode == 9
    assert final.read_text() == "old keys"


def test_owner_for_is_none_for_our_own_directories(tmp_path):
    assert owner_for(str(tmp_path)) is None
    assert owner_for(str(tmp_path / "not" / "yet" / "there")) is None


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: chown to another user")
def test_as_root_what_we_create_goes_to_the_owner_of_the_directory(tmp_path):
    nobody = pwd.getpwnam("nobody")
    spool = tmp_path / "webhooks"
    spool.mkdir()
    os.chown(spool, nobody.pw_uid, nobody.pw_gid)
    owner = owner_for(str(spool / "new"))  # not there yet: its parent decides
    assert owner == (nobody.pw_uid, nobody.pw_gid)
    atomic_write(str(spool / "endpoint.json"), "{}", owner=owner)
    status = os.stat(spool / "endpoint.json")
    assert (status.st_uid, status.st_gid) == owner


# --- records rewritten in place ----------------------------------------------------------

def _slots(path):
    """The two slots of a record file, as bytes."""
    data = path.read_bytes()
    return data[:len(data) // 2], data[len(data) // 2:]


def test_a_record_reads_back_what_was_last_written_with_no_rename(tmp_path):
    path = tmp_path / "usage.json"
    assert read_record(str(path)) is None
    write_record(str(path), '{"a": 1}', mode=0o640)
    inode = path.stat().st_ino
    for n in range(2, 7):
        write_record(str(path), '{"a": %d}' % n)
        assert read_record(str(path)) == '{"a": %d}' % n
    assert path.stat().st_ino == inode           # rewritten in place, not renamed over
    assert path.stat().st_size == 8192
    assert path.stat().st_mode & 0o777 == 0o640
    assert os.listdir(tmp_path) == ["usage.json"]
    # The two slots hold the last two copies.
    assert sorted(s.split(b"\n")[1] for s in _slots(path)) == [b'{"a": 5}', b'{"a": 6}']


def test_a_write_torn_by_a_crash_leaves_the_previous_record(tmp_path):
    path = tmp_path / "usage.json"
    for n in range(3):
        write_record(str(path), '{"a": %d}' % n)
    first, second = _slots(path)
    newest_first = b'{"a": 2}' in first
    # A crash in the middle of the next write: half a slot written over the older copy.
    torn = (b"cx-record 1 4 00000000 8\n{\"a\": 3}"[:20]).ljust(4096, b"\0")
    path.write_bytes(first + torn if newest_first else torn + second)
    assert read_record(str(path)) == '{"a": 2}'
    # A bit flipped in the newest copy: its checksum fails, the older one is read.
    data = bytearray(path.read_bytes())
    data[(0 if newest_first else 4096) + len("cx-record 1 3 00000000 8\n") + 2] ^= 1
    path.write_bytes(bytes(data))
    assert read_record(str(path)) == ""          # no valid slot left: callers start from zero
    write_record(str(path), '{"a": 9}')
    assert read_record(str(path)) == '{"a": 9}'


def test_a_plain_file_is_read_whole_and_replaced_by_a_record(tmp_path):
    path = tmp_path / "usage.json"
    path.write_text('{"from": "an older version"}')
    assert read_record(str(path)) == '{"from": "an older version"}'
    write_record(str(path), '{"a": 1}')
    assert read_record(str(path)) == '{"a": 1}'
    assert path.read_bytes().startswith(b"cx-record 1 ")


def test_a_record_too_long_for_its_slots_gets_larger_ones(tmp_path):
    path = tmp_path / "usage.json"
    write_record(str(path), "x" * 10)
    write_record(str(path), "y" * 10000)
    assert path.stat().st_size == 2 * 16384
    assert read_record(str(path)) == "y" * 10000
    write_record(str(path), "z" * 3)
    assert read_record(str(path)) == "z" * 3


def test_readers_never_see_half_a_record_while_another_process_writes(tmp_path):
    path = tmp_path / "usage.json"
    write_record(str(path), '{"n": 0, "pad": ""}')
    writer = subprocess.Popen([sys.executable, "-c", (
        "import sys; sys.path.insert(0, %r)\n"
        "from callexchange.statedir import write_record\n"
        "for n in range(1, 3001):\n"
        "    write_record(%r, '{\"n\": %%d, \"pad\": \"%%s\"}' %% (n, 'x' * (n %% 3000)),"
        " durable=False)\n") % (LIB, str(path))])
    seen = []
    while writer.poll() is None:
        text = read_record(str(path))
        seen.append(json.loads(text)["n"])  # never torn: always JSON
    assert writer.wait() == 0
    assert len(seen) > 10 and seen[-1] <= 3000
    assert json.loads(read_record(str(path)))["n"] == 3000


def test_a_durable_write_after_a_lazy_one_syncs_the_lazy_copy_before_overwriting(
        tmp_path, monkeypatch):
    path = tmp_path / "usage.json"
    write_record(str(path), '{"a": 1}')
    write_record(str(path), '{"a": 2}', durable=False)
    assert sorted(s.split(b"\n")[0].endswith(b" lazy") for s in _slots(path)) == [False, True]
    synced = []
    real = os.fdatasync
    monkeypatch.setattr(os, "fdatasync", lambda fd: (synced.append(
        read_record(str(path))), real(fd))[1])
    # The durable {"a": 1} is about to be overwritten: {"a": 2} is synced first.
    write_record(str(path), '{"a": 3}')
    assert synced == ['{"a": 2}', '{"a": 3}']
    write_record(str(path), '{"a": 4}')       # after a durable copy: one sync only
    assert synced[2:] == ['{"a": 4}']
    assert read_record(str(path)) == '{"a": 4}'



# --- deferred syncs ----------------------------------------------------------------------

@pytest.fixture
def syncs(monkeypatch):
    """Every fdatasync, as the record text on disk at that moment; this process's memory
    of synced files starts empty (a new process)."""
    from callexchange import statedir

    monkeypatch.setattr(statedir, "_SYNC_STATES", {})
    seen = []
    real = os.fdatasync
    monkeypatch.setattr(os, "fdatasync", lambda fd: (seen.append(fd), real(fd))[1])
    return seen


def as_another_process(monkeypatch):
    from callexchange import statedir
    monkeypatch.setattr(statedir, "_SYNC_STATES", {})


def test_a_deferred_write_is_read_back_at_once_and_on_disk_after_sync(tmp_path, syncs):
    path = str(tmp_path / "usage.json")
    write_record(path, '{"a": 1}')
    write_record(path, '{"a": 2}')
    before = len(syncs)
    pending = write_record(path, '{"a": 3}', defer_sync=True)
    assert read_record(path) == '{"a": 3}'
    assert len(syncs) == before               # not waited for
    pending.sync()
    pending.sync()                            # idempotent
    assert len(syncs) == before + 1


def test_this_process_does_not_sync_again_a_copy_it_synced(tmp_path, syncs):
    path = str(tmp_path / "usage.json")
    write_record(path, '{"a": 1}', defer_sync=True).sync()
    before = len(syncs)
    for n in range(2, 6):
        write_record(path, '{"a": %d}' % n, defer_sync=True).sync()
    assert len(syncs) - before == 4           # one each, no sync before overwriting
    assert read_record(path) == '{"a": 5}'


def test_another_process_trusts_the_mark_of_a_synced_copy(tmp_path, syncs, monkeypatch):
    path = str(tmp_path / "usage.json")
    write_record(path, '{"a": 1}', defer_sync=True).sync()
    write_record(path, '{"a": 2}', defer_sync=True).sync()
    assert (tmp_path / "usage.json.synced").read_text().split() == [
        str(os.stat(path).st_ino), "2"]
    as_another_process(monkeypatch)
    before = len(syncs)
    write_record(path, '{"a": 3}')            # the lazy copy 2 is marked as on disk
    assert len(syncs) - before == 1


def test_a_copy_never_synced_is_synced_before_its_twin_slot_is_overwritten(
        tmp_path, syncs, monkeypatch):
    path = str(tmp_path / "usage.json")
    write_record(path, '{"a": 1}', defer_sync=True).sync()
    write_record(path, '{"a": 2}', defer_sync=True)       # its writer died before sync
    as_another_process(monkeypatch)
    on_disk = []
    real = os.fdatasync
    monkeypatch.setattr(os, "fdatasync", lambda fd: (on_disk.append(read_record(path)),
                                                     real(fd))[1])
    write_record(path, '{"a": 3}', defer_sync=True).sync()
    # {"a": 1}'s slot is overwritten: {"a": 2} is made durable first, then {"a": 3}.
    assert on_disk == ['{"a": 2}', '{"a": 3}']


def test_a_mark_naming_another_file_is_not_trusted(tmp_path, syncs, monkeypatch):
    path = str(tmp_path / "usage.json")
    write_record(path, '{"a": 1}', defer_sync=True).sync()
    write_record(path, '{"a": 2}', defer_sync=True).sync()
    mark = tmp_path / "usage.json.synced"
    mark.write_text("%d 2\n" % (os.stat(path).st_ino + 1))
    as_another_process(monkeypatch)
    before = len(syncs)
    write_record(path, '{"a": 3}')
    assert len(syncs) - before == 2


def test_waiters_on_one_file_share_one_sync(tmp_path, syncs):
    path = str(tmp_path / "usage.json")
    write_record(path, '{"a": 0}', defer_sync=True).sync()
    pendings = [write_record(path, '{"a": %d}' % n, defer_sync=True) for n in (1, 2)]
    before = len(syncs)
    for pending in reversed(pendings):
        pending.sync()
    # The last copy's sync covers every copy this process wrote before it.
    assert len(syncs) - before == 1
    # A third unsynced copy in a row would overwrite the unsynced first one's twin slot:
    # the rule above syncs the newest before that, whoever wrote it.
    write_record(path, '{"a": 3}', defer_sync=True)
    before = len(syncs)
    write_record(path, '{"a": 4}', defer_sync=True)
    assert len(syncs) - before == 1


def test_a_failed_sync_is_an_error_every_time_it_is_asked(tmp_path, monkeypatch):
    from callexchange import statedir

    monkeypatch.setattr(statedir, "_SYNC_STATES", {})
    path = str(tmp_path / "usage.json")
    write_record(path, '{"a": 1}')
    pending = write_record(path, '{"a": 2}', defer_sync=True)

    def broken(fd):
        raise OSError(5, "Input/output error")
    monkeypatch.setattr(os, "fdatasync", broken)
    for _ in range(2):
        with pytest.raises(OSError, match="Input/output"):
            pending.sync()


def test_a_mark_that_cannot_be_made_costs_another_process_one_sync_not_a_count(
        tmp_path, syncs, monkeypatch):
    path = str(tmp_path / "usage.json")
    write_record(path, '{"a": 1}')
    (tmp_path / "usage.json.synced").mkdir()          # in the way of the mark file
    write_record(path, '{"a": 2}', defer_sync=True).sync()
    assert read_record(path) == '{"a": 2}'
    as_another_process(monkeypatch)
    before = len(syncs)
    write_record(path, '{"a": 3}')                   # no mark to trust: syncs copy 2 first
    assert len(syncs) - before == 2
    assert read_record(path) == '{"a": 3}'
