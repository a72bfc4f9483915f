"""The sandbox PBX against a real Asterisk 22: every transcript of tests/fixtures/ami/ (the
wire bytes a real Asterisk 22.10.1 sent the gateway's AMI user, recorded by
tests/asterisk/ami_recorder.py) is replayed against the sandbox, client bytes as
recorded, and what comes back is compared with what the real one sent:

* the signature the gateway and a CRM developer rely on: the banner, every reply's
  Response and Message, the OriginateResponses of the case's own Originates (Response,
  Reason, Channel), FullyBooted or not, the close (ami_recorder.signature);
* every reply whole (headers and values, the Ping's Timestamp aside): ListCommands too;
* for each call, the events the sandbox plays (Newchannel, Newstate, DialBegin, DialEnd,
  Hangup, OriginateResponse), per channel of the call in order, with their states,
  dial statuses and causes, and the OriginateResponse's place among them (when the first
  leg answered; on failure after the `failed` extension's channel appeared);
* the headers of those events, in Asterisk's order;
* a refused login answered after Asterisk's delay.

The sandbox is set up as the recording PBX was (tests/fixtures/ami/README.md): leads
ending in 1 answer, 2 busy, 3 never answer; agents 28xx busy, 29xx never answer, 27xx
offline; with shorter ring and talk times (timing is not compared, order is).
What it cannot play (events other than those six, the bench's own channels: the
fake carrier's Local pair, the looped fake agents) is left out of the comparison and
listed in `callexchange sandbox --help`.
"""

import os
import sys
import time

import pytest

from paths import REPO

sys.path.insert(0, str(REPO / "tests" / "asterisk"))

import ami_recorder  # noqa: E402
from ami_wire import WireSession  # noqa: E402

from callexchange.cli.sandbox import LOGIN_FAILURE_DELAY  # noqa: E402
from callexchange.sandbox.server import Sandbox  # noqa: E402

FIXTURES = sorted(ami_recorder.FIXTURES.glob("*.json"))
PLAYED = ("Newchannel", "Newstate", "DialBegin", "DialEnd", "Hangup", "OriginateResponse")
LEADS = {"1": "answered:0.3", "2": "busy", "3": "noanswer", "4": "congestion", "0": "failed"}
AGENTS = {"28": "busy", "29": "noanswer", "27": "unreachable"}
STEP_DEADLINE = 10.0


def recorded_user(record):
    """(username, secret) of the recording's successful logins."""
    for session in record["sessions"]:
        for _, pairs in ami_recorder.messages_of(session["transcript"], "client"):
            fields = dict(pairs)
            if fields.get("Action") == "Login" and fields.get("Secret") != "not-the-secret":
                return fields["Username"], fields["Secret"]
    return "callexchange", "unused"


def sandbox_for(record):
    """A sandbox PBX scripted as the recording PBX was, for this record's calls."""
    username, secret = recorded_user(record)
    pbx = Sandbox(username=username, secret=secret, ring_seconds=0.05,
                  no_answer_seconds=0.3, login_failure_delay=LOGIN_FAILURE_DELAY)
    for session in record["sessions"]:
        for _, pairs in ami_recorder.messages_of(session["transcript"], "client"):
            variables = dict(v.lstrip("_").split("=", 1) for k, v in pairs
                             if k == "Variable" and "=" in v)
            lead = variables.get("CX_DESTINATION")
            if lead:
                pbx.set_outcome(lead, LEADS[lead[-1]])
            agent = variables.get("CX_EXTENSION")
            if agent and agent[:2] in AGENTS:
                pbx.set_agent(agent, AGENTS[agent[:2]])
    return pbx


def milestones(messages, own):
    """How many of `messages` a replay waits for: the banner, replies, the case's own
    OriginateResponses and the Hangups of its calls' first channels."""
    count = 0
    for _, pairs in messages:
        fields = dict(pairs)
        event = fields.get("Event")
        if "" in fields or (event is None and "Response" in fields):
            count += 1
        elif event == "OriginateResponse" and fields.get("ActionID") in own:
            count += 1
        elif event == "Hangup" and fields.get("Uniqueid") in own:
            count += 1
    return count


def replay(record, port):
    """Play the record's client side against `port`; the sessions, as ami_recorder
    records them (name, started, transcript)."""
    steps = []
    own = set()
    for index, session in enumerate(record["sessions"]):
        for at, (direction, offset, data) in enumerate(session["transcript"]):
            if direction == "client":
                steps.append((session["started"] + offset, index, at))
        for _, pairs in ami_recorder.messages_of(session["transcript"], "client"):
            own.update(v for k, v in pairs if k == "ActionID")
    own.update(record["facts"].get("uniqueids", ()))
    steps.sort(key=lambda step: step[0])
    started = time.monotonic()
    sessions = []
    for session in record["sessions"]:
        delay = session["started"] - (time.monotonic() - started)
        if delay > 0:
            time.sleep(min(delay, 0.05))
        live = WireSession(port)
        live.name, live.started_at = session["name"], session["started"]
        live.start_reader()
        sessions.append(live)
    try:
        for _, index, at in steps:
            recorded = record["sessions"][index]["transcript"]
            data = recorded[at][2]
            wanted = milestones(ami_recorder.messages_of(recorded[:at]), own)
            live = sessions[index]
            deadline = time.monotonic() + STEP_DEADLINE
            while milestones(ami_recorder.messages_of(live.transcript), own) < wanted:
                assert time.monotonic() < deadline, (
                    "the sandbox never sent what Asterisk had sent before %r" % data[:60])
                time.sleep(0.01)
            live.send(data)
        wanted = [milestones(ami_recorder.messages_of(s["transcript"]), own)
                  for s in record["sessions"]]
        closes = [any(d == "server" and b == b"" for d, _, b in s["transcript"])
                  for s in record["sessions"]]
        deadline = time.monotonic() + STEP_DEADLINE
        for live, count, closed in zip(sessions, wanted, closes):
            while (milestones(ami_recorder.messages_of(live.transcript), own) < count
                   or (closed and not live.closed)) and time.monotonic() < deadline:
                time.sleep(0.01)
        time.sleep(0.1)  # anything more the sandbox would send
    finally:
        kept = []
        for live in sessions:
            # What came before our own close (its reader notes the close as the server's).
            kept.append(list(live.transcript))
            if not live.closed:
                live.close()
    return {"sessions": [{"name": live.name, "started": live.started_at,
                          "transcript": transcript}
                         for live, transcript in zip(sessions, kept)],
            "facts": record["facts"]}


@pytest.fixture(scope="module")
def replays():
    """{case: (recorded, replayed)}, each case replayed once against its own sandbox."""
    done = {}
    for path in FIXTURES:
        record = ami_recorder.load(path)
        with sandbox_for(record) as pbx:
            replayed = replay(record, pbx.port)
            pbx.reset()
        done[record["case"]] = (record, replayed)
    return done


CASES = [path.stem for path in FIXTURES]


# --- what the gateway relies on ---------------------------------------------------------

@pytest.mark.parametrize("case", CASES)
def test_the_sandbox_gives_the_signature_asterisk_gave(replays, case):
    recorded, replayed = replays[case]
    assert ami_recorder.signature(replayed) == ami_recorder.signature(recorded)


def replies(session):
    """Every reply of a session (no events, no banner), the volatile values masked."""
    found = []
    for _, pairs in ami_recorder.messages_of(session["transcript"]):
        fields = dict(pairs)
        if "" in fields or "Event" in fields:
            continue
        found.append([(k, "<time>" if k == "Timestamp" else v) for k, v in pairs])
    return found


@pytest.mark.parametrize("case", CASES)
def test_every_reply_is_asterisks_word_for_word(replays, case):
    recorded, replayed = replays[case]
    for real, sandbox in zip(recorded["sessions"], replayed["sessions"]):
        assert replies(sandbox) == replies(real)


def test_a_refused_login_is_answered_after_asterisks_delay(replays):
    recorded, replayed = replays["login_refused"]
    [session] = replayed["sessions"]
    sent = [o for d, o, _ in session["transcript"] if d == "client"][0]
    answered = [o for d, o, b in session["transcript"] if d == "server" and b"Error" in b][0]
    assert answered - sent == pytest.approx(recorded["facts"]["reply_after_login_sent"],
                                            abs=0.2)


# --- the events of the calls --------------------------------------------------------------

def call_events(session, uniqueids):
    """The played events of the case's calls: [(role, event, detail, pairs)]. Roles:
    `first` (the Originate's channel), `first;2` (its Local ;2), `failed`
    (OutgoingSpoolFailed), `dest-of-<role>` (what that channel dialled); the
    OriginateResponse is role `response`. Other channels (the recording bench's fake
    carrier and looped agents) are left out."""
    messages = [dict(pairs) for _, pairs in ami_recorder.messages_of(session["transcript"])]
    roles = {}
    for fields in messages:
        uniqueid, channel = fields.get("Uniqueid"), fields.get("Channel")
        if uniqueid in uniqueids:
            roles[channel] = "first"
        elif uniqueid and uniqueid.endswith(";2") and uniqueid[:-2] in uniqueids:
            roles[channel] = "first;2"
        elif channel == "OutgoingSpoolFailed":
            roles[channel] = "failed"
    for fields in messages:
        if fields.get("Event") == "DialBegin" and fields.get("Channel") in roles:
            roles.setdefault(fields["DestChannel"], "dest-of-" + roles[fields["Channel"]])
    found = []
    for _, pairs in ami_recorder.messages_of(session["transcript"]):
        fields = dict(pairs)
        event = fields.get("Event")
        if event not in PLAYED:
            continue
        if event == "OriginateResponse":
            if fields.get("Uniqueid") in uniqueids:
                found.append(("response", event, (fields["Response"], fields["Reason"]),
                              pairs))
            continue
        channel = fields.get("DestChannel") or fields.get("Channel")
        role = roles.get(channel)
        if role is None or (event == "DialBegin" and channel == fields.get("Channel")):
            continue
        if event in ("Newchannel", "Newstate"):
            detail = fields.get("ChannelStateDesc")
        elif event == "DialEnd":
            detail = fields.get("DialStatus")
        elif event == "DialBegin":
            detail = roles.get(fields.get("Channel"), "-")
        elif role.startswith("dest-of-"):
            detail = "-"  # the bench's fake carrier is a Local pair, a real trunk is not
        else:
            detail = fields.get("Cause")
        found.append((role, event, detail, pairs))
    return found


def per_role(events):
    """{role: [(event, detail)...]}; for what a channel dialled, its DialBegin apart (a
    Local callee rings before its caller's DialBegin, a SIP trunk after)."""
    by_role = {}
    for role, event, detail, _ in events:
        if role.startswith("dest-of-") and event == "DialBegin":
            by_role.setdefault(role + " dialled by", []).append(detail)
            continue
        by_role.setdefault(role, []).append((event, detail))
    return by_role


CALL_CASES = [case for case in CASES if case.startswith("originate_")]


@pytest.mark.parametrize("case", CALL_CASES)
def test_each_channel_of_a_call_goes_through_asterisks_events(replays, case):
    recorded, replayed = replays[case]
    uniqueids = set(recorded["facts"].get("uniqueids", ()))
    for real, sandbox in zip(recorded["sessions"], replayed["sessions"]):
        assert per_role(call_events(sandbox, uniqueids)) == \
            per_role(call_events(real, uniqueids))


def position(events, role, event, detail=None):
    return next(i for i, (r, e, d, _) in enumerate(events)
                if r == role and e == event and (detail is None or d == detail))


@pytest.mark.parametrize("case", CALL_CASES)
def test_the_originate_response_comes_when_asterisk_sends_it(replays, case):
    recorded, replayed = replays[case]
    uniqueids = set(recorded["facts"].get("uniqueids", ()))
    for real, sandbox in zip(recorded["sessions"], replayed["sessions"]):
        for events in (call_events(real, uniqueids), call_events(sandbox, uniqueids)):
            responses = [i for i, (r, *_) in enumerate(events) if r == "response"]
            for index in responses:
                _, _, (response, _), _ = events[index]
                if response == "Success":
                    # when the first leg answers: next to its Newstate Up
                    up = position(events, "first", "Newstate", "Up")
                    assert abs(up - index) == 1, events
                else:
                    # after the `failed` extension's channel appeared
                    assert position(events, "failed", "Newchannel") < index, events
        real_responses = [d for r, _, d, _ in call_events(real, uniqueids) if r == "response"]
        assert [d for r, _, d, _ in call_events(sandbox, uniqueids) if r == "response"] == \
            real_responses


@pytest.mark.parametrize("case", CALL_CASES)
def test_the_events_carry_asterisks_headers_in_its_order(replays, case):
    recorded, replayed = replays[case]
    uniqueids = set(recorded["facts"].get("uniqueids", ()))

    def headers(session):
        shapes = {}
        for role, event, _, pairs in call_events(session, uniqueids):
            if role.startswith("dest-of-"):
                continue  # the bench's Local pairs have no TechCause where PJSIP has
            shapes.setdefault((role, event), [k for k, _ in pairs])
        return shapes

    for real, sandbox in zip(recorded["sessions"], replayed["sessions"]):
        assert headers(sandbox) == headers(real)


def test_a_second_read_call_session_sees_the_other_ones_calls(replays):
    recorded, replayed = replays["originate_response_broadcast"]
    names = [session["name"] for session in replayed["sessions"]]
    assert names == ["other", "gateway"]
    uniqueids = set(recorded["facts"]["uniqueids"])
    other, gateway = (call_events(s, uniqueids) for s in replayed["sessions"])
    assert [e[:3] for e in other] == [e[:3] for e in gateway]
    assert any(role == "response" for role, *_ in other)
