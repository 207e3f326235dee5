//! Typed CDB decoding. [`decode`] turns any bytes into a [`Command`]: an
//! opcode it does not know becomes [`Command::Unsupported`]; a known opcode
//! with a malformed CDB (too short, a bad service action, a field we refuse)
//! becomes the [`Sense`] to answer with. Nothing here looks at the device.

use crate::bytes::{be16, be24, be32, be64, u8_at};
use crate::mmc;
use crate::opcode as op;
use crate::sense::Sense;
use crate::zbc::{self, ZoneAction};

/// A decoded SCSI command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// TEST UNIT READY.
    TestUnitReady,
    /// REQUEST SENSE.
    RequestSense {
        /// DESC: descriptor-format sense wanted.
        desc: bool,
        /// ALLOCATION LENGTH.
        alloc_len: u8,
    },
    /// INQUIRY.
    Inquiry {
        /// EVPD: a VPD page is requested.
        evpd: bool,
        /// PAGE CODE.
        page_code: u8,
        /// ALLOCATION LENGTH.
        alloc_len: u16,
    },
    /// READ CAPACITY (10).
    ReadCapacity10,
    /// READ CAPACITY (16) (SERVICE ACTION IN (16), service action 0x10).
    ReadCapacity16 {
        /// ALLOCATION LENGTH.
        alloc_len: u32,
    },
    /// MODE SENSE (6) or (10).
    ModeSense {
        /// DBD: no block descriptors.
        dbd: bool,
        /// LLBAA: long LBA block descriptors allowed (10 only).
        llbaa: bool,
        /// PC: 0 current, 1 changeable, 2 default, 3 saved.
        pc: u8,
        /// PAGE CODE (0x3F = all pages).
        page: u8,
        /// SUBPAGE CODE.
        subpage: u8,
        /// ALLOCATION LENGTH.
        alloc_len: u16,
        /// MODE SENSE (10) rather than (6).
        ten: bool,
    },
    /// MODE SELECT (6) or (10).
    ModeSelect {
        /// PF: page format.
        pf: bool,
        /// SP: save pages.
        sp: bool,
        /// PARAMETER LIST LENGTH.
        param_len: u16,
        /// MODE SELECT (10) rather than (6).
        ten: bool,
    },
    /// START STOP UNIT.
    StartStopUnit {
        /// IMMED.
        immed: bool,
        /// START.
        start: bool,
        /// LOEJ: load/eject.
        loej: bool,
        /// POWER CONDITION.
        power_condition: u8,
    },
    /// READ (6/10/12/16).
    Read {
        /// Starting LBA.
        lba: u64,
        /// Number of blocks (READ (6) with length 0 means 256).
        blocks: u32,
        /// FUA.
        fua: bool,
        /// DPO.
        dpo: bool,
        /// Size of the CDB it came from (6, 10, 12 or 16).
        cdb_len: u8,
    },
    /// WRITE (6/10/12/16) and WRITE AND VERIFY (10/16), the latter as FUA.
    Write {
        /// Starting LBA.
        lba: u64,
        /// Number of blocks (WRITE (6) with length 0 means 256).
        blocks: u32,
        /// FUA.
        fua: bool,
        /// DPO.
        dpo: bool,
        /// Size of the CDB it came from (6, 10, 12 or 16).
        cdb_len: u8,
    },
    /// SYNCHRONIZE CACHE (10/16).
    SynchronizeCache {
        /// Starting LBA.
        lba: u64,
        /// Number of blocks; 0 = to the end of the device.
        blocks: u32,
        /// IMMED.
        immed: bool,
    },
    /// UNMAP.
    Unmap {
        /// ANCHOR.
        anchor: bool,
        /// PARAMETER LIST LENGTH.
        param_len: u16,
    },
    /// WRITE SAME (10/16).
    WriteSame {
        /// Starting LBA.
        lba: u64,
        /// Number of blocks.
        blocks: u32,
        /// UNMAP: the blocks may be deallocated.
        unmap: bool,
        /// ANCHOR.
        anchor: bool,
        /// NDOB: no data-out buffer, write zeroes (16 only).
        ndob: bool,
        /// Size of the CDB it came from (10 or 16).
        cdb_len: u8,
    },
    /// VERIFY (10/16).
    Verify {
        /// Starting LBA.
        lba: u64,
        /// Number of blocks.
        blocks: u32,
        /// BYTCHK (0 = medium verification only).
        bytchk: u8,
        /// Size of the CDB it came from (10 or 16).
        cdb_len: u8,
    },
    /// PRE-FETCH (10/16).
    PreFetch {
        /// Starting LBA.
        lba: u64,
        /// Number of blocks (0 = to the end of the device).
        blocks: u32,
        /// IMMED.
        immed: bool,
    },
    /// SEEK (6/10) and REZERO UNIT: obsolete, answered GOOD like the kernel.
    Seek,
    /// REPORT SUPPORTED OPERATION CODES (MAINTENANCE IN, service action 0x0C).
    ReportSupportedOpcodes {
        /// RCTD: include command timeouts descriptors.
        rctd: bool,
        /// REPORTING OPTIONS.
        options: u8,
        /// REQUESTED OPERATION CODE.
        opcode: u8,
        /// REQUESTED SERVICE ACTION.
        service_action: u16,
        /// ALLOCATION LENGTH.
        alloc_len: u32,
    },
    /// COMPARE AND WRITE: compare `blocks` blocks at `lba` with the first
    /// half of the data-out buffer and, if equal, write the second half.
    CompareAndWrite {
        /// Starting LBA.
        lba: u64,
        /// NUMBER OF LOGICAL BLOCKS.
        blocks: u8,
        /// FUA.
        fua: bool,
    },
    /// FORMAT UNIT.
    FormatUnit {
        /// FMTPINFO (protection information format).
        fmtpinfo: u8,
        /// LONGLIST: the parameter list header is 8 bytes, not 4.
        longlist: bool,
        /// FMTDATA: a parameter list follows.
        fmtdata: bool,
    },
    /// GET LBA STATUS (SERVICE ACTION IN (16), service action 0x12).
    GetLbaStatus {
        /// STARTING LOGICAL BLOCK ADDRESS.
        lba: u64,
        /// ALLOCATION LENGTH.
        alloc_len: u32,
    },
    /// EXTENDED COPY (LID1 when `service_action` is 0).
    ExtendedCopy {
        /// SERVICE ACTION (byte 1, bits 4..0).
        service_action: u8,
        /// PARAMETER LIST LENGTH.
        param_len: u32,
    },
    /// RECEIVE COPY RESULTS.
    ReceiveCopyResults {
        /// SERVICE ACTION (byte 1, bits 4..0).
        service_action: u8,
        /// LIST IDENTIFIER.
        list_id: u8,
        /// ALLOCATION LENGTH.
        alloc_len: u32,
    },
    /// REPORT TARGET PORT GROUPS (MAINTENANCE IN, service action 0x0A).
    ReportTargetPortGroups {
        /// PARAMETER DATA FORMAT 001b: the extended header is wanted.
        extended: bool,
        /// ALLOCATION LENGTH.
        alloc_len: u32,
    },
    /// SET TARGET PORT GROUPS (MAINTENANCE OUT, service action 0x0A).
    SetTargetPortGroups {
        /// PARAMETER LIST LENGTH.
        param_len: u32,
    },
    /// REPORT ZONES (ZBC IN, service action 0x00).
    ReportZones {
        /// ZONE START LBA.
        lba: u64,
        /// ALLOCATION LENGTH.
        alloc_len: u32,
        /// REPORTING OPTIONS as sent (6 bits; see
        /// [`zbc::ReportingOptions::from_code`] for the valid ones).
        options: u8,
        /// PARTIAL: the zone list length counts only what fits.
        partial: bool,
    },
    /// ZBC OUT: CLOSE ZONE, FINISH ZONE, OPEN ZONE or RESET WRITE POINTER.
    ZoneAction {
        /// The service action.
        action: ZoneAction,
        /// ZONE ID: the first LBA of the zone.
        lba: u64,
        /// ZONE COUNT (ZBC-2): 0 and 1 both mean one zone.
        count: u16,
        /// ALL: every zone the action applies to (ZONE ID ignored).
        all: bool,
    },
    /// PREVENT ALLOW MEDIUM REMOVAL (MMC).
    PreventAllowMediumRemoval {
        /// PREVENT (byte 4, bits 1-0): bit 0 prevents removal, bit 1 is the
        /// persistent prevent.
        prevent: u8,
    },
    /// READ FORMAT CAPACITIES (MMC).
    ReadFormatCapacities {
        /// ALLOCATION LENGTH.
        alloc_len: u16,
    },
    /// READ TOC/PMA/ATIP (MMC).
    ReadToc {
        /// MSF: addresses as minutes, seconds and frames.
        msf: bool,
        /// FORMAT: byte 2 bits 3-0, or, when those are zero, the obsolete
        /// FORMAT field of byte 9 (bits 7-6), which Linux's sr driver
        /// still uses for the session information.
        format: u8,
        /// TRACK/SESSION NUMBER.
        track: u8,
        /// ALLOCATION LENGTH.
        alloc_len: u16,
    },
    /// GET CONFIGURATION (MMC).
    GetConfiguration {
        /// RT (REQUESTED TYPE, byte 1 bits 1-0).
        rt: u8,
        /// STARTING FEATURE NUMBER.
        start: u16,
        /// ALLOCATION LENGTH.
        alloc_len: u16,
    },
    /// GET EVENT STATUS NOTIFICATION (MMC).
    GetEventStatus {
        /// POLLED (asynchronous operation is not supported).
        polled: bool,
        /// NOTIFICATION CLASS REQUEST: bit N asks for class N.
        classes: u8,
        /// ALLOCATION LENGTH.
        alloc_len: u16,
    },
    /// READ DISC INFORMATION (MMC).
    ReadDiscInformation {
        /// DATA TYPE (byte 1, bits 2-0).
        data_type: u8,
        /// ALLOCATION LENGTH.
        alloc_len: u16,
    },
    /// READ TRACK INFORMATION (MMC).
    ReadTrackInformation {
        /// OPEN (byte 1, bit 2).
        open: bool,
        /// ADDRESS/NUMBER TYPE (byte 1, bits 1-0): 0 an LBA, 1 a track, 2
        /// a session.
        address_type: u8,
        /// LOGICAL BLOCK ADDRESS/TRACK/SESSION NUMBER.
        address: u32,
        /// ALLOCATION LENGTH.
        alloc_len: u16,
    },
    /// READ DISC STRUCTURE (READ DVD STRUCTURE) (MMC).
    ReadDiscStructure {
        /// MEDIA TYPE (byte 1, bits 3-0): 0 DVD, 1 BD.
        media_type: u8,
        /// ADDRESS.
        address: u32,
        /// LAYER NUMBER.
        layer: u8,
        /// FORMAT CODE.
        format: u8,
        /// ALLOCATION LENGTH.
        alloc_len: u16,
        /// AGID (byte 10, bits 7-6).
        agid: u8,
    },
    /// MECHANISM STATUS (MMC).
    MechanismStatus {
        /// ALLOCATION LENGTH.
        alloc_len: u16,
    },
    /// Any other opcode, or ZBC IN/OUT with a service action we do not
    /// know; answered INVALID COMMAND OPERATION CODE (INVALID FIELD IN CDB
    /// for the service action, on a zoned device).
    Unsupported(u8),
}

impl Command {
    /// Whether the emulation needs the data-out buffer (MODE SELECT, UNMAP,
    /// WRITE SAME without NDOB). WRITE data is read by the handler straight
    /// from the ring, so this is false for [`Command::Write`].
    pub fn wants_data_out(&self) -> bool {
        matches!(
            self,
            Command::ModeSelect { .. }
                | Command::Unmap { .. }
                | Command::WriteSame { ndob: false, .. }
                | Command::FormatUnit { fmtdata: true, .. }
                | Command::ExtendedCopy { .. }
                | Command::SetTargetPortGroups { .. }
        )
    }

    /// A short upper-case name, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Command::TestUnitReady => "TEST UNIT READY",
            Command::RequestSense { .. } => "REQUEST SENSE",
            Command::Inquiry { .. } => "INQUIRY",
            Command::ReadCapacity10 => "READ CAPACITY(10)",
            Command::ReadCapacity16 { .. } => "READ CAPACITY(16)",
            Command::ModeSense { .. } => "MODE SENSE",
            Command::ModeSelect { .. } => "MODE SELECT",
            Command::StartStopUnit { .. } => "START STOP UNIT",
            Command::Read { .. } => "READ",
            Command::Write { .. } => "WRITE",
            Command::SynchronizeCache { .. } => "SYNCHRONIZE CACHE",
            Command::Unmap { .. } => "UNMAP",
            Command::WriteSame { .. } => "WRITE SAME",
            Command::Verify { .. } => "VERIFY",
            Command::PreFetch { .. } => "PRE-FETCH",
            Command::Seek => "SEEK",
            Command::ReportSupportedOpcodes { .. } => "REPORT SUPPORTED OPERATION CODES",
            Command::CompareAndWrite { .. } => "COMPARE AND WRITE",
            Command::FormatUnit { .. } => "FORMAT UNIT",
            Command::GetLbaStatus { .. } => "GET LBA STATUS",
            Command::ExtendedCopy { .. } => "EXTENDED COPY",
            Command::ReceiveCopyResults { .. } => "RECEIVE COPY RESULTS",
            Command::ReportTargetPortGroups { .. } => "REPORT TARGET PORT GROUPS",
            Command::SetTargetPortGroups { .. } => "SET TARGET PORT GROUPS",
            Command::ReportZones { .. } => "REPORT ZONES",
            Command::ZoneAction { action, .. } => action.name(),
            Command::PreventAllowMediumRemoval { .. } => "PREVENT ALLOW MEDIUM REMOVAL",
            Command::ReadFormatCapacities { .. } => "READ FORMAT CAPACITIES",
            Command::ReadToc { .. } => "READ TOC/PMA/ATIP",
            Command::GetConfiguration { .. } => "GET CONFIGURATION",
            Command::GetEventStatus { .. } => "GET EVENT STATUS NOTIFICATION",
            Command::ReadDiscInformation { .. } => "READ DISC INFORMATION",
            Command::ReadTrackInformation { .. } => "READ TRACK INFORMATION",
            Command::ReadDiscStructure { .. } => "READ DISC STRUCTURE",
            Command::MechanismStatus { .. } => "MECHANISM STATUS",
            Command::Unsupported(_) => "UNSUPPORTED",
        }
    }
}

/// Byte offset of the TRANSFER LENGTH (or NUMBER OF LOGICAL BLOCKS) field in
/// a READ/WRITE/VERIFY/WRITE SAME CDB of `cdb_len` bytes.
pub fn transfer_length_offset(cdb_len: u8) -> u16 {
    match cdb_len {
        6 => 4,
        12 => 6,
        16 => 10,
        32 => 28,
        _ => 7,
    }
}

/// A protection field (RDPROTECT/WRPROTECT/VRPROTECT, byte 1 bits 7..5)
/// must be zero: we report no protection information.
fn check_protect(cdb: &[u8]) -> Result<(), Sense> {
    if u8_at(cdb, 1) & 0xe0 != 0 {
        Err(Sense::invalid_field_in_cdb(1, Some(7)))
    } else {
        Ok(())
    }
}

/// LBA and block count of a 10-, 12- or 16-byte CDB in the usual places.
fn lba_len(cdb: &[u8], cdb_len: usize) -> (u64, u32) {
    match cdb_len {
        16 => (be64(cdb, 2), be32(cdb, 10)),
        12 => (u64::from(be32(cdb, 2)), be32(cdb, 6)),
        _ => (u64::from(be32(cdb, 2)), u32::from(be16(cdb, 7))),
    }
}

/// Decode a CDB. Unknown opcodes decode to [`Command::Unsupported`]; an
/// empty CDB or a known opcode whose CDB is too short or malformed is an
/// error carrying the sense to return.
pub fn decode(cdb: &[u8]) -> Result<Command, Sense> {
    let Some(&opcode) = cdb.first() else {
        return Err(Sense::invalid_command_opcode());
    };
    let known = decode_known(opcode, cdb);
    if let Some(need) = op::cdb_len(opcode) {
        if cdb.len() < need && known.is_some() {
            return Err(Sense::invalid_field_in_cdb(0, None));
        }
    }
    known.unwrap_or(Ok(Command::Unsupported(opcode)))
}

/// `None` for an opcode we do not implement.
fn decode_known(opcode: u8, cdb: &[u8]) -> Option<Result<Command, Sense>> {
    let b1 = u8_at(cdb, 1);
    let bit = |b: u8, mask: u8| b & mask != 0;
    let cmd = match opcode {
        op::TEST_UNIT_READY => Ok(Command::TestUnitReady),
        op::REZERO_UNIT | op::SEEK_6 | op::SEEK_10 => Ok(Command::Seek),
        op::REQUEST_SENSE => Ok(Command::RequestSense {
            desc: bit(b1, 0x01),
            alloc_len: u8_at(cdb, 4),
        }),
        // CMDDT (obsolete) is ignored, as the kernel does.
        op::INQUIRY => Ok(Command::Inquiry {
            evpd: bit(b1, 0x01),
            page_code: u8_at(cdb, 2),
            alloc_len: be16(cdb, 3),
        }),
        op::READ_CAPACITY_10 => {
            // SBC-2: LBA must be zero unless PMI is set (the kernel checks too).
            if u8_at(cdb, 8) & 0x01 == 0 && be32(cdb, 2) != 0 {
                Err(Sense::invalid_field_in_cdb(2, None))
            } else {
                Ok(Command::ReadCapacity10)
            }
        }
        op::SERVICE_ACTION_IN_16 => match b1 & 0x1f {
            op::SAI_READ_CAPACITY_16 => Ok(Command::ReadCapacity16 {
                alloc_len: be32(cdb, 10),
            }),
            op::SAI_GET_LBA_STATUS => Ok(Command::GetLbaStatus {
                lba: be64(cdb, 2),
                alloc_len: be32(cdb, 10),
            }),
            // REPORT REFERRALS: no referrals, so no such command, as in
            // the kernel; other service actions are an invalid field.
            op::SAI_REPORT_REFERRALS => Ok(Command::Unsupported(opcode)),
            _ => Err(Sense::invalid_field_in_cdb(1, Some(4))),
        },
        op::MAINTENANCE_IN => match b1 & 0x1f {
            op::MI_REPORT_SUPPORTED_OPCODES => Ok(Command::ReportSupportedOpcodes {
                rctd: bit(u8_at(cdb, 2), 0x80),
                options: u8_at(cdb, 2) & 0x07,
                opcode: u8_at(cdb, 3),
                service_action: be16(cdb, 4),
                alloc_len: be32(cdb, 6),
            }),
            op::MI_REPORT_TARGET_PGS => Ok(Command::ReportTargetPortGroups {
                // Bit 5 alone, as the kernel tests it.
                extended: bit(b1, 0x20),
                alloc_len: be32(cdb, 6),
            }),
            _ => Ok(Command::Unsupported(opcode)),
        },
        op::MAINTENANCE_OUT => match b1 & 0x1f {
            op::MO_SET_TARGET_PGS => Ok(Command::SetTargetPortGroups {
                param_len: be32(cdb, 6),
            }),
            _ => Ok(Command::Unsupported(opcode)),
        },
        op::VARIABLE_LENGTH => match be16(cdb, 8) {
            op::VL_WRITE_SAME_32 if cdb.len() >= 32 => {
                let b10 = u8_at(cdb, 10);
                if bit(b10, 0x04) {
                    Err(Sense::invalid_field_in_cdb(10, Some(2)))
                } else if bit(b10, 0x02) {
                    Err(Sense::invalid_field_in_cdb(10, Some(1)))
                } else if b10 & 0xe0 != 0 {
                    Err(Sense::invalid_field_in_cdb(10, Some(7)))
                } else {
                    Ok(Command::WriteSame {
                        lba: be64(cdb, 12),
                        blocks: be32(cdb, 28),
                        unmap: bit(b10, 0x08),
                        anchor: bit(b10, 0x10),
                        ndob: bit(b10, 0x01),
                        cdb_len: 32,
                    })
                }
            }
            op::VL_WRITE_SAME_32 => Err(Sense::invalid_field_in_cdb(0, None)),
            _ => Ok(Command::Unsupported(opcode)),
        },
        zbc::ZBC_IN => Ok(match b1 & 0x1f {
            zbc::SA_REPORT_ZONES => {
                let b14 = u8_at(cdb, 14);
                Command::ReportZones {
                    lba: be64(cdb, 2),
                    alloc_len: be32(cdb, 10),
                    options: b14 & 0x3f,
                    partial: bit(b14, 0x80),
                }
            }
            _ => Command::Unsupported(opcode),
        }),
        zbc::ZBC_OUT => Ok(match ZoneAction::from_service_action(b1 & 0x1f) {
            Some(action) => Command::ZoneAction {
                action,
                lba: be64(cdb, 2),
                count: be16(cdb, 12),
                all: bit(u8_at(cdb, 14), 0x01),
            },
            None => Command::Unsupported(opcode),
        }),
        op::COMPARE_AND_WRITE => check_protect(cdb).map(|()| Command::CompareAndWrite {
            lba: be64(cdb, 2),
            blocks: u8_at(cdb, 13),
            fua: bit(b1, 0x08),
        }),
        op::FORMAT_UNIT => Ok(Command::FormatUnit {
            fmtpinfo: b1 >> 6,
            longlist: bit(b1, 0x20),
            fmtdata: bit(b1, 0x10),
        }),
        op::EXTENDED_COPY => Ok(Command::ExtendedCopy {
            service_action: b1 & 0x1f,
            param_len: be32(cdb, 10),
        }),
        op::RECEIVE_COPY_RESULTS => Ok(Command::ReceiveCopyResults {
            service_action: b1 & 0x1f,
            list_id: u8_at(cdb, 2),
            alloc_len: be32(cdb, 10),
        }),
        op::MODE_SENSE_6 | op::MODE_SENSE_10 => {
            let ten = opcode == op::MODE_SENSE_10;
            let b2 = u8_at(cdb, 2);
            Ok(Command::ModeSense {
                dbd: bit(b1, 0x08),
                llbaa: ten && bit(b1, 0x10),
                pc: b2 >> 6,
                page: b2 & 0x3f,
                subpage: u8_at(cdb, 3),
                alloc_len: if ten {
                    be16(cdb, 7)
                } else {
                    u16::from(u8_at(cdb, 4))
                },
                ten,
            })
        }
        op::MODE_SELECT_6 | op::MODE_SELECT_10 => {
            let ten = opcode == op::MODE_SELECT_10;
            Ok(Command::ModeSelect {
                pf: bit(b1, 0x10),
                sp: bit(b1, 0x01),
                param_len: if ten {
                    be16(cdb, 7)
                } else {
                    u16::from(u8_at(cdb, 4))
                },
                ten,
            })
        }
        // Byte 2 is reserved; a POWER CONDITION MODIFIER needs power
        // conditions, which we do not have.
        op::START_STOP_UNIT if u8_at(cdb, 2) != 0 => Err(Sense::invalid_field_in_cdb(2, None)),
        op::START_STOP_UNIT if u8_at(cdb, 3) & 0x0f != 0 => {
            Err(Sense::invalid_field_in_cdb(3, Some(3)))
        }
        op::START_STOP_UNIT => {
            let b4 = u8_at(cdb, 4);
            Ok(Command::StartStopUnit {
                immed: bit(b1, 0x01),
                start: bit(b4, 0x01),
                loej: bit(b4, 0x02),
                power_condition: b4 >> 4,
            })
        }
        op::READ_6 | op::WRITE_6 => {
            let lba = u64::from(be24(cdb, 1) & 0x1f_ffff);
            let blocks = match u8_at(cdb, 4) {
                0 => 256,
                n => u32::from(n),
            };
            Ok(if opcode == op::READ_6 {
                Command::Read {
                    lba,
                    blocks,
                    fua: false,
                    dpo: false,
                    cdb_len: 6,
                }
            } else {
                Command::Write {
                    lba,
                    blocks,
                    fua: false,
                    dpo: false,
                    cdb_len: 6,
                }
            })
        }
        op::READ_10 | op::READ_12 | op::READ_16 => {
            let len = op::cdb_len(opcode).unwrap_or(10);
            check_protect(cdb).map(|()| {
                let (lba, blocks) = lba_len(cdb, len);
                Command::Read {
                    lba,
                    blocks,
                    fua: bit(b1, 0x08),
                    dpo: bit(b1, 0x10),
                    cdb_len: len as u8,
                }
            })
        }
        op::WRITE_10 | op::WRITE_12 | op::WRITE_16 | op::WRITE_VERIFY_10 | op::WRITE_VERIFY_16 => {
            let len = op::cdb_len(opcode).unwrap_or(10);
            let verify = matches!(opcode, op::WRITE_VERIFY_10 | op::WRITE_VERIFY_16);
            check_protect(cdb).map(|()| {
                let (lba, blocks) = lba_len(cdb, len);
                Command::Write {
                    lba,
                    blocks,
                    fua: verify || bit(b1, 0x08),
                    dpo: bit(b1, 0x10),
                    cdb_len: len as u8,
                }
            })
        }
        op::SYNCHRONIZE_CACHE_10 | op::SYNCHRONIZE_CACHE_16 => {
            let len = op::cdb_len(opcode).unwrap_or(10);
            let (lba, blocks) = lba_len(cdb, len);
            Ok(Command::SynchronizeCache {
                lba,
                blocks,
                immed: bit(b1, 0x02),
            })
        }
        op::PRE_FETCH_10 | op::PRE_FETCH_16 => {
            let len = op::cdb_len(opcode).unwrap_or(10);
            let (lba, blocks) = lba_len(cdb, len);
            Ok(Command::PreFetch {
                lba,
                blocks,
                immed: bit(b1, 0x02),
            })
        }
        // Byte 1 holds only ANCHOR; the kernel refuses anything else there.
        op::UNMAP if b1 & 0xfe != 0 => Err(Sense::invalid_cdb_field()),
        op::UNMAP => Ok(Command::Unmap {
            anchor: bit(b1, 0x01),
            param_len: be16(cdb, 7),
        }),
        op::WRITE_SAME_10 | op::WRITE_SAME_16 => {
            let len = op::cdb_len(opcode).unwrap_or(10);
            if bit(b1, 0x04) {
                // PBDATA
                Err(Sense::invalid_field_in_cdb(1, Some(2)))
            } else if bit(b1, 0x02) {
                // LBDATA
                Err(Sense::invalid_field_in_cdb(1, Some(1)))
            } else {
                check_protect(cdb).map(|()| {
                    let (lba, blocks) = lba_len(cdb, len);
                    Command::WriteSame {
                        lba,
                        blocks,
                        unmap: bit(b1, 0x08),
                        anchor: bit(b1, 0x10),
                        ndob: len == 16 && bit(b1, 0x01),
                        cdb_len: len as u8,
                    }
                })
            }
        }
        op::VERIFY_10 | op::VERIFY_16 => {
            let len = op::cdb_len(opcode).unwrap_or(10);
            check_protect(cdb).map(|()| {
                let (lba, blocks) = lba_len(cdb, len);
                Command::Verify {
                    lba,
                    blocks,
                    bytchk: (b1 >> 1) & 0x03,
                    cdb_len: len as u8,
                }
            })
        }
        mmc::PREVENT_ALLOW_MEDIUM_REMOVAL => Ok(Command::PreventAllowMediumRemoval {
            prevent: u8_at(cdb, 4) & 0x03,
        }),
        mmc::READ_FORMAT_CAPACITIES => Ok(Command::ReadFormatCapacities {
            alloc_len: be16(cdb, 7),
        }),
        mmc::READ_TOC_PMA_ATIP => Ok(Command::ReadToc {
            msf: bit(b1, 0x02),
            format: match u8_at(cdb, 2) & 0x0f {
                0 => u8_at(cdb, 9) >> 6,
                f => f,
            },
            track: u8_at(cdb, 6),
            alloc_len: be16(cdb, 7),
        }),
        mmc::GET_CONFIGURATION => Ok(Command::GetConfiguration {
            rt: b1 & 0x03,
            start: be16(cdb, 2),
            alloc_len: be16(cdb, 7),
        }),
        mmc::GET_EVENT_STATUS_NOTIFICATION => Ok(Command::GetEventStatus {
            polled: bit(b1, 0x01),
            classes: u8_at(cdb, 4),
            alloc_len: be16(cdb, 7),
        }),
        mmc::READ_DISC_INFORMATION => Ok(Command::ReadDiscInformation {
            data_type: b1 & 0x07,
            alloc_len: be16(cdb, 7),
        }),
        mmc::READ_TRACK_INFORMATION => Ok(Command::ReadTrackInformation {
            open: bit(b1, 0x04),
            address_type: b1 & 0x03,
            address: be32(cdb, 2),
            alloc_len: be16(cdb, 7),
        }),
        mmc::READ_DISC_STRUCTURE => Ok(Command::ReadDiscStructure {
            media_type: b1 & 0x0f,
            address: be32(cdb, 2),
            layer: u8_at(cdb, 6),
            format: u8_at(cdb, 7),
            alloc_len: be16(cdb, 8),
            agid: u8_at(cdb, 10) >> 6,
        }),
        mmc::MECHANISM_STATUS => Ok(Command::MechanismStatus {
            alloc_len: be16(cdb, 8),
        }),
        _ => return None,
    };
    Some(cmd)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cdb(bytes: &[u8], len: usize) -> Vec<u8> {
        let mut v = bytes.to_vec();
        v.resize(len, 0);
        v
    }

    fn ok(bytes: &[u8], len: usize) -> Command {
        match decode(&cdb(bytes, len)) {
            Ok(c) => c,
            Err(s) => panic!("decode {bytes:02x?} failed: {s:?}"),
        }
    }

    fn err(bytes: &[u8], len: usize) -> Sense {
        match decode(&cdb(bytes, len)) {
            Ok(c) => panic!("decode {bytes:02x?} gave {c:?}"),
            Err(s) => s,
        }
    }

    #[test]
    fn mmc_commands() {
        assert_eq!(
            ok(&[0x1e, 0, 0, 0, 0x03], 6),
            Command::PreventAllowMediumRemoval { prevent: 3 }
        );
        assert_eq!(
            ok(&[0x23, 0, 0, 0, 0, 0, 0, 0x01, 0xfc], 10),
            Command::ReadFormatCapacities { alloc_len: 0x1fc }
        );
        // The obsolete FORMAT of byte 9 counts only when byte 2's is zero.
        assert_eq!(
            ok(&[0x43, 0x02, 0, 0, 0, 0, 0xaa, 0, 12, 0x40], 10),
            Command::ReadToc {
                msf: true,
                format: 1,
                track: 0xaa,
                alloc_len: 12
            }
        );
        assert_eq!(
            ok(&[0x43, 0, 0x02, 0, 0, 0, 0, 0, 12, 0x40], 10),
            Command::ReadToc {
                msf: false,
                format: 2,
                track: 0,
                alloc_len: 12
            }
        );
        assert_eq!(
            ok(&[0x46, 0x02, 0x01, 0x05, 0, 0, 0, 0, 0x20], 10),
            Command::GetConfiguration {
                rt: 2,
                start: 0x105,
                alloc_len: 0x20
            }
        );
        assert_eq!(
            ok(&[0x4a, 0x01, 0, 0, 0x10, 0, 0, 0, 8], 10),
            Command::GetEventStatus {
                polled: true,
                classes: 0x10,
                alloc_len: 8
            }
        );
        assert_eq!(
            ok(&[0x51, 0x01, 0, 0, 0, 0, 0, 0, 34], 10),
            Command::ReadDiscInformation {
                data_type: 1,
                alloc_len: 34
            }
        );
        assert_eq!(
            ok(&[0x52, 0x05, 0, 0, 0, 1, 0, 0, 48], 10),
            Command::ReadTrackInformation {
                open: true,
                address_type: 1,
                address: 1,
                alloc_len: 48
            }
        );
        assert_eq!(
            ok(&[0xad, 0x01, 0, 0, 0, 2, 1, 0xff, 0x08, 0x04, 0xc0], 12),
            Command::ReadDiscStructure {
                media_type: 1,
                address: 2,
                layer: 1,
                format: 0xff,
                alloc_len: 0x804,
                agid: 3
            }
        );
        assert_eq!(
            ok(&[0xbd, 0, 0, 0, 0, 0, 0, 0, 0, 8], 12),
            Command::MechanismStatus { alloc_len: 8 }
        );
        assert_eq!(err(&[0xbd], 10), Sense::invalid_field_in_cdb(0, None));
    }

    #[test]
    fn empty_and_unknown() {
        assert_eq!(decode(&[]), Err(Sense::invalid_command_opcode()));
        assert_eq!(decode(&[0xc0]), Ok(Command::Unsupported(0xc0)));
        assert_eq!(decode(&[0x7f; 32]), Ok(Command::Unsupported(0x7f)));
        assert_eq!(ok(&[0xc1], 16), Command::Unsupported(0xc1));
        // Unknown opcodes are never length-checked.
        assert_eq!(decode(&[0x4d]), Ok(Command::Unsupported(0x4d)));
    }

    #[test]
    fn write_same_32() {
        let mut c = vec![0u8; 32];
        c[0] = 0x7f;
        c[7] = 0x18;
        c[8..10].copy_from_slice(&0x000du16.to_be_bytes());
        c[10] = 0x08;
        c[12..20].copy_from_slice(&77u64.to_be_bytes());
        c[28..32].copy_from_slice(&5u32.to_be_bytes());
        assert_eq!(
            decode(&c),
            Ok(Command::WriteSame {
                lba: 77,
                blocks: 5,
                unmap: true,
                anchor: false,
                ndob: false,
                cdb_len: 32
            })
        );
        c[10] = 0x04;
        assert_eq!(decode(&c), Err(Sense::invalid_field_in_cdb(10, Some(2))));
        c[9] = 0x09; // READ (32): not supported
        assert_eq!(decode(&c), Ok(Command::Unsupported(0x7f)));
        // WRITE SAME (32) in fewer than 32 bytes.
        c[9] = 0x0d;
        assert_eq!(decode(&c[..16]), Err(Sense::invalid_field_in_cdb(0, None)));
    }

    #[test]
    fn too_short() {
        assert_eq!(
            decode(&[0x28, 0, 0]),
            Err(Sense::invalid_field_in_cdb(0, None))
        );
        assert_eq!(decode(&[0x00]), Err(Sense::invalid_field_in_cdb(0, None)));
        assert_eq!(
            decode(&[0x9e, 0x10, 0, 0, 0, 0, 0, 0, 0, 0]),
            Err(Sense::invalid_field_in_cdb(0, None))
        );
        // Longer than needed is fine.
        assert_eq!(decode(&cdb(&[0x00], 16)), Ok(Command::TestUnitReady));
    }

    #[test]
    fn simple_commands() {
        assert_eq!(ok(&[0x00], 6), Command::TestUnitReady);
        assert_eq!(ok(&[0x01], 6), Command::Seek);
        assert_eq!(ok(&[0x0b], 6), Command::Seek);
        assert_eq!(ok(&[0x2b], 10), Command::Seek);
        assert_eq!(
            ok(&[0x03, 0x01, 0, 0, 252], 6),
            Command::RequestSense {
                desc: true,
                alloc_len: 252
            }
        );
        assert_eq!(
            ok(&[0x1b, 0x01, 0, 0, 0x23], 6),
            Command::StartStopUnit {
                immed: true,
                start: true,
                loej: true,
                power_condition: 2
            }
        );
    }

    #[test]
    fn inquiry() {
        assert_eq!(
            ok(&[0x12, 0x01, 0x83, 0x01, 0x00], 6),
            Command::Inquiry {
                evpd: true,
                page_code: 0x83,
                alloc_len: 256
            }
        );
        assert_eq!(
            ok(&[0x12, 0, 0, 0, 36], 6),
            Command::Inquiry {
                evpd: false,
                page_code: 0,
                alloc_len: 36
            }
        );
        // CMDDT is ignored, as the kernel does.
        assert!(matches!(
            ok(&[0x12, 0x02, 0, 0, 36], 6),
            Command::Inquiry { evpd: false, .. }
        ));
    }

    #[test]
    fn read_capacity() {
        assert_eq!(ok(&[0x25], 10), Command::ReadCapacity10);
        assert_eq!(
            ok(&[0x25, 0, 0, 0, 0, 1, 0, 0, 1], 10),
            Command::ReadCapacity10
        );
        assert_eq!(
            err(&[0x25, 0, 0, 0, 0, 1], 10),
            Sense::invalid_field_in_cdb(2, None)
        );
        assert_eq!(
            ok(&[0x9e, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32], 16),
            Command::ReadCapacity16 { alloc_len: 32 }
        );
        assert_eq!(ok(&[0x9e, 0x13], 16), Command::Unsupported(0x9e));
        assert_eq!(
            err(&[0x9e, 0x1f], 16),
            Sense::invalid_field_in_cdb(1, Some(4))
        );
        assert_eq!(
            err(&[0x1b, 1, 1, 0, 1], 6),
            Sense::invalid_field_in_cdb(2, None)
        );
        assert_eq!(
            err(&[0x1b, 1, 0, 1, 1], 6),
            Sense::invalid_field_in_cdb(3, Some(3))
        );
    }

    #[test]
    fn mode_commands() {
        assert_eq!(
            ok(&[0x1a, 0x08, 0x7f, 0xff, 200], 6),
            Command::ModeSense {
                dbd: true,
                llbaa: false,
                pc: 1,
                page: 0x3f,
                subpage: 0xff,
                alloc_len: 200,
                ten: false
            }
        );
        // LLBAA is not a MODE SENSE (6) bit.
        assert!(matches!(
            ok(&[0x1a, 0x10], 6),
            Command::ModeSense { llbaa: false, .. }
        ));
        assert_eq!(
            ok(&[0x5a, 0x10, 0x88, 0, 0, 0, 0, 0x10, 0x00], 10),
            Command::ModeSense {
                dbd: false,
                llbaa: true,
                pc: 2,
                page: 0x08,
                subpage: 0,
                alloc_len: 0x1000,
                ten: true
            }
        );
        assert_eq!(
            ok(&[0x15, 0x11, 0, 0, 24], 6),
            Command::ModeSelect {
                pf: true,
                sp: true,
                param_len: 24,
                ten: false
            }
        );
        assert_eq!(
            ok(&[0x55, 0x10, 0, 0, 0, 0, 0, 0x01, 0x02], 10),
            Command::ModeSelect {
                pf: true,
                sp: false,
                param_len: 0x102,
                ten: true
            }
        );
    }

    #[test]
    fn reads() {
        assert_eq!(
            ok(&[0x08, 0xff, 0x12, 0x34, 0], 6),
            Command::Read {
                lba: 0x1f1234,
                blocks: 256,
                fua: false,
                dpo: false,
                cdb_len: 6
            }
        );
        assert_eq!(
            ok(&[0x28, 0x18, 1, 2, 3, 4, 0, 0x01, 0x00], 10),
            Command::Read {
                lba: 0x01020304,
                blocks: 256,
                fua: true,
                dpo: true,
                cdb_len: 10
            }
        );
        assert_eq!(
            ok(&[0xa8, 0, 0, 0, 0, 9, 0, 1, 0, 0], 12),
            Command::Read {
                lba: 9,
                blocks: 0x0001_0000,
                fua: false,
                dpo: false,
                cdb_len: 12
            }
        );
        assert_eq!(
            ok(&[0x88, 0x08, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 5], 16),
            Command::Read {
                lba: 0x0102_0304_0506_0708,
                blocks: 5,
                fua: true,
                dpo: false,
                cdb_len: 16
            }
        );
        assert_eq!(
            err(&[0x28, 0x20], 10),
            Sense::invalid_field_in_cdb(1, Some(7))
        );
        assert_eq!(
            err(&[0x88, 0xe0], 16),
            Sense::invalid_field_in_cdb(1, Some(7))
        );
    }

    #[test]
    fn writes() {
        assert_eq!(
            ok(&[0x0a, 0, 0, 7, 3], 6),
            Command::Write {
                lba: 7,
                blocks: 3,
                fua: false,
                dpo: false,
                cdb_len: 6
            }
        );
        assert_eq!(
            ok(&[0x2a, 0x08, 0, 0, 0, 1, 0, 0, 2], 10),
            Command::Write {
                lba: 1,
                blocks: 2,
                fua: true,
                dpo: false,
                cdb_len: 10
            }
        );
        assert_eq!(
            ok(&[0xaa, 0x10, 0, 0, 0, 1, 0, 0, 0, 2], 12),
            Command::Write {
                lba: 1,
                blocks: 2,
                fua: false,
                dpo: true,
                cdb_len: 12
            }
        );
        assert_eq!(
            ok(&[0x8a, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 2], 16),
            Command::Write {
                lba: 1,
                blocks: 2,
                fua: false,
                dpo: false,
                cdb_len: 16
            }
        );
        assert!(matches!(
            ok(&[0x2e, 0, 0, 0, 0, 1, 0, 0, 1], 10),
            Command::Write {
                fua: true,
                cdb_len: 10,
                ..
            }
        ));
        assert!(matches!(
            ok(&[0x8e], 16),
            Command::Write {
                fua: true,
                cdb_len: 16,
                ..
            }
        ));
        assert_eq!(
            err(&[0x2a, 0x40], 10),
            Sense::invalid_field_in_cdb(1, Some(7))
        );
    }

    #[test]
    fn sync_prefetch_verify() {
        assert_eq!(
            ok(&[0x35, 0x02, 0, 0, 0, 5, 0, 0, 9], 10),
            Command::SynchronizeCache {
                lba: 5,
                blocks: 9,
                immed: true
            }
        );
        assert_eq!(
            ok(&[0x91, 0, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 0], 16),
            Command::SynchronizeCache {
                lba: 5,
                blocks: 0,
                immed: false
            }
        );
        assert_eq!(
            ok(&[0x34, 0x02, 0, 0, 0, 5, 0, 0, 9], 10),
            Command::PreFetch {
                lba: 5,
                blocks: 9,
                immed: true
            }
        );
        assert_eq!(
            ok(&[0x90, 0, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 1, 0], 16),
            Command::PreFetch {
                lba: 5,
                blocks: 256,
                immed: false
            }
        );
        assert_eq!(
            ok(&[0x2f, 0x02, 0, 0, 0, 5, 0, 0, 9], 10),
            Command::Verify {
                lba: 5,
                blocks: 9,
                bytchk: 1,
                cdb_len: 10
            }
        );
        assert_eq!(
            ok(&[0x8f, 0, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 3], 16),
            Command::Verify {
                lba: 5,
                blocks: 3,
                bytchk: 0,
                cdb_len: 16
            }
        );
        assert_eq!(
            err(&[0x2f, 0x20], 10),
            Sense::invalid_field_in_cdb(1, Some(7))
        );
    }

    #[test]
    fn unmap_and_write_same() {
        assert_eq!(
            ok(&[0x42, 0x01, 0, 0, 0, 0, 0, 0, 24], 10),
            Command::Unmap {
                anchor: true,
                param_len: 24
            }
        );
        assert_eq!(
            ok(&[0x41, 0x08, 0, 0, 0, 4, 0, 0, 8], 10),
            Command::WriteSame {
                lba: 4,
                blocks: 8,
                unmap: true,
                anchor: false,
                ndob: false,
                cdb_len: 10
            }
        );
        // NDOB is not a WRITE SAME (10) bit.
        assert!(matches!(
            ok(&[0x41, 0x01], 10),
            Command::WriteSame { ndob: false, .. }
        ));
        assert_eq!(
            ok(&[0x93, 0x19, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 8], 16),
            Command::WriteSame {
                lba: 4,
                blocks: 8,
                unmap: true,
                anchor: true,
                ndob: true,
                cdb_len: 16
            }
        );
        assert_eq!(
            err(&[0x93, 0x04], 16),
            Sense::invalid_field_in_cdb(1, Some(2))
        );
        assert_eq!(
            err(&[0x41, 0x02], 10),
            Sense::invalid_field_in_cdb(1, Some(1))
        );
        assert_eq!(
            err(&[0x41, 0x20], 10),
            Sense::invalid_field_in_cdb(1, Some(7))
        );
    }

    #[test]
    fn report_supported_opcodes() {
        assert_eq!(
            ok(&[0xa3, 0x0c, 0x82, 0x28, 0, 0, 0, 0, 2, 0], 12),
            Command::ReportSupportedOpcodes {
                rctd: true,
                options: 2,
                opcode: 0x28,
                service_action: 0,
                alloc_len: 0x200
            }
        );
        assert_eq!(ok(&[0xa3, 0x0b], 12), Command::Unsupported(0xa3));
        assert_eq!(ok(&[0xa4, 0x0b], 12), Command::Unsupported(0xa4));
    }

    #[test]
    fn zbc_in_and_out() {
        assert_eq!(
            ok(
                &[0x95, 0x00, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0, 0x10, 0, 0x85],
                16
            ),
            Command::ReportZones {
                lba: 0x1000,
                alloc_len: 0x1000,
                options: 0x05,
                partial: true
            }
        );
        // Reserved reporting options are the executor's to refuse.
        assert!(matches!(
            ok(&[0x95, 0xe0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x7f], 16),
            Command::ReportZones {
                options: 0x3f,
                partial: false,
                ..
            }
        ));
        assert_eq!(ok(&[0x95, 0x06], 16), Command::Unsupported(0x95));
        assert_eq!(
            ok(
                &[0x94, 0x04, 0, 0, 0, 0, 0, 0, 0x20, 0, 0, 0, 0, 3, 0x01],
                16
            ),
            Command::ZoneAction {
                action: ZoneAction::ResetWritePointer,
                lba: 0x2000,
                count: 3,
                all: true
            }
        );
        for (sa, action) in [
            (1, ZoneAction::Close),
            (2, ZoneAction::Finish),
            (3, ZoneAction::Open),
        ] {
            assert!(matches!(
                ok(&[0x94, sa], 16),
                Command::ZoneAction { action: a, all: false, .. } if a == action
            ));
        }
        assert_eq!(ok(&[0x94, 0x00], 16), Command::Unsupported(0x94));
        assert_eq!(ok(&[0x94, 0x05], 16), Command::Unsupported(0x94));
        assert_eq!(
            err(&[0x95], 10),
            Sense::invalid_field_in_cdb(0, None),
            "a 16-byte CDB"
        );
        assert_eq!(ok(&[0x95], 16).name(), "REPORT ZONES");
        assert_eq!(ok(&[0x94, 0x02], 16).name(), "FINISH ZONE");
        assert!(!ok(&[0x94, 0x02], 16).wants_data_out());
    }

    #[test]
    fn data_out_wanted() {
        assert!(ok(&[0x15, 0x10, 0, 0, 4], 6).wants_data_out());
        assert!(ok(&[0x42], 10).wants_data_out());
        assert!(ok(&[0x41], 10).wants_data_out());
        assert!(!ok(&[0x93, 0x01], 16).wants_data_out());
        assert!(!ok(&[0x2a], 10).wants_data_out());
        assert!(!ok(&[0x12], 6).wants_data_out());
        assert_eq!(ok(&[0x2a], 10).name(), "WRITE");
    }

    #[test]
    fn length_offsets() {
        assert_eq!(transfer_length_offset(6), 4);
        assert_eq!(transfer_length_offset(10), 7);
        assert_eq!(transfer_length_offset(12), 6);
        assert_eq!(transfer_length_offset(16), 10);
    }
}
