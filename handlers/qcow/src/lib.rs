//! # tcmu-handler-qcow — a qcow2 or qcow image as a SCSI disk
//!
//! Subtype `qcow`, tcmu-runner's format: `dev_config=qcow//var/lib/vm.qcow2`
//! serves the image `/var/lib/vm.qcow2`, made beforehand with
//! `qemu-img create -f qcow2` (or `-f qcow`); the handler never creates or
//! resizes one. The format is told by the header's magic and version:
//!
//! - qcow2, both versions (2 and 3, "compat=0.10" and "1.1"), through
//!   [`imago`]: backing files (opened read-only, as `qemu-img info` names
//!   them), compressed clusters (read), clusters allocated on first write.
//!   imago keeps the metadata (L1/L2 tables, refcounts) in write-back
//!   caches.
//! - qcow version 1 (`qemu-img create -f qcow`), which tcmu-runner's C
//!   handler serves and imago does not read, through this crate's own
//!   driver, [`qcow1`]: backing files of any of the three formats (probed;
//!   a relative name is relative to the image's folder), compressed
//!   clusters (read, and rewritten uncompressed when written to), clusters
//!   allocated on first write. Its metadata is written through. Encrypted
//!   images are refused.
//!
//! Commands run on the worker's blocking threads through the image's
//! driver, except, on qcow2 images, those whose clusters are known to be
//! allocated in the image file and writable in place: [`fast`] moves
//! those bytes zero copy between the file and the ring on the worker.
//!
//! The device may be smaller than the image's virtual size, never larger.
//! It reports a volatile write cache: SYNCHRONIZE CACHE and FUA write the
//! metadata out and `fsync` the image. Closing the device does the same,
//! so an image the daemon let go of is consistent for `qemu-img check`.
//! On qcow2 version 3 images UNMAP discards clusters, which then read back
//! as zeroes; version 2 and qcow version 1 images have no zero clusters
//! and report no thin provisioning.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod backing;
pub mod config;
pub mod factory;
pub mod fast;
pub mod handler;
pub mod image;
pub mod qcow1;

pub use config::{ConfigError, QcowConfig};
pub use factory::QcowFactory;
pub use handler::QcowHandler;
pub use qcow1::Qcow1;
