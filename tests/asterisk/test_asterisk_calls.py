"""Every way a call can end, end to end on a real Asterisk, in both modes: placed by an
HTTP POST to the private Apache's asteriskapi.pl, rung by the project's dialplan, heard
through PJSIP (fake agents looped through SIP, SIPp as agent 2001) and a fake carrier,
reported by the hook's webhooks to the CRM stand-in, recorded by MixMonitor and listed
by find_phone_files.pl.

All calls of this module are placed at once (one module fixture) and checked one by one
afterwards, so the module takes about as long as its longest call. What the PBX saw
(when the second leg answered, when the call ended, how long each phone rang) comes from
an AMI observer session, independent of the code under test.
"""

import os
import re

import pytest

import audio_checks
import harness
from call_checks import (check_call_that_never_connected, check_recording_of_connected_call,
                         check_webhooks_of_connected_call, expected_recording)

AGENT_FIRST, DIALER = False, True
MODES = {AGENT_FIRST: "agent_first", DIALER: "dialer"}
# The fake carrier's last digit (tests/asterisk/etc/extensions.conf.in).
ANSWERS, BUSY, NO_ANSWER, CONGESTION, UNREACHABLE = "1", "2", "3", "4", "0"


class Case:
    def __init__(self, name, dialer, agent, lead, disposition=None, cause=None, **params):
        self.name = "%s-%s" % (MODES[dialer], name)
        self.dialer = dialer
        self.agent = agent
        self.lead = lead
        self.disposition = disposition or "answered"
        self.cause = cause if cause is not None else 16
        self.connected = self.disposition == "answered"
        self.params = params


def cases():
    found = []
    answering = iter(harness.ANSWERING_AGENTS)
    for dialer in (AGENT_FIRST, DIALER):
        found += [
            Case("lead_answers", dialer, next(answering), ANSWERS, crm_id="lead 7, NY"),
            Case("lead_busy", dialer, next(answering), BUSY, "busy", 17),
            Case("lead_no_answer", dialer, next(answering), NO_ANSWER, "no_answer", 19),
            Case("lead_congestion", dialer, next(answering), CONGESTION, "congestion", 34),
            Case("lead_unreachable", dialer, next(answering), UNREACHABLE, "failed", 20),
            Case("agent_busy", dialer, harness.BUSY_AGENTS[dialer], ANSWERS, "busy", 17),
            Case("agent_no_answer", dialer, harness.SILENT_AGENTS[dialer], ANSWERS,
                 "no_answer", 19),
            # Agent first no channel is ever made (no contact), so no cause but 0; in dialer
            # mode the ;1's Dial reports PJSIP's 3 (no route to destination).
            Case("agent_unreachable", dialer, harness.OFFLINE_AGENTS[dialer], ANSWERS,
                 "failed", 3 if dialer else 0),
            Case("voice_pitch", dialer, harness.SIPP_AGENT, ANSWERS, voice_pitch=1.5),
        ]
    found.append(Case("msg", AGENT_FIRST, harness.SIPP_AGENT, BUSY, "busy", 17,
                      msg="Lead 7 calls about invoice 12, café ☕"))
    return found


CASES = {case.name: case for case in cases()}
CONNECTED = [name for name, case in CASES.items() if case.connected]
NOT_CONNECTED = [name for name, case in CASES.items() if not case.connected]


def destination(index, last_digit):
    """A lead's number of its own per case (find_phone_files looks it up alone)."""
    return "1212555%03d%s" % (index, last_digit)


@pytest.fixture(scope="module")
def calls(pbx):
    """Every case's call, placed at once; returns {case name: PlacedCall} once all ended."""
    specs = [(name, case.agent, destination(index, case.lead), case.dialer, case.params)
             for index, (name, case) in enumerate(CASES.items(), 10)]
    placed = pbx.place_all(specs)
    # Not fatal here: each test then says what is wrong with its own call.
    pbx.wait_until_over(placed, timeout=30, fail=False)
    return {call.name: call for call in placed}


@pytest.mark.parametrize("name", CONNECTED)
def test_a_connected_call_sends_one_connect_then_one_hangup_with_the_talk_time(pbx, calls, name):
    check_webhooks_of_connected_call(pbx, calls[name], CASES[name].params.get("crm_id", ""))


@pytest.mark.parametrize("name", CONNECTED)
def test_a_connected_calls_recording_is_named_plays_and_is_listed(pbx, calls, name):
    check_recording_of_connected_call(pbx, calls[name])


@pytest.mark.parametrize("dialer", [AGENT_FIRST, DIALER], ids=MODES.values())
def test_voice_pitch_moves_the_agents_tone_in_the_recording(pbx, calls, dialer):
    # SIPp's 350 Hz "voice" at voice_pitch 1.5 is 525 Hz in what the lead heard; the fake
    # agents talk at pitch 1: their 350 Hz stays. (The lead beeps at 440 Hz.)
    scan = [f for f in range(250, 701, 5) if abs(f - 440) > 20]
    for name, expected in (("voice_pitch", 525), ("lead_answers", 350)):
        call = calls["%s-%s" % (MODES[dialer], name)]
        rate, samples = audio_checks.read_wav(pbx.bench.recordings / expected_recording(call))
        middle = samples[len(samples) // 2 - rate // 2:len(samples) // 2 + rate // 2]
        assert abs(audio_checks.strongest(middle, rate, scan) - expected) <= 10, name
        other = 350 if expected == 525 else 525
        assert audio_checks.power(middle, rate, expected) > 20 * audio_checks.power(
            middle, rate, other), name


# --- calls that never connect -----------------------------------------------------------------

@pytest.mark.parametrize("name", NOT_CONNECTED)
def test_a_call_that_never_connects_sends_only_its_hangup_and_leaves_no_recording(
        pbx, calls, name):
    check_call_that_never_connected(pbx, calls[name], CASES[name].disposition, CASES[name].cause)


# --- ring times (asterisk/README.md: ring_timeout the agent's, CX_LEAD_RING the lead's) --

def rang(pbx, call, dialer_side):
    """Seconds from DialBegin to DialEnd of the Dial that `dialer_side` ran: "first" the
    Originate's channel (uniqueid = the call's), "lead" the Local ;2 that dials the lead."""
    def of_call(name):
        events = pbx.observer.events(name, Linkedid=call.uniqueid)
        if dialer_side == "first":
            return [e for e in events if e.get("Uniqueid") == call.uniqueid]
        return [e for e in events if e.get("Uniqueid") != call.uniqueid
                and "@fake-carrier" in (e.get("DestChannel") or "")]
    [begin], [end] = of_call("DialBegin"), of_call("DialEnd")
    return end.at - begin.at, end.get("DialStatus")


def test_an_agent_rings_ring_timeout_in_both_modes(pbx, calls):
    agent_first = calls["agent_first-agent_no_answer"]
    created = pbx.observer.events("Newchannel", Uniqueid=agent_first.uniqueid)[0]
    gone = pbx.observer.events("Hangup", Uniqueid=agent_first.uniqueid)[0]
    assert abs(gone.at - created.at - harness.AGENT_RING_TIMEOUT) < 1
    # Dialer mode: [dial] ring_timeout, not the stale global CX_AGENT_RING (90) of the
    # test dialplan.
    seconds, status = rang(pbx, calls["dialer-agent_no_answer"], "first")
    assert status == "NOANSWER" and abs(seconds - harness.AGENT_RING_TIMEOUT) < 1


def test_a_lead_rings_cx_lead_ring_in_both_modes(pbx, calls):
    for mode, side in (("agent_first", "first"), ("dialer", "lead")):
        seconds, status = rang(pbx, calls["%s-lead_no_answer" % mode], side)
        assert status == "NOANSWER" and abs(seconds - harness.LEAD_RING) < 1, mode
    # The dialer Originate's Timeout no longer cuts a lead short at ring_timeout.
    assert harness.LEAD_ANSWERS_AFTER > harness.AGENT_RING_TIMEOUT
    seconds, status = rang(pbx, calls["dialer-lead_answers"], "lead")
    assert status == "ANSWER" and seconds > harness.AGENT_RING_TIMEOUT


# --- the message to the softphone -----------------------------------------------------------

def test_msg_reaches_the_agents_softphone_as_a_sip_message(pbx, calls):
    call = calls["agent_first-msg"]
    assert call.reply["msg_sent"] == "true"
    [message] = [m for m in pbx.agent.messages()
                 if m["body"] == CASES["agent_first-msg"].params["msg"]]
    assert message["request"].startswith("MESSAGE sip:%s@127.0.0.1:" % harness.SIPP_AGENT)
    assert message["headers"]["content-type"].startswith("text/plain")


@pytest.mark.usefixtures("calls")
def test_msg_comes_from_callexchange_not_from_the_agent_itself(pbx):
    text = CASES["agent_first-msg"].params["msg"]
    [message] = [m for m in pbx.agent.messages() if m["body"] == text]
    assert re.search(r"<?sip:callexchange@[^>;]+>?", message["headers"]["from"]), \
        message["headers"]["from"]


# --- the duplicate rule's "hangup known" (calls/duplicates.py) ---------------------------------

@pytest.mark.parametrize("name", list(CASES))
def test_every_call_leaves_its_hangup_mark_for_the_duplicate_rule(pbx, calls, name):
    # The real dialplan runs the hook at every call's hangup, connected or not, in both
    # modes: its mark in the spool is what makes a redial after the call a new call.
    from callexchange.calls.duplicates import hangup_known
    from callexchange.statedir import StateDir
    assert hangup_known(str(pbx.bench.state), calls[name].uniqueid), sorted(
        os.listdir(StateDir(str(pbx.bench.state)).hangups)
        if os.path.isdir(StateDir(str(pbx.bench.state)).hangups) else [])
