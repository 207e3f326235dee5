#!/bin/bash
# t-43-churn: devices come and go by the thousand while I/O runs on
# another, and the daemon does not leak.
#
# fio randwrite + crc32c verify runs on a user:file LUN while, for
# CHURN_ROUNDS rounds (20), CHURN_LUNS user:ram backstores are created over
# configfs, CHURN_PARALLEL (4) writers at once (dev_size, dev_config,
# serial, enable: the daemon opens each on ADDED_DEVICE), in round 1, every
# CHURN_EXPORT_EVERY-th round (10) and the last CHURN_EXPORT (1) of them
# are exported through tcm_loop (so the kernel's sd probes them: INQUIRY,
# READ CAPACITY, mode pages... then a write and read back), then all are
# unexported and removed (the daemon closes each on REMOVED_DEVICE).
#
# CHURN_LUNS is 16 in the suite: under TCG one round of 64 takes about
# 50 s (creating 64: 18 s, the kernel's configure dominating; exporting 2
# and probing them: 19 s; removing 64: 12 s), 17 minutes for 20 rounds.
# CHURN_LUNS=64 CHURN_EXPORT=2 CHURN_EXPORT_EVERY=1 TEST_TIMEOUT=1800 runs
# the full size (about 11 minutes).
#
# The daemon's open file descriptors, threads and RSS are read after round
# 1 and after the last round: descriptors must be equal, threads (not
# counting tokio's blocking pool, see own_threads) no more than the most
# seen in the first half of the rounds (names and counts go to churn.txt),
# and RSS without the ring mappings (see own_rss_kib) the same way: the
# most seen in the second half may exceed the most seen in the first half
# by CHURN_RSS_SLACK_KIB (2048 KiB) at most. Measured: a round that
# exports a LUN (sd probe, write and read back) adds about 1.1 MiB of
# anonymous memory on a quiet host until the allocator has enough (16
# LUNs: 5.0 MiB after round 1, 6.1 after round 2, 7.1 after round 10, 8.3
# after round 20, flat between exports); with 2 exports in every round
# (64 LUNs) it stays between 8.4 and 10.4 MiB from round 2 to 20, so the
# steps are bounded, not a leak per export. A leak per device would keep
# growing (16 KiB per device: 10 MiB over the second half of 64-LUN
# rounds).
# fio must finish clean.

source "$(dirname "$0")/lib.sh"
source "$REPO_DIR/tests/vm/restart-lib.sh"

ROUNDS=${CHURN_ROUNDS:-20}
LUNS=${CHURN_LUNS:-16}
EXPORT=${CHURN_EXPORT:-1}
EXPORT_EVERY=${CHURN_EXPORT_EVERY:-10}
RSS_SLACK_KIB=${CHURN_RSS_SLACK_KIB:-2048}
# The guest's transparent huge pages are `always`: one touched byte of a
# fresh heap region can count 2 MiB at once, whenever it happens to land
# (once 3 MiB in round 20 after ten flat rounds, with the daemon's memory at
# the end the same as in runs that took the step in round 1). The daemon's
# own RSS is measured in 4 KiB pages, huge pages only where asked for.
THP=/sys/kernel/mm/transparent_hugepage/enabled
if [[ -w $THP ]]; then
    thp_was=$(sed -n 's/.*\[\(.*\)\].*/\1/p' "$THP")
    echo madvise >"$THP" || fail "cannot set $THP to madvise"
    push_cleanup "echo $thp_was >$THP"
fi
CHURN_SIZE=$((8 * 1024 * 1024))
HBA=$CFG/core/user_2

runner_to_ram
load_modules
daemon_start

size=$((96 * 1024 * 1024))
user_file_backstore busy "$size" "$WORK/busy.img"
loop_export "$BS_PATH"
BUSY_DEV=$DEV
loop_target
CHURN_TPG=$LOOP_TPG

# churn_cleanup: remove whatever a failed round left behind.
churn_cleanup() {
    local n d
    for n in "$CHURN_TPG"/lun/lun_*; do [[ -d $n ]] && loop_remove_lun "$CHURN_TPG" "${n##*_}"; done
    for d in "$HBA"/c*; do [[ -d $d ]] && rmdir_timeout "$d" 10; done
    [[ -d $HBA ]] && rmdir "$HBA"
    return 0
}
push_cleanup churn_cleanup

PAR=${CHURN_PARALLEL:-4}

# enable_luns K: configure and enable every PAR-th churn backstore from K
# (shell builtins only; run PAR of these at once).
enable_luns() {
    local i d u
    for ((i = $1; i <= LUNS; i += PAR)); do
        d=$HBA/c$i
        echo "dev_size=$CHURN_SIZE" >"$d/control" || return 1
        echo "dev_config=ram/" >"$d/control" || return 1
        read -r u </proc/sys/kernel/random/uuid
        echo "$u" >"$d/wwn/vpd_unit_serial" || return 1
        echo 1 >"$d/enable" || return 1
    done
}

# create_luns: make c1..cLUNS (one mkdir for all: under TCG every process
# started from the 9p root costs), then enable them, PAR writers at once;
# the daemon opens each on ADDED_DEVICE.
create_luns() {
    local k pids=() p
    mkdir -p "$HBA" && mkdir $(printf "$HBA/c%d " $(seq "$LUNS")) || fail "mkdir of the churn backstores failed"
    for ((k = 1; k <= PAR; k++)); do
        enable_luns "$k" &
        pids+=($!)
    done
    for p in "${pids[@]}"; do
        wait "$p" || fail "configuring or enabling a churn backstore failed"
    done
}

# export_luns: export c1..cEXPORT as LUNs 1..EXPORT and write/read each.
export_luns() {
    local i
    for ((i = 1; i <= EXPORT; i++)); do
        mkdir "$CHURN_TPG/lun/lun_$i" || fail "cannot create lun_$i"
        ln -s "$HBA/c$i" "$CHURN_TPG/lun/lun_$i/c$i" || fail "cannot link c$i"
    done
    local addr
    addr=$(cat "$CHURN_TPG/address")
    for ((i = 1; i <= EXPORT; i++)); do
        local blockdir=/sys/class/scsi_device/$addr:$i/device/block
        wait_for 30 "a disk for c$i" compgen -G "$blockdir/*"
        local dev
        dev=/dev/$(ls "$blockdir" | head -n1)
        wait_for 10 "$dev" test -b "$dev"
        dd_roundtrip "$dev" 2
    done
}

# remove_luns: unexport and remove every churn backstore.
remove_luns() {
    local i
    if ((exported)); then
        for ((i = 1; i <= EXPORT; i++)); do
            loop_remove_lun "$CHURN_TPG" "$i" || fail "cannot unexport c$i"
        done
    fi
    local k pids=() p
    for ((k = 1; k <= PAR; k++)); do
        rmdir $(printf "$HBA/c%d " $(seq "$k" "$PAR" "$LUNS")) &
        pids+=($!)
    done
    for p in "${pids[@]}"; do
        wait "$p" || fail "rmdir of a churn backstore failed"
    done
}

# own_threads: the daemon's threads without tokio's pools
# ("tokio-rt-worker", "tokio-runtime-w" in older tokio: the blocking pool
# grows and shrinks with use, its threads idle out
# after 10 s) and io_uring's kernel workers ("iou-wrk-*", "iou-sqp-*",
# created and ended by the kernel as blocking I/O comes and goes): 8 or 9
# seen without these exclusions.
own_threads() {
    local c n=0
    for c in /proc/"$DAEMON_PID"/task/*/comm; do
        read -r c <"$c" || continue
        [[ $c == tokio-runtime-w || $c == tokio-rt-worker || $c == iou-* ]] || n=$((n + 1))
    done
    echo "$n"
}

# thread_comms: the daemon's thread names with their counts.
thread_comms() {
    cat /proc/"$DAEMON_PID"/task/*/comm 2>/dev/null | sort | uniq -c | awk '{printf "%s×%s ", $2, $1}'
}

# sample: "FDS THREADS RSS_KIB" of the daemon; fds and threads are the
# smallest of three readings 0.3 s apart (the metrics writer and the
# tcmu.conf watcher hold a file open for a moment now and then).
sample() {
    local i f t fmin=999999 tmin=999999
    for i in 1 2 3; do
        f=$(proc_fds "$DAEMON_PID")
        t=$(own_threads)
        ((f < fmin)) && fmin=$f
        ((t < tmin)) && tmin=$t
        nap 0.3
    done
    echo "$fmin $tmin $(own_rss_kib)"
}

# own_rss_kib: the daemon's VmRSS without its /dev/uio mappings: the busy
# LUN's ring data area is kernel memory mapped into the daemon, and fio
# touches more of it over time (measured: RssFile +7.3 MiB over the 20
# rounds while the heap grew 2 MiB), which is not the daemon's to leak.
own_rss_kib() {
    local ring
    ring=$(awk '/^[0-9a-f]+-[0-9a-f]+ / { uio = ($6 ~ /^\/dev\/uio/) } uio && $1 == "Rss:" { s += $2 } END { print s + 0 }' "/proc/$DAEMON_PID/smaps")
    echo $(($(proc_rss_kib "$DAEMON_PID") - ring))
}

# mem_detail: where the daemon's memory is (KiB), and how many mappings of
# a /dev/uio* node it still has (a device's ring mapping outliving the
# device would show there).
mem_detail() {
    local r a f sh
    read -r r a f sh <<<"$(proc_mem "$DAEMON_PID")"
    echo "VmRSS $r RssAnon $a RssFile $f RssShmem $sh; uio mappings $(grep -c ' /dev/uio' "/proc/$DAEMON_PID/maps" || true); maps $(wc -l <"/proc/$DAEMON_PID/maps")"
}

dmesg_mark
log "fio verify on $BUSY_DEV; $ROUNDS rounds of $LUNS ram LUNs ($EXPORT exported in rounds 1, $ROUNDS and every ${EXPORT_EVERY}th)"
fio_loop_bg busy "$BUSY_DEV" 20
FIO=$FIO_PID
REPORT=$WORK/churn.txt
printf 'round\tms\tfds\tthreads\town_rss_kib\n' >"$REPORT"
read -r idle_fds idle_threads idle_rss <<<"$(sample)"
log "before churn: $idle_fds fds, $idle_threads threads, RSS without ring mappings $idle_rss KiB"
for ((r = 1; r <= ROUNDS; r++)); do
    t0=${EPOCHREALTIME/./}
    create_luns
    t1=${EPOCHREALTIME/./}
    served=$(find "/proc/$DAEMON_PID/fd" -lname '/dev/uio*' | wc -l)
    # The busy LUN plus every churn LUN.
    assert_eq "$served" $((LUNS + 1)) "UIO devices the daemon holds in round $r"
    if ((r == 1 || r == ROUNDS || r % EXPORT_EVERY == 0)); then exported=1; else exported=0; fi
    ((exported)) && export_luns
    t2=${EPOCHREALTIME/./}
    remove_luns
    t3=${EPOCHREALTIME/./}
    kill -0 "$FIO" 2>/dev/null || fail "fio failed during round $r (see busy.*.out)"
    read -r fds threads rss <<<"$(sample)"
    ms=$(ms_since "$t0")
    printf '%d\t%d\t%d\t%d\t%d\n' "$r" "$ms" "$fds" "$threads" "$rss" >>"$REPORT"
    log "round $r: $ms ms (create $(((t1 - t0) / 1000)), export $(((t2 - t1) / 1000)), remove $(((t3 - t2) / 1000))); $fds fds, $threads threads, RSS without ring mappings $rss KiB"
    # Threads: a pool that grows once to a bound is not a leak; the bound
    # is the most seen in the first half, which the second half must not
    # pass.
    if ((r <= (ROUNDS + 1) / 2)); then
        ((threads > ${max_threads:-0})) && max_threads=$threads
        ((rss > ${first_half_rss:-0})) && first_half_rss=$rss
    else
        ((rss > ${second_half_rss:-0})) && second_half_rss=$rss
    fi
    if ((r == (ROUNDS + 1) / 2)); then
        mid_comms=$(thread_comms)
    fi
    if ((r == 1)); then
        first_fds=$fds first_threads=$threads first_rss=$rss
        first_detail=$(mem_detail)
        log "after round 1: $first_detail"
    fi
done
daemon_alive || fail "the daemon died"
last_detail=$(mem_detail)
log "after round $ROUNDS: $last_detail"
echo "after round 1: $first_detail" >>"$REPORT"
echo "after round $ROUNDS: $last_detail" >>"$REPORT"
assert_eq "$fds" "$first_fds" "open fds after round $ROUNDS vs round 1"
echo "threads at mid-run: $mid_comms" >>"$REPORT"
echo "threads at the end: $(thread_comms)" >>"$REPORT"
((threads <= max_threads)) ||
    fail "threads grew to $threads after round $ROUNDS (at most $max_threads in the first half: $mid_comms; now $(thread_comms))"
((second_half_rss - first_half_rss <= RSS_SLACK_KIB)) ||
    fail "RSS without ring mappings grew: at most $first_half_rss KiB in the first half of the rounds, $second_half_rss KiB in the second (slack $RSS_SLACK_KIB)"
log "flat: fds $first_fds -> $fds, threads $first_threads -> $threads (bound $max_threads), RSS without ring mappings: round 1 $first_rss KiB, most in the first half $first_half_rss, in the second $second_half_rss KiB"
echo "rss_kib_max_first_half=$first_half_rss rss_kib_max_second_half=$second_half_rss" >>"$REPORT"
echo "round1 fds=$first_fds threads=$first_threads rss_kib=$first_rss; round$ROUNDS fds=$fds threads=$threads rss_kib=$rss" >>"$REPORT"

fio_loop_wait busy "$FIO"
dmesg_check "$WORK/churn.dmesg.txt" "$(disk_name "$BUSY_DEV")"
echo 3 >/proc/sys/vm/drop_caches
cmp "$BUSY_DEV" "$WORK/busy.img" || fail "$BUSY_DEV differs from its backing file"
cat "$REPORT"

undo_all
daemon_stop
