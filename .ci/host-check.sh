# shellcheck shell=bash
# shellcheck disable=SC2034  # the variables and FAILED are for the scripts that source this
# .ci/host-check.sh: what the host checks (.ci/install-check.sh, install-https.sh,
# install-real-pbx.sh) share: the paths of an install, their report lines, and the
# refusal to run anywhere but a disposable machine. Sourced, never run.

MANIFEST=/opt/callexchange/install-manifest
CONFIG_DIR=/etc/callexchange
STATE_DIR=/var/lib/callexchange
LOG_DIR=/var/log/callexchange
RUN_DIR=/run/callexchange
FAILED=0

say() { printf '\n== %s\n' "$*"; }
ok() { printf '   ok   %s\n' "$*"; }
warn() { printf '   WARN %s\n' "$*"; }
fail() {
    printf '   FAIL %s\n' "$*"
    FAILED=1
    exit 1
}
indent() { sed 's/^/   | /'; }

# refuse_unless_disposable SCRIPT WHAT ARG [PATH...]: exit 2 unless run as root, in CI
# (CI=true) or with --disposable-machine as ARG, on a machine where CallExchange is not
# installed or configured (none of the manifest, config dir, state dir, nor any PATH
# given). WHAT says what SCRIPT does to the machine.
refuse_unless_disposable() {
    local script=$1 what=$2 arg=$3 path
    shift 3
    if [ "$(id -u)" != 0 ]; then
        echo "$script: run as root (it installs into /opt, /etc and Apache)" >&2
        exit 2
    fi
    if [ "${CI:-}" != true ] && [ "$arg" != --disposable-machine ]; then
        echo "$script $what on THIS machine." >&2
        echo "Run it in CI (CI=true) or with --disposable-machine." >&2
        exit 2
    fi
    for path in "$MANIFEST" "$CONFIG_DIR" "$STATE_DIR" "$@"; do
        if [ -e "$path" ]; then
            echo "$script: $path exists: CallExchange is installed or configured here;" \
                 "refusing to test on top of it" >&2
            exit 2
        fi
    done
}

# The PID of a running cron, or nothing: install.sh starts cron where no systemd does,
# and each check stops it again if it was not running before.
cron_pid() {
    local pid
    pid=$(cat /run/crond.pid 2>/dev/null || true)
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then echo "$pid"; fi
}

# The steps of every check's clean-up, whatever went wrong (each ignores what is not there).
# uninstall_if_installed LOG: install.sh --uninstall while a manifest says it is installed.
uninstall_if_installed() {
    if [ -f "$MANIFEST" ]; then
        ./install.sh --uninstall > "$1" 2>&1 || true
    fi
}

# stop_background_services: what install.sh started without systemd (pid files in RUN_DIR).
stop_background_services() {
    local pid_file
    for pid_file in "$RUN_DIR"/*.pid; do
        if [ -f "$pid_file" ]; then
            kill "$(head -n 1 "$pid_file")" 2>/dev/null || true
            rm -f "$pid_file"
        fi
    done
}

# stop_apache_and_cron: Apache stopped, and cron too unless it ran before (CRON_BEFORE).
stop_apache_and_cron() {
    if [ "$(cat /proc/1/comm 2>/dev/null || true)" = systemd ]; then
        systemctl stop apache2 >/dev/null 2>&1 || true
    else
        apache2ctl stop >/dev/null 2>&1 || true
    fi
    if [ -z "${CRON_BEFORE:-}" ] && [ -n "$(cron_pid)" ]; then
        service cron stop >/dev/null 2>&1 || kill "$(cron_pid)" 2>/dev/null || true
    fi
}

# reply_uniqueid FILE: the uniqueid of a call endpoint's reply in FILE; fails (status 1,
# the reason on stderr) unless it is a success ("status": "true") with a uniqueid.
reply_uniqueid() {
    python3 - "$1" <<'PY'
import json, sys
reply = json.load(open(sys.argv[1]))
assert reply.get("status") == "true", "status is %r, not 'true'" % reply.get("status")
assert reply.get("uniqueid"), "no uniqueid in the reply"
print(reply["uniqueid"])
PY
}
