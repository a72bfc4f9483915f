"""Nothing before authentication, and nothing of the config for a stranger (issue 10,
items 2 and 6).

In process (WebTest over the WSGI app, a real sandbox PBX behind it): a request without
a valid key, sent to either endpoint (or /wav-files/ when the app serves it), leaves the
disk exactly as it found it, whatever Idempotency-Key, body key or JSON-RPC batch it
carries; a JSON-RPC batch has every entry's key checked before any file is touched. With
an unusable config every caller gets a 500 whose `error` says only "Server configuration
error" and an id, and the operator finds file, line and key under that id in the log.
Text that is no text (a lone surrogate, header bytes that are not UTF-8) is a 400."""

import json
import os

import pytest
import webtest

from callexchange.http.app import create_app
from schemas import validate
from testconfig import AMI_SECRET, TEST_API_KEY, config_text

CALL = "/api/v1/asteriskapi.pl"
RECORDINGS = "/recorded/v1/find_phone_files.pl"
WAV = "/wav-files/2024/07/03/out-12127773456-2001-20240703-100000-1.1.wav"
CONFIG_ERROR = "Server configuration error (error id %s)"


def tree(root):
    """Every path under `root` (files, folders, links), relative: what a request left."""
    found = set()
    for folder, dirs, files in os.walk(str(root)):
        for name in dirs + files:
            found.add(os.path.relpath(os.path.join(folder, name), str(root)))
    return found


class Site:
    """The app over a test config in tmp_path (the state dir made empty), as WebTest."""

    def __init__(self, tmp_path, sandbox, carrier_cache, **sections):
        self.tmp_path = tmp_path
        self.sandbox = sandbox
        self.path = tmp_path / "callexchange.ini"
        self.path.write_text(config_text(tmp_path, sandbox.port, **sections))
        state = tmp_path / "state"
        state.mkdir(exist_ok=True)
        if not (state / "numbers").exists():
            (state / "numbers").symlink_to(carrier_cache, target_is_directory=True)
        self.app = webtest.TestApp(create_app(config_path=str(self.path)))

    def request(self, method, url, body=None, headers=None, content_type="application/json"):
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
        if isinstance(body, str):
            body = body.encode("utf-8")
        response = self.app.request(url, method=method, body=body or b"",
                                    headers=dict(headers or {}),
                                    content_type=content_type if body else None,
                                    expect_errors=True)
        assert response.headers["Content-Type"] == "application/json; charset=utf-8"
        return response


@pytest.fixture
def site(tmp_path, keys_file, sandbox, carrier_cache):
    return Site(tmp_path, sandbox, carrier_cache, recordings={"access": "key"})


def call(**more):
    params = {"extension": "2001", "destination": "12127773456"}
    params.update(more)
    return params


def rpc(params, request_id):
    return {"jsonrpc": "2.0", "method": "originate", "params": params, "id": request_id}


# --- nothing before authentication ---------------------------------------------------------

STRANGERS = [
    # (what, method, url, body, headers, status)
    ("no key, an Idempotency-Key", "POST", CALL, call(), {"Idempotency-Key": "k1"}, 400),
    ("a wrong header key", "POST", CALL, call(), {"api-key": "nope", "Idempotency-Key": "k2"}, 401),
    ("a wrong body key", "POST", CALL, call(api_key="nope"), {"Idempotency-Key": "k3"}, 401),
    ("a wrong key in a form", "POST", CALL, "extension=2001&destination=12127773456&api-key=no",
     {"Idempotency-Key": "k4"}, 401),
    ("a batch of wrong keys", "POST", CALL,
     [rpc(call(api_key="nope-%d" % n), n) for n in range(3)], {"Idempotency-Key": "k5"}, 200),
    ("a wrong key, no Idempotency-Key", "POST", CALL, call(), {"api-key": "nope"}, 401),
    ("recordings, a wrong key", "GET", RECORDINGS + "?phone=12127773456", None,
     {"api-key": "nope"}, 401),
    ("recordings, a wrong body key", "POST", RECORDINGS, {"phone": "12127773456", "api_key": "x"},
     {}, 401),
    ("a recording, a wrong key", "GET", WAV, None, {"api-key": "nope"}, 401),
]


@pytest.mark.parametrize("what, method, url, body, headers, status", STRANGERS,
                         ids=[case[0] for case in STRANGERS])
def test_a_request_without_a_valid_key_leaves_no_file(site, what, method, url, body, headers,
                                                      status):
    before = tree(site.tmp_path)
    response = site.request(method, url, body, headers,
                            content_type="application/x-www-form-urlencoded"
                            if isinstance(body, str) else "application/json")
    assert response.status_int == status, response.text
    if isinstance(response.json, list):
        assert [a["error"]["code"] for a in response.json] == [-32001] * 3
    assert tree(site.tmp_path) == before
    assert site.sandbox.actions == []


def test_a_thousand_idempotency_keys_of_strangers_leave_no_lock(site):
    before = tree(site.tmp_path)
    for n in range(200):
        response = site.request("POST", CALL, call(),
                                {"api-key": "guess-%d" % n, "Idempotency-Key": "fill-%d" % n})
        assert response.status_int == 401
    assert tree(site.tmp_path) == before
    assert not os.path.exists(site.tmp_path / "state" / "idempotency")


def test_a_batch_has_every_entrys_key_checked_before_any_file(site):
    batch = [rpc(call(api_key=TEST_API_KEY), 1), rpc(call(destination="12127773457",
                                                          api_key="nope"), 2)]
    first = site.request("POST", CALL, batch, {"Idempotency-Key": "batch-1"})
    answers = {a["id"]: a for a in first.json}
    assert answers[1]["result"]["status"] == "true"
    assert answers[2]["error"]["code"] == -32001
    assert len(site.sandbox.actions_named("Originate")) == 1
    again = site.request("POST", CALL, batch, {"Idempotency-Key": "batch-1"})
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json == first.json
    assert len(site.sandbox.actions_named("Originate")) == 1


# --- an unusable config: the same 500 for everyone, the detail in the log ----------------------

def broken_configs(tmp_path, port):
    """(what, config text or None for no file, the line and key the log must name)."""
    good = config_text(tmp_path, port)
    lines = good.splitlines()
    secret_line = lines.index("secret = %s" % AMI_SECRET)
    no_equals = list(lines)
    no_equals[secret_line] = "secret %s" % AMI_SECRET
    port_line = [n for n, line in enumerate(lines) if line.startswith("port = ")][0]
    bad_port = list(lines)
    bad_port[port_line] = "port = fivethousand"
    return [
        ("a secret line without '='", "\n".join(no_equals), secret_line + 1, "key = value"),
        ("a bad port", "\n".join(bad_port), port_line + 1, "[ami] port"),
        ("an unknown section", good + "\n[nonsense]\n", len(lines) + 2, "[nonsense]"),
        ("no config file", None, 0, "config file not found"),
    ]


@pytest.mark.parametrize("case", range(4))
@pytest.mark.parametrize("method, url, body, headers", [
    ("POST", CALL, call(), {"api-key": TEST_API_KEY}),
    ("POST", CALL, call(), {}),
    ("POST", CALL, [rpc(call(), 1)], {"api-key": "nope", "Idempotency-Key": "x"}),
    ("GET", RECORDINGS + "?phone=12127773456", None, {"api-key": TEST_API_KEY}),
    ("GET", RECORDINGS + "?phone=12127773456", None, {}),
    ("GET", WAV, None, {"api-key": TEST_API_KEY}),
], ids=["call", "call-no-key", "call-batch", "recordings", "recordings-no-key", "wav-file"])
def test_a_broken_config_is_the_same_500_for_everyone_with_the_detail_in_the_log(
        tmp_path, keys_file, sandbox, case, method, url, body, headers):
    what, text, line, named = broken_configs(tmp_path, sandbox.port)[case]
    path = tmp_path / "callexchange.ini"
    if text is not None:
        path.write_text(text)
    before = tree(tmp_path)
    app = webtest.TestApp(create_app(config_path=str(path)))
    response = app.request(url, method=method, headers=headers, expect_errors=True,
                           body=json.dumps(body).encode() if body is not None else b"",
                           content_type="application/json" if body is not None else None)
    assert response.status_int == 500, (what, response.text)
    reply = response.json
    error_id = reply["error_id"]
    assert reply["error"] == CONFIG_ERROR % error_id
    assert reply["status"] == "500 Internal Server Error"
    validate("CallError" if url == CALL else "RecordingFileError" if url == WAV
             else "RecordingsError", reply)
    assert str(path) not in response.text and AMI_SECRET not in response.text
    # The operator's line: the same id, the file, the line, the key; never the secret.
    [logged] = [entry for entry in response.errors.splitlines() if error_id in entry]
    assert ("%s:%d" % (path, line) if line else str(path)) in logged
    assert named in logged
    assert AMI_SECRET not in response.errors
    assert tree(tmp_path) == before
    assert sandbox.actions == []


def test_a_config_error_reply_still_names_caller_and_callee(tmp_path, keys_file):
    path = tmp_path / "broken.ini"
    path.write_text("[nonsense]\n")
    response = webtest.TestApp(create_app(str(path))).post(
        CALL, json.dumps(call()), headers={"api-key": TEST_API_KEY}, status=500,
        expect_errors=True)
    assert response.json["message"] == ("We fail on making a call. caller : 2001, "
                                        "callee : 12127773456")
    assert "%s:1: unknown section [nonsense]" % path in response.errors


def test_an_unknown_default_region_is_a_config_error_with_its_line_in_the_log(
        tmp_path, keys_file, sandbox, carrier_cache):
    site = Site(tmp_path, sandbox, carrier_cache, dial={"default_region": "XX"})
    response = site.request("POST", CALL, call(), {"api-key": TEST_API_KEY})
    assert response.status_int == 500
    error_id = response.json["error_id"]
    assert response.json["error"] == CONFIG_ERROR % error_id
    assert "XX" not in response.text
    line = [n for n, text in enumerate(site.path.read_text().splitlines(), 1)
            if text.startswith("default_region")][0]
    assert "%s: %s:%d: [dial] default_region is not a region" % (error_id, site.path, line) \
        in response.errors
    assert sandbox.actions == []


@pytest.mark.parametrize("url", [CALL, RECORDINGS])
def test_a_missing_keys_file_is_a_config_error_not_a_401(tmp_path, sandbox, carrier_cache, url):
    site = Site(tmp_path, sandbox, carrier_cache,
                auth={"keys_file": str(tmp_path / "nowhere" / "api-keys")})
    response = site.request("POST", url, call(phone="12127773456"), {"api-key": TEST_API_KEY})
    assert response.status_int == 500
    error_id = response.json["error_id"]
    assert response.json["error"] == CONFIG_ERROR % error_id
    assert "nowhere" not in response.text
    assert "%s: %s: keys file not found" % (error_id, tmp_path / "nowhere" / "api-keys") \
        in response.errors


# --- what is no text: 400, not 500 ----------------------------------------------------------

@pytest.mark.parametrize("url, body", [
    (CALL, '{"extension": "2001", "destination": "12127773456", "msg": "\\ud800"}'),
    (CALL, '{"extension": "2001", "destination": "12127773456", "crm_id": "a\\udfffb"}'),
    (CALL, '{"extension": "2001", "destination": "12127773456", "api_key": "\\ud800"}'),
    (CALL, '{"jsonrpc": "2.0", "method": "call", "id": 1, "params": '
           '{"extension": "2001", "destination": "12127773456", "msg": "\\ud800"}}'),
    (RECORDINGS, '{"phone": "12127773456", "api_key": "\\ud800"}'),
    (RECORDINGS, '{"phone": "\\ud800"}'),
], ids=["msg", "crm_id", "body-key", "jsonrpc-msg", "recordings-body-key", "phone"])
def test_a_lone_surrogate_is_a_400_in_the_legacy_shape(site, url, body):
    key = {} if "api_key" in body else {"api-key": TEST_API_KEY}
    before = tree(site.tmp_path)
    response = site.request("POST", url, body, key)
    reply = response.json
    if "jsonrpc" in body:
        assert response.status_int == 200
        assert reply["error"]["code"] == -32602
        reply = reply["error"]["data"]
    else:
        assert response.status_int == 400, response.text
    assert reply["status"] == "400 Bad Request"
    assert "not valid text" in reply["error"]
    validate("CallError" if url == CALL else "RecordingsError", reply)
    assert site.sandbox.actions_named("Originate") == []
    if "api_key" in body:
        assert tree(site.tmp_path) == before


@pytest.mark.parametrize("url", [CALL, RECORDINGS, WAV])
def test_header_bytes_that_are_not_utf8_are_a_400_not_a_500(site, url):
    # A WSGI server hands header bytes over as Latin-1 text (PEP 3333): b"\xff\xfe" is
    # "\xff\xfe" here (the CGI adapter makes its environment so: test_config_error_secrets).
    body = None if url == WAV else call(phone="12127773456")
    before = tree(site.tmp_path)
    response = site.request("GET" if url == WAV else "POST", url, body,
                            {"api-key": b"\xff\xfe".decode("latin-1")})
    assert response.status_int == 400, response.text
    reply = response.json
    assert reply["status"] == "400 Bad Request"
    assert reply["error"] == "Header 'api-key' is not valid UTF-8 text"
    validate("CallError" if url == CALL else "RecordingFileError" if url == WAV
             else "RecordingsError", reply)
    assert tree(site.tmp_path) == before


def test_a_key_in_utf8_is_read_alike_from_the_header_and_the_body(site, keys_file):
    from callexchange import keys
    keys.add_key(keys_file, "unicode", "cl\u00e9-\u043a\u043b\u044e\u0447")
    as_sent = "cl\u00e9-\u043a\u043b\u044e\u0447".encode("utf-8").decode("latin-1")
    header = site.request("GET", RECORDINGS + "?phone=12127773456", None, {"api-key": as_sent})
    assert header.status_int == 200, header.text
    body = site.request("POST", RECORDINGS, {"phone": "12127773456",
                                             "api_key": "cl\u00e9-\u043a\u043b\u044e\u0447"})
    assert body.status_int == 200, body.text
