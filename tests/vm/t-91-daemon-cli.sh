#!/bin/bash
# t-91-daemon-cli: the command line, tcmu.conf and its live reload, logging.
#
# - `-V` prints the workspace version, then the tcmu-runner release served
#   as the last word (what gluster-block reads), and exits 0; `-h` exits 0 and names
#   --tcmu-log-dir.
# - The daemon runs with `--config $WORK/tcmu.conf -l $LOGDIR` and logs to
#   $LOGDIR/tcmu-runner.log while serving a user:file LUN under I/O.
# - Editing tcmu.conf like an editor does (write a new file, `mv` it over
#   the old one): log_level 3 -> 5 makes per-CDB lines appear within 1 s,
#   5 -> 3 stops them; log_dir moves the log to a new directory (and back
#   when the key is removed); a malformed line and an unknown key are
#   logged with their line numbers and ignored while the LUN keeps serving.
# - logrotate's way: `mv tcmu-runner.log tcmu-runner.log.1; kill -HUP`
#   makes a new tcmu-runner.log that gets the new lines.
# - With JOURNAL_STREAM naming its stderr (as under systemd), stderr lines
#   carry <N> syslog priorities and no timestamps, and never the CDB lines.

source "$(dirname "$0")/lib.sh"

CONF=$WORK/tcmu.conf
LOG=$LOGDIR/tcmu-runner.log
# Under $LOGDIR so save_logs copies it too.
MOVED=$LOGDIR/moved
MOVED_LOG=$MOVED/tcmu-runner.log

# write_conf LINE...: replace tcmu.conf atomically, as editors do.
write_conf() {
    printf '%s\n' "$@" >"$WORK/.tcmu.conf.swp"
    mv -f "$WORK/.tcmu.conf.swp" "$CONF"
}

# cdb_lines FILE: number of per-CDB (log level 5) lines in FILE.
cdb_lines() {
    [[ -f $1 ]] || { echo 0; return; }
    grep -Ec 'CDB [0-9a-f]{2}( [0-9a-f]{2})+' "$1" || true
}

# now_ms: wall clock in milliseconds (bash's own clock: starting `date`
# takes a while under TCG).
now_ms() {
    local us=${EPOCHREALTIME/[.,]/}
    echo $((us / 1000))
}

# cdb_lines_above FILE N: FILE has more than N CDB lines (counted at each
# call, so wait_for can poll it).
cdb_lines_above() { (($(cdb_lines "$1") > $2)); }

# wait_cdb_growth FILE BEFORE SECS: wait until FILE has more CDB lines than
# BEFORE; fails after SECS.
wait_cdb_growth() {
    wait_for "$3" "new CDB lines in $1" cdb_lines_above "$1" "$2"
}

# first_cdb_ms FILE AFTER: the daemon's timestamp (ms since the epoch) of the
# CDB line after the first AFTER ones in FILE.
first_cdb_ms() {
    local ts
    ts=$(grep -E 'CDB [0-9a-f]{2}( [0-9a-f]{2})+' "$1" | sed -n "$(($2 + 1))p" | cut -d' ' -f1)
    echo $(($(date -d "$ts" +%s%N) / 1000000))
}

# reads_done DEV: completed reads of DEV (from /sys/block/X/stat).
reads_done() { awk '{print $1}' "/sys/block/$(basename "$1")/stat"; }

# --- -V and -h, no daemon needed ---------------------------------------------
ws_version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' "$XT_WORKDIR/Cargo.toml")
[[ -n $ws_version ]] || fail "cannot read the workspace version from $XT_WORKDIR/Cargo.toml"
rc=0
out=$("$TCMU_RUNNER" -V) || rc=$?
assert_eq "$rc" 0 "exit status of -V"
assert_eq "$out" "tcmu-runner $ws_version (tcmu-rs), compatible with tcmu-runner 1.5.4" "output of -V"
# gluster-block reads the version as the last word of the whole output.
assert_eq "$("$TCMU_RUNNER" --version 2>&1 | awk -F' ' '{printf $NF}')" 1.5.4 "the version gluster-block reads"
rc=0
"$TCMU_RUNNER" -h >"$WORK/help.txt" || rc=$?
assert_eq "$rc" 0 "exit status of -h"
assert_grep '--tcmu-log-dir' "$WORK/help.txt" "-h names --tcmu-log-dir"
rc=0
"$TCMU_RUNNER" --nofile 10 >/dev/null 2>&1 || rc=$?
assert_ne "$rc" 0 "exit status of --nofile 10 (tcmu-runner refuses < 65536)"
log "-V prints '$out', -h exits 0"

# --- start with a Debian-like tcmu.conf --------------------------------------
write_conf "# Master TCMU configuration file" "# log_level = 3" '# log_dir = "/var/log"' \
    "log_level = 3   # INFO"
load_modules
# Pretend stderr is the journal's stream, as systemd says with
# JOURNAL_STREAM=<dev>:<ino>: daemon_start sends stderr to stdout.log.
: >"$LOGDIR/stdout.log"
JOURNAL_STREAM=$(stat -c '%d:%i' "$LOGDIR/stdout.log")
export JOURNAL_STREAM
daemon_start --config "$CONF"
unset JOURNAL_STREAM
[[ -s $LOG ]] || fail "no log in the -l directory ($LOG)"
assert_grep "configuration $CONF: log level 3" "$LOG" "the daemon read $CONF"

user_file_backstore d0 $((64 << 20)) "$WORK/d0.img"
loop_export "$BS_PATH"
dd_roundtrip "$DEV" 1

# Background reads for the whole test: fio at a steady 200 reads/s (a
# stream of commands to log, without saturating the guest's vCPUs).
fio --name=bg --filename="$DEV" --ioengine=libaio --direct=1 --rw=randread --bs=4k \
    --iodepth=1 --rate_iops=200 --time_based --runtime=3600 --eta=never \
    >"$WORK/bg-fio.out" 2>&1 &
IO_PID=$!
push_cleanup "kill $IO_PID 2>/dev/null || true"
# reads_since N: more than N reads completed on $DEV.
reads_since() { (($(reads_done "$DEV") > $1)); }
r0=$(reads_done "$DEV")
wait_for 30 "the background fio to start reading" reads_since "$r0"
r0=$(reads_done "$DEV")
wait_for 5 "the background fio to keep reading" reads_since "$((r0 + 20))"
assert_eq "$(cdb_lines "$LOG")" 0 "CDB lines at log level 3"

# --- log_level 3 -> 5 -> 3 ----------------------------------------------------
# The delay is measured with the daemon's own timestamps (the first CDB line
# against the moment of the `mv`): the shell's polling is slow under TCG.
before=$(cdb_lines "$LOG")
printf '%s\n' "log_level = 5" >"$WORK/.tcmu.conf.swp"
mv_start=$(now_ms)
mv -f "$WORK/.tcmu.conf.swp" "$CONF"
edit_ms=$(now_ms)
wait_cdb_growth "$LOG" "$before" 10
took=$(($(first_cdb_ms "$LOG" "$before") - edit_ms))
log "log_level 5: first CDB line ${took}ms after mv returned (mv itself took $((edit_ms - mv_start))ms)"
((took <= 1000)) || fail "the first CDB line came ${took}ms after the edit"
assert_grep 'log level now is DEBUG SCSI CMD' "$LOG" "the level change is logged"
sleep 1
n=$(cdb_lines "$LOG")
((n > before + 50)) || fail "only $((n - before)) CDB lines in 1s of I/O at level 5"

write_conf "log_level = 3"
wait_for 2 "the switch back to INFO" grep -q 'log level now is INFO' "$LOG"
sleep 0.3 # commands logged just before the switch
c1=$(cdb_lines "$LOG")
r1=$(reads_done "$DEV")
sleep 2
c2=$(cdb_lines "$LOG")
reads_since "$r1" || fail "the background reads stopped"
assert_eq "$c2" "$c1" "CDB lines written in 2s of I/O after going back to level 3"
log "log_level 3 again: no CDB lines in 2s of I/O ($c1 in all)"

# --- a malformed line and an unknown key are logged and ignored ---------------
write_conf "log_level = 3" "this is = not a line" "no_such_key = 1" "log_level = 4 oops"
wait_for 2 "the malformed line to be reported" grep -q "$CONF: line 2: expected" "$LOG"
assert_grep "$CONF: line 3: unknown key .no_such_key." "$LOG" "the unknown key is reported"
assert_grep "bad value for log_level" "$LOG" "the bad level is reported"
daemon_alive || fail "the daemon died on a malformed tcmu.conf"
dd_roundtrip "$DEV" 2
log "malformed line, unknown key, bad value: reported, daemon still serving"

# --- log_dir moves the log ------------------------------------------------------
write_conf "log_level = 5" "log_dir = \"$MOVED\" # moved"
wait_for 2 "$MOVED_LOG" test -s "$MOVED_LOG"
assert_grep "log file moves to '$MOVED_LOG'" "$LOG" "the move is announced in the old log"
assert_grep "log file path now is '$MOVED_LOG'" "$MOVED_LOG" "the new log starts with its path"
wait_cdb_growth "$MOVED_LOG" 0 2
sleep 0.3
old=$(cdb_lines "$LOG")
sleep 1
assert_eq "$(cdb_lines "$LOG")" "$old" "CDB lines still going to the old log after the move"
log "log_dir: logging moved to $MOVED_LOG"

# Removing the key goes back to the -l directory.
write_conf "log_level = 3"
wait_for 2 "logging back in $LOGDIR" grep -q "log file path now is '$LOG'" "$LOG"
log "log_dir removed: back to $LOG"

# --- SIGHUP after logrotate's rename ----------------------------------------------
mv "$LOG" "$LOG.1"
kill -HUP "$DAEMON_PID"
wait_for 2 "a new $LOG after SIGHUP" grep -q 'SIGHUP: log file reopened' "$LOG"
write_conf "log_level = 3" "still not valid"
wait_for 2 "new lines in the reopened log" grep -q "$CONF: line 2: expected" "$LOG"
if grep -q "$CONF: line 2: expected .*still not valid" "$LOG.1"; then
    fail "a line written after SIGHUP went to the rotated file"
fi
log "SIGHUP: new $LOG receives the new lines"

# What "the journal" got: <N> priorities, no timestamps, no CDB lines.
J=$LOGDIR/stdout.log
assert_grep '^<6> *INFO .*tcmu-runner ready' "$J" "an INFO line with priority <6> on the journal stream"
assert_grep '^<2> *ERROR .*log level now is' "$J" "a critical line with priority <2> on the journal stream"
assert_grep '^<4> *WARN .*unknown key' "$J" "a warning with priority <4> on the journal stream"
if grep -Eq '^<[0-7]> *[0-9]{4}-' "$J"; then fail "timestamps on the journal stream"; fi
assert_eq "$(cdb_lines "$J")" 0 "CDB lines on the journal stream"
log "journal stream: <N> priorities, no timestamps, no CDB lines"

kill "$IO_PID" 2>/dev/null || true
wait "$IO_PID" 2>/dev/null || true
grep -q 'err= *0' "$WORK/bg-fio.out" || { cat "$WORK/bg-fio.out"; fail "the background fio reported errors"; }
dd_roundtrip "$DEV" 3
undo_all
daemon_stop
