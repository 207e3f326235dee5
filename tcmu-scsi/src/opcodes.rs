//! REPORT SUPPORTED OPERATION CODES (SPC-4 6.35): the commands this crate
//! (plus the kernel, for REPORT LUNS) answers, with CDB usage bitmaps that
//! say which bits we honour.

use crate::bytes::{put16, put32};
use crate::device::DeviceParams;
use crate::opcode as op;
use crate::sense::Sense;
use crate::zbc;

/// One supported command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpcodeInfo {
    /// Operation code.
    pub opcode: u8,
    /// Service action, for commands that have them.
    pub service_action: Option<u16>,
    /// CDB usage data: the CDB length is its length.
    pub usage: &'static [u8],
}

const fn info(opcode: u8, usage: &'static [u8]) -> OpcodeInfo {
    OpcodeInfo {
        opcode,
        service_action: None,
        usage,
    }
}

const FF: u8 = 0xff;

#[rustfmt::skip]
const CAW_USAGE: &[u8] = &[
    op::COMPARE_AND_WRITE, 0x08, FF, FF, FF, FF, FF, FF, FF, FF, 0, 0, 0, FF, 0, 0,
];

#[rustfmt::skip]
const GET_LBA_STATUS_USAGE: &[u8] = &[
    op::SERVICE_ACTION_IN_16, op::SAI_GET_LBA_STATUS, FF, FF, FF, FF, FF, FF, FF, FF,
    FF, FF, FF, FF, 0, 0,
];

#[rustfmt::skip]
const WRITE_SAME_32_USAGE: &[u8] = &[
    op::VARIABLE_LENGTH, 0, 0, 0, 0, 0, 0, 0x18, 0x00, 0x0d, 0x19, 0, FF, FF, FF, FF,
    FF, FF, FF, FF, 0, 0, 0, 0, 0, 0, 0, 0, FF, FF, FF, FF,
];

#[rustfmt::skip]
const XCOPY_USAGE: &[u8] = &[
    op::EXTENDED_COPY, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, FF, FF, FF, FF, 0, 0,
];

#[rustfmt::skip]
const RCR_COPY_STATUS_USAGE: &[u8] = &[
    op::RECEIVE_COPY_RESULTS, crate::xcopy::SA_COPY_STATUS, FF, 0, 0, 0, 0, 0, 0, 0,
    FF, FF, FF, FF, 0, 0,
];

#[rustfmt::skip]
const RCR_OPERATING_PARAMETERS_USAGE: &[u8] = &[
    op::RECEIVE_COPY_RESULTS, crate::xcopy::SA_OPERATING_PARAMETERS, 0, 0, 0, 0, 0, 0, 0, 0,
    FF, FF, FF, FF, 0, 0,
];

/// ZBC IN (REPORT ZONES): ZONE START LBA, ALLOCATION LENGTH, PARTIAL and
/// REPORTING OPTIONS.
#[rustfmt::skip]
const REPORT_ZONES_USAGE: &[u8] = &[
    zbc::ZBC_IN, zbc::SA_REPORT_ZONES, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, 0xbf, 0,
];

/// ZBC OUT with service action `sa`: ZONE ID, ZONE COUNT and ALL.
#[rustfmt::skip]
const fn zone_action_usage(sa: u8) -> [u8; 16] {
    [zbc::ZBC_OUT, sa, FF, FF, FF, FF, FF, FF, FF, FF, 0, 0, FF, FF, 0x01, 0]
}

const CLOSE_ZONE_USAGE: [u8; 16] = zone_action_usage(zbc::SA_CLOSE_ZONE);
const FINISH_ZONE_USAGE: [u8; 16] = zone_action_usage(zbc::SA_FINISH_ZONE);
const OPEN_ZONE_USAGE: [u8; 16] = zone_action_usage(zbc::SA_OPEN_ZONE);
const RESET_WRITE_POINTER_USAGE: [u8; 16] = zone_action_usage(zbc::SA_RESET_WRITE_POINTER);

const fn zbc_info(opcode: u8, sa: u8, usage: &'static [u8]) -> OpcodeInfo {
    OpcodeInfo {
        opcode,
        service_action: Some(sa as u16),
        usage,
    }
}

/// Every command we support, UNMAP included (dropped without thin
/// provisioning by [`supported`]), and ZBC IN/OUT (dropped for devices that
/// are not zoned).
const ALL: &[OpcodeInfo] = &[
    info(op::TEST_UNIT_READY, &[op::TEST_UNIT_READY, 0, 0, 0, 0, 0]),
    info(op::REQUEST_SENSE, &[op::REQUEST_SENSE, 0x01, 0, 0, FF, 0]),
    info(op::READ_6, &[op::READ_6, 0x1f, FF, FF, FF, 0]),
    info(op::WRITE_6, &[op::WRITE_6, 0x1f, FF, FF, FF, 0]),
    info(op::INQUIRY, &[op::INQUIRY, 0x01, FF, FF, FF, 0]),
    info(op::MODE_SELECT_6, &[op::MODE_SELECT_6, 0x11, 0, 0, FF, 0]),
    info(op::MODE_SENSE_6, &[op::MODE_SENSE_6, 0x08, FF, FF, FF, 0]),
    info(
        op::START_STOP_UNIT,
        &[op::START_STOP_UNIT, 0x01, 0, 0, 0x01, 0],
    ),
    info(
        op::READ_CAPACITY_10,
        &[op::READ_CAPACITY_10, 0, FF, FF, FF, FF, 0, 0, 0x01, 0],
    ),
    info(
        op::READ_10,
        &[op::READ_10, 0x18, FF, FF, FF, FF, 0, FF, FF, 0],
    ),
    info(
        op::WRITE_10,
        &[op::WRITE_10, 0x18, FF, FF, FF, FF, 0, FF, FF, 0],
    ),
    info(
        op::WRITE_VERIFY_10,
        &[op::WRITE_VERIFY_10, 0x10, FF, FF, FF, FF, 0, FF, FF, 0],
    ),
    info(
        op::VERIFY_10,
        &[op::VERIFY_10, 0x16, FF, FF, FF, FF, 0, FF, FF, 0],
    ),
    info(
        op::PRE_FETCH_10,
        &[op::PRE_FETCH_10, 0x02, FF, FF, FF, FF, 0, FF, FF, 0],
    ),
    info(
        op::SYNCHRONIZE_CACHE_10,
        &[op::SYNCHRONIZE_CACHE_10, 0x02, FF, FF, FF, FF, 0, FF, FF, 0],
    ),
    info(
        op::WRITE_SAME_10,
        &[op::WRITE_SAME_10, 0x18, FF, FF, FF, FF, 0, FF, FF, 0],
    ),
    info(op::UNMAP, &[op::UNMAP, 0, 0, 0, 0, 0, 0, FF, FF, 0]),
    info(
        op::MODE_SELECT_10,
        &[op::MODE_SELECT_10, 0x11, 0, 0, 0, 0, 0, FF, FF, 0],
    ),
    info(
        op::MODE_SENSE_10,
        &[op::MODE_SENSE_10, 0x18, FF, FF, 0, 0, 0, FF, FF, 0],
    ),
    info(
        op::READ_16,
        &[
            op::READ_16,
            0x18,
            FF,
            FF,
            FF,
            FF,
            FF,
            FF,
            FF,
            FF,
            FF,
            FF,
            FF,
            FF,
            0,
            0,
        ],
    ),
    info(
        op::WRITE_16,
        &[
            op::WRITE_16,
            0x18,
            FF,
            FF,
            FF,
            FF,
            FF,
            FF,
            FF,
            FF,
            FF,
            FF,
            FF,
            FF,
            0,
            0,
        ],
    ),
    info(
        op::WRITE_VERIFY_16,
        &[
            op::WRITE_VERIFY_16,
            0x10,
            FF,
            FF,
            FF,
            FF,
            FF,
            FF,
            FF,
            FF,
            FF,
            FF,
            FF,
            FF,
            0,
            0,
        ],
    ),
    info(
        op::VERIFY_16,
        &[
            op::VERIFY_16,
            0x16,
            FF,
            FF,
            FF,
            FF,
            FF,
            FF,
            FF,
            FF,
            FF,
            FF,
            FF,
            FF,
            0,
            0,
        ],
    ),
    info(
        op::PRE_FETCH_16,
        &[
            op::PRE_FETCH_16,
            0x02,
            FF,
            FF,
            FF,
            FF,
            FF,
            FF,
            FF,
            FF,
            FF,
            FF,
            FF,
            FF,
            0,
            0,
        ],
    ),
    info(
        op::SYNCHRONIZE_CACHE_16,
        &[
            op::SYNCHRONIZE_CACHE_16,
            0x02,
            FF,
            FF,
            FF,
            FF,
            FF,
            FF,
            FF,
            FF,
            FF,
            FF,
            FF,
            FF,
            0,
            0,
        ],
    ),
    info(
        op::WRITE_SAME_16,
        &[
            op::WRITE_SAME_16,
            0x19,
            FF,
            FF,
            FF,
            FF,
            FF,
            FF,
            FF,
            FF,
            FF,
            FF,
            FF,
            FF,
            0,
            0,
        ],
    ),
    OpcodeInfo {
        opcode: op::SERVICE_ACTION_IN_16,
        service_action: Some(op::SAI_READ_CAPACITY_16 as u16),
        usage: &[
            op::SERVICE_ACTION_IN_16,
            op::SAI_READ_CAPACITY_16,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            FF,
            FF,
            FF,
            FF,
            0,
            0,
        ],
    },
    info(
        op::READ_12,
        &[op::READ_12, 0x18, FF, FF, FF, FF, FF, FF, FF, FF, 0, 0],
    ),
    info(
        op::WRITE_12,
        &[op::WRITE_12, 0x18, FF, FF, FF, FF, FF, FF, FF, FF, 0, 0],
    ),
    info(op::FORMAT_UNIT, &[op::FORMAT_UNIT, 0x30, 0, 0, 0, 0]),
    info(op::COMPARE_AND_WRITE, CAW_USAGE),
    OpcodeInfo {
        opcode: op::SERVICE_ACTION_IN_16,
        service_action: Some(op::SAI_GET_LBA_STATUS as u16),
        usage: GET_LBA_STATUS_USAGE,
    },
    OpcodeInfo {
        opcode: op::EXTENDED_COPY,
        service_action: Some(0),
        usage: XCOPY_USAGE,
    },
    OpcodeInfo {
        opcode: op::RECEIVE_COPY_RESULTS,
        service_action: Some(crate::xcopy::SA_COPY_STATUS as u16),
        usage: RCR_COPY_STATUS_USAGE,
    },
    OpcodeInfo {
        opcode: op::RECEIVE_COPY_RESULTS,
        service_action: Some(crate::xcopy::SA_OPERATING_PARAMETERS as u16),
        usage: RCR_OPERATING_PARAMETERS_USAGE,
    },
    OpcodeInfo {
        opcode: op::MAINTENANCE_IN,
        service_action: Some(op::MI_REPORT_TARGET_PGS as u16),
        usage: &[
            op::MAINTENANCE_IN,
            0x20 | op::MI_REPORT_TARGET_PGS,
            0,
            0,
            0,
            0,
            FF,
            FF,
            FF,
            FF,
            0,
            0,
        ],
    },
    OpcodeInfo {
        opcode: op::MAINTENANCE_OUT,
        service_action: Some(op::MO_SET_TARGET_PGS as u16),
        usage: &[
            op::MAINTENANCE_OUT,
            op::MO_SET_TARGET_PGS,
            0,
            0,
            0,
            0,
            FF,
            FF,
            FF,
            FF,
            0,
            0,
        ],
    },
    OpcodeInfo {
        opcode: op::VARIABLE_LENGTH,
        service_action: Some(op::VL_WRITE_SAME_32),
        usage: WRITE_SAME_32_USAGE,
    },
    zbc_info(zbc::ZBC_OUT, zbc::SA_CLOSE_ZONE, &CLOSE_ZONE_USAGE),
    zbc_info(zbc::ZBC_OUT, zbc::SA_FINISH_ZONE, &FINISH_ZONE_USAGE),
    zbc_info(zbc::ZBC_OUT, zbc::SA_OPEN_ZONE, &OPEN_ZONE_USAGE),
    zbc_info(
        zbc::ZBC_OUT,
        zbc::SA_RESET_WRITE_POINTER,
        &RESET_WRITE_POINTER_USAGE,
    ),
    zbc_info(zbc::ZBC_IN, zbc::SA_REPORT_ZONES, REPORT_ZONES_USAGE),
    // REPORT LUNS is answered by the kernel for TCMU devices.
    info(0xa0, &[0xa0, 0, FF, 0, 0, 0, FF, FF, FF, FF, 0, 0]),
    OpcodeInfo {
        opcode: op::MAINTENANCE_IN,
        service_action: Some(op::MI_REPORT_SUPPORTED_OPCODES as u16),
        usage: &[
            op::MAINTENANCE_IN,
            op::MI_REPORT_SUPPORTED_OPCODES,
            0x87,
            FF,
            FF,
            FF,
            FF,
            FF,
            FF,
            FF,
            0,
            0,
        ],
    },
];

/// The commands supported by a device with these parameters.
pub fn supported(params: &DeviceParams) -> impl Iterator<Item = &'static OpcodeInfo> + '_ {
    ALL.iter().filter(move |i| match i.opcode {
        op::UNMAP => params.unmap.is_some(),
        op::COMPARE_AND_WRITE => params.max_compare_write_blocks > 0,
        op::EXTENDED_COPY | op::RECEIVE_COPY_RESULTS => params.third_party_copy,
        op::MAINTENANCE_OUT => !params.port_groups.is_empty(),
        zbc::ZBC_IN | zbc::ZBC_OUT => params.zoned.is_some(),
        op::MAINTENANCE_IN => {
            i.service_action != Some(u16::from(op::MI_REPORT_TARGET_PGS))
                || !params.port_groups.is_empty()
        }
        _ => true,
    })
}

/// The command timeouts descriptor (no timeouts reported).
const TIMEOUTS: [u8; 12] = [0, 0x0a, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];

/// Answer REPORT SUPPORTED OPERATION CODES (before truncation).
pub fn report(
    params: &DeviceParams,
    rctd: bool,
    options: u8,
    opcode: u8,
    service_action: u16,
) -> Result<Vec<u8>, Sense> {
    let bad_options = Sense::invalid_field_in_cdb(2, Some(2));
    if options == 0 {
        let mut b = vec![0u8; 4];
        for i in supported(params) {
            let mut d = [0u8; 8];
            d[0] = i.opcode;
            put16(&mut d, 2, i.service_action.unwrap_or(0));
            d[5] = (u8::from(rctd) << 1) | u8::from(i.service_action.is_some());
            put16(&mut d, 6, i.usage.len() as u16);
            b.extend_from_slice(&d);
            if rctd {
                b.extend_from_slice(&TIMEOUTS);
            }
        }
        let len = (b.len() - 4) as u32;
        put32(&mut b, 0, len);
        return Ok(b);
    }
    if options > 3 {
        return Err(bad_options);
    }
    let mut found = None;
    for i in supported(params).filter(|i| i.opcode == opcode) {
        match (options, i.service_action) {
            (1, Some(_)) => return Err(Sense::invalid_field_in_cdb(3, None)),
            (2, None) => return Err(Sense::invalid_field_in_cdb(3, None)),
            (1, None) | (3, None) => found = Some(i),
            (_, Some(sa)) if sa == service_action => found = Some(i),
            _ => {}
        }
    }
    let ctdp = u8::from(rctd) << 7;
    Ok(match found {
        None => vec![0, ctdp | 0x01, 0, 0],
        Some(i) => {
            let mut b = vec![0, ctdp | 0x03, 0, 0];
            put16(&mut b, 2, i.usage.len() as u16);
            b.extend_from_slice(i.usage);
            if rctd {
                b.extend_from_slice(&TIMEOUTS);
            }
            b
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::UnmapParams;

    #[test]
    fn usage_lengths_match_groups() {
        for i in ALL {
            assert_eq!(i.usage.first(), Some(&i.opcode));
            // Variable-length CDBs (WRITE SAME (32)) are 32 bytes here.
            assert_eq!(
                op::cdb_len(i.opcode).unwrap_or(32),
                i.usage.len(),
                "{:02x}",
                i.opcode
            );
        }
    }

    #[test]
    fn all_commands() {
        let mut p = DeviceParams::new(512, 100);
        let b = report(&p, false, 0, 0, 0).unwrap_or_default();
        // Without thin provisioning, copy offload, ALUA or zones: UNMAP,
        // EXTENDED COPY, two RECEIVE COPY RESULTS, RTPG, STPG and the five
        // ZBC IN/OUT service actions are left out.
        let n = ALL.len() - 11;
        assert_eq!(b.len(), 4 + 8 * n);
        assert_eq!(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize, 8 * n);
        assert!(!b[4..].chunks(8).any(|c| c[0] == op::UNMAP));
        assert!(b[4..].chunks(8).any(|c| c[0] == op::READ_10 && c[7] == 10));
        p.unmap = Some(UnmapParams::default());
        p.third_party_copy = true;
        p.port_groups = vec![crate::alua::PortGroup::new(0)];
        p.zoned = Some(crate::zbc::ZonedParams::host_managed(1));
        let b = report(&p, true, 0, 0, 0).unwrap_or_default();
        assert_eq!(b.len(), 4 + 20 * ALL.len());
        // First descriptor: TEST UNIT READY with CTDP.
        assert_eq!(&b[4..12], &[0, 0, 0, 0, 0, 0x02, 0, 6]);
        assert_eq!(&b[12..24], &TIMEOUTS);
    }

    #[test]
    fn one_command() {
        let p = DeviceParams::new(512, 100);
        let b = report(&p, false, 1, op::READ_10, 0).unwrap_or_default();
        assert_eq!(&b[..4], &[0, 0x03, 0, 10]);
        assert_eq!(&b[4..], &[0x28, 0x18, FF, FF, FF, FF, 0, FF, FF, 0]);
        assert_eq!(report(&p, false, 1, 0xc5, 0), Ok(vec![0, 0x01, 0, 0]));
        assert_eq!(report(&p, false, 1, op::UNMAP, 0), Ok(vec![0, 0x01, 0, 0]));
        assert_eq!(
            report(&p, false, 1, op::SERVICE_ACTION_IN_16, 0x10),
            Err(Sense::invalid_field_in_cdb(3, None))
        );
        let b = report(&p, false, 2, op::SERVICE_ACTION_IN_16, 0x10).unwrap_or_default();
        assert_eq!(&b[..4], &[0, 0x03, 0, 16]);
        assert_eq!(
            report(&p, false, 2, op::SERVICE_ACTION_IN_16, 0x11),
            Ok(vec![0, 0x01, 0, 0])
        );
        assert_eq!(
            report(&p, false, 2, op::READ_10, 0),
            Err(Sense::invalid_field_in_cdb(3, None))
        );
        // A variable-length CDB with its service action.
        let b = report(&p, false, 2, op::VARIABLE_LENGTH, op::VL_WRITE_SAME_32).unwrap_or_default();
        assert_eq!(&b[..4], &[0, 0x03, 0, 32]);
        assert_eq!(b[4], op::VARIABLE_LENGTH);
        // ZBC IN/OUT only for a zoned device.
        assert_eq!(
            report(&p, false, 2, zbc::ZBC_IN, 0),
            Ok(vec![0, 0x01, 0, 0])
        );
        let mut z = p.clone();
        z.zoned = Some(crate::zbc::ZonedParams::host_aware(1));
        let b = report(&z, false, 2, zbc::ZBC_IN, 0).unwrap_or_default();
        assert_eq!(&b[..4], &[0, 0x03, 0, 16]);
        assert_eq!(&b[4..6], &[0x95, 0x00]);
        let b = report(&z, false, 2, zbc::ZBC_OUT, 4).unwrap_or_default();
        assert_eq!(&b[4..6], &[0x94, 0x04]);
        assert_eq!(
            report(&z, false, 2, zbc::ZBC_OUT, 5),
            Ok(vec![0, 0x01, 0, 0])
        );
        let b = report(&p, true, 3, op::READ_10, 0).unwrap_or_default();
        assert_eq!(b[1], 0x83);
        assert_eq!(b.len(), 4 + 10 + 12);
        assert_eq!(
            report(&p, false, 4, op::READ_10, 0),
            Err(Sense::invalid_field_in_cdb(2, Some(2)))
        );
    }
}
