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
# Output in $XT_OUT/bench-rbd/: fio JSON reports, bench.tsv (the run lines
# of bench-lib.sh, and our RSS: mem DEVICES VMRSS_KIB RSSANON_KIB) and
# summary.txt (medians, ratios to the C handler and to fio-rbd).
#
# Environment: BENCH_RUNTIME (seconds per fio run, default 10),
# BENCH_ROUNDS (default 2), C_TCMU_BIN, C_TCMU_LIBDIR, C_TCMU_HANDLERS (see
# lib.sh), TCMU_RUNNER.

TEST_NAME=bench-rbd
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/bench-lib.sh"

MIB=$((1024 * 1024))
JOBS=("randwrite-4k-qd32|--rw=randwrite" "randread-4k-qd32|--rw=randread")

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

use_daemon ours
user_backstore r0 $((256 * MIB)) "$RBD_CFG" || fail "enabling user:rbd r0 failed"
loop_export "$BS_PATH"
R0=$BS_PATH
SERVED=1
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

# run_fio JOB BACKEND ROUND OPTS PID: one run on our LUN or the C daemon's
# (PID's CPU), or with fio's rbd engine (PID empty: fio's own CPU).
run_fio() {
    local job=$1 backend=$2 round=$3 opts=$4 pid=$5
    local target=(--filename="$DEV" --ioengine=libaio --direct=1)
    [[ $backend == fio ]] && target=(--ioengine=rbd --clientname=admin --pool=rbd --rbdname=bench --thread)
    # shellcheck disable=SC2086
    CEPH_CONF=$CEPH_CONF bench_fio "$job" "$backend" "$round" "$pid" "${target[@]}" $opts \
        --bs=4k --iodepth=32 --size=256m --norandommap
}

for ((round = 1; round <= ROUNDS; round++)); do
    for spec in "${JOBS[@]}"; do
        job=${spec%%|*} opts=${spec#*|}
        # Whichever daemon runs goes first: one switch per job.
        if [[ $SERVING == ours ]]; then order=(ours c fio); else order=(c ours fio); fi
        for b in "${order[@]}"; do
            if [[ $b == fio ]]; then
                run_fio "$job" fio "$round" "$opts" ""
            else
                use_daemon "$b"
                run_fio "$job" "$b" "$round" "$opts" "$SERVING_PID"
            fi
        done
    done
done
use_daemon ours

bench_summary c fio
echo "our daemon's RSS: $(awk '$1 == "mem" {printf "%s rbd LUN(s) %d MiB  ", $2, $3 / 1024}' "$TSV")" |
    tee -a "$OUT/summary.txt"
undo_all
daemon_stop
log "done"
