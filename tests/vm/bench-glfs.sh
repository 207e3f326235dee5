#!/bin/bash
# bench-glfs.sh — `cargo xtask bench --glfs`: our user:glfs LUN against
# fio's own gfapi engine on the same volume and file, in one boot. Not
# part of the test suite.
#
# glusterd and a one-brick volume in the guest (gluster_start, as
# t-56-glfs), one 256 MiB file of the volume (bench.img, made by our
# handler with the device's size), and the same fio jobs through:
#   ours   our daemon's user:glfs LUN (tcm_loop; libaio, direct)
#   fio    fio's gfapi_async engine: libgfapi in fio's process, no SCSI at
#          all (the limit for any gateway)
# Rounds alternate the order. Each run records IOPS and the serving
# process's CPU time (our daemon, or fio itself for the gfapi engine).
#
# Output in $XT_OUT/bench-glfs/: fio JSON reports, bench.tsv (see
# bench-lib.sh) and summary.txt (medians, ratios to fio-gfapi).
#
# Environment: BENCH_RUNTIME (seconds per fio run, default 10),
# BENCH_ROUNDS (default 2), TCMU_RUNNER.

TEST_NAME=bench-glfs
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/bench-lib.sh"

MIB=$((1024 * 1024))
# NAME|fio options
JOBS=(
    "randwrite-4k-qd32|--rw=randwrite --bs=4k --iodepth=32 --norandommap"
    "randread-4k-qd32|--rw=randread --bs=4k --iodepth=32 --norandommap"
    "write-128k-qd16|--rw=write --bs=128k --iodepth=16"
)

load_modules
gluster_start
daemon_start
user_backstore g0 $((256 * MIB)) "glfs/vol0@$HOST/bench.img" 60 || fail "enabling user:glfs g0 failed"
loop_export "$BS_PATH"

for ((round = 1; round <= ROUNDS; round++)); do
    if ((round % 2)); then order=(ours fio); else order=(fio ours); fi
    for spec in "${JOBS[@]}"; do
        for b in "${order[@]}"; do
            if [[ $b == ours ]]; then
                pid=$DAEMON_PID target=(--filename="$DEV" --ioengine=libaio --direct=1)
            else
                pid= target=(--ioengine=gfapi_async --volume=vol0 --brick="$HOST" --filename=bench.img)
            fi
            # shellcheck disable=SC2086
            bench_fio "${spec%%|*}" "$b" "$round" "$pid" "${target[@]}" --size=256m ${spec#*|}
        done
    done
done

bench_summary fio
undo_all
daemon_stop
log "done"
