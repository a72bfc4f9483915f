"""Percent-encoding (RFC 3986) of UTF-8 text, both ways: for values that must cross AMI
and AGI unaltered (crm_id travels encoded in a channel variable), for form data and query
strings, and for recording URLs. Pure functions; imported by the hook, so stdlib-free.

>>> encode("lead 7, NY")
'lead%207%2C%20NY'
>>> decode(encode("café, 2€"))
'café, 2€'
"""

HEX_DIGITS = frozenset("0123456789abcdefABCDEF")
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def is_hex(text):
    """True for a non-empty string of hex digits.

    >>> is_hex("9f"), is_hex(""), is_hex("0x")
    (True, False, False)
    """
    return bool(text) and all(c in HEX_DIGITS for c in text)


def encode(text, safe=""):
    """Every UTF-8 byte of `text` as %XX but the unreserved characters and those in `safe`.

    >>> encode("2024/07/03/out-+4930-x y.wav", safe="/+")
    '2024/07/03/out-+4930-x%20y.wav'
    """
    keep = _UNRESERVED.union(safe) if safe else _UNRESERVED
    if keep.issuperset(text):
        return text
    return "".join(c if c in keep else "".join("%%%02X" % b for b in c.encode("utf-8"))
                   for c in text)


def decode_bytes(text):
    """The bytes `text` stands for: each %XX one byte, every other character its UTF-8; a
    malformed escape (`%zz`, a lone `%`) is kept as written. `text` may be bytes already
    (a form body in its declared charset): then only the escapes change.

    >>> decode_bytes("a%20b%zz%")
    b'a b%zz%'
    >>> decode_bytes(b"caf%E9 \\xe9")
    b'caf\\xe9 \\xe9'
    """
    data = text if isinstance(text, bytes) else text.encode("utf-8")
    if b"%" not in data:
        return data
    pieces = data.split(b"%")
    raw = bytearray(pieces[0])
    for piece in pieces[1:]:
        if len(piece) >= 2 and is_hex(piece[:2].decode("latin-1")):
            raw.append(int(piece[:2], 16))
            raw += piece[2:]
        else:
            raw += b"%" + piece
    return bytes(raw)


def decode(text):
    """`decode_bytes` as text; bytes that are not UTF-8 become U+FFFD."""
    return decode_bytes(text).decode("utf-8", "replace")
