"""Asking a local Asterisk what it has loaded, as its admin would: `asterisk -rx COMMAND`.

The gateway's AMI user keeps its least privileges (it may Originate and MessageSend,
nothing else), so `callexchange check` learns what Asterisk loaded (dialplan contexts,
channel types, modules, the AMI user's privileges, its AGI directory and user) from
Asterisk's console, which only root and Asterisk's own user may open. `AsteriskConsole`
runs one command with a deadline; the parsers are pure functions over its text.
"""

import os
import shutil
import subprocess

DEFAULT_BINARIES = ("/usr/sbin/asterisk", "/usr/local/sbin/asterisk")


class ConsoleUnavailable(Exception):
    """Asterisk's console cannot be asked: `reason` says why, in a few words."""

    def __init__(self, reason):
        super().__init__(reason)
        self.reason = reason


def find_binary(given=None):
    """The asterisk binary: `given`, else `asterisk` on PATH, else /usr/sbin or
    /usr/local/sbin. None when there is none."""
    if given:
        return given
    found = shutil.which("asterisk")
    if found:
        return found
    return next((path for path in DEFAULT_BINARIES if os.access(path, os.X_OK)), None)


class AsteriskConsole:
    """`asterisk [-C CONFIG] -rx COMMAND` against the running Asterisk. `config_file`:
    its asterisk.conf, for an Asterisk started with -C (the tests' private one)."""

    def __init__(self, binary, config_file=None, timeout=10.0):
        self.binary = binary
        self.config_file = config_file
        self.timeout = timeout

    def run(self, command):
        """The command's output (text). Raises ConsoleUnavailable when Asterisk is not
        running, refuses this user, or does not answer in time."""
        argv = [self.binary]
        if self.config_file:
            argv += ["-C", self.config_file]
        argv += ["-rx", command]
        try:
            result = subprocess.run(argv, capture_output=True, text=True, errors="replace",
                                    timeout=self.timeout, stdin=subprocess.DEVNULL)
        except FileNotFoundError:
            raise ConsoleUnavailable("no asterisk binary at %s" % self.binary) from None
        except PermissionError:
            raise ConsoleUnavailable("%s may not be run by this user" % self.binary) from None
        except subprocess.TimeoutExpired:
            raise ConsoleUnavailable("asterisk -rx did not answer within %gs"
                                     % self.timeout) from None
        output = result.stdout + result.stderr
        if "Unable to connect to remote asterisk" in output:
            raise ConsoleUnavailable(
                "its console refused this user or Asterisk is not running (asterisk -rx: "
                "%s)" % output.strip().splitlines()[0])
        return output


def parse_settings(text):
    """`core show settings` as {label: value}.

    >>> parse_settings("  AGI Scripts directory:       /var/lib/asterisk/agi-bin\\n"
    ...                "  User name and group:         asterisk/asterisk\\n")
    {'AGI Scripts directory': '/var/lib/asterisk/agi-bin', 'User name and group': 'asterisk/asterisk'}
    """
    settings = {}
    for line in text.splitlines():
        label, colon, value = line.strip().partition(":")
        if colon and label and not label.startswith(("*", "-")):
            settings.setdefault(label.strip(), value.strip())
    return settings


def parse_contexts(text):
    """The context names of `dialplan show`.

    >>> sorted(parse_contexts("[ Context 'callexchange-outbound' created by 'pbx_config' ]\\n"
    ...                       "  '_X!' =>  1. NoOp()\\n[ Context 'default' created by 'x' ]\\n"))
    ['callexchange-outbound', 'default']
    """
    names = set()
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("[ Context '"):
            names.add(line[len("[ Context '"):].split("'", 1)[0])
    return names


def parse_channel_types(text):
    """The channel technologies of `core show channeltypes` (their names as Asterisk
    spells them: PJSIP, Local, ...).

    >>> sorted(parse_channel_types("Type  Description\\n----- -----\\n"
    ...     "PJSIP  PJSIP Channel Driver  yes\\nLocal  Local Proxy  yes\\n----------\\n"
    ...     "2 channel drivers registered.\\n"))
    ['Local', 'PJSIP']
    """
    types, table = set(), False
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("-"):
            if table and set(stripped) == {"-"}:
                break  # the rule under the table
            table = True  # the rule under the column titles
            continue
        if table and stripped:
            types.add(stripped.split()[0])
    return types


def module_running(text, module):
    """Whether `module show like MODULE` says `module` is Running.

    >>> module_running("res_pjsip_messaging.so  PJSIP Messaging Support  0  Running  core",
    ...                "res_pjsip_messaging.so")
    True
    """
    for line in text.splitlines():
        words = line.split()
        if words and words[0] == module:
            return "Running" in words
    return False


def parse_manager_user(text):
    """`manager show user NAME` as {'read perm': ..., 'write perm': ...}; {} when
    Asterisk has no such user.

    >>> parse_manager_user("   username: callexchange\\n  read perm: call\\n"
    ...                    " write perm: originate,message\\n")["write perm"]
    'originate,message'
    """
    fields = {}
    for line in text.splitlines():
        label, colon, value = line.strip().partition(":")
        if colon and label in ("username", "read perm", "write perm"):
            fields[label] = value.strip()
    return fields if "username" in fields else {}
