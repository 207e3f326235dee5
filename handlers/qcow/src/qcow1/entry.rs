//! What an L2 entry says about one cluster.
//!
//! An L2 entry is a big-endian u64: 0 for an unallocated cluster (read
//! from the backing file, or zeroes), the cluster's byte offset in the
//! image file, or, with the top bit set, a compressed cluster: its
//! compressed length in the `cluster_bits` bits below the flag, its byte
//! offset in the `63 - cluster_bits` bits below those. (Checked against
//! what `qemu-img convert -c -O qcow` writes.) Version 1 has no other
//! flags: no zero clusters, no "copied" bit.

/// The compressed-cluster flag.
const COMPRESSED: u64 = 1 << 63;

/// One cluster's mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cluster {
    /// Not in this image: the backing file's bytes, or zeroes.
    Unallocated,
    /// Stored as is at this offset of the image file.
    Data(u64),
    /// A raw deflate stream of `len` bytes at `offset`.
    Compressed {
        /// Where the stream starts.
        offset: u64,
        /// The stream's length in bytes (less than a cluster).
        len: usize,
    },
}

impl Cluster {
    /// Decodes an L2 entry of an image with `cluster_bits`-bit clusters.
    pub fn decode(entry: u64, cluster_bits: u32) -> Self {
        if entry == 0 {
            return Self::Unallocated;
        }
        if entry & COMPRESSED == 0 {
            return Self::Data(entry);
        }
        let shift = 63 - cluster_bits;
        let offset = entry & ((1 << shift) - 1);
        let len = (entry >> shift) & ((1 << cluster_bits) - 1);
        Self::Compressed {
            offset,
            // At most 2^16 - 1: cluster_bits is at most 16.
            len: usize::try_from(len).unwrap_or(usize::MAX),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_qemu_img_entries() {
        assert_eq!(Cluster::decode(0, 12), Cluster::Unallocated);
        assert_eq!(Cluster::decode(0x63000, 12), Cluster::Data(0x63000));
        // From `qemu-img convert -c -O qcow` (4 KiB clusters): 38 bytes at
        // 0x2200.
        assert_eq!(
            Cluster::decode(0x8130_0000_0000_2200, 12),
            Cluster::Compressed {
                offset: 0x2200,
                len: 38
            }
        );
    }
}
