//! # tcmu-core — the TCM-User kernel interface
//!
//! Everything tcmu-rs needs to talk to the kernel's `target_core_user`
//! module, with no async runtime: the shared-memory layouts
//! ([`layout`]), the mapping of a device's ring memory ([`mmap`]), the
//! command-ring walk ([`ring`]), data-area buffers lent to commands
//! ([`buf`]), the UIO doorbell ([`doorbell`]), UIO device discovery
//! ([`uio`]), the `TCM-USER` generic netlink family ([`netlink`]) and
//! configfs helpers ([`configfs`]). With feature `sim`, module `sim` plays the
//! kernel's part in memory for unit tests.
//!
//! This is also the embedding API for programs with their own event loop
//! (the analogue of tcmu-runner's libtcmu): open a device's [`Doorbell`],
//! map its memory with [`Mapping::map_shared`], build a [`CommandRing`],
//! then on every wake-up drain [`CommandRing::next_entry`], complete
//! entries with [`CommandRing::complete`], [`CommandRing::publish`] and
//! [`Doorbell::kick`].
//!
//! `unsafe` is confined to [`mmap`] (the mapping itself) and [`buf`] (the
//! buffer traits io_uring needs, and slices of the data area for
//! synchronous vectored I/O), plus, with feature `alloc-count`, the
//! test-only counting allocator (module `alloc_count`); every block carries a
//! `// SAFETY:` note.
#![deny(unsafe_code)]
#![deny(missing_docs)]

#[cfg(feature = "alloc-count")]
#[allow(unsafe_code)]
pub mod alloc_count;
pub mod alua;
#[allow(unsafe_code)]
pub mod buf;
pub mod cdb;
pub mod configfs;
pub mod device;
pub mod doorbell;
pub mod layout;
pub mod master;
#[allow(unsafe_code)]
pub mod mmap;
pub mod netlink;
#[cfg(feature = "tokio")]
#[allow(unsafe_code)]
pub mod reactor;
pub mod reply;
pub mod ring;
pub mod scratch;
#[cfg(feature = "sim")]
pub mod sim;
pub mod uio;

pub use buf::{BufLease, DataBuf};
pub use cdb::Cdb;
pub use device::Device;
pub use doorbell::Doorbell;
pub use master::{Event, Existing, Master};
pub use mmap::Mapping;
pub use ring::{CmdEntry, CommandRing, Completion, Entry, RingError, TmrNotice};
pub use scratch::{ScratchArea, ScratchError};
