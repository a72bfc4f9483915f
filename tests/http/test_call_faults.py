"""Asterisk failing: a refused login or Originate (502), a closed port or a silent
Asterisk (503 within the AMI deadline), an unconfirmed Originate (503 naming its
uniqueid), and the caller ID given back when no call was placed."""

import json
import socket
import time

import pytest

from call_gateway import call, rpc
from testconfig import AMI_SECRET


def test_login_refused_is_502_and_gives_the_ani_back(gateway):
    gateway.fault("refuse-login")
    body = gateway.post(call(), status=502).json
    assert body["status"] == "502 Bad Gateway"
    assert "Authentication failed" in body["error"]
    assert AMI_SECRET not in json.dumps(body)
    assert gateway.originates() == []
    assert sum(gateway.usage().values()) == 0


def test_originate_rejected_is_502_with_asterisks_message(gateway):
    gateway.fault("originate-error=Permission denied")
    body = gateway.post(call(), status=502).json
    assert "Permission denied" in body["error"]
    assert body["message"] == "We fail on making a call. caller : 2001, callee : 12127773456"
    assert sum(gateway.usage().values()) == 0


def test_closed_ami_port_is_503_and_gives_the_ani_back(gateway):
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    closed_port = probe.getsockname()[1]
    probe.close()
    gateway.configure(ami_port=closed_port)
    body = gateway.post(call(), status=503).json
    assert body["status"] == "503 Service Unavailable"
    assert sum(gateway.usage().values()) == 0


def test_silent_asterisk_is_503_within_the_ami_deadline(gateway):
    gateway.configure(ami={"connect_timeout": "0.5", "timeout": "0.5"})
    gateway.fault("no-banner")
    started = time.monotonic()
    gateway.post(call(), status=503)
    assert time.monotonic() - started < 1.5
    assert sum(gateway.usage().values()) == 0


def test_jsonrpc_pbx_refusal_is_32002_with_legacy_data(gateway):
    gateway.fault("originate-error=Extension does not exist.")
    answer = gateway.post(rpc(id=9)).json
    assert answer["error"]["code"] == -32002
    assert answer["error"]["data"]["status"] == "502 Bad Gateway"
    assert "Extension does not exist." in answer["error"]["data"]["error"]


@pytest.mark.parametrize("fault", ["no-banner", "slow-originate=1.5"])
def test_a_jsonrpc_batch_is_answered_within_one_ami_deadline(gateway, fault):
    # SPEC §4.6: the worker never waits longer than connect_timeout + timeout (1 + 2 s
    # here), however many calls the batch holds.
    gateway.fault(fault)
    batch = [{"jsonrpc": "2.0", "method": "originate", "id": n,
              "params": {"extension": "2001", "destination": "1212555%04d" % n}}
             for n in range(4)]
    started = time.monotonic()
    response = gateway.post(batch)
    elapsed = time.monotonic() - started
    assert elapsed < 1 + 2 + 0.5, elapsed
    answers = response.json
    assert [a["id"] for a in answers] == [0, 1, 2, 3]
    assert all(a["error"]["code"] == -32003 for a in answers if "error" in a)
    assert any("error" in a for a in answers)


def test_an_unconfirmed_originate_is_a_503_that_names_its_uniqueid(gateway):
    gateway.fault("slow-originate=3")  # the reply comes after the 2 s timeout
    body = gateway.post(call(), status=503, expect_errors=True).json
    assert "may have been placed" in body["error"]
    (originate,) = gateway.originates()
    assert body["uniqueid"] == originate["ChannelId"]
    assert sum(gateway.usage().values()) == 1  # the caller ID keeps its count
