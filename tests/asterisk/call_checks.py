"""What every call of the real-Asterisk suite must show, whichever test placed it: one
connect for a connected call and none otherwise, exactly one hangup, the talk time, the
disposition and cause, the recording (named, playing, served, listed) only when the call
connected, and one uniqueid throughout.
"""

import time

import audio_checks
import harness


def expected_recording(call):
    """The FreePBX name of SPEC §5, its time the seconds that start the uniqueid."""
    moment = time.localtime(int(call.uniqueid.split(".")[0]))
    return "%s/out-%s-%s-%s-%s.wav" % (time.strftime("%Y/%m/%d", moment), call.destination,
                                       call.params["extension"],
                                       time.strftime("%Y%m%d-%H%M%S", moment), call.uniqueid)


def one_hangup(pbx, call):
    hangups = pbx.webhooks(call.uniqueid, "hangup")
    assert len(hangups) == 1, hangups
    return hangups[0]


def check_webhooks_of_connected_call(pbx, call, crm_id=""):
    """One connect, then one hangup, both of this call; the duration is the talk time
    the PBX saw (second leg's answer to hangup) within a second. Returns the hangup body."""
    connects = pbx.webhooks(call.uniqueid, "connect")
    hangup = one_hangup(pbx, call)
    assert len(connects) == 1, connects
    [connect] = connects
    assert connect.time <= hangup.time
    assert connect.headers["x-callexchange-event"] == "connect"
    assert hangup.headers["x-callexchange-event"] == "hangup"
    assert connect.id != hangup.id
    for request in (connect, hangup):
        body = request.json
        assert body["uniqueid"] == call.uniqueid == call.reply["uniqueid"]
        assert (body["dialed_number"], body["extension"]) == (call.destination,
                                                              call.params["extension"])
        assert body["caller_id"] == call.reply["caller_id"] == harness.ANI
        assert body["crm_id"] == crm_id
    body = hangup.json
    assert (body["disposition"], body["hangup_cause"], body["sequence"]) == ("answered", 16, 2)
    talked = pbx.observer.talk_time(call.uniqueid)
    assert talked is not None and talked > 1, talked
    assert abs(body["duration"] - talked) <= 1, (body["duration"], talked)
    return body


def check_recording_of_connected_call(pbx, call):
    """The recording: its FreePBX name (with the call's uniqueid), a WAV with sound as
    long as the talk, served by Apache as on disk, listed by find_phone_files with its
    duration. Returns (rate, samples)."""
    relative = expected_recording(call)
    assert pbx.recordings_of(call.uniqueid) == [relative]
    hangup = one_hangup(pbx, call).json
    assert hangup["recording_url"] == "http://pbx.test/wav-files/" + relative
    path = pbx.bench.recordings / relative
    rate, samples = audio_checks.read_wav(path)
    seconds = len(samples) / rate
    assert rate == 8000
    assert audio_checks.rms(samples) > 300, "silent recording"
    assert abs(seconds - pbx.observer.talk_time(call.uniqueid)) <= 1, seconds
    assert pbx.fetch_recording(relative) == path.read_bytes()
    [entry] = pbx.find_phone_files(call.destination)
    assert entry["uniqueid"] == call.uniqueid
    assert entry["url"] == "http://pbx.test/wav-files/" + relative
    assert abs(entry["duration"] - seconds) <= 1
    assert abs(entry["duration"] - hangup["duration"]) <= 1
    moment = time.localtime(int(call.uniqueid.split(".")[0]))
    assert (entry["date"], entry["time"]) == (time.strftime("%d/%m/%Y", moment),
                                              time.strftime("%H:%M:%S", moment))
    return rate, samples


def check_connected_call(pbx, call, crm_id=""):
    check_webhooks_of_connected_call(pbx, call, crm_id)
    check_recording_of_connected_call(pbx, call)


def check_call_that_never_connected(pbx, call, disposition, cause):
    """No connect, one hangup with this disposition and cause and duration 0, no
    recording anywhere, nothing for find_phone_files."""
    assert pbx.webhooks(call.uniqueid, "connect") == []
    body = one_hangup(pbx, call).json
    assert body["uniqueid"] == call.uniqueid == call.reply["uniqueid"]
    assert (body["disposition"], body["hangup_cause"]) == (disposition, cause), body
    assert (body["duration"], body["sequence"], body["recording_url"]) == (0, 1, "")
    assert pbx.recordings_of(call.uniqueid) == []
    assert pbx.find_phone_files(call.destination) == []
