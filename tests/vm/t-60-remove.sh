#!/bin/bash
# t-60-remove: devices can be removed while the daemon runs.
#
# 1. An idle device: unexport it and rmdir its backstore: rmdir returns
#    promptly, the daemon logs the removal and stays up.
# 2. Two devices, fio running on one: remove the other; fio finishes with no
#    errors, the daemon stays up.

source "$(dirname "$0")/lib.sh"

load_modules
daemon_start

size=$((64 * 1024 * 1024))

# remove_device NAME TPG BS: unexport, then rmdir the backstore within 10 s;
# the daemon must log a line naming the device.
remove_device() {
    local name=$1 tpg=$2 bs=$3
    log_mark
    loop_unexport "$tpg" || fail "unexporting $name failed"
    local start=$SECONDS rc=0
    rmdir_timeout "$bs" 10 || rc=$?
    [[ $rc -ne 124 ]] || fail "rmdir of $name hung (the daemon did not answer REMOVED_DEVICE?)"
    [[ $rc -eq 0 ]] || fail "rmdir of $name failed (status $rc)"
    log "rmdir of $name returned after $((SECONDS - start))s"
    wait_for 5 "a daemon log line about removing $name" sh -c "tail -c +$((LOG_MARK + 1)) '$LOGDIR/tcmu-runner.log' | grep -q -- '$name'"
    daemon_alive || fail "the daemon died after $name was removed"
}

# --- 1. idle device
user_file_backstore idle_rm "$size" "$WORK/idle.img"
loop_export "$BS_PATH"
dd_roundtrip "$DEV" 1
remove_device idle_rm "$LOOP_TPG" "$BS_PATH"

# --- 2. remove one device while fio runs on another
user_file_backstore busy "$size" "$WORK/busy.img"
loop_export "$BS_PATH"
BUSY_DEV=$DEV
user_file_backstore other_rm "$size" "$WORK/other.img"
loop_export "$BS_PATH"
OTHER_TPG=$LOOP_TPG OTHER_BS=$BS_PATH

secs=$((FIO_RUNTIME / 3 > 15 ? FIO_RUNTIME / 3 : 15))
log "fio on $BUSY_DEV for ${secs}s; removing other_rm meanwhile"
fio_bg busy "$BUSY_DEV" "$secs"
busy_fio=$FIO_PID
sleep 3
remove_device other_rm "$OTHER_TPG" "$OTHER_BS"
kill -0 "$busy_fio" 2>/dev/null || log "note: fio had already finished when other_rm was removed"
fio_wait busy "$busy_fio"

undo_all
daemon_stop
