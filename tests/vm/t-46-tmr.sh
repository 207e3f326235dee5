#!/bin/bash
# t-46-tmr: a hung backend never wedges the ring. The LUN's backend is a
# device-mapper device that the test suspends, so the daemon's reads of it
# wait in the kernel (io_uring). Then:
#
# 1. READ with a 6 s SG_IO time-out: after 2 s the daemon reports the
#    command as past `;tcmur_cmd_time_out=2;` (log line with its CDB); at
#    6 s the SCSI layer aborts it (ABORT TASK through tcm_loop, delivered
#    to the daemon by `tmr_notification`), the daemon answers TASK ABORTED
#    and the initiator gets its error within seconds, not at the kernel's
#    30 s command time-out. Commands that need no backend are still
#    answered meanwhile.
# 2. Another hung READ, ended by a LUN RESET (sg_reset -d).
# 3. The backend resumes: the aborted reads finish into buffers the daemon
#    kept (KEEP_BUF), which it then frees; the LUN serves reads and writes
#    again with its data intact.
# Throughout, a second LUN runs fio verify, which must finish clean, and
# no task may hang ("blocked for more than" in the kernel log).

source "$(dirname "$0")/lib.sh"

load_modules
modprobe dm_mod || fail "modprobe dm_mod failed"
modprobe loop || fail "modprobe loop failed"
daemon_start

# The neighbour: verified writes for the whole test.
user_file_backstore ok0 $((64 << 20)) "$WORK/ok0.img"
loop_export "$BS_PATH"
fio_bg neighbour "$DEV" 45
NEIGHBOUR_PID=$FIO_PID

# The backend that can hang: dm linear over a loop device on tmpfs.
size=$((64 << 20))
truncate -s "$size" "$WORK/hang.img"
HANG_LOOP=$(losetup -f --show "$WORK/hang.img") || fail "losetup failed"
push_cleanup "losetup -d $HANG_LOOP"
dmsetup create --noudevsync tcmu-hang --table "0 $((size / 512)) linear $HANG_LOOP 0" ||
    fail "dmsetup create failed"
push_cleanup "dmsetup remove --noudevsync tcmu-hang"
# Runs first at cleanup: a suspended device would hold every reader.
push_cleanup "dmsetup resume --noudevsync tcmu-hang"
DM=/dev/dm-$(dmsetup info -c --noheadings -o minor tcmu-hang | tr -d ' ')
wait_for 10 "$DM" test -b "$DM"
dd if=/dev/urandom of="$WORK/pattern" bs=1M count=1 status=none
dd if="$WORK/pattern" of="$DM" bs=1M seek=1 oflag=direct conv=fsync status=none ||
    fail "cannot write the pattern to $DM"

# tcmu-runner's own option rides in the cfgstring, leading form.
user_backstore h0 "$size" "file/;tcmur_cmd_time_out=2;$DM" ||
    fail "enabling h0 on $DM failed"
H_BS=$BS_PATH
loop_export "$H_BS"
H_DEV=$DEV
H_SG=$SG
assert_eq "$(cat "$H_BS/attrib/tmr_notification")" 1 "tmr_notification of h0 (set by the daemon)"

# suspend: hang the backend, with nothing of it in the page cache.
suspend() {
    echo 3 >/proc/sys/vm/drop_caches
    dmsetup suspend --noudevsync --nolockfs tcmu-hang || fail "dmsetup suspend failed"
}

# log_has ERE: the daemon log since the last mark has a matching line.
log_has() { log_since | grep -Eq -- "$1"; }

# --- 1. time-out report, then ABORT TASK
suspend
log_mark
t0=$SECONDS
rc=0
sg_raw -t 6 -r 4096 "$H_SG" 28 00 00 00 10 00 00 00 08 00 >"$WORK/abort.out" 2>&1 || rc=$?
took=$((SECONDS - t0))
log "READ of the hung backend ended after ${took}s (sg_raw status $rc)"
[[ $rc -ne 0 ]] || fail "a READ of the suspended backend succeeded"
((took < 20)) || fail "the aborted READ took ${took}s to end"
wait_for 10 "the time-out report" log_has \
    "command [0-9]+ \(CDB 28 00 00 00 10 00 00 00 08 00\) still running after 2\.[0-9]s, past the device's time-out of 2s"
wait_for 10 "the abort" log_has \
    "ABORT TASK: command [0-9]+ \(CDB 28 00 00 00 10 00 00 00 08 00\) aborted"
sg_turs "$H_SG" || fail "TEST UNIT READY failed while the backend hangs"
sg_inq "$H_SG" >/dev/null || fail "INQUIRY failed while the backend hangs"

# --- 2. LUN RESET ends a hung command
sg_raw -t 60 -r 4096 "$H_SG" 28 00 00 00 20 00 00 00 08 00 >"$WORK/reset.out" 2>&1 &
raw_pid=$!
sleep 2
kill -0 "$raw_pid" 2>/dev/null || fail "the second READ did not hang"
t0=$SECONDS
sg_reset -d "$H_SG" || fail "sg_reset -d (LUN RESET) failed"
rc=0
while kill -0 "$raw_pid" 2>/dev/null; do
    ((SECONDS - t0 < 20)) || fail "the READ still hangs 20 s after the LUN RESET"
    sleep 0.2
done
wait "$raw_pid" || rc=$?
log "LUN RESET done; the hung READ ended after $((SECONDS - t0))s (sg_raw status $rc)"
wait_for 10 "the LUN RESET abort" log_has \
    "LUN RESET: command [0-9]+ \(CDB 28 00 00 00 20 00 00 00 08 00\) aborted"

# --- 3. resume: kept buffers are freed, the LUN serves again
dmsetup resume --noudevsync tcmu-hang || fail "dmsetup resume failed"
wait_for 15 "both kept buffers freed" \
    bash -c "(( \$(tail -c +$((LOG_MARK + 1)) '$LOGDIR/tcmu-runner.log' | grep -c 'kept buffer of aborted command') >= 2 ))"
dd if="$H_DEV" bs=1M skip=1 count=1 iflag=direct status=none | cmp - "$WORK/pattern" ||
    fail "h0 does not read back the data written before the hang"
dd_roundtrip "$H_DEV" 8
grep -E "aborted|time-out|kept buffer" "$(daemon_log)" >"$WORK/tmr-log.txt" || true

fio_wait neighbour "$NEIGHBOUR_PID"
hung=$(dmesg | grep -c "blocked for more than" || true)
assert_eq "$hung" 0 "'blocked for more than' lines in the kernel log"
# The kernel took every free of a kept buffer (whole kernel log).
kept_buffers_check
daemon_alive || fail "the daemon died"
undo_all
daemon_stop
