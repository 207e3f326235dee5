#!/bin/bash
# t-50-bad-config: bad configurations are refused promptly and explained,
# without disturbing other devices.
#
# With a good user:file LUN exported, try to enable
#   - dev_config=file//no/such/dir/x (a file that cannot be created), and
#   - dev_config=nosuch//x (an unknown handler subtype):
# each `echo 1 > enable` must fail within a few seconds, the daemon log must
# say why (a line naming the path / the subtype), the daemon must stay up and
# the good LUN must keep serving reads and writes.

source "$(dirname "$0")/lib.sh"

load_modules
daemon_start

size=$((64 * 1024 * 1024))
user_file_backstore good "$size" "$WORK/good.img"
loop_export "$BS_PATH"
GOOD_DEV=$DEV
dd_roundtrip "$GOOD_DEV" 1

# try_bad NAME CFGSTRING LOG_PATTERN: refused promptly and explained (see
# refused_backstore); the daemon stays up and the good LUN still works.
try_bad() {
    refused_backstore "$1" "$size" "$2" "$3"
    daemon_alive || fail "the daemon died after refusing $1"
    dd_roundtrip "$GOOD_DEV" 2
}

try_bad bad_path "file//no/such/dir/x" 'no/such/dir'
try_bad bad_subtype "nosuch//x" 'nosuch'

dd_roundtrip "$GOOD_DEV" 3
undo_all
daemon_stop
