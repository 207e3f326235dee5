//! `/etc/tcmu/tcmu.conf`: parsing, layering and live reload.
//!
//! The file has tcmu-runner's syntax: `key = value` lines, `#` comments
//! (whole lines, or after a value), a bare `key` meaning true, values
//! optionally quoted with `"` or `'`. It is read through the `config`
//! crate with a custom [`Format`] ([`TcmuConf`]) and layered as
//! tcmu-runner layers it: **file > command line > `$TCMU_LOGDIR` >
//! built-in defaults**. (tcmu-runner's `-l` and `-d` only change the
//! *defaults*; a value in the file always wins, and removing it from the
//! file falls back to the flag again.)
//!
//! Nothing in the file is fatal: a malformed line is reported with its
//! line number and skipped, an unknown key is reported and ignored, and a
//! bad value for a known key keeps the value in effect before (the
//! layered default at start-up). A missing file means defaults.
//!
//! [`watch()`] re-reads the file whenever it changes. It watches the file's
//! *directory* (editors save by writing a new file and renaming it over
//! the old one, and the file may not exist yet), applies the new settings
//! through a callback (the log level and directory, see
//! `crate::logging::Logging::apply`) and publishes them on a
//! [`tokio::sync::watch`] channel for the rest of the daemon (the metrics
//! writer follows `metrics_file` and `metrics_interval` there).

use std::error::Error;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use config::{Config, File, FileStoredFormat, Format, Map, Source, Value, ValueKind};
use notify::{RecursiveMode, Watcher as _};
use tokio::sync::watch;
use tracing::{debug, info, warn};

/// Where tcmu-runner reads its configuration.
pub const DEFAULT_PATH: &str = "/etc/tcmu/tcmu.conf";
/// The log directory when neither the file, `-l` nor `$TCMU_LOGDIR` names one.
pub const DEFAULT_LOG_DIR: &str = "/var/log";
/// The default log level (3, INFO).
pub const DEFAULT_LOG_LEVEL: u8 = 3;
/// The level `-d/--debug` selects unless the file sets one: tcmu-runner
/// 1.5.4's `-d` sets its default level to 5 (DEBUG SCSI CMD), not 4.
pub const DEBUG_LOG_LEVEL: u8 = 5;
/// The highest log level (5, DEBUG SCSI CMD: every CDB is logged).
pub const MAX_LOG_LEVEL: u8 = 5;
/// The default Prometheus text file the daemon keeps up to date.
pub const DEFAULT_METRICS_FILE: &str = "/run/tcmu-runner/metrics.prom";
/// The default refresh interval of the metrics file.
pub const DEFAULT_METRICS_INTERVAL: Duration = Duration::from_secs(5);

/// The keys this daemon reads. tcmu-runner 1.5.4 reads `log_level` and
/// `log_dir` only; `metrics_file`, `metrics_interval` and `ring_poll_us` are
/// ours.
pub const KNOWN_KEYS: &[&str] = &[
    "log_level",
    "log_dir",
    "metrics_file",
    "metrics_interval",
    "ring_poll_us",
];

/// How long the watcher waits for a burst of file events to settle.
const DEBOUNCE: Duration = Duration::from_millis(100);
/// The longest it delays a reload while events keep coming.
const DEBOUNCE_MAX: Duration = Duration::from_millis(200);
/// How often it looks for a missing configuration directory.
const DIR_RETRY: Duration = Duration::from_secs(1);

/// The settings in effect, as published on the watch channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// tcmu-runner log level: 0 CRIT, 1 ERROR, 2 WARNING, 3 INFO,
    /// 4 DEBUG, 5 DEBUG SCSI CMD.
    pub log_level: u8,
    /// Directory of `tcmu-runner.log`.
    pub log_dir: PathBuf,
    /// Prometheus text file to refresh; `None` when disabled (empty value).
    pub metrics_file: Option<PathBuf>,
    /// How often to refresh the metrics file (at least one second).
    pub metrics_interval: Duration,
    /// How long an idle device polls its ring before sleeping (zero: off;
    /// see `tcmu_runtime::poll`).
    pub ring_poll: Duration,
}

/// Everything except the file that decides the settings: the file's path,
/// the command line and the environment.
#[derive(Debug, Clone, Default)]
pub struct Layers {
    /// The configuration file (`--config`, default [`DEFAULT_PATH`]).
    pub path: PathBuf,
    /// `-l/--tcmu-log-dir`.
    pub cli_log_dir: Option<PathBuf>,
    /// `-d/--debug`.
    pub cli_debug: bool,
    /// `$TCMU_LOGDIR`.
    pub env_log_dir: Option<PathBuf>,
}

impl Layers {
    /// The layers of this process: its command line and `$TCMU_LOGDIR`.
    pub fn from_cli(cli: &crate::cli::Cli) -> Self {
        Self {
            path: cli
                .config
                .clone()
                .unwrap_or_else(|| PathBuf::from(DEFAULT_PATH)),
            cli_log_dir: cli.log_dir.clone(),
            cli_debug: cli.debug,
            env_log_dir: std::env::var_os("TCMU_LOGDIR")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
        }
    }

    /// The settings when the file says nothing: command line, then
    /// environment, then built-in defaults.
    pub fn defaults(&self) -> Settings {
        Settings {
            log_level: if self.cli_debug {
                DEBUG_LOG_LEVEL
            } else {
                DEFAULT_LOG_LEVEL
            },
            log_dir: self
                .cli_log_dir
                .clone()
                .or_else(|| self.env_log_dir.clone())
                .unwrap_or_else(|| PathBuf::from(DEFAULT_LOG_DIR)),
            metrics_file: Some(PathBuf::from(DEFAULT_METRICS_FILE)),
            metrics_interval: DEFAULT_METRICS_INTERVAL,
            ring_poll: Duration::ZERO,
        }
    }
}

// ---------------------------------------------------------------------------
// The syntax

/// A value as written in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawValue {
    /// A bare key (`key` alone on its line): true.
    Bare,
    /// `key = value`, quotes and inline comment removed.
    Text(String),
}

/// One `key = value` (or bare key) line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The key.
    pub key: String,
    /// Its value.
    pub value: RawValue,
    /// 1-based line number.
    pub line: usize,
}

/// A parsed file: its known entries, in order, and what was wrong with it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Parsed {
    /// Entries for [`KNOWN_KEYS`] (a later line overrides an earlier one).
    pub entries: Vec<Entry>,
    /// Malformed lines and unknown keys, one message each, line number
    /// included.
    pub problems: Vec<String>,
}

fn is_key(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// The value part of a `key = value` line (everything after `=`).
fn parse_value(s: &str) -> Result<String, &'static str> {
    let s = s.trim();
    let mut chars = s.chars();
    match chars.next() {
        Some(q @ ('"' | '\'')) => {
            let body = &s[1..];
            let end = body.find(q).ok_or("unterminated quote")?;
            let rest = body[end + 1..].trim_start();
            if !rest.is_empty() && !rest.starts_with('#') {
                return Err("text after the closing quote");
            }
            Ok(body[..end].to_owned())
        }
        _ => Ok(s
            .split('#')
            .next()
            .unwrap_or_default()
            .trim_end()
            .to_owned()),
    }
}

/// Parses tcmu.conf text. Blank lines and `#` comments are skipped; a
/// line is `key = value` or a bare `key`; keys start with a letter.
pub fn parse(text: &str) -> Parsed {
    let mut out = Parsed::default();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let l = raw.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let eq = l.find('=');
        let hash = l.find('#');
        let (key, value) = match (eq, hash) {
            (Some(e), h) if h.is_none_or(|h| e < h) => {
                let key = l[..e].trim();
                match parse_value(&l[e + 1..]) {
                    Ok(v) => (key, RawValue::Text(v)),
                    Err(why) => {
                        out.problems
                            .push(format!("line {line}: {why}, ignored: {raw}"));
                        continue;
                    }
                }
            }
            _ => (l[..hash.unwrap_or(l.len())].trim(), RawValue::Bare),
        };
        if !is_key(key) {
            out.problems.push(format!(
                "line {line}: expected `key = value` or a bare key, ignored: {raw}"
            ));
            continue;
        }
        if !KNOWN_KEYS.contains(&key) {
            out.problems
                .push(format!("line {line}: unknown key `{key}`, ignored"));
            continue;
        }
        out.entries.push(Entry {
            key: key.to_owned(),
            value,
            line,
        });
    }
    out
}

/// tcmu.conf's syntax as a `config` [`Format`]. What [`parse`] finds wrong
/// is kept in `problems` (shared by clones) for the caller to log: the
/// first read happens before logging is set up.
#[derive(Debug, Clone, Default)]
pub struct TcmuConf {
    problems: Arc<Mutex<Vec<String>>>,
}

impl TcmuConf {
    /// Takes the problems found so far.
    pub fn take_problems(&self) -> Vec<String> {
        match self.problems.lock() {
            Ok(mut p) => std::mem::take(&mut *p),
            Err(_) => Vec::new(),
        }
    }
}

impl Format for TcmuConf {
    fn parse(
        &self,
        uri: Option<&String>,
        text: &str,
    ) -> Result<Map<String, Value>, Box<dyn Error + Send + Sync>> {
        let parsed = parse(text);
        if let Ok(mut p) = self.problems.lock() {
            p.extend(parsed.problems);
        }
        let mut map = Map::new();
        for e in parsed.entries {
            let kind = match e.value {
                RawValue::Bare => ValueKind::Boolean(true),
                RawValue::Text(s) => ValueKind::String(s),
            };
            map.insert(e.key, Value::new(uri, kind));
        }
        Ok(map)
    }
}

impl FileStoredFormat for TcmuConf {
    fn file_extensions(&self) -> &'static [&'static str] {
        &["conf"]
    }
}

// ---------------------------------------------------------------------------
// Layering and typed values

/// The result of reading the configuration.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The settings to use.
    pub settings: Settings,
    /// Everything worth a warning: malformed lines, unknown keys, bad
    /// values, an unreadable file.
    pub problems: Vec<String>,
}

impl Loaded {
    /// Logs the problems as warnings.
    pub fn log_problems(&self, path: &Path) {
        for p in &self.problems {
            warn!("{}: {p}", path.display());
        }
    }
}

fn text_of(v: &Value) -> Option<String> {
    match &v.kind {
        ValueKind::String(s) => Some(s.clone()),
        ValueKind::I64(n) => Some(n.to_string()),
        ValueKind::U64(n) => Some(n.to_string()),
        _ => None,
    }
}

fn level_of(v: &Value) -> Result<(u8, Option<String>), String> {
    let s = text_of(v).ok_or("expected a number 0-5")?;
    let n: i64 = s
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a number 0-5"))?;
    // tcmu-runner clamps an out-of-range level; so do we, with a warning.
    let clamped = n.clamp(0, i64::from(MAX_LOG_LEVEL));
    let note =
        (clamped != n).then(|| format!("log_level {n} is out of range 0-5, using {clamped}"));
    Ok((u8::try_from(clamped).unwrap_or(DEFAULT_LOG_LEVEL), note))
}

fn dir_of(v: &Value) -> Result<PathBuf, String> {
    let s = text_of(v).ok_or("expected a directory")?;
    if s.is_empty() || !s.starts_with('/') {
        return Err(format!("`{s}` is not an absolute path"));
    }
    Ok(PathBuf::from(s))
}

fn metrics_file_of(v: &Value) -> Result<Option<PathBuf>, String> {
    let s = text_of(v).ok_or("expected a file name (or an empty value)")?;
    if s.is_empty() {
        return Ok(None);
    }
    if !s.starts_with('/') {
        return Err(format!("`{s}` is not an absolute path"));
    }
    Ok(Some(PathBuf::from(s)))
}

fn ring_poll_of(v: &Value) -> Result<Duration, String> {
    let s = text_of(v).ok_or("expected a number of microseconds")?;
    let max = tcmu_runtime::poll::MAX_RING_POLL;
    match s.trim().parse::<u64>() {
        Ok(n) if Duration::from_micros(n) <= max => Ok(Duration::from_micros(n)),
        _ => Err(format!(
            "`{s}` is not a whole number of microseconds from 0 to {}",
            max.as_micros()
        )),
    }
}

fn interval_of(v: &Value) -> Result<Duration, String> {
    let s = text_of(v).ok_or("expected a number of seconds")?;
    match s.trim().parse::<u64>() {
        Ok(n) if n >= 1 => Ok(Duration::from_secs(n)),
        _ => Err(format!("`{s}` is not a whole number of seconds >= 1")),
    }
}

/// Resolves the layered configuration into settings. Each key falls back
/// to `prev` (with a problem noted) when its value is bad.
fn resolve(map: &Map<String, Value>, prev: &Settings, problems: &mut Vec<String>) -> Settings {
    fn pick<T>(
        map: &Map<String, Value>,
        key: &str,
        prev: T,
        problems: &mut Vec<String>,
        conv: impl Fn(&Value) -> Result<T, String>,
    ) -> T {
        match map.get(key) {
            None => prev,
            Some(v) => match conv(v) {
                Ok(t) => t,
                Err(why) => {
                    problems.push(format!(
                        "bad value for {key}: {why}; keeping the previous one"
                    ));
                    prev
                }
            },
        }
    }
    let (log_level, note) = pick(map, "log_level", (prev.log_level, None), problems, level_of);
    problems.extend(note);
    Settings {
        log_level,
        log_dir: pick(map, "log_dir", prev.log_dir.clone(), problems, dir_of),
        metrics_file: pick(
            map,
            "metrics_file",
            prev.metrics_file.clone(),
            problems,
            metrics_file_of,
        ),
        metrics_interval: pick(
            map,
            "metrics_interval",
            prev.metrics_interval,
            problems,
            interval_of,
        ),
        ring_poll: pick(map, "ring_poll_us", prev.ring_poll, problems, ring_poll_of),
    }
}

fn layered(layers: &Layers, text: Option<&str>, format: &TcmuConf) -> Result<Config, String> {
    let d = layers.defaults();
    let path = |p: &Path| p.to_string_lossy().into_owned();
    let mut b = Config::builder()
        .set_default("log_level", i64::from(d.log_level))
        .and_then(|b| b.set_default("log_dir", path(&d.log_dir)))
        .and_then(|b| {
            b.set_default(
                "metrics_file",
                d.metrics_file.as_deref().map(path).unwrap_or_default(),
            )
        })
        .and_then(|b| b.set_default("metrics_interval", d.metrics_interval.as_secs()))
        .and_then(|b| {
            let us = u64::try_from(d.ring_poll.as_micros()).unwrap_or(u64::MAX);
            b.set_default("ring_poll_us", us)
        })
        .map_err(|e| e.to_string())?;
    if let Some(text) = text {
        b = b.add_source(File::from_str(text, format.clone()));
    }
    b.build().map_err(|e| e.to_string())
}

/// Reads the configuration: the file at `layers.path` over the other
/// layers. A value that is bad keeps its value in `prev`; when the file
/// cannot be read (other than not existing) everything stays as in `prev`.
pub fn load(layers: &Layers, prev: &Settings) -> Loaded {
    let text = match std::fs::read(&layers.path) {
        Ok(bytes) => Some(String::from_utf8_lossy(&bytes).into_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            return Loaded {
                settings: prev.clone(),
                problems: vec![format!("cannot read the file: {e}; settings unchanged")],
            }
        }
    };
    load_text(layers, text.as_deref(), prev)
}

/// [`load`] with the file's text given (`None`: no file).
pub fn load_text(layers: &Layers, text: Option<&str>, prev: &Settings) -> Loaded {
    let format = TcmuConf::default();
    let result = layered(layers, text, &format);
    let mut problems = format.take_problems();
    let settings = match result.and_then(|c| c.collect().map_err(|e| e.to_string())) {
        Ok(map) => resolve(&map, prev, &mut problems),
        Err(e) => {
            problems.push(format!(
                "cannot read the configuration: {e}; settings unchanged"
            ));
            prev.clone()
        }
    };
    Loaded { settings, problems }
}

/// The first read at start-up (bad values fall back to the defaults).
pub fn load_initial(layers: &Layers) -> Loaded {
    load(layers, &layers.defaults())
}

// ---------------------------------------------------------------------------
// Live reload

enum Msg {
    Fs(notify::Result<notify::Event>),
    Stop,
}

/// Keeps the configuration watcher running; dropping it stops the watcher.
pub struct ConfWatch {
    rx: watch::Receiver<Settings>,
    stop: mpsc::Sender<Msg>,
}

impl ConfWatch {
    /// A receiver of the current settings, updated on every change.
    pub fn subscribe(&self) -> watch::Receiver<Settings> {
        self.rx.clone()
    }
}

impl Drop for ConfWatch {
    fn drop(&mut self) {
        let _ = self.stop.send(Msg::Stop);
    }
}

/// Starts watching `layers.path` for changes. `initial` is what is in
/// effect now; on every change the file is re-read, `apply(old, new)` is
/// called when the settings differ, and the new settings are published.
///
/// The watcher runs on its own thread (`conf-watch`); file events come from
/// inotify through `notify`. When the directory does not exist, it looks
/// for it every second and reads the file once it appears.
pub fn watch<F>(layers: Layers, initial: Settings, apply: F) -> std::io::Result<ConfWatch>
where
    F: FnMut(&Settings, &Settings) + Send + 'static,
{
    let (tx, rx) = watch::channel(initial);
    let (msg_tx, msg_rx) = mpsc::channel();
    let fs_tx = msg_tx.clone();
    std::thread::Builder::new()
        .name("conf-watch".to_owned())
        .spawn(move || watch_loop(layers, tx, fs_tx, msg_rx, apply))?;
    Ok(ConfWatch { rx, stop: msg_tx })
}

fn dir_of_file(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Starts an inotify watch on `dir`, events to `tx`.
fn start_watcher(dir: &Path, tx: &mpsc::Sender<Msg>) -> notify::Result<notify::RecommendedWatcher> {
    let tx = tx.clone();
    let mut w = notify::recommended_watcher(move |ev| {
        let _ = tx.send(Msg::Fs(ev));
    })?;
    w.watch(dir, RecursiveMode::NonRecursive)?;
    Ok(w)
}

/// Whether `ev` may have changed the contents of the file `name` in the
/// watched directory: created, written, renamed, removed. Opening and
/// reading it are not (our own reads would otherwise trigger reloads
/// forever), nor are metadata changes.
fn relevant(ev: &notify::Event, name: Option<&std::ffi::OsStr>) -> bool {
    use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind};
    let kind = match ev.kind {
        EventKind::Create(_) | EventKind::Remove(_) | EventKind::Any => true,
        EventKind::Modify(ModifyKind::Metadata(_)) => false,
        EventKind::Modify(_) => true,
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) | EventKind::Other => false,
    };
    ev.need_rescan() || (kind && ev.paths.iter().any(|p| p.file_name() == name))
}

fn watch_loop<F>(
    layers: Layers,
    tx: watch::Sender<Settings>,
    fs_tx: mpsc::Sender<Msg>,
    rx: mpsc::Receiver<Msg>,
    mut apply: F,
) where
    F: FnMut(&Settings, &Settings),
{
    let dir = dir_of_file(&layers.path);
    let name = layers.path.file_name().map(|n| n.to_os_string());
    let mut watcher = None;
    let mut missing_logged = false;
    // `quiet`: do not repeat the file's problems when nothing changed
    // (the re-read right after a watch starts, which closes the gap
    // between the caller's first read and the watch).
    let mut reload = |tx: &watch::Sender<Settings>, quiet: bool| {
        let prev = tx.borrow().clone();
        let loaded = load(&layers, &prev);
        let changed = loaded.settings != prev;
        if changed || !quiet {
            loaded.log_problems(&layers.path);
        }
        if changed {
            debug!(
                "{}: settings now {:?}",
                layers.path.display(),
                loaded.settings
            );
            apply(&prev, &loaded.settings);
            tx.send_replace(loaded.settings);
        } else {
            debug!("{}: re-read, nothing changed", layers.path.display());
        }
    };
    loop {
        if watcher.is_none() {
            match start_watcher(&dir, &fs_tx) {
                Ok(w) => {
                    debug!(
                        "watching {} for changes of {}",
                        dir.display(),
                        layers.path.display()
                    );
                    watcher = Some(w);
                    if missing_logged {
                        info!("{} appeared", dir.display());
                    }
                    reload(&tx, !missing_logged);
                    missing_logged = false;
                }
                Err(e) => {
                    if !missing_logged {
                        info!(
                            "cannot watch {} ({e}); looking again every {}s",
                            dir.display(),
                            DIR_RETRY.as_secs()
                        );
                        missing_logged = true;
                    }
                    match rx.recv_timeout(DIR_RETRY) {
                        Ok(Msg::Stop) | Err(mpsc::RecvTimeoutError::Disconnected) => return,
                        _ => continue,
                    }
                }
            }
        }
        let ev = match rx.recv() {
            Ok(Msg::Fs(ev)) => ev,
            Ok(Msg::Stop) | Err(_) => return,
        };
        let ev = match ev {
            Ok(ev) => ev,
            Err(e) => {
                warn!("watching {}: {e}", dir.display());
                continue;
            }
        };
        if ev.paths.iter().any(|p| p == &dir) && ev.kind.is_remove() {
            // The directory itself went away: watch for it to come back.
            watcher = None;
            missing_logged = true;
            reload(&tx, false);
            continue;
        }
        if !relevant(&ev, name.as_deref()) {
            continue;
        }
        // Let a burst of events (write, close, rename) settle.
        let start = Instant::now();
        loop {
            let left = DEBOUNCE_MAX.saturating_sub(start.elapsed());
            if left.is_zero() {
                break;
            }
            match rx.recv_timeout(DEBOUNCE.min(left)) {
                Ok(Msg::Fs(_)) => continue,
                Ok(Msg::Stop) | Err(mpsc::RecvTimeoutError::Disconnected) => return,
                Err(mpsc::RecvTimeoutError::Timeout) => break,
            }
        }
        reload(&tx, false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layers() -> Layers {
        Layers {
            path: PathBuf::from("/nonexistent/tcmu.conf"),
            ..Layers::default()
        }
    }

    fn settings(text: &str) -> Loaded {
        let l = layers();
        load_text(&l, Some(text), &l.defaults())
    }

    #[test]
    fn debian_file_is_all_comments() {
        let text =
            "# Master TCMU configuration file\n\n# log_level = 3\n#\n# log_dir = \"/var/log\"\n";
        let p = parse(text);
        assert!(p.entries.is_empty());
        assert!(p.problems.is_empty());
        let l = settings(text);
        assert_eq!(l.settings, layers().defaults());
        assert!(l.problems.is_empty());
    }

    #[test]
    fn values_quotes_and_comments() {
        let p = parse(
            "log_level = 4   # more\n  log_dir=\"/var/log/x # y\" # c\nmetrics_file = '/a b'\nmetrics_interval=7#x\n",
        );
        assert!(p.problems.is_empty(), "{:?}", p.problems);
        let v: Vec<_> = p
            .entries
            .iter()
            .map(|e| (e.key.as_str(), e.value.clone(), e.line))
            .collect();
        assert_eq!(
            v,
            vec![
                ("log_level", RawValue::Text("4".into()), 1),
                ("log_dir", RawValue::Text("/var/log/x # y".into()), 2),
                ("metrics_file", RawValue::Text("/a b".into()), 3),
                ("metrics_interval", RawValue::Text("7".into()), 4),
            ]
        );
    }

    #[test]
    fn bare_keys_and_empty_values() {
        let p = parse("log_level\nmetrics_file =\nmetrics_interval # note\n");
        assert!(p.problems.is_empty(), "{:?}", p.problems);
        assert_eq!(p.entries[0].value, RawValue::Bare);
        assert_eq!(p.entries[1].value, RawValue::Text(String::new()));
        assert_eq!(p.entries[2].value, RawValue::Bare);
    }

    #[test]
    fn malformed_lines_are_reported_with_their_number_and_skipped() {
        let p = parse("log_level = 4\n= 3\nlog level = 2\n3 = x\nlog_dir = \"/x\n\tlog_dir = '/y' z\nlog_dir = /ok\n");
        assert_eq!(p.entries.len(), 2);
        assert_eq!(p.entries[1].value, RawValue::Text("/ok".into()));
        assert_eq!(p.problems.len(), 5, "{:?}", p.problems);
        for (i, n) in [2, 3, 4, 5, 6].iter().enumerate() {
            assert!(
                p.problems[i].starts_with(&format!("line {n}:")),
                "{:?}",
                p.problems
            );
        }
        assert!(p.problems[3].contains("unterminated quote"));
    }

    #[test]
    fn unknown_keys_are_reported() {
        let l = settings("log_level = 2\nfoo = bar\nsome_flag\n");
        assert_eq!(l.settings.log_level, 2);
        assert_eq!(l.problems.len(), 2);
        assert!(l.problems[0].contains("unknown key `foo`"));
        assert!(l.problems[1].contains("line 3"));
    }

    #[test]
    fn typed_values() {
        let l = settings(
            "log_level = 5\nlog_dir = /tmp/logs\nmetrics_file = \"\"\nmetrics_interval = 30\nring_poll_us = 50\n",
        );
        assert!(l.problems.is_empty(), "{:?}", l.problems);
        assert_eq!(
            l.settings,
            Settings {
                log_level: 5,
                log_dir: PathBuf::from("/tmp/logs"),
                metrics_file: None,
                metrics_interval: Duration::from_secs(30),
                ring_poll: Duration::from_micros(50),
            }
        );
    }

    #[test]
    fn bad_values_keep_the_previous_ones() {
        let l = layers();
        let prev = Settings {
            log_level: 4,
            log_dir: PathBuf::from("/prev"),
            metrics_file: Some(PathBuf::from("/prev.prom")),
            metrics_interval: Duration::from_secs(9),
            ring_poll: Duration::from_micros(7),
        };
        let got = load_text(
            &l,
            Some("log_level = loud\nlog_dir = relative\nmetrics_file\nmetrics_interval = 0\nring_poll_us = 5000\n"),
            &prev,
        );
        assert_eq!(got.settings, prev);
        assert_eq!(got.problems.len(), 5, "{:?}", got.problems);
        assert!(got.problems.iter().all(|p| p.starts_with("bad value for")));
        // A bare key is no level either.
        let got = load_text(&l, Some("log_level\n"), &prev);
        assert_eq!(got.settings.log_level, 4);
    }

    #[test]
    fn out_of_range_levels_are_clamped_like_tcmu_runner() {
        let l = settings("log_level = 9\n");
        assert_eq!(l.settings.log_level, 5);
        assert_eq!(l.problems.len(), 1);
        assert_eq!(settings("log_level = -1\n").settings.log_level, 0);
    }

    #[test]
    fn later_lines_win() {
        assert_eq!(
            settings("log_level = 1\nlog_level = 2\n")
                .settings
                .log_level,
            2
        );
    }

    #[test]
    fn precedence_file_cli_env_default() {
        let mut l = layers();
        assert_eq!(l.defaults().log_dir, PathBuf::from("/var/log"));
        assert_eq!(l.defaults().log_level, 3);
        l.env_log_dir = Some(PathBuf::from("/env"));
        assert_eq!(
            load_text(&l, None, &l.defaults()).settings.log_dir,
            PathBuf::from("/env")
        );
        l.cli_log_dir = Some(PathBuf::from("/cli"));
        l.cli_debug = true;
        let s = load_text(&l, None, &l.defaults()).settings;
        assert_eq!(s.log_dir, PathBuf::from("/cli"));
        assert_eq!(s.log_level, DEBUG_LOG_LEVEL);
        let s = load_text(&l, Some("log_dir = /file\nlog_level = 2\n"), &l.defaults()).settings;
        assert_eq!(s.log_dir, PathBuf::from("/file"));
        assert_eq!(s.log_level, 2);
        // Commented out again: back to the command line's value.
        let s = load_text(&l, Some("# log_dir = /file\n"), &s).settings;
        assert_eq!(s.log_dir, PathBuf::from("/cli"));
        assert_eq!(s.log_level, DEBUG_LOG_LEVEL);
    }

    #[test]
    fn missing_file_means_defaults() {
        let l = layers();
        let got = load_initial(&l);
        assert_eq!(got.settings, l.defaults());
        assert!(got.problems.is_empty());
    }

    fn wait_for(rx: &mut watch::Receiver<Settings>, what: impl Fn(&Settings) -> bool) -> Duration {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if what(&rx.borrow_and_update()) {
                return start.elapsed();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("timed out; settings {:?}", *rx.borrow());
    }

    #[test]
    fn reload_on_rename_and_on_creation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tcmu.conf");
        let l = Layers {
            path: path.clone(),
            ..Layers::default()
        };
        let applied = Arc::new(Mutex::new(Vec::new()));
        let seen = applied.clone();
        let w = watch(l.clone(), load_initial(&l).settings, move |old, new| {
            seen.lock().unwrap().push((old.log_level, new.log_level));
        })
        .unwrap();
        let mut rx = w.subscribe();
        assert_eq!(rx.borrow().log_level, 3);
        std::thread::sleep(Duration::from_millis(100));

        // The file does not exist yet: create it.
        std::fs::write(&path, "log_level = 4\n").unwrap();
        let t = wait_for(&mut rx, |s| s.log_level == 4);
        assert!(t < Duration::from_secs(1), "{t:?}");

        // Replace it like an editor: write a new file, rename it over.
        let tmp = dir.path().join(".tcmu.conf.swp");
        std::fs::write(&tmp, "log_level = 5\nmetrics_interval = 2 # fast\n").unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        let t = wait_for(&mut rx, |s| s.log_level == 5);
        assert!(t < Duration::from_secs(1), "{t:?}");
        assert_eq!(rx.borrow().metrics_interval, Duration::from_secs(2));

        // Reading the file (as the watcher itself does) is no change.
        for _ in 0..3 {
            std::fs::read(&path).unwrap();
        }
        std::thread::sleep(Duration::from_millis(400));
        assert_eq!(applied.lock().unwrap().len(), 2);

        // Other files in the directory do not matter; removing the file
        // means defaults again.
        std::fs::write(dir.path().join("other"), "log_level = 1\n").unwrap();
        std::fs::remove_file(&path).unwrap();
        wait_for(&mut rx, |s| s.log_level == 3);
        assert_eq!(*applied.lock().unwrap(), vec![(3, 4), (4, 5), (5, 3)]);
        assert_eq!(w.subscribe().borrow().log_level, 3);
    }

    #[test]
    fn reload_when_the_directory_appears_later() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("etc");
        let path = sub.join("tcmu.conf");
        let l = Layers {
            path: path.clone(),
            ..Layers::default()
        };
        let w = watch(l.clone(), load_initial(&l).settings, |_, _| {}).unwrap();
        let mut rx = w.subscribe();
        std::fs::create_dir(&sub).unwrap();
        std::fs::write(&path, "log_level = 1\n").unwrap();
        wait_for(&mut rx, |s| s.log_level == 1);
        drop(w);
    }
}
