"""`callexchange sandbox` (and `python -m callexchange.sandbox`): the sandbox PBX in the
foreground, until SIGTERM or Ctrl-C.

The command line only: what the sandbox answers is `sandbox/server.py`, how it plays
calls `sandbox/calls.py`. The faults and outcomes it takes are listed by `--help`, built
from the sandbox's own tables, so the help cannot drift from what it does.
"""

import argparse
import signal
import sys
import threading

from callexchange.sandbox import server as sandbox_server
from callexchange.sandbox.agi_peer import DEFAULT_HOOK
from callexchange.sandbox.calls import DEFAULT_RING_SECONDS

# What Asterisk does: a refused login is answered after a second (a CRM developer's
# client must cope with it); the tests' Sandbox default is 0 to keep them fast.
LOGIN_FAILURE_DELAY = 1.0


def _help_epilog():
    lines = ["faults (--fault NAME[=ARG], repeatable):"]
    for name, (kind, default, text) in sandbox_server.FAULTS.items():
        label = name if kind is None else "%s=%s" % (name, kind)
        lines.append("  %-28s %s" % (label, text))
    lines += [
        "",
        "outcomes (--outcome DEST=OUTCOME, repeatable; DEST '*' is the default):",
        "  answered:SECONDS             the call is answered and talks SECONDS "
        "(plain 'answered': %g)" % sandbox_server.DEFAULT_TALK_SECONDS,
    ]
    for kind, (response, reason) in sandbox_server.OUTCOMES.items():
        if kind != "answered":
            lines.append("  %-28s OriginateResponse %s, Reason %d" % (kind, response, reason))
    lines += [
        "  DEST is the destination number (the CX_DESTINATION variable, the Exten or the",
        "  number in the Channel); without a rule a call is %s:%g."
        % sandbox_server.DEFAULT_OUTCOME,
        "",
        "examples:",
        "  callexchange sandbox --outcome 4930123456=busy --outcome '*=answered:20'",
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
                    "accepts Login (the [ami] username and secret), Ping, Originate, "
                    "MessageSend and Logoff as Asterisk does, and plays each call with "
                    "the outcome chosen for its destination.",
        epilog=_help_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", metavar="FILE",
                        help="config file (default: $CALLEXCHANGE_CONFIG, else "
                             "/etc/callexchange/callexchange.ini)")
    parser.add_argument("--host", help="listen on this address instead of [ami] host")
    parser.add_argument("--port", type=int, help="listen on this port instead of [ami] port "
                                                 "(0: any free port)")
    parser.add_argument("--fault", action="append", default=[], metavar="NAME[=ARG]",
                        type=_cli_type(sandbox_server.parse_fault),
                        help="script a fault (see below)")
    parser.add_argument("--outcome", action="append", default=[], metavar="DEST=OUTCOME",
                        type=_cli_type(sandbox_server.parse_outcome_rule),
                        help="how calls to DEST end (see below)")
    parser.add_argument("--log", metavar="FILE",
                        help="append every received action to FILE as one JSON line "
                             "(the Login secret is written as ***)")
    parser.add_argument("--hook", metavar="PATH",
                        help="the webhook hook to run for each call's connect and hangup "
                             "(default: %s, run with this Python)" % DEFAULT_HOOK)
    parser.add_argument("--ring", metavar="SECONDS", type=float, default=DEFAULT_RING_SECONDS,
                        help="how long a sandbox call rings before it is answered or fails "
                             "(default: %g)" % DEFAULT_RING_SECONDS)
    return parser


def parse_args(argv):
    """The parsed command line: .config, .host, .port, .fault [(name, arg)],
    .outcome [(dest, Outcome)], .log, .hook, .ring."""
    return build_parser().parse_args(argv)


def sandbox_for(args, config):
    """The Sandbox the parsed command line `args` asks for, over the gateway `config`."""
    return sandbox_server.Sandbox(
        host=args.host or config.ami.host,
        port=config.ami.port if args.port is None else args.port,
        username=config.ami.username, secret=config.ami.secret,
        faults=args.fault, outcomes=dict(args.outcome), log_path=args.log, config=config,
        hook=args.hook, ring_seconds=args.ring, login_failure_delay=LOGIN_FAILURE_DELAY)


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
