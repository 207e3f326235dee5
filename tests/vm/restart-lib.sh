#!/bin/bash
# restart-lib.sh — helpers for the restart, takeover, churn and soak tests
# (t-41, t-42, t-43, soak.sh). Source it after lib.sh.

# Timing is done with shell builtins only: under TCG, with fio running,
# starting a process (date, awk, sleep) from the 9p root takes from tens of
# milliseconds to seconds, which would be measured instead of the daemon.

# now_us: wall-clock time in microseconds (bash's EPOCHREALTIME).
now_us() { echo "${EPOCHREALTIME/./}"; }

# ms_since T0: milliseconds from T0 (now_us) to now.
ms_since() { echo $(((${EPOCHREALTIME/./} - $1) / 1000)); }

# log_line_us LINE: the time (microseconds) of a daemon log line, from its
# leading RFC 3339 timestamp (uses date: call it off the timed path).
log_line_us() {
    local t
    t=$(date -d "${1%% *}" +%s%N) || return 1
    echo $((t / 1000))
}

exec {NAP_FD}<> <(:)
# nap SECS: sleep without starting a process (SECS may be fractional).
nap() { read -r -t "$1" -u "$NAP_FD" || true; }

# io_done DISK: reads + writes the disk completed so far (/sys/block/X/stat;
# fio's verify phases only read), in IO_DONE (no subshell).
io_done() {
    local r _1 _2 _3 w _rest
    read -r r _1 _2 _3 w _rest <"/sys/block/$1/stat"
    IO_DONE=$((r + w))
}

# io_snapshot DISK...: remember io_done of each disk (see io_all_moved).
io_snapshot() {
    IO_DISKS=("$@")
    IO_BEFORE=()
    local d
    for d in "$@"; do
        io_done "$d"
        IO_BEFORE+=("$IO_DONE")
    done
}

# io_all_moved: every disk of the last io_snapshot completed an I/O since.
io_all_moved() {
    local i
    for i in "${!IO_DISKS[@]}"; do
        io_done "${IO_DISKS[i]}"
        ((IO_DONE > IO_BEFORE[i])) || return 1
    done
}

# wait_io_moved SECS: poll io_all_moved every 10 ms (builtins only); fails
# the test after SECS.
wait_io_moved() {
    local deadline=$((SECONDS + $1))
    until io_all_moved; do
        ((SECONDS < deadline)) || fail "no I/O completed on ${IO_DISKS[*]} within $1s"
        nap 0.01
    done
}

# daemon_launch [ARGS...]: start the daemon like daemon_start but return at
# once (DAEMON_PID set); check "ready" with daemon_ready_since_mark.
daemon_launch() {
    "$TCMU_RUNNER" --config "$WORK/tcmu.conf" -l "$LOGDIR" "$@" >>"$LOGDIR/stdout.log" 2>&1 &
    DAEMON_PID=$!
}

# daemon_ready_since_mark: wait (30 s) for "tcmu-runner ready" in the log
# after the last log_mark; prints that line.
daemon_ready_since_mark() {
    local deadline=$((SECONDS + 30)) line
    while :; do
        line=$(log_since | grep -m1 'tcmu-runner ready' || true)
        [[ -n $line ]] && { echo "$line"; return 0; }
        kill -0 "$DAEMON_PID" 2>/dev/null || fail "the daemon (pid $DAEMON_PID) exited before logging ready"
        ((SECONDS < deadline)) || fail "the daemon did not log ready within 30s"
        nap 0.1
    done
}

# dmesg_check FILE DISK...: save the kernel lines since dmesg_mark to FILE
# and fail the test on a hung-task report ("blocked for more than") or an
# I/O error / failed command on one of the disks (sdX names, no /dev/).
dmesg_check() {
    local file=$1
    shift
    dmesg_since >"$file"
    local hung
    hung=$(grep -c 'blocked for more than' "$file" || true)
    [[ $hung -eq 0 ]] || { grep -B2 -A8 'blocked for more than' "$file" | head -40; fail "$hung 'blocked for more than' message(s) in the kernel log"; }
    local d
    for d in "$@"; do
        if grep -E "\b$d\b" "$file" | grep -Eiq 'I/O error|FAILED Result|critical (target|medium)'; then
            grep -E "\b$d\b" "$file" | head -20
            fail "the kernel logged errors for $d"
        fi
    done
    if grep -Eq 'Buffer I/O error|blk_update_request: I/O error|ring broken' "$file"; then
        grep -E 'Buffer I/O error|blk_update_request: I/O error|ring broken' "$file" | head -20
        fail "the kernel logged I/O errors"
    fi
}

# fio_clat_max_ms JSON: the largest completion latency (ms) over every job
# and direction of a fio JSON report: the longest any I/O waited.
fio_clat_max_ms() {
    jq '[.jobs[] | (.read.clat_ns.max, .write.clat_ns.max)] | max / 1000000 | floor' "$1"
}

# proc_fds PID: number of open file descriptors of PID.
# (A glob, not find: find fails when an fd closes while it lists them,
# which under pipefail ended t-43 once.)
proc_fds() {
    local f n=0
    for f in /proc/"$1"/fd/*; do
        [[ -L $f ]] && n=$((n + 1))
    done
    echo "$n"
}

# proc_threads PID: number of threads of PID.
proc_threads() { awk '$1 == "Threads:" { print $2 }' "/proc/$1/status"; }

# proc_rss_kib PID: resident set size of PID in KiB.
proc_rss_kib() { awk '$1 == "VmRSS:" { print $2 }' "/proc/$1/status"; }

# disk_name DEV: sdX for /dev/sdX.
disk_name() { basename "$1"; }

# fio_loop_bg NAME DEV SECS [EXTRA...]: like fio_bg, but runs fio again and
# again (SECS each, reports $WORK/NAME.N.json) until fio_loop_wait NAME, for
# tests whose length is not known in advance (fio stopped by a signal
# exits non-zero and writes no clean report). Sets FIO_PID (the loop).
fio_loop_bg() {
    local name=$1 dev=$2 secs=$3
    shift 3
    rm -f "$WORK/$name.stop"
    (
        set +e
        n=0
        while [[ ! -e $WORK/$name.stop ]]; do
            n=$((n + 1))
            fio --name="$name" --filename="$dev" --ioengine=libaio --direct=1 \
                --rw=randwrite --bs=4k --iodepth=16 --size=64m \
                --verify=crc32c --do_verify=1 --verify_backlog=128 --verify_fatal=1 \
                --verify_state_save=0 \
                --time_based --runtime="$secs" --eta=never \
                --output-format=json --output="$WORK/$name.$n.json" "$@" \
                >"$WORK/$name.$n.out" 2>&1
            rc=$?
            echo "$rc" >"$WORK/$name.$n.rc"
            [[ $rc -eq 0 ]] || exit "$rc"
        done
    ) &
    FIO_PID=$!
}

# fio_loop_stop NAME...: ask fio loops to stop after their current run
# (fio_loop_wait does it too; stopping them all first saves waiting).
fio_loop_stop() {
    local n
    for n in "$@"; do touch "$WORK/$n.stop"; done
}

# fio_loop_wait NAME PID: stop a fio_loop_bg after its current run and
# check every run: exit status 0, no errors, data verified. Sets
# FIO_LOOP_RUNS and FIO_LOOP_CLAT_MS (longest completion of all runs).
fio_loop_wait() {
    local name=$1 pid=$2 rc=0
    touch "$WORK/$name.stop"
    wait "$pid" || rc=$?
    local f n=0 clat max=0
    for f in "$WORK/$name".*.json; do
        [[ -e $f ]] || continue
        n=$((n + 1))
        local base=${f%.json}
        [[ $(cat "$base.rc" 2>/dev/null) == 0 ]] ||
            { tail -n 20 "$base.out"; fail "fio '$name' run $n exited with status $(cat "$base.rc" 2>/dev/null)"; }
        assert_eq "$(fio_errors "$f")" 0 "fio '$name' run $n error count"
        clat=$(fio_clat_max_ms "$f")
        ((clat > max)) && max=$clat
    done
    [[ $rc -eq 0 ]] || fail "fio loop '$name' exited with status $rc"
    ((n > 0)) || fail "fio loop '$name' ran no fio"
    FIO_LOOP_RUNS=$n
    FIO_LOOP_CLAT_MS=$max
    log "fio '$name': $n run(s), no errors, longest completion ${max} ms"
}

# runner_to_ram: run the daemon from a copy in guest RAM ($WORK/bin). The
# release binary is large (debug info) and the 9p share under TCG pages its
# code in slowly on every new process, which would dominate a restart's
# time; an installed daemon starts from a local disk.
# two_file_luns NAME: a tcm_loop target with two 96 MiB user:file LUNs,
# NAME0 and NAME1 (backing files in $WORK). Sets LUN0_BS/LUN1_BS (their
# configfs directories), LUN0_DEV/LUN1_DEV (their /dev nodes) and DISKS
# (their block device names).
two_file_luns() {
    local size=$((96 * 1024 * 1024)) i
    loop_target
    for i in 0 1; do
        user_file_backstore "$1$i" "$size" "$WORK/$1$i.img"
        printf -v "LUN${i}_BS" '%s' "$BS_PATH"
        loop_add_lun "$LOOP_TPG" "$i" "$BS_PATH"
        printf -v "LUN${i}_DEV" '%s' "$DEV"
    done
    DISKS=("$(disk_name "$LUN0_DEV")" "$(disk_name "$LUN1_DEV")")
}

runner_to_ram() {
    [[ -n "${HARNESS_SELFTEST:-}" ]] && return 0
    mkdir -p "$WORK/bin"
    cp "$TCMU_RUNNER" "$WORK/bin/tcmu-runner" || fail "cannot copy $TCMU_RUNNER to $WORK/bin"
    TCMU_RUNNER=$WORK/bin/tcmu-runner
}
