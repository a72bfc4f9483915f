"""Plain HTTP once the gateway has an https:// name (install.sh --domain), through a real
Apache: our virtual host file as install.sh renders it (apache/callexchange-https.conf.in),
after the main snippet, in both Apache modes. A client on this machine (127.0.0.1) is
served; one from another address (127.0.0.2, a second loopback address) gets the JSON 403
in the legacy shape naming the https URL, never a redirect; other URLs are not ours to
refuse. --allow-http keeps plain HTTP open. The TLS side itself is .ci/install-https.sh's
(it needs port 443 and a CA)."""

import http.client
import json
import shutil
import subprocess
import sys

import pytest

import apache_server

sys.path.insert(0, str(apache_server.REPO / "lib"))

from callexchange.keys import digest  # noqa: E402

NAME = "pbx1.callexchange.test"
API_KEY = "https-guard-key-0123456789abcdef"
JSON_TYPE = "application/json; charset=utf-8"
CONFIG = """\
[ami]
username = callexchange
secret = not-used-here
port = 9
connect_timeout = 0.5
timeout = 0.5

[ani]
default = 12125550100

[recordings]
root = {recordings}
base_url = https://{name}/wav-files/

[auth]
keys_file = {keys}

[state]
dir = {state}
"""


def render_site(prefix, cert, key, allow_http):
    """Our vhost file as install.sh renders it once the certificate exists."""
    script = ('source "$0" && DOMAIN=$1 CERT_SRC=$2 KEY_SRC=$3 ALLOW_HTTP=$4 HSTS=0 APP=$5 '
              '&& https_paths && render_https_site "$6" 1')
    site = subprocess.run(
        ["bash", "-c", script, str(apache_server.REPO / "install.sh"), NAME, str(cert),
         str(key), str(allow_http), str(prefix),
         str(apache_server.APACHE_TEMPLATES / "callexchange-https.conf.in")],
        capture_output=True, text=True, check=True).stdout
    # The paths install.sh would copy the certificate to: the ones made here instead.
    site = site.replace("/etc/callexchange/tls/%s.crt" % NAME, str(cert))
    site = site.replace("/etc/callexchange/tls/%s.key" % NAME, str(key))
    modules = "".join('LoadModule %s_module "%s/mod_%s.so"\n' % (m, apache_server.MODULES_DIR, m)
                      for m in ("socache_shmcb", "ssl", "setenvif"))
    return modules + site


@pytest.fixture(scope="module")
def servers(apache_mode):
    if not (apache_server.MODULES_DIR / "mod_ssl.so").exists():
        pytest.skip("mod_ssl is not installed (part of apache2)")
    base = apache_server.shared_tempdir("cx-https-guard-")
    recordings = base / "recordings"
    day = recordings / "2024" / "11" / "15"
    day.mkdir(parents=True)
    (day / "out-4930901820-2001-20241115-093001-1.1.wav").write_bytes(b"RIFF" + bytes(40))
    cert, key = base / "site.crt", base / "site.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "5", "-subj", "/CN=%s" % NAME], check=True,
                   capture_output=True)
    keys = base / "api-keys"
    keys.write_text("test\t%s\t2024-07-03T00:00:00Z\n" % digest(API_KEY))
    state = apache_server.writable_dir(base / "state")
    config = base / "callexchange.ini"
    config.write_text(CONFIG.format(recordings=recordings, keys=keys, state=state, name=NAME))
    apache_server.open_up(base)
    key.chmod(0o600)    # Apache reads it as root, before it drops to its user
    prefix, venv = apache_server.app_tree(base)
    started = {}
    try:
        for allow_http in (0, 1):
            started[allow_http] = apache_server.ApacheServer(
                base, config, recordings, mode=apache_mode, prefix=prefix, venv=venv,
                state_dir=state, keys_file=keys,
                extra_conf=render_site(prefix, cert, key, allow_http))
        yield started
    finally:
        for server in started.values():
            server.stop()
        shutil.rmtree(base, ignore_errors=True)


def request(server, method, path, source="127.0.0.2", body=None, connection=None):
    """(status, headers, body) of one request from `source`; `connection` to reuse one."""
    conn = connection or http.client.HTTPConnection("127.0.0.1", server.port, timeout=30,
                                                    source_address=(source, 0))
    headers = {"api-key": API_KEY}
    if body is not None:
        headers["Content-Type"] = "application/json"
    conn.request(method, path, body=body, headers=headers)
    response = conn.getresponse()
    data = response.read()
    if connection is None:
        conn.close()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, data


@pytest.mark.parametrize("method, path, message", [
    ("POST", "/api/v1/asteriskapi.pl", "We fail on making a call. caller : , callee : "),
    ("POST", "/api/v1/asteriskapi", "We fail on making a call. caller : , callee : "),
    ("GET", "/recorded/v1/find_phone_files.pl?phone=4930901820",
     "We fail on finding the recordings."),
    ("GET", "/wav-files/2024/11/15/out-4930901820-2001-20241115-093001-1.1.wav",
     "We fail on fetching the recording."),
    ("HEAD", "/wav-files/2024/11/15/out-4930901820-2001-20241115-093001-1.1.wav", None),
])
def test_plain_http_from_another_machine_is_a_json_403_naming_the_https_url(
        servers, method, path, message):
    status, headers, body = request(servers[0], method, path,
                                    body=b'{"extension": "2001"}' if method == "POST" else None)
    assert status == 403, (body, servers[0].error_log()[-2000:])
    assert headers["content-type"] == JSON_TYPE
    assert "location" not in headers
    if method == "HEAD":
        assert body == b""
        return
    reply = json.loads(body)
    assert reply["status"] == "403 Forbidden" and reply["icon"] == "error"
    assert "use https://%s%s" % (NAME, path.split("?")[0]) in reply["error"]
    assert reply["message"] == message


def test_from_this_machine_plain_http_is_served(servers):
    status, headers, body = request(servers[0], "POST", "/api/v1/asteriskapi.pl",
                                    source="127.0.0.1", body=b"{}")
    assert status == 400 and headers["content-type"] == JSON_TYPE
    assert json.loads(body)["error"].startswith("Missing parameters")
    status, _, body = request(servers[0], "GET",
                              "/wav-files/2024/11/15/out-4930901820-2001-20241115-093001-1.1.wav",
                              source="127.0.0.1")
    assert status == 200 and body.startswith(b"RIFF")


def test_a_refused_post_leaves_the_connection_usable(servers):
    conn = http.client.HTTPConnection("127.0.0.1", servers[0].port, timeout=30,
                                      source_address=("127.0.0.2", 0))
    try:
        big = b'{"extension": "2001", "pad": "%s"}' % (b"x" * 100_000)
        first = request(servers[0], "POST", "/api/v1/asteriskapi.pl", body=big, connection=conn)
        second = request(servers[0], "GET", "/recorded/v1/find_phone_files?phone=1",
                         connection=conn)
    finally:
        conn.close()
    assert first[0] == 403 and second[0] == 403
    assert "use https://%s/recorded/v1/find_phone_files" % NAME in json.loads(second[2])["error"]


def test_a_path_with_quotes_still_gets_valid_json_naming_the_base(servers):
    status, _, body = request(servers[0], "GET", '/api/v1/x%22y"z')
    assert status == 403
    assert json.loads(body)["error"].endswith("use https://%s/" % NAME)


def test_urls_that_are_not_ours_are_left_to_the_host(servers):
    # (The test server's own document root refuses everything: its HTML 403.)
    status, headers, body = request(servers[0], "GET", "/not-the-gateway.html")
    assert status in (403, 404) and headers.get("content-type", "").startswith("text/html")
    assert b"https://" not in body


def test_allow_http_keeps_plain_http_open_to_everyone(servers):
    status, headers, body = request(servers[1], "POST", "/api/v1/asteriskapi.pl", body=b"{}")
    assert status == 400 and headers["content-type"] == JSON_TYPE, body
