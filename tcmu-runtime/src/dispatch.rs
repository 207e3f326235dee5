//! Running one command: decode, answer from the generic layer or call the
//! handler, and turn the result into a ring [`Completion`].
//!
//! Nothing here panics on initiator input, and every handler failure
//! becomes a SCSI answer: I/O errors are MEDIUM ERROR, an unreachable
//! backend NOT READY, a panicking handler fails only its own command.

use std::panic::AssertUnwindSafe;

use futures::FutureExt;
use tcmu_core::buf::{self, DataBuf};
use tcmu_core::{reply, CmdEntry, Completion};
use tcmu_scsi::lba_status::{self, Extent, Provisioning};
use tcmu_scsi::opcode::{INQUIRY, REQUEST_SENSE};
use tcmu_scsi::{Command, Outcome, Response, Sense, Status};
use tracing::{debug, error, info, trace, warn};

use crate::alua;
use crate::capability::Capability;
use crate::command::{CmdOutcome, CmdReply, ScsiCmd};
use crate::copy;
use crate::ctx::DeviceCtx;
use crate::error::{BlockError, CompareError, Report};
use crate::fallback;

/// Largest data-out the generic layer copies for parsing (UNMAP lists,
/// MODE SELECT pages, WRITE SAME blocks).
const MAX_DATA_OUT_COPY: usize = 1 << 20;

/// A CDB as space-separated hex bytes, formatted lazily for logs.
pub(crate) struct CdbHex<'a>(pub(crate) &'a [u8]);

impl std::fmt::Display for CdbHex<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// Which way a failed operation moved data, for the MEDIUM ERROR flavour.
#[derive(Clone, Copy)]
enum Dir {
    Read,
    Write,
}

fn medium_error(dir: Dir) -> Sense {
    match dir {
        Dir::Read => Sense::medium_error_read(),
        Dir::Write => Sense::medium_error_write(),
    }
}

fn sense_for(err: &BlockError, dir: Dir) -> Sense {
    match err {
        BlockError::Io(_) => medium_error(dir),
        BlockError::IoAt { lba, .. } => medium_error(dir).with_information(*lba),
        BlockError::NotReady(_) => Sense::not_ready(),
        // Answered with status BUSY by `io_result`; NOT READY where only
        // sense data can carry an answer.
        BlockError::Busy(_) => Sense::not_ready(),
        BlockError::Unsupported => Sense::invalid_command_opcode(),
        BlockError::Sense(s) => *s,
    }
}

fn check(sense: &Sense) -> Completion {
    Completion::check_condition(&sense.to_fixed())
}

/// The fixed-format sense bytes a CHECK CONDITION carries (INTERNAL
/// TARGET FAILURE when none was given); `None` for other statuses.
fn sense_bytes(
    status: Status,
    sense: Option<Sense>,
) -> Option<[u8; tcmu_scsi::sense::FIXED_SENSE_LEN]> {
    (status == Status::CheckCondition).then(|| {
        sense
            .unwrap_or_else(Sense::internal_target_failure)
            .to_fixed()
    })
}

/// Completion for an emulated answer, by the completion rules of
/// [`tcmu_core::reply`]: data-in copied in with the rest of the buffers
/// zeroed, a short answer reporting its length.
fn respond(resp: Response, data: &mut [DataBuf]) -> Completion {
    let sense = sense_bytes(resp.status, resp.sense);
    let sense = sense.as_ref().map_or(&[][..], |s| &s[..]);
    reply::with_data(data, resp.status.code(), sense, &resp.data_in)
}

/// Completion for a command hook's own answer. The hook owned the
/// buffers: [`CmdReply`]'s constructors applied the completion rules to
/// them already.
fn reply_completion(reply: CmdReply) -> Completion {
    match sense_bytes(reply.status, reply.sense) {
        Some(sense) => Completion::check_condition(&sense),
        None => {
            let c = Completion::status(reply.status.code());
            match reply.read_len {
                Some(n) => c.with_read_len(n),
                None => c,
            }
        }
    }
}

/// Runs `fut`, turning a panic into an error so one bad command cannot take
/// its device down.
async fn guarded<T, E: From<BlockError>>(
    ctx: &DeviceCtx,
    what: &str,
    fut: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, E> {
    match AssertUnwindSafe(fut).catch_unwind().await {
        Ok(r) => r,
        Err(_) => {
            error!(device = %ctx.name, "handler panicked during {what}");
            Err(BlockError::Sense(Sense::internal_target_failure()).into())
        }
    }
}

/// Runs a handler's synchronous fast path (`read_now`, `write_now`),
/// turning a panic into an error as [`guarded`] does.
fn now(
    ctx: &DeviceCtx,
    what: &str,
    f: impl FnOnce() -> Option<Result<(), BlockError>>,
) -> Option<Result<(), BlockError>> {
    std::panic::catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| {
        error!(device = %ctx.name, "handler panicked during {what}");
        Some(Err(BlockError::Sense(Sense::internal_target_failure())))
    })
}

/// Completion for a compare (COMPARE AND WRITE, VERIFY): MISCOMPARE with
/// the offset of the first differing byte, or the backend's error.
fn compare_result(
    ctx: &DeviceCtx,
    what: &str,
    dir: Dir,
    r: Result<(), CompareError>,
) -> Completion {
    match r {
        Ok(()) => Completion::good(),
        Err(CompareError::Miscompare(at)) => check(&Sense::miscompare(at)),
        Err(CompareError::Block(e)) => io_result(ctx, what, dir, Err(e)),
    }
}

/// Flushes after a write when FUA asks for it or the write cache is off.
async fn make_durable(
    ctx: &DeviceCtx,
    fua: bool,
    write_cache: bool,
    r: Result<(), BlockError>,
) -> Result<(), BlockError> {
    if r.is_ok() && (fua || !write_cache) {
        guarded(ctx, "flush", ctx.handler.block().flush()).await
    } else {
        r
    }
}

fn io_result(ctx: &DeviceCtx, what: &str, dir: Dir, r: Result<(), BlockError>) -> Completion {
    match r {
        Ok(()) => Completion::good(),
        Err(BlockError::Busy(why)) => {
            debug!(device = %ctx.name, "{what}: busy: {why}");
            Completion::status(Status::Busy.code())
        }
        Err(e) => {
            if !matches!(e, BlockError::Sense(_) | BlockError::Unsupported) {
                warn!(device = %ctx.name, "{what} failed: {}", Report(&e));
            }
            check(&sense_for(&e, dir))
        }
    }
}

/// WRITE SAME (and FORMAT UNIT's zeroing): deallocate when allowed and the
/// blocks then read as the (all-zero) pattern, else the handler's native
/// WRITE SAME, else plain writes. A declared capability that turns out
/// unsupported is withdrawn and the next way tried.
async fn write_same(
    ctx: &DeviceCtx,
    off: u64,
    len: u64,
    unmap: bool,
    block: &[u8],
) -> Result<(), BlockError> {
    let h = &ctx.handler;
    if let Some((u, params)) = h.unmap() {
        if unmap && params.reads_zeroes && block.iter().all(|&b| b == 0) {
            match guarded(ctx, "unmap", u.unmap(off, len)).await {
                Err(BlockError::Unsupported) => {
                    ctx.withdraw(Capability::Unmap);
                }
                r => return r,
            }
        }
    }
    if let Some(native) = h.write_same() {
        match guarded(ctx, "write same", native.write_same(off, len, block)).await {
            Err(BlockError::Unsupported) => {
                ctx.withdraw(Capability::WriteSame);
            }
            r => return r,
        }
    }
    guarded(
        ctx,
        "write same",
        fallback::write_same(h.block(), off, len, block),
    )
    .await
}

/// COMPARE AND WRITE by the handler's native operation, or else (also once
/// that turned out unsupported) by a read, a compare and a write under the
/// caller's exclusive range lock.
async fn compare_and_write(
    ctx: &DeviceCtx,
    off: u64,
    compare: &[u8],
    write: Vec<DataBuf>,
) -> Result<(), CompareError> {
    let h = &ctx.handler;
    let write = match h.compare_and_write() {
        Some(native) => {
            // The buffers go to the handler; a handler that gives up with
            // `Unsupported` has not written them, and the fallback writes
            // from its own copy of the data.
            let data = buf::gather(&write, usize::MAX);
            match guarded(
                ctx,
                "compare and write",
                native.compare_and_write(off, compare, write),
            )
            .await
            {
                Err(CompareError::Block(BlockError::Unsupported)) => {
                    ctx.withdraw(Capability::CompareAndWrite);
                    fallback::Data::Bytes(data)
                }
                r => return r,
            }
        }
        None => fallback::Data::Bufs(write),
    };
    guarded(
        ctx,
        "compare and write",
        fallback::compare_and_write(h.block(), off, compare, write),
    )
    .await
}

/// Asks the command hook, if the handler declared one: its answer, or the
/// command back for the generic layer.
async fn hook(ctx: &DeviceCtx, cmd_id: u16, cmd: ScsiCmd) -> Result<ScsiCmd, Completion> {
    let Some(hook) = ctx.handler.hook() else {
        return Ok(cmd);
    };
    match AssertUnwindSafe(hook.handle_cmd(cmd)).catch_unwind().await {
        Ok(CmdOutcome::Done(reply)) => Err(reply_completion(reply)),
        Ok(CmdOutcome::NotHandled(cmd)) if cmd.is_whole() => Ok(cmd),
        Ok(CmdOutcome::NotHandled(_)) => {
            error!(device = %ctx.name, cmd_id, "handle_cmd passed a command on without its data buffers");
            Err(check(&Sense::internal_target_failure()))
        }
        Err(_) => {
            error!(device = %ctx.name, cmd_id, "handler panicked in handle_cmd");
            Err(check(&Sense::internal_target_failure()))
        }
    }
}

/// Executes one command and returns its completion.
///
/// The rare, heavy branches (WRITE SAME, COMPARE AND WRITE, VERIFY, FORMAT
/// UNIT, EXTENDED COPY) await boxed futures: inline, they made this
/// future 1,784 bytes instead of 1,040, and every READ and WRITE paid for
/// copying that into its task and back (about 7% of the worker's
/// instructions per command in `cargo xtask microbench`).
///
/// A READ or WRITE that the handler served synchronously leaves its
/// emptied buffer list in `spare`, for the ring to reuse
/// ([`CommandRing::recycle`](tcmu_core::CommandRing::recycle)).
pub(crate) async fn run(
    ctx: &DeviceCtx,
    cmd: CmdEntry,
    spare: &mut Option<Vec<DataBuf>>,
) -> Completion {
    let CmdEntry {
        cmd_id, cdb, data, ..
    } = cmd;
    // Log level 5 (DEBUG SCSI CMD): every CDB. The hex is built only when
    // TRACE is enabled.
    trace!(device = %ctx.name, cmd_id, "CDB {}", CdbHex(&cdb));

    // A pending unit attention (capacity changed, reset) goes to the first
    // command other than INQUIRY and REQUEST SENSE, as in tcmu-runner,
    // before a handler's own handle_cmd could answer it.
    ctx.note_alua_state();
    if !matches!(cdb.first(), Some(&(INQUIRY | REQUEST_SENSE))) {
        let pending = ctx.state.borrow_mut().unit_attention.take();
        if let Some(ua) = pending {
            return check(&ua);
        }
    }
    let hooked = ctx.handler.hook().is_some_and(|h| h.wants(&cdb));
    let (cdb, mut data) = if hooked {
        match hook(ctx, cmd_id, ScsiCmd::new(cdb, data)).await {
            Ok(cmd) => cmd.into_parts(),
            Err(answered) => return answered,
        }
    } else {
        (cdb, data)
    };

    let command = match tcmu_scsi::decode(&cdb) {
        Ok(c) => c,
        Err(sense) => {
            debug!(device = %ctx.name, cmd_id, opcode = cdb.first().copied().unwrap_or(0), "bad CDB");
            return check(&sense);
        }
    };
    if let Command::Unsupported(op) = command {
        debug!(device = %ctx.name, cmd_id, "unsupported opcode {op:#04x}");
    }
    if matches!(
        command,
        Command::Inquiry { .. }
            | Command::ReportTargetPortGroups { .. }
            | Command::SetTargetPortGroups { .. }
            | Command::ExtendedCopy { .. }
            | Command::ReportSupportedOpcodes { .. }
    ) {
        ctx.refresh_identity();
    }
    let data_out = if command.wants_data_out() {
        buf::gather(&data, MAX_DATA_OUT_COPY)
    } else {
        Vec::new()
    };
    let (outcome, bs, write_cache) = {
        let params = ctx.params.borrow();
        let mut state = ctx.state.borrow_mut();
        let outcome = tcmu_scsi::execute(&command, &params, &mut state, &data_out);
        (outcome, u64::from(params.block_size), state.write_cache)
    };
    let h = ctx.handler.block();
    match outcome {
        Outcome::Done(resp) => respond(resp, &mut data),
        Outcome::Read { lba, blocks, .. } => {
            let _range = ctx.locks.shared(lba, u64::from(blocks)).await;
            let len = (u64::from(blocks) * bs) as usize;
            // An initiator that expects more than the CDB asks for gets
            // zeroes and a residual, never an earlier command's bytes.
            let longer = buf::total_len(&data) > len;
            if longer {
                buf::zero_beyond(&mut data, len);
            }
            buf::truncate_list(&mut data, len);
            let mut bufs: Vec<DataBuf> = data.into_iter().map(DataBuf::into_read_target).collect();
            let r = match now(ctx, "read", || h.read_now(lba * bs, &mut bufs)) {
                Some(r) => {
                    *spare = Some(bufs);
                    r
                }
                None => guarded(ctx, "read", h.read(lba * bs, bufs)).await,
            };
            let c = io_result(ctx, "read", Dir::Read, r);
            if longer && c.status == 0 {
                c.with_read_len(len as u32)
            } else {
                c
            }
        }
        Outcome::Write { lba, blocks, fua } => {
            let len = u64::from(blocks) * bs;
            if buf::total_len(&data) as u64 != len {
                return check(&Sense::invalid_field_in_command_iu());
            }
            let _range = ctx.locks.shared(lba, u64::from(blocks)).await;
            let bufs: Vec<DataBuf> = data.into_iter().map(DataBuf::into_filled).collect();
            let r = match now(ctx, "write", || h.write_now(lba * bs, &bufs)) {
                Some(r) => {
                    *spare = Some(bufs);
                    r
                }
                None => guarded(ctx, "write", h.write(lba * bs, bufs)).await,
            };
            let r = make_durable(ctx, fua, write_cache, r).await;
            io_result(ctx, "write", Dir::Write, r)
        }
        Outcome::Flush => {
            let r = guarded(ctx, "flush", h.flush()).await;
            io_result(ctx, "flush", Dir::Write, r)
        }
        Outcome::Unmap(ranges) => {
            let Some((unmapper, _)) = ctx.handler.unmap() else {
                return check(&Sense::invalid_command_opcode());
            };
            let mut r = Ok(());
            for range in ranges {
                let _range = ctx.locks.shared(range.lba, u64::from(range.blocks)).await;
                r = guarded(
                    ctx,
                    "unmap",
                    unmapper.unmap(range.lba * bs, u64::from(range.blocks) * bs),
                )
                .await;
                if r.is_err() {
                    break;
                }
            }
            if matches!(r, Err(BlockError::Unsupported)) {
                // Answered INVALID COMMAND OPCODE, on which the kernel's
                // disk driver stops sending discards.
                ctx.withdraw(Capability::Unmap);
            }
            io_result(ctx, "unmap", Dir::Write, r)
        }
        Outcome::WriteSame {
            lba,
            blocks,
            unmap,
            block,
        } => {
            let _range = ctx.locks.shared(lba, u64::from(blocks)).await;
            let (off, len) = (lba * bs, u64::from(blocks) * bs);
            let r = Box::pin(write_same(ctx, off, len, unmap, &block)).await;
            let r = make_durable(ctx, false, write_cache, r).await;
            io_result(ctx, "write same", Dir::Write, r)
        }
        Outcome::CompareAndWrite { lba, blocks, fua } => {
            let len = (u64::from(blocks) * bs) as usize;
            if buf::total_len(&data) != 2 * len {
                return check(&Sense::invalid_field_in_command_iu());
            }
            let _range = ctx.locks.exclusive(lba, u64::from(blocks)).await;
            let write = buf::split_list(&mut data, len);
            let compare = buf::gather(&data, len);
            let write: Vec<DataBuf> = write.into_iter().map(DataBuf::into_filled).collect();
            let r = Box::pin(compare_and_write(ctx, lba * bs, &compare, write)).await;
            let r = match r {
                Ok(()) => make_durable(ctx, fua, write_cache, Ok(()))
                    .await
                    .map_err(CompareError::Block),
                e => e,
            };
            compare_result(ctx, "compare and write", Dir::Write, r)
        }
        Outcome::Verify { lba, blocks, same } => {
            let len = u64::from(blocks) * bs;
            let want_len = if same { bs } else { len };
            if buf::total_len(&data) as u64 != want_len {
                return check(&Sense::invalid_field_in_command_iu());
            }
            let _range = ctx.locks.shared(lba, u64::from(blocks)).await;
            let expected = buf::gather(&data, want_len as usize);
            let want = |at: u64, n: usize| -> Vec<u8> {
                if same {
                    expected
                        .iter()
                        .copied()
                        .cycle()
                        .skip((at % bs) as usize)
                        .take(n)
                        .collect()
                } else {
                    expected[at as usize..at as usize + n].to_vec()
                }
            };
            let r = Box::pin(guarded(
                ctx,
                "verify",
                fallback::verify(h, lba * bs, len, want),
            ))
            .await;
            compare_result(ctx, "verify", Dir::Read, r)
        }
        Outcome::Format => {
            let (blocks, size) = {
                let p = ctx.params.borrow();
                (p.num_blocks, p.num_blocks * bs)
            };
            let _range = ctx.locks.exclusive(0, blocks).await;
            let block = vec![0u8; bs as usize];
            let r = Box::pin(write_same(ctx, 0, size, true, &block)).await;
            let r = make_durable(ctx, true, write_cache, r).await;
            io_result(ctx, "format", Dir::Write, r)
        }
        Outcome::Copy(list) => match Box::pin(copy::run(ctx, &list)).await {
            Ok(()) => Completion::good(),
            Err(s) => check(&s),
        },
        Outcome::SetPortGroups(changes) => {
            let Some(dir) = &ctx.configfs else {
                return check(&Sense::set_target_port_groups_failed());
            };
            match alua::set_port_groups(dir, &changes) {
                Ok(()) => {
                    info!(device = %ctx.name, "SET TARGET PORT GROUPS: {changes:?}");
                    Completion::good()
                }
                Err((sense, why)) => {
                    warn!(device = %ctx.name, "SET TARGET PORT GROUPS failed: {why}");
                    check(&sense)
                }
            }
        }
        Outcome::LbaStatus { lba, alloc_len } => {
            let num_blocks = ctx.params.borrow().num_blocks;
            let left = num_blocks.saturating_sub(lba);
            let all_mapped = || {
                vec![Extent {
                    blocks: left,
                    status: Provisioning::Mapped,
                }]
            };
            let extents = match ctx.handler.lba_status() {
                Some(s) => {
                    // Enough for a full answer without scanning a huge
                    // device to its end.
                    let max = left.min(1 << 24) * bs;
                    match guarded(
                        ctx,
                        "get lba status",
                        s.lba_status(lba * bs, max, bs as u32),
                    )
                    .await
                    {
                        Ok(e) => e,
                        Err(BlockError::Unsupported) => {
                            ctx.withdraw(Capability::LbaStatus);
                            all_mapped()
                        }
                        Err(e) => return io_result(ctx, "get lba status", Dir::Read, Err(e)),
                    }
                }
                None => all_mapped(),
            };
            respond(
                Response::data(lba_status::response(lba, &extents, alloc_len)),
                &mut data,
            )
        }
    }
}
