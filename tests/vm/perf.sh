#!/bin/bash
# perf.sh — one quick figure: fio 4k random reads and writes at queue depth
# 32 against our user:file LUN and against the kernel's own fileio backstore
# on the same tmpfs file, in the same boot. Not part of the test suite (the
# numbers are TCG-slow and only meaningful as a ratio); run it with
#   cargo xtask vm-run tests/vm/perf.sh
source "$(dirname "$0")/lib.sh"

RUNTIME=${PERF_RUNTIME:-20}
SIZE=$((256 * 1024 * 1024))
FILE=$WORK/perf.img
load_modules
truncate -s "$SIZE" "$FILE"
# Fill the file so reads hit real pages.
dd if=/dev/urandom of="$FILE" bs=1M count=256 status=none

# iops RW DEV: IOPS of a 4k, iodepth-32 fio run of kind RW on DEV.
iops() {
    fio --name=perf --filename="$2" --rw="$1" --bs=4k --iodepth=32 \
        --ioengine=libaio --direct=1 --time_based --runtime="$RUNTIME" \
        --numjobs=1 --output-format=terse --terse-version=3 --group_reporting |
        awk -F';' -v rw="$1" '{ print (rw == "randread") ? $8 : $49 }'
}

daemon_start
user_file_backstore perfu "$SIZE" "$FILE"
loop_export "$BS_PATH"
U_R=$(iops randread "$DEV")
U_W=$(iops randwrite "$DEV")
undo_all
daemon_stop

fileio_backstore perfk "$SIZE" "$FILE"
loop_export "$BS_PATH"
K_R=$(iops randread "$DEV")
K_W=$(iops randwrite "$DEV")
undo_all

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
echo "PERF 4k iodepth=32 ${RUNTIME}s, 256 MiB tmpfs file, same boot"
echo "PERF randread  user:file ${U_R} IOPS, fileio ${K_R} IOPS, ratio $(ratio "$U_R" "$K_R")"
echo "PERF randwrite user:file ${U_W} IOPS, fileio ${K_W} IOPS, ratio $(ratio "$U_W" "$K_W")"
