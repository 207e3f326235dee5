#!/bin/bash
# node-a.sh — VM "a" of the HA test (cargo xtask ha-test), at 10.99.0.1:
# the Ceph cluster, gateway a (tpgt_2, ALUA group "ano2") and the initiator
# (open-iscsi, udev, multipathd), driving VM "b" (gateway b, the image's
# owner, group "ao") through its agent. Issue 25's acceptance:
#
# 1. The initiator logs in to both gateways over iSCSI and multipathd makes
#    one device of the two ALUA paths (hardware handler alua, prio alua).
# 2. Power cut: fio randwrite + crc32c verify through the multipath device
#    while b (active, holding the lock) loses power (xtask kills its QEMU
#    when this script asks): failover to a, which
#    breaks b's lock; fio 0 errors, no hung task.
# 3. b boots again and serves as the standby: it takes no lock, and a write
#    after its return lands through a (checked on the image).
# 4. SIGKILL: a's daemon killed under fio; a marker write queued on a's
#    ring fails over to b, which takes the lock; a newer write over it
#    through b; a's daemon restarted (it recovers the device): the stale
#    write never lands (checked on the image); fio 0 errors.
# 5. Active-active reads (multibus): reads go down both paths, the lock
#    does not move (acquisitions stay at first write + one per failover).
# Failover times (the longest gap between completions of a 4 KiB probe
# writer across the fault, and fio's longest completion) go to
# $XT_OUT/ha-summary.txt. HA_DAEMON=c runs it with Debian's C tcmu-runner
# (whose RTPG does not follow the lock: that one check is ours only).

TEST_NAME=ha-a
# Log each clean-up step (a slow one shows where).
UNDO_VERBOSE=1
source "$(dirname "$0")/../lib.sh"
source "$REPO_DIR/tests/vm/restart-lib.sh"
source "$REPO_DIR/tests/vm/ha/gateway.sh"

MIB=$((1024 * 1024))
MARK_OFF=$((80 * MIB))
MARK_LEN=$((64 * 1024))
PROBE_OFF=$((90 * MIB))
# A power-cut failover takes longer than t-57's (lib.sh's mark_write).
MARK_WRITE_SECS=180
SUMMARY=$XT_OUT/ha-summary.txt
ours() { [[ $HA_DAEMON != c ]]; }
# note LINE: a line of the summary (and the log).
note() { log "$*"; echo "$*" >>"$SUMMARY"; }
echo "# ha-test, gateways: $HA_DAEMON" >"$SUMMARY"

# b VERB ARGS...: have VM b do VERB (b-cmd.sh) through its agent.
b() { python3 "$HA_AGENT" call "$HA_NET.2" "$HA_AGENT_PORT" "$@" </dev/null; }
b_ready() { [[ $(b status 2>/dev/null) == ready ]]; }

ha_net_up "$HA_NET.1"
ha_modules
wait_for 600 "VM b's agent" b status
log "VM b's agent answers"

export CEPH_TEST_ADDR=$HA_NET.1
ceph_start
rbdc create --size "${HA_IMAGE_MIB}M" rbd/ha || fail "rbd create rbd/ha failed"
SERIAL=$(serial_for)
ha_ceph_client_conf "$(grep '^mon host' "$CEPH_CONF")" "$(sed -n 's/^fsid = //p' "$CEPH_CONF")" |
    python3 "$HA_AGENT" call "$HA_NET.2" "$HA_AGENT_PORT" config "$SERIAL" ||
    fail "cannot configure VM b"
ha_daemon_start
ha_gateway 2 "$HA_NET.1" ano2 2 1 "$CEPH_CONF" "$SERIAL"
wait_for 300 "gateway b to be ready" b_ready
log "both gateways up"

# --- the initiator: udev, multipathd, open-iscsi -------------------------
etc_overlay
mkdir -p /run/udev
/lib/systemd/systemd-udevd --daemon >"$LOGDIR/udevd.log" 2>&1 || fail "systemd-udevd did not start"
push_cleanup "timeout 30 udevadm control --exit"
# ceph-iscsi's advice for Linux initiators. Its `failback 60` matters: a
# gateway that comes back while the other one is still taking the lock
# reports active/non-optimized like it, and an immediate failback to the
# first group would send the writes, and the lock, back to it (seen here).
mp_conf() {
    cat >/etc/multipath.conf <<MP
defaults {
    user_friendly_names yes
    find_multipaths no
    polling_interval 2
}
blacklist {
    devnode "^(ram|loop|zram|nbd|sr|vd|rbd)"
}
devices {
    device {
        vendor "LIO-ORG"
        product ".*"
        hardware_handler "1 alua"
        path_grouping_policy $1
        path_selector "queue-length 0"
        failback 60
        path_checker tur
        prio alua
        prio_args exclusive_pref_bit
        no_path_retry queue
    }
}
MP
}
ISCSI_NOOP_SECS=5 iscsid_start
for addr in "$HA_NET.2" "$HA_NET.1"; do
    iscsiadm -m discovery -t sendtargets -p "$addr" >>"$WORK/discovery.txt" 2>&1 ||
        { cat "$WORK/discovery.txt"; fail "iSCSI discovery on $addr failed"; }
done
grep -c " $HA_IQN\$" "$WORK/discovery.txt" | grep -qx 2 ||
    { cat "$WORK/discovery.txt"; fail "discovery did not list $HA_IQN on both portals"; }
# initiator_down: flush the multipath device, log both sessions out.
initiator_down() {
    timeout 30 multipathd disablequeueing maps >>"$LOGDIR/teardown.log" 2>&1
    timeout 60 multipath -F >>"$LOGDIR/teardown.log" 2>&1
    timeout 60 iscsiadm -m node -T "$HA_IQN" --logout >>"$LOGDIR/teardown.log" 2>&1
    timeout 30 iscsiadm -m node -T "$HA_IQN" -o delete >>"$LOGDIR/teardown.log" 2>&1
    return 0
}
push_cleanup initiator_down
iscsiadm -m node -T "$HA_IQN" --login >"$WORK/login.txt" 2>&1 ||
    { cat "$WORK/login.txt"; fail "iSCSI login to $HA_IQN failed"; }

# path_dev ADDR: the disk (sdX) of the session to the portal at ADDR.
path_dev() {
    local s
    for s in /sys/class/iscsi_session/session*; do
        [[ "$(cat "$s"/device/connection*/iscsi_connection/connection*/persistent_address 2>/dev/null)" == "$1" ]] ||
            continue
        compgen -G "$s/device/target*/*:0/block/sd*" >/dev/null || return 1
        basename "$(compgen -G "$s/device/target*/*:0/block/sd*" | head -n1)"
        return 0
    done
    return 1
}
wait_for 60 "the disk behind gateway b" path_dev "$HA_NET.2"
wait_for 60 "the disk behind gateway a" path_dev "$HA_NET.1"
PA=$(path_dev "$HA_NET.1")
PB=$(path_dev "$HA_NET.2")
udevadm settle -t 60 || true
# multipathd after both disks are there: it builds the map with both paths
# at once.
mp_conf failover
(setsid multipathd -d -s >"$LOGDIR/multipathd.log" 2>&1 &)
push_cleanup "pkill -x multipathd"
wait_for 30 "multipathd" multipathd show daemon
# mp_paths: "dev dm-state checker-state prio" per path.
mp_paths() { multipathd show paths format "%d %t %T %p" | tail -n +2; }
# prio DEV: multipathd's priority of path DEV.
prio() { mp_paths | awk -v d="$1" '$1 == d { print $4 }'; }
# path_is DEV DM_STATE CHECKER_STATE: what multipathd says of DEV.
path_is() { mp_paths | grep -q "^$1 *$2 *$3 "; }
two_paths() { [[ $(mp_paths | grep -c ' active ') == 2 ]] && compgen -G "/dev/mapper/mpath*" >/dev/null; }
wait_for 60 "multipathd to build a device of both paths" two_paths
MP=$(compgen -G "/dev/mapper/mpath*" | head -n1)
# b_group_active: the path group of b's path is the one in use (the kernel
# switches groups on the next I/O: one read first).
b_group_active() {
    dd if="$MP" of=/dev/null bs=4k count=1 iflag=direct status=none &&
        multipath -ll 2>/dev/null | grep -B1 " $PB " | grep -q 'status=active'
}
# multipathd made the map before it knew the paths' priorities and put a's
# group first; failback would move to b's in 60 s. Do it now, as an
# administrator would (multipathd switchgroup).
b_prio_known() { [[ $(prio "$PB") == 50 ]]; }
wait_for 60 "multipathd to read b's priority (active/optimized: 50)" b_prio_known
if ! b_group_active; then
    g=$(multipath -ll | awk -v d=" $PB " '/policy=/ { n++ } index($0, d) { print n; exit }')
    multipathd switchgroup map "$(basename "$MP")" group "$g" >/dev/null ||
        fail "multipathd switchgroup to b's group $g failed"
fi
wait_for 60 "gateway b's path group (active/optimized) to carry the I/O" b_group_active
multipath -ll >"$WORK/multipath-ll.txt" 2>&1
cat "$WORK/multipath-ll.txt"
assert_grep "hwhandler='1 alua'" "$WORK/multipath-ll.txt" "the multipath device uses the alua hardware handler"
assert_eq "$(grep -c 'prio=' "$WORK/multipath-ll.txt")" 2 "path groups (failover: one per gateway)"
note "1. $MP: paths $PB (gateway b, tpgt_1, ao) and $PA (gateway a, tpgt_2, ano2)"

log "RTPG: b $(rtpg_access_state "/dev/$PB" 1), a $(rtpg_access_state "/dev/$PA" 2); prio b $(prio "$PB"), a $(prio "$PA")"

head -c $MARK_LEN /dev/urandom >"$WORK/p1"
head -c $MARK_LEN /dev/urandom >"$WORK/p2"
head -c $MARK_LEN /dev/urandom >"$WORK/p3"
head -c $MARK_LEN /dev/urandom >"$WORK/p4"
head -c 4096 /dev/urandom >"$WORK/probe.blk"
# probe_start NAME: a 4 KiB O_DIRECT writer through the multipath device,
# one write after the other, logging each completion's time (µs).
probe_start() {
    rm -f "$WORK/probe.stop"
    (
        while [[ ! -f $WORK/probe.stop ]]; do
            dd if="$WORK/probe.blk" of="$MP" bs=4096 seek=$((PROBE_OFF / 4096)) count=1 \
                oflag=direct status=none 2>/dev/null && echo "${EPOCHREALTIME/./}" >>"$WORK/probe.$1"
        done
    ) &
    PROBE_PID=$!
}
# probe_gap_ms NAME T0: stop the probe; the longest wait (ms) between two
# completions where the later one came after T0 (the fault).
probe_gap_ms() {
    touch "$WORK/probe.stop"
    wait "$PROBE_PID" || true
    awk -v t0="$2" 'NR > 1 && $1 > t0 && $1 - prev > max { max = $1 - prev } { prev = $1 }
        END { printf "%d\n", max / 1000 }' "$WORK/probe.$1"
}
# load_start NAME SECS: fio verify (NAME, SECS s) and the probe writer
# through the multipath device, 6 s of them; sets T0 (now_us): the fault
# comes next.
load_start() {
    dmesg_mark
    fio_bg "$1" "$MP" "$2" --iodepth=16
    probe_start "$1"
    sleep 6
    T0=$(now_us)
}
# load_end NAME WHAT: wait for load_start's fio (0 errors); sets GAP (the
# longest probe gap after T0, ms) and CLAT (fio's longest completion, ms);
# fails on a hung task after WHAT.
load_end() {
    fio_wait "$1" "$FIO_PID"
    GAP=$(probe_gap_ms "$1" "$T0")
    CLAT=$(fio_clat_max_ms "$WORK/$1.json")
    ! dmesg_since | grep -q 'blocked for more than' || fail "hung task after $2"
}
# locks: exclusive-lock acquisitions by both gateways so far.
locks() { echo $(($(ha_lock_acquisitions "$(ha_daemon_log)") + $(b locks))); }

# --- 2. power cut of the active gateway ----------------------------------
mark_write "$WORK/p1" || fail "writing P1 failed"
assert_eq "$(b locks)" 1 "gateway b's lock acquisitions after the first write"
assert_eq "$(cmp -s <(image_mark rbd/ha) "$WORK/p1" && echo yes)" yes "P1 in the image"
log "P1 written through gateway b (the owner's path); RTPG: b $(rtpg_access_state "/dev/$PB" 1), a $(rtpg_access_state "/dev/$PA" 2)"
load_start poweroff 50
t_off=$T0
# xtask kills b's QEMU when this file appears: a power cut.
# (A plain create: the host watches for the name.)
: >"$XT_OUT/power-off-b"
log "VM b's power cut (QEMU killed) under fio"
load_end poweroff "b's power cut"
if ours; then
    grep -q 'after breaking the lock of' "$(ha_daemon_log)" || fail "gateway a did not break b's lock"
fi
note "2. power cut of b: failover (longest probe gap) $GAP ms, fio's longest completion $CLAT ms, fio 0 errors"

# --- 3. b comes back as the standby ---------------------------------------
wait_for 600 "VM b to boot again and serve" b_ready
wait_for 120 "b's path to be back in multipathd" path_is "$PB" active ready
log "gateway b is back; paths: $(mp_paths | tr '\n' ';')"
mark_write "$WORK/p2" || fail "writing P2 after b's return failed"
sleep 2
assert_eq "$(cmp -s <(image_mark rbd/ha) "$WORK/p2" && echo yes)" yes "P2 (written after b's return) in the image"
assert_eq "$(locks)" 2 "lock acquisitions after b's return (b's first write, a's failover)"
ours && assert_eq "$(rtpg_access_state "/dev/$PB" 1)" "active/non optimized" "the returning gateway b's group (a holds the lock)"
note "3. b back as the standby after $((($(now_us) - t_off) / 1000000)) s: RTPG b $(rtpg_access_state "/dev/$PB" 1), a $(rtpg_access_state "/dev/$PA" 2); lock acquisitions $(locks)"

# --- 4. SIGKILL of the active gateway's daemon ----------------------------
load_start killed 30
t_kill=$T0
ha_daemon_kill
log "gateway a's daemon killed (SIGKILL) under fio"
mark_write "$WORK/p3" || fail "the marker write P3 failed instead of failing over"
p3_ms=$(ms_since "$t_kill")
mark_write "$WORK/p4" || fail "writing P4 failed"
ha_daemon_start
log "gateway a's daemon started again: it recovers the device"
load_end killed "a's daemon was killed"
sleep 3
assert_eq "$(cmp -s <(image_mark rbd/ha) "$WORK/p4" && echo yes)" yes "P4, the last write, in the image (not a's stale P3)"
assert_eq "$(locks)" 3 "lock acquisitions after two failovers"
note "4. SIGKILL of a's daemon: failover (longest probe gap) $GAP ms, marker write ${p3_ms} ms, fio's longest completion $CLAT ms, fio 0 errors; lock acquisitions $(locks)"
wait_for 120 "a's path to be back in multipathd" path_is "$PA" active ready

# --- 5. active-active reads -----------------------------------------------
mp_conf multibus
multipathd reconfigure >/dev/null || fail "multipathd reconfigure failed"
one_group() { multipath -ll 2>/dev/null | grep -c 'prio=' | grep -qx 1; }
wait_for 60 "one path group of both paths" one_group
wait_for 60 "both paths active" two_paths
reads_on_both_paths "$MP" "$PA" "$PB"
assert_eq "$(locks)" 3 "lock acquisitions after reads on both paths"
alua_note=
ours && alua_note="; b's ALUA state changes (metric): $(b metric tcmu_alua_state_changes_total)"
note "5. active-active reads: a $((READ_A / 2048)) MiB, b $((READ_B / 2048)) MiB; lock acquisitions $(locks)$alua_note"

rbdc export rbd/ha "$WORK/ha.export" >/dev/null 2>&1 || fail "rbd export failed"
cmp "$WORK/ha.export" "$MP" || fail "the multipath device differs from rbd export"
rm -f "$WORK/ha.export"
note "the image equals the multipath device (rbd export)"

# The end: the initiator first, then b's gateway (while the cluster runs),
# then ours.
initiator_down
log "initiator logged out"
b finish || fail "VM b did not take the finish"
wait_for 120 "VM b to power off" bash -c "! python3 '$HA_AGENT' call $HA_NET.2 $HA_AGENT_PORT status"
log "VM b is done"
undo_all
log "gateway a and the cluster removed"
ha_daemon_stop
log "done"
