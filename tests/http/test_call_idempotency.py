"""Replayed replies: an Idempotency-Key's retry and an agent's double click get the
first reply and place one call; a failure is not remembered. The double-click window
is passed by moving the gateway's clock, not by sleeping."""

import pytest

from call_gateway import call


def test_same_idempotency_key_replays_the_first_reply_and_places_one_call(gateway):
    headers = {"Idempotency-Key": "crm-retry-0001"}
    first = gateway.post(call(), headers=headers)
    second = gateway.post(call(), headers=headers)

    assert second.json == first.json
    assert second.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert len(gateway.originates()) == 1
    assert sum(gateway.usage().values()) == 1


def test_same_idempotency_key_with_another_body_is_422(gateway):
    headers = {"Idempotency-Key": "crm-retry-0002"}
    gateway.post(call(), headers=headers)
    body = gateway.post(call("12127773457"), headers=headers, status=422).json
    assert "Idempotency-Key" in body["error"]
    assert len(gateway.originates()) == 1


def test_same_idempotency_key_with_the_same_parameters_written_differently_replays(gateway):
    headers = {"Idempotency-Key": "crm-retry-0003"}
    first = gateway.post('{"extension": "2001", "destination": "12127773456"}', headers=headers)
    again = gateway.post('{ "Destination":"12127773456",\n "extension":"2001" }',
                         headers=headers)
    assert again.json == first.json and again.headers["Idempotent-Replayed"] == "true"
    assert len(gateway.originates()) == 1


def test_a_jsonrpc_retry_with_a_new_id_replays_the_first_result(gateway):
    headers = {"Idempotency-Key": "crm-retry-0004"}
    request = {"jsonrpc": "2.0", "method": "originate", "params": call(), "id": 1}
    first = gateway.post(request, headers=headers)
    again = gateway.post(dict(request, id=2), headers=headers)
    assert again.json["result"] == first.json["result"]
    assert again.json["id"] == 2  # the id of the request it answers
    assert len(gateway.originates()) == 1


def test_distinct_idempotency_keys_are_distinct_calls(gateway):
    gateway.post(call(), headers={"Idempotency-Key": "a-1"})
    gateway.post(call(), headers={"Idempotency-Key": "a-2"})
    assert len(gateway.originates()) == 2


@pytest.mark.parametrize("value", ["has space", "x" * 256])
def test_malformed_idempotency_key_is_400(gateway, value):
    gateway.post(call(), headers={"Idempotency-Key": value}, status=400)
    assert gateway.sandbox.actions == []


def test_failed_request_is_not_remembered_under_its_idempotency_key(gateway):
    headers = {"Idempotency-Key": "crm-retry-0003"}
    gateway.fault("refuse-login")
    gateway.post(call(), headers=headers, status=502)
    gateway.sandbox.clear_faults("refuse-login")
    body = gateway.post(call(), headers=headers).json
    assert body["status"] == "true"
    assert len(gateway.originates()) == 1


def test_double_click_gets_the_first_reply_and_places_one_call(gateway):
    first = gateway.post(call()).json
    second = gateway.post(call(" 2127773456 ")).json   # same lead, written otherwise
    assert second == first
    assert len(gateway.originates()) == 1


def test_another_destination_is_not_a_double_click(gateway):
    gateway.post(call("12127773456"))
    gateway.post(call("12127773457"))
    assert len(gateway.originates()) == 2


def test_same_lead_after_dedupe_seconds_is_called_again(gateway):
    gateway.configure(dial={"dedupe_seconds": "1"})
    first = gateway.post(call()).json
    gateway.clock.advance(0.9)
    assert gateway.post(call()).json == first       # still within the window
    gateway.clock.advance(0.2)
    second = gateway.post(call()).json
    assert second["uniqueid"] != first["uniqueid"]
    assert len(gateway.originates()) == 2


def test_dedupe_seconds_0_turns_double_click_protection_off(gateway):
    gateway.configure(dial={"dedupe_seconds": "0"})
    gateway.post(call())
    gateway.post(call())
    assert len(gateway.originates()) == 2


def test_retry_after_a_failure_is_not_swallowed_as_a_double_click(gateway):
    gateway.fault("refuse-login")
    gateway.post(call(), status=502)
    gateway.sandbox.clear_faults("refuse-login")
    gateway.post(call())
    assert len(gateway.originates()) == 1
