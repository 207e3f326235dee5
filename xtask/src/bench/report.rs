//! The benchmark's results: what the guest wrote (`bench.tsv` and one fio
//! JSON report per run, see `tests/vm/bench.sh`), reduced to medians per
//! job and backstore, and rendered as markdown.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_json::Value;

/// The backstores, in the order of the report's rows.
pub const BACKSTORES: [Backstore; 3] = [Backstore::Fileio, Backstore::C, Backstore::Ours];

/// One of the three backstores measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Backstore {
    /// The kernel's own `fileio` backstore: the reference.
    Fileio,
    /// Debian's C tcmu-runner, `user:file`.
    C,
    /// tcmu-rs, `user:file`.
    Ours,
}

impl Backstore {
    /// The name bench.sh uses.
    fn parse(s: &str) -> Result<Self> {
        match s {
            "fileio" => Ok(Backstore::Fileio),
            "c" => Ok(Backstore::C),
            "ours" => Ok(Backstore::Ours),
            _ => bail!("unknown backstore {s:?}"),
        }
    }

    /// The row label.
    pub fn label(self) -> &'static str {
        match self {
            Backstore::Fileio => "kernel fileio",
            Backstore::C => "C tcmu-runner",
            Backstore::Ours => "tcmu-rs",
        }
    }
}

/// What one fio report says, both directions together.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct FioSummary {
    /// Read + write I/Os per second.
    pub iops: f64,
    /// Read + write bandwidth, MiB/s.
    pub mib_s: f64,
    /// Mean total latency (submission to completion), µs, weighted by
    /// each direction's I/O count.
    pub lat_mean_us: f64,
    /// 99th percentile of the total latency, µs (the larger of the two
    /// directions' for mixed jobs: fio reports no combined percentile).
    pub lat_p99_us: f64,
    /// I/Os completed.
    pub ios: u64,
}

/// Reads one fio JSON report (all its jobs, e.g. one per LUN without
/// group reporting, are added up).
pub fn parse_fio(json: &str) -> Result<FioSummary> {
    let v: Value = serde_json::from_str(json).context("not a fio JSON report")?;
    let jobs = v["jobs"]
        .as_array()
        .filter(|j| !j.is_empty())
        .context("fio report has no jobs")?;
    let mut s = FioSummary::default();
    let mut lat_weighted = 0.0;
    for job in jobs {
        if job["error"].as_u64().unwrap_or(0) != 0 {
            bail!("fio job {} reported error {}", job["jobname"], job["error"]);
        }
        for dir in ["read", "write"] {
            let d = &job[dir];
            let ios = d["total_ios"].as_u64().unwrap_or(0);
            if ios == 0 {
                continue;
            }
            let num = |v: &Value, what: &str| {
                v.as_f64()
                    .with_context(|| format!("fio report: {dir}.{what} missing"))
            };
            s.ios += ios;
            s.iops += num(&d["iops"], "iops")?;
            s.mib_s += num(&d["bw_bytes"], "bw_bytes")? / 1_048_576.0;
            // lat_ns (with --lat_percentiles=1) or else clat_ns percentiles.
            let lat = &d["lat_ns"];
            lat_weighted += num(&lat["mean"], "lat_ns.mean")? * ios as f64;
            let p99 = lat["percentile"]["99.000000"]
                .as_f64()
                .or_else(|| d["clat_ns"]["percentile"]["99.000000"].as_f64())
                .with_context(|| format!("fio report: no 99th percentile for {dir}"))?;
            s.lat_p99_us = s.lat_p99_us.max(p99 / 1000.0);
        }
    }
    if s.ios == 0 {
        bail!("fio report counts no I/O");
    }
    s.lat_mean_us = lat_weighted / s.ios as f64 / 1000.0;
    Ok(s)
}

/// A job of the benchmark.
#[derive(Clone, Debug, PartialEq)]
pub struct Job {
    /// Its name, e.g. `randread-4k-qd32`.
    pub name: String,
    /// LUNs it runs on at once.
    pub luns: u32,
    /// What it does, in words.
    pub desc: String,
}

/// One fio run as bench.sh recorded it.
#[derive(Clone, Debug, PartialEq)]
struct RunRecord {
    /// The job's name.
    job: String,
    /// Where it ran.
    backstore: Backstore,
    /// The round (1-based).
    round: u32,
    /// The JSON report's file name.
    file: String,
    /// The daemon's utime+stime over the run, in clock ticks (None for
    /// fileio).
    cpu_ticks: Option<u64>,
}

/// A memory sample of a daemon.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Mem {
    /// Which daemon.
    pub daemon: Backstore,
    /// TCMU devices it served.
    pub devices: u32,
    /// VmRSS, KiB.
    pub rss_kib: u64,
    /// RssAnon, KiB.
    pub anon_kib: u64,
    /// RssFile, KiB.
    pub file_kib: u64,
    /// RssShmem, KiB (the rings' shared memory shows here).
    pub shmem_kib: u64,
}

/// CPU a daemon burnt while no I/O ran.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Idle {
    /// Which daemon.
    pub daemon: Backstore,
    /// TCMU devices it served.
    pub devices: u32,
    /// How long it was watched, seconds.
    pub seconds: u64,
    /// utime+stime over that time, clock ticks.
    pub ticks: u64,
}

/// One run, parsed.
#[derive(Clone, Debug, PartialEq)]
pub struct Run {
    /// The job's name.
    pub job: String,
    /// Where it ran.
    pub backstore: Backstore,
    /// The round (1-based).
    pub round: u32,
    /// fio's figures.
    pub fio: FioSummary,
    /// Daemon CPU time per I/O, µs.
    pub cpu_us_per_io: Option<f64>,
}

/// Everything one benchmark produced.
#[derive(Debug, Default)]
pub struct Results {
    /// `info` lines: kernel, vcpus, runtime, rounds, versions…
    pub info: BTreeMap<String, String>,
    /// The jobs, in the order they ran.
    pub jobs: Vec<Job>,
    /// Every run.
    pub runs: Vec<Run>,
    /// Memory samples.
    pub mem: Vec<Mem>,
    /// Idle CPU samples.
    pub idle: Vec<Idle>,
}

/// Reads `bench.tsv` and the fio reports it names from `dir`.
pub fn load(dir: &Path) -> Result<Results> {
    let tsv_path = dir.join("bench.tsv");
    let tsv = fs::read_to_string(&tsv_path)
        .with_context(|| format!("cannot read {}", tsv_path.display()))?;
    let (mut results, records) = parse_tsv(&tsv)?;
    let clk_tck: f64 = results
        .info
        .get("clk_tck")
        .map(|s| s.parse())
        .transpose()
        .context("bad clk_tck")?
        .unwrap_or(100.0);
    for r in records {
        let path = dir.join(&r.file);
        let json =
            fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let fio = parse_fio(&json).with_context(|| format!("in {}", path.display()))?;
        let cpu_us_per_io = r
            .cpu_ticks
            .map(|t| t as f64 / clk_tck * 1e6 / fio.ios as f64);
        results.runs.push(Run {
            job: r.job,
            backstore: r.backstore,
            round: r.round,
            fio,
            cpu_us_per_io,
        });
    }
    if results.runs.is_empty() {
        bail!("{} records no run", tsv_path.display());
    }
    Ok(results)
}

/// Parses bench.tsv's records.
fn parse_tsv(tsv: &str) -> Result<(Results, Vec<RunRecord>)> {
    let mut results = Results::default();
    let mut runs = Vec::new();
    for (n, line) in tsv.lines().enumerate() {
        let f: Vec<&str> = line.split('\t').collect();
        let bad = || format!("bench.tsv line {}: {line:?}", n + 1);
        let num = |s: &str| -> Result<u64> { s.parse().with_context(bad) };
        match f.as_slice() {
            [] | [""] => {}
            ["info", key, value] => {
                results.info.insert((*key).to_owned(), (*value).to_owned());
            }
            ["job", name, luns, desc] => results.jobs.push(Job {
                name: (*name).to_owned(),
                luns: luns.parse().with_context(bad)?,
                desc: (*desc).to_owned(),
            }),
            ["run", job, bs, round, file, ticks] => runs.push(RunRecord {
                job: (*job).to_owned(),
                backstore: Backstore::parse(bs).with_context(bad)?,
                round: round.parse().with_context(bad)?,
                file: (*file).to_owned(),
                cpu_ticks: match *ticks {
                    "-" => None,
                    t => Some(num(t)?),
                },
            }),
            ["mem", daemon, devices, rss, anon, file, shmem] => results.mem.push(Mem {
                daemon: Backstore::parse(daemon).with_context(bad)?,
                devices: devices.parse().with_context(bad)?,
                rss_kib: num(rss)?,
                anon_kib: num(anon)?,
                file_kib: num(file)?,
                shmem_kib: num(shmem)?,
            }),
            ["idle", daemon, devices, seconds, ticks] => results.idle.push(Idle {
                daemon: Backstore::parse(daemon).with_context(bad)?,
                devices: devices.parse().with_context(bad)?,
                seconds: num(seconds)?,
                ticks: num(ticks)?,
            }),
            _ => bail!("{}: unknown record", bad()),
        }
    }
    Ok((results, runs))
}

/// The median of `v` (the mean of the middle two for an even count).
pub fn median(v: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    })
}

/// The medians of one job on one backstore.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Cell {
    /// Median of each figure over the rounds.
    pub fio: FioSummary,
    /// Median daemon CPU µs per I/O.
    pub cpu_us_per_io: Option<f64>,
    /// Runs the medians are taken over.
    pub runs: usize,
}

impl Results {
    /// The medians of `job` on `bs`, if it ran there.
    pub fn cell(&self, job: &str, bs: Backstore) -> Option<Cell> {
        let runs: Vec<&Run> = self
            .runs
            .iter()
            .filter(|r| r.job == job && r.backstore == bs)
            .collect();
        let m = |f: fn(&Run) -> f64| median(&runs.iter().map(|r| f(r)).collect::<Vec<_>>());
        Some(Cell {
            fio: FioSummary {
                iops: m(|r| r.fio.iops)?,
                mib_s: m(|r| r.fio.mib_s)?,
                lat_mean_us: m(|r| r.fio.lat_mean_us)?,
                lat_p99_us: m(|r| r.fio.lat_p99_us)?,
                ios: 0,
            },
            cpu_us_per_io: median(
                &runs
                    .iter()
                    .filter_map(|r| r.cpu_us_per_io)
                    .collect::<Vec<_>>(),
            ),
            runs: runs.len(),
        })
    }

    /// The IOPS ratio of `bs` to fileio for `job`.
    pub fn iops_ratio(&self, job: &str, bs: Backstore, to: Backstore) -> Option<f64> {
        ratio(self.cell(job, bs)?.fio.iops, self.cell(job, to)?.fio.iops)
    }

    /// The IOPS ratio of `bs` to `to` for `job` in each round both ran in,
    /// by round. Backstores run back to back within a round, so these
    /// pair figures taken minutes apart at most: their spread shows how
    /// far the machine drifted, which the medians hide.
    pub fn round_ratios(&self, job: &str, bs: Backstore, to: Backstore) -> Vec<f64> {
        let of = |b: Backstore| {
            self.runs
                .iter()
                .filter(move |r| r.job == job && r.backstore == b)
        };
        of(bs)
            .filter_map(|r| {
                let other = of(to).find(|o| o.round == r.round)?;
                ratio(r.fio.iops, other.fio.iops)
            })
            .collect()
    }

    /// The largest memory sample of `daemon` serving `devices` devices.
    pub fn mem_max(&self, daemon: Backstore, devices: u32) -> Option<Mem> {
        self.mem
            .iter()
            .filter(|m| m.daemon == daemon && m.devices == devices)
            .copied()
            .max_by_key(|m| m.rss_kib)
    }

    /// A job's row in the summary, by name.
    fn job(&self, name: &str) -> Option<&Job> {
        self.jobs.iter().find(|j| j.name == name)
    }
}

/// `a / b`, when both are positive.
fn ratio(a: f64, b: f64) -> Option<f64> {
    (a > 0.0 && b > 0.0).then(|| a / b)
}

/// `0.81–0.97×` (the smallest and largest of `v`), `0.90×` for one value,
/// `–` for none.
fn fmt_range(v: &[f64]) -> String {
    let lo = v.iter().copied().reduce(f64::min);
    let hi = v.iter().copied().reduce(f64::max);
    match (lo, hi) {
        (Some(lo), Some(hi)) if format!("{lo:.2}") != format!("{hi:.2}") => {
            format!("{lo:.2}–{hi:.2}×")
        }
        (Some(lo), _) => fmt_ratio(Some(lo)),
        _ => fmt_ratio(None),
    }
}

/// `1.23×` or `–`.
fn fmt_ratio(r: Option<f64>) -> String {
    r.map_or("–".to_owned(), |r| format!("{r:.2}×"))
}

/// A number with thousands separators and `digits` decimals.
fn fmt_num(x: f64, digits: usize) -> String {
    let s = format!("{x:.digits$}");
    let (int, frac) = s.split_once('.').map_or((s.as_str(), ""), |(i, f)| (i, f));
    let (sign, int) = int.strip_prefix('-').map_or(("", int), |i| ("-", i));
    let mut out = String::new();
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if frac.is_empty() {
        format!("{sign}{out}")
    } else {
        format!("{sign}{out}.{frac}")
    }
}

/// KiB as MiB with one decimal.
fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// Facts about the host the run was made on, recorded by xtask.
#[derive(Clone, Debug, Default)]
pub struct HostInfo {
    /// When the report was made (UTC, `date -u` style).
    pub date: String,
    /// Host load averages before and after the run.
    pub load_before: String,
    /// See `load_before`.
    pub load_after: String,
    /// Other QEMU processes running when the run started (other VMs skew
    /// the figures).
    pub other_vms: usize,
    /// Seconds the VM ran.
    pub vm_seconds: f64,
}

/// The summary table: one line per job, IOPS of each backstore and the
/// ratios (what `cargo xtask bench` prints, and the README and
/// docs/performance.md show).
pub fn summary_table(r: &Results) -> String {
    let mut s = String::new();
    s.push_str("| job | fileio IOPS | C IOPS | tcmu-rs IOPS | tcmu-rs / fileio | tcmu-rs / C | C / fileio | tcmu-rs / fileio by round |\n");
    s.push_str("|---|---:|---:|---:|---:|---:|---:|---:|\n");
    for job in &r.jobs {
        let iops = |bs| {
            r.cell(&job.name, bs)
                .map_or("–".to_owned(), |c| fmt_num(c.fio.iops, 0))
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            job.name,
            iops(Backstore::Fileio),
            iops(Backstore::C),
            iops(Backstore::Ours),
            fmt_ratio(r.iops_ratio(&job.name, Backstore::Ours, Backstore::Fileio)),
            fmt_ratio(r.iops_ratio(&job.name, Backstore::Ours, Backstore::C)),
            fmt_ratio(r.iops_ratio(&job.name, Backstore::C, Backstore::Fileio)),
            fmt_range(&r.round_ratios(&job.name, Backstore::Ours, Backstore::Fileio)),
        );
    }
    s
}

/// The resource lines: daemon CPU per I/O and memory.
pub fn resource_lines(r: &Results) -> String {
    let mut s = String::new();
    s.push_str("Daemon CPU time (utime + stime of the whole process) per I/O, µs, medians:\n\n");
    s.push_str("| job | C tcmu-runner | tcmu-rs | tcmu-rs / C |\n|---|---:|---:|---:|\n");
    for job in &r.jobs {
        let cpu = |bs| r.cell(&job.name, bs).and_then(|c| c.cpu_us_per_io);
        let (c, o) = (cpu(Backstore::C), cpu(Backstore::Ours));
        let f = |x: Option<f64>| x.map_or("–".to_owned(), |x| fmt_num(x, 1));
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} |",
            job.name,
            f(c),
            f(o),
            fmt_ratio(c.zip(o).and_then(|(c, o)| ratio(o, c)))
        );
    }
    s.push('\n');
    let clk_tck: f64 = r
        .info
        .get("clk_tck")
        .and_then(|s| s.parse().ok())
        .unwrap_or(100.0);
    for i in &r.idle {
        let _ = writeln!(
            s,
            "- {} idle with {} devices: {:.1}% of a CPU ({} ticks in {} s)",
            i.daemon.label(),
            i.devices,
            i.ticks as f64 / clk_tck / i.seconds.max(1) as f64 * 100.0,
            i.ticks,
            i.seconds
        );
    }
    let mut devices: Vec<u32> = r.mem.iter().map(|m| m.devices).collect();
    devices.sort_unstable();
    devices.dedup();
    for daemon in [Backstore::Ours, Backstore::C] {
        for &d in &devices {
            if let Some(m) = r.mem_max(daemon, d) {
                let _ = writeln!(
                    s,
                    "- {} memory with {d} device{}: VmRSS {}, RssAnon {}, RssFile {}, RssShmem {} (largest sample)",
                    daemon.label(),
                    if d == 1 { "" } else { "s" },
                    mib(m.rss_kib),
                    mib(m.anon_kib),
                    mib(m.file_kib),
                    mib(m.shmem_kib),
                );
            }
        }
    }
    s
}

/// The whole report (`target/bench/report.md`).
pub fn markdown(r: &Results, host: &HostInfo) -> String {
    let info = |k: &str| r.info.get(k).map_or("?", String::as_str);
    let rounds = info("rounds");
    let mut s = String::new();
    s.push_str("# tcmu-rs benchmark (`cargo xtask bench`)\n\n");
    let _ = writeln!(
        s,
        "- made {}; guest kernel {}, {} vCPUs (QEMU TCG, idle vCPUs: {}), {} MiB; {}",
        host.date,
        info("kernel"),
        info("vcpus"),
        info("guest_idle"),
        info("memory_mib"),
        info("fio"),
    );
    let _ = writeln!(
        s,
        "- each run {} s, {} rounds interleaved (backstores back to back per job); figures are medians over the rounds",
        info("runtime"),
        rounds,
    );
    let _ = writeln!(
        s,
        "- every LUN on its own {} MiB tmpfs file in the guest, prefilled; fio libaio, direct=1; exported through tcm_loop",
        info("size_mib")
    );
    let _ = writeln!(
        s,
        "- user:file devices (C and ours): hw_max_sectors {}; ours with ring_poll_us {}",
        info("hw_max_sectors"),
        info("ring_poll_us"),
    );
    let _ = writeln!(
        s,
        "- C peer: Debian's {} with handler_file built from its source package; ours: {}",
        info("c_version"),
        info("ours_version"),
    );
    let _ = writeln!(
        s,
        "- host: load average {} before, {} after; {} other VM(s) running at the start; VM time {:.0} s",
        host.load_before, host.load_after, host.other_vms, host.vm_seconds
    );
    s.push_str("\nUnder TCG only ratios measured in one boot mean anything. The summary's last column gives the ratio to `fileio` round by round (smallest–largest): the backstores ran back to back in each round, so its spread is the machine's drift; a gap smaller than that spread is not a finding.\n\n");
    s.push_str("## Summary (IOPS)\n\n");
    s.push_str(&summary_table(r));
    s.push_str("\n## Resources\n\n");
    s.push_str(&resource_lines(r));
    s.push_str("\n## Jobs\n");
    for job in &r.jobs {
        let _ = writeln!(
            s,
            "\n### {} (`{}`{})\n",
            job.desc,
            job.name,
            if job.luns > 1 {
                format!(", {} LUNs", job.luns)
            } else {
                String::new()
            }
        );
        s.push_str("| backstore | IOPS | MiB/s | mean lat µs | p99 lat µs | CPU µs/IO | runs |\n");
        s.push_str("|---|---:|---:|---:|---:|---:|---:|\n");
        let cells: Vec<(Backstore, Option<Cell>)> = BACKSTORES
            .iter()
            .map(|&bs| (bs, r.cell(&job.name, bs)))
            .collect();
        for (bs, cell) in &cells {
            match cell {
                Some(c) => {
                    let _ = writeln!(
                        s,
                        "| {} | {} | {} | {} | {} | {} | {} |",
                        bs.label(),
                        fmt_num(c.fio.iops, 0),
                        fmt_num(c.fio.mib_s, 1),
                        fmt_num(c.fio.lat_mean_us, 1),
                        fmt_num(c.fio.lat_p99_us, 1),
                        c.cpu_us_per_io.map_or("–".to_owned(), |x| fmt_num(x, 1)),
                        c.runs
                    );
                }
                None => {
                    let _ = writeln!(s, "| {} | – | – | – | – | – | 0 |", bs.label());
                }
            }
        }
        let get = |bs: Backstore| cells.iter().find(|(b, _)| *b == bs).and_then(|(_, c)| *c);
        for (label, other) in [("fileio", Backstore::Fileio), ("C", Backstore::C)] {
            let (o, x) = (get(Backstore::Ours), get(other));
            let rr =
                |f: fn(&Cell) -> f64| fmt_ratio(o.zip(x).and_then(|(o, x)| ratio(f(&o), f(&x))));
            let cpu = o
                .zip(x)
                .and_then(|(o, x)| o.cpu_us_per_io.zip(x.cpu_us_per_io))
                .and_then(|(o, x)| ratio(o, x));
            let _ = writeln!(
                s,
                "| *tcmu-rs / {label}* | {} | {} | {} | {} | {} | |",
                rr(|c| c.fio.iops),
                rr(|c| c.fio.mib_s),
                rr(|c| c.fio.lat_mean_us),
                rr(|c| c.fio.lat_p99_us),
                fmt_ratio(cpu),
            );
        }
    }
    s.push_str("\nLatency is fio's total latency (submission to completion); for the mixed job the mean is weighted by I/O count and p99 is the larger of the read and write p99.\n");
    s.push_str("Raw fio JSON reports and the guest's bench.tsv are in target/bench/results/.\n");
    s
}

/// A short label for a job in the chart.
pub fn short_label(r: &Results, name: &str) -> String {
    let luns = r.job(name).map_or(1, |j| j.luns);
    let base = name
        .replace("randread", "rand read")
        .replace("randwrite", "rand write")
        .replace("randrw70", "70/30 mix")
        .replace("-8luns", "");
    let base = base.replace('-', " ");
    if luns > 1 {
        format!("{base} ×{luns}")
    } else {
        base
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A trimmed fio 3.33 JSON report of one read job, group reporting.
    pub(crate) const READ_JSON: &str = r#"{
      "fio version" : "fio-3.33",
      "jobs" : [ {
        "jobname" : "lun0", "groupid" : 0, "error" : 0,
        "read" : { "io_bytes" : 409600, "bw_bytes" : 40960, "iops" : 10.0, "total_ios" : 100,
          "clat_ns" : { "mean" : 900.0 },
          "lat_ns" : { "min" : 100, "max" : 9000, "mean" : 1000.0,
            "percentile" : { "50.000000" : 900, "99.000000" : 5000 } } },
        "write" : { "io_bytes" : 0, "bw_bytes" : 0, "iops" : 0.0, "total_ios" : 0,
          "lat_ns" : { "mean" : 0.0 } }
      } ]
    }"#;

    /// A mixed job: 300 reads and 100 writes.
    pub(crate) const MIX_JSON: &str = r#"{
      "jobs" : [ {
        "jobname" : "lun0", "error" : 0,
        "read" : { "bw_bytes" : 3145728, "iops" : 30.0, "total_ios" : 300,
          "lat_ns" : { "mean" : 2000.0, "percentile" : { "99.000000" : 4000 } } },
        "write" : { "bw_bytes" : 1048576, "iops" : 10.0, "total_ios" : 100,
          "lat_ns" : { "mean" : 6000.0, "percentile" : { "99.000000" : 8000 } } }
      } ]
    }"#;

    #[test]
    fn fio_one_direction() {
        let s = parse_fio(READ_JSON).unwrap();
        assert_eq!(s.ios, 100);
        assert_eq!(s.iops, 10.0);
        assert!((s.mib_s - 40960.0 / 1_048_576.0).abs() < 1e-12);
        assert_eq!(s.lat_mean_us, 1.0);
        assert_eq!(s.lat_p99_us, 5.0);
    }

    #[test]
    fn fio_mixed_is_weighted() {
        let s = parse_fio(MIX_JSON).unwrap();
        assert_eq!(s.ios, 400);
        assert_eq!(s.iops, 40.0);
        assert_eq!(s.mib_s, 4.0);
        // (300 × 2 µs + 100 × 6 µs) / 400
        assert_eq!(s.lat_mean_us, 3.0);
        assert_eq!(s.lat_p99_us, 8.0);
    }

    #[test]
    fn fio_clat_percentiles_fallback_and_errors() {
        let j = r#"{"jobs":[{"error":0,"read":{"bw_bytes":4096,"iops":1.0,"total_ios":1,
            "lat_ns":{"mean":1000.0},"clat_ns":{"percentile":{"99.000000":3000}}}}]}"#;
        assert_eq!(parse_fio(j).unwrap().lat_p99_us, 3.0);
        assert!(parse_fio("{}").is_err());
        assert!(parse_fio("not json").is_err());
        let failed = r#"{"jobs":[{"jobname":"x","error":5,"read":{}}]}"#;
        assert!(parse_fio(failed).is_err());
        let idle = r#"{"jobs":[{"error":0,"read":{"total_ios":0},"write":{"total_ios":0}}]}"#;
        assert!(parse_fio(idle).is_err());
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0]), Some(3.0));
        assert_eq!(median(&[4.0, 1.0]), Some(2.5));
        assert_eq!(median(&[5.0, 1.0, 3.0]), Some(3.0));
    }

    #[test]
    fn numbers() {
        assert_eq!(fmt_num(1234567.0, 0), "1,234,567");
        assert_eq!(fmt_num(999.0, 0), "999");
        assert_eq!(fmt_num(1234.56, 1), "1,234.6");
        assert_eq!(fmt_num(-1234.0, 0), "-1,234");
        assert_eq!(fmt_ratio(Some(0.5)), "0.50×");
        assert_eq!(fmt_ratio(None), "–");
        assert_eq!(fmt_range(&[0.9, 0.81, 0.97]), "0.81–0.97×");
        assert_eq!(fmt_range(&[0.5, 0.501]), "0.50×");
        assert_eq!(fmt_range(&[]), "–");
    }

    #[test]
    fn ratios_pair_runs_of_the_same_round() {
        let run = |backstore, round, iops| Run {
            job: "j".to_owned(),
            backstore,
            round,
            fio: FioSummary {
                iops,
                mib_s: 0.0,
                lat_mean_us: 0.0,
                lat_p99_us: 0.0,
                ios: 0,
            },
            cpu_us_per_io: None,
        };
        let r = Results {
            runs: vec![
                run(Backstore::Ours, 1, 10.0),
                run(Backstore::Fileio, 1, 20.0),
                run(Backstore::Ours, 2, 30.0),
                run(Backstore::Fileio, 3, 10.0),
                run(Backstore::Ours, 4, 30.0),
                run(Backstore::Fileio, 4, 40.0),
            ],
            ..Results::default()
        };
        // Rounds 2 and 3 have no partner.
        assert_eq!(
            r.round_ratios("j", Backstore::Ours, Backstore::Fileio),
            vec![0.5, 0.75]
        );
        assert!(r
            .round_ratios("k", Backstore::Ours, Backstore::Fileio)
            .is_empty());
    }

    #[test]
    fn tsv_records() {
        let tsv = "info\tkernel\t6.1.0-56-amd64\njob\trr\t1\t4k random read\n\
                   run\trr\tfileio\t1\trr.fileio.r1.json\t-\n\
                   run\trr\tours\t1\trr.ours.r1.json\t12\n\
                   mem\tours\t8\t10240\t2048\t4096\t4096\n\
                   idle\tc\t8\t3\t6\n";
        let (r, runs) = parse_tsv(tsv).unwrap();
        assert_eq!(r.info["kernel"], "6.1.0-56-amd64");
        assert_eq!(r.jobs.len(), 1);
        assert_eq!(r.jobs[0].luns, 1);
        assert_eq!(runs.len(), 2);
        assert_eq!(runs[0].cpu_ticks, None);
        assert_eq!(runs[1].cpu_ticks, Some(12));
        assert_eq!(runs[1].backstore, Backstore::Ours);
        assert_eq!(r.mem[0].anon_kib, 2048);
        assert_eq!(r.idle[0].ticks, 6);
        assert!(resource_lines(&r)
            .contains("- C tcmu-runner idle with 8 devices: 2.0% of a CPU (6 ticks in 3 s)"));
        assert!(parse_tsv("run\tx\tzfs\t1\tf\t-\n").is_err());
        assert!(parse_tsv("what\tever\n").is_err());
    }

    /// Writes a results folder: two rounds of one job on all three
    /// backstores, fileio twice as fast as ours, ours twice C.
    pub(crate) fn fixture(dir: &Path) {
        let mut tsv = String::from(
            "info\tkernel\t6.1.0-56-amd64\ninfo\tvcpus\t2\ninfo\truntime\t10\ninfo\trounds\t2\n\
             info\tclk_tck\t100\njob\trandread-4k-qd32\t1\t4k random read, iodepth 32\n\
             job\trandread-4k-qd32-8luns\t8\t4k random read, iodepth 32 on each of 8 LUNs\n",
        );
        for round in 1..=2 {
            for (bs, scale, ticks) in [("fileio", 4.0, "-"), ("c", 1.0, "50"), ("ours", 2.0, "40")]
            {
                let file = format!("randread-4k-qd32.{bs}.r{round}.json");
                // 10 IOPS × scale, 100 × scale I/Os, latency / scale.
                let ios = (100.0 * scale) as u64 * round as u64;
                let json = READ_JSON
                    .replace(
                        "\"iops\" : 10.0",
                        &format!("\"iops\" : {}", 10.0 * scale * round as f64),
                    )
                    .replace("\"total_ios\" : 100", &format!("\"total_ios\" : {ios}"))
                    .replace(
                        "\"mean\" : 1000.0",
                        &format!("\"mean\" : {}", 1000.0 / scale),
                    );
                fs::write(dir.join(&file), json).unwrap();
                tsv.push_str(&format!(
                    "run\trandread-4k-qd32\t{bs}\t{round}\t{file}\t{ticks}\n"
                ));
            }
        }
        tsv.push_str(
            "mem\tours\t1\t8192\t2048\t1024\t5120\nmem\tours\t8\t20480\t4096\t1024\t15360\n",
        );
        fs::write(dir.join("bench.tsv"), tsv).unwrap();
    }

    #[test]
    fn report_from_fixture() {
        let dir = std::env::temp_dir().join(format!("xtask-bench-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        fixture(&dir);
        let r = load(&dir).unwrap();
        fs::remove_dir_all(&dir).ok();
        assert_eq!(r.runs.len(), 6);
        // Medians of rounds 1 and 2 (IOPS 10·s and 20·s): 15·s.
        let c = r.cell("randread-4k-qd32", Backstore::Ours).unwrap();
        assert_eq!(c.fio.iops, 30.0);
        assert_eq!(c.runs, 2);
        // 40 ticks of 10 ms over 200 and 400 I/Os: 2000 and 1000 µs.
        assert_eq!(c.cpu_us_per_io, Some(1500.0));
        assert_eq!(
            r.cell("randread-4k-qd32", Backstore::Fileio)
                .unwrap()
                .cpu_us_per_io,
            None
        );
        assert_eq!(
            r.iops_ratio("randread-4k-qd32", Backstore::Ours, Backstore::Fileio),
            Some(0.5)
        );
        assert_eq!(
            r.iops_ratio("randread-4k-qd32", Backstore::Ours, Backstore::C),
            Some(2.0)
        );
        assert!(r.cell("randread-4k-qd32-8luns", Backstore::Ours).is_none());

        let summary = summary_table(&r);
        assert!(
            summary.contains("| randread-4k-qd32 | 60 | 15 | 30 | 0.50× | 2.00× | 0.25× | 0.50× |"),
            "{summary}"
        );
        assert!(summary.contains("| randread-4k-qd32-8luns | – | – | – | – | – | – | – |"));
        let md = markdown(&r, &HostInfo::default());
        assert!(
            md.contains("### 4k random read, iodepth 32 (`randread-4k-qd32`)"),
            "{md}"
        );
        assert!(
            md.contains("| tcmu-rs | 30 | 0.0 | 0.5 | 5.0 | 1,500.0 | 2 |"),
            "{md}"
        );
        assert!(
            md.contains("| *tcmu-rs / fileio* | 0.50× | 1.00× | 2.00× | 1.00× | – | |"),
            "{md}"
        );
        assert!(
            md.contains("| *tcmu-rs / C* | 2.00× | 1.00× | 0.50× | 1.00× | 0.40× | |"),
            "{md}"
        );
        assert!(
            md.contains("tcmu-rs memory with 8 devices: VmRSS 20.0 MiB, RssAnon 4.0 MiB"),
            "{md}"
        );
        assert!(
            md.contains("| randread-4k-qd32 | 3,750.0 | 1,500.0 | 0.40× |"),
            "{md}"
        );
        assert_eq!(
            short_label(&r, "randread-4k-qd32-8luns"),
            "rand read 4k qd32 ×8"
        );
    }
}
