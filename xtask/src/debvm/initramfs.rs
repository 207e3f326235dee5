//! The Debian test VM's initramfs: static busybox with virtio-blk and ext4
//! (modules in Debian's kernel), mounting `/dev/vda` and handing over to
//! systemd (see `init.sh`). Built by the busybox VM's builder, cached as
//! `target/debvm/initrd.gz`.

use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::setup::Kernel;
use crate::vm::initramfs::{self, Spec};

/// The init script.
const INIT: &str = include_str!("init.sh");

/// Modules to load before the root can be mounted (with their
/// dependencies: ext4's soft dependency crc32c among them).
const MODULES: &[&str] = &["virtio_pci", "virtio_blk", "ext4"];

/// Returns the path of an up-to-date initramfs under `dir`.
pub fn ensure(dir: &Path, kernel: &Kernel) -> Result<PathBuf> {
    initramfs::build(&Spec {
        dir,
        name: "initrd",
        init: INIT,
        modules: MODULES,
        kernel,
    })
}
