#!/bin/bash
# The Debian VM's smoke test (`cargo xtask debvm-test`): the shape of the
# package's life on a real Debian 12, before the full tests of issue 24.
#
# 1. systemd is PID 1 and the boot reached multi-user.target (with
#    `systemd-analyze`'s times), D-Bus runs;
# 2. Debian's C tcmu-runner package runs as the tcmu-runner service;
# 3. `apt-get install $TCMU_DEB` (ours, from `cargo xtask deb`) replaces it:
#    the package's version is ours, the service runs our binary, and it is
#    active, which for its Type=notify means systemd got READY=1;
# 4. `targetcli ls /backstores` lists our handlers (user:file and user:ram,
#    which the C package lacks) through our D-Bus service, and creates and
#    deletes a user:file backstore (our CheckConfig answering);
# 5. with the service stopped, `targetcli ls /backstores` starts it through
#    D-Bus activation.
#
# Runs as root in the guest; files under /var/tmp (the VM's disk, thrown
# away at the end of the run). Timings go to $XT_OUT/smoke.txt.

set -u

T0=$(cut -d' ' -f1 /proc/uptime)
REPORT=$XT_OUT/smoke.txt
: > "$REPORT"

say() { echo "smoke: $*"; echo "$*" >> "$REPORT"; }
fail() {
    echo "smoke: FAIL: $*"
    echo "FAIL: $*" >> "$REPORT"
    systemctl --no-pager status tcmu-runner 2>&1 | tail -n 30
    exit 1
}
uptime_s() { cut -d' ' -f1 /proc/uptime; }
# Runs "$@", failing the test with its output when it fails.
must() {
    local out
    out=$("$@" 2>&1) || fail "\`$*\` failed: $out"
    printf '%s\n' "$out"
}

# 1. systemd and the boot.
pid1=$(ps -p 1 -o comm=)
[ "$pid1" = systemd ] || fail "PID 1 is $pid1, not systemd"
state=$(systemctl is-system-running --wait 2>&1)
if [ "$state" != running ]; then
    systemctl --no-pager --failed
    fail "the system is $state after boot, not running"
fi
say "PID 1: systemd $(systemctl --version | head -n 1 | cut -d' ' -f2); system $state at guest uptime $(uptime_s) s"
say "boot: $(systemd-analyze time | head -n 1)"
say "$(systemd-analyze time | sed -n 2p | sed 's/^ *//')"
systemd-analyze blame --no-pager | head -n 8 | sed 's/^/  blame: /' | tee -a "$REPORT"
[ "$(systemctl is-active dbus)" = active ] || fail "dbus.service is not active"
say "dbus: active"

# 2. Debian's C package, as installed by debootstrap.
c_version=$(dpkg-query -W -f '${Version}' tcmu-runner)
case "$c_version" in
    *+rs*) fail "tcmu-runner $c_version is installed already: the image should hold Debian's" ;;
esac
[ "$(systemctl is-active tcmu-runner)" = active ] \
    || fail "Debian's tcmu-runner $c_version is not active after boot"
c_pid=$(systemctl show -p MainPID --value tcmu-runner)
say "Debian's tcmu-runner $c_version active, MainPID $c_pid"

# 3. Our package over it.
[ -r "${TCMU_DEB:-}" ] || fail "no package at TCMU_DEB=${TCMU_DEB:-} (cargo xtask deb)"
t=$(uptime_s)
DEBIAN_FRONTEND=noninteractive apt-get install -q -y --no-install-recommends "$TCMU_DEB" < /dev/null \
    || fail "apt-get install $TCMU_DEB failed"
say "apt-get install $(basename "$TCMU_DEB"): $(awk -v a="$t" -v b="$(uptime_s)" 'BEGIN { printf "%.1f", b - a }') s"
version=$(dpkg-query -W -f '${Version}' tcmu-runner)
case "$version" in
    *+rs*) ;;
    *) fail "tcmu-runner is $version after the install, not ours" ;;
esac
# The postinst restarts the service (the C daemon knows no SIGUSR1); give
# it a moment to come back.
for _ in $(seq 1 60); do
    [ "$(systemctl is-active tcmu-runner)" = active ] && break
    sleep 0.5
done
show=$(systemctl show -p ActiveState,SubState,Type,MainPID,StatusText,NRestarts tcmu-runner)
echo "$show" | sed 's/^/  /' | tee -a "$REPORT"
value() { echo "$show" | sed -n "s/^$1=//p"; }
[ "$(value ActiveState)" = active ] || fail "tcmu-runner is $(value ActiveState) after the upgrade"
[ "$(value Type)" = notify ] || fail "tcmu-runner.service has Type=$(value Type), not notify"
pid=$(value MainPID)
[ "$pid" -gt 0 ] && [ "$pid" != "$c_pid" ] || fail "MainPID $pid: the C daemon ($c_pid) was not replaced"
exe=$(readlink "/proc/$pid/exe")
[ "$exe" = /usr/bin/tcmu-runner ] || fail "MainPID $pid runs $exe"
banner=$(must /usr/bin/tcmu-runner -V)
case "$banner" in
    *tcmu-rs*) ;;
    *) fail "/usr/bin/tcmu-runner -V says $banner, not tcmu-rs" ;;
esac
# Type=notify: systemd reports active only once READY=1 arrived, and the
# daemon sends its status with it ("serving N device(s)").
case "$(value StatusText)" in
    serving*) ;;
    *) fail "StatusText is '$(value StatusText)', not the daemon's READY status" ;;
esac
journalctl -b -u tcmu-runner --no-pager -o cat | grep -q '^Started tcmu-runner.service.*tcmu-rs' \
    || fail "the journal has no 'Started' line for our tcmu-runner.service"
say "ours: tcmu-runner $version, $banner, MainPID $pid, status '$(value StatusText)'"

# 4. targetcli through D-Bus (no configuration saved on exit: later
# scripts start from none).
must targetcli set global auto_save_on_exit=false > /dev/null
t=$(uptime_s)
ls_out=$(must targetcli ls /backstores)
echo "$ls_out" | sed 's/^/  /'
for h in user:file user:ram user:qcow; do
    echo "$ls_out" | grep -q -- "$h" || fail "targetcli ls /backstores does not list $h"
done
say "targetcli ls /backstores lists user:file, user:ram, user:qcow ($(awk -v a="$t" -v b="$(uptime_s)" 'BEGIN { printf "%.1f", b - a }') s)"
img=/var/tmp/smoke.img
must targetcli /backstores/user:file create name=smoke size=64M cfgstring="$img" > /dev/null
ls -d /sys/kernel/config/target/core/user_*/smoke > /dev/null 2>&1 \
    || fail "targetcli created no smoke backstore in configfs"
bad=$(targetcli /backstores/user:file create name=bad size=1M cfgstring=/nonexistent-dir/x 2>&1) \
    && fail "a user:file backstore under a missing folder was accepted: $bad"
echo "$bad" | grep -q 'cfgstring invalid: file handler' \
    || fail "a bad cfgstring was refused without our CheckConfig's message: $bad"
say "targetcli: user:file created; a bad cfgstring refused: $(echo "$bad" | grep 'cfgstring invalid' | head -n 1)"
must targetcli /backstores/user:file delete smoke > /dev/null
[ "$(systemctl is-active tcmu-runner)" = active ] || fail "tcmu-runner died during the targetcli checks"

# 5. D-Bus activation: with the service stopped, targetcli's first call
# starts it through systemd (SystemdService= in the activation file).
must systemctl stop tcmu-runner > /dev/null
[ "$(systemctl is-active tcmu-runner)" = inactive ] || fail "tcmu-runner did not stop"
t=$(uptime_s)
ls_out=$(must targetcli ls /backstores)
echo "$ls_out" | grep -q -- user:file || fail "targetcli did not list user:file after D-Bus activation"
[ "$(systemctl is-active tcmu-runner)" = active ] || fail "targetcli did not start tcmu-runner through D-Bus"
new_pid=$(systemctl show -p MainPID --value tcmu-runner)
[ "$new_pid" -gt 0 ] && [ "$new_pid" != "$pid" ] || fail "MainPID $new_pid after activation (was $pid)"
journalctl -b -u dbus --no-pager -o cat | grep -q "Activating via systemd: service name='org.kernel.TCMUService1'" \
    || fail "dbus-daemon's journal shows no activation of org.kernel.TCMUService1"
say "D-Bus activation: targetcli started tcmu-runner (MainPID $new_pid) and listed user:file in $(awk -v a="$t" -v b="$(uptime_s)" 'BEGIN { printf "%.1f", b - a }') s"

say "PASS in $(awk -v a="$T0" -v b="$(uptime_s)" 'BEGIN { printf "%.1f", b - a }') s of test (guest uptime $(uptime_s) s)"
