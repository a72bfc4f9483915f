"""One long-lived AMI connection per process, shared by its threads: how the persistent
mode (mod_wsgi daemon processes) reaches Asterisk.

A CGI process connects, logs in, originates and logs off for every request
(`pbx.ami.place_call`). A daemon process serves thousands of requests from several
threads, so it keeps one logged-in connection (`AmiLink`) and puts every thread's actions
on it:

* logged in once (`Events: off`); every action carries an ActionID unique to the
  connection, and its reply is the reply carrying that ActionID. Events (Asterisk sends
  every OriginateResponse to every `read=call` session that takes events) and replies to
  other ActionIDs, late ones included, are dropped: no thread takes another's reply;
* no thread of its own: a thread waiting for its reply reads the socket for everyone (one
  reader at a time), files the other threads' replies and wakes them;
* the deadlines of a per-request session, per request: on a connection that is up, the
  request's actions share `timeout`; when the connection must be made first (the first
  request, or after Asterisk restarted or dropped it), the TCP connect gets
  `connect_timeout`, and banner, Login and actions share `timeout` from there. Never
  longer than connect_timeout + timeout from the start of the request, nor past its
  `not_after`;
* a connection that Asterisk closed (a restart) is noticed before anything is written on
  it, and made again. One that has been silent for more than `check_after` seconds is
  asked for a Ping first, so that a frozen Asterisk costs a 503 saying that nothing was
  sent, rather than an Originate that would ring once it thaws;
* a reply that does not come in time retires the connection: nothing new is written on
  it, the requests still waiting on it keep their chance, the next request connects
  afresh. An Originate written and never confirmed is reported as such
  (`ami.OriginateUnconfirmed`, as `pbx.ami.place_call` raises it): the call may be ringing.

`PersistentAmi` is what the WSGI application gets in persistent mode: the process's link
for the `[ami]` settings in force (a config edit brings a new one), with `place_call` and
`ping` taking the arguments of the functions of `pbx.ami`.
"""

import select
import socket
import threading
import time

from callexchange.pbx import ami
from callexchange.pbx.wire import encode_action

# A connection silent for longer than this is pinged before the next action goes out.
CHECK_AFTER = 1.0
_RECV_SIZE = 65536


class _Connection(ami.AmiSession):
    """One TCP connection of a link. Connected and logged in as an AmiSession (the same
    deadlines and errors), then shared: non-blocking, written under `send_lock`, read by
    one thread at a time (`reading`), all other state guarded by the link's lock."""

    def __init__(self, settings, not_after):
        super().__init__(settings.host, settings.port, settings.username, settings.secret,
                         settings.connect_timeout, settings.timeout, not_after)
        self.send_lock = threading.Lock()
        self.replies = {}       # ActionID -> its reply, None while a thread waits for it
        self.reading = False    # a thread is reading the socket, outside the link's lock
        self.failure = None     # why it is unusable; "{waiting}" stands for what one waits for
        self.retired = False    # a reply came too late: take no new action
        self.heard = None       # time.monotonic() when bytes last came

    def open(self):
        """Connect and log in within this session's deadlines; then go non-blocking.
        Returns the deadline that banner, Login and the first actions share."""
        try:
            self.connect()
            self.login()
        except BaseException:
            self.close()
            raise
        self.heard = time.monotonic()
        self._sock.settimeout(0.0)
        return self._deadline

    def received(self):
        """The messages parsed but not yet taken (during the login)."""
        pending, self._pending = self._pending, []
        return pending

    def feed(self, data):
        """Messages completed by `data`; ValueError on what is not AMI."""
        self.heard = time.monotonic()
        return self._parser.feed(data)

    @property
    def partial(self):
        return self._parser.partial

    def shutdown(self):
        """End the connection under the feet of a thread polling it (close() would not
        wake it up); that thread closes the socket afterwards."""
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def log_off(self):
        """Logoff (waiting for Goodbye at most 0.5 s, as a per-request session does) and
        close. Only when no thread uses the connection any more."""
        self._deadline = time.monotonic() + self.timeout
        self.logoff()
        self.close()


class _Request:
    """A link seen by one request: `action(name, fields, check)` as AmiSession's, under
    the request's deadlines (for `ami.originate_call`, `ami.originate`, `ami.send_message`)."""

    def __init__(self, link, not_after=None):
        now = time.monotonic()
        settings = link.settings
        limit = now + float(settings.connect_timeout) + float(settings.timeout)
        self.link = link
        self.not_after = limit if not_after is None else min(limit, not_after)
        # On a connection that is up, the request's actions share `timeout`.
        self.deadline = min(now + float(settings.timeout), self.not_after)

    def action(self, name, fields=(), check=True, while_waiting=None):
        return self.link.run_action(self, name, fields, check, while_waiting)


class AmiLink:
    """One long-lived, logged-in AMI connection for the `[ami]` `settings`, shared by the
    threads of a process; made on first use and again whenever it is lost::

        link = AmiLink(config.ami)
        link.place_call(originate_kwargs, message, not_after)   # as ami.place_call
        link.close()                                            # Logoff, at exit

    `check_after`: seconds of silence after which a Ping goes first (None: never).
    """

    def __init__(self, settings, check_after=CHECK_AFTER):
        self.settings = settings
        self.check_after = check_after
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._connection = None
        self._last = None
        self._connecting = False
        self._closed = False
        self.logins = 0

    def __repr__(self):
        return "<AmiLink %s@%s:%s>" % (self.settings.username, self.settings.host,
                                       self.settings.port)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close()
        return False

    @property
    def socket(self):
        """The socket of the current (or last) connection, None before the first."""
        return self._last.socket if self._last is not None else None

    @property
    def banner(self):
        return self._last.banner if self._last is not None else None

    # --- what the endpoint calls ---

    def request(self, not_after=None):
        """This link under one request's deadlines (a `not_after` of time.monotonic()
        bounds them further): an object with AmiSession's `action`."""
        return _Request(self, not_after)

    def connect(self, not_after=None):
        """Make sure the connection is up and logged in (connecting if it is not), as a
        request of its own; returns the banner."""
        self._ready_connection(self.request(not_after))
        return self.banner

    def action(self, name, fields=(), check=True, not_after=None):
        """One action and its reply, as AmiSession.action, as a request of its own."""
        return self.request(not_after).action(name, fields, check)

    def place_call(self, originate_kwargs, message=None, not_after=None, while_waiting=None):
        """`pbx.ami.place_call` on this link: Originate, then MessageSend if `message` is
        a (to, body) pair. Same result, errors, deadlines and `while_waiting`, no Login
        or Logoff unless the connection has to be made."""
        fields, text = ami.call_fields(originate_kwargs, message, not_after)
        request = self.request(not_after)
        # Connected (and checked) first: a failure here sent nothing, as a failed Login
        # of a per-request session sends nothing.
        self._ready_connection(request)
        return ami.originate_call(request, fields, text, while_waiting)

    def ping(self, not_after=None):
        """Ping Asterisk over the link; returns the banner."""
        self.action("Ping", not_after=not_after)
        return self.banner

    def close(self):
        """No new action from now on; log off (within 0.5 s) if no thread is waiting on
        the connection, else let those finish and close it after them. Idempotent."""
        with self._lock:
            self._closed = True
            conn, self._connection = self._connection, None
            self._changed.notify_all()
            if conn is None:
                return
            conn.retired = True
            idle = conn.failure is None and not conn.replies and not conn.reading
            if not idle:
                self._close_if_done(conn)
                return
            conn.failure = "the AMI connection is closed (waiting for {waiting})"
        conn.log_off()

    # --- one action on the shared connection ---

    def run_action(self, request, name, fields, check, while_waiting=None):
        """`request.action`: the connection ready (made, checked), then the action."""
        conn = self._ready_connection(request)
        return self._exchange(conn, request, name, fields, check, while_waiting)

    def _exchange(self, conn, request, name, fields, check, while_waiting=None):
        with self._lock:
            action_id = conn.new_action_id()
            conn.replies[action_id] = None
        try:
            data = encode_action(name, [("ActionID", action_id)] + list(fields))
            self._send(conn, data, request.deadline, name)
            if while_waiting is not None:
                while_waiting()
            reply = self._wait(conn, action_id, request.deadline, "the reply to %s" % name)
        finally:
            with self._lock:
                conn.replies.pop(action_id, None)
                self._close_if_done(conn)
        if check and reply.get("Response", "").lower() == "error":
            raise ami.AmiRejected("%s refused by Asterisk: %s"
                                  % (name, reply.get("Message") or "(no message)"))
        return reply

    def _ready_connection(self, request):
        while True:
            with self._lock:
                step, conn = self._next_step(request)
            if step == "use":
                return conn
            if step == "connect":
                return self._connect(request)
            try:  # "check": silent for a while; is Asterisk still answering on it?
                self._exchange(conn, request, "Ping", (), False)
                return conn
            except ami.AmiUnavailable:
                continue  # the Ping retired or failed it: connect afresh

    def _next_step(self, request):
        """Under the lock: ("use", conn), ("check", conn) or ("connect", None), waiting
        while another thread connects."""
        while True:
            if self._closed:
                raise ami.AmiUnavailable("the AMI connection is closed")
            conn = self._connection
            if conn is not None and not conn.reading:
                self._drain(conn)
                conn = self._connection
            if conn is not None:
                silent = time.monotonic() - conn.heard
                if self.check_after is not None and silent > self.check_after:
                    conn.heard = time.monotonic()  # one Ping per silence is enough
                    return "check", conn
                return "use", conn
            if not self._connecting:
                self._connecting = True
                return "connect", None
            left = request.not_after - time.monotonic()
            if left <= 0:
                raise ami.AmiUnavailable(
                    "Asterisk AMI did not answer in time (%gs; waiting for the connection "
                    "to Asterisk)" % float(self.settings.timeout))
            self._changed.wait(left)

    def _connect(self, request):
        conn = self._last = _Connection(self.settings, request.not_after)
        try:
            deadline = conn.open()
        except BaseException:
            with self._lock:
                self._connecting = False
                self._changed.notify_all()
            raise
        with self._lock:
            self._connecting = False
            self._changed.notify_all()
            if self._closed:
                conn.close()
                raise ami.AmiUnavailable("the AMI connection is closed")
            self._connection = conn
            self.logins += 1
            self._handle(conn, conn.received())
        # Banner, Login and this request's actions share `timeout` from the TCP connect.
        request.deadline = min(deadline, request.not_after)
        if conn.failure is not None:
            raise ami.AmiUnavailable(conn.failure.replace("{waiting}", "the first action"))
        return conn

    def _send(self, conn, data, deadline, what):
        left = deadline - time.monotonic()
        if left <= 0 or not conn.send_lock.acquire(timeout=left):
            with self._lock:
                self._retire(conn)
            raise ami.AmiUnavailable("Asterisk AMI did not answer in time (%gs; no time "
                                     "left to send %s)" % (float(self.settings.timeout), what))
        try:
            if conn.failure is not None:
                raise ami.AmiUnavailable(conn.failure.replace("{waiting}", "the reply to " + what))
            view = memoryview(data)
            while view:
                try:
                    view = view[conn.socket.send(view):]
                except BlockingIOError:
                    if not _wait_for(conn.socket, select.POLLOUT, deadline):
                        # Part of the action may be out: the stream is unusable.
                        self._fail_and_raise(conn, "sending %s to Asterisk AMI timed out" % what)
                except OSError as error:
                    self._fail_and_raise(conn, "sending %s to Asterisk AMI failed: %s"
                                         % (what, _reason(error)))
        finally:
            conn.send_lock.release()

    def _fail_and_raise(self, conn, detail):
        with self._lock:
            self._fail(conn, "the AMI connection failed while waiting for {waiting}: "
                             + detail.replace("{", "(").replace("}", ")"))
        raise ami.AmiUnavailable(detail)

    def _wait(self, conn, action_id, deadline, waiting_for):
        """Under the lock, until the reply to `action_id` is filed, the connection fails
        or `deadline` passes; reading the socket when no other thread does."""
        with self._lock:
            while True:
                reply = conn.replies.get(action_id)
                if reply is not None:
                    return reply
                if conn.failure is not None:
                    raise ami.AmiUnavailable(conn.failure.replace("{waiting}", waiting_for))
                left = deadline - time.monotonic()
                if left <= 0:
                    self._retire(conn)
                    raise ami.AmiUnavailable("Asterisk AMI did not answer in time (%gs; "
                                             "waiting for %s)"
                                             % (float(self.settings.timeout), waiting_for))
                if conn.reading:
                    self._changed.wait(left)
                    continue
                conn.reading = True
                self._lock.release()
                try:
                    data, problem = _receive(conn.socket, left)
                finally:
                    self._lock.acquire()
                    conn.reading = False
                    self._changed.notify_all()
                self._received(conn, data, problem)
                self._close_if_done(conn)

    # --- under the lock ---

    def _drain(self, conn):
        """Take what came while nobody was reading (late replies, Asterisk's close)."""
        while conn.failure is None:
            try:
                data = conn.socket.recv(_RECV_SIZE)
            except BlockingIOError:
                return
            except OSError as error:
                self._received(conn, None, _reason(error))
                return
            self._received(conn, data, None)
            if not data:
                return

    def _received(self, conn, data, problem):
        if problem is not None:
            self._fail(conn, "the AMI connection failed while waiting for {waiting}: "
                       + problem)
        elif data == b"":
            self._fail(conn, "Asterisk AMI closed the connection %s {waiting}"
                       % ("in the middle of" if conn.partial else "before"))
        elif data:
            try:
                messages = conn.feed(data)
            except ValueError as error:
                self._fail(conn, "unreadable answer from Asterisk AMI: %s"
                           % str(error).replace("{", "("))
                return
            self._handle(conn, messages)

    def _handle(self, conn, messages):
        """File the replies that threads wait for; drop events and other replies."""
        for message in messages:
            response = message.get("Response")
            if response is None:
                if (message.get("Event") or "").lower() == "shutdown":
                    self._fail(conn, "Asterisk is shutting down (waiting for {waiting})")
                    return
                continue  # an event, of this call or of any other: not ours to act on
            if response.lower() == "goodbye":
                self._fail(conn, "Asterisk AMI said Goodbye instead of {waiting}")
                return
            action_id = message.get("ActionID")
            if action_id in conn.replies and conn.replies[action_id] is None:
                conn.replies[action_id] = message
        self._changed.notify_all()

    def _fail(self, conn, why):
        if conn.failure is None:
            conn.failure = why
        if self._connection is conn:
            self._connection = None
        self._changed.notify_all()
        self._close_if_done(conn)

    def _retire(self, conn):
        conn.retired = True
        if self._connection is conn:
            self._connection = None
        self._close_if_done(conn)

    def _close_if_done(self, conn):
        if conn.failure is None and not (conn.retired and not conn.replies):
            return
        if conn.reading or conn.send_lock.locked():
            conn.shutdown()  # wakes the thread in poll(); it closes the socket after
        else:
            conn.close()


class PersistentAmi:
    """The AMI link of one process for the `[ami]` settings in force, given to the WSGI
    application in persistent mode. `place_call` and `ping` take the arguments of
    `pbx.ami.place_call` and `pbx.ami.ping`; settings that changed (a config edit) bring a
    new link, and the old one logs off once its requests are done."""

    def __init__(self, check_after=CHECK_AFTER):
        self.check_after = check_after
        self._lock = threading.Lock()
        self._key = None
        self._link = None

    def link(self, settings):
        """The link for `settings` (host, port, username, secret and both timeouts)."""
        key = (settings.host, int(settings.port), settings.username, settings.secret,
               float(settings.connect_timeout), float(settings.timeout))
        old = None
        with self._lock:
            if self._key != key or self._link is None:
                old, self._link, self._key = self._link, AmiLink(settings, self.check_after), key
            link = self._link
        if old is not None:
            old.close()
        return link

    def place_call(self, ami_settings, originate_kwargs, message=None, not_after=None,
                   while_waiting=None):
        """`pbx.ami.place_call` over the process's long-lived connection."""
        return self.link(ami_settings).place_call(originate_kwargs, message, not_after,
                                                  while_waiting)

    def ping(self, ami_settings):
        """`pbx.ami.ping` over the process's long-lived connection."""
        return self.link(ami_settings).ping()

    def close(self):
        """Log off and close (at process exit)."""
        with self._lock:
            link, self._link, self._key = self._link, None, None
        if link is not None:
            link.close()


def _reason(error):
    strerror = error.strerror if isinstance(error, OSError) else None
    return strerror or str(error) or type(error).__name__


def _wait_for(sock, events, deadline):
    """True when `sock` is ready for `events` (select.POLLIN/POLLOUT) before `deadline`."""
    left = deadline - time.monotonic()
    if left <= 0:
        return False
    poller = select.poll()
    try:
        poller.register(sock.fileno(), events)
    except (ValueError, OSError):  # closed meanwhile: let the next call say so
        return True
    return bool(poller.poll(int(left * 1000) + 1))


def _receive(sock, seconds):
    """(bytes, None) when something came (b"": the peer closed), (None, None) after
    `seconds` of silence, (None, reason) when the socket failed."""
    if not _wait_for(sock, select.POLLIN, time.monotonic() + seconds):
        return None, None
    try:
        return sock.recv(_RECV_SIZE), None
    except BlockingIOError:
        return None, None
    except OSError as error:
        return None, _reason(error)
