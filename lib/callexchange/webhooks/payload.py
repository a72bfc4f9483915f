"""What a webhook says: the legacy body of a connect or hangup, its extended fields, the
disposition and duration read from Asterisk's channel variables. Pure functions.

Imported by the hook: stdlib only, nothing slow to import.
"""

import time

from callexchange.webhooks.spool import call_key, dumps_compact


EVENTS = ("connect", "hangup")
DISPOSITIONS = ("answered", "busy", "no_answer", "congestion", "failed")


# Channel variables the hook reads (GET FULL VARIABLE). The CX_* ones come from the Originate
# (call.py) or the dialplan (CX_RECORDING); the others are Asterisk's own.
CALL_VARIABLES = ("CX_UNIQUEID", "CX_DESTINATION", "CX_EXTENSION", "CX_ANI", "CX_CRM_ID",
                  "CX_RECORDING")


HANGUP_VARIABLES = ("DIALSTATUS", "ANSWEREDTIME", "HANGUPCAUSE", "REASON")


# Dial()'s DIALSTATUS; the OriginateResponse / `failed` extension REASON (Asterisk's
# AST_CONTROL_* codes); the Q.850 HANGUPCAUSE, in that order of preference.
_BY_DIALSTATUS = {"ANSWER": "answered", "BUSY": "busy", "NOANSWER": "no_answer",
                  "CANCEL": "no_answer", "CONGESTION": "congestion", "CHANUNAVAIL": "failed",
                  "DONTCALL": "failed", "TORTURE": "failed", "INVALIDARGS": "failed"}


_BY_REASON = {"0": "failed", "1": "no_answer", "3": "no_answer", "4": "answered",
              "5": "busy", "8": "congestion"}


# (16, normal clearing, says nothing of an answer: without DIALSTATUS it is "failed".)
_BY_CAUSE = {17: "busy", 18: "no_answer", 19: "no_answer", 21: "busy", 34: "congestion",
             38: "congestion", 41: "congestion", 42: "congestion", 44: "congestion"}


_CAUSE_BY_DISPOSITION = {"answered": 16, "busy": 17, "no_answer": 19, "congestion": 34}
_URL_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~/")


def percent_decode(text):
    """The crm_id as the CRM sent it (call.py percent-encodes it for Asterisk).

    >>> percent_decode("lead%207%2C%20NY")
    'lead 7, NY'
    """
    if "%" not in text:
        return text
    out = bytearray()
    i = 0
    while i < len(text):
        c = text[i]
        if c == "%" and _is_hex(text[i + 1:i + 3]):
            out.append(int(text[i + 1:i + 3], 16))
            i += 3
        else:
            out += c.encode("utf-8")
            i += 1
    return out.decode("utf-8", "replace")


def _is_hex(pair):
    return len(pair) == 2 and all(c in "0123456789abcdefABCDEF" for c in pair)


def _whole(text, default=0):
    try:
        return int(float(text))
    except (TypeError, ValueError):
        return default


def disposition(variables):
    """How the call ended, from DIALSTATUS, else REASON (the `failed` path), else
    HANGUPCAUSE: one of DISPOSITIONS.

    >>> disposition({"DIALSTATUS": "NOANSWER"})
    'no_answer'
    >>> disposition({"DIALSTATUS": "", "REASON": "5"})
    'busy'
    """
    status = (variables.get("DIALSTATUS") or "").strip().upper()
    if status in _BY_DIALSTATUS:
        return _BY_DIALSTATUS[status]
    reason = (variables.get("REASON") or "").strip()
    if reason in _BY_REASON:
        return _BY_REASON[reason]
    if _whole(variables.get("ANSWEREDTIME"), -1) > 0:
        return "answered"
    return _BY_CAUSE.get(_whole(variables.get("HANGUPCAUSE"), 0), "failed")


def duration(variables, answered):
    """Whole seconds talked: ANSWEREDTIME (Dial's), else CDR(billsec); 0 if not answered."""
    if not answered:
        return 0
    for name in ("ANSWEREDTIME", "CDR(billsec)"):
        seconds = _whole(variables.get(name), -1)
        if seconds >= 0:
            return seconds
    return 0


def recording_url(base_url, relative_path):
    """The recording's URL as find_phone_files.pl lists it: `[recordings] base_url` + the
    path under the recording root ("" when the call has no recording)."""
    if not relative_path:
        return ""
    quoted = "".join(c if c in _URL_SAFE else "".join("%%%02X" % b for b in c.encode("utf-8"))
                     for c in relative_path.lstrip("/"))
    return (base_url.rstrip("/") + "/" if base_url else "") + quoted


def build_body(event, call, extended=False):
    """The JSON body (str) of a webhook, compact, fields in the legacy document's order:

    connect  {"dialed_number","extension","caller_id","uniqueid"}
    hangup   {"dialed_number","extension","duration","caller_id","uniqueid"}

    With `extended`, then: event, timestamp, sequence, crm_id, (hangup: disposition,
    hangup_cause,) recording_url. `call` is a dict with those names (see `call_event`).

    >>> build_body("connect", {"dialed_number": "12127773456", "extension": "2001",
    ...     "caller_id": "12125550100", "uniqueid": "1732700000.483920174622"})
    '{"dialed_number":"12127773456","extension":"2001","caller_id":"12125550100","uniqueid":"1732700000.483920174622"}'
    """
    if event not in EVENTS:
        raise ValueError("unknown event %r" % event)
    body = {"dialed_number": call["dialed_number"], "extension": call["extension"]}
    if event == "hangup":
        body["duration"] = call["duration"]
    body["caller_id"] = call["caller_id"]
    body["uniqueid"] = call["uniqueid"]
    if extended:
        body["event"] = event
        body["timestamp"] = call["timestamp"]
        body["sequence"] = call["sequence"]
        body["crm_id"] = call["crm_id"]
        if event == "hangup":
            body["disposition"] = call["disposition"]
            body["hangup_cause"] = call["hangup_cause"]
        body["recording_url"] = call["recording_url"]
    return dumps_compact(body)


def call_event(event, variables, occurred, base_url=""):
    """Everything the bodies of `event` need, from the channel variables the hook read.

    A hangup's sequence is 2 when the call was answered (its connect came first), else 1.
    """
    answered = event == "connect" or disposition(variables) == "answered"
    call = {
        "dialed_number": variables.get("CX_DESTINATION", ""),
        "extension": variables.get("CX_EXTENSION", ""),
        "caller_id": variables.get("CX_ANI", ""),
        "uniqueid": variables.get("CX_UNIQUEID", ""),
        "timestamp": int(occurred),
        "crm_id": percent_decode(variables.get("CX_CRM_ID", "")),
        "recording_url": recording_url(base_url, variables.get("CX_RECORDING", ""))
        if answered else "",
    }
    if event == "connect":
        call["sequence"] = 1
    else:
        state = disposition(variables)
        call["disposition"] = state
        call["duration"] = duration(variables, state == "answered")
        cause = _whole(variables.get("HANGUPCAUSE"), 0)
        if not 0 < cause <= 127:
            # The `failed` path of an Originate has no HANGUPCAUSE: give the Q.850 cause
            # that goes with the disposition rather than 0 ("unknown").
            cause = _CAUSE_BY_DISPOSITION.get(state, 0)
        call["hangup_cause"] = cause
        call["sequence"] = 2 if state == "answered" else 1
    return call


def webhook_id(uniqueid, event):
    """`webhook-id`: the same for every attempt of one event, unique per event.

    >>> webhook_id("1732700000.483920174622", "hangup")
    'msg_1732700000.483920174622_hangup'
    """
    return "msg_%s_%s" % (call_key(uniqueid), event)


def make_record(event, variables, webhook_config, recordings_base_url="", now=None):
    """The spool record of one event: {"v","id","event","call","occurred","body"}."""
    occurred = int(time.time() if now is None else now)
    call = call_event(event, variables, occurred, recordings_base_url)
    return {
        "v": 1,
        "id": webhook_id(call["uniqueid"], event),
        "event": event,
        "call": call["uniqueid"],
        "occurred": occurred,
        "body": build_body(event, call, webhook_config.extended),
    }
