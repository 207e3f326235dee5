//! One device's task: wait for the doorbell, drain the ring, run commands
//! concurrently, write completions back in batches.
//!
//! The task owns the [`CommandRing`] (no locks) and runs the commands'
//! futures itself, in a [`CmdPool`]: it writes every completion that is
//! ready, publishes `cmd_tail` once and rings the doorbell once per batch.
//! Closing reads the ring a last time, waits for the commands in flight (for
//! at most [`CLOSE_GRACE`]; hung ones are then cancelled and left
//! unanswered), then closes the handler.
//!
//! Task management: with `attrib/tmr_notification` on, the kernel posts a
//! TMR entry naming the commands an initiator aborted (ABORT TASK, LUN
//! RESET, …); their tasks are cancelled and the commands answered TASK
//! ABORTED, with their buffers kept until nothing writes into them any more
//! (see [`crate::inflight`]). So a hung backend plus an initiator abort never
//! wedges the ring.
//!
//! Time-outs: a command running longer than the device's time-out
//! (`tcmur_cmd_time_out`, else `attrib/cmd_time_out`) is logged with its CDB,
//! counted, and reported to the handler ([`BlockHandler::cmd_timed_out`](crate::BlockHandler::cmd_timed_out)),
//! once, while it still runs.

use std::future::Future;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tcmu_core::{CmdEntry, CommandRing, Completion, Doorbell, Entry, Mapping, TmrNotice};
use tcmu_scsi::{Sense, Status};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, error, info, warn};

use crate::cmd_pool::CmdPool;
use crate::control::Control;
use crate::copy;
use crate::ctx::DeviceCtx;
use crate::dispatch;
use crate::error::{DeviceError, HandlerError};
use crate::handler::ReconfigRequest;
use crate::inflight::{AbortOutcome, CdbCopy, Commands, Released};
use crate::stats::{self, Direction};

/// How long closing waits for commands in flight before it cancels them.
pub const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// How often aborted commands are checked for released buffers.
const ABORT_POLL: Duration = Duration::from_millis(10);

/// Longest wait between two looks for commands past their time-out.
const TIMEOUT_SCAN: Duration = Duration::from_secs(1);

/// Shortest wait between two such looks.
const TIMEOUT_SCAN_MIN: Duration = Duration::from_millis(100);

/// Where a device's ring memory comes from.
#[derive(Debug)]
pub enum RingSource {
    /// A kernel device: `/dev/uioN` and the size of its map 0.
    Uio {
        /// Path of the UIO device node.
        path: PathBuf,
        /// Size of map 0 in bytes.
        map_size: usize,
    },
    /// Memory mapped elsewhere (the simulator, or an embedding program).
    Mapped {
        /// The ring memory.
        map: Arc<Mapping>,
        /// Its doorbell.
        doorbell: Doorbell,
    },
}

impl RingSource {
    /// Opens the doorbell and maps the ring memory.
    pub(crate) fn open(self) -> Result<(CommandRing, Doorbell), DeviceError> {
        let (map, doorbell) = match self {
            RingSource::Uio { path, map_size } => {
                let opened = Doorbell::open_uio(&path).and_then(|doorbell| {
                    let map = Mapping::map_shared(doorbell.fd(), map_size)?;
                    Ok((Arc::new(map), doorbell))
                });
                opened.map_err(|source| DeviceError::Ring { path, source })?
            }
            RingSource::Mapped { map, doorbell } => (map, doorbell),
        };
        let ring = CommandRing::new(map).map_err(DeviceError::BadRing)?;
        Ok((ring, doorbell))
    }
}

/// Runs a device until it is closed.
pub(crate) async fn serve(
    ctx: Rc<DeviceCtx>,
    mut ring: CommandRing,
    doorbell: Doorbell,
    mut control: mpsc::UnboundedReceiver<Control>,
) {
    let bell = match tcmu_core::reactor::register_readable(doorbell) {
        Ok(b) => b,
        Err(e) => {
            error!(device = %ctx.name, "cannot watch the device's doorbell: {e}");
            ctx.peers.remove(ctx.id);
            ctx.handler.block().close().await;
            return;
        }
    };
    let mut pool = CmdPool::new();
    let mut st = DeviceState {
        inflight: 0,
        commands: Commands::default(),
        broken: false,
        keep_buffers: ring.can_keep_buffers() && ctx.configfs.is_some(),
        dirty: false,
    };
    let mut closing: Vec<oneshot::Sender<()>> = Vec::new();
    let mut close_deadline: Option<tokio::time::Instant> = None;
    let mut wake = true; // drain once at start: entries may already wait
                         // One timer for everything periodic: aborted commands waiting for their
                         // buffers, the time-out scan, the end of the close grace period.
    let timer = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(timer);
    let mut timer_at: Option<tokio::time::Instant> = None;
    let scan_every = ctx
        .cmd_time_out
        .map(|t| (t / 4).clamp(TIMEOUT_SCAN_MIN, TIMEOUT_SCAN));

    loop {
        if wake && !st.broken && closing.is_empty() {
            wake = false;
            drain(&ctx, &mut ring, &mut st, &mut pool, run_command);
        }
        if st.commands.has_waiting() {
            // The kernel frees a kept buffer only once it has seen the
            // completion that kept it: a TMR read in this drain may have
            // just written one.
            if st.dirty {
                publish(&ctx, &mut ring, bell.get_ref(), &mut st);
            }
            release_waiting(&ctx, &mut ring, &mut st);
        }
        if st.dirty {
            publish(&ctx, &mut ring, bell.get_ref(), &mut st);
        }
        if !closing.is_empty() {
            if st.inflight == 0 && !st.commands.has_waiting() {
                break;
            }
            let now = tokio::time::Instant::now();
            let deadline = *close_deadline.get_or_insert(now + CLOSE_GRACE);
            if now >= deadline {
                let n = st.commands.abandon_all(|slot| pool.cancel(slot));
                warn!(
                    device = %ctx.name,
                    "{n} command(s) still running {}s after close began: cancelled, left unanswered",
                    CLOSE_GRACE.as_secs()
                );
                // Give up on buffers still inside I/O: the device is going
                // away.
                break;
            }
        }
        // Idle with polling on: watch the ring a little before sleeping.
        // Never with commands in flight, which need the worker to run.
        if st.inflight == 0
            && closing.is_empty()
            && !st.broken
            && crate::poll::spin_until(|| ring.has_pending().unwrap_or(true))
        {
            wake = true;
            continue;
        }
        arm_timer(
            &st,
            scan_every,
            close_deadline,
            timer.as_mut(),
            &mut timer_at,
        );
        // Control first: a doorbell that is always ready (a device the
        // kernel already tore down) must not starve Close.
        tokio::select! {
            biased;
            msg = control.recv() => match msg {
                Some(Control::Close(reply)) => {
                    // Take what the kernel queued up to now (a device
                    // blocked for a hand-over gets nothing newer), so
                    // nothing already on the ring is left for a successor
                    // to bounce with BUSY.
                    if closing.is_empty() && !st.broken {
                        drain(&ctx, &mut ring, &mut st, &mut pool, run_command);
                    }
                    closing.push(reply);
                }
                None => {
                    // Every handle is gone: nobody can close us later.
                    let (tx, _rx) = oneshot::channel();
                    closing.push(tx);
                }
                Some(Control::Reconfig(req, reply)) => {
                    let ctx = ctx.clone();
                    tokio::task::spawn_local(async move {
                        let _ = reply.send(reconfig(&ctx, req).await);
                    });
                }
                Some(Control::Copy(io)) => {
                    let ctx = ctx.clone();
                    tokio::task::spawn_local(async move { copy::serve(&ctx, io).await });
                }
            },
            () = std::future::poll_fn(|cx| pool.poll_woken(cx)), if pool.running() > 0 => {
                // Every command of this batch ran to its end inside the
                // poll above, and all their completions go out in the one
                // publish that follows: one clock reading is when they all
                // finished (as in `drain`, one reading per batch).
                let done_at = Instant::now();
                while let Some((cmd_id, done)) = pool.take_finished() {
                    finish(&ctx, &mut ring, &mut st, cmd_id, done, done_at);
                }
            }
            () = &mut timer, if timer_at.is_some() => {
                timer_at = None;
                if let Some(limit) = ctx.cmd_time_out {
                    report_overdue(&ctx, &mut st, limit);
                }
            }
            ready = bell.readable(), if closing.is_empty() && !st.broken => {
                match ready {
                    Ok(mut guard) => {
                        // One read consumes every pending wake-up (UIO and
                        // eventfd both hand over the whole count), so a
                        // second read would only say EAGAIN. Clearing
                        // readiness cannot lose a wake-up that arrives
                        // meanwhile: tokio keeps any newer edge.
                        match guard.get_inner().ack() {
                            Ok(_) => {
                                guard.clear_ready();
                                wake = true;
                            }
                            Err(e) => {
                                // EIO: the kernel unregistered the UIO
                                // device (removed without waiting for us).
                                // Nothing more will come.
                                warn!(device = %ctx.name, "doorbell failed, no longer reading the ring: {e}");
                                st.broken = true;
                            }
                        }
                    }
                    Err(e) => {
                        error!(device = %ctx.name, "doorbell poll failed: {e}");
                        st.broken = true;
                    }
                }
            }
        }
    }
    ctx.peers.remove(ctx.id);
    ctx.handler.block().close().await;
    info!(device = %ctx.name, "device closed");
    for reply in closing {
        let _ = reply.send(());
    }
}

/// The device task's bookkeeping.
struct DeviceState {
    /// Entries read and not yet completed on the ring.
    inflight: usize,
    /// Commands in flight by id.
    commands: Commands,
    /// The ring or doorbell failed: nothing more is read.
    broken: bool,
    /// Aborted commands are completed at once with `KEEP_BUF` (the kernel
    /// offers it and `action/free_kept_buf` is at hand).
    keep_buffers: bool,
    /// Completions written but not yet published.
    dirty: bool,
}

/// Arms the device task's timer for what needs it: aborted commands
/// waiting for their buffers (soon), the time-out scan while commands run,
/// the end of the close grace period. The clock is read only when the timer
/// is (re-)armed, not on every wake-up.
fn arm_timer(
    st: &DeviceState,
    scan_every: Option<Duration>,
    close_deadline: Option<tokio::time::Instant>,
    timer: std::pin::Pin<&mut tokio::time::Sleep>,
    timer_at: &mut Option<tokio::time::Instant>,
) {
    let scan = scan_every.filter(|_| st.inflight > 0);
    let aborted = st.commands.has_waiting();
    // Armed: it fires soon enough (and, when nothing needs it any more,
    // once more for nothing) — unless aborted commands need a closer look.
    // Leaving it armed keeps the clock read and timer reset off the path of
    // every command at queue depth 1.
    if timer_at.is_some() && !aborted {
        return;
    }
    if scan.is_none() && !aborted && close_deadline.is_none() {
        return;
    }
    let now = tokio::time::Instant::now();
    let mut at = close_deadline;
    let mut earliest = |t: tokio::time::Instant| at = Some(at.map_or(t, |a| a.min(t)));
    if aborted {
        earliest(now + ABORT_POLL);
    }
    if let Some(every) = scan {
        earliest(now + every);
    }
    if let (Some(want), true) = (at, timer_at.is_none_or(|cur| at < Some(cur))) {
        timer.reset(want);
        *timer_at = Some(want);
    }
}

/// Makes the completions written so far visible and rings the doorbell.
fn publish(ctx: &DeviceCtx, ring: &mut CommandRing, bell: &Doorbell, st: &mut DeviceState) {
    st.dirty = false;
    if let Err(e) = ring.publish() {
        error!(device = %ctx.name, "cannot publish completions: {e}");
    }
    if let Err(e) = bell.kick() {
        error!(device = %ctx.name, "cannot ring the doorbell: {e}");
    }
}

/// What a command's future hands back to the device task.
pub(crate) struct Done {
    completion: Completion,
    /// For the statistics: which way it moved data, and how many bytes.
    dir: Direction,
    bytes: u64,
    /// Its buffer list, when the command is done with it (for
    /// [`CommandRing::recycle`]).
    spare: Option<Vec<tcmu_core::DataBuf>>,
}

/// The future of one command: runs it and hands back its completion.
async fn run_command(ctx: Rc<DeviceCtx>, cmd: CmdEntry) -> Done {
    let dir = Direction::of_cdb(&cmd.cdb);
    let len = tcmu_core::buf::total_len(&cmd.data) as u64;
    let mut spare = None;
    let completion = dispatch::run(&ctx, cmd, &mut spare).await;
    let bytes = stats::moved_bytes(dir, len, completion.read_len);
    Done {
        completion,
        dir,
        bytes,
        spare,
    }
}

/// Reads every new ring entry: commands start in `pool` (their futures
/// made by `launch`, first polled when the device task next polls the
/// pool), TMRs are answered, bad entries completed at once.
fn drain<F: Future<Output = Done>>(
    ctx: &Rc<DeviceCtx>,
    ring: &mut CommandRing,
    st: &mut DeviceState,
    pool: &mut CmdPool<u16, F>,
    launch: impl Fn(Rc<DeviceCtx>, CmdEntry) -> F,
) {
    // Latency starts when a command is read off the ring, not when its
    // future is first polled (that waits for the rest of the ring to be
    // read). Entries are read in a burst with no I/O in between, so the
    // burst shares one clock reading, taken at its first command: where
    // `clock_gettime` is a system call rather than a vDSO read (VMs whose
    // clock source is the HPET or the ACPI PM timer, like the test VM at
    // 1.5–4 µs a reading) that is one call per burst, not one per command.
    let mut read_at: Option<Instant> = None;
    loop {
        match ring.next_entry() {
            Ok(Some(Entry::Cmd(cmd))) => {
                if st.commands.is_taken(cmd.cmd_id) {
                    error!(
                        device = %ctx.name,
                        "command id {} reused while still in flight: ring no longer trusted, device stopped",
                        cmd.cmd_id
                    );
                    st.broken = true;
                    return;
                }
                let start = *read_at.get_or_insert_with(Instant::now);
                st.inflight += 1;
                let cmd_id = cmd.cmd_id;
                let cdb = CdbCopy::of(&cmd.cdb);
                let slot = pool.start(cmd_id, launch(ctx.clone(), cmd));
                st.commands.start(cmd_id, slot, start, cdb);
            }
            Ok(Some(Entry::Tmr(t))) => tmr(ctx, ring, st, pool, &t),
            Ok(Some(Entry::Unknown { cmd_id, op })) => {
                warn!(device = %ctx.name, "ring entry with unknown opcode {op}");
                st.inflight += 1;
                complete(ctx, ring, st, cmd_id, &Completion::unknown_op());
            }
            Ok(Some(Entry::Invalid { cmd_id, why })) => {
                error!(device = %ctx.name, "command {cmd_id} failed without being read: {why}");
                st.inflight += 1;
                let sense = Sense::internal_target_failure().to_fixed();
                complete(ctx, ring, st, cmd_id, &Completion::check_condition(&sense));
            }
            Ok(Some(other)) => {
                error!(device = %ctx.name, "unexpected ring entry {other:?}; device stopped");
                st.broken = true;
                return;
            }
            Ok(None) => return,
            Err(e) => {
                error!(device = %ctx.name, "command ring is corrupt, device stopped: {e}");
                st.broken = true;
                return;
            }
        }
    }
}

/// The name of a TMR type, for logs.
fn tmr_name(t: u8) -> &'static str {
    use tcmu_core::layout::tmr;
    match t {
        tmr::ABORT_TASK => "ABORT TASK",
        tmr::ABORT_TASK_SET => "ABORT TASK SET",
        tmr::CLEAR_ACA => "CLEAR ACA",
        tmr::CLEAR_TASK_SET => "CLEAR TASK SET",
        tmr::LUN_RESET => "LUN RESET",
        tmr::TARGET_WARM_RESET => "TARGET WARM RESET",
        tmr::TARGET_COLD_RESET => "TARGET COLD RESET",
        tmr::LUN_RESET_PRO => "LUN RESET (PRO)",
        _ => "unknown TMR",
    }
}

/// Answers a TMR entry: every named command still running is cancelled and
/// answered TASK ABORTED (see the module documentation).
fn tmr<F: Future>(
    ctx: &DeviceCtx,
    ring: &mut CommandRing,
    st: &mut DeviceState,
    pool: &mut CmdPool<u16, F>,
    t: &TmrNotice,
) {
    let name = tmr_name(t.tmr_type);
    if t.cmd_ids.is_empty() {
        info!(device = %ctx.name, "{name}: no command of ours affected");
        return;
    }
    for &id in &t.cmd_ids {
        let Some(aborted) = st.commands.abort(id, st.keep_buffers) else {
            debug!(device = %ctx.name, "{name}: command {id} already completed");
            continue;
        };
        if let Some(slot) = aborted.pool_slot {
            pool.cancel(slot);
        }
        ctx.stats.record_abort();
        info!(
            device = %ctx.name,
            "{name}: command {id} (CDB {}) aborted",
            crate::dispatch::CdbHex(aborted.cdb.bytes())
        );
        if aborted.outcome == AbortOutcome::CompleteKeeping {
            complete_aborted(ctx, ring, st, id, true);
        }
    }
}

/// Writes the TASK ABORTED completion of an aborted command.
fn complete_aborted(
    ctx: &DeviceCtx,
    ring: &mut CommandRing,
    st: &mut DeviceState,
    cmd_id: u16,
    keep: bool,
) {
    let mut c = Completion::status(Status::TaskAborted.code());
    if keep {
        c = c.keeping_buffer();
    }
    complete(ctx, ring, st, cmd_id, &c);
}

/// Completes (or frees the kept buffers of) the aborted and held commands
/// whose buffers are released.
fn release_waiting(ctx: &DeviceCtx, ring: &mut CommandRing, st: &mut DeviceState) {
    let mut released: Vec<(u16, Released)> = Vec::new();
    st.commands
        .release_waiting(|id| ring.buffers_in_use(id), |id, r| released.push((id, r)));
    let mut freed: Vec<u16> = Vec::new();
    for (id, r) in released {
        match r {
            Released::Aborted => complete_aborted(ctx, ring, st, id, false),
            Released::Held(c) => {
                info!(device = %ctx.name, "command {id}: its buffers are released, completed");
                complete(ctx, ring, st, id, &c);
            }
            Released::Kept => freed.push(id),
        }
    }
    for id in freed {
        let Some(dir) = &ctx.configfs else { continue };
        match dir.free_kept_buf(id) {
            Ok(()) => info!(device = %ctx.name, "kept buffer of aborted command {id} freed"),
            Err(e) => warn!(device = %ctx.name, "cannot free the kept buffer of command {id}: {e}"),
        }
    }
}

/// Logs, counts and reports to the handler every command newly past the
/// device's time-out.
fn report_overdue(ctx: &DeviceCtx, st: &mut DeviceState, limit: Duration) {
    for o in st.commands.overdue(limit, Instant::now()) {
        ctx.stats.record_timeout();
        warn!(
            device = %ctx.name,
            "command {} (CDB {}) still running after {:.1}s, past the device's time-out of {}s",
            o.cmd_id,
            crate::dispatch::CdbHex(o.cdb.bytes()),
            o.running_for.as_secs_f64(),
            limit.as_secs()
        );
        ctx.handler.block().cmd_timed_out(o.cdb.bytes());
    }
}

/// Writes a completion to the ring, published with the rest of its batch.
fn complete(
    ctx: &DeviceCtx,
    ring: &mut CommandRing,
    st: &mut DeviceState,
    cmd_id: u16,
    c: &Completion,
) {
    st.inflight = st.inflight.saturating_sub(1);
    st.dirty = true;
    if let Err(e) = ring.complete(cmd_id, c) {
        error!(device = %ctx.name, "cannot complete command {cmd_id}: {e}");
    }
}

/// Completes a command whose future finished (`done`; `None` if it
/// panicked) and records it: its latency ends here. The late completion
/// of an aborted command is dropped: the abort answered it.
fn finish(
    ctx: &DeviceCtx,
    ring: &mut CommandRing,
    st: &mut DeviceState,
    cmd_id: u16,
    done: Option<Done>,
    done_at: Instant,
) {
    let Some(f) = st.commands.finish(cmd_id) else {
        return;
    };
    let done = done.unwrap_or_else(|| {
        error!(device = %ctx.name, "command {cmd_id} panicked");
        Done {
            completion: Completion::check_condition(&Sense::internal_target_failure().to_fixed()),
            dir: Direction::Other,
            bytes: 0,
            spare: None,
        }
    });
    if let Some(list) = done.spare {
        ring.recycle(list);
    }
    if ring.buffers_in_use(cmd_id) {
        // The handler returned while something it started (an io_uring
        // operation, blocking work) still holds the command's buffers:
        // handing them back to the kernel now would let that I/O write
        // into another command's memory.
        warn!(
            device = %ctx.name,
            "command {cmd_id} finished with its buffers still in use; its completion waits for them"
        );
        st.commands.hold(cmd_id, done.completion.clone());
    } else {
        complete(ctx, ring, st, cmd_id, &done.completion);
    }
    let latency = done_at.saturating_duration_since(f.start);
    ctx.stats
        .record(done.dir, done.bytes, done.completion.status, latency);
    if !f.reported_overdue && ctx.cmd_time_out.is_some_and(|limit| latency > limit) {
        ctx.stats.record_timeout();
        warn!(
            device = %ctx.name,
            "command {cmd_id} completed after {:.1}s, past the device's time-out",
            latency.as_secs_f64()
        );
    }
}

/// The kernel's per-command timeout of a device (`attrib/cmd_time_out`), or
/// `None` when it is 0 (no timeout) or cannot be read.
pub(crate) fn cmd_time_out(dir: Option<&tcmu_core::configfs::DeviceDir>) -> Option<Duration> {
    match dir?.cmd_time_out() {
        Ok(0) => None,
        Ok(secs) => Some(Duration::from_secs(u64::from(secs))),
        Err(e) => {
            debug!("cannot read cmd_time_out: {e}");
            None
        }
    }
}

async fn reconfig(ctx: &DeviceCtx, req: ReconfigRequest) -> Result<(), HandlerError> {
    ctx.handler.block().reconfig(&req).await?;
    match &req {
        ReconfigRequest::Size(bytes) => {
            let mut p = ctx.params.borrow_mut();
            p.num_blocks = bytes / u64::from(p.block_size.max(1));
            let mut s = ctx.state.borrow_mut();
            s.unit_attention = Some(tcmu_scsi::Sense::unit_attention_capacity_changed());
        }
        ReconfigRequest::WriteCache(on) => ctx.state.borrow_mut().write_cache = *on,
        _ => {}
    }
    info!(device = %ctx.name, "reconfigured: {req:?}");
    Ok(())
}
