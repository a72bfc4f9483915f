"""Caller ID (ANI) rotation: which of our numbers a call shows, and today's usage counts.

The choice is a pure function (`choose_caller_id`); the counts live in one small JSON
record per day under `[state] dir/ani/`, read and rewritten under an exclusive flock so
that concurrent CGI processes never lose or double an increment, and replaced atomically
and durably in place (`statedir.write_record`) so a crash leaves the last good copy, never
half a file.
"""

import fcntl
import json
import os
import time

from callexchange.statedir import StateDir, owner_for, read_record, write_record

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
        os.makedirs(self.directory, exist_ok=True)
        fd = os.open(os.path.join(self.directory, "usage.lock"), os.O_RDWR | os.O_CREAT, 0o660)
        fcntl.flock(fd, fcntl.LOCK_EX)
        return fd

    def usage(self, day=None):
        """{number: calls} for `day` (today by default)."""
        try:
            counts = json.loads(read_record(self._path(day or self._day())) or "{}")
        except ValueError:
            return {}
        return counts if isinstance(counts, dict) else {}

    def _write(self, day, counts):
        write_record(self._path(day), json.dumps(counts, sort_keys=True),
                     owner=owner_for(self.directory))

    def reserve(self, candidates, flagged, daily_limit):
        """Choose a caller ID and count the call against it, atomically. Returns (number, clean)."""
        fd = self._locked()
        try:
            day = self._day()
            counts = self.usage(day)
            if not counts:
                self._forget_old_days(day)
            number, clean = choose_caller_id(candidates, counts, flagged, daily_limit)
            counts[number] = counts.get(number, 0) + 1
            self._write(day, counts)
            return number, clean
        finally:
            os.close(fd)

    def release(self, number):
        """Take back a reservation whose call was never placed (Asterisk refused or was down)."""
        fd = self._locked()
        try:
            day = self._day()
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
            if name.startswith("usage-") and name.endswith(".json") and name[6:16] < cutoff:
                try:
                    os.unlink(os.path.join(self.directory, name))
                except OSError:
                    pass
