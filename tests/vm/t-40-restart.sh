#!/bin/bash
# t-40-restart: the daemon can crash or stop and come back.
#
# 1. With fio writing (and verifying) on a user:file LUN, kill -9 the daemon
#    and start it again: it must take the device back and fio must finish
#    without errors; the device then equals its backing file.
# 2. Stop the daemon, create a new user:file device while none runs (the
#    kernel may hold `enable` until a daemon answers: it runs in the
#    background), start the daemon: enable must succeed and the new device
#    must be served (sg_readcap, dd).
# 3. Kill -9 the daemon, then create a device: the kernel, told by the dead
#    daemon that replies come, now holds `enable` until a daemon answers.
#    Start the daemon: it must answer the pending ADDED_DEVICE, so enable
#    succeeds, and serve the device.

source "$(dirname "$0")/lib.sh"

load_modules
daemon_start

size=$((128 * 1024 * 1024))
user_file_backstore r0 "$size" "$WORK/r0.img"
loop_export "$BS_PATH"
R0_DEV=$DEV

# --- 1. crash and recover under I/O
secs=$((FIO_RUNTIME / 2 > 20 ? FIO_RUNTIME / 2 : 20))
log "fio on $R0_DEV for ${secs}s; kill -9 the daemon after 5s"
fio_bg crash "$R0_DEV" "$secs"
crash_fio=$FIO_PID
sleep 5
kill -0 "$crash_fio" 2>/dev/null || fail "fio ended before the crash"
daemon_kill9
log "daemon killed; restarting it in 2s"
sleep 2
daemon_start
fio_wait crash "$crash_fio"
daemon_alive || fail "the restarted daemon died"

echo 3 >/proc/sys/vm/drop_caches
cmp "$R0_DEV" "$WORK/r0.img" || fail "after recovery, $R0_DEV differs from its backing file"

# --- 2. a device created while no daemon runs
daemon_stop
log "creating n0 with no daemon running"
truncate -s "$size" "$WORK/n0.img"
rc=0
user_backstore n0 "$size" "file/$WORK/n0.img" 5 || rc=$?
N0_BS=$BS_PATH
enable_pid=
case $rc in
    0) log "enable returned at once (the kernel did not wait for a daemon)" ;;
    124)
        enable_pid=$WRITE_PID
        log "enable is waiting for a daemon (pid $enable_pid), as the kernel does once a daemon asked for netlink replies"
        ;;
    *) fail "enable of n0 failed with no daemon running (status $rc)" ;;
esac

# wait_enable NAME PID: the backgrounded `echo 1 > enable` of NAME must
# finish, successfully, within 30 s of the daemon's start.
wait_enable() {
    local name=$1 pid=$2 deadline=$((SECONDS + 30)) erc=0
    while kill -0 "$pid" 2>/dev/null; do
        ((SECONDS < deadline)) || fail "enable of $name still blocked 30s after the daemon started"
        sleep 0.2
    done
    wait "$pid" || erc=$?
    [[ $erc -eq 0 ]] || fail "enable of $name failed once the daemon started (status $erc): the pending ADDED_DEVICE was not answered"
}

# served NAME BS_PATH: export the backstore and check it answers and stores.
served() {
    loop_export "$2"
    sg_readcap -l "$SG" >"$WORK/$1.readcap.txt" || fail "sg_readcap on $1 failed"
    assert_grep "Number of logical blocks=$((size / 512))\$" "$WORK/$1.readcap.txt" "capacity of $1"
    dd if="$DEV" of=/dev/null bs=1M count=16 iflag=direct status=none || fail "dd read of $1 failed"
    dd_roundtrip "$DEV" 7
}

daemon_start
[[ -z $enable_pid ]] || wait_enable n0 "$enable_pid"
served n0 "$N0_BS"

# --- 3. a device created after a crash, while the kernel expects replies
daemon_kill9
log "creating n1 after a crash: the kernel must hold enable until a daemon answers"
truncate -s "$size" "$WORK/n1.img"
rc=0
user_backstore n1 "$size" "file/$WORK/n1.img" 3 || rc=$?
N1_BS=$BS_PATH
[[ $rc -eq 124 ]] || fail "enable of n1 did not wait for a daemon (status $rc)"
n1_enable=$WRITE_PID
daemon_start
wait_enable n1 "$n1_enable"
assert_grep 'user_1/n1: recovered' "$(daemon_log)" "the daemon's log of taking n1 over"
served n1 "$N1_BS"
daemon_alive || fail "the daemon died"

undo_all
daemon_stop
