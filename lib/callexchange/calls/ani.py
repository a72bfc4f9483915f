"""Caller ID (ANI) rotation: which of our numbers a call shows, and today's usage counts.

The choice is a pure function (`choose_caller_id`); the counts live in one small JSON
record per day under `[state] dir/ani/`, read and rewritten under an exclusive flock so
that concurrent CGI processes never lose or double an increment, and replaced atomically
and durably in place (`statedir.write_record`) so a crash leaves the last good copy, never
half a file.

Group commit (the persistent mode's threads): the threads of a process that want a
caller ID while one of them waits for the flock or writes form the next batch: one of
them (the leader) takes the flock, chooses for each in arrival order exactly as one at a
time would, and writes the record once. A CGI process is a batch of one.

The wait for the disk (an fdatasync, 0.1 to 3 ms) is not under the flock: the record is
written as a deferred copy (`statedir.write_record(defer_sync=True)`), the flock let go,
and then synced, once for all the threads waiting on that file. `reserve(defer_sync=True)`
leaves even that to the caller (`Reserved.sync()`): the call endpoint sends the Originate
first and syncs while Asterisk answers, and replies only once the count is on disk.
"""

import json
import os
import threading
import time

from callexchange.statedir import (MARK_SUFFIX, StateDir, locked, owner_for, read_record,
                                   write_record)

KEEP_DAYS = 7


def choose_caller_id(candidates, usage, flagged, daily_limit):
    """Pick the caller ID for one call. Returns (number, clean).

    Among `candidates` (in pool order), the least used today that is neither flagged nor
    at `daily_limit` wins, ties going to the earlier one; `clean` is then True. When every
    candidate is flagged or at its limit, the least used of all is returned with clean
    False: the call still goes out, and the CRM is told via check_spam.

    >>> choose_caller_id(("111", "222"), {"111": 3, "222": 1}, set(), 200)
    ('222', True)
    >>> choose_caller_id(("111", "222"), {"111": 3, "222": 5}, {"222"}, 3)
    ('111', False)
    """
    if not candidates:
        raise ValueError("no caller ID candidates")
    order = {number: index for index, number in enumerate(candidates)}

    def rank(number):
        return (usage.get(number, 0), order[number])

    clean = [n for n in candidates if n not in flagged and usage.get(n, 0) < daily_limit]
    if clean:
        return min(clean, key=rank), True
    return min(candidates, key=rank), False


def candidates_for(ani_settings, region, main_region=None):
    """The pool for the destination's region, else the pool of its calling code's main
    region (phonenumbers puts some +44 7xxx mobiles in GG, JE or IM: a GB pool serves
    them), else the default pool."""
    return (ani_settings.pools.get(region) or ani_settings.pools.get(main_region)
            or ani_settings.default)


def read_flagged(path):
    """Numbers listed in the flagged file (one per line, '#' comments), as digits only:
    spaces, dashes, '+' and a leading '00' are dropped, as in the pools."""
    if not path:
        return frozenset()
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except FileNotFoundError:
        return frozenset()
    numbers = set()
    for line in lines:
        # "+49 30 123456" and "0049-30-123456" flag the pool's 4930123456.
        digits = "".join(c for c in line.split("#", 1)[0] if c.isdigit())
        numbers.add(digits[2:] if digits.startswith("00") else digits)
    return frozenset(numbers) - {""}


class AniLedger:
    """Today's per-number call counts, durable and exact across processes."""

    def __init__(self, state_dir, clock=time.time):
        self.directory = StateDir(state_dir).ani
        self.clock = clock

    def _day(self):
        return time.strftime("%Y-%m-%d", time.localtime(self.clock()))

    def _path(self, day):
        return os.path.join(self.directory, "usage-%s.json" % day)

    def _locked(self):
        return locked(self.directory)

    def usage(self, day=None):
        """{number: calls} for `day` (today by default)."""
        try:
            counts = json.loads(read_record(self._path(day or self._day())) or "{}")
        except ValueError:
            return {}
        return counts if isinstance(counts, dict) else {}

    def _write(self, day, counts, defer_sync=False):
        return write_record(self._path(day), json.dumps(counts, sort_keys=True),
                            owner=owner_for(self.directory), defer_sync=defer_sync)

    def reserve(self, candidates, flagged, daily_limit, defer_sync=False):
        """Choose a caller ID and count the call against it, atomically and durably (with
        the other threads of this process that ask meanwhile: see above). Returns
        (number, clean), a `Reserved` whose `day` is the day the call was counted on.
        `defer_sync`: return once the count is written, before it is on disk: the caller
        must call `Reserved.sync()` before it tells anyone of the call."""
        wanted = _Reservation(self, candidates, flagged, daily_limit)
        _committer(self.directory).commit(wanted)
        if not defer_sync:
            wanted.result.sync()
        return wanted.result

    def _count_batch(self, batch):
        """With the flock held: choose and count for every _Reservation of `batch` in
        order, write each day's record once (durably), then fill in their results."""
        days, chosen = {}, []
        for wanted in batch:
            day = wanted.ledger._day()
            if day not in days:
                days[day] = self.usage(day)
                if not days[day]:
                    self._forget_old_days(day)
            counts = days[day]
            number, clean = choose_caller_id(wanted.candidates, counts, wanted.flagged,
                                             wanted.daily_limit)
            counts[number] = counts.get(number, 0) + 1
            chosen.append((number, clean, day))
        pending = {day: self._write(day, counts, defer_sync=True)
                   for day, counts in days.items()}
        for wanted, (number, clean, day) in zip(batch, chosen):
            wanted.result = Reserved(number, clean, day, pending[day])

    def release(self, number, day=None):
        """Take back a reservation whose call was never placed (Asterisk refused or was
        down), from `day`, the day it was counted on (`Reserved.day`; today by default):
        a call refused just after midnight gives back yesterday's count, not today's."""
        fd = self._locked()
        try:
            day = day or self._day()
            counts = self.usage(day)
            if counts.get(number, 0) > 0:
                counts[number] -= 1
                self._write(day, counts)
        finally:
            os.close(fd)

    def _forget_old_days(self, today):
        # Called under the lock, once a day (the first call finds no counts yet).
        cutoff = time.strftime("%Y-%m-%d", time.localtime(self.clock() - KEEP_DAYS * 86400))
        for name in os.listdir(self.directory):
            if name.startswith("usage-") and name.endswith((".json", ".json" + MARK_SUFFIX)) \
                    and name[6:16] < cutoff:
                try:
                    os.unlink(os.path.join(self.directory, name))
                except OSError:
                    pass


class Reserved(tuple):
    """(number, clean) as `AniLedger.reserve` chose them, `day`, the day it counted, and
    `sync()`, which returns once the count is on disk (at once if it is already; raises
    the OSError of the disk)."""

    def __new__(cls, number, clean, day, pending=None):
        reserved = super().__new__(cls, (number, clean))
        reserved.day = day
        reserved._pending = pending
        return reserved

    def sync(self):
        if self._pending is not None:
            self._pending.sync()


class _Reservation:
    """One thread's wish for a caller ID; `result` (number, clean) once committed."""

    __slots__ = ("ledger", "candidates", "flagged", "daily_limit", "result", "error", "done")

    def __init__(self, ledger, candidates, flagged, daily_limit):
        self.ledger, self.candidates = ledger, candidates
        self.flagged, self.daily_limit = flagged, daily_limit
        self.result = self.error = None
        self.done = False


class _Committer:
    """The group commit of one ani/ directory in this process."""

    def __init__(self):
        self.changed = threading.Condition(threading.Lock())
        self.queue = []
        self.leading = False

    def commit(self, wanted):
        """Return once `wanted` is counted and on disk (or raise what prevented it)."""
        with self.changed:
            self.queue.append(wanted)
            while not wanted.done:
                if self.leading:
                    self.changed.wait()
                    continue
                self.leading = True
                self.changed.release()
                batch = []
                try:
                    # Whoever queues while the leader waits for the flock joins its batch.
                    fd = wanted.ledger._locked()
                    try:
                        with self.changed:
                            batch, self.queue = self.queue, []
                        wanted.ledger._count_batch(batch)
                    finally:
                        os.close(fd)
                except BaseException as error:  # OSError: each of the batch gets it
                    for other in batch or [wanted]:
                        other.error = error
                finally:
                    self.changed.acquire()
                    self.leading = False
                    for other in batch or [wanted]:
                        other.done = True
                    if wanted in self.queue:    # failed before it took the batch
                        self.queue.remove(wanted)
                    self.changed.notify_all()
        if wanted.error is not None:
            raise wanted.error


_COMMITTERS = {}
_COMMITTERS_LOCK = threading.Lock()
if hasattr(os, "register_at_fork"):
    # A child forked while a thread of its parent led a batch would wait for it forever.
    os.register_at_fork(after_in_child=_COMMITTERS.clear)


def _committer(directory):
    with _COMMITTERS_LOCK:
        committer = _COMMITTERS.get(directory)
        if committer is None:
            committer = _COMMITTERS[directory] = _Committer()
        return committer
