//! INQUIRY: the standard data (SPC-4 6.6.2) and dispatch to the VPD pages.
//!
//! Byte for byte what the kernel's `spc_emulate_inquiry_std` answers for a
//! `fileio` disk: SCCS and TPGS from the device's ALUA port groups, 3PC
//! when EXTENDED COPY is served.

use crate::alua;
use crate::bytes::{ascii_field, put16, put_bytes};
use crate::device::{DeviceParams, DeviceState};
use crate::sense::Sense;
use crate::vpd;

/// Peripheral qualifier 0 / device type 0: a connected direct-access block
/// device.
pub const PERIPHERAL_DISK: u8 = 0x00;

/// Version descriptor SAM-5.
pub const VERSION_SAM5: u16 = 0x00a0;
/// Version descriptor SPC-4.
pub const VERSION_SPC4: u16 = 0x0460;
/// Version descriptor SBC-3.
pub const VERSION_SBC3: u16 = 0x04c0;

/// Standard INQUIRY data: 36 bytes, or 96 with version descriptors (see
/// [`DeviceParams::version_descriptors`]) in the kernel's fixed slots:
/// SAM-5 at byte 58, the transport at 60, SPC-4 at 62, SBC-3 (MMC-6 for an
/// optical drive) at 64. An optical drive sets RMB.
pub fn standard(params: &DeviceParams) -> Vec<u8> {
    let len = if params.version_descriptors.is_some() {
        96
    } else {
        36
    };
    let mut b = vec![0u8; len];
    put_bytes(&mut b, 0, &[params.peripheral_device_type()]);
    if params.mmc.is_some() {
        put_bytes(&mut b, 1, &[0x80]); // RMB: the medium is removable
    }
    // VERSION = 6 (SPC-4); NORMACA = HISUP = 0 and RESPONSE DATA FORMAT = 2,
    // as the kernel sets them.
    put_bytes(&mut b, 2, &[0x06, 0x02, (len - 5) as u8]);
    // Byte 5: SCCS (set by LIO for every device whose ALUA it knows), TPGS
    // from the port groups, 3PC with EXTENDED COPY. Byte 6: no MULTIP.
    // Byte 7: CMDQUE.
    let tpgs = alua::tpgs_bits(&params.port_groups);
    let sccs = if params.port_groups.is_empty() {
        0
    } else {
        0x80
    };
    let three_pc = if params.third_party_copy { 0x08 } else { 0 };
    put_bytes(&mut b, 5, &[sccs | tpgs | three_pc]);
    put_bytes(&mut b, 7, &[0x02]);
    put_bytes(&mut b, 8, &ascii_field(&params.vendor, 8));
    put_bytes(&mut b, 16, &ascii_field(&params.product, 16));
    put_bytes(&mut b, 32, &ascii_field(&params.revision, 4));
    if let Some(transport) = params.version_descriptors {
        // Fixed slots, as the kernel fills them: an unknown transport (0)
        // leaves its slot empty rather than moving SPC-4 and SBC-3 up.
        let command_set = if params.mmc.is_some() {
            crate::mmc::VERSION_MMC6
        } else {
            VERSION_SBC3
        };
        let descriptors = [VERSION_SAM5, transport, VERSION_SPC4, command_set];
        for (i, d) in descriptors.into_iter().enumerate() {
            put16(&mut b, 58 + 2 * i, d);
        }
    }
    b
}

/// Answer an INQUIRY (before allocation-length truncation).
///
/// EVPD = 0 with a non-zero page code, or an unknown VPD page, is INVALID
/// FIELD IN CDB pointing at byte 2.
pub fn inquiry(
    params: &DeviceParams,
    state: &DeviceState,
    evpd: bool,
    page_code: u8,
) -> Result<Vec<u8>, Sense> {
    if evpd {
        vpd::page(params, state, page_code)
    } else if page_code != 0 {
        Err(Sense::invalid_field_in_cdb(2, None))
    } else {
        Ok(standard(params))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_layout_36() {
        let p = DeviceParams::new(512, 1000);
        let b = standard(&p);
        assert_eq!(b.len(), 36);
        assert_eq!(&b[..8], &[0x00, 0x00, 0x06, 0x02, 31, 0x00, 0x00, 0x02]);
        assert_eq!(&b[8..16], b"LIO-ORG ");
        assert_eq!(&b[16..32], b"TCMU device     ");
        assert_eq!(&b[32..36], b"0002");
    }

    #[test]
    fn standard_layout_96() {
        let mut p = DeviceParams::new(512, 1000);
        p.version_descriptors = Some(0x0c60);
        p.vendor = "A-VERY-LONG-VENDOR".into();
        p.product = "p".into();
        p.revision = "12345".into();
        let b = standard(&p);
        assert_eq!(b.len(), 96);
        assert_eq!(b[4], 91);
        assert_eq!(&b[8..16], b"A-VERY-L");
        assert_eq!(&b[16..32], b"p               ");
        assert_eq!(&b[32..36], b"1234");
        assert_eq!(
            &b[58..66],
            &[0x00, 0xa0, 0x0c, 0x60, 0x04, 0x60, 0x04, 0xc0]
        );
        assert!(b[36..58].iter().all(|&x| x == 0));
        assert!(b[66..].iter().all(|&x| x == 0));
    }

    #[test]
    fn unknown_transport_keeps_its_slot() {
        let mut p = DeviceParams::new(512, 1000);
        p.version_descriptors = Some(0);
        let b = standard(&p);
        assert_eq!(
            &b[58..66],
            &[0x00, 0xa0, 0x00, 0x00, 0x04, 0x60, 0x04, 0xc0]
        );
        assert!(b[66..].iter().all(|&x| x == 0));
    }

    #[test]
    fn host_managed_device_type() {
        let mut p = DeviceParams::new(512, 1000);
        p.zoned = Some(crate::zbc::ZonedParams::host_managed(8));
        assert_eq!(standard(&p)[0], 0x14);
        p.zoned = Some(crate::zbc::ZonedParams::host_aware(8));
        assert_eq!(standard(&p)[0], 0x00);
    }

    #[test]
    fn optical_drive() {
        let mut p = DeviceParams::new(2048, 1000);
        p.mmc = Some(crate::mmc::MmcParams {
            drive: crate::mmc::Drive::DvdRam,
        });
        let b = standard(&p);
        assert_eq!(&b[..3], &[0x05, 0x80, 0x06]);
        p.version_descriptors = Some(0);
        assert_eq!(&standard(&p)[64..66], &[0x04, 0xe0]);
    }

    #[test]
    fn page_code_without_evpd() {
        let p = DeviceParams::new(512, 1000);
        let s = DeviceState::default();
        assert_eq!(
            inquiry(&p, &s, false, 0x80),
            Err(Sense::invalid_field_in_cdb(2, None))
        );
        assert_eq!(inquiry(&p, &s, false, 0), Ok(standard(&p)));
        assert_eq!(
            inquiry(&p, &s, true, 0x81),
            Err(Sense::invalid_field_in_cdb(2, None))
        );
    }
}
