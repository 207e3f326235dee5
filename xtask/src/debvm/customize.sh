#!/bin/sh
# Finishes the Debian test VM's root file system after debootstrap (run by
# `cargo xtask debvm-test` on the host, as root): `customize.sh ROOT`.
#
# xtask has already put in the kernel's modules, the script runner
# (/usr/local/sbin/xt-debvm-run) and its unit (xt-debvm.service). This
# enables that unit, boots to multi-user.target, and masks what would only
# slow a throwaway TCG guest down or wait on a console: gettys, first-boot
# prompts, periodic jobs. systemctl works offline in a chroot.
set -eu
R=$1

echo debvm > "$R/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\tdebvm\n' > "$R/etc/hosts"
printf '/dev/vda\t/\text4\trw,errors=remount-ro\t0\t0\n' > "$R/etc/fstab"
# The VM has no network: no resolver, no mirror to reach.
rm -f "$R/etc/resolv.conf"

chroot "$R" systemctl enable xt-debvm.service
chroot "$R" systemctl set-default multi-user.target
chroot "$R" systemctl mask \
    serial-getty@ttyS0.service getty@tty1.service console-getty.service \
    systemd-firstboot.service \
    apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer \
    e2scrub_all.timer e2scrub_reap.service fstrim.timer man-db.timer \
    systemd-timesyncd.service

chroot "$R" apt-get clean
rm -f "$R/var/log/"*.log
