"""The sandbox PBX plays whole calls (SPEC §9): the hooks, the recording, as Asterisk would.

After an accepted Originate, `play_call` plays the outcome chosen for the destination in a
thread, the way the dialplan of asterisk/extensions_callexchange.conf would:

* answered (talking N seconds): after a short ring (`ring_seconds`, 0.2 s), the connect
  hook runs; a real WAV (8 kHz, 16-bit mono, a quiet 400 Hz tone) is written while the
  call lasts under `[recordings] root`/YYYY/MM/DD/ with the FreePBX name
  `out-<dst>-<src>-<YYYYMMDD>-<HHMMSS>-<uniqueid>.wav` (the time is the call's, from its
  uniqueid, as the dialplan names it); then the hangup hook runs with DIALSTATUS=ANSWER
  and ANSWEREDTIME = N rounded to whole seconds;
* busy, noanswer, failed, congestion: the Originate fails, so Asterisk runs the `failed`
  extension: the hangup hook runs with REASON = the OriginateResponse reason code, which
  makes duration 0 and the matching disposition.

The hooks are the real hook script (`agi-bin/callexchange-webhook.agi`, or `--hook PATH`)
run with this Python, over pipes, with this module playing Asterisk's side of AGI
(`run_hook`): the environment, then an answer to each `GET (FULL) VARIABLE`. So a sandbox call
goes through the same hook, spool and deliverer as a real one, and the tests use
`run_hook` to drive the hook as Asterisk does.
"""

import array
import os
import select
import subprocess
import sys
import threading
import time
import wave
import weakref

DEFAULT_HOOK = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))), "agi-bin", "callexchange-webhook.agi")
DEFAULT_RING_SECONDS = 0.2
# Audio written for one call at most (9.6 MB); the hangup still reports the full talk time.
MAX_RECORDING_SECONDS = 600
SAMPLE_RATE = 8000
HOOK_TIMEOUT = 10.0

# OriginateResponse Reason per failed outcome (as sandbox.OUTCOMES): the REASON variable
# Asterisk sets on the `failed` extension's channel.
_FAILED_REASON = {"busy": "5", "noanswer": "3", "failed": "0", "congestion": "8"}

_calls = weakref.WeakKeyDictionary()
_calls_lock = threading.Lock()


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


def call_variables(action):
    """The CX_* channel variables of an Originate (its `Variable: __CX_X=value` headers)."""
    variables = {}
    for header in action.get_all("Variable"):
        for assignment in header.split(","):
            name, equals, value = assignment.partition("=")
            if equals:
                variables[name.strip().lstrip("_")] = value
    return variables


def recording_path(uniqueid, destination, extension, localtime=time.localtime):
    """The recording's path under the root, as the dialplan names it: the call's time is
    the unix seconds that start its uniqueid.

    >>> recording_path("1720039062.22191", "12127773456", "2001",
    ...                localtime=time.gmtime)
    '2024/07/03/out-12127773456-2001-20240703-203742-1720039062.22191.wav'
    """
    try:
        seconds = int(uniqueid.split(".", 1)[0])
    except ValueError:
        seconds = int(time.time())
    moment = localtime(seconds)
    return "%s/out-%s-%s-%s-%s.wav" % (time.strftime("%Y/%m/%d", moment), destination,
                                      extension, time.strftime("%Y%m%d-%H%M%S", moment),
                                      uniqueid)


def _tone_chunk(seconds=0.1, frequency=400, amplitude=1000):
    import math

    count = int(SAMPLE_RATE * seconds)
    step = 2 * math.pi * frequency / SAMPLE_RATE
    samples = array.array("h", (int(amplitude * math.sin(step * i)) for i in range(count)))
    if sys.byteorder == "big":
        samples.byteswap()
    return samples.tobytes()


def record_call(path, seconds, stop=None, chunk_seconds=0.1):
    """Write a WAV (8 kHz, 16-bit, mono) at `path` while the call lasts: `seconds` of
    audio, written as it is "spoken" (the header is completed when the file is closed, as
    MixMonitor does), at most MAX_RECORDING_SECONDS of it. Returns the seconds talked
    (less than `seconds` if `stop` was set)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    chunk = _tone_chunk(chunk_seconds)
    chunk_frames = len(chunk) // 2
    total = int(round(min(seconds, MAX_RECORDING_SECONDS) * SAMPLE_RATE))
    written = 0
    started = time.monotonic()
    with wave.open(path, "wb") as recording:
        recording.setnchannels(1)
        recording.setsampwidth(2)
        recording.setframerate(SAMPLE_RATE)
        while True:
            elapsed = time.monotonic() - started
            due = total if elapsed >= seconds else min(
                total, int((elapsed + chunk_seconds) * SAMPLE_RATE))
            while written < due:
                count = min(chunk_frames, due - written)
                recording.writeframes(chunk[:count * 2])
                written += count
            if elapsed >= seconds:
                break
            pause = min(chunk_seconds, seconds - elapsed)
            if stop is None:
                time.sleep(pause)
            elif stop.wait(pause):
                break
    return min(seconds, time.monotonic() - started)


# --- the sandbox's side -------------------------------------------------------------------

def add_arguments(parser):
    """The sandbox's command-line options for playing calls."""
    parser.add_argument("--hook", metavar="PATH",
                        help="the webhook hook to run for each call's connect and hangup "
                             "(default: %s, run with this Python)" % DEFAULT_HOOK)
    parser.add_argument("--ring", metavar="SECONDS", type=float, default=DEFAULT_RING_SECONDS,
                        help="how long a sandbox call rings before it is answered or fails "
                             "(default: %g)" % DEFAULT_RING_SECONDS)


def configure(sandbox, args):
    """Apply the parsed options of `add_arguments` to a Sandbox."""
    sandbox.hook_path = getattr(args, "hook", None)
    sandbox.ring_seconds = getattr(args, "ring", DEFAULT_RING_SECONDS)


def play_call(sandbox, action, outcome):
    """Play an accepted Originate's call in a thread (see the module docstring). Does
    nothing for a Sandbox without a config (a bare AMI test double)."""
    config = getattr(sandbox, "config", None)
    if config is None:
        return None
    thread = threading.Thread(target=_play, args=(sandbox, config, action, outcome),
                              daemon=True, name="sandbox-call-%s" % action.uniqueid)
    with _calls_lock:
        _calls.setdefault(sandbox, []).append(thread)
    thread.start()
    return thread


def wait_for_calls(sandbox, timeout=10.0):
    """Wait until every call the sandbox is playing has hung up. True if all did."""
    deadline = time.monotonic() + timeout
    with _calls_lock:
        threads = list(_calls.get(sandbox, ()))
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    return not any(thread.is_alive() for thread in threads)


def _play(sandbox, config, action, outcome):
    stop = getattr(sandbox, "_stopping", None) or threading.Event()
    hook = getattr(sandbox, "hook_path", None) or DEFAULT_HOOK
    ring = getattr(sandbox, "ring_seconds", DEFAULT_RING_SECONDS)
    variables = call_variables(action)
    variables.setdefault("CX_UNIQUEID", action.uniqueid)
    uniqueid = variables["CX_UNIQUEID"]
    destination = variables.get("CX_DESTINATION") or action.get("Exten") or ""
    extension = variables.get("CX_EXTENSION") or ""
    environ = dict(os.environ)
    if getattr(config, "path", None):
        environ["CALLEXCHANGE_CONFIG"] = str(config.path)
    channel = action.get("Channel") or "PJSIP/unknown"
    context = action.get("Context") or "callexchange-outbound"

    def hook_run(event, extra, environment):
        if not os.path.exists(hook):
            sys.stderr.write("sandbox: no hook at %s; %s of %s not run\n"
                             % (hook, event, uniqueid))
            return
        try:
            run = run_hook(event, dict(variables, **extra), hook=hook, environ=environ,
                           environment=environment)
        except (OSError, subprocess.SubprocessError) as error:
            sys.stderr.write("sandbox: hook %s of %s failed: %s\n" % (event, uniqueid, error))
            return
        if run.returncode != 0 or run.stderr.strip():
            sys.stderr.write("sandbox: hook %s of %s: rc=%s %s\n"
                             % (event, uniqueid, run.returncode, run.stderr.strip()))

    stop.wait(ring)
    if outcome.kind != "answered":
        hook_run("hangup", {"REASON": _FAILED_REASON.get(outcome.kind, "0")},
                 agi_environment("hangup", uniqueid, channel="OutgoingSpoolFailed",
                                 context=context, extension="failed"))
        return
    relative = recording_path(uniqueid, destination, extension)
    variables["CX_RECORDING"] = relative
    hook_run("connect", {}, agi_environment("connect", uniqueid, channel=channel,
                                             context="callexchange-lead-answered"))
    talked = outcome.seconds
    try:
        talked = record_call(os.path.join(config.recordings.root, relative), outcome.seconds,
                             stop)
    except OSError as error:
        sys.stderr.write("sandbox: cannot write the recording of %s: %s\n" % (uniqueid, error))
        stop.wait(outcome.seconds)
    hook_run("hangup", {"DIALSTATUS": "ANSWER", "ANSWEREDTIME": str(int(talked + 0.5)),
                        "HANGUPCAUSE": "16"},
             agi_environment("hangup", uniqueid, channel=channel, context="callexchange-hangup"))
