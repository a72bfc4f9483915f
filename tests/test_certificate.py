"""certificate.py: the HTTPS certificate's names and days to expiry for `callexchange
check`. Real certificates made with openssl (a short-lived one among them), a real TLS
listener for the certificate as served, and the check as an operator runs it."""

import os
import socket
import ssl
import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import pytest
from paths import LIB

from callexchange import certificate

DAY = 86400
NOW = 1_900_000_000.0


def make_cert(folder, name, days, alt_names=None):
    """A self-signed certificate for `name` valid `days` days from now: (cert, key)."""
    cert, key = folder / ("%s.crt" % name), folder / ("%s.key" % name)
    alt = ",".join("DNS:%s" % n for n in (alt_names or [name]))
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", str(days), "-subj", "/CN=%s" % name,
                    "-addext", "subjectAltName=%s" % alt],
                   check=True, capture_output=True)
    return cert, key


def test_parse_openssl_takes_the_dns_names_and_the_expiry():
    text = ("notAfter=Jan  2 03:04:05 2031 GMT\nsubject=\n    commonName                = cn.test\n"
            "X509v3 Subject Alternative Name: \n    DNS:a.test, DNS:*.b.test, IP Address:127.0.0.1\n")
    assert certificate.parse_openssl(text) == (("a.test", "*.b.test"), 1925089445)


def test_parse_openssl_falls_back_to_the_common_name_and_refuses_no_expiry():
    assert certificate.parse_openssl(
        "subject=\n    commonName = only.test\nnotAfter=Jan  2 03:04:05 2031 GMT\n")[0] == ("only.test",)
    with pytest.raises(certificate.CertificateError, match="no expiry"):
        certificate.parse_openssl("subject=\n    commonName = x.test\n")


@pytest.mark.parametrize("days_left, level, says", [
    (90, "ok", "pbx1.example.test: certificate for pbx1.example.test, 90 days to expiry"),
    (21, "ok", "21 days to expiry"),
    (20.5, "warn", "expires in 20 day(s)"),
    (0.5, "warn", "expires in 0 day(s)"),
    (-1, "FAIL", "expired on"),
])
def test_expiry_warns_under_21_days_and_fails_once_expired(days_left, level, says):
    lines = certificate.expiry_lines("pbx1.example.test", ("pbx1.example.test",),
                                     NOW + days_left * DAY, NOW, "/etc/x.pem")
    assert len(lines) == 1
    assert lines[0][0] == level
    assert says in lines[0][1]


def test_a_certificate_for_another_name_fails_and_a_wildcard_covers_one_label():
    lines = certificate.expiry_lines("pbx1.example.test", ("other.test",), NOW + 60 * DAY,
                                     NOW, "/etc/x.pem")
    assert lines == [("FAIL", "https: the certificate /etc/x.pem is for other.test, not "
                              "pbx1.example.test")]
    assert certificate.expiry_lines("pbx1.example.test", ("*.example.test",),
                                    NOW + 60 * DAY, NOW, "f")[0][0] == "ok"
    assert certificate.expiry_lines("a.pbx1.example.test", ("*.example.test",),
                                    NOW + 60 * DAY, NOW, "f")[0][0] == "FAIL"


def test_no_domain_means_no_line():
    assert certificate.check_lines(SimpleNamespace(domain="", certificate="")) == []


def test_a_short_lived_certificate_file_is_a_warning_naming_its_days(tmp_path):
    cert, _key = make_cert(tmp_path, "pbx1.callexchange.test", 5)
    lines = certificate.check_lines(SimpleNamespace(domain="pbx1.callexchange.test",
                                                    certificate=str(cert)))
    assert len(lines) == 1 and lines[0][0] == "warn", lines
    assert "for pbx1.callexchange.test expires in 4 day(s)" in lines[0][1]
    # The same certificate, 10 days earlier, had 14 days left; 30 days later it has expired.
    names, not_after = certificate.read_file(str(cert))
    assert names == ("pbx1.callexchange.test",)
    assert 4 * DAY < not_after - time.time() <= 5 * DAY
    assert certificate.expiry_lines(names[0], names, not_after, time.time() + 30 * DAY,
                                    "f")[0][0] == "FAIL"


def test_a_missing_or_broken_certificate_file_fails(tmp_path):
    https = SimpleNamespace(domain="pbx1.example.test", certificate=str(tmp_path / "none.pem"))
    assert certificate.check_lines(https) == [
        ("FAIL", "https: the certificate %s does not exist" % https.certificate)]
    (tmp_path / "broken.pem").write_text("not a certificate\n")
    https.certificate = str(tmp_path / "broken.pem")
    [(level, text)] = certificate.check_lines(https)
    assert level == "FAIL" and "not a certificate" in text


def test_the_served_certificate_is_read_over_tls_with_the_name_as_sni(tmp_path):
    cert, key = make_cert(tmp_path, "served.callexchange.test", 30)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(cert), str(key))
    seen = []
    context.sni_callback = lambda _sock, name, _ctx: seen.append(name)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve():
        connection, _ = listener.accept()
        try:
            with context.wrap_socket(connection, server_side=True):
                pass
        except (OSError, ssl.SSLError):
            pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        names, not_after = certificate.read_served("served.callexchange.test", port=port)
    finally:
        thread.join(5)
        listener.close()
    assert names == ("served.callexchange.test",)
    assert seen == ["served.callexchange.test"]
    assert 29 * DAY < not_after - time.time() <= 30 * DAY


def test_nothing_served_is_a_clear_error():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(certificate.CertificateError, match="nothing serves TLS on 127.0.0.1"):
        certificate.read_served("x.test", port=port, timeout=1)


def run_check(tmp_path, extra):
    (tmp_path / "state").mkdir(exist_ok=True)
    config = tmp_path / "callexchange.ini"
    config.write_text(
        "[ami]\nusername = callexchange\nsecret = s3cret\n[ani]\ndefault = 12125550100\n"
        "[recordings]\nroot = %s\nbase_url = https://pbx1.callexchange.test/wav-files/\n"
        "[auth]\nkeys_file = %s\n[state]\ndir = %s\n%s"
        % (tmp_path, tmp_path / "keys", tmp_path / "state", extra))
    env = dict(os.environ, CALLEXCHANGE_CONFIG=str(config), PYTHONPATH=LIB)
    return subprocess.run([sys.executable, "-m", "callexchange", "check", "--no-ami",
                           "--no-asterisk", "--asterisk-etc", str(tmp_path / "none")],
                          env=env, capture_output=True, text=True, timeout=30)


def test_callexchange_check_reports_the_certificate_of_the_https_section(tmp_path):
    cert, _key = make_cert(tmp_path, "pbx1.callexchange.test", 5)
    result = run_check(tmp_path, "[https]\ndomain = pbx1.callexchange.test\ncertificate = %s\n"
                       % cert)
    assert result.returncode == 0, result.stdout + result.stderr
    assert ("warn https: the certificate %s for pbx1.callexchange.test expires in 4 day(s)"
            % cert) in result.stdout


def test_callexchange_check_without_a_domain_has_no_https_line(tmp_path):
    result = run_check(tmp_path, "")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "https:" not in result.stdout


def test_the_warning_says_what_renews_the_certificate():
    soon = NOW + 5 * DAY
    [(_, certbot)] = certificate.expiry_lines(
        "a.test", ("a.test",), soon, NOW, "f",
        hint=certificate.renewal_hint("/etc/letsencrypt/live/a.test/fullchain.pem"))
    [(_, own)] = certificate.expiry_lines(
        "a.test", ("a.test",), soon, NOW, "f",
        hint=certificate.renewal_hint("/etc/callexchange/tls/a.test.crt"))
    assert certbot.endswith("(under 21: is certbot's renewal failing? certbot renew --dry-run)")
    assert own.endswith("(under 21: renew it, then run install.sh again: it copies the new files)")
