//! [`Image`]: the image a device serves, qcow2 (imago) or qcow version 1
//! ([`Qcow1`]), behind one set of synchronous operations the handler runs
//! on the worker's blocking threads.

use std::io;
use std::path::Path;

use imago::file::File;
use imago::qcow2::Qcow2;
use imago::{FormatAccess, FormatDriverBuilder, PermissiveImplicitOpenGate};

use crate::qcow1::Qcow1;

/// An open image, read-write.
#[derive(Debug)]
pub enum Image {
    /// qcow2, version 2 or 3, through imago.
    Qcow2(FormatAccess<File>),
    /// qcow version 1.
    Qcow1(Box<Qcow1>),
}

/// Drives an imago future to completion on the calling (blocking) thread
/// (imago's file storage does plain system calls).
fn wait<T>(f: impl std::future::Future<Output = io::Result<T>>) -> io::Result<T> {
    futures::executor::block_on(f)
}

impl Image {
    /// Opens the image at `path`, whose header gave qcow `version`, for
    /// reading and writing (backing images read-only). Blocks.
    pub fn open(path: &Path, version: u32) -> io::Result<Self> {
        if version == 1 {
            return Qcow1::open(path, true).map(|image| Self::Qcow1(Box::new(image)));
        }
        let image = wait(
            Qcow2::<File>::builder_path(path)
                .write(true)
                .open(PermissiveImplicitOpenGate::default()),
        )?;
        Ok(Self::Qcow2(FormatAccess::new(image)))
    }

    /// The virtual size in bytes.
    pub fn size(&self) -> u64 {
        match self {
            Self::Qcow2(image) => image.size(),
            Self::Qcow1(image) => image.size(),
        }
    }

    /// Reads `buf.len()` bytes at `offset`.
    pub fn read(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        match self {
            Self::Qcow2(image) => wait(image.read(buf, offset)),
            Self::Qcow1(image) => image.read(buf, offset),
        }
    }

    /// Writes `buf` at `offset`.
    pub fn write(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        match self {
            Self::Qcow2(image) => wait(image.write(buf, offset)),
            Self::Qcow1(image) => image.write(buf, offset),
        }
    }

    /// Writes cached metadata out and makes the image file durable.
    pub fn write_out(&self) -> io::Result<()> {
        match self {
            Self::Qcow2(image) => {
                wait(image.flush())?;
                wait(image.sync())
            }
            Self::Qcow1(image) => image.flush(),
        }
    }

    /// Discards `len` bytes at `offset` so that they read back as zeroes
    /// (qcow2 version 3 only: qcow version 1 has no zero clusters).
    pub fn discard_to_zero(&mut self, offset: u64, len: u64) -> io::Result<()> {
        match self {
            Self::Qcow2(image) => wait(image.discard_to_zero(offset, len)),
            Self::Qcow1(_) => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "qcow version 1 images cannot discard",
            )),
        }
    }
}
