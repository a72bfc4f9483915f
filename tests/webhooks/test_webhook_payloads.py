"""The webhook bodies and headers (SPEC §6), byte for byte.

The signature is checked with the official Standard Webhooks library (`standardwebhooks`,
through crm_standin.verify), not with the code under test; the bodies against the JSON
Schemas of docs/openapi.yaml.
"""

import base64
import hashlib
import hmac
import json
import time

import pytest
from hypothesis import given, strategies as st

from callexchange.webhooks import signing
from callexchange.webhooks.spool import dumps_compact
from callexchange.webhooks.payload import build_body, call_event, disposition, make_record
from callexchange.webhooks.signing import request_headers, signing_key
from crm_standin import verify
from schemas import validate
from standardwebhooks.webhooks import WebhookVerificationError

UNIQUEID = "1732700000.483920174622"
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VARIABLES = {"CX_UNIQUEID": UNIQUEID, "CX_DESTINATION": "12127773456", "CX_EXTENSION": "2001",
             "CX_ANI": "12125550100", "CX_CRM_ID": "lead%207%2C%20NY",
             "CX_RECORDING": "2024/11/27/out-12127773456-2001-20241127-093320-%s.wav" % UNIQUEID}
ANSWERED = dict(VARIABLES, DIALSTATUS="ANSWER", ANSWEREDTIME="25", HANGUPCAUSE="16")
BASE_URL = "https://pbx.example.test/wav-files"


class Settings:
    def __init__(self, extended):
        self.extended = extended


# --- the legacy bodies --------------------------------------------------------------------

def test_connect_body_is_exactly_the_legacy_fields():
    record = make_record("connect", VARIABLES, Settings(False), BASE_URL, now=1732700001)
    assert record["body"] == ('{"dialed_number":"12127773456","extension":"2001",'
                              '"caller_id":"12125550100","uniqueid":"%s"}' % UNIQUEID)
    validate("ConnectEvent", json.loads(record["body"]))
    assert record["id"] == "msg_%s_connect" % UNIQUEID


def test_hangup_body_adds_duration_in_the_legacy_order():
    record = make_record("hangup", ANSWERED, Settings(False), BASE_URL, now=1732700026)
    assert record["body"] == ('{"dialed_number":"12127773456","extension":"2001",'
                              '"duration":25,"caller_id":"12125550100","uniqueid":"%s"}'
                              % UNIQUEID)
    validate("HangupEvent", json.loads(record["body"]))


@pytest.mark.parametrize("extra, state", [
    ({"DIALSTATUS": "BUSY", "HANGUPCAUSE": "17"}, "busy"),
    ({"DIALSTATUS": "NOANSWER", "HANGUPCAUSE": "19"}, "no_answer"),
    ({"DIALSTATUS": "CANCEL"}, "no_answer"),
    ({"DIALSTATUS": "CONGESTION", "HANGUPCAUSE": "34"}, "congestion"),
    ({"DIALSTATUS": "CHANUNAVAIL"}, "failed"),
    ({"REASON": "5"}, "busy"),         # the `failed` extension after a failed Originate
    ({"REASON": "3"}, "no_answer"),
    ({"REASON": "8"}, "congestion"),
    ({"REASON": "0"}, "failed"),
    ({}, "failed"),
])
def test_a_call_that_never_connected_has_duration_0(extra, state):
    variables = dict(VARIABLES, **extra)
    body = json.loads(make_record("hangup", variables, Settings(True), BASE_URL,
                                  now=1732700003)["body"])
    assert body["duration"] == 0
    assert body["disposition"] == state
    assert body["sequence"] == 1 and body["recording_url"] == ""
    validate("HangupEvent", body)


def test_extended_connect_body():
    record = make_record("connect", VARIABLES, Settings(True), BASE_URL, now=1732700001)
    assert record["body"] == (
        '{"dialed_number":"12127773456","extension":"2001","caller_id":"12125550100",'
        '"uniqueid":"%s","event":"connect","timestamp":1732700001,"sequence":1,'
        '"crm_id":"lead 7, NY","recording_url":"%s/2024/11/27/'
        'out-12127773456-2001-20241127-093320-%s.wav"}' % (UNIQUEID, BASE_URL, UNIQUEID))
    validate("ConnectEvent", json.loads(record["body"]))


def test_extended_hangup_body():
    record = make_record("hangup", ANSWERED, Settings(True), BASE_URL, now=1732700026)
    assert record["body"] == (
        '{"dialed_number":"12127773456","extension":"2001","duration":25,'
        '"caller_id":"12125550100","uniqueid":"%s","event":"hangup","timestamp":1732700026,'
        '"sequence":2,"crm_id":"lead 7, NY","disposition":"answered","hangup_cause":16,'
        '"recording_url":"%s/2024/11/27/out-12127773456-2001-20241127-093320-%s.wav"}'
        % (UNIQUEID, BASE_URL, UNIQUEID))
    validate("HangupEvent", json.loads(record["body"]))


def test_non_ascii_crm_id_is_sent_as_utf8_not_escaped():
    variables = dict(VARIABLES, CX_CRM_ID="K%C3%B6ln%20%E2%9C%93")
    body = make_record("connect", variables, Settings(True), "", now=1)["body"]
    assert '"crm_id":"Köln ✓"' in body


def test_duration_falls_back_to_cdr_billsec():
    variables = dict(VARIABLES, DIALSTATUS="ANSWER", ANSWEREDTIME="")
    variables["CDR(billsec)"] = "42"
    assert call_event("hangup", variables, 1)["duration"] == 42


def test_hangup_cause_out_of_range_falls_back_to_the_dispositions_cause():
    variables = dict(ANSWERED, HANGUPCAUSE="999")
    assert call_event("hangup", variables, 1)["hangup_cause"] == 16


@pytest.mark.parametrize("reason, disposition, cause", [
    ("5", "busy", 17), ("3", "no_answer", 19), ("8", "congestion", 34), ("0", "failed", 0)])
def test_a_failed_originate_gets_the_q850_cause_of_its_disposition(reason, disposition, cause):
    # The `failed` path: no DIALSTATUS, no HANGUPCAUSE, only the Originate's REASON.
    variables = dict(VARIABLES, REASON=reason)
    call = call_event("hangup", variables, 1)
    assert (call["disposition"], call["hangup_cause"], call["duration"]) == (disposition, cause, 0)


def test_disposition_prefers_dialstatus_then_reason_then_cause():
    assert disposition({"DIALSTATUS": "ANSWER", "REASON": "5"}) == "answered"
    assert disposition({"REASON": "5", "HANGUPCAUSE": "34"}) == "busy"
    assert disposition({"HANGUPCAUSE": "17"}) == "busy"
    assert disposition({"HANGUPCAUSE": "16"}) == "failed"


# What the hook reads at hangup on a real Asterisk 22 (tests/asterisk/ runs these calls),
# and what the webhook must then say (issue 8, D4-D6).
@pytest.mark.parametrize("case, variables, disposition_, cause", [
    ("agent first, lead busy: the agent's own cause is 16",
     {"DIALSTATUS": "BUSY", "HANGUPCAUSE": "16", "CX_LEG_CAUSE": "0"}, "busy", 17),
    ("agent first, lead does not answer",
     {"DIALSTATUS": "NOANSWER", "HANGUPCAUSE": "16", "CX_LEG_CAUSE": "0"}, "no_answer", 19),
    ("agent first, lead congested",
     {"DIALSTATUS": "CONGESTION", "HANGUPCAUSE": "16", "CX_LEG_CAUSE": "0"}, "congestion", 34),
    ("agent first, lead unreachable (subscriber absent)",
     {"DIALSTATUS": "CHANUNAVAIL", "HANGUPCAUSE": "16", "CX_LEG_CAUSE": "20"}, "failed", 20),
    ("agent first, agent busy: Asterisk's REASON is 0 for a SIP 486",
     {"REASON": "0", "CX_LEG_CAUSE": "17"}, "busy", 17),
    ("agent first, agent does not answer",
     {"REASON": "3", "CX_LEG_CAUSE": "19"}, "no_answer", 19),
    ("agent first, agent offline: no channel, no cause", {"REASON": "0"}, "failed", 0),
    ("dialer, lead does not answer: REASON 0, the lead's DIALSTATUS carried",
     {"REASON": "0", "DIALSTATUS": "NOANSWER", "CX_LEG_CAUSE": "0"}, "no_answer", 19),
    ("dialer, lead unreachable",
     {"REASON": "0", "DIALSTATUS": "CHANUNAVAIL", "CX_LEG_CAUSE": "20"}, "failed", 20),
    ("dialer, agent busy",
     {"DIALSTATUS": "BUSY", "HANGUPCAUSE": "16", "CX_LEG_CAUSE": "17"}, "busy", 17),
    ("dialer, agent offline",
     {"DIALSTATUS": "CHANUNAVAIL", "HANGUPCAUSE": "16", "CX_LEG_CAUSE": "3"}, "failed", 3),
])
def test_disposition_and_cause_of_calls_that_never_connected(case, variables, disposition_,
                                                            cause):
    call = call_event("hangup", dict(VARIABLES, **variables), 1)
    assert (call["disposition"], call["hangup_cause"], call["duration"]) == \
        (disposition_, cause, 0), case
    assert call["recording_url"] == ""


def test_duration_is_the_talk_time_from_the_stamps_not_answeredtime():
    # Agent first: ANSWEREDTIME (7) counts from the agent's answer, so it holds the
    # lead's 3 s of ringing; the talk was 4.01 s (issue 8, D4).
    variables = dict(ANSWERED, ANSWEREDTIME="7", CX_CONNECTED_AT="1732700005.020",
                     CX_ENDED_AT="1732700009.031")
    call = call_event("hangup", variables, 1)
    assert (call["disposition"], call["duration"], call["hangup_cause"]) == ("answered", 4, 16)
    assert call_event("hangup", dict(variables, CX_ENDED_AT="1732700007.6"), 1)["duration"] == 3
    # Without the stamps (an older dialplan): ANSWEREDTIME as before.
    assert call_event("hangup", ANSWERED, 1)["duration"] == 25


@given(st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4), max_leaves=12))
def test_dumps_compact_writes_what_json_dumps_writes(value):
    assert dumps_compact(value) == json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def test_body_builder_rejects_unknown_events():
    with pytest.raises(ValueError):
        build_body("ringing", {})


# --- headers and the signature ------------------------------------------------------------

def test_headers_and_signature_verify_with_the_official_library():
    record = make_record("hangup", ANSWERED, Settings(False), BASE_URL, now=1732700026)
    headers = request_headers(record, signing_key(SECRET), now=1732700027.8)
    assert headers["webhook-id"] == "msg_%s_hangup" % UNIQUEID
    assert headers["webhook-timestamp"] == "1732700027"  # the attempt's time, whole seconds
    assert headers["X-CallExchange-Event-Time"] == "1732700026"  # the event's
    assert headers["Content-Type"] == "application/json"
    assert headers["X-CallExchange-Event"] == "hangup"
    body = record["body"].encode("utf-8")
    assert verify(headers, body, now=1732700030)["duration"] == 25
    # The exact value, computed here by hand.
    key = base64.b64decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    digest = hmac.new(key, b"msg_%s_hangup.1732700027.%s" % (UNIQUEID.encode(), body),
                      hashlib.sha256).digest()
    assert headers["webhook-signature"] == "v1," + base64.b64encode(digest).decode()


@pytest.mark.parametrize("tamper", ["body", "id", "timestamp", "secret"])
def test_a_tampered_request_does_not_verify(tamper):
    record = make_record("connect", VARIABLES, Settings(False), "", now=1732700001)
    headers = request_headers(record, signing_key(SECRET), now=1732700001)
    body = record["body"].encode()
    secret = SECRET
    if tamper == "body":
        body = body.replace(b"2001", b"2002")
    elif tamper == "id":
        headers["webhook-id"] = "msg_other_connect"
    elif tamper == "timestamp":
        headers["webhook-timestamp"] = "1732700002"
    else:
        secret = signing.new_secret()
    with pytest.raises(WebhookVerificationError):
        verify(headers, body, secret=secret, now=1732700001)


def test_each_attempt_is_signed_afresh_with_its_own_time():
    # Standard Webhooks: webhook-timestamp is the attempt's; the event's time stays in
    # X-CallExchange-Event-Time and (extended) the body; webhook-id stays the event's.
    record = make_record("connect", VARIABLES, Settings(True), "", now=1732700001)
    first = request_headers(record, signing_key(SECRET), now=1732700001)
    record["attempts"] = 3
    retry = request_headers(record, signing_key(SECRET), now=1732700001 + 3600)
    assert retry["webhook-id"] == first["webhook-id"]
    assert retry["webhook-timestamp"] == "1732703601" != first["webhook-timestamp"]
    assert retry["webhook-signature"] != first["webhook-signature"]
    assert retry["X-CallExchange-Event-Time"] == first["X-CallExchange-Event-Time"] == \
        "1732700001"
    # A receiver an hour later, with the library's default tolerance, accepts the retry...
    body = verify(retry, record["body"].encode(), now=1732700001 + 3600 + 2)
    assert body["timestamp"] == 1732700001
    # ...and would refuse the first attempt's headers replayed then.
    with pytest.raises(WebhookVerificationError):
        verify(first, record["body"].encode(), now=1732700001 + 3600 + 2)


def test_without_a_secret_there_is_no_signature_header():
    record = make_record("connect", VARIABLES, Settings(False), "", now=1)
    assert "webhook-signature" not in request_headers(record, None, now=2)


def test_signing_key_accepts_the_whsec_form_and_refuses_garbage():
    assert signing_key(SECRET) == base64.b64decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    assert signing_key("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw") == signing_key(SECRET)
    for bad in ("whsec_not base64!", "whsec_"):
        with pytest.raises(ValueError):
            signing_key(bad)


def test_new_secret_is_whsec_and_24_bytes_or_more():
    secret = signing.new_secret()
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret[6:], validate=True)) >= 24


def test_the_event_time_header_is_the_event_time_in_whole_seconds():
    record = make_record("connect", VARIABLES, Settings(False), "")
    assert abs(record["occurred"] - time.time()) < 5
    record["occurred"] = 1732700001.9
    headers = request_headers(record, None, now=1732700099.5)
    assert headers["X-CallExchange-Event-Time"] == "1732700001"
    assert headers["webhook-timestamp"] == "1732700099"


@pytest.mark.parametrize("event", ["connect", "hangup"])
def test_every_header_sent_is_the_one_docs_openapi_describes(event):
    from paths import REPO

    with open(REPO / "docs" / "openapi.yaml", encoding="utf-8") as handle:
        doc = json.load(handle)
    documented = {p["name"].lower(): p for p in doc["webhooks"][event]["post"]["parameters"]
                  if p["in"] == "header"}
    record = make_record(event, ANSWERED, Settings(True), BASE_URL, now=1732700001)
    sent = {k.lower(): v for k, v in
            request_headers(record, signing_key(SECRET), now=1732700099).items()}
    ours = set(sent) - {"content-type", "user-agent"}
    assert ours == set(documented)
    for name, parameter in documented.items():
        if "pattern" in parameter["schema"]:
            import re
            assert re.fullmatch(parameter["schema"]["pattern"], sent[name]), name
        if "const" in parameter["schema"]:
            assert sent[name] == parameter["schema"]["const"]
    assert "attempt" in documented["webhook-timestamp"]["description"]
    assert sent["x-callexchange-event-time"] == "1732700001"

