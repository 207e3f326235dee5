//! Operation codes (SPC-4/SBC-3) that `decode` knows.

/// TEST UNIT READY.
pub const TEST_UNIT_READY: u8 = 0x00;
/// REZERO UNIT (obsolete; accepted as a no-op like the kernel).
pub const REZERO_UNIT: u8 = 0x01;
/// REQUEST SENSE.
pub const REQUEST_SENSE: u8 = 0x03;
/// FORMAT UNIT.
pub const FORMAT_UNIT: u8 = 0x04;
/// READ (6).
pub const READ_6: u8 = 0x08;
/// WRITE (6).
pub const WRITE_6: u8 = 0x0a;
/// SEEK (6) (obsolete; accepted as a no-op like the kernel).
pub const SEEK_6: u8 = 0x0b;
/// INQUIRY.
pub const INQUIRY: u8 = 0x12;
/// MODE SELECT (6).
pub const MODE_SELECT_6: u8 = 0x15;
/// MODE SENSE (6).
pub const MODE_SENSE_6: u8 = 0x1a;
/// START STOP UNIT.
pub const START_STOP_UNIT: u8 = 0x1b;
/// READ CAPACITY (10).
pub const READ_CAPACITY_10: u8 = 0x25;
/// READ (10).
pub const READ_10: u8 = 0x28;
/// WRITE (10).
pub const WRITE_10: u8 = 0x2a;
/// SEEK (10) (obsolete; accepted as a no-op like the kernel).
pub const SEEK_10: u8 = 0x2b;
/// WRITE AND VERIFY (10).
pub const WRITE_VERIFY_10: u8 = 0x2e;
/// VERIFY (10).
pub const VERIFY_10: u8 = 0x2f;
/// PRE-FETCH (10).
pub const PRE_FETCH_10: u8 = 0x34;
/// SYNCHRONIZE CACHE (10).
pub const SYNCHRONIZE_CACHE_10: u8 = 0x35;
/// WRITE SAME (10).
pub const WRITE_SAME_10: u8 = 0x41;
/// UNMAP.
pub const UNMAP: u8 = 0x42;
/// MODE SELECT (10).
pub const MODE_SELECT_10: u8 = 0x55;
/// MODE SENSE (10).
pub const MODE_SENSE_10: u8 = 0x5a;
/// VARIABLE LENGTH (32-byte CDBs; the service action is in bytes 8..9).
pub const VARIABLE_LENGTH: u8 = 0x7f;
/// Service action of WRITE SAME (32).
pub const VL_WRITE_SAME_32: u16 = 0x000d;
/// EXTENDED COPY (service action 0x00: LID1).
pub const EXTENDED_COPY: u8 = 0x83;
/// RECEIVE COPY RESULTS (LID1 service actions).
pub const RECEIVE_COPY_RESULTS: u8 = 0x84;
/// READ (16).
pub const READ_16: u8 = 0x88;
/// WRITE (16).
pub const WRITE_16: u8 = 0x8a;
/// WRITE AND VERIFY (16).
pub const WRITE_VERIFY_16: u8 = 0x8e;
/// COMPARE AND WRITE.
pub const COMPARE_AND_WRITE: u8 = 0x89;
/// VERIFY (16).
pub const VERIFY_16: u8 = 0x8f;
/// PRE-FETCH (16).
pub const PRE_FETCH_16: u8 = 0x90;
/// SYNCHRONIZE CACHE (16).
pub const SYNCHRONIZE_CACHE_16: u8 = 0x91;
/// WRITE SAME (16).
pub const WRITE_SAME_16: u8 = 0x93;
/// SERVICE ACTION IN (16); service action 0x10 is READ CAPACITY (16).
pub const SERVICE_ACTION_IN_16: u8 = 0x9e;
/// Service action of READ CAPACITY (16).
pub const SAI_READ_CAPACITY_16: u8 = 0x10;
/// Service action of REPORT REFERRALS.
pub const SAI_REPORT_REFERRALS: u8 = 0x13;
/// Service action of GET LBA STATUS.
pub const SAI_GET_LBA_STATUS: u8 = 0x12;
/// MAINTENANCE IN; service action 0x0C is REPORT SUPPORTED OPERATION CODES.
pub const MAINTENANCE_IN: u8 = 0xa3;
/// Service action of REPORT SUPPORTED OPERATION CODES.
pub const MI_REPORT_SUPPORTED_OPCODES: u8 = 0x0c;
/// Service action of REPORT TARGET PORT GROUPS (MAINTENANCE IN).
pub const MI_REPORT_TARGET_PGS: u8 = 0x0a;
/// MAINTENANCE OUT; service action 0x0A is SET TARGET PORT GROUPS.
pub const MAINTENANCE_OUT: u8 = 0xa4;
/// Service action of SET TARGET PORT GROUPS (MAINTENANCE OUT).
pub const MO_SET_TARGET_PGS: u8 = 0x0a;
/// READ (12).
pub const READ_12: u8 = 0xa8;
/// WRITE (12).
pub const WRITE_12: u8 = 0xaa;

/// The CDB length implied by the opcode's group code (SPC-4 4.2.5.1), or
/// `None` for the reserved/vendor groups and variable-length CDBs.
pub const fn cdb_len(opcode: u8) -> Option<usize> {
    match opcode >> 5 {
        0 => Some(6),
        1 | 2 => Some(10),
        4 => Some(16),
        5 => Some(12),
        _ => None,
    }
}
