#!/usr/bin/env bash
# .ci/install-check.sh: install.sh for real, on a disposable Debian 12, as root (CI).
#
#   1. ./install.sh --demo                  must succeed
#   2. ./install.sh --demo again            every step "already in place", 0 changes, and
#                                           the sha256 of everything in the manifest unchanged
#   3. the two curl commands it printed     a sandbox call ("status":"true", a uniqueid), its
#                                           recording listed and served (whole, Range), its
#                                           webhooks logged
#   3b. --persistent, twice; back to --cgi  mod_wsgi daemons serve the same curls; a config
#                                           edit reaches them without a reload
#   4. a broken Apache config               someone else's broken snippet in conf-enabled/
#                                           while our snippet needs an update: install.sh
#                                           stops, puts ours back, does not reload; Apache
#                                           still serves the old config (401 JSON, bad key)
#   5. ./install.sh --uninstall             app, venv, Apache snippet, services gone; config,
#                                           keys and data kept; Apache still configtests
#   6. a PBX (--asterisk-etc, user          Asterisk's user reads the config and writes the
#      asterisk): least privilege           spool, nothing else (not the keys file, not the
#                                           rest of the state dir); twice; an older install's
#                                           layout (asterisk in www-data) is repaired;
#                                           --uninstall restores Asterisk's files byte for byte
#
# Then it leaves the machine as the test suite wants it: Apache stopped, the demo
# processes gone, the kept config and data removed. It refuses to run where CallExchange
# is installed or configured already, and outside CI unless given --disposable-machine.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive

# shellcheck source=.ci/host-check.sh
. .ci/host-check.sh
APACHE_CONF=/etc/apache2/conf-available/callexchange.conf
BROKEN_SNIPPET=/etc/apache2/conf-enabled/zz-callexchange-ci-broken.conf
MADE_ASTERISK_USER=0

refuse_unless_disposable .ci/install-check.sh "installs, breaks and uninstalls CallExchange" \
    "${1:-}"
OUT=$(mktemp -d /tmp/cx-install-check.XXXXXX)

# Without systemd, install.sh runs the webhook timer's job from /etc/cron.d and starts
# cron if it is not running; this check stops it again if it was not running before.
CRON_BEFORE=$(cron_pid)

apache_pid() {
    cat /run/apache2/apache2.pid 2>/dev/null || true
}

# Whatever happens: show the logs on failure, then leave no demo process, no Apache and
# no CallExchange state behind for the developer's (or CI's) next test run.
cleanup() {
    local status=$?
    if [ "$status" != 0 ] || [ "$FAILED" = 1 ]; then
        say "logs after the failure"
        for log in "$OUT"/*.log "$LOG_DIR"/*.log; do
            [ -f "$log" ] && { echo "--- $log"; tail -n 40 "$log"; }
        done
        echo "--- /var/log/apache2/error.log"
        tail -n 30 /var/log/apache2/error.log 2>/dev/null || true
    fi
    rm -f "$BROKEN_SNIPPET"
    uninstall_if_installed "$OUT/cleanup-uninstall.log"
    stop_background_services
    stop_apache_and_cron
    if [ "$MADE_ASTERISK_USER" = 1 ]; then
        userdel asterisk >/dev/null 2>&1 || true
    fi
    rm -rf "$CONFIG_DIR" "$STATE_DIR" "$LOG_DIR" "$RUN_DIR" "$OUT"
    if [ "$status" = 0 ]; then
        echo
        echo "install check passed"
    else
        echo
        echo "install check FAILED" >&2
    fi
}
trap cleanup EXIT

# snapshot: one line per thing install.sh made (from its manifest): type, mode, owner,
# sha256 or link target (.ci/snapshot.py). Trees are walked; kept dirs (data) only stat'ed.
snapshot() {
    python3 .ci/snapshot.py "$MANIFEST"
}

# --- 1. install --------------------------------------------------------------------------
say "1. ./install.sh --demo (first run)"
started=$SECONDS
if ! ./install.sh --demo > "$OUT/run1.log" 2>&1; then
    cat "$OUT/run1.log"
    fail "install.sh --demo failed"
fi
sed 's/^/   | /' "$OUT/run1.log"
# A run that succeeds says no error on the way (a failing command substitution once
# printed "error in step [options]" and went on).
if grep -q 'error in step' "$OUT/run1.log"; then fail "the first run printed an error and went on"; fi
ok "installed in $((SECONDS - started)) s"
[ -f "$MANIFEST" ] || fail "no manifest at $MANIFEST"
snapshot > "$OUT/snapshot1"
ok "snapshot of $(wc -l < "$OUT/snapshot1") paths from the manifest"

# --- 2. idempotency ----------------------------------------------------------------------
say "2. ./install.sh --demo (second run): nothing may change"
./install.sh --demo > "$OUT/run2.log" 2>&1 || { cat "$OUT/run2.log"; fail "second run failed"; }
sed 's/^/   | /' "$OUT/run2.log" | sed -n '1,/^   | Done/p'
steps=$(grep -c '^\[' "$OUT/run2.log" || true)
[ "$steps" -ge 10 ] || fail "expected at least 10 [step] lines in the second run, got $steps"
if grep '^\[' "$OUT/run2.log" | grep -v 'already in place'; then
    fail "the step(s) above changed something on the second run"
fi
ok "all $steps steps say 'already in place'"
grep -q '^Done: 0 changes' "$OUT/run2.log" || fail "the second run did not report 0 changes"
snapshot > "$OUT/snapshot2"
if ! diff -u "$OUT/snapshot1" "$OUT/snapshot2"; then
    fail "files changed between the first and the second run (diff above)"
fi
ok "sha256, modes and owners of all $(wc -l < "$OUT/snapshot2") manifest paths identical"
if ls systemd/*.timer >/dev/null 2>&1 && [ "$(cat /proc/1/comm)" != systemd ]; then
    grep -q 'webhooks deliver' /etc/cron.d/callexchange || fail "no webhooks deliver line in /etc/cron.d/callexchange"
    [ -n "$(cron_pid)" ] || fail "cron is not running: the webhook retries would never run"
    ok "no systemd: /etc/cron.d/callexchange runs the webhook timer's job; cron runs"
fi

# --- 3. the printed curl commands ----------------------------------------------------------
# demo_calls LOG [CURL_OPTION...]: run the two curl commands LOG printed (with the options
# added, e.g. --cacert), and check the call, its webhooks, its recording listed and
# served whole and by Range. Sets uniqueid, listed and recording_file.
demo_calls() {
    local log=$1 commands call_command list_command curl_extra=""
    shift
    [ $# -eq 0 ] || curl_extra=" $(printf '%q ' "$@")"
    mapfile -t commands < <(sed -n 's/^    \(curl .*\)$/\1/p' "$log")
    [ "${#commands[@]}" = 2 ] || fail "expected 2 curl commands in $log, found ${#commands[@]}"
    call_command=${commands[0]/curl /curl$curl_extra }
    list_command=${commands[1]/curl /curl$curl_extra }
    case $call_command in *asteriskapi.pl*) ;; *) fail "first curl is not the call: $call_command" ;; esac
    case $list_command in *find_phone_files.pl*) ;; *) fail "second curl is not the listing: $list_command" ;; esac

    bash -c "$call_command" > "$OUT/call.json" 2> "$OUT/call.err" || fail "the call's curl failed: $(cat "$OUT/call.err")"
    echo "   call: $(cat "$OUT/call.json")"
    uniqueid=$(reply_uniqueid "$OUT/call.json") || fail "the call's reply is not a success with a uniqueid"
    ok "the call was placed: status true, uniqueid $uniqueid"

    local webhook_log=$LOG_DIR/demo-webhooks.log events=""
    for _ in $(seq 1 40); do
        events=$(grep -F "\"$uniqueid\"" "$webhook_log" 2>/dev/null \
            | python3 -c 'import json, sys; print(" ".join("%s:%s" % (e["event"], e["signature"]) for e in map(json.loads, sys.stdin)))' \
            || true)
        case $events in *hangup*) break ;; esac
        sleep 0.5
    done
    [ "$events" = "connect:valid hangup:valid" ] \
        || fail "webhooks of $uniqueid in $webhook_log: '${events:-none}', expected 'connect:valid hangup:valid'"
    ok "the demo CRM logged the connect and the hangup webhook, signatures valid ($webhook_log)"

    local recordings_root
    recordings_root=$(callexchange config get recordings root)
    recording_file=""
    listed=""
    for _ in $(seq 1 40); do
        bash -c "$list_command" > "$OUT/list.json" 2> "$OUT/list.err" || fail "the listing's curl failed: $(cat "$OUT/list.err")"
        listed=$(python3 - "$OUT/list.json" "$uniqueid" <<'PY'
import json, sys
reply = json.load(open(sys.argv[1]))
if not isinstance(reply, list):
    sys.exit("the recordings reply is not a JSON array: %r" % (reply,))
print(next((entry["url"] for entry in reply if entry.get("uniqueid") == sys.argv[2]), ""))
PY
) || fail "$(head -c 300 "$OUT/list.json")"
        recording_file=$(find "$recordings_root" -name "*$uniqueid*" -print -quit 2>/dev/null || true)
        [ -n "$listed" ] && break
        sleep 0.5
    done
    echo "   list: $(head -c 400 "$OUT/list.json")"
    [ -n "$listed" ] || fail "the call's recording (${recording_file:-not written}) is not listed"
    local code size
    code=$(curl -sS "$@" -o "$OUT/recording" -w '%{http_code}' "$listed")
    if [ "$code" != 200 ] || [ "$(head -c 4 "$OUT/recording")" != RIFF ]; then
        fail "the listed recording $listed answered $code, not a WAV file"
    fi
    size=$(stat -c %s "$OUT/recording")
    code=$(curl -sS "$@" -H 'Range: bytes=4-11' -o "$OUT/range" -D "$OUT/range.headers" -w '%{http_code}' "$listed")
    [ "$code" = 206 ] || fail "a Range request for $listed answered $code, not 206"
    cmp -s "$OUT/range" <(tail -c +5 "$OUT/recording" | head -c 8) || fail "the Range reply is not bytes 4-11 of the file"
    grep -qi "^content-range: bytes 4-11/$size" "$OUT/range.headers" || fail "no Content-Range bytes 4-11/$size"
    ok "the call's recording is listed and served, whole and by Range (206): $listed"
}

say "3. the curl commands install.sh printed"
demo_calls "$OUT/run2.log"

# --- 3b. persistent mode --------------------------------------------------------------------
say "3b. ./install.sh --demo --persistent (twice), the same curls, config edits live, back to --cgi"
./install.sh --demo --persistent > "$OUT/persistent1.log" 2>&1 || { cat "$OUT/persistent1.log"; fail "install.sh --persistent failed"; }
grep -E '^\[(apache-conf|apache|packages)\]' "$OUT/persistent1.log" | sed 's/^/   | /'
grep -q 'WSGIDaemonProcess callexchange' "$APACHE_CONF" || fail "$APACHE_CONF is not the mod_wsgi snippet"
snapshot > "$OUT/snapshot-p1"
./install.sh --demo > "$OUT/persistent2.log" 2>&1 || { cat "$OUT/persistent2.log"; fail "the second persistent run failed"; }
grep '^\[' "$OUT/persistent2.log" | grep -v 'already in place' && fail "the second persistent run (mode kept) changed the step(s) above"
snapshot > "$OUT/snapshot-p2"
diff -u "$OUT/snapshot-p1" "$OUT/snapshot-p2" || fail "the second persistent run changed files"
ok "a second run keeps the persistent mode and changes nothing"
daemons() {
    local proc
    for proc in /proc/[0-9]*; do
        if tr '\0' ' ' < "$proc/cmdline" 2>/dev/null | grep -q '^(wsgi:callexchang'; then
            echo "${proc#/proc/}"
        fi
    done | sort
}
wsgi_pids=$(daemons)
[ -n "$wsgi_pids" ] || fail "no mod_wsgi daemon process (wsgi:callexchange, shown as (wsgi:callexchang) runs"
demo_calls "$OUT/persistent2.log"
# An edit of the config takes effect without a reload: the daemons stay, the reply changes.
base_url=$(callexchange config get recordings base_url)
callexchange config set recordings base_url "http://127.0.0.1/wav-files-edited/" > /dev/null
edited=$(curl -sS "http://127.0.0.1/recorded/v1/find_phone_files.pl?phone=4930901820" -H "api-key: $(cat "$CONFIG_DIR/demo-api-key")")
callexchange config set recordings base_url "$base_url" > /dev/null
case $edited in *'"url": "http://127.0.0.1/wav-files-edited/'*) ;; *) fail "the edited base_url did not reach the daemons: $(echo "$edited" | head -c 300)" ;; esac
[ "$(daemons)" = "$wsgi_pids" ] || fail "the mod_wsgi daemons were restarted by a config edit"
ok "a config edit reaches the running daemons at the next request (same pids: $(echo "$wsgi_pids" | paste -sd ' '))"
./install.sh --demo --cgi > "$OUT/cgi-again.log" 2>&1 || { cat "$OUT/cgi-again.log"; fail "install.sh --cgi failed"; }
grep -q 'ScriptAliasMatch' "$APACHE_CONF" || fail "$APACHE_CONF is not the CGI snippet again"
snapshot | grep -v '^/etc/apache2/mods-enabled:' > "$OUT/snapshot-cgi"
grep -v '^/etc/apache2/mods-enabled:' "$OUT/snapshot2" | diff -u - "$OUT/snapshot-cgi" \
    || fail "back in CGI mode, the files differ from the first CGI install"
demo_calls "$OUT/cgi-again.log"
ok "--cgi puts back the CGI install (the same files as the first run; mod_wsgi stays loaded)"

# --- 4. a broken Apache config must change nothing -----------------------------------------
# The failure comes from outside, as on a real host: another site's snippet that Apache
# rejects, at a moment when our own snippet needs an update (here: an edited copy).
say "4. a broken snippet in conf-enabled/ and an outdated callexchange.conf: install.sh must fail and change nothing"
before_pid=$(apache_pid)
printf '\n# edited by .ci/install-check.sh: install.sh must want to replace this file\n' >> "$APACHE_CONF"
snapshot > "$OUT/snapshot-edited"
printf '# .ci/install-check.sh: a directive Apache does not know\nCallExchangeBrokenOnPurpose on\n' \
    > "$BROKEN_SNIPPET"
if ./install.sh --demo > "$OUT/broken.log" 2>&1; then
    cat "$OUT/broken.log"
    fail "install.sh succeeded with a broken Apache configuration"
fi
grep -A3 'error in step' "$OUT/broken.log" | sed 's/^/   | /'
grep -q 'Apache was NOT reloaded' "$OUT/broken.log" || fail "no clear message about Apache"
grep -q 'CallExchangeBrokenOnPurpose' "$OUT/broken.log" || fail "configtest's complaint is not shown"
for leftover in /etc/apache2/conf-available/.cx-install.*; do
    [ -e "$leftover" ] && fail "a temp file was left: $leftover"
done
rm -f "$BROKEN_SNIPPET"
snapshot > "$OUT/snapshot3"
diff -u "$OUT/snapshot-edited" "$OUT/snapshot3" || fail "the failed run changed files (diff above)"
ok "nothing changed: the manifest's files, the (edited) Apache snippet and the enabled modules are as before"
apache2ctl configtest > /dev/null 2>&1 || fail "apache2ctl configtest fails once the broken snippet is gone"
[ "$(apache_pid)" = "$before_pid" ] || fail "Apache's main process changed ($before_pid -> $(apache_pid))"
reply=$(curl -sS -X POST http://127.0.0.1/api/v1/asteriskapi.pl -H 'api-key: not-a-key' \
    -d '{"extension":"2001","destination":"+4930901820"}' -w '\n%{http_code} %{content_type}')
echo "   bad key: $reply"
case $reply in
    *'"error": "Invalid api-key"'*$'\n''401 application/json'*) ok "Apache still serves the old config: 401 JSON for a bad key" ;;
    *) fail "Apache does not answer the old config's 401 JSON for a bad key" ;;
esac
./install.sh --demo > "$OUT/repaired.log" 2>&1 || { cat "$OUT/repaired.log"; fail "install.sh failed once the broken snippet was gone"; }
grep -q '^\[apache-conf\] *wrote' "$OUT/repaired.log" || fail "install.sh did not put its snippet back in shape"
snapshot > "$OUT/snapshot4"
diff -u "$OUT/snapshot2" "$OUT/snapshot4" || fail "the repaired install differs from the first (diff above)"
ok "with the broken snippet gone, install.sh replaces the outdated snippet: as after the first run"

# --- 5. uninstall --------------------------------------------------------------------------
say "5. ./install.sh --uninstall"
mapfile -t pids < <(cat "$RUN_DIR"/*.pid 2>/dev/null | sed -n '1~2p')
./install.sh --uninstall > "$OUT/uninstall.log" 2>&1 || { cat "$OUT/uninstall.log"; fail "uninstall failed"; }
sed 's/^/   | /' "$OUT/uninstall.log"
for path in /opt/callexchange /usr/local/bin/callexchange "$APACHE_CONF" \
        /etc/apache2/conf-enabled/callexchange.conf "$RUN_DIR/callexchange-sandbox.pid" \
        /etc/cron.d/callexchange /etc/systemd/system/callexchange-webhooks.timer; do
    [ -e "$path" ] || [ -L "$path" ] && fail "$path is still there"
done
ok "the app, the venv, the wrapper, the Apache snippet, the timer or cron line and the pid files are gone"
for pid in "${pids[@]}"; do
    kill -0 "$pid" 2>/dev/null && fail "demo process $pid still runs"
done
for port in 5038 8099; do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && fail "something still listens on $port"
done
for proc in /proc/[0-9]*; do
    case $(tr '\0' '\n' 2>/dev/null < "$proc/cmdline" | head -n 1) in
        /opt/callexchange/*) fail "process ${proc#/proc/} still runs from /opt/callexchange" ;;
    esac
done
ok "the sandbox, the demo CRM and the webhook deliverer are stopped"
for path in "$CONFIG_DIR/callexchange.ini" "$CONFIG_DIR/api-keys" "$CONFIG_DIR/demo-api-key" "$STATE_DIR"; do
    [ -e "$path" ] || fail "$path was not kept"
done
[ -z "$recording_file" ] || [ -f "$recording_file" ] || fail "the recording $recording_file was not kept"
ok "config, keys, state and recordings kept"
apache2ctl configtest > /dev/null 2>&1 || fail "apache2ctl configtest fails after the uninstall"
if [ -n "$(apache_pid)" ] && kill -0 "$(apache_pid)" 2>/dev/null; then
    code=$(curl -sS -o /dev/null -w '%{http_code}' -X POST http://127.0.0.1/api/v1/asteriskapi.pl)
    [ "$code" = 404 ] || fail "after the uninstall /api/v1/asteriskapi.pl answers $code, not 404"
    code=$(curl -sS -o /dev/null -w '%{http_code}' http://127.0.0.1/)
    ok "Apache still runs its own site (/ answers $code; the gateway's URL 404)"
else
    ok "Apache is stopped cleanly"
fi
./install.sh --uninstall > "$OUT/uninstall2.log" 2>&1 || fail "a second uninstall failed"
grep -q 'Nothing to uninstall' "$OUT/uninstall2.log" || fail "a second uninstall did something"
ok "a second --uninstall has nothing to do"

# --- 6. a PBX: least privilege for Asterisk's user ------------------------------------------
say "6. a PBX (--asterisk-etc, user asterisk): Asterisk's user reaches the config and the spool only"
rm -rf "$CONFIG_DIR" "$STATE_DIR"
if ! getent passwd asterisk > /dev/null; then
    useradd --system --no-create-home --shell /usr/sbin/nologin asterisk
    MADE_ASTERISK_USER=1
fi
pbx_etc=$OUT/pbx-etc
mkdir -p "$pbx_etc" "$OUT/pbx-agi"
printf '[directories]\nastagidir => %s\n[options]\nrunuser = asterisk\n' "$OUT/pbx-agi" > "$pbx_etc/asterisk.conf"
printf '[general]\nstatic=yes\n\n[default]\nexten => 1,1,Hangup()' > "$pbx_etc/extensions.conf"
printf '[general]\nenabled = yes\nport = 5038\n' > "$pbx_etc/manager.conf"
cp -p "$pbx_etc/extensions.conf" "$OUT/extensions.conf.orig"
cp -p "$pbx_etc/manager.conf" "$OUT/manager.conf.orig"
chmod 755 "$OUT"

as_asterisk() { setpriv --reuid=asterisk --regid="$(id -g asterisk)" --init-groups -- "$@"; }
as_web() { setpriv --reuid=www-data --regid=www-data --init-groups -- "$@"; }
check_least_privilege() {
    local keys state
    keys=$(callexchange config get auth keys_file)
    state=$(callexchange config get state dir)
    # shellcheck disable=SC2016  # $1 is expanded by the inner sh
    as_web sh -c 'mkdir -p "$1/ani" && echo 1 > "$1/ani/probe"' sh "$state"
    as_asterisk test -r "$CONFIG_DIR/callexchange.ini" || fail "asterisk cannot read the config"
    as_asterisk test -w "$state/webhooks" || fail "asterisk cannot write the spool"
    as_asterisk test -r "$keys" && fail "asterisk can read the keys file $keys"
    as_asterisk ls "$state" > /dev/null 2>&1 && fail "asterisk can list $state"
    as_asterisk cat "$state/ani/probe" > /dev/null 2>&1 && fail "asterisk can read $state/ani/probe"
    id -nG asterisk | tr ' ' '\n' | grep -Fxq www-data && fail "asterisk is in group www-data"
    as_web test -r "$keys" || fail "www-data cannot read the keys file"
    as_web test -r "$state/webhooks" || fail "www-data cannot read the spool"
    [ "$(stat -c '%U:%G %a' "$state/webhooks")" = "asterisk:www-data 2750" ] \
        || fail "the spool is $(stat -c '%U:%G %a' "$state/webhooks"), not asterisk:www-data 2750"
    rm -rf "$state/ani/probe"
    ok "asterisk reads the config and writes the spool; it cannot read the keys file, list the state dir or read its files; www-data reads keys and spool"
}

./install.sh --asterisk-etc "$pbx_etc" --caller-id 4930123456 > "$OUT/pbx1.log" 2>&1 \
    || { cat "$OUT/pbx1.log"; fail "install.sh --asterisk-etc failed"; }
sed 's/^/   | /' "$OUT/pbx1.log" | grep -E '^   \| \[(state|access|agi|asterisk|options)\]'
check_least_privilege
grep -Fxq '#include "extensions_callexchange.conf"' "$pbx_etc/extensions.conf" || fail "no #include in extensions.conf"
grep -Fxq '#include "manager_callexchange.conf"' "$pbx_etc/manager.conf" || fail "no #include in manager.conf"
[ -L "$OUT/pbx-agi/callexchange-webhook.agi" ] || fail "the hook is not linked into astagidir $OUT/pbx-agi"
ok "the snippets and #include lines are in $pbx_etc, the hook in its astagidir"
snapshot > "$OUT/pbx-snapshot1"
./install.sh > "$OUT/pbx2.log" 2>&1 || { cat "$OUT/pbx2.log"; fail "the second PBX run failed"; }
grep '^\[' "$OUT/pbx2.log" | grep -v 'already in place' && fail "the second PBX run changed the step(s) above"
snapshot > "$OUT/pbx-snapshot2"
diff -u "$OUT/pbx-snapshot1" "$OUT/pbx-snapshot2" || fail "the second PBX run (options remembered) changed files"
ok "a second run without options keeps --asterisk-etc and changes nothing"

say "6b. the layout of an older install.sh (asterisk in group www-data, no ACLs, state open to others) is repaired"
state=$(callexchange config get state dir)
usermod -a -G www-data asterisk
printf 'group-member\tasterisk\twww-data\n' >> "$MANIFEST"
setfacl -b "$CONFIG_DIR" "$CONFIG_DIR/callexchange.ini" "$state"
mkdir -p "$state/ani" && echo 1 > "$state/ani/old" && chmod -R o+rX "$state/ani"
./install.sh > "$OUT/pbx3.log" 2>&1 || { cat "$OUT/pbx3.log"; fail "the repairing run failed"; }
sed 's/^/   | /' "$OUT/pbx3.log" | grep -E '^   \| \[access\]|restart Asterisk'
grep -q 'removed asterisk from group www-data' "$OUT/pbx3.log" || fail "the old group membership was not taken back"
check_least_privilege
as_asterisk cat "$state/ani/old" > /dev/null 2>&1 && fail "asterisk can still read what the old layout left open"
rm -f "$state/ani/old"
ok "repaired: membership taken back, ACLs in place, old files closed"

say "6c. --uninstall on the PBX"
./install.sh --uninstall > "$OUT/pbx-uninstall.log" 2>&1 || { cat "$OUT/pbx-uninstall.log"; fail "uninstall failed"; }
cmp "$pbx_etc/extensions.conf" "$OUT/extensions.conf.orig" || fail "extensions.conf is not as it was"
cmp "$pbx_etc/manager.conf" "$OUT/manager.conf.orig" || fail "manager.conf is not as it was"
for leftover in "$pbx_etc/extensions_callexchange.conf" "$pbx_etc/manager_callexchange.conf" \
        "$OUT/pbx-agi/callexchange-webhook.agi"; do
    [ -e "$leftover" ] || [ -L "$leftover" ] && fail "$leftover is still there"
done
getfacl --omit-header --absolute-names "$CONFIG_DIR/callexchange.ini" | grep -q asterisk && fail "the config still has an ACL for asterisk"
ok "Asterisk's files byte for byte as before, snippets and hook link gone, ACL entries removed"

