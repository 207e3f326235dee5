#!/bin/bash
# b-cmd.sh VERB [ARGS] — what VM "a" of the HA test can have VM "b" do,
# run by b's agent (agent.py) one request at a time. Stand-alone: it shares
# only files in /run/ha with node-b.sh.
#
#   config SERIAL   standard input is the gateway's ceph.conf; node-b.sh
#                   then starts the gateway with SERIAL (kept in
#                   $HA_DIR/b-config for later boots)
#   status          ready | starting
#   locks           exclusive-lock acquisitions in every boot's daemon log
#   metric NAME     NAME's value for the LUN in the daemon's metrics file
#   log [N]         the last N (40) lines of this boot's daemon log
#   finish          remove the gateway, stop the daemon, end the run
set -euo pipefail
STATE=/run/ha
verb=${1:-}
shift || true
case $verb in
config)
    # Kept on the host too: the next boot finds it there.
    mkdir -p "$HA_DIR/b-config"
    cat >"$HA_DIR/b-config/ceph.conf"
    echo "$1" >"$HA_DIR/b-config/serial"
    cp "$HA_DIR/b-config/ceph.conf" "$HA_DIR/b-config/serial" "$STATE/"
    touch "$STATE/config"
    ;;
status) cat "$STATE/status" 2>/dev/null || echo starting ;;
locks)
    # What gateway.sh's HA_LOCK_TAKEN matches, in ours and the C daemon's logs.
    cat "$HA_DIR"/b*/log/tcmu-runner.log "$HA_DIR"/b*/log/c/tcmu-runner.log 2>/dev/null |
        grep -cE 'rbd: exclusive lock acquired|Write lock acquisition successful' || true
    ;;
metric)
    awk -v name="$1" 'index($0, name "{") == 1 && index($0, "device=\"user_1/ha\"") { print $NF; found = 1 }
        END { if (!found) print "absent" }' /run/tcmu-test/ha-b/metrics.prom 2>/dev/null || echo absent
    ;;
log) tail -n "${1:-40}" "$(cat "$STATE/logdir")"/tcmu-runner.log "$(cat "$STATE/logdir")"/c/tcmu-runner.log 2>/dev/null || true ;;
finish) touch "$STATE/finish" ;;
*)
    echo "b-cmd.sh: unknown verb '$verb'" >&2
    exit 2
    ;;
esac
