#!/usr/bin/env bash
# .ci/install-https.sh: install.sh --domain for real, on a disposable Debian 12, as root
# (CI), with Debian's pebble as the ACME CA on loopback and a local name for the PBX:
#
#   1. the CA and the name             pebble on 127.0.0.1:14000 (its listener's certificate
#                                      made here with openssl; PEBBLE_VA_ALWAYS_VALID=1: no
#                                      http-01 request to port 5002); pbx1.callexchange.test
#                                      -> 127.0.0.1 in /etc/hosts
#   2. ./install.sh --demo --domain    certbot obtains the certificate through pebble; our
#      NAME --acme-server ...          vhost in sites-available, enabled; mod_ssl; the key
#                                      root-only; [recordings] base_url https://NAME/...
#   3. ./install.sh --demo again       every step "already in place", 0 changes, sha256 of
#                                      everything in the manifest unchanged
#   4. the demo curls over https       --cacert pebble's root: a call, its recording listed
#                                      with an https URL, served whole and by Range; TLS
#                                      1.2 and 1.3 only, no HSTS; plain HTTP from 127.0.0.2
#                                      is a JSON 403 naming the https URL (no redirect),
#                                      from 127.0.0.1 it is served
#   5. certbot renew --force-renewal   a new certificate from pebble, served after the
#                                      deploy hook's reload; the curls keep working
#   6. callexchange check              the certificate's name and days, as root and as
#                                      www-data (which reads what Apache serves)
#   4b. --persistent                   the same over https from mod_wsgi daemons
#   7. --cert/--key                    a 10-day certificate of our own: check warns
#                                      (under 21 days), the key copy root-only; twice; a
#                                      renewed file is copied and served by the next run
#   7b. --no-domain                    our vhost removed, plain HTTP open again
#   8. ./install.sh --uninstall        our vhost gone, the certificates kept (and listed)
#
# Then it leaves the machine as it found it: pebble and Apache stopped, /etc/hosts
# restored, the test certificates and CallExchange's config and data removed. It refuses
# to run where CallExchange is installed or configured already, and outside CI unless
# given --disposable-machine. About a minute and a half.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive

NAME=pbx1.callexchange.test
# shellcheck source=.ci/host-check.sh
. .ci/host-check.sh
SITE=/etc/apache2/sites-available/callexchange-https.conf
SITE_ENABLED=/etc/apache2/sites-enabled/callexchange-https.conf
LE=/etc/letsencrypt
ACME=https://127.0.0.1:14000/dir
PEBBLE_PID=""
HOSTS_SAVED=0
# certbot's state before the test (Debian's package ships /etc/letsencrypt/cli.ini only):
# what the test adds there is removed at the end, test keys included.
CERTBOT_DIRS="$LE /var/lib/letsencrypt /var/log/letsencrypt"
certbot_paths() {
    # shellcheck disable=SC2086
    { find $CERTBOT_DIRS 2>/dev/null || true; } | sort    # (a dir certbot has not made yet)
}

refuse_unless_disposable .ci/install-https.sh \
    "installs CallExchange with HTTPS and edits /etc/hosts" "${1:-}" \
    "$LE/live/$NAME" "$LE/renewal/$NAME.conf"
for tool in pebble certbot openssl curl; do
    command -v "$tool" > /dev/null || { echo ".ci/install-https.sh: $tool is not installed (.ci/run's apt line)" >&2; exit 2; }
done
OUT=$(mktemp -d /tmp/cx-https.XXXXXX)
certbot_paths > "$OUT/certbot-before"

CRON_BEFORE=$(cron_pid)

cleanup() {
    local status=$?
    if [ "$status" != 0 ] || [ "$FAILED" = 1 ]; then
        say "logs after the failure"
        for log in "$OUT"/*.log "$LOG_DIR"/*.log /var/log/letsencrypt/letsencrypt.log; do
            [ -f "$log" ] && { echo "--- $log"; tail -n 30 "$log"; }
        done
        echo "--- /var/log/apache2/error.log"
        tail -n 30 /var/log/apache2/error.log 2>/dev/null || true
    fi
    uninstall_if_installed "$OUT/cleanup-uninstall.log"
    stop_background_services
    stop_apache_and_cron
    if [ -n "$PEBBLE_PID" ]; then
        kill "$PEBBLE_PID" 2>/dev/null || true
    fi
    if [ "$HOSTS_SAVED" = 1 ]; then
        cat "$OUT/hosts.orig" > /etc/hosts    # in place: /etc/hosts may be a bind mount
    fi
    # Whatever certbot made during the test (its certificates, keys, CSRs, pebble's ACME
    # account, logs), deepest first; what was there before stays.
    certbot_paths | comm -13 "$OUT/certbot-before" - | sort -r | while IFS= read -r path; do
        rm -rf -- "$path"
    done
    rm -rf "$CONFIG_DIR" "$STATE_DIR" "$LOG_DIR" "$RUN_DIR" /var/lib/callexchange-acme "$OUT"
    if [ "$status" = 0 ]; then
        echo
        echo "https install check passed"
    else
        echo
        echo "https install check FAILED" >&2
    fi
}
trap cleanup EXIT

# snapshot: type, mode, owner and sha256 of everything in the manifest (trees walked;
# kept dirs, i.e. data, only stat'ed), of the HTTPS files, the enabled modules and sites.
snapshot() {
    python3 .ci/snapshot.py "$MANIFEST" "$SITE" "$CONFIG_DIR/callexchange.ini" "$CONFIG_DIR/tls/$NAME.crt" \
        "$CONFIG_DIR/tls/$NAME.key" "$LE/live/$NAME/fullchain.pem" "$LE/live/$NAME/privkey.pem"
}

# served_serial: the serial of the certificate Apache serves for NAME.
served_serial() {
    openssl s_client -connect 127.0.0.1:443 -servername "$NAME" < /dev/null 2>/dev/null \
        | openssl x509 -noout -serial
}

# second_run LOG ARGS...: install.sh again: nothing may change (steps, manifest checksums).
second_run() {
    local log=$1
    shift
    snapshot > "$OUT/before"
    ./install.sh "$@" > "$log" 2>&1 || { cat "$log"; fail "the second run failed"; }
    if grep '^\[' "$log" | grep -v 'already in place'; then
        fail "the step(s) above changed something on the second run"
    fi
    grep -q '^Done: 0 changes' "$log" || fail "the second run did not report 0 changes"
    snapshot > "$OUT/after"
    diff -u "$OUT/before" "$OUT/after" || fail "files changed on the second run (diff above)"
    ok "all $(grep -c '^\[' "$log") steps 'already in place', 0 changes; sha256, modes and owners of $(wc -l < "$OUT/after") paths identical"
}

# --- 1. the CA and the name ----------------------------------------------------------------
say "1. pebble on 127.0.0.1:14000 and $NAME in /etc/hosts"
started=$SECONDS
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -keyout "$OUT/pebble.key" -out "$OUT/pebble.crt" -subj /CN=pebble \
    -addext "subjectAltName=IP:127.0.0.1,DNS:localhost" > "$OUT/openssl.log" 2>&1 \
    || fail "openssl could not make pebble's listener certificate"
cat > "$OUT/pebble.json" <<EOF
{"pebble": {"listenAddress": "127.0.0.1:14000", "managementListenAddress": "127.0.0.1:15000",
  "certificate": "$OUT/pebble.crt", "privateKey": "$OUT/pebble.key",
  "httpPort": 5002, "tlsPort": 5001, "ocspResponderURL": "", "externalAccountBindingRequired": false}}
EOF
PEBBLE_VA_ALWAYS_VALID=1 PEBBLE_VA_NOSLEEP=1 PEBBLE_WFE_NONCEREJECT=0 \
    setsid pebble -config "$OUT/pebble.json" > "$OUT/pebble.log" 2>&1 < /dev/null &
PEBBLE_PID=$!
for _ in $(seq 1 50); do
    curl -sf --cacert "$OUT/pebble.crt" -o /dev/null "$ACME" && break
    sleep 0.2
done
curl -sf --cacert "$OUT/pebble.crt" -o /dev/null "$ACME" || fail "pebble does not answer at $ACME"
# certbot (run by install.sh, and for the renewal) trusts pebble's listener through this;
# the system's CAs (or the bundle already set) stay in it for pip and the rest.
cat "${REQUESTS_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}" "$OUT/pebble.crt" > "$OUT/ca-bundle.crt"
export REQUESTS_CA_BUNDLE=$OUT/ca-bundle.crt
cp -p /etc/hosts "$OUT/hosts.orig"
HOSTS_SAVED=1
printf '127.0.0.1 %s\n' "$NAME" >> /etc/hosts
getent hosts "$NAME" | grep -q '^127\.0\.0\.1' || fail "$NAME does not resolve to 127.0.0.1"
ok "pebble answers at $ACME; $NAME -> 127.0.0.1"

# --- 2. install -------------------------------------------------------------------------------
say "2. ./install.sh --demo --domain $NAME --acme-server $ACME --email ci@callexchange.test"
./install.sh --demo --domain "$NAME" --acme-server "$ACME" --email ci@callexchange.test \
    > "$OUT/run1.log" 2>&1 || { cat "$OUT/run1.log"; fail "install.sh --domain failed"; }
indent < "$OUT/run1.log"
{ [ -f "$SITE" ] && [ -L "$SITE_ENABLED" ]; } || fail "our vhost $SITE is not there and enabled"
[ -e /etc/apache2/mods-enabled/ssl.load ] || fail "mod_ssl is not enabled"
grep -q "ServerName $NAME" "$SITE" || fail "$SITE has no ServerName $NAME"
grep -q 'Mozilla.*"intermediate" profile: Server Side TLS guideline 5.7' "$SITE" || fail "no comment naming the TLS profile"
key=$(readlink -f "$LE/live/$NAME/privkey.pem")
[ "$(stat -c '%a %U' "$key")" = "600 root" ] || fail "the key $key is $(stat -c '%a %U' "$key"), not 600 root"
base_url=$(callexchange config get recordings base_url)
[ "$base_url" = "https://$NAME/wav-files/" ] || fail "[recordings] base_url is $base_url"
[ "$(callexchange config get https certificate)" = "$LE/live/$NAME/fullchain.pem" ] || fail "[https] certificate not set"
ok "certificate from pebble, vhost enabled, key 600 root, base_url $base_url"

# --- 3. idempotency ---------------------------------------------------------------------------
say "3. ./install.sh --demo (no HTTPS options: they are kept): nothing may change"
second_run "$OUT/run2.log" --demo
grep -q "^domain=$NAME" /opt/callexchange/install-options || fail "install-options does not keep the domain"

# --- 4. the demo over https -----------------------------------------------------------------------
say "4. the demo curls over https (--cacert pebble's root); plain HTTP"
curl -sSf --cacert "$OUT/pebble.crt" -o "$OUT/root.pem" https://127.0.0.1:15000/roots/0 \
    || fail "cannot fetch pebble's root from its management endpoint"
CA=(--cacert "$OUT/root.pem")
mapfile -t commands < <(sed -n 's/^    \(curl .*\)$/\1/p' "$OUT/run2.log")
[ "${#commands[@]}" = 2 ] || fail "expected 2 curl commands in the second run's output, found ${#commands[@]}"
case ${commands[0]} in *"https://$NAME/api/v1/asteriskapi.pl"*) ;; *) fail "the printed call is not https: ${commands[0]}" ;; esac
demo_calls() {
    bash -c "${commands[0]/curl /curl --cacert $OUT/root.pem }" > "$OUT/call.json" 2> "$OUT/call.err" \
        || fail "the call over https failed: $(cat "$OUT/call.err")"
    uniqueid=$(python3 -c 'import json, sys; r = json.load(open(sys.argv[1])); assert r["status"] == "true", r; print(r["uniqueid"])' "$OUT/call.json") \
        || fail "the call's reply is not a success: $(cat "$OUT/call.json")"
    ok "a call over https: status true, uniqueid $uniqueid"
    # Its recording is complete once the call has hung up: the demo CRM logs the webhook.
    for _ in $(seq 1 40); do
        grep -F "\"$uniqueid\"" "$LOG_DIR/demo-webhooks.log" 2>/dev/null | grep -q '"hangup"' && break
        sleep 0.5
    done
    grep -F "\"$uniqueid\"" "$LOG_DIR/demo-webhooks.log" | grep -q '"hangup"' \
        || fail "no hangup webhook of $uniqueid in $LOG_DIR/demo-webhooks.log"
    listed=""
    for _ in $(seq 1 40); do
        bash -c "${commands[1]/curl /curl --cacert $OUT/root.pem }" > "$OUT/list.json" 2> "$OUT/list.err" \
            || fail "the listing over https failed: $(cat "$OUT/list.err")"
        listed=$(python3 -c 'import json, sys; print(next((e["url"] for e in json.load(open(sys.argv[1])) if e.get("uniqueid") == sys.argv[2]), ""))' \
            "$OUT/list.json" "$uniqueid") || fail "the listing is not a JSON array: $(head -c 300 "$OUT/list.json")"
        [ -n "$listed" ] && break
        sleep 0.5
    done
    case $listed in "https://$NAME/wav-files/"*) ;; *) fail "the recording is not listed with an https URL: '${listed}'" ;; esac
    code=$(curl -sS "${CA[@]}" -o "$OUT/recording" -w '%{http_code}' "$listed")
    { [ "$code" = 200 ] && [ "$(head -c 4 "$OUT/recording")" = RIFF ]; } || fail "$listed answered $code, not the WAV file"
    size=$(stat -c %s "$OUT/recording")
    code=$(curl -sS "${CA[@]}" -H 'Range: bytes=4-11' -o "$OUT/range" -D "$OUT/range.headers" -w '%{http_code}' "$listed")
    [ "$code" = 206 ] || fail "a Range request for $listed answered $code, not 206"
    head -c 12 "$OUT/recording" | tail -c 8 > "$OUT/range.expected"
    cmp -s "$OUT/range" "$OUT/range.expected" \
        || fail "the Range reply ($(od -An -tx1 "$OUT/range" | tr -s ' ')) is not bytes 4-11 of the $size-byte file ($(od -An -tx1 "$OUT/range.expected" | tr -s ' ')); headers: $(tr -d '\r' < "$OUT/range.headers" | paste -sd ' ')"
    grep -qi "^content-range: bytes 4-11/$size" "$OUT/range.headers" || fail "no Content-Range bytes 4-11/$size"
    ok "its recording listed as $listed, served over https whole and by Range (206)"
}
demo_calls
for version in tls1_2 tls1_3; do
    openssl s_client -connect 127.0.0.1:443 -servername "$NAME" "-$version" < /dev/null > "$OUT/$version.log" 2>&1 \
        || fail "TLS ${version#tls} is refused"
done
if openssl s_client -connect 127.0.0.1:443 -servername "$NAME" -tls1_1 < /dev/null > "$OUT/tls1_1.log" 2>&1; then
    fail "TLS 1.1 is accepted"
fi
curl -sS "${CA[@]}" -D "$OUT/headers" -o /dev/null "https://$NAME/api/v1/openapi.yaml"
grep -qi '^strict-transport-security' "$OUT/headers" && fail "HSTS is on by default"
ok "TLS 1.2 and 1.3 accepted, 1.1 refused; no Strict-Transport-Security header"

key_header="api-key: $(cat "$CONFIG_DIR/demo-api-key")"
for url in /api/v1/asteriskapi.pl /recorded/v1/find_phone_files.pl "/wav-files/${listed#*/wav-files/}"; do
    code=$(curl -sS --interface 127.0.0.2 -X POST -H "$key_header" -d '{}' -o "$OUT/plain.json" \
        -D "$OUT/plain.headers" -w '%{http_code}' "http://127.0.0.1$url")
    [ "$code" = 403 ] || fail "plain HTTP from 127.0.0.2 to $url answered $code, not 403"
    grep -qi '^location:' "$OUT/plain.headers" && fail "plain HTTP to $url got a redirect"
    grep -qi '^content-type: application/json' "$OUT/plain.headers" || fail "the 403 for $url is not JSON"
    python3 - "$OUT/plain.json" "https://$NAME$url" <<'PY' || fail "the 403 for $url is not the legacy shape naming https://$NAME$url: $(cat "$OUT/plain.json")"
import json, sys
reply = json.load(open(sys.argv[1]))
assert reply["status"] == "403 Forbidden" and reply["icon"] == "error", reply
assert sys.argv[2] in reply["error"], reply
assert reply["message"], reply
PY
done
echo "   403: $(cat "$OUT/plain.json")"
ok "plain HTTP from 127.0.0.2: a JSON 403 naming the https URL, no redirect (call, recordings, wav-files)"
code=$(curl -sS -X POST -o /dev/null -w '%{http_code}' http://127.0.0.1/api/v1/asteriskapi.pl -d '{}')
[ "$code" = 400 ] || fail "plain HTTP from 127.0.0.1 answered $code, not the endpoint's 400"
mkdir -p /var/lib/callexchange-acme/.well-known/acme-challenge
echo probe > /var/lib/callexchange-acme/.well-known/acme-challenge/ci-probe
[ "$(curl -sS --interface 127.0.0.2 "http://$NAME/.well-known/acme-challenge/ci-probe")" = probe ] \
    || fail "our port-80 host does not serve the http-01 challenge for $NAME"
rm -f /var/lib/callexchange-acme/.well-known/acme-challenge/ci-probe
ok "from 127.0.0.1 plain HTTP is served (400 without a key); http://$NAME/.well-known/acme-challenge/ is ours"

# --- 4b. persistent mode ----------------------------------------------------------------------
say "4b. ./install.sh --demo --persistent: the same URLs over https from mod_wsgi daemons"
./install.sh --demo --persistent > "$OUT/persistent.log" 2>&1 || { cat "$OUT/persistent.log"; fail "install.sh --persistent failed"; }
grep -q 'WSGIDaemonProcess callexchange' /etc/apache2/conf-available/callexchange.conf || fail "not the mod_wsgi snippet"
sleep 5    # past [dial] dedupe_seconds: a new call, not the first one's reply again
demo_calls
code=$(curl -sS --interface 127.0.0.2 -X POST -d '{}' -o "$OUT/plain.json" -w '%{http_code}' http://127.0.0.1/api/v1/asteriskapi.pl)
[ "$code" = 403 ] || fail "persistent mode: plain HTTP from 127.0.0.2 answered $code, not 403"
./install.sh --demo --cgi > "$OUT/cgi.log" 2>&1 || { cat "$OUT/cgi.log"; fail "install.sh --cgi failed"; }
ok "persistent mode serves the same https URLs and refuses plain HTTP the same way; back to CGI"

# --- 5. renewal ---------------------------------------------------------------------------------
say "5. certbot renew --force-renewal through pebble"
before=$(served_serial)
certbot renew --force-renewal --cert-name "$NAME" --no-random-sleep-on-renew > "$OUT/renew.log" 2>&1 \
    || { cat "$OUT/renew.log"; fail "certbot renew failed"; }
after=""
for _ in $(seq 1 25); do
    after=$(served_serial)
    [ -n "$after" ] && [ "$after" != "$before" ] && break
    sleep 0.2
done
[ "$after" != "$before" ] || fail "Apache still serves the old certificate ($before) after the renewal"
sleep 5    # past [dial] dedupe_seconds: a new call, not the first one's reply again
demo_calls
ok "renewed: Apache serves the new certificate ($before -> $after) and the curls work"

# --- 6. callexchange check -----------------------------------------------------------------------
say "6. callexchange check: the certificate's name and days to expiry"
callexchange check --no-ami --no-asterisk > "$OUT/check-root.log" 2>&1 || true
grep '^ok   https:' "$OUT/check-root.log" | indent
grep -q "^ok   https: $NAME: certificate for $NAME, [0-9]* days to expiry" "$OUT/check-root.log" \
    || { cat "$OUT/check-root.log"; fail "check (root) does not report the certificate"; }
setpriv --reuid=www-data --regid=www-data --init-groups -- env CALLEXCHANGE_CONFIG="$CONFIG_DIR/callexchange.ini" \
    /opt/callexchange/venv/bin/python3 /opt/callexchange/app/bin/callexchange check --no-ami --no-asterisk \
    > "$OUT/check-web.log" 2>&1 || true
grep '^ok   https:' "$OUT/check-web.log" | indent
grep -q "^ok   https: $NAME: .*served on 127.0.0.1:443" "$OUT/check-web.log" \
    || { cat "$OUT/check-web.log"; fail "check (www-data) does not report the served certificate"; }
ok "as root from the file, as www-data from what Apache serves"

# --- 7. an existing certificate: --cert/--key ------------------------------------------------------
say "7. ./install.sh --demo --domain $NAME --cert FILE --key FILE (a 10-day certificate)"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 10 \
    -keyout "$OUT/own.key" -out "$OUT/own.crt" -subj "/CN=$NAME" -addext "subjectAltName=DNS:$NAME" \
    > "$OUT/openssl.log" 2>&1 || fail "openssl could not make the 10-day certificate"
./install.sh --demo --domain "$NAME" --cert "$OUT/own.crt" --key "$OUT/own.key" > "$OUT/own1.log" 2>&1 \
    || { cat "$OUT/own1.log"; fail "install.sh --cert/--key failed"; }
grep -E '^\[(https-files|certificate|apache-conf|apache|https-config)\]|https:' "$OUT/own1.log" | indent
[ "$(stat -c '%a %U' "$CONFIG_DIR/tls/$NAME.key")" = "600 root" ] || fail "the key copy is not 600 root"
cmp -s "$OUT/own.crt" "$CONFIG_DIR/tls/$NAME.crt" || fail "the certificate was not copied"
grep -q "warn https: the certificate $CONFIG_DIR/tls/$NAME.crt for $NAME expires in 9 day(s)" "$OUT/own1.log" \
    || fail "install.sh's check does not warn about the 10-day certificate"
CA=(--cacert "$OUT/own.crt")
code=$(curl -sS "${CA[@]}" -o /dev/null -w '%{http_code}' -X POST "https://$NAME/api/v1/asteriskapi.pl" -d '{}')
[ "$code" = 400 ] || fail "https with our own certificate answered $code, not 400"
ok "the copies in $CONFIG_DIR/tls (key 600 root) are served; check warns: 9 days left"
second_run "$OUT/own2.log" --demo
# The operator renews their certificate: a re-run copies it and reloads Apache.
before=$(served_serial)
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 60 \
    -keyout "$OUT/own.key" -out "$OUT/own.crt" -subj "/CN=$NAME" -addext "subjectAltName=DNS:$NAME" \
    > "$OUT/openssl.log" 2>&1 || fail "openssl could not make the renewed certificate"
./install.sh --demo > "$OUT/own3.log" 2>&1 || { cat "$OUT/own3.log"; fail "the run after the renewal failed"; }
grep -E '^\[(https-files|apache)\]' "$OUT/own3.log" | indent
after=$(served_serial)
[ "$after" != "$before" ] || fail "the renewed certificate is not served ($before)"
grep -q "ok   https: $NAME: certificate for $NAME, 59 days to expiry" "$OUT/own3.log" || fail "check does not see the renewed certificate"
ok "a renewed --cert file is copied and served by the next run ($before -> $after); check: 59 days"

# --- 7b. back to plain HTTP ---------------------------------------------------------------------
say "7b. ./install.sh --demo --no-domain: our vhost goes, plain HTTP is open again"
./install.sh --demo --no-domain > "$OUT/nodomain.log" 2>&1 || { cat "$OUT/nodomain.log"; fail "install.sh --no-domain failed"; }
grep -E '^\[(apache-conf|https-config)\]|base_url' "$OUT/nodomain.log" | indent
[ -e "$SITE" ] || [ -L "$SITE_ENABLED" ] && fail "our vhost is still there after --no-domain"
code=$(curl -sS --interface 127.0.0.2 -X POST -d '{}' -o /dev/null -w '%{http_code}' http://127.0.0.1/api/v1/asteriskapi.pl)
[ "$code" = 400 ] || fail "after --no-domain plain HTTP from 127.0.0.2 answered $code, not the endpoint's 400"
[ -z "$(callexchange config get https domain)" ] || fail "[https] domain is still set"
grep -q "^domain=" /opt/callexchange/install-options && fail "install-options still has a domain"
ok "vhost removed, plain HTTP served to everyone again, [https] emptied"

# --- 8. uninstall ---------------------------------------------------------------------------------
say "8. ./install.sh --uninstall: our vhost goes, the certificates stay"
./install.sh --uninstall > "$OUT/uninstall.log" 2>&1 || { cat "$OUT/uninstall.log"; fail "uninstall failed"; }
indent < "$OUT/uninstall.log"
[ -e "$SITE" ] || [ -L "$SITE_ENABLED" ] && fail "our vhost is still there"
for kept in "$LE/live/$NAME" "$CONFIG_DIR/tls"; do
    [ -e "$kept" ] || fail "$kept was not kept"
    grep -q "^    $kept\$" "$OUT/uninstall.log" || fail "$kept is not listed as kept"
done
apache2ctl configtest > /dev/null 2>&1 || fail "apache2ctl configtest fails after the uninstall"
ok "vhost removed; $LE/live/$NAME and $CONFIG_DIR/tls kept and listed; Apache configtests"
ok "done in $((SECONDS - started)) s"
