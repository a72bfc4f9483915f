"""The sandbox PBX plays whole calls (SPEC §9): the hooks, the recording, as Asterisk would.

After an accepted Originate, a Sandbox's `CallPlayer` plays the outcome chosen for the
destination in a thread, the way the dialplan of asterisk/extensions_callexchange.conf
would:

* answered (talking N seconds): after a short ring (the Sandbox's `ring_seconds`), the
  connect hook runs; a real WAV (8 kHz, 16-bit mono, a quiet 400 Hz tone) is written while
  the call lasts under `[recordings] root`/YYYY/MM/DD/ with the FreePBX name
  `out-<dst>-<src>-<YYYYMMDD>-<HHMMSS>-<uniqueid>.wav` (the time is the call's, from its
  uniqueid, as the dialplan names it); then the hangup hook runs with DIALSTATUS=ANSWER
  and ANSWEREDTIME = N rounded to whole seconds;
* busy, noanswer, failed, congestion: the Originate fails, so Asterisk runs the `failed`
  extension: the hangup hook runs with REASON = the OriginateResponse reason code, which
  makes duration 0 and the matching disposition.

The hooks are the real hook script run over pipes by `agi_peer.run_hook`, so a sandbox
call goes through the same hook, spool and deliverer as a real one.
"""

import array
import os
import subprocess
import sys
import threading
import time
import wave
from types import MappingProxyType

from callexchange.sandbox.agi_peer import DEFAULT_HOOK, agi_environment, run_hook

DEFAULT_RING_SECONDS = 0.2
# Audio written for one call at most (9.6 MB); the hangup still reports the full talk time.
MAX_RECORDING_SECONDS = 600
SAMPLE_RATE = 8000

# OriginateResponse Reason per failed outcome (as sandbox.OUTCOMES): the REASON variable
# Asterisk sets on the `failed` extension's channel.
_FAILED_REASON = MappingProxyType({"busy": "5", "noanswer": "3", "failed": "0",
                                   "congestion": "8"})


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


class CallPlayer:
    """The calls one Sandbox is playing, each in a thread of its own. Nothing is shared
    between players: each Sandbox owns one.

    `play` starts a call; `hang_up_all` ends every call in progress at once (a call that
    was answered still runs its hangup hook, with the time it talked) and waits for them;
    `wait` waits for the calls to end by themselves."""

    def __init__(self):
        self._lock = threading.Lock()
        self._threads = []
        self._hang_up = threading.Event()

    def play(self, config, action, outcome, hook=None, ring_seconds=DEFAULT_RING_SECONDS):
        """Play an accepted Originate's call (see the module docstring) with the gateway
        `config` (recordings root, the hook's CALLEXCHANGE_CONFIG). `action` is the
        Originate (a wire.Message with the call's `uniqueid`). Returns the thread."""
        with self._lock:
            hang_up = self._hang_up
            thread = threading.Thread(
                target=_play, args=(config, action, outcome, hook or DEFAULT_HOOK,
                                    ring_seconds, hang_up),
                daemon=True, name="sandbox-call-%s" % action.uniqueid)
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)
        thread.start()
        return thread

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
        """Hang up every call in progress now and wait for their hooks. Calls started
        later play normally. True if all ended within `timeout`."""
        with self._lock:
            self._hang_up.set()
            self._hang_up = threading.Event()
        return self.wait(timeout)


def _play(config, action, outcome, hook, ring, stop):
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
