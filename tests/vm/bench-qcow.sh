#!/bin/bash
# bench-qcow.sh — `cargo xtask bench --qcow`: our qcow handler against
# Debian's C tcmu-runner with its handler_qcow.so, on the same qcow2 image,
# in one boot. Not part of the test suite.
#
# Two kinds of storage under the image, one after the other:
#
# - memory: a 256 MiB qcow2 image on tmpfs (64 KiB clusters, every
#   cluster allocated: made by `qemu-img convert` from random data, so
#   reads reach the image and not the unallocated-cluster shortcut).
#   Every read and write is a copy to or from the page cache: this
#   measures the handlers' own cost per command. The kernel's own fileio
#   backstore runs the same jobs on a raw copy of the data in the same
#   tmpfs (backend "fileio"): the ceiling of any user backstore here, as
#   it does the same file I/O without the ring or a daemon.
# - a disk with latency, once per LATENCIES_US entry: a 512 MiB image
#   made the same way, on ext4 over a memory-backed null_blk device that
#   completes every request after that many microseconds (hrtimer), the
#   page cache emptied before each run and every second during it, so
#   reads go to the "disk" as they do on a real one (the file system and
#   both handlers keep their metadata in memory all the same). This is
#   where the handlers' concurrency shows: the C handler_qcow runs one
#   command at a time on one thread (nr_threads = 1), ours up to the
#   queue depth.
#
# The image is served as user_1/q0 (memory) or user_1/q1 (disk) by
# whichever daemon runs: the daemons take turns, each attaching to the
# device when it starts. The fio jobs (libaio, direct) run back to back on
# both in each round, the daemon already running first (one switch per
# job). Each run records IOPS and the daemon's CPU time. After each kind
# of storage `qemu-img check` must find the image clean: both handlers
# wrote it.
#
# Output in $XT_OUT/bench-qcow/: fio JSON reports, bench.tsv (see
# bench-lib.sh) and summary.txt (medians, ratios to C). Jobs on a disk
# with latency are named JOB@<µs>us.
#
# Environment: BENCH_RUNTIME (seconds per fio run, default 10),
# BENCH_ROUNDS (default 2), BENCH_QCOW_LATENCIES_US (default "100 1000";
# empty: memory only), C_TCMU_BIN, C_TCMU_LIBDIR, C_TCMU_HANDLERS (see
# lib.sh), TCMU_RUNNER.

TEST_NAME=bench-qcow
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/bench-lib.sh"

MIB=$((1024 * 1024))
LATENCIES_US=${BENCH_QCOW_LATENCIES_US-100 1000}
# NAME|fio options
JOBS=(
    "randread-4k-qd32|--rw=randread --bs=4k --iodepth=32 --norandommap"
    "randwrite-4k-qd32|--rw=randwrite --bs=4k --iodepth=32 --norandommap"
    "read-128k-qd16|--rw=read --bs=128k --iodepth=16"
    "write-128k-qd16|--rw=write --bs=128k --iodepth=16"
)
# On a disk with latency: the 4k jobs.
DISK_JOBS=("${JOBS[@]:0:2}")
DISK_MNT=$WORK/disk
DROPPER=

bench_qcow_exit() {
    local rc=$?
    stop_dropping
    # The LUN goes first, while a daemon still answers; then whatever runs.
    undo_all
    c_daemon_kill
    umount -l "$DISK_MNT" 2>/dev/null || true
    modprobe -r null_blk 2>/dev/null || true
    umount -l "$WORK/img" 2>/dev/null || true
    (exit "$rc")
    cleanup
}
trap bench_qcow_exit EXIT

# make_image PATH MIB: a qcow2 image of MIB MiB at PATH, every cluster
# allocated with random data (the raw data passes through tmpfs).
make_image() {
    head -c $(($2 * MIB)) /dev/urandom >"$WORK/img/data.raw" || fail "cannot make the random data"
    qemu-img convert -q -f raw -O qcow2 -o cluster_size=65536 "$WORK/img/data.raw" "$1" ||
        fail "qemu-img convert failed"
    rm -f "$WORK/img/data.raw"
    log "image: $(qemu-img info "$1" | grep -E 'disk size|cluster_size' | tr '\n' ' ')"
}

# start_dropping / stop_dropping: write back and empty the page cache,
# then keep emptying it (its clean pages) every second, in the background,
# while a run on the disk goes.
start_dropping() {
    sync
    echo 3 >/proc/sys/vm/drop_caches
    (while sleep 1; do echo 1 >/proc/sys/vm/drop_caches; done) &
    DROPPER=$!
}
stop_dropping() {
    [[ -n $DROPPER ]] || return 0
    kill "$DROPPER" 2>/dev/null || true
    wait "$DROPPER" 2>/dev/null || true
    DROPPER=
}

# run_rounds SUFFIX COLD JOB_SPEC...: ROUNDS rounds of the jobs on $DEV,
# each job on both daemons, the one running first, then on $FILEIO_DEV if
# set; job names get SUFFIX. COLD=1: the page cache emptied before and
# during every run.
run_rounds() {
    local suffix=$1 cold=$2 round spec job opts b order
    shift 2
    for ((round = 1; round <= ROUNDS; round++)); do
        for spec in "$@"; do
            job=${spec%%|*}$suffix opts=${spec#*|}
            if [[ $SERVING == ours ]]; then order=(ours c); else order=(c ours); fi
            for b in "${order[@]}"; do
                use_daemon "$b"
                ((cold == 0)) || start_dropping
                # shellcheck disable=SC2086
                bench_fio "$job" "$b" "$round" "$SERVING_PID" --filename="$DEV" --ioengine=libaio --direct=1 \
                    $opts
                stop_dropping
            done
            if [[ -n $FILEIO_DEV ]]; then
                # shellcheck disable=SC2086
                bench_fio "$job" fileio "$round" - --filename="$FILEIO_DEV" --ioengine=libaio \
                    --direct=1 $opts
            fi
        done
    done
}
FILEIO_DEV=

# check_image PATH: with our daemon serving, remove the LUN and the
# backstore, then `qemu-img check` the image both handlers wrote.
check_image() {
    use_daemon ours
    undo_all
    SERVED=0
    qemu-img check -q "$1" >"$OUT/check.txt" 2>&1 ||
        { cat "$OUT/check.txt"; fail "qemu-img check: $1 is not clean after the runs"; }
    log "qemu-img check: $1 clean"
}

load_modules
mkdir -p "$WORK/img" "$DISK_MNT"
# Unmounted by the EXIT trap.
mountpoint -q "$WORK/img" || mount -t tmpfs -o size=800m tmpfs "$WORK/img" || fail "cannot mount a tmpfs for the image"

# Memory.
IMG=$WORK/img/bench.qcow2
make_image "$IMG" 256
qemu-img convert -q -f qcow2 -O raw "$IMG" "$WORK/img/bench.raw" || fail "qemu-img convert (raw) failed"
fileio_backstore f0 $((256 * MIB)) "$WORK/img/bench.raw"
loop_export "$BS_PATH"
FILEIO_DEV=$DEV
use_daemon ours
user_backstore q0 $((256 * MIB)) "qcow/$IMG" || fail "enabling user:qcow q0 failed"
loop_export "$BS_PATH"
SERVED=1
run_rounds "" 0 "${JOBS[@]}"
FILEIO_DEV=
check_image "$IMG"
rm -f "$IMG" "$WORK/img/bench.raw"

# Disks with latency.
for us in $LATENCIES_US; do
    modprobe null_blk nr_devices=1 queue_mode=2 irqmode=2 completion_nsec=$((us * 1000)) \
        memory_backed=1 gb=1 bs=4096 || fail "modprobe null_blk failed"
    wait_for 10 "/dev/nullb0" test -b /dev/nullb0
    mkfs.ext4 -q -F /dev/nullb0 || fail "mkfs.ext4 on /dev/nullb0 failed"
    mount /dev/nullb0 "$DISK_MNT" || fail "cannot mount /dev/nullb0"
    IMG=$DISK_MNT/bench.qcow2
    make_image "$IMG" 512
    sync
    log "disk: null_blk completing each request after ${us} µs, ext4"
    use_daemon ours
    user_backstore q1 $((512 * MIB)) "qcow/$IMG" || fail "enabling user:qcow q1 failed"
    loop_export "$BS_PATH"
    SERVED=1
    run_rounds "@${us}us" 1 "${DISK_JOBS[@]}"
    check_image "$IMG"
    umount "$DISK_MNT" || fail "cannot unmount $DISK_MNT"
    modprobe -r null_blk || fail "cannot unload null_blk"
done
daemon_stop
SERVING=none

bench_summary c fileio
log "done"
