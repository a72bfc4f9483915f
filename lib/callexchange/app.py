"""The WSGI application behind both legacy endpoints.

One dispatch point maps the legacy URLs to handlers; each handler is parse -> call ->
render, and every failure becomes a JSON reply here, never a traceback or an HTML page.
The same app runs as CGI (cgi-bin shims, one process per request) and persistently
(mod_wsgi): `create_app()` reads the config once.

    application = create_app()              # $CALLEXCHANGE_CONFIG or the default path
"""

import json

from .config import ConfigError, load_config
from .errors import ApiError, status_line
from .params import (MAX_BODY, FormParams, api_key_from, normalize_names, parse_body,
                     parse_query)

JSON_TYPE = "application/json; charset=utf-8"
BODY_KEY = "callexchange.body"  # the request body, kept in the environ for error replies
MAX_BATCH = 50

CALL_PATHS = ("/api/v1/asteriskapi.pl", "/api/v1/asteriskapi")
RECORDING_PATHS = ("/recorded/v1/find_phone_files.pl", "/recorded/v1/find_phone_files")


def create_app(config_path=None, config=None):
    """The WSGI callable. A broken config does not stop it: every request then gets a
    500 JSON reply naming the file, line and problem."""
    config_error = None
    if config is None:
        try:
            config = load_config(config_path)
        except ConfigError as error:
            config_error = error
    return Application(config, config_error)


class Reply:
    """An HTTP reply: status code, JSON-able body (None for no body), extra headers."""

    def __init__(self, status, body, headers=()):
        self.status = status
        self.body = body
        self.headers = list(headers)


class Application:
    def __init__(self, config, config_error=None):
        self.config = config
        self.config_error = config_error

    def __call__(self, environ, start_response):
        try:
            reply = self.dispatch(environ)
        except ApiError as error:
            reply = Reply(error.status, render_error(environ, error))
        except Exception:  # the last line of defence: log it, answer JSON
            import traceback
            environ["wsgi.errors"].write("callexchange: unhandled error\n%s"
                                         % traceback.format_exc())
            reply = Reply(500, render_error(environ, ApiError(
                500, "Internal error; it has been logged")))
        if reply.status == 204:
            # No content: RFC 9110 forbids Content-Length on a 204, and a type of nothing
            # means nothing.
            payload, headers = b"", []
        else:
            payload = json.dumps(reply.body).encode("utf-8")
            headers = [("Content-Type", JSON_TYPE), ("Content-Length", str(len(payload)))]
        headers.extend(reply.headers)
        start_response(status_line(reply.status), headers)
        if environ.get("REQUEST_METHOD", "").upper() == "HEAD":
            return [b""]  # the headers of the GET, no body
        return [payload]

    def dispatch(self, environ):
        path = (environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")).rstrip("/")
        method = environ.get("REQUEST_METHOD", "GET").upper()
        if path.endswith(CALL_PATHS):
            handler, methods = self.call_endpoint, ("POST",)
        elif path.endswith(RECORDING_PATHS):
            handler, methods = self.recordings_endpoint, ("GET", "HEAD", "POST")
        else:
            raise ApiError(404, "No such endpoint: %s" % (path or "/"))
        if method not in methods:
            error = ApiError(405, "Method %s not allowed; use %s" % (method, " or ".join(methods)))
            return Reply(405, render_error(environ, error), [("Allow", ", ".join(methods))])
        # Read first, so that even a config error's reply can say who was to be called.
        body = environ[BODY_KEY] = read_body(environ)
        if self.config_error is not None:
            environ["wsgi.errors"].write("callexchange: %s\n" % self.config_error)
            raise ApiError(500, "Server configuration error: %s" % self.config_error)
        query_string = environ.get("QUERY_STRING", "")
        query = parse_query(query_string) if query_string else {}
        if any(name.strip().lower() in ("api-key", "api_key") for name in query):
            raise ApiError(400, "The api-key must be sent in the api-key header or the body, "
                                "never in the URL (URLs are written to access logs)")
        return handler(environ, method, query, body)

    # --- asteriskapi.pl ---

    def call_endpoint(self, environ, method, query, body):
        from .call import error_reply, issue_call

        import time

        header_key = environ.get("HTTP_API_KEY")
        idempotency_key = environ.get("HTTP_IDEMPOTENCY_KEY")
        # SPEC §4.6: the whole request, a batch of calls included, is answered within
        # connect_timeout + timeout; a call that finds no time left is a 503.
        not_after = time.monotonic() + self.config.ami.connect_timeout + self.config.ami.timeout

        def one_call(params, protect):
            return issue_call(self.config, params, api_key_from(params, header_key), protect,
                              not_after)

        def handle():
            try:
                payload = parse_body(body, environ.get("CONTENT_TYPE", ""))
            except ApiError as error:
                if error.extra.get("jsonrpc_parse_error"):
                    return Reply(200, jsonrpc_error(None, -32700, "Parse error: " + error.error)), False
                return Reply(error.status, error_reply(error, {})), False
            if not payload and method == "POST" and query:
                payload = query
            if is_jsonrpc(payload):
                return handle_jsonrpc(payload, {"originate": one_call, "call": one_call},
                                      idempotency_key is None, error_reply)
            try:
                params = normalize_names(payload)
            except ApiError as error:
                return Reply(error.status, error_reply(error, {})), False
            status, reply_body, placed = one_call(params, idempotency_key is None)
            return Reply(status, reply_body), placed

        if idempotency_key is None:
            return handle()[0]
        content_type = environ.get("CONTENT_TYPE", "")
        reply = self.with_idempotency(idempotency_key, header_key,
                                      request_fingerprint(body, content_type), handle)
        if ("Idempotent-Replayed", "true") in reply.headers and reply.body is not None:
            reply.body = with_request_ids(reply.body, body, content_type)
        return reply

    def with_idempotency(self, idempotency_key, header_key, fingerprint, handle):
        """Replay the first reply for a repeated Idempotency-Key (24 hours)."""
        from .keys import sha256
        from .replay import ReplayStore

        if not 1 <= len(idempotency_key) <= 255 or not all(32 < ord(c) < 127 for c in idempotency_key):
            raise ApiError(400, "Idempotency-Key must be 1 to 255 printable ASCII characters "
                                "without spaces")
        store = ReplayStore(self.config.state.dir + "/idempotency", 24 * 3600)
        scope = sha256((header_key or "").encode("utf-8")).hexdigest()
        with store.guard(scope + "\0" + idempotency_key, fingerprint) as guard:
            if guard.mismatch:
                raise ApiError(422, "This Idempotency-Key was already used with a different "
                                    "request body")
            if guard.previous is not None:
                status, reply_body = guard.previous
                return Reply(status, reply_body, [("Idempotent-Replayed", "true")])
            reply, placed = handle()
            if placed:
                guard.remember(reply.status, reply.body)
        store.prune()
        return reply

    # --- find_phone_files.pl (issue 3) ---

    def recordings_endpoint(self, environ, method, query, body):
        from .recordings import error_reply, find_phone_files

        header_key = environ.get("HTTP_API_KEY")

        def one_lookup(params, protect):
            status, reply_body = find_phone_files(self.config, params,
                                                  api_key_from(params, header_key))
            return status, reply_body, False

        try:
            payload = parse_body(body, environ.get("CONTENT_TYPE", ""))
        except ApiError as error:
            if error.extra.get("jsonrpc_parse_error"):
                return Reply(200, jsonrpc_error(None, -32700, "Parse error: " + error.error))
            return Reply(error.status, error_reply(error))
        # GET reads the query string; a POST without a body too (form-less clients).
        if query and (method in ("GET", "HEAD") or not payload):
            payload = query
        if is_jsonrpc(payload):
            methods = {"find_phone_files": one_lookup, "recordings": one_lookup}
            return handle_jsonrpc(payload, methods, False,
                                  lambda error, params: error_reply(error))[0]
        try:
            params = normalize_names(payload)
        except ApiError as error:
            return Reply(error.status, error_reply(error))
        status, reply_body, _ = one_lookup(params, False)
        return Reply(status, reply_body)


def request_fingerprint(body, content_type):
    """What makes two requests "the same" for an Idempotency-Key: the parameters, not the
    bytes. Key order, spacing, name case and JSON-RPC ids (client libraries count them
    up on every retry) do not count; a body that does not parse is its bytes."""
    from .keys import sha256
    try:
        payload = parse_body(body, content_type)
        if isinstance(payload, dict):
            canonical = _canonical(payload)
        else:
            canonical = [_canonical(entry) if isinstance(entry, dict) else entry
                         for entry in payload]
        text = json.dumps(canonical, sort_keys=True, separators=(",", ":"))
    except (ApiError, TypeError, ValueError):
        return sha256(body).hexdigest()
    return sha256(text.encode("utf-8")).hexdigest()


def with_request_ids(reply_body, body, content_type):
    """A replayed JSON-RPC reply carries the ids of the request it answers now (a retry
    may number its request anew); a plain reply is returned as it is."""
    try:
        payload = parse_body(body, content_type)
    except ApiError:
        return reply_body
    if isinstance(payload, dict) and isinstance(reply_body, dict) and "jsonrpc" in reply_body:
        return dict(reply_body, id=payload.get("id"))
    if isinstance(payload, list) and isinstance(reply_body, list):
        ids = [entry.get("id") for entry in payload if isinstance(entry, dict) and "id" in entry]
        if len(ids) == len(reply_body):
            return [dict(answer, id=request_id) for answer, request_id in zip(reply_body, ids)]
    return reply_body


def _canonical(payload):
    payload = normalize_names(payload)
    if "jsonrpc" in payload:
        payload.pop("id", None)
        if isinstance(payload.get("params"), dict):
            payload["params"] = normalize_names(payload["params"])
    return payload


def render_error(environ, error):
    """The legacy error object; the call endpoint's carries its `message` line too,
    naming the extension and destination of the body when it can be read."""
    if environ.get("PATH_INFO", "").rstrip("/").endswith(CALL_PATHS) or \
            environ.get("SCRIPT_NAME", "").endswith(CALL_PATHS):
        from .call import error_reply
        return error_reply(error, _params_for_message(environ))
    return {"status": status_line(error.status), "icon": "error", "error": error.error}


def _params_for_message(environ):
    """The plain body's parameters, or {} when there is none to read (or it is JSON-RPC)."""
    try:
        payload = parse_body(environ.get(BODY_KEY, b""), environ.get("CONTENT_TYPE", ""))
        return normalize_names(payload) if isinstance(payload, dict) else {}
    except ApiError:
        return {}


def read_body(environ):
    """The request body, at most MAX_BODY bytes (413 beyond)."""
    length_text = environ.get("CONTENT_LENGTH") or ""
    stream = environ["wsgi.input"]
    if length_text:
        try:
            length = int(length_text)
        except ValueError:
            raise ApiError(400, "Content-Length is not a number") from None
        if length > MAX_BODY:
            raise ApiError(413, "Body is larger than %d bytes" % MAX_BODY)
        return stream.read(length) if length > 0 else b""
    if environ.get("HTTP_TRANSFER_ENCODING", "").lower() != "chunked":
        return b""
    data = stream.read(MAX_BODY + 1)
    if len(data) > MAX_BODY:
        raise ApiError(413, "Body is larger than %d bytes" % MAX_BODY)
    return data


# --- JSON-RPC 2.0 ---

def is_jsonrpc(payload):
    """A JSON array (a batch), or a JSON object naming "jsonrpc"; never form data."""
    if isinstance(payload, FormParams):
        return False
    if isinstance(payload, list):
        return True
    return isinstance(payload, dict) and "jsonrpc" in payload


def jsonrpc_error(request_id, code, message, data=None):
    error = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return {"jsonrpc": "2.0", "error": error, "id": request_id}


def handle_jsonrpc(payload, methods, protect, error_reply):
    """Answer a JSON-RPC request or batch. `methods` maps a method name to
    fn(params, protect) -> (status, legacy body, placed). Returns (Reply, placed_any)."""
    if isinstance(payload, list):
        if not payload:
            return Reply(200, jsonrpc_error(None, -32600, "Invalid Request: empty batch")), False
        if len(payload) > MAX_BATCH:
            return Reply(200, jsonrpc_error(None, -32600, "Invalid Request: a batch holds at "
                                                          "most %d entries" % MAX_BATCH)), False
        answers, placed_any = [], False
        for entry in payload:
            answer, placed = _jsonrpc_one(entry, methods, protect, error_reply)
            placed_any = placed_any or placed
            if answer is not None:
                answers.append(answer)
        if not answers:
            return Reply(204, None), placed_any
        return Reply(200, answers), placed_any
    answer, placed = _jsonrpc_one(payload, methods, protect, error_reply)
    if answer is None:
        return Reply(204, None), placed
    return Reply(200, answer), placed


def _jsonrpc_one(entry, methods, protect, error_reply):
    if not isinstance(entry, dict):
        return jsonrpc_error(None, -32600, "Invalid Request: an entry must be an object"), False
    request_id = entry.get("id")
    notification = "id" not in entry
    if isinstance(request_id, (dict, list, bool)):
        return jsonrpc_error(None, -32600, "Invalid Request: id must be a string, number "
                                           "or null"), False
    if entry.get("jsonrpc") != "2.0" or not isinstance(entry.get("method"), str):
        return jsonrpc_error(request_id, -32600, 'Invalid Request: needs "jsonrpc": "2.0" '
                                                 'and a method name'), False
    method = methods.get(entry["method"])
    if method is None:
        answer = jsonrpc_error(request_id, -32601, "Method not found: %s (use %s)"
                               % (entry["method"], " or ".join(sorted(methods))))
        return (None if notification else answer), False
    params = entry.get("params", {})
    if not isinstance(params, dict):
        answer = jsonrpc_error(request_id, -32602, "Invalid params: params must be an object "
                                                   "of named parameters")
        return (None if notification else answer), False
    try:
        params = normalize_names(params)
    except ApiError as error:
        answer = jsonrpc_error(request_id, error.jsonrpc_code, error.error,
                               error_reply(error, {}))
        return (None if notification else answer), False
    status, body, placed = method(params, protect)
    if notification:
        return None, placed
    if status == 200:
        return {"jsonrpc": "2.0", "result": body, "id": request_id}, placed
    error = ApiError(status, body.get("error", ""))
    return jsonrpc_error(request_id, error.jsonrpc_code, body.get("error", ""), body), placed
