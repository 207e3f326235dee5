//! `cargo xtask debvm-test [SCRIPT]`: the Debian test VM, a booted Debian
//! 12 with systemd as PID 1, for what the busybox VM can only imitate (the
//! package under a real systemd, D-Bus activation, apt upgrades).
//!
//! - `recipe.rs`: what the image holds, and the hash that invalidates it;
//! - `image.rs`: debootstrap into `target/debvm/root.img` (cached);
//! - `initramfs.rs`, `init.sh`: virtio-blk and ext4, then systemd;
//! - `qemu.rs`: the machine (TCG, no NIC, the image copy-on-write, the
//!   checkout read-only and `target/debvm/out/` read-write over 9p);
//! - `xt-debvm.service`, `xt-debvm-run.sh`: in the image, run the script
//!   once `multi-user.target` is reached, report, power off.
//!
//! The contract with the guest is the busybox VM's: `XTASK-GUEST-UP` on
//! the console (here: multi-user reached), then `<out>/result` holding
//! `status=N`; no result, a non-zero status, no boot within
//! [`BOOT_LIMIT`], a kernel panic or a run past the timeout is a failure.
//! A script exiting with status 100 asks for a reboot: the guest reboots
//! (QEMU keeps the disk's overlay) and the script runs again after the
//! boot; a reboot nobody asked for fails the run.

mod image;
mod initramfs;
mod qemu;
mod recipe;

use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::paths::Paths;
use crate::vm::{self, Watch};
use crate::VmOptions;

/// How long the guest may take to reach `multi-user.target` (about 30 s
/// under TCG on an idle machine).
const BOOT_LIMIT: Duration = Duration::from_secs(300);

/// The script run when none is named.
const DEFAULT_SCRIPT: &str = "tests/debvm/lifecycle.sh";

/// `cargo xtask debvm-image`: builds (or finds up to date) the kernel,
/// the image and the initramfs, boots nothing.
pub fn prepare(paths: &Paths) -> Result<()> {
    let kernel = crate::setup::run(paths)?;
    let dir = paths.root.join("target/debvm");
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let image = image::ensure(&dir, &kernel)?;
    let initrd = initramfs::ensure(&dir, &kernel)?;
    eprintln!(
        "xtask: Debian VM ready: image {}, initramfs {}, kernel {}",
        image.display(),
        initrd.display(),
        kernel.version
    );
    Ok(())
}

/// Builds what is missing (image, initramfs, the package unless
/// `--no-build`), boots the Debian VM and runs `SCRIPT` (default
/// [`DEFAULT_SCRIPT`]) in it.
pub fn run(paths: &Paths, opts: &VmOptions) -> Result<()> {
    let script = match opts.at_most_one("debvm-test")? {
        Some(s) => std::path::absolute(s).with_context(|| format!("cannot resolve {s}"))?,
        None => paths.root.join(DEFAULT_SCRIPT),
    };
    if !script.is_file() {
        bail!("guest script {} does not exist", script.display());
    }
    if !script.starts_with(&paths.root) {
        bail!(
            "guest script {} is outside the checkout {}, the only host folder the Debian VM sees",
            script.display(),
            paths.root.display()
        );
    }
    let kernel = crate::setup::run(paths)?;
    let dir = paths.root.join("target/debvm");
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let image = image::ensure(&dir, &kernel)?;
    let initrd = initramfs::ensure(&dir, &kernel)?;
    let deb = if opts.no_build {
        existing_deb(paths)?
    } else {
        crate::deb::build(paths)?
    };

    let out = dir.join("out");
    if out.exists() {
        fs::remove_dir_all(&out).with_context(|| format!("cannot clear {}", out.display()))?;
    }
    fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut vars: Vec<(String, String)> = vec![
        ("XT_WORKDIR".into(), paths.root.display().to_string()),
        ("XT_OUT".into(), out.display().to_string()),
        ("TCMU_DEB".into(), deb.display().to_string()),
        ("FIO_RUNTIME".into(), opts.fio_runtime.to_string()),
    ];
    vars.extend(crate::guest_variables());
    let env_file = out.join("guest.env");
    fs::write(&env_file, vm::env_text(&vars)?)
        .with_context(|| format!("cannot write {}", env_file.display()))?;

    let kernel_args: Vec<String> = std::env::var("XTASK_VM_KERNEL_ARGS")
        .unwrap_or_default()
        .split_whitespace()
        .map(String::from)
        .collect();
    let command = qemu::command(&qemu::Machine {
        kernel: &kernel,
        initrd: &initrd,
        image: &image,
        repo: &paths.root,
        out: &out,
        script: &script,
        kernel_args: &kernel_args,
    })?;
    let console_log = dir.join("console.log");
    Watch {
        out: &out,
        console_log: &console_log,
        timeout: opts.timeout,
        boot_limit: BOOT_LIMIT,
        what_boots: "multi-user.target",
        is_suite: false,
        stop: None,
    }
    .run(command)?
    .into_result()
}

/// `--no-build`: the package `cargo xtask deb` made for this version.
fn existing_deb(paths: &Paths) -> Result<PathBuf> {
    let dir = paths.root.join("target/debian");
    let name = format!("tcmu-runner_{}_amd64.deb", crate::deb::version());
    let deb = dir.join(&name);
    if !deb.is_file() {
        bail!(
            "--no-build: {} does not exist (run `cargo xtask deb`)",
            deb.display()
        );
    }
    Ok(deb)
}
