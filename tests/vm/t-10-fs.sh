#!/bin/bash
# t-10-fs: a filesystem on a user:file LUN survives unmount, fsck and remount.
#
# user:file backstore on a 512 MiB file in guest RAM, exported through
# tcm_loop; mkfs.ext4, mount, write 100 MiB of random data in several files,
# record their sha256sums, unmount, fsck -fn must be clean, remount and the
# checksums must match.

source "$(dirname "$0")/lib.sh"

load_modules
daemon_start

size=$((512 * 1024 * 1024))
user_file_backstore fs0 "$size" "$WORK/fs0.img"
loop_export "$BS_PATH"
assert_eq "$(dev_size_bytes "$DEV")" "$size" "size of $DEV"

log "mkfs.ext4 $DEV"
mkfs.ext4 -q -F "$DEV" || fail "mkfs.ext4 failed"

mnt=$WORK/mnt
mkdir -p "$mnt"
mount "$DEV" "$mnt" || fail "mount failed"
push_cleanup "! mountpoint -q $mnt || umount $mnt"

log "writing 100 MiB of random data in 10 files"
mkdir -p "$mnt/data/sub"
for i in $(seq 0 9); do
    dir=$mnt/data
    ((i % 2)) && dir=$mnt/data/sub
    dd if=/dev/urandom of="$dir/f$i" bs=1M count=10 status=none || fail "writing f$i failed"
done
(cd "$mnt" && find data -type f | sort | xargs sha256sum) >"$WORK/sums" || fail "sha256sum failed"
sync
umount "$mnt" || fail "umount failed"

log "fsck.ext4 -fn"
fsck.ext4 -fn "$DEV" >"$WORK/fsck.txt" 2>&1 || { cat "$WORK/fsck.txt"; fail "fsck.ext4 reports errors"; }

# Drop every cached page so the checksums read the device again.
echo 3 >/proc/sys/vm/drop_caches
mount "$DEV" "$mnt" || fail "remount failed"
(cd "$mnt" && sha256sum --quiet -c "$WORK/sums") || fail "checksums differ after remount"
umount "$mnt" || fail "final umount failed"

undo_all
daemon_stop
log "100 MiB written, fsck clean, checksums match"
