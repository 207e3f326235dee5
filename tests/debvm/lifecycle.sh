#!/bin/bash
# The Debian VM's test (`cargo xtask debvm-test`, the default script): the
# package's whole life on a booted Debian 12 with systemd as PID 1 (issue
# 24), in one VM run with one reboot, in this order (each step needs the
# previous ones; the numbers are the issue's items):
#
#   boot           systemd is PID 1, the system is running, D-Bus active;
#   c_package      Debian's C tcmu-runner package serves a zoned LUN that
#                  targetcli made and saved, with data on it;
#   upgrade        (1) `apt-get install $TCMU_DEB` replaces it with ours;
#                  conffiles as dpkg should; our daemon serves the LUN the
#                  C one made, its data reads back; the saved configuration
#                  is restored (rtslib-fb-targetctl) and served by ours;
#   dbus           (2) targetcli lists and creates our user:* backstores
#                  through our D-Bus service; stopped, the service is
#                  started by D-Bus activation; a user:file LUN serves I/O;
#   journal_priorities (7) the daemon's lines reach journald with their
#                  priorities;
#   reload         (3) reload (systemctl, and a package reinstall), restart,
#                  stop and start under fio verify;
#   sigkill        (4) kill -9 under fio verify: systemd restarts it;
#   reboot_saved   (5) the configuration saved, then a reboot: the script
#                  exits 100, xt-debvm-run reboots and runs it again after
#                  the boot, and the file $REBOOTED says where it was;
#   restored       (5) rtslib-fb-targetctl restored the LUNs at boot and our
#                  daemon, started by systemd, serves them;
#   purge          (6) `apt-get purge`: the service is gone, nothing of ours
#                  left, user: backstores get no daemon, nothing hangs.
#
# Runs as root in the guest; files under /var/tmp (the VM's disk, kept
# across the reboot, thrown away at the end of the run). Timings go to
# $XT_OUT/lifecycle.txt.

set -u

REPORT=$XT_OUT/lifecycle.txt
WORK=/var/tmp/lifecycle
REBOOTED=$WORK/rebooted
if [ ! -e "$REBOOTED" ]; then
    : > "$REPORT"
    rm -rf "$WORK"
    mkdir -p "$WORK"
    date +%s > "$WORK/started"
fi
source "$XT_WORKDIR/tests/debvm/lib.sh"

# The zoned LUN made under the C daemon, and the file LUN made under ours.
ZC_NAA=naa.5001405c0ffee001
ZC_FILE=/var/tmp/zc.raw
ZC_CFG="model-HM/zsize-4/conv-8@$ZC_FILE"
F0_NAA=naa.5001405c0ffee002
F0_FILE=/var/tmp/f0.img
# What the zoned LUN holds: one MiB in conventional zone 0 (at 0) and one
# MiB at the start of sequential zone 8 (at 32 MiB).
PAT_CONV=$WORK/pattern-conv
PAT_SEQ=$WORK/pattern-seq
SEQ_MIB=32

# The hung-task detector reports a task blocked for 30 s (not the default
# 120): a hang shorter than a step would otherwise go unseen.
echo 30 > /proc/sys/kernel/hung_task_timeout_secs || fail "cannot set hung_task_timeout_secs"

# zc_holds_its_data WHAT: the zoned LUN reads back both patterns.
zc_holds_its_data() {
    local dev
    dev=$(lun_dev "$ZC_NAA") || exit 1
    assert_pattern "$dev" "$PAT_CONV" 0 "$1: conventional zone 0"
    assert_pattern "$dev" "$PAT_SEQ" "$SEQ_MIB" "$1: sequential zone 8"
}

# step NAME: runs the function NAME, timed, into the report.
step() {
    local t
    t=$(uptime_s)
    say "== $1"
    "$1"
    say "== $1: $(elapsed "$t") s"
}

# systemd is PID 1, the boot reached a running system, D-Bus runs.
boot() {
    local pid1 state
    pid1=$(ps -p 1 -o comm=)
    [ "$pid1" = systemd ] || fail "PID 1 is $pid1, not systemd"
    state=$(systemctl is-system-running --wait 2>&1)
    if [ "$state" != running ]; then
        systemctl --no-pager --failed
        fail "the system is $state after boot, not running"
    fi
    say "PID 1: systemd $(systemctl --version | head -n 1 | cut -d' ' -f2); system $state at guest uptime $(uptime_s) s"
    say "boot: $(systemd-analyze time | head -n 1)"
    systemd-analyze blame --no-pager | head -n 8 | sed 's/^/  blame: /' | tee -a "$REPORT"
    [ "$(systemctl is-active dbus)" = active ] || fail "dbus.service is not active"
    [ "$(systemctl is-active rtslib-fb-targetctl)" = active ] \
        || fail "rtslib-fb-targetctl.service (restores the saved LIO configuration) is not active"
}

# Debian's C package, as debootstrap installed it, serves a host-managed
# zoned LUN (its file_zbc handler: Debian's package has no plain file
# handler) made with targetcli and exported through tcm_loop; data written
# to a conventional and a sequential zone; the configuration saved.
c_package() {
    local version dev
    version=$(dpkg-query -W -f '${Version}' tcmu-runner)
    case "$version" in
        *+rs*) fail "tcmu-runner $version is installed already: the image should hold Debian's" ;;
    esac
    is_active || fail "Debian's tcmu-runner $version is not active after boot"
    C_PID=$(main_pid)
    say "Debian's tcmu-runner $version active, MainPID $C_PID"

    # Nothing saved unless the test says so.
    must targetcli set global auto_save_on_exit=false > /dev/null
    must targetcli /backstores/user:zbc create name=zc size=64M cfgstring="$ZC_CFG" > /dev/null
    loop_lun "$ZC_NAA" /backstores/user:zbc/zc
    dev=$(lun_dev "$ZC_NAA") || exit 1
    [ "$(cat "/sys/block/${dev#/dev/}/queue/zoned")" = host-managed ] \
        || fail "the C daemon's zbc LUN $dev is not a host-managed zoned disk"
    assert_serves "$C_PID" zc
    head -c 1M /dev/urandom > "$PAT_CONV"
    head -c 1M /dev/urandom > "$PAT_SEQ"
    write_pattern "$dev" "$PAT_CONV" 0
    write_pattern "$dev" "$PAT_SEQ" "$SEQ_MIB"
    zc_holds_its_data "the C daemon's LUN"
    must targetcli saveconfig > /dev/null
    grep -q "$ZC_CFG" /etc/rtslib-fb-target/saveconfig.json \
        || fail "saveconfig.json does not hold the zbc backstore"
    grep -q "$ZC_NAA" /etc/rtslib-fb-target/saveconfig.json \
        || fail "saveconfig.json does not hold the loopback target"
    say "the C daemon serves zc ($dev, host managed) with 2 MiB written; configuration saved"

    # The administrator changed a conffile (a value that changes nothing).
    echo 'log_level = 3' >> /etc/tcmu/tcmu.conf
}

# (1) apt-get install of our package over the C one: the package and the
# running daemon are ours, conffiles handled as dpkg does (the changed
# one kept, ours beside it as .dpkg-dist; the others replaced; the C
# package's init script gone), the LUN made under the C daemon served by
# ours with its data; then the saved configuration restored from scratch
# by rtslib-fb-targetctl (what target restore does at boot) and served by
# ours too.
upgrade() {
    local t version show pid hash file conffiles
    [ -r "${TCMU_DEB:-}" ] || fail "no package at TCMU_DEB=${TCMU_DEB:-} (cargo xtask deb)"
    t=$(uptime_s)
    # --force-confold: keep changed conffiles without asking (an unattended
    # upgrade's choice); dpkg would otherwise stop at a prompt.
    DEBIAN_FRONTEND=noninteractive apt-get install -q -y --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
        "$TCMU_DEB" < /dev/null > "$WORK/apt-install.txt" 2>&1 \
        || { tail -n 30 "$WORK/apt-install.txt"; fail "apt-get install $TCMU_DEB failed"; }
    say "apt-get install $(basename "$TCMU_DEB"): $(elapsed "$t") s"
    version=$(dpkg-query -W -f '${Version}' tcmu-runner)
    case "$version" in
        *+rs*) ;;
        *) fail "tcmu-runner is $version after the install, not ours" ;;
    esac
    [ -z "$(dpkg --audit)" ] || fail "dpkg --audit: $(dpkg --audit)"
    [ ! -e /usr/lib/x86_64-linux-gnu/tcmu-runner ] || fail "the C package's handlers remain"

    # Conffiles.
    conffiles=$(dpkg-query -W -f '${Conffiles}\n' tcmu-runner | sed '/^$/d')
    [ "$(echo "$conffiles" | awk '{ print $1 }' | sort | tr '\n' ' ')" = \
        "/etc/dbus-1/system.d/tcmu-runner.conf /etc/logrotate.d/tcmu-runner /etc/tcmu/tcmu.conf " ] \
        || fail "registered conffiles: $conffiles"
    [ ! -e /etc/init.d/tcmu-runner ] || fail "the C package's /etc/init.d/tcmu-runner remains"
    grep -qx 'log_level = 3' /etc/tcmu/tcmu.conf || fail "the changed /etc/tcmu/tcmu.conf was not kept"
    hash=$(echo "$conffiles" | awk '$1 == "/etc/tcmu/tcmu.conf" { print $2 }')
    [ "$(md5sum < /etc/tcmu/tcmu.conf.dpkg-dist | cut -d' ' -f1)" = "$hash" ] \
        || fail "/etc/tcmu/tcmu.conf.dpkg-dist is not our tcmu.conf"
    for file in /etc/dbus-1/system.d/tcmu-runner.conf /etc/logrotate.d/tcmu-runner; do
        hash=$(echo "$conffiles" | awk -v f="$file" '$1 == f { print $2 }')
        [ "$(md5sum < "$file" | cut -d' ' -f1)" = "$hash" ] || fail "the unchanged $file was not replaced by ours"
    done
    say "conffiles: the changed tcmu.conf kept (ours as tcmu.conf.dpkg-dist), the others ours, the init script gone"

    # The service. The postinst restarts it (the C daemon knows no SIGUSR1).
    wait_for 30 "tcmu-runner is not active after the upgrade" is_active
    show=$(systemctl show -p ActiveState,Type,MainPID,StatusText tcmu-runner)
    [ "$(echo "$show" | sed -n 's/^Type=//p')" = notify ] || fail "tcmu-runner.service is not Type=notify: $show"
    pid=$(main_pid)
    [ "$pid" != "$C_PID" ] || fail "MainPID is still the C daemon's ($C_PID)"
    assert_ours "$pid"
    # Type=notify: active means systemd got READY=1, which carries the status.
    case "$(prop StatusText)" in
        serving*) ;;
        *) fail "StatusText is '$(prop StatusText)', not the daemon's READY status" ;;
    esac
    journalctl -b -u tcmu-runner --no-pager -o cat | grep -q '^Started tcmu-runner.service.*tcmu-rs' \
        || fail "the journal has no 'Started' line for our tcmu-runner.service"
    say "ours: tcmu-runner $version, MainPID $pid, status '$(prop StatusText)'"

    # The LUN the C daemon made, now served by ours.
    assert_serves "$pid" zc
    zc_holds_its_data "after the upgrade"
    blkzone report -o $((SEQ_MIB * 2048)) -c 1 "$(lun_dev "$ZC_NAA")" > "$WORK/zone8.txt" 2>&1 \
        || fail "blkzone report failed: $(cat "$WORK/zone8.txt")"
    # blkzone prints the write pointer relative to the zone's start.
    grep -Eq 'wptr 0x0*800 ' "$WORK/zone8.txt" \
        || fail "zone 8's write pointer is not 1 MiB in: $(cat "$WORK/zone8.txt")"
    say "our daemon serves zc (the C daemon's file): both MiBs read back, zone 8's write pointer kept"

    # The saved configuration, restored from nothing (clear, then restore).
    t=$(uptime_s)
    must timeout 120 systemctl restart rtslib-fb-targetctl > /dev/null
    [ "$(main_pid)" = "$pid" ] || fail "restoring the configuration changed MainPID"
    assert_serves "$pid" zc
    zc_holds_its_data "after rtslib-fb-targetctl restored saveconfig.json"
    say "rtslib-fb-targetctl cleared and restored saveconfig.json; ours serves zc with its data ($(elapsed "$t") s)"
}

# (2) targetcli through our D-Bus service: it lists our handlers (user:file
# and user:ram, which the C package lacks), a bad cfgstring is refused by
# our CheckConfig; with the service stopped, targetcli starts it by D-Bus
# activation; a user:file LUN made then serves I/O.
dbus() {
    local t ls_out bad pid new_pid dev pat
    pid=$(main_pid)
    ls_out=$(must targetcli ls /backstores) || exit 1
    for h in user:file user:ram user:qcow user:zbc; do
        echo "$ls_out" | grep -q -- "$h" || fail "targetcli ls /backstores does not list $h"
    done
    bad=$(targetcli /backstores/user:file create name=bad size=1M cfgstring=/nonexistent-dir/x 2>&1) \
        && fail "a user:file backstore under a missing folder was accepted: $bad"
    echo "$bad" | grep -q 'cfgstring invalid: file handler' \
        || fail "a bad cfgstring was refused without our CheckConfig's message: $bad"
    say "targetcli lists user:file, user:ram, user:qcow, user:zbc; refused: $(echo "$bad" | grep 'cfgstring invalid' | head -n 1)"

    must systemctl stop tcmu-runner > /dev/null
    [ "$(systemctl is-active tcmu-runner)" = inactive ] || fail "tcmu-runner did not stop"
    t=$(uptime_s)
    ls_out=$(must targetcli ls /backstores) || exit 1
    echo "$ls_out" | grep -q -- user:file || fail "targetcli did not list user:file after D-Bus activation"
    is_active || fail "targetcli did not start tcmu-runner through D-Bus"
    new_pid=$(main_pid)
    [ "$new_pid" -gt 0 ] && [ "$new_pid" != "$pid" ] || fail "MainPID $new_pid after activation (was $pid)"
    journalctl -b -u dbus --no-pager -o cat | grep -q "Activating via systemd: service name='org.kernel.TCMUService1'" \
        || fail "dbus-daemon's journal shows no activation of org.kernel.TCMUService1"
    assert_serves "$new_pid" zc
    say "D-Bus activation: targetcli started tcmu-runner (MainPID $new_pid) in $(elapsed "$t") s; zc recovered"

    truncate -s 128M "$F0_FILE"
    must targetcli /backstores/user:file create name=f0 size=128M cfgstring="$F0_FILE" > /dev/null
    loop_lun "$F0_NAA" /backstores/user:file/f0
    dev=$(lun_dev "$F0_NAA") || exit 1
    assert_serves "$new_pid" f0
    pat=$WORK/pattern-f0
    head -c 4M /dev/urandom > "$pat"
    write_pattern "$dev" "$pat" 16
    assert_pattern "$dev" "$pat" 16 "the new user:file LUN"
    cmp -s <(dd if="$F0_FILE" bs=1M skip=16 count=4 status=none) "$pat" \
        || fail "$F0_FILE does not hold what was written to $dev"
    say "user:file LUN f0 ($dev) made by targetcli: 4 MiB written, read back, in the file"
}

# journal PRIORITY_ARG SINCE: tcmu-runner's journal since SINCE (epoch
# seconds) at journalctl's -p PRIORITY_ARG, one "PRIORITY<TAB>MESSAGE" a
# line.
journal() {
    journalctl -b -u tcmu-runner -p "$1" --since "@$2" -o json --no-pager | python3 -c '
import json, sys
for line in sys.stdin:
    e = json.loads(line)
    print("%s\t%s" % (e.get("PRIORITY"), e.get("MESSAGE")))'
}

# (7) journald gets the daemon's lines with their priorities (the `<N>`
# prefix it parses): an error (a device with a bad cfgstring refused,
# made through configfs so that no CheckConfig stops it first) at 3, a
# warning (a device of a subtype no handler serves, found at start-up) at
# 4, both in `-p warning`; info lines at 6, in `-p info` and not in `-p
# warning`.
journal_priorities() {
    local since hba=$CFS/core/user_77 rc t warn info
    since=$(($(date +%s) - 1))
    mkdir -p "$hba/xtbadcfg" || fail "cannot create a user backstore in configfs"
    echo "dev_size=1048576" > "$hba/xtbadcfg/control"
    echo "dev_config=file//nonexistent-dir/x" > "$hba/xtbadcfg/control"
    t=$(uptime_s)
    rc=0
    bounded 20 sh -c "echo 1 > $hba/xtbadcfg/enable" 2> /dev/null || rc=$?
    [ "$rc" -ne 124 ] || fail "enabling a backstore with a bad cfgstring hung"
    [ "$rc" -ne 0 ] || fail "a backstore with a bad cfgstring was enabled"
    bounded 20 rmdir "$hba/xtbadcfg" || fail "cannot remove the refused backstore (or it hung)"
    say "a bad cfgstring through configfs refused in $(elapsed "$t") s"

    # A device of an unknown subtype, made while no daemon runs (the
    # stopped daemon told the kernel to stop waiting for replies, so
    # enable returns at once), is found by the next start.
    must systemctl stop tcmu-runner > /dev/null
    mkdir "$hba/xtnohandler" || fail "cannot create a second user backstore"
    echo "dev_size=1048576" > "$hba/xtnohandler/control"
    echo "dev_config=nosuch/x" > "$hba/xtnohandler/control"
    bounded 20 sh -c "echo 1 > $hba/xtnohandler/enable" \
        || fail "enabling a user backstore with no daemon running failed or hung"
    must timeout 120 systemctl start tcmu-runner > /dev/null
    rc=0
    bounded 20 rmdir "$hba/xtnohandler" "$hba" || rc=$?
    [ "$rc" -eq 0 ] || fail "removing the unknown-subtype backstore failed or hung ($rc)"
    sleep 1

    journal warning "$since" > "$WORK/journal-warning.txt"
    journal info "$since" > "$WORK/journal-info.txt"
    sed 's/^/  -p warning: /' "$WORK/journal-warning.txt" | tee -a "$REPORT"
    grep -Eq '^3	.*xtbadcfg: refused' "$WORK/journal-warning.txt" \
        || fail "journalctl -p warning has no error (priority 3) about the refused xtbadcfg"
    warn=$(grep -E "^4	.*no handler for subtype 'nosuch'" "$WORK/journal-warning.txt" | head -n 1)
    [ -n "$warn" ] || fail "journalctl -p warning has no warning (priority 4) about subtype nosuch"
    info=$(grep -E '^6	.*zc: recovered' "$WORK/journal-info.txt" | head -n 1)
    [ -n "$info" ] || fail "journalctl -p info has no info line (priority 6) 'zc: recovered'"
    ! grep -q 'zc: recovered' "$WORK/journal-warning.txt" || fail "an info line is in journalctl -p warning"
    ! grep -Eq '	<[0-7]>' "$WORK/journal-info.txt" || fail "a journal message still carries its <N> prefix"
    say "journal: error and warning lines in -p warning with priorities 3 and 4, info lines (6) only in -p info"
}

# (3) Under fio randwrite with crc32c verify on f0: `systemctl reload`
# hands the devices to a new process that systemd follows as MainPID (in
# the unit's cgroup); a reinstall of the package (its postinst reloads)
# does it with a new binary; restart, then stop and start, leave nothing
# hung. fio reports no error, the kernel no hung task or I/O error, the
# zoned LUN keeps its data.
reload() {
    local dev pid new t n0 since
    dev=$(lun_dev "$F0_NAA") || exit 1
    n0=$(prop NRestarts)
    dmesg_mark
    fio_loop_start reload "$dev"
    sleep 5

    pid=$(main_pid)
    t=$(uptime_s)
    since=$(date +%s)
    must timeout 60 systemctl reload tcmu-runner > /dev/null
    wait_for 30 "MainPID did not follow the reload (still $pid)" pid_changed_from "$pid"
    new=$(main_pid)
    assert_ours "$new"
    grep -q 'tcmu-runner.service' "/proc/$new/cgroup" || fail "the new MainPID $new is not in the unit's cgroup"
    wait_for 30 "the old daemon $pid did not exit after the reload" test ! -e "/proc/$pid"
    assert_serves "$new" f0
    assert_serves "$new" zc
    say "systemctl reload: MainPID $pid -> $new in $(elapsed "$t") s"
    sleep 3
    fio_alive || fail "fio failed after systemctl reload"

    pid=$new
    t=$(uptime_s)
    DEBIAN_FRONTEND=noninteractive apt-get install -q -y --reinstall "$TCMU_DEB" < /dev/null \
        > "$WORK/apt-reinstall.txt" 2>&1 \
        || { tail -n 30 "$WORK/apt-reinstall.txt"; fail "apt-get install --reinstall failed"; }
    wait_for 30 "MainPID did not follow the package's reload (still $pid)" pid_changed_from "$pid"
    new=$(main_pid)
    assert_ours "$new"
    wait_for 30 "the old daemon $pid did not exit after the reinstall" test ! -e "/proc/$pid"
    assert_serves "$new" f0
    say "apt-get install --reinstall (postinst reloads): MainPID $pid -> $new in $(elapsed "$t") s"
    sleep 3
    fio_alive || fail "fio failed after the reinstall"

    # The daemons a reload started are systemd's children (not the old
    # daemon's): systemd waits for them on stop instead of killing them.
    ! journalctl -u tcmu-runner --since "@$since" -o cat --no-pager | grep -q 'which is not our child' \
        || fail "systemd supervises a reloaded daemon that is not its child: $(journalctl -u tcmu-runner --since "@$since" -o cat --no-pager | grep 'not our child' | head -n 1)"
    [ "$(ps -o ppid= -p "$new" | tr -d ' ')" = 1 ] || fail "the reloaded daemon $new is not PID 1's child"

    # restart: SIGTERM, the daemon finishes its commands and exits; no
    # SIGKILL from systemd.
    pid=$new
    t=$(uptime_s)
    since=$(date +%s)
    must timeout 120 systemctl restart tcmu-runner > /dev/null
    pid_changed_from "$pid" || fail "systemctl restart left MainPID $(main_pid) (was $pid)"
    new=$(main_pid)
    assert_serves "$new" f0
    journalctl -u tcmu-runner _PID="$pid" --since "@$since" -o cat --no-pager | grep -q 'tcmu-runner stopped$' \
        || fail "the daemon $pid did not log stopping on systemctl restart"
    ! journalctl -u tcmu-runner --since "@$since" -o cat --no-pager | grep -q 'with signal SIGKILL' \
        || fail "systemctl restart SIGKILLed the daemon: $(journalctl -u tcmu-runner --since "@$since" -o cat --no-pager | grep SIGKILL | head -n 1)"
    say "systemctl restart: MainPID $pid -> $new in $(elapsed "$t") s (the old one stopped by SIGTERM alone)"
    sleep 3
    fio_alive || fail "fio failed after systemctl restart"

    pid=$new
    t=$(uptime_s)
    must timeout 120 systemctl stop tcmu-runner > /dev/null
    [ "$(systemctl is-active tcmu-runner)" = inactive ] || fail "tcmu-runner did not stop"
    sleep 2
    must timeout 120 systemctl start tcmu-runner > /dev/null
    pid_changed_from "$pid" || fail "systemctl start left MainPID $(main_pid) (was $pid)"
    new=$(main_pid)
    assert_serves "$new" f0
    say "systemctl stop, 2 s, start: MainPID $pid -> $new in $(elapsed "$t") s"
    sleep 5

    fio_loop_check reload
    [ "$(prop NRestarts)" = "$n0" ] || fail "systemd restarted the service $(($(prop NRestarts) - n0)) time(s) on its own"
    dmesg_clean "reload, restart, stop and start"
    zc_holds_its_data "after reload, restart, stop and start"
    say "fio verify on $dev through it all: $FIO_RUNS runs, no errors, longest completion $FIO_MAX_MS ms; no hung task"
}

# (4) kill -9 of the main process under fio verify: systemd restarts it
# (Restart=on-failure, NRestarts + 1), the new daemon recovers both
# devices, fio reports no error.
sigkill() {
    local dev pid new t n0
    [ "$(prop Restart)" = on-failure ] || fail "the unit's Restart= is $(prop Restart), not on-failure"
    dev=$(lun_dev "$F0_NAA") || exit 1
    n0=$(prop NRestarts)
    dmesg_mark
    fio_loop_start sigkill "$dev"
    sleep 5
    pid=$(main_pid)
    t=$(uptime_s)
    kill -KILL "$pid" || fail "cannot kill MainPID $pid"
    wait_for 60 "systemd did not restart tcmu-runner after kill -9 of $pid" pid_changed_from "$pid"
    new=$(main_pid)
    [ "$(prop NRestarts)" = $((n0 + 1)) ] || fail "NRestarts is $(prop NRestarts), expected $((n0 + 1))"
    journalctl -b -u tcmu-runner --no-pager -o cat | grep -q 'Main process exited, code=killed, status=9/KILL' \
        || fail "systemd's journal does not record the SIGKILL"
    assert_ours "$new"
    wait_for 30 "the restarted daemon does not serve f0" serves "$new" f0
    assert_serves "$new" zc
    say "kill -9 $pid: systemd restarted tcmu-runner as $new in $(elapsed "$t") s; f0 and zc recovered"
    sleep 5
    fio_loop_check sigkill
    dmesg_clean "kill -9"
    zc_holds_its_data "after kill -9"
    say "fio verify on $dev: $FIO_RUNS runs, no errors, longest completion $FIO_MAX_MS ms; no hung task"
}

# (5, first half) The configuration as it is now (both LUNs, a fresh MiB
# on f0 past what fio writes) saved with targetcli, the service enabled,
# then the reboot, by exit status 100.
reboot_saved() {
    local dev
    [ "$(systemctl is-enabled tcmu-runner)" = enabled ] || fail "tcmu-runner.service is not enabled"
    [ "$(systemctl is-enabled rtslib-fb-targetctl)" = enabled ] || fail "rtslib-fb-targetctl.service is not enabled"
    dev=$(lun_dev "$F0_NAA") || exit 1
    head -c 1M /dev/urandom > "$WORK/pattern-f0-80"
    write_pattern "$dev" "$WORK/pattern-f0-80" 80
    must targetcli saveconfig > /dev/null
    grep -q "$F0_FILE" /etc/rtslib-fb-target/saveconfig.json || fail "saveconfig.json does not hold f0"
    grep -q "$ZC_FILE" /etc/rtslib-fb-target/saveconfig.json || fail "saveconfig.json does not hold zc"
    date +%s > "$WORK/reboot-at"
    touch "$REBOOTED"
    sync
    say "configuration saved (zc, f0); rebooting"
    exit 100
}

# (5, second half) After the reboot: the system is running; the saved
# configuration was restored by rtslib-fb-targetctl at boot and our
# daemon, started by systemd, serves both LUNs (whichever came first: the
# daemon finds devices that exist when it starts, and answers those made
# after); their data reads back, f0 takes verified writes, the shutdown and
# the boot logged no hung task and no I/O error.
restored() {
    local state took pid dev first stuck
    state=$(systemctl is-system-running --wait 2>&1)
    if [ "$state" != running ]; then
        systemctl --no-pager --failed
        fail "the system is $state after the reboot, not running"
    fi
    took=$(($(date +%s) - $(cat "$WORK/reboot-at")))
    say "reboot: running again $took s after the script asked; $(systemd-analyze time | head -n 1)"
    # The shutdown (the previous boot's end, in the persistent journal)
    # waited for no unit's stop timeout and killed nothing.
    journalctl -b -1 -o cat --no-pager > "$WORK/journal-previous-boot.txt" 2>&1 \
        || fail "no journal of the boot before the reboot: $(head -n 3 "$WORK/journal-previous-boot.txt")"
    grep -q 'System is rebooting' "$WORK/journal-previous-boot.txt" \
        || fail "the previous boot's journal does not reach the reboot"
    stuck='Stopping timed out|stop-sigterm.* timed out|Job .* timed out|with signal SIGKILL'
    ! grep -Eq "$stuck" "$WORK/journal-previous-boot.txt" \
        || fail "the shutdown waited for a timeout or killed: $(grep -E "$stuck" "$WORK/journal-previous-boot.txt" | head -n 3)"
    # Sanity bound only: a slow machine boots slowly.
    [ "$took" -lt 300 ] || fail "the reboot took $took s"
    [ "$(systemctl show -p Result --value rtslib-fb-targetctl)" = success ] \
        || fail "rtslib-fb-targetctl did not restore the configuration: $(journalctl -b -u rtslib-fb-targetctl -o cat --no-pager | tail -n 5)"
    ! journalctl -b -u rtslib-fb-targetctl -o cat --no-pager | grep -Eiq 'error|fail|could not' \
        || fail "targetctl restore reported: $(journalctl -b -u rtslib-fb-targetctl -o cat --no-pager | grep -Ei 'error|fail|could not' | head -n 3)"
    is_active || fail "tcmu-runner is not active after the reboot"
    pid=$(main_pid)
    assert_ours "$pid"
    wait_for 30 "our daemon does not serve the restored zc" serves "$pid" zc
    wait_for 30 "our daemon does not serve the restored f0" serves "$pid" f0
    # Which came first at this boot, for the report.
    first=$(journalctl -b -u tcmu-runner -o cat --no-pager | grep -Eo '(zc|f0): (recovered|added)' | head -n 2 | tr '\n' ' ')
    say "after the boot ours (MainPID $pid) serves zc and f0 ($first)"
    zc_holds_its_data "after the reboot"
    dev=$(lun_dev "$F0_NAA") || exit 1
    assert_pattern "$dev" "$WORK/pattern-f0-80" 80 "f0 after the reboot"
    DMESG_MARK=0
    fio_loop_start restored "$dev"
    sleep 3
    fio_loop_check restored
    dmesg_clean "the boot after the reboot"
    say "restored LUNs: data read back, fio verify on $dev clean ($FIO_RUNS run), no hung task since the boot"
}

# (6) apt-get purge, the LUNs removed first (targetcli clearconfig): the
# service stops and is gone, every file of the package is removed, the
# conffiles (and dpkg's .dpkg-dist) and the log file too, the enablement
# links; D-Bus has no TCMU service to activate; a user: backstore made
# through configfs has no daemon (its enable and removal do not hang).
purge() {
    local pid files f left t rc hba=$CFS/core/user_78
    pid=$(main_pid)
    must targetcli clearconfig confirm=True > /dev/null
    files=$(dpkg-query -L tcmu-runner)
    t=$(uptime_s)
    DEBIAN_FRONTEND=noninteractive apt-get purge -q -y tcmu-runner < /dev/null > "$WORK/apt-purge.txt" 2>&1 \
        || { tail -n 30 "$WORK/apt-purge.txt"; fail "apt-get purge tcmu-runner failed"; }
    say "apt-get purge tcmu-runner: $(elapsed "$t") s"
    case "$(dpkg-query -W -f '${db:Status-Abbrev}' tcmu-runner 2>/dev/null)" in
        "" | "un " | "pn ") ;;
        *) fail "tcmu-runner is '$(dpkg-query -W -f '${db:Status-Abbrev}' tcmu-runner)' after the purge" ;;
    esac
    [ ! -e "/proc/$pid" ] || fail "the daemon (pid $pid) still runs after the purge"
    [ "$(prop LoadState)" = not-found ] || fail "tcmu-runner.service is $(prop LoadState) after the purge"
    left=
    # Files (the package's own, what dpkg and deb-systemd-helper made for
    # it, the daemon's log), then folders that only it had.
    for f in $files /etc/tcmu/tcmu.conf.dpkg-dist \
        /etc/systemd/system/multi-user.target.wants/tcmu-runner.service \
        /var/lib/systemd/deb-systemd-helper-enabled/tcmu-runner.service.dsh-also \
        /var/log/tcmu-runner.log; do
        # (A link counts, unless it leads to a folder: /lib is merged /usr's.)
        if [ -f "$f" ] || { [ -L "$f" ] && [ ! -d "$f" ]; }; then left="$left $f"; fi
    done
    for f in /etc/tcmu /usr/share/doc/tcmu-runner /run/tcmu-runner; do
        if [ -e "$f" ]; then left="$left $f"; fi
    done
    [ -z "$left" ] || fail "left after the purge:$left"
    # The single-instance lock file stays (removing a flock'ed file on exit
    # races with a starting daemon); /run is a tmpfs, gone at the next boot.
    if [ -e /run/tcmu-runner.lock ]; then say "left on /run: /run/tcmu-runner.lock (the lock file)"; fi
    say "purged: no process, no unit, none of its $(echo "$files" | wc -l) paths, conffiles, log or links left"

    rc=0
    dbus-send --system --print-reply --dest=org.kernel.TCMUService1 /org/kernel/TCMUService1 \
        org.freedesktop.DBus.Peer.Ping > "$WORK/ping.txt" 2>&1 || rc=$?
    [ "$rc" -ne 0 ] || fail "org.kernel.TCMUService1 still answers after the purge"
    grep -q ServiceUnknown "$WORK/ping.txt" || fail "D-Bus did not say ServiceUnknown: $(cat "$WORK/ping.txt")"
    ! targetcli ls /backstores 2>&1 | grep -q user: || fail "targetcli still lists user: backstores"

    # The kernel still offers user backstores; with no daemon it does not
    # wait for one.
    t=$(uptime_s)
    mkdir -p "$hba/gone" || fail "cannot create a user backstore in configfs"
    echo "dev_size=1048576" > "$hba/gone/control"
    echo "dev_config=file//var/tmp/gone.img" > "$hba/gone/control"
    rc=0
    bounded 20 sh -c "echo 1 > $hba/gone/enable" 2> /dev/null || rc=$?
    [ "$rc" -ne 124 ] || fail "enabling a user backstore with no daemon hung"
    bounded 20 rmdir "$hba/gone" "$hba" || fail "removing a daemon-less user backstore failed or hung"
    say "a user:file backstore through configfs: enable exit $rc, removed, $(elapsed "$t") s (no daemon, nothing hung)"
}

if [ ! -e "$REBOOTED" ]; then
    step boot
    step c_package
    step upgrade
    step dbus
    step journal_priorities
    step reload
    step sigkill
    step reboot_saved
fi
step restored
step purge
say "PASS in $(($(date +%s) - $(cat "$WORK/started"))) s of test, the reboot included (guest uptime $(uptime_s) s)"
