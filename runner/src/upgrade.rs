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
//! The successor must be systemd's child, not this daemon's: systemd
//! records whether a new main pid is its own child when `MAINPID=` names
//! it, and never looks again. For a main process that is not its child it
//! does not wait on `systemctl stop`: it sends SIGTERM and then, at once,
//! SIGKILL, so a daemon started by a reload would be killed in the middle
//! of finishing its commands. So the successor is started through a
//! starter: the new binary run with [`DETACH_ENV`] set, which starts the
//! successor proper, prints its pid and exits at once ([`run_starter`]).
//! The successor, orphaned, becomes a child of PID 1 (systemd) before it
//! sends `MAINPID=` (it waits for that: [`wait_until_detached`]). This
//! daemon learns the pid from the starter and watches for the
//! successor's end in `/proc`.
//!
//! A successor that fails (missing or broken binary, exits early, never
//! asks for the hand-over) changes nothing: this daemon logs it and goes
//! on serving.

use std::ffi::OsString;
use std::io::Read;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal};
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

/// Set for the starter (see the module's documentation): the new binary
/// run with it only starts the successor proper, prints its pid on
/// standard output and exits.
pub const DETACH_ENV: &str = "TCMU_RS_START_SUCCESSOR";

/// Set for the successor proper by its starter: the starter's pid. The
/// successor sends `MAINPID=` only once its parent is someone else.
pub const DETACHED_FROM_ENV: &str = "TCMU_RS_STARTED_BY";

/// How long the starter may take to print the successor's pid and exit.
/// Past that it is taken for the successor itself (an older build that
/// knows no starter): this daemon watches it as its child, as before.
const STARTER_LIMIT: Duration = Duration::from_secs(3);

/// How long a successor waits for its starter to exit before it tells
/// systemd it is the main process (the starter exits right after starting
/// it).
const DETACH_WAIT: Duration = Duration::from_secs(5);

/// In the starter (this binary run with [`DETACH_ENV`] by a daemon's
/// SIGUSR1): starts the successor proper (this binary, the same arguments,
/// [`DETACHED_FROM_ENV`] set, standard output on standard error), prints
/// its pid and returns the exit code. `None` in any other process.
pub fn run_starter() -> Option<ExitCode> {
    std::env::var_os(DETACH_ENV)?;
    let started = std::env::current_exe().and_then(|exe| {
        // Standard output is the pipe to the daemon; the successor logs to
        // standard error, and gets it for both.
        let out = std::io::stderr().as_fd().try_clone_to_owned()?;
        std::process::Command::new(exe)
            .args(std::env::args_os().skip(1))
            .env_remove(DETACH_ENV)
            .env(DETACHED_FROM_ENV, std::process::id().to_string())
            .stdout(Stdio::from(out))
            .spawn()
    });
    Some(match started {
        Ok(child) => {
            println!("{}", child.id());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tcmu-runner: cannot start the successor: {e}");
            ExitCode::FAILURE
        }
    })
}

/// In a successor started by a starter: waits (at most [`DETACH_WAIT`])
/// until the starter has exited, so that this process is PID 1's child
/// when it names itself the main process. Returns at once in any other
/// process.
pub fn wait_until_detached() {
    let Some(starter) = std::env::var(DETACHED_FROM_ENV)
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
    else {
        return;
    };
    let deadline = Instant::now() + DETACH_WAIT;
    while std::os::unix::process::parent_id() == starter {
        if Instant::now() > deadline {
            warn!("--takeover: the starter (pid {starter}) has not exited; systemd may not wait for this process when it stops the service");
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

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
    /// `NOTIFY_SOCKET` included) and standard error, through a starter
    /// (see the module's documentation). Blocks until the starter has
    /// exited (a few milliseconds), at most [`STARTER_LIMIT`].
    pub fn spawn_successor(&self) -> std::io::Result<Successor> {
        let mut starter = Command::new(&self.exe)
            .args(&self.args)
            .arg("--takeover")
            .env(DETACH_ENV, "1")
            .env_remove(DETACHED_FROM_ENV)
            .stdout(Stdio::piped())
            .kill_on_drop(false)
            .spawn()?;
        // Read below, once the starter has exited: no waiting on the pipe.
        let from_starter = starter.stdout.take().map(|o| o.into_owned_fd());
        let starter_pid = starter.id().unwrap_or(0);
        let deadline = Instant::now() + STARTER_LIMIT;
        let status = loop {
            if let Some(status) = starter.try_wait()? {
                break status;
            }
            if Instant::now() > deadline {
                // An older build, which is the successor itself.
                warn!("upgrade: pid {starter_pid} is still running after {} s: taken for the successor itself (an older build)", STARTER_LIMIT.as_secs());
                return Ok(Successor::child(starter_pid, starter));
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        if !status.success() {
            return Ok(Successor::gave_up(
                starter_pid,
                format!("it exited ({status}) before taking over"),
            ));
        }
        let mut out = String::new();
        if let Some(fd) = from_starter {
            std::fs::File::from(fd?).read_to_string(&mut out)?;
        }
        let Some(pid) = out.trim().parse::<i32>().ok().and_then(Pid::from_raw) else {
            return Ok(Successor::gave_up(
                starter_pid,
                format!("its starter printed no pid ({out:?})"),
            ));
        };
        Ok(Successor {
            pid: pid.as_raw_nonzero().get() as u32,
            started: Instant::now(),
            watch: Watch::Adopted(pid),
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
    started: Instant,
    watch: Watch,
}

/// How a [`Successor`]'s end is noticed.
#[derive(Debug)]
enum Watch {
    /// Started by a starter: not our child; looked for in `/proc`.
    Adopted(Pid),
    /// Our child (an older build that knows no starter).
    Child(Child),
    /// Failed already, for this reason.
    Failed(String),
}

impl Successor {
    fn child(pid: u32, child: Child) -> Self {
        Successor {
            pid,
            started: Instant::now(),
            watch: Watch::Child(child),
        }
    }

    fn gave_up(pid: u32, why: String) -> Self {
        Successor {
            pid,
            started: Instant::now(),
            watch: Watch::Failed(why),
        }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Waits until the successor has failed: it exited, or it did not ask
    /// for the hand-over within [`SUCCESSOR_START_LIMIT`] of its start
    /// (then it is killed). Returns the reason, for the log. A successor
    /// that asks for the hand-over in time makes the caller stop waiting
    /// on this. Cancel-safe: the caller polls it anew in a loop.
    pub async fn failed(&mut self) -> String {
        let limit = tokio::time::Instant::from_std(self.started + SUCCESSOR_START_LIMIT);
        let exited = async {
            match &mut self.watch {
                Watch::Adopted(pid) => {
                    while !gone(*pid) {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    "it exited before taking over".to_owned()
                }
                Watch::Child(child) => match child.wait().await {
                    Ok(s) => format!("it exited ({s}) before taking over"),
                    Err(e) => format!("cannot wait for it: {e}"),
                },
                Watch::Failed(why) => why.clone(),
            }
        };
        let timed_out = tokio::select! {
            why = exited => return why,
            () = tokio::time::sleep_until(limit) => true,
        };
        debug_assert!(timed_out);
        let killed = match &mut self.watch {
            Watch::Adopted(pid) => {
                rustix::process::kill_process(*pid, Signal::KILL).map_err(std::io::Error::from)
            }
            Watch::Child(child) => child.start_kill(),
            Watch::Failed(_) => Ok(()),
        };
        if let Err(e) = killed {
            warn!("upgrade: cannot stop successor pid {}: {e}", self.pid);
        }
        if let Watch::Child(child) = &mut self.watch {
            let _ = child.wait().await;
        }
        format!(
            "it did not ask for the hand-over within {} s and was stopped",
            SUCCESSOR_START_LIMIT.as_secs()
        )
    }
}

/// Whether process `pid` has ended: it is gone, or a zombie waiting for
/// its new parent to reap it.
fn gone(pid: Pid) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{}/stat", pid.as_raw_nonzero())) else {
        return true;
    };
    // The state follows the command name's closing parenthesis.
    stat.rsplit_once(") ")
        .is_some_and(|(_, rest)| rest.starts_with('Z') || rest.starts_with('X'))
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
    async fn the_starter_hands_over_the_pid_of_a_process_it_orphans() {
        // A stand-in starter: starts `sleep` in the background (its standard
        // output elsewhere, as `run_starter` does: the pipe must close when
        // the starter exits), prints its pid and exits.
        let launch = Launch {
            exe: PathBuf::from("/bin/sh"),
            args: vec!["-c".into(), "sleep 2 >&2 & echo $!".into()],
        };
        let mut s = launch.spawn_successor().unwrap();
        let Watch::Adopted(pid) = s.watch else {
            panic!("not watching an adopted successor: {:?}", s.watch);
        };
        assert_eq!(s.pid(), pid.as_raw_nonzero().get() as u32);
        assert!(!gone(pid), "the orphaned sleep should still run");
        let t = Instant::now();
        let why = s.failed().await;
        assert_eq!(why, "it exited before taking over");
        assert!(t.elapsed() < Duration::from_secs(10));
    }

    #[tokio::test]
    async fn a_starter_that_prints_no_pid_is_a_failure() {
        let launch = Launch {
            exe: PathBuf::from("/bin/sh"),
            args: vec!["-c".into(), "echo hello".into()],
        };
        let why = launch.spawn_successor().unwrap().failed().await;
        assert!(
            why.contains("printed no pid") && why.contains("hello"),
            "{why}"
        );
    }

    #[tokio::test]
    async fn a_binary_that_knows_no_starter_is_the_successor_itself() {
        let launch = Launch {
            exe: PathBuf::from("/bin/sleep"),
            args: vec!["30".into()],
        };
        // `sleep 30 --takeover` fails at once: not a starter's output.
        let why = launch.spawn_successor().unwrap().failed().await;
        assert!(why.contains("exited"), "{why}");
        // `sh -c 'sleep 30'` outlives the starter's limit: our child.
        let launch = Launch {
            exe: PathBuf::from("/bin/sh"),
            args: vec!["-c".into(), "sleep 30".into()],
        };
        let mut s = launch.spawn_successor().unwrap();
        let Watch::Child(child) = &mut s.watch else {
            panic!("not watching a child: {:?}", s.watch);
        };
        child.start_kill().unwrap();
        assert!(s.failed().await.contains("exited"));
    }

    #[test]
    fn gone_processes() {
        let me = Pid::from_raw(std::process::id() as i32).unwrap();
        assert!(!gone(me));
        assert!(gone(Pid::from_raw(i32::MAX).unwrap()));
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
