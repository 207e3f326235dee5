//! Zero-copy vectored I/O between a file and ring buffers.
//!
//! [`read_at`] and [`write_at`] hand the command's [`DataBuf`]s to io_uring
//! `readv`/`writev` as they are (the kernel copies straight between the page
//! cache and the ring's data area) and finish short transfers:
//!
//! - a short read is resubmitted with the same buffers: tokio-uring advances
//!   each buffer's initialised length, so the next `readv` continues where
//!   the last one stopped; end of file zero-fills the rest, so no stale bytes
//!   of an earlier command reach the initiator;
//! - a short write is resubmitted with the unwritten tail, expressed as
//!   tokio-uring [`Slice`]s of the same buffers (no copy).
//!
//! At most [`IOV_MAX`] buffers go into one submission. The buffers move into
//! each operation and back; if the caller's future is dropped, tokio-uring
//! keeps them alive until the kernel has finished with them.
//!
//! (`File::writev_at_all` is not used: it panics when a `writev` makes no
//! progress, e.g. with a trailing zero-length buffer.)

use std::io;

use tcmu_core::DataBuf;
use tokio_uring::buf::{BoundedBuf, Slice};
use tokio_uring::fs::File;

/// Most iovecs one `readv`/`writev` takes (Linux `UIO_MAXIOV`).
pub const IOV_MAX: usize = 1024;

/// Splits `bufs` into groups of at most [`IOV_MAX`].
fn batches(mut bufs: Vec<DataBuf>) -> Vec<Vec<DataBuf>> {
    let mut out = Vec::with_capacity(bufs.len().div_ceil(IOV_MAX).max(1));
    while bufs.len() > IOV_MAX {
        let rest = bufs.split_off(IOV_MAX);
        out.push(bufs);
        bufs = rest;
    }
    out.push(bufs);
    out
}

/// Fills `bufs`, in order, from `file` at `pos`; bytes past the end of the
/// file read as zeroes.
pub async fn read_at(file: &File, pos: u64, bufs: Vec<DataBuf>) -> io::Result<()> {
    let mut pos = pos;
    for batch in batches(bufs) {
        pos += read_batch(file, pos, batch).await?;
    }
    Ok(())
}

async fn read_batch(file: &File, pos: u64, bufs: Vec<DataBuf>) -> io::Result<u64> {
    let want = tcmu_core::buf::total_len(&bufs);
    let mut bufs: Vec<DataBuf> = bufs
        .into_iter()
        .filter(|b| !b.is_empty())
        .map(DataBuf::into_read_target)
        .collect();
    let mut done = 0usize;
    while done < want {
        let (res, back) = file.readv_at(bufs, pos + done as u64).await;
        bufs = back;
        match res {
            Ok(0) => {
                // End of file: the rest of the device reads as zeroes.
                for b in &bufs {
                    b.zero_from(b.filled());
                }
                break;
            }
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(want as u64)
}

/// Writes `bufs`, in order, to `file` at `pos`, all of them or an error.
pub async fn write_at(file: &File, pos: u64, bufs: Vec<DataBuf>) -> io::Result<()> {
    let mut pos = pos;
    for batch in batches(bufs) {
        pos += write_batch(file, pos, batch).await?;
    }
    Ok(())
}

async fn write_batch(file: &File, pos: u64, bufs: Vec<DataBuf>) -> io::Result<u64> {
    let want = tcmu_core::buf::total_len(&bufs);
    let mut rest: Vec<Slice<DataBuf>> = bufs
        .into_iter()
        .filter(|b| !b.is_empty())
        .map(|b| b.into_filled().slice_full())
        .collect();
    let mut done = 0usize;
    while !rest.is_empty() {
        let (res, back) = file.writev_at(rest, pos + done as u64).await;
        match res {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    format!("write made no progress at offset {}", pos + done as u64),
                ))
            }
            Ok(n) => {
                done += n;
                rest = advance(back, n);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => rest = back,
            Err(e) => return Err(e),
        }
    }
    Ok(want as u64)
}

/// Drops the first `n` bytes from a list of slices.
fn advance(slices: Vec<Slice<DataBuf>>, mut n: usize) -> Vec<Slice<DataBuf>> {
    let mut out = Vec::with_capacity(slices.len());
    for s in slices {
        let len = s.bytes_total();
        if n >= len {
            n -= len;
        } else if n > 0 {
            out.push(s.slice(n..));
            n = 0;
        } else {
            out.push(s);
        }
    }
    out
}

/// Writes `len` bytes of `pattern` repeated at `pos`, through a buffer of at
/// most `max_chunk` bytes (rounded to whole patterns) built once.
pub async fn write_pattern(
    file: &File,
    pos: u64,
    len: u64,
    pattern: &[u8],
    max_chunk: usize,
) -> io::Result<()> {
    if pattern.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "empty WRITE SAME pattern",
        ));
    }
    if len == 0 {
        return Ok(());
    }
    let per_chunk = (max_chunk / pattern.len()).max(1);
    let chunk_len = usize::try_from(len)
        .unwrap_or(usize::MAX)
        .min(per_chunk * pattern.len());
    let mut buf = Vec::with_capacity(chunk_len);
    while buf.len() < chunk_len {
        let n = (chunk_len - buf.len()).min(pattern.len());
        buf.extend_from_slice(&pattern[..n]);
    }
    // Every chunk but the last is a whole number of patterns, so each write
    // starts on a pattern boundary.
    let mut done = 0u64;
    while done < len {
        let n = (len - done).min(buf.len() as u64) as usize;
        let (res, slice) = file.write_all_at(buf.slice(..n), pos + done).await;
        buf = slice.into_inner();
        res?;
        done += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::sync::Arc;

    use tcmu_core::Mapping;

    use super::*;

    #[test]
    fn advance_skips_written_bytes() {
        let map = Arc::new(Mapping::anonymous(4096).unwrap());
        let mk = |off, len| DataBuf::new(map.clone(), off, len).unwrap().slice_full();
        let lens = |v: &[Slice<DataBuf>]| v.iter().map(|s| s.bytes_total()).collect::<Vec<_>>();
        let v = advance(vec![mk(0, 10), mk(100, 20), mk(200, 5)], 15);
        assert_eq!(lens(&v), vec![15, 5]);
        assert_eq!(v[0].begin(), 5);
        let v = advance(v, 15);
        assert_eq!(lens(&v), vec![5]);
        let v = advance(v, 5);
        assert!(v.is_empty());
        let v = advance(vec![mk(0, 10)], 0);
        assert_eq!(lens(&v), vec![10]);
    }

    #[test]
    fn batches_respect_iov_max() {
        let map = Arc::new(Mapping::anonymous(4096).unwrap());
        let bufs: Vec<DataBuf> = (0..2 * IOV_MAX + 3)
            .map(|i| DataBuf::new(map.clone(), i % 4096, 1).unwrap())
            .collect();
        let sizes: Vec<usize> = batches(bufs).iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![IOV_MAX, IOV_MAX, 3]);
        assert_eq!(batches(Vec::new()).len(), 1);
    }
}
