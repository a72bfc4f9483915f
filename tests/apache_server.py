"""A private Apache serving the CallExchange URLs on a loopback port, for tests and bench.

It renders apache/standalone.conf.in around apache/callexchange.conf.in (CGI through
mod_cgid) or apache/callexchange-wsgi.conf.in (mod_wsgi daemon mode), runs
`apache2 -f <conf> -DFOREGROUND` as a child process and stops it again::

    base = shared_tempdir("cx-test-")          # www-data must reach what the CGI reads
    with ApacheServer(base, config_path, recordings_root) as apache:
        requests.post(apache.url + "/api/v1/asteriskapi.pl", ...)
    # on failure: apache.error_log() for the assertion message

Apache will not run its workers as root, so when the tests run as root the CGI scripts
run as www-data. Everything the CGI touches must then be reachable by www-data: the app
tree (cgi-bin/, lib/, apache/), the venv, the config, the keys file, the state dir
(writable) and the recordings root. A checkout under a private directory (/root/...) is
not, so `app_tree()` then stages a copy of the app tree and of the venv (hard links where
the files are world-readable) into a world-readable temp dir. Test data belongs in a dir
from `shared_tempdir()`, not in pytest's tmp_path (/tmp/pytest-of-root is private).
ApacheServer checks all of this before it starts and says which path is out of reach.
"""

import os
import pwd
import grp
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
APACHE_TEMPLATES = REPO / "apache"
MODULES_DIR = Path("/usr/lib/apache2/modules")
WORKER_USER = "www-data"
APP_PARTS = ("cgi-bin", "lib", "apache", "docs")


class ApacheError(Exception):
    """Apache did not start or stop as expected; the message carries its error log."""


# --- is Apache here at all ------------------------------------------------------------

def find_apache():
    """Path of the apache2 binary, or None."""
    found = shutil.which("apache2") or shutil.which("httpd")
    if found:
        return found
    for candidate in ("/usr/sbin/apache2", "/usr/sbin/httpd"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def require_apache(mode="cgi"):
    """Skip the calling test when Apache (or, for mode "wsgi", mod_wsgi) is missing, on a
    developer's machine only: under CI (env CI set) a missing Apache is a failure."""
    import pytest

    binary = find_apache()
    module = MODULES_DIR / ("mod_wsgi.so" if mode == "wsgi" else "mod_cgid.so")
    if binary and module.exists():
        return binary
    what = "apache2" if not binary else str(module)
    package = "libapache2-mod-wsgi-py3" if mode == "wsgi" and binary else "apache2"
    reason = "%s is not installed (apt-get install %s)" % (what, package)
    if os.environ.get("CI"):
        pytest.fail("CI is set but " + reason, pytrace=False)
    pytest.skip(reason)


# --- who runs the CGI, and can it reach what it needs ---------------------------------

def worker_identity():
    """(user, group) that runs Apache's workers and CGI scripts: www-data when we are
    root (Apache refuses root workers), else ourselves (Apache cannot switch user)."""
    if os.geteuid() == 0:
        return WORKER_USER, grp.getgrgid(pwd.getpwnam(WORKER_USER).pw_gid).gr_name
    return pwd.getpwuid(os.geteuid()).pw_name, grp.getgrgid(os.getegid()).gr_name


def access_problems(readable=(), traversable=(), writable=(), executable=()):
    """What the worker user cannot do, as a list of "cannot read /x" strings.

    Only meaningful as root; otherwise the workers are us and the list is empty."""
    if os.geteuid() != 0:
        return []
    checks = ([("-r", p, "read") for p in readable]
              + [("-x", p, "traverse") for p in traversable]
              + [("-w", p, "write") for p in writable]
              + [("-x", p, "execute") for p in executable])
    if not checks:
        return []
    # One runuser for all checks: print the index of each failing one.
    script = "; ".join('test %s "${%d}" || echo %d' % (flag, i + 1, i)
                       for i, (flag, _, _) in enumerate(checks))
    result = subprocess.run(
        ["runuser", "-u", WORKER_USER, "--", "sh", "-c", script, "sh"]
        + [str(p) for _, p, _ in checks],
        capture_output=True, text=True, check=False)
    failed = [int(line) for line in result.stdout.split()]
    return ["%s cannot %s %s" % (WORKER_USER, checks[i][2], checks[i][1]) for i in failed]


def shared_tempdir(prefix="callexchange-"):
    """A fresh temp dir that the worker user can traverse (mode 0755), outside pytest's
    private tmp_path. The caller removes it (shutil.rmtree)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


def writable_dir(path):
    """Make `path` (e.g. the [state] dir) and give it to the worker user."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        user, group = worker_identity()
        shutil.chown(path, user, group)
    path.chmod(0o755)
    return path


def project_venv():
    """The venv the tests run in (its python has the requirements), else the checkout's."""
    if sys.prefix != getattr(sys, "base_prefix", sys.prefix):
        return Path(sys.prefix)
    return REPO / ".venv"


def app_tree(base, prefix=REPO, venv=None):
    """(prefix, venv) the CGI can use: the checkout itself when the worker user reaches
    it, else a staged copy under `base` (which must be traversable: shared_tempdir())."""
    prefix = Path(prefix)
    venv = Path(venv) if venv else project_venv()
    needs = dict(executable=[prefix / "cgi-bin" / "asteriskapi.pl", venv / "bin" / "python3"],
                 readable=[prefix / "lib" / "callexchange" / "config.py",
                           prefix / "apache" / "errors" / "call" / "500.json",
                           venv / "pyvenv.cfg"])
    if not access_problems(**needs):
        return prefix, venv
    staged = Path(base) / "app"
    staged_venv = Path(base) / "venv"
    if not staged.exists():
        staged.mkdir(mode=0o755)
        for part in APP_PARTS:
            shutil.copytree(prefix / part, staged / part, symlinks=True,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        open_up(staged)
        # www-data cannot write __pycache__ there: compile once, as we are root.
        subprocess.run([str(venv / "bin" / "python3"), "-m", "compileall", "-q",
                        str(staged / "lib")], check=True)
        open_up(staged)
    if not staged_venv.exists():
        shutil.copytree(venv, staged_venv, symlinks=True, copy_function=_link_or_copy)
        open_up(staged_venv)
    needs = dict(executable=[staged / "cgi-bin" / "asteriskapi.pl",
                             staged_venv / "bin" / "python3"],
                 readable=[staged_venv / "pyvenv.cfg"])
    problems = access_problems(**needs)
    if problems:
        raise ApacheError("staged app tree still out of reach: " + "; ".join(problems))
    return staged, staged_venv


def _link_or_copy(src, dst):
    # A hard link shares the inode, mode included: only for files that are already as
    # open as open_up would make them, so the staging never changes the original.
    mode = os.stat(src).st_mode
    wanted = 0o444 | (0o111 if mode & stat.S_IXUSR else 0)
    if mode & wanted == wanted:
        try:
            os.link(src, dst)
            return dst
        except OSError:
            pass
    return shutil.copy2(src, dst)


def open_up(root):
    """chmod -R a+rX `root` (symlinks left alone): for trees the worker user must read."""
    for dirpath, dirnames, filenames in os.walk(root):
        os.chmod(dirpath, os.stat(dirpath).st_mode | 0o555)
        for name in filenames:
            path = os.path.join(dirpath, name)
            if os.path.islink(path):
                continue
            mode = os.stat(path).st_mode
            extra = 0o444 | (0o111 if mode & 0o100 else 0)
            if mode & extra != extra:
                os.chmod(path, mode | extra)


# --- templates ------------------------------------------------------------------------

def render(template, values):
    """Replace each @NAME@ of the template file by values[NAME]; every one must be given."""
    text = Path(template).read_text(encoding="utf-8")
    for name, value in values.items():
        text = text.replace("@%s@" % name, str(value))
    leftover = sorted({word for word in text.split("@")[1::2]
                       if word.isupper() and word.replace("_", "").isalnum()})
    if leftover:
        raise ValueError("%s: no value for %s" % (template, ", ".join(leftover)))
    return text


def free_port():
    """A loopback TCP port that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --- the server -----------------------------------------------------------------------

class ApacheServer:
    """A private apache2 serving the CallExchange URLs on 127.0.0.1:<free port>.

    `tmpdir` must be traversable by the worker user (use shared_tempdir()); the server
    keeps its config, logs and sockets in a dir of its own inside it. `config_path` is the
    CALLEXCHANGE_CONFIG the CGI gets; `recordings_root` is served under /wav-files/.
    `mode` is "cgi" (mod_cgid) or "wsgi" (mod_wsgi). `prefix`/`venv` default to
    app_tree(tmpdir). `extra_conf` is appended to the site config (the bench adds its
    baseline scripts this way). `state_dir`, `keys_file`: checked for access if given.
    `recordings_access` renders the site for that `[recordings] access` (public, signed,
    key), as install.sh does from the INI.

    Starts at once; `.url`, `.stop()`, `.error_log()`; also a context manager.
    """

    def __init__(self, tmpdir, config_path, recordings_root, *, mode="cgi", prefix=None,
                 venv=None, extra_conf="", state_dir=None, keys_file=None,
                 start_timeout=15.0, recordings_access="public"):
        self.binary = find_apache()
        if not self.binary:
            raise ApacheError("apache2 is not installed")
        if mode not in ("cgi", "wsgi"):
            raise ValueError("mode must be 'cgi' or 'wsgi', got %r" % mode)
        self.mode = mode
        self.tmpdir = Path(tmpdir)
        self.config_path = Path(config_path)
        self.recordings_root = Path(recordings_root)
        if prefix is None:
            prefix, venv = app_tree(self.tmpdir, venv=venv)
        self.prefix = Path(prefix)
        self.venv = Path(venv) if venv else project_venv()
        self.rundir = Path(tempfile.mkdtemp(prefix="apache-", dir=str(self.tmpdir)))
        self.rundir.chmod(0o755)
        (self.rundir / "htdocs").mkdir(mode=0o755)
        self.process = None
        self.port = None

        problems = access_problems(
            readable=[self.config_path] + ([Path(keys_file)] if keys_file else []),
            traversable=[self.rundir, self.recordings_root],
            writable=[Path(state_dir)] if state_dir else [])
        if problems:
            raise ApacheError(
                "the CGI would run as %s, which cannot reach its files: %s. Put test data "
                "under shared_tempdir() and the state dir through writable_dir()."
                % (WORKER_USER, "; ".join(problems)))

        site = "callexchange-wsgi.conf.in" if mode == "wsgi" else "callexchange.conf.in"
        self.site_conf = self.rundir / "callexchange.conf"
        self.site_conf.write_text(render(APACHE_TEMPLATES / site, {
            "PREFIX": self.prefix, "VENV": self.venv, "CONFIG": self.config_path,
            "RECORDINGS_ROOT": self.recordings_root, "RECORDINGS_ACCESS": recordings_access,
            "LOG_DIR": self.rundir,
        }) + ("\n# --- extra ---\n" + extra_conf + "\n" if extra_conf else ""))
        self.start(start_timeout)

    # The port is picked just before start; if something else grabs it in between,
    # Apache fails to bind and we try another.
    def start(self, timeout=15.0):
        """Render the server config on a free port, start apache2, wait until it serves."""
        user, group = worker_identity()
        last_error = None
        for _ in range(3):
            self.port = free_port()
            self.conf = self.rundir / "apache2.conf"
            self.conf.write_text(render(APACHE_TEMPLATES / "standalone.conf.in", {
                "RUNDIR": self.rundir, "PORT": self.port, "MODULES": MODULES_DIR,
                "USER": user, "GROUP": group, "SITE_CONF": self.site_conf,
            }))
            check = subprocess.run(self._command("-t"), capture_output=True, text=True,
                                   env=self._env(), check=False)
            if check.returncode != 0:
                raise ApacheError("apache2 -t rejects the config %s:\n%s%s"
                                  % (self.conf, check.stdout, check.stderr))
            stderr = open(self.rundir / "stderr.log", "ab")
            try:
                self.process = subprocess.Popen(
                    self._command("-DFOREGROUND"), stdin=subprocess.DEVNULL,
                    stdout=stderr, stderr=stderr, env=self._env(), start_new_session=True)
            finally:
                stderr.close()
            try:
                self._wait_serving(timeout)
                return self
            except ApacheError as error:
                last_error = error
                self._kill_all()
                if "Address already in use" not in str(error):
                    break
        raise last_error

    def _command(self, *extra):
        command = [self.binary, "-f", str(self.conf)]
        if self.mode == "wsgi":
            command.append("-DCALLEXCHANGE_WSGI")
        return command + list(extra)

    @staticmethod
    def _env():
        # Apache gives a CGI only PATH from its own environment (SetEnv overrides it)
        # and what the config sets: nothing of the test process leaks into the CGI.
        return {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "LANG": "C.UTF-8"}

    def _wait_serving(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ApacheError("apache2 exited with %s at start:\n%s"
                                  % (self.process.returncode, self.logs()))
            try:
                # Any HTTP answer means a worker is up; "/" is always 403 here.
                urllib.request.urlopen(self.url + "/", timeout=1).close()
                return
            except urllib.error.HTTPError:
                return
            except OSError:
                time.sleep(0.05)
        raise ApacheError("apache2 did not answer on %s within %ss:\n%s"
                          % (self.url, timeout, self.logs()))

    @property
    def url(self):
        """http://127.0.0.1:<port>, no trailing slash."""
        return "http://127.0.0.1:%d" % self.port

    def processes(self):
        """{pid: command line} of every live process of this server (the parent, its
        workers, the cgid daemon or the mod_wsgi daemons, shown as "(wsgi:callexchange)")."""
        found = {}
        for pid in _session_members(self.process.pid) if self.process else []:
            try:
                with open("/proc/%d/cmdline" % pid, "rb") as handle:
                    found[pid] = handle.read().replace(b"\0", b" ").decode(errors="replace").strip()
            except OSError:
                pass
        return found

    def error_log(self):
        """Apache's error log (CGI stderr lands here too), for assertion messages."""
        path = self.rundir / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def access_log(self):
        """The host site's access log (the virtual host standing for Debian's default)."""
        path = self.rundir / "access.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def callexchange_access_log(self):
        """Our own access log (GlobalLog of the site config): our URLs, paths only."""
        path = self.rundir / "callexchange-access.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def logs(self):
        stderr = self.rundir / "stderr.log"
        text = stderr.read_text(errors="replace") if stderr.exists() else ""
        return "--- stderr ---\n%s--- error.log ---\n%s" % (text, self.error_log())

    def stop(self, timeout=10.0):
        """Stop apache2 and everything it started; raise ApacheError if anything was left
        behind (it is killed first) or the port still answers."""
        if self.process is None:
            return
        leftovers = self._kill_all(timeout)
        self.process = None
        problems = []
        if leftovers:
            problems.append("processes left after apache2 stopped (killed): %s" % leftovers)
        if (self.rundir / "apache2.pid").exists():
            problems.append("pid file %s left behind" % (self.rundir / "apache2.pid"))
        with socket.socket() as probe:
            probe.settimeout(0.5)
            if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                problems.append("port %d still answers" % self.port)
        if problems:
            raise ApacheError("; ".join(problems) + "\n" + self.logs())

    def _kill_all(self, timeout=10.0):
        """SIGTERM the parent, wait, then SIGKILL whatever is left of its session (our own
        processes only: the session id is the apache2 parent's pid). Returns the pids that
        outlived the parent by more than a moment."""
        process = self.process
        session = process.pid
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        deadline = time.monotonic() + 3
        while _session_members(session) and time.monotonic() < deadline:
            time.sleep(0.05)
        leftovers = _session_members(session)
        for pid in leftovers:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return leftovers

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def _session_members(session):
    """Pids of live processes whose session id is `session` (zombies excluded)."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # fields[0] is the state, fields[3] the session id.
        if fields[0] != "Z" and int(fields[3]) == session:
            members.append(int(entry))
    return members
