#!/bin/bash
# t-57-rbd-ha: two gateways on one rbd image, ALUA paths under the kernel's
# dm-multipath, failover and fencing (issue 25).
#
# The picture of a ceph-iscsi deployment, in one guest: two daemons, each
# started with `--device` for its own gateway's backstore (gwa, gwb: both
# user:rbd on rbd/ha, the same unit serial) and its own lock file and log;
# each backstore exported by its own tcm_loop target, its port in the ALUA
# group ceph-iscsi gives it (gwa: "ao", id 1, active/optimized; gwb: "ano1",
# id 2, active/non-optimized; implicit ALUA, implicit_trans_secs =
# osd_op_timeout + 15). A multipath device is built with dmsetup (the
# kernel's dm-multipath with the alua hardware handler; multipathd would
# build the same table from group_by_prio): priority group 1 is gwa's path,
# group 2 gwb's. Each backstore's cmd_time_out is 5 s, so commands on a
# ring nobody serves fail (LOGICAL UNIT COMMUNICATION FAILURE) and
# dm-multipath fails the path over.
#
# 1. Both daemons serve only their own device; INQUIRY reports implicit
#    ALUA and RTPG each group's configured state.
# 2. A hung gateway and a stale write: with gwa holding the lock, gwa's
#    daemon is stopped (SIGSTOP) under fio verify, and a write of a marker
#    region (P2) goes to its ring. gwa's commands time out, dm-multipath
#    fails over to gwb, gwb breaks gwa's lock (blocklisting it) and writes
#    P2; then P3 over it through gwb. gwa resumes (SIGCONT) and executes
#    the P2 write still on its ring: it must be fenced (blocklisted), so
#    the image keeps P3. fio finishes with no error. RTPG now follows the
#    lock: gwb's group active/optimized, gwa's active/non-optimized.
# 3. The active gateway killed: gwa's path reinstated, gwb's daemon killed
#    with SIGKILL under fio verify: failover to gwa, which takes the lock;
#    fio clean, no hung task. gwb restarted: its path comes back as the
#    standby and takes no lock (no write reaches it).
# 4. Active-active reads: both paths in one round-robin group: reads go
#    down both, and the lock does not move (lock acquisitions stay at the
#    number of failovers: no ping-pong).
# Failover times (the marker write's wait, fio's longest completion) are
# reported.

source "$(dirname "$0")/lib.sh"
source "$REPO_DIR/tests/vm/restart-lib.sh"

MIB=$((1024 * 1024))
IMAGE_MIB=96
FIO_SECS=$((FIO_RUNTIME / 4))
((FIO_SECS >= 12)) || FIO_SECS=12
((FIO_SECS <= 20)) || FIO_SECS=20
# Commands on a ring nobody serves fail after this (attrib/cmd_time_out).
CMD_TIME_OUT=5
OSD_OP_TIMEOUT=6
# The marker region, past fio's 64 MiB.
MARK_OFF=$((80 * MIB))
MARK_LEN=$((64 * 1024))

load_modules
for m in dm_multipath dm_round_robin scsi_dh_alua; do
    modprobe "$m" || fail "modprobe $m failed"
done
ceph_start
rbdc create --size "${IMAGE_MIB}M" rbd/ha || fail "rbd create rbd/ha failed"
CFGSTR="rbd/rbd/ha;conf=$CEPH_CONF;osd_op_timeout=$OSD_OP_TIMEOUT"

declare -A GW_PID
# gw_log GW: the log file of gateway GW's daemon.
gw_log() { echo "$LOGDIR/gw$1/tcmu-runner.log"; }

# gw_start GW: start the daemon of gateway GW (a or b), serving only device
# gwGW, with its own lock file, log directory and tcmu.conf, without D-Bus;
# wait for it to log ready. Not a job of this shell: lib.sh's cleanup
# kills its jobs before it removes the LUNs, and a gateway must serve its
# LUN until then. Its pid comes from its lock file.
gw_start() {
    local gw=$1 logf
    logf=$(gw_log "$gw")
    mkdir -p "$LOGDIR/gw$gw"
    local before=0
    [[ -f $logf ]] && before=$(stat -c %s "$logf")
    ("$TCMU_RUNNER" --config "$WORK/tcmu-$gw.conf" -l "$LOGDIR/gw$gw" \
        --device "gw$gw" --lock-file "$WORK/gw$gw.lock" --no-dbus \
        >>"$LOGDIR/gw$gw/stdout.log" 2>&1 &)
    wait_for 30 "gateway $gw's daemon to log ready" \
        bash -c "tail -c +$((before + 1)) '$logf' 2>/dev/null | grep -q 'tcmu-runner ready'"
    GW_PID[$gw]=$(cat "$WORK/gw$gw.lock")
    running "${GW_PID[$gw]}" || fail "gateway $gw's lock file names pid ${GW_PID[$gw]}, which does not run"
    log "gateway $gw: daemon started (pid ${GW_PID[$gw]})"
}

# gw_gone GW SECS: wait up to SECS for gateway GW's daemon to be gone.
gw_gone() {
    local deadline=$((SECONDS + $2))
    while running "${GW_PID[$1]}"; do
        ((SECONDS < deadline)) || return 1
        sleep 0.1
    done
    GW_PID[$1]=
}

# gw_kill GW SIGNAL: send SIGNAL to gateway GW's daemon (after KILL, wait
# for it to be gone).
gw_kill() {
    local gw=$1 sig=$2
    kill "-$sig" "${GW_PID[$gw]}" || fail "kill -$sig of gateway $gw's daemon failed"
    if [[ $sig == KILL ]]; then
        gw_gone "$gw" 10 || fail "gateway $gw's daemon survived SIGKILL"
    fi
}

# gw_continue_all: SIGCONT both daemons (one may be stopped).
gw_continue_all() {
    local gw
    for gw in a b; do
        [[ -z ${GW_PID[$gw]:-} ]] || kill -CONT "${GW_PID[$gw]}" 2>/dev/null || true
    done
}

# gw_stop_all: SIGCONT and SIGTERM both daemons and wait for them to go.
gw_stop_all() {
    local gw bad=0
    for gw in a b; do
        [[ -n ${GW_PID[$gw]:-} ]] || continue
        kill -CONT "${GW_PID[$gw]}" 2>/dev/null
        kill -TERM "${GW_PID[$gw]}" 2>/dev/null
        gw_gone "$gw" 20 || { kill -KILL "${GW_PID[$gw]}"; bad=1; }
    done
    return $bad
}
push_cleanup gw_stop_all

# lock_acquisitions: how many times either daemon took the image's lock.
lock_acquisitions() { cat "$(gw_log a)" "$(gw_log b)" | grep -c 'rbd: exclusive lock acquired' || true; }

# gw_backstore GW GROUP ID STATE: backstore gwGW on rbd/ha with the shared
# serial, exported by its own tcm_loop target, its port in ALUA group
# GROUP (id ID, access state STATE: 0 AO, 1 ANO, implicit ALUA). The
# initiator's SCSI device is re-scanned afterwards, so it reads the
# group's TPGS bits (scsi_dh_alua looks at them when the disk appears).
# Sets GW_DEV[GW], GW_SG[GW], GW_MM[GW] (major:minor).
declare -A GW_DEV GW_SG GW_MM
gw_backstore() {
    local gw=$1 group=$2 id=$3 state=$4 bs
    bs=$CFG/core/user_1/gw$gw
    mkdir -p "$bs" || fail "mkdir $bs failed"
    push_cleanup "rmdir_timeout $bs"
    echo "dev_size=$((IMAGE_MIB * MIB))" >"$bs/control" || fail "cannot set dev_size of gw$gw"
    echo "dev_config=$CFGSTR" >"$bs/control" || fail "cannot set dev_config of gw$gw"
    echo "$SERIAL" >"$bs/wwn/vpd_unit_serial" || fail "cannot set the serial of gw$gw"
    write_timeout 20 "$bs/enable" 1 || fail "enabling gw$gw failed"
    echo "$CMD_TIME_OUT" >"$bs/attrib/cmd_time_out" || fail "cannot set cmd_time_out of gw$gw"
    alua_group "$bs" "$group" "$id" "$state" $((OSD_OP_TIMEOUT + 15))
    loop_export "$bs"
    echo "$group" >"$LOOP_TPG/lun/lun_0/alua_tg_pt_gp" || fail "cannot move gw$gw's port into $group"
    # The disk again, so the initiator reads the group's TPGS bits: a
    # wildcard scan (tcm_loop's hosts have max_lun 0, so a scan naming LUN
    # 0 is refused).
    echo 1 >"/sys/class/scsi_device/$SCSI_ADDR/device/delete"
    echo "- - -" >"/sys/class/scsi_host/host${SCSI_ADDR%%:*}/scan"
    local blockdir=/sys/class/scsi_device/$SCSI_ADDR/device/block
    wait_for 30 "gw$gw's disk after the re-scan" compgen -G "$blockdir/*"
    DEV=/dev/$(ls "$blockdir" | head -n1)
    SG=/dev/$(ls "/sys/class/scsi_device/$SCSI_ADDR/device/scsi_generic" | head -n1)
    wait_for 10 "$DEV" test -b "$DEV"
    GW_DEV[$gw]=$DEV
    GW_SG[$gw]=$SG
    GW_MM[$gw]=$(cat "/sys/block/$(basename "$DEV")/dev")
    log "gw$gw: $DEV ($SG, ${GW_MM[$gw]}), ALUA group $group (id $id, state $state)"
}

# mpath_create NAME TABLE_TAIL: a dm-multipath device over the two paths
# (no udev in the guest: its node is /dev/dm-N). Sets MP.
mpath_create() {
    local name=$1 tail=$2 sectors
    sectors=$(blockdev --getsz "${GW_DEV[a]}")
    dmsetup create --noudevsync "$name" --table "0 $sectors multipath 0 1 alua $tail" ||
        fail "dmsetup create $name failed"
    push_cleanup "mpath_remove $name"
    MP=/dev/dm-$(dmsetup info -c --noheadings -o minor "$name" | tr -d ' ')
    wait_for 10 "$MP" test -b "$MP"
}

# mpath_remove NAME: remove the multipath device NAME if it exists.
mpath_remove() {
    dmsetup info "$1" >/dev/null 2>&1 || return 0
    dmsetup remove --noudevsync --force "$1"
}

# mpath_paths NAME: dmsetup status of NAME, for logs.
mpath_paths() { dmsetup status "$1" | cut -d' ' -f4-; }

# --- 1. two daemons, two gateways ------------------------------------------
for gw in a b; do
    printf 'log_level = 3\nmetrics_file = %s\nmetrics_interval = 1\n' "$WORK/metrics-$gw.prom" >"$WORK/tcmu-$gw.conf"
done
# alua_changes GW: tcmu_alua_state_changes_total of gateway GW's device, from
# a metrics file written after this call began.
alua_changes() {
    local f=$WORK/metrics-$1.prom before
    before=$(stat -c %Y.%i "$f" 2>/dev/null || echo none)
    wait_for 10 "gateway $1's metrics file to be rewritten" \
        bash -c "[[ \$(stat -c %Y.%i '$f' 2>/dev/null) != '$before' ]]"
    sleep 1.2
    awk -v pfx="tcmu_alua_state_changes_total{device=\"user_1/gw$1\"," \
        'index($0, pfx) == 1 { print $NF; found = 1 } END { if (!found) print "absent" }' "$f"
}
gw_start a
gw_start b
SERIAL=$(serial_for)
gw_backstore a ao 1 0
gw_backstore b ano1 2 1
for gw in a b; do
    other=b
    [[ $gw == b ]] && other=a
    grep -q "serving only device(s) gw$gw" "$(gw_log "$gw")" ||
        fail "gateway $gw's daemon did not log its scope"
    grep -q "user_1/gw$other: added" "$(gw_log "$gw")" &&
        fail "gateway $gw's daemon served gw$other"
    grep -q "user_1/gw$gw: added" "$(gw_log "$gw")" || fail "gateway $gw's daemon did not add gw$gw"
done
sg_inq "${GW_SG[a]}" >"$WORK/inq-a.txt" || fail "sg_inq on gwa failed"
assert_grep "TPGS=1" "$WORK/inq-a.txt" "gwa's standard INQUIRY reports implicit ALUA"
# Nobody has written yet: the configured states.
assert_eq "$(rtpg_access_state "${GW_SG[a]}" 1)" "active/optimized" "gwa's group before any write"
assert_eq "$(rtpg_access_state "${GW_SG[b]}" 2)" "active/non optimized" "gwb's group before any write"
log "each daemon serves its own gateway; RTPG: gwa group 1 active/optimized, gwb group 2 active/non-optimized"

# A stopped daemon answers no REMOVED event: resume both before cleanup
# removes the backstores.
push_cleanup gw_continue_all

# Priority group 1: gwa (the owner's path); group 2: gwb.
mpath_create mpha "2 1 round-robin 0 1 1 ${GW_MM[a]} 1 round-robin 0 1 1 ${GW_MM[b]} 1"
log "multipath mpha ($MP): $(mpath_paths mpha)"

# --- 2. a hung gateway and its stale write ---------------------------------
head -c $MARK_LEN /dev/urandom >"$WORK/p1"
head -c $MARK_LEN /dev/urandom >"$WORK/p2"
head -c $MARK_LEN /dev/urandom >"$WORK/p3"
mark_write "$WORK/p1" || fail "writing P1 through gwa failed"
grep -q 'rbd: exclusive lock acquired' "$(gw_log a)" || fail "gwa did not take the lock on the first write"
dmesg_mark
fio_bg hung "$MP" "$FIO_SECS" --iodepth=16
sleep 3
gw_kill a STOP
log "gateway a's daemon stopped (SIGSTOP) under fio"
t0=$(now_us)
mark_write "$WORK/p2" &
p2_pid=$!
wait "$p2_pid" || fail "the marker write P2 failed instead of failing over"
failover_ms=$(ms_since "$t0")
log "P2 written through the other path ${failover_ms} ms after it was issued (gwa's ring times out after ${CMD_TIME_OUT} s)"
mpath_paths mpha | grep -q "${GW_MM[a]} F" || fail "dm-multipath did not fail gwa's path: $(mpath_paths mpha)"
grep -q 'after breaking the lock of' "$(gw_log b)" ||
    { grep -i lock "$(gw_log b)" | tail; fail "gwb did not break gwa's lock"; }
mark_write "$WORK/p3" || fail "writing P3 through gwb failed"
gw_kill a CONT
log "gateway a's daemon resumed: it runs what its ring still holds"
wait_for 30 "gwa to find itself fenced" grep -qE 'lost the exclusive lock|our client is blocklisted' "$(gw_log a)"
sleep 2
image_mark rbd/ha >"$WORK/mark.now"
cmp -s "$WORK/mark.now" "$WORK/p2" && fail "gwa's stale write of P2 landed after gwb's P3"
cmp -s "$WORK/mark.now" "$WORK/p3" || fail "the image does not hold P3, the last acknowledged write"
assert_eq "$(rtpg_access_state "${GW_SG[b]}" 2)" "active/optimized" "gwb's group once it holds the lock"
assert_eq "$(rtpg_access_state "${GW_SG[a]}" 1)" "active/non optimized" "gwa's group once the lock was taken from it"
log "RTPG follows the lock: gwb's group active/optimized, gwa's active/non-optimized"
log "the image keeps P3: gwa's stale P2 was fenced ($(grep -E 'lost the exclusive lock|our client is blocklisted' "$(gw_log a)" | head -n1 | cut -c1-160))"
fio_wait hung "$FIO_PID"
hung_clat=$(fio_clat_max_ms "$WORK/hung.json")
! dmesg_since | grep -q 'blocked for more than' || fail "hung task during the failover"
log "round 2: fio clean across the failover (longest completion ${hung_clat} ms)"

# --- 3. the active gateway killed ------------------------------------------
dmsetup message mpha 0 "reinstate_path ${GW_MM[a]}" || fail "cannot reinstate gwa's path"
dmesg_mark
fio_bg killed "$MP" "$FIO_SECS" --iodepth=16
sleep 3
gw_kill b KILL
log "gateway b's daemon killed (SIGKILL) under fio"
fio_wait killed "$FIO_PID"
killed_clat=$(fio_clat_max_ms "$WORK/killed.json")
mpath_paths mpha | grep -q "${GW_MM[b]} F" || fail "dm-multipath did not fail gwb's path: $(mpath_paths mpha)"
grep -c 'after breaking the lock of' "$(gw_log a)" | grep -qx 1 ||
    fail "gwa did not break gwb's lock once"
! dmesg_since | grep -q 'blocked for more than' || fail "hung task after gwb was killed"
log "round 3: failover to gwa, fio clean (longest completion ${killed_clat} ms)"
locks=$(lock_acquisitions)
assert_eq "$locks" 3 "lock acquisitions after two failovers (the first write, then one per failover)"
gw_start b
dmsetup message mpha 0 "reinstate_path ${GW_MM[b]}" || fail "cannot reinstate gwb's path"
mark_write "$WORK/p1" || fail "writing P1 after gwb came back failed"
sleep 2
assert_eq "$(lock_acquisitions)" 3 "lock acquisitions after gwb came back as the standby"
cmp -s <(image_mark rbd/ha) "$WORK/p1" || fail "P1 written after gwb's return is not in the image"
assert_eq "$(rtpg_access_state "${GW_SG[a]}" 1)" "active/optimized" "gwa's group after it took the lock back"
assert_eq "$(rtpg_access_state "${GW_SG[b]}" 2)" "active/non optimized" "the restarted gwb's group"
log "gwb serves again as the standby path; the lock stays with gwa"

# --- 4. active-active reads ------------------------------------------------
mpath_remove mpha || fail "dmsetup remove mpha failed"
mpath_create mpaa "1 1 round-robin 0 2 1 ${GW_MM[a]} 1 ${GW_MM[b]} 1"
reads_on_both_paths "$MP" "${GW_DEV[a]}" "${GW_DEV[b]}"
assert_eq "$(lock_acquisitions)" 3 "lock acquisitions after reads on both paths"
assert_eq "$(alua_changes a)" 2 "gwa's ALUA state changes (lost the lock, took it back)"
assert_eq "$(alua_changes b)" 0 "the restarted gwb's ALUA state changes"
log "round 4: reads on both paths (gwa $((READ_A / 2048)) MiB, gwb $((READ_B / 2048)) MiB), the lock did not move"

rbdc export rbd/ha "$WORK/ha.export" >/dev/null 2>&1 || fail "rbd export failed"
cmp "$WORK/ha.export" "$MP" || fail "the multipath device differs from rbd export"
rm -f "$WORK/ha.export"
# The LUNs go first, while both daemons serve them; then the daemons
# stop (SIGTERM, exit status 0).
undo_all
for gw in a b; do
    [[ ! -d $CFG/core/user_1/gw$gw ]] || fail "backstore gw$gw could not be removed"
    grep -q "user_1/gw$gw: removed" "$(gw_log "$gw")" || fail "gateway $gw's daemon did not serve the removal of gw$gw"
    tail -n 1 "$(gw_log "$gw")" | grep -q 'tcmu-runner stopped' ||
        fail "gateway $gw's daemon did not stop cleanly: $(tail -n 3 "$(gw_log "$gw")")"
done
log "both LUNs removed, each by its own daemon; both daemons stopped cleanly"
log "summary: failover_ms(SIGSTOP,marker)=$failover_ms fio_clat_max_ms(SIGSTOP)=$hung_clat fio_clat_max_ms(SIGKILL)=$killed_clat lock_acquisitions=3"
