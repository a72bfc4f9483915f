"""Fixtures of the HTTP tests: `gateway`, the call endpoint over the session's sandbox
PBX (tests/http/call_gateway.py). Modules testing another endpoint (find_phone_files,
Apache) define a `gateway` of their own, which takes precedence in them."""

import pytest

from call_gateway import Gateway


@pytest.fixture
def gateway(tmp_path, keys_file, sandbox, carrier_cache):
    """The call endpoint in process, reading a fresh test config in `tmp_path`."""
    return Gateway(tmp_path, sandbox, carrier_cache)
