#!/bin/bash
# t-15-ram: a user:ram LUN (dev_config=ram/<size>) serves verified I/O, and
# a configuration it cannot honour is refused.
#
# 1. ram/ (the device size): fio random writes with crc32c verify, a dd
#    round trip, UNMAP reads back zeros.
# 2. ram/16M on a 64 MiB device is refused: enable fails promptly and the
#    daemon log says why.

source "$(dirname "$0")/lib.sh"

load_modules
daemon_start

size=$((64 * 1024 * 1024))
user_backstore m0 "$size" "ram/" || fail "enabling the ram backstore failed"
loop_export "$BS_PATH"
dd_roundtrip "$DEV" 2
fio_bg ram "$DEV" $((FIO_RUNTIME < 20 ? FIO_RUNTIME : 20))
fio_wait ram "$FIO_PID"

dd if=/dev/urandom of="$DEV" bs=512 seek=4096 count=64 oflag=direct status=none || fail "dd write failed"
sg_unmap --force --lba=4096 --num=64 "$SG" >/dev/null || fail "sg_unmap on the ram LUN failed"
dd if="$DEV" bs=512 skip=4096 count=64 iflag=direct status=none | cmp -s - <(head -c 32768 /dev/zero) \
    || fail "unmapped blocks of the ram LUN do not read back as zeros"

log_mark
rc=0
user_backstore m1 "$size" "ram/16M" 10 || rc=$?
[[ $rc -ne 124 ]] || fail "enable of a too-small ram device hung"
[[ $rc -ne 0 ]] || fail "a ram device smaller than its LUN was accepted"
wait_log 10 'm1: refused' "the daemon log to say why m1 was refused"
daemon_alive || fail "the daemon died"

undo_all
daemon_stop
