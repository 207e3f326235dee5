#!/bin/bash
# t-18-custom-handler: tcmu-runtime's example `custom_handler` (a handler
# of one's own, user:xor: a RAM disk keeping its data XORed with a key,
# served by the runtime without tcmu-runner) through tcm_loop.
#
# 1. A backstore enabled before the example starts is recovered by it;
#    ext4 (mkfs, files, fsck, checksums after a remount), then fio random
#    writes with crc32c verify.
# 2. A backstore enabled while it runs is served (dd round trip); a bad
#    key is refused promptly, with the handler's message in the log; a
#    `file//` backstore is refused (it is the only TCMU daemon).
# 3. Removals are answered, and SIGTERM stops it with status 0.

source "$(dirname "$0")/lib.sh"

load_modules
size=$((64 * 1024 * 1024))

# 1. Made with nothing serving TCMU: enable returns at once.
user_backstore x0 "$size" "xor/5a3c" 10 || fail "enabling x0 with no daemon running failed"
X0=$BS_PATH
example_start custom_handler 'serving 1 device'
log_since | grep 'serving with a 2-byte key' | grep -q 'device=x0' || fail "custom_handler did not log opening x0"
assert_eq "$(cat "$X0/action/block_dev" 2>/dev/null || echo unknown)" unblocked "block state of x0 after recovery"
loop_export "$X0"
X0_DEV=$DEV
ext4_roundtrip "$X0_DEV" 3 4
fio_bg xor "$X0_DEV" $((FIO_RUNTIME < 15 ? FIO_RUNTIME : 15))
fio_wait xor "$FIO_PID"

# 2. Added while it runs; refusals.
user_backstore x1 "$size" "xor/00ff00ff" || fail "enabling x1 while custom_handler runs failed"
loop_export "$BS_PATH"
dd_roundtrip "$DEV" 3
log_since | grep -q '/x1/xor/00ff00ff: Added done' || fail "custom_handler did not log adding x1"
refused_backstore x2 "$size" "xor/5z" "xor: '5z' is not a key of 1 to 64 hex bytes"
refused_backstore f0 "$size" "file/$WORK/f0.img" "no handler here for it"
daemon_alive || fail "custom_handler died after refusing x2 and f0"
dd_roundtrip "$X0_DEV" 5

# 3. Everything removed while it answers, then a clean stop.
log_mark
undo_all
log_since | grep -q '/x1/xor/00ff00ff: Removed done' || fail "custom_handler did not log removing x1"
daemon_stop
log_since | grep -q 'stopped' || fail "custom_handler did not log its stop"
