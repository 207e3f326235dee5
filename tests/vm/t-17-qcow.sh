#!/bin/bash
# t-17-qcow: qcow2 and qcow (version 1) images made by qemu-img, served by
# the qcow handler.
#
# 1. `qemu-img create -f qcow2` (64 MiB) as `qcow//img`: the disk has the
#    image's size; ext4 on it (mkfs, fsck, files read back), then fio
#    randwrite with crc32c verify. SYNCHRONIZE CACHE (sg_sync), kill -9:
#    `qemu-img check` finds no corruption; a new daemon recovers the
#    device and reads the same bytes. Removing the LUN closes the image:
#    `qemu-img check` is clean (no leaks either) and `qemu-img convert` to
#    raw equals what the disk read. Before that, blkdiscard: the discarded
#    range reads back as zeroes.
#    Then kill -9 while fio writes, after a SYNCHRONIZE CACHE (64 KiB and
#    512-byte clusters, see crash_under_fio): at most leaked clusters, the
#    flushed bytes intact in the image and through a new daemon.
# 2. compat 0.10 and 1.1 images, overlays on a raw and on a qcow2 backing
#    file, a compressed image (qemu-img convert -c): each served, the disk
#    reads what qemu-img reads, fio verify, removed: `qemu-img check` clean,
#    `qemu-img compare` of the image against the disk's bytes equal, the
#    backing file unchanged. The same for qcow version 1 (`-f qcow`): an
#    image with data, an overlay on raw named relative to its folder (512-
#    byte clusters), a compressed image; `qemu-img check` does not support
#    qcow ("does not support checks"), so `qemu-img compare`, which reads
#    every cluster through QEMU's own qcow driver, is the judge.
# 3. Refused promptly with the reason in the log: a raw file as a qcow
#    image, a device larger than the image's virtual size, and an
#    encrypted qcow version 1 image.

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

# crash_under_fio NAME CLUSTER: kill -9 of the daemon while fio writes,
# after a SYNCHRONIZE CACHE, on a fresh 64 MiB qcow2 image with CLUSTER-byte
# clusters (512-byte clusters need 2,048 L2 tables and 512 refcount blocks,
# far more than imago caches (128 and 32): its write-back caches evict, and
# the refcount table grows, while the daemon dies).
#   phase 1: fio randwrite of the first 32 MiB, every block once (crc32c
#            headers, verified later), then sg_sync; its md5 is taken.
#   phase 2: fio randwrite of the last 32 MiB (no verify: writes since the
#            flush may be lost), kill -9 of the daemon 4 s in.
# The image as the daemon left it: `qemu-img check` finds at most leaked
# clusters (`-r leaks` repairs them, then it is clean) and holds phase 1's
# bytes. A new daemon takes the device over, phase 2's fio finishes without
# errors, phase 1 reads back (md5, fio verify_only); removed, the image is
# clean and `qemu-img compare` equals what the disk read.
crash_under_fio() {
    local name=$1 cluster=$2 img=$WORK/$1.qcow2 half=$((32 * MIB))
    qemu-img create -q -f qcow2 -o cluster_size="$cluster" "$img" 64M || fail "qemu-img create of $img failed"
    user_backstore "$name" $((64 * MIB)) "qcow/$img" || fail "enabling $name failed"
    # The daemon is down while qemu-img checks the image: let TCMU and the
    # SCSI layer wait for it rather than time fio's writes out.
    echo 0 >"$BS_PATH/attrib/cmd_time_out" || fail "cannot set cmd_time_out of $name"
    loop_export "$BS_PATH"
    echo 300 >"/sys/block/${DEV#/dev/}/device/timeout" || fail "cannot set the SCSI timeout of $DEV"
    local p1=(--name="$name-p1" --filename="$DEV" --ioengine=libaio --direct=1
        --rw=randwrite --bs=4k --iodepth=16 --offset=0 --size=32m --randrepeat=1
        --verify=crc32c --verify_state_save=0 --eta=never)
    fio "${p1[@]}" --do_verify=0 --output-format=json --output="$WORK/$name-p1.json" \
        >"$WORK/$name-p1.out" 2>&1 || { tail -n 20 "$WORK/$name-p1.out"; fail "fio phase 1 on $name failed"; }
    assert_eq "$(fio_errors "$WORK/$name-p1.json")" 0 "fio phase 1 error count ($name)"
    sg_sync "$DEV" || fail "SYNCHRONIZE CACHE on $name failed"
    local sum1
    sum1=$(dd if="$DEV" bs=1M count=32 iflag=direct status=none | md5sum)
    log "$name: phase 1 (32 MiB, ${cluster}-byte clusters) written and flushed"

    fio --name="$name-p2" --filename="$DEV" --ioengine=libaio --direct=1 \
        --rw=randwrite --bsrange=4k-64k --iodepth=16 --offset=32m --size=32m \
        --time_based --runtime=20 --eta=never --output-format=json \
        --output="$WORK/$name-p2.json" >"$WORK/$name-p2.out" 2>&1 &
    local p2=$!
    sleep 4
    kill -0 "$p2" 2>/dev/null || fail "fio phase 2 on $name ended before the crash"
    daemon_kill9
    log "$name: daemon killed under fio; $(qemu-img info "$img" | sed -n 's/^disk size: /image allocated: /p')"

    local rc=0
    qemu-img check "$img" >"$WORK/$name-check.txt" 2>&1 || rc=$?
    # One line a leaked cluster (thousands with 512-byte clusters): the
    # summary only, and anything that is not a leak.
    grep -v '^Leaked cluster' "$WORK/$name-check.txt"
    # 0: clean; 3: only leaked clusters (allocated, not yet referenced).
    [[ $rc -eq 0 || $rc -eq 3 ]] || fail "$name: qemu-img check after kill -9 under fio: status $rc (corruption)"
    if [[ $rc -eq 3 ]]; then
        qemu-img check -q -r leaks "$img" >/dev/null 2>&1
        qemu-img check "$img" >"$WORK/$name-check2.txt" 2>&1 ||
            { cat "$WORK/$name-check2.txt"; fail "$name: qemu-img check not clean after -r leaks"; }
    fi
    qemu-img convert -O raw "$img" "$WORK/$name-crash.raw" || fail "qemu-img convert of $img failed"
    assert_eq "$(head -c "$half" "$WORK/$name-crash.raw" | md5sum)" "$sum1" \
        "$name: the image's first 32 MiB after kill -9 against what was flushed"
    rm -f "$WORK/$name-crash.raw"
    log "$name: after kill -9: qemu-img check status $rc (0 clean, 3 leaks only, repaired), flushed data intact"

    daemon_start
    local frc=0
    wait "$p2" || frc=$?
    ((frc == 0)) || { tail -n 20 "$WORK/$name-p2.out"; fail "fio phase 2 on $name exited with status $frc"; }
    assert_eq "$(fio_errors "$WORK/$name-p2.json")" 0 "fio phase 2 error count ($name)"
    assert_eq "$(dd if="$DEV" bs=1M count=32 iflag=direct status=none | md5sum)" "$sum1" \
        "$name: the first 32 MiB read through the new daemon"
    fio "${p1[@]}" --verify_only --verify_fatal=1 --output-format=json --output="$WORK/$name-v.json" \
        >"$WORK/$name-v.out" 2>&1 || { tail -n 20 "$WORK/$name-v.out"; fail "fio verify_only of phase 1 on $name failed"; }
    assert_eq "$(fio_errors "$WORK/$name-v.json")" 0 "fio verify_only error count ($name)"
    local verified
    verified=$(grep -A3 '"read" *:' "$WORK/$name-v.json" | grep -Eo '"io_bytes" *: *[0-9]+' |
        awk -F: '{s += $2} END {printf "%.0f\n", s}')
    assert_eq "$verified" "$half" "bytes fio verify_only checked ($name)"
    dd if="$DEV" of="$WORK/$name-lun.raw" bs=1M iflag=direct status=none || fail "reading $DEV failed"
    loop_unexport "$LOOP_TPG" || fail "cannot remove the tcm_loop export"
    rmdir_timeout "$BS_PATH" || fail "cannot remove backstore $name"
    qemu-img check "$img" >"$WORK/$name-check3.txt" 2>&1 || { cat "$WORK/$name-check3.txt"; fail "$name: qemu-img check after removal"; }
    qemu-img compare -q -f qcow2 -F raw "$img" "$WORK/$name-lun.raw" || fail "$name: qemu-img compare of the image and the disk's bytes"
    rm -f "$WORK/$name-lun.raw" "$img"
    log "$name: new daemon: fio phase 2 finished, phase 1 verified ($((verified / MIB)) MiB), removed: check clean, compare equal"
}
crash_under_fio crash64k 65536
crash_under_fio crash512 512

# 2. Images of every kind qemu-img makes, each 16 MiB (12 MiB of data, a
# 4 MiB hole), through serve_image.
# serve_image NAME IMG [BACKING [FORMAT]]: serves IMG (FORMAT qcow2, the
# default, or qcow); the disk reads what qemu-img reads (`qemu-img compare`
# against the disk's bytes), fio randwrite with crc32c verify over its
# first 8 MiB, the disk's bytes copied out, the device removed: `qemu-img
# check` clean (qcow2 only: qemu-img cannot check qcow), `qemu-img compare`
# of IMG against the copy equal, and the backing file BACKING byte for
# byte unchanged.
serve_image() {
    local name=$1 img=$2 backing=${3:-} fmt=${4:-qcow2} bsum=
    [[ -z $backing ]] || bsum=$(md5sum <"$backing")
    user_backstore "$name" $((16 * MIB)) "qcow/$img" || fail "enabling $name ($img) failed"
    loop_export "$BS_PATH"
    dd if="$DEV" of="$WORK/$name-before.raw" bs=1M iflag=direct status=none || fail "reading $DEV failed"
    qemu-img compare -q -f "$fmt" -F raw "$img" "$WORK/$name-before.raw" ||
        fail "$name: the disk does not read what qemu-img reads from $img"
    fio_bg "$name" "$DEV" 6 --size=8m --bsrange=4k-64k
    fio_wait "$name" "$FIO_PID"
    dd if="$DEV" of="$WORK/$name-lun.raw" bs=1M iflag=direct status=none || fail "reading $DEV failed"
    cmp -s <(tail -c $((8 * MIB)) "$WORK/$name-before.raw") <(tail -c $((8 * MIB)) "$WORK/$name-lun.raw") ||
        fail "$name: the 8 MiB fio did not write changed"
    loop_unexport "$LOOP_TPG" || fail "cannot remove the tcm_loop export"
    rmdir_timeout "$BS_PATH" || fail "cannot remove backstore $name"
    if [[ $fmt == qcow2 ]]; then
        qemu-img check "$img" >"$WORK/$name-check.txt" 2>&1 || { cat "$WORK/$name-check.txt"; fail "$name: qemu-img check after removal"; }
    fi
    qemu-img compare -q -f "$fmt" -F raw "$img" "$WORK/$name-lun.raw" ||
        fail "$name: qemu-img compare of $img and the disk's bytes"
    [[ -z $backing ]] || assert_eq "$(md5sum <"$backing")" "$bsum" "$name: the backing file after writes to the overlay"
    rm -f "$WORK/$name-before.raw" "$WORK/$name-lun.raw"
    log "$name: served, fio verified, removed: check clean, compare equal${backing:+, backing file unchanged}"
}
data=$WORK/data.raw
head -c $((12 * MIB)) /dev/urandom >"$data"
truncate -s $((16 * MIB)) "$data"
for compat in 0.10 1.1; do
    qemu-img convert -f raw -O qcow2 -o compat=$compat "$data" "$WORK/v$compat.qcow2" || fail "qemu-img convert compat=$compat failed"
    assert_grep "compat: $compat" <(qemu-img info "$WORK/v$compat.qcow2") "the image's compat"
    serve_image "compat$compat" "$WORK/v$compat.qcow2"
done
# Overlays on a raw and on a qcow2 backing file (the backing file opened
# read-only: serve_image checks it is unchanged).
base=$WORK/base.raw
cp "$data" "$base"
qemu-img create -q -f qcow2 -b "$base" -F raw "$WORK/top-raw.qcow2" || fail "qemu-img create of the overlay on raw failed"
serve_image over-raw "$WORK/top-raw.qcow2" "$base"
qemu-img convert -f raw -O qcow2 "$data" "$WORK/base.qcow2" || fail "qemu-img convert to the qcow2 base failed"
qemu-img create -q -f qcow2 -b "$WORK/base.qcow2" -F qcow2 "$WORK/top-qcow2.qcow2" || fail "qemu-img create of the overlay on qcow2 failed"
serve_image over-qcow2 "$WORK/top-qcow2.qcow2" "$WORK/base.qcow2"
# A compressed image (compressible data: random bytes in base64); fio's
# writes land on compressed clusters, partial ones too.
head -c $((9 * MIB)) /dev/urandom | base64 -w 0 | head -c $((12 * MIB)) >"$WORK/text.raw"
truncate -s $((16 * MIB)) "$WORK/text.raw"
qemu-img convert -c -f raw -O qcow2 "$WORK/text.raw" "$WORK/comp.qcow2" || fail "qemu-img convert -c failed"
assert_grep '[1-9][0-9.]*% compressed clusters' <(qemu-img check "$WORK/comp.qcow2") "qemu-img check of the compressed image"
serve_image compressed "$WORK/comp.qcow2"
# qcow version 1: an image with data (4 KiB clusters), an overlay on raw
# whose backing name is relative (the daemon resolves it against the
# image's folder, not its working directory), a compressed image.
qemu-img convert -f raw -O qcow "$data" "$WORK/v1.qcow" || fail "qemu-img convert -O qcow failed"
serve_image qcow1 "$WORK/v1.qcow" "" qcow
(cd "$WORK" && qemu-img create -q -f qcow -b base.raw -F raw top-raw.qcow) || fail "qemu-img create of the qcow overlay on raw failed"
assert_grep '^backing file: base.raw( \(actual path: .*/base.raw\))?$' <(qemu-img info "$WORK/top-raw.qcow") "the qcow overlay's backing file name"
serve_image qcow1-over-raw "$WORK/top-raw.qcow" "$base" qcow
# qemu-img 10.0 exits 1, silently, after writing a good compressed qcow
# image: the image is judged by what it holds.
qemu-img convert -c -f raw -O qcow "$WORK/text.raw" "$WORK/comp.qcow" || true
qemu-img compare -q -f qcow -F raw "$WORK/comp.qcow" "$WORK/text.raw" || fail "qemu-img convert -c -O qcow made no usable image"
(($(stat -c %s "$WORK/comp.qcow") < 12 * MIB)) || fail "the compressed qcow image is not compressed"
serve_image qcow1-compressed "$WORK/comp.qcow" "" qcow

# 3. Refusals.
truncate -s 16M "$WORK/raw.img"
refused_backstore bad_raw $((16 * MIB)) "qcow/$WORK/raw.img" 'is not a qcow2 or qcow image'
refused_backstore too_big $((128 * MIB)) "qcow/$img" 'is larger than the virtual size'
# crypt_method (bytes 36-39) 1: AES, which the handler does not serve.
qemu-img create -q -f qcow "$WORK/aes.qcow" 16M || fail "qemu-img create -f qcow failed"
printf '\x01' | dd of="$WORK/aes.qcow" bs=1 seek=39 conv=notrunc status=none
refused_backstore encrypted $((16 * MIB)) "qcow/$WORK/aes.qcow" 'encrypted qcow images are not supported'
daemon_alive || fail "the daemon died"

undo_all
daemon_stop
