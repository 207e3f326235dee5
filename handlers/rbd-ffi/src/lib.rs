//! # tcmu-rbd-ffi — the librados and librbd calls of the rbd handler
//!
//! A small, hand-declared binding of the C APIs of librados 2 and librbd 1
//! (Debian 12: Ceph 16.2, librbd 1.16), covering exactly what
//! `tcmu-handler-rbd` calls, behind safe types:
//!
//! - [`Cluster`]: a librados client (connect, configuration, monitor
//!   commands, its address, the service map);
//! - [`IoCtx`]: a pool;
//! - [`Image`]: an open image (size, features, the exclusive lock) and its
//!   asynchronous I/O ([`aio`]): reads and writes straight from and into
//!   the ring's data area, flush, discard, write-zeroes, write-same,
//!   compare-and-write, each an [`Op`] future.
//!
//! This crate is the only one of the handler with `unsafe` code; every
//! block says why it is sound. Ownership is what keeps it so: an image
//! holds its pool, a pool its cluster (so they are closed in order), and
//! an operation in flight owns its buffers until librbd's completion
//! callback has run (see [`aio`]).
//!
//! The declarations were written from `rados/librados.h` and
//! `rbd/librbd.h` rather than generated: no libclang at build time, and
//! nothing is declared that is not used. Linking needs `librbd-dev` and
//! `librados-dev`.
#![deny(missing_docs)]

pub mod aio;
mod error;
mod image;
mod rados;
mod sys;

pub use aio::{Done, Op};
pub use error::Error;
pub use image::{Image, ImageInfo};
pub use rados::{Cluster, IoCtx};
