"""`callexchange`, the admin tool: keys, check, ani status, sandbox.

Every command reads the config through `config.load_config` (so `--config` or
$CALLEXCHANGE_CONFIG), prints what it did in plain words, and exits non-zero with a
one-line reason on failure: 1 for a failed check or operation, 2 for bad usage.
"""

import argparse
import os
import sys

from callexchange import config as config_module
from callexchange import keys


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if "sandbox" in argv[:3]:
        # The sandbox has its own parser (and --help); hand it everything after the word.
        position = argv.index("sandbox")
        before = argv[:position]
        if before[:1] == ["--config"] and len(before) == 2:
            os.environ["CALLEXCHANGE_CONFIG"] = before[1]
        elif before:
            print("usage: callexchange [--config FILE] sandbox [options]", file=sys.stderr)
            return 2
        from callexchange.sandbox import server as sandbox
        return sandbox.main(argv[position + 1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    if args.config:
        os.environ["CALLEXCHANGE_CONFIG"] = args.config
    try:
        return args.handler(args) or 0
    except BrokenPipeError:
        # `callexchange webhooks status | head`: the reader left; not an error of ours.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except config_module.ConfigError as error:
        print("config error: %s" % error, file=sys.stderr)
        return 1
    except keys.KeyFileError as error:
        print("keys file error: %s" % error, file=sys.stderr)
        return 1


def build_parser():
    parser = argparse.ArgumentParser(
        prog="callexchange", description="Admin tool of the CallExchange PBX gateway.")
    parser.add_argument("--config", help="config file (default: $CALLEXCHANGE_CONFIG or %s)"
                        % config_module.DEFAULT_PATH)
    commands = parser.add_subparsers(metavar="COMMAND")

    key_parser = commands.add_parser("keys", help="manage API keys (stored as SHA-256 digests)")
    key_commands = key_parser.add_subparsers(metavar="ACTION")
    add = key_commands.add_parser("add", help="store a key; prints it once")
    add.add_argument("--label", required=True, help="name of the client, e.g. acme-crm")
    source = add.add_mutually_exclusive_group()
    source.add_argument("--api-key", help="store this key (default: generate a fresh one)")
    source.add_argument("--public-key-file", help="legacy: the key is the hex SHA-256 of "
                                                  "this file's bytes")
    add.set_defaults(handler=keys_add)
    listing = key_commands.add_parser("list", help="list labels (never the keys)")
    listing.set_defaults(handler=keys_list)
    revoke = key_commands.add_parser("revoke", help="remove the key with this label")
    revoke.add_argument("label")
    revoke.set_defaults(handler=keys_revoke)

    check = commands.add_parser("check", help="check the config, keys, state dir, "
                                              "recording root, webhook URL and AMI login")
    check.add_argument("--no-ami", action="store_true", help="skip the AMI login test")
    check.add_argument("--asterisk-etc", default="/etc/asterisk", metavar="DIR",
                       help="Asterisk's config dir, for the AMI user's include file "
                            "(default: %(default)s; skipped when it does not exist)")
    check.set_defaults(handler=run_check)

    ani = commands.add_parser("ani", help="caller ID pools")
    ani_commands = ani.add_subparsers(metavar="ACTION")
    status = ani_commands.add_parser("status", help="today's usage of every caller ID")
    status.set_defaults(handler=ani_status)

    from callexchange.cli import recordings as cli_recordings
    from callexchange.cli import webhooks as cli_webhooks
    cli_recordings.register(commands)
    cli_webhooks.register(commands)

    # Listed for --help only: main() hands `sandbox ...` to the sandbox's own parser.
    commands.add_parser("sandbox", add_help=False,
                        help="run the sandbox PBX (see: callexchange sandbox --help)")
    return parser


# --- keys ---

def keys_add(args):
    settings = config_module.load_config()
    key = args.api_key
    if args.public_key_file:
        try:
            key = keys.key_from_public_key_file(args.public_key_file)
        except OSError as error:
            print("cannot read %s: %s" % (args.public_key_file, error.strerror), file=sys.stderr)
            return 1
    try:
        stored = keys.add_key(settings.auth.keys_file, args.label, key)
    except ValueError as error:
        print("not added: %s" % error, file=sys.stderr)
        return 1
    print("added key %r to %s" % (args.label, settings.auth.keys_file))
    print("api-key: %s" % stored)
    print("(shown once: only its SHA-256 is stored; send it in the api-key header)")
    return 0


def keys_list(args):
    settings = config_module.load_config()
    entries = keys.read_keys(settings.auth.keys_file)
    if not entries:
        print("no keys in %s (add one: callexchange keys add --label NAME)"
              % settings.auth.keys_file)
        return 0
    print("%-32s %-21s %s" % ("LABEL", "CREATED", "SHA-256 (first 12)"))
    for label, digest, created in entries:
        print("%-32s %-21s %s" % (label, created, digest[:12]))
    return 0


def keys_revoke(args):
    settings = config_module.load_config()
    try:
        keys.revoke_key(settings.auth.keys_file, args.label)
    except KeyError:
        print("no key labelled %r in %s" % (args.label, settings.auth.keys_file), file=sys.stderr)
        return 1
    print("revoked key %r" % args.label)
    return 0


# --- check ---

def run_check(args):
    """Each line is `ok`, `warn` or `FAIL` and what was checked; exit 1 on any FAIL."""
    path = config_module.config_path()
    failures = 0

    def report(level, text):
        nonlocal failures
        failures += level == "FAIL"
        print("%-4s %s" % (level, text))

    try:
        settings = config_module.load_config(path)
    except config_module.ConfigError as error:
        report("FAIL", "config: %s" % error)
        return 1
    report("ok", "config: %s" % path)

    from callexchange.calls.numbers import known_region
    for section, key, region in ([("dial", "default_region", settings.dial.default_region)]
                                 + [("ani", code.lower(), code) for code in settings.ani.pools]):
        if not known_region(region):
            report("FAIL", "config: %s" % settings.error(
                section, key, "%r is not a region phonenumbers knows" % region))

    try:
        entries = keys.read_keys(settings.auth.keys_file)
        if entries:
            report("ok", "keys: %d in %s" % (len(entries), settings.auth.keys_file))
        else:
            report("warn", "keys: none in %s (callexchange keys add --label NAME)"
                   % settings.auth.keys_file)
    except keys.KeyFileError as error:
        report("FAIL", "keys: %s" % error)

    state = settings.state.dir
    if os.path.isdir(state) and os.access(state, os.W_OK | os.X_OK):
        report("ok", "state dir: %s is writable" % state)
    else:
        report("FAIL", "state dir: %s is missing or not writable" % state)

    root = settings.recordings.root
    if os.path.isdir(root):
        report("ok", "recordings: root %s exists" % root)
    else:
        report("warn", "recordings: root %s does not exist yet" % root)
    if not settings.recordings.base_url:
        report("warn", "recordings: [recordings] base_url is empty; URLs will be relative")

    if settings.webhook.url:
        report("ok", "webhook: %s" % settings.webhook.url)
        if settings.webhook.url.startswith("http://"):
            report("warn", "webhook: plain http; events cross the network unencrypted")
    else:
        report("warn", "webhook: [webhook] url is empty; no events will be sent")

    flagged = settings.ani.flagged_file
    if flagged and not os.path.exists(flagged):
        report("warn", "ani: flagged_file %s does not exist (no number is flagged)" % flagged)

    manager_file = os.path.join(args.asterisk_etc, "manager_callexchange.conf")
    if os.path.isdir(args.asterisk_etc):
        from callexchange.pbx.asterisk_conf import manager_user_problems
        problems = manager_user_problems(manager_file, settings.ami.username,
                                         settings.ami.secret)
        for level, text in problems:
            report(level, "asterisk: %s" % text)
        if not problems:
            report("ok", "asterisk: %s grants [%s] exactly originate,message / call"
                   % (manager_file, settings.ami.username))

    if args.no_ami:
        report("warn", "ami: login not tested (--no-ami)")
    else:
        from callexchange.pbx import ami
        target = "%s:%d as %s" % (settings.ami.host, settings.ami.port, settings.ami.username)
        try:
            ami.ping(settings.ami)
            report("ok", "ami: logged in to %s" % target)
        except ami.AmiError as error:
            report("FAIL", "ami: %s: %s" % (target, error.detail))
    return 1 if failures else 0


# --- ani ---

def ani_status(args):
    from callexchange.calls import ani
    settings = config_module.load_config()
    usage = ani.AniLedger(settings.state.dir).usage()
    flagged = ani.read_flagged(settings.ani.flagged_file)
    pools = [("default", settings.ani.default)] + sorted(settings.ani.pools.items())
    print("%-8s %-16s %6s  %s" % ("POOL", "CALLER ID", "TODAY", "STATE"))
    for name, numbers in pools:
        for number in numbers:
            used = usage.get(number, 0)
            state = "flagged" if number in flagged else (
                "at limit" if used >= settings.ani.daily_limit else "ok")
            print("%-8s %-16s %6d  %s" % (name, number, used, state))
    print("daily limit: %d per caller ID" % settings.ani.daily_limit)
    return 0

