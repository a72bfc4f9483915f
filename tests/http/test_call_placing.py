"""What a placed call sends to Asterisk: the legacy sample, both call modes, the
dial templates of the config, and the alias URL."""

from call_gateway import DEFAULT_POOL, LEGACY_SAMPLE, call, variables
from testconfig import AMI_USERNAME


def test_legacy_sample_places_a_dialer_mode_call_with_legacy_types(gateway):
    body = gateway.post(LEGACY_SAMPLE).json

    assert body["status"] == "true"
    assert body["icon"] == "US"
    assert body["message"] == "Success making a call"
    assert body["phone_valid"] == "yes"
    assert body["country_code"] == 1 and type(body["country_code"]) is int
    assert body["carrier"] == ""
    assert body["caller_id"] == DEFAULT_POOL[0]
    assert body["check_spam"] == "true"
    assert body["msg_sent"] == "true"
    assert "crm_id" not in body

    [login] = gateway.sandbox.actions_named("Login")
    assert login["Username"] == AMI_USERNAME and login["Secret"] == "***"
    [originate] = gateway.originates()
    assert originate["ChannelId"] == body["uniqueid"]
    assert originate["Async"] == "true"
    assert originate["Channel"] == "Local/12127773456@callexchange-outbound/n"
    assert originate["Context"] == "callexchange-agent"
    assert originate["Exten"] == "2001"
    assert originate["Priority"] == "1"
    # Dialer mode: the lead's Dial caps its ring (CX_LEAD_RING), the Timeout is a backstop.
    assert originate["Timeout"] == "600000"
    assert originate["CallerID"] == body["caller_id"]
    carried = variables(originate)
    assert all(name.startswith("__CX_") for name in carried)
    assert carried["__CX_ANI"] == body["caller_id"]
    assert carried["__CX_PITCH"] == "1"
    assert carried["__CX_MODE"] == "dialer"
    assert carried["__CX_CRM_ID"] == ""
    assert carried["__CX_UNIQUEID"] == body["uniqueid"]
    assert carried["__CX_EXTENSION"] == "2001"
    assert carried["__CX_DESTINATION"] == "12127773456"
    assert carried["__CX_AGENT_DIAL"] == "PJSIP/2001"  # [dial] agent_channel
    assert carried["__CX_AGENT_RING"] == "30"  # [dial] ring_timeout

    [message] = gateway.sandbox.actions_named("MessageSend")
    assert message["To"] == "pjsip:2001"
    assert message["Body"] == "some text to be send to softphone application"


def test_agent_first_rings_the_agent_channel_then_dials_the_lead(gateway):
    body = gateway.post(call(call_in_out=False)).json

    [originate] = gateway.originates()
    assert originate["Channel"] == "PJSIP/2001"
    assert originate["Context"] == "callexchange-outbound"
    assert originate["Exten"] == "12127773456"
    assert originate["Timeout"] == "30000"  # [dial] ring_timeout: the agent's ring
    assert variables(originate)["__CX_MODE"] == "agent_first"
    assert variables(originate)["__CX_ANI"] == body["caller_id"]
    # Asterisk pushes it on the agent's channel as it creates it (a busy phone's cause).
    assert variables(originate)["CHANNEL(hangup_handler_push)"] == \
        '"callexchange-agent-unanswered,s,1"'
    assert "msg_sent" not in body
    assert gateway.sandbox.actions_named("MessageSend") == []


def test_dial_templates_come_from_the_config(gateway):
    gateway.configure(dial={"agent_channel": "SIP/{extension}", "outbound_context": "out-x",
                            "ring_timeout": "12"})
    gateway.sandbox.add_contexts("out-x")  # the operator's own context, on their PBX
    gateway.post(call())
    [originate] = gateway.originates()
    assert (originate["Channel"], originate["Context"], originate["Timeout"]) == \
        ("SIP/2001", "out-x", "12000")


def test_dialer_mode_rings_the_agent_with_the_configured_agent_channel(gateway):
    gateway.configure(dial={"agent_channel": "SIP/{extension}", "ring_timeout": "12"})
    gateway.post(call(call_in_out=True))
    [originate] = gateway.originates()
    assert variables(originate)["__CX_AGENT_DIAL"] == "SIP/2001"
    assert variables(originate)["__CX_AGENT_RING"] == "12"
    assert originate["Timeout"] == "600000"


def test_a_local_channel_without_n_gets_it(gateway):
    # Configs installed before the default had /n: Asterisk would optimise the Local pair
    # away once bridged and hang up ;1, which owns the hangup webhook (issue 8, D3).
    gateway.configure(dial={"lead_channel": "Local/{destination}@callexchange-outbound",
                            "agent_channel": "Local/{extension}@agents"})
    gateway.post(call(call_in_out=True))
    gateway.post(call(call_in_out=False, destination="12127773457"))
    dialer, agent_first = gateway.originates()
    assert dialer["Channel"] == "Local/12127773456@callexchange-outbound/n"
    assert agent_first["Channel"] == "Local/2001@agents/n"


def test_alias_url_without_pl_works(gateway):
    gateway.post(call(), url="/api/v1/asteriskapi")
    assert len(gateway.originates()) == 1
