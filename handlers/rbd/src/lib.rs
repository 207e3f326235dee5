//! # tcmu-handler-rbd — a Ceph RBD image as a SCSI disk
//!
//! Subtype `rbd`, tcmu-runner's format:
//! `dev_config=rbd/<pool>/<image>[;osd_op_timeout=N][;conf=PATH][;id=NAME]`
//! serves image `<image>` of RADOS pool `<pool>` through librbd, as the
//! LUNs of ceph-iscsi gateways are served ([`config`]).
//!
//! - **Data path**: asynchronous librbd operations straight from and into
//!   the ring's data area, completed on librbd's threads without blocking
//!   them ([`handler`], `tcmu_rbd_ffi::aio`).
//! - **The exclusive lock**: taken on the first write (BUSY meanwhile),
//!   breaking and blocklisting a dead or former owner; a lost lock fences
//!   the device's client, answers BUSY and reopens the connection, with
//!   nothing written after the loss ([`handler`]).
//! - **Bounded checks**: CheckConfig and `enable` connect with time-outs
//!   and refuse an unreachable cluster, a missing pool or image, a bad id
//!   or a size mismatch with a message naming the cause ([`factory`]).
//! - **The service map**: each device registers as daemon
//!   `<host>:<pool>/<image>` of service `tcmu-runner` with its lock and
//!   error counters, as the C handler does ([`conn`]).
//!
//! Each device has its own librados client: a fenced or stuck client
//! affects that device alone.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod config;
pub mod conn;
pub mod factory;
pub mod handler;

pub use config::{ConfigError, RbdConfig};
pub use factory::RbdFactory;
pub use handler::RbdHandler;
