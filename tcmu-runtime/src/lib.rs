//! # tcmu-runtime — serving TCMU devices with your own storage backend
//!
//! The Linux LIO target hands every SCSI command sent to a `user:<subtype>`
//! backstore to userspace over a ring in shared memory (`target_core_user`,
//! "TCMU"). This crate is the engine that serves such devices: you write a
//! *handler* — how to read, write and flush your storage — and it does the
//! rest, from the ring to the SCSI answer.
//!
//! ## The path of a command
//!
//! 1. A pool of worker threads ([`Workers`]), each its own tokio-uring
//!    runtime, serves the devices; a device is pinned to one worker.
//!    [`Workers::open`] asks your [`HandlerFactory`] to open the device on
//!    that worker, which returns a [`Handler`]: your [`BlockHandler`] and the
//!    capabilities it declared.
//! 2. The device's task sleeps on the UIO doorbell. When the kernel posts
//!    commands, it reads them off the ring ([`tcmu_core::CommandRing`]),
//!    each with its CDB copied out and its data buffers ([`DataBuf`]s:
//!    ranges of the ring's data area, lent to the command).
//! 3. Each command runs as a future of its own, polled by the device task.
//!    A [`CommandHook`], if declared, sees it first, owning its buffers. The
//!    generic SCSI layer ([`tcmu_scsi`]) then answers it (INQUIRY, MODE
//!    SENSE, REPORT SUPPORTED OPERATION CODES, range and field checks, …)
//!    or names the I/O: your `read`, `write`, `flush`, or a declared
//!    capability ([`Unmap`], [`WriteSame`], [`CompareAndWrite`],
//!    [`CopyOffload`], [`LbaStatus`]), with generic fallbacks to reads and
//!    writes for what you do not declare.
//! 4. Your handler moves bytes straight between the backend and the
//!    buffers — with io_uring, without a copy — or runs blocking work off
//!    the worker with [`blocking::run`].
//! 5. The result becomes SCSI status and sense data ([`BlockError`] →
//!    MEDIUM ERROR, NOT READY, …; a panic fails only its command), and the
//!    completions of a burst are written back with one doorbell write.
//!
//! Around that: range locks make COMPARE AND WRITE atomic; task management
//! (ABORT TASK, LUN RESET) cancels commands while their buffers stay out of
//! the kernel's hands until no I/O can write them; commands past the
//! device's time-out are logged, counted ([`DeviceStats`]) and reported to
//! the handler.
//!
//! ## A handler
//!
//! The smallest useful one: a disk of zeroes that forgets what is written.
//!
//! ```
//! use tcmu_runtime::{async_trait, BlockError, BlockHandler, DataBuf, DeviceConfig, Handler};
//! use tcmu_runtime::{HandlerError, HandlerFactory};
//!
//! /// `user:null` backstores (`dev_config=null/`).
//! pub struct NullFactory;
//!
//! #[async_trait(?Send)]
//! impl HandlerFactory for NullFactory {
//!     fn subtype(&self) -> &str {
//!         "null"
//!     }
//!     fn cfg_desc(&self) -> &str {
//!         "nothing: null/"
//!     }
//!     fn check_config(&self, cfg: &str) -> Result<(), HandlerError> {
//!         match cfg {
//!             "" => Ok(()),
//!             _ => Err(HandlerError::invalid_config("null takes no configuration")),
//!         }
//!     }
//!     async fn open(&self, _dev: &DeviceConfig) -> Result<Handler, HandlerError> {
//!         Ok(Handler::new(Null).build())
//!     }
//! }
//!
//! struct Null;
//!
//! #[async_trait(?Send)]
//! impl BlockHandler for Null {
//!     async fn read(&self, _offset: u64, mut bufs: Vec<DataBuf>) -> Result<(), BlockError> {
//!         bufs.iter_mut().for_each(|b| b.zero_from(0));
//!         Ok(())
//!     }
//!     async fn write(&self, _offset: u64, _bufs: Vec<DataBuf>) -> Result<(), BlockError> {
//!         Ok(())
//!     }
//!     async fn flush(&self) -> Result<(), BlockError> {
//!         Ok(())
//!     }
//! }
//! ```
//!
//! The `tcmu-runner` daemon registers factories in a [`Registry`] and serves
//! every device the kernel announces; [`serve::serve`] serves a registry's
//! handlers without the daemon (`examples/custom_handler`).
//! `docs/writing-a-handler.md` in the repository goes further
//! (capabilities, command hooks, blocking work, tests with
//! `testing::SimLun` under feature `sim`).
//!
//! ## Errors and threads
//!
//! Handlers run on their device's worker thread: futures need not be
//! `Send`, state can live in `Cell`/`RefCell`. Data-path errors are
//! [`BlockError`]s; refused configurations, opens and reconfigurations are
//! [`HandlerError`]s, whose [`Report`] is what the user reads.
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]
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
mod kernel_device;
mod peers;
pub mod poll;
mod range_lock;
pub mod serve;
pub mod stats;
#[cfg(feature = "sim")]
#[cfg_attr(docsrs, doc(cfg(feature = "sim")))]
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

/// The code examples of the repository's README and handler guide,
/// compiled as doctests so they keep working.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
#[doc = include_str!("../../docs/writing-a-handler.md")]
pub struct GuideExamples;

/// The attribute handler traits are implemented with
/// (`#[async_trait(?Send)]`), so a handler crate need not depend on
/// async-trait itself.
pub use async_trait::async_trait;
/// Re-exported so handlers and embedders name the same types.
pub use tcmu_core;
pub use tcmu_core::DataBuf;
/// Re-exported so handlers and embedders name the same types.
pub use tcmu_scsi;
