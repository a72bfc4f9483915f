"""The sandbox PBX: a stand-in for Asterisk that speaks the real AMI wire protocol.

`callexchange sandbox` (its command line: `cli/sandbox.py`) runs it on the `[ami]` host
and port of the config, so the gateway needs no change to use it; CRM developers test
against it without dialing anyone. The project's tests use the same class (`Sandbox`) as
their AMI test double, through its public API only: scripted faults (no banner, refused
login, Originate refused, dropped connection, slow answers...) with `inject` and
`clear_faults`, outcomes with `set_outcome`, `reset()` between tests, and `actions`, the
record of everything the gateway sent.

What it answers, as Asterisk does (every reply echoes the ActionID):

* on connect, the banner `Asterisk Call Manager/5.0.1`;
* Login: `Authentication accepted` and, unless the login said `Events: off`, a
  `FullyBooted` event; a wrong username or secret gets `Authentication failed` and the
  connection is closed, as Asterisk closes it;
* Ping, MessageSend, Logoff (`Goodbye`, then close), and `Invalid/unknown command`;
* Originate: checked (Channel, Context/Exten or Application, Priority, Timeout), answered
  `Originate successfully queued`, then the call is played by `Sandbox.on_originate`,
  which by default sends the `OriginateResponse` event for the outcome chosen for the
  destination (answered, busy, no answer, failed, congestion).

    >>> with Sandbox(username="cx", secret="pw") as pbx:
    ...     from callexchange.pbx.ami import AmiSession
    ...     with AmiSession("127.0.0.1", pbx.port, "cx", "pw", 1, 2) as ami:
    ...         _ = ami.login()
    ...         ami.action("Ping")["Ping"]
    'Pong'
"""

import hmac
import json
import socket
import sys
import threading
import time
from collections import namedtuple
from types import MappingProxyType

from callexchange.pbx.wire import encode_message, MessageParser
from callexchange.sandbox.calls import DEFAULT_RING_SECONDS, CallPlayer

BANNER = b"Asterisk Call Manager/5.0.1\r\n"

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
})

# outcome kind -> (OriginateResponse Response, Reason): Asterisk's AST_CONTROL_* codes.
OUTCOMES = MappingProxyType({
    "answered": ("Success", 4),
    "busy": ("Failure", 5),
    "noanswer": ("Failure", 3),
    "failed": ("Failure", 0),
    "congestion": ("Failure", 8),
})

Outcome = namedtuple("Outcome", "kind seconds")
Outcome.__doc__ = "How a sandbox call ends: `kind` (see OUTCOMES), `seconds` talked."

DEFAULT_OUTCOME = Outcome("answered", 5.0)
DEFAULT_TALK_SECONDS = 5.0

_POLL = 0.1
_SECRET_HEADERS = ("secret", "key")


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
    if kind not in OUTCOMES:
        raise ValueError("unknown outcome %r (known: answered:SECONDS, %s)"
                         % (text, ", ".join(k for k in OUTCOMES if k != "answered")))
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


def _fault_table(faults):
    """{name: argument} from the constructor's forms of `faults`."""
    if isinstance(faults, dict):
        faults = faults.items()
    table = {}
    for fault in faults:
        name, argument = (parse_fault(fault) if isinstance(fault, str)
                          else check_fault(*fault))
        table[name] = argument
    return table


def _outcome_table(outcomes):
    """{normalised destination: Outcome} from {destination: Outcome or its text}."""
    return {normalise_destination(dest): (outcome if isinstance(outcome, Outcome)
                                          else parse_outcome(outcome))
            for dest, outcome in outcomes.items()}


def normalise_destination(text):
    text = text.strip()
    return text[1:] if text.startswith("+") else text


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
    * `outcomes`: {destination or '*': Outcome or 'busy' / 'answered:30' ...}; later
      `set_outcome('4930123456', 'busy')`;
    * `reset()`: back to what the constructor was given, with an empty record, between
      the tests that share one sandbox.

    Watching it: `actions` (every action received, as RecordedAction), `actions_named`,
    `log_path` (each action appended there as one JSON line), `wait_for_calls()`.

    Playing calls: with `config` (the gateway Config: recordings root, the hook's
    config) each accepted Originate is played as a call (`calls.CallPlayer`): the hook at
    `hook` (default: the checkout's), after `ring_seconds` of ringing. `config`, `hook`
    and `ring_seconds` may also be set after construction (e.g. once `port` is known);
    calls started afterwards use them.
    """

    def __init__(self, host="127.0.0.1", port=0, username="callexchange", secret="s3cret",
                 faults=(), outcomes=None, log_path=None, config=None, hook=None,
                 ring_seconds=DEFAULT_RING_SECONDS, response_delay=0.05,
                 login_failure_delay=0.0):
        self.host = host
        self.port = port
        self.username = username
        self.secret = secret
        self.log_path = log_path
        self.config = config
        self.hook = hook
        self.ring_seconds = ring_seconds
        self.response_delay = response_delay
        # Asterisk sleeps a second before answering a refused login; 0 keeps tests fast.
        self.login_failure_delay = login_failure_delay
        self._lock = threading.Lock()
        self._initial_faults = _fault_table(faults)
        self._initial_outcomes = _outcome_table(outcomes or {})
        self._faults = dict(self._initial_faults)
        self._outcomes = dict(self._initial_outcomes)
        self._actions = []
        self._player = CallPlayer()
        self._stopping = threading.Event()
        self._listener = None
        self._accept_thread = None
        self._connections = set()
        self._threads = []
        self._connection_count = 0
        self._uniqueid_count = 0

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

    def fault(self, name):
        """(True, argument) when fault `name` is in force, else (False, None)."""
        with self._lock:
            return (name in self._faults), self._faults.get(name)

    @property
    def outcomes(self):
        """{destination or '*': Outcome} (a copy)."""
        with self._lock:
            return dict(self._outcomes)

    def set_outcome(self, destination, outcome):
        """How calls to `destination` ('*': every other) end from now on: an Outcome or
        its text ('busy', 'answered:30')."""
        with self._lock:
            self._outcomes.update(_outcome_table({destination: outcome}))

    def reset(self, timeout=10.0):
        """Back to what the constructor was given: its faults and outcomes, an empty
        record, no call in progress (each is hung up; an answered one still runs its
        hangup hook) and no client connection (each is closed). The port, credentials and
        call settings stay. True if every call ended within `timeout`."""
        ended = self._player.hang_up_all(timeout)
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            connection.shutdown()
        with self._lock:
            self._faults = dict(self._initial_faults)
            self._outcomes = dict(self._initial_outcomes)
            self._actions = []
        return ended

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
                    connection = _Connection(self, sock, self._connection_count)
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

    # --- calls ---

    def new_uniqueid(self):
        with self._lock:
            self._uniqueid_count += 1
            return "%d.%d" % (int(time.time()), self._uniqueid_count)

    def outcome_for(self, action):
        """The Outcome chosen for an Originate: the first `--outcome` rule matching the
        `CX_DESTINATION` variable, the Exten, or the Channel's number; else the '*' rule;
        else DEFAULT_OUTCOME."""
        candidates = []
        for variable in action.get_all("Variable"):
            name, _, value = variable.partition("=")
            if name.lstrip("_").upper() == "CX_DESTINATION":
                candidates.append(value)
        candidates.append(action.get("Exten") or "")
        channel = action.get("Channel") or ""
        candidates.append(channel.partition("/")[2].partition("@")[0])
        outcomes = self.outcomes
        for candidate in candidates:
            candidate = normalise_destination(candidate)
            if candidate and candidate in outcomes:
                return outcomes[candidate]
        return outcomes.get("*", DEFAULT_OUTCOME)

    def on_originate(self, action):
        """Play the call an accepted Originate asked for. `action` is the ami.Message;
        `action.uniqueid` is the call's Uniqueid (the ChannelId sent, or a fresh one).

        Returns the AMI events to send on that connection: a list of (delay seconds,
        [(header, value), ...]). The ActionID is added by the caller. By default: the
        OriginateResponse for `outcome_for(action)`.

        This is the hook for playing whole calls (webhooks, recordings): extend it, start
        that work in a thread, and keep returning the events.
        """
        outcome = self.outcome_for(action)
        response, reason = OUTCOMES[outcome.kind]
        number, name = _split_caller_id(action.get("CallerID") or "")
        event = [("Event", "OriginateResponse"), ("Privilege", "call,all"),
                 ("Response", response), ("Channel", action.get("Channel") or "")]
        if action.get("Application"):
            event += [("Application", action.get("Application")),
                      ("Data", action.get("Data") or "")]
        else:
            event += [("Context", action.get("Context") or ""),
                      ("Exten", action.get("Exten") or "")]
        event += [("Reason", str(reason)), ("Uniqueid", action.uniqueid),
                  ("CallerIDNum", number), ("CallerIDName", name)]
        if self.config is not None:
            self._player.play(self.config, action, outcome, self.hook, self.ring_seconds)
        return [(self.response_delay, event)]


def _split_caller_id(text):
    """'"Sales" <4930123>' -> ('4930123', 'Sales'); '4930123' -> ('4930123', '<unknown>')."""
    text = text.strip()
    if "<" in text and text.endswith(">"):
        name, _, number = text[:-1].rpartition("<")
        name = name.strip().strip('"').strip()
        return number.strip() or "<unknown>", name or "<unknown>"
    return text or "<unknown>", "<unknown>"


class _ActionView:
    """An ami.Message with the call's `uniqueid` attached (for Sandbox.on_originate)."""

    def __init__(self, message, uniqueid):
        self.message = message
        self.uniqueid = uniqueid

    def __getattr__(self, name):
        return getattr(self.message, name)

    def __getitem__(self, key):
        return self.message[key]


class _Connection:
    """One client connection, served by one thread."""

    def __init__(self, sandbox, sock, number):
        self.sandbox = sandbox
        self.sock = sock
        self.number = number
        self.logged_in = False
        self.events = True
        self.open = True
        self.closing = threading.Event()
        self._send_lock = threading.Lock()
        self._later = []

    # --- plumbing ---

    def send(self, data):
        with self._send_lock:
            if not self.open:
                return
            try:
                self.sock.settimeout(5)
                self.sock.sendall(data)
            except OSError:
                self.open = False

    def send_message(self, pairs):
        self.send(encode_message(pairs))

    def send_later(self, delay, pairs):
        self._later.append((time.monotonic() + delay, encode_message(pairs)))

    def shutdown(self):
        """Called by Sandbox.stop() and reset() from another thread: end this connection
        (wake the reader up, cut any wait short)."""
        self.closing.set()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def wait(self, seconds):
        """Sleep, unless the sandbox stops first. True if the full time passed."""
        return not self.closing.wait(seconds)

    def hold(self):
        """Keep the connection open, reading and ignoring, until the peer or we stop."""
        while not self.closing.is_set():
            try:
                self.sock.settimeout(_POLL)
                if not self.sock.recv(65536):
                    return
            except socket.timeout:
                continue
            except OSError:
                return

    def _flush_due(self):
        now = time.monotonic()
        due = [item for item in self._later if item[0] <= now]
        if due:
            self._later = [item for item in self._later if item[0] > now]
            for _, data in sorted(due, key=lambda item: item[0]):
                self.send(data)

    def run(self):
        try:
            self._serve()
        except Exception as error:  # a sandbox bug must not kill the server quietly
            sys.stderr.write("sandbox: connection %d failed: %r\n" % (self.number, error))
        finally:
            self.open = False
            try:
                self.sock.close()
            except OSError:
                pass
            self.sandbox._forget(self)

    def _serve(self):
        faults = self.sandbox.faults
        if "close-on-accept" in faults:
            return
        if "no-banner" in faults:
            self.hold()
            return
        self.send(BANNER)
        if "silent-after-banner" in faults:
            self.hold()
            return
        parser = MessageParser()
        while self.open and not self.closing.is_set():
            self._flush_due()
            timeout = _POLL
            if self._later:
                timeout = max(0.001, min(timeout, min(d for d, _ in self._later)
                                         - time.monotonic()))
            try:
                self.sock.settimeout(timeout)
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            if not data:
                return
            try:
                messages = parser.feed(data)
            except ValueError:
                return
            for message in messages:
                self.sandbox.record(message, self)
                if not self.handle(message):
                    return

    # --- AMI ---

    def reply(self, message, response, *pairs):
        head = [("Response", response)]
        action_id = message.get("ActionID")
        if action_id is not None:
            head.append(("ActionID", action_id))
        return head + list(pairs)

    def handle(self, message):
        """Answer one action. False ends the connection."""
        name = (message.get("Action") or "").strip().lower()
        if not name:
            self.send_message(self.reply(message, "Error",
                                         ("Message", "Missing action in request")))
            return True
        if name == "login":
            return self.on_login(message)
        if name == "logoff":
            self.send_message(self.reply(message, "Goodbye",
                                         ("Message", "Thanks for all the fish.")))
            return False
        if not self.logged_in:
            self.send_message(self.reply(message, "Error", ("Message", "Permission denied")))
            return True
        handler = {"ping": self.on_ping, "originate": self.on_originate,
                   "messagesend": self.on_messagesend}.get(name)
        if handler is None:
            self.send_message(self.reply(message, "Error",
                                         ("Message", "Invalid/unknown command")))
            return True
        return handler(message)

    def on_login(self, message):
        sandbox = self.sandbox
        if "slow-login" in sandbox.faults and not self.wait(sandbox.faults["slow-login"]):
            return False
        if self.logged_in:
            self.send_message(self.reply(message, "Success",
                                         ("Message", "Already authenticated")))
            return True
        accepted = (
            "refuse-login" not in sandbox.faults
            and hmac.compare_digest((message.get("Username") or "").encode(),
                                    sandbox.username.encode())
            and hmac.compare_digest((message.get("Secret") or "").encode(),
                                    sandbox.secret.encode()))
        if not accepted:
            if sandbox.login_failure_delay and not self.wait(sandbox.login_failure_delay):
                return False
            self.send_message(self.reply(message, "Error", ("Message", "Authentication failed")))
            return False
        self.logged_in = True
        events = (message.get("Events") or "on").strip().lower()
        self.events = events not in ("off", "no", "false", "0")
        self.send_message(self.reply(message, "Success", ("Message", "Authentication accepted")))
        if self.events:
            self.send_message([("Event", "FullyBooted"), ("Privilege", "system,all"),
                               ("Uptime", "1"), ("LastReload", "1"),
                               ("Status", "Fully Booted")])
        return True

    def on_ping(self, message):
        self.send_message(self.reply(message, "Success", ("Ping", "Pong"),
                                     ("Timestamp", "%.6f" % time.time())))
        return True

    def on_messagesend(self, message):
        faults = self.sandbox.faults
        if "slow-messagesend" in faults and not self.wait(faults["slow-messagesend"]):
            return False
        if not message.get("To"):
            self.send_message(self.reply(message, "Error",
                                         ("Message", "No 'To' address specified.")))
        elif "messagesend-error" in faults:
            self.send_message(self.reply(message, "Error",
                                         ("Message", faults["messagesend-error"])))
        else:
            self.send_message(self.reply(message, "Success",
                                         ("Message", "Message successfully sent")))
        return True

    def originate_problem(self, message):
        """Why Asterisk would refuse this Originate, or None."""
        channel = message.get("Channel") or ""
        if not channel:
            return "Channel not specified"
        if "/" not in channel.strip("/"):
            return "Invalid channel"
        if not message.get("Application") and not (message.get("Exten")
                                                   and message.get("Context")):
            return "Exten and Context are required when no Application is given"
        for header, problem in (("Priority", "Invalid priority"),
                                ("Timeout", "Invalid timeout")):
            value = message.get(header)
            if value is not None and not value.strip().lstrip("-").isdigit():
                return problem
        if len(message.get("ChannelId") or "") > 149:
            return "Uniqueid length exceeds maximum of 149"
        return None

    def on_originate(self, message):
        faults = self.sandbox.faults
        if "slow-originate" in faults and not self.wait(faults["slow-originate"]):
            return False
        action_id = message.get("ActionID") or ""
        if "chanvariable-event" in faults:
            self.send_message(_chanvariable_event())
        if "status-will-follow-event" in faults:
            self.send_message(_status_will_follow_event())
        if "events-before-reply" in faults:
            for pairs in _interleaved_messages(action_id):
                self.send_message(pairs)
        problem = self.originate_problem(message)
        if problem is None and "originate-error" in faults:
            problem = faults["originate-error"]
        if problem is not None:
            self.send_message(self.reply(message, "Error", ("Message", problem)))
            return True
        if "drop-mid-reply" in faults:
            data = encode_message(self.reply(message, "Success",
                                             ("Message", "Originate successfully queued")))
            self.send(data[:len(data) // 2])
            return False
        if "goodbye-no-close" in faults:
            self.send_message(self.reply(message, "Goodbye",
                                         ("Message", "Thanks for all the fish.")))
            self.hold()
            return False
        self.send_message(self.reply(message, "Success",
                                     ("Message", "Originate successfully queued")))
        uniqueid = message.get("ChannelId") or self.sandbox.new_uniqueid()
        events = self.sandbox.on_originate(_ActionView(message, uniqueid))
        if self.events:
            for delay, pairs in events or ():
                pairs = list(pairs)
                if action_id:
                    pairs.insert(1, ("ActionID", action_id))
                self.send_later(delay, pairs)
        return True


def _chanvariable_event():
    return [("Event", "Newchannel"), ("Privilege", "call,all"),
            ("Channel", "PJSIP/1001-00000001"), ("ChannelState", "0"),
            ("ChannelStateDesc", "Down"), ("CallerIDNum", "1001"),
            ("CallerIDName", "<unknown>"), ("Uniqueid", "1700000000.1"),
            ("ChanVariable(PJSIP/1001-00000001)", "CUSTOMER=42"),
            ("ChanVariable(CDR(foo))", "bar"),
            ("ChanVariable", "CDR(accountcode)=")]


def _status_will_follow_event():
    return [("Event", "Newchannel"), ("Privilege", "call,all"),
            ("Channel", "PJSIP/1001-00000002"), ("ChannelState", "0"),
            ("ChannelStateDesc", "Down"), ("CallerIDNum", "1001"),
            ("CallerIDName", "status will follow"), ("Uniqueid", "1700000000.2")]


def _interleaved_messages(action_id):
    """Events and replies to other ActionIDs (one a prefix match of ours, one without any,
    one an Error) that a client must skip."""
    return [
        [("Event", "Newchannel"), ("Privilege", "call,all"),
         ("Channel", "PJSIP/1002-00000003"), ("Uniqueid", "1700000000.3")],
        [("Response", "Error"), ("ActionID", action_id + "-other"),
         ("Message", "Permission denied")],
        [("Event", "VarSet"), ("Privilege", "dialplan,all"),
         ("Channel", "PJSIP/1002-00000003"), ("Variable", "CX_UNIQUEID"),
         ("Value", "1700000000.3"), ("Uniqueid", "1700000000.3")],
        [("Response", "Success"), ("Message", "Originate successfully queued")],
        [("Event", "Newstate"), ("Privilege", "call,all"),
         ("Channel", "PJSIP/1002-00000003"), ("ChannelState", "5"),
         ("ChannelStateDesc", "Ringing"), ("Uniqueid", "1700000000.3")],
        [("Response", "Success"), ("ActionID", "someone-else-7"), ("Ping", "Pong")],
    ]
