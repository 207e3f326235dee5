//! # tcmu-glfs-ffi — the libgfapi calls of the glfs handler
//!
//! A small, hand-declared binding of GlusterFS's client library libgfapi
//! (Debian 12: glusterfs 10.3, `libgfapi.so.0`), covering exactly what
//! `tcmu-handler-glfs` calls, behind safe types:
//!
//! - [`Fs`]: a "virtual mount" of one volume, reached through one volfile
//!   server (`glfs_new`, `glfs_set_volfile_server`, `glfs_set_logging`,
//!   `glfs_init`; `glfs_fini` when dropped);
//! - [`File`]: an open file of a volume (`glfs_creat`, `glfs_open`,
//!   `glfs_fstat`, `glfs_ftruncate`; `glfs_close` when dropped) and its
//!   asynchronous I/O ([`aio`]): vectored reads and writes straight from
//!   and into the ring's data area, `fdatasync`, discard and zerofill, each
//!   an [`Op`] future woken from gfapi's own threads.
//!
//! # Loaded at first use
//!
//! libgfapi is not linked: [`api`] opens it with `dlopen` the first time a
//! glfs device is checked or opened, and resolves each function at the
//! symbol version whose signature is declared here (the `GFAPI_6.0`
//! versions of the asynchronous calls pass `prestat`/`poststat` to their
//! callbacks; the older ones do not). A daemon built with this crate
//! therefore starts and serves its other handlers on a machine without
//! Gluster; the glfs handler then refuses its devices with
//! [`Error::Missing`], which says what to install.
//!
//! This crate is the only one of the handler with `unsafe` code; every
//! block says why it is sound.
#![deny(missing_docs)]

pub mod aio;
mod error;
mod fs;
mod sys;

pub use aio::{Done, Op};
pub use error::Error;
pub use fs::{File, Fs};
pub use sys::{api, library_name, Api, LIBRARY, LIBRARY_ENV};
