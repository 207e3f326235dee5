//! The metrics file: every served device's counters (see
//! [`tcmu_runtime::stats`]) in the Prometheus text exposition format,
//! version 0.0.4, rewritten atomically every few seconds, for
//! node_exporter's textfile collector or anything that reads such files.
//!
//! Who owns what: the workers own the counters and update them lock-free;
//! this module only reads them, from a task on the control thread's tokio
//! runtime. The file itself is written on tokio's blocking pool, so a slow
//! file system never stalls netlink replies, and a rename makes every
//! version of the file complete: a reader sees the old one or the new one.
//!
//! The format is written by hand. The `prometheus-client` crate renders
//! only OpenMetrics text (a `# EOF` line; counters typed under their name
//! without `_total`), which the 0.0.4 parsers behind the textfile collector
//! read as untyped series; and it wants to own the metric values, while
//! ours are the runtime's atomics. What we emit is small: a dozen families,
//! label escaping and a cumulative histogram.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tcmu_runtime::stats::{StatsSnapshot, LATENCY_BOUNDS_US};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::devices::DeviceTable;

/// Where the metrics file goes unless configured otherwise.
pub const DEFAULT_FILE: &str = "/run/tcmu-runner/metrics.prom";

/// How often the file is rewritten unless configured otherwise.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);

/// The shortest interval honoured (a zero interval would spin).
const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// What the metrics task does; fed from tcmu.conf (`metrics_file`,
/// `metrics_interval`) and changed live through a watch channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsSettings {
    /// The file to write; `None` writes nothing.
    pub file: Option<PathBuf>,
    /// Time between rewrites.
    pub interval: Duration,
}

impl From<&crate::conf::Settings> for MetricsSettings {
    fn from(s: &crate::conf::Settings) -> Self {
        Self {
            file: s.metrics_file.clone(),
            interval: s.metrics_interval,
        }
    }
}

impl Default for MetricsSettings {
    fn default() -> Self {
        Self {
            file: Some(PathBuf::from(DEFAULT_FILE)),
            interval: DEFAULT_INTERVAL,
        }
    }
}

/// Daemon-wide facts for the file's first families.
#[derive(Debug, Clone)]
pub struct DaemonInfo {
    /// The daemon's version.
    pub version: String,
    /// When the daemon started, in seconds since the Unix epoch.
    pub start_time: f64,
}

impl DaemonInfo {
    /// This process: its version, started now.
    pub fn current() -> Self {
        Self {
            version: env!("CARGO_PKG_VERSION").to_string(),
            start_time: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0),
        }
    }
}

/// One device's counters and the labels they are exported under.
#[derive(Debug, Clone)]
pub struct DeviceSample {
    /// `user_<hba>/<name>`.
    pub device: String,
    /// The device's `dev_config`.
    pub config: String,
    /// Its counters.
    pub stats: StatsSnapshot,
}

/// A per-device counter family: name, help text, value.
type Counter = (&'static str, &'static str, fn(&StatsSnapshot) -> u64);

const COUNTERS: [Counter; 9] = [
    (
        "tcmu_commands_total",
        "SCSI commands completed, any status.",
        |s| s.commands,
    ),
    (
        "tcmu_read_commands_total",
        "READ commands completed with GOOD status.",
        |s| s.read_commands,
    ),
    (
        "tcmu_write_commands_total",
        "WRITE and WRITE AND VERIFY commands completed with GOOD status.",
        |s| s.write_commands,
    ),
    (
        "tcmu_read_bytes_total",
        "Bytes returned by READ commands completed with GOOD status.",
        |s| s.read_bytes,
    ),
    (
        "tcmu_write_bytes_total",
        "Bytes written by WRITE and WRITE AND VERIFY commands completed with GOOD status (WRITE SAME, UNMAP and COMPARE AND WRITE are not counted).",
        |s| s.write_bytes,
    ),
    (
        "tcmu_errors_total",
        "Commands completed with a status other than GOOD.",
        |s| s.errors,
    ),
    (
        "tcmu_timeouts_total",
        "Commands that ran longer than the device's time-out (tcmur_cmd_time_out, else cmd_time_out).",
        |s| s.timeouts,
    ),
    (
        "tcmu_aborts_total",
        "Commands aborted by a task management request (ABORT TASK, LUN RESET) and answered TASK ABORTED.",
        |s| s.aborts,
    ),
    (
        "tcmu_alua_state_changes_total",
        "Times the handler's ALUA state for this gateway's port group settled on another state (rbd: the image's exclusive lock came here or went elsewhere).",
        |s| s.alua_changes,
    ),
];

const LATENCY: &str = "tcmu_command_latency_seconds";

/// Escapes a label value: backslash, double quote and line feed.
fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Microseconds as an exact decimal number of seconds (`2500` → `0.0025`).
fn micros_as_seconds(us: u64) -> String {
    let (secs, frac) = (us / 1_000_000, us % 1_000_000);
    if frac == 0 {
        return secs.to_string();
    }
    let digits = format!("{frac:06}");
    format!("{secs}.{}", digits.trim_end_matches('0'))
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Renders the whole file. Writing into a `String` cannot fail, so the
/// `fmt::Result`s are ignored.
pub fn render(daemon: &DaemonInfo, devices: &[DeviceSample]) -> String {
    let mut out = String::with_capacity(1024 + devices.len() * 2048);
    family(
        &mut out,
        "tcmu_runner_info",
        "gauge",
        "The tcmu-runner daemon writing this file; always 1.",
    );
    let _ = writeln!(
        out,
        "tcmu_runner_info{{version=\"{}\"}} 1",
        escape_label(&daemon.version)
    );
    family(
        &mut out,
        "tcmu_runner_start_time_seconds",
        "gauge",
        "When the daemon started, in seconds since the Unix epoch.",
    );
    let _ = writeln!(
        out,
        "tcmu_runner_start_time_seconds {:.3}",
        daemon.start_time
    );
    family(
        &mut out,
        "tcmu_devices",
        "gauge",
        "TCMU devices the daemon serves.",
    );
    let _ = writeln!(out, "tcmu_devices {}", devices.len());

    let labels: Vec<String> = devices
        .iter()
        .map(|d| {
            format!(
                "device=\"{}\",config=\"{}\"",
                escape_label(&d.device),
                escape_label(&d.config)
            )
        })
        .collect();
    for (name, help, value) in COUNTERS {
        family(&mut out, name, "counter", help);
        for (d, l) in devices.iter().zip(&labels) {
            let _ = writeln!(out, "{name}{{{l}}} {}", value(&d.stats));
        }
    }
    family(
        &mut out,
        LATENCY,
        "histogram",
        "Time from reading a command off the ring to writing its completion.",
    );
    for (d, l) in devices.iter().zip(&labels) {
        let mut cumulative = 0u64;
        for (bound, n) in LATENCY_BOUNDS_US.iter().zip(&d.stats.latency) {
            cumulative += n;
            let le = micros_as_seconds(*bound);
            let _ = writeln!(out, "{LATENCY}_bucket{{{l},le=\"{le}\"}} {cumulative}");
        }
        let count: u64 = d.stats.latency.iter().sum();
        let _ = writeln!(out, "{LATENCY}_bucket{{{l},le=\"+Inf\"}} {count}");
        let sum = micros_as_seconds(d.stats.latency_sum_us);
        let _ = writeln!(out, "{LATENCY}_sum{{{l}}} {sum}");
        let _ = writeln!(out, "{LATENCY}_count{{{l}}} {count}");
    }
    out
}

/// Every served device, as [`render`] wants it.
fn samples(table: &DeviceTable) -> Vec<DeviceSample> {
    table
        .list()
        .into_iter()
        .map(|d| DeviceSample {
            device: d.label(),
            config: d.dev_config.clone(),
            stats: d.stats.snapshot(),
        })
        .collect()
}

/// `<file>.tmp`, in the same directory so the rename stays on one file
/// system.
fn tmp_path(file: &Path) -> PathBuf {
    let mut name = file.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    file.with_file_name(name)
}

/// Replaces `file` with `contents` atomically: creates the parent
/// directory, writes `<file>.tmp` next to it, renames it over `file`. No
/// fsync: the file is rewritten every few seconds and usually on tmpfs.
pub fn write_atomic(file: &Path, contents: &str) -> std::io::Result<()> {
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = tmp_path(file);
    std::fs::write(&tmp, contents)?;
    std::fs::rename(&tmp, file).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// The running metrics task.
#[derive(Debug)]
pub struct MetricsTask {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl MetricsTask {
    /// Writes the file a last time (with the counters as they are now) and
    /// stops the task.
    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

/// Starts the task that keeps the metrics file up to date: it writes the
/// file at once, then every `interval`, whenever a device is added or
/// removed, and whenever the settings change (a new path removes the old
/// file). Must be called within a tokio runtime.
pub fn spawn(table: DeviceTable, settings: watch::Receiver<MetricsSettings>) -> MetricsTask {
    let (stop, stopped) = oneshot::channel();
    let task = tokio::spawn(run(table, settings, stopped, DaemonInfo::current()));
    MetricsTask { stop, task }
}

/// Writes the file on the blocking pool and logs failures once per run of
/// them (not every interval).
struct Writer {
    daemon: DaemonInfo,
    failing: bool,
}

impl Writer {
    async fn write(&mut self, table: &DeviceTable, file: &Path) {
        let text = render(&self.daemon, &samples(table));
        let path = file.to_path_buf();
        let r = tokio::task::spawn_blocking(move || write_atomic(&path, &text)).await;
        match r {
            Ok(Ok(())) => {
                if self.failing {
                    info!("metrics file {} written again", file.display());
                }
                self.failing = false;
            }
            Ok(Err(e)) => {
                if !self.failing {
                    warn!("cannot write the metrics file {}: {e}", file.display());
                }
                self.failing = true;
            }
            Err(e) => warn!("metrics writer failed: {e}"),
        }
    }
}

fn new_interval(period: Duration) -> tokio::time::Interval {
    let period = period.max(MIN_INTERVAL);
    let mut i = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    i
}

async fn run(
    table: DeviceTable,
    mut settings: watch::Receiver<MetricsSettings>,
    mut stopped: oneshot::Receiver<()>,
    daemon: DaemonInfo,
) {
    let mut changes = table.subscribe();
    let mut current = settings.borrow_and_update().clone();
    let mut tick = new_interval(current.interval);
    let mut writer = Writer {
        daemon,
        failing: false,
    };
    let mut settings_open = true;
    loop {
        if let Some(file) = &current.file {
            writer.write(&table, file).await;
        }
        tokio::select! {
            _ = &mut stopped => break,
            _ = tick.tick() => {}
            r = changes.changed() => {
                if r.is_err() {
                    // The table is gone with the daemon: nothing will change.
                    break;
                }
                changes.mark_unchanged();
            }
            r = settings.changed(), if settings_open => match r {
                Ok(()) => {
                    let new = settings.borrow_and_update().clone();
                    if new.file != current.file {
                        if let Some(old) = &current.file {
                            let _ = std::fs::remove_file(old);
                        }
                        writer.failing = false;
                    }
                    if new.interval != current.interval {
                        tick = new_interval(new.interval);
                    }
                    info!("metrics settings: {new:?}");
                    current = new;
                }
                // Nobody will change the settings again: keep these.
                Err(_) => settings_open = false,
            },
        }
    }
    if let Some(file) = &current.file {
        writer.write(&table, file).await;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::devices::DeviceInfo;
    use std::sync::Arc;
    use tcmu_runtime::stats::{DeviceStats, Direction, LATENCY_BUCKETS};

    fn daemon() -> DaemonInfo {
        DaemonInfo {
            version: "0.1.0".into(),
            start_time: 1_764_100_000.25,
        }
    }

    fn snapshot() -> StatsSnapshot {
        let mut latency = [0; LATENCY_BUCKETS];
        latency[0] = 1; // ≤ 10 µs
        latency[5] = 2; // ≤ 500 µs
        latency[LATENCY_BUCKETS - 1] = 1; // > 10 s
        StatsSnapshot {
            commands: 4,
            read_commands: 1,
            write_commands: 2,
            read_bytes: 4096,
            write_bytes: 8192,
            errors: 1,
            timeouts: 1,
            aborts: 2,
            alua_changes: 3,
            latency_sum_us: 12_000_807,
            latency,
        }
    }

    #[test]
    fn renders_a_known_snapshot() {
        let devices = [DeviceSample {
            device: "user_1/d0".into(),
            config: "file//run/d0.img".into(),
            stats: snapshot(),
        }];
        let l = r#"device="user_1/d0",config="file//run/d0.img""#;
        let mut want = String::from(
            "# HELP tcmu_runner_info The tcmu-runner daemon writing this file; always 1.
# TYPE tcmu_runner_info gauge
tcmu_runner_info{version=\"0.1.0\"} 1
# HELP tcmu_runner_start_time_seconds When the daemon started, in seconds since the Unix epoch.
# TYPE tcmu_runner_start_time_seconds gauge
tcmu_runner_start_time_seconds 1764100000.250
# HELP tcmu_devices TCMU devices the daemon serves.
# TYPE tcmu_devices gauge
tcmu_devices 1
# HELP tcmu_commands_total SCSI commands completed, any status.
# TYPE tcmu_commands_total counter
tcmu_commands_total{L} 4
# HELP tcmu_read_commands_total READ commands completed with GOOD status.
# TYPE tcmu_read_commands_total counter
tcmu_read_commands_total{L} 1
# HELP tcmu_write_commands_total WRITE and WRITE AND VERIFY commands completed with GOOD status.
# TYPE tcmu_write_commands_total counter
tcmu_write_commands_total{L} 2
# HELP tcmu_read_bytes_total Bytes returned by READ commands completed with GOOD status.
# TYPE tcmu_read_bytes_total counter
tcmu_read_bytes_total{L} 4096
# HELP tcmu_write_bytes_total Bytes written by WRITE and WRITE AND VERIFY commands completed with GOOD status (WRITE SAME, UNMAP and COMPARE AND WRITE are not counted).
# TYPE tcmu_write_bytes_total counter
tcmu_write_bytes_total{L} 8192
# HELP tcmu_errors_total Commands completed with a status other than GOOD.
# TYPE tcmu_errors_total counter
tcmu_errors_total{L} 1
# HELP tcmu_timeouts_total Commands that ran longer than the device's time-out (tcmur_cmd_time_out, else cmd_time_out).
# TYPE tcmu_timeouts_total counter
tcmu_timeouts_total{L} 1
# HELP tcmu_aborts_total Commands aborted by a task management request (ABORT TASK, LUN RESET) and answered TASK ABORTED.
# TYPE tcmu_aborts_total counter
tcmu_aborts_total{L} 2
# HELP tcmu_alua_state_changes_total Times the handler's ALUA state for this gateway's port group settled on another state (rbd: the image's exclusive lock came here or went elsewhere).
# TYPE tcmu_alua_state_changes_total counter
tcmu_alua_state_changes_total{L} 3
# HELP tcmu_command_latency_seconds Time from reading a command off the ring to writing its completion.
# TYPE tcmu_command_latency_seconds histogram
",
        );
        let les = [
            ("0.00001", 1),
            ("0.000025", 1),
            ("0.00005", 1),
            ("0.0001", 1),
            ("0.00025", 1),
            ("0.0005", 3),
            ("0.001", 3),
            ("0.0025", 3),
            ("0.005", 3),
            ("0.01", 3),
            ("0.025", 3),
            ("0.05", 3),
            ("0.1", 3),
            ("0.25", 3),
            ("1", 3),
            ("10", 3),
            ("+Inf", 4),
        ];
        for (le, n) in les {
            want.push_str(&format!(
                "tcmu_command_latency_seconds_bucket{{L,le=\"{le}\"}} {n}\n"
            ));
        }
        want.push_str("tcmu_command_latency_seconds_sum{L} 12.000807\n");
        want.push_str("tcmu_command_latency_seconds_count{L} 4\n");
        let want = want.replace("{L", &format!("{{{l}"));
        assert_eq!(render(&daemon(), &devices), want);
    }

    #[test]
    fn escapes_label_values() {
        assert_eq!(escape_label(r#"a\b"c"#), r#"a\\b\"c"#);
        assert_eq!(escape_label("x\ny"), r"x\ny");
        let devices = [DeviceSample {
            device: "user_1/q\"d".into(),
            config: "file//run/a\\b\nc".into(),
            stats: StatsSnapshot::default(),
        }];
        let text = render(&daemon(), &devices);
        assert!(text.contains(
            "tcmu_commands_total{device=\"user_1/q\\\"d\",config=\"file//run/a\\\\b\\nc\"} 0\n"
        ));
        // Every line is a comment or a sample: nothing was split.
        for line in text.lines() {
            assert!(
                line.starts_with("# ") || line.starts_with("tcmu_"),
                "{line}"
            );
        }
    }

    #[test]
    fn buckets_are_cumulative_and_end_with_the_count() {
        let s = DeviceStats::default();
        for us in [5, 20, 20, 700, 3_000_000, 30_000_000] {
            s.record(Direction::Other, 0, 0, Duration::from_micros(us));
        }
        let devices = [DeviceSample {
            device: "user_2/x".into(),
            config: "ram/1M".into(),
            stats: s.snapshot(),
        }];
        let text = render(&daemon(), &devices);
        let buckets: Vec<u64> = text
            .lines()
            .filter(|l| l.starts_with("tcmu_command_latency_seconds_bucket"))
            .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
            .collect();
        assert_eq!(buckets.len(), LATENCY_BOUNDS_US.len() + 1);
        assert!(buckets.windows(2).all(|w| w[0] <= w[1]), "{buckets:?}");
        assert_eq!(buckets[0], 1); // ≤ 10 µs
        assert_eq!(buckets[1], 3); // ≤ 25 µs
        assert_eq!(buckets[LATENCY_BOUNDS_US.len() - 1], 5); // ≤ 10 s
        assert_eq!(*buckets.last().unwrap(), 6);
        assert!(text.contains("_count{device=\"user_2/x\",config=\"ram/1M\"} 6\n"));
        assert!(text.contains("_sum{device=\"user_2/x\",config=\"ram/1M\"} 33.000745\n"));
    }

    #[test]
    fn seconds_are_exact() {
        assert_eq!(micros_as_seconds(0), "0");
        assert_eq!(micros_as_seconds(10), "0.00001");
        assert_eq!(micros_as_seconds(2_500), "0.0025");
        assert_eq!(micros_as_seconds(10_000_000), "10");
        assert_eq!(micros_as_seconds(12_000_807), "12.000807");
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tcmu-metrics-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn rewrites_atomically_and_creates_the_directory() {
        let dir = scratch("atomic");
        let file = dir.join("sub/metrics.prom");
        write_atomic(&file, "one\n").unwrap();
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "one\n");
        // A reader holding the old file keeps reading the old contents:
        // the new version is a new inode renamed over the name.
        let old = std::fs::File::open(&file).unwrap();
        write_atomic(&file, "two\n").unwrap();
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "two\n");
        assert_eq!(std::io::read_to_string(old).unwrap(), "one\n");
        assert!(!dir.join("sub/metrics.prom.tmp").exists());
        let _ = std::fs::remove_dir_all(dir);
    }

    fn device(minor: u32, name: &str) -> DeviceInfo {
        DeviceInfo {
            minor,
            hba: 1,
            name: name.into(),
            dev_config: format!("ram/{name}"),
            stats: Arc::default(),
        }
    }

    async fn wait_for(file: &Path, what: impl Fn(&str) -> bool) -> String {
        for _ in 0..200 {
            if let Ok(text) = std::fs::read_to_string(file) {
                if what(&text) {
                    return text;
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{} never matched", file.display());
    }

    #[tokio::test]
    async fn task_follows_the_table_and_the_settings() {
        let dir = scratch("task");
        let first = dir.join("a/metrics.prom");
        let table = DeviceTable::default();
        table.insert(device(0, "d0"));
        let (tx, rx) = watch::channel(MetricsSettings {
            file: Some(first.clone()),
            interval: Duration::from_secs(3600),
        });
        let task = spawn(table.clone(), rx);
        wait_for(&first, |t| t.contains("tcmu_devices 1\n")).await;
        // A new device is written at once, not at the next interval.
        table.insert(device(1, "d1"));
        let text = wait_for(&first, |t| t.contains("tcmu_devices 2\n")).await;
        assert!(text.contains("device=\"user_1/d1\",config=\"ram/d1\""));
        table.remove(0);
        let text = wait_for(&first, |t| t.contains("tcmu_devices 1\n")).await;
        assert!(!text.contains("user_1/d0"));
        // A new path: written there, the old file removed.
        let second = dir.join("b/metrics.prom");
        tx.send_modify(|s| s.file = Some(second.clone()));
        wait_for(&second, |t| t.contains("tcmu_devices 1\n")).await;
        assert!(!first.exists());
        // The last write at shutdown has the final counters.
        table.list()[0]
            .stats
            .record(Direction::Read, 512, 0, Duration::ZERO);
        task.shutdown().await;
        let text = std::fs::read_to_string(&second).unwrap();
        assert!(
            text.contains("tcmu_read_bytes_total{device=\"user_1/d1\",config=\"ram/d1\"} 512\n")
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
