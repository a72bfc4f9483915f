"""Replayed replies: Idempotency-Key and double-click protection.

A CRM that retries after a time-out, or an agent who double-clicks, must never dial a
lead twice. Each protected request takes an exclusive flock on a file named after the
SHA-256 of its key; a concurrent twin waits on that lock and then finds the first reply
stored in the file. The wait is bounded by the twin's own deadline (`not_after`): one
that still finds the key in flight then gets `StillInFlight`, never a wait that adds up
behind the others. Only replies of calls that were placed (or may have been) are
stored: a request that failed placed no call, so its retry may.
"""

import fcntl
import json
import os
import time

from callexchange.errors import ApiError
from callexchange.keys import sha256
from callexchange.statedir import sweep_old_files

PRUNE_EVERY = 3600  # seconds between sweeps of expired entries
# How often a twin looks at a held lock again: flock has no time-out of its own, and a
# SIGALRM cannot interrupt one in a thread of a mod_wsgi daemon.
_POLL_FIRST, _POLL_MOST = 0.002, 0.05


class StillInFlight(ApiError):
    """409: the key is still held by another request at this request's deadline."""

    def __init__(self):
        super().__init__(409, "The same request is still being answered; retry it later "
                              "for that request's reply")


class ReplayStore:
    """Stored replies under `directory`, each valid for `ttl` seconds."""

    def __init__(self, directory, ttl, clock=time.time):
        self.directory = directory
        self.ttl = ttl
        self.clock = clock

    def guard(self, key, fingerprint="", not_after=None):
        """A context manager holding the lock for `key`; see `Guard`. `not_after`: the
        time.monotonic() after which waiting for the lock raises StillInFlight."""
        return Guard(self, key, fingerprint, not_after)

    def _path(self, key):
        name = sha256(key.encode("utf-8")).hexdigest()
        return os.path.join(self.directory, name)

    def prune(self):
        """Delete entries older than ttl; run at most once per PRUNE_EVERY seconds."""
        sweep_old_files(self.directory, ".pruned", PRUNE_EVERY, self.ttl, self.clock(),
                        lambda name: len(name) == 64)


class Guard:
    """`with store.guard(key) as guard:` then `guard.previous` is the stored reply
    (status, body) or None (`guard.entry` the whole stored dict), `guard.mismatch` is True
    when the key was first used with another request; call `guard.remember(status, body)`
    once a call was placed."""

    def __init__(self, store, key, fingerprint, not_after=None):
        self.store = store
        self.key = key
        self.fingerprint = fingerprint
        self.not_after = not_after
        self.previous = None
        self.entry = None      # the stored dict behind `previous` (its `at`, extra fields)
        self.mismatch = False
        self._fd = None

    def __enter__(self):
        os.makedirs(self.store.directory, exist_ok=True)
        self._fd = os.open(self.store._path(self.key), os.O_RDWR | os.O_CREAT, 0o660)
        try:
            self._lock()
        except BaseException:
            os.close(self._fd)
            self._fd = None
            raise
        data = b""
        while True:
            chunk = os.read(self._fd, 65536)
            if not chunk:
                break
            data += chunk
        try:
            entry = json.loads(data) if data else None
        except ValueError:
            entry = None  # torn by a crash mid-write: as if never stored
        if isinstance(entry, dict) and self.store.clock() - entry.get("at", 0) < self.store.ttl:
            if entry.get("fingerprint", "") != self.fingerprint:
                self.mismatch = True
            else:
                self.previous = (entry["status"], entry["body"])
                self.entry = entry
        return self

    def _lock(self):
        if self.not_after is None:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            return
        pause = _POLL_FIRST
        while True:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                left = self.not_after - time.monotonic()
                if left <= 0:
                    raise StillInFlight() from None
                time.sleep(min(pause, left))
                pause = min(pause * 2, _POLL_MOST)

    def remember(self, status, body, **extra):
        """Store the reply for later twins (fsynced: a retry after a crash still sees it),
        with `extra` fields for whoever reads `entry` (JSON values)."""
        entry = dict(extra, at=self.store.clock(), fingerprint=self.fingerprint,
                     status=status, body=body)
        data = json.dumps(entry).encode("utf-8")
        os.lseek(self._fd, 0, os.SEEK_SET)
        os.ftruncate(self._fd, 0)
        os.write(self._fd, data)
        os.fsync(self._fd)

    def __exit__(self, *exc):
        os.close(self._fd)  # closing releases the flock
        self._fd = None
        return False
