#!/usr/bin/env bash
# install.sh: install the CallExchange PBX gateway on this machine.
#
#   sudo ./install.sh [--caller-id NUMBER]   install or update; running it again changes nothing
#   sudo ./install.sh --demo                 also the sandbox PBX, a demo CRM and a demo key
#   sudo ./install.sh --uninstall            remove what it installed; keep config, keys, data
#   sudo ./install.sh --persistent           serve the URLs from mod_wsgi daemons (--cgi: back to CGI)
#   sudo ./install.sh --asterisk-etc DIR     Asterisk's config dir, if not /etc/asterisk
#   sudo ./install.sh --scrub-access-log     also keep our URLs out of the enabled sites' access logs
#   sudo ./install.sh --domain NAME [--email ADDR] [--acme-server URL]
#                                            serve the URLs over HTTPS as https://NAME/..., with a
#                                            certificate from certbot (Let's Encrypt, or that ACME CA)
#   sudo ./install.sh --domain NAME --cert FILE --key FILE
#                                            the same with a certificate you have (FILE: PEM, chain included)
#        --allow-http (--https-only)         keep plain HTTP open to every client (default: 127.0.0.1 only)
#        --hsts (--no-hsts)                  send Strict-Transport-Security (default: off)
#        --no-domain                         back to plain HTTP only (the certificate is kept)
#
# Debian 12 and Ubuntu 22.04+ (tested on Debian 12); RHEL 9 family where it can. Every
# step looks first and then prints either what it changed or "already in place"; every
# per-distro name is in DISTRO_TABLE below and nowhere else. What it created is listed in
# /opt/callexchange/install-manifest, which --uninstall works from. docs/install.md has
# the walk-through.
#
# Apache keeps serving what it served before when a step fails: the new snippet stays
# only if `apachectl configtest` accepts it (else the previous one is put back), and
# Apache is reloaded only then (.ci/install-check.sh proves it with a broken snippet of
# someone else's in conf-enabled/). The config is read only through `callexchange
# config`, the gateway's own reader.
#
# The functions can be sourced without running anything (tests/test_install.py does).
#
# shellcheck disable=SC2154  # the D_* names are set from DISTRO_TABLE by load_distro
# shellcheck disable=SC2016  # backquotes in messages are literal

set -Eeuo pipefail
shopt -s lastpipe       # `... | install_text` runs install_text in this shell
umask 022

# --- where things go ---------------------------------------------------------------------

PREFIX=/opt/callexchange
APP=$PREFIX/app                         # lib/ cgi-bin/ agi-bin/ apache/ bin/ asterisk/ systemd/ docs/
VENV=$PREFIX/venv                       # requirements(-runtime).txt, pinned
DEMO_DIR=$PREFIX/demo                   # where older installs kept the demo CRM
MANIFEST=$PREFIX/install-manifest       # what install.sh created or changed
OPTIONS_FILE=$PREFIX/install-options    # the options a re-run keeps (--asterisk-etc ...)
CONFIG_DIR=/etc/callexchange
CONFIG=$CONFIG_DIR/callexchange.ini
DEMO_KEY_FILE=$CONFIG_DIR/demo-api-key
WRAPPER=/usr/local/bin/callexchange
LOG_DIR=/var/log/callexchange
RUN_DIR=/run/callexchange               # pid files of background processes (no systemd)
ASTERISK_ETC=/etc/asterisk                # or --asterisk-etc DIR
AGI_DIR=/var/lib/asterisk/agi-bin         # or astagidir of $ASTERISK_ETC/asterisk.conf
SYSTEMD_DIR=/etc/systemd/system
CRON_FILE=/etc/cron.d/callexchange
APP_PARTS="lib cgi-bin agi-bin apache bin asterisk systemd docs"

# HTTPS (--domain): our virtual host, certbot's files, our copies of a given certificate.
HTTPS_SITE=callexchange-https             # sites-available/callexchange-https.conf
LETSENCRYPT=/etc/letsencrypt              # certbot's config dir (live/NAME/, renewal/NAME.conf)
ACME_WEBROOT=/var/lib/callexchange-acme   # certbot --webroot: the http-01 challenge files
TLS_DIR=$CONFIG_DIR/tls                   # --cert/--key copies: NAME.crt (0644), NAME.key (0600)

# The demo: a config of its own (only when none exists), the sandbox PBX, the CRM logger.
DEMO_AMI_PORT=5038
DEMO_CRM_PORT=8099
DEMO_CALLER_ID=12125550100
DEMO_RECORDINGS=/var/lib/callexchange/demo-recordings
DEMO_WEBHOOK_LOG=$LOG_DIR/demo-webhooks.log
DEMO_EXTENSION=2001
DEMO_DESTINATION=+4930901820
HTTP_BASE=http://127.0.0.1

# Each row: a name, then its value on the Debian family and on the RHEL family.
# Lists are comma-separated; "-" means "nothing to do there".
DISTRO_TABLE='
# name                debian (Debian 12, Ubuntu 22.04+)              rhel (RHEL, Rocky, Alma 9)
packages              apache2,libapache2-mod-xsendfile,python3,python3-venv,ca-certificates httpd,mod_lua,python3,python3-pip,ca-certificates
python                /usr/bin/python3                               /usr/bin/python3
demo_packages         curl                                           -
cron_package          cron                                           cronie
acl_package           acl                                            acl
cron_daemon           cron                                           crond
cron_pid_file         /run/crond.pid                                 /run/crond.pid
apache_service        apache2                                        httpd
apache_ctl            apache2ctl                                     apachectl
apache_conf_dir       /etc/apache2/conf-available                    /etc/httpd/conf.d
apache_conf_enable    a2enconf                                       -
apache_conf_disable   a2disconf                                      -
apache_conf_enabled   /etc/apache2/conf-enabled                      -
apache_mod_enable     a2enmod                                        -
apache_mod_disable    a2dismod                                       -
apache_mods_enabled   /etc/apache2/mods-enabled                      -
apache_modules        alias,env,mime,headers,allowmethods,lua,xsendfile -
apache_modules_cgi    cgid                                           -
apache_modules_wsgi   wsgi                                           -
apache_modules_https  ssl,setenvif                                   -
https_packages        openssl                                        openssl,mod_ssl
certbot_package       certbot                                        certbot
wsgi_package          libapache2-mod-wsgi-py3                        python3-mod_wsgi
apache_sites_dir      /etc/apache2/sites-available                   /etc/httpd/conf.d
apache_site_enable    a2ensite                                       -
apache_site_disable   a2dissite                                      -
apache_pid_file       /run/apache2/apache2.pid                       /run/httpd/httpd.pid
apache_error_log      /var/log/apache2/error.log                     /var/log/httpd/error_log
apache_log_dir        /var/log/apache2                               /var/log/httpd
apache_sites_enabled  /etc/apache2/sites-enabled                     -
web_user              www-data                                       apache
web_group             www-data                                       apache
selinux               no                                             yes
'

# --- output --------------------------------------------------------------------------------

CHANGES=0
STEP=start

step() { STEP=$1; }

# changed STEP WHAT: a step changed something; in_place STEP [DETAIL]: it found it done.
changed() {
    CHANGES=$((CHANGES + 1))
    printf '%-18s %s\n' "[$1]" "${*:2}"
}

in_place() {
    local detail="${*:2}"
    printf '%-18s already in place%s\n' "[$1]" "${detail:+ ($detail)}"
}

note() {
    printf '%-18s %s\n' "" "$*"
}

die() {
    printf '\ninstall.sh: error in step [%s]: %s\n' "$STEP" "$*" >&2
    exit 1
}

# Any command failing where nothing handles it stops the install with this message. In a
# subshell (a command substitution) the trap only passes the status on: the main shell
# says whether that stops the install, and a subshell's message would print while the
# install went on.
on_error() {
    if [ "$BASHPID" != "$$" ]; then
        exit "$1"
    fi
    printf '\ninstall.sh: error in step [%s]: `%s` failed (exit %s, install.sh line %s).\n' \
        "$STEP" "$3" "$1" "$2" >&2
    printf 'Nothing after this step was done; running install.sh again resumes from here.\n' >&2
    exit 1
}

# --- the distro table ----------------------------------------------------------------------

# distro_value FAMILY NAME: the table's entry ("-" becomes empty).
distro_value() {
    local column
    case $1 in
        debian) column=2 ;;
        rhel) column=3 ;;
        *) echo "distro_value: unknown family $1" >&2; return 1 ;;
    esac
    local value
    value=$(printf '%s\n' "$DISTRO_TABLE" | awk -v name="$2" -v col="$column" \
        '$1 == name { print $col; found = 1 } END { exit !found }') \
        || { echo "distro_value: no row $2 in DISTRO_TABLE" >&2; return 1; }
    [ "$value" = "-" ] && value=""
    printf '%s\n' "$value"
}

# detect_family [OS_RELEASE]: debian or rhel, from ID and ID_LIKE; fails for others.
detect_family() {
    local file=${1:-/etc/os-release} ids
    [ -r "$file" ] || { echo "cannot read $file" >&2; return 1; }
    # shellcheck disable=SC1090
    ids=$(. "$file" >/dev/null 2>&1; printf '%s %s' "${ID:-}" "${ID_LIKE:-}")
    local id
    for id in $ids; do
        case $id in
            debian|ubuntu) echo debian; return 0 ;;
            rhel|centos|fedora|rocky|almalinux|ol) echo rhel; return 0 ;;
        esac
    done
    echo "unsupported system (ID/ID_LIKE: $ids); supported: Debian, Ubuntu, RHEL 9 family" >&2
    return 1
}

load_distro() {
    FAMILY=$(detect_family /etc/os-release 2>"$WORK/family") \
        || die "$(cat "$WORK/family")"
    local name
    for name in packages python demo_packages cron_package acl_package cron_daemon cron_pid_file apache_service \
            apache_ctl apache_conf_dir apache_conf_enable apache_conf_disable \
            apache_conf_enabled apache_mod_enable apache_mod_disable apache_mods_enabled \
            apache_modules apache_modules_cgi apache_modules_wsgi apache_modules_https https_packages certbot_package wsgi_package apache_sites_dir \
            apache_site_enable apache_site_disable \
            apache_modules apache_pid_file apache_error_log apache_log_dir apache_sites_enabled \
            web_user web_group selinux; do
        printf -v "D_${name}" '%s' "$(distro_value "$FAMILY" "$name")"
    done
    WEB_USER=$D_web_user
    WEB_GROUP=$D_web_group
}

# detect_init: INIT=systemd when systemd runs as PID 1 (hosts, VMs), else INIT=none
# (containers, some CI): then services become background processes with pid files.
detect_init() {
    PID1=$(cat /proc/1/comm 2>/dev/null || ps -p 1 -o comm= 2>/dev/null || echo unknown)
    if [ "$PID1" = systemd ] && [ -d /run/systemd/system ]; then
        INIT=systemd
    else
        INIT=none
    fi
}

# --- pure helpers (tested by tests/test_install.py) ----------------------------------------

# render TEMPLATE NAME=VALUE...: the template with every @NAME@ replaced by VALUE; fails
# if any @NAME@ is left. Values are taken literally (no sed, no & or \ surprises).
render() {
    local template=$1 text pair name value
    shift
    text=$(cat "$template") || return 1
    for pair in "$@"; do
        name=${pair%%=*}
        value=${pair#*=}
        text=${text//"@$name@"/"$value"}
    done
    local left
    left=$(printf '%s\n' "$text" | grep -o '@[A-Z][A-Z0-9_]*@' | sort -u | tr '\n' ' ' || true)
    if [ -n "$left" ]; then
        echo "render: $template: no value for ${left% }" >&2
        return 1
    fi
    printf '%s\n' "$text"
}

# add_include FILE NAME: make FILE #include NAME, once: a line `#include NAME` or
# `#include "NAME"` already there is kept, else `#include "NAME"` is appended (after a
# newline if the file did not end with one). The file keeps its inode, owner and mode.
# Prints "<how><TAB><the line>", how being present, added, or added+newline.
add_include() {
    local file=$1 name=$2 found how=added
    found=$(grep -E -m 1 "^[[:space:]]*#include[[:space:]]+\"?${name//./\\.}\"?[[:space:]]*\$" "$file" || true)
    if [ -n "$found" ]; then
        printf 'present\t%s\n' "$found"
        return 0
    fi
    if [ -s "$file" ] && [ "$(tail -c 1 "$file" | od -An -c | tr -d ' ')" != '\n' ]; then
        printf '\n' >> "$file"
        how=added+newline
    fi
    printf '#include "%s"\n' "$name" >> "$file"
    printf '%s\t#include "%s"\n' "$how" "$name"
}

# remove_include FILE LINE [added+newline]: delete the lines equal to LINE, in place (same
# inode, owner and mode); with added+newline, and LINE last in the file, also the newline
# add_include put before it, so the file is byte for byte what it was. Prints "removed" or
# "absent".
remove_include() {
    local file=$1 line=$2 how=${3:-} kept last
    if ! grep -Fxq -- "$line" "$file"; then
        echo absent
        return 0
    fi
    last=$(tail -n 1 "$file")
    kept=$(mktemp)
    grep -Fxv -- "$line" "$file" > "$kept" || true
    if [ "$how" = added+newline ] && [ "$last" = "$line" ] && [ -s "$kept" ]; then
        truncate -s -1 "$kept"
    fi
    cat "$kept" > "$file"
    rm -f "$kept"
    echo removed
}

# render_site_conf TEMPLATE RECORDINGS_ROOT: the Apache snippet as installed.
render_site_conf() {
    render "$1" PREFIX="$APP" VENV="$VENV" CONFIG="$CONFIG" RECORDINGS_ROOT="$2" \
        RECORDINGS_ACCESS="${CFG_RECORDINGS_ACCESS:-public}" \
        LOG_DIR="${D_apache_log_dir:-/var/log/apache2}"
}

# --- HTTPS: pure helpers -------------------------------------------------------------------

# domain_valid NAME: a DNS name with at least one dot, lower case (it becomes a ServerName,
# a certbot -d, a file name and a URL: nothing else may reach them).
domain_valid() {
    [ "${#1}" -le 253 ] && [[ $1 =~ ^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$ ]]
}

# https_base_url NAME: what [recordings] base_url becomes (the example config's form,
# with the trailing slash).
https_base_url() {
    printf 'https://%s/wav-files/\n' "$1"
}

# base_url_action CURRENT TARGET OWN...: "same" when CURRENT is TARGET already; "set" when
# CURRENT is empty or one of install.sh's own earlier values OWN... (what step_config
# wrote, an earlier --domain's); else "keep": the admin chose it. Trailing slashes do not
# count (recording URLs are joined with exactly one).
base_url_action() {
    local current=${1%/} target=${2%/} own
    shift 2
    if [ "$current" = "$target" ]; then
        echo same
        return
    fi
    if [ -z "$current" ]; then
        echo set
        return
    fi
    for own in "$@"; do
        if [ -n "$own" ] && [ "$current" = "${own%/}" ]; then
            echo set
            return
        fi
    done
    echo keep
}

# cert_problems CERT KEY NAME: one line per reason why CERT and KEY cannot serve NAME (not
# PEM, key not CERT's, NAME not in it, expired); nothing when they can.
cert_problems() {
    local cert=$1 key=$2 name=$3
    if ! openssl x509 -in "$cert" -noout 2>/dev/null; then
        echo "$cert is not a PEM certificate"
        return
    fi
    if ! openssl pkey -in "$key" -noout 2>/dev/null; then
        echo "$key is not a PEM private key (without a passphrase: Apache starts unattended)"
        return
    fi
    if [ "$(openssl x509 -in "$cert" -noout -pubkey 2>/dev/null)" != "$(openssl pkey -in "$key" -pubout 2>/dev/null)" ]; then
        echo "$key is not the private key of $cert"
    fi
    if ! openssl x509 -in "$cert" -noout -checkhost "$name" 2>/dev/null | grep -q ' does match'; then
        echo "$cert is not for $name (its names: $(cert_names "$cert"))"
    fi
    if ! openssl x509 -in "$cert" -noout -checkend 0 >/dev/null 2>&1; then
        echo "$cert has expired ($(openssl x509 -in "$cert" -noout -enddate | sed 's/^notAfter=//'))"
    fi
}

# cert_names CERT: its DNS names (subjectAltName), else its CN.
cert_names() {
    local names
    names=$(openssl x509 -in "$1" -noout -ext subjectAltName 2>/dev/null \
        | grep -o 'DNS:[^,[:space:]]*' | sed 's/^DNS://' | paste -sd ' ' || true)
    [ -n "$names" ] || names=$(openssl x509 -in "$1" -noout -subject -nameopt multiline 2>/dev/null \
        | sed -n 's/^ *commonName *= *//p')
    printf '%s\n' "${names:-none}"
}

# https_paths: CERT_FILE and KEY_FILE that Apache serves for DOMAIN: our copies of
# --cert/--key, else certbot's live files.
https_paths() {
    if [ -n "$CERT_SRC" ]; then
        CERT_FILE=$TLS_DIR/$DOMAIN.crt
        KEY_FILE=$TLS_DIR/$DOMAIN.key
    else
        CERT_FILE=$LETSENCRYPT/live/$DOMAIN/fullchain.pem
        KEY_FILE=$LETSENCRYPT/live/$DOMAIN/privkey.pem
    fi
}

# define_if CONDITION: Define when CONDITION (a word: 1 or anything else) is 1, else UnDefine.
define_if() {
    if [ "$1" = 1 ]; then echo Define; else echo UnDefine; fi
}

# render_https_site TEMPLATE TLS: our virtual host for DOMAIN; TLS=1 once the certificate
# exists (before, only certbot's port-80 challenge host). Plain HTTP on our URLs is closed
# to other machines only once HTTPS is served, and not with --allow-http.
render_https_site() {
    local tls=$2 acme=0 only=0
    [ -z "$CERT_SRC" ] && acme=1
    [ "$tls" = 1 ] && [ "$ALLOW_HTTP" != 1 ] && only=1
    render "$1" PREFIX="$APP" DOMAIN="$DOMAIN" HTTPS_BASE="https://$DOMAIN" \
        CERT_FILE="$CERT_FILE" KEY_FILE="$KEY_FILE" ACME_WEBROOT="$ACME_WEBROOT" \
        HTTPS_ONLY="$(define_if "$only")" ACME="$(define_if "$acme")" \
        TLS="$(define_if "$tls")" HSTS="$(define_if "$HSTS")"
}

# certbot_args: CERTBOT_ARGS, the certbot command that obtains DOMAIN's certificate
# through our port-80 host (--webroot: certbot writes the challenge into our webroot and
# never edits a site of the host's), and reloads Apache after each renewal.
certbot_args() {
    local reload="$D_apache_ctl graceful"
    [ "$INIT" = systemd ] && reload="systemctl reload $D_apache_service"
    CERTBOT_ARGS=(certonly --non-interactive --agree-tos --webroot -w "$ACME_WEBROOT"
        -d "$DOMAIN" --cert-name "$DOMAIN" --keep-until-expiring --deploy-hook "$reload")
    if [ -n "$EMAIL" ]; then
        CERTBOT_ARGS+=(--email "$EMAIL")
    else
        CERTBOT_ARGS+=(--register-unsafely-without-email)
    fi
    [ -z "$ACME_SERVER" ] || CERTBOT_ARGS+=(--server "$ACME_SERVER")
}

# snippet_name FILE: the name an asterisk/ snippet gets in /etc/asterisk (ours carry
# "callexchange" in the name so they never clash with an admin's files).
snippet_name() {
    local name
    name=$(basename "$1")
    case $name in
        *callexchange*) echo "$name" ;;
        *) echo "callexchange-$name" ;;
    esac
}

# snippet_target NAME: the main Asterisk file that #includes this snippet, or nothing.
snippet_target() {
    case $1 in
        *extensions*|*dialplan*) echo extensions.conf ;;
        *manager*) echo manager.conf ;;
        *) echo "" ;;
    esac
}

# asterisk_setting SECTION KEY: KEY's value in [SECTION] of $ASTERISK_ETC/asterisk.conf
# (`key => value` or `key = value`; a template mark like [directories](!) is ignored),
# or nothing. Where Asterisk keeps its AGI scripts, which user it runs as.
asterisk_setting() {
    local file=$ASTERISK_ETC/asterisk.conf
    [ -r "$file" ] || return 0
    awk -v section="$1" -v key="$2" '
        { line = $0; sub(/;.*/, "", line) }
        line ~ /^[[:space:]]*\[/ {
            name = line; sub(/^[[:space:]]*\[/, "", name); sub(/\].*/, "", name)
            gsub(/[[:space:]]/, "", name); current = name; next }
        current == section && match(line, /=>?/) {
            name = substr(line, 1, RSTART - 1); gsub(/[[:space:]]/, "", name)
            if (name != key) next
            value = substr(line, RSTART + RLENGTH); gsub(/^[[:space:]]+|[[:space:]]+$/, "", value)
            print value; exit }' "$file"
}

# option_saved NAME: what an earlier run was given for NAME (install-options), or nothing.
option_saved() {
    [ -f "$OPTIONS_FILE" ] || return 0
    sed -n "s/^$1=//p" "$OPTIONS_FILE" | tail -n 1
}

# unit_setting UNIT_FILE KEY: the value of KEY= in a systemd unit (the last one wins).
unit_setting() {
    sed -n "s/^[[:space:]]*$2[[:space:]]*=[[:space:]]*//p" "$1" | tail -n 1
}

# cron_line SERVICE_FILE DEFAULT_USER: the /etc/cron.d line that does what the timer's
# service does, every minute, for hosts without systemd.
cron_line() {
    local command user
    command=$(unit_setting "$1" ExecStart)
    command=${command#[-@+!:]}
    user=$(unit_setting "$1" User)
    [ -n "$command" ] || return 1
    printf '* * * * * %s %s >/dev/null 2>&1\n' "${user:-$2}" "$command"
}

# manifest_add KIND PATH [DETAIL [HOW]]: record what was created, once (tab-separated).
# An entry with the same KIND, PATH and DETAIL is kept as first recorded: HOW (e.g. that
# add_include had to add a newline) describes the creation, which a later run does not see.
manifest_add() {
    local entry
    entry=$(printf '%s\t' "$@")
    entry=${entry%$'\t'}
    mkdir -p "$(dirname "$MANIFEST")"
    if [ ! -f "$MANIFEST" ]; then
        printf '# CallExchange install manifest: what install.sh created or changed.\n# kind\tpath\tdetail; read by install.sh --uninstall and .ci/install-check.sh.\n' > "$MANIFEST"
    fi
    if ! awk -F '\t' -v k="$1" -v p="$2" -v d="${3:-}" \
            '$1 == k && $2 == p && ($3 == d || (d == "" && NF == 2)) { found = 1 } END { exit !found }' \
            "$MANIFEST"; then
        printf '%s\n' "$entry" >> "$MANIFEST"
    fi
}

# manifest_has KIND PATH DETAIL: true if the manifest records that entry.
manifest_has() {
    [ -f "$MANIFEST" ] && awk -F '\t' -v k="$1" -v p="$2" -v d="$3" \
        '$1 == k && $2 == p && $3 == d { found = 1 } END { exit !found }' "$MANIFEST"
}

# manifest_remove KIND PATH DETAIL: forget an entry (what it recorded was undone).
manifest_remove() {
    [ -f "$MANIFEST" ] || return 0
    awk -F '\t' -v k="$1" -v p="$2" -v d="$3" '!($1 == k && $2 == p && $3 == d)' \
        "$MANIFEST" > "$MANIFEST.new"
    mv -f "$MANIFEST.new" "$MANIFEST"
}

# --- ACLs ----------------------------------------------------------------------------------

# acl_entries PATH: its ACL, one entry per line as getfacl spells them (user:NAME:r-x,
# default:other::---), without the "#effective" comments.
acl_entries() {
    getfacl --omit-header --absolute-names -- "$1" 2>/dev/null \
        | sed -e 's/[[:space:]]*#.*$//' -e '/^$/d'
}

# acl_grant PATH ENTRY...: add the entries PATH lacks, in getfacl's spelling, and record
# each in the manifest (--uninstall takes them away). ACL_CHANGED=1 when one was missing.
acl_grant() {
    local path=$1 entry have missing=()
    shift
    have=$(acl_entries "$path")
    for entry in "$@"; do
        grep -Fxq -- "$entry" <<< "$have" || missing+=("$entry")
        manifest_add acl "$path" "$entry"
    done
    ACL_CHANGED=0
    [ "${#missing[@]}" -gt 0 ] || return 0
    local list
    list=$(IFS=,; echo "${missing[*]}")
    setfacl -m "$list" -- "$path" 2> "$WORK/setfacl.log" \
        || die "cannot add the ACL entries $list to $path: $(cat "$WORK/setfacl.log")." \
               "install.sh lets Asterisk's user read the config and write the spool through" \
               "POSIX ACLs (and nothing else of the gateway): the filesystem must support them"
    ACL_CHANGED=1
}

# acl_revoke PATH ENTRY: undo acl_grant's ENTRY (a named entry is removed; a default
# base entry takes the whole default ACL with it).
acl_revoke() {
    local path=$1 entry=$2
    [ -e "$path" ] || return 0
    grep -Fxq -- "$entry" <<< "$(acl_entries "$path")" || return 0
    case $entry in
        default:user::*|default:group::*|default:other::*|default:mask::*) setfacl -k -- "$path" ;;
        *) setfacl -x "${entry%:*}" -- "$path" ;;
    esac
}

# --- file helpers -------------------------------------------------------------------------

# install_file SRC DEST MODE OWNER GROUP: DEST becomes a copy of SRC with that mode and
# owner, replaced atomically (temp file in DEST's dir, then rename). FILE_CHANGED=1 when
# anything had to change.
install_file() {
    local src=$1 dest=$2 mode=$3 owner=$4 group=$5
    FILE_CHANGED=0
    if [ -f "$dest" ] && [ ! -L "$dest" ] && cmp -s "$src" "$dest"; then
        if [ "$(stat -c '%a %U %G' "$dest")" != "$mode $owner $group" ]; then
            chown "$owner:$group" "$dest"
            chmod "$mode" "$dest"
            FILE_CHANGED=1
        fi
        return 0
    fi
    mkdir -p "$(dirname "$dest")"
    local tmp
    tmp=$(mktemp "$(dirname "$dest")/.cx-install.XXXXXX")
    cat "$src" > "$tmp"
    chown "$owner:$group" "$tmp"
    chmod "$mode" "$tmp"
    mv -f "$tmp" "$dest"
    FILE_CHANGED=1
}

# install_text DEST MODE OWNER GROUP: like install_file, the content from stdin.
install_text() {
    local tmp
    tmp=$(mktemp "$WORK/text.XXXXXX")
    cat > "$tmp"
    install_file "$tmp" "$@"
    rm -f "$tmp"
}

# ensure_dir DIR MODE OWNER GROUP: create DIR like that if missing (an existing dir is
# left as the admin has it). DIR_CHANGED=1 when created.
ensure_dir() {
    DIR_CHANGED=0
    if [ ! -d "$1" ]; then
        mkdir -p "$1"
        chown "$3:$4" "$1"
        chmod "$2" "$1"
        DIR_CHANGED=1
    fi
}

# wait_for_port HOST PORT SECONDS: true once something accepts connections there.
wait_for_port() {
    local deadline=$((SECONDS + $3))
    while [ "$SECONDS" -le "$deadline" ]; do
        if (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; then
            return 0
        fi
        sleep 0.2
    done
    return 1
}

port_is_free() {
    ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# free_port PREFERRED: PREFERRED if nothing listens there, else a free port from the kernel.
free_port() {
    if port_is_free "$1"; then
        echo "$1"
    else
        "$D_python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
    fi
}

random_hex() {
    "$D_python" -c 'import secrets, sys; print(secrets.token_hex(int(sys.argv[1])))' "$1"
}

user_exists() {
    getent passwd "$1" >/dev/null 2>&1
}

# as_user USER COMMAND...: run COMMAND as USER (and its groups), without a shell or PAM.
as_user() {
    local user=$1
    shift
    setpriv --reuid="$user" --regid="$(id -g "$user")" --init-groups -- "$@"
}

# --- steps --------------------------------------------------------------------------------

step_preflight() {
    step preflight
    [ "$(id -u)" -eq 0 ] || die "run as root: sudo $0 ${ARGS[*]}"
    if [ ! -f "$SRC/lib/callexchange/__init__.py" ] || [ ! -f "$SRC/requirements.txt" ]; then
        die "run from a CallExchange checkout ($SRC has no lib/callexchange or requirements.txt)"
    fi
    case $PREFIX$VENV$APP$CONFIG in
        *[[:space:]\|\&\\]*) die "install paths must not contain spaces, |, & or \\" ;;
    esac
    load_distro
    detect_init
    SPOOL_USER=$(spool_user)
    local pretty
    # shellcheck disable=SC1091
    pretty=$(. /etc/os-release 2>/dev/null; echo "${PRETTY_NAME:-unknown}")
    if [ "$INIT" = systemd ]; then
        echo "CallExchange install on $pretty ($FAMILY family; systemd is PID 1)"
    else
        echo "CallExchange install on $pretty ($FAMILY family; PID 1 is $PID1, not systemd:" \
             "services run as background processes with pid files in $RUN_DIR)"
    fi
}

# missing_packages PKG...: those not installed.
missing_packages() {
    local package
    for package in "$@"; do
        case $FAMILY in
            debian)
                dpkg-query -W -f='${Status}\n' "$package" 2>/dev/null | grep -q 'ok installed' \
                    || echo "$package" ;;
            rhel)
                rpm -q "$package" >/dev/null 2>&1 || echo "$package" ;;
        esac
    done
}

step_packages() {
    step packages
    local wanted
    wanted=$(echo "$D_packages" | tr ',' ' ')
    if [ "$MODE" = demo ]; then
        wanted="$wanted $(echo "$D_demo_packages" | tr ',' ' ')"
    fi
    if [ "$INIT" = none ] && ls "$SRC"/systemd/*.timer >/dev/null 2>&1; then
        wanted="$wanted $D_cron_package"     # the timers become /etc/cron.d lines
    fi
    if [ "$SPOOL_USER" != "$WEB_USER" ]; then
        wanted="$wanted $D_acl_package"      # setfacl: Asterisk's user reaches config and spool only
    fi
    if [ "$APACHE_MODE" = persistent ]; then
        wanted="$wanted $D_wsgi_package"     # mod_wsgi, for the daemon processes
    fi
    if [ -n "$DOMAIN" ]; then
        wanted="$wanted $(echo "$D_https_packages" | tr ',' ' ')"   # openssl checks the certificate
        [ -n "$CERT_SRC" ] || wanted="$wanted $D_certbot_package"
    fi
    wanted=$(printf '%s\n' "$wanted" | xargs)
    local missing
    # shellcheck disable=SC2086
    missing=$(missing_packages $wanted | xargs)
    if [ -z "$missing" ]; then
        in_place packages "$wanted"
        return
    fi
    local log=$WORK/packages.log
    case $FAMILY in
        debian)
            # shellcheck disable=SC2086
            { DEBIAN_FRONTEND=noninteractive apt-get update -q \
              && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing; } \
                > "$log" 2>&1 ;;
        rhel)
            # shellcheck disable=SC2086
            dnf install -y -q $missing > "$log" 2>&1 ;;
    esac || {
        tail -n 20 "$log" >&2
        die "could not install the packages: $missing (see the package manager's output" \
            "above). Nothing else was changed; Apache was not touched."
    }
    changed packages "installed $missing"
}

# Copy the app tree: every file of APP_PARTS in the checkout (no __pycache__), files no
# longer in the checkout removed. The AGI hook gets the venv's python as its interpreter,
# since Asterisk runs it directly.
step_app() {
    step app
    local copied=0 removed=0 part file rel dest mode expected=$WORK/app-files
    : > "$expected"
    ensure_dir "$APP" 755 root root
    for part in $APP_PARTS; do
        [ -d "$SRC/$part" ] || continue
        while IFS= read -r file; do
            rel=${file#"$SRC"/}
            dest=$APP/$rel
            echo "$dest" >> "$expected"
            mode=644
            [ -x "$file" ] && mode=755
            if [ "$part" = agi-bin ] && head -n 1 "$file" | grep -q '^#!.*python'; then
                # Keep the interpreter's flags (the hook runs `python3 -S`: no site, ~3 ms
                # of its 50 ms budget).
                flags=$(head -n 1 "$file" | sed -n 's/^#!.*python3\( .*\)\{0,1\}$/\1/p')
                { echo "#!$VENV/bin/python3$flags"; tail -n +2 "$file"; } \
                    | install_text "$dest" "$mode" root root
            else
                install_file "$file" "$dest" "$mode" root root
            fi
            copied=$((copied + FILE_CHANGED))
        done < <(find "$SRC/$part" -name __pycache__ -prune -o -type f ! -name '*.pyc' -print | sort)
    done
    while IFS= read -r file; do
        if ! grep -Fxq -- "$file" "$expected"; then
            rm -f "$file"
            case $file in
                *.py) rm -f "$(dirname "$file")/__pycache__/$(basename "$file" .py)".*.pyc ;;
            esac
            removed=$((removed + 1))
        fi
    done < <(find "$APP" -name __pycache__ -prune -o -type f -print | sort)
    find "$APP" -mindepth 1 -depth -type d -empty -delete
    manifest_add tree "$APP"
    APP_CHANGED=$((copied + removed))
    if [ "$APP_CHANGED" -eq 0 ]; then
        in_place app "$APP, $(wc -l < "$expected") files"
    else
        changed app "$APP: $copied file(s) copied, $removed removed"
    fi
}

# venv_usable: the web server's user, with the CGI's PATH, gets the venv's python.
venv_usable() {
    [ -x "$VENV/bin/python3" ] || return 1
    local prefix
    prefix=$(as_user "$WEB_USER" env -i PATH="$VENV/bin:/usr/bin:/bin" python3 -c \
        'import sys; print(sys.prefix)' 2>/dev/null) || return 1
    [ "$prefix" = "$VENV" ]
}

step_venv() {
    step venv
    # requirements-runtime.txt, where the checkout has one, leaves out the test tools
    # (pytest, WebTest, hypothesis), which a server does not need.
    local requirements=$SRC/requirements.txt
    [ -f "$SRC/requirements-runtime.txt" ] && requirements=$SRC/requirements-runtime.txt
    local name want have stamp=$VENV/.requirements.sha256
    name=$(basename "$requirements")
    want=$(sha256sum "$requirements" | cut -c1-64)
    have=$(cat "$stamp" 2>/dev/null || true)
    if [ "$have" = "$want" ] && venv_usable; then
        in_place venv "$VENV, $name ${want:0:12}"
        return
    fi
    if ! venv_usable; then
        # Missing, its python gone (a system upgrade), or made from a python the web
        # server cannot run (pyenv under /root): made anew from the distribution's.
        rm -rf "$VENV"
        "$D_python" -m venv "$VENV" || die "$D_python -m venv $VENV failed"
        venv_usable || die "$WEB_USER cannot run $VENV/bin/python3 as the CGI does" \
            "(PATH=$VENV/bin:... python3); is $D_python readable by everyone?"
    fi
    manifest_add tree "$VENV"
    "$VENV/bin/python3" -m pip install --disable-pip-version-check --no-input -q \
        -r "$requirements" > "$WORK/pip.log" 2>&1 || {
        tail -n 20 "$WORK/pip.log" >&2
        die "pip could not install $name into $VENV (output above). Apache was not" \
            "touched; run install.sh again once the cause is fixed."
    }
    echo "$want" > "$stamp"
    APP_CHANGED=$((APP_CHANGED + 1))
    changed venv "$VENV with $name (${want:0:12})"
}

# www-data cannot write __pycache__ under a root-owned tree: compile lib/ now.
step_bytecode() {
    step bytecode
    local before after
    before=$(find "$APP" -name '*.pyc' -printf '%p %s %T@\n' | sort | sha256sum)
    "$VENV/bin/python3" -m compileall -q "$APP/lib" > "$WORK/compileall.log" 2>&1 || {
        cat "$WORK/compileall.log" >&2
        die "python -m compileall $APP/lib failed"
    }
    after=$(find "$APP" -name '*.pyc' -printf '%p %s %T@\n' | sort | sha256sum)
    if [ "$before" = "$after" ]; then
        in_place bytecode "$APP/lib compiled"
    else
        changed bytecode "compiled $APP/lib"
    fi
}

step_wrapper() {
    step wrapper
    if [ -e "$WRAPPER" ] && ! grep -q 'CallExchange install.sh' "$WRAPPER" 2>/dev/null; then
        die "$WRAPPER exists and was not installed by install.sh; move it away and run again"
    fi
    printf '%s\n' '#!/bin/sh' \
        '# The CallExchange admin tool, with the gateway'"'"'s venv (installed by CallExchange install.sh).' \
        "exec $VENV/bin/python3 $APP/bin/callexchange \"\$@\"" \
        | install_text "$WRAPPER" 755 root root
    manifest_add file "$WRAPPER"
    if [ "$FILE_CHANGED" = 1 ]; then
        changed wrapper "$WRAPPER runs $APP/bin/callexchange with $VENV/bin/python3"
    else
        in_place wrapper "$WRAPPER"
    fi
}

# The config is written once: from etc/callexchange.ini.example, with a generated AMI
# secret; --demo writes a demo config instead. An existing file is never touched.
step_config() {
    step config
    ensure_dir "$CONFIG_DIR" 750 root "$WEB_GROUP"
    manifest_add keep "$CONFIG_DIR"
    if [ -e "$CONFIG" ]; then
        in_place config "$CONFIG kept as it is; install.sh never overwrites it"
        if [ -n "$CALLER_ID" ]; then
            note "--caller-id $CALLER_ID is not used: set [ani] default in $CONFIG yourself"
        fi
        return
    fi
    local template=$SRC/etc/callexchange.ini.example
    [ -f "$template" ] || die "missing $template"
    local ami_port=5038 caller_id=${CALLER_ID:-CHANGE-ME} base_url webhook_url="" \
        webhook_secret="" recordings=/var/spool/asterisk/monitor
    base_url=$(default_base_url)
    if [ "$MODE" = demo ]; then
        ami_port=$(free_port "$DEMO_AMI_PORT")
        caller_id=${CALLER_ID:-$DEMO_CALLER_ID}
        base_url=$HTTP_BASE/wav-files/
        webhook_url="http://127.0.0.1:$(free_port "$DEMO_CRM_PORT")/webhooks"
        webhook_secret="whsec_$("$D_python" -c 'import base64, os; print(base64.b64encode(os.urandom(24)).decode())')"
        recordings=$DEMO_RECORDINGS
    fi
    render "$template" AMI_HOST=127.0.0.1 AMI_PORT="$ami_port" AMI_USERNAME=callexchange \
        AMI_SECRET="$(random_hex 16)" ANI_DEFAULT="$caller_id" RECORDINGS_ROOT="$recordings" \
        BASE_URL="$base_url" WEBHOOK_URL="$webhook_url" WEBHOOK_SECRET="$webhook_secret" \
        > "$WORK/config.ini" || die "cannot render $template"
    install_file "$WORK/config.ini" "$CONFIG" 640 root "$WEB_GROUP"
    manifest_add keep "$CONFIG"
    if [ "$MODE" = demo ]; then
        changed config "wrote the demo config $CONFIG (AMI: the sandbox on 127.0.0.1:$ami_port;" \
            "webhooks: the demo CRM at $webhook_url)"
    else
        changed config "wrote $CONFIG (root:$WEB_GROUP 0640) with a generated AMI secret"
    fi
    if [ "$caller_id" = CHANGE-ME ]; then
        note "set your caller ID: [ani] default in $CONFIG (or run install.sh --caller-id NUMBER"
        note "before a config exists); until then the endpoints answer a 500 naming that line"
    fi
}

# cx ARGS...: the installed admin tool on the installed config, as root.
cx() {
    "$VENV/bin/python3" "$APP/bin/callexchange" --config "$CONFIG" "$@"
}

# read_config: CFG_<SECTION>_<KEY> shell variables from the config, read by the gateway's
# own loader (`callexchange config get`). A config that does not validate still yields
# its values (defaults where unset) and CONFIG_PROBLEM says what is wrong; one that
# cannot even be parsed stops the install.
read_config() {
    local out
    out=$(cx config get --lenient --shell --prefix CFG_ ami.host ami.port ami.username \
            ami.secret recordings.root recordings.base_url recordings.access auth.keys_file \
            state.dir webhook.url https.domain https.certificate 2> "$WORK/config.err") \
        || die "$CONFIG cannot be read: $(sed 's/^config error: //' "$WORK/config.err")"
    eval "$out"
    CONFIG_PROBLEM=""
    if ! cx config check > /dev/null 2> "$WORK/config.err"; then
        CONFIG_PROBLEM=$(sed 's/^config error: //' "$WORK/config.err")
    fi
    if [ -n "$CONFIG_PROBLEM" ] && [ "$MODE" = demo ]; then
        die "the existing $CONFIG is not valid: $CONFIG_PROBLEM. Fix it, or move it away" \
            "so that --demo writes a demo config"
    fi
    case "$CFG_RECORDINGS_ROOT$CFG_STATE_DIR" in
        *[[:space:]\|\&\\]*) die "[recordings] root and [state] dir must not contain spaces, |, & or \\" ;;
    esac
}

step_keys_file() {
    step keys
    if [ -e "$CFG_AUTH_KEYS_FILE" ]; then
        in_place keys "$CFG_AUTH_KEYS_FILE"
        return
    fi
    ensure_dir "$(dirname "$CFG_AUTH_KEYS_FILE")" 750 root "$WEB_GROUP"
    printf '# CallExchange API keys: label, SHA-256 of the key, created (UTC)\n' \
        | install_text "$CFG_AUTH_KEYS_FILE" 640 root "$WEB_GROUP"
    manifest_add keep "$CFG_AUTH_KEYS_FILE"
    changed keys "created $CFG_AUTH_KEYS_FILE (root:$WEB_GROUP 0640); add a key: callexchange keys add --label NAME"
}

# Who writes the webhook spool: the AGI hook, i.e. Asterisk's user where Asterisk is
# installed (asterisk.conf's runuser, else the user asterisk); else (the sandbox only)
# the web server's user.
spool_user() {
    local user=""
    [ -d "$ASTERISK_ETC" ] || { echo "$WEB_USER"; return; }
    user=$(asterisk_setting options runuser)
    if [ -n "$user" ] && [ "$user" != root ] && user_exists "$user"; then
        echo "$user"
    elif [ -z "$user" ] && user_exists asterisk; then
        echo asterisk
    else
        echo "$WEB_USER"
    fi
}

# The state dir belongs to the web server's user (the CGI writes ANI counts, replies,
# the recordings index there); the webhook spool below it to whoever runs the hook, in
# the web server's group (setgid, so that what the hook writes stays readable by the
# web server). Who else may reach what: step_access.
step_state() {
    step state
    local did=""
    if [ ! -d "$CFG_STATE_DIR" ]; then
        ensure_dir "$CFG_STATE_DIR" 750 "$WEB_USER" "$WEB_GROUP"
        did="created $CFG_STATE_DIR ($WEB_USER, 0750)"
    elif [ "$(stat -c %U "$CFG_STATE_DIR")" != "$WEB_USER" ]; then
        chown "$WEB_USER:$WEB_GROUP" "$CFG_STATE_DIR"
        did="gave $CFG_STATE_DIR to $WEB_USER (the CGI writes there)"
    fi
    manifest_add keep "$CFG_STATE_DIR"
    local spool=$CFG_STATE_DIR/webhooks
    if [ ! -d "$spool" ]; then
        ensure_dir "$spool" 2750 "$SPOOL_USER" "$WEB_GROUP"
        did="${did:+$did; }created $spool ($SPOOL_USER:$WEB_GROUP 2750)"
    elif [ "$(stat -c '%U:%G' "$spool")" != "$SPOOL_USER:$WEB_GROUP" ] \
            || [ -n "$(find "$spool" \( ! -user "$SPOOL_USER" -o ! -group "$WEB_GROUP" \) -print -quit)" ] \
            || [ -n "$(find "$spool" -type d ! -perm -g+s -print -quit)" ]; then
        chown -R "$SPOOL_USER:$WEB_GROUP" "$spool"
        find "$spool" -type d -exec chmod g+s {} +
        did="${did:+$did; }gave $spool to $SPOOL_USER:$WEB_GROUP, setgid (the hook writes there, the web server reads)"
    fi
    if [ -n "$did" ]; then
        changed state "$did"
    else
        in_place state "$CFG_STATE_DIR, spool $SPOOL_USER:$WEB_GROUP"
    fi
}

step_recordings() {
    step recordings
    if [ -d "$CFG_RECORDINGS_ROOT" ]; then
        in_place recordings "$CFG_RECORDINGS_ROOT served at /wav-files/"
        if ! as_user "$WEB_USER" test -r "$CFG_RECORDINGS_ROOT" -a -x "$CFG_RECORDINGS_ROOT"; then
            note "warning: $WEB_USER cannot read $CFG_RECORDINGS_ROOT; /wav-files/ will answer 403"
        fi
    elif [ "$MODE" = demo ]; then
        # The sandbox writes the demo recordings as the spool's user.
        ensure_dir "$CFG_RECORDINGS_ROOT" 755 "$SPOOL_USER" "$WEB_GROUP"
        case $CFG_RECORDINGS_ROOT in
            # Apache serves these: not the state dir's default ACL (other::---).
            "$CFG_STATE_DIR"/*) command -v setfacl >/dev/null && setfacl -b -- "$CFG_RECORDINGS_ROOT" ;;
        esac
        changed recordings "created $CFG_RECORDINGS_ROOT for the sandbox's recordings"
    else
        in_place recordings "$CFG_RECORDINGS_ROOT does not exist yet; Asterisk creates it"
    fi
}

# Least privilege for Asterisk's user, which runs the hook: it may read the config and
# write the spool, nothing else of ours; not the keys file, not the rest of the state
# dir. POSIX ACLs give it exactly that: traverse (--x) on the config dir and the state
# dir, read on the config file; the spool is its own. The state dir's default ACL
# (other::---) keeps whatever the gateway creates there later out of its reach whatever
# the umask. Older installs put Asterisk's user into the web server's group, which
# opened the keys file and the whole state dir: that membership is taken back.
step_access() {
    step access
    local did=""
    if id -nG "$SPOOL_USER" 2>/dev/null | tr ' ' '\n' | grep -Fxq "$WEB_GROUP" \
            && [ "$SPOOL_USER" != "$WEB_USER" ]; then
        if manifest_has group-member "$SPOOL_USER" "$WEB_GROUP"; then
            gpasswd -d "$SPOOL_USER" "$WEB_GROUP" > /dev/null
            manifest_remove group-member "$SPOOL_USER" "$WEB_GROUP"
            did="removed $SPOOL_USER from group $WEB_GROUP (an older install.sh put it there; it could read the keys file)"
            note "restart Asterisk when no calls are up (asterisk -rx 'core restart when convenient')" \
                 "for the running process to drop that group"
        else
            note "warning: $SPOOL_USER is in group $WEB_GROUP (not by install.sh): it can read" \
                 "$CFG_AUTH_KEYS_FILE and all of $CFG_STATE_DIR; remove it: gpasswd -d $SPOOL_USER $WEB_GROUP"
        fi
    fi
    if [ "$SPOOL_USER" != "$WEB_USER" ]; then
        local granted=""
        acl_grant "$CONFIG_DIR" "user:$SPOOL_USER:--x"
        [ "$ACL_CHANGED" = 1 ] && granted="$CONFIG_DIR (--x)"
        acl_grant "$CONFIG" "user:$SPOOL_USER:r--"
        [ "$ACL_CHANGED" = 1 ] && granted="${granted:+$granted, }$CONFIG (r--)"
        acl_grant "$CFG_STATE_DIR" "user:$SPOOL_USER:--x" "default:other::---"
        [ "$ACL_CHANGED" = 1 ] && granted="${granted:+$granted, }$CFG_STATE_DIR (--x; default other::---)"
        [ -n "$granted" ] && did="${did:+$did; }ACLs for $SPOOL_USER: $granted"
        # What an older install (or a umask of 022) left open to others in the state dir.
        local opened
        opened=$(find "$CFG_STATE_DIR" -mindepth 1 \( -path "$CFG_STATE_DIR/webhooks" \
            -o -path "$CFG_RECORDINGS_ROOT" \) -prune -o -perm /o=rwx -print | wc -l)
        if [ "$opened" -gt 0 ]; then
            find "$CFG_STATE_DIR" -mindepth 1 \( -path "$CFG_STATE_DIR/webhooks" \
                -o -path "$CFG_RECORDINGS_ROOT" \) -prune -o -perm /o=rwx -exec chmod o-rwx {} +
            did="${did:+$did; }closed $opened path(s) in $CFG_STATE_DIR to others"
        fi
    fi
    access_problems > "$WORK/access.log"
    if [ -s "$WORK/access.log" ]; then
        die "the access rights are not as they must be: $(paste -sd ';' "$WORK/access.log")"
    fi
    if [ -n "$did" ]; then
        changed access "$did"
    elif [ "$SPOOL_USER" != "$WEB_USER" ]; then
        in_place access "$SPOOL_USER reads $CONFIG and writes the spool; not the keys file or the rest of $CFG_STATE_DIR"
    else
        in_place access "$WEB_USER reads $CONFIG and the keys file, writes $CFG_STATE_DIR"
    fi
}

# access_problems: one line per right that is not as it must be, checked as the users
# themselves (setpriv, their groups from /etc/group).
access_problems() {
    local probe=$CFG_STATE_DIR/.cx-install-probe
    as_user "$WEB_USER" test -r "$CONFIG" || echo "$WEB_USER cannot read $CONFIG"
    as_user "$WEB_USER" test -r "$CFG_AUTH_KEYS_FILE" || echo "$WEB_USER cannot read $CFG_AUTH_KEYS_FILE"
    as_user "$WEB_USER" test -w "$CFG_STATE_DIR" || echo "$WEB_USER cannot write $CFG_STATE_DIR"
    as_user "$WEB_USER" test -r "$CFG_STATE_DIR/webhooks" || echo "$WEB_USER cannot read the spool"
    as_user "$SPOOL_USER" test -r "$CONFIG" || echo "$SPOOL_USER cannot read $CONFIG"
    as_user "$SPOOL_USER" test -w "$CFG_STATE_DIR/webhooks" || echo "$SPOOL_USER cannot write the spool"
    [ "$SPOOL_USER" != "$WEB_USER" ] || return 0
    ! as_user "$SPOOL_USER" test -r "$CFG_AUTH_KEYS_FILE" || echo "$SPOOL_USER can read $CFG_AUTH_KEYS_FILE"
    ! as_user "$SPOOL_USER" ls "$CFG_STATE_DIR" > /dev/null 2>&1 || echo "$SPOOL_USER can list $CFG_STATE_DIR"
    # Something the web server creates in the state dir later must stay out of reach too.
    rm -rf "$probe"
    as_user "$WEB_USER" sh -c 'umask 022; mkdir "$1" && : > "$1/file"' sh "$probe"
    ! as_user "$SPOOL_USER" test -r "$probe/file" \
        || echo "$SPOOL_USER can read what $WEB_USER creates in $CFG_STATE_DIR"
    rm -rf "$probe"
}

step_agi() {
    step agi
    if [ ! -d "$ASTERISK_ETC" ]; then
        return
    fi
    if ! ls "$APP"/agi-bin/* >/dev/null 2>&1; then
        in_place agi "no agi-bin/ in this checkout yet"
        return
    fi
    ensure_dir "$AGI_DIR" 755 root root
    local script link did=""
    for script in "$APP"/agi-bin/*; do
        link=$AGI_DIR/$(basename "$script")
        if [ -L "$link" ] && [ "$(readlink "$link")" = "$script" ]; then
            manifest_add link "$link"
            continue
        fi
        if [ -e "$link" ] && [ ! -L "$link" ]; then
            die "$link exists and is not ours; move it away and run again"
        fi
        ln -sfn "$script" "$link"
        manifest_add link "$link"
        did="${did:+$did, }$link"
    done
    if [ -n "$did" ]; then
        changed agi "linked $did -> $APP/agi-bin/"
    else
        in_place agi "$AGI_DIR -> $APP/agi-bin/"
    fi
}

# asterisk/*.conf go to /etc/asterisk under callexchange names; the admin's
# extensions.conf and manager.conf only get one #include line each.
step_asterisk_snippets() {
    step asterisk
    if [ ! -d "$ASTERISK_ETC" ]; then
        in_place asterisk "nothing to do: no $ASTERISK_ETC here; once Asterisk is installed, run install.sh again for the AGI hook and the dialplan"
        return
    fi
    if ! ls "$APP"/asterisk/*.conf >/dev/null 2>&1; then
        in_place asterisk "no asterisk/*.conf in this checkout yet"
        return
    fi
    local snippet name dest target line group did="" result
    group=$(stat -c %G "$ASTERISK_ETC" 2>/dev/null || echo root)
    for snippet in "$APP"/asterisk/*.conf; do
        name=$(snippet_name "$snippet")
        dest=$ASTERISK_ETC/$name
        render "$snippet" AMI_USERNAME="$CFG_AMI_USERNAME" AMI_SECRET="$CFG_AMI_SECRET" \
            PREFIX="$APP" VENV="$VENV" CONFIG="$CONFIG" > "$WORK/snippet" \
            || die "cannot render $snippet"
        install_file "$WORK/snippet" "$dest" 640 root "$group"
        manifest_add file "$dest"
        [ "$FILE_CHANGED" = 1 ] && did="${did:+$did, }$dest" && ASTERISK_RELOAD="$ASTERISK_RELOAD $name"
        target=$(snippet_target "$name")
        [ -n "$target" ] || continue
        if [ ! -f "$ASTERISK_ETC/$target" ]; then
            note "warning: no $ASTERISK_ETC/$target: add the line #include \"$name\" to it yourself"
            continue
        fi
        result=$(add_include "$ASTERISK_ETC/$target" "$name")
        line=${result#*$'\t'}
        case $result in
            added+newline*) manifest_add include "$ASTERISK_ETC/$target" "$line"$'\t'added+newline ;;
            *) manifest_add include "$ASTERISK_ETC/$target" "$line" ;;
        esac
        if [ "${result%%$'\t'*}" != present ]; then
            did="${did:+$did, }$line in $target"
            ASTERISK_RELOAD="$ASTERISK_RELOAD $name"
        fi
    done
    if [ -n "$did" ]; then
        changed asterisk "installed $did"
    else
        in_place asterisk "snippets and #include lines in $ASTERISK_ETC"
    fi
    if [ "$CFG_RECORDINGS_ROOT" != /var/spool/asterisk/monitor ]; then
        note "note: [recordings] root is $CFG_RECORDINGS_ROOT: set CX_RECORDING_ROOT=$CFG_RECORDINGS_ROOT"
        note "in [globals] of $ASTERISK_ETC/extensions.conf, so that MixMonitor writes there"
    fi
}

# asterisk_cli COMMAND: run COMMAND on the running Asterisk of $ASTERISK_ETC (its
# asterisk.conf, its binary from astsbindir); fails when none answers.
asterisk_cli() {
    local binary config=()
    binary=$(asterisk_setting directories astsbindir)
    if [ -n "$binary" ] && [ -x "$binary/asterisk" ]; then
        binary=$binary/asterisk
    else
        binary=$(command -v asterisk) || return 1
    fi
    if [ "$ASTERISK_ETC" != /etc/asterisk ] && [ -f "$ASTERISK_ETC/asterisk.conf" ]; then
        config=(-C "$ASTERISK_ETC/asterisk.conf")
    fi
    "$binary" "${config[@]}" -rx "$1" 2>/dev/null
}

# reload_asterisk SNIPPET_NAMES: reload the dialplan / manager if Asterisk is running.
reload_asterisk() {
    [ -n "${1// /}" ] || return 0
    if ! asterisk_cli 'core show version' >/dev/null; then
        note "Asterisk is not running: it reads the new files when it starts"
        return 0
    fi
    case $1 in *extensions*|*dialplan*) asterisk_cli 'dialplan reload' >/dev/null && note "asterisk: dialplan reloaded" ;; esac
    case $1 in *manager*) asterisk_cli 'manager reload' >/dev/null && note "asterisk: manager reloaded" ;; esac
    return 0
}

apache_running() {
    if [ "$INIT" = systemd ]; then
        systemctl is-active --quiet "$D_apache_service"
    else
        local pid
        pid=$(cat "$D_apache_pid_file" 2>/dev/null) && [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
    fi
}

# apache_reload: a graceful reload (running requests finish); output in $WORK/reload.log.
apache_reload() {
    if [ "$INIT" = systemd ]; then
        systemctl reload "$D_apache_service" > "$WORK/reload.log" 2>&1
    else
        "$D_apache_ctl" graceful > "$WORK/reload.log" 2>&1
    fi
}

# Our Apache snippets, the modules they need, as one transaction: every snippet put in
# place (or removed), enabled (or disabled), `configtest`, and on failure everything put
# back as it was; Apache is not reloaded until the whole passes. The main snippet is the
# CGI one, or the mod_wsgi one with --persistent: the same file name, so switching modes
# is one file's content.
step_apache_conf() {
    step apache-conf
    local template=callexchange.conf.in modules
    modules=$(echo "$D_apache_modules,$D_apache_modules_cgi" | tr ',' ' ')
    if [ "$APACHE_MODE" = persistent ]; then
        template=callexchange-wsgi.conf.in
        modules=$(echo "$D_apache_modules,$D_apache_modules_wsgi" | tr ',' ' ')
    fi
    render_site_conf "$SRC/apache/$template" "$CFG_RECORDINGS_ROOT" > "$WORK/callexchange.conf" \
        || die "cannot render apache/$template"
    APACHE_UNITS=("conf callexchange $WORK/callexchange.conf")
    # --domain: our virtual host (with TLS once the certificate exists); without, none.
    local site=-
    if [ -n "$DOMAIN" ]; then
        local tls=0
        https_cert_ready && tls=1
        render_https_site "$SRC/apache/callexchange-https.conf.in" "$tls" > "$WORK/$HTTPS_SITE.conf" \
            || die "cannot render apache/callexchange-https.conf.in"
        site=$WORK/$HTTPS_SITE.conf
        # mod_ssl only with the certificate: loaded, it opens port 443 (ports.conf).
        local module
        for module in $(echo "$D_apache_modules_https" | tr ',' ' '); do
            [ "$module" = ssl ] && [ "$tls" != 1 ] && continue
            modules="$modules $module"
        done
    fi
    APACHE_UNITS+=("site $HTTPS_SITE $site")
    apache_transaction "$modules"
}

# --- HTTPS steps ---------------------------------------------------------------------------

# The certificate's files before Apache sees our virtual host: --cert/--key copied into
# $TLS_DIR (the key root-only; a re-run copies them again if the operator's files
# changed, e.g. after a renewal), or certbot's webroot made. Certificates are kept by
# --uninstall.
step_https_files() {
    [ -n "$DOMAIN" ] || return 0
    step https-files
    https_paths
    if [ -z "$CERT_SRC" ]; then
        ensure_dir "$ACME_WEBROOT" 755 root root
        manifest_add tree "$ACME_WEBROOT"
        if [ "$DIR_CHANGED" = 1 ]; then
            changed https-files "created $ACME_WEBROOT (certbot --webroot: the http-01 challenge, served for $DOMAIN only)"
        else
            in_place https-files "$ACME_WEBROOT for certbot's http-01 challenge"
        fi
        return
    fi
    [ -r "$CERT_SRC" ] || die "--cert $CERT_SRC: cannot read it"
    [ -r "$KEY_SRC" ] || die "--key $KEY_SRC: cannot read it"
    local problems
    problems=$(cert_problems "$CERT_SRC" "$KEY_SRC" "$DOMAIN")
    [ -z "$problems" ] || die "$(paste -sd ';' <<< "$problems" | sed 's/;/; /g'). Nothing was changed."
    ensure_dir "$TLS_DIR" 755 root root
    manifest_add keep "$TLS_DIR"
    local did=""
    install_file "$CERT_SRC" "$CERT_FILE" 644 root root
    [ "$FILE_CHANGED" = 1 ] && did="$CERT_FILE (0644)"
    install_file "$KEY_SRC" "$KEY_FILE" 600 root root
    [ "$FILE_CHANGED" = 1 ] && did="${did:+$did, }$KEY_FILE (root only, 0600)"
    if [ -n "$did" ]; then
        APACHE_RELOAD=1     # Apache reads certificates when it (re)loads
        changed https-files "copied $did"
    else
        in_place https-files "$CERT_FILE, $KEY_FILE (root only) as $CERT_SRC, $KEY_SRC"
    fi
}

# https_cert_ready: the files Apache is to serve exist (as root: certbot's are root-only).
https_cert_ready() {
    [ -s "$CERT_FILE" ] && [ -s "$KEY_FILE" ]
}

# certbot: obtain DOMAIN's certificate once (our port-80 host answers the challenge, so
# Apache must be serving it: this runs after the apache step), then serve it: our vhost
# again, now with TLS. Renewals are certbot's own timer's (the deploy hook reloads
# Apache); a re-run does not ask the CA again.
step_certificate() {
    [ -n "$DOMAIN" ] || return 0
    step certificate
    if [ -n "$CERT_SRC" ]; then
        in_place certificate "$CERT_FILE: the certificate you gave (--cert); run install.sh again after renewing it"
        return
    fi
    manifest_add keep "$LETSENCRYPT/live/$DOMAIN"
    if https_cert_ready && [ -f "$LETSENCRYPT/renewal/$DOMAIN.conf" ]; then
        in_place certificate "$CERT_FILE, renewed by certbot ($LETSENCRYPT/renewal/$DOMAIN.conf)"
        return
    fi
    certbot_args
    if ! certbot "${CERTBOT_ARGS[@]}" > "$WORK/certbot.log" 2>&1; then
        sed 's/^/    /' "$WORK/certbot.log" | tail -n 25 >&2
        die "certbot could not obtain a certificate for $DOMAIN (its output above; its log:" \
            "/var/log/letsencrypt/letsencrypt.log). The CA must reach http://$DOMAIN/ on port 80" \
            "(DNS pointing here, port 80 open). Apache goes on serving plain HTTP."
    fi
    https_cert_ready || die "certbot succeeded but $CERT_FILE is missing"
    local ca="Let's Encrypt"
    [ -z "$ACME_SERVER" ] || ca=$ACME_SERVER
    changed certificate "obtained $CERT_FILE from $ca (certbot renews it; a deploy hook reloads Apache)"
    APACHE_RELOAD=0
    step_apache_conf
    step apache
    if [ "$APACHE_RELOAD" = 1 ]; then
        apache_reload || die "Apache did not reload: $(cat "$WORK/reload.log")"
        changed apache "reloaded gracefully: https://$DOMAIN/ is served"
    fi
}

# [https] domain and certificate for `callexchange check`; [recordings] base_url
# https://DOMAIN/wav-files/ unless the admin set it to something of their own.
step_https_config() {
    step https-config
    local did="" want_domain=$DOMAIN want_cert=""
    [ -n "$DOMAIN" ] && want_cert=$CERT_FILE
    if [ "$CFG_HTTPS_DOMAIN" != "$want_domain" ]; then
        cx config set https domain "$want_domain" > /dev/null
        did="[https] domain = ${want_domain:-(empty)}"
    fi
    if [ "$CFG_HTTPS_CERTIFICATE" != "$want_cert" ]; then
        cx config set https certificate "$want_cert" > /dev/null
        did="${did:+$did, }[https] certificate = ${want_cert:-(empty)}"
    fi
    if [ -n "$DOMAIN" ]; then
        local target action
        target=$(https_base_url "$DOMAIN")
        action=$(base_url_action "$CFG_RECORDINGS_BASE_URL" "$target" "$(default_base_url)" \
            "$HTTP_BASE/wav-files/" "$BASE_URL_SET")
        case $action in
            set)
                cx config set recordings base_url "$target" > /dev/null
                BASE_URL_SET=$target
                write_options
                did="${did:+$did, }[recordings] base_url = $target" ;;
            keep)
                note "warning: [recordings] base_url is $CFG_RECORDINGS_BASE_URL (not install.sh's):" \
                     "left as it is; recording URLs are https only as $target" ;;
        esac
    elif [ -n "$BASE_URL_SET" ] && [ "${CFG_RECORDINGS_BASE_URL%/}" = "${BASE_URL_SET%/}" ]; then
        note "note: [recordings] base_url stays $CFG_RECORDINGS_BASE_URL (no --domain now): set it yourself"
    fi
    if [ -n "$did" ]; then
        changed https-config "$CONFIG: $did"
    elif [ -n "$DOMAIN" ]; then
        in_place https-config "[https] domain $DOMAIN, certificate $CERT_FILE"
    fi
}

# default_base_url: what step_config writes as [recordings] base_url on a plain install.
default_base_url() {
    printf 'http://%s/wav-files/\n' "$(hostname -f 2>/dev/null || cat /proc/sys/kernel/hostname)"
}

# unit_path KIND NAME / unit_enabled_path KIND NAME: where snippet NAME (kind conf: a
# server-level snippet; site: a virtual host) lives, and its enabling link (none on RHEL).
unit_path() {
    case $1 in
        conf) echo "$D_apache_conf_dir/$2.conf" ;;
        site) echo "$D_apache_sites_dir/$2.conf" ;;
    esac
}
unit_enabled_path() {
    case $1 in
        conf) [ -z "$D_apache_conf_enabled" ] || echo "$D_apache_conf_enabled/$2.conf" ;;
        site) [ -z "$D_apache_sites_enabled" ] || echo "$D_apache_sites_enabled/$2.conf" ;;
    esac
}
unit_enable() {
    local tool=$D_apache_conf_enable
    [ "$1" = site ] && tool=$D_apache_site_enable
    [ -z "$tool" ] || "$tool" -q "$2" > /dev/null
}
unit_disable() {
    local tool=$D_apache_conf_disable
    [ "$1" = site ] && tool=$D_apache_site_disable
    [ -z "$tool" ] || "$tool" -q "$2" > /dev/null 2>&1
}

# apache_transaction MODULES: bring the snippets of APACHE_UNITS ("KIND NAME FILE", FILE
# the new text or "-" for "not there") and MODULES in place as described above.
apache_transaction() {
    local modules=$1 module missing_mods="" unit kind name rendered path enabled_path
    local changes=() done_list=()
    for module in $modules; do
        [ -e "$D_apache_mods_enabled/$module.load" ] || missing_mods="$missing_mods $module"
    done
    missing_mods=${missing_mods# }
    for unit in "${APACHE_UNITS[@]}"; do
        read -r kind name rendered <<< "$unit"
        path=$(unit_path "$kind" "$name")
        enabled_path=$(unit_enabled_path "$kind" "$name")
        if [ "$rendered" = - ]; then
            if [ -e "$path" ] || { [ -n "$enabled_path" ] && [ -e "$enabled_path" ]; }; then
                changes+=("$unit")
            fi
        elif ! cmp -s "$rendered" "$path" || { [ -n "$enabled_path" ] && [ ! -e "$enabled_path" ]; }; then
            changes+=("$unit")
        else
            manifest_add file "$path"
        fi
    done
    if [ "${#changes[@]}" -eq 0 ] && [ -z "$missing_mods" ]; then
        local names=()
        for unit in "${APACHE_UNITS[@]}"; do
            read -r kind name rendered <<< "$unit"
            [ "$rendered" = - ] || names+=("$(unit_path "$kind" "$name")")
        done
        in_place apache-conf "${names[*]}${D_apache_conf_enable:+, enabled}"
        return
    fi
    # Keep what is there, to put it back if Apache refuses the whole.
    local index=0 saved
    for unit in "${changes[@]}"; do
        read -r kind name rendered <<< "$unit"
        path=$(unit_path "$kind" "$name")
        enabled_path=$(unit_enabled_path "$kind" "$name")
        saved=$WORK/before.$index
        rm -f "$saved" "$saved.enabled"
        [ -f "$path" ] && cp -p "$path" "$saved"
        [ -n "$enabled_path" ] && [ -e "$enabled_path" ] && : > "$saved.enabled"
        if [ "$rendered" = - ]; then
            [ -n "$enabled_path" ] && [ -e "$enabled_path" ] && unit_disable "$kind" "$name"
            rm -f "$path"
            done_list+=("removed $path")
        else
            install_file "$rendered" "$path" 644 root root
            [ -n "$enabled_path" ] && [ ! -e "$enabled_path" ] && unit_enable "$kind" "$name"
            done_list+=("wrote $path")
        fi
        index=$((index + 1))
    done
    if [ -n "$missing_mods" ]; then
        # shellcheck disable=SC2086
        "$D_apache_mod_enable" -q $missing_mods >/dev/null
    fi
    if ! "$D_apache_ctl" configtest > "$WORK/configtest.log" 2>&1; then
        # Put back exactly what was there: the old snippets (or none), their enabling, the modules.
        index=0
        for unit in "${changes[@]}"; do
            read -r kind name rendered <<< "$unit"
            path=$(unit_path "$kind" "$name")
            enabled_path=$(unit_enabled_path "$kind" "$name")
            saved=$WORK/before.$index
            if [ -f "$saved" ]; then
                install_file "$saved" "$path" "$(stat -c %a "$saved")" "$(stat -c %U "$saved")" \
                    "$(stat -c %G "$saved")"
            else
                rm -f "$path"
            fi
            if [ -n "$enabled_path" ]; then
                if [ -e "$saved.enabled" ] && [ ! -e "$enabled_path" ]; then
                    unit_enable "$kind" "$name"
                elif [ ! -e "$saved.enabled" ] && [ -e "$enabled_path" ]; then
                    unit_disable "$kind" "$name"
                fi
            fi
            index=$((index + 1))
        done
        # shellcheck disable=SC2086
        [ -n "$missing_mods" ] && "$D_apache_mod_disable" -q $missing_mods >/dev/null 2>&1
        sed 's/^/    /' "$WORK/configtest.log" >&2
        die "Apache rejected the new configuration ($D_apache_ctl configtest, above):" \
            "the previous snippets were put back${missing_mods:+, modules $missing_mods disabled again}, and" \
            "Apache was NOT reloaded: it goes on serving what it served before."
    fi
    for unit in "${changes[@]}"; do
        read -r kind name rendered <<< "$unit"
        [ "$rendered" = - ] && continue
        manifest_add file "$(unit_path "$kind" "$name")"
        if [ -n "$(unit_enabled_path "$kind" "$name")" ]; then
            manifest_add "apache-$kind" "$name"
        fi
    done
    APACHE_RELOAD=1
    local summary
    summary=$(printf '%s; ' "${done_list[@]}")
    changed apache-conf "${summary}${missing_mods:+modules enabled: $missing_mods; }configtest: Syntax OK"
}

# --scrub-access-log: the condition appended to the enabled sites' CustomLog lines, so that
# they stop logging our URLs (whose query strings may carry an api-key or a recording
# token); our GlobalLog logs those, path only (apache/README.md). Only with the flag:
# those files are the admin's.
SCRUB_CONDITION='"expr=!(%{REQUEST_URI} =~ m#^/+(api/v1|recorded/v1|wav-files)(/|$)# || %{THE_REQUEST} =~ m#^[A-Za-z]+ /+(api/v1|recorded/v1|wav-files)([/?]| |$)#)"'

# scrub_custom_log FILE: FILE's text with SCRUB_CONDITION after every CustomLog line that
# has no condition yet (lines with env= or expr= are the admin's choice: left alone).
scrub_custom_log() {
    local line
    while IFS= read -r line || [ -n "$line" ]; do
        if [[ $line =~ ^[[:space:]]*CustomLog[[:space:]]+[^[:space:]]+[[:space:]]+[^[:space:]\"]+[[:space:]]*$ ]]; then
            line="${line%"${line##*[![:space:]]}"}"
            printf '%s %s\n' "$line" "$SCRUB_CONDITION"
        else
            printf '%s\n' "$line"
        fi
    done < "$1"
}

# unscrub_custom_log FILE: FILE's text without the condition scrub_custom_log added.
unscrub_custom_log() {
    local line
    while IFS= read -r line || [ -n "$line" ]; do
        printf '%s\n' "${line% "$SCRUB_CONDITION"}"
    done < "$1"
}

step_scrub_access_log() {
    step access-log
    [ -n "$D_apache_sites_enabled" ] && [ -d "$D_apache_sites_enabled" ] || return 0
    local site file edited=() previous
    for site in "$D_apache_sites_enabled"/*.conf; do
        [ -e "$site" ] || continue
        file=$(readlink -f "$site")
        scrub_custom_log "$file" > "$WORK/scrubbed"
        cmp -s "$WORK/scrubbed" "$file" && continue
        if [ "$SCRUB_ACCESS_LOG" != 1 ]; then
            note "note: $file logs the whole request line of our URLs, query string" \
                 "included; install.sh --scrub-access-log leaves them to callexchange-access.log"
            continue
        fi
        previous=$WORK/$(basename "$file").before
        cp -p "$file" "$previous"
        cat "$WORK/scrubbed" > "$file"
        if ! "$D_apache_ctl" configtest > "$WORK/configtest.log" 2>&1; then
            cat "$previous" > "$file"
            cat "$WORK/configtest.log" >&2
            die "Apache rejected $file with our CustomLog condition; it was put back"
        fi
        manifest_add scrubbed-log "$file"
        edited+=("$file")
    done
    if [ ${#edited[@]} -gt 0 ]; then
        APACHE_RELOAD=1
        changed access-log "our URLs are no longer logged by ${edited[*]} (they go to" \
            "$D_apache_log_dir/callexchange-access.log, without query strings)"
    elif [ "$SCRUB_ACCESS_LOG" = 1 ]; then
        in_place access-log "no enabled site logs our URLs with their query strings"
    fi
}

step_apache_service() {
    step apache
    if [ "$APACHE_MODE" = persistent ] && [ "$APP_CHANGED" != 0 ]; then
        APACHE_RELOAD=1     # the mod_wsgi daemons hold the old code until Apache restarts them
    fi
    if apache_running; then
        if [ "$APACHE_RELOAD" = 1 ]; then
            apache_reload || die "Apache did not reload: $(cat "$WORK/reload.log")"
            changed apache "reloaded gracefully: the gateway's URLs are served"
        else
            in_place apache "$D_apache_service running"
        fi
        return
    fi
    if [ "$INIT" = systemd ]; then
        systemctl enable --now "$D_apache_service" >/dev/null 2>&1 \
            || die "systemctl start $D_apache_service failed: see journalctl -u $D_apache_service"
        changed apache "started and enabled $D_apache_service"
    else
        "$D_apache_ctl" start > "$WORK/apache-start.log" 2>&1 || {
            cat "$WORK/apache-start.log" >&2
            die "$D_apache_ctl start failed (above; also $D_apache_error_log)"
        }
        changed apache "started $D_apache_service ($D_apache_ctl start; no systemd here: after a" \
            "reboot start it the same way)"
    fi
}

# SELinux (RHEL family, enforcing): the CGI runs from /opt and connects to the AMI port.
step_selinux() {
    step selinux
    [ "$D_selinux" = yes ] || return 0
    if ! command -v selinuxenabled >/dev/null || ! selinuxenabled; then
        return 0
    fi
    if ! command -v semanage >/dev/null; then
        note "warning: SELinux is on but semanage is missing (dnf install policycoreutils-python-utils)"
        return 0
    fi
    local did=""
    if ! semanage fcontext -l -C | grep -q "^$APP/cgi-bin"; then
        semanage fcontext -a -t httpd_sys_script_exec_t "$APP/cgi-bin(/.*)?"
        semanage fcontext -a -t httpd_sys_content_t "$APP/(lib|apache)(/.*)?"
        semanage fcontext -a -t httpd_sys_script_exec_t "$VENV(/.*)?"
        semanage fcontext -a -t httpd_sys_rw_content_t "$CFG_STATE_DIR(/.*)?"
        did="file contexts for $PREFIX and $CFG_STATE_DIR"
    fi
    restorecon -R "$PREFIX" "$CFG_STATE_DIR"
    if [ "$(getsebool httpd_can_network_connect | awk '{print $3}')" != on ]; then
        setsebool -P httpd_can_network_connect on
        did="${did:+$did; }httpd_can_network_connect on (AMI, webhooks)"
    fi
    if [ -n "$did" ]; then changed selinux "$did"; else in_place selinux "contexts and booleans"; fi
}

# Webhook retries: the systemd units from systemd/ (a timer runs `callexchange webhooks
# deliver`); without systemd, one /etc/cron.d line per timer does the same every minute.
step_webhook_delivery() {
    step webhooks
    if ! ls "$APP"/systemd/*.timer >/dev/null 2>&1; then
        in_place webhooks "no systemd/ timer in this checkout yet: the hook's own deliverer sends events"
        return
    fi
    if ! "$VENV/bin/python3" "$APP/bin/callexchange" webhooks --help >/dev/null 2>&1; then
        note "warning: this checkout's callexchange has no 'webhooks' command: the timer's runs fail"
    fi
    local unit name did="" reload=0
    if [ "$INIT" = systemd ]; then
        for unit in "$APP"/systemd/*.service "$APP"/systemd/*.timer; do
            [ -f "$unit" ] || continue
            name=$(basename "$unit")
            render "$unit" PREFIX="$APP" APP="$APP" VENV="$VENV" CONFIG="$CONFIG" \
                SPOOL_USER="$SPOOL_USER" WEB_USER="$WEB_USER" WEB_GROUP="$WEB_GROUP" \
                > "$WORK/unit" || die "cannot render $unit"
            install_file "$WORK/unit" "$SYSTEMD_DIR/$name" 644 root root
            manifest_add file "$SYSTEMD_DIR/$name"
            [ "$FILE_CHANGED" = 1 ] && reload=1 && did="${did:+$did, }$name"
        done
        [ "$reload" = 1 ] && systemctl daemon-reload
        for unit in "$APP"/systemd/*.timer; do
            name=$(basename "$unit")
            manifest_add unit "$name"
            if ! systemctl is-enabled --quiet "$name" || ! systemctl is-active --quiet "$name"; then
                systemctl enable --now "$name" >/dev/null 2>&1 || die "systemctl enable --now $name failed"
                did="${did:+$did, }enabled $name"
            fi
        done
        if [ -n "$did" ]; then changed webhooks "installed/enabled: $did"; else in_place webhooks "systemd timers enabled"; fi
        return
    fi
    local lines="# CallExchange webhook delivery (installed by install.sh; systemd is not running here)."
    for unit in "$APP"/systemd/*.timer; do
        local service=${unit%.timer}.service
        [ -f "$service" ] || continue
        render "$service" PREFIX="$APP" APP="$APP" VENV="$VENV" CONFIG="$CONFIG" \
            SPOOL_USER="$SPOOL_USER" WEB_USER="$WEB_USER" WEB_GROUP="$WEB_GROUP" \
            > "$WORK/service" || die "cannot render $service"
        lines="$lines"$'\n'"$(cron_line "$WORK/service" "$SPOOL_USER")" \
            || die "no ExecStart= in $service"
    done
    printf '%s\n' "$lines" | install_text "$CRON_FILE" 644 root root
    manifest_add file "$CRON_FILE"
    [ "$FILE_CHANGED" = 1 ] && did="wrote $CRON_FILE"
    local pid
    pid=$(cat "$D_cron_pid_file" 2>/dev/null || true)
    if [ -z "$pid" ] || ! kill -0 "$pid" 2>/dev/null; then
        if command -v service >/dev/null && service "$D_cron_daemon" start >/dev/null 2>&1; then
            did="${did:+$did; }started $D_cron_daemon"
        elif command -v "$D_cron_daemon" >/dev/null && "$D_cron_daemon"; then
            did="${did:+$did; }started $D_cron_daemon"
        else
            note "warning: $D_cron_daemon is not running and could not be started: webhook retries wait for it"
        fi
    fi
    if [ -n "$did" ]; then changed webhooks "$did (every minute)"; else in_place webhooks "$CRON_FILE, $D_cron_daemon running"; fi
}

# --- the demo ------------------------------------------------------------------------------

# demo_service LABEL NAME DESCRIPTION USER PORT COMMAND...: keep COMMAND running as USER:
# a systemd service NAME where systemd runs, else a background process with a pid file.
# It is (re)started when it is not running, or when the app, the venv or its command
# changed.
demo_service() {
    local label=$1 name=$2 description=$3 user=$4 port=$5
    shift 5
    local command="$*" restart=0 how
    manifest_add process "$name"
    if [ "$INIT" = systemd ]; then
        printf '%s\n' '[Unit]' "Description=$description (installed by CallExchange install.sh --demo)" \
            'After=network.target' '' '[Service]' "User=$user" "Group=$(id -gn "$user")" \
            "Environment=CALLEXCHANGE_CONFIG=$CONFIG" "ExecStart=$command" 'Restart=on-failure' \
            'UMask=0022' '' '[Install]' 'WantedBy=multi-user.target' \
            | install_text "$SYSTEMD_DIR/$name.service" 644 root root
        manifest_add file "$SYSTEMD_DIR/$name.service"
        manifest_add unit "$name.service"
        if [ "$FILE_CHANGED" = 1 ]; then
            systemctl daemon-reload
            restart=1
        fi
        [ "$APP_CHANGED" != 0 ] && restart=1
        how="the systemd service $name"
        if systemctl is-active --quiet "$name" && systemctl is-enabled --quiet "$name" && [ "$restart" = 0 ]; then
            in_place "$label" "$how, running"
            return
        fi
        systemctl enable "$name" >/dev/null 2>&1
        systemctl restart "$name" || die "systemctl restart $name failed: journalctl -u $name"
    else
        local pid_file=$RUN_DIR/$name.pid pid running=0 stamp
        mkdir -p "$RUN_DIR"
        stamp="$user $command"
        pid=$(head -n 1 "$pid_file" 2>/dev/null || true)
        if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null \
                && tr '\0' ' ' < "/proc/$pid/cmdline" | grep -Fq -- "$command"; then
            running=1
        fi
        [ "$(sed -n 2p "$pid_file" 2>/dev/null)" = "$stamp" ] || restart=1
        [ "$APP_CHANGED" != 0 ] && restart=1
        how="$name as a background process (no systemd), pid file $pid_file, log $LOG_DIR/$name.log"
        if [ "$running" = 1 ] && [ "$restart" = 0 ]; then
            in_place "$label" "running as pid $pid; $how"
            return
        fi
        if [ "$running" = 1 ]; then
            kill "$pid" 2>/dev/null || true
            local waited=0
            while kill -0 "$pid" 2>/dev/null && [ "$waited" -lt 50 ]; do sleep 0.1; waited=$((waited + 1)); done
        fi
        # shellcheck disable=SC2086
        CALLEXCHANGE_CONFIG=$CONFIG setsid setpriv --reuid="$user" --regid="$(id -g "$user")" \
            --init-groups -- $command < /dev/null >> "$LOG_DIR/$name.log" 2>&1 &
        printf '%s\n%s\n' "$!" "$stamp" > "$pid_file"
    fi
    if [ -n "$port" ] && ! wait_for_port 127.0.0.1 "$port" 15; then
        tail -n 20 "$LOG_DIR/$name.log" 2>/dev/null >&2 || true
        die "$name did not start listening on 127.0.0.1:$port (log: $LOG_DIR/$name.log" \
            "or journalctl -u $name)"
    fi
    changed "$label" "started $how"
}

# demo_crm_command PORT: the demo CRM's command line (the package's own, so it signs and
# checks with the gateway's one Standard Webhooks module).
demo_crm_command() {
    printf '%s' "$VENV/bin/python3 $APP/bin/callexchange --config $CONFIG webhooks demo-crm" \
        " --listen 127.0.0.1:$1 --log $DEMO_WEBHOOK_LOG"
}

step_demo() {
    step demo
    ensure_dir "$LOG_DIR" 755 "$SPOOL_USER" "$WEB_GROUP"
    if [ "$DIR_CHANGED" = 1 ]; then
        changed demo-logs "created $LOG_DIR"
    else
        in_place demo-logs "$LOG_DIR"
    fi
    manifest_add keep "$LOG_DIR"

    # The CRM stand-in (`callexchange webhooks demo-crm`: logs every webhook as one JSON
    # line, checks its Standard Webhooks signature against [webhook] secret, answers
    # 200), where the config's webhook URL points (or its default port).
    step demo-crm
    if [ -e "$DEMO_DIR/demo-crm.py" ]; then
        rm -f "$DEMO_DIR/demo-crm.py"   # an older install's copy: now part of the app
        rmdir "$DEMO_DIR" 2>/dev/null || true
    fi
    local crm_port=$DEMO_CRM_PORT
    case $CFG_WEBHOOK_URL in
        http://127.0.0.1:*|http://localhost:*)
            crm_port=${CFG_WEBHOOK_URL#http://*:}
            crm_port=${crm_port%%/*} ;;
        *)
            note "note: [webhook] url is '$CFG_WEBHOOK_URL', not the demo CRM;" \
                 "set it to http://127.0.0.1:$crm_port/webhooks to see the webhooks in $DEMO_WEBHOOK_LOG" ;;
    esac
    if [ ! -e "$DEMO_WEBHOOK_LOG" ]; then
        install_text "$DEMO_WEBHOOK_LOG" 644 "$SPOOL_USER" "$WEB_GROUP" < /dev/null
    fi
    demo_service demo-crm callexchange-demo-crm "CallExchange demo CRM (logs webhooks)" "$SPOOL_USER" "$crm_port" \
        "$(demo_crm_command "$crm_port")"

    # The sandbox PBX, on the config's [ami] host and port, as the spool's user.
    step demo-sandbox
    case $CFG_AMI_HOST in
        127.0.0.1|localhost|::1) ;;
        *) die "[ami] host is $CFG_AMI_HOST: the sandbox only runs on this machine (127.0.0.1)" ;;
    esac
    demo_service demo-sandbox callexchange-sandbox "CallExchange sandbox PBX" "$SPOOL_USER" "$CFG_AMI_PORT" \
        "$VENV/bin/python3 $APP/bin/callexchange --config $CONFIG sandbox"

    # The demo key: kept in $DEMO_KEY_FILE so that a re-run reuses it.
    step demo-key
    local key=""
    if [ -f "$DEMO_KEY_FILE" ]; then
        key=$(tr -d '[:space:]' < "$DEMO_KEY_FILE")
    fi
    if [ -n "$key" ] && [ "$(demo_key_label "$key")" = demo ]; then
        in_place demo-key "label demo, key in $DEMO_KEY_FILE"
    else
        if "$WRAPPER" keys list 2>/dev/null | awk 'NR > 1 { print $1 }' | grep -Fxq demo; then
            "$WRAPPER" keys revoke demo >/dev/null
        fi
        key=$("$WRAPPER" keys add --label demo | sed -n 's/^api-key: //p')
        [ -n "$key" ] || die "callexchange keys add --label demo printed no key"
        printf '%s\n' "$key" | install_text "$DEMO_KEY_FILE" 640 root "$WEB_GROUP"
        manifest_add keep "$DEMO_KEY_FILE"
        changed demo-key "added the key 'demo' to $CFG_AUTH_KEYS_FILE; the key is kept in $DEMO_KEY_FILE"
    fi
    DEMO_KEY=$key
}

# demo_key_label KEY: the label the keys file has for KEY, if any.
demo_key_label() {
    "$VENV/bin/python3" - "$APP/lib" "$CFG_AUTH_KEYS_FILE" "$1" <<'PY'
import sys
sys.path.insert(0, sys.argv[1])
from callexchange.keys import find_label
print(find_label(sys.argv[2], sys.argv[3]) or "")
PY
}

# --- the end-to-end checks -----------------------------------------------------------------

# The call endpoint through Apache: without a key it must answer the legacy JSON 400.
check_endpoint() {
    step endpoint
    local url=$HTTP_BASE/api/v1/asteriskapi.pl result
    result=$("$VENV/bin/python3" - "$url" <<'PY'
import json, sys, time, urllib.error, urllib.request
url = sys.argv[1]
deadline = time.monotonic() + 10
while True:
    try:
        request = urllib.request.Request(url, data=b"{}", method="POST")
        urllib.request.urlopen(request, timeout=5)
        print("answered 200 without a key")
        break
    except urllib.error.HTTPError as error:
        body = error.read()
        try:
            missing = json.loads(body).get("missing")
        except ValueError:
            missing = None
        print("ok" if error.code == 400 and missing else "answered %s: %r" % (error.code, body[:200]))
        break
    except OSError as error:
        if time.monotonic() > deadline:
            print("no answer: %s" % error)
            break
        time.sleep(0.3)
PY
)
    if [ "$result" = ok ]; then
        note "$url answers (JSON 400 without a key): the CGI, the venv and the config work"
    elif [ -n "$CONFIG_PROBLEM" ] && [[ $result == "answered 500:"*"configuration error"* ]]; then
        note "$url answers, with a JSON 500 for the config problem below"
    elif [ "$MODE" = demo ]; then
        die "$url $result; see $D_apache_error_log"
    else
        note "warning: $url $result (is Apache listening on 127.0.0.1:80? see $D_apache_error_log)"
    fi
}

# `callexchange check` as the web server's user, i.e. with the CGI's permissions; with
# the AMI login when something answers on [ami] host:port.
check_install() {
    step check
    local args=(check --asterisk-etc "$ASTERISK_ETC")
    if ! (exec 3<>"/dev/tcp/$CFG_AMI_HOST/$CFG_AMI_PORT") 2>/dev/null; then
        args+=(--no-ami)
        note "callexchange check --no-ami (nothing answers on $CFG_AMI_HOST:$CFG_AMI_PORT yet), as $WEB_USER:"
    else
        note "callexchange check, as $WEB_USER:"
    fi
    if CALLEXCHANGE_CONFIG=$CONFIG as_user "$WEB_USER" "$VENV/bin/python3" "$APP/bin/callexchange" \
            "${args[@]}" > "$WORK/check.log" 2>&1; then
        CHECK_STATUS=0
    else
        CHECK_STATUS=1
    fi
    sed 's/^/                     /' "$WORK/check.log"
}

# --- uninstall -----------------------------------------------------------------------------

# stop_app_processes: what still runs the venv's python once the services are stopped (a
# webhook deliverer that a hook started, an admin's `callexchange` in another shell).
stop_app_processes() {
    local proc pid argv0 pids=()
    for proc in /proc/[0-9]*; do
        pid=${proc#/proc/}
        argv0=$(tr '\0' '\n' 2>/dev/null < "$proc/cmdline" | head -n 1) || continue
        case $argv0 in
            "$VENV"/bin/*) [ "$pid" != "$$" ] && pids+=("$pid") ;;
        esac
    done
    [ "${#pids[@]}" -gt 0 ] || return 0
    kill "${pids[@]}" 2>/dev/null || true
    local waited=0 pid_left
    while [ "$waited" -lt 50 ]; do
        pid_left=""
        for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && pid_left=$pid; done
        [ -z "$pid_left" ] && break
        sleep 0.1
        waited=$((waited + 1))
    done
    changed processes "stopped what still ran from $VENV: pid ${pids[*]}"
}

# uninstall_entry KIND PATH DETAIL HOW: undo one manifest entry. Sets apache_changed,
# units_changed, asterisk_reload and kept of uninstall().
uninstall_entry() {
    local kind=$1 path=$2 detail=$3 how=$4
    case $kind in
        process)
            if [ "$INIT" = none ]; then
                local pid waited=0
                pid=$(head -n 1 "$RUN_DIR/$path.pid" 2>/dev/null || true)
                if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
                    kill "$pid" 2>/dev/null || true
                    while kill -0 "$pid" 2>/dev/null && [ "$waited" -lt 50 ]; do
                        sleep 0.1
                        waited=$((waited + 1))
                    done
                    kill -9 "$pid" 2>/dev/null || true
                    changed "$path" "stopped (pid $pid)"
                fi
                rm -f "$RUN_DIR/$path.pid"
            fi ;;
        unit)
            if [ "$INIT" = systemd ] && systemctl cat "$path" >/dev/null 2>&1; then
                systemctl disable --now "$path" >/dev/null 2>&1 || true
                changed "${path%.*}" "stopped and disabled $path"
                units_changed=1
            fi ;;
        include)
            if [ -f "$path" ] && [ "$(remove_include "$path" "$detail" "$how")" = removed ]; then
                changed asterisk "removed the line $detail from $path"
                asterisk_reload="$asterisk_reload $(basename "$path")"
            fi ;;
        acl)
            if [ -e "$path" ] && grep -Fxq -- "$detail" <<< "$(acl_entries "$path")"; then
                acl_revoke "$path" "$detail"
                changed access "removed the ACL entry $detail from $path"
            fi ;;
        group-member)
            if id -nG "$path" 2>/dev/null | tr ' ' '\n' | grep -Fxq "$detail"; then
                gpasswd -d "$path" "$detail" >/dev/null
                changed asterisk-user "removed $path from group $detail"
            fi ;;
        scrubbed-log)
            if [ -f "$path" ] && grep -qF -- "$SCRUB_CONDITION" "$path"; then
                unscrub_custom_log "$path" > "$WORK/unscrubbed"
                cat "$WORK/unscrubbed" > "$path"
                apache_changed=1
                changed access-log "$path logs every URL again (our CustomLog condition removed)"
            fi ;;
        apache-conf)
            # Reload even if an interrupted uninstall disabled it already.
            apache_changed=1
            if [ -e "$D_apache_conf_enabled/$path.conf" ]; then
                "$D_apache_conf_disable" -q "$path" >/dev/null
                changed apache-conf "disabled $path"
            fi ;;
        apache-site)
            apache_changed=1
            if [ -n "$D_apache_sites_enabled" ] && [ -e "$D_apache_sites_enabled/$path.conf" ]; then
                "$D_apache_site_disable" -q "$path" >/dev/null
                changed apache-conf "disabled the site $path"
            fi ;;
        file|link)
            case $path in "$D_apache_conf_dir"/*|"$D_apache_sites_dir"/*) apache_changed=1 ;; esac
            case $path in "$SYSTEMD_DIR"/*) units_changed=1 ;; esac
            if [ -e "$path" ] || [ -L "$path" ]; then
                rm -f "$path"
                changed remove "$path"
                case $path in "$ASTERISK_ETC"/*) asterisk_reload="$asterisk_reload $(basename "$path")" ;; esac
            fi ;;
        tree)
            if [ -d "$path" ]; then
                rm -rf "$path"
                changed remove "$path"
            fi ;;
        keep)
            kept+=("$path") ;;
    esac
}

uninstall() {
    step uninstall
    [ "$(id -u)" -eq 0 ] || die "run as root: sudo $0 --uninstall"
    load_distro
    detect_init
    load_options
    if [ ! -f "$MANIFEST" ]; then
        echo "Nothing to uninstall: no $MANIFEST (CallExchange is not installed here)."
        return 0
    fi
    echo "CallExchange uninstall, from $MANIFEST"
    local apache_changed=0 units_changed=0 asterisk_reload="" kept=() entries=() entry
    local kind path detail how
    mapfile -t entries < <(grep -v '^#' "$MANIFEST" | tac)
    # First what runs (services, background processes, a lingering deliverer), then
    # what is on disk, newest first.
    for entry in "${entries[@]}"; do
        IFS=$'\t' read -r kind path detail how <<< "$entry"
        case $kind in process|unit) uninstall_entry "$kind" "$path" "$detail" "$how" ;; esac
    done
    stop_app_processes
    for entry in "${entries[@]}"; do
        IFS=$'\t' read -r kind path detail how <<< "$entry"
        case $kind in process|unit) ;; *) uninstall_entry "$kind" "$path" "$detail" "$how" ;; esac
    done
    [ "$units_changed" = 1 ] && [ "$INIT" = systemd ] && systemctl daemon-reload
    reload_asterisk "$asterisk_reload"
    if [ "$apache_changed" = 1 ] && apache_running; then
        if "$D_apache_ctl" configtest > "$WORK/configtest.log" 2>&1; then
            apache_reload || die "Apache did not reload: $(cat "$WORK/reload.log")"
            changed apache "reloaded gracefully without the gateway's URLs"
        else
            sed 's/^/    /' "$WORK/configtest.log" >&2
            echo "warning: Apache's configuration does not pass configtest without ours (above);" \
                 "Apache was not reloaded" >&2
        fi
    fi
    rm -f "$MANIFEST"
    rmdir "$PREFIX" 2>/dev/null || true
    rmdir "$RUN_DIR" 2>/dev/null || true  # pid files' dir: gone with the processes
    echo "Removed: the app, the venv, the Apache snippet, the wrapper and the services."
    if [ "${#kept[@]}" -gt 0 ]; then
        echo "Kept (config, keys and data; delete them yourself if you want them gone):"
        printf '    %s\n' "${kept[@]}" | sort
    fi
    echo "Kept too: the OS packages, the Apache modules and the running Apache and cron" \
         "(other sites and jobs may use them)."
    local lineage
    for lineage in $(printf '%s\n' "${entries[@]}" | sed -n "s|^keep	$LETSENCRYPT/live/\([^	/]*\)$|\1|p" | sort -u); do
        [ -f "$LETSENCRYPT/renewal/$lineage.conf" ] || continue
        echo "certbot goes on renewing the kept certificate of $lineage, whose http-01 challenge is" \
             "no longer answered here: \`certbot delete --cert-name $lineage\` once you no longer need it."
    done
}

# --- main ----------------------------------------------------------------------------------

# load_options: the options given now, else those an earlier run was given; and what
# follows from them (where Asterisk keeps its AGI scripts).
load_options() {
    ASTERISK_ETC=${OPT_ASTERISK_ETC:-$(option_saved asterisk_etc)}
    ASTERISK_ETC=${ASTERISK_ETC:-/etc/asterisk}
    APACHE_MODE=${OPT_APACHE_MODE:-$(option_saved apache_mode)}
    APACHE_MODE=${APACHE_MODE:-cgi}
    load_https_options
    local agi
    agi=$(asterisk_setting directories astagidir)
    AGI_DIR=${agi:-/var/lib/asterisk/agi-bin}
}

# load_https_options: DOMAIN and what goes with it. A --domain given now brings its own
# --email, --acme-server, --cert and --key (none of an earlier run's); without --domain the
# saved ones stay (--no-domain drops them). --allow-http and --hsts are kept on their own.
load_https_options() {
    : "${OPT_DOMAIN:=}" "${OPT_EMAIL:=}" "${OPT_ACME_SERVER:=}" "${OPT_CERT:=}" "${OPT_KEY:=}" \
      "${OPT_ALLOW_HTTP:=}" "${OPT_HSTS:=}"
    if [ -n "$OPT_DOMAIN" ]; then
        DOMAIN=$OPT_DOMAIN EMAIL=$OPT_EMAIL ACME_SERVER=$OPT_ACME_SERVER
        CERT_SRC=$OPT_CERT KEY_SRC=$OPT_KEY
        [ "$DOMAIN" = - ] && DOMAIN="" EMAIL="" ACME_SERVER="" CERT_SRC="" KEY_SRC=""
    else
        DOMAIN=$(option_saved domain) EMAIL=$(option_saved email)
        ACME_SERVER=$(option_saved acme_server)
        CERT_SRC=$(option_saved cert) KEY_SRC=$(option_saved key)
    fi
    ALLOW_HTTP=${OPT_ALLOW_HTTP:-$(option_saved allow_http)}
    HSTS=${OPT_HSTS:-$(option_saved hsts)}
    BASE_URL_SET=$(option_saved base_url_set)
    ALLOW_HTTP=${ALLOW_HTTP:-0} HSTS=${HSTS:-0}
    [ -z "$DOMAIN" ] || https_paths
}

# write_options: the options file, from what this run uses.
write_options() {
    {
        echo "# CallExchange install.sh: the options later runs keep (a given option wins)."
        [ "$ASTERISK_ETC" = /etc/asterisk ] || echo "asterisk_etc=$ASTERISK_ETC"
        [ "$APACHE_MODE" = cgi ] || echo "apache_mode=$APACHE_MODE"
        [ -z "$DOMAIN" ] || echo "domain=$DOMAIN"
        [ -z "$EMAIL" ] || echo "email=$EMAIL"
        [ -z "$ACME_SERVER" ] || echo "acme_server=$ACME_SERVER"
        [ -z "$CERT_SRC" ] || echo "cert=$CERT_SRC"
        [ -z "$KEY_SRC" ] || echo "key=$KEY_SRC"
        [ "$ALLOW_HTTP" = 0 ] || echo "allow_http=$ALLOW_HTTP"
        [ "$HSTS" = 0 ] || echo "hsts=$HSTS"
        # What install.sh itself set [recordings] base_url to (a later --domain may change it).
        [ -z "$BASE_URL_SET" ] || echo "base_url_set=$BASE_URL_SET"
    } | install_text "$OPTIONS_FILE" 644 root root
}

# The options a re-run keeps, so that `./install.sh` after an update does what the
# first run was told.
step_options() {
    step options
    write_options
    manifest_add file "$OPTIONS_FILE"
    if [ "$FILE_CHANGED" = 1 ]; then
        # (grep finds no line in a file of defaults: not a failure of the step.)
        changed options "$OPTIONS_FILE: $({ grep -v '^#' "$OPTIONS_FILE" || true; } | paste -sd ' ' | sed 's/^$/defaults/')"
    else
        in_place options "$OPTIONS_FILE"
    fi
}

# set_https_option OPTION VALUE: --domain (lower-cased), --email, --acme-server, --cert,
# --key (made absolute: a re-run from elsewhere must find them).
set_https_option() {
    local value=$2
    case $1 in
        --domain) OPT_DOMAIN=$(printf '%s' "$value" | tr '[:upper:]' '[:lower:]') ;;
        --email) OPT_EMAIL=$value ;;
        --acme-server) OPT_ACME_SERVER=$value ;;
        --cert|--key)
            [ -z "$value" ] || [[ $value == /* ]] || value=$PWD/$value
            if [ "$1" = --cert ]; then OPT_CERT=$value; else OPT_KEY=$value; fi ;;
    esac
}

# https_option_problem: what is wrong with the HTTPS options given (fails then).
https_option_problem() {
    if [ -n "$OPT_DOMAIN" ] && [ "$OPT_DOMAIN" != - ] && ! domain_valid "$OPT_DOMAIN"; then
        echo "--domain must be a DNS name such as pbx1.example.com, got $OPT_DOMAIN"; return 1
    fi
    if { [ -n "$OPT_EMAIL" ] || [ -n "$OPT_ACME_SERVER" ] || [ -n "$OPT_CERT" ] || [ -n "$OPT_KEY" ]; } \
            && { [ -z "$OPT_DOMAIN" ] || [ "$OPT_DOMAIN" = - ]; }; then
        echo "--email, --acme-server, --cert and --key go with --domain NAME"; return 1
    fi
    if [ -n "$OPT_CERT$OPT_KEY" ] && { [ -z "$OPT_CERT" ] || [ -z "$OPT_KEY" ]; }; then
        echo "--cert FILE and --key FILE go together"; return 1
    fi
    if [ -n "$OPT_CERT" ] && [ -n "$OPT_EMAIL$OPT_ACME_SERVER" ]; then
        echo "--email and --acme-server are for certbot, not with --cert/--key"; return 1
    fi
    if [ -n "$OPT_EMAIL" ] && ! [[ $OPT_EMAIL =~ ^[^[:space:]@]+@[^[:space:]@]+$ ]]; then
        echo "--email must be an address, got $OPT_EMAIL"; return 1
    fi
    if [ -n "$OPT_ACME_SERVER" ] && ! [[ $OPT_ACME_SERVER =~ ^https://[^[:space:]]+$ ]]; then
        echo "--acme-server must be an https:// URL (the CA's directory), got $OPT_ACME_SERVER"; return 1
    fi
    local path
    for path in "$OPT_CERT" "$OPT_KEY"; do
        case $path in *[[:space:]\"\\]*) echo "--cert and --key paths must not contain spaces, quotes or \\"; return 1 ;; esac
    done
    return 0
}

# usage: the comment at the top of this file, up to its first paragraph of prose.
usage() {
    awk 'NR > 1 && /^# Debian/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"
}

main() {
    ARGS=("$@")
    MODE=install
    CALLER_ID=""
    SCRUB_ACCESS_LOG=0
    OPT_ASTERISK_ETC=""
    OPT_APACHE_MODE=""
    OPT_DOMAIN="" OPT_EMAIL="" OPT_ACME_SERVER="" OPT_CERT="" OPT_KEY="" OPT_ALLOW_HTTP="" OPT_HSTS=""
    local action=install value
    while [ $# -gt 0 ]; do
        case $1 in
            --demo) MODE=demo ;;
            --scrub-access-log) SCRUB_ACCESS_LOG=1 ;;
            --uninstall) action=uninstall ;;
            --caller-id)
                [ $# -ge 2 ] || { echo "install.sh: --caller-id needs a NUMBER" >&2; exit 2; }
                CALLER_ID=${2#+}
                shift ;;
            --caller-id=*) CALLER_ID=${1#--caller-id=}; CALLER_ID=${CALLER_ID#+} ;;
            --asterisk-etc)
                [ $# -ge 2 ] || { echo "install.sh: --asterisk-etc needs a DIR" >&2; exit 2; }
                OPT_ASTERISK_ETC=$2
                shift ;;
            --asterisk-etc=*) OPT_ASTERISK_ETC=${1#--asterisk-etc=} ;;
            --domain|--email|--acme-server|--cert|--key)
                [ $# -ge 2 ] || { echo "install.sh: $1 needs a value" >&2; exit 2; }
                set_https_option "$1" "$2"
                shift ;;
            --domain=*|--email=*|--acme-server=*|--cert=*|--key=*) set_https_option "${1%%=*}" "${1#*=}" ;;
            --no-domain) OPT_DOMAIN=- ;;
            --allow-http) OPT_ALLOW_HTTP=1 ;;
            --https-only) OPT_ALLOW_HTTP=0 ;;
            --hsts) OPT_HSTS=1 ;;
            --no-hsts) OPT_HSTS=0 ;;
            --persistent) OPT_APACHE_MODE=persistent ;;
            --cgi) OPT_APACHE_MODE=cgi ;;
            -h|--help) usage; exit 0 ;;
            *) echo "install.sh: unknown option $1 (try --help)" >&2; exit 2 ;;
        esac
        shift
    done
    if [ -n "$CALLER_ID" ] && ! [[ $CALLER_ID =~ ^[0-9]{6,15}$ ]]; then
        echo "install.sh: --caller-id must be 6 to 15 digits, got $CALLER_ID" >&2
        exit 2
    fi
    if [ -n "$OPT_ASTERISK_ETC" ]; then
        case $OPT_ASTERISK_ETC in
            /*) ;;
            *) echo "install.sh: --asterisk-etc must be an absolute path, got $OPT_ASTERISK_ETC" >&2; exit 2 ;;
        esac
        [ -d "$OPT_ASTERISK_ETC" ] || { echo "install.sh: --asterisk-etc $OPT_ASTERISK_ETC is not a directory" >&2; exit 2; }
    fi
    value=$(https_option_problem) || { echo "install.sh: $value" >&2; exit 2; }
    load_options
    SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
    WORK=$(mktemp -d /tmp/callexchange-install.XXXXXX)
    trap 'rm -rf "$WORK"' EXIT
    trap 'on_error $? $LINENO "$BASH_COMMAND"' ERR
    APP_CHANGED=0
    APACHE_RELOAD=0
    ASTERISK_RELOAD=""
    CHECK_STATUS=0
    DEMO_KEY=""
    if [ "$action" = uninstall ]; then
        uninstall
        return
    fi
    step_preflight
    step_packages
    step_options
    step_app
    step_venv
    step_bytecode
    step_wrapper
    step_config
    read_config
    step_keys_file
    step_state
    step_recordings
    step_access
    step_agi
    step_asterisk_snippets
    reload_asterisk "$ASTERISK_RELOAD"
    step_selinux
    step_https_files
    step_apache_conf
    step_scrub_access_log
    step_apache_service
    step_certificate
    step_https_config
    step_webhook_delivery
    if [ "$MODE" = demo ]; then
        step_demo
    fi
    check_endpoint
    check_install
    echo
    if [ "$CHANGES" -eq 0 ]; then
        echo "Done: 0 changes; everything already in place."
    else
        echo "Done: $CHANGES change(s). Manifest: $MANIFEST"
    fi
    if [ "$MODE" = demo ]; then
        print_demo
    fi
    if [ "$CHECK_STATUS" != 0 ]; then
        echo
        echo "install.sh: \`callexchange check\` found problems (FAIL lines above); fix them, then run" \
             "callexchange check again (or install.sh, which changes nothing else)." >&2
        exit 1
    fi
}

print_demo() {
    local digits=${DEMO_DESTINATION#+} base=$HTTP_BASE
    # With --domain the demo goes the way a CRM's requests go: over https.
    [ -z "$DOMAIN" ] || base=https://$DOMAIN
    cat <<EOF

Demo ready: Apache serves the gateway on $base, the sandbox PBX answers AMI on
$CFG_AMI_HOST:$CFG_AMI_PORT, and the demo CRM logs webhooks to $DEMO_WEBHOOK_LOG.
Demo API key (label demo; also in $DEMO_KEY_FILE):
    $DEMO_KEY

Place a sandbox call (answered after a short ring, talks 5 s, then hangs up):
    curl -sS -X POST $base/api/v1/asteriskapi.pl -H 'api-key: $DEMO_KEY' -d '{"extension":"$DEMO_EXTENSION","destination":"$DEMO_DESTINATION"}'

List the number's recordings (the call's appears once it has hung up):
    curl -sS '$base/recorded/v1/find_phone_files.pl?phone=$digits' -H 'api-key: $DEMO_KEY'

Watch the connect and hangup webhooks arrive:
    tail -f $DEMO_WEBHOOK_LOG
EOF
}

# Run, unless sourced (tests/test_install.py sources it for its functions).
if ! (return 0 2>/dev/null); then
    main "$@"
fi
