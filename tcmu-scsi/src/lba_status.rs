//! GET LBA STATUS (SBC-3 5.16): which blocks are mapped and which are
//! deallocated, from the extents the handler reports.

use crate::bytes::{put32, put64};

/// PROVISIONING STATUS of an extent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provisioning {
    /// Mapped (or unknown): 0.
    Mapped = 0,
    /// Deallocated: 1.
    Deallocated = 1,
    /// Anchored: 2.
    Anchored = 2,
}

/// One run of blocks with the same provisioning status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// Number of blocks in the run (never 0).
    pub blocks: u64,
    /// Their status.
    pub status: Provisioning,
}

/// Header length of the parameter data.
const HEADER: usize = 8;
/// Length of one LBA status descriptor.
const DESCRIPTOR: usize = 16;

/// The GET LBA STATUS parameter data for extents starting at `lba`, cut to
/// `alloc_len`. Runs longer than a descriptor can say (32 bits of blocks)
/// are split; empty runs are skipped. The PARAMETER DATA LENGTH field
/// counts every descriptor, also those cut off by `alloc_len`.
pub fn response(lba: u64, extents: &[Extent], alloc_len: u32) -> Vec<u8> {
    let mut out = vec![0u8; HEADER];
    let mut at = lba;
    for e in extents {
        let mut left = e.blocks;
        while left > 0 {
            let n = left.min(u64::from(u32::MAX));
            let mut d = [0u8; DESCRIPTOR];
            put64(&mut d, 0, at);
            put32(&mut d, 8, n as u32);
            d[12] = e.status as u8;
            out.extend_from_slice(&d);
            at = at.saturating_add(n);
            left -= n;
        }
    }
    let len = u32::try_from(out.len() - 4).unwrap_or(u32::MAX);
    put32(&mut out, 0, len);
    out.truncate(usize::try_from(alloc_len).unwrap_or(usize::MAX));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_extents() {
        let e = [
            Extent {
                blocks: 8,
                status: Provisioning::Mapped,
            },
            Extent {
                blocks: 0,
                status: Provisioning::Mapped,
            },
            Extent {
                blocks: 16,
                status: Provisioning::Deallocated,
            },
        ];
        let r = response(100, &e, 1000);
        assert_eq!(r.len(), 8 + 32);
        assert_eq!(&r[..4], &[0, 0, 0, 36]);
        assert_eq!(&r[8..16], &100u64.to_be_bytes());
        assert_eq!(&r[16..20], &8u32.to_be_bytes());
        assert_eq!(r[20], 0);
        assert_eq!(&r[24..32], &108u64.to_be_bytes());
        assert_eq!(&r[32..36], &16u32.to_be_bytes());
        assert_eq!(r[36], 1);
        // Cut to the allocation length, the length field still counts all.
        let r = response(100, &e, 24);
        assert_eq!(r.len(), 24);
        assert_eq!(&r[..4], &[0, 0, 0, 36]);
    }

    #[test]
    fn long_runs_are_split() {
        let e = [Extent {
            blocks: u64::from(u32::MAX) + 5,
            status: Provisioning::Mapped,
        }];
        let r = response(0, &e, u32::MAX);
        assert_eq!(r.len(), 8 + 32);
        assert_eq!(&r[32..36], &5u32.to_be_bytes());
    }
}
