//! The handler API: what a storage backend implements.
//!
//! A backend implements [`BlockHandler`] (`read`, `write`, `flush`); the
//! generic layer answers every other SCSI command, falling back to reads and
//! writes where an operation has no backend support (WRITE SAME, COMPARE
//! AND WRITE, VERIFY, EXTENDED COPY, FORMAT UNIT). Optional abilities are
//! separate traits — [`Unmap`], [`WriteSame`], [`CompareAndWrite`],
//! [`CopyOffload`], [`LbaStatus`], and [`CommandHook`] to see every command
//! first — that a backend implements and *declares* when it opens a device,
//! with [`Handler::new`](crate::Handler::new)'s builder:
//!
//! ```ignore
//! Ok(Handler::new(my_backend).unmap().write_same().build())
//! ```
//!
//! Declaring needs the trait implementation (a compile error otherwise),
//! and what is declared is the one record both the VPD pages and dispatch
//! read, so they never disagree. An operation that answers
//! [`BlockError::Unsupported`] withdraws its capability from both at once
//! (see [`Capability`](crate::Capability)).
//!
//! A backend whose data is at hand can also serve reads and writes
//! synchronously ([`BlockHandler::read_now`], [`BlockHandler::write_now`]),
//! which the runtime tries first: no future to box, nothing to allocate.
//!
//! Handlers run on one worker thread (thread-per-core): their futures need
//! not be `Send`. Buffers are [`DataBuf`]s, ranges of the ring's data area
//! lent for the duration of the call: fill them (read) or take bytes from
//! them (write) directly, e.g. with io_uring, without copying. A backend
//! whose library blocks runs that work off the worker thread with
//! [`blocking::run`](crate::blocking::run), so other devices on the worker
//! keep going.

use async_trait::async_trait;
use tcmu_core::DataBuf;
use tcmu_scsi::lba_status::Extent;
use tcmu_scsi::UnmapParams;

use crate::command::{CmdOutcome, ScsiCmd};
use crate::error::{BlockError, CompareError, HandlerError};

/// A change of a device's configuration (netlink RECONFIG_DEVICE).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReconfigRequest {
    /// New size in bytes.
    Size(u64),
    /// Write cache turned on or off.
    WriteCache(bool),
    /// New handler configuration string (the part after `<subtype>/`).
    Config(String),
}

/// A storage backend serving one device.
///
/// Offsets and lengths are in bytes, whole logical blocks
/// ([`DeviceConfig::block_size`](crate::DeviceConfig::block_size)), inside
/// the device (the runtime checked them). The runtime runs a device's
/// commands concurrently: reads and writes of overlapping ranges may be in
/// flight together, as on a real disk, where initiators order what they
/// need ordered; only COMPARE AND WRITE (and FORMAT UNIT) hold their range
/// against every other command.
#[async_trait(?Send)]
pub trait BlockHandler {
    /// Fills `bufs`, in order, with the bytes at `offset` (as many as the
    /// buffers hold). Bytes past the end of the backing store must read as
    /// zeroes.
    async fn read(&self, offset: u64, bufs: Vec<DataBuf>) -> Result<(), BlockError>;

    /// Writes the bytes of `bufs`, in order, at `offset`.
    async fn write(&self, offset: u64, bufs: Vec<DataBuf>) -> Result<(), BlockError>;

    /// Makes every acknowledged write durable.
    async fn flush(&self) -> Result<(), BlockError>;

    /// Reads without waiting, if the backend can: fills `bufs` as
    /// [`read`](Self::read) would and returns the result, or returns
    /// `None` to have the runtime call `read`. For data that is at hand (in
    /// memory, in the page cache) this skips the boxed future of `read`.
    /// Must not block; work it started and gave up on is simply redone by
    /// `read`.
    fn read_now(&self, _offset: u64, _bufs: &mut [DataBuf]) -> Option<Result<(), BlockError>> {
        None
    }

    /// Writes without waiting, if the backend can: as
    /// [`write`](Self::write), or `None` to have the runtime call `write`
    /// (which then writes every byte again, to the same place).
    fn write_now(&self, _offset: u64, _bufs: &[DataBuf]) -> Option<Result<(), BlockError>> {
        None
    }

    /// Called once for a command still running past the device's time-out
    /// (`tcmur_cmd_time_out`, else `attrib/cmd_time_out`), with its CDB (at
    /// most 16 bytes), after the runtime logged and counted it. A backend
    /// can react here (reconnect, fence a stuck client); the command keeps
    /// running until it completes or an initiator aborts it.
    fn cmd_timed_out(&self, _cdb: &[u8]) {}

    /// This gateway's ALUA state by the backend's account, for a backend
    /// that several gateways (daemons on different hosts, each its own
    /// port group) export at once and that decides which one may write,
    /// as an RBD image's exclusive lock does: active/optimized while this
    /// one may write, transitioning while it takes over, active/
    /// non-optimized while another one does. REPORT TARGET PORT GROUPS
    /// then reports it for the device's own group, if that group's ALUA
    /// is implicit only (see [`tcmu_scsi::alua::set_local_state`]), so
    /// initiators that rank paths by it (multipathd's `alua` prioritizer)
    /// follow the writer. `None` (the default): the configured state.
    fn alua_state(&self) -> Option<tcmu_scsi::alua::AccessState> {
        None
    }

    /// Applies a configuration change; an error is reported to the kernel
    /// (the change is refused) and logged. The default accepts every
    /// change: a new size then only changes what the device reports.
    async fn reconfig(&self, _change: &ReconfigRequest) -> Result<(), HandlerError> {
        Ok(())
    }

    /// Releases the backend; called once, after the last command finished.
    async fn close(&self) {}
}

/// Deallocation of blocks (thin provisioning): UNMAP, and WRITE SAME with
/// the UNMAP bit. Declare with
/// [`HandlerBuilder::unmap`](crate::HandlerBuilder::unmap).
#[async_trait(?Send)]
pub trait Unmap {
    /// Deallocates `len` bytes at `offset` (whole logical blocks); they
    /// must then read back as zeroes if
    /// [`unmap_params`](Self::unmap_params) says `reads_zeroes`.
    async fn unmap(&self, offset: u64, len: u64) -> Result<(), BlockError>;

    /// The limits reported in the Block Limits VPD page and enforced on
    /// UNMAP; read once, when the capability is declared.
    fn unmap_params(&self) -> UnmapParams;
}

/// A native WRITE SAME; without it the runtime writes the pattern with
/// [`BlockHandler::write`]. Declare with
/// [`HandlerBuilder::write_same`](crate::HandlerBuilder::write_same).
#[async_trait(?Send)]
pub trait WriteSame {
    /// Writes `pattern` (one logical block) repeatedly over `len` bytes at
    /// `offset`.
    async fn write_same(&self, offset: u64, len: u64, pattern: &[u8]) -> Result<(), BlockError>;
}

/// A native, atomic COMPARE AND WRITE; without it the runtime reads,
/// compares and writes while holding the range against other commands of
/// this daemon. Declare with
/// [`HandlerBuilder::compare_and_write`](crate::HandlerBuilder::compare_and_write).
#[async_trait(?Send)]
pub trait CompareAndWrite {
    /// Compares the bytes at `offset` with `compare` and, only if they are
    /// equal, writes `write` (as many bytes as `compare`) there, atomically
    /// with respect to every other write to the range.
    async fn compare_and_write(
        &self,
        offset: u64,
        compare: &[u8],
        write: Vec<DataBuf>,
    ) -> Result<(), CompareError>;
}

/// Copies inside one backend (EXTENDED COPY within one device); without it
/// the runtime reads and writes. Declare with
/// [`HandlerBuilder::copy_offload`](crate::HandlerBuilder::copy_offload).
#[async_trait(?Send)]
pub trait CopyOffload {
    /// Copies `len` bytes from `src` to `dst` (byte offsets of this
    /// device; the ranges may overlap only if `src >= dst`).
    async fn copy(&self, src: u64, dst: u64, len: u64) -> Result<(), BlockError>;
}

/// Allocation status of the backing store (GET LBA STATUS); without it
/// every block is reported mapped. Declare with
/// [`HandlerBuilder::lba_status`](crate::HandlerBuilder::lba_status).
#[async_trait(?Send)]
pub trait LbaStatus {
    /// The provisioning status of the blocks from byte `offset` on, as runs
    /// of `block_size`-byte blocks covering at least the first block and at
    /// most `len` bytes.
    async fn lba_status(
        &self,
        offset: u64,
        len: u64,
        block_size: u32,
    ) -> Result<Vec<Extent>, BlockError>;
}

/// Sees every command first (after a pending unit attention, which the
/// runtime reports itself), owning its buffers. Declare with
/// [`HandlerBuilder::commands`](crate::HandlerBuilder::commands); a handler
/// that does not pays nothing per command for it.
#[async_trait(?Send)]
pub trait CommandHook {
    /// Answers `cmd` ([`CmdOutcome::Done`]) or gives it back, with all its
    /// buffers, for the generic layer ([`CmdOutcome::NotHandled`]). A panic
    /// fails only this command (INTERNAL TARGET FAILURE).
    async fn handle_cmd(&self, cmd: ScsiCmd) -> CmdOutcome;

    /// Whether [`handle_cmd`](Self::handle_cmd) wants the command with this
    /// CDB; asked first, synchronously, for every command. A hook that
    /// takes a few opcodes (or acts only in some state) says so here and
    /// saves the other commands a boxed future. The default takes every
    /// command.
    fn wants(&self, _cdb: &[u8]) -> bool {
        true
    }
}
