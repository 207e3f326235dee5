//! Running external programs with readable errors.

use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};

/// A `cargo` command using the same toolchain as this xtask.
pub fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// Renders a command line for messages.
pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs `cmd` with inherited stdio, failing unless it exits 0.
pub fn run(cmd: &mut Command) -> Result<()> {
    let line = describe(cmd);
    eprintln!("xtask: $ {line}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot start `{line}`"))?;
    if !status.success() {
        bail!("`{line}` failed ({status})");
    }
    Ok(())
}

/// Runs `cmd` quietly and returns its standard output, failing unless it
/// exits 0 (stderr is included in the error).
pub fn output(cmd: &mut Command) -> Result<String> {
    let line = describe(cmd);
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot start `{line}`"))?;
    if !out.status.success() {
        bail!(
            "`{line}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    String::from_utf8(out.stdout).with_context(|| format!("`{line}` printed non-UTF-8 output"))
}

/// Installs the cargo subcommand `cargo <subcommand>` from crates.io
/// (`cargo install --locked <krate>`) unless `cargo <subcommand> --version`
/// already works; `takes` says how long that usually is.
pub fn ensure_cargo_tool(subcommand: &str, krate: &str, takes: &str) -> Result<()> {
    let present = cargo()
        .args([subcommand, "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if present {
        return Ok(());
    }
    eprintln!("xtask: {krate} is missing; installing it from crates.io ({takes})");
    let start = Instant::now();
    run(cargo().args(["install", "--locked", krate]))
        .with_context(|| format!("cannot install {krate}"))?;
    eprintln!(
        "xtask: {krate} installed in {:.0} s",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
