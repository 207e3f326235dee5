#!/bin/bash
# t-92-metrics: the metrics file counts what fio did.
#
# The daemon writes /run/tcmu-runner/metrics.prom (the default; the guest's
# /run is RAM) every 5 s and whenever a device comes or goes. On a user:file
# LUN exported through tcm_loop (request merging off, so one fio I/O is one
# SCSI command), fio does a fixed amount of 4k random writes, then random
# reads, direct; the difference of the device's counters across each run
# (the kernel's own commands, the partition scan and such, come before) must
# match fio's io_bytes and total_ios within 1%, with no errors and no
# timeouts; the latency histogram's _count equals tcmu_commands_total and
# its buckets are cumulative. A second device appears in the file when it is
# created and disappears when it is removed.

source "$(dirname "$0")/lib.sh"

METRICS=/run/tcmu-runner/metrics.prom

# metrics_fresh OUT: wait until the file has been replaced twice (so the
# second version was rendered after this call began) and copy it to OUT.
metrics_fresh() {
    local out=$1 changes=0 deadline=$((SECONDS + 40)) ino now
    ino=$(stat -c %i "$METRICS" 2>/dev/null || echo none)
    while ((changes < 2)); do
        ((SECONDS < deadline)) || fail "$METRICS was not rewritten twice within 40s"
        sleep 0.2
        now=$(stat -c %i "$METRICS" 2>/dev/null || echo none)
        if [[ $now != "$ino" ]]; then
            ino=$now
            changes=$((changes + 1))
        fi
    done
    cp "$METRICS" "$out"
}

# metric FILE NAME DEVICE: the value of NAME's series for DEVICE, or
# "absent".
metric() {
    awk -v pfx="$2{device=\"$3\"," \
        'index($0, pfx) == 1 { print $NF; found = 1; exit } END { if (!found) print "absent" }' "$1"
}

# gauge FILE NAME: the value of an unlabelled series, or "absent".
gauge() {
    awk -v n="$2" '$1 == n { print $2; found = 1; exit } END { if (!found) print "absent" }' "$1"
}

# delta BEFORE AFTER NAME DEVICE: how much NAME grew for DEVICE.
delta() {
    local a b
    a=$(metric "$1" "$3" "$4")
    b=$(metric "$2" "$3" "$4")
    # Called as $(delta ...): the message must go to stderr to be seen.
    [[ $a =~ ^[0-9]+$ && $b =~ ^[0-9]+$ ]] || fail "$3 for $4 missing (before '$a', after '$b')" >&2
    echo $((b - a))
}

# fio_field JSON SECTION FIELD: FIELD (io_bytes, total_ios) of the read or
# write section of a one-job fio JSON report; both come before the
# section's first nested object.
fio_field() {
    awk -v want="$2" -v field="$3" '
        /^ *"[a-z_]+" : \{/ { match($0, /"[a-z_]+"/); sec = substr($0, RSTART + 1, RLENGTH - 2) }
        sec == want && $0 ~ "\"" field "\" :" { gsub(/[ ,]/, "", $NF); print $NF; exit }
    ' "$1"
}

# within_1pct WHAT OURS FIO
within_1pct() {
    local what=$1 ours=$2 theirs=$3
    ((theirs > 0)) || fail "fio reports no $what"
    local diff=$((ours > theirs ? ours - theirs : theirs - ours))
    ((diff * 100 <= theirs)) || fail "$what: metrics say $ours, fio says $theirs"
    log "$what: metrics $ours, fio $theirs"
}

# run_fio NAME RW: 64 MiB of 4k random RW on $DEV, once, direct.
run_fio() {
    local name=$1 rw=$2 rc=0
    log "fio $rw 64 MiB at 4k"
    fio --name="$name" --filename="$DEV" --ioengine=libaio --direct=1 \
        --rw="$rw" --bs=4k --iodepth=16 --size=64m \
        --eta=never --output-format=json --output="$WORK/$name.json" || rc=$?
    ((rc == 0)) || { tail -n 30 "$WORK/$name.json"; fail "fio $rw exited with status $rc"; }
    assert_eq "$(fio_errors "$WORK/$name.json")" 0 "fio $rw error count"
}

load_modules
daemon_start
wait_for 15 "the metrics file $METRICS" test -s "$METRICS"
metrics_fresh "$WORK/metrics-start.txt"
assert_eq "$(gauge "$WORK/metrics-start.txt" tcmu_devices)" 0 "tcmu_devices with no device"
assert_grep '^tcmu_runner_info\{version="[^"]+"\} 1$' "$WORK/metrics-start.txt" "daemon info gauge"
assert_grep '^# TYPE tcmu_command_latency_seconds histogram$' "$WORK/metrics-start.txt" "histogram TYPE line"

# --- one LUN, fio against it
img=$WORK/m0.img
user_file_backstore m0 $((128 << 20)) "$img"
loop_export "$BS_PATH"
echo 2 >"/sys/block/$(basename "$DEV")/queue/nomerges"
D=user_1/m0
wait_for 15 "series for $D" grep -qF "tcmu_commands_total{device=\"$D\"," "$METRICS"
metrics_fresh "$WORK/metrics-before.txt"
assert_grep "^tcmu_commands_total\\{device=\"$D\",config=\"file/$img\"\\} [0-9]+$" \
    "$WORK/metrics-before.txt" "labels of $D"

run_fio write randwrite
metrics_fresh "$WORK/metrics-written.txt"
run_fio read randread
metrics_fresh "$WORK/metrics-read.txt"

B=$WORK/metrics-before.txt W=$WORK/metrics-written.txt R=$WORK/metrics-read.txt
w_bytes=$(delta "$B" "$W" tcmu_write_bytes_total "$D")
w_cmds=$(delta "$B" "$W" tcmu_write_commands_total "$D")
r_bytes=$(delta "$W" "$R" tcmu_read_bytes_total "$D")
r_cmds=$(delta "$W" "$R" tcmu_read_commands_total "$D")
errors=$(delta "$B" "$R" tcmu_errors_total "$D")
within_1pct "write bytes" "$w_bytes" "$(fio_field "$WORK/write.json" write io_bytes)"
within_1pct "write commands" "$w_cmds" "$(fio_field "$WORK/write.json" write total_ios)"
within_1pct "read bytes" "$r_bytes" "$(fio_field "$WORK/read.json" read io_bytes)"
within_1pct "read commands" "$r_cmds" "$(fio_field "$WORK/read.json" read total_ios)"
assert_eq "$errors" 0 "errors during fio"
assert_eq "$(metric "$R" tcmu_timeouts_total "$D")" 0 "timeouts"

# The histogram: cumulative buckets ending in +Inf = _count = commands.
commands=$(metric "$R" tcmu_commands_total "$D")
count=$(metric "$R" tcmu_command_latency_seconds_count "$D")
assert_eq "$count" "$commands" "latency _count vs tcmu_commands_total"
grep -F "tcmu_command_latency_seconds_bucket{device=\"$D\"," "$R" | awk '{print $NF}' >"$WORK/buckets.txt"
assert_eq "$(wc -l <"$WORK/buckets.txt")" 17 "latency buckets (16 bounds and +Inf)"
sort -n -c "$WORK/buckets.txt" || fail "latency buckets are not cumulative: $(tr '\n' ' ' <"$WORK/buckets.txt")"
assert_grep "^tcmu_command_latency_seconds_bucket\\{device=\"$D\",config=\"[^\"]*\",le=\"\\+Inf\"\\} $count$" \
    "$R" "+Inf bucket = _count"
sum=$(metric "$R" tcmu_command_latency_seconds_sum "$D")
awk -v s="$sum" 'BEGIN { exit !(s > 0) }' || fail "latency _sum is '$sum'"
log "latency: $count commands, $sum s in all, buckets $(tr '\n' ' ' <"$WORK/buckets.txt")"

# --- a second device comes and goes
user_file_backstore m1 $((16 << 20)) "$WORK/m1.img"
M1=$BS_PATH
wait_for 15 "series for user_1/m1" grep -qF 'tcmu_commands_total{device="user_1/m1",' "$METRICS"
wait_for 5 "tcmu_devices 2" grep -qx 'tcmu_devices 2' "$METRICS"
rmdir_timeout "$M1" 20 || fail "removing m1 failed"
wait_for 15 "series for user_1/m1 to go" sh -c "! grep -qF 'device=\"user_1/m1\"' '$METRICS'"
wait_for 5 "tcmu_devices 1" grep -qx 'tcmu_devices 1' "$METRICS"
metric "$METRICS" tcmu_commands_total "$D" | grep -qx '[0-9]*' || fail "$D vanished with m1"
log "m1 appeared in and disappeared from the metrics file"

undo_all
daemon_stop
# The last write at shutdown leaves a complete file behind.
assert_grep '^tcmu_devices 0$' "$METRICS" "final write after every device was removed"
