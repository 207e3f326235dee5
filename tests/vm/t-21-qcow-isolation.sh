#!/bin/bash
# t-21-qcow-isolation: a slow qcow image does not slow the other devices on
# its worker.
#
# The daemon runs with one worker (--workers 1), so both LUNs share its
# thread. "fast" is a qcow2 image on tmpfs; "slow" is a qcow2 image on ext4
# over a device-mapper `delay` target (DELAY_MS on every read and write)
# over a loop device. The fast LUN's 4k random-read IOPS at iodepth 32 are
# measured alone, then while the slow LUN takes writes each followed by a
# SYNCHRONIZE CACHE (every flush waits out the delay, several times: ext4's
# journal), then alone again, ROUNDS times: each shared run is compared
# with the mean of the alone runs on either side of it, and the median of
# those ratios must be at least 80%. (One round can lose more to the host:
# the guest runs under TCG on a shared machine, and a run beside the slow
# load once measured 66% with no stall in it, every latency up alike.) The
# slow LUN must really be slow meanwhile (its flushes take at least
# DELAY_MS each), and every fio run finishes without errors. Image I/O
# that blocked the worker thread would stall the fast LUN for every slow
# flush, in every round.

source "$(dirname "$0")/lib.sh"

MIB=$((1024 * 1024))
DELAY_MS=100
SECS=$((FIO_RUNTIME < 5 ? FIO_RUNTIME : 5))
ROUNDS=3

load_modules
modprobe dm-delay || fail "modprobe dm-delay failed"
modprobe loop || fail "modprobe loop failed"
# No udev in the guest: libdevmapper makes the /dev/mapper nodes itself.
export DM_DISABLE_UDEV=1
mkdir -p "$WORK/tmp" "$WORK/slowfs"
mountpoint -q "$WORK/tmp" || mount -t tmpfs -o size=400m tmpfs "$WORK/tmp" || fail "cannot mount a tmpfs"
push_cleanup "umount -l $WORK/tmp"

# The slow store: tmpfs file → loop device → dm delay (no delay while the
# image is made) → ext4.
truncate -s 160M "$WORK/tmp/slow.disk"
LOOPDEV=$(losetup -f --show "$WORK/tmp/slow.disk") || fail "losetup failed"
push_cleanup "losetup -d $LOOPDEV"
SECTORS=$(blockdev --getsz "$LOOPDEV")
# dm_delay MS: (re)load the delay target with MS milliseconds on reads and
# writes.
dm_delay() {
    local table="0 $SECTORS delay $LOOPDEV 0 $1 $LOOPDEV 0 $1"
    if dmsetup info tcmu-slow >/dev/null 2>&1; then
        dmsetup suspend tcmu-slow && dmsetup reload tcmu-slow --table "$table" &&
            dmsetup resume tcmu-slow || fail "cannot set the delay to $1 ms"
    else
        dmsetup create tcmu-slow --table "$table" || fail "dmsetup create failed"
        dmsetup mknodes tcmu-slow
        [[ -b /dev/mapper/tcmu-slow ]] || fail "no /dev/mapper/tcmu-slow after dmsetup create"
        push_cleanup "dmsetup remove --retry tcmu-slow"
    fi
}
dm_delay 0
mkfs.ext4 -q -F /dev/mapper/tcmu-slow || fail "mkfs.ext4 on the delayed device failed"
mount /dev/mapper/tcmu-slow "$WORK/slowfs" || fail "cannot mount the delayed file system"
push_cleanup "umount -l $WORK/slowfs"

# Both images fully allocated, so reads reach the image's clusters.
head -c $((64 * MIB)) /dev/urandom >"$WORK/tmp/data.raw" || fail "cannot make random data"
qemu-img convert -q -f raw -O qcow2 "$WORK/tmp/data.raw" "$WORK/tmp/fast.qcow2" || fail "qemu-img convert (fast) failed"
qemu-img convert -q -f raw -O qcow2 "$WORK/tmp/data.raw" "$WORK/slowfs/slow.qcow2" || fail "qemu-img convert (slow) failed"
rm -f "$WORK/tmp/data.raw"
sync

daemon_start --workers 1
user_backstore fast $((64 * MIB)) "qcow/$WORK/tmp/fast.qcow2" || fail "enabling user:qcow fast failed"
loop_export "$BS_PATH"
FAST=$DEV
user_backstore slow $((64 * MIB)) "qcow/$WORK/slowfs/slow.qcow2" || fail "enabling user:qcow slow failed"
loop_export "$BS_PATH"
SLOW=$DEV
log "fast LUN $FAST (image on tmpfs), slow LUN $SLOW (image on ext4 over dm delay), one worker"

# fast_iops NAME: the fast LUN's 4k random-read IOPS at iodepth 32 over
# SECS seconds.
fast_iops() {
    fio --name="$1" --filename="$FAST" --ioengine=libaio --direct=1 --rw=randread --bs=4k \
        --iodepth=32 --norandommap --time_based --runtime="$SECS" --ramp_time=1 --eta=never \
        --output-format=json --output="$WORK/$1.json" >"$WORK/$1.out" 2>&1 ||
        { tail -n 20 "$WORK/$1.out"; fail "fio $1 failed"; }
    assert_eq "$(fio_errors "$WORK/$1.json")" 0 "fio $1 errors"
    grep -A40 '"read" *:' "$WORK/$1.json" | grep -m1 -Eo '"iops" *: *[0-9.]+' | grep -Eo '[0-9.]+$' |
        awk '{printf "%.0f\n", $1}'
}

# shared_round R: the fast LUN's IOPS while the slow LUN takes flushed
# writes (round R), and how slow those flushes were.
shared_round() {
    # The slow load: 4k writes one at a time, each followed by a
    # SYNCHRONIZE CACHE (fio's fsync=1 on a block device), for longer than
    # the fast run: a flush is always waiting on the delayed disk, at little
    # CPU (with more in flight, the guest's CPU went to the slow LUN's own
    # work and the fast LUN's figure measured that instead).
    fio --name="slowload$1" --filename="$SLOW" --ioengine=libaio --direct=1 --rw=randwrite --bs=4k \
        --iodepth=1 --fsync=1 --norandommap --time_based --runtime=$((SECS + 4)) --eta=never \
        --output-format=json --output="$WORK/slowload$1.json" >"$WORK/slowload$1.out" 2>&1 &
    local slow_pid=$!
    sleep 2
    shared[$1]=$(fast_iops "shared$1") || exit 1
    wait "$slow_pid" || { tail -n 20 "$WORK/slowload$1.out"; fail "the slow LUN's fio failed"; }
    assert_eq "$(fio_errors "$WORK/slowload$1.json")" 0 "the slow LUN's fio errors"
    # How slow the slow LUN was: its flushes (fio's "sync" latencies).
    local slow_writes sync_mean_ms
    read -r slow_writes sync_mean_ms < <(python3 -c '
import json, sys
j = json.load(open(sys.argv[1]))["jobs"][0]
s = j.get("sync", {}).get("lat_ns", {})
print(j["write"]["total_ios"], round(s.get("mean", 0) / 1e6))' "$WORK/slowload$1.json")
    ((sync_mean_ms >= DELAY_MS)) ||
        fail "the slow LUN's flushes took $sync_mean_ms ms on average: the delay ($DELAY_MS ms) did not slow it"
    log "round $1: fast LUN ${shared[$1]} IOPS beside the slow one ($slow_writes writes, each flush $sync_mean_ms ms on average)"
}

declare -a alone shared ratio
alone[0]=$(fast_iops alone0) || exit 1
log "fast LUN alone: ${alone[0]} IOPS"
dm_delay "$DELAY_MS"
for ((r = 1; r <= ROUNDS; r++)); do
    shared_round "$r"
    alone[r]=$(fast_iops "alone$r") || exit 1
    base=$(((alone[r - 1] + alone[r]) / 2))
    ratio[r]=$((shared[r] * 100 / base))
    log "round $r: alone ${alone[r - 1]} and ${alone[r]} IOPS around it: ${ratio[r]}% of $base"
done
dm_delay 0
median=$(printf '%s\n' "${ratio[@]:1}" | sort -n | sed -n "$(((ROUNDS + 1) / 2))p")
log "fast LUN beside the slow one: ${ratio[*]:1} % of alone, median $median%"
((median >= 80)) ||
    fail "the fast LUN fell to a median $median% of its IOPS alone beside the slow one (rounds: ${ratio[*]:1} %)"
log "done"
