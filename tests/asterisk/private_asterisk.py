"""A private Asterisk for the real-PBX tests: its own config tree in a temp dir, AMI and
SIP on free loopback ports, the project's dialplan and AMI user installed as install.sh
installs them, the webhook hook with the venv's python.

    binary = find_asterisk()                     # $ASTERISK, PATH, or build.sh's prefix
    pbx = PrivateAsterisk(binary, base, settings)   # renders tests/asterisk/etc/*.in
    pbx.start()                                  # returns once Asterisk is fully booted
    pbx.cli("core show channels")
    pbx.freeze(); pbx.thaw(); pbx.stop(); pbx.start()
    pbx.close()                                  # stops it (kill -9 if it must)

Asterisk runs as the test's user, in the foreground (-f) as our child, in a session of
its own, with CALLEXCHANGE_CONFIG in its environment so that the hook finds the test
config. Nothing listens beyond 127.0.0.1.
"""

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
TEMPLATES = HERE / "etc"
DIALPLAN = REPO / "asterisk" / "extensions_callexchange.conf"
MANAGER_USER = REPO / "asterisk" / "manager_callexchange.conf"
HOOK = REPO / "agi-bin" / "callexchange-webhook.agi"
# Where ../shared/asterisk/build.sh installs (the CI's and this machine's Asterisk).
BUILD_PREFIX = Path("/opt/asterisk-22.10.1")
HOW_TO_RUN = "ASTERISK=/path/to/asterisk ./run-tests tests/asterisk"


class AsteriskError(Exception):
    """Asterisk did not start, stop or answer as expected; the message carries its log."""


def find_asterisk():
    """The asterisk binary to test: $ASTERISK, else `asterisk` on PATH, else the one
    build.sh installs. None when there is none."""
    given = os.environ.get("ASTERISK")
    if given:
        return given
    found = shutil.which("asterisk")
    if found:
        return found
    built = BUILD_PREFIX / "sbin" / "asterisk"
    return str(built) if os.access(str(built), os.X_OK) else None


def layout_of(binary):
    """(modules dir, data dir, sbin dir) of an installed Asterisk, from its binary's
    prefix: build.sh's and a source install's <prefix>/lib/asterisk/modules, a distro's
    /usr/lib/<arch>/asterisk/modules; $ASTERISK_MODULES overrides."""
    sbin = Path(binary).resolve().parent
    prefix = sbin.parent
    candidates = [os.environ.get("ASTERISK_MODULES")] if os.environ.get("ASTERISK_MODULES") else []
    candidates += [prefix / "lib" / "asterisk" / "modules",
                   prefix / "lib64" / "asterisk" / "modules"]
    candidates += sorted((prefix / "lib").glob("*-linux-gnu/asterisk/modules"))
    modules = next((Path(c) for c in candidates if c and (Path(c) / "chan_pjsip.so").exists()),
                   None)
    if modules is None:
        raise AsteriskError("no Asterisk modules (chan_pjsip.so) found beside %s; set "
                            "ASTERISK_MODULES to the modules directory" % binary)
    data = prefix / "var" / "lib" / "asterisk"
    if prefix == Path("/usr") or not data.exists():
        data = Path("/var/lib/asterisk")
    return modules, data, sbin


def free_port(kind=socket.SOCK_STREAM):
    """A loopback port nothing is bound to right now (TCP or, with SOCK_DGRAM, UDP)."""
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def free_udp_range(size):
    """The first of `size` consecutive loopback UDP ports that are free right now."""
    for _ in range(50):
        start = free_port(socket.SOCK_DGRAM) & ~1
        if start + size >= 65000:
            continue
        probes = []
        try:
            for port in range(start, start + size):
                probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                probes.append(probe)
                probe.bind(("127.0.0.1", port))
            return start
        except OSError:
            continue
        finally:
            for probe in probes:
                probe.close()
    raise AsteriskError("no %d consecutive free UDP ports on 127.0.0.1" % size)


def render(template, values):
    """@NAME@ placeholders of a template file filled in; every one must be given."""
    text = Path(template).read_text(encoding="utf-8")
    for name, value in values.items():
        text = text.replace("@%s@" % name, str(value))
    leftover = sorted({word for word in text.split("@")[1::2]
                       if word.isupper() and word.replace("_", "").isalnum()})
    if leftover:
        raise ValueError("%s: no value for %s" % (template, ", ".join(leftover)))
    return text


def hook_with_interpreter(python, lib_dir, agi_dir):
    """Install the webhook hook as install.sh does: the checkout's script with the venv's
    python (`-S` kept) as its interpreter, in an app tree whose lib/ is the checkout's
    (the hook finds lib/ beside its own directory). Returns the agi-bin directory."""
    app = Path(agi_dir).parent
    (app / "agi-bin").mkdir(parents=True, exist_ok=True)
    if not (app / "lib").exists():
        (app / "lib").symlink_to(lib_dir)
    first, rest = HOOK.read_text(encoding="utf-8").split("\n", 1)
    flags = first.split("python3", 1)[1] if "python3" in first else ""
    target = app / "agi-bin" / HOOK.name
    target.write_text("#!%s%s\n%s" % (python, flags, rest), encoding="utf-8")
    target.chmod(0o755)
    return app / "agi-bin"


class PrivateAsterisk:
    """One private Asterisk. `settings` is a dict of the template values that are the
    test session's choice (ports, users, ring times, the loop agents, ...); see
    conftest.py. `env` is added to Asterisk's environment (CALLEXCHANGE_CONFIG)."""

    def __init__(self, binary, base, settings, env=None):
        self.binary = str(binary)
        self.base = Path(base)
        self.run = self.base / "pbx"
        self.etc = self.run / "etc"
        self.settings = dict(settings)
        self.env = dict(env or {})
        self.process = None
        self.started_at = None
        modules, data, sbin = layout_of(self.binary)
        for sub in ("etc", "var/cache", "var/lib", "var/spool", "var/run", "var/log"):
            (self.run / sub).mkdir(parents=True, exist_ok=True)
        self.settings.update(RUN=self.run, MODULES=modules, DATA=data, SBIN=sbin)
        self.conf = self.etc / "asterisk.conf"
        self._write_tree()

    # --- the config tree ----------------------------------------------------------------

    def _write_tree(self):
        values = self.settings
        for template in sorted(TEMPLATES.iterdir()):
            name = template.name
            target = self.etc / (name[:-3] if name.endswith(".in") else name)
            if name.endswith(".in"):
                target.write_text(render(template, values), encoding="utf-8")
            else:
                shutil.copy(template, target)
        # The project's files, as install.sh installs them: the dialplan unchanged, the AMI
        # user with its name and secret filled in.
        shutil.copy(DIALPLAN, self.etc / DIALPLAN.name)
        (self.etc / MANAGER_USER.name).write_text(render(MANAGER_USER, {
            "AMI_USERNAME": values["AMI_USERNAME"], "AMI_SECRET": values["AMI_SECRET"]}))

    def reload_dialplan(self):
        """Copy the checkout's dialplan in again and `dialplan reload`."""
        shutil.copy(DIALPLAN, self.etc / DIALPLAN.name)
        self.cli("dialplan reload")

    # --- running ------------------------------------------------------------------------

    @property
    def pid(self):
        return self.process.pid if self.process else None

    def start(self, timeout=60.0):
        """Start Asterisk and wait until it is fully booted (and AMI accepts a TCP
        connection). Raises AsteriskError with the log's tail if it does not come up."""
        if self.running():
            return self
        env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
               "LANG": "C.UTF-8", "HOME": str(self.run)}
        env.update(self.env)
        log = open(self.run / "var" / "log" / "console.log", "ab")
        try:
            self.process = subprocess.Popen(
                [self.binary, "-C", str(self.conf), "-f", "-n"], cwd=str(self.run),
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env,
                start_new_session=True)
        finally:
            log.close()
        self.started_at = time.monotonic()
        deadline = time.monotonic() + timeout
        control = self.run / "var" / "run" / "asterisk.ctl"
        while not control.exists():
            self._check_alive("at start")
            if time.monotonic() > deadline:
                raise AsteriskError("no control socket %s after %ss\n%s"
                                    % (control, timeout, self.log_tail()))
            time.sleep(0.05)
        out = self.cli("core waitfullybooted", timeout=max(1.0, deadline - time.monotonic()))
        if "fully booted" not in out.lower():
            raise AsteriskError("core waitfullybooted said %r\n%s" % (out, self.log_tail()))
        self._wait_port(self.settings["AMI_PORT"], deadline)
        return self

    def _wait_port(self, port, deadline):
        while True:
            with socket.socket() as probe:
                probe.settimeout(0.5)
                if probe.connect_ex(("127.0.0.1", int(port))) == 0:
                    return
            self._check_alive("before AMI listened")
            if time.monotonic() > deadline:
                raise AsteriskError("AMI is not listening on %s\n%s" % (port, self.log_tail()))
            time.sleep(0.05)

    def _check_alive(self, when):
        if self.process is not None and self.process.poll() is not None:
            code = self.process.returncode
            self.process = None
            raise AsteriskError("Asterisk exited with %s %s\n%s" % (code, when, self.log_tail()))

    def running(self):
        return self.process is not None and self.process.poll() is None

    def cli(self, command, timeout=15.0):
        """`asterisk -rx COMMAND` against this instance; its output (str)."""
        result = subprocess.run([self.binary, "-C", str(self.conf), "-rx", command],
                                capture_output=True, text=True, timeout=timeout,
                                stdin=subprocess.DEVNULL)
        return result.stdout + result.stderr

    def stop(self, timeout=20.0):
        """`core stop now`, then SIGTERM, then SIGKILL: Asterisk is gone when this returns.
        A frozen Asterisk is thawed first."""
        if self.process is None:
            return
        process = self.process
        if process.poll() is None:
            self.thaw()
            try:
                self.cli("core stop now", timeout=5)
            except subprocess.TimeoutExpired:
                pass
            for sig, wait in ((None, timeout), (signal.SIGTERM, 5), (signal.SIGKILL, 5)):
                if sig is not None and process.poll() is None:
                    try:
                        os.killpg(process.pid, sig)
                    except ProcessLookupError:
                        pass
                try:
                    process.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        # AGI scripts and whatever else ran in Asterisk's session die with it.
        _kill_session(process.pid)
        self.process = None

    def freeze(self):
        """SIGSTOP: Asterisk's sockets stay open (the kernel still accepts TCP connections
        into the listen queue) but nothing answers."""
        os.kill(self.process.pid, signal.SIGSTOP)

    def thaw(self):
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGCONT)

    def close(self):
        self.stop()

    # --- diagnostics --------------------------------------------------------------------

    def log_path(self, name="messages.log"):
        return self.run / "var" / "log" / name

    def log_tail(self, name="messages.log", size=6000):
        """The end of one of Asterisk's logs (messages.log, full.log, console.log)."""
        text = ""
        for candidate in (name, "console.log"):
            path = self.log_path(candidate)
            if path.exists():
                data = path.read_bytes()[-size:].decode("utf-8", "replace")
                text += "--- %s ---\n%s\n" % (path, data)
        return text


def _kill_session(session):
    """SIGKILL what is left of a process session (our own Asterisk's, by its id)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[3]) == session:
            try:
                os.kill(int(entry), signal.SIGKILL)
            except ProcessLookupError:
                pass


def processes_with_argument(argument):
    """Pids of live processes with `argument` as one of their command-line words: the
    webhook deliverers the hook started for one test config (their last word)."""
    found = []
    wanted = os.fsencode(str(argument))
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open("/proc/%s/cmdline" % entry, "rb") as handle:
                words = handle.read().split(b"\0")
        except OSError:
            continue
        if wanted in words:
            found.append(int(entry))
    return found


def kill_processes_with_argument(argument, timeout=5.0):
    """SIGTERM, then SIGKILL, the processes `processes_with_argument` finds; returns them."""
    pids = processes_with_argument(argument)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and processes_with_argument(argument):
        time.sleep(0.05)
    for pid in processes_with_argument(argument):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return pids
