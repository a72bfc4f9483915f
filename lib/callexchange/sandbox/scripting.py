"""Scripting the sandbox PBX: the faults it can play (FAULTS) and the outcomes of calls,
for the lead (`DEST=answered:30`, `busy`...) and for the agent (`EXT=busy`...), as its
command line and its Python API take them. Pure parsing and validation.

>>> parse_fault("slow-login=2"), parse_outcome_rule("+4930123456=busy")
(('slow-login', 2.0), ('4930123456', Outcome(kind='busy', seconds=0.0)))
>>> parse_agent_rule("2001=noanswer")
('2001', 'noanswer')
"""

from types import MappingProxyType

from callexchange.sandbox.timeline import (AGENT_OUTCOMES, DEFAULT_TALK_SECONDS,
                                           LEAD_OUTCOMES, Outcome)

# fault name -> (argument: None | "SECONDS" | "MESSAGE", default argument, help)
FAULTS = MappingProxyType({
    "no-banner": (None, None, "accept the connection, send nothing, keep it open"),
    "close-on-accept": (None, None, "accept the connection, then close it at once"),
    "silent-after-banner": (None, None, "send the banner, then read but never answer"),
    "refuse-login": (None, None, "answer every Login 'Authentication failed' and hang up"),
    "slow-login": ("SECONDS", None, "answer Login only after SECONDS"),
    "slow-originate": ("SECONDS", None, "answer Originate only after SECONDS"),
    "slow-messagesend": ("SECONDS", None, "answer MessageSend only after SECONDS"),
    "originate-error": ("MESSAGE", "Permission denied",
                        "answer Originate 'Response: Error' with MESSAGE "
                        "(default: Permission denied), e.g. 'Extension does not exist.'"),
    "drop-mid-reply": (None, None, "send half of the Originate reply, then close"),
    "goodbye-no-close": (None, None,
                         "answer Originate 'Response: Goodbye' and keep the socket open, silent"),
    "chanvariable-event": (None, None,
                           "before the Originate reply, an event with "
                           "'ChanVariable(CDR(foo)): bar' style headers"),
    "status-will-follow-event": (None, None,
                                 "before the Originate reply, an event with "
                                 "'CallerIDName: status will follow'"),
    "events-before-reply": (None, None,
                            "before the Originate reply, Newchannel/VarSet/Newstate events "
                            "and replies carrying other ActionIDs"),
    "messagesend-error": ("MESSAGE", "Message failed to send.",
                          "answer MessageSend 'Response: Error' with MESSAGE"),
    "split-replies": (None, None,
                      "write every reply and event in pieces of 3 bytes, 2 ms apart, as "
                      "they may reach a client from a busy Asterisk"),
})


def parse_fault(text):
    """'slow-login=2' -> ('slow-login', 2.0); 'no-banner' -> ('no-banner', None).
    Raises ValueError for an unknown fault or a wrong argument."""
    name, equals, argument = text.partition("=")
    name = name.strip()
    return check_fault(name, argument if equals else None)


def check_fault(name, argument=None):
    """(name, argument) validated: SECONDS become a float, MESSAGE gets its default."""
    if name not in FAULTS:
        raise ValueError("unknown fault %r (known: %s)" % (name, ", ".join(FAULTS)))
    kind, default, _ = FAULTS[name]
    if kind is None:
        if argument not in (None, ""):
            raise ValueError("fault %s takes no argument" % name)
        return name, None
    if kind == "SECONDS":
        try:
            seconds = float(argument)
        except (TypeError, ValueError):
            raise ValueError("fault %s needs SECONDS, e.g. %s=2" % (name, name)) from None
        if not 0 <= seconds <= 3600:
            raise ValueError("fault %s: SECONDS must be between 0 and 3600" % name)
        return name, seconds
    argument = default if argument in (None, "") else str(argument)
    if any(c in argument for c in "\r\n\0"):
        raise ValueError("fault %s: MESSAGE must be one line" % name)
    return name, argument


def parse_outcome(text):
    """'answered:30' -> Outcome('answered', 30.0); 'busy' -> Outcome('busy', 0.0).
    'answered' alone talks DEFAULT_TALK_SECONDS. Raises ValueError."""
    kind, colon, seconds = text.strip().lower().partition(":")
    kind = kind.replace("-", "").replace("_", "")
    if kind not in LEAD_OUTCOMES:
        raise ValueError("unknown outcome %r (known: answered:SECONDS, %s)"
                         % (text, ", ".join(k for k in LEAD_OUTCOMES if k != "answered")))
    if kind != "answered":
        if colon:
            raise ValueError("outcome %s takes no SECONDS" % kind)
        return Outcome(kind, 0.0)
    if not colon:
        return Outcome(kind, DEFAULT_TALK_SECONDS)
    try:
        talk = float(seconds)
    except ValueError:
        raise ValueError("answered:SECONDS needs a number, got %r" % seconds) from None
    if not 0 <= talk <= 86400:
        raise ValueError("answered:SECONDS must be between 0 and 86400")
    return Outcome(kind, talk)


def parse_outcome_rule(text):
    """'4930123456=answered:30' -> ('4930123456', Outcome('answered', 30.0)).
    DEST '*' is the default for destinations without a rule. Raises ValueError."""
    dest, equals, outcome = text.partition("=")
    dest = normalise_destination(dest)
    if not equals or not dest:
        raise ValueError("expected DEST=OUTCOME, got %r" % text)
    return dest, parse_outcome(outcome)


def normalise_destination(text):
    """A destination as outcome rules key it: without spaces and a leading '+'."""
    text = text.strip()
    return text[1:] if text.startswith("+") else text


def parse_agent_outcome(text):
    """'busy' -> 'busy': how an agent's phone answers (AGENT_OUTCOMES; 'failed' is
    'unreachable'). Raises ValueError."""
    kind = text.strip().lower().replace("-", "").replace("_", "")
    kind = {"failed": "unreachable", "offline": "unreachable"}.get(kind, kind)
    if kind not in AGENT_OUTCOMES:
        raise ValueError("unknown agent outcome %r (known: %s)"
                         % (text, ", ".join(AGENT_OUTCOMES)))
    return kind


def parse_agent_rule(text):
    """'2001=busy' -> ('2001', 'busy'); EXT '*' is the default for other agents.
    Raises ValueError."""
    extension, equals, outcome = text.partition("=")
    extension = extension.strip()
    if not equals or not extension:
        raise ValueError("expected EXT=OUTCOME, got %r" % text)
    return extension, parse_agent_outcome(outcome)


def fault_table(faults):
    """{name: argument} from the forms a Sandbox takes: names, 'name=ARG' strings,
    (name, arg) pairs or a {name: arg} dict."""
    if isinstance(faults, dict):
        faults = faults.items()
    table = {}
    for fault in faults:
        name, argument = (parse_fault(fault) if isinstance(fault, str)
                          else check_fault(*fault))
        table[name] = argument
    return table


def outcome_table(outcomes):
    """{normalised destination: Outcome} from {destination: Outcome or its text}."""
    return {normalise_destination(dest): (outcome if isinstance(outcome, Outcome)
                                          else parse_outcome(outcome))
            for dest, outcome in outcomes.items()}


def agent_table(agents):
    """{extension: outcome} from {extension: outcome text}."""
    return {str(extension).strip(): parse_agent_outcome(outcome)
            for extension, outcome in agents.items()}
