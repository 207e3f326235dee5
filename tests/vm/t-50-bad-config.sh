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

# try_bad NAME CFGSTRING LOG_PATTERN: enable must fail in < 5 s; the log
# must have a new line matching LOG_PATTERN; the good LUN still works.
try_bad() {
    local name=$1 cfg=$2 pattern=$3
    log "enabling $name with dev_config=$cfg (must fail)"
    log_mark
    local start=$SECONDS rc=0
    user_backstore "$name" "$size" "$cfg" 10 || rc=$?
    local took=$((SECONDS - start))
    [[ $rc -ne 124 ]] || fail "enable of $name ($cfg) hung instead of failing"
    [[ $rc -ne 0 ]] || fail "enable of $name ($cfg) succeeded; it must be refused"
    ((took <= 5)) || fail "enable of $name ($cfg) took ${took}s to fail"
    sleep 0.5 # let the daemon's log line land
    if ! log_since | grep -Eq -- "$pattern"; then
        echo "--- daemon log since the attempt:"
        log_since | tail -n 20
        fail "the daemon log does not explain why $name was refused (no line matching /$pattern/)"
    fi
    log "$name refused after ${took}s; daemon log: $(log_since | grep -E -- "$pattern" | head -n1)"
    rmdir_timeout "$BS_PATH" 10 || fail "removing the refused backstore $name failed"
    daemon_alive || fail "the daemon died after refusing $name"
    dd_roundtrip "$GOOD_DEV" 2
}

try_bad bad_path "file//no/such/dir/x" 'no/such/dir'
try_bad bad_subtype "nosuch//x" 'nosuch'

dd_roundtrip "$GOOD_DEV" 3
undo_all
daemon_stop
