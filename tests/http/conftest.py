"""Fixtures of the HTTP tests, one per endpoint under test in process: `gateway`, the call
endpoint over the session's sandbox PBX (tests/http/call_gateway.py), and
`recordings_gateway`, find_phone_files over a temp archive (tests/http/recordings_gateway.py).
A module that defines a `gateway` of its own (Apache's) uses that one instead."""

import pytest

from call_gateway import Gateway
from recordings_gateway import Gateway as RecordingsGateway


@pytest.fixture
def gateway(tmp_path, keys_file, sandbox, carrier_cache):
    """The call endpoint in process, reading a fresh test config in `tmp_path`."""
    return Gateway(tmp_path, sandbox, carrier_cache)


@pytest.fixture
def recordings_gateway(tmp_path, keys_file):
    """find_phone_files in process, over an empty recordings archive in `tmp_path`."""
    return RecordingsGateway(tmp_path)
