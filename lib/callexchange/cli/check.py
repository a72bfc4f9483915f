"""`callexchange check`: the config, keys, state dir, recordings, webhook, the HTTPS
certificate (with install.sh --domain: certificate.py), the PBX (each
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
        # Every problem of the file, in line order, not only the first the strict
        # loader met: an operator fixes them in one edit.
        for problem in config_problems(path, error):
            report("FAIL", "config: %s" % problem)
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
        reached, detail = webhook_reachable(settings.webhook.url, settings.webhook.timeout)
        if reached:
            report("ok", "webhook: %s (%s)" % (settings.webhook.url, detail))
        else:
            # A warning: events wait in the spool until the CRM is back.
            report("warn", "webhook: %s: %s; events wait in the spool until it is"
                   % (settings.webhook.url, detail))
        if settings.webhook.url.startswith("http://"):
            report("warn", "webhook: plain http; events cross the network unencrypted")
    else:
        report("warn", "webhook: [webhook] url is empty; no events will be sent")
    from callexchange.cli import webhooks as cli_webhooks
    for level, text in cli_webhooks.check_lines(settings):  # the spool's disk
        report(level, text)

    from callexchange import certificate
    for level, text in certificate.check_lines(settings.https):  # install.sh --domain
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


def config_problems(path, error):
    """The ConfigErrors of the file at `path`, in line order; `error` (the strict
    loader's) when the lenient loader finds nothing more (or cannot read the file)."""
    try:
        problems = list(config_module.load_config(path, lenient=True).problems)
    except config_module.ConfigError:
        problems = []
    if not any(str(problem) == str(error) for problem in problems):
        problems.append(error)
    return sorted(problems, key=lambda problem: problem.line)


def webhook_reachable(url, timeout):
    """(True, what answered) if the webhook URL's host accepts a TCP connection (and, for
    https, a TLS handshake) within `timeout` seconds, else (False, why not). No request
    is sent: a probe must not look like an event to the CRM."""
    import socket
    import ssl
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return False, "the URL's port is not a number"
    if not parts.hostname:
        return False, "the URL names no host"
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout) as sock:
            if parts.scheme == "https":
                with ssl.create_default_context().wrap_socket(
                        sock, server_hostname=parts.hostname):
                    return True, "%s:%d accepts TLS connections" % (parts.hostname, port)
            return True, "%s:%d accepts connections" % (parts.hostname, port)
    except ssl.SSLError as error:
        return False, "TLS with %s:%d fails: %s" % (parts.hostname, port,
                                                   error.reason or error)
    except OSError as error:
        return False, "cannot connect to %s:%d (%s)" % (
            parts.hostname, port, error.strerror or error.__class__.__name__)
