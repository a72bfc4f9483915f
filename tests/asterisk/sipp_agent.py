"""SIPp (Debian package sip-tester) as an agent's softphone: it registers with the private
Asterisk as a PJSIP endpoint, answers calls after a ring, streams a 350 Hz tone (its
"voice") until hung up, and takes SIP MESSAGEs, which it logs (-trace_msg).

    agent = SippAgent(base, sip_port=5070, extension="2001", password="...")
    agent.start()           # registers, then runs the answering scenario
    agent.messages()        # the SIP MESSAGE requests it received, parsed
    agent.stop()

Scenarios: tests/asterisk/sipp/*.xml.in (rendered into the run dir).
"""

import math
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from private_asterisk import free_port, free_udp_range, render

SCENARIOS = Path(__file__).resolve().parent / "sipp"
TONE_HZ = 350.0
RATE = 8000


def find_sipp():
    return shutil.which("sipp")


def ulaw_byte(sample):
    """G.711 mu-law of one signed 16-bit sample.

    >>> [ulaw_byte(s) for s in (0, 1000, -1000, 32767)]
    [255, 206, 78, 128]
    """
    sign = 0x80 if sample < 0 else 0
    magnitude = min(-sample if sample < 0 else sample, 32635) + 0x84
    exponent = min(7, (magnitude >> 7).bit_length() - 1)
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    return ~(sign | (exponent << 4) | mantissa) & 0xFF


def tone_ulaw(frequency=TONE_HZ, seconds=1.0, amplitude=8000):
    """Raw 8 kHz mu-law of a sine; whole seconds of a whole-Hz tone loop seamlessly."""
    count = int(RATE * seconds)
    return bytes(ulaw_byte(int(amplitude * math.sin(2 * math.pi * frequency * n / RATE)))
                 for n in range(count))


class SippError(Exception):
    pass


class SippAgent:
    """Agent `extension`'s softphone on 127.0.0.1:<free port>, registered with the PBX at
    127.0.0.1:`sip_port` with `password`; rings `ring_ms` before answering."""

    def __init__(self, base, sip_port, extension, password, ring_ms=1500, binary=None):
        self.binary = binary or find_sipp()
        self.dir = Path(base) / ("sipp-%s" % extension)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.sip_port = int(sip_port)
        self.extension = extension
        self.port = None
        self.process = None
        self.tone = self.dir / "tone-350hz.ulaw"
        self.tone.write_bytes(tone_ulaw())
        values = {"EXTENSION": extension, "PASSWORD": password, "RING_MS": int(ring_ms),
                  "TONE_FILE": self.tone}
        for template in SCENARIOS.glob("*.xml.in"):
            (self.dir / template.name[:-3]).write_text(render(template, values))
        self.message_log = self.dir / "messages.log"

    def _command(self, scenario, *extra):
        return [self.binary, "127.0.0.1:%d" % self.sip_port, "-sf", str(self.dir / scenario),
                "-i", "127.0.0.1", "-p", str(self.port), "-bind_local",
                "-mi", "127.0.0.1", "-mp", str(self.media_port),
                "-cp", str(free_port(socket.SOCK_DGRAM)),
                "-nostdin", "-nd", "-aa"] + list(extra)

    def register(self, timeout=10.0):
        """One REGISTER exchange (digest auth); raises SippError unless it got a 200."""
        result = subprocess.run(self._command("register.xml", "-m", "1", "-timeout",
                                              "%ds" % int(timeout), "-timeout_error"),
                                cwd=str(self.dir), capture_output=True, text=True,
                                timeout=timeout + 5, stdin=subprocess.DEVNULL)
        if result.returncode != 0:
            raise SippError("SIPp could not register %s (exit %s):\n%s%s"
                            % (self.extension, result.returncode, result.stdout[-2000:],
                               result.stderr[-2000:]))

    def start(self):
        """Register, then answer calls (the agent scenario) until `stop`."""
        if self.port is None:
            self.port = free_port(socket.SOCK_DGRAM)
            self.media_port = free_udp_range(200)
        self.register()
        output = open(self.dir / "sipp.out", "ab")
        try:
            self.process = subprocess.Popen(
                self._command("agent.xml", "-trace_msg", "-message_file",
                              str(self.message_log), "-trace_err", "-error_file",
                              str(self.dir / "errors.log")),
                cwd=str(self.dir), stdin=subprocess.DEVNULL, stdout=output, stderr=output,
                start_new_session=True)
        finally:
            output.close()
        deadline = time.monotonic() + 5
        while not self.message_log.exists() and time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SippError("SIPp exited at start: %s" % self.output())
            time.sleep(0.05)
        return self

    def output(self):
        path = self.dir / "sipp.out"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def messages(self):
        """The SIP requests with method MESSAGE that SIPp received: a list of
        {"request": first line, "headers": {lower-case name: value}, "body": str}."""
        if not self.message_log.exists():
            return []
        found = []
        for block in self.message_log.read_text(errors="replace").split("\n----------"):
            if "message received" not in block:
                continue
            text = block.split("bytes :", 1)[-1].lstrip("\r\n")
            head, _, body = text.replace("\r\n", "\n").partition("\n\n")
            lines = head.split("\n")
            if not lines or not lines[0].startswith("MESSAGE "):
                continue
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            found.append({"request": lines[0], "headers": headers, "body": body.rstrip("\n")})
        return found

    def stop(self):
        if self.process is None:
            return
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(5)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.process.wait(5)
        self.process = None
