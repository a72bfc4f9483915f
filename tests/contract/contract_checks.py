"""Schemathesis hooks for the contract fuzzing (tests/contract/test_schemathesis.py).

Two built-in checks are too blunt for this API, each for a reason its schema states in
words because JSON Schema cannot say it:

- `positive_data_acceptance` wants every schema-valid request accepted. A few refusals
  depend on data the schema cannot hold (phonenumbers' metadata, a byte count, one field
  against another, names that collide only once trimmed and lower-cased). Each is listed
  in REFUSALS_THE_SCHEMA_DESCRIBES, matched on the reply's `field` and `error`, and the
  schema's description of that field says the same. Any other refusal still fails.
- `negative_data_rejection` wants a 4xx for every schema-violating request. A JSON-RPC
  2.0 request is refused with an error object in an HTTP 200 (JSON-RPC's own rule, and
  the legacy protocol), and a notification is never answered (204), so for a JSON-RPC body
  those count as refusals. Anything else still needs a 4xx.

Loaded through SCHEMATHESIS_HOOKS=contract_checks; the run excludes the two built-ins and
uses these instead.
"""

import json
import re

import schemathesis
from schemathesis.specs.openapi import checks as builtin

# (field, what the error says): refusals of schema-valid data that the schema describes.
REFUSALS_THE_SCHEMA_DESCRIBES = (
    # phonenumbers cannot read the digits in either reading, or they are an emergency
    # number of the default region.
    ("destination", re.compile(r"is not a phone number|is an emergency number")),
    # 1000 bytes of UTF-8, not characters (maxLength is the character bound).
    ("msg", re.compile(r"longer than 1000 bytes")),
    # 990 bytes once percent-encoded.
    ("crm_id", re.compile(r"too long once percent-encoded")),
    # One field against another.
    ("from", re.compile(r"must not be after 'to'")),
    # Two names that are the same once trimmed and lower-cased (" extension " and
    # "Extension"): which one is meant cannot be told.
    (None, re.compile(r"is given more than once")),
)
IDEMPOTENCY_MISMATCH = re.compile(r"Idempotency-Key was already used with a different")


def _reply(response):
    try:
        return json.loads(response.content)
    except (TypeError, ValueError):
        return None


def documented_refusal(response):
    """True when `response` is a refusal that the schema's descriptions announce."""
    body = _reply(response)
    if response.status_code == 422:
        return isinstance(body, dict) and bool(IDEMPOTENCY_MISMATCH.search(body.get("error", "")))
    if response.status_code != 400 or not isinstance(body, dict):
        return False
    for field, pattern in REFUSALS_THE_SCHEMA_DESCRIBES:
        if pattern.search(body.get("error", "")) and (field is None or body.get("field") == field):
            return True
    return False


def _is_jsonrpc_body(case):
    body = case.body
    if isinstance(body, list):
        return True
    return isinstance(body, dict) and "jsonrpc" in body and case.media_type != "application/x-www-form-urlencoded"


def jsonrpc_refusal(case, response):
    """True when a JSON-RPC request was refused the JSON-RPC way: an error object (alone or
    in a batch reply) in an HTTP 200, or no answer at all to notifications (204)."""
    if not _is_jsonrpc_body(case):
        return False
    if response.status_code == 204:
        return True
    if response.status_code != 200:
        return False
    body = _reply(response)
    entries = body if isinstance(body, list) else [body]
    return any(isinstance(entry, dict) and "error" in entry for entry in entries)


@schemathesis.check
def positive_data_accepted(ctx, response, case):
    """positive_data_acceptance, minus the refusals the schema describes in words."""
    try:
        return builtin.positive_data_acceptance(ctx, response, case)
    except builtin.RejectedPositiveData:
        if documented_refusal(response):
            return None
        raise


@schemathesis.check
def negative_data_rejected(ctx, response, case):
    """negative_data_rejection, with JSON-RPC's own way of refusing."""
    try:
        return builtin.negative_data_rejection(ctx, response, case)
    except builtin.AcceptedNegativeData:
        if jsonrpc_refusal(case, response):
            return None
        raise


MISSING_KEY = re.compile(r"^Missing parameters: api-key")


@schemathesis.check
def auth_enforced(ctx, response, case):
    """ignored_auth, with the legacy's answer to a request without a key: a 400
    "Missing parameters: api-key ..." (a wrong key is a 401, as the check expects).
    On a 400 the request is sent once more without its key to read that reply (as a GET
    when it was a HEAD, which has no body to read)."""
    try:
        return builtin.ignored_auth(ctx, response, case)
    except builtin.IgnoredAuth as failure:
        if failure.scenario != builtin.AuthScenario.NO_AUTH or "`400 " not in failure.message:
            raise
        no_auth = builtin.remove_auth(case, builtin.get_security_parameters(case.operation))
        if no_auth.method.upper() == "HEAD":
            no_auth.method = "GET"
        probe = builtin.send_probe(ctx, case, no_auth)
        body = _reply(probe)
        if probe.status_code == 400 and isinstance(body, dict) and MISSING_KEY.match(body.get("error", "")):
            return None
        raise
