"""The one duplicate rule, for requests sent without an Idempotency-Key.

A request that repeats a call (same API key, extension and destination) is a duplicate
while that call is still live (no hangup known yet) and it comes within
`[dial] dedupe_seconds` (default 5) of the first, or, whatever the delay, while the first
call's Originate is unconfirmed (503 "may have been placed") and its ring time has not
passed. A duplicate gets the first reply, marked `Idempotent-Replayed: true`, and dials
nothing; a redial after the first call ended is a new call.

(`[dial] dedupe_seconds = 0` turns the rule off. The README and docs/decisions.md state
the rule in these very words; tests/calls/test_duplicate_rule.py holds them to it.)

"Hangup known": the dialplan hook (webhooks.hook), which Asterisk runs at every call's
hangup, leaves an empty file named after the call's uniqueid in the spool
(`StateDir.hangup_mark`); the endpoint only looks whether it exists. Without the hook
wired (no mark ever), a call counts as live for its whole window.

The first reply is kept by calls.replay (the `dedupe/` store, under the same flock a
twin waits on); `FirstCall` is what the rule needs of it.
"""

import os
from collections import namedtuple

from callexchange.statedir import StateDir


class FirstCall(namedtuple("FirstCall", "at uniqueid unconfirmed_until")):
    """The call a request may repeat: when it was answered (`at`, wall clock), its
    `uniqueid`, and for an unconfirmed Originate the wall-clock time its ring time ends
    (None for a confirmed call)."""

    __slots__ = ()

    @classmethod
    def from_entry(cls, entry):
        """From a calls.replay entry (its `at`, the reply's `uniqueid`, and the extra
        field `unconfirmed_until`); None when it is not one."""
        if not isinstance(entry, dict) or not isinstance(entry.get("body"), dict):
            return None
        return cls(entry.get("at", 0), entry["body"].get("uniqueid"),
                   entry.get("unconfirmed_until"))


def is_duplicate(first, now, dedupe_seconds, hung_up):
    """The rule: does a repeat at `now` of `first` (a FirstCall) dial nothing?
    `hung_up`: whether the first call's hangup is known.

    >>> confirmed = FirstCall(100.0, "100.1", None)
    >>> is_duplicate(confirmed, 104.9, 5, hung_up=False)   # live, within the window
    True
    >>> is_duplicate(confirmed, 105.0, 5, hung_up=False)   # live, but past the window
    False
    >>> is_duplicate(confirmed, 101.0, 5, hung_up=True)    # a redial after it ended
    False
    >>> unconfirmed = FirstCall(100.0, "100.2", 133.0)     # ring time ends at 133
    >>> is_duplicate(unconfirmed, 130.0, 5, hung_up=False)
    True
    >>> is_duplicate(unconfirmed, 133.0, 5, hung_up=False)
    False
    >>> is_duplicate(unconfirmed, 130.0, 5, hung_up=True)  # it rang, and ended
    False
    >>> is_duplicate(confirmed, 101.0, 0, hung_up=False)   # the rule turned off
    False
    """
    if dedupe_seconds <= 0 or hung_up:
        return False
    if now - first.at < dedupe_seconds:
        return True
    return first.unconfirmed_until is not None and now < first.unconfirmed_until


def hangup_known(state_dir, uniqueid):
    """Whether the hook left call `uniqueid`'s hangup mark under `state_dir`."""
    path = StateDir(state_dir).hangup_mark(uniqueid or "")
    return path is not None and os.path.exists(path)


def duplicate_of(entry, now, dedupe_seconds, state_dir):
    """The rule over a stored entry: True when a repeat at `now` is a duplicate of it."""
    first = FirstCall.from_entry(entry)
    if first is None:
        return False
    return is_duplicate(first, now, dedupe_seconds, hangup_known(state_dir, first.uniqueid))
