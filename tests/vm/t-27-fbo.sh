#!/bin/bash
# t-27-fbo: user:fbo LUNs are optical drives to the kernel's sr driver.
#
# 1. fbo/ro/ over an ISO 9660 image made by xorriso: the LUN binds to sr
#    as /dev/srN (SCSI type 5), 2048-byte blocks, read-only
#    (blockdev --getro 1); the image mounts and every file's checksum
#    matches; a WRITE (10) gets DATA PROTECT, WRITE PROTECTED; GET
#    CONFIGURATION's current profile is DVD-ROM.
# 2. While mounted the kernel holds the disc (PREVENT ALLOW MEDIUM
#    REMOVAL): START STOP UNIT's eject is ILLEGAL REQUEST, MEDIUM REMOVAL
#    PREVENTED. Unmounted, START STOP UNIT (through sg, so that the media
#    events are not the kernel's to take) opens the tray: TEST UNIT READY
#    and READ are NOT READY, MEDIUM NOT PRESENT - TRAY OPEN, GET EVENT
#    STATUS NOTIFICATION reports the media removal once, no current
#    profile; a load: a new media event, ready again. Then the same through
#    the kernel's cdrom layer with `eject` and `eject -t`, and the disc
#    mounts again with the same files.
# 3. fbo/ over a writable file: a DVD-RAM drive (current profile DVD-RAM,
#    --getro 0); mkudffs over /dev/srN, mount read-write, copy files,
#    unmount, mount again: the same checksums (Debian packages no fsck for
#    UDF: the second mount and the checksums are the check).
# 4. FORMAT UNIT with IMMED: GOOD at once, then REQUEST SENSE reports NOT
#    READY, FORMAT IN PROGRESS with a progress that never goes back, TEST
#    UNIT READY is NOT READY meanwhile; when it ends the whole disc (and
#    its file) reads zeroes.

source "$(dirname "$0")/lib.sh"

MIB=$((1024 * 1024))

load_modules
for m in sr_mod isofs udf; do
    modprobe "$m" || fail "modprobe $m failed"
done

SG_LOG=$WORK/sg_raw.txt

# answer SG_RAW_ARGS...: send a command with sg_raw -v and print its
# answer as one line: "GOOD bytes=N" or "CHECK K/AA/QQ" from the raw sense
# bytes (fixed format). sg_raw's whole report goes to $SG_LOG.
answer() {
    local out=$WORK/answer.txt
    sg_raw -v -t 20 "$@" >"$out" 2>&1 || true
    { echo "=== sg_raw $*"; cat "$out"; } >>"$SG_LOG"
    awk '
        in_raw && /^ +[0-9a-f][0-9a-f]( +[0-9a-f][0-9a-f])* *$/ { raw = raw " " $0; next }
        { in_raw = 0 }
        /^SCSI Status: / { status = $0; sub(/^SCSI Status: /, "", status); sub(/ +$/, "", status) }
        /Raw sense data/ { in_raw = 1 }
        /^Received [0-9]+ bytes of data/ { bytes = $2 }
        END {
            if (status == "Good") { printf "GOOD bytes=%d\n", bytes; exit }
            if (status != "Check Condition") { printf "ERROR %s\n", (status == "" ? "no status" : status); exit }
            n = split(raw, b, " ")
            if (n < 14) { print "CHECK without fixed sense"; exit }
            printf "CHECK %s/%s/%s\n", substr(b[3], 2, 1), b[13], b[14]
        }' "$out"
}

# expect WHAT WANTED SG_RAW_ARGS...: the answer must be WANTED (a pending
# unit attention, from LUNs coming and going, is taken first).
expect() {
    local what=$1 want=$2 got
    shift 2
    got=$(answer "$@")
    [[ $got != "CHECK 6/"* ]] || got=$(answer "$@")
    [[ $got == "$want" ]] || { tail -n 20 "$WORK/answer.txt"; fail "$what: got '$got', expected '$want'"; }
    log "$what: $got"
}

# data_in FILE LEN SG_RAW_ARGS...: the data-in of a command (which must be
# GOOD) into FILE; prints its bytes as decimal numbers.
data_in() {
    local file=$1 len=$2
    shift 2
    sg_turs "$1" >/dev/null 2>&1 || true
    sg_raw -r "$len" -o "$file" -t 20 "$@" >>"$SG_LOG" 2>&1 || fail "sg_raw $* failed"
    od -An -v -tu1 "$file" | tr -s ' \n' ' '
}

# byte N BYTES...: the Nth (from 0) of a list of numbers.
byte() {
    local n=$1
    shift
    local a=("$@")
    echo "${a[$n]}"
}

# current_profile SG: GET CONFIGURATION's current profile, in hex.
current_profile() {
    local b
    read -ra b <<<"$(data_in "$WORK/gc.bin" 8 "$1" 46 00 00 00 00 00 00 00 08 00)"
    printf '%02x%02x' "${b[6]}" "${b[7]}"
}

# media_event SG: GET EVENT STATUS NOTIFICATION (polled, media class):
# "EVENT/STATUS" (event code; status 1 tray open, 2 media present).
media_event() {
    local b
    read -ra b <<<"$(data_in "$WORK/gesn.bin" 8 "$1" 4a 01 00 00 10 00 00 00 08 00)"
    [[ ${b[2]} == 4 ]] || fail "GESN answered class ${b[2]}, not media (4)"
    echo "$((b[4] & 15))/$((b[5]))"
}

# A tree of files: sizes that are and are not multiples of the block.
TREE=$WORK/tree
mkdir -p "$TREE/sub/deeper"
for s in 1 2047 2048 2049 65536 1000000 3145728; do
    head -c "$s" /dev/urandom >"$TREE/f$s.bin"
done
head -c 777777 /dev/urandom >"$TREE/sub/deeper/nested.bin"
echo "tcmu-rs fbo" >"$TREE/sub/readme.txt"
(cd "$TREE" && find . -type f -print0 | sort -z | xargs -0 sha256sum) >"$WORK/tree.sha256"
NFILES=$(wc -l <"$WORK/tree.sha256")

# same_files DIR WHAT: DIR holds the tree, checksums equal.
same_files() {
    (cd "$1" && sha256sum --quiet -c "$WORK/tree.sha256") >"$WORK/check.txt" 2>&1 ||
        { cat "$WORK/check.txt"; fail "$2: checksums differ"; }
    log "$2: $NFILES files, checksums equal"
}

MNT=$WORK/mnt
mkdir -p "$MNT"

daemon_start
loop_target
TPG=$LOOP_TPG

# ---------------------------------------------------------------------------
# 1. An ISO 9660 image, read-only.
ISO=$WORK/data.iso
xorriso -as mkisofs -quiet -R -J -V TCMU_FBO -o "$ISO" "$TREE" >"$WORK/xorriso.txt" 2>&1 ||
    { cat "$WORK/xorriso.txt"; fail "xorriso failed"; }
ISO_SIZE=$(stat -c %s "$ISO")
((ISO_SIZE % 2048 == 0)) || fail "the ISO's size $ISO_SIZE is not whole 2048-byte blocks"
ISO_SUM=$(sha256sum <"$ISO")
user_backstore iso "$ISO_SIZE" "fbo/ro/$ISO" || fail "enabling user:fbo ro/ failed"
loop_add_lun "$TPG" 0 "$BS_PATH"
RO=$DEV RO_SG=$SG RO_ADDR=$SCSI_ADDR
[[ $RO == /dev/sr* ]] || fail "the fbo LUN is $RO, not an sr device"
assert_eq "$(cat "/sys/class/scsi_device/$RO_ADDR/device/type")" 5 "SCSI device type of $RO"
assert_eq "$(blockdev --getss "$RO")" 2048 "$RO logical block size"
assert_eq "$(blockdev --getsize64 "$RO")" "$ISO_SIZE" "$RO size"
assert_eq "$(blockdev --getro "$RO")" 1 "blockdev --getro $RO"
assert_eq "$(current_profile "$RO_SG")" 0010 "current profile of the ro/ drive (DVD-ROM)"
expect "WRITE (10) to the ro/ disc" "CHECK 7/27/00" -s 2048 -i /dev/zero "$RO_SG" 2a 00 00 00 00 10 00 00 01 00
if dd if=/dev/zero of="$RO" bs=2048 count=1 seek=16 oflag=direct status=none 2>/dev/null; then
    fail "dd wrote to the read-only $RO"
fi

mount -t iso9660 -o ro "$RO" "$MNT" || fail "mounting the ISO from $RO failed"
push_cleanup "! mountpoint -q $MNT || umount $MNT"
assert_eq "$(blkid -p -o value -s LABEL "$RO")" TCMU_FBO "the ISO's volume label"
same_files "$MNT" "the ISO mounted from $RO"

# ---------------------------------------------------------------------------
# 2. The removal lock, eject and load.
expect "eject while mounted" "CHECK 5/53/02" "$RO_SG" 1b 00 00 00 02 00
umount "$MNT" || fail "umount $RO failed"
# START STOP UNIT through sg: the media events are ours to read (the
# kernel's own GESN polls, e.g. from CDROM_DRIVE_STATUS, would take them).
media_event "$RO_SG" >/dev/null
expect "START STOP UNIT eject" "GOOD bytes=0" "$RO_SG" 1b 00 00 00 02 00
expect "TEST UNIT READY with the tray open" "CHECK 2/3a/02" "$RO_SG" 00 00 00 00 00 00
expect "READ (10) with the tray open" "CHECK 2/3a/02" -r 2048 "$RO_SG" 28 00 00 00 00 10 00 00 01 00
assert_eq "$(media_event "$RO_SG")" 3/1 "GESN after the eject (media removal, tray open)"
assert_eq "$(media_event "$RO_SG")" 0/1 "GESN again (reported once)"
assert_eq "$(current_profile "$RO_SG")" 0000 "current profile with no disc"
expect "START STOP UNIT load" "GOOD bytes=0" "$RO_SG" 1b 00 00 00 03 00
assert_eq "$(media_event "$RO_SG")" 2/2 "GESN after the load (new media, present)"
expect "TEST UNIT READY after the load" "GOOD bytes=0" "$RO_SG" 00 00 00 00 00 00
# The same through the kernel's cdrom layer: eject(1) and eject -t.
eject "$RO" || fail "eject $RO failed"
expect "TEST UNIT READY after eject(1)" "CHECK 2/3a/02" "$RO_SG" 00 00 00 00 00 00
eject -t "$RO" || fail "eject -t $RO failed"
expect "TEST UNIT READY after eject -t" "GOOD bytes=0" "$RO_SG" 00 00 00 00 00 00
mount -t iso9660 -o ro "$RO" "$MNT" || fail "mounting the ISO again after eject and load failed"
same_files "$MNT" "the ISO after eject and load"
umount "$MNT" || fail "umount $RO failed"
assert_eq "$(sha256sum <"$ISO")" "$ISO_SUM" "the ISO file is unchanged"

# ---------------------------------------------------------------------------
# 3. A writable DVD-RAM disc with UDF.
RAM_SIZE=$((256 * MIB))
RAM_FILE=$WORK/dvdram.img
user_backstore dvdram "$RAM_SIZE" "fbo/$RAM_FILE" || fail "enabling user:fbo failed"
[[ -f $RAM_FILE ]] || fail "the fbo handler did not create $RAM_FILE"
loop_add_lun "$TPG" 1 "$BS_PATH"
RW=$DEV RW_SG=$SG
[[ $RW == /dev/sr* ]] || fail "the fbo LUN is $RW, not an sr device"
assert_eq "$(blockdev --getro "$RW")" 0 "blockdev --getro $RW"
assert_eq "$(current_profile "$RW_SG")" 0012 "current profile of the drive (DVD-RAM)"
sg_get_config "$RW_SG" >"$WORK/get_config.txt" 2>&1 || fail "sg_get_config failed"
assert_grep 'Current profile: DVD-RAM' "$WORK/get_config.txt" "sg_get_config"
mkudffs --media-type=dvdram --label=TCMU_UDF "$RW" >"$WORK/mkudffs.txt" 2>&1 ||
    { cat "$WORK/mkudffs.txt"; fail "mkudffs on $RW failed"; }
mount -t udf -o rw "$RW" "$MNT" || fail "mounting UDF read-write from $RW failed"
awk -v m="$MNT" '$2 == m { split($4, o, ","); print o[1] }' /proc/mounts >"$WORK/mode.txt"
assert_eq "$(cat "$WORK/mode.txt")" rw "UDF mount mode"
cp -a "$TREE/." "$MNT/" || fail "copying files to the UDF disc failed"
expect "eject of the mounted DVD-RAM" "CHECK 5/53/02" "$RW_SG" 1b 00 00 00 02 00
umount "$MNT" || fail "umount $RW failed"
mount -t udf -o rw "$RW" "$MNT" || fail "mounting UDF again failed"
same_files "$MNT" "UDF on $RW after a remount"
umount "$MNT" || fail "umount $RW failed"
# Read back through a fresh daemon-side view: the file holds the UDF.
grep -qa 'TCMU_UDF' "$RAM_FILE" || fail "the backing file holds no UDF label"

# ---------------------------------------------------------------------------
# 4. FORMAT UNIT in the background.
blocks=$((RAM_SIZE / 2048))
printf '\x00\x02\x00\x08' >"$WORK/fmt.bin"
printf "\\x$(printf %02x $((blocks >> 24 & 255)))\\x$(printf %02x $((blocks >> 16 & 255)))\\x$(printf %02x $((blocks >> 8 & 255)))\\x$(printf %02x $((blocks & 255)))" >>"$WORK/fmt.bin"
printf '\x00\x00\x08\x00' >>"$WORK/fmt.bin"
assert_eq "$(stat -c %s "$WORK/fmt.bin")" 12 "FORMAT UNIT parameter list length"
sg_turs "$RW_SG" >/dev/null 2>&1 || true
# The first REQUEST SENSE right behind the FORMAT's GOOD, before any check.
sg_raw -v -s 12 -i "$WORK/fmt.bin" -t 20 "$RW_SG" 04 11 00 00 00 00 >"$WORK/format.txt" 2>&1 &&
    sg_raw -r 18 -o "$WORK/rs.bin" -t 20 "$RW_SG" 03 00 00 00 12 00 >>"$SG_LOG" 2>&1 ||
    { cat "$WORK/format.txt"; fail "FORMAT UNIT (IMMED) or the REQUEST SENSE behind it failed"; }
assert_grep 'SCSI Status: Good' "$WORK/format.txt" "FORMAT UNIT (IMMED)"
samples=()
deadline=$((SECONDS + 300))
tur_checked=
first=1
while :; do
    if [[ -z $first ]]; then
        sg_raw -r 18 -o "$WORK/rs.bin" -t 20 "$RW_SG" 03 00 00 00 12 00 >>"$SG_LOG" 2>&1 ||
            fail "REQUEST SENSE during the format failed"
    fi
    first=
    read -ra rs <<<"$(od -An -v -tu1 "$WORK/rs.bin" | tr -s ' \n' ' ')"
    key=$((rs[2] & 15))
    ((key != 0)) || break
    assert_eq "$key/${rs[12]}/${rs[13]}" 2/4/4 "REQUEST SENSE during the format (NOT READY, FORMAT IN PROGRESS)"
    ((rs[15] & 128)) || fail "REQUEST SENSE during the format: SKSV not set"
    samples+=($((rs[16] * 256 + rs[17])))
    if [[ -z $tur_checked ]]; then
        expect "TEST UNIT READY during the format" "CHECK 2/04/04" "$RW_SG" 00 00 00 00 00 00
        tur_checked=1
    fi
    ((SECONDS < deadline)) || fail "the format still runs after 300 s (progress ${samples[*]})"
    sleep 0.2
done
((${#samples[@]} >= 1)) || fail "REQUEST SENSE never saw the format running"
prev=0
for p in "${samples[@]}"; do
    ((p >= prev)) || fail "format progress went back: ${samples[*]}"
    prev=$p
done
log "format progress (of 65536): ${samples[*]}"
expect "TEST UNIT READY after the format" "GOOD bytes=0" "$RW_SG" 00 00 00 00 00 00
cmp -n "$RAM_SIZE" "$RAM_FILE" /dev/zero >/dev/null 2>&1 || fail "the formatted disc's file is not all zeroes"
blockdev --flushbufs "$RW" || true
dd if="$RW" bs=1M iflag=direct status=none | cmp -n "$RAM_SIZE" - /dev/zero >/dev/null 2>&1 ||
    fail "$RW does not read zeroes after the format"
log "after the format $RW and its file read zeroes"

undo_all
daemon_stop
log "PASS"
