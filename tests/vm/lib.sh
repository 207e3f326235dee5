#!/bin/bash
# lib.sh — helpers shared by the guest-side tests (tests/vm/t-*.sh, demo.sh).
#
# Runs inside the test VM booted by `cargo xtask vm-test`: the host's root
# filesystem is the guest's root (read-write!), so every file a test makes
# lives under $WORK, in /run (guest RAM).
#
# Environment (from the guest env file written by xtask, see xtask/src/vm):
#   TCMU_RUNNER   path of our daemon binary (target/release/tcmu-runner)
#   FIO_RUNTIME   seconds per fio run (default 60)
#   XT_OUT        host folder for results; daemon logs are copied there
#   TCMU_DEBUG    non-empty: start the daemon with -d
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
# down its devices before stopping the daemon cleanly).
undo_all() {
    local i
    for ((i = ${#CLEANUP_STACK[@]} - 1; i >= 0; i--)); do
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
# "file//run/x.img") and enable it. Sets BS_PATH. Returns enable's status
# (non-zero on failure, 124 when it did not return within TIMEOUT, default
# 20 s); it does not fail the test itself.
user_backstore() {
    local name=$1 size=$2 cfg=$3 secs=${4:-20}
    BS_PATH=$CFG/core/user_1/$name
    mkdir -p "$BS_PATH" || fail "mkdir $BS_PATH failed"
    push_cleanup "rmdir_timeout $BS_PATH"
    echo "dev_size=$size" >"$BS_PATH/control" || fail "cannot set dev_size of $name"
    echo "dev_config=$cfg" >"$BS_PATH/control" || fail "cannot set dev_config of $name"
    set_serial "$BS_PATH"
    write_timeout "$secs" "$BS_PATH/enable" 1
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
    wait_for 30 "a disk at SCSI address $SCSI_ADDR" test -n "$(ls "$blockdir" 2>/dev/null)"
    DEV=/dev/$(ls "$blockdir" | head -n1)
    wait_for 10 "$DEV" test -b "$DEV"
    local sgdir=/sys/class/scsi_device/$SCSI_ADDR/device/scsi_generic
    wait_for 10 "the sg node of $SCSI_ADDR" test -n "$(ls "$sgdir" 2>/dev/null)"
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
    for n in "$CFG"/core/*_*/*/; do
        [[ -f ${n}enable ]] && rmdir_timeout "${n%/}" 10
    done
    return 0
}

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
    "$TCMU_RUNNER" "${debug[@]}" -l "$LOGDIR" "$@" >>"$LOGDIR/stdout.log" 2>&1 &
    DAEMON_PID=$!
    local deadline=$((SECONDS + 30))
    while :; do
        if [[ -f $logf ]]; then
            local size
            size=$(stat -c %s "$logf")
            ((size >= before)) || before=0 # the daemon truncated its log
            tail -c +$((before + 1)) "$logf" | grep -q 'tcmu-runner ready' && break
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
    kill -TERM "$DAEMON_PID" 2>/dev/null || true
    local deadline=$((SECONDS + 20))
    while kill -0 "$DAEMON_PID" 2>/dev/null; do
        if ((SECONDS >= deadline)); then
            daemon_kill9
            fail "the daemon did not exit within 20s of SIGTERM"
        fi
        sleep 0.1
    done
    local rc=0
    wait "$DAEMON_PID" || rc=$?
    DAEMON_PID=
    [[ $rc -eq 0 ]] || fail "the daemon exited with status $rc after SIGTERM"
    log "daemon stopped"
}

# daemon_kill9: kill -9 the daemon (crash simulation) and reap it.
daemon_kill9() {
    [[ -n $DAEMON_PID ]] || return 0
    kill -KILL "$DAEMON_PID" 2>/dev/null || true
    wait "$DAEMON_PID" 2>/dev/null || true
    DAEMON_PID=
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

# fio_errors JSON_FILE: total error count over all jobs of a fio JSON report.
fio_errors() {
    grep -Eo '"(total_err|error)" *: *[0-9]+' "$1" | awk -F: '{s += $2} END {print s + 0}'
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
        awk -F: '{s += $2} END {print s + 0}')
    ((verified > 0)) || fail "fio '$name' verified no data"
    log "fio '$name' finished: no errors, $((verified / 1048576)) MiB verified"
}

# log_mark: remember the daemon log's current size (see log_since).
log_mark() {
    LOG_MARK=0
    [[ -f $LOGDIR/tcmu-runner.log ]] && LOG_MARK=$(stat -c %s "$LOGDIR/tcmu-runner.log")
    return 0
}

# log_since: the daemon log lines written since the last log_mark.
log_since() {
    tail -c +$((LOG_MARK + 1)) "$LOGDIR/tcmu-runner.log" 2>/dev/null
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
