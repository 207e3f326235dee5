//! In-place upgrade on SIGUSR1 (`systemctl reload tcmu-runner`): the
//! running daemon starts the binary installed at its own path as a
//! successor with `--takeover`, which then takes the devices over as
//! [`crate::takeover`] describes. I/O pauses for the hand-over only; the
//! successor's start-up happens while this daemon still serves.
//!
//! Under systemd the service's main pid changes: the successor tells
//! systemd its pid (`MAINPID=`) before it asks this daemon to hand over,
//! so the old daemon's exit is not taken for the service's. The unit
//! needs `NotifyAccess=all` for that; [`crate::service_manager`] has the
//! messages.
//!
//! A successor that fails (missing or broken binary, exits early, never
//! asks for the hand-over) changes nothing: this daemon logs it and goes
//! on serving.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use tokio::process::{Child, Command};
use tracing::{error, info, warn};

use crate::service_manager;

/// The signal that asks for an in-place upgrade.
pub const UPGRADE_SIGNAL: &str = "SIGUSR1";

/// How long a successor may take to ask for the hand-over before it is
/// stopped and this daemon carries on. Its start-up takes well under a
/// second; its own wait for this daemon's lock is
/// [`crate::takeover::WAIT`].
pub const SUCCESSOR_START_LIMIT: Duration = Duration::from_secs(60);

/// How this daemon was started, to start its successor the same way.
#[derive(Debug, Clone)]
pub struct Launch {
    /// The binary's path, resolved at start-up (after a package upgrade
    /// the same path names the new binary).
    exe: PathBuf,
    /// The command-line arguments, without `--takeover`.
    args: Vec<OsString>,
}

impl Launch {
    /// This process's binary path and arguments. `None` when the path
    /// cannot be found (then SIGUSR1 is refused with a message).
    pub fn current() -> Option<Self> {
        let exe = std::env::current_exe().ok()?;
        let args = std::env::args_os()
            .skip(1)
            .filter(|a| a != "--takeover")
            .collect();
        Some(Self { exe, args })
    }

    /// Starts the successor: the binary at the same path, the same
    /// arguments plus `--takeover`, this process's environment (systemd's
    /// `NOTIFY_SOCKET` included) and standard streams.
    pub fn spawn_successor(&self) -> std::io::Result<Successor> {
        let child = Command::new(&self.exe)
            .args(&self.args)
            .arg("--takeover")
            .kill_on_drop(false)
            .spawn()?;
        Ok(Successor {
            pid: child.id().unwrap_or(0),
            child,
        })
    }

    /// The binary a successor would run.
    pub fn exe(&self) -> &std::path::Path {
        &self.exe
    }
}

/// A successor started by [`Launch::spawn_successor`] that has not taken
/// over yet.
#[derive(Debug)]
pub struct Successor {
    pid: u32,
    child: Child,
}

impl Successor {
    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Waits until the successor has failed: it exited, or it did not ask
    /// for the hand-over within [`SUCCESSOR_START_LIMIT`] (then it is
    /// killed). Returns the reason, for the log. A successor that asks for
    /// the hand-over in time makes the caller stop waiting on this.
    pub async fn failed(&mut self) -> String {
        tokio::select! {
            status = self.child.wait() => match status {
                Ok(s) => format!("it exited ({s}) before taking over"),
                Err(e) => format!("cannot wait for it: {e}"),
            },
            () = tokio::time::sleep(SUCCESSOR_START_LIMIT) => {
                if let Err(e) = self.child.start_kill() {
                    warn!("upgrade: cannot stop successor pid {}: {e}", self.pid);
                }
                let _ = self.child.wait().await;
                format!(
                    "it did not ask for the hand-over within {} s and was stopped",
                    SUCCESSOR_START_LIMIT.as_secs()
                )
            }
        }
    }
}

/// Waits for `successor` to fail (see [`Successor::failed`]); never
/// returns when there is none.
pub async fn successor_failed(successor: &mut Option<Successor>) -> String {
    match successor {
        Some(s) => s.failed().await,
        None => std::future::pending().await,
    }
}

/// Handles SIGUSR1: starts a successor unless one is under way. Returns
/// the successor to watch.
pub fn start(launch: Option<&Launch>, under_way: &Option<Successor>) -> Option<Successor> {
    if let Some(s) = under_way {
        warn!(
            "{UPGRADE_SIGNAL}: an upgrade is under way already (successor pid {}); ignored",
            s.pid()
        );
        return None;
    }
    let Some(launch) = launch else {
        error!("{UPGRADE_SIGNAL}: the path of this binary is not known; cannot upgrade in place");
        return None;
    };
    match launch.spawn_successor() {
        Ok(s) => {
            info!(
                "{UPGRADE_SIGNAL}: upgrading in place: started {} --takeover as pid {}",
                launch.exe().display(),
                s.pid()
            );
            service_manager::reloading(&format!("upgrading: successor pid {} starting", s.pid()));
            Some(s)
        }
        Err(e) => {
            error!(
                "{UPGRADE_SIGNAL}: cannot start {}: {e}; still serving",
                launch.exe().display()
            );
            None
        }
    }
}

/// Logs a successor's failure and tells the service manager this daemon
/// serves on.
pub fn report_failure(pid: u32, why: &str, devices: usize) {
    error!("upgrade: successor pid {pid} failed: {why}; still serving");
    service_manager::ready(&format!(
        "serving {devices} device(s); the last upgrade failed (successor {why})"
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_successor_that_exits_early_is_reported() {
        let launch = Launch {
            exe: PathBuf::from("/bin/sh"),
            args: vec!["-c".into(), "exit 3".into()],
        };
        // sh -c 'exit 3' --takeover: $0 is --takeover, the exit status 3.
        let mut s = Some(launch.spawn_successor().unwrap());
        let why = successor_failed(&mut s).await;
        assert!(why.contains("exited") && why.contains('3'), "{why}");
    }

    #[tokio::test]
    async fn a_missing_binary_is_refused_without_a_successor() {
        let launch = Launch {
            exe: PathBuf::from("/nonexistent/tcmu-runner"),
            args: vec![],
        };
        assert!(start(Some(&launch), &None).is_none());
        assert!(start(None, &None).is_none());
    }

    #[test]
    fn takeover_is_not_passed_twice() {
        let launch = Launch::current().unwrap();
        assert!(launch.args.iter().all(|a| a != "--takeover"));
    }
}
