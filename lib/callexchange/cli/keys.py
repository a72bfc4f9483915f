"""`callexchange keys add|limit|list|revoke`: the API keys, stored as SHA-256 digests, and
their toll-fraud limits (allowed regions, calls per minute and per day)."""

import sys

from callexchange import config as config_module
from callexchange import keys


def register(subparsers):
    """Add `keys add|limit|list|revoke` to an argparse subparsers object."""
    key_parser = subparsers.add_parser("keys", help="manage API keys (stored as SHA-256 digests)")
    key_commands = key_parser.add_subparsers(metavar="ACTION")
    add = key_commands.add_parser("add", help="store a key; prints it once")
    add.add_argument("--label", required=True, help="name of the client, e.g. acme-crm")
    source = add.add_mutually_exclusive_group()
    source.add_argument("--api-key", help="store this key (default: generate a fresh one)")
    source.add_argument("--public-key-file", help="legacy: the key is the hex SHA-256 of "
                                                  "this file's bytes")
    _limit_options(add, "")
    add.set_defaults(handler=keys_add)
    limit = key_commands.add_parser(
        "limit", help="change a stored key's limits (options not given are kept)")
    limit.add_argument("label")
    _limit_options(limit, " ('none': back to no limit of its own)")
    limit.set_defaults(handler=keys_limit)
    listing = key_commands.add_parser("list", help="list labels, limits and today's calls "
                                                   "(never the keys)")
    listing.set_defaults(handler=keys_list)
    revoke = key_commands.add_parser("revoke", help="remove the key with this label")
    revoke.add_argument("label")
    revoke.set_defaults(handler=keys_revoke)
    return key_parser


def _limit_options(parser, none_help):
    parser.add_argument("--allow-regions", metavar="LIST",
                        help="ISO regions this key may call, e.g. GB,DE (001: non-geographic "
                             "numbers); replaces [policy] allowed_regions for it" + none_help)
    parser.add_argument("--max-calls-per-minute", metavar="N",
                        help="at most N calls in any 60 seconds (1-%d)%s"
                             % (keys.MAX_CALLS_PER_MINUTE, none_help))
    parser.add_argument("--max-calls-per-day", metavar="N",
                        help="at most N calls per calendar day (1-%d)%s"
                             % (keys.MAX_CALLS_PER_DAY, none_help))


def _limits_from(args, current=keys.NO_LIMITS):
    """KeyLimits from the command line over `current`; ValueError says what is wrong."""
    given = {}
    for name in keys.KeyLimits._fields:
        value = getattr(args, name)
        if value is None:       # not given: keep
            value = current.format_value(name)
        elif value.strip().lower() == "none":
            value = None
        given[name] = value
    limits = keys.KeyLimits.checked(**given)
    from callexchange.calls.numbers import known_region
    unknown = [code for code in limits.allow_regions or () if code != "001"
               and not known_region(code)]
    if unknown:
        raise ValueError("allow_regions: %s is not a region phonenumbers knows (the United "
                         "Kingdom is GB)" % ", ".join(unknown))
    return limits


def keys_add(args):
    settings = config_module.load_config(args.config)
    try:
        limits = _limits_from(args)
    except ValueError as error:
        print("not added: %s" % error, file=sys.stderr)
        return 2
    key = args.api_key
    if args.public_key_file:
        try:
            key = keys.key_from_public_key_file(args.public_key_file)
        except OSError as error:
            print("cannot read %s: %s" % (args.public_key_file, error.strerror), file=sys.stderr)
            return 1
    try:
        stored = keys.add_key(settings.auth.keys_file, args.label, key, limits)
    except ValueError as error:
        print("not added: %s" % error, file=sys.stderr)
        return 1
    print("added key %r to %s" % (args.label, settings.auth.keys_file))
    if limits != keys.NO_LIMITS:
        print("limits: %s" % limits.format())
    print("api-key: %s" % stored)
    print("(shown once: only its SHA-256 is stored; send it in the api-key header)")
    return 0


def keys_limit(args):
    settings = config_module.load_config(args.config)
    entry = keys.entry_for(settings.auth.keys_file, args.label)
    if entry is None:
        print("no key labelled %r in %s" % (args.label, settings.auth.keys_file),
              file=sys.stderr)
        return 1
    try:
        limits = _limits_from(args, entry.limits)
    except ValueError as error:
        print("not changed: %s" % error, file=sys.stderr)
        return 2
    keys.set_limits(settings.auth.keys_file, args.label, limits)
    print("limits of %r: %s" % (args.label, limits.format() or "none of its own"))
    return 0


def keys_list(args):
    """One line per key: its limits, today's calls and the last minute's (where counted),
    and the regions it may call ("policy:" when the config's apply)."""
    settings = config_module.load_config(args.config)
    entries = keys.read_keys(settings.auth.keys_file)
    if not entries:
        print("no keys in %s (add one: callexchange keys add --label NAME)"
              % settings.auth.keys_file)
        return 0
    from callexchange.calls.quota import CallQuota, Usage
    try:
        usage = CallQuota(settings.state.dir).usage()
    except OSError as error:
        print("warning: cannot read today's calls in %s: %s" % (settings.state.dir,
                                                                error.strerror or error),
              file=sys.stderr)
        usage = {}
    policy_regions = settings.policy.allowed_regions
    row = "%-24s %-20s %-12s %7s %8s %6s %8s %7s  %s"
    print(row % ("LABEL", "CREATED", "SHA-256", "PER MIN", "PER DAY", "TODAY", "LAST MIN",
                 "REFUSED", "REGIONS"))
    refusals = []
    for entry in entries:
        limits = entry.limits
        used = usage.get(entry.label, Usage())
        last_minute = used.last_minute
        if last_minute is None and limits.max_calls_per_minute is not None:
            last_minute = 0     # counted, none in the last 60 s
        if limits.allow_regions is not None:
            regions = ",".join(limits.allow_regions)
        else:
            regions = "policy: %s" % (",".join(policy_regions) if policy_regions else "*")
        print(row % (entry.label, entry.created, entry.digest[:12],
                     _or_dash(limits.max_calls_per_minute), _or_dash(limits.max_calls_per_day),
                     used.today, _or_dash(last_minute), sum(used.refused.values()), regions))
        if used.refused:
            refusals.append("%s: %s" % (entry.label, ", ".join(
                "%s %d" % (rule, used.refused[rule]) for rule in sorted(used.refused))))
    if refusals:
        print("refused today, by rule (a key dialling what it may not may have leaked):")
        for line in refusals:
            print("  " + line)
    return 0


def _or_dash(value):
    return "-" if value is None else value


def keys_revoke(args):
    settings = config_module.load_config(args.config)
    try:
        keys.revoke_key(settings.auth.keys_file, args.label)
    except KeyError:
        print("no key labelled %r in %s" % (args.label, settings.auth.keys_file), file=sys.stderr)
        return 1
    print("revoked key %r" % args.label)
    return 0
