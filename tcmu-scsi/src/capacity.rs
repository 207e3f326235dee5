//! READ CAPACITY (10) and (16) parameter data (SBC-3 5.15, 5.16).

use crate::bytes::{put32, put64};
use crate::device::DeviceParams;

/// READ CAPACITY (10): last LBA (0xFFFFFFFF when it does not fit, telling
/// the initiator to use READ CAPACITY (16)) and block length.
pub fn read_capacity_10(params: &DeviceParams) -> Vec<u8> {
    let mut b = vec![0u8; 8];
    let last = u32::try_from(params.last_lba()).unwrap_or(u32::MAX);
    put32(&mut b, 0, last);
    put32(&mut b, 4, params.block_size);
    b
}

/// READ CAPACITY (16): 32 bytes with last LBA, block length, no protection,
/// one logical block per physical block, LBPME/LBPRZ when thin
/// provisioning is on, and for a zoned device RC BASIS 01b: the last LBA
/// is the device's capacity (which Linux then takes as it is, rather than
/// the MAXIMUM LBA of a REPORT ZONES).
pub fn read_capacity_16(params: &DeviceParams) -> Vec<u8> {
    let mut b = vec![0u8; 32];
    put64(&mut b, 0, params.last_lba());
    put32(&mut b, 8, params.block_size);
    if params.zoned.is_some() {
        if let Some(x) = b.get_mut(12) {
            *x = 0x10;
        }
    }
    if let Some(u) = &params.unmap {
        let mut flags = 0x80; // LBPME
        if u.reads_zeroes {
            flags |= 0x40; // LBPRZ
        }
        if let Some(x) = b.get_mut(14) {
            *x = flags;
        }
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::UnmapParams;

    #[test]
    fn rc10() {
        let p = DeviceParams::new(512, 2048);
        assert_eq!(read_capacity_10(&p), vec![0, 0, 0x07, 0xff, 0, 0, 2, 0]);
        let p = DeviceParams::new(4096, 1 << 32);
        assert_eq!(
            read_capacity_10(&p),
            vec![0xff, 0xff, 0xff, 0xff, 0, 0, 0x10, 0]
        );
        let p = DeviceParams::new(4096, (1 << 32) + 1);
        assert_eq!(&read_capacity_10(&p)[..4], &[0xff; 4]);
        let p = DeviceParams::new(4096, 0xffff_ffff);
        assert_eq!(&read_capacity_10(&p)[..4], &[0xff, 0xff, 0xff, 0xfe]);
    }

    #[test]
    fn rc16() {
        let mut p = DeviceParams::new(4096, (1 << 33) + 1);
        let b = read_capacity_16(&p);
        assert_eq!(b.len(), 32);
        assert_eq!(&b[..8], &[0, 0, 0, 2, 0, 0, 0, 0]);
        assert_eq!(&b[8..12], &[0, 0, 0x10, 0]);
        assert!(b[12..].iter().all(|&x| x == 0));
        p.unmap = Some(UnmapParams::default());
        assert_eq!(read_capacity_16(&p)[14], 0x80);
        p.unmap = Some(UnmapParams {
            reads_zeroes: true,
            ..UnmapParams::default()
        });
        assert_eq!(read_capacity_16(&p)[14], 0xc0);
        assert_eq!(read_capacity_16(&p)[12], 0, "RC BASIS 0");
        p.zoned = Some(crate::zbc::ZonedParams::host_managed(4));
        assert_eq!(read_capacity_16(&p)[12], 0x10, "RC BASIS 01b");
    }
}
