"""asteriskapi.pl end to end, in process: WebTest (lint on) over the WSGI app, a real
Sandbox PBX on a free loopback port behind it. Every reply is checked against the JSON
Schemas of docs/openapi.yaml and for its Content-Type."""

import json
import socket
import threading
import time

import pytest
import webtest

from callexchange.calls.ani import AniLedger
from callexchange.http.app import create_app
from callexchange.config import load_config
from testconfig import AMI_SECRET, AMI_USERNAME, TEST_API_KEY, config_text
from schemas import validate

URL = "/api/v1/asteriskapi.pl"
JSON_TYPE = "application/json; charset=utf-8"
DEFAULT_POOL = ("12125550100", "12125550101")
DE_POOL = ("4930123456", "4940123456")
MISSING_ERROR = "Missing parameters: api-key, extension, or destination"


# --- fixtures and helpers ----------------------------------------------------------------

class Gateway:
    """The app under test over a test config pointing at the sandbox."""

    def __init__(self, tmp_path, sandbox, carrier_cache):
        self.tmp_path = tmp_path
        self.sandbox = sandbox
        self.carrier_cache = carrier_cache
        self.configure()

    def configure(self, ami_port=None, **sections):
        path = self.tmp_path / "callexchange.ini"
        port = self.sandbox.port if ami_port is None else ami_port
        path.write_text(config_text(self.tmp_path, port, **sections))
        self.config = load_config(str(path))
        state = self.tmp_path / "state"
        state.mkdir(exist_ok=True)
        if not (state / "numbers").exists():
            (state / "numbers").symlink_to(self.carrier_cache, target_is_directory=True)
        self.app = webtest.TestApp(create_app(config=self.config))
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
        response = (app or self.app).post(url, params=body, headers=sent,
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


@pytest.fixture
def gateway(tmp_path, keys_file, sandbox, carrier_cache):
    return Gateway(tmp_path, sandbox, carrier_cache)


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
    params = {"extension": extension, "destination": destination}
    params.update(more)
    return params


def variables(originate):
    """The Originate's Variable headers as {name: value}."""
    return dict(v.split("=", 1) for v in originate.header_list("Variable"))


def rpc(method="originate", params=None, **entry):
    request = {"jsonrpc": "2.0", "method": method,
               "params": call() if params is None else params}
    request.update(entry)
    return request


# --- the legacy sample and the number intelligence ---------------------------------------

LEGACY_SAMPLE = """{
" extension " : "2001",
" destination ": "12127773456",
" voice_pitch ": "1",
" call_in_out ": "true",
" msg ": "some text to be send to softphone application"
}"""


def test_legacy_sample_places_a_dialer_mode_call_with_legacy_types(gateway):
    body = gateway.post(LEGACY_SAMPLE).json

    assert body["status"] == "true"
    assert body["icon"] == "US"
    assert body["message"] == "Success making a call"
    assert body["phone_valid"] == "yes"
    assert body["country_code"] == 1 and type(body["country_code"]) is int
    assert body["carrier"] == ""
    assert body["caller_id"] == DEFAULT_POOL[0]
    assert body["check_spam"] == "true"
    assert body["msg_sent"] == "true"
    assert "crm_id" not in body

    [login] = gateway.sandbox.actions_named("Login")
    assert login["Username"] == AMI_USERNAME and login["Secret"] == "***"
    [originate] = gateway.originates()
    assert originate["ChannelId"] == body["uniqueid"]
    assert originate["Async"] == "true"
    assert originate["Channel"] == "Local/12127773456@callexchange-outbound/n"
    assert originate["Context"] == "callexchange-agent"
    assert originate["Exten"] == "2001"
    assert originate["Priority"] == "1"
    # Dialer mode: the lead's Dial caps its ring (CX_LEAD_RING), the Timeout is a backstop.
    assert originate["Timeout"] == "600000"
    assert originate["CallerID"] == body["caller_id"]
    carried = variables(originate)
    assert all(name.startswith("__CX_") for name in carried)
    assert carried["__CX_ANI"] == body["caller_id"]
    assert carried["__CX_PITCH"] == "1"
    assert carried["__CX_MODE"] == "dialer"
    assert carried["__CX_CRM_ID"] == ""
    assert carried["__CX_UNIQUEID"] == body["uniqueid"]
    assert carried["__CX_EXTENSION"] == "2001"
    assert carried["__CX_DESTINATION"] == "12127773456"
    assert carried["__CX_AGENT_DIAL"] == "PJSIP/2001"  # [dial] agent_channel
    assert carried["__CX_AGENT_RING"] == "30"  # [dial] ring_timeout

    [message] = gateway.sandbox.actions_named("MessageSend")
    assert message["To"] == "pjsip:2001"
    assert message["Body"] == "some text to be send to softphone application"


def test_agent_first_rings_the_agent_channel_then_dials_the_lead(gateway):
    body = gateway.post(call(call_in_out=False)).json

    [originate] = gateway.originates()
    assert originate["Channel"] == "PJSIP/2001"
    assert originate["Context"] == "callexchange-outbound"
    assert originate["Exten"] == "12127773456"
    assert originate["Timeout"] == "30000"  # [dial] ring_timeout: the agent's ring
    assert variables(originate)["__CX_MODE"] == "agent_first"
    assert variables(originate)["__CX_ANI"] == body["caller_id"]
    # Asterisk pushes it on the agent's channel as it creates it (a busy phone's cause).
    assert variables(originate)["CHANNEL(hangup_handler_push)"] == \
        '"callexchange-agent-unanswered,s,1"'
    assert "msg_sent" not in body
    assert gateway.sandbox.actions_named("MessageSend") == []


def test_dial_templates_come_from_the_config(gateway):
    gateway.configure(dial={"agent_channel": "SIP/{extension}", "outbound_context": "out-x",
                            "ring_timeout": "12"})
    gateway.sandbox.add_contexts("out-x")  # the operator's own context, on their PBX
    gateway.post(call())
    [originate] = gateway.originates()
    assert (originate["Channel"], originate["Context"], originate["Timeout"]) == \
        ("SIP/2001", "out-x", "12000")


def test_dialer_mode_rings_the_agent_with_the_configured_agent_channel(gateway):
    gateway.configure(dial={"agent_channel": "SIP/{extension}", "ring_timeout": "12"})
    gateway.post(call(call_in_out=True))
    [originate] = gateway.originates()
    assert variables(originate)["__CX_AGENT_DIAL"] == "SIP/2001"
    assert variables(originate)["__CX_AGENT_RING"] == "12"
    assert originate["Timeout"] == "600000"


def test_a_local_channel_without_n_gets_it(gateway):
    # Configs installed before the default had /n: Asterisk would optimise the Local pair
    # away once bridged and hang up ;1, which owns the hangup webhook (issue 8, D3).
    gateway.configure(dial={"lead_channel": "Local/{destination}@callexchange-outbound",
                            "agent_channel": "Local/{extension}@agents"})
    gateway.post(call(call_in_out=True))
    gateway.post(call(call_in_out=False, destination="12127773457"))
    dialer, agent_first = gateway.originates()
    assert dialer["Channel"] == "Local/12127773456@callexchange-outbound/n"
    assert agent_first["Channel"] == "Local/2001@agents/n"


def test_german_mobile_gets_de_icon_calling_code_carrier_and_de_pool(gateway):
    body = gateway.post(call("+49 151 12345678")).json

    assert (body["icon"], body["country_code"], body["carrier"]) == ("DE", 49, "T-Mobile")
    assert body["phone_valid"] == "yes"
    assert body["caller_id"] == DE_POOL[0]
    [originate] = gateway.originates()
    assert originate["Exten"] == "4915112345678"


def test_00_prefix_is_read_as_international(gateway):
    body = gateway.post(call("004915112345678")).json
    assert (body["icon"], body["country_code"]) == ("DE", 49)
    assert gateway.originates()[0]["Exten"] == "4915112345678"


def test_national_us_number_is_dialled_in_e164_digits(gateway):
    body = gateway.post(call("2127773456")).json

    assert (body["icon"], body["country_code"], body["phone_valid"]) == ("US", 1, "yes")
    [originate] = gateway.originates()
    assert originate["Exten"] == "12127773456"
    assert variables(originate)["__CX_DESTINATION"] == "12127773456"


def test_invalid_but_parseable_number_is_dialled_with_phone_valid_no(gateway):
    body = gateway.post(call("030 1234567")).json   # no reading is valid, nor short
    assert body["phone_valid"] == "no"
    assert len(gateway.originates()) == 1


def test_destination_that_is_no_phone_number_is_400(gateway):
    body = gateway.post(call("not a number"), status=400).json
    assert body["field"] == "destination"
    assert body["message"] == "We fail on making a call. caller : 2001, callee : not a number"
    assert gateway.sandbox.actions == []


def test_alias_url_without_pl_works(gateway):
    gateway.post(call(), url="/api/v1/asteriskapi")
    assert len(gateway.originates()) == 1


# --- the api-key -------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["api_key", "api-key", " API-Key "])
def test_key_in_the_body_is_accepted(gateway, name):
    gateway.post(call(**{name: TEST_API_KEY}), key=None)
    assert len(gateway.originates()) == 1


def test_key_in_a_form_body_is_accepted(gateway):
    gateway.post("extension=2001&destination=12127773456&api-key=" + TEST_API_KEY, key=None,
                 content_type="application/x-www-form-urlencoded")
    assert len(gateway.originates()) == 1


@pytest.mark.parametrize("query", ["api-key=" + TEST_API_KEY, "API_KEY=" + TEST_API_KEY])
def test_key_in_the_query_string_is_refused(gateway, query):
    body = gateway.post(call(), url=URL + "?" + query, status=400).json
    assert "URL" in body["error"]
    assert gateway.sandbox.actions == []


def test_unknown_key_is_401(gateway):
    body = gateway.post(call(), key="not-a-key", status=401).json
    assert body["message"] == "We fail on making a call. caller : 2001, callee : 12127773456"
    assert gateway.sandbox.actions == []


def test_unknown_key_is_401_before_any_field_check(gateway):
    gateway.post(call("not a number", voice_pitch=9), key="not-a-key", status=401)


# --- missing parameters ------------------------------------------------------------------

@pytest.mark.parametrize("absent", [
    ("api-key",), ("extension",), ("destination",), ("api-key", "extension"),
    ("api-key", "destination"), ("extension", "destination"),
    ("api-key", "extension", "destination"),
])
def test_missing_parameters_are_named_exactly(gateway, absent):
    params = {name: value for name, value in call().items() if name not in absent}
    key = None if "api-key" in absent else TEST_API_KEY
    body = gateway.post(params, key=key, status=400).json

    assert body["error"] == MISSING_ERROR
    assert body["missing"] == list(absent)
    assert body["message"] == "We fail on making a call. caller : %s, callee : %s" % (
        params.get("extension", ""), params.get("destination", ""))
    assert gateway.sandbox.actions == []


def test_blank_values_count_as_missing(gateway):
    body = gateway.post(call("  ", extension=""), key="  ", status=400).json
    assert body["missing"] == ["api-key", "extension", "destination"]


def test_empty_body_names_everything_but_the_key_as_missing(gateway):
    body = gateway.post(b"", status=400).json
    assert body["missing"] == ["extension", "destination"]


# --- body forms --------------------------------------------------------------------------

def test_json_object_is_read_whatever_the_content_type(gateway):
    gateway.post(call(), content_type="text/plain")
    gateway.post(call("12127773457"), content_type="application/octet-stream")
    assert len(gateway.originates()) == 2


def test_form_encoded_body_with_legacy_names(gateway):
    body = gateway.post("+Extension+=2001&Destination=12127773456&Msg=hello%20there"
                        "&call_in_out=yes", content_type="application/x-www-form-urlencoded").json
    assert body["msg_sent"] == "true"
    assert gateway.sandbox.actions_named("MessageSend")[0]["Body"] == "hello there"
    assert gateway.originates()[0]["Context"] == "callexchange-agent"


def test_name_given_twice_after_normalisation_is_400(gateway):
    body = gateway.post('{"extension": "2001", " Extension ": "2002", '
                        '"destination": "12127773456"}', status=400).json
    assert body["field"] == "extension"
    assert gateway.sandbox.actions == []


def test_malformed_json_is_400_saying_what_is_wrong(gateway):
    body = gateway.post('{"extension": "2001", "destination": }', status=400).json
    assert body["error"].startswith("Malformed JSON")
    assert "line 1 column" in body["error"]
    assert gateway.sandbox.actions == []


def test_legacy_document_sample_as_typeset_is_400_not_a_crash(gateway):
    typeset = '{\n{\n" extension " : "2001",\n" call_in_out " : \u201ctrue\u201d\n}\n}'
    body = gateway.post(typeset, status=400).json
    assert "Malformed JSON" in body["error"]


@pytest.mark.parametrize("payload", ['"just a string"', "42", "null"])
def test_json_that_is_not_an_object_is_400(gateway, payload):
    gateway.post(payload, status=400)


def test_body_over_64_kib_is_413(gateway):
    big = json.dumps(call(msg="x" * (64 * 1024)))
    gateway.post(big, status=413)
    assert gateway.sandbox.actions == []


def test_body_of_exactly_64_kib_is_read(gateway):
    text = json.dumps(call(padding=""))
    text = text[:-2] + "x" * (64 * 1024 - len(text)) + text[-2:]
    assert len(text) == 64 * 1024
    gateway.post(text)


def test_get_is_405_with_allow(gateway):
    response = gateway.app.get(URL, headers={"api-key": TEST_API_KEY}, status=405)
    check_reply(response)
    assert response.headers["Allow"] == "POST"
    assert response.json["status"] == "405 Method Not Allowed"


# --- JSON-RPC 2.0 ------------------------------------------------------------------------

def test_jsonrpc_result_is_exactly_the_plain_reply(gateway):
    plain = gateway.post(call("12127773456")).json
    answer = gateway.post(rpc(params=call("12127773457"), id=7)).json

    assert answer["jsonrpc"] == "2.0" and answer["id"] == 7
    result = answer["result"]
    assert set(result) == set(plain)
    for name in set(plain) - {"uniqueid", "caller_id"}:
        assert result[name] == plain[name]
    assert result["uniqueid"] == gateway.originates()[1]["ChannelId"]


def test_jsonrpc_alias_method_call(gateway):
    answer = gateway.post(rpc("call", id="a")).json
    assert answer["id"] == "a" and answer["result"]["status"] == "true"
    assert len(gateway.originates()) == 1


def test_jsonrpc_params_use_legacy_names(gateway):
    answer = gateway.post(rpc(params=json.loads(LEGACY_SAMPLE), id=1)).json
    assert answer["result"]["msg_sent"] == "true"


def test_jsonrpc_notification_gets_204_and_the_call_is_placed(gateway):
    gateway.post(rpc(), status=204)
    assert len(gateway.originates()) == 1


def test_jsonrpc_batch_answers_in_order_without_notifications(gateway):
    batch = [
        rpc(params=call("12127773401"), id=1),
        rpc(params=call("12127773402")),                        # notification
        42,                                                     # invalid entry
        rpc("hangup", id=3),                                    # unknown method
        rpc(params={"extension": "2001"}, id=4),                # missing destination
        rpc("call", params=call("12127773405"), id="five"),
    ]
    answers = gateway.post(batch).json

    assert [a["id"] for a in answers] == [1, None, 3, 4, "five"]
    assert answers[0]["result"]["status"] == "true"
    assert answers[1]["error"]["code"] == -32600
    assert answers[2]["error"]["code"] == -32601
    assert answers[3]["error"]["code"] == -32602
    assert answers[3]["error"]["data"]["missing"] == ["destination"]
    assert answers[3]["error"]["data"]["status"] == "400 Bad Request"
    assert answers[4]["result"]["status"] == "true"
    dialled = sorted(o["Exten"] for o in gateway.originates())
    assert dialled == ["12127773401", "12127773402", "12127773405"]


def test_jsonrpc_batch_of_notifications_only_is_204(gateway):
    gateway.post([rpc(params=call("12127773401")), rpc(params=call("12127773402"))],
                 status=204)
    assert len(gateway.originates()) == 2


def test_jsonrpc_batch_over_50_is_invalid_request_and_runs_nothing(gateway):
    batch = [rpc(params=call("121277734%02d" % i), id=i) for i in range(51)]
    answer = gateway.post(batch).json
    assert answer["error"]["code"] == -32600 and answer["id"] is None
    assert gateway.sandbox.actions == []


def test_jsonrpc_empty_batch_is_invalid_request(gateway):
    assert gateway.post("[]").json["error"]["code"] == -32600


def test_jsonrpc_unknown_method_is_32601(gateway):
    answer = gateway.post(rpc("dial", id=1)).json
    assert answer["error"]["code"] == -32601 and answer["id"] == 1
    assert gateway.sandbox.actions == []


@pytest.mark.parametrize("params", [["2001", "12127773456"], "2001", 5])
def test_jsonrpc_params_not_an_object_is_32602(gateway, params):
    answer = gateway.post(rpc(params=params, id=1)).json
    assert answer["error"]["code"] == -32602
    assert gateway.sandbox.actions == []


def test_jsonrpc_malformed_json_is_32700_parse_error(gateway):
    answer = gateway.post('{"jsonrpc": "2.0", "method": "originate", "params": {', ).json
    assert answer["error"]["code"] == -32700 and answer["id"] is None
    assert answer["error"]["message"].startswith("Parse error")


def test_jsonrpc_wrong_version_is_invalid_request(gateway):
    answer = gateway.post(rpc(jsonrpc="1.0", id=1)).json
    assert answer["error"]["code"] == -32600


def test_jsonrpc_unknown_key_is_32001_with_legacy_data(gateway):
    answer = gateway.post(rpc(id=1), key="wrong").json
    assert answer["error"]["code"] == -32001
    assert answer["error"]["data"]["status"] == "401 Unauthorized"


def test_jsonrpc_field_error_is_32602_naming_the_field(gateway):
    answer = gateway.post(rpc(params=call(voice_pitch=3), id=1)).json
    assert answer["error"]["code"] == -32602
    assert answer["error"]["data"]["field"] == "voice_pitch"


# --- typed fields ------------------------------------------------------------------------

@pytest.mark.parametrize("value", [True, "true", "TRUE", " True ", 1, "1", "yes", "YES",
                                   "on", "On"])
def test_call_in_out_true_forms_select_dialer_mode(gateway, value):
    gateway.post(call(call_in_out=value))
    assert gateway.originates()[0]["Context"] == "callexchange-agent"


@pytest.mark.parametrize("value", [False, "false", "FALSE", 0, "0", "no", "No", "off",
                                   "OFF", ""])
def test_call_in_out_false_forms_select_agent_first(gateway, value):
    gateway.post(call(call_in_out=value))
    assert gateway.originates()[0]["Context"] == "callexchange-outbound"


@pytest.mark.parametrize("value", ["maybe", "tru", 2, -1, 0.5, "dialer option", [], {}])
def test_bad_boolean_is_400_naming_the_field(gateway, value):
    body = gateway.post(call(call_in_out=value), status=400).json
    assert body["field"] == "call_in_out"
    assert "call_in_out" in body["error"]
    assert gateway.sandbox.actions == []


@pytest.mark.parametrize("value, carried", [(0.1, "0.1"), (2.0, "2"), (2, "2"), ("0.1", "0.1"),
                                            (" 1.5 ", "1.5"), ("2.0", "2"), (1, "1")])
def test_voice_pitch_in_range_is_carried(gateway, value, carried):
    gateway.post(call(voice_pitch=value))
    assert variables(gateway.originates()[0])["__CX_PITCH"] == carried


def test_voice_pitch_defaults_to_1(gateway):
    gateway.post(call())
    assert variables(gateway.originates()[0])["__CX_PITCH"] == "1"


@pytest.mark.parametrize("value", [0.05, 2.5, 0, -1, "abc", "2.01", "nan", True, [1]])
def test_voice_pitch_out_of_range_or_not_a_number_is_400(gateway, value):
    body = gateway.post(call(voice_pitch=value), status=400).json
    assert body["field"] == "voice_pitch"
    assert "voice_pitch" in body["error"]
    assert gateway.sandbox.actions == []


def test_msg_of_exactly_1000_utf8_bytes_is_sent(gateway):
    msg = "\u00e9" * 500                    # 500 characters, 1000 bytes
    body = gateway.post(call(msg=msg)).json
    assert body["msg_sent"] == "true"
    [message] = gateway.sandbox.actions_named("MessageSend")
    assert (message["To"], message["Body"]) == ("pjsip:2001", msg)


def test_msg_over_1000_utf8_bytes_is_400_though_under_1000_characters(gateway):
    msg = "\u20ac" * 334                    # 334 characters, 1002 bytes
    body = gateway.post(call(msg=msg), status=400).json
    assert body["field"] == "msg"
    assert gateway.sandbox.actions == []


def test_msg_refused_by_asterisk_still_places_the_call(gateway):
    gateway.fault("messagesend-error")
    body = gateway.post(call(msg="hello")).json
    assert body["msg_sent"] == "false"
    assert len(gateway.originates()) == 1


@pytest.mark.parametrize("field", ["extension", "destination", "msg", "crm_id",
                                   "voice_pitch", "call_in_out"])
@pytest.mark.parametrize("char", ["\r", "\n", "\0"])
def test_control_characters_are_refused_before_anything_reaches_asterisk(gateway, field,
                                                                         char):
    samples = {"extension": "2001", "destination": "12127773456", "msg": "hi",
               "crm_id": "lead-1", "voice_pitch": "1", "call_in_out": "true"}
    params = call()
    params[field] = samples[field] + char + "Action: Originate"
    body = gateway.post(params, status=400).json
    assert body["field"] == field
    assert gateway.sandbox.actions == []


def test_control_characters_in_a_form_body_are_refused(gateway):
    gateway.post("extension=2001&destination=12127773456&msg=a%0D%0AAction:%20Logoff",
                 content_type="application/x-www-form-urlencoded", status=400)
    assert gateway.sandbox.actions == []


@pytest.mark.parametrize("extension", ["20 01", "2001;x", "2001/1", "a" * 41])
def test_extension_outside_its_alphabet_is_400(gateway, extension):
    body = gateway.post(call(extension=extension), status=400).json
    assert body["field"] == "extension"
    assert gateway.sandbox.actions == []


def test_crm_id_is_echoed_and_percent_encoded_in_the_variable(gateway):
    body = gateway.post(call(crm_id="lead 7, NY")).json
    assert body["crm_id"] == "lead 7, NY"
    assert variables(gateway.originates()[0])["__CX_CRM_ID"] == "lead%207%2C%20NY"


def test_crm_id_of_128_characters_is_accepted(gateway):
    crm_id = "c" * 128
    assert gateway.post(call(crm_id=crm_id)).json["crm_id"] == crm_id


def test_crm_id_of_129_characters_is_400(gateway):
    body = gateway.post(call(crm_id="c" * 129), status=400).json
    assert body["field"] == "crm_id"
    assert gateway.sandbox.actions == []


def test_crm_id_too_long_for_an_ami_line_once_encoded_is_400_not_500(gateway):
    body = gateway.post(call(crm_id="\U0001F600" * 128), status=400).json
    assert body["field"] == "crm_id"
    assert gateway.sandbox.actions == []


def test_numeric_values_are_accepted_as_json_numbers(gateway):
    body = gateway.post({"extension": 2001, "destination": 12127773456, "crm_id": 42}).json
    assert body["crm_id"] == "42"
    [originate] = gateway.originates()
    assert (originate["Channel"], originate["Exten"]) == ("PJSIP/2001", "12127773456")


# --- caller ID rotation ------------------------------------------------------------------

def test_ani_rotates_to_the_least_used_number_and_counts_exactly(gateway):
    chosen = [gateway.post(call("1212777340%d" % i)).json["caller_id"] for i in range(3)]
    assert chosen == [DEFAULT_POOL[0], DEFAULT_POOL[1], DEFAULT_POOL[0]]
    assert gateway.usage() == {DEFAULT_POOL[0]: 2, DEFAULT_POOL[1]: 1}


def test_check_spam_false_when_every_ani_is_flagged(gateway, tmp_path):
    flagged = tmp_path / "flagged.txt"
    flagged.write_text("# flagged by the carrier\n+12125550100\n12125550101\n")
    gateway.configure(ani={"flagged_file": str(flagged)})
    body = gateway.post(call()).json
    assert body["check_spam"] == "false"
    assert body["caller_id"] in DEFAULT_POOL
    assert len(gateway.originates()) == 1


def test_flagged_number_is_skipped_while_a_clean_one_is_left(gateway, tmp_path):
    flagged = tmp_path / "flagged.txt"
    flagged.write_text("12125550100\n")
    gateway.configure(ani={"flagged_file": str(flagged)})
    body = gateway.post(call()).json
    assert (body["caller_id"], body["check_spam"]) == (DEFAULT_POOL[1], "true")


def test_check_spam_false_when_every_ani_is_over_its_daily_limit(gateway):
    gateway.configure(ani={"daily_limit": "1"})
    spam = [gateway.post(call("1212777340%d" % i)).json["check_spam"] for i in range(3)]
    assert spam == ["true", "true", "false"]
    assert sum(gateway.usage().values()) == 3


def test_concurrent_requests_count_every_ani_use_exactly_once(gateway):
    replies, failures = [], []
    wsgi_app = gateway.app.app

    def one(index):
        try:
            app = webtest.TestApp(wsgi_app)
            replies.append(gateway.post(call("1212777%04d" % index), app=app).json)
        except Exception as error:  # reported below, in the main thread
            failures.append(error)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert failures == []
    assert len(replies) == 20
    usage = gateway.usage()
    assert sum(usage.values()) == 20
    assert usage == {DEFAULT_POOL[0]: 10, DEFAULT_POOL[1]: 10}
    assert len({reply["uniqueid"] for reply in replies}) == 20
    assert len(gateway.originates()) == 20


# --- Idempotency-Key and double clicks ---------------------------------------------------

def test_same_idempotency_key_replays_the_first_reply_and_places_one_call(gateway):
    headers = {"Idempotency-Key": "crm-retry-0001"}
    first = gateway.post(call(), headers=headers)
    second = gateway.post(call(), headers=headers)

    assert second.json == first.json
    assert second.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert len(gateway.originates()) == 1
    assert sum(gateway.usage().values()) == 1


def test_same_idempotency_key_with_another_body_is_422(gateway):
    headers = {"Idempotency-Key": "crm-retry-0002"}
    gateway.post(call(), headers=headers)
    body = gateway.post(call("12127773457"), headers=headers, status=422).json
    assert "Idempotency-Key" in body["error"]
    assert len(gateway.originates()) == 1


def test_same_idempotency_key_with_the_same_parameters_written_differently_replays(gateway):
    headers = {"Idempotency-Key": "crm-retry-0003"}
    first = gateway.post('{"extension": "2001", "destination": "12127773456"}', headers=headers)
    again = gateway.post('{ "Destination":"12127773456",\n "extension":"2001" }',
                         headers=headers)
    assert again.json == first.json and again.headers["Idempotent-Replayed"] == "true"
    assert len(gateway.originates()) == 1


def test_a_jsonrpc_retry_with_a_new_id_replays_the_first_result(gateway):
    headers = {"Idempotency-Key": "crm-retry-0004"}
    request = {"jsonrpc": "2.0", "method": "originate", "params": call(), "id": 1}
    first = gateway.post(request, headers=headers)
    again = gateway.post(dict(request, id=2), headers=headers)
    assert again.json["result"] == first.json["result"]
    assert again.json["id"] == 2  # the id of the request it answers
    assert len(gateway.originates()) == 1


def test_distinct_idempotency_keys_are_distinct_calls(gateway):
    gateway.post(call(), headers={"Idempotency-Key": "a-1"})
    gateway.post(call(), headers={"Idempotency-Key": "a-2"})
    assert len(gateway.originates()) == 2


@pytest.mark.parametrize("value", ["has space", "x" * 256])
def test_malformed_idempotency_key_is_400(gateway, value):
    gateway.post(call(), headers={"Idempotency-Key": value}, status=400)
    assert gateway.sandbox.actions == []


def test_failed_request_is_not_remembered_under_its_idempotency_key(gateway):
    headers = {"Idempotency-Key": "crm-retry-0003"}
    gateway.fault("refuse-login")
    gateway.post(call(), headers=headers, status=502)
    gateway.sandbox.clear_faults("refuse-login")
    body = gateway.post(call(), headers=headers).json
    assert body["status"] == "true"
    assert len(gateway.originates()) == 1


def test_double_click_gets_the_first_reply_and_places_one_call(gateway):
    first = gateway.post(call()).json
    second = gateway.post(call(" 2127773456 ")).json   # same lead, written otherwise
    assert second == first
    assert len(gateway.originates()) == 1


def test_another_destination_is_not_a_double_click(gateway):
    gateway.post(call("12127773456"))
    gateway.post(call("12127773457"))
    assert len(gateway.originates()) == 2


def test_same_lead_after_dedupe_seconds_is_called_again(gateway):
    gateway.configure(dial={"dedupe_seconds": "1"})
    first = gateway.post(call()).json
    time.sleep(1.1)
    second = gateway.post(call()).json
    assert second["uniqueid"] != first["uniqueid"]
    assert len(gateway.originates()) == 2


def test_dedupe_seconds_0_turns_double_click_protection_off(gateway):
    gateway.configure(dial={"dedupe_seconds": "0"})
    gateway.post(call())
    gateway.post(call())
    assert len(gateway.originates()) == 2


# --- Asterisk failing --------------------------------------------------------------------

def test_login_refused_is_502_and_gives_the_ani_back(gateway):
    gateway.fault("refuse-login")
    body = gateway.post(call(), status=502).json
    assert body["status"] == "502 Bad Gateway"
    assert "Authentication failed" in body["error"]
    assert AMI_SECRET not in json.dumps(body)
    assert gateway.originates() == []
    assert sum(gateway.usage().values()) == 0


def test_originate_rejected_is_502_with_asterisks_message(gateway):
    gateway.fault("originate-error=Permission denied")
    body = gateway.post(call(), status=502).json
    assert "Permission denied" in body["error"]
    assert body["message"] == "We fail on making a call. caller : 2001, callee : 12127773456"
    assert sum(gateway.usage().values()) == 0


def test_closed_ami_port_is_503_and_gives_the_ani_back(gateway):
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    closed_port = probe.getsockname()[1]
    probe.close()
    gateway.configure(ami_port=closed_port)
    body = gateway.post(call(), status=503).json
    assert body["status"] == "503 Service Unavailable"
    assert sum(gateway.usage().values()) == 0


def test_silent_asterisk_is_503_within_the_ami_deadline(gateway):
    gateway.configure(ami={"connect_timeout": "0.5", "timeout": "0.5"})
    gateway.fault("no-banner")
    started = time.monotonic()
    gateway.post(call(), status=503)
    assert time.monotonic() - started < 1.5
    assert sum(gateway.usage().values()) == 0


def test_jsonrpc_pbx_refusal_is_32002_with_legacy_data(gateway):
    gateway.fault("originate-error=Extension does not exist.")
    answer = gateway.post(rpc(id=9)).json
    assert answer["error"]["code"] == -32002
    assert answer["error"]["data"]["status"] == "502 Bad Gateway"
    assert "Extension does not exist." in answer["error"]["data"]["error"]


def test_retry_after_a_failure_is_not_swallowed_as_a_double_click(gateway):
    gateway.fault("refuse-login")
    gateway.post(call(), status=502)
    gateway.sandbox.clear_faults("refuse-login")
    gateway.post(call())
    assert len(gateway.originates()) == 1


# --- a broken config ---------------------------------------------------------------------

def test_broken_config_is_a_500_json_naming_file_and_line(gateway, tmp_path):
    path = tmp_path / "broken.ini"
    path.write_text(config_text(tmp_path, gateway.sandbox.port, dial={"bogus_key": "1"}))
    line = path.read_text().splitlines().index("bogus_key = 1") + 1
    app = webtest.TestApp(create_app(config_path=str(path)))
    body = gateway.post(call(), app=app, status=500, expect_errors=True).json
    assert "%s:%d" % (path, line) in body["error"]
    assert "bogus_key" in body["error"]
    assert gateway.sandbox.actions == []


def test_missing_config_file_is_a_500_json_naming_the_file(gateway, tmp_path):
    path = tmp_path / "nowhere.ini"
    app = webtest.TestApp(create_app(config_path=str(path)))
    body = gateway.post(call(), app=app, status=500, expect_errors=True).json
    assert str(path) in body["error"]


def test_unknown_default_region_is_a_500_naming_file_and_line(tmp_path, sandbox, keys_file):
    from testconfig import config_text
    path = tmp_path / "region.ini"
    path.write_text(config_text(tmp_path, sandbox.port, dial={"default_region": "XX"}))
    app = webtest.TestApp(create_app(str(path)))
    response = app.post("/api/v1/asteriskapi.pl",
                        json.dumps({"extension": "2001", "destination": "2125550199"}),
                        headers={"api-key": TEST_API_KEY}, status=500, expect_errors=True)
    line = [n for n, text in enumerate(path.read_text().splitlines(), 1)
            if text.startswith("default_region")][0]
    assert "%s:%d: [dial] default_region 'XX' is not a region" % (path, line) \
        in response.json["error"]
    assert sandbox.actions_named("Originate") == []


def test_a_config_error_reply_still_names_caller_and_callee(tmp_path):
    path = tmp_path / "broken.ini"
    path.write_text("[nonsense]\n")
    app = webtest.TestApp(create_app(str(path)))
    response = app.post("/api/v1/asteriskapi.pl",
                        json.dumps({"extension": "2001", "destination": "12127773456"}),
                        headers={"api-key": TEST_API_KEY}, status=500, expect_errors=True)
    assert response.json["message"] == ("We fail on making a call. caller : 2001, "
                                        "callee : 12127773456")
    assert "%s:1: unknown section [nonsense]" % path in response.json["error"]


@pytest.mark.parametrize("fault", ["no-banner", "slow-originate=1.5"])
def test_a_jsonrpc_batch_is_answered_within_one_ami_deadline(gateway, fault):
    # SPEC §4.6: the worker never waits longer than connect_timeout + timeout (1 + 2 s
    # here), however many calls the batch holds.
    gateway.fault(fault)
    batch = [{"jsonrpc": "2.0", "method": "originate", "id": n,
              "params": {"extension": "2001", "destination": "1212555%04d" % n}}
             for n in range(4)]
    started = time.monotonic()
    response = gateway.post(batch)
    elapsed = time.monotonic() - started
    assert elapsed < 1 + 2 + 0.5, elapsed
    answers = response.json
    assert [a["id"] for a in answers] == [0, 1, 2, 3]
    assert all(a["error"]["code"] == -32003 for a in answers if "error" in a)
    assert any("error" in a for a in answers)


def test_a_missing_keys_file_is_a_500_naming_it_not_a_401(gateway, tmp_path):
    gateway.configure(auth={"keys_file": str(tmp_path / "nowhere" / "api-keys")})
    body = gateway.post(call(), status=500, expect_errors=True).json
    assert "nowhere/api-keys: keys file not found" in body["error"]
    assert gateway.originates() == []


def test_a_state_dir_that_cannot_be_written_is_a_500_naming_it(gateway, tmp_path):
    blocked = tmp_path / "blocked"
    blocked.write_text("a file, not a directory")
    gateway.configure(state={"dir": str(blocked)})
    body = gateway.post(call(), status=500, expect_errors=True).json
    assert "cannot use the state dir %s" % blocked in body["error"]
    assert gateway.originates() == []


def test_an_unconfirmed_originate_is_a_503_that_names_its_uniqueid(gateway):
    gateway.fault("slow-originate=3")  # the reply comes after the 2 s timeout
    body = gateway.post(call(), status=503, expect_errors=True).json
    assert "may have been placed" in body["error"]
    (originate,) = gateway.originates()
    assert body["uniqueid"] == originate["ChannelId"]
    assert sum(gateway.usage().values()) == 1  # the caller ID keeps its count


def test_a_guernsey_mobile_gets_a_caller_id_from_the_gb_pool(gateway):
    gateway.configure(ani={"GB": "442071234567"})
    body = gateway.post(call("+447911123456")).json
    assert (body["icon"], body["country_code"]) == ("GG", 44)  # as phonenumbers says
    assert body["caller_id"] == "442071234567"


def test_an_api_key_with_a_control_character_is_a_400_naming_it(gateway):
    # (A header cannot carry one; a body field can.)
    body = gateway.post(call(api_key=TEST_API_KEY + "\r\nAction: Originate"), key=None,
                        status=400, expect_errors=True).json
    assert body["field"] == "api-key" and "CR, LF or NUL" in body["error"]
    assert gateway.originates() == []
