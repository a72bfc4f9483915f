"""The admin tool as an operator runs it: `python -m callexchange ...` in a subprocess."""

import os
import socket
import stat
import subprocess
import sys

import pytest
from paths import LIB

from callexchange import keys

BIN = os.path.join(os.path.dirname(LIB), "bin", "callexchange")


def write_config(tmp_path, ami_port, extra=""):
    (tmp_path / "state").mkdir(exist_ok=True)
    path = tmp_path / "callexchange.ini"
    path.write_text(
        "[ami]\nhost = 127.0.0.1\nport = %d\nusername = callexchange\nsecret = s3cret\n"
        "connect_timeout = 0.5\ntimeout = 1\n"
        "[ani]\ndefault = 12125550100\n"
        "[recordings]\nroot = %s\nbase_url = http://127.0.0.1/wav-files\n"
        "[auth]\nkeys_file = %s\n[state]\ndir = %s\n%s"
        % (ami_port, tmp_path / "rec", tmp_path / "keys", tmp_path / "state", extra))
    return path


def run(config, *args):
    env = dict(os.environ, CALLEXCHANGE_CONFIG=str(config), PYTHONPATH=LIB)
    return subprocess.run([sys.executable, "-m", "callexchange", *args], env=env,
                          capture_output=True, text=True, timeout=30)


def closed_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_keys_add_prints_the_key_once_and_stores_only_its_digest(tmp_path):
    config = write_config(tmp_path, closed_port())
    result = run(config, "keys", "add", "--label", "acme-crm")
    assert result.returncode == 0, result.stderr
    key = [line.split(": ", 1)[1] for line in result.stdout.splitlines()
           if line.startswith("api-key: ")][0]
    assert len(key) == 64
    stored = (tmp_path / "keys").read_text()
    assert key not in stored
    assert keys.digest(key) in stored
    assert stat.S_IMODE(os.stat(tmp_path / "keys").st_mode) == 0o640
    assert keys.find_label(str(tmp_path / "keys"), key) == "acme-crm"


def test_keys_add_with_given_key_and_public_key_file(tmp_path):
    config = write_config(tmp_path, closed_port())
    assert run(config, "keys", "add", "--label", "one", "--api-key", "k-123").returncode == 0
    public = tmp_path / "client.pub"
    public.write_bytes(b"ssh-ed25519 AAAAC3Nza... client@crm\n")
    result = run(config, "keys", "add", "--label", "two", "--public-key-file", str(public))
    assert result.returncode == 0, result.stderr
    legacy_key = keys.key_from_public_key_file(str(public))
    assert "api-key: %s" % legacy_key in result.stdout
    assert keys.find_label(str(tmp_path / "keys"), "k-123") == "one"
    assert keys.find_label(str(tmp_path / "keys"), legacy_key) == "two"


def test_keys_add_refuses_a_label_in_use(tmp_path):
    config = write_config(tmp_path, closed_port())
    assert run(config, "keys", "add", "--label", "one", "--api-key", "a").returncode == 0
    result = run(config, "keys", "add", "--label", "one", "--api-key", "b")
    assert result.returncode == 1
    assert "already in use" in result.stderr
    assert keys.find_label(str(tmp_path / "keys"), "b") is None


def test_keys_list_shows_labels_never_keys(tmp_path):
    config = write_config(tmp_path, closed_port())
    run(config, "keys", "add", "--label", "one", "--api-key", "secret-key-one")
    result = run(config, "keys", "list")
    assert result.returncode == 0
    assert "one" in result.stdout
    assert "secret-key-one" not in result.stdout
    assert keys.digest("secret-key-one") not in result.stdout  # only a prefix is shown


def test_keys_revoke_removes_the_key(tmp_path):
    config = write_config(tmp_path, closed_port())
    run(config, "keys", "add", "--label", "one", "--api-key", "k1")
    run(config, "keys", "add", "--label", "two", "--api-key", "k2")
    assert run(config, "keys", "revoke", "one").returncode == 0
    assert keys.find_label(str(tmp_path / "keys"), "k1") is None
    assert keys.find_label(str(tmp_path / "keys"), "k2") == "two"
    missing = run(config, "keys", "revoke", "one")
    assert missing.returncode == 1 and "no key labelled 'one'" in missing.stderr


def test_check_reports_config_error_with_file_and_line(tmp_path):
    config = write_config(tmp_path, closed_port(), extra="[dial]\nring_timeout = soon\n")
    result = run(config, "check")
    assert result.returncode == 1
    line = len(config.read_text().splitlines())
    assert "%s:%d:" % (config, line) in result.stdout
    assert "ring_timeout" in result.stdout


def test_check_reports_unknown_key_with_its_line(tmp_path):
    config = write_config(tmp_path, closed_port(), extra="[webhook]\nurll = http://x\n")
    result = run(config, "check")
    assert result.returncode == 1
    assert "%s:%d: unknown key 'urll'" % (config, len(config.read_text().splitlines())) \
        in result.stdout


def test_check_reports_every_problem_of_the_config_in_line_order(tmp_path):
    config = write_config(tmp_path, closed_port(),
                          extra="[dial]\nring_timeout = soon\n[dail]\nx = 1\n"
                                "[webhook]\nurll = http://x\n")
    config.write_text(config.read_text().replace("port = ", "port = abc", 1))
    result = run(config, "check")
    assert result.returncode == 1
    lines = config.read_text().splitlines()
    failed = [line for line in result.stdout.splitlines() if line.startswith("FAIL config:")]
    expected = [n for n, text in enumerate(lines, 1)
                if text.startswith(("port", "ring_timeout", "[dail]", "urll"))]
    assert [int(line.split(":")[2]) for line in failed] == expected, result.stdout
    for word in ("port", "ring_timeout", "dail", "urll"):
        assert word in result.stdout


def test_check_says_whether_the_webhook_url_accepts_connections(tmp_path):
    with socket.socket() as crm:
        crm.bind(("127.0.0.1", 0))
        crm.listen()
        url = "http://127.0.0.1:%d/hooks" % crm.getsockname()[1]
        config = write_config(tmp_path, closed_port(), extra="[webhook]\nurl = %s\n" % url)
        up = run(config, "check", "--no-ami", "--no-asterisk")
    down = run(config, "check", "--no-ami", "--no-asterisk")   # nothing listens there now
    assert "ok   webhook: %s (127.0.0.1:" % url in up.stdout, up.stdout
    assert "warn webhook: %s: cannot connect to 127.0.0.1:" % url in down.stdout, down.stdout
    # The CRM being down is a warning (events wait in the spool), not a failure.
    assert up.returncode == down.returncode


def test_check_reports_missing_config_file(tmp_path):
    result = run(tmp_path / "nope.ini", "check")
    assert result.returncode == 1
    assert "config file not found" in result.stdout


def test_check_fails_when_ami_is_down(tmp_path):
    config = write_config(tmp_path, closed_port())
    result = run(config, "check")
    assert result.returncode == 1
    assert "FAIL ami:" in result.stdout
    assert "s3cret" not in result.stdout + result.stderr


def test_check_logs_in_to_the_sandbox(tmp_path):
    from callexchange.sandbox.server import Sandbox
    with Sandbox(username="callexchange", secret="s3cret") as pbx:
        config = write_config(tmp_path, pbx.port)
        run(config, "keys", "add", "--label", "one", "--api-key", "k1")
        result = run(config, "check")
        assert result.returncode == 0, result.stdout + result.stderr
        assert "ok   ami: logged in to 127.0.0.1:%d as callexchange" % pbx.port in result.stdout
        assert [a["Action"] for a in pbx.actions][:1] == ["Login"]


def test_check_fails_when_the_sandbox_refuses_the_login(tmp_path):
    from callexchange.sandbox.server import Sandbox
    with Sandbox(username="callexchange", secret="s3cret", faults=["refuse-login"]) as pbx:
        config = write_config(tmp_path, pbx.port)
        result = run(config, "check")
        assert result.returncode == 1
        assert "FAIL ami:" in result.stdout


def test_ani_status_lists_todays_usage(tmp_path):
    from callexchange.calls.ani import AniLedger
    config = write_config(tmp_path, closed_port())
    AniLedger(str(tmp_path / "state")).reserve(("12125550100",), frozenset(), 200)
    result = run(config, "ani", "status")
    assert result.returncode == 0
    assert any(line.split()[:3] == ["default", "12125550100", "1"]
               for line in result.stdout.splitlines())


@pytest.mark.parametrize("entry", [BIN])
def test_bin_script_runs_from_a_checkout(tmp_path, entry):
    config = write_config(tmp_path, closed_port())
    env = dict(os.environ, CALLEXCHANGE_CONFIG=str(config))
    env.pop("PYTHONPATH", None)
    result = subprocess.run([sys.executable, entry, "keys", "list"], env=env,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "no keys" in result.stdout


# --- the AMI user in Asterisk's config, read with pyst2's parser -----------------------

SHIPPED_MANAGER = os.path.join(os.path.dirname(LIB), "asterisk", "manager_callexchange.conf")


def write_manager(etc, text):
    etc.mkdir(exist_ok=True)
    (etc / "manager_callexchange.conf").write_text(text)


def shipped_manager(username="callexchange", secret="s3cret"):
    with open(SHIPPED_MANAGER) as handle:
        return handle.read().replace("@AMI_USERNAME@", username).replace("@AMI_SECRET@", secret)


def test_check_accepts_the_shipped_ami_user(tmp_path):
    config = write_config(tmp_path, closed_port())
    write_manager(tmp_path / "asterisk", shipped_manager())
    result = run(config, "check", "--no-ami", "--asterisk-etc", str(tmp_path / "asterisk"))
    assert "ok   asterisk: %s grants [callexchange] exactly" % (
        tmp_path / "asterisk" / "manager_callexchange.conf") in result.stdout
    assert result.returncode == 0, result.stdout


def test_check_fails_on_a_wrong_secret_or_missing_rights(tmp_path):
    config = write_config(tmp_path, closed_port())
    text = shipped_manager(secret="other").replace("write = originate,message", "write = originate")
    write_manager(tmp_path / "asterisk", text)
    result = run(config, "check", "--no-ami", "--asterisk-etc", str(tmp_path / "asterisk"))
    assert result.returncode == 1
    assert "FAIL asterisk:" in result.stdout and "secret differs" in result.stdout
    assert "write lacks message" in result.stdout
    assert "other" not in result.stdout and "s3cret" not in result.stdout


def test_check_warns_when_the_ami_user_may_do_more(tmp_path):
    config = write_config(tmp_path, closed_port())
    write_manager(tmp_path / "asterisk", shipped_manager().replace("read = call", "read = call,system"))
    result = run(config, "check", "--no-ami", "--asterisk-etc", str(tmp_path / "asterisk"))
    assert "warn asterisk:" in result.stdout and "read grants more than the gateway needs: system" \
        in result.stdout
    assert result.returncode == 0


def test_check_fails_when_asterisk_has_no_gateway_user(tmp_path):
    config = write_config(tmp_path, closed_port())
    (tmp_path / "asterisk").mkdir()
    result = run(config, "check", "--no-ami", "--asterisk-etc", str(tmp_path / "asterisk"))
    assert result.returncode == 1
    assert "manager_callexchange.conf does not exist" in result.stdout


def test_check_skips_asterisk_where_there_is_none(tmp_path):
    config = write_config(tmp_path, closed_port())
    result = run(config, "check", "--no-ami", "--asterisk-etc", str(tmp_path / "none"))
    assert "asterisk:" not in result.stdout


@pytest.mark.parametrize("dir_mode, file_mode", [(0o755, 0o600), (0o750, 0o640)],
                         ids=["file-unreadable", "dir-closed"])
def test_check_only_warns_when_the_ami_user_file_is_not_readable(dir_mode, file_mode):
    # As install.sh runs it: as www-data, who may not read Asterisk's 0640 files, nor
    # look into a config dir that is 0750 asterisk:asterisk (where a closed dir made the
    # file "not exist", a FAIL that stopped install.sh on a real PBX).
    if os.geteuid() != 0:
        pytest.skip("needs root to run the check as www-data")
    import shutil
    from apache_server import app_tree, shared_tempdir
    base = shared_tempdir("cx-check-")
    try:
        # The checkout and its venv, or a copy www-data can reach (a clone under /root).
        prefix, venv = app_tree(base)
        config = write_config(base, closed_port())
        write_manager(base / "asterisk", shipped_manager())
        (base / "asterisk").chmod(dir_mode)
        (base / "asterisk" / "manager_callexchange.conf").chmod(file_mode)
        config.chmod(0o644)
        (base / "state").chmod(0o755)
        env = dict(os.environ, CALLEXCHANGE_CONFIG=str(config), PYTHONPATH=str(prefix / "lib"))
        result = subprocess.run(
            ["runuser", "-u", "www-data", "--", str(venv / "bin" / "python3"), "-m", "callexchange",
             "check", "--no-ami", "--asterisk-etc", str(base / "asterisk")],
            env=env, capture_output=True, text=True, timeout=30)
        assert "warn asterisk:" in result.stdout, result.stdout + result.stderr
        assert "not readable by this user" in result.stdout
        assert "FAIL asterisk" not in result.stdout
    finally:
        shutil.rmtree(base)


def test_check_refuses_a_region_phonenumbers_does_not_know(tmp_path):
    config = write_config(tmp_path, closed_port(), extra="[dial]\ndefault_region = XX\n")
    result = run(config, "check", "--no-ami")
    assert result.returncode == 1
    line = len(config.read_text().splitlines())
    assert "FAIL config: %s:%d: [dial] default_region 'XX' is not a region" % (config, line) \
        in result.stdout


def test_check_refuses_a_webhook_secret_that_cannot_sign(tmp_path):
    config = write_config(tmp_path, closed_port(), extra="[webhook]\nsecret = notawhsec!\n")
    result = run(config, "check", "--no-ami")
    assert result.returncode == 1
    assert "%s:%d: [webhook] secret must be whsec_<base64>" % (
        config, len(config.read_text().splitlines())) in result.stdout
    assert "notawhsec" not in result.stdout  # a secret is never echoed
