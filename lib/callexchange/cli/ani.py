"""`callexchange ani status`: today's use of every caller ID."""

from callexchange import config as config_module


def register(subparsers):
    """Add `ani status` to an argparse subparsers object."""
    ani = subparsers.add_parser("ani", help="caller ID pools")
    ani_commands = ani.add_subparsers(metavar="ACTION")
    status = ani_commands.add_parser("status", help="today's usage of every caller ID")
    status.set_defaults(handler=ani_status)
    return ani


def ani_status(args):
    from callexchange.calls import ani
    settings = config_module.load_config(args.config)
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
