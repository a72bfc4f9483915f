"""Standard Webhooks signatures: the secret's key, the `webhook-signature` of one
request and its check, the headers of one delivery attempt, and a fresh secret.

The one signer of the project: the deliverer signs with it, the demo CRM checks with it.
(The tests check our signatures with the official `standardwebhooks` package instead.)
"""

import os

TOLERANCE = 5 * 60   # what Standard Webhooks receivers accept between a timestamp and now


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


def verify(key, msg_id, timestamp, body, header):
    """Whether `header` (a `webhook-signature` value: space-separated `v1,<base64>`
    signatures, as during a secret rotation) holds the signature of this request.
    Constant time per candidate."""
    import hmac

    try:
        expected = signature(key, msg_id, int(timestamp), body)
    except (TypeError, ValueError):
        return False
    return any(hmac.compare_digest(candidate.encode("utf-8"), expected.encode("ascii"))
               for candidate in (header or "").split())


def request_headers(record, key, now):
    """The headers of one delivery attempt made at unix time `now`. `key` from
    `signing_key`, or None: no signature.

    Standard Webhooks to the letter: `webhook-timestamp` is the attempt's time and the
    signature is computed per attempt (receivers refuse a timestamp more than TOLERANCE
    from their clock, so a retry after an outage must be signed afresh); `webhook-id`
    is the event's, the same on every attempt. When the event happened is
    `X-CallExchange-Event-Time` (and, extended, the body's `timestamp`).
    """
    body = record["body"].encode("utf-8")
    timestamp = int(now)
    headers = {
        "Content-Type": "application/json",
        "webhook-id": record["id"],
        "webhook-timestamp": str(timestamp),
        "X-CallExchange-Event": record["event"],
        "X-CallExchange-Event-Time": str(int(record["occurred"])),
        "User-Agent": "CallExchange-Webhooks/1",
    }
    if key is not None:
        headers["webhook-signature"] = signature(key, record["id"], timestamp, body)
    return headers


def new_secret():
    """A fresh `whsec_<base64 of 32 random bytes>` for `[webhook] secret`."""
    import base64

    return "whsec_" + base64.b64encode(os.urandom(32)).decode("ascii")
