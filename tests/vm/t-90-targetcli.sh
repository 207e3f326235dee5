#!/bin/bash
# t-90-targetcli: an unmodified targetcli-fb drives our daemon through its
# D-Bus service on a real system bus (dbus-daemon with our policy file).
#
# 1. `ls /backstores` lists exactly the compiled-in handlers as user:*;
#    `help create` prints their ConfigDesc.
# 2. `create` with a good cfgstring makes a working LUN (tcm_loop, data
#    written and read back); bad cfgstrings are refused with our message
#    and leave nothing in configfs.
# 3. CheckConfig answers root and refuses nobody (AccessDenied); nobody
#    may still read GetManagedObjects.
# 4. The device's D-Bus object reports the bytes written.
# 5. saveconfig / clearconfig / restoreconfig round trip, data intact.
# 6. The bus daemon is killed while fio runs and started again: fio ends
#    without error and org.kernel.TCMUService1 is back within seconds.
# 7. Without libgfapi (hidden from the daemon in a mount namespace): the
#    daemon starts, targetcli lists user:glfs, CheckConfig of a glfs
#    cfgstring names the package to install (libgfapi0).

source "$(dirname "$0")/lib.sh"

targetcli_env
SVC=org.kernel.TCMUService1

# prop PATH IFACE NAME: a property's value as busctl prints it ("t 42").
prop() { busctl --system get-property "$SVC" "$1" "$2" "$3"; }


load_modules
dbus_start
daemon_start
wait_for 15 "$SVC on the system bus" dbus_has_name "$SVC"
tc set global auto_save_on_exit=false >/dev/null || fail "targetcli set global failed"
push_cleanup "(cleanup_all_lio)"   # not targetcli: it fails with no system bus

# 1. The handlers, as targetcli sees them: the runner's, and only those.
USER_HANDLERS="file ram qcow rbd zbc fbo glfs"
tc ls /backstores >"$WORK/ls.txt" || fail "targetcli ls /backstores failed"
cat "$WORK/ls.txt"
for h in $USER_HANDLERS; do
    assert_grep "o- user:$h " "$WORK/ls.txt" "targetcli lists user:$h"
done
assert_eq "$(grep -c 'o- user:' "$WORK/ls.txt")" "$(wc -w <<<"$USER_HANDLERS")" \
    "user:* backstores listed (only the handlers)"
help_cmds=()
for h in $USER_HANDLERS; do help_cmds+=("/backstores/user:$h help create"); done
tc_batch "${help_cmds[@]}" >"$WORK/help.txt"
for h in $USER_HANDLERS; do
    desc=$(prop "/org/kernel/TCMUService1/$h" "$SVC" ConfigDesc | sed -E 's/^s "(.*)"$/\1/')
    [[ -n $desc ]] || fail "no ConfigDesc for $h"
    grep -qF -- "$desc" "$WORK/help.txt" || fail "targetcli's help for user:$h lacks our ConfigDesc '$desc'"
    log "user:$h help shows our ConfigDesc: $desc"
done

# 2. A good cfgstring: a working LUN.
img=$WORK/tf0.img
tc /backstores/user:file create name=tf0 size=64M "cfgstring=$img" || fail "targetcli create failed"
bs=$(so_path tf0)
[[ -n $bs ]] || fail "targetcli create left no user backstore tf0 in configfs"
assert_eq "$(cat "$bs/enable")" 1 "tf0 enabled"
loop_export "$bs"
dd_roundtrip "$DEV" 1
hba=$(basename "$(dirname "$bs")")
hba=${hba#user_}
dev_obj=/org/kernel/TCMUService1/device/${hba}_tf0
before=$(prop "$dev_obj" $SVC.Device1 WriteBytes | awk '{print $2}') || fail "no D-Bus object $dev_obj"
dd if=/dev/urandom of="$WORK/pattern.bin" bs=1M count=2 status=none
dd if="$WORK/pattern.bin" of="$DEV" bs=1M seek=8 oflag=direct status=none || fail "dd to $DEV failed"
after=$(prop "$dev_obj" $SVC.Device1 WriteBytes | awk '{print $2}')
((after >= before + 2097152)) || fail "WriteBytes of $dev_obj went from $before to $after after a 2 MiB write"
dbus-send --system --print-reply --dest=$SVC /org/kernel/TCMUService1/device \
    org.freedesktop.DBus.ObjectManager.GetManagedObjects >"$WORK/devices.txt" ||
    fail "GetManagedObjects of the device objects failed"
assert_grep "object path \"$dev_obj\"" "$WORK/devices.txt" "GetManagedObjects lists $dev_obj"
assert_grep '"WriteBytes"' "$WORK/devices.txt" "the device object carries WriteBytes"
log "D-Bus device object $dev_obj: WriteBytes $before -> $after"

# Bad cfgstrings: refused with our message, nothing left behind.
out=$(tc_batch "/backstores/user:file create name=bad0 size=16M cfgstring=/nonexistent-dir/x.img" \
    "/backstores/user:ram create name=bad1 size=16M cfgstring=lots")
echo "$out"
grep -qF "cfgstring invalid: file handler: directory /nonexistent-dir does not exist" <<<"$out" ||
    fail "targetcli did not show our refusal for a file in a missing directory"
grep -qF "cfgstring invalid: ram handler: invalid size 'lots'" <<<"$out" ||
    fail "targetcli did not show our refusal for a bad ram size"
for n in bad0 bad1; do
    [[ -z $(so_path $n) ]] || fail "a refused backstore $n was left in configfs"
done

# 3. Root only.
check=(--print-reply "--dest=$SVC" /org/kernel/TCMUService1/ram "$SVC.CheckConfig" string:ram/64M)
dbus-send --system "${check[@]}" >"$WORK/check-root.txt" 2>&1 || fail "root's CheckConfig failed"
assert_grep 'boolean true' "$WORK/check-root.txt" "root's CheckConfig(ram/64M) is true"
assert_grep 'string "success"' "$WORK/check-root.txt" "root's CheckConfig says success"
nobody=(setpriv --reuid=65534 --regid=65534 --clear-groups)
rc=0
"${nobody[@]}" dbus-send --system "${check[@]}" >"$WORK/check-nobody.txt" 2>&1 || rc=$?
cat "$WORK/check-nobody.txt"
[[ $rc -ne 0 ]] || fail "nobody's CheckConfig was answered"
assert_grep 'AccessDenied' "$WORK/check-nobody.txt" "nobody's CheckConfig is AccessDenied"
"${nobody[@]}" dbus-send --system --print-reply --dest=$SVC /org/kernel/TCMUService1 \
    org.freedesktop.DBus.ObjectManager.GetManagedObjects >"$WORK/managed-nobody.txt" 2>&1 ||
    fail "nobody cannot read GetManagedObjects: $(cat "$WORK/managed-nobody.txt")"
assert_grep 'ConfigDesc' "$WORK/managed-nobody.txt" "nobody reads the handlers' ConfigDesc"

# 5. saveconfig / clearconfig / restoreconfig.
loop_unexport "$LOOP_TPG" || fail "cannot remove the tcm_loop export"
tc_batch "saveconfig $WORK/saved.json" "clearconfig confirm=True"
assert_grep "\"config\": \"file/$img\"" "$WORK/saved.json" "the saved configuration has tf0's cfgstring"
[[ -z $(so_path tf0) ]] || fail "clearconfig left tf0"
wait_for 10 "$dev_obj to go" sh -c "! busctl --system get-property $SVC $dev_obj $SVC.Device1 Name"
tc restoreconfig "$WORK/saved.json" clear_existing=true || fail "targetcli restoreconfig failed"
bs=$(so_path tf0)
[[ -n $bs ]] || fail "restoreconfig did not bring tf0 back"
assert_eq "$(cat "$bs/enable")" 1 "tf0 enabled after restoreconfig"
loop_export "$bs"
dd if="$DEV" bs=1M skip=8 count=2 iflag=direct status=none | cmp -s - "$WORK/pattern.bin" ||
    fail "tf0's data differs after saveconfig/clearconfig/restoreconfig"
log "saveconfig/clearconfig/restoreconfig: tf0 back, data intact"

# 6. The bus goes away under I/O and comes back.
secs=$((FIO_RUNTIME < 20 ? FIO_RUNTIME : 20))
((secs >= 10)) || secs=10
fio_bg busgone "$DEV" "$secs"
sleep 2
log_mark
dbus_stop
log "system bus stopped while fio runs"
sleep 3
daemon_alive || fail "the daemon died with the bus"
dbus_start
t0=$SECONDS
wait_for 10 "$SVC back on the restarted bus" dbus_has_name "$SVC"
log "$SVC back $((SECONDS - t0))s after the bus restarted"
fio_wait busgone "$FIO_PID"
log_since | grep -q 'lost the system bus' || fail "the daemon did not log the lost bus"
tc ls /backstores >"$WORK/ls-after.txt" || fail "targetcli ls after the bus restart failed"
assert_grep "o- user:file " "$WORK/ls-after.txt" "targetcli lists user:file after the bus restart"
daemon_alive || fail "the daemon died"

# 7. A system without libgfapi (the daemon started in a private mount
#    namespace where an empty file is bind-mounted over libgfapi.so.0):
#    the daemon starts, targetcli still lists user:glfs, and CheckConfig of
#    a glfs cfgstring is refused naming the package to install.
# (awk reads to the end: an early exit would SIGPIPE ldconfig, failing the
# pipeline.)
gfapi=$(ldconfig -p | awk '/libgfapi\.so\.0 / && !found { print $NF; found = 1 }')
[[ -n $gfapi && -e $gfapi ]] || fail "ldconfig -p knows no libgfapi.so.0"
{
    echo '#!/bin/bash'
    echo "# tcmu-runner with $gfapi hidden (an empty file over it)."
    printf 'exec unshare -m --propagation private bash -c %q %q "$@"\n' \
        "mount --bind /dev/null '$gfapi' && exec \"\$0\" \"\$@\"" "$TCMU_RUNNER"
} >"$WORK/no-gfapi.sh"
chmod +x "$WORK/no-gfapi.sh"
daemon_stop
TCMU_RUNNER=$WORK/no-gfapi.sh daemon_start
wait_for 15 "$SVC back with the daemon without libgfapi" dbus_has_name "$SVC"
tc ls /backstores >"$WORK/ls-nogfapi.txt" || fail "targetcli ls /backstores failed (no libgfapi)"
assert_grep "o- user:glfs " "$WORK/ls-nogfapi.txt" "targetcli lists user:glfs without libgfapi"
dbus-send --system --print-reply "--dest=$SVC" /org/kernel/TCMUService1/glfs "$SVC.CheckConfig" \
    string:glfs/vol0@localhost/x.img >"$WORK/check-nogfapi.txt" 2>&1 || fail "CheckConfig (no libgfapi) failed"
cat "$WORK/check-nogfapi.txt"
assert_grep 'boolean false' "$WORK/check-nogfapi.txt" "CheckConfig of a glfs cfgstring without libgfapi is refused"
assert_grep 'libgfapi0' "$WORK/check-nogfapi.txt" "the refusal names the package to install"
if grep -q libgfapi "/proc/$DAEMON_PID/maps"; then
    fail "the daemon without libgfapi has it mapped after the check"
fi
daemon_alive || fail "the daemon without libgfapi died"
log "without libgfapi: the daemon serves, targetcli lists user:glfs, CheckConfig names libgfapi0"

undo_all
daemon_stop
