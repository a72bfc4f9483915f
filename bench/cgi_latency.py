#!/usr/bin/env python3
"""CGI latency: our asteriskapi.pl against a legacy-style Perl CGI, through one Apache.

One private Apache (mod_cgid, apache/standalone.conf.in via tests/apache_server.py) serves
four CGI scripts; the sandbox PBX runs in this process; ApacheBench (ab) sends the same
legacy request to each at concurrency 1 and 8:

  perl-baseline  bench/baseline/asteriskapi-baseline.pl: CGI.pm + JSON::PP + a raw AMI
                 socket, Login + Originate (Async) + Logoff, the legacy JSON reply
  ours           cgi-bin/asteriskapi.pl, the gateway, the same request and sandbox
  python-trivial a CGI that only starts the venv's python3 and answers
  perl-trivial   a CGI that only starts perl and answers

Prints p50 latency (ms) and requests/s for each, the ratio ours / perl-baseline at p50,
and the peak RSS of one CGI process of ours and of the baseline (each run directly with a
CGI environment under /usr/bin/time; max resident set size). See docs/benchmarks.md.

    .venv/bin/python bench/cgi_latency.py                # about a minute on 2 cores
    .venv/bin/python bench/cgi_latency.py --quick        # smoke run, a few seconds
    .venv/bin/python bench/cgi_latency.py --json out.json
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "lib"))

import apache_server  # noqa: E402
from callexchange.keys import digest  # noqa: E402
from callexchange.sandbox.server import Sandbox  # noqa: E402

API_KEY = "bench-key-0123456789abcdef"
AMI_USER, AMI_SECRET = "callexchange", "bench-secret"
# The legacy document's sample request, names with spaces included. Dialer mode.
TIME = "/usr/bin/time"
BODY = (b'{" extension " : "2001", " destination ": "12127773456", " voice_pitch ": "1",'
        b' " call_in_out ": "true"}')

CONFIG = """\
[ami]
host = 127.0.0.1
port = {ami_port}
username = {user}
secret = {secret}

[dial]
# Each request must place a call: no double-click replay.
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

TARGETS = (
    # name, URL path, places a call
    ("perl-baseline", "/bench/asteriskapi-baseline.pl", True),
    ("ours", "/api/v1/asteriskapi.pl", True),
    ("python-trivial", "/bench/trivial.py", False),
    ("perl-trivial", "/bench/trivial.pl", False),
)

EXTRA_CONF = """\
# Benchmark-only scripts, beside the product's URLs in the same server.
ScriptAlias "/bench/" "{scripts}/"
<Directory "{scripts}">
    Options None
    AllowOverride None
    Require all granted
    SetEnv PATH "{venv}/bin:/usr/local/bin:/usr/bin:/bin"
    SetEnv CALLEXCHANGE_CONFIG "{config}"
</Directory>
"""


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=60,
                        help="requests per target at concurrency 1 (default 60; "
                             "concurrency C sends twice as many)")
    parser.add_argument("--concurrency", default="1,8",
                        help="comma-separated concurrency levels (default 1,8)")
    parser.add_argument("--warmup", type=int, default=5, help="requests before timing")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 8 requests per level, 2 warm-up")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = parser.parse_args(argv)
    if args.quick:
        args.requests, args.warmup = 8, 2
    args.levels = [int(c) for c in args.concurrency.split(",") if c.strip()]
    return args


def ab_binary():
    found = shutil.which("ab") or ("/usr/bin/ab" if os.access("/usr/bin/ab", os.X_OK) else None)
    if not found:
        sys.exit("cgi_latency: ab not found (apt-get install apache2-utils)")
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


def fetch(url, body):
    request = urllib.request.Request(url, data=body, method="POST", headers={
        "api-key": API_KEY, "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def peak_rss_kib(command, env, body, workdir, runs=3):
    """Max resident set size (KiB) of `command` run as a CGI with `body` on stdin, the
    largest of `runs` runs, measured by GNU time (`/usr/bin/time -f %M`). Not wait4 from
    here: Linux starts a forked child's high-water mark at its parent's RSS, and this
    parent is a Python process as big as the one measured. Returns (KiB or None, output).
    """
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
    return {
        "PATH": "%s/bin:/usr/local/bin:/usr/bin:/bin" % venv,
        "CALLEXCHANGE_CONFIG": str(config_path),
        "GATEWAY_INTERFACE": "CGI/1.1", "SERVER_PROTOCOL": "HTTP/1.1",
        "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "80", "REMOTE_ADDR": "127.0.0.1",
        "REQUEST_METHOD": "POST", "SCRIPT_NAME": script_name, "PATH_INFO": "",
        "QUERY_STRING": "", "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(BODY)), "HTTP_API_KEY": API_KEY,
    }


def setup(base):
    """Write config, keys, state; stage the bench scripts; return (config_path, scripts)."""
    (base / "recordings").mkdir()
    (base / "recordings").chmod(0o755)
    apache_server.writable_dir(base / "state")
    keys = base / "api-keys"
    keys.write_text("bench\t%s\t2024-07-03T00:00:00Z\n" % digest(API_KEY))
    keys.chmod(0o644)
    scripts = base / "bench-cgi"
    shutil.copytree(REPO / "bench" / "baseline", scripts)
    apache_server.open_up(scripts)
    return base / "callexchange.ini", scripts


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    ab = ab_binary()
    if not apache_server.find_apache():
        sys.exit("cgi_latency: apache2 not found (apt-get install apache2)")
    base = apache_server.shared_tempdir("cx-bench-")
    sandbox = apache = None
    try:
        config_path, scripts = setup(base)
        sandbox = Sandbox(host="127.0.0.1", port=0, username=AMI_USER, secret=AMI_SECRET)
        sandbox.start()
        config_path.write_text(CONFIG.format(ami_port=sandbox.port, user=AMI_USER,
                                             secret=AMI_SECRET, base=base))
        config_path.chmod(0o644)
        prefix, venv = apache_server.app_tree(base)
        # As install.sh does: www-data cannot write __pycache__, so without this every
        # request would compile lib/ from source again.
        subprocess.run([str(venv / "bin" / "python3"), "-m", "compileall", "-q",
                        str(prefix / "lib")], check=True)
        extra = EXTRA_CONF.format(scripts=scripts, venv=venv, config=config_path)
        apache = apache_server.ApacheServer(base, config_path, base / "recordings",
                                            prefix=prefix, venv=venv, extra_conf=extra,
                                            state_dir=base / "state",
                                            keys_file=base / "api-keys")
        body_file = base / "body.json"
        body_file.write_bytes(BODY)
        body_file.chmod(0o644)

        # Each target must answer the request correctly before it is timed.
        for name, path, places_call in TARGETS:
            status, reply = fetch(apache.url + path, BODY)
            ok = status == 200 and json.loads(reply).get("status") == "true"
            if not ok:
                sys.exit("cgi_latency: %s answered %s %r\n%s"
                         % (name, status, reply[:500], apache.error_log()[-3000:]))

        results = []
        for concurrency in args.levels:
            requests = args.requests * (1 if concurrency == 1 else 2)
            for name, path, places_call in TARGETS:
                url = apache.url + path
                run_ab(ab, url, body_file, max(args.warmup, 1), 1, base / "warmup.csv")
                before = len(sandbox.actions_named("Originate"))
                stats = run_ab(ab, url, body_file, requests, concurrency, base / "ab.csv")
                stats["originates"] = len(sandbox.actions_named("Originate")) - before
                stats.update(target=name, concurrency=concurrency, requests=requests)
                if places_call and stats["originates"] != requests:
                    print("warning: %s placed %d calls for %d requests"
                          % (name, stats["originates"], requests), file=sys.stderr)
                results.append(stats)

        env = cgi_environ(config_path, venv, "/api/v1/asteriskapi.pl")
        ours_rss, ours_out = peak_rss_kib(
            [str(venv / "bin" / "python3"), str(prefix / "cgi-bin" / "asteriskapi.pl")],
            env, BODY, base)
        perl_rss, perl_out = peak_rss_kib(
            ["/usr/bin/perl", str(scripts / "asteriskapi-baseline.pl")], env, BODY, base)
        for name, output in (("ours", ours_out), ("perl-baseline", perl_out)):
            if b'"status": "true"' not in output and b'"status":"true"' not in output:
                print("warning: %s run directly answered %r" % (name, output[:300]),
                      file=sys.stderr)
    finally:
        if apache is not None:
            apache.stop()
        if sandbox is not None:
            sandbox.stop()
        shutil.rmtree(base, ignore_errors=True)

    report(results, ours_rss, perl_rss, args)
    return 0


def report(results, ours_rss, perl_rss, args):
    print("CGI latency through one Apache (mod_cgid), %d cores, sandbox PBX in-process"
          % os.cpu_count())
    print("%-16s %4s %6s %10s %10s %8s %6s" % ("target", "c", "n", "p50 ms", "req/s",
                                              "non-2xx", "calls"))
    for row in results:
        print("%-16s %4d %6d %10.1f %10.1f %8d %6s" % (
            row["target"], row["concurrency"], row["requests"], row["p50_ms"], row["rps"],
            row["non_2xx"] + row["errors"],
            row["originates"] if row["target"] in ("ours", "perl-baseline") else "-"))
    ratios = {}
    for concurrency in args.levels:
        by_name = {r["target"]: r for r in results if r["concurrency"] == concurrency}
        ratios[concurrency] = by_name["ours"]["p50_ms"] / by_name["perl-baseline"]["p50_ms"]
        print("ours / perl-baseline at p50, c=%d: %.2f" % (concurrency, ratios[concurrency]))
    if ours_rss and perl_rss:
        print("peak RSS of one CGI process: ours %.1f MiB, perl-baseline %.1f MiB"
              % (ours_rss / 1024, perl_rss / 1024))
    finish(args.json, {"results": results, "p50_ratio": ratios,
                       "peak_rss_kib": {"ours": ours_rss, "perl-baseline": perl_rss}}, results)


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


if __name__ == "__main__":
    sys.exit(main())
