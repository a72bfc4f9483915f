"""The real-Asterisk suite's fixtures: one private Asterisk per test session (harness.py),
SIPp as agent 2001, the private Apache with the CGI, and the CRM stand-in receiving the
webhooks; `pbx` places calls exactly as a CRM does (HTTP POST to asteriskapi.pl).

Asterisk comes from $ASTERISK, else PATH, else /opt/asterisk-22.10.1 (where the CI builds
it). Without one the suite is skipped on a developer's machine and fails under CI=true,
as it does without sipp or Apache.
"""

import json
import os
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import apache_server  # noqa: E402
import harness  # noqa: E402
from ami_wire import Observer  # noqa: E402
from crm_standin import CrmStandIn  # noqa: E402
from private_asterisk import HOW_TO_RUN, find_asterisk  # noqa: E402
from sipp_agent import find_sipp  # noqa: E402

CALL_URL = "/api/v1/asteriskapi.pl"
FIND_URL = "/recorded/v1/find_phone_files.pl"
# The longest call of the suite is ring + ring + talk, ~9 s; its webhooks come within
# seconds of its end. A generous bound, never waited for when things work.
CALL_DEADLINE = 60.0


def _missing(what):
    """Fail under CI (the suite must run there), skip elsewhere, saying how to run it."""
    if os.environ.get("CI") == "true":
        pytest.fail("CI=true but %s: the real-Asterisk suite must run in CI" % what,
                    pytrace=False)
    pytest.skip("%s; to run the real-Asterisk suite: %s" % (what, HOW_TO_RUN))


@pytest.fixture(scope="session")
def asterisk_binary():
    binary = find_asterisk()
    if not binary or not os.access(binary, os.X_OK):
        _missing("no Asterisk found ($ASTERISK, PATH or /opt/asterisk-22.10.1)")
    if not find_sipp():
        _missing("sipp is not installed (apt-get install sip-tester)")
    apache_server.require_apache()
    return binary


class PlacedCall:
    """One call placed through Apache: what was sent, the HTTP reply, and what happened."""

    def __init__(self, name, params, response):
        self.name = name
        self.params = params
        self.status = response.status_code
        self.reply = response.json()
        self.uniqueid = self.reply.get("uniqueid", "")
        self.placed_at = time.time()

    @property
    def destination(self):
        return self.params["destination"]

    def __repr__(self):
        return "<PlacedCall %s %s>" % (self.name, self.uniqueid)


class Pbx:
    """The session's bench, seen from the tests."""

    def __init__(self, bench, crm, observer):
        self.bench = bench
        self.crm = crm
        self.observer = observer
        self.asterisk = bench.pbx
        self.apache = bench.apache
        self.agent = bench.agent

    def restart(self):
        """Stop Asterisk (if it runs) and start it again, same tree and ports; the
        observer logs in again."""
        self.asterisk.stop()
        self.asterisk.start()
        self.observer.reconnect()

    # --- placing calls as a CRM does ----------------------------------------------------

    def post(self, params, timeout=30):
        return requests.post(self.apache.url + CALL_URL, data=json.dumps(params),
                             headers={"api-key": harness.API_KEY,
                                      "Content-Type": "application/json"}, timeout=timeout)

    def place(self, name, extension, destination, dialer, **more):
        params = {"extension": extension, "destination": destination, "call_in_out": dialer}
        params.update(more)
        call = PlacedCall(name, params, self.post(params))
        assert call.status == 200, (call.reply, self.apache.error_log()[-2000:])
        assert call.reply["status"] == "true", call.reply
        return call

    def place_all(self, specs):
        """Place calls at once, one thread each: specs are place()'s arguments (tuples
        name, extension, destination, dialer, params)."""
        with ThreadPoolExecutor(max_workers=len(specs)) as pool:
            futures = [pool.submit(self.place, name, ext, dest, dialer, **more)
                       for name, ext, dest, dialer, more in specs]
            return [future.result() for future in futures]

    # --- what came of them ------------------------------------------------------------------

    def webhooks(self, uniqueid, event=None):
        """The CRM requests of one call (optionally of one event), in arrival order."""
        with self.crm._lock:
            requests_ = list(self.crm.requests)
        found = []
        for request in requests_:
            try:
                body = request.json
            except ValueError:
                continue
            if body.get("uniqueid") == uniqueid and (event is None or body.get("event") == event):
                found.append(request)
        return found

    def active_channels(self):
        out = self.asterisk.cli("core show channels count")
        for line in out.splitlines():
            if "active channel" in line:
                return int(line.split()[0])
        raise AssertionError("unexpected 'core show channels count' output: %r" % out)

    def spool_pending(self):
        from callexchange.webhooks.spool import Spool

        return Spool.for_state_dir(str(self.bench.state)).pending()

    def wait_until_over(self, calls, timeout=CALL_DEADLINE, fail=True):
        """Wait until every call's hangup webhook has arrived, Asterisk has no channel
        left and the webhook spool is empty: whatever webhooks these calls will ever
        send have been sent (a late duplicate included). Raises AssertionError after
        `timeout` seconds, or with fail=False returns what was still missing (the tests
        of each call then say what is wrong with it); "" when all is over."""
        try:
            self._wait_until_over(calls, timeout)
        except AssertionError as error:
            if fail:
                raise
            return str(error)
        return ""

    def _wait_until_over(self, calls, timeout):
        deadline = time.monotonic() + timeout
        for condition, what in (
                (lambda: all(self.webhooks(c.uniqueid, "hangup") for c in calls),
                 "a hangup webhook for every call"),
                (lambda: self.active_channels() == 0, "Asterisk without channels"),
                (lambda: not self.spool_pending(), "the webhook spool drained")):
            while not condition():
                if time.monotonic() > deadline:
                    missing = [c for c in calls if not self.webhooks(c.uniqueid, "hangup")]
                    raise AssertionError("no %s within %ss; calls without a hangup: %r\n"
                                         "channels: %s\n%s" % (
                                             what, timeout, missing,
                                             self.asterisk.cli("core show channels"),
                                             self.asterisk.log_tail()))
                time.sleep(0.1)

    def recordings_of(self, uniqueid):
        """Every file under the recording root whose name holds the uniqueid."""
        root = self.bench.recordings
        return sorted(str(p.relative_to(root)) for p in root.rglob("*") if uniqueid in p.name)

    def find_phone_files(self, phone):
        response = requests.get(self.apache.url + FIND_URL, params={"phone": phone},
                                headers={"api-key": harness.API_KEY}, timeout=30)
        assert response.status_code == 200, response.text
        return response.json()

    def fetch_recording(self, relative):
        response = requests.get("%s/wav-files/%s" % (self.apache.url, relative), timeout=30)
        assert response.status_code == 200, (relative, response.status_code)
        return response.content


@pytest.fixture(scope="session")
def pbx(asterisk_binary, apache_mode):
    """The session's private PBX bench, started once per Apache mode (CGI, mod_wsgi);
    everything stopped at the end."""
    base = apache_server.shared_tempdir("cx-asterisk-")
    crm = CrmStandIn()
    bench = harness.Bench(asterisk_binary, base, webhook_url=crm.url)
    observer = None
    try:
        bench.start_pbx()
        bench.start_agent()
        bench.start_apache(mode=apache_mode)
        observer = Observer(bench.ami_port, harness.OBSERVER_USERNAME, harness.OBSERVER_SECRET)
        yield Pbx(bench, crm, observer)
    finally:
        if observer is not None:
            observer.close()
        problems = bench.close()
        crm.close()
        shutil.rmtree(base, ignore_errors=True)
        assert not problems, problems


@pytest.fixture
def crm_up(pbx):
    """The CRM stand-in answering 200 again after a test that took it down."""
    yield pbx.crm
    pbx.crm.answer(200)
    if pbx.crm.server is None:
        pbx.crm.up()
