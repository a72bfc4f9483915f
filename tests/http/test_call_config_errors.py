"""A broken server side: a config, keys file or state dir that cannot be used is a
500 JSON reply naming the file (and line) and what is wrong, never a call."""

import json

import webtest

from call_gateway import call
from callexchange.http.app import create_app
from testconfig import TEST_API_KEY, config_text


def test_broken_config_is_a_500_json_naming_file_and_line(gateway, tmp_path):
    path = tmp_path / "broken.ini"
    path.write_text(config_text(tmp_path, gateway.sandbox.port, dial={"bogus_key": "1"}))
    line = path.read_text().splitlines().index("bogus_key = 1") + 1
    app = webtest.TestApp(create_app(config_path=str(path)))
    body = gateway.post(call(), app=app, status=500, expect_errors=True).json
    assert "%s:%d" % (path, line) in body["error"]
    assert "bogus_key" in body["error"]
    assert gateway.sandbox.actions == []


def test_missing_config_file_is_a_500_json_naming_the_file(gateway, tmp_path):
    path = tmp_path / "nowhere.ini"
    app = webtest.TestApp(create_app(config_path=str(path)))
    body = gateway.post(call(), app=app, status=500, expect_errors=True).json
    assert str(path) in body["error"]


def test_unknown_default_region_is_a_500_naming_file_and_line(tmp_path, sandbox, keys_file):
    path = tmp_path / "region.ini"
    path.write_text(config_text(tmp_path, sandbox.port, dial={"default_region": "XX"}))
    app = webtest.TestApp(create_app(str(path)))
    response = app.post("/api/v1/asteriskapi.pl",
                        json.dumps({"extension": "2001", "destination": "2125550199"}),
                        headers={"api-key": TEST_API_KEY}, status=500, expect_errors=True)
    line = [n for n, text in enumerate(path.read_text().splitlines(), 1)
            if text.startswith("default_region")][0]
    assert "%s:%d: [dial] default_region 'XX' is not a region" % (path, line) \
        in response.json["error"]
    assert sandbox.actions_named("Originate") == []


def test_a_config_error_reply_still_names_caller_and_callee(tmp_path):
    path = tmp_path / "broken.ini"
    path.write_text("[nonsense]\n")
    app = webtest.TestApp(create_app(str(path)))
    response = app.post("/api/v1/asteriskapi.pl",
                        json.dumps({"extension": "2001", "destination": "12127773456"}),
                        headers={"api-key": TEST_API_KEY}, status=500, expect_errors=True)
    assert response.json["message"] == ("We fail on making a call. caller : 2001, "
                                        "callee : 12127773456")
    assert "%s:1: unknown section [nonsense]" % path in response.json["error"]


def test_a_missing_keys_file_is_a_500_naming_it_not_a_401(gateway, tmp_path):
    gateway.configure(auth={"keys_file": str(tmp_path / "nowhere" / "api-keys")})
    body = gateway.post(call(), status=500, expect_errors=True).json
    assert "nowhere/api-keys: keys file not found" in body["error"]
    assert gateway.originates() == []


def test_a_state_dir_that_cannot_be_written_is_a_500_naming_it(gateway, tmp_path):
    blocked = tmp_path / "blocked"
    blocked.write_text("a file, not a directory")
    gateway.configure(state={"dir": str(blocked)})
    body = gateway.post(call(), status=500, expect_errors=True).json
    assert "cannot use the state dir %s" % blocked in body["error"]
    assert gateway.originates() == []
