//! Generic implementations of the optional operations in terms of a
//! handler's `read` and `write`, used when the handler does not opt in to
//! the native one (see the capability traits in [`crate::handler`]).
//!
//! They work on scratch memory, never on a command's ring buffers, and in
//! chunks of at most [`CHUNK`] bytes so a large WRITE SAME or FORMAT UNIT
//! does not allocate the whole range at once.

use tcmu_core::{DataBuf, ScratchArea};

use crate::error::{BlockError, CompareError};
use crate::handler::BlockHandler;

/// Largest piece read or written at once.
pub(crate) const CHUNK: u64 = 1 << 20;

fn scratch(len: u64) -> Result<ScratchArea, BlockError> {
    let len = usize::try_from(len)
        .map_err(|_| BlockError::Io(std::io::ErrorKind::InvalidInput.into()))?;
    Ok(ScratchArea::new(len)?)
}

/// Reads `len` bytes at `offset` into a new vector.
pub(crate) async fn read_vec(
    h: &dyn BlockHandler,
    offset: u64,
    len: u64,
) -> Result<Vec<u8>, BlockError> {
    let area = scratch(len)?;
    let buf = area.lend_all().map_err(std::io::Error::from)?;
    h.read(offset, vec![buf.into_read_target()]).await?;
    Ok(area.to_vec().map_err(std::io::Error::from)?)
}

/// Writes `data` at `offset`.
pub(crate) async fn write_slice(
    h: &dyn BlockHandler,
    offset: u64,
    data: &[u8],
) -> Result<(), BlockError> {
    let area = scratch(data.len() as u64)?;
    area.write(0, data).map_err(std::io::Error::from)?;
    let buf = area.lend_all().map_err(std::io::Error::from)?;
    h.write(offset, vec![buf]).await
}

/// WRITE SAME by plain writes: `pattern` repeated over `len` bytes at
/// `offset`, a chunk at a time.
pub(crate) async fn write_same(
    h: &dyn BlockHandler,
    offset: u64,
    len: u64,
    pattern: &[u8],
) -> Result<(), BlockError> {
    let plen = pattern.len().max(1) as u64;
    let chunk = (CHUNK / plen).max(1) * plen;
    let area = scratch(chunk.min(len))?;
    let mut at = 0;
    while at < area.len() {
        let n = pattern.len().min(area.len() - at).max(1);
        area.write(at, &pattern[..n.min(pattern.len())])
            .map_err(std::io::Error::from)?;
        at += n;
    }
    let mut done = 0;
    while done < len {
        let n = (len - done).min(chunk);
        // The previous piece went into the handler's write and is gone.
        let piece = area.lend(0, n as usize).map_err(std::io::Error::from)?;
        h.write(offset + done, vec![piece]).await?;
        done += n;
    }
    Ok(())
}

/// The offset of the first byte where `a` and `b` differ.
pub(crate) fn first_difference(a: &[u8], b: &[u8]) -> Option<u64> {
    a.iter().zip(b).position(|(x, y)| x != y).map(|i| i as u64)
}

/// Compares the medium at `offset` with `expected(range_offset, len)`, a
/// chunk at a time; `Miscompare` carries the offset from `offset`.
pub(crate) async fn verify(
    h: &dyn BlockHandler,
    offset: u64,
    len: u64,
    expected: impl Fn(u64, usize) -> Vec<u8>,
) -> Result<(), CompareError> {
    let mut done = 0;
    while done < len {
        let n = (len - done).min(CHUNK);
        let medium = read_vec(h, offset + done, n).await?;
        let want = expected(done, n as usize);
        if let Some(at) = first_difference(&medium, &want) {
            return Err(CompareError::Miscompare(done + at));
        }
        done += n;
    }
    Ok(())
}

/// The data a fallback writes: the command's own buffers, or a copy.
pub(crate) enum Data {
    /// The command's data-out buffers.
    Bufs(Vec<DataBuf>),
    /// The same bytes, copied out (the buffers went to a native operation
    /// that gave up).
    Bytes(Vec<u8>),
}

/// COMPARE AND WRITE by a read, a compare and a write. The caller holds the
/// range exclusively, which is what makes this atomic.
pub(crate) async fn compare_and_write(
    h: &dyn BlockHandler,
    offset: u64,
    compare: &[u8],
    write: Data,
) -> Result<(), CompareError> {
    let medium = read_vec(h, offset, compare.len() as u64).await?;
    if let Some(at) = first_difference(&medium, compare) {
        return Err(CompareError::Miscompare(at));
    }
    match write {
        Data::Bufs(bufs) => h.write(offset, bufs).await?,
        Data::Bytes(bytes) => write_slice(h, offset, &bytes).await?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences() {
        assert_eq!(first_difference(&[1, 2, 3], &[1, 2, 3]), None);
        assert_eq!(first_difference(&[1, 2, 3], &[1, 9, 3]), Some(1));
        assert_eq!(first_difference(&[], &[]), None);
    }
}
