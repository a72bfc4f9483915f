"""Nothing before authentication and no config detail, as a client sees it through a real
Apache (issue 10, items 2, 3 and 6), in both modes (mod_cgid and mod_wsgi daemons):

* a stranger's requests (wrong key, an Idempotency-Key each) leave the state dir as
  they found it;
* header bytes that are not UTF-8 in `api-key` are a JSON 400 on both endpoints (and
  /wav-files/ where the gateway serves it: `[recordings] access = key`);
* with a `secret <value>` line without '=' every caller of both endpoints gets the same
  JSON 500, "Server configuration error" and an id; Apache's error.log has file, line and
  the id, and the secret nowhere.
"""

import json
import shutil

import pytest
import requests

import apache_server
from callexchange.keys import digest
from callexchange.sandbox.server import Sandbox
from test_auth_first import tree
from testconfig import config_text

JSON_TYPE = "application/json; charset=utf-8"
API_KEY = "apache-auth-first-key-0123456789"
AMI_USER = "callexchange"
AMI_SECRET = "apache-secret-Qx81"
CALL = "/api/v1/asteriskapi.pl"
RECORDINGS = "/recorded/v1/find_phone_files.pl"



class Site:
    def __init__(self, base, sandbox, mode, recordings_access="public"):
        self.base = base
        self.config_path = base / "callexchange.ini"
        self.keys_file = base / "api-keys"
        self.keys_file.write_text("test\t%s\t2024-07-03T00:00:00Z\n" % digest(API_KEY))
        self.keys_file.chmod(0o644)
        self.state_dir = apache_server.writable_dir(base / "state")
        self.recordings = base / "recordings"
        self.recordings.mkdir()
        self.recordings.chmod(0o755)
        self.text = config_text(
            base, sandbox.port, ami={"username": AMI_USER, "secret": AMI_SECRET},
            recordings={"root": str(self.recordings), "access": recordings_access,
                        "base_url": "http://127.0.0.1/wav-files/"},
            auth={"keys_file": str(self.keys_file)}, state={"dir": str(self.state_dir)})
        self.write(self.text)
        self.apache = apache_server.ApacheServer(
            base, self.config_path, self.recordings, mode=mode, state_dir=self.state_dir,
            keys_file=self.keys_file, recordings_access=recordings_access)

    def write(self, text):
        temp = self.config_path.with_suffix(".tmp")
        temp.write_text(text)
        temp.chmod(0o644)
        temp.replace(self.config_path)

    def request(self, method, path, body=None, headers=None):
        response = requests.request(method, self.apache.url + path, data=body,
                                    headers=headers or {}, timeout=30)
        assert response.headers.get("Content-Type") == JSON_TYPE, (
            response.status_code, response.text[:500], self.apache.error_log()[-2000:])
        return response


@pytest.fixture(scope="module", params=["public", "key"])
def site(apache_mode, request):
    """The gateway behind a private Apache; with `[recordings] access = key`, Apache hands
    /wav-files/ to the gateway too."""
    base = apache_server.shared_tempdir("cx-auth-first-")
    sandbox = Sandbox(host="127.0.0.1", port=0, username=AMI_USER, secret=AMI_SECRET).start()
    made = None
    try:
        made = Site(base, sandbox, apache_mode, request.param)
        made.access = request.param
        made.sandbox = sandbox
        yield made
    finally:
        if made is not None:
            made.apache.stop()
        sandbox.stop()
        shutil.rmtree(base, ignore_errors=True)


CALL_BODY = json.dumps({"extension": "2001", "destination": "12127773456"})
WAV = "/wav-files/2024/07/03/out-12127773456-2001-20240703-100000-1720000800.1.wav"


def targets(site, key_headers):
    """(method, path, headers) of every URL the gateway answers on this site."""
    found = [("POST", CALL, key_headers), ("GET", RECORDINGS + "?phone=12127773456", key_headers)]
    if site.access == "key":
        found.append(("GET", WAV, key_headers))
    return found


def test_strangers_leave_the_state_dir_as_they_found_it(site):
    site.write(site.text)
    before = tree(site.state_dir)
    for n in range(20):
        response = site.request("POST", CALL, CALL_BODY, {
            "Content-Type": "application/json", "api-key": "guess-%d" % n,
            "Idempotency-Key": "fill-%d" % n})
        assert response.status_code == 401, response.text
        body_key = site.request("POST", CALL, json.dumps(
            {"extension": "2001", "destination": "12127773456", "api_key": "guess-%d" % n}),
            {"Content-Type": "application/json", "Idempotency-Key": "body-%d" % n})
        assert body_key.status_code == 401, body_key.text
    for method, path, headers in targets(site, {"api-key": "guess"}):
        assert site.request(method, path, CALL_BODY if method == "POST" else None,
                            dict(headers, **{"Content-Type": "application/json"})
                            ).status_code == 401
    assert tree(site.state_dir) == before
    assert site.sandbox.actions_named("Originate") == []


def test_api_key_bytes_that_are_not_utf8_are_a_json_400(site):
    site.write(site.text)
    for method, path, headers in targets(site, {"api-key": b"\xff\xfe"}):
        response = site.request(method, path, CALL_BODY if method == "POST" else None,
                                dict(headers, **{"Content-Type": "application/json"}))
        assert response.status_code == 400, (path, response.text)
        reply = response.json()
        assert reply["status"] == "400 Bad Request"
        assert reply["error"] == "Header 'api-key' is not valid UTF-8 text"


def test_a_broken_config_is_one_500_for_everyone_and_the_detail_is_in_error_log(site):
    lines = site.text.splitlines()
    at = lines.index("secret = %s" % AMI_SECRET)
    lines[at] = "secret %s" % AMI_SECRET              # the '=' forgotten
    site.write("\n".join(lines) + "\n")
    try:
        ids = []
        for method, path, headers in (targets(site, {"api-key": API_KEY})
                                      + targets(site, {"api-key": "guess"})
                                      + [("POST", CALL, {})]):
            response = site.request(method, path, CALL_BODY if method == "POST" else None,
                                    dict(headers, **{"Content-Type": "application/json"}))
            assert response.status_code == 500, response.text
            reply = response.json()
            assert reply["error"] == "Server configuration error (error id %s)" % reply["error_id"]
            assert AMI_SECRET not in response.text and str(site.config_path) not in response.text
            ids.append(reply["error_id"])
        log = site.apache.error_log()
        assert AMI_SECRET not in log
        for error_id in ids:
            [line] = [entry for entry in log.splitlines() if error_id in entry]
            assert "%s:%d: expected 'key = value'" % (site.config_path, at + 1) in line
        assert site.sandbox.actions_named("Originate") == []
    finally:
        site.write(site.text)
