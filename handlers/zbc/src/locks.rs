//! [`ZoneLocks`]: zones held by the commands that move their write
//! pointers, so that a write's check, its data and its write pointer
//! update happen as one step with respect to every other such command.
//!
//! A write holds the zones it touches from its check until its write
//! pointer is recorded; RESET WRITE POINTER and FINISH ZONE hold their
//! zones while they change the file; FORMAT UNIT holds every zone. Zones
//! are taken all at once or not at all (so no order can deadlock), and a
//! command waiting for every zone keeps new ones from starting, so a busy
//! disk cannot starve it. Everything runs on the device's worker thread.

use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;
use std::ops::RangeInclusive;

use tokio::sync::Notify;

/// The zones held by commands in flight.
#[derive(Debug, Default)]
pub struct ZoneLocks {
    held: RefCell<BTreeSet<u32>>,
    /// A command holds every zone.
    everything: Cell<bool>,
    /// Commands waiting to hold every zone.
    waiting_for_all: Cell<u32>,
    released: Notify,
}

/// Zones held until dropped.
#[derive(Debug)]
pub struct ZoneGuard<'a> {
    locks: &'a ZoneLocks,
    zones: Option<RangeInclusive<u32>>,
}

impl ZoneLocks {
    /// Holds `zones`, waiting while any of them is held.
    pub async fn lock(&self, zones: RangeInclusive<u32>) -> ZoneGuard<'_> {
        loop {
            // Registered before the check: a release between the check and
            // the await still wakes this one.
            let released = self.released.notified();
            if self.waiting_for_all.get() == 0 && !self.everything.get() {
                let mut held = self.held.borrow_mut();
                if held.range(zones.clone()).next().is_none() {
                    held.extend(zones.clone());
                    return ZoneGuard {
                        locks: self,
                        zones: Some(zones),
                    };
                }
            }
            released.await;
        }
    }

    /// Whether `zones` could be held right now (nothing holds any of them,
    /// and no command holds or waits for every zone): a synchronous
    /// caller that runs to completion without yielding may then go ahead
    /// without holding them.
    pub fn is_free(&self, zones: &RangeInclusive<u32>) -> bool {
        self.waiting_for_all.get() == 0
            && !self.everything.get()
            && self.held.borrow().range(zones.clone()).next().is_none()
    }

    /// Holds every zone, waiting for the commands holding some to finish;
    /// new ones wait for this one.
    pub async fn lock_all(&self) -> ZoneGuard<'_> {
        self.waiting_for_all.set(self.waiting_for_all.get() + 1);
        loop {
            let released = self.released.notified();
            if self.held.borrow().is_empty() && !self.everything.get() {
                self.everything.set(true);
                self.waiting_for_all.set(self.waiting_for_all.get() - 1);
                return ZoneGuard {
                    locks: self,
                    zones: None,
                };
            }
            released.await;
        }
    }
}

impl Drop for ZoneGuard<'_> {
    fn drop(&mut self) {
        match self.zones.take() {
            Some(zones) => {
                let mut held = self.locks.held.borrow_mut();
                for z in zones {
                    held.remove(&z);
                }
            }
            None => self.locks.everything.set(false),
        }
        self.locks.released.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};

    use super::*;

    fn poll<F: Future>(f: std::pin::Pin<&mut F>) -> Poll<F::Output> {
        f.poll(&mut Context::from_waker(Waker::noop()))
    }

    #[test]
    fn zones_are_held_apart() {
        let locks = ZoneLocks::default();
        let a = pin!(locks.lock(1..=2));
        let Poll::Ready(a) = poll(a) else {
            panic!("free zones")
        };
        let mut b = pin!(locks.lock(2..=2));
        assert!(poll(b.as_mut()).is_pending());
        assert!(!locks.is_free(&(2..=3)));
        assert!(locks.is_free(&(3..=3)));
        let c = pin!(locks.lock(3..=3));
        assert!(poll(c).is_ready(), "other zones are free");
        drop(a);
        assert!(poll(b.as_mut()).is_ready());
    }

    #[test]
    fn everything_waits_and_blocks_new_zones() {
        let locks = ZoneLocks::default();
        let Poll::Ready(one) = poll(pin!(locks.lock(4..=4))) else {
            panic!()
        };
        let mut all = pin!(locks.lock_all());
        assert!(poll(all.as_mut()).is_pending());
        assert!(!locks.is_free(&(9..=9)), "a waiting FORMAT keeps zones");
        // A newcomer waits behind the waiting FORMAT.
        let mut later = pin!(locks.lock(9..=9));
        assert!(poll(later.as_mut()).is_pending());
        drop(one);
        let Poll::Ready(all) = poll(all.as_mut()) else {
            panic!("all zones free")
        };
        assert!(poll(later.as_mut()).is_pending());
        drop(all);
        assert!(poll(later.as_mut()).is_ready());
    }
}
