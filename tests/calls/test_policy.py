"""The toll-fraud policy's decisions (calls/policy.py) over real number analysis
(calls/numbers.py): emergency and short service numbers in every notation and region,
costly number types, allowed regions, and the per-minute / per-day counts."""

import json
import os
import subprocess
import sys

import pytest
from paths import LIB

from callexchange import config as config_module
from callexchange.calls import numbers, policy
from callexchange.calls.numbers import NotAPhoneNumber, analyze
from callexchange.keys import NO_LIMITS, KeyLimits

DEFAULT_TYPES = config_module.config_from_text(
    "[ami]\nusername = u\nsecret = s\n[ani]\ndefault = 12125550100\n").policy.allowed_types


def util():
    return numbers._phonenumberutil()


def decide(destination, default_region="US", types=DEFAULT_TYPES, regions=None,
           cache=None):
    """The rule that refuses `destination`, or None when it may be dialled."""
    refusal = policy.check_destination(analyze(destination, default_region, cache),
                                       types, regions)
    return refusal and refusal.rule


def short_metadata(region):
    from phonenumbers.phonemetadata import PhoneMetadata
    from phonenumbers import shortnumberinfo  # noqa: F401  (registers the loaders)
    return PhoneMetadata.short_metadata_for_region(region)


def short_regions():
    from phonenumbers.shortdata import _AVAILABLE_REGION_CODES
    return list(_AVAILABLE_REGION_CODES)


# --- emergency numbers: every notation ---------------------------------------------------

# The cases and their class: (destination, [dial] default_region).
EMERGENCY = [
    ("+112", "US"), ("00112", "US"), ("+1 911", "US"), ("+1911", "US"), ("1911", "US"),
    ("+44 999", "US"), ("0044 999", "US"), ("+44 112", "DE"), ("+44 (0) 999", "US"),
    ("0049 110", "US"), ("+49 110", "GB"), ("+49 0110", "US"), ("+49 112", "US"),
    ("011 44 112", "US"), ("011 44 999", "GB"), ("011 49 110", "DE"), ("011 1 911", "US"),
    ("0011 44 112", "AU"), ("0011 61 000", "AU"),
    ("911", "US"), ("112", "US"), ("112", "DE"), ("110", "DE"), ("000", "AU"),
    ("999", "GB"), ("112", "GB"), ("+33 15", "US"),
    ("+33 17", "US"), ("+33 18", "DE"), ("+61 000", "US"), ("0061 000", "GB"),
    ("+81 110", "US"), ("+81 119", "DE"), ("+86 110", "US"), ("+86 120", "GB"),
    ("+7 112", "US"), ("+91 112", "US"), ("+55 190", "US"), ("+27 10111", "US"),
    ("10111", "ZA"), ("+52 911", "US"), ("+34 112", "US"), ("+39 113", "US"),
    ("+353 999", "US"), ("+64 111", "US"), ("111", "NZ"),
    # what no home region dials as emergency, but some trunk abroad would
    ("999", "US"), ("000", "US"), ("110", "US"), ("999", "DE"),
    # emergency prefixes that some exchanges connect (phonenumbers' prefix match)
    ("9115550100", "US"), ("+1 911 555 0100", "DE"), ("+44 999 123", "US"),
]


@pytest.mark.parametrize("destination, region", EMERGENCY)
def test_emergency_numbers_are_refused_in_every_notation(destination, region):
    assert decide(destination, region) == "emergency"


def test_emergency_cannot_be_allowed_by_any_setting():
    every_type = frozenset(config_module.NUMBER_TYPES)
    assert decide("+44 999", "US", types=every_type, regions=("GB",)) == "emergency"


def notations(region):
    """Every notation of every emergency number phonenumbers lists for `region`'s
    example: national in the region, +, 00, and 011 from the US and from GB."""
    metadata = short_metadata(region)
    example = metadata.emergency.example_number if metadata and metadata.emergency else None
    if not example:
        return []
    code = util().country_code_for_region(region)
    written = [("%s" % example, region), ("+%d %s" % (code, example), "US"),
               ("00%d %s" % (code, example), "DE"), ("011 %d %s" % (code, example), "US"),
               ("011 %d %s" % (code, example), "GB")]
    return written


def test_every_regions_emergency_number_is_refused_in_every_notation():
    """The class, from phonenumbers' own data: each region's example emergency number,
    national in its region, with +, 00 and 011 written before its calling code."""
    refused, too_short, dialled = {}, [], []
    for region in short_regions():
        for destination, home in notations(region):
            try:
                rule = decide(destination, home)
            except NotAPhoneNumber:
                # 2-digit national emergency numbers (FR 15, 17, 18...) are not 3 digits:
                # a 400 already, never dialled.
                too_short.append(destination)
                continue
            if rule is None:
                dialled.append((destination, home))
            refused[rule] = refused.get(rule, 0) + 1
    assert dialled == []
    assert set(refused) == {"emergency"}
    assert refused["emergency"] >= 4 * 200          # about 244 regions, 5 notations each
    assert all(len("".join(c for c in t if c.isdigit())) < 3 for t in too_short)


def test_emergency_max_digits_matches_the_data():
    longest = max(max(short_metadata(r).emergency.possible_length or (0,))
                  for r in short_regions() if short_metadata(r).emergency)
    assert numbers.EMERGENCY_MAX_DIGITS == longest


# --- other short service numbers ---------------------------------------------------------

SHORT = [
    ("+44 118 118", "US"), ("118118", "GB"), ("0044 118 118", "DE"), ("011 44 118 500", "US"),
    ("116 000", "DE"), ("+49 116000", "US"), ("116 111", "GB"), ("411", "US"), ("+1 411", "DE"),
    ("611", "US"), ("1571", "GB"), ("+44 100", "US"), ("+33 3949", "US"), ("3949", "FR"),
    ("+49 11833", "US"), ("+61 1223", "US"),
]


@pytest.mark.parametrize("destination, region", SHORT)
def test_short_service_numbers_are_refused_in_every_notation(destination, region):
    assert decide(destination, region) == "short_number"


def test_each_regions_example_short_number_is_refused():
    """Every region's example short code, national and after +: none is dialled."""
    dialled = []
    count = 0
    for region in short_regions():
        metadata = short_metadata(region)
        example = metadata.short_code.example_number if metadata.short_code else None
        if not example or len(example) < 3:
            continue
        code = util().country_code_for_region(region)
        for destination, home in ((example, region), ("+%d %s" % (code, example), "US")):
            try:
                rule = decide(destination, home)
            except NotAPhoneNumber:   # national 00x: 00 is read as international, a 400
                assert destination.startswith("00")
                continue
            count += 1
            if rule not in ("short_number", "emergency"):
                dialled.append((destination, home))
    assert dialled == []
    assert count > 300


# --- what is still dialled ---------------------------------------------------------------

ORDINARY = [
    ("+4915112345678", "US"), ("+33612345678", "US"), ("+447400123456", "US"),
    ("2127773456", "US"), ("12127773456", "US"), ("+61412345678", "US"),
    ("+819012345678", "US"), ("+5511961234567", "US"), ("+34612345678", "US"),
    ("+390612345678", "US"), ("+27821234567", "US"), ("020 7946 0018", "GB"),
    ("0800 111 999", "GB"),   # toll-free, though it holds 999
    ("+1 800 555 0199", "US"),  # toll-free
    # invalid numbers are dialled as sent, as before (unknown type)
    ("07911123456", "US"), ("030 1234567", "US"), ("+4990012345678", "US"),
    ("+882 3 1234 5678", "US"), ("555 0100", "US"),
]


@pytest.mark.parametrize("destination, region", ORDINARY)
def test_ordinary_numbers_are_dialled(destination, region, carrier_cache):
    assert decide(destination, region, cache=str(carrier_cache)) is None


PROBE = """
import sys, json
sys.path.insert(0, %r)
from callexchange.calls import numbers
valid = numbers.analyze('+4915112345678', 'US', sys.argv[1])
before = sorted(m for m in sys.modules if 'short' in m)
invalid = numbers.analyze('+44 999', 'US', sys.argv[1])
after = sorted(m for m in sys.modules if 'short' in m)
print(json.dumps([valid.service, before, invalid.service.kind, after]))
""" % LIB


def test_the_short_number_data_is_read_only_for_numbers_dialled_as_sent(tmp_path):
    """A valid number reads none of it; an invalid one reads the table built once from
    phonenumbers' 244 region modules (2 MB), not the modules."""
    cache = str(tmp_path / "numbers")
    runs = [json.loads(subprocess.run([sys.executable, "-c", PROBE, cache],
                                      capture_output=True, text=True, check=True).stdout)
            for _ in range(2)]
    (service, before, kind, built), (_, _, again, cached) = runs
    assert service is None and before == []
    assert kind == again == "emergency"
    assert "phonenumbers.shortnumberinfo" in built          # the first run built the table
    assert cached == []                                     # later ones only read it
    assert [n for n in os.listdir(cache) if n.startswith("short-")]


def test_the_short_number_table_answers_as_phonenumbers_does():
    """ShortNumbers' three tests against phonenumbers' shortnumberinfo, in every region,
    on the region's own example numbers, those with digits added, and random strings."""
    import random
    from phonenumbers import shortnumberinfo
    table = numbers.ShortNumbers(numbers.ShortNumbers.build())
    generator = random.Random(10)
    compared = 0
    for region in short_regions():
        metadata = short_metadata(region)
        examples = {desc.example_number for desc in (
            metadata.emergency, metadata.short_code, metadata.toll_free,
            metadata.standard_rate, metadata.premium_rate, metadata.carrier_specific,
            metadata.sms_services) if desc is not None and desc.example_number}
        samples = set(examples) | {e + "1" for e in examples} | {"0" + e for e in examples}
        samples |= {"".join(generator.choice("0123456789") for _ in range(length))
                    for length in (2, 3, 3, 4, 5, 6, 8)}
        code = util().country_code_for_region(region)
        for digits in samples:
            number = util().PhoneNumber(country_code=code, national_number=int(digits))
            zeros = len(digits) - len(str(int(digits)))
            if zeros:
                number.italian_leading_zero = True
                number.number_of_leading_zeros = zeros
            assert table.is_emergency(digits, region) == \
                shortnumberinfo.is_emergency_number(digits, region), (digits, region)
            assert table.connects_to_emergency(digits, region) == \
                shortnumberinfo.connects_to_emergency_number(digits, region), (digits, region)
            assert table.is_short_number(digits, region) == \
                shortnumberinfo.is_valid_short_number_for_region(number, region), \
                (digits, region)
            compared += 1
    assert compared > 3000


# --- costly number types -----------------------------------------------------------------

def test_default_allowed_types_refuse_exactly_the_costly_ones():
    assert DEFAULT_TYPES == frozenset(config_module.NUMBER_TYPES) - {
        "premium_rate", "shared_cost", "personal_number", "pager"}


def test_number_types_are_phonenumbers_own():
    names = {name.lower() for name in dir(util().PhoneNumberType) if name.isupper()}
    assert names == set(config_module.NUMBER_TYPES)


TYPED = [
    ("+1 900 555 0100", "premium_rate"), ("+44 909 876 5432", "premium_rate"),
    ("+49 900 1234567", "premium_rate"), ("+33 8 92 12 34 56", "premium_rate"),
    ("+44 870 123 4567", "premium_rate"), ("+34 901 123 456", "shared_cost"),
    ("+49 180 1234567", "shared_cost"), ("+61 1300 123 456", "shared_cost"),
    ("+44 70 1234 5678", "personal_number"), ("+1 500 234 5678", "personal_number"),
    ("+44 76 4012 3456", "pager"),
]


@pytest.mark.parametrize("destination, kind", TYPED)
def test_costly_types_are_refused_by_default(destination, kind, carrier_cache):
    number = analyze(destination, "US", str(carrier_cache))
    assert number.type_name == kind
    refusal = policy.check_destination(number, DEFAULT_TYPES, None)
    assert refusal.rule == "number_type"
    assert kind in refusal.reason and "[policy] allowed_types" in refusal.reason
    # ... and allowed where the operator lists the type
    assert policy.check_destination(number, DEFAULT_TYPES | {kind}, None) is None


def test_every_regions_costly_example_number_is_refused_and_others_dialled(carrier_cache):
    """phonenumbers' example number of each type in every region: costly ones refused,
    the others dialled, with the default allowed_types."""
    from phonenumbers import example_number_for_type, format_number, PhoneNumberFormat
    tally = {"refused": 0, "dialled": 0}
    wrong = []
    for region in sorted(util().SUPPORTED_REGIONS):
        for name in config_module.NUMBER_TYPES:
            if name == "unknown":
                continue
            example = example_number_for_type(region, getattr(util().PhoneNumberType,
                                                              name.upper()))
            if example is None:
                continue
            text = format_number(example, PhoneNumberFormat.E164)
            number = analyze(text, "US", str(carrier_cache))
            refusal = policy.check_destination(number, DEFAULT_TYPES, None)
            costly = number.type_name in config_module.COSTLY_TYPES
            if (refusal is not None) != costly or (refusal and refusal.rule != "number_type"):
                wrong.append((text, number.type_name, refusal))
            tally["refused" if refusal else "dialled"] += 1
    assert wrong == []
    assert tally["refused"] > 100 and tally["dialled"] > 500


# --- regions -----------------------------------------------------------------------------

def test_every_region_is_allowed_by_default(carrier_cache):
    assert decide("+1 876 555 1234", cache=str(carrier_cache)) is None  # Jamaica


@pytest.mark.parametrize("destination, rule", [
    ("+447400123456", None), ("+4915112345678", None),
    ("+447911123456", "region"),     # GG per phonenumbers: GB does not cover it
    ("+1 876 555 1234", "region"),   # Jamaica shares +1 with the US
    ("+33612345678", "region"),
    ("+882 3 1234 5678", "region"),  # non-geographic (001) unless listed
    ("+44 999", "emergency"),        # emergency first, whatever the regions
])
def test_allowed_regions_are_strict(destination, rule, carrier_cache):
    assert decide(destination, regions=("GB", "DE"), cache=str(carrier_cache)) == rule


def test_non_geographic_numbers_are_allowed_with_001(carrier_cache):
    assert decide("+870 773 111 632", regions=("001",), cache=str(carrier_cache)) is None


def test_a_keys_regions_replace_the_configs():
    assert policy.regions_for(("GB",), KeyLimits(("DE",), None, None)) == ("DE",)
    assert policy.regions_for(("GB",), NO_LIMITS) == ("GB",)
    assert policy.regions_for(None, NO_LIMITS) is None


def test_the_reason_says_whose_regions_refused(carrier_cache):
    number = analyze("+33612345678", "US", str(carrier_cache))
    mine = policy.check_destination(number, DEFAULT_TYPES, ("GB",), key_regions=True)
    config = policy.check_destination(number, DEFAULT_TYPES, ("GB",))
    assert "this key's allowed regions (GB)" in mine.reason
    assert "[policy] allowed_regions (GB)" in config.reason
    assert mine.error.startswith("Refused by policy (region): destination region FR")


# --- counts ------------------------------------------------------------------------------

def test_no_limits_never_refuse():
    assert policy.check_rate(NO_LIMITS, [1.0] * 5000, 10 ** 7, 2.0) is None


def test_the_minute_slides():
    limits = KeyLimits(None, 3, None)
    calls = [0.0, 20.0, 40.0]
    assert policy.check_rate(limits, calls, 3, 59.9).rule == "rate_limit"
    assert policy.check_rate(limits, calls, 3, 60.0) is None          # the call at 0 left
    assert policy.check_rate(limits, calls + [60.0], 4, 79.9).rule == "rate_limit"
    assert policy.check_rate(limits, calls + [60.0], 4, 80.0) is None


def test_the_wait_is_until_a_slot_frees():
    limits = KeyLimits(None, 2, None)
    refusal = policy.check_rate(limits, [10.0, 50.0, 5.0], 3, 55.0)   # 5.0 already left
    assert refusal.reason.endswith("the next is allowed in 15 s")


def test_the_daily_cap():
    limits = KeyLimits(None, None, 2000)
    assert policy.check_rate(limits, [], 1999, 0.0) is None
    refusal = policy.check_rate(limits, [], 2000, 0.0)
    assert refusal.rule == "daily_cap" and "2000 calls for today" in refusal.reason


def test_rules_are_named_in_the_error():
    for rule in policy.RULES:
        assert policy.Refusal(rule, "x").error == "Refused by policy (%s): x" % rule
