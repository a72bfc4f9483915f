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

