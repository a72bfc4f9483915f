"""`callexchange webhooks ...`: the admin's view of the webhook spool (SPEC §6, §8).

    webhooks status              pending and dead events, the last error of each, the CRM's
                                 back-off and whether a deliverer is running
    webhooks deliver [--all-now] [--for SECONDS]
                                 send what is due now; --all-now ignores back-off; --for
                                 stays up to SECONDS while events are due (the timer
                                 runs --for 50, so a CRM that is down keeps being probed)
    webhooks retry ID|--all-dead move dead events (or one event, by webhook-id or spool
                                 name) back to the queue and send them now
    webhooks secret              print a fresh whsec_... secret for [webhook] secret
    webhooks demo-crm            run the demo CRM: log every webhook received, checking
                                 its signature (install.sh --demo runs it)

`register(subparsers)` adds the command to the admin tool's parser; each handler reads
the config given by --config (else $CALLEXCHANGE_CONFIG) and returns the exit status: 0
done, 1 failed.
"""

import os
import sys
import time


def register(subparsers):
    """Add `webhooks` and its actions to the admin tool's subparsers."""
    webhooks = subparsers.add_parser(
        "webhooks", help="the connect/hangup webhook queue: status, deliver, retry, secret")
    actions = webhooks.add_subparsers(metavar="ACTION")

    status = actions.add_parser("status", help="pending and dead events, last error each")
    status.set_defaults(handler=webhooks_status)

    deliver = actions.add_parser("deliver", help="send what is due now (what the timer runs)")
    deliver.add_argument("--all-now", action="store_true",
                         help="ignore back-off: try every pending event now")
    deliver.add_argument("--quiet", action="store_true",
                         help="print nothing unless something was sent or failed (timer)")
    deliver.add_argument("--for", dest="stay", type=float, default=0.0, metavar="SECONDS",
                         help="stay up to SECONDS while events are due, probing a CRM that "
                              "is down (the timer runs --for 50)")
    deliver.set_defaults(handler=webhooks_deliver)

    retry = actions.add_parser("retry", help="send dead events again")
    which = retry.add_mutually_exclusive_group(required=True)
    which.add_argument("id", nargs="?", help="the event's webhook-id (msg_<uniqueid>_<event>) "
                                             "or spool name")
    which.add_argument("--all-dead", action="store_true", help="every dead event")
    retry.set_defaults(handler=webhooks_retry)

    secret = actions.add_parser("secret", help="print a fresh whsec_... signing secret")
    secret.set_defaults(handler=webhooks_secret)

    crm = actions.add_parser(
        "demo-crm", help="run the demo CRM: log each webhook received and whether its "
                         "signature checks out (install.sh --demo runs it)",
        description="A stand-in CRM for trying the gateway: appends every webhook it "
                    "receives to FILE as one JSON line, with the verdict on its Standard "
                    "Webhooks signature against [webhook] secret; answers 200.")
    crm.add_argument("--listen", default="127.0.0.1:8099", metavar="HOST:PORT",
                     help="where to listen (default: %(default)s)")
    crm.add_argument("--log", required=True, metavar="FILE",
                     help="append one JSON line per webhook here")
    crm.set_defaults(handler=webhooks_demo_crm)
    return webhooks


def _context(args):
    from callexchange.config import load_config
    from callexchange.webhooks.spool import Spool

    config = load_config(args.config)
    return config, Spool.for_state_dir(config.state.dir)


def _age(seconds):
    seconds = max(0, int(seconds))
    if seconds < 120:
        return "%ds" % seconds
    if seconds < 7200:
        return "%dm" % (seconds // 60)
    return "%dh%02dm" % (seconds // 3600, seconds % 3600 // 60)


def _when(moment, now):
    if not moment or moment <= now:
        return "now"
    return "in " + _age(moment - now)


def webhooks_status(args, clock=time.time, out=None):
    out = out or sys.stdout
    config, spool = _context(args)
    now = clock()
    print("webhook URL: %s" % (config.webhook.url or "(none: [webhook] url is empty)"), file=out)
    holder = spool.lock_holder()
    print("deliverer: %s" % ("running (pid %s)" % holder if holder else "not running"),
          file=out)
    from callexchange.webhooks.deliverer import Deliverer

    endpoint = Deliverer(config, spool, clock=clock).endpoint_state()
    blocked_until = Deliverer.blocked_until(endpoint)
    if blocked_until > now:
        print("CRM: backing off after %d failure(s), next try %s: %s"
              % (endpoint.get("failures", 0), _when(blocked_until, now),
                 endpoint.get("last_error", "")), file=out)
    for level, text in spool_check(spool):
        print("disk: %s%s" % ("" if level == "ok" else "%s: " % level, text), file=out)
    if os.path.exists(spool.crash_path):
        with open(spool.crash_path, encoding="utf-8", errors="replace") as handle:
            lines = handle.read().strip().splitlines()
        print("last deliverer crash: %s" % (lines[-1] if lines else "?"), file=out)
    for title, entries, dead in (("pending", spool.pending(), False),
                                 ("dead", spool.dead(), True)):
        print("%s: %d" % (title, len(entries)), file=out)
        if not entries:
            continue
        print("  %-44s %-7s %6s %8s %-10s %s" % ("WEBHOOK-ID", "EVENT", "AGE", "ATTEMPTS",
                                                "NEXT TRY" if not dead else "", "LAST ERROR"),
              file=out)
        for entry in entries:
            try:
                record = spool.read(entry.name, dead=dead)
            except (OSError, ValueError) as error:
                print("  %-44s unreadable: %s" % (entry.name, error), file=out)
                continue
            error = record.get("dead_reason") if dead else record.get("last_error")
            print("  %-44s %-7s %6s %8d %-10s %s"
                  % (record.get("id", entry.name), entry.event,
                     _age(now - record.get("occurred", now)), record.get("attempts", 0),
                     "" if dead else _when(record.get("next_at", 0), now), error or "-"),
                  file=out)
    return 0


def _summary_line(summary):
    parts = ["delivered %d" % summary["delivered"]]
    for key, label in (("retry", "to retry"), ("gone", "gone (410)"), ("dead", "dead")):
        if summary[key]:
            parts.append("%s %d" % (label, summary[key]))
    line = ", ".join(parts)
    if summary["blocked"]:
        line += "; the CRM is backing off (see webhooks status)"
    if summary["last_error"]:
        line += "; last error: %s" % summary["last_error"]
    return line


def webhooks_deliver(args, out=None, clock=time.time, wait=None):
    out = out or sys.stdout
    config, spool = _context(args)
    from callexchange.webhooks.deliverer import Deliverer

    quiet = getattr(args, "quiet", False)
    if not config.webhook.url:
        if not quiet:
            print("webhook: [webhook] url is empty; nothing is sent", file=out)
        return 0
    try:
        lock = spool.try_lock()
    except OSError as error:
        print("cannot take the deliverer's lock %s: %s" % (spool.lock_path,
                                                            error.strerror or error),
              file=sys.stderr)
        return 1
    if lock is None:
        spool.wake(all_now=args.all_now)
        if not quiet:
            print("a deliverer is already running (pid %s); it was woken up%s"
                  % (spool.lock_holder(),
                     " to send everything now, back-off ignored" if args.all_now else ""),
                  file=out)
        return 0
    try:
        # Like the hook's deliverer, but without lingering on an empty spool: go on while
        # something is due now (or, --for, within that many seconds), listening to the
        # hooks' wake-ups meanwhile.
        stay = max(0.0, getattr(args, "stay", 0.0) or 0.0)
        summary = Deliverer(config, spool, clock=clock).serve(
            linger=0, all_now=args.all_now, wait=wait,
            until=clock() + stay if stay else None)
    finally:
        os.close(lock)
    if not quiet or any(summary[k] for k in ("delivered", "retry", "dead", "gone")):
        print(_summary_line(summary) + "; pending %d, dead %d"
              % (len(spool.pending()), len(spool.dead())), file=out)
    if summary.get("disk_error"):
        print("disk: %s" % summary["disk_error"], file=out)
    return 0


def webhooks_retry(args, clock=time.time, out=None):
    out = out or sys.stdout
    config, spool = _context(args)
    if args.all_dead:
        targets = [(entry, True) for entry in spool.dead()]
        if not targets:
            print("no dead events", file=out)
            return 0
    else:
        found = spool.find(args.id)
        if found is None:
            print("no event %r (see: callexchange webhooks status)" % args.id, file=sys.stderr)
            return 1
        targets = [found]
    now = clock()
    for entry, dead in list(targets):
        try:
            record = spool.read(entry.name, dead=dead)
        except (OSError, ValueError) as error:
            print("cannot read %s: %s" % (entry.name, error), file=sys.stderr)
            targets.remove((entry, dead))
            continue
        for key in ("dead_at", "dead_reason"):
            record.pop(key, None)
        # A fresh 24 hours, due now; the body and webhook-id stay those of the event.
        record.update(attempts=0, next_at=0, window_start=now)
        try:
            if dead:
                spool.revive(entry.name, record)
            else:
                spool.update(entry.name, record)
        except OSError as error:
            print("cannot queue %s again: %s" % (entry.name, error.strerror or error),
                  file=sys.stderr)
            return 1
    print("queued %d event(s) again" % len(targets), file=out)
    lock = spool.try_lock()
    if lock is None:
        spool.wake(all_now=True)
        print("a deliverer is running (pid %s) and sends them now" % spool.lock_holder(),
              file=out)
        return 0
    from callexchange.webhooks.deliverer import Deliverer

    try:
        summary = Deliverer(config, spool, clock=clock).deliver(all_now=True)
    finally:
        os.close(lock)
    print(_summary_line(summary), file=out)
    return 0


def webhooks_secret(args, out=None):
    from callexchange.webhooks.signing import new_secret

    out = out or sys.stdout
    print(new_secret(), file=out)
    return 0


def webhooks_demo_crm(args, out=None):
    from callexchange.sandbox import democrm

    return democrm.run(args, out=out or sys.stdout)


# --- the spool's disk, for `webhooks status` and `callexchange check` ---

def _size(count):
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return ("%d %s" if unit == "B" else "%.1f %s") % (count, unit)
        count /= 1024.0
    return ""  # pragma: no cover


def spool_check(spool):
    """[(level, text)] on the disk of the webhook spool: FAIL when it is full (no room
    for an event, or too little to refill the reserve the hooks are spending: new events
    then come from that reserve, which lasts a while), warn when space is low or the
    reserve is not whole; ok with the free space otherwise."""
    from callexchange.webhooks.spool import RESERVE_CHUNK, RESERVE_CHUNKS, RESERVE_MIN_FREE

    free = spool.free_space()
    if free is None:
        return [("warn", "%s does not exist yet (the first event creates it)" % spool.root)]
    space, inodes = free
    reserve, whole = spool.reserve_bytes(), RESERVE_CHUNKS * RESERVE_CHUNK
    if reserve is None:
        reserve_text = "no reserve to read (the deliverer makes it)"
    else:
        reserve_text = "reserve %s of %s" % (_size(reserve), _size(whole))
    where = "%s free for %s%s" % (_size(space), spool.root,
                                  "" if inodes is None else " (%d inodes)" % inodes)
    no_room = space < RESERVE_CHUNK or (inodes is not None and inodes < RESERVE_CHUNKS)
    spending = reserve is not None and reserve < whole and (
        space < RESERVE_CHUNK + RESERVE_MIN_FREE or (inodes is not None and inodes < 100))
    if no_room or spending:
        return [("FAIL", "DISK FULL: %s; new webhook events are written from the spool's "
                         "%s; free space on that filesystem" % (where, reserve_text))]
    if space < RESERVE_MIN_FREE or (reserve is not None and reserve < whole):
        return [("warn", "%s; %s (refilled by the deliverer while %s stay free)"
                 % (where, reserve_text, _size(RESERVE_MIN_FREE)))]
    return [("ok", "%s; %s" % (where, reserve_text))]


def check_lines(settings):
    """`callexchange check`'s lines for the webhooks: the spool's disk."""
    from callexchange.webhooks.spool import Spool

    return [(level, "webhook spool: %s" % text)
            for level, text in spool_check(Spool.for_state_dir(settings.state.dir))]
