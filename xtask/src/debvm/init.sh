#!/bin/busybox sh
# PID 1 of the Debian test VM's initramfs (built by `cargo xtask debvm-test`).
#
# Debian's kernel has virtio-blk and ext4 as modules: load them (the list,
# dependencies first, is /modules.list), mount the root file system named by
# `root=` (default /dev/vda) read-write and hand over to its systemd with
# switch_root. Any failure is printed and powers the VM off: the host then
# finds no result and fails the run with the console log.

export PATH=/bin:/sbin
/bin/busybox --install -s /bin

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec < /dev/console > /dev/console 2>&1

fatal() {
    echo "xtask-debvm-initramfs: FATAL: $*"
    echo o > /proc/sysrq-trigger
    sleep 30
}

# A module the CPU model cannot use (crc32c-intel without SSE 4.2) may
# refuse to load; the mount below says whether what is left suffices.
while read -r mod; do
    insmod "/lib/modules/$mod" || echo "xtask-debvm-initramfs: warning: insmod $mod failed"
done < /modules.list

root=/dev/vda
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        root=*) root=${arg#root=} ;;
    esac
done

i=0
while [ ! -b "$root" ]; do
    i=$((i + 1))
    [ $i -gt 300 ] && fatal "$root did not appear within 30 s"
    sleep 0.1
done
mount -t ext4 -o rw "$root" /newroot || fatal "cannot mount $root (ext4)"
# /sbin/init is an absolute symlink, meaningful only inside the new root.
chroot /newroot /usr/bin/test -x /sbin/init || fatal "$root has no /sbin/init"

mount --move /dev /newroot/dev
mount --move /proc /newroot/proc
mount --move /sys /newroot/sys
exec switch_root /newroot /sbin/init
fatal "switch_root failed"
