#!/bin/bash
# t-10-fs: a filesystem on a user:file LUN survives unmount, fsck and remount.
#
# user:file backstore on a 512 MiB file in guest RAM, exported through
# tcm_loop; mkfs.ext4, mount, write 100 MiB of random data in 10 files,
# record their sha256sums, unmount, fsck -fn must be clean, remount and the
# checksums must match (ext4_roundtrip in lib.sh).

source "$(dirname "$0")/lib.sh"

load_modules
daemon_start

size=$((512 * 1024 * 1024))
user_file_backstore fs0 "$size" "$WORK/fs0.img"
loop_export "$BS_PATH"
assert_eq "$(dev_size_bytes "$DEV")" "$size" "size of $DEV"

ext4_roundtrip "$DEV" 10 10

undo_all
daemon_stop
