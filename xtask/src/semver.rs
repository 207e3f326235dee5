//! `cargo xtask semver`: the library crates' public API against a
//! baseline, with cargo-semver-checks (installed when missing).
//!
//! Before a release, compare the crates others depend on (`tcmu-scsi`,
//! `tcmu-core`, `tcmu-runtime`) with the last release: a change that breaks
//! their users without a major version bump (a removed item, a new required
//! trait method, a field added to an exhaustive struct, …) fails the check.
//! The baseline is a git revision (`--baseline-rev`, default: the newest
//! `v*` tag) or a version published on crates.io (`--baseline-version`).

use anyhow::{bail, Context, Result};

use crate::checks::LIBRARY_CRATES;
use crate::cmd;
use crate::paths::Paths;

/// What `cargo xtask help` says about `semver`.
pub const USAGE: &str = "  semver [--baseline-rev REV | --baseline-version VER]
                        check the library crates' public API for breaking
                        changes against REV (default: the newest v* tag) or
                        a crates.io version, with cargo-semver-checks
                        (installed when missing, about 10 min)
";

/// Where the old API comes from.
#[derive(Debug, PartialEq, Eq)]
enum Baseline {
    /// A git revision of this repository.
    Rev(String),
    /// A version published on crates.io.
    Version(String),
}

/// `semver`'s options.
#[derive(Debug, PartialEq, Eq)]
pub struct Options {
    baseline: Option<Baseline>,
}

impl Options {
    /// Parses `semver`'s arguments.
    pub fn parse(args: &[String]) -> Result<Self> {
        let mut baseline = None;
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut value = || {
                it.next()
                    .cloned()
                    .with_context(|| format!("{a} needs a value"))
            };
            let b = match a.as_str() {
                "--baseline-rev" => Baseline::Rev(value()?),
                "--baseline-version" => Baseline::Version(value()?),
                other => bail!("semver: unknown argument {other:?}"),
            };
            if baseline.replace(b).is_some() {
                bail!("semver: give one baseline");
            }
        }
        Ok(Self { baseline })
    }
}

/// The newest tag named `v*`, by version order.
fn newest_release_tag(paths: &Paths) -> Result<String> {
    let tags = cmd::output(
        std::process::Command::new("git")
            .args(["tag", "--list", "v*", "--sort=-v:refname"])
            .current_dir(&paths.root),
    )?;
    tags.lines().next().map(str::to_owned).context(
        "no v* release tag to compare with: pass --baseline-rev REV or --baseline-version VER",
    )
}

/// Runs cargo-semver-checks on every library crate.
pub fn run(paths: &Paths, opts: &Options) -> Result<()> {
    let baseline = match &opts.baseline {
        Some(b) => b,
        None => &Baseline::Rev(newest_release_tag(paths)?),
    };
    cmd::ensure_cargo_tool("semver-checks", "cargo-semver-checks", "about 10 min")?;
    let mut check = cmd::cargo();
    check.args(["semver-checks", "check-release"]);
    for krate in LIBRARY_CRATES {
        check.args(["-p", krate]);
    }
    match baseline {
        Baseline::Rev(rev) => check.args(["--baseline-rev", rev]),
        Baseline::Version(v) => check.args(["--baseline-version", v]),
    };
    cmd::run(check.current_dir(&paths.root))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Options> {
        Options::parse(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn parses_one_baseline() {
        assert_eq!(parse(&[]).unwrap(), Options { baseline: None });
        assert_eq!(
            parse(&["--baseline-rev", "v0.2.0"]).unwrap().baseline,
            Some(Baseline::Rev("v0.2.0".into()))
        );
        assert_eq!(
            parse(&["--baseline-version", "0.2.0"]).unwrap().baseline,
            Some(Baseline::Version("0.2.0".into()))
        );
        assert!(parse(&["--baseline-rev"]).is_err());
        assert!(parse(&["--baseline-rev", "a", "--baseline-version", "b"]).is_err());
        assert!(parse(&["--frobnicate"]).is_err());
    }
}
