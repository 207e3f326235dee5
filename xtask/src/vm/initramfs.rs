//! The guest's initramfs: static busybox, the virtio/9p/overlay modules and
//! the `init.sh` template, packed as `target/vm/initrd.gz`.
//!
//! Rebuilt only when one of its inputs changed: the template, the kernel,
//! the module list or the busybox binary (their hash is kept in
//! `target/vm/initrd.stamp`).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::cmd;
use crate::hash::Fnv;
use crate::paths::Paths;
use crate::setup::Kernel;

/// The init script template (see its header for the placeholders).
const INIT_TEMPLATE: &str = include_str!("init.sh");

/// Modules the initramfs loads itself: virtio PCI transport, the 9p
/// filesystem over virtio, and overlayfs. Dependencies are resolved by
/// `modprobe --show-depends`.
const BOOT_MODULES: &[&str] = &["virtio_pci", "9pnet_virtio", "9p", "overlay"];

/// The static busybox from Debian's `busybox-static`.
const BUSYBOX: &str = "/bin/busybox";

/// Returns the path of an up-to-date initramfs, building it if needed.
pub fn ensure(paths: &Paths, kernel: &Kernel) -> Result<PathBuf> {
    let moddir = kernel
        .modules
        .to_str()
        .context("kernel module path is not UTF-8")?;
    let init = INIT_TEMPLATE
        .replace("@KVER@", &kernel.version)
        .replace("@MODDIR@", moddir);
    build(&Spec {
        dir: &paths.vm,
        name: "initrd",
        init: &init,
        modules: BOOT_MODULES,
        kernel,
    })
}

/// What goes into one busybox initramfs.
pub struct Spec<'a> {
    /// The folder the image (`<name>.gz`), its stamp and staging live in.
    pub dir: &'a Path,
    /// The image's base name (`initrd` gives `initrd.gz`).
    pub name: &'a str,
    /// The `/init` script, placeholders already filled in.
    pub init: &'a str,
    /// Modules to pack (dependencies added, in load order, listed in
    /// `/modules.list`).
    pub modules: &'a [&'a str],
    /// The kernel whose modules are packed.
    pub kernel: &'a Kernel,
}

/// Packs `spec` into `<dir>/<name>.gz` (static busybox, `/init`, the
/// modules) unless the stamp says the same inputs made the existing one.
pub fn build(spec: &Spec) -> Result<PathBuf> {
    let initrd = spec.dir.join(format!("{}.gz", spec.name));
    let stamp = spec.dir.join(format!("{}.stamp", spec.name));
    let modules = module_files(spec.kernel, spec.modules)?;
    let init = spec.init;
    let busybox = fs::read(BUSYBOX).with_context(|| format!("cannot read {BUSYBOX}"))?;

    let mut h = Fnv::new();
    h.update(init.as_bytes()).update(&busybox);
    for m in &modules {
        h.update(m.as_os_str().as_encoded_bytes());
    }
    let hash = h.hex();
    if initrd.is_file() && fs::read_to_string(&stamp).unwrap_or_default().trim() == hash {
        return Ok(initrd);
    }

    eprintln!("xtask: building {}", initrd.display());
    let staging = spec.dir.join(format!("{}.staging", spec.name));
    if staging.exists() {
        fs::remove_dir_all(&staging)
            .with_context(|| format!("cannot clear {}", staging.display()))?;
    }
    for d in [
        "bin",
        "sbin",
        "dev",
        "proc",
        "sys",
        "newroot",
        "lib/modules",
        "var",
        "tmp",
        "etc",
    ] {
        mkdir(&staging.join(d))?;
    }
    write_exec(&staging.join("bin/busybox"), &busybox)?;
    write_exec(&staging.join("init"), init.as_bytes())?;

    let mut list = String::new();
    for m in &modules {
        let name = m
            .file_name()
            .and_then(|n| n.to_str())
            .with_context(|| format!("odd module path {}", m.display()))?;
        let dest = staging
            .join("lib/modules")
            .join(name.trim_end_matches(".xz"));
        if name.ends_with(".xz") {
            let bytes = Command::new("xz")
                .arg("-dc")
                .arg(m)
                .output()
                .with_context(|| format!("cannot run xz on {}", m.display()))?;
            if !bytes.status.success() {
                bail!("xz -dc {} failed", m.display());
            }
            fs::write(&dest, bytes.stdout)
        } else {
            fs::copy(m, &dest).map(|_| ())
        }
        .with_context(|| format!("cannot copy module {}", m.display()))?;
        list.push_str(name.trim_end_matches(".xz"));
        list.push('\n');
    }
    fs::write(staging.join("modules.list"), list).context("cannot write modules.list")?;

    let tmp = spec.dir.join(format!("{}.gz.tmp", spec.name));
    let pipeline = format!(
        "find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet | gzip -6 > '{}'",
        tmp.display()
    );
    cmd::run(
        Command::new("sh")
            .args(["-c", &pipeline])
            .current_dir(&staging),
    )
    .context("packing the initramfs failed")?;
    fs::rename(&tmp, &initrd).with_context(|| format!("cannot write {}", initrd.display()))?;
    fs::write(&stamp, format!("{hash}\n"))
        .with_context(|| format!("cannot write {}", stamp.display()))?;
    fs::remove_dir_all(&staging).ok();
    Ok(initrd)
}

/// Lists the module files of `wanted`, dependencies first, as printed
/// by `modprobe --show-depends` against the unpacked kernel.
fn module_files(kernel: &Kernel, wanted: &[&str]) -> Result<Vec<PathBuf>> {
    // modules = <base>/lib/modules/<version>: modprobe wants <base>.
    let base = kernel
        .modules
        .parent()
        .and_then(Path::parent)
        .and_then(Path::parent)
        .context("odd kernel module path")?;
    let out = cmd::output(
        Command::new("modprobe")
            .arg("--show-depends")
            .arg("-d")
            .arg(base)
            .args(["-S", &kernel.version, "-a"])
            .args(wanted),
    )
    .context("cannot resolve the boot modules (is kmod installed?)")?;
    let mut files: Vec<PathBuf> = Vec::new();
    for line in out.lines() {
        // "insmod /path/mod.ko [params]" or "builtin name".
        if let Some(rest) = line.strip_prefix("insmod ") {
            let path = PathBuf::from(rest.split_whitespace().next().unwrap_or_default());
            if !files.contains(&path) {
                files.push(path);
            }
        }
    }
    if files.is_empty() {
        bail!("modprobe --show-depends listed no modules:\n{out}");
    }
    Ok(files)
}

/// `mkdir -p` with context.
fn mkdir(p: &Path) -> Result<()> {
    fs::create_dir_all(p).with_context(|| format!("cannot create {}", p.display()))
}

/// Writes an executable file (mode 0755).
fn write_exec(p: &Path, bytes: &[u8]) -> Result<()> {
    fs::write(p, bytes).with_context(|| format!("cannot write {}", p.display()))?;
    fs::set_permissions(p, fs::Permissions::from_mode(0o755))
        .with_context(|| format!("cannot chmod {}", p.display()))
}
