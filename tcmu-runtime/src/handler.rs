//! The handler API: what a storage backend implements.
//!
//! A backend implements [`BlockHandler`] (`read`, `write`, `flush`); the
//! generic layer answers every other SCSI command, falling back to reads and
//! writes where an operation has no backend support (WRITE SAME, COMPARE
//! AND WRITE, VERIFY, EXTENDED COPY, FORMAT UNIT). Optional operations are
//! separate opt-in traits ([`Unmap`], [`WriteSame`], [`CompareAndWrite`],
//! [`CopyOffload`], [`LbaStatus`]) that a backend implements when it can do
//! better, and announces through the matching `as_*` method. A backend that
//! wants to see commands first overrides [`BlockHandler::handle_cmd`] and
//! returns `None` for the ones the generic layer should take. A backend
//! whose data is at hand can also serve reads and writes synchronously
//! ([`BlockHandler::read_now`], [`BlockHandler::write_now`]), which the
//! runtime tries first: no future to box, nothing to allocate.
//!
//! Handlers run on one worker thread (thread-per-core): their futures need
//! not be `Send`. Buffers are [`DataBuf`]s, ranges of the ring's data area
//! lent for the duration of the call: fill them (read) or take bytes from
//! them (write) directly, e.g. with io_uring, without copying.

use std::io;

use async_trait::async_trait;
use tcmu_core::DataBuf;
use tcmu_scsi::lba_status::Extent;
use tcmu_scsi::{Sense, Status, UnmapParams};

/// Why a handler operation failed; the runtime turns it into SCSI status.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BlockError {
    /// The backend's I/O failed: MEDIUM ERROR (read or write flavour).
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
    /// The backend's I/O failed at a known logical block: MEDIUM ERROR
    /// (read or write flavour) reporting `lba` in the INFORMATION field.
    #[error("I/O error at LBA {lba}: {source}")]
    IoAt {
        /// The first logical block that could not be read or written.
        lba: u64,
        /// What went wrong.
        #[source]
        source: io::Error,
    },
    /// The backend is temporarily unreachable: NOT READY.
    #[error("backend not ready: {0}")]
    NotReady(String),
    /// The handler does not implement this operation.
    #[error("operation not supported by this handler")]
    Unsupported,
    /// A specific SCSI answer.
    #[error("check condition: {0:?}")]
    Sense(Sense),
}

/// A handler's own answer to a command it took in [`BlockHandler::handle_cmd`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CmdReply {
    /// SCSI status.
    pub status: Status,
    /// Sense data for CHECK CONDITION.
    pub sense: Option<Sense>,
    /// Bytes of data-in produced (the buffers were filled by the handler);
    /// the runtime zeroes the rest. The kernel ignores a length of 0 and
    /// passes the whole (zeroed) buffer as a full transfer: a handler that
    /// produced nothing for a read should answer CHECK CONDITION.
    pub data_in_len: Option<u32>,
}

impl CmdReply {
    /// GOOD.
    pub fn good() -> Self {
        Self {
            status: Status::Good,
            sense: None,
            data_in_len: None,
        }
    }

    /// CHECK CONDITION with `sense`.
    pub fn check(sense: Sense) -> Self {
        Self {
            status: Status::CheckCondition,
            sense: Some(sense),
            data_in_len: None,
        }
    }
}

/// A command as a handler sees it in [`BlockHandler::handle_cmd`].
#[derive(Debug)]
pub struct ScsiCmd<'a> {
    /// The CDB.
    pub cdb: &'a [u8],
    /// The command's data buffers (data-out to read, or data-in to fill).
    pub data: &'a [DataBuf],
}

/// A change of a device's configuration (netlink RECONFIG_DEVICE).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReconfigRequest {
    /// New size in bytes.
    Size(u64),
    /// Write cache turned on or off.
    WriteCache(bool),
    /// New handler configuration string (the part after `<subtype>/`).
    Config(String),
}

/// A storage backend serving one device.
#[async_trait(?Send)]
pub trait BlockHandler {
    /// Fills `bufs`, in order, with the bytes at `offset`. Bytes past the end
    /// of the backing store must read as zeroes.
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
    fn read_now(&self, _offset: u64, _bufs: &[DataBuf]) -> Option<Result<(), BlockError>> {
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

    /// Thin provisioning (UNMAP, WRITE SAME with UNMAP), if the backend
    /// can deallocate blocks.
    fn as_unmap(&self) -> Option<&dyn Unmap> {
        None
    }

    /// Native WRITE SAME; without it the runtime writes the pattern with
    /// [`write`](Self::write).
    fn as_write_same(&self) -> Option<&dyn WriteSame> {
        None
    }

    /// Native COMPARE AND WRITE; without it the runtime reads, compares and
    /// writes while holding the range against other commands.
    fn as_compare_and_write(&self) -> Option<&dyn CompareAndWrite> {
        None
    }

    /// Copies inside the backend (EXTENDED COPY within one device); without
    /// it the runtime reads and writes.
    fn as_copy_offload(&self) -> Option<&dyn CopyOffload> {
        None
    }

    /// Which ranges are allocated (GET LBA STATUS); without it every block
    /// is reported mapped.
    fn as_lba_status(&self) -> Option<&dyn LbaStatus> {
        None
    }

    /// Sees every command first (after a pending unit attention, which the
    /// runtime reports itself); `None` hands it to the generic layer.
    /// Called only while [`sees_commands`](Self::sees_commands) says so.
    async fn handle_cmd(&self, _cmd: &ScsiCmd<'_>) -> Option<CmdReply> {
        None
    }

    /// Whether [`handle_cmd`](Self::handle_cmd) is to be called. A backend
    /// that does not override `handle_cmd` returns `false` here and saves
    /// a boxed future per command. Asked before every command.
    fn sees_commands(&self) -> bool {
        true
    }

    /// Whether the backend keeps acknowledged writes in a volatile cache
    /// (the page cache, say) until `flush`. Such a device reports its write
    /// cache as enabled (WCE=1), like tcmu-runner's file handler, and relies
    /// on SYNCHRONIZE CACHE and FUA for durability; otherwise the kernel's
    /// `emulate_write_cache` attribute decides.
    fn has_write_cache(&self) -> bool {
        false
    }

    /// Applies a configuration change; an error is reported to the kernel
    /// and the change refused.
    async fn reconfig(&self, _change: &ReconfigRequest) -> Result<(), String> {
        Ok(())
    }

    /// Releases the backend; called once, after the last command finished.
    async fn close(&self) {}
}

/// Deallocation of blocks (thin provisioning).
#[async_trait(?Send)]
pub trait Unmap {
    /// Deallocates `len` bytes at `offset`; they must then read back as
    /// zeroes if [`unmap_params`](Self::unmap_params) says `reads_zeroes`.
    async fn unmap(&self, offset: u64, len: u64) -> Result<(), BlockError>;

    /// The limits reported in the Block Limits VPD page and enforced on
    /// UNMAP.
    fn unmap_params(&self) -> UnmapParams;
}

/// A native WRITE SAME.
#[async_trait(?Send)]
pub trait WriteSame {
    /// Writes `pattern` (one logical block) repeatedly over `len` bytes at
    /// `offset`.
    async fn write_same(&self, offset: u64, len: u64, pattern: &[u8]) -> Result<(), BlockError>;
}

/// Why a compare-and-write or verify did not write.
#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    /// The data differ; the value is the byte offset of the first
    /// difference, counted from the start of the compared range.
    #[error("miscompare at byte {0}")]
    Miscompare(u64),
    /// The backend failed.
    #[error(transparent)]
    Block(#[from] BlockError),
}

/// A native, atomic COMPARE AND WRITE.
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

/// Copies inside one backend.
#[async_trait(?Send)]
pub trait CopyOffload {
    /// Copies `len` bytes from `src` to `dst` (byte offsets of this
    /// device; the ranges may overlap only if `src >= dst`).
    async fn copy(&self, src: u64, dst: u64, len: u64) -> Result<(), BlockError>;
}

/// Allocation status of the backing store.
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
