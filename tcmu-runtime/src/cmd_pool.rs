//! The futures of a device's commands, polled by the device task itself.
//!
//! Each command runs as a future in a slot of this pool rather than as a
//! task of its own: the device task polls the slots that were woken and
//! writes the completions of those that finished straight to the ring. A
//! slot (its boxed future space and its waker) is reused from command to
//! command, so a command that starts and finishes allocates nothing here,
//! and nothing crosses a channel on its way back.
//!
//! Why not a spawned task per command, or `FuturesUnordered`: both
//! allocate a task per command (the profile of `cargo xtask microbench`
//! put `spawn_local` at a fifth of the worker's time), and
//! `FuturesUnordered` cannot cancel one future by key, which TMR aborts
//! need.
//!
//! A future that panics fails only itself: the pool drops it and reports
//! its key with no output.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};

use futures::task::AtomicWaker;

/// Which slots were woken, shared with the slots' wakers (which may be
/// called from any thread), and the device task's waker.
#[derive(Default)]
struct Woken {
    slots: Mutex<Vec<usize>>,
    task: AtomicWaker,
}

/// The waker of one slot: queues the slot and wakes the device task.
struct SlotWaker {
    index: usize,
    /// Already in `woken.slots` (a slot is queued once however often it is
    /// woken).
    queued: AtomicBool,
    woken: Arc<Woken>,
}

impl Wake for SlotWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.queued.swap(true, Ordering::AcqRel) {
            self.woken
                .slots
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(self.index);
            self.woken.task.wake();
        }
    }
}

struct Slot<K, F> {
    /// The running future; `None` while the slot is free. Boxed once, when
    /// the slot is made, and overwritten in place afterwards.
    fut: Pin<Box<Option<F>>>,
    key: K,
    waker: Arc<SlotWaker>,
    /// The waker as a [`Waker`] (made once: cloning is a reference count).
    as_waker: Waker,
}

/// Futures of one type, run by whoever polls the pool (see the module
/// documentation). `K` tells their results apart (a command id).
pub(crate) struct CmdPool<K, F: Future> {
    slots: Vec<Slot<K, F>>,
    free: Vec<usize>,
    woken: Arc<Woken>,
    /// Woken slots taken from `woken` for the current poll (kept to reuse
    /// its allocation).
    batch: Vec<usize>,
    /// Finished futures not yet taken with [`CmdPool::take_finished`]:
    /// their key and output, `None` if the future panicked.
    finished: Vec<(K, Option<F::Output>)>,
    running: usize,
}

impl<K: Copy, F: Future> CmdPool<K, F> {
    /// An empty pool.
    pub(crate) fn new() -> Self {
        Self {
            slots: Vec::new(),
            free: Vec::new(),
            woken: Arc::default(),
            batch: Vec::new(),
            finished: Vec::new(),
            running: 0,
        }
    }

    /// How many futures are running.
    pub(crate) fn running(&self) -> usize {
        self.running
    }

    /// Starts `fut` under `key`: it is first polled by the next
    /// [`CmdPool::poll_woken`]. Returns its slot, for [`CmdPool::cancel`].
    pub(crate) fn start(&mut self, key: K, fut: F) -> usize {
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                let i = self.slots.len();
                let waker = Arc::new(SlotWaker {
                    index: i,
                    queued: AtomicBool::new(false),
                    woken: self.woken.clone(),
                });
                self.slots.push(Slot {
                    fut: Box::pin(None),
                    key,
                    as_waker: Waker::from(waker.clone()),
                    waker,
                });
                i
            }
        };
        let slot = &mut self.slots[index];
        slot.key = key;
        slot.fut.set(Some(fut));
        self.running += 1;
        slot.as_waker.wake_by_ref();
        index
    }

    /// Drops the future in `slot` (a cancelled command) and frees the slot.
    /// Its key is not reported.
    pub(crate) fn cancel(&mut self, slot: usize) {
        if let Some(s) = self.slots.get_mut(slot) {
            if s.fut.is_some() {
                s.fut.set(None);
                self.running -= 1;
                self.free.push(slot);
            }
        }
    }

    /// Polls every woken future once. Ready when at least one finished
    /// (take them with [`CmdPool::take_finished`]); otherwise the caller is
    /// woken when one of them is woken.
    pub(crate) fn poll_woken(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        // Registered first: a wake-up during the polls below is not lost.
        self.woken.task.register(cx.waker());
        std::mem::swap(
            &mut self.batch,
            &mut self
                .woken
                .slots
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        // Slots woken again while being polled are polled on the next
        // call, so a future that always wakes itself cannot starve the
        // device task's other work.
        for n in 0..self.batch.len() {
            let index = self.batch[n];
            let Some(slot) = self.slots.get_mut(index) else {
                continue;
            };
            slot.waker.queued.store(false, Ordering::Release);
            let Some(fut) = slot.fut.as_mut().as_pin_mut() else {
                continue; // cancelled or finished since it was woken
            };
            let mut fcx = Context::from_waker(&slot.as_waker);
            let out = match std::panic::catch_unwind(AssertUnwindSafe(|| fut.poll(&mut fcx))) {
                Ok(Poll::Pending) => continue,
                Ok(Poll::Ready(out)) => Some(out),
                Err(_) => None,
            };
            slot.fut.set(None);
            self.finished.push((slot.key, out));
            self.running -= 1;
            self.free.push(index);
        }
        self.batch.clear();
        if self.finished.is_empty() {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    }

    /// The next finished future's key and output (`None`: it panicked).
    pub(crate) fn take_finished(&mut self) -> Option<(K, Option<F::Output>)> {
        self.finished.pop()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use std::cell::Cell;
    use std::rc::Rc;

    /// A future that is pending until its flag is set, and counts polls.
    struct Gate {
        open: Rc<Cell<bool>>,
        polls: Rc<Cell<u32>>,
        waker: LastWaker,
    }

    impl Future for Gate {
        type Output = u32;
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<u32> {
            self.polls.set(self.polls.get() + 1);
            if self.open.get() {
                Poll::Ready(self.polls.get())
            } else {
                self.waker.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        }
    }

    /// The waker a [`Gate`] was last polled with.
    type LastWaker = Rc<Cell<Option<Waker>>>;

    fn gate() -> (Gate, Rc<Cell<bool>>, LastWaker) {
        let open = Rc::new(Cell::new(false));
        let waker = Rc::new(Cell::new(None));
        let g = Gate {
            open: open.clone(),
            polls: Rc::default(),
            waker: waker.clone(),
        };
        (g, open, waker)
    }

    fn poll<K: Copy, F: Future>(pool: &mut CmdPool<K, F>) -> Poll<()> {
        let waker = futures::task::noop_waker();
        pool.poll_woken(&mut Context::from_waker(&waker))
    }

    #[test]
    fn futures_run_when_woken_and_slots_are_reused() {
        let mut pool = CmdPool::new();
        let (a, open_a, wake_a) = gate();
        let (b, open_b, wake_b) = gate();
        let sa = pool.start(1u16, a);
        let sb = pool.start(2u16, b);
        assert_ne!(sa, sb);
        assert_eq!(pool.running(), 2);
        assert!(poll(&mut pool).is_pending(), "both wait");
        // Not woken: not polled, even when ready.
        open_a.set(true);
        assert!(poll(&mut pool).is_pending());
        wake_a.take().unwrap().wake();
        assert!(poll(&mut pool).is_ready());
        assert_eq!(pool.take_finished(), Some((1, Some(2))), "polled twice");
        assert_eq!(pool.take_finished(), None);
        assert_eq!(pool.running(), 1);
        // The freed slot takes the next future.
        let (c, open_c, _) = gate();
        open_c.set(true);
        assert_eq!(pool.start(3, c), sa);
        assert!(poll(&mut pool).is_ready());
        assert_eq!(pool.take_finished(), Some((3, Some(1))));
        // A stale wake of the reused slot polls nothing.
        open_b.set(true);
        let w = wake_b.take().unwrap();
        w.wake_by_ref();
        w.wake();
        assert!(poll(&mut pool).is_ready());
        assert_eq!(pool.take_finished(), Some((2, Some(2))));
        assert_eq!(pool.running(), 0);
    }

    #[test]
    fn cancelled_futures_are_dropped_and_not_reported() {
        let mut pool = CmdPool::new();
        let (a, _open, wake) = gate();
        let slot = pool.start(7u16, a);
        assert!(poll(&mut pool).is_pending());
        pool.cancel(slot);
        pool.cancel(slot); // twice is harmless
        assert_eq!(pool.running(), 0);
        wake.take().unwrap().wake();
        assert!(poll(&mut pool).is_pending());
        assert_eq!(pool.take_finished(), None);
    }

    #[test]
    fn a_panicking_future_fails_alone() {
        type Fut = Pin<Box<dyn Future<Output = u8>>>;
        let mut pool: CmdPool<u16, Fut> = CmdPool::new();
        pool.start(1, Box::pin(async { panic!("bad command") }));
        pool.start(2, Box::pin(async { 5 }));
        assert!(poll(&mut pool).is_ready());
        let mut got = vec![pool.take_finished().unwrap(), pool.take_finished().unwrap()];
        got.sort_by_key(|(k, _)| *k);
        assert_eq!(got, vec![(1, None), (2, Some(5))]);
        assert_eq!(pool.running(), 0);
    }

    #[test]
    fn a_wake_from_another_thread_reaches_the_pool() {
        let mut pool = CmdPool::new();
        let (a, open, wake) = gate();
        pool.start(9u16, a);
        assert!(poll(&mut pool).is_pending());
        open.set(true);
        let w = wake.take().unwrap();
        std::thread::spawn(move || w.wake()).join().unwrap();
        assert!(poll(&mut pool).is_ready());
        assert_eq!(pool.take_finished(), Some((9, Some(2))));
    }
}
