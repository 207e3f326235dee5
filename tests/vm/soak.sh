#!/bin/bash
# soak.sh — not in the suite: `cargo xtask soak [--minutes N]`.
#
# Mixed fio on 4 user:file LUNs for SOAK_MINUTES (default 10):
#   s0 4k randwrite + crc32c verify, s1 64k randwrite + verify,
#   s2 4k randrw 70/30, s3 128k sequential write + verify
# (each a loop of 30 s fio runs), while every SOAK_EVENT_SECS (15) one
# event happens, in turn: kill -9 + restart, takeover (--takeover),
# resize of s3 (attrib/dev_size +1 MiB, RECONFIG_DEVICE), kill -9 +
# restart, remove or re-add the spare LUN s4, SIGTERM + restart.
#
# At the end the fio loops stop and every run is checked, the disks are
# compared with their files, the kernel log is searched for hung tasks
# and I/O errors. The summary (rounds of each kind, fio runs and errors,
# verify errors, "blocked for more than" count, longest recovery pause
# and takeover pause, PASS/FAIL with the reason) is printed and written to
# $XT_OUT/soak/summary.txt (xtask copies it to target/soak/). Exits
# non-zero on failure.

TEST_NAME=soak
source "$(dirname "$0")/lib.sh"
source "$REPO_DIR/tests/vm/restart-lib.sh"

MINUTES=${SOAK_MINUTES:-10}
EVENT_SECS=${SOAK_EVENT_SECS:-15}
SUMMARY_DIR=${XT_OUT:-$WORK}/soak
mkdir -p "$SUMMARY_DIR"
SUMMARY=$SUMMARY_DIR/summary.txt
rm -f "$SUMMARY"

declare -A ROUNDS=([kill9]=0 [takeover]=0 [resize]=0 [spare]=0 [term]=0)
MAX_RECOVERY_MS=0
MAX_TAKEOVER_MS=0
FIO_RUNS=0
FIO_CLAT_MS=0
FIO_ERRS=0
VERIFY_ERRS=0
HUNG=0
SOAK_START=$SECONDS

# write_summary RESULT [REASON]
write_summary() {
    {
        echo "soak: $1${2:+ ($2)}"
        echo "duration_s=$((SECONDS - SOAK_START)) minutes_asked=$MINUTES event_every_s=$EVENT_SECS"
        echo "rounds: kill9=${ROUNDS[kill9]} sigterm=${ROUNDS[term]} takeover=${ROUNDS[takeover]} resize=${ROUNDS[resize]} spare_remove_readd=${ROUNDS[spare]}"
        echo "fio_runs=$FIO_RUNS fio_errors=$FIO_ERRS verify_errors=$VERIFY_ERRS"
        echo "blocked_for_more_than=$HUNG"
        echo "max_recovery_pause_ms=$MAX_RECOVERY_MS (kill -9 / SIGTERM to the new daemon's ready)"
        echo "max_fio_completion_ms=$FIO_CLAT_MS (longest any I/O waited, over all runs)"
        echo "max_takeover_pause_ms=$MAX_TAKEOVER_MS (old daemon blocks to new daemon ready)"
    } >"$SUMMARY"
    cat "$SUMMARY"
}

# A failure anywhere still leaves a summary.
fail() {
    echo "FAIL $TEST_NAME: $*"
    HUNG=$(dmesg_since 2>/dev/null | grep -c 'blocked for more than' || true)
    write_summary FAIL "$*"
    exit 1
}

runner_to_ram
load_modules
daemon_start

size=$((64 * 1024 * 1024))
loop_target
TPG=$LOOP_TPG
NAMES=(s0 s1 s2 s3)
DEVS=()
for i in 0 1 2 3; do
    user_file_backstore "${NAMES[i]}" "$size" "$WORK/${NAMES[i]}.img"
    loop_add_lun "$TPG" "$i" "$BS_PATH"
    DEVS+=("$DEV")
done
S3_BS=$CFG/core/user_1/s3
S3_ADDR="$(cat "$TPG/address"):3"
S3_SIZE=$size
SPARE_BS=$CFG/core/user_1/s4
DISKS=()
for d in "${DEVS[@]}"; do DISKS+=("$(disk_name "$d")"); done

dmesg_mark
fio_loop_bg s0 "${DEVS[0]}" 30
PIDS=($FIO_PID)
fio_loop_bg s1 "${DEVS[1]}" 30 --bs=64k --iodepth=8
PIDS+=($FIO_PID)
fio_loop_bg s2 "${DEVS[2]}" 30 --rw=randrw --rwmixread=70 --verify=0 --do_verify=0
PIDS+=($FIO_PID)
fio_loop_bg s3 "${DEVS[3]}" 30 --rw=write --bs=128k --iodepth=4
PIDS+=($FIO_PID)
log "fio on ${DEVS[*]} for $MINUTES minute(s); an event every ${EVENT_SECS}s"

# restart KIND: kill -9 or SIGTERM the daemon and start a new one; the
# recovery is the time from the kill to the new daemon's "ready" (from its
# log); the disks must serve I/O again within 30 s. (Timing the disks'
# progress instead measures fio: a run that ends or starts around a kill
# leaves its disk idle for seconds under TCG; fio's own longest completion
# is in the summary.)
restart() {
    local t0 ms old=$DAEMON_PID rc=0 ready
    log_mark
    DAEMON_PID=
    t0=${EPOCHREALTIME/./}
    if [[ $1 == kill9 ]]; then
        { kill -KILL "$old"; wait "$old"; } 2>/dev/null || true
    else
        kill -TERM "$old"
        wait "$old" || rc=$?
        [[ $rc -eq 0 ]] || fail "$1: the daemon exited with status $rc after SIGTERM"
    fi
    io_snapshot "${DISKS[@]}"
    daemon_launch
    wait_io_moved 30
    ready=$(daemon_ready_since_mark)
    ms=$((($(log_line_us "$ready") - t0) / 1000))
    ((ms > MAX_RECOVERY_MS)) && MAX_RECOVERY_MS=$ms
    log "$1: new daemon ready ${ms} ms after the kill; every disk served again"
}

takeover() {
    local old=$DAEMON_PID rc=0 blocked ready ms
    log_mark
    daemon_start --takeover
    wait "$old" || rc=$?
    [[ $rc -eq 0 ]] || fail "takeover: the old daemon exited with status $rc"
    blocked=$(log_since | grep -E 'hand-over: [0-9]+ device\(s\) blocked' | tail -n 1)
    ready=$(log_since | grep -E 'tcmu-runner ready' | tail -n 1)
    [[ -n $blocked && -n $ready ]] || fail "takeover: hand-over or ready line missing from the log"
    ms=$((($(log_line_us "$ready") - $(log_line_us "$blocked")) / 1000))
    ((ms > MAX_TAKEOVER_MS)) && MAX_TAKEOVER_MS=$ms
    log "takeover: pid $old -> $DAEMON_PID, paused ${ms} ms"
}

resize() {
    S3_SIZE=$((S3_SIZE + (1 << 20)))
    write_timeout 20 "$S3_BS/attrib/dev_size" "$S3_SIZE" || fail "resize of s3 to $S3_SIZE failed"
    echo 1 >"/sys/class/scsi_device/$S3_ADDR/device/rescan"
    wait_for 20 "the new capacity of ${DEVS[3]}" dev_size_is "${DEVS[3]}" "$S3_SIZE"
    log "resize: s3 is now $S3_SIZE bytes"
}

SPARE_UP=0
spare() {
    if ((SPARE_UP)); then
        loop_remove_lun "$TPG" 4 || fail "cannot unexport the spare"
        rmdir_timeout "$SPARE_BS" 20 || fail "rmdir of the spare failed or hung"
        SPARE_UP=0
        log "spare: removed"
    else
        user_file_backstore s4 "$size" "$WORK/s4.img"
        loop_add_lun "$TPG" 4 "$BS_PATH"
        dd_roundtrip "$DEV" $((RANDOM % 60))
        SPARE_UP=1
        log "spare: added and checked as $DEV"
    fi
}

EVENTS=(kill9 takeover resize kill9 spare term)
deadline=$((SECONDS + MINUTES * 60))
n=0
while ((SECONDS + EVENT_SECS <= deadline)); do
    nap "$EVENT_SECS"
    for p in "${PIDS[@]}"; do
        kill -0 "$p" 2>/dev/null || fail "a fio loop stopped (an error?) before event $((n + 1))"
    done
    kind=${EVENTS[n % ${#EVENTS[@]}]}
    n=$((n + 1))
    case $kind in
        kill9 | term) restart "$kind" ;;
        takeover) takeover ;;
        resize) resize ;;
        spare) spare ;;
    esac
    ROUNDS[$kind]=$((ROUNDS[$kind] + 1))
done

log "stopping fio"
for i in 0 1 2 3; do
    name=${NAMES[i]}
    touch "$WORK/$name.stop"
done
for i in 0 1 2 3; do
    wait "${PIDS[i]}" || true
done
for i in 0 1 2 3; do
    name=${NAMES[i]}
    for f in "$WORK/$name".*.json; do
        [[ -e $f ]] || continue
        FIO_RUNS=$((FIO_RUNS + 1))
        FIO_ERRS=$((FIO_ERRS + $(fio_errors "$f")))
        clat=$(fio_clat_max_ms "$f")
        ((clat > FIO_CLAT_MS)) && FIO_CLAT_MS=$clat
        [[ $(cat "${f%.json}.rc" 2>/dev/null) == 0 ]] || FIO_ERRS=$((FIO_ERRS + 1))
        VERIFY_ERRS=$((VERIFY_ERRS + $(grep -Eci 'verify.*(fail|bad)|bad magic' "${f%.json}.out" || true)))
    done
done
dmesg_since >"$WORK/soak.dmesg.txt"
HUNG=$(grep -c 'blocked for more than' "$WORK/soak.dmesg.txt" || true)
cp "$WORK/soak.dmesg.txt" "$SUMMARY_DIR/dmesg.txt" 2>/dev/null || true
((FIO_ERRS == 0)) || fail "fio reported $FIO_ERRS error(s)"
((VERIFY_ERRS == 0)) || fail "fio reported $VERIFY_ERRS verify error(s)"
((HUNG == 0)) || fail "$HUNG hung-task report(s) in the kernel log"
dmesg_check "$WORK/soak.dmesg.txt" "${DISKS[@]}"
daemon_alive || fail "the daemon died"
echo 3 >/proc/sys/vm/drop_caches
for i in 0 1 2 3; do
    cmp "${DEVS[i]}" "$WORK/${NAMES[i]}.img" || fail "${DEVS[i]} differs from its backing file"
done
write_summary PASS

undo_all
daemon_stop
