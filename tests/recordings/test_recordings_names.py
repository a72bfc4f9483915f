"""Reading FreePBX recording names from the right, comparing numbers, checking the
request fields and building the legacy reply: pure functions, tested with literals."""

import pytest
from hypothesis import given, strategies as st

from callexchange.errors import ApiError
from callexchange.recordings.lookup import MAX_LIMIT, read_query, recording_entry
from callexchange.recordings.names import (index_key, number_digits, numbers_match, parse_name,
                                           recording_url)

LEGACY = "out-12127773456-unknown-20240703-203742-1720039056.22191.wav"


def fields(name):
    parsed = parse_name(name)
    return (parsed.prefix, parsed.dst, parsed.src, parsed.date, parsed.time,
            parsed.uniqueid, parsed.extension)


# --- names --------------------------------------------------------------------------------

def test_legacy_sample_name_is_read_from_the_right():
    assert fields(LEGACY) == ("out", "12127773456", "unknown", "20240703", "203742",
                              "1720039056.22191", "wav")
    assert parse_name(LEGACY).numbers == ["12127773456"]


@pytest.mark.parametrize("prefix", ["out", "in", "exten", "q", "rg", "external", "ondemand",
                                    "force", "conf"])
def test_every_freepbx_prefix(prefix):
    name = "%s-600-12127773456-20240703-101010-1720039056.1.wav" % prefix
    assert fields(name)[:3] == (prefix, "600", "12127773456")


@pytest.mark.parametrize("extension", ["wav", "WAV", "Wav", "gsm", "GSM", "mp3", "MP3",
                                       "wav49", "WAV49"])
def test_audio_extensions_in_any_case(extension):
    parsed = parse_name("in-2001-12127773456-20240703-101010-1720039056.22.%s" % extension)
    assert parsed.extension == extension.lower()
    assert parsed.uniqueid == "1720039056.22"


@pytest.mark.parametrize("name", ["out-1-2-20240703-101010-1.2.txt", "out-1-2.wav.part",
                                  "README", ".wav", "out-12127773456-x-20240703-101010-1.2"])
def test_other_files_are_no_recordings(name):
    assert parse_name(name) is None


def test_the_extension_is_after_the_last_dot_so_the_uniqueid_keeps_its_dot():
    assert fields("out-5551234-200-20240101-000000-1704067200.5.mp3")[5:] == \
        ("1704067200.5", "mp3")


def test_a_dash_in_the_src_does_not_shift_date_time_or_uniqueid():
    name = "out-12127773456-212-777-3456-20240703-203742-1720039056.22191.wav"
    assert fields(name) == ("out", "12127773456", "212-777-3456", "20240703", "203742",
                            "1720039056.22191", "wav")
    # More than two middle fields: every split is a candidate, the likely one first.
    assert parse_name(name).numbers[:2] == ["12127773456", "2127773456"]
    assert set(parse_name(name).numbers) == {"12127773456", "2127773456", "12127773456212",
                                             "7773456", "12127773456212777", "3456"}


def test_a_dash_in_the_dst_before_a_wordy_src():
    name = "out-1-212-777-3456-unknown-20240703-203742-1720039056.22191.wav"
    assert fields(name)[:3] == ("out", "1-212-777-3456", "unknown")
    assert parse_name(name).numbers == ["12127773456"]


def test_a_plus_starts_the_src_when_both_numbers_hold_dashes():
    name = "in-49-30-1234567-+1-212-777-3456-20240703-203742-1720039056.22191.wav"
    assert fields(name)[1:3] == ("49-30-1234567", "+1-212-777-3456")
    # A `+` only starts a number: the one split is unambiguous, no fragments.
    assert parse_name(name).numbers == ["49301234567", "12127773456"]


def matches(phone, name):
    return any(numbers_match(phone, digits) for digits in parse_name(name).numbers)


DASHED_DST = "out-212-777-3456-2001-20240706-121212-1720300000.4.wav"
DASHED_DST_PLUS = "out-+1-212-777-3456-2003-20240706-121213-1720300001.5.wav"
DASHED_SRC = "out-2127773456-20-01-20240706-121214-1720300002.6.wav"
DASHED_PREFIX = "from-internal-2001-12127773456-20240706-121215-1720300003.7.wav"


@pytest.mark.parametrize("name, phones", [
    (DASHED_DST, ["12127773456", "2127773456", "7773456", "2001"]),
    (DASHED_DST_PLUS, ["12127773456", "2127773456", "2003"]),
    (DASHED_SRC, ["2127773456", "12127773456", "2001"]),
    (DASHED_PREFIX, ["2001", "12127773456", "2127773456"]),
])
def test_a_dash_in_a_number_or_prefix_still_finds_both_numbers(name, phones):
    for phone in phones:
        assert matches(phone, name), phone
    for phone in ["2002", "12127773457", "3127773456", "773456", "77734"]:
        assert not matches(phone, name), phone


def test_a_dashed_dst_keeps_date_time_uniqueid_and_every_split_is_a_candidate():
    assert fields(DASHED_DST)[3:] == ("20240706", "121212", "1720300000.4", "wav")
    assert fields(DASHED_DST_PLUS)[3:] == ("20240706", "121213", "1720300001.5", "wav")
    assert fields(DASHED_PREFIX)[:3] == ("from-internal", "2001", "12127773456")
    assert set(parse_name(DASHED_DST).numbers) == {"212", "77734562001", "212777",
                                                   "34562001", "2127773456", "2001"}


def test_splits_no_freepbx_name_has_give_no_fragments():
    # A word at the end is the src: the dst is all the rest, as before.
    assert parse_name("out-1-212-777-3456-unknown-20240703-203742-1.2.wav").numbers == \
        ["12127773456"]
    # Digits and letters mixed on one side are no split; the likely one still counts.
    assert parse_name("out-2001-John-Smith-20240703-203742-1.2.wav").numbers == ["2001"]
    # Two middle fields are unambiguous: no extra candidates.
    assert parse_name("out-2127773456-2001-20240703-203742-1.2.wav").numbers == \
        ["2127773456", "2001"]


@pytest.mark.parametrize("name", [
    "out-912127773456999-2001-20240706-121212-1.2.wav",
    "out-2001-912127773456999-20240706-121212-1.2.wav",
    "out-9121-2777-3456999-2001-20240706-121212-1.2.wav",
    "out-2001-9121-277-734-56999-20240706-121212-1.2.wav",
])
def test_a_number_inside_a_longer_one_never_matches_even_with_dashes(name):
    for phone in ["12127773456", "2127773456", "7773456"]:
        assert not matches(phone, name), (phone, parse_name(name).numbers)


def test_a_prefix_holding_a_dash():
    name = "from-queue-600-12127773456-20240703-203742-1720039056.22191.wav"
    assert fields(name)[:3] == ("from-queue", "600", "12127773456")


def test_systemname_uniqueid_keeps_its_dash():
    name = "out-12127773456-2001-20240703-203742-pbx-eu1-1720039056.22191.wav"
    assert fields(name)[3:6] == ("20240703", "203742", "pbx-eu1-1720039056.22191")


def test_a_number_that_looks_like_a_date_does_not_fool_the_parser():
    # The dst is 8 digits that form a date and the src 6 that form a time: the rightmost
    # pair is the real one.
    name = "out-20240101-120000-20240703-203742-1720039056.22191.wav"
    assert fields(name) == ("out", "20240101", "120000", "20240703", "203742",
                            "1720039056.22191", "wav")


def test_names_without_time_or_uniqueid():
    assert fields("out-12127773456-2001-1720039056.22191.wav") == \
        ("out", "12127773456", "2001", "", "", "1720039056.22191", "wav")
    assert fields("out-12127773456-2001.gsm") == ("out", "12127773456", "2001", "", "", "", "gsm")
    assert fields("1720039056.22191.wav") == ("", "", "", "", "", "1720039056.22191", "wav")
    assert parse_name("1720039056.22191.wav").numbers == []


def test_an_invalid_date_or_time_is_not_taken_for_one():
    parsed = parse_name("out-12127773456-2001-20241332-253000-1720039056.2.wav")
    assert parsed.date == "" and parsed.time == ""


def test_words_are_no_numbers_and_dst_equal_to_src_counts_once():
    assert parse_name("out-anonymous-unknown-20240703-203742-1.2.wav").numbers == []
    assert parse_name("out-2001-2001-20240703-203742-1.2.wav").numbers == ["2001"]
    assert parse_name("out-SIP/2001-x-20240703-203742-1.2.wav").numbers == []


# --- numbers ------------------------------------------------------------------------------

@pytest.mark.parametrize("text, digits", [
    ("12127773456", "12127773456"), ("+1 (212) 777-3456", "12127773456"),
    ("0012127773456", "12127773456"), ("+0049 30 1234", "49301234"), ("212.777.3456", "2127773456"),
    ("2001", "2001"), ("unknown", None), ("", None), ("+", None), ("00", None),
    ("12a4", None), ("1" * 33, None),
])
def test_number_digits(text, digits):
    assert number_digits(text) == digits


@pytest.mark.parametrize("phone, stored, expected", [
    ("12127773456", "12127773456", True),
    ("12127773456", "2127773456", True),       # national finds international and back
    ("2127773456", "12127773456", True),
    ("7773456", "12127773456", True),          # 7 digits is the minimum suffix
    ("773456", "12127773456", False),          # 6 is not
    ("2001", "2001", True),                    # short numbers: only exactly
    ("2001", "12001", False),
    ("12001", "2001", False),
    ("12127773456", "912127773456999", False),  # never a substring
    ("12127773456", "121277734567", False),
    ("12127773456", "12127773457", False),
])
def test_numbers_match(phone, stored, expected):
    assert numbers_match(phone, stored) is expected


digits = st.text(alphabet="0123456789", min_size=1, max_size=20)


@given(digits, digits)
def test_numbers_that_match_always_share_their_index_key(a, b):
    if numbers_match(a, b):
        assert index_key(a) == index_key(b)


@given(digits, digits)
def test_matching_is_symmetric_and_never_a_mere_substring(a, b):
    assert numbers_match(a, b) == numbers_match(b, a)
    if numbers_match(a, b) and a != b:
        longer, shorter = (a, b) if len(a) > len(b) else (b, a)
        assert longer.endswith(shorter) and len(shorter) >= 7


# --- request fields -----------------------------------------------------------------------

def test_a_full_query():
    query = read_query({"phone": "+1 212 777 3456", "from": "2024-07-01", "to": "2024-07-31",
                        "limit": "25", "uniqueid": "1720039056.22191"})
    assert (query.phone, query.first_day, query.last_day, query.limit, query.uniqueid) == \
        ("12127773456", "20240701", "20240731", 25, "1720039056.22191")


def test_defaults():
    query = read_query({"phone": 12127773456})
    assert (query.first_day, query.last_day, query.limit, query.uniqueid) == \
        (None, None, MAX_LIMIT, None)


def refused(params):
    with pytest.raises(ApiError) as caught:
        read_query(params)
    assert caught.value.status == 400
    return caught.value.extra["field"]


@pytest.mark.parametrize("phone", ["12", "1" * 21, "12a45678", "call me", "+", "0012",
                                   "2001\r\nAction: Originate", "12127773456\x00", True,
                                   {"n": 1}, ["1"], 1.5])
def test_bad_phones_are_400_naming_phone(phone):
    assert refused({"phone": phone}) == "phone"


@pytest.mark.parametrize("field, value", [
    ("from", "2024-7-1"), ("from", "2024-02-30"), ("to", "20240701"), ("to", "2024-13-01"),
    ("from", "../../etc"), ("to", "2024-07-01\n"), ("limit", "0"), ("limit", "-1"),
    ("limit", MAX_LIMIT + 1), ("limit", "ten"), ("limit", 2.5), ("limit", True),
    ("uniqueid", "*"), ("uniqueid", "1720039056"), ("uniqueid", "a b-1.2"),
])
def test_bad_fields_are_400_naming_the_field(field, value):
    assert refused({"phone": "12127773456", field: value}) == field


def test_from_after_to_is_refused():
    assert refused({"phone": "12127773456", "from": "2024-07-02", "to": "2024-07-01"}) == "from"


def test_limit_accepts_numbers_and_numeric_strings():
    assert read_query({"phone": "2001", "limit": 1}).limit == 1
    assert read_query({"phone": "2001", "limit": 10.0}).limit == 10
    assert read_query({"phone": "2001", "limit": " 1000 "}).limit == 1000
    assert read_query({"phone": "2001", "limit": ""}).limit == MAX_LIMIT


def test_systemname_uniqueid_is_accepted():
    assert read_query({"phone": "2001", "uniqueid": "pbx-1-1720039056.22191"}).uniqueid == \
        "pbx-1-1720039056.22191"


# --- the reply ----------------------------------------------------------------------------

def test_entry_has_the_legacy_fields_with_the_day_folder_date():
    entry = recording_entry("https://pbx.callexchange.net/wav-files/", "20240708",
                            "out-12127773456-unknown-20240703-201330-1720037603.22173.wav",
                            "20:13:30", 918, "1720037603.22173")
    assert entry == {
        "url": "https://pbx.callexchange.net/wav-files/2024/07/08/"
               "out-12127773456-unknown-20240703-201330-1720037603.22173.wav",
        "time": "20:13:30", "duration": 918, "date": "08/07/2024",
        "uniqueid": "1720037603.22173"}
    assert list(entry) == ["url", "time", "duration", "date", "uniqueid"]


def test_url_is_percent_encoded_and_defaults_to_the_wav_files_alias():
    entry = recording_entry("", "20240708", "out-1 2#3%.wav", "00:00:00", 0, "")
    assert entry["url"] == "/wav-files/2024/07/08/out-1%202%233%25.wav"


def test_recording_url_quotes_what_a_url_cannot_hold_the_same_for_lookups_and_webhooks():
    assert recording_url("https://x/wav-files/", "2024/01/02/out-1-a#b-x.wav") == \
        "https://x/wav-files/2024/01/02/out-1-a%23b-x.wav"
    assert recording_url("", "2024/01/02/a.wav") == "/wav-files/2024/01/02/a.wav"
    assert recording_url("https://x", "2024/01/02/out-+4930-2001.wav") == \
        "https://x/2024/01/02/out-+4930-2001.wav"
    assert recording_url("https://x", "") == ""
    entry = recording_entry("https://x", "20240102", "out-1-a#b-x.wav", "00:00:00", 0, "")
    assert entry["url"] == recording_url("https://x", "2024/01/02/out-1-a#b-x.wav")
