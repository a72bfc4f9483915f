"""The call endpoint (asteriskapi.pl) under test, in process: WebTest (lint on) over the
WSGI app, a real sandbox PBX on a free loopback port behind it (tests/conftest.py's
`sandbox`), the session's carrier shards, and a clock the test moves for the replay
windows. tests/http/conftest.py makes one per test as the `gateway` fixture; the
test_call_*.py files next to it share it, by topic.

Every reply `Gateway.post` gets is checked against the JSON Schemas of docs/openapi.yaml
and for its Content-Type."""

import json
import time

import webtest

from callexchange.calls.ani import AniLedger
from callexchange.config import load_config
from callexchange.http.app import create_app
from clock import Clock
from schemas import validate
from testconfig import TEST_API_KEY, config_text

URL = "/api/v1/asteriskapi.pl"
JSON_TYPE = "application/json; charset=utf-8"
DEFAULT_POOL = ("12125550100", "12125550101")
DE_POOL = ("4930123456", "4940123456")
MISSING_ERROR = "Missing parameters: api-key, extension, or destination"

LEGACY_SAMPLE = """{
" extension " : "2001",
" destination ": "12127773456",
" voice_pitch ": "1",
" call_in_out ": "true",
" msg ": "some text to be send to softphone application"
}"""


class Gateway:
    """The app under test over a test config pointing at the sandbox."""

    def __init__(self, tmp_path, sandbox, carrier_cache):
        self.tmp_path = tmp_path
        self.sandbox = sandbox
        self.carrier_cache = carrier_cache
        # The replay windows' clock (double clicks): the test moves it, nothing sleeps.
        self.clock = Clock(time.time())
        self.configure()

    def configure(self, ami_port=None, **sections):
        """A new app over the test config with `sections` overridden (config_text)."""
        path = self.tmp_path / "callexchange.ini"
        port = self.sandbox.port if ami_port is None else ami_port
        path.write_text(config_text(self.tmp_path, port, **sections))
        self.config = load_config(str(path))
        state = self.tmp_path / "state"
        state.mkdir(exist_ok=True)
        if not (state / "numbers").exists():
            (state / "numbers").symlink_to(self.carrier_cache, target_is_directory=True)
        self.app = webtest.TestApp(create_app(config=self.config, clock=self.clock))
        return self

    def post(self, body, key=TEST_API_KEY, headers=None, content_type="application/json",
             status=200, url=URL, expect_errors=False, app=None):
        """POST `body` (dict/list: JSON-encoded; str/bytes: as is); check the reply."""
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
        if isinstance(body, str):
            body = body.encode("utf-8")
        sent = dict(headers or {})
        if key is not None:
            sent["api-key"] = key
        # request(), not post(): WebTest re-encodes a multipart body handed to post().
        response = (app or self.app).request(url, method="POST", body=body, headers=sent,
                                             content_type=content_type, expect_errors=True)
        assert response.status_int == status, response.text
        if not expect_errors:
            # Only the operator's line about a PBX-side failure may be logged (502, 503,
            # a failed MessageSend: tests/calls/test_call_error_log.py).
            assert all(line.startswith("callexchange: call ")
                       for line in response.errors.splitlines()), response.errors
        check_reply(response)
        return response

    def originates(self):
        return self.sandbox.actions_named("Originate")

    def usage(self):
        return AniLedger(self.config.state.dir).usage()

    def fault(self, text):
        self.sandbox.inject(text)


def check_reply(response):
    """Every reply: JSON with the right Content-Type, valid against its schema, and for
    errors a `status` that repeats the HTTP status line."""
    if response.status_int == 204:
        assert response.body == b""
        assert "Content-Type" not in response.headers
        assert "Content-Length" not in response.headers
        return None
    assert response.headers["Content-Type"] == JSON_TYPE
    payload = json.loads(response.body.decode("utf-8"))
    if isinstance(payload, list):
        validate("JsonRpcCallBatchResponse", payload)
    elif "jsonrpc" in payload:
        validate("JsonRpcCallResponse", payload)
    elif response.status_int == 200:
        validate("CallSuccess", payload)
    else:
        validate("CallError", payload)
        assert payload["status"] == response.status
    return payload


def call(destination="12127773456", extension="2001", **more):
    """A plain call request's parameters."""
    params = {"extension": extension, "destination": destination}
    params.update(more)
    return params


def variables(originate):
    """The Originate's Variable headers as {name: value}."""
    return dict(v.split("=", 1) for v in originate.header_list("Variable"))


def rpc(method="originate", params=None, **entry):
    """A JSON-RPC 2.0 request object (a notification unless `id=` is given)."""
    request = {"jsonrpc": "2.0", "method": method,
               "params": call() if params is None else params}
    request.update(entry)
    return request
