"""Shared test setup: the package lives in lib/."""
import os
import sys

_TESTS = os.path.dirname(os.path.abspath(__file__))
# The package from lib/, and the shared test helpers (paths, apache_server...) from any folder.
sys.path[:0] = [os.path.join(os.path.dirname(_TESTS), "lib"), _TESTS]


# --- shared fixtures: a test config, a keys file with a known key, a sandbox PBX ---

import pytest  # noqa: E402

TEST_API_KEY = "test-api-key-5f1c2a9e"
TEST_KEY_LABEL = "tests"
AMI_USERNAME = "cxtest"
AMI_SECRET = "s3cret-for-tests"

_CONFIG_DEFAULTS = {
    "ami": {"host": "127.0.0.1", "username": AMI_USERNAME, "secret": AMI_SECRET,
            "connect_timeout": "1", "timeout": "2"},
    "dial": {"default_region": "US"},
    "ani": {"default": "12125550100, 12125550101", "DE": "4930123456, 4940123456"},
    "recordings": {"base_url": "https://pbx.example.test/wav-files"},
    "webhook": {},
}


def config_text(tmp_path, ami_port, **sections):
    """INI text of a working test config in `tmp_path`: AMI on 127.0.0.1:`ami_port` with
    AMI_USERNAME / AMI_SECRET, keys file `tmp_path/api-keys`, state `tmp_path/state`,
    recordings `tmp_path/recordings`. Keyword arguments override or add keys per section,
    e.g. `config_text(tmp_path, port, dial={"dedupe_seconds": "1"})`; a value of None
    drops the key."""
    merged = {name: dict(values) for name, values in _CONFIG_DEFAULTS.items()}
    merged["ami"]["port"] = str(ami_port)
    merged["auth"] = {"keys_file": str(tmp_path / "api-keys")}
    merged["state"] = {"dir": str(tmp_path / "state")}
    merged["recordings"]["root"] = str(tmp_path / "recordings")
    for name, values in sections.items():
        merged.setdefault(name, {}).update(values)
    lines = []
    for name, values in merged.items():
        lines.append("[%s]" % name)
        lines.extend("%s = %s" % (key, value) for key, value in values.items()
                     if value is not None)
        lines.append("")
    return "\n".join(lines)


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
