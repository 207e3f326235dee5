//! FORMAT UNIT of an MM device (MMC-6 6.5): the CDB and its parameter
//! list, checked; the formatting itself is the handler's.
//!
//! The one format a DVD-RAM disc takes here is the full format (format
//! type 00h) of its whole capacity with 2048-byte blocks, as READ FORMAT
//! CAPACITIES offers it: FMTDATA set, FORMAT CODE 001b, a 4-byte format
//! list header (FOV, DCRT, IMMED and VS allowed; TRY-OUT and reserved bits
//! not), then one 8-byte format descriptor (NUMBER OF BLOCKS equal to the
//! capacity, FORMAT TYPE 00h, block length 2048).

use crate::bytes::{be16, be24, be32, u8_at};
use crate::mmc::{DriveState, BLOCK_SIZE};
use crate::sense::Sense;

/// Length of the parameter list: the header and one format descriptor.
pub const PARAMETER_LIST_LEN: usize = 12;

/// A FORMAT UNIT that may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FormatRequest {
    /// IMMED: answer GOOD at once and format in the background, reporting
    /// progress in the sense data of REQUEST SENSE and TEST UNIT READY.
    pub immed: bool,
}

/// Checks a FORMAT UNIT (`cdb`, and `list`, its data-out) against the
/// drive: a loaded disc (NOT READY otherwise) that takes writes (WRITE
/// PROTECTED otherwise), then the fields.
pub fn format_unit(cdb: &[u8], list: &[u8], state: &DriveState) -> Result<FormatRequest, Sense> {
    let m = state.medium_or_not_ready()?;
    if !m.writable || !state.drive.writes() {
        return Err(Sense::write_protected());
    }
    let b1 = u8_at(cdb, 1);
    if b1 & 0x10 == 0 {
        return Err(Sense::invalid_field_in_cdb(1, Some(4))); // FMTDATA
    }
    if b1 & 0x07 != 0x01 {
        return Err(Sense::invalid_field_in_cdb(1, Some(2))); // FORMAT CODE
    }
    if u8_at(cdb, 3) != 0 {
        return Err(Sense::invalid_field_in_cdb(3, None));
    }
    if u8_at(cdb, 4) != 0 {
        return Err(Sense::invalid_field_in_cdb(4, None));
    }
    if list.len() < PARAMETER_LIST_LEN {
        return Err(Sense::parameter_list_length_error());
    }
    let h1 = u8_at(list, 1);
    // Byte 1: FOV, reserved, DCRT, reserved, reserved, TRY-OUT, IMMED, VS.
    // Without FOV only IMMED and VS may be set.
    if h1 & 0x80 == 0 && h1 & 0x7c != 0 {
        return Err(Sense::invalid_field_in_parameter_list(1, Some(6)));
    }
    if h1 & 0x5c != 0 {
        return Err(Sense::invalid_field_in_parameter_list(1, Some(6)));
    }
    if be16(list, 2) != 8 {
        return Err(Sense::invalid_field_in_parameter_list(2, None));
    }
    if be32(list, 4) != m.blocks {
        return Err(Sense::invalid_field_in_parameter_list(4, None));
    }
    if u8_at(list, 8) != 0 {
        return Err(Sense::invalid_field_in_parameter_list(8, Some(7))); // FORMAT TYPE
    }
    if be24(list, 9) != BLOCK_SIZE {
        return Err(Sense::invalid_field_in_parameter_list(9, None));
    }
    Ok(FormatRequest {
        immed: h1 & 0x02 != 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mmc::{Drive, Medium};

    const CDB: [u8; 6] = [0x04, 0x11, 0, 0, 0, 0];

    fn state(writable: bool) -> DriveState {
        DriveState::new(
            Drive::DvdRam,
            Medium {
                blocks: 0x1000,
                writable,
            },
        )
    }

    fn list(h1: u8) -> [u8; 12] {
        [0, h1, 0, 8, 0, 0, 0x10, 0, 0, 0, 0x08, 0]
    }

    #[test]
    fn a_full_format() {
        let s = state(true);
        assert_eq!(
            format_unit(&CDB, &list(0), &s),
            Ok(FormatRequest { immed: false })
        );
        assert_eq!(
            format_unit(&CDB, &list(0x02), &s),
            Ok(FormatRequest { immed: true })
        );
        assert_eq!(
            format_unit(&CDB, &list(0xa2), &s),
            Ok(FormatRequest { immed: true })
        );
        // CMPLIST is allowed.
        assert!(format_unit(&[0x04, 0x19, 0, 0, 0, 0], &list(0), &s).is_ok());
    }

    #[test]
    fn refusals() {
        let s = state(true);
        let cdb_err = |cdb: [u8; 6]| format_unit(&cdb, &list(0), &s);
        assert_eq!(
            cdb_err([0x04, 0x01, 0, 0, 0, 0]),
            Err(Sense::invalid_field_in_cdb(1, Some(4)))
        );
        assert_eq!(
            cdb_err([0x04, 0x12, 0, 0, 0, 0]),
            Err(Sense::invalid_field_in_cdb(1, Some(2)))
        );
        assert_eq!(
            cdb_err([0x04, 0x11, 0, 1, 0, 0]),
            Err(Sense::invalid_field_in_cdb(3, None))
        );
        assert_eq!(
            format_unit(&CDB, &list(0)[..11], &s),
            Err(Sense::parameter_list_length_error())
        );
        let with = |i: usize, v: u8| {
            let mut l = list(0);
            l[i] = v;
            format_unit(&CDB, &l, &s)
        };
        assert_eq!(
            with(1, 0x20),
            Err(Sense::invalid_field_in_parameter_list(1, Some(6)))
        );
        assert_eq!(
            with(1, 0x84),
            Err(Sense::invalid_field_in_parameter_list(1, Some(6)))
        );
        assert_eq!(
            with(3, 16),
            Err(Sense::invalid_field_in_parameter_list(2, None))
        );
        assert_eq!(
            with(7, 1),
            Err(Sense::invalid_field_in_parameter_list(4, None))
        );
        assert_eq!(
            with(8, 0x04),
            Err(Sense::invalid_field_in_parameter_list(8, Some(7)))
        );
        assert_eq!(
            with(10, 0x02),
            Err(Sense::invalid_field_in_parameter_list(9, None))
        );
        assert_eq!(
            format_unit(&CDB, &list(0), &state(false)),
            Err(Sense::write_protected())
        );
        let mut out = state(true);
        out.loaded = false;
        assert_eq!(
            format_unit(&CDB, &list(0), &out),
            Err(Sense::medium_not_present_tray_open())
        );
    }
}
