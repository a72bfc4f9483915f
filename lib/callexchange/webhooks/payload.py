"""What a webhook says: the legacy body of a connect or hangup, its extended fields, the
disposition and duration read from Asterisk's channel variables. Pure functions.

Imported by the hook: stdlib only, nothing slow to import.
"""

import time

from callexchange import percent
from callexchange.recordings.names import recording_url
from callexchange.webhooks.spool import call_key, dumps_compact


EVENTS = ("connect", "hangup")
DISPOSITIONS = ("answered", "busy", "no_answer", "congestion", "failed")


# Channel variables the hook reads (GET FULL VARIABLE). The CX_* ones come from the Originate
# (call.py) or the dialplan (CX_RECORDING); the others are Asterisk's own.
CALL_VARIABLES = ("CX_UNIQUEID", "CX_DESTINATION", "CX_EXTENSION", "CX_ANI", "CX_CRM_ID",
                  "CX_RECORDING")


# CX_CONNECTED_AT / CX_ENDED_AT: when the second leg answered and when the call ended
# (epoch seconds with milliseconds, stamped by the dialplan); CX_LEG_CAUSE: the Q.850
# cause of the leg that did not connect (the channel's own HANGUPCAUSE is 16 by then).
HANGUP_VARIABLES = ("DIALSTATUS", "ANSWEREDTIME", "HANGUPCAUSE", "REASON", "CX_CONNECTED_AT",
                    "CX_ENDED_AT", "CX_LEG_CAUSE")


# Dial()'s DIALSTATUS; the cause of the leg that failed (CX_LEG_CAUSE); the
# OriginateResponse / `failed` extension REASON (Asterisk's AST_CONTROL_* codes, 0 for a
# busy phone); the Q.850 HANGUPCAUSE, in that order of preference.
_BY_DIALSTATUS = {"ANSWER": "answered", "BUSY": "busy", "NOANSWER": "no_answer",
                  "CANCEL": "no_answer", "CONGESTION": "congestion", "CHANUNAVAIL": "failed",
                  "DONTCALL": "failed", "TORTURE": "failed", "INVALIDARGS": "failed"}


_BY_REASON = {"0": "failed", "1": "no_answer", "3": "no_answer", "4": "answered",
              "5": "busy", "8": "congestion"}


# (16, normal clearing, says nothing of an answer: without DIALSTATUS it is "failed".)
_BY_CAUSE = {17: "busy", 18: "no_answer", 19: "no_answer", 21: "busy", 34: "congestion",
             38: "congestion", 41: "congestion", 42: "congestion", 44: "congestion"}


_CAUSE_BY_DISPOSITION = {"answered": 16, "busy": 17, "no_answer": 19, "congestion": 34}


def _whole(text, default=0):
    try:
        return int(float(text))
    except (TypeError, ValueError):
        return default


def disposition(variables):
    """How the call ended, from DIALSTATUS, else the failed leg's cause CX_LEG_CAUSE, else
    REASON (the `failed` path), else HANGUPCAUSE: one of DISPOSITIONS.

    >>> disposition({"DIALSTATUS": "NOANSWER"})
    'no_answer'
    >>> disposition({"DIALSTATUS": "", "REASON": "5"})
    'busy'
    >>> disposition({"REASON": "0", "CX_LEG_CAUSE": "17"})  # a busy agent, agent first
    'busy'
    """
    status = (variables.get("DIALSTATUS") or "").strip().upper()
    if status in _BY_DIALSTATUS:
        return _BY_DIALSTATUS[status]
    leg_cause = _whole(variables.get("CX_LEG_CAUSE"), 0)
    if leg_cause in _BY_CAUSE:
        return _BY_CAUSE[leg_cause]
    reason = (variables.get("REASON") or "").strip()
    if reason in _BY_REASON:
        return _BY_REASON[reason]
    if _whole(variables.get("ANSWEREDTIME"), -1) > 0:
        return "answered"
    return _BY_CAUSE.get(_whole(variables.get("HANGUPCAUSE"), 0), "failed")


def _seconds(text):
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def duration(variables, answered):
    """Whole seconds talked, rounded: from the second leg's answer to the call's end
    (CX_CONNECTED_AT to CX_ENDED_AT, the dialplan's stamps); without them ANSWEREDTIME
    (Dial's, which also counts the ring of the second leg), else CDR(billsec); 0 if not
    answered.

    >>> duration({"CX_CONNECTED_AT": "1732700005.120", "CX_ENDED_AT": "1732700009.131",
    ...           "ANSWEREDTIME": "7"}, True)
    4
    >>> duration({"ANSWEREDTIME": "7"}, True), duration({"ANSWEREDTIME": "7"}, False)
    (7, 0)
    """
    if not answered:
        return 0
    connected = _seconds(variables.get("CX_CONNECTED_AT"))
    ended = _seconds(variables.get("CX_ENDED_AT"))
    if connected is not None and ended is not None and ended >= connected:
        return int(ended - connected + 0.5)
    for name in ("ANSWEREDTIME", "CDR(billsec)"):
        seconds = _whole(variables.get(name), -1)
        if seconds >= 0:
            return seconds
    return 0


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
        "crm_id": percent.decode(variables.get("CX_CRM_ID", "")),
        "recording_url": recording_url(base_url, variables.get("CX_RECORDING", ""))
        if answered else "",
    }
    if event == "connect":
        call["sequence"] = 1
    else:
        state = disposition(variables)
        call["disposition"] = state
        call["duration"] = duration(variables, state == "answered")
        call["hangup_cause"] = hangup_cause(variables, state)
        call["sequence"] = 2 if state == "answered" else 1
    return call


def hangup_cause(variables, state):
    """The Q.850 cause that goes with the disposition `state`: for an answered call the
    channel's HANGUPCAUSE; otherwise the cause of the leg that did not connect
    (CX_LEG_CAUSE), not the channel's own (16, normal clearing, once its Dial gave up),
    else the cause the disposition stands for (17 busy, 19 no answer, 34 congestion).

    >>> hangup_cause({"HANGUPCAUSE": "16", "CX_LEG_CAUSE": "0"}, "no_answer")
    19
    >>> hangup_cause({"HANGUPCAUSE": "16", "CX_LEG_CAUSE": "20"}, "failed")
    20
    >>> hangup_cause({"HANGUPCAUSE": "16"}, "answered")
    16
    """
    own = _whole(variables.get("HANGUPCAUSE"), 0)
    if state == "answered":
        return own if 0 < own <= 127 else 16
    leg = _whole(variables.get("CX_LEG_CAUSE"), 0)
    if 0 < leg <= 127 and leg != 16:
        return leg
    if state in _CAUSE_BY_DISPOSITION:
        return _CAUSE_BY_DISPOSITION[state]
    # `failed` without a leg's cause (the channel could not even be created): the
    # channel's own if it says more than normal clearing, else 0 ("unknown").
    return own if 0 < own <= 127 and own != 16 else 0


def unanswered_recording(variables, root):
    """The path of the recording file a call that never connected must not leave behind
    (dialer mode starts MixMonitor on the Local ;1 before the agent's phone rings; it
    writes only once the agent is bridged, but opens the file at once), else None.

    >>> unanswered_recording({"DIALSTATUS": "NOANSWER", "CX_RECORDING": "2024/07/03/out-x.wav"},
    ...                      "/var/spool/asterisk/monitor")
    '/var/spool/asterisk/monitor/2024/07/03/out-x.wav'
    >>> unanswered_recording({"DIALSTATUS": "ANSWER", "CX_RECORDING": "2024/07/03/out-x.wav"},
    ...                      "/var/spool/asterisk/monitor") is None
    True
    """
    relative = (variables.get("CX_RECORDING") or "").lstrip("/")
    if not relative or not root or ".." in relative.split("/"):
        return None
    if disposition(variables) == "answered":
        return None
    return root.rstrip("/") + "/" + relative


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
