//! # tcmu-handler-file — a file or block device as a SCSI disk
//!
//! Subtype `file`, tcmu-runner's format: `dev_config=file//var/lib/disk.img`
//! backs the device with `/var/lib/disk.img` (created with mode 0600 if
//! missing, grown — never shrunk — to the device size). A block device path
//! works too.
//!
//! The data path moves bytes straight between the file and the ring's data
//! area ([`io`]), buffered like the kernel's `fileio` backstore: inline
//! `preadv2`/`pwritev2` where that cannot wait for a device (memory-backed
//! files, `RWF_NOWAIT` page-cache hits), io_uring `readv`/`writev`
//! otherwise. SYNCHRONIZE CACHE is `fdatasync`; UNMAP punches holes
//! (advertised with LBPRZ, since holes read as zeroes) when the filesystem
//! supports it; an all-zero WRITE SAME uses `FALLOC_FL_ZERO_RANGE` when it
//! can.
//!
//! Register [`FileFactory`] with a `tcmu_runtime::Registry`:
//! `registry.register(Arc::new(FileFactory))`. [`FileHandler::open`] must
//! run inside a tokio-uring runtime (the device's worker thread).
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod config;
mod extents;
pub mod factory;
pub mod handler;
pub mod io;

pub use config::{Backing, ConfigError, FileConfig};
pub use factory::FileFactory;
pub use handler::FileHandler;
