#!/bin/bash
# t-56-glfs: user:glfs LUNs on a Gluster volume served in this guest.
#
# glusterd (Debian's glusterfs-server) runs with a working directory, run
# directory, socket and logs of its own, bound to 127.0.0.1; its one brick
# is ext4 on a loop device over a file in guest RAM (a brick needs
# trusted.* extended attributes) and its host a name from /etc/hosts that
# resolves to 127.0.0.1 (Gluster refuses 127.0.0.1 and localhost by
# string). Gluster's fixed folders (/var/lib/glusterd, /var/log/glusterfs)
# are covered by tmpfs: the guest's root is the host's.
#
# 1. A LUN on a new file of the volume: the file is created with the
#    device's size; ext4 on it (mkfs, files, fsck -fn, remount, checksums),
#    then fio randwrite with crc32c verify at iodepth 32; the brick's copy
#    of the file equals the LUN byte for byte once the LUN is removed.
# 2. Two LUNs on two files of the volume share one connection (one
#    "connected to volume" line in the log); removing one does not stall
#    the other.
# 3. The brick killed under fio and restarted: fio ends with no error and
#    its data verified, no hung task.
# 4. Refused promptly with the cause in the log: an unknown volume, a
#    malformed cfgstring, a file larger than the device, and (glusterd
#    stopped) a volume not connected yet.

source "$(dirname "$0")/lib.sh"

load_modules

MIB=$((1024 * 1024))
gluster_start

daemon_start

# 1. A filesystem and fio verify on a new file.
size=$((128 * MIB))
user_backstore g0 "$size" "glfs/vol0@$HOST/disk0.img" 60 || fail "enabling user:glfs backstore g0 failed"
G0=$BS_PATH
loop_export "$G0"
G0_TPG=$LOOP_TPG
G0_DEV=$DEV
assert_eq "$(dev_size_bytes "$DEV")" "$size" "size of $DEV"
assert_eq "$(stat -c %s "$G/brick/b/disk0.img")" "$size" "size of the file the handler created"
mkfs.ext4 -q -F "$DEV" || fail "mkfs.ext4 on $DEV failed"
mkdir -p "$WORK/mnt"
mount "$DEV" "$WORK/mnt" || fail "mount failed"
push_cleanup "umount $WORK/mnt 2>/dev/null || true"
for i in 1 2 3; do
    dd if=/dev/urandom of="$WORK/mnt/f$i.bin" bs=1M count=4 status=none
done
(cd "$WORK/mnt" && md5sum f*.bin) >"$WORK/sums.txt"
umount "$WORK/mnt"
fsck.ext4 -f -n "$DEV" >"$WORK/fsck.txt" 2>&1 || { cat "$WORK/fsck.txt"; fail "fsck.ext4 found errors"; }
mount "$DEV" "$WORK/mnt" || fail "remount failed"
(cd "$WORK/mnt" && md5sum -c --quiet "$WORK/sums.txt") || fail "checksums differ after the remount"
umount "$WORK/mnt"
log "ext4 on the glfs LUN: mkfs, files, fsck clean, checksums after a remount"

fio_bg glfs "$DEV" 20 --iodepth=32
fio_wait glfs "$FIO_PID"

# 2. A second LUN on another file of the same volume.
user_backstore g1 $((32 * MIB)) "glfs/vol0@$HOST/disk1.img" 60 || fail "enabling user:glfs backstore g1 failed"
G1=$BS_PATH
loop_export "$G1"
G1_TPG=$LOOP_TPG
dd_roundtrip "$DEV" 3
n=$(grep -c 'glfs: connected to volume vol0' "$(daemon_log)" || true)
assert_eq "$n" 1 "connections made to vol0 for two LUNs"
log "two LUNs share one connection: $(grep -o 'the connection has [0-9]* users' "$(daemon_log)" | tail -n1)"
loop_unexport "$G1_TPG" || fail "cannot remove the export of g1"
start=$SECONDS
rmdir_timeout "$G1" || fail "cannot remove backstore g1"
dd if="$G0_DEV" of=/dev/null bs=1M count=8 iflag=direct status=none || fail "g0 does not read after g1 went"
((SECONDS - start <= 5)) || fail "removing g1 and reading g0 took $((SECONDS - start)) s"
log "g1 removed; g0 reads at once"

# 3. The brick killed under fio, then restarted (`volume start force`):
#    the initiator retries what the handler answers meanwhile (NOT READY,
#    becoming ready), fio ends with no error and its data verified, and
#    the kernel reports no hung task.
dmesg_mark
fio_bg glfs-brick "$G0_DEV" 40 --iodepth=16
sleep 8
brick_pid=$(cat "$G"/run/vols/vol0/*.pid 2>/dev/null | head -n1)
[[ -n $brick_pid ]] || fail "no brick pid file under $G/run/vols/vol0"
kill -9 "$brick_pid" || fail "cannot kill the brick (pid $brick_pid)"
log "brick (pid $brick_pid) killed under fio"
sleep 5
start=$SECONDS
until gl volume status vol0 2>/dev/null | grep -q ' Y '; do
    ((SECONDS - start < 120)) || fail "the brick did not come back within 120 s"
    gl volume start vol0 force >/dev/null 2>&1
    sleep 3
done
log "brick restarted after $((SECONDS - start)) s"
fio_wait glfs-brick "$FIO_PID"
if dmesg_since | grep -q 'blocked for more than'; then
    dmesg_since | grep -A8 'blocked for more than' | head -n 30
    fail "a hung task while the brick was down"
fi
log "fio went on through the brick's death and restart: no error, data verified, no hung task"

# The brick's file equals the LUN.
lun_sum=$(md5sum <"$G0_DEV")
loop_unexport "$G0_TPG" || fail "cannot remove the export of g0"
rmdir_timeout "$G0" || fail "cannot remove backstore g0"
assert_eq "$(md5sum <"$G/brick/b/disk0.img")" "$lun_sum" "the brick's file against the LUN's bytes"
log "the brick's copy of disk0.img equals the LUN byte for byte"

# 4. Refusals.
refused_backstore nosuch $((16 * MIB)) "glfs/nosuchvol@$HOST/x.img" 'nosuchvol'
refused_backstore noat $((16 * MIB)) "glfs/vol0-$HOST/x.img" "found no '@'"
refused_backstore toobig $((16 * MIB)) "glfs/vol0@$HOST/disk0.img" 'larger than the device'
daemon_alive || fail "the daemon died"
# With glusterd gone (SIGKILL, as a crash: after a SIGTERM to glusterd
# this script itself ended with status 15), a volume not connected yet is
# refused in time, named.
kill -KILL "$GLUSTERD_PID"
wait "$GLUSTERD_PID" 2>/dev/null || true
refused_backstore gdown $((16 * MIB)) "glfs/other@$HOST/x.img" 'other'
daemon_alive || fail "the daemon died"

undo_all
daemon_stop
