#!/usr/bin/env python3
"""Where a call's time goes: the persistent mode's application in this process, each part
timed with the wall clock (no profiler, which doubles Python's share and hides waits).

The application is the one the mod_wsgi daemons run (`apache/callexchange.wsgi`: a
PersistentApp with one long-lived AMI link); the sandbox PBX runs in a child process, so
that its Python does not share this one's GIL; calls go over real TCP. Each part is a
function of the call path wrapped with a timer; parts nest (the Originate includes the
count's sync, which overlaps Asterisk's answer), so the figures do not add up to the
whole. Printed: p50 and p90 of the whole call (wall), p50 of this thread's CPU per call,
and the mean microseconds per call of each part.

    .venv/bin/python bench/call_parts.py                # 3,000 calls after 300 of warm-up
    .venv/bin/python bench/call_parts.py --calls 10000

Needs nothing beyond the venv. The daemons add to this what mod_wsgi and Apache cost
(bench/call_latency.py measures that: the floor target).
"""

import argparse
import collections
import functools
import io
import os
import runpy
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "lib"))
sys.path.insert(0, str(REPO / "bench"))

from call_latency import AMI_SECRET, AMI_USER, API_KEY, CONFIG  # noqa: E402

# (module, attribute, part name): the call path's functions, outermost first.
PARTS = (
    ("callexchange.http.app", "Application.__call__", "the whole call (WSGI app)"),
    ("callexchange.calls.endpoint", "caller_label", "key check (400/401 first)"),
    ("callexchange.calls.numbers", "analyze", "number analysis (phonenumbers)"),
    ("callexchange.calls.quota", "Admission.__init__", "the key's limits and policy"),
    ("callexchange.calls.quota", "Admission.__enter__", "per-key counts (flock, read, write)"),
    ("callexchange.calls.ani.AniLedger", "reserve", "caller-ID choice and count (no sync)"),
    ("callexchange.pbx.ami", "call_fields", "Originate built and validated"),
    ("callexchange.pbx.persistent.AmiLink", "place_call", "Originate on the kept link"),
    ("callexchange.pbx.persistent.AmiLink", "_send", "  its send"),
    ("callexchange.statedir.PendingSync", "sync", "  the count's sync, meanwhile"),
    ("os", "fdatasync", "    of which fdatasync"),
    ("callexchange.pbx.persistent.AmiLink", "_wait", "  the reply, after the sync"),
    ("json", "dumps", "JSON encoding (reply, records)"),
)

SANDBOX = """
import sys
sys.path.insert(0, {bench!r}); sys.path.insert(0, {lib!r})
from call_latency import CountingSandbox
sandbox = CountingSandbox(host="127.0.0.1", port=0, username={user!r}, secret={secret!r}).start()
print(sandbox.port, flush=True)
sys.stdin.read()
"""


def resolve(module_path, attribute):
    """(owner object, attribute name) for 'pkg.mod' + 'Class.method' or 'pkg.mod.Class'."""
    import importlib
    parts = module_path.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            owner = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:] + attribute.split(".")[:-1]:
            owner = getattr(owner, name)
        return owner, attribute.split(".")[-1]
    raise ImportError(module_path)


def instrument(totals):
    for module_path, attribute, label in PARTS:
        owner, name = resolve(module_path, attribute)
        original = getattr(owner, name)

        def timed(*args, __original=original, __label=label, **kwargs):
            started = time.perf_counter()
            try:
                return __original(*args, **kwargs)
            finally:
                totals[__label] += time.perf_counter() - started
        setattr(owner, name, functools.wraps(original)(timed))


def request(number, config_path):
    body = ('{" extension " : "%d", " destination ": "1212%03d%04d", " voice_pitch ": "1",'
            ' " call_in_out ": "true"}' % (2001 + number % 100, 200 + number % 800,
                                           number // 800 % 10000)).encode()
    return {"REQUEST_METHOD": "POST", "SCRIPT_NAME": "/api/v1/asteriskapi.pl", "PATH_INFO": "",
            "CONTENT_TYPE": "application/json", "CONTENT_LENGTH": str(len(body)),
            "HTTP_API_KEY": API_KEY, "wsgi.input": io.BytesIO(body),
            "wsgi.errors": sys.stderr, "wsgi.url_scheme": "http", "SERVER_NAME": "bench",
            "SERVER_PORT": "80", "REMOTE_ADDR": "127.0.0.1", "SERVER_PROTOCOL": "HTTP/1.1",
            "CALLEXCHANGE_CONFIG": str(config_path), "wsgi.multithread": True,
            "wsgi.multiprocess": True, "wsgi.run_once": False, "wsgi.version": (1, 0)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=3000, help="timed calls (default 3000)")
    parser.add_argument("--warmup", type=int, default=300, help="calls before (default 300)")
    args = parser.parse_args(argv)

    from callexchange.keys import digest

    base = Path(tempfile.mkdtemp(prefix="cx-parts-"))
    (base / "recordings").mkdir()
    (base / "state").mkdir()
    (base / "api-keys").write_text("bench\t%s\t2024-07-03T00:00:00Z\n" % digest(API_KEY))
    sandbox = subprocess.Popen([sys.executable, "-c", SANDBOX.format(
        bench=str(REPO / "bench"), lib=str(REPO / "lib"), user=AMI_USER, secret=AMI_SECRET)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        port = int(sandbox.stdout.readline())
        config = base / "callexchange.ini"
        config.write_text(CONFIG.format(ami_port=port, user=AMI_USER, secret=AMI_SECRET,
                                        base=base))
        os.environ["CALLEXCHANGE_CONFIG"] = str(config)
        app = runpy.run_path(str(REPO / "apache" / "callexchange.wsgi"))["application"]
        totals = collections.Counter()
        instrument(totals)

        def call(number):
            statuses = []
            reply = b"".join(app(request(number, config),
                                 lambda status, headers, exc=None: statuses.append(status)))
            if not statuses[0].startswith("200") or b'"status": "true"' not in reply:
                sys.exit("call_parts: the call was not placed: %s %r" % (statuses[0], reply))

        for number in range(args.warmup):
            call(number)
        totals.clear()
        walls, cpus = [], []
        for number in range(args.warmup, args.warmup + args.calls):
            wall, cpu = time.perf_counter(), time.thread_time()
            call(number)
            cpus.append(time.thread_time() - cpu)
            walls.append(time.perf_counter() - wall)
    finally:
        sandbox.stdin.close()
        sandbox.wait(timeout=10)
        shutil.rmtree(base, ignore_errors=True)
    walls.sort()
    cpus.sort()
    n = args.calls
    print("call_parts: %d calls in process (sandbox in a child process), load average %s"
          % (n, " ".join("%.2f" % x for x in os.getloadavg())))
    print("whole call: p50 %.3f ms, p90 %.3f ms wall; this thread's CPU p50 %.3f ms"
          % (walls[n // 2] * 1e3, walls[n * 9 // 10] * 1e3, cpus[n // 2] * 1e3))
    print("%-40s %10s" % ("part (nested parts indented)", "us / call"))
    for _, _, label in PARTS:
        print("%-40s %10.1f" % (label, totals[label] / n * 1e6))
    return 0


if __name__ == "__main__":
    sys.exit(main())
