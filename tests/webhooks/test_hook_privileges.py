"""Least privilege: the dialplan hook, and the deliverer it starts, reach only what they
need, the config file they read and `[state] dir`/webhooks/, never the keys file or the
rest of the state dir.

Proved twice over, as Asterisk would run it on a PBX laid out as asterisk/README.md says
("Who may write what"): the hook runs as an unprivileged user (nobody) that can read the
config and owns the spool but may only traverse the state dir and cannot read the keys
file, and the call's events still reach the CRM; and Python's audit hooks, installed in
the hook's and the deliverer's own processes by a wrapper (nothing in lib/), log every
file they open, list, create, rename or remove: all of it is the code they run, the
config or the spool.
"""

import os
import shutil
import stat
import sys
import tempfile
from pathlib import Path

import pytest

from test_agi_hook import CALL, HANGUP, wait_until
from callexchange.config import load_config
from callexchange.sandbox.agi_peer import run_hook
from callexchange.webhooks.spool import Spool
from testconfig import config_text
from crm_standin import SECRET, verify_request
from paths import LIB

NOBODY = 65534

AUDIT = r'''
import os, sys

_LOG = os.environ["CX_AUDIT_LOG"]
_WATCHED = {"open", "os.listdir", "os.scandir", "os.mkdir", "os.rename", "os.remove",
            "os.rmdir", "os.chmod", "os.chown", "os.truncate", "os.link", "os.symlink",
            "os.utime", "shutil.copyfile", "shutil.rmtree"}
_busy = []


def _audit(event, args):
    if event not in _WATCHED or _busy or not args:
        return
    # (open: the path, mode, flags; rename, link: both paths)
    paths = [a for a in args[:1 if event == "open" else 2] if isinstance(a, (str, bytes))]
    if not paths:
        return
    _busy.append(1)
    try:
        with open(_LOG, "a") as log:
            for path in paths:
                path = os.fsdecode(path)
                log.write("%d %s %s\n" % (os.getpid(), event, os.path.abspath(path)))
    finally:
        _busy.pop()


sys.addaudithook(_audit)
'''

HOOK = r'''
import os, sys
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sitecustomize  # the audit hook (the hook runs with -S: no site, so by hand)
sys.path.insert(0, %r)
from callexchange.webhooks.hook import hook_main
sys.exit(hook_main(["callexchange-webhook.agi", sys.argv[1]]))
'''


@pytest.fixture
def pbx_host():
    """A PBX's layout in a fresh directory nobody can traverse to (under /tmp, 0755)."""
    if os.geteuid() != 0:
        if os.environ.get("CI") == "true":
            pytest.fail("the privilege test runs the hook as nobody: run it as root")
        pytest.skip("needs root, to run the hook as another user")
    base = tempfile.mkdtemp(prefix="cx-privileges-", dir="/tmp")
    os.chmod(base, 0o755)
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def make_dir(path, mode, uid=0, gid=0):
    os.makedirs(path, exist_ok=True)
    os.chown(path, uid, gid)
    os.chmod(path, mode)
    return path


def test_the_hook_and_its_deliverer_touch_only_the_config_and_the_spool(pbx_host, crm):
    base = pbx_host
    etc = make_dir(os.path.join(base, "etc"), 0o755)
    state = make_dir(os.path.join(base, "state"), 0o711)       # traverse only
    spool_dir = make_dir(os.path.join(state, "webhooks"), 0o750, NOBODY, NOBODY)
    make_dir(os.path.join(state, "ani"), 0o700)                 # the CGI's, not the hook's
    make_dir(os.path.join(base, "recordings"), 0o700)
    audit_dir = make_dir(os.path.join(base, "audit"), 0o755)
    log = os.path.join(audit_dir, "audit.log")
    with open(log, "w"):
        pass
    os.chmod(log, 0o666)
    with open(os.path.join(audit_dir, "sitecustomize.py"), "w") as handle:
        handle.write(AUDIT)
    hook = os.path.join(audit_dir, "hook.py")
    with open(hook, "w") as handle:
        handle.write(HOOK % LIB)
    keys_file = os.path.join(etc, "api-keys")
    with open(keys_file, "w") as handle:
        handle.write("# secret digests\n")
    os.chmod(keys_file, 0o600)
    config_file = os.path.join(etc, "callexchange.ini")
    text = config_text(Path(base), 5038, auth={"keys_file": keys_file},
                       webhook={"url": crm.url, "secret": SECRET, "extended": "yes"})
    with open(config_file, "w") as handle:
        handle.write(text)
    os.chown(config_file, 0, NOBODY)
    os.chmod(config_file, 0o640)                                # readable by its group only
    config = load_config(config_file)
    assert config.auth.keys_file == keys_file and config.state.dir == state
    # Asterisk's way in: the user that owns the spool, and nothing more.
    wrapper = os.path.join(audit_dir, "as-nobody")
    with open(wrapper, "w") as handle:
        handle.write("#!/bin/sh\nexec setpriv --reuid=%d --regid=%d --clear-groups -- "
                     "%s -S %s \"$@\"\n" % (NOBODY, NOBODY, sys.executable, hook))
    os.chmod(wrapper, 0o755)
    environ = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "CALLEXCHANGE_CONFIG":
               config_file, "CX_AUDIT_LOG": log, "PYTHONPATH": audit_dir,
               "CALLEXCHANGE_WEBHOOK_LINGER": "1"}
    spool = Spool(spool_dir)
    try:
        for event, variables in (("connect", CALL), ("hangup", HANGUP)):
            run = run_hook(event, variables, hook=wrapper, python="", environ=environ)
            assert run.returncode == 0 and run.stderr == "", run.stderr
        requests = crm.wait_for(2)
        assert [r.id for r in requests] == ["msg_%s_connect" % CALL["CX_UNIQUEID"],
                                            "msg_%s_hangup" % CALL["CX_UNIQUEID"]]
        for request in requests:
            assert verify_request(request)["uniqueid"] == CALL["CX_UNIQUEID"]
        wait_until(lambda: spool.pending() == [] and spool.lock_holder() is None)
    finally:
        holder = spool.lock_holder()
        if holder:
            os.kill(holder, 9)
    assert not os.path.exists(spool.crash_path)
    # Everything the spool holds belongs to the hook's user.
    for root, dirs, files in os.walk(spool_dir):
        for name in dirs + files:
            assert os.lstat(os.path.join(root, name)).st_uid == NOBODY, name
    # What the hook's and the deliverer's processes touched.
    with open(log) as handle:
        entries = [line.rstrip("\n").split(" ", 2) for line in handle]
    pids = {pid for pid, _, _ in entries}
    assert len(pids) >= 3  # two hooks and at least one deliverer
    code = [os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, LIB, audit_dir)]
    code += [os.path.realpath(p) for p in sys.path if p and os.path.isdir(p)]
    touched = set()
    for pid, event, path in entries:
        real = os.path.realpath(path)
        if (event in ("open", "os.listdir", "os.scandir")
                and any(real == c or real.startswith(c + os.sep) for c in code)):
            continue  # reading the code it runs
        if event == "os.mkdir" and os.path.basename(real) == "__pycache__" and any(
                real.startswith(c + os.sep) for c in code):
            continue  # the interpreter's bytecode cache (an install's tree is root's)
        if real in ("/dev/null", "/dev/urandom") or real.startswith("/proc/"):
            continue
        touched.add((event, path))
    outside = sorted((event, path) for event, path in touched
                     if path != config_file and not path.startswith(spool_dir + os.sep)
                     and path != spool_dir)
    assert outside == [], outside
    assert ("open", config_file) in touched
    assert any(path.startswith(os.path.join(spool_dir, "new") + os.sep)
               for event, path in touched if event == "os.rename")
    assert stat.S_IMODE(os.stat(keys_file).st_mode) == 0o600
