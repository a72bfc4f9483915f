"""[recordings] access through the real Apache: public, signed and key (SPEC §12).

One private Apache per mode, rendered as install.sh renders the site for that mode. In
signed and key modes /wav-files/ goes to the gateway's file handler, which checks the
URL's token or the api-key and hands the file to mod_xsendfile: Range, HEAD and the
content type still come from Apache.
"""

import json
import shutil
import socket
import sys
import time
import wave

import pytest
import requests

import apache_server

sys.path.insert(0, str(apache_server.REPO / "lib"))

from callexchange.keys import digest  # noqa: E402
from callexchange.recordings import access  # noqa: E402

API_KEY = "recordings-access-key-0123456789"
JSON_TYPE = "application/json; charset=utf-8"
PHONE = "4930901820"
DAY = "2024/11/15"
NAME = "out-4930901820-2001-20241115-093001-1731663001.4711.wav"
OTHER = "out-4930901820-2002-20241115-101500-1731665700.4712.wav"
FIND = "/recorded/v1/find_phone_files?phone=" + PHONE

CONFIG = """\
[ami]
username = callexchange
secret = not-used-here

[ani]
default = 12125550100

[recordings]
root = {recordings}
base_url = http://127.0.0.1/wav-files/
access = {mode}
url_ttl = 600

[auth]
keys_file = {keys}

[state]
dir = {state}
"""


def subdir(path):
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o755)
    return path


@pytest.fixture(scope="module")
def archive():
    apache_server.require_apache()
    base = apache_server.shared_tempdir("cx-access-test-")
    recordings = subdir(base / "recordings")
    day = recordings
    for part in DAY.split("/"):
        day = subdir(day / part)
    for name, seconds in ((NAME, 3), (OTHER, 1)):
        with wave.open(str(day / name), "wb") as audio:
            audio.setnchannels(1)
            audio.setsampwidth(2)
            audio.setframerate(8000)
            audio.writeframes(bytes(range(256)) * (seconds * 16000 // 256))
        (day / name).chmod(0o644)
    (day / "passwd.wav").symlink_to("/etc/passwd")
    (recordings / "2024" / "12").symlink_to("/etc")
    keys = base / "api-keys"
    keys.write_text("test\t%s\t2024-07-03T00:00:00Z\n" % digest(API_KEY))
    keys.chmod(0o644)
    yield base, recordings, keys
    shutil.rmtree(base, ignore_errors=True)


class Site:
    def __init__(self, base, recordings, keys, mode, apache_mode):
        self.mode = mode
        name = "%s-%s" % (mode, apache_mode)
        self.state = apache_server.writable_dir(base / ("state-" + name))
        self.config = base / ("callexchange-%s.ini" % name)
        self.config.write_text(CONFIG.format(recordings=recordings, mode=mode, keys=keys,
                                             state=self.state))
        self.config.chmod(0o644)
        self.apache = apache_server.ApacheServer(
            base, self.config, recordings, state_dir=self.state, keys_file=keys,
            recordings_access=mode, mode=apache_mode)
        self.url = self.apache.url

    def find(self):
        """The recordings of PHONE through find_phone_files, as a CRM gets them."""
        response = requests.get(self.url + FIND, headers={"api-key": API_KEY}, timeout=30)
        assert response.status_code == 200, self.apache.error_log()[-3000:]
        return {entry["url"].rsplit("/", 1)[1].split("?")[0]: entry["url"]
                for entry in response.json()}

    def local(self, url):
        prefix = "http://127.0.0.1/wav-files/"
        assert url.startswith(prefix), url
        return self.url + "/wav-files/" + url[len(prefix):]

    def explain(self, response):
        return "HTTP %s %r %s\n%s" % (response.status_code, dict(response.headers),
                                      response.text[:500], self.apache.error_log()[-3000:])


@pytest.fixture(scope="module")
def sites(archive, apache_mode):
    started = {}

    def site(mode):
        if mode not in started:
            started[mode] = Site(*archive, mode, apache_mode)
        return started[mode]
    yield site
    for site in started.values():
        site.apache.stop()


def assert_legacy_error(response, status):
    assert response.status_code == status, response.text[:300]
    assert response.headers["Content-Type"] == JSON_TYPE
    body = response.json()
    assert body["status"].startswith("%d " % status) and body["icon"] == "error"
    assert body["error"] and body["message"] == "We fail on fetching the recording."
    return body


def assert_served_like_a_static_file(site, url, original):
    """Whole, ranged and HEAD fetches answer what Apache answers for a static file."""
    whole = requests.get(url, timeout=30)
    part = requests.get(url, headers={"Range": "bytes=4-11"}, timeout=30)
    tail = requests.get(url, headers={"Range": "bytes=-4"}, timeout=30)
    head = requests.head(url, timeout=30)
    past = requests.get(url, headers={"Range": "bytes=%d-" % (len(original) + 10)}, timeout=30)

    assert whole.status_code == 200, site.explain(whole)
    assert whole.content == original
    assert whole.headers["Content-Type"] == "audio/wav"
    assert whole.headers["X-Content-Type-Options"] == "nosniff"
    assert part.status_code == 206, site.explain(part)
    assert part.content == original[4:12]
    assert part.headers["Content-Range"] == "bytes 4-11/%d" % len(original)
    assert tail.status_code == 206 and tail.content == original[-4:]
    assert head.status_code == 200 and head.content == b""
    assert head.headers["Content-Length"] == str(len(original))
    assert_legacy_error(past, 416)


# --- public: the legacy, static files ---------------------------------------------------

def test_public_urls_carry_no_token_and_are_served_to_anyone(sites, archive):
    site = sites("public")
    urls = site.find()

    assert "?" not in urls[NAME]
    original = (archive[1] / DAY / NAME).read_bytes()
    assert_served_like_a_static_file(site, site.local(urls[NAME]), original)


# --- signed: an expiring HMAC token in the URL ------------------------------------------

def test_signed_urls_are_served_with_range_and_head(sites, archive):
    site = sites("signed")
    urls = site.find()

    assert "?exp=" in urls[NAME] and "&sig=" in urls[NAME]
    expires = int(urls[NAME].split("exp=")[1].split("&")[0])
    assert time.time() + 590 < expires <= time.time() + 600
    original = (archive[1] / DAY / NAME).read_bytes()
    assert_served_like_a_static_file(site, site.local(urls[NAME]), original)


def test_signed_mode_refuses_a_url_without_its_token(sites):
    site = sites("signed")
    bare = site.local(site.find()[NAME]).split("?")[0]

    body = assert_legacy_error(requests.get(bare, timeout=30), 403)
    assert "exp and sig" in body["error"]
    assert requests.head(bare, timeout=30).status_code == 403


def test_signed_mode_refuses_a_wrong_token(sites):
    site = sites("signed")
    url = site.local(site.find()[NAME])
    sig = url.split("sig=")[1]
    flipped = url[:-len(sig)] + ("A" if sig[0] != "A" else "B") + sig[1:]

    for bad in (flipped, url + "x", url.replace("exp=", "exp=1")):
        body = assert_legacy_error(requests.get(bad, timeout=30), 403)
        assert body["error"] == "Invalid recording URL token", (bad, body)
    # An empty sig, or one given twice, counts as none.
    for bad in (url.split("&sig=")[0] + "&sig=", url + "&sig=" + sig):
        body = assert_legacy_error(requests.get(bad, timeout=30), 403)
        assert "needs its exp and sig" in body["error"], (bad, body)


def test_signed_mode_refuses_an_expired_token(sites):
    site = sites("signed")
    site.find()   # the key exists from here on
    key = access.url_key(str(site.state), create=False)
    path = DAY + "/" + NAME
    past = int(time.time()) - 5
    url = "%s/wav-files/%s?exp=%d&sig=%s" % (site.url, path, past,
                                            access.signature(key, path, past))

    body = assert_legacy_error(requests.get(url, timeout=30), 403)
    assert "expired" in body["error"]


def test_signed_mode_refuses_a_token_moved_to_another_recording(sites):
    site = sites("signed")
    urls = site.find()
    token = urls[NAME].split("?")[1]
    moved = site.local(urls[OTHER]).split("?")[0] + "?" + token

    assert_legacy_error(requests.get(moved, timeout=30), 403)
    assert requests.get(site.local(urls[OTHER]), timeout=30).status_code == 200


def test_signed_mode_never_follows_a_symlink_even_with_a_valid_token(sites):
    site = sites("signed")
    site.find()
    key = access.url_key(str(site.state), create=False)
    for path in (DAY + "/passwd.wav", "2024/12/passwd"):
        query = access.signed_query(key, path, time.time(), 60)
        response = requests.get("%s/wav-files/%s?%s" % (site.url, path, query), timeout=30)

        assert response.status_code in (403, 404), (path, site.explain(response))
        assert_legacy_error(response, response.status_code)
        assert b"root:" not in response.content


def test_signed_mode_refuses_traversal(sites):
    site = sites("signed")
    token = site.find()[NAME].split("?")[1]
    for path in ("/wav-files/2024/11/15/..%2f..%2f..%2f..%2fetc%2fpasswd",
                 "/wav-files/2024/11/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
                 "/wav-files/../../etc/passwd"):
        with socket.create_connection(("127.0.0.1", site.apache.port), timeout=20) as sock:
            sock.sendall(("GET %s?%s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n"
                          % (path, token)).encode())
            reply = b""
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                reply += chunk
        head, _, body = reply.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])

        assert status in (400, 403, 404), (path, head)
        assert b"Content-Type: " + JSON_TYPE.encode() in head, (path, head)
        assert json.loads(body)["icon"] == "error"
        assert b"root:" not in reply


def test_signed_mode_accepts_the_api_key_header_instead_of_a_token(sites):
    site = sites("signed")
    bare = site.local(site.find()[NAME]).split("?")[0]

    assert requests.get(bare, headers={"api-key": API_KEY}, timeout=30).status_code == 200
    assert_legacy_error(requests.get(bare, headers={"api-key": "wrong"}, timeout=30), 401)


def test_signed_tokens_are_in_no_access_log(sites):
    site = sites("signed")
    # (Apache's error log quotes a malformed URL whole, token included: the traversal
    # test's, not this one's. A client of ours never sends one.)
    url = site.local(site.find()[OTHER])
    sig = url.split("sig=")[1]
    assert requests.get(url, timeout=30).status_code == 200

    deadline = time.monotonic() + 5
    while OTHER not in site.apache.callexchange_access_log():
        assert time.monotonic() < deadline, "the fetch was never logged"
        time.sleep(0.05)
    assert sig not in site.apache.callexchange_access_log()
    assert sig not in site.apache.access_log()
    assert sig not in site.apache.error_log()
    key_text = (site.state / access.KEY_FILE).read_text().strip()
    assert key_text not in site.apache.error_log() + site.apache.callexchange_access_log()


def test_rotating_the_key_ends_every_signed_url(sites):
    site = sites("signed")
    old = site.local(site.find()[NAME])
    assert requests.get(old, timeout=30).status_code == 200

    access.rotate_url_key(str(site.state))

    assert_legacy_error(requests.get(old, timeout=30), 403)
    fresh = site.local(site.find()[NAME])
    assert fresh != old and requests.get(fresh, timeout=30).status_code == 200


# --- key: the api-key header ------------------------------------------------------------

def test_key_mode_needs_the_api_key_header(sites, archive):
    site = sites("key")
    urls = site.find()
    url = site.local(urls[NAME])

    assert "?" not in urls[NAME]
    body = assert_legacy_error(requests.get(url, timeout=30), 401)
    assert "api-key" in body["error"]
    assert_legacy_error(requests.get(url, headers={"api-key": "wrong"}, timeout=30), 401)
    assert requests.head(url, timeout=30).status_code == 401

    original = (archive[1] / DAY / NAME).read_bytes()
    keyed = requests.Session()
    keyed.headers["api-key"] = API_KEY
    part = keyed.get(url, headers={"Range": "bytes=0-11"}, timeout=30)
    whole = keyed.get(url, timeout=30)
    head = keyed.head(url, timeout=30)
    assert part.status_code == 206 and part.content == original[:12], site.explain(part)
    assert part.headers["Content-Range"] == "bytes 0-11/%d" % len(original)
    assert whole.status_code == 200 and whole.content == original
    assert head.status_code == 200 and head.headers["Content-Length"] == str(len(original))


def test_key_mode_answers_a_missing_file_404_only_to_a_client_with_a_key(sites):
    site = sites("key")
    missing = site.url + "/wav-files/" + DAY + "/nope.wav"

    assert_legacy_error(requests.get(missing, timeout=30), 401)
    assert_legacy_error(requests.get(missing, headers={"api-key": API_KEY}, timeout=30), 404)
    assert_legacy_error(requests.post(missing, headers={"api-key": API_KEY}, timeout=30), 405)
