#!/usr/bin/env python3
"""Benchmark of find_phone_files.pl's lookup on a synthetic archive of FreePBX recordings.

Builds an archive of empty files named the FreePBX way over three years of day folders
(ending today), indexes it, and reports in one run:

- archive build time; index build time and size on disk;
- p50/p95 lookup latency in-process: the index alone (`RecordingIndex.find`, refresh
  included) and the whole endpoint through the WSGI app (key check, lookup, stat of every
  hit, durations, JSON);
- the cost of the refresh when nothing changed, and of the first lookup after 1,000 new
  recordings landed in today's folder;
- the same lookup done with `find <root> -name '*PHONE*'` (the baseline) and the ratio,
  and the direct scan a lookup falls back to while the index is being rebuilt;
- with --cgi-url, p50/p95 of the same lookups over HTTP (for a server whose
  [recordings] root is this archive: use --dir and --keep to set one up).

    .venv/bin/python bench/recordings_lookup.py                 # 1,000,000 files in /tmp
    .venv/bin/python bench/recordings_lookup.py --files 100000 --lookups 200
"""

import argparse
import json
import os
import random
import shutil
import stat
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "lib"))

from callexchange import keys  # noqa: E402
from callexchange.http.app import create_app  # noqa: E402
from callexchange.config import config_from_text  # noqa: E402
from callexchange.recordings.index import RecordingIndex  # noqa: E402

API_KEY = "bench-recordings-key"
AGENTS = ["%d" % n for n in range(2001, 2101)]


def day_folders(days, now):
    """`days` day folders ending today, oldest first: (YYYYMMDD, YYYY/MM/DD)."""
    today = time.localtime(now)
    out = []
    for back in range(days - 1, -1, -1):
        t = time.localtime(time.mktime((today.tm_year, today.tm_mon, today.tm_mday - back,
                                        12, 0, 0, 0, 0, -1)))
        out.append(("%04d%02d%02d" % t[:3], "%04d/%02d/%02d" % t[:3]))
    return out


def make_file(path):
    try:
        os.mknod(path, 0o644 | stat.S_IFREG)
    except (AttributeError, PermissionError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o644))


def recording_name(rng, leads, day, sequence):
    lead = rng.choice(leads)
    agent = rng.choice(AGENTS)
    seconds = rng.randrange(8 * 3600, 20 * 3600)
    clock = "%02d%02d%02d" % (seconds // 3600, seconds // 60 % 60, seconds % 60)
    uniqueid = "%d.%d" % (1600000000 + sequence // 7, sequence)
    kind = rng.random()
    if kind < 0.6:
        head = "out-%s-%s" % (lead, agent)
    elif kind < 0.9:
        head = "in-%s-%s" % (agent, lead)
    elif kind < 0.95:
        head = "q-600-%s" % lead
    else:
        head = "exten-%s-%s" % (agent, "+" + lead)
    return "%s-%s-%s-%s.wav" % (head, day, clock, uniqueid)


def build_archive(root, files, days, seed, now):
    rng = random.Random(seed)
    leads = ["1%03d%07d" % (rng.randrange(201, 990), rng.randrange(10 ** 7))
             for _ in range(max(10, files // 5))]
    folders = day_folders(days, now)
    per_day, extra = divmod(files, len(folders))
    sequence = 0
    started = time.perf_counter()
    for index, (day, rel) in enumerate(folders):
        path = os.path.join(root, rel)
        os.makedirs(path, exist_ok=True)
        for _ in range(per_day + (1 if index < extra else 0)):
            make_file(os.path.join(path, recording_name(rng, leads, day, sequence)))
            sequence += 1
        if index % 50 == 0:
            print("\r  archive: %d/%d day folders" % (index + 1, len(folders)), end="",
                  file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return leads, folders, time.perf_counter() - started


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def timed(function, *args):
    started = time.perf_counter()
    result = function(*args)
    return time.perf_counter() - started, result


def wsgi_get(app, phone):
    environ = {
        "REQUEST_METHOD": "GET", "SCRIPT_NAME": "/recorded/v1/find_phone_files.pl",
        "PATH_INFO": "", "QUERY_STRING": "phone=%s" % phone, "HTTP_API_KEY": API_KEY,
        "SERVER_NAME": "bench", "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.input": None, "wsgi.errors": sys.stderr, "wsgi.url_scheme": "http",
    }
    status = []
    body = b"".join(app(environ, lambda s, h, e=None: status.append(s)))
    assert status[0].startswith("200"), (status, body)
    return json.loads(body)


def directory_size(path):
    total = 0
    for base, _dirs, names in os.walk(path):
        for name in names:
            total += os.lstat(os.path.join(base, name)).st_size
    return total


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=1000000)
    parser.add_argument("--days", type=int, default=3 * 365 + 1)
    parser.add_argument("--lookups", type=int, default=500, help="lookups timed (each way)")
    parser.add_argument("--find-runs", type=int, default=3, help="find(1) baseline runs")
    parser.add_argument("--new-files", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--dir", help="work directory (default: a new one under /tmp)")
    parser.add_argument("--keep", action="store_true", help="keep the archive and index")
    parser.add_argument("--cgi-url", help="also time GET <url>?phone=... (same archive)")
    parser.add_argument("--api-key", default=API_KEY, help="api-key for --cgi-url")
    args = parser.parse_args(argv)

    work = args.dir or tempfile.mkdtemp(prefix="cx-recordings-bench-", dir="/tmp")
    os.makedirs(work, exist_ok=True)
    root = os.path.join(work, "archive")
    state_dir = os.path.join(work, "state")
    os.makedirs(state_dir, exist_ok=True)
    report = {"files": args.files, "days": args.days, "python": sys.version.split()[0]}
    try:
        now = time.time()
        print("building %d files over %d day folders in %s" % (args.files, args.days, root),
              file=sys.stderr)
        leads, folders, seconds = build_archive(root, args.files, args.days, args.seed, now)
        report["archive_build_s"] = round(seconds, 1)

        index = RecordingIndex(root, os.path.join(state_dir, "recordings-index"))
        seconds, _ = timed(index.rebuild)
        recordings, days, segments, size = index.stats()
        report.update(index_build_s=round(seconds, 2), index_recordings=recordings,
                      index_days=days, index_segments=segments, index_bytes=size,
                      index_bytes_per_recording=round(size / max(1, recordings), 1))
        print("index: %.1f s, %.1f MB" % (seconds, size / 1e6), file=sys.stderr)

        keys_file = os.path.join(work, "api-keys")
        if not os.path.exists(keys_file):
            keys.add_key(keys_file, "bench", API_KEY)
        config = config_from_text(
            "[ami]\nusername = bench\nsecret = bench\n[ani]\ndefault = 12125550100\n"
            "[recordings]\nroot = %s\nbase_url = https://pbx.example/wav-files\n"
            "[auth]\nkeys_file = %s\n[state]\ndir = %s\n" % (root, keys_file, state_dir))
        app = create_app(config=config)

        # Wait for today's folder to settle (2 s), as a quiet archive would be.
        time.sleep(2.1)
        index.find(leads[0])
        rng = random.Random(args.seed + 1)
        phones = [rng.choice(leads) for _ in range(args.lookups)]
        misses = ["1%03d%07d" % (rng.randrange(201, 990), rng.randrange(10 ** 7))
                  for _ in range(args.lookups // 5)]

        find_times, hits = [], []
        for phone in phones:
            seconds, found = timed(index.find, phone)
            find_times.append(seconds)
            hits.append(len(found))
        app_times = []
        for phone in phones:
            seconds, reply = timed(wsgi_get, app, phone)
            app_times.append(seconds)
        miss_times = [timed(index.find, phone)[0] for phone in misses]
        refresh_times = [timed(index._refresh, index._load())[0] for _ in range(200)]
        report.update(
            hits_per_lookup_median=statistics.median(hits), hits_per_lookup_max=max(hits),
            find_p50_ms=round(percentile(find_times, 0.5) * 1e3, 3),
            find_p95_ms=round(percentile(find_times, 0.95) * 1e3, 3),
            app_p50_ms=round(percentile(app_times, 0.5) * 1e3, 3),
            app_p95_ms=round(percentile(app_times, 0.95) * 1e3, 3),
            miss_p50_ms=round(percentile(miss_times, 0.5) * 1e3, 3),
            refresh_unchanged_p50_ms=round(percentile(refresh_times, 0.5) * 1e3, 3))

        # Many hits: an agent extension is the src of ~1% of all recordings.
        busy = [timed(wsgi_get, app, AGENTS[i])[0] for i in range(5)]
        report["app_agent_extension_limit_1000_p50_ms"] = round(statistics.median(busy) * 1e3, 1)

        # The baseline: find(1) over the archive, for the first few phones.
        find_runs = []
        for phone in phones[:args.find_runs]:
            started = time.perf_counter()
            subprocess.run(["find", root, "-name", "*%s*" % phone], check=True,
                           stdout=subprocess.DEVNULL)
            seconds = time.perf_counter() - started
            find_runs.append(seconds)
        baseline = statistics.median(find_runs)
        report["find1_median_s"] = round(baseline, 3)
        # What a lookup costs while the index is unusable and a rebuild runs elsewhere.
        report["scan_without_index_s"] = round(timed(index.scan, phones[0])[0], 2)
        report["ratio_find1_vs_find_p50"] = round(baseline / percentile(find_times, 0.5))
        report["ratio_find1_vs_app_p50"] = round(baseline / percentile(app_times, 0.5))

        # Incremental: new recordings in today's folder, then the next lookup.
        today_day, today_rel = folders[-1]
        new_rng = random.Random(args.seed + 2)
        new_phone = "19995550123"
        for n in range(args.new_files):
            name = recording_name(new_rng, [new_phone], today_day, 10 ** 8 + n)
            make_file(os.path.join(root, today_rel, name))
        seconds, found = timed(index.find, new_phone)
        assert len(found) == args.new_files, len(found)
        report["first_lookup_after_new_files_ms"] = round(seconds * 1e3, 2)
        unsettled = [timed(index.find, phones[i])[0] for i in range(20)]
        report["lookup_while_today_unsettled_p50_ms"] = round(
            statistics.median(unsettled) * 1e3, 3)
        time.sleep(2.1)
        index.find(phones[0])
        after = [timed(index.find, phone)[0] for phone in phones[:200]]
        report["find_p50_after_new_files_ms"] = round(percentile(after, 0.5) * 1e3, 3)
        recordings, days, segments, size = index.stats()
        report["segments_after_new_files"] = segments

        if args.cgi_url:
            import urllib.request
            cgi_times = []
            for phone in phones[:200]:
                request = urllib.request.Request("%s?phone=%s" % (args.cgi_url, phone),
                                                 headers={"api-key": args.api_key})
                started = time.perf_counter()
                with urllib.request.urlopen(request, timeout=30) as response:
                    response.read()
                cgi_times.append(time.perf_counter() - started)
            report["cgi_p50_ms"] = round(percentile(cgi_times, 0.5) * 1e3, 2)
            report["cgi_p95_ms"] = round(percentile(cgi_times, 0.95) * 1e3, 2)
    finally:
        if not args.keep:
            print("removing %s" % work, file=sys.stderr)
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
