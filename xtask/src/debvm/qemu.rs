//! The QEMU command line of the Debian test VM.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::setup::Kernel;
use crate::vm::qemu::MACHINE_ARGS;

/// What one boot needs.
pub struct Machine<'a> {
    /// The kernel (its `boot_image` is booted).
    pub kernel: &'a Kernel,
    /// The debvm initramfs.
    pub initrd: &'a Path,
    /// The cached root image, opened copy-on-write.
    pub image: &'a Path,
    /// The host checkout, shared read-only (9p tag `repo`).
    pub repo: &'a Path,
    /// The host output folder, shared read-write (9p tag `out`).
    pub out: &'a Path,
    /// The guest script (under `repo`).
    pub script: &'a Path,
    /// Words added to the kernel command line.
    pub kernel_args: &'a [String],
}

/// Builds the `qemu-system-x86_64` command for `m`.
///
/// TCG (no VT-x/AMD-V on these machines), 2 vCPUs, 2 GiB, no network card.
/// The image is a virtio disk with `snapshot=on`: the guest's writes go to
/// a temporary overlay QEMU drops at exit, so the cached image stays clean.
/// A reboot resets the machine and keeps that overlay (no `-no-reboot`):
/// a script may reboot the guest and carry on (see `xt-debvm-run.sh`,
/// which also fails a run whose guest reboots unasked, after a panic say).
pub fn command(m: &Machine) -> Result<Command> {
    let mut append = String::from("console=ttyS0 panic=-1 root=/dev/vda rw quiet");
    for word in m.kernel_args {
        if word.is_empty() || word.chars().any(char::is_whitespace) {
            bail!("kernel argument {word:?} must be one non-empty word");
        }
        append.push(' ');
        append.push_str(word);
    }
    for (key, path) in [
        ("xt.script", m.script),
        ("xt.repo", m.repo),
        ("xt.out", m.out),
    ] {
        append.push_str(&format!(" {key}={}", one_word(path)?));
    }
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args(MACHINE_ARGS)
        .args(["-nographic", "-nic", "none"])
        .args(["-device", "virtio-rng-pci"])
        .arg("-kernel")
        .arg(&m.kernel.boot_image)
        .arg("-initrd")
        .arg(m.initrd)
        .args(["-append", &append])
        .arg("-drive")
        .arg(format!(
            "file={},format=raw,if=virtio,snapshot=on",
            one_word(m.image)?
        ))
        .arg("-virtfs")
        .arg(format!(
            "local,path={},mount_tag=repo,security_model=none,readonly=on,multidevs=remap",
            one_word(m.repo)?
        ))
        .arg("-virtfs")
        .arg(format!(
            "local,path={},mount_tag=out,security_model=none",
            one_word(m.out)?
        ));
    Ok(cmd)
}

/// `path` as UTF-8 without whitespace or commas (the kernel command line
/// and QEMU's option syntax carry neither).
fn one_word(path: &Path) -> Result<&str> {
    let s = path
        .to_str()
        .with_context(|| format!("{} is not UTF-8", path.display()))?;
    if s.chars().any(|c| c.is_whitespace() || c == ',') {
        bail!("{s:?} contains whitespace or a comma; the VM's command line cannot carry it");
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::{command, Machine};
    use crate::setup::Kernel;

    fn kernel() -> Kernel {
        Kernel {
            version: "6.1.0-57-amd64".into(),
            vmlinuz: PathBuf::from("/k/vmlinuz"),
            boot_image: PathBuf::from("/k/vmlinux"),
            modules: PathBuf::from("/k/lib/modules/6.1.0-57-amd64"),
            initrd: PathBuf::new(),
        }
    }

    fn args(repo: &str) -> anyhow::Result<Vec<String>> {
        let k = kernel();
        let cmd = command(&Machine {
            kernel: &k,
            initrd: Path::new("/r/target/debvm/initrd.gz"),
            image: Path::new("/r/target/debvm/root.img"),
            repo: Path::new(repo),
            out: Path::new("/r/target/debvm/out"),
            script: Path::new("/r/tests/debvm/lifecycle.sh"),
            kernel_args: &["idle=poll".to_owned()],
        })?;
        Ok(cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect())
    }

    #[test]
    fn image_copy_on_write_checkout_read_only_no_network() {
        let a = args("/r").unwrap();
        let after = |flag: &str| -> Vec<&str> {
            a.windows(2)
                .filter(|w| w[0] == flag)
                .map(|w| w[1].as_str())
                .collect()
        };
        assert_eq!(after("-nic"), ["none"]);
        // A reboot keeps the overlay; QEMU exits at power-off only.
        assert!(!a.iter().any(|x| x == "-no-reboot"));
        assert!(!a.iter().any(|x| x == "-netdev"));
        assert_eq!(
            after("-drive"),
            ["file=/r/target/debvm/root.img,format=raw,if=virtio,snapshot=on"]
        );
        let shares = after("-virtfs");
        assert!(shares[0].contains("path=/r,mount_tag=repo,") && shares[0].contains("readonly=on"));
        assert!(shares[1].starts_with("local,path=/r/target/debvm/out,mount_tag=out,"));
        let append = after("-append")[0];
        assert!(append.contains(" idle=poll "));
        assert!(append.ends_with(
            "xt.script=/r/tests/debvm/lifecycle.sh xt.repo=/r xt.out=/r/target/debvm/out"
        ));
    }

    #[test]
    fn paths_qemu_cannot_carry_are_refused() {
        assert!(args("/r,x").is_err());
        assert!(args("/r x").is_err());
    }
}
