"""config.py: the INI file, its defaults, and errors that name the file and the line."""

import pytest

from callexchange.config import (DEFAULT_PATH, NUMBER_TYPES, ConfigError, config_from_text,
                                 config_path, load_config, parse_ini)

MINIMAL = """\
[ami]
username = cx
secret = s3cret

[ani]
default = 12125550100
"""


def error_for(text, path="/etc/cx.ini"):
    with pytest.raises(ConfigError) as caught:
        config_from_text(text, path)
    return caught.value


def line_of(text, needle):
    return [i for i, line in enumerate(text.splitlines(), 1) if needle in line][0]


# --- defaults ----------------------------------------------------------------------------

def test_defaults():
    config = config_from_text(MINIMAL, "/etc/cx.ini")
    assert config.path == "/etc/cx.ini"
    ami = config.ami
    assert (ami.host, ami.port, ami.username, ami.secret) == ("127.0.0.1", 5038, "cx", "s3cret")
    assert (ami.connect_timeout, ami.timeout) == (3.0, 5.0)
    dial = config.dial
    assert dial.agent_channel == "PJSIP/{extension}"
    assert dial.lead_channel == "Local/{destination}@callexchange-outbound/n"
    assert (dial.outbound_context, dial.agent_context) == ("callexchange-outbound",
                                                           "callexchange-agent")
    assert dial.message_to == "pjsip:{extension}"
    assert (dial.ring_timeout, dial.default_region, dial.dedupe_seconds) == (30, "US", 5)
    assert config.ani.default == ("12125550100",)
    assert (config.ani.daily_limit, config.ani.flagged_file, config.ani.pools) == (200, "", {})
    assert config.recordings.root == "/var/spool/asterisk/monitor"
    assert config.recordings.base_url == ""
    webhook = config.webhook
    assert (webhook.url, webhook.secret, webhook.timeout) == ("", "", 5.0)
    assert (webhook.extended, webhook.verify_tls) == (False, True)
    assert config.auth.keys_file == "/etc/callexchange/api-keys"
    assert config.state.dir == "/var/lib/callexchange"


def test_every_section_key_of_the_spec_is_accepted():
    text = MINIMAL.replace("[ani]\n", "[ani]\ndaily_limit = 50\nflagged_file = /etc/cx/flagged\n"
                                      "DE = 4930123456, +4940123456\n") + """
[dial]
agent_channel = SIP/{extension}
lead_channel = Local/{destination}@out
outbound_context = out
agent_context = agent_2
message_to = sip:{extension}
ring_timeout = 45
default_region = de
dedupe_seconds = 0

[recordings]
root = /srv/monitor
base_url = https://pbx.example.com/wav-files

[webhook]
url = https://crm.example.com/hook
secret = whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw
timeout = 2.5
extended = yes
verify_tls = off

[auth]
keys_file = /etc/cx/keys

[state]
dir = /srv/state
"""
    config = config_from_text(text)
    assert config.ani.pools == {"DE": ("4930123456", "4940123456")}
    assert (config.ani.daily_limit, config.ani.flagged_file) == (50, "/etc/cx/flagged")
    assert config.dial.default_region == "DE"
    assert config.dial.dedupe_seconds == 0
    assert config.webhook.extended is True and config.webhook.verify_tls is False
    assert config.webhook.timeout == 2.5
    assert config.recordings.root == "/srv/monitor"
    assert config.state.dir == "/srv/state"


# --- syntax ------------------------------------------------------------------------------

def test_keys_and_sections_are_case_insensitive():
    config = config_from_text("[AMI]\nUserName = cx\nSECRET = pw\nHost = pbx.local\n"
                              "[Ani]\nDefault = 12125550100\nde = 4930123456\n")
    assert (config.ami.username, config.ami.host) == ("cx", "pbx.local")
    assert config.ani.pools == {"DE": ("4930123456",)}


def test_values_keep_their_case():
    assert config_from_text(MINIMAL.replace("s3cret", "S3cReT")).ami.secret == "S3cReT"


def test_continuation_lines_extend_the_previous_value():
    text = MINIMAL.replace("default = 12125550100",
                           "default = 12125550100,\n    12125550101\n"
                           "DE = 4930123456,\n\t4940123456,\n  # a comment in between\n"
                           "  4950123456")
    config = config_from_text(text)
    assert config.ani.default == ("12125550100", "12125550101")
    assert config.ani.pools["DE"] == ("4930123456", "4940123456", "4950123456")


def test_pool_on_continuation_lines_without_commas():
    text = MINIMAL.replace("default = 12125550100", "default =\n  12125550100\n  12125550101")
    assert config_from_text(text).ani.default == ("12125550100", "12125550101")


def test_colon_separator_comments_and_no_inline_comments():
    text = MINIMAL.replace("secret = s3cret", "; the AMI secret may hold # and =\n"
                                              "secret: a#b=c ; d")
    assert config_from_text(text).ami.secret == "a#b=c ; d"


def test_parse_ini_reports_lines():
    assert parse_ini("# c\n[ami]\n\nhost = pbx\n") == {"ami": {"host": ("pbx", 4)}}


# --- errors name the file and the line ---------------------------------------------------

@pytest.mark.parametrize("text, needle, words", [
    (MINIMAL + "[bogus]\nx = 1\n", "[bogus]", ["unknown section", "bogus"]),
    (MINIMAL + "bogus_key = 1\n", "bogus_key", ["unknown key", "bogus_key", "[ani]"]),
    (MINIMAL.replace("secret = s3cret", "secret = s3cret\nport = abc"), "port =",
     ["port", "whole number"]),
    (MINIMAL.replace("secret = s3cret", "secret = s3cret\nport = 70000"), "port =",
     ["port", "between"]),
    (MINIMAL.replace("secret = s3cret", "secret = s3cret\ntimeout = soon"), "timeout =",
     ["timeout", "seconds"]),
    (MINIMAL + "[dial]\ndefault_region = USA\n", "default_region", ["default_region",
                                                                      "two-letter"]),
    (MINIMAL + "[dial]\ndefault_region = 1A\n", "default_region", ["default_region"]),
    (MINIMAL + "[dial]\nring_timeout = 0\n", "ring_timeout", ["ring_timeout"]),
    (MINIMAL + "[dial]\nagent_channel = PJSIP/2001\n", "agent_channel", ["{extension}"]),
    (MINIMAL + "[dial]\nagent_channel = PJSIP/{extension}/{destination}\n", "agent_channel",
     ["placeholder"]),
    # It reaches the dialplan as CX_AGENT_DIAL, in a Variable header split on commas.
    (MINIMAL + "[dial]\nagent_channel = PJSIP/{extension},30\n", "agent_channel",
     ["agent_channel", "','", "Variable header"]),
    (MINIMAL + "[dial]\noutbound_context = out bound\n", "outbound_context",
     ["outbound_context"]),
    (MINIMAL + "USA = 12125550100\n", "USA =", ["unknown key 'usa' in [ani]", "region"]),
    (MINIMAL + "1A = 12125550100\n", "1A =", ["[ani] 1a", "two-letter"]),
    (MINIMAL + "[dial]\nring_timout = 5\n", "ring_timout", ["unknown key", "[dial]"]),
    (MINIMAL + "DE = 49301, 4930123456\n", "DE =", ["6 to 15 digits"]),
    (MINIMAL.replace("default = 12125550100", "default = 1212555O100"), "default =",
     ["default"]),
    (MINIMAL + "daily_limit = many\n", "daily_limit", ["daily_limit"]),
    (MINIMAL + "flagged_file = flagged.txt\n", "flagged_file", ["absolute path"]),
    (MINIMAL + "[webhook]\nurl = crm.example.com/hook\n", "url =", ["http"]),
    (MINIMAL + "[webhook]\nextended = maybe\n", "extended", ["yes or no"]),
    (MINIMAL + "[state]\ndir = state\n", "dir =", ["absolute path"]),
    (MINIMAL.replace("secret = s3cret", "secret = s3cret\nhost = a\nhost = b"), "host = b",
     ["appears twice"]),
    (MINIMAL + "[dial\n", "[dial", ["must end with ']'"]),
    (MINIMAL + "just some words\n", "just some words", ["key = value"]),
    ("host = pbx\n" + MINIMAL, "host = pbx", ["outside of any [section]"]),
])
def test_errors_name_file_and_line(text, needle, words):
    error = error_for(text)
    line = line_of(text, needle)
    assert error.path == "/etc/cx.ini"
    assert error.line == line
    assert str(error).startswith("/etc/cx.ini:%d: " % line)
    for word in words:
        assert word in str(error)
    # Never the value: it may be a secret, and the message reaches error.log.
    value = text.splitlines()[line - 1].partition("=")[2].strip()
    if len(value) > 5:   # (shorter ones, like "state", are words of the message too)
        assert value not in str(error).partition(": ")[2]


def test_section_given_twice_names_its_second_header():
    text = MINIMAL + "\n[ami]\nhost = b\n"
    error = error_for(text)
    assert error.line == 8 and "appears twice" in str(error)


def test_missing_required_ami_username_names_the_section_line():
    text = "# config\n\n[ami]\nsecret = s3cret\n\n[ani]\ndefault = 12125550100\n"
    error = error_for(text)
    assert (error.line, str(error)) == (3, "/etc/cx.ini:3: [ami] username is required")


def test_empty_required_value_is_an_error_on_its_line():
    error = error_for(MINIMAL.replace("username = cx", "username ="))
    assert error.line == 2 and "username" in str(error) and "empty" in str(error)


def test_missing_required_section_names_the_file():
    error = error_for("[ami]\nusername = cx\nsecret = s\n")
    assert str(error).startswith("/etc/cx.ini: ")
    assert "[ani] default is required" in str(error)


def test_missing_file_names_the_file(tmp_path):
    path = str(tmp_path / "nowhere.ini")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.path == path
    assert str(caught.value).startswith(path + ": ")
    assert "not found" in str(caught.value)


def test_file_that_is_not_utf8_names_the_file(tmp_path):
    path = tmp_path / "latin1.ini"
    path.write_bytes(MINIMAL.replace("s3cret", "s\xe9cret").encode("latin-1"))
    with pytest.raises(ConfigError) as caught:
        load_config(str(path))
    assert str(path) in str(caught.value)


def test_load_config_reads_the_file(tmp_path):
    path = tmp_path / "cx.ini"
    path.write_text(MINIMAL)
    assert load_config(str(path)).ami.username == "cx"


def test_config_path_from_the_environment():
    assert config_path({"CALLEXCHANGE_CONFIG": "/srv/cx.ini"}) == "/srv/cx.ini"
    assert config_path({}) == DEFAULT_PATH == "/etc/callexchange/callexchange.ini"


def test_the_secret_is_hidden_in_repr():
    config = config_from_text(MINIMAL)
    assert "s3cret" not in repr(config.ami)


# --- [policy] ----------------------------------------------------------------------------

def test_policy_defaults_allow_every_region_and_refuse_the_costly_types():
    policy = config_from_text(MINIMAL).policy
    assert policy.allowed_regions is None
    assert policy.allowed_types == {"fixed_line", "mobile", "fixed_line_or_mobile",
                                    "toll_free", "voip", "uan", "voicemail", "unknown"}


def test_policy_lists_are_normalised():
    policy = config_from_text(MINIMAL + "[policy]\nallowed_regions = gb, DE,\n  001\n"
                                        "allowed_types = Mobile, PREMIUM_RATE\n").policy
    assert policy.allowed_regions == ("GB", "DE", "001")
    assert policy.allowed_types == {"mobile", "premium_rate"}
    every = config_from_text(MINIMAL + "[policy]\nallowed_types = *\n").policy.allowed_types
    assert every == set(NUMBER_TYPES) and "premium_rate" in every


@pytest.mark.parametrize("line, problem", [
    ("allowed_regions = GBR", "two-letter ISO regions"),
    ("allowed_regions = ,", "at least one region"),
    ("allowed_types = mobile, premium", "1 listed are none of them"),
    ("allowed_types = ", "at least one type"),
])
def test_bad_policy_values_name_their_line(line, problem):
    text = MINIMAL + "[policy]\n" + line + "\n"
    error = error_for(text)
    assert error.line == len(text.splitlines())
    assert problem in str(error)
