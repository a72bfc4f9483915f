"""The sandbox PBX plays whole calls (SPEC §9): after an Originate, per the outcome chosen
for the destination, the real hook runs over AGI pipes (connect, then hangup), a real WAV
is written under the recording root with the FreePBX name, and the webhooks reach a CRM
stand-in through the spool and the deliverer.

End to end: WebTest over the WSGI app -> asteriskapi.pl -> the Sandbox on a loopback AMI
port -> its hooks -> the CRM stand-in, which receives the uniqueid the reply gave.
"""

import json
import os
import signal
import time
import wave

import pytest
import webtest

from callexchange.pbx import ami
from callexchange.sandbox import calls as sandbox_calls
from callexchange.sandbox.agi_peer import DEFAULT_HOOK, agi_reply
from callexchange.http.app import create_app
from callexchange.config import load_config
from callexchange.sandbox.server import Sandbox
from callexchange.webhooks.spool import Spool
from testconfig import AMI_SECRET, AMI_USERNAME, TEST_API_KEY, config_text
from schemas import validate
from crm_standin import SECRET

LEAD = "12127773456"


class Pbx:
    """A gateway config (webhook to the CRM stand-in, extended bodies), the WSGI app, and a
    Sandbox that plays calls with that config."""

    def __init__(self, tmp_path, crm, carrier_cache, outcomes, agents=None):
        self.sandbox = Sandbox(host="127.0.0.1", port=0, username=AMI_USERNAME,
                               secret=AMI_SECRET, outcomes=outcomes, agents=agents,
                               ring_seconds=0.05,
                               no_answer_seconds=0.1).start()
        path = tmp_path / "callexchange.ini"
        path.write_text(config_text(tmp_path, self.sandbox.port, dial={"dedupe_seconds": "0"},
                                    webhook={"url": crm.url, "secret": SECRET,
                                             "extended": "yes"}))
        self.config = load_config(str(path))
        self.sandbox.config = self.config
        state = tmp_path / "state"
        state.mkdir(exist_ok=True)
        (state / "numbers").symlink_to(carrier_cache, target_is_directory=True)
        self.spool = Spool.for_state_dir(self.config.state.dir)
        self.app = webtest.TestApp(create_app(config=self.config))

    def call(self, destination=LEAD, **more):
        params = {"extension": "2001", "destination": destination}
        params.update(more)
        response = self.app.post("/api/v1/asteriskapi.pl", params=json.dumps(params),
                                 headers={"api-key": TEST_API_KEY},
                                 content_type="application/json", status=200)
        return response.json

    def close(self):
        self.sandbox.wait_for_calls(10)
        self.sandbox.stop()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            pid = self.spool.lock_holder()
            if not pid:
                break
            try:  # a deliverer our hooks started, still lingering
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            time.sleep(0.01)


@pytest.fixture
def make_pbx(tmp_path, crm, carrier_cache, keys_file, monkeypatch):
    # The sandbox hands its environment to the hooks, and they to their deliverer.
    monkeypatch.setenv("CALLEXCHANGE_WEBHOOK_LINGER", "2")
    made = []

    def make(outcomes=None, agents=None):
        pbx = Pbx(tmp_path, crm, carrier_cache, outcomes or {}, agents)
        made.append(pbx)
        return pbx

    yield make
    for pbx in made:
        pbx.close()


def test_an_answered_call_sends_connect_then_hangup_with_the_reply_uniqueid(make_pbx, crm):
    pbx = make_pbx({LEAD: "answered:1"})
    reply = pbx.call(crm_id="lead-42")
    uniqueid = reply["uniqueid"]
    assert pbx.sandbox.wait_for_calls(10)
    connect, hangup = crm.wait_for(2)
    assert [connect.id, hangup.id] == ["msg_%s_connect" % uniqueid, "msg_%s_hangup" % uniqueid]
    assert connect.json["uniqueid"] == hangup.json["uniqueid"] == uniqueid
    assert connect.json["dialed_number"] == LEAD and connect.json["extension"] == "2001"
    assert connect.json["caller_id"] == reply["caller_id"]
    assert connect.json["crm_id"] == "lead-42"
    assert hangup.json["duration"] == 1 and hangup.json["disposition"] == "answered"
    assert hangup.json["sequence"] == 2 and hangup.json["hangup_cause"] == 16
    validate("ConnectEvent", connect.json)
    validate("HangupEvent", hangup.json)
    # Order at the CRM; the talk time itself is `duration` (arrival gaps depend on whether
    # the deliverer was already running, so they say nothing about the call).
    assert hangup.time >= connect.time

    # The recording: a real WAV with the FreePBX name, where recording_url points.
    relative = sandbox_calls.recording_path(uniqueid, LEAD, "2001")
    path = os.path.join(pbx.config.recordings.root, relative)
    assert os.path.basename(path).startswith("out-%s-2001-" % LEAD)
    assert path.endswith("-%s.wav" % uniqueid)
    assert relative[:10] == time.strftime("%Y/%m/%d", time.localtime(int(uniqueid.split(".")[0])))
    with wave.open(path) as recording:
        assert (recording.getframerate(), recording.getsampwidth(), recording.getnchannels()) \
            == (8000, 2, 1)
        assert recording.getnframes() == 8000
    assert hangup.json["recording_url"] == "%s/%s" % (pbx.config.recordings.base_url, relative)
    assert connect.json["recording_url"] == hangup.json["recording_url"]


# What the real-Asterisk suite (tests/asterisk/test_asterisk_calls.py) sees for each case:
# (dialer mode, lead's outcome, agent's outcome) -> (disposition, hangup_cause).
NEVER_CONNECTED = [
    (dialer, lead, agent, disposition, cause)
    for dialer in (False, True)
    for lead, agent, disposition, cause in [
        ("busy", "answered", "busy", 17), ("noanswer", "answered", "no_answer", 19),
        ("congestion", "answered", "congestion", 34), ("failed", "answered", "failed", 20),
        ("answered:1", "busy", "busy", 17), ("answered:1", "noanswer", "no_answer", 19),
        ("answered:1", "unreachable", "failed", 3 if dialer else 0)]]


@pytest.mark.parametrize("dialer, lead, agent, disposition, cause", NEVER_CONNECTED)
def test_a_call_that_never_connects_sends_only_its_hangup_as_a_real_one(
        make_pbx, crm, dialer, lead, agent, disposition, cause):
    pbx = make_pbx({LEAD: lead}, {"2001": agent})
    uniqueid = pbx.call(call_in_out=dialer)["uniqueid"]
    assert pbx.sandbox.wait_for_calls(10)
    hangup = crm.wait_for(1)[0]
    assert hangup.id == "msg_%s_hangup" % uniqueid
    assert (hangup.json["disposition"], hangup.json["hangup_cause"]) == (disposition, cause)
    assert hangup.json["duration"] == 0
    assert hangup.json["sequence"] == 1 and hangup.json["recording_url"] == ""
    validate("HangupEvent", hangup.json)
    time.sleep(0.2)
    assert len(crm.requests) == 1
    assert not os.path.exists(pbx.config.recordings.root) or not any(
        files for _, _, files in os.walk(pbx.config.recordings.root))


def test_a_dialer_call_connects_when_the_agent_answers(make_pbx, crm):
    pbx = make_pbx({LEAD: "answered:1"})
    uniqueid = pbx.call(call_in_out=True)["uniqueid"]
    assert pbx.sandbox.wait_for_calls(10)
    connect, hangup = crm.wait_for(2)
    assert [connect.id, hangup.id] == ["msg_%s_connect" % uniqueid, "msg_%s_hangup" % uniqueid]
    assert (hangup.json["disposition"], hangup.json["duration"],
            hangup.json["hangup_cause"]) == ("answered", 1, 16)


def test_outcomes_are_chosen_per_destination(make_pbx, crm):
    pbx = make_pbx({LEAD: "busy", "*": "answered:0"})
    first = pbx.call()["uniqueid"]
    second = pbx.call(destination="12127770000")["uniqueid"]
    assert pbx.sandbox.wait_for_calls(10)
    requests = crm.wait_for(3)
    by_id = {r.id: r.json for r in requests}
    assert by_id["msg_%s_hangup" % first]["disposition"] == "busy"
    assert by_id["msg_%s_hangup" % second]["disposition"] == "answered"
    assert "msg_%s_connect" % second in by_id


def test_a_sandbox_without_config_plays_the_events_but_no_hooks_or_recording(tmp_path, capsys):
    with Sandbox(username=AMI_USERNAME, secret=AMI_SECRET, hook=str(tmp_path / "no-hook"),
                 ring_seconds=0, outcomes={LEAD: "answered:0"}) as pbx:
        with ami.AmiSession("127.0.0.1", pbx.port, AMI_USERNAME, AMI_SECRET, 1, 2) as session:
            session.login(events=True)
            ami.originate(session, channel="PJSIP/2001", context="callexchange-outbound",
                          exten=LEAD, channel_id="1700000000.8", timeout_ms=1000,
                          variables=[("__CX_UNIQUEID", "1700000000.8")])
            assert session.next_event("OriginateResponse")["Reason"] == "4"
            hangup = session.next_event("Hangup")
        assert pbx.wait_for_calls(5)
    assert hangup["Linkedid"] == "1700000000.8"
    assert "no hook" not in capsys.readouterr().err  # no hook was even looked for
    assert list(tmp_path.iterdir()) == []


def test_a_missing_hook_is_reported_and_the_recording_still_written(make_pbx, crm, capsys):
    pbx = make_pbx({LEAD: "answered:0.2"})
    pbx.sandbox.hook = "/nonexistent/callexchange-webhook.agi"
    uniqueid = pbx.call()["uniqueid"]
    assert pbx.sandbox.wait_for_calls(10)
    assert "no hook at /nonexistent" in capsys.readouterr().err
    assert crm.requests == []
    relative = sandbox_calls.recording_path(uniqueid, LEAD, "2001")
    with wave.open(os.path.join(pbx.config.recordings.root, relative)) as recording:
        assert recording.getnframes() == 1600


def test_default_hook_is_the_checkouts_agi_script():
    assert DEFAULT_HOOK.endswith(os.path.join("agi-bin",
                                                            "callexchange-webhook.agi"))
    assert os.access(DEFAULT_HOOK, os.X_OK)


def test_recording_path_is_the_freepbx_name_in_day_folders():
    assert sandbox_calls.recording_path("1720039062.22191", LEAD, "2001", localtime=time.gmtime) \
        == "2024/07/03/out-12127773456-2001-20240703-203742-1720039062.22191.wav"


def test_record_call_writes_the_talk_time_of_audio(tmp_path):
    path = str(tmp_path / "a" / "b.wav")
    talked = sandbox_calls.record_call(path, 0.25)
    assert talked == pytest.approx(0.25, abs=0.05)
    with wave.open(path) as recording:
        assert recording.getnframes() == 2000
        frames = recording.readframes(2000)
    assert frames.count(b"\x00") < len(frames)  # a tone, not silence


def test_agi_reply_answers_like_asterisk():
    variables = {"CX_UNIQUEID": "1.2", "EMPTY": ""}
    assert agi_reply("GET VARIABLE CX_UNIQUEID", variables) == \
        b"200 result=1 (1.2)\n"
    assert agi_reply("GET VARIABLE EMPTY", variables) == b"200 result=1 ()\n"
    assert agi_reply("GET VARIABLE NOPE", variables) == b"200 result=0\n"
    assert agi_reply("EXEC System rm", variables).startswith(b"510")
    assert agi_reply('GET FULL VARIABLE "${CX_UNIQUEID}|${NOPE}|x"',
                                   variables) == b"200 result=1 (1.2||x)\n"


def test_reset_hangs_up_a_call_in_progress_which_still_sends_its_hangup(make_pbx, crm):
    pbx = make_pbx({LEAD: "answered:60"})
    uniqueid = pbx.call()["uniqueid"]
    connect = crm.wait_for(1)[0]
    assert connect.id == "msg_%s_connect" % uniqueid
    assert pbx.sandbox.calls_in_progress() == 1
    assert pbx.sandbox.reset(10)
    assert pbx.sandbox.calls_in_progress() == 0
    hangup = crm.wait_for(2)[1]
    assert hangup.id == "msg_%s_hangup" % uniqueid
    assert hangup.json["disposition"] == "answered" and hangup.json["duration"] < 60
