#!/bin/bash
# t-41-kill-loop: the daemon dies and comes back again and again under I/O.
#
# Two user:file LUNs (so recovery of several devices is exercised), fio
# randwrite with crc32c verify on both for the whole test; 10 rounds of
# kill -9 + restart (one of them killing the new daemon again in the middle
# of its start-up) and 2 rounds of SIGTERM + restart, a few seconds apart
# and with varied delays before the restart. Then: fio reports 0 errors
# (verify and I/O), the kernel logged no hung task and no I/O error for
# the disks, and each disk equals its backing file.
#
# Per round it prints the time from the kill to the old process being gone
# and to the first I/O completed on both disks afterwards ("served
# again"); kill-loop.txt adds, from the daemon's log, the time to the new
# daemon's first line and to its "ready". A command
# that sits in the ring of a dead daemon is failed by the kernel after
# attrib/cmd_time_out (30 s) and the sd driver aborts it after its own
# timeout (30 s): every recovery (kill to the new daemon's ready, the
# supervisor's delay excluded) must stay below both, which the test asserts
# with a margin (20 s, MAX_RECOVERY_MS; typically under 1 s), and no I/O
# may take a third of the sd timeout (fio's longest completion latency).

source "$(dirname "$0")/lib.sh"
source "$REPO_DIR/tests/vm/restart-lib.sh"

runner_to_ram
load_modules
daemon_start

two_file_luns k

sd_timeout=$(cat "/sys/block/${DISKS[0]}/device/timeout")
cmd_time_out=$(cat "$LUN0_BS/attrib/cmd_time_out")
log "sd command timeout ${sd_timeout}s, TCMU cmd_time_out ${cmd_time_out}s"
MAX_RECOVERY_MS=${MAX_RECOVERY_MS:-20000}

# Kind of each round (kill = kill -9, kill2 = kill -9 and kill -9 again
# the next daemon 0.3 s into its start, term = SIGTERM), the pause before
# it (seconds) and the delay between the kill and the restart (ms).
KINDS=(kill kill kill term kill kill kill2 kill kill term kill kill)
GAPS=(2 3.5 1.5 3 4 2.5 3 1 4.5 2 3 1.5)
DELAYS_MS=(0 500 0 0 1500 0 0 200 0 0 3000 0)

dmesg_mark
log "fio verify on $LUN0_DEV and $LUN1_DEV (15 s runs, one after the other, until the rounds are done)"
fio_loop_bg k0 "$LUN0_DEV" 15
FIO0=$FIO_PID
fio_loop_bg k1 "$LUN1_DEV" 15
FIO1=$FIO_PID
sleep 4

REPORT=$WORK/kill-loop.txt
printf 'round\tkind\tdelay_s\tkill_to_gone_ms\tkill_to_new_daemon_log_ms\tkill_to_ready_ms\tkill_to_served_ms\n' >"$REPORT"
max_ms=0
shopt -s nullglob
# fio_runs_started: fio runs begun so far on both disks (each has its .out).
fio_runs_started() {
    local outs=("$WORK"/k0.*.out "$WORK"/k1.*.out)
    FIO_STARTED=${#outs[@]}
}
for i in "${!KINDS[@]}"; do
    nap "${GAPS[i]}"
    kill -0 "$FIO0" 2>/dev/null && kill -0 "$FIO1" 2>/dev/null ||
        fail "fio failed before round $((i + 1)) (see k0.*.out, k1.*.out)"
    kind=${KINDS[i]}
    log_mark
    fio_runs_started
    runs_before=$FIO_STARTED
    old=$DAEMON_PID
    DAEMON_PID=
    t0=${EPOCHREALTIME/./}
    case $kind in
        kill | kill2) { kill -KILL "$old"; wait "$old"; } 2>/dev/null || true ;;
        term)
            kill -TERM "$old"
            rc=0
            wait "$old" || rc=$?
            [[ $rc -eq 0 ]] || fail "round $((i + 1)): the daemon exited with status $rc after SIGTERM"
            ;;
    esac
    gone_ms=$(ms_since "$t0")
    io_snapshot "${DISKS[@]}"
    delay_ms=${DELAYS_MS[i]}
    printf -v delay_s '%d.%03d' $((delay_ms / 1000)) $((delay_ms % 1000))
    nap "$delay_s"
    if [[ $kind == kill2 ]]; then
        # Kill the successor in the middle of its recovery (devices
        # blocked, rings reset, maybe not yet unblocked).
        daemon_launch
        nap 0.3
        kill -KILL "$DAEMON_PID" 2>/dev/null || true
        wait "$DAEMON_PID" 2>/dev/null || true
    fi
    daemon_launch
    wait_io_moved $((MAX_RECOVERY_MS / 1000 + 10))
    served_ms=$(ms_since "$t0")
    fio_runs_started
    # A fio run that ended around the kill leaves the disk idle until the
    # next one has started (seconds, under TCG): then the disks' progress
    # does not time the recovery, the daemon's "ready" does.
    FIO_BOUNDARY[i]=$((FIO_STARTED != runs_before))
    # The daemon's own times come from its log after the rounds (reading
    # it starts processes, slow while fio runs).
    MARKS[i]=$LOG_MARK
    T0S[i]=$t0
    ROW[i]="$((i + 1))	$kind	$delay_s	$gone_ms"
    SERVED[i]=$served_ms
    DELAY[i]=$delay_ms
    note=
    ((FIO_BOUNDARY[i])) && note=" (a new fio run started meanwhile)"
    log "round $((i + 1)) ($kind, restart after ${delay_s}s): old daemon gone after ${gone_ms} ms, both disks served again after ${served_ms} ms$note"
done
log "all ${#KINDS[@]} rounds done"
fio_loop_stop k0 k1
for n in k0 k1; do
    pid=$FIO0
    [[ $n == k1 ]] && pid=$FIO1
    fio_loop_wait "$n" "$pid"
    clat=$FIO_LOOP_CLAT_MS
    echo "fio_${n}_runs=$FIO_LOOP_RUNS fio_${n}_clat_max_ms=$clat" >>"$REPORT"
    # The longest any I/O waited, kills included: well inside the sd
    # timeout, so no command is aborted (a third of it as the margin).
    ((clat < sd_timeout * 1000 / 3)) || fail "fio $n: an I/O took ${clat} ms (limit a third of the ${sd_timeout}s sd timeout)"
done
for i in "${!KINDS[@]}"; do
    LOG_MARK=${MARKS[i]}
    start_ms=-1 ready_ms=-1
    first=$(log_since | grep -m1 'tcmu-runner .* starting with' || true)
    [[ -n $first ]] && start_ms=$((($(log_line_us "$first") - T0S[i]) / 1000))
    ready=$(log_since | grep -m1 'tcmu-runner ready' || true)
    [[ -n $ready ]] || fail "round $((i + 1)): no daemon logged ready"
    ready_ms=$((($(log_line_us "$ready") - T0S[i]) / 1000))
    printf '%b\t%d\t%d\t%d%s\n' "${ROW[i]}" "$start_ms" "$ready_ms" "${SERVED[i]}" \
        "$( ((FIO_BOUNDARY[i])) && echo ' (fio restarted)')" >>"$REPORT"
    # Recovery: kill to the new daemon's ready (both devices unblocked);
    # the deliberate delay is the supervisor's, not the recovery's. The
    # disks' progress is reported, not judged: a fio run that ends or
    # starts around a kill leaves its disk idle for seconds under TCG
    # (fio's own latencies, judged above, show no I/O waited that long).
    rec=$((ready_ms - DELAY[i]))
    ((rec <= MAX_RECOVERY_MS)) || fail "round $((i + 1)): recovery took $rec ms (limit $MAX_RECOVERY_MS)"
    ((rec > max_ms)) && max_ms=$rec
done
log "longest recovery (kill to the new daemon ready, supervisor delay excluded): ${max_ms} ms"
echo "max_recovery_ms=$max_ms" >>"$REPORT"

daemon_alive || fail "the daemon died"
dmesg_check "$WORK/kill-loop.dmesg.txt" "${DISKS[@]}"

echo 3 >/proc/sys/vm/drop_caches
cmp "$LUN0_DEV" "$WORK/k0.img" || fail "$LUN0_DEV differs from its backing file"
cmp "$LUN1_DEV" "$WORK/k1.img" || fail "$LUN1_DEV differs from its backing file"
log "both disks equal their backing files"
cat "$REPORT"

undo_all
daemon_stop
