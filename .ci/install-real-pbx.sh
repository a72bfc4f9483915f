#!/usr/bin/env bash
# .ci/install-real-pbx.sh: install.sh against a real Asterisk, on a disposable Debian 12,
# as root (CI). Where .ci/install-check.sh step 6 gives install.sh a fake /etc/asterisk,
# this one gives it a real Asterisk 22 (the binary of $ASTERISK, else build.sh's) with a
# standard /etc/asterisk-style config dir in a temp dir, running as its runuser asterisk:
#
#   1. the PBX                        asterisk.conf ([directories], runuser), modules.conf,
#                                     logger.conf, extensions.conf (a fake carrier, fake
#                                     agents, CX_TRUNK), manager.conf (AMI on 127.0.0.1:5038),
#                                     pjsip.conf; Asterisk started; no callexchange context
#   2. install.sh --asterisk-etc DIR  its snippets and #include lines are loaded by the
#      --caller-id ...                running Asterisk: `dialplan show` of every
#                                     callexchange context, `manager show user`
#   3. the gateway's config           [ami] points at that Asterisk's AMI; the agent is a
#                                     Local channel into the fake agents (no SIP phone);
#                                     webhooks go to the demo CRM (`webhooks demo-crm`)
#   4. calls through the installed    agent first and dialer: curl to Apache's
#      Apache                         asteriskapi.pl, the fake carrier's NoOp in Asterisk's
#                                     log, connect + hangup webhooks (signatures valid,
#                                     duration = talk time), the recording written
#   5. ./install.sh --uninstall       Asterisk's files byte for byte as before, the
#                                     contexts and the AMI user gone from the running
#                                     Asterisk; then Asterisk stopped, the host left clean
#
# It refuses to run where CallExchange is installed or configured already, and outside CI
# unless given --disposable-machine. Takes about a minute once Asterisk is built.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive

# shellcheck source=.ci/host-check.sh
. .ci/host-check.sh
# install.sh's default [ami] port: the PBX listens there, as a stock Asterisk does.
AMI_PORT=5038
CALLER_ID=4930123456
AGENT=2101
LEAD=+4930901820            # agent first; the dialer call dials LEAD2: the same number
LEAD2=+4930901821           # again within [dial] dedupe_seconds would be a double-click
TALK=3                      # seconds the fake carrier's lead talks (after Answer) before hanging up
MADE_ASTERISK_USER=0
ASTERISK_PID=""
CRM_PID=""

refuse_unless_disposable .ci/install-real-pbx.sh \
    "installs and uninstalls CallExchange and runs an Asterisk as root" "${1:-}"
if (exec 3<>"/dev/tcp/127.0.0.1/$AMI_PORT") 2>/dev/null; then
    echo ".ci/install-real-pbx.sh: something listens on 127.0.0.1:$AMI_PORT (install.sh's default" \
         "AMI port, where this PBX must listen); stop it first" >&2
    exit 2
fi

# The Asterisk under test: $ASTERISK (.ci/run exports it), else build.sh's (it reuses a
# finished build at once).
if [ -z "${ASTERISK:-}" ]; then
    if [ -x ../shared/asterisk/build.sh ]; then
        ASTERISK=$(../shared/asterisk/build.sh | tail -n 1)
    else
        ASTERISK=/opt/asterisk-22.10.1/sbin/asterisk
    fi
fi
[ -x "$ASTERISK" ] || { echo ".ci/install-real-pbx.sh: no Asterisk binary at $ASTERISK (set ASTERISK)" >&2; exit 2; }
PREFIX=$(dirname "$(dirname "$(readlink -f "$ASTERISK")")")
MODULES=$PREFIX/lib/asterisk/modules
DATA=$PREFIX/var/lib/asterisk
[ -f "$MODULES/chan_pjsip.so" ] || { echo ".ci/install-real-pbx.sh: no $MODULES/chan_pjsip.so beside $ASTERISK" >&2; exit 2; }

# Made only once it is sure to run (a refusal leaves nothing behind).
OUT=$(mktemp -d /tmp/cx-real-pbx.XXXXXX)
PBX_ETC=$OUT/etc/asterisk
PBX_VAR=$OUT/var
RECORDINGS=$OUT/recordings
WEBHOOK_LOG=$OUT/webhooks.log

CRON_BEFORE=$(cron_pid)

# ast COMMAND: `asterisk -rx COMMAND` on this PBX (its control socket, as root).
ast() {
    "$ASTERISK" -C "$PBX_ETC/asterisk.conf" -rx "$1" 2>&1
}

# ast_until COMMAND TEXT [absent]: wait (up to 10 s) until COMMAND's output has TEXT (or,
# with absent, no longer has it): `dialplan reload` and `manager reload` take effect a
# moment after the CLI returns. Prints the last output; fails if it never came.
ast_until() {
    local shown
    for _ in $(seq 1 40); do
        shown=$(ast "$1")
        case $shown in
            *"$2"*) [ "${3:-}" = absent ] || { printf '%s\n' "$shown"; return 0; } ;;
            *) [ "${3:-}" = absent ] && { printf '%s\n' "$shown"; return 0; } ;;
        esac
        sleep 0.25
    done
    printf '%s\n' "$shown"
    return 1
}

stop_asterisk() {
    [ -n "$ASTERISK_PID" ] || return 0
    if kill -0 "$ASTERISK_PID" 2>/dev/null; then
        ast 'core stop now' > /dev/null || true
        for _ in $(seq 1 100); do
            kill -0 "$ASTERISK_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -0 "$ASTERISK_PID" 2>/dev/null && kill -KILL "$ASTERISK_PID" 2>/dev/null
    fi
    wait "$ASTERISK_PID" 2>/dev/null || true
    ASTERISK_PID=""
}

# Whatever happens: show the logs on failure, then no Asterisk, no demo CRM, no Apache,
# no CallExchange install or state, no asterisk user that was not there before.
cleanup() {
    local status=$?
    if [ "$status" != 0 ] || [ "$FAILED" = 1 ]; then
        say "logs after the failure"
        for log in "$OUT"/*.log "$PBX_VAR"/log/asterisk/messages.log; do
            [ -f "$log" ] && { echo "--- $log"; tail -n 40 "$log"; }
        done
        echo "--- /var/log/apache2/error.log"
        tail -n 20 /var/log/apache2/error.log 2>/dev/null || true
    fi
    uninstall_if_installed "$OUT/cleanup-uninstall.log"
    stop_asterisk
    if [ -n "$CRM_PID" ]; then
        kill "$CRM_PID" 2>/dev/null || true
        wait "$CRM_PID" 2>/dev/null || true
    fi
    stop_apache_and_cron
    if [ "$MADE_ASTERISK_USER" = 1 ]; then
        userdel asterisk >/dev/null 2>&1 || true
    fi
    rm -rf "$CONFIG_DIR" "$STATE_DIR" "$LOG_DIR" "$RUN_DIR" "$OUT"
    if [ "$status" = 0 ]; then
        left_over=""
        for path in /opt/callexchange "$CONFIG_DIR" "$STATE_DIR" /usr/local/bin/callexchange; do
            [ -e "$path" ] && left_over="$left_over $path"
        done
        pid=$(cat /run/apache2/apache2.pid 2>/dev/null || true)
        [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && left_over="$left_over apache2(pid $pid)"
        getent passwd asterisk > /dev/null && [ "$MADE_ASTERISK_USER" = 1 ] && left_over="$left_over user:asterisk"
        if [ -n "$left_over" ]; then
            printf '   FAIL the host is not clean:%s\n' "$left_over"
            status=1
        else
            printf '   ok   host clean: no /opt/callexchange, %s, %s; Apache and Asterisk stopped%s\n' \
                "$CONFIG_DIR" "$STATE_DIR" "$([ "$MADE_ASTERISK_USER" = 1 ] && echo '; the asterisk user removed')"
        fi
    fi
    echo
    if [ "$status" = 0 ]; then
        echo "real-PBX install check passed"
    else
        echo "real-PBX install check FAILED" >&2
    fi
    exit "$status"
}
trap cleanup EXIT

free_udp_port() {
    python3 -c 'import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
free_tcp_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# --- 1. the PBX ----------------------------------------------------------------------------
say "1. a real Asterisk ($ASTERISK) with a standard config dir $PBX_ETC"
if ! getent passwd asterisk > /dev/null; then
    useradd --system --no-create-home --shell /usr/sbin/nologin asterisk
    MADE_ASTERISK_USER=1
fi
chmod 755 "$OUT"
mkdir -p "$PBX_ETC" "$OUT/agi-bin" "$RECORDINGS"
for dir in lib/asterisk spool/asterisk run/asterisk log/asterisk cache/asterisk; do
    mkdir -p "$PBX_VAR/$dir"
done
chown -R asterisk:asterisk "$PBX_VAR" "$RECORDINGS"

cat > "$PBX_ETC/asterisk.conf" <<EOF
; A stock layout under $OUT: Asterisk's own binaries and modules, every writable
; directory below $PBX_VAR, the AGI scripts in $OUT/agi-bin.
[directories]
astetcdir => $PBX_ETC
astmoddir => $MODULES
astvarlibdir => $PBX_VAR/lib/asterisk
astdbdir => $PBX_VAR/lib/asterisk
astkeydir => $PBX_VAR/lib/asterisk
astdatadir => $DATA
astagidir => $OUT/agi-bin
astspooldir => $PBX_VAR/spool/asterisk
astrundir => $PBX_VAR/run/asterisk
astlogdir => $PBX_VAR/log/asterisk
astcachedir => $PBX_VAR/cache/asterisk
astsbindir => $PREFIX/sbin

[options]
runuser = asterisk
rungroup = asterisk
verbose = 3
nocolor = yes
EOF
# The real-Asterisk suite's module list (nothing that listens beyond loopback or needs
# a service) and its logger (full.log has every dialplan step).
cp tests/asterisk/etc/modules.conf tests/asterisk/etc/logger.conf "$PBX_ETC/"
cat > "$PBX_ETC/extensions.conf" <<EOF
[general]
static = yes
writeprotect = no

[globals]
; Leads go to the fake carrier below; MixMonitor writes to the gateway's recordings root.
CX_TRUNK = Local/{number}@fake-carrier
CX_LEAD_RING = 20
CX_RECORDING_ROOT = $RECORDINGS

[default]
exten => s,1,Hangup()

; Every lead answers after 1 s, hears a 440 Hz beep for $TALK s, hangs up (cause 16).
[fake-carrier]
exten => _X!,1,NoOp(fake-carrier: lead \${EXTEN}, caller ID \${CALLERID(num)}, call \${CX_UNIQUEID})
 same => n,Ringing()
 same => n,Wait(1)
 same => n,Answer()
 same => n,Playtones(440/400,0/600)
 same => n,Wait($TALK)
 same => n,StopPlaytones()
 same => n,Hangup(16)

; The agents: [dial] agent_channel Local/{extension}@fake-agents/n; they answer at once
; and stay until the call hangs them up.
[fake-agents]
exten => _X!,1,NoOp(fake-agents: agent \${EXTEN} answers, call \${CX_UNIQUEID})
 same => n,Answer()
 same => n,Playtones(350)
 same => n,Wait(600)
 same => n,Hangup()
EOF
cat > "$PBX_ETC/manager.conf" <<EOF
[general]
enabled = yes
port = $AMI_PORT
bindaddr = 127.0.0.1
EOF
cat > "$PBX_ETC/pjsip.conf" <<EOF
; SIP on loopback only; no endpoint is needed: the agents are Local channels.
[transport-udp]
type = transport
protocol = udp
bind = 127.0.0.1:$(free_udp_port)
EOF
chown -R asterisk:asterisk "$OUT/etc"
chmod 750 "$PBX_ETC"
chmod 640 "$PBX_ETC"/*
for file in extensions.conf manager.conf; do
    cp -p "$PBX_ETC/$file" "$OUT/$file.orig"
done
ok "$(cd "$PBX_ETC" && echo *) (asterisk:asterisk, 0640)"

started=$SECONDS
"$ASTERISK" -C "$PBX_ETC/asterisk.conf" -f -n > "$OUT/asterisk-console.log" 2>&1 &
ASTERISK_PID=$!
booted=""
for _ in $(seq 1 120); do
    kill -0 "$ASTERISK_PID" 2>/dev/null || fail "Asterisk exited at start: $(tail -n 20 "$OUT/asterisk-console.log")"
    if [ -S "$PBX_VAR/run/asterisk/asterisk.ctl" ]; then
        booted=$(ast 'core waitfullybooted')
        case $booted in *"fully booted"*) break ;; esac
    fi
    sleep 0.5
done
case $booted in *"fully booted"*) ;; *) fail "Asterisk did not boot within 60 s: $booted" ;; esac
for _ in $(seq 1 40); do
    (exec 3<>"/dev/tcp/127.0.0.1/$AMI_PORT") 2>/dev/null && break
    sleep 0.25
done
(exec 3<>"/dev/tcp/127.0.0.1/$AMI_PORT") 2>/dev/null || fail "AMI does not listen on 127.0.0.1:$AMI_PORT"
runs_as=$(ps -o user= -p "$ASTERISK_PID" | tr -d ' ')
[ "$runs_as" = asterisk ] || fail "Asterisk runs as $runs_as, not as its runuser asterisk"
ok "$(ast 'core show version' | head -n 1)"
ok "fully booted in $((SECONDS - started)) s, pid $ASTERISK_PID, as user $runs_as; AMI on 127.0.0.1:$AMI_PORT"
case $(ast 'dialplan show callexchange-outbound') in
    *"There is no existence of 'callexchange-outbound' context"*) ok "no callexchange context loaded yet" ;;
    *) fail "callexchange-outbound is loaded before install.sh ran" ;;
esac

# --- 2. install.sh -------------------------------------------------------------------------
say "2. ./install.sh --asterisk-etc $PBX_ETC --caller-id $CALLER_ID (Asterisk running)"
started=$SECONDS
if ! ./install.sh --asterisk-etc "$PBX_ETC" --caller-id "$CALLER_ID" > "$OUT/install.log" 2>&1; then
    cat "$OUT/install.log"
    fail "install.sh --asterisk-etc failed"
fi
indent < "$OUT/install.log"
ok "installed in $((SECONDS - started)) s"
grep -q 'asterisk: dialplan reloaded' "$OUT/install.log" || fail "install.sh did not reload the dialplan"
grep -q 'asterisk: manager reloaded' "$OUT/install.log" || fail "install.sh did not reload the manager"
grep -Fxq '#include "extensions_callexchange.conf"' "$PBX_ETC/extensions.conf" || fail "no #include in extensions.conf"
grep -Fxq '#include "manager_callexchange.conf"' "$PBX_ETC/manager.conf" || fail "no #include in manager.conf"
[ -L "$OUT/agi-bin/callexchange-webhook.agi" ] || fail "the hook is not linked into astagidir $OUT/agi-bin"
ok "install.sh added the #include lines, the snippets and the hook link, and reloaded the running Asterisk"

mapfile -t contexts < <(sed -n 's/^\[\(callexchange[^]]*\)\].*/\1/p' "$PBX_ETC/extensions_callexchange.conf")
[ "${#contexts[@]}" -ge 2 ] || fail "no callexchange contexts in $PBX_ETC/extensions_callexchange.conf"
echo "   \$ asterisk -C $PBX_ETC/asterisk.conf -rx 'dialplan show callexchange-outbound'"
ast_until 'dialplan show callexchange-outbound' "created by 'pbx_config'" | indent
for context in "${contexts[@]}"; do
    shown=$(ast_until "dialplan show $context" "[ Context '$context' created by 'pbx_config' ]") \
        || fail "Asterisk has not loaded [$context]: $shown"
    ok "dialplan show $context: $(echo "$shown" | grep -o '[0-9]* extensions\? ([0-9]* priorit[a-z]*)' | head -n 1)"
done
ami_user=$(callexchange config get ami username)
section=$(sed -n 's/^\[\([^]]*\)\].*/\1/p' "$PBX_ETC/manager_callexchange.conf" | head -n 1)
[ "$section" = "$ami_user" ] || fail "manager_callexchange.conf defines [$section], the config's [ami] username is $ami_user"
echo "   \$ asterisk -C $PBX_ETC/asterisk.conf -rx 'manager show user $ami_user'"
shown=$(ast_until "manager show user $ami_user" "username: $ami_user") \
    || fail "Asterisk has not loaded the AMI user $ami_user: $shown"
printf '%s\n' "$shown" | indent
for want in "username: $ami_user" "secret: <Set>" "ACL: yes" "read perm: call" "write perm: originate,message"; do
    echo "$shown" | tr -s ' ' | grep -qiF "$want" || fail "manager show user $ami_user lacks '$want'"
done
ok "the AMI user [$ami_user] is loaded: a secret, an ACL, read call, write originate,message"

# --- 3. the gateway's config ---------------------------------------------------------------
say "3. the installed gateway's config: AMI, a Local agent channel, webhooks to the demo CRM"
ami_host=$(callexchange config get ami host)
ami_port=$(callexchange config get ami port)
[ "$ami_host:$ami_port" = "127.0.0.1:$AMI_PORT" ] \
    || fail "[ami] is $ami_host:$ami_port, the PBX's manager.conf listens on 127.0.0.1:$AMI_PORT"
ok "[ami] $ami_host:$ami_port = manager.conf's bindaddr and port"
crm_port=$(free_tcp_port)
callexchange config set dial agent_channel 'Local/{extension}@fake-agents/n' > /dev/null
callexchange config set webhook url "http://127.0.0.1:$crm_port/webhooks" > /dev/null
callexchange config set webhook secret "$(callexchange webhooks secret)" > /dev/null
callexchange config set recordings root "$RECORDINGS" > /dev/null
callexchange config check > /dev/null || fail "the edited config does not validate"
ok "[dial] agent_channel $(callexchange config get dial agent_channel); [webhook] url $(callexchange config get webhook url), signed"
setpriv --reuid=asterisk --regid="$(id -g asterisk)" --init-groups -- test -r "$CONFIG_DIR/callexchange.ini" \
    || fail "the edited config lost the ACL that lets asterisk read it"
callexchange webhooks demo-crm --listen "127.0.0.1:$crm_port" --log "$WEBHOOK_LOG" > "$OUT/demo-crm.log" 2>&1 &
CRM_PID=$!
for _ in $(seq 1 40); do
    (exec 3<>"/dev/tcp/127.0.0.1/$crm_port") 2>/dev/null && break
    sleep 0.25
done
(exec 3<>"/dev/tcp/127.0.0.1/$crm_port") 2>/dev/null || fail "the demo CRM does not listen on $crm_port"
ok "the demo CRM listens on 127.0.0.1:$crm_port, logs to $WEBHOOK_LOG"
key=$(callexchange keys add --label realpbx | sed -n 's/^api-key: //p')
[ -n "$key" ] || fail "callexchange keys add printed no key"
ok "API key 'realpbx' added"
if callexchange check --asterisk-etc "$PBX_ETC" > "$OUT/check.log" 2>&1; then
    indent < "$OUT/check.log"
    ok "callexchange check (as root, with the AMI login) finds nothing missing on this PBX"
else
    indent < "$OUT/check.log"
    fail "callexchange check found problems on the real PBX"
fi

# --- 4. calls through the installed Apache -------------------------------------------------
# place_call MODE LEAD BODY: one call through Apache; its reply, the carrier's and the
# agent's NoOps in Asterisk's log, both webhooks, the duration and the recording.
place_call() {
    local mode=$1 lead=$2 body=$3 uniqueid events duration recording
    echo "   \$ curl -sS -X POST http://127.0.0.1/api/v1/asteriskapi.pl -H 'api-key: ...' -d '$body'"
    curl -sS -X POST http://127.0.0.1/api/v1/asteriskapi.pl -H "api-key: $key" -d "$body" \
        > "$OUT/call.json" 2> "$OUT/call.err" || fail "the call's curl failed: $(cat "$OUT/call.err")"
    echo "   reply: $(cat "$OUT/call.json")"
    uniqueid=$(reply_uniqueid "$OUT/call.json") || fail "$mode: the reply is not a success with a uniqueid"
    for _ in $(seq 1 60); do
        events=$(grep -F "\"$uniqueid\"" "$WEBHOOK_LOG" 2>/dev/null \
            | python3 -c 'import json, sys; print(" ".join("%s:%s" % (e["event"], e["signature"]) for e in map(json.loads, sys.stdin)))' \
            || true)
        case $events in *hangup*) break ;; esac
        sleep 0.25
    done
    grep -F "fake-agents: agent $AGENT answers, call $uniqueid" "$PBX_VAR/log/asterisk/full.log" \
        | sed 's/.*\(NoOp(\)/\1/' | indent
    grep -qF "fake-agents: agent $AGENT answers, call $uniqueid" "$PBX_VAR/log/asterisk/full.log" \
        || fail "$mode: no NoOp of the fake agent for $uniqueid in Asterisk's full.log"
    grep -F "fake-carrier: lead ${lead#+}, caller ID $CALLER_ID, call $uniqueid" "$PBX_VAR/log/asterisk/full.log" \
        | sed 's/.*\(NoOp(\)/\1/' | indent
    grep -qF "fake-carrier: lead ${lead#+}, caller ID $CALLER_ID, call $uniqueid" "$PBX_VAR/log/asterisk/full.log" \
        || fail "$mode: no NoOp of the fake carrier for $uniqueid (lead ${lead#+}, caller ID $CALLER_ID) in Asterisk's full.log"
    ok "$mode: the call reached the fake agent and the fake carrier (caller ID $CALLER_ID), uniqueid $uniqueid"
    grep -F "\"$uniqueid\"" "$WEBHOOK_LOG" | python3 -c '
import json, sys
for entry in map(json.loads, sys.stdin):
    print("%s %s %s" % (entry["event"], entry["signature"], json.dumps(entry["body"], sort_keys=True)))' | indent
    [ "$events" = "connect:valid hangup:valid" ] \
        || fail "$mode: webhooks of $uniqueid: '${events:-none}', expected 'connect:valid hangup:valid'"
    duration=$(grep -F "\"$uniqueid\"" "$WEBHOOK_LOG" | python3 -c '
import json, sys
print(next(e["body"]["duration"] for e in map(json.loads, sys.stdin) if e["event"] == "hangup"))')
    # The talk time by Asterisk's own log: the fake carrier's Answer() to its Hangup(16)
    # (TALK plus the up to 0.5 s Answer() waits for media); the agent is up before.
    talk=$(python3 - "$PBX_VAR/log/asterisk/full.log" "$uniqueid" <<'PY'
import re, sys
from datetime import datetime
lines = open(sys.argv[1], encoding="utf-8", errors="replace").read().splitlines()
noop = next(line for line in lines if "fake-carrier: lead" in line and "call %s\")" % sys.argv[2] in line)
channel = re.search(r'NoOp\("([^"]+)"', noop).group(1)
def at(app):
    line = next(line for line in lines if '] %s("%s"' % (app, channel) in line)
    return datetime.strptime(line[1:24], "%Y-%m-%d %H:%M:%S.%f")
print("%.2f" % (at("Hangup") - at("Answer")).total_seconds())
PY
) || fail "$mode: the fake carrier's Answer and Hangup of $uniqueid are not in Asterisk's full.log"
    python3 -c 'import sys; sys.exit(abs(int(sys.argv[1]) - float(sys.argv[2])) > 1)' "$duration" "$talk" \
        || fail "$mode: the hangup webhook says duration $duration s, the lead talked $talk s (Asterisk's log)"
    ok "$mode: connect and hangup webhooks at the demo CRM, signatures valid, duration $duration s (talk $talk s by Asterisk's log)"
    recording=$(find "$RECORDINGS" -name "*-$uniqueid.wav" -print -quit)
    if [ -z "$recording" ] || [ "$(head -c 4 "$recording")" != RIFF ]; then
        fail "$mode: no WAV recording of $uniqueid under $RECORDINGS"
    fi
    ok "$mode: recording ${recording#"$RECORDINGS"/} ($(stat -c %s "$recording") bytes)"
}

say "4. calls through the installed Apache (http://127.0.0.1/api/v1/asteriskapi.pl)"
place_call "agent first" "$LEAD" "{\"extension\":\"$AGENT\",\"destination\":\"$LEAD\"}"
place_call "dialer" "$LEAD2" "{\"extension\":\"$AGENT\",\"destination\":\"$LEAD2\",\"call_in_out\":\"true\"}"
for _ in $(seq 1 20); do
    left=$(ast 'core show channels count' | grep -o '^[0-9]* active channels' || true)
    [ "$left" = "0 active channels" ] && break
    sleep 0.25
done
[ "$left" = "0 active channels" ] || fail "channels left up after the calls: $left"
ok "no channel left up"

# --- 5. uninstall --------------------------------------------------------------------------
say "5. ./install.sh --uninstall: Asterisk's files restored, then Asterisk stopped"
./install.sh --uninstall > "$OUT/uninstall.log" 2>&1 || { cat "$OUT/uninstall.log"; fail "uninstall failed"; }
grep -E '^\[asterisk\]|asterisk: ' "$OUT/uninstall.log" | indent
for file in extensions.conf manager.conf; do
    cmp "$PBX_ETC/$file" "$OUT/$file.orig" || fail "$file is not as it was before install.sh"
done
for leftover in "$PBX_ETC/extensions_callexchange.conf" "$PBX_ETC/manager_callexchange.conf" \
        "$OUT/agi-bin/callexchange-webhook.agi"; do
    [ -e "$leftover" ] || [ -L "$leftover" ] && fail "$leftover is still there"
done
ok "extensions.conf and manager.conf byte for byte as before; snippets and hook link gone"
ast_until 'dialplan show callexchange-outbound' "There is no existence of 'callexchange-outbound' context" > /dev/null \
    || fail "the running Asterisk still has callexchange-outbound after the uninstall"
ast_until "manager show user $ami_user" "username: $ami_user" absent > /dev/null \
    || fail "the running Asterisk still has the AMI user $ami_user"
ok "the running Asterisk reloaded: no callexchange context, no AMI user $ami_user"
pid=$ASTERISK_PID
stop_asterisk
kill -0 "$pid" 2>/dev/null && fail "Asterisk (pid $pid) still runs"
(exec 3<>"/dev/tcp/127.0.0.1/$AMI_PORT") 2>/dev/null && fail "something still listens on $AMI_PORT"
ok "Asterisk stopped (core stop now), nothing listens on $AMI_PORT"
kill "$CRM_PID" 2>/dev/null || true
wait "$CRM_PID" 2>/dev/null || true
CRM_PID=""
for proc in /proc/[0-9]*; do
    case $(tr '\0' '\n' 2>/dev/null < "$proc/cmdline" | head -n 1) in
        /opt/callexchange/*) fail "process ${proc#/proc/} still runs from /opt/callexchange" ;;
    esac
done
ok "no process runs from /opt/callexchange; the demo CRM is stopped"
