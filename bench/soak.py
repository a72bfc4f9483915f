#!/usr/bin/env python3
"""Soak: the persistent mode under steady load for minutes, against the sandbox PBX.

A bench script, not a test: it takes ten minutes and the machine's full attention. Through
the private mod_wsgi Apache of bench/call_latency.py (the same config, key, sandbox and
wrk script, imported from it), wrk sends the call request at a fixed concurrency for the
whole run, every request with a destination and extension of its own. Every few seconds
the gateway's daemon processes are read from /proc: resident set size (VmRSS), its
high-water mark (VmHWM) and open file descriptors, per process. At the end:

* errors: wrk's socket errors, replies other than a placed call, and statuses other than
  200 in Apache's access log must all be 0;
* every 200 placed exactly one call: the sandbox's Originates == Apache's 200s, and the
  caller-ID ledger counted exactly as many calls (warm-up included);
* AMI logins: one per daemon process (its long-lived connection), unless one restarted;
* memory and fds: start (the first sample after the warm-up), peak and end, per process
  and summed; "flat" when neither grew over the second half of the run by more than
  `--tolerance` (RSS, default 5 %) or FD_SLACK fds above the first half's peak.

    .venv/bin/python bench/soak.py                        # 10 minutes at c=20
    .venv/bin/python bench/soak.py --minutes 1 --sample 2 # a short look
    .venv/bin/python bench/soak.py --json bench/out/soak.json

Exit status 1 when any check above fails. Needs what bench/call_latency.py needs (Apache
with mod_wsgi, wrk). docs/benchmarks.md has a run's output.
"""

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

# call_latency puts tests/ and lib/ on sys.path.
from call_latency import (API_KEY, CALL_PATH, LUA, Bench, Target, apache_server,  # noqa: E402
                          daemon_memory, loadavg, settle, tool)

TARGET = Target("persistent", "wsgi", CALL_PATH, True)
# Fds a daemon process may hold above its earlier peak without leaking: one request in
# flight per thread holds a few (its connection from Apache, the lock files).
FD_SLACK = 8


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0,
                        help="minutes of load (default 10)")
    parser.add_argument("--concurrency", type=int, default=20,
                        help="connections kept busy (default 20)")
    parser.add_argument("--sample", type=float, default=5.0,
                        help="seconds between samples of the daemons (default 5)")
    parser.add_argument("--warmup", type=float, default=10.0,
                        help="seconds of load before the first sample counts as the "
                             "start (default 10)")
    parser.add_argument("--tolerance", type=float, default=0.05,
                        help="growth of RSS over the second half still called flat "
                             "(default 0.05, 5 %%)")
    parser.add_argument("--keep-alive", action="store_true",
                        help="reuse connections (default: one per request)")
    parser.add_argument("--json", metavar="FILE", help="also write every sample as JSON")
    return parser.parse_args(argv)


class Sampler(threading.Thread):
    """Samples the daemon processes every `every` seconds until stopped: a list of
    (seconds since start, {pid: (VmHWM KiB, VmRSS KiB, fds)}, Originates so far)."""

    def __init__(self, apache, sandbox, every):
        super().__init__(daemon=True, name="soak-sampler")
        self.apache, self.sandbox, self.every = apache, sandbox, every
        self.samples = []
        self.stopping = threading.Event()
        self.started = time.monotonic()

    def sample(self):
        daemons = {pid: (hwm, rss, fds) for pid, hwm, rss, fds in daemon_memory(self.apache)}
        self.samples.append((time.monotonic() - self.started, daemons,
                             self.sandbox.count("Originate")))

    def run(self):
        while not self.stopping.wait(self.every):
            self.sample()


def run_wrk(wrk, url, concurrency, seconds, keep_alive):
    """wrk for `seconds`, in the background: the Popen."""
    threads = max(1, min(concurrency, os.cpu_count() or 1))
    command = [wrk, "-t", str(threads), "-c", str(concurrency), "-d", "%ds" % seconds,
               "--timeout", "30s", "-s", str(LUA), url, "--", "7000000000", API_KEY,
               "keep-alive" if keep_alive else "close"]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def wrk_stats(process):
    out, err = process.communicate()
    marker = "CALL_LOAD_JSON "
    lines = [line for line in out.splitlines() if line.startswith(marker)]
    if process.returncode != 0 or not lines:
        raise RuntimeError("wrk failed (%d): %s%s" % (process.returncode, out, err))
    stats = json.loads(lines[-1][len(marker):])
    stats["rps"] = stats["requests"] / stats["seconds"] if stats["seconds"] else 0.0
    return stats


def summarise_memory(samples, warmup, tolerance):
    """Start/peak/end per process and summed, over the samples after the warm-up, and
    whether each stayed flat over the second half."""
    counted = [s for s in samples if s[0] >= warmup] or samples
    pids = sorted({pid for _, daemons, _ in counted for pid in daemons})
    rows = {}
    for pid in pids + ["all"]:
        def value(daemons, index):
            if pid == "all":
                return sum(d[index] for d in daemons.values())
            return daemons[pid][index] if pid in daemons else None
        series = {name: [v for v in (value(d, index) for _, d, _ in counted) if v is not None]
                  for name, index in (("rss_kib", 1), ("fds", 2), ("hwm_kib", 0))}
        if not series["rss_kib"]:
            continue
        row = {}
        for name, values in series.items():
            middle = max(1, len(values) // 2)
            row[name] = {"start": values[0], "peak": max(values), "end": values[-1],
                         "first_half_peak": max(values[:middle]),
                         "second_half_peak": max(values[middle:] or values)}
        rss, fds = row["rss_kib"], row["fds"]
        # A leak keeps growing: the second half's peak above the first half's. Fds come
        # and go with the requests in flight (a socket, a lock each), hence FD_SLACK.
        row["flat"] = (rss["second_half_peak"] <= rss["first_half_peak"] * (1 + tolerance)
                       and fds["second_half_peak"] <= fds["first_half_peak"] + FD_SLACK)
        rows[str(pid)] = row
    return rows


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    wrk = tool("wrk", "wrk")
    if not apache_server.find_apache():
        sys.exit("soak: apache2 not found (apt-get install apache2)")
    seconds = int(args.minutes * 60)
    base = apache_server.shared_tempdir("cx-soak-")
    bench = None
    try:
        bench = Bench(base)
        apache = bench.start_apache("wsgi")
        logs = bench.logs["wsgi"]
        bench.check_targets([TARGET])
        settle(bench.sandbox)
        ledger_before = bench.ledger_total()
        originates_before = bench.sandbox.count("Originate")
        logins_before = bench.sandbox.count("Login")
        logs.mark()
        load_before = loadavg()
        print("soak: %d s at c=%d against %s%s (load average %s)" % (
            seconds, args.concurrency, apache.url + CALL_PATH,
            ", keep-alive" if args.keep_alive else ", a connection per request",
            " ".join("%.2f" % x for x in load_before)), flush=True)
        sampler = Sampler(apache, bench.sandbox, args.sample)
        sampler.sample()
        load = run_wrk(wrk, apache.url + CALL_PATH, args.concurrency, seconds,
                       args.keep_alive)
        sampler.start()
        printer = threading.Thread(target=progress, args=(sampler, load), daemon=True)
        printer.start()
        stats = wrk_stats(load)
        sampler.stopping.set()
        sampler.join()
        originates = settle(bench.sandbox) - originates_before
        sampler.sample()
        statuses = logs.statuses(CALL_PATH)
        ledger = bench.ledger_total() - ledger_before
        logins = bench.sandbox.count("Login") - logins_before
        load_after = loadavg()
    finally:
        if bench is not None:
            bench.close()
        import shutil
        shutil.rmtree(base, ignore_errors=True)
    memory = summarise_memory(sampler.samples, args.warmup, args.tolerance)
    daemons = len([k for k in memory if k != "all"])
    result = {"seconds": seconds, "concurrency": args.concurrency, "wrk": stats,
              "originates": originates, "logged": statuses, "ledger": ledger,
              "logins": logins, "daemons": daemons, "memory": memory,
              "load": {"before": load_before, "after": load_after},
              "samples": [[round(t, 1), {str(p): list(v) for p, v in d.items()}, n]
                          for t, d, n in sampler.samples]}
    return report(result, args)


def progress(sampler, load):
    """One line a minute while the load runs."""
    next_line = 60.0
    while load.poll() is None:
        time.sleep(1)
        if sampler.samples and sampler.samples[-1][0] >= next_line:
            at, daemons, calls = sampler.samples[-1]
            print("  %4.0f s  %8d calls  RSS %s MiB  fds %s  load %.2f" % (
                at, calls, "/".join("%.1f" % (d[1] / 1024) for d in daemons.values()),
                "/".join(str(d[2]) for d in daemons.values()), loadavg()[0]), flush=True)
            next_line += 60.0


def report(result, args):
    stats, logged = result["wrk"], result["logged"]
    ok_200 = logged.get("200", 0)
    other = sum(n for status, n in logged.items() if status != "200")
    print()
    print("requests %d in %.0f s (%.1f/s), p50 %.2f ms, p99 %.2f ms, max %.1f ms" % (
        stats["requests"], stats["seconds"], stats["rps"], stats["p50_ms"], stats["p99_ms"],
        stats["max_ms"]))
    print("errors: %d socket, %d replies other than a placed call, %d non-200 logged"
          % (stats["errors"], stats["bad"], other))
    print("calls: %d Originates, %d 200s logged, %d read by wrk; caller-ID ledger %d"
          % (result["originates"], ok_200, stats["ok"], result["ledger"]))
    print("AMI logins during the soak: %d (daemon processes: %d)"
          % (result["logins"], result["daemons"]))
    print("%-8s %-22s %-22s %-22s %s" % ("daemon", "RSS MiB start/peak/end",
                                         "VmHWM MiB end", "fds start/peak/end", "flat"))
    for pid, row in result["memory"].items():
        rss, fds, hwm = row["rss_kib"], row["fds"], row["hwm_kib"]
        print("%-8s %-22s %-22s %-22s %s" % (
            pid, "%.1f / %.1f / %.1f" % (rss["start"] / 1024, rss["peak"] / 1024,
                                         rss["end"] / 1024),
            "%.1f" % (hwm["end"] / 1024),
            "%d / %d / %d" % (fds["start"], fds["peak"], fds["end"]),
            "yes" if row["flat"] else "NO"))
    print("load average (1/5/15 min): before %s, after %s" % (
        " ".join("%.2f" % x for x in result["load"]["before"]),
        " ".join("%.2f" % x for x in result["load"]["after"])))
    problems = []
    if stats["errors"] or stats["bad"] or other:
        problems.append("errors")
    if not result["originates"] == ok_200 == result["ledger"]:
        problems.append("Originates, 200s and ledger counts differ")
    if stats["ok"] > ok_200:
        problems.append("wrk read more placed calls than Apache logged")
    if result["logins"] > result["daemons"]:
        problems.append("more AMI logins than daemon processes")
    if not all(row["flat"] for row in result["memory"].values()):
        problems.append("RSS or fds grew over the second half")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=1)
    print("FAILED: %s" % "; ".join(problems) if problems else "OK: 0 errors, counts exact")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
