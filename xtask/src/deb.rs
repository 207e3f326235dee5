//! `cargo xtask deb`: the Debian package, built with cargo-deb.
//!
//! The packaging itself (`[package.metadata.deb]` in `runner/Cargo.toml`,
//! maintainer scripts in `runner/dist/debian/`) explains its choices; this
//! module installs cargo-deb when it is missing and passes the version.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::cmd;
use crate::paths::Paths;

/// The package's version: Debian's C package is 1.5.4-N; ours sorts above
/// every such revision, so installing it is an upgrade of `tcmu-runner`.
/// xtask shares the workspace version with the daemon.
pub fn version() -> String {
    format!("1.5.4+rs{}-1", env!("CARGO_PKG_VERSION"))
}

/// Builds the release binary and the package; returns the `.deb`'s path
/// (under `target/debian/`).
pub fn build(paths: &Paths) -> Result<PathBuf> {
    cmd::ensure_cargo_tool("deb", "cargo-deb", "about 1.5 min")?;
    // The rbd handler links librbd and librados ($auto then depends on
    // librbd1 and librados2, as Debian's C package does).
    crate::setup::Apt::default().ensure(crate::setup::RBD_PACKAGES)?;
    let out_dir = paths.root.join("target/debian");
    let mut c = cmd::cargo();
    c.args(["deb", "-p", "tcmu-runner", "--strip", "--no-dbgsym"])
        .args(["--deb-version", &version()])
        .arg("--output")
        .arg(&out_dir)
        .current_dir(&paths.root)
        // The build's progress shows; stdout names the package.
        .stderr(Stdio::inherit());
    eprintln!("xtask: $ {}", cmd::describe(&c));
    let out = cmd::output(&mut c).context("cargo deb failed")?;
    // cargo-deb prints the package's path as its last line.
    let deb = out
        .lines()
        .rev()
        .find(|l| l.trim_end().ends_with(".deb"))
        .map(|l| PathBuf::from(l.trim()))
        .context("cargo deb did not name the package it built")?;
    if !deb.is_file() {
        bail!("cargo deb reported {}, which does not exist", deb.display());
    }
    println!("built      {}", deb.display());
    Ok(deb)
}

/// Lists the regular files (and symlinks) of a `.deb`, as absolute paths
/// (`/usr/bin/tcmu-runner`), sorted.
pub fn file_list(deb: &Path) -> Result<Vec<String>> {
    let out = cmd::output(Command::new("dpkg-deb").arg("--contents").arg(deb))?;
    let mut files: Vec<String> = out
        .lines()
        .filter(|l| !l.starts_with('d'))
        .filter_map(|l| l.split_whitespace().nth(5))
        .map(|p| p.trim_start_matches('.').to_owned())
        .collect();
    files.sort();
    Ok(files)
}

/// The `conffiles` of a `.deb`, sorted.
pub fn conffiles(deb: &Path) -> Result<Vec<String>> {
    let out = Command::new("dpkg-deb")
        .arg("--info")
        .arg(deb)
        .arg("conffiles")
        .output()
        .context("cannot run dpkg-deb")?;
    // dpkg-deb fails when the package has no conffiles member.
    let mut list: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().to_owned())
        .filter(|l| !l.is_empty())
        .collect();
    list.sort();
    Ok(list)
}
