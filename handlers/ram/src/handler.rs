//! The RAM disk: one device's bytes in a vector on its worker thread.
//!
//! The handler lives on the device's worker thread (thread-per-core), so the
//! memory sits in a [`RefCell`]; no borrow is ever held across an `.await`
//! (there are none: every operation is a plain copy), so borrows never
//! conflict. Commands copy between the vector and the ring's data area with
//! [`DataBuf::copy_from`] / [`DataBuf::copy_to`].

use std::cell::{RefCell, RefMut};
use std::io;
use std::ops::Range;

use async_trait::async_trait;
use tcmu_core::DataBuf;
use tcmu_runtime::{BlockError, BlockHandler, ReconfigRequest};
use tcmu_scsi::UnmapParams;

use crate::config::RamConfig;

/// A RAM-backed [`BlockHandler`]. Unmapped blocks read back as zeroes.
#[derive(Debug)]
pub struct RamHandler {
    mem: RefCell<Vec<u8>>,
}

impl RamHandler {
    /// A zero-filled RAM disk of `size` bytes.
    pub fn new(size: u64) -> Result<Self, String> {
        let len = usize::try_from(size)
            .map_err(|_| format!("ram handler: {size} bytes do not fit in memory"))?;
        let mut mem = Vec::new();
        mem.try_reserve_exact(len)
            .map_err(|e| format!("ram handler: cannot allocate {size} bytes: {e}"))?;
        mem.resize(len, 0);
        Ok(Self {
            mem: RefCell::new(mem),
        })
    }

    /// The current size in bytes.
    pub fn size(&self) -> u64 {
        self.mem.try_borrow().map_or(0, |m| m.len() as u64)
    }

    fn mem(&self) -> Result<RefMut<'_, Vec<u8>>, BlockError> {
        self.mem
            .try_borrow_mut()
            .map_err(|_| BlockError::NotReady("ram handler: memory busy".into()))
    }

    fn resize(&self, size: u64) -> Result<(), String> {
        let len = usize::try_from(size)
            .map_err(|_| format!("ram handler: {size} bytes do not fit in memory"))?;
        let mut mem = self
            .mem
            .try_borrow_mut()
            .map_err(|_| "ram handler: memory busy".to_owned())?;
        if len > mem.len() {
            let extra = len - mem.len();
            mem.try_reserve_exact(extra)
                .map_err(|e| format!("ram handler: cannot grow to {size} bytes: {e}"))?;
        }
        mem.resize(len, 0);
        mem.shrink_to_fit();
        Ok(())
    }
}

/// `[offset, offset + len)` as a range of `mem`, or an I/O error if it
/// leaves the disk.
fn range(mem: &[u8], offset: u64, len: u64) -> Result<Range<usize>, BlockError> {
    let out = || {
        BlockError::Io(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "ram handler: {len} bytes at offset {offset} are beyond the end ({} bytes)",
                mem.len()
            ),
        ))
    };
    let start = usize::try_from(offset).map_err(|_| out())?;
    let len = usize::try_from(len).map_err(|_| out())?;
    let end = start.checked_add(len).ok_or_else(out)?;
    if end > mem.len() {
        return Err(out());
    }
    Ok(start..end)
}

#[async_trait(?Send)]
impl BlockHandler for RamHandler {
    async fn read(&self, offset: u64, bufs: Vec<DataBuf>) -> Result<(), BlockError> {
        let mem = self.mem()?;
        let total = tcmu_core::buf::total_len(&bufs) as u64;
        let r = range(&mem, offset, total)?;
        let mut pos = r.start;
        for b in &bufs {
            b.copy_from(0, &mem[pos..pos + b.len()]);
            pos += b.len();
        }
        Ok(())
    }

    async fn write(&self, offset: u64, bufs: Vec<DataBuf>) -> Result<(), BlockError> {
        let mut mem = self.mem()?;
        let total = tcmu_core::buf::total_len(&bufs) as u64;
        let r = range(&mem, offset, total)?;
        let mut pos = r.start;
        for b in &bufs {
            b.copy_to(0, &mut mem[pos..pos + b.len()]);
            pos += b.len();
        }
        Ok(())
    }

    async fn flush(&self) -> Result<(), BlockError> {
        Ok(())
    }

    async fn unmap(&self, offset: u64, len: u64) -> Result<(), BlockError> {
        let mut mem = self.mem()?;
        let r = range(&mem, offset, len)?;
        mem[r].fill(0);
        Ok(())
    }

    async fn write_same(&self, offset: u64, len: u64, pattern: &[u8]) -> Result<(), BlockError> {
        if pattern.is_empty() {
            return Err(BlockError::Io(io::Error::new(
                io::ErrorKind::InvalidInput,
                "ram handler: empty WRITE SAME pattern",
            )));
        }
        let mut mem = self.mem()?;
        let r = range(&mem, offset, len)?;
        for chunk in mem[r].chunks_mut(pattern.len()) {
            let n = chunk.len();
            chunk.copy_from_slice(&pattern[..n]);
        }
        Ok(())
    }

    fn unmap_params(&self) -> Option<UnmapParams> {
        Some(UnmapParams {
            reads_zeroes: true,
            ..UnmapParams::default()
        })
    }

    async fn reconfig(&self, change: &ReconfigRequest) -> Result<(), String> {
        match change {
            ReconfigRequest::Size(size) => {
                tracing::info!(size, "ram handler: resizing");
                self.resize(*size)
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
        if let Ok(mut mem) = self.mem.try_borrow_mut() {
            *mem = Vec::new();
        }
    }
}

#[cfg(test)]
mod tests {
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
            assert!(h.unmap_params().unwrap().reads_zeroes);
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
}
