"""The gateway's AMI sessions as a real Asterisk 22 sees them (`manager show connected`):
in CGI mode one per request, gone when the reply is sent; in persistent mode (mod_wsgi)
one long-lived session per daemon process, the same sessions before and after calls,
and made again, without a failed call, once Asterisk restarted."""

import harness
from call_checks import check_connected_call


def gateway_sessions(pbx):
    """[(start, file descriptor)] of the sessions of the gateway's AMI user."""
    found = []
    for line in pbx.asterisk.cli("manager show connected").splitlines():
        fields = line.split()
        if fields and fields[0] == harness.AMI_USERNAME:
            found.append((fields[2], fields[4]))  # Start (unix time), FileDes
    return sorted(found)


def test_the_gateway_keeps_the_ami_sessions_its_mode_promises(pbx, apache_mode):
    calls = [pbx.place("session %d" % n, agent, "1212555%03d1" % (900 + n), n % 2 == 1)
             for n, agent in enumerate(harness.ANSWERING_AGENTS[12:16])]
    after_calls = gateway_sessions(pbx)
    more = pbx.place_all([("session burst %d" % n, agent, "1212555%03d1" % (910 + n),
                           n % 2 == 0, {})
                          for n, agent in enumerate(harness.ANSWERING_AGENTS[16:20])])
    after_burst = gateway_sessions(pbx)
    if apache_mode == "cgi":
        # Login, Originate, Logoff per request: nothing stays.
        assert after_calls == [] and after_burst == []
    else:
        # One per daemon process (callexchange-wsgi.conf.in runs two), kept.
        assert 1 <= len(after_calls) <= 2, after_calls
        assert set(after_calls) <= set(after_burst) and len(after_burst) <= 2, after_burst
    pbx.wait_until_over(calls + more)
    for call in calls + more:
        check_connected_call(pbx, call)

    pbx.restart()
    # The first call after the restart finds its session closed and makes a new one.
    call = pbx.place("after restart", harness.ANSWERING_AGENTS[12], "12125559201", False)
    if apache_mode == "wsgi":
        renewed = gateway_sessions(pbx)
        assert renewed and not set(renewed) & set(after_burst), (renewed, after_burst)
    pbx.wait_until_over([call])
    check_connected_call(pbx, call)
