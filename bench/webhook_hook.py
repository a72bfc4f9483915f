#!/usr/bin/env python3
"""The webhook hook and deliverer: what a call pays, how fast a CRM hears, how fast a
backlog drains. See docs/benchmarks.md, section "Webhooks".

In one run, against a CRM stand-in (tests/test_webhook_delivery.CrmStandIn, HTTP/1.1 on
127.0.0.1):

1. baseline: `python -c pass` with the same interpreter, started and waited for the same
   way as the hook;
2. the hook's wall time from start to exit (agi-bin/callexchange-webhook.agi, driven over
   AGI pipes as Asterisk drives it: environment, then an answer per command), with
   the CRM healthy, hanging (accepts, never answers) and down (connection refused);
3. healthy CRM: the delay from the hook's start to the CRM receiving the event (the first
   event of the run separately: it starts the deliverer);
4. throughput: N events put in the spool while no deliverer runs, then one deliverer
   (a process of its own, as a hook starts it) drains them over one keep-alive session:
   events/s from its start to its exit, and from its first POST to its last;
5. as root: the hook with its state dir on a full disk (a filled tmpfs), every event
   written into the spool's reserve.

The hook runs from a copy of agi-bin/ and lib/ in a temporary directory, byte-compiled
first as install.sh compiles its copy (the checkout's tree is left alone), and is started
through its #! line as Asterisk starts it: this venv's python3 with the checkout's flags
(-S).

    .venv/bin/python bench/webhook_hook.py              # ~30 s
    .venv/bin/python bench/webhook_hook.py --quick      # smoke run
    .venv/bin/python bench/webhook_hook.py --json out.json
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "lib"))

from callexchange.config import load_config  # noqa: E402
from callexchange.sandbox.agi_peer import run_hook  # noqa: E402
from callexchange.webhooks.spool import Spool  # noqa: E402
from callexchange.webhooks.deliverer import _BOOT
from callexchange.webhooks.payload import make_record  # noqa: E402
from crm_standin import CrmStandIn  # noqa: E402

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
CONFIG = """\
[ami]
username = bench
secret = bench
[ani]
default = 12125550100
[recordings]
root = {base}/recordings
base_url = https://pbx.example.test/wav-files
[webhook]
url = {url}
secret = {secret}
timeout = 30
extended = yes
[auth]
keys_file = {base}/api-keys
[state]
dir = {base}/state
"""


def variables(n, event):
    values = {"CX_UNIQUEID": "1732700000.%012d" % n, "CX_DESTINATION": "12127773456",
              "CX_EXTENSION": "2001", "CX_ANI": "12125550100", "CX_CRM_ID": "lead-%d" % n,
              "CX_RECORDING": "2024/11/27/out-12127773456-2001-20241127-093320-"
                              "1732700000.%012d.wav" % n}
    if event == "hangup":
        values.update(DIALSTATUS="ANSWER", ANSWEREDTIME="25", HANGUPCAUSE="16")
    return values


def percentile(values, fraction):
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, int(round(fraction * (len(ordered) - 1)))))
    return ordered[index]


def stats_ms(seconds):
    return {"n": len(seconds), "p50": round(percentile(seconds, 0.5) * 1000, 1),
            "p99": round(percentile(seconds, 0.99) * 1000, 1),
            "max": round(max(seconds) * 1000, 1)}


class Bench:
    def __init__(self, base, crm, runs):
        self.base = base
        self.crm = crm
        self.runs = runs
        self.counter = 0
        path = base / "callexchange.ini"
        path.write_text(CONFIG.format(base=base, url=crm.url, secret=SECRET))
        self.config = load_config(str(path))
        self.spool = Spool.for_state_dir(self.config.state.dir)
        self.environ = dict(os.environ, CALLEXCHANGE_CONFIG=str(path),
                            CALLEXCHANGE_WEBHOOK_LINGER="5")
        self.environ.pop("PYTHONDONTWRITEBYTECODE", None)
        self.hook_path = str(base / "app" / "agi-bin" / "callexchange-webhook.agi")

    def install(self):
        """A copy of the hook and lib/, compiled, as install.sh makes it."""
        import shutil

        ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
        shutil.copytree(REPO / "lib", self.base / "app" / "lib", ignore=ignore)
        shutil.copytree(REPO / "agi-bin", self.base / "app" / "agi-bin", ignore=ignore)
        # The first line as installed: the venv's python, keeping the checkout's flags (-S).
        hook = Path(self.hook_path)
        first, rest = hook.read_text().split("\n", 1)
        flags = first.split("python3", 1)[1] if "python3" in first else ""
        hook.write_text("#!%s%s\n%s" % (sys.executable, flags, rest))
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(self.base / "app" / "lib")],
                       env=self.environ, check=True)

    def baseline(self):
        times = []
        for _ in range(self.runs):
            started = time.monotonic()
            subprocess.run([sys.executable, "-c", "pass"], env=self.environ, check=True)
            times.append(time.monotonic() - started)
        return times

    def hook(self, event="hangup", environ=None):
        self.counter += 1
        started_wall = time.time()
        run = run_hook(event, variables(self.counter, event), hook=self.hook_path,
                       environ=environ or self.environ, python="")
        if run.returncode != 0 or run.stderr:
            raise SystemExit("the hook failed: rc=%s %s" % (run.returncode, run.stderr))
        return run, started_wall, "msg_1732700000.%012d_%s" % (self.counter, event)

    def hooks(self, pause=0.0):
        times, starts = [], {}
        for _ in range(self.runs):
            run, started, webhook_id = self.hook()
            times.append(run.elapsed)
            starts[webhook_id] = started
            if pause:
                time.sleep(pause)
        return times, starts

    def full_disk_hooks(self):
        """The hook with its state dir on a full disk: a 16 MiB tmpfs, filled up to the
        last block, so that every event is written into the spool's reserve. Needs root
        (mount); None without it."""
        mount = self.base / "full-disk"
        mount.mkdir()
        if os.geteuid() != 0 or subprocess.run(
                ["mount", "-t", "tmpfs", "-o", "size=16m", "cx-bench", str(mount)],
                capture_output=True).returncode != 0:
            return None
        path = self.base / "full-disk.ini"
        path.write_text(CONFIG.format(base=mount, url=self.crm.url, secret=SECRET))
        environ = dict(self.environ, CALLEXCHANGE_CONFIG=str(path))
        spool = Spool.for_state_dir(str(mount / "state"))
        try:
            spool.ensure()
            spool.refill_reserve()
            fd = os.open(str(mount / "filler"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                while os.write(fd, b"\0" * 4096):
                    pass
            except OSError:
                pass
            finally:
                os.close(fd)
            self.crm.hang()  # the events stay in the spool: each one needs room
            times = []
            for _ in range(min(self.runs, 200)):  # the reserve holds some 250
                run, _, _ = self.hook(environ=environ)
                times.append(run.elapsed)
            return times
        finally:
            self.crm.release()
            pid = spool.lock_holder()
            if pid:
                os.kill(pid, signal.SIGKILL)
            subprocess.run(["umount", "-l", str(mount)], check=False)

    def stop_deliverer(self):
        """Kill the deliverer the hooks started (its pid is in the spool's lock file)."""
        pid = self.spool.lock_holder()
        if pid:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            deadline = time.monotonic() + 5
            while self.spool.lock_holder() and time.monotonic() < deadline:
                time.sleep(0.01)

    def empty_spool(self):
        for entry in self.spool.pending():
            self.spool.remove(entry.name)
        try:
            os.unlink(self.spool.endpoint_path)
        except FileNotFoundError:
            pass

    def arrival_delays(self, starts):
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            arrived = {r.id: r.time for r in list(self.crm.requests)}
            if all(webhook_id in arrived for webhook_id in starts):
                break
            time.sleep(0.05)
        else:
            raise SystemExit("not every event reached the CRM within 30 s")
        return [arrived[webhook_id] - started for webhook_id, started in starts.items()]

    def throughput(self, events):
        """Put `events` in the spool with no deliverer running, then start one (a process
        of its own, as a hook starts it) and time it until it has sent them all."""
        lock = self.spool.try_lock()
        while lock is None:  # deliverers the hooks started, some waiting for the lock
            self.stop_deliverer()
            lock = self.spool.try_lock()
        self.empty_spool()
        now = time.time()
        for n in range(events // 2):
            for event in ("connect", "hangup"):
                self.spool.add(make_record(event, variables(10 ** 9 + n, event),
                                           self.config.webhook, now=now))
        os.close(lock)
        before = len(self.crm.requests)
        started = time.time()
        process = subprocess.run(
            [sys.executable, "-c", _BOOT, str(self.base / "app" / "lib"), self.environ[
                "CALLEXCHANGE_CONFIG"]],
            env=dict(self.environ, CALLEXCHANGE_WEBHOOK_LINGER="0"), timeout=600)
        finished = time.time()
        if process.returncode != 0 or self.spool.pending():
            raise SystemExit("the deliverer failed: rc=%s, %d left"
                             % (process.returncode, len(self.spool.pending())))
        sent = self.crm.requests[before:]
        assert len(sent) == events, len(sent)
        sending = sent[-1].time - sent[0].time
        return {"events": events, "seconds_total": round(finished - started, 2),
                "events_per_s_total": round(events / (finished - started)),
                "events_per_s_sending": round((events - 1) / sending),
                "tcp_connections": len({r.connection for r in sent})}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=200, help="hook runs per case (200)")
    parser.add_argument("--events", type=int, default=2000, help="backlog size (2000)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 20 runs, 200 events")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = parser.parse_args(argv)
    if args.quick:
        args.runs, args.events = 20, 200

    results = {}
    crm = CrmStandIn()
    with tempfile.TemporaryDirectory(prefix="cx-bench-webhooks-") as directory:
        bench = Bench(Path(directory), crm, args.runs)
        try:
            bench.install()
            for _ in range(3):  # warm the caches (pyc, page cache)
                subprocess.run([sys.executable, "-c", "pass"], env=bench.environ)
            results["python -c pass"] = stats_ms(bench.baseline())

            # Healthy: the first hook starts the deliverer; the others wake it.
            run, started, first_id = bench.hook()
            first_delay = bench.arrival_delays({first_id: started})[0]
            times, starts = bench.hooks(pause=0.01)
            results["hook, CRM healthy"] = stats_ms(times)
            results["hook start -> CRM, healthy"] = stats_ms(bench.arrival_delays(starts))
            results["hook start -> CRM, first event (starts the deliverer)"] = \
                stats_ms([first_delay])

            crm.hang()
            time.sleep(0.2)
            bench.hook()  # the deliverer is now stuck in a POST
            times, _ = bench.hooks()
            results["hook, CRM hanging"] = stats_ms(times)
            bench.stop_deliverer()
            crm.release()
            bench.empty_spool()

            crm.down()
            times, _ = bench.hooks()
            results["hook, CRM down"] = stats_ms(times)
            bench.stop_deliverer()
            crm.up()

            full = bench.full_disk_hooks()
            if full is not None:
                results["hook, state disk full (written into the reserve)"] = stats_ms(full)

            results["backlog throughput"] = bench.throughput(args.events)
        finally:
            bench.stop_deliverer()
            crm.close()

    print("%-54s %6s %8s %8s %8s" % ("case", "n", "p50 ms", "p99 ms", "max ms"))
    for name, figures in results.items():
        if "p50" in figures:
            print("%-54s %6d %8.1f %8.1f %8.1f" % (name, figures["n"], figures["p50"],
                                                  figures["p99"], figures["max"]))
    backlog = results["backlog throughput"]
    print("backlog: %d events, one deliverer: %.2f s from its start to its exit = %d "
          "events/s (%d events/s from the first POST to the last) over %d TCP connection(s)"
          % (backlog["events"], backlog["seconds_total"], backlog["events_per_s_total"],
             backlog["events_per_s_sending"], backlog["tcp_connections"]))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
