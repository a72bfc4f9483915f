#!/usr/bin/env python3
"""Record what the gateway's AMI user (read=call, write=originate,message) sees from a real
Asterisk, byte for byte, as fixtures for the sandbox PBX's conformance test.

    .venv/bin/python tests/asterisk/ami_recorder.py [--asterisk PATH] [--out DIR] [CASE ...]

starts a private Asterisk with the project's dialplan and AMI user and SIPp as agent 2001
(harness.Bench, as the real-Asterisk suite does; no Apache), plays each case (all by
default) one after the other, so that no other call's events get into a transcript, and
writes DIR/<case>.json (DIR: tests/fixtures/ami). `--list` names the cases. The format is
described in tests/fixtures/ami/README.md; `load()` reads a fixture back.

The Originates are the gateway's own: its endpoint (calls.endpoint._place) builds them,
with only the last step, the AMI exchange, replaced by this recorder.
"""

import argparse
import json
import os
import re
import shutil
import sys
import time
from contextlib import contextmanager
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent), str(HERE.parent.parent / "lib")]

import harness  # noqa: E402
from ami_wire import WireSession  # noqa: E402

FIXTURES = HERE.parent / "fixtures" / "ami"
FORMAT = 1
CASES = {}


def case(name, description, slow=False):
    """Register a case; `slow`: it waits for phones to ring out or calls to end (seconds
    each), so the real-Asterisk suite does not replay it on every run."""
    def register(function):
        CASES[name] = {"name": name, "description": description, "run": function,
                       "slow": slow}
        return function
    return register


# --- reading fixtures back --------------------------------------------------------------

def load(path):
    """A fixture as a dict; each session's "transcript" a list of
    (direction, offset_seconds, bytes) tuples, direction "client" or "server" (b"" from
    the server: it closed the connection)."""
    with open(path, encoding="utf-8") as handle:
        return loaded(json.load(handle))


def loaded(record):
    """A fixture's dict (as written, or as `record` returns it) with its transcripts as
    (direction, offset_seconds, bytes) tuples."""
    record = dict(record)
    record["sessions"] = [dict(session, transcript=[
        (direction, offset, text.encode("latin-1"))
        for direction, offset, text in session["transcript"]])
        for session in record["sessions"]]
    return record


def messages_of(transcript, direction="server"):
    """The messages one side sent (banner first, for the server): a list of (offset,
    [(name, value), ...]) or, for the banner, (offset, [("", banner line)])."""
    buffer, offset, found, banner = b"", 0.0, [], direction == "server"
    for side, at, data in transcript:
        if side != direction:
            continue
        buffer += data
        offset = at
        if banner and b"\r\n" in buffer:
            line, buffer = buffer.split(b"\r\n", 1)
            found.append((offset, [("", line.decode("latin-1"))]))
            banner = False
        while b"\r\n\r\n" in buffer:
            block, buffer = buffer.split(b"\r\n\r\n", 1)
            pairs = []
            for line in block.decode("utf-8", "replace").split("\r\n"):
                key, _, value = line.partition(": ")
                pairs.append((key, value))
            found.append((offset, pairs))
    return found


def signature(record):
    """What the gateway (or a CRM developer reading AMI) relies on, per session: the
    banner, each reply's Response and Message in order, the OriginateResponses of this
    case's own actions (Response, Reason, Channel with the channel numbers masked),
    FullyBooted if it came, and whether Asterisk closed the connection. Independent of
    timing, uniqueids and the events of other calls."""
    own = {value for session in record["sessions"]
           for _, pairs in messages_of(session["transcript"], "client")
           for key, value in pairs if key == "ActionID"}
    result = []
    for session in record["sessions"]:
        seen = []
        for _, pairs in messages_of(session["transcript"]):
            fields = dict(pairs)
            event = fields.get("Event")
            if "" in fields:
                seen.append(("banner", fields[""]))
            elif event == "OriginateResponse":
                if fields.get("ActionID") in own:
                    seen.append(("OriginateResponse", fields["Response"], fields["Reason"],
                                 re.sub(r"-[0-9a-f]{8}", "-N", fields["Channel"])))
            elif event == "FullyBooted":
                seen.append(("FullyBooted",))
            elif event is None and "Response" in fields:
                seen.append(("reply", fields["Response"], fields.get("Message")))
        if any(side == "server" and data == b"" for side, _, data in session["transcript"]):
            seen.append(("closed",))
        result.append((session["name"], seen))
    return result


# --- recording ----------------------------------------------------------------------------

class Recorder:
    """What one case needs: sessions as the gateway's user, the gateway's Originates, and
    facts to note. `port` is the private Asterisk's AMI port; `config` the bench's
    callexchange.ini (the endpoint reads [dial] and the ANI pool from it)."""

    def __init__(self, bench):
        self.bench = bench
        self.sessions = []
        self.facts = {}
        self.started = time.monotonic()
        self._ids = 0
        self._prefix = "cx-" + os.urandom(6).hex()

    def session(self, name="gateway"):
        session = WireSession(self.bench.ami_port)
        session.name = name
        session.started_at = round(time.monotonic() - self.started, 4)
        self.sessions.append(session)
        return session

    def action_id(self):
        self._ids += 1
        return "%s-%d" % (self._prefix, self._ids)

    def send(self, session, name, fields=()):
        """Send an action as the gateway's client does (ActionID first); its ActionID."""
        from callexchange.pbx.wire import encode_action

        action_id = self.action_id()
        session.send(encode_action(name, [("ActionID", action_id)] + list(fields)))
        return action_id

    def reply(self, session, action_id, timeout=10.0):
        return session.wait_for(lambda m: m.get("ActionID") == action_id and m.response,
                                timeout)

    def login(self, session, secret=harness.AMI_SECRET, events="off"):
        session.wait_banner()
        action_id = self.send(session, "Login", [("Username", harness.AMI_USERNAME),
                                                 ("Secret", secret), ("Events", events)])
        return self.reply(session, action_id)

    def logoff(self, session):
        action_id = self.send(session, "Logoff")
        reply = self.reply(session, action_id)
        session.wait_closed(2.0)
        return reply

    def quiet(self, session, seconds=0.3, limit=3.0):
        """Read until nothing has come for `seconds` (at most `limit`)."""
        deadline = time.monotonic() + limit
        last = len(session.transcript)
        quiet_since = time.monotonic()
        while time.monotonic() < deadline and not session.closed:
            session.pump(0.05)
            if len(session.transcript) != last:
                last, quiet_since = len(session.transcript), time.monotonic()
            elif time.monotonic() - quiet_since >= seconds:
                return

    def gateway_originate(self, extension, destination, dialer, **params):
        """(fields, uniqueid, message) of the Originate the gateway sends for this call."""
        from callexchange.calls import endpoint, numbers
        from callexchange.config import load_config
        from callexchange.pbx import ami

        config = load_config(str(self.bench.config_path))
        from callexchange.statedir import StateDir

        number = numbers.analyze(destination, config.dial.default_region,
                                 StateDir(config.state.dir).numbers)
        captured = {}

        def capture(ami_settings, originate_kwargs, message=None, not_after=None,
                    while_waiting=None):
            captured["fields"] = ami.originate_fields(**originate_kwargs)
            captured["uniqueid"] = originate_kwargs["channel_id"]
            captured["message"] = message
            return {"msg_sent": None}

        with _replaced(ami, "place_call", capture):
            endpoint._place(config, extension, number, params.get("voice_pitch", 1.0), dialer,
                            params.get("msg"), params.get("crm_id"))
        return captured["fields"], captured["uniqueid"], captured["message"]

    def originate(self, session, extension, destination, dialer, **params):
        fields, uniqueid, _ = self.gateway_originate(extension, destination, dialer, **params)
        if "fields" in params:
            fields = params["fields"](fields)
        action_id = self.send(session, "Originate", fields)
        self.facts.setdefault("uniqueids", []).append(uniqueid)
        return action_id, uniqueid

    def wait_call_over(self, session, uniqueid, timeout=30.0):
        """Read until every channel of the call that appeared has hung up."""
        def over(_message):
            linked = [m for m in session.messages if m.get("Linkedid") == uniqueid]
            created = {m.get("Uniqueid") for m in linked if m.event == "Newchannel"}
            gone = {m.get("Uniqueid") for m in linked if m.event == "Hangup"}
            return bool(created) and created <= gone
        session.wait_for(over, timeout)

    def note_answer_timing(self, session, action_id, uniqueid):
        """Facts: when the OriginateResponse came after the first leg went Up, and its
        Channel."""
        response = session.wait_for(lambda m: m.event == "OriginateResponse"
                                    and m.get("ActionID") == action_id)
        up = [m for m in session.messages if m.event == "Newstate"
              and m.get("Uniqueid") == uniqueid and m.get("ChannelStateDesc") == "Up"]
        self.facts["originate_response"] = {
            "offset": response.offset, "Response": response.get("Response"),
            "Reason": response.get("Reason"), "Channel": response.get("Channel")}
        if up:
            self.facts["originate_response"]["after_first_leg_up"] = round(
                response.offset - up[0].offset, 4)
        return response

    def result(self):
        sessions = []
        for session in self.sessions:
            sessions.append({
                "name": session.name, "started": session.started_at,
                "transcript": [[direction, offset, data.decode("latin-1")]
                               for direction, offset, data in session.transcript]})
        return sessions


@contextmanager
def _replaced(module, name, value):
    original = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, original)


def lead(last_digit, index):
    """A lead's number for the fake carrier (its last digit decides)."""
    return "1212555%03d%s" % (900 + index, last_digit)


# --- the cases ------------------------------------------------------------------------------

@case("banner", "Connect and read; the banner is the first line, nothing follows.")
def banner(rec):
    session = rec.session()
    session.wait_banner()
    rec.quiet(session, 0.5)
    session.close()


@case("login_ok", "Login as the gateway does (Events: off), then Logoff.")
def login_ok(rec):
    session = rec.session()
    rec.login(session)
    rec.quiet(session, 0.5)
    rec.logoff(session)


@case("login_ok_events_on", "Login with Events: on (read=call): what comes unasked.")
def login_ok_events_on(rec):
    session = rec.session()
    rec.login(session, events="on")
    rec.quiet(session, 1.0)
    rec.logoff(session)


@case("login_refused", "Login with a wrong secret: the error, its delay, the close.")
def login_refused(rec):
    session = rec.session()
    reply = rec.login(session, secret="not-the-secret")
    rec.facts["reply_after_login_sent"] = round(
        reply.offset - [o for d, o, _ in session.transcript if d == "client"][0], 4)
    session.wait_closed(3.0)


@case("ping", "Login, Ping, Logoff.")
def ping(rec):
    session = rec.session()
    rec.login(session)
    rec.reply(session, rec.send(session, "Ping"))
    rec.logoff(session)


@case("unknown_action", "An action Asterisk does not have.")
def unknown_action(rec):
    session = rec.session()
    rec.login(session)
    rec.reply(session, rec.send(session, "Frobnicate"))
    rec.logoff(session)


@case("ungranted_action", "Command, which the gateway's user may not use (write=command).")
def ungranted_action(rec):
    session = rec.session()
    rec.login(session)
    rec.reply(session, rec.send(session, "Command", [("Command", "core show version")]))
    rec.logoff(session)


@case("originate_missing_context", "Originate into a context that does not exist: a "
      "synchronous error, no call.")
def originate_missing_context(rec):
    session = rec.session()
    rec.login(session, events="on")

    def elsewhere(fields):
        return [(k, "no-such-context" if k == "Context" else v) for k, v in fields]
    action_id, _ = rec.originate(session, harness.SIPP_AGENT, lead("1", 0), False,
                                 fields=elsewhere)
    rec.reply(session, action_id)
    rec.quiet(session, 1.0)
    rec.logoff(session)


def _originate_case(rec, extension, destination, dialer, answered=False, fields=None):
    session = rec.session()
    rec.login(session, events="on")
    more = {"fields": fields} if fields else {}
    action_id, uniqueid = rec.originate(session, extension, destination, dialer, **more)
    rec.reply(session, action_id)
    rec.note_answer_timing(session, action_id, uniqueid)
    if answered:
        rec.wait_call_over(session, uniqueid)
    rec.quiet(session, 0.5, limit=15.0)
    rec.logoff(session)


@case("originate_answered_agent_first", "Agent first: SIPp (2001) answers after 1.5 s, the "
      "lead after 3.5 s more, talks 4 s. Everything a read=call session sees, to the end.",
      slow=True)
def originate_answered_agent_first(rec):
    _originate_case(rec, harness.SIPP_AGENT, lead("1", 1), False, answered=True)


@case("originate_answered_dialer", "Dialer mode: the lead answers after 3.5 s, then SIPp "
      "(2001) after 1.5 s; the lead hangs up 4 s after its answer.", slow=True)
def originate_answered_dialer(rec):
    _originate_case(rec, harness.SIPP_AGENT, lead("1", 2), True, answered=True)


@case("originate_busy_agent_first", "Agent first, the agent's phone answers 486 Busy.")
def originate_busy_agent_first(rec):
    _originate_case(rec, harness.BUSY_AGENTS[0], lead("1", 3), False)


@case("originate_busy_dialer", "Dialer mode, the lead is busy.")
def originate_busy_dialer(rec):
    _originate_case(rec, harness.SIPP_AGENT, lead("2", 4), True)


@case("originate_noanswer_agent_first", "Agent first, the agent's phone rings past "
      "ring_timeout (the Originate's Timeout, 3 s).", slow=True)
def originate_noanswer_agent_first(rec):
    _originate_case(rec, harness.SILENT_AGENTS[0], lead("1", 5), False)


@case("originate_noanswer_dialer", "Dialer mode, the lead rings past CX_LEAD_RING (6 s).",
      slow=True)
def originate_noanswer_dialer(rec):
    _originate_case(rec, harness.SIPP_AGENT, lead("3", 6), True)


def _missing_technology(fields):
    return [(k, "NOSUCHTECH/" + v.split("/", 1)[1] if k == "Channel" else v)
            for k, v in fields]


@case("originate_failed_agent_first", "Agent first, a channel technology that is not "
      "loaded (NOSUCHTECH/2001).")
def originate_failed_agent_first(rec):
    _originate_case(rec, harness.SIPP_AGENT, lead("1", 7), False, fields=_missing_technology)


@case("originate_failed_dialer", "Dialer mode, a channel technology that is not loaded "
      "for the lead (NOSUCHTECH/<lead>@callexchange-outbound/n).")
def originate_failed_dialer(rec):
    _originate_case(rec, harness.SIPP_AGENT, lead("1", 8), True, fields=_missing_technology)


@case("originate_duplicate_channelid", "Two Originates with the same ChannelId while the "
      "first call still rings (a never-answering agent).", slow=True)
def originate_duplicate_channelid(rec):
    session = rec.session()
    rec.login(session, events="on")
    fields, uniqueid, _ = rec.gateway_originate(harness.SILENT_AGENTS[1], lead("1", 9), False)
    first = rec.send(session, "Originate", fields)
    rec.reply(session, first)
    session.wait_for(lambda m: m.event == "Newchannel" and m.get("Uniqueid") == uniqueid)
    second = rec.send(session, "Originate", fields)
    rec.reply(session, second)
    rec.facts["uniqueids"] = [uniqueid]
    for action_id in (first, second):
        session.wait_for(lambda m, a=action_id: m.event == "OriginateResponse"
                         and m.get("ActionID") == a, timeout=15)
    rec.quiet(session, 0.5, limit=10.0)
    rec.logoff(session)


@case("messagesend_ok", "MessageSend to the registered softphone (pjsip:2001), as the "
      "gateway sends it.")
def messagesend_ok(rec):
    session = rec.session()
    rec.login(session)
    rec.reply(session, rec.send(session, "MessageSend", [
        ("To", "pjsip:%s" % harness.SIPP_AGENT), ("Body", "Lead 7 calls, café")]))
    rec.logoff(session)


@case("messagesend_missing_technology", "MessageSend to a message technology that does "
      "not exist.")
def messagesend_missing_technology(rec):
    session = rec.session()
    rec.login(session)
    rec.reply(session, rec.send(session, "MessageSend", [
        ("To", "nosuch:%s" % harness.SIPP_AGENT), ("Body", "hello")]))
    rec.logoff(session)


@case("originate_response_broadcast", "Two read=call sessions of the gateway's user: the "
      "second sees the OriginateResponse of the first one's Originate (busy agent).")
def originate_response_broadcast(rec):
    other = rec.session("other")
    rec.login(other, events="on")
    session = rec.session("gateway")
    rec.login(session, events="on")
    action_id, uniqueid = rec.originate(session, harness.BUSY_AGENTS[1], lead("1", 10), False)
    rec.reply(session, action_id)
    other.wait_for(lambda m: m.event == "OriginateResponse" and m.get("ActionID") == action_id)
    rec.note_answer_timing(session, action_id, uniqueid)
    for each in (session, other):
        rec.quiet(each, 0.5)
        rec.logoff(each)


@case("as_the_gateway", "The gateway's whole exchange for a call with msg: Login (Events: "
      "off), Originate, MessageSend, Logoff (pbx.ami.place_call).")
def as_the_gateway(rec):
    from callexchange.pbx import ami

    fields, uniqueid, message = rec.gateway_originate(harness.SIPP_AGENT, lead("2", 11),
                                                      False, msg="Lead 7 calls")
    rec.facts["uniqueids"] = [uniqueid]
    session = rec.session()
    rec.login(session)
    rec.reply(session, rec.send(session, "Originate", fields))
    # The MessageSend fields the gateway sends (To, From, Body).
    rec.reply(session, rec.send(session, "MessageSend", ami.message_fields(*message)))
    rec.logoff(session)


@case("list_commands", "ListCommands: the actions the gateway's user may use (what "
      "callexchange check reads to see the user's write privileges).")
def list_commands(rec):
    session = rec.session()
    rec.login(session)
    rec.reply(session, rec.send(session, "ListCommands"))
    rec.logoff(session)


@case("logoff", "Login, then Logoff: the Goodbye and the close.")
def logoff(rec):
    session = rec.session()
    rec.login(session)
    rec.logoff(session)


def record(bench, name):
    """Play one case against the bench's running Asterisk; its fixture as a dict."""
    spec = CASES[name]
    rec = Recorder(bench)
    try:
        spec["run"](rec)
    finally:
        for session in rec.sessions:
            if not session.closed:
                session.close()
    version = bench.pbx.cli("core show version").strip().split(" built ")[0]
    return {
        "format": FORMAT, "case": name, "description": spec["description"],
        "asterisk": version,
        "recorded": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "user": {"username": harness.AMI_USERNAME, "read": "call",
                 "write": "originate,message"},
        "facts": rec.facts, "sessions": rec.result(),
    }


def write(record_, directory):
    path = Path(directory) / ("%s.json" % record_["case"])
    text = json.dumps(record_, indent=1, ensure_ascii=True) + "\n"
    path.write_text(text, encoding="ascii")
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--asterisk", help="the asterisk binary (default: $ASTERISK, PATH, "
                        "or /opt/asterisk-22.10.1/sbin/asterisk)")
    parser.add_argument("--out", default=str(FIXTURES), help="where the fixtures go")
    parser.add_argument("--list", action="store_true", help="name the cases and exit")
    parser.add_argument("cases", nargs="*", help="cases to record (default: all)")
    args = parser.parse_args(argv)
    if args.list:
        for name, spec in CASES.items():
            print("%-34s %s" % (name, spec["description"]))
        return 0
    unknown = [name for name in args.cases if name not in CASES]
    if unknown:
        parser.error("unknown case(s): %s (see --list)" % ", ".join(unknown))

    import apache_server
    from private_asterisk import find_asterisk

    binary = args.asterisk or find_asterisk()
    if not binary:
        parser.error("no Asterisk found: give --asterisk or set ASTERISK")
    base = apache_server.shared_tempdir("cx-ami-recorder-")
    bench = harness.Bench(binary, base)
    try:
        bench.start_pbx()
        bench.start_agent()
        Path(args.out).mkdir(parents=True, exist_ok=True)
        for name in args.cases or list(CASES):
            path = write(record(bench, name), args.out)
            print("recorded %s" % path)
            bench.pbx.cli("channel request hangup all")
    finally:
        bench.close()
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
