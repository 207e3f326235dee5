//! Logging at tcmu-runner's levels, to stderr and `<log_dir>/tcmu-runner.log`.
//!
//! Levels: 0 CRIT, 1 ERROR, 2 WARNING, 3 INFO (default), 4 DEBUG,
//! 5 DEBUG SCSI CMD. They map onto tracing's ERROR … TRACE.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use tracing::level_filters::LevelFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::prelude::*;

/// The default tcmu-runner log level (INFO).
pub const DEFAULT_LEVEL: u8 = 3;

/// The tracing filter for a tcmu-runner log level.
pub fn filter_for(level: u8) -> LevelFilter {
    match level {
        0 | 1 => LevelFilter::ERROR,
        2 => LevelFilter::WARN,
        3 => LevelFilter::INFO,
        4 => LevelFilter::DEBUG,
        _ => LevelFilter::TRACE,
    }
}

/// The log file, shared by every thread.
#[derive(Clone)]
struct LogFile(Arc<Mutex<File>>);

/// The open log file and its path, for [`reopen`].
static LOG_FILE: OnceLock<(LogFile, PathBuf)> = OnceLock::new();

fn open_log(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// Reopens the log file at its path (after logrotate moved it away; SIGHUP).
pub fn reopen() -> std::io::Result<()> {
    if let Some((file, path)) = LOG_FILE.get() {
        let new = open_log(path)?;
        if let Ok(mut guard) = file.0.lock() {
            *guard = new;
        }
    }
    Ok(())
}

struct LogFileGuard<'a>(std::sync::MutexGuard<'a, File>);

impl Write for LogFileGuard<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
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

/// Where the log file lives: the CLI's directory, else `$TCMU_LOGDIR`,
/// else `/var/log`.
pub fn log_dir(cli: Option<&Path>) -> PathBuf {
    cli.map(Path::to_path_buf)
        .or_else(|| std::env::var_os("TCMU_LOGDIR").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("/var/log"))
}

/// Installs the global subscriber; returns the log file path.
pub fn init(level: u8, dir: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir)
        .map_err(|e| anyhow::anyhow!("cannot create log directory {}: {e}", dir.display()))?;
    let path = dir.join("tcmu-runner.log");
    let file = open_log(&path)
        .map_err(|e| anyhow::anyhow!("cannot open log file {}: {e}", path.display()))?;
    let file = LogFile(Arc::new(Mutex::new(file)));
    let _ = LOG_FILE.set((file.clone(), path.clone()));
    let filter = filter_for(level);
    let file_layer = tracing_subscriber::fmt::layer()
        .with_ansi(false)
        .with_thread_names(true)
        .with_writer(file);
    let stderr_layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_thread_names(true);
    tracing_subscriber::registry()
        .with(filter)
        .with(file_layer)
        .with(stderr_layer)
        .try_init()
        .map_err(|e| anyhow::anyhow!("cannot install the logger: {e}"))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_map_like_tcmu_runner() {
        assert_eq!(filter_for(0), LevelFilter::ERROR);
        assert_eq!(filter_for(2), LevelFilter::WARN);
        assert_eq!(filter_for(DEFAULT_LEVEL), LevelFilter::INFO);
        assert_eq!(filter_for(4), LevelFilter::DEBUG);
        assert_eq!(filter_for(5), LevelFilter::TRACE);
    }

    #[test]
    fn log_dir_precedence() {
        assert_eq!(log_dir(Some(Path::new("/x"))), PathBuf::from("/x"));
    }
}
