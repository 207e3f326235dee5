//! `cargo xtask setup`: make a fresh Debian 12 host ready to boot the test VM.
//!
//! Idempotent and cached: packages are installed only when missing, the
//! kernel is downloaded only when `linux-image-amd64` points at a package
//! not yet unpacked, and the initramfs is rebuilt only when its inputs
//! changed.

mod apt;
mod kernel;

pub use apt::{debian_mirror, download, ensure_deb_src_source, Apt};
pub use kernel::Kernel;

use anyhow::Result;

use crate::paths::Paths;
use crate::vm;

/// Host packages the VM and the guest tests need (the guest runs the host's
/// binaries over 9p). `qemu-system-x86` comes from bookworm-backports.
///
/// `open-iscsi` (iscsid, iscsiadm: the kernel initiator's tools) and
/// `libiscsi-bin` (iscsi-inq, iscsi-ls, iscsi-test-cu: a user-space
/// initiator) serve the iSCSI test. open-iscsi depends on udev, and its
/// postinst enables `iscsid.socket` on a systemd host; that is harmless: with
/// no node records the host's iscsid does nothing, and the guest starts its
/// own iscsid with a RAM `/etc/iscsi` (see `tests/vm/lib.sh`).
pub const PACKAGES: &[&str] = &[
    "busybox-static",
    "kmod",
    "cpio",
    "fio",
    "sg3-utils",
    "e2fsprogs",
    "util-linux",
    // t-46-tmr hangs a LUN's backend by suspending a device-mapper device.
    "dmsetup",
    "open-iscsi",
    "libiscsi-bin",
    "targetcli-fb",
    "dbus",
    // t-58-ceph-iscsi asks rbd-target-api (ceph-iscsi's REST API) for its
    // configuration object.
    "curl",
    // qemu-img: makes and checks the qcow handler's images (unit and VM tests).
    "qemu-utils",
    // mkfs.f2fs: a file system on the zbc handler's host-managed disks.
    "f2fs-tools",
    // The fbo handler's optical media: ISO 9660 images (xorriso), UDF on a
    // writable medium (mkudffs, udfinfo), eject and load (eject).
    "xorriso",
    "udftools",
    "eject",
    // The glfs handler's tests: glusterd and a brick (and libgfapi0, which
    // the daemon loads at run time).
    "glusterfs-server",
    // The rbd handler: librbd to build it, a Ceph cluster to test it.
    "librbd-dev",
    "librados-dev",
    "ceph-mon",
    "ceph-osd",
    "ceph-mgr",
    "ceph-common",
];

/// What building the daemon (the rbd handler links librbd and librados)
/// and the rbd handler's host tests (a throwaway cluster: mon, memstore
/// OSD, mgr for the service map; the rbd and ceph tools) need.
pub const RBD_PACKAGES: &[&str] = &[
    "librbd-dev",
    "librados-dev",
    "ceph-mon",
    "ceph-osd",
    "ceph-mgr",
    "ceph-common",
];

/// What the glfs handler's host tests need: glusterd, the gluster CLI, the
/// brick daemon and libgfapi (the handler links nothing at build time).
pub const GLFS_PACKAGES: &[&str] = &["glusterfs-server", "libgfapi0"];

/// The QEMU package, installed with `-t bookworm-backports`.
pub const QEMU_PACKAGE: &str = "qemu-system-x86";

/// Runs the whole set-up and returns the kernel and initramfs to boot.
pub fn run(paths: &Paths) -> Result<Kernel> {
    let mut apt = apt::Apt::default();
    apt.ensure_packages()?;
    let mut kernel = kernel::ensure(paths, &mut apt)?;
    kernel.initrd = vm::initramfs::ensure(paths, &kernel)?;
    eprintln!(
        "xtask: VM ready: kernel {} ({}), initramfs {}",
        kernel.version,
        kernel.boot_image.display(),
        kernel.initrd.display()
    );
    Ok(kernel)
}
