#!/bin/bash
# t-36-sg3-commands: sg3_utils' own tools for the commands beyond READ and
# WRITE, against a user:file LUN over a file of random data, with the data
# they move checked on the device and in the backing file.
#
# sg_opcodes (all, and one command's usage bitmap), sg_compare_and_write
# (match writes, miscompare writes nothing and exits with MISCOMPARE),
# sg_verify (BYTCHK 0 and 1), sg_unmap + sg_get_lba_status (the holes are
# reported deallocated, data mapped), sg_rtpg/sg_stpg (states written to
# configfs), sg_xcopy (within a LUN and between two of our LUNs),
# sg_format (the LUN reads zeroes).

source "$(dirname "$0")/lib.sh"

load_modules
daemon_start

bs=512
size=$((32 * 1024 * 1024))
img=$WORK/t36.img
dd if=/dev/urandom of="$img" bs=1M count=32 status=none || fail "cannot fill $img"
push_cleanup "rm -f $img"
user_file_backstore s0 "$size" "$img"
loop_export "$BS_PATH"

# block LBA: one block of the LUN, read with O_DIRECT.
block() { dd if="$DEV" bs=$bs skip="$1" count=1 iflag=direct status=none; }
# file_block LBA: the same block in the backing file.
file_block() { dd if="$img" bs=$bs skip="$1" count=1 status=none; }

# --- sg_opcodes -------------------------------------------------------------
sg_opcodes "$SG" >"$WORK/opcodes.txt" 2>&1 || { cat "$WORK/opcodes.txt"; fail "sg_opcodes failed"; }
for name in "Compare and write" "Get LBA status" "Format unit" "Verify(16)" "Write same(16)"; do
    grep -qi "$name" "$WORK/opcodes.txt" || { cat "$WORK/opcodes.txt"; fail "sg_opcodes does not list $name"; }
done
sg_opcodes --opcode=0x89 "$SG" >"$WORK/op89.txt" 2>&1 || { cat "$WORK/op89.txt"; fail "sg_opcodes --opcode=0x89 failed"; }
grep -Eiq '89 +08 +ff +ff +ff +ff +ff +ff +ff +ff +00 +00 +00 +ff +00 +00' "$WORK/op89.txt" \
    || { cat "$WORK/op89.txt"; fail "COMPARE AND WRITE usage bitmap is not what we accept"; }
log "sg_opcodes: ok"

# --- sg_compare_and_write ---------------------------------------------------
lba=100
block $lba >"$WORK/old.bin"
head -c $bs /dev/urandom >"$WORK/new.bin"
cat "$WORK/old.bin" "$WORK/new.bin" >"$WORK/caw.bin"
sg_compare_and_write --in="$WORK/caw.bin" --lba=$lba --num=1 "$SG" \
    || fail "sg_compare_and_write with matching data failed"
block $lba | cmp -s - "$WORK/new.bin" || fail "COMPARE AND WRITE did not write the new data"
file_block $lba | cmp -s - "$WORK/new.bin" || fail "the backing file does not hold the new data"
rc=0
sg_compare_and_write --in="$WORK/caw.bin" --lba=$lba --num=1 "$SG" 2>"$WORK/caw.err" || rc=$?
[[ $rc -eq 14 ]] || { cat "$WORK/caw.err"; fail "a miscompare gave exit status $rc, not 14 (MISCOMPARE)"; }
block $lba | cmp -s - "$WORK/new.bin" || fail "a miscompared COMPARE AND WRITE changed the block"
log "sg_compare_and_write: ok"

# --- sg_verify --------------------------------------------------------------
sg_verify --lba=$lba --count=8 "$SG" || fail "sg_verify (BYTCHK 0) failed"
sg_verify --lba=$lba --count=1 --ndo=$bs --in="$WORK/new.bin" "$SG" \
    || fail "sg_verify with BYTCHK 1 failed on equal data"
rc=0
sg_verify --lba=$lba --count=1 --ndo=$bs --in="$WORK/old.bin" "$SG" 2>"$WORK/verify.err" || rc=$?
[[ $rc -eq 14 ]] || { cat "$WORK/verify.err"; fail "sg_verify of different data gave exit status $rc, not 14"; }
log "sg_verify: ok"

# --- sg_unmap + sg_get_lba_status -------------------------------------------
sg_unmap --force --lba=4096 --num=2048 "$SG" || fail "sg_unmap failed"
sg_get_lba_status --lba=4096 "$SG" >"$WORK/lbas.txt" 2>&1 || { cat "$WORK/lbas.txt"; fail "sg_get_lba_status failed"; }
cat "$WORK/lbas.txt"
grep -Eiq '0x0*1000 +2048 +1' "$WORK/lbas.txt" \
    || grep -Eiq 'lba: *0x0*1000.*(2048|0x800).*deallocated' "$WORK/lbas.txt" \
    || fail "GET LBA STATUS does not report LBA 4096+2048 deallocated"
sg_get_lba_status --lba=0 "$SG" >"$WORK/lbas0.txt" 2>&1 || fail "sg_get_lba_status at 0 failed"
grep -Eiq '0x0+ +4096 +0|lba: *0x0+ .*4096.*mapped' "$WORK/lbas0.txt" \
    || { cat "$WORK/lbas0.txt"; fail "GET LBA STATUS does not report LBA 0+4096 mapped"; }
block 5000 | cmp -s - <(head -c $bs /dev/zero) || fail "unmapped blocks do not read zeroes"
log "sg_get_lba_status: ok"

# --- sg_rtpg / sg_stpg -------------------------------------------------------
group=$BS_PATH/alua/default_tg_pt_gp
sg_inq "$SG" | grep -q 'TPGS=3' || { sg_inq "$SG"; fail "standard INQUIRY does not report TPGS=3"; }
sg_rtpg -d "$SG" >"$WORK/rtpg.txt" 2>&1 || { cat "$WORK/rtpg.txt"; fail "sg_rtpg failed"; }
grep -qi 'target port group id *: *0x0' "$WORK/rtpg.txt" || { cat "$WORK/rtpg.txt"; fail "RTPG does not list group 0"; }
grep -qi 'active/optimized' "$WORK/rtpg.txt" || { cat "$WORK/rtpg.txt"; fail "RTPG: group 0 is not active/optimized"; }
sg_stpg --active --tp=0 "$SG" || fail "sg_stpg to active/non-optimized failed"
[[ $(cat "$group/alua_access_state") == 1 ]] || fail "STPG did not reach configfs (state $(cat "$group/alua_access_state"))"
# The kernel announces the change to every initiator, this one included,
# with ASYMMETRIC ACCESS STATE CHANGED: take the unit attention first.
rc=0
sg_turs "$SG" 2>"$WORK/turs.err" || rc=$?
[[ $rc -eq 6 ]] && grep -qi 'asymmetric access state changed' "$WORK/turs.err" \
    || { cat "$WORK/turs.err"; fail "no ASYMMETRIC ACCESS STATE CHANGED unit attention after STPG (rc $rc)"; }
sg_rtpg -d "$SG" | grep -qi 'active/non.optimized' || fail "RTPG does not show the new state"
dd_roundtrip "$DEV" 1
sg_stpg --optimized --tp=0 "$SG" || fail "sg_stpg back to active/optimized failed"
[[ $(cat "$group/alua_access_state") == 0 ]] || fail "STPG back to active/optimized did not reach configfs"
sg_turs "$SG" 2>/dev/null || true
# STPG naming a group that does not exist: INVALID FIELD IN PARAMETER LIST.
printf '\0\0\0\0\0\0\0\7' >"$WORK/stpg.bin"
sg_raw -v -s 8 -i "$WORK/stpg.bin" "$SG" a4 0a 00 00 00 00 00 00 00 08 00 00 >"$WORK/stpg.txt" 2>&1 || true
grep -qi 'invalid field in parameter list' "$WORK/stpg.txt" \
    || { cat "$WORK/stpg.txt"; fail "STPG of a group that does not exist was not refused"; }
log "sg_rtpg/sg_stpg: ok"

# --- sg_xcopy: within the LUN and to another of our LUNs -------------------
sg_xcopy if="$SG" of="$SG" bs=$bs skip=0 seek=16384 count=2048 \
    || fail "sg_xcopy within the LUN failed"
cmp -s <(dd if="$DEV" bs=$bs count=2048 iflag=direct status=none) \
    <(dd if="$DEV" bs=$bs skip=16384 count=2048 iflag=direct status=none) \
    || fail "EXTENDED COPY within the LUN copied the wrong data"
first_dev=$DEV first_sg=$SG
img2=$WORK/t36b.img
push_cleanup "rm -f $img2"
user_file_backstore s1 "$size" "$img2"
loop_export "$BS_PATH"
sg_xcopy if="$first_sg" of="$SG" bs=$bs skip=100 seek=300 count=4000 \
    || fail "sg_xcopy to another LUN failed"
cmp -s <(dd if="$first_dev" bs=$bs skip=100 count=4000 iflag=direct status=none) \
    <(dd if="$DEV" bs=$bs skip=300 count=4000 iflag=direct status=none) \
    || fail "EXTENDED COPY between LUNs copied the wrong data"
cmp -s <(dd if="$img" bs=$bs skip=100 count=4000 status=none) \
    <(dd if="$img2" bs=$bs skip=300 count=4000 status=none) \
    || fail "the destination's backing file does not hold the copy"
sg_xcopy --on_dst if="$SG" of="$first_sg" bs=$bs skip=300 seek=20000 count=64 \
    || fail "sg_xcopy sent to the destination failed"
DEV=$first_dev SG=$first_sg
log "sg_xcopy: ok"

# --- sg_format --------------------------------------------------------------
sg_format --format --quick --wait "$SG" >"$WORK/format.txt" 2>&1 || { cat "$WORK/format.txt"; fail "sg_format failed"; }
cmp -s <(dd if="$DEV" bs=1M iflag=direct status=none) <(head -c $size /dev/zero) \
    || fail "the LUN does not read zeroes after FORMAT UNIT"
log "sg_format: ok"

daemon_alive || fail "the daemon died"
undo_all
daemon_stop
log "PASS"
