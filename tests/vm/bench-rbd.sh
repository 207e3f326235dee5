#!/bin/bash
# bench-rbd.sh — `cargo xtask bench --rbd`: the rbd gateways on one Ceph
# cluster in one boot. Not part of the test suite.
#
# One cluster (mon + memstore OSD in the guest), one prefilled image, and
# the same fio jobs (4k random write and read, iodepth 32, libaio, direct)
# through:
#   ours   our daemon's user:rbd LUN (tcm_loop)
#   c      Debian's C tcmu-runner with its handler_rbd.so, on the same
#          device (the daemons take turns, each attaching to it)
#   fio    fio's own rbd engine: librbd in fio's process, no SCSI at all
#          (the limit for any gateway)
# Each run records IOPS and the serving process's CPU time (daemon, or fio
# itself for the rbd engine); our daemon's RSS is taken with one and with
# eight rbd LUNs. Rounds alternate the order of the backends.
#
# Output in $XT_OUT/bench-rbd/: fio JSON reports, bench.tsv (TAB-separated:
#   run JOB BACKEND ROUND IOPS CPU_TICKS IOS
#   mem DEVICES VMRSS_KIB RSSANON_KIB)
# and summary.txt (medians, CPU per I/O against the C handler).
#
# Environment: BENCH_RUNTIME (seconds per fio run, default 10),
# BENCH_ROUNDS (default 2), C_TCMU_BIN, C_TCMU_LIBDIR, C_TCMU_HANDLERS (see
# lib.sh), TCMU_RUNNER.

TEST_NAME=bench-rbd
source "$(dirname "$0")/lib.sh"

RUNTIME=${BENCH_RUNTIME:-10}
ROUNDS=${BENCH_ROUNDS:-2}
MIB=$((1024 * 1024))
OUT=$XT_OUT/bench-rbd
TSV=$OUT/bench.tsv
rm -rf "$OUT"
mkdir -p "$OUT"
: >"$TSV"
JOBS=("randwrite-4k-qd32|--rw=randwrite" "randread-4k-qd32|--rw=randread")
HZ=$(getconf CLK_TCK)

bench_rbd_exit() {
    local rc=$?
    # LUNs go first, while a daemon still answers; then whatever daemon runs.
    undo_all
    c_daemon_kill
    (exit "$rc")
    cleanup
}
trap bench_rbd_exit EXIT

load_modules
ceph_start
rbdc create --size 256M rbd/bench || fail "rbd create failed"
log "prefilling the image (reads of unwritten objects never reach the OSD)"
rbdc bench --io-type write --io-size 4M --io-total 256M --io-pattern seq rbd/bench >/dev/null 2>&1 ||
    fail "prefilling failed"
for i in 1 2 3 4 5 6 7; do rbdc create --size 64M "rbd/extra$i" || fail "rbd create failed"; done
RBD_CFG="rbd/rbd/bench;conf=$CEPH_CONF"

daemon_start
user_backstore r0 $((256 * MIB)) "$RBD_CFG" || fail "enabling user:rbd r0 failed"
loop_export "$BS_PATH"
R0=$BS_PATH
dd if="$DEV" of=/dev/null bs=1M count=8 iflag=direct status=none
read -r rss anon _ < <(proc_mem "$DAEMON_PID")
printf 'mem\t1\t%s\t%s\n' "$rss" "$anon" >>"$TSV"
for i in 1 2 3 4 5 6 7; do
    user_backstore "x$i" $((64 * MIB)) "rbd/rbd/extra$i;conf=$CEPH_CONF" || fail "enabling x$i failed"
done
sleep 2
read -r rss anon _ < <(proc_mem "$DAEMON_PID")
printf 'mem\t8\t%s\t%s\n' "$rss" "$anon" >>"$TSV"
log "our daemon's RSS: $(awk '$1 == "mem" {printf "%s LUN(s) %d MiB  ", $2, $3 / 1024}' "$TSV")"
for i in 1 2 3 4 5 6 7; do rmdir_timeout "$(dirname "$R0")/x$i" 20 || true; done

# run_fio JOB BACKEND ROUND OPTS PID: one fio run; PID's CPU is measured
# (empty: fio's own).
run_fio() {
    local job=$1 backend=$2 round=$3 opts=$4 pid=$5
    local json=$OUT/$job.$backend.r$round.json
    local target=(--filename="$DEV" --ioengine=libaio --direct=1)
    [[ $backend == fio ]] && target=(--ioengine=rbd --clientname=admin --pool=rbd --rbdname=bench --thread)
    local t0 t1
    [[ -n $pid ]] && t0=$(proc_cpu_ticks "$pid")
    # shellcheck disable=SC2086
    CEPH_CONF=$CEPH_CONF fio --name="$job" "${target[@]}" $opts --bs=4k --iodepth=32 \
        --size=256m --norandommap --time_based --runtime="$RUNTIME" --ramp_time=2 \
        --output-format=json --output="$json" >/dev/null 2>"$OUT/fio.err" &
    local fpid=$!
    if [[ -z $pid ]]; then
        # fio's own CPU: sample it just before it exits.
        local last=0 now
        while kill -0 "$fpid" 2>/dev/null; do
            now=$(proc_cpu_ticks "$fpid" 2>/dev/null) && last=$now
            sleep 0.5
        done
        t0=0 t1=$last
    fi
    wait "$fpid" || { cat "$OUT/fio.err"; fail "fio $job on $backend failed"; }
    [[ -n $pid ]] && t1=$(proc_cpu_ticks "$pid")
    local iops ios
    read -r iops ios < <(python3 -c '
import json, sys
j = json.load(open(sys.argv[1]))["jobs"][0]
d = j["write"] if j["write"]["total_ios"] else j["read"]
print(round(d["iops"]), d["total_ios"])' "$json")
    printf 'run\t%s\t%s\t%s\t%s\t%s\t%s\n' "$job" "$backend" "$round" "$iops" "$((t1 - t0))" "$ios" >>"$TSV"
    log "$job $backend r$round: $iops IOPS, $((t1 - t0)) CPU ticks (${HZ}/s)"
}

current=ours
for ((round = 1; round <= ROUNDS; round++)); do
    for spec in "${JOBS[@]}"; do
        job=${spec%%|*} opts=${spec#*|}
        # Whichever daemon runs goes first: one switch per job.
        if [[ $current == ours ]]; then order=(ours c fio); else order=(c ours fio); fi
        for b in "${order[@]}"; do
            case $b in
            ours)
                if [[ $current != ours ]]; then
                    c_daemon_stop
                    daemon_start
                    wait_for 60 "our daemon serving r0" daemon_holds_uios "$DAEMON_PID" 1
                    current=ours
                fi
                run_fio "$job" ours "$round" "$opts" "$DAEMON_PID"
                ;;
            c)
                if [[ $current != c ]]; then
                    daemon_stop
                    c_daemon_start
                    wait_for 60 "the C daemon serving r0" daemon_holds_uios "$C_DAEMON_PID" 1
                    current=c
                fi
                run_fio "$job" c "$round" "$opts" "$C_DAEMON_PID"
                ;;
            fio)
                run_fio "$job" fio "$round" "$opts" ""
                ;;
            esac
        done
    done
done
if [[ $current == c ]]; then
    c_daemon_stop
    daemon_start
fi

python3 - "$TSV" "$HZ" >"$OUT/summary.txt" <<'EOF'
import statistics, sys
tsv, hz = sys.argv[1], int(sys.argv[2])
runs, mem = {}, {}
for line in open(tsv):
    f = line.rstrip("\n").split("\t")
    if f[0] == "run":
        runs.setdefault((f[1], f[2]), []).append((int(f[4]), int(f[5]), int(f[6])))
    elif f[0] == "mem":
        mem[f[1]] = int(f[2])
print("| job | backend | IOPS | CPU µs per I/O | IOPS / C | CPU per I/O / C | IOPS / fio-rbd |")
print("|---|---|---:|---:|---:|---:|---:|")
jobs = sorted({j for j, _ in runs})
for job in jobs:
    med = {}
    for b in ("ours", "c", "fio"):
        r = runs.get((job, b), [])
        if not r:
            continue
        iops = statistics.median(x[0] for x in r)
        cpu = statistics.median(x[1] / hz * 1e6 / max(x[2], 1) for x in r)
        med[b] = (iops, cpu)
    for b, (iops, cpu) in med.items():
        c = med.get("c"); f = med.get("fio")
        ratio = lambda a, z: f"{a / z:.2f}×" if z else "-"
        print(f"| {job} | {b} | {iops:,.0f} | {cpu:.0f} | {ratio(iops, c[0]) if c else '-'} | "
              f"{ratio(cpu, c[1]) if c else '-'} | {ratio(iops, f[0]) if f else '-'} |")
print()
print("our daemon's RSS: " + ", ".join(f"{n} rbd LUN(s) {kib / 1024:.0f} MiB" for n, kib in sorted(mem.items())))
print("(CPU per I/O: the daemon's for ours and C, fio's own — librbd inside it — for fio-rbd)")
EOF
cat "$OUT/summary.txt"
undo_all
daemon_stop
log "done"
