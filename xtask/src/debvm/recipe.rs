//! What the Debian test VM's image is made of, and the hash that says
//! when the cached image is stale.

use crate::hash::Fnv;

/// The Debian release debootstrap installs.
pub const SUITE: &str = "bookworm";

/// Packages installed on top of debootstrap's `minbase` variant (their
/// dependencies come along; recommends do not).
///
/// systemd as PID 1 with D-Bus and udev; targetcli-fb and rtslib-fb (with
/// `target.service`, which restores a saved configuration at boot); fio and
/// sg3-utils to drive LUNs; Debian's C `tcmu-runner`, which the upgrade
/// tests replace with our package (its dependencies librbd1 and librados2
/// are ours too, so `apt install ./tcmu-runner_*.deb` needs no network).
pub const PACKAGES: &[&str] = &[
    "systemd",
    "systemd-sysv",
    "dbus",
    "udev",
    "targetcli-fb",
    "python3-rtslib-fb",
    "fio",
    "sg3-utils",
    "kmod",
    "e2fsprogs",
    "procps",
    "tcmu-runner",
];

/// Finishes the root after debootstrap (units, masks, clean-up).
pub const CUSTOMIZE: &str = include_str!("customize.sh");

/// `/usr/local/sbin/xt-debvm-run`: mounts the shares, runs the script,
/// reports, powers off.
pub const RUNNER: &str = include_str!("xt-debvm-run.sh");

/// `/etc/systemd/system/xt-debvm.service`: starts [`RUNNER`] after
/// `multi-user.target`.
pub const UNIT: &str = include_str!("xt-debvm.service");

/// Bumped when the way the image is assembled (in `image.rs`) changes.
const LAYOUT: &str = "1";

/// The recipe's hash for kernel release `kernel_version` (whose modules the
/// image carries): a different hash means a rebuild. The mirror is left
/// out: any mirror serves the same packages.
pub fn hash(kernel_version: &str) -> String {
    let mut h = Fnv::new();
    h.update(LAYOUT.as_bytes())
        .update(SUITE.as_bytes())
        .update(kernel_version.as_bytes())
        .update(CUSTOMIZE.as_bytes())
        .update(RUNNER.as_bytes())
        .update(UNIT.as_bytes());
    for p in PACKAGES {
        h.update(p.as_bytes());
    }
    h.hex()
}

#[cfg(test)]
mod tests {
    use super::hash;

    #[test]
    fn kernel_changes_the_hash() {
        assert_eq!(hash("6.1.0-57-amd64"), hash("6.1.0-57-amd64"));
        assert_ne!(hash("6.1.0-57-amd64"), hash("6.1.0-58-amd64"));
    }
}
