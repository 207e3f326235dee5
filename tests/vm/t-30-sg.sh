#!/bin/bash
# t-30-sg: SCSI answers of a user:file LUN, checked by sg3_utils and compared
# with the kernel's own fileio backstore on a file of the same size.
#
# Commands: INQUIRY (standard, VPD 0x00/0x80/0x83/0xb0/0xb2), READ CAPACITY
# (16), MODE SENSE (all pages), UNMAP, WRITE SAME (with and without the
# UNMAP bit), SYNCHRONIZE CACHE. Checks: capacity = file size / 512, block
# size 512, the VPD pages needed for these commands are listed in 0x00, the
# serial in 0x80 is the one configured, WCE set (both devices are told to
# cache writes), unmapped blocks read back as zeros, the WRITE SAME pattern
# reads back. Then every decoded answer must equal fileio's, after masking
# vendor, product, revision, serial and WWN/NAA strings (a diff is printed).
#
# WCE: the C tcmu-runner's file handler enables the write cache
# (tcmu_dev_set_write_cache_enabled(dev, 1)), so a drop-in must report WCE=1;
# the reference gets attrib/emulate_write_cache=1 to match.
#
# Intended differences (normalised before the comparison, and asserted on
# their own for our LUN in check_intended):
# - VPD 0x83: the kernel adds designators of the target port a command came
#   in on (relative port, port group, LU group, SCSI name strings); a TCMU
#   daemon is not told the port. The logical-unit designators (NAA, T10
#   vendor id) are compared; the T10 designator's length includes the
#   product name, which differs.
# - VPD 0xb0: transfer lengths follow the user backstore's hw_max_sectors,
#   not fileio's.
# - LBPRZ and provisioning type: punched holes of a file read back as zeros
#   (LBPRZ=1), and with LBPME=1 SBC-4 requires provisioning type 1 or 2;
#   fileio reports 0 for both.
#
# Every check runs even after one failed, so one run shows all deviations;
# the test fails at the end if any did.

source "$(dirname "$0")/lib.sh"

load_modules
daemon_start

size=$((64 * 1024 * 1024))
blocks=$((size / 512))

# The reference: fileio on a file of the same size, told to advertise what a
# user:file LUN does (thin provisioning commands, a write-back cache).
fileio_backstore ref "$size" "$WORK/ref.img"
REF_BS=$BS_PATH
REF_SERIAL=$BS_SERIAL
echo 1 >"$REF_BS/attrib/emulate_tpu"
echo 1 >"$REF_BS/attrib/emulate_tpws"
echo 1 >"$REF_BS/attrib/emulate_write_cache"
loop_export "$REF_BS"
REF_DEV=$DEV REF_SG=$SG

user_file_backstore sg0 "$size" "$WORK/sg0.img"
USR_SERIAL=$BS_SERIAL
USR_BS=$BS_PATH
loop_export "$BS_PATH"
USR_DEV=$DEV USR_SG=$SG

# soft CMD...: run an assertion (in a subshell, so its `fail` only ends the
# subshell); count a failure in PROBLEMS and go on.
PROBLEMS=0
soft() {
    if ! ("$@"); then
        PROBLEMS=$((PROBLEMS + 1))
    fi
}

# mask: hide what legitimately differs between two backstores.
mask() {
    sed -E \
        -e 's/(Vendor identification:|Product identification:|Product revision level:|Unit serial number:|vendor specific:).*/\1 <MASKED>/' \
        -e 's/[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}/<UUID>/g' \
        -e 's/naa\.[0-9a-fA-F]+/naa.<WWN>/g' \
        -e 's/0x[0-9a-fA-F]{8,}/<HEX>/g' \
        -e 's/^( *LIO-ORG ).*(peripheral_type)/\1<PRODUCT> \2/' \
        -e 's/(is: +LIO-ORG ).*/\1<PRODUCT>/' \
        -e 's|/dev/sg[0-9]+|/dev/sgN|g'
}

# normalize QUERY: mask the intended differences listed at the top.
normalize() {
    case $1 in
        vpd83)
            awk '
                /^  Designation descriptor number/ { flush(); hdr = "  Designation descriptor"; body = ""; next }
                hdr != "" { body = body $0 "\n"; next }
                { print }
                function flush() {
                    if (hdr != "" && body ~ /designator_type: (NAA|T10 vendor identification)/) printf "%s\n%s", hdr, body
                    hdr = ""
                }
                END { flush() }'
            ;;
        vpdb0) sed -E 's/^( *(Maximum transfer|Optimal transfer) length:).*/\1 */' ;;
        vpdb2) sed -E -e 's/(\(LBPRZ\)): [01]/\1: */' -e 's/(Provisioning type:).*/\1 */' ;;
        readcap) sed -E 's/lbprz=[01]/lbprz=*/' ;;
        *) cat ;;
    esac
}

# check_intended SG BS_PATH: our values where they intentionally differ.
check_intended() {
    local w=$WORK/usr max_sectors
    max_sectors=$(cat "$2/attrib/hw_max_sectors")
    soft assert_grep 'SCCS=1 .*TPGS=3 +3PC=1' "$w.inq.txt" "usr: INQUIRY claims ALUA (from configfs) and EXTENDED COPY"
    soft assert_grep 'Maximum compare and write length: 1 blocks' "$w.vpdb0.txt" "usr: VPD 0xb0 COMPARE AND WRITE length 1"
    soft assert_grep 'length=96 ' "$w.inq.txt" "usr: 96-byte standard INQUIRY like the kernel's"
    soft assert_grep 'designator_type: NAA' "$w.vpd83.txt" "usr: VPD 0x83 NAA designator"
    soft assert_grep 'designator_type: T10 vendor identification' "$w.vpd83.txt" "usr: VPD 0x83 T10 designator"
    soft assert_grep "Maximum transfer length: $max_sectors blocks" "$w.vpdb0.txt" "usr: VPD 0xb0 max transfer = hw_max_sectors"
    soft assert_grep '\(LBPRZ\): 1' "$w.vpdb2.txt" "usr: VPD 0xb2 LBPRZ (holes read zeros)"
    soft assert_grep 'Provisioning type: 2' "$w.vpdb2.txt" "usr: VPD 0xb2 thin provisioning"
    soft assert_grep 'lbprz=1' "$w.readcap.txt" "usr: READ CAPACITY(16) LBPRZ"
}

# query KIND SG: run every read-only query on SG; raw answers go to
# $WORK/KIND.*.txt (a failing command fails the test).
QUERIES=(inq vpd00 vpd80 vpd83 vpdb0 vpdb2 readcap modes caching)
query() {
    local kind=$1 sg=$2 q
    for q in "${QUERIES[@]}"; do
        local out=$WORK/$kind.$q.txt
        case $q in
            inq) sg_inq "$sg" ;;
            vpd00) sg_inq --page=0x00 "$sg" ;;
            vpd80) sg_inq --page=0x80 "$sg" ;;
            vpd83) sg_inq --page=0x83 "$sg" ;;
            vpdb0) sg_inq --page=0xb0 "$sg" ;;
            vpdb2) sg_vpd --page=0xb2 "$sg" ;;
            readcap) sg_readcap -l "$sg" ;;
            modes) sg_modes -a "$sg" ;;
            caching) sg_modes -p 8 "$sg" ;;
        esac >"$out" 2>&1 || { cat "$out"; soft fail "$kind: '$q' query failed"; }
    done
}

# check_answers KIND SG DEV SERIAL: the answers make sense on their own.
check_answers() {
    local kind=$1 sg=$2 dev=$3 serial=$4 w=$WORK/$1
    log "$kind: checking answers of $sg"
    soft assert_grep 'Vendor identification: *LIO-ORG' "$w.inq.txt" "$kind: INQUIRY vendor"
    soft assert_grep "Number of logical blocks=$blocks\$" "$w.readcap.txt" "$kind: READ CAPACITY(16) block count"
    soft assert_grep 'Logical block length=512 bytes' "$w.readcap.txt" "$kind: READ CAPACITY(16) block size"
    soft assert_grep 'lbpme=1' "$w.readcap.txt" "$kind: READ CAPACITY(16) LBPME (thin provisioning)"
    local page
    for page in 0x80 0x83 0xb0 0xb2; do
        soft assert_grep "^ +$page[[:space:]]" "$w.vpd00.txt" "$kind: VPD page $page listed in VPD 0x00"
    done
    soft assert_grep "Unit serial number: $serial\$" "$w.vpd80.txt" "$kind: VPD 0x80 serial"
    soft assert_grep 'Unmap command supported \(LBPU\): 1' "$w.vpdb2.txt" "$kind: VPD 0xb2 LBPU"
    soft assert_grep 'Write same \(16\) with unmap bit supported \(LBPWS\): 1' "$w.vpdb2.txt" "$kind: VPD 0xb2 LBPWS"
    # Caching mode page: byte 2 bit 2 is WCE.
    local byte2
    byte2=$(awk '/Caching/ {getline; print $4; exit}' "$w.caching.txt")
    if [[ -z $byte2 ]]; then
        soft fail "$kind: no caching mode page in MODE SENSE"
    elif (((16#$byte2 & 4) == 0)); then
        soft fail "$kind: WCE not set in the caching mode page (byte 2 = 0x$byte2)"
    fi
    local cache_type
    cache_type=$(cat /sys/block/"${dev#/dev/}"/device/scsi_disk/*/cache_type)
    soft assert_eq "$cache_type" "write back" "$kind: sd's view of the write cache"
}

# check_commands KIND SG DEV: UNMAP, WRITE SAME, SYNCHRONIZE CACHE.
check_commands() {
    local kind=$1 sg=$2 dev=$3
    log "$kind: UNMAP / WRITE SAME / SYNCHRONIZE CACHE on $sg"
    # Fill LBAs 1024..1279 with random data, unmap 1024..1151: zeros there,
    # the rest untouched.
    dd if=/dev/urandom of="$WORK/rand" bs=512 count=256 status=none
    dd if="$WORK/rand" of="$dev" bs=512 seek=1024 oflag=direct status=none || fail "$kind: dd write failed"
    sg_unmap --force --lba=1024 --num=128 "$sg" >/dev/null || fail "$kind: sg_unmap failed"
    dd if="$dev" bs=512 skip=1024 count=128 iflag=direct status=none | cmp -s - <(head -c 65536 /dev/zero) \
        || fail "$kind: unmapped blocks do not read back as zeros"
    dd if="$dev" bs=512 skip=1152 count=128 iflag=direct status=none |
        cmp -s - <(tail -c 65536 "$WORK/rand") || fail "$kind: UNMAP changed blocks outside its range"

    # WRITE SAME of a 512-byte pattern over 16 blocks at LBA 2000.
    local i
    for i in $(seq 64); do printf 'TCMU-RS!'; done >"$WORK/pat"
    sg_write_same --in="$WORK/pat" --lba=2000 --num=16 "$sg" || fail "$kind: sg_write_same failed"
    dd if="$dev" bs=512 skip=2000 count=16 iflag=direct status=none |
        cmp -s - <(for i in $(seq 16); do cat "$WORK/pat"; done) \
        || fail "$kind: WRITE SAME pattern does not read back"

    # WRITE SAME(16) with UNMAP over the same blocks: zeros.
    sg_write_same --16 --unmap --lba=2000 --num=16 "$sg" || fail "$kind: sg_write_same --unmap failed"
    dd if="$dev" bs=512 skip=2000 count=16 iflag=direct status=none | cmp -s - <(head -c 8192 /dev/zero) \
        || fail "$kind: WRITE SAME with UNMAP does not read back as zeros"

    sg_sync "$sg" || fail "$kind: sg_sync failed"
    sg_sync --16 "$sg" || fail "$kind: sg_sync --16 failed"
}

query ref "$REF_SG"
check_answers ref "$REF_SG" "$REF_DEV" "$REF_SERIAL"
soft check_commands ref "$REF_SG" "$REF_DEV"
((PROBLEMS == 0)) || fail "the reference fileio LUN fails the checks: the test or the kernel is wrong"

query usr "$USR_SG"
check_answers usr "$USR_SG" "$USR_DEV" "$USR_SERIAL"
[[ -n "${HARNESS_SELFTEST:-}" ]] || check_intended "$USR_SG" "$USR_BS"
soft check_commands usr "$USR_SG" "$USR_DEV"

log "comparing every answer with fileio's"
diffs=0
for q in "${QUERIES[@]}"; do
    mask <"$WORK/ref.$q.txt" | normalize "$q" >"$WORK/ref.$q.masked"
    mask <"$WORK/usr.$q.txt" | normalize "$q" >"$WORK/usr.$q.masked"
    if ! diff -u --label "fileio/$q" --label "user:file/$q" \
        "$WORK/ref.$q.masked" "$WORK/usr.$q.masked"; then
        diffs=$((diffs + 1))
    fi
done
((diffs == 0)) || soft fail "$diffs answer(s) differ from the kernel fileio backstore (diffs above)"
((PROBLEMS == 0)) || fail "$PROBLEMS problem(s), see the FAIL lines and diffs above"

undo_all
daemon_stop
