//! Graceful upgrade: `tcmu-runner --takeover` starts in place of a running
//! daemon with I/O paused for a moment, not failed.
//!
//! The protocol, between the successor (this module) and the running
//! daemon (`daemon::Daemon::hand_over`):
//! 1. the successor does its slow start-up first (configuration, logging,
//!    worker threads), then reads the owner's pid from the lock file and
//!    sends it [`HANDOVER_SIGNAL`];
//! 2. the owner stops the kernel waiting for netlink replies, answers the
//!    events already sent, writes 1 to every device's `action/block_dev`
//!    (the kernel answers new commands BUSY, which initiators retry),
//!    finishes the commands in flight, closes its handlers and exits 0,
//!    leaving the devices blocked;
//! 3. the successor gets the lock (waiting at most [`WAIT`]) and starts as
//!    usual: for every device block (already), reset the ring (it holds no
//!    command in flight), open, unblock.
//!
//! Under systemd, the successor first tells systemd that it is the main
//! process now (`MAINPID=`, unit `NotifyAccess=all`): the old daemon's
//! exit is then not the service's. `systemctl reload` starts the whole
//! exchange from the running daemon (SIGUSR1, [`crate::upgrade`]).
//!
//! A running daemon that does not know the signal (an older build) dies of
//! it, which a normal start recovers from like any crash.

use std::path::Path;
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal};
use tracing::info;

use crate::lock::{self, Attempt, InstanceLock};
use crate::service_manager;

/// The signal that asks a running daemon to hand its devices over
/// (SIGHUP reopens the log; SIGTERM/SIGINT stop).
pub const HANDOVER_SIGNAL: Signal = Signal::USR2;

/// How long a successor waits for the running daemon to let go.
pub const WAIT: Duration = Duration::from_secs(30);

/// Asks the daemon holding the lock at `lock_path` to hand over and takes
/// the lock once it has; takes it at once when no daemon runs.
pub fn take_over(lock_path: &Path) -> anyhow::Result<InstanceLock> {
    if let Attempt::Taken(lock) = lock::acquire_or_else(lock_path)? {
        info!("--takeover: no tcmu-runner was running; starting normally");
        return Ok(lock);
    }
    let pid = lock::holder_pid(lock_path)
        .filter(|&p| p > 1 && p != std::process::id() as i32)
        .and_then(Pid::from_raw)
        .ok_or_else(|| {
            anyhow::anyhow!(
                "--takeover: {} is locked but holds no usable pid; cannot ask its owner to hand over",
                lock_path.display()
            )
        })?;
    // Under systemd the service's main pid becomes this one before the
    // running daemon exits, so its exit does not end the service; and
    // only once this process is PID 1's child (see `crate::upgrade`), so
    // systemd waits for it when it stops the service.
    crate::upgrade::wait_until_detached();
    service_manager::main_pid(std::process::id());
    let start = Instant::now();
    rustix::process::kill_process(pid, HANDOVER_SIGNAL).map_err(|e| {
        service_manager::main_pid(pid.as_raw_nonzero().get() as u32);
        anyhow::anyhow!(
            "--takeover: cannot signal the running tcmu-runner (pid {}): {e}",
            pid.as_raw_nonzero()
        )
    })?;
    info!(
        "--takeover: asked tcmu-runner pid {} to hand over (SIGUSR2); waiting for it",
        pid.as_raw_nonzero()
    );
    let lock = lock::acquire_within(lock_path, WAIT).map_err(|e| {
        service_manager::main_pid(pid.as_raw_nonzero().get() as u32);
        anyhow::anyhow!("--takeover: {e:#}")
    })?;
    info!(
        "--takeover: pid {} let go after {} ms",
        pid.as_raw_nonzero(),
        start.elapsed().as_millis()
    );
    Ok(lock)
}
