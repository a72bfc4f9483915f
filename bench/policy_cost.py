#!/usr/bin/env python3
"""What the toll-fraud guard costs a CGI process (one fresh process per measurement, as
Apache starts one per request), and what a key's counts cost per call.

For each kind of destination, in a fresh interpreter (phonenumbers' core already imported,
as every call needs it): the time of `numbers.analyze` + `policy.check_destination`, the
time of the short-number part alone (`numbers.service_number`, its table read included),
and how many of phonenumbers' short-number data modules were loaded (none: the table
built from them once is read instead):

- a valid number (what CRMs send): no short-number data at all;
- an invalid number whose emergency reading is in its own calling code (`+44 999`);
- an invalid +1 number, read in all 25 regions of the calling code;
- a short string that is an emergency number nowhere near (`2001`): every region's
  emergency data is read (only strings of at most 6 digits get this).

Then, for comparison, the import of `phonenumbers.shortnumberinfo` alone and loading
every region's short data (what building the table costs, once per phonenumbers version),
and the per-call cost of `CallQuota.reserve` (flock, read, write, fsync, rename) on
the given directory's file system.

    .venv/bin/python bench/policy_cost.py [--runs 9] [--state-dir /var/tmp/cx-bench] [--json F]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
LIB = os.path.join(os.path.dirname(HERE), "lib")

PROBE = r"""
import json, sys, time
sys.path.insert(0, %(lib)r)
from callexchange.calls import numbers
util = numbers._phonenumberutil()
util.parse("+4930123456", None)            # the core every call pays anyway
from callexchange.config import config_from_text
settings = config_from_text("[ami]\nusername = u\nsecret = s\n[ani]\ndefault = 12125550100\n")
start = time.perf_counter()
%(body)s
elapsed = time.perf_counter() - start
loaded = sum(1 for m in sys.modules if m.startswith("phonenumbers.shortdata.region_"))
print(json.dumps([elapsed * 1000, loaded]))
"""

DECIDE = """
from callexchange.calls import policy
number = numbers.analyze(%r, "US", %r)
policy.check_destination(number, settings.policy.allowed_types, None)
"""

# The guard's own part: what analyze spends on the short-number readings (a number no
# reading makes valid), the table read included.
SHORT_PART = """
text = %r
digits, explicit = numbers.split_destination(text)
numbers.service_number(digits, "US", None if text.startswith("+") else
                       "".join(c for c in text if c.isdigit()), %r)
"""

CASES = [
    ("valid number +49 151 12345678", "+4915112345678"),
    ("invalid, emergency in its calling code: +44 999", "+44 999"),
    ("invalid +1 number: +1 212 555 01 (25 regions)", "+1 212 555 01"),
    ("short, emergency nowhere near: 2001 (all regions)", "2001"),
]

RAW = [
    ("import phonenumbers.shortnumberinfo", "from phonenumbers import shortnumberinfo"),
    ("load every region's short data (244)",
     "from phonenumbers import shortnumberinfo\n"
     "from phonenumbers.shortdata import _AVAILABLE_REGION_CODES as regions\n"
     "for region in regions:\n"
     "    util.PhoneMetadata.short_metadata_for_region(region)"),
]


def probe(body, runs):
    times, loaded = [], 0
    for _ in range(runs):
        out = subprocess.run([sys.executable, "-c", PROBE % {"lib": LIB, "body": body}],
                             capture_output=True, text=True, check=True).stdout
        elapsed, loaded = json.loads(out)
        times.append(elapsed)
    return statistics.median(times), loaded


def quota_cost(state_dir, calls):
    sys.path.insert(0, LIB)
    from callexchange.calls.quota import CallQuota
    from callexchange.keys import KeyLimits

    quota = CallQuota(state_dir)
    limits = KeyLimits(None, 1000, 10_000_000)
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        quota.reserve("bench", limits)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), sorted(times)[int(len(times) * 0.95)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=9, help="fresh processes per case")
    parser.add_argument("--state-dir", help="where to measure the counts' fsync (default: "
                                            "a temporary directory under /var/tmp)")
    parser.add_argument("--calls", type=int, default=200, help="reservations to time")
    parser.add_argument("--json", help="write the figures here too")
    args = parser.parse_args()

    results = {"cases": [], "raw": []}
    cache = tempfile.mkdtemp(prefix="cx-bench-numbers-")
    probe(DECIDE % (CASES[0][1], cache), 1)   # builds the carrier shards once
    probe(SHORT_PART % ("+44 999", cache), 1)   # and the short-number table
    print("%-52s %9s %9s %8s" % ("destination (fresh process, p50)", "all ms", "short ms",
                                 "modules"))
    for label, destination in CASES:
        elapsed, loaded = probe(DECIDE % (destination, cache), args.runs)
        short = None
        if not destination.startswith("+49"):   # a valid number never reads short data
            short, _ = probe(SHORT_PART % (destination, cache), args.runs)
        results["cases"].append({"case": label, "analyze_and_check_ms_p50": round(elapsed, 2),
                                 "short_number_part_ms_p50": short and round(short, 2),
                                 "short_region_modules_loaded": loaded})
        print("%-52s %9.2f %9s %8d" % (label, elapsed, "-" if short is None else
                                       "%.2f" % short, loaded))
    for label, body in RAW:
        elapsed, loaded = probe(body, args.runs)
        results["raw"].append({"case": label, "ms_p50": round(elapsed, 2),
                               "short_region_modules_loaded": loaded})
        print("%-52s %9.2f %9s %8d" % (label, elapsed, "", loaded))

    state = args.state_dir or tempfile.mkdtemp(prefix="cx-bench-quota-", dir="/var/tmp")
    p50, p95 = quota_cost(state, args.calls)
    results["quota_reserve_ms"] = {"p50": round(p50, 3), "p95": round(p95, 3),
                                   "state_dir": state}
    print("CallQuota.reserve on %s: p50 %.3f ms, p95 %.3f ms" % (state, p50, p95))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
