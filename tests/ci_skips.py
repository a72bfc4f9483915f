"""Under CI=true no test may skip: these pytest hooks turn every skip into a failure.

A skip says "this machine lacks something" (apache2, chromium, Asterisk, root...): fine on
a developer's machine, where the README's test section says what each skip needs, but CI
installs everything (.ci/run), so a skip there means a test that silently stopped
running. Collection skips (a module that skips itself) fail the same way. xfail is not a
skip: a strict xfail still fails the run when the test starts passing.

tests/conftest.py imports these hooks; any conftest.py can (tests/contract/test_ci_skips.py
does, in a scratch project, to prove they work).
"""

import os

import pytest

REASON = "CI=true, and under CI no test may skip (the README's test section says what " \
         "each skip needs; .ci/run must install it): "


def in_ci():
    return os.environ.get("CI") == "true"


def _skip_reason(report):
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return longrepr[2]
    return str(longrepr)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if in_ci() and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = REASON + _skip_reason(report)


_COLLECTION_SKIPS = []


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    # A module that skips itself cannot become a failed test (a failed collection would
    # stop the whole run): it is listed at the end, and the run's exit status is 1.
    outcome = yield
    report = outcome.get_result()
    if in_ci() and report.skipped:
        _COLLECTION_SKIPS.append("%s: %s" % (report.nodeid, _skip_reason(report)))


def pytest_sessionfinish(session, exitstatus):
    if _COLLECTION_SKIPS and session.exitstatus == 0:
        session.exitstatus = 1


def pytest_terminal_summary(terminalreporter):
    if _COLLECTION_SKIPS:
        terminalreporter.section("skipped under CI")
        terminalreporter.write_line(REASON.rstrip(": ") + ", so this run fails:")
        for line in _COLLECTION_SKIPS:
            terminalreporter.write_line("  " + line)
