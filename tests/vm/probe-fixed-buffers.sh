#!/bin/bash
# probe-fixed-buffers.sh — can a TCMU device's data area be registered with
# io_uring as a fixed buffer (IORING_REGISTER_BUFFERS, issue 6)? Not part of
# the suite: evidence from the real kernel. Runs tcmu-core's example
# fixed_buffers_probe (see its header) against a user:file device's /dev/uioN
#   A. right after enable, no daemon ever attached (no data page allocated);
#   B. while our daemon holds the device (the UIO is exclusive: EBUSY);
#   C. after our daemon served I/O and was stopped (data pages allocated).
# Build first, then run:
#   cargo build --release -p tcmu-core --example fixed_buffers_probe
#   cargo xtask vm-run tests/vm/probe-fixed-buffers.sh
# Output: the console and $XT_OUT/logs/probe-fixed-buffers/.
source "$(dirname "$0")/lib.sh"

PROBE=${PROBE:-$REPO_DIR/target/release/examples/fixed_buffers_probe}
[[ -x $PROBE ]] || PROBE=$REPO_DIR/target/debug/examples/fixed_buffers_probe
[[ -x $PROBE ]] || fail "no fixed_buffers_probe: cargo build --release -p tcmu-core --example fixed_buffers_probe"
OUT=$XT_OUT/logs/$TEST_NAME
mkdir -p "$OUT"

# probe PHASE: run the probe on $UIO, output to the console and $OUT/PHASE.txt.
# Returns the probe's exit status.
probe() {
    local rc=0
    "$PROBE" "$UIO" >"$WORK/$1.txt" 2>&1 || rc=$?
    echo "exit=$rc" >>"$WORK/$1.txt"
    cp "$WORK/$1.txt" "$OUT/"
    echo "----- phase $1"
    cat "$WORK/$1.txt"
    return $rc
}

# check PHASE: no TCMU range accepted; private anonymous memory accepted.
check() {
    local f=$WORK/$1.txt
    if grep -E '^case=(data-area|mailbox)' "$f" | grep -q 'result=ok'; then
        echo "!!!!! UNEXPECTED: the kernel accepted TCMU ring memory as a fixed buffer (phase $1)"
        fail "TCMU ring memory registered as a fixed buffer in phase $1; see $OUT/$1.txt"
    fi
    grep -q '^case=anon-private-page .*result=ok' "$f" ||
        fail "phase $1: even anonymous memory was refused (is io_uring usable here?)"
}

load_modules
echo "kernel: $(uname -r) $(uname -v)"
user_file_backstore fb0 $((64 << 20)) "$WORK/fb0.img"
UIO=
for n in /sys/class/uio/uio*/name; do
    [[ $(cat "$n") == tcm-user/1/fb0/* ]] && UIO=/dev/$(basename "$(dirname "$n")")
done
[[ -n $UIO ]] || fail "no UIO device for fb0"
log "fb0 is $UIO, map0 size $(cat "/sys/class/uio/${UIO#/dev/}/maps/map0/size")"

dmesg -C
probe A-fresh || fail "the probe failed in phase A"
check A-fresh

daemon_start
rc=0
probe B-daemon-running || rc=$?
[[ $rc -eq 3 ]] || fail "phase B: expected the probe's open to fail with EBUSY (exit 3), got $rc"
loop_export "$BS_PATH"
dd if=/dev/urandom of="$WORK/pattern" bs=1M count=8 status=none
dd if="$WORK/pattern" of="$DEV" bs=1M oflag=direct status=none
dd if="$DEV" of="$WORK/readback" bs=1M count=8 iflag=direct status=none
cmp "$WORK/pattern" "$WORK/readback" || fail "data read back differs"
daemon_stop
probe C-after-io || fail "the probe failed in phase C"
check C-after-io

echo "----- kernel log (dmesg)"
dmesg | tee "$OUT/dmesg.txt" | grep -v -i 'scsi\|sd \|sd[a-z]' | tail -n 20 || true

# Clean up with a daemon attached (removing the device notifies it).
daemon_start
undo_all
daemon_stop
log "done"
