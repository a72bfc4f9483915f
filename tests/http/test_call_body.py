"""The request body's forms: a JSON object whatever the Content-Type, a form, what a
malformed body gets, the size limit, and the method."""

import json

import pytest

from call_gateway import URL, check_reply, call
from testconfig import TEST_API_KEY


def test_json_object_is_read_whatever_the_content_type(gateway):
    gateway.post(call(), content_type="text/plain")
    gateway.post(call("12127773457"), content_type="application/octet-stream")
    assert len(gateway.originates()) == 2


@pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=utf-8",
                                          "application/x-www-form-urlencoded"])
def test_a_utf8_byte_order_mark_before_the_body_is_read_past(gateway, content_type):
    # .NET's Encoding.UTF8 and Windows tools write one first; it only says "UTF-8".
    bom = b"\xef\xbb\xbf"
    if "json" in content_type:
        body = bom + json.dumps(call(msg="caf\u00e9")).encode("utf-8")
    else:
        body = bom + b"extension=2001&destination=12127773456&msg=caf%C3%A9"
    assert gateway.post(body, content_type=content_type).json["status"] == "true"
    assert gateway.sandbox.actions_named("MessageSend")[0]["Body"] == "caf\u00e9"


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
