"""Standard Webhooks signatures: the secret's key, the `webhook-signature` of one
request, the headers of one delivery attempt, and a fresh secret."""

import os


def signing_key(secret):
    """The HMAC key of a `whsec_<base64>` secret (the prefix is optional). Raises
    ValueError for a secret that is not base64."""
    import base64
    import binascii

    text = secret.strip()
    if text.startswith("whsec_"):
        text = text[len("whsec_"):]
    try:
        key = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("[webhook] secret must be whsec_<base64> (callexchange webhooks "
                         "secret prints one)") from None
    if not key:
        raise ValueError("[webhook] secret is empty after whsec_")
    return key


def signature(key, msg_id, timestamp, body):
    """`v1,<base64 HMAC-SHA256 of "<msg_id>.<timestamp>.<body>">`; body as bytes."""
    import base64
    import hashlib
    import hmac

    content = b"%s.%d." % (msg_id.encode("utf-8"), int(timestamp)) + body
    digest = hmac.new(key, content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def request_headers(record, key):
    """The headers of one attempt. `key` from `signing_key`, or None: no signature.

    `webhook-timestamp` is when the event happened (SPEC §6), the same on every retry, so
    a retried request is byte for byte the first one. Standard Webhooks libraries refuse
    a timestamp more than five minutes from their clock by default: a CRM that verifies
    retries after a long outage must widen that tolerance (docs/decisions.md).
    """
    body = record["body"].encode("utf-8")
    timestamp = int(record["occurred"])
    headers = {
        "Content-Type": "application/json",
        "webhook-id": record["id"],
        "webhook-timestamp": str(timestamp),
        "X-CallExchange-Event": record["event"],
        "User-Agent": "CallExchange-Webhooks/1",
    }
    if key is not None:
        headers["webhook-signature"] = signature(key, record["id"], timestamp, body)
    return headers


def new_secret():
    """A fresh `whsec_<base64 of 32 random bytes>` for `[webhook] secret`."""
    import base64

    return "whsec_" + base64.b64encode(os.urandom(32)).decode("ascii")
