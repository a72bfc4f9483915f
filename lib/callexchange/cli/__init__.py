"""`callexchange`, the admin tool: one module per command group (keys, check, ani,
config, recordings, webhooks; sandbox has its own parser).

Every command reads the config given by `--config` (else $CALLEXCHANGE_CONFIG, else
/etc/callexchange/callexchange.ini), prints what it did in plain words, and exits
non-zero with a one-line reason on failure: 1 for a failed check or operation, 2 for bad
usage. Only `callexchange.__main__` and bin/callexchange import this package.
"""

import argparse
import os
import sys

from callexchange import config as config_module
from callexchange.keys import KeyFileError


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if "sandbox" in argv[:3]:
        # The sandbox has its own parser (and --help); hand it everything after the word.
        position = argv.index("sandbox")
        before = argv[:position]
        if before[:1] == ["--config"] and len(before) == 2:
            forwarded = ["--config", before[1]]
        elif not before:
            forwarded = []
        else:
            print("usage: callexchange [--config FILE] sandbox [options]", file=sys.stderr)
            return 2
        from callexchange.cli import sandbox
        return sandbox.main(forwarded + argv[position + 1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        return args.handler(args) or 0
    except BrokenPipeError:
        # `callexchange webhooks status | head`: the reader left; not an error of ours.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except config_module.ConfigError as error:
        print("config error: %s" % error, file=sys.stderr)
        return 1
    except KeyFileError as error:
        print("keys file error: %s" % error, file=sys.stderr)
        return 1


def build_parser():
    from callexchange.cli import ani, check, config, keys, recordings, webhooks

    parser = argparse.ArgumentParser(
        prog="callexchange", description="Admin tool of the CallExchange PBX gateway.")
    parser.add_argument("--config", help="config file (default: $CALLEXCHANGE_CONFIG or %s)"
                        % config_module.DEFAULT_PATH)
    commands = parser.add_subparsers(metavar="COMMAND")
    for group in (keys, check, ani, config, recordings, webhooks):
        group.register(commands)
    # Listed for --help only: main() hands `sandbox ...` to the sandbox's own parser.
    commands.add_parser("sandbox", add_help=False,
                        help="run the sandbox PBX (see: callexchange sandbox --help)")
    return parser
