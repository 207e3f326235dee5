#!/bin/bash
# bench-lib.sh — what the handler benchmarks (bench-rbd.sh, bench-qcow.sh,
# bench-glfs.sh) share: their settings, one measured fio run, the daemons
# taking turns, and the summary table. Sourced after lib.sh, with TEST_NAME
# set.
#
# bench.tsv holds one line per fio run, TAB-separated:
#   run JOB BACKEND ROUND IOPS CPU_TICKS IOS

RUNTIME=${BENCH_RUNTIME:-10}
ROUNDS=${BENCH_ROUNDS:-2}
OUT=$XT_OUT/$TEST_NAME
TSV=$OUT/bench.tsv
HZ=$(getconf CLK_TCK)
rm -rf "$OUT"
mkdir -p "$OUT"
: >"$TSV"

# use_daemon ours|c: make that daemon (ours, or the C one of
# c_daemon_start) the one serving the devices, stopping the other first,
# and wait until it holds the $SERVED devices' rings (none before any
# device exists). Sets SERVING (ours, c or none) and SERVING_PID.
SERVING=none SERVING_PID= SERVED=0
use_daemon() {
    [[ $1 != "$SERVING" ]] || return 0
    case $SERVING in
    ours) daemon_stop ;;
    c) c_daemon_stop ;;
    esac
    if [[ $1 == ours ]]; then
        daemon_start
        SERVING_PID=$DAEMON_PID
    else
        c_daemon_start
        SERVING_PID=$C_DAEMON_PID
    fi
    SERVING=$1
    ((SERVED == 0)) || wait_for 60 "the $1 daemon serving $SERVED device(s)" \
        daemon_holds_uios "$SERVING_PID" "$SERVED"
}

# bench_fio JOB BACKEND ROUND PID FIO_ARGS...: one time-based fio run of
# RUNTIME seconds (after a 2 s ramp) with FIO_ARGS (target, engine, job
# options), recorded in bench.tsv. The CPU measured is PID's over the run,
# or with PID empty fio's own (sampled just before it exits: its engine
# runs the backend inside it); PID "-": none (a kernel backstore).
bench_fio() {
    local job=$1 backend=$2 round=$3 pid=$4
    shift 4
    local json=$OUT/$job.$backend.r$round.json t0=0 t1=0 now iops ios
    [[ -n $pid && $pid != - ]] && t0=$(proc_cpu_ticks "$pid")
    fio --name="$job" "$@" --time_based --runtime="$RUNTIME" --ramp_time=2 \
        --output-format=json --output="$json" >/dev/null 2>"$OUT/fio.err" &
    local fpid=$!
    if [[ -z $pid ]]; then
        while kill -0 "$fpid" 2>/dev/null; do
            now=$(proc_cpu_ticks "$fpid" 2>/dev/null) && t1=$now
            sleep 0.5
        done
    fi
    wait "$fpid" || { cat "$OUT/fio.err"; fail "fio $job on $backend failed"; }
    [[ -n $pid && $pid != - ]] && t1=$(proc_cpu_ticks "$pid")
    read -r iops ios < <(python3 -c '
import json, sys
j = json.load(open(sys.argv[1]))["jobs"][0]
d = j["write"] if j["write"]["total_ios"] else j["read"]
print(round(d["iops"]), d["total_ios"])' "$json")
    printf 'run\t%s\t%s\t%s\t%s\t%s\t%s\n' "$job" "$backend" "$round" "$iops" "$((t1 - t0))" "$ios" >>"$TSV"
    log "$job $backend r$round: $iops IOPS, $((t1 - t0)) CPU ticks (${HZ}/s)"
}

# bench_summary REF... : $OUT/summary.txt from bench.tsv, printed too: per
# job and backend the medians of IOPS and CPU µs per I/O, and both as
# ratios to each REF backend (e.g. "c", "fio").
bench_summary() {
    python3 - "$TSV" "$HZ" "$@" >"$OUT/summary.txt" <<'EOF'
import statistics, sys
tsv, hz, refs = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
runs = {}
for line in open(tsv):
    f = line.rstrip("\n").split("\t")
    if f[0] == "run":
        runs.setdefault(f[1], {}).setdefault(f[2], []).append((int(f[4]), int(f[5]), int(f[6])))
head = ["job", "backend", "IOPS", "CPU µs per I/O"]
for r in refs:
    head += [f"IOPS / {r}", f"CPU per I/O / {r}"]
print("| " + " | ".join(head) + " |")
print("|---|---|" + "---:|" * (len(head) - 2))
for job, by in runs.items():
    med = {b: (statistics.median(x[0] for x in r),
               statistics.median(x[1] / hz * 1e6 / max(x[2], 1) for x in r)) for b, r in by.items()}
    for b, (iops, cpu) in med.items():
        cells = [job, b, f"{iops:,.0f}", f"{cpu:.0f}" if cpu else "-"]
        for r in refs:
            ri, rc = med.get(r, (0, 0))
            cells += [f"{iops / ri:.2f}×" if ri else "-", f"{cpu / rc:.2f}×" if rc and cpu else "-"]
        print("| " + " | ".join(cells) + " |")
print()
print("(medians of the rounds; CPU per I/O: the serving daemon's utime+stime over")
print("the run, or for an fio engine fio's own, the backend's library inside it;")
print("none for a kernel backstore)")
EOF
    cat "$OUT/summary.txt"
}
