"""`callexchange recordings reindex` and `callexchange recordings find PHONE`.

`register(subparsers)` adds the `recordings` command to the admin tool's parser; each
handler reads the config given by --config (else $CALLEXCHANGE_CONFIG) and returns the exit status (0 ok, 1 failed).

    callexchange recordings reindex          # rebuild the index, progress bar on stderr
    callexchange recordings find 12127773456 --from 2024-07-01 --limit 10
"""

import json
import os
import sys
import time

from callexchange import config as config_module
from callexchange.statedir import StateDir


def register(subparsers):
    """Add `recordings reindex` and `recordings find` to an argparse subparsers object."""
    recordings = subparsers.add_parser(
        "recordings", help="the recordings index: reindex, find a number's recordings")
    actions = recordings.add_subparsers(metavar="ACTION")
    reindex = actions.add_parser(
        "reindex", help="rebuild the recordings index from the archive (lookups keep "
                        "working meanwhile)")
    reindex.set_defaults(handler=reindex_command)
    find = actions.add_parser(
        "find", help="print what find_phone_files.pl answers for PHONE (JSON)")
    find.add_argument("phone", help="the number, as a CRM would send it")
    find.add_argument("--from", dest="first", metavar="YYYY-MM-DD", help="first day folder")
    find.add_argument("--to", dest="last", metavar="YYYY-MM-DD", help="last day folder")
    find.add_argument("--limit", help="at most this many, the newest (1-1000, default 1000)")
    find.add_argument("--uniqueid", help="only this call's recordings")
    find.set_defaults(handler=find_command)
    return recordings


def _index(settings):
    from callexchange.recordings.index import RecordingIndex
    return RecordingIndex(settings.recordings.root,
                          StateDir(settings.state.dir).recordings_index)


class ProgressBar:
    """Progress on a stream: a redrawn bar on a terminal, a line per 10% otherwise (logs,
    cron mail)."""

    def __init__(self, stream, width=32, clock=time.monotonic):
        self.stream = stream
        self.width = width
        self.clock = clock
        isatty = getattr(stream, "isatty", None)
        self.tty = bool(isatty and isatty())
        self.drawn = None
        self.tenth = 0
        self.started = clock()

    def update(self, done, total, recordings):
        if self.tty:
            now = self.clock()
            if done < total and self.drawn is not None and now - self.drawn < 0.1:
                return
            self.drawn = now
            filled = self.width * done // total if total else self.width
            self.stream.write("\r[%s%s] %3d%%  %d/%d day folders  %d recordings  %.0f s "
                              % ("#" * filled, "." * (self.width - filled),
                                 100 * done // total if total else 100, done, total,
                                 recordings, now - self.started))
            self.stream.flush()
            return
        tenth = 10 * done // total if total else 10
        if tenth > self.tenth:
            self.tenth = tenth
            self.stream.write("indexing: %d%% (%d/%d day folders, %d recordings)\n"
                              % (10 * tenth, done, total, recordings))
            self.stream.flush()

    def finish(self):
        if self.tty and self.drawn is not None:
            self.stream.write("\n")
            self.stream.flush()


def reindex_command(args):
    settings = config_module.load_config(args.config)
    index = _index(settings)
    root = settings.recordings.root
    if not os.path.isdir(root):
        print("warning: the recording root %s does not exist; the index will be empty"
              % root, file=sys.stderr)
    bar = ProgressBar(sys.stderr)
    started = time.monotonic()
    try:
        index.rebuild(progress=bar.update)
    except OSError as error:
        bar.finish()
        print("reindex failed: %s" % error, file=sys.stderr)
        return 1
    bar.finish()
    recordings, days, _segments, size = index.stats()
    print("indexed %d recordings in %d day folders of %s in %.1f s; index %s (%.1f MB)"
          % (recordings, days, root, time.monotonic() - started, index.directory, size / 1e6))
    return 0


def find_command(args):
    from callexchange.errors import ApiError
    from callexchange.recordings.lookup import error_reply, lookup, read_query

    settings = config_module.load_config(args.config)
    params = {"phone": args.phone, "from": args.first, "to": args.last,
              "limit": args.limit, "uniqueid": args.uniqueid}
    try:
        body, status = lookup(settings, read_query(params)), 0
    except ApiError as error:
        body, status = error_reply(error), 1
    # Exactly the endpoint's body (same encoder, same separators).
    print(json.dumps(body))
    return status
