"""Asterisk's side of AGI, played by the sandbox: run the dialplan hook as Asterisk would.

`run_hook` starts the hook script (`agi-bin/callexchange-webhook.agi` by default) over
pipes, writes the `agi_*` environment, and answers each `GET (FULL) VARIABLE` from a dict,
until the hook exits. The sandbox's call player uses it for each call's connect and hangup,
so a sandbox call goes through the same hook, spool and deliverer as a real one; the
tests use it to drive the hook exactly as Asterisk does.
"""

import os
import select
import subprocess
import sys
import time

DEFAULT_HOOK = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))), "agi-bin", "callexchange-webhook.agi")
HOOK_TIMEOUT = 10.0


class HookRun:
    """What one run of the hook came to: `returncode`, `commands` (the AGI lines it
    sent), `elapsed` (seconds from start to exit), `stderr` (text)."""

    def __init__(self, returncode, commands, elapsed, stderr):
        self.returncode = returncode
        self.commands = commands
        self.elapsed = elapsed
        self.stderr = stderr

    def __repr__(self):
        return "<HookRun rc=%s %.1f ms %d commands>" % (self.returncode, self.elapsed * 1000,
                                                          len(self.commands))


def agi_environment(event, uniqueid, channel="PJSIP/2001-00000001", context="callexchange-hooks",
                    extension="s", callerid="unknown"):
    """The `agi_*` environment Asterisk sends the hook (AGI(callexchange-webhook.agi,<event>))."""
    return [
        ("agi_request", "callexchange-webhook.agi"), ("agi_channel", channel),
        ("agi_language", "en"), ("agi_type", channel.partition("/")[0]),
        ("agi_uniqueid", uniqueid), ("agi_version", "20.5.0"),
        ("agi_callerid", callerid), ("agi_calleridname", "unknown"),
        ("agi_callingpres", "0"), ("agi_callingani2", "0"), ("agi_callington", "0"),
        ("agi_callingtns", "0"), ("agi_dnid", "unknown"), ("agi_rdnis", "unknown"),
        ("agi_context", context), ("agi_extension", extension), ("agi_priority", "1"),
        ("agi_enhanced", "0.0"), ("agi_accountcode", ""), ("agi_threadid", "140000000000"),
        ("agi_arg_1", event),
    ]


def _substitute(expression, variables):
    """${NAME} replaced by its value ("" when unset), as Asterisk substitutes."""
    out, rest = [], expression
    while "${" in rest:
        before, _, after = rest.partition("${")
        name, closed, rest = after.partition("}")
        out.append(before)
        if closed:
            out.append(str(variables.get(name) or ""))
    out.append(rest)
    return "".join(out)


def agi_reply(command, variables):
    """Asterisk's reply line (bytes) to one AGI command line from the hook: GET VARIABLE,
    GET FULL VARIABLE (variables substituted) and VERBOSE; 510 for anything else."""
    words = command.strip().split(" ", 3)
    if (len(words) == 4 and [w.upper() for w in words[:3]] == ["GET", "FULL", "VARIABLE"]):
        expression = words[3].strip()
        if len(expression) >= 2 and expression[0] == expression[-1] == '"':
            expression = expression[1:-1]
        return b"200 result=1 (%s)\n" % _substitute(expression, variables).encode("utf-8")
    words = command.strip().split(" ", 2)
    if len(words) >= 3 and words[0].upper() == "GET" and words[1].upper() == "VARIABLE":
        name = words[2].strip().strip('"')
        if name in variables and variables[name] is not None:
            return b"200 result=1 (%s)\n" % str(variables[name]).encode("utf-8")
        return b"200 result=0\n"
    if words and words[0].upper() == "VERBOSE":
        return b"200 result=1\n"
    return b"510 Invalid or unknown command\n"


def run_hook(event, variables, hook=None, environ=None, environment=None, python=None,
             timeout=HOOK_TIMEOUT, reply=agi_reply, started=None):
    """Run the hook script as Asterisk would for `AGI(callexchange-webhook.agi,<event>)`:
    write the AGI environment, answer each command from `variables` ({name: value}; a
    missing name is an unset variable), until the hook exits. Returns a HookRun.

    `environ`: the process environment (CALLEXCHANGE_CONFIG...); `environment`: the AGI
    (name, value) pairs, by default `agi_environment(event, <CX_UNIQUEID>)`; `reply(line,
    variables)`: Asterisk's answer to a command line; `started(process)`: called with the
    Popen once the hook runs. `python`: the interpreter (default: this one); "" runs the
    script itself, through its #! line, as Asterisk does."""
    hook = hook or DEFAULT_HOOK
    command = [hook, event] if python == "" else [python or sys.executable, hook, event]
    if environment is None:
        environment = agi_environment(event, variables.get("CX_UNIQUEID") or "0.0")
    started_at = time.monotonic()
    process = subprocess.Popen(command, stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env=dict(os.environ if environ is None else environ))
    commands = []
    deadline = started_at + timeout
    try:
        if started is not None:
            started(process)
        head = b"".join(b"%s: %s\n" % (k.encode(), v.encode()) for k, v in environment)
        try:
            process.stdin.write(head + b"\n")
            process.stdin.flush()
        except BrokenPipeError:
            pass
        buffer = b""
        out = process.stdout.fileno()
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise subprocess.TimeoutExpired(hook, timeout)
            ready, _, _ = select.select([out], [], [], remaining)
            if not ready:
                continue
            data = os.read(out, 65536)
            if not data:
                break
            buffer += data
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                command = line.decode("utf-8", "replace")
                commands.append(command)
                try:
                    process.stdin.write(reply(command, variables))
                    process.stdin.flush()
                except BrokenPipeError:
                    pass
        returncode = process.wait(max(0.0, deadline - time.monotonic()))
    except BaseException:
        process.kill()
        process.wait()
        raise
    finally:
        elapsed = time.monotonic() - started_at
        for stream in (process.stdin, process.stdout):
            try:
                stream.close()
            except OSError:
                pass
    stderr = process.stderr.read().decode("utf-8", "replace")
    process.stderr.close()
    return HookRun(returncode, commands, elapsed, stderr)
