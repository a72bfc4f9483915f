"""Form bodies on both endpoints, in process (WebTest over the WSGI app): multipart/form-
data as PHP's curl and Python's requests send it, a form's declared charset, and the
email package imported only for multipart bodies (a fresh interpreter tells)."""

import json
import subprocess
import sys

import requests

from call_gateway import call
from paths import LIB
from recordings_gateway import LEAD
from test_multipart import PHP_TYPE, php_curl_body
from testconfig import TEST_API_KEY, config_text

FORM = "application/x-www-form-urlencoded"


def prepared(**arguments):
    """(body, Content-Type) as requests encodes them."""
    request = requests.Request("POST", "http://gateway.test/", **arguments).prepare()
    return request.body, request.headers["Content-Type"]


# --- multipart/form-data on asteriskapi.pl ---------------------------------------------------

def test_php_curl_array_places_the_call(gateway):
    body = php_curl_body([("api-key", TEST_API_KEY), ("extension", "2001"),
                          ("destination", "12127773456"), ("call_in_out", "1"),
                          ("msg", "caf\u00e9 at 10")])
    reply = gateway.post(body, key=None, content_type=PHP_TYPE).json
    assert reply["status"] == "true"
    [originate] = gateway.originates()
    assert (originate["Context"], originate["ChannelId"]) == ("callexchange-agent",
                                                              reply["uniqueid"])
    assert gateway.sandbox.actions_named("MessageSend")[0]["Body"] == "caf\u00e9 at 10"


def test_requests_files_shape_places_the_call(gateway):
    body, content_type = prepared(files={"extension": (None, "2001"),
                                         "destination": (None, "+49 151 12345678")})
    reply = gateway.post(body, content_type=content_type).json
    assert (reply["icon"], reply["carrier"]) == ("DE", "T-Mobile")
    assert gateway.originates()[0]["Exten"] == "4915112345678"


def test_a_file_part_is_a_400_in_the_legacy_shape_and_dials_nothing(gateway):
    body, content_type = prepared(data={"extension": "2001", "destination": "12127773456"},
                                  files={"leads": ("leads.csv", b"12127773456\n")})
    reply = gateway.post(body, content_type=content_type, status=400).json
    assert reply["field"] == "leads" and "file" in reply["error"]
    assert reply["message"].startswith("We fail on making a call.")
    assert gateway.sandbox.actions == []


def test_a_multipart_body_without_its_boundary_is_a_400(gateway):
    body = php_curl_body([("extension", "2001"), ("destination", "12127773456")])
    for content_type in ("multipart/form-data", "multipart/form-data; boundary=other"):
        reply = gateway.post(body, content_type=content_type, status=400).json
        assert "multipart/form-data" in reply["error"]
    assert gateway.sandbox.actions == []


def test_a_field_given_twice_in_a_multipart_body_is_a_400_naming_it(gateway):
    body = php_curl_body([("extension", "2001"), ("destination", "12127773456"),
                          ("Destination", "12127773457")])
    reply = gateway.post(body, content_type=PHP_TYPE, status=400).json
    assert reply["field"] == "destination"
    assert gateway.sandbox.actions == []


def test_a_multipart_retry_of_a_json_request_is_the_same_request(gateway):
    headers = {"Idempotency-Key": "multipart-retry-1"}
    first = gateway.post(call(), headers=headers).json
    body = php_curl_body([("extension", "2001"), ("destination", "12127773456")])
    again = gateway.post(body, headers=headers, content_type=PHP_TYPE)
    assert again.json == first and again.headers["Idempotent-Replayed"] == "true"
    assert len(gateway.originates()) == 1


def test_a_multipart_body_over_64_kib_is_413(gateway):
    body = php_curl_body([("extension", "2001"), ("destination", "12127773456"),
                          ("msg", "x" * (64 * 1024))])
    gateway.post(body, content_type=PHP_TYPE, status=413)
    assert gateway.sandbox.actions == []


def test_other_multipart_types_are_415(gateway):
    body = php_curl_body([("extension", "2001"), ("destination", "12127773456")])
    reply = gateway.post(body, content_type="multipart/mixed; boundary=------------------------abc",
                         status=415).json
    assert "multipart/mixed" in reply["error"]


# --- multipart/form-data on find_phone_files.pl ----------------------------------------------

def test_php_curl_array_lists_the_recordings(recordings_gateway):
    url = recordings_gateway.recording("20240703", uniqueid="1720000000.7")
    body = php_curl_body([("api-key", TEST_API_KEY), ("phone", LEAD)])
    reply = recordings_gateway.post(body, key=None, content_type=PHP_TYPE)
    assert [entry["url"] for entry in reply] == [url]


def test_requests_files_shape_lists_the_recordings(recordings_gateway):
    url = recordings_gateway.recording("20240703", uniqueid="1720000000.8")
    body, content_type = prepared(files={"phone": (None, "+1 212 777 3456")})
    assert [entry["url"] for entry in recordings_gateway.post(body, content_type=content_type)] \
        == [url]


def test_a_file_part_is_a_400_in_the_recordings_legacy_shape(recordings_gateway):
    body, content_type = prepared(data={"phone": LEAD}, files={"phone_list": ("a.txt", b"x")})
    reply = recordings_gateway.post(body, content_type=content_type, status=400)
    assert reply["icon"] == "error" and "file" in reply["error"]


def test_a_malformed_multipart_body_is_a_400_on_find_phone_files(recordings_gateway):
    body = php_curl_body([("phone", LEAD)])[:-8]  # the close boundary cut off
    reply = recordings_gateway.post(body, content_type=PHP_TYPE, status=400)
    assert "Malformed multipart/form-data" in reply["error"]


# --- a declared charset ----------------------------------------------------------------------

def test_a_latin1_form_reaches_the_agent_as_sent(gateway):
    body = b"extension=2001&destination=12127773456&msg=Caf%E9+cr%E8me+%80+5"
    for charset in ("ISO-8859-1", "windows-1252"):
        gateway.post(body.replace(b"3456", b"345%d" % len(charset)),
                     content_type="%s; charset=%s" % (FORM, charset))
    bodies = [m["Body"] for m in gateway.sandbox.actions_named("MessageSend")]
    assert bodies == ["Caf\u00e9 cr\u00e8me \u20ac 5"] * 2


def test_an_unknown_form_charset_is_415_in_the_legacy_shape_on_both_endpoints(
        gateway, recordings_gateway):
    body = b"extension=2001&destination=12127773456"
    reply = gateway.post(body, content_type=FORM + "; charset=klingon", status=415).json
    assert "klingon" in reply["error"] and reply["message"].startswith("We fail")
    assert gateway.sandbox.actions == []
    reply = recordings_gateway.post(b"phone=" + LEAD.encode(),
                                    content_type=FORM + "; charset=utf-16", status=415)
    assert reply["icon"] == "error" and "utf-16" in reply["error"]


def test_a_latin1_form_on_find_phone_files_with_no_break_spaces(recordings_gateway):
    # %A0 is a no-break space in Latin-1: a number as a European CRM formats it.
    url = recordings_gateway.recording("20240703", uniqueid="1720000000.9")
    assert [entry["url"] for entry in recordings_gateway.post(
        b"phone=%2B1%A0212%A0777%A03456", content_type=FORM + "; charset=ISO-8859-1")] == [url]



# --- the email package is imported for multipart bodies only ---------------------------------

IMPORT_PROBE = r"""
import io, json, sys
sys.path.insert(0, sys.argv[1])
from callexchange.http.app import create_app
app = create_app(sys.argv[2])
for content_type, body in json.loads(sys.argv[3]):
    body = body.encode("latin-1")
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/recorded/v1/find_phone_files.pl",
               "CONTENT_TYPE": content_type, "CONTENT_LENGTH": str(len(body)),
               "wsgi.input": io.BytesIO(body), "wsgi.errors": sys.stderr}
    status = []
    app(environ, lambda line, headers: status.append(line))
    loaded = sorted(m for m in sys.modules
                    if m.split(".")[0] == "email" or m == "callexchange.http.multipart")
    print(json.dumps([status[0], loaded]))
"""


def test_only_a_multipart_body_imports_the_email_package(tmp_path, keys_file):
    config = tmp_path / "callexchange.ini"
    config.write_text(config_text(tmp_path, 5038))
    multipart = php_curl_body([("api-key", TEST_API_KEY), ("phone", LEAD)])
    requests_in_order = [(FORM, "api-key=%s&phone=%s" % (TEST_API_KEY, LEAD)),
                         ("application/json", json.dumps({"api-key": TEST_API_KEY,
                                                          "phone": LEAD})),
                         (PHP_TYPE, multipart.decode("latin-1"))]
    result = subprocess.run([sys.executable, "-S", "-c", IMPORT_PROBE, LIB, str(config),
                             json.dumps(requests_in_order)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    (form_status, after_form), (json_status, after_json), (multipart_status, after_multipart) = \
        [json.loads(line) for line in result.stdout.splitlines()]
    assert [form_status, json_status, multipart_status] == ["200 OK"] * 3, result.stderr
    assert after_form == [] and after_json == []
    assert "email.parser" in after_multipart
    assert "callexchange.http.multipart" in after_multipart
