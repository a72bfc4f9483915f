"""A real HTTP server on 127.0.0.1 standing in for a CRM that receives webhooks: it records
every request and can be told to answer 500, 410, 429 with Retry-After, hang, or be down.
Used by the webhook tests (the `crm` fixture in conftest.py) and bench/webhook_hook.py.

The HTTP part is the demo CRM's receiver (callexchange.sandbox.democrm); what is added
here is the script of answers. Signatures are checked with the official Standard
Webhooks package (`verify`), never with the project's own code.
"""

import threading
import time

from callexchange.sandbox.democrm import Received, WebhookReceiver

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

CrmRequest = Received  # one request the stand-in received


def verify(headers, body, secret=SECRET, now=None):
    """The JSON body of a webhook as the official `standardwebhooks` library verifies it
    (else its WebhookVerificationError): its signature, and its timestamp against the
    library's clock, or against `now` (unix seconds) for attempts made at a simulated
    time: the library's own `datetime.now()` is set to it meanwhile."""
    from standardwebhooks import webhooks as library

    webhook = library.Webhook(secret)
    if now is None:
        return webhook.verify(body, headers)
    real = library.datetime

    class Frozen(real):
        @classmethod
        def now(cls, tz=None):
            return real.fromtimestamp(now, tz=tz)

    library.datetime = Frozen
    try:
        return webhook.verify(body, headers)
    finally:
        library.datetime = real


def verify_request(request, **kwargs):
    """`verify` of a request the stand-in received."""
    return verify(request.headers, request.body, **kwargs)


class CrmStandIn:
    """An HTTP/1.1 server (keep-alive) on a free 127.0.0.1 port in a thread.

    `answer(status, retry_after=None, times=None)`: the status for the next `times`
    requests (all, when None); then back to 200. `hang()`: read each request, record it,
    then answer nothing until `release()`. `down()` closes the listener (connection
    refused), `up()` listens again on the same port."""

    def __init__(self):
        self.requests = []
        self._lock = threading.Lock()
        self._script = []
        self._default = (200, None)
        self._release = threading.Event()
        self._release.set()
        self._arrived = threading.Condition(self._lock)
        self.receiver = WebhookReceiver(self._respond)
        self.up()

    @property
    def port(self):
        return self.receiver.port

    @property
    def server(self):
        """The listening server, None while `down()`."""
        return self.receiver.server

    @property
    def url(self):
        return "http://127.0.0.1:%d/crm/webhook" % self.port

    def _respond(self, request):
        with self._lock:
            self.requests.append(request)
            status, retry_after = self._script.pop(0) if self._script else self._default
            self._arrived.notify_all()
        if not self._release.wait(60):
            return None
        payload = b'{"ok":true}' if status < 300 else b'{"error":"scripted"}'
        extra = {} if retry_after is None else {"Retry-After": str(retry_after)}
        return status, payload, extra

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
        self.receiver.stop()
        return self

    def up(self):
        self.receiver.start()
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
