#!/usr/bin/env python3
"""The call endpoint in every mode, in one run: the legacy-style Perl CGI, our CGI, our
persistent mode, and a trivial WSGI app (the floor), through the same kind of Apache
against one sandbox PBX, at several concurrencies; medians of several runs, printed as
ratios measured in the same run.

Two private Apaches (apache/standalone.conf.in via tests/apache_server.py, event MPM, the
workers as www-data), started once and both up for the whole run:

  cgi Apache  (mod_cgid, apache/callexchange.conf.in)
    perl-baseline  bench/baseline/asteriskapi-baseline.pl: CGI.pm, JSON::PP, Digest::SHA
                   key check, a raw AMI socket (Login, Originate, Logoff), the legacy reply
    cgi            cgi-bin/asteriskapi.pl: the gateway, a process per request
  wsgi Apache (mod_wsgi daemon mode, apache/callexchange-wsgi.conf.in)
    persistent     the gateway in the daemon processes, one AMI connection each
    floor          bench/baseline/floor.wsgi: reads the body, answers a fixed JSON reply,
                   in a daemon process group of the same processes and threads

The sandbox PBX runs in this process; it answers and counts every Originate but does not
play the calls unless --play-calls (a thread per call for ~5 s: thousands of them here,
taking the CPU the Apaches need). wrk (its Lua script: bench/call_load.lua) sends the
legacy sample request with a destination and extension of its own for every request, so
neither the double-click rule nor a per-destination limit ever refuses one; the key has no
policy limits. For each target and concurrency: a warm-up, then `--seconds` of load; p50
and p99 from wrk's latency histogram, requests/s from its count. Every timed request is
shown to have placed a call: the sandbox's Originates during the cell must equal the 200s
Apache logged for the target's URL, with no other status, and every reply wrk read must
be a 200 saying "status": "true". At the end, the caller-ID ledger must hold exactly one
count per call the gateway placed. Peak RSS: one CGI process run directly under GNU time
(the larger of three), and the largest VmHWM of the gateway's daemon processes. For the
mod_wsgi targets, the CPU ms per request of the daemons, Apache's workers, this process
(the sandbox) and wrk, from /proc. --profile-daemon DIR adds the target `profiled`: the
gateway under cProfile in its own daemon processes (bench/baseline/profiled.wsgi), the
merged statistics printed and written to DIR/daemon.pstats.

    .venv/bin/python bench/call_latency.py                  # 3 runs at c=1,8,32, ~6 min
    .venv/bin/python bench/call_latency.py --quick          # smoke run (CI), ~30 s
    .venv/bin/python bench/call_latency.py --runs 1 --levels 8 --json out.json
    .venv/bin/python bench/call_latency.py --runs 1 --targets persistent --profile-daemon prof

Needs (Debian): apache2, libapache2-mod-wsgi-py3, wrk, libcgi-pm-perl, time. See
docs/benchmarks.md for the figures and how to read them.
"""

import argparse
import collections
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "lib"))

import apache_server  # noqa: E402
from callexchange.calls.ani import AniLedger  # noqa: E402
from callexchange.keys import digest  # noqa: E402
from callexchange.sandbox.server import Sandbox  # noqa: E402

API_KEY = "bench-key-0123456789abcdef"
AMI_USER, AMI_SECRET = "callexchange", "bench-secret"
TIME = "/usr/bin/time"
CALL_PATH = "/api/v1/asteriskapi.pl"
LUA = REPO / "bench" / "call_load.lua"
# The legacy document's sample request, names with spaces included. Dialer mode.
BODY = (b'{" extension " : "2001", " destination ": "12127773456", " voice_pitch ": "1",'
        b' " call_in_out ": "true"}')

CONFIG = """\
[ami]
host = 127.0.0.1
port = {ami_port}
username = {user}
secret = {secret}

[dial]
# No double-click replays: every request must place its call (the load varies the
# destinations anyway).
dedupe_seconds = 0

[ani]
default = 12125550100, 12125550101, 12125550102
daily_limit = 10000000

[recordings]
root = {base}/recordings

[auth]
keys_file = {base}/api-keys

[state]
dir = {base}/state
"""

Target = collections.namedtuple("Target", "name apache path places_call")
# --profile-daemon: the persistent mode under cProfile (bench/baseline/profiled.wsgi).
PROFILED = Target("profiled", "wsgi", "/bench/profiled" + CALL_PATH, True)
TARGETS = (
    Target("perl-baseline", "cgi", "/bench/asteriskapi-baseline.pl", True),
    Target("cgi", "cgi", CALL_PATH, True),
    Target("persistent", "wsgi", CALL_PATH, True),
    Target("floor", "wsgi", "/bench/floor", False),
)

CGI_EXTRA = """\
# Benchmark-only: the legacy-style Perl CGI beside the gateway's URLs.
ScriptAlias "/bench/" "{scripts}/"
<Directory "{scripts}">
    Options None
    AllowOverride None
    Require all granted
    SetEnv CALLEXCHANGE_CONFIG "{config}"
</Directory>
"""

WSGI_EXTRA = """\
# Benchmark-only: the floor, a trivial WSGI app in daemon processes shaped as ours.
WSGIDaemonProcess bench-floor processes={processes} threads={threads} display-name=%{{GROUP}} \\
    lang=C.UTF-8 locale=C.UTF-8
WSGIScriptAlias /bench/floor "{scripts}/floor.wsgi" process-group=bench-floor application-group=%{{GLOBAL}}
<Directory "{scripts}">
    Options None
    AllowOverride None
    Require all granted
</Directory>
"""

PROFILED_EXTRA = """\
# Benchmark-only: the gateway under cProfile, in the gateway's own daemon processes.
WSGIScriptAlias /bench/profiled "{scripts}/profiled.wsgi" process-group=callexchange application-group=%{{GLOBAL}}
<Location "/bench/profiled">
    SetEnv CALLEXCHANGE_CONFIG "{config}"
    SetEnv CALLEXCHANGE_BENCH_APP "{prefix}/apache/callexchange.wsgi"
    SetEnv CALLEXCHANGE_BENCH_PROFILE "{profile_dir}"
</Location>
"""


class CountingSandbox(Sandbox):
    """The sandbox PBX, counting the actions it handles by name rather than keeping each
    one (a long run places hundreds of thousands of calls). With `play_calls` false (the
    benches' default) an accepted Originate is answered and counted but its call is not
    played: playing is a Python thread per call for its ~5 s (events, hangup), which at a
    few hundred calls a second is thousands of threads in this process taking the CPU
    that the Apaches being measured need, and which no one here listens to (the gateway's
    AMI sessions take no events)."""

    def __init__(self, *args, play_calls=False, **kwargs):
        super().__init__(*args, **kwargs)
        self.play_calls = play_calls
        self.counts = collections.Counter()
        self._count_lock = threading.Lock()

    def place(self, action, result=None):
        if self.play_calls:
            return super().place(action, result)
        if result is not None:
            result(True)   # a synchronous Originate: its first leg "answered"
        return action.get("ChannelId") or self.new_uniqueid()

    def record(self, message, connection):
        with self._count_lock:
            self.counts[(message.get("Action") or "").lower()] += 1

    def count(self, action):
        with self._count_lock:
            return self.counts[action.lower()]


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="full runs (default 3); "
                        "figures are the medians over runs")
    parser.add_argument("--levels", default="1,8,32",
                        help="comma-separated concurrencies (default 1,8,32)")
    parser.add_argument("--seconds", type=int, default=6,
                        help="seconds of timed load per target and concurrency (default 6)")
    parser.add_argument("--warmup", type=int, default=1,
                        help="seconds of untimed load before each (default 1)")
    parser.add_argument("--targets", default=",".join(t.name for t in TARGETS),
                        help="comma-separated targets (default: all four)")
    parser.add_argument("--keep-alive", action="store_true",
                        help="reuse connections (default: a new connection per request, "
                             "as CRMs that call once per click do)")
    parser.add_argument("--play-calls", action="store_true",
                        help="let the sandbox play every call (events, hangup) as it does "
                             "for CRM developers; by default it answers and counts the "
                             "Originates only")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 1 run at c=1 and 8, 1 s each")
    parser.add_argument("--profile-daemon", metavar="DIR",
                        help="also time the persistent mode under cProfile in its daemon "
                             "processes (target `profiled`), write the merged statistics "
                             "to DIR/daemon.pstats and print the top functions")
    parser.add_argument("--json", metavar="FILE", help="also write every figure as JSON")
    args = parser.parse_args(argv)
    if args.quick:
        args.runs, args.levels, args.seconds, args.warmup = 1, "1,8", 1, 1
    args.levels = [int(c) for c in args.levels.split(",") if c.strip()]
    wanted = set(args.targets.split(","))
    args.targets = [t for t in TARGETS if t.name in wanted]
    if args.profile_daemon:
        args.targets.append(PROFILED)
    return args


def tool(name, package):
    found = shutil.which(name)
    if not found:
        sys.exit("call_latency: %s not found (apt-get install %s)" % (name, package))
    return found


def loadavg():
    with open("/proc/loadavg") as handle:
        return [float(x) for x in handle.read().split()[:3]]


# --- the load: wrk -------------------------------------------------------------------

def run_wrk(wrk, url, concurrency, seconds, offset, keep_alive):
    """One wrk run; returns {"requests", "rps", "p50_ms", "p99_ms", "ok", "bad",
    "errors"} (ok: 200 replies saying "status": "true"; errors: socket errors)."""
    threads = max(1, min(concurrency, os.cpu_count() or 1))
    command = [wrk, "-t", str(threads), "-c", str(concurrency), "-d", "%ds" % seconds,
               "--timeout", "30s", "-s", str(LUA), url, "--", str(offset), API_KEY,
               "keep-alive" if keep_alive else "close"]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    marker = "CALL_LOAD_JSON "
    lines = [line for line in result.stdout.splitlines() if line.startswith(marker)]
    if result.returncode != 0 or not lines:
        raise RuntimeError("wrk failed (%d): %s%s" % (result.returncode, result.stdout,
                                                       result.stderr))
    stats = json.loads(lines[-1][len(marker):])
    stats["rps"] = stats["requests"] / stats["seconds"] if stats["seconds"] else 0.0
    return stats


class AccessLogs:
    """The statuses Apache logged per URL path since the last mark: our URLs in our own
    access log, every other URL in the host site's."""

    _REQUEST = re.compile(r'"[A-Z]+ (\S+) [^"]*" (\d{3}) ')

    def __init__(self, apache):
        self.paths = [apache.rundir / "callexchange-access.log", apache.rundir / "access.log"]
        self.offsets = {}
        self.mark()

    def mark(self):
        self.offsets = {p: p.stat().st_size if p.exists() else 0 for p in self.paths}

    def statuses(self, path):
        """{status: count} for `path` since mark()."""
        counts = collections.Counter()
        for log in self.paths:
            if not log.exists():
                continue
            with open(log, "rb") as handle:
                handle.seek(self.offsets.get(log, 0))
                text = handle.read().decode("utf-8", "replace")
            for match in self._REQUEST.finditer(text):
                if match.group(1).split("?")[0] == path:
                    counts[match.group(2)] += 1
        return dict(counts)


def settle(sandbox, quiet=0.3, limit=10.0):
    """Wait until the sandbox's Originate count stops changing (requests wrk abandoned at
    the end of its run may still be placing their calls)."""
    deadline = time.monotonic() + limit
    last, since = sandbox.count("Originate"), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.05)
        now = sandbox.count("Originate")
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            break
    return last


def running_cgis(apache):
    """Pids of the call CGIs (ours and the Perl baseline) this Apache is still running."""
    found = []
    for pid in apache_server._session_members(apache.process.pid):  # noqa: SLF001
        try:
            with open("/proc/%d/cmdline" % pid, "rb") as handle:
                if b"asteriskapi" in handle.read():
                    found.append(pid)
        except OSError:
            continue
    return found


def drain(apache, sandbox, limit=120.0):
    """Wait until the CGIs the last load started have all finished (wrk stops reading
    at the end of its run, but Apache lets each CGI run on: on a loaded machine a Perl
    CGI at c=32 took over 5 s, and its Originate and log line came after a mere quiet
    spell of the Originate count, into the next cell's count), then until the
    Originate count is quiet. Returns that count."""
    deadline = time.monotonic() + limit
    while running_cgis(apache) and time.monotonic() < deadline:
        time.sleep(0.1)
    return settle(sandbox)


def cpu_seconds(apache):
    """CPU seconds (user + system) used so far by the processes of a mod_wsgi Apache, by
    part: "daemon" (the gateway's daemon processes), "floor" (the floor's), "apache" (the
    rest: its workers), "bench" (this process: the sandbox PBX) and "wrk" (the children
    this process waited for)."""
    import resource

    tick = os.sysconf("SC_CLK_TCK")
    parts = collections.Counter()
    for pid in apache_server._session_members(apache.process.pid):  # noqa: SLF001
        try:
            with open("/proc/%d/cmdline" % pid, "rb") as handle:
                name = handle.read().split(b"\0")[0]
            with open("/proc/%d/stat" % pid) as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        part = ("daemon" if name.startswith(b"(wsgi:callexch") else
                "floor" if name.startswith(b"(wsgi:bench") else "apache")
        parts[part] += (int(fields[11]) + int(fields[12])) / tick
    for part, who in (("bench", resource.RUSAGE_SELF), ("wrk", resource.RUSAGE_CHILDREN)):
        usage = resource.getrusage(who)
        parts[part] = usage.ru_utime + usage.ru_stime
    return parts


def measure(wrk, target, apache, logs, sandbox, concurrency, args, offset):
    url = apache.url + target.path
    warm_from = sandbox.count("Originate")
    run_wrk(wrk, url, concurrency, args.warmup, offset, args.keep_alive)
    warmup_originates = drain(apache, sandbox) - warm_from
    logs.mark()
    before = sandbox.count("Originate")
    cpu_before = cpu_seconds(apache) if target.apache == "wsgi" else None
    stats = run_wrk(wrk, url, concurrency, args.seconds, offset + 1, args.keep_alive)
    if cpu_before is not None and stats["requests"]:
        # What one request cost each part, in CPU ms (a CGI's own processes are gone
        # before they can be read: none for the cgi Apache).
        cpu_after = cpu_seconds(apache)
        stats["cpu_ms"] = {part: (cpu_after[part] - cpu_before[part]) * 1000.0
                           / stats["requests"] for part in cpu_after}
    after = drain(apache, sandbox)
    statuses = logs.statuses(target.path)
    stats.update(target=target.name, concurrency=concurrency, originates=after - before,
                 warmup_originates=warmup_originates,
                 logged_200=statuses.get("200", 0),
                 logged_other=sum(n for s, n in statuses.items() if s != "200"))
    problems = []
    if stats["errors"] or stats["bad"] or stats["logged_other"]:
        problems.append("%d socket errors, %d replies other than a placed call, %d non-200 "
                        "in Apache's log" % (stats["errors"], stats["bad"],
                                             stats["logged_other"]))
    if target.places_call and stats["originates"] != stats["logged_200"]:
        problems.append("%d Originates for %d 200 replies"
                        % (stats["originates"], stats["logged_200"]))
    if target.places_call and stats["ok"] > stats["logged_200"]:
        problems.append("wrk read %d placed calls, Apache logged %d"
                        % (stats["ok"], stats["logged_200"]))
    stats["problems"] = problems
    return stats


# --- memory --------------------------------------------------------------------------

def cgi_peak_rss_kib(command, env, body, workdir, runs=3):
    """Max resident set size (KiB) of `command` run as a CGI with `body` on stdin, the
    largest of `runs` runs, measured by GNU time (`-f %M`): not wait4() from here, since
    Linux starts a forked child's high-water mark at its parent's RSS. Returns (KiB or
    None, the first run's output)."""
    if not os.access(TIME, os.X_OK):
        print("warning: %s not found (apt-get install time): no RSS figures" % TIME,
              file=sys.stderr)
        return None, b""
    peak, first_output = 0, None
    report_file = Path(workdir) / "time.out"
    for _ in range(runs):
        result = subprocess.run([TIME, "-f", "%M", "-o", str(report_file)] + command,
                                input=body, capture_output=True, env=env, check=False)
        first_output = result.stdout if first_output is None else first_output
        peak = max(peak, int(report_file.read_text().split()[-1]))
    return peak, first_output


def cgi_environ(config_path, venv, script_name):
    """A CGI/1.1 environment for one POST of BODY, as Apache gives it."""
    return {
        "PATH": "%s/bin:/usr/local/bin:/usr/bin:/bin" % venv,
        "CALLEXCHANGE_CONFIG": str(config_path), "PYTHONDONTWRITEBYTECODE": "1",
        "GATEWAY_INTERFACE": "CGI/1.1", "SERVER_PROTOCOL": "HTTP/1.1",
        "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "80", "REMOTE_ADDR": "127.0.0.1",
        "REQUEST_METHOD": "POST", "SCRIPT_NAME": script_name, "PATH_INFO": "",
        "QUERY_STRING": "", "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(BODY)), "HTTP_API_KEY": API_KEY,
    }


def daemon_memory(apache, group="callexchange"):
    """[(pid, VmHWM KiB, VmRSS KiB, open fds)] of the mod_wsgi daemon processes of
    `group` (display-name=%{GROUP}: their command line reads "(wsgi:<group>)", cut to
    the length of Apache's own argv[0]: "(wsgi:callexchang" under /usr/sbin/apache2)."""
    full = "(wsgi:%s)" % group
    found = []
    for pid in apache_server._session_members(apache.process.pid):  # noqa: SLF001
        try:
            with open("/proc/%d/cmdline" % pid, "rb") as handle:
                name = handle.read().split(b"\0")[0].decode("ascii", "replace")
            if not (name.startswith("(wsgi:") and full.startswith(name)):
                continue
            status = {}
            with open("/proc/%d/status" % pid) as handle:
                for line in handle:
                    key, _, value = line.partition(":")
                    status[key] = value.strip()
            fds = len(os.listdir("/proc/%d/fd" % pid))
        except OSError:
            continue
        found.append((pid, int(status["VmHWM"].split()[0]), int(status["VmRSS"].split()[0]),
                      fds))
    return found


# --- setting up -----------------------------------------------------------------------

def fetch(url, body):
    request = urllib.request.Request(url, data=body, method="POST", headers={
        "api-key": API_KEY, "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def daemon_shape(site_conf):
    """(processes, threads) of the gateway's WSGIDaemonProcess in the rendered site."""
    text = site_conf.read_text()
    processes = re.search(r"WSGIDaemonProcess callexchange\b[^\n]*\bprocesses=(\d+)", text)
    threads = re.search(r"WSGIDaemonProcess callexchange\b[^\n]*\bthreads=(\d+)", text)
    return (int(processes.group(1)) if processes else 1,
            int(threads.group(1)) if threads else 15)


class Bench:
    """Config, keys, state, the sandbox and both Apaches under one shared temp dir."""

    def __init__(self, base, sandbox_class=CountingSandbox, play_calls=False,
                 profile_dir=None):
        self.base = base
        self.profile_dir = profile_dir
        (base / "recordings").mkdir()
        (base / "recordings").chmod(0o755)
        self.state = apache_server.writable_dir(base / "state")
        keys = base / "api-keys"
        # A key without limits: the toll-fraud guard's per-key limits never apply to it.
        keys.write_text("bench\t%s\t2024-07-03T00:00:00Z\n" % digest(API_KEY))
        keys.chmod(0o644)
        self.scripts = base / "bench-scripts"
        shutil.copytree(REPO / "bench" / "baseline", self.scripts)
        apache_server.open_up(self.scripts)
        self.sandbox = sandbox_class(host="127.0.0.1", port=0, username=AMI_USER,
                                     secret=AMI_SECRET, play_calls=play_calls).start()
        self.config = base / "callexchange.ini"
        self.config.write_text(CONFIG.format(ami_port=self.sandbox.port, user=AMI_USER,
                                             secret=AMI_SECRET, base=base))
        self.config.chmod(0o644)
        self.prefix, self.venv = apache_server.app_tree(base)
        # As install.sh does: www-data cannot write __pycache__, so without this every
        # CGI would compile lib/ from source again.
        subprocess.run([str(self.venv / "bin" / "python3"), "-m", "compileall", "-q",
                        str(self.prefix / "lib")], check=True)
        self.apaches = {}
        self.logs = {}

    def start_apache(self, mode):
        if mode == "cgi":
            extra = CGI_EXTRA.format(scripts=self.scripts, config=self.config)
        else:
            probe = self.base / "shape.conf"
            probe.write_text(apache_server.render(
                REPO / "apache" / "callexchange-wsgi.conf.in",
                {"PREFIX": self.prefix, "VENV": self.venv, "CONFIG": self.config,
                 "RECORDINGS_ROOT": self.base / "recordings", "RECORDINGS_ACCESS": "public",
                 "LOG_DIR": self.base}))
            processes, threads = daemon_shape(probe)
            extra = WSGI_EXTRA.format(scripts=self.scripts, processes=processes,
                                      threads=threads)
            if self.profile_dir:
                extra += PROFILED_EXTRA.format(scripts=self.scripts, config=self.config,
                                               prefix=self.prefix,
                                               profile_dir=self.profile_dir)
        apache = apache_server.ApacheServer(
            self.base, self.config, self.base / "recordings", mode=mode, prefix=self.prefix,
            venv=self.venv, extra_conf=extra, state_dir=self.state,
            keys_file=self.base / "api-keys")
        self.apaches[mode] = apache
        self.logs[mode] = AccessLogs(apache)
        return apache

    def check_targets(self, targets):
        """Each target must answer the legacy request correctly before it is timed."""
        for target in targets:
            apache = self.apaches[target.apache]
            status, reply = fetch(apache.url + target.path, BODY)
            try:
                ok = status == 200 and json.loads(reply).get("status") == "true"
            except ValueError:
                ok = False
            if not ok:
                sys.exit("call_latency: %s answered %s %r\n%s" % (
                    target.name, status, reply[:500], apache.error_log()[-3000:]))

    def ledger_total(self):
        return sum(AniLedger(str(self.state)).usage().values())

    def close(self):
        for apache in self.apaches.values():
            try:
                apache.stop()
            except apache_server.ApacheError as error:
                print("warning: %s" % error, file=sys.stderr)
        self.sandbox.stop()


# --- the run ---------------------------------------------------------------------------

def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    wrk = tool("wrk", "wrk")
    if not apache_server.find_apache():
        sys.exit("call_latency: apache2 not found (apt-get install apache2)")
    base = apache_server.shared_tempdir("cx-bench-")
    bench = None
    cells, runs_load = [], []
    try:
        profile_dir = None
        if args.profile_daemon:
            profile_dir = apache_server.writable_dir(base / "profile")
        bench = Bench(base, play_calls=args.play_calls, profile_dir=profile_dir)
        for mode in sorted({t.apache for t in args.targets}):
            bench.start_apache(mode)
        bench.check_targets(args.targets)
        ledger_before = bench.ledger_total()
        offset = 0
        for run in range(args.runs):
            load_before = loadavg()
            for concurrency in args.levels:
                for target in args.targets:
                    offset += 2
                    stats = measure(wrk, target, bench.apaches[target.apache],
                                    bench.logs[target.apache], bench.sandbox, concurrency,
                                    args, offset * 1000000)
                    stats["run"] = run + 1
                    cells.append(stats)
                    print_cell(stats)
            runs_load.append({"run": run + 1, "before": load_before, "after": loadavg()})
            print("run %d: load average %s before, %s after" % (
                run + 1, " ".join("%.2f" % x for x in load_before),
                " ".join("%.2f" % x for x in loadavg())), flush=True)
        # Every call of ours counted once on its caller ID, warm-ups included.
        settle(bench.sandbox)
        ledger = {"counts": bench.ledger_total() - ledger_before,
                  "calls": sum(c["originates"] + c["warmup_originates"] for c in cells
                               if c["target"] in ("cgi", "persistent", "profiled"))}
        memory = measure_memory(bench, args.targets)
    finally:
        if bench is not None and bench.profile_dir:
            # Each daemon thread's dump of its last whole DUMP_EVERY requests.
            report_profile(bench.profile_dir, Path(args.profile_daemon))
        if bench is not None:
            bench.close()
        shutil.rmtree(base, ignore_errors=True)
    summary = summarise(cells, args)
    report(summary, memory, runs_load, ledger, args)
    finish(args, cells, summary, memory, runs_load, ledger)
    return 0


def report_profile(profile_dir, destination):
    """Merge the daemon threads' cProfile dumps into destination/daemon.pstats and print
    the functions that took the most time, cumulative and own."""
    import io
    import pstats

    dumps = sorted(Path(profile_dir).glob("daemon-*.pstats"))
    if not dumps:
        print("profile: the daemons wrote no statistics to %s" % profile_dir)
        return
    destination.mkdir(parents=True, exist_ok=True)
    stats = pstats.Stats(*[str(p) for p in dumps], stream=io.StringIO())
    stats.dump_stats(str(destination / "daemon.pstats"))
    for order, count in (("cumulative", 40), ("tottime", 25)):
        out = io.StringIO()
        stats.stream = out
        stats.sort_stats(order).print_stats(count)
        print("\n--- daemon profile (%d thread dumps), by %s ---" % (len(dumps), order))
        print("\n".join(line for line in out.getvalue().splitlines()
                        if line.strip() and not line.startswith(("   Ordered", "   List"))))
    print("profile: %s" % (destination / "daemon.pstats"))


def print_cell(stats):
    print("  %-14s c=%-3d %7d req %9.1f req/s  p50 %8.2f ms  p99 %8.2f ms  calls %s%s" % (
        stats["target"], stats["concurrency"], stats["requests"], stats["rps"],
        stats["p50_ms"], stats["p99_ms"],
        stats["originates"] if stats["target"] != "floor" else "-",
        ("  PROBLEM: " + "; ".join(stats["problems"])) if stats["problems"] else ""),
        flush=True)


def measure_memory(bench, targets):
    names = {t.name for t in targets}
    memory = {}
    if "cgi" in names:
        env = cgi_environ(bench.config, bench.venv, CALL_PATH)
        kib, output = cgi_peak_rss_kib(
            [str(bench.venv / "bin" / "python3"), str(bench.prefix / "cgi-bin" / "asteriskapi.pl")],
            env, BODY, bench.base)
        memory["cgi_kib"] = kib
        memory["cgi_ok"] = b'"status": "true"' in output
    if "perl-baseline" in names:
        env = cgi_environ(bench.config, bench.venv, "/bench/asteriskapi-baseline.pl")
        kib, output = cgi_peak_rss_kib(
            ["/usr/bin/perl", str(bench.scripts / "asteriskapi-baseline.pl")], env, BODY,
            bench.base)
        memory["perl_kib"] = kib
        memory["perl_ok"] = b'"status":"true"' in output
    if "wsgi" in bench.apaches:
        daemons = daemon_memory(bench.apaches["wsgi"])
        memory["daemons"] = daemons
        memory["daemon_hwm_kib"] = max((d[1] for d in daemons), default=None)
    return memory


def summarise(cells, args):
    """Medians over runs of each target's figures at each concurrency, and the ratios of
    the same run (their medians)."""
    by = collections.defaultdict(list)
    for cell in cells:
        by[(cell["target"], cell["concurrency"])].append(cell)
    figures = {}
    for (name, concurrency), rows in by.items():
        figures["%s@%d" % (name, concurrency)] = {
            key: statistics.median(r[key] for r in rows)
            for key in ("p50_ms", "p99_ms", "rps")}

    def ratio(numerator, denominator, key, concurrency):
        values = []
        for run in range(1, args.runs + 1):
            top = [c for c in cells if c["run"] == run and c["target"] == numerator
                   and c["concurrency"] == concurrency]
            bottom = [c for c in cells if c["run"] == run and c["target"] == denominator
                      and c["concurrency"] == concurrency]
            if top and bottom and bottom[0][key]:
                values.append(top[0][key] / bottom[0][key])
        return statistics.median(values) if values else None

    ratios = {}
    for concurrency in args.levels:
        ratios["cgi/perl-baseline p50 @%d" % concurrency] = ratio(
            "cgi", "perl-baseline", "p50_ms", concurrency)
        ratios["cgi/perl-baseline req/s @%d" % concurrency] = ratio(
            "cgi", "perl-baseline", "rps", concurrency)
        ratios["persistent/floor req/s @%d" % concurrency] = ratio(
            "persistent", "floor", "rps", concurrency)
        ratios["cgi/persistent p50 @%d" % concurrency] = ratio(
            "cgi", "persistent", "p50_ms", concurrency)
    cpu = {}
    for (name, concurrency), rows in sorted(by.items()):
        rows = [r for r in rows if r.get("cpu_ms")]
        if rows:
            own = "floor" if name == "floor" else "daemon"
            cpu["%s c=%d" % (name, concurrency)] = {
                ("daemon" if part == own else part): statistics.median(r["cpu_ms"][part]
                                                                       for r in rows)
                for part in rows[0]["cpu_ms"]
                if part in (own, "apache", "bench", "wrk")}
    return {"figures": figures, "ratios": {k: v for k, v in ratios.items() if v is not None},
            "cpu": cpu}


def report(summary, memory, runs_load, ledger, args):
    print()
    print("Call endpoint, %d run(s), %d cores, %s connection per request; medians over runs"
          % (args.runs, os.cpu_count(), "a kept-alive" if args.keep_alive else "a new"))
    print("%-14s %4s %10s %10s %10s" % ("target", "c", "p50 ms", "p99 ms", "req/s"))
    for concurrency in args.levels:
        for target in args.targets:
            row = summary["figures"].get("%s@%d" % (target.name, concurrency))
            if row:
                print("%-14s %4d %10.2f %10.2f %10.1f" % (
                    target.name, concurrency, row["p50_ms"], row["p99_ms"], row["rps"]))
    if summary.get("cpu"):
        print()
        print("CPU ms per request (medians over runs; daemon: the gateway's daemon processes "
              "or the floor's, apache: its workers, bench: this process, the sandbox PBX)")
        for key, parts in summary["cpu"].items():
            print("%-20s %s" % (key, "  ".join("%s %.3f" % (part, value)
                                               for part, value in sorted(parts.items()))))
    print()
    for name, value in summary["ratios"].items():
        print("%-34s %6.2f" % (name, value))
    if memory.get("cgi_kib"):
        print("peak RSS of one CGI process: ours %.1f MiB%s" % (
            memory["cgi_kib"] / 1024, ", perl-baseline %.1f MiB" % (memory["perl_kib"] / 1024)
            if memory.get("perl_kib") else ""))
    if memory.get("daemon_hwm_kib"):
        print("peak RSS of a daemon process (VmHWM, largest of %d): %.1f MiB"
              % (len(memory["daemons"]), memory["daemon_hwm_kib"] / 1024))
    print("caller-ID ledger: %d counts for the %d calls our two modes placed%s" % (
        ledger["counts"], ledger["calls"],
        "" if ledger["counts"] == ledger["calls"] else "  PROBLEM: not equal"))
    for load in runs_load:
        print("run %d load average (1/5/15 min): before %s, after %s" % (
            load["run"], " ".join("%.2f" % x for x in load["before"]),
            " ".join("%.2f" % x for x in load["after"])))


def finish(args, cells, summary, memory, runs_load, ledger):
    """Write the JSON; exit 1 if any cell had a problem: figures of a broken run mean
    nothing."""
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        with open(args.json, "w") as handle:
            json.dump({"cells": cells, "summary": summary, "memory": memory,
                       "load": runs_load, "ledger": ledger, "args": {
                           "runs": args.runs, "levels": args.levels,
                           "seconds": args.seconds, "keep_alive": args.keep_alive}},
                      handle, indent=2)
    bad = ["%s c=%d run %d: %s" % (c["target"], c["concurrency"], c["run"],
                                   "; ".join(c["problems"])) for c in cells if c["problems"]]
    if ledger["counts"] != ledger["calls"]:
        bad.append("the caller-ID ledger counted %d calls, %d were placed"
                   % (ledger["counts"], ledger["calls"]))
    if bad:
        print("FAILED: %s" % "; ".join(bad))
        sys.exit(1)


if __name__ == "__main__":
    sys.exit(main())
