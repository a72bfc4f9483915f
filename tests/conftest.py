"""Shared test setup: the package lives in lib/."""
import os
import sys

_TESTS = os.path.dirname(os.path.abspath(__file__))
# The package from lib/, and the shared test helpers (paths, apache_server...) from any folder.
sys.path[:0] = [os.path.join(os.path.dirname(_TESTS), "lib"), _TESTS]

# --doctest-modules would import every conftest.py as a module named "conftest" (a clash
# between folders); they hold no examples to run.
collect_ignore_glob = ["conftest.py", "*/conftest.py"]


# --- shared fixtures: a test config, a keys file with a known key, a sandbox PBX ---

import pytest  # noqa: E402

from testconfig import AMI_SECRET, AMI_USERNAME, TEST_API_KEY, TEST_KEY_LABEL, config_text  # noqa: E402,F401
# Under CI=true a skipped test fails the run (tests/ci_skips.py says why).
from ci_skips import (pytest_make_collect_report, pytest_runtest_makereport,  # noqa: E402,F401
                      pytest_sessionfinish, pytest_terminal_summary)


@pytest.fixture(scope="session", params=("cgi", "wsgi"))
def apache_mode(request):
    """How a private Apache serves the gateway: "cgi" (mod_cgid, one process per
    request) or "wsgi" (mod_wsgi daemon processes: install.sh --persistent). Every test
    that starts an ApacheServer takes it (tests/http/test_apache_modes.py checks), so the
    whole HTTP suite runs in both modes; `-k cgi` or `-k wsgi` runs one."""
    import apache_server
    apache_server.require_apache(request.param)
    return request.param


@pytest.fixture
def keys_file(tmp_path):
    """A keys file holding TEST_API_KEY under TEST_KEY_LABEL; returns its path (str)."""
    from callexchange import keys

    path = str(tmp_path / "api-keys")
    keys.add_key(path, TEST_KEY_LABEL, TEST_API_KEY)
    return path


@pytest.fixture(scope="session")
def sandbox_server():
    """One sandbox PBX for the whole session, on a free loopback port, accepting
    AMI_USERNAME / AMI_SECRET (starting and stopping one costs its accept poll). Tests
    take `sandbox`, which resets it; module-scoped fixtures may take this one."""
    from callexchange.sandbox.server import Sandbox

    pbx = Sandbox(host="127.0.0.1", port=0, username=AMI_USERNAME, secret=AMI_SECRET)
    pbx.start()
    try:
        yield pbx
    finally:
        pbx.stop()


@pytest.fixture
def sandbox(sandbox_server):
    """The session's sandbox PBX, reset before and after the test: no faults, no
    outcomes, an empty record. Script it with `sandbox.inject("slow-login=2")`."""
    sandbox_server.reset()
    yield sandbox_server
    sandbox_server.reset()


@pytest.fixture
def crm():
    """A CRM stand-in receiving webhooks (tests/crm_standin.py); closed after the test."""
    from crm_standin import CrmStandIn
    stand_in = CrmStandIn()
    yield stand_in
    stand_in.close()


@pytest.fixture(scope="session")
def carrier_cache(tmp_path_factory):
    """The carrier shards, built once per session (building takes most of a second)."""
    from callexchange.calls import numbers
    directory = tmp_path_factory.mktemp("numbers-cache")
    numbers.analyze("+4915112345678", "US", str(directory))
    return directory
