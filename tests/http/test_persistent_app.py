"""The persistent mode's application (callexchange.http.persistent) in-process with
WebTest: config and keys-file edits take effect at the next request, without a reload,
and a build happens only when a file changed."""

import os

import pytest
from webtest import TestApp

from callexchange.http.app import create_app
from callexchange.http.persistent import PersistentApp
from callexchange.keys import add_key

KEY = "persistent-mode-key-0123456789"
FIND = "/recorded/v1/find_phone_files?phone=4930901820"

CONFIG = """\
[ami]
username = callexchange
secret = not-used-here
[ani]
default = 12125550100
[recordings]
root = {root}
base_url = {base_url}
[auth]
keys_file = {keys}
[state]
dir = {state}
"""


@pytest.fixture
def files(tmp_path):
    root = tmp_path / "recordings" / "2024" / "07" / "03"
    root.mkdir(parents=True)
    (root / "out-4930901820-2001-20240703-203742-1720039056.22191.wav").write_bytes(b"")
    (tmp_path / "state").mkdir()
    keys = tmp_path / "api-keys"
    add_key(str(keys), "crm", KEY)
    config = tmp_path / "callexchange.ini"

    def write(base_url="http://a.example.test/wav-files", keys_file=keys, text=None):
        temporary = tmp_path / "new.ini"
        temporary.write_text(text if text is not None else CONFIG.format(
            root=tmp_path / "recordings", base_url=base_url, keys=keys_file,
            state=tmp_path / "state"))
        os.replace(temporary, config)      # as editors and `callexchange config set` do
    write()
    return config, keys, write


class CountingFactory:
    def __init__(self):
        self.builds = 0

    def __call__(self, path):
        self.builds += 1
        return create_app(path)


def found_url(app):
    reply = app.get(FIND, headers={"api-key": KEY})
    return reply.json[0]["url"]


def test_nothing_is_rebuilt_while_the_files_stay_as_they_are(files):
    config, _keys, _write = files
    factory = CountingFactory()
    app = TestApp(PersistentApp(str(config), factory))
    for _ in range(5):
        assert found_url(app).startswith("http://a.example.test/wav-files/2024/07/03/")
    assert factory.builds == 1


def test_a_config_edit_takes_effect_at_the_next_request(files):
    config, _keys, write = files
    factory = CountingFactory()
    app = TestApp(PersistentApp(str(config), factory))
    assert found_url(app).startswith("http://a.example.test/")
    write(base_url="https://b.example.test/wav-files")
    assert found_url(app).startswith("https://b.example.test/")
    assert found_url(app).startswith("https://b.example.test/")
    assert factory.builds == 2


def test_an_edit_in_place_is_seen_too(files):
    config, _keys, _write = files
    app = TestApp(PersistentApp(str(config)))
    assert found_url(app).startswith("http://a.example.test/")
    with open(config, "r+") as handle:           # same inode, as `cp new.ini config` does
        text = handle.read().replace("http://a.example", "http://c.example")
        handle.seek(0)
        handle.write(text)
        handle.truncate()
    assert found_url(app).startswith("http://c.example.test/")


def test_a_keys_file_edit_rebuilds_and_a_revoked_key_is_refused(files):
    config, keys, _write = files
    factory = CountingFactory()
    app = TestApp(PersistentApp(str(config), factory))
    assert found_url(app)
    keys.write_text("# no keys any more\n")
    reply = app.get(FIND, headers={"api-key": KEY}, status=401)
    assert reply.json["error"] == "Invalid api-key"
    assert factory.builds == 2


def test_a_broken_config_answers_500_until_it_is_fixed(files):
    config, _keys, write = files
    app = TestApp(PersistentApp(str(config)))
    assert found_url(app)
    write(text="[ami]\nusername = callexchange\n")          # secret and caller ID missing
    # The problem goes to the error log (wsgi.errors), as under Apache.
    reply = app.get(FIND, headers={"api-key": KEY}, status=500, expect_errors=True)
    assert reply.content_type == "application/json"
    assert "configuration error" in reply.json["error"].lower()
    write()
    assert found_url(app).startswith("http://a.example.test/")


def test_an_edit_during_a_build_is_not_lost(files):
    config, _keys, write = files
    edits = iter([lambda: write(base_url="https://late.example.test/wav-files")])

    def factory(path):
        app = create_app(path)              # reads the file as it was...
        for edit in edits:                  # ...and then the admin saves again, once
            edit()
            break
        return app

    app = TestApp(PersistentApp(str(config), factory))
    assert found_url(app).startswith("http://a.example.test/")
    assert found_url(app).startswith("https://late.example.test/")


def test_the_wsgi_entry_point_keeps_one_application_per_config(files, tmp_path):
    config, _keys, write = files
    import importlib.machinery
    import importlib.util
    from paths import REPO
    loader = importlib.machinery.SourceFileLoader(
        "callexchange_wsgi_under_test", str(REPO / "apache" / "callexchange.wsgi"))
    entry = importlib.util.module_from_spec(importlib.util.spec_from_loader(loader.name, loader))
    loader.exec_module(entry)
    app = TestApp(entry.application, extra_environ={"CALLEXCHANGE_CONFIG": str(config)})
    assert found_url(app).startswith("http://a.example.test/")
    write(base_url="https://d.example.test/wav-files")
    assert found_url(app).startswith("https://d.example.test/")
    assert list(entry._apps) == [str(config)]


def test_threads_of_a_fresh_daemon_can_all_place_their_first_lookup_at_once(tmp_path):
    # A mod_wsgi daemon's threads meet phonenumbers' lazy import together: none may see
    # the half-loaded module (it answered 500 "has no attribute SUPPORTED_REGIONS").
    import subprocess
    import sys
    from paths import LIB
    script = """
import sys, threading
sys.path.insert(0, sys.argv[1])
sys.setswitchinterval(1e-6)     # switch threads often: inside the import too
from callexchange.calls import numbers
barrier = threading.Barrier(16)
errors = []
def first_lookup():
    barrier.wait()
    try:
        assert numbers.analyze("+4930901820", "US", sys.argv[2]).region == "DE"
    except Exception as error:
        errors.append(repr(error))
threads = [threading.Thread(target=first_lookup) for _ in range(16)]
[t.start() for t in threads]
[t.join() for t in threads]
print(errors)
"""
    for _ in range(5):          # each run a fresh interpreter: the import is cold again
        out = subprocess.run([sys.executable, "-c", script, LIB, str(tmp_path)],
                             capture_output=True, text=True, check=True, timeout=60).stdout
        assert out == "[]\n"
