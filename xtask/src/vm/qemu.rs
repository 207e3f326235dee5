//! The QEMU command line of the test VM.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::setup::Kernel;
use crate::vm::GuestRun;

/// The machine of every test VM, this one and the Debian one
/// (`debvm`): TCG on several host threads (these machines expose no
/// VT-x/AMD-V; `-cpu host` needs KVM), QEMU's richest CPU model, 2 GiB,
/// two vCPUs.
pub const MACHINE_ARGS: [&str; 8] = [
    "-accel",
    "tcg,thread=multi",
    "-cpu",
    "max",
    "-m",
    "2048",
    "-smp",
    "2",
];

/// Builds the `qemu-system-x86_64` command booting `kernel` for `run`.
///
/// TCG only (these machines expose no VT-x/AMD-V), 2 vCPUs, 2 GiB, no
/// network card unless `run.qemu_args` adds one, the host's `/` shared
/// over 9p as `hostroot`.
pub fn command(kernel: &Kernel, run: &GuestRun, env_file: &Path, out: &Path) -> Result<Command> {
    let mut append = String::from("console=ttyS0 quiet panic=-1");
    for word in &run.kernel_args {
        if word.is_empty() || word.chars().any(char::is_whitespace) {
            bail!("kernel argument {word:?} must be one non-empty word");
        }
        append.push(' ');
        append.push_str(word);
    }
    for (key, path) in [
        ("xt.script", run.script.as_path()),
        ("xt.env", env_file),
        ("xt.out", out),
    ] {
        let s = path
            .to_str()
            .with_context(|| format!("{} is not UTF-8", path.display()))?;
        if s.chars().any(char::is_whitespace) {
            bail!("{s:?} contains whitespace; the kernel command line cannot carry it");
        }
        append.push_str(&format!(" {key}={s}"));
    }
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args(MACHINE_ARGS)
        .args(["-nographic", "-no-reboot", "-nic", "none"])
        .arg("-kernel")
        .arg(&kernel.boot_image)
        .arg("-initrd")
        .arg(&kernel.initrd)
        .args(["-append", &append])
        .args([
            "-virtfs",
            "local,path=/,mount_tag=hostroot,security_model=passthrough,multidevs=remap",
        ])
        .args(&run.qemu_args);
    Ok(cmd)
}
