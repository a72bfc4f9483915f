"""A sandbox call, step by step, as Asterisk 22 and the project's dialplan
(asterisk/extensions_callexchange.conf) play it: which channels appear, the AMI events a
`read = call` session sees and in which order, when the OriginateResponse comes and what
it says, when the dialplan's hook runs and with which channel variables.

`plan_call` is a pure function of the Originate, the outcomes chosen for the lead and
the agent, and the ring times; it returns the steps (`Step`) the call player
(`calls.CallPlayer`) then plays in real time. What it follows, from transcripts of a
real Asterisk 22.10.1 (tests/fixtures/ami/):

* the OriginateResponse comes when the Originate's channel (the first leg) answers, with
  its channel name (`PJSIP/2001-00000001`, `Local/...-00000002;1`), Reason 4; if it never
  answers, Asterisk first runs the `failed` extension on a channel of its own
  (`OutgoingSpoolFailed`), then sends a Failure with the dial string as sent and the
  Reason Asterisk gives: a PJSIP phone that is busy or unreachable 0, one that rings out
  3; a Local channel (dialer mode) whose lead is busy 5, congested 8, otherwise 0;
* agent first, the agent is the first leg: the lead's outcome never changes the
  OriginateResponse; in dialer mode the lead (through the Local channel) is;
* the hook gets what the dialplan gives it: connect when the second leg answers (with
  CX_CONNECTED_AT stamped), hangup from the first leg's hangup handler (DIALSTATUS,
  CX_CONNECTED_AT, CX_ENDED_AT, CX_LEG_CAUSE) or from the `failed` extension (REASON, and
  the first leg's DIALSTATUS and cause as the dialplan carries them through AstDB).

The events played are Newchannel, Newstate, DialBegin, DialEnd, Hangup and
OriginateResponse, with the channel snapshot headers Asterisk sends.
"""

from collections import namedtuple
from types import MappingProxyType

from callexchange.sandbox.dialplan import channel_technology_loaded

STATE_NAMES = MappingProxyType({0: "Down", 4: "Ring", 5: "Ringing", 6: "Up", 7: "Busy"})
CAUSE_TEXTS = MappingProxyType({
    0: "Unknown", 3: "No route to destination", 16: "Normal Clearing", 17: "User busy",
    19: "User alerting, no answer", 20: "Subscriber absent",
    34: "Circuit/channel congestion"})

Outcome = namedtuple("Outcome", "kind seconds")
Outcome.__doc__ = "How a sandbox call's lead ends: `kind` (LEAD_OUTCOMES), `seconds` talked."

LEAD_OUTCOMES = ("answered", "busy", "noanswer", "congestion", "failed")
AGENT_OUTCOMES = ("answered", "busy", "noanswer", "unreachable")
DEFAULT_TALK_SECONDS = 5.0
DEFAULT_OUTCOME = Outcome("answered", DEFAULT_TALK_SECONDS)
# The dialplan's defaults: CX_LEAD_RING (how long a lead may ring) and CX_TRUNK.
DEFAULT_LEAD_RING = 45.0
DEFAULT_TRUNK = "PJSIP/{number}@trunk"
# The context a PJSIP endpoint's channel shows before it runs any dialplan of ours.
ENDPOINT_CONTEXT = "default"

# Dial()'s DIALSTATUS and the Q.850 cause of a leg that did not connect.
_NOT_CONNECTED = MappingProxyType({
    "busy": ("BUSY", 17), "noanswer": ("NOANSWER", 19), "congestion": ("CONGESTION", 34),
    "failed": ("CHANUNAVAIL", 20), "unreachable": ("CHANUNAVAIL", 3)})
# A SIP phone's answer, as PJSIP reports it in Hangup's TechCause.
_SIP_CODES = MappingProxyType({"busy": "486", "noanswer": "480"})
# OriginateResponse Reason when the first leg never answered, by its technology.
_REASON_LOCAL = MappingProxyType({"busy": 5, "congestion": 8})
_REASON_DIRECT = MappingProxyType({"noanswer": 3})

Step = namedtuple("Step", "kind args")
Step.__doc__ = """One step of a call: `kind` and its `args`:
wait (seconds: a phone rings; cut short when the call is hung up), event (pairs: an AMI
event for every read=call session), response (pairs: the OriginateResponse, only for an
Async Originate), result (answered: the first leg's fate, for a synchronous Originate),
stamp (variable name: the epoch time with milliseconds, as STRFTIME(,,%s.%3q)), hook
(event, extra variables, agi environment keywords), talk (seconds, recording path or
None)."""

Request = namedtuple("Request", "action_id channel context exten application data "
                                "caller_num caller_name uniqueid timeout variables "
                                "asynchronous account")
Request.__doc__ = """An Originate as the sandbox read it: `channel` the dial string,
`timeout` seconds, `variables` {name: value} (leading underscores removed),
`caller_num`/`caller_name` as Asterisk splits CallerID ('<unknown>' when absent)."""


class Channel:
    """A channel of the call, as its AMI snapshot headers show it."""

    def __init__(self, name, uniqueid, linkedid, context, exten, state=0,
                 caller=("<unknown>", "<unknown>"), connected=("<unknown>", "<unknown>"),
                 account=""):
        self.name = name
        self.uniqueid = uniqueid
        self.linkedid = linkedid
        self.context = context
        self.exten = exten
        self.state = state
        self.caller = caller
        self.connected = connected
        self.account = account
        self.technology = name.partition("/")[0]

    def snapshot(self, prefix=""):
        """The channel's headers (`Dest` prefixed in DialBegin/DialEnd)."""
        return [(prefix + name, value) for name, value in (
            ("Channel", self.name), ("ChannelState", str(self.state)),
            ("ChannelStateDesc", STATE_NAMES.get(self.state, "Unknown")),
            ("CallerIDNum", self.caller[0]), ("CallerIDName", self.caller[1]),
            ("ConnectedLineNum", self.connected[0]), ("ConnectedLineName", self.connected[1]),
            ("Language", "en"), ("AccountCode", self.account), ("Context", self.context),
            ("Exten", self.exten), ("Priority", "1"), ("Uniqueid", self.uniqueid),
            ("Linkedid", self.linkedid))]


def _event(name, *parts):
    pairs = [("Event", name), ("Privilege", "call,all")]
    for part in parts:
        pairs.extend(part)
    return pairs


def caller_id_parts(text):
    """CallerID as Asterisk splits it: '"Sales" <4930123>' -> ('4930123', 'Sales');
    '4930123' -> ('4930123', '<unknown>'); '' -> ('<unknown>', '<unknown>').

    >>> caller_id_parts('"Sales" <4930123>'), caller_id_parts("+1 212-555")
    (('4930123', 'Sales'), ('+1212555', '<unknown>'))
    """
    text = (text or "").strip()
    name, number = "", text
    if "<" in text and text.endswith(">"):
        name, _, number = text[:-1].rpartition("<")
        name = name.strip().strip('"').strip()
    # ast_shrink_phone_number: spaces, dashes, dots and brackets out.
    number = "".join(c for c in number if c not in " -.()")
    return number or "<unknown>", name or "<unknown>"


class _Plan:
    """Builds the steps of one call (see plan_call)."""

    def __init__(self, request, lead, agent, ring, no_answer, namer):
        self.request = request
        self.lead = lead
        self.agent = agent
        self.ring = ring
        self.no_answer = no_answer
        self.namer = namer
        self.steps = []
        self.variables = dict(request.variables)
        self.caller = (request.caller_num, request.caller_name)

    def add(self, kind, *args):
        self.steps.append(Step(kind, args))

    def event(self, name, *parts):
        self.add("event", _event(name, *parts))

    def channel(self, dial, uniqueid=None, context=ENDPOINT_CONTEXT, exten="s", state=0):
        """A new channel for a dial string ('PJSIP/2001', 'PJSIP/1212@trunk')."""
        technology, _, resource = dial.partition("/")
        endpoint = resource.partition("@")[2] or resource.partition("@")[0]
        name = "%s/%s-%08x" % (technology, endpoint.partition("/")[0],
                               self.namer.channel_number(technology))
        return Channel(name, uniqueid or self.namer.uniqueid(), self.request.uniqueid,
                       context, exten, state, account=self.request.account or "")

    def new(self, channel):
        self.event("Newchannel", channel.snapshot())

    def state(self, channel, state):
        channel.state = state
        self.event("Newstate", channel.snapshot())

    def hangup(self, channel, cause, sip_code=None):
        extra = [("Cause", str(cause)), ("Cause-txt", CAUSE_TEXTS.get(cause, "Unknown"))]
        if sip_code and channel.technology.upper() == "PJSIP":
            extra.append(("TechCause", sip_code))
        self.event("Hangup", channel.snapshot(), extra)

    def dial_begin(self, caller, dest, dial_string):
        self.event("DialBegin", caller.snapshot() if caller else [], dest.snapshot("Dest"),
                   [("DialString", dial_string)])

    def dial_end(self, caller, dest, status):
        self.event("DialEnd", caller.snapshot() if caller else [], dest.snapshot("Dest"),
                   [("DialStatus", status)])

    def originate_response(self, success, channel_name, reason):
        request = self.request
        pairs = [("Event", "OriginateResponse"), ("Privilege", "call,all")]
        if request.action_id:
            pairs.append(("ActionID", request.action_id))
        pairs += [("Response", "Success" if success else "Failure"), ("Channel", channel_name)]
        if request.application:
            pairs += [("Application", request.application), ("Data", request.data)]
        else:
            pairs += [("Context", request.context), ("Exten", request.exten)]
        pairs += [("Reason", str(reason)), ("Uniqueid", request.uniqueid),
                  ("CallerIDNum", request.caller_num), ("CallerIDName", request.caller_name)]
        self.add("result", success)
        self.add("response", pairs)

    def spool_failed(self):
        """The channel Asterisk runs the `failed` extension on when the Originate fails."""
        request = self.request
        spool = Channel("OutgoingSpoolFailed", self.namer.uniqueid(), None, request.context,
                        "failed", caller=(request.caller_num, "<unknown>"),
                        account=request.account or "")
        spool.linkedid = spool.uniqueid
        self.new(spool)
        return spool

    def failed_extension(self, reason, leg_status="", leg_cause="", spool=None):
        """The Originate failed: Asterisk runs `failed`@context on OutgoingSpoolFailed
        (the dialplan's hook sends the hangup), then the OriginateResponse Failure."""
        request = self.request
        spool = spool or self.spool_failed()
        if not request.application and _has_failed_extension(request):
            self.add("hook", "hangup", {"REASON": str(reason), "DIALSTATUS": leg_status,
                                        "CX_LEG_CAUSE": str(leg_cause)},
                     {"channel": spool.name, "context": request.context,
                      "extension": "failed", "callerid": request.caller_num})
        self.hangup(spool, 16)
        self.originate_response(False, request.channel, reason)

    def ring_time(self, kind, limit):
        """How long a phone rings before its outcome shows."""
        if kind == "noanswer":
            return limit if self.no_answer is None else min(self.no_answer, limit)
        return min(self.ring, limit)

    # --- the calls ---

    def play(self):
        request = self.request
        if not channel_technology_loaded(request.channel) or self.namer.in_use(request.uniqueid):
            # No channel can be made (a technology Asterisk has not loaded, a ChannelId
            # of a channel that exists): the Originate fails at once.
            self.add("wait", 0.005)
            self.failed_extension(0)
            return self
        if request.channel.partition("/")[0].lower() == "local":
            self.dialer_first_leg()
        else:
            self.direct_first_leg()
        return self

    def direct_first_leg(self):
        """The Originate rings one phone: the agent (agent first), or the lead when the
        dialer's lead_channel is not a Local channel."""
        request = self.request
        dialer = self.variables.get("CX_MODE") == "dialer"
        kind = self.lead.kind if dialer else self.agent
        if kind == "unreachable" or (dialer and kind == "failed"):
            # PJSIP finds no contact for the endpoint: no channel is ever made.
            self.add("wait", 0.005)
            self.failed_extension(0)
            return
        first = self.channel(request.channel, request.uniqueid)
        resource = request.channel.partition("/")[2]
        self.new(first)
        first.caller = first.connected = (request.caller_num, "<unknown>")
        self.dial_begin(None, first, resource)
        if kind in ("answered", "noanswer"):
            self.state(first, 5)
        self.add("wait", self.ring_time(kind, request.timeout))
        if kind != "answered":
            status, cause = _NOT_CONNECTED[kind]
            if kind == "busy":
                self.dial_end(None, first, status)
            self.hangup(first, cause, _SIP_CODES.get(kind))
            # Agent first, the hangup handler the gateway pushes on the agent's channel
            # leaves its cause for the `failed` extension; nothing does in dialer mode.
            self.failed_extension(_REASON_DIRECT.get(kind, 0), "", "" if dialer else cause)
            return
        self.originate_response(True, first.name, 4)
        self.state(first, 6)
        self.dial_end(None, first, "ANSWER")
        first.context, first.exten = request.context, request.exten
        if request.application or not _runs_our_dialplan(request):
            self.talk_then_hang_up(first)
        elif dialer:
            self.ring_agent(first, None, None)
        else:
            self.dial_lead(first)

    def dialer_first_leg(self):
        """Dialer mode: Local/<lead>@callexchange-outbound/n; its ;2 dials the lead."""
        request = self.request
        target = request.channel.partition("/")[2].split("/")[0]
        lead_digits, _, lead_context = target.partition("@")
        number = self.namer.channel_number("Local")
        half = "Local/%s-%08x" % (target, number)
        first = Channel(half + ";1", request.uniqueid, request.uniqueid, lead_context or
                        "default", lead_digits, account=request.account or "")
        second = Channel(half + ";2", request.uniqueid + ";2", request.uniqueid,
                         lead_context or "default", lead_digits, state=4,
                         account=request.account or "")
        self.new(first)
        self.new(second)
        first.caller = first.connected = (request.caller_num, "<unknown>")
        second.caller = second.connected = (request.caller_num, "<unknown>")
        self.dial_begin(None, first, request.channel.partition("/")[2])
        kind = self.lead.kind
        lead = self.lead_channel(lead_digits)
        self.new(lead)
        self.dial_begin(second, lead, self.trunk_dial(lead_digits).partition("/")[2])
        if kind in ("answered", "noanswer"):
            self.state(lead, 5)
            self.state(first, 5)
        self.add("wait", self.ring_time(kind, self.lead_ring()))
        if kind != "answered":
            status, cause = _NOT_CONNECTED[kind]
            self.dial_end(second, lead, status)
            self.hangup(lead, cause)
            if kind in ("busy", "congestion"):
                # Busy() / Congestion() on ;2 signal it to ;1, which hangs up at once.
                self.dial_end(None, first, status)
                self.hangup(first, 0)
                if kind == "busy":
                    self.state(second, 7)
                spool = self.spool_failed()
                self.hangup(second, cause)
            else:
                # ;2 just hangs up: to the Originate's dial, a phone that never answered.
                self.dial_end(None, first, "NOANSWER")
                self.hangup(first, 16)
                self.hangup(second, 16)
                spool = self.spool_failed()
            self.failed_extension(_REASON_LOCAL.get(kind, 0), status, cause, spool)
            return
        self.state(lead, 6)
        self.state(second, 6)
        self.dial_end(second, lead, "ANSWER")
        self.state(first, 6)
        self.originate_response(True, first.name, 4)
        self.dial_end(None, first, "ANSWER")
        first.context, first.exten = request.context, request.exten
        if request.application or not _runs_our_dialplan(request):
            self.talk_then_hang_up(first, (lead, second))
        else:
            self.ring_agent(first, lead, second)

    def trunk_dial(self, digits):
        return DEFAULT_TRUNK.replace("{number}", digits)

    def lead_ring(self):
        try:
            return float(self.variables.get("CX_LEAD_RING") or DEFAULT_LEAD_RING)
        except ValueError:
            return DEFAULT_LEAD_RING

    def lead_channel(self, digits):
        lead = self.channel(self.trunk_dial(digits))
        lead.caller = (self.variables.get("CX_ANI") or self.request.caller_num, "<unknown>")
        lead.connected = (digits, "<unknown>")
        return lead

    def dial_lead(self, first):
        """Agent first, the agent answered: callexchange-outbound dials the lead."""
        digits = self.request.exten
        first.caller = (self.variables.get("CX_ANI") or first.caller[0], "<unknown>")
        first.connected = (digits, "<unknown>")
        lead = self.lead_channel(digits)
        self.new(lead)
        self.dial_begin(first, lead, self.trunk_dial(digits).partition("/")[2])
        kind = self.lead.kind
        if kind in ("answered", "noanswer"):
            self.state(lead, 5)
        self.add("wait", self.ring_time(kind, self.lead_ring()))
        if kind != "answered":
            status, cause = _NOT_CONNECTED[kind]
            self.dial_end(first, lead, status)
            self.hangup(lead, cause)
            self.add("stamp", "CX_ENDED_AT")
            self.hangup_hook(first, status, cause, cause)
            self.hangup(first, 16)
            return
        self.state(lead, 6)
        self.connected(lead, "callexchange-lead-answered")
        self.dial_end(first, lead, "ANSWER")
        self.add("talk", self.lead.seconds, self.recording())
        self.hangup(lead, 16)
        self.add("stamp", "CX_ENDED_AT")
        self.hangup_hook(first, "ANSWER", "", 16)
        self.hangup(first, 16)

    def ring_agent(self, first, lead, second):
        """Dialer mode, the lead answered: callexchange-agent rings the agent."""
        request = self.request
        dial = self.variables.get("CX_AGENT_DIAL") or "PJSIP/%s" % request.exten
        try:
            limit = float(self.variables.get("CX_AGENT_RING") or 30)
        except ValueError:
            limit = 30.0
        kind = self.agent
        others = [c for c in (lead, second) if c is not None]
        if kind == "unreachable" or not channel_technology_loaded(dial):
            self.add("wait", 0.005)
            status, cause = _NOT_CONNECTED["unreachable"]
            self.add("stamp", "CX_ENDED_AT")
            self.hangup_hook(first, status, cause, 16)
            for channel in [first] + others:
                self.hangup(channel, 16)
            return
        agent = self.channel(dial)
        agent.caller = agent.connected = (request.caller_num, "<unknown>")
        self.new(agent)
        self.dial_begin(first, agent, dial.partition("/")[2])
        if kind in ("answered", "noanswer"):
            self.state(agent, 5)
        self.add("wait", self.ring_time(kind, limit))
        if kind != "answered":
            status, cause = _NOT_CONNECTED[kind]
            self.dial_end(first, agent, status)
            self.hangup(agent, cause, _SIP_CODES.get(kind))
            self.add("stamp", "CX_ENDED_AT")
            self.hangup_hook(first, status, cause, 16)
            for channel in [first] + others:
                self.hangup(channel, 16)
            return
        self.state(agent, 6)
        self.connected(agent, "callexchange-agent-answered")
        self.dial_end(first, agent, "ANSWER")
        self.add("talk", self.lead.seconds, self.recording())
        # The lead hangs up.
        for channel in others:
            self.hangup(channel, 16)
        self.add("stamp", "CX_ENDED_AT")
        self.hangup_hook(first, "ANSWER", "", 16)
        self.hangup(agent, 16)
        self.hangup(first, 16)

    def talk_then_hang_up(self, first, others=()):
        """An Originate that runs no dialplan of ours: it talks, then hangs up."""
        self.add("talk", self.lead.seconds, None)
        for channel in others:
            self.hangup(channel, 16)
        self.hangup(first, 16)

    def connected(self, channel, context):
        self.add("stamp", "CX_CONNECTED_AT")
        self.add("hook", "connect", {}, {"channel": channel.name, "context": context,
                                         "extension": "s"})

    def hangup_hook(self, first, status, leg_cause, cause):
        extra = {"DIALSTATUS": status, "HANGUPCAUSE": str(cause),
                 "CX_LEG_CAUSE": str(leg_cause)}
        if status == "ANSWER":
            extra["ANSWEREDTIME"] = "${ANSWEREDTIME}"
        self.add("hook", "hangup", extra, {"channel": first.name,
                                           "context": "callexchange-hangup",
                                           "extension": "s"})

    def recording(self):
        return "${CX_RECORDING}" if self.variables.get("CX_UNIQUEID") else None


def _runs_our_dialplan(request):
    """Whether the Originate enters the project's dialplan (a gateway call)."""
    return bool(request.variables.get("CX_UNIQUEID"))


def _has_failed_extension(request):
    return _runs_our_dialplan(request)


def plan_call(request, lead, agent, namer, ring=0.2, no_answer=None):
    """The steps of the call an accepted Originate `request` (a Request) places.

    `lead`: the lead's Outcome; `agent`: the agent's outcome (AGENT_OUTCOMES); `namer`:
    gives channel numbers (`channel_number(technology)`), uniqueids (`uniqueid()`) and
    says which uniqueids are in use (`in_use(uniqueid)`); `ring`: seconds a phone rings
    before its outcome shows; `no_answer`: seconds a phone that never answers rings
    (None: as Asterisk, until the Originate's Timeout, the dialplan's CX_LEAD_RING or
    CX_AGENT_RING). Returns a list of Step."""
    return _Plan(request, lead, agent, ring, no_answer, namer).play().steps
