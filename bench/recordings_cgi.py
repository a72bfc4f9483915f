#!/usr/bin/env python3
"""find_phone_files.pl through Apache (mod_cgid) on a large archive, next to asteriskapi.pl.

In one run, through one private Apache (tests/apache_server.py, event MPM, CGI as
www-data) and against the sandbox PBX started in this process:

- builds (or reuses, with --dir) a synthetic FreePBX archive of N empty files over three
  years of day folders (bench/recordings_lookup.py), and indexes it before anything is
  timed (RecordingIndex.rebuild, as `callexchange recordings reindex` does; the index
  then goes to www-data, which refreshes it per request);
- checks that both endpoints answer correctly: the lookup a non-empty JSON array for a
  lead that is in the archive, the call a 200 with "status": "true" and an Originate;
- for each concurrency (1 and 8), ab times GET /recorded/v1/find_phone_files.pl?phone=...
  and POST /api/v1/asteriskapi.pl (dedupe_seconds = 0: every request places a call),
  each with the api-key header, and prints ab's p50/p95, requests/s, and the ratio
  find_phone_files / asteriskapi at p50 (target: < 1.5);
- reports the index's build time and size, and the load average around each ab run
  (the machine is shared: say what else was running);
- with --profile, runs cgi-bin/find_phone_files.pl once directly (CGI environment, as
  www-data) under cProfile and prints where its time goes.

    .venv/bin/python bench/recordings_cgi.py --dir /tmp/cx-rec-1m --keep   # 1,000,000 files
    .venv/bin/python bench/recordings_cgi.py --quick                      # smoke run

The archive takes minutes to build at 1,000,000 files: with --dir and --keep the next run
reuses it (a marker file records how it was built). See docs/benchmarks.md.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import call_latency  # noqa: E402  (puts tests/ and lib/ on sys.path)
import recordings_lookup  # noqa: E402
import apache_server  # noqa: E402
from callexchange import keys  # noqa: E402
from callexchange.recordings.index import RecordingIndex  # noqa: E402
from callexchange.recordings.names import parse_name  # noqa: E402
from callexchange.sandbox.server import Sandbox  # noqa: E402

API_KEY = call_latency.API_KEY         # run_ab sends this one
BASE_URL = "https://pbx.example/wav-files"
FIND_PATH = "/recorded/v1/find_phone_files.pl"
CALL_PATH = "/api/v1/asteriskapi.pl"
MARKER = "recordings.json"             # beside the archive: how it was built


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=1000000)
    parser.add_argument("--days", type=int, default=3 * 365 + 1)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--requests", type=int, default=200,
                        help="requests per endpoint and concurrency (default 200)")
    parser.add_argument("--concurrency", default="1,8",
                        help="comma-separated concurrency levels (default 1,8)")
    parser.add_argument("--warmup", type=int, default=5, help="requests before timing")
    parser.add_argument("--dir", help="work directory holding the archive (reused if "
                        "built with the same --files/--days/--seed)")
    parser.add_argument("--keep", action="store_true", help="keep the archive")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 20,000 files, 20 requests, 2 warm-up")
    parser.add_argument("--profile", action="store_true",
                        help="also run find_phone_files.pl once directly under cProfile")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = parser.parse_args(argv)
    if args.quick:
        args.files, args.requests, args.warmup = 20000, 20, 2
    args.levels = [int(c) for c in args.concurrency.split(",") if c.strip()]
    return args


# --- the archive ----------------------------------------------------------------------

def ensure_archive(work, files, days, seed):
    """The archive under work/recordings, built unless a complete one of the same shape is
    there. Returns (path, seconds to build or None when reused)."""
    archive = work / "recordings"
    marker = work / MARKER
    wanted = {"files": files, "days": days, "seed": seed}
    if archive.is_dir() and marker.exists():
        built = json.loads(marker.read_text())
        if {k: built.get(k) for k in wanted} == wanted:
            print("reusing the archive %s (built %s)" % (archive, built.get("built")),
                  file=sys.stderr)
            return archive, None
    if marker.exists():
        marker.unlink()
    shutil.rmtree(archive, ignore_errors=True)
    print("building %d files over %d day folders in %s" % (files, days, archive),
          file=sys.stderr)
    _leads, _folders, seconds = recordings_lookup.build_archive(
        str(archive), files, days, seed, time.time())
    archive.chmod(0o755)
    # Written last: an interrupted build is never reused.
    marker.write_text(json.dumps(dict(wanted, built=time.strftime("%Y-%m-%d %H:%M"),
                                      build_s=round(seconds, 1))) + "\n")
    return archive, seconds


def pick_lead(archive, seed):
    """A lead number that is in the archive: the dst of an outbound recording in the
    middle day folder (the same one for the same archive)."""
    days = sorted(str(p.relative_to(archive)) for p in archive.glob("*/*/*"))
    for rel in days[len(days) // 2:] + days[:len(days) // 2]:
        for name in sorted(os.listdir(archive / rel)):
            parsed = parse_name(name)
            if parsed is not None and parsed.prefix == "out" and parsed.dst:
                return parsed.dst
    raise SystemExit("recordings_cgi: no outbound recording in %s" % archive)


def chown_tree(path, user, group):
    for base, dirs, names in os.walk(path):
        shutil.chown(base, user, group)
        for name in names:
            shutil.chown(os.path.join(base, name), user, group)


def build_index(archive, state_dir, phone):
    """Index the archive as we are (root), let the newest day folder settle, then give the
    index to the worker user. Returns a dict of figures."""
    index = RecordingIndex(str(archive), str(state_dir / "recordings-index"))
    started = time.perf_counter()
    index.rebuild()
    build_s = time.perf_counter() - started
    # Today's folder was written less than 2 s ago: it counts as "unsettled" and would be
    # listed again by every lookup until one lookup after it settles records it.
    time.sleep(2.1)
    hits = len(index.find(phone))
    recordings, days, segments, size = index.stats()
    if os.geteuid() == 0:
        chown_tree(state_dir, *apache_server.worker_identity())
    return {"index_build_s": round(build_s, 1), "index_recordings": recordings,
            "index_days": days, "index_segments": segments, "index_bytes": size,
            "phone_hits": hits}


# --- ab -------------------------------------------------------------------------------

def ab_percentiles(csv_path):
    """{percent: ms} from ab's -e CSV."""
    found = {}
    with open(csv_path) as handle:
        for line in handle:
            percent, _, millis = line.strip().partition(",")
            if percent.isdigit():
                found[int(percent)] = float(millis)
    return found


def loadavg():
    with open("/proc/loadavg") as handle:
        return float(handle.read().split()[0])


def http_get(url):
    request = urllib.request.Request(url, headers={"api-key": API_KEY})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


# --- direct runs (no Apache) ----------------------------------------------------------

def direct_env(config_path, venv, phone):
    env = call_latency.cgi_environ(config_path, venv, FIND_PATH)
    env.update(REQUEST_METHOD="GET", QUERY_STRING="phone=%s" % phone,
               PYTHONDONTWRITEBYTECODE="1")
    del env["CONTENT_TYPE"], env["CONTENT_LENGTH"]
    return env


def as_worker():
    if os.geteuid() != 0:
        return {}
    user, group = apache_server.worker_identity()
    return {"user": user, "group": group, "extra_groups": []}


def direct_runs(command, env, runs=15):
    """Median wall time (ms) of `command` run as the CGI user, outside Apache."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        result = subprocess.run(command, env=env, stdin=subprocess.DEVNULL,
                                capture_output=True, check=False, cwd="/", **as_worker())
        times.append((time.perf_counter() - started) * 1e3)
        if not result.stdout.startswith(b"Status: 200"):
            raise RuntimeError("direct run answered %r %r" % (result.stdout[:300],
                                                               result.stderr[-1000:]))
    return statistics.median(times)


def profile_once(prefix, venv, env, out_dir):
    """cProfile of one direct run of find_phone_files.pl; the top of it, by cumtime."""
    stats_file = out_dir / "find.prof"
    out_dir.chmod(0o777)
    subprocess.run([str(venv / "bin" / "python3"), "-m", "cProfile", "-o", str(stats_file),
                    str(prefix / "cgi-bin" / "find_phone_files.pl")], env=env, cwd="/",
                   stdin=subprocess.DEVNULL, capture_output=True, check=True, **as_worker())
    import io
    import pstats
    text = io.StringIO()
    pstats.Stats(str(stats_file), stream=text).sort_stats("cumulative").print_stats(30)
    return text.getvalue()


# --- the run --------------------------------------------------------------------------

# --- ApacheBench --------------------------------------------------------------------

def ab_binary():
    found = shutil.which("ab") or ("/usr/bin/ab" if os.access("/usr/bin/ab", os.X_OK) else None)
    if not found:
        sys.exit("recordings_cgi: ab not found (apt-get install apache2-utils)")
    return found

def run_ab(ab, url, body_file, requests, concurrency, csv_path):
    """One ab run, a POST of `body_file` or, when it is None, a GET; returns
    {"p50_ms", "rps", "non_2xx", "errors", "complete"}."""
    command = [ab, "-q", "-n", str(requests), "-c", str(concurrency), "-s", "30"]
    if body_file is not None:
        command += ["-p", str(body_file), "-T", "application/json"]
    command += ["-H", "api-key: " + API_KEY, "-e", str(csv_path), url]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError("ab failed (%d): %s%s" % (result.returncode, result.stdout,
                                                     result.stderr))
    stats = {"non_2xx": 0, "errors": 0}
    for line in result.stdout.splitlines():
        label, _, value = line.partition(":")
        value = value.strip()
        if label == "Requests per second":
            stats["rps"] = float(value.split()[0])
        elif label == "Complete requests":
            stats["complete"] = int(value)
        elif label == "Non-2xx responses":
            stats["non_2xx"] = int(value)
    # "Failed requests: N" counts replies whose length differs from the first one's too
    # (ours vary); only "(Connect: 0, Receive: 0, Length: 3, Exceptions: 0)" tells.
    for part in result.stdout.replace("(", ",").replace(")", ",").split(","):
        label, _, value = part.partition(":")
        if label.strip() in ("Connect", "Receive", "Exceptions") and value.strip().isdigit():
            stats["errors"] += int(value.strip())
    with open(csv_path) as handle:
        for line in handle:
            percent, _, millis = line.strip().partition(",")
            if percent == "50":
                stats["p50_ms"] = float(millis)
    return stats

def finish(json_path, data, results):
    """Write `data` to `json_path` (if given); exit 1 if any timed run had a non-2xx
    reply or a failed request: figures of a broken run mean nothing."""
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        with open(json_path, "w") as handle:
            json.dump(data, handle, indent=2)
    bad = [r for r in results if r["non_2xx"] or r["errors"]]
    if bad:
        print("FAILED: non-2xx or errors in %s" % ", ".join(
            "%s c=%d" % (r["target"], r["concurrency"]) for r in bad))
        sys.exit(1)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    ab = ab_binary()
    if not apache_server.find_apache():
        sys.exit("recordings_cgi: apache2 not found (apt-get install apache2)")

    made_work = not args.dir
    work = Path(args.dir) if args.dir else apache_server.shared_tempdir("cx-recordings-cgi-")
    work.mkdir(parents=True, exist_ok=True)
    work.chmod(0o755)
    run = apache_server.shared_tempdir("cx-recordings-cgi-run-")
    report = {"files": args.files, "days": args.days, "requests": args.requests,
              "cores": os.cpu_count(), "python": sys.version.split()[0],
              "date": time.strftime("%Y-%m-%d %H:%M"), "loadavg_start": loadavg()}
    sandbox = apache = None
    results = []
    try:
        archive, seconds = ensure_archive(work, args.files, args.days, args.seed)
        report["archive_build_s"] = round(seconds, 1) if seconds is not None else "reused"
        phone = pick_lead(archive, args.seed)
        report["phone"] = phone

        state_dir = apache_server.writable_dir(run / "state")
        keys_file = run / "api-keys"
        keys.add_key(str(keys_file), "bench", API_KEY)
        keys_file.chmod(0o644)
        report.update(build_index(archive, state_dir, phone))
        print("index: %.1f s, %.1f MB, %d recordings; %s has %d"
              % (report["index_build_s"], report["index_bytes"] / 1e6,
                 report["index_recordings"], phone, report["phone_hits"]), file=sys.stderr)
        if report["index_recordings"] != args.files:
            sys.exit("recordings_cgi: indexed %d recordings, the archive has %d"
                     % (report["index_recordings"], args.files))

        sandbox = Sandbox(host="127.0.0.1", port=0, username=call_latency.AMI_USER,
                          secret=call_latency.AMI_SECRET).start()
        # call_latency's config (dedupe off, ANI limit raised), with this archive.
        config_text = call_latency.CONFIG.format(
            ami_port=sandbox.port, user=call_latency.AMI_USER,
            secret=call_latency.AMI_SECRET, base=run)
        old_root = "root = %s/recordings\n" % run
        assert old_root in config_text, config_text
        config_text = config_text.replace(
            old_root, "root = %s\nbase_url = %s\n" % (archive, BASE_URL))
        config_path = run / "callexchange.ini"
        config_path.write_text(config_text)
        config_path.chmod(0o644)

        prefix, venv = apache_server.app_tree(run)
        subprocess.run([str(venv / "bin" / "python3"), "-m", "compileall", "-q",
                        str(prefix / "lib")], check=True)
        apache = apache_server.ApacheServer(run, config_path, archive, prefix=prefix,
                                            venv=venv, state_dir=state_dir,
                                            keys_file=keys_file)
        find_url = "%s%s?phone=%s" % (apache.url, FIND_PATH, phone)
        call_url = apache.url + CALL_PATH
        body_file = run / "body.json"
        body_file.write_bytes(call_latency.BODY)
        body_file.chmod(0o644)

        # Both must answer correctly before they are timed.
        status, reply = http_get(find_url)
        found = json.loads(reply) if status == 200 else None
        if not (isinstance(found, list) and found
                and len(found) == report["phone_hits"]
                and all(item["url"].startswith(BASE_URL + "/") for item in found)):
            sys.exit("recordings_cgi: find_phone_files answered %s %r (index: %d hits)\n%s"
                     % (status, reply[:500], report["phone_hits"], apache.error_log()[-3000:]))
        before = len(sandbox.actions_named("Originate"))
        status, reply = call_latency.fetch(call_url, call_latency.BODY)
        if not (status == 200 and json.loads(reply).get("status") == "true"
                and len(sandbox.actions_named("Originate")) == before + 1):
            sys.exit("recordings_cgi: asteriskapi answered %s %r\n%s"
                     % (status, reply[:500], apache.error_log()[-3000:]))
        report["find_reply_bytes"] = len(json.dumps(found))

        for concurrency in args.levels:
            for target in ("find_phone_files", "asteriskapi"):
                csv_path = run / "ab.csv"
                if target == "find_phone_files":
                    run_ab(ab, find_url, None, max(args.warmup, 1), 1,
                                       run / "warmup.csv")
                    load_before = loadavg()
                    stats = run_ab(ab, find_url, None, args.requests,
                                               concurrency, csv_path)
                else:
                    run_ab(ab, call_url, body_file, max(args.warmup, 1), 1,
                                       run / "warmup.csv")
                    load_before = loadavg()
                    before = len(sandbox.actions_named("Originate"))
                    stats = run_ab(ab, call_url, body_file, args.requests,
                                               concurrency, csv_path)
                    stats["originates"] = len(sandbox.actions_named("Originate")) - before
                    if stats["originates"] != args.requests:
                        print("warning: %d calls for %d requests"
                              % (stats["originates"], args.requests), file=sys.stderr)
                percentiles = ab_percentiles(csv_path)
                stats.update(target=target, concurrency=concurrency,
                             requests=args.requests, p50_ms=percentiles[50],
                             p95_ms=percentiles[95], loadavg=(load_before, loadavg()))
                results.append(stats)

        index = RecordingIndex(str(archive), str(state_dir / "recordings-index"))
        recordings, days, segments, size = index.stats()
        report.update(index_segments_after=segments, index_bytes_after=size)

        # The same two scripts outside Apache, as www-data: what Apache + cgid add.
        find_env = direct_env(config_path, venv, phone)
        report["direct_find_ms"] = round(direct_runs(
            [str(venv / "bin" / "python3"), str(prefix / "cgi-bin" / "find_phone_files.pl")],
            find_env), 1)
        if args.profile:
            report["profile"] = profile_once(prefix, venv, find_env, run)
    finally:
        if apache is not None:
            apache.stop()
        if sandbox is not None:
            sandbox.stop()
        shutil.rmtree(run, ignore_errors=True)
        if not args.keep:
            shutil.rmtree(work if made_work else work / "recordings", ignore_errors=True)
            if not made_work and (work / MARKER).exists():
                (work / MARKER).unlink()
        else:
            print("archive kept in %s (reuse: --dir %s)" % (work / "recordings", work),
                  file=sys.stderr)

    print_report(report, results, args)
    return 0


def print_report(report, results, args):
    print("find_phone_files.pl vs asteriskapi.pl through one Apache (mod_cgid), "
          "%d cores, sandbox PBX in-process" % report["cores"])
    print("archive: %d files, %d day folders (%s); index %.1f MB, %d segment(s), built in "
          "%.1f s; phone %s: %d recordings"
          % (report["files"], report["index_days"],
             "built in %s s" % report["archive_build_s"]
             if report["archive_build_s"] != "reused" else "reused",
             report["index_bytes"] / 1e6, report["index_segments"],
             report["index_build_s"], report["phone"], report["phone_hits"]))
    print("%-18s %3s %5s %9s %9s %8s %7s %6s %11s" % (
        "target", "c", "n", "p50 ms", "p95 ms", "req/s", "non-2xx", "calls", "load 1m"))
    for row in results:
        print("%-18s %3d %5d %9.1f %9.1f %8.1f %7d %6s %5.2f-%-5.2f" % (
            row["target"], row["concurrency"], row["requests"], row["p50_ms"],
            row["p95_ms"], row["rps"], row["non_2xx"] + row["errors"],
            row.get("originates", "-"), row["loadavg"][0], row["loadavg"][1]))
    ratios = {}
    for concurrency in args.levels:
        by = {r["target"]: r for r in results if r["concurrency"] == concurrency}
        ratios[concurrency] = {
            "p50": by["find_phone_files"]["p50_ms"] / by["asteriskapi"]["p50_ms"],
            "p95": by["find_phone_files"]["p95_ms"] / by["asteriskapi"]["p95_ms"]}
        print("find_phone_files / asteriskapi, c=%d: p50 %.2f (target < 1.5), p95 %.2f"
              % (concurrency, ratios[concurrency]["p50"], ratios[concurrency]["p95"]))
    print("index after the run: %d segment(s), %.1f MB"
          % (report["index_segments_after"], report["index_bytes_after"] / 1e6))
    print("find_phone_files.pl run directly as www-data (no Apache), median of 15: %.1f ms"
          % report["direct_find_ms"])
    print("load average (1 min) at start: %.2f" % report["loadavg_start"])
    if "profile" in report:
        print("\ncProfile of one direct run of find_phone_files.pl:\n" + report["profile"])
    finish(args.json, {"report": report, "results": results, "p50_ratio": ratios},
                       results)


if __name__ == "__main__":
    sys.exit(main())
