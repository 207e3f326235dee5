#!/bin/bash
# t-42-takeover: graceful upgrade. A new daemon started with --takeover
# replaces the running one under I/O: the old one blocks its devices,
# finishes what is in flight and exits 0; the new one resets, opens and
# unblocks them. I/O pauses for less than a second and nothing fails.
#
# fio randwrite + crc32c verify runs on two user:file LUNs while 3
# takeovers happen a few seconds apart. Asserts per takeover: the old
# daemon exits 0, the pause (the old daemon's "devices blocked" log line
# to the new one's "ready", both timestamped) is under 1 s, both devices
# read "unblocked" and serve writes again. At the end: fio reports 0
# errors, the kernel logged no hung task or I/O error, the disks equal
# their files. fio's longest completion latency is reported (it spans
# the takeovers). Last, --takeover with no daemon running starts normally.
# No D-Bus needed: the daemon serves I/O without a bus.

source "$(dirname "$0")/lib.sh"
source "$REPO_DIR/tests/vm/restart-lib.sh"

runner_to_ram
load_modules
daemon_start

size=$((96 * 1024 * 1024))
loop_target
TPG=$LOOP_TPG
user_file_backstore g0 "$size" "$WORK/g0.img"
G0_BS=$BS_PATH
loop_add_lun "$TPG" 0 "$BS_PATH"
G0_DEV=$DEV
user_file_backstore g1 "$size" "$WORK/g1.img"
G1_BS=$BS_PATH
loop_add_lun "$TPG" 1 "$BS_PATH"
G1_DEV=$DEV
DISKS=("$(disk_name "$G0_DEV")" "$(disk_name "$G1_DEV")")
MAX_PAUSE_MS=1000


dmesg_mark
log "fio verify on $G0_DEV and $G1_DEV (15 s runs, one after the other); 3 takeovers"
fio_loop_bg g0 "$G0_DEV" 15
FIO0=$FIO_PID
fio_loop_bg g1 "$G1_DEV" 15
FIO1=$FIO_PID

REPORT=$WORK/takeover.txt
printf 'round\tpause_ms\tsignal_to_ready_ms\n' >"$REPORT"
max_pause=0
for round in 1 2 3; do
    nap 5
    kill -0 "$FIO0" 2>/dev/null && kill -0 "$FIO1" 2>/dev/null ||
        fail "fio failed before takeover $round (see g0.*.out, g1.*.out)"
    old=$DAEMON_PID
    log_mark
    t0=${EPOCHREALTIME/./}
    daemon_start --takeover
    took=$(ms_since "$t0")
    rc=0
    wait "$old" || rc=$?
    [[ $rc -eq 0 ]] || fail "takeover $round: the old daemon (pid $old) exited with status $rc"
    log_since >"$WORK/takeover-$round.log.txt"
    blocked=$(grep -E 'hand-over: [0-9]+ device\(s\) blocked' "$WORK/takeover-$round.log.txt" | tail -n 1 || true)
    ready=$(grep -E 'tcmu-runner ready' "$WORK/takeover-$round.log.txt" | tail -n 1 || true)
    [[ -n $blocked ]] || fail "takeover $round: the old daemon did not log blocking its devices"
    [[ -n $ready ]] || fail "takeover $round: the new daemon did not log ready"
    grep -q 'hand-over: 2 device(s) closed' "$WORK/takeover-$round.log.txt" ||
        fail "takeover $round: the old daemon did not close both devices"
    pause=$((($(log_line_us "$ready") - $(log_line_us "$blocked")) / 1000))
    for bs in "$G0_BS" "$G1_BS"; do
        assert_eq "$(cat "$bs/action/block_dev")" unblocked "block state of $(basename "$bs") after takeover $round"
    done
    io_snapshot "${DISKS[@]}"
    wait_io_moved 10
    printf '%d\t%d\t%d\n' "$round" "$pause" "$took" >>"$REPORT"
    log "takeover $round: pid $old -> $DAEMON_PID, devices paused ${pause} ms (old daemon's block to new daemon's ready), ${took} ms from start to ready"
    ((pause < MAX_PAUSE_MS)) || fail "takeover $round: I/O paused ${pause} ms (limit $MAX_PAUSE_MS)"
    ((pause > max_pause)) && max_pause=$pause
done
echo "max_pause_ms=$max_pause" >>"$REPORT"

fio_loop_stop g0 g1
for n in g0 g1; do
    pid=$FIO0
    [[ $n == g1 ]] && pid=$FIO1
    fio_loop_wait "$n" "$pid"
    echo "fio_${n}_runs=$FIO_LOOP_RUNS fio_${n}_clat_max_ms=$FIO_LOOP_CLAT_MS (takeovers included)" >>"$REPORT"
done
daemon_alive || fail "the daemon died"
dmesg_check "$WORK/takeover.dmesg.txt" "${DISKS[@]}"
echo 3 >/proc/sys/vm/drop_caches
cmp "$G0_DEV" "$WORK/g0.img" || fail "$G0_DEV differs from its backing file"
cmp "$G1_DEV" "$WORK/g1.img" || fail "$G1_DEV differs from its backing file"
log "both disks equal their backing files"

# --takeover with nothing to take over from: a normal start.
daemon_stop
log_mark
daemon_start --takeover
log_since | grep -q 'no tcmu-runner was running' || fail "--takeover without a running daemon did not say it started normally"
dd_roundtrip "$G0_DEV" 3
cat "$REPORT"

undo_all
daemon_stop
