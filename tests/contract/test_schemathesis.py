"""Fuzzing the contract: schemathesis generates requests from docs/openapi.yaml and sends
them to the gateway as installed (a private Apache on loopback, the real CGI shims, the
sandbox PBX behind them), then checks every reply against the document.

What it generates (schemathesis's CLI, pinned in requirements.txt, seed fixed):
- examples phase: the document's own examples, every operation (~150 requests);
- coverage phase: for every operation, boundary values of each parameter and one
  violation of each constraint (missing, wrong type, out of range, pattern broken,
  unsupported method...), deterministic (~2,100 requests);
- fuzzing phase: FUZZ_EXAMPLES random requests per operation, valid and invalid, in JSON,
  text/plain, form and JSON-RPC shapes (12 operations: up to 12 x FUZZ_EXAMPLES).
About 2,700 requests in all, per Apache mode (CGI and mod_wsgi: the run is repeated for
each), 2 to 4 minutes each on the 2-core machine under load; every request has
REQUEST_TIMEOUT seconds and the whole run RUN_TIMEOUT, so CI stays bounded. Loopback only:
the base URL is the private Apache's 127.0.0.1 port.

Every built-in check runs (no 5xx, status codes, content types, headers and bodies as
documented, 405 with Allow, schema-valid requests accepted, schema-violating ones
refused, authentication enforced), three of them through tests/contract/contract_checks.py,
which says why: the legacy's 400 for a missing key, JSON-RPC's errors in an HTTP 200, and
the few refusals the schema can only describe in words. The run must find 0 failures.

Deeper runs by hand: CALLEXCHANGE_FUZZ_EXAMPLES=500 CALLEXCHANGE_FUZZ_SEED=7 ./run-tests
tests/contract/test_schemathesis.py.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

from paths import REPO

FUZZ_EXAMPLES = int(os.environ.get("CALLEXCHANGE_FUZZ_EXAMPLES", "25"))
FUZZ_SEED = int(os.environ.get("CALLEXCHANGE_FUZZ_SEED", "20240703"))
REQUEST_TIMEOUT = 20        # s; the gateway answers within connect_timeout + timeout (3 s)
RUN_TIMEOUT = 1200          # s; a normal run takes 2 to 4 minutes
MIN_GENERATED = 1500        # fewer means schemathesis skipped a phase or an operation
HERE = Path(__file__).resolve().parent
# Replaced by the wrappers in contract_checks.py (positive_data_accepted,
# negative_data_rejected, auth_enforced).
WRAPPED_CHECKS = "positive_data_acceptance,negative_data_rejection,ignored_auth"


def run_schemathesis(gateway, workdir):
    report = workdir / "report.json"
    env = dict(os.environ, SCHEMATHESIS_HOOKS="contract_checks",
               PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))
    command = [sys.executable, "-m", "schemathesis.cli", "run", str(REPO / "docs" / "openapi.yaml"),
               "--url", gateway.url,
               "--header", "api-key: " + gateway.api_key,
               "--checks", "all", "--exclude-checks", WRAPPED_CHECKS,
               "--max-examples", str(FUZZ_EXAMPLES), "--seed", str(FUZZ_SEED),
               "--phases", "examples,coverage,fuzzing",
               "--request-timeout", str(REQUEST_TIMEOUT),
               "--generation-database", "none",
               # The form shapes (urlencoded and multipart) are drawn from patterns with
               # lookaheads (a phone's 64 characters, no year 0000), which hypothesis can
               # only meet by filtering: two form media types of three make that health
               # check trip although every request drawn is checked as before.
               "--suppress-health-check", "filter_too_much",
               "--workers", "1",
               "--no-color", "--report", "json", "--report-json-path", str(report)]
    result = subprocess.run(command, cwd=str(workdir), env=env, capture_output=True,
                            text=True, timeout=RUN_TIMEOUT, check=False)
    summary = json.loads(report.read_text()) if report.exists() else None
    return result, summary


def test_schemathesis_finds_no_mismatch_and_no_server_error(gateway, tmp_path):
    result, summary = run_schemathesis(gateway, tmp_path)
    output = result.stdout[-20000:] + result.stderr[-5000:]
    assert summary is not None, "schemathesis wrote no report:\n" + output
    cases = summary["test_cases"]
    originates = len(gateway.sandbox.actions_named("Originate"))
    # The figures, for the report (pytest -rP shows them).
    print("schemathesis: %d requests generated (seed %d, %d fuzzed per operation), "
          "%d failures, %d errors; %d calls originated on the sandbox PBX"
          % (cases["generated"], FUZZ_SEED, FUZZ_EXAMPLES, cases["unique_failures"],
             len(summary["errors"]), originates))
    assert result.returncode == 0 and summary["exit_code"] == 0, output + gateway.apache.error_log()[-3000:]
    assert cases["unique_failures"] == 0 and not summary["failures"], output
    assert not summary["errors"], output
    assert summary["operations"]["tested"] == summary["operations"]["total"] == 12, summary["operations"]
    for phase in ("examples", "coverage", "fuzzing"):
        assert summary["phases"][phase]["status"] == "success", (phase, summary["phases"])
    assert cases["generated"] >= MIN_GENERATED, cases
    # The fuzzer got past validation too: real calls reached the PBX (11 to 21 in the runs
    # measured; a repeat within [dial] dedupe_seconds is replayed, not dialled, so the
    # count depends on timing: the bound leaves room for that).
    assert originates >= 5, originates
    assert "Traceback" not in gateway.apache.error_log(), gateway.apache.error_log()[-5000:]
