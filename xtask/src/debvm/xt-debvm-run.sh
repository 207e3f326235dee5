#!/bin/bash
# Installed as /usr/local/sbin/xt-debvm-run in the Debian test VM's image and
# started by xt-debvm.service once multi-user.target is reached.
#
# The kernel command line names `xt.script=` (the script to run),
# `xt.repo=` (the host's checkout, shared read-only over 9p with tag `repo`
# and mounted at the same path) and `xt.out=` (a host folder shared
# read-write with tag `out`, mounted at the same path, under the checkout).
# The script's environment comes from `<xt.out>/guest.env`. Its exit status
# goes to `<xt.out>/result` (`status=N`) and to the console
# (`XTASK-GUEST-DONE status=N`), the journal of the boot to
# `<xt.out>/journal.txt`; then the VM powers off. The host fails the run
# when no result appears.
#
# Exit status 100 asks for a reboot: no result is written, the VM reboots
# (QEMU keeps the disk's copy-on-write overlay across it) and this runs
# the script again after the next boot, which tells the phases apart by
# a file of its own. A boot nobody asked for (a panic, a reboot from
# within a test) powers off with no result: the run fails.

set -u

echo "XTASK-GUEST-UP multi-user.target reached after $(cut -d' ' -f1 /proc/uptime) s of guest uptime"

poweroff_now() {
    sync
    echo o > /proc/sysrq-trigger
    sleep 60
}

fatal() {
    echo "xt-debvm: FATAL: $*"
    poweroff_now
    exit 1
}

SCRIPT= REPO= OUT=
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        xt.script=*) SCRIPT=${arg#xt.script=} ;;
        xt.repo=*) REPO=${arg#xt.repo=} ;;
        xt.out=*) OUT=${arg#xt.out=} ;;
    esac
done
[ -n "$SCRIPT" ] && [ -n "$REPO" ] && [ -n "$OUT" ] \
    || fatal "xt.script=, xt.repo= or xt.out= missing from the kernel command line"

# cache=loose on the read-only checkout: nothing changes it during the run,
# and programs started from it are read once.
mkdir -p "$REPO" || fatal "cannot create $REPO"
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144,cache=loose,ro repo "$REPO" \
    || fatal "cannot mount the host's checkout (9p tag repo) at $REPO"
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 out "$OUT" \
    || fatal "cannot mount the host's output folder (9p tag out) at $OUT"
[ -r "$OUT/guest.env" ] || fatal "$OUT/guest.env is missing"

# Boots so far and reboots asked for, on the VM's disk.
STATE=/var/lib/xt-debvm
mkdir -p "$STATE" || fatal "cannot create $STATE"
boots=$(($(cat "$STATE/boots" 2>/dev/null || echo 0) + 1))
asked=$(cat "$STATE/reboots" 2>/dev/null || echo 0)
echo "$boots" > "$STATE/boots"
[ "$boots" -le $((asked + 1)) ] \
    || fatal "boot $boots, but the script asked for $asked reboot(s): the VM rebooted on its own"

echo "XTASK-GUEST-RUN $SCRIPT (boot $boots)"
(
    set -a
    . "$OUT/guest.env"
    set +a
    cd "${XT_WORKDIR:-/}" || exit 125
    exec /bin/bash "$SCRIPT"
) < /dev/null
rc=$?
if [ "$rc" -eq 100 ]; then
    echo $((asked + 1)) > "$STATE/reboots"
    sync
    echo "XTASK-GUEST-REBOOT the script asked for a reboot"
    systemctl reboot || fatal "systemctl reboot failed"
    exit 0
fi
journalctl --no-pager -o short-monotonic > "$OUT/journal.txt" 2>&1
echo "status=$rc" > "$OUT/result" || echo "xt-debvm: cannot write the result file"
sync
echo "XTASK-GUEST-DONE status=$rc"
poweroff_now
