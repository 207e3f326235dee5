# Helpers of the Debian VM's scripts (sourced; bash). Every check fails the
# script with a message that says what was expected and what was seen.
#
# A script sets REPORT (a file under $XT_OUT) and WORK (a folder on the
# VM's disk) before sourcing this.

# Seconds of guest uptime, to the hundredth.
uptime_s() { cut -d' ' -f1 /proc/uptime; }
# elapsed T0: seconds since T0 (an uptime_s), one decimal.
elapsed() { awk -v a="$1" -v b="$(uptime_s)" 'BEGIN { printf "%.1f", b - a }'; }

say() { echo "debvm: $*"; echo "$*" >> "$REPORT"; }
fail() {
    echo "debvm: FAIL: $*"
    echo "FAIL: $*" >> "$REPORT"
    systemctl --no-pager status tcmu-runner 2>&1 | tail -n 30
    dmesg | tail -n 20
    exit 1
}
# must CMD...: runs CMD, failing the test with its output when it fails;
# prints the output otherwise.
must() {
    local out
    out=$("$@" 2>&1) || fail "\`$*\` failed: $out"
    printf '%s\n' "$out"
}
# wait_for SECS WHAT CMD...: polls CMD every 0.2 s until it succeeds;
# fails the test with WHAT after SECS seconds.
wait_for() {
    local secs=$1 what=$2 deadline
    shift 2
    deadline=$(awk -v u="$(uptime_s)" -v s="$secs" 'BEGIN { printf "%d", u + s }')
    until "$@"; do
        [ "$(cut -d. -f1 /proc/uptime)" -lt "$deadline" ] || fail "$what (waited $secs s)"
        sleep 0.2
    done
}

# bounded SECS CMD...: runs CMD (a write to configfs, say) and returns its
# status, or 124 when it is not done after SECS seconds. Unlike timeout(1)
# it does not wait for a CMD stuck in the kernel (which no signal stops):
# that one is left behind and the test fails on.
bounded() {
    local secs=$1 pid i
    shift
    "$@" &
    pid=$!
    for i in $(seq $((secs * 10))); do
        kill -0 "$pid" 2> /dev/null || { wait "$pid"; return; }
        sleep 0.1
    done
    return 124
}

# --- The service -------------------------------------------------------

# prop NAME: one property of tcmu-runner.service (systemctl show).
prop() { systemctl show -p "$1" --value tcmu-runner; }
main_pid() { prop MainPID; }
is_active() { [ "$(systemctl is-active tcmu-runner)" = active ]; }
# pid_changed_from OLD: the service is active with a main process other
# than OLD.
pid_changed_from() { is_active && [ "$(main_pid)" -gt 0 ] && [ "$(main_pid)" != "$1" ]; }
# assert_ours PID: PID runs our /usr/bin/tcmu-runner.
assert_ours() {
    local exe
    exe=$(readlink "/proc/$1/exe") || fail "MainPID $1 does not exist"
    [ "$exe" = /usr/bin/tcmu-runner ] || fail "MainPID $1 runs $exe, not /usr/bin/tcmu-runner"
    case "$(/usr/bin/tcmu-runner -V 2>&1)" in
        *tcmu-rs*) ;;
        *) fail "/usr/bin/tcmu-runner -V says $(/usr/bin/tcmu-runner -V 2>&1), not tcmu-rs" ;;
    esac
}

# --- LUNs ----------------------------------------------------------------

CFS=/sys/kernel/config/target

# loop_lun NAA BACKSTORE: exports BACKSTORE (a targetcli path) as LUN 0 of
# a new tcm_loop target NAA (what an administrator does with targetcli).
loop_lun() {
    must targetcli /loopback create "$1" > /dev/null
    must targetcli "/loopback/$1/luns" create "$2" > /dev/null
}
# lun_block NAA: the block device of LUN 0 of loopback target NAA, or
# nothing yet.
lun_block() {
    local addr d
    addr=$(cat "$CFS/loopback/$1/tpgt_1/address" 2>/dev/null) || return 1
    for d in /sys/class/scsi_device/"$addr":0/device/block/*; do
        [ -e "$d" ] || return 1
        [ -b "/dev/${d##*/}" ] || return 1
        echo "/dev/${d##*/}"
        return 0
    done
    return 1
}
# lun_dev NAA: waits for LUN 0 of NAA to be a block device; prints it.
lun_dev() {
    local dev
    wait_for 30 "LUN 0 of loopback target $1 did not become a block device" lun_block "$1" > /dev/null
    dev=$(lun_block "$1")
    echo "$dev"
}
# uio_of NAME: the /dev/uioN of the user backstore named NAME.
uio_of() {
    local n
    for n in /sys/class/uio/uio*/name; do
        case "$(cat "$n")" in
            tcm-user/*/"$1"/*)
                n=${n%/name}
                echo "/dev/${n##*/}"
                return 0
                ;;
        esac
    done
    return 1
}
# serves PID NAME: PID has the UIO device of backstore NAME open, i.e. it
# serves it.
serves() {
    local uio
    uio=$(uio_of "$2") || return 1
    ls -l "/proc/$1/fd" 2>/dev/null | grep -q " -> $uio\$"
}
assert_serves() {
    uio_of "$2" > /dev/null || fail "no UIO device for backstore $2"
    serves "$@" || fail "tcmu-runner (pid $1) does not have $(uio_of "$2") ($2) open"
}

# write_pattern DEV FILE OFFSET_MIB: writes FILE (whole MiBs) to DEV at
# OFFSET_MIB, direct, in 64 KiB writes (sequential: fine for a zone).
write_pattern() {
    must dd if="$2" of="$1" bs=64k seek=$(($3 * 16)) oflag=direct conv=notrunc,fsync status=none > /dev/null
}
# pattern_reads DEV FILE OFFSET_MIB: DEV holds FILE at OFFSET_MIB (read
# direct, past every cache).
pattern_reads() {
    local n
    n=$(($(stat -c %s "$2") / 65536))
    dd if="$1" bs=64k skip=$(($3 * 16)) count="$n" iflag=direct status=none | cmp -s - "$2"
}
assert_pattern() {
    pattern_reads "$@" || fail "$1 does not hold $2 at $3 MiB ($4)"
}

# --- fio -----------------------------------------------------------------

# fio_loop_start NAME DEV: verified 4k random writes on DEV (libaio,
# direct, iodepth 16, crc32c of every block checked as it is read back),
# in 10 s runs one after the other until fio_loop_check NAME. Sets FIO_PID.
fio_loop_start() {
    local name=$1 dev=$2
    rm -f "$WORK/$name".*
    (
        n=0
        while [ ! -e "$WORK/$name.stop" ]; do
            n=$((n + 1))
            fio --name="$name" --filename="$dev" --ioengine=libaio --direct=1 \
                --rw=randwrite --bs=4k --iodepth=16 --size=64m \
                --verify=crc32c --do_verify=1 --verify_backlog=128 --verify_fatal=1 \
                --verify_state_save=0 --time_based --runtime=10 --eta=never \
                --output-format=json --output="$WORK/$name.$n.json" \
                > "$WORK/$name.$n.out" 2>&1
            rc=$?
            echo "$rc" > "$WORK/$name.$n.rc"
            [ "$rc" -eq 0 ] || exit "$rc"
        done
    ) &
    FIO_PID=$!
}
# fio_alive: the fio loop started last has not failed.
fio_alive() { kill -0 "$FIO_PID" 2>/dev/null; }
# fio_errors JSON: fio's error count over all jobs.
fio_errors() {
    grep -Eo '"(total_err|error)" *: *[0-9]+' "$1" | awk -F: '{ s += $2 } END { printf "%.0f\n", s }'
}
# fio_clat_max_ms JSON: the longest completion latency of the run (ms).
fio_clat_max_ms() {
    python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))
m = max(j[d]["clat_ns"]["max"] for j in r["jobs"] for d in ("read", "write"))
print(int(m / 1e6))' "$1"
}
# fio_loop_check NAME: stops the loop after its current run; every run
# exited 0 with no error and verified data. Sets FIO_RUNS, FIO_MAX_MS.
fio_loop_check() {
    local name=$1 rc=0 f n=0 ms verified
    touch "$WORK/$name.stop"
    wait "$FIO_PID" || rc=$?
    FIO_MAX_MS=0
    for f in "$WORK/$name".*.rc; do
        [ -e "$f" ] || continue
        n=$((n + 1))
        f=${f%.rc}
        [ "$(cat "$f.rc")" = 0 ] || { tail -n 20 "$f.out"; fail "fio '$name' run $n exited with status $(cat "$f.rc")"; }
        [ "$(fio_errors "$f.json")" = 0 ] || fail "fio '$name' run $n reported $(fio_errors "$f.json") errors"
        verified=$(grep -A3 '"read" *:' "$f.json" | grep -Eo '"io_bytes" *: *[0-9]+' | awk -F: '{ s += $2 } END { printf "%.0f\n", s }')
        [ "$verified" -gt 0 ] || fail "fio '$name' run $n verified no data"
        ms=$(fio_clat_max_ms "$f.json")
        [ "$ms" -gt "$FIO_MAX_MS" ] && FIO_MAX_MS=$ms
    done
    [ "$rc" -eq 0 ] || fail "fio loop '$name' exited with status $rc"
    [ "$n" -gt 0 ] || fail "fio loop '$name' ran no fio"
    FIO_RUNS=$n
}

# --- The kernel's log ----------------------------------------------------

# dmesg_mark, then dmesg_clean WHAT: the kernel logged no hung task and
# no I/O error since the mark.
dmesg_mark() { DMESG_MARK=$(dmesg | wc -l); }
dmesg_clean() {
    local new
    new=$(dmesg | tail -n +$((DMESG_MARK + 1)))
    if echo "$new" | grep -E -q 'blocked for more than|I/O error|hung_task'; then
        echo "$new" | grep -E 'blocked for more than|I/O error|hung_task' | head -n 10
        fail "$1: the kernel logged a hung task or an I/O error"
    fi
}
