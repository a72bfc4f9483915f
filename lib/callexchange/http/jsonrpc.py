"""JSON-RPC 2.0 over the legacy endpoints: requests, notifications and batches (at most
MAX_BATCH entries), answered with the legacy reply as `result` or the legacy error object
as `error.data`."""

from callexchange.errors import ApiError
from callexchange.http.body import FormParams
from callexchange.http.reply import Reply
from callexchange.params import normalize_names


MAX_BATCH = 50


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
    fn(params, protect) -> (status, legacy body, placed, replayed). Returns (Reply,
    placed_any); the Reply says `Idempotent-Replayed: true` when every answer it holds
    is a replayed one (a duplicate call's first reply)."""
    if isinstance(payload, list):
        if not payload:
            return Reply(200, jsonrpc_error(None, -32600, "Invalid Request: empty batch")), False
        if len(payload) > MAX_BATCH:
            return Reply(200, jsonrpc_error(None, -32600, "Invalid Request: a batch holds at "
                                                          "most %d entries" % MAX_BATCH)), False
        answers, placed_any, replays = [], False, []
        for entry in payload:
            answer, placed, replayed = _jsonrpc_one(entry, methods, protect, error_reply)
            placed_any = placed_any or placed
            if answer is not None:
                answers.append(answer)
                replays.append(replayed)
        if not answers:
            return Reply(204, None), placed_any
        return Reply(200, answers, _replayed_header(all(replays))), placed_any
    answer, placed, replayed = _jsonrpc_one(payload, methods, protect, error_reply)
    if answer is None:
        return Reply(204, None), placed
    return Reply(200, answer, _replayed_header(replayed)), placed


def _replayed_header(replayed):
    return [("Idempotent-Replayed", "true")] if replayed else []


def _jsonrpc_one(entry, methods, protect, error_reply):
    """(answer or None for a notification, placed, replayed) of one entry."""
    if not isinstance(entry, dict):
        return jsonrpc_error(None, -32600, "Invalid Request: an entry must be an object"), \
            False, False
    request_id = entry.get("id")
    notification = "id" not in entry
    if isinstance(request_id, (dict, list, bool)):
        return jsonrpc_error(None, -32600, "Invalid Request: id must be a string, number "
                                           "or null"), False, False
    if entry.get("jsonrpc") != "2.0" or not isinstance(entry.get("method"), str):
        return jsonrpc_error(request_id, -32600, 'Invalid Request: needs "jsonrpc": "2.0" '
                                                 'and a method name'), False, False
    method = methods.get(entry["method"])
    if method is None:
        answer = jsonrpc_error(request_id, -32601, "Method not found: %s (use %s)"
                               % (entry["method"], " or ".join(sorted(methods))))
        return (None if notification else answer), False, False
    params = entry.get("params", {})
    if not isinstance(params, dict):
        answer = jsonrpc_error(request_id, -32602, "Invalid params: params must be an object "
                                                   "of named parameters")
        return (None if notification else answer), False, False
    try:
        params = normalize_names(params)
    except ApiError as error:
        answer = jsonrpc_error(request_id, error.jsonrpc_code, error.error,
                               error_reply(error, {}))
        return (None if notification else answer), False, False
    status, body, placed, replayed = method(params, protect)
    if notification:
        return None, placed, False
    if status == 200:
        return {"jsonrpc": "2.0", "result": body, "id": request_id}, placed, replayed
    error = ApiError(status, body.get("error", ""))
    return (jsonrpc_error(request_id, error.jsonrpc_code, body.get("error", ""), body), placed,
            replayed)
