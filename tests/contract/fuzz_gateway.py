"""The gateway the contract fuzzer talks to: a private Apache (real CGI, as installed)
in front of the sandbox PBX, with a keys file, a state dir and a small recording archive.

    with FuzzGateway() as gateway:
        gateway.url          # http://127.0.0.1:<port>, loopback only
        gateway.api_key      # a key the keys file holds

Used by tests/contract/test_schemathesis.py; runnable by hand to fuzz interactively:
`.venv/bin/python tests/contract/fuzz_gateway.py` prints the URL and the key and serves
until Ctrl-C.
"""

import os
import shutil
import struct
import sys
from pathlib import Path

_TESTS = Path(__file__).resolve().parent.parent
if str(_TESTS) not in sys.path:
    sys.path.insert(0, str(_TESTS))

import apache_server  # noqa: E402
from paths import LIB, REPO  # noqa: E402

if LIB not in sys.path:
    sys.path.insert(0, LIB)

from callexchange.keys import add_key  # noqa: E402
from callexchange.sandbox.server import Sandbox  # noqa: E402

API_KEY = "contract-fuzz-key-7d0c41b2e9"
AMI_USER = "callexchange"
AMI_SECRET = "fuzz-sandbox-secret"
# The lead of the legacy document's samples: the archive holds recordings of it, so the
# fuzzer's examples get real, non-empty replies to check against the schema.
LEAD = "12127773456"
RECORDINGS = (
    ("2024/07/03", "out-12127773456-2001-20240703-203742-1720039056.22191.wav", 25),
    ("2024/07/08", "in-2001-12127773456-20240708-201330-1720463610.22173.wav", 3),
    ("2024/07/12", "out-+1-212-777-3456-2003-20240712-150403-1720796643.21754.WAV", 7),
)

CONFIG = """\
[ami]
host = 127.0.0.1
port = {ami_port}
username = {user}
secret = {secret}
connect_timeout = 1
timeout = 2

[dial]
default_region = US

[ani]
default = 12125550100, 12125550101
DE = 4930123456, 4940123456
daily_limit = 1000000

[recordings]
root = {recordings}
base_url = https://pbx.example.test/wav-files

[auth]
keys_file = {keys}

[state]
dir = {state}
"""


def wav(seconds, byte_rate=16000):
    """A PCM WAV file's bytes: `seconds` of silence at `byte_rate`."""
    data = seconds * byte_rate
    fmt = struct.pack("<HHIIHH", 1, 1, 8000, byte_rate, 2, 16)
    return (b"RIFF" + struct.pack("<I", 36 + data) + b"WAVE" + b"fmt " + struct.pack("<I", 16)
            + fmt + b"data" + struct.pack("<I", data) + bytes(data))


def _open_dir(path):
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o755)
    return path


class FuzzGateway:
    """Sandbox PBX + private Apache on loopback ports, serving the gateway as CGI or
    through mod_wsgi (`mode`); `stop()` ends both."""

    def __init__(self, mode="cgi"):
        self.mode = mode     # "cgi" (mod_cgid) or "wsgi" (mod_wsgi, install.sh --persistent)
        self.base = apache_server.shared_tempdir("cx-contract-")
        self.sandbox = None
        self.apache = None
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self):
        self.sandbox = Sandbox(host="127.0.0.1", port=0, username=AMI_USER, secret=AMI_SECRET)
        self.sandbox.start()
        recordings = _open_dir(self.base / "recordings")
        for day, name, seconds in RECORDINGS:
            folder = recordings
            for part in day.split("/"):
                folder = _open_dir(folder / part)
            (folder / name).write_bytes(wav(seconds))
            (folder / name).chmod(0o644)
        keys = self.base / "api-keys"
        add_key(str(keys), "contract", API_KEY)
        keys.chmod(0o644)   # the CGI runs as www-data
        state = apache_server.writable_dir(self.base / "state")
        self.config_path = self.base / "callexchange.ini"
        self.config_path.write_text(CONFIG.format(
            ami_port=self.sandbox.port, user=AMI_USER, secret=AMI_SECRET,
            recordings=recordings, keys=keys, state=state))
        self.config_path.chmod(0o644)
        mode = self.mode
        self.apache = apache_server.ApacheServer(self.base, self.config_path, recordings,
                                                 mode=mode, state_dir=state,
                                                 keys_file=keys)
        self.url = self.apache.url
        self.api_key = API_KEY

    def stop(self):
        try:
            if self.apache is not None:
                self.apache.stop()
        finally:
            if self.sandbox is not None:
                self.sandbox.stop()
            shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def _serve_until_stopped():
    import signal

    def stop(*_):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, stop)   # a kill stops Apache too, not only Ctrl-C
    gateway = FuzzGateway()
    print("url:", gateway.url, "api-key:", gateway.api_key, "repo:", REPO, flush=True)
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        gateway.stop()


if __name__ == "__main__":
    _serve_until_stopped()
