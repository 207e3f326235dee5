#!/bin/bash
# lib.sh — helpers shared by the guest-side tests (tests/vm/t-*.sh, demo.sh).
#
# Runs inside the test VM booted by `cargo xtask vm-test`: the host's root
# filesystem is the guest's root (read-write!), so every file a test makes
# lives under $WORK, in /run (guest RAM).
#
# Environment (from the guest env file written by xtask, see xtask/src/vm):
#   TCMU_RUNNER   path of our daemon binary (target/release/tcmu-runner)
#   EXAMPLES_DIR  folder of the library crates' examples built in release
#                 (target/release/examples: consumer, …)
#   FIO_RUNTIME   seconds per fio run (default 60)
#   XT_OUT        host folder for results; daemon logs are copied there
#   TCMU_DEBUG    non-empty: start the daemon with -d
#   TEST_TIMEOUT  seconds the test may run (run-all.sh sets it to its
#                 per-test timeout); long tests budget their optional parts
#   HARNESS_SELFTEST  non-empty: check the test scripts themselves without
#                 our daemon: user:file backstores become kernel fileio ones
#                 and the daemon helpers do nothing. Proves nothing about
#                 tcmu-runner; used to validate the harness.
#
# Usage in a test:
#   source "$(dirname "$0")/lib.sh"     # also installs the cleanup traps
#
# The helpers record what they create (LUNs, targets, backstores, daemons)
# and `cleanup` removes it in reverse order, so a failing test leaves a clean
# kernel for the next one.

set -euo pipefail

TEST_NAME=${TEST_NAME:-$(basename "$0" .sh)}
# The repository (the workspace root), found before the cd below.
REPO_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CFG=/sys/kernel/config/target
LOOP=$CFG/loopback
WORK=/run/tcmu-test/$TEST_NAME
LOGDIR=$WORK/log
FIO_RUNTIME=${FIO_RUNTIME:-60}
mkdir -p "$WORK" "$LOGDIR"
# Work from guest RAM: stray files (fio's verify state, core dumps) must not
# land in the host's tests/vm/.
cd "$WORK"

# Things to undo, most recent last (see cleanup).
CLEANUP_STACK=()
# PID of the daemon we started, if running.
DAEMON_PID=
# Background configfs writers left blocked in the kernel (see write_timeout).
STUCK_PIDS=()

# ---------------------------------------------------------------------------
# Logging and assertions

# log MSG...: progress line prefixed with the test name and its run time.
log() { echo "[$TEST_NAME +${SECONDS}s] $*"; }

# fail REASON...: report the failure and stop the test (cleanup runs via trap).
fail() {
    echo "FAIL $TEST_NAME: $*"
    exit 1
}

# assert_eq ACTUAL EXPECTED WHAT
assert_eq() {
    [[ "$1" == "$2" ]] || fail "$3: got '$1', expected '$2'"
}

# assert_ne ACTUAL UNEXPECTED WHAT
assert_ne() {
    [[ "$1" != "$2" ]] || fail "$3: got '$1'"
}

# assert_grep PATTERN FILE WHAT: FILE has a line matching the ERE PATTERN.
assert_grep() {
    grep -Eq -- "$1" "$2" || fail "$3 (no line matching /$1/ in $2)"
}

# wait_for SECS DESCRIPTION CMD...: retry CMD every 0.2 s until it succeeds;
# fail the test after SECS.
wait_for() {
    local secs=$1 what=$2
    shift 2
    local deadline=$((SECONDS + secs))
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || fail "timed out after ${secs}s waiting for $what"
        sleep 0.2
    done
}

# push_cleanup CMD...: run CMD (eval'ed) at cleanup, before earlier entries.
push_cleanup() { CLEANUP_STACK+=("$*"); }

# cleanup: undo everything in reverse order, keeping the exit status
# (installed as the EXIT trap below).
cleanup() {
    local rc=$?
    set +e
    trap - EXIT
    # Background jobs (fio, dd) first: they hold the disks open. The daemon
    # stays up until the LUNs are gone: removing a disk sends it SYNCHRONIZE
    # CACHE, which would otherwise wait for the kernel's command timeout.
    local j
    for j in $(jobs -pr); do
        [[ $j == "$DAEMON_PID" ]] || kill "$j" 2>/dev/null
    done
    undo_all
    daemon_kill9 >/dev/null 2>&1
    release_stuck
    save_logs
    umount -l "$WORK"/mnt* 2>/dev/null
    rm -rf "$WORK"
    exit $rc
}

# undo_all: run and empty the cleanup stack (a test may call it to tear
# down its devices before stopping the daemon cleanly). UNDO_VERBOSE=1 logs
# each step first.
undo_all() {
    local i
    for ((i = ${#CLEANUP_STACK[@]} - 1; i >= 0; i--)); do
        [[ -z ${UNDO_VERBOSE:-} ]] || log "cleanup: ${CLEANUP_STACK[i]}"
        eval "${CLEANUP_STACK[i]}" >/dev/null 2>&1 || log "cleanup step failed: ${CLEANUP_STACK[i]}"
    done
    CLEANUP_STACK=()
}

# release_stuck: if configfs writers are still blocked in the kernel, make
# target_core_user fail their pending netlink commands so they return.
release_stuck() {
    local p alive=()
    for p in "${STUCK_PIDS[@]}"; do kill -0 "$p" 2>/dev/null && alive+=("$p"); done
    ((${#alive[@]} > 0)) || return 0
    log "releasing ${#alive[@]} configfs writer(s) blocked on netlink"
    unstick_netlink
    sleep 1
}

# save_logs: copy the daemon's log dir to the host ($XT_OUT/logs/<test>/).
# Small reports (fio JSON, sg answers) go along.
save_logs() {
    [[ -n "${XT_OUT:-}" && -d "$WORK" ]] || return 0
    local dest=$XT_OUT/logs/$TEST_NAME
    mkdir -p "$dest" || return 0
    cp -a "$LOGDIR/." "$dest/" 2>/dev/null
    find "$WORK" -maxdepth 1 -type f \( -name '*.json' -o -name '*.txt' -o -name '*.masked' \) \
        -size -2M -exec cp {} "$dest/" \; 2>/dev/null
    return 0
}

trap cleanup EXIT
# A per-test timeout (run-all.sh) sends SIGTERM: report it and clean up.
trap 'fail "interrupted by SIGTERM/SIGINT (per-test timeout?)"' TERM INT

# ---------------------------------------------------------------------------
# Kernel modules and configfs

# load_modules: LIO core, TCMU, fileio, loopback fabric, disk and sg drivers.
load_modules() {
    local m
    for m in target_core_mod target_core_user target_core_file tcm_loop sd_mod sg; do
        modprobe "$m" || fail "modprobe $m failed"
    done
    mountpoint -q /sys/kernel/config || mount -t configfs configfs /sys/kernel/config
    [[ -d $CFG/core ]] || fail "LIO configfs tree missing at $CFG"
}

# write_timeout SECS FILE VALUE: write VALUE to the configfs FILE, giving up
# after SECS. Returns the write's status, or 124 when it is still blocked
# (the kernel may wait for a netlink reply in uninterruptible sleep, which
# `timeout` cannot kill; the writer is left behind in that case).
write_timeout() {
    local secs=$1 file=$2 value=$3
    (echo "$value" >"$file") 2>"$WORK/write.err" &
    local pid=$! deadline=$((SECONDS + secs))
    while kill -0 "$pid" 2>/dev/null; do
        if ((SECONDS >= deadline)); then
            log "write of '$value' to $file still blocked after ${secs}s (pid $pid)"
            STUCK_PIDS+=("$pid")
            WRITE_PID=$pid
            return 124
        fi
        sleep 0.1
    done
    local rc=0
    wait "$pid" || rc=$?
    [[ $rc -eq 0 ]] || log "write of '$value' to $file failed: $(cat "$WORK/write.err")"
    return $rc
}

# unstick_netlink: release configfs writers the kernel holds while waiting
# for a netlink reply that will never come (target_core_user's own switches).
unstick_netlink() {
    local p=/sys/module/target_core_user/parameters
    echo 1 >$p/block_netlink 2>/dev/null
    echo 1 >$p/reset_netlink 2>/dev/null
    echo 0 >$p/block_netlink 2>/dev/null
    return 0
}

# serial_for NAME: a unit serial like the UUIDs targetcli writes.
serial_for() {
    cat /proc/sys/kernel/random/uuid
}

# set_serial DIR: set wwn/vpd_unit_serial of a backstore, as targetcli does.
# Sets BS_SERIAL.
set_serial() {
    BS_SERIAL=$(serial_for)
    echo "$BS_SERIAL" >"$1/wwn/vpd_unit_serial" || fail "cannot set the unit serial of $1"
}

# user_backstore NAME SIZE CFGSTRING [TIMEOUT]: create the TCMU backstore
# core/user_1/NAME with dev_size=SIZE and dev_config=CFGSTRING (e.g.
# "file//run/x.img") and enable it; with BS_HW_MAX_SECTORS set, also that
# hw_max_sectors. Sets BS_PATH. Returns enable's status (non-zero on
# failure, 124 when it did not return within TIMEOUT, default 20 s); it does
# not fail the test itself.
user_backstore() {
    local name=$1 size=$2 cfg=$3 secs=${4:-20}
    BS_PATH=$CFG/core/user_1/$name
    mkdir -p "$BS_PATH" || fail "mkdir $BS_PATH failed"
    push_cleanup "rmdir_timeout $BS_PATH"
    echo "dev_size=$size" >"$BS_PATH/control" || fail "cannot set dev_size of $name"
    echo "dev_config=$cfg" >"$BS_PATH/control" || fail "cannot set dev_config of $name"
    if [[ -n ${BS_HW_MAX_SECTORS:-} ]]; then
        echo "hw_max_sectors=$BS_HW_MAX_SECTORS" >"$BS_PATH/control" ||
            fail "cannot set hw_max_sectors of $name"
    fi
    set_serial "$BS_PATH"
    write_timeout "$secs" "$BS_PATH/enable" 1
}

# refused_backstore NAME SIZE DEV_CONFIG LOG_PATTERN: a user backstore that
# must be refused: `echo 1 > enable` fails (does not hang, does not
# succeed) within 5 s, and 0.5 s later the daemon log has a new line
# matching LOG_PATTERN (an extended regex). The refused backstore is
# removed again.
refused_backstore() {
    local name=$1 size=$2 cfg=$3 pattern=$4
    log "enabling $name with dev_config=$cfg (must fail)"
    log_mark
    local start=$SECONDS rc=0
    user_backstore "$name" "$size" "$cfg" 10 || rc=$?
    local took=$((SECONDS - start))
    [[ $rc -ne 124 ]] || fail "enable of $name ($cfg) hung instead of failing"
    [[ $rc -ne 0 ]] || fail "enable of $name ($cfg) succeeded; it must be refused"
    ((took <= 5)) || fail "enable of $name ($cfg) took ${took}s to fail"
    sleep 0.5 # let the daemon's log line land
    if ! log_since | grep -Eq -- "$pattern"; then
        echo "--- daemon log since the attempt:"
        log_since | tail -n 20
        fail "the daemon log does not explain why $name was refused (no line matching /$pattern/)"
    fi
    log "$name refused after ${took}s; daemon log: $(log_since | grep -E -- "$pattern" | head -n1)"
    rmdir_timeout "$BS_PATH" 10 || fail "removing the refused backstore $name failed"
}

# user_file_backstore NAME SIZE FILE: create FILE (sparse, SIZE bytes) and a
# user:file backstore on it; fails the test if enable fails. Sets BS_PATH.
user_file_backstore() {
    local name=$1 size=$2 file=$3
    if [[ -n "${HARNESS_SELFTEST:-}" ]]; then
        # Stand-in: fileio advertising what a user:file LUN does.
        fileio_backstore "st_$name" "$size" "$file"
        local a
        for a in emulate_tpu emulate_tpws emulate_write_cache; do
            echo 1 >"$BS_PATH/attrib/$a"
        done
        return
    fi
    [[ -e $file ]] || truncate -s "$size" "$file"
    user_backstore "$name" "$size" "file/$file" || fail "enabling user:file backstore $name failed"
}

# fileio_backstore NAME SIZE FILE: the kernel's own file backstore on FILE
# (created sparse if missing), the reference for answers and speed.
fileio_backstore() {
    local name=$1 size=$2 file=$3
    [[ -e $file ]] || truncate -s "$size" "$file"
    BS_PATH=$CFG/core/fileio_1/$name
    mkdir -p "$BS_PATH" || fail "mkdir $BS_PATH failed"
    push_cleanup "rmdir_timeout $BS_PATH"
    echo "fd_dev_name=$file,fd_dev_size=$size" >"$BS_PATH/control" || fail "cannot configure fileio $name"
    set_serial "$BS_PATH"
    write_timeout 20 "$BS_PATH/enable" 1 || fail "enabling fileio backstore $name failed"
}

# rmdir_timeout DIR [SECS]: rmdir a configfs dir (if it exists), reporting a
# hang (default 20 s) as status 124 instead of blocking forever.
rmdir_timeout() {
    local dir=$1 secs=${2:-20}
    [[ -d $dir ]] || return 0
    rmdir "$dir" 2>"$WORK/rmdir.err" &
    local pid=$! deadline=$((SECONDS + secs))
    while kill -0 "$pid" 2>/dev/null; do
        if ((SECONDS >= deadline)); then
            log "rmdir $dir still blocked after ${secs}s"
            STUCK_PIDS+=("$pid")
            return 124
        fi
        sleep 0.1
    done
    wait "$pid"
}

# naa_wwn: a random NAA WWN in the LIO vendor range, like targetcli makes.
naa_wwn() {
    printf 'naa.5001405%s' "$(od -An -N5 -tx1 /dev/urandom | tr -d ' \n' | cut -c1-9)"
}

# loop_export BACKSTORE_PATH: export a backstore through tcm_loop as LUN 0
# of a new target. Sets DEV (/dev/sdX), SG (/dev/sgN), SCSI_ADDR (H:C:T:L)
# and LOOP_TPG. Order matters: nexus first, then the LUN and its link.
loop_export() {
    local bs=$1
    local tpg
    tpg=$LOOP/$(naa_wwn)/tpgt_1
    mkdir -p "$tpg" || fail "cannot create tcm_loop target $tpg"
    push_cleanup "loop_unexport $tpg"
    echo "$(naa_wwn)" >"$tpg/nexus" || fail "cannot create the tcm_loop nexus"
    mkdir "$tpg/lun/lun_0" || fail "cannot create lun_0"
    ln -s "$bs" "$tpg/lun/lun_0/$(basename "$bs")" || fail "cannot link $bs into lun_0"
    LOOP_TPG=$tpg
    SCSI_ADDR="$(cat "$tpg/address"):0"
    local blockdir=/sys/class/scsi_device/$SCSI_ADDR/device/block
    wait_for 30 "a disk at SCSI address $SCSI_ADDR" compgen -G "$blockdir/*"
    DEV=/dev/$(ls "$blockdir" | head -n1)
    wait_for 10 "$DEV" test -b "$DEV"
    local sgdir=/sys/class/scsi_device/$SCSI_ADDR/device/scsi_generic
    wait_for 10 "the sg node of $SCSI_ADDR" compgen -G "$sgdir/*"
    SG=/dev/$(ls "$sgdir" | head -n1)
    wait_for 10 "$SG" test -c "$SG"
    log "exported $(basename "$bs") as $DEV ($SG, $SCSI_ADDR)"
}

# loop_unexport TPG: undo loop_export (LUN link, lun_0, tpgt_1, the naa
# target); tolerates a half-made export. Returns non-zero if something
# could not be removed.
loop_unexport() {
    local tpg=$1 rc=0 l
    [[ -d $tpg ]] || return 0
    for l in "$tpg"/lun/lun_0/*; do
        [[ -L $l ]] && { rm -f "$l" || rc=1; }
    done
    [[ -d $tpg/lun/lun_0 ]] && { rmdir "$tpg/lun/lun_0" || rc=1; }
    rmdir "$tpg" || rc=1
    rmdir "$(dirname "$tpg")" || rc=1
    return $rc
}

# cleanup_all_lio: remove every tcm_loop target and backstore left behind
# (run-all.sh calls it after a failed test so the next starts clean).
cleanup_all_lio() {
    set +e
    local l t n
    for l in "$LOOP"/naa.*/tpgt_*/lun/lun_*/*; do [[ -L $l ]] && rm -f "$l"; done
    for l in "$LOOP"/naa.*/tpgt_*/lun/lun_*; do [[ -d $l ]] && rmdir "$l"; done
    for t in "$LOOP"/naa.*/tpgt_*; do [[ -d $t ]] && rmdir "$t"; done
    for n in "$LOOP"/naa.*; do [[ -d $n ]] && rmdir "$n"; done
    iscsi_cleanup_all
    for n in "$CFG"/core/*_*/*/; do
        [[ -f ${n}enable ]] && rmdir_timeout "${n%/}" 10
    done
    return 0
}

# ---------------------------------------------------------------------------
# iSCSI: LIO's iscsi target on 127.0.0.1, open-iscsi as the kernel initiator
#
# The target side is raw configfs under $ISCSI. open-iscsi keeps its node
# database under /etc/iscsi, which is the host's: iscsid_start mounts a tmpfs
# over it in the guest, so nothing lands on the host.

ISCSI=$CFG/iscsi
ISCSI_HOST=127.0.0.1
ISCSI_PORTAL=$ISCSI_HOST:3260
# Outside $WORK: run-all.sh's cleanup (a fresh shell) must find it too.
ISCSID_PIDFILE=/run/tcmu-test/iscsid.pid

# load_iscsi_modules: LIO's iSCSI target and the kernel's iSCSI/TCP
# initiator (iscsi_tcp pulls in libiscsi_tcp, libiscsi, scsi_transport_iscsi).
load_iscsi_modules() {
    local m
    for m in iscsi_target_mod iscsi_tcp; do
        modprobe "$m" || fail "modprobe $m failed"
    done
    [[ -d $ISCSI ]] || mkdir "$ISCSI" || fail "cannot create $ISCSI (is iscsi_target_mod loaded?)"
}

# iscsi_iqn NAME: the IQN of the test target called NAME.
iscsi_iqn() { echo "iqn.2003-01.org.linux-iscsi.tcmu-vm:$1"; }

# iscsi_export NAME BACKSTORE_PATH: export a backstore as LUN 0 of a new
# iSCSI target $(iscsi_iqn NAME), TPG 1, portal 127.0.0.1:3260, in demo mode
# (any initiator, no authentication, writable), as targetcli does with
# generate_node_acls. Sets ISCSI_IQN and ISCSI_URL (libiscsi's URL of the
# LUN).
iscsi_export() {
    local name=$1 bs=$2
    local iqn
    iqn=$(iscsi_iqn "$name")
    local tpg=$ISCSI/$iqn/tpgt_1
    mkdir -p "$tpg" || fail "cannot create iSCSI target $iqn"
    push_cleanup "iscsi_unexport $iqn"
    mkdir "$tpg/np/$ISCSI_PORTAL" || fail "cannot add portal $ISCSI_PORTAL to $iqn"
    mkdir "$tpg/lun/lun_0" || fail "cannot create lun_0 of $iqn"
    ln -s "$bs" "$tpg/lun/lun_0/$(basename "$bs")" || fail "cannot link $bs into $iqn lun_0"
    echo 1 >"$tpg/attrib/generate_node_acls" || fail "cannot set generate_node_acls on $iqn"
    echo 1 >"$tpg/attrib/cache_dynamic_acls" || fail "cannot set cache_dynamic_acls on $iqn"
    echo 0 >"$tpg/attrib/authentication" || fail "cannot turn authentication off on $iqn"
    echo 0 >"$tpg/attrib/demo_mode_write_protect" || fail "cannot make $iqn writable in demo mode"
    echo 1 >"$tpg/enable" || fail "cannot enable $iqn/tpgt_1"
    # shellcheck disable=SC2034 # results for the calling test
    ISCSI_IQN=$iqn ISCSI_URL=iscsi://$ISCSI_HOST/$iqn/0
    log "exported $(basename "$bs") over iSCSI as $iqn on $ISCSI_PORTAL"
}

# iscsi_unexport IQN: undo iscsi_export (disable the TPG, which drops its
# sessions; LUN links, LUNs, portals, TPGs, the target). Tolerates a
# half-made export; returns non-zero if something could not be removed.
iscsi_unexport() {
    local t=$ISCSI/$1 rc=0 tpg l
    [[ -d $t ]] || return 0
    for tpg in "$t"/tpgt_*; do
        [[ -d $tpg ]] || continue
        [[ "$(cat "$tpg/enable" 2>/dev/null)" == 1 ]] && { echo 0 >"$tpg/enable" || rc=1; }
        for l in "$tpg"/lun/lun_*/*; do
            [[ -L $l ]] && { rm -f "$l" || rc=1; }
        done
        for l in "$tpg"/lun/lun_* "$tpg"/np/*; do
            [[ -d $l ]] && { rmdir "$l" || rc=1; }
        done
        rmdir "$tpg" || rc=1
    done
    rmdir "$t" || rc=1
    return $rc
}

# iscsid_start: start open-iscsi's iscsid (no systemd in the guest) with a
# RAM /etc/iscsi holding our initiator name and a config suited to a slow
# TCG guest. Sets ISCSID_PID. Started from a subshell so that it is not a
# job of the test (cleanup kills jobs before it logs sessions out, and
# logging out needs iscsid), and in a session of its own: on SIGTERM iscsid
# signals its whole process group, which would otherwise be the test's.
iscsid_start() {
    if ! mountpoint -q /etc/iscsi; then
        mount -t tmpfs -o mode=755 tmpfs /etc/iscsi || fail "cannot mount a tmpfs on /etc/iscsi"
    fi
    push_cleanup "iscsid_stop"
    echo "InitiatorName=$(iscsi_iqn initiator)" >/etc/iscsi/initiatorname.iscsi
    # iscsid.startup: iscsid runs already, never ask systemd. No NOP-Out
    # pings (unless $ISCSI_NOOP_SECS asks for them: the HA test must notice
    # a gateway that lost power) and a short replacement timeout: a slow
    # guest must not drop the session, and a dead one must fail I/O quickly
    # instead of in 120 s.
    local noop=${ISCSI_NOOP_SECS:-0}
    cat >/etc/iscsi/iscsid.conf <<EOF
iscsid.startup = /bin/true
node.startup = manual
node.session.timeo.replacement_timeout = 15
node.conn[0].timeo.login_timeout = 15
node.conn[0].timeo.logout_timeout = 15
node.conn[0].timeo.noop_out_interval = $noop
node.conn[0].timeo.noop_out_timeout = $noop
node.session.err_timeo.abort_timeout = 15
node.session.err_timeo.lu_reset_timeout = 30
node.session.err_timeo.tgt_reset_timeout = 30
node.session.initial_login_retry_max = 2
node.session.cmds_max = 128
node.session.queue_depth = 32
node.session.iscsi.InitialR2T = No
node.session.iscsi.ImmediateData = Yes
node.session.iscsi.FirstBurstLength = 262144
node.session.iscsi.MaxBurstLength = 16776192
node.conn[0].iscsi.MaxRecvDataSegmentLength = 262144
discovery.sendtargets.iscsi.MaxRecvDataSegmentLength = 32768
node.session.scan = auto
EOF
    mkdir -p /run/lock/iscsi "$(dirname "$ISCSID_PIDFILE")"
    (
        setsid iscsid -f >>"$LOGDIR/iscsid.log" 2>&1 &
        echo $! >"$ISCSID_PIDFILE"
    )
    ISCSID_PID=$(cat "$ISCSID_PIDFILE")
    # iscsiadm talks to iscsid over this abstract unix socket.
    wait_for 20 "iscsid's control socket" grep -q '@ISCSIADM_ABSTRACT_NAMESPACE' /proc/net/unix
    kill -0 "$ISCSID_PID" 2>/dev/null || fail "iscsid exited at once (see $LOGDIR/iscsid.log)"
    log "iscsid started (pid $ISCSID_PID)"
}

# iscsid_stop: stop the iscsid iscsid_start started (after every session is
# logged out) and drop the RAM /etc/iscsi.
iscsid_stop() {
    local pid
    if [[ -f $ISCSID_PIDFILE ]]; then
        pid=$(cat "$ISCSID_PIDFILE")
        if kill "$pid" 2>/dev/null; then
            local deadline=$((SECONDS + 10))
            while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
            kill -KILL "$pid" 2>/dev/null || true
        fi
        rm -f "$ISCSID_PIDFILE"
    fi
    ISCSID_PID=
    if mountpoint -q /etc/iscsi; then
        umount /etc/iscsi || return 1
    fi
}

# iscsi_session IQN: the sysfs folder of the open-iscsi session to IQN
# (none: prints nothing, returns 1).
iscsi_session() {
    local s
    for s in /sys/class/iscsi_session/session*; do
        [[ -f $s/targetname && "$(cat "$s/targetname")" == "$1" ]] && { echo "$s"; return 0; }
    done
    return 1
}

# iscsi_login IQN: discover the targets on 127.0.0.1 with open-iscsi, log in
# to IQN and wait for its LUN 0 disk (no udev: found through sysfs). Sets
# DEV (/dev/sdX) and ISCSI_SESSION (its /sys/class/iscsi_session folder).
iscsi_login() {
    local iqn=$1
    iscsiadm -m discovery -t sendtargets -p "$ISCSI_HOST" >"$WORK/discovery.txt" 2>&1 ||
        { cat "$WORK/discovery.txt"; fail "iSCSI discovery on $ISCSI_HOST failed"; }
    grep -q " $iqn\$" "$WORK/discovery.txt" ||
        { cat "$WORK/discovery.txt"; fail "discovery on $ISCSI_HOST did not list $iqn"; }
    push_cleanup "iscsi_logout $iqn"
    iscsiadm -m node -T "$iqn" -p "$ISCSI_HOST" --login >"$WORK/login.txt" 2>&1 ||
        { cat "$WORK/login.txt"; fail "iSCSI login to $iqn failed"; }
    ISCSI_SESSION=$(iscsi_session "$iqn") || fail "logged in to $iqn but no iSCSI session in sysfs"
    # session → its SCSI host's target → H:C:T:0 → block/sdX
    local blocks="$ISCSI_SESSION/device/target*/*:0/block"
    wait_for 30 "the disk of $iqn's LUN 0" compgen -G "$blocks/sd*"
    local b
    b=$(compgen -G "$blocks/sd*" | head -n1)
    DEV=/dev/$(basename "$b")
    wait_for 10 "$DEV" test -b "$DEV"
    log "logged in to $iqn ($(basename "$ISCSI_SESSION")): LUN 0 is $DEV"
}

# iscsi_logout IQN: log the open-iscsi session to IQN out (if any) and
# forget the node. Returns non-zero if the session is still there.
iscsi_logout() {
    local iqn=$1
    if iscsi_session "$iqn" >/dev/null; then
        iscsiadm -m node -T "$iqn" -p "$ISCSI_HOST" --logout >>"$LOGDIR/iscsiadm.log" 2>&1 ||
            log "iscsiadm --logout from $iqn failed (see $LOGDIR/iscsiadm.log)"
    fi
    iscsiadm -m node -T "$iqn" -p "$ISCSI_HOST" -o delete >/dev/null 2>&1 || true
    ! iscsi_session "$iqn" >/dev/null
}

# iscsi_cleanup_all: log every open-iscsi session out, stop iscsid and
# remove every iSCSI target (part of cleanup_all_lio).
iscsi_cleanup_all() {
    if compgen -G "/sys/class/iscsi_session/session*" >/dev/null; then
        iscsiadm -m node --logoutall=all >/dev/null 2>&1
    fi
    [[ -f $ISCSID_PIDFILE ]] && iscsid_stop
    local t
    for t in "$ISCSI"/iqn.*; do
        [[ -d $t ]] && iscsi_unexport "$(basename "$t")"
    done
    return 0
}

# iscsi_test_cu URL OUT SECS SUITE: run one suite (e.g. SCSI.Read10) of
# libiscsi's conformance tests, iscsi-test-cu, destructive tests allowed,
# against URL for at most SECS seconds; append a line "=== SUITE status N
# secs T" (124: timed out) and its output to OUT. One process per suite, so
# a hang loses one suite, not the run. Never fails the test. The TMF
# suites log their SCSI steps (--Verbose-scsi): what an abort test saw of
# the command and of the abort is what tells a target's fault from LIO's.
iscsi_test_cu() {
    local url=$1 out=$2 secs=$3 suite=$4 rc=0 t0=$SECONDS extra=()
    [[ $suite == iSCSI.iSCSITMF* ]] && extra=(--Verbose-scsi)
    timeout -k 10 "$secs" iscsi-test-cu --dataloss --verbose "${extra[@]}" --test="$suite" "$url" \
        >"$out.part" 2>&1 </dev/null || rc=$?
    echo "=== $suite status $rc secs $((SECONDS - t0))" >>"$out"
    cat "$out.part" >>"$out"
    rm -f "$out.part"
}

# iscsi_test_cu_not_run OUT SUITE: record in OUT that SUITE was not run for
# lack of time.
iscsi_test_cu_not_run() {
    echo "=== $2 status budget secs 0" >>"$1"
}

# iscsi_test_cu_results OUT: one line per test of an iscsi_test_cu output,
# "Suite.Test RESULT message". RESULT is PASS, SKIP (passed after printing
# [SKIPPED]), FAIL, or NOTRUN (its process ended before the test reported:
# a timeout or a crash); the message is the first [FAILED]/[SKIPPED] line
# the test printed, or CUnit's first failed assertion. A suite whose process
# reported no test at all (no login, say) gives "Suite.* ERROR status N",
# one not started for lack of time "Suite.* NOTRUN time budget used up".
iscsi_test_cu_results() {
    awk '
        function clean(s) {
            sub(/^.*\[(FAILED|SKIPPED)\] */, "", s)
            sub(/[ \t]+$/, "", s)
            return s
        }
        function finish(res,    msg) {
            if (test != "") {
                if (res == "FAIL") msg = (failmsg != "") ? failmsg : assertmsg
                else if (res == "SKIP") msg = skipmsg
                else if (res == "NOTRUN") msg = "no result: iscsi-test-cu exited with status " status
                printf "%s %s %s\n", test, res, msg
                ntests++
            }
            test = ""; failed = 0
        }
        function end_block() {
            finish("NOTRUN")
            if (block != "" && ntests == 0) {
                if (status == "budget") printf "%s.* NOTRUN time budget used up\n", block
                else printf "%s.* ERROR status %s\n", block, status
            }
            block = ""
        }
        {
            line = $0
            if (failed) {
                # CUnit lists failed assertions after FAILED: "    1. f.c:39  - msg"
                if (line ~ /^    [0-9]+\. /) {
                    if (assertmsg == "") { assertmsg = line; sub(/^ +[0-9]+\. +/, "", assertmsg) }
                    next
                }
                finish("FAIL")
            }
            if (line ~ /^=== /) {
                end_block()
                block = $2; status = $4; ntests = 0
                sub(/^[A-Za-z]+\./, "", block)
                next
            }
            if (line ~ /^Suite: /) { finish("NOTRUN"); suite = $2; next }
            if (line ~ /^  Test: /) {
                finish("NOTRUN")
                line = substr(line, 9)
                i = index(line, " ...")
                test = suite "." substr(line, 1, i - 1)
                line = substr(line, i + 4)
                failmsg = ""; skipmsg = ""; assertmsg = ""; skipped = 0
            }
            if (test == "") next
            if (line ~ /\[SKIPPED\]/) { skipped = 1; if (skipmsg == "") skipmsg = clean(line) }
            if (line ~ /\[FAILED\]/ && failmsg == "") failmsg = clean(line)
            # The verdict starts a line; clean-up output of the suite may follow
            # it on the same line.
            if (line ~ /^passed/) finish(skipped ? "SKIP" : "PASS")
            else if (line ~ /^FAILED/) failed = 1
        }
        END { if (failed) finish("FAIL"); end_block() }
    ' "$1"
}

# ---------------------------------------------------------------------------
# A system D-Bus (targetcli finds user:* backstores through it)

DBUS_SOCKET=/run/dbus/system_bus_socket
# PID of the dbus-daemon we started, if running.
DBUS_PID=

# dbus_start: start a system bus listening on $DBUS_SOCKET (guest RAM) as
# user messagebus, configured from tests/vm/dbus-system.conf.in: the stock
# system bus's deny-by-default rules plus the repository's policy file for
# our daemon (runner/dist/dbus-1/system.d/tcmu-runner.conf); no service
# activation, nothing read from the host's /etc. Sets DBUS_PID; cleanup
# stops it.
dbus_start() {
    local conf=$WORK/dbus-system.conf
    local policy=$REPO_DIR/runner/dist/dbus-1/system.d/tcmu-runner.conf
    [[ -f $policy ]] || fail "no D-Bus policy at $policy"
    sed -e "s|@USER@|messagebus|" -e "s|@SOCKET@|$DBUS_SOCKET|" -e "s|@POLICY@|$policy|" \
        "$REPO_DIR/tests/vm/dbus-system.conf.in" >"$conf"
    mkdir -p "$(dirname "$DBUS_SOCKET")"
    rm -f "$DBUS_SOCKET"
    dbus-daemon --config-file="$conf" --nofork --nopidfile --nosyslog >>"$LOGDIR/dbus-daemon.log" 2>&1 &
    DBUS_PID=$!
    push_cleanup dbus_stop
    wait_for 10 "the system bus at $DBUS_SOCKET" dbus-send --system --print-reply \
        --dest=org.freedesktop.DBus / org.freedesktop.DBus.GetId
    log "system bus started (pid $DBUS_PID)"
}

# dbus_stop: stop the bus started by dbus_start (SIGTERM, then SIGKILL).
dbus_stop() {
    [[ -n $DBUS_PID ]] || return 0
    kill -TERM "$DBUS_PID" 2>/dev/null || true
    local i
    for i in $(seq 50); do
        kill -0 "$DBUS_PID" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$DBUS_PID" 2>/dev/null || true
    wait "$DBUS_PID" 2>/dev/null || true
    DBUS_PID=
    rm -f "$DBUS_SOCKET"
}

# dbus_has_name NAME: NAME has an owner on the system bus.
dbus_has_name() {
    dbus-send --system --print-reply --dest=org.freedesktop.DBus / \
        org.freedesktop.DBus.GetNameOwner "string:$1" >/dev/null 2>&1
}

# ---------------------------------------------------------------------------
# targetcli-fb

# targetcli_env: targetcli keeps its prefs and log in $HOME: keep them in
# guest RAM.
targetcli_env() {
    export HOME=$WORK PYTHONDONTWRITEBYTECODE=1
}

# tc ARGS...: run targetcli non-interactively; prints its output (colour
# codes removed), which also goes to targetcli.txt with the status.
tc() {
    local rc=0
    targetcli "$@" >"$WORK/tc.raw" 2>&1 || rc=$?
    sed 's/\x1b\[[0-9;]*m//g' "$WORK/tc.raw" >"$WORK/tc.out"
    { echo "\$ targetcli $*"; cat "$WORK/tc.out"; echo "(status $rc)"; } >>"$WORK/targetcli.txt"
    cat "$WORK/tc.out"
    return $rc
}

# tc_batch CMD...: run several targetcli commands in one session (targetcli
# starts slowly under TCG), read from stdin; prints the session's output.
# Every session first turns auto_save_on_exit off again, so leaving it can
# never save to the host's /etc.
tc_batch() {
    printf '%s\n' "set global auto_save_on_exit=false" "$@" >"$WORK/tc.in"
    targetcli <"$WORK/tc.in" >"$WORK/tc.raw" 2>&1 || true
    sed 's/\x1b\[[0-9;]*m//g' "$WORK/tc.raw" >"$WORK/tc.out"
    { echo "\$ targetcli <<<'$*'"; cat "$WORK/tc.out"; } >>"$WORK/targetcli.txt"
    cat "$WORK/tc.out"
}

# so_path NAME: the configfs folder of user backstore NAME (none: empty).
so_path() { compgen -G "$CFG/core/user_*/$1" | head -n1 || true; }

# ---------------------------------------------------------------------------
# Our daemon

# daemon_start [ARGS...]: start $TCMU_RUNNER -l $LOGDIR in the background and
# wait (30 s) for "tcmu-runner ready" in $LOGDIR/tcmu-runner.log, written
# after this call (earlier runs' lines do not count). Sets DAEMON_PID.
daemon_start() {
    if [[ -n "${HARNESS_SELFTEST:-}" ]]; then
        log "HARNESS_SELFTEST: not starting the daemon"
        return 0
    fi
    [[ -x "${TCMU_RUNNER:-}" ]] || fail "TCMU_RUNNER='${TCMU_RUNNER:-}' is not an executable"
    local logf=$LOGDIR/tcmu-runner.log
    local before=0
    [[ -f $logf ]] && before=$(stat -c %s "$logf")
    local debug=()
    [[ -n "${TCMU_DEBUG:-}" ]] && debug=(-d)
    # A test's own tcmu.conf (absent unless the test writes one), so the
    # host's /etc/tcmu/tcmu.conf never moves the logs tests read.
    local conf=(--config "$WORK/tcmu.conf")
    [[ " $* " == *" --config "* ]] && conf=()
    "$TCMU_RUNNER" "${debug[@]}" "${conf[@]}" -l "$LOGDIR" "$@" >>"$LOGDIR/stdout.log" 2>&1 &
    DAEMON_PID=$!
    local deadline=$((SECONDS + 30))
    while :; do
        if [[ -f $logf ]]; then
            local size
            size=$(stat -c %s "$logf")
            ((size >= before)) || before=0 # the daemon truncated its log
            grep -q 'tcmu-runner ready' <(tail -c +$((before + 1)) "$logf") && break
        fi
        if ! kill -0 "$DAEMON_PID" 2>/dev/null; then
            local rc=0
            wait "$DAEMON_PID" || rc=$?
            DAEMON_PID=
            echo "--- daemon output:"; tail -n 30 "$LOGDIR/stdout.log" "$logf" 2>/dev/null
            fail "the daemon exited (status $rc) before logging 'tcmu-runner ready'"
        fi
        if ((SECONDS >= deadline)); then
            echo "--- daemon output:"; tail -n 30 "$LOGDIR/stdout.log" "$logf" 2>/dev/null
            fail "the daemon did not log 'tcmu-runner ready' within 30s"
        fi
        sleep 0.1
    done
    log "daemon started (pid $DAEMON_PID)"
}

# daemon_stop: SIGTERM, wait up to 20 s; fails the test if it does not exit
# or exits non-zero (a clean shutdown is part of the contract).
daemon_stop() {
    [[ -n $DAEMON_PID ]] || return 0
    local pid=$DAEMON_PID
    DAEMON_PID=
    term_and_reap "$pid" "the daemon"
    log "daemon stopped"
}

# term_and_reap PID WHAT: SIGTERM PID and wait up to 20 s for it (then
# SIGKILL it and fail); fails the test unless it exits with status 0.
term_and_reap() {
    local pid=$1 what=$2
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + 20))
    while kill -0 "$pid" 2>/dev/null; do
        if ((SECONDS >= deadline)); then
            kill -KILL "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
            fail "$what did not exit within 20s of SIGTERM"
        fi
        sleep 0.1
    done
    local rc=0
    wait "$pid" || rc=$?
    [[ $rc -eq 0 ]] || fail "$what exited with status $rc after SIGTERM"
}

# daemon_kill9: kill -9 the daemon (crash simulation) and reap it.
daemon_kill9() {
    [[ -n $DAEMON_PID ]] || return 0
    kill -KILL "$DAEMON_PID" 2>/dev/null || true
    wait "$DAEMON_PID" 2>/dev/null || true
    DAEMON_PID=
}

# running PID: PID exists and is not a zombie (an orphan's exit status
# waits for the guest's init to reap it, so kill -0 still finds it).
running() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [[ ${stat%% *} != Z ]]
}

# daemon_alive: the daemon we started still runs.
daemon_alive() {
    [[ -n $DAEMON_PID ]] && kill -0 "$DAEMON_PID" 2>/dev/null
}

# daemon_log: path of the daemon's log file.
daemon_log() { echo "$LOGDIR/tcmu-runner.log"; }

# ---------------------------------------------------------------------------
# Misc I/O helpers

# dev_size_bytes DEV
dev_size_bytes() { blockdev --getsize64 "$1"; }

# dev_size_is DEV BYTES: DEV's size is BYTES now (for wait_for, which
# re-runs its command: a "$(...)" in its arguments would be read only once).
dev_size_is() { (($(dev_size_bytes "$1") == $2)); }

# fio_errors JSON_FILE: total error count over all jobs of a fio JSON report.
fio_errors() {
    grep -Eo '"(total_err|error)" *: *[0-9]+' "$1" | awk -F: '{s += $2} END {printf "%.0f\n", s}'
}

# fio_bg NAME DEV SECS [EXTRA...]: start a verified random-write fio on DEV in
# the background (libaio, direct, 4k, iodepth 16, blocks read back and
# checked as they are written). Sets FIO_PID; its JSON report goes to
# $WORK/NAME.json. Check it with fio_wait NAME.
fio_bg() {
    local name=$1 dev=$2 secs=$3
    shift 3
    fio --name="$name" --filename="$dev" --ioengine=libaio --direct=1 \
        --rw=randwrite --bs=4k --iodepth=16 --size=64m \
        --verify=crc32c --do_verify=1 --verify_backlog=128 --verify_fatal=1 \
        --verify_state_save=0 \
        --time_based --runtime="$secs" --eta=never \
        --output-format=json --output="$WORK/$name.json" "$@" \
        >"$WORK/$name.out" 2>&1 &
    FIO_PID=$!
}

# fio_wait NAME PID: wait for a fio_bg run; fails the test if fio exited
# non-zero, reported errors or verified nothing.
fio_wait() {
    local name=$1 pid=$2 rc=0
    wait "$pid" || rc=$?
    if [[ $rc -ne 0 ]]; then
        tail -n 30 "$WORK/$name.out" "$WORK/$name.json" 2>/dev/null
        fail "fio '$name' exited with status $rc"
    fi
    assert_eq "$(fio_errors "$WORK/$name.json")" 0 "fio '$name' error count"
    local verified
    verified=$(grep -A3 '"read" *:' "$WORK/$name.json" | grep -Eo '"io_bytes" *: *[0-9]+' |
        awk -F: '{s += $2} END {printf "%.0f\n", s}')
    ((verified > 0)) || fail "fio '$name' verified no data"
    log "fio '$name' finished: no errors, $((verified / 1048576)) MiB verified"
}

# The log log_mark/log_since read: the daemon's, unless a test serves its
# devices with another program (an example) and points this at its log.
DAEMON_LOG_FILE=${DAEMON_LOG_FILE:-$LOGDIR/tcmu-runner.log}

# log_mark: remember the daemon log's current size (see log_since).
log_mark() {
    LOG_MARK=0
    [[ -f $DAEMON_LOG_FILE ]] && LOG_MARK=$(stat -c %s "$DAEMON_LOG_FILE")
    return 0
}

# log_since: the daemon log lines written since the last log_mark.
# (`|| true`: under pipefail, `log_since | grep -q` would fail when grep
# exits at its first match while tail still writes and dies of SIGPIPE.)
log_since() {
    tail -c +$((LOG_MARK + 1)) "$DAEMON_LOG_FILE" 2>/dev/null || true
}

# log_has PATTERN: a line written since the last log_mark matches PATTERN
# (grep -E).
log_has() { log_since | grep -qE -- "$1"; }

# wait_log SECS PATTERN WHAT: wait up to SECS for a log line since the last
# log_mark matching PATTERN; fail naming WHAT if none comes. (The daemon
# writes its log from its own thread: a line can land a moment after the
# event it tells of, longer on a loaded machine.)
wait_log() { wait_for "$1" "$3" log_has "$2"; }

# example_start NAME READY_PATTERN [ARGS...]: start $EXAMPLES_DIR/NAME in
# the background in place of the daemon, its stderr appended to
# $LOGDIR/NAME.log (which becomes DAEMON_LOG_FILE), and wait (30 s) for a
# new log line matching READY_PATTERN. Sets DAEMON_PID, so daemon_alive,
# daemon_stop (SIGTERM, exit status 0 required) and cleanup apply to it.
example_start() {
    local name=$1 ready=$2
    shift 2
    local bin=${EXAMPLES_DIR:-}/$name
    [[ -x $bin ]] || fail "example '$name' not built: no executable $bin (EXAMPLES_DIR='${EXAMPLES_DIR:-}')"
    DAEMON_LOG_FILE=$LOGDIR/$name.log
    log_mark
    "$bin" "$@" >>"$LOGDIR/$name.stdout.log" 2>>"$DAEMON_LOG_FILE" &
    DAEMON_PID=$!
    local deadline=$((SECONDS + 30))
    until log_since | grep -Eq -- "$ready"; do
        if ! kill -0 "$DAEMON_PID" 2>/dev/null; then
            local rc=0
            wait "$DAEMON_PID" || rc=$?
            DAEMON_PID=
            echo "--- $name log:"; log_since | tail -n 30
            fail "example '$name' exited (status $rc) before logging /$ready/"
        fi
        ((SECONDS < deadline)) || { echo "--- $name log:"; log_since | tail -n 30; fail "example '$name' did not log /$ready/ within 30s"; }
        sleep 0.1
    done
    log "example '$name' started (pid $DAEMON_PID)"
}

# ext4_roundtrip DEV FILES MIB: mkfs.ext4 on DEV, mount it, write FILES
# files of MIB MiB of random data each, record their sha256sums, unmount,
# `fsck.ext4 -fn` must be clean, drop the page cache, remount and the
# checksums must match; unmounted at the end. Fails the test otherwise.
ext4_roundtrip() {
    local dev=$1 files=$2 mib=$3 mnt=$WORK/mnt-ext4 i
    mkfs.ext4 -q -F "$dev" >"$WORK/mkfs.txt" 2>&1 || { cat "$WORK/mkfs.txt"; fail "mkfs.ext4 on $dev failed"; }
    mkdir -p "$mnt"
    mount "$dev" "$mnt" || fail "mounting $dev failed"
    push_cleanup "! mountpoint -q $mnt || umount $mnt"
    for ((i = 0; i < files; i++)); do
        dd if=/dev/urandom of="$mnt/f$i" bs=1M count="$mib" status=none || fail "writing f$i on $dev failed"
    done
    (cd "$mnt" && sha256sum f*) >"$WORK/ext4-sums.txt" || fail "sha256sum failed"
    umount "$mnt" || fail "unmounting $dev failed"
    fsck.ext4 -fn "$dev" >"$WORK/fsck.txt" 2>&1 || { cat "$WORK/fsck.txt"; fail "fsck.ext4 found errors on $dev"; }
    # Drop every cached page so the checksums read the device again.
    echo 3 >/proc/sys/vm/drop_caches
    mount "$dev" "$mnt" || fail "remounting $dev failed"
    (cd "$mnt" && sha256sum --quiet -c "$WORK/ext4-sums.txt") || fail "files on $dev differ after a remount"
    umount "$mnt" || fail "final umount of $dev failed"
    log "ext4 on $dev: $files x $mib MiB written, fsck clean, checksums match after a remount"
}

# dmesg_mark: remember how many kernel log lines there are (see dmesg_since).
dmesg_mark() { DMESG_MARK=$(dmesg | wc -l); }

# dmesg_since: kernel log lines written since the last dmesg_mark (the whole
# log without one).
dmesg_since() { dmesg | tail -n +$((${DMESG_MARK:-0} + 1)) || true; }

# kept_buffers_check: fail the test if, since dmesg_mark, the kernel refused
# a free_kept_buf (it refuses one whose KEEP_BUF completion it has not seen
# yet, and the buffer and command id are then lost) or found a ring broken.
kept_buffers_check() {
    ! dmesg_since | grep -E 'free_kept_buf:|ring is broken' ||
        fail "the kernel refused a free_kept_buf or found the ring broken"
}

# dd_roundtrip DEV OFFSET_MIB: write 1 MiB of random data at OFFSET_MIB with
# O_DIRECT, read it back, compare; fails the test on any difference.
dd_roundtrip() {
    local dev=$1 off=$2
    dd if=/dev/urandom of="$WORK/rt.bin" bs=1M count=1 status=none
    dd if="$WORK/rt.bin" of="$dev" bs=1M seek="$off" count=1 oflag=direct status=none \
        || fail "dd write to $dev failed"
    dd if="$dev" bs=1M skip="$off" count=1 iflag=direct status=none | cmp -s - "$WORK/rt.bin" \
        || fail "data read back from $dev differs from what was written"
}

# ---------------------------------------------------------------------------
# The C peer (Debian's tcmu-runner with a handler_file.so built from the same
# source package; `cargo xtask bench` prepares it under target/bench/) and
# process accounting, for comparisons such as tests/vm/bench.sh.
#
# Environment: C_TCMU_BIN (the C daemon), C_TCMU_LIBDIR (holding its
# libtcmu.so.2), C_TCMU_HANDLERS (its --handler-path folder).

# PID of the C daemon c_daemon_start started, if running.
C_DAEMON_PID=

# etc_overlay: put a RAM overlay over /etc, so a test can write files there
# (the C daemon reads /etc/tcmu/tcmu.conf, and waits 5 s for it when it is
# missing) without touching the host's /etc. Undone by cleanup.
etc_overlay() {
    mountpoint -q /etc && return 0
    local d=/run/tcmu-test/etc-overlay
    mkdir -p "$d"
    mountpoint -q "$d" || mount -t tmpfs -o mode=755 tmpfs "$d" || fail "cannot mount a tmpfs on $d"
    mkdir -p "$d/upper" "$d/work"
    mount -t overlay overlay -o "lowerdir=/etc,upperdir=$d/upper,workdir=$d/work" /etc ||
        fail "cannot overlay /etc"
    push_cleanup "umount -l /etc; umount -l $d"
}

# c_daemon_start: start the C tcmu-runner (log in $LOGDIR/c/) with a
# tcmu.conf of log level 3 in the /etc overlay. Sets C_DAEMON_PID. It needs
# no D-Bus to serve I/O; wait for its devices with daemon_holds_uios. Not
# on the cleanup stack (LUNs must go while a daemon still answers): a test
# using it calls c_daemon_kill from its own EXIT trap after undo_all.
c_daemon_start() {
    [[ -x "${C_TCMU_BIN:-}" ]] || fail "C_TCMU_BIN='${C_TCMU_BIN:-}' is not an executable"
    [[ -d "${C_TCMU_HANDLERS:-}" ]] || fail "C_TCMU_HANDLERS='${C_TCMU_HANDLERS:-}' is not a folder"
    etc_overlay
    mkdir -p /etc/tcmu "$LOGDIR/c"
    [[ -f /etc/tcmu/tcmu.conf ]] || printf 'log_level = 3\n' >/etc/tcmu/tcmu.conf
    LD_LIBRARY_PATH=${C_TCMU_LIBDIR:-} "$C_TCMU_BIN" --handler-path "$C_TCMU_HANDLERS" \
        -l "$LOGDIR/c" >>"$LOGDIR/c/stdout.log" 2>&1 &
    C_DAEMON_PID=$!
    sleep 0.2
    if ! kill -0 "$C_DAEMON_PID" 2>/dev/null; then
        local rc=0
        wait "$C_DAEMON_PID" || rc=$?
        C_DAEMON_PID=
        tail -n 30 "$LOGDIR/c/stdout.log" "$LOGDIR/c/tcmu-runner.log" 2>/dev/null
        fail "the C tcmu-runner exited at once (status $rc)"
    fi
    # tcmu-runner blocks the kernel's netlink commands (module parameter
    # block_netlink) while it loads its handlers, and unblocks them once it
    # listens: an enable in between fails with EAGAIN. Ready = it holds a
    # generic netlink socket (opened after the block) and netlink is
    # unblocked again.
    local i
    for ((i = 0; i < 300; i++)); do
        if holds_genl_socket "$C_DAEMON_PID" &&
            grep -qx unblocked /sys/module/target_core_user/parameters/block_netlink; then
            log "C tcmu-runner started (pid $C_DAEMON_PID, ready after ~$((i / 10)) s)"
            return 0
        fi
        kill -0 "$C_DAEMON_PID" 2>/dev/null || break
        sleep 0.1
    done
    tail -n 30 "$LOGDIR/c/stdout.log" "$LOGDIR/c/tcmu-runner.log" 2>/dev/null
    fail "the C tcmu-runner (pid $C_DAEMON_PID) did not listen on netlink with netlink unblocked within 30 s"
}

# holds_genl_socket PID: process PID has a generic netlink socket open
# (its inode in /proc/net/netlink with protocol 16).
holds_genl_socket() {
    local link inodes=
    for link in /proc/"$1"/fd/*; do
        link=$(readlink "$link" 2>/dev/null) || continue
        [[ $link == socket:\[*\] ]] && inodes+=" ${link//[!0-9]/}"
    done
    [[ -n $inodes ]] || return 1
    awk -v ids="$inodes" 'BEGIN { n = split(ids, a); for (i = 1; i <= n; i++) want[a[i]] = 1 }
        NR > 1 && $2 == 16 && ($NF in want) { found = 1 } END { exit !found }' /proc/net/netlink
}

# c_daemon_stop: SIGTERM the C daemon and wait (20 s); fails the test if it
# does not exit, or exits non-zero.
c_daemon_stop() {
    [[ -n $C_DAEMON_PID ]] || return 0
    local pid=$C_DAEMON_PID
    C_DAEMON_PID=
    term_and_reap "$pid" "the C tcmu-runner"
    log "C tcmu-runner stopped"
}

# c_daemon_kill: kill -9 the C daemon, if running, and reap it.
c_daemon_kill() {
    [[ -n $C_DAEMON_PID ]] || return 0
    kill -KILL "$C_DAEMON_PID" 2>/dev/null || true
    wait "$C_DAEMON_PID" 2>/dev/null || true
    C_DAEMON_PID=
}

# daemon_holds_uios PID N: process PID has N or more /dev/uio* open (a TCMU
# daemon keeps each device's UIO node open while it serves it).
daemon_holds_uios() {
    local n
    n=$(find "/proc/$1/fd" -lname '/dev/uio*' 2>/dev/null | wc -l)
    ((n >= $2))
}

# proc_cpu_ticks PID: user + system CPU time of process PID (all its
# threads) in clock ticks (getconf CLK_TCK a second).
proc_cpu_ticks() {
    local stat
    stat=$(cat "/proc/$1/stat") || return 1
    # Fields after "(comm) ": state is 3, utime 14, stime 15.
    echo "${stat##*) }" | awk '{ print $12 + $13 }'
}

# proc_mem PID: "VmRSS RssAnon RssFile RssShmem" of process PID, in KiB.
proc_mem() {
    awk '$1 == "VmRSS:" { r = $2 } $1 == "RssAnon:" { a = $2 }
         $1 == "RssFile:" { f = $2 } $1 == "RssShmem:" { s = $2 }
         END { print r + 0, a + 0, f + 0, s + 0 }' "/proc/$1/status"
}

# loop_target: a tcm_loop target with its nexus and no LUN yet, for
# several LUNs behind one SCSI host (creating a target costs a host scan,
# seconds under TCG). Sets LOOP_TPG. Add LUNs with loop_add_lun.
loop_target() {
    local tpg
    tpg=$LOOP/$(naa_wwn)/tpgt_1
    mkdir -p "$tpg" || fail "cannot create tcm_loop target $tpg"
    push_cleanup "loop_untarget $tpg"
    echo "$(naa_wwn)" >"$tpg/nexus" || fail "cannot create the tcm_loop nexus"
    LOOP_TPG=$tpg
}

# loop_add_lun TPG N BACKSTORE_PATH: export a backstore as LUN N of a
# loop_target. Sets DEV (/dev/sdX), SG (/dev/sgN) and SCSI_ADDR (H:C:T:L).
loop_add_lun() {
    local tpg=$1 n=$2 bs=$3
    mkdir "$tpg/lun/lun_$n" || fail "cannot create lun_$n"
    push_cleanup "loop_remove_lun $tpg $n"
    ln -s "$bs" "$tpg/lun/lun_$n/$(basename "$bs")" || fail "cannot link $bs into lun_$n"
    SCSI_ADDR="$(cat "$tpg/address"):$n"
    local blockdir=/sys/class/scsi_device/$SCSI_ADDR/device/block
    local sgdir=/sys/class/scsi_device/$SCSI_ADDR/device/scsi_generic
    wait_for 30 "a disk at SCSI address $SCSI_ADDR" compgen -G "$blockdir/*"
    DEV=/dev/$(ls "$blockdir" | head -n1)
    wait_for 10 "$DEV" test -b "$DEV"
    wait_for 10 "the sg node of $SCSI_ADDR" compgen -G "$sgdir/*"
    SG=/dev/$(ls "$sgdir" | head -n1)
    log "exported $(basename "$bs") as $DEV ($SG, $SCSI_ADDR)"
}

# loop_remove_lun TPG N: undo loop_add_lun (before the backstore goes).
loop_remove_lun() {
    local l rc=0
    for l in "$1/lun/lun_$2"/*; do
        [[ -L $l ]] && { rm -f "$l" || rc=1; }
    done
    [[ -d $1/lun/lun_$2 ]] && { rmdir "$1/lun/lun_$2" || rc=1; }
    return $rc
}

# loop_untarget TPG: undo loop_target (and any LUN still in it).
loop_untarget() {
    local tpg=$1 rc=0 l
    [[ -d $tpg ]] || return 0
    for l in "$tpg"/lun/lun_*/*; do
        [[ -L $l ]] && { rm -f "$l" || rc=1; }
    done
    for l in "$tpg"/lun/lun_*; do
        [[ -d $l ]] && { rmdir "$l" || rc=1; }
    done
    rmdir "$tpg" || rc=1
    rmdir "$(dirname "$tpg")" || rc=1
    return $rc
}

# alua_group BACKSTORE GROUP ID STATE TRANS_SECS: an implicit-ALUA target
# port group of BACKSTORE (id ID, access state STATE: 0 AO, 1 ANO), as
# ceph-iscsi makes them, with implicit_trans_secs TRANS_SECS; removed by
# cleanup.
alua_group() {
    local bs=$1 group=$2
    mkdir "$bs/alua/$group" || fail "cannot create ALUA group $group of $(basename "$bs")"
    push_cleanup "rmdir $bs/alua/$group"
    echo "$3" >"$bs/alua/$group/tg_pt_gp_id"
    echo 1 >"$bs/alua/$group/alua_access_type"
    echo "$4" >"$bs/alua/$group/alua_access_state"
    echo "$5" >"$bs/alua/$group/implicit_trans_secs"
}

# rtpg_access_state DEV ID: the access state (e.g. "active/optimized") that
# REPORT TARGET PORT GROUPS through DEV (an sd or sg node) reports for
# group ID, from sg_rtpg's decoded answer; fails the test if RTPG fails.
rtpg_access_state() {
    local out
    out=$WORK/rtpg-$(basename "$1").txt
    sg_rtpg -d "$1" >"$out" 2>&1 || fail "RTPG through $1 failed: $(cat "$out")"
    grep -A1 "target port group id : 0x$2" "$out" | sed -n 's/.*access state : .*(\(.*\)).*/\1/p'
}

# sectors_read DEV: sectors read from DEV (/dev/sdX or sdX) so far.
sectors_read() { awk '{print $3}' "/sys/block/$(basename "$1")/stat"; }

# reads_on_both_paths MP DEV_A DEV_B: 8 s of fio_reads through the
# multipath device MP; fails unless both paths (disks DEV_A, DEV_B) were
# read. Sets READ_A and READ_B (sectors read from each).
reads_on_both_paths() {
    local a0 b0
    a0=$(sectors_read "$2")
    b0=$(sectors_read "$3")
    fio_reads reads "$1" 8
    READ_A=$(($(sectors_read "$2") - a0))
    READ_B=$(($(sectors_read "$3") - b0))
    ((READ_A > 0 && READ_B > 0)) || fail "reads did not go down both paths ($2: $READ_A, $3: $READ_B sectors)"
}

# fio_reads NAME DEV SECS: 4k random reads at iodepth 8 over DEV's first
# 64 MiB for SECS seconds ($WORK/NAME.json); fails the test on any error.
fio_reads() {
    fio --name="$1" --filename="$2" --ioengine=libaio --direct=1 --rw=randread \
        --bs=4k --iodepth=8 --size=64m --time_based --runtime="$3" --eta=never \
        --output-format=json --output="$WORK/$1.json" >"$WORK/$1.out" 2>&1 ||
        { tail "$WORK/$1.out"; fail "fio '$1' failed"; }
    assert_eq "$(fio_errors "$WORK/$1.json")" 0 "fio '$1' read errors"
}

# ---------------------------------------------------------------------------
# rbd: a throwaway Ceph cluster inside the guest (t-55-rbd)
#
# handlers/rbd/tests/ceph-cluster.sh starts one monitor and one memstore OSD
# on the guest's own 127.0.0.1 with every file under $WORK (guest RAM): about
# a minute under TCG. The handler's host tests start the same cluster.

CEPH_CLUSTER_SH=$REPO_DIR/handlers/rbd/tests/ceph-cluster.sh

# ceph_start [mgr]: start the cluster in $WORK/ceph (stopped by cleanup);
# with "mgr", a ceph-mgr too (the service map, and what tools that read it
# need). Sets CEPH_DIR and CEPH_CONF.
ceph_start() {
    local mgr=${1:-}
    CEPH_DIR=$WORK/ceph
    CEPH_CONF=$CEPH_DIR/ceph.conf
    push_cleanup "bash $CEPH_CLUSTER_SH stop $CEPH_DIR"
    # Before the stop: the cluster's logs go to the host with the daemon's.
    push_cleanup "cp -r $CEPH_DIR/log $LOGDIR/ceph"
    local start=$SECONDS
    # A short heartbeat grace lets tests use a short osd_op_timeout (the
    # handler keeps it above grace + interval). A single OSD is never
    # marked down by peers, so this does not make it flap under TCG.
    CEPH_TEST_HEARTBEAT_GRACE=4 CEPH_TEST_HEARTBEAT_INTERVAL=1 \
        bash "$CEPH_CLUSTER_SH" start "$CEPH_DIR" none $mgr >"$WORK/ceph-start.txt" 2>&1 || {
        cat "$WORK/ceph-start.txt"
        fail "cannot start the Ceph cluster"
    }
    log "Ceph cluster (mon + memstore osd${mgr:+ + mgr}) up in $((SECONDS - start))s"
}

# rbdc ARGS...: the rbd tool on the test cluster.
rbdc() { rbd -c "$CEPH_CONF" "$@"; }

# cephc ARGS...: the ceph tool on the test cluster.
cephc() { ceph -c "$CEPH_CONF" "$@"; }

# The HA tests' marker region: MARK_LEN bytes at MARK_OFF of the multipath
# device $MP and of the image.
# mark_write FILE: FILE over the marker region through $MP, giving up after
# $MARK_WRITE_SECS (default 120: a failover that never comes).
mark_write() {
    timeout "${MARK_WRITE_SECS:-120}" dd if="$1" of="$MP" bs="$MARK_LEN" \
        seek=$((MARK_OFF / MARK_LEN)) count=1 oflag=direct status=none
}

# image_mark IMAGE: the marker region as IMAGE holds it (rbd export).
image_mark() {
    rbdc export "$1" "$WORK/mark.export" >/dev/null 2>&1 || fail "rbd export of $1 failed"
    dd if="$WORK/mark.export" bs="$MARK_LEN" skip=$((MARK_OFF / MARK_LEN)) count=1 status=none
    rm -f "$WORK/mark.export"
}

# ceph_osd_pid: the OSD's PID.
ceph_osd_pid() { cat "$CEPH_DIR/run/osd.0.pid"; }

# --- Gluster (t-56-glfs, bench-glfs) ---

# gluster_start: glusterd with a working directory, run directory, socket
# and logs of its own under $WORK/gluster (G), bound to 127.0.0.1, and a
# started one-brick volume vol0 on ext4 over a loop device in guest RAM (a
# brick needs trusted.* extended attributes). Its host is HOST, a name from
# /etc/hosts that resolves to 127.0.0.1 (Gluster refuses 127.0.0.1 and
# localhost by string). Gluster's fixed folders (/var/lib/glusterd,
# /var/log/glusterfs) are covered by tmpfs: the guest's root is the
# host's. `gl ARGS` runs the gluster CLI against it. Stopped by cleanup.
gluster_start() {
    modprobe loop || fail "cannot load the loop module"
    G=$WORK/gluster
    mkdir -p "$G/work" "$G/run" "$G/log" "$G/brick"
    for d in /var/lib/glusterd /var/log/glusterfs; do
        mkdir -p "$d"
        mount -t tmpfs tmpfs "$d" || fail "cannot mount a tmpfs on $d"
        push_cleanup "umount -l $d"
    done

    # The brick: ext4 on a loop device over a file in guest RAM.
    truncate -s 768M "$G/brick.img"
    mkfs.ext4 -q -F "$G/brick.img" || fail "mkfs.ext4 of the brick's file system failed"
    mount -o loop "$G/brick.img" "$G/brick" || fail "cannot mount the brick's file system"
    push_cleanup "umount -l $G/brick"
    mkdir -p "$G/brick/b"

    HOST=$(awk '$1 == "127.0.0.1" && $2 != "localhost" { print $2; exit }' /etc/hosts)
    [[ -n $HOST ]] || fail "no name for 127.0.0.1 in /etc/hosts other than localhost"
    getent hosts "$HOST" | grep -q '^127\.' || fail "$HOST does not resolve to a loopback address"

    cat >"$G/glusterd.vol" <<VOL
volume management
    type mgmt/glusterd
    option working-directory $G/work
    option run-directory $G/run
    option glusterd-sockfile $G/run/glusterd.socket
    option transport-type socket
    option transport.socket.listen-port 24007
    option transport.socket.bind-address 127.0.0.1
    option ping-timeout 0
    option event-threads 1
end-volume
VOL

    glusterd -N -f "$G/glusterd.vol" -p "$G/run/glusterd.pid" -l "$G/log/glusterd.log" &
    GLUSTERD_PID=$!
    push_cleanup "stop_gluster"
    local start=$SECONDS
    wait_for 300 "glusterd to answer" gl volume list
    gl volume create vol0 "$HOST:$G/brick/b" >/dev/null || fail "gluster volume create failed"
    gl volume start vol0 >/dev/null || fail "gluster volume start failed"
    wait_for 120 "the brick online" bash -c "gluster --glusterd-sock=$G/run/glusterd.socket --mode=script volume status vol0 | grep -q ' Y '"
    log "glusterd and volume vol0 ($HOST:$G/brick/b) up in $((SECONDS - start)) s"
}

# gl ARGS: the gluster CLI against gluster_start's glusterd.
gl() { gluster --glusterd-sock="$G/run/glusterd.socket" --log-file="$G/log/cli.log" --mode=script "$@"; }

# stop_gluster: stop vol0's brick and glusterd (see gluster_start).
stop_gluster() {
    gl volume stop vol0 force >/dev/null 2>&1 || true
    local p
    for p in "$G"/run/vols/vol0/*.pid; do
        [[ -f $p ]] && kill "$(cat "$p")" 2>/dev/null
    done
    kill "$GLUSTERD_PID" 2>/dev/null || true
    wait "$GLUSTERD_PID" 2>/dev/null || true
}
