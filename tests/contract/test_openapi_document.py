"""docs/openapi.yaml as others load it: a valid OpenAPI 3.1 document (openapi-spec-validator),
usable by openapi-core (which then validates real requests and replies of the app), with
its JSON Schemas valid, its examples valid, every status the code and Apache answer on our
URLs, the Allow header the code sends, and both webhooks with their headers."""

import json
import re

import pytest
import webtest
import yaml
from jsonschema import Draft202012Validator
from openapi_core import OpenAPI
from openapi_core.testing import MockRequest, MockResponse
from openapi_spec_validator import validate as validate_spec

from callexchange.http.app import create_app
from callexchange.config import load_config
from testconfig import TEST_API_KEY, config_text
from paths import REPO
from schemas import OPENAPI_PATH, document, schema_names, validate, validator

CALL_PATHS = ("/api/v1/asteriskapi.pl", "/api/v1/asteriskapi")
RECORDING_PATHS = ("/recorded/v1/find_phone_files.pl", "/recorded/v1/find_phone_files")
SERVER = "https://pbx.callexchange.net"
# Every status an operation may answer, from the app or from Apache in front of it.
CALL_STATUSES = {"200", "204", "400", "401", "403", "405", "408", "409", "411", "413", "414",
                 "415", "422", "500", "502", "503", "504"}
RECORDING_STATUSES = {"200", "204", "400", "401", "405", "408", "413", "414", "415", "500",
                      "503", "504"}
FILE_STATUSES = {"200", "206", "400", "401", "403", "404", "405", "408", "414", "416", "500"}
ERROR_PAGES = REPO / "apache" / "errors"


def operations(doc=None):
    doc = doc or document()
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            if method in ("get", "head", "post", "put", "delete", "patch", "options", "trace"):
                yield path, method, operation


def resolve(node, doc=None):
    doc = doc or document()
    while isinstance(node, dict) and "$ref" in node:
        target = doc
        for part in node["$ref"][2:].split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        node = target
    return node


# --- loads everywhere ---------------------------------------------------------------------

def test_openapi_spec_validator_accepts_the_document():
    validate_spec(document())  # raises OpenAPIValidationError with the path of the problem


def test_the_document_is_json_and_the_same_yaml():
    with open(OPENAPI_PATH, encoding="utf-8") as handle:
        text = handle.read()
    assert yaml.safe_load(text) == json.loads(text)


def test_openapi_core_loads_the_document_from_its_file():
    api = OpenAPI.from_file_path(OPENAPI_PATH)
    assert api.spec["info"]["title"] == "CallExchange PBX gateway"


def test_operation_ids_are_unique():
    ids = [operation["operationId"] for _, _, operation in operations()]
    ids += [item["post"]["operationId"] for item in document()["webhooks"].values()]
    assert len(ids) == len(set(ids)), sorted(ids)


def test_every_schema_is_valid_json_schema_2020_12_and_its_refs_resolve():
    for name in schema_names():
        Draft202012Validator.check_schema(document()["components"]["schemas"][name])
        validator(name)


def test_schema_examples_validate_against_their_schema():
    for name in schema_names():
        for example in document()["components"]["schemas"][name].get("examples", []):
            if name == "CallRequest" and any(key != key.strip() for key in example):
                continue  # the legacy spellings (" extension "), matched after normalising
            validate(name, example)


def _refs(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def test_every_internal_ref_resolves():
    for ref in set(_refs(document())):
        assert ref.startswith("#/"), ref
        resolve({"$ref": ref})


def test_no_description_on_a_media_type():
    # OpenAPI 3.1 Media Type Objects have no `description` (what openapi-spec-validator
    # refused before): descriptions go on the request body or the response.
    for path, method, operation in operations():
        body = resolve(operation.get("requestBody", {}))
        for media in body.get("content", {}).values():
            assert "description" not in media, (path, method)


# --- what it documents ----------------------------------------------------------------------

def test_both_endpoints_under_both_urls_with_every_status():
    doc = document()
    assert doc["openapi"].startswith("3.1")
    for path in CALL_PATHS:
        assert set(doc["paths"][path]) - {"description"} == {"post"}
        assert set(doc["paths"][path]["post"]["responses"]) == CALL_STATUSES
    for path in RECORDING_PATHS:
        assert set(doc["paths"][path]) - {"description"} == {"get", "head", "post"}
        for method in ("get", "head"):
            assert set(doc["paths"][path][method]["responses"]) == RECORDING_STATUSES
        assert set(doc["paths"][path]["post"]["responses"]) == RECORDING_STATUSES | {"411"}
    files = doc["paths"]["/wav-files/{year}/{month}/{day}/{file}"]
    assert set(files) == {"parameters", "get", "head"}
    for method in ("get", "head"):
        assert set(files[method]["responses"]) == FILE_STATUSES
    for path in ("/api/v1/openapi.yaml", "/api/v1/docs"):
        assert set(doc["paths"][path]["get"]["responses"]) == {"200", "405"}
        assert doc["paths"][path]["get"]["security"] == []
    assert doc["components"]["securitySchemes"]["apiKey"] == {
        **doc["components"]["securitySchemes"]["apiKey"],
        "type": "apiKey", "in": "header", "name": "api-key"}


def _statuses_raised_in(package_dir):
    """Every literal status of `ApiError(<status>, ...)` and `Reply(<status>, ...)` in lib/."""
    found = set()
    for path in package_dir.rglob("*.py"):
        found |= {int(code) for code in re.findall(r"(?:ApiError|Reply)\(\s*(\d{3})\b",
                                                    path.read_text(encoding="utf-8"))}
    return found


def test_every_status_the_code_raises_is_documented():
    raised = _statuses_raised_in(REPO / "lib" / "callexchange")
    assert {200, 400, 401, 405, 500} <= raised  # the scan finds them at all
    documented = {int(s) for _, _, operation in operations() for s in operation["responses"]}
    # 404: the app's answer to a URL it does not serve, which Apache never passes on (the
    # URLs are exact); Apache's own 404 for such URLs is in the description of the API.
    assert raised - documented <= {404}, sorted(raised - documented)


def test_every_error_apache_may_answer_is_documented_or_explained():
    documented = {int(s) for _, _, operation in operations() for s in operation["responses"]}
    pages = {int(page.stem) for page in ERROR_PAGES.glob("*/*.json")}
    assert {400, 405, 413, 500} <= pages  # the pages are where this test looks
    # 501 is Apache's answer to a method it does not know at all: the API description
    # names it, with the others that no operation of ours answers.
    assert pages - documented <= {501}, sorted(pages - documented)
    description = document()["info"]["description"]
    for status in pages:
        assert str(status) in description, status


@pytest.mark.parametrize("folder, schema", [("call", "CallError"),
                                            ("recordings", "RecordingsError"),
                                            ("wav-files", "RecordingFileError")])
def test_apache_error_pages_are_the_documented_error_objects(folder, schema):
    pages = sorted((ERROR_PAGES / folder).glob("*.json"))
    assert pages
    for page in pages:
        body = validate(schema, json.loads(page.read_text(encoding="utf-8")))
        assert body["status"].startswith(page.stem + " "), page


def test_every_error_reply_is_json_in_the_legacy_shape():
    for path, method, operation in operations():
        for status, response in operation["responses"].items():
            if status.startswith(("4", "5")):
                response = resolve(response)
                schema = resolve(response["content"]["application/json"]["schema"])
                required = set(schema.get("required", []))
                for branch in schema.get("allOf", []):
                    required |= set(resolve(branch).get("required", []))
                assert {"status", "icon", "error"} <= required, (path, method, status)


def test_both_webhooks_with_the_standard_webhooks_headers():
    doc = document()
    for event, schema in (("connect", "ConnectEvent"), ("hangup", "HangupEvent")):
        post = doc["webhooks"][event]["post"]
        headers = {p["name"]: p for p in post["parameters"]}
        assert set(headers) == {"webhook-id", "webhook-timestamp", "webhook-signature",
                                "X-CallExchange-Event", "X-CallExchange-Event-Time"}
        assert headers["X-CallExchange-Event"]["schema"] == {"const": event}
        assert "attempt" in headers["webhook-timestamp"]["description"]
        assert "event happened" in headers["X-CallExchange-Event-Time"]["description"]
        assert not headers["webhook-signature"]["required"]
        assert post["requestBody"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/" + schema}


def test_webhook_schemas_accept_legacy_and_extended_bodies():
    legacy = {"dialed_number": "12127773456", "extension": "2001",
              "caller_id": "12125550100", "uniqueid": "1732700000.483920174622"}
    validate("ConnectEvent", legacy)
    validate("HangupEvent", dict(legacy, duration=25))
    extended = dict(legacy, event="hangup", timestamp=1732700030, sequence=2,
                    crm_id="lead-1", disposition="no_answer", hangup_cause=19,
                    recording_url="", duration=0)
    validate("HangupEvent", extended)
    assert not validator("HangupEvent").is_valid(dict(extended, disposition="hung"))
    assert not validator("HangupEvent").is_valid(legacy)                 # no duration
    assert not validator("ConnectEvent").is_valid(dict(legacy, duration=1))


def test_recording_schema_matches_the_legacy_sample():
    validate("RecordingList", [{
        "url": "https://pbx.callexchange.net/wav-files/2024/07/03/"
               "out-12127773456-unknown-20240703-203742-1720039056.22191.wav",
        "time": "20:37:42", "duration": 25, "date": "03/07/2024",
        "uniqueid": "1720039056.22191"}])
    validate("RecordingsError", {"status": "400 Bad Request", "icon": "error",
                                 "error": "Missing parameters: api-key or phone"})
    assert not validator("Recording").is_valid({"url": "u", "time": "25:00:00",
                                                "duration": 1, "date": "03/07/2024",
                                                "uniqueid": ""})


@pytest.mark.parametrize("text, valid", [
    ("12127773456", True), ("+1 (212) 777-3456", True), ("00123", True), (" 0123 ", True),
    ("0012", False), ("12", False), ("1" * 21, False), ("212-77x", False), ("", False),
    ("1" * 10 + " " * 60 + "1", False),          # 71 characters once trimmed: over 64
    (" " * 40 + "12127773456" + " " * 40, True),  # blanks around it do not count
])
def test_the_phone_pattern_says_what_find_phone_files_accepts(text, valid):
    from callexchange.errors import ApiError
    from callexchange.recordings.lookup import phone_field

    assert validator("RecordingPhone").is_valid(text) is valid
    try:
        phone_field({"phone": text})
        accepted = True
    except ApiError:
        accepted = False
    assert accepted is valid


@pytest.mark.parametrize("text, valid", [
    ("12127773456", True), ("+49 151 12345678", True), ("0049 30 901820", True),
    ("2127773456", True), ("0 0 123", True), ("+123", True), ("0012", False), ("+12", False),
    ("1" * 17, True), ("1" * 18, False), ("1-800-FLOWERS", False), ("", False),
])
def test_the_destination_pattern_says_what_asteriskapi_reads_as_digits(text, valid):
    from callexchange.calls.numbers import NotAPhoneNumber, split_destination

    schema = document()["components"]["schemas"]["CallRequest"]["properties"]["destination"]
    assert Draft202012Validator(schema).is_valid(text) is valid
    try:
        split_destination(text)
        accepted = True
    except NotAPhoneNumber:
        accepted = False
    assert accepted is valid


# --- the document agrees with the app, checked by openapi-core -----------------------------

@pytest.fixture
def app(tmp_path, sandbox, keys_file):
    path = tmp_path / "callexchange.ini"
    path.write_text(config_text(tmp_path, sandbox.port))
    return webtest.TestApp(create_app(config=load_config(str(path))))


@pytest.fixture(scope="module")
def openapi():
    return OpenAPI.from_file_path(OPENAPI_PATH)


def exchange(openapi, app, method, path, body=b"", headers=None, query=None,
             content_type="application/json", valid_request=True):
    """Send one request to the app and have openapi-core validate the reply (and, unless
    it is meant to be invalid, the request) against the document; returns the reply."""
    headers = dict(headers or {})
    if body:
        headers["Content-Type"] = content_type
    url = path + ("?" + "&".join("%s=%s" % item for item in query.items()) if query else "")
    reply = app.request(url, method=method.upper(), body=body, headers=headers,
                        expect_errors=True)
    request = MockRequest(SERVER, method, path, args=query, headers=headers, data=body,
                          content_type=content_type)
    response = MockResponse(reply.body, status_code=reply.status_int,
                            headers=dict(reply.headers),
                            content_type=reply.headers.get("Content-Type", ""))
    if valid_request:
        openapi.validate_request(request)
    openapi.validate_response(request, response)
    return reply


def test_openapi_core_validates_a_placed_call(openapi, app):
    body = json.dumps({"extension": "2001", "destination": "12127773456",
                       "crm_id": "lead-1"}).encode()
    reply = exchange(openapi, app, "post", CALL_PATHS[0], body, {"api-key": TEST_API_KEY})
    assert reply.status_int == 200 and reply.json["crm_id"] == "lead-1"


def test_openapi_core_validates_call_errors(openapi, app):
    missing = exchange(openapi, app, "post", CALL_PATHS[1], b'{"extension": "2001"}',
                       {"api-key": TEST_API_KEY}, valid_request=False)
    assert missing.status_int == 400 and missing.json["missing"] == ["destination"]
    unknown = exchange(openapi, app, "post", CALL_PATHS[0],
                       b'{"extension": "2001", "destination": "12127773456"}',
                       {"api-key": "no-such-key"})
    assert unknown.status_int == 401


def test_openapi_core_validates_recordings_replies(openapi, app):
    found = exchange(openapi, app, "get", RECORDING_PATHS[0], headers={"api-key": TEST_API_KEY},
                     query={"phone": "12127773456"})
    assert found.status_int == 200 and found.json == []
    bad = exchange(openapi, app, "post", RECORDING_PATHS[1], b"phone=12",
                   {"api-key": TEST_API_KEY}, content_type="application/x-www-form-urlencoded",
                   valid_request=False)
    assert bad.status_int == 400 and bad.json["field"] == "phone"


@pytest.mark.parametrize("path", CALL_PATHS + RECORDING_PATHS)
def test_the_allow_header_is_the_one_the_code_sends(app, path):
    reply = app.request(path, method="PUT", expect_errors=True)
    assert reply.status_int == 405
    item = document()["paths"][path]
    any_operation = next(op for method, op in item.items() if method != "description")
    documented = resolve(any_operation["responses"]["405"])["headers"]["Allow"]["schema"]
    assert reply.headers["Allow"] == documented["const"]
    assert {m.strip().lower() for m in reply.headers["Allow"].split(",")} == \
        set(item) - {"description"}
