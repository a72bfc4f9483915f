"""Idempotency-Key: a repeated key within 24 hours gets the first reply, and no second
call is placed. What makes two requests "the same" is their parameters.

A key is scoped per API key (the label of the key that authenticated the request, sent
in the header or the body alike): two clients never share one, and only an
authenticated request reaches this module, so a stranger can neither make a lock file
nor learn whether a key was used. A twin finding the key still in flight at its own
deadline is answered 409."""

import json

from callexchange.errors import ApiError
from callexchange.http.body import parse_body
from callexchange.http.reply import Reply
from callexchange.keys import sha256
from callexchange.params import normalize_names
from callexchange.statedir import StateDir


def request_fingerprint(body, content_type):
    """What makes two requests "the same" for an Idempotency-Key: the parameters, not the
    bytes. Key order, spacing, name case, JSON-RPC ids (client libraries count them
    up on every retry) and where the API key was sent do not count; a body that does not
    parse is its bytes."""
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


def idempotency_store(state_dir):
    """The ReplayStore of Idempotency-Keys under `state_dir` (24 hours)."""
    from callexchange.calls.replay import ReplayStore
    return ReplayStore(StateDir(state_dir).idempotency, 24 * 3600)


def scoped_key(labels, idempotency_key):
    """The store's key for `idempotency_key` sent with the keys labelled `labels`."""
    return sha256("\0".join(labels).encode("utf-8")).hexdigest() + "\0" + idempotency_key


def replay_or_handle(state_dir, idempotency_key, labels, body, content_type, handle,
                     not_after=None):
    """Replay the first reply for a repeated Idempotency-Key (24 hours), else run
    `handle()` -> (Reply, placed) and remember its reply when a call was placed.
    `labels`: the labels of the authenticated keys of the request (one; a JSON-RPC
    batch may carry several), its scope. `not_after` (a time.monotonic()): a twin still
    waiting for the key then gets calls.replay.StillInFlight (409)."""
    if not 1 <= len(idempotency_key) <= 255 or not all(32 < ord(c) < 127 for c in idempotency_key):
        raise ApiError(400, "Idempotency-Key must be 1 to 255 printable ASCII characters "
                            "without spaces")
    store = idempotency_store(state_dir)
    fingerprint = request_fingerprint(body, content_type)
    # (calls.replay.StillInFlight, a 409, when the key is still in flight at not_after)
    with store.guard(scoped_key(labels, idempotency_key), fingerprint, not_after) as guard:
        if guard.mismatch:
            raise ApiError(422, "This Idempotency-Key was already used with a different "
                                "request body")
        if guard.previous is not None:
            status, reply_body = guard.previous
            reply_body = with_request_ids(reply_body, body, content_type)
            return Reply(status, reply_body, [("Idempotent-Replayed", "true")])
        reply, placed = handle()
        if placed:
            guard.remember(reply.status, reply.body)
    store.prune()
    return reply


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
    payload = _without_key(normalize_names(payload))
    if "jsonrpc" in payload:
        payload.pop("id", None)
        if isinstance(payload.get("params"), dict):
            payload["params"] = _without_key(normalize_names(payload["params"]))
    return payload


def _without_key(params):
    """The parameters less the API key: it is the scope (header or body alike), not a
    parameter of the call."""
    for name in ("api-key", "api_key"):
        params.pop(name, None)
    return params
