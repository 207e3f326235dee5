//! The guest kernel: Debian's `linux-image-<version>-amd64`, unpacked under
//! `target/vm/kernel/` with its modules indexed by `depmod -b`.

use std::fs;
use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};

use super::apt::{self, Apt};
use crate::cmd;
use crate::paths::Paths;

/// The metapackage whose dependency names the kernel to boot.
const META: &str = "linux-image-amd64";

/// A kernel ready to boot.
pub struct Kernel {
    /// Kernel release, e.g. `6.1.0-56-amd64`.
    pub version: String,
    /// The bzImage.
    pub vmlinuz: PathBuf,
    /// `lib/modules/<version>` inside the unpacked package.
    pub modules: PathBuf,
    /// The initramfs (filled in by `vm::initramfs::ensure`).
    pub initrd: PathBuf,
}

/// Makes sure the kernel that `linux-image-amd64` depends on is unpacked
/// and depmod'ed under `target/vm/kernel/`; downloads it only when the
/// unpacked one is a different package (or missing).
pub fn ensure(paths: &Paths, apt: &mut Apt) -> Result<Kernel> {
    let dir = paths.vm.join("kernel");
    let stamp = dir.join(".package");
    let package = match kernel_package() {
        Ok(p) => p,
        Err(first) => {
            // A fresh machine may have no package lists yet.
            apt.update()?;
            kernel_package().context(first)?
        }
    };
    let version = package
        .strip_prefix("linux-image-")
        .with_context(|| format!("unexpected kernel package name {package}"))?
        .to_owned();
    let kernel = Kernel {
        vmlinuz: dir.join(format!("boot/vmlinuz-{version}")),
        modules: dir.join(format!("lib/modules/{version}")),
        initrd: PathBuf::new(),
        version,
    };
    let cached = fs::read_to_string(&stamp).unwrap_or_default();
    if cached.trim() == package
        && kernel.vmlinuz.is_file()
        && kernel.modules.join("modules.dep").is_file()
    {
        return Ok(kernel);
    }

    eprintln!("xtask: fetching guest kernel {package}");
    let downloads = paths.vm.join("downloads");
    if downloads.exists() {
        fs::remove_dir_all(&downloads)
            .with_context(|| format!("cannot clear {}", downloads.display()))?;
    }
    if apt::download(&package, &downloads).is_err() {
        apt.update()?;
        apt::download(&package, &downloads)?;
    }
    let deb = fs::read_dir(&downloads)
        .with_context(|| format!("cannot list {}", downloads.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .with_context(|| format!("apt-get download left no .deb in {}", downloads.display()))?;

    if dir.exists() {
        fs::remove_dir_all(&dir).with_context(|| format!("cannot clear {}", dir.display()))?;
    }
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    cmd::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&dir))
        .context("unpacking the kernel package failed")?;
    if !kernel.vmlinuz.is_file() {
        bail!("{} holds no {}", deb.display(), kernel.vmlinuz.display());
    }
    cmd::run(
        Command::new("depmod")
            .arg("-b")
            .arg(&dir)
            .arg(&kernel.version),
    )
    .context("depmod failed")?;
    fs::write(&stamp, format!("{package}\n"))
        .with_context(|| format!("cannot write {}", stamp.display()))?;
    fs::remove_dir_all(&downloads).ok();
    Ok(kernel)
}

/// Asks apt which `linux-image-*` package `linux-image-amd64` depends on.
fn kernel_package() -> Result<String> {
    let out = cmd::output(Command::new("apt-cache").args(["depends", META]))?;
    out.lines()
        .filter_map(|l| l.trim().strip_prefix("Depends:"))
        .map(str::trim)
        .find(|p| p.starts_with("linux-image-") && *p != META)
        .map(str::to_owned)
        .with_context(|| format!("apt-cache depends {META} names no linux-image package:\n{out}"))
}
