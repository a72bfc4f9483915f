"""`callexchange sandbox` and `python -m callexchange.sandbox` (cli/sandbox.py): faults,
outcomes and call settings on the command line, `--help` naming every one, and the
process serving until SIGTERM."""

import json
import os
import signal
import socket
import subprocess
import sys
from types import SimpleNamespace

import pytest
from paths import LIB

from callexchange.cli import sandbox as cli_sandbox
from callexchange.pbx import ami
from callexchange.sandbox import calls as sandbox_calls
from callexchange.sandbox import scripting, timeline
from callexchange.sandbox.timeline import Outcome

USER = "callexchange"
SECRET = "s3cret"
LEAD = "12127773456"


def test_cli_parses_faults_and_outcomes():
    args = cli_sandbox.parse_args([
        "--fault", "slow-login=2.5", "--fault", "originate-error=Extension does not exist.",
        "--fault", "no-banner", "--fault", "messagesend-error",
        "--outcome", "+4930123456=answered:30", "--outcome", "*=busy",
        "--outcome", "111=noanswer", "--outcome", "222=answered",
        "--log", "/tmp/x.jsonl", "--port", "0"])
    assert args.fault == [("slow-login", 2.5), ("originate-error", "Extension does not exist."),
                          ("no-banner", None), ("messagesend-error", "Message failed to send.")]
    assert args.outcome == [("4930123456", Outcome("answered", 30.0)),
                            ("*", Outcome("busy", 0.0)), ("111", Outcome("noanswer", 0.0)),
                            ("222", Outcome("answered", timeline.DEFAULT_TALK_SECONDS))]
    assert (args.log, args.port) == ("/tmp/x.jsonl", 0)


def test_cli_parses_agent_outcomes_and_the_no_answer_time():
    args = cli_sandbox.parse_args(["--agent", "2001=busy", "--agent", "*=noanswer",
                                   "--agent", "2002=failed", "--no-answer-after", "4"])
    assert args.agent == [("2001", "busy"), ("*", "noanswer"), ("2002", "unreachable")]
    config = SimpleNamespace(ami=SimpleNamespace(host="127.0.0.1", port=0, username=USER,
                                                 secret=SECRET))
    pbx = cli_sandbox.sandbox_for(args, config)
    assert pbx.agents == {"2001": "busy", "*": "noanswer", "2002": "unreachable"}
    assert pbx.no_answer_seconds == 4.0
    assert cli_sandbox.parse_args([]).no_answer_after is None


@pytest.mark.parametrize("argv", [
    ["--fault", "bogus"], ["--fault", "slow-login"], ["--fault", "slow-login=soon"],
    ["--fault", "no-banner=1"], ["--outcome", "123"], ["--outcome", "123=ringing"],
    ["--agent", "2001"], ["--agent", "2001=hungover"], ["--no-answer-after", "soon"],
    ["--outcome", "123=answered:long"], ["--outcome", "123=busy:3"]])
def test_cli_refuses_bad_faults_and_outcomes(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli_sandbox.parse_args(argv)
    assert exit_.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_help_documents_every_fault_and_outcome(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli_sandbox.main(["--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for name in scripting.FAULTS:
        assert name in text
    for outcome in ("answered:SECONDS", "busy", "noanswer", "congestion", "failed",
                    "--outcome DEST=OUTCOME", "--agent EXT=OUTCOME", "unreachable",
                    "--no-answer-after SECONDS"):
        assert outcome in text
    # What still differs from a real Asterisk, and why, is said there.
    differences = text.split("What differs from a real Asterisk 22")[1].split("examples:")[0]
    for difference in ("NewCallerid", "Context 'default'", "PJSIP/trunk", "--ring",
                       "400 Hz tone", "one AMI user", "accept any"):
        assert difference in differences


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_cli_process_serves_a_login_and_exits_on_sigterm(tmp_path):
    port = free_port()
    config = tmp_path / "callexchange.ini"
    config.write_text(
        "[ami]\nhost = 127.0.0.1\nport = %d\nusername = callexchange\nsecret = %s\n"
        "connect_timeout = 1\ntimeout = 2\n[ani]\ndefault = 12125550100\n"
        "[state]\ndir = %s\n[recordings]\nroot = %s/rec\n"
        "[auth]\nkeys_file = %s/keys\n" % (port, SECRET, tmp_path, tmp_path, tmp_path))
    log = tmp_path / "ami.jsonl"
    env = dict(os.environ, CALLEXCHANGE_CONFIG=str(config), PYTHONPATH=LIB)
    process = subprocess.Popen(
        [sys.executable, "-m", "callexchange.sandbox", "--log", str(log),
         "--outcome", "4930123456=busy"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        assert "listening on 127.0.0.1:%d" % port in line, line + process.stderr.read()
        settings = type("S", (), dict(host="127.0.0.1", port=port, username=USER,
                                      secret=SECRET, connect_timeout=1, timeout=2))
        assert ami.ping(settings) == "Asterisk Call Manager/11.0.0"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=5) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()
        process.stderr.close()
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [line["action"] for line in lines] == ["Login", "Ping", "Logoff"]
    assert SECRET not in log.read_text()


def test_cli_reports_a_broken_config_and_exits_2(tmp_path, capsys):
    config = tmp_path / "broken.ini"
    config.write_text("[ami]\nport = many\n")
    assert cli_sandbox.main(["--config", str(config)]) == 2
    assert "broken.ini" in capsys.readouterr().err


def test_command_line_takes_hook_and_ring():
    args = cli_sandbox.parse_args(["--hook", "/opt/x.agi", "--ring", "0.5",
                                      "--outcome", "%s=answered:2" % LEAD])
    config = SimpleNamespace(ami=SimpleNamespace(host="127.0.0.1", port=0, username=USER,
                                                 secret=SECRET))
    pbx = cli_sandbox.sandbox_for(args, config)
    assert (pbx.hook, pbx.ring_seconds, pbx.config) == ("/opt/x.agi", 0.5, config)
    assert pbx.outcomes == {LEAD: Outcome("answered", 2.0)}
    assert pbx.login_failure_delay == 1.0  # as Asterisk answers a refused login
    defaults = cli_sandbox.parse_args([])
    assert defaults.hook is None and defaults.ring == sandbox_calls.DEFAULT_RING_SECONDS
    assert "--hook" in cli_sandbox.build_parser().format_help()
