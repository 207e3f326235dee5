#!/bin/bash
# ab.sh — A/B of our daemon against itself: two daemon environments (e.g.
# with and without an engine feature) on the same user:file LUN, in one
# boot, runs alternating A B A B … so drift hits both alike. Not part of the
# test suite; run it with (vm-run passes GUEST_X on as X)
#   GUEST_AB_A="TCMU_FILE_INLINE=never" cargo xtask vm-run tests/vm/ab.sh
# Environment: AB_A, AB_B (space-separated VAR=value words put in the
# daemon's environment; AB_CONF_A/AB_CONF_B: lines for its tcmu.conf;
# AB_BIN_A/AB_BIN_B: another daemon binary, e.g. a build of an older
# commit, instead of this tree's),
# AB_RUNTIME (seconds a run, default 8), AB_ROUNDS (default 3), AB_JOBS
# (fio options of each job, `|`-separated; default 4k randread and
# randwrite at iodepth 1 and 32).
# Prints, per job and variant, the median IOPS, mean latency and the
# daemon's CPU time per I/O; the log lines also give, per I/O, the daemon's
# read and write syscalls and context switches (r/w/cs).
source "$(dirname "$0")/lib.sh"

RUNTIME=${AB_RUNTIME:-8}
ROUNDS=${AB_ROUNDS:-3}
IFS='|' read -r -a JOBS <<<"${AB_JOBS:---rw=randread --iodepth=1|--rw=randwrite --iodepth=1|--rw=randread --iodepth=32|--rw=randwrite --iodepth=32}"
SIZE=$((128 * 1024 * 1024))
FILES=$WORK/files
mkdir -p "$FILES"
mount -t tmpfs -o size=$((SIZE / 1024 / 1024 + 16))m tmpfs "$FILES" || fail "cannot mount a tmpfs"
push_cleanup "umount $FILES"
FILE=$FILES/ab.img
load_modules
dd if=/dev/urandom of="$FILE" bs=1M count=$((SIZE / 1024 / 1024)) status=none

# start_variant A|B: the daemon with that variant's environment and conf
# (through a wrapper that execs it, so DAEMON_PID is the daemon's).
start_variant() {
    local env_var="AB_$1" conf_var="AB_CONF_$1" bin_var="AB_BIN_$1"
    printf '%b\n' "${!conf_var:-}" >"$WORK/tcmu.conf"
    # shellcheck disable=SC2086 # VAR=value words
    env ${!env_var:-} true || fail "bad AB_$1: ${!env_var:-}"
    local saved=$TCMU_RUNNER bin=${!bin_var:-$TCMU_RUNNER}
    [[ -x $bin ]] || fail "AB_BIN_$1='$bin' is not an executable"
    printf '#!/bin/sh\nexec env %s %q "$@"\n' "${!env_var:-}" "$bin" >"$WORK/daemon-$1"
    chmod +x "$WORK/daemon-$1"
    TCMU_RUNNER=$WORK/daemon-$1 daemon_start
    TCMU_RUNNER=$saved
}

# proc_counters PID: "read-syscalls write-syscalls context-switches" of
# process PID (all threads), for per-I/O figures.
proc_counters() {
    local r w
    r=$(awk '$1 == "syscr:" { print $2 }' "/proc/$1/io")
    w=$(awk '$1 == "syscw:" { print $2 }' "/proc/$1/io")
    echo "$r $w $(cat /proc/"$1"/task/*/status | awk '/ctxt_switches/ { s += $2 } END { print s }')"
}

# The device exists before either daemon starts; each attaches at start.
start_variant A
user_file_backstore ab "$SIZE" "$FILE"
loop_export "$BS_PATH"
U_DEV=$DEV
daemon_stop

# run_one JOB: "IOPS MEAN_LAT_US CPU_US_PER_IO" of one fio run on U_DEV.
run_one() {
    local pid=$DAEMON_PID t0 t1 out=$WORK/ab.json c0 c1
    t0=$(proc_cpu_ticks "$pid")
    c0=$(proc_counters "$pid")
    # shellcheck disable=SC2086 # the job's options are split on purpose
    fio --name=ab --filename="$U_DEV" --bs=4k --norandommap --ioengine=libaio \
        --direct=1 --time_based --runtime="$RUNTIME" --randrepeat=0 \
        --output-format=json --output="$out" $1 >/dev/null 2>"$WORK/fio.err" ||
        { cat "$WORK/fio.err"; fail "fio failed: $1"; }
    t1=$(proc_cpu_ticks "$pid")
    c1=$(proc_counters "$pid")
    python3 - "$out" $((t1 - t0)) "$(getconf CLK_TCK)" "$c0" "$c1" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))["jobs"][0]
ios = j["read"]["total_ios"] + j["write"]["total_ios"]
iops = j["read"]["iops"] + j["write"]["iops"]
side = j["read"] if j["read"]["total_ios"] else j["write"]
lat = side["clat_ns"]["mean"] / 1000 + side["slat_ns"]["mean"] / 1000
cpu = int(sys.argv[2]) / int(sys.argv[3]) * 1e6 / max(ios, 1)
d = [(b - a) / max(ios, 1) for a, b in zip(map(int, sys.argv[4].split()), map(int, sys.argv[5].split()))]
print(f"{iops:.0f} {lat:.0f} {cpu:.0f} " + "/".join(f"{x:.1f}" for x in d))
PY
}

declare -A RES
for ((r = 1; r <= ROUNDS; r++)); do
    for v in A B; do
        start_variant "$v"
        for j in "${!JOBS[@]}"; do
            one=$(run_one "${JOBS[j]}")
            RES[$j.$v]+="$one;"
            log "round $r $v job $j (${JOBS[j]}): IOPS lat cpu r/w/cs = $one"
        done
        daemon_stop
    done
done

median() { printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
echo "variant A: ${AB_BIN_A:-} ${AB_A:-(none)} ${AB_CONF_A:-}"
echo "variant B: ${AB_BIN_B:-} ${AB_B:-(none)} ${AB_CONF_B:-}"
printf '%-40s %8s %8s %6s | %9s %9s | %9s %9s\n' job "IOPS A" "IOPS B" "B/A" "lat A µs" "lat B µs" "cpu A µs" "cpu B µs"
for j in "${!JOBS[@]}"; do
    declare -a ia=() ib=() la=() lb=() ca=() cb=()
    IFS=';' read -r -a runs_a <<<"${RES[$j.A]}"
    IFS=';' read -r -a runs_b <<<"${RES[$j.B]}"
    for x in "${runs_a[@]}"; do read -r i l c <<<"$x"; ia+=("$i"); la+=("$l"); ca+=("$c"); done
    for x in "${runs_b[@]}"; do read -r i l c <<<"$x"; ib+=("$i"); lb+=("$l"); cb+=("$c"); done
    a=$(median "${ia[@]}") b=$(median "${ib[@]}")
    printf '%-40s %8s %8s %6s | %9s %9s | %9s %9s\n' "${JOBS[j]}" "$a" "$b" \
        "$(awk -v a="$a" -v b="$b" 'BEGIN { printf "%.2f", b / a }')" \
        "$(median "${la[@]}")" "$(median "${lb[@]}")" "$(median "${ca[@]}")" "$(median "${cb[@]}")"
done
echo "ab.sh done"
