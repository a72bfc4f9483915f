"""JSON-RPC 2.0 on the call endpoint: results that are the plain reply, notifications,
batches, and each error code with its legacy data."""

import json

import pytest

from call_gateway import LEGACY_SAMPLE, call, rpc


def test_jsonrpc_result_is_exactly_the_plain_reply(gateway):
    plain = gateway.post(call("12127773456")).json
    answer = gateway.post(rpc(params=call("12127773457"), id=7)).json

    assert answer["jsonrpc"] == "2.0" and answer["id"] == 7
    result = answer["result"]
    assert set(result) == set(plain)
    for name in set(plain) - {"uniqueid", "caller_id"}:
        assert result[name] == plain[name]
    assert result["uniqueid"] == gateway.originates()[1]["ChannelId"]


def test_jsonrpc_alias_method_call(gateway):
    answer = gateway.post(rpc("call", id="a")).json
    assert answer["id"] == "a" and answer["result"]["status"] == "true"
    assert len(gateway.originates()) == 1


def test_jsonrpc_params_use_legacy_names(gateway):
    answer = gateway.post(rpc(params=json.loads(LEGACY_SAMPLE), id=1)).json
    assert answer["result"]["msg_sent"] == "true"


def test_jsonrpc_notification_gets_204_and_the_call_is_placed(gateway):
    gateway.post(rpc(), status=204)
    assert len(gateway.originates()) == 1


def test_jsonrpc_batch_answers_in_order_without_notifications(gateway):
    batch = [
        rpc(params=call("12127773401"), id=1),
        rpc(params=call("12127773402")),                        # notification
        42,                                                     # invalid entry
        rpc("hangup", id=3),                                    # unknown method
        rpc(params={"extension": "2001"}, id=4),                # missing destination
        rpc("call", params=call("12127773405"), id="five"),
    ]
    answers = gateway.post(batch).json

    assert [a["id"] for a in answers] == [1, None, 3, 4, "five"]
    assert answers[0]["result"]["status"] == "true"
    assert answers[1]["error"]["code"] == -32600
    assert answers[2]["error"]["code"] == -32601
    assert answers[3]["error"]["code"] == -32602
    assert answers[3]["error"]["data"]["missing"] == ["destination"]
    assert answers[3]["error"]["data"]["status"] == "400 Bad Request"
    assert answers[4]["result"]["status"] == "true"
    dialled = sorted(o["Exten"] for o in gateway.originates())
    assert dialled == ["12127773401", "12127773402", "12127773405"]


def test_jsonrpc_batch_of_notifications_only_is_204(gateway):
    gateway.post([rpc(params=call("12127773401")), rpc(params=call("12127773402"))],
                 status=204)
    assert len(gateway.originates()) == 2


def test_jsonrpc_batch_over_50_is_invalid_request_and_runs_nothing(gateway):
    batch = [rpc(params=call("121277734%02d" % i), id=i) for i in range(51)]
    answer = gateway.post(batch).json
    assert answer["error"]["code"] == -32600 and answer["id"] is None
    assert gateway.sandbox.actions == []


def test_jsonrpc_empty_batch_is_invalid_request(gateway):
    assert gateway.post("[]").json["error"]["code"] == -32600


def test_jsonrpc_unknown_method_is_32601(gateway):
    answer = gateway.post(rpc("dial", id=1)).json
    assert answer["error"]["code"] == -32601 and answer["id"] == 1
    assert gateway.sandbox.actions == []


@pytest.mark.parametrize("params", [["2001", "12127773456"], "2001", 5])
def test_jsonrpc_params_not_an_object_is_32602(gateway, params):
    answer = gateway.post(rpc(params=params, id=1)).json
    assert answer["error"]["code"] == -32602
    assert gateway.sandbox.actions == []


def test_jsonrpc_malformed_json_is_32700_parse_error(gateway):
    answer = gateway.post('{"jsonrpc": "2.0", "method": "originate", "params": {', ).json
    assert answer["error"]["code"] == -32700 and answer["id"] is None
    assert answer["error"]["message"].startswith("Parse error")


def test_jsonrpc_wrong_version_is_invalid_request(gateway):
    answer = gateway.post(rpc(jsonrpc="1.0", id=1)).json
    assert answer["error"]["code"] == -32600


def test_jsonrpc_unknown_key_is_32001_with_legacy_data(gateway):
    answer = gateway.post(rpc(id=1), key="wrong").json
    assert answer["error"]["code"] == -32001
    assert answer["error"]["data"]["status"] == "401 Unauthorized"


def test_jsonrpc_field_error_is_32602_naming_the_field(gateway):
    answer = gateway.post(rpc(params=call(voice_pitch=3), id=1)).json
    assert answer["error"]["code"] == -32602
    assert answer["error"]["data"]["field"] == "voice_pitch"
