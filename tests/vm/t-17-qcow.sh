#!/bin/bash
# t-17-qcow: qcow2 images made by qemu-img, served by the qcow handler.
#
# 1. `qemu-img create -f qcow2` (64 MiB) as `qcow//img`: the disk has the
#    image's size; ext4 on it (mkfs, fsck, files read back), then fio
#    randwrite with crc32c verify. SYNCHRONIZE CACHE (sg_sync), kill -9:
#    `qemu-img check` finds no corruption; a new daemon recovers the
#    device and reads the same bytes. Removing the LUN closes the image:
#    `qemu-img check` is clean (no leaks either) and `qemu-img convert` to
#    raw equals what the disk read. Before that, blkdiscard: the discarded
#    range reads back as zeroes.
# 2. A qcow2 overlay on a raw backing file: the disk reads the backing
#    file's bytes, writes land in the overlay, the backing file is unchanged.
# 3. Refused promptly with the reason in the log: a raw file as a qcow
#    image, and a device larger than the image's virtual size.

source "$(dirname "$0")/lib.sh"

load_modules
daemon_start

MIB=$((1024 * 1024))
size=$((64 * MIB))
img=$WORK/q0.qcow2
qemu-img create -q -f qcow2 "$img" 64M || fail "qemu-img create failed"
user_backstore q0 "$size" "qcow/$img" || fail "enabling user:qcow backstore q0 failed"
loop_export "$BS_PATH"
assert_eq "$(dev_size_bytes "$DEV")" "$size" "size of $DEV"

# 1. A filesystem, then verified random writes.
mkfs.ext4 -q -F "$DEV" || fail "mkfs.ext4 on $DEV failed"
mkdir -p "$WORK/mnt"
mount "$DEV" "$WORK/mnt" || fail "mount failed"
push_cleanup "umount $WORK/mnt 2>/dev/null || true"
dd if=/dev/urandom of="$WORK/mnt/data.bin" bs=1M count=8 status=none
sum=$(md5sum <"$WORK/mnt/data.bin")
umount "$WORK/mnt"
fsck.ext4 -f -n "$DEV" >"$WORK/fsck.txt" 2>&1 || { cat "$WORK/fsck.txt"; fail "fsck.ext4 found errors"; }
mount "$DEV" "$WORK/mnt" || fail "remount failed"
assert_eq "$(md5sum <"$WORK/mnt/data.bin")" "$sum" "checksum of a file read back from the qcow2 disk"
umount "$WORK/mnt"
log "ext4 on the qcow2 disk: mkfs, fsck clean, 8 MiB file read back"

fio_bg qcow "$DEV" 20 --bsrange=4k-64k
fio_wait qcow "$FIO_PID"

sg_sync "$DEV" || fail "SYNCHRONIZE CACHE failed"
qemu-img info "$img" | sed -n 's/^disk size: /allocated: /p'
daemon_kill9
rc=0
qemu-img check "$img" >"$WORK/check-killed.txt" 2>&1 || rc=$?
cat "$WORK/check-killed.txt"
# 0: clean; 3: only leaked clusters (allocated, not yet referenced).
[[ $rc -eq 0 || $rc -eq 3 ]] || fail "qemu-img check after kill -9 following a SYNCHRONIZE CACHE: status $rc"
log "kill -9 after SYNCHRONIZE CACHE: qemu-img check status $rc (no corruption)"
daemon_start
wait_for 20 "$DEV to serve reads again" dd if="$DEV" of=/dev/null bs=4k count=1 iflag=direct status=none
dd_roundtrip "$DEV" 40

# UNMAP: the disk advertises discard; discarded ranges read back as zeroes.
disc=$(cat "/sys/block/${DEV#/dev/}/queue/discard_max_bytes")
((disc > 0)) || fail "$DEV does not advertise discard (discard_max_bytes 0)"
blkdiscard -o $((32 * MIB)) -l $((8 * MIB)) "$DEV" || fail "blkdiscard failed"
cmp -n $((8 * MIB)) <(dd if="$DEV" bs=1M skip=32 count=8 iflag=direct status=none) /dev/zero ||
    fail "a discarded range does not read back as zeroes"
log "blkdiscard of 8 MiB: reads back as zeroes (discard_max_bytes $disc)"
before=$(md5sum <"$DEV")
loop_unexport "$LOOP_TPG" || fail "cannot remove the tcm_loop export"
rmdir_timeout "$BS_PATH" || fail "cannot remove backstore q0"
qemu-img check "$img" >"$WORK/check.txt" 2>&1 || { cat "$WORK/check.txt"; fail "qemu-img check after closing the device"; }
qemu-img convert -O raw "$img" "$WORK/q0.raw" || fail "qemu-img convert failed"
assert_eq "$(md5sum <"$WORK/q0.raw")" "$before" "qemu-img's view of the image against what the disk read"
log "device removed: qemu-img check clean, qemu-img convert equals the disk's bytes"
# The discarded clusters hold no data any more (zero clusters or unallocated).
qemu-img map --output=json "$img" >"$WORK/map.json" || fail "qemu-img map failed"
python3 - "$WORK/map.json" $((32 * MIB)) $((40 * MIB)) <<'PY' || fail "discarded clusters still hold data: $(cat "$WORK/map.json")"
import json, sys
lo, hi = int(sys.argv[2]), int(sys.argv[3])
for e in json.load(open(sys.argv[1])):
    if e["start"] < hi and e["start"] + e["length"] > lo and e["data"] and not e["zero"]:
        sys.exit(1)
PY
log "qemu-img map: the discarded 8 MiB hold no data clusters"

# 2. A backing chain.
base=$WORK/base.raw
head -c $((16 * MIB)) /dev/urandom >"$base"
base_sum=$(md5sum <"$base")
top=$WORK/top.qcow2
qemu-img create -q -f qcow2 -b "$base" -F raw "$top" || fail "qemu-img create of the overlay failed"
user_backstore q1 $((16 * MIB)) "qcow/$top" || fail "enabling the overlay failed"
loop_export "$BS_PATH"
assert_eq "$(md5sum <"$DEV")" "$base_sum" "the overlay disk reads its backing file"
dd_roundtrip "$DEV" 3
loop_unexport "$LOOP_TPG" || fail "cannot remove the tcm_loop export"
rmdir_timeout "$BS_PATH" || fail "cannot remove backstore q1"
assert_eq "$(md5sum <"$base")" "$base_sum" "the backing file after writes to the overlay"
qemu-img check -q "$top" || fail "qemu-img check of the overlay failed"
log "overlay on a raw backing file: reads through, writes stay in the overlay"

# 3. Refusals.
truncate -s 16M "$WORK/raw.img"
refused_backstore bad_raw $((16 * MIB)) "qcow/$WORK/raw.img" 'is not a qcow2 image'
refused_backstore too_big $((128 * MIB)) "qcow/$img" 'is larger than the virtual size'
daemon_alive || fail "the daemon died"

undo_all
daemon_stop
