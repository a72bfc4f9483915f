"""A real HTTP server on 127.0.0.1 standing in for a CRM that receives webhooks: it records
every request and can be told to answer 500, 410, 429 with Retry-After, hang, or be down.
Used by the webhook tests (the `crm` fixture in conftest.py) and bench/webhook_hook.py.
"""

import http.server
import json
import socket
import threading
import time

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


class CrmRequest:
    """One request the stand-in received: method, path, headers (lower-case names), body
    (bytes), time (time.time() on arrival), connection (a per-TCP-connection number)."""

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
        return "<CrmRequest %s %s>" % (self.id, self.body[:60])


class CrmStandIn:
    """An HTTP/1.1 server (keep-alive) on a free 127.0.0.1 port in a thread.

    `answer(status, retry_after=None, times=None)`: the status for the next `times`
    requests (all, when None); then back to 200. `hang()`: read each request, record it,
    then answer nothing until `release()`. `down()` closes the listener (connection
    refused) and the open keep-alive connections, `up()` listens again on the same port."""

    def __init__(self):
        self.requests = []
        self._lock = threading.Lock()
        self._script = []
        self._default = (200, None)
        self._release = threading.Event()
        self._release.set()
        self._connections = 0
        self._open = set()
        self._arrived = threading.Condition(self._lock)
        self.port = 0
        self.server = None
        self.up()

    @property
    def url(self):
        return "http://127.0.0.1:%d/crm/webhook" % self.port

    def _handler(self):
        stand_in = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self):
                super().setup()
                # Headers and body go out in two writes: without this, Nagle's algorithm
                # and the client's delayed ACK add 40 ms to every reply.
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                with stand_in._lock:
                    stand_in._connections += 1
                    self.connection_number = stand_in._connections
                    stand_in._open.add(self.connection)

            def finish(self):
                with stand_in._lock:
                    stand_in._open.discard(self.connection)
                super().finish()

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                headers = {k.lower(): v for k, v in self.headers.items()}
                request = CrmRequest("POST", self.path, headers, body, self.connection_number)
                with stand_in._lock:
                    stand_in.requests.append(request)
                    status, retry_after = (stand_in._script.pop(0) if stand_in._script
                                           else stand_in._default)
                    stand_in._arrived.notify_all()
                if not stand_in._release.wait(60):
                    return
                payload = b'{"ok":true}' if status < 300 else b'{"error":"scripted"}'
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    if retry_after is not None:
                        self.send_header("Retry-After", str(retry_after))
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:
                    pass

            def log_message(self, *args):
                pass

        return Handler

    def answer(self, status, retry_after=None, times=None):
        with self._lock:
            if times is None:
                self._script = []
                self._default = (status, retry_after)
            else:
                self._script.extend([(status, retry_after)] * times)
        return self

    def hang(self):
        self._release.clear()
        return self

    def release(self):
        self._release.set()
        return self

    def down(self):
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
        # A CRM that goes down also drops the keep-alive connections it had.
        with self._lock:
            open_connections, self._open = list(self._open), set()
        for connection in open_connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        return self

    def up(self):
        server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        server.daemon_threads = True
        self.port = server.server_address[1]
        self.server = server
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()
        return self

    def wait_for(self, count, timeout=10.0):
        """Wait until `count` requests have arrived; return the list."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while len(self.requests) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError("the CRM got %d request(s), expected %d: %r"
                                         % (len(self.requests), count, self.requests))
                self._arrived.wait(remaining)
            return list(self.requests)

    def ids(self):
        with self._lock:
            return [r.id for r in self.requests]

    def close(self):
        self.release()
        self.down()


