//! LBA range locks that make COMPARE AND WRITE (and FORMAT UNIT) atomic
//! with respect to every other command of the device.
//!
//! Reads and writes take a *shared* hold on their range; they never wait
//! for each other, only for an overlapping *exclusive* hold. An exclusive
//! hold is registered at once (so no later overlapping command slips in
//! ahead of it) and waits until the overlapping holds taken before it are
//! released. All commands of a device run on one thread, so the state is a
//! `RefCell`; nothing here is `Send`.

use std::cell::{Cell, RefCell};

use tokio::sync::Notify;

#[derive(Debug)]
struct Hold {
    id: u64,
    start: u64,
    end: u64,
    exclusive: bool,
}

impl Hold {
    fn overlaps(&self, start: u64, end: u64) -> bool {
        self.start < end && start < self.end
    }
}

/// The range locks of one device.
#[derive(Debug, Default)]
pub(crate) struct RangeLocks {
    holds: RefCell<Vec<Hold>>,
    next_id: Cell<u64>,
    exclusive: Cell<usize>,
    waiting: Cell<usize>,
    released: Notify,
}

/// A held range; released on drop.
#[derive(Debug)]
pub(crate) struct RangeGuard<'a> {
    locks: &'a RangeLocks,
    id: u64,
}

impl Drop for RangeGuard<'_> {
    fn drop(&mut self) {
        let mut holds = self.locks.holds.borrow_mut();
        if let Some(i) = holds.iter().position(|h| h.id == self.id) {
            let h = holds.swap_remove(i);
            if h.exclusive {
                self.locks.exclusive.set(self.locks.exclusive.get() - 1);
            }
        }
        drop(holds);
        if self.locks.waiting.get() > 0 {
            self.locks.released.notify_waiters();
        }
    }
}

impl RangeLocks {
    fn id(&self) -> u64 {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        id
    }

    /// Waits until `blocked()` is false.
    async fn wait_while(&self, blocked: impl Fn() -> bool) {
        loop {
            // Created before the check, so a release in between still wakes us.
            let released = self.released.notified();
            if !blocked() {
                return;
            }
            self.waiting.set(self.waiting.get() + 1);
            released.await;
            self.waiting.set(self.waiting.get() - 1);
        }
    }

    /// A shared hold on `blocks` blocks at `lba` (reads, writes, unmaps).
    pub(crate) async fn shared(&self, lba: u64, blocks: u64) -> RangeGuard<'_> {
        let end = lba.saturating_add(blocks.max(1));
        if self.exclusive.get() > 0 {
            self.wait_while(|| {
                self.holds
                    .borrow()
                    .iter()
                    .any(|h| h.exclusive && h.overlaps(lba, end))
            })
            .await;
        }
        let id = self.id();
        self.holds.borrow_mut().push(Hold {
            id,
            start: lba,
            end,
            exclusive: false,
        });
        RangeGuard { locks: self, id }
    }

    /// An exclusive hold on `blocks` blocks at `lba`: returns once no
    /// earlier overlapping hold remains.
    pub(crate) async fn exclusive(&self, lba: u64, blocks: u64) -> RangeGuard<'_> {
        let end = lba.saturating_add(blocks.max(1));
        let id = self.id();
        self.holds.borrow_mut().push(Hold {
            id,
            start: lba,
            end,
            exclusive: true,
        });
        self.exclusive.set(self.exclusive.get() + 1);
        // The guard exists from here on, so a cancelled wait releases it.
        let guard = RangeGuard { locks: self, id };
        self.wait_while(|| {
            self.holds
                .borrow()
                .iter()
                .any(|h| h.id < id && h.overlaps(lba, end))
        })
        .await;
        guard
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;

    fn run<F: std::future::Future>(f: F) -> F::Output {
        tokio_uring::start(f)
    }

    #[test]
    fn exclusive_waits_for_earlier_overlapping_holds_only() {
        run(async {
            let locks = Rc::new(RangeLocks::default());
            let order = Rc::new(RefCell::new(Vec::new()));
            let w = locks.shared(10, 5).await;
            let far = locks.shared(100, 5).await;
            let (l, o) = (locks.clone(), order.clone());
            let caw = tokio::task::spawn_local(async move {
                let _g = l.exclusive(12, 1).await;
                o.borrow_mut().push("caw");
            });
            tokio::task::yield_now().await;
            assert!(
                order.borrow().is_empty(),
                "exclusive must wait for the write"
            );
            // A later overlapping read waits behind the exclusive hold; a
            // later one elsewhere does not.
            let (l, o) = (locks.clone(), order.clone());
            let read = tokio::task::spawn_local(async move {
                let _g = l.shared(12, 1).await;
                o.borrow_mut().push("read");
            });
            let _other = locks.shared(50, 1).await;
            drop(far);
            tokio::task::yield_now().await;
            assert!(order.borrow().is_empty());
            drop(w);
            caw.await.unwrap();
            read.await.unwrap();
            assert_eq!(*order.borrow(), vec!["caw", "read"]);
        });
    }

    #[test]
    fn exclusive_holds_queue_in_order() {
        run(async {
            let locks = Rc::new(RangeLocks::default());
            let first = locks.exclusive(0, 8).await;
            let l = locks.clone();
            let second = tokio::task::spawn_local(async move {
                let _g = l.exclusive(4, 8).await;
            });
            tokio::task::yield_now().await;
            assert!(!second.is_finished());
            drop(first);
            second.await.unwrap();
            assert_eq!(locks.exclusive.get(), 0);
            assert!(locks.holds.borrow().is_empty());
        });
    }
}
