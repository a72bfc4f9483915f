"""Ten calls at once, five per mode, each POSTed in its own thread as ten CRM users would:
every one connects, with its own webhooks, talk time and recording, nothing crossed."""

import harness
from call_checks import check_connected_call


def test_ten_calls_at_once_each_connect_with_their_own_webhooks_and_recording(pbx):
    agents = harness.ANSWERING_AGENTS[-10:]
    specs = [("call %d" % n, agent, "12125558%02d1" % n, n % 2 == 1, {})
             for n, agent in enumerate(agents)]
    calls = pbx.place_all(specs)
    assert len({call.uniqueid for call in calls}) == 10
    pbx.wait_until_over(calls)
    for call in calls:
        check_connected_call(pbx, call)
