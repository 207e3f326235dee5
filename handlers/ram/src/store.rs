//! Sparse RAM storage: the disk's bytes in 1 MiB chunks, allocated on first
//! write and freed when wholly unmapped, so memory follows the data written
//! rather than the device size. A missing chunk reads as zeroes.

use std::io;

/// Bytes per chunk.
pub const CHUNK: usize = 1 << 20;

/// Zeroes to copy into buffers for missing chunks.
static ZEROES: [u8; 64 << 10] = [0; 64 << 10];

/// A sparse byte array of fixed (but resizable) length.
#[derive(Debug, Default)]
pub struct Store {
    chunks: Vec<Option<Box<[u8]>>>,
    size: u64,
}

/// One piece of a byte range that lies within a single chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Segment {
    /// Chunk index.
    chunk: usize,
    /// Offset within the chunk.
    at: usize,
    /// Length.
    len: usize,
    /// Offset from the start of the range.
    done: usize,
}

/// Splits `[offset, offset + len)` at chunk boundaries; the caller has
/// checked the range against the store.
fn segments(offset: usize, len: usize) -> impl Iterator<Item = Segment> {
    let mut done = 0;
    std::iter::from_fn(move || {
        if done >= len {
            return None;
        }
        let pos = offset + done;
        let at = pos % CHUNK;
        let n = (CHUNK - at).min(len - done);
        let seg = Segment {
            chunk: pos / CHUNK,
            at,
            len: n,
            done,
        };
        done += n;
        Some(seg)
    })
}

fn alloc_chunk() -> io::Result<Box<[u8]>> {
    let mut v = Vec::new();
    v.try_reserve_exact(CHUNK)
        .map_err(|e| io::Error::new(io::ErrorKind::OutOfMemory, e))?;
    v.resize(CHUNK, 0);
    Ok(v.into_boxed_slice())
}

impl Store {
    /// A store of `size` zero bytes (nothing allocated yet).
    pub fn new(size: u64) -> io::Result<Self> {
        let mut s = Self::default();
        s.resize(size)?;
        Ok(s)
    }

    /// Length in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Bytes of memory held by allocated chunks.
    pub fn allocated(&self) -> usize {
        self.chunks.iter().flatten().count() * CHUNK
    }

    /// `[offset, offset + len)` as `usize`s, or an error if it leaves the
    /// store.
    fn check(&self, offset: u64, len: u64) -> io::Result<(usize, usize)> {
        match offset.checked_add(len) {
            Some(end) if end <= self.size => {
                // `size` fits in usize (checked by `resize`).
                Ok((offset as usize, len as usize))
            }
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{len} bytes at offset {offset} are beyond the end ({} bytes)",
                    self.size
                ),
            )),
        }
    }

    /// Calls `f(done, bytes)` for the pieces of `[offset, offset + len)` in
    /// order; a missing chunk is passed as zeroes.
    pub fn read(&self, offset: u64, len: u64, mut f: impl FnMut(usize, &[u8])) -> io::Result<()> {
        let (offset, len) = self.check(offset, len)?;
        for seg in segments(offset, len) {
            match self.chunks.get(seg.chunk).and_then(Option::as_deref) {
                Some(chunk) => f(seg.done, &chunk[seg.at..seg.at + seg.len]),
                None => {
                    let mut z = 0;
                    while z < seg.len {
                        let n = (seg.len - z).min(ZEROES.len());
                        f(seg.done + z, &ZEROES[..n]);
                        z += n;
                    }
                }
            }
        }
        Ok(())
    }

    /// Calls `f(done, bytes)` with the pieces of `[offset, offset + len)` to
    /// fill, allocating chunks as needed.
    pub fn write(
        &mut self,
        offset: u64,
        len: u64,
        mut f: impl FnMut(usize, &mut [u8]),
    ) -> io::Result<()> {
        let (offset, len) = self.check(offset, len)?;
        for seg in segments(offset, len) {
            let slot = self
                .chunks
                .get_mut(seg.chunk)
                .ok_or_else(|| io::Error::other("chunk index out of range"))?;
            if slot.is_none() {
                *slot = Some(alloc_chunk()?);
            }
            if let Some(chunk) = slot.as_deref_mut() {
                f(seg.done, &mut chunk[seg.at..seg.at + seg.len]);
            }
        }
        Ok(())
    }

    /// Zeroes `[offset, offset + len)`, freeing chunks it covers entirely.
    pub fn zero(&mut self, offset: u64, len: u64) -> io::Result<()> {
        let (offset, len) = self.check(offset, len)?;
        for seg in segments(offset, len) {
            if let Some(slot) = self.chunks.get_mut(seg.chunk) {
                if seg.len == CHUNK {
                    *slot = None;
                } else if let Some(chunk) = slot.as_deref_mut() {
                    chunk[seg.at..seg.at + seg.len].fill(0);
                }
            }
        }
        Ok(())
    }

    /// Grows (with zeroes) or shrinks to `size` bytes.
    pub fn resize(&mut self, size: u64) -> io::Result<()> {
        let len = usize::try_from(size).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{size} bytes do not fit in memory"),
            )
        })?;
        let n = len.div_ceil(CHUNK);
        if n > self.chunks.len() {
            self.chunks
                .try_reserve_exact(n - self.chunks.len())
                .map_err(|e| io::Error::new(io::ErrorKind::OutOfMemory, e))?;
        }
        self.chunks.resize_with(n, || None);
        self.chunks.shrink_to_fit();
        if size < self.size {
            // Bytes cut off now must read as zeroes if the store grows again.
            let tail = len % CHUNK;
            if tail != 0 {
                if let Some(chunk) = self.chunks.last_mut().and_then(Option::as_deref_mut) {
                    chunk[tail..].fill(0);
                }
            }
        }
        self.size = size;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn read_all(s: &Store, offset: u64, len: usize) -> Vec<u8> {
        let mut out = vec![0xee; len];
        s.read(offset, len as u64, |done, b| {
            out[done..done + b.len()].copy_from_slice(b)
        })
        .unwrap();
        out
    }

    #[test]
    fn segments_split_at_chunk_boundaries() {
        let segs: Vec<Segment> = segments(CHUNK - 10, CHUNK + 20).collect();
        assert_eq!(
            segs,
            vec![
                Segment {
                    chunk: 0,
                    at: CHUNK - 10,
                    len: 10,
                    done: 0
                },
                Segment {
                    chunk: 1,
                    at: 0,
                    len: CHUNK,
                    done: 10
                },
                Segment {
                    chunk: 2,
                    at: 0,
                    len: 10,
                    done: CHUNK + 10
                },
            ]
        );
        assert_eq!(segments(5, 0).count(), 0);
    }

    #[test]
    fn sparse_until_written_and_freed_by_zeroing() {
        let mut s = Store::new(4 * CHUNK as u64).unwrap();
        assert_eq!(s.allocated(), 0);
        assert!(read_all(&s, 0, 3 * CHUNK).iter().all(|&b| b == 0));
        s.write(CHUNK as u64 - 1, 2, |_, b| b.fill(9)).unwrap();
        assert_eq!(s.allocated(), 2 * CHUNK);
        let got = read_all(&s, CHUNK as u64 - 2, 4);
        assert_eq!(got, vec![0, 9, 9, 0]);
        s.zero(CHUNK as u64, CHUNK as u64).unwrap();
        assert_eq!(s.allocated(), CHUNK);
        s.zero(0, CHUNK as u64 - 1).unwrap();
        assert_eq!(read_all(&s, CHUNK as u64 - 2, 4), vec![0, 9, 0, 0]);
        assert!(s.write(4 * CHUNK as u64, 1, |_, _| {}).is_err());
        assert!(s.read(u64::MAX, 2, |_, _| {}).is_err());
    }

    #[test]
    fn shrinking_forgets_the_cut_off_bytes() {
        let mut s = Store::new(2 * CHUNK as u64).unwrap();
        s.write(0, 2 * CHUNK as u64, |_, b| b.fill(5)).unwrap();
        s.resize(100).unwrap();
        assert_eq!(s.allocated(), CHUNK);
        s.resize(2 * CHUNK as u64).unwrap();
        let got = read_all(&s, 0, 2 * CHUNK);
        assert!(got[..100].iter().all(|&b| b == 5));
        assert!(got[100..].iter().all(|&b| b == 0));
    }
}
