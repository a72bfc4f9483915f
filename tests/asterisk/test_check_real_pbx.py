"""`callexchange check` on a real PBX (a private Asterisk 22 of its own, harness.Bench):
with everything in place it says so; with each piece the gateway needs removed in turn
(a dialplan context, the hook, its execute bit, the channel technology of
agent_channel, the message technology of message_to, a privilege of the AMI user) it
names that piece; run without the rights of Asterisk's console it says what it could
not check."""

import os
import shutil
import subprocess

import pytest

import apache_server
import harness
from private_asterisk import HOOK, HOW_TO_RUN, find_asterisk

REPO = harness.TESTS.parent


@pytest.fixture(scope="module")
def bench():
    """A private Asterisk of this module's own (its files are broken and mended here).
    Needs only Asterisk: under CI=true a missing one fails, elsewhere it skips."""
    binary = find_asterisk()
    if not binary or not os.access(binary, os.X_OK):
        message = "no Asterisk found ($ASTERISK, PATH or /opt/asterisk-22.10.1)"
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but %s: the real-Asterisk suite must run in CI" % message,
                        pytrace=False)
        pytest.skip("%s; to run the real-Asterisk suite: %s" % (message, HOW_TO_RUN))
    base = apache_server.shared_tempdir("cx-check-")
    made = harness.Bench(binary, base)
    try:
        made.start_pbx()
        yield made
    finally:
        made.close()
        shutil.rmtree(base, ignore_errors=True)


def check(bench, *more, user=None, app=None):
    """Run `callexchange check` against the bench's Asterisk: (exit status, lines)."""
    prefix, venv = app or (REPO, apache_server.project_venv())
    argv = [str(venv / "bin" / "python3"), str(prefix / "bin" / "callexchange"),
            "--config", str(bench.config_path), "check", "--asterisk", bench.pbx.binary,
            "--asterisk-etc", str(bench.pbx.etc)] + list(more)
    if user:
        argv = ["runuser", "-u", user, "--"] + argv
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60,
                            env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"))
    assert not result.stderr.strip() or "Traceback" not in result.stderr, result.stderr
    return result.returncode, result.stdout.splitlines()


def failures(lines):
    return [line for line in lines if line.startswith("FAIL")]


@pytest.fixture
def pieces(bench):
    """The bench's files as they are now, put back (and reloaded) after the test."""
    etc = bench.pbx.etc
    saved = {name: (etc / name).read_text() for name in
             ("extensions_callexchange.conf", "manager_callexchange.conf", "modules.conf")}
    hook = bench.settings["AGI_DIR"] / HOOK.name
    mode = hook.stat().st_mode
    yield bench
    restart = (etc / "modules.conf").read_text() != saved["modules.conf"]
    for name, text in saved.items():
        (etc / name).write_text(text)
    if not hook.exists():
        (hook.parent / "moved.agi").rename(hook)
    hook.chmod(mode)
    if restart:
        bench.pbx.stop()
    if not bench.pbx.running():
        bench.pbx.start()
    bench.pbx.cli("module load res_pjsip_messaging.so")
    bench.pbx.cli("dialplan reload")
    bench.pbx.cli("manager reload")


def test_everything_in_place_is_ok(bench):
    status, lines = check(bench)
    assert status == 0, "\n".join(lines)
    for expected in ("ok   asterisk: the dialplan's contexts are loaded",
                     "ok   asterisk: channel technologies PJSIP and Local and message "
                     "technology pjsip are loaded",
                     "ok   asterisk: the AMI user callexchange has read=call and "
                     "write=originate,message",
                     "ok   asterisk: the hook %s/callexchange-webhook.agi can be run by "
                     "Asterisk's user root" % bench.settings["AGI_DIR"],
                     "ok   ami: the AMI user may use Originate and MessageSend"):
        assert any(line.startswith(expected) for line in lines), (expected, lines)


def test_a_dialplan_context_not_loaded_is_named(pieces):
    path = pieces.pbx.etc / "extensions_callexchange.conf"
    text = path.read_text()
    start = text.index("[callexchange-hangup]")
    end = text.index("\n[", start + 1)
    path.write_text(text[:start] + text[end + 1:])
    pieces.pbx.cli("dialplan reload")
    status, lines = check(pieces)
    assert status == 1
    assert failures(lines) == [
        "FAIL asterisk: dialplan context callexchange-hangup is not loaded (is "
        "extensions_callexchange.conf #included from extensions.conf? then asterisk -rx "
        "'dialplan reload')"]


def test_a_missing_hook_is_named(pieces):
    hook = pieces.settings["AGI_DIR"] / HOOK.name
    hook.rename(hook.parent / "moved.agi")
    status, lines = check(pieces)
    assert status == 1
    [line] = failures(lines)
    assert line.startswith("FAIL asterisk: the hook %s is missing" % hook)


def test_a_hook_asterisks_user_may_not_execute_is_named(pieces):
    hook = pieces.settings["AGI_DIR"] / HOOK.name
    hook.chmod(0o644)
    status, lines = check(pieces)
    assert status == 1
    assert failures(lines) == ["FAIL asterisk: the hook %s is not executable by Asterisk's "
                               "user root (mode 644)" % hook]


def test_the_message_technology_not_loaded_is_named(pieces):
    assert "Unloaded" in pieces.pbx.cli("module unload res_pjsip_messaging.so")
    status, lines = check(pieces)
    assert status == 1
    assert failures(lines) == [
        "FAIL asterisk: [dial] message_to sends with message technology pjsip, but "
        "Asterisk has not loaded res_pjsip_messaging.so (msg would never reach the "
        "softphone)"]


def test_the_channel_technology_of_agent_channel_not_loaded_is_named(pieces):
    # chan_pjsip cannot be unloaded while Asterisk runs: start it without.
    modules = pieces.pbx.etc / "modules.conf"
    modules.write_text(modules.read_text() + "noload = chan_pjsip.so\n")
    pieces.pbx.stop()
    pieces.pbx.start()
    status, lines = check(pieces)
    assert status == 1
    [line] = [line for line in failures(lines) if "agent_channel" in line]
    assert line.startswith("FAIL asterisk: [dial] agent_channel dials channel technology "
                           "PJSIP, which Asterisk has not loaded (loaded: ")
    assert "Local" in line and "PJSIP" not in line.split("(loaded: ")[1]


@pytest.mark.parametrize("line, replacement, expected", [
    ("write = originate,message", "write = originate", [
        "FAIL asterisk: %(file)s: [callexchange] write lacks message",
        "FAIL asterisk: the AMI user callexchange lacks write=message as Asterisk loaded it "
        "(write perm: originate)",
        "FAIL ami: the AMI user callexchange may not use MessageSend (ListCommands does not "
        "list it): its write= lacks message (asterisk/manager_callexchange.conf has write "
        "= originate,message)"]),
    ("read = call", "read = system", [
        "FAIL asterisk: %(file)s: [callexchange] read lacks call",
        "FAIL asterisk: the AMI user callexchange lacks read=call as Asterisk loaded it "
        "(read perm: system): no OriginateResponse would reach it"]),
])
def test_an_ami_user_without_a_privilege_is_named(pieces, line, replacement, expected):
    path = pieces.pbx.etc / "manager_callexchange.conf"
    text = path.read_text()
    assert line in text
    path.write_text(text.replace(line, replacement))
    pieces.pbx.cli("manager reload")
    status, lines = check(pieces)
    assert status == 1
    assert failures(lines) == [text % {"file": path} for text in expected]


def test_without_the_consoles_rights_check_says_what_it_could_not_check(bench):
    if os.geteuid() != 0:
        pytest.skip("needs root to run the check as another user")
    base = apache_server.shared_tempdir("cx-check-app-")
    try:
        app = apache_server.app_tree(base)
        user = apache_server.WORKER_USER
        status, lines = check(bench, "--no-ami", user=user, app=app)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    [warned] = [line for line in lines if line.startswith("warn asterisk: could not ask")]
    assert "not checked whether the dialplan contexts, the channel technologies of "\
           "agent_channel, lead_channel and message_to, and the AMI user's privileges are "\
           "loaded; run callexchange check as root or as Asterisk's user" in warned
    # What it can see without the console (asterisk.conf), it still checks.
    assert any(line.startswith("ok   asterisk: the hook ") for line in lines), lines
    assert not any(line.startswith(("FAIL asterisk: dialplan context",
                                    "ok   asterisk: the dialplan's contexts"))
                   for line in lines), lines

