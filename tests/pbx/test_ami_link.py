"""The persistent mode's long-lived AMI link (pbx.persistent), beyond its first request:
one login for many calls, threads that never get each other's replies, events and other
sessions' replies ignored, a lost connection made again within the request's deadline,
a frozen Asterisk, a reply that comes too late. Over real TCP: the sandbox PBX, in this
process or in a process of its own (to freeze it with SIGSTOP, as a hung Asterisk is),
and a scripted AMI server where the order of replies matters.

(The fault matrix of a link's first request runs in test_ami_faults.py.)
"""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from callexchange.pbx import ami, persistent
from callexchange.pbx.wire import MessageParser, encode_message
from callexchange.sandbox.server import Sandbox
from callexchange.sandbox.session import BANNER
from paths import REPO

USER, SECRET = "callexchange", "link-secret"
CONNECT_TIMEOUT, TIMEOUT = 0.5, 1.0
BUDGET = CONNECT_TIMEOUT + TIMEOUT + 0.5
FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "ami"


def settings(port, **overrides):
    values = dict(host="127.0.0.1", port=port, username=USER, secret=SECRET,
                  connect_timeout=CONNECT_TIMEOUT, timeout=TIMEOUT)
    values.update(overrides)
    return SimpleNamespace(**values)


def originate(channel_id):
    return dict(channel="PJSIP/2001", context="callexchange-outbound", exten="12125550199",
                caller_id="12125550199", channel_id=channel_id, timeout_ms=30000,
                variables=[("__CX_UNIQUEID", channel_id)])


def timed(function, *args, **kwargs):
    started = time.monotonic()
    try:
        result = function(*args, **kwargs)
    except ami.AmiError as error:
        result = error
    return result, time.monotonic() - started


def logins(sandbox):
    return [a.connection for a in sandbox.actions_named("Login")]


@pytest.fixture(autouse=True)
def nothing_left_behind():
    """A link starts no thread, and leaves no socket once closed."""
    threads, fds = set(threading.enumerate()), set(os.listdir("/proc/self/fd"))
    yield
    give_up = time.monotonic() + 3
    while time.monotonic() < give_up:
        new_threads = set(threading.enumerate()) - threads
        new_fds = set(os.listdir("/proc/self/fd")) - fds
        if not new_threads and not new_fds:
            return
        time.sleep(0.02)
    assert not new_threads, [t.name for t in new_threads]
    assert not new_fds, sorted(new_fds)


@pytest.fixture
def sandbox():
    with Sandbox(username=USER, secret=SECRET) as pbx:
        yield pbx


# --- one login, many calls -------------------------------------------------------------------

def test_one_login_serves_every_call_and_logoff_comes_only_at_close(sandbox):
    with persistent.AmiLink(settings(sandbox.port)) as link:
        for n in range(20):
            assert link.place_call(originate("1.%d" % n)) == {"msg_sent": None, "msg_error": None}
        assert link.place_call(originate("1.99"), ("pjsip:2001", "hi")) == {"msg_sent": True, "msg_error": None}
        assert logins(sandbox) == [1]
        assert [a.action for a in sandbox.actions].count("Logoff") == 0
    names = [a.action for a in sandbox.actions]
    assert names == ["Login"] + ["Originate"] * 21 + ["MessageSend", "Logoff"]
    assert {a.connection for a in sandbox.actions} == {1}
    assert sandbox.actions[0]["Events"] == "off"
    assert [a["ChannelId"] for a in sandbox.actions_named("Originate")] == \
        ["1.%d" % n for n in range(20)] + ["1.99"]
    assert len({a["ActionID"] for a in sandbox.actions}) == len(sandbox.actions)
    assert link.socket.fileno() == -1


def test_threads_waiting_for_the_first_connection_share_one_login(sandbox):
    sandbox.inject("slow-login=0.3")
    results = []
    with persistent.AmiLink(settings(sandbox.port)) as link:
        threads = [threading.Thread(target=lambda n=n: results.append(
            link.place_call(originate("2.%d" % n)))) for n in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
    assert results == [{"msg_sent": None, "msg_error": None}] * 6
    assert logins(sandbox) == [1]
    assert sorted(a["ChannelId"] for a in sandbox.actions_named("Originate")) == \
        ["2.%d" % n for n in range(6)]


# --- replies never confused, events never taken for replies ----------------------------------

class ScriptedAmi:
    """An AMI server on a loopback port: banner, Login accepted, and every Originate
    answered by `answer(connection, originates)` once `batch` of them have arrived
    (or 0.5 s passed): here, in reverse order, each reply naming its ChannelId."""

    def __init__(self, batch, before_reply=()):
        self.batch = batch
        self.before_reply = before_reply
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, name="scripted-ami")
        self.thread.start()

    def _serve(self):
        conn, _ = self.listener.accept()
        with conn:
            conn.sendall(b"Asterisk Call Manager/5.0.1\r\n")
            parser, waiting = MessageParser(), []
            conn.settimeout(0.5)
            while True:
                try:
                    data = conn.recv(65536)
                except socket.timeout:
                    data = None
                if data == b"":
                    return
                for message in parser.feed(data or b""):
                    if message.get("Action") == "Login":
                        conn.sendall(encode_message([
                            ("Response", "Success"), ("ActionID", message["ActionID"]),
                            ("Message", "Authentication accepted")]))
                    elif message.get("Action") == "Logoff":
                        conn.sendall(encode_message([
                            ("Response", "Goodbye"), ("ActionID", message["ActionID"]),
                            ("Message", "Thanks for all the fish.")]))
                        return
                    else:
                        waiting.append(message)
                if waiting and (len(waiting) >= self.batch or data is None):
                    for message in reversed(waiting):
                        for noise in self.before_reply:
                            conn.sendall(noise)
                        conn.sendall(encode_message([
                            ("Response", "Success"), ("ActionID", message["ActionID"]),
                            ("Message", "queued " + message["ChannelId"])]))
                    waiting = []

    def close(self):
        self.thread.join(10)
        self.listener.close()


def test_concurrent_threads_each_get_their_own_reply_when_replies_come_in_reverse_order():
    server = ScriptedAmi(batch=8)
    replies, errors = {}, []
    try:
        with persistent.AmiLink(settings(server.port, timeout=5)) as link:
            link.connect()

            def call(channel_id):
                try:
                    fields = ami.originate_fields(**originate(channel_id))
                    replies[channel_id] = link.action("Originate", fields)["Message"]
                except Exception as error:  # collected, asserted below
                    errors.append(error)

            for round_ in range(5):
                threads = [threading.Thread(target=call, args=("3.%d.%d" % (round_, n),))
                           for n in range(8)]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join(10)
    finally:
        server.close()
    assert errors == []
    assert len(replies) == 40
    assert all(message == "queued " + channel_id for channel_id, message in replies.items())


def _broadcast_events():
    """What a real Asterisk 22 sent a second read=call session of the gateway's user while
    the first one's Originate rang (tests/fixtures/ami/originate_response_broadcast.json):
    events of that call, its OriginateResponse among them, carrying the other session's
    ActionID."""
    record = json.loads((FIXTURES / "originate_response_broadcast.json").read_text())
    [other] = [s for s in record["sessions"] if s["name"] == "other"]
    text = "".join(t for d, _, t in other["transcript"] if d == "server").encode("latin-1")
    events = [m for m in MessageParser(expect_banner=True).feed(text) if m.get("Event")]
    assert any(m.get("Event") == "OriginateResponse" and m.get("ActionID") for m in events)
    return [encode_message(m.pairs) for m in events]


def test_events_of_other_calls_and_replies_to_other_action_ids_are_ignored():
    noise = _broadcast_events() + [
        encode_message([("Response", "Error"), ("ActionID", "cx-000000000000-2"),
                        ("Message", "Permission denied")]),
        encode_message([("Response", "Success"), ("Message", "no ActionID at all")]),
    ]
    server = ScriptedAmi(batch=4, before_reply=noise)
    replies = {}
    try:
        with persistent.AmiLink(settings(server.port, timeout=5)) as link:
            threads = [threading.Thread(target=lambda n=n: replies.setdefault(n, link.action(
                "Originate", ami.originate_fields(**originate("4.%d" % n)))["Message"]))
                for n in range(4)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(10)
    finally:
        server.close()
    assert replies == {n: "queued 4.%d" % n for n in range(4)}


# --- a lost connection, a restarted Asterisk ---------------------------------------------------

def test_a_connection_asterisk_dropped_is_made_again_for_the_next_call(sandbox):
    with persistent.AmiLink(settings(sandbox.port)) as link:
        link.place_call(originate("5.1"))
        sandbox.reset()  # closes every client connection, as an Asterisk restart does
        result, elapsed = timed(link.place_call, originate("5.2"))
        assert result == {"msg_sent": None, "msg_error": None}
        assert elapsed < TIMEOUT
        assert link.logins == 2
    assert [a.action for a in sandbox.actions] == ["Login", "Originate", "Logoff"]
    assert sandbox.actions[1]["ChannelId"] == "5.2"


def test_asterisk_stopped_is_a_503_at_once_and_started_again_it_takes_calls():
    first = Sandbox(username=USER, secret=SECRET).start()
    port = first.port
    link = persistent.AmiLink(settings(port))
    try:
        link.place_call(originate("6.1"))
        first.stop()
        result, elapsed = timed(link.place_call, originate("6.2"))
        assert isinstance(result, ami.AmiUnavailable) and result.http_status == 503
        assert "Connection refused" in result.detail
        assert not isinstance(result, ami.OriginateUnconfirmed)
        assert elapsed < CONNECT_TIMEOUT
        with Sandbox(port=port, username=USER, secret=SECRET) as second:
            assert link.place_call(originate("6.3")) == {"msg_sent": None, "msg_error": None}
            assert [a["ChannelId"] for a in second.actions_named("Originate")] == ["6.3"]
            link.close()
    finally:
        link.close()
        first.stop()


def test_a_reconnect_shares_one_deadline_with_the_call_it_is_made_for(sandbox):
    with persistent.AmiLink(settings(sandbox.port)) as link:
        link.place_call(originate("7.1"))
        sandbox.reset()
        sandbox.inject("slow-login=0.6")
        sandbox.inject("slow-originate=0.6")
        result, elapsed = timed(link.place_call, originate("7.2"))
    assert isinstance(result, ami.AmiUnavailable), result
    assert "Originate" in result.detail
    assert isinstance(result, ami.OriginateUnconfirmed) and result.uniqueid == "7.2"
    assert elapsed <= BUDGET


def test_a_refused_login_on_reconnect_is_a_502(sandbox):
    with persistent.AmiLink(settings(sandbox.port)) as link:
        link.place_call(originate("8.1"))
        sandbox.reset()
        sandbox.inject("refuse-login")
        result, _ = timed(link.place_call, originate("8.2"))
        assert isinstance(result, ami.AmiRejected) and result.http_status == 502
        assert SECRET not in result.detail
        sandbox.clear_faults()
        assert link.place_call(originate("8.3")) == {"msg_sent": None, "msg_error": None}
    assert [a["ChannelId"] for a in sandbox.actions_named("Originate")] == ["8.3"]


# --- a reply too late, a frozen Asterisk ----------------------------------------------------

def test_an_originate_answered_too_late_is_unconfirmed_and_its_reply_goes_to_no_one(sandbox):
    with persistent.AmiLink(settings(sandbox.port)) as link:
        link.place_call(originate("9.1"))
        sandbox.inject("slow-originate=1.3")
        result, elapsed = timed(link.place_call, originate("9.2"))
        assert isinstance(result, ami.OriginateUnconfirmed) and result.uniqueid
        assert "did not answer in time" in result.detail
        assert TIMEOUT - 0.1 <= elapsed <= TIMEOUT + 0.3
        sandbox.clear_faults()
        # The next call gets a connection of its own: the late reply to 9.2 (Success,
        # on the first connection) is nobody's.
        reply = link.action("Originate", ami.originate_fields(**originate("9.3")))
    [third] = [a for a in sandbox.actions_named("Originate") if a["ChannelId"] == "9.3"]
    assert reply["ActionID"] == third["ActionID"]
    assert third.connection == 2


def test_a_request_deadline_bounds_a_call_on_a_link_that_is_up(sandbox):
    with persistent.AmiLink(settings(sandbox.port)) as link:
        link.place_call(originate("10.1"))
        sandbox.inject("slow-originate=2")
        result, elapsed = timed(link.place_call, originate("10.2"),
                                not_after=time.monotonic() + 0.3)
    assert isinstance(result, ami.OriginateUnconfirmed) and result.uniqueid
    assert elapsed < 0.3 + 0.2


class SandboxProcess:
    """The sandbox PBX in a process of its own, logging each action it handles to a file,
    so that SIGSTOP freezes it as a hung Asterisk is frozen: the kernel still accepts
    connections and takes the bytes sent, nothing answers."""

    CODE = ("import sys; from callexchange.sandbox.server import Sandbox\n"
            "with Sandbox(username=%r, secret=%r, log_path=sys.argv[1]) as pbx:\n"
            "    print(pbx.port, flush=True); sys.stdin.read()\n" % (USER, SECRET))

    def __init__(self, tmp_path):
        self.log = tmp_path / "actions.jsonl"
        self.log.touch()
        env = dict(os.environ, PYTHONPATH=str(REPO / "lib"))
        self.process = subprocess.Popen([sys.executable, "-c", self.CODE, str(self.log)],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        env=env, text=True)
        self.port = int(self.process.stdout.readline())

    def actions(self):
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def channel_ids(self):
        return [dict(a["headers"]).get("ChannelId") for a in self.actions()
                if a["action"] == "Originate"]

    def wait_for(self, condition, timeout=10):
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, self.actions()
            time.sleep(0.02)

    def freeze(self):
        """SIGSTOP, and wait until every thread is stopped (the signal is asynchronous: a
        thread that was just woken may still answer one more action)."""
        self.process.send_signal(signal.SIGSTOP)
        tasks = Path("/proc/%d/task" % self.process.pid)

        def stopped():
            states = []
            for task in tasks.iterdir():
                try:
                    states.append((task / "stat").read_text().rsplit(")", 1)[1].split()[0])
                except OSError:
                    continue
            return states and all(state in ("T", "t") for state in states)

        self.wait_for(stopped)

    def thaw(self):
        self.process.send_signal(signal.SIGCONT)

    def stop(self):
        self.thaw()
        self.process.stdin.close()
        self.process.stdout.close()
        self.process.wait(10)


@pytest.fixture
def frozen_later(tmp_path):
    pbx = SandboxProcess(tmp_path)
    yield pbx
    pbx.stop()


def test_a_frozen_asterisk_after_silence_is_a_503_that_sent_no_originate(frozen_later):
    pbx = frozen_later
    # check_after=0: every call finds the link "silent", so a Ping goes first.
    with persistent.AmiLink(settings(pbx.port), check_after=0) as link:
        link.place_call(originate("11.1"))
        pbx.freeze()
        try:
            result, elapsed = timed(link.place_call, originate("11.2"))
        finally:
            pbx.thaw()
        assert isinstance(result, ami.AmiUnavailable) and result.http_status == 503
        assert not isinstance(result, ami.OriginateUnconfirmed), result.detail
        assert elapsed <= BUDGET
        # Thawed, the PBX reads what the frozen connection got: the Ping, no Originate.
        pbx.wait_for(lambda: [a["action"] for a in pbx.actions()].count("Ping") >= 2)
        assert link.place_call(originate("11.3")) == {"msg_sent": None, "msg_error": None}
    assert pbx.channel_ids() == ["11.1", "11.3"]


def test_without_the_silence_check_a_frozen_asterisk_gets_the_originate_reported_unconfirmed(
        frozen_later):
    pbx = frozen_later
    with persistent.AmiLink(settings(pbx.port), check_after=None) as link:
        link.place_call(originate("12.1"))
        pbx.freeze()
        try:
            result, elapsed = timed(link.place_call, originate("12.2"))
        finally:
            pbx.thaw()
    assert isinstance(result, ami.OriginateUnconfirmed) and result.uniqueid
    assert elapsed <= BUDGET
    # Which is why it is reported as "may have been placed": thawed, Asterisk runs it.
    pbx.wait_for(lambda: "12.2" in pbx.channel_ids())


# --- a drop in the middle of a burst ---------------------------------------------------------

def test_a_drop_during_a_burst_fails_only_calls_in_flight_each_within_its_deadline(sandbox):
    outcomes, lock = [], threading.Lock()
    with persistent.AmiLink(settings(sandbox.port)) as link:
        def caller(n):
            for i in range(30):
                result, elapsed = timed(link.place_call, originate("13.%d.%d" % (n, i)))
                with lock:
                    outcomes.append((result, elapsed))

        threads = [threading.Thread(target=caller, args=(n,)) for n in range(6)]
        for thread in threads:
            thread.start()
        while len(outcomes) < 60:
            time.sleep(0.005)
        sandbox.reset()
        for thread in threads:
            thread.join(30)
        assert link.place_call(originate("13.last")) == {"msg_sent": None, "msg_error": None}
    assert len(outcomes) == 180
    assert all(elapsed <= BUDGET for _, elapsed in outcomes)
    failed = [r for r, _ in outcomes if isinstance(r, ami.AmiError)]
    assert all(isinstance(r, ami.AmiUnavailable) for r in failed), failed
    assert len(failed) <= 6, [r.detail for r in failed]  # at most the calls in flight
    assert sum(1 for r, _ in outcomes if r == {"msg_sent": None, "msg_error": None}) == 180 - len(failed)


# --- the process's links ---------------------------------------------------------------------

def test_persistent_ami_keeps_one_link_and_a_changed_config_brings_a_new_one(sandbox):
    process = persistent.PersistentAmi()
    try:
        first = settings(sandbox.port)
        link = process.link(first)
        assert process.link(settings(sandbox.port)) is link
        process.place_call(first, originate("14.1"))
        process.place_call(first, originate("14.2"))
        edited = settings(sandbox.port, timeout=2.0)
        assert process.ping(edited) == BANNER.decode().strip()
        assert process.link(edited) is not link
        assert link.socket.fileno() == -1
    finally:
        process.close()
    assert [(a.action, a.connection) for a in sandbox.actions] == [
        ("Login", 1), ("Originate", 1), ("Originate", 1), ("Logoff", 1),
        ("Login", 2), ("Ping", 2), ("Logoff", 2)]


def test_a_closed_link_answers_503_and_sends_nothing(sandbox):
    link = persistent.AmiLink(settings(sandbox.port))
    link.place_call(originate("15.1"))
    link.close()
    link.close()
    result, _ = timed(link.place_call, originate("15.2"))
    assert isinstance(result, ami.AmiUnavailable) and "closed" in result.detail
    assert [a.action for a in sandbox.actions] == ["Login", "Originate", "Logoff"]
