//! A device's commands in flight, by kernel command id: what the device
//! task needs to abort them (TMR), to notice the ones running past their
//! time-out, and to give back the data buffers of aborted ones.
//!
//! The kernel hands out the lowest free command ids, so the table is a
//! vector indexed by id that grows to the deepest queue seen and then
//! stays: starting and finishing a command allocates nothing.
//!
//! The life of a slot:
//! - `Running` from when the command is read off the ring until its future
//!   hands back a completion ([`Commands::finish`]) or a TMR aborts it;
//! - an aborted command's future is dropped (the caller cancels its slot in
//!   the [`CmdPool`](crate::cmd_pool::CmdPool)). An
//!   io_uring operation it started may still be writing into its buffers,
//!   so the buffers stay the command's until the ring says the last of them
//!   is gone ([`CommandRing::buffers_in_use`](tcmu_core::CommandRing::buffers_in_use)):
//!   - where the kernel can keep buffers (`KEEP_BUF`) and `action/free_kept_buf`
//!     is at hand, the command is completed at once with TASK ABORTED and its
//!     buffer freed later (`Kept`);
//!   - otherwise its TASK ABORTED completion waits until the buffers are
//!     gone (`Aborting`).
//! - a command whose future finished while something it started still
//!   holds its buffers (a handler that returned before its I/O did) is
//!   `Held`: its completion waits, like an aborted one's, until the
//!   buffers are gone, so the kernel never gets pages back that I/O may
//!   still write. An abort of a held command replaces its completion with
//!   TASK ABORTED.

use std::time::{Duration, Instant};

use tcmu_core::Completion;

/// The first bytes of a CDB, kept for log lines about a command.
#[derive(Clone, Copy)]
pub(crate) struct CdbCopy {
    bytes: [u8; 16],
    len: u8,
}

impl CdbCopy {
    /// Copies up to 16 bytes of `cdb`.
    pub(crate) fn of(cdb: &[u8]) -> Self {
        let mut bytes = [0u8; 16];
        let n = cdb.len().min(bytes.len());
        bytes[..n].copy_from_slice(&cdb[..n]);
        Self {
            bytes,
            len: n as u8,
        }
    }

    /// The copied bytes.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// A command whose future is running.
struct Running {
    /// Its slot in the device's command pool.
    pool_slot: usize,
    start: Instant,
    cdb: CdbCopy,
    /// Already reported as past its time-out.
    timed_out: bool,
}

enum Slot {
    Free,
    Running(Running),
    /// Aborted; its completion waits for its buffers to be released.
    Aborting,
    /// Aborted and completed with `KEEP_BUF`; the kernel holds its buffer
    /// until it is freed.
    Kept,
    /// Finished, its completion waiting for its buffers to be released.
    Held(Completion),
}

/// What to do with an aborted command (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AbortOutcome {
    /// Complete it now with `KEEP_BUF`; free the buffer later.
    CompleteKeeping,
    /// Complete it once its buffers are released.
    Deferred,
}

/// What [`Commands::finish`] knows of a command that completed.
pub(crate) struct Finished {
    /// When it was read off the ring.
    pub start: Instant,
    /// Already reported as past its time-out.
    pub reported_overdue: bool,
}

/// What [`Commands::abort`] knows of an aborted command.
pub(crate) struct Aborted {
    pub outcome: AbortOutcome,
    pub cdb: CdbCopy,
    /// Its slot in the device's command pool, to cancel (none for a held
    /// command, whose future has finished).
    pub pool_slot: Option<usize>,
}

/// What a command whose buffers were released needs.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Released {
    /// An aborted command's TASK ABORTED completion.
    Aborted,
    /// A held command's own completion.
    Held(Completion),
    /// An aborted command completed with `KEEP_BUF`: free its buffer.
    Kept,
}

/// A command that ran past its time-out, for the report.
pub(crate) struct Overdue {
    pub cmd_id: u16,
    pub cdb: CdbCopy,
    pub running_for: Duration,
}

/// The table of a device's commands in flight.
#[derive(Default)]
pub(crate) struct Commands {
    slots: Vec<Slot>,
    /// Slots in `Aborting`, `Kept` or `Held` state.
    waiting: usize,
}

impl Commands {
    /// Whether `cmd_id` is taken (running, or aborted and not yet
    /// released).
    pub(crate) fn is_taken(&self, cmd_id: u16) -> bool {
        !matches!(self.slots.get(usize::from(cmd_id)), None | Some(Slot::Free))
    }

    /// Records a command whose future was just started in `pool_slot`.
    pub(crate) fn start(&mut self, cmd_id: u16, pool_slot: usize, start: Instant, cdb: CdbCopy) {
        let i = usize::from(cmd_id);
        if self.slots.len() <= i {
            self.slots.resize_with(i + 1, || Slot::Free);
        }
        self.slots[i] = Slot::Running(Running {
            pool_slot,
            start,
            cdb,
            timed_out: false,
        });
    }

    /// The future of `cmd_id` handed back its completion. Returns `None`
    /// when that completion is not to be written (the command is not
    /// running), else when it started and whether it was already reported
    /// as overdue.
    pub(crate) fn finish(&mut self, cmd_id: u16) -> Option<Finished> {
        let slot = self.slots.get_mut(usize::from(cmd_id))?;
        match std::mem::replace(slot, Slot::Free) {
            Slot::Running(r) => Some(Finished {
                start: r.start,
                reported_overdue: r.timed_out,
            }),
            // An aborted command's late completion: the abort answers it.
            other => {
                *slot = other;
                None
            }
        }
    }

    /// Keeps the completion of `cmd_id`, whose future just finished
    /// ([`finish`](Self::finish)), until its buffers are released.
    pub(crate) fn hold(&mut self, cmd_id: u16, completion: Completion) {
        let i = usize::from(cmd_id);
        if self.slots.len() <= i {
            self.slots.resize_with(i + 1, || Slot::Free);
        }
        self.slots[i] = Slot::Held(completion);
        self.waiting += 1;
    }

    /// Aborts `cmd_id` if it is running or held: returns how to complete
    /// it, its CDB for the log and the pool slot whose future the caller
    /// cancels.
    pub(crate) fn abort(&mut self, cmd_id: u16, keep: bool) -> Option<Aborted> {
        let slot = self.slots.get_mut(usize::from(cmd_id))?;
        let (cdb, pool_slot) = match slot {
            Slot::Running(r) => (r.cdb, Some(r.pool_slot)),
            Slot::Held(_) => (CdbCopy::of(&[]), None),
            _ => return None,
        };
        let (next, outcome) = if keep {
            (Slot::Kept, AbortOutcome::CompleteKeeping)
        } else {
            (Slot::Aborting, AbortOutcome::Deferred)
        };
        if matches!(std::mem::replace(slot, next), Slot::Running(_)) {
            self.waiting += 1;
        }
        Some(Aborted {
            outcome,
            cdb,
            pool_slot,
        })
    }

    /// Gives up every running command (the device is closing): calls
    /// `cancel` with each one's pool slot. Their commands stay unanswered,
    /// for the kernel's time-out or the next daemon's ring reset. Returns
    /// how many there were.
    pub(crate) fn abandon_all(&mut self, mut cancel: impl FnMut(usize)) -> usize {
        let mut n = 0;
        for slot in &mut self.slots {
            if let Slot::Running(r) = slot {
                cancel(r.pool_slot);
                *slot = Slot::Free;
                n += 1;
            }
        }
        n
    }

    /// Whether aborted or held commands wait for their buffers.
    pub(crate) fn has_waiting(&self) -> bool {
        self.waiting > 0
    }

    /// Releases the aborted and held commands whose buffers are gone
    /// (`in_use(id)` false), calling `release` with what each needs.
    pub(crate) fn release_waiting(
        &mut self,
        in_use: impl Fn(u16) -> bool,
        mut release: impl FnMut(u16, Released),
    ) {
        if self.waiting == 0 {
            return;
        }
        for (i, slot) in self.slots.iter_mut().enumerate() {
            let Ok(id) = u16::try_from(i) else { break };
            if !matches!(slot, Slot::Aborting | Slot::Kept | Slot::Held(_)) || in_use(id) {
                continue;
            }
            let released = match std::mem::replace(slot, Slot::Free) {
                Slot::Aborting => Released::Aborted,
                Slot::Held(c) => Released::Held(c),
                _ => Released::Kept,
            };
            release(id, released);
            self.waiting -= 1;
        }
    }

    /// Marks and returns the running commands older than `limit` that were
    /// not reported yet.
    pub(crate) fn overdue(&mut self, limit: Duration, now: Instant) -> Vec<Overdue> {
        let mut out = Vec::new();
        for (i, slot) in self.slots.iter_mut().enumerate() {
            let Slot::Running(r) = slot else { continue };
            let running_for = now.saturating_duration_since(r.start);
            if r.timed_out || running_for <= limit {
                continue;
            }
            r.timed_out = true;
            if let Ok(cmd_id) = u16::try_from(i) {
                out.push(Overdue {
                    cmd_id,
                    cdb: r.cdb,
                    running_for,
                });
            }
        }
        out
    }
}
