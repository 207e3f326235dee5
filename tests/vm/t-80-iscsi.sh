#!/bin/bash
# t-80-iscsi: a user:file LUN served through LIO's iSCSI target on
# 127.0.0.1, used by real initiators, and libiscsi's conformance suite run
# against it and against the kernel's fileio backstore.
#
# 1. A 128 MiB user:file backstore is exported as LUN 0 of one iSCSI target,
#    a fileio backstore of the same size (thin provisioning and write cache
#    on, like ours) as LUN 0 of a second one (demo mode, no authentication,
#    same portal).
# 2. libiscsi's tools: iscsi-ls lists both targets with LUN 0, iscsi-inq
#    reports a direct-access LU with vendor LIO-ORG and our product name,
#    iscsi-readcapacity16 reports 512-byte blocks and the right size.
# 3. The kernel's initiator, driven by open-iscsi (iscsid started here):
#    sendtargets discovery, login, the disk found through sysfs; its size; a
#    dd round trip; mkfs.ext4, files written, fsck -fn clean, checksums equal
#    after a remount with cold caches; fio randwrite with crc32c verify
#    (iodepth 16); the whole device equal to its backing file; logout.
#    Any failure here fails the test.
# 4. iscsi-test-cu (destructive tests allowed) runs the suites of
#    $ISCSI_TEST_CU (default below; "SCSI,iSCSI" families or suite names,
#    comma-separated), each against fileio then ours, within the time left
#    of $TEST_TIMEOUT (suites not started are reported). The full output
#    goes to the test's log folder (iscsi-test-cu.fileio.txt, .ours.txt),
#    one line per test with both results to iscsi-test-cu.compare.txt; a
#    test that fails on ours but not on fileio fails t-80 unless it is in
#    the short, explained list at the end.

source "$(dirname "$0")/lib.sh"

# The default: the suites of the commands a disk LUN serves every day (one
# CDB size each for READ/WRITE), reservations, and the iSCSI suites that move
# data through the backstore (residuals) or abort commands in it (TMF);
# 1.5-3 minutes under TCG. Every family ("SCSI,iSCSI", about 11 minutes) is
# one ISCSI_TEST_CU away (raise TEST_TIMEOUT with it).
DEFAULT_CU_SUITES=(
    SCSI.Inquiry SCSI.Mandatory SCSI.TestUnitReady SCSI.ReadCapacity10
    SCSI.ReadCapacity16 SCSI.ModeSense6 SCSI.ReportSupportedOpcodes
    SCSI.StartStopUnit
    SCSI.Read6 SCSI.Read10 SCSI.Read16 SCSI.Write10 SCSI.Prefetch10 SCSI.Unmap SCSI.GetLBAStatus SCSI.CompareAndWrite
    SCSI.OrWrite
    SCSI.Reserve6 SCSI.PrinReadKeys SCSI.PrinReportCapabilities
    SCSI.ProutRegister SCSI.ProutReserve
    iSCSI.iSCSIResiduals iSCSI.iSCSITMF
)
CU_SUITE_SECS=${CU_SUITE_SECS:-120}

# cu_suites: the suite names to run, from $ISCSI_TEST_CU (families are
# expanded with iscsi-test-cu --list) or the default list.
cu_suites() {
    if [[ -z "${ISCSI_TEST_CU:-}" ]]; then
        printf '%s\n' "${DEFAULT_CU_SUITES[@]}"
        return
    fi
    local item
    for item in ${ISCSI_TEST_CU//,/ }; do
        if [[ $item == *.* ]]; then
            echo "$item"
        else
            iscsi-test-cu --list | grep -E "^$item\.[A-Za-z0-9_-]+\$"
        fi
    done
}

load_modules
load_iscsi_modules
dmesg_mark
daemon_start
log_mark

size=$((128 * 1024 * 1024))
img=$WORK/i0.img
user_file_backstore i0 "$size" "$img"
iscsi_export ours "$BS_PATH"
USR_IQN=$ISCSI_IQN USR_URL=$ISCSI_URL
# The reference advertises what a user:file LUN does (thin provisioning, a
# write-back cache), as in t-30, so that their UNMAP tests run on both.
fileio_backstore iref "$size" "$WORK/iref.img"
for a in emulate_tpu emulate_tpws emulate_write_cache; do
    echo 1 >"$BS_PATH/attrib/$a" || fail "cannot set $a on the fileio reference"
done
iscsi_export ref "$BS_PATH"
REF_URL=$ISCSI_URL

# --- libiscsi's tools -------------------------------------------------------
product="TCMU device"
[[ -n "${HARNESS_SELFTEST:-}" ]] && product=FILEIO

iscsi-ls -s "iscsi://$ISCSI_HOST" >"$WORK/iscsi-ls.txt" 2>&1 ||
    { cat "$WORK/iscsi-ls.txt"; fail "iscsi-ls failed"; }
assert_grep "^Target:$USR_IQN Portal:$ISCSI_PORTAL,1" "$WORK/iscsi-ls.txt" "iscsi-ls lists our target"
assert_grep "^Target:$(iscsi_iqn ref) Portal:" "$WORK/iscsi-ls.txt" "iscsi-ls lists the fileio target"
[[ $(grep -c '^Lun:0 .*DIRECT_ACCESS' "$WORK/iscsi-ls.txt") -eq 2 ]] ||
    { cat "$WORK/iscsi-ls.txt"; fail "iscsi-ls does not show LUN 0 as a disk on both targets"; }

iscsi-inq "$USR_URL" >"$WORK/iscsi-inq.txt" 2>&1 || { cat "$WORK/iscsi-inq.txt"; fail "iscsi-inq failed"; }
assert_grep '^Peripheral Device Type:DIRECT_ACCESS' "$WORK/iscsi-inq.txt" "iscsi-inq: device type"
assert_eq "$(sed -n 's/^Vendor:\(.*[^ ]\) *$/\1/p' "$WORK/iscsi-inq.txt")" "LIO-ORG" "iscsi-inq: vendor"
assert_eq "$(sed -n 's/^Product:\(.*[^ ]\) *$/\1/p' "$WORK/iscsi-inq.txt")" "$product" "iscsi-inq: product"

iscsi-readcapacity16 "$USR_URL" >"$WORK/iscsi-readcap16.txt" 2>&1 ||
    { cat "$WORK/iscsi-readcap16.txt"; fail "iscsi-readcapacity16 failed"; }
assert_grep "^RETURNED LOGICAL BLOCK ADDRESS:$((size / 512 - 1))\$" "$WORK/iscsi-readcap16.txt" "READ CAPACITY(16): last LBA"
assert_grep '^LOGICAL BLOCK LENGTH IN BYTES:512$' "$WORK/iscsi-readcap16.txt" "READ CAPACITY(16): block length"
assert_grep "^Total size:$size\$" "$WORK/iscsi-readcap16.txt" "READ CAPACITY(16): size"
log "libiscsi: both targets listed, INQUIRY LIO-ORG/$product, capacity $size bytes"

# --- the kernel's initiator through open-iscsi ------------------------------
iscsid_start
iscsi_login "$USR_IQN"
assert_eq "$(dev_size_bytes "$DEV")" "$size" "size of $DEV"
dd_roundtrip "$DEV" 5

ext4_roundtrip "$DEV" 4 8

fio_bg iscsi "$DEV" $((FIO_RUNTIME < 20 ? FIO_RUNTIME : 20))
fio_wait iscsi "$FIO_PID"
echo 3 >/proc/sys/vm/drop_caches
cmp "$DEV" "$img" || fail "the iSCSI disk and its backing file differ"

iscsi_logout "$USR_IQN" || fail "logout from $USR_IQN failed: the session is still there"
log "logged out of $USR_IQN"

# --- libiscsi's conformance suite: fileio vs ours ---------------------------
mapfile -t suites < <(cu_suites)
((${#suites[@]} > 0)) || fail "no iscsi-test-cu suite selected (ISCSI_TEST_CU='${ISCSI_TEST_CU:-}')"
# Suite by suite, fileio then ours, within what is left of the test's time
# limit less two minutes for the rest: if time runs out, both lose the same
# suites.
budget=$((${TEST_TIMEOUT:-1800} - SECONDS - 120))
((budget >= 60)) || budget=60
deadline=$((SECONDS + budget))
log "iscsi-test-cu: ${#suites[@]} suites, each against fileio then ours (budget ${budget}s)"
CU_REF=$LOGDIR/iscsi-test-cu.fileio.txt CU_USR=$LOGDIR/iscsi-test-cu.ours.txt
: >"$CU_REF"
: >"$CU_USR"
# cu_suite URL OUT SUITE: one suite, if time is left.
cu_suite() {
    local left=$((deadline - SECONDS))
    if ((left <= 0)); then
        iscsi_test_cu_not_run "$2" "$3"
    else
        iscsi_test_cu "$1" "$2" $((left < CU_SUITE_SECS ? left : CU_SUITE_SECS)) "$3"
    fi
}
for suite in "${suites[@]}"; do
    cu_suite "$REF_URL" "$CU_REF" "$suite"
    cu_suite "$USR_URL" "$CU_USR" "$suite"
done
log "iscsi-test-cu: done"
[[ -n "${HARNESS_SELFTEST:-}" ]] || daemon_alive || fail "the daemon died during iscsi-test-cu"

iscsi_test_cu_results "$CU_REF" >"$WORK/cu.fileio"
iscsi_test_cu_results "$CU_USR" >"$WORK/cu.ours"
# test fileio ours [message of ours]: every test either run reported.
awk '
    FNR == NR { ref[$1] = $2; order[++n] = $1; next }
    {
        msg = $0; sub(/^[^ ]+ [^ ]+ ?/, "", msg)
        if (!($1 in ref)) { order[++n] = $1; ref[$1] = "-" }
        ours[$1] = $2; why[$1] = msg
    }
    END {
        for (i = 1; i <= n; i++) {
            t = order[i]; o = (t in ours) ? ours[t] : "-"
            printf "%-44s %-7s %-7s %s\n", t, ref[t], o, (o == "FAIL" || o == "SKIP" || o == "ERROR" || o == "NOTRUN") ? why[t] : ""
        }
    }' "$WORK/cu.fileio" "$WORK/cu.ours" >"$LOGDIR/iscsi-test-cu.compare.txt"

# tally FILE: "N pass, N skip, N fail, N not run".
tally() {
    awk '{ c[$2]++ } END { printf "%d pass, %d skip, %d fail, %d not run/error\n",
        c["PASS"], c["SKIP"], c["FAIL"], c["NOTRUN"] + c["ERROR"] }' "$1"
}
log "iscsi-test-cu fileio: $(tally "$WORK/cu.fileio")"
log "iscsi-test-cu ours:   $(tally "$WORK/cu.ours")"
worse=$(awk '$3 ~ /^(FAIL|NOTRUN|ERROR)$/ && $2 !~ /^(FAIL|NOTRUN|ERROR)$/' "$LOGDIR/iscsi-test-cu.compare.txt")
if [[ -n $worse ]]; then
    log "iscsi-test-cu: failing on ours but not on fileio:"
    echo "$worse"
fi
# Known and explained; anything else that fails on ours (FAIL or ERROR, not
# a suite cut short by the time budget) while passing on fileio fails the
# test:
# - iSCSIResiduals.Read*: an initiator buffer larger than the transfer is an
#   iSCSI residual *overflow*, which LIO computes in its SBC parser; TCMU
#   devices bypass it and the ring can only report a shorter read.
# - ReportSupportedOpcodes.OneCommand: libiscsi reads usage byte 0 of WRITE
#   SAME (32) as 0, though the answer (sg_opcodes -o 0x7f -s 0xd) is right:
#   libiscsi's one-command result keeps 16 bytes of CDB usage data
#   (cdb_usage_data[16] in scsi-lowlevel.h) and this CDB is 32 bytes long.
# - Reserve6.Logout, Reserve6.ITNexusLoss: the kernel answers reservations
#   for both backstores; these depend on LIO's session teardown timing.
known='^(iSCSIResiduals\.Read(10Invalid|10Residuals|12Residuals|16Residuals)|ReportSupportedOpcodes\.OneCommand|Reserve6\.(Logout|ITNexusLoss))$'
unexplained=$(awk -v known="$known" '$3 ~ /^(FAIL|ERROR)$/ && $2 !~ /^(FAIL|NOTRUN|ERROR)$/ && $1 !~ known { print $1 }' \
    "$LOGDIR/iscsi-test-cu.compare.txt")
# iSCSITMF.AbortTaskSimpleAsync sends a WRITE and at once ABORT TASK for
# it. When the daemon's completion of the WRITE meets the abort inside LIO
# (target_complete_cmd checks CMD_T_ABORTED before it sets CMD_T_COMPLETE,
# without the lock __target_check_io_state takes), the WRITE is answered
# GOOD and the abort then waits for the initiator to acknowledge that
# status, which libiscsi does only at logout: "1 IOs completed, 0 aborts
# successful, 0 aborts unsuccessful" after 5 s. The daemon did its part
# (the WRITE was answered); fileio never meets it because it completes
# the WRITE before LIO reads the abort. Only that outcome is re-run, up to
# three times, and one clean pass is required.
race='1 IOs completed, 0 aborts successful, 0 aborts unsuccessful'
if grep -qx 'iSCSITMF.AbortTaskSimpleAsync' <<<"$unexplained" && grep -q "$race" "$CU_USR"; then
    # Every try is appended to one log; the result is the last try's.
    rerun=$LOGDIR/iscsi-test-cu.ours.abort-rerun.txt
    : >"$rerun"
    for try in 1 2 3; do
        iscsi_test_cu "$USR_URL" "$rerun" 60 iSCSI.iSCSITMF.AbortTaskSimpleAsync
        result=$(iscsi_test_cu_results "$rerun" | awk '$1 == "iSCSITMF.AbortTaskSimpleAsync" { r = $2 } END { print r }')
        log "AbortTaskSimpleAsync hit LIO's abort/completion race (WRITE GOOD, abort unanswered); re-run $try: $result"
        if [[ $result == PASS ]]; then
            unexplained=$(grep -vx 'iSCSITMF.AbortTaskSimpleAsync' <<<"$unexplained" || true)
            break
        fi
    done
fi
[[ -z $unexplained ]] || fail "iscsi-test-cu tests that pass on fileio fail on ours: $(echo $unexplained)"

# Every command the TMF tests got aborted inside the daemon was completed
# with KEEP_BUF, and its buffer freed once the kernel had seen that
# completion: no refused free_kept_buf (a buffer and command id lost for
# good), no broken ring.
aborted=$(log_since | grep -cE ': command [0-9]+ \(CDB [^)]*\) aborted' || true)
freed=$(log_since | grep -c 'kept buffer of aborted command .* freed' || true)
log "aborts that reached the daemon: $aborted commands aborted, $freed kept buffers freed"
assert_eq "$freed" "$aborted" "kept buffers freed for the aborted commands"
! log_since | grep 'cannot free the kept buffer' || fail "the daemon could not free a kept buffer"
kept_buffers_check
log "iscsi-test-cu: full output and comparison in \$XT_OUT/logs/$TEST_NAME/"

undo_all
daemon_stop
log "iSCSI: libiscsi tools, open-iscsi login, ext4 + fsck, fio verify and cmp all good"
