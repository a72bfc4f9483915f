"""The one duplicate rule (calls/duplicates.py; issue 10 item 5 = issue 11 item 2), end to
end over real AMI: WebTest over the WSGI app, a Sandbox PBX on a loopback port that plays
each call and runs the real dialplan hook at its hangup, which leaves the call's hangup
mark in the spool.

A repeat (same API key, extension and destination) is a duplicate while the first call is
live and within `[dial] dedupe_seconds`, or, whatever the delay, while the first
Originate is unconfirmed and its ring time has not passed: it gets the first reply with
`Idempotent-Replayed: true` and dials nothing. A redial after the first call ended (busy,
no answer, hung up after talking) is a new call. The window is passed by moving the
app's clock, never by sleeping.

Issue 10 item 7 (an unconfirmed Originate retried without an Idempotency-Key after the
5 s window placed a second call): test_an_unconfirmed_originate_is_a_duplicate_for_its_
ring_time_whatever_the_window, with the default dedupe_seconds of 5."""

import json
import os
import re

import pytest
import webtest

from callexchange.config import load_config
from callexchange.http.app import create_app
from callexchange.sandbox.server import Sandbox
from callexchange.statedir import StateDir
from callexchange.webhooks import hook
from callexchange.calls import duplicates
from clock import Clock
from paths import REPO
from schemas import validate
from testconfig import AMI_SECRET, AMI_USERNAME, TEST_API_KEY, config_text

URL = "/api/v1/asteriskapi.pl"
LEAD = "12127773456"
WINDOW = 60           # [dial] dedupe_seconds of these tests
RING = 30             # [dial] ring_timeout (the default)
BUDGET = 1 + 2        # the test config's [ami] connect_timeout + timeout


class Dialer:
    """The gateway over a Sandbox that plays calls with its config (hooks included)."""

    def __init__(self, tmp_path, carrier_cache, dedupe_seconds=WINDOW):
        self.sandbox = Sandbox(host="127.0.0.1", port=0, username=AMI_USERNAME,
                               secret=AMI_SECRET, ring_seconds=0.05,
                               no_answer_seconds=0.1).start()
        path = tmp_path / "callexchange.ini"
        path.write_text(config_text(tmp_path, self.sandbox.port,
                                    dial={"dedupe_seconds": str(dedupe_seconds)}))
        self.config = load_config(str(path))
        self.sandbox.config = self.config          # it runs the hook with this config
        state = tmp_path / "state"
        state.mkdir(exist_ok=True)
        (state / "numbers").symlink_to(carrier_cache, target_is_directory=True)
        self.clock = Clock()
        self.app = webtest.TestApp(create_app(config=self.config, clock=self.clock))

    def call(self, status=200, destination=LEAD, body=None, **more):
        params = dict({"extension": "2001", "destination": destination}, **more)
        response = self.app.post(URL, json.dumps(body or params),
                                 headers={"api-key": TEST_API_KEY},
                                 content_type="application/json", expect_errors=True)
        assert response.status_int == status, response.text
        if "jsonrpc" not in response.text:
            validate("CallSuccess" if status == 200 else "CallError", response.json)
        return response

    def originates(self):
        return [a["ChannelId"] for a in self.sandbox.actions_named("Originate")]

    def hung_up(self, uniqueid):
        return os.path.exists(StateDir(self.config.state.dir).hangup_mark(uniqueid))

    def close(self):
        self.sandbox.wait_for_calls(10)
        self.sandbox.stop()


@pytest.fixture
def dialer(tmp_path, carrier_cache, keys_file):
    made = Dialer(tmp_path, carrier_cache)
    yield made
    made.close()


def replayed(response):
    return response.headers.get("Idempotent-Replayed") == "true"


@pytest.mark.parametrize("outcome", ["busy", "noanswer", "answered:0.2"])
def test_a_redial_after_the_first_call_ended_is_a_new_call(dialer, outcome):
    # An auto-dialer retrying a busy lead: the first call is over, the redial dials.
    dialer.sandbox.set_outcome(LEAD, outcome)
    first = dialer.call()
    assert dialer.sandbox.wait_for_calls(10)
    assert dialer.hung_up(first.json["uniqueid"])   # the hook left the mark at hangup
    dialer.clock.advance(1)                           # well within dedupe_seconds
    second = dialer.call()
    assert not replayed(second)
    assert second.json["uniqueid"] != first.json["uniqueid"]
    assert dialer.originates() == [first.json["uniqueid"], second.json["uniqueid"]]


def test_a_repeat_while_the_call_is_live_and_within_the_window_is_a_duplicate(dialer):
    dialer.sandbox.set_outcome(LEAD, "answered:3")
    first = dialer.call()
    dialer.clock.advance(WINDOW - 1)
    again = dialer.call(destination=" +1 212 777 3456 ")   # the same lead, written otherwise
    assert replayed(again) and again.json == first.json
    assert "Idempotent-Replayed" not in first.headers
    assert dialer.originates() == [first.json["uniqueid"]]
    # It ends: the next redial is a new call, at once.
    assert dialer.sandbox.wait_for_calls(10)
    third = dialer.call()
    assert not replayed(third) and third.json["uniqueid"] != first.json["uniqueid"]
    assert len(dialer.originates()) == 2


def test_a_repeat_of_a_live_call_after_the_window_is_a_new_call(dialer):
    dialer.sandbox.set_outcome(LEAD, "answered:3")
    first = dialer.call()
    dialer.clock.advance(WINDOW)
    second = dialer.call()
    assert not replayed(second) and second.json["uniqueid"] != first.json["uniqueid"]
    assert not dialer.hung_up(first.json["uniqueid"])   # still talking: the window decided
    assert len(dialer.originates()) == 2


def test_another_lead_or_agent_is_never_a_duplicate(dialer):
    dialer.sandbox.set_outcome("*", "answered:3")
    dialer.call()
    assert not replayed(dialer.call(destination="12127773457"))
    assert not replayed(dialer.call(extension="2002"))
    assert len(dialer.originates()) == 3


def test_a_jsonrpc_repeat_of_a_live_call_is_marked_replayed(dialer):
    dialer.sandbox.set_outcome(LEAD, "answered:3")
    request = {"jsonrpc": "2.0", "method": "originate", "id": 7,
               "params": {"extension": "2001", "destination": LEAD}}
    first = dialer.call(body=request)
    again = dialer.call(body=dict(request, id=8))
    assert replayed(again) and again.json["result"] == first.json["result"]
    assert len(dialer.originates()) == 1


def test_an_unconfirmed_originate_is_a_duplicate_for_its_ring_time_whatever_the_window(
        tmp_path, carrier_cache, keys_file):
    dialer = Dialer(tmp_path, carrier_cache, dedupe_seconds=5)
    try:
        # Asterisk takes the Originate and never confirms it within the deadline.
        dialer.sandbox.inject("slow-originate=60")
        first = dialer.call(status=503)
        assert "may have been placed" in first.json["error"]
        uniqueid = first.json["uniqueid"]
        assert dialer.originates() == [uniqueid]
        dialer.sandbox.reset()       # Asterisk answers again; the first may still ring
        # A legacy client retrying without an Idempotency-Key, long after dedupe_seconds.
        dialer.clock.advance(RING + BUDGET - 1)
        retry = dialer.call(status=503)
        assert replayed(retry) and retry.json == first.json
        assert dialer.sandbox.actions_named("Originate") == []
        # Its ring time over, the retry dials.
        dialer.clock.advance(1)
        placed = dialer.call()
        assert not replayed(placed) and placed.json["uniqueid"] != uniqueid
        assert len(dialer.originates()) == 1
    finally:
        dialer.close()


def test_an_originate_refused_or_never_sent_is_no_first_call(dialer):
    dialer.sandbox.inject("originate-error")
    dialer.call(status=502)
    dialer.sandbox.clear_faults()
    assert not replayed(dialer.call())
    assert len(dialer.originates()) == 2


# --- the hook's mark -----------------------------------------------------------------------

def test_the_hook_marks_hangups_in_the_spool_only_and_sweeps_old_marks(tmp_path):
    state = StateDir(str(tmp_path / "state"))
    hook.mark_hangup(None, state.root, "1720039056.22191", clock=lambda: 1_000_000.0)
    mark = state.hangup_mark("1720039056.22191")
    assert os.path.isfile(mark)
    assert os.path.dirname(os.path.dirname(mark)) == state.webhooks   # inside the spool
    hook.mark_hangup(None, state.root, "../../api-keys")               # not an id: nothing
    assert sorted(os.listdir(state.hangups)) == [".swept", "1720039056.22191"]
    os.utime(mark, (1, 1))
    # The next sweep (MARK_SWEEP_EVERY later) removes marks older than MARK_KEEP_SECONDS.
    later = os.stat(os.path.join(state.hangups, ".swept")).st_mtime + hook.MARK_SWEEP_EVERY
    hook.mark_hangup(None, state.root, "1720039999.1", clock=lambda: later)
    assert sorted(os.listdir(state.hangups)) == [".swept", "1720039999.1"]


def test_the_marks_folder_is_open_to_the_spools_group_whatever_the_umask(tmp_path):
    state = StateDir(str(tmp_path / "state"))
    os.makedirs(state.webhooks)
    os.chmod(state.webhooks, 0o2750)            # as install.sh makes the spool
    old = os.umask(0o077)
    try:
        hook.mark_hangup(None, state.root, "1720039056.22191")
    finally:
        os.umask(old)
    assert os.stat(state.hangups).st_mode & 0o7777 == 0o2750


def test_a_mark_that_cannot_be_written_is_logged_and_costs_nothing_else(tmp_path, capsys):
    blocked = tmp_path / "state"
    blocked.mkdir()
    (blocked / "webhooks").write_text("a file where the spool should be")
    hook.mark_hangup(None, str(blocked), "1720039056.22191")
    assert "cannot write the hangup mark of 1720039056.22191" in capsys.readouterr().err


# --- one rule, stated the same everywhere -------------------------------------------------

def rule_text(text):
    """The rule's sentences in `text`: from "A request that repeats a call" to "is a new
    call.", quote marks and line breaks folded."""
    start = text.index("A request that repeats a call")
    end = text.index("is a new call.", start) + len("is a new call.")
    return " ".join(re.sub(r"^\s*>\s?", "", line) for line in text[start:end].splitlines()
                    ).replace("  ", " ").split()


def test_the_readme_and_the_decisions_state_the_rule_the_code_states():
    code = rule_text(duplicates.__doc__)
    assert rule_text((REPO / "README.md").read_text()) == code
    decisions = (REPO / "docs" / "decisions.md").read_text()
    assert rule_text(decisions[decisions.index("## The one duplicate rule"):]) == code
