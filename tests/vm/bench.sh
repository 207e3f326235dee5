#!/bin/bash
# bench.sh — `cargo xtask bench`: the kernel's fileio backstore, Debian's C
# tcmu-runner (user:file) and ours (user:file) under the same fio jobs, in
# one boot. Not part of the test suite.
#
# Every LUN index i has one tmpfs file, prefilled with random data, shared
# by its three backstores: fileio_1/k<i>, and user_1/u<i> served by
# whichever daemon runs. Both daemons listen to every TCMU device, so only
# one runs at a time: they take turns, each attaching to the devices that
# exist when it starts (block, reset the ring, open, unblock). Jobs are
# interleaved so that drift (of a TCG machine that may share its host)
# hits every backstore alike: for each round, for each job, the three
# backstores run back to back, in the order ours/fileio/C or C/fileio/ours
# (whichever daemon already runs goes first: one daemon switch per job).
#
# Phase 0 warms the devices up and takes our daemon's memory with 1 and
# with 8 devices: u0 exists before it starts, u1..u7 are added while it runs.
#
# Output in $XT_OUT/bench/ for xtask's report: one fio JSON report per run
# (<job>.<backstore>.r<round>.json) and bench.tsv, TAB-separated records:
#   info KEY VALUE
#   job NAME LUNS DESCRIPTION
#   run JOB BACKSTORE ROUND FILE CPU_TICKS      (CPU_TICKS: the daemon's
#       utime+stime over the run, "-" for fileio)
#   mem DAEMON DEVICES VMRSS_KIB RSSANON_KIB RSSFILE_KIB RSSSHMEM_KIB
#   idle DAEMON DEVICES SECONDS CPU_TICKS    (CPU burnt with no I/O, taken
#       once per daemon after its first start)
#
# Environment: BENCH_RUNTIME (seconds per fio run, default 10),
# BENCH_ROUNDS (default 2), BENCH_SIZE_MIB (per LUN file, default 128),
# BENCH_JOBS (extended regex: run only the jobs whose names match),
# BENCH_HW_MAX_SECTORS (hw_max_sectors of the user:file devices, default
# 1024: 512 KiB commands, so 128k I/O is not split in two; the kernel's
# TCMU default is 128), BENCH_RING_POLL_US (our tcmu.conf ring_poll_us,
# default 0),
# C_TCMU_BIN, C_TCMU_LIBDIR, C_TCMU_HANDLERS (see lib.sh), TCMU_RUNNER.

TEST_NAME=bench
source "$(dirname "$0")/lib.sh"

RUNTIME=${BENCH_RUNTIME:-10}
ROUNDS=${BENCH_ROUNDS:-2}
SIZE_MIB=${BENCH_SIZE_MIB:-128}
SIZE=$((SIZE_MIB * 1024 * 1024))
NLUNS=8
OUT=$XT_OUT/bench
TSV=$OUT/bench.tsv
mkdir -p "$OUT"
: >"$TSV"

# The jobs: NAME|LUNS|DESCRIPTION|fio options. Random jobs skip fio's
# random map (every block need not be hit once before repeating).
JOBS=(
    "randread-4k-qd1|1|4k random read, iodepth 1|--rw=randread --bs=4k --iodepth=1 --norandommap"
    "randwrite-4k-qd1|1|4k random write, iodepth 1|--rw=randwrite --bs=4k --iodepth=1 --norandommap"
    "randread-4k-qd32|1|4k random read, iodepth 32|--rw=randread --bs=4k --iodepth=32 --norandommap"
    "randwrite-4k-qd32|1|4k random write, iodepth 32|--rw=randwrite --bs=4k --iodepth=32 --norandommap"
    "read-128k-qd16|1|128k sequential read, iodepth 16|--rw=read --bs=128k --iodepth=16"
    "write-128k-qd16|1|128k sequential write, iodepth 16|--rw=write --bs=128k --iodepth=16"
    "randrw70-4k-qd32|1|4k random 70% read / 30% write, iodepth 32|--rw=randrw --rwmixread=70 --bs=4k --iodepth=32 --norandommap"
    "randread-4k-qd32-8luns|8|4k random read, iodepth 32 on each of 8 LUNs (aggregate)|--rw=randread --bs=4k --iodepth=32 --norandommap"
)
if [[ -n ${BENCH_JOBS:-} ]]; then
    kept=()
    for spec in "${JOBS[@]}"; do
        [[ ${spec%%|*} =~ $BENCH_JOBS ]] && kept+=("$spec")
    done
    ((${#kept[@]})) || fail "BENCH_JOBS='$BENCH_JOBS' matches no job"
    JOBS=("${kept[@]}")
fi
# Both daemons' devices get the same command size limit.
export BS_HW_MAX_SECTORS=${BENCH_HW_MAX_SECTORS:-1024}
RING_POLL_US=${BENCH_RING_POLL_US:-0}
echo "ring_poll_us = $RING_POLL_US" >"$WORK/tcmu.conf"

# record FIELD...: one TAB-separated line of bench.tsv.
record() { (IFS=$'\t'; echo "$*") >>"$TSV"; }

# Which daemon serves the user:file LUNs now: ours, c or "".
CURRENT=
# K_DEVS / U_DEVS: the disks of the fileio and user backstores, by index.
K_DEVS=()
U_DEVS=()

# daemon_pid: PID of the daemon serving the user LUNs now.
daemon_pid() {
    case $CURRENT in
        ours) echo "$DAEMON_PID" ;;
        c) echo "$C_DAEMON_PID" ;;
    esac
}

# user_disks_answer: every exported user disk answers a 4k direct read
# (all at once: each costs an exec over 9p).
user_disks_answer() {
    local d pids=() i=0
    for d in "${U_DEVS[@]}"; do
        timeout 30 dd if="$d" of=/dev/null bs=4k count=1 iflag=direct status=none &
        pids+=($!)
    done
    for d in "${U_DEVS[@]}"; do
        wait "${pids[i]}" || fail "$d did not answer a read with the $CURRENT daemon"
        i=$((i + 1))
    done
}

# user_devices: how many user backstores exist (the daemons serve them all).
user_devices() {
    local n=0 d
    for d in "$CFG"/core/user_1/*/; do [[ -f ${d}enable ]] && n=$((n + 1)); done
    echo "$n"
}

# use_daemon ours|c: make that daemon the one serving the user LUNs.
use_daemon() {
    [[ $CURRENT == "$1" ]] && return 0
    case $CURRENT in
        ours) daemon_stop ;;
        c) c_daemon_stop ;;
    esac
    CURRENT=$1
    local n t0=$SECONDS
    n=$(user_devices)
    case $1 in
        ours) daemon_start ;;
        c) c_daemon_start ;;
    esac
    wait_for 60 "the $1 daemon to open $n UIO device(s)" daemon_holds_uios "$(daemon_pid)" "$n"
    local t1=$SECONDS
    user_disks_answer
    log "$1 daemon serves $n device(s): UIOs open after $((t1 - t0)) s, disks answer after $((SECONDS - t0)) s"
    if [[ -z ${IDLE_DONE[$1]:-} ]]; then
        IDLE_DONE[$1]=1
        local pid a
        pid=$(daemon_pid)
        a=$(proc_cpu_ticks "$pid")
        sleep "$IDLE_SECS"
        record idle "$1" "$n" "$IDLE_SECS" "$(($(proc_cpu_ticks "$pid") - a))"
    fi
}

# Daemons whose idle CPU was taken, and for how long.
declare -A IDLE_DONE=()
IDLE_SECS=3

# fio_run OUTFILE LUNS DEVS_VAR OPTS...: one time-based fio run over the
# first LUNS disks of the array named DEVS_VAR (one job per disk, reported
# as a group), JSON report in OUTFILE.
fio_run() {
    local out=$1 luns=$2
    local -n devs=$3
    shift 3
    local args=() i
    for ((i = 0; i < luns; i++)); do
        args+=(--name="lun$i" --filename="${devs[i]}")
    done
    fio --ioengine=libaio --direct=1 --time_based --runtime="$RUNTIME" \
        --randrepeat=0 --lat_percentiles=1 --group_reporting --eta=never \
        "$@" "${args[@]}" --output-format=json --output="$out" >"$WORK/fio.err" 2>&1 ||
        { cat "$WORK/fio.err"; fail "fio failed: $*"; }
}

# run_job SPEC BACKSTORE ROUND: one measured run, recorded in bench.tsv.
run_job() {
    local bs=$2 round=$3
    local name luns desc opts
    IFS='|' read -r name luns desc opts <<<"$1"
    local file=$name.$bs.r$round.json devs=U_DEVS pid="" t0 t1 ticks=-
    [[ $bs == fileio ]] && devs=K_DEVS
    [[ $bs != fileio ]] && pid=$(daemon_pid)
    [[ -n $pid ]] && t0=$(proc_cpu_ticks "$pid")
    # shellcheck disable=SC2086 # the job's options are split on purpose
    fio_run "$OUT/$file" "$luns" "$devs" $opts
    if [[ -n $pid ]]; then
        t1=$(proc_cpu_ticks "$pid")
        ticks=$((t1 - t0))
        # shellcheck disable=SC2046 # four numbers
        record mem "$bs" "$(user_devices)" $(proc_mem "$pid")
    fi
    record run "$name" "$bs" "$round" "$file" "$ticks"
    # The daemon's threads right after the run (io_uring's io-wq workers,
    # iou-wrk-*, linger a few seconds): where its CPU time may go.
    [[ -n $pid ]] && echo "$name $bs r$round: $(thread_names "$pid")" >>"$OUT/threads.txt"
    log "$name $bs round $round: $(iops_of "$OUT/$file") IOPS"
}

# thread_names PID: "N name" for each thread name of process PID.
thread_names() {
    cat /proc/"$1"/task/*/comm 2>/dev/null | sed 's/[0-9]*$//' | sort | uniq -c |
        awk '{ printf "%s%s x%d", (NR > 1 ? ", " : ""), $2, $1 }'
}

# iops_of JSON: read + write IOPS of a fio report (for the console).
iops_of() {
    grep -Eo '"iops" *: *[0-9.]+' "$1" | head -n2 | awk -F: '{ s += $2 } END { printf "%.0f", s }'
}

bench_exit() {
    local rc=$?
    # LUNs go first, while a daemon still answers (removing a disk sends it
    # SYNCHRONIZE CACHE); then whatever daemon runs.
    undo_all
    c_daemon_kill
    (exit "$rc")
    cleanup
}
trap bench_exit EXIT

# ---------------------------------------------------------------------------
# Set-up

load_modules
[[ -x "${C_TCMU_BIN:-}" ]] || fail "C_TCMU_BIN='${C_TCMU_BIN:-}': the C peer is missing (run cargo xtask bench)"
etc_overlay
record info kernel "$(uname -r)"
record info vcpus "$(nproc)"
# How idle vCPUs wait: the kernel's default (HLT) unless booted with idle=.
record info guest_idle "$(grep -o 'idle=[a-z]*' /proc/cmdline || echo 'halt (default)')"
record info memory_mib "$(awk '$1 == "MemTotal:" { printf "%d", $2 / 1024 }' /proc/meminfo)"
record info runtime "$RUNTIME"
record info rounds "$ROUNDS"
record info size_mib "$SIZE_MIB"
record info hw_max_sectors "$BS_HW_MAX_SECTORS"
record info ring_poll_us "$RING_POLL_US"
record info fio "$(fio --version)"
record info clk_tck "$(getconf CLK_TCK)"
record info c_version "$(LD_LIBRARY_PATH=${C_TCMU_LIBDIR:-} "$C_TCMU_BIN" -V 2>&1 | head -n1)"
record info ours_version "$("$TCMU_RUNNER" -V 2>&1 | head -n1)"
for spec in "${JOBS[@]}"; do
    IFS='|' read -r name luns desc _ <<<"$spec"
    record job "$name" "$luns" "$desc"
done

# The files get a tmpfs of their own: /run's holds only half the RAM.
FILES=$WORK/files
mkdir -p "$FILES"
mount -t tmpfs -o size=$((NLUNS * SIZE_MIB + 16))m tmpfs "$FILES" || fail "cannot mount a tmpfs on $FILES"
push_cleanup "umount -l $FILES"
log "filling $NLUNS files of $SIZE_MIB MiB"
dd if=/dev/urandom of="$FILES/f0.img" bs=1M count="$SIZE_MIB" status=none
for ((i = 1; i < NLUNS; i++)); do cp "$FILES/f0.img" "$FILES/f$i.img" || fail "cannot fill $FILES/f$i.img"; done

# One tcm_loop target for the fileio LUNs, one for the user LUNs.
loop_target
K_TPG=$LOOP_TPG
for ((i = 0; i < NLUNS; i++)); do
    fileio_backstore "k$i" "$SIZE" "$FILES/f$i.img"
    loop_add_lun "$K_TPG" "$i" "$BS_PATH"
    K_DEVS+=("$DEV")
done
loop_target
U_TPG=$LOOP_TPG

# Phase 0: u0 made while no daemon runs; ours picks it up at start. (Its
# idle CPU is taken at its next start, with 8 devices.)
user_backstore u0 "$SIZE" "file/$FILES/f0.img" || fail "enabling u0 failed"
IDLE_DONE[ours]=skip
use_daemon ours
IDLE_DONE[ours]=
loop_add_lun "$U_TPG" 0 "$CFG/core/user_1/u0"
U_DEVS+=("$DEV")
user_disks_answer
warm() {
    local luns=$1
    RUNTIME=3 fio_run "$WORK/warm.json" "$luns" U_DEVS --rw=randrw --bs=64k --iodepth=16
    RUNTIME=3 fio_run "$WORK/warm.json" "$luns" U_DEVS --rw=randrw --bs=4k --iodepth=32
}
warm 1
# shellcheck disable=SC2046 # four numbers
record mem ours 1 $(proc_mem "$DAEMON_PID")
for ((i = 1; i < NLUNS; i++)); do
    user_backstore "u$i" "$SIZE" "file/$FILES/f$i.img" || fail "enabling u$i failed"
    loop_add_lun "$U_TPG" "$i" "$BS_PATH"
    U_DEVS+=("$DEV")
done
warm "$NLUNS"
# shellcheck disable=SC2046 # four numbers
record mem ours "$NLUNS" $(proc_mem "$DAEMON_PID")

# ---------------------------------------------------------------------------
# The rounds

t_start=$SECONDS
for ((r = 1; r <= ROUNDS; r++)); do
    for spec in "${JOBS[@]}"; do
        if [[ $CURRENT == ours ]]; then order=(ours fileio c); else order=(c fileio ours); fi
        for bs in "${order[@]}"; do
            [[ $bs == fileio ]] || use_daemon "$bs"
            run_job "$spec" "$bs" "$r"
        done
    done
    log "round $r of $ROUNDS done ($((SECONDS - t_start)) s)"
done

# Tear down while a daemon answers, then stop it cleanly.
undo_all
case $CURRENT in
    ours) daemon_stop ;;
    c) c_daemon_stop ;;
esac
cp "$LOGDIR/c/tcmu-runner.log" "$OUT/c-tcmu-runner.log" 2>/dev/null || true
cp "$LOGDIR/tcmu-runner.log" "$OUT/ours-tcmu-runner.log" 2>/dev/null || true
record info guest_seconds "$SECONDS"
log "bench done in ${SECONDS}s"
