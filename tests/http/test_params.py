"""params.py: the body in its forms, name normalisation, typed fields. Literals only."""

from urllib.parse import parse_qsl, quote_plus

import pytest
from hypothesis import given, strategies as st

from callexchange.errors import ApiError
from callexchange.http.body import MAX_BODY, parse_body, parse_query
from callexchange.params import (api_key_from, bool_field, check_no_control, normalize_names,
                                 number_field, text_field)


# --- parse_body --------------------------------------------------------------------------

def test_json_object_is_read_whatever_the_content_type():
    for content_type in ("application/json", "text/plain", "", "application/octet-stream",
                         "application/x-www-form-urlencoded"):
        assert parse_body(b' {"a": 1}', content_type) == {"a": 1}


def test_json_batch_is_a_list():
    assert parse_body(b'[{"jsonrpc": "2.0"}]', "") == [{"jsonrpc": "2.0"}]


def test_json_content_type_makes_a_body_json_even_without_a_brace():
    with pytest.raises(ApiError) as caught:
        parse_body(b"extension=2001", "application/json; charset=utf-8")
    assert caught.value.status == 400 and "Malformed JSON" in caught.value.error


def test_form_body_is_decoded_utf8():
    assert parse_body(b"a=1&b=%C3%A9t%C3%A9&empty=", "application/x-www-form-urlencoded") \
        == {"a": "1", "b": "\u00e9t\u00e9", "empty": ""}


def test_form_plus_is_a_space():
    assert parse_body(b"+Extension+=2001", "") == {" Extension ": "2001"}


@pytest.mark.parametrize("body", [b"", b"   ", b"\r\n"])
def test_empty_body_is_an_empty_dict(body):
    assert parse_body(body, "application/json") == {}


def test_malformed_json_says_where():
    with pytest.raises(ApiError) as caught:
        parse_body(b'{"extension": "2001",\n "destination": }', "")
    assert caught.value.status == 400
    assert "line 2 column" in caught.value.error
    assert not caught.value.extra["jsonrpc_parse_error"]


def test_malformed_json_mentioning_jsonrpc_is_flagged_for_a_parse_error_reply():
    with pytest.raises(ApiError) as caught:
        parse_body(b'{"jsonrpc": "2.0", "method": ', "")
    assert caught.value.extra["jsonrpc_parse_error"]


@pytest.mark.parametrize("body", [b'"text"', b"42", b"null", b"true"])
def test_json_scalar_is_400(body):
    with pytest.raises(ApiError) as caught:
        parse_body(body, "application/json")
    assert caught.value.status == 400


@pytest.mark.parametrize("body, content_type", [(b'{"a": "\xff"}', ""),
                                                (b"a=\xff\xfe", ""),
                                                (b"a=%FF", "")])
def test_body_that_is_not_utf8_is_400(body, content_type):
    with pytest.raises(ApiError) as caught:
        parse_body(body, content_type)
    assert caught.value.status == 400


def test_text_that_is_neither_json_nor_a_form_is_400():
    with pytest.raises(ApiError) as caught:
        parse_body(b"hello", "text/plain")
    assert "JSON object or form" in caught.value.error


def test_max_body_is_64_kib():
    assert MAX_BODY == 64 * 1024


def test_parse_query():
    assert parse_query("phone=%2B4930&limit=5") == {"phone": "+4930", "limit": "5"}
    assert parse_query("") == {}


# --- names -------------------------------------------------------------------------------

def test_names_are_trimmed_and_lower_cased():
    assert normalize_names({" extension ": "2001", "Msg": "hi", "DESTINATION\t": "1",
                            "Voice_Pitch": "1"}) == {
        "extension": "2001", "msg": "hi", "destination": "1", "voice_pitch": "1"}


@pytest.mark.parametrize("names", [("extension", " extension "), ("Msg", "msg"),
                                   ("API_KEY", "api_key")])
def test_a_name_given_twice_after_normalisation_is_400_naming_it(names):
    with pytest.raises(ApiError) as caught:
        normalize_names({names[0]: "1", names[1]: "2"})
    assert caught.value.status == 400
    assert caught.value.extra["field"] == names[1].strip().lower()


def test_values_are_untouched_by_normalisation():
    assert normalize_names({"X": " a "}) == {"x": " a "}


# --- text fields -------------------------------------------------------------------------

@pytest.mark.parametrize("value, expected", [
    ("2001", "2001"), (" 2001 ", "2001"), (2001, "2001"), (2001.0, "2001"),
    ("", None), ("   ", None), (None, None), ("\u00e9t\u00e9", "\u00e9t\u00e9"),
])
def test_text_field_values(value, expected):
    assert text_field({"f": value}, "f") == expected


def test_text_field_absent_is_none():
    assert text_field({}, "f") is None


@pytest.mark.parametrize("value", [True, False, 1.5, [], {}, ["a"]])
def test_text_field_refuses_non_text(value):
    with pytest.raises(ApiError) as caught:
        text_field({"f": value}, "f")
    assert caught.value.extra["field"] == "f"


def test_text_field_max_chars_counts_characters_after_trimming():
    assert text_field({"f": " " + "x" * 128 + " "}, "f", max_chars=128) == "x" * 128
    with pytest.raises(ApiError):
        text_field({"f": "x" * 129}, "f", max_chars=128)


@pytest.mark.parametrize("char", ["\r", "\n", "\0"])
def test_control_characters_are_refused_even_at_the_edges(char):
    for value in (char + "x", "x" + char, "a" + char + "b", char):
        with pytest.raises(ApiError) as caught:
            text_field({"f": value}, "f")
        assert caught.value.extra["field"] == "f"
    with pytest.raises(ApiError):
        check_no_control("f", "a" + char)


def test_tab_is_not_a_forbidden_control_character():
    assert check_no_control("f", "a\tb") == "a\tb"


# --- booleans ----------------------------------------------------------------------------

@pytest.mark.parametrize("value", [True, 1, 1.0, "true", "TRUE", "True", " true ", "1",
                                   "yes", "YES", "on", "ON"])
def test_true_forms(value):
    assert bool_field({"b": value}, "b") is True


@pytest.mark.parametrize("value", [False, 0, 0.0, "false", "FALSE", "0", "no", "No", "off",
                                   "Off"])
def test_false_forms(value):
    assert bool_field({"b": value}, "b", default=True) is False


@pytest.mark.parametrize("value", [None, "", "  "])
def test_absent_or_blank_boolean_is_the_default(value):
    assert bool_field({"b": value}, "b", default=True) is True
    assert bool_field({}, "b") is False


@pytest.mark.parametrize("value", ["maybe", "y", "t", 2, -1, 0.5, [], {}, "true\n"])
def test_bad_boolean_is_400_naming_the_field(value):
    with pytest.raises(ApiError) as caught:
        bool_field({"call_in_out": value}, "call_in_out")
    assert caught.value.status == 400
    assert caught.value.extra["field"] == "call_in_out"
    assert "call_in_out" in caught.value.error


# --- numbers -----------------------------------------------------------------------------

@pytest.mark.parametrize("value, expected", [
    (1, 1.0), (0.1, 0.1), (2.0, 2.0), (2, 2.0), ("1", 1.0), (" 0.1 ", 0.1), ("2.0", 2.0),
    ("1e0", 1.0), (None, 1.0), ("", 1.0),
])
def test_number_field_values(value, expected):
    result = number_field({"n": value}, "n", 1.0, 0.1, 2.0)
    assert result == expected and type(result) is float


@pytest.mark.parametrize("value", [0.05, 2.5, 0, -1, "abc", "2.01", "nan", "inf", True,
                                   False, [1], {}, "1\n"])
def test_number_field_out_of_range_or_not_a_number_is_400(value):
    with pytest.raises(ApiError) as caught:
        number_field({"voice_pitch": value}, "voice_pitch", 1.0, 0.1, 2.0)
    assert caught.value.status == 400
    assert caught.value.extra["field"] == "voice_pitch"


# --- the api-key -------------------------------------------------------------------------

def test_api_key_header_wins_over_the_body():
    assert api_key_from({"api_key": "body"}, " header ") == "header"


@pytest.mark.parametrize("params", [{"api_key": " k "}, {"api-key": "k"}])
def test_api_key_from_the_body(params):
    assert api_key_from(params, None) == "k"


@pytest.mark.parametrize("params", [{}, {"api_key": ""}, {"api_key": "  "}, {"api_key": 5}])
def test_no_api_key(params):
    assert api_key_from(params, "") is None


# --- parse_query agrees with the standard library it replaces -----------------------


_FORM_TEXT = st.text(alphabet=st.sampled_from(list("ab=&+%2Fe0zZ %€;")), max_size=40)


@given(_FORM_TEXT)
def test_parse_query_decodes_like_urllib(text):
    try:
        pairs = parse_qsl(text, keep_blank_values=True, errors="strict")
    except UnicodeDecodeError:
        pairs = None
    if pairs is None or len({name for name, _ in pairs}) < len(pairs):
        with pytest.raises(ApiError):  # not UTF-8, or a name given twice
            parse_query(text)
        return
    assert parse_query(text) == dict(pairs)


@given(st.dictionaries(st.text(min_size=1, max_size=10), st.text(max_size=20), max_size=5))
def test_parse_query_round_trips_encoded_forms(params):
    text = "&".join("%s=%s" % (quote_plus(k), quote_plus(v)) for k, v in params.items())
    assert parse_query(text) == params


@pytest.mark.parametrize("body", [b"extension=2001&extension=2002",
                                  b'{"extension": "2001", "extension": "2002"}'])
def test_a_name_given_twice_is_a_400_naming_it(body):
    with pytest.raises(ApiError) as raised:
        parse_body(body, "")
    assert raised.value.status == 400 and raised.value.extra["field"] == "extension"


def test_deeply_nested_json_is_a_400_not_a_crash():
    body = b'{"extension": "2001", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    with pytest.raises(ApiError) as raised:
        parse_body(body, "application/json")
    assert raised.value.status == 400 and "nested too deeply" in raised.value.error


def test_a_multipart_form_is_read_as_a_form():
    body = (b"--x\r\nContent-Disposition: form-data; name=extension\r\n\r\n2001\r\n--x--")
    params = parse_body(body, "multipart/form-data; boundary=x")
    assert params == {"extension": "2001"}
    from callexchange.http.jsonrpc import is_jsonrpc
    assert not is_jsonrpc(parse_body(body.replace(b"extension", b"jsonrpc"),
                                     "multipart/form-data; boundary=x"))


@pytest.mark.parametrize("media_type", ["multipart/mixed", "multipart/related"])
def test_other_multipart_bodies_are_refused_as_unsupported(media_type):
    with pytest.raises(ApiError) as raised:
        parse_body(b"--x\r\nContent-Disposition: form-data; name=extension\r\n\r\n2001\r\n--x--",
                   media_type + "; boundary=x")
    assert raised.value.status == 415 and media_type in raised.value.error


# --- a declared charset -------------------------------------------------------------------

FORM = "application/x-www-form-urlencoded"


@pytest.mark.parametrize("charset", ["ISO-8859-1", "iso-8859-1", "latin1", '"ISO-8859-1"',
                                     "windows-1252", "cp1252", "US-ASCII"])
def test_a_latin1_form_is_read_in_its_charset_as_browsers_do(charset):
    # Browsers read every Latin-1 label as windows-1252: 0x80 is the euro sign.
    body = b"msg=caf%E9+cr%E8me+%80&raw=\xe9\xa0"
    assert parse_body(body, "%s; charset=%s" % (FORM, charset)) == \
        {"msg": "caf\u00e9 cr\u00e8me \u20ac", "raw": "\u00e9\u00a0"}


def test_the_bytes_windows_1252_leaves_undefined_keep_their_latin1_meaning():
    assert parse_body(b"a=%81%8D%8F%90%9D", FORM + "; charset=windows-1252") == \
        {"a": "\x81\x8d\x8f\x90\x9d"}


def test_other_charsets_python_knows_are_honoured():
    assert parse_body(b"a=%82%A0", FORM + "; charset=Shift_JIS") == {"a": "\u3042"}
    assert parse_body(b"a=%C3%A9", FORM + "; charset=UTF-8") == {"a": "\u00e9"}


def test_a_form_without_a_charset_is_utf8_and_bytes_that_are_not_are_a_400():
    assert parse_body(b"a=%C3%A9", FORM) == {"a": "\u00e9"}
    for body in (b"a=%E9", b"a=\xe9"):
        with pytest.raises(ApiError) as raised:
            parse_body(body, FORM)
        assert raised.value.status == 400 and "not valid UTF-8" in raised.value.error


def test_a_charset_field_names_the_charset_when_the_content_type_does_not():
    assert parse_body(b"_charset_=ISO-8859-1&msg=%E9", FORM) == \
        {"_charset_": "ISO-8859-1", "msg": "\u00e9"}
    # The Content-Type's own charset wins.
    assert parse_body(b"_charset_=ISO-8859-1&msg=%C3%A9", FORM + "; charset=utf-8")["msg"] == \
        "\u00e9"


@pytest.mark.parametrize("charset", ["klingon", "utf-16", "utf-32", "base64", "rot13",
                                     "unicode_escape", "utf-7", "cp037"])
def test_an_unknown_or_not_ascii_compatible_charset_is_415(charset):
    with pytest.raises(ApiError) as raised:
        parse_body(b"a=1", "%s; charset=%s" % (FORM, charset))
    assert raised.value.status == 415 and "charset" in raised.value.error


def test_a_json_body_is_utf8_whatever_charset_it_declares():
    # RFC 8259: JSON is UTF-8; a charset on it is not read (an unknown one neither).
    assert parse_body('{"msg": "\u00e9"}'.encode(), FORM + "; charset=ISO-8859-1") == \
        {"msg": "\u00e9"}
    assert parse_body(b'{"a": 1}', "application/json; charset=klingon") == {"a": 1}


def test_form_data_is_never_jsonrpc():
    from callexchange.http.jsonrpc import is_jsonrpc
    assert not is_jsonrpc(parse_body(b"jsonrpc=2.0&method=originate", ""))
    assert is_jsonrpc(parse_body(b'{"jsonrpc": "2.0", "method": "originate"}', ""))
