"""Under CI=true a skip fails the run (tests/ci_skips.py); elsewhere it stays a skip. Proved
on a scratch project run by a child pytest, with the same hooks as tests/conftest.py."""

import os
import subprocess
import sys

from paths import REPO

SCRATCH_TESTS = '''
import pytest

def test_runs():
    assert True

def test_needs_something():
    pytest.skip("frobnicator is not installed (apt-get install frobnicator)")

@pytest.mark.skipif(True, reason="needs root")
def test_needs_root():
    pass

@pytest.mark.xfail(strict=True, reason="pending")
def test_pending():
    assert False
'''
SCRATCH_MODULE_SKIP = '''
import pytest
pytest.skip("no chromium here", allow_module_level=True)

def test_never_collected():
    pass
'''


def run_scratch(tmp_path, ci):
    (tmp_path / "conftest.py").write_text(
        "import sys\nsys.path.insert(0, %r)\n"
        "from ci_skips import pytest_make_collect_report, pytest_runtest_makereport, "
        "pytest_sessionfinish, pytest_terminal_summary\n"
        % str(REPO / "tests"))
    (tmp_path / "test_scratch.py").write_text(SCRATCH_TESTS)
    (tmp_path / "test_scratch_module.py").write_text(SCRATCH_MODULE_SKIP)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci:
        env["CI"] = "true"
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider",
                           str(tmp_path)], cwd=str(tmp_path), env=env, capture_output=True,
                          text=True, timeout=120)


def test_under_ci_every_skip_fails_the_run_and_says_why(tmp_path):
    result = run_scratch(tmp_path, ci=True)
    assert result.returncode == 1, result.stdout
    summary = result.stdout.strip().splitlines()[-1]
    # The skip in a test fails it, the skipif marker's (in setup) is an error; the module
    # that skips itself is listed, and fails the run.
    assert "1 failed" in summary and "1 error" in summary, summary
    assert "1 passed" in summary and "1 xfailed" in summary, summary
    assert "skipped under CI" in result.stdout and "test_scratch_module.py" in result.stdout
    assert "under CI no test may skip" in result.stdout
    assert "frobnicator is not installed (apt-get install frobnicator)" in result.stdout
    assert "needs root" in result.stdout and "no chromium here" in result.stdout


def test_outside_ci_a_skip_stays_a_skip(tmp_path):
    result = run_scratch(tmp_path, ci=False)
    assert result.returncode == 0, result.stdout
    summary = result.stdout.strip().splitlines()[-1]
    assert "1 passed" in summary and "3 skipped" in summary and "1 xfailed" in summary, summary
