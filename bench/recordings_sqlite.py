#!/usr/bin/env python3
"""The recordings index against sqlite3 as its store, on the same synthetic archive, in one
run: why the index is hand-built (docs/decisions.md, "Recordings index: hand-built or
sqlite3").

Both stores hold the same entries (one per candidate number of each recording: the
index's `day_lines`) and answer the same question (the recordings of a phone number, by
the last 7 digits, then the full matching rule). Reported:

- build time from the archive (the same walk for both) and size on disk;
- lookup p50/p95: `RecordingIndex.find` (its refresh included: ~8 stats) and an indexed
  `SELECT` on a fresh connection per lookup, as a CGI process would open it;
- what a CGI process pays before its first lookup: the import of `sqlite3` and opening
  the database, measured in fresh interpreters (`python -X importtime` style, median).

    .venv/bin/python bench/recordings_sqlite.py --files 200000
    .venv/bin/python bench/recordings_sqlite.py --files 1000000 --lookups 500
"""

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "lib"))
sys.path.insert(0, HERE)

from recordings_lookup import build_archive, directory_size, percentile  # noqa: E402

from callexchange.recordings.index import RecordingIndex, _day_names, _walk_days, day_lines  # noqa: E402
from callexchange.recordings.names import index_key, numbers_match  # noqa: E402

SCHEMA = ("CREATE TABLE entry (key TEXT NOT NULL, digits TEXT NOT NULL, day TEXT NOT NULL, "
          "name TEXT NOT NULL)")


def build_sqlite(root, path):
    import sqlite3

    started = time.perf_counter()
    connection = sqlite3.connect(path)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute(SCHEMA)
    rows = 0
    for day in _walk_days(root):
        names = _day_names(os.path.join(root, day[:4], day[4:6], day[6:])) or ()
        batch = [line.split("\t", 3) for line in day_lines(day, names)]
        connection.executemany("INSERT INTO entry VALUES (?, ?, ?, ?)", batch)
        rows += len(batch)
    connection.execute("CREATE INDEX entry_key ON entry (key)")
    connection.commit()
    connection.close()
    return time.perf_counter() - started, rows


def sqlite_find(path, phone):
    import sqlite3

    connection = sqlite3.connect("file:%s?mode=ro" % path, uri=True)
    try:
        rows = connection.execute("SELECT digits, day, name FROM entry WHERE key = ?",
                                  (index_key(phone),)).fetchall()
    finally:
        connection.close()
    return sorted({(day, name) for digits, day, name in rows if numbers_match(phone, digits)})


def fresh_interpreter_ms(code, runs=15):
    """Median wall time of `python -S -c code` minus that of `python -S -c pass`."""
    def median(snippet):
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            subprocess.run([sys.executable, "-S", "-c", snippet], check=True)
            times.append(time.perf_counter() - started)
        return statistics.median(times)
    return (median(code) - median("pass")) * 1000


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=200000)
    parser.add_argument("--days", type=int, default=3 * 365 + 1)
    parser.add_argument("--lookups", type=int, default=300)
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args(argv)

    work = tempfile.mkdtemp(prefix="cx-sqlite-bench-")
    try:
        root = os.path.join(work, "monitor")
        leads, _folders, _seconds = build_archive(root, args.files, args.days, args.seed,
                                                  time.time())
        index = RecordingIndex(root, os.path.join(work, "recordings-index"))
        started = time.perf_counter()
        index.rebuild()
        index_build = time.perf_counter() - started
        database = os.path.join(work, "recordings.sqlite")
        sqlite_build, rows = build_sqlite(root, database)

        rng = random.Random(args.seed + 1)
        phones = [rng.choice(leads) for _ in range(args.lookups)]
        index_times, sqlite_times = [], []
        for phone in phones:
            started = time.perf_counter()
            ours = index.find(phone)
            index_times.append(time.perf_counter() - started)
            started = time.perf_counter()
            theirs = sqlite_find(database, phone)
            sqlite_times.append(time.perf_counter() - started)
            assert ours == theirs, (phone, ours[:3], theirs[:3])

        import_ms = fresh_interpreter_ms("import sqlite3")
        open_ms = fresh_interpreter_ms(
            "import sqlite3; c = sqlite3.connect('file:%s?mode=ro', uri=True); "
            "c.execute('SELECT 1 FROM entry LIMIT 1').fetchall()" % database)
        print("archive: %d recordings, %d index entries" % (args.files, rows))
        print("%-26s %12s %12s" % ("", "hand-built", "sqlite3"))
        print("%-26s %11.1fs %11.1fs" % ("build", index_build, sqlite_build))
        print("%-26s %10.1fMB %10.1fMB" % ("size on disk", directory_size(index.directory) / 1e6,
                                           (directory_size(work) - directory_size(root)
                                            - directory_size(index.directory)) / 1e6))
        for label, fraction in (("lookup p50", 0.5), ("lookup p95", 0.95)):
            print("%-26s %10.2fms %10.2fms" % (label, percentile(index_times, fraction) * 1e3,
                                               percentile(sqlite_times, fraction) * 1e3))
        print("%-26s %12s %10.1fms" % ("CGI: import sqlite3", "-", import_ms))
        print("%-26s %12s %10.1fms" % ("CGI: import + open + read", "-", open_ms))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
