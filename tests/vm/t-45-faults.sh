#!/bin/bash
# t-45-faults: faults injected into a user:ram LUN reach the initiator as
# the exact SCSI answers, while another LUN of the same daemon keeps
# serving verified I/O.
#
# Two ram LUNs behind one tcm_loop target; LUN 1 runs fio with crc32c
# verify throughout (must finish clean). LUN 0 gets data, then faults by
# writing attrib/dev_config (netlink RECONFIG_DEVICE), and sg_raw sends it
# READ(10)/WRITE(10)/SYNCHRONIZE CACHE(10). The answers are read from
# sg_raw -v: status, raw sense bytes (key, ASC/ASCQ, VALID and
# INFORMATION) and the number of data-in bytes after the residual.
#
# 1. fail_read / fail_write: MEDIUM ERROR 03/11/00 resp. 03/0C/00, VALID,
#    INFORMATION = the first failing LBA of the command.
# 2. short_read: GOOD, fewer bytes (the blocks before the range, with the
#    data written before); a READ starting inside the range has no block
#    to return: MEDIUM ERROR at its first LBA (TCMU cannot answer GOOD
#    with no data: the kernel ignores read_len 0).
# 3. panic_read / panic_write: HARDWARE ERROR 04/44/00 (INTERNAL TARGET
#    FAILURE) without INFORMATION; the next READ is served.
# 4. not_ready: NOT READY 02/04/00 for TEST UNIT READY, READ, WRITE,
#    SYNCHRONIZE CACHE; INQUIRY still answers.
# 5. delay_ms: a READ takes at least that long around sg_raw, and the
#    daemon's latency histogram (the metrics file) has it in its 1-10 s
#    bucket (sg_raw's own run time under TCG varies by seconds).
#    A malformed fault in a new dev_config is refused, named in the log.
# 6. No faults any more: the blocks read back what was written before the
#    faults (the failed and panicked writes wrote nothing).
# A hung command is not tested here: the sd driver's error handling would
# take over (the TMR abort work covers it).

source "$(dirname "$0")/lib.sh"

load_modules
# The metrics file, rewritten every second, gives the daemon's own
# per-command latency (sg_raw's run time under TCG varies by seconds).
METRICS=$WORK/metrics.prom
printf 'metrics_file = %s\nmetrics_interval = 1\n' "$METRICS" >"$WORK/tcmu.conf"
daemon_start

size0=$((16 << 20))
size1=$((64 << 20))
user_backstore f0 "$size0" "ram/" || fail "enabling ram backstore f0 failed"
BS0=$BS_PATH
user_backstore f1 "$size1" "ram/" || fail "enabling ram backstore f1 failed"
BS1=$BS_PATH
loop_target
loop_add_lun "$LOOP_TPG" 0 "$BS0"
DEV0=$DEV SG0=$SG
loop_add_lun "$LOOP_TPG" 1 "$BS1"
DEV1=$DEV

fio_secs=$((FIO_RUNTIME < 40 ? FIO_RUNTIME : 40))
fio_bg clean "$DEV1" "$fio_secs"
CLEAN_FIO=$FIO_PID
log "fio verify on $DEV1 for ${fio_secs}s"

# Reference data: LBAs 1000-1063 of LUN 0.
dd if=/dev/urandom of="$WORK/ref.bin" bs=512 count=64 status=none
dd if="$WORK/ref.bin" of="$DEV0" bs=512 seek=1000 count=64 oflag=direct status=none \
    || fail "writing the reference data failed"
dd if=/dev/urandom of="$WORK/junk.bin" bs=512 count=8 status=none

SG_LOG=$WORK/sg_raw.txt

# set_faults DEV_CONFIG: replace LUN 0's dev_config (and so its faults).
set_faults() {
    log "dev_config=$1"
    write_timeout 20 "$BS0/attrib/dev_config" "$1" || fail "writing dev_config '$1' failed"
}

# cdb10 OPCODE LBA BLOCKS: a 10-byte CDB as sg_raw arguments.
cdb10() {
    printf '%s 00 %02x %02x %02x %02x 00 %02x %02x 00' "$1" \
        $((($2 >> 24) & 255)) $((($2 >> 16) & 255)) $((($2 >> 8) & 255)) $(($2 & 255)) \
        $((($3 >> 8) & 255)) $(($3 & 255))
}

# answer SG_RAW_ARGS...: send a command with sg_raw -v and print its
# answer as one line: "GOOD bytes=N" (data-in bytes received, after the
# residual) or "CHECK K/AA/QQ valid=V info=N" from the raw sense bytes
# (fixed format). sg_raw's whole report goes to $SG_LOG.
answer() {
    local out=$WORK/answer.txt
    sg_raw -v -t 20 "$@" >"$out" 2>&1 || true
    { echo "=== sg_raw $*"; cat "$out"; } >>"$SG_LOG"
    awk '
        function hex(s,    i, v) {
            v = 0
            s = tolower(s)
            for (i = 1; i <= length(s); i++)
                v = v * 16 + index("0123456789abcdef", substr(s, i, 1)) - 1
            return v
        }
        in_raw && /^ +[0-9a-f][0-9a-f]( +[0-9a-f][0-9a-f])* *$/ { raw = raw " " $0; next }
        { in_raw = 0 }
        /^SCSI Status: / { status = $0; sub(/^SCSI Status: /, "", status); sub(/ +$/, "", status) }
        /Raw sense data/ { in_raw = 1 }
        /^Writing [0-9]+ bytes of data to / { bytes = $2 }
        /^Received [0-9]+ bytes of data/ { bytes = $2 }
        END {
            if (status == "Good") { printf "GOOD bytes=%d\n", bytes; exit }
            if (status != "Check Condition") { printf "ERROR %s\n", (status == "" ? "no status" : status); exit }
            n = split(raw, b, " ")
            if (n < 14) { print "CHECK without fixed sense"; exit }
            valid = (hex(b[1]) >= 128)
            info = hex(b[4] b[5] b[6] b[7])
            printf "CHECK %s/%s/%s valid=%d info=%d\n", substr(b[3], 2, 1), b[13], b[14], valid, info
        }' "$out"
}

# expect WHAT WANTED SG_RAW_ARGS...: the answer must be WANTED.
expect() {
    local what=$1 want=$2 got
    shift 2
    got=$(answer "$@")
    [[ $got == "$want" ]] || { tail -n 20 "$WORK/answer.txt"; fail "$what: got '$got', expected '$want'"; }
    log "$what: $got"
}

# ref_blocks FIRST COUNT: the reference data of LBAs FIRST.. (FIRST >= 1000).
ref_blocks() {
    dd if="$WORK/ref.bin" bs=512 skip=$(($1 - 1000)) count="$2" status=none
}

# --- 1-3: medium errors, short reads, panics
set_faults "ram/;fail_read=1010-1019;fail_write=1030-1031;short_read=1050-1059;panic_read=1040;panic_write=1041"
assert_grep 'injecting faults: fail_read=1010-1019;fail_write=1030-1031;short_read=1050-1059;panic_read=1040;panic_write=1041' \
    "$(daemon_log)" "the daemon's log of the new faults"

expect "READ 1008+4 over fail_read=1010-1019" "CHECK 3/11/00 valid=1 info=1010" \
    -r 2048 -o "$WORK/out.bin" "$SG0" $(cdb10 28 1008 4)
expect "READ 1015+1 inside fail_read" "CHECK 3/11/00 valid=1 info=1015" \
    -r 512 -o "$WORK/out.bin" "$SG0" $(cdb10 28 1015 1)
expect "WRITE 1028+4 over fail_write=1030-1031" "CHECK 3/0c/00 valid=1 info=1030" \
    -s 2048 -i "$WORK/junk.bin" "$SG0" $(cdb10 2a 1028 4)
expect "READ 1000+8 before the faults" "GOOD bytes=4096" \
    -r 4096 -o "$WORK/out.bin" "$SG0" $(cdb10 28 1000 8)
cmp -s "$WORK/out.bin" <(ref_blocks 1000 8) || fail "READ 1000+8 returned wrong data"

expect "READ 1044+8 over short_read=1050-1059" "GOOD bytes=3072" \
    -r 4096 -o "$WORK/out.bin" "$SG0" $(cdb10 28 1044 8)
cmp -s "$WORK/out.bin" <(ref_blocks 1044 6) || fail "the short READ returned wrong data"
expect "READ 1052+2 inside short_read" "CHECK 3/11/00 valid=1 info=1052" \
    -r 1024 -o "$WORK/out.bin" "$SG0" $(cdb10 28 1052 2)

expect "READ 1040+1 at panic_read" "CHECK 4/44/00 valid=0 info=0" \
    -r 512 -o "$WORK/out.bin" "$SG0" $(cdb10 28 1040 1)
expect "READ 1000+8 after the panic" "GOOD bytes=4096" \
    -r 4096 -o "$WORK/out.bin" "$SG0" $(cdb10 28 1000 8)
cmp -s "$WORK/out.bin" <(ref_blocks 1000 8) || fail "READ after the panic returned wrong data"
expect "WRITE 1041+1 at panic_write" "CHECK 4/44/00 valid=0 info=0" \
    -s 512 -i "$WORK/junk.bin" "$SG0" $(cdb10 2a 1041 1)
assert_grep 'handler panicked during read' "$(daemon_log)" "the daemon's log of the panic"
daemon_alive || fail "the daemon died after the injected panics"

# A malformed fault is refused (the write fails) and the log names it.
rc=0
write_timeout 20 "$BS0/attrib/dev_config" "ram/;fail_read=1019-1010" || rc=$?
[[ $rc -ne 124 ]] || fail "writing a malformed dev_config hung"
[[ $rc -ne 0 ]] || fail "dev_config with fail_read=1019-1010 was accepted"
assert_grep 'f0: reconfiguration refused: ram handler: fail_read=1019-1010: LAST is smaller than FIRST' \
    "$(daemon_log)" "the daemon's log of the refused faults"
log "dev_config with fail_read=1019-1010 refused"

# --- 4: not ready
set_faults "ram/;not_ready"
expect "READ when not_ready" "CHECK 2/04/00 valid=0 info=0" \
    -r 512 -o "$WORK/out.bin" "$SG0" $(cdb10 28 1000 1)
expect "WRITE when not_ready" "CHECK 2/04/00 valid=0 info=0" \
    -s 512 -i "$WORK/junk.bin" "$SG0" $(cdb10 2a 1000 1)
expect "SYNCHRONIZE CACHE when not_ready" "CHECK 2/04/00 valid=0 info=0" \
    "$SG0" 35 00 00 00 00 00 00 00 00 00
expect "TEST UNIT READY when not_ready" "CHECK 2/04/00 valid=0 info=0" \
    "$SG0" 00 00 00 00 00 00
expect "INQUIRY when not_ready" "GOOD bytes=36" \
    -r 36 -o "$WORK/out.bin" "$SG0" 12 00 00 00 24 00

# --- 5: delay
# slow_commands: how many of f0's commands took the daemon over 1 s (its
# latency histogram, buckets le="1" and le="10"), from a metrics file
# rendered after this call began (the second rewrite from now).
slow_commands() {
    local changes=0 deadline=$((SECONDS + 20)) ino now
    ino=$(stat -c %i "$METRICS" 2>/dev/null || echo none)
    while ((changes < 2)); do
        ((SECONDS < deadline)) || fail "$METRICS was not rewritten twice within 20s"
        sleep 0.2
        now=$(stat -c %i "$METRICS" 2>/dev/null || echo none)
        [[ $now == "$ino" ]] || { ino=$now; changes=$((changes + 1)); }
    done
    cp "$METRICS" "$WORK/metrics.txt"
    awk -v pfx='tcmu_command_latency_seconds_bucket{device="user_1/f0",' '
        index($0, pfx) == 1 && /,le="1"\}/ { one = $NF; n++ }
        index($0, pfx) == 1 && /,le="10"\}/ { ten = $NF; n++ }
        END { if (n == 2) print ten - one; else print "absent" }' "$WORK/metrics.txt"
}
# timed_read: one READ of LBA 1000 through sg_raw; sets READ_MS to the
# milliseconds it took.
timed_read() {
    local t0
    t0=$(date +%s%N)
    expect "READ 1000+1" "GOOD bytes=512" -r 512 -o "$WORK/out.bin" "$SG0" $(cdb10 28 1000 1)
    READ_MS=$((($(date +%s%N) - t0) / 1000000))
}
set_faults "ram/"
timed_read
plain=$READ_MS
slow_before=$(slow_commands)
[[ $slow_before =~ ^[0-9]+$ ]] || fail "no latency histogram of user_1/f0 in $METRICS"
set_faults "ram/;delay_ms=3000"
timed_read
took=$READ_MS
((took >= 3000)) || fail "a READ with delay_ms=3000 took ${took} ms"
log "a READ took ${took} ms with delay_ms=3000, ${plain} ms without (sg_raw under TCG)"
assert_eq "$(slow_commands)" $((slow_before + 1)) "f0's commands that took the daemon 1-10 s, after the delayed READ"
log "the daemon's latency histogram has the delayed READ in its 1-10 s bucket"

# --- 6: faults gone, data kept
set_faults "ram/"
expect "READ 1008+4 without faults" "GOOD bytes=2048" \
    -r 2048 -o "$WORK/out.bin" "$SG0" $(cdb10 28 1008 4)
dd if="$DEV0" bs=512 skip=1000 count=64 iflag=direct status=none | cmp -s - "$WORK/ref.bin" \
    || fail "LBAs 1000-1063 do not read back the data written before the faults"
log "LBAs 1000-1063 read back the data written before the faults"

fio_wait clean "$CLEAN_FIO"
daemon_alive || fail "the daemon died"

undo_all
daemon_stop
