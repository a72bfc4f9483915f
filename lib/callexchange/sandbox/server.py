"""The sandbox PBX: a stand-in for Asterisk 22 that speaks the real AMI wire protocol.

`callexchange sandbox` (its command line: `cli/sandbox.py`) runs it on the `[ami]` host
and port of the config, so the gateway needs no change to use it; CRM developers test
against it without dialing anyone. The project's tests use the same class (`Sandbox`) as
their AMI test double, through its public API only: scripted faults (no banner, refused
login, Originate refused, dropped connection, slow answers...) with `inject` and
`clear_faults`, outcomes with `set_outcome` and `set_agent`, `reset()` between tests, and
`actions`, the record of everything the gateway sent.

It answers as a real Asterisk 22.10.1 answers the gateway's AMI user (`read = call`,
`write = originate,message`; checked against transcripts of one by
tests/sandbox/test_sandbox_conformance.py), every reply echoing the ActionID:

* on connect, the banner `Asterisk Call Manager/11.0.0`;
* Login: `Authentication accepted` (FullyBooted only to a user that may read `system`
  events); a wrong username or secret gets `Authentication failed` (after
  `login_failure_delay`; Asterisk waits a second) and the connection is closed;
* Ping, ListCommands (the actions the user may use), Events, MessageSend (`Message
  technology not found.` unless the To is pjsip:), Logoff (`Goodbye`, then close); an
  action Asterisk does not have is `Invalid/unknown command: <name>. Use Action:
  ListCommands to show available commands.`, one the user may not use `Permission
  denied`;
* Originate: checked in Asterisk's order (Uniqueid length, Channel, Priority, Timeout,
  the channel's form, forbidden applications, then `Extension does not exist.` unless
  Context/Exten is in the dialplan), then `Originate successfully queued`; the call is
  then played (`timeline.plan_call`, `calls.CallPlayer`) and its events go to every
  session that may read call events: Newchannel, Newstate, DialBegin, DialEnd, Hangup,
  and the OriginateResponse when the first leg answers (its channel name, Reason 4) or,
  once the `failed` extension ran, fails (the dial string, Asterisk's Reason). A channel
  technology Asterisk has not loaded, or the ChannelId of a live channel, fails the call
  that way. A synchronous Originate (no `Async: true`) is answered once the first leg
  answered (`Originate successfully queued`) or failed (`Originate failed`).

    >>> with Sandbox(username="cx", secret="pw") as pbx:
    ...     from callexchange.pbx.ami import AmiSession
    ...     with AmiSession("127.0.0.1", pbx.port, "cx", "pw", 1, 2) as ami:
    ...         _ = ami.login()
    ...         ami.action("Ping")["Ping"]
    'Pong'
"""

import json
import os
import socket
import threading
import time

from callexchange.sandbox.asterisk_actions import ACTIONS, may_use
from callexchange.sandbox.calls import DEFAULT_RING_SECONDS, CallPlayer, call_variables
from callexchange.pbx.asterisk_conf import SHIPPED_DIALPLAN
from callexchange.sandbox.dialplan import Dialplan
from callexchange.sandbox.scripting import (agent_table, check_fault, fault_table,
                                            normalise_destination, outcome_table, parse_fault)
from callexchange.sandbox.session import Session, privilege_classes
from callexchange.sandbox.timeline import DEFAULT_OUTCOME, Request, caller_id_parts, plan_call

# The gateway's AMI user (asterisk/manager_callexchange.conf): what a Sandbox grants.
GATEWAY_READ = "call"
GATEWAY_WRITE = "originate,message"
# AST_MAX_PUBLIC_UNIQUEID: the longest ChannelId an Originate may give.
MAX_CHANNEL_ID = 149

_POLL = 0.1
_SECRET_HEADERS = ("secret", "key")
# Asterisk refuses these applications (anywhere in the name, any case) and functions (in
# the data, exact case) in an Originate unless the user may write `system`.
_SYSTEM_APPS = ("agi", "dbdeltree", "exec", "externalivr", "mixmonitor", "originate",
                "reload", "system", "queue")
_SYSTEM_FUNCTIONS = ("CURL", "DB", "EVAL", "FILE", "ODBC", "REALTIME", "SHELL")


def _mask(pairs):
    return [(name, "***" if name.lower() in _SECRET_HEADERS else value)
            for name, value in pairs]


class RecordedAction(dict):
    """One action the sandbox received: a dict {header: first value} (keys as sent, e.g.
    `action["ChannelId"]`), plus `pairs`, every (header, value) in wire order with
    repeats (several `Variable`), `connection` (1, 2, ... per TCP connection) and `time`
    (unix seconds). The Login secret is recorded as ***."""

    def __init__(self, pairs, connection, when):
        pairs = _mask(pairs)
        super().__init__()
        for name, value in pairs:
            self.setdefault(name, value)
        self.pairs = pairs
        self.connection = connection
        self.time = when

    @property
    def action(self):
        return self.header("Action", "")

    def header(self, name, default=None):
        """The first value of header `name` (case-insensitive)."""
        values = self.header_list(name)
        return values[0] if values else default

    def header_list(self, name):
        """Every value of header `name`, in order (e.g. all `Variable` headers)."""
        name = name.lower()
        return [value for key, value in self.pairs if key.lower() == name]

    def to_json(self):
        """The `--log` line: {"time", "connection", "action", "headers": [[name, value]...]}."""
        return json.dumps({"time": self.time, "connection": self.connection,
                           "action": self.action,
                           "headers": [list(pair) for pair in self.pairs]},
                          ensure_ascii=False)


class Sandbox:
    """The stand-in PBX, and the tests' AMI double. `start()` returns once it listens
    (`port` is then the real port, also with port=0); `stop()` hangs up its calls, closes
    every connection and joins every thread. Also a context manager.

    Scripting it (all thread-safe, at any time, also while it runs):

    * `faults`: names ('no-banner'), 'name=ARG' strings, (name, arg) pairs or a
      {name: arg} dict (see FAULTS); later `inject('slow-login=2')`, `clear_faults()`;
    * `outcomes`: how calls end, per lead: {destination or '*': Outcome or 'busy' /
      'answered:30' ...} (default: answered, talking 5 s); later `set_outcome`;
    * `agents`: how agents' phones answer, per extension: {extension or '*': 'answered' |
      'busy' | 'noanswer' | 'unreachable'} (default: answered); later `set_agent`;
    * `reset()`: back to what the constructor was given, with an empty record, between
      the tests that share one sandbox.

    The AMI user: `username`, `secret`, and its `read` and `write` privileges (by default
    the gateway's, `call` / `originate,message`). Timing: a phone rings `ring_seconds`
    before it answers, is busy or congested; one that never answers rings
    `no_answer_seconds` (None: as Asterisk, the Originate's Timeout or the dialplan's ring
    time). `dialplan`: the contexts and extensions an Originate may enter (default: the
    project's dialplan), plus the contexts `config` names and `contexts` (an operator's
    own, any extension; later `add_contexts`).

    Watching it: `actions` (every action received, as RecordedAction), `actions_named`,
    `log_path` (each action appended there as one JSON line), `wait_for_calls()`,
    `calls_in_progress()`.

    Playing calls: with `config` (the gateway Config: recordings root, the hook's
    config) each call runs the hook at `hook` (default: the checkout's) and writes its
    recording; without, only its AMI events are played. `config`, `hook`,
    `ring_seconds` and `no_answer_seconds` may also be set after construction (e.g. once
    `port` is known); calls started afterwards use them.
    """

    def __init__(self, host="127.0.0.1", port=0, username="callexchange", secret="s3cret",
                 faults=(), outcomes=None, agents=None, log_path=None, config=None,
                 hook=None, ring_seconds=DEFAULT_RING_SECONDS, no_answer_seconds=None,
                 login_failure_delay=0.0, read=GATEWAY_READ, write=GATEWAY_WRITE,
                 dialplan=None, contexts=()):
        self.host = host
        self.port = port
        self.username = username
        self.secret = secret
        self.read = privilege_classes(read)
        self.write = privilege_classes(write)
        self.log_path = log_path
        self.config = config
        self.hook = hook
        self.ring_seconds = ring_seconds
        self.no_answer_seconds = no_answer_seconds
        # Asterisk sleeps a second before answering a refused login; 0 keeps tests fast.
        self.login_failure_delay = login_failure_delay
        self._dialplan = dialplan
        self._shipped = None   # (key, the shipped Dialplan parsed for it)
        self._lock = threading.Lock()
        self._initial = (fault_table(faults), outcome_table(outcomes or {}),
                         agent_table(agents or {}), tuple(contexts))
        self._restore()
        self._player = CallPlayer()
        self._stopping = threading.Event()
        self._listener = None
        self._accept_thread = None
        self._connections = set()
        self._threads = []
        self._connection_count = 0
        self._uniqueid_count = 0
        self._channel_numbers = {}

    # --- scripting ---

    @property
    def faults(self):
        """The faults in force: {name: argument or None} (a copy)."""
        with self._lock:
            return dict(self._faults)

    def inject(self, fault, argument=None):
        """Add a fault from now on: inject('slow-login=2'), inject('slow-login', 2),
        inject('no-banner'). Returns (name, argument) as validated; ValueError for an
        unknown fault or a wrong argument."""
        name, argument = (parse_fault(fault) if argument is None
                          else check_fault(fault, argument))
        with self._lock:
            self._faults[name] = argument
        return name, argument

    def clear_faults(self, *names):
        """Remove the named faults (all of them without names)."""
        with self._lock:
            if not names:
                self._faults.clear()
            for name in names:
                self._faults.pop(name, None)

    @property
    def outcomes(self):
        """{destination or '*': Outcome} (a copy)."""
        with self._lock:
            return dict(self._outcomes)

    def set_outcome(self, destination, outcome):
        """How calls to `destination` ('*': every other) end from now on: an Outcome or
        its text ('busy', 'answered:30')."""
        table = outcome_table({destination: outcome})
        with self._lock:
            self._outcomes.update(table)

    @property
    def agents(self):
        """{extension or '*': agent outcome} (a copy)."""
        with self._lock:
            return dict(self._agents)

    def set_agent(self, extension, outcome):
        """How agent `extension`'s phone ('*': every other) answers from now on:
        'answered', 'busy', 'noanswer' or 'unreachable'."""
        table = agent_table({extension: outcome})
        with self._lock:
            self._agents.update(table)

    def add_contexts(self, *names):
        """Dialplan contexts the PBX has besides the project's (an operator's own), in
        which any extension exists."""
        with self._lock:
            self._contexts.extend(names)

    def reset(self, timeout=10.0):
        """Back to what the constructor was given: its faults and outcomes, an empty
        record, no call in progress (each is hung up; its hangup events and hook still
        come) and no client connection (each is closed). The port, credentials and call
        settings stay. True if every call ended within `timeout`."""
        ended = self._player.hang_up_all(timeout)
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            connection.shutdown()
        with self._lock:
            self._restore()
        return ended

    def _restore(self):
        faults, outcomes, agents, contexts = self._initial
        self._faults, self._outcomes, self._agents = dict(faults), dict(outcomes), dict(agents)
        self._contexts = list(contexts)
        self._actions = []

    def wait_for_calls(self, timeout=10.0):
        """Wait until every call being played has hung up by itself. True if all did."""
        return self._player.wait(timeout)

    def calls_in_progress(self):
        """How many calls are being played right now."""
        return self._player.in_progress()

    # --- life cycle ---

    def start(self):
        """Listen and serve in background threads. Returns self."""
        listener = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((self.host, self.port))
            listener.listen(64)
            listener.settimeout(_POLL)
        except BaseException:
            listener.close()
            raise
        self._listener = listener
        self.port = listener.getsockname()[1]
        self._stopping.clear()
        self._accept_thread = threading.Thread(target=self._accept_loop, daemon=True,
                                               name="sandbox-accept-%d" % self.port)
        self._accept_thread.start()
        return self

    def stop(self):
        """Hang up every call, close the listener and every connection; join all threads."""
        self._stopping.set()
        self._player.hang_up_all()
        if self._accept_thread is not None:
            self._accept_thread.join(5)
            self._accept_thread = None
        with self._lock:
            connections = list(self._connections)
            threads = list(self._threads)
        for connection in connections:
            connection.shutdown()
        for thread in threads:
            thread.join(5)
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()]

    def __enter__(self):
        return self.start()

    def __exit__(self, exc_type, exc, tb):
        self.stop()
        return False

    def _accept_loop(self):
        try:
            while not self._stopping.is_set():
                try:
                    sock, peer = self._listener.accept()
                    # Replies and events go out as separate small writes: without this,
                    # Nagle holds the second until the client's delayed ACK (~40 ms).
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                except socket.timeout:
                    continue
                except OSError:
                    if self._stopping.is_set():
                        break
                    time.sleep(_POLL)
                    continue
                with self._lock:
                    self._connection_count += 1
                    connection = Session(self, sock, self._connection_count)
                    self._connections.add(connection)
                    thread = threading.Thread(target=connection.run, daemon=True,
                                              name="sandbox-conn-%d" % connection.number)
                    self._threads = [t for t in self._threads if t.is_alive()]
                    self._threads.append(thread)
                thread.start()
        finally:
            self._listener.close()

    def _forget(self, connection):
        with self._lock:
            self._connections.discard(connection)

    # --- the record of what was sent ---

    @property
    def actions(self):
        """Every action received since the start (or the last reset), in arrival order:
        a list of RecordedAction (a copy)."""
        with self._lock:
            return list(self._actions)

    def record(self, message, connection):
        """Keep `message` (a wire.Message) in `actions` and the log; return the record."""
        entry = RecordedAction(message.pairs, connection.number, round(time.time(), 6))
        with self._lock:
            self._actions.append(entry)
            if self.log_path:
                with open(self.log_path, "a", encoding="utf-8") as log:
                    log.write(entry.to_json() + "\n")
        return entry

    def actions_named(self, name):
        """The recorded actions called `name` (case-insensitive), in arrival order."""
        with self._lock:
            return [a for a in self._actions if a.action.lower() == name.lower()]

    # --- what Asterisk has ---

    @property
    def dialplan(self):
        """The Dialplan an Originate's Context/Exten must be in: the one given, else the
        project's, plus the contexts `config` names and those added (`contexts`,
        `add_contexts`), which accept any extension."""
        with self._lock:
            extra = list(self._contexts)
        dial = getattr(self.config, "dial", None)
        extra += [getattr(dial, name) for name in ("outbound_context", "agent_context")
                  if dial is not None and getattr(dial, name, None)]
        if self._dialplan is None:
            # Parsed again only when the file or the extra contexts changed: this is asked
            # on every Originate (~0.2 ms a parse, which showed in the benchmarks).
            key = (tuple(extra), _file_version(SHIPPED_DIALPLAN))
            shipped = self._shipped
            if shipped is None or shipped[0] != key:
                shipped = self._shipped = (key, Dialplan.shipped(extra))
            return Dialplan(shipped[1].contexts)   # a copy: callers may add to it
        return Dialplan(dict({name: None for name in extra}, **self._dialplan.contexts))

    def list_commands(self):
        """What ListCommands lists to this user: [(name, 'synopsis  (Priv: ...)')]."""
        return [(name, "%s  (Priv: %s)" % (synopsis, privilege))
                for name, synopsis, privilege in ACTIONS if may_use(privilege, self.write)]

    # --- events ---

    def broadcast(self, pairs, event_class="call"):
        """Send an event to every logged-in session that may read `event_class` events
        and asked for them (as Asterisk sends manager events)."""
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            if connection.wants(event_class):
                connection.send_message(pairs)

    # --- calls ---

    def new_uniqueid(self):
        """A fresh Asterisk-style uniqueid, '<epoch>.<n>'."""
        with self._lock:
            self._uniqueid_count += 1
            return "%d.%d" % (int(time.time()), self._uniqueid_count)

    # The namer a timeline asks (timeline.plan_call).
    uniqueid = new_uniqueid

    def channel_number(self, technology):
        """The next number of a channel of `technology` (the -0000000a in its name)."""
        key = technology.lower()
        with self._lock:
            number = self._channel_numbers.get(key, 0)
            self._channel_numbers[key] = number + 1
            return number

    def in_use(self, uniqueid):
        """True while a call whose first channel has `uniqueid` is being played."""
        return self._player.in_use(uniqueid)

    def _rule(self, table, candidates, default):
        for candidate in candidates:
            candidate = normalise_destination(candidate or "")
            if candidate and candidate in table:
                return table[candidate]
        return table.get("*", default)

    def outcome_for(self, action):
        """The lead's Outcome for an Originate (a wire.Message): the first rule matching
        its `CX_DESTINATION` variable, its Exten, or the number in its Channel; else the
        '*' rule; else DEFAULT_OUTCOME."""
        variables = call_variables(action)
        channel = action.get("Channel") or ""
        return self._rule(self.outcomes, [variables.get("CX_DESTINATION"), action.get("Exten"),
                                          _channel_number(channel)], DEFAULT_OUTCOME)

    def agent_outcome_for(self, action):
        """How the agent's phone answers for an Originate: the rule matching its
        CX_EXTENSION variable, else the agent's number (agent first: in the Channel;
        dialer mode: the Exten); else the '*' rule; else 'answered'."""
        variables = call_variables(action)
        dialer = variables.get("CX_MODE") == "dialer"
        own = action.get("Exten") if dialer else _channel_number(action.get("Channel") or "")
        return self._rule(self.agents, [variables.get("CX_EXTENSION"), own], "answered")

    def originate_request(self, action):
        """The Request (timeline) of an Originate that passed its checks."""
        number, name = caller_id_parts(action.get("CallerID"))
        timeout = action.get("Timeout")
        return Request(
            action_id=action.get("ActionID") or "", channel=action.get("Channel") or "",
            context=action.get("Context") or "", exten=action.get("Exten") or "",
            application=action.get("Application") or "", data=action.get("Data") or "",
            caller_num=number, caller_name=name,
            uniqueid=action.get("ChannelId") or self.new_uniqueid(),
            timeout=int(timeout) / 1000.0 if timeout and timeout.strip().lstrip("-").isdigit()
            else 30.0,
            variables=call_variables(action),
            asynchronous=(action.get("Async") or "").strip().lower() in ("true", "yes", "1",
                                                                          "on"),
            account=action.get("Account") or "")

    def originate_problem(self, action):
        """Why Asterisk refuses this Originate at once (its reply's Message), or None;
        checked in Asterisk's order."""
        for header in ("ChannelId", "OtherChannelId"):
            if len(action.get(header) or "") > MAX_CHANNEL_ID:
                return "Uniqueid length exceeds maximum of %d" % MAX_CHANNEL_ID
        channel = action.get("Channel") or ""
        if not channel:
            return "Channel not specified"
        priority = (action.get("Priority") or "").strip()
        if priority and not priority.lstrip("-").isdigit():
            return "Invalid priority"
        timeout = (action.get("Timeout") or "").strip()
        if timeout and not timeout.lstrip("-").isdigit():
            return "Invalid timeout"
        if "/" not in channel:
            return "Invalid channel"
        application = action.get("Application") or ""
        if application and "system" not in self.write and "all" not in self.write:
            data = action.get("Data") or ""
            if (any(name in application.lower() for name in _SYSTEM_APPS)
                    or any(name in data for name in _SYSTEM_FUNCTIONS)):
                return "Originate Access Forbidden: app or data blacklisted"
        if priority and int(priority) and not self.dialplan.exists(
                action.get("Context") or "", action.get("Exten") or ""):
            return "Extension does not exist."
        asynchronous = (action.get("Async") or "").strip().lower() in ("true", "yes", "1", "on")
        if not asynchronous and not application and not (priority and int(priority)):
            return "Originate with 'Exten' requires 'Context' and 'Priority'"
        return None

    def place(self, action, result=None):
        """Play the call of an accepted Originate (a wire.Message): its events to every
        session, its hooks and recording with `config`. `result(answered)`: told the
        first leg's fate (a synchronous Originate). Returns the call's uniqueid."""
        request = self.originate_request(action)
        steps = plan_call(request, self.outcome_for(action), self.agent_outcome_for(action),
                          self, ring=self.ring_seconds, no_answer=self.no_answer_seconds)
        self._player.play(steps, request.uniqueid, self.broadcast, request.variables,
                          self.config, self.hook, result)
        return request.uniqueid


def _file_version(path):
    """What identifies a version of the file at `path` (None: missing)."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return (info.st_ino, info.st_size, info.st_mtime_ns)


def _channel_number(channel):
    """'PJSIP/2001' -> '2001'; 'Local/4930123@ctx/n' -> '4930123'."""
    return channel.partition("/")[2].partition("@")[0].partition("/")[0]
