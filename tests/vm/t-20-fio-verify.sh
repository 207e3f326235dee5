#!/bin/bash
# t-20-fio-verify: random writes with verification, then a byte-for-byte
# comparison of the device with its backing file.
#
# Three fio runs on a user:file LUN (libaio, direct, iodepth 32, 2 jobs each
# on its own half of the disk, time_based for $FIO_RUNTIME s): randwrite with
# verify=crc32c at bs=4k, at bs=64k with ring polling switched on through a
# live tcmu.conf change, and at bs=512k for a third of that time (the
# device takes 512 KiB commands: hw_max_sectors 1024). The backing file is
# on tmpfs, so the file handler copies commands up to 256 KiB inline and
# hands 512 KiB ones to io_uring: both data paths are checked. With
# time_based, fio's final verify phase never runs (the run time is used up
# by writing), so blocks are read back and checked while writing
# (verify_backlog). fio must exit 0 with no errors and must actually have
# verified data; afterwards `cmp` the whole device against the backing file.

source "$(dirname "$0")/lib.sh"

load_modules
daemon_start

size=$((256 * 1024 * 1024))
img=$WORK/v0.img
BS_HW_MAX_SECTORS=1024 user_file_backstore v0 "$size" "$img"
loop_export "$BS_PATH"
assert_eq "$(cat "/sys/block/${DEV#/dev/}/queue/max_sectors_kb")" 512 "max_sectors_kb of $DEV"
half=$((size / 2))

# run_fio BS [SECS]: one verified randwrite run of SECS (default
# $FIO_RUNTIME) seconds; fails the test on any error.
run_fio() {
    local bs=$1 secs=${2:-$FIO_RUNTIME} json=$WORK/fio-$1.json
    log "fio randwrite bs=$bs verify=crc32c for ${secs}s"
    local rc=0
    fio --name="verify-$bs" --filename="$DEV" --ioengine=libaio --direct=1 \
        --rw=randwrite --bs="$bs" --iodepth=32 --numjobs=2 \
        --size="$half" --offset_increment="$half" \
        --verify=crc32c --do_verify=1 --verify_backlog=256 --verify_fatal=1 \
        --verify_state_save=0 \
        --time_based --runtime="$secs" \
        --eta=never --output-format=json --output="$json" || rc=$?
    if [[ $rc -ne 0 ]]; then
        cat "$json" 2>/dev/null | tail -n 40
        fail "fio bs=$bs exited with status $rc"
    fi
    assert_eq "$(fio_errors "$json")" 0 "fio bs=$bs error count"
    # Each job's "read" section holds the verify pass: it must have run.
    local verified
    verified=$(grep -A3 '"read" *:' "$json" | grep -Eo '"io_bytes" *: *[0-9]+' |
        awk -F: '{s += $2} END {printf "%.0f\n", s}')
    ((verified > 0)) || fail "fio bs=$bs verified no data (no read-back phase)"
    local written
    written=$(grep -A3 '"write" *:' "$json" | grep -Eo '"io_bytes" *: *[0-9]+' |
        awk -F: '{s += $2} END {printf "%.0f\n", s}')
    log "bs=$bs: wrote $((written / 1048576)) MiB, verified $((verified / 1048576)) MiB, no errors"
}

run_fio 4k
log_mark
echo "ring_poll_us = 100" >"$WORK/tcmu.conf"
polling_on() { log_since | grep -q "ring_poll_us 100:"; }
wait_for 10 "the daemon to take ring_poll_us 100 from tcmu.conf" polling_on
run_fio 64k
# 512 KiB commands: a third of the time suffices (several hundred MiB).
run_fio 512k $(((FIO_RUNTIME + 2) / 3))

log "cmp $DEV against the backing file"
echo 3 >/proc/sys/vm/drop_caches
cmp "$DEV" "$img" || fail "the device and its backing file differ"

undo_all
daemon_stop
