//! # tcmu-handler-qcow — a qcow2 image as a SCSI disk
//!
//! Subtype `qcow`, tcmu-runner's format: `dev_config=qcow//var/lib/vm.qcow2`
//! serves the image `/var/lib/vm.qcow2`, made beforehand with
//! `qemu-img create -f qcow2` (the handler never creates or resizes one).
//! Both qcow2 versions (2 and 3, "compat=0.10" and "1.1") work, with
//! backing files (opened read-only, as `qemu-img info` names them),
//! compressed clusters (read) and clusters allocated on first write. The
//! device may be smaller than the image's virtual size, never larger.
//!
//! The qcow2 metadata (L1/L2 tables, refcounts) lives in [`imago`]'s
//! write-back caches: the device reports a volatile write cache, and
//! SYNCHRONIZE CACHE and FUA write the metadata out and `fsync` the image.
//! Closing the device does the same, so an image the daemon let go of is
//! consistent for `qemu-img check`. UNMAP discards clusters, which then
//! read back as zeroes.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod config;
pub mod factory;
pub mod handler;

pub use config::{ConfigError, QcowConfig};
pub use factory::QcowFactory;
pub use handler::QcowHandler;
