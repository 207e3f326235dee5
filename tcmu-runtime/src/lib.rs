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
mod cmd_pool;
mod copy;
mod device;
mod dispatch;
pub mod factory;
mod fallback;
pub mod handler;
mod inflight;
pub mod poll;
mod range_lock;
pub mod stats;
mod worker;

pub use device::{RingSource, CLOSE_GRACE};
pub use factory::{
    split_dev_config, take_runner_options, DeviceConfig, Handler, HandlerFactory, Registry,
    RunnerOptions,
};
pub use handler::{
    BlockError, BlockHandler, CmdReply, CompareAndWrite, CompareError, CopyOffload, LbaStatus,
    ReconfigRequest, ScsiCmd, Unmap, WriteSame,
};
pub use poll::set_ring_poll;
pub use stats::{DeviceStats, StatsSnapshot};
pub use worker::{DeviceHandle, DeviceSpec, Workers};

/// Re-exported so handlers and embedders name the same types.
pub use tcmu_core;
/// Re-exported so handlers and embedders name the same types.
pub use tcmu_scsi;
