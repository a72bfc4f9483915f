"""One gateway for the contract tests that need the real Apache (tests/contract/fuzz_gateway.py)."""

import pytest

import apache_server
from fuzz_gateway import FuzzGateway


@pytest.fixture(scope="module")
def gateway(apache_mode):
    """Sandbox PBX + private Apache on loopback ports, in each mode the suite runs."""
    apache_server.require_apache(apache_mode)
    with FuzzGateway(mode=apache_mode) as running:
        yield running
