#!/bin/bash
# node-b.sh — VM "b" of the HA test (cargo xtask ha-test): the second
# gateway, the image's owner (tpgt_1, ALUA group "ao"), at 10.99.0.2.
#
# Starts the agent through which VM "a" drives it (b-cmd.sh), waits for the
# cluster's address and the LUN's serial from "a", starts its daemon and
# exports the gateway, then serves until "a" says finish (then removes its
# gateway and stops its daemon cleanly). "a" may have xtask cut its power
# (QEMU killed); xtask then boots it again (HA_BOOT=2) and the gateway
# comes back.
# Logs go straight to the host ($HA_DIR/b<boot>/log), so a boot that ends
# in a power cut keeps them.

TEST_NAME=ha-b
source "$(dirname "$0")/../lib.sh"
source "$REPO_DIR/tests/vm/ha/gateway.sh"

LOGDIR=$HA_DIR/b$HA_BOOT/log
mkdir -p "$LOGDIR"
echo "$LOGDIR" >"$HA_STATE/logdir"
ha_net_up "$HA_NET.2"
ha_modules
(setsid python3 "$HA_AGENT" serve "$HA_NET.2" "$HA_AGENT_PORT" "$REPO_DIR/tests/vm/ha/b-cmd.sh" \
    >>"$LOGDIR/agent.log" 2>&1 &)
log "boot $HA_BOOT: agent listening on $HA_NET.2:$HA_AGENT_PORT"

# A boot after the first finds what "a" sent on the host.
if [[ -f $HA_DIR/b-config/serial ]]; then
    cp "$HA_DIR/b-config/ceph.conf" "$HA_DIR/b-config/serial" "$HA_STATE/"
    touch "$HA_STATE/config"
fi
# One hour at most: "a" normally says finish within ~15 min.
wait_for 3600 "the cluster's address from VM a" test -f "$HA_STATE/config"
serial=$(cat "$HA_STATE/serial")
ha_daemon_start
echo "$DAEMON_PID$C_DAEMON_PID" >"$HA_STATE/daemon.pid"
ha_gateway 1 "$HA_NET.2" ao 1 0 "$HA_STATE/ceph.conf" "$serial"
echo ready >"$HA_STATE/status"
log "gateway b ready"

wait_for 3600 "VM a to finish" test -f "$HA_STATE/finish"
undo_all
ha_daemon_stop
log "gateway b removed, its daemon stopped"
