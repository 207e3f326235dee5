#!/bin/bash
# t-55-rbd: user:rbd LUNs on a real Ceph cluster inside the guest.
#
# One cluster (ceph-mon + a memstore ceph-osd on the guest's 127.0.0.1,
# files in guest RAM; about a minute under TCG) serves every check:
#
# 1. Bad cfgstrings refused within 10 s with the cause in the log: no such
#    image, a `conf=` that does not exist, a `conf=` naming a dead cluster
#    (a monitor port nobody listens on), a device size unlike the image's.
# 2. ext4 on a user:rbd LUN: files, `fsck -fn` clean, remount, checksums.
# 3. SCSI answers: VPD B0 (optimal unmap granularity from
#    rbd_discard_granularity_bytes) and B2 (LBPU, no LBPRZ); blkdiscard
#    frees whole objects (`rbd du` shrinks); COMPARE AND WRITE writes on a
#    match and answers MISCOMPARE otherwise (atomic on the OSD); WRITE SAME
#    lands in `rbd export`.
# 4. fio randwrite with crc32c verify at iodepth 32: no error, and `rbd
#    export` equals the LUN byte for byte.
# 5. kill -9 of the daemon under that load, a new daemon: it breaks the
#    dead client's exclusive lock (logged), the initiator's retries
#    succeed, fio verifies clean, no hung task.
# 6. Another client takes the lock while we serve it (`rbd lock rm`
#    blocklists us, `rbd bench` writes with the lock): our handler logs the
#    loss and reopens; a write of ours sent after the loss waits (BUSY)
#    while the other client holds the lock, so `rbd export` then shows the
#    other client's data; after the hold-off our write lands.
# 7. The OSDs' I/O paused (`ceph osd pause`) for twice osd_op_timeout
#    under fio verify, then resumed: commands time out as BUSY (counted,
#    logged), the initiator retries, fio finishes clean. (SIGSTOP of the OSD
#    is the host test's: see step 7 below for why not here.)
# 8. `rbd resize`, then `attrib/dev_size`: a size unlike the image's is
#    refused, the image's is taken and the initiator sees it after a rescan.
# 9. targetcli-fb on a system bus: a missing image refused with our
#    CheckConfig message, nothing left in configfs; a user:rbd backstore
#    created, exported over LIO's iSCSI target on 127.0.0.1, open-iscsi's
#    disk written and read back, the block in `rbd export`.

source "$(dirname "$0")/lib.sh"

MIB=$((1024 * 1024))
# fio runs, derived from FIO_RUNTIME and kept between 10 and 20 s.
FIO_SECS=$((FIO_RUNTIME / 4))
((FIO_SECS >= 10)) || FIO_SECS=10
((FIO_SECS <= 20)) || FIO_SECS=20
# A write refused while another client holds the lock waits this long.
HOLDOFF_SECS=20
export TCMU_RBD_LOCK_HOLDOFF_MS=$((HOLDOFF_SECS * 1000))

load_modules
ceph_start
for spec in fs:128 fio:64 misc:64; do
    rbdc create --size "${spec#*:}M" "rbd/${spec%%:*}" || fail "rbd create ${spec%%:*} failed"
done
# osd_op_timeout must exceed the OSD heartbeat grace + interval (4 + 1 s,
# see ceph_start).
OPTS=";conf=$CEPH_CONF;osd_op_timeout=6"
daemon_start

# rbd_refused NAME SIZE CFG PATTERN: enabling the backstore fails within 10 s
# (no hang) and the log explains it with a line matching PATTERN.
rbd_refused() {
    local name=$1 size=$2 cfg=$3 pattern=$4 rc=0 start=$SECONDS
    log_mark
    user_backstore "$name" "$size" "$cfg" 20 || rc=$?
    local took=$((SECONDS - start))
    [[ $rc -ne 124 ]] || fail "enable of $cfg hung"
    [[ $rc -ne 0 ]] || fail "enable of $cfg succeeded; it must be refused"
    ((took <= 10)) || fail "enable of $cfg took ${took}s to fail"
    sleep 0.5
    log_since | grep -Eq -- "$pattern" || { log_since | tail -n 20; fail "no log line /$pattern/ for $cfg"; }
    log "refused in ${took}s: $(log_since | grep -E -- "$pattern" | head -n1 | cut -c1-240)"
    rmdir_timeout "$BS_PATH" 10 || fail "removing the refused backstore $name failed"
}

# --- 1. bad cfgstrings ------------------------------------------------------
rbd_refused bad1 $((64 * MIB)) "rbd/rbd/nosuch$OPTS" "no such pool or image"
rbd_refused bad2 $((64 * MIB)) "rbd/rbd/misc;conf=$WORK/nonexistent.conf" "no such file"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
printf '[global]\nmon host = 127.0.0.1:%s\nauth client required = none\n' "$port" >"$WORK/dead.conf"
rbd_refused bad3 $((64 * MIB)) "rbd/rbd/misc;conf=$WORK/dead.conf" "unreachable"
rbd_refused bad4 $((128 * MIB)) "rbd/rbd/misc$OPTS" "differs from the size of image rbd/misc"

# --- 2. ext4 -----------------------------------------------------------------
user_backstore fs $((128 * MIB)) "rbd/rbd/fs$OPTS" || fail "enabling user:rbd fs failed"
loop_export "$BS_PATH"
assert_eq "$(dev_size_bytes "$DEV")" $((128 * MIB)) "size of the rbd disk"
ext4_roundtrip "$DEV" 4 8
assert_grep "exclusive lock acquired" "$(daemon_log)" "the first write took the exclusive lock"

# --- 3. VPD pages, UNMAP, COMPARE AND WRITE, WRITE SAME ----------------------
user_backstore misc $((64 * MIB)) "rbd/rbd/misc$OPTS" || fail "enabling user:rbd misc failed"
MISC_BS=$BS_PATH
loop_export "$MISC_BS"
MISC_DEV=$DEV MISC_SG=$SG MISC_ADDR=$SCSI_ADDR
sg_vpd --page=0xb0 "$MISC_SG" >"$WORK/vpd-b0.txt" || fail "sg_vpd B0 failed"
gran=$(ceph-conf -c "$CEPH_CONF" --show-config-value rbd_discard_granularity_bytes) || fail "ceph-conf failed"
assert_grep "Optimal unmap granularity: $((gran / 512)) blocks" "$WORK/vpd-b0.txt" "VPD B0 unmap granularity"
assert_grep "Unmap granularity alignment: $((gran / 512))" "$WORK/vpd-b0.txt" "VPD B0 unmap granularity alignment"
sg_vpd --page=0xb2 "$MISC_SG" >"$WORK/vpd-b2.txt" || fail "sg_vpd B2 failed"
assert_grep "Unmap command supported \(LBPU\): 1" "$WORK/vpd-b2.txt" "VPD B2 LBPU"
assert_grep "\(LBPRZ\): 0" "$WORK/vpd-b2.txt" "VPD B2 LBPRZ"
dd if=/dev/urandom of="$MISC_DEV" bs=1M count=16 oflag=direct status=none || fail "writing 16 MiB failed"
used() { rbdc du --format json rbd/misc | python3 -c 'import json,sys; print(json.load(sys.stdin)["images"][0]["used_size"])'; }
before=$(used)
blkdiscard -o 0 -l $((8 * MIB)) "$MISC_DEV" || fail "blkdiscard failed"
after=$(used)
log "rbd du: $before bytes used before blkdiscard of 8 MiB, $after after"
((before >= 16 * MIB && after <= before - 8 * MIB)) || fail "blkdiscard freed no objects ($before -> $after)"
# COMPARE AND WRITE of one block at LBA 40000.
lba=40000
dd if="$MISC_DEV" bs=512 skip=$lba count=1 iflag=direct status=none >"$WORK/old.bin"
head -c 512 /dev/urandom >"$WORK/new.bin"
cat "$WORK/old.bin" "$WORK/new.bin" >"$WORK/caw.bin"
sg_compare_and_write --in="$WORK/caw.bin" --lba=$lba --num=1 "$MISC_SG" || fail "COMPARE AND WRITE with matching data failed"
dd if="$MISC_DEV" bs=512 skip=$lba count=1 iflag=direct status=none | cmp -s - "$WORK/new.bin" ||
    fail "COMPARE AND WRITE did not write"
rc=0
sg_compare_and_write --in="$WORK/caw.bin" --lba=$lba --num=1 "$MISC_SG" 2>"$WORK/caw.err" || rc=$?
[[ $rc -eq 14 ]] || { cat "$WORK/caw.err"; fail "a miscompare gave exit status $rc, not 14 (MISCOMPARE)"; }
dd if="$MISC_DEV" bs=512 skip=$lba count=1 iflag=direct status=none | cmp -s - "$WORK/new.bin" ||
    fail "a miscompared COMPARE AND WRITE changed the block"
# WRITE SAME of a pattern block over 64 blocks at LBA 50000.
head -c 512 /dev/urandom >"$WORK/pat.bin"
sg_write_same --in="$WORK/pat.bin" --lba=50000 --num=64 "$MISC_SG" || fail "sg_write_same failed"
for ((i = 0; i < 64; i++)); do cat "$WORK/pat.bin"; done >"$WORK/pat64.bin"
rbdc export rbd/misc "$WORK/misc.export" >/dev/null 2>&1 || fail "rbd export failed"
cmp -s <(dd if="$WORK/misc.export" bs=512 skip=50000 count=64 status=none) "$WORK/pat64.bin" ||
    fail "WRITE SAME's blocks are not in rbd export"
cmp -s <(dd if="$WORK/misc.export" bs=512 skip=$lba count=1 status=none) "$WORK/new.bin" ||
    fail "COMPARE AND WRITE's block is not in rbd export"
rm -f "$WORK/misc.export"
log "VPD B0/B2, blkdiscard, COMPARE AND WRITE (match, miscompare), WRITE SAME: ok"

# --- 4. fio verify, rbd export = the LUN -------------------------------------
user_backstore fio $((64 * MIB)) "rbd/rbd/fio$OPTS" || fail "enabling user:rbd fio failed"
loop_export "$BS_PATH"
FIO_DEV=$DEV
fio_bg verify "$FIO_DEV" "$FIO_SECS" --iodepth=32
fio_wait verify "$FIO_PID"
log "fio verify: $(python3 -c 'import json,sys; j = json.load(open(sys.argv[1]))["jobs"][0]; print("write %.0f IOPS, read %.0f IOPS" % (j["write"]["iops"], j["read"]["iops"]))' "$WORK/verify.json")"
rbdc export rbd/fio "$WORK/fio.export" >/dev/null 2>&1 || fail "rbd export failed"
cmp "$WORK/fio.export" "$FIO_DEV" || fail "rbd export differs from the LUN"
rm -f "$WORK/fio.export"
log "rbd export equals the LUN"

# --- 5. kill -9 under load ----------------------------------------------------
dmesg_mark
log_mark
fio_bg kill9 "$FIO_DEV" $((2 * FIO_SECS)) --iodepth=32
sleep $((FIO_SECS / 2))
daemon_kill9
log "daemon killed (-9) under fio"
sleep 1
daemon_start
fio_wait kill9 "$FIO_PID"
log_since | grep -E "after breaking the lock of" >/dev/null ||
    { log_since | grep -i lock | tail; fail "the new daemon did not break the dead client's lock"; }
log "$(log_since | grep -E 'after breaking the lock of' | head -n1 | cut -c1-200)"
! dmesg_since | grep -q 'blocked for more than' || fail "hung task after kill -9"

# --- 6. another client takes the lock ----------------------------------------
region=$WORK/region
head -c $((64 * 1024)) /dev/urandom >"$region.p1"
head -c $((64 * 1024)) /dev/urandom >"$region.p2"
dd if="$region.p1" of="$MISC_DEV" bs=64K count=1 oflag=direct status=none || fail "writing P1 failed"
rbdc lock ls --format json rbd/misc >"$WORK/locks.json" || fail "rbd lock ls failed"
lock_field() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[0][sys.argv[2]])' "$WORK/locks.json" "$1"; }
lock_id=$(lock_field id) && locker=$(lock_field locker) || fail "no lock on rbd/misc: $(cat "$WORK/locks.json")"
log_mark
rbdc lock rm rbd/misc "$lock_id" "$locker" || fail "rbd lock rm failed"
log "broke our lock ($locker, '$lock_id'): we are blocklisted"
# Our write after the loss: answered BUSY while the hold-off lasts.
dd if="$region.p2" of="$MISC_DEV" bs=64K count=1 oflag=direct status=none &
late_dd=$!
lost_at=$SECONDS
# The other client writes its own bytes at offset 0 with the lock.
rbdc bench --io-type write --io-size 64K --io-total 64K --io-pattern seq rbd/misc >"$WORK/bench.txt" 2>&1 ||
    { cat "$WORK/bench.txt"; fail "rbd bench failed"; }
rbdc export rbd/misc "$WORK/misc.export" >/dev/null 2>&1 || fail "rbd export failed"
head -c $((64 * 1024)) "$WORK/misc.export" >"$region.now"
rm -f "$WORK/misc.export"
elapsed=$((SECONDS - lost_at))
((elapsed < HOLDOFF_SECS)) || fail "the other client took ${elapsed}s, past our ${HOLDOFF_SECS}s hold-off: inconclusive"
cmp -s "$region.now" "$region.p2" && fail "our write landed while the other client held the lock"
cmp -s "$region.now" "$region.p1" && fail "the other client's write is not there"
assert_eq "$(od -An -tx1 -v "$region.now" | tr -s ' \n' '\n' | grep -v '^$' | sort -u | wc -l)" 1 \
    "the region holds rbd bench's one-byte pattern"
log "while the other client held the lock (${elapsed}s), none of our writes landed"
wait "$late_dd" || fail "our write after the lock moved failed instead of being retried"
dd if="$MISC_DEV" bs=64K count=1 iflag=direct status=none | cmp -s - "$region.p2" ||
    fail "our retried write did not land once we took the lock back"
log_since | grep -q "lost the exclusive lock" || fail "the daemon did not log the lost lock"
log_since | grep -q "reopened rbd/misc" || fail "the daemon did not reopen rbd/misc"
log "lock lost, reopened, taken back after the hold-off: $(log_since | grep -E 'exclusive lock acquired' | tail -n1 | cut -c1-160)"

# --- 7. the OSD's I/O stopped ---------------------------------------------
# `ceph osd pause` (no client op is served until `ceph osd unpause`) rather
# than SIGSTOP of the OSD: in this TCG guest, Ceph 16's memstore OSD leaves
# its PGs' ops "delayed" for minutes after a SIGCONT, whatever the client
# (rbd bench too). The handler's host test stops the OSD with SIGSTOP.
# Paused first, then fio: the ceph tool takes seconds under TCG (over 30 s
# on a loaded host), and a pause that lands after fio's run proves nothing.
# fio's first writes take the pause to our client; the rest wait for it.
log_mark
dmesg_mark
cephc osd pause >/dev/null 2>&1 || fail "ceph osd pause failed"
push_cleanup "ceph -c $CEPH_CONF osd unpause"
log "OSD I/O paused"
# Long enough to go on writing after an unpause as slow as that.
fio_bg osd "$FIO_DEV" $((FIO_SECS + 30)) --iodepth=16
# Twice osd_op_timeout.
sleep 12
cephc osd unpause >/dev/null 2>&1 || fail "ceph osd unpause failed"
log "OSD I/O resumed"
fio_wait osd "$FIO_PID"
log_since | grep -q "timed out (osd_op_timeout)" || fail "no OSD op time-out was logged"
log "$(log_since | grep -E 'operations complete again' | head -n1 | cut -c1-160)"
! dmesg_since | grep -q 'blocked for more than' || fail "hung task while the OSD's I/O was paused"

# --- 8. rbd resize + dev_size ------------------------------------------------
rbdc resize --size 96M rbd/misc >/dev/null 2>&1 || fail "rbd resize failed"
rc=0
write_timeout 20 "$MISC_BS/attrib/dev_size" $((128 * MIB)) || rc=$?
[[ $rc -ne 0 && $rc -ne 124 ]] || fail "a dev_size unlike the image's was not refused (rc $rc)"
write_timeout 20 "$MISC_BS/attrib/dev_size" $((96 * MIB)) || fail "dev_size = the image's size refused"
echo 1 >"/sys/class/scsi_device/$MISC_ADDR/device/rescan"
wait_for 20 "the new capacity of $MISC_DEV" dev_size_is "$MISC_DEV" $((96 * MIB))
log "rbd resize + dev_size: the initiator sees 96 MiB"

# --- 9. targetcli (D-Bus CheckConfig) and LIO's iSCSI target ----------------
rbdc create --size 64M rbd/tc0 || fail "rbd create tc0 failed"
load_iscsi_modules
dbus_start
daemon_stop
daemon_start
wait_for 15 "org.kernel.TCMUService1 on the system bus" dbus_has_name org.kernel.TCMUService1
targetcli_env
out=$(tc_batch "/backstores/user:rbd create name=tcbad size=64M cfgstring=rbd/nosuch;conf=$CEPH_CONF")
grep -qF "cfgstring invalid: rbd: rbd/nosuch (no such pool or image)" <<<"$out" ||
    { echo "$out"; fail "targetcli did not show our CheckConfig refusal"; }
[[ -z $(so_path tcbad) ]] || fail "the refused backstore tcbad was left in configfs"
tc /backstores/user:rbd create name=tc0 size=64M "cfgstring=rbd/tc0;conf=$CEPH_CONF" >/dev/null ||
    fail "targetcli create of a user:rbd backstore failed"
tc_bs=$(so_path tc0)
[[ -n $tc_bs ]] || fail "targetcli left no backstore tc0"
push_cleanup "rmdir_timeout $tc_bs"
assert_eq "$(cat "$tc_bs/enable")" 1 "tc0 enabled"
log "targetcli: user:rbd tc0 created, a missing image refused with our message"
iscsi_export rbd0 "$tc_bs"
iscsid_start
iscsi_login "$(iscsi_iqn rbd0)"
assert_eq "$(dev_size_bytes "$DEV")" $((64 * MIB)) "size of the iSCSI disk"
dd_roundtrip "$DEV" 3
rbdc export rbd/tc0 "$WORK/tc0.export" >/dev/null 2>&1 || fail "rbd export tc0 failed"
cmp -s <(dd if="$WORK/tc0.export" bs=1M skip=3 count=1 status=none) "$WORK/rt.bin" ||
    fail "the block written over iSCSI is not in rbd export"
log "iSCSI: the user:rbd LUN over LIO's iSCSI target, written and read back, in rbd export"

undo_all
daemon_stop
log "PASS"
