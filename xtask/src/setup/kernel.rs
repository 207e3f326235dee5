//! The guest kernel: Debian's `linux-image-<version>-amd64`, unpacked under
//! `target/vm/kernel/` with its modules indexed by `depmod -b`.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

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
    /// What QEMU boots: an uncompressed `vmlinux` (PVH entry) when one could
    /// be made, which saves the ~5 s a TCG guest spends decompressing the
    /// bzImage; the bzImage otherwise.
    pub boot_image: PathBuf,
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
    let mut kernel = Kernel {
        vmlinuz: dir.join(format!("boot/vmlinuz-{version}")),
        boot_image: PathBuf::new(),
        modules: dir.join(format!("lib/modules/{version}")),
        initrd: PathBuf::new(),
        version,
    };
    let cached = fs::read_to_string(&stamp).unwrap_or_default();
    if cached.trim() == package
        && kernel.vmlinuz.is_file()
        && kernel.modules.join("modules.dep").is_file()
    {
        kernel.boot_image = boot_image(&dir, &kernel)?;
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
    kernel.boot_image = boot_image(&dir, &kernel)?;
    Ok(kernel)
}

/// Returns the image to boot: `<dir>/vmlinux` (made once from the bzImage
/// when the kernel has a PVH entry point), or the bzImage itself.
fn boot_image(dir: &Path, kernel: &Kernel) -> Result<PathBuf> {
    let vmlinux = dir.join("vmlinux");
    if vmlinux.is_file() {
        return Ok(vmlinux);
    }
    let config = dir.join(format!("boot/config-{}", kernel.version));
    let pvh = fs::read_to_string(&config)
        .map(|c| c.lines().any(|l| l == "CONFIG_PVH=y"))
        .unwrap_or(false);
    if !pvh {
        return Ok(kernel.vmlinuz.clone());
    }
    let bz = fs::read(&kernel.vmlinuz)
        .with_context(|| format!("cannot read {}", kernel.vmlinuz.display()))?;
    match decompress_vmlinux(&bz) {
        Some(elf) => {
            let tmp = dir.join("vmlinux.tmp");
            fs::write(&tmp, elf).with_context(|| format!("cannot write {}", tmp.display()))?;
            fs::rename(&tmp, &vmlinux)
                .with_context(|| format!("cannot write {}", vmlinux.display()))?;
            Ok(vmlinux)
        }
        None => {
            eprintln!(
                "xtask: note: could not unpack vmlinux from the bzImage; booting the bzImage"
            );
            Ok(kernel.vmlinuz.clone())
        }
    }
}

/// Finds the compressed kernel inside a bzImage (xz, zstd or gzip payload)
/// and decompresses it, returning the ELF `vmlinux` if one comes out.
fn decompress_vmlinux(bz: &[u8]) -> Option<Vec<u8>> {
    let formats: [(&[u8], &str); 3] = [
        (b"\xfd7zXZ\x00", "xz"),
        (b"\x28\xb5\x2f\xfd", "zstd"),
        (b"\x1f\x8b\x08", "gzip"),
    ];
    for (magic, tool) in formats {
        let mut from = 0;
        while let Some(pos) = find(&bz[from..], magic).map(|p| p + from) {
            from = pos + 1;
            // The payload is followed by other data: the tool complains
            // about it, so its exit status is ignored and the output judged
            // by its ELF header.
            if let Some(out) = run_decompressor(tool, &bz[pos..]) {
                if out.len() > 1 << 20 && out.starts_with(b"\x7fELF") {
                    return Some(out);
                }
            }
        }
    }
    None
}

/// Runs `TOOL -dc` with `input` on stdin and returns whatever it printed.
fn run_decompressor(tool: &str, input: &[u8]) -> Option<Vec<u8>> {
    let mut child = Command::new(tool)
        .arg("-dc")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let mut stdin = child.stdin.take()?;
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        // The tool may stop reading at the end of its stream: ignore EPIPE.
        stdin.write_all(&input).ok();
    });
    let out = child.wait_with_output().ok()?;
    writer.join().ok()?;
    Some(out.stdout)
}

/// Position of `needle` in `hay`.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
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
