//! # tcmu-handler-glfs — a file in a Gluster volume as a SCSI disk
//!
//! Subtype `glfs`, tcmu-runner's format:
//! `dev_config=glfs/<volume>@<server>/<path of the file in the volume>`
//! serves that file through libgfapi, without a FUSE mount, as
//! gluster-block's LUNs are served ([`config`]).
//!
//! - **Data path**: gfapi's asynchronous `preadv`/`pwritev` straight from
//!   and into the ring's data area, completed on gfapi's threads without
//!   blocking them; SYNCHRONIZE CACHE is `fdatasync`, UNMAP `discard`,
//!   WRITE SAME of zeroes `zerofill` ([`handler`], `tcmu_glfs_ffi::aio`).
//! - **One connection per (server, volume)**, shared by every device on
//!   it: `glfs_init` costs milliseconds, `glfs_fini` about ten seconds
//!   ([`conn`]).
//! - **Size**: the file is created if missing and sized to the device; a
//!   larger file is refused naming both sizes; a RECONFIG of the size grows
//!   it ([`factory`]).
//! - **Bounded checks**: CheckConfig and `enable` reach the server within a
//!   bound, and a missing libgfapi is refused naming the package to
//!   install.
//! - **Failure**: an unreachable volume makes commands fail with NOT READY,
//!   LOGICAL UNIT IS IN PROCESS OF BECOMING READY, which initiators retry.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod config;
pub mod conn;
pub mod factory;
pub mod handler;

pub use config::{ConfigError, GlfsConfig};
pub use factory::GlfsFactory;
pub use handler::GlfsHandler;
