"""What the operator finds in Apache's error.log (the WSGI `wsgi.errors` stream) about a
call that failed on the PBX side: one line per 502, 503 or failed MessageSend, naming the
call's uniqueid, extension and destination and what Asterisk said; never a key, the AMI
secret or the message text. And the From the agent's softphone shows for `msg`."""

import json

import pytest
import webtest

from callexchange.config import ConfigError, load_config
from callexchange.http.app import create_app
from testconfig import AMI_SECRET, TEST_API_KEY, config_text

URL = "/api/v1/asteriskapi.pl"
LEAD = "12127773456"
TEXT = "call the lead about invoice 42"


@pytest.fixture
def gateway(tmp_path, keys_file, sandbox, carrier_cache):
    def make(**sections):
        path = tmp_path / "callexchange.ini"
        path.write_text(config_text(tmp_path, sandbox.port, **sections))
        state = tmp_path / "state"
        state.mkdir(exist_ok=True)
        if not (state / "numbers").exists():
            (state / "numbers").symlink_to(carrier_cache, target_is_directory=True)
        return webtest.TestApp(create_app(config=load_config(str(path))))
    return make


def post(app, status, **params):
    body = {"extension": "2001", "destination": LEAD}
    body.update(params)
    response = app.post(URL, params=json.dumps(body), headers={"api-key": TEST_API_KEY},
                        content_type="application/json", status=status, expect_errors=True)
    assert TEST_API_KEY not in response.errors and AMI_SECRET not in response.errors
    assert TEXT not in response.errors
    return response


def logged_lines(response):
    return response.errors.splitlines()


def test_a_503_is_one_line_naming_the_call(gateway, sandbox):
    sandbox.inject("no-banner")
    response = post(gateway(ami={"timeout": "0.5"}), 503)
    [line] = logged_lines(response)
    assert line.startswith("callexchange: call ")
    uniqueid = line.split()[2]
    assert uniqueid.replace(".", "").isdigit()
    assert "(extension 2001, destination %s): 503 " % LEAD in line
    assert "did not answer in time" in line


def test_an_unconfirmed_originate_logs_the_uniqueid_the_reply_gives(gateway, sandbox):
    sandbox.inject("slow-originate=3")
    response = post(gateway(ami={"timeout": "0.5"}), 503)
    [line] = logged_lines(response)
    assert line.startswith("callexchange: call %s (extension 2001" % response.json["uniqueid"])


def test_a_502_logs_what_asterisk_said(gateway, sandbox):
    sandbox.inject("originate-error=Extension does not exist.")
    response = post(gateway(), 502)
    [line] = logged_lines(response)
    assert line.endswith("): 502 Originate refused by Asterisk: Extension does not exist.")


def test_a_refused_login_is_logged_without_the_secret(gateway, sandbox):
    sandbox.inject("refuse-login")
    response = post(gateway(), 502)
    [line] = logged_lines(response)
    assert "502 AMI login refused by Asterisk: Authentication failed" in line


def test_a_failed_messagesend_is_logged_though_the_call_is_placed(gateway, sandbox):
    sandbox.inject("messagesend-error=Message technology not found.")
    response = post(gateway(), 200, msg=TEXT)
    assert response.json["msg_sent"] == "false"
    [line] = logged_lines(response)
    assert line == ("callexchange: call %s (extension 2001, destination %s): the call was "
                    "placed, but the MessageSend to pjsip:2001 failed: MessageSend refused "
                    "by Asterisk: Message technology not found."
                    % (response.json["uniqueid"], LEAD))


def test_a_call_that_went_well_logs_nothing(gateway, sandbox):
    response = post(gateway(), 200, msg=TEXT)
    assert response.json["msg_sent"] == "true"
    assert response.errors == ""


def test_messagesend_carries_the_configured_from(gateway, sandbox):
    post(gateway(), 200, msg=TEXT)
    [message] = sandbox.actions_named("MessageSend")
    assert [k for k, _ in message.pairs[2:]] == ["To", "From", "Body"]
    assert message["From"] == '"CallExchange" <sip:callexchange@localhost>'
    sandbox.reset()
    # another destination: the same one again within 5 s would be a double click
    post(gateway(dial={"message_from": "sip:dialer@pbx.example.com"}), 200, msg=TEXT,
         destination="12127770000")
    assert sandbox.actions_named("MessageSend")[0]["From"] == "sip:dialer@pbx.example.com"


def test_an_empty_message_from_leaves_asterisks_own(gateway, sandbox):
    post(gateway(dial={"message_from": ""}), 200, msg=TEXT)
    [message] = sandbox.actions_named("MessageSend")
    assert message.header("From") is None


@pytest.mark.parametrize("value", ["callexchange", "sip:callexchange", "mailto:a@b",
                                   "sip:a b@host", "CallExchange <sip:a@b", "<sip:@host>",
                                   "Name <sip:a@b> trailing"])
def test_a_message_from_that_is_no_sip_uri_is_a_config_error(tmp_path, value):
    path = tmp_path / "callexchange.ini"
    path.write_text(config_text(tmp_path, 5038, dial={"message_from": value}))
    with pytest.raises(ConfigError) as error:
        load_config(str(path))
    assert "message_from" in str(error.value) and "SIP URI" in str(error.value)


@pytest.mark.parametrize("value", ['"CallExchange" <sip:callexchange@localhost>',
                                   "CallExchange Dialer <sips:dialer@pbx.example.com:5061>",
                                   "sip:callexchange@10.0.0.5"])
def test_message_from_takes_a_sip_uri_with_or_without_a_display_name(tmp_path, value):
    path = tmp_path / "callexchange.ini"
    path.write_text(config_text(tmp_path, 5038, dial={"message_from": value}))
    assert load_config(str(path)).dial.message_from == value


def test_the_caller_id_count_is_synced_while_asterisk_answers_and_before_the_reply(
        gateway, sandbox, monkeypatch):
    import os

    app = gateway()
    post(app, 200, destination="12127773457")   # lays the day's file out (a new file)
    from callexchange.pbx import ami

    order = []
    real_sync, real_send, real_next = os.fdatasync, ami.AmiSession._send, \
        ami.AmiSession.next_message
    monkeypatch.setattr(os, "fdatasync", lambda fd: (order.append("sync"), real_sync(fd))[1])
    monkeypatch.setattr(ami.AmiSession, "_send", lambda self, data, what: (
        order.append("send " + what), real_send(self, data, what))[1])
    monkeypatch.setattr(ami.AmiSession, "next_message", lambda self, *args: (
        order.append("read"), real_next(self, *args))[1])
    response = post(app, 200)
    assert response.json["status"] == "true"
    # The count goes to disk once the Originate has left, before its reply is read, and
    # the reply to the CRM comes after.
    originate = order.index("send Originate")
    assert order[originate:originate + 3] == ["send Originate", "sync", "read"]
    assert order.count("sync") == 1


def test_a_count_the_disk_cannot_sync_still_answers_the_placed_call_and_logs_it(
        gateway, sandbox, monkeypatch, tmp_path):
    import os

    app = gateway()
    post(app, 200)                     # the first call lays the file out (a new file)

    def broken(fd):
        raise OSError(5, "Input/output error")
    monkeypatch.setattr(os, "fdatasync", broken)
    response = post(app, 200, destination="12127773457")
    assert response.json["status"] == "true"
    assert len(sandbox.actions_named("Originate")) == 2
    [line] = [l for l in logged_lines(response) if "caller-ID count" in l]
    assert response.json["uniqueid"] in line
    assert "may not be on disk" in line and "Input/output error" in line
