"""install.sh --domain, its pure parts: the options, the name check, the base_url rule,
the certificate checks (real openssl certificates), our virtual host as rendered (through
Apache's own syntax check, with mod_ssl) and the certbot command. install.sh is sourced;
nothing here touches the machine outside pytest's temp dirs. The real install with pebble
as the CA is .ci/install-https.sh's job."""

import subprocess

import pytest
from paths import REPO
from test_install import _apache_syntax_check, bash, run_install

from callexchange.config import config_from_text

SITE_TEMPLATE = REPO / "apache" / "callexchange-https.conf.in"
NAME = "pbx1.example.test"


def make_cert(folder, name, days=30, stem=None):
    stem = stem or name
    cert, key = folder / ("%s.crt" % stem), folder / ("%s.key" % stem)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", str(days), "-subj", "/CN=%s" % name,
                    "-addext", "subjectAltName=DNS:%s" % name], check=True, capture_output=True)
    return cert, key


@pytest.mark.parametrize("name, valid", [
    ("pbx1.example.com", True), ("a-b.c-d.example", True), ("x.y", True),
    ("localhost", False), ("-pbx.example.com", False), ("pbx-.example.com", False),
    ("pbx_1.example.com", False), ("pbx1.example.com.", False), ("pbx 1.example.com", False),
    ("pbx1.example.com/x", False), ('pbx1.example.com"', False), ("PBX1.example.com", False),
    ("a" * 64 + ".example.com", False),
])
def test_domain_valid_takes_dns_names_only(name, valid):
    assert (bash('domain_valid "$1"', name, check=False).returncode == 0) is valid


@pytest.mark.parametrize("args, message", [
    (["--domain"], "--domain needs a value"),
    (["--domain", "not a name"], "--domain must be a DNS name"),
    (["--domain", "localhost"], "--domain must be a DNS name"),
    (["--email", "a@b.test"], "go with --domain NAME"),
    (["--domain", NAME, "--cert", "/x.crt"], "--cert FILE and --key FILE go together"),
    (["--domain", NAME, "--cert", "/x.crt", "--key", "/x.key", "--email", "a@b.test"],
     "not with --cert/--key"),
    (["--domain", NAME, "--email", "nobody"], "--email must be an address"),
    (["--domain", NAME, "--acme-server", "http://ca.test/dir"], "must be an https:// URL"),
    (["--domain", NAME, "--cert", "/a b.crt", "--key", "/x.key"], "must not contain spaces"),
])
def test_bad_https_usage_exits_2_before_doing_anything(args, message):
    result = run_install(*args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr


def test_the_domain_is_lower_cased_and_relative_cert_paths_made_absolute(tmp_path):
    out = bash('cd "$1" && set_https_option --domain PBX1.Example.Test && '
               'set_https_option --cert own.crt && set_https_option --key /k.pem && '
               'echo "$OPT_DOMAIN $OPT_CERT $OPT_KEY"', tmp_path).stdout
    assert out == "pbx1.example.test %s/own.crt /k.pem\n" % tmp_path


@pytest.mark.parametrize("current, action", [
    ("", "set"),
    ("http://pbx.host.test/wav-files/", "set"),         # what step_config wrote
    ("http://127.0.0.1/wav-files/", "set"),             # the demo config's
    ("https://old.example.test/wav-files/", "set"),     # an earlier --domain's
    ("https://%s/wav-files/" % NAME, "same"),
    ("https://%s/wav-files" % NAME, "same"),            # the slash does not count
    ("https://cdn.example.test/recordings/", "keep"),   # the admin's own
    ("http://pbx.host.test/wav-files/x/", "keep"),
])
def test_base_url_changes_only_from_install_shs_own_values(current, action):
    result = bash('base_url_action "$1" "$(https_base_url "$2")" "$3" "$4" "$5"', current,
                  NAME, "http://pbx.host.test/wav-files/", "http://127.0.0.1/wav-files/",
                  "https://old.example.test/wav-files/")
    assert result.stdout == action + "\n"


def test_the_https_base_url_keeps_the_example_configs_trailing_slash():
    assert bash('https_base_url "$1"', NAME).stdout == "https://%s/wav-files/\n" % NAME
    example = (REPO / "etc" / "callexchange.ini.example").read_text()
    assert "/wav-files/" in bash('default_base_url').stdout and "base_url = @BASE_URL@" in example


def test_a_matching_certificate_and_key_have_no_problem(tmp_path):
    cert, key = make_cert(tmp_path, NAME)
    assert bash('cert_problems "$1" "$2" "$3"', cert, key, NAME).stdout == ""
    assert bash('cert_names "$1"', cert).stdout == NAME + "\n"


def test_certificate_problems_are_each_named(tmp_path):
    cert, key = make_cert(tmp_path, NAME)
    _other_cert, other_key = make_cert(tmp_path, "other.example.test")
    out = bash('cert_problems "$1" "$2" "$3"', cert, other_key, "wrong.example.test").stdout
    assert "%s is not the private key of %s" % (other_key, cert) in out
    assert "%s is not for wrong.example.test (its names: %s)" % (cert, NAME) in out
    (tmp_path / "junk.pem").write_text("junk\n")
    assert "is not a PEM certificate" in bash('cert_problems "$1" "$2" "$3"',
                                              tmp_path / "junk.pem", key, NAME).stdout
    assert "is not a PEM private key" in bash('cert_problems "$1" "$2" "$3"',
                                              cert, tmp_path / "junk.pem", NAME).stdout


def render_site(tls, cert_src="", allow_http=0, hsts=0, cert=None, key=None):
    script = ('DOMAIN=$1 CERT_SRC=$2 ALLOW_HTTP=$3 HSTS=$4 APP=/opt/callexchange/app; https_paths; '
              '[ -z "$6" ] || CERT_FILE=$6 KEY_FILE=$7; render_https_site "$5" %d' % tls)
    return bash(script, NAME, cert_src, allow_http, hsts, SITE_TEMPLATE, cert or "",
                key or "").stdout


def test_with_certbot_before_the_certificate_only_the_challenge_host_is_on():
    out = render_site(tls=0)
    assert "@" not in out.replace("@ signs", "")
    assert "Define CALLEXCHANGE_HTTPS_ACME" in out
    assert "UnDefine CALLEXCHANGE_HTTPS_TLS" in out
    # No certificate yet: plain HTTP stays open, else nothing would serve the gateway.
    assert "UnDefine CALLEXCHANGE_HTTPS_ONLY" in out
    assert 'Alias "/.well-known/acme-challenge/" "/var/lib/callexchange-acme/' in out


def test_with_the_certificate_tls_and_the_plain_http_guard_are_on():
    out = render_site(tls=1)
    for part in ("Define CALLEXCHANGE_HTTPS_ONLY", "Define CALLEXCHANGE_HTTPS_ACME",
                 "Define CALLEXCHANGE_HTTPS_TLS", "UnDefine CALLEXCHANGE_HTTPS_HSTS"):
        assert part in out.splitlines()
    assert 'SSLCertificateFile "/etc/letsencrypt/live/%s/fullchain.pem"' % NAME in out
    assert 'SSLCertificateKeyFile "/etc/letsencrypt/live/%s/privkey.pem"' % NAME in out
    assert "SetEnvIf Request_URI \"^\" CALLEXCHANGE_HTTPS_URL=https://%s" % NAME in out
    assert "SSLProtocol             -all +TLSv1.2 +TLSv1.3" in out
    assert "SSLSessionTickets       off" in out
    assert "guideline 5.7" in out


def test_allow_http_hsts_and_a_given_certificate_change_only_their_parts():
    out = render_site(tls=1, cert_src="/root/own.crt", allow_http=1, hsts=1)
    assert "UnDefine CALLEXCHANGE_HTTPS_ONLY" in out.splitlines()
    assert "UnDefine CALLEXCHANGE_HTTPS_ACME" in out.splitlines()   # no certbot: no challenge
    assert "Define CALLEXCHANGE_HTTPS_HSTS" in out.splitlines()
    assert 'SSLCertificateFile "/etc/callexchange/tls/%s.crt"' % NAME in out
    assert 'SSLCertificateKeyFile "/etc/callexchange/tls/%s.key"' % NAME in out


@pytest.mark.parametrize("tls", [0, 1])
def test_our_virtual_host_passes_apaches_syntax_check_with_the_main_snippet(tmp_path, tls):
    from apache_server import MODULES_DIR
    if not (MODULES_DIR / "mod_ssl.so").exists():
        pytest.skip("mod_ssl is not installed (part of apache2)")
    cert, key = make_cert(tmp_path, NAME)
    main = bash('render_site_conf "$1" /var/spool/asterisk/monitor',
                REPO / "apache" / "callexchange.conf.in").stdout
    site = render_site(tls=tls, cert=cert, key=key).replace("/opt/callexchange/app", str(REPO))
    modules = "".join('LoadModule %s_module "%s/mod_%s.so"\n' % (m, MODULES_DIR, m)
                      for m in ("socache_shmcb", "ssl", "setenvif"))
    result = _apache_syntax_check(tmp_path, modules + main + "\n" + site)
    assert result.returncode == 0, result.stderr


def test_certbot_is_asked_for_our_name_through_our_webroot_only():
    out = bash('DOMAIN=$1 EMAIL="" ACME_SERVER=$2 D_apache_ctl=apache2ctl INIT=none; certbot_args; '
               'printf "%s\\n" "${CERTBOT_ARGS[@]}"', NAME, "https://127.0.0.1:14000/dir").stdout
    args = out.splitlines()
    assert args[0] == "certonly" and "--apache" not in args
    assert args[args.index("--webroot") + 1:args.index("--webroot") + 3] == [
        "-w", "/var/lib/callexchange-acme"]
    assert args[args.index("-d") + 1] == NAME and args[args.index("--cert-name") + 1] == NAME
    assert args[args.index("--deploy-hook") + 1] == "apache2ctl graceful"
    assert "--register-unsafely-without-email" in args
    assert args[args.index("--server") + 1] == "https://127.0.0.1:14000/dir"
    out = bash('DOMAIN=$1 EMAIL=ops@example.test ACME_SERVER="" D_apache_ctl=apache2ctl D_apache_service=apache2 '
               'INIT=systemd; certbot_args; printf "%s\\n" "${CERTBOT_ARGS[@]}"', NAME).stdout
    args = out.splitlines()
    assert args[args.index("--email") + 1] == "ops@example.test" and "--server" not in args
    assert args[args.index("--deploy-hook") + 1] == "systemctl reload apache2"


def test_the_options_a_rerun_keeps(tmp_path):
    options = tmp_path / "install-options"
    script = ('OPTIONS_FILE=$1 WORK=$2 ASTERISK_ETC=/etc/asterisk APACHE_MODE=cgi; '
              'install_file() { cat "$1" > "$OPTIONS_FILE"; }; '
              'OPT_DOMAIN=$3 OPT_CERT=/c.crt OPT_KEY=/c.key OPT_ALLOW_HTTP=1; load_https_options; '
              'write_options; '
              'OPT_DOMAIN="" OPT_CERT="" OPT_KEY="" OPT_ALLOW_HTTP=""; load_https_options; '
              'echo "$DOMAIN $CERT_SRC $KEY_SRC $ALLOW_HTTP $HSTS $CERT_FILE"; '
              'OPT_DOMAIN=-; load_https_options; echo "[$DOMAIN$CERT_SRC$KEY_SRC] $ALLOW_HTTP"')
    out = bash(script, options, tmp_path, NAME).stdout.splitlines()
    assert out[0] == "%s /c.crt /c.key 1 0 /etc/callexchange/tls/%s.crt" % (NAME, NAME)
    assert out[1] == "[] 1"    # --no-domain drops the name and its certificate, not --allow-http
    assert "domain=%s\n" % NAME in options.read_text()


def test_a_new_domain_does_not_inherit_the_old_ones_certificate(tmp_path):
    options = tmp_path / "install-options"
    options.write_text("domain=old.example.test\ncert=/old.crt\nkey=/old.key\nemail=a@b.test\n")
    out = bash('OPTIONS_FILE=$1; OPT_DOMAIN=$2; load_https_options; '
               'echo "$DOMAIN [$CERT_SRC] [$EMAIL] $CERT_FILE"', options, NAME).stdout
    assert out == "%s [] [] /etc/letsencrypt/live/%s/fullchain.pem\n" % (NAME, NAME)


def test_the_https_keys_are_in_the_config_schema_and_validated():
    config = config_from_text("[ami]\nusername = u\nsecret = s\n[ani]\ndefault = 12125550100\n"
                              "[https]\ndomain = PBX1.Example.Test\ncertificate = /c.pem\n")
    assert config.https.domain == "pbx1.example.test" and config.https.certificate == "/c.pem"
    with pytest.raises(Exception, match=r"\[https\] domain must be a DNS name"):
        config_from_text("[ami]\nusername = u\nsecret = s\n[ani]\ndefault = 12125550100\n"
                         "[https]\ndomain = not a name\n")
