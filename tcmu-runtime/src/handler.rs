//! The handler API: what a storage backend implements.
//!
//! A backend implements [`BlockHandler`] (`read`, `write`, `flush`, and
//! optionally `unmap` and `write_same`); the generic layer answers every
//! other SCSI command. A backend that wants to see commands first overrides
//! [`BlockHandler::handle_cmd`] and returns `None` for the ones the generic
//! layer should take.
//!
//! Handlers run on one worker thread (thread-per-core): their futures need
//! not be `Send`. Buffers are [`DataBuf`]s, ranges of the ring's data area
//! lent for the duration of the call: fill them (read) or take bytes from
//! them (write) directly, e.g. with io_uring, without copying.

use std::io;

use async_trait::async_trait;
use tcmu_core::DataBuf;
use tcmu_scsi::{Sense, Status, UnmapParams};

/// Why a handler operation failed; the runtime turns it into SCSI status.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BlockError {
    /// The backend's I/O failed: MEDIUM ERROR (read or write flavour).
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
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
    /// Bytes of data-in produced (the buffers were filled by the handler).
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

    /// Deallocates `len` bytes at `offset`; they must then read back as
    /// zeroes if [`unmap_params`](Self::unmap_params) says `reads_zeroes`.
    async fn unmap(&self, _offset: u64, _len: u64) -> Result<(), BlockError> {
        Err(BlockError::Unsupported)
    }

    /// Writes `pattern` (one logical block) repeatedly over `len` bytes at
    /// `offset`.
    async fn write_same(&self, _offset: u64, _len: u64, _pattern: &[u8]) -> Result<(), BlockError> {
        Err(BlockError::Unsupported)
    }

    /// Sees every command first; `None` hands it to the generic layer.
    async fn handle_cmd(&self, _cmd: &ScsiCmd<'_>) -> Option<CmdReply> {
        None
    }

    /// Thin-provisioning limits when the handler supports [`unmap`](Self::unmap).
    fn unmap_params(&self) -> Option<UnmapParams> {
        None
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
