//! `cargo xtask test`'s host-side checks: the Markdown links, tests,
//! clippy, rustfmt, rustdoc, the library crates' packaging (`cargo publish
//! --dry-run`), and the D-Bus service against a private bus.

use anyhow::{Context, Result};

use crate::cmd;
use crate::paths::Paths;

/// The crates others can depend on, in dependency order.
pub const LIBRARY_CRATES: [&str; 3] = ["tcmu-scsi", "tcmu-core", "tcmu-runtime"];

/// Checks the docs' links (`check-docs`, the cheapest step, first), then
/// runs `cargo test`, `cargo clippy -D warnings`, `cargo fmt --check` and
/// `cargo doc` (warnings denied) over the whole workspace, and `cargo
/// publish --dry-run` of the library crates, stopping at the first failure.
pub fn run_host_checks(paths: &Paths) -> Result<()> {
    eprintln!("xtask: checking the links of the Markdown files (cargo xtask check-docs)");
    crate::docs::run(paths, &crate::docs::Options::default())
        .context("`cargo xtask check-docs` failed")?;
    // The qcow handler's unit tests make and check images with qemu-img;
    // the rbd handler links librbd and its tests start a Ceph cluster; the
    // glfs handler's tests start glusterd and a brick and load libgfapi.
    let mut apt = crate::setup::Apt::default();
    apt.ensure(&["qemu-utils"])?;
    apt.ensure(crate::setup::RBD_PACKAGES)?;
    apt.ensure(crate::setup::GLFS_PACKAGES)?;
    let steps: [&[&str]; 4] = [
        &["test", "--workspace"],
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
        &["fmt", "--all", "--check"],
        // The simulator and the test rig are public API too.
        &[
            "doc",
            "--workspace",
            "--no-deps",
            "--features",
            "tcmu-core/sim,tcmu-runtime/sim",
        ],
    ];
    for args in steps {
        cmd::run(
            cmd::cargo()
                .args(args)
                .env("RUSTDOCFLAGS", "-D warnings")
                .current_dir(&paths.root),
        )
        .with_context(|| format!("`cargo {}` failed", args.join(" ")))?;
    }
    publish_dry_run(paths)?;
    run_bus_test(paths)
}

/// Packages the library crates as crates.io would take them and builds
/// each from its package against the others' (cargo's local overlay
/// registry), uploading nothing. Uncommitted changes are allowed, so a
/// work tree can be checked before its commit.
fn publish_dry_run(paths: &Paths) -> Result<()> {
    let mut args = vec!["publish", "--dry-run", "--allow-dirty"];
    for krate in LIBRARY_CRATES {
        args.extend(["-p", krate]);
    }
    cmd::run(cmd::cargo().args(&args).current_dir(&paths.root))
        .with_context(|| format!("`cargo {}` failed", args.join(" ")))
}

/// The D-Bus service against a private `dbus-daemon` with our policy file
/// (root and nobody as callers): ignored by plain `cargo test` because it
/// needs root and the dbus package, which this step installs.
fn run_bus_test(paths: &Paths) -> Result<()> {
    crate::setup::Apt::default().ensure(&["dbus", "util-linux"])?;
    let args = ["test", "-p", "tcmu-runner", "--", "--ignored", "bus_"];
    cmd::run(cmd::cargo().args(args).current_dir(&paths.root))
        .with_context(|| format!("`cargo {}` failed", args.join(" ")))
}
