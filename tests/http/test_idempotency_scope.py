"""Idempotency-Keys per API key, answered in time (issue 10, items 4 and 8).

A key is scoped to the API key that authenticated the request, whether the client sent it
in the header or the body: two tenants never share one, and one tenant's header and body
requests do. Twins sharing a key are each answered within `connect_timeout + timeout` of
their own arrival whatever the others do: against a silent Asterisk (a TCP server that
accepts and never says a word) and while another request holds the key (409)."""

import json
import socket
import threading
import time

import pytest
import webtest

from call_gateway import call, check_reply
from callexchange import keys
from callexchange.http.app import create_app
from callexchange.http.idempotency import idempotency_store, scoped_key
from testconfig import TEST_API_KEY, TEST_KEY_LABEL

OTHER_KEY = "tenant-b-key-77e1"
BUDGET = 1 + 2  # the test config's [ami] connect_timeout + timeout


@pytest.fixture
def two_tenants(gateway, keys_file):
    keys.add_key(keys_file, "tenant-b", OTHER_KEY)
    return gateway


def test_two_tenants_never_share_an_idempotency_key(two_tenants):
    gateway = two_tenants
    headers = {"Idempotency-Key": "order-1"}
    first = gateway.post(call(api_key=TEST_API_KEY), key=None, headers=headers)
    # Tenant B, same Idempotency-Key, another call: its own call (was 422 for A's key).
    other = gateway.post(call("12127773457", api_key=OTHER_KEY), key=None, headers=headers)
    assert "Idempotent-Replayed" not in other.headers
    assert other.json["uniqueid"] != first.json["uniqueid"]
    # Tenant B with A's very parameters is not A's replay either.
    third = gateway.post(call(api_key=OTHER_KEY), key=None,
                         headers={"Idempotency-Key": "order-2"})
    assert "Idempotent-Replayed" not in third.headers
    assert len(gateway.originates()) == 3


def test_one_tenant_shares_its_keys_between_header_and_body(two_tenants):
    gateway = two_tenants
    headers = {"Idempotency-Key": "order-3"}
    first = gateway.post(call(), headers=headers)                        # header key
    again = gateway.post(call(api_key=TEST_API_KEY), key=None, headers=headers)  # body key
    assert again.json == first.json and again.headers["Idempotent-Replayed"] == "true"
    form = gateway.post("extension=2001&destination=12127773456&api-key=" + TEST_API_KEY,
                        key=None, headers=headers,
                        content_type="application/x-www-form-urlencoded")
    assert form.json == first.json and form.headers["Idempotent-Replayed"] == "true"
    assert len(gateway.originates()) == 1


def test_a_request_without_a_key_learns_nothing_of_a_used_idempotency_key(two_tenants):
    gateway = two_tenants
    gateway.post(call(), headers={"Idempotency-Key": "order-4"})
    unknown = gateway.post(call(), key=None, headers={"Idempotency-Key": "order-4"},
                           status=400, expect_errors=True).json
    never = gateway.post(call(), key=None, headers={"Idempotency-Key": "order-never"},
                         status=400, expect_errors=True).json
    assert unknown == never
    assert len(gateway.originates()) == 1


def test_a_twin_finding_the_key_in_flight_at_its_deadline_gets_409(gateway):
    store = idempotency_store(gateway.config.state.dir)
    # Another request holds the key (as a first request still talking to Asterisk does).
    with store.guard(scoped_key([TEST_KEY_LABEL], "order-5")):
        started = time.monotonic()
        response = gateway.post(call(), headers={"Idempotency-Key": "order-5"}, status=409,
                                expect_errors=True)
        elapsed = time.monotonic() - started
    assert BUDGET - 0.05 <= elapsed <= BUDGET + 0.5, elapsed
    body = response.json
    assert body["status"] == "409 Conflict" and body["icon"] == "error"
    assert "still being answered" in body["error"]
    assert body["message"] == "We fail on making a call. caller : 2001, callee : 12127773456"
    assert gateway.originates() == []
    # Once the key is free the retry is answered, and places the one call.
    gateway.post(call(), headers={"Idempotency-Key": "order-5"})
    assert len(gateway.originates()) == 1


def test_a_jsonrpc_twin_in_flight_gets_409_too(gateway):
    store = idempotency_store(gateway.config.state.dir)
    request = {"jsonrpc": "2.0", "method": "originate", "params": call(), "id": 1}
    with store.guard(scoped_key([TEST_KEY_LABEL], "order-6")):
        response = gateway.post(request, headers={"Idempotency-Key": "order-6"}, status=409,
                                expect_errors=True)
    assert response.json["status"] == "409 Conflict"


class SilentAmi:
    """Asterisk frozen: a TCP server that accepts every connection and never answers."""

    def __init__(self):
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.accepted = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def close(self):
        self.server.close()
        for conn in self.accepted:
            conn.close()


@pytest.mark.parametrize("idempotency", [True, False], ids=["same-key", "double-click"])
def test_ten_twins_against_a_silent_asterisk_are_each_answered_within_one_deadline(
        gateway, idempotency):
    silent = SilentAmi()
    try:
        gateway.configure(ami_port=silent.port)
        app = gateway.app.app    # the WSGI app itself: one TestApp per thread below
        results = []

        def twin():
            started = time.monotonic()
            response = webtest.TestApp(app).post(
                "/api/v1/asteriskapi.pl", json.dumps(call()), expect_errors=True,
                headers=dict({"api-key": TEST_API_KEY, "Content-Type": "application/json"},
                             **({"Idempotency-Key": "order-7"} if idempotency else {})))
            results.append((time.monotonic() - started, response))

        threads = [threading.Thread(target=twin) for _ in range(10)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
    finally:
        silent.close()
    assert len(results) == 10
    slowest = max(elapsed for elapsed, _ in results)
    assert slowest <= BUDGET + 0.5, sorted(elapsed for elapsed, _ in results)
    for _, response in results:
        assert response.status_int in (503, 409), response.text
        check_reply(response)
    print("ten twins (%s): slowest answered after %.2f s; statuses %s" % (
        "same Idempotency-Key" if idempotency else "double click", slowest,
        sorted(response.status_int for _, response in results)))
