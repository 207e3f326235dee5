#!/bin/bash
# t-70-reconfig: configuration changes of a running device (netlink
# RECONFIG_DEVICE) are applied.
#
# 1. Resize: writing attrib/dev_size of a served 64 MiB user:file device
#    grows it to 128 MiB; after a rescan the disk has the new capacity, the
#    backing file has grown, and the new blocks take and return data.
# 2. Write cache: writing 0, then 1, to attrib/emulate_write_cache turns the
#    reported WCE bit (caching mode page) off and on again.
# 3. A new dev_config naming another file is refused (the write fails), and
#    the device keeps serving.

source "$(dirname "$0")/lib.sh"

load_modules
daemon_start

small=$((64 * 1024 * 1024))
big=$((128 * 1024 * 1024))
img=$WORK/rc0.img
user_file_backstore rc0 "$small" "$img"
RC_BS=$BS_PATH
loop_export "$RC_BS"
dd_roundtrip "$DEV" 3

# --- 1. resize
log "resizing to $big bytes through attrib/dev_size"
write_timeout 20 "$RC_BS/attrib/dev_size" "$big" || fail "writing attrib/dev_size failed"
# The next command gets the unit attention CAPACITY DATA HAS CHANGED.
rc=0
sg_turs "$SG" 2>"$WORK/turs.err" || rc=$?
[[ $rc -eq 6 ]] && grep -qi 'capacity data has changed' "$WORK/turs.err" \
    || { cat "$WORK/turs.err"; fail "no CAPACITY DATA HAS CHANGED unit attention after the resize (rc $rc)"; }
echo 1 >"/sys/class/scsi_device/$SCSI_ADDR/device/rescan"
wait_for 20 "the new capacity of $DEV" dev_size_is "$DEV" "$big"
assert_eq "$(stat -c %s "$img")" "$big" "size of the backing file after the resize"
dd_roundtrip "$DEV" 100
sg_readcap -l "$SG" >"$WORK/readcap.txt" || fail "sg_readcap after the resize failed"
assert_grep "Number of logical blocks=$((big / 512))\$" "$WORK/readcap.txt" "READ CAPACITY(16) after the resize"

# wce SG: the WCE bit of the caching mode page (0 or 1).
wce() {
    local byte2
    byte2=$(sg_modes -p 8 "$1" | awk '/Caching/ {getline; print $4; exit}')
    [[ -n $byte2 ]] || fail "no caching mode page"
    echo $(((16#$byte2 >> 2) & 1))
}

# --- 2. write cache
assert_eq "$(wce "$SG")" 1 "WCE of a file-backed device"
log "turning the write cache off and on through attrib/emulate_write_cache"
write_timeout 20 "$RC_BS/attrib/emulate_write_cache" 0 || fail "writing emulate_write_cache=0 failed"
assert_eq "$(wce "$SG")" 0 "WCE after emulate_write_cache=0"
dd_roundtrip "$DEV" 5
write_timeout 20 "$RC_BS/attrib/emulate_write_cache" 1 || fail "writing emulate_write_cache=1 failed"
assert_eq "$(wce "$SG")" 1 "WCE after emulate_write_cache=1"

# --- 3. another backing file is refused
log "changing dev_config to another file (must be refused)"
rc=0
write_timeout 20 "$RC_BS/attrib/dev_config" "file/$WORK/other.img" || rc=$?
[[ $rc -ne 124 ]] || fail "writing attrib/dev_config hung"
[[ $rc -ne 0 ]] || fail "changing the backing file of a running device was accepted"
assert_grep 'rc0: reconfiguration refused' "$(daemon_log)" "the daemon's log of the refusal"
dd_roundtrip "$DEV" 7
daemon_alive || fail "the daemon died"

undo_all
daemon_stop
