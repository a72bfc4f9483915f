"""The sandbox PBX plays whole calls (SPEC §9): the AMI events, the hooks and the recording,
as Asterisk and the project's dialplan would.

A Sandbox's `CallPlayer` plays each accepted Originate in a thread of its own, step by
step as `timeline.plan_call` laid it out: it waits while phones ring (cut short when
the call is hung up), hands each AMI event to the Sandbox to broadcast, stamps the
moments the dialplan stamps (CX_CONNECTED_AT, CX_ENDED_AT), runs the real hook
(`agi-bin/callexchange-webhook.agi`, over pipes by `agi_peer.run_hook`) with the
channel variables the dialplan would give it, and while the call talks writes a real
WAV (8 kHz, 16-bit mono, a quiet 400 Hz tone) under `[recordings] root`/YYYY/MM/DD/ with
the FreePBX name `out-<dst>-<src>-<YYYYMMDD>-<HHMMSS>-<uniqueid>.wav` (the time is the
call's, from its uniqueid, as the dialplan names it). So a sandbox call goes through the
same hook, spool and deliverer as a real one. Without a gateway config (a bare AMI test
double) the events are played, the hooks and recordings are not.
"""

import array
import os
import subprocess
import sys
import threading
import time
import wave

from callexchange.sandbox.agi_peer import DEFAULT_HOOK, agi_environment, run_hook

DEFAULT_RING_SECONDS = 0.2
# Audio written for one call at most (9.6 MB); the hangup still reports the full talk time.
MAX_RECORDING_SECONDS = 600
SAMPLE_RATE = 8000


def split_variable_header(value):
    """One Originate `Variable:` header as Asterisk reads it: split on commas outside
    double quotes, quotes removed (AST_STANDARD_APP_ARGS), each part `name=value`.

    >>> split_variable_header('A=1,B=2')
    [('A', '1'), ('B', '2')]
    >>> split_variable_header('CHANNEL(hangup_handler_push)="ctx,s,1"')
    [('CHANNEL(hangup_handler_push)', 'ctx,s,1')]
    """
    parts, current, quoted = [], [], False
    for char in value:
        if char == '"':
            quoted = not quoted
        elif char == "," and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    pairs = []
    for part in parts:
        name, equals, text = part.partition("=")
        if equals and name.strip():
            pairs.append((name.strip(), text))
    return pairs


def call_variables(action):
    """The channel variables of an Originate (its `Variable` headers), names without the
    inheritance underscores: {'CX_UNIQUEID': ..., 'CX_MODE': ...}."""
    variables = {}
    for header in action.get_all("Variable"):
        for name, value in split_variable_header(header):
            variables[name.lstrip("_")] = value
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


def _substituted(value, state):
    """'${NAME}' replaced by the call's state (stamps, the recording, the talk time)."""
    if isinstance(value, str) and value.startswith("${") and value.endswith("}"):
        return str(state.get(value[2:-1], ""))
    return value


class CallPlayer:
    """The calls one Sandbox is playing, each in a thread of its own. Nothing is shared
    between players: each Sandbox owns one.

    `play` starts a call; `hang_up_all` ends every call in progress at once (the rest of
    each call plays without waiting: its hangup events and hooks still come, an answered
    call's with the time it talked) and waits for them; `wait` waits for the calls to end
    by themselves; `in_use` says whether a uniqueid is a channel of a call in progress."""

    def __init__(self):
        self._lock = threading.Lock()
        self._threads = []
        self._uniqueids = {}
        self._hang_up = threading.Event()

    def play(self, steps, uniqueid, emit, variables=None, config=None, hook=None,
             result=None):
        """Play `steps` (timeline.plan_call) in a thread. `emit(pairs)` broadcasts an AMI
        event; `variables`: the call's channel variables (`call_variables`), which the
        hooks read; `config`: the gateway Config (the hook's CALLEXCHANGE_CONFIG, the
        recordings root), None to play the events only; `result(answered)` learns the
        first leg's fate (a synchronous Originate, whose OriginateResponse is then not
        sent)."""
        with self._lock:
            hang_up = self._hang_up
            call = _Call(steps, uniqueid, emit, named_recording(variables or {}), config,
                         hook or DEFAULT_HOOK, result, hang_up)
            thread = threading.Thread(target=self._run, args=(call,), daemon=True,
                                      name="sandbox-call-%s" % uniqueid)
            self._threads = [t for t in self._threads if t.is_alive()]
            self._uniqueids[uniqueid] = self._uniqueids.get(uniqueid, 0) + 1
            # Started before it is listed: wait() may join any listed thread at once.
            thread.start()
            self._threads.append(thread)
        return thread

    def _run(self, call):
        try:
            call.run()
        finally:
            with self._lock:
                left = self._uniqueids.get(call.uniqueid, 1) - 1
                if left:
                    self._uniqueids[call.uniqueid] = left
                else:
                    self._uniqueids.pop(call.uniqueid, None)

    def in_use(self, uniqueid):
        """True while a call whose first channel has this uniqueid is being played."""
        with self._lock:
            return uniqueid in self._uniqueids

    def in_progress(self):
        """How many calls are being played right now."""
        with self._lock:
            return sum(1 for thread in self._threads if thread.is_alive())

    def wait(self, timeout=10.0):
        """Wait until every call has hung up by itself. True if all did in time."""
        deadline = time.monotonic() + timeout
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return not any(thread.is_alive() for thread in threads)

    def hang_up_all(self, timeout=10.0):
        """Hang up every call in progress now and wait for them. Calls started later
        play normally. True if all ended within `timeout`."""
        with self._lock:
            self._hang_up.set()
            self._hang_up = threading.Event()
        return self.wait(timeout)


class _Call:
    """One call being played (see CallPlayer.play)."""

    def __init__(self, steps, uniqueid, emit, variables, config, hook, result, hang_up):
        self.steps = steps
        self.uniqueid = uniqueid
        self.emit = emit
        self.config = config
        self.hook = hook
        self.result = result
        self.hang_up = hang_up
        # The channel variables as the hooks read them; stamps and the talk time join.
        self.state = dict(variables)

    def run(self):
        for step in self.steps:
            try:
                getattr(self, "on_" + step.kind)(*step.args)
            except Exception as error:  # a sandbox bug must not end the call quietly
                sys.stderr.write("sandbox: call %s, step %s failed: %r\n"
                                 % (self.uniqueid, step.kind, error))

    def on_wait(self, seconds):
        self.hang_up.wait(max(0.0, seconds))

    def on_event(self, pairs):
        self.emit(pairs)

    def on_response(self, pairs):
        if self.result is None:
            self.emit(pairs)

    def on_result(self, answered):
        if self.result is not None:
            self.result(answered)

    def on_stamp(self, name):
        self.state[name] = "%.3f" % time.time()

    def on_talk(self, seconds, recording):
        recording = _substituted(recording, self.state)
        talked = seconds
        if self.config is not None and recording:
            try:
                talked = record_call(os.path.join(self.config.recordings.root, recording),
                                     seconds, self.hang_up)
            except OSError as error:
                sys.stderr.write("sandbox: cannot write the recording of %s: %s\n"
                                 % (self.uniqueid, error))
                started = time.monotonic()
                self.hang_up.wait(seconds)
                talked = min(seconds, time.monotonic() - started)
        else:
            started = time.monotonic()
            self.hang_up.wait(seconds)
            talked = min(seconds, time.monotonic() - started)
        self.state["ANSWEREDTIME"] = int(talked + 0.5)

    def on_hook(self, event, extra, environment):
        if self.config is None:
            return
        variables = dict(self.state)
        variables.update((name, _substituted(value, self.state))
                         for name, value in extra.items())
        uniqueid = variables.get("CX_UNIQUEID") or self.uniqueid
        if not os.path.exists(self.hook):
            sys.stderr.write("sandbox: no hook at %s; %s of %s not run\n"
                             % (self.hook, event, uniqueid))
            return
        environ = dict(os.environ)
        if getattr(self.config, "path", None):
            environ["CALLEXCHANGE_CONFIG"] = str(self.config.path)
        try:
            run = run_hook(event, variables, hook=self.hook, environ=environ,
                           environment=agi_environment(event, uniqueid, **environment))
        except (OSError, subprocess.SubprocessError) as error:
            sys.stderr.write("sandbox: hook %s of %s failed: %s\n" % (event, uniqueid, error))
            return
        if run.returncode != 0 or run.stderr.strip():
            sys.stderr.write("sandbox: hook %s of %s: rc=%s %s\n"
                             % (event, uniqueid, run.returncode, run.stderr.strip()))


def named_recording(variables):
    """The call's channel variables as the dialplan has them once it named the recording
    (CX_RECORDING, from the call's uniqueid, destination and extension)."""
    variables = dict(variables)
    if variables.get("CX_UNIQUEID"):
        variables["CX_RECORDING"] = recording_path(variables["CX_UNIQUEID"],
                                                   variables.get("CX_DESTINATION", ""),
                                                   variables.get("CX_EXTENSION", ""))
    return variables
