//! `cargo xtask microbench`: the criterion micro-benchmark of the data path
//! (`handlers/ram/benches/ring.rs`: the runtime, the `ram` handler and the
//! simulated kernel, no VM), then where criterion put its report.

use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::cmd;
use crate::paths::Paths;

/// The package holding the bench.
const PACKAGE: &str = "tcmu-handler-ram";
/// The bench target.
const BENCH: &str = "ring";

/// What `cargo xtask help` says about `microbench`.
pub const USAGE: &str =
    "  microbench [ARGS]     criterion micro-benchmark without a kernel (~40 s):
                        the runtime on one worker, the ram handler and the
                        simulated kernel; TEST UNIT READY and 4k READ/WRITE at
                        QD1 and QD32 in commands/s, then heap allocations per
                        command; ARGS go to criterion (a filter such as
                        read4k, --save-baseline NAME, --baseline NAME)
";

/// Runs the bench with `args` passed to criterion.
pub fn run(paths: &Paths, args: &[String]) -> Result<()> {
    cmd::run(
        cmd::cargo()
            .args(["bench", "-p", PACKAGE, "--bench", BENCH, "--"])
            .args(args)
            .current_dir(&paths.root),
    )
    .context("the micro-benchmark failed")?;
    // No HTML: criterion draws its charts with gnuplot or plotters, and
    // the bench builds neither; the numbers are in the JSON.
    eprintln!(
        "xtask: criterion's results: {}/<case>/new/estimates.json (cases such as read4k_qd32; \
         `cargo xtask microbench --save-baseline NAME` keeps a run to compare with `--baseline NAME`)",
        target_dir(paths).join("criterion").join(BENCH).display()
    );
    Ok(())
}

/// Cargo's target directory: `$CARGO_TARGET_DIR`, else `target/` in the
/// workspace.
fn target_dir(paths: &Paths) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) if !d.is_empty() => paths.root.join(d),
        _ => paths.root.join("target"),
    }
}
