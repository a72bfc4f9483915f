"""The gateway's Asterisk Manager Interface (AMI) client: small, synchronous, deadline-bound.

Why our own client and not pyst2: see docs/decisions.md (no timeouts, replies matched by
arrival order, dies on `ChanVariable(...)` headers, glued messages after
`status will follow`, one byte per recv).

Layers, from the wire up:

* the framing (`pbx.wire`), pure functions tested with byte literals;
* `AmiSession`: one TCP connection under ONE deadline. The TCP connect is bounded by
  `connect_timeout`; banner, Login, actions and Logoff together by `timeout`. Replies are
  matched by ActionID; events and other sessions' replies are skipped;
* one function per AMI action (`originate`, `send_message`, `ping`) and `place_call`, the
  whole exchange the HTTP endpoint needs.

Errors: `AmiUnavailable` (HTTP 503: cannot connect, no or wrong banner, silence, the
connection closed or Asterisk said Goodbye) and `AmiRejected` (HTTP 502: Asterisk answered
`Response: Error`, e.g. login refused or Originate refused). Their `detail` is meant for
the client and never contains the AMI secret.

This module is imported by a CGI process per request: stdlib only, no threads, no logging.
"""

import os
import time

# The C module itself: socket.py's wrappers (enums, selectors, sendfile) cost a CGI ~2.5 ms
# to import and none is used here.
import _socket as socket

from callexchange.pbx.wire import BANNER_PREFIX, MessageParser, encode_action


_RECV_SIZE = 65536
# Logoff is a courtesy: wait at most this long for Asterisk's Goodbye.
_LOGOFF_WAIT = 0.5
_VARIABLE_NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")


# Asterisk splits each Variable header on commas and strips quotes and backslashes
# (AST_STANDARD_APP_ARGS), so values holding them would arrive altered or split.
_VARIABLE_VALUE_FORBIDDEN = ("\r", "\n", "\0", ",", '"', "\\")


class AmiError(Exception):
    """An AMI exchange failed. `http_status` is the status the gateway answers with,
    `detail` a human-readable reason (never containing the secret)."""

    http_status = 500
    error_id = "ami-error"

    def __init__(self, detail):
        super().__init__(detail)
        self.detail = detail


class AmiUnavailable(AmiError):
    """Asterisk could not be reached or did not answer in time (HTTP 503)."""

    http_status = 503
    error_id = "ami-unavailable"


class OriginateUnconfirmed(AmiUnavailable):
    """The Originate was written but Asterisk never confirmed it (time-out, lost
    connection): the call may be ringing (HTTP 503). `uniqueid` is the call's ChannelId,
    which its webhooks will carry if it does ring."""

    error_id = "originate-unconfirmed"

    def __init__(self, detail, uniqueid):
        super().__init__(detail)
        self.uniqueid = uniqueid


class AmiRejected(AmiError):
    """Asterisk answered, and refused: login refused or `Response: Error` (HTTP 502)."""

    http_status = 502
    error_id = "ami-rejected"


class AmiSession:
    """One AMI connection. Use as a context manager; it always closes the socket::

        with AmiSession(host, port, username, secret, connect_timeout=3, timeout=5) as session:
            session.login()
            reply = session.action("Ping")

    Entering connects (bounded by `connect_timeout`) and reads the banner. From the moment
    the TCP connection is up, everything else (banner, Login, actions, Logoff) shares one
    deadline `timeout` seconds away: no call here can wait past it.
    """

    def __init__(self, host, port, username, secret, connect_timeout=3.0, timeout=5.0,
                 not_after=None):
        self.host = host
        self.port = int(port)
        self.username = username
        self._secret = secret
        self.connect_timeout = float(connect_timeout)
        self.timeout = float(timeout)
        self.banner = None
        self.logged_in = False
        self._sock = None
        self._closed = False
        self._broken = False
        self._deadline = None
        # A time.monotonic() no step may pass, whatever the two timeouts allow: the
        # deadline of the whole HTTP request (a JSON-RPC batch places several calls).
        self.not_after = not_after
        self._parser = MessageParser(expect_banner=True)
        self._pending = []
        self._id_prefix = "cx-" + os.urandom(6).hex()
        self._id_counter = 0

    @classmethod
    def from_settings(cls, settings, not_after=None):
        """A session for the `[ami]` section of the config (`config.ami`)."""
        return cls(settings.host, settings.port, settings.username, settings.secret,
                   settings.connect_timeout, settings.timeout, not_after)

    def _bounded(self, when):
        return when if self.not_after is None else min(when, self.not_after)

    def __repr__(self):
        return "<AmiSession %s@%s:%s>" % (self.username, self.host, self.port)

    def __enter__(self):
        self.connect()
        return self

    def __exit__(self, exc_type, exc, tb):
        self.logoff()
        self.close()
        return False

    @property
    def socket(self):
        """The socket object (closed ones included), or None before connect()."""
        return self._sock

    def remaining(self):
        """Seconds left before the session's deadline (None before connect)."""
        if self._deadline is None:
            return None
        return max(0.0, self._deadline - time.monotonic())

    def connect(self):
        """Open the TCP connection (within connect_timeout) and read the banner (within
        the session deadline). Raises AmiUnavailable; the socket is closed on failure."""
        if self._sock is not None:
            raise RuntimeError("AmiSession.connect() called twice")
        try:
            self._connect_tcp()
            self._read_banner()
        except BaseException:
            self.close()
            raise

    def _connect_tcp(self):
        give_up = self._bounded(time.monotonic() + self.connect_timeout)
        try:
            # An ASCII name as bytes: a str would load the IDNA codec (~1 ms) to encode it.
            host = self.host.encode("ascii") if self.host.isascii() else self.host
            addresses = socket.getaddrinfo(host, self.port, 0, socket.SOCK_STREAM)
        except (OSError, UnicodeError) as error:
            raise AmiUnavailable("cannot resolve the Asterisk AMI host: %s"
                                 % _reason(error)) from None
        last = None
        for family, kind, proto, _, address in addresses:
            left = give_up - time.monotonic()
            if left <= 0:
                break
            try:
                sock = socket.socket(family, kind, proto)
            except OSError as error:  # e.g. no IPv6 here, or out of file descriptors
                last = _reason(error)
                continue
            # Keep a reference at once, so close() can reach it whatever happens next.
            self._sock = sock
            try:
                sock.settimeout(left)
                sock.connect(address)
            except socket.timeout:
                last = "timed out after %gs" % self.connect_timeout
                sock.close()
                continue
            except OSError as error:
                last = _reason(error)
                sock.close()
                continue
            # Each action is one write; don't let Nagle hold one back for a delayed ACK.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._deadline = self._bounded(time.monotonic() + self.timeout)
            return
        if last is None:
            last = "timed out after %gs" % self.connect_timeout
        raise AmiUnavailable("cannot connect to Asterisk AMI: %s" % last)

    def _read_banner(self):
        while self._parser.banner is None:
            self._receive("the banner")
        self.banner = self._parser.banner
        if not self.banner.startswith(BANNER_PREFIX):
            self._broken = True
            raise AmiUnavailable("the AMI port does not answer like Asterisk (its first "
                                 "line was %r)" % self.banner[:80])

    def _check_usable(self):
        if self._deadline is None and not self._closed:
            raise RuntimeError("AmiSession is not connected: use it in a with block "
                               "or call connect() first")
        if self._closed or self._broken:
            raise AmiUnavailable("the AMI connection is closed")

    def _fail(self, detail):
        self._broken = True
        return AmiUnavailable(detail)

    def _receive(self, waiting_for):
        """One recv() under the deadline; adds completed messages to the queue."""
        self._check_usable()
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise self._fail("Asterisk AMI did not answer in time (%gs; waiting for %s)"
                             % (self.timeout, waiting_for))
        try:
            self._sock.settimeout(left)
            data = self._sock.recv(_RECV_SIZE)
        except socket.timeout:
            raise self._fail("Asterisk AMI did not answer in time (%gs; waiting for %s)"
                             % (self.timeout, waiting_for)) from None
        except OSError as error:
            raise self._fail("the AMI connection failed while waiting for %s: %s"
                             % (waiting_for, _reason(error))) from None
        if not data:
            how = "in the middle of" if self._parser.partial else "before"
            raise self._fail("Asterisk AMI closed the connection %s %s" % (how, waiting_for))
        try:
            self._pending.extend(self._parser.feed(data))
        except ValueError as error:
            raise self._fail("unreadable answer from Asterisk AMI: %s" % error) from None

    def _send(self, data, what):
        self._check_usable()
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise self._fail("Asterisk AMI did not answer in time (%gs; no time left to "
                             "send %s)" % (self.timeout, what))
        try:
            self._sock.settimeout(left)
            self._sock.sendall(data)
        except socket.timeout:
            raise self._fail("sending %s to Asterisk AMI timed out" % what) from None
        except OSError as error:
            raise self._fail("sending %s to Asterisk AMI failed: %s"
                             % (what, _reason(error))) from None

    def next_message(self, waiting_for="a message"):
        """The next received message (reply or event), waiting within the deadline."""
        while not self._pending:
            self._receive(waiting_for)
        return self._pending.pop(0)

    def next_event(self, name=None):
        """The next event (optionally only events called `name`), within the deadline;
        replies and other events are skipped."""
        waiting_for = "the %s event" % name if name else "an event"
        while True:
            message = self.next_message(waiting_for)
            event = message.get("Event")
            if event is not None and (name is None or event.lower() == name.lower()):
                return message

    def new_action_id(self):
        """A fresh ActionID, unique to this session and random across sessions (Asterisk
        sends some events with our ActionID to every connected manager session)."""
        self._id_counter += 1
        return "%s-%d" % (self._id_prefix, self._id_counter)

    def action(self, name, fields=(), check=True, while_waiting=None):
        """Send the action `name` with `fields` ((header, value) pairs) and return its
        reply: the message carrying our ActionID. Events and replies to other ActionIDs
        are skipped. `while_waiting()`, if given, runs once the action is sent, before
        the reply is read (it must not raise).

        Raises AmiRejected on `Response: Error` (unless check=False), AmiUnavailable on a
        timeout, a closed connection, a Goodbye or a Shutdown, ValueError on a field with
        CR, LF or NUL (before anything is sent).
        """
        action_id = self.new_action_id()
        data = encode_action(name, [("ActionID", action_id)] + list(fields))
        waiting_for = "the reply to %s" % name
        self._send(data, name)
        if while_waiting is not None:
            while_waiting()
        while True:
            message = self.next_message(waiting_for)
            response = message.get("Response")
            if response is None:
                if (message.get("Event") or "").lower() == "shutdown":
                    raise self._fail("Asterisk is shutting down (waiting for %s)"
                                     % waiting_for)
                continue
            if response.lower() == "goodbye" and name.lower() != "logoff":
                raise self._fail("Asterisk AMI said Goodbye instead of %s" % waiting_for)
            if message.get("ActionID") != action_id:
                continue
            if check and response.lower() == "error":
                raise AmiRejected("%s refused by Asterisk: %s"
                                  % (name, message.get("Message") or "(no message)"))
            return message

    def login(self, events=False):
        """Log in with the username and secret. With events=False (the default) the
        session asks Asterisk for no events (`Events: off`): a request-scoped session
        needs none. Raises AmiRejected when Asterisk refuses the login."""
        fields = [("Username", self.username), ("Secret", self._secret),
                  ("Events", "on" if events else "off")]
        try:
            reply = self.action("Login", fields)
        except AmiRejected as error:
            self._broken = True  # Asterisk hangs up after a refused login
            raise AmiRejected("AMI login refused by Asterisk: %s"
                              % error.detail.split(": ", 1)[-1]) from None
        self.logged_in = True
        return reply

    def logoff(self):
        """Best effort: send Logoff and wait briefly for the Goodbye or the close.
        Never raises; does nothing when not logged in or the connection is broken."""
        if not self.logged_in or self._closed or self._broken or self._sock is None:
            return
        self.logged_in = False
        deadline = self._deadline
        try:
            self._deadline = min(deadline, time.monotonic() + _LOGOFF_WAIT)
            if self._deadline - time.monotonic() <= 0:
                # No time left to wait; still tell Asterisk, without blocking.
                self._sock.setblocking(False)
                self._sock.send(encode_action("Logoff", [("ActionID", self.new_action_id())]))
                return
            self.action("Logoff", check=False)
        except (AmiError, OSError, ValueError):
            pass
        finally:
            self._deadline = deadline
            self._broken = True  # after Logoff the connection is finished either way

    def close(self):
        """Close the socket. Idempotent; never raises."""
        self._closed = True
        self.logged_in = False
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass


def _reason(error):
    """A short text for an OSError, e.g. 'Connection refused'."""
    strerror = error.strerror if isinstance(error, OSError) else None
    return strerror or str(error) or type(error).__name__


def check_variable(name, value):
    """Return (name, value) as strings if a channel variable can cross AMI unaltered.
    Names: letters, digits, '_'. Values: no CR, LF, NUL, comma, double quote or
    backslash (Asterisk splits and unquotes `Variable` headers). Raises ValueError."""
    name = str(name)
    if not name or not set(name) <= _VARIABLE_NAME_CHARS:
        raise ValueError("channel variable name must be letters, digits or '_': %r" % name)
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise TypeError("channel variable %s must be text, got %s"
                        % (name, type(value).__name__))
    value = str(value)
    for char in _VARIABLE_VALUE_FORBIDDEN:
        if char in value:
            raise ValueError("channel variable %s must not contain CR, LF, NUL, ',', '\"' "
                             "or '\\': %r" % (name, value))
    return name, value


def hangup_handler_variable(context):
    """The `Variable` value that makes Asterisk push `context`,s,1 as a hangup handler on
    the originated channel as it creates it (before it rings): Asterisk sets Originate
    variables with pbx_builtin_setvar_helper, which writes dialplan functions too. Quoted,
    since Asterisk splits Variable values on commas (and drops the quotes).

    >>> hangup_handler_variable("callexchange-agent-unanswered")
    'CHANNEL(hangup_handler_push)="callexchange-agent-unanswered,s,1"'
    """
    if not context or not all(c.isascii() and (c.isalnum() or c in "-_") for c in context):
        raise ValueError("hangup handler context must be letters, digits, '-' or '_': %r"
                         % context)
    return 'CHANNEL(hangup_handler_push)="%s,s,1"' % context


def originate_fields(*, channel, context, exten, priority=1, caller_id=None, variables=(),
                     channel_id, timeout_ms, account=None, hangup_handler=None):
    """The validated header list of an asynchronous Originate (see `originate`).
    Raises ValueError for anything that could not cross AMI unaltered."""
    fields = [
        ("Channel", channel),
        ("Context", context),
        ("Exten", exten),
        ("Priority", priority),
        ("Timeout", int(timeout_ms)),
        ("ChannelId", channel_id),
        ("Async", "true"),
    ]
    if caller_id:
        fields.append(("CallerID", caller_id))
    if account:
        fields.append(("Account", account))
    for name, value in variables:
        name, value = check_variable(name, value)
        fields.append(("Variable", "%s=%s" % (name, value)))
    if hangup_handler:
        fields.append(("Variable", hangup_handler_variable(hangup_handler)))
    for header, value in fields:
        if value is None or value == "":
            raise ValueError("Originate %s must not be empty" % header)
    encode_action("Originate", fields)  # the CR/LF/NUL and line-length checks
    return fields


def originate(session, *, channel, context, exten, priority=1, caller_id=None, variables=(),
              channel_id, timeout_ms, account=None, hangup_handler=None):
    """Ask Asterisk to place a call (`Action: Originate`, `Async: true`): ring `channel`
    for at most `timeout_ms`, then run `exten`@`context`. `channel_id` becomes the
    channel's Uniqueid; each of `variables` ((name, value) pairs) one `Variable` header.
    `hangup_handler`: a context whose s,1 runs when the originated channel hangs up,
    answered or not (see `hangup_handler_variable`).

    Returns the reply (`Response: Success`, `Message: Originate successfully queued`).
    Raises AmiRejected when Asterisk refuses, AmiUnavailable on timeout or a lost
    connection, ValueError on invalid input (before anything is sent).
    """
    fields = originate_fields(channel=channel, context=context, exten=exten,
                              priority=priority, caller_id=caller_id, variables=variables,
                              channel_id=channel_id, timeout_ms=timeout_ms, account=account,
                              hangup_handler=hangup_handler)
    return session.action("Originate", fields)


def message_fields(to, body, from_=None):
    """The validated header list of a MessageSend (see `send_message`)."""
    fields = [("To", to)]
    if from_:
        fields.append(("From", from_))
    fields.append(("Body", body))
    if not to:
        raise ValueError("MessageSend To must not be empty")
    encode_action("MessageSend", fields)
    return fields


def send_message(session, to, body, from_=None):
    """Send a text message to a softphone (`Action: MessageSend`), e.g. to
    `pjsip:1001`. Returns the reply; raises AmiRejected when Asterisk refuses it,
    AmiUnavailable on timeout, ValueError when `body` holds CR, LF or NUL."""
    return session.action("MessageSend", message_fields(to, body, from_))


def ping(ami_settings):
    """Check that Asterisk answers and accepts our login (`callexchange check`): connect,
    Login, Ping, Logoff. Returns the banner, e.g. 'Asterisk Call Manager/5.0.1'.
    Raises AmiUnavailable or AmiRejected."""
    with AmiSession.from_settings(ami_settings) as session:
        session.login()
        session.action("Ping")
        return session.banner


def available_actions(session):
    """The actions the session's user may use, as Asterisk's ListCommands lists them:
    {action: privilege classes} (e.g. {'Originate': 'originate,all', 'Ping': '<none>'}).
    The gateway's user sees Originate only with write=originate, MessageSend only with
    write=message."""
    reply = session.action("ListCommands")
    actions = {}
    for name, value in reply.pairs:
        if name in ("Response", "ActionID", "Message"):
            continue
        _, found, privilege = value.rpartition("(Priv: ")
        actions[name] = privilege.rstrip(")").strip() if found else ""
    return actions


def probe(ami_settings):
    """What `callexchange check` asks over AMI: connect, Login, ListCommands, Logoff.
    Returns (banner, available_actions). Raises AmiUnavailable or AmiRejected."""
    with AmiSession.from_settings(ami_settings) as session:
        session.login()
        return session.banner, available_actions(session)


def place_call(ami_settings, originate_kwargs, message=None, not_after=None,
               while_waiting=None):
    """The whole AMI exchange of one API call: connect, Login, Originate (the keyword
    arguments of `originate`), then, if `message` is a (to, body) or (to, body, from)
    tuple, MessageSend; Logoff; close. Everything within connect_timeout + timeout of
    `ami_settings`, and before `not_after` (a time.monotonic()) when given.

    Returns {"msg_sent": True | False | None, "msg_error": None | text} (msg_sent None:
    no message asked; msg_error: why it was not sent). Once the Originate has been
    accepted, a failing or timed-out MessageSend only gives msg_sent False: the call is
    placed. Raises AmiUnavailable / AmiRejected when the call could not be placed,
    OriginateUnconfirmed (an AmiUnavailable) when the Originate was sent and never
    confirmed, so it may have been; ValueError on invalid input before connecting.
    `while_waiting()`: run once the Originate is sent, while Asterisk's reply is awaited
    (the endpoint makes the call's caller-ID count durable meanwhile); it must not raise.

    (`pbx.persistent.PersistentAmi.place_call` is the same exchange over one long-lived
    connection.)
    """
    fields, text = call_fields(originate_kwargs, message, not_after)
    with AmiSession.from_settings(ami_settings, not_after) as session:
        session.login()
        return originate_call(session, fields, text, while_waiting)


def call_fields(originate_kwargs, message=None, not_after=None):
    """(Originate fields, MessageSend fields or None) of one API call, validated before
    anything is sent: ValueError for what cannot cross AMI, AmiUnavailable when the
    request's deadline `not_after` has already passed."""
    fields = originate_fields(**originate_kwargs)
    text = None
    if message is not None:
        text = message_fields(*message)
    if not_after is not None and not_after - time.monotonic() <= 0:
        raise AmiUnavailable("no time left for this call: the request's deadline "
                             "(connect_timeout + timeout) has passed")
    return fields, text


def originate_call(session, fields, text=None, while_waiting=None):
    """Originate, then MessageSend when `text` is given, on a logged-in `session` (anything
    with AmiSession's `action`). The result and errors of `place_call`."""
    try:
        session.action("Originate", fields, while_waiting=while_waiting)
    except AmiUnavailable as error:
        # Written but never confirmed: the call may be ringing. The caller must not
        # treat this as "not placed" (no retry that could dial the lead twice).
        raise OriginateUnconfirmed(error.detail, dict(fields).get("ChannelId")) from None
    msg_sent, msg_error = None, None
    if text is not None:
        try:
            session.action("MessageSend", text)
            msg_sent = True
        except AmiError as error:
            msg_sent, msg_error = False, error.detail
    return {"msg_sent": msg_sent, "msg_error": msg_error}
