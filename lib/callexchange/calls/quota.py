"""Per-key call counts and the admission of a call against the toll-fraud policy.

`admit(config, label, number)` is the call endpoint's one gate: it refuses (ApiError 403,
no Originate) a destination `calls.policy` refuses; `with` it around the Originate, it
reserves a slot in the key's counts first (403 when they are full) and gives it back when
no call was placed (Asterisk refused or was unreachable). A call whose Originate was sent
but not confirmed keeps its slot: it may be ringing. A double click answered from the
first call's reply never enters, so it is neither counted nor refused by the counts.

The counts live in one JSON file, `[state] dir/quota/usage.json`, read and rewritten under
an exclusive flock (so concurrent CGI processes never lose or double a count) and replaced
atomically in place (`statedir.write_record`), as the ANI counts are:

    {"days": {"2024-11-27": {"acme-crm": 12}},            # today and yesterday, every key
     "recent": {"acme-crm": [1732700000.125, ...]},       # last 60 s, rate-limited keys
     "refused": {"2024-11-27": {"acme-crm": {"emergency": 1}}}}   # refusals by rule

Refusals are counted too (not fsynced: a lost one costs nothing), so `keys list` shows a
key probing what it may not dial: the first sign of a leaked key. So are the calls of a
key without a per-minute or per-day limit: their counts limit nothing, they are what
`keys list` shows, and an fdatasync under the lock every call would cost such a key's
calls ~0.2-3 ms each and serialise them (docs/decisions.md). They stay exact (the flock)
and survive any crash of the gateway; a power loss may forget the last seconds of them.
"""

import json
import os
import time

from callexchange.calls import policy
from callexchange.statedir import StateDir, locked, owner_for, read_record, write_record

KEEP_DAYS = 2   # today, and yesterday for a slot given back just after midnight


class Usage:
    """One key's counts: `today` (calls), `last_minute` (None where not tracked: keys
    without a per-minute limit) and `refused` ({rule: refusals today})."""

    __slots__ = ("today", "last_minute", "refused")

    def __init__(self, today=0, last_minute=None, refused=None):
        self.today, self.last_minute, self.refused = today, last_minute, refused or {}

    def __eq__(self, other):
        return isinstance(other, Usage) and (self.today, self.last_minute, self.refused) == \
            (other.today, other.last_minute, other.refused)

    def __repr__(self):
        return "Usage(%r, %r, %r)" % (self.today, self.last_minute, self.refused)


class Slot:
    """One reserved call: whose, on which day and when (to give exactly it back)."""

    __slots__ = ("label", "day", "at")

    def __init__(self, label, day, at):
        self.label, self.day, self.at = label, day, at


class Refused(Exception):
    """The key's counts refuse one more call; `refusal` is the policy.Refusal."""

    def __init__(self, refusal):
        super().__init__(refusal.error)
        self.refusal = refusal


class CallQuota:
    """Every key's calls today, and the last minute's of keys with a per-minute limit."""

    def __init__(self, state_dir, clock=time.time):
        self.directory = StateDir(state_dir).quota
        self.path = os.path.join(self.directory, "usage.json")
        self.clock = clock

    def _day(self, now):
        return time.strftime("%Y-%m-%d", time.localtime(now))

    def _locked(self):
        return locked(self.directory)

    def _read(self):
        try:
            state = json.loads(read_record(self.path) or "{}")
        except ValueError:
            state = {}
        if not isinstance(state, dict):
            state = {}
        return {part: state[part] if isinstance(state.get(part), dict) else {}
                for part in ("days", "recent", "refused")}

    def _write(self, state, now, durable=True):
        keep = {self._day(now - offset * 86400) for offset in range(KEEP_DAYS)}
        for part in ("days", "refused"):
            state[part] = {day: counts for day, counts in state[part].items() if day in keep}
        since = now - policy.WINDOW_SECONDS
        state["recent"] = {label: kept for label, kept in
                           ((label, [t for t in times if t > since])
                            for label, times in state["recent"].items()) if kept}
        write_record(self.path, json.dumps(state, sort_keys=True, separators=(",", ":")),
                     owner=owner_for(self.directory), durable=durable)

    @staticmethod
    def _count_refusal(state, day, label, rule):
        rules = state["refused"].setdefault(day, {}).setdefault(label, {})
        rules[rule] = rules.get(rule, 0) + 1

    def record_refusal(self, label, rule):
        """Count one refusal of `label`'s call by `rule` (a destination rule: the counts'
        own refusals are counted by reserve)."""
        fd = self._locked()
        try:
            now = self.clock()
            state = self._read()
            self._count_refusal(state, self._day(now), label, rule)
            self._write(state, now, durable=False)
        finally:
            os.close(fd)

    def reserve(self, label, limits):
        """Count one call of `label` if its KeyLimits allow it: returns the Slot, or raises
        Refused (nothing counted). Decided and counted under one lock, so N concurrent
        requests against a limit of K place exactly min(N, K) calls."""
        fd = self._locked()
        try:
            now = self.clock()
            day = self._day(now)
            state = self._read()
            counts = state["days"].setdefault(day, {})
            recent = state["recent"].get(label, [])
            refusal = policy.check_rate(limits, recent, counts.get(label, 0), now)
            if refusal is not None:
                self._count_refusal(state, day, label, refusal.rule)
                self._write(state, now, durable=False)
                raise Refused(refusal)
            counts[label] = counts.get(label, 0) + 1
            if limits is not None and limits.max_calls_per_minute is not None:
                state["recent"][label] = recent + [round(now, 6)]
            self._write(state, now, durable=counts_limit(limits))
            return Slot(label, day, round(now, 6))
        finally:
            os.close(fd)

    def release(self, slot):
        """Give back a slot whose call was never placed: on the day it was counted (not
        "today", which may have turned), and its own minute entry."""
        fd = self._locked()
        try:
            state = self._read()
            counts = state["days"].get(slot.day, {})
            if counts.get(slot.label, 0) > 0:
                counts[slot.label] -= 1
            times = state["recent"].get(slot.label, [])
            if slot.at in times:
                times.remove(slot.at)
            self._write(state, self.clock())
        finally:
            os.close(fd)

    def usage(self):
        """{label: Usage} of every key counted today."""
        now = self.clock()
        state = self._read()   # no lock: the file is replaced whole, never seen half-written
        day = self._day(now)
        today = state["days"].get(day, {})
        refused = state["refused"].get(day, {})
        since = now - policy.WINDOW_SECONDS
        return {label: Usage(today.get(label, 0),
                             sum(1 for t in state["recent"][label] if t > since)
                             if label in state["recent"] else None,
                             dict(refused.get(label, {})))
                for label in set(today) | set(state["recent"]) | set(refused)}


def counts_limit(limits):
    """True when the key's counts decide its calls (a per-minute or per-day limit), so
    they must survive a power loss; False for a key they only describe.

    >>> from callexchange.keys import KeyLimits
    >>> counts_limit(KeyLimits(None, None, 2000)), counts_limit(KeyLimits(("GB",), None, None))
    (True, False)
    """
    return limits is not None and (limits.max_calls_per_minute is not None
                                   or limits.max_calls_per_day is not None)


def admit(config, label, number, clock=time.time):
    """The policy's verdict on calling `number` with the key `label`: raises ApiError 403
    (naming the rule) at once when the destination is refused. Then `with` it around
    placing the call: entering reserves a slot in the key's counts (403 when they are
    full), leaving gives it back if the call was not placed."""
    return Admission(config, label, number, clock)


class Admission:
    """The policy's verdict on one call, and its reserved slot while the call is placed."""

    def __init__(self, config, label, number, clock=time.time):
        from callexchange import keys
        from callexchange.errors import ApiError

        entry = keys.entry_for(config.auth.keys_file, label)
        if entry is None:  # revoked since the request was authenticated
            raise ApiError(401, "Invalid api-key")
        regions = policy.regions_for(config.policy.allowed_regions, entry.limits)
        refusal = policy.check_destination(
            number, config.policy.allowed_types, regions,
            key_regions=entry.limits.allow_regions is not None)
        self.label, self.limits = label, entry.limits
        self.quota = CallQuota(config.state.dir, clock)
        self.slot = None
        if refusal is not None:
            self.quota.record_refusal(label, refusal.rule)
            raise ApiError(403, refusal.error, rule=refusal.rule)

    def __enter__(self):
        from callexchange.errors import ApiError
        try:
            self.slot = self.quota.reserve(self.label, self.limits)
        except Refused as refused:
            raise ApiError(403, refused.refusal.error, rule=refused.refusal.rule) from None
        return self.slot

    def __exit__(self, kind, error, traceback):
        from callexchange.errors import CallMayBePlaced
        # A call that may be ringing keeps its slot, as it keeps its caller-ID count.
        if kind is not None and not isinstance(error, CallMayBePlaced):
            self.quota.release(self.slot)
        return False
