//! The Debian test VM's disk: `target/debvm/root.img`, a raw ext4 image of
//! a debootstrapped bookworm root, built once and rebuilt only when the
//! recipe's hash (see `recipe.rs`) changes. Runs never write to it: QEMU
//! opens it with `snapshot=on`.
//!
//! Steps: `debootstrap --variant=minbase` with [`recipe::PACKAGES`] from
//! the machine's own Debian mirror (downloaded packages are kept in
//! `target/debvm/debs/` for the next build), the kernel's modules copied in,
//! the runner script and its unit written, `customize.sh` run, then
//! `mkfs.ext4 -d` packs the folder into the image without mounting
//! anything.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use super::recipe;
use crate::cmd;
use crate::setup::{self, Kernel};

/// Free space left in the image beyond what the root uses (apt, test files).
const HEADROOM_MIB: u64 = 1024;

/// Returns the path of an up-to-date image under `dir`, building it if
/// its stamp names another recipe.
pub fn ensure(dir: &Path, kernel: &Kernel) -> Result<PathBuf> {
    let image = dir.join("root.img");
    let stamp = dir.join("root.stamp");
    let hash = recipe::hash(&kernel.version);
    if image.is_file() && fs::read_to_string(&stamp).unwrap_or_default().trim() == hash {
        return Ok(image);
    }
    let start = Instant::now();
    eprintln!(
        "xtask: building the Debian test VM image {} (debootstrap {}; a few minutes)",
        image.display(),
        recipe::SUITE
    );
    setup::Apt::default().ensure(&["debootstrap", "e2fsprogs"])?;
    let root = dir.join("rootfs");
    clear(&root)?;
    debootstrap(dir, &root)?;
    install_modules(&root, kernel)?;
    write_file(
        &root.join("usr/local/sbin/xt-debvm-run"),
        recipe::RUNNER,
        0o755,
    )?;
    write_file(
        &root.join("etc/systemd/system/xt-debvm.service"),
        recipe::UNIT,
        0o644,
    )?;
    let customize = dir.join("customize.sh");
    write_file(&customize, recipe::CUSTOMIZE, 0o755)?;
    cmd::run(Command::new("sh").arg(&customize).arg(&root))
        .context("customizing the Debian root failed")?;

    let tmp = dir.join("root.img.tmp");
    make_ext4(&root, &tmp)?;
    fs::rename(&tmp, &image).with_context(|| format!("cannot write {}", image.display()))?;
    fs::write(&stamp, format!("{hash}\n"))
        .with_context(|| format!("cannot write {}", stamp.display()))?;
    clear(&root)?;
    eprintln!(
        "xtask: Debian test VM image built in {:.0} s",
        start.elapsed().as_secs_f64()
    );
    Ok(image)
}

/// `debootstrap` of [`recipe::SUITE`] with [`recipe::PACKAGES`] into `root`.
fn debootstrap(dir: &Path, root: &Path) -> Result<()> {
    let mirror = setup::debian_mirror()?;
    let debs = dir.join("debs");
    fs::create_dir_all(&debs).with_context(|| format!("cannot create {}", debs.display()))?;
    cmd::run(
        Command::new("debootstrap")
            .args(["--variant=minbase", "--merged-usr"])
            .arg(format!("--cache-dir={}", debs.display()))
            .arg(format!("--include={}", recipe::PACKAGES.join(",")))
            .arg(recipe::SUITE)
            .arg(root)
            .arg(&mirror),
    )
    .with_context(|| {
        format!(
            "debootstrap failed (its log: {}/debootstrap/debootstrap.log)",
            root.display()
        )
    })
}

/// Copies the kernel's `lib/modules/<version>` (already depmod'ed) into the
/// root, where kmod and udev look for it.
fn install_modules(root: &Path, kernel: &Kernel) -> Result<()> {
    let dest = root.join("usr/lib/modules");
    fs::create_dir_all(&dest).with_context(|| format!("cannot create {}", dest.display()))?;
    cmd::run(Command::new("cp").arg("-a").arg(&kernel.modules).arg(&dest))
        .context("copying the kernel modules into the Debian root failed")?;
    if !dest.join(&kernel.version).join("modules.dep").is_file() {
        bail!(
            "{} has no modules.dep after the copy",
            dest.join(&kernel.version).display()
        );
    }
    Ok(())
}

/// Packs `root` into a fresh ext4 image at `image`, sized to its contents
/// plus [`HEADROOM_MIB`] (sparse: unused blocks take no disk space).
fn make_ext4(root: &Path, image: &Path) -> Result<()> {
    let du = cmd::output(
        Command::new("du")
            .args(["-s", "-x", "--block-size=1M"])
            .arg(root),
    )?;
    let used: u64 = du
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("cannot read du's answer {du:?}"))?;
    let size_mib = used + used / 4 + HEADROOM_MIB;
    if image.exists() {
        fs::remove_file(image).with_context(|| format!("cannot remove {}", image.display()))?;
    }
    cmd::run(
        Command::new("mkfs.ext4")
            .args(["-q", "-F", "-L", "debvm-root", "-d"])
            .arg(root)
            .arg(image)
            .arg(format!("{size_mib}M")),
    )
    .context("mkfs.ext4 -d failed")
}

/// Writes `text` to `path` (parents created) with permissions `mode`.
fn write_file(path: &Path, text: &str, mode: u32) -> Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot chmod {}", path.display()))
}

/// Removes `dir` and everything in it, if it exists, after unmounting
/// whatever a failed debootstrap left mounted inside (`proc`, `sys`).
fn clear(dir: &Path) -> Result<()> {
    if dir.exists() {
        unmount_below(dir)?;
        fs::remove_dir_all(dir).with_context(|| format!("cannot clear {}", dir.display()))?;
    }
    Ok(())
}

/// Unmounts (lazily, deepest first) every mount point at or below `dir`.
fn unmount_below(dir: &Path) -> Result<()> {
    let dir = dir
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", dir.display()))?;
    let mounts =
        fs::read_to_string("/proc/self/mounts").context("cannot read /proc/self/mounts")?;
    let mut points: Vec<PathBuf> = mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        // /proc/self/mounts escapes spaces as \040; such paths are not ours.
        .map(PathBuf::from)
        .filter(|p| p.starts_with(&dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for p in points {
        cmd::run(Command::new("umount").arg("-l").arg(&p))
            .with_context(|| format!("cannot unmount {} before clearing it", p.display()))?;
    }
    Ok(())
}
