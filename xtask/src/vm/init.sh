#!/bin/busybox sh
# PID 1 of the tcmu-rs test VM (busybox initramfs built by `cargo xtask`).
#
# Loads the virtio/9p modules, mounts the host's root filesystem (9p tag
# "hostroot") at /newroot, prepares it (proc, sys, dev, tmpfs on /run,
# kernel modules at /lib/modules/@KVER@), then runs the script named
# by `xt.script=` on the kernel command line inside a chroot, with the
# variables of the file named by `xt.env=`. The script's exit status goes to
# `<xt.out>/result` on the host, then the VM powers off. The host treats a
# missing result file as a failure.
#
# Placeholders filled in by xtask: @KVER@ (kernel release), @MODDIR@ (the
# host folder holding lib/modules/@KVER@).

export PATH=/bin:/sbin
/bin/busybox --install -s /bin

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec < /dev/console > /dev/console 2>&1
echo "XTASK-GUEST-UP kernel $(uname -r)"

# Power off at once; the host reads the result file (or its absence).
poweroff_now() {
    sync
    echo o > /proc/sysrq-trigger
    sleep 30
}

die() {
    echo "xtask-init: FATAL: $*"
    poweroff_now
}

SCRIPT=
ENVFILE=
OUT=
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        xt.script=*) SCRIPT=${arg#xt.script=} ;;
        xt.env=*) ENVFILE=${arg#xt.env=} ;;
        xt.out=*) OUT=${arg#xt.out=} ;;
    esac
done
[ -n "$SCRIPT" ] && [ -n "$OUT" ] || die "xt.script= or xt.out= missing from the kernel command line"

# Drivers for the 9p share, in dependency order (built into /modules.list).
while read -r mod; do
    insmod "/lib/modules/$mod" || die "insmod $mod failed"
done < /modules.list

# cache=loose: the guest keeps what it reads in its page cache, so starting
# a program (bash, fio, python, our 60 MB daemon) no longer asks the host
# for every page and every lookup. Measured under TCG against cache=mmap:
# targetcli 12.7 s -> 3.1 s, modprobe of the six LIO modules 8.7 s -> 1.7 s,
# daemon start 3.4 s -> 0.6 s; the whole suite 1757 s -> 1278 s. It is safe
# here because nothing on the host changes these files while the VM runs,
# and what the guest writes to the host (results, logs) reaches it through
# the sync before power-off.
R=/newroot
mkdir -p $R
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144,cache=loose hostroot $R \
    || die "cannot mount the host's root over 9p"

# Kernel modules where kmod and libkmod look for them, without touching the
# host: an overlay with a RAM upper layer over /usr/lib, the modules bound in.
mkdir -p /ovl && mount -t tmpfs -o mode=755 tmpfs /ovl && mkdir -p /ovl/upper /ovl/work
mount -t overlay overlay -o lowerdir=$R/usr/lib,upperdir=/ovl/upper,workdir=/ovl/work $R/usr/lib \
    || die "cannot overlay /usr/lib"
mkdir -p $R/usr/lib/modules/@KVER@
mount --bind "$R@MODDIR@" $R/usr/lib/modules/@KVER@ || die "cannot bind the kernel modules"

# Pseudo filesystems, and RAM where tests may write (the host root is shared
# read-write: nothing the tests write outside /run, /dev should land). /tmp
# stays the host's: a checkout (CI's, say) may live there.
mount -t proc proc $R/proc
mount -t sysfs sysfs $R/sys
mount -t devtmpfs devtmpfs $R/dev
mkdir -p $R/dev/pts $R/dev/shm
mount -t devpts devpts $R/dev/pts
mount -t tmpfs tmpfs $R/dev/shm
ln -sf /proc/self/fd $R/dev/fd
ln -sf /proc/self/fd/0 $R/dev/stdin
ln -sf /proc/self/fd/1 $R/dev/stdout
ln -sf /proc/self/fd/2 $R/dev/stderr
mount -t tmpfs -o mode=755 tmpfs $R/run

# LIO writes PR/ALUA metadata from kernel threads rooted here, not in $R.
mkdir -p /var/target/pr /var/target/alua

# The kernel's request_module runs in this root: chroot to the real modprobe.
printf '#!/bin/sh\nexec chroot %s /sbin/modprobe "$@"\n' $R > /sbin/xt-modprobe
chmod 755 /sbin/xt-modprobe
echo /sbin/xt-modprobe > /proc/sys/kernel/modprobe

ip link set lo up
hostname tcmu-vm

echo "XTASK-GUEST-RUN $SCRIPT"
chroot $R /usr/bin/env -i \
    HOME=/root TERM=linux LANG=C.UTF-8 \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    XT_ENV="$ENVFILE" XT_SCRIPT="$SCRIPT" XT_OUT="$OUT" \
    /bin/bash -c '
        if [ -n "$XT_ENV" ]; then set -a; . "$XT_ENV"; set +a; fi
        cd "${XT_WORKDIR:-/}"
        exec /bin/bash "$XT_SCRIPT"
    ' < /dev/console > /dev/console 2>&1
rc=$?
echo "status=$rc" > "$R$OUT/result" || echo "xtask-init: cannot write the result file"
sync
echo "XTASK-GUEST-DONE status=$rc"
poweroff_now
