"""Replayed replies: Idempotency-Key and double-click protection.

A CRM that retries after a time-out, or an agent who double-clicks, must never dial a
lead twice. Each protected request takes an exclusive flock on a file named after the
SHA-256 of its key; a concurrent twin waits on that lock (the first is bounded by the
AMI deadline) and then finds the first reply stored in the file. Only replies of calls
that were placed are stored: a request that failed placed no call, so its retry may.
"""

import fcntl
import json
import os
import time

from callexchange.keys import sha256

PRUNE_EVERY = 3600  # seconds between sweeps of expired entries


class ReplayStore:
    """Stored replies under `directory`, each valid for `ttl` seconds."""

    def __init__(self, directory, ttl, clock=time.time):
        self.directory = directory
        self.ttl = ttl
        self.clock = clock

    def guard(self, key, fingerprint=""):
        """A context manager holding the lock for `key`; see `Guard`."""
        return Guard(self, key, fingerprint)

    def _path(self, key):
        name = sha256(key.encode("utf-8")).hexdigest()
        return os.path.join(self.directory, name)

    def prune(self):
        """Delete entries older than ttl; run at most once per PRUNE_EVERY seconds."""
        marker = os.path.join(self.directory, ".pruned")
        now = self.clock()
        try:
            if now - os.stat(marker).st_mtime < PRUNE_EVERY:
                return
        except FileNotFoundError:
            pass
        with open(marker, "w"):
            pass
        for name in os.listdir(self.directory):
            path = os.path.join(self.directory, name)
            try:
                if len(name) == 64 and now - os.stat(path).st_mtime > self.ttl:
                    os.unlink(path)
            except OSError:
                pass


class Guard:
    """`with store.guard(key) as guard:` then `guard.previous` is the stored reply
    (status, body) or None, `guard.mismatch` is True when the key was first used with
    another request; call `guard.remember(status, body)` once a call was placed."""

    def __init__(self, store, key, fingerprint):
        self.store = store
        self.key = key
        self.fingerprint = fingerprint
        self.previous = None
        self.mismatch = False
        self._fd = None

    def __enter__(self):
        os.makedirs(self.store.directory, exist_ok=True)
        self._fd = os.open(self.store._path(self.key), os.O_RDWR | os.O_CREAT, 0o660)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
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
        return self

    def remember(self, status, body):
        """Store the reply for later twins (fsynced: a retry after a crash still sees it)."""
        data = json.dumps({"at": self.store.clock(), "fingerprint": self.fingerprint,
                           "status": status, "body": body}).encode("utf-8")
        os.lseek(self._fd, 0, os.SEEK_SET)
        os.ftruncate(self._fd, 0)
        os.write(self._fd, data)
        os.fsync(self._fd)

    def __exit__(self, *exc):
        os.close(self._fd)  # closing releases the flock
        self._fd = None
        return False
