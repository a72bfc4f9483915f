"""The toll-fraud guard at asteriskapi.pl, in process: WebTest over the WSGI app and a real
sandbox PBX. A refusal is a 403 in the legacy error shape naming its rule, and nothing
reaches Asterisk (the sandbox records every AMI action it gets)."""

import json
import threading

import pytest
import webtest

import schemas
from callexchange import keys
from callexchange.calls.quota import CallQuota
from callexchange.config import load_config
from callexchange.http.app import create_app
from callexchange.keys import KeyLimits
from testconfig import TEST_API_KEY, TEST_KEY_LABEL, config_text

URL = "/api/v1/asteriskapi.pl"


class Gateway:
    """The app over a test config pointing at the sandbox, with one key of given limits."""

    def __init__(self, tmp_path, sandbox, carrier_cache, limits=keys.NO_LIMITS, **sections):
        self.tmp_path, self.sandbox = tmp_path, sandbox
        path = tmp_path / "callexchange.ini"
        path.write_text(config_text(tmp_path, sandbox.port, **sections))
        self.config = load_config(str(path))
        state = tmp_path / "state"
        state.mkdir(exist_ok=True)
        if not (state / "numbers").exists():
            (state / "numbers").symlink_to(carrier_cache, target_is_directory=True)
        if keys.entry_for(self.config.auth.keys_file, TEST_KEY_LABEL) is None:
            keys.add_key(self.config.auth.keys_file, TEST_KEY_LABEL, TEST_API_KEY, limits)
        else:
            keys.set_limits(self.config.auth.keys_file, TEST_KEY_LABEL, limits)
        self.app = webtest.TestApp(create_app(config=self.config))

    def post(self, body, status=200, key=TEST_API_KEY):
        response = self.app.post(URL, params=json.dumps(body).encode(),
                                 headers={"api-key": key}, content_type="application/json",
                                 status=status, expect_errors=True)
        assert response.status_int == status, response.text
        # Only the operator's line about a PBX-side failure may be logged (502, 503:
        # tests/calls/test_call_error_log.py).
        assert all(line.startswith("callexchange: call ")
                   for line in response.errors.splitlines()), response.errors
        assert response.headers["Content-Type"] == "application/json; charset=utf-8"
        return response.json

    def originates(self):
        return self.sandbox.actions_named("Originate")

    def today(self):
        usage = CallQuota(self.config.state.dir).usage()
        return usage[TEST_KEY_LABEL].today if TEST_KEY_LABEL in usage else 0

    def refused(self):
        usage = CallQuota(self.config.state.dir).usage()
        return usage[TEST_KEY_LABEL].refused if TEST_KEY_LABEL in usage else {}


@pytest.fixture
def gateway(tmp_path, sandbox, carrier_cache):
    def make(limits=keys.NO_LIMITS, **sections):
        return Gateway(tmp_path, sandbox, carrier_cache, limits, **sections)
    return make


def call(destination="12127773456", extension="2001"):
    return {"extension": extension, "destination": destination}


def forbidden_schema_check(body):
    """The reply matches the 403 response documented in docs/openapi.yaml."""
    schemas.response_validator("/api/v1/asteriskapi.pl", "post", 403).validate(body)
    schemas.validate("CallError", body)


def assert_refused(body, rule, destination):
    forbidden_schema_check(body)
    assert body["status"] == "403 Forbidden" and body["icon"] == "error"
    assert body["error"].startswith("Refused by policy (%s): " % rule)
    assert body["message"] == "We fail on making a call. caller : 2001, callee : %s" % destination


# --- destinations ------------------------------------------------------------------------

@pytest.mark.parametrize("destination", ["+112", "00112", "+1 911", "+44 999", "0049 110",
                                         "011 44 112", "911", "112", "999", "000"])
def test_emergency_numbers_are_a_403_and_nothing_reaches_asterisk(gateway, destination):
    app = gateway()
    body = app.post(call(destination), status=403)
    assert_refused(body, "emergency", destination)
    assert app.sandbox.actions == []          # not even an AMI login
    assert app.today() == 0
    assert app.refused() == {"emergency": 1}


def test_a_short_service_number_is_a_403(gateway):
    app = gateway()
    assert_refused(app.post(call("+44 118 118"), status=403), "short_number", "+44 118 118")
    assert app.sandbox.actions == []


def test_a_premium_number_is_refused_unless_its_type_is_allowed(gateway):
    app = gateway()
    body = app.post(call("+1 900 555 0100"), status=403)
    assert_refused(body, "number_type", "+1 900 555 0100")
    assert "premium_rate" in body["error"]
    assert app.originates() == []
    app = gateway(policy={"allowed_types": "fixed_line, mobile, fixed_line_or_mobile, "
                                           "premium_rate"})
    assert app.post(call("+1 900 555 0100"))["status"] == "true"
    assert [o["Exten"] for o in app.originates()] == ["19005550100"]


def test_an_invalid_number_of_unknown_type_is_still_dialled_as_sent(gateway):
    app = gateway()
    body = app.post(call("07911123456"))
    assert body["phone_valid"] == "no"
    assert [o["Exten"] for o in app.originates()] == ["07911123456"]


def test_policy_allowed_regions(gateway):
    app = gateway(policy={"allowed_regions": "GB, DE"})
    body = app.post(call("+33612345678"), status=403)
    assert_refused(body, "region", "+33612345678")
    assert "[policy] allowed_regions (GB, DE)" in body["error"]
    assert app.post(call("+4915112345678"))["icon"] == "DE"
    assert len(app.originates()) == 1


def test_a_keys_own_regions_replace_the_configs(gateway):
    app = gateway(KeyLimits(("DE",), None, None), policy={"allowed_regions": "GB"})
    body = app.post(call("+447400123456"), status=403)
    assert "this key's allowed regions (DE)" in body["error"]
    assert app.post(call("+4915112345678"))["status"] == "true"
    assert len(app.originates()) == 1


def test_the_policy_comes_after_authentication(gateway):
    app = gateway()
    body = app.post(call("+112"), status=401, key="not-a-key")
    assert body["error"] == "Invalid api-key"
    assert app.sandbox.actions == []


# --- counts ------------------------------------------------------------------------------

def test_the_per_minute_limit(gateway):
    app = gateway(KeyLimits(None, 2, None))
    app.post(call("12127773456"))
    app.post(call("12127773457"))
    body = app.post(call("12127773458"), status=403)
    assert_refused(body, "rate_limit", "12127773458")
    assert "2 calls per minute" in body["error"]
    assert len(app.originates()) == 2
    assert app.today() == 2


def test_the_daily_cap(gateway):
    app = gateway(KeyLimits(None, None, 1))
    app.post(call("12127773456"))
    assert_refused(app.post(call("12127773457"), status=403), "daily_cap", "12127773457")
    assert len(app.originates()) == 1


def test_a_call_asterisk_refused_gives_its_slot_back(gateway):
    app = gateway(KeyLimits(None, 1, 1))
    app.sandbox.inject("originate-error")
    app.post(call("12127773456"), status=502)
    assert app.today() == 0
    app.sandbox.clear_faults()
    assert app.post(call("12127773457"))["status"] == "true"
    assert app.today() == 1


def test_an_unconfirmed_originate_keeps_its_slot(gateway):
    app = gateway(KeyLimits(None, None, 1))
    app.sandbox.inject("slow-originate=3")   # past the 2 s timeout
    body = app.post(call("12127773456"), status=503)
    assert "may have been placed" in body["error"]
    app.sandbox.clear_faults()
    assert_refused(app.post(call("12127773457"), status=403), "daily_cap", "12127773457")
    assert app.today() == 1


def test_a_double_click_is_neither_counted_nor_refused(gateway):
    app = gateway(KeyLimits(None, 1, None))
    first = app.post(call())
    assert app.post(call()) == first            # the replay of the first reply
    assert len(app.originates()) == 1
    assert app.today() == 1


def test_a_keys_file_without_limits_still_works_and_is_counted(gateway, tmp_path):
    app = gateway()
    digest = keys.digest("legacy-key")
    with open(app.config.auth.keys_file, "a") as handle:
        handle.write("legacy\t%s\t2023-01-01T00:00:00Z\n" % digest)
    assert app.post(call(), key="legacy-key")["status"] == "true"
    assert CallQuota(app.config.state.dir).usage()["legacy"].today == 1


def test_concurrent_requests_place_exactly_the_limit(gateway):
    app = gateway(KeyLimits(None, 5, None))
    statuses = []

    def one(index):
        response = app.app.post(URL, params=json.dumps(call("1212777%04d" % index)).encode(),
                                headers={"api-key": TEST_API_KEY},
                                content_type="application/json", expect_errors=True)
        statuses.append((response.status_int, response.json["error"][:30]
                         if response.status_int != 200 else ""))

    threads = [threading.Thread(target=one, args=(index,)) for index in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(statuses) == [(200, "")] * 5 + [(403, "Refused by policy (rate_limit)")] * 7
    assert len(app.originates()) == 5
    assert app.today() == 5
    assert app.refused() == {"rate_limit": 7}


# --- JSON-RPC ----------------------------------------------------------------------------

def test_jsonrpc_gets_its_own_error_code_with_the_legacy_object(gateway):
    app = gateway()
    reply = app.post({"jsonrpc": "2.0", "method": "originate", "params": call("+44 999"),
                      "id": 7})
    schemas.validate("JsonRpcCallResponse", reply)
    assert reply["id"] == 7
    assert reply["error"]["code"] == -32005
    assert reply["error"]["message"].startswith("Refused by policy (emergency)")
    assert_refused(reply["error"]["data"], "emergency", "+44 999")
    assert app.sandbox.actions == []


def test_a_jsonrpc_batch_over_the_limit_places_only_the_limit(gateway):
    app = gateway(KeyLimits(None, 2, None))
    batch = [{"jsonrpc": "2.0", "method": "call", "params": call("1212777000%d" % n), "id": n}
             for n in range(4)]
    replies = app.post(batch)
    assert ["result" in r for r in replies] == [True, True, False, False]
    assert [r["error"]["code"] for r in replies[2:]] == [-32005, -32005]
    assert len(app.originates()) == 2
