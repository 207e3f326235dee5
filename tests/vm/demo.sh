#!/bin/bash
# demo.sh — what tcmu-rs does, in one minute (run by `cargo xtask demo`).
#
# Starts our daemon, creates a user:file LUN through configfs, exports it
# with the loopback fabric, puts an ext4 filesystem on it, writes a few
# files, runs 10 s of 4k random read/write with fio, cleans everything up
# and shows the daemon's log.

TEST_NAME=demo
source "$(dirname "$0")/lib.sh"

# banner TEXT: a visible section header.
banner() { printf '\n==== %s ====\n' "$*"; }

banner "loading LIO + TCMU kernel modules"
load_modules
lsmod | grep -E '^(target_core_user|target_core_mod|tcm_loop|uio) '

banner "starting tcmu-runner ($TCMU_RUNNER)"
daemon_start

banner "creating a 256 MiB user:file backstore"
size=$((256 * 1024 * 1024))
img=$WORK/demo.img
user_file_backstore demo "$size" "$img"
echo "configfs: $BS_PATH"
echo "uio:      $(grep -l demo /sys/class/uio/uio*/name 2>/dev/null | xargs -r cat)"
loop_export "$BS_PATH"
echo "disk:     $DEV ($(($(dev_size_bytes "$DEV") / 1048576)) MiB), $SG"
sg_inq "$SG" | grep -E 'Vendor|Product|serial'

banner "ext4 on $DEV"
mkfs.ext4 -q -F "$DEV"
mnt=$WORK/mnt
mkdir -p "$mnt"
mount "$DEV" "$mnt"
push_cleanup "! mountpoint -q $mnt || umount $mnt"
echo "hello from tcmu-rs" >"$mnt/hello.txt"
dd if=/dev/urandom of="$mnt/random.bin" bs=1M count=32 status=none
cp -r /etc/apt "$mnt/apt-config"
sync
ls -la "$mnt"
df -h "$mnt"

banner "fio: 4k random read/write, 10 s, iodepth 16"
fio --name=demo --filename="$mnt/fio.dat" --size=64m --ioengine=libaio --direct=1 \
    --rw=randrw --bs=4k --iodepth=16 --time_based --runtime=10 --eta=never \
    --output="$WORK/fio.txt"
grep -E '^ *(read|write): IOPS=' "$WORK/fio.txt"

banner "unmount, fsck"
umount "$mnt"
fsck.ext4 -fn "$DEV" | tail -n 1
echo "backing file: $img ($(du -h "$img" | cut -f1) used of $((size / 1048576)) MiB)"

banner "cleaning up: unexport, remove the backstore, stop the daemon"
undo_all
daemon_stop

banner "daemon log ($(daemon_log))"
tail -n 25 "$(daemon_log)"
echo "done."
