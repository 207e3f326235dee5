//! `cargo xtask fuzz [--runs N] [--sanitizer S] [TARGET]`: run the cargo-fuzz
//! targets under `fuzz/` for a fixed number of executions each, as a
//! make-or-break check.
//!
//! Every target listed by `cargo fuzz list` (or the one named) is built with
//! debug assertions and AddressSanitizer (or `--sanitizer S`, any of cargo
//! fuzz's: `none` runs two to three times as many inputs a second, and
//! loses little on targets whose code under test is safe Rust: ASan sees
//! heap and stack misuse, not accesses to an `mmap`ed ring), then run by
//! libFuzzer for `N`
//! executions (default 1,000,000) over its corpus `fuzz/corpus/TARGET/`
//! (kept between runs, ignored by git) and its checked-in seeds
//! `fuzz/seeds/TARGET/`. A target fails when it crashes (panic, sanitizer
//! report, timeout, out of memory: libFuzzer leaves the input under
//! `fuzz/artifacts/TARGET/`), when libFuzzer exits non-zero, or when it did
//! not report at least `N` executions. Every target runs even after one
//! fails; the command fails if any did.
//!
//! cargo-fuzz passes unstable `-Z` flags to rustc. The machine has only a
//! stable toolchain, so the build runs with `RUSTC_BOOTSTRAP=1`, which makes
//! stable rustc accept them. The fuzz crate is its own workspace with its own
//! `fuzz/target/`, so that setting never invalidates the main build.
//! Missing tools are installed: a C++ compiler (libfuzzer-sys compiles
//! libFuzzer) through apt, cargo-fuzz through `cargo install`.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::cmd;
use crate::paths::Paths;
use crate::setup::Apt;

/// Debian packages the fuzz build needs when no C++ compiler is on `PATH`.
pub const PACKAGES: &[&str] = &["g++"];

/// Executions per target when `--runs` is not given.
const DEFAULT_RUNS: u64 = 1_000_000;

/// libFuzzer options common to every target: the longest input tried (room
/// for a CDB, a 4096-byte WRITE SAME block and the device description),
/// seconds before one input counts as hung, and the final statistics this
/// task reads.
const LIBFUZZER_ARGS: &[&str] = &["-max_len=8192", "-timeout=30", "-print_final_stats=1"];

/// Artifact name prefixes libFuzzer uses for a failing input.
const CRASH_PREFIXES: &[&str] = &["crash-", "leak-", "timeout-", "oom-"];

/// `cargo xtask fuzz` options.
pub struct Options {
    /// Executions per target.
    runs: u64,
    /// Only this target; all when `None`.
    target: Option<String>,
    /// `cargo fuzz --sanitizer`; cargo fuzz's default (address) when `None`.
    sanitizer: Option<String>,
}

impl Options {
    /// Parses `[--runs N] [--sanitizer S] [TARGET]`.
    pub fn parse(args: &[String]) -> Result<Self> {
        let mut opts = Options {
            runs: DEFAULT_RUNS,
            target: None,
            sanitizer: None,
        };
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let runs = match arg.as_str() {
                "--runs" => Some(it.next().context("--runs needs a value")?.as_str()),
                s => s.strip_prefix("--runs="),
            };
            let sanitizer = match arg.as_str() {
                "--sanitizer" => Some(it.next().context("--sanitizer needs a value")?.as_str()),
                s => s.strip_prefix("--sanitizer="),
            };
            if let Some(v) = sanitizer {
                opts.sanitizer = Some(v.to_owned());
            } else if let Some(v) = runs {
                opts.runs = v
                    .replace('_', "")
                    .parse()
                    .ok()
                    .filter(|&n| n > 0)
                    .with_context(|| format!("--runs: {v:?} is not a positive number"))?;
            } else if arg.starts_with('-') {
                bail!("fuzz: unknown option {arg}");
            } else if opts.target.replace(arg.clone()).is_some() {
                bail!("fuzz: expected at most one TARGET");
            }
        }
        Ok(opts)
    }
}

/// What one target's run came to.
struct TargetReport {
    /// Target name.
    name: String,
    /// `stat::number_of_executed_units`, if libFuzzer got that far.
    executions: Option<u64>,
    /// Failing inputs libFuzzer saved during this run.
    crashes: Vec<PathBuf>,
    /// The first panic or error message of the run.
    error: Option<String>,
    /// Inputs in the corpus folder before the run.
    corpus_before: usize,
    /// Inputs in the corpus folder after the run.
    corpus: usize,
    /// Time to build the target.
    build_time: Duration,
    /// Time libFuzzer ran.
    fuzz_time: Duration,
    /// Why the target failed, if it did.
    failure: Option<String>,
}

/// Runs the selected targets and fails if any of them failed.
pub fn run(paths: &Paths, opts: &Options) -> Result<()> {
    let fuzz_dir = paths.root.join("fuzz");
    if !fuzz_dir.join("Cargo.toml").is_file() {
        bail!("no cargo-fuzz project at {}", fuzz_dir.display());
    }
    ensure_cxx()?;
    ensure_cargo_fuzz()?;
    let all = list_targets(paths)?;
    let targets = match &opts.target {
        Some(t) if all.contains(t) => vec![t.clone()],
        Some(t) => bail!("no fuzz target {t:?}; the targets are: {}", all.join(", ")),
        None if all.is_empty() => bail!("`cargo fuzz list` found no fuzz targets"),
        None => all,
    };
    let mut reports = Vec::new();
    for name in targets {
        reports.push(run_target(paths, &fuzz_dir, &name, opts)?);
    }

    eprintln!();
    eprintln!(
        "xtask: fuzz summary ({} executions asked per target):",
        opts.runs
    );
    for r in &reports {
        eprintln!("xtask:   {}", r.summary());
        if let (Some(e), Some(_)) = (&r.error, &r.failure) {
            eprintln!("xtask:     {e}");
        }
        for c in &r.crashes {
            eprintln!("xtask:     failing input: {}", c.display());
        }
    }
    let failed: Vec<&str> = reports
        .iter()
        .filter(|r| r.failure.is_some())
        .map(|r| r.name.as_str())
        .collect();
    eprintln!(
        "fuzz: {} passed, {} failed",
        reports.len() - failed.len(),
        failed.len()
    );
    if !failed.is_empty() {
        bail!("fuzz target(s) failed: {}", failed.join(", "));
    }
    Ok(())
}

impl TargetReport {
    /// One line: verdict, executions, crashes, corpus, times.
    fn summary(&self) -> String {
        let executions = self
            .executions
            .map_or_else(|| "no".to_owned(), |n| n.to_string());
        let verdict = match &self.failure {
            None => "ok".to_owned(),
            Some(why) => format!("FAILED: {why}"),
        };
        format!(
            "{}: {verdict}; {executions} executions, {} crashes, corpus {} inputs (was {}), \
             fuzzing {:.1} s (build {:.1} s)",
            self.name,
            self.crashes.len(),
            self.corpus,
            self.corpus_before,
            self.fuzz_time.as_secs_f64(),
            self.build_time.as_secs_f64(),
        )
    }
}

/// Makes sure a C++ compiler is there for libfuzzer-sys's build script
/// (which uses `$CXX`, else `c++`); installs [`PACKAGES`] otherwise.
fn ensure_cxx() -> Result<()> {
    let cxx = std::env::var_os("CXX").unwrap_or_else(|| "c++".into());
    let found = Command::new(&cxx)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        Apt::default()
            .ensure(PACKAGES)
            .context("installing a C++ compiler for libFuzzer failed")?;
    }
    Ok(())
}

/// Installs cargo-fuzz from crates.io unless `cargo fuzz` already works.
fn ensure_cargo_fuzz() -> Result<()> {
    let present = cmd::cargo()
        .args(["fuzz", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !present {
        cmd::run(cmd::cargo().args(["install", "cargo-fuzz", "--locked"]))
            .context("installing cargo-fuzz failed")?;
    }
    Ok(())
}

/// `cargo fuzz` with the environment that lets stable rustc take its flags.
fn cargo_fuzz(paths: &Paths) -> Command {
    let mut c = cmd::cargo();
    c.arg("fuzz")
        .env("RUSTC_BOOTSTRAP", "1")
        .current_dir(&paths.root);
    c
}

/// The target names `cargo fuzz list` prints.
fn list_targets(paths: &Paths) -> Result<Vec<String>> {
    let out = cmd::output(cargo_fuzz(paths).arg("list"))?;
    Ok(out
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect())
}

/// Builds and runs one target; an `Err` only for trouble around the run
/// (folders, starting processes), never for what the fuzzer found.
fn run_target(paths: &Paths, fuzz_dir: &Path, name: &str, opts: &Options) -> Result<TargetReport> {
    let runs = opts.runs;
    let sanitizer: &[&str] = match &opts.sanitizer {
        Some(s) => &["--sanitizer", s],
        None => &[],
    };
    eprintln!("xtask: fuzz target {name}: building");
    let build_start = Instant::now();
    let built = cmd::run(
        cargo_fuzz(paths)
            .args(["build", "--debug-assertions"])
            .args(sanitizer)
            .arg(name),
    );
    let build_time = build_start.elapsed();
    let corpus_dir = fuzz_dir.join("corpus").join(name);
    let artifacts_dir = fuzz_dir.join("artifacts").join(name);
    let corpus_before = count_files(&corpus_dir)?;
    let mut report = TargetReport {
        name: name.to_owned(),
        executions: None,
        crashes: Vec::new(),
        error: None,
        corpus_before,
        corpus: corpus_before,
        build_time,
        fuzz_time: Duration::ZERO,
        failure: None,
    };
    if let Err(e) = built {
        report.failure = Some(format!("build failed: {e:#}"));
        return Ok(report);
    }

    fs::create_dir_all(&corpus_dir)
        .with_context(|| format!("cannot create {}", corpus_dir.display()))?;
    let seeds_dir = fuzz_dir.join("seeds").join(name);
    let before = crash_files(&artifacts_dir)?;

    let mut fuzz = cargo_fuzz(paths);
    fuzz.args(["run", "--debug-assertions"])
        .args(sanitizer)
        .arg(name)
        .arg(&corpus_dir);
    if seeds_dir.is_dir() {
        fuzz.arg(&seeds_dir);
    }
    fuzz.arg("--")
        .arg(format!("-runs={runs}"))
        .args(LIBFUZZER_ARGS);
    eprintln!("xtask: $ {}", cmd::describe(&fuzz));
    let fuzz_start = Instant::now();
    let mut child = fuzz
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot start `cargo fuzz run`")?;
    let stats = match child.stderr.take() {
        Some(stderr) => pass_through(stderr),
        None => Stats::default(),
    };
    let status = child
        .wait()
        .context("waiting for `cargo fuzz run` failed")?;
    report.fuzz_time = fuzz_start.elapsed();

    report.executions = stats.executions;
    report.error = stats.error;
    report.corpus = count_files(&corpus_dir)?;
    report.crashes = crash_files(&artifacts_dir)?
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    report.failure = if !report.crashes.is_empty() {
        Some(format!("{} failing input(s) saved", report.crashes.len()))
    } else if !status.success() {
        Some(format!("libFuzzer exited with {status}"))
    } else {
        match stats.executions {
            None => Some("libFuzzer reported no executions".to_owned()),
            Some(n) if n < runs => Some(format!("only {n} of {runs} executions")),
            Some(_) => None,
        }
    };
    Ok(report)
}

/// Figures read from libFuzzer's final statistics.
#[derive(Default)]
struct Stats {
    /// `stat::number_of_executed_units`.
    executions: Option<u64>,
    /// What went wrong first: a panic's location and message, or
    /// libFuzzer's or a sanitizer's `ERROR:` line.
    error: Option<String>,
}

/// Copies the fuzzer's stderr to ours, minus the per-input "NEW"/"REDUCE"
/// progress lines, and picks out the final statistics.
fn pass_through(stderr: impl std::io::Read) -> Stats {
    let mut stats = Stats::default();
    let mut reader = BufReader::new(stderr);
    let mut buf = Vec::new();
    // The panic message is on the line after "panicked at".
    let mut in_panic = false;
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let line = String::from_utf8_lossy(&buf);
        let line = line.trim_end();
        if let Some(v) = stat(line, "number_of_executed_units") {
            stats.executions = Some(v);
        }
        if in_panic {
            if let Some(e) = &mut stats.error {
                e.push(' ');
                e.push_str(line.trim());
            }
            in_panic = false;
        } else if stats.error.is_none() {
            if line.contains(" panicked at ") {
                stats.error = Some(line.trim().to_owned());
                in_panic = true;
            } else if line.contains("ERROR: ") {
                stats.error = Some(line.trim().to_owned());
            }
        }
        if !is_progress(line) {
            eprintln!("{line}");
        }
    }
    stats
}

/// The value of a `stat::NAME: VALUE` line.
fn stat(line: &str, name: &str) -> Option<u64> {
    line.strip_prefix("stat::")?
        .strip_prefix(name)?
        .strip_prefix(':')?
        .trim()
        .parse()
        .ok()
}

/// libFuzzer's line for each input added to or shrunk in the corpus
/// (`#123  NEW    cov: ...`, `#456  REDUCE cov: ...`, `  NEW_FUNC[..]`).
fn is_progress(line: &str) -> bool {
    let mut words = line.split_whitespace();
    match words.next() {
        Some(w) if w.starts_with('#') => matches!(words.next(), Some("NEW" | "REDUCE")),
        Some(w) => w.starts_with("NEW_FUNC["),
        None => false,
    }
}

/// Files directly in `dir` (0 when it does not exist).
fn count_files(dir: &Path) -> Result<usize> {
    Ok(list_files(dir)?.len())
}

/// The failing inputs libFuzzer saved in `dir`.
fn crash_files(dir: &Path) -> Result<Vec<PathBuf>> {
    Ok(list_files(dir)?
        .into_iter()
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| CRASH_PREFIXES.iter().any(|pre| n.starts_with(pre)))
        })
        .collect())
}

/// Regular files directly in `dir`, sorted; empty when `dir` does not
/// exist.
fn list_files(dir: &Path) -> Result<Vec<PathBuf>> {
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let entry = entry.with_context(|| format!("cannot list {}", dir.display()))?;
        if entry.file_type().is_ok_and(|t| t.is_file()) {
            files.push(entry.path());
        }
    }
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::{is_progress, stat, Options};

    fn parse(args: &[&str]) -> anyhow::Result<Options> {
        Options::parse(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn options() {
        let o = parse(&[]).unwrap();
        assert_eq!((o.runs, o.target), (1_000_000, None));
        let o = parse(&["--runs", "1_000", "scsi_cdb"]).unwrap();
        assert_eq!((o.runs, o.target.as_deref()), (1000, Some("scsi_cdb")));
        let o = parse(&["--runs=5"]).unwrap();
        assert_eq!(o.runs, 5);
        let o = parse(&["--sanitizer", "none", "ring_entry"]).unwrap();
        assert_eq!(o.sanitizer.as_deref(), Some("none"));
        assert_eq!(
            parse(&["--sanitizer=none"]).unwrap().sanitizer.as_deref(),
            Some("none")
        );
        assert!(parse(&["--sanitizer"]).is_err());
        assert!(parse(&["--runs"]).is_err());
        assert!(parse(&["--runs", "0"]).is_err());
        assert!(parse(&["--runs", "x"]).is_err());
        assert!(parse(&["a", "b"]).is_err());
        assert!(parse(&["--jobs"]).is_err());
    }

    #[test]
    fn stats_lines() {
        assert_eq!(
            stat(
                "stat::number_of_executed_units: 1000000",
                "number_of_executed_units"
            ),
            Some(1_000_000)
        );
        assert_eq!(
            stat("stat::new_units_added:          603", "new_units_added"),
            Some(603)
        );
        assert_eq!(stat("stat::peak_rss_mb: 79", "new_units_added"), None);
        assert_eq!(
            stat("Done 20000 runs in 2 second(s)", "new_units_added"),
            None
        );
    }

    #[test]
    fn progress_lines() {
        assert!(is_progress(
            "#18\tNEW    cov: 689 ft: 730 corp: 16/771b lim: 531"
        ));
        assert!(is_progress("#2048\tREDUCE cov: 700 ft: 800 corp: 20/1Kb"));
        assert!(is_progress("\tNEW_FUNC[1/1]: 0x55 in foo"));
        assert!(!is_progress("#16\tINITED cov: 670 ft: 709 corp: 15/737b"));
        assert!(!is_progress(
            "#524288\tpulse  cov: 900 ft: 2000 corp: 400/20Kb"
        ));
        assert!(!is_progress(
            "#1000000\tDONE   cov: 900 ft: 2000 corp: 400/20Kb"
        ));
        assert!(!is_progress(""));
    }
}
