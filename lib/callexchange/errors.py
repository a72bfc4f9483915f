"""The project's one error family, and its mapping to HTTP and JSON-RPC in one place.

Errors are data: each class carries what it means from the start (`ServerConfigError`
its error id and the operator's detail, `CallMayBePlaced` the uniqueid of the call that
may ring); nothing is attached to an exception after it was raised."""

import os

REASONS = {
    200: "OK", 204: "No Content", 400: "Bad Request", 401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found", 405: "Method Not Allowed", 409: "Conflict", 413: "Payload Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content", 500: "Internal Server Error", 502: "Bad Gateway",
    503: "Service Unavailable",
}

# JSON-RPC error codes for our HTTP statuses. -32000..-32099 are ours ("server error").
JSONRPC_CODES = {
    400: -32602,   # invalid params
    401: -32001,   # unknown api-key
    403: -32005,   # refused by the toll-fraud policy (calls/policy.py names the rule)
    409: -32006,   # the Idempotency-Key is still in flight at this request's deadline
    413: -32600,
    415: -32600,
    422: -32004,   # Idempotency-Key reused with another request
    500: -32603,   # internal error
    502: -32002,   # the PBX refused (login, Originate)
    503: -32003,   # the PBX is unreachable or did not answer in time
}


def status_line(code):
    """'400 Bad Request' for 400: the legacy `status` field and the HTTP status line."""
    return "%d %s" % (code, REASONS.get(code, "Error"))


class ApiError(Exception):
    """A request that cannot be served: `status` (HTTP code), `error` (what was wrong, for
    the client), `extra` (more reply fields, e.g. `missing`)."""

    def __init__(self, status, error, **extra):
        super().__init__(error)
        self.status = status
        self.error = error
        self.extra = extra

    @property
    def jsonrpc_code(self):
        return JSONRPC_CODES.get(self.status, -32603)


class ServerConfigError(ApiError):
    """The server cannot serve (a broken config, a missing keys file): no key can be
    checked, so the client learns only that and an error id. `detail` (file, line and
    key; never a value) is for the operator's log, under the same id (`log_line`)."""

    def __init__(self, detail):
        self.error_id = os.urandom(4).hex()
        super().__init__(500, "Server configuration error (error id %s)" % self.error_id,
                         error_id=self.error_id)
        self.detail = str(detail)

    def log_line(self):
        """The line for Apache's error.log (the WSGI wsgi.errors, the CGI's stderr)."""
        return "callexchange: server configuration error %s: %s\n" % (self.error_id,
                                                                      self.detail)


class CallMayBePlaced(ApiError):
    """The Originate was sent and never confirmed (503): the call may be ringing, so its
    caller-ID count is kept and a repeat of the request is a duplicate (calls.replay).
    `uniqueid` is the call's id, which its webhooks carry if it rings."""

    def __init__(self, detail, uniqueid):
        super().__init__(503, detail + "; the Originate was sent but not confirmed, so the "
                              "call may have been placed", uniqueid=uniqueid)
        self.uniqueid = uniqueid


def report(error, log):
    """Write what the operator must see of `error` with `log(text)` (None: nowhere):
    the detail of a ServerConfigError, under its id."""
    if log is not None and isinstance(error, ServerConfigError):
        log(error.log_line())
