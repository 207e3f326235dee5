#!/bin/bash
# t-16-consumer: tcmu-core's example `consumer` (a single-threaded, poll(2)
# driven program using tcmu-core and tcmu-scsi only, no async runtime, no
# tcmu-runner) serves `consumer/` backstores from RAM through tcm_loop.
#
# 1. A backstore enabled before the example starts is recovered by it;
#    mkfs.ext4, mount, files written and read back after a remount,
#    fsck clean; then fio random writes with crc32c verify.
# 2. A backstore enabled while it runs is served (dd round trip).
# 3. A `file//` backstore is refused promptly, and its log says why.
# 4. The LUNs and backstores go (REMOVED answered), then SIGTERM: it exits 0.

source "$(dirname "$0")/lib.sh"

load_modules
size=$((64 * 1024 * 1024))

# 1. Made with nothing serving TCMU: enable returns at once.
user_backstore c0 "$size" "consumer/" 10 || fail "enabling c0 with no daemon running failed"
C0=$BS_PATH
example_start consumer 'consumer ready: serving 1 device'
log_since | grep -q 'user_1/c0: recovered' || fail "the consumer did not log recovering c0"
assert_eq "$(cat "$C0/action/block_dev" 2>/dev/null || echo unknown)" unblocked "block state of c0 after recovery"

loop_export "$C0"
C0_DEV=$DEV
ext4_roundtrip "$C0_DEV" 3 4

fio_bg consumer "$C0_DEV" $((FIO_RUNTIME < 15 ? FIO_RUNTIME : 15))
fio_wait consumer "$FIO_PID"

# 2. Added while it runs.
user_backstore c1 "$size" "consumer/" || fail "enabling c1 while the consumer runs failed"
loop_export "$BS_PATH"
dd_roundtrip "$DEV" 3
log_since | grep -q 'user_1/c1: added' || fail "the consumer did not log adding c1"

# 3. Another subtype is refused, promptly and with a reason.
refused_backstore f0 "$size" "file/$WORK/f0.img" "subtype 'file' is not served here"
daemon_alive || fail "the consumer died after refusing f0"
dd_roundtrip "$C0_DEV" 5

# 4. Everything removed while it answers, then a clean stop.
log_mark
undo_all
log_since | grep -q 'user_1/c1: removed' || fail "the consumer did not log removing c1"
daemon_stop
log_since | grep -q 'consumer stopped: 0 device(s) closed' || fail "the consumer did not log its stop"
