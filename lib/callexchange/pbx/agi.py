"""The Asterisk Gateway Interface (AGI), as the dialplan hook speaks it: small, deadline-bound.

Asterisk starts an AGI script with a pipe on its stdin and stdout. It first writes the
environment, `agi_<name>: <value>` lines ended by an empty line; then the script writes
one command per line and reads one result line per command, such as
`200 result=1 (1732700000.483920174622)` for `GET VARIABLE CX_UNIQUEID`. The hook asks
for all it needs at once (`get_variables`: one `GET FULL VARIABLE`), since every round
trip waits for both processes to be scheduled, which on a loaded PBX costs milliseconds.

Why not pyst2's `asterisk.agi` (measured against the faults below, see
docs/decisions.md): it has no deadline (a silent Asterisk hangs the script, and with it
the call, for ever); a `HANGUP` line, end of input in the middle of a command, or a 511
reply raise ValueError / AGIUnknownError; it writes the whole environment and every
result, call data included, to stderr; and importing it costs about 20 ms (pprint pulls in
dataclasses and inspect), almost half of the hook's 50 ms budget.

Layers, as in ami.py:

* pure parsing, tested with literals: `parse_environment` and `parse_result`;
* `AgiSession`: the two file descriptors under ONE deadline. End of input, silence past
  the deadline and unexpected replies all raise `AgiError`; `HANGUP` lines (Asterisk
  writes one when the channel hangs up while the script runs) are skipped.

Stdlib only and nothing slow to import: this module runs in the hook, once per event.

>>> parse_environment(["agi_request: callexchange-webhook.agi", "agi_arg_1: connect"])
{'agi_request': 'callexchange-webhook.agi', 'agi_arg_1': 'connect'}
>>> parse_result("200 result=1 (1732700000.483920174622)")
(200, '1', '1732700000.483920174622')
"""

import os
import select
import time

# The whole conversation with Asterisk: it answers a GET VARIABLE in well under a
# millisecond, so this only bounds a broken or wedged Asterisk.
DEFAULT_DEADLINE = 2.0
MAX_LINE = 16384
_NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_()")


class AgiError(Exception):
    """The AGI conversation failed: end of input, deadline, or an unexpected reply."""


def parse_environment(lines):
    """The AGI environment from its lines (without the final empty line): {name: value}.
    A line without `: ` is ignored, as Asterisk never sends one."""
    environment = {}
    for line in lines:
        name, separator, value = line.partition(":")
        if separator and name.strip():
            environment[name.strip()] = value.strip()
    return environment


def parse_result(line):
    """`200 result=1 (value)` -> (200, '1', 'value'); `200 result=0` -> (200, '0', '').

    The value is everything between the first ` (` after `result=` and the last `)`:
    variable values may themselves hold parentheses or spaces. Raises AgiError for a line
    that is not a result at all.
    """
    code, _, rest = line.strip().partition(" ")
    if len(code) != 3 or not code.isdigit():
        raise AgiError("not an AGI result line: %r" % line[:200])
    rest = rest.strip()
    if not rest.startswith("result="):
        return int(code), "", rest
    result, _, data = rest[len("result="):].partition(" ")
    data = data.strip()
    if data.startswith("(") and data.endswith(")"):
        data = data[1:-1]
    elif data.startswith("("):
        data = data[1:]
    return int(code), result, data


class AgiSession:
    """One AGI conversation over two file descriptors (default: stdin and stdout), every
    read under one deadline, `deadline` seconds from construction."""

    def __init__(self, read_fd=0, write_fd=1, deadline=DEFAULT_DEADLINE, clock=time.monotonic):
        self.read_fd = read_fd
        self.write_fd = write_fd
        self.clock = clock
        self.deadline = clock() + deadline
        self._buffer = b""
        self._eof = False

    def _read_line(self):
        while True:
            newline = self._buffer.find(b"\n")
            if newline >= 0:
                line, self._buffer = self._buffer[:newline], self._buffer[newline + 1:]
                return line.rstrip(b"\r").decode("utf-8", "replace")
            if self._eof:
                raise AgiError("Asterisk closed the AGI input")
            if len(self._buffer) > MAX_LINE:
                raise AgiError("AGI line longer than %d bytes" % MAX_LINE)
            remaining = self.deadline - self.clock()
            if remaining <= 0:
                raise AgiError("no answer from Asterisk within the AGI deadline")
            try:
                ready, _, _ = select.select([self.read_fd], [], [], remaining)
            except InterruptedError:  # pragma: no cover - PEP 475 retries, kept for clarity
                continue
            if not ready:
                continue
            data = os.read(self.read_fd, 4096)
            if not data:
                self._eof = True
            self._buffer += data

    def read_environment(self):
        """Read the `agi_*` lines up to the empty line. Raises AgiError."""
        lines = []
        while True:
            line = self._read_line()
            if not line.strip():
                return parse_environment(lines)
            lines.append(line)

    def command(self, text):
        """Send one command line; return (code, result, data) of its 200 reply.
        Raises AgiError for anything else (510 invalid, 511 dead channel, 520 usage)."""
        if any(c in text for c in "\r\n\0"):
            raise AgiError("an AGI command must be one line")
        data = (text + "\n").encode("utf-8")
        try:
            while data:
                data = data[os.write(self.write_fd, data):]
        except OSError as error:
            raise AgiError("cannot write to Asterisk: %s" % error.strerror) from None
        while True:
            line = self._read_line()
            if line.strip() == "HANGUP":
                # Asterisk's notice that the channel hung up: the reply still follows.
                continue
            if not line.strip():
                continue
            code, result, value = parse_result(line)
            if code == 520:
                # A usage reply runs over several lines, up to one starting with 520.
                while not self._read_line().startswith("520"):
                    pass
            if code != 200:
                raise AgiError("Asterisk answered %r to %r" % (line[:200], text.split(" ")[0]))
            return code, result, value

    def get_variable(self, name):
        """The value of a channel variable or function (`CX_UNIQUEID`, `CDR(billsec)`),
        '' when it is not set. Raises AgiError."""
        if not name or not set(name) <= _NAME_CHARS:
            raise ValueError("not a variable name: %r" % name)
        _, result, value = self.command("GET VARIABLE %s" % name)
        return value if result == "1" else ""

    def get_variables(self, names, separator="|"):
        """{name: value} of several variables in ONE round trip:
        `GET FULL VARIABLE "${A}|${B}|..."` (an expression of our constant names, no call
        data). When a value holds the separator, or Asterisk refuses the command, each is
        read with `get_variable` instead. Raises AgiError."""
        names = list(names)
        for name in names:
            if not name or not set(name) <= _NAME_CHARS:
                raise ValueError("not a variable name: %r" % name)
        expression = separator.join("${%s}" % name for name in names)
        try:
            _, result, value = self.command('GET FULL VARIABLE "%s"' % expression)
        except AgiError:
            if self._eof:
                raise
            result, value = "0", ""
        parts = value.split(separator) if result == "1" else []
        if len(parts) != len(names):
            return {name: self.get_variable(name) for name in names}
        return dict(zip(names, parts))

    def verbose(self, message, level=1):
        """Write `message` to Asterisk's verbose log (best effort: errors are ignored)."""
        text = message.replace('"', "'").replace("\\", "/")
        text = "".join(c if c >= " " else " " for c in text)
        try:
            self.command('VERBOSE "%s" %d' % (text, level))
        except AgiError:
            pass
