//! UNMAP parameter list parsing (SBC-3 5.28), checked the way the kernel
//! checks it: a short header is a PARAMETER LIST LENGTH ERROR, a block
//! descriptor data length longer than the list is cut to the list (trailing
//! partial descriptors are ignored), too many descriptors or too many blocks
//! in one descriptor is INVALID FIELD IN PARAMETER LIST, a range past the end
//! is LBA OUT OF RANGE.

use crate::bytes::{be16, be32, be64};
use crate::device::{DeviceParams, UnmapParams};
use crate::sense::Sense;

/// A range of logical blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LbaRange {
    /// First block.
    pub lba: u64,
    /// Number of blocks (never 0 in a parsed UNMAP list).
    pub blocks: u32,
}

/// Size of the UNMAP parameter list header.
pub const HEADER_LEN: usize = 8;
/// Size of one UNMAP block descriptor.
pub const DESCRIPTOR_LEN: usize = 16;

/// Parse an UNMAP parameter list (already cut to the parameter list
/// length). Zero-length descriptors are validated and dropped; an empty
/// list yields no ranges.
pub fn parse(
    list: &[u8],
    params: &DeviceParams,
    limits: &UnmapParams,
) -> Result<Vec<LbaRange>, Sense> {
    if list.is_empty() {
        return Ok(Vec::new());
    }
    if list.len() < HEADER_LEN {
        return Err(Sense::parameter_list_length_error());
    }
    let available = list.len() - HEADER_LEN;
    let bd_len = usize::from(be16(list, 2)).min(available);
    let count = bd_len / DESCRIPTOR_LEN;
    if u64::try_from(count).unwrap_or(u64::MAX) > u64::from(limits.max_descriptors) {
        return Err(Sense::invalid_field_in_parameter_list(2, None));
    }
    let mut ranges = Vec::with_capacity(count);
    for i in 0..count {
        let at = HEADER_LEN + i * DESCRIPTOR_LEN;
        let lba = be64(list, at);
        let blocks = be32(list, at + 8);
        if blocks > limits.max_lba_count {
            let field = u16::try_from(at + 8).unwrap_or(u16::MAX);
            return Err(Sense::invalid_field_in_parameter_list(field, None));
        }
        params.check_range(lba, u64::from(blocks))?;
        if blocks != 0 {
            ranges.push(LbaRange { lba, blocks });
        }
    }
    Ok(ranges)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(descs: &[(u64, u32)]) -> Vec<u8> {
        let bd = descs.len() * 16;
        let mut v = Vec::new();
        v.extend_from_slice(&((bd + 6) as u16).to_be_bytes());
        v.extend_from_slice(&(bd as u16).to_be_bytes());
        v.extend_from_slice(&[0; 4]);
        for &(lba, n) in descs {
            v.extend_from_slice(&lba.to_be_bytes());
            v.extend_from_slice(&n.to_be_bytes());
            v.extend_from_slice(&[0; 4]);
        }
        v
    }

    fn limits() -> UnmapParams {
        UnmapParams {
            max_lba_count: 100,
            max_descriptors: 4,
            ..UnmapParams::default()
        }
    }

    #[test]
    fn good_lists() {
        let p = DeviceParams::new(512, 1000);
        assert_eq!(parse(&[], &p, &limits()), Ok(vec![]));
        assert_eq!(parse(&list(&[]), &p, &limits()), Ok(vec![]));
        assert_eq!(
            parse(&list(&[(0, 10), (5, 0), (900, 100)]), &p, &limits()),
            Ok(vec![
                LbaRange { lba: 0, blocks: 10 },
                LbaRange {
                    lba: 900,
                    blocks: 100
                }
            ])
        );
    }

    #[test]
    fn length_errors() {
        let p = DeviceParams::new(512, 1000);
        assert_eq!(
            parse(&[0, 6, 0, 0, 0, 0, 0], &p, &limits()),
            Err(Sense::parameter_list_length_error())
        );
        // Block descriptor data length beyond the list: cut to the list.
        let mut l = list(&[(1, 1), (2, 2)]);
        l.truncate(8 + 16 + 5);
        assert_eq!(
            parse(&l, &p, &limits()),
            Ok(vec![LbaRange { lba: 1, blocks: 1 }])
        );
        // Partial descriptor per bd_len: ignored.
        let mut l = list(&[(1, 1), (2, 2)]);
        l[3] = 20;
        assert_eq!(
            parse(&l, &p, &limits()),
            Ok(vec![LbaRange { lba: 1, blocks: 1 }])
        );
    }

    #[test]
    fn limit_errors() {
        let p = DeviceParams::new(512, 1000);
        assert_eq!(
            parse(&list(&[(0, 1); 5]), &p, &limits()),
            Err(Sense::invalid_field_in_parameter_list(2, None))
        );
        assert_eq!(
            parse(&list(&[(0, 1), (10, 101)]), &p, &limits()),
            Err(Sense::invalid_field_in_parameter_list(32, None))
        );
        assert_eq!(
            parse(&list(&[(0, 1), (950, 51)]), &p, &limits()),
            Err(Sense::lba_out_of_range())
        );
        assert_eq!(
            parse(&list(&[(u64::MAX, 1)]), &p, &limits()),
            Err(Sense::lba_out_of_range())
        );
        // Zero-length descriptors still have their LBA checked.
        assert_eq!(
            parse(&list(&[(1001, 0)]), &p, &limits()),
            Err(Sense::lba_out_of_range())
        );
        let none = UnmapParams {
            max_descriptors: 0,
            ..limits()
        };
        assert_eq!(parse(&list(&[]), &p, &none), Ok(vec![]));
    }
}
