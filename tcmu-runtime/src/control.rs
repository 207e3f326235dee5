//! Messages to a running device task, from the control side
//! ([`DeviceHandle`](crate::DeviceHandle)) and from other devices' EXTENDED
//! COPY.

use tcmu_scsi::Sense;
use tokio::sync::oneshot;

use crate::error::HandlerError;
use crate::handler::ReconfigRequest;

/// Requests to a running device task.
#[derive(Debug)]
pub(crate) enum Control {
    /// Finish in-flight commands, close the handler, then answer.
    Close(oneshot::Sender<()>),
    /// Apply a configuration change and answer with the result.
    Reconfig(ReconfigRequest, oneshot::Sender<Result<(), HandlerError>>),
    /// Read or write for another device's EXTENDED COPY.
    Copy(CopyIo),
}

/// A read or write asked of a device by another device's EXTENDED COPY.
#[derive(Debug)]
pub(crate) enum CopyIo {
    /// Read `blocks` blocks at `lba`.
    Read {
        lba: u64,
        blocks: u32,
        reply: oneshot::Sender<Result<Vec<u8>, Sense>>,
    },
    /// Write `data` (whole blocks) at `lba`.
    Write {
        lba: u64,
        data: Vec<u8>,
        reply: oneshot::Sender<Result<(), Sense>>,
    },
}
