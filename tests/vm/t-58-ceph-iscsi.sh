#!/bin/bash
# t-58-ceph-iscsi: ceph-iscsi, the tooling of Ceph iSCSI gateways, drives
# our daemon as it drives tcmu-runner in the field.
#
# Debian's ceph-iscsi 3.5 (unpacked by xtask, unmodified: `rbd-target-api`,
# the gateway's REST API, and `gwcli`, its shell) on a Ceph cluster in the
# guest (mon + memstore OSD + mgr on 127.0.0.1; the mgr serves the service
# map ceph-iscsi reads). The gateway is this guest, "gw1": ceph-iscsi will
# not put a portal on 127.0.0.1 (it leaves loopback out of a host's
# addresses), so the guest's lo gets a second address, 10.99.1.1; the
# guest has no network card, nothing leaves it. The settings go to
# /etc/ceph/iscsi-gateway.cfg in a RAM overlay of /etc.
#
# 1. gwcli creates the target and the gateway (its portal on 10.99.1.1)
#    and an rbd image: ceph-iscsi makes the `user:rbd` backstore once to
#    learn its WWN and removes it (our daemon serves and removes it). The
#    disk added to the target: the backstore again (ceph-iscsi's cfgstring
#    `rbd/rbd/disk_1;osd_op_timeout=30;conf=…`, cmd_time_out 0), its LUN
#    and ceph-iscsi's implicit ALUA group "ao"; then a client ACL with the
#    disk. Each step is checked in configfs, in the gateway's
#    configuration object and in our daemon's log.
# 2. open-iscsi logs in to the portal: the disk has the image's size,
#    RTPG reports the "ao" group active/optimized, fio randwrite with crc32c
#    verify finishes clean, and `rbd export` equals the disk. ceph-iscsi's
#    disk status, read from our daemon's service map entry, says Online,
#    lock owner gw1, no lock, connection or time-out failures; `gwcli ls`
#    shows the disk Online.
# 3. `gwcli /disks resize`: ceph-iscsi grows the image, then the
#    backstore's dev_size; our daemon takes it and the initiator sees the
#    new capacity after a rescan.
# 4. Taken down with gwcli as an operator would: the client, the disk from
#    the target, the disk (backstore and image). Our daemon removes the
#    device, nothing of it is left in configfs, the image is gone.
# 5. rbd-target-api stopped with SIGTERM (it tears down its target); our
#    daemon stops cleanly.

source "$(dirname "$0")/lib.sh"

[[ -x ${CEPH_ISCSI_ROOT:-}/usr/bin/rbd-target-api ]] ||
    fail "CEPH_ISCSI_ROOT='${CEPH_ISCSI_ROOT:-}' holds no usr/bin/rbd-target-api (xtask unpacks Debian's ceph-iscsi there)"
MIB=$((1024 * 1024))
GW_NAME=gw1
GW_ADDR=10.99.1.1
TARGET=iqn.2003-01.com.example.iscsi-gw:tcmu-vm
INITIATOR=$(iscsi_iqn initiator)
DISK=rbd/disk_1
BS_NAME=rbd.disk_1
API_PORT=5000
FIO_SECS=$((FIO_RUNTIME / 4))
((FIO_SECS >= 10)) || FIO_SECS=10
((FIO_SECS <= 20)) || FIO_SECS=20
# ceph-iscsi's Python: Debian's interpreter and modules, never another
# python3 first on PATH.
PY=/usr/bin/python3
export PYTHONPATH=$CEPH_ISCSI_ROOT/usr/lib/python3/dist-packages

# gw ARGS...: one gwcli command (batch mode); its output goes to
# gwcli.txt. gwcli reports most failures only in its output, so callers
# check what the command should have made.
gw() {
    log "gwcli $*"
    echo "### gwcli $*" >>"$LOGDIR/gwcli.txt"
    HOME=$WORK timeout 300 "$PY" "$CEPH_ISCSI_ROOT/usr/bin/gwcli" "$@" >>"$LOGDIR/gwcli.txt" 2>&1 ||
        fail "gwcli $* failed: $(tail -n 5 "$LOGDIR/gwcli.txt")"
}

# api_get PATH: rbd-target-api's answer to GET /api/PATH (e.g. `config`,
# the gateway configuration object).
api_get() {
    curl -sf --user admin:admin "http://127.0.0.1:$API_PORT/api/$1"
}

# config_has PYEXPR: PYEXPR (on `c`, the configuration object) is true.
config_has() {
    api_get config >"$WORK/config.json" || return 1
    "$PY" -c "import json, sys; c = json.load(open('$WORK/config.json')); sys.exit(0 if ($1) else 1)"
}

# api_stop: SIGTERM to rbd-target-api (it removes its LIO objects), then
# SIGKILL after 60 s.
api_stop() {
    [[ -n ${API_PID:-} ]] || return 0
    local pid=$API_PID
    API_PID=
    kill "$pid" 2>/dev/null || return 0
    local deadline=$((SECONDS + 60))
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

load_modules
load_iscsi_modules
ceph_start mgr
etc_overlay

# --- the gateway host -------------------------------------------------------
ip addr add "$GW_ADDR/32" dev lo || fail "cannot add $GW_ADDR to lo"
push_cleanup "ip addr del $GW_ADDR/32 dev lo"
old_name=$(hostname)
hostname "$GW_NAME" || fail "cannot name the guest $GW_NAME"
push_cleanup "hostname $old_name"
echo "$GW_ADDR $GW_NAME" >>/etc/hosts
mkdir -p /etc/ceph
cat >/etc/ceph/iscsi-gateway.cfg <<EOF
[config]
cluster_name = ceph
ceph_config_dir = $CEPH_DIR
pool = rbd
api_secure = false
api_host = 0.0.0.0
api_port = $API_PORT
trusted_ip_list = 127.0.0.1,$GW_ADDR
minimum_gateways = 1
log_to_stderr = true
log_to_file = false

[device_status]
status_check_interval = 1
EOF
[[ -f $CEPH_DIR/ceph.conf ]] || fail "the test cluster has no $CEPH_DIR/ceph.conf"

daemon_start
log_mark
HOME=$WORK "$PY" "$CEPH_ISCSI_ROOT/usr/bin/rbd-target-api" >>"$LOGDIR/rbd-target-api.log" 2>&1 &
API_PID=$!
push_cleanup "api_stop"
wait_for 180 "rbd-target-api answering on port $API_PORT" api_get config
kill -0 "$API_PID" || fail "rbd-target-api exited (see rbd-target-api.log)"
log "rbd-target-api up (pid $API_PID)"

# --- 1. configured by gwcli -------------------------------------------------
gw /iscsi-targets create "$TARGET"
gw "/iscsi-targets/$TARGET/gateways" create "$GW_NAME" "$GW_ADDR" skipchecks=true
tpg=$ISCSI/$TARGET/tpgt_1
[[ -d $tpg/np/$GW_ADDR:3260 ]] || fail "no portal $GW_ADDR:3260 in $tpg after gateways create"
config_has "'$GW_NAME' in c['targets']['$TARGET']['portals']" || fail "the configuration object has no portal $GW_NAME"

# ceph-iscsi makes the backstore once to learn its WWN and removes it
# again: a disk is in LIO only while a target maps it.
gw /disks create pool=rbd image=disk_1 size=64M
config_has "c['disks']['$DISK']['wwn'] != ''" || fail "the configuration object has no WWN for $DISK"
rbdc info "$DISK" | grep -q exclusive-lock || fail "$DISK was created without exclusive-lock: $(rbdc info "$DISK")"
wait_log 20 "user_[0-9]+/$BS_NAME: removed" "our daemon serving $DISK, then removing it"
log_has "user_[0-9]+/$BS_NAME: added \\(rbd/$DISK;" || fail "our daemon did not serve $DISK when gwcli created it"

log_mark
gw "/iscsi-targets/$TARGET/disks" add "$DISK"
so=$(so_path "$BS_NAME")
[[ -n $so ]] || fail "no backstore $BS_NAME once $DISK was added to $TARGET"
assert_eq "$(cat "$so/enable")" 1 "$BS_NAME enabled"
cfg=$(sed -n 's/.*Config: \([^ ]*\).*/\1/p' "$so/info")
[[ $cfg == "rbd/$DISK;osd_op_timeout=30;conf=$CEPH_DIR/ceph.conf" ]] ||
    fail "ceph-iscsi's cfgstring is '$cfg' ($(cat "$so/info"))"
assert_eq "$(cat "$so/attrib/cmd_time_out")" 0 "cmd_time_out as ceph-iscsi sets it"
assert_eq "$(cat "$so/attrib/dev_size")" $((64 * MIB)) "$BS_NAME dev_size"
wait_log 20 "added \\(rbd/$DISK;" "our daemon serving $DISK"
lun_of_so=
for l in "$tpg"/lun/lun_*/*; do
    [[ -L $l && $(readlink -f "$l") == "$(readlink -f "$so")" ]] && lun_of_so=$(basename "$(dirname "$l")")
done
[[ -n $lun_of_so ]] || fail "$DISK is not a LUN of $TARGET: $(ls -l "$tpg"/lun/lun_*/ 2>&1)"
[[ -d $so/alua/ao ]] || fail "no ALUA group ao on $BS_NAME: $(ls "$so/alua")"
assert_eq "$(cat "$so/alua/ao/alua_access_type")" "Implicit" "the ao group's access type"
config_has "'$DISK' in c['targets']['$TARGET']['disks']" || fail "the configuration object does not map $DISK to $TARGET"
log "backstore $BS_NAME ($cfg) is $lun_of_so of $TARGET, in ALUA group ao"

gw "/iscsi-targets/$TARGET/hosts" create "$INITIATOR"
gw "/iscsi-targets/$TARGET/hosts/$INITIATOR" disk add "$DISK"
[[ -d $tpg/acls/$INITIATOR ]] || fail "no ACL for $INITIATOR on $TARGET"
[[ -n $(compgen -G "$tpg/acls/$INITIATOR/lun_*") ]] || fail "the ACL of $INITIATOR maps no LUN"
log "ceph-iscsi configured $TARGET: portal $GW_ADDR:3260, $DISK as LUN 0, ALUA group ao, ACL $INITIATOR"

# --- 2. an initiator on it --------------------------------------------------
iscsid_start
ISCSI_HOST=$GW_ADDR
iscsi_login "$TARGET"
assert_eq "$(dev_size_bytes "$DEV")" $((64 * MIB)) "the disk's size"
ao_id=$(cat "$so/alua/ao/tg_pt_gp_id")
state=$(rtpg_access_state "$DEV" "$(printf '%x' "$ao_id")")
assert_eq "$state" "active/optimized" "RTPG of ceph-iscsi's ao group (id $ao_id)"
fio_bg ceph-iscsi "$DEV" "$FIO_SECS"
fio_wait ceph-iscsi "$FIO_PID"
rbdc export "$DISK" "$WORK/disk_1.export" >/dev/null 2>&1 || fail "rbd export $DISK failed"
cmp "$WORK/disk_1.export" "$DEV" || fail "rbd export of $DISK differs from the disk"
rm -f "$WORK/disk_1.export"
log "open-iscsi: RTPG active/optimized, fio verify clean, rbd export equals the disk"

# What ceph-iscsi tells an operator of the disk comes from our daemon's
# entry in Ceph's service map (daemon gw1:rbd/disk_1, through the mgr):
# its lock owner (ours: fio's writes took the lock) and no failures.
disk_status_ok() {
    api_get "disk/$DISK" >"$WORK/disk.json" &&
        "$PY" -c "
import json, sys
s = json.load(open('$WORK/disk.json'))['status']
gw = s.get('gateways', {}).get('$GW_NAME', {})
ok = (s.get('state') == 'Online' and s.get('lock_owner') == '$GW_NAME'
      and gw.get('lock_lost_cnt') == 0 and gw.get('conn_lost_cnt') == 0
      and gw.get('cmd_timed_out_cnt') == 0)
sys.exit(0 if ok else 1)"
}
wait_for 90 "ceph-iscsi reporting $DISK online, locked by $GW_NAME, no failures" disk_status_ok
log "ceph-iscsi's disk status: $(cat "$WORK/disk.json")"
gw ls
sed -n '/^### gwcli ls$/,$p' "$LOGDIR/gwcli.txt" | grep -q "$DISK (Online," ||
    fail "gwcli ls does not show $DISK online: $(sed -n '/^### gwcli ls$/,$p' "$LOGDIR/gwcli.txt")"

# --- 3. resized by gwcli ----------------------------------------------------
gw /disks resize "$DISK" 96M
assert_eq "$(rbdc info --format json "$DISK" | "$PY" -c 'import json, sys; print(json.load(sys.stdin)["size"])')" \
    $((96 * MIB)) "the image's size after gwcli resize"
assert_eq "$(cat "$so/attrib/dev_size")" $((96 * MIB)) "$BS_NAME dev_size after gwcli resize"
echo 1 >"/sys/block/$(basename "$DEV")/device/rescan"
wait_for 20 "the initiator seeing 96 MiB" dev_size_is "$DEV" $((96 * MIB))
log "gwcli resize: image, backstore and initiator at 96 MiB"

# --- 4. taken down with gwcli -----------------------------------------------
iscsi_logout "$TARGET" || fail "the session to $TARGET stayed after logout"
log_mark
gw "/iscsi-targets/$TARGET/hosts" delete "$INITIATOR"
gw "/iscsi-targets/$TARGET/disks" delete "$DISK"
gw /disks delete "$DISK"
[[ -z $(so_path "$BS_NAME") ]] || fail "backstore $BS_NAME left in configfs after gwcli /disks delete"
! rbdc ls rbd | grep -qx disk_1 || fail "image $DISK left after gwcli /disks delete"
daemon_alive || fail "our daemon died while ceph-iscsi removed the disk"
log "gwcli removed the client, the LUN, the backstore and the image; our daemon serves on"

# --- 5. the gateway stopped -------------------------------------------------
api_stop
[[ ! -d $ISCSI/$TARGET ]] || fail "rbd-target-api left $TARGET in configfs at its exit"
undo_all
daemon_stop
log "ceph-iscsi (rbd-target-api + gwcli) configured, served, resized and removed a user:rbd LUN of ours"
