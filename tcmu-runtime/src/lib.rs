//! # tcmu-runtime — the async engine of tcmu-rs
//!
//! Serves TCMU devices: a pool of worker threads ([`Workers`]), each a
//! tokio-uring runtime, runs one task per device that waits on the UIO
//! doorbell, drains the command ring, runs commands concurrently (as futures
//! that task polls itself) through the generic SCSI layer (`tcmu-scsi`) and
//! the device's [`BlockHandler`], and writes completions back in batches.
//!
//! Handlers plug in through [`HandlerFactory`] and a [`Registry`].
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod alua;
pub mod blocking;
mod capability;
mod cmd_pool;
mod command;
mod control;
mod copy;
mod ctx;
mod device;
mod dispatch;
mod error;
pub mod factory;
mod fallback;
pub mod handler;
mod inflight;
mod peers;
pub mod poll;
mod range_lock;
pub mod stats;
#[cfg(feature = "sim")]
pub mod testing;
mod worker;

pub use capability::{Capability, Handler, HandlerBuilder};
pub use command::{CmdOutcome, CmdReply, ScsiCmd};
pub use device::{RingSource, CLOSE_GRACE};
pub use error::{BlockError, CompareError, DeviceError, HandlerError, Report};
pub use factory::{
    split_dev_config, take_runner_options, DeviceConfig, HandlerFactory, Registry, RunnerOptions,
};
pub use handler::{
    BlockHandler, CommandHook, CompareAndWrite, CopyOffload, LbaStatus, ReconfigRequest, Unmap,
    WriteSame,
};
pub use poll::set_ring_poll;
pub use stats::{DeviceStats, StatsSnapshot};
pub use worker::{DeviceHandle, DeviceSpec, Workers};

/// Re-exported so handlers and embedders name the same types.
pub use tcmu_core;
/// Re-exported so handlers and embedders name the same types.
pub use tcmu_scsi;
