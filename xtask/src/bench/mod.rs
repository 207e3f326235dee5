//! `cargo xtask bench`: the kernel's `fileio` backstore, Debian's C
//! tcmu-runner and ours under the same fio jobs in one VM boot
//! (`tests/vm/bench.sh`), reported in `target/bench/report.md` with a bar
//! chart `target/bench/report.png`.
//!
//! `target/bench/` also caches the C peer (see [`cpeer`]) and keeps the
//! last run's raw results under `results/` (fio JSON reports, the guest's
//! `bench.tsv`, `host.tsv`), from which `--report-only` renders again.

mod chart;
pub mod cpeer;
pub mod report;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::paths::Paths;
use crate::setup::{self, Apt};
use crate::vm::{self, GuestRun};
use report::HostInfo;

/// `bench`'s options.
pub struct Options {
    /// Seconds per fio run (`BENCH_RUNTIME`).
    runtime: u64,
    /// Rounds (`BENCH_ROUNDS`).
    rounds: u64,
    /// Size of each LUN's file, MiB (`BENCH_SIZE_MIB`).
    size_mib: u64,
    /// Only the jobs whose names match this extended regex (`BENCH_JOBS`).
    jobs: Option<String>,
    /// hw_max_sectors of the user:file devices (`BENCH_HW_MAX_SECTORS`).
    hw_max_sectors: u64,
    /// Our tcmu.conf `ring_poll_us` (`BENCH_RING_POLL_US`).
    ring_poll_us: u64,
    /// How the guest's idle vCPUs wait (`BENCH_GUEST_IDLE`).
    guest_idle: GuestIdle,
    /// VM time limit; derived from the above unless given.
    timeout: Option<Duration>,
    /// Use the existing release build.
    no_build: bool,
    /// Render the report of the last run again, without a VM.
    report_only: bool,
    /// A handler's own benchmark instead of the file one: `--rbd`,
    /// `--qcow` or `--glfs`.
    handler: Option<HandlerBench>,
}

/// A handler benchmark: its guest script and where its results go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HandlerBench {
    /// `tests/vm/bench-rbd.sh`: the rbd gateways on a Ceph cluster.
    Rbd,
    /// `tests/vm/bench-qcow.sh`: ours and the C handler_qcow on one image.
    Qcow,
    /// `tests/vm/bench-glfs.sh`: ours and fio's gfapi engine on one file
    /// of a Gluster volume.
    Glfs,
}

impl HandlerBench {
    /// The handler's name: the script is `bench-<name>.sh`, the results
    /// go to `target/bench/<name>/`.
    fn name(self) -> &'static str {
        match self {
            HandlerBench::Rbd => "rbd",
            HandlerBench::Qcow => "qcow",
            HandlerBench::Glfs => "glfs",
        }
    }

    /// fio runs per round (jobs × backends).
    fn runs_per_round(self) -> u64 {
        match self {
            HandlerBench::Rbd => 2 * 3,
            // Four jobs on the image in memory (ours, C, kernel fileio),
            // two on each of the two disks with latency
            // (BENCH_QCOW_LATENCIES_US; ours and C).
            HandlerBench::Qcow => 4 * 3 + 2 * 2 * 2,
            HandlerBench::Glfs => 3 * 2,
        }
    }
}

/// What `cargo xtask help` says of `bench`.
pub const USAGE: &str = "  bench [--runtime SECS] [--rounds N] [--size-mib MIB] [--timeout SECS]
        [--jobs REGEX] [--hw-max-sectors N] [--ring-poll-us US]
        [--guest-idle halt|poll] [--no-build] [--report-only] [--rbd|--qcow|--glfs]
                        fio in the VM on the kernel's fileio backstore,
                        Debian's C tcmu-runner (user:file, its file handler
                        built from Debian's source package, cached under
                        target/bench/) and ours: 4k random read/write at
                        iodepth 1 and 32, 128k sequential, a 70/30 mix and
                        8 LUNs, interleaved rounds; writes
                        target/bench/report.md and report.png and prints the
                        table. Defaults: $BENCH_RUNTIME or 10 s a run,
                        $BENCH_ROUNDS or 3 rounds, $BENCH_SIZE_MIB or 128 MiB
                        a LUN, all jobs ($BENCH_JOBS: those matching), the
                        user:file devices' hw_max_sectors 1024
                        ($BENCH_HW_MAX_SECTORS), our ring_poll_us 0
                        ($BENCH_RING_POLL_US), idle vCPUs halt
                        ($BENCH_GUEST_IDLE; poll boots the guest with
                        idle=poll, see docs/performance.md); --report-only
                        renders the last results again. --rbd: the rbd
                        gateways instead, on a Ceph cluster in the guest:
                        our user:rbd LUN, the C tcmu-runner's handler_rbd
                        and fio's rbd engine, 4k random write and read at
                        iodepth 32, IOPS and CPU per I/O, our RSS with 1
                        and 8 rbd LUNs (tests/vm/bench-rbd.sh; table in
                        target/bench/rbd/summary.txt). --qcow: our qcow
                        handler and the C tcmu-runner's handler_qcow on one
                        qcow2 image, 4k random read/write at iodepth 32 and
                        128k sequential, IOPS and CPU per I/O, the image in
                        memory (and the kernel's fileio on a raw copy), then
                        4k on a disk with 100 µs and 1 ms
                        latency ($BENCH_QCOW_LATENCIES_US: others)
                        (tests/vm/bench-qcow.sh; target/bench/qcow/).
                        --glfs: our user:glfs LUN and fio's gfapi engine on
                        one file of a Gluster volume in the guest
                        (tests/vm/bench-glfs.sh; target/bench/glfs/)
";

/// How the guest kernel idles its vCPUs during the bench.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GuestIdle {
    /// The kernel's default: `HLT`. Under TCG a halted vCPU takes hundreds
    /// of microseconds to answer a wake-up interrupt.
    Halt,
    /// `idle=poll`: idle vCPUs spin, so a wake-up from the other vCPU is
    /// seen at once (and the host's CPUs are busy the whole run).
    Poll,
}

impl GuestIdle {
    fn parse(v: &str) -> Result<Self> {
        match v {
            "halt" => Ok(GuestIdle::Halt),
            "poll" => Ok(GuestIdle::Poll),
            _ => bail!("bench: guest idle mode {v:?} is neither halt nor poll"),
        }
    }

    /// The guest kernel's command-line words for this mode.
    fn kernel_args(self) -> Vec<String> {
        match self {
            GuestIdle::Halt => Vec::new(),
            GuestIdle::Poll => vec!["idle=poll".into()],
        }
    }
}

impl Options {
    /// Parses the command line; defaults from the environment.
    pub fn parse(args: &[String]) -> Result<Self> {
        let env = |name: &str, default: u64| -> Result<u64> {
            match std::env::var(name) {
                Ok(v) if !v.is_empty() => v
                    .parse()
                    .with_context(|| format!("{name}={v:?} is not a number")),
                _ => Ok(default),
            }
        };
        let mut o = Options {
            runtime: env("BENCH_RUNTIME", 10)?,
            rounds: env("BENCH_ROUNDS", 3)?,
            size_mib: env("BENCH_SIZE_MIB", 128)?,
            jobs: std::env::var("BENCH_JOBS").ok().filter(|v| !v.is_empty()),
            hw_max_sectors: env("BENCH_HW_MAX_SECTORS", 1024)?,
            ring_poll_us: env("BENCH_RING_POLL_US", 0)?,
            guest_idle: match std::env::var("BENCH_GUEST_IDLE") {
                Ok(v) if !v.is_empty() => GuestIdle::parse(&v)?,
                _ => GuestIdle::Halt,
            },
            timeout: None,
            no_build: false,
            report_only: false,
            handler: None,
        };
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let mut value = |name: &str| crate::next_u64(&mut it, name);
            match arg.as_str() {
                "--runtime" => o.runtime = value("--runtime")?,
                "--rounds" => o.rounds = value("--rounds")?,
                "--size-mib" => o.size_mib = value("--size-mib")?,
                "--hw-max-sectors" => o.hw_max_sectors = value("--hw-max-sectors")?,
                "--ring-poll-us" => o.ring_poll_us = value("--ring-poll-us")?,
                "--guest-idle" => {
                    o.guest_idle =
                        GuestIdle::parse(it.next().context("--guest-idle needs halt or poll")?)?;
                }
                "--jobs" => {
                    o.jobs = Some(it.next().context("--jobs needs a value")?.clone());
                }
                "--timeout" => o.timeout = Some(Duration::from_secs(value("--timeout")?)),
                "--no-build" => o.no_build = true,
                "--report-only" => o.report_only = true,
                "--rbd" => o.handler = Some(HandlerBench::Rbd),
                "--qcow" => o.handler = Some(HandlerBench::Qcow),
                "--glfs" => o.handler = Some(HandlerBench::Glfs),
                other => bail!("bench: unknown argument {other:?}"),
            }
        }
        if o.runtime == 0 || o.rounds == 0 || o.size_mib < 16 {
            bail!("bench: runtime and rounds must be at least 1, the LUN size at least 16 MiB");
        }
        // 8 files of this size live in the guest's 2 GiB of RAM.
        if o.size_mib > 160 {
            bail!("bench: --size-mib {} is too large: 8 LUN files must fit in the guest's RAM (at most 160)", o.size_mib);
        }
        Ok(o)
    }
}

/// Runs the benchmark (or renders the last one again).
pub fn run(paths: &Paths, opts: &Options) -> Result<()> {
    let dir = paths.root.join("target/bench");
    let results = dir.join("results");
    if opts.report_only {
        return render(&dir, &results);
    }
    let kernel = setup::run(paths)?;
    let mut apt = Apt::default();
    apt.ensure(&["fonts-dejavu-core"])?;
    let peer = cpeer::ensure(&dir, &mut apt)?;
    if !opts.no_build {
        crate::build_runner(paths)?;
    }

    if let Some(handler) = opts.handler {
        return run_handler(paths, opts, handler, &kernel, &peer);
    }
    let jobs_runs = 8 * 3 * opts.rounds;
    let timeout = opts
        .timeout
        .unwrap_or(Duration::from_secs(jobs_runs * (opts.runtime + 15) + 900));
    let run = GuestRun {
        script: paths.tests_vm.join("bench.sh"),
        timeout,
        extra_env: [
            guest_env(paths, opts, &peer),
            vec![
                ("BENCH_SIZE_MIB".into(), opts.size_mib.to_string()),
                ("BENCH_JOBS".into(), opts.jobs.clone().unwrap_or_default()),
                (
                    "BENCH_HW_MAX_SECTORS".into(),
                    opts.hw_max_sectors.to_string(),
                ),
                ("BENCH_RING_POLL_US".into(), opts.ring_poll_us.to_string()),
            ],
        ]
        .concat(),
        kernel_args: opts.guest_idle.kernel_args(),
        qemu_args: Vec::new(),
    };
    eprintln!(
        "xtask: bench: C peer {} vs ours; {} rounds × 8 jobs × 3 backstores × {} s (VM limit {} s)",
        peer.version,
        opts.rounds,
        opts.runtime,
        timeout.as_secs()
    );
    let mut host = HostInfo {
        load_before: load_average(),
        other_vms: other_vms(),
        ..HostInfo::default()
    };
    if host.other_vms > 0 {
        eprintln!(
            "xtask: WARNING: {} other VM(s) running: the figures will be skewed",
            host.other_vms
        );
    }
    let outcome = vm::boot_and_run(paths, &kernel, &run)?;
    host.vm_seconds = outcome.elapsed.as_secs_f64();
    host.load_after = load_average();
    host.date = date_utc();
    outcome.into_result()?;

    // Keep the raw results beside the report.
    let guest_out = paths.vm.join("out/bench");
    if results.exists() {
        fs::remove_dir_all(&results)
            .with_context(|| format!("cannot clear {}", results.display()))?;
    }
    copy_dir(&guest_out, &results)?;
    fs::write(results.join("host.tsv"), host.to_tsv())
        .with_context(|| format!("cannot write {}/host.tsv", results.display()))?;
    render(&dir, &results)
}

/// The guest variables both benchmarks take: our daemon, the C peer, the
/// length and number of rounds.
fn guest_env(paths: &Paths, opts: &Options, peer: &cpeer::CPeer) -> Vec<(String, String)> {
    let mut env = vec![(
        "TCMU_RUNNER".into(),
        paths.release_runner().display().to_string(),
    )];
    env.extend(peer.guest_env());
    env.push(("BENCH_RUNTIME".into(), opts.runtime.to_string()));
    env.push(("BENCH_ROUNDS".into(), opts.rounds.to_string()));
    if let Ok(v) = std::env::var("BENCH_QCOW_LATENCIES_US") {
        env.push(("BENCH_QCOW_LATENCIES_US".into(), v));
    }
    env
}

/// `bench --rbd` / `--qcow` / `--glfs`: `tests/vm/bench-<name>.sh` in one boot;
/// prints its table and keeps its results under `target/bench/<name>/`.
fn run_handler(
    paths: &Paths,
    opts: &Options,
    handler: HandlerBench,
    kernel: &setup::Kernel,
    peer: &cpeer::CPeer,
) -> Result<()> {
    let name = handler.name();
    let runs = handler.runs_per_round() * opts.rounds;
    let timeout = opts
        .timeout
        .unwrap_or(Duration::from_secs(runs * (opts.runtime + 30) + 900));
    let run = GuestRun {
        script: paths.tests_vm.join(format!("bench-{name}.sh")),
        timeout,
        extra_env: guest_env(paths, opts, peer),
        kernel_args: opts.guest_idle.kernel_args(),
        qemu_args: Vec::new(),
    };
    if other_vms() > 0 {
        eprintln!("xtask: WARNING: other VM(s) running: the figures will be skewed");
    }
    vm::boot_and_run(paths, kernel, &run)?.into_result()?;
    let out = paths.root.join("target/bench").join(name);
    if out.exists() {
        fs::remove_dir_all(&out).with_context(|| format!("cannot clear {}", out.display()))?;
    }
    copy_dir(&paths.vm.join(format!("out/bench-{name}")), &out)?;
    let summary = fs::read_to_string(out.join("summary.txt"))
        .with_context(|| format!("no summary in {}", out.display()))?;
    println!("{summary}");
    Ok(())
}

/// Writes report.md and report.png from `results` and prints the tables.
fn render(dir: &Path, results: &Path) -> Result<()> {
    let r = report::load(results)?;
    let host = fs::read_to_string(results.join("host.tsv"))
        .map(|t| HostInfo::from_tsv(&t))
        .unwrap_or_default();
    let md_path = dir.join("report.md");
    fs::write(&md_path, report::markdown(&r, &host))
        .with_context(|| format!("cannot write {}", md_path.display()))?;
    let png = dir.join("report.png");
    let font = chart::load_font(Path::new(chart::FONT_PATH));
    if !font {
        eprintln!(
            "xtask: note: no {} (Debian's fonts-dejavu-core): the chart has no text",
            chart::FONT_PATH
        );
    }
    chart::render(&r, &png, font)?;
    println!("\n{}", report::summary_table(&r));
    println!("{}", report::resource_lines(&r));
    println!(
        "host: load {} before, {} after, {} other VM(s) at the start",
        host.load_before, host.load_after, host.other_vms
    );
    println!("report: {}\nchart:  {}", md_path.display(), png.display());
    Ok(())
}

impl HostInfo {
    /// `key<TAB>value` lines.
    fn to_tsv(&self) -> String {
        format!(
            "date\t{}\nload_before\t{}\nload_after\t{}\nother_vms\t{}\nvm_seconds\t{:.1}\n",
            self.date, self.load_before, self.load_after, self.other_vms, self.vm_seconds
        )
    }

    /// Reads [`HostInfo::to_tsv`]'s lines; unknown or bad ones are skipped.
    fn from_tsv(text: &str) -> Self {
        let mut h = HostInfo::default();
        for line in text.lines() {
            let Some((k, v)) = line.split_once('\t') else {
                continue;
            };
            match k {
                "date" => h.date = v.to_owned(),
                "load_before" => h.load_before = v.to_owned(),
                "load_after" => h.load_after = v.to_owned(),
                "other_vms" => h.other_vms = v.parse().unwrap_or_default(),
                "vm_seconds" => h.vm_seconds = v.parse().unwrap_or_default(),
                _ => {}
            }
        }
        h
    }
}

/// The host's 1/5/15-minute load averages.
fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// QEMU processes running now (other VMs: CI, other worktrees).
fn other_vms() -> usize {
    let Ok(dir) = fs::read_dir("/proc") else {
        return 0;
    };
    dir.filter_map(|e| e.ok())
        .filter(|e| {
            fs::read_to_string(e.path().join("comm"))
                .is_ok_and(|c| c.trim().starts_with("qemu-system"))
        })
        .count()
}

/// Now, as `YYYY-MM-DD HH:MM UTC`.
fn date_utc() -> String {
    crate::cmd::output(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]))
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "?".into())
}

/// Copies the files of `from` (not recursively) into a new folder `to`.
fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    fs::create_dir_all(to).with_context(|| format!("cannot create {}", to.display()))?;
    let entries: Vec<PathBuf> = fs::read_dir(from)
        .with_context(|| format!("the guest left no results in {}", from.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    for p in entries {
        if let Some(name) = p.file_name() {
            fs::copy(&p, to.join(name)).with_context(|| format!("cannot copy {}", p.display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_idle_modes() {
        assert_eq!(GuestIdle::parse("halt").unwrap(), GuestIdle::Halt);
        assert!(GuestIdle::Halt.kernel_args().is_empty());
        assert_eq!(
            GuestIdle::parse("poll").unwrap().kernel_args(),
            ["idle=poll"]
        );
        assert!(GuestIdle::parse("mwait").is_err());
        let o = Options::parse(&["--guest-idle".into(), "poll".into()]).unwrap();
        assert_eq!(o.guest_idle, GuestIdle::Poll);
        assert!(Options::parse(&["--guest-idle".into()]).is_err());
    }
}
