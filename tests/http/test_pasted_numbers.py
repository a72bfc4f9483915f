"""A number as a CRM pastes it (no-break spaces, Unicode dashes, invisible direction
marks), in a JSON body and in a form, on both endpoints in process: the call dials its
digits, the lookup finds its recordings. callexchange.phone is the one reader."""

import json

import pytest

from call_gateway import call

SAMPLES = ["1\u00a0212\u00a0777\u00a03456", "+1\u202f212\u202f777\u202f3456",
           "1\u2013212\u2013777\u20133456", "\u202a+1 (212) 777-3456\u202c",
           "\u200e+1\t212\t777\t3456"]


@pytest.mark.parametrize("number", SAMPLES)
def test_a_pasted_destination_dials_its_digits(gateway, number):
    reply = gateway.post(call(number)).json
    assert (reply["icon"], reply["phone_valid"]) == ("US", "yes")
    assert gateway.originates()[0]["Exten"] == "12127773456"


@pytest.mark.parametrize("number", SAMPLES)
def test_a_pasted_phone_finds_its_recordings(recordings_gateway, number):
    url = recordings_gateway.recording("20240703", uniqueid="1720000000.5")
    assert [entry["url"] for entry in recordings_gateway.post({"phone": number})] == [url]
    assert [entry["url"] for entry in recordings_gateway.get({"phone": number})] == [url]


def test_the_same_pasted_number_in_a_utf8_form_on_both_endpoints(gateway, recordings_gateway):
    url = recordings_gateway.recording("20240703", uniqueid="1720000000.6")
    pasted = "%E2%80%AA%2B1%C2%A0212%C2%A0777%E2%80%933456%E2%80%AC"  # U+202A +1 nbsp ... U+202C
    gateway.post("extension=2001&destination=" + pasted,
                 content_type="application/x-www-form-urlencoded")
    assert gateway.originates()[0]["Exten"] == "12127773456"
    found = recordings_gateway.post("phone=" + pasted,
                                    content_type="application/x-www-form-urlencoded")
    assert [entry["url"] for entry in found] == [url]


def test_a_number_with_letters_is_refused_by_both_naming_the_field(gateway,
                                                                   recordings_gateway):
    assert gateway.post(call("1\u00a0800\u00a0FLOWERS"), status=400).json["field"] == \
        "destination"
    assert recordings_gateway.post(json.dumps({"phone": "1\u00a0800\u00a0FLOWERS"}),
                                   status=400)["field"] == "phone"
    assert gateway.sandbox.actions == []
