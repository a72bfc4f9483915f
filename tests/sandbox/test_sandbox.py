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
from callexchange.sandbox import server as sandbox_module
from callexchange.pbx.wire import MessageParser
from callexchange.sandbox.server import Outcome, Sandbox

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
    if events:
        assert client.message()["Event"] == "FullyBooted"
    return client


# --- the wire -----------------------------------------------------------------------------

def test_banner_is_asterisk_call_manager_5(pbx):
    with socket.create_connection(("127.0.0.1", pbx.port), timeout=2) as sock:
        assert sock.recv(4096) == b"Asterisk Call Manager/5.0.1\r\n"


def test_login_is_accepted_then_fully_booted_follows(client):
    client.banner()
    client.send(LOGIN)
    reply, event = client.message(), client.message()
    assert reply.pairs == [("Response", "Success"), ("ActionID", "L1"),
                           ("Message", "Authentication accepted")]
    assert event["Event"] == "FullyBooted" and event["Status"] == "Fully Booted"


def test_login_with_events_off_gets_no_events(client):
    logged_in(client, events=False)
    client.send(b"Action: Ping\r\nActionID: P1\r\n\r\n")
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


def test_originate_is_queued_and_originate_response_carries_the_channel_id(client):
    logged_in(client)
    client.send(b"Action: Originate\r\nActionID: O1\r\nChannel: PJSIP/1001\r\n"
                b"Context: callexchange-outbound\r\nExten: 4930123456\r\nPriority: 1\r\n"
                b"Timeout: 30000\r\nChannelId: 1700000000.77\r\nAsync: true\r\n"
                b"CallerID: \"Sales\" <442012345678>\r\n\r\n")
    reply, event = client.message(), client.message()
    assert reply.pairs == [("Response", "Success"), ("ActionID", "O1"),
                           ("Message", "Originate successfully queued")]
    assert event["Event"] == "OriginateResponse"
    assert event["ActionID"] == "O1"
    assert event["Response"] == "Success" and event["Reason"] == "4"
    assert event["Uniqueid"] == "1700000000.77"
    assert (event["Channel"], event["Context"], event["Exten"]) == (
        "PJSIP/1001", "callexchange-outbound", "4930123456")
    assert (event["CallerIDNum"], event["CallerIDName"]) == ("442012345678", "Sales")


@pytest.mark.parametrize("outcome, response, reason", [
    ("busy", "Failure", "5"), ("noanswer", "Failure", "3"), ("failed", "Failure", "0"),
    ("congestion", "Failure", "8"), ("answered:30", "Success", "4")])
def test_originate_response_follows_the_outcome_chosen_for_the_destination(
        outcome, response, reason):
    with Sandbox(username=USER, secret=SECRET,
                 outcomes={"+4930123456": outcome, "*": "busy"}) as pbx:
        with ami.AmiSession("127.0.0.1", pbx.port, USER, SECRET, 1, 2) as session:
            session.login(events=True)
            ami.originate(session, channel="PJSIP/1001", context="c", exten="4930123456",
                          channel_id="1700000000.5", timeout_ms=1000)
            event = session.next_event("OriginateResponse")
            # a destination without a rule gets the '*' rule
            ami.originate(session, channel="PJSIP/1001", context="c", exten="111",
                          channel_id="1700000000.6", timeout_ms=1000)
            other = session.next_event("OriginateResponse")
    assert (event["Response"], event["Reason"], event["Uniqueid"]) == (
        response, reason, "1700000000.5")
    assert (other["Reason"], other["Uniqueid"]) == ("5", "1700000000.6")


def test_outcome_is_found_by_the_lead_channel_in_dialer_mode():
    with Sandbox(outcomes={"4930123456": "noanswer"}) as pbx:
        action = wire.Message([("Channel", "Local/4930123456@callexchange-outbound"),
                              ("Exten", "1001")])
        assert pbx.outcome_for(action) == Outcome("noanswer", 0.0)
        assert pbx.outcome_for(wire.Message([("Exten", "999")])) == sandbox_module.DEFAULT_OUTCOME


@pytest.mark.parametrize("headers, message", [
    (b"Context: c\r\nExten: 1\r\n", "Channel not specified"),
    (b"Channel: nonsense\r\nContext: c\r\nExten: 1\r\n", "Invalid channel"),
    (b"Channel: PJSIP/1\r\nContext: c\r\nExten: 1\r\nPriority: x\r\n", "Invalid priority"),
    (b"Channel: PJSIP/1\r\nContext: c\r\nExten: 1\r\nTimeout: soon\r\n", "Invalid timeout"),
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


def test_logoff_says_goodbye_and_closes(client):
    logged_in(client)
    client.send(b"Action: Logoff\r\nActionID: G1\r\n\r\n")
    assert client.message().pairs == [("Response", "Goodbye"), ("ActionID", "G1"),
                                      ("Message", "Thanks for all the fish.")]
    assert client.closed()


def test_unknown_action_is_invalid_unknown_command(client):
    logged_in(client)
    client.send(b"Action: Command\r\nActionID: X1\r\nCommand: core show version\r\n\r\n")
    assert client.message().pairs == [("Response", "Error"), ("ActionID", "X1"),
                                      ("Message", "Invalid/unknown command")]


# --- the record of what was sent -----------------------------------------------------------

def test_actions_record_every_header_in_order_with_the_secret_masked(pbx):
    variables = [("__CX_UNIQUEID", "1700000000.9"), ("__CX_ANI", "442012345678")]
    ami.place_call(
        type("S", (), dict(host="127.0.0.1", port=pbx.port, username=USER, secret=SECRET,
                           connect_timeout=1, timeout=2)),
        dict(channel="PJSIP/1001", context="c", exten="4930123456", variables=variables,
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


def test_on_originate_is_the_hook_for_playing_calls():
    class Player(Sandbox):
        def on_originate(self, action):
            events = super().on_originate(action)
            hangup = [("Event", "Hangup"), ("Uniqueid", action.uniqueid)]
            return events + [(self.response_delay + 0.05, hangup)]

    with Player(username=USER, secret=SECRET) as pbx:
        with ami.AmiSession("127.0.0.1", pbx.port, USER, SECRET, 1, 2) as session:
            session.login(events=True)
            ami.originate(session, channel="PJSIP/1", context="c", exten="1",
                          channel_id="1700000000.3", timeout_ms=1000)
            assert session.next_event("OriginateResponse")["Uniqueid"] == "1700000000.3"
            assert session.next_event("Hangup")["Uniqueid"] == "1700000000.3"


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

    from callexchange.sandbox import agi_peer, calls, server

    for module in (server, calls, agi_peer):
        for name, value in vars(module).items():
            if name.startswith("__") or isinstance(value, (types.ModuleType, type,
                                                           types.FunctionType)):
                continue
            assert isinstance(value, (str, bytes, int, float, tuple, frozenset,
                                      types.MappingProxyType)), \
                "%s.%s is module state: %r" % (module.__name__, name, type(value))
