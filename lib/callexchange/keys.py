"""API keys at rest: SHA-256 digests only, checked in constant time.

The keys file has one line per key, `label<TAB>sha256-hex<TAB>created`; `#` lines are
comments. A key itself is never written anywhere: `add` prints it once to the admin.
In the legacy API a client's key was the hex SHA-256 of its public key file, and clients
still send that string; we store the SHA-256 of whatever string the client sends.
"""

import os
import time

from callexchange.percent import is_hex

# The builtin SHA-256 and digest compare: importing hashlib/hmac loads OpenSSL, which costs
# a CGI process ~2-3 ms per request for one hash. Same functions, same results.
try:
    from _sha256 import sha256
except ImportError:  # Python 3.12+ names it _sha2; builds without it have hashlib
    try:
        from _sha2 import sha256
    except ImportError:
        from hashlib import sha256
try:
    from _operator import _compare_digest as compare_digest
except ImportError:
    from hmac import compare_digest

_LABEL_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._@-")


class KeyFileError(Exception):
    """The keys file is unreadable or has a malformed line (message names file and line)."""


def digest(key):
    """The hex SHA-256 of a key string, as stored in the keys file."""
    return sha256(key.encode("utf-8")).hexdigest()


def key_from_public_key_file(path):
    """The legacy way of deriving a client's key: hex SHA-256 of the public key file's bytes."""
    with open(path, "rb") as handle:
        return sha256(handle.read()).hexdigest()


def check_label(label):
    """A label names a key in listings and logs: 1-64 of letters, digits and ._@-."""
    if not label or len(label) > 64 or not set(label) <= _LABEL_CHARS:
        raise ValueError("a label is 1 to 64 letters, digits or . _ @ -, got %r" % label)
    return label


def read_keys(path):
    """Return [(label, digest_hex, created)] from the keys file; a missing file has none."""
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as error:
        raise KeyFileError("%s: cannot read keys file: %s" % (path, error)) from None
    entries = []
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = line.split("\t")
        if len(fields) < 2 or len(fields[1]) != 64 or not is_hex(fields[1]):
            raise KeyFileError("%s:%d: expected 'label<TAB>sha256-hex<TAB>created'" % (path, number))
        entries.append((fields[0], fields[1].lower(), fields[2] if len(fields) > 2 else ""))
    return entries


def find_label(path, presented_key):
    """The label of the stored key matching `presented_key`, or None.

    Every stored digest is compared, with compare_digest, whatever matched: the time
    taken does not depend on which key, or how much of one, matched.
    """
    if not presented_key:
        return None
    wanted = digest(presented_key).encode("ascii")
    found = None
    for label, stored, _created in read_keys(path):
        if compare_digest(wanted, stored.encode("ascii")) and found is None:
            found = label
    return found


def authenticate(keys_file, presented_key):
    """The label of the client sending `presented_key`, for an endpoint: raises the
    ApiError the endpoints answer (400 control characters, 401 unknown, 500 bad file)."""
    from callexchange.errors import ApiError
    from callexchange.params import check_no_control
    check_no_control("api-key", presented_key)
    if not os.path.exists(keys_file):
        # Every key would be "invalid": say what is really wrong, to the admin too.
        raise ApiError(500, "Server configuration error: %s: keys file not found ([auth] "
                            "keys_file; `callexchange keys add` creates it)" % keys_file)
    try:
        label = find_label(keys_file, presented_key)
    except KeyFileError as error:
        raise ApiError(500, "Server configuration error: %s" % error) from None
    if label is None:
        raise ApiError(401, "Invalid api-key")
    return label


def _write_keys(path, entries):
    """Replace the keys file atomically. A new file is 0640 whatever the umask (an
    admin's 077 would hide it from the web server); a replaced one keeps its mode, and,
    when root edits it, its owner and group, so the web server can still read it."""
    from callexchange.statedir import atomic_write

    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    mode, owner = 0o640, None
    try:
        info = os.stat(path)
        mode = info.st_mode & 0o777
        if os.geteuid() == 0:
            owner = (info.st_uid, info.st_gid)
    except FileNotFoundError:
        pass
    lines = ["# CallExchange API keys: label, SHA-256 of the key, created (UTC)\n"]
    lines.extend("%s\t%s\t%s\n" % entry for entry in entries)
    atomic_write(path, "".join(lines), mode=mode, owner=owner)


def add_key(path, label, key=None):
    """Store the digest of `key` (a fresh one if None) under `label`; return the key.

    Raises ValueError when the label is malformed, already used, or the key already stored.
    """
    check_label(label)
    if key is None:
        key = os.urandom(32).hex()
    if not key or any(ord(c) < 33 or ord(c) == 127 for c in key):
        raise ValueError("a key must be non-empty printable text without spaces")
    entries = read_keys(path)
    if any(existing == label for existing, _, _ in entries):
        raise ValueError("label %r is already in use; revoke it first" % label)
    new_digest = digest(key)
    if any(compare_digest(new_digest, stored) for _, stored, _ in entries):
        raise ValueError("this key is already stored under another label")
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    _write_keys(path, entries + [(label, new_digest, created)])
    return key


def revoke_key(path, label):
    """Remove the key stored under `label`. Raises KeyError when there is none."""
    entries = read_keys(path)
    kept = [entry for entry in entries if entry[0] != label]
    if len(kept) == len(entries):
        raise KeyError(label)
    _write_keys(path, kept)
