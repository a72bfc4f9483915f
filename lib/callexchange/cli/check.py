"""`callexchange check`: the config, keys, state dir, recordings, webhook, the PBX (each
piece the gateway needs in the local Asterisk: pbx/checks.py) and the AMI login, one
line each (`ok`, `warn` or `FAIL`)."""

import os

from callexchange import config as config_module
from callexchange import keys


def register(subparsers):
    """Add `check` to an argparse subparsers object."""
    check = subparsers.add_parser("check", help="check the config, keys, state dir, "
                                                "recording root, webhook URL and AMI login")
    check.add_argument("--no-ami", action="store_true", help="skip the AMI login test")
    check.add_argument("--no-asterisk", action="store_true",
                       help="do not ask the local Asterisk (asterisk -rx) what it loaded")
    check.add_argument("--asterisk", metavar="PATH",
                       help="the asterisk binary to ask (default: asterisk on PATH, else "
                            "/usr/sbin/asterisk)")
    check.add_argument("--asterisk-etc", default="/etc/asterisk", metavar="DIR",
                       help="Asterisk's config dir, for the AMI user's include file "
                            "(default: %(default)s; skipped when it does not exist)")
    check.set_defaults(handler=run_check)
    return check


def run_check(args):
    """Each line is `ok`, `warn` or `FAIL` and what was checked; exit 1 on any FAIL."""
    path = args.config or config_module.config_path()
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
                                 + [("ani", code.lower(), code) for code in settings.ani.pools]
                                 + [("policy", "allowed_regions", code) for code in
                                    settings.policy.allowed_regions or () if code != "001"]):
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
    from callexchange.cli import webhooks as cli_webhooks
    for level, text in cli_webhooks.check_lines(settings):  # the spool's disk
        report(level, text)

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

    from callexchange.pbx import checks
    if args.no_asterisk:
        report("warn", "asterisk: the local Asterisk not asked (--no-asterisk)")
    else:
        console = checks.console_for(args.asterisk, args.asterisk_etc)
        for level, text in checks.local_lines(settings, console, args.asterisk_etc):
            report(level, text)

    if args.no_ami:
        report("warn", "ami: login not tested (--no-ami)")
    else:
        for level, text in checks.ami_lines(settings.ami):
            report(level, text)
    return 1 if failures else 0
