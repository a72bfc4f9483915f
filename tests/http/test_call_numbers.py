"""The destination's number intelligence: how a number is read (national, +, 00,
spaced), what the reply says of it (icon, country code, carrier, phone_valid) and
which caller ID pool its region picks."""

from call_gateway import DE_POOL, call, variables


def test_german_mobile_gets_de_icon_calling_code_carrier_and_de_pool(gateway):
    body = gateway.post(call("+49 151 12345678")).json

    assert (body["icon"], body["country_code"], body["carrier"]) == ("DE", 49, "T-Mobile")
    assert body["phone_valid"] == "yes"
    assert body["caller_id"] == DE_POOL[0]
    [originate] = gateway.originates()
    assert originate["Exten"] == "4915112345678"


def test_00_prefix_is_read_as_international(gateway):
    body = gateway.post(call("004915112345678")).json
    assert (body["icon"], body["country_code"]) == ("DE", 49)
    assert gateway.originates()[0]["Exten"] == "4915112345678"


def test_national_us_number_is_dialled_in_e164_digits(gateway):
    body = gateway.post(call("2127773456")).json

    assert (body["icon"], body["country_code"], body["phone_valid"]) == ("US", 1, "yes")
    [originate] = gateway.originates()
    assert originate["Exten"] == "12127773456"
    assert variables(originate)["__CX_DESTINATION"] == "12127773456"


def test_invalid_but_parseable_number_is_dialled_with_phone_valid_no(gateway):
    body = gateway.post(call("030 1234567")).json   # no reading is valid, nor short
    assert body["phone_valid"] == "no"
    assert len(gateway.originates()) == 1


def test_destination_that_is_no_phone_number_is_400(gateway):
    body = gateway.post(call("not a number"), status=400).json
    assert body["field"] == "destination"
    assert body["message"] == "We fail on making a call. caller : 2001, callee : not a number"
    assert gateway.sandbox.actions == []


def test_a_guernsey_mobile_gets_a_caller_id_from_the_gb_pool(gateway):
    gateway.configure(ani={"GB": "442071234567"})
    body = gateway.post(call("+447911123456")).json
    assert (body["icon"], body["country_code"]) == ("GG", 44)  # as phonenumbers says
    assert body["caller_id"] == "442071234567"
