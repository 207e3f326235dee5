//! Booting the test VM and judging what the guest reported.
//!
//! The contract with the guest (see `init.sh` and `tests/vm/lib.sh`):
//! - the kernel command line carries `xt.script=` (the script to run),
//!   `xt.env=` (a file of `NAME='value'` lines the script's environment is
//!   loaded from) and `xt.out=` (a host folder the guest writes into);
//! - the guest writes `<xt.out>/result` (`status=N`) after the script ends;
//!   `run-all.sh` also writes `<xt.out>/summary` (`N passed, N failed`);
//! - no result file, a non-zero status, a boot that never reaches init or
//!   a run past the timeout is a failure.

mod console;
pub mod initramfs;
pub mod qemu;

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::paths::Paths;
use crate::setup::Kernel;

/// How long the guest may take to reach its init before the boot counts as
/// failed (TCG boots take 3–5 s; be generous on loaded CI machines).
const BOOT_LIMIT: Duration = Duration::from_secs(180);

/// One guest run.
pub struct GuestRun {
    /// Guest script to run (a host path; the guest sees the same path).
    pub script: PathBuf,
    /// Limit for the whole run, boot included.
    pub timeout: Duration,
    /// Variables written to the guest's environment file.
    pub extra_env: Vec<(String, String)>,
    /// Words added to the guest kernel's command line (e.g. `idle=poll`).
    pub kernel_args: Vec<String>,
    /// Arguments added to QEMU's command line (a network card for the
    /// two-VM HA test; none otherwise).
    pub qemu_args: Vec<String>,
}

/// What happened in the VM.
pub struct Outcome {
    /// The script's exit status from the result file, if it was written.
    pub status: Option<i32>,
    /// The `N passed, N failed` line the guest reported, if any.
    pub summary: Option<String>,
    /// Why the run failed before the guest could report (timeout, no boot).
    pub problem: Option<String>,
    /// Time from QEMU start to the guest's `XTASK-GUEST-UP` marker.
    pub boot: Option<Duration>,
    /// What that marker means ("its init", "multi-user.target").
    pub boot_label: String,
    /// Total run time.
    pub elapsed: Duration,
    /// Where the console was logged.
    pub console_log: PathBuf,
    /// Whether this run should end with a summary line even without one
    /// from the guest (test suites do, demos do not).
    pub is_suite: bool,
}

/// Error returned once the failure was already explained on the terminal.
#[derive(Debug)]
pub struct Reported;

impl fmt::Display for Reported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the VM run failed (see above)")
    }
}

impl std::error::Error for Reported {}

impl Outcome {
    /// Prints the verdict (ending with the summary line for suites) and
    /// turns it into a result.
    pub fn into_result(self) -> Result<()> {
        let boot = self
            .boot
            .map_or("never".to_owned(), |b| format!("{:.1} s", b.as_secs_f64()));
        eprintln!(
            "xtask: VM finished after {:.1} s (guest reached {}: {boot}); console log: {}",
            self.elapsed.as_secs_f64(),
            self.boot_label,
            self.console_log.display()
        );
        let ok = self.problem.is_none() && self.status == Some(0);
        if let Some(p) = &self.problem {
            eprintln!("xtask: FAILURE: {p}");
        } else {
            match self.status {
                Some(0) => eprintln!("xtask: guest script succeeded"),
                Some(n) => eprintln!("xtask: FAILURE: guest script exited with status {n}"),
                None => eprintln!(
                    "xtask: FAILURE: the guest wrote no result file (it crashed, panicked or powered off early)"
                ),
            }
        }
        match (&self.summary, self.is_suite) {
            (Some(s), _) => println!("{s}"),
            // The VM itself counts as one failed test when the guest could
            // not report its own tally.
            (None, true) => println!("0 passed, 1 failed"),
            (None, false) => {}
        }
        if ok {
            Ok(())
        } else {
            Err(Reported.into())
        }
    }
}

/// Boots before giving up when the guest never reaches its init.
const BOOT_ATTEMPTS: u32 = 3;

/// Boots the VM, runs `run.script` in it and collects the outcome.
///
/// A guest that never reaches its init ran nothing (multi-threaded TCG
/// occasionally stalls a vCPU's timer during early boot: RCU stall
/// warnings, then silence), so it is booted again, up to
/// [`BOOT_ATTEMPTS`] times; the console log of a failed boot is kept as
/// `console.log.boot<N>`. Every boot failing is still a failure.
pub fn boot_and_run(paths: &Paths, kernel: &Kernel, run: &GuestRun) -> Result<Outcome> {
    let mut attempt = 1;
    loop {
        let outcome = boot_once(paths, kernel, run)?;
        if outcome.boot.is_some() || outcome.status.is_some() || attempt >= BOOT_ATTEMPTS {
            return Ok(outcome);
        }
        let kept = outcome
            .console_log
            .with_extension(format!("log.boot{attempt}"));
        fs::rename(&outcome.console_log, &kept).ok();
        eprintln!(
            "xtask: WARNING: the guest never reached its init (boot {attempt} of {BOOT_ATTEMPTS}; console log kept as {}); booting again",
            kept.display()
        );
        attempt += 1;
    }
}

/// One boot of [`boot_and_run`].
fn boot_once(paths: &Paths, kernel: &Kernel, run: &GuestRun) -> Result<Outcome> {
    boot_in(paths, kernel, run, &paths.vm, None)
}

/// Boots the VM once with its files in `dir` (`out/`, `guest.env`,
/// `console.log`), so that several VMs can run side by side; `stop`, once
/// set, kills QEMU (a power cut, or its peer is done). No second boot.
pub fn boot_in(
    paths: &Paths,
    kernel: &Kernel,
    run: &GuestRun,
    dir: &Path,
    stop: Option<&AtomicBool>,
) -> Result<Outcome> {
    let out = dir.join("out");
    if out.exists() {
        fs::remove_dir_all(&out).with_context(|| format!("cannot clear {}", out.display()))?;
    }
    fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let env_file = dir.join("guest.env");
    write_env(&env_file, paths, &out, run)?;

    let console_log = dir.join("console.log");
    let command = qemu::command(kernel, run, &env_file, &out)?;
    let watch = Watch {
        out: &out,
        console_log: &console_log,
        timeout: run.timeout,
        boot_limit: BOOT_LIMIT,
        what_boots: "its init",
        is_suite: run.script.file_name().is_some_and(|n| n == "run-all.sh"),
        stop,
    };
    watch.run(command)
}

/// How to supervise one QEMU run: where the guest reports, its limits.
pub struct Watch<'a> {
    /// The host folder the guest writes `result` (and `summary`) into.
    pub out: &'a Path,
    /// Where the console is logged.
    pub console_log: &'a Path,
    /// Limit for the whole run, boot included.
    pub timeout: Duration,
    /// Limit for the guest to print its `XTASK-GUEST-UP` marker.
    pub boot_limit: Duration,
    /// What the marker means, for the failure message ("its init").
    pub what_boots: &'a str,
    /// Whether the run ends with a summary line even without one from the
    /// guest (see [`Outcome::is_suite`]).
    pub is_suite: bool,
    /// Once set, QEMU is killed and the run ends without a problem (the
    /// guest's own result, if any, still counts).
    pub stop: Option<&'a AtomicBool>,
}

impl Watch<'_> {
    /// Starts `command` (a QEMU command line), tees its console to the
    /// terminal and the log, kills it past the limits and reads the
    /// guest's result file.
    pub fn run(&self, mut command: Command) -> Result<Outcome> {
        eprintln!("xtask: booting the VM: {}", crate::cmd::describe(&command));
        eprintln!(
            "xtask: console → terminal and {}",
            self.console_log.display()
        );
        let start = Instant::now();
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot start qemu-system-x86_64 (run `cargo xtask setup`)")?;
        let state = console::State::new(start);
        let stdout = child.stdout.take().context("qemu stdout not captured")?;
        let stderr = child.stderr.take().context("qemu stderr not captured")?;
        let log = fs::File::create(self.console_log)
            .with_context(|| format!("cannot create {}", self.console_log.display()))?;
        let log = std::sync::Arc::new(std::sync::Mutex::new(log));
        let t_out = console::tee(stdout, log.clone(), state.clone(), false);
        let t_err = console::tee(stderr, log, state.clone(), true);

        let mut problem = None;
        let exit = loop {
            if let Some(status) = child.try_wait().context("waiting for qemu failed")? {
                break Some(status);
            }
            if self.stop.is_some_and(|s| s.load(Ordering::Relaxed)) {
                child.kill().ok();
                child.wait().ok();
                break None;
            }
            let elapsed = start.elapsed();
            let why = if elapsed > self.timeout {
                Some(format!(
                    "the VM did not finish within {} s (timeout; raise it with --timeout)",
                    self.timeout.as_secs()
                ))
            } else if let Some(line) = state.panic() {
                Some(format!("the guest kernel panicked: {line}"))
            } else if state.boot_time().is_none() && elapsed > self.boot_limit {
                Some(format!(
                    "the guest did not reach {} within {} s",
                    self.what_boots,
                    self.boot_limit.as_secs()
                ))
            } else {
                None
            };
            if let Some(why) = why {
                problem = Some(why);
                child.kill().ok();
                child.wait().ok();
                break None;
            }
            thread::sleep(Duration::from_millis(100));
        };
        for t in [t_out, t_err] {
            if t.join().is_err() {
                eprintln!("xtask: console reader thread panicked");
            }
        }
        if let Some(status) = exit {
            if !status.success() && problem.is_none() {
                problem = Some(format!("qemu exited with {status}"));
            }
        }

        let status = read_result(&self.out.join("result"))?;
        let summary = fs::read_to_string(self.out.join("summary"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .rev()
                    .find(|l| console::is_summary(l))
                    .map(str::to_owned)
            })
            .or_else(|| state.summary());
        Ok(Outcome {
            status,
            summary,
            problem,
            boot: state.boot_time(),
            boot_label: self.what_boots.to_owned(),
            elapsed: start.elapsed(),
            console_log: self.console_log.to_owned(),
            is_suite: self.is_suite,
        })
    }
}

/// Writes the guest's environment file: `NAME='value'` lines.
fn write_env(path: &PathBuf, paths: &Paths, out: &std::path::Path, run: &GuestRun) -> Result<()> {
    let mut vars: Vec<(String, String)> = vec![
        ("XT_WORKDIR".into(), paths.root.display().to_string()),
        ("XT_OUT".into(), out.display().to_string()),
    ];
    vars.extend(run.extra_env.iter().cloned());
    // Let a few knobs through from the host's environment.
    for name in [
        "TEST_TIMEOUT",
        "TCMU_DEBUG",
        "HARNESS_SELFTEST",
        "CONFORMANCE_REPORT_ONLY",
        "ISCSI_TEST_CU",
        "CHURN_ROUNDS",
        "CHURN_LUNS",
        "CHURN_EXPORT",
        "CHURN_EXPORT_EVERY",
        "CHURN_PARALLEL",
        "CHURN_RSS_SLACK_KIB",
    ] {
        if let Ok(v) = std::env::var(name) {
            vars.push((name.into(), v));
        }
    }
    fs::write(path, env_text(&vars)?).with_context(|| format!("cannot write {}", path.display()))
}

/// The text of a guest environment file: `NAME='value'` lines a shell
/// reads with `set -a; . FILE`.
pub fn env_text(vars: &[(String, String)]) -> Result<String> {
    let mut text = String::from("# written by cargo xtask for the test VM\n");
    for (k, v) in vars {
        if !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            bail!("bad guest variable name {k:?}");
        }
        text.push_str(&format!("{k}='{}'\n", v.replace('\'', r"'\''")));
    }
    Ok(text)
}

/// Reads `status=N` from the guest's result file; `None` when absent.
fn read_result(path: &std::path::Path) -> Result<Option<i32>> {
    let Ok(text) = fs::read_to_string(path) else {
        return Ok(None);
    };
    let status = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("status="))
        .with_context(|| format!("{} holds no status= line: {text:?}", path.display()))?;
    status
        .trim()
        .parse()
        .map(Some)
        .with_context(|| format!("{}: bad status {status:?}", path.display()))
}
