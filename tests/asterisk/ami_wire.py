"""AMI at the byte level, for the real-PBX tests and the transcript recorder: one TCP
connection that keeps every chunk it sends and receives with its time, and splits what
it received into the banner and messages.

This is deliberately not the gateway's AMI client (lib/callexchange/.../ami.py): the
tests watch Asterisk with it, and the recorder must keep the exact bytes and timing.

    session = WireSession(port)                 # connects, reads nothing yet
    session.wait_banner()                       # 'Asterisk Call Manager/11.0.0'
    session.send_action("Login", [("Username", u), ("Secret", s)], action_id="1")
    reply = session.wait_for(lambda m: m.get("ActionID") == "1")
    session.transcript                          # [("client"|"server", offset_s, bytes)]
"""

import socket
import threading
import time


class Message:
    """One AMI message: its (name, value) pairs in wire order and when its last byte
    arrived (`offset`, seconds since the connection was made; `at`, time.time())."""

    def __init__(self, pairs, offset, at, raw):
        self.pairs = pairs
        self.offset = offset
        self.at = at
        self.raw = raw

    def get(self, name, default=None):
        lowered = name.lower()
        for key, value in self.pairs:
            if key.lower() == lowered:
                return value
        return default

    def get_all(self, name):
        lowered = name.lower()
        return [value for key, value in self.pairs if key.lower() == lowered]

    @property
    def event(self):
        return self.get("Event")

    @property
    def response(self):
        return self.get("Response")

    def __repr__(self):
        shown = " | ".join("%s: %s" % pair for pair in self.pairs[:6])
        return "<Message %.3f %s>" % (self.offset, shown)


def parse_pairs(block):
    """The (name, value) pairs of one message block (bytes without its blank line)."""
    pairs = []
    for line in block.split(b"\r\n"):
        if not line:
            continue
        name, sep, value = line.partition(b":")
        if not sep:
            pairs.append(("", line.decode("utf-8", "replace")))
            continue
        pairs.append((name.decode("utf-8", "replace"),
                      value[1:].decode("utf-8", "replace") if value.startswith(b" ")
                      else value.decode("utf-8", "replace")))
    return pairs


def encode_action(name, fields=(), action_id=None):
    """The bytes of one action: `Action: name`, the fields, an ActionID if given."""
    lines = ["Action: %s" % name]
    lines += ["%s: %s" % (key, value) for key, value in fields]
    if action_id is not None:
        lines.append("ActionID: %s" % action_id)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")


class WireSession:
    """One AMI connection to 127.0.0.1:`port`. Every chunk sent or received is kept in
    `transcript` as (direction, offset_seconds, bytes). Reading happens in `pump` (or a
    background thread after `start_reader`)."""

    def __init__(self, port, host="127.0.0.1", connect_timeout=5.0):
        self.started = time.monotonic()
        self.sock = socket.create_connection((host, int(port)), timeout=connect_timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.transcript = []
        self.banner = None
        self.messages = []
        self.closed = False
        self._buffer = b""
        self._lock = threading.Condition()
        self._reader = None

    def offset(self):
        return time.monotonic() - self.started

    # --- sending ------------------------------------------------------------------------

    def send(self, data):
        with self._lock:
            self.transcript.append(("client", round(self.offset(), 4), bytes(data)))
        self.sock.sendall(data)

    def send_action(self, name, fields=(), action_id=None):
        data = encode_action(name, fields, action_id)
        self.send(data)
        return data

    # --- receiving ----------------------------------------------------------------------

    def _feed(self, chunk):
        offset = round(self.offset(), 4)
        now = time.time()
        self.transcript.append(("server", offset, chunk))
        self._buffer += chunk
        if self.banner is None:
            line, sep, rest = self._buffer.partition(b"\r\n")
            if not sep:
                return
            self.banner = line.decode("utf-8", "replace")
            self._buffer = rest
        while b"\r\n\r\n" in self._buffer:
            block, _, self._buffer = self._buffer.partition(b"\r\n\r\n")
            self.messages.append(Message(parse_pairs(block), offset, now, block + b"\r\n\r\n"))

    def pump(self, timeout):
        """Read what arrives within `timeout` seconds (at least one recv attempt).
        Returns False once the server has closed the connection."""
        if self.closed:
            return False
        self.sock.settimeout(max(0.001, timeout))
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            return True
        except OSError:
            chunk = b""
        with self._lock:
            if not chunk:
                self.closed = True
                self.transcript.append(("server", round(self.offset(), 4), b""))
            else:
                self._feed(chunk)
            self._lock.notify_all()
        return not self.closed

    def start_reader(self):
        """Read in a background thread from now on (wait_for then only waits)."""
        def run():
            while self.pump(0.2):
                pass
        self._reader = threading.Thread(target=run, daemon=True)
        self._reader.start()
        return self

    def wait_for(self, predicate, timeout=10.0, after=0):
        """The first message (from index `after` on) for which predicate(message) holds;
        AssertionError naming what did arrive after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        seen = after
        while True:
            with self._lock:
                for message in self.messages[seen:]:
                    if predicate(message):
                        return message
                seen = max(seen, len(self.messages))
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self.closed and self._reader is None):
                    raise AssertionError("no such AMI message within %ss; got %r"
                                         % (timeout, self.messages[after:][-8:]))
                if self._reader is not None:
                    self._lock.wait(min(remaining, 0.2))
                    continue
            self.pump(min(remaining, 0.2))

    def wait_banner(self, timeout=5.0):
        deadline = time.monotonic() + timeout
        while self.banner is None:
            if time.monotonic() > deadline or not self.pump(deadline - time.monotonic()):
                if self.banner is None:
                    raise AssertionError("no AMI banner within %ss" % timeout)
        return self.banner

    def wait_closed(self, timeout=5.0):
        """True once the server closed the connection within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while not self.closed and time.monotonic() < deadline:
            if self._reader is not None:
                with self._lock:
                    self._lock.wait(0.1)
            else:
                self.pump(deadline - time.monotonic())
        return self.closed

    def login(self, username, secret, events="on", action_id="login"):
        """Login and return the reply (raises AssertionError if it is not a Success)."""
        self.wait_banner()
        self.send_action("Login", [("Username", username), ("Secret", secret),
                                   ("Events", events)], action_id)
        reply = self.wait_for(lambda m: m.get("ActionID") == action_id)
        assert reply.response == "Success", reply.pairs
        return reply

    def close(self):
        self.closed = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        if self._reader is not None:
            self._reader.join(2)


class Observer:
    """A read=call AMI session that keeps every event, to learn when each leg of a call
    answered and hung up (the truth the webhooks' durations are checked against).
    `reconnect` after Asterisk restarted; the events of earlier sessions are kept."""

    def __init__(self, port, username, secret):
        self.port, self.username, self.secret = port, username, secret
        self.sessions = []
        self.reconnect()

    @property
    def session(self):
        return self.sessions[-1]

    def reconnect(self):
        if self.sessions:
            self.sessions[-1].close()
        session = WireSession(self.port)
        session.login(self.username, self.secret)
        session.start_reader()
        self.sessions.append(session)

    def events(self, name=None, **headers):
        """Events so far, optionally of one name and with the given header values."""
        messages = []
        for session in self.sessions:
            with session._lock:
                messages += session.messages
        return [m for m in messages if m.event and (name is None or m.event == name)
                and all(m.get(k) == v for k, v in headers.items())]

    def talk_time(self, uniqueid):
        """Seconds from the answer of the call's second leg to the first hangup after it:
        the DialEnd (ANSWER) of the channel whose Uniqueid is the call's (the Originate's
        channel dials the second leg in both modes) to the first Hangup of any channel of
        the call (Linkedid). None if the second leg never answered."""
        answered = [m for m in self.events("DialEnd", Uniqueid=uniqueid)
                    if m.get("DialStatus") == "ANSWER"]
        if not answered:
            return None
        start = answered[0].at
        ends = [m.at for m in self.events("Hangup", Linkedid=uniqueid) if m.at >= start]
        return min(ends) - start if ends else None

    def call_over(self, uniqueid):
        """True once every channel of the call that appeared has hung up."""
        created = {m.get("Uniqueid") for m in self.events("Newchannel", Linkedid=uniqueid)}
        gone = {m.get("Uniqueid") for m in self.events("Hangup", Linkedid=uniqueid)}
        return bool(created) and created <= gone

    def close(self):
        for session in self.sessions:
            session.close()
