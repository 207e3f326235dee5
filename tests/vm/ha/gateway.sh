#!/bin/bash
# gateway.sh — what both VMs of the HA test do as iSCSI gateways (sourced by
# node-a.sh and node-b.sh after lib.sh). See xtask/src/ha.rs.
#
# A gateway as ceph-iscsi sets one up: a user:rbd backstore on rbd/ha with
# the serial every gateway shares, exported as LUN 0 of the one target IQN
# ($HA_IQN) in this gateway's own TPG (its tag = the gateway's number),
# with a portal on its own address; the LUN's port in ALUA group "ao" (the
# image's owner, id 1, active/optimized) or "ano<tag>" (active/
# non-optimized), implicit ALUA, implicit_trans_secs = osd_op_timeout + 15.
# Environment: HA_DAEMON (ours | c), HA_DIR (host folder for logs).

HA_NET=10.99.0
HA_IQN=$(iscsi_iqn ha)
HA_AGENT_PORT=7000
HA_AGENT=$REPO_DIR/tests/vm/ha/agent.py
HA_IMAGE_MIB=96
# Commands on a ring its daemon no longer serves fail after this
# (attrib/cmd_time_out), so dm-multipath can fail the path over.
HA_CMD_TIME_OUT=5
HA_OSD_OP_TIMEOUT=6
# State shared by a VM's main script and its agent's commands.
HA_STATE=/run/ha
mkdir -p "$HA_STATE"

# ha_net_up ADDR: the virtio-net card up with ADDR/24 (no udev: the first
# interface that is not lo).
ha_net_up() {
    modprobe virtio_net || fail "modprobe virtio_net failed"
    local ifc=
    wait_for 20 "a network interface" bash -c 'ls /sys/class/net | grep -vqx lo'
    ifc=$(ls /sys/class/net | grep -vx lo | head -n1)
    ip link set lo up
    ip addr add "$1/24" dev "$ifc" || fail "cannot give $ifc the address $1"
    ip link set "$ifc" up || fail "cannot bring $ifc up"
    log "network: $ifc is $1/24"
}

# ha_modules: LIO with the iSCSI target and initiator, dm-multipath.
ha_modules() {
    load_modules
    load_iscsi_modules
    local m
    for m in dm_multipath dm_round_robin dm_queue_length scsi_dh_alua; do
        modprobe "$m" || fail "modprobe $m failed"
    done
}

# ha_daemon_start: start this gateway's daemon (ours with a metrics file,
# or Debian's C tcmu-runner).
ha_daemon_start() {
    if [[ $HA_DAEMON == c ]]; then
        c_daemon_start
    else
        printf 'log_level = 3\nmetrics_file = %s\nmetrics_interval = 1\n' "$WORK/metrics.prom" >"$WORK/tcmu.conf"
        daemon_start
    fi
}

# ha_daemon_kill: kill -9 this gateway's daemon.
ha_daemon_kill() {
    if [[ $HA_DAEMON == c ]]; then c_daemon_kill; else daemon_kill9; fi
}

# ha_daemon_stop: stop this gateway's daemon cleanly (fails the test if it
# does not exit with status 0).
ha_daemon_stop() {
    if [[ $HA_DAEMON == c ]]; then c_daemon_stop; else daemon_stop; fi
}

# ha_daemon_log: this gateway's daemon log.
ha_daemon_log() {
    if [[ $HA_DAEMON == c ]]; then echo "$LOGDIR/c/tcmu-runner.log"; else echo "$LOGDIR/tcmu-runner.log"; fi
}

# The log lines of a lock taken: our rbd handler's, the C tcmu-runner's.
HA_LOCK_TAKEN='rbd: exclusive lock acquired|Write lock acquisition successful'

# ha_lock_acquisitions LOG...: how many times the daemons of these logs took
# the image's exclusive lock.
ha_lock_acquisitions() { cat "$@" 2>/dev/null | grep -cE "$HA_LOCK_TAKEN" || true; }

# ha_ceph_client_conf MON_HOST_LINE FSID: a client-only ceph.conf for a
# gateway on another VM (no file of the cluster's VM in it).
ha_ceph_client_conf() {
    cat <<CONF
[global]
fsid = $2
$1
auth cluster required = none
auth service required = none
auth client required = none
log to stderr = false
CONF
}

# ha_gateway TAG ADDR GROUP ID STATE CONF SERIAL: this gateway's backstore
# and its export (see the header). Everything goes on the cleanup stack.
ha_gateway() {
    local tag=$1 addr=$2 group=$3 id=$4 state=$5 conf=$6 serial=$7
    local bs=$CFG/core/user_1/ha
    mkdir -p "$bs" || fail "mkdir $bs failed"
    push_cleanup "rmdir_timeout $bs"
    echo "dev_size=$((HA_IMAGE_MIB * 1024 * 1024))" >"$bs/control" || fail "cannot set dev_size"
    echo "dev_config=rbd/rbd/ha;conf=$conf;osd_op_timeout=$HA_OSD_OP_TIMEOUT" >"$bs/control" ||
        fail "cannot set dev_config"
    echo "$serial" >"$bs/wwn/vpd_unit_serial" || fail "cannot set the serial"
    write_timeout 30 "$bs/enable" 1 || fail "enabling the user:rbd backstore failed"
    echo "$HA_CMD_TIME_OUT" >"$bs/attrib/cmd_time_out" || fail "cannot set cmd_time_out"
    alua_group "$bs" "$group" "$id" "$state" $((HA_OSD_OP_TIMEOUT + 15))
    local tpg=$ISCSI/$HA_IQN/tpgt_$tag
    mkdir -p "$tpg" || fail "cannot create $tpg"
    push_cleanup "iscsi_unexport $HA_IQN"
    mkdir "$tpg/np/$addr:3260" || fail "cannot add portal $addr:3260"
    mkdir "$tpg/lun/lun_0" || fail "cannot create lun_0"
    ln -s "$bs" "$tpg/lun/lun_0/ha" || fail "cannot link the backstore into lun_0"
    echo "$group" >"$tpg/lun/lun_0/alua_tg_pt_gp" || fail "cannot move the LUN's port into $group"
    echo 1 >"$tpg/attrib/generate_node_acls"
    echo 1 >"$tpg/attrib/cache_dynamic_acls"
    echo 0 >"$tpg/attrib/authentication"
    echo 0 >"$tpg/attrib/demo_mode_write_protect"
    echo 1 >"$tpg/enable" || fail "cannot enable $tpg"
    log "gateway: user:rbd rbd/ha as LUN 0 of $HA_IQN tpgt_$tag on $addr:3260, ALUA group $group (id $id, state $state)"
}
