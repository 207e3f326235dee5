//! [`GlfsHandler`]: one device served from a file in a Gluster volume.
//!
//! # The data path
//!
//! Reads and writes are gfapi's asynchronous vectored calls straight from
//! and into the ring's data area (`glfs_preadv_async`,
//! `glfs_pwritev_async`); SYNCHRONIZE CACHE (and FUA) is
//! `glfs_fdatasync_async`, UNMAP `glfs_discard_async`, WRITE SAME of zeroes
//! `glfs_zerofill_async`, and WRITE SAME of another pattern one vectored
//! write per 4 MiB whose iovecs all point at one buffer of the pattern.
//! gfapi completes on its own threads; see `tcmu_glfs_ffi::aio` for how
//! buffers outlive aborted commands.
//!
//! # Failures
//!
//! When the volume cannot be reached (glusterd or the brick gone: gfapi
//! answers `ENOTCONN` and its kin), a command fails with NOT READY,
//! LOGICAL UNIT IS IN PROCESS OF BECOMING READY, which Linux's disk driver
//! retries after a pause; gfapi reconnects by itself, and the commands go
//! through again on the same connection. Other errors are MEDIUM ERRORs.
//! Changes between the two states are logged once each.

use std::cell::{Cell, RefCell};
use std::io;
use std::sync::Arc;

use async_trait::async_trait;
use tcmu_core::buf;
use tcmu_core::DataBuf;
use tcmu_glfs_ffi::{Error as GlfsError, File, Op};
use tcmu_runtime::tcmu_scsi::{Sense, UnmapParams};
use tcmu_runtime::{
    blocking, BlockError, BlockHandler, HandlerError, ReconfigRequest, Unmap, WriteSame,
};
use tracing::{info, warn};

use crate::config::GlfsConfig;
use crate::conn;
use crate::factory::{refusal, OPEN_DEADLINE};

/// Bytes of pattern in one buffer of a WRITE SAME.
const PATTERN_BUF: usize = 64 << 10;

/// iovecs in one write of a WRITE SAME (4 MiB with [`PATTERN_BUF`]; gfapi
/// copies a write into one buffer of its own before sending it).
const PATTERN_IOVS: usize = 64;

/// A [`BlockHandler`] over a file in a Gluster volume.
#[derive(Debug)]
pub struct GlfsHandler {
    name: String,
    cfg: GlfsConfig,
    cfgstring: String,
    size: Cell<u64>,
    /// `None` once closed.
    file: RefCell<Option<Arc<File>>>,
    /// The volume answered "unreachable" to the last command.
    unreachable: Cell<bool>,
}

/// What an operation was, for error answers and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Read,
    Write,
    Flush,
    Discard,
    Zero,
}

/// Errors that mean "the volume is not reachable now": retried.
fn is_transient(errno: i32) -> bool {
    matches!(
        errno,
        libc::ENOTCONN
            | libc::ECONNREFUSED
            | libc::ECONNRESET
            | libc::ECONNABORTED
            | libc::ETIMEDOUT
            | libc::EHOSTUNREACH
            | libc::ENETUNREACH
            | libc::ENETDOWN
            | libc::ESHUTDOWN
            | libc::EAGAIN
            | libc::EBADFD
            | libc::ESTALE
    )
}

fn is_unsupported(errno: i32) -> bool {
    matches!(errno, libc::EOPNOTSUPP | libc::ENOSYS)
}

impl GlfsHandler {
    pub(crate) fn new(
        name: &str,
        cfg: GlfsConfig,
        cfgstring: &str,
        size: u64,
        file: Arc<File>,
    ) -> Self {
        Self {
            name: name.to_owned(),
            cfg,
            cfgstring: cfgstring.to_owned(),
            size: Cell::new(size),
            file: RefCell::new(Some(file)),
            unreachable: Cell::new(false),
        }
    }

    fn file(&self) -> Result<Arc<File>, BlockError> {
        self.file
            .borrow()
            .clone()
            .ok_or_else(|| BlockError::NotReady("glfs: device closing".into()))
    }

    /// The answer to a failed operation, logging a change of state.
    fn failed(&self, kind: Kind, errno: i32) -> BlockError {
        if is_transient(errno) {
            if !self.unreachable.replace(true) {
                warn!(
                    device = %self.name,
                    "glfs: {} unreachable ({kind:?}: {}): answering NOT READY until it is back",
                    self.cfg.spec(),
                    io::Error::from_raw_os_error(errno)
                );
            }
            return BlockError::Sense(Sense::becoming_ready());
        }
        warn!(
            device = %self.name,
            "glfs: {kind:?} on {} failed: {}",
            self.cfg.spec(),
            io::Error::from_raw_os_error(errno)
        );
        BlockError::Io(io::Error::from_raw_os_error(errno))
    }

    fn succeeded(&self) {
        if self.unreachable.replace(false) {
            info!(device = %self.name, "glfs: {} answers again", self.cfg.spec());
        }
    }

    /// Submits with `submit` and waits; the result's byte count and
    /// buffers, or the answer to the failure.
    async fn run(
        &self,
        kind: Kind,
        submit: impl FnOnce(&File) -> Result<Op, GlfsError>,
    ) -> Result<(u64, Vec<DataBuf>), BlockError> {
        let file = self.file()?;
        let op = submit(&file).map_err(|e| self.failed(kind, e.errno()))?;
        drop(file);
        let done = op.await;
        match done.result() {
            Ok(n) => {
                self.succeeded();
                Ok((n, done.bufs))
            }
            Err(errno) => Err(self.failed(kind, errno)),
        }
    }

    /// Writes `pattern` over `len` bytes at `offset`.
    async fn write_pattern(&self, offset: u64, len: u64, pattern: &[u8]) -> Result<(), BlockError> {
        let plen = pattern.len() as u64;
        if plen == 0 || len % plen != 0 {
            return Err(BlockError::Sense(Sense::invalid_field_in_cdb(1, None)));
        }
        let copies = (PATTERN_BUF as u64 / plen).max(1);
        let chunk = copies * plen;
        let mut at = offset;
        let end = offset + len;
        while at < end {
            let left = end - at;
            let (piece, times) = if left >= chunk {
                (chunk, (left / chunk).min(PATTERN_IOVS as u64))
            } else {
                (left, 1)
            };
            let bytes: Vec<u8> = pattern
                .iter()
                .copied()
                .cycle()
                .take(piece as usize)
                .collect();
            let want = piece * times;
            let (n, _) = self
                .run(Kind::Write, |f| {
                    f.aio_pwrite_repeated(at, bytes, times as usize)
                })
                .await?;
            if n != want {
                return Err(self.failed(Kind::Write, libc::EIO));
            }
            at += want;
        }
        Ok(())
    }
}

#[async_trait(?Send)]
impl BlockHandler for GlfsHandler {
    async fn read(&self, offset: u64, bufs: Vec<DataBuf>) -> Result<(), BlockError> {
        let want = buf::total_len(&bufs) as u64;
        let bufs: Vec<DataBuf> = bufs.into_iter().map(DataBuf::into_read_target).collect();
        let (n, mut bufs) = self.run(Kind::Read, |f| f.aio_preadv(offset, bufs)).await?;
        if n < want {
            // Beyond the end of a file someone shortened: zeroes, as a
            // sparse file reads.
            buf::zero_beyond(&mut bufs, n as usize);
        }
        Ok(())
    }

    async fn write(&self, offset: u64, bufs: Vec<DataBuf>) -> Result<(), BlockError> {
        let want = buf::total_len(&bufs) as u64;
        let (n, _) = self
            .run(Kind::Write, |f| f.aio_pwritev(offset, bufs))
            .await?;
        if n != want {
            return Err(self.failed(Kind::Write, libc::EIO));
        }
        Ok(())
    }

    async fn flush(&self) -> Result<(), BlockError> {
        self.run(Kind::Flush, File::aio_fdatasync).await?;
        Ok(())
    }

    fn cmd_timed_out(&self, cdb: &[u8]) {
        warn!(
            device = %self.name,
            "glfs: a command (opcode {:#04x}) on {} runs past the time-out",
            cdb.first().copied().unwrap_or(0),
            self.cfg.spec()
        );
    }

    async fn reconfig(&self, change: &ReconfigRequest) -> Result<(), HandlerError> {
        match change {
            ReconfigRequest::Size(new) => {
                let old = self.size.get();
                if *new < old {
                    return Err(HandlerError::refused(format!(
                        "glfs: shrinking {} from {old} to {new} bytes is not supported",
                        self.cfg.spec()
                    )));
                }
                let file = self
                    .file()
                    .map_err(|_| HandlerError::refused("glfs: device closing"))?;
                let (cfg, new) = (self.cfg.clone(), *new);
                let what = format!("glfs: growing {}", cfg.spec());
                blocking::run(move || {
                    conn::within(what, OPEN_DEADLINE, move || {
                        file.truncate(new).map_err(|e| refusal(&cfg, e))
                    })
                })
                .await
                .map_err(|e| HandlerError::refused(format!("glfs: {e}")))??;
                info!(device = %self.name, "glfs: {} grown from {old} to {new} bytes", self.cfg.spec());
                self.size.set(new);
                Ok(())
            }
            ReconfigRequest::Config(c) if *c != self.cfgstring => Err(HandlerError::refused(
                "glfs: changing the file of a running device is not supported",
            )),
            _ => Ok(()),
        }
    }

    async fn close(&self) {
        let file = self.file.borrow_mut().take();
        if let Some(file) = file {
            info!(device = %self.name, "glfs: closing {}", self.cfg.spec());
            // Closing waits for operations still in flight (of aborted
            // commands); the connection lingers for the next device.
            conn::release_file(file);
        }
    }
}

/// UNMAP is `glfs_discard`: a hole punched in the brick's file.
#[async_trait(?Send)]
impl Unmap for GlfsHandler {
    async fn unmap(&self, offset: u64, len: u64) -> Result<(), BlockError> {
        if len == 0 {
            return Ok(());
        }
        match self
            .run(Kind::Discard, |f| f.aio_discard(offset, len))
            .await
        {
            Err(BlockError::Io(e)) if e.raw_os_error().is_some_and(is_unsupported) => {
                info!(device = %self.name, "glfs: {}: the volume does not discard", self.cfg.spec());
                Err(BlockError::Unsupported)
            }
            r => r.map(|_| ()),
        }
    }

    fn unmap_params(&self) -> UnmapParams {
        // Bricks on other file systems may not punch holes: LBPRZ stays
        // clear.
        UnmapParams::default()
    }
}

/// WRITE SAME of zeroes is `glfs_zerofill`; other patterns are written.
#[async_trait(?Send)]
impl WriteSame for GlfsHandler {
    async fn write_same(&self, offset: u64, len: u64, pattern: &[u8]) -> Result<(), BlockError> {
        if len == 0 {
            return Ok(());
        }
        if pattern.iter().all(|&b| b == 0) {
            match self.run(Kind::Zero, |f| f.aio_zerofill(offset, len)).await {
                Err(BlockError::Io(e)) if e.raw_os_error().is_some_and(is_unsupported) => {}
                r => return r.map(|_| ()),
            }
        }
        self.write_pattern(offset, len, pattern).await
    }
}
