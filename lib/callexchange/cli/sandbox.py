"""`callexchange sandbox` (and `python -m callexchange.sandbox`): the sandbox PBX in the
foreground, until SIGTERM or Ctrl-C.

The command line only: what the sandbox answers is `sandbox/server.py`, how it plays
calls `sandbox/calls.py`. The faults and outcomes it takes are listed by `--help`, built
from the sandbox's own tables, so the help cannot drift from what it does.
"""

import argparse
import signal
import sys
import textwrap
import threading

from callexchange.sandbox import scripting, server as sandbox_server, timeline
from callexchange.sandbox.agi_peer import DEFAULT_HOOK
from callexchange.sandbox.calls import DEFAULT_RING_SECONDS

# What Asterisk does: a refused login is answered after a second (a CRM developer's
# client must cope with it); the tests' Sandbox default is 0 to keep them fast.
LOGIN_FAILURE_DELAY = 1.0


def _help_epilog():
    lines = ["faults (--fault NAME[=ARG], repeatable):"]
    for name, (kind, default, text) in scripting.FAULTS.items():
        label = name if kind is None else "%s=%s" % (name, kind)
        lines += textwrap.wrap(text, 86, initial_indent="  %-28s " % label,
                               subsequent_indent=" " * 31)
    lines += [
        "",
        "outcomes of the lead (--outcome DEST=OUTCOME, repeatable; DEST '*': the default):",
        "  answered:SECONDS             answers and talks SECONDS (plain 'answered': %g)"
        % timeline.DEFAULT_TALK_SECONDS,
        "  busy, noanswer, congestion   busy, rings out, congested",
        "  failed                       unreachable",
        "  DEST is the destination number (the CX_DESTINATION variable, the Exten or the",
        "  number in the Channel); without a rule a lead answers and talks %g s."
        % timeline.DEFAULT_TALK_SECONDS,
        "",
        "outcomes of the agent's phone (--agent EXT=OUTCOME, repeatable; EXT '*': the",
        "default; without a rule it answers):",
        "  answered, busy, noanswer, unreachable",
        "",
        "As a real Asterisk 22: agent first, the OriginateResponse says Success (Reason 4,",
        "the agent's channel name) when the agent answers, whatever the lead does; if the",
        "agent does not answer, Failure once the dialplan's failed extension ran (Reason 0",
        "busy or unreachable, 3 rang out; Channel: the dial string as sent). Dialer mode",
        "(a Local lead_channel), the same for the lead (Reason 5 busy, 8 congestion, else",
        "0). The webhooks carry the disposition and cause a real call would.",
        "",
        "What differs from a real Asterisk 22 (the rest is checked against transcripts",
        "of one), and why:",
        "  - of the events a read=call session gets, only Newchannel, Newstate, DialBegin,",
        "    DialEnd, Hangup and OriginateResponse are sent, with Asterisk's headers; not",
        "    NewCallerid, NewConnectedLine, DialState, HangupRequest, SoftHangupRequest,",
        "    Bridge*, LocalBridge, MixMonitorStart, DeviceStateChange: they tell of",
        "    Asterisk's own workings, and the gateway asks for no events at all;",
        "  - a phone's channel shows Context 'default', Exten 's' until it runs the",
        "    dialplan and Priority is always 1, and the lead's channel is named after the",
        "    dialplan's default trunk (PJSIP/trunk-...): the sandbox has no endpoints and",
        "    does not know the PBX's CX_TRUNK;",
        "  - phones ring --ring seconds before they answer, are busy or congested, and",
        "    --no-answer-after seconds when they never answer (default: as Asterisk lets",
        "    them, [dial] ring_timeout for the agent, 45 s, CX_LEAD_RING's default, for the",
        "    lead): on a real PBX people decide;",
        "  - the recording is a 400 Hz tone as long as the talk time: nobody talks;",
        "  - one AMI user, the [ami] username, with the gateway's privileges (read=call,",
        "    write=originate,message); of the other actions that user may use, the bridge",
        "    actions, Challenge and WaitEvent are answered 'Response: Error': they concern",
        "    bridges and logins the sandbox does not have;",
        "  - contexts of the config that the project's dialplan lacks accept any",
        "    extension: the sandbox cannot see the operator's own dialplan.",
        "",
        "examples:",
        "  callexchange sandbox --outcome 4930123456=busy --outcome '*=answered:20'",
        "  callexchange sandbox --agent 2002=noanswer --no-answer-after 5",
        "  callexchange sandbox --fault slow-login=3 --log /tmp/ami.jsonl",
        "  callexchange sandbox --fault 'originate-error=Extension does not exist.'",
    ]
    return "\n".join(lines)


def _cli_type(parse):
    def convert(text):
        try:
            return parse(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None
    convert.__name__ = parse.__name__
    return convert


def build_parser():
    """The argparse parser of `callexchange sandbox`."""
    parser = argparse.ArgumentParser(
        prog="callexchange sandbox",
        description="Run a stand-in for Asterisk that speaks the AMI wire protocol on the "
                    "[ami] host and port of the config, until SIGTERM or Ctrl-C. It "
                    "answers Login (the [ami] username and secret), Ping, ListCommands, "
                    "Events, Originate, MessageSend and Logoff as Asterisk 22 answers the "
                    "gateway's AMI user, and plays each call with the outcomes chosen for "
                    "its lead and agent: its AMI events, the webhooks through the real "
                    "hook and spool, and a recording under the recording root.",
        epilog=_help_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", metavar="FILE",
                        help="config file (default: $CALLEXCHANGE_CONFIG, else "
                             "/etc/callexchange/callexchange.ini)")
    parser.add_argument("--host", help="listen on this address instead of [ami] host")
    parser.add_argument("--port", type=int, help="listen on this port instead of [ami] port "
                                                 "(0: any free port)")
    parser.add_argument("--fault", action="append", default=[], metavar="NAME[=ARG]",
                        type=_cli_type(scripting.parse_fault),
                        help="script a fault (see below)")
    parser.add_argument("--outcome", action="append", default=[], metavar="DEST=OUTCOME",
                        type=_cli_type(scripting.parse_outcome_rule),
                        help="how calls to the lead DEST end (see below)")
    parser.add_argument("--agent", action="append", default=[], metavar="EXT=OUTCOME",
                        type=_cli_type(scripting.parse_agent_rule),
                        help="how agent EXT's phone answers (see below)")
    parser.add_argument("--log", metavar="FILE",
                        help="append every received action to FILE as one JSON line "
                             "(the Login secret is written as ***)")
    parser.add_argument("--hook", metavar="PATH",
                        help="the webhook hook to run for each call's connect and hangup "
                             "(default: %s, run with this Python)" % DEFAULT_HOOK)
    parser.add_argument("--ring", metavar="SECONDS", type=float, default=DEFAULT_RING_SECONDS,
                        help="how long a phone rings before it answers, is busy or "
                             "congested (default: %g)" % DEFAULT_RING_SECONDS)
    parser.add_argument("--no-answer-after", metavar="SECONDS", type=float,
                        help="how long a phone that never answers rings (default: as "
                             "Asterisk: the Originate's Timeout or the dialplan's ring time)")
    return parser


def parse_args(argv):
    """The parsed command line: .config, .host, .port, .fault [(name, arg)],
    .outcome [(dest, Outcome)], .agent [(ext, outcome)], .log, .hook, .ring,
    .no_answer_after."""
    return build_parser().parse_args(argv)


def sandbox_for(args, config):
    """The Sandbox the parsed command line `args` asks for, over the gateway `config`."""
    return sandbox_server.Sandbox(
        host=args.host or config.ami.host,
        port=config.ami.port if args.port is None else args.port,
        username=config.ami.username, secret=config.ami.secret,
        faults=args.fault, outcomes=dict(args.outcome), agents=dict(args.agent),
        log_path=args.log, config=config, hook=args.hook, ring_seconds=args.ring,
        no_answer_seconds=args.no_answer_after, login_failure_delay=LOGIN_FAILURE_DELAY)


def main(argv=None):
    """`callexchange sandbox`: serve in the foreground until SIGTERM or SIGINT."""
    from callexchange.config import ConfigError, load_config

    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        config = load_config(args.config or None)
    except ConfigError as error:
        print("callexchange sandbox: %s" % error, file=sys.stderr)
        return 2
    sandbox = sandbox_for(args, config)
    stop = threading.Event()

    def on_signal(signum, frame):
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        sandbox.start()
    except OSError as error:
        print("callexchange sandbox: cannot listen on %s:%s: %s"
              % (sandbox.host, sandbox.port, error.strerror or error), file=sys.stderr)
        return 1
    faults = ", ".join(n if a is None else "%s=%s" % (n, a)
                       for n, a in sandbox.faults.items()) or "none"
    print("callexchange sandbox: AMI listening on %s:%d (user %s; faults: %s)"
          % (sandbox.host, sandbox.port, sandbox.username, faults), flush=True)
    try:
        while not stop.is_set():
            stop.wait(0.5)
    finally:
        sandbox.stop()
    return 0
