"""config.py's lenient mode, the one loader's mode for the dialplan hook: a file that can be
read always gives a Config (defaults where a value is bad or missing), and every problem
is reported with its file and line, exactly as the strict mode reports the first one."""

import pytest

from callexchange.config import ConfigError, config_from_text, load_config, SCHEMA

GOOD = """\
[ami]
username = cx
secret = s3cret

[ani]
default = 12125550100

[webhook]
url = https://crm.example.test/hook
extended = yes

[recordings]
base_url = https://pbx.example.test/wav-files

[state]
dir = /srv/cx-state
"""


def strict_error(text):
    with pytest.raises(ConfigError) as caught:
        config_from_text(text, "/etc/cx.ini")
    return str(caught.value)


def test_a_valid_file_loads_the_same_either_way_with_no_problems():
    strict = config_from_text(GOOD, "/etc/cx.ini")
    lenient = config_from_text(GOOD, "/etc/cx.ini", lenient=True)
    assert lenient.problems == () and strict.problems == ()
    for section, keys in SCHEMA.items():
        for key in keys:
            assert getattr(getattr(lenient, section), key) == \
                getattr(getattr(strict, section), key), (section, key)


@pytest.mark.parametrize("edit, line", [
    ("\nbogus = 1\n", 18),                     # an unknown key (in [state], the last section)
    ("\n[nonsense]\nx = 1\n", 18),             # an unknown section
    ("\nsecret <value>\n", 18),               # no '=' (an admin mid-edit)
    ("\n[webhook\nurl = http://elsewhere\n", 18),  # a broken header: its lines are skipped
    ("\n[ami]\nhost = other\n", 18),           # a section given twice: the second is skipped
])
def test_a_broken_file_gives_what_can_be_read_and_each_problem_with_its_line(edit, line):
    text = GOOD + edit
    config = config_from_text(text, "/etc/cx.ini", lenient=True)
    assert [str(p) for p in config.problems] == [strict_error(text)]
    assert config.problems[0].line == line
    assert config.webhook.url == "https://crm.example.test/hook"
    assert config.webhook.extended is True
    assert config.state.dir == "/srv/cx-state"
    assert config.recordings.base_url == "https://pbx.example.test/wav-files"
    assert config.ami.host == "127.0.0.1"


def test_bad_and_missing_values_get_their_defaults_and_every_problem_is_listed():
    text = GOOD.replace("extended = yes", "extended = perhaps").replace(
        "dir = /srv/cx-state", "dir = relative/path").replace("username = cx\n", "")
    config = config_from_text(text, "/etc/cx.ini", lenient=True)
    messages = [p.message for p in config.problems]
    assert any("[ami] username is required" in m for m in messages)
    assert any("[webhook] extended must be yes or no" in m for m in messages)
    assert any("[state] dir must be an absolute path" in m for m in messages)
    assert len(messages) == 3
    assert config.ami.username is None           # required: no default to give
    assert config.webhook.extended is False      # the default
    assert config.state.dir == "/var/lib/callexchange"
    assert config.webhook.url == "https://crm.example.test/hook"
    # Strict mode stops at the first of them, as before.
    assert strict_error(text) == str(config.problems[0])


def test_a_secret_is_never_quoted_by_a_lenient_problem():
    text = GOOD.replace("[webhook]\n", "[webhook]\nsecret = not-base64-Zq9!\n")
    config = config_from_text(text, "/etc/cx.ini", lenient=True)
    assert [p.line for p in config.problems] == [9]
    assert "not-base64-Zq9!" not in str(config.problems[0])
    assert config.webhook.secret == ""


def test_load_config_lenient_still_refuses_a_file_it_cannot_read(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load_config(str(tmp_path / "missing.ini"), lenient=True)
    assert "not found" in str(caught.value)
    path = tmp_path / "cx.ini"
    path.write_text(GOOD + "\nbogus = 1\n")
    config = load_config(str(path), lenient=True)
    assert config.path == str(path) and len(config.problems) == 1
    with pytest.raises(ConfigError):
        load_config(str(path))
