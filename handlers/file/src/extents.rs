//! Which parts of a sparse file hold data, as GET LBA STATUS extents.
//!
//! `SEEK_DATA`/`SEEK_HOLE` are metadata lookups that do not block on I/O,
//! so they run synchronously on the worker thread; they move the file
//! offset of the descriptor, which positional I/O never uses.

use std::io;

use rustix::fs::SeekFrom;
use tcmu_scsi::lba_status::{Extent, Provisioning};

/// Most extents reported at once: GET LBA STATUS may stop early, and the
/// initiator asks again from where the answer ended.
const MAX_EXTENTS: usize = 1024;

/// Data ranges of `file` in `[offset, offset + len)`, in bytes.
fn data_ranges(file: &std::fs::File, offset: u64, len: u64) -> io::Result<Vec<(u64, u64)>> {
    let end = offset.saturating_add(len);
    let mut ranges = Vec::new();
    let mut pos = offset;
    while pos < end && ranges.len() < MAX_EXTENTS {
        let data = match rustix::fs::seek(file, SeekFrom::Data(pos)) {
            Ok(d) => d,
            // No data at or after `pos`.
            Err(rustix::io::Errno::NXIO) => break,
            Err(e) => return Err(e.into()),
        };
        if data >= end {
            break;
        }
        let hole = rustix::fs::seek(file, SeekFrom::Hole(data))?;
        ranges.push((data, hole.min(end)));
        pos = hole.max(data + 1);
    }
    Ok(ranges)
}

/// Turns byte ranges of data into block extents from `offset` to
/// `offset + len`: a block holding any data is mapped, the others are
/// deallocated.
pub(crate) fn to_extents(ranges: &[(u64, u64)], offset: u64, len: u64, bs: u64) -> Vec<Extent> {
    let bs = bs.max(1);
    let first = offset / bs;
    let last = offset.saturating_add(len).div_ceil(bs);
    let mut out: Vec<Extent> = Vec::new();
    let mut push = |blocks: u64, status: Provisioning| {
        if blocks == 0 {
            return;
        }
        match out.last_mut() {
            Some(e) if e.status == status => e.blocks += blocks,
            _ => out.push(Extent { blocks, status }),
        }
    };
    let mut at = first;
    for &(start, end) in ranges {
        let (s, e) = ((start / bs).max(at), end.div_ceil(bs).min(last));
        if e <= s {
            continue;
        }
        push(s - at, Provisioning::Deallocated);
        push(e - s, Provisioning::Mapped);
        at = e;
    }
    // Past the last data range: a hole, unless the scan stopped early.
    if ranges.len() < MAX_EXTENTS {
        push(last.saturating_sub(at), Provisioning::Deallocated);
    }
    out
}

/// GET LBA STATUS extents for `len` bytes of `file` at `offset`.
pub(crate) fn scan(
    file: &std::fs::File,
    offset: u64,
    len: u64,
    block_size: u32,
) -> io::Result<Vec<Extent>> {
    let ranges = data_ranges(file, offset, len)?;
    Ok(to_extents(&ranges, offset, len, u64::from(block_size)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use Provisioning::{Deallocated as D, Mapped as M};

    fn e(blocks: u64, status: Provisioning) -> Extent {
        Extent { blocks, status }
    }

    #[test]
    fn ranges_to_blocks() {
        // Data at bytes [1000, 1100) and [4096, 8192) of a 16-block range.
        let x = to_extents(&[(1000, 1100), (4096, 8192)], 0, 8192, 512);
        assert_eq!(x, vec![e(1, D), e(2, M), e(5, D), e(8, M)]);
        // Starting in the middle of a data range.
        let x = to_extents(&[(0, 4096)], 1024, 8192, 512);
        assert_eq!(x, vec![e(6, M), e(10, D)]);
        // No data at all.
        assert_eq!(to_extents(&[], 0, 4096, 4096), vec![e(1, D)]);
    }

    #[test]
    fn sparse_file() {
        let dir = std::env::temp_dir().join(format!("tcmu-extents-{}", std::process::id()));
        let path = dir.with_extension("img");
        let mut f = std::fs::File::create(&path).unwrap();
        f.set_len(1 << 20).unwrap();
        f.write_all(&[1u8; 4096]).unwrap();
        f.sync_all().unwrap();
        let x = scan(&f, 0, 1 << 20, 512).unwrap();
        std::fs::remove_file(&path).unwrap();
        // The first 4 KiB hold data (a filesystem may allocate more around
        // it), the file's end is a hole.
        assert_eq!(x.first().map(|e| e.status), Some(M));
        assert!(x[0].blocks >= 8);
        assert_eq!(x.iter().map(|e| e.blocks).sum::<u64>(), 2048);
        assert_eq!(x.last().map(|e| e.status), Some(D));
    }
}
