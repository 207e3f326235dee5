//! Vital product data pages (SPC-4 7.8, SBC-3 6.6, ZBC-2 6.5), laid out
//! like the kernel's `spc_emulate_evpd_*` for a `fileio` disk: 0x00
//! supported pages, 0x80 unit serial number, 0x83 device identification
//! (NAA 6 + T10 vendor ID; the fabric-dependent target port designators are
//! the kernel's to add and are not produced here), 0x86 extended INQUIRY,
//! 0xB0 block limits, 0xB1 block device characteristics, 0xB2 logical block
//! provisioning and 0xB3 referrals; and for zoned devices 0xB6 zoned block
//! device characteristics; an optical drive has the SPC pages 0x00, 0x80
//! and 0x83 only. Every page starts with the device's peripheral device
//! type (0x14 for a host-managed zoned device, 0x05 for an optical drive).

use crate::bytes::{ascii_field, put16, put32, put64, put_bytes};
use crate::device::{DeviceParams, DeviceState};
use crate::sense::Sense;
use crate::zbc::ZonedModel;

/// The VPD pages of every device, in the order page 0x00 lists them.
pub const SUPPORTED_PAGES: [u8; 8] = [0x00, 0x80, 0x83, 0x86, 0xb0, 0xb1, 0xb2, 0xb3];

/// The zoned block device characteristics page, listed after
/// [`SUPPORTED_PAGES`] for zoned devices.
pub const ZONED_CHARACTERISTICS: u8 = 0xb6;

/// A VPD page of `total` bytes with the 4-byte header filled in.
fn page_buf(params: &DeviceParams, code: u8, total: usize) -> Vec<u8> {
    let mut b = vec![0u8; total];
    put_bytes(&mut b, 0, &[params.peripheral_device_type(), code]);
    put16(&mut b, 2, total.saturating_sub(4) as u16);
    b
}

/// The VPD page `code`, or INVALID FIELD IN CDB (byte 2) if we have none.
pub fn page(params: &DeviceParams, state: &DeviceState, code: u8) -> Result<Vec<u8>, Sense> {
    if params.mmc.is_some() && !MMC_PAGES.contains(&code) {
        return Err(Sense::invalid_field_in_cdb(2, None));
    }
    Ok(match code {
        0x00 => supported_pages(params),
        0x80 => unit_serial(params),
        0x83 => device_identification(params),
        0x86 => extended_inquiry(params, state),
        0xb0 => block_limits(params),
        0xb1 => block_device_characteristics(params),
        0xb2 => logical_block_provisioning(params),
        0xb3 => referrals(params),
        ZONED_CHARACTERISTICS if params.zoned.is_some() => zoned_characteristics(params),
        _ => return Err(Sense::invalid_field_in_cdb(2, None)),
    })
}

/// The VPD pages of an optical drive: those of SPC, none of SBC's.
pub const MMC_PAGES: [u8; 3] = [0x00, 0x80, 0x83];

/// Page 0x00: the supported VPD page codes, with 0xB6 for a zoned device
/// and only [`MMC_PAGES`] for an optical drive.
pub fn supported_pages(params: &DeviceParams) -> Vec<u8> {
    let mut pages = if params.mmc.is_some() {
        MMC_PAGES.to_vec()
    } else {
        SUPPORTED_PAGES.to_vec()
    };
    if params.zoned.is_some() {
        pages.push(ZONED_CHARACTERISTICS);
    }
    let mut b = page_buf(params, 0x00, 4 + pages.len());
    put_bytes(&mut b, 4, &pages);
    b
}

/// The serial as the kernel keeps it: at most 254 bytes (so that the
/// NUL-terminated copy fits a one-byte length).
fn serial(params: &DeviceParams) -> Option<&[u8]> {
    params
        .unit_serial
        .as_deref()
        .map(|s| s.as_bytes().get(..s.len().min(254)).unwrap_or_default())
}

/// Page 0x80: the unit serial number, NUL terminated like the kernel's;
/// empty when there is no serial.
pub fn unit_serial(params: &DeviceParams) -> Vec<u8> {
    match serial(params) {
        Some(s) => {
            let mut b = page_buf(params, 0x80, 4 + s.len() + 1);
            put_bytes(&mut b, 4, s);
            b
        }
        None => page_buf(params, 0x80, 4),
    }
}

/// The 16-byte NAA IEEE Registered Extended designator (NAA 6): the IEEE
/// company ID, then up to 25 hex digits of the unit serial (non-hex
/// characters skipped) as vendor specific identifier and extension, the way
/// the kernel's `spc_gen_naa_6h_vendor_specific` derives it.
pub fn naa_designator(company_id: u32, serial: &[u8]) -> [u8; 16] {
    let mut d = [0u8; 16];
    d[0] = 0x60 | ((company_id >> 20) & 0x0f) as u8;
    d[1] = (company_id >> 12) as u8;
    d[2] = (company_id >> 4) as u8;
    d[3] = ((company_id & 0x0f) << 4) as u8;
    // Nibble 7 (low half of byte 3) onwards; 25 nibbles fill bytes 3..16.
    let digits = serial
        .iter()
        .filter_map(|&c| char::from(c).to_digit(16))
        .take(25);
    for (k, v) in digits.enumerate() {
        let nibble = 7 + k;
        if let Some(byte) = d.get_mut(nibble / 2) {
            if nibble % 2 == 0 {
                *byte |= (v as u8) << 4;
            } else {
                *byte |= v as u8;
            }
        }
    }
    d
}

/// Page 0x83: NAA 6 designator (only with a serial, like the kernel), a
/// T10 vendor ID designator `<vendor><product>:<serial>\0` (vendor padded
/// to 8 bytes, NUL terminated, as the kernel builds it), the relative
/// target port and target port group of the port commands come in
/// through, if known, and the logical unit group, if any (in LIO's order).
pub fn device_identification(params: &DeviceParams) -> Vec<u8> {
    let mut body = Vec::new();
    if let Some(s) = serial(params) {
        // Binary code set, LU association, designator type 3 (NAA).
        body.extend_from_slice(&[0x01, 0x03, 0x00, 0x10]);
        body.extend_from_slice(&naa_designator(params.company_id, s));
    }
    let mut t10 = ascii_field(&params.vendor, 8);
    if let Some(s) = serial(params) {
        t10.extend(params.product.bytes().take(16));
        t10.push(b':');
        t10.extend_from_slice(s);
    }
    t10.push(0);
    t10.truncate(255);
    // ASCII code set, LU association, designator type 1 (T10 vendor ID).
    body.extend_from_slice(&[0x02, 0x01, 0x00, t10.len() as u8]);
    body.extend_from_slice(&t10);
    if let Some(port) = params.target_port {
        // Binary code set, target port association (01b), with the
        // protocol identifier and PIV when the fabric is known.
        let (proto, piv) = port.protocol.map_or((0, 0), |p| ((p & 0x0f) << 4, 0x80));
        // Designator type 4: relative target port.
        body.extend_from_slice(&[proto | 0x01, piv | 0x14, 0x00, 0x04, 0x00, 0x00]);
        body.extend_from_slice(&port.rtpi.to_be_bytes());
        if let Some(group) = port.group {
            // Designator type 5: target port group.
            body.extend_from_slice(&[proto | 0x01, piv | 0x15, 0x00, 0x04, 0x00, 0x00]);
            body.extend_from_slice(&group.to_be_bytes());
        }
    }
    if let Some(group) = params.lu_group {
        // Binary, LU association, designator type 6 (logical unit group).
        body.extend_from_slice(&[0x01, 0x06, 0x00, 0x04, 0x00, 0x00]);
        body.extend_from_slice(&group.to_be_bytes());
    }
    let mut b = page_buf(params, 0x83, 4 + body.len());
    put_bytes(&mut b, 4, &body);
    b
}

/// Page 0x86: HEADSUP/ORDSUP/SIMPSUP, and V_SUP while the write cache is
/// enabled (as the kernel reports it).
pub fn extended_inquiry(params: &DeviceParams, state: &DeviceState) -> Vec<u8> {
    let mut b = page_buf(params, 0x86, 64);
    put_bytes(&mut b, 5, &[0x07, u8::from(state.write_cache)]);
    b
}

/// Page 0xB0: block limits. Like the kernel, the page is 0x3C long with
/// thin provisioning and only 0x10 long without it (which leaves the
/// maximum write same length out).
pub fn block_limits(params: &DeviceParams) -> Vec<u8> {
    let mut b = vec![0u8; 64];
    put_bytes(&mut b, 0, &[params.peripheral_device_type(), 0xb0]);
    // WSNZ: WRITE SAME with 0 blocks is refused; MAXIMUM COMPARE AND
    // WRITE LENGTH.
    put_bytes(&mut b, 4, &[0x01, params.max_compare_write_blocks]);
    put16(&mut b, 6, 1); // optimal transfer length granularity
    put32(&mut b, 8, params.max_transfer_blocks);
    put32(&mut b, 12, params.optimal_transfer_blocks);
    if let Some(u) = &params.unmap {
        put32(&mut b, 20, u.max_lba_count);
        put32(&mut b, 24, u.max_descriptors);
        put32(&mut b, 28, u.granularity);
        put32(&mut b, 32, u.alignment & 0x7fff_ffff);
        if u.alignment != 0 {
            put_bytes(&mut b, 32, &[0x80 | ((u.alignment >> 24) & 0x7f) as u8]);
        }
    }
    put64(&mut b, 36, u64::from(params.max_write_same_blocks));
    let len = if params.unmap.is_some() { 0x3c } else { 0x10 };
    put16(&mut b, 2, len);
    b.truncate(4 + usize::from(len));
    b
}

/// Page 0xB1: medium rotation rate 1 (non-rotating) for solid-state
/// devices; ZONED = 01b for a host-aware device (SBC-4: a host-managed
/// one says so with its device type and leaves the field 0).
pub fn block_device_characteristics(params: &DeviceParams) -> Vec<u8> {
    let mut b = page_buf(params, 0xb1, 64);
    put16(&mut b, 4, u16::from(params.solid_state));
    if params
        .zoned
        .as_ref()
        .is_some_and(|z| z.model == ZonedModel::HostAware)
    {
        put_bytes(&mut b, 8, &[0x10]);
    }
    b
}

/// Page 0xB2: LBPU (UNMAP), LBPWS and LBPWS10 (WRITE SAME with UNMAP),
/// LBPRZ, and provisioning type 2 (thin) when thin provisioning is on.
pub fn logical_block_provisioning(params: &DeviceParams) -> Vec<u8> {
    let mut b = page_buf(params, 0xb2, 8);
    if let Some(u) = &params.unmap {
        let mut flags = 0x80 | 0x40 | 0x20;
        if u.reads_zeroes {
            flags |= 0x04;
        }
        put_bytes(&mut b, 5, &[flags, 0x02]);
    }
    b
}

/// Page 0xB3: referrals (none), as the kernel lists it.
pub fn referrals(params: &DeviceParams) -> Vec<u8> {
    page_buf(params, 0xb3, 16)
}

/// Page 0xB6 (ZBC-2 6.5.2), for zoned devices: URSWRZ, the optimal
/// numbers of open and of non-sequentially written sequential write
/// preferred zones, the maximum number of open sequential write required
/// zones (unused counts hold "not reported", all ones, as Linux's
/// `scsi_debug` reports them) and zone alignment method 0 (zone lengths are
/// constant but the last). Empty of fields for a device that is not zoned.
pub fn zoned_characteristics(params: &DeviceParams) -> Vec<u8> {
    let mut b = page_buf(params, ZONED_CHARACTERISTICS, 64);
    if let Some(z) = &params.zoned {
        put_bytes(&mut b, 4, &[u8::from(z.unrestricted_reads)]);
        put32(&mut b, 8, z.optimal_open);
        put32(&mut b, 12, z.optimal_non_sequential);
        put32(&mut b, 16, z.max_open);
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::UnmapParams;
    use crate::zbc::ZonedParams;

    fn params() -> DeviceParams {
        let mut p = DeviceParams::new(512, 2048);
        p.unit_serial = Some("1fe6b5a4-ab07-4d59-92a2-0c72ffbd63de".into());
        p
    }

    #[test]
    fn page_00() {
        assert_eq!(
            supported_pages(&params()),
            vec![0, 0, 0, 8, 0x00, 0x80, 0x83, 0x86, 0xb0, 0xb1, 0xb2, 0xb3]
        );
    }

    #[test]
    fn optical_drive_pages() {
        let mut p = params();
        p.mmc = Some(crate::mmc::MmcParams {
            drive: crate::mmc::Drive::DvdRom,
        });
        let s = DeviceState::default();
        assert_eq!(supported_pages(&p), vec![0x05, 0, 0, 3, 0x00, 0x80, 0x83]);
        assert_eq!(page(&p, &s, 0x80).unwrap()[..2], [0x05, 0x80]);
        for code in [0x86, 0xb0, 0xb1, 0xb2] {
            assert_eq!(
                page(&p, &s, code),
                Err(Sense::invalid_field_in_cdb(2, None))
            );
        }
    }

    #[test]
    fn page_80() {
        let b = unit_serial(&params());
        assert_eq!(&b[..4], &[0, 0x80, 0, 37]);
        assert_eq!(&b[4..40], b"1fe6b5a4-ab07-4d59-92a2-0c72ffbd63de");
        assert_eq!(b[40], 0);
        assert_eq!(b.len(), 41);
        assert_eq!(unit_serial(&DeviceParams::new(512, 1)), vec![0, 0x80, 0, 0]);
    }

    #[test]
    fn naa() {
        let d = naa_designator(0x001405, b"1fe6b5a4-ab07-4d59-92a2-0c72ffbd63de");
        assert_eq!(
            d,
            [
                0x60, 0x01, 0x40, 0x51, 0xfe, 0x6b, 0x5a, 0x4a, 0xb0, 0x74, 0xd5, 0x99, 0x2a, 0x20,
                0xc7, 0x2f
            ]
        );
        let d = naa_designator(0x001405, b"");
        assert_eq!(&d[..4], &[0x60, 0x01, 0x40, 0x50]);
        assert!(d[4..].iter().all(|&x| x == 0));
    }

    #[test]
    fn page_83() {
        let b = device_identification(&params());
        let t10 = b"LIO-ORG TCMU device:1fe6b5a4-ab07-4d59-92a2-0c72ffbd63de\0";
        assert_eq!(&b[..4], &[0, 0x83, 0, (20 + 4 + t10.len()) as u8]);
        assert_eq!(&b[4..8], &[0x01, 0x03, 0x00, 0x10]);
        assert_eq!(&b[8..12], &[0x60, 0x01, 0x40, 0x51]);
        assert_eq!(&b[24..28], &[0x02, 0x01, 0x00, t10.len() as u8]);
        assert_eq!(&b[28..], t10);

        let b = device_identification(&DeviceParams::new(512, 1));
        assert_eq!(b, b"\x00\x83\x00\x0d\x02\x01\x00\x09LIO-ORG \x00".to_vec());

        // The logical unit group follows the T10 designator.
        let mut p = DeviceParams::new(512, 1);
        p.lu_group = Some(3);
        let b = device_identification(&p);
        assert_eq!(&b[3..4], &[13 + 8]);
        assert_eq!(&b[17..], &[0x01, 0x06, 0x00, 0x04, 0, 0, 0, 3]);

        // The port's designators come before the logical unit group: an
        // iSCSI port (protocol 5, PIV) with relative port 2 in group 0x11.
        p.target_port = Some(crate::alua::TargetPortId {
            rtpi: 2,
            group: Some(0x11),
            protocol: Some(5),
        });
        let b = device_identification(&p);
        assert_eq!(&b[3..4], &[13 + 8 + 16]);
        assert_eq!(
            &b[17..33],
            &[
                0x51, 0x94, 0x00, 0x04, 0, 0, 0, 2, // relative target port 2
                0x51, 0x95, 0x00, 0x04, 0, 0, 0, 0x11, // target port group 0x11
            ]
        );
        assert_eq!(&b[33..], &[0x01, 0x06, 0x00, 0x04, 0, 0, 0, 3]);
        // An unknown fabric: no protocol identifier, PIV clear; no group.
        p.target_port = Some(crate::alua::TargetPortId {
            rtpi: 7,
            group: None,
            protocol: None,
        });
        p.lu_group = None;
        let b = device_identification(&p);
        assert_eq!(&b[17..], &[0x01, 0x14, 0x00, 0x04, 0, 0, 0, 7]);
    }

    #[test]
    fn page_86() {
        let b = extended_inquiry(&params(), &DeviceState::new(true));
        assert_eq!(b.len(), 64);
        assert_eq!(&b[..8], &[0, 0x86, 0, 0x3c, 0, 0x07, 0x01, 0]);
        assert_eq!(extended_inquiry(&params(), &DeviceState::new(false))[6], 0);
    }

    #[test]
    fn page_b0() {
        let mut p = params();
        p.max_transfer_blocks = 0x400;
        p.optimal_transfer_blocks = 0x80;
        let b = block_limits(&p);
        assert_eq!(b.len(), 20);
        assert_eq!(
            b,
            vec![0, 0xb0, 0, 0x10, 1, 1, 0, 1, 0, 0, 4, 0, 0, 0, 0, 0x80, 0, 0, 0, 0]
        );
        p.unmap = Some(UnmapParams {
            max_lba_count: 0x2000,
            max_descriptors: 1,
            granularity: 8,
            alignment: 3,
            reads_zeroes: true,
        });
        let b = block_limits(&p);
        assert_eq!(b.len(), 64);
        assert_eq!(&b[..4], &[0, 0xb0, 0, 0x3c]);
        assert_eq!(
            &b[20..44],
            &[0, 0, 0x20, 0, 0, 0, 0, 1, 0, 0, 0, 8, 0x80, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0x10, 0]
        );
        p.unmap = Some(UnmapParams::default());
        assert_eq!(&block_limits(&p)[32..36], &[0, 0, 0, 0]);
    }

    #[test]
    fn page_b1_b2_b3() {
        let mut p = params();
        assert_eq!(
            block_device_characteristics(&p)[..6],
            [0, 0xb1, 0, 0x3c, 0, 0]
        );
        p.solid_state = true;
        assert_eq!(
            block_device_characteristics(&p)[..6],
            [0, 0xb1, 0, 0x3c, 0, 1]
        );
        assert_eq!(
            logical_block_provisioning(&p),
            vec![0, 0xb2, 0, 4, 0, 0, 0, 0]
        );
        p.unmap = Some(UnmapParams::default());
        assert_eq!(
            logical_block_provisioning(&p),
            vec![0, 0xb2, 0, 4, 0, 0xe0, 0x02, 0]
        );
        p.unmap = Some(UnmapParams {
            reads_zeroes: true,
            ..UnmapParams::default()
        });
        assert_eq!(logical_block_provisioning(&p)[5], 0xe4);
        assert_eq!(referrals(&p), {
            let mut v = vec![0u8; 16];
            v[1] = 0xb3;
            v[3] = 0x0c;
            v
        });
    }

    #[test]
    fn zoned_pages() {
        let mut p = params();
        p.zoned = Some(ZonedParams::host_managed(7));
        let b = supported_pages(&p);
        assert_eq!(&b[..4], &[0x14, 0, 0, 9]);
        assert_eq!(b[12], 0xb6);
        for code in [0x00, 0x80, 0x83, 0x86, 0xb0, 0xb1, 0xb2, 0xb3, 0xb6] {
            let page = page(&p, &DeviceState::default(), code).unwrap_or_default();
            assert_eq!(&page[..2], &[0x14, code], "page {code:#x}");
        }
        let b = zoned_characteristics(&p);
        assert_eq!(b.len(), 64);
        assert_eq!(&b[..5], &[0x14, 0xb6, 0, 0x3c, 0x01]);
        assert_eq!(
            &b[8..20],
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 7]
        );
        assert!(b[20..].iter().all(|&x| x == 0), "zone alignment method 0");
        assert_eq!(block_device_characteristics(&p)[8], 0);

        p.zoned = Some(ZonedParams::host_aware(5));
        let b = zoned_characteristics(&p);
        assert_eq!(&b[..2], &[0x00, 0xb6]);
        assert_eq!(&b[8..20], &[0, 0, 0, 5, 0, 0, 0, 5, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(
            block_device_characteristics(&p)[8],
            0x10,
            "ZONED = host aware"
        );
        // Not zoned: no page 0xB6.
        assert_eq!(
            page(&params(), &DeviceState::default(), 0xb6),
            Err(Sense::invalid_field_in_cdb(2, None))
        );
    }

    #[test]
    fn unknown_page() {
        assert_eq!(
            page(&params(), &DeviceState::default(), 0x89),
            Err(Sense::invalid_field_in_cdb(2, None))
        );
        for code in SUPPORTED_PAGES {
            let b = page(&params(), &DeviceState::default(), code).unwrap_or_default();
            assert_eq!(b[1], code);
            assert_eq!(usize::from(u16::from_be_bytes([b[2], b[3]])) + 4, b.len());
        }
    }
}
