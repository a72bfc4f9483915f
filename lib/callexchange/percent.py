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
    malformed escape (`%zz`, a lone `%`) is kept as written.

    >>> decode_bytes("a%20b%zz%")
    b'a b%zz%'
    """
    if "%" not in text:
        return text.encode("utf-8")
    pieces = text.split("%")
    raw = bytearray(pieces[0].encode("utf-8"))
    for piece in pieces[1:]:
        if is_hex(piece[:2]) and len(piece) >= 2:
            raw.append(int(piece[:2], 16))
            raw += piece[2:].encode("utf-8")
        else:
            raw += b"%" + piece.encode("utf-8")
    return bytes(raw)


def decode(text):
    """`decode_bytes` as text; bytes that are not UTF-8 become U+FFFD."""
    return decode_bytes(text).decode("utf-8", "replace")
