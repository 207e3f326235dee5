//! Pure SCSI for a TCMU direct-access block device: typed CDB decoding
//! ([`decode`]), sense data ([`Sense`]) and the generic emulation
//! ([`execute`]) of INQUIRY/VPD, READ CAPACITY, MODE SENSE/SELECT, REQUEST
//! SENSE, REPORT SUPPORTED OPERATION CODES and the range checks of the I/O
//! commands.
//!
//! No I/O, no async, no `unsafe_code` (forbidden below): everything is a function of bytes in and
//! bytes/sense out, and nothing panics on any initiator input. The runtime
//! owns the ring and the buffers; it calls [`decode`] on the CDB copied out
//! of the ring, copies the data-out buffer only when
//! [`Command::wants_data_out`] says so, calls [`execute`], and either
//! completes the command with the [`Response`] or runs the I/O that the
//! [`Outcome`] asks for.
//!
//! Answers follow SPC-4/SBC-3 and, where the standard leaves room, the
//! kernel's own LIO `fileio` backstore, so that `sg_inq`, `sg_readcap` and
//! `sg_modes` print the same for both.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod alua;
mod bytes;
pub mod capacity;
pub mod cdb;
pub mod device;
pub mod emulate;
pub mod inquiry;
pub mod lba_status;
pub mod mmc;
pub mod mode;
pub mod opcode;
pub mod opcodes;
pub mod sense;
pub mod status;
pub mod unmap;
pub mod vpd;
pub mod xcopy;
pub mod zbc;

pub use cdb::{decode, Command};
pub use device::{DeviceParams, DeviceState, UnmapParams};
pub use emulate::{execute, LbaRange, Outcome, Response};
pub use mmc::{Drive, DriveState, Medium, MmcParams};
pub use sense::{FieldPointer, Sense, SenseKey};
pub use status::Status;
pub use zbc::{ZonedModel, ZonedParams};
