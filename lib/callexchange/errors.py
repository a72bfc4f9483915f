"""The project's one error family, and its mapping to HTTP and JSON-RPC in one place."""

REASONS = {
    200: "OK", 204: "No Content", 400: "Bad Request", 401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found", 405: "Method Not Allowed", 413: "Payload Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content", 500: "Internal Server Error", 502: "Bad Gateway",
    503: "Service Unavailable",
}

# JSON-RPC error codes for our HTTP statuses. -32000..-32099 are ours ("server error").
JSONRPC_CODES = {
    400: -32602,   # invalid params
    401: -32001,   # unknown api-key
    403: -32005,   # refused by the toll-fraud policy (calls/policy.py names the rule)
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
