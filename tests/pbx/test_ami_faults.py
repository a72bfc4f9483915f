"""The AMI fault matrix, over real TCP on 127.0.0.1.

Each fault that pyst2 hung or crashed on (see docs/decisions.md), played by the sandbox PBX
or by a raw socket: the gateway's client must answer with the right error class and HTTP
status (503 unreachable / no answer, 502 refused by Asterisk) within connect_timeout +
timeout, or succeed where the fault is only noise; and it must leave no socket or thread
behind.

Every test runs with both kinds of AMI session (the `client` fixture): the CGI's session
per request (`ami.place_call`, `ami.ping`, `ami.AmiSession`) and the persistent mode's
long-lived link (`persistent.AmiLink`), here on its first request, when it has to connect
and log in; closed (Logoff) at the end of each exchange. What a link does beyond its first
request is in test_ami_link.py.
"""

import os
import select
import socket
import threading
import time
from contextlib import contextmanager
from types import SimpleNamespace

import pytest

from callexchange.pbx import ami, persistent
from callexchange.sandbox.server import Sandbox

USER = "callexchange"
SECRET = "s3cret-do-not-leak"
CONNECT_TIMEOUT = 0.5
TIMEOUT = 1.0
SLACK = 0.5
BUDGET = CONNECT_TIMEOUT + TIMEOUT + SLACK

UNIQUEID = "1700000000.000000000042"
ORIGINATE = dict(channel="PJSIP/1001", context="callexchange-outbound", exten="4930123456",
                 caller_id="4930123456", channel_id=UNIQUEID, timeout_ms=30000,
                 variables=[("__CX_UNIQUEID", UNIQUEID), ("__CX_ANI", "442012345678")])
MESSAGE = ("pjsip:1001", "Lead 42 calls back")


def settings(port, **overrides):
    values = dict(host="127.0.0.1", port=port, username=USER, secret=SECRET,
                  connect_timeout=CONNECT_TIMEOUT, timeout=TIMEOUT)
    values.update(overrides)
    return SimpleNamespace(**values)


def open_fds():
    return set(os.listdir("/proc/self/fd"))


@pytest.fixture(autouse=True)
def nothing_left_behind():
    """Every test here must end without a thread or file descriptor it started (threads of
    earlier tests that end meanwhile, e.g. a session sandbox's, do not count)."""
    threads, fds = set(threading.enumerate()), open_fds()

    def leftovers():
        return set(threading.enumerate()) - threads, open_fds() - fds

    yield
    give_up = time.monotonic() + 3
    while leftovers() != (set(), set()) and time.monotonic() < give_up:
        time.sleep(0.02)
    new_threads, new_fds = leftovers()
    assert not new_threads, [t.name for t in new_threads]
    assert not new_fds, sorted(new_fds)


class PerRequest:
    """The CGI's AMI client: a session per exchange."""

    place_call = staticmethod(ami.place_call)
    ping = staticmethod(ami.ping)

    @staticmethod
    @contextmanager
    def session(settings_):
        """A logged-in session, logged off and closed at the end."""
        with ami.AmiSession.from_settings(settings_) as session:
            session.login()
            yield session

    @staticmethod
    def unconnected(settings_):
        """(the client, a call that connects it) before anything is connected."""
        session = ami.AmiSession.from_settings(settings_)
        return session, session.connect


class Persistent:
    """The persistent mode's AMI client: a link, here on its first request."""

    @staticmethod
    def place_call(settings_, originate, message=None, not_after=None, while_waiting=None):
        with persistent.AmiLink(settings_) as link:
            return link.place_call(originate, message, not_after, while_waiting)

    @staticmethod
    def ping(settings_):
        with persistent.AmiLink(settings_) as link:
            return link.ping()

    @staticmethod
    @contextmanager
    def session(settings_):
        with persistent.AmiLink(settings_) as link:
            link.connect()
            yield link

    @staticmethod
    def unconnected(settings_):
        link = persistent.AmiLink(settings_)
        return link, link.connect


@pytest.fixture(params=[PerRequest, Persistent], ids=["per-request", "persistent"])
def client(request):
    return request.param


def pbx(*faults, **kwargs):
    return Sandbox(username=USER, secret=SECRET, faults=faults, **kwargs)


def timed(function, *args, **kwargs):
    """(result or the AmiError raised, seconds taken)."""
    started = time.monotonic()
    try:
        result = function(*args, **kwargs)
    except ami.AmiError as error:
        result = error
    return result, time.monotonic() - started


def assert_failed(result, error_class, status, elapsed):
    assert isinstance(result, error_class), result
    assert result.http_status == status
    assert elapsed <= BUDGET, "took %.2fs, budget %.2fs" % (elapsed, BUDGET)
    assert SECRET not in result.detail and SECRET not in str(result)


def place(client, sandbox, message=None, **overrides):
    return timed(client.place_call, settings(sandbox.port, **overrides), dict(ORIGINATE),
                 message)


def action_names(sandbox):
    return [a.action for a in sandbox.actions]


# --- the happy path, for reference ---------------------------------------------------------

def test_place_call_logs_in_originates_sends_the_message_and_logs_off(client):
    with pbx() as sandbox:
        result, elapsed = place(client, sandbox, MESSAGE)
    assert result == {"msg_sent": True, "msg_error": None}
    assert elapsed < TIMEOUT
    assert action_names(sandbox) == ["Login", "Originate", "MessageSend", "Logoff"]
    assert sandbox.actions[0]["Events"] == "off"


def test_place_call_without_message_reports_msg_sent_none(client):
    with pbx() as sandbox:
        result, _ = place(client, sandbox)
    assert result == {"msg_sent": None, "msg_error": None}
    assert action_names(sandbox) == ["Login", "Originate", "Logoff"]


# --- 503: Asterisk unreachable or silent ---------------------------------------------------

def test_no_banner_is_503_within_the_deadline(client):
    with pbx("no-banner") as sandbox:
        result, elapsed = place(client, sandbox)
    assert_failed(result, ami.AmiUnavailable, 503, elapsed)
    assert elapsed >= TIMEOUT - 0.1
    assert "banner" in result.detail
    assert sandbox.actions == []


def test_connection_closed_right_after_accept_is_503_at_once(client):
    with pbx("close-on-accept") as sandbox:
        result, elapsed = place(client, sandbox)
    assert_failed(result, ami.AmiUnavailable, 503, elapsed)
    assert elapsed < TIMEOUT
    assert "closed the connection" in result.detail


def test_banner_then_silence_is_503_within_the_deadline(client):
    with pbx("silent-after-banner") as sandbox:
        result, elapsed = place(client, sandbox)
    assert_failed(result, ami.AmiUnavailable, 503, elapsed)
    assert elapsed >= TIMEOUT - 0.1
    assert "Login" in result.detail


def test_login_answered_after_the_timeout_is_503_and_no_call_is_placed(client):
    with pbx("slow-login=3") as sandbox:
        result, elapsed = place(client, sandbox)
    assert_failed(result, ami.AmiUnavailable, 503, elapsed)
    assert "did not answer in time" in result.detail
    assert action_names(sandbox) == ["Login"]


def test_all_steps_share_one_deadline_not_one_timeout_each(client):
    # Login and Originate each answer within the timeout, but not both together.
    with pbx("slow-login=0.6", "slow-originate=0.6") as sandbox:
        result, elapsed = place(client, sandbox)
    assert_failed(result, ami.AmiUnavailable, 503, elapsed)
    assert "Originate" in result.detail
    assert elapsed < TIMEOUT + 0.3


def test_connection_dropped_in_the_middle_of_the_reply_is_503(client):
    with pbx("drop-mid-reply") as sandbox:
        result, elapsed = place(client, sandbox)
    assert_failed(result, ami.AmiUnavailable, 503, elapsed)
    assert "in the middle of the reply to Originate" in result.detail


def test_goodbye_without_close_is_503_without_waiting_for_the_timeout(client):
    with pbx("goodbye-no-close") as sandbox:
        result, elapsed = place(client, sandbox)
    assert_failed(result, ami.AmiUnavailable, 503, elapsed)
    assert "Goodbye" in result.detail
    assert elapsed < TIMEOUT / 2


def test_port_closed_is_503_at_once(client):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result, elapsed = timed(client.place_call, settings(port), dict(ORIGINATE))
    assert_failed(result, ami.AmiUnavailable, 503, elapsed)
    assert elapsed < CONNECT_TIMEOUT
    assert "Connection refused" in result.detail


@pytest.fixture
def port_that_drops_syns():
    """A listening port whose accept queue is full: the kernel drops further SYNs, so a
    connect to it hangs like one to a host that never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    hung = False
    try:
        for _ in range(32):
            filler = socket.socket()
            fillers.append(filler)
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
            _, writable, _ = select.select([], [filler], [], 0.3)
            if not writable:
                hung = True
                break
        assert hung, "could not fill the accept queue: connects never hang"
        yield port
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


def test_host_that_never_answers_syn_is_503_after_connect_timeout(client, port_that_drops_syns):
    with socket.socket() as probe:  # the connect really hangs
        probe.settimeout(0.2)
        with pytest.raises(socket.timeout):
            probe.connect(("127.0.0.1", port_that_drops_syns))
    result, elapsed = timed(client.place_call, settings(port_that_drops_syns), dict(ORIGINATE))
    assert_failed(result, ami.AmiUnavailable, 503, elapsed)
    assert CONNECT_TIMEOUT - 0.05 <= elapsed <= CONNECT_TIMEOUT + SLACK
    assert "timed out" in result.detail


def test_a_server_that_is_not_asterisk_is_503(client):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)

    def serve():
        conn, _ = listener.accept()
        with conn:
            conn.sendall(b"SSH-2.0-OpenSSH_9.2\r\n")
            conn.settimeout(2)
            try:
                conn.recv(100)
            except OSError:
                pass

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        result, elapsed = timed(client.place_call, settings(listener.getsockname()[1]),
                                dict(ORIGINATE))
    finally:
        thread.join(5)
        listener.close()
    assert_failed(result, ami.AmiUnavailable, 503, elapsed)
    assert "SSH-2.0" in result.detail


# --- 502: Asterisk answered and refused ----------------------------------------------------

def test_login_refused_is_502_and_no_call_is_placed(client):
    with pbx("refuse-login") as sandbox:
        result, elapsed = place(client, sandbox)
    assert_failed(result, ami.AmiRejected, 502, elapsed)
    assert result.detail == "AMI login refused by Asterisk: Authentication failed"
    assert action_names(sandbox) == ["Login"]


def test_wrong_secret_is_502(client):
    with pbx() as sandbox:
        result, elapsed = place(client, sandbox, secret="wrong-secret")
    assert_failed(result, ami.AmiRejected, 502, elapsed)
    assert "wrong-secret" not in result.detail
    assert "Authentication failed" in result.detail


@pytest.mark.parametrize("message", ["Permission denied", "Extension does not exist."])
def test_originate_refused_is_502_with_asterisks_message(client, message):
    with pbx("originate-error=" + message) as sandbox:
        result, elapsed = place(client, sandbox, MESSAGE)
    assert_failed(result, ami.AmiRejected, 502, elapsed)
    assert result.detail == "Originate refused by Asterisk: " + message
    # No message for a call that was not placed; a polite Logoff all the same.
    assert action_names(sandbox) == ["Login", "Originate", "Logoff"]


# --- noise that must not break the call -----------------------------------------------------

def test_event_with_chanvariable_headers_before_the_reply_does_not_break_the_call(client):
    with pbx("chanvariable-event") as sandbox:
        result, elapsed = place(client, sandbox, MESSAGE)
    assert result == {"msg_sent": True, "msg_error": None}
    assert elapsed < TIMEOUT
    assert action_names(sandbox) == ["Login", "Originate", "MessageSend", "Logoff"]


def test_event_with_status_will_follow_before_the_reply_does_not_break_the_call(client):
    with pbx("status-will-follow-event") as sandbox:
        result, elapsed = place(client, sandbox, MESSAGE)
    assert result == {"msg_sent": True, "msg_error": None}
    assert elapsed < TIMEOUT
    assert action_names(sandbox) == ["Login", "Originate", "MessageSend", "Logoff"]


def test_interleaved_events_and_foreign_replies_are_skipped_until_our_action_id(client):
    # The sandbox sends, before the real reply, an Error reply whose ActionID starts with
    # ours: taking it for ours would fail the call.
    with pbx("events-before-reply") as sandbox:
        with client.session(settings(sandbox.port)) as session:
            reply = ami.originate(session, **ORIGINATE)
            pong = session.action("Ping")
    assert reply["Message"] == "Originate successfully queued"
    assert reply["ActionID"] == sandbox.actions_named("Originate")[0]["ActionID"]
    assert pong["Ping"] == "Pong"
    assert session.socket.fileno() == -1


# --- MessageSend after a placed call --------------------------------------------------------

def test_messagesend_refused_after_the_originate_keeps_the_call(client):
    with pbx("messagesend-error") as sandbox:
        result, elapsed = place(client, sandbox, MESSAGE)
    assert result == {"msg_sent": False,
                      "msg_error": "MessageSend refused by Asterisk: Message failed to send."}
    assert action_names(sandbox) == ["Login", "Originate", "MessageSend", "Logoff"]


def test_messagesend_timeout_after_the_originate_keeps_the_call_within_the_deadline(client):
    with pbx("slow-messagesend=3") as sandbox:
        result, elapsed = place(client, sandbox, MESSAGE)
    assert result["msg_sent"] is False
    assert result["msg_error"].startswith("Asterisk AMI did not answer in time")
    assert elapsed <= BUDGET
    assert action_names(sandbox) == ["Login", "Originate", "MessageSend"]


def test_send_message_alone_raises_rejected_on_error(client):
    with pbx("messagesend-error=No endpoint") as sandbox:
        with client.session(settings(sandbox.port)) as session:
            with pytest.raises(ami.AmiRejected) as caught:
                ami.send_message(session, *MESSAGE)
    assert caught.value.detail == "MessageSend refused by Asterisk: No endpoint"


# --- invalid input never reaches a socket ---------------------------------------------------

def test_invalid_variable_is_refused_before_connecting(client):
    with pbx() as sandbox:
        bad = dict(ORIGINATE, variables=[("CX_CRM_ID", "a,b")])
        with pytest.raises(ValueError):
            client.place_call(settings(sandbox.port), bad)
        with pytest.raises(ValueError):
            client.place_call(settings(sandbox.port), dict(ORIGINATE), ("pjsip:1", "a\r\nb"))
    assert sandbox.actions == []


# --- the session object itself ---------------------------------------------------------------

def test_session_socket_is_closed_after_a_failed_connect_and_after_a_with_block(client):
    with pbx("no-banner") as sandbox:
        session, connect = client.unconnected(settings(sandbox.port, timeout=0.3))
        with pytest.raises(ami.AmiUnavailable):
            connect()
        assert session.socket.fileno() == -1
    with pbx() as sandbox:
        with client.session(settings(sandbox.port)) as session:
            assert session.socket.fileno() != -1
        assert session.socket.fileno() == -1
        session.close()  # idempotent
        with pytest.raises(ami.AmiUnavailable):
            session.action("Ping")


def test_ping_logs_in_pings_and_logs_off(client):
    with pbx() as sandbox:
        banner = client.ping(settings(sandbox.port))
    assert banner == "Asterisk Call Manager/11.0.0"
    assert action_names(sandbox) == ["Login", "Ping", "Logoff"]


def test_ping_fails_with_503_when_asterisk_is_silent(client):
    with pbx("silent-after-banner") as sandbox:
        result, elapsed = timed(client.ping, settings(sandbox.port))
    assert_failed(result, ami.AmiUnavailable, 503, elapsed)
