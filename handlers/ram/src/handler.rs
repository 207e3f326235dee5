//! The RAM disk: one device's bytes in a sparse [`Store`] on its worker
//! thread.
//!
//! The handler lives on the device's worker thread (thread-per-core), so the
//! store sits in a [`RefCell`]; no borrow is ever held across an `.await`
//! (there are none: every operation is a plain copy), so borrows never
//! conflict. Commands copy between the store and the ring's data area with
//! [`DataBuf::copy_from`] / [`DataBuf::copy_to`].

use std::cell::{RefCell, RefMut};
use std::io;

use async_trait::async_trait;
use tcmu_core::DataBuf;
use tcmu_runtime::{
    BlockError, BlockHandler, CompareAndWrite, CompareError, CopyOffload, ReconfigRequest, Unmap,
    WriteSame,
};
use tcmu_scsi::UnmapParams;

use crate::config::RamConfig;
use crate::store::Store;

/// A RAM-backed [`BlockHandler`]. Memory is allocated as data is written;
/// unmapped blocks read back as zeroes.
#[derive(Debug)]
pub struct RamHandler {
    store: RefCell<Store>,
}

/// The buffer holding byte `done` of a list laid end to end, and the
/// offset of that byte within it.
fn locate(bufs: &[DataBuf], done: usize) -> Option<(&DataBuf, usize)> {
    let mut start = 0;
    for b in bufs {
        if done < start + b.len() {
            return Some((b, done - start));
        }
        start += b.len();
    }
    None
}

impl RamHandler {
    /// A zero-filled RAM disk of `size` bytes (nothing is allocated until
    /// written).
    pub fn new(size: u64) -> Result<Self, String> {
        let store = Store::new(size).map_err(|e| format!("ram handler: {e}"))?;
        Ok(Self {
            store: RefCell::new(store),
        })
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

fn io_err(e: io::Error) -> BlockError {
    BlockError::Io(io::Error::new(e.kind(), format!("ram handler: {e}")))
}

#[async_trait(?Send)]
impl BlockHandler for RamHandler {
    async fn read(&self, offset: u64, bufs: Vec<DataBuf>) -> Result<(), BlockError> {
        let store = self.store()?;
        let total = tcmu_core::buf::total_len(&bufs) as u64;
        // Store pieces and buffers are split at different places: copy each
        // piece across however many buffers it spans.
        store
            .read(offset, total, |mut done, mut bytes| {
                while !bytes.is_empty() {
                    let Some((buf, at)) = locate(&bufs, done) else {
                        return;
                    };
                    let n = buf.copy_from(at, bytes);
                    if n == 0 {
                        return;
                    }
                    bytes = &bytes[n..];
                    done += n;
                }
            })
            .map_err(io_err)
    }

    async fn write(&self, offset: u64, bufs: Vec<DataBuf>) -> Result<(), BlockError> {
        let mut store = self.store()?;
        let total = tcmu_core::buf::total_len(&bufs) as u64;
        store
            .write(offset, total, |mut done, mut bytes| {
                while !bytes.is_empty() {
                    let Some((buf, at)) = locate(&bufs, done) else {
                        return;
                    };
                    let n = buf.copy_to(at, bytes);
                    if n == 0 {
                        return;
                    }
                    bytes = &mut bytes[n..];
                    done += n;
                }
            })
            .map_err(io_err)
    }

    async fn flush(&self) -> Result<(), BlockError> {
        Ok(())
    }

    fn as_unmap(&self) -> Option<&dyn Unmap> {
        Some(self)
    }

    fn as_write_same(&self) -> Option<&dyn WriteSame> {
        Some(self)
    }

    fn as_compare_and_write(&self) -> Option<&dyn CompareAndWrite> {
        Some(self)
    }

    fn as_copy_offload(&self) -> Option<&dyn CopyOffload> {
        Some(self)
    }

    async fn reconfig(&self, change: &ReconfigRequest) -> Result<(), String> {
        match change {
            ReconfigRequest::Size(size) => {
                tracing::info!(size, "ram handler: resizing");
                self.store
                    .try_borrow_mut()
                    .map_err(|_| "ram handler: store busy".to_owned())?
                    .resize(*size)
                    .map_err(|e| format!("ram handler: cannot resize to {size} bytes: {e}"))
            }
            ReconfigRequest::WriteCache(_) => Ok(()),
            ReconfigRequest::Config(cfg) => {
                let parsed = RamConfig::parse(cfg).map_err(|e| e.to_string())?;
                match parsed.size {
                    Some(size) if size != self.size() => Err(format!(
                        "ram handler: cannot resize through dev_config ({size} bytes requested, \
                         {} in use); change dev_size instead",
                        self.size()
                    )),
                    _ => Ok(()),
                }
            }
        }
    }

    async fn close(&self) {
        if let Ok(mut store) = self.store.try_borrow_mut() {
            *store = Store::default();
        }
    }
}

/// Unmapped blocks are freed and read back as zeroes.
#[async_trait(?Send)]
impl Unmap for RamHandler {
    async fn unmap(&self, offset: u64, len: u64) -> Result<(), BlockError> {
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

    use std::sync::Arc;

    use tcmu_core::Mapping;

    use super::*;

    fn bufs(map: &Arc<Mapping>, spans: &[(usize, usize)]) -> Vec<DataBuf> {
        spans
            .iter()
            .map(|&(off, len)| DataBuf::new(map.clone(), off, len).unwrap())
            .collect()
    }

    #[test]
    fn write_then_read_back() {
        tokio_uring::start(async {
            let h = RamHandler::new(1 << 20).unwrap();
            let map = Arc::new(Mapping::anonymous(64 << 10).unwrap());
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

    fn gather(map: &Mapping, off: usize, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        map.read(off, &mut v).unwrap();
        v
    }

    #[test]
    fn out_of_range_is_an_io_error() {
        tokio_uring::start(async {
            let h = RamHandler::new(8192).unwrap();
            let map = Arc::new(Mapping::anonymous(8192).unwrap());
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

            let map = Arc::new(Mapping::anonymous(16384).unwrap());
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
            let map = Arc::new(Mapping::anonymous(8192).unwrap());
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
            let map = Arc::new(Mapping::anonymous(4 << 20).unwrap());
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
}
