"""The toll-fraud policy: may this API key dial this destination now? Pure decisions.

Nothing here reads a file or the clock: the caller passes the analysed destination
(`calls.numbers.NumberInfo`), the settings (`[policy]` and the key's own `KeyLimits`) and,
for the counts, the key's recent calls. A decision is None (allowed) or a `Refusal`
naming its rule. The rules, in the order they are checked:

    emergency     an emergency number, in any notation (+112, 00112, +1 911, 011 44 112)
    short_number  another short service number (directory enquiries, hotlines, 116xxx)
    region        the destination's region is not allowed for the key
    number_type   a costly number type (premium rate...) not in `[policy] allowed_types`
    rate_limit    the key placed max_calls_per_minute calls in the last 60 seconds
    daily_cap     the key placed max_calls_per_day calls today

The first two cannot be allowed by any setting. A refusal is answered 403 with no
Originate (`calls.quota.admit`).
"""

from collections import namedtuple

RULES = ("emergency", "short_number", "region", "number_type", "rate_limit", "daily_cap")
WINDOW_SECONDS = 60.0


class Refusal(namedtuple("Refusal", "rule reason")):
    """A refused call: `rule` (one of RULES) and `reason` (what the client is told)."""

    __slots__ = ()

    @property
    def error(self):
        """The reply's `error`, the rule in a fixed place for CRMs that branch on it.

        >>> Refusal("region", "destination region JM is not allowed").error
        'Refused by policy (region): destination region JM is not allowed'
        """
        return "Refused by policy (%s): %s" % (self.rule, self.reason)


def regions_for(allowed_regions, limits):
    """The regions a key may call: its own `allow_regions` when it has them, else the
    config's `[policy] allowed_regions`; None means every region.

    >>> regions_for(None, None)
    >>> regions_for(("GB",), None)
    ('GB',)
    >>> from callexchange.keys import KeyLimits
    >>> regions_for(("GB",), KeyLimits(("DE", "FR"), None, None))
    ('DE', 'FR')
    """
    if limits is not None and limits.allow_regions is not None:
        return limits.allow_regions
    return allowed_regions


def check_destination(number, allowed_types, allowed_regions, key_regions=False):
    """None when `number` (a NumberInfo) may be dialled, else the Refusal.

    `allowed_types`: the type names allowed (`[policy] allowed_types`); `allowed_regions`:
    a tuple of ISO regions or None for every region (see regions_for); `key_regions`
    says the regions are the key's own, for the reason's wording.

    >>> from callexchange.calls.numbers import NumberInfo, ServiceNumber
    >>> emergency = NumberInfo("44999", "GB", 44, False, "", 99,
    ...                        service=ServiceNumber("emergency", "GB", "999"))
    >>> check_destination(emergency, {"unknown"}, None).rule
    'emergency'
    >>> premium = NumberInfo("19005550100", "US", 1, True, "", 4, type_name="premium_rate")
    >>> check_destination(premium, {"fixed_line", "mobile"}, None).reason
    'destination 19005550100 is a premium_rate number, which [policy] allowed_types does not list'
    >>> mobile = NumberInfo("447911123456", "GG", 44, True, "", 1, "GB", "mobile")
    >>> check_destination(mobile, {"mobile"}, ("GB", "DE"), key_regions=True).reason
    "destination region GG is not among this key's allowed regions (GB, DE)"
    >>> check_destination(mobile, {"mobile"}, ("GG",)) is None
    True
    """
    service = number.service
    if service is not None and service.kind == "emergency":
        return Refusal("emergency", "destination %s dials an emergency number in %s; the "
                                    "gateway never dials emergency services"
                       % (service.digits, service.region))
    if service is not None:
        return Refusal("short_number", "destination %s dials a short service number in "
                                       "%s; the gateway dials only full phone numbers"
                       % (service.digits, service.region))
    if allowed_regions is not None and number.region not in allowed_regions:
        # Strict: GB does not cover GG, JE or IM (nor US the rest of +1, JM, DO...): the
        # costliest fraud destinations share calling codes with cheap ones.
        return Refusal("region", "destination region %s is not among %s (%s)"
                       % (number.region or "unknown",
                          "this key's allowed regions" if key_regions
                          else "[policy] allowed_regions", ", ".join(allowed_regions)))
    if number.type_name not in allowed_types:
        return Refusal("number_type", "destination %s is a %s number, which [policy] "
                                      "allowed_types does not list"
                       % (number.dial_digits, number.type_name))
    return None


def check_rate(limits, recent, today, now):
    """None when one more call keeps the key within its limits, else the Refusal.

    `recent`: the times (unix seconds) of the key's calls counted so far, any order;
    `today`: its calls today. The minute is sliding: at most max_calls_per_minute calls
    in any 60 seconds. The day is the calendar day of the counts.

    >>> from callexchange.keys import KeyLimits
    >>> limits = KeyLimits(None, 2, 100)
    >>> check_rate(limits, [100.0, 130.0], 2, 150.0).reason
    'this api-key placed its 2 calls per minute; the next is allowed in 10 s'
    >>> check_rate(limits, [100.0, 130.0], 2, 160.5) is None
    True
    >>> check_rate(KeyLimits(None, None, 2), [], 2, 0.0).rule
    'daily_cap'
    """
    if limits is None:
        return None
    if limits.max_calls_per_minute is not None:
        window = sorted(t for t in recent if t > now - WINDOW_SECONDS)
        if len(window) >= limits.max_calls_per_minute:
            # The oldest call that keeps the window full must leave it first.
            frees_at = window[len(window) - limits.max_calls_per_minute] + WINDOW_SECONDS
            wait = max(1, int(frees_at - now + 0.999))
            return Refusal("rate_limit", "this api-key placed its %d calls per minute; the "
                                         "next is allowed in %d s"
                           % (limits.max_calls_per_minute, wait))
    if limits.max_calls_per_day is not None and today >= limits.max_calls_per_day:
        return Refusal("daily_cap", "this api-key placed its %d calls for today; the count "
                                    "starts again at midnight (the PBX's time)"
                       % limits.max_calls_per_day)
    return None
