//! `cargo xtask test`'s host-side checks: tests, clippy, rustfmt.

use anyhow::{Context, Result};

use crate::cmd;
use crate::paths::Paths;

/// Runs `cargo test`, `cargo clippy -D warnings` and `cargo fmt --check`
/// over the whole workspace, stopping at the first failure.
pub fn run_host_checks(paths: &Paths) -> Result<()> {
    let steps: [&[&str]; 3] = [
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
    ];
    for args in steps {
        cmd::run(cmd::cargo().args(args).current_dir(&paths.root))
            .with_context(|| format!("`cargo {}` failed", args.join(" ")))?;
    }
    Ok(())
}
