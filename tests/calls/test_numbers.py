"""numbers.py: reading a destination, phonenumbers' answers, the carrier shards and the
lazy import path."""

import json
import os
import subprocess
import sys
import threading

import pytest
from paths import LIB

from callexchange.calls import numbers
from callexchange.calls.numbers import analyze, NotAPhoneNumber, split_destination



@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("carrier-cache"))
    analyze("+4915112345678", "US", directory)   # builds the shards once
    return directory


# --- split_destination -------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("+49 (30) 901820", ("4930901820", True)),
    ("0049 30 901820", ("4930901820", True)),
    ("004915112345678", ("4915112345678", True)),
    ("212-777-3456", ("2127773456", False)),
    ("12127773456", ("12127773456", False)),
    (" +1.212.777.3456 ", ("12127773456", True)),
    ("(212) 777/3456", ("2127773456", False)),
    ("212\u00a0777\u00a03456", ("2127773456", False)),
    ("030 901820", ("030901820", False)),
    ("+0049 30", ("004930", True)),       # '+' already says international
    ("123", ("123", False)),
    ("1" * 17, ("1" * 17, False)),
])
def test_split_destination(text, expected):
    assert split_destination(text) == expected


@pytest.mark.parametrize("text", [
    "", " ", "+", "12", "00 12", "1" * 18, "abc", "not a number", "1-800-FLOWERS",
    "+49+30", "49#30901820", "4930901820;ext=1", "\uff12\uff11\uff12\uff17\uff17\uff17",
    "\u0662\u0661\u0662\u0667\u0667\u0667\u0663\u0664\u0665\u0666",
])
def test_split_destination_refuses_what_is_no_phone_number(text):
    with pytest.raises(NotAPhoneNumber):
        split_destination(text)


def test_not_a_phone_number_is_a_value_error():
    assert issubclass(NotAPhoneNumber, ValueError)


# --- analyze -----------------------------------------------------------------------------

@pytest.mark.parametrize("destination, region, expected", [
    ("12127773456", "US", ("12127773456", "US", 1, True)),
    ("+1 212 777 3456", "DE", ("12127773456", "US", 1, True)),
    ("2127773456", "US", ("12127773456", "US", 1, True)),           # national US
    ("+4915112345678", "US", ("4915112345678", "DE", 49, True)),
    ("004915112345678", "US", ("4915112345678", "DE", 49, True)),
    ("4930901820", "US", ("4930901820", "DE", 49, True)),            # international first
    ("030 901820", "DE", ("4930901820", "DE", 49, True)),            # national DE
    ("+44 20 7946 0018", "US", ("442079460018", "GB", 44, True)),
    ("020 7946 0018", "GB", ("442079460018", "GB", 44, True)),
    ("+80012345678", "US", ("80012345678", "001", 800, True)),       # non-geographic
])
def test_analyze(destination, region, expected, cache_dir):
    info = analyze(destination, region, cache_dir)
    assert (info.dial_digits, info.region, info.country_code, info.valid) == expected
    assert type(info.country_code) is int


@pytest.mark.parametrize("destination", ["12345", "+447700900123", "1212777345"])
def test_invalid_but_parseable_is_valid_false_and_has_no_carrier(destination, cache_dir):
    info = analyze(destination, "US", cache_dir)
    assert info.valid is False
    assert info.carrier == ""


@pytest.mark.parametrize("destination", ["abc", "not a number", "+999123456", "12",
                                         "1-800-FLOWERS"])
def test_analyze_refuses_what_is_no_phone_number(destination, cache_dir):
    with pytest.raises(NotAPhoneNumber):
        analyze(destination, "US", cache_dir)


@pytest.mark.parametrize("e164", ["+4915112345678", "+4917612345678", "+33612345678",
                                  "+819012345678", "+61412345678", "+447911123456",
                                  "+12127773456", "+4930901820", "+34612345678"])
def test_carrier_is_what_phonenumbers_names(e164, cache_dir):
    import phonenumbers
    from phonenumbers import carrier

    expected = carrier.name_for_number(phonenumbers.parse(e164), "en")
    assert analyze(e164, "US", cache_dir).carrier == expected


def test_known_carrier_for_a_german_mobile(cache_dir):
    assert analyze("+4915112345678", "US", cache_dir).carrier == "T-Mobile"


def test_carrier_without_a_cache_dir_still_answers():
    assert analyze("+4915112345678", "US", None).carrier == "T-Mobile"


def test_torn_shard_is_rebuilt(tmp_path):
    analyze("+4915112345678", "US", str(tmp_path))
    [version_dir] = os.listdir(tmp_path)
    shard = tmp_path / version_dir / "49.json"
    shard.write_text('{"4915": "T-Mob')
    assert analyze("+4915112345678", "US", str(tmp_path)).carrier == "T-Mobile"
    assert "T-Mobile" in json.loads(shard.read_text()).values()


def test_unwritable_cache_dir_costs_speed_not_answers(tmp_path):
    blocked = tmp_path / "file-not-dir"
    blocked.write_text("")
    assert analyze("+4915112345678", "US", str(blocked)).carrier == "T-Mobile"


def test_shards_written_by_concurrent_threads_are_whole_and_leave_no_temp_files(tmp_path):
    shards = {49: {"": 4, "4915": "T-Mobile"}, 33: {"": 3, "336": "SFR"}}
    failures = []

    def write():
        try:
            numbers.write_carrier_shards(shards, str(tmp_path))
        except Exception as error:  # asserted below
            failures.append(error)

    threads = [threading.Thread(target=write) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert not [name for name in os.listdir(tmp_path) if name.endswith(".tmp")]
    assert json.loads((tmp_path / "49.json").read_text()) == shards[49]
    assert json.loads((tmp_path / "1.json").read_text()) == {"": 0}


COLD_START_PROBE = r"""
import sys
sys.path.insert(0, sys.argv[1])
from callexchange.calls import numbers
build = numbers.build_carrier_shards

def counted():
    with open(sys.argv[3], "a") as log:
        log.write("built\n")
    return build()

numbers.build_carrier_shards = counted
numbers.known_region("US")  # phonenumbers loaded: only the shards are left to do
print("ready", flush=True)
sys.stdin.read()  # all start together, once every probe is ready
print(numbers.analyze("+4915112345678", "US", sys.argv[2]).carrier)
"""


def test_a_cold_start_builds_the_shards_once_while_concurrent_calls_wait(tmp_path):
    # 20 CGIs at once on a fresh state dir each built every shard (seconds of CPU each),
    # and the calls ran out of time: one builds, the others read what it wrote.
    cache, log = tmp_path / "cache", tmp_path / "built.log"
    log.write_text("")
    probes = [subprocess.Popen([sys.executable, "-c", COLD_START_PROBE, LIB, str(cache), str(log)],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
              for _ in range(6)]
    for probe in probes:
        assert probe.stdout.readline() == "ready\n"
    for probe in probes:
        probe.stdin.close()
    answers = [probe.stdout.read().strip() for probe in probes]
    assert [probe.wait(timeout=120) for probe in probes] == [0] * 6
    assert answers == ["T-Mobile"] * 6
    assert log.read_text() == "built\n"


# --- the lazy import path ----------------------------------------------------------------

LAZY_PROBE = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
from callexchange.calls import numbers
info = numbers.analyze("+4915112345678", "US", sys.argv[2])
loaded = sorted(m for m in sys.modules if m.startswith("phonenumbers"))
import phonenumbers
e164 = phonenumbers.format_number(phonenumbers.parse("+4915112345678"),
                                  phonenumbers.PhoneNumberFormat.E164)
print(json.dumps({"carrier": info.carrier, "loaded": loaded, "e164": e164}))
"""


def test_analyze_loads_neither_the_formatters_nor_the_carrier_table_when_cached(cache_dir):
    result = subprocess.run([sys.executable, "-c", LAZY_PROBE, LIB, cache_dir],
                            capture_output=True, text=True, timeout=60, check=True)
    report = json.loads(result.stdout)
    assert report["carrier"] == "T-Mobile"
    loaded = report["loaded"]
    assert "phonenumbers.phonenumberutil" in loaded
    for heavy in ("phonenumbers.asyoutypeformatter", "phonenumbers.carrierdata",
                  "phonenumbers.carrier", "phonenumbers.geocoder",
                  "phonenumbers.phonenumbermatcher"):
        assert heavy not in loaded, heavy
    # ... and whoever imports phonenumbers afterwards still gets the whole library
    assert report["e164"] == "+4915112345678"
    assert not [m for m in loaded if ".alt_format_" in m]


FORMATS_PROBE = r"""
import json, sys
if sys.argv[2] == "lazy":
    sys.path.insert(0, sys.argv[1])
    from callexchange.calls import numbers
    numbers.analyze("+4930901820", "US")
import phonenumbers
from phonenumbers.data import _ALT_NUMBER_FORMATS
found = {code: [[f.pattern, f.format, list(f.leading_digits_pattern)] for f in formats]
         for code, formats in _ALT_NUMBER_FORMATS.items()}
text = "Call 030 1234567, +49 30 901820 or 0176 12345678 (Mo-Fr)"
matched = [m.raw_string for m in phonenumbers.PhoneNumberMatcher(
    text, "DE", leniency=phonenumbers.Leniency.EXACT_GROUPING)]
print(json.dumps({"formats": found, "matched": matched}))
"""


def test_the_alternate_formats_read_on_first_use_are_phonenumbers_own():
    def probe(how):
        result = subprocess.run([sys.executable, "-c", FORMATS_PROBE, LIB, how],
                                capture_output=True, text=True, timeout=60, check=True)
        return json.loads(result.stdout)

    lazy, whole = probe("lazy"), probe("plain import")
    assert len(whole["formats"]) >= 40 and all(whole["formats"].values())
    assert lazy == whole


@pytest.mark.parametrize("destination, dialled", [("07911123456", "07911123456"),
                                                  ("030 1234567", "0301234567")])
def test_a_number_no_reading_makes_valid_is_dialled_as_sent(tmp_path, destination, dialled):
    info = analyze(destination, "US", str(tmp_path))
    assert info.valid is False
    assert info.dial_digits == dialled  # no guessed "1" in front


@pytest.mark.parametrize("destination, region", [("911", "US"), ("112", "DE"), ("999", "GB")])
def test_emergency_numbers_are_named_for_the_policy(tmp_path, destination, region):
    # calls/policy.py refuses them (403); tests/calls/test_policy.py has every notation.
    info = analyze(destination, region, str(tmp_path))
    assert (info.service.kind, info.service.region, info.service.digits) == \
        ("emergency", region, destination)


def test_000_is_australias_emergency_number_not_00_and_a_digit(tmp_path):
    info = analyze("000", "AU", str(tmp_path))
    assert info.dial_digits == "000"
    assert info.service.kind == "emergency"


def test_numbers_types_are_named(carrier_cache):
    assert analyze("+19005550100", "US", str(carrier_cache)).type_name == "premium_rate"
    assert analyze("+4915112345678", "US", str(carrier_cache)).type_name == "mobile"
    assert analyze("07911123456", "US", str(carrier_cache)).type_name == "unknown"


# analyze() takes a reading's validity from its type (one pattern scan instead of
# is_valid_number's second one): the two must agree on every number, the way
# phonenumbers itself decides validity.
from hypothesis import given, settings, strategies as st  # noqa: E402

_CALLING_CODES = ["1", "44", "49", "33", "39", "34", "61", "81", "86", "91", "7", "55",
                  "52", "27", "234", "971", "800", "808", "870", "882", "979"]


@settings(max_examples=600, deadline=None)
@given(code=st.sampled_from(_CALLING_CODES + [""]),
       rest=st.text("0123456789", min_size=3, max_size=13),
       region=st.sampled_from(["US", "GB", "DE", "FR", "AU", "IN"]))
def test_valid_and_type_are_phonenumbers_own_verdicts(code, rest, region):
    import phonenumbers

    destination = code + rest
    try:
        info = analyze(destination, region)
    except NotAPhoneNumber:
        return
    digits, explicit = split_destination(destination)
    readings = [("+" + digits, None)] + ([] if explicit else [(digits, region)])
    expected = None
    for text, where in readings:
        try:
            number = phonenumbers.parse(text, where)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(number):
            expected = number
            break
        expected = expected or number
    assert expected is not None
    assert info.valid == phonenumbers.is_valid_number(expected)
    assert info.country_code == expected.country_code
    if info.valid:
        assert info.type == phonenumbers.number_type(expected)
        assert info.dial_digits == "%d%s" % (
            expected.country_code, phonenumbers.national_significant_number(expected))
