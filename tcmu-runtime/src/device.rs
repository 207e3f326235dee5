//! One device's task: wait for the doorbell, drain the ring, run commands
//! concurrently, write completions back in batches.
//!
//! The task owns the [`CommandRing`] (no locks): command futures send their
//! completion over a channel, and the task writes every completion that is
//! ready, publishes `cmd_tail` once and rings the doorbell once per batch.
//! Closing stops reading the ring, waits for the commands in flight, then
//! closes the handler.

use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tcmu_core::{CommandRing, Completion, Doorbell, Entry, Mapping};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, error, info, warn};

use crate::copy::{self, CopyIo};
use crate::dispatch::{self, DeviceCtx};
use crate::handler::ReconfigRequest;
use crate::stats::{self, Direction};

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
    pub(crate) fn open(self) -> Result<(CommandRing, Doorbell), String> {
        let (map, doorbell) = match self {
            RingSource::Uio { path, map_size } => {
                let doorbell = Doorbell::open_uio(&path)
                    .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
                let map = Mapping::map_shared(doorbell.fd(), map_size)
                    .map_err(|e| format!("cannot map {}: {e}", path.display()))?;
                (Arc::new(map), doorbell)
            }
            RingSource::Mapped { map, doorbell } => (map, doorbell),
        };
        let ring = CommandRing::new(map).map_err(|e| format!("bad command ring: {e}"))?;
        Ok((ring, doorbell))
    }
}

/// Requests to a running device task.
#[derive(Debug)]
pub(crate) enum Control {
    /// Finish in-flight commands, close the handler, then answer.
    Close(oneshot::Sender<()>),
    /// Apply a configuration change and answer with the result.
    Reconfig(ReconfigRequest, oneshot::Sender<Result<(), String>>),
    /// Read or write for another device's EXTENDED COPY.
    Copy(CopyIo),
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
            ctx.handler.close().await;
            return;
        }
    };
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Done>();
    let mut inflight = 0usize;
    let mut closing: Vec<oneshot::Sender<()>> = Vec::new();
    let mut broken = false;
    let mut wake = true; // drain once at start: entries may already wait

    loop {
        if wake && !broken && closing.is_empty() {
            wake = false;
            drain(&ctx, &mut ring, &done_tx, &mut inflight, &mut broken);
        }
        if !closing.is_empty() && inflight == 0 {
            break;
        }
        // Idle with polling on: watch the ring a little before sleeping.
        // Never with commands in flight, which need the worker to run.
        if inflight == 0
            && closing.is_empty()
            && !broken
            && crate::poll::spin_until(|| ring.has_pending().unwrap_or(true))
        {
            wake = true;
            continue;
        }
        // Control first: a doorbell that is always ready (a device the
        // kernel already tore down) must not starve Close.
        tokio::select! {
            biased;
            msg = control.recv() => match msg {
                Some(Control::Close(reply)) => closing.push(reply),
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
            Some(done) = done_rx.recv() => {
                let mut n = 1;
                finish(&ctx, &mut ring, done);
                while let Ok(done) = done_rx.try_recv() {
                    finish(&ctx, &mut ring, done);
                    n += 1;
                }
                inflight -= n;
                if let Err(e) = ring.publish() {
                    error!(device = %ctx.name, "cannot publish completions: {e}");
                }
                if let Err(e) = bell.get_ref().kick() {
                    error!(device = %ctx.name, "cannot ring the doorbell: {e}");
                }
            }
            ready = bell.readable(), if closing.is_empty() && !broken => {
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
                                broken = true;
                            }
                        }
                    }
                    Err(e) => {
                        error!(device = %ctx.name, "doorbell poll failed: {e}");
                        broken = true;
                    }
                }
            }
        }
    }
    ctx.peers.remove(ctx.id);
    ctx.handler.close().await;
    info!(device = %ctx.name, "device closed");
    for reply in closing {
        let _ = reply.send(());
    }
}

/// A finished command on its way back to the device task.
struct Done {
    cmd_id: u16,
    completion: Completion,
    /// What the statistics record once the completion is on the ring;
    /// `None` for entries that are not SCSI commands.
    sample: Option<Sample>,
}

/// A command's contribution to the device's statistics.
struct Sample {
    dir: Direction,
    bytes: u64,
    /// When the command was read off the ring.
    start: Instant,
}

fn drain(
    ctx: &Rc<DeviceCtx>,
    ring: &mut CommandRing,
    done: &mpsc::UnboundedSender<Done>,
    inflight: &mut usize,
    broken: &mut bool,
) {
    loop {
        match ring.next_entry() {
            Ok(Some(Entry::Cmd(cmd))) => {
                // Latency starts here, not when the spawned task first
                // runs: that waits for the rest of the ring to be drained.
                let start = Instant::now();
                *inflight += 1;
                let ctx = ctx.clone();
                let done = done.clone();
                tokio::task::spawn_local(async move {
                    let cmd_id = cmd.cmd_id;
                    let dir = Direction::of_cdb(&cmd.cdb);
                    let len = tcmu_core::buf::total_len(&cmd.data) as u64;
                    let completion = dispatch::run(&ctx, cmd).await;
                    let bytes = stats::moved_bytes(dir, len, completion.read_len);
                    let _ = done.send(Done {
                        cmd_id,
                        completion,
                        sample: Some(Sample { dir, bytes, start }),
                    });
                });
            }
            Ok(Some(Entry::Tmr(t))) => {
                debug!(device = %ctx.name, "TMR {} for {:?}", t.tmr_type, t.cmd_ids);
            }
            Ok(Some(Entry::Unknown { cmd_id, op })) => {
                warn!(device = %ctx.name, "ring entry with unknown opcode {op}");
                *inflight += 1;
                let _ = done.send(Done {
                    cmd_id,
                    completion: Completion::unknown_op(),
                    sample: None,
                });
            }
            Ok(None) => return,
            Err(e) => {
                error!(device = %ctx.name, "command ring is corrupt, device stopped: {e}");
                *broken = true;
                return;
            }
        }
    }
}

/// Writes a completion to the ring (published with the rest of its batch)
/// and records the command: its latency ends here.
fn finish(ctx: &DeviceCtx, ring: &mut CommandRing, done: Done) {
    let Done {
        cmd_id,
        completion: c,
        sample,
    } = done;
    if let Err(e) = ring.complete(cmd_id, &c) {
        error!(device = %ctx.name, "cannot complete command {cmd_id}: {e}");
    }
    if let Some(s) = sample {
        let latency = s.start.elapsed();
        ctx.stats.record(s.dir, s.bytes, c.status, latency);
        if ctx.cmd_time_out.is_some_and(|limit| latency > limit) {
            ctx.stats.record_timeout();
            warn!(
                device = %ctx.name,
                "command {cmd_id} completed after {:.1}s, past the device's cmd_time_out",
                latency.as_secs_f64()
            );
        }
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

async fn reconfig(ctx: &DeviceCtx, req: ReconfigRequest) -> Result<(), String> {
    ctx.handler.reconfig(&req).await?;
    match &req {
        ReconfigRequest::Size(bytes) => {
            let mut p = ctx.params.borrow_mut();
            p.num_blocks = bytes / u64::from(p.block_size.max(1));
            let mut s = ctx.state.borrow_mut();
            s.unit_attention = Some(tcmu_scsi::Sense::unit_attention_capacity_changed());
        }
        ReconfigRequest::WriteCache(on) => ctx.state.borrow_mut().write_cache = *on,
        ReconfigRequest::Config(_) => {}
    }
    info!(device = %ctx.name, "reconfigured: {req:?}");
    Ok(())
}
