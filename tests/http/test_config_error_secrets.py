"""No secret in any reply or log line (issue 10, item 3): every config error of the
suite's configs, run through both endpoints and /wav-files/ in process (WebTest: reply
and wsgi.errors) and through the three CGI shims as Apache runs them (stdout and stderr,
which is Apache's error.log), is scanned for the values it was made of.

The cases: the working test config (tests/testconfig.py) with, in turn, every key of the
schema given a bad value that carries a canary, plus the malformed lines a hand edit
makes (a `secret <value>` line without '=', a key outside a section, an indented
continuation of nothing, a repeated key, an unknown key or section, an [ani] pool of
non-numbers). The AMI secret of the config and every canary must appear nowhere; the
operator's log line still names the file, the line and the key, as `callexchange check`
does."""

import json
import os
import subprocess
import sys

import pytest
import webtest

from callexchange.config import SCHEMA, ConfigError, config_from_text
from callexchange.http.app import create_app
from paths import LIB, REPO
from testconfig import AMI_SECRET, TEST_API_KEY, config_text

CANARY = "Zq7canary"
URLS = {"asteriskapi.pl": ("POST", "/api/v1/asteriskapi.pl"),
        "find_phone_files.pl": ("GET", "/recorded/v1/find_phone_files.pl"),
        "wav-file": ("GET", "/wav-files/2024/07/03/out-1-2001-20240703-100000-1.1.wav")}


def broken_cases(tmp_path):
    """[(name, INI text)], each one a config that does not load."""
    base = config_text(tmp_path, 5038)
    cases = []
    for section, keys in SCHEMA.items():
        for key in keys:
            # A value of the wrong kind for every checker, with the canary in it.
            text = config_text(tmp_path, 5038, **{section: {key: "x{%s}\"," % CANARY}})
            cases.append(("%s.%s" % (section, key), text))
    lines = base.splitlines()
    at = lines.index("secret = %s" % AMI_SECRET)
    cases += [
        ("secret-without-equals", "\n".join(lines[:at] + ["secret %s" % AMI_SECRET]
                                            + lines[at + 1:])),
        ("canary-line-without-equals", base + "\n[dial]\n%s\n" % CANARY),
        ("key-outside-section", "%s = 1\n" % CANARY + base),
        ("repeated-key", base.replace("secret = %s" % AMI_SECRET, "secret = %s\nsecret = %s"
                                      % (AMI_SECRET, CANARY))),
        ("unknown-key", base.replace("[ami]", "[ami]\nsecrett = %s" % CANARY)),
        ("unknown-section", base + "\n[%s]\n" % CANARY.lower()),
        ("ani-pool", base.replace("[ani]", "[ani]\nGB = %s" % CANARY)),
        ("bad-header", base + "\n[dial\nsecret = %s\n" % CANARY),
        ("webhook-secret", config_text(tmp_path, 5038, webhook={
            "url": "http://127.0.0.1:9/", "secret": "whsec_%s!" % CANARY})),
        ("secret-line-in-ami-but-port-bad", base.replace("port = 5038", "port = %s" % CANARY)),
    ]
    broken = []
    for name, text in cases:
        try:
            config_from_text(text, "x.ini")
        except ConfigError:
            broken.append((name, text))
    return broken


def check_clean(where, text):
    assert CANARY not in text, (where, text)
    assert AMI_SECRET not in text, (where, text)


def test_every_config_error_case_is_reported_without_a_value(tmp_path, keys_file):
    cases = broken_cases(tmp_path)
    # Every key of the schema whose checker can refuse a value is among them.
    assert len(cases) >= 30, [name for name, _ in cases]
    path = tmp_path / "callexchange.ini"
    for name, text in cases:
        path.write_text(text)
        app = webtest.TestApp(create_app(config_path=str(path)))
        for shim, (method, url) in URLS.items():
            for headers in ({"api-key": TEST_API_KEY}, {}):
                response = app.request(url, method=method, headers=headers, expect_errors=True,
                                       body=b'{"extension": "2001", "destination": "1212"}'
                                       if method == "POST" else b"")
                assert response.status_int == 500, (name, url, response.text)
                check_clean((name, url, "reply"), response.text)
                check_clean((name, url, "log"), response.errors)
                assert str(path) in response.errors, (name, response.errors)
                assert response.json["error_id"] in response.errors


def run_cgi(script, config, environ=None, body=b""):
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "GATEWAY_INTERFACE": "CGI/1.1",
           "SERVER_PROTOCOL": "HTTP/1.1", "SERVER_NAME": "localhost", "SERVER_PORT": "80",
           "CALLEXCHANGE_CONFIG": str(config), "CONTENT_LENGTH": str(len(body)),
           "CONTENT_TYPE": "application/json"}
    method, url = URLS[script]
    env.update(REQUEST_METHOD=method, SCRIPT_NAME=url if script != "wav-file" else "",
               PATH_INFO=url if script == "wav-file" else "", QUERY_STRING="phone=12127773456")
    env = {k.encode(): v.encode() for k, v in env.items()}
    env.update(environ or {})
    result = subprocess.run([sys.executable, os.path.join(str(REPO), "cgi-bin", script)],
                            input=body, env=env, capture_output=True, timeout=30)
    head, _, payload = result.stdout.partition(b"\r\n\r\n")
    return head.decode("latin-1"), payload, result.stderr.decode("utf-8", "replace")


def test_the_cgi_shims_write_no_secret_to_the_reply_or_error_log(tmp_path, keys_file):
    path = tmp_path / "callexchange.ini"
    for name, text in broken_cases(tmp_path):
        path.write_text(text)
        for script in URLS:
            head, payload, stderr = run_cgi(script, path, {b"HTTP_API_KEY": TEST_API_KEY.encode()},
                                            b'{"extension": "2001", "destination": "1212"}'
                                            if script == "asteriskapi.pl" else b"")
            assert head.startswith("Status: 500 "), (name, script, head, stderr)
            reply = json.loads(payload)
            assert reply["error"] == "Server configuration error (error id %s)" % reply["error_id"]
            check_clean((name, script, "reply"), payload.decode("utf-8"))
            check_clean((name, script, "stderr"), stderr)
            assert "error %s: %s" % (reply["error_id"], path) in stderr, stderr


def test_check_names_file_line_and_key_but_never_the_value(tmp_path):
    path = tmp_path / "callexchange.ini"
    text = config_text(tmp_path, 5038).replace("secret = %s" % AMI_SECRET, "secret %s" % AMI_SECRET)
    path.write_text(text)
    line = text.splitlines().index("secret %s" % AMI_SECRET) + 1
    result = subprocess.run([sys.executable, "-m", "callexchange", "check", "--no-ami"],
                            env=dict(os.environ, CALLEXCHANGE_CONFIG=str(path), PYTHONPATH=LIB),
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert "%s:%d: expected 'key = value'" % (path, line) in result.stdout
    check_clean("check", result.stdout + result.stderr)
    path.write_text(config_text(tmp_path, 5038, ami={"port": CANARY}))
    result = subprocess.run([sys.executable, "-m", "callexchange", "check", "--no-ami"],
                            env=dict(os.environ, CALLEXCHANGE_CONFIG=str(path), PYTHONPATH=LIB),
                            capture_output=True, text=True, timeout=30)
    assert "[ami] port must be a whole number" in result.stdout
    check_clean("check", result.stdout + result.stderr)


@pytest.mark.parametrize("script", ["asteriskapi.pl", "find_phone_files.pl"])
def test_api_key_header_bytes_that_are_not_utf8_are_a_400_through_the_cgi(tmp_path, keys_file,
                                                                         sandbox, script):
    path = tmp_path / "callexchange.ini"
    path.write_text(config_text(tmp_path, sandbox.port))
    head, payload, stderr = run_cgi(script, path, {b"HTTP_API_KEY": b"\xff\xfe"},
                                    b'{"extension": "2001", "destination": "12127773456"}'
                                    if script == "asteriskapi.pl" else b"")
    assert head.startswith("Status: 400 "), (head, payload, stderr)
    reply = json.loads(payload)
    assert reply["status"] == "400 Bad Request"
    assert reply["error"] == "Header 'api-key' is not valid UTF-8 text"
    assert stderr == ""
    assert sandbox.actions_named("Originate") == []


def test_a_key_in_utf8_is_read_from_a_cgi_header(tmp_path, keys_file):
    from callexchange import keys
    keys.add_key(keys_file, "unicode", "cl\u00e9-\u043a\u043b\u044e\u0447")
    path = tmp_path / "callexchange.ini"
    path.write_text(config_text(tmp_path, 5038))
    head, payload, stderr = run_cgi("find_phone_files.pl", path, {
        b"HTTP_API_KEY": "cl\u00e9-\u043a\u043b\u044e\u0447".encode("utf-8")})
    assert head.startswith("Status: 200 "), (head, payload, stderr)
    assert json.loads(payload) == []
