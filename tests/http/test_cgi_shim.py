"""SPEC §1: `python3 cgi-bin/asteriskapi.pl`, run from a checkout with the CGI/1.1
environment set (RFC 3875), works: the shims find lib/ beside them."""

import json
import os
import subprocess
import sys

from callexchange import keys
from testconfig import TEST_API_KEY, config_text
from paths import REPO

REPO = str(REPO)


def run_cgi(script, environ, body=b""):
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "GATEWAY_INTERFACE": "CGI/1.1",
           "SERVER_PROTOCOL": "HTTP/1.1", "SERVER_NAME": "localhost", "SERVER_PORT": "80",
           "CONTENT_LENGTH": str(len(body))}
    env.update(environ)
    result = subprocess.run([sys.executable, os.path.join(REPO, "cgi-bin", script)],
                            input=body, env=env, capture_output=True, timeout=30)
    head, _, payload = result.stdout.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines)
    return headers, payload, result


def test_the_call_shim_places_a_call_run_as_a_plain_cgi(tmp_path, sandbox):
    path = tmp_path / "callexchange.ini"
    path.write_text(config_text(tmp_path, sandbox.port))
    keys.add_key(str(tmp_path / "api-keys"), "crm", TEST_API_KEY)
    body = json.dumps({" extension ": "2001", " destination ": "12127773456"}).encode()
    headers, payload, result = run_cgi("asteriskapi.pl", {
        "REQUEST_METHOD": "POST", "SCRIPT_NAME": "/api/v1/asteriskapi.pl",
        "CONTENT_TYPE": "application/json", "HTTP_API_KEY": TEST_API_KEY,
        "CALLEXCHANGE_CONFIG": str(path)}, body)

    assert headers["Status"] == "200 OK", result.stderr.decode()
    assert headers["Content-Type"] == "application/json; charset=utf-8"
    reply = json.loads(payload)
    assert reply["status"] == "true" and reply["country_code"] == 1
    assert [a["ChannelId"] for a in sandbox.actions_named("Originate")] == [reply["uniqueid"]]


def test_the_recordings_shim_answers_a_get(tmp_path):
    path = tmp_path / "callexchange.ini"
    path.write_text(config_text(tmp_path, 5038))
    keys.add_key(str(tmp_path / "api-keys"), "crm", TEST_API_KEY)
    headers, payload, result = run_cgi("find_phone_files.pl", {
        "REQUEST_METHOD": "GET", "SCRIPT_NAME": "/recorded/v1/find_phone_files.pl",
        "QUERY_STRING": "phone=12127773456", "HTTP_API_KEY": TEST_API_KEY,
        "CALLEXCHANGE_CONFIG": str(path)})

    assert headers["Status"] == "200 OK", result.stderr.decode()
    assert json.loads(payload) == []


def test_a_shim_answers_json_even_when_the_config_is_missing(tmp_path):
    headers, payload, result = run_cgi("asteriskapi.pl", {
        "REQUEST_METHOD": "POST", "SCRIPT_NAME": "/api/v1/asteriskapi.pl",
        "CALLEXCHANGE_CONFIG": str(tmp_path / "nope.ini")}, b"{}")

    assert headers["Status"] == "500 Internal Server Error"
    reply = json.loads(payload)
    assert reply["error"] == "Server configuration error (error id %s)" % reply["error_id"]
    # The detail is for the operator only: Apache's error.log, under the same id.
    assert "%s: %s: config file not found" % (reply["error_id"], tmp_path / "nope.ini") \
        in result.stderr.decode()
