#!/bin/bash
# t-19-out-of-process: tcmu-runtime's example `out_of_process` serves
# user:xor beside our running daemon, the way tcmu-runner's external
# handlers do: it owns org.kernel.TCMUService1.HandlerManager1.xor, answers
# CheckConfig there and registers with the daemon (RegisterHandler).
#
# 1. targetcli-fb lists user:xor beside the daemon's handlers and shows
#    its ConfigDesc.
# 2. targetcli creates a user:xor LUN (CheckConfig forwarded to the
#    example): ext4 and fio verify through tcm_loop; a bad key is refused
#    with the example's message and leaves nothing in configfs.
# 3. A user:file LUN of the daemon works at the same time.
# 4. The xor backstore is removed (the example answers), the example
#    stops with status 0, and the daemon no longer lists user:xor.

source "$(dirname "$0")/lib.sh"

targetcli_env
SVC=org.kernel.TCMUService1
EXT=org.kernel.TCMUService1.HandlerManager1.xor

load_modules
dbus_start
daemon_start
wait_for 15 "$SVC on the system bus" dbus_has_name "$SVC"
tc set global auto_save_on_exit=false >/dev/null || fail "targetcli set global failed"
push_cleanup "(cleanup_all_lio)"

bin=${EXAMPLES_DIR:-}/out_of_process
[[ -x $bin ]] || fail "example out_of_process not built: no executable $bin"
ext_log=$LOGDIR/out_of_process.log
log_mark
"$bin" >>"$LOGDIR/out_of_process.stdout.log" 2>>"$ext_log" &
EXT_PID=$!
push_cleanup "kill -KILL $EXT_PID 2>/dev/null; wait $EXT_PID 2>/dev/null"
wait_for 30 "out_of_process to register user:xor" grep -q "registered 'xor' with the daemon" "$ext_log"
dbus_has_name "$EXT" || fail "$EXT has no owner on the system bus"
log_since | grep -q "out-of-process handler 'xor' registered" || fail "the daemon did not log the registration"

# 1. Listed beside ours.
tc ls /backstores >"$WORK/ls.txt" || fail "targetcli ls /backstores failed"
cat "$WORK/ls.txt"
for h in file ram qcow xor; do
    assert_grep "o- user:$h " "$WORK/ls.txt" "targetcli lists user:$h"
done
tc_batch "/backstores/user:xor help create" >"$WORK/help.txt"
grep -qF "XORed with it" "$WORK/help.txt" || fail "targetcli's help for user:xor lacks the example's ConfigDesc"

# 2. A LUN made by targetcli, served by the example.
tc /backstores/user:xor create name=ox0 size=64M cfgstring=5a3c || fail "targetcli create user:xor failed"
bs=$(so_path ox0)
[[ -n $bs ]] || fail "targetcli left no backstore ox0 in configfs"
assert_eq "$(cat "$bs/enable")" 1 "ox0 enabled"
grep -q '/ox0/xor/5a3c: Added done' "$ext_log" || fail "the example did not log adding ox0"
loop_export "$bs"
OX_TPG=$LOOP_TPG
ext4_roundtrip "$DEV" 2 4
fio_bg xor "$DEV" $((FIO_RUNTIME < 10 ? FIO_RUNTIME : 10))
fio_wait xor "$FIO_PID"
if tc /backstores/user:xor create name=ox1 size=64M cfgstring=5z >"$WORK/bad.txt"; then
    fail "targetcli created user:xor ox1 with the bad key 5z"
fi
grep -qF "is not a key of 1 to 64 hex bytes" "$WORK/bad.txt" ||
    { cat "$WORK/bad.txt"; fail "targetcli's refusal of key 5z lacks the example's message"; }
[[ -z $(so_path ox1) ]] || fail "the refused ox1 was left in configfs"

# 3. The daemon's own LUN beside it.
tc /backstores/user:file create name=of0 size=32M "cfgstring=$WORK/of0.img" || fail "targetcli create user:file failed"
loop_export "$(so_path of0)"
dd_roundtrip "$DEV" 2

# 4. Removal answered by the example; a clean stop; unregistered.
loop_unexport "$OX_TPG" || fail "cannot unexport ox0"
rmdir_timeout "$bs" 10 || fail "removing ox0 hung or failed"
grep -q '/ox0/xor/5a3c: Removed done' "$ext_log" || fail "the example did not log removing ox0"
term_and_reap "$EXT_PID" "out_of_process"
wait_for 10 "the daemon to drop user:xor" bash -c "! busctl --system tree $SVC 2>/dev/null | grep -q /org/kernel/TCMUService1/xor"
undo_all
daemon_stop
