//! # tcmu-core — the TCM-User kernel interface
//!
//! Everything needed to talk to the kernel's `target_core_user` module,
//! with no async runtime: the shared-memory layouts ([`layout`]), the
//! mapping of a device's ring memory ([`mmap`]), the command-ring walk
//! ([`ring`]), data-area buffers lent to commands ([`buf`]) and buffers of
//! one's own ([`scratch`]), the completion rules ([`reply`]), the UIO
//! doorbell ([`doorbell`]), UIO device discovery ([`uio`]), the `TCM-USER`
//! generic netlink family ([`netlink`]) and configfs helpers
//! ([`configfs`]). With feature `sim`, module `sim` plays the kernel's part
//! in memory for unit tests.
//!
//! # Embedding: serving TCMU devices from your own event loop
//!
//! This crate is the analogue of tcmu-runner's libtcmu: a program with its
//! own event loop serves devices with two objects, both synchronous and
//! pollable through their descriptor ([`AsFd`](std::os::fd::AsFd); with
//! feature `tokio`, `reactor::register_readable` puts them on tokio's
//! reactor).
//!
//! 1. **[`Master`]**, the netlink side. [`Master::open`] joins the kernel's
//!    event group and tells the kernel this process answers events. From
//!    then on the kernel waits, with no timeout, for an answer to every
//!    device event, so each comes out of [`Master::next_event`] as an
//!    [`Event`] you must [`accept`](Event::accept),
//!    [`refuse`](Event::refuse) or [`leave`](Event::leave) to another
//!    process (one dropped unanswered refuses itself). At start-up,
//!    [`Master::recover`] hands you the devices that exist already:
//!    running ones blocked with their ring reset until you have attached,
//!    pending ones as events.
//! 2. **[`Device`]**, the data path of one device: [`Device::open`] maps
//!    its ring. When its descriptor is readable, [`ack`](Device::ack) the
//!    doorbell, take each [`next_entry`](Device::next_entry), and complete
//!    commands — immediately or later, in any order — with
//!    [`complete_with_data`](Device::complete_with_data) or
//!    [`complete_filled`](Device::complete_filled), then
//!    [`publish`](Device::publish). These apply the rules of [`reply`]: the
//!    data area is reused between commands, so whatever a command's answer
//!    does not fill is zeroed or cut off by `read_len`, and no bytes of an
//!    earlier command reach an initiator.
//!
//! A command's data buffers ([`DataBuf`]) are ranges of the ring's data
//! area lent to that command alone; I/O (io_uring, [`buf::preadv`]) may go
//! straight into them. Safe code cannot make two live buffers over the
//! same bytes (see [`buf`]).
//!
//! ```no_run
//! use std::os::fd::AsFd;
//! use rustix::event::{poll, PollFd, PollFlags};
//! use tcmu_core::master::{Existing, Master};
//! use tcmu_core::netlink::EventKind;
//! use tcmu_core::reply::{CHECK_CONDITION, GOOD};
//! use tcmu_core::{Device, Entry};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut master = Master::open()?;
//! let mut devices: Vec<Device> = Vec::new();
//! for existing in master.recover(|uio, _state| uio.name.subtype == "mine")? {
//!     match existing {
//!         // Attach, then let the kernel queue commands again.
//!         Existing::Running(blocked) => {
//!             devices.push(Device::open(blocked.uio())?);
//!             blocked.unblock()?;
//!         }
//!         Existing::Pending(event) => {
//!             devices.push(Device::open(&event.uio()?)?);
//!             event.accept()?;
//!         }
//!     }
//! }
//! loop {
//!     let mut fds = vec![PollFd::new(&master, PollFlags::IN)];
//!     fds.extend(devices.iter().map(|d| PollFd::new(d, PollFlags::IN)));
//!     poll(&mut fds, None)?;
//!     drop(fds);
//!     while let Some(event) = master.next_event()? {
//!         match event.kind() {
//!             EventKind::Added if event.subtype().as_deref() == Some("mine") => {
//!                 devices.push(Device::open(&event.uio()?)?);
//!                 event.accept()?;
//!             }
//!             EventKind::Added => event.refuse(libc::EINVAL, "not my subtype")?,
//!             // A real program closes or reconfigures the device here.
//!             _ => event.accept()?,
//!         }
//!     }
//!     for device in &mut devices {
//!         device.ack()?;
//!         while let Some(entry) = device.next_entry()? {
//!             match entry {
//!                 // Decode cmd.cdb (e.g. with tcmu-scsi) and answer it.
//!                 Entry::Cmd(cmd) if cmd.cdb.first() == Some(&0x00) => {
//!                     device.complete_with_data(cmd, GOOD, &[], &[])?
//!                 }
//!                 Entry::Cmd(cmd) => {
//!                     // INVALID COMMAND OPERATION CODE, fixed format.
//!                     let sense = [0x70, 0, 0x05, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x20, 0];
//!                     device.complete_with_data(cmd, CHECK_CONDITION, &sense, &[])?
//!                 }
//!                 Entry::Unknown { cmd_id, .. } => {
//!                     device.complete(cmd_id, &tcmu_core::Completion::unknown_op())?
//!                 }
//!                 _ => {}
//!             }
//!         }
//!         device.publish()?;
//!     }
//! }
//! # }
//! ```
//!
//! `examples/consumer.rs` is the complete version: a RAM disk for every
//! device of subtype `consumer`, with `tcmu-scsi` answering the SCSI
//! commands, signals, removal and reconfiguration
//! (`cargo run --release -p tcmu-core --example consumer`).
//!
//! # Unsafe code
//!
//! `unsafe` is confined to [`mmap`] (the mapping itself) and [`buf`] (the
//! buffer traits io_uring needs, and the raw iovecs of synchronous
//! vectored I/O), plus, with feature `tokio`, module `reactor`
//! (registration with tokio's reactor) and, with feature `alloc-count`,
//! the test-only counting allocator (module `alloc_count`); every block
//! carries a `// SAFETY:` note.
#![deny(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]
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
#[cfg_attr(docsrs, doc(cfg(feature = "sim")))]
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
