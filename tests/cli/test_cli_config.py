"""`callexchange config path|check|get|set|show`, as install.sh and an admin run it: the
admin tool in a subprocess against config files in tmp_path."""

import os
import shutil
import stat
import subprocess
import sys

import pytest
from paths import LIB

from callexchange.cli.config import set_value
from callexchange.config import config_from_text

GOOD = """\
# the gateway's config
[ami]
username = callexchange
secret = very-secret-value
port = 5039

[ani]
default = 12125550100
DE = 4930123456, 4940123456

[recordings]
root = /srv/recordings
base_url = http://pbx.example.test/wav-files/
"""


def run(config, *args, env=None):
    environ = dict(os.environ, PYTHONPATH=LIB, **(env or {}))
    environ.pop("CALLEXCHANGE_CONFIG", None)
    return subprocess.run([sys.executable, "-m", "callexchange", "--config", str(config),
                           "config", *args], env=environ, capture_output=True, text=True,
                          timeout=30, check=False)


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "callexchange.ini"
    path.write_text(GOOD)
    return path


@pytest.fixture
def broken(tmp_path):
    """A config that parses but does not validate (install.sh's CHANGE-ME caller ID)."""
    path = tmp_path / "broken.ini"
    path.write_text(GOOD.replace("default = 12125550100", "default = CHANGE-ME"))
    return path


# --- path, check ---

def test_path_prints_the_file_given_with_config(config):
    result = run(config, "path")
    assert (result.returncode, result.stdout) == (0, "%s\n" % config)


def test_path_follows_the_environment_without_config(config):
    environ = dict(os.environ, PYTHONPATH=LIB, CALLEXCHANGE_CONFIG=str(config))
    result = subprocess.run([sys.executable, "-m", "callexchange", "config", "path"],
                            env=environ, capture_output=True, text=True, check=False)
    assert result.stdout == "%s\n" % config


def test_check_of_a_good_config_says_ok(config):
    result = run(config, "check")
    assert (result.returncode, result.stdout) == (0, "ok: %s\n" % config)


def test_check_names_file_line_and_key_of_a_bad_value(broken):
    result = run(broken, "check")
    assert result.returncode == 1
    assert result.stdout == ""
    assert "%s:8: [ani] default" % broken in result.stderr


def test_check_of_a_missing_file_fails_naming_it(tmp_path):
    result = run(tmp_path / "nope.ini", "check")
    assert result.returncode == 1
    assert "nope.ini" in result.stderr and "not found" in result.stderr


# --- get ---

@pytest.mark.parametrize("section, key, expected", [
    ("ami", "port", "5039"),                       # set in the file
    ("ami", "host", "127.0.0.1"),                  # the default
    ("AMI", "Username", "callexchange"),           # names in any case, like the loader
    ("ani", "de", "4930123456, 4940123456"),       # a region pool
    ("ani", "gb", ""),                             # a region without a pool
    ("state", "dir", "/var/lib/callexchange"),
])
def test_get_prints_the_value_or_its_default(config, section, key, expected):
    result = run(config, "get", section, key)
    assert (result.returncode, result.stdout, result.stderr) == (0, expected + "\n", "")


def test_get_refuses_a_config_that_does_not_validate(broken):
    result = run(broken, "get", "ami", "port")
    assert result.returncode == 1 and result.stdout == ""
    assert "%s:8:" % broken in result.stderr


def test_get_lenient_prints_the_value_and_the_problem_on_stderr(broken):
    result = run(broken, "get", "--lenient", "ami", "port")
    assert (result.returncode, result.stdout) == (0, "5039\n")
    assert "%s:8: [ani] default" % broken in result.stderr


def test_get_lenient_still_fails_on_a_file_that_does_not_parse(tmp_path):
    path = tmp_path / "garbage.ini"
    path.write_text("[ami]\nthis line has no equals sign\n")
    result = run(path, "get", "--lenient", "ami", "port")
    assert result.returncode == 1 and result.stdout == ""
    assert "%s:2:" % path in result.stderr


@pytest.mark.parametrize("args", [
    ("get", "nosuch", "key"), ("get", "ami", "nosuch"), ("get", "ami"),
    ("get", "--shell", "ami", "port"), ("set", "ami", "nosuch", "1"),
])
def test_unknown_names_are_usage_errors(config, args):
    result = run(config, *args)
    assert result.returncode == 2, result
    assert result.stdout == ""
    assert result.stderr


def test_get_shell_output_evaluates_in_sh_to_the_values(config, tmp_path):
    config.write_text(GOOD.replace("/srv/recordings", "/srv/it's $(here) `x`"))
    result = run(config, "get", "--shell", "--prefix", "CFG_", "ami.port", "ami.secret",
                 "recordings.root", "webhook.url", "ani.de")
    assert result.returncode == 0, result.stderr
    names = [line.split("=", 1)[0] for line in result.stdout.splitlines()]
    assert names == ["CFG_AMI_PORT", "CFG_AMI_SECRET", "CFG_RECORDINGS_ROOT",
                     "CFG_WEBHOOK_URL", "CFG_ANI_DE"]
    shown = subprocess.run(
        ["sh", "-c", 'eval "$1"; printf "%s|" "$CFG_AMI_PORT" "$CFG_AMI_SECRET" '
         '"$CFG_RECORDINGS_ROOT" "$CFG_WEBHOOK_URL" "$CFG_ANI_DE"', "sh", result.stdout],
        capture_output=True, text=True, check=True).stdout
    assert shown == "5039|very-secret-value|/srv/it's $(here) `x`||4930123456, 4940123456|"


# --- show ---

def test_show_lists_every_key_and_masks_the_secrets(config):
    result = run(config, "show")
    assert result.returncode == 0, result.stderr
    assert "very-secret-value" not in result.stdout
    assert "secret = ***\n" in result.stdout
    assert "port = 5039\n" in result.stdout and "dedupe_seconds = 5\n" in result.stdout
    assert "de = 4930123456, 4940123456\n" in result.stdout


# --- set ---

def test_set_changes_one_line_and_keeps_every_other_byte_owner_and_mode(config):
    config.chmod(0o640)
    inode = config.stat().st_ino
    result = run(config, "set", "recordings", "base_url", "https://pbx1.example.test/wav-files")
    assert result.returncode == 0, result.stderr
    assert config.read_text() == GOOD.replace("http://pbx.example.test/wav-files/",
                                              "https://pbx1.example.test/wav-files")
    assert stat.S_IMODE(config.stat().st_mode) == 0o640
    assert config.stat().st_ino != inode        # replaced by rename, never half-written
    assert [p.name for p in config.parent.iterdir()] == [config.name]


def test_set_of_the_same_value_changes_nothing(config):
    before = config.stat()
    result = run(config, "set", "ami", "port", "5039")
    assert result.returncode == 0
    assert "already" in result.stdout
    assert config.stat().st_ino == before.st_ino and config.stat().st_mtime_ns == before.st_mtime_ns


def test_set_adds_a_missing_key_to_its_section_and_a_missing_section(config):
    assert run(config, "set", "ami", "timeout", "7").returncode == 0
    assert run(config, "set", "webhook", "url", "https://crm.example.test/hook").returncode == 0
    loaded = config_from_text(config.read_text(), str(config))
    assert loaded.ami.timeout == 7 and loaded.ami.port == 5039
    assert loaded.webhook.url == "https://crm.example.test/hook"
    assert "port = 5039\ntimeout = 7\n\n[ani]" in config.read_text()


@pytest.mark.parametrize("key, value, reason", [
    ("port", "seventy", "must be a whole number"),
    ("port", "1\n[x]", "one line"),
    ("secret", "", "must not be empty"),
])
def test_set_refuses_a_value_the_gateway_would_refuse_and_keeps_the_file(config, key, value,
                                                                         reason):
    result = run(config, "set", "ami", key, value)
    assert result.returncode == 1
    assert reason in result.stderr and "not changed" in result.stderr
    assert config.read_text() == GOOD


def test_set_never_echoes_a_refused_secret(config):
    result = run(config, "set", "webhook", "secret", "whsec_not!base64")
    assert result.returncode == 1
    assert "not!base64" not in result.stderr + result.stdout


def test_set_works_on_a_config_that_does_not_validate_yet(broken):
    # install.sh sets base_url on a fresh config whose caller ID is still CHANGE-ME.
    result = run(broken, "set", "recordings", "base_url", "https://pbx1.example.test/wav-files")
    assert result.returncode == 0, result.stderr
    assert "base_url = https://pbx1.example.test/wav-files\n" in broken.read_text()


@pytest.mark.parametrize("text, expected", [
    # continuation lines of the old value go with it
    ("[a]\nx = 1\n  2\n[b]\n", "[a]\nx = 9\n[b]\n"),
    # CRLF files stay CRLF
    ("[a]\r\nx = 1\r\n", "[a]\r\nx = 9\r\n"),
    # the last line without a newline
    ("[a]\nx = 1", "[a]\nx = 9"),
    # a section header written with spaces
    ("[ a ]\ny = 1\n", "[ a ]\ny = 1\nx = 9\n"),
])
def test_set_value_edits_text_exactly(text, expected):
    assert set_value(text, "a", "x", "9") == expected



def test_set_keeps_the_files_acl(config):
    # install.sh lets Asterisk's user read the config through an ACL entry: an edit by
    # `config set` must not take it away.
    if not shutil.which("setfacl"):
        if os.environ.get("CI"):
            pytest.fail("CI is set but setfacl is not installed (apt-get install acl)")
        pytest.skip("setfacl is not installed (apt-get install acl)")
    subprocess.run(["setfacl", "-m", "user:nobody:r--", str(config)], check=True)
    assert run(config, "set", "ami", "port", "5040").returncode == 0
    acl = subprocess.run(["getfacl", "--omit-header", str(config)], capture_output=True,
                         text=True, check=True).stdout
    assert "user:nobody:r--" in acl.splitlines()
    assert "port = 5040\n" in config.read_text()
