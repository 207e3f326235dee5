#!/bin/bash
# t-26-zbc: user:zbc LUNs are zoned disks to the kernel, keep their zones
# across restarts, and answer ZBC like Debian's C tcmu-runner.
#
# 1. The differential: every CDB of zbc/cases.tsv (ZBC IN/OUT with valid
#    and invalid fields, and the reads and writes their rules govern) to a
#    zbc LUN of Debian's C tcmu-runner (handler_file_zbc.so), then to one
#    of ours with the same geometry: status, sense and data equal but for
#    zbc/deviations.tsv (reasons in zbc/README.md). Then each daemon
#    serves the file the other left (zbc/cross.tsv): the same zones and
#    data.
# 2. Three LUNs of ours on one tcm_loop target: host managed with 512-byte
#    blocks (hm), host managed with 4096-byte blocks (h4), host aware
#    (ha). sd registers them zoned: queue/zoned, nr_zones, chunk_sectors,
#    logical_block_size and max_open_zones as the cfgstrings say.
# 3. blkzone report/open/close/finish/reset on hm: after each, the zones
#    the kernel reports equal the zone records in the backing file.
# 4. fio zonemode=zbd, sequential writes at iodepth 8 (mq-deadline) with
#    crc32c verify over many zones: no error, data verified. A write away
#    from the write pointer fails with UNALIGNED WRITE COMMAND.
# 5. mkfs.f2fs -m on hm, files written, unmount, remount, checksums equal.
# 6. h4 and ha take data where their models allow it, and only there.
# 7. SYNCHRONIZE CACHE, kill -9, a new daemon: zones, data and f2fs files
#    as they were; then a clean restart, the same.
# 8. READ ONLY and OFFLINE zones from the cfgstring: their conditions, and
#    the sense codes of what they refuse.

ZBC_DIR=$(cd "$(dirname "$0")/zbc" && pwd)
source "$(dirname "$0")/lib.sh"
source "$ZBC_DIR/diff.sh"

MIB=$((1024 * 1024))
# fio's seconds, from the suite's budget.
FIO_SECS=$((FIO_RUNTIME < 15 ? FIO_RUNTIME : 15))

load_modules
modprobe f2fs || fail "modprobe f2fs failed"

# zbc_backstore NAME SIZE CFG [BLOCK]: a user:zbc backstore (hw_block_size
# BLOCK, default 512), enabled. Sets BS_PATH.
zbc_backstore() {
    local name=$1 size=$2 cfg=$3 block=${4:-512}
    BS_PATH=$CFG/core/user_1/$name
    mkdir -p "$BS_PATH" || fail "mkdir $BS_PATH failed"
    push_cleanup "rmdir_timeout $BS_PATH"
    echo "dev_size=$size,hw_block_size=$block" >"$BS_PATH/control" || fail "cannot size $name"
    echo "dev_config=zbc/$cfg" >"$BS_PATH/control" || fail "cannot set dev_config of $name"
    set_serial "$BS_PATH"
    write_timeout 20 "$BS_PATH/enable" 1 || fail "enabling user:zbc backstore $name ($cfg) failed"
}

# queue_attr DEV NAME: /sys/block/<dev>/queue/NAME.
queue_attr() { cat "/sys/block/${1#/dev/}/queue/$2"; }

# ZONES_AWK: awk helpers for the two listings below (no python: it starts
# slowly from the 9p share under TCG).
ZONES_AWK='
function hex(s,    i, v) {
    s = tolower(s); sub(/^0x/, "", s); v = 0
    for (i = 1; i <= length(s); i++) v = v * 16 + index("0123456789abcdef", substr(s, i, 1)) - 1
    return v
}'

# file_zones FILE: the zone records of a zbc backing file as blkzone lines
# "start len wptr cond type" in 512-byte sectors (wptr relative to the
# zone start, "-" for conventional zones).
file_zones() {
    local hdr nr lba
    hdr=($(od -An -v -tu4 -N28 "$1")) || return 1
    ((hdr[0] == 0x555A4243)) || { echo "no zbc magic in $1" >&2; return 1; }
    lba=${hdr[4]} nr=${hdr[6]}
    od -An -v -tx1 -w64 -j48 -N$((64 * nr)) "$1" | awk -v k=$((lba / 512)) "$ZONES_AWK"'
        function le(from, n,    i, v) { v = 0; for (i = from + n - 1; i >= from; i--) v = v * 256 + hex($i); return v }
        {
            start = le(1, 8); len = le(9, 8); t = hex($25); c = hex($26)
            w = (t == 1) ? "-" : (le(17, 8) - start) * k
            print start * k, len * k, w, c, t
        }'
}

# dev_zones DEV: the same lines from `blkzone report`.
dev_zones() {
    blkzone report "$1" | awk "$ZONES_AWK"'
        {
            line = $0
            match(line, /start: 0x[0-9a-f]+/); s = hex(substr(line, RSTART + 7, RLENGTH - 7))
            match(line, /len 0x[0-9a-f]+/); l = hex(substr(line, RSTART + 4, RLENGTH - 4))
            match(line, /wptr 0x[0-9a-f]+/); w = hex(substr(line, RSTART + 5, RLENGTH - 5))
            match(line, /zcond: *[0-9]+/); c = substr(line, RSTART, RLENGTH); sub(/zcond: */, "", c)
            match(line, /type: *[0-9]+/); t = substr(line, RSTART, RLENGTH); sub(/type: */, "", t)
            print s, l, (t == 1 ? "-" : w), c + 0, t + 0
        }'
}

# zones_agree DEV FILE WHAT: the kernel's report of DEV equals FILE's
# records.
zones_agree() {
    dev_zones "$1" >"$WORK/zones.dev" || fail "blkzone report $1 failed"
    file_zones "$2" >"$WORK/zones.file" || fail "cannot read the zone records of $2"
    if ! cmp -s "$WORK/zones.dev" "$WORK/zones.file"; then
        diff "$WORK/zones.dev" "$WORK/zones.file" | head -n 20
        fail "$3: blkzone and the handler's zone records differ"
    fi
    log "$3: $(wc -l <"$WORK/zones.dev") zones agree with the backing file"
}

# ---------------------------------------------------------------------------
# 1. The differential, C daemon first (two daemons never serve at once).
zbc_diff_setup
DIFF_CFG="model-HM/zsize-4/conv-2/open-4"
c_daemon_start
user_backstore cdiff $((64 * MIB)) "zbc/$DIFF_CFG@$WORK/cdiff.raw" ||
    fail "the C daemon did not enable its zbc backstore"
c_bs=$BS_PATH
loop_export "$c_bs"
c_tpg=$LOOP_TPG
assert_eq "$(queue_attr "$DEV" zoned)" host-managed "the C daemon's zbc LUN"
zbc_diff_send c "$SG"
loop_unexport "$c_tpg" || fail "cannot remove the C LUN's export"
rmdir_timeout "$c_bs" || fail "cannot remove the C daemon's backstore"
c_daemon_stop

daemon_start
loop_target
tpg=$LOOP_TPG
zbc_backstore odiff $((64 * MIB)) "$DIFF_CFG@$WORK/odiff.raw"
loop_add_lun "$tpg" 0 "$BS_PATH"
zbc_diff_send ours "$SG"
zbc_diff_compare
# Each daemon serves the other's file: first ours the C daemon's (no
# options: as the file is), which holds tcmu-runner's version 0.
log_mark
zbc_backstore cfile $((64 * MIB)) "$WORK/cdiff.raw"
loop_add_lun "$tpg" 4 "$BS_PATH"
sg_turs "$SG" >/dev/null 2>&1 || true
zbc_diff_send cfile "$SG" "$ZBC_DIR/cross.tsv"
zbc_cross_check cfile c "tcmu-rs serving tcmu-runner's file"
wait_log 10 'brought to version 1' "a log line about tcmu-runner's version-0 metadata"

# ---------------------------------------------------------------------------
# 2. Zoned disks to the kernel.
HM_FILE=$WORK/hm.raw
zbc_backstore hm $((256 * MIB)) "model-HM/zsize-4/conv-8/open-8@$HM_FILE"
loop_add_lun "$tpg" 1 "$BS_PATH"
HM=$DEV HM_SG=$SG
zbc_backstore h4 $((128 * MIB)) "model-HM/lba-4096/zsize-8/conv-1/open-4@$WORK/h4.raw" 4096
loop_add_lun "$tpg" 2 "$BS_PATH"
H4=$DEV H4_SG=$SG
zbc_backstore ha $((64 * MIB)) "model-HA/zsize-4/conv-2@$WORK/ha.raw"
loop_add_lun "$tpg" 3 "$BS_PATH"
HA=$DEV HA_SG=$SG
# Adding LUNs left REPORTED LUNS DATA HAS CHANGED pending on the others;
# the kernel does not retry a REPORT ZONES (blkzone's ioctl) on it.
for sg in "$HM_SG" "$H4_SG" "$HA_SG"; do
    sg_turs "$sg" >/dev/null 2>&1 || sg_turs "$sg" >/dev/null 2>&1 || true
done

# DEV zoned nr_zones chunk_sectors logical_block_size max_open_zones
for want in "$HM host-managed 64 8192 512 8" "$H4 host-managed 16 16384 4096 4" \
    "$HA host-aware 16 8192 512 0"; do
    read -r d zoned nr chunk lbs open <<<"$want"
    assert_eq "$(queue_attr "$d" zoned)" "$zoned" "$d queue/zoned"
    assert_eq "$(queue_attr "$d" nr_zones)" "$nr" "$d queue/nr_zones"
    assert_eq "$(queue_attr "$d" chunk_sectors)" "$chunk" "$d queue/chunk_sectors (the zone size)"
    assert_eq "$(queue_attr "$d" logical_block_size)" "$lbs" "$d queue/logical_block_size"
    assert_eq "$(queue_attr "$d" max_open_zones)" "$open" "$d queue/max_open_zones"
    log "$d: $zoned, $nr zones of $((chunk / 2048)) MiB, $lbs-byte blocks, max_open_zones $open"
done
assert_grep '\[mq-deadline\]' "/sys/block/${HM#/dev/}/queue/scheduler" "the zoned disk's I/O scheduler"

# ---------------------------------------------------------------------------
# 3. blkzone against the zone records (hm: zones 0-7 conventional, 8192
#    sectors each).
Z=8192
zones_agree "$HM" "$HM_FILE" "a new disk"
dd if=/dev/urandom of="$HM" bs=4k count=3 seek=$((8 * Z / 8)) oflag=direct status=none ||
    fail "a write at zone 8's write pointer failed"
blkzone open -o $((9 * Z)) -c 2 "$HM" || fail "blkzone open failed"
zones_agree "$HM" "$HM_FILE" "zone 8 written, zones 9-10 opened"
assert_eq "$(dev_zones "$HM" | awk '$4 == 3' | wc -l)" 2 "explicitly open zones"
blkzone close -o $((8 * Z)) -c 3 "$HM" || fail "blkzone close failed"
zones_agree "$HM" "$HM_FILE" "zones 8-10 closed"
blkzone finish -o $((8 * Z)) -c 2 "$HM" || fail "blkzone finish failed"
zones_agree "$HM" "$HM_FILE" "zones 8-9 finished"
assert_eq "$(dev_zones "$HM" | awk '$4 == 14' | wc -l)" 2 "full zones"
blkzone reset -o $((8 * Z)) -c 1 "$HM" || fail "blkzone reset of one zone failed"
zones_agree "$HM" "$HM_FILE" "zone 8 reset"
blkzone reset "$HM" || fail "blkzone reset of every zone failed"
zones_agree "$HM" "$HM_FILE" "every zone reset"

# ---------------------------------------------------------------------------
# 4. fio zonemode=zbd over the sequential zones, then a refused write.
fio --name=zbd --filename="$HM" --direct=1 --ioengine=libaio --iodepth=8 \
    --zonemode=zbd --offset=$((32 * MIB)) --rw=write --bs=64k \
    --verify=crc32c --do_verify=1 --verify_backlog=64 --verify_fatal=1 --verify_state_save=0 \
    --time_based --runtime="$FIO_SECS" --eta=never \
    --output-format=json --output="$WORK/zbd.json" >"$WORK/zbd.out" 2>&1 ||
    { tail -n 30 "$WORK/zbd.out"; fail "fio zonemode=zbd failed"; }
assert_eq "$(fio_errors "$WORK/zbd.json")" 0 "fio zonemode=zbd errors"
written=$(python3 -c 'import json,sys; j=json.load(open(sys.argv[1]))["jobs"][0]; print(j["write"]["io_bytes"], j["read"]["io_bytes"])' "$WORK/zbd.json")
read -r wbytes rbytes <<<"$written"
((rbytes > 0)) || fail "fio zonemode=zbd verified nothing"
log "fio zonemode=zbd: $((wbytes / MIB)) MiB written over $((wbytes / (4 * MIB))) zones' worth, $((rbytes / MIB)) MiB verified, no errors"
zones_agree "$HM" "$HM_FILE" "after fio"
# A write away from the write pointer is refused: zone 40 reset, 8
# sectors written at its start, then its start written again.
z40=$((40 * Z))
blkzone reset -o "$z40" -c 1 "$HM" || fail "blkzone reset of zone 40 failed"
dd if=/dev/zero of="$HM" bs=512 count=8 seek="$z40" oflag=direct status=none ||
    fail "a write at zone 40's write pointer failed"
if dd if=/dev/zero of="$HM" bs=512 count=8 seek="$z40" oflag=direct status=none 2>/dev/null; then
    fail "a write behind zone 40's write pointer succeeded"
fi
sg_raw -v -s 4096 -i /dev/zero "$HM_SG" 8a 00 00 00 00 00 00 $(printf '%02x %02x %02x' $((z40 >> 16)) $((z40 >> 8 & 255)) $((z40 & 255))) 00 00 00 08 00 00 \
    >"$WORK/unaligned.txt" 2>&1 || true
assert_grep 'Unaligned write command' "$WORK/unaligned.txt" "sense of a WRITE (16) behind the write pointer"
log "a write away from the write pointer: refused, UNALIGNED WRITE COMMAND"
blkzone reset "$HM" || fail "blkzone reset failed"

# ---------------------------------------------------------------------------
# 5. f2fs.
MNT=$WORK/mnt
mkdir -p "$MNT"
mkfs.f2fs -f -m "$HM" >"$WORK/mkfs.txt" 2>&1 || { cat "$WORK/mkfs.txt"; fail "mkfs.f2fs -m failed"; }
mount -t f2fs "$HM" "$MNT" || fail "mounting f2fs failed"
push_cleanup "! mountpoint -q $MNT || umount $MNT"
for i in 0 1 2 3; do
    dd if=/dev/urandom of="$MNT/f$i" bs=1M count=8 status=none || fail "writing f$i failed"
done
(cd "$MNT" && sha256sum f*) >"$WORK/f2fs-sums.txt"
umount "$MNT" || fail "unmounting f2fs failed"
echo 3 >/proc/sys/vm/drop_caches
mount -t f2fs "$HM" "$MNT" || fail "remounting f2fs failed"
(cd "$MNT" && sha256sum --quiet -c "$WORK/f2fs-sums.txt") || fail "f2fs files differ after a remount"
umount "$MNT"
log "f2fs: 4 x 8 MiB written, checksums equal after a remount"

# ---------------------------------------------------------------------------
# 6. 4096-byte blocks and host aware: data where their models allow it.
dd_roundtrip "$H4" 8 # zone 1's start: its write pointer
if dd if=/dev/zero of="$H4" bs=4k count=1 seek=$((9 * 256 + 1)) oflag=direct status=none 2>/dev/null; then
    fail "h4: a write past zone 1's write pointer succeeded"
fi
assert_eq "$(dev_zones "$H4" | awk '$1 == 16384 { print $3, $4 }')" "2048 2" "h4 zone 1 (wptr, implicitly open)"
dd_roundtrip "$HA" 9 # inside zone 2, away from its write pointer
dd_roundtrip "$HA" 5 # conventional zone 1
assert_eq "$(dev_zones "$HA" | awk '$1 == 16384 { print $3, $5 }')" "4096 3" "ha zone 2 (wptr past the write at 9 MiB, type SWP)"
log "h4 and ha: data where their models allow it"

# ---------------------------------------------------------------------------
# 7. Restarts: zones and data as they were, on every LUN.
blkzone open -o $((20 * Z)) -c 1 "$HM" || fail "blkzone open failed"
snapshot() {
    local d
    for d in "$HM" "$H4" "$HA"; do dev_zones "$d"; done
    dd if="$H4" bs=1M count=10 iflag=direct status=none | md5sum
    dd if="$HA" bs=1M count=12 iflag=direct status=none | md5sum
}
snapshot >"$WORK/state.before" || fail "cannot read the LUNs' state"
sg_sync "$HM_SG" || fail "SYNCHRONIZE CACHE failed"
sg_sync "$H4_SG" || fail "SYNCHRONIZE CACHE failed"
daemon_kill9
daemon_start
wait_for 30 "$HM to serve again" dd if="$HM" of=/dev/null bs=4k count=1 iflag=direct status=none
snapshot >"$WORK/state.after" || fail "cannot read the LUNs' state"
cmp -s "$WORK/state.before" "$WORK/state.after" ||
    { diff "$WORK/state.before" "$WORK/state.after" | head; fail "zones or data differ after kill -9"; }
zones_agree "$HM" "$HM_FILE" "after kill -9 and a new daemon"
mount -t f2fs "$HM" "$MNT" || fail "mounting f2fs after kill -9 failed"
(cd "$MNT" && sha256sum --quiet -c "$WORK/f2fs-sums.txt") || fail "f2fs files differ after kill -9"
umount "$MNT"
snapshot >"$WORK/state.before" || fail "cannot read the LUNs' state"
daemon_stop
daemon_start
wait_for 30 "$HM to serve again" dd if="$HM" of=/dev/null bs=4k count=1 iflag=direct status=none
snapshot >"$WORK/state.after" || fail "cannot read the LUNs' state"
cmp -s "$WORK/state.before" "$WORK/state.after" || fail "zones or data differ after a clean restart"
log "kill -9 after SYNCHRONIZE CACHE, then a clean restart: zones (one explicitly open), data and f2fs files as they were"

# ---------------------------------------------------------------------------
# 8. READ ONLY and OFFLINE zones (cfgstring faults): reported with their
#    conditions, read-only data readable but never written or reset, an
#    offline zone neither read nor written; the zones next to them as usual.
zbc_backstore rf $((64 * MIB)) "model-HM/zsize-4/conv-2/readonly-3/offline-4-5@$WORK/rf.raw"
loop_add_lun "$tpg" 5 "$BS_PATH"
RF=$DEV RF_SG=$SG
sg_turs "$RF_SG" >/dev/null 2>&1 || sg_turs "$RF_SG" >/dev/null 2>&1 || true
# cdb16 OPCODE LBA BLOCKS: a READ (16) or WRITE (16) CDB as sg_raw's bytes.
cdb16() {
    local i out=$1
    for i in 56 48 40 32 24 16 8 0; do out+=" $(printf '%02x' $(($2 >> i & 255)))"; done
    for i in 24 16 8 0; do out+=" $(printf '%02x' $(($3 >> i & 255)))"; done
    echo "${out:0:2} 00${out:2} 00 00"
}
dev_zones "$RF" >"$WORK/rf-zones.txt" || fail "blkzone report $RF failed"
# zone: condition (13 READ ONLY, 15 OFFLINE, 1 EMPTY)
for want in "2 1" "3 13" "4 15" "5 15" "6 1"; do
    read -r zone cond <<<"$want"
    assert_eq "$(awk -v s=$((zone * Z)) '$1 == s { print $4 }' "$WORK/rf-zones.txt")" "$cond" \
        "condition of rf zone $zone"
done
dd if="$RF" of=/dev/null bs=4k count=1 skip=$((3 * Z / 8)) iflag=direct status=none ||
    fail "reading the read-only zone 3 failed"
sg_raw -v -s 4096 -i /dev/zero "$RF_SG" $(cdb16 8a $((3 * Z)) 8) >"$WORK/ro-write.txt" 2>&1 || true
assert_grep 'Zone is read only' "$WORK/ro-write.txt" "sense of a WRITE (16) into a read-only zone"
if blkzone reset -o $((3 * Z)) -c 1 "$RF" 2>/dev/null; then
    fail "RESET WRITE POINTER of a read-only zone succeeded"
fi
sg_raw -v -r 4096 "$RF_SG" $(cdb16 88 $((4 * Z)) 8) >"$WORK/off-read.txt" 2>&1 || true
assert_grep 'Zone is offline' "$WORK/off-read.txt" "sense of a READ (16) from an offline zone"
sg_raw -v -s 4096 -i /dev/zero "$RF_SG" $(cdb16 8a $((5 * Z)) 8) >"$WORK/off-write.txt" 2>&1 || true
assert_grep 'Zone is offline' "$WORK/off-write.txt" "sense of a WRITE (16) into an offline zone"
dd if=/dev/urandom of="$WORK/rf-block" bs=4k count=1 status=none
dd if="$WORK/rf-block" of="$RF" bs=4k seek=$((6 * Z / 8)) oflag=direct status=none ||
    fail "a write at zone 6's write pointer failed"
cmp -s <(dd if="$RF" bs=4k count=1 skip=$((6 * Z / 8)) iflag=direct status=none) "$WORK/rf-block" ||
    fail "zone 6 (next to the offline zones) did not read back what was written"
log "rf: read-only zone 3 read but not written or reset, offline zones 4-5 neither read nor written, zone 6 as usual"

undo_all
daemon_stop

# And the C daemon serves the file of ours the differential left.
c_daemon_start
user_backstore ofile $((64 * MIB)) "zbc/$WORK/odiff.raw" ||
    fail "the C daemon did not enable a zbc backstore on our file"
loop_export "$BS_PATH"
sg_turs "$SG" >/dev/null 2>&1 || true
zbc_diff_send ofile "$SG" "$ZBC_DIR/cross.tsv"
zbc_cross_check ofile ours "tcmu-runner serving tcmu-rs's file"
undo_all
c_daemon_stop
