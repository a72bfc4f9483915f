"""When to try a webhook again: exponential back-off with jitter, Retry-After, and what
an HTTP answer means for the event. Pure functions."""


MAX_AGE = 24 * 3600           # an event not delivered 24 h after it happened is dead
BACKOFF_BASE = 5.0            # first retry after 2.5-5 s, then doubling...
BACKOFF_CAP = 3600.0          # ...up to once an hour


def backoff_delay(attempt, random_fraction):
    """Seconds before retry number `attempt` (1, 2, ...): BACKOFF_BASE doubling up to
    BACKOFF_CAP, times a jitter between 0.5 and 1 ("equal jitter", `random_fraction` in
    [0, 1)), so that a recovered CRM is not hit by every deliverer at once."""
    delay = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** max(0, min(attempt, 30) - 1))
    return delay * (0.5 + 0.5 * random_fraction)


def parse_retry_after(value, now):
    """Seconds to wait from a Retry-After header (seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(min(int(value), MAX_AGE))
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return max(0.0, min(when - now, MAX_AGE))


class Attempt:
    """What one POST came to: `outcome` is "delivered" (2xx), "gone" (410) or "retry";
    `endpoint_down` marks failures that say the CRM itself is unwell (no connection,
    time-out, 408, 429, 5xx); `error` is a one-line description."""

    def __init__(self, outcome, status=None, error="", retry_after=None, endpoint_down=False):
        self.outcome = outcome
        self.status = status
        self.error = error
        self.retry_after = retry_after
        self.endpoint_down = endpoint_down

    def __repr__(self):
        return "<Attempt %s %s %s>" % (self.outcome, self.status, self.error)


def crm_unwell(status):
    """Whether a failed attempt's HTTP status (None: no answer at all) says the CRM itself
    is unwell, rather than refusing this one event.

    >>> [crm_unwell(s) for s in (None, 408, 429, 500, 503, 400, 404, 422)]
    [True, True, True, True, True, False, False, False]
    """
    return status is None or status in (408, 429) or status >= 500


def classify(status, reason="", retry_after=None):
    """The Attempt for an HTTP status code."""
    text = ("HTTP %d %s" % (status, reason)).strip()
    if 200 <= status < 300:
        return Attempt("delivered", status)
    if status == 410:
        return Attempt("gone", status, text + ": the CRM asked us to stop sending this event")
    return Attempt("retry", status, text, retry_after, endpoint_down=crm_unwell(status))
