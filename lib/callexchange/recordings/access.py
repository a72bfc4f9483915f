"""Who may fetch a recording: `[recordings] access` and the signed-URL tokens.

- `public` (the legacy): anyone with the URL; Apache serves the archive as static files.
- `signed`: find_phone_files.pl returns URLs carrying `?exp=<unix time>&sig=<token>`, an
  HMAC-SHA256 over the recording's path and the expiry, valid for `[recordings] url_ttl`
  seconds; the file handler checks it before Apache sends the file.
- `key`: fetching a recording needs the `api-key` header, as the endpoints do.

The signing key is 32 random bytes in `[state] dir/recordings-url-key` (hex, mode 0600,
owned like the state dir): made by the first lookup that needs it. Deleting it (or
`rotate_url_key()`) ends every URL handed out before. It is never sent, logged or put in the INI. HMAC is built on the builtin
SHA-256 (as keys.py does): importing hmac/hashlib loads OpenSSL, which a CGI process
pays on every request.
"""

import os

PUBLIC, SIGNED, KEY = "public", "signed", "key"
KEY_FILE = "recordings-url-key"
_TAG = b"callexchange-recording-v1\n"
_B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

# The builtin SHA-256 and digest compare that keys.py picks (no OpenSSL import).
from callexchange.keys import compare_digest, sha256  # noqa: E402


class TokenError(Exception):
    """A recording URL's token is missing, malformed, expired or wrong (the message says
    which, for the client)."""


def hmac_sha256(key, message):
    """HMAC-SHA256 (RFC 2104) of bytes `message` under bytes `key`.

    >>> import hmac, hashlib
    >>> hmac_sha256(b"k", b"m") == hmac.new(b"k", b"m", hashlib.sha256).digest()
    True
    """
    if len(key) > 64:
        key = sha256(key).digest()
    key = key.ljust(64, b"\0")
    inner = sha256(bytes(b ^ 0x36 for b in key) + message).digest()
    return sha256(bytes(b ^ 0x5C for b in key) + inner).digest()


def _b64url(raw):
    """Unpadded base64url, without importing base64 (the CGI pays for every import)."""
    bits = int.from_bytes(raw, "big")
    count = len(raw) * 8
    bits <<= (-count) % 6
    chars = (count + 5) // 6
    return "".join(_B64URL[(bits >> (6 * (chars - 1 - i))) & 63] for i in range(chars))


def signature(key, path, expires):
    """The token for recording `path` (under the root, as in its URL: `2024/07/03/x.wav`)
    valid until unix time `expires`.

    >>> signature(b"\\0" * 32, "2024/07/03/a.wav", 1720000000) == signature(
    ...     b"\\0" * 32, "2024/07/03/b.wav", 1720000000)
    False
    """
    message = _TAG + path.encode("utf-8") + b"\n" + str(int(expires)).encode("ascii")
    return _b64url(hmac_sha256(key, message))


def signed_query(key, path, now, ttl):
    """`exp=...&sig=...` for a URL of `path` issued at `now`, valid `ttl` seconds."""
    expires = int(now) + int(ttl)
    return "exp=%d&sig=%s" % (expires, signature(key, path, expires))


def check_token(key, path, expires_text, sig_text, now):
    """Accept the token of a recording URL or raise TokenError. The comparison is in
    constant time; an expiry is checked only after the signature matched, so a client
    cannot learn anything from a forged one but "invalid"."""
    if not expires_text or not sig_text:
        raise TokenError("This recording URL needs its exp and sig parameters: "
                         "ask find_phone_files for a fresh one")
    if not expires_text.isdigit() or not expires_text.isascii() or len(expires_text) > 12:
        raise TokenError("Invalid recording URL token")
    wanted = signature(key, path, int(expires_text))
    if not compare_digest(wanted.encode("ascii"), sig_text.encode("utf-8", "replace")):
        raise TokenError("Invalid recording URL token")
    if int(expires_text) < now:
        raise TokenError("This recording URL has expired: ask find_phone_files for a "
                         "fresh one")


def url_key(state_dir, create=True):
    """The signing key (bytes) from `[state] dir`; made on first use when `create`.
    Raises OSError when it cannot be read (or made)."""
    path = os.path.join(state_dir, KEY_FILE)
    try:
        with open(path, encoding="ascii") as handle:
            text = handle.read().strip()
        return bytes.fromhex(text)
    except FileNotFoundError:
        if not create:
            raise
    except ValueError:
        raise OSError("%s is not a hex key: delete it (a new one is made)" % path) from None
    try:
        _write_key(path, exclusive=True)
    except FileExistsError:
        pass  # another request made it first: use theirs
    with open(path, encoding="ascii") as handle:
        return bytes.fromhex(handle.read().strip())


def rotate_url_key(state_dir):
    """Replace the signing key: every signed URL handed out before stops working."""
    _write_key(os.path.join(state_dir, KEY_FILE), exclusive=False)


def _write_key(path, exclusive):
    directory = os.path.dirname(path)
    temporary = "%s.tmp.%d" % (path, os.getpid())
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(os.urandom(32).hex() + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        if os.geteuid() == 0:
            # Run by root (the admin tool): the web server, which owns the state dir,
            # must still read it.
            info = os.stat(directory)
            os.chown(temporary, info.st_uid, info.st_gid)
        if exclusive:
            os.link(temporary, path)      # fails if it exists: never replace a key in use
            os.unlink(temporary)
        else:
            os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
