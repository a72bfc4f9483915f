"""callexchange.phone: the one reading of a phone number's characters, and both endpoints
(asteriskapi.pl's destination, find_phone_files' phone) and their documented patterns
(docs/openapi.yaml) agreeing with it, character for character."""

import json
import re

import pytest

from callexchange import phone
from callexchange.calls.numbers import NotAPhoneNumber, split_destination
from callexchange.errors import ApiError
from callexchange.phone import read_number
from callexchange.recordings.lookup import phone_field
from paths import REPO

# How CRMs, spreadsheets, word processors and chat apps hand a number over.
PASTED = [
    ("212\u00a0777\u00a03456", "2127773456", False),           # no-break spaces
    ("+33\u202f1\u202f23\u202f45\u202f67\u202f89", "33123456789", True),  # narrow nbsp (fr)
    ("212\u2009777\u20093456", "2127773456", False),           # thin spaces
    ("212\u2013777\u20133456", "2127773456", False),           # en dashes (autocorrect)
    ("212\u2212777\u22123456", "2127773456", False),           # minus signs
    ("212\u2011777\u20113456", "2127773456", False),           # non-breaking hyphens
    ("\u202a+1 212-777-3456\u202c", "12127773456", True),      # a chat app's embedding
    ("\u200e+49 30 901820", "4930901820", True),              # a left-to-right mark
    ("\ufeff2127773456", "2127773456", False),                 # a byte order mark
    ("212\u200b777\u200b3456", "2127773456", False),           # zero-width spaces
    ("212\t777\t3456", "2127773456", False),                  # a spreadsheet's tabs
    (" (212) 777/3456 ", "2127773456", False),
]
NOT_NUMBERS = ["", " ", "+", "\u00a0", "1-800-FLOWERS", "+49+30", "49#30901820",
               "4930901820;ext=1", "212_777_3456", "212*7773456", "\uff12\uff11\uff12",
               "\u0662\u0661\u0662\u0667\u0667\u0667\u0663", "2\u00b2127773456",
               "212\u30007773456", "tel:+12127773456", "++12127773456"]


def schemas():
    document = json.loads((REPO / "docs" / "openapi.yaml").read_text(encoding="utf-8"))
    found = document["components"]["schemas"]
    return {"destination": [found["CallRequest"]["properties"]["destination"]["oneOf"][0],
                            found["CallForm"]["properties"]["destination"]],
            "phone": [found["RecordingPhone"]["oneOf"][0],
                      found["RecordingsForm"]["properties"]["phone"]]}


PATTERNS = {name: [re.compile(schema["pattern"]) for schema in found]
            for name, found in schemas().items()}
# The query string's phone: a stricter subset (ASCII, one separator between digits).
QUERY_PHONE = re.compile(json.loads((REPO / "docs" / "openapi.yaml").read_text(
    encoding="utf-8"))["components"]["parameters"]["Recordings_phone"]["schema"]["pattern"])


def call_endpoint_reads(text):
    try:
        return split_destination(text)
    except NotAPhoneNumber:
        return None


def recordings_endpoint_reads(text):
    try:
        return phone_field({"phone": text})
    except ApiError:
        return None


def documented(name, text):
    verdicts = {bool(pattern.search(text)) for pattern in PATTERNS[name]}
    assert len(verdicts) == 1, "the JSON and the form pattern of %s disagree" % name
    return verdicts.pop()


@pytest.mark.parametrize("text, digits, plus", PASTED)
def test_pasted_numbers_read_alike_on_both_endpoints_and_in_the_contract(text, digits, plus):
    assert read_number(text) == (digits, plus)
    assert call_endpoint_reads(text) == (digits, plus)
    assert recordings_endpoint_reads(text) == digits
    assert documented("destination", text) and documented("phone", text)


@pytest.mark.parametrize("text", NOT_NUMBERS)
def test_what_is_no_number_is_refused_alike_on_both_endpoints(text):
    assert read_number(text) is None
    assert call_endpoint_reads(text) is None and recordings_endpoint_reads(text) is None
    assert not documented("destination", text) and not documented("phone", text)


def test_every_character_between_digits_is_taken_or_refused_alike_everywhere():
    # Every character of the Basic Multilingual Plane, between the digits of a number:
    # the reader, both endpoints and all four documented patterns say the same.
    disagree = []
    for code in range(0x10000):
        char = chr(code)
        if char in "\r\n\0" or 0xD800 <= code <= 0xDFFF or "0" <= char <= "9":
            continue
        text = "212" + char + "7773456"
        taken = char in phone.SEPARATORS
        verdicts = (read_number(text) is not None, call_endpoint_reads(text) is not None,
                    recordings_endpoint_reads(text) is not None,
                    documented("destination", text), documented("phone", text))
        if verdicts != (taken,) * 5 or (QUERY_PHONE.search(text) and not taken):
            disagree.append((hex(code), verdicts))
    assert disagree == []


@pytest.mark.parametrize("text, valid", [
    ("12127773456", True), ("+1 212-777-3456", True), ("+(212)777.3456", True),
    ("\t0(04465", True), ("0(04465+0(", False), ("8.7040 98-9+", False), ("++12127773456", False),
    ("1  2127773456", False), ("212\u00a07773456", False),
])
def test_the_query_strings_phone_pattern_is_a_subset_of_what_is_read(text, valid):
    assert bool(QUERY_PHONE.search(text)) is valid
    if valid:
        assert recordings_endpoint_reads(text) is not None


def test_the_leading_00_keeps_each_endpoints_meaning():
    # Dialling: 00 is the international prefix unless a 0 follows (000 is an emergency
    # number); matching recordings: dropped, as in the names Asterisk writes.
    assert split_destination("\u00a000\u00a049 30 901820") == ("4930901820", True)
    assert split_destination("000") == ("000", False)
    assert phone_field({"phone": "\u00a000\u00a049 30 901820"}) == "4930901820"

