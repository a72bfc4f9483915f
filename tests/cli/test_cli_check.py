"""`callexchange check`'s questions to the PBX without a real Asterisk (that side is
tests/asterisk/test_check_real_pbx.py): the AMI user's privileges read from its own
ListCommands (here the sandbox's, which lists as Asterisk does), and what check says
when it cannot ask Asterisk's console."""

from types import SimpleNamespace

import pytest

from callexchange.pbx import asterisk_cli, checks
from callexchange.pbx.asterisk_cli import AsteriskConsole
from callexchange.sandbox.server import Sandbox

USER, SECRET = "callexchange", "s3cret"


def ami_settings(port):
    return SimpleNamespace(host="127.0.0.1", port=port, username=USER, secret=SECRET,
                           connect_timeout=1, timeout=2)


def test_the_ami_user_with_its_privileges_is_ok():
    with Sandbox(username=USER, secret=SECRET) as pbx:
        lines = checks.ami_lines(ami_settings(pbx.port))
    assert lines == [
        ("ok", "ami: logged in to 127.0.0.1:%d as callexchange (Asterisk Call Manager/"
               "11.0.0)" % pbx.port),
        ("ok", "ami: the AMI user may use Originate and MessageSend")]


@pytest.mark.parametrize("write, missing", [("originate", [("MessageSend", "message")]),
                                            ("message", [("Originate", "originate")]),
                                            ("call", [("Originate", "originate"),
                                                      ("MessageSend", "message")])])
def test_a_privilege_the_ami_user_lacks_is_named_from_its_listcommands(write, missing):
    with Sandbox(username=USER, secret=SECRET, write=write) as pbx:
        lines = checks.ami_lines(ami_settings(pbx.port))
        assert [a.action for a in pbx.actions] == ["Login", "ListCommands", "Logoff"]
    assert lines[1:] == [
        ("FAIL", "ami: the AMI user callexchange may not use %s (ListCommands does not list "
                 "it): its write= lacks %s (asterisk/manager_callexchange.conf has write = "
                 "originate,message)" % pair) for pair in missing]


def test_a_refused_login_is_one_failure():
    with Sandbox(username=USER, secret=SECRET, faults=["refuse-login"]) as pbx:
        lines = checks.ami_lines(ami_settings(pbx.port))
    assert lines == [("FAIL", "ami: 127.0.0.1:%d as callexchange: AMI login refused by "
                              "Asterisk: Authentication failed" % pbx.port)]


def dial_settings():
    return SimpleNamespace(dial=SimpleNamespace(
        outbound_context="callexchange-outbound", agent_context="callexchange-agent",
        agent_channel="PJSIP/{extension}", lead_channel="Local/{destination}@x/n",
        message_to="pjsip:{extension}"), ami=SimpleNamespace(username=USER))


def test_without_an_asterisk_binary_check_says_so_where_asterisk_has_a_config(tmp_path):
    lines = checks.local_lines(dial_settings(), None, str(tmp_path))
    assert lines == [("warn", "asterisk: no asterisk binary on this host, so the dialplan, "
                              "the hook and the channel technologies were not checked "
                              "(check --asterisk PATH names one)")]
    assert checks.local_lines(dial_settings(), None, str(tmp_path / "none")) == []


def test_a_console_that_refuses_leaves_the_hook_to_asterisk_conf(tmp_path):
    # An "asterisk" that says what Asterisk says to a user its console refuses.
    binary = tmp_path / "asterisk"
    binary.write_text("#!/bin/sh\necho 'Unable to connect to remote asterisk (does "
                      "/var/run/asterisk/asterisk.ctl exist?)'\nexit 1\n")
    binary.chmod(0o755)
    agi = tmp_path / "agi-bin"
    agi.mkdir()
    (tmp_path / "asterisk.conf").write_text("[directories]\nastagidir => %s\n" % agi)
    lines = checks.local_lines(dial_settings(), AsteriskConsole(str(binary)), str(tmp_path))
    assert lines[0][0] == "warn" and lines[0][1].startswith(
        "asterisk: could not ask Asterisk (its console refused this user or Asterisk is "
        "not running (asterisk -rx: Unable to connect to remote asterisk")
    assert lines[1:] == [("FAIL", "asterisk: the hook %s/callexchange-webhook.agi is missing "
                                  "(Asterisk's AGI directory is %s; install.sh puts it "
                                  "there)" % (agi, agi))]


def test_an_asterisk_outside_path_is_found_through_its_asterisk_conf(tmp_path, monkeypatch):
    # A source build in /opt: not on PATH, not in /usr/sbin; asterisk.conf's astsbindir
    # says where it is (as `sudo callexchange check` on such a PBX needs).
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setattr(asterisk_cli, "DEFAULT_BINARIES", ())
    sbin = tmp_path / "sbin"
    sbin.mkdir()
    (sbin / "asterisk").write_text("#!/bin/sh\n")
    (sbin / "asterisk").chmod(0o755)
    (tmp_path / "asterisk.conf").write_text("[directories]\nastsbindir => %s\n" % sbin)
    console = checks.console_for(None, str(tmp_path))
    assert console.binary == str(sbin / "asterisk")
    assert console.config_file == str(tmp_path / "asterisk.conf")
    (sbin / "asterisk").chmod(0o644)
    assert checks.console_for(None, str(tmp_path)) is None
