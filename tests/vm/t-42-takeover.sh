#!/bin/bash
# t-42-takeover: graceful upgrade. A new daemon started with --takeover
# replaces the running one under I/O: the old one blocks its devices,
# finishes what is in flight and exits 0; the new one resets, opens and
# unblocks them. I/O pauses for less than a second and nothing fails.
#
# fio randwrite + crc32c verify runs on two user:file LUNs (8 idle ram
# devices beside them, so every pause covers recovering 10) while 3
# takeovers happen a few seconds apart. Asserts per takeover: the old
# daemon exits 0, the pause (the old daemon's "devices blocked" log line
# to the new one's "ready", both timestamped) is under 1 s, both devices
# read "unblocked" and serve writes again. At the end: fio reports 0
# errors, the kernel logged no hung task or I/O error, the disks equal
# their files. fio's longest completion latency is reported (it spans
# the takeovers). Last, --takeover with no daemon running starts normally.
# No D-Bus needed: the daemon serves I/O without a bus.
#
# systemd's side (`systemctl reload` = SIGUSR1, unit Type=notify,
# NotifyAccess=all) with a stand-in for its notify socket
# (notify-socket.py, which records each message with its sender's pid from
# the kernel): every daemon reports READY=1; a --takeover successor sends
# MAINPID=<itself> before the old daemon exits, and the old one sends
# nothing after that (STOPPING=1 would stop the service). Round 4 is a
# package upgrade: the binary is replaced at its path (a new inode, the
# running one now "(deleted)"), then SIGUSR1: the old daemon reports
# RELOADING=1 and starts the new binary, which takes over as above.
# Round 5 replaces the binary by one that fails: the daemon logs the
# failure, reports READY=1 again and goes on serving.

source "$(dirname "$0")/lib.sh"
source "$REPO_DIR/tests/vm/restart-lib.sh"

ADOPTED_PID=
# adopted_stop: SIGTERM the daemon started by SIGUSR1 (not this shell's
# child, so no exit status) and wait for it to log that it stopped.
adopted_stop() {
    [[ -n $ADOPTED_PID ]] || return 0
    log_mark
    kill -TERM "$ADOPTED_PID" 2>/dev/null || true
    local deadline=$((SECONDS + 20))
    while running "$ADOPTED_PID"; do
        ((SECONDS < deadline)) || { kill -KILL "$ADOPTED_PID"; fail "pid $ADOPTED_PID did not stop within 20 s"; }
        nap 0.1
    done
    log_since | grep -q 'tcmu-runner stopped' || fail "pid $ADOPTED_PID did not log stopping"
    notify_lines "$ADOPTED_PID" | grep -q 'STOPPING=1' || fail "pid $ADOPTED_PID did not send STOPPING=1"
    ADOPTED_PID=
}
cleanup_adopted() { [[ -n $ADOPTED_PID ]] && kill -KILL "$ADOPTED_PID" 2>/dev/null; return 0; }

runner_to_ram
load_modules

# The stand-in for systemd's notify socket; every daemon below inherits it.
NOTIFY_LOG=$WORK/notify.log
export NOTIFY_SOCKET=$WORK/notify.sock
python3 "$REPO_DIR/tests/vm/notify-socket.py" "$NOTIFY_SOCKET" "$NOTIFY_LOG" &
NOTIFY_PID=$!
push_cleanup "kill $NOTIFY_PID 2>/dev/null"
for _ in $(seq 100); do grep -q LISTENING "$NOTIFY_LOG" 2>/dev/null && break; sleep 0.1; done
grep -q LISTENING "$NOTIFY_LOG" || fail "the notify socket stand-in did not start"

# notify_lines PID: the messages PID sent, with their times, since the
# last notify_mark.
notify_mark() { NOTIFY_MARK=$(wc -l <"$NOTIFY_LOG"); }
notify_lines() { tail -n +$((NOTIFY_MARK + 1)) "$NOTIFY_LOG" | grep " pid=$1 " || true; }

# notify_check_handover OLD NEW EXIT_US: NEW said MAINPID=NEW before OLD
# exited (at EXIT_US), then READY=1; OLD sent nothing after MAINPID=NEW.
notify_check_handover() {
    local old=$1 new=$2 exit_us=$3 mainpid ready
    # READY=1 may come a moment after the log's "ready" line.
    for _ in $(seq 50); do
        notify_lines "$new" | grep -q 'READY=1' && break
        nap 0.1
    done
    mainpid=$(notify_lines "$new" | grep -m1 "MAINPID=$new" || true)
    [[ -n $mainpid ]] || fail "successor $new did not send MAINPID=$new: $(notify_lines "$new")"
    ((${mainpid%% *} < exit_us)) ||
        fail "successor $new sent MAINPID=$new only after the old daemon exited"
    ready=$(notify_lines "$new" | grep -m1 'READY=1' || true)
    [[ -n $ready ]] || fail "successor $new did not send READY=1: $(notify_lines "$new")"
    [[ $ready == *"STATUS=serving $DEVICES device(s)"* ]] || fail "successor's READY=1 without its status: $ready"
    local late
    late=$(notify_lines "$old" | awk -v t="${mainpid%% *}" '$1 > t' || true)
    [[ -z $late ]] || fail "the old daemon $old sent after the successor's MAINPID=: $late"
}

# check_round ROUND OLD NEW TOOK_MS: after a takeover, from the daemon log
# since log_mark: the pause (the old daemon's "devices blocked" to the new
# one's "ready"), under MAX_PAUSE_MS; both devices unblocked and serving.
# Adds a row to REPORT and keeps max_pause.
check_round() {
    local round=$1 old=$2 new=$3 took=$4 blocked ready pause bs
    log_since >"$WORK/takeover-$round.log.txt"
    blocked=$(grep -E 'hand-over: [0-9]+ device\(s\) blocked' "$WORK/takeover-$round.log.txt" | tail -n 1 || true)
    ready=$(grep -E 'tcmu-runner ready' "$WORK/takeover-$round.log.txt" | tail -n 1 || true)
    [[ -n $blocked ]] || fail "round $round: the old daemon did not log blocking its devices"
    [[ -n $ready ]] || fail "round $round: the new daemon did not log ready"
    grep -q "hand-over: $DEVICES device(s) closed" "$WORK/takeover-$round.log.txt" ||
        fail "round $round: the old daemon did not close all $DEVICES devices"
    pause=$((($(log_line_us "$ready") - $(log_line_us "$blocked")) / 1000))
    for bs in "$LUN0_BS" "$LUN1_BS"; do
        assert_eq "$(cat "$bs/action/block_dev")" unblocked "block state of $(basename "$bs") after round $round"
    done
    io_snapshot "${DISKS[@]}"
    wait_io_moved 10
    printf '%d\t%d\t%d\n' "$round" "$pause" "$took" >>"$REPORT"
    log "round $round: pid $old -> $new, devices paused ${pause} ms (old daemon's block to new daemon's ready), ${took} ms from start or signal to ready"
    ((pause < MAX_PAUSE_MS)) || fail "round $round: I/O paused ${pause} ms (limit $MAX_PAUSE_MS)"
    ((pause > max_pause)) && max_pause=$pause
    return 0
}

notify_mark
daemon_start
for _ in $(seq 50); do notify_lines "$DAEMON_PID" | grep -q 'READY=1' && break; nap 0.1; done
notify_lines "$DAEMON_PID" | grep -q 'READY=1 STATUS=serving 0 device(s)' ||
    fail "the daemon did not send READY=1 at start-up: $(notify_lines "$DAEMON_PID")"

two_file_luns g
# And 8 idle user:ram devices (not exported): the pause covers recovering
# 10 devices, which the successor opens all at once.
IDLE=8
DEVICES=$((IDLE + 2))
IDLE_HBA=$CFG/core/user_42
idle_cleanup() {
    local i
    for ((i = 1; i <= IDLE; i++)); do [[ -d $IDLE_HBA/r$i ]] && rmdir "$IDLE_HBA/r$i"; done
    [[ -d $IDLE_HBA ]] && rmdir "$IDLE_HBA"
    return 0
}
push_cleanup idle_cleanup
mkdir -p "$IDLE_HBA" && mkdir $(printf "$IDLE_HBA/r%d " $(seq "$IDLE")) || fail "cannot create the idle devices"
for ((i = 1; i <= IDLE; i++)); do
    echo "dev_size=$((8 * 1024 * 1024))" >"$IDLE_HBA/r$i/control" &&
        echo "dev_config=ram/" >"$IDLE_HBA/r$i/control" &&
        echo 1 >"$IDLE_HBA/r$i/enable" || fail "cannot enable idle device r$i"
done
MAX_PAUSE_MS=1000


dmesg_mark
log "fio verify on $LUN0_DEV and $LUN1_DEV (15 s runs, one after the other); 3 takeovers"
fio_loop_bg g0 "$LUN0_DEV" 15
FIO0=$FIO_PID
fio_loop_bg g1 "$LUN1_DEV" 15
FIO1=$FIO_PID

REPORT=$WORK/takeover.txt
printf 'round\tpause_ms\tsignal_to_ready_ms\n' >"$REPORT"
max_pause=0
for round in 1 2 3; do
    nap 5
    kill -0 "$FIO0" 2>/dev/null && kill -0 "$FIO1" 2>/dev/null ||
        fail "fio failed before round $round (see g0.*.out, g1.*.out)"
    old=$DAEMON_PID
    log_mark
    notify_mark
    t0=${EPOCHREALTIME/./}
    daemon_start --takeover
    took=$(ms_since "$t0")
    rc=0
    wait "$old" || rc=$?
    exit_us=$(now_us)
    [[ $rc -eq 0 ]] || fail "takeover $round: the old daemon (pid $old) exited with status $rc"
    notify_check_handover "$old" "$DAEMON_PID" "$exit_us"
    check_round "$round" "$old" "$DAEMON_PID" "$took"
done

# Round 4: `systemctl reload` after a package upgrade.
push_cleanup cleanup_adopted
nap 3
GOOD_BIN=$WORK/bin/tcmu-runner.good
cp "$TCMU_RUNNER" "$GOOD_BIN"
cp "$GOOD_BIN" "$TCMU_RUNNER.new" && mv -f "$TCMU_RUNNER.new" "$TCMU_RUNNER"
old=$DAEMON_PID
[[ $(readlink "/proc/$old/exe") == *"(deleted)" ]] ||
    fail "round 4: the running binary was not replaced: $(readlink "/proc/$old/exe")"
log_mark
notify_mark
t0=$(now_us)
kill -USR1 "$old"
rc=0
wait "$old" || rc=$?
exit_us=$(now_us)
[[ $rc -eq 0 ]] || fail "round 4: the old daemon (pid $old) exited with status $rc after SIGUSR1"
deadline=$((SECONDS + 30))
until log_since | grep -q 'tcmu-runner ready'; do
    ((SECONDS < deadline)) || fail "round 4: no successor became ready within 30 s of SIGUSR1"
    nap 0.05
done
took=$(ms_since "$t0")
new=$(notify_lines '[0-9]*' | grep -o 'MAINPID=[0-9]*' | head -n 1 | cut -d= -f2)
[[ -n $new ]] || fail "round 4: no MAINPID= message: $(tail -n 5 "$NOTIFY_LOG")"
# The successor is not this shell's child: from here on it is stopped by
# adopted_stop below, or killed by cleanup_adopted if a check fails.
DAEMON_PID=
ADOPTED_PID=$new
running "$new" || fail "round 4: successor $new does not run"
notify_lines "$old" | grep -q "RELOADING=1 MONOTONIC_USEC=[0-9]* STATUS=upgrading: successor pid $new starting" ||
    fail "round 4: the old daemon did not report RELOADING=1 naming its successor: $(notify_lines "$old")"
notify_check_handover "$old" "$new" "$exit_us"
log_since | grep -q "SIGUSR1: upgrading in place: started $TCMU_RUNNER --takeover as pid $new" ||
    fail "round 4: the old daemon did not log starting its successor"
check_round 4 "$old" "$new" "$took"
echo "max_pause_ms=$max_pause" >>"$REPORT"

# Round 5: SIGUSR1 with a binary that fails changes nothing.
nap 2
printf '#!/bin/sh\nexit 7\n' >"$TCMU_RUNNER.new" && chmod +x "$TCMU_RUNNER.new" && mv -f "$TCMU_RUNNER.new" "$TCMU_RUNNER"
log_mark
notify_mark
kill -USR1 "$ADOPTED_PID"
deadline=$((SECONDS + 30))
until log_since | grep -q "upgrade: successor pid [0-9]* failed: it exited (exit status: 7) before taking over; still serving"; do
    ((SECONDS < deadline)) || fail "round 5: no failure logged within 30 s: $(log_since | tail -n 5)"
    nap 0.1
done
for _ in $(seq 50); do notify_lines "$ADOPTED_PID" | grep -q 'READY=1' && break; nap 0.1; done
notify_lines "$ADOPTED_PID" | grep -q "READY=1 STATUS=serving $DEVICES device(s); the last upgrade failed" ||
    fail "round 5: the daemon did not report READY=1 after the failed upgrade: $(notify_lines "$ADOPTED_PID")"
running "$ADOPTED_PID" || fail "round 5: the daemon died with its successor"
io_snapshot "${DISKS[@]}"
wait_io_moved 10
log "round 5: a failing successor was reported; pid $ADOPTED_PID serves on"
mv -f "$GOOD_BIN" "$TCMU_RUNNER"

fio_loop_stop g0 g1
for n in g0 g1; do
    pid=$FIO0
    [[ $n == g1 ]] && pid=$FIO1
    fio_loop_wait "$n" "$pid"
    echo "fio_${n}_runs=$FIO_LOOP_RUNS fio_${n}_clat_max_ms=$FIO_LOOP_CLAT_MS (takeovers included)" >>"$REPORT"
done
running "$ADOPTED_PID" || fail "the daemon died"
dmesg_check "$WORK/takeover.dmesg.txt" "${DISKS[@]}"
echo 3 >/proc/sys/vm/drop_caches
cmp "$LUN0_DEV" "$WORK/g0.img" || fail "$LUN0_DEV differs from its backing file"
cmp "$LUN1_DEV" "$WORK/g1.img" || fail "$LUN1_DEV differs from its backing file"
log "both disks equal their backing files"

# --takeover with nothing to take over from: a normal start.
adopted_stop
log_mark
daemon_start --takeover
log_since | grep -q 'no tcmu-runner was running' || fail "--takeover without a running daemon did not say it started normally"
dd_roundtrip "$LUN0_DEV" 3
cat "$REPORT"

undo_all
daemon_stop
