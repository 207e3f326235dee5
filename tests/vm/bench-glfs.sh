#!/bin/bash
# bench-glfs.sh — `cargo xtask bench --glfs`: our user:glfs LUN against
# fio's own gfapi engine on the same volume and file, in one boot. Not
# part of the test suite.
#
# glusterd and a one-brick volume in the guest (gluster_start, as
# t-56-glfs), one 256 MiB file of the volume (bench.img, made by our
# handler with the device's size), and the same fio jobs through:
#   ours   our daemon's user:glfs LUN (tcm_loop; libaio, direct)
#   fio    fio's gfapi_async engine: libgfapi in fio's process, no SCSI at
#          all (the limit for any gateway)
# Rounds alternate the order. Each run records IOPS and the serving
# process's CPU time (our daemon, or fio itself for the gfapi engine).
#
# Output in $XT_OUT/bench-glfs/: fio JSON reports, bench.tsv (TAB-separated:
#   run JOB BACKEND ROUND IOPS CPU_TICKS IOS)
# and summary.txt (medians, ours against fio-gfapi).
#
# Environment: BENCH_RUNTIME (seconds per fio run, default 10),
# BENCH_ROUNDS (default 2), TCMU_RUNNER.

TEST_NAME=bench-glfs
source "$(dirname "$0")/lib.sh"

RUNTIME=${BENCH_RUNTIME:-10}
ROUNDS=${BENCH_ROUNDS:-2}
MIB=$((1024 * 1024))
OUT=$XT_OUT/bench-glfs
TSV=$OUT/bench.tsv
rm -rf "$OUT"
mkdir -p "$OUT"
: >"$TSV"
# NAME|fio options
JOBS=(
    "randwrite-4k-qd32|--rw=randwrite --bs=4k --iodepth=32 --norandommap"
    "randread-4k-qd32|--rw=randread --bs=4k --iodepth=32 --norandommap"
    "write-128k-qd16|--rw=write --bs=128k --iodepth=16"
)
HZ=$(getconf CLK_TCK)

load_modules
gluster_start
daemon_start
user_backstore g0 $((256 * MIB)) "glfs/vol0@$HOST/bench.img" 60 || fail "enabling user:glfs g0 failed"
loop_export "$BS_PATH"

# run_fio JOB BACKEND ROUND OPTS: one fio run.
run_fio() {
    local job=$1 backend=$2 round=$3 opts=$4
    local json=$OUT/$job.$backend.r$round.json
    local target=(--filename="$DEV" --ioengine=libaio --direct=1)
    [[ $backend == fio ]] && target=(--ioengine=gfapi_async --volume=vol0 --brick="$HOST" --filename=bench.img)
    local t0 t1 last=0 now
    [[ $backend == ours ]] && t0=$(proc_cpu_ticks "$DAEMON_PID")
    # shellcheck disable=SC2086
    fio --name="$job" "${target[@]}" $opts --size=256m --time_based --runtime="$RUNTIME" \
        --ramp_time=2 --output-format=json --output="$json" >/dev/null 2>"$OUT/fio.err" &
    local fpid=$!
    if [[ $backend == fio ]]; then
        # fio's own CPU: sample it just before it exits.
        while kill -0 "$fpid" 2>/dev/null; do
            now=$(proc_cpu_ticks "$fpid" 2>/dev/null) && last=$now
            sleep 0.5
        done
        t0=0 t1=$last
    fi
    wait "$fpid" || { cat "$OUT/fio.err"; fail "fio $job on $backend failed"; }
    [[ $backend == ours ]] && t1=$(proc_cpu_ticks "$DAEMON_PID")
    local iops ios
    read -r iops ios < <(python3 -c '
import json, sys
j = json.load(open(sys.argv[1]))["jobs"][0]
d = j["write"] if j["write"]["total_ios"] else j["read"]
print(round(d["iops"]), d["total_ios"])' "$json")
    printf 'run\t%s\t%s\t%s\t%s\t%s\t%s\n' "$job" "$backend" "$round" "$iops" "$((t1 - t0))" "$ios" >>"$TSV"
    log "$job $backend r$round: $iops IOPS, $((t1 - t0)) CPU ticks (${HZ}/s)"
}

for ((round = 1; round <= ROUNDS; round++)); do
    if ((round % 2)); then order=(ours fio); else order=(fio ours); fi
    for spec in "${JOBS[@]}"; do
        for b in "${order[@]}"; do
            run_fio "${spec%%|*}" "$b" "$round" "${spec#*|}"
        done
    done
done

python3 - "$TSV" "$HZ" >"$OUT/summary.txt" <<'EOF'
import statistics, sys
tsv, hz = sys.argv[1], int(sys.argv[2])
runs = {}
for line in open(tsv):
    f = line.rstrip("\n").split("\t")
    if f[0] == "run":
        runs.setdefault((f[1], f[2]), []).append((int(f[4]), int(f[5]), int(f[6])))
print("| job | ours IOPS | fio-gfapi IOPS | ours / fio-gfapi | CPU µs per I/O ours | fio-gfapi |")
print("|---|---:|---:|---:|---:|---:|")
for job in dict.fromkeys(j for j, _ in runs):
    med = {}
    for b in ("ours", "fio"):
        r = runs.get((job, b), [])
        if r:
            med[b] = (statistics.median(x[0] for x in r),
                      statistics.median(x[1] / hz * 1e6 / max(x[2], 1) for x in r))
    if len(med) < 2:
        continue
    (oi, oc), (fi, fc) = med["ours"], med["fio"]
    print(f"| {job} | {oi:,.0f} | {fi:,.0f} | {oi / fi:.2f}× | {oc:.0f} | {fc:.0f} |")
print()
print("(median of the rounds; CPU per I/O: our daemon's, or fio's own with libgfapi inside it)")
EOF
cat "$OUT/summary.txt"
undo_all
daemon_stop
log "done"
