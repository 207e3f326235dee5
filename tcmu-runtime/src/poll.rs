//! Optional busy-polling of idle rings.
//!
//! With a poll window set, a device task whose commands have all completed
//! watches its ring for that long before going back to sleep on the
//! doorbell, so a command that follows quickly (queue depth 1, a
//! synchronous initiator) is picked up without a wake-up. It costs CPU
//! while it spins and holds up the worker's other tasks, so it is off by
//! default and only worth it with CPUs to spare. Process-wide, changeable
//! at any time (tcmu.conf `ring_poll_us`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Longest accepted poll window: beyond this a worker would starve its
/// other devices.
pub const MAX_RING_POLL: Duration = Duration::from_millis(1);

static RING_POLL_NS: AtomicU64 = AtomicU64::new(0);

/// Sets how long an idle device polls its ring before sleeping (zero
/// turns polling off; capped at [`MAX_RING_POLL`]).
pub fn set_ring_poll(window: Duration) {
    let ns = window.min(MAX_RING_POLL).as_nanos();
    RING_POLL_NS.store(u64::try_from(ns).unwrap_or(u64::MAX), Ordering::Relaxed);
}

/// The poll window in effect.
pub fn ring_poll() -> Duration {
    Duration::from_nanos(RING_POLL_NS.load(Ordering::Relaxed))
}

/// Spins until `ready()` says yes or the poll window passes; returns
/// whether it did. Returns at once when polling is off.
pub(crate) fn spin_until(mut ready: impl FnMut() -> bool) -> bool {
    let window = ring_poll();
    if window.is_zero() {
        return false;
    }
    let deadline = Instant::now() + window;
    loop {
        // Cheap check first; the clock only every few rounds.
        for _ in 0..16 {
            if ready() {
                return true;
            }
            std::hint::spin_loop();
        }
        if Instant::now() >= deadline {
            return false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polls_only_when_enabled_and_within_the_window() {
        set_ring_poll(Duration::ZERO);
        assert!(!spin_until(|| true), "polling is off");
        set_ring_poll(Duration::from_secs(5));
        assert_eq!(ring_poll(), MAX_RING_POLL);
        let mut n = 0;
        assert!(spin_until(|| {
            n += 1;
            n == 40
        }));
        let start = Instant::now();
        assert!(!spin_until(|| false));
        assert!(start.elapsed() >= MAX_RING_POLL);
        set_ring_poll(Duration::ZERO);
    }
}
