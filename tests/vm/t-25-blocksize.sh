#!/bin/bash
# t-25-blocksize: a user:file LUN with 4096-byte logical blocks
# (control hw_block_size=4096): the disk has 4 KiB logical blocks and the
# right capacity, fio's verified writes and a filesystem work on it, and
# UNMAP addresses 4 KiB blocks.

source "$(dirname "$0")/lib.sh"

load_modules
daemon_start

size=$((64 * 1024 * 1024))
img=$WORK/b4.img
truncate -s "$size" "$img"
BS_PATH=$CFG/core/user_1/b4
mkdir -p "$BS_PATH" || fail "mkdir $BS_PATH failed"
push_cleanup "rmdir_timeout $BS_PATH"
echo "dev_size=$size,hw_block_size=4096" >"$BS_PATH/control" || fail "cannot set size and block size"
echo "dev_config=file/$img" >"$BS_PATH/control" || fail "cannot set dev_config"
set_serial "$BS_PATH"
write_timeout 20 "$BS_PATH/enable" 1 || fail "enabling the 4k-block backstore failed"
loop_export "$BS_PATH"

assert_eq "$(cat "/sys/block/${DEV#/dev/}/queue/logical_block_size")" 4096 "logical block size seen by sd"
sg_readcap -l "$SG" >"$WORK/readcap.txt" || fail "sg_readcap failed"
assert_grep 'Logical block length=4096 bytes' "$WORK/readcap.txt" "READ CAPACITY(16) block length"
assert_grep "Number of logical blocks=$((size / 4096))\$" "$WORK/readcap.txt" "READ CAPACITY(16) block count"

dd_roundtrip "$DEV" 3
fio_bg b4 "$DEV" $((FIO_RUNTIME < 15 ? FIO_RUNTIME : 15))
fio_wait b4 "$FIO_PID"

# UNMAP of 8 blocks at LBA 100 = 32 KiB at byte 409600.
dd if=/dev/urandom of="$DEV" bs=4096 seek=100 count=8 oflag=direct status=none || fail "dd write failed"
sg_unmap --force --lba=100 --num=8 "$SG" >/dev/null || fail "sg_unmap failed"
cmp -s <(dd if="$img" bs=4096 skip=100 count=8 status=none) <(head -c 32768 /dev/zero) \
    || fail "UNMAP of 4 KiB blocks did not zero bytes 409600..442367 of the backing file"

mkfs.ext4 -q -F "$DEV" || fail "mkfs.ext4 failed"
fsck.ext4 -fn "$DEV" >/dev/null || fail "fsck found problems"

undo_all
daemon_stop
