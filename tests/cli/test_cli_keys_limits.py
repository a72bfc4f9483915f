"""`callexchange keys add/limit/list` with per-key limits, and `check` of [policy], as an
operator runs them: `python -m callexchange ...` in a subprocess."""

import os
import subprocess
import sys

from paths import LIB

from callexchange import keys
from callexchange.calls.quota import CallQuota


def write_config(tmp_path, policy=""):
    (tmp_path / "state").mkdir(exist_ok=True)
    path = tmp_path / "callexchange.ini"
    path.write_text(
        "[ami]\nusername = callexchange\nsecret = s3cret\n"
        "[ani]\ndefault = 12125550100\n"
        "[recordings]\nroot = %s\nbase_url = http://127.0.0.1/wav-files\n"
        "[auth]\nkeys_file = %s\n[state]\ndir = %s\n%s"
        % (tmp_path / "rec", tmp_path / "keys", tmp_path / "state", policy))
    return path


def run(config, *args):
    env = dict(os.environ, CALLEXCHANGE_CONFIG=str(config), PYTHONPATH=LIB)
    return subprocess.run([sys.executable, "-m", "callexchange", *args], env=env,
                          capture_output=True, text=True, timeout=30)


def stored(tmp_path, label):
    return keys.entry_for(str(tmp_path / "keys"), label).limits


def test_keys_add_stores_the_limits_given(tmp_path):
    config = write_config(tmp_path)
    result = run(config, "keys", "add", "--label", "acme", "--allow-regions", "gb,DE",
                 "--max-calls-per-minute", "30", "--max-calls-per-day", "2000")
    assert result.returncode == 0, result.stderr
    assert "limits: allow_regions=GB,DE max_calls_per_minute=30 max_calls_per_day=2000" \
        in result.stdout
    assert stored(tmp_path, "acme") == keys.KeyLimits(("GB", "DE"), 30, 2000)


def test_keys_add_without_limits_has_none(tmp_path):
    config = write_config(tmp_path)
    assert run(config, "keys", "add", "--label", "plain").returncode == 0
    assert stored(tmp_path, "plain") == keys.NO_LIMITS


def test_keys_add_refuses_bad_limits_and_stores_nothing(tmp_path):
    config = write_config(tmp_path)
    for args, problem in ((("--allow-regions", "GB,UK"), "UK is not a region phonenumbers "
                                                          "knows (the United Kingdom is GB)"),
                          (("--allow-regions", "GBR"), "two-letter ISO regions"),
                          (("--max-calls-per-minute", "0"), "from 1 to 1000"),
                          (("--max-calls-per-day", "lots"), "whole number")):
        result = run(config, "keys", "add", "--label", "acme", *args)
        assert result.returncode == 2
        assert problem in result.stderr, result.stderr
    assert not os.path.exists(tmp_path / "keys")


def test_keys_limit_changes_only_what_is_given(tmp_path):
    config = write_config(tmp_path)
    run(config, "keys", "add", "--label", "acme", "--api-key", "k1", "--allow-regions", "GB",
        "--max-calls-per-minute", "30")
    result = run(config, "keys", "limit", "acme", "--max-calls-per-day", "500")
    assert result.returncode == 0, result.stderr
    assert stored(tmp_path, "acme") == keys.KeyLimits(("GB",), 30, 500)
    result = run(config, "keys", "limit", "acme", "--allow-regions", "none",
                 "--max-calls-per-minute", "none")
    assert "limits of 'acme': max_calls_per_day=500" in result.stdout
    assert stored(tmp_path, "acme") == keys.KeyLimits(None, None, 500)
    assert keys.find_label(str(tmp_path / "keys"), "k1") == "acme"   # the same key
    missing = run(config, "keys", "limit", "nobody", "--max-calls-per-day", "5")
    assert missing.returncode == 1 and "no key labelled 'nobody'" in missing.stderr


def test_keys_list_shows_limits_and_todays_use(tmp_path):
    config = write_config(tmp_path, policy="[policy]\nallowed_regions = US, CA\n")
    run(config, "keys", "add", "--label", "acme", "--allow-regions", "GB,DE",
        "--max-calls-per-minute", "30", "--max-calls-per-day", "2000")
    run(config, "keys", "add", "--label", "legacy")
    quota = CallQuota(str(tmp_path / "state"))
    for _ in range(3):
        quota.reserve("acme", stored(tmp_path, "acme"))
    quota.reserve("legacy", keys.NO_LIMITS)
    quota.record_refusal("legacy", "emergency")
    quota.record_refusal("legacy", "number_type")
    quota.record_refusal("legacy", "emergency")
    result = run(config, "keys", "list")
    assert result.returncode == 0, result.stderr
    header, acme, legacy, title, detail = result.stdout.splitlines()
    assert header.split() == ["LABEL", "CREATED", "SHA-256", "PER", "MIN", "PER", "DAY",
                              "TODAY", "LAST", "MIN", "REFUSED", "REGIONS"]
    assert acme.split()[0] == "acme"
    assert acme.split()[3:] == ["30", "2000", "3", "3", "0", "GB,DE"]
    assert legacy.split()[3:] == ["-", "-", "1", "-", "3", "policy:", "US,CA"]
    assert title.startswith("refused today, by rule")
    assert detail.strip() == "legacy: emergency 2, number_type 1"


def test_keys_list_of_a_key_never_used(tmp_path):
    config = write_config(tmp_path)
    run(config, "keys", "add", "--label", "idle", "--max-calls-per-minute", "5")
    line = run(config, "keys", "list").stdout.splitlines()[1]
    assert line.split()[3:] == ["5", "-", "0", "0", "0", "policy:", "*"]


def test_check_fails_on_a_policy_region_phonenumbers_does_not_know(tmp_path):
    config = write_config(tmp_path, policy="[policy]\nallowed_regions = GB, UK\n")
    result = run(config, "check", "--no-ami")
    assert result.returncode == 1
    line = len(config.read_text().splitlines())
    assert "FAIL config: %s:%d: [policy] allowed_regions 'UK' is not a region " \
           "phonenumbers knows" % (config, line) in result.stdout


def test_check_reports_a_bad_number_type_with_its_line(tmp_path):
    config = write_config(tmp_path, policy="[policy]\nallowed_types = mobile, premium\n")
    result = run(config, "check", "--no-ami")
    assert result.returncode == 1
    assert "%s:%d: [policy] allowed_types knows the types" % (
        config, len(config.read_text().splitlines())) in result.stdout
    assert "1 listed are none of them" in result.stdout
    assert "premium\n" not in result.stdout   # the value itself is never quoted
