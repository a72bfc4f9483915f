"""One client connection of the sandbox PBX: the AMI session, answered as Asterisk 22
answers the gateway's user (see server.py for what it answers, timeline.py for the calls).

A `Session` reads actions, records each one on its Sandbox, and answers; it writes
replies the way Asterisk writes them (Ping and ListCommands in pieces), events as its
Sandbox broadcasts them, and plays the faults that concern one connection (no banner,
slow answers, a dropped reply...).
"""

import hmac
import socket
import sys
import threading
import time

from callexchange.pbx.wire import MessageParser, encode_message
from callexchange.sandbox.asterisk_actions import find_action, may_use
from callexchange.sandbox.dialplan import message_technology_loaded

AMI_VERSION = "11.0.0"
BANNER = b"Asterisk Call Manager/%s\r\n" % AMI_VERSION.encode()
_POLL = 0.1
# Between the pieces of a message under the split-replies fault, so that they leave as
# separate TCP segments.
_SPLIT_PAUSE = 0.002


def privilege_classes(text):
    """'originate, message' -> {'originate', 'message'}."""
    return {part.strip().lower() for part in (text or "").split(",") if part.strip()}


def events_mask(text):
    """A Login's `Events:` (or the Events action's EventMask) as a set of event classes:
    on/yes/true -> {'all'}, off/no/false -> set(), else the classes listed."""
    lowered = (text or "on").strip().lower()
    if lowered in ("on", "yes", "true", "1"):
        return {"all"}
    if lowered in ("off", "no", "false", "0"):
        return set()
    return privilege_classes(lowered)


class Session:
    """One client connection, served by one thread (Sandbox starts it)."""

    def __init__(self, sandbox, sock, number):
        self.sandbox = sandbox
        self.sock = sock
        self.number = number
        self.logged_in = False
        self.events = set()
        self.open = True
        self.closing = threading.Event()
        self._send_lock = threading.Lock()

    # --- plumbing ---

    def send(self, data, cuts=()):
        """Write `data`, in several writes cut at the byte offsets `cuts` (as Asterisk
        writes some replies piece by piece); in pieces of a few bytes under the
        split-replies fault."""
        pause = 0
        if "split-replies" in self.sandbox.faults:
            cuts, pause = range(3, len(data), 3), _SPLIT_PAUSE
        bounds = [0] + [c for c in cuts if 0 < c < len(data)] + [len(data)]
        with self._send_lock:
            if not self.open:
                return
            try:
                self.sock.settimeout(5)
                for start, end in zip(bounds, bounds[1:]):
                    if pause and start:
                        time.sleep(pause)
                    self.sock.sendall(data[start:end])
            except OSError:
                self.open = False

    def send_message(self, pairs, cut_after=None):
        """Send one message; `cut_after`: also cut its write after that many lines."""
        data = encode_message(pairs)
        cuts = ()
        if cut_after:
            cuts = (len(encode_message(pairs[:cut_after])) - 2,)
        self.send(data, cuts)

    def wants(self, event_class):
        """Whether this session gets events of `event_class` (read privilege and the
        Events it asked for)."""
        sandbox = self.sandbox
        return (self.logged_in and self.open
                and ("all" in self.events or event_class in self.events)
                and ("all" in sandbox.read or event_class in sandbox.read))

    def shutdown(self):
        """Called by Sandbox.stop() and reset() from another thread: end this connection
        (wake the reader up, cut any wait short)."""
        self.closing.set()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def wait(self, seconds):
        """Sleep, unless the connection ends first. True if the full time passed."""
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
            try:
                self.sock.settimeout(_POLL)
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

    def error(self, message, text):
        self.send_message(self.reply(message, "Error", ("Message", text)))
        return True

    def handle(self, message):
        """Answer one action. False ends the connection."""
        name = (message.get("Action") or "").strip()
        lowered = name.lower()
        if not name:
            return self.error(message, "Missing action in request")
        if lowered == "login":
            return self.on_login(message)
        if lowered == "logoff":
            self.send_message(self.reply(message, "Goodbye",
                                         ("Message", "Thanks for all the fish.")))
            return False
        if not self.logged_in and lowered != "challenge":
            return self.error(message, "Permission denied")
        known = find_action(name)
        if known is None:
            return self.error(message, "Invalid/unknown command: %s. Use Action: "
                                       "ListCommands to show available commands." % name)
        if not may_use(known[2], self.sandbox.write):
            return self.error(message, "Permission denied")
        handler = {"ping": self.on_ping, "originate": self.on_originate,
                   "messagesend": self.on_messagesend, "listcommands": self.on_listcommands,
                   "events": self.on_events}.get(lowered)
        if handler is None:
            # An action Asterisk has and the user may use, which the sandbox does not play.
            return self.error(message, "%s is not played by the sandbox PBX" % known[0])
        return handler(message)

    def on_login(self, message):
        sandbox = self.sandbox
        faults = sandbox.faults
        if "slow-login" in faults and not self.wait(faults["slow-login"]):
            return False
        if self.logged_in:
            self.send_message(self.reply(message, "Success",
                                         ("Message", "Already authenticated")))
            return True
        accepted = (
            "refuse-login" not in faults
            and hmac.compare_digest((message.get("Username") or "").encode(),
                                    sandbox.username.encode())
            and hmac.compare_digest((message.get("Secret") or "").encode(),
                                    sandbox.secret.encode()))
        if not accepted:
            if sandbox.login_failure_delay and not self.wait(sandbox.login_failure_delay):
                return False
            self.error(message, "Authentication failed")
            return False
        self.events = events_mask(message.get("Events"))
        self.send_message(self.reply(message, "Success", ("Message", "Authentication accepted")))
        self.logged_in = True
        if self.wants("system"):
            self.send_message([("Event", "FullyBooted"), ("Privilege", "system,all"),
                               ("Uptime", "1"), ("LastReload", "1"),
                               ("Status", "Fully Booted")])
        return True

    def on_ping(self, message):
        # Asterisk writes it in two pieces: Response and ActionID, then the rest.
        self.send_message(self.reply(message, "Success", ("Ping", "Pong"),
                                     ("Timestamp", "%.6f" % time.time())),
                          cut_after=2 if message.get("ActionID") is not None else 1)
        return True

    def on_events(self, message):
        self.events = events_mask(message.get("EventMask"))
        self.send_message(self.reply(message, "Success",
                                     ("Events", "On" if self.events else "Off")))
        return True

    def on_listcommands(self, message):
        head = self.reply(message, "Success")
        self.send_message(head + self.sandbox.list_commands(), cut_after=len(head))
        return True

    def on_messagesend(self, message):
        faults = self.sandbox.faults
        if "slow-messagesend" in faults and not self.wait(faults["slow-messagesend"]):
            return False
        to = message.get("Destination") or message.get("To")
        if not to:
            return self.error(message, "No 'To' address specified.")
        if not message_technology_loaded(to):
            return self.error(message, "Message technology not found.")
        if "messagesend-error" in faults:
            return self.error(message, faults["messagesend-error"])
        self.send_message(self.reply(message, "Success",
                                     ("Message", "Message successfully sent")))
        return True

    def on_originate(self, message):
        sandbox = self.sandbox
        faults = sandbox.faults
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
        problem = sandbox.originate_problem(message)
        if problem is None and "originate-error" in faults:
            problem = faults["originate-error"]
        if problem is not None:
            return self.error(message, problem)
        queued = self.reply(message, "Success", ("Message", "Originate successfully queued"))
        if "drop-mid-reply" in faults:
            data = encode_message(queued)
            self.send(data[:len(data) // 2])
            return False
        if "goodbye-no-close" in faults:
            self.send_message(self.reply(message, "Goodbye",
                                         ("Message", "Thanks for all the fish.")))
            self.hold()
            return False
        if (message.get("Async") or "").strip().lower() in ("true", "yes", "1", "on"):
            self.send_message(queued)
            sandbox.place(message)
            return True
        # Synchronous: Asterisk answers once the first leg answered or failed.
        outcome = []
        done = threading.Event()
        sandbox.place(message, result=lambda answered: (outcome.append(answered), done.set()))
        while not done.wait(_POLL):
            if self.closing.is_set():
                return False
        if outcome[0]:
            self.send_message(queued)
        else:
            self.error(message, "Originate failed")
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
