//! [`FileHandler`]: one device backed by a file or block device.
//!
//! The handler owns the backing file twice over: an io_uring
//! [`tokio_uring::fs::File`] for the data path, and a duplicate `std` handle
//! (same open file description) for the rare synchronous metadata calls —
//! size queries and growing the file. Both close when the handler is dropped.
//!
//! Write caching follows the device: with the write cache enabled, writes
//! stay in the page cache until SYNCHRONIZE CACHE ([`BlockHandler::flush`],
//! `fdatasync`); with it disabled, every write is followed by `fdatasync`
//! before it is acknowledged (what the kernel's `fileio` backstore gets from
//! `O_DSYNC`).

use std::cell::Cell;
use std::fs::OpenOptions;
use std::io::{self, Seek, SeekFrom};
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use tcmu_core::DataBuf;
use tcmu_runtime::{
    BlockError, BlockHandler, DeviceConfig, HandlerError, LbaStatus, ReconfigRequest, Unmap,
    WriteSame,
};
use tcmu_scsi::lba_status::Extent;
use tcmu_scsi::UnmapParams;

use crate::config::FileConfig;
use crate::extents;
use crate::io::{self as file_io, write_pattern, Inline};

/// Largest buffer built for WRITE SAME.
const WRITE_SAME_CHUNK: usize = 1 << 20;

/// A [`BlockHandler`] over a regular file or a block device.
#[derive(Debug)]
pub struct FileHandler {
    /// The cfgstring the device was opened with.
    cfgstring: String,
    path: PathBuf,
    /// The data path.
    file: tokio_uring::fs::File,
    /// A duplicate of `file`'s descriptor for size queries and `ftruncate`.
    meta: std::fs::File,
    block_device: bool,
    /// Hole punching worked when probed at open.
    punch_hole: bool,
    /// `FALLOC_FL_ZERO_RANGE` works here (cleared by the first `EOPNOTSUPP`).
    zero_range: Cell<bool>,
    /// How reads are issued (see [`Inline`]).
    read_policy: Cell<Inline>,
    /// How writes are issued.
    write_policy: Cell<Inline>,
}

fn is_unsupported(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::EOPNOTSUPP)
}

/// The size of a file or block device, from its descriptor.
fn backing_size(file: &std::fs::File, block_device: bool) -> io::Result<u64> {
    if block_device {
        // A block device's `st_size` is 0; seeking to its end is not.
        // Positional I/O never uses the file offset, so moving it is harmless.
        let mut f = file;
        f.seek(SeekFrom::End(0))
    } else {
        Ok(file.metadata()?.len())
    }
}

impl FileHandler {
    /// Opens (creating with mode 0600 if missing) the backing file for
    /// `config`, growing a regular file to the device size. Must run inside
    /// a tokio-uring runtime.
    pub async fn open(config: &DeviceConfig) -> Result<Self, HandlerError> {
        let checked = FileConfig::check(&config.cfgstring).map_err(HandlerError::invalid_config)?;
        let path = checked.path;
        let std_file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(&path)
            .map_err(|e| {
                HandlerError::io(format!("file handler: cannot open {}", path.display()), e)
            })?;
        let ft = std_file
            .metadata()
            .map_err(|e| {
                HandlerError::io(format!("file handler: cannot stat {}", path.display()), e)
            })?
            .file_type();
        let block_device = std::os::unix::fs::FileTypeExt::is_block_device(&ft);
        if !block_device && !ft.is_file() {
            return Err(HandlerError::invalid_config(format!(
                "file handler: {} is not a regular file or a block device",
                path.display()
            )));
        }
        let current = backing_size(&std_file, block_device).map_err(|e| {
            HandlerError::io(format!("file handler: cannot size {}", path.display()), e)
        })?;
        if current < config.size {
            if block_device {
                tracing::warn!(
                    path = %path.display(),
                    device_size = config.size,
                    backing_size = current,
                    "file handler: block device is smaller than the device; I/O past its end fails"
                );
            } else {
                std_file.set_len(config.size).map_err(|e| {
                    HandlerError::io(
                        format!(
                            "file handler: cannot grow {} to {} bytes",
                            path.display(),
                            config.size
                        ),
                        e,
                    )
                })?;
            }
        }
        let meta = std_file.try_clone().map_err(|e| {
            HandlerError::io(
                format!("file handler: cannot duplicate {}", path.display()),
                e,
            )
        })?;
        let policy = file_io::policy_for(meta.as_fd());
        let file = tokio_uring::fs::File::from_std(std_file);
        let mut handler = Self {
            cfgstring: config.cfgstring.clone(),
            path,
            file,
            meta,
            block_device,
            punch_hole: true,
            zero_range: Cell::new(true),
            read_policy: Cell::new(policy),
            write_policy: Cell::new(policy),
        };
        handler.punch_hole = handler.probe_punch_hole(config.block_size).await;
        tracing::debug!(
            path = %handler.path.display(),
            size = config.size,
            block_device,
            punch_hole = handler.punch_hole,
            inline = ?policy,
            "file handler: opened"
        );
        Ok(handler)
    }

    /// The backing file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether unmap (hole punching) worked when probed at open.
    pub fn supports_unmap(&self) -> bool {
        self.punch_hole
    }

    /// Whether the backing object is a block device (else a regular file).
    pub fn is_block_device(&self) -> bool {
        self.block_device
    }

    /// Asks the filesystem whether it punches holes, on a range past the end
    /// of the file (so no data can change). Block devices are assumed to
    /// support it until they answer `EOPNOTSUPP`.
    async fn probe_punch_hole(&self, block_size: u32) -> bool {
        if self.block_device {
            return true;
        }
        let Ok(end) = backing_size(&self.meta, false) else {
            return true;
        };
        let flags = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
        let len = u64::from(block_size.max(512));
        !matches!(self.file.fallocate(end, len, flags).await, Err(e) if is_unsupported(&e))
    }

    fn grow(&self, size: u64) -> Result<(), HandlerError> {
        let current = backing_size(&self.meta, self.block_device).map_err(|e| {
            HandlerError::io(
                format!("file handler: cannot size {}", self.path.display()),
                e,
            )
        })?;
        if current >= size {
            return Ok(());
        }
        if self.block_device {
            return Err(HandlerError::refused(format!(
                "file handler: block device {} ({current} bytes) is smaller than {size} bytes",
                self.path.display()
            )));
        }
        self.meta.set_len(size).map_err(|e| {
            HandlerError::io(
                format!(
                    "file handler: cannot grow {} to {size} bytes",
                    self.path.display()
                ),
                e,
            )
        })
    }
}

#[async_trait(?Send)]
impl BlockHandler for FileHandler {
    async fn read(&self, offset: u64, bufs: Vec<DataBuf>) -> Result<(), BlockError> {
        let fd = self.meta.as_fd();
        Ok(file_io::read(&self.file, fd, &self.read_policy, offset, bufs).await?)
    }

    async fn write(&self, offset: u64, bufs: Vec<DataBuf>) -> Result<(), BlockError> {
        // Durability (FUA, write cache off) is the runtime's business: it
        // calls `flush` after the writes that need it.
        let fd = self.meta.as_fd();
        Ok(file_io::write(&self.file, fd, &self.write_policy, offset, bufs).await?)
    }

    fn read_now(&self, offset: u64, bufs: &mut [DataBuf]) -> Option<Result<(), BlockError>> {
        let r = file_io::read_now(self.meta.as_fd(), &self.read_policy, offset, bufs)?;
        Some(r.map_err(BlockError::from))
    }

    fn write_now(&self, offset: u64, bufs: &[DataBuf]) -> Option<Result<(), BlockError>> {
        let r = file_io::write_now(self.meta.as_fd(), &self.write_policy, offset, bufs)?;
        Some(r.map_err(BlockError::from))
    }

    async fn flush(&self) -> Result<(), BlockError> {
        if self.write_policy.get() == Inline::Always {
            // Memory: nothing to wait for (tmpfs's fsync does nothing), so
            // no trip through io_uring's worker threads.
            return Ok(rustix::fs::fdatasync(&self.meta).map_err(std::io::Error::from)?);
        }
        Ok(self.file.sync_data().await?)
    }

    async fn reconfig(&self, change: &ReconfigRequest) -> Result<(), HandlerError> {
        match change {
            ReconfigRequest::Size(size) => self.grow(*size),
            ReconfigRequest::Config(cfg) if *cfg != self.cfgstring => Err(HandlerError::refused(
                "changing the file of a running device is not supported",
            )),
            _ => Ok(()),
        }
    }
}

/// UNMAP punches holes.
#[async_trait(?Send)]
impl Unmap for FileHandler {
    async fn unmap(&self, offset: u64, len: u64) -> Result<(), BlockError> {
        if len == 0 {
            return Ok(());
        }
        let flags = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
        match self.file.fallocate(offset, len, flags).await {
            Ok(()) => Ok(()),
            // The runtime withdraws UNMAP from the device.
            Err(e) if is_unsupported(&e) => {
                tracing::info!(path = %self.path.display(), "file handler: hole punching unsupported");
                Err(BlockError::Unsupported)
            }
            Err(e) => Err(e.into()),
        }
    }

    fn unmap_params(&self) -> UnmapParams {
        // Punched holes read back as zeroes (for block devices the kernel
        // only punches when it can guarantee that).
        UnmapParams {
            reads_zeroes: true,
            ..UnmapParams::default()
        }
    }
}

/// WRITE SAME of zeroes is `FALLOC_FL_ZERO_RANGE`; other patterns are
/// written in large pieces.
#[async_trait(?Send)]
impl WriteSame for FileHandler {
    async fn write_same(&self, offset: u64, len: u64, pattern: &[u8]) -> Result<(), BlockError> {
        if len == 0 {
            return Ok(());
        }
        if self.zero_range.get() && !pattern.is_empty() && pattern.iter().all(|&b| b == 0) {
            let flags = libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE;
            match self.file.fallocate(offset, len, flags).await {
                Ok(()) => return Ok(()),
                Err(e) if is_unsupported(&e) => self.zero_range.set(false),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(write_pattern(&self.file, offset, len, pattern, WRITE_SAME_CHUNK).await?)
    }
}

/// Holes in a regular file are deallocated blocks (`SEEK_DATA`/`SEEK_HOLE`).
#[async_trait(?Send)]
impl LbaStatus for FileHandler {
    async fn lba_status(
        &self,
        offset: u64,
        len: u64,
        block_size: u32,
    ) -> Result<Vec<Extent>, BlockError> {
        Ok(extents::scan(&self.meta, offset, len, block_size)?)
    }
}
