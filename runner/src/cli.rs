//! Command-line flags, the same as tcmu-runner's.

use std::path::PathBuf;

use clap::Parser;

/// tcmu-runner: serves LIO TCM-User (`user:<subtype>`) backstores.
#[derive(Debug, Parser)]
#[command(name = "tcmu-runner", version, about, long_about = None)]
pub struct Cli {
    /// Log at DEBUG level (tcmu-runner log level 4).
    #[arg(short = 'd', long = "debug")]
    pub debug: bool,

    /// Directory for tcmu-runner.log (default: $TCMU_LOGDIR, then /var/log).
    #[arg(short = 'l', long = "tcmu-log-dir", value_name = "DIR")]
    pub log_dir: Option<PathBuf>,

    /// Raise the open-files limit to N.
    #[arg(short = 'f', long = "nofile", value_name = "N")]
    pub nofile: Option<u64>,

    /// Accepted for compatibility; handlers are compiled in.
    #[arg(long = "handler-path", value_name = "DIR")]
    pub handler_path: Option<PathBuf>,

    /// Number of worker threads (default: online CPUs).
    #[arg(long = "workers", value_name = "N")]
    pub workers: Option<usize>,

    /// Single-instance lock file.
    #[arg(
        long = "lock-file",
        value_name = "PATH",
        default_value = "/run/tcmu-runner.lock"
    )]
    pub lock_file: PathBuf,
}
