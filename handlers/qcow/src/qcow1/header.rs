//! The qcow version 1 header: 48 big-endian bytes at offset 0.
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic `QFI\xfb` |
//! | 4 | 4 | version (1) |
//! | 8 | 8 | backing file name offset (0: none) |
//! | 16 | 4 | backing file name length |
//! | 20 | 4 | mtime (unused) |
//! | 24 | 8 | virtual size in bytes |
//! | 32 | 1 | cluster_bits |
//! | 33 | 1 | l2_bits (an L2 table has 2^l2_bits entries) |
//! | 34 | 2 | padding |
//! | 36 | 4 | crypt_method (0: none, 1: AES) |
//! | 40 | 8 | L1 table offset |
//!
//! The L1 table has one entry per 2^(cluster_bits + l2_bits) bytes of the
//! virtual size. Parsing validates every field the driver relies on, so an
//! image that gets past [`Header::parse`] cannot make it allocate absurd
//! tables or overflow an offset.

use std::ops::RangeInclusive;

/// The four bytes every qcow (and qcow2) image starts with.
pub const MAGIC: [u8; 4] = *b"QFI\xfb";

/// The header's length in bytes.
pub const HEADER_LEN: usize = 48;

/// The cluster sizes QEMU accepts for qcow version 1: 512 bytes to 64 KiB.
const CLUSTER_BITS: RangeInclusive<u8> = 9..=16;

/// The L2 table sizes QEMU accepts: 64 to 65536 entries.
const L2_BITS: RangeInclusive<u8> = 6..=16;

/// The longest backing file name QEMU writes or reads.
const MAX_BACKING_NAME: u32 = 1023;

/// The most L1 entries accepted (a 256 MiB table: far beyond any image
/// qemu-img makes, small enough never to exhaust memory on open).
const MAX_L1_ENTRIES: u64 = 1 << 25;

/// Why a qcow version 1 header was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum HeaderError {
    /// Fewer than [`HEADER_LEN`] bytes.
    #[error("the qcow header is truncated ({0} of 48 bytes)")]
    Truncated(usize),
    /// No `QFI\xfb` magic.
    #[error("no qcow magic (QFI\\xfb) at offset 0")]
    Magic,
    /// A version other than 1.
    #[error("qcow version {0}, not 1")]
    Version(u32),
    /// An encrypted image (crypt_method 1 is AES).
    #[error(
        "the image is encrypted (crypt_method {0}); encrypted qcow images are not supported \
         (decrypt it first: qemu-img convert --object secret,... -O qcow)"
    )]
    Encrypted(u32),
    /// A cluster size QEMU would refuse too.
    #[error("cluster_bits {0} is out of range (9 to 16)")]
    ClusterBits(u8),
    /// An L2 table size QEMU would refuse too.
    #[error("l2_bits {0} is out of range (6 to 16)")]
    L2Bits(u8),
    /// A virtual size whose L1 table would be absurdly large.
    #[error("the virtual size ({0} bytes) needs more than 2^25 L1 entries")]
    TooLarge(u64),
    /// The L1 table's offset plus its length overflows.
    #[error("the L1 table offset {0:#x} is out of range")]
    L1Offset(u64),
    /// A backing file name longer than 1023 bytes, or one whose offset
    /// overflows.
    #[error("the backing file name ({len} bytes at {offset:#x}) is invalid")]
    BackingName {
        /// Where the name is.
        offset: u64,
        /// How long it is.
        len: u32,
    },
}

/// A validated qcow version 1 header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Where the backing file's name is (0: no backing file).
    pub backing_file_offset: u64,
    /// The backing file name's length in bytes.
    pub backing_file_size: u32,
    /// The virtual size in bytes.
    pub size: u64,
    /// log2 of the cluster size.
    pub cluster_bits: u32,
    /// log2 of the number of entries in an L2 table.
    pub l2_bits: u32,
    /// Where the L1 table is.
    pub l1_table_offset: u64,
    /// The number of L1 entries the virtual size needs.
    pub l1_entries: u64,
}

/// The big-endian u64 at `at` (the caller has checked the length).
fn be64(b: &[u8], at: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(v)
}

/// The big-endian u32 at `at` (the caller has checked the length).
fn be32(b: &[u8], at: usize) -> u32 {
    let mut v = [0u8; 4];
    v.copy_from_slice(&b[at..at + 4]);
    u32::from_be_bytes(v)
}

impl Header {
    /// Parses and validates the first bytes of an image.
    pub fn parse(bytes: &[u8]) -> Result<Self, HeaderError> {
        if bytes.len() < 4 || bytes[..4] != MAGIC {
            return Err(HeaderError::Magic);
        }
        if bytes.len() < 8 {
            return Err(HeaderError::Truncated(bytes.len()));
        }
        let version = be32(bytes, 4);
        if version != 1 {
            return Err(HeaderError::Version(version));
        }
        if bytes.len() < HEADER_LEN {
            return Err(HeaderError::Truncated(bytes.len()));
        }
        let crypt_method = be32(bytes, 36);
        if crypt_method != 0 {
            return Err(HeaderError::Encrypted(crypt_method));
        }
        let (cluster_bits, l2_bits) = (bytes[32], bytes[33]);
        if !CLUSTER_BITS.contains(&cluster_bits) {
            return Err(HeaderError::ClusterBits(cluster_bits));
        }
        if !L2_BITS.contains(&l2_bits) {
            return Err(HeaderError::L2Bits(l2_bits));
        }
        let size = be64(bytes, 24);
        let shift = u32::from(cluster_bits) + u32::from(l2_bits);
        let l1_entries = size.div_ceil(1 << shift);
        if l1_entries > MAX_L1_ENTRIES {
            return Err(HeaderError::TooLarge(size));
        }
        let l1_table_offset = be64(bytes, 40);
        if l1_table_offset.checked_add(l1_entries * 8).is_none() {
            return Err(HeaderError::L1Offset(l1_table_offset));
        }
        let backing_file_offset = be64(bytes, 8);
        let backing_file_size = be32(bytes, 16);
        if backing_file_offset != 0
            && (backing_file_size > MAX_BACKING_NAME
                || backing_file_offset
                    .checked_add(u64::from(backing_file_size))
                    .is_none())
        {
            return Err(HeaderError::BackingName {
                offset: backing_file_offset,
                len: backing_file_size,
            });
        }
        Ok(Self {
            backing_file_offset,
            backing_file_size,
            size,
            cluster_bits: u32::from(cluster_bits),
            l2_bits: u32::from(l2_bits),
            l1_table_offset,
            l1_entries,
        })
    }

    /// The cluster size in bytes.
    pub fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }

    /// The number of entries in an L2 table.
    pub fn l2_entries(&self) -> u64 {
        1 << self.l2_bits
    }

    /// Whether the header names a backing file.
    pub fn has_backing_file(&self) -> bool {
        self.backing_file_offset != 0 && self.backing_file_size != 0
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    /// A header as `qemu-img create -f qcow img 8M` writes it.
    fn plain() -> Vec<u8> {
        let mut h = vec![0u8; HEADER_LEN];
        h[..4].copy_from_slice(&MAGIC);
        h[4..8].copy_from_slice(&1u32.to_be_bytes());
        h[24..32].copy_from_slice(&(8u64 << 20).to_be_bytes());
        h[32] = 12;
        h[33] = 9;
        h[40..48].copy_from_slice(&48u64.to_be_bytes());
        h
    }

    #[test]
    fn parses_what_qemu_img_writes() {
        let h = Header::parse(&plain()).unwrap();
        assert_eq!(h.size, 8 << 20);
        assert_eq!(h.cluster_size(), 4096);
        assert_eq!(h.l2_entries(), 512);
        // 2 MiB per L1 entry.
        assert_eq!(h.l1_entries, 4);
        assert_eq!(h.l1_table_offset, 48);
        assert!(!h.has_backing_file());
    }

    #[test]
    fn refuses_what_it_cannot_serve() {
        let with = |at: usize, bytes: &[u8]| {
            let mut h = plain();
            h[at..at + bytes.len()].copy_from_slice(bytes);
            Header::parse(&h).unwrap_err()
        };
        assert_eq!(with(0, b"QFI\0"), HeaderError::Magic);
        assert_eq!(with(4, &2u32.to_be_bytes()), HeaderError::Version(2));
        assert_eq!(with(36, &1u32.to_be_bytes()), HeaderError::Encrypted(1));
        assert_eq!(with(32, &[17]), HeaderError::ClusterBits(17));
        assert_eq!(with(33, &[5]), HeaderError::L2Bits(5));
        assert_eq!(
            with(24, &u64::MAX.to_be_bytes()),
            HeaderError::TooLarge(u64::MAX)
        );
        assert_eq!(
            with(40, &(u64::MAX - 8).to_be_bytes()),
            HeaderError::L1Offset(u64::MAX - 8)
        );
        let mut named = plain();
        named[8..16].copy_from_slice(&48u64.to_be_bytes());
        named[16..20].copy_from_slice(&4096u32.to_be_bytes());
        assert!(matches!(
            Header::parse(&named),
            Err(HeaderError::BackingName { len: 4096, .. })
        ));
        assert_eq!(
            Header::parse(&plain()[..20]).unwrap_err(),
            HeaderError::Truncated(20)
        );
        assert!(with(36, &1u32.to_be_bytes())
            .to_string()
            .contains("encrypted qcow images are not supported"));
    }
}
