//! [`Backing`]: the read-only image under a qcow version 1 image.
//!
//! qcow version 1 headers name a backing file but not its format, so it is
//! probed, as tcmu-runner and QEMU do: a qcow header of version 1 opens it
//! as qcow (recursively, down to [`MAX_DEPTH`] images), version 2 or 3
//! as qcow2 through imago (which opens a qcow2 image's own backing chain),
//! anything else as raw. Probing means a raw backing file whose first bytes
//! a guest wrote to look like a qcow header would be read as one: the
//! backing file is the administrator's, never a guest's disk. Reads past
//! the backing image's end return zeroes (a backing file may be smaller
//! than the image over it).

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use imago::qcow2::Qcow2;
use imago::{FormatAccess, FormatDriverBuilder, PermissiveImplicitOpenGate};

use crate::qcow1::header::MAGIC;
use crate::qcow1::{read_at_or_zero, Qcow1};

/// The longest backing chain followed (a longer one is most likely a loop).
pub const MAX_DEPTH: usize = 16;

/// A backing image, open read-only.
pub enum Backing {
    /// A raw file.
    Raw {
        /// Its path.
        path: PathBuf,
        /// The file.
        file: File,
        /// Its length, the image's size.
        size: u64,
    },
    /// A qcow2 image (imago).
    Qcow2 {
        /// Its path.
        path: PathBuf,
        /// The image.
        image: Box<FormatAccess<imago::file::File>>,
    },
    /// A qcow version 1 image.
    Qcow1(Box<Qcow1>),
}

impl std::fmt::Debug for Backing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.format(), self.path().display())
    }
}

impl Backing {
    /// Opens the image at `path` read-only, `depth` images down a chain,
    /// probing its format.
    pub fn open(path: &Path, depth: usize) -> io::Result<Self> {
        if depth > MAX_DEPTH {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the backing chain is deeper than {MAX_DEPTH} images (a loop?)"),
            ));
        }
        let file = File::open(path)?;
        let mut head = [0u8; 8];
        read_at_or_zero(&file, &mut head, 0)?;
        if head[..4] != MAGIC {
            let size = file.metadata()?.len();
            return Ok(Self::Raw {
                path: path.to_owned(),
                file,
                size,
            });
        }
        match u32::from_be_bytes([head[4], head[5], head[6], head[7]]) {
            1 => Ok(Self::Qcow1(Box::new(Qcow1::open_in_chain(
                path, false, depth,
            )?))),
            2 | 3 => {
                let image = futures::executor::block_on(
                    Qcow2::<imago::file::File>::builder_path(path)
                        .write(false)
                        .open(PermissiveImplicitOpenGate::default()),
                )?;
                Ok(Self::Qcow2 {
                    path: path.to_owned(),
                    image: Box::new(FormatAccess::new(image)),
                })
            }
            version => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a qcow image of unknown version {version}"),
            )),
        }
    }

    /// The backing image's virtual size.
    pub fn size(&self) -> u64 {
        match self {
            Self::Raw { size, .. } => *size,
            Self::Qcow2 { image, .. } => image.size(),
            Self::Qcow1(image) => image.size(),
        }
    }

    /// The backing image's path.
    pub fn path(&self) -> &Path {
        match self {
            Self::Raw { path, .. } | Self::Qcow2 { path, .. } => path,
            Self::Qcow1(image) => image.path(),
        }
    }

    /// The backing image's format, as qemu-img names it.
    pub fn format(&self) -> &'static str {
        match self {
            Self::Raw { .. } => "raw",
            Self::Qcow2 { .. } => "qcow2",
            Self::Qcow1(_) => "qcow",
        }
    }

    /// Reads `buf.len()` bytes at `offset`, zeroes past the image's end.
    pub fn read(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let inside = self.size().saturating_sub(offset).min(buf.len() as u64) as usize;
        let (head, tail) = buf.split_at_mut(inside);
        tail.fill(0);
        if head.is_empty() {
            return Ok(());
        }
        match self {
            Self::Raw { file, .. } => read_at_or_zero(file, head, offset),
            Self::Qcow2 { image, .. } => futures::executor::block_on(image.read(head, offset)),
            Self::Qcow1(image) => image.read(head, offset),
        }
    }
}
