"""The state dir's one atomic write and one ownership rule (callexchange.statedir)."""
import os
import pwd
import subprocess
import sys

import pytest
from paths import LIB

from callexchange.statedir import StateDir, atomic_file, atomic_write, owner_for


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
