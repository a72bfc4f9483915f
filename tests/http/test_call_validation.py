"""Which requests are refused before anything reaches Asterisk, and how: the api-key
(where it may come from), missing parameters named exactly, and each typed field
(call_in_out, voice_pitch, msg, extension, crm_id) with its limits and control
characters."""

import pytest

from call_gateway import URL, MISSING_ERROR, call, variables
from testconfig import TEST_API_KEY


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


def test_an_api_key_with_a_control_character_is_a_400_naming_it(gateway):
    # (A header cannot carry one; a body field can.)
    body = gateway.post(call(api_key=TEST_API_KEY + "\r\nAction: Originate"), key=None,
                        status=400, expect_errors=True).json
    assert body["field"] == "api-key" and "CR, LF or NUL" in body["error"]
    assert gateway.originates() == []
