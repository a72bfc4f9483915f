"""The demo CRM: receives the gateway's webhooks and logs each one, with whether its
Standard Webhooks signature checks out. What `install.sh --demo` runs.

    callexchange [--config FILE] webhooks demo-crm --listen 127.0.0.1:8099 \
        --log /var/log/callexchange/demo-webhooks.log

Each webhook becomes one JSON line of the log: when it arrived, the path, the event, the
webhook-id, the attempt's webhook-timestamp, the event's own time, the signature's
verdict against the config's `[webhook] secret` ("valid", "INVALID ...", "unsigned", or
"not checked ..."), and the body. Every POST is answered 200; GET says what this is.

`WebhookReceiver` is the HTTP part: a threaded HTTP/1.1 server on loopback that hands
every request to a function, which says what to answer. The tests' CRM stand-in is the
same receiver with scripted answers (500, 410, Retry-After, hanging, down).
"""

import http.server
import json
import os
import socket
import sys
import threading
import time


class Received:
    """One request the receiver got: method, path, headers (names lower-cased), body
    (bytes), time (time.time() on arrival), connection (a number per TCP connection)."""

    def __init__(self, method, path, headers, body, connection):
        self.method = method
        self.path = path
        self.headers = headers
        self.body = body
        self.time = time.time()
        self.connection = connection

    @property
    def json(self):
        return json.loads(self.body.decode("utf-8"))

    @property
    def id(self):
        return self.headers.get("webhook-id")

    def __repr__(self):
        return "<Received %s %s>" % (self.id, self.body[:60])


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        if isinstance(sys.exc_info()[1], ConnectionError):
            return  # a sender that went away (killed, timed out): nothing to report
        super().handle_error(request, client_address)


class WebhookReceiver:
    """An HTTP/1.1 server (keep-alive) on `host`:`port` (0: a free one), serving in a
    thread after `start()` (or in the caller's, `serve_forever()`).

    `respond(request)` is called for each GET and POST with a Received and returns
    (status, body bytes, extra headers dict), or None to answer nothing and drop the
    connection. `stop()` closes the listener (connection refused); `start()` again
    listens on the same port."""

    def __init__(self, respond, host="127.0.0.1", port=0):
        self.respond = respond
        self.host = host
        self.port = port
        self.server = None
        self._connections = 0
        self._open = set()
        self._lock = threading.Lock()

    def _handler(self):
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            server_version = "callexchange-demo-crm"

            def setup(self):
                super().setup()
                # Headers and body go out in two writes: without this, Nagle's algorithm
                # and the client's delayed ACK add 40 ms to every reply.
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                with receiver._lock:
                    receiver._connections += 1
                    self.connection_number = receiver._connections
                    receiver._open.add(self.connection)

            def finish(self):
                with receiver._lock:
                    receiver._open.discard(self.connection)
                super().finish()

            def _serve(self):
                try:
                    length = int(self.headers.get("Content-Length") or 0)
                except ValueError:
                    length = 0
                body = self.rfile.read(length) if length > 0 else b""
                headers = {k.lower(): v for k, v in self.headers.items()}
                answer = receiver.respond(Received(self.command, self.path, headers, body,
                                                   self.connection_number))
                if answer is None:
                    self.close_connection = True
                    return
                status, payload, extra = answer
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    for name, value in (extra or {}).items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:
                    pass

            do_GET = do_POST = _serve

            def log_message(self, *args):
                pass

        return Handler

    @property
    def url(self):
        return "http://%s:%d/" % (self.host, self.port)

    def bind(self):
        server = _Server((self.host, self.port), self._handler())
        self.port = server.server_address[1]
        self.server = server
        return server

    def start(self):
        server = self.bind()
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()
        return self

    def serve_forever(self):
        server = self.server or self.bind()
        server.serve_forever()

    def stop(self):
        """Stop listening, and drop the keep-alive connections, as a CRM that goes down
        does."""
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
        with self._lock:
            connections, self._open = list(self._open), set()
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        return self


def signature_verdict(key, headers, body, now):
    """What a CRM verifying by the Standard Webhooks rules would conclude: "valid",
    "INVALID" (no matching signature), "INVALID: timestamp ..." (more than 5 minutes
    from `now`, which receivers refuse), or "unsigned". `key` from
    webhooks.signing.signing_key, or None: "not checked (no [webhook] secret)"."""
    from callexchange.webhooks.signing import TOLERANCE, verify

    sent = headers.get("webhook-signature")
    if not sent:
        return "unsigned"
    if key is None:
        return "not checked (no [webhook] secret)"
    timestamp = headers.get("webhook-timestamp", "")
    if not verify(key, headers.get("webhook-id", ""), timestamp, body, sent):
        return "INVALID"
    if abs(now - int(timestamp)) > TOLERANCE:
        return "INVALID: timestamp %s is more than %d minutes from now" % (
            timestamp, TOLERANCE // 60)
    return "valid"


class DemoCrm:
    """The demo CRM's answers: log each POST to `log_path`, answer 200. The signing key
    is read from the config at `config_path` again whenever that file changes."""

    def __init__(self, log_path, config_path=None, clock=time.time):
        self.log_path = log_path
        self.config_path = config_path
        self.clock = clock
        self._lock = threading.Lock()
        self._stamp = object()
        self._key = None

    def key(self):
        """The signing key of the config's [webhook] secret, or None."""
        from callexchange.config import ConfigError, load_config
        from callexchange.webhooks.signing import signing_key

        try:
            status = os.stat(self.config_path)
            stamp = (status.st_mtime_ns, status.st_size, status.st_ino)
        except (OSError, TypeError):
            stamp = None
        if stamp != self._stamp:
            self._stamp = stamp
            try:
                secret = load_config(self.config_path).webhook.secret if stamp else ""
                self._key = signing_key(secret) if secret else None
            except (ConfigError, ValueError):
                self._key = None
        return self._key

    def entry(self, request):
        """The log line (a dict) of one webhook."""
        try:
            body = request.json
        except ValueError:
            body = request.body.decode("utf-8", "replace")
        headers = request.headers
        return {"received": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "path": request.path,
                "event": headers.get("x-callexchange-event"),
                "webhook_id": headers.get("webhook-id"),
                "webhook_timestamp": headers.get("webhook-timestamp"),
                "event_time": headers.get("x-callexchange-event-time"),
                "signature": signature_verdict(self.key(), headers, request.body,
                                               self.clock()),
                "body": body}

    def respond(self, request):
        if request.method != "POST":
            return 200, json.dumps({"demo_crm": "POST webhooks here",
                                    "log": self.log_path}).encode(), {}
        line = json.dumps(self.entry(request), ensure_ascii=False) + "\n"
        with self._lock, open(self.log_path, "a", encoding="utf-8") as log:
            log.write(line)
        return 200, b'{"received":true}', {}


def run(args, out=None):
    """Serve in the foreground until SIGTERM or Ctrl-C. The config is --config's, else
    $CALLEXCHANGE_CONFIG's (for [webhook] secret)."""
    from callexchange.config import config_path

    out = out or sys.stdout
    host, _, port = args.listen.rpartition(":")
    try:
        port = int(port)
    except ValueError:
        print("--listen must be HOST:PORT, got %r" % args.listen, file=sys.stderr)
        return 2
    crm = DemoCrm(args.log, getattr(args, "config", None) or config_path())
    receiver = WebhookReceiver(crm.respond, host or "127.0.0.1", port)
    receiver.bind()
    print("demo CRM: listening on %s, logging to %s" % (receiver.url, args.log),
          file=out, flush=True)
    try:
        receiver.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0
