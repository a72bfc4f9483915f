"""What Apache itself answers on our URLs, against docs/openapi.yaml: the real Apache of
tests/contract/fuzz_gateway.py in front of the CGI. Every 405 carries the Allow the
document states (RFC 9110 requires it; Apache drops it when it answers with our JSON
page), whoever answers it; and the document and the JSON page served agree."""

import pytest
import requests

from schemas import document, validate

RECORDING = "/wav-files/2024/07/03/out-12127773456-2001-20240703-203742-1720039056.22191.wav"
URLS = ("/api/v1/asteriskapi.pl", "/api/v1/asteriskapi", "/recorded/v1/find_phone_files.pl",
        "/recorded/v1/find_phone_files", RECORDING, "/api/v1/openapi.yaml", "/api/v1/docs")
JSON_TYPE = "application/json; charset=utf-8"


def documented_405(url):
    """(Allow, schema name) of the 405 the document gives for `url`."""
    doc = document()
    path = "/wav-files/{year}/{month}/{day}/{file}" if url.startswith("/wav-files/") else url
    item = doc["paths"][path]
    operation = next(op for method, op in item.items() if method in ("get", "post"))
    response = operation["responses"]["405"]
    if "$ref" in response:
        response = doc["components"]["responses"][response["$ref"].rsplit("/", 1)[1]]
    schema = response["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    return response["headers"]["Allow"]["schema"]["const"], schema


@pytest.mark.parametrize("url", URLS)
@pytest.mark.parametrize("method", ["TRACE", "PUT", "DELETE", "PATCH"])
def test_every_405_on_our_urls_says_allow_as_documented(gateway, url, method):
    response = requests.request(method, gateway.url + url, timeout=30)
    allow, schema = documented_405(url)
    assert response.status_code == 405, (response.status_code, response.text[:300])
    assert response.headers.get("Content-Type") == JSON_TYPE
    assert response.headers.get("Allow") == allow, dict(response.headers)
    validate(schema, response.json())


def test_the_methods_allow_names_are_the_ones_that_work(gateway):
    # POST on the call URL, GET/HEAD/POST on the recordings URL and GET/HEAD on the files
    # and the reference answer something else than 405.
    key = {"api-key": gateway.api_key}
    for url in URLS:
        allow, _ = documented_405(url)
        for method in [m.strip() for m in allow.split(",")]:
            response = requests.request(method, gateway.url + url, headers=key, timeout=30)
            assert response.status_code != 405, (method, url)


def test_the_served_contract_is_this_document(gateway):
    import yaml

    response = requests.get(gateway.url + "/api/v1/openapi.yaml", timeout=30)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/yaml")
    assert yaml.safe_load(response.text) == document()
