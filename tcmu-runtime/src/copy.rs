//! EXTENDED COPY (LID1) between this daemon's devices.
//!
//! Segments name their source and destination by NAA designator. The one
//! that is the device running the command is read or written directly; any
//! other is found in [`Peers`](crate::peers::Peers), the registry of every device being served,
//! and asked over its control channel ([`CopyIo`]) to read or write on its
//! own worker thread (handlers are not `Send`). Like the kernel, a failed
//! read or write ends the copy with COPY TARGET DEVICE NOT REACHABLE and
//! leaves what was already copied in place.

use tcmu_scsi::xcopy::{self, CopyList, CopyOutcome, CopyStatus, NAA_LEN};
use tcmu_scsi::Sense;
use tokio::sync::oneshot;
use tracing::{debug, warn};

use crate::capability::Capability;
use crate::control::{Control, CopyIo};
use crate::ctx::DeviceCtx;
use crate::error::{BlockError, Report};
use crate::fallback;
use crate::peers::Peer;

/// One side of a segment.
enum Side {
    /// The device running the command.
    Local,
    /// Another device of this daemon.
    Remote(Peer),
}

fn unreachable() -> Sense {
    Sense::copy_target_device_not_reachable()
}

/// Reads `blocks` blocks at `lba` of the device `ctx` (range checked).
pub(crate) async fn local_read(ctx: &DeviceCtx, lba: u64, blocks: u32) -> Result<Vec<u8>, Sense> {
    let bs = u64::from(ctx.params.borrow().block_size);
    ctx.params.borrow().check_range(lba, u64::from(blocks))?;
    let _range = ctx.locks.shared(lba, u64::from(blocks)).await;
    fallback::read_vec(ctx.handler.block(), lba * bs, u64::from(blocks) * bs)
        .await
        .map_err(|e| {
            warn!(device = %ctx.name, "copy: read failed: {}", Report(&e));
            Sense::medium_error_read()
        })
}

/// Writes `data` at `lba` of the device `ctx` (range checked), durably if
/// its write cache is off.
pub(crate) async fn local_write(ctx: &DeviceCtx, lba: u64, data: &[u8]) -> Result<(), Sense> {
    let (bs, write_cache) = (
        u64::from(ctx.params.borrow().block_size),
        ctx.state.borrow().write_cache,
    );
    let blocks = data.len() as u64 / bs.max(1);
    ctx.params.borrow().check_range(lba, blocks)?;
    let _range = ctx.locks.shared(lba, blocks).await;
    let h = ctx.handler.block();
    let mut r = fallback::write_slice(h, lba * bs, data).await;
    if r.is_ok() && !write_cache {
        r = h.flush().await;
    }
    r.map_err(|e| {
        warn!(device = %ctx.name, "copy: write failed: {}", Report(&e));
        Sense::medium_error_write()
    })
}

/// Serves a peer's request on this device's thread.
pub(crate) async fn serve(ctx: &DeviceCtx, io: CopyIo) {
    match io {
        CopyIo::Read { lba, blocks, reply } => {
            let _ = reply.send(local_read(ctx, lba, blocks).await);
        }
        CopyIo::Write { lba, data, reply } => {
            let _ = reply.send(local_write(ctx, lba, &data).await);
        }
    }
}

impl Side {
    async fn read(&self, ctx: &DeviceCtx, lba: u64, blocks: u32) -> Result<Vec<u8>, Sense> {
        match self {
            Side::Local => local_read(ctx, lba, blocks).await,
            Side::Remote(p) => {
                let (reply, rx) = oneshot::channel();
                p.control
                    .send(Control::Copy(CopyIo::Read { lba, blocks, reply }))
                    .map_err(|_| unreachable())?;
                rx.await.map_err(|_| unreachable())?
            }
        }
    }

    async fn write(&self, ctx: &DeviceCtx, lba: u64, data: Vec<u8>) -> Result<(), Sense> {
        match self {
            Side::Local => local_write(ctx, lba, &data).await,
            Side::Remote(p) => {
                let (reply, rx) = oneshot::channel();
                p.control
                    .send(Control::Copy(CopyIo::Write { lba, data, reply }))
                    .map_err(|_| unreachable())?;
                rx.await.map_err(|_| unreachable())?
            }
        }
    }

    fn block_size(&self, ctx: &DeviceCtx) -> u32 {
        match self {
            Side::Local => ctx.params.borrow().block_size,
            Side::Remote(p) => p.block_size,
        }
    }
}

fn side(ctx: &DeviceCtx, naa: &[u8; NAA_LEN], local: &[u8; NAA_LEN]) -> Result<Side, Sense> {
    if naa == local {
        return Ok(Side::Local);
    }
    match ctx.peers.find(naa, ctx.id) {
        Some(p) => {
            debug!(device = %ctx.name, "copy: peer {}", p.name);
            Ok(Side::Remote(p))
        }
        None => {
            debug!(device = %ctx.name, "copy: no device has NAA {naa:02x?}");
            Err(unreachable())
        }
    }
}

/// Runs a checked copy list; records its status for RECEIVE COPY RESULTS.
pub(crate) async fn run(ctx: &DeviceCtx, list: &CopyList) -> Result<(), Sense> {
    let mut status = CopyStatus {
        list_id: list.list_id,
        outcome: CopyOutcome::Failed,
        segments_processed: 0,
        bytes_transferred: 0,
    };
    let r = copy_segments(ctx, list, &mut status).await;
    if r.is_ok() {
        status.outcome = CopyOutcome::Completed;
    }
    if list.keeps_status() {
        ctx.state.borrow_mut().last_copy = Some(status);
    }
    r
}

async fn copy_segments(
    ctx: &DeviceCtx,
    list: &CopyList,
    status: &mut CopyStatus,
) -> Result<(), Sense> {
    let local = ctx.params.borrow().naa();
    for seg in &list.segments {
        let (src_naa, dst_naa) = list.naas(seg).ok_or_else(unreachable)?;
        let (src, dst) = (side(ctx, src_naa, &local)?, side(ctx, dst_naa, &local)?);
        let bs = src.block_size(ctx);
        xcopy::check_block_sizes(bs, dst.block_size(ctx))?;
        debug!(device = %ctx.name, "copy: {} blocks {} -> {}", seg.blocks, seg.src_lba, seg.dst_lba);
        if let (Side::Local, Side::Local, Some(native)) = (&src, &dst, ctx.handler.copy_offload()) {
            let blocks = u64::from(seg.blocks);
            {
                let p = ctx.params.borrow();
                p.check_range(seg.src_lba, blocks)
                    .and_then(|()| p.check_range(seg.dst_lba, blocks))
                    .map_err(|_| unreachable())?;
            }
            let _src = ctx.locks.shared(seg.src_lba, blocks).await;
            let _dst = ctx.locks.shared(seg.dst_lba, blocks).await;
            let (b, len) = (u64::from(bs), seg.bytes(bs));
            match native.copy(seg.src_lba * b, seg.dst_lba * b, len).await {
                Ok(()) => {
                    status.bytes_transferred += len;
                    status.segments_processed += 1;
                    continue;
                }
                // Copied by reads and writes below, from now on.
                Err(BlockError::Unsupported) => {
                    ctx.withdraw(Capability::CopyOffload);
                }
                Err(e) => {
                    warn!(device = %ctx.name, "copy: offloaded copy failed: {}", Report(&e));
                    return Err(unreachable());
                }
            }
        }
        for chunk in seg.chunks(bs, fallback::CHUNK) {
            let data = src
                .read(ctx, chunk.src_lba, chunk.blocks)
                .await
                .map_err(|s| {
                    debug!(device = %ctx.name, "copy: source failed: {s:?}");
                    unreachable()
                })?;
            let n = data.len() as u64;
            dst.write(ctx, chunk.dst_lba, data).await.map_err(|s| {
                debug!(device = %ctx.name, "copy: destination failed: {s:?}");
                unreachable()
            })?;
            status.bytes_transferred += n;
        }
        status.segments_processed += 1;
    }
    Ok(())
}
