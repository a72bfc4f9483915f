"""The persistent mode's AMI link through the real Apache: mod_wsgi daemon processes
(apache/callexchange-wsgi.conf.in, apache/callexchange.wsgi) keep one logged-in AMI
connection each, and a CRM sees the same replies as from the CGI when Asterisk drops the
connection, goes away, comes back, or never confirms an Originate.
"""

import json
import shutil
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

import apache_server
from callexchange.keys import digest
from callexchange.sandbox.server import Sandbox
from testconfig import AMI_SECRET, AMI_USERNAME, TEST_API_KEY, config_text

CALL = "/api/v1/asteriskapi.pl"
# [ami] connect_timeout 1 + timeout 2 (testconfig), and some slack for Apache and a busy
# machine; a daemon process pays no interpreter start.
DEADLINE = 1 + 2 + 1.5


class Bench:
    """A sandbox PBX on a fixed port (it can be stopped and started again) and a private
    Apache serving the gateway from mod_wsgi daemon processes."""

    def __init__(self):
        apache_server.require_apache("wsgi")
        self.base = apache_server.shared_tempdir("cx-persistent-")
        self.sandbox = Sandbox(username=AMI_USERNAME, secret=AMI_SECRET).start()
        self.port = self.sandbox.port
        state = apache_server.writable_dir(self.base / "state")
        recordings = self.base / "recordings"
        recordings.mkdir(mode=0o755)
        keys = self.base / "api-keys"
        keys.write_text("tests\t%s\t2024-07-03T00:00:00Z\n" % digest(TEST_API_KEY))
        keys.chmod(0o644)
        self.config = self.base / "callexchange.ini"
        self.config.write_text(config_text(self.base, self.port, dial={"dedupe_seconds": "0"},
                                           ani={"daily_limit": "1000000"}))
        self.config.chmod(0o644)
        # The persistent mode only: its daemon processes' AMI link is what this is about.
        self.apache = apache_server.ApacheServer(self.base, self.config, recordings,
                                                 mode="wsgi", state_dir=state, keys_file=keys)

    def call(self, destination, extension="2001"):
        started = time.monotonic()
        response = requests.post(self.apache.url + CALL, timeout=30, data=json.dumps(
            {"extension": extension, "destination": destination}),
            headers={"api-key": TEST_API_KEY, "Content-Type": "application/json"})
        return response, time.monotonic() - started

    def restart_sandbox(self):
        self.sandbox.stop()
        self.sandbox = Sandbox(port=self.port, username=AMI_USERNAME,
                               secret=AMI_SECRET).start()

    def explain(self, response):
        return "%s %s\n%s" % (response.status_code, response.text[:1000],
                              self.apache.error_log()[-3000:])

    def close(self):
        try:
            self.apache.stop()
        finally:
            self.sandbox.stop()
            shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture(scope="module")
def bench():
    bench = Bench()
    yield bench
    bench.close()


@pytest.fixture
def pbx(bench):
    bench.sandbox.reset()
    yield bench.sandbox
    bench.sandbox.clear_faults()


def placed(bench, response):
    assert response.status_code == 200, bench.explain(response)
    uniqueid = response.json()["uniqueid"]
    assert [a for a in bench.sandbox.actions_named("Originate")
            if a["ChannelId"] == uniqueid], uniqueid
    return uniqueid


def test_the_daemon_processes_log_in_once_for_every_call(bench, pbx):
    for n in range(20):
        placed(bench, bench.call("1212555%04d" % n)[0])
    with ThreadPoolExecutor(max_workers=12) as pool:
        replies = list(pool.map(lambda n: bench.call("1213555%04d" % n)[0], range(36)))
    assert len({placed(bench, response) for response in replies}) == 36
    # Two daemon processes (callexchange-wsgi.conf.in): at most two logins, no logoff.
    actions = [a.action for a in pbx.actions]
    assert 1 <= actions.count("Login") <= 2, actions.count("Login")
    assert actions.count("Originate") == 56
    assert "Logoff" not in actions
    assert len({a.connection for a in pbx.actions}) == actions.count("Login")


def test_a_connection_asterisk_dropped_costs_no_call(bench, pbx):
    placed(bench, bench.call("12145550001")[0])
    pbx.reset()  # closes every AMI connection, as a restarting Asterisk does
    for n in range(6):
        response, seconds = bench.call("1214555%04d" % (n + 2))
        placed(bench, response)
        assert seconds < DEADLINE
    assert 1 <= len(pbx.actions_named("Login")) <= 2


def test_asterisk_away_is_a_503_that_placed_nothing_and_back_it_takes_calls(bench, pbx):
    placed(bench, bench.call("12155550001")[0])
    bench.sandbox.stop()
    try:
        for _ in range(2):  # whichever daemon process answers
            response, seconds = bench.call("12155550002")
            body = response.json()
            assert response.status_code == 503, bench.explain(response)
            assert seconds < DEADLINE
            assert "uniqueid" not in body and "may have been placed" not in body["error"]
            assert body["message"] == "We fail on making a call. caller : 2001, callee : 12155550002"
    finally:
        bench.restart_sandbox()
    for n in range(4):
        placed(bench, bench.call("1215555%04d" % (n + 3))[0])


def test_an_originate_asterisk_never_confirms_is_a_503_that_may_have_been_placed(bench, pbx):
    placed(bench, bench.call("12165550001")[0])
    pbx.inject("slow-originate=5")
    response, seconds = bench.call("12165550002")
    body = response.json()
    assert response.status_code == 503, bench.explain(response)
    assert "may have been placed" in body["error"]
    assert seconds < DEADLINE
    # The Originate did reach the PBX, under the uniqueid the CRM was given.
    assert [a for a in pbx.actions_named("Originate") if a["ChannelId"] == body["uniqueid"]]
    pbx.clear_faults()
    placed(bench, bench.call("12165550003")[0])
