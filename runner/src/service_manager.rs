//! State notifications to systemd (`sd_notify`, unit `Type=notify`): ready,
//! reloading (an in-place upgrade), stopping, a status line, and the main
//! pid moving to a successor. Without `$NOTIFY_SOCKET` (not started by
//! systemd) every call does nothing. `NOTIFY_SOCKET` stays in the
//! environment: a successor started for an upgrade needs it.

use sd_notify::NotifyState;
use tracing::debug;

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        debug!("cannot notify the service manager: {e}");
    }
}

/// The daemon serves: start-up (or an upgrade) is complete.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// An in-place upgrade has started; [`ready`] ends it.
pub fn reloading(status: &str) {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now, NotifyState::Status(status)]),
        Err(_) => send(&[NotifyState::Reloading, NotifyState::Status(status)]),
    }
}

/// The daemon is stopping (SIGTERM/SIGINT; not on a hand-over, where a
/// successor is the main process already and this would stop the service).
pub fn stopping(status: &str) {
    send(&[NotifyState::Stopping, NotifyState::Status(status)]);
}

/// This process (a successor) becomes the service's main process, or
/// gives that back to `pid` when it could not take over.
pub fn main_pid(pid: u32) {
    send(&[NotifyState::MainPid(pid)]);
}
