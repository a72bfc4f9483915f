"""Properties of the body parser (http/body.py) and of the endpoints over it, checked by
hypothesis (issue 10, items 6 and 11): whatever bytes a client sends, under whatever
Content-Type, the parser gives a dict or a list or refuses with a 4xx ApiError, and
neither endpoint answers 5xx. JSON text with lone surrogates ("\\ud800"), the case that
was a 500, is generated on purpose."""

import json

import pytest
import webtest
from hypothesis import HealthCheck, example, given, settings, strategies as st

from callexchange.errors import ApiError
from callexchange.http.app import create_app
from callexchange.http.body import parse_body
from testconfig import TEST_API_KEY, config_text

CONTENT_TYPES = st.sampled_from([
    "", "application/json", "application/json; charset=utf-8", "text/plain",
    "application/x-www-form-urlencoded", "application/x-www-form-urlencoded; charset=latin-1",
    "multipart/form-data; boundary=x", "application/jsonrequest", "*/*"])
# Text with every kind of character, lone surrogates included (blacklisting nothing).
ANY_TEXT = st.text(st.characters(), max_size=30)
FIELDS = st.sampled_from(["extension", "destination", "msg", "crm_id", "api_key",
                          "voice_pitch", "call_in_out", "phone", "limit", "from", "uniqueid"])


bodies = st.one_of(
    st.binary(max_size=300),
    st.dictionaries(FIELDS, st.one_of(ANY_TEXT, st.integers(), st.floats(), st.booleans(),
                                      st.none(), st.lists(ANY_TEXT, max_size=2)),
                    max_size=6).map(lambda d: json.dumps(d).encode()),
    st.lists(st.fixed_dictionaries({"jsonrpc": st.just("2.0"),
                                    "method": st.sampled_from(["originate", "call",
                                                               "find_phone_files", "x"]),
                                    "params": st.dictionaries(FIELDS, ANY_TEXT, max_size=4),
                                    "id": st.integers(0, 9)}), max_size=3
             ).map(lambda d: json.dumps(d).encode()),
    st.dictionaries(FIELDS, ANY_TEXT, max_size=4).map(
        lambda d: "&".join("%s=%s" % (k, v) for k, v in d.items()).encode("utf-8",
                                                                            "surrogatepass")),
)


@settings(max_examples=400, deadline=None)
@given(body=bodies, content_type=CONTENT_TYPES)
@example(body=b'{"msg": "\\ud800"}', content_type="application/json")
@example(body=b'\xff\xfe{"a"', content_type="")
@example(body=b"[" * 5000, content_type="application/json")
def test_the_parser_gives_a_dict_a_list_or_a_4xx(body, content_type):
    try:
        payload = parse_body(body, content_type)
    except ApiError as error:
        assert 400 <= error.status < 500, error.error
        return
    assert isinstance(payload, (dict, list))


@pytest.fixture(scope="module")
def app(tmp_path_factory, sandbox_server, carrier_cache):
    from callexchange import keys
    from callexchange.config import load_config
    tmp_path = tmp_path_factory.mktemp("body-properties")
    keys.add_key(str(tmp_path / "api-keys"), "tests", TEST_API_KEY)
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "numbers").symlink_to(carrier_cache, target_is_directory=True)
    path = tmp_path / "callexchange.ini"
    # No double-click memory: generated calls repeat, and each must reach the sandbox.
    path.write_text(config_text(tmp_path, sandbox_server.port, dial={"dedupe_seconds": "0"}))
    return webtest.TestApp(create_app(config=load_config(str(path))))


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(body=bodies, content_type=CONTENT_TYPES, with_key=st.booleans(),
       url=st.sampled_from(["/api/v1/asteriskapi.pl", "/recorded/v1/find_phone_files.pl"]))
@example(body=b'{"extension": "2001", "destination": "12127773456", "msg": "\\ud800"}',
         content_type="application/json", with_key=True, url="/api/v1/asteriskapi.pl")
@example(body=b'{"phone": "12127773456", "api_key": "\\udfff"}',
         content_type="application/json", with_key=False,
         url="/recorded/v1/find_phone_files.pl")
def test_no_body_is_a_server_error_on_either_endpoint(app, sandbox_server, body, content_type,
                                                      with_key, url):
    headers = {"api-key": TEST_API_KEY} if with_key else {}
    response = app.request(url, method="POST", body=body, headers=headers,
                           content_type=content_type or None, expect_errors=True)
    assert response.status_int < 500, (body, response.text)
    assert response.headers["Content-Type"] == "application/json; charset=utf-8"
    if response.status_int != 204:
        json.loads(response.body)
