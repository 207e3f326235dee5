#!/bin/bash
# t-00-harness: the harness itself works, independent of our daemon.
#
# The kernel's own fileio backstore, exported through tcm_loop, must show up
# as a disk that mkfs/fsck, fio and sg3_utils can use. When this fails, the
# VM or lib.sh is broken, not tcmu-runner.

source "$(dirname "$0")/lib.sh"

load_modules
size=$((64 * 1024 * 1024))
fileio_backstore h0 "$size" "$WORK/h0.img"
loop_export "$BS_PATH"

assert_eq "$(dev_size_bytes "$DEV")" "$size" "size of $DEV"

log "mkfs.ext4 + fsck on $DEV"
mkfs.ext4 -q -F "$DEV" || fail "mkfs.ext4 failed"
fsck.ext4 -fn "$DEV" >/dev/null || fail "fsck.ext4 reports errors"

log "sg_inq on $SG"
sg_inq "$SG" >"$WORK/inq.txt" || fail "sg_inq failed"
assert_grep 'Vendor identification: *LIO-ORG' "$WORK/inq.txt" "INQUIRY vendor"

log "5 s of fio randrw with verify"
fio --name=h --filename="$DEV" --ioengine=libaio --direct=1 --rw=randwrite \
    --bs=4k --iodepth=8 --size=16m --verify=crc32c --do_verify=1 --verify_state_save=0 \
    --runtime=5 --time_based --eta=never --output-format=json --output="$WORK/fio.json" \
    || fail "fio failed"
assert_eq "$(fio_errors "$WORK/fio.json")" 0 "fio errors"
