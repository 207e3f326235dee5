//! [`Image`]: the image a device serves, qcow2 (imago) or qcow version 1
//! ([`Qcow1`]), behind one set of synchronous operations the handler runs
//! on the worker's blocking threads.

use std::io;
use std::path::Path;

use imago::file::File;
use imago::qcow2::Qcow2;
use imago::{FormatAccess, FormatDriverBuilder, PermissiveImplicitOpenGate, ShallowMapping};

use crate::qcow1::Qcow1;

/// An open image, read-write.
#[derive(Debug)]
pub enum Image {
    /// qcow2, version 2 or 3, through imago.
    Qcow2 {
        /// The image.
        image: FormatAccess<File>,
        /// Whether its data lives in the image file itself (no external
        /// data file), so that its mappings point into that file.
        own_data: bool,
    },
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
        let own_data = !image.requires_external_data_file();
        Ok(Self::Qcow2 {
            image: FormatAccess::new(image),
            own_data,
        })
    }

    /// Whether the image's data clusters live in the image file itself, at
    /// the offsets [`data_mappings`](Self::data_mappings) gives.
    pub fn maps_own_file(&self) -> bool {
        matches!(self, Self::Qcow2 { own_data: true, .. })
    }

    /// The clusters of `cluster_size` bytes (the image's) overlapping
    /// `len` bytes at `offset` that are data of the top image's own file
    /// and can be written in place, as (guest cluster index, offset of the
    /// cluster in the file). Empty unless [`maps_own_file`](Self::maps_own_file).
    pub fn data_mappings(
        &self,
        offset: u64,
        len: u64,
        cluster_size: u64,
    ) -> io::Result<Vec<(u64, u64)>> {
        let Self::Qcow2 {
            image,
            own_data: true,
        } = self
        else {
            return Ok(Vec::new());
        };
        if len == 0 || !cluster_size.is_power_of_two() {
            return Ok(Vec::new());
        }
        let mask = cluster_size - 1;
        let mut pos = offset & !mask;
        let end = offset
            .saturating_add(len)
            .saturating_add(mask)
            .min(image.size())
            & !mask;
        let mut found = Vec::new();
        while pos < end {
            let (mapping, n) = wait(image.get_shallow_mapping(pos, end - pos))?;
            if n == 0 {
                break;
            }
            // The top layer's own storage (no external data file), a
            // standard cluster with refcount 1 (`writable`), whole
            // clusters only (with extended L2 entries, a cluster may be
            // allocated in part).
            if let ShallowMapping::Raw {
                offset: host,
                writable: true,
                ..
            } = mapping
            {
                if pos & mask == 0 && host & mask == 0 {
                    let mut at = 0;
                    while at + cluster_size <= n {
                        found.push(((pos + at) / cluster_size, host + at));
                        at += cluster_size;
                    }
                }
            }
            pos += n;
        }
        Ok(found)
    }

    /// The virtual size in bytes.
    pub fn size(&self) -> u64 {
        match self {
            Self::Qcow2 { image, .. } => image.size(),
            Self::Qcow1(image) => image.size(),
        }
    }

    /// Reads `buf.len()` bytes at `offset`.
    pub fn read(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        match self {
            Self::Qcow2 { image, .. } => wait(image.read(buf, offset)),
            Self::Qcow1(image) => image.read(buf, offset),
        }
    }

    /// Writes `buf` at `offset`.
    pub fn write(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        match self {
            Self::Qcow2 { image, .. } => wait(image.write(buf, offset)),
            Self::Qcow1(image) => image.write(buf, offset),
        }
    }

    /// Writes cached metadata out and makes the image file durable.
    pub fn write_out(&self) -> io::Result<()> {
        match self {
            Self::Qcow2 { image, .. } => {
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
            Self::Qcow2 { image, .. } => wait(image.discard_to_zero(offset, len)),
            Self::Qcow1(_) => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "qcow version 1 images cannot discard",
            )),
        }
    }
}
