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
    remove_stale_overlay_sources()?;
    remove_stale_builds(&paths.root.join("target/debug"))?;
    let mut args = vec!["publish", "--dry-run", "--allow-dirty"];
    for krate in LIBRARY_CRATES {
        args.extend(["-p", krate]);
    }
    cmd::run(cmd::cargo().args(&args).current_dir(&paths.root))
        .with_context(|| format!("`cargo {}` failed", args.join(" ")))
}

/// Cargo unpacks each package of its local overlay registry into
/// `$CARGO_HOME/registry/src/<registry>/<name>-<version>` once and reuses
/// that copy while the version stays the same, so a library crate changed
/// since an earlier dry run (same version) was built from its stale copy
/// and its dependents failed against the old API. Our crates' unpacked
/// copies go first; crates.io's index directories are left alone (ours
/// are not published there).
fn remove_stale_overlay_sources() -> Result<()> {
    let home = std::env::var_os("CARGO_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".cargo")));
    let Some(src) = home.map(|h| h.join("registry/src")) else {
        return Ok(());
    };
    let Ok(registries) = std::fs::read_dir(&src) else {
        return Ok(());
    };
    for registry in registries.flatten() {
        if registry.file_name().to_string_lossy().starts_with("index.") {
            continue;
        }
        let Ok(packages) = std::fs::read_dir(registry.path()) else {
            continue;
        };
        for package in packages.flatten() {
            let name = package.file_name().to_string_lossy().into_owned();
            let ours = LIBRARY_CRATES.iter().any(|krate| {
                name.strip_prefix(krate)
                    .and_then(|rest| rest.strip_prefix('-'))
                    .is_some_and(|version| version.starts_with(|c: char| c.is_ascii_digit()))
            });
            if ours {
                std::fs::remove_dir_all(package.path())
                    .with_context(|| format!("cannot remove {}", package.path().display()))?;
            }
        }
    }
    Ok(())
}

/// The dry run builds the packages in the workspace's `target/debug`,
/// where cargo also keeps whatever it built from an earlier dry run's
/// packages of the same version: a registry package is taken as never
/// changing, so that build would be reused. Our library crates' builds go
/// first (they are rebuilt from the workspace as needed).
fn remove_stale_builds(profile_dir: &std::path::Path) -> Result<()> {
    for (dir, prefix) in [(".fingerprint", ""), ("deps", "lib")] {
        let Ok(entries) = std::fs::read_dir(profile_dir.join(dir)) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let ours = LIBRARY_CRATES.iter().any(|krate| {
                let stem = if dir == "deps" {
                    krate.replace('-', "_")
                } else {
                    (*krate).to_owned()
                };
                name.starts_with(&format!("{prefix}{stem}-"))
            });
            if !ours {
                continue;
            }
            let path = entry.path();
            let removed = if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            removed.with_context(|| format!("cannot remove {}", path.display()))?;
        }
    }
    Ok(())
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
