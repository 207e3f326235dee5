//! Command-line flags: tcmu-runner 1.5.4's (`-d`, `-l`, `-f`,
//! `--handler-path`, `-V`, `-h`, same short and long names), plus a few of
//! ours (`--config`, `--workers`, `--lock-file`, `--takeover`, `--device`,
//! `--no-dbus`).
//!
//! Differences from tcmu-runner: `-V` and `-h` exit 0 (tcmu-runner exits 1
//! after printing); `-V` prints to stdout.

use std::path::PathBuf;

use clap::Parser;

/// tcmu-runner 1.5.4 refuses `--nofile` values outside this range.
const NOFILE_MIN: u64 = 65_536;
/// See [`NOFILE_MIN`].
const NOFILE_MAX: u64 = 1_048_576;

/// What `-V` prints after the name, on one line: our version, then the
/// tcmu-runner release whose interface we serve, as the last word. Tools
/// that drive tcmu-runner read its version from the last word of
/// `tcmu-runner --version` (gluster-block: `awk '{printf $NF}'`, at least
/// 1.1.3, and 1.5.0 for its I/O time-out capability); our own version
/// (0.x) would fail those checks.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (tcmu-rs), compatible with tcmu-runner 1.5.4"
);

/// tcmu-runner: serves LIO TCM-User (`user:<subtype>`) backstores.
///
/// Settings are read from /etc/tcmu/tcmu.conf (log_level, log_dir,
/// metrics_file, metrics_interval) and re-read when it changes; a value
/// in that file overrides the flags below.
#[derive(Debug, Parser)]
#[command(name = "tcmu-runner", version = VERSION, about, long_about)]
pub struct Cli {
    /// Enable debug messages: log level 5 (DEBUG SCSI CMD) unless
    /// tcmu.conf sets log_level.
    #[arg(short = 'd', long = "debug")]
    pub debug: bool,

    /// Directory for tcmu-runner.log (default: $TCMU_LOGDIR, then
    /// /var/log; log_dir in tcmu.conf wins).
    #[arg(short = 'l', long = "tcmu-log-dir", value_name = "DIR")]
    pub log_dir: Option<PathBuf>,

    /// Set the maximum number of open files (65536-1048576).
    #[arg(short = 'f', long = "nofile", value_name = "N",
          value_parser = clap::value_parser!(u64).range(NOFILE_MIN..=NOFILE_MAX))]
    pub nofile: Option<u64>,

    /// Accepted for compatibility and ignored: handlers are compiled in.
    #[arg(long = "handler-path", value_name = "DIR")]
    pub handler_path: Option<PathBuf>,

    /// Configuration file (tcmu-rs extension; default /etc/tcmu/tcmu.conf).
    #[arg(long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Number of worker threads (tcmu-rs extension; default: online CPUs).
    #[arg(long = "workers", value_name = "N")]
    pub workers: Option<usize>,

    /// Single-instance lock file (tcmu-rs extension).
    #[arg(
        long = "lock-file",
        value_name = "PATH",
        default_value = "/run/tcmu-runner.lock"
    )]
    pub lock_file: PathBuf,

    /// Take over from a running tcmu-runner (graceful upgrade; tcmu-rs
    /// extension): ask it (SIGUSR2) to pause its devices, finish the
    /// commands in flight and exit, then serve the devices in its place.
    /// I/O pauses for well under a second and is not failed. Waits at most
    /// 30 s for the running daemon; starts normally when none runs.
    #[arg(long = "takeover")]
    pub takeover: bool,

    /// Serve only this device, a configfs device name (`disk0`) or one
    /// with its HBA (`user_1/disk0`); repeat for more (tcmu-rs extension).
    /// Other devices are left to other daemons, each with its own
    /// --lock-file. Default: every device.
    #[arg(long = "device", value_name = "NAME",
          value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub devices: Vec<String>,

    /// Do not serve org.kernel.TCMUService1 on the system bus (tcmu-rs
    /// extension): for a daemon beside the one targetcli talks to.
    #[arg(long = "no-dbus")]
    pub no_dbus: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn tcmu_runner_flags_parse() {
        let c = Cli::try_parse_from([
            "tcmu-runner",
            "-d",
            "-l",
            "/x",
            "-f",
            "1000000",
            "--handler-path",
            "/usr/lib/tcmu-runner",
        ])
        .unwrap();
        assert!(c.debug);
        assert_eq!(c.log_dir, Some(PathBuf::from("/x")));
        assert_eq!(c.nofile, Some(1_000_000));
        let c = Cli::try_parse_from([
            "tcmu-runner",
            "--debug",
            "--tcmu-log-dir=/y",
            "--nofile=65536",
        ])
        .unwrap();
        assert_eq!(c.log_dir, Some(PathBuf::from("/y")));
        assert!(!c.takeover);
        assert!(Cli::try_parse_from(["tcmu-runner", "-f", "10"]).is_err());
        assert!(
            Cli::try_parse_from(["tcmu-runner", "--takeover"])
                .unwrap()
                .takeover
        );
        assert!(c.devices.is_empty() && !c.no_dbus);
    }

    #[test]
    fn a_daemon_for_named_devices() {
        let c = Cli::try_parse_from([
            "tcmu-runner",
            "--device",
            "gw1",
            "--device=user_2/gw2",
            "--lock-file",
            "/run/tcmu-gw1.lock",
            "--no-dbus",
        ])
        .unwrap();
        assert_eq!(c.devices, ["gw1", "user_2/gw2"]);
        assert_eq!(c.lock_file, PathBuf::from("/run/tcmu-gw1.lock"));
        assert!(c.no_dbus);
        assert!(Cli::try_parse_from(["tcmu-runner", "--device", ""]).is_err());
    }

    #[test]
    fn version_and_help_are_requests_not_errors() {
        for (arg, kind) in [
            ("-V", clap::error::ErrorKind::DisplayVersion),
            ("--version", clap::error::ErrorKind::DisplayVersion),
            ("-h", clap::error::ErrorKind::DisplayHelp),
            ("--help", clap::error::ErrorKind::DisplayHelp),
        ] {
            let e = Cli::try_parse_from(["tcmu-runner", arg]).unwrap_err();
            assert_eq!(e.kind(), kind);
            assert_eq!(e.exit_code(), 0);
        }
        let help = Cli::command().render_long_help().to_string();
        assert!(help.contains("--tcmu-log-dir"));
        assert!(help.contains("--takeover"));
        Cli::command().debug_assert();
    }

    #[test]
    fn the_version_names_tcmu_rs_and_ends_with_a_tcmu_runner_release() {
        let v = Cli::command().render_version().to_string();
        assert_eq!(v.lines().count(), 1, "{v:?}");
        assert!(
            v.starts_with(&format!("tcmu-runner {}", env!("CARGO_PKG_VERSION"))),
            "{v}"
        );
        assert!(v.contains("tcmu-rs"), "{v}");
        // What gluster-block's `awk '{printf $NF}'` reads: at least 1.5.0.
        let last = v.split_whitespace().last().unwrap_or_default();
        let nums: Vec<u32> = last.split('.').filter_map(|n| n.parse().ok()).collect();
        assert_eq!(nums.len(), 3, "{last}");
        assert!(nums >= vec![1, 5, 0], "{last}");
    }
}
