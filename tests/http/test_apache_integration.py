"""The gateway as a CRM sees it: real HTTP through a real Apache to the CGI shims.

A private Apache (tests/apache_server.py) runs apache/callexchange.conf.in with mod_cgid
on a loopback port; the sandbox PBX runs in this process on another port and the config
points the gateway at it. So these tests cover what the in-process WebTest suite cannot:
the URL mapping, the headers Apache hands the CGI, the CGI's PATH and user, the static
recordings and Apache's own error pages. SPEC §2, §3, §4.
"""

import json
import shutil
import socket
import sys
import time
from pathlib import Path

import pytest
import requests

try:
    import apache_server
except ImportError:  # tests/ is a package: pytest put the repo root on sys.path instead
    from tests import apache_server

sys.path.insert(0, str(apache_server.REPO / "lib"))

from callexchange.keys import digest  # noqa: E402
from callexchange.sandbox.server import Sandbox  # noqa: E402

JSON_TYPE = "application/json; charset=utf-8"
API_KEY = "apache-integration-key-0123456789"
AMI_USER = "callexchange"
AMI_SECRET = "sandbox-secret"
CONNECT_TIMEOUT = 1.0
AMI_TIMEOUT = 2.0
# A CGI pays an interpreter start and its imports on top of the AMI deadline.
CGI_SLACK = 3.0

CALL = "/api/v1/asteriskapi.pl"
CALL_NO_PL = "/api/v1/asteriskapi"
# The legacy document's sample, spaces in the names included.
LEGACY_BODY = ('{" extension " : "2001", " destination ": "12127773456", " voice_pitch ": "1",'
               ' " call_in_out ": "true", " msg ": "some text"}')

CONFIG_TEMPLATE = """\
[ami]
host = 127.0.0.1
port = {ami_port}
username = {user}
secret = {secret}
connect_timeout = {connect_timeout}
timeout = {timeout}

[dial]
# Every test places its own call; the double-click guard is tested in-process.
dedupe_seconds = 0

[ani]
default = 12125550100, 12125550101
DE = 4930123456
daily_limit = 100000

[recordings]
root = {recordings}
base_url = http://127.0.0.1/wav-files/

[auth]
keys_file = {keys}

[state]
dir = {state}
"""


# --- fixtures -------------------------------------------------------------------------

class Gateway:
    """A started Apache plus the files it serves, and ways to rewrite its config."""

    def __init__(self, base, sandbox, tree, mode="cgi"):
        self.base = base
        self.sandbox = sandbox
        self.config_path = base / "callexchange.ini"
        self.keys_file = base / "api-keys"
        self.state_dir = apache_server.writable_dir(base / "state")
        self.recordings = subdir(base, "recordings")
        self.keys_file.write_text("test\t%s\t2024-07-03T00:00:00Z\n" % digest(API_KEY))
        self.keys_file.chmod(0o644)
        self.write_config(sandbox.port)
        prefix, venv = tree
        self.apache = apache_server.ApacheServer(
            base, self.config_path, self.recordings, mode=mode, prefix=prefix, venv=venv,
            state_dir=self.state_dir, keys_file=self.keys_file)
        self.url = self.apache.url

    def write_config(self, ami_port):
        """Point the gateway at `ami_port`. The CGI reads the file on every request."""
        text = CONFIG_TEMPLATE.format(
            ami_port=ami_port, user=AMI_USER, secret=AMI_SECRET,
            connect_timeout=CONNECT_TIMEOUT, timeout=AMI_TIMEOUT, recordings=self.recordings,
            keys=self.keys_file, state=self.state_dir)
        temp = self.config_path.with_suffix(".tmp")
        temp.write_text(text)
        temp.chmod(0o644)
        temp.replace(self.config_path)

    def explain(self, response=None):
        """Context for an assertion message: the reply and the tail of Apache's log."""
        text = ""
        if response is not None:
            text = "HTTP %s %s\n%s\n" % (response.status_code,
                                         response.headers.get("Content-Type"),
                                         response.text[:2000])
        return text + "--- apache error.log (tail) ---\n" + self.apache.error_log()[-4000:]

    def request(self, method, path, body=None, headers=None, timeout=30):
        """One HTTP request; every reply of ours must be JSON in UTF-8 (SPEC §3)."""
        response = requests.request(method, self.url + path, data=body,
                                    headers=headers or {}, timeout=timeout)
        assert response.headers.get("Content-Type") == JSON_TYPE, self.explain(response)
        return response

    def call(self, body, headers=None, path=CALL, key=API_KEY):
        sent = {"Content-Type": "application/json"}
        if key is not None:
            sent["api-key"] = key
        sent.update(headers or {})
        if not isinstance(body, (str, bytes)):
            body = json.dumps(body)
        return self.request("POST", path, body, sent)

    def stop(self):
        self.apache.stop()


def subdir(parent, *names):
    """A directory the CGI's user can traverse, whatever the umask."""
    path = Path(parent).joinpath(*names)
    path.mkdir(parents=True, exist_ok=True)
    for part in [path] + [p for p in path.parents if Path(parent) in p.parents]:
        part.chmod(0o755)
    return path


@pytest.fixture(scope="module")
def base_dir():
    apache_server.require_apache()
    path = apache_server.shared_tempdir("cx-apache-test-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def sandbox():
    pbx = Sandbox(host="127.0.0.1", port=0, username=AMI_USER, secret=AMI_SECRET)
    pbx.start()
    yield pbx
    pbx.stop()


@pytest.fixture(scope="module")
def tree(base_dir):
    """(prefix, venv) for the CGI: the checkout, or a staged copy www-data can reach."""
    return apache_server.app_tree(base_dir)


@pytest.fixture(scope="module")
def gateway(base_dir, sandbox, tree, apache_mode):
    gw = Gateway(subdir(base_dir, apache_mode), sandbox, tree, mode=apache_mode)
    yield gw
    gw.stop()


def originates(sandbox):
    """The Originate actions the sandbox has received ({header: first value} dicts)."""
    return sandbox.actions_named("Originate")


def originate_for(sandbox, uniqueid, wait=2.0):
    """The one Originate whose ChannelId is `uniqueid` (the sandbox records it as it
    reads it; give it a moment)."""
    deadline = time.monotonic() + wait
    while True:
        matching = [a for a in originates(sandbox) if a.get("ChannelId") == uniqueid]
        if matching or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert len(matching) == 1, "Originates seen: %r" % originates(sandbox)
    return matching[0]


# --- issuing a call (SPEC §4) ---------------------------------------------------------

def test_legacy_sample_request_places_the_call_and_returns_the_legacy_reply(gateway, sandbox):
    response = gateway.call(LEGACY_BODY)

    assert response.status_code == 200, gateway.explain(response)
    reply = response.json()
    assert reply["status"] == "true"
    assert reply["message"] == "Success making a call"
    assert reply["icon"] == "US"
    assert reply["country_code"] == 1
    assert reply["phone_valid"] == "yes"
    assert reply["caller_id"] in ("12125550100", "12125550101")
    assert reply["check_spam"] == "true"
    assert reply["uniqueid"]
    originate = originate_for(sandbox, reply["uniqueid"])
    assert originate.get("Async", "").lower() == "true"


def test_german_destination_is_recognised_as_de(gateway):
    response = gateway.call({"extension": "2002", "destination": "4930901820"})

    assert response.status_code == 200, gateway.explain(response)
    reply = response.json()
    assert (reply["icon"], reply["country_code"]) == ("DE", 49)
    assert reply["caller_id"] == "4930123456"


def test_dialer_mode_rings_the_lead_first(gateway, sandbox):
    response = gateway.call({"extension": "2003", "destination": "12127773456",
                             "call_in_out": "true"})

    assert response.status_code == 200, gateway.explain(response)
    originate = originate_for(sandbox, response.json()["uniqueid"])
    assert originate["Channel"] == "Local/12127773456@callexchange-outbound/n"
    assert originate["Context"] == "callexchange-agent"
    assert originate["Exten"] == "2003"


def test_agent_first_mode_rings_the_agent_first(gateway, sandbox):
    response = gateway.call({"extension": "2001", "destination": "12127773456",
                             "call_in_out": False})

    assert response.status_code == 200, gateway.explain(response)
    originate = originate_for(sandbox, response.json()["uniqueid"])
    assert originate["Channel"] == "PJSIP/2001"
    assert originate["Context"] == "callexchange-outbound"
    assert originate["Exten"] == "12127773456"


def test_url_without_pl_places_the_call_too(gateway, sandbox):
    response = gateway.call({"extension": "2004", "destination": "12127773456"},
                            path=CALL_NO_PL)

    assert response.status_code == 200, gateway.explain(response)
    originate_for(sandbox, response.json()["uniqueid"])


def test_jsonrpc_originate_returns_the_plain_reply_as_result(gateway, sandbox):
    response = gateway.call({"jsonrpc": "2.0", "method": "originate", "id": 7,
                             "params": {"extension": "2005", "destination": "12127773456"}})

    assert response.status_code == 200, gateway.explain(response)
    reply = response.json()
    assert reply["jsonrpc"] == "2.0" and reply["id"] == 7, reply
    assert reply["result"]["status"] == "true"
    assert reply["result"]["icon"] == "US"
    originate_for(sandbox, reply["result"]["uniqueid"])


def test_missing_destination_is_400_naming_it(gateway):
    response = gateway.call({"extension": "2001"})

    assert response.status_code == 400, gateway.explain(response)
    reply = response.json()
    assert reply["status"] == "400 Bad Request"
    assert reply["icon"] == "error"
    assert reply["error"] == "Missing parameters: api-key, extension, or destination"
    assert reply["missing"] == ["destination"]
    assert reply["message"].startswith("We fail on making a call. caller : 2001")


def test_missing_api_key_header_is_400_naming_it(gateway):
    response = gateway.call({"extension": "2001", "destination": "12127773456"}, key=None)

    assert response.status_code == 400, gateway.explain(response)
    assert response.json()["missing"] == ["api-key"]


def test_unknown_api_key_is_401(gateway):
    response = gateway.call({"extension": "2001", "destination": "12127773456"},
                            key="not-a-key")

    assert response.status_code == 401, gateway.explain(response)
    assert response.json()["icon"] == "error"


def test_api_key_in_the_query_string_is_refused(gateway):
    response = gateway.request("POST", CALL + "?api-key=" + API_KEY,
                               json.dumps({"extension": "2001", "destination": "12127773456"}))

    assert response.status_code == 400, gateway.explain(response)


def test_body_over_64_kib_is_413_json(gateway):
    body = json.dumps({"extension": "2001", "destination": "12127773456",
                       "msg": "x" * 70000})

    response = gateway.call(body)

    assert response.status_code == 413, gateway.explain(response)
    assert response.json()["icon"] == "error"


def test_body_over_a_mebibyte_is_refused_by_apache_as_json(gateway):
    response = gateway.call(b"{" + b" " * (2 << 20) + b"}")

    assert response.status_code == 413, gateway.explain(response)
    assert response.json()["icon"] == "error"


def test_get_on_asteriskapi_is_405_json(gateway):
    for path in (CALL, CALL_NO_PL):
        response = gateway.request("GET", path, headers={"api-key": API_KEY})

        assert response.status_code == 405, gateway.explain(response)
        assert response.json()["icon"] == "error"
        assert "POST" in response.headers.get("Allow", "")


def test_same_idempotency_key_replays_the_first_reply_and_places_one_call(gateway, sandbox):
    body = {"extension": "2006", "destination": "12127773457"}
    headers = {"Idempotency-Key": "apache-test-%d" % time.time_ns()}

    first = gateway.call(body, headers)
    second = gateway.call(body, headers)

    assert first.status_code == second.status_code == 200, gateway.explain(second)
    assert first.json() == second.json()
    uniqueid = first.json()["uniqueid"]
    originate_for(sandbox, uniqueid)  # exactly one


def test_config_and_key_edits_take_effect_without_an_apache_reload(gateway, sandbox):
    # mod_wsgi's daemon processes live for hours; they follow the files as each CGI does
    # by starting afresh (callexchange.http.persistent), with no reload and no restart.
    daemons = sorted(pid for pid, command in gateway.apache.processes().items()
                     if command.startswith("(wsgi:"))
    body = {"extension": "2001", "destination": "12127773456"}
    original = gateway.keys_file.read_text()
    gateway.keys_file.write_text("# every key revoked\n")
    try:
        revoked = gateway.call(body)
    finally:
        gateway.keys_file.write_text(original)
    gateway.write_config(apache_server.free_port())
    try:
        moved = gateway.call(body)
    finally:
        gateway.write_config(sandbox.port)
    back = gateway.call(body)

    assert revoked.status_code == 401, gateway.explain(revoked)
    assert moved.status_code == 503, gateway.explain(moved)
    assert back.status_code == 200, gateway.explain(back)
    assert sorted(pid for pid, command in gateway.apache.processes().items()
                  if command.startswith("(wsgi:")) == daemons
    assert len(daemons) == (2 if gateway.apache.mode == "wsgi" else 0)
    assert "graceful" not in gateway.apache.error_log().lower()


def test_unreachable_ami_is_503_within_the_connect_timeout(gateway):
    closed_port = apache_server.free_port()
    gateway.write_config(closed_port)
    try:
        started = time.monotonic()
        response = gateway.call({"extension": "2001", "destination": "12127773456"})
        elapsed = time.monotonic() - started
    finally:
        gateway.write_config(gateway.sandbox.port)

    assert response.status_code == 503, gateway.explain(response)
    reply = response.json()
    assert reply["status"].startswith("503") and reply["icon"] == "error"
    assert reply["message"] == "We fail on making a call. caller : 2001, callee : 12127773456"
    assert elapsed < CONNECT_TIMEOUT + AMI_TIMEOUT + CGI_SLACK
    # The operator finds it in Apache's error.log (the CGI's stderr), never the secret.
    logged = [line for line in gateway.apache.error_log().splitlines()
              if "extension 2001, destination 12127773456): 503 cannot connect" in line]
    assert logged, gateway.explain(response)
    assert AMI_SECRET not in gateway.apache.error_log()


def test_silent_ami_is_503_within_connect_timeout_plus_timeout(gateway):
    # A listener that completes the TCP handshake (the kernel does) but never sends the
    # AMI banner: the gateway must give up on its own deadline.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        gateway.write_config(silent.getsockname()[1])
        try:
            started = time.monotonic()
            response = gateway.call({"extension": "2001", "destination": "12127773456"})
            elapsed = time.monotonic() - started
        finally:
            gateway.write_config(gateway.sandbox.port)

    assert response.status_code == 503, gateway.explain(response)
    assert elapsed < CONNECT_TIMEOUT + AMI_TIMEOUT + CGI_SLACK, elapsed


# --- what Apache itself does (SPEC §2) ------------------------------------------------

def test_unknown_url_under_api_v1_is_json(gateway):
    for path in ("/api/v1/asteriskapi.pl/extra", "/api/v1/other", "/api/v1/"):
        response = gateway.request("GET", path)

        assert response.status_code in (403, 404), gateway.explain(response)
        assert response.json()["icon"] == "error"


@pytest.fixture(scope="module")
def recordings(gateway):
    """A day folder with one recording, a dot file, a symlink out of the archive and an
    .htaccess that tries to turn listings on."""
    day = subdir(gateway.recordings, "2024", "07", "03")
    name = "out-12127773456-2001-20240703-203742-1720039056.22191.wav"
    (day / name).write_bytes(b"RIFF" + bytes(range(256)) * 4)
    (day / ".htaccess").write_text("Options +Indexes +FollowSymLinks\n")
    (day / "secret.wav").symlink_to("/etc/passwd")
    for path in day.iterdir():
        if not path.is_symlink():
            path.chmod(0o644)
    return "/wav-files/2024/07/03/", name


def test_recording_is_served_with_range_support(gateway, recordings):
    folder, name = recordings
    url = gateway.url + folder + name

    whole = requests.get(url, timeout=10)
    part = requests.get(url, headers={"Range": "bytes=4-7"}, timeout=10)
    head = requests.head(url, timeout=10)

    assert whole.status_code == 200 and whole.content[:4] == b"RIFF"
    assert whole.headers["Content-Type"] in ("audio/wav", "audio/x-wav")
    assert part.status_code == 206 and part.content == bytes([0, 1, 2, 3])
    assert head.status_code == 200 and head.headers["Content-Length"] == str(len(whole.content))


def test_recordings_are_never_listed(gateway, recordings):
    folder, name = recordings
    for path in (folder, folder.rstrip("/"), "/wav-files/", "/wav-files/2024/"):
        response = requests.get(gateway.url + path, timeout=10)

        assert response.status_code in (403, 404), (path, gateway.explain(response))
        assert name not in response.text


def test_recordings_refuse_symlinks_and_dot_files(gateway, recordings):
    folder, _ = recordings
    for leaf in ("secret.wav", ".htaccess"):
        response = requests.get(gateway.url + folder + leaf, timeout=10)

        assert response.status_code == 403, (leaf, response.status_code)
        assert "root:" not in response.text


def test_recordings_allow_only_get_and_head(gateway, recordings):
    folder, name = recordings
    for method in ("POST", "PUT", "DELETE", "OPTIONS"):
        response = requests.request(method, gateway.url + folder + name, data=b"x", timeout=10)

        assert response.status_code in (403, 405), (method, response.status_code)
        assert response.headers["Content-Type"] == JSON_TYPE


def test_recordings_refuse_traversal_out_of_the_archive(gateway, recordings):
    folder, _ = recordings
    for path in (folder + "../../../../../../etc/passwd",
                 folder + "%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
                 "/wav-files/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
                 "/wav-files/..%2f..%2f..%2fetc%2fpasswd"):
        # requests would normalise the dots away: send the path as written.
        with socket.create_connection(("127.0.0.1", gateway.apache.port), timeout=10) as sock:
            sock.sendall(("GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n" % path).encode())
            reply = b""
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                reply += chunk
        status = int(reply.split(b" ", 2)[1])

        assert status in (400, 403, 404), (path, reply[:200])
        assert b"root:" not in reply


# --- find_phone_files.pl through Apache (SPEC §5) --------------------------------------

PHONE = "4930901820"
RECORDING = "out-4930901820-2001-20241115-093001-1731663001.4711.wav"


@pytest.fixture(scope="module")
def recorded_call(gateway):
    """One real 3-second PCM recording of a call to PHONE, in its day folder."""
    import wave
    day = subdir(gateway.recordings, "2024", "11", "15")
    path = day / RECORDING
    with wave.open(str(path), "wb") as audio:
        audio.setnchannels(1)
        audio.setsampwidth(2)
        audio.setframerate(8000)
        audio.writeframes(bytes(range(256)) * (3 * 16000 // 256))
    path.chmod(0o644)
    return path


def local_url(url):
    """The reply's url names the configured base_url; fetch it from this test's Apache."""
    prefix = "http://127.0.0.1/wav-files/"
    assert url.startswith(prefix), url
    return "/wav-files/" + url[len(prefix):]


def expected_entry(entry):
    assert entry["url"].endswith("/wav-files/2024/11/15/" + RECORDING)
    assert entry["date"] == "15/11/2024"
    assert entry["time"] == "09:30:01"
    assert entry["duration"] == 3
    assert entry["uniqueid"] == "1731663001.4711"


@pytest.mark.parametrize("path", ["/recorded/v1/find_phone_files.pl",
                                  "/recorded/v1/find_phone_files"])
def test_find_phone_files_by_get_lists_the_recording(gateway, recorded_call, path):
    response = gateway.request("GET", path + "?phone=%2B49%2030%20901820",
                               headers={"api-key": API_KEY})

    assert response.status_code == 200, gateway.explain(response)
    entries = response.json()
    assert len(entries) == 1
    expected_entry(entries[0])


def test_find_phone_files_by_post_json_and_the_url_plays_with_range(gateway, recorded_call):
    response = gateway.request("POST", "/recorded/v1/find_phone_files.pl",
                               json.dumps({"phone": PHONE}),
                               {"api-key": API_KEY, "Content-Type": "application/json"})

    assert response.status_code == 200, gateway.explain(response)
    (entry,) = response.json()
    expected_entry(entry)
    audio = requests.get(gateway.url + local_url(entry["url"]),
                         headers={"Range": "bytes=0-11"}, timeout=10)
    assert audio.status_code == 206
    assert audio.content == recorded_call.read_bytes()[:12]
    assert audio.content[:4] == b"RIFF" and audio.content[8:12] == b"WAVE"


def test_find_phone_files_never_matches_a_longer_number(gateway, recorded_call):
    response = gateway.request("GET", "/recorded/v1/find_phone_files.pl?phone=9493090182099",
                               headers={"api-key": API_KEY})

    assert response.status_code == 200
    assert response.json() == []


def test_find_phone_files_without_phone_is_the_legacy_400(gateway):
    response = gateway.request("GET", "/recorded/v1/find_phone_files.pl",
                               headers={"api-key": API_KEY})

    assert response.status_code == 400
    assert response.json() == {"status": "400 Bad Request", "icon": "error",
                               "error": "Missing parameters: api-key or phone"}


def test_find_phone_files_with_an_unknown_key_is_401(gateway, recorded_call):
    response = gateway.request("GET", "/recorded/v1/find_phone_files.pl?phone=" + PHONE,
                               headers={"api-key": "not-a-key"})

    assert response.status_code == 401
    assert RECORDING not in response.text


# --- what the CGI process gets from Apache --------------------------------------------

PROBE_CGI = """\
#!/usr/bin/env python3
import json, os, sys
# Read the whole body: under mod_cgid a script that exits with its input unread has its
# reply reset on the way out.
sys.stdin.buffer.read(int(os.environ.get("CONTENT_LENGTH") or 0))
print("Content-Type: application/json; charset=utf-8")
print()
print(json.dumps({"environ": dict(os.environ), "executable": sys.executable,
                  "prefix": sys.prefix, "uid": os.getuid()}))
"""


@pytest.fixture(scope="module")
def probe(base_dir, tree):
    """An Apache running the same site config over an app tree whose asteriskapi.pl
    reports its environment."""
    root = base_dir / "probe"
    prefix = root / "app"
    (prefix / "cgi-bin").mkdir(parents=True)
    shutil.copytree(apache_server.APACHE_TEMPLATES, prefix / "apache")
    for name in ("asteriskapi.pl", "find_phone_files.pl"):
        script = prefix / "cgi-bin" / name
        script.write_text(PROBE_CGI)
        script.chmod(0o755)
    (root / "recordings").mkdir()
    config = root / "callexchange.ini"
    config.write_text("# not read by the probe\n")
    apache_server.open_up(root)
    _, venv = tree
    # CGI only: the probe replaces the CGI scripts to see what Apache hands them.
    apache = apache_server.ApacheServer(root, config, root / "recordings",
                                        prefix=prefix, venv=venv, mode="cgi")
    apache.venv_used = venv
    yield apache
    apache.stop()


def probe_environ(probe, path=CALL, headers=None):
    response = requests.post(probe.url + path, data=b"{}", headers=headers or {}, timeout=10)
    assert response.status_code == 200, probe.error_log()
    return response.json()


def test_cgi_gets_the_api_key_and_idempotency_key_headers(probe):
    seen = probe_environ(probe, headers={"api-key": "K1", "Idempotency-Key": "I1",
                                         "api_key": "underscored"})["environ"]

    assert seen["HTTP_API_KEY"] == "K1"
    assert seen["HTTP_IDEMPOTENCY_KEY"] == "I1"
    # Apache drops header names with an underscore, so api_key is a body field only.
    assert list(seen.values()).count("underscored") == 0


def test_cgi_runs_the_venv_python_with_the_config_path(probe):
    seen = probe_environ(probe, path="/recorded/v1/find_phone_files")

    assert seen["environ"]["PATH"].split(":")[0] == str(probe.venv_used / "bin")
    assert Path(seen["prefix"]) == probe.venv_used
    assert seen["environ"]["CALLEXCHANGE_CONFIG"] == str(probe.config_path)
    assert seen["environ"]["SCRIPT_NAME"] == "/recorded/v1/find_phone_files"


def test_cgi_never_runs_as_root(probe):
    assert probe_environ(probe)["uid"] != 0


# --- CGI and mod_wsgi: the same URLs, the same replies ----------------------------------
# Every test above runs in both modes (the apache_mode fixture). These are about what
# differs between them underneath.

def test_a_chunked_body_is_accepted(gateway, sandbox):
    # curl and PHP send chunked bodies; mod_wsgi answers 411 unless WSGIChunkedRequest.
    body = json.dumps({"extension": "2011", "destination": "4930901820"}).encode()
    response = requests.post(gateway.url + CALL, data=iter([body[:10], body[10:]]),
                             headers={"api-key": API_KEY}, timeout=30)

    assert response.status_code == 200, gateway.explain(response)
    assert response.headers["Content-Type"] == JSON_TYPE
    originate_for(sandbox, response.json()["uniqueid"])


# --- every Apache-made reply on our URLs is JSON in the legacy shape --------------------

CALL_MESSAGE = "We fail on making a call. caller : , callee : "


def raw_request(port, data):
    """Send `data` as written (no client normalises it) and read the whole reply:
    (status, {lower-case header: value}, body bytes)."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(data)
        reply = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding") == "chunked":
        body = _unchunk(body)
    return int(lines[0].split(" ", 2)[1]), headers, body


def _unchunk(body):
    out = b""
    while body:
        size_line, _, body = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out, body = out + body[:size], body[size + 2:]
    return out


def get(path, method="GET", extra=b""):
    return (b"%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n%s\r\n"
            % (method.encode(), path.encode(), extra))


WAV = "/wav-files/2024/07/03/out-12127773456-2001-20240703-203742-1720039056.22191.wav"

APACHE_REFUSALS = [
    # (what, request, status, endpoint)
    ("TRACE on the call endpoint", get(CALL, "TRACE"), 405, "call"),
    ("TRACE on find_phone_files", get("/recorded/v1/find_phone_files.pl", "TRACE"), 405,
     "recordings"),
    ("TRACE on a recording", get(WAV, "TRACE"), 405, "wav-files"),
    ("%00 in the path", get(CALL + "%00"), 404, "call"),
    ("%00 in a recording's path", get("/wav-files/2024/07/03/x%00.wav"), 404, "wav-files"),
    ("..%2f traversal", get("/wav-files/2024/07/03/..%2f..%2f..%2fetc%2fpasswd"), 404,
     "wav-files"),
    ("/../ above the root", get("/wav-files/../../../etc/passwd"), 400, "wav-files"),
    ("a symlink in the archive", get("/wav-files/2024/07/03/secret.wav"), 403, "wav-files"),
    ("a dot file in the archive", get("/wav-files/2024/07/03/.htaccess"), 403, "wav-files"),
    ("a range past the end", get(WAV, extra=b"Range: bytes=99999-100000\r\n"), 416,
     "wav-files"),
    ("a trailing slash on the call endpoint", get(CALL + "/"), 403, "call"),
    ("a trailing slash on find_phone_files", get("/recorded/v1/find_phone_files/"), 403,
     "recordings"),
    ("an unknown URL under /api/v1/", get("/api/v1/other"), 403, "call"),
    ("a URI too long", get(CALL + "?x=" + "a" * 5000), 414, "call"),
    ("a URI too long for find_phone_files",
     get("/recorded/v1/find_phone_files?phone=" + "1" * 5000), 414, "recordings"),
    ("a directory listing", get("/wav-files/2024/07/03/"), 404, "wav-files"),
    ("the archive's root", get("/wav-files/"), 404, "wav-files"),
    ("a missing recording", get("/wav-files/2024/07/03/nope.wav"), 404, "wav-files"),
    ("PUT on a recording", get(WAV, "PUT", b"Content-Length: 0\r\n"), 405, "wav-files"),
    ("a body over Apache's limit",
     b"POST " + CALL.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
     b"Content-Length: 2000000\r\n\r\n", 413, "call"),
]


@pytest.mark.parametrize("what, request_bytes, status, endpoint", APACHE_REFUSALS,
                         ids=[case[0] for case in APACHE_REFUSALS])
def test_what_apache_refuses_on_our_urls_is_legacy_json(gateway, recordings, what,
                                                        request_bytes, status, endpoint):
    got, headers, body = raw_request(gateway.apache.port, request_bytes)

    assert got == status, (what, got, body[:300], gateway.explain())
    assert headers.get("content-type") == JSON_TYPE, (what, headers, body[:300])
    reply = json.loads(body)
    assert set(reply) == {"status", "icon", "error", "message"}, reply
    assert reply["status"].startswith("%d " % status), reply
    assert reply["icon"] == "error"
    assert reply["error"]
    if endpoint == "call":
        assert reply["message"] == CALL_MESSAGE
    else:
        assert reply["message"].startswith("We fail on"), reply
    assert b"root:" not in body


OTHER_SITE = [
    ("TRACE", get("/other", "TRACE"), 405),
    ("%00", get("/other%00"), 404),
    ("..%2f", get("/other/..%2f..%2fetc"), 404),
    ("/../", get("/other/../../etc/passwd"), 400),
    ("a long URI", get("/other?x=" + "a" * 5000), 403),
]


@pytest.mark.parametrize("what, request_bytes, status", OTHER_SITE,
                         ids=[case[0] for case in OTHER_SITE])
def test_other_sites_on_the_server_keep_apaches_own_error_pages(gateway, what, request_bytes,
                                                                status):
    got, headers, body = raw_request(gateway.apache.port, request_bytes)

    assert got == status, (what, got, body[:300])
    assert headers.get("content-type", "").startswith("text/html"), (what, headers)
    assert b"We fail on" not in body


def test_a_request_line_over_apaches_limit_is_answered_before_the_url_is_known(gateway):
    # The documented exception (apache/README.md): Apache refuses it before reading a URL.
    got, headers, _ = raw_request(gateway.apache.port, get(CALL + "?x=" + "a" * 9000))

    assert got == 414
    assert headers.get("content-type", "").startswith("text/html")


# --- no key in any access log -----------------------------------------------------------

@pytest.mark.parametrize("name", ["api-key", "api_key", "API-KEY", "Api_Key"])
def test_a_key_in_the_query_string_is_logged_by_no_access_log(gateway, name):
    secret = "query-key-%s-%d" % (name.lower().replace("_", "-"), time.time_ns())
    for path in (CALL + "?%s=%s" % (name, secret),
                 "/recorded/v1/find_phone_files?phone=4930901820&%s=%s" % (name, secret)):
        method = "POST" if path.startswith(CALL) else "GET"
        response = gateway.request(method, path, "{}" if method == "POST" else None)
        assert response.status_code == 400, gateway.explain(response)

    logged = wait_for_log(gateway.apache.callexchange_access_log,
                          '"GET /recorded/v1/find_phone_files HTTP/1.1" 400')
    assert secret not in gateway.apache.access_log()
    assert secret not in logged
    assert secret not in gateway.apache.error_log()
    # Our log has the requests, path only.
    assert '"POST /api/v1/asteriskapi.pl HTTP/1.1" 400' in logged
    assert '"GET /recorded/v1/find_phone_files HTTP/1.1" 400' in logged


def wait_for_log(read, text, timeout=5.0):
    """Apache writes the access log after the reply: poll until `text` is in it."""
    deadline = time.monotonic() + timeout
    while True:
        logged = read()
        if text in logged or time.monotonic() > deadline:
            return logged
        time.sleep(0.05)


def test_other_urls_are_still_logged_whole_by_the_sites_own_log(gateway):
    raw_request(gateway.apache.port, get("/other-site-page?visible=1"))

    logged = wait_for_log(gateway.apache.access_log, "/other-site-page")
    assert "GET /other-site-page?visible=1 HTTP/1.1" in logged
    assert "/other-site-page" not in gateway.apache.callexchange_access_log()


def test_the_test_sites_log_condition_is_the_one_install_sh_adds():
    import subprocess
    condition = subprocess.run(
        ["bash", "-c", 'source "$0" && printf %s "$SCRUB_CONDITION"',
         str(apache_server.REPO / "install.sh")],
        capture_output=True, text=True, check=True).stdout
    standalone = (apache_server.APACHE_TEMPLATES / "standalone.conf.in").read_text()

    assert condition and ('CustomLog "@RUNDIR@/access.log" timing ' + condition) in standalone
    site = (apache_server.APACHE_TEMPLATES / "callexchange.conf.in").read_text()
    assert condition.replace('"expr=!(', '"expr=').replace(')"', '"') in site


# --- the API reference (SPEC: served without a key) -----------------------------------

def test_openapi_yaml_is_served_without_a_key(gateway):
    response = requests.get(gateway.url + "/api/v1/openapi.yaml", timeout=10)

    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/yaml; charset=utf-8"
    assert response.content == (apache_server.REPO / "docs" / "openapi.yaml").read_bytes()


def test_the_docs_page_and_its_script_are_served_from_this_server(gateway):
    page = requests.get(gateway.url + "/api/v1/docs", timeout=10)
    script = requests.get(gateway.url + "/api/v1/docs/redoc.standalone.js", timeout=10)

    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert "connect-src 'self'" in page.headers["Content-Security-Policy"]
    assert 'spec-url="openapi.yaml"' in page.text
    assert script.status_code == 200
    assert script.content == (apache_server.REPO / "apache" / "docs"
                              / "redoc.standalone.js").read_bytes()
    missing = requests.get(gateway.url + "/api/v1/docs/REDOC.md", timeout=10)
    assert missing.status_code == 403 and missing.json()["message"] == CALL_MESSAGE


# --- multipart/form-data bodies, as PHP's curl and requests send them ----------------------

def test_a_php_curl_array_places_a_call_through_apache(gateway, sandbox):
    boundary = "------------------------abc"
    fields = [("api-key", API_KEY), ("extension", "2001"), ("destination", "12127773481")]
    body = b"".join(b'--%s\r\nContent-Disposition: form-data; name="%s"\r\n\r\n%s\r\n'
                    % (boundary.encode(), name.encode(), value.encode())
                    for name, value in fields) + b"--%s--\r\n" % boundary.encode()
    response = gateway.request("POST", CALL, body, {
        "Content-Type": "multipart/form-data; boundary=" + boundary})

    assert response.status_code == 200, gateway.explain(response)
    assert originate_for(sandbox, response.json()["uniqueid"])["Exten"] == "12127773481"


def test_requests_multipart_fields_list_recordings_and_a_file_is_a_400(gateway,
                                                                         recorded_call):
    url = gateway.url + "/recorded/v1/find_phone_files.pl"
    fields = requests.post(url, files={"phone": (None, PHONE)},
                           headers={"api-key": API_KEY}, timeout=30)
    upload = requests.post(url, data={"phone": PHONE}, files={"list": ("a.csv", b"1\n")},
                           headers={"api-key": API_KEY}, timeout=30)

    assert fields.status_code == 200, gateway.explain(fields)
    (entry,) = fields.json()
    expected_entry(entry)
    assert upload.status_code == 400, gateway.explain(upload)
    assert upload.headers["Content-Type"] == JSON_TYPE
    assert upload.json()["status"] == "400 Bad Request" and "file" in upload.json()["error"]


def test_libcurls_own_multipart_places_a_call_and_lists_recordings(gateway, sandbox,
                                                                   recorded_call):
    # `curl --form-string` is libcurl's MIME encoder, the one PHP's curl extension uses for
    # CURLOPT_POSTFIELDS => array(...): its boundary, its part headers, its Expect.
    import subprocess

    def curl(path, *fields):
        arguments = ["curl", "-sS", "--max-time", "30", "-w", "\n%{http_code}"]
        for field in fields:
            arguments += ["--form-string", field]
        done = subprocess.run(arguments + [gateway.url + path], capture_output=True,
                              text=True, timeout=60, check=True)
        body, _, status = done.stdout.rpartition("\n")
        return int(status), json.loads(body)

    status, reply = curl(CALL, "api-key=" + API_KEY, "extension=2001",
                         "destination=+1 212 777 3482",
                         "notes=" + "x" * 1500)   # over 1 KiB: curl sends Expect: 100-continue
    assert status == 200, reply
    assert originate_for(sandbox, reply["uniqueid"])["Exten"] == "12127773482"
    status, entries = curl("/recorded/v1/find_phone_files.pl", "api-key=" + API_KEY,
                           "phone=" + PHONE)
    assert status == 200
    (entry,) = entries
    expected_entry(entry)
