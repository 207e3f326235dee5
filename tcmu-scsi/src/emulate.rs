//! The generic emulation: [`execute`] answers a decoded [`Command`] from the
//! device parameters and state, or hands the runtime a checked I/O request.
//!
//! Ownership: the emulation owns no buffers. `data_out` is borrowed from the
//! runtime (only needed for [`Command::wants_data_out`] commands); every
//! data-in answer is a fresh `Vec` already cut to the allocation length, and
//! the runtime zero-fills the rest of the initiator's buffer.

use crate::alua::{self, AccessState};
use crate::capacity;
use crate::cdb::{transfer_length_offset, Command};
use crate::device::{DeviceParams, DeviceState};
use crate::inquiry;
use crate::mode;
use crate::opcodes;
use crate::sense::Sense;
use crate::status::Status;
use crate::unmap;
use crate::xcopy::{self, CopyList};

pub use crate::unmap::LbaRange;

/// An answer produced without the handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// SCSI status.
    pub status: Status,
    /// Sense data, with CHECK CONDITION.
    pub sense: Option<Sense>,
    /// Data-in, already truncated to the allocation length.
    pub data_in: Vec<u8>,
}

impl Response {
    /// GOOD with no data.
    pub fn good() -> Self {
        Self {
            status: Status::Good,
            sense: None,
            data_in: Vec::new(),
        }
    }

    /// GOOD with data-in.
    pub fn data(data_in: Vec<u8>) -> Self {
        Self {
            status: Status::Good,
            sense: None,
            data_in,
        }
    }

    /// CHECK CONDITION with `sense`.
    pub fn check(sense: Sense) -> Self {
        Self {
            status: Status::CheckCondition,
            sense: Some(sense),
            data_in: Vec::new(),
        }
    }
}

/// What to do with a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Answered here.
    Done(Response),
    /// Read `blocks` (> 0) blocks at `lba`; the range is checked.
    Read {
        /// First block.
        lba: u64,
        /// Number of blocks, never 0.
        blocks: u32,
        /// FUA as the initiator sent it.
        fua: bool,
    },
    /// Write `blocks` (> 0) blocks at `lba`; the range is checked. `fua` is
    /// the initiator's bit (WRITE AND VERIFY sets it); forcing FUA while the
    /// write cache is off is the runtime's call.
    Write {
        /// First block.
        lba: u64,
        /// Number of blocks, never 0.
        blocks: u32,
        /// FUA as the initiator sent it.
        fua: bool,
    },
    /// SYNCHRONIZE CACHE: flush the whole device (the range was checked).
    Flush,
    /// Deallocate these ranges (checked, none empty, never an empty list).
    Unmap(Vec<LbaRange>),
    /// WRITE SAME: write `block` to each of `blocks` blocks at `lba` (or
    /// deallocate them when `unmap` is set and the handler can).
    WriteSame {
        /// First block.
        lba: u64,
        /// Number of blocks, never 0.
        blocks: u32,
        /// The initiator allows deallocation (UNMAP bit).
        unmap: bool,
        /// One logical block of data (zeroes for NDOB).
        block: Vec<u8>,
    },
    /// COMPARE AND WRITE: atomically compare `blocks` blocks at `lba` with
    /// the first half of the data-out buffer and, if they are equal, write
    /// its second half (else MISCOMPARE with the offset of the first
    /// differing byte). The range is checked.
    CompareAndWrite {
        /// First block.
        lba: u64,
        /// Number of blocks, never 0.
        blocks: u32,
        /// FUA as the initiator sent it.
        fua: bool,
    },
    /// VERIFY with BYTCHK: compare the medium with the data-out buffer
    /// (MISCOMPARE with the offset of the first differing byte).
    Verify {
        /// First block.
        lba: u64,
        /// Number of blocks, never 0.
        blocks: u32,
        /// BYTCHK 11b: the data-out is one block, compared with every block.
        same: bool,
    },
    /// FORMAT UNIT: initialise the whole medium so that it reads zeroes.
    Format,
    /// EXTENDED COPY: run the checked copy list (segments name this device
    /// or others by NAA designator).
    Copy(CopyList),
    /// SET TARGET PORT GROUPS: move these groups (by identifier) to these
    /// states, in the device's configfs ALUA groups.
    SetPortGroups(Vec<(u16, AccessState)>),
    /// GET LBA STATUS from `lba` (checked to lie on the device): answer with
    /// [`crate::lba_status::response`] and the handler's extents.
    LbaStatus {
        /// STARTING LOGICAL BLOCK ADDRESS.
        lba: u64,
        /// ALLOCATION LENGTH.
        alloc_len: u32,
    },
}

fn done(r: Result<Vec<u8>, Sense>, alloc_len: usize) -> Outcome {
    Outcome::Done(match r {
        Ok(mut data) => {
            data.truncate(alloc_len);
            Response::data(data)
        }
        Err(s) => Response::check(s),
    })
}

/// Most zero padding added after an answer (the data-in buffer is never
/// larger than this in practice; the runtime cuts to the real buffer).
const MAX_PADDING: usize = 1 << 16;

fn check(s: Sense) -> Outcome {
    Outcome::Done(Response::check(s))
}

fn good() -> Outcome {
    Outcome::Done(Response::good())
}

/// `data_out` cut to the parameter list length. A data-out buffer shorter
/// than the CDB's PARAMETER LIST LENGTH is INVALID FIELD IN CDB, as the
/// kernel's transport check answers it for its own backstores.
fn param_list(data_out: &[u8], param_len: u32) -> Result<&[u8], Sense> {
    usize::try_from(param_len)
        .ok()
        .and_then(|n| data_out.get(..n))
        .ok_or_else(Sense::invalid_cdb_field)
}

/// Reject a transfer longer than the device accepts
/// ([`DeviceParams::accepted_transfer_blocks`]).
fn check_transfer_length(params: &DeviceParams, blocks: u32, cdb_len: u8) -> Result<(), Sense> {
    if params.max_transfer_blocks != 0 && u64::from(blocks) > params.accepted_transfer_blocks() {
        Err(Sense::invalid_field_in_cdb(
            transfer_length_offset(cdb_len),
            None,
        ))
    } else {
        Ok(())
    }
}

/// A READ or WRITE after its transfer-length and range checks: `io()` for
/// a non-empty transfer, GOOD for a zero-block one.
fn checked_io(
    params: &DeviceParams,
    lba: u64,
    blocks: u32,
    cdb_len: u8,
    io: impl FnOnce() -> Outcome,
) -> Outcome {
    match check_transfer_length(params, blocks, cdb_len)
        .and_then(|()| params.check_range(lba, u64::from(blocks)))
    {
        Err(s) => check(s),
        Ok(()) if blocks == 0 => good(),
        Ok(()) => io(),
    }
}

/// Execute a decoded command against the device.
///
/// `data_out` is the command's data-out buffer when
/// [`Command::wants_data_out`] is true (ignored otherwise). A pending
/// [`DeviceState::unit_attention`] is reported (and cleared) by the first
/// command other than INQUIRY and REQUEST SENSE.
pub fn execute(
    cmd: &Command,
    params: &DeviceParams,
    state: &mut DeviceState,
    data_out: &[u8],
) -> Outcome {
    if !matches!(cmd, Command::Inquiry { .. } | Command::RequestSense { .. }) {
        if let Some(ua) = state.unit_attention.take() {
            return check(ua);
        }
    }
    match *cmd {
        Command::TestUnitReady | Command::Seek => good(),
        Command::RequestSense { desc, alloc_len } => {
            let sense = state.unit_attention.take().unwrap_or_else(Sense::no_sense);
            let mut data = if desc {
                sense.to_descriptor()
            } else {
                sense.to_fixed().to_vec()
            };
            // Like the kernel, fill the whole allocation length (zeroes
            // after the sense data).
            data.resize(usize::from(alloc_len).max(data.len()), 0);
            done(Ok(data), usize::from(alloc_len))
        }
        Command::Inquiry {
            evpd,
            page_code,
            alloc_len,
        } => done(
            inquiry::inquiry(params, state, evpd, page_code),
            usize::from(alloc_len),
        ),
        Command::ReadCapacity10 => done(Ok(capacity::read_capacity_10(params)), 8),
        Command::ReadCapacity16 { alloc_len } => done(
            Ok(capacity::read_capacity_16(params)),
            usize::try_from(alloc_len).unwrap_or(usize::MAX),
        ),
        Command::ModeSense {
            dbd,
            llbaa,
            pc,
            page,
            subpage,
            alloc_len,
            ten,
        } => done(
            match params.mmc {
                Some(mmc) => {
                    crate::mmc::mode::mode_sense(&mmc_mode(mmc, state), ten, pc, page, subpage)
                }
                None => mode::mode_sense(params, state, ten, dbd, llbaa, pc, page, subpage),
            },
            usize::from(alloc_len),
        ),
        Command::ModeSelect {
            pf,
            sp,
            param_len,
            ten,
        } => {
            if !pf {
                check(Sense::invalid_field_in_cdb(1, Some(4)))
            } else if sp {
                check(Sense::invalid_field_in_cdb(1, Some(0)))
            } else if param_len == 0 {
                good()
            } else {
                match param_list(data_out, u32::from(param_len)).and_then(|list| match params.mmc {
                    Some(mmc) => crate::mmc::mode::mode_select(&mmc_mode(mmc, state), ten, list),
                    None => mode::mode_select(params, state, ten, list),
                }) {
                    Ok(()) => good(),
                    Err(s) => check(s),
                }
            }
        }
        Command::StartStopUnit {
            loej,
            power_condition,
            ..
        } => {
            if power_condition != 0 {
                check(Sense::invalid_field_in_cdb(4, Some(7)))
            } else if loej {
                // A fixed disk has no medium to load or eject.
                check(Sense::invalid_field_in_cdb(4, Some(1)))
            } else {
                good()
            }
        }
        Command::Read {
            lba,
            blocks,
            fua,
            cdb_len,
            ..
        } => checked_io(params, lba, blocks, cdb_len, || Outcome::Read {
            lba,
            blocks,
            fua,
        }),
        Command::Write {
            lba,
            blocks,
            fua,
            cdb_len,
            ..
        } => checked_io(params, lba, blocks, cdb_len, || Outcome::Write {
            lba,
            blocks,
            fua,
        }),
        Command::SynchronizeCache { lba, blocks, .. } => {
            match params.check_range(lba, u64::from(blocks)) {
                Ok(()) => Outcome::Flush,
                Err(s) => check(s),
            }
        }
        Command::PreFetch { lba, blocks, .. } => match params.check_range(lba, u64::from(blocks)) {
            // GOOD: "not all blocks fit the cache" is a valid answer.
            Ok(()) => good(),
            Err(s) => check(s),
        },
        Command::Verify {
            lba,
            blocks,
            bytchk,
            cdb_len,
        } => match bytchk {
            // Medium verification only: the medium is always readable.
            0 => match params.check_range(lba, u64::from(blocks)) {
                Ok(()) => good(),
                Err(s) => check(s),
            },
            1 | 3 => checked_io(params, lba, blocks, cdb_len, || Outcome::Verify {
                lba,
                blocks,
                same: bytchk == 3,
            }),
            // 10b is reserved.
            _ => check(Sense::invalid_field_in_cdb(1, Some(2))),
        },
        Command::CompareAndWrite { lba, blocks, fua } => {
            if blocks > params.max_compare_write_blocks {
                check(Sense::invalid_field_in_cdb(13, None))
            } else {
                let blocks = u32::from(blocks);
                checked_io(params, lba, blocks, 16, || Outcome::CompareAndWrite {
                    lba,
                    blocks,
                    fua,
                })
            }
        }
        Command::FormatUnit {
            fmtpinfo,
            longlist,
            fmtdata,
        } => match check_format_unit(fmtpinfo, longlist, fmtdata, data_out) {
            Ok(()) => Outcome::Format,
            Err(s) => check(s),
        },
        Command::GetLbaStatus { lba, alloc_len } => {
            if lba >= params.num_blocks {
                check(Sense::lba_out_of_range())
            } else {
                Outcome::LbaStatus { lba, alloc_len }
            }
        }
        Command::Unmap { anchor, param_len } => {
            let Some(limits) = &params.unmap else {
                return check(Sense::invalid_command_opcode());
            };
            if anchor {
                return check(Sense::invalid_field_in_cdb(1, Some(0)));
            }
            match param_list(data_out, u32::from(param_len))
                .and_then(|list| unmap::parse(list, params, limits))
            {
                Ok(ranges) if ranges.is_empty() => good(),
                Ok(ranges) => Outcome::Unmap(ranges),
                Err(s) => check(s),
            }
        }
        Command::WriteSame {
            lba,
            blocks,
            unmap,
            anchor,
            ndob,
            cdb_len,
        } => write_same(params, data_out, lba, blocks, unmap, anchor, ndob, cdb_len),
        Command::ReportSupportedOpcodes {
            rctd,
            options,
            opcode,
            service_action,
            alloc_len,
        } => done(
            opcodes::report(params, rctd, options, opcode, service_action),
            usize::try_from(alloc_len).unwrap_or(usize::MAX),
        ),
        Command::ExtendedCopy {
            service_action,
            param_len,
        } => {
            if !params.third_party_copy {
                check(Sense::invalid_command_opcode())
            } else if service_action != 0 {
                // Only LID1; the kernel knows no other service action.
                check(Sense::invalid_command_opcode())
            } else if param_len == 0 {
                good()
            } else {
                match param_list(data_out, param_len)
                    .and_then(|list| xcopy::parse_lid1(list, &params.naa()))
                {
                    Ok(l) if l.segments.is_empty() => good(),
                    Ok(l) => Outcome::Copy(l),
                    Err(s) => check(s),
                }
            }
        }
        Command::ReceiveCopyResults {
            service_action,
            list_id,
            alloc_len,
        } => {
            if params.third_party_copy {
                // Zero-padded to the allocation length, like the kernel.
                let pad = usize::try_from(alloc_len).unwrap_or(0).min(MAX_PADDING);
                done(
                    xcopy::receive_copy_results(
                        service_action,
                        list_id,
                        alloc_len,
                        state.last_copy.as_ref(),
                    )
                    .map(|mut d| {
                        d.resize(d.len().max(pad), 0);
                        d
                    }),
                    usize::MAX,
                )
            } else {
                check(Sense::invalid_command_opcode())
            }
        }
        Command::ReportTargetPortGroups {
            extended,
            alloc_len,
        } => {
            if params.port_groups.is_empty() {
                check(Sense::invalid_command_opcode())
            } else {
                done(
                    alua::report_target_port_groups(&params.port_groups, extended, alloc_len),
                    usize::MAX,
                )
            }
        }
        Command::SetTargetPortGroups { param_len } => {
            if params.port_groups.is_empty() {
                check(Sense::invalid_command_opcode())
            } else {
                match param_list(data_out, param_len)
                    .and_then(|list| alua::parse_set_target_port_groups(list, &params.port_groups))
                {
                    Ok(changes) => Outcome::SetPortGroups(changes),
                    Err(s) => check(s),
                }
            }
        }
        // Zone state is the handler's (see `crate::zbc`): a zoned device
        // whose handler did not answer these has no zones to report.
        Command::ReportZones { .. } | Command::ZoneAction { .. } => {
            check(Sense::invalid_command_opcode())
        }
        // The medium of an optical drive is the handler's (see
        // `crate::mmc`): one whose handler did not answer these has none
        // to describe, and a disk has no such commands.
        Command::PreventAllowMediumRemoval { .. }
        | Command::ReadFormatCapacities { .. }
        | Command::ReadToc { .. }
        | Command::GetConfiguration { .. }
        | Command::GetEventStatus { .. }
        | Command::ReadDiscInformation { .. }
        | Command::ReadTrackInformation { .. }
        | Command::ReadDiscStructure { .. }
        | Command::MechanismStatus { .. } => check(Sense::invalid_command_opcode()),
        // A service action of ZBC IN or OUT that a zoned device lacks.
        Command::Unsupported(crate::zbc::ZBC_IN | crate::zbc::ZBC_OUT)
            if params.zoned.is_some() =>
        {
            check(Sense::invalid_field_in_cdb(1, Some(4)))
        }
        Command::Unsupported(_) => check(Sense::invalid_command_opcode()),
    }
}

/// What the MMC mode pages of the generic emulation show: the drive, the
/// write cache, and no lock (the medium's lock is the handler's).
fn mmc_mode(mmc: crate::mmc::MmcParams, state: &DeviceState) -> crate::mmc::mode::ModeState {
    crate::mmc::mode::ModeState {
        drive: mmc.drive,
        write_cache: state.write_cache,
        locked: false,
    }
}

/// Checks a FORMAT UNIT: no protection information, and a parameter list
/// (if any) that asks for nothing but an optional IMMED: no initialization
/// pattern, no defect list. Public for handlers that format their medium
/// themselves (a zoned disk resets its zones) and answer the same.
pub fn check_format_unit(
    fmtpinfo: u8,
    longlist: bool,
    fmtdata: bool,
    data_out: &[u8],
) -> Result<(), Sense> {
    if fmtpinfo != 0 {
        return Err(Sense::invalid_field_in_cdb(1, Some(7)));
    }
    if !fmtdata {
        return Ok(());
    }
    let header = if longlist { 8 } else { 4 };
    let Some(h) = data_out.get(..header) else {
        return Err(Sense::parameter_list_length_error());
    };
    // Byte 1: FOV DPRY DCRT STPF IP obsolete IMMED VS. Without FOV the
    // other option bits must be zero; IP (an initialization pattern) is
    // not supported either way.
    let fov = h[1] & 0x80 != 0;
    if h[1] & 0x08 != 0 {
        return Err(Sense::invalid_field_in_parameter_list(1, Some(3)));
    }
    if !fov && h[1] & 0x70 != 0 {
        return Err(Sense::invalid_field_in_parameter_list(1, Some(6)));
    }
    let defects = if longlist {
        crate::bytes::be32(h, 4)
    } else {
        u32::from(crate::bytes::be16(h, 2))
    };
    if defects != 0 {
        return Err(Sense::invalid_field_in_parameter_list(
            if longlist { 4 } else { 2 },
            None,
        ));
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn write_same(
    params: &DeviceParams,
    data_out: &[u8],
    lba: u64,
    blocks: u32,
    unmap: bool,
    anchor: bool,
    ndob: bool,
    cdb_len: u8,
) -> Outcome {
    // The kernel's order: length, limit, range, then the flags.
    let len_field = transfer_length_offset(cdb_len);
    if blocks == 0 {
        // WSNZ = 1 in the Block Limits page, like the kernel.
        return check(Sense::invalid_field_in_cdb(len_field, None));
    }
    if params.max_write_same_blocks != 0 && blocks > params.max_write_same_blocks {
        return check(Sense::invalid_field_in_cdb(len_field, None));
    }
    if let Err(s) = params.check_range(lba, u64::from(blocks)) {
        return check(s);
    }
    let flags = if cdb_len == 32 { 10 } else { 1 };
    if anchor {
        // ANC_SUP = 0.
        return check(Sense::invalid_field_in_cdb(flags, Some(4)));
    }
    if unmap && params.unmap.is_none() {
        return check(Sense::invalid_field_in_cdb(flags, Some(3)));
    }
    let size = usize::try_from(params.block_size).unwrap_or(usize::MAX);
    let block = if ndob {
        vec![0u8; size]
    } else if data_out.len() == size {
        data_out.to_vec()
    } else {
        // Exactly one block of data-out, or the kernel's transport check
        // refuses the command.
        return check(Sense::invalid_cdb_field());
    };
    Outcome::WriteSame {
        lba,
        blocks,
        unmap,
        block,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cdb::decode;
    use crate::device::UnmapParams;

    fn params() -> DeviceParams {
        let mut p = DeviceParams::new(512, 1000);
        p.unit_serial = Some("abc123".into());
        p
    }

    fn thin() -> DeviceParams {
        let mut p = params();
        p.unmap = Some(UnmapParams {
            max_lba_count: 64,
            max_descriptors: 2,
            ..UnmapParams::default()
        });
        p
    }

    fn run_with(
        p: &DeviceParams,
        s: &mut DeviceState,
        cdb: &[u8],
        len: usize,
        out: &[u8],
    ) -> Outcome {
        let mut v = cdb.to_vec();
        v.resize(len, 0);
        match decode(&v) {
            Ok(c) => execute(&c, p, s, out),
            Err(sense) => Outcome::Done(Response::check(sense)),
        }
    }

    fn run(cdb: &[u8], len: usize) -> Outcome {
        run_with(&params(), &mut DeviceState::default(), cdb, len, &[])
    }

    #[test]
    fn compare_and_write() {
        let caw =
            |b1: u8, lba: u8, n: u8| run(&[0x89, b1, 0, 0, 0, 0, 0, 0, 0, lba, 0, 0, 0, n], 16);
        assert_eq!(
            caw(0x08, 7, 1),
            Outcome::CompareAndWrite {
                lba: 7,
                blocks: 1,
                fua: true
            }
        );
        assert_eq!(caw(0, 7, 0), good());
        assert_eq!(
            sense_of(&caw(0, 7, 2)),
            Some(Sense::invalid_field_in_cdb(13, None))
        );
        assert_eq!(
            sense_of(&run(
                &[0x89, 0, 0, 0, 0, 0, 0, 0, 0x03, 0xe8, 0, 0, 0, 1],
                16
            )),
            Some(Sense::lba_out_of_range())
        );
        assert_eq!(
            sense_of(&caw(0x20, 0, 1)),
            Some(Sense::invalid_field_in_cdb(1, Some(7)))
        );
    }

    #[test]
    fn mmc_commands_are_the_handlers() {
        // On a disk, and on an optical drive whose handler left them.
        let mut optical = params();
        optical.mmc = Some(crate::mmc::MmcParams {
            drive: crate::mmc::Drive::DvdRam,
        });
        for p in [params(), optical] {
            for cdb in [
                &[0x1e, 0, 0, 0, 1][..],
                &[0x23],
                &[0x43],
                &[0x46],
                &[0x4a, 1, 0, 0, 0x10],
                &[0x51],
                &[0x52],
                &[0xad],
                &[0xbd],
            ] {
                let len = crate::opcode::cdb_len(cdb[0]).unwrap();
                let got = run_with(&p, &mut DeviceState::default(), cdb, len, &[]);
                assert_eq!(
                    sense_of(&got),
                    Some(Sense::invalid_command_opcode()),
                    "{cdb:02x?}"
                );
            }
        }
    }

    #[test]
    fn an_optical_drive_has_the_mmc_mode_pages() {
        let mut p = params();
        p.mmc = Some(crate::mmc::MmcParams {
            drive: crate::mmc::Drive::DvdRam,
        });
        let mut s = DeviceState::new(true);
        let Outcome::Done(r) = run_with(&p, &mut s, &[0x5a, 0, 0x2a, 0, 0, 0, 0, 0, 64], 10, &[])
        else {
            panic!("MODE SENSE went to the handler");
        };
        assert_eq!(&r.data_in[..10], &[0, 28, 0, 0, 0, 0, 0, 0, 0x2a, 0x14]);
        let page8 = crate::mmc::mode::page(0x08, 0, &mmc_mode(p.mmc.unwrap(), &s)).unwrap();
        let mut list = vec![0u8; 8];
        list.extend(&page8);
        let select = [0x55, 0x10, 0, 0, 0, 0, 0, 0, list.len() as u8];
        assert_eq!(run_with(&p, &mut s, &select, 10, &list), good());
        list[10] = 0;
        assert_eq!(
            sense_of(&run_with(&p, &mut s, &select, 10, &list)),
            Some(Sense::invalid_field_in_parameter_list(10, None))
        );
    }

    #[test]
    fn format_unit() {
        let p = params();
        let mut s = DeviceState::default();
        let fmt = |cdb: &[u8], out: &[u8], s: &mut DeviceState| run_with(&p, s, cdb, 6, out);
        assert_eq!(fmt(&[0x04], &[], &mut s), Outcome::Format);
        // FMTDATA with IMMED, short and long headers.
        assert_eq!(
            fmt(&[0x04, 0x10], &[0, 0x02, 0, 0], &mut s),
            Outcome::Format
        );
        assert_eq!(
            fmt(&[0x04, 0x30], &[0, 0x02, 0, 0, 0, 0, 0, 0], &mut s),
            Outcome::Format
        );
        assert_eq!(
            sense_of(&fmt(&[0x04, 0x10], &[0, 0x02], &mut s)),
            Some(Sense::parameter_list_length_error())
        );
        assert_eq!(
            sense_of(&fmt(&[0x04, 0x10], &[0, 0x08, 0, 0], &mut s)),
            Some(Sense::invalid_field_in_parameter_list(1, Some(3)))
        );
        assert_eq!(
            sense_of(&fmt(&[0x04, 0x10], &[0, 0, 0, 4, 0, 0, 0, 0], &mut s)),
            Some(Sense::invalid_field_in_parameter_list(2, None))
        );
        assert_eq!(
            sense_of(&fmt(&[0x04, 0x40], &[], &mut s)),
            Some(Sense::invalid_field_in_cdb(1, Some(7)))
        );
    }

    #[test]
    fn get_lba_status() {
        assert_eq!(
            run(&[0x9e, 0x12, 0, 0, 0, 0, 0, 0, 0x03, 0xe7, 0, 0, 0, 32], 16),
            Outcome::LbaStatus {
                lba: 999,
                alloc_len: 32
            }
        );
        assert_eq!(
            sense_of(&run(
                &[0x9e, 0x12, 0, 0, 0, 0, 0, 0, 0x03, 0xe8, 0, 0, 0, 32],
                16
            )),
            Some(Sense::lba_out_of_range())
        );
    }

    fn sense_of(o: &Outcome) -> Option<Sense> {
        match o {
            Outcome::Done(r) => r.sense,
            _ => None,
        }
    }

    fn data_of(o: Outcome) -> Vec<u8> {
        match o {
            Outcome::Done(Response {
                status: Status::Good,
                data_in,
                ..
            }) => data_in,
            other => panic!("not GOOD data: {other:?}"),
        }
    }

    #[test]
    fn tur_and_unsupported() {
        assert_eq!(run(&[0x00], 6), good());
        assert_eq!(run(&[0x2b], 10), good());
        let o = run(&[0xc1], 16);
        assert_eq!(sense_of(&o), Some(Sense::invalid_command_opcode()));
        if let Outcome::Done(r) = o {
            assert_eq!(r.status, Status::CheckCondition);
            assert_eq!(
                &r.sense.map(|s| s.to_fixed()).unwrap_or_default()[12..18],
                &[0x20, 0, 0, 0, 0, 0]
            );
        }
    }

    #[test]
    fn request_sense() {
        // The whole allocation length, zeroes after the sense data.
        let d = data_of(run(&[0x03, 0, 0, 0, 252], 6));
        assert_eq!(d.len(), 252);
        assert_eq!(&d[..18], &Sense::no_sense().to_fixed());
        assert!(d[18..].iter().all(|&b| b == 0));
        let d = data_of(run(&[0x03, 0, 0, 0, 8], 6));
        assert_eq!(d.len(), 8);
        let d = data_of(run(&[0x03, 1, 0, 0, 252], 6));
        assert_eq!(&d[..8], &[0x72, 0, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn unit_attention() {
        let p = params();
        let mut s = DeviceState {
            unit_attention: Some(Sense::unit_attention_capacity_changed()),
            ..DeviceState::default()
        };
        // INQUIRY does not consume it.
        assert!(matches!(
            run_with(&p, &mut s, &[0x12, 0, 0, 0, 36], 6, &[]),
            Outcome::Done(Response {
                status: Status::Good,
                ..
            })
        ));
        assert_eq!(
            sense_of(&run_with(&p, &mut s, &[0x00], 6, &[])),
            Some(Sense::unit_attention_capacity_changed())
        );
        assert_eq!(run_with(&p, &mut s, &[0x00], 6, &[]), good());
        // REQUEST SENSE reports and clears it.
        s.unit_attention = Some(Sense::unit_attention_reset());
        let d = data_of(run_with(&p, &mut s, &[0x03, 0, 0, 0, 18], 6, &[]));
        assert_eq!((d[2], d[12], d[13]), (0x06, 0x29, 0x00));
        assert_eq!(s.unit_attention, None);
    }

    #[test]
    fn inquiry_truncation() {
        let d = data_of(run(&[0x12, 0, 0, 0, 5], 6));
        assert_eq!(d, vec![0, 0, 6, 2, 31]);
        let d = data_of(run(&[0x12, 0, 0, 1, 0], 6));
        assert_eq!(d.len(), 36);
        let d = data_of(run(&[0x12, 1, 0x80, 0, 255], 6));
        assert_eq!(d, b"\x00\x80\x00\x07abc123\x00".to_vec());
        assert_eq!(
            sense_of(&run(&[0x12, 0, 0x80, 0, 255], 6)),
            Some(Sense::invalid_field_in_cdb(2, None))
        );
        assert_eq!(data_of(run(&[0x12, 0, 0, 0, 0], 6)), Vec::<u8>::new());
    }

    #[test]
    fn read_capacity() {
        assert_eq!(
            data_of(run(&[0x25], 10)),
            vec![0, 0, 0x03, 0xe7, 0, 0, 2, 0]
        );
        let d = data_of(run(&[0x9e, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 12], 16));
        assert_eq!(d, vec![0, 0, 0, 0, 0, 0, 0x03, 0xe7, 0, 0, 2, 0]);
        let d = data_of(run_with(
            &thin(),
            &mut DeviceState::default(),
            &[0x9e, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32],
            16,
            &[],
        ));
        assert_eq!(d[14], 0x80);
    }

    #[test]
    fn mode_sense_and_select() {
        let p = params();
        let mut s = DeviceState::new(true);
        let out = data_of(run_with(&p, &mut s, &[0x1a, 0, 0x08, 0, 255], 6, &[]));
        assert_eq!(out[12 + 2], 0x04);
        let trunc = data_of(run_with(&p, &mut s, &[0x1a, 0, 0x08, 0, 4], 6, &[]));
        assert_eq!(trunc, out[..4].to_vec());

        let mut list = out.clone();
        list[0] = 0;
        list[12 + 2] = 0;
        let n = list.len() as u8;
        assert_eq!(
            run_with(&p, &mut s, &[0x15, 0x10, 0, 0, n], 6, &list),
            good()
        );
        assert!(!s.write_cache);
        // PF = 0, SP = 1.
        assert_eq!(
            sense_of(&run_with(&p, &mut s, &[0x15, 0x00, 0, 0, n], 6, &list)),
            Some(Sense::invalid_field_in_cdb(1, Some(4)))
        );
        assert_eq!(
            sense_of(&run_with(&p, &mut s, &[0x15, 0x11, 0, 0, n], 6, &list)),
            Some(Sense::invalid_field_in_cdb(1, Some(0)))
        );
        // Parameter list length 0: nothing to do.
        assert_eq!(run_with(&p, &mut s, &[0x55, 0x10], 10, &[]), good());
        // Parameter list length shorter than the page.
        assert_eq!(
            sense_of(&run_with(&p, &mut s, &[0x15, 0x10, 0, 0, n - 1], 6, &list)),
            Some(Sense::parameter_list_length_error())
        );
        // Saved values.
        assert_eq!(
            sense_of(&run_with(
                &p,
                &mut s,
                &[0x5a, 0, 0xc8, 0, 0, 0, 0, 0, 255],
                10,
                &[]
            )),
            Some(Sense::saving_parameters_not_supported())
        );
    }

    #[test]
    fn start_stop() {
        assert_eq!(run(&[0x1b, 0, 0, 0, 1], 6), good());
        assert_eq!(run(&[0x1b, 1, 0, 0, 0], 6), good());
        assert_eq!(
            sense_of(&run(&[0x1b, 0, 0, 0, 2], 6)),
            Some(Sense::invalid_field_in_cdb(4, Some(1)))
        );
        assert_eq!(
            sense_of(&run(&[0x1b, 0, 0, 0, 0x11], 6)),
            Some(Sense::invalid_field_in_cdb(4, Some(7)))
        );
    }

    #[test]
    fn read_write_checks() {
        assert_eq!(
            run(&[0x28, 0x08, 0, 0, 0, 10, 0, 0, 8], 10),
            Outcome::Read {
                lba: 10,
                blocks: 8,
                fua: true
            }
        );
        assert_eq!(
            run(&[0x8a, 0, 0, 0, 0, 0, 0, 0, 0x03, 0xe0, 0, 0, 0, 8], 16),
            Outcome::Write {
                lba: 992,
                blocks: 8,
                fua: false
            }
        );
        assert_eq!(
            sense_of(&run(
                &[0x8a, 0, 0, 0, 0, 0, 0, 0, 0x03, 0xe1, 0, 0, 0, 8],
                16
            )),
            Some(Sense::lba_out_of_range())
        );
        assert_eq!(
            sense_of(&run(
                &[0x88, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 2],
                16
            )),
            Some(Sense::lba_out_of_range())
        );
        // Zero-length transfers are GOOD without I/O, but still range checked.
        assert_eq!(run(&[0x28, 0, 0, 0, 0x03, 0xe8], 10), good());
        assert_eq!(
            sense_of(&run(&[0x28, 0, 0, 0, 0x03, 0xe9], 10)),
            Some(Sense::lba_out_of_range())
        );
        // Over the advertised maximum (128) but within what the kernel's
        // fileio accepts (8 MiB): fine. Beyond that: pointer at the length.
        let mut big = DeviceParams::new(512, 100_000);
        big.max_transfer_blocks = 128;
        let mut st = DeviceState::default();
        assert_eq!(
            run_with(&big, &mut st, &[0x2a, 0, 0, 0, 0, 0, 0, 1, 0], 10, &[]),
            Outcome::Write {
                lba: 0,
                blocks: 256,
                fua: false
            }
        );
        assert_eq!(
            sense_of(&run_with(
                &big,
                &mut st,
                &[0x88, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x40, 0x01],
                16,
                &[]
            )),
            Some(Sense::invalid_field_in_cdb(10, None))
        );
        assert_eq!(
            sense_of(&run_with(
                &big,
                &mut st,
                &[0xa8, 0, 0, 0, 0, 0, 0, 0, 0x40, 0x01],
                12,
                &[]
            )),
            Some(Sense::invalid_field_in_cdb(6, None))
        );
        // A larger advertised maximum is honoured as it is.
        big.max_transfer_blocks = 20_000;
        assert!(matches!(
            run_with(
                &big,
                &mut st,
                &[0x88, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x40, 0x01],
                16,
                &[]
            ),
            Outcome::Read { blocks: 16385, .. }
        ));
        let mut p = params();
        p.max_transfer_blocks = 0;
        assert_eq!(
            run_with(&p, &mut DeviceState::default(), &[0x08, 0, 0, 0, 0], 6, &[]),
            Outcome::Read {
                lba: 0,
                blocks: 256,
                fua: false
            }
        );
    }

    #[test]
    fn sync_verify_prefetch() {
        assert_eq!(run(&[0x35, 0, 0, 0, 0, 0, 0, 0, 0], 10), Outcome::Flush);
        assert_eq!(
            run(&[0x35, 0, 0, 0, 0x03, 0xe8, 0, 0, 0], 10),
            Outcome::Flush
        );
        assert_eq!(
            sense_of(&run(&[0x91, 0, 0, 0, 0, 0, 0, 0, 0x03, 0xe9], 16)),
            Some(Sense::lba_out_of_range())
        );
        assert_eq!(run(&[0x2f, 0, 0, 0, 0, 0, 0, 0x03, 0xe8], 10), good());
        assert_eq!(
            sense_of(&run(&[0x2f, 0, 0, 0, 0, 1, 0, 0x03, 0xe8], 10)),
            Some(Sense::lba_out_of_range())
        );
        // BYTCHK 01b and 11b compare data; 10b is reserved.
        assert_eq!(
            run(&[0x2f, 0x02, 0, 0, 0, 0, 0, 0, 1], 10),
            Outcome::Verify {
                lba: 0,
                blocks: 1,
                same: false
            }
        );
        assert_eq!(
            run(&[0x8f, 0x06, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 2], 16),
            Outcome::Verify {
                lba: 9,
                blocks: 2,
                same: true
            }
        );
        assert_eq!(run(&[0x2f, 0x02, 0, 0, 0, 0, 0, 0, 0], 10), good());
        assert_eq!(
            sense_of(&run(&[0x2f, 0x04, 0, 0, 0, 0, 0, 0, 1], 10)),
            Some(Sense::invalid_field_in_cdb(1, Some(2)))
        );
        assert_eq!(
            sense_of(&run(&[0x2f, 0x02, 0, 0, 0x03, 0xe8, 0, 0, 1], 10)),
            Some(Sense::lba_out_of_range())
        );
        assert_eq!(
            run(&[0x90, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5], 16),
            good()
        );
        assert_eq!(
            sense_of(&run(&[0x34, 0, 0, 0, 0x03, 0xe8, 0, 0, 1], 10)),
            Some(Sense::lba_out_of_range())
        );
    }

    fn unmap_list(descs: &[(u64, u32)]) -> Vec<u8> {
        let mut v = vec![
            0,
            (descs.len() * 16 + 6) as u8,
            0,
            (descs.len() * 16) as u8,
            0,
            0,
            0,
            0,
        ];
        for &(lba, n) in descs {
            v.extend_from_slice(&lba.to_be_bytes());
            v.extend_from_slice(&n.to_be_bytes());
            v.extend_from_slice(&[0; 4]);
        }
        v
    }

    #[test]
    fn unmap_command() {
        let p = thin();
        let mut s = DeviceState::default();
        let l = unmap_list(&[(0, 8), (100, 0)]);
        let n = l.len() as u8;
        assert_eq!(
            run_with(&p, &mut s, &[0x42, 0, 0, 0, 0, 0, 0, 0, n], 10, &l),
            Outcome::Unmap(vec![LbaRange { lba: 0, blocks: 8 }])
        );
        // All descriptors empty, or no list: GOOD.
        let l0 = unmap_list(&[(5, 0)]);
        assert_eq!(
            run_with(&p, &mut s, &[0x42, 0, 0, 0, 0, 0, 0, 0, 24], 10, &l0),
            good()
        );
        assert_eq!(run_with(&p, &mut s, &[0x42], 10, &[]), good());
        // Parameter list length cuts the data-out.
        assert_eq!(
            sense_of(&run_with(
                &p,
                &mut s,
                &[0x42, 0, 0, 0, 0, 0, 0, 0, 4],
                10,
                &l
            )),
            Some(Sense::parameter_list_length_error())
        );
        assert_eq!(
            sense_of(&run_with(
                &p,
                &mut s,
                &[0x42, 1, 0, 0, 0, 0, 0, 0, n],
                10,
                &l
            )),
            Some(Sense::invalid_field_in_cdb(1, Some(0)))
        );
        assert_eq!(
            sense_of(&run_with(
                &params(),
                &mut s,
                &[0x42, 0, 0, 0, 0, 0, 0, 0, n],
                10,
                &l
            )),
            Some(Sense::invalid_command_opcode())
        );
        let l = unmap_list(&[(0, 1), (1, 1), (2, 1)]);
        assert_eq!(
            sense_of(&run_with(
                &p,
                &mut s,
                &[0x42, 0, 0, 0, 0, 0, 0, 0, 56],
                10,
                &l
            )),
            Some(Sense::invalid_field_in_parameter_list(2, None))
        );
    }

    #[test]
    fn write_same() {
        let p = thin();
        let mut s = DeviceState::default();
        let block: Vec<u8> = (0..512u32).map(|i| i as u8).collect();
        assert_eq!(
            run_with(&p, &mut s, &[0x41, 0, 0, 0, 0, 4, 0, 0, 8], 10, &block),
            Outcome::WriteSame {
                lba: 4,
                blocks: 8,
                unmap: false,
                block: block.clone()
            }
        );
        assert_eq!(
            run_with(
                &p,
                &mut s,
                &[0x93, 0x09, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 8],
                16,
                &[]
            ),
            Outcome::WriteSame {
                lba: 4,
                blocks: 8,
                unmap: true,
                block: vec![0; 512]
            }
        );
        // Data-out other than one block.
        assert_eq!(
            sense_of(&run_with(
                &p,
                &mut s,
                &[0x41, 0, 0, 0, 0, 4, 0, 0, 8],
                10,
                &block[..100]
            )),
            Some(Sense::invalid_cdb_field())
        );
        // Zero blocks (WSNZ), too many, out of range, ANCHOR, UNMAP without TP.
        assert_eq!(
            sense_of(&run_with(
                &p,
                &mut s,
                &[0x41, 0, 0, 0, 0, 4, 0, 0, 0],
                10,
                &block
            )),
            Some(Sense::invalid_field_in_cdb(7, None))
        );
        assert_eq!(
            sense_of(&run_with(
                &p,
                &mut s,
                &[0x93, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10, 1],
                16,
                &block
            )),
            Some(Sense::invalid_field_in_cdb(10, None))
        );
        assert_eq!(
            sense_of(&run_with(
                &p,
                &mut s,
                &[0x41, 0, 0, 0, 0x03, 0xe0, 0, 0, 9],
                10,
                &block
            )),
            Some(Sense::lba_out_of_range())
        );
        assert_eq!(
            sense_of(&run_with(
                &p,
                &mut s,
                &[0x41, 0x10, 0, 0, 0, 0, 0, 0, 1],
                10,
                &block
            )),
            Some(Sense::invalid_field_in_cdb(1, Some(4)))
        );
        assert_eq!(
            sense_of(&run_with(
                &params(),
                &mut s,
                &[0x41, 0x08, 0, 0, 0, 0, 0, 0, 1],
                10,
                &block
            )),
            Some(Sense::invalid_field_in_cdb(1, Some(3)))
        );
    }

    #[test]
    fn zbc_commands_without_a_zone_store() {
        let mut z = params();
        z.zoned = Some(crate::zbc::ZonedParams::host_managed(4));
        let mut s = DeviceState::default();
        let report = [0x95, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0];
        let reset = [0x94, 0x04, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0];
        let bad_sa = [0x95, 0x07, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        for (p, cdb, want) in [
            (&params(), &report, Sense::invalid_command_opcode()),
            (&params(), &reset, Sense::invalid_command_opcode()),
            (&params(), &bad_sa, Sense::invalid_command_opcode()),
            (&z, &report, Sense::invalid_command_opcode()),
            (&z, &bad_sa, Sense::invalid_field_in_cdb(1, Some(4))),
        ] {
            assert_eq!(sense_of(&run_with(p, &mut s, cdb, 16, &[])), Some(want));
        }
    }

    #[test]
    fn report_supported_opcodes() {
        let d = data_of(run(&[0xa3, 0x0c, 0x01, 0x2a, 0, 0, 0, 0, 1, 0], 12));
        assert_eq!(&d[..4], &[0, 3, 0, 10]);
        let d = data_of(run(&[0xa3, 0x0c, 0x00, 0, 0, 0, 0, 0, 0, 6], 12));
        assert_eq!(d.len(), 6);
    }
}
