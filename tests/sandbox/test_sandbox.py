"""The sandbox PBX (SPEC §9): the AMI side answers as Asterisk does, records what it was
sent, and is scripted through its public API (faults, outcomes, reset). Its command line
is tested in tests/cli/test_cli_sandbox.py.

The wire checks use a raw socket and byte literals, so they do not depend on our client.
"""

import json
import socket
import threading
import time

import pytest

from callexchange.pbx import ami, wire
from callexchange.pbx.wire import MessageParser
from callexchange.sandbox.server import Sandbox
from callexchange.sandbox.timeline import DEFAULT_OUTCOME, Outcome

USER = "callexchange"
SECRET = "s3cret"
LOGIN = (b"Action: Login\r\nActionID: L1\r\nUsername: callexchange\r\nSecret: s3cret\r\n"
         b"\r\n")


class RawClient:
    """A bare AMI connection: bytes out, parsed messages in."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=2)
        self.parser = MessageParser(expect_banner=True)
        self.pending = []

    def banner(self):
        while self.parser.banner is None:
            self.pending += self.parser.feed(self.sock.recv(4096))
        return self.parser.banner

    def send(self, data):
        self.sock.sendall(data)

    def message(self):
        while not self.pending:
            data = self.sock.recv(4096)
            assert data, "the sandbox closed the connection"
            self.pending += self.parser.feed(data)
        return self.pending.pop(0)

    def closed(self):
        """True if the sandbox closes the connection (within the socket timeout)."""
        try:
            return self.sock.recv(4096) == b""
        except socket.timeout:
            return False

    def close(self):
        self.sock.close()


@pytest.fixture
def pbx():
    with Sandbox(username=USER, secret=SECRET) as sandbox:
        yield sandbox


@pytest.fixture
def client(pbx):
    raw = RawClient(pbx.port)
    yield raw
    raw.close()


def logged_in(client, events=True):
    client.banner()
    client.send(LOGIN if events else LOGIN.replace(b"\r\n\r\n", b"\r\nEvents: off\r\n\r\n"))
    assert client.message()["Message"] == "Authentication accepted"
    return client


def gateway_originate(action_id="O1", channel="PJSIP/2001", context="callexchange-outbound",
                      exten="4930123456", uniqueid="1700000000.77", mode="agent_first",
                      extension="2001", destination="4930123456", more=b""):
    """The bytes of an Originate as the gateway sends it (its CX_ variables)."""
    return (b"Action: Originate\r\nActionID: %s\r\nChannel: %s\r\nContext: %s\r\n"
            b"Exten: %s\r\nPriority: 1\r\nTimeout: 30000\r\nChannelId: %s\r\n"
            b"Async: true\r\nCallerID: %s\r\nVariable: __CX_UNIQUEID=%s\r\n"
            b"Variable: __CX_MODE=%s\r\nVariable: __CX_EXTENSION=%s\r\n"
            b"Variable: __CX_DESTINATION=%s\r\nVariable: __CX_ANI=12125550100\r\n%s\r\n"
            % tuple(value.encode() if isinstance(value, str) else value for value in (
                action_id, channel, context, exten, uniqueid, destination, uniqueid, mode,
                extension, destination, more)))


def events_until(client, last):
    """The messages up to the first for which last(message) holds."""
    seen = []
    while True:
        message = client.message()
        seen.append(message)
        if last(message):
            return seen


def summary(messages):
    """(Event or Response, Channel, state or reason or cause) of each message."""
    return [(m.get("Event") or m.get("Response"), m.get("Channel") or m.get("DestChannel"),
             m.get("ChannelStateDesc") or m.get("DestChannelStateDesc") or m.get("Reason")
             or m.get("Cause") or m.get("Message"))
            for m in messages]


# --- the wire -----------------------------------------------------------------------------

def test_banner_is_asterisk_22s_call_manager_11(pbx):
    with socket.create_connection(("127.0.0.1", pbx.port), timeout=2) as sock:
        assert sock.recv(4096) == b"Asterisk Call Manager/11.0.0\r\n"


def test_login_is_accepted_and_a_read_call_user_gets_no_fully_booted(client):
    client.banner()
    client.send(LOGIN + b"Action: Ping\r\nActionID: P1\r\n\r\n")
    reply, pong = client.message(), client.message()
    assert reply.pairs == [("Response", "Success"), ("ActionID", "L1"),
                           ("Message", "Authentication accepted")]
    assert pong["ActionID"] == "P1"


def test_a_user_that_may_read_system_events_gets_fully_booted():
    with Sandbox(username=USER, secret=SECRET, read="system,call") as pbx:
        client = RawClient(pbx.port)
        try:
            client.banner()
            client.send(LOGIN)
            assert client.message()["Message"] == "Authentication accepted"
            event = client.message()
            assert event.pairs == [("Event", "FullyBooted"), ("Privilege", "system,all"),
                                   ("Uptime", "1"), ("LastReload", "1"),
                                   ("Status", "Fully Booted")]
        finally:
            client.close()


def test_login_with_events_off_gets_no_events(client):
    logged_in(client, events=False)
    client.send(gateway_originate() + b"Action: Ping\r\nActionID: P1\r\n\r\n")
    assert client.message()["Message"] == "Originate successfully queued"
    assert client.message()["ActionID"] == "P1"


def test_wrong_secret_is_refused_and_the_connection_closed(client):
    client.banner()
    client.send(LOGIN.replace(b"s3cret", b"guess"))
    assert client.message().pairs == [("Response", "Error"), ("ActionID", "L1"),
                                      ("Message", "Authentication failed")]
    assert client.closed()


def test_actions_before_login_are_permission_denied(client):
    client.banner()
    client.send(b"Action: Originate\r\nActionID: O1\r\nChannel: PJSIP/1\r\n"
                b"Context: c\r\nExten: 1\r\n\r\n")
    assert client.message().pairs == [("Response", "Error"), ("ActionID", "O1"),
                                      ("Message", "Permission denied")]


def test_ping_answers_pong_with_a_timestamp(client):
    logged_in(client)
    client.send(b"Action: Ping\r\nActionID: P1\r\n\r\n")
    reply = client.message()
    assert [k for k, _ in reply.pairs] == ["Response", "ActionID", "Ping", "Timestamp"]
    assert reply["Ping"] == "Pong"
    assert abs(float(reply["Timestamp"]) - time.time()) < 60


def test_agent_first_originate_response_comes_when_the_agent_answers(client):
    logged_in(client)
    client.send(gateway_originate())
    messages = events_until(client, lambda m: m.get("Event") == "OriginateResponse")
    messages += events_until(client, lambda m: m.get("Event") == "Newchannel")
    assert summary(messages) == [
        ("Success", None, "Originate successfully queued"),
        ("Newchannel", "PJSIP/2001-00000000", "Down"),
        ("DialBegin", "PJSIP/2001-00000000", "Down"),
        ("Newstate", "PJSIP/2001-00000000", "Ringing"),
        ("OriginateResponse", "PJSIP/2001-00000000", "4"),
        ("Newstate", "PJSIP/2001-00000000", "Up"),
        ("DialEnd", "PJSIP/2001-00000000", "Up"),
        ("Newchannel", "PJSIP/trunk-00000001", "Down")]
    response = messages[4]
    assert response.pairs == [
        ("Event", "OriginateResponse"), ("Privilege", "call,all"), ("ActionID", "O1"),
        ("Response", "Success"), ("Channel", "PJSIP/2001-00000000"),
        ("Context", "callexchange-outbound"), ("Exten", "4930123456"), ("Reason", "4"),
        ("Uniqueid", "1700000000.77"), ("CallerIDNum", "4930123456"),
        ("CallerIDName", "<unknown>")]
    newchannel = messages[1]
    assert [k for k, _ in newchannel.pairs] == [
        "Event", "Privilege", "Channel", "ChannelState", "ChannelStateDesc", "CallerIDNum",
        "CallerIDName", "ConnectedLineNum", "ConnectedLineName", "Language", "AccountCode",
        "Context", "Exten", "Priority", "Uniqueid", "Linkedid"]
    assert newchannel["Uniqueid"] == newchannel["Linkedid"] == "1700000000.77"
    lead = messages[-1]
    assert lead["Linkedid"] == "1700000000.77" and lead["Uniqueid"] != "1700000000.77"


def test_agent_first_a_busy_lead_does_not_change_the_originate_response():
    with Sandbox(username=USER, secret=SECRET, outcomes={"4930123456": "busy"},
                 ring_seconds=0.01) as pbx:
        client = logged_in(RawClient(pbx.port))
        try:
            client.send(gateway_originate())
            messages = events_until(client, lambda m: m.get("Event") == "Hangup"
                                    and m["Channel"].startswith("PJSIP/2001-"))
        finally:
            client.close()
    assert [(m["Response"], m["Reason"]) for m in messages
            if m.get("Event") == "OriginateResponse"] == [("Success", "4")]
    hangups = [(m["Channel"], m["Cause"], m["Cause-txt"]) for m in messages
               if m.get("Event") == "Hangup"]
    assert hangups == [("PJSIP/trunk-00000001", "17", "User busy"),
                       ("PJSIP/2001-00000000", "16", "Normal Clearing")]
    [dial_end] = [m for m in messages if m.get("Event") == "DialEnd"
                  and m["DestChannel"].startswith("PJSIP/trunk")]
    assert dial_end["DialStatus"] == "BUSY" and dial_end["Channel"] == "PJSIP/2001-00000000"


@pytest.mark.parametrize("agent, reason, cause", [("busy", "0", "17"), ("noanswer", "3", "19")])
def test_agent_first_an_agent_who_does_not_answer_fails_after_the_failed_extension(
        agent, reason, cause):
    with Sandbox(username=USER, secret=SECRET, agents={"2001": agent}, ring_seconds=0.01,
                 no_answer_seconds=0.05) as pbx:
        client = logged_in(RawClient(pbx.port))
        try:
            client.send(gateway_originate())
            messages = events_until(client, lambda m: m.get("Event") == "OriginateResponse")
        finally:
            client.close()
    kinds = [(m.get("Event"), m.get("Channel")) for m in messages[1:]]
    failed = kinds.index(("Hangup", "OutgoingSpoolFailed"))
    assert kinds.index(("Newchannel", "OutgoingSpoolFailed")) < failed < len(kinds) - 1
    response = messages[-1]
    assert (response["Response"], response["Reason"], response["Channel"],
            response["Uniqueid"]) == ("Failure", reason, "PJSIP/2001", "1700000000.77")
    [hangup] = [m for m in messages if m.get("Event") == "Hangup"
                and m["Channel"].startswith("PJSIP/2001-")]
    assert hangup["Cause"] == cause


@pytest.mark.parametrize("lead, reason", [("answered", "4"), ("busy", "5"), ("noanswer", "0"),
                                          ("congestion", "8"), ("failed", "0")])
def test_dialer_mode_the_lead_decides_the_originate_response(lead, reason):
    with Sandbox(username=USER, secret=SECRET, outcomes={"4930123456": lead},
                 ring_seconds=0.01, no_answer_seconds=0.05) as pbx:
        client = logged_in(RawClient(pbx.port))
        try:
            client.send(gateway_originate(
                channel="Local/4930123456@callexchange-outbound/n", exten="2001",
                context="callexchange-agent", mode="dialer"))
            messages = events_until(client, lambda m: m.get("Event") == "OriginateResponse")
        finally:
            client.close()
    response = messages[-1]
    assert response["Reason"] == reason
    first = [m for m in messages if m.get("Event") == "Newchannel"][:2]
    assert [(m["Channel"], m["Uniqueid"]) for m in first] == [
        ("Local/4930123456@callexchange-outbound-00000000;1", "1700000000.77"),
        ("Local/4930123456@callexchange-outbound-00000000;2", "1700000000.77;2")]
    if lead == "answered":
        assert (response["Response"], response["Channel"]) == (
            "Success", "Local/4930123456@callexchange-outbound-00000000;1")
    else:
        assert (response["Response"], response["Channel"]) == (
            "Failure", "Local/4930123456@callexchange-outbound/n")
        spool = [(m["Event"], i) for i, m in enumerate(messages)
                 if m.get("Channel") == "OutgoingSpoolFailed"]
        assert [event for event, _ in spool] == ["Newchannel", "Hangup"]
        assert spool[-1][1] == len(messages) - 2  # the failed extension ran, then this


def test_a_channel_technology_asterisk_has_not_loaded_fails_with_reason_0(client):
    logged_in(client)
    client.send(gateway_originate(channel="SIP/2001"))
    messages = events_until(client, lambda m: m.get("Event") == "OriginateResponse")
    assert summary(messages) == [
        ("Success", None, "Originate successfully queued"),
        ("Newchannel", "OutgoingSpoolFailed", "Down"),
        ("Hangup", "OutgoingSpoolFailed", "Down"),
        ("OriginateResponse", "SIP/2001", "0")]
    assert messages[-1]["Response"] == "Failure"
    assert messages[2]["Context"] == "callexchange-outbound" and messages[2]["Exten"] == "failed"


def test_a_channelid_in_use_fails_the_second_originate(client):
    logged_in(client)
    client.send(gateway_originate() + gateway_originate(action_id="O2"))
    messages = events_until(client, lambda m: m.get("Event") == "OriginateResponse")
    assert [m["Message"] for m in messages if m.get("Response") == "Success"
            and not m.get("Event")] == ["Originate successfully queued"] * 2
    response = messages[-1]
    assert (response["ActionID"], response["Response"], response["Reason"],
            response["Channel"]) == ("O2", "Failure", "0", "PJSIP/2001")


def test_originate_into_a_context_the_dialplan_lacks_is_refused_at_once(client):
    logged_in(client)
    client.send(gateway_originate(context="no-such-context") +
                gateway_originate(action_id="O2", context="callexchange-outbound", exten="h"))
    assert client.message().pairs == [("Response", "Error"), ("ActionID", "O1"),
                                      ("Message", "Extension does not exist.")]
    assert client.message()["Message"] == "Extension does not exist."


def test_every_read_call_session_gets_every_originate_response(pbx):
    sessions = [logged_in(RawClient(pbx.port)) for _ in range(2)]
    quiet = logged_in(RawClient(pbx.port), events=False)
    try:
        sessions[0].send(gateway_originate())
        for session in sessions:
            response = events_until(session,
                                    lambda m: m.get("Event") == "OriginateResponse")[-1]
            assert response["ActionID"] == "O1" and response["Reason"] == "4"
        quiet.send(b"Action: Ping\r\nActionID: P9\r\n\r\n")
        assert quiet.message()["ActionID"] == "P9"  # nothing came before the Pong
    finally:
        for session in sessions + [quiet]:
            session.close()


def test_a_synchronous_originate_is_answered_once_the_first_leg_answered_or_failed():
    with Sandbox(username=USER, secret=SECRET, agents={"2002": "busy"},
                 ring_seconds=0.05) as pbx:
        client = logged_in(RawClient(pbx.port), events=False)
        try:
            started = time.monotonic()
            client.send(gateway_originate().replace(b"Async: true\r\n", b""))
            assert client.message()["Message"] == "Originate successfully queued"
            assert time.monotonic() - started >= 0.05
            client.send(gateway_originate(action_id="O2", channel="PJSIP/2002",
                                          extension="2002", uniqueid="1700000000.78")
                        .replace(b"Async: true\r\n", b""))
            assert client.message().pairs == [("Response", "Error"), ("ActionID", "O2"),
                                              ("Message", "Originate failed")]
        finally:
            client.close()


@pytest.mark.parametrize("headers, message", [
    (b"Context: c\r\nExten: 1\r\n", "Channel not specified"),
    (b"Channel: nonsense\r\nContext: c\r\nExten: 1\r\n", "Invalid channel"),
    (b"Channel: PJSIP/1\r\nContext: c\r\nExten: 1\r\nPriority: x\r\n", "Invalid priority"),
    (b"Channel: PJSIP/1\r\nContext: c\r\nExten: 1\r\nTimeout: soon\r\n", "Invalid timeout"),
    (b"Channel: PJSIP/1\r\nChannelId: " + b"1" * 150 + b"\r\n",
     "Uniqueid length exceeds maximum of 149"),
    (b"Channel: PJSIP/1\r\nApplication: System\r\nData: rm -rf /\r\nAsync: true\r\n",
     "Originate Access Forbidden: app or data blacklisted"),
    (b"Channel: PJSIP/1\r\nContext: callexchange-outbound\r\nExten: 1\r\n",
     "Originate with 'Exten' requires 'Context' and 'Priority'"),
])
def test_invalid_originate_is_refused_like_asterisk(client, headers, message):
    logged_in(client, events=False)
    client.send(b"Action: Originate\r\nActionID: O2\r\n" + headers + b"\r\n")
    assert client.message().pairs == [("Response", "Error"), ("ActionID", "O2"),
                                      ("Message", message)]


def test_messagesend_is_sent(client):
    logged_in(client)
    client.send(b"Action: MessageSend\r\nActionID: M1\r\nTo: pjsip:1001\r\nBody: hi\r\n\r\n")
    assert client.message().pairs == [("Response", "Success"), ("ActionID", "M1"),
                                      ("Message", "Message successfully sent")]


def test_messagesend_to_a_technology_asterisk_has_not_loaded_is_refused(client):
    logged_in(client)
    client.send(b"Action: MessageSend\r\nActionID: M1\r\nTo: sip:1001\r\nBody: hi\r\n\r\n"
                b"Action: MessageSend\r\nActionID: M2\r\nBody: hi\r\n\r\n")
    assert client.message().pairs == [("Response", "Error"), ("ActionID", "M1"),
                                      ("Message", "Message technology not found.")]
    assert client.message()["Message"] == "No 'To' address specified."


def test_logoff_says_goodbye_and_closes(client):
    logged_in(client)
    client.send(b"Action: Logoff\r\nActionID: G1\r\n\r\n")
    assert client.message().pairs == [("Response", "Goodbye"), ("ActionID", "G1"),
                                      ("Message", "Thanks for all the fish.")]
    assert client.closed()


def test_unknown_and_ungranted_actions_get_asterisks_two_answers(client):
    logged_in(client)
    client.send(b"Action: Frobnicate\r\nActionID: X1\r\n\r\n"
                b"Action: Command\r\nActionID: X2\r\nCommand: core show version\r\n\r\n")
    assert client.message().pairs == [
        ("Response", "Error"), ("ActionID", "X1"),
        ("Message", "Invalid/unknown command: Frobnicate. Use Action: ListCommands to show "
                    "available commands.")]
    assert client.message().pairs == [("Response", "Error"), ("ActionID", "X2"),
                                      ("Message", "Permission denied")]


def test_a_user_without_a_privilege_may_not_use_its_actions():
    with Sandbox(username=USER, secret=SECRET, write="originate") as pbx:
        client = logged_in(RawClient(pbx.port))
        try:
            client.send(b"Action: MessageSend\r\nActionID: M1\r\nTo: pjsip:1\r\nBody: x\r\n\r\n"
                        b"Action: ListCommands\r\nActionID: L2\r\n\r\n")
            assert client.message()["Message"] == "Permission denied"
            listing = client.message()
        finally:
            client.close()
    assert "Originate" in listing and "MessageSend" not in listing
    assert listing["Originate"] == "Originate a call.  (Priv: originate,all)"


def test_events_action_turns_events_on_and_off(client):
    logged_in(client, events=False)
    client.send(b"Action: Events\r\nActionID: E1\r\nEventMask: on\r\n\r\n")
    assert client.message().pairs == [("Response", "Success"), ("ActionID", "E1"),
                                      ("Events", "On")]
    client.send(gateway_originate())
    assert client.message()["Message"] == "Originate successfully queued"
    assert client.message()["Event"] == "Newchannel"


def test_split_replies_fault_cuts_every_message_and_the_client_still_reads_them():
    with Sandbox(username=USER, secret=SECRET, faults=["split-replies"]) as pbx:
        settings = type("S", (), dict(host="127.0.0.1", port=pbx.port, username=USER,
                                      secret=SECRET, connect_timeout=1, timeout=2))
        assert ami.ping(settings) == "Asterisk Call Manager/11.0.0"
        # The pieces leave 2 ms apart: a reader that is not descheduled for longer sees
        # the banner arrive in parts (one connection in three is enough to show it).
        firsts = []
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", pbx.port), timeout=2) as sock:
                firsts.append(len(sock.recv(4096)))
        assert min(firsts) < len(b"Asterisk Call Manager/11.0.0\r\n"), firsts


def test_outcomes_are_found_for_the_lead_and_the_agent_in_both_modes():
    pbx = Sandbox(outcomes={"4930123456": "noanswer"}, agents={"2002": "busy", "*": "noanswer"})
    dialer = wire.Message([("Channel", "Local/4930123456@callexchange-outbound/n"),
                           ("Exten", "2002"), ("Variable", "__CX_MODE=dialer")])
    assert pbx.outcome_for(dialer) == Outcome("noanswer", 0.0)
    assert pbx.agent_outcome_for(dialer) == "busy"
    agent_first = wire.Message([("Channel", "PJSIP/2003"), ("Exten", "999"),
                                ("Variable", "__CX_DESTINATION=4930123456")])
    assert pbx.outcome_for(agent_first) == Outcome("noanswer", 0.0)
    assert pbx.agent_outcome_for(agent_first) == "noanswer"  # the '*' rule
    assert pbx.outcome_for(wire.Message([("Exten", "999")])) == DEFAULT_OUTCOME
    assert Sandbox().agent_outcome_for(agent_first) == "answered"


# --- the record of what was sent -----------------------------------------------------------

def test_actions_record_every_header_in_order_with_the_secret_masked(pbx):
    variables = [("__CX_UNIQUEID", "1700000000.9"), ("__CX_ANI", "442012345678")]
    ami.place_call(
        type("S", (), dict(host="127.0.0.1", port=pbx.port, username=USER, secret=SECRET,
                           connect_timeout=1, timeout=2)),
        dict(channel="PJSIP/1001", context="callexchange-outbound", exten="4930123456",
             variables=variables,
             channel_id="1700000000.9", timeout_ms=30000))
    login, originate, logoff = pbx.actions
    assert (login.action, originate.action, logoff.action) == ("Login", "Originate", "Logoff")
    assert login["Secret"] == "***" and login["Username"] == USER
    assert originate["ChannelId"] == "1700000000.9" and originate["Async"] == "true"
    assert originate.header_list("Variable") == [
        "__CX_UNIQUEID=1700000000.9", "__CX_ANI=442012345678"]
    assert [k for k, _ in originate.pairs][:2] == ["Action", "ActionID"]
    assert login.connection == originate.connection == logoff.connection == 1
    assert pbx.actions_named("originate") == [originate]


def test_log_file_gets_one_json_line_per_action_with_the_secret_masked(tmp_path):
    log = tmp_path / "ami.jsonl"
    with Sandbox(username=USER, secret=SECRET, log_path=str(log)) as pbx:
        assert ami.ping(type("S", (), dict(host="127.0.0.1", port=pbx.port, username=USER,
                                           secret=SECRET, connect_timeout=1, timeout=2)))
    text = log.read_text()
    assert SECRET not in text
    lines = [json.loads(line) for line in text.splitlines()]
    assert [line["action"] for line in lines] == ["Login", "Ping", "Logoff"]
    assert ["Secret", "***"] in lines[0]["headers"]
    assert lines[0]["headers"][0] == ["Action", "Login"]


def test_stop_closes_held_connections_and_joins_its_threads():
    threads = threading.active_count()
    pbx = Sandbox(faults=["no-banner"]).start()
    raw = socket.create_connection(("127.0.0.1", pbx.port), timeout=2)
    try:
        deadline = time.monotonic() + 2
        while threading.active_count() < threads + 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert threading.active_count() == threads + 2  # accept loop + the held connection
        pbx.stop()
        assert threading.active_count() == threads
        assert raw.recv(10) == b""
    finally:
        raw.close()
        pbx.stop()


# --- scripting it through its API (the tests' AMI double) ----------------------------------

def test_inject_and_clear_faults_change_what_the_next_session_gets():
    settings = type("S", (), dict(host="127.0.0.1", username=USER, secret=SECRET,
                                  connect_timeout=1, timeout=2))
    with Sandbox(username=USER, secret=SECRET) as pbx:
        settings.port = pbx.port
        assert pbx.inject("refuse-login") == ("refuse-login", None)
        assert pbx.inject("slow-messagesend", "0.5") == ("slow-messagesend", 0.5)
        assert pbx.faults == {"refuse-login": None, "slow-messagesend": 0.5}
        with pytest.raises(ami.AmiRejected):
            ami.ping(settings)
        pbx.clear_faults("refuse-login")
        assert pbx.faults == {"slow-messagesend": 0.5}
        assert ami.ping(settings).startswith("Asterisk Call Manager/")
        pbx.clear_faults()
        assert pbx.faults == {}
        with pytest.raises(ValueError):
            pbx.inject("no-such-fault")


def test_faults_and_outcomes_read_back_are_copies():
    with Sandbox(faults=["no-banner"], outcomes={"1": "busy"}) as pbx:
        pbx.faults.clear()
        pbx.outcomes.clear()
        assert pbx.faults == {"no-banner": None}
        assert pbx.outcomes == {"1": Outcome("busy", 0.0)}
        pbx.actions.append("x")
        assert pbx.actions == []


def test_reset_restores_what_the_constructor_was_given_and_empties_the_record():
    with Sandbox(username=USER, secret=SECRET, faults=["slow-login=0"],
                 outcomes={"+4930123456": "busy"}) as pbx:
        port = pbx.port
        pbx.inject("refuse-login")
        pbx.set_outcome("4930123456", "answered:3")
        pbx.set_outcome("*", "noanswer")
        with ami.AmiSession("127.0.0.1", port, USER, SECRET, 1, 2) as session:
            with pytest.raises(ami.AmiRejected):
                session.login()
        assert [a.action for a in pbx.actions] == ["Login"]
        assert pbx.reset()
        assert pbx.faults == {"slow-login": 0.0}
        assert pbx.outcomes == {"4930123456": Outcome("busy", 0.0)}
        assert pbx.actions == [] and pbx.port == port
        with ami.AmiSession("127.0.0.1", port, USER, SECRET, 1, 2) as session:
            session.login()


def test_reset_closes_the_connections_still_open():
    with Sandbox(faults=["silent-after-banner"]) as pbx:
        raw = RawClient(pbx.port)
        try:
            assert raw.banner().startswith("Asterisk Call Manager/")
            pbx.reset()
            assert raw.closed()
        finally:
            raw.close()


def test_the_sandbox_modules_keep_no_state_of_their_own():
    """Everything a sandbox knows lives on its Sandbox object: two sandboxes (or two
    tests) never share a record, a fault or a call."""
    import types

    from callexchange.sandbox import (agi_peer, asterisk_actions, calls, dialplan, scripting,
                                      server, session, timeline)

    for module in (server, session, calls, agi_peer, asterisk_actions, dialplan, scripting,
                   timeline):
        for name, value in vars(module).items():
            if name.startswith("__") or isinstance(value, (types.ModuleType, type,
                                                           types.FunctionType)):
                continue
            assert isinstance(value, (str, bytes, int, float, tuple, frozenset,
                                      types.MappingProxyType)), \
                "%s.%s is module state: %r" % (module.__name__, name, type(value))
