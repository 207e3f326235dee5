//! The RAM disk: one device's bytes in a sparse [`Store`] on its worker
//! thread.
//!
//! The handler lives on the device's worker thread (thread-per-core), so the
//! store sits in a [`RefCell`]; no borrow is ever held across an `.await`
//! (there are none: every operation is a plain copy), so borrows never
//! conflict. Commands copy between the store and the ring's data area with
//! [`DataBuf::copy_from`] / [`DataBuf::copy_to`].
//!
//! Injected faults ([`FaultSet`]) are checked before an access touches the
//! store, so a failed write writes nothing. The only awaits are an injected
//! delay and an injected hang, both before any borrow: dropping a delayed
//! or hung command's future at any point (a TMR abort, a timeout) leaves
//! the store as it was. Short reads change the answer to a READ command,
//! so they are served from [`CommandHook::handle_cmd`], which wants
//! commands only while such faults are armed.

use std::cell::{Cell, RefCell, RefMut};
use std::io;

use async_trait::async_trait;
use tcmu_core::DataBuf;
use tcmu_runtime::{
    BlockError, BlockHandler, CmdOutcome, CmdReply, CommandHook, CompareAndWrite, CompareError,
    CopyOffload, HandlerError, ReconfigRequest, ScsiCmd, Unmap, WriteSame,
};
use tcmu_scsi::{Command, UnmapParams};

use crate::config::RamConfig;
use crate::faults::{Access, Effect, FaultSet, Verdict};
use crate::store::Store;

/// A RAM-backed [`BlockHandler`]. Memory is allocated as data is written;
/// unmapped blocks read back as zeroes.
#[derive(Debug)]
pub struct RamHandler {
    store: RefCell<Store>,
    /// The device's name, for logs.
    name: String,
    /// Logical block size in bytes: the unit of fault ranges and CDBs.
    block_size: u64,
    /// The device's size in bytes (the store may be larger).
    device_size: Cell<u64>,
    /// The faults injected; replaced whole, never borrowed across an
    /// `.await`.
    faults: RefCell<FaultSet>,
}

impl RamHandler {
    /// A zero-filled RAM disk of `size` bytes (nothing is allocated until
    /// written), for a device of the same size with 512-byte blocks and no
    /// faults.
    pub fn new(size: u64) -> Result<Self, HandlerError> {
        let store =
            Store::new(size).map_err(|e| HandlerError::refused(format!("ram handler: {e}")))?;
        Ok(Self {
            store: RefCell::new(store),
            name: String::new(),
            block_size: 512,
            device_size: Cell::new(size),
            faults: RefCell::default(),
        })
    }

    /// The same disk serving a device of `device_size` bytes in
    /// `block_size`-byte logical blocks.
    pub fn with_geometry(mut self, device_size: u64, block_size: u32) -> Self {
        self.device_size.set(device_size);
        self.block_size = u64::from(block_size.max(1));
        self
    }

    /// The same disk, logging as device `name`.
    pub fn named(mut self, name: &str) -> Self {
        self.name = name.to_owned();
        self
    }

    /// The same disk injecting `faults`.
    pub fn with_faults(self, faults: FaultSet) -> Self {
        self.set_faults(faults);
        self
    }

    /// Replaces the injected faults (commands already waiting out a delay
    /// see the new ones; hung commands stay hung).
    pub fn set_faults(&self, faults: FaultSet) {
        if let Ok(mut current) = self.faults.try_borrow_mut() {
            *current = faults;
        }
    }

    /// The faults injected now.
    pub fn faults(&self) -> FaultSet {
        self.faults
            .try_borrow()
            .map(|f| f.clone())
            .unwrap_or_default()
    }

    /// The current size in bytes.
    pub fn size(&self) -> u64 {
        self.store.try_borrow().map_or(0, |s| s.size())
    }

    /// Bytes of memory currently allocated for data.
    pub fn allocated(&self) -> usize {
        self.store.try_borrow().map_or(0, |s| s.allocated())
    }

    fn store(&self) -> Result<RefMut<'_, Store>, BlockError> {
        self.store
            .try_borrow_mut()
            .map_err(|_| BlockError::NotReady("ram handler: store busy".into()))
    }
}

impl RamHandler {
    /// The blocks that bytes `offset..offset + len` touch, as (first,
    /// count).
    fn blocks_of(&self, offset: u64, len: u64) -> (u64, u64) {
        let first = offset / self.block_size;
        if len == 0 {
            return (first, 0);
        }
        let last = offset.saturating_add(len - 1) / self.block_size;
        (first, last - first + 1)
    }

    /// Refuses faults that could never apply to this device.
    pub(crate) fn check_faults(&self, faults: &FaultSet) -> Result<(), HandlerError> {
        let blocks = self.device_size.get() / self.block_size;
        match faults.outside(blocks) {
            Some(f) => Err(HandlerError::invalid_config(format!(
                "ram handler: {f} starts beyond the device's last block ({})",
                blocks.saturating_sub(1)
            ))),
            None => Ok(()),
        }
    }

    /// Carries out the injected faults for an access of `len` bytes at
    /// byte `offset`, before it touches the store: waits out the delay,
    /// then lets it proceed (`Ok`), fails it, hangs (never returns) or
    /// panics. Cancellation-safe: it holds nothing across its awaits.
    async fn inject(&self, access: Access, offset: u64, len: u64) -> Result<(), BlockError> {
        let delay = match self.faults.try_borrow() {
            Ok(f) if f.is_empty() => return Ok(()),
            Ok(f) => f.delay,
            Err(_) => None,
        };
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
        let (lba, blocks) = self.blocks_of(offset, len);
        let verdict = self
            .faults
            .try_borrow()
            .map_or(Verdict::Serve, |f| f.for_access(access, lba, blocks));
        match verdict {
            Verdict::Serve => Ok(()),
            Verdict::NotReady => Err(not_ready()),
            Verdict::Hit { fault, lba } => match fault.effect {
                Effect::Fail => Err(BlockError::IoAt {
                    lba,
                    source: io::Error::other(format!("ram handler: injected fault {fault}")),
                }),
                Effect::Hang => {
                    tracing::debug!(device = %self.name, "ram handler: injected fault {fault}: LBA {lba} hangs");
                    std::future::pending().await
                }
                // Deliberate: proves that a panicking handler fails only
                // its own command.
                Effect::Panic => panic!("ram handler: injected fault {fault}: panic at LBA {lba}"),
                // Never a verdict for a plain access (see `handle_cmd`).
                Effect::Short => Ok(()),
            },
        }
    }

    /// Serves a READ command that an injected `short_read` cuts short:
    /// `None` when none does (the generic layer then serves it, and
    /// answers commands out of range).
    async fn short_read(&self, cmd: &mut ScsiCmd) -> Option<CmdReply> {
        let Ok(Command::Read { lba, blocks, .. }) = tcmu_scsi::decode(cmd.cdb()) else {
            return None;
        };
        let blocks = u64::from(blocks);
        let device_blocks = self.device_size.get() / self.block_size;
        if lba.checked_add(blocks)? > device_blocks {
            return None;
        }
        let (delay, verdict) = {
            let f = self.faults.try_borrow().ok()?;
            (f.delay, f.for_read_command(lba, blocks))
        };
        let cut = match verdict {
            Verdict::Hit { fault, lba: cut } if fault.effect == Effect::Short => cut,
            _ => return None,
        };
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
        if cut == lba {
            // No block to return, and a GOOD answer cannot say so: the
            // kernel ignores a read_len of 0 and would hand the initiator
            // the whole (zeroed) buffer.
            return Some(CmdReply::check(
                tcmu_scsi::Sense::medium_error_read().with_information(lba),
            ));
        }
        // Only blocks before the cut: no other fault lies there (the
        // lowest faulty block decides).
        let len = usize::try_from((cut - lba).checked_mul(self.block_size)?).ok()?;
        let len = len.min(cmd.data_len());
        let copied = self.store.try_borrow().map_err(|_| ()).and_then(|store| {
            copy_out(&store, lba * self.block_size, len, cmd.data_mut()).map_err(|_| ())
        });
        Some(match copied {
            Ok(()) => CmdReply::filled(cmd.data_mut(), len),
            Err(()) => CmdReply::check(tcmu_scsi::Sense::medium_error_read()),
        })
    }
}

/// NOT READY, as the `not_ready` fault answers.
fn not_ready() -> BlockError {
    BlockError::NotReady("ram handler: injected fault not_ready".into())
}

/// Copies `len` bytes of the store from `offset` into `bufs` laid end to
/// end.
fn copy_out(store: &Store, offset: u64, len: usize, bufs: &mut [DataBuf]) -> io::Result<()> {
    // Store pieces and buffers are split at different places: each piece
    // goes across however many buffers it spans.
    store.read(offset, len as u64, |done, bytes| {
        tcmu_core::buf::copy_into(bufs, done, bytes);
    })
}

fn io_err(e: io::Error) -> BlockError {
    BlockError::Io(io::Error::new(e.kind(), format!("ram handler: {e}")))
}

impl RamHandler {
    /// Whether no fault is armed, so that an access needs no `inject`.
    fn healthy(&self) -> bool {
        self.faults.try_borrow().is_ok_and(|f| f.is_empty())
    }

    /// Copies the bytes at `offset` into `bufs`.
    fn read_sync(&self, offset: u64, bufs: &mut [DataBuf]) -> Result<(), BlockError> {
        let total = tcmu_core::buf::total_len(bufs);
        copy_out(&*self.store()?, offset, total, bufs).map_err(io_err)
    }

    /// Copies `bufs` into the store at `offset`.
    fn write_sync(&self, offset: u64, bufs: &[DataBuf]) -> Result<(), BlockError> {
        let total = tcmu_core::buf::total_len(bufs) as u64;
        let mut store = self.store()?;
        store
            .write(offset, total, |done, bytes| {
                tcmu_core::buf::copy_out_of(bufs, done, bytes);
            })
            .map_err(io_err)
    }
}

#[async_trait(?Send)]
impl BlockHandler for RamHandler {
    async fn read(&self, offset: u64, mut bufs: Vec<DataBuf>) -> Result<(), BlockError> {
        let total = tcmu_core::buf::total_len(&bufs);
        self.inject(Access::Read, offset, total as u64).await?;
        self.read_sync(offset, &mut bufs)
    }

    async fn write(&self, offset: u64, bufs: Vec<DataBuf>) -> Result<(), BlockError> {
        let total = tcmu_core::buf::total_len(&bufs) as u64;
        self.inject(Access::Write, offset, total).await?;
        self.write_sync(offset, &bufs)
    }

    fn read_now(&self, offset: u64, bufs: &mut [DataBuf]) -> Option<Result<(), BlockError>> {
        // With faults armed, `read` applies them.
        self.healthy().then(|| self.read_sync(offset, bufs))
    }

    fn write_now(&self, offset: u64, bufs: &[DataBuf]) -> Option<Result<(), BlockError>> {
        self.healthy().then(|| self.write_sync(offset, bufs))
    }

    async fn flush(&self) -> Result<(), BlockError> {
        match self.faults.try_borrow() {
            Ok(f) if f.not_ready => Err(not_ready()),
            _ => Ok(()),
        }
    }

    async fn reconfig(&self, change: &ReconfigRequest) -> Result<(), HandlerError> {
        match change {
            ReconfigRequest::Size(size) => {
                tracing::info!(device = %self.name, size, "ram handler: resizing");
                self.store
                    .try_borrow_mut()
                    .map_err(|_| HandlerError::refused("ram handler: store busy"))?
                    .resize(*size)
                    .map_err(|e| {
                        HandlerError::refused(format!(
                            "ram handler: cannot resize to {size} bytes: {e}"
                        ))
                    })?;
                self.device_size.set(*size);
                Ok(())
            }
            ReconfigRequest::Config(cfg) => {
                let parsed = RamConfig::parse(cfg).map_err(HandlerError::invalid_config)?;
                if let Some(size) = parsed.size.filter(|size| *size != self.size()) {
                    return Err(HandlerError::refused(format!(
                        "ram handler: cannot resize through dev_config ({size} bytes \
                         requested, {} in use); change dev_size instead",
                        self.size()
                    )));
                }
                self.check_faults(&parsed.faults)?;
                if parsed.faults != self.faults() {
                    if parsed.faults.is_empty() {
                        tracing::info!(device = %self.name, "ram handler: no faults injected any more");
                    } else {
                        tracing::warn!(device = %self.name, "ram handler: injecting faults: {}", parsed.faults);
                    }
                }
                self.set_faults(parsed.faults);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    async fn close(&self) {
        if let Ok(mut store) = self.store.try_borrow_mut() {
            *store = Store::default();
        }
    }
}

/// Armed faults that change a command's answer: short reads, not ready.
#[async_trait(?Send)]
impl CommandHook for RamHandler {
    async fn handle_cmd(&self, mut cmd: ScsiCmd) -> CmdOutcome {
        let (short_reads, not_ready) = match self.faults.try_borrow() {
            Ok(f) => (f.has_short_reads(), f.not_ready),
            Err(_) => return CmdOutcome::NotHandled(cmd),
        };
        // A device that is not ready says so to TEST UNIT READY too: that
        // is what path checkers (multipath's tur) ask.
        if not_ready && cmd.opcode() == tcmu_scsi::opcode::TEST_UNIT_READY {
            return CmdOutcome::Done(CmdReply::check(tcmu_scsi::Sense::not_ready()));
        }
        if short_reads {
            if let Some(reply) = self.short_read(&mut cmd).await {
                return CmdOutcome::Done(reply);
            }
        }
        CmdOutcome::NotHandled(cmd)
    }

    /// Only while faults are armed (short reads, not ready): a healthy
    /// device's commands go straight to the generic layer.
    fn wants(&self, _cdb: &[u8]) -> bool {
        !self.healthy()
    }
}

/// Unmapped blocks are freed and read back as zeroes.
#[async_trait(?Send)]
impl Unmap for RamHandler {
    async fn unmap(&self, offset: u64, len: u64) -> Result<(), BlockError> {
        self.inject(Access::Write, offset, len).await?;
        self.store()?.zero(offset, len).map_err(io_err)
    }

    fn unmap_params(&self) -> UnmapParams {
        UnmapParams {
            reads_zeroes: true,
            ..UnmapParams::default()
        }
    }
}

/// Zeroes free memory; other patterns are written in place.
#[async_trait(?Send)]
impl WriteSame for RamHandler {
    async fn write_same(&self, offset: u64, len: u64, pattern: &[u8]) -> Result<(), BlockError> {
        if pattern.is_empty() {
            return Err(BlockError::Io(io::Error::new(
                io::ErrorKind::InvalidInput,
                "ram handler: empty WRITE SAME pattern",
            )));
        }
        self.inject(Access::Write, offset, len).await?;
        let mut store = self.store()?;
        if pattern.iter().all(|&b| b == 0) {
            return store.zero(offset, len).map_err(io_err);
        }
        store
            .write(offset, len, |done, bytes| {
                // Keep the pattern's phase across pieces.
                let mut phase = done % pattern.len();
                let mut i = 0;
                while i < bytes.len() {
                    let n = (pattern.len() - phase).min(bytes.len() - i);
                    bytes[i..i + n].copy_from_slice(&pattern[phase..phase + n]);
                    i += n;
                    phase = 0;
                }
            })
            .map_err(io_err)
    }
}

/// Atomic by construction: the compare and the write happen in one
/// synchronous step on the device's thread.
#[async_trait(?Send)]
impl CompareAndWrite for RamHandler {
    async fn compare_and_write(
        &self,
        offset: u64,
        compare: &[u8],
        write: Vec<DataBuf>,
    ) -> Result<(), CompareError> {
        self.inject(Access::Read, offset, compare.len() as u64)
            .await?;
        let mut current = vec![0u8; compare.len()];
        self.store()?
            .read(offset, compare.len() as u64, |at, bytes| {
                current[at..at + bytes.len()].copy_from_slice(bytes);
            })
            .map_err(io_err)?;
        if let Some(at) = current.iter().zip(compare).position(|(a, b)| a != b) {
            return Err(CompareError::Miscompare(at as u64));
        }
        Ok(self.write(offset, write).await?)
    }
}

/// A copy inside the RAM disk is a memory copy.
#[async_trait(?Send)]
impl CopyOffload for RamHandler {
    async fn copy(&self, src: u64, dst: u64, len: u64) -> Result<(), BlockError> {
        let n = usize::try_from(len).map_err(|_| io_err(io::ErrorKind::InvalidInput.into()))?;
        self.inject(Access::Read, src, len).await?;
        self.inject(Access::Write, dst, len).await?;
        let mut bytes = vec![0u8; n];
        let mut store = self.store()?;
        store
            .read(src, len, |at, piece| {
                bytes[at..at + piece.len()].copy_from_slice(piece);
            })
            .map_err(io_err)?;
        store
            .write(dst, len, |at, piece| {
                let n = piece.len();
                piece.copy_from_slice(&bytes[at..at + n]);
            })
            .map_err(io_err)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use tcmu_core::ScratchArea;

    use super::*;

    fn bufs(map: &ScratchArea, spans: &[(usize, usize)]) -> Vec<DataBuf> {
        spans
            .iter()
            .map(|&(off, len)| map.lend(off, len).unwrap())
            .collect()
    }

    #[test]
    fn write_then_read_back() {
        tokio_uring::start(async {
            let h = RamHandler::new(1 << 20).unwrap();
            let map = ScratchArea::new(64 << 10).unwrap();
            let data: Vec<u8> = (0..12288u32).map(|i| (i % 251) as u8).collect();
            map.write(0, &data).unwrap();
            h.write(8192, bufs(&map, &[(0, 4096), (4096, 512), (4608, 7680)]))
                .await
                .unwrap();

            map.fill(16384, 12288, 0xee).unwrap();
            h.read(8192, bufs(&map, &[(16384, 1000), (20000, 11288)]))
                .await
                .unwrap();
            let mut got = vec![0u8; 1000];
            map.read(16384, &mut got).unwrap();
            assert_eq!(got, data[..1000]);
            let mut got = vec![0u8; 11288];
            map.read(20000, &mut got).unwrap();
            assert_eq!(got, data[1000..]);

            // Untouched memory reads as zeroes.
            map.fill(0, 4096, 0xee).unwrap();
            h.read(0, bufs(&map, &[(0, 4096)])).await.unwrap();
            assert!(gather(&map, 0, 4096).iter().all(|&b| b == 0));
        });
    }

    fn gather(map: &ScratchArea, off: usize, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        map.read(off, &mut v).unwrap();
        v
    }

    #[test]
    fn out_of_range_is_an_io_error() {
        tokio_uring::start(async {
            let h = RamHandler::new(8192).unwrap();
            let map = ScratchArea::new(8192).unwrap();
            let err = h.write(4096, bufs(&map, &[(0, 8192)])).await.unwrap_err();
            assert!(matches!(err, BlockError::Io(_)), "{err}");
            let err = h.read(u64::MAX, bufs(&map, &[(0, 1)])).await.unwrap_err();
            assert!(matches!(err, BlockError::Io(_)), "{err}");
        });
    }

    #[test]
    fn unmap_zeroes_and_write_same_repeats() {
        tokio_uring::start(async {
            let h = RamHandler::new(65536).unwrap();
            assert!(h.unmap_params().reads_zeroes);
            h.write_same(0, 65536, &[0xab; 512]).await.unwrap();
            h.unmap(4096, 8192).await.unwrap();

            let map = ScratchArea::new(16384).unwrap();
            h.read(0, bufs(&map, &[(0, 16384)])).await.unwrap();
            let got = gather(&map, 0, 16384);
            assert!(got[..4096].iter().all(|&b| b == 0xab));
            assert!(got[4096..12288].iter().all(|&b| b == 0));
            assert!(got[12288..].iter().all(|&b| b == 0xab));

            let pattern: Vec<u8> = (0..=255u8).collect();
            h.write_same(1024, 1024, &pattern).await.unwrap();
            h.read(1024, bufs(&map, &[(0, 1024)])).await.unwrap();
            let got = gather(&map, 0, 1024);
            for (i, b) in got.iter().enumerate() {
                assert_eq!(*b, i as u8);
            }
        });
    }

    #[test]
    fn reconfig_resizes() {
        tokio_uring::start(async {
            let h = RamHandler::new(4096).unwrap();
            h.write_same(0, 4096, &[7; 512]).await.unwrap();
            h.reconfig(&ReconfigRequest::Size(8192)).await.unwrap();
            assert_eq!(h.size(), 8192);
            let map = ScratchArea::new(8192).unwrap();
            h.read(0, bufs(&map, &[(0, 8192)])).await.unwrap();
            let got = gather(&map, 0, 8192);
            assert!(got[..4096].iter().all(|&b| b == 7));
            assert!(got[4096..].iter().all(|&b| b == 0));
            h.reconfig(&ReconfigRequest::Size(2048)).await.unwrap();
            assert_eq!(h.size(), 2048);
            assert!(h.reconfig(&ReconfigRequest::WriteCache(true)).await.is_ok());
            assert!(h
                .reconfig(&ReconfigRequest::Config("2K".into()))
                .await
                .is_ok());
            assert!(h
                .reconfig(&ReconfigRequest::Config("1M".into()))
                .await
                .is_err());
            assert!(h
                .reconfig(&ReconfigRequest::Config("junk".into()))
                .await
                .is_err());
        });
    }

    #[test]
    fn buffers_and_chunks_split_at_different_places() {
        tokio_uring::start(async {
            let chunk = crate::store::CHUNK;
            let h = RamHandler::new(4 * chunk as u64).unwrap();
            assert_eq!(h.allocated(), 0);
            let map = ScratchArea::new(4 << 20).unwrap();
            let data: Vec<u8> = (0..3 * chunk as u32).map(|i| (i % 241) as u8).collect();
            map.write(0, &data).unwrap();
            let off = chunk as u64 - 777;
            h.write(
                off,
                bufs(
                    &map,
                    &[(0, 1000), (1000, chunk), (1000 + chunk, 2 * chunk - 1000)],
                ),
            )
            .await
            .unwrap();
            assert_eq!(h.allocated(), 4 * chunk);
            map.fill(0, 4 << 20, 0xee).unwrap();
            h.read(off, bufs(&map, &[(0, 5), (5, 3 * chunk - 5)]))
                .await
                .unwrap();
            assert_eq!(gather(&map, 0, 3 * chunk), data);

            // Unmapping whole chunks frees them.
            h.unmap(chunk as u64, 2 * chunk as u64).await.unwrap();
            assert_eq!(h.allocated(), 2 * chunk);

            // A pattern whose length does not divide the chunk keeps its
            // phase across the chunk boundary.
            let pattern: Vec<u8> = (1..=7u8).collect();
            h.write_same(off, 7 * 1000, &pattern).await.unwrap();
            h.read(off, bufs(&map, &[(0, 7000)])).await.unwrap();
            for (i, b) in gather(&map, 0, 7000).iter().enumerate() {
                assert_eq!(*b, pattern[i % 7], "byte {i}");
            }
            // All-zero WRITE SAME frees instead of writing.
            h.write_same(0, 4 * chunk as u64, &[0; 512]).await.unwrap();
            assert_eq!(h.allocated(), 0);
        });
    }

    fn with_faults(size: u64, block_size: u32, cfg: &str) -> RamHandler {
        let faults = RamConfig::parse(cfg).unwrap().faults;
        RamHandler::new(size)
            .unwrap()
            .with_geometry(size, block_size)
            .with_faults(faults)
    }

    fn read10(lba: u32, blocks: u16) -> [u8; 10] {
        let mut cdb = [0x28, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        cdb[2..6].copy_from_slice(&lba.to_be_bytes());
        cdb[7..9].copy_from_slice(&blocks.to_be_bytes());
        cdb
    }

    #[test]
    fn failed_accesses_report_the_first_bad_block_and_write_nothing() {
        tokio_uring::start(async {
            let h = with_faults(1 << 20, 4096, "fail_read=10-11;fail_write=20");
            let map = ScratchArea::new(64 << 10).unwrap();
            map.fill(0, 64 << 10, 0x5a).unwrap();
            // Blocks 8..16 (4096-byte blocks): the first failing one is 10.
            let err = h.read(8 * 4096, bufs(&map, &[(0, 32768)])).await;
            assert!(
                matches!(err, Err(BlockError::IoAt { lba: 10, .. })),
                "{err:?}"
            );
            let err = h.write(18 * 4096, bufs(&map, &[(0, 16384)])).await;
            assert!(
                matches!(err, Err(BlockError::IoAt { lba: 20, .. })),
                "{err:?}"
            );
            assert_eq!(h.allocated(), 0, "a failed write wrote nothing");
            // Around the ranges everything works; a write to a read-only
            // fault's range works too.
            let scratch = ScratchArea::new(32768).unwrap();
            h.read(12 * 4096, bufs(&scratch, &[(0, 32768)]))
                .await
                .unwrap();
            h.write(0, bufs(&map, &[(0, 40960)])).await.unwrap();
            h.write(10 * 4096, bufs(&map, &[(0, 8192)])).await.unwrap();
            // Every other way in and out is covered too.
            assert!(matches!(
                h.unmap(20 * 4096, 4096).await,
                Err(BlockError::IoAt { lba: 20, .. })
            ));
            assert!(matches!(
                h.write_same(19 * 4096, 8192, &[1; 4096]).await,
                Err(BlockError::IoAt { lba: 20, .. })
            ));
            assert!(matches!(
                h.copy(10 * 4096, 30 * 4096, 4096).await,
                Err(BlockError::IoAt { lba: 10, .. })
            ));
            assert!(matches!(
                h.compare_and_write(11 * 4096, &[0; 4096], bufs(&map, &[(0, 4096)]))
                    .await,
                Err(CompareError::Block(BlockError::IoAt { lba: 11, .. }))
            ));
            // Clearing the faults keeps the data.
            h.reconfig(&ReconfigRequest::Config(String::new()))
                .await
                .unwrap();
            assert!(h.faults().is_empty());
            map.fill(0, 16384, 0).unwrap();
            h.read(8 * 4096, bufs(&map, &[(0, 16384)])).await.unwrap();
            assert!(gather(&map, 0, 16384).iter().all(|&b| b == 0x5a));
        });
    }

    #[test]
    fn not_ready_answers_reads_writes_and_flushes() {
        tokio_uring::start(async {
            let h = with_faults(65536, 512, "not_ready");
            let map = ScratchArea::new(4096).unwrap();
            for r in [
                h.read(0, bufs(&map, &[(0, 512)])).await,
                h.write(0, bufs(&map, &[(0, 512)])).await,
                h.flush().await,
            ] {
                assert!(matches!(r, Err(BlockError::NotReady(_))), "{r:?}");
            }
        });
    }

    #[test]
    fn delays_every_read_and_write() {
        tokio_uring::start(async {
            let h = with_faults(65536, 512, "delay_ms=60");
            let map = ScratchArea::new(4096).unwrap();
            let start = std::time::Instant::now();
            h.write(0, bufs(&map, &[(0, 512)])).await.unwrap();
            h.read(0, bufs(&map, &[(0, 512)])).await.unwrap();
            assert!(start.elapsed() >= std::time::Duration::from_millis(120));
            assert!(h.flush().await.is_ok(), "flush is not delayed");
        });
    }

    #[test]
    fn a_hung_access_stays_pending_and_is_safe_to_drop() {
        use futures::FutureExt;

        tokio_uring::start(async {
            let h = with_faults(65536, 512, "hang_read=4;hang_write=6-7;delay_ms=1");
            let map = ScratchArea::new(3 * 4096).unwrap();
            map.fill(0, 3 * 4096, 0x33).unwrap();
            let mut read = h.read(0, bufs(&map, &[(0, 4096)]));
            let mut write = h.write(0, bufs(&map, &[(4096, 4096)]));
            // Past the delay, both reach their hang and stay there.
            tokio::time::sleep(std::time::Duration::from_millis(30)).await;
            for _ in 0..3 {
                assert!((&mut read).now_or_never().is_none());
                assert!((&mut write).now_or_never().is_none());
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            // Meanwhile other blocks are served.
            h.write(4096, bufs(&map, &[(8192, 4096)])).await.unwrap();
            drop(read);
            drop(write);
            // Dropped: nothing was written, nothing is held.
            assert_eq!(h.allocated(), 4096 * 256, "only the other write allocated");
            h.set_faults(FaultSet::default());
            h.read(0, bufs(&map, &[(0, 4096)])).await.unwrap();
            assert!(gather(&map, 0, 4096).iter().all(|&b| b == 0));
        });
    }

    #[test]
    fn an_injected_panic_unwinds() {
        use futures::FutureExt;
        use std::panic::AssertUnwindSafe;

        tokio_uring::start(async {
            let h = with_faults(65536, 512, "panic_write=3");
            let map = ScratchArea::new(4096).unwrap();
            let r = AssertUnwindSafe(h.write(1024, bufs(&map, &[(0, 1024)])))
                .catch_unwind()
                .await;
            let msg = r.unwrap_err();
            let msg = msg.downcast_ref::<String>().unwrap();
            assert!(msg.contains("panic_write=3: panic at LBA 3"), "{msg}");
            // The handler is intact afterwards.
            h.write(0, bufs(&map, &[(0, 1024)])).await.unwrap();
        });
    }

    fn cmd(cdb: &[u8], data: Vec<DataBuf>) -> ScsiCmd {
        ScsiCmd::new(tcmu_core::Cdb::from_slice(cdb), data)
    }

    fn answered(outcome: CmdOutcome) -> CmdReply {
        match outcome {
            CmdOutcome::Done(reply) => reply,
            CmdOutcome::NotHandled(c) => panic!("not handled: {:?}", c.cdb()),
        }
    }

    #[test]
    fn short_reads_answer_read_commands_with_a_residual() {
        tokio_uring::start(async {
            let h = with_faults(65536, 512, "short_read=10-19;fail_read=12");
            let map = ScratchArea::new(16384).unwrap();
            let data: Vec<u8> = (0..8192u32).map(|i| (i % 253) as u8).collect();
            map.write(0, &data).unwrap();
            h.write(4 * 512, bufs(&map, &[(0, 8192)])).await.unwrap();

            // Blocks 4..20: the first 6 come back.
            map.fill(0, 16384, 0xee).unwrap();
            let data_in = || bufs(&map, &[(0, 1000), (1000, 7192)]);
            let reply = answered(h.handle_cmd(cmd(&read10(4, 16), data_in())).await);
            assert_eq!(reply.status, tcmu_scsi::Status::Good);
            assert_eq!(reply.read_len, Some(6 * 512));
            assert_eq!(gather(&map, 0, 3072), data[..3072]);
            assert!(
                gather(&map, 3072, 8192 - 3072).iter().all(|&b| b == 0),
                "the rest of the buffers is zeroed"
            );

            // Starting inside the range: no block to return, so MEDIUM
            // ERROR at its first block.
            let mut first = data_in();
            first.truncate(1);
            let reply = answered(h.handle_cmd(cmd(&read10(10, 1), first)).await);
            assert_eq!(
                reply,
                CmdReply::check(tcmu_scsi::Sense::medium_error_read().with_information(10))
            );

            // Not touching it, past the end of the device, not a READ:
            // the generic layer's, with every buffer.
            for cdb in [&read10(0, 10)[..], &read10(127, 2)[..], &[0u8; 6][..]] {
                match h.handle_cmd(cmd(cdb, data_in())).await {
                    CmdOutcome::NotHandled(c) => assert_eq!(c.data_len(), 8192),
                    CmdOutcome::Done(r) => panic!("{cdb:?} answered: {r:?}"),
                }
            }
            // A plain read ignores short reads (it cannot return fewer
            // bytes) but not the failure inside the range.
            let err = h.read(10 * 512, bufs(&map, &[(8192, 2048)])).await;
            assert!(
                matches!(err, Err(BlockError::IoAt { lba: 12, .. })),
                "{err:?}"
            );
        });
    }

    #[test]
    fn reconfig_replaces_faults_but_not_the_size() {
        tokio_uring::start(async {
            let h = with_faults(65536, 512, "fail_read=1");
            let err = h
                .reconfig(&ReconfigRequest::Config("64K;fail_write=128".into()))
                .await
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("fail_write=128 starts beyond the device's last block (127)"),
                "{err}"
            );
            let err = h
                .reconfig(&ReconfigRequest::Config("fail_writ=1".into()))
                .await
                .unwrap_err()
                .to_string();
            assert!(err.contains("unknown option 'fail_writ'"), "{err}");
            assert_eq!(
                h.faults().to_string(),
                "fail_read=1",
                "refusals change nothing"
            );
            h.reconfig(&ReconfigRequest::Config("64K;not_ready".into()))
                .await
                .unwrap();
            assert_eq!(h.faults().to_string(), "not_ready");
            h.reconfig(&ReconfigRequest::Size(32768)).await.unwrap();
            assert!(h
                .reconfig(&ReconfigRequest::Config("fail_read=64".into()))
                .await
                .is_err());
        });
    }
}
