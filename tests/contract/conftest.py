"""One gateway for the contract tests that need the real Apache (tests/contract/fuzz_gateway.py)."""

import pytest

import apache_server
from fuzz_gateway import FuzzGateway


@pytest.fixture(scope="module")
def gateway():
    """Sandbox PBX + private Apache with the real CGI, on loopback ports."""
    apache_server.require_apache()
    with FuzzGateway() as running:
        yield running
