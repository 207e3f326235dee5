//! Logging at tcmu-runner's levels, to `<log_dir>/tcmu-runner.log` and to
//! stderr (or the journal).
//!
//! Levels: 0 CRIT, 1 ERROR, 2 WARNING, 3 INFO (default), 4 DEBUG,
//! 5 DEBUG SCSI CMD, mapped onto tracing's ERROR … TRACE (level 5 is
//! TRACE: the runtime logs every CDB with `trace!`). tracing has no CRIT:
//! at level 0 only ERROR events marked critical (a `crit` field, see
//! `crit!`) pass. Other crates' events (notify, zbus, …) show up to
//! INFO only: their debug and trace output is not what tcmu-runner's
//! DEBUG levels are for.
//!
//! The level and the log directory change at run time
//! ([`Logging::apply`], driven by tcmu.conf reloads): the level through a
//! `tracing_subscriber::reload` layer, the directory by opening
//! `tcmu-runner.log` in the new one. SIGHUP reopens the file at its path
//! ([`reopen`]), for logrotate.
//!
//! Under systemd (`$JOURNAL_STREAM` names our stderr) stderr lines carry a
//! `<N>` syslog priority prefix and no timestamp: journald reads the
//! prefix as the entry's priority (`SyslogLevelPrefix=`, on by default)
//! and stamps entries itself. That needs no socket and no extra crate, and
//! still works when stderr is redirected elsewhere (we only prefix when
//! stderr *is* the journal stream). The journal and a terminal never get
//! level-5 CDB lines (thousands a second); those go to the file only, as
//! tcmu-runner sends them only to its file and not to syslog.

use std::fs::{File, OpenOptions};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use tracing::level_filters::LevelFilter;
use tracing::subscriber::Interest;
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::layer::Context;
use tracing_subscriber::prelude::*;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{reload, Layer, Registry};

use crate::conf::Settings;

/// The name of the log file in the log directory.
pub const LOG_FILE_NAME: &str = "tcmu-runner.log";

/// An ERROR event that shows even at log level 0 (CRIT).
#[macro_export]
macro_rules! crit {
    ($($arg:tt)+) => { ::tracing::error!(crit = true, $($arg)+) };
}

/// tcmu-runner's names of its levels.
pub fn level_name(level: u8) -> &'static str {
    match level {
        0 => "CRIT",
        1 => "ERROR",
        2 => "WARNING",
        3 => "INFO",
        4 => "DEBUG",
        _ => "DEBUG SCSI CMD",
    }
}

/// The tracing filter for a tcmu-runner log level (level 0 admits ERROR
/// events, but only critical ones: see [`LevelGate`]).
pub fn filter_for(level: u8) -> LevelFilter {
    match level {
        0 | 1 => LevelFilter::ERROR,
        2 => LevelFilter::WARN,
        3 => LevelFilter::INFO,
        4 => LevelFilter::DEBUG,
        _ => LevelFilter::TRACE,
    }
}

fn is_crit(meta: &Metadata<'_>) -> bool {
    *meta.level() == Level::ERROR && meta.fields().field("crit").is_some()
}

/// The global filter: admits what the tcmu-runner level allows.
#[derive(Debug, Clone, Copy)]
pub struct LevelGate {
    level: u8,
}

impl LevelGate {
    fn allows(&self, meta: &Metadata<'_>) -> bool {
        if !meta.target().starts_with("tcmu") && *meta.level() > Level::INFO {
            // Libraries' debug and trace output (notify, zbus, …) is noise
            // at tcmu-runner's debug levels.
            return false;
        }
        if self.level == 0 {
            is_crit(meta)
        } else {
            *meta.level() <= filter_for(self.level)
        }
    }
}

impl<S: Subscriber> Layer<S> for LevelGate {
    fn register_callsite(&self, meta: &'static Metadata<'static>) -> Interest {
        // Decided per call site; the reload layer rebuilds these when the
        // level changes.
        if self.allows(meta) {
            Interest::always()
        } else {
            Interest::never()
        }
    }

    fn enabled(&self, meta: &Metadata<'_>, _: Context<'_, S>) -> bool {
        self.allows(meta)
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(filter_for(self.level))
    }
}

/// The open log file and where it is.
struct Target {
    file: File,
    path: PathBuf,
}

/// The log file, shared by every thread (and swapped on a new directory
/// or SIGHUP).
#[derive(Clone)]
struct LogFile(Arc<Mutex<Target>>);

/// The log file, for [`reopen`].
static LOG_FILE: OnceLock<LogFile> = OnceLock::new();

fn open_log(dir: &Path) -> anyhow::Result<(File, PathBuf)> {
    std::fs::create_dir_all(dir)
        .map_err(|e| anyhow::anyhow!("cannot create log directory {}: {e}", dir.display()))?;
    let path = dir.join(LOG_FILE_NAME);
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| anyhow::anyhow!("cannot open log file {}: {e}", path.display()))?;
    Ok((file, path))
}

/// Reopens the log file at its path (after logrotate moved it away; SIGHUP).
pub fn reopen() -> std::io::Result<()> {
    if let Some(file) = LOG_FILE.get() {
        let mut t = file
            .0
            .lock()
            .map_err(|_| std::io::Error::other("log file lock poisoned"))?;
        let new = OpenOptions::new().create(true).append(true).open(&t.path)?;
        t.file = new;
    }
    Ok(())
}

struct LogFileGuard<'a>(std::sync::MutexGuard<'a, Target>);

impl Write for LogFileGuard<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.file.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.file.flush()
    }
}

impl<'a> MakeWriter<'a> for LogFile {
    type Writer = Box<dyn Write + 'a>;
    fn make_writer(&'a self) -> Self::Writer {
        match self.0.lock() {
            Ok(g) => Box::new(LogFileGuard(g)),
            Err(_) => Box::new(std::io::sink()),
        }
    }
}

/// syslog priority of an event: 2 crit, 3 err, 4 warning, 6 info, 7 debug.
fn syslog_priority(meta: &Metadata<'_>) -> u8 {
    match *meta.level() {
        Level::ERROR if is_crit(meta) => 2,
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    }
}

/// Prefixes every line with `<N>`, journald's priority syntax.
struct SyslogPrefix<F>(F);

impl<S, N, F> FormatEvent<S, N> for SyslogPrefix<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        write!(writer, "<{}>", syslog_priority(event.metadata()))?;
        self.0.format_event(ctx, writer, event)
    }
}

/// Whether stderr is the journal's stream: `$JOURNAL_STREAM` is
/// `<device>:<inode>` of the stream systemd connected.
fn stderr_is_journal() -> bool {
    std::env::var_os("JOURNAL_STREAM")
        .is_some_and(|v| is_stream(&v.to_string_lossy(), std::io::stderr()))
}

/// Whether `fd` is the file `$JOURNAL_STREAM`'s value `<dev>:<ino>` names.
fn is_stream(value: &str, fd: impl std::os::fd::AsFd) -> bool {
    let Some((dev, ino)) = value.split_once(':') else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    match rustix::fs::fstat(fd) {
        Ok(st) => st.st_dev == dev && st.st_ino == ino,
        Err(_) => false,
    }
}

/// Control over the installed logger.
#[derive(Clone)]
pub struct Logging {
    gate: reload::Handle<LevelGate, Registry>,
    file: LogFile,
}

impl Logging {
    /// Sets the tcmu-runner log level (0–5).
    pub fn set_level(&self, level: u8) {
        let level = level.min(crate::conf::MAX_LOG_LEVEL);
        if let Err(e) = self.gate.modify(|g| g.level = level) {
            tracing::error!("cannot change the log level: {e}");
            return;
        }
        crit!("log level now is {}", level_name(level));
    }

    /// Moves the log file to `dir` (created if missing). On failure the
    /// old file stays in use.
    pub fn set_dir(&self, dir: &Path) {
        match open_log(dir) {
            Ok((file, path)) => {
                // The old file says where the log went, the new one starts
                // with its own path (tcmu-runner logs the latter).
                crit!("log file moves to '{}'", path.display());
                if let Ok(mut t) = self.file.0.lock() {
                    *t = Target {
                        file,
                        path: path.clone(),
                    };
                }
                crit!("log file path now is '{}'", path.display());
            }
            Err(e) => tracing::error!("{e:#}; still logging to the old file"),
        }
    }

    /// Applies what changed between two settings.
    pub fn apply(&self, old: &Settings, new: &Settings) {
        if old.log_level != new.log_level {
            self.set_level(new.log_level);
        }
        if old.log_dir != new.log_dir {
            self.set_dir(&new.log_dir);
        }
    }
}

/// Installs the global subscriber at `settings`' level, logging to
/// `settings.log_dir`. Fails when the log file cannot be opened.
pub fn init(settings: &Settings) -> anyhow::Result<Logging> {
    let (file, path) = open_log(&settings.log_dir)?;
    let file = LogFile(Arc::new(Mutex::new(Target { file, path })));
    let _ = LOG_FILE.set(file.clone());
    let (gate, handle) = reload::Layer::new(LevelGate {
        level: settings.log_level.min(crate::conf::MAX_LOG_LEVEL),
    });
    let file_layer = tracing_subscriber::fmt::layer()
        .with_ansi(false)
        .with_thread_names(true)
        .with_writer(file.clone());
    let journal = stderr_is_journal();
    // Never the per-CDB TRACE lines on stderr/the journal.
    let journal_layer = journal.then(|| {
        tracing_subscriber::fmt::layer()
            .event_format(SyslogPrefix(
                tracing_subscriber::fmt::format()
                    .without_time()
                    .with_ansi(false)
                    .with_thread_names(true),
            ))
            .with_writer(std::io::stderr)
            .with_filter(LevelFilter::DEBUG)
    });
    let stderr_layer = (!journal).then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .with_thread_names(true)
            .with_filter(LevelFilter::DEBUG)
    });
    tracing_subscriber::registry()
        .with(gate)
        .with(file_layer)
        .with(journal_layer)
        .with(stderr_layer)
        .try_init()
        .map_err(|e| anyhow::anyhow!("cannot install the logger: {e}"))?;
    Ok(Logging { gate: handle, file })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_map_like_tcmu_runner() {
        assert_eq!(filter_for(0), LevelFilter::ERROR);
        assert_eq!(filter_for(2), LevelFilter::WARN);
        assert_eq!(
            filter_for(crate::conf::DEFAULT_LOG_LEVEL),
            LevelFilter::INFO
        );
        assert_eq!(filter_for(4), LevelFilter::DEBUG);
        assert_eq!(filter_for(5), LevelFilter::TRACE);
        assert_eq!(level_name(5), "DEBUG SCSI CMD");
    }

    #[test]
    fn journal_stream_is_matched_by_device_and_inode() {
        use std::os::unix::fs::MetadataExt;
        let f = tempfile::tempfile().unwrap();
        let m = f.metadata().unwrap();
        assert!(is_stream(&format!("{}:{}", m.dev(), m.ino()), &f));
        assert!(!is_stream(&format!("{}:{}", m.dev(), m.ino() + 1), &f));
        assert!(!is_stream("", &f));
        assert!(!is_stream("1:x", &f));
    }

    /// A writer into a shared buffer.
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| std::io::Error::other("poisoned"))?
                .extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Buf {
        fn take(&self) -> String {
            String::from_utf8(std::mem::take(&mut *self.0.lock().unwrap())).unwrap()
        }
    }

    #[test]
    fn the_gate_follows_reloads_and_crit_passes_at_level_0() {
        let buf = Buf::default();
        let (gate, handle) = reload::Layer::new(LevelGate { level: 3 });
        let w = buf.clone();
        let sub = tracing_subscriber::registry().with(gate).with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .event_format(SyslogPrefix(
                    tracing_subscriber::fmt::format().without_time(),
                ))
                .with_writer(move || w.clone()),
        );
        tracing::subscriber::with_default(sub, || {
            let emit = || {
                tracing::trace!("CDB 28 00");
                tracing::debug!("dbg");
                tracing::info!("inf");
                tracing::error!("err");
                crit!("critical");
            };
            emit();
            let out = buf.take();
            assert!(out.contains("<6>") && out.contains("inf"), "{out}");
            assert!(!out.contains("CDB") && !out.contains("dbg"), "{out}");
            handle.modify(|g| g.level = 5).unwrap();
            emit();
            tracing::debug!(target: "notify::inotify", "library noise");
            let out = buf.take();
            assert!(out.contains("<7>") && out.contains("CDB 28 00"), "{out}");
            assert!(!out.contains("library noise"), "{out}");
            handle.modify(|g| g.level = 0).unwrap();
            emit();
            let out = buf.take();
            assert!(out.contains("<2>") && out.contains("critical"), "{out}");
            assert!(!out.contains("err\n") && !out.contains("inf"), "{out}");
            handle.modify(|g| g.level = 3).unwrap();
            emit();
            assert!(!buf.take().contains("CDB"));
        });
    }
}
