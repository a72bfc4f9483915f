"""The real-PBX test bench, assembled: a private Asterisk with the project's dialplan, the
gateway's config (one callexchange.ini for the CGI and the hook), SIPp as agent 2001, and
the timing of the fake carrier and agents. Used by conftest.py and by ami_recorder.py.

Timing (seconds; kept short so that the suite stays fast, but apart enough that the
ring-time and talk-time rules are measurable):

    AGENT_RING_TIMEOUT   [dial] ring_timeout: how long an agent's phone may ring
    LEAD_RING            CX_LEAD_RING: how long a lead's phone may ring (longer than the
                         agent's, and longer than LEAD_ANSWERS_AFTER, so that a dialer
                         call whose Originate timed out after ring_timeout would show)
    LEAD_ANSWERS_AFTER   the fake carrier's answering lead rings this long
    AGENT_ANSWERS_AFTER  fake agents and SIPp ring this long
    TALK                 the answering lead hangs up this long after answering
"""

import socket
import sys
from pathlib import Path

import private_asterisk
from private_asterisk import PrivateAsterisk, free_port, free_udp_range

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent
sys.path.insert(0, str(TESTS))

import apache_server  # noqa: E402

AGENT_RING_TIMEOUT = 3
LEAD_RING = 6
LEAD_ANSWERS_AFTER = 3.5
AGENT_ANSWERS_AFTER = 1.5
TALK = 4

AMI_USERNAME = "callexchange"
AMI_SECRET = "pbx-test-secret-7d1e"
OBSERVER_USERNAME = "cxobserver"
OBSERVER_SECRET = "observer-on-loopback-only"
AGENT_PASSWORD = "agent-2001-pw"
SIPP_AGENT = "2001"
API_KEY = "real-asterisk-suite-key-5b7c90"
ANI = "12125550100"

# Fake agents (pjsip.conf.in, extensions.conf.in): answering, busy, never answering,
# offline. Each is a PJSIP endpoint, so [dial] agent_channel stays PJSIP/{extension}.
ANSWERING_AGENTS = ["21%02d" % n for n in range(20)]
BUSY_AGENTS = ["28%02d" % n for n in range(5)]
SILENT_AGENTS = ["29%02d" % n for n in range(5)]
OFFLINE_AGENTS = ["27%02d" % n for n in range(5)]

# The lead_channel that etc/callexchange.ini.example documented before /n: configs
# installed with it must give correct dialer calls (issue 8, D3).
INSTALLED_LEAD_CHANNEL = "Local/{destination}@callexchange-outbound"

CONFIG = """\
[ami]
host = 127.0.0.1
port = {ami_port}
username = {ami_username}
secret = {ami_secret}
connect_timeout = 1
timeout = 2

[dial]
lead_channel = {lead_channel}
ring_timeout = {ring_timeout}
default_region = US
# Each case dials its own number; the double-click guard has tests of its own.
dedupe_seconds = 0

[ani]
default = {ani}
daily_limit = 1000000

[recordings]
root = {recordings}
base_url = http://pbx.test/wav-files

[webhook]
url = {webhook_url}
extended = yes

[auth]
keys_file = {keys}

[state]
dir = {state}
"""


def loop_agents(sip_port):
    """pjsip.conf sections of the fake agents: looped ones with a static contact on this
    Asterisk, offline ones with an AOR and no contact."""
    lines = []
    for agent in ANSWERING_AGENTS + BUSY_AGENTS + SILENT_AGENTS:
        lines += ["[%s](loop-agent)" % agent, "aors = %s" % agent, "",
                  "[%s]" % agent, "type = aor",
                  "contact = sip:%s@127.0.0.1:%d" % (agent, sip_port), ""]
    for agent in OFFLINE_AGENTS:
        lines += ["[%s](agent-endpoint)" % agent, "aors = %s" % agent, "",
                  "[%s]" % agent, "type = aor", "max_contacts = 1", ""]
    return "\n".join(lines)


class Bench:
    """Files and settings of one bench under `base` (a shared_tempdir()). Nothing runs
    until `start_pbx`, `start_agent`, `start_apache`."""

    def __init__(self, binary, base, webhook_url="", lead_channel=INSTALLED_LEAD_CHANNEL):
        self.base = Path(base)
        self.recordings = self.base / "recordings"
        self.recordings.mkdir(mode=0o755, exist_ok=True)
        self.state = apache_server.writable_dir(self.base / "state")
        self.keys_file = self.base / "api-keys"
        self.config_path = self.base / "callexchange.ini"
        self.sip_port = free_port(socket.SOCK_DGRAM)
        self.ami_port = free_port()
        rtp_start = free_udp_range(400)
        self.settings = {
            "AMI_PORT": self.ami_port, "SIP_PORT": self.sip_port,
            "RTP_START": rtp_start, "RTP_END": rtp_start + 399,
            "AMI_USERNAME": AMI_USERNAME, "AMI_SECRET": AMI_SECRET,
            "OBSERVER_USER": OBSERVER_USERNAME, "OBSERVER_SECRET": OBSERVER_SECRET,
            "AGENT_PASSWORD": AGENT_PASSWORD, "LOOP_AGENTS": loop_agents(self.sip_port),
            "LEAD_RING": LEAD_RING, "LEAD_ANSWERS_AFTER": LEAD_ANSWERS_AFTER,
            "AGENT_ANSWERS_AFTER": AGENT_ANSWERS_AFTER, "TALK": TALK,
            "RECORDINGS_ROOT": self.recordings,
        }
        self.write_config(webhook_url, lead_channel)
        self.write_keys()
        self.warm_carrier_cache()
        venv = apache_server.project_venv()
        agi_dir = private_asterisk.hook_with_interpreter(
            venv / "bin" / "python3", private_asterisk.REPO / "lib",
            self.base / "app" / "agi-bin")
        self.settings["AGI_DIR"] = agi_dir
        self.pbx = PrivateAsterisk(binary, self.base, self.settings,
                                   env={"CALLEXCHANGE_CONFIG": str(self.config_path)})
        self.agent = None
        self.apache = None

    def write_config(self, webhook_url, lead_channel=INSTALLED_LEAD_CHANNEL):
        text = CONFIG.format(ami_port=self.ami_port, ami_username=AMI_USERNAME,
                             ami_secret=AMI_SECRET, lead_channel=lead_channel,
                             ring_timeout=AGENT_RING_TIMEOUT, ani=ANI,
                             recordings=self.recordings, webhook_url=webhook_url,
                             keys=self.keys_file, state=self.state)
        temp = self.config_path.with_suffix(".tmp")
        temp.write_text(text)
        temp.chmod(0o644)
        temp.replace(self.config_path)

    def write_keys(self):
        from callexchange.keys import digest

        self.keys_file.write_text("tests\t%s\t2024-07-03T00:00:00Z\n" % digest(API_KEY))
        self.keys_file.chmod(0o644)

    def warm_carrier_cache(self):
        """Build the carrier shards (state/numbers) now, as the CGI's first call would:
        a score of CGIs that all find them missing build them at once and, on 2 cores,
        answer 503 after ~17 s (a cold-start problem of its own, not what this suite is
        about)."""
        from callexchange.calls import numbers
        from callexchange.statedir import StateDir

        numbers.analyze("+12125550100", "US", StateDir(str(self.state)).numbers)

    def start_pbx(self):
        self.pbx.start()
        return self.pbx

    def start_agent(self):
        import sipp_agent

        self.agent = sipp_agent.SippAgent(self.base, self.sip_port, SIPP_AGENT, AGENT_PASSWORD,
                                          ring_ms=int(AGENT_ANSWERS_AFTER * 1000))
        self.agent.start()
        return self.agent

    def start_apache(self, mode="cgi"):
        self.apache = apache_server.ApacheServer(
            self.base, self.config_path, self.recordings, state_dir=self.state,
            keys_file=self.keys_file, mode=mode)
        return self.apache

    def close(self):
        """Stop everything this bench started, and the webhook deliverers of its config."""
        problems = []
        for part in (self.apache, self.agent, self.pbx):
            if part is None:
                continue
            try:
                part.stop()
            except Exception as error:  # keep stopping the others
                problems.append("%s: %s" % (type(part).__name__, error))
        private_asterisk.kill_processes_with_argument(self.config_path)
        return problems
