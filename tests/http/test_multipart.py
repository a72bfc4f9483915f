"""http/multipart.py and body.py on multipart/form-data: the shapes real clients send
(PHP curl's CURLOPT_POSTFIELDS array, requests' files= and data=), and every malformed
body a clear 400. Literals only; the endpoints' replies are in test_form_bodies.py."""

import pytest
import requests

from callexchange.errors import ApiError
from callexchange.http.body import MAX_BODY, parse_body
from callexchange.http.multipart import MAX_PARTS

# What PHP's curl sends for CURLOPT_POSTFIELDS => array("api-key" => ..., ...): its own
# boundary of 24 dashes and hex digits, one part per field, no Content-Type per part.
PHP_TYPE = "multipart/form-data; boundary=------------------------abc"


def php_curl_body(fields):
    parts = [b'--------------------------abc\r\nContent-Disposition: form-data; name="%s"'
             b'\r\n\r\n%s\r\n' % (name.encode(), value.encode("utf-8"))
             for name, value in fields]
    return b"".join(parts) + b"--------------------------abc--\r\n"


def prepared(**arguments):
    """(body, Content-Type) as requests encodes them."""
    request = requests.Request("POST", "http://gateway.test/", **arguments).prepare()
    return request.body, request.headers["Content-Type"]


def refusal(body, content_type):
    with pytest.raises(ApiError) as raised:
        parse_body(body, content_type)
    return raised.value


def test_php_curl_array_is_read_field_by_field():
    body = php_curl_body([("api-key", "k-1"), ("extension", "2001"),
                          ("destination", "+49 151 12345678"), ("msg", "caf\u00e9 \u20ac")])
    assert parse_body(body, PHP_TYPE) == {"api-key": "k-1", "extension": "2001",
                                          "destination": "+49 151 12345678",
                                          "msg": "caf\u00e9 \u20ac"}


def test_requests_files_without_filenames_are_fields():
    body, content_type = prepared(files={"extension": (None, "2001"),
                                         "destination": (None, "12127773456")})
    assert content_type.startswith("multipart/form-data; boundary=")
    assert parse_body(body, content_type) == {"extension": "2001", "destination": "12127773456"}


def test_a_file_part_is_a_400_naming_it():
    body, content_type = prepared(data={"extension": "2001"},
                                  files={"upload": ("leads.csv", b"1,2\n", "text/csv")})
    error = refusal(body, content_type)
    assert error.status == 400 and "'upload'" in error.error and "file" in error.error
    assert error.extra["field"] == "upload"


def test_a_nested_multipart_is_a_file_too():
    body = (b"--x\r\nContent-Disposition: form-data; name=files\r\n"
            b"Content-Type: multipart/mixed; boundary=y\r\n\r\n"
            b"--y\r\nContent-Disposition: file; filename=a.txt\r\n\r\nhi\r\n--y--\r\n--x--\r\n")
    assert refusal(body, "multipart/form-data; boundary=x").status == 400


@pytest.mark.parametrize("body, content_type, says", [
    (b"--x\r\nContent-Disposition: form-data; name=a\r\n\r\n1\r\n--x--",
     "multipart/form-data", "boundary"),
    (b"--x\r\nContent-Disposition: form-data; name=a\r\n\r\n1\r\n",
     "multipart/form-data; boundary=x", "close boundary"),
    (b"extension=2001", "multipart/form-data; boundary=x", "start boundary"),
    (b"--x\r\nContent-Disposition: form-data; name=a\r\n\r\n1\r\n--x--",
     "multipart/form-data; boundary=other", "start boundary"),
    (b"--x\r\n\r\n2001\r\n--x--", "multipart/form-data; boundary=x", "named field"),
    (b"--x\r\nContent-Disposition: form-data\r\n\r\n2001\r\n--x--",
     "multipart/form-data; boundary=x", "named field"),
    (b"--x\r\nContent-Disposition: attachment; name=a\r\n\r\n2001\r\n--x--",
     "multipart/form-data; boundary=x", "named field"),
])
def test_malformed_bodies_are_a_400_saying_what_is_wrong(body, content_type, says):
    error = refusal(body, content_type)
    assert error.status == 400 and says in error.error, error.error


def test_a_field_given_twice_is_a_400_as_in_a_urlencoded_form():
    body = php_curl_body([("extension", "2001"), ("extension", "2002")])
    error = refusal(body, PHP_TYPE)
    assert error.status == 400 and error.extra["field"] == "extension"


def test_a_part_declares_its_charset_and_a_charset_field_the_others():
    body = (b"--x\r\nContent-Disposition: form-data; name=a\r\n"
            b"Content-Type: text/plain; charset=ISO-8859-1\r\n\r\ncaf\xe9\r\n"
            b"--x\r\nContent-Disposition: form-data; name=_charset_\r\n\r\nwindows-1252\r\n"
            b"--x\r\nContent-Disposition: form-data; name=b\r\n\r\n\x80 \xa0\r\n--x--\r\n")
    params = parse_body(body, "multipart/form-data; boundary=x")
    assert (params["a"], params["b"]) == ("caf\u00e9", "\u20ac \u00a0")


def test_the_multipart_content_types_charset_is_honoured():
    body = b"--x\r\nContent-Disposition: form-data; name=a\r\n\r\ncaf\xe9\r\n--x--"
    assert parse_body(body, "multipart/form-data; boundary=x; charset=ISO-8859-1") == \
        {"a": "caf\u00e9"}


def test_parts_not_in_their_charset_are_a_400_and_an_unknown_charset_a_415():
    body = b"--x\r\nContent-Disposition: form-data; name=a\r\n\r\ncaf\xe9\r\n--x--"
    assert refusal(body, "multipart/form-data; boundary=x").status == 400
    assert refusal(body, "multipart/form-data; boundary=x; charset=klingon").status == 415


def test_line_breaks_inside_a_value_and_bare_lf_bodies_are_kept_as_sent():
    body = b"--x\nContent-Disposition: form-data; name=a\n\nline 1\r\nline 2\n--x--\n"
    assert parse_body(body, "multipart/form-data; boundary=x") == {"a": "line 1\r\nline 2"}


def test_a_quoted_boundary_and_an_rfc2231_name():
    body = (b"--a b\r\nContent-Disposition: form-data; name*=UTF-8''extension\r\n\r\n"
            b"2001\r\n--a b--\r\n")
    assert parse_body(body, 'multipart/form-data; boundary="a b"') == {"extension": "2001"}


def test_more_parts_than_any_form_has_is_a_400_before_parsing():
    fields = [("f%d" % n, "1") for n in range(MAX_PARTS + 1)]
    assert refusal(php_curl_body(fields), PHP_TYPE).status == 400
    assert len(parse_body(php_curl_body(fields[:MAX_PARTS]), PHP_TYPE)) == MAX_PARTS
    many = b"--x\r\n\r\n" * (MAX_BODY // 7)
    assert "parts" in refusal(many, "multipart/form-data; boundary=x").error


def test_a_content_type_with_a_line_break_is_a_400():
    body = php_curl_body([("extension", "2001")])
    assert refusal(body, PHP_TYPE + "\r\nX-Injected: 1").status == 400
