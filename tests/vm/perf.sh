#!/bin/bash
# perf.sh — a quick figure: fio 4k random reads and writes at queue depth 32
# against our user:file LUN and the kernel's own fileio backstore, both on
# the same tmpfs file, in the same boot. Runs alternate (ours, fileio, ours,
# fileio, …) for PERF_ROUNDS rounds so drift of the (TCG) machine hits both
# alike; the median of each is reported. Not part of the test suite (only
# the ratio means anything under TCG); run it with
#   cargo xtask vm-run tests/vm/perf.sh
source "$(dirname "$0")/lib.sh"

RUNTIME=${PERF_RUNTIME:-10}
ROUNDS=${PERF_ROUNDS:-3}
SIZE=$((256 * 1024 * 1024))
FILE=$WORK/perf.img
load_modules
# Fill the file so reads hit real pages.
dd if=/dev/urandom of="$FILE" bs=1M count=256 status=none

# iops RW DEV: IOPS of a 4k, iodepth-32 fio run of kind RW on DEV.
iops() {
    fio --name=perf --filename="$2" --rw="$1" --bs=4k --iodepth=32 \
        --ioengine=libaio --direct=1 --time_based --runtime="$RUNTIME" \
        --numjobs=1 --output-format=terse --terse-version=3 --group_reporting |
        awk -F';' -v rw="$1" '{ print (rw == "randread") ? $8 : $49 }'
}

# median N...: the median of the numbers.
median() { printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

daemon_start
user_file_backstore perfu "$SIZE" "$FILE"
loop_export "$BS_PATH"
U_DEV=$DEV
fileio_backstore perfk "$SIZE" "$FILE"
loop_export "$BS_PATH"
K_DEV=$DEV

declare -A RES
for ((r = 1; r <= ROUNDS; r++)); do
    for rw in randread randwrite; do
        RES[u_$rw]+="$(iops "$rw" "$U_DEV") "
        RES[k_$rw]+="$(iops "$rw" "$K_DEV") "
    done
    log "round $r: user:file ${RES[u_randread]}/ ${RES[u_randwrite]}; fileio ${RES[k_randread]}/ ${RES[k_randwrite]}"
done
undo_all
daemon_stop

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
echo "PERF 4k iodepth=32, ${ROUNDS} alternating rounds of ${RUNTIME}s, 256 MiB tmpfs file, same boot (medians)"
for rw in randread randwrite; do
    # shellcheck disable=SC2086 # word splitting intended: lists of numbers
    u=$(median ${RES[u_$rw]})
    # shellcheck disable=SC2086
    k=$(median ${RES[k_$rw]})
    echo "PERF $rw user:file $u IOPS, fileio $k IOPS, ratio $(ratio "$u" "$k") (runs: ours ${RES[u_$rw]}; fileio ${RES[k_$rw]})"
done
