#!/bin/bash
# bench-qcow.sh — `cargo xtask bench --qcow`: our qcow handler against
# Debian's C tcmu-runner with its handler_qcow.so, on the same qcow2 image,
# in one boot. Not part of the test suite.
#
# One 256 MiB qcow2 image on tmpfs (64 KiB clusters, every cluster
# allocated: made by `qemu-img convert` from random data, so reads reach
# the image and not the unallocated-cluster shortcut), served as user_1/q0
# by whichever daemon runs: the daemons take turns, each attaching to the
# device when it starts. The fio jobs (libaio, direct) run back to back on
# both in each round, the daemon already running first (one switch per
# job). Each run records IOPS and the daemon's CPU time. At the end
# `qemu-img check` must find the image clean: both handlers wrote it.
#
# Output in $XT_OUT/bench-qcow/: fio JSON reports, bench.tsv (see
# bench-lib.sh) and summary.txt (medians, ratios to C).
#
# Environment: BENCH_RUNTIME (seconds per fio run, default 10),
# BENCH_ROUNDS (default 2), C_TCMU_BIN, C_TCMU_LIBDIR, C_TCMU_HANDLERS (see
# lib.sh), TCMU_RUNNER.

TEST_NAME=bench-qcow
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/bench-lib.sh"

MIB=$((1024 * 1024))
# NAME|fio options
JOBS=(
    "randread-4k-qd32|--rw=randread --bs=4k --iodepth=32 --norandommap"
    "randwrite-4k-qd32|--rw=randwrite --bs=4k --iodepth=32 --norandommap"
    "read-128k-qd16|--rw=read --bs=128k --iodepth=16"
    "write-128k-qd16|--rw=write --bs=128k --iodepth=16"
)

bench_qcow_exit() {
    local rc=$?
    # The LUN goes first, while a daemon still answers; then whatever runs.
    undo_all
    c_daemon_kill
    umount -l "$WORK/img" 2>/dev/null
    (exit "$rc")
    cleanup
}
trap bench_qcow_exit EXIT

load_modules
mkdir -p "$WORK/img"
# Unmounted by the EXIT trap, after the final qemu-img check.
mountpoint -q "$WORK/img" || mount -t tmpfs -o size=700m tmpfs "$WORK/img" || fail "cannot mount a tmpfs for the image"
IMG=$WORK/img/bench.qcow2
head -c $((256 * MIB)) /dev/urandom >"$WORK/img/data.raw" || fail "cannot make the random data"
qemu-img convert -q -f raw -O qcow2 -o cluster_size=65536 "$WORK/img/data.raw" "$IMG" ||
    fail "qemu-img convert failed"
rm -f "$WORK/img/data.raw"
log "image: $(qemu-img info "$IMG" | grep -E 'disk size|cluster_size' | tr '\n' ' ')"

daemon_start
user_backstore q0 $((256 * MIB)) "qcow/$IMG" || fail "enabling user:qcow q0 failed"
loop_export "$BS_PATH"
current=ours

for ((round = 1; round <= ROUNDS; round++)); do
    for spec in "${JOBS[@]}"; do
        job=${spec%%|*} opts=${spec#*|}
        if [[ $current == ours ]]; then order=(ours c); else order=(c ours); fi
        for b in "${order[@]}"; do
            if [[ $b != "$current" ]]; then
                if [[ $b == ours ]]; then
                    c_daemon_stop
                    daemon_start
                    wait_for 60 "our daemon serving q0" daemon_holds_uios "$DAEMON_PID" 1
                else
                    daemon_stop
                    c_daemon_start
                    wait_for 60 "the C daemon serving q0" daemon_holds_uios "$C_DAEMON_PID" 1
                fi
                current=$b
            fi
            if [[ $b == ours ]]; then pid=$DAEMON_PID; else pid=$C_DAEMON_PID; fi
            # shellcheck disable=SC2086
            bench_fio "$job" "$b" "$round" "$pid" --filename="$DEV" --ioengine=libaio --direct=1 \
                --size=256m $opts
        done
    done
done
if [[ $current == c ]]; then
    c_daemon_stop
    daemon_start
    wait_for 60 "our daemon serving q0" daemon_holds_uios "$DAEMON_PID" 1
fi
undo_all
daemon_stop
qemu-img check -q "$IMG" >"$OUT/check.txt" 2>&1 || { cat "$OUT/check.txt"; fail "qemu-img check: the image is not clean after the runs"; }

bench_summary c
log "done"
