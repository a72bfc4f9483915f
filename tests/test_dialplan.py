"""asterisk/: the dialplan and the AMI user (SPEC §6).

Two checks of the dialplan's syntax:

* asterisklint (PyPI, runs on Python 3.11), when installed: `$ASTERISKLINT` or on PATH.
  Skipped without it, failed when CI=true (CI installs it in a venv of its own: it is no
  requirement of the gateway). It does not know func_pitchshift, so missing functions
  are checked apart: PITCH_SHIFT must be the only one it does not know;
* a checker of our own, always: every line parses, brackets and quotes balance, every
  application and function is a known one, every Goto/GotoIf label, Gosub, U() and
  hangup handler target exists, subroutines Return, and call data never reaches AGI().

Then what the dialplan must do: caller ID from CX_ANI, PITCH_SHIFT(rx) on the agent's
channel, MixMonitor with the §5 name (the same the sandbox writes) once both legs are up,
the connect hook on answer in both modes, a hangup for every call (handler and `failed`
paths), no pattern that matches a special extension such as `h`, the agent dialled with
the gateway's agent_channel in dialer mode, the talk time stamped at the connect and at
the end. The real Asterisk runs it in tests/asterisk/.
"""

import os
import re
import shutil
import subprocess
import time

import pytest

from callexchange.calls import endpoint
from callexchange.sandbox import calls as sandbox_calls

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIALPLAN = os.path.join(ROOT, "asterisk", "extensions_callexchange.conf")
MANAGER = os.path.join(ROOT, "asterisk", "manager_callexchange.conf")

APPLICATIONS = {"AGI", "Busy", "Congestion", "Dial", "Gosub", "Goto", "GotoIf", "Hangup",
                "MixMonitor", "NoOp", "Return", "Set"}
FUNCTIONS = {"CALLERID", "CHANNEL", "CUT", "DB", "DB_DELETE", "IF", "LOCAL",
             "MASTER_CHANNEL", "PITCH_SHIFT", "STRFTIME", "STRREPLACE"}
# Asterisk's special extensions: a pattern matching one of them runs for it (`h` when the
# channel hangs up, `failed` for a failed Originate...).
SPECIAL_EXTENSIONS = ("a", "e", "h", "i", "o", "s", "t", "T", "failed", "fax", "talk")
HOOK = "callexchange-webhook.agi"


# --- a small parser of extensions.conf --------------------------------------------------

class Line:
    def __init__(self, number, context, exten, priority, label, app, args):
        self.number = number
        self.context = context
        self.exten = exten
        self.priority = priority
        self.label = label
        self.app = app
        self.args = args

    def __repr__(self):
        return "%d: %s,%s,%s %s(%s)" % (self.number, self.context, self.exten, self.priority,
                                        self.app, self.args)


_EXTEN = re.compile(r"^(exten|same)\s*=>\s*(.*)$")


def split_top(text, separator=","):
    """Split at separators outside (), {}, [] and quotes."""
    parts, depth, quoted, current = [], 0, False, ""
    for char in text:
        if char == '"':
            quoted = not quoted
        elif not quoted and char in "([{":
            depth += 1
        elif not quoted and char in ")]}":
            depth -= 1
        if char == separator and depth == 0 and not quoted:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return parts


def check_balanced(text):
    pairs = {")": "(", "]": "[", "}": "{"}
    stack = []
    for char in text:
        if char in "([{":
            stack.append(char)
        elif char in pairs:
            assert stack and stack.pop() == pairs[char], "unbalanced %r in %r" % (char, text)
    assert not stack, "unclosed %r in %r" % (stack, text)
    assert text.count('"') % 2 == 0, "unbalanced quotes in %r" % text


def parse_dialplan(path):
    contexts = {}
    context = exten = None
    with open(path, encoding="utf-8") as handle:
        for number, raw in enumerate(handle, 1):
            text = raw.split(";", 1)[0].strip()
            if not text:
                continue
            if text.startswith("["):
                assert text.endswith("]"), "line %d: bad context header" % number
                context = text[1:-1]
                assert re.fullmatch(r"[a-z0-9-]+", context), context
                assert context not in contexts, "context %s twice" % context
                contexts[context] = []
                exten = None
                continue
            match = _EXTEN.match(text)
            assert match, "line %d: not exten/same: %r" % (number, text)
            assert context is not None, "line %d: outside a context" % number
            check_balanced(match.group(2))
            fields = split_top(match.group(2))
            if match.group(1) == "exten":
                exten, priority = fields[0].strip(), fields[1].strip()
                application = ",".join(fields[2:])
                assert priority == "1", "line %d: an extension starts at priority 1" % number
            else:
                assert exten is not None, "line %d: same => without exten" % number
                priority = fields[0].strip()
                application = ",".join(fields[1:])
            label = None
            label_match = re.fullmatch(r"(\d+|n)(?:\((\w[\w-]*)\))?", priority)
            assert label_match, "line %d: bad priority %r" % (number, priority)
            label = label_match.group(2)
            app_match = re.fullmatch(r"(\w+)\((.*)\)", application.strip())
            assert app_match, "line %d: bad application %r" % (number, application)
            contexts[context].append(Line(number, context, exten, priority, label,
                                          app_match.group(1), app_match.group(2)))
    return contexts


@pytest.fixture(scope="module")
def dialplan():
    return parse_dialplan(DIALPLAN)


def lines(dialplan, app=None):
    return [line for body in dialplan.values() for line in body
            if app is None or line.app == app]


# --- syntax and references ------------------------------------------------------------------

def test_every_application_and_function_is_known(dialplan):
    for line in lines(dialplan):
        assert line.app in APPLICATIONS, line
        used = re.findall(r"\$\{([A-Z_]+)\(", line.args)
        if line.app == "Set":
            used += re.findall(r"^([A-Z_]+)\(", line.args)
        for function in used:
            assert function in FUNCTIONS, (function, line)


def test_variable_references_are_well_formed(dialplan):
    for line in lines(dialplan):
        check_balanced(line.args)
        assert "${}" not in line.args and "$[]" not in line.args, line
        for name in re.findall(r"\$\{([^}(:]*)[}(:]", line.args):
            assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name), (name, line)


def test_every_goto_target_exists(dialplan):
    for line in lines(dialplan):
        if line.app not in ("Goto", "GotoIf"):
            continue
        targets = line.args.split("?", 1)[1].split(":") if line.app == "GotoIf" else [line.args]
        for target in targets:
            parts = [p.strip() for p in target.split(",")]
            if len(parts) == 1:
                labels = {l.label for l in dialplan[line.context] if l.exten == line.exten}
                assert parts[0] in labels, (target, line)
            else:
                assert parts[0] in dialplan, (target, line)


def subroutine_targets(dialplan):
    """(context, line) of every Gosub, U() and hangup handler."""
    targets = []
    for line in lines(dialplan):
        if line.app == "Gosub":
            targets.append((line.args.split(",")[0], line))
        for match in re.finditer(r"\bU\(([\w-]+)", line.args):
            targets.append((match.group(1), line))
        match = re.search(r"hangup_handler_push\)=([\w-]+),s,1", line.args)
        if match:
            targets.append((match.group(1), line))
    return targets


def test_every_subroutine_exists_starts_at_s_and_returns(dialplan):
    targets = subroutine_targets(dialplan)
    assert {t for t, _ in targets} == {"callexchange-recording-name", "callexchange-record",
                                       "callexchange-lead-answered", "callexchange-first-leg",
                                       "callexchange-agent-answered", "callexchange-hangup"}
    # Pushed by the gateway's agent-first Originate (endpoint.py), not by the dialplan.
    targets.append((endpoint.AGENT_UNANSWERED_HANDLER, None))
    for context, line in targets:
        assert context in dialplan, (context, line)
        body = dialplan[context]
        assert {l.exten for l in body} == {"s"}, context
        assert body[-1].app == "Return", context


def test_every_context_is_used(dialplan):
    used = {t for t, _ in subroutine_targets(dialplan)}
    # The two entry points are used by the gateway's Originate ([dial] defaults of config.py).
    from callexchange.config import SCHEMA

    used |= {SCHEMA["dial"]["outbound_context"][1], SCHEMA["dial"]["agent_context"][1],
             endpoint.AGENT_UNANSWERED_HANDLER}
    assert "@%s" % SCHEMA["dial"]["outbound_context"][1] in SCHEMA["dial"]["lead_channel"][1]
    assert set(dialplan) == used


def test_no_call_data_reaches_the_hook_arguments(dialplan):
    agi = lines(dialplan, "AGI")
    assert agi
    for line in agi:
        assert line.args in ("%s,connect" % HOOK, "%s,hangup" % HOOK), line


# --- what the dialplan does ---------------------------------------------------------------

def test_the_lead_sees_the_chosen_ani(dialplan):
    assert any(l.args == "CALLERID(num)=${CX_ANI}" for l in dialplan["callexchange-outbound"])


def test_pitch_shift_is_on_the_agents_channel_in_both_modes(dialplan):
    outbound = [l.args for l in dialplan["callexchange-outbound"]]
    agent = [l.args for l in dialplan["callexchange-agent-answered"]]
    assert "PITCH_SHIFT(rx)=${CX_PITCH}" in outbound  # agent first: the originated channel
    assert "PITCH_SHIFT(rx)=${CX_PITCH}" in agent     # dialer: the dialled agent


def test_the_trunk_is_a_global_with_a_default(dialplan):
    dial = [l for l in dialplan["callexchange-outbound"] if l.app == "Dial"][0]
    assert dial.args.startswith("${STRREPLACE(CX_DIAL_TEMPLATE,{number},${EXTEN})}")
    assert any("PJSIP/{number}@trunk:${CX_TRUNK}" in l.args
               for l in dialplan["callexchange-outbound"])

def test_dialer_mode_rings_the_agent_with_the_gateways_agent_channel_and_ring_time(dialplan):
    # D1: [dial] agent_channel (CX_AGENT_DIAL), PJSIP/<exten> only for an older gateway;
    # D7: [dial] ring_timeout (CX_AGENT_RING).
    agent = dialplan["callexchange-agent"]
    assert any(l.args == "CX_AGENT=${IF($[\"${CX_AGENT_DIAL}\" = \"\"]?PJSIP/${EXTEN}:"
               "${CX_AGENT_DIAL})}" for l in agent)
    assert any(l.args == "CX_RING=${IF($[\"${CX_AGENT_RING}\" = \"\"]?30:${CX_AGENT_RING})}"
               for l in agent)
    [dial] = [l for l in agent if l.app == "Dial"]
    assert dial.args == "${CX_AGENT},${CX_RING},U(callexchange-agent-answered)"


def asterisk_pattern(pattern):
    """A regex for an Asterisk extension pattern (_X. style), or the literal name."""
    if not pattern.startswith("_"):
        return re.escape(pattern)
    out, i = "", 1
    while i < len(pattern):
        c = pattern[i]
        if c == "[":
            end = pattern.index("]", i)
            out += "[%s]" % re.escape(pattern[i + 1:end]).replace("\\-", "-")
            i = end
        else:
            out += {"X": "[0-9]", "Z": "[1-9]", "N": "[2-9]", ".": ".+", "!": ".*"}.get(
                c, re.escape(c))
        i += 1
    return out


def test_the_pattern_helper_reads_asterisk_patterns():
    assert re.fullmatch(asterisk_pattern("_[0-9A-Za-z#*+]!"), "h")
    assert re.fullmatch(asterisk_pattern("_X!"), "12127773456")
    assert not re.fullmatch(asterisk_pattern("_X!"), "h")
    assert re.fullmatch(asterisk_pattern("_28XX"), "2801")


def test_no_pattern_matches_a_special_extension(dialplan):
    # D2: `_[0-9A-Za-z#*+]!` in callexchange-agent matched `h`, so every hangup there ran
    # the agent's entry again and pushed a second hangup handler (a second webhook).
    for context, body in dialplan.items():
        for exten in {l.exten for l in body if l.exten.startswith("_")}:
            for special in SPECIAL_EXTENSIONS:
                assert not re.fullmatch(asterisk_pattern(exten), special), (context, exten, special)
    agent = {l.exten for l in dialplan["callexchange-agent"]}
    assert re.fullmatch(asterisk_pattern("_[0-9#*+]!"), "2001") and "_[0-9#*+]!" in agent


def test_talk_time_is_stamped_at_the_connect_and_at_the_end(dialplan):
    # D4: from the second leg's answer (before the connect hook, on the channel that owns
    # the hangup handler) to the hangup handler's start; not ANSWEREDTIME.
    stamp = "MASTER_CHANNEL(CX_CONNECTED_AT)=${STRFTIME(,,%s.%3q)}"
    for context in ("callexchange-lead-answered", "callexchange-agent-answered"):
        body = [l.args for l in dialplan[context]]
        assert body.index(stamp) < body.index("%s,connect" % HOOK), context
    handler = [l.args for l in dialplan["callexchange-hangup"]]
    assert handler[0] == "CX_ENDED_AT=${STRFTIME(,,%s.%3q)}"


def test_the_failed_legs_status_reaches_the_failed_extensions(dialplan):
    # D5/D6: REASON of the `failed` path says 0 for a lead that did not answer (dialer)
    # and for a busy agent (agent first); the leg's channel leaves DIALSTATUS/cause.
    key = "callexchange-leg/${CX_UNIQUEID}"
    outbound = [l.args for l in dialplan["callexchange-outbound"]]
    assert "DB(%s)=${DIALSTATUS}/${CX_LEG_CAUSE}" % key in outbound
    unanswered = [l.args for l in dialplan[endpoint.AGENT_UNANSWERED_HANDLER]]
    assert "DB(%s)=/${HANGUPCAUSE}" % key in unanswered
    assert [l.args for l in dialplan["callexchange-first-leg"]][0] == \
        "LOCAL(leg)=${DB_DELETE(%s)}" % key
    for context in ("callexchange-outbound", "callexchange-agent"):
        failed = [l for l in dialplan[context] if l.exten == "failed"]
        apps = [(l.app, l.args) for l in failed]
        assert apps.index(("Gosub", "callexchange-first-leg,s,1")) < \
            apps.index(("AGI", "%s,hangup" % HOOK)), context


def test_connect_fires_on_answer_in_both_modes(dialplan):
    outbound_dial = [l for l in dialplan["callexchange-outbound"] if l.app == "Dial"][0]
    agent_dial = [l for l in dialplan["callexchange-agent"] if l.app == "Dial"][0]
    assert "U(callexchange-lead-answered)" in outbound_dial.args
    assert "U(callexchange-agent-answered)" in agent_dial.args
    for context in ("callexchange-lead-answered", "callexchange-agent-answered"):
        assert "%s,connect" % HOOK in [l.args for l in dialplan[context] if l.app == "AGI"]
    # Agent first connects when the lead answers; dialer mode when the agent does.
    lead = dialplan["callexchange-lead-answered"]
    skip = [l for l in lead if l.app == "GotoIf" and "dialer" in l.args][0]
    assert lead.index(skip) < [l.app for l in lead].index("AGI")


def test_every_call_gets_a_hangup(dialplan):
    for context in ("callexchange-outbound", "callexchange-agent"):
        failed = [l for l in dialplan[context] if l.exten == "failed"]
        assert "%s,hangup" % HOOK in [l.args for l in failed], context
        pushes = [l for l in dialplan[context] if "hangup_handler_push" in l.args]
        assert len(pushes) == 1, context
    assert [l.args for l in dialplan["callexchange-hangup"]
            if l.app == "AGI"] == ["%s,hangup" % HOOK]
    # Agent first: the handler goes on the agent's channel only (not on a dialer-mode
    # Local ;2 half, whose Local ;1 in callexchange-agent has its own).
    outbound = dialplan["callexchange-outbound"]
    push = [l for l in outbound if "hangup_handler_push" in l.args][0]
    skip = [l for l in outbound if l.app == "GotoIf" and "dialer" in l.args][0]
    assert outbound.index(skip) < outbound.index(push)


def test_recording_name_is_the_freepbx_name_the_sandbox_writes(dialplan):
    name = [l.args for l in dialplan["callexchange-recording-name"] if "CX_RECORDING" in l.args]
    assert name == ["__CX_RECORDING=${STRFTIME(${epoch},,%Y/%m/%d)}/out-${CX_DESTINATION}-"
                    "${CX_EXTENSION}-${STRFTIME(${epoch},,%Y%m%d-%H%M%S)}-${CX_UNIQUEID}.wav"]
    # The same template, filled in by hand, is what the sandbox names its WAVs.
    uniqueid = "1720039062.22191"
    moment = time.localtime(1720039062)
    expected = "%s/out-12127773456-2001-%s-%s.wav" % (
        time.strftime("%Y/%m/%d", moment), time.strftime("%Y%m%d-%H%M%S", moment), uniqueid)
    assert sandbox_calls.recording_path(uniqueid, "12127773456", "2001") == expected
    mix = [l.args for l in lines(dialplan, "MixMonitor")]
    assert mix == ["${CX_RECORDING_ROOT}/${CX_RECORDING},${ARG1}", "${CX_RECORDING},${ARG1}"]


def test_recording_starts_once_both_legs_are_up(dialplan):
    # D8: agent first on the lead's answer (the connect); dialer mode on the Local ;1, which
    # writes only while bridged to the agent (b), started before the agent's Dial.
    lead = [(l.app, l.args) for l in dialplan["callexchange-lead-answered"]]
    assert lead.index(("Gosub", "callexchange-record,s,1()")) > 0  # after the dialer skip
    agent = [(l.app, l.args) for l in dialplan["callexchange-agent"]]
    record = agent.index(("Gosub", "callexchange-record,s,1(b)"))
    assert record < [app for app, _ in agent].index("Dial")


def test_manager_user_has_least_privilege():
    values = {}
    sections = []
    with open(MANAGER, encoding="utf-8") as handle:
        for raw in handle:
            text = raw.split(";", 1)[0].strip()
            if text.startswith("["):
                sections.append(text)
            elif text:
                key, _, value = text.partition("=")
                values.setdefault(key.strip(), []).append(value.strip())
    assert sections == ["[@AMI_USERNAME@]"]  # filled in by install.sh
    assert values["read"] == ["call"]
    assert values["write"] == ["originate,message"]
    assert values["deny"] == ["0.0.0.0/0.0.0.0"]
    assert values["permit"] == ["127.0.0.1/255.255.255.255"]
    assert values["secret"] == ["@AMI_SECRET@"]  # filled in by install.sh


# --- asterisklint ---------------------------------------------------------------------------

def asterisklint():
    path = os.environ.get("ASTERISKLINT") or shutil.which("asterisklint")
    if not path:
        if os.environ.get("CI") == "true":
            pytest.fail("asterisklint is not installed (CI must install it: .ci/run)")
        pytest.skip("asterisklint not installed (pip install asterisklint; or set "
                    "ASTERISKLINT to its path)")
    return path


def lint(tmp_path, command, ignore=""):
    (tmp_path / "extensions.conf").write_text(
        "[general]\nstatic=yes\nwriteprotect=no\n\n[globals]\n\n"
        "#include extensions_callexchange.conf\n")
    shutil.copy(DIALPLAN, tmp_path / "extensions_callexchange.conf")
    return subprocess.run([asterisklint(), command, "extensions.conf"], cwd=str(tmp_path),
                          capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, ALINT_IGNORE=ignore))


def test_asterisklint_finds_nothing(tmp_path):
    # Missing functions are checked below: asterisklint does not know func_pitchshift.
    result = lint(tmp_path, "dialplan-check", ignore="E_FUNC_MISSING")
    assert result.returncode == 0 and result.stderr == "" and result.stdout == "", \
        result.stdout + result.stderr


def test_asterisklint_knows_every_function_but_pitch_shift(tmp_path):
    result = lint(tmp_path, "modules-show")
    assert "load => res_agi.so" in result.stdout, result.stdout + result.stderr
    for complaint in result.stderr.splitlines():  # (it exits 1 for the warning)
        assert "'PITCH_SHIFT' does not exist" in complaint, complaint
    unknown = result.stdout.split("unknown functions were seen:", 1)[1] \
        if "unknown functions were seen:" in result.stdout else ""
    assert set(re.findall(r"[A-Z_]{3,}", unknown)) <= {"PITCH_SHIFT"}
