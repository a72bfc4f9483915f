"""A full state disk loses no webhook: filled for real, not simulated.

The state dir lives on a small tmpfs mounted for the test (`mount -t tmpfs -o size=...`,
so it needs root, as the suite runs in CI), filled up to the last block (or the last
inode) by a filler file. Then the real hook runs as Asterisk runs it, and the real
background deliverer sends: every event must reach the CRM, in order per call, the hook
must leave no partial file, `webhooks status` and `check` must say the disk is full, and
the deliverer must not crash recording a failed attempt (Errno 28).
"""

import errno
import io
import os
import subprocess
import sys
import time

import pytest

from callexchange.cli import webhooks as cli_webhooks
from callexchange.config import load_config
from callexchange.webhooks.deliverer import Deliverer
from callexchange.webhooks.spool import RESERVE_CHUNK, RESERVE_CHUNKS, Spool
from crm_standin import verify_request
from paths import REPO
from test_agi_hook import CALL, HANGUP, Pbx, wait_until
from test_webhook_recovery import assert_in_order_per_call, run_deliver

DISK = "size=8m,nr_inodes=400,mode=0755"


@pytest.fixture
def small_disk(tmp_path):
    """A fresh 8 MiB tmpfs (400 inodes) at tmp_path/disk, unmounted afterwards."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    if os.geteuid() != 0:
        if os.environ.get("CI") == "true":
            pytest.fail("the full-disk tests mount a tmpfs: run them as root")
        pytest.skip("mounting a tmpfs needs root")
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", DISK, "cx-test", str(mount_point)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        if os.environ.get("CI") == "true":
            pytest.fail("cannot mount a tmpfs: %s" % result.stderr)
        pytest.skip("cannot mount a tmpfs here: %s" % result.stderr.strip())
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(directory, what):
    """Fill the filesystem of `directory` to its last block ("blocks": one big file) or
    its last inode ("inodes": empty files). Returns the filler's paths."""
    paths = []
    if what == "blocks":
        path = os.path.join(directory, "filler")
        paths.append(path)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            chunk = b"\0" * 65536
            while True:
                try:
                    if os.write(fd, chunk) == 0:
                        break
                except OSError as error:
                    if error.errno != errno.ENOSPC:
                        raise
                    if len(chunk) == 1:
                        break
                    chunk = chunk[:len(chunk) // 2]
        finally:
            os.close(fd)
    else:
        while True:
            path = os.path.join(directory, "filler.%d" % len(paths))
            try:
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
            except OSError as error:
                if error.errno != errno.ENOSPC:
                    raise
                break
            paths.append(path)
    return paths


def unfill(paths):
    for path in set(paths):
        os.unlink(path)


def status_text(config):
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--config")
    cli_webhooks.register(parser.add_subparsers())
    args = parser.parse_args(["--config", config.path, "webhooks", "status"])
    out = io.StringIO()
    assert args.handler(args, out=out) == 0
    return out.getvalue()


def disk_pbx(tmp_path, small_disk, crm):
    pbx = Pbx(tmp_path, crm.url)
    text = open(pbx.config.path).read().replace(
        "dir = %s" % (tmp_path / "state"), "dir = %s" % (small_disk / "state"))
    with open(pbx.config.path, "w") as handle:
        handle.write(text)
    pbx.config = load_config(pbx.config.path)
    pbx.spool = Spool.for_state_dir(pbx.config.state.dir)
    return pbx


@pytest.mark.parametrize("what", ["blocks", "inodes"])
def test_a_full_disk_loses_no_webhook(tmp_path, small_disk, crm, what):
    pbx = disk_pbx(tmp_path, small_disk, crm)
    try:
        # The gateway at work before the disk fills: the deliverer made the reserve.
        assert run_deliver(pbx.config, time.time, None) == "delivered 0; pending 0, dead 0\n"
        assert pbx.spool.reserve_bytes() == RESERVE_CHUNKS * RESERVE_CHUNK
        def calls(first, count):
            generated, elapsed = [], []
            for n in range(first, first + count):
                uniqueid = "1732700000.%02d" % n
                for event, variables in (("connect", CALL), ("hangup", HANGUP)):
                    # Through its #! line (python3 -S), as Asterisk starts it.
                    run = pbx.hook(event, dict(variables, CX_UNIQUEID=uniqueid), python="")
                    assert run.returncode == 0 and "lost" not in run.stderr, run.stderr
                    elapsed.append(run.elapsed)
                    generated.append("msg_%s_%s" % (uniqueid, event))
                    # No partial file, ever (before: a zero-byte file per lost event).
                    assert os.listdir(pbx.spool.tmp) == []
            return generated, sorted(elapsed)

        before, normal = calls(0, 8)
        crm.wait_for(len(before))
        filler = fill(str(small_disk), what)
        free = pbx.spool.free_space()
        assert free[0] == 0 if what == "blocks" else free[1] == 0
        generated, runs = calls(8, 8)
        generated = before + generated
        requests = crm.wait_for(len(generated), timeout=30)
        delivered = [r.id for r in requests]
        assert sorted(delivered) == sorted(generated)
        assert_in_order_per_call(delivered, 16)
        for request in requests:
            verify_request(request)
        wait_until(lambda: pbx.spool.pending() == [])
        # Still full: status and check say so.
        text = status_text(pbx.config)
        assert "disk: FAIL: DISK FULL" in text, text
        check = subprocess.run([sys.executable, str(REPO / "bin" / "callexchange"), "--config",
                                pbx.config.path, "check", "--no-ami"],
                               capture_output=True, text=True, timeout=60)
        assert check.returncode == 1
        assert "FAIL webhook spool: DISK FULL" in check.stdout, check.stdout
        print("\nfull disk (%s): 16 events on a full disk (+16 before it filled), %d of %d "
              "delivered; reserve left %d of %d bytes; hook wall time p50 %.1f ms (%.1f ms "
              "before), max %.1f ms (%.1f ms)"
              % (what, len(set(delivered)), len(generated), pbx.spool.reserve_bytes(),
                 RESERVE_CHUNKS * RESERVE_CHUNK, runs[8] * 1000, normal[8] * 1000,
                 runs[-1] * 1000, normal[-1] * 1000))
        # Space again: the deliverer refills the reserve, status is calm again.
        unfill(filler)
        run_deliver(pbx.config, time.time, None)  # (or wakes the one at work, which does)
        wait_until(lambda: pbx.spool.reserve_bytes() == RESERVE_CHUNKS * RESERVE_CHUNK)
        assert "DISK FULL" not in status_text(pbx.config)
    finally:
        pbx.kill_deliverer()


def test_the_deliverer_does_not_crash_recording_a_failed_attempt_on_a_full_disk(
        tmp_path, small_disk, crm):
    from test_webhook_delivery import spool_event

    pbx = disk_pbx(tmp_path, small_disk, crm)
    pbx.environ["CALLEXCHANGE_WEBHOOK_LINGER"] = "60"
    try:
        run_deliver(pbx.config, time.time, None)  # the reserve
        filler = fill(str(small_disk), "blocks")
        # `webhooks deliver` (the timer's, or by hand) on a full disk, the CRM failing:
        name = spool_event(pbx.spool, pbx.config, "connect", "1732700000.01", time.time())
        filler += fill(str(small_disk), "blocks")  # what the reserve freed, taken again
        crm.answer(500, times=1)
        text = run_deliver(pbx.config, time.time, None)
        assert "to retry 1" in text and "last error: HTTP 500" in text
        assert "disk: cannot record the attempt of %s: No space left" % name in text
        assert os.listdir(pbx.spool.tmp) == []  # no partial state file
        assert "attempts" not in pbx.spool.read(name)  # the event as the hook wrote it
        # The hook's background deliverer, on the same full disk: its attempt's state
        # stays in memory, it retries from there and delivers, in order, without a crash.
        crm.hang()
        crm.answer(500, times=2)
        assert pbx.hook("hangup", dict(HANGUP, CX_UNIQUEID="1732700000.01")).returncode == 0
        crm.wait_for(2)
        holder = pbx.spool.lock_holder()
        filler += fill(str(small_disk), "blocks")
        crm.release()
        requests = crm.wait_for(5, timeout=30)
        assert pbx.spool.lock_holder() == holder  # the same process all along
        assert [r.id for r in requests[-2:]] == ["msg_1732700000.01_connect",
                                                 "msg_1732700000.01_hangup"]
        wait_until(lambda: pbx.spool.pending() == [])
        assert not os.path.exists(pbx.spool.crash_path)
        unfill(filler)
    finally:
        pbx.kill_deliverer()


def test_with_the_reserve_spent_the_hook_says_so_and_leaves_nothing(tmp_path, small_disk, crm):
    pbx = disk_pbx(tmp_path, small_disk, crm)
    try:
        pbx.spool.ensure()  # no reserve: as if spent
        filler = fill(str(small_disk), "blocks")
        run = pbx.hook("connect", CALL)
        assert run.returncode == 0
        assert "No space left on device" in run.stderr and "lost" in run.stderr
        assert os.listdir(pbx.spool.tmp) == [] and pbx.spool.pending() == []
        assert "DISK FULL" in status_text(pbx.config)
        unfill(filler)
    finally:
        pbx.kill_deliverer()


def test_a_read_only_state_disk_costs_no_crash_and_no_duplicate(tmp_path, small_disk, crm):
    from test_webhook_delivery import spool_event

    pbx = disk_pbx(tmp_path, small_disk, crm)
    try:
        run_deliver(pbx.config, time.time, None)  # a spool in use: its lock file, its reserve
        name = spool_event(pbx.spool, pbx.config, "connect", "1732700000.01", time.time())
        subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
        try:
            # The hook: its event cannot be written; it says so and the call goes on.
            run = pbx.hook("hangup", dict(HANGUP, CX_UNIQUEID="1732700000.01"))
            assert run.returncode == 0 and "Read-only file system" in run.stderr
            # The deliverer sends what is there, once, though it cannot remove it.
            text = run_deliver(pbx.config, time.time, None)
            assert "delivered 1" in text
            assert "disk: cannot remove delivered %s: Read-only file system" % name in text
            assert crm.ids() == ["msg_1732700000.01_connect"]
        finally:
            subprocess.run(["mount", "-o", "remount,rw", str(small_disk)], check=True)
    finally:
        pbx.kill_deliverer()
