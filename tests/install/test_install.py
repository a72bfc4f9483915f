"""install.sh, its pure parts: the distro table, rendering, the #include lines, the
manifest, the config it writes, the demo CRM. The script is sourced (it runs nothing
then) and one function is called per test; nothing here touches the machine outside
pytest's temp dirs. The real install, twice, the forced failure and the uninstall are
.ci/install-check.sh's job (it needs a disposable machine)."""

import base64
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from paths import REPO

from callexchange.config import config_from_text, ConfigError, SCHEMA

INSTALL = REPO / "install.sh"
EXAMPLE = REPO / "etc" / "callexchange.ini.example"


def bash(script, *args, env=None, check=True):
    """Run `script` in bash after sourcing install.sh; $1... are `args`."""
    result = subprocess.run(
        ["bash", "-c", 'source "$0" || exit 99; ' + script, str(INSTALL)] + [str(a) for a in args],
        capture_output=True, text=True, env=dict(os.environ, **(env or {})), check=False)
    if check and result.returncode != 0:
        raise AssertionError("bash failed (%d): %s" % (result.returncode, result.stderr))
    return result


def install_values(**overrides):
    """The values install.sh puts into etc/callexchange.ini.example for a plain install."""
    values = dict(AMI_HOST="127.0.0.1", AMI_PORT="5038", AMI_USERNAME="callexchange",
                  AMI_SECRET="0123456789abcdef0123456789abcdef", ANI_DEFAULT="4930123456",
                  RECORDINGS_ROOT="/var/spool/asterisk/monitor",
                  BASE_URL="http://pbx.example.test/wav-files/", WEBHOOK_URL="",
                  WEBHOOK_SECRET="")
    values.update(overrides)
    return ["%s=%s" % item for item in values.items()]


# --- the distro table ------------------------------------------------------------------

def test_every_distro_table_row_names_a_value_for_both_families():
    table = bash('printf "%s\\n" "$DISTRO_TABLE"').stdout
    rows = [line.split() for line in table.splitlines()
            if line.strip() and not line.startswith("#")]
    assert len(rows) >= 15
    for row in rows:
        assert len(row) == 3, "row %r needs exactly a name, a Debian and a RHEL value" % row


@pytest.mark.parametrize("family, name, expected", [
    ("debian", "apache_service", "apache2"),
    ("rhel", "apache_service", "httpd"),
    ("debian", "apache_conf_dir", "/etc/apache2/conf-available"),
    ("rhel", "apache_conf_dir", "/etc/httpd/conf.d"),
    ("debian", "web_user", "www-data"),
    ("rhel", "web_user", "apache"),
    ("debian", "apache_mod_enable", "a2enmod"),
    ("rhel", "apache_mod_enable", ""),
    ("debian", "packages", "apache2,libapache2-mod-xsendfile,python3,python3-venv,ca-certificates"),
])
def test_distro_value_reads_the_table(family, name, expected):
    assert bash('distro_value "$1" "$2"', family, name).stdout == expected + "\n"


def test_distro_value_of_an_unknown_row_fails():
    result = bash('distro_value debian no_such_row', check=False)
    assert result.returncode != 0
    assert "no row no_such_row" in result.stderr


def test_the_apache_modules_are_the_ones_the_snippet_needs():
    modules = bash('distro_value debian apache_modules').stdout.strip().split(",")
    assert set(modules) == {"alias", "env", "mime", "headers", "allowmethods", "lua",
                            "xsendfile"}
    # One more per mode: the CGI's, or mod_wsgi's for --persistent.
    assert bash('distro_value debian apache_modules_cgi').stdout == "cgid\n"
    assert bash('distro_value debian apache_modules_wsgi').stdout == "wsgi\n"
    assert bash('distro_value debian wsgi_package').stdout == "libapache2-mod-wsgi-py3\n"


@pytest.mark.parametrize("template", ["callexchange.conf.in", "callexchange-wsgi.conf.in"])
def test_both_modes_snippets_render_and_pass_apaches_syntax_check(tmp_path, template):
    out = bash('render_site_conf "$1" /var/spool/asterisk/monitor',
               REPO / "apache" / template).stdout
    assert "@" not in out.replace("@ signs", "")
    module = "wsgi" if "wsgi" in template else "cgid"
    result = _apache_syntax_check(tmp_path, out, module)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("os_release, family", [
    ('ID=debian\nVERSION_ID="12"\n', "debian"),
    ('ID=ubuntu\nID_LIKE=debian\nVERSION_ID="22.04"\n', "debian"),
    ('ID="rocky"\nID_LIKE="rhel centos fedora"\nVERSION_ID="9.3"\n', "rhel"),
    ('ID="almalinux"\nID_LIKE="rhel centos fedora"\n', "rhel"),
    ('ID="rhel"\nVERSION_ID="9.4"\n', "rhel"),
    ('ID=linuxmint\nID_LIKE="ubuntu debian"\n', "debian"),
])
def test_detect_family_reads_id_and_id_like(tmp_path, os_release, family):
    path = tmp_path / "os-release"
    path.write_text(os_release)
    assert bash('detect_family "$1"', path).stdout.strip() == family


def test_detect_family_refuses_other_systems(tmp_path):
    path = tmp_path / "os-release"
    path.write_text('ID=alpine\n')
    result = bash('detect_family "$1"', path, check=False)
    assert result.returncode != 0
    assert "unsupported system" in result.stderr and "alpine" in result.stderr


# --- rendering --------------------------------------------------------------------------

def test_render_takes_values_literally(tmp_path):
    template = tmp_path / "t.in"
    template.write_text("a=@A@\nb=@B@ @A@\n")
    out = bash('render "$1" "A=x&y\\\\z|" "B=$2"', template, "/p a/t").stdout
    assert out == "a=x&y\\z|\nb=/p a/t x&y\\z|\n"


def test_render_fails_when_a_placeholder_has_no_value(tmp_path):
    template = tmp_path / "t.in"
    template.write_text("@A@ @MISSING@ @OTHER_1@ user@example.com\n")
    result = bash('render "$1" A=1', template, check=False)
    assert result.returncode != 0
    assert "@MISSING@ @OTHER_1@" in result.stderr


def test_the_installed_apache_snippet_has_every_placeholder_filled():
    out = bash('render_site_conf "$1" /var/spool/asterisk/monitor',
               REPO / "apache" / "callexchange.conf.in").stdout
    assert "@" not in out.replace("@ signs", "")
    assert 'ScriptAliasMatch "^/api/v1/asteriskapi(\\.pl)?$" ' \
           '"/opt/callexchange/app/cgi-bin/asteriskapi.pl"' in out
    assert 'SetEnv PATH "/opt/callexchange/venv/bin:' in out
    assert 'Alias "/wav-files/" "/var/spool/asterisk/monitor/"' in out


def _apache_syntax_check(tmp_path, site_conf_text, module="cgid"):
    """`apache2 -t` of a private server including `site_conf_text` (as tests/apache_server
    builds one, with mod_`module`: cgid or wsgi), or skip where Apache is not installed."""
    from apache_server import MODULES_DIR, find_apache, render

    binary = find_apache()
    if not binary or not (MODULES_DIR / ("mod_%s.so" % module)).exists():
        if os.environ.get("CI"):
            pytest.fail("CI is set but apache2 (mod_%s) is not installed" % module)
        pytest.skip("apache2 (mod_%s) is not installed" % module)
    site = tmp_path / "site.conf"
    site.write_text(site_conf_text)
    conf = tmp_path / "apache.conf"
    (tmp_path / "htdocs").mkdir()
    conf.write_text(render(REPO / "apache" / "standalone.conf.in", {
        "RUNDIR": str(tmp_path), "PORT": "8", "MODULES": str(MODULES_DIR),
        "USER": "nobody", "GROUP": "nogroup", "SITE_CONF": str(site)}))
    command = [binary, "-t", "-f", str(conf)] + (["-DCALLEXCHANGE_WSGI"] if module == "wsgi" else [])
    return subprocess.run(command, capture_output=True, text=True, check=False)


def test_the_installed_apache_snippet_passes_apache_syntax_check(tmp_path):
    out = bash('render_site_conf "$1" /var/spool/asterisk/monitor',
               REPO / "apache" / "callexchange.conf.in").stdout
    result = _apache_syntax_check(tmp_path, out)
    assert result.returncode == 0, result.stderr


# --- the config install.sh writes ---------------------------------------------------------

def test_the_written_config_is_valid_and_keeps_the_values(tmp_path):
    text = bash('render "$@"', EXAMPLE, *install_values()).stdout
    config = config_from_text(text, "callexchange.ini")
    assert config.ami.username == "callexchange"
    assert config.ami.secret == "0123456789abcdef0123456789abcdef"
    assert config.ani.default == ("4930123456",)
    assert config.recordings.base_url == "http://pbx.example.test/wav-files/"
    assert config.webhook.url == "" and config.webhook.secret == ""
    assert config.auth.keys_file == "/etc/callexchange/api-keys"
    assert config.state.dir == "/var/lib/callexchange"


def test_the_demo_config_is_valid():
    text = bash('render "$@"', EXAMPLE, *install_values(
        AMI_PORT="5038", ANI_DEFAULT="12125550100", BASE_URL="http://127.0.0.1/wav-files/",
        RECORDINGS_ROOT="/var/lib/callexchange/demo-recordings",
        WEBHOOK_URL="http://127.0.0.1:8099/webhooks",
        WEBHOOK_SECRET="whsec_" + base64.b64encode(b"k" * 24).decode())).stdout
    config = config_from_text(text, "demo.ini")
    assert config.webhook.url == "http://127.0.0.1:8099/webhooks"
    assert config.recordings.root == "/var/lib/callexchange/demo-recordings"


def test_without_a_caller_id_the_config_names_the_line_to_edit():
    text = bash('render "$@"', EXAMPLE, *install_values(ANI_DEFAULT="CHANGE-ME")).stdout
    line = next(number for number, content in enumerate(text.splitlines(), 1)
                if content.startswith("default = CHANGE-ME"))
    with pytest.raises(ConfigError) as raised:
        config_from_text(text, "/etc/callexchange/callexchange.ini")
    assert raised.value.line == line
    assert "[ani] default" in str(raised.value)


def read_config_in_bash(config, mode="install"):
    """install.sh's read_config on `config`, with this checkout as the app and the test
    venv as its venv; the CFG_* variables it set and CONFIG_PROBLEM."""
    names = ("CFG_AMI_HOST CFG_AMI_PORT CFG_AMI_USERNAME CFG_AMI_SECRET CFG_RECORDINGS_ROOT "
             "CFG_RECORDINGS_BASE_URL CFG_AUTH_KEYS_FILE CFG_STATE_DIR CFG_WEBHOOK_URL "
             "CONFIG_PROBLEM").split()
    script = ('VENV="$1"; APP="$2"; CONFIG="$3"; MODE="$4"; WORK=$(mktemp -d); read_config; '
              'for n in %s; do printf "%%s=%%s\\n" "$n" "${!n}"; done' % " ".join(names))
    result = bash(script, sys.prefix, REPO, config, mode, check=False)
    values = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    return result, values


def test_read_config_takes_the_values_from_the_gateways_loader(tmp_path):
    config = tmp_path / "callexchange.ini"
    config.write_text(bash('render "$@"', EXAMPLE, *install_values(
        AMI_PORT="5039", RECORDINGS_ROOT="/srv/rec", WEBHOOK_URL="http://127.0.0.1:8099/w"))
        .stdout.replace("dir = /var/lib/callexchange", "dir = /srv/state"))
    result, values = read_config_in_bash(config)
    assert result.returncode == 0, result.stderr
    assert values == {
        "CFG_AMI_HOST": "127.0.0.1", "CFG_AMI_PORT": "5039", "CFG_AMI_USERNAME": "callexchange",
        "CFG_AMI_SECRET": "0123456789abcdef0123456789abcdef",
        "CFG_RECORDINGS_ROOT": "/srv/rec",
        "CFG_RECORDINGS_BASE_URL": "http://pbx.example.test/wav-files/",
        "CFG_AUTH_KEYS_FILE": "/etc/callexchange/api-keys", "CFG_STATE_DIR": "/srv/state",
        "CFG_WEBHOOK_URL": "http://127.0.0.1:8099/w", "CONFIG_PROBLEM": ""}


def test_read_config_of_a_config_that_does_not_validate_names_the_problem(tmp_path):
    config = tmp_path / "callexchange.ini"
    config.write_text(bash('render "$@"', EXAMPLE, *install_values(ANI_DEFAULT="CHANGE-ME")).stdout)
    result, values = read_config_in_bash(config)
    assert result.returncode == 0, result.stderr
    assert values["CFG_AMI_USERNAME"] == "callexchange"
    assert values["CONFIG_PROBLEM"].startswith("%s:" % config)
    assert "[ani] default" in values["CONFIG_PROBLEM"]
    # --demo refuses such a config instead of running on it.
    result, _ = read_config_in_bash(config, mode="demo")
    assert result.returncode == 1
    assert "is not valid" in result.stderr and "[ani] default" in result.stderr


def test_read_config_stops_on_a_config_that_does_not_parse(tmp_path):
    config = tmp_path / "callexchange.ini"
    config.write_text("[ami]\nno equals sign here\n")
    result, _ = read_config_in_bash(config)
    assert result.returncode == 1
    assert "%s cannot be read" % config in result.stderr and ":2:" in result.stderr


def test_install_sh_has_no_ini_reader_and_no_test_switch_of_its_own():
    text = INSTALL.read_text()
    # The config is read by `callexchange config` only, never by bash or an embedded script.
    for reader in ("parse_ini", "SCHEMA", "configparser", "import config"):
        assert reader not in text
    # Faults are injected from outside (.ci/install-check.sh), never by a variable here.
    assert re.findall(r"CALLEXCHANGE_[A-Z_]+", text) == ["CALLEXCHANGE_CONFIG"] * \
        text.count("CALLEXCHANGE_CONFIG")


def test_the_example_documents_every_config_key():
    text = EXAMPLE.read_text()
    for section, keys in SCHEMA.items():
        assert "[%s]" % section in text
        for key in keys:
            assert re.search(r"^%s =" % key, text, re.MULTILINE), \
                "etc/callexchange.ini.example lacks [%s] %s" % (section, key)


# --- Asterisk: the snippets and the #include lines ---------------------------------------

def test_add_include_appends_once_and_keeps_the_file(tmp_path):
    conf = tmp_path / "extensions.conf"
    conf.write_text("[general]\nstatic=yes\n")
    conf.chmod(0o640)
    inode = conf.stat().st_ino
    first = bash('add_include "$1" extensions_callexchange.conf', conf).stdout
    second = bash('add_include "$1" extensions_callexchange.conf', conf).stdout
    assert first == 'added\t#include "extensions_callexchange.conf"\n'
    assert second == 'present\t#include "extensions_callexchange.conf"\n'
    assert conf.read_text() == '[general]\nstatic=yes\n#include "extensions_callexchange.conf"\n'
    assert conf.stat().st_ino == inode and conf.stat().st_mode & 0o777 == 0o640


def test_add_include_accepts_an_unquoted_include_already_there(tmp_path):
    conf = tmp_path / "manager.conf"
    original = "[general]\nenabled = yes\n#include manager_callexchange.conf\n"
    conf.write_text(original)
    out = bash('add_include "$1" manager_callexchange.conf', conf).stdout
    assert out == "present\t#include manager_callexchange.conf\n"
    assert conf.read_text() == original


def test_add_include_does_not_match_another_file_name(tmp_path):
    conf = tmp_path / "manager.conf"
    conf.write_text('#include "manager_callexchangeXconf"\n#include "old_manager_callexchange.conf"\n')
    out = bash('add_include "$1" manager_callexchange.conf', conf).stdout
    assert out.startswith("added\t")


@pytest.mark.parametrize("original", [
    "[general]\nstatic=yes\n",
    "[general]\nstatic=yes",           # no newline at the end
    "",
])
def test_remove_include_restores_the_file_byte_for_byte(tmp_path, original):
    conf = tmp_path / "extensions.conf"
    conf.write_text(original)
    added = bash('add_include "$1" extensions_callexchange.conf', conf).stdout.rstrip("\n")
    how, line = added.split("\t")
    assert how == ("added+newline" if original and not original.endswith("\n") else "added")
    removed = bash('remove_include "$1" "$2" "$3"', conf, line, how).stdout
    assert removed == "removed\n"
    assert conf.read_text() == original
    assert bash('remove_include "$1" "$2" "$3"', conf, line, how).stdout == "absent\n"


def test_remove_include_keeps_what_the_admin_added_after_our_line(tmp_path):
    conf = tmp_path / "extensions.conf"
    conf.write_text("[general]")
    how, line = bash('add_include "$1" x_callexchange.conf', conf).stdout.rstrip("\n").split("\t")
    with open(conf, "a") as handle:
        handle.write("[mine]\nexten => 1,1,Hangup()\n")
    bash('remove_include "$1" "$2" "$3"', conf, line, how)
    assert conf.read_text() == "[general]\n[mine]\nexten => 1,1,Hangup()\n"


@pytest.mark.parametrize("name, installed, target", [
    ("extensions_callexchange.conf", "extensions_callexchange.conf", "extensions.conf"),
    ("manager_callexchange.conf", "manager_callexchange.conf", "manager.conf"),
    ("manager.conf", "callexchange-manager.conf", "manager.conf"),
    ("dialplan.conf", "callexchange-dialplan.conf", "extensions.conf"),
    ("pjsip.conf", "callexchange-pjsip.conf", ""),
])
def test_snippets_get_callexchange_names_and_their_main_file(name, installed, target):
    assert bash('snippet_name "$1"', "asterisk/" + name).stdout.strip() == installed
    assert bash('snippet_target "$1"', installed).stdout.strip() == target


def test_the_shipped_asterisk_snippets_render_with_the_install_values():
    snippets = sorted((REPO / "asterisk").glob("*.conf"))
    if not snippets:
        pytest.skip("no asterisk/*.conf in this checkout yet")
    for snippet in snippets:
        out = bash('render "$1" AMI_USERNAME=callexchange AMI_SECRET=abc123 '
                   'PREFIX=/opt/callexchange/app VENV=/opt/callexchange/venv '
                   'CONFIG=/etc/callexchange/callexchange.ini', snippet).stdout
        assert out
        if "manager" in snippet.name:
            assert "[callexchange]" in out and "secret = abc123" in out


# --- webhook delivery: systemd units, or a cron line ------------------------------------

UNIT_VALUES = ('PREFIX=/opt/callexchange/app APP=/opt/callexchange/app '
               'VENV=/opt/callexchange/venv CONFIG=/etc/callexchange/callexchange.ini '
               'SPOOL_USER=asterisk WEB_USER=www-data WEB_GROUP=www-data')


def test_cron_line_runs_the_service_command_as_its_user(tmp_path):
    unit = tmp_path / "x.service"
    unit.write_text("[Service]\nType=oneshot\nUser=asterisk\n"
                    "ExecStart=-/opt/v/bin/python3 /opt/a/bin/callexchange webhooks deliver\n")
    out = bash('cron_line "$1" www-data', unit).stdout
    assert out == ("* * * * * asterisk /opt/v/bin/python3 /opt/a/bin/callexchange webhooks "
                   "deliver >/dev/null 2>&1\n")


def test_cron_line_defaults_the_user(tmp_path):
    unit = tmp_path / "x.service"
    unit.write_text("[Service]\nExecStart=/bin/true\n")
    assert bash('cron_line "$1" www-data', unit).stdout.startswith("* * * * * www-data /bin/true")


def test_the_shipped_units_render_and_become_a_cron_line(tmp_path):
    units = sorted((REPO / "systemd").glob("*.service")) + sorted((REPO / "systemd").glob("*.timer"))
    if not units:
        pytest.skip("no systemd/ units in this checkout yet")
    for unit in units:
        rendered = tmp_path / unit.name
        rendered.write_text(bash('render "$1" ' + UNIT_VALUES, unit).stdout)
        if unit.suffix == ".service":
            line = bash('cron_line "$1" www-data', rendered).stdout
            assert line.startswith("* * * * * ")
            assert "@" not in line and "webhooks deliver" in line


# --- the manifest -------------------------------------------------------------------------

def test_manifest_add_records_each_entry_once(tmp_path):
    manifest = tmp_path / "opt" / "install-manifest"
    script = ('MANIFEST="$1"; manifest_add tree /opt/a; manifest_add file /x; '
              'manifest_add tree /opt/a; '
              'manifest_add include /e "#include \\"a b\\"" added+newline; '
              'manifest_add include /e "#include \\"a b\\""; '
              'manifest_add include /f "#include \\"a b\\""; manifest_add file /x/y')
    bash(script, manifest)
    entries = [line for line in manifest.read_text().splitlines() if not line.startswith("#")]
    assert entries == ["tree\t/opt/a", "file\t/x", 'include\t/e\t#include "a b"\tadded+newline',
                       'include\t/f\t#include "a b"', "file\t/x/y"]


# --- the command line ---------------------------------------------------------------------

def run_install(*args, user=None):
    command = [str(INSTALL)] + list(args)
    if user:
        command = ["setpriv", "--reuid=%s" % user, "--regid=%s" % user, "--clear-groups",
                   "--"] + command
    return subprocess.run(command, capture_output=True, text=True, check=False, timeout=60)


def test_help_describes_the_three_ways_to_run_it():
    result = run_install("--help")
    assert result.returncode == 0
    for word in ("--demo", "--uninstall", "--caller-id"):
        assert word in result.stdout


@pytest.mark.parametrize("args, message", [
    (["--frobnicate"], "unknown option --frobnicate"),
    (["--caller-id"], "--caller-id needs a NUMBER"),
    (["--caller-id", "12ab"], "--caller-id must be 6 to 15 digits"),
])
def test_bad_usage_exits_2_before_doing_anything(args, message):
    result = run_install(*args)
    assert result.returncode == 2
    assert message in result.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to become another user")
def test_it_refuses_to_run_without_root():
    from apache_server import shared_tempdir
    # nobody may not reach the checkout (a clone under /root): then a copy of the script.
    base = shared_tempdir("cx-install-nobody-")
    try:
        copy = base / "install.sh"
        shutil.copy2(INSTALL, copy)
        copy.chmod(0o755)
        result = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                                 "--", str(copy)], capture_output=True, text=True,
                                check=False, timeout=60)
    finally:
        shutil.rmtree(base)
    assert result.returncode == 1
    assert "run as root" in result.stderr


# --- the demo CRM stand-in ----------------------------------------------------------------

def _free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_the_demo_crm_service_runs_the_package_and_logs_signed_webhooks(tmp_path):
    # install.sh embeds no program: its service runs `callexchange webhooks demo-crm`,
    # here from this checkout and this venv, exactly as install.sh writes the command.
    from crm_standin import SECRET
    from callexchange.webhooks.payload import make_record
    from callexchange.webhooks.signing import request_headers, signing_key

    assert "BaseHTTPRequestHandler" not in INSTALL.read_text()
    config = tmp_path / "demo.ini"
    config.write_text(bash('render "$@"', EXAMPLE, *install_values(
        WEBHOOK_URL="http://127.0.0.1:1/webhooks", WEBHOOK_SECRET=SECRET)).stdout)
    log = tmp_path / "demo-webhooks.log"
    port = _free_port()
    command = bash('VENV=$1 APP=$2 CONFIG=$3 DEMO_WEBHOOK_LOG=$4; demo_crm_command "$5"',
                   sys.prefix, REPO, config, log, port).stdout
    assert command.endswith("webhooks demo-crm --listen 127.0.0.1:%d --log %s" % (port, log))
    crm = subprocess.Popen(command.split(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert crm.poll() is None and time.monotonic() < deadline, \
                    crm.stdout.read1().decode()
                time.sleep(0.05)
        record = make_record("connect", {"CX_UNIQUEID": "1.2", "CX_DESTINATION": "4930901820"},
                             config_from_text(config.read_text()).webhook, now=time.time())
        headers = request_headers(record, signing_key(SECRET), now=time.time())
        request = urllib.request.Request("http://127.0.0.1:%d/webhooks" % port,
                                         data=record["body"].encode(), headers=headers,
                                         method="POST")
        with urllib.request.urlopen(request, timeout=5) as reply:
            assert reply.status == 200
    finally:
        crm.terminate()
        crm.wait(5)
        crm.stdout.close()
    (entry,) = [json.loads(line) for line in log.read_text().splitlines()]
    assert entry["signature"] == "valid" and entry["event"] == "connect"
    assert entry["webhook_id"] == "msg_1.2_connect"
    assert entry["body"]["dialed_number"] == "4930901820"


# --- the scripts themselves ----------------------------------------------------------------

@pytest.mark.parametrize("script", ["install.sh", ".ci/run", ".ci/host-check.sh",
                                    ".ci/install-check.sh", ".ci/install-https.sh",
                                    ".ci/install-real-pbx.sh"])
def test_shellcheck_finds_nothing(script):
    if not shutil.which("shellcheck"):
        pytest.skip("shellcheck is not installed (apt-get install shellcheck)")
    # -x from the checkout: the host checks source .ci/host-check.sh.
    result = subprocess.run(["shellcheck", "-x", script], cwd=REPO, capture_output=True,
                            text=True, check=False)
    assert result.returncode == 0, result.stdout


# --- least privilege: asterisk.conf, ACLs, the manifest's own bookkeeping ---------------

def test_asterisk_setting_reads_asterisk_conf(tmp_path):
    (tmp_path / "asterisk.conf").write_text(
        "; comment\n[directories](!)\nastagidir => /srv/agi ; trailing comment\n"
        "astsbindir=/opt/asterisk/sbin\n[options]\nrunuser = pbx\nverbose => 3\n")
    def setting(section, key):
        return bash('ASTERISK_ETC="$1"; asterisk_setting "$2" "$3"', tmp_path, section, key).stdout
    assert setting("directories", "astagidir") == "/srv/agi\n"
    assert setting("directories", "astsbindir") == "/opt/asterisk/sbin\n"
    assert setting("options", "runuser") == "pbx\n"
    assert setting("options", "astagidir") == ""        # other section
    assert bash('ASTERISK_ETC="$1"; asterisk_setting options runuser', tmp_path / "none").stdout == ""


def test_load_options_takes_the_agi_dir_from_asterisk_conf(tmp_path):
    etc = tmp_path / "etc"
    etc.mkdir()
    script = ('PREFIX="$1"; OPTIONS_FILE="$1/install-options"; OPT_ASTERISK_ETC="$2"; '
              'load_options; echo "$ASTERISK_ETC $AGI_DIR"')
    assert bash(script, tmp_path, etc).stdout == "%s /var/lib/asterisk/agi-bin\n" % etc
    (etc / "asterisk.conf").write_text("[directories]\nastagidir => /srv/agi\n")
    assert bash(script, tmp_path, etc).stdout == "%s /srv/agi\n" % etc
    # Remembered by an earlier run, when not given now.
    (tmp_path / "install-options").write_text("# x\nasterisk_etc=%s\n" % etc)
    assert bash(script, tmp_path, "").stdout == "%s /srv/agi\n" % etc
    (tmp_path / "install-options").unlink()
    assert bash(script, tmp_path, "").stdout.startswith("/etc/asterisk ")


def test_manifest_has_and_remove(tmp_path):
    manifest = tmp_path / "install-manifest"
    script = ('MANIFEST="$1"; manifest_add group-member asterisk www-data; '
              'manifest_add file /x; manifest_has group-member asterisk www-data && echo yes; '
              'manifest_has group-member asterisk other || echo no; '
              'manifest_remove group-member asterisk www-data; '
              'manifest_has group-member asterisk www-data || echo gone')
    assert bash(script, manifest).stdout == "yes\nno\ngone\n"
    entries = [line for line in manifest.read_text().splitlines() if not line.startswith("#")]
    assert entries == ["file\t/x"]


def _need_setfacl():
    if not shutil.which("setfacl"):
        if os.environ.get("CI"):
            pytest.fail("CI is set but setfacl is not installed (apt-get install acl)")
        pytest.skip("setfacl is not installed (apt-get install acl)")


def test_acl_grant_adds_what_is_missing_once_and_acl_revoke_takes_it_back(tmp_path):
    _need_setfacl()
    state = tmp_path / "state"
    state.mkdir(mode=0o750)
    manifest = tmp_path / "manifest"
    grant = ('MANIFEST="$1"; WORK="$2"; acl_grant "$3" user:nobody:--x default:other::---; '
             'echo "changed=$ACL_CHANGED"; acl_entries "$3"')
    first = bash(grant, manifest, tmp_path, state).stdout.splitlines()
    again = bash(grant, manifest, tmp_path, state).stdout.splitlines()
    assert first[0] == "changed=1" and again[0] == "changed=0"
    assert "user:nobody:--x" in first and "default:other::---" in first
    assert first[1:] == again[1:]
    entries = [line for line in manifest.read_text().splitlines() if not line.startswith("#")]
    assert entries == ["acl\t%s\tuser:nobody:--x" % state, "acl\t%s\tdefault:other::---" % state]
    # What the gateway creates below later is closed to others whatever the umask.
    (state / "ani").mkdir()
    (state / "ani" / "usage").write_text("1")
    assert (state / "ani").stat().st_mode & 0o007 == 0
    bash('acl_revoke "$1" user:nobody:--x; acl_revoke "$1" default:other::---', state)
    left = bash('acl_entries "$1"', state).stdout.splitlines()
    assert not [entry for entry in left if "nobody" in entry or entry.startswith("default:")]


def test_acl_grant_stops_with_a_reason_where_the_filesystem_has_no_acls(tmp_path):
    _need_setfacl()
    result = bash('MANIFEST="$1/m"; WORK="$1"; STEP=access; acl_grant /proc/self/status '
                  'user:nobody:r--', tmp_path, check=False)
    assert result.returncode == 1
    assert "cannot add the ACL entries user:nobody:r-- to /proc/self/status" in result.stderr
    assert "filesystem must support them" in result.stderr


def test_spool_user_is_asterisk_conf_runuser_or_asterisk_else_the_web_user(tmp_path):
    script = 'ASTERISK_ETC="$1"; WEB_USER=www-data; spool_user'
    assert bash(script, tmp_path / "none").stdout == "www-data\n"
    (tmp_path / "asterisk.conf").write_text("[options]\nrunuser = nobody\n")
    assert bash(script, tmp_path).stdout == "nobody\n"
    (tmp_path / "asterisk.conf").write_text("[options]\nrunuser = root\n")
    assert bash(script, tmp_path).stdout == "www-data\n"    # the hook as root: files given to www-data
