"""The WSGI application behind both legacy endpoints.

One dispatch point maps the legacy URLs to handlers; each handler is parse -> call ->
render, and every failure becomes a JSON reply here, never a traceback or an HTML page.
The same app runs as CGI (cgi-bin shims, one process per request) and persistently
(mod_wsgi): `create_app()` reads the config once.

    application = create_app()              # $CALLEXCHANGE_CONFIG or the default path
"""

import json
import time

from callexchange.config import ConfigError, load_config
from callexchange.errors import ApiError, ServerConfigError, report, status_line
from callexchange.http.body import parse_body, parse_query, read_body
from callexchange.http.jsonrpc import handle_jsonrpc, is_jsonrpc, jsonrpc_error
from callexchange.http.reply import Reply
from callexchange.params import api_key_from, header_text, normalize_names


JSON_TYPE = "application/json; charset=utf-8"
BODY_KEY = "callexchange.body"  # the request body, kept in the environ for error replies
CALL_PATHS = ("/api/v1/asteriskapi.pl", "/api/v1/asteriskapi")
RECORDING_PATHS = ("/recorded/v1/find_phone_files.pl", "/recorded/v1/find_phone_files")


def create_app(config_path=None, config=None, ami_client=None, clock=time.time):
    """The WSGI callable. A broken config does not stop it: every request then gets a
    500 JSON reply saying only "Server configuration error" and an error id, under which
    the file, line and key are written to wsgi.errors (Apache's error.log). `ami_client`: how calls reach
    Asterisk; None is a fresh AMI session per call (CGI), the persistent mode passes its
    process's `pbx.persistent.PersistentAmi`. `clock`: the wall clock of the double-click
    window (tests move one by hand)."""
    config_error = None
    if config is None:
        try:
            config = load_config(config_path)
        except ConfigError as error:
            config_error = error
    return Application(config, config_error, ami_client, clock)


class Application:
    def __init__(self, config, config_error=None, ami_client=None, clock=time.time):
        self.config = config
        self.config_error = config_error
        self.ami_client = ami_client
        self.clock = clock

    def __call__(self, environ, start_response):
        try:
            reply = self.dispatch(environ)
        except ApiError as error:
            report(error, environ["wsgi.errors"].write)
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
        elif getattr(reply, "payload", None) is not None:   # a recording (recording_file)
            payload, headers = reply.payload, []
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
        if path.startswith("/wav-files/"):
            # Only routed here when recordings are not public (apache/README.md).
            from callexchange.http import recording_file
            return recording_file.serve(self.config, self.config_error, environ)
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
            # No key can be checked: the caller learns only this and an error id; the
            # file, line and key are in error.log under that id.
            raise ServerConfigError(self.config_error)
        query_string = environ.get("QUERY_STRING", "")
        query = parse_query(query_string) if query_string else {}
        if any(name.strip().lower() in ("api-key", "api_key") for name in query):
            raise ApiError(400, "The api-key must be sent in the api-key header or the body, "
                                "never in the URL (URLs are written to access logs)")
        return handler(environ, method, query, body)

    # --- asteriskapi.pl ---

    def call_endpoint(self, environ, method, query, body):
        from callexchange.calls.endpoint import caller_label, error_reply, issue_call

        header_key = header_text("api-key", environ.get("HTTP_API_KEY"))
        idempotency_key = environ.get("HTTP_IDEMPOTENCY_KEY")
        log = environ["wsgi.errors"].write
        # The whole request, a batch of calls included, is answered within
        # connect_timeout + timeout; a call that finds no time left is a 503.
        not_after = time.monotonic() + self.config.ami.connect_timeout + self.config.ami.timeout

        def one_call(params, protect, label=None):
            return issue_call(self.config, params, api_key_from(params, header_key), protect,
                              not_after, log=log, ami_client=self.ami_client,
                              clock=self.clock, label=label)

        try:
            payload = parse_body(body, environ.get("CONTENT_TYPE", ""))
        except ApiError as error:
            if error.extra.get("jsonrpc_parse_error"):
                return Reply(200, jsonrpc_error(None, -32700, "Parse error: " + error.error))
            return Reply(error.status, error_reply(error, {}))
        if not payload and method == "POST" and query:
            payload = query
        if is_jsonrpc(payload):
            def handle():
                return handle_jsonrpc(payload, {"originate": one_call, "call": one_call},
                                      idempotency_key is None, error_reply)
            # With an Idempotency-Key, every entry's key is checked before its lock is
            # taken; the entries whose key is not valid get their 400/401 in the reply
            # (without one, each entry checks its key before anything else it does).
            labels = (self._jsonrpc_labels(payload, header_key)
                      if idempotency_key is not None else [])
        else:
            try:
                params = normalize_names(payload)
            except ApiError as error:
                return Reply(error.status, error_reply(error, {}))
            try:
                # Nothing before authentication: no lock, no file, no directory.
                labels = [caller_label(self.config, params, api_key_from(params, header_key))]
            except ApiError as error:
                report(error, log)
                return Reply(error.status, error_reply(error, params))

            def handle():
                status, reply_body, placed, replayed = one_call(params, idempotency_key is None,
                                                                labels[0])
                headers = [("Idempotent-Replayed", "true")] if replayed else []
                return Reply(status, reply_body, headers), placed

        if idempotency_key is None or not labels:
            return handle()[0]
        from callexchange.http.idempotency import replay_or_handle
        return replay_or_handle(self.config.state.dir, idempotency_key, labels, body,
                                environ.get("CONTENT_TYPE", ""), handle, not_after)

    def _jsonrpc_labels(self, payload, header_key):
        """The labels of the valid keys of a JSON-RPC request or batch's call entries
        (each checked; none that fails is counted), sorted, once each."""
        from callexchange.calls.endpoint import caller_label
        labels = set()
        for entry in payload if isinstance(payload, list) else [payload]:
            params = entry.get("params", {}) if isinstance(entry, dict) else None
            if not isinstance(params, dict):
                continue
            try:
                params = normalize_names(params)
                labels.add(caller_label(self.config, params, api_key_from(params, header_key)))
            except ApiError:
                continue    # answered by its entry's own error
        return sorted(labels)

    # --- find_phone_files.pl (issue 3) ---

    def recordings_endpoint(self, environ, method, query, body):
        from callexchange.recordings.lookup import error_reply, find_phone_files

        header_key = header_text("api-key", environ.get("HTTP_API_KEY"))

        def one_lookup(params, protect):
            status, reply_body = find_phone_files(self.config, params,
                                                  api_key_from(params, header_key),
                                                  log=environ["wsgi.errors"].write)
            return status, reply_body, False, False

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
        status, reply_body, _, _ = one_lookup(params, False)
        return Reply(status, reply_body)


def render_error(environ, error):
    """The legacy error object; the call endpoint's carries its `message` line too,
    naming the extension and destination of the body when it can be read."""
    if environ.get("PATH_INFO", "").rstrip("/").endswith(CALL_PATHS) or \
            environ.get("SCRIPT_NAME", "").endswith(CALL_PATHS):
        from callexchange.calls.endpoint import error_reply
        return error_reply(error, _params_for_message(environ))
    from callexchange.recordings.lookup import error_reply
    return error_reply(error)


def _params_for_message(environ):
    """The plain body's parameters, or {} when there is none to read (or it is JSON-RPC)."""
    try:
        payload = parse_body(environ.get(BODY_KEY, b""), environ.get("CONTENT_TYPE", ""))
        return normalize_names(payload) if isinstance(payload, dict) else {}
    except ApiError:
        return {}
