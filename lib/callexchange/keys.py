"""API keys at rest: SHA-256 digests only, checked in constant time.

The keys file has one line per key, `label<TAB>sha256-hex<TAB>created`, then, for a key
with limits of its own, a fourth field of `name=value` words:
`allow_regions=GB,DE max_calls_per_minute=30 max_calls_per_day=2000` (a key without limits
keeps the three-field line, so files written before limits existed read the same).
`#` lines are comments. A key itself is never written anywhere: `add` prints it once.
In the legacy API a client's key was the hex SHA-256 of its public key file, and clients
still send that string; we store the SHA-256 of whatever string the client sends.
"""

import os
import time
from collections import namedtuple

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


MAX_CALLS_PER_MINUTE = 1000
MAX_CALLS_PER_DAY = 10_000_000


class KeyLimits(namedtuple("KeyLimits", "allow_regions max_calls_per_minute max_calls_per_day")):
    """A key's own toll-fraud limits; None where the key has none of its own.

    `allow_regions` (a tuple of ISO regions, `001` for non-geographic numbers) replaces
    `[policy] allowed_regions` for this key; the two counts cap the key's placed calls in
    any 60 seconds and per day.

    >>> limits = KeyLimits.parse("allow_regions=GB,DE max_calls_per_minute=30")
    >>> limits
    KeyLimits(allow_regions=('GB', 'DE'), max_calls_per_minute=30, max_calls_per_day=None)
    >>> limits.format()
    'allow_regions=GB,DE max_calls_per_minute=30'
    >>> KeyLimits.parse("") == NO_LIMITS
    True
    """

    __slots__ = ()

    @classmethod
    def parse(cls, text):
        """The limits of a keys-file field (or CLI words); ValueError names what is wrong."""
        values = {}
        for word in text.split():
            name, equals, value = word.partition("=")
            if not equals or name not in cls._fields:
                raise ValueError("expected %s=..., got %r"
                                 % ("=, ".join(cls._fields), word))
            if name in values:
                raise ValueError("%s appears twice" % name)
            values[name] = value
        return cls.checked(**values)

    @classmethod
    def checked(cls, allow_regions=None, max_calls_per_minute=None, max_calls_per_day=None):
        """Limits from text values (None: not set), each checked; ValueError otherwise."""
        from callexchange.config import parse_region_list
        regions = None
        if allow_regions is not None:
            regions = parse_region_list(allow_regions)
            if regions is None:
                raise ValueError("allow_regions lists regions (GB,DE); without it the "
                                 "config's [policy] allowed_regions applies")
        return cls(regions,
                   _count("max_calls_per_minute", max_calls_per_minute, MAX_CALLS_PER_MINUTE),
                   _count("max_calls_per_day", max_calls_per_day, MAX_CALLS_PER_DAY))

    def format_value(self, name):
        """One limit as text ("GB,DE", "30"), None when not set."""
        value = getattr(self, name)
        if value is None:
            return None
        return ",".join(value) if name == "allow_regions" else str(value)

    def format(self):
        """The keys-file field: only what is set, "" for a key without limits."""
        return " ".join("%s=%s" % (name, self.format_value(name)) for name in self._fields
                        if getattr(self, name) is not None)


NO_LIMITS = KeyLimits(None, None, None)


def _count(name, value, highest):
    if value is None:
        return None
    text = str(value).strip()
    if not text.isdigit() or not text.isascii() or not 1 <= int(text) <= highest:
        raise ValueError("%s must be a whole number from 1 to %d, got %r"
                         % (name, highest, value))
    return int(text)


class KeyEntry(namedtuple("KeyEntry", "label digest created limits")):
    """One line of the keys file: label, hex SHA-256 of the key, created (UTC), KeyLimits."""

    __slots__ = ()


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


# read_keys' last parse of each keys file: path -> (file version, entries). A request
# reads the file two or three times (the key check, the key's limits); a daemon process
# of the persistent mode reads it for every request. One stat replaces the read and parse
# while the file is unchanged (any edit, `keys add` or an editor's save, changes its
# inode, size, mtime or ctime). A file changed in the last RACY_SECONDS is not cached:
# the kernel's timestamps move in ticks of a few ms, so a same-size rewrite within one
# tick would keep its version (as git treats "racily clean" files).
_PARSED = {}
RACY_SECONDS = 2.0


def read_keys(path):
    """Return [KeyEntry] from the keys file; a missing file has none."""
    try:
        info = os.stat(path)
        version = (info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)
    except OSError:
        version = None
    parsed = _PARSED.get(path)
    if version is not None and parsed is not None and parsed[0] == version:
        return list(parsed[1])
    entries = _parse_keys(path)
    if version is not None and time.time() - info.st_mtime > RACY_SECONDS:
        if len(_PARSED) > 16:
            _PARSED.clear()
        _PARSED[path] = (version, tuple(entries))
    return entries


def _parse_keys(path):
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
        limits = NO_LIMITS
        if len(fields) > 3 and fields[3].strip():
            try:
                limits = KeyLimits.parse(fields[3])
            except ValueError as error:
                raise KeyFileError("%s:%d: limits: %s" % (path, number, error)) from None
        entries.append(KeyEntry(fields[0], fields[1].lower(),
                                fields[2] if len(fields) > 2 else "", limits))
    return entries


def entry_for(path, label):
    """The KeyEntry stored under `label`, or None (revoked meanwhile, or never added)."""
    for entry in read_keys(path):
        if entry.label == label:
            return entry
    return None


def find_label(path, presented_key):
    """The label of the stored key matching `presented_key`, or None.

    Every stored digest is compared, with compare_digest, whatever matched: the time
    taken does not depend on which key, or how much of one, matched.
    """
    if not presented_key:
        return None
    wanted = digest(presented_key).encode("ascii")
    found = None
    for entry in read_keys(path):
        if compare_digest(wanted, entry.digest.encode("ascii")) and found is None:
            found = entry.label
    return found


def authenticate(keys_file, presented_key):
    """The label of the client sending `presented_key`, for an endpoint: raises the
    ApiError the endpoints answer (400 control characters or not text, 401 unknown,
    ServerConfigError for a missing or bad keys file). Reads the keys file, writes
    nothing: what a request may do before it is authenticated."""
    from callexchange.errors import ApiError, ServerConfigError
    from callexchange.params import check_no_control
    check_no_control("api-key", presented_key)
    if not os.path.exists(keys_file):
        # Every key would be "invalid": say what is really wrong, to the admin (only:
        # the client learns that the server is misconfigured, and an error id).
        raise ServerConfigError("%s: keys file not found ([auth] keys_file; `callexchange "
                                "keys add` creates it)" % keys_file)
    try:
        label = find_label(keys_file, presented_key)
    except KeyFileError as error:
        raise ServerConfigError(error) from None
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
    for entry in entries:
        limits = entry.limits.format()
        lines.append("\t".join((entry.label, entry.digest, entry.created)
                               + ((limits,) if limits else ())) + "\n")
    atomic_write(path, "".join(lines), mode=mode, owner=owner)


def add_key(path, label, key=None, limits=NO_LIMITS):
    """Store the digest of `key` (a fresh one if None) under `label`, with its KeyLimits;
    return the key.

    Raises ValueError when the label is malformed, already used, or the key already stored.
    """
    check_label(label)
    if key is None:
        key = os.urandom(32).hex()
    if not key or any(ord(c) < 33 or ord(c) == 127 for c in key):
        raise ValueError("a key must be non-empty printable text without spaces")
    entries = read_keys(path)
    if any(entry.label == label for entry in entries):
        raise ValueError("label %r is already in use; revoke it first" % label)
    new_digest = digest(key)
    if any(compare_digest(new_digest, entry.digest) for entry in entries):
        raise ValueError("this key is already stored under another label")
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    _write_keys(path, entries + [KeyEntry(label, new_digest, created, limits)])
    return key


def set_limits(path, label, limits):
    """Replace the KeyLimits of the key stored under `label`. KeyError when there is none."""
    entries = read_keys(path)
    if not any(entry.label == label for entry in entries):
        raise KeyError(label)
    _write_keys(path, [entry._replace(limits=limits) if entry.label == label else entry
                       for entry in entries])


def revoke_key(path, label):
    """Remove the key stored under `label`. Raises KeyError when there is none."""
    entries = read_keys(path)
    kept = [entry for entry in entries if entry.label != label]
    if len(kept) == len(entries):
        raise KeyError(label)
    _write_keys(path, kept)
