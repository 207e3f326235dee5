//! EXTENDED COPY (LID1) and RECEIVE COPY RESULTS (SPC-4 6.4, 6.18), the way
//! the kernel's LIO copy manager (`target_core_xcopy.c`) answers them for a
//! `fileio` disk.
//!
//! LIO implements a deliberately small copy manager, and so do we: at most
//! [`MAX_TARGET_DESCRIPTORS`] CSCD descriptors, all of type 0xE4
//! (identification descriptor with a 16-byte NAA 6 designator of a logical
//! unit), and at most [`MAX_SEGMENT_DESCRIPTORS`] segment descriptor, of type
//! 0x02 (block device to block device). No inline or held data. One of the
//! two devices of the segment must be the logical unit that received the
//! command.
//!
//! Division of labour: [`parse_lid1`] makes every check of the parameter list
//! that LIO makes, in LIO's order, up to and including "one side of the copy
//! is this device", and returns a [`CopyList`]. The runtime then
//!
//! 1. resolves each designator it needs to a device: the one equal to the
//!    receiving device's own NAA (see [`crate::vpd::naa_designator`]) is that
//!    device; any other is looked up among the devices this daemon serves
//!    (LIO looks among the LUNs the initiator's session can see, and only at
//!    devices with `emulate_3pc` set). Not found →
//!    [`Sense::copy_target_device_not_reachable`];
//! 2. calls [`check_block_sizes`] (LIO refuses devices of different block
//!    sizes);
//! 3. copies each [`BlockSegment`] in the pieces [`BlockSegment::chunks`]
//!    yields (read from the source, write to the destination). LIO checks no
//!    LBA range up front: a read or write that fails (out of range or I/O
//!    error) ends the copy with [`Sense::copy_target_device_not_reachable`];
//!    the pieces already written stay written;
//! 4. completes with GOOD (a copy of zero blocks, or an empty parameter
//!    list, is GOOD with no I/O) and, if it keeps copy status, records a
//!    [`CopyStatus`] for [`receive_copy_results`].
//!
//! Senses carry no field pointer, like LIO's.

use crate::bytes::{be16, be24, be32, be64, put16, put32, put_bytes, u8_at};
use crate::sense::Sense;

/// Length of the EXTENDED COPY parameter list header.
pub const HEADER_LEN: usize = 16;
/// Length of one CSCD (target) descriptor.
pub const TARGET_DESCRIPTOR_LEN: usize = 32;
/// Length of one block-to-block (type 0x02) segment descriptor.
pub const SEGMENT_DESCRIPTOR_LEN: usize = 28;
/// Length of the NAA IEEE Registered Extended designator we match on.
pub const NAA_LEN: usize = 16;

/// CSCD descriptor type code of the identification descriptor.
pub const TARGET_DESCRIPTOR_ID: u8 = 0xe4;
/// Segment descriptor type code for block device to block device.
pub const SEGMENT_BLOCK_TO_BLOCK: u8 = 0x02;
/// The DESCRIPTOR LENGTH a type 0x02 segment descriptor must carry.
pub const SEGMENT_BLOCK_TO_BLOCK_LEN: u16 = 0x18;
/// Largest CSCD descriptor ID a segment may name (SPC-4 table 150: the
/// higher values are special identifiers LIO does not support).
pub const MAX_CSCD_ID: u16 = 0x07ff;

/// MAXIMUM CSCD DESCRIPTOR COUNT in the operating parameters (LIO: 2).
pub const MAX_TARGET_DESCRIPTORS: u16 = 8;
/// MAXIMUM SEGMENT DESCRIPTOR COUNT in the operating parameters (LIO: 1;
/// we copy several segments per command).
pub const MAX_SEGMENT_DESCRIPTORS: u16 = 16;
/// MAXIMUM DESCRIPTOR LIST LENGTH (CSCD plus segment descriptor lists).
pub const MAX_DESCRIPTOR_LIST_LEN: u32 = 1024;
/// MAXIMUM SEGMENT LENGTH in bytes, as advertised (256 MiB; not enforced by
/// LIO, whose NUMBER OF BLOCKS field is 16 bits anyway).
pub const MAX_SEGMENT_LEN: u32 = 256 << 20;
/// MAXIMUM INLINE DATA LENGTH: inline data is not supported.
pub const MAX_INLINE_DATA_LEN: u32 = 0;
/// TOTAL CONCURRENT COPIES in the operating parameters.
pub const TOTAL_CONCURRENT_COPIES: u16 = 1;
/// MAXIMUM CONCURRENT COPIES in the operating parameters.
pub const MAX_CONCURRENT_COPIES: u8 = 1;
/// DATA SEGMENT GRANULARITY (log2 bytes).
pub const DATA_SEGMENT_GRANULARITY_LOG2: u8 = 9;
/// INLINE DATA GRANULARITY (log2 bytes).
pub const INLINE_DATA_GRANULARITY_LOG2: u8 = 9;
/// HELD DATA GRANULARITY (log2 bytes).
pub const HELD_DATA_GRANULARITY_LOG2: u8 = 9;
/// The implemented descriptor type codes, in the order LIO lists them.
pub const IMPLEMENTED_DESCRIPTORS: [u8; 2] = [SEGMENT_BLOCK_TO_BLOCK, TARGET_DESCRIPTOR_ID];
/// LIO copies in pieces of at most this many bytes (and at most the
/// smaller `hw_max_sectors * hw_block_size` of the two devices).
pub const MAX_CHUNK_BYTES: u64 = 16 << 20;

/// RECEIVE COPY RESULTS service action COPY STATUS.
pub const SA_COPY_STATUS: u8 = 0x00;
/// RECEIVE COPY RESULTS service action RECEIVE DATA (not supported).
pub const SA_RECEIVE_DATA: u8 = 0x01;
/// RECEIVE COPY RESULTS service action OPERATING PARAMETERS.
pub const SA_OPERATING_PARAMETERS: u8 = 0x03;
/// RECEIVE COPY RESULTS service action FAILED SEGMENT DETAILS (not
/// supported).
pub const SA_FAILED_SEGMENT_DETAILS: u8 = 0x04;

/// Length of the OPERATING PARAMETERS answer (AVAILABLE DATA 42 + 4).
pub const OPERATING_PARAMETERS_LEN: usize = 46;
/// LIO refuses an OPERATING PARAMETERS allocation length below this (with
/// INVALID FIELD IN CDB), although its answer is shorter.
pub const OPERATING_PARAMETERS_MIN_ALLOC: u32 = 54;
/// Length of the COPY STATUS answer (AVAILABLE DATA 8 + 4).
pub const COPY_STATUS_LEN: usize = 12;

/// One CSCD descriptor of type 0xE4: a logical unit named by its NAA
/// designator.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CopyTarget {
    /// The 16-byte NAA designator (NAA 6: the first nibble is 6). Compare it
    /// with [`crate::vpd::naa_designator`] of each candidate device.
    pub naa: [u8; NAA_LEN],
    /// PERIPHERAL DEVICE TYPE the initiator expects (0 for disks).
    /// Informational: LIO does not check it.
    pub device_type: u8,
    /// DISK BLOCK LENGTH from the device type specific parameters.
    /// Informational: LIO does not check it (it compares the real block
    /// sizes, see [`check_block_sizes`]).
    pub block_len: u32,
    /// RELATIVE INITIATOR PORT IDENTIFIER. Informational.
    pub relative_initiator_port: u16,
}

/// One block-device-to-block-device segment (type 0x02).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlockSegment {
    /// Index into [`CopyList::targets`] of the source (checked in range).
    pub src: usize,
    /// Index into [`CopyList::targets`] of the destination (checked in
    /// range).
    pub dst: usize,
    /// BLOCK DEVICE NUMBER OF BLOCKS (0 copies nothing).
    pub blocks: u16,
    /// SOURCE BLOCK DEVICE LOGICAL BLOCK ADDRESS.
    pub src_lba: u64,
    /// DESTINATION BLOCK DEVICE LOGICAL BLOCK ADDRESS.
    pub dst_lba: u64,
    /// DC: the block count is in destination blocks. Both devices must have
    /// the same block size, so this changes nothing.
    pub dc: bool,
    /// CAT (residual handling). Ignored, like LIO: a segment is always a
    /// whole number of blocks of equal size.
    pub cat: bool,
}

/// One piece of a segment copy: read `blocks` blocks at `src_lba`, write
/// them at `dst_lba`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CopyChunk {
    /// First source block.
    pub src_lba: u64,
    /// First destination block.
    pub dst_lba: u64,
    /// Number of blocks, never 0.
    pub blocks: u32,
}

impl BlockSegment {
    /// The pieces LIO splits the copy into: as many blocks as fit in
    /// `max_bytes` (the caller passes the smallest of [`MAX_CHUNK_BYTES`],
    /// the source's and the destination's `hw_max_sectors *
    /// hw_block_size`), at least one block each. `block_size` 0 is taken
    /// as 1.
    pub fn chunks(&self, block_size: u32, max_bytes: u64) -> impl Iterator<Item = CopyChunk> {
        let per_chunk = (max_bytes / u64::from(block_size.max(1))).clamp(1, u64::from(u32::MAX));
        let total = u64::from(self.blocks);
        let (src_lba, dst_lba) = (self.src_lba, self.dst_lba);
        let mut done = 0u64;
        std::iter::from_fn(move || {
            if done >= total {
                return None;
            }
            let blocks = per_chunk.min(total - done);
            let chunk = CopyChunk {
                src_lba: src_lba.wrapping_add(done),
                dst_lba: dst_lba.wrapping_add(done),
                blocks: blocks as u32,
            };
            done += blocks;
            Some(chunk)
        })
    }

    /// Bytes this segment copies with blocks of `block_size` bytes.
    pub fn bytes(&self, block_size: u32) -> u64 {
        u64::from(self.blocks) * u64::from(block_size)
    }
}

/// A parsed and checked EXTENDED COPY (LID1) parameter list.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CopyList {
    /// LIST IDENTIFIER (byte 0).
    pub list_id: u8,
    /// LIST ID USAGE (byte 1 bits 4..3; bit 4 was NRCR in SPC-3): 11b means
    /// the initiator will not ask for the copy status.
    pub list_id_usage: u8,
    /// STR: sequential striped (byte 1 bit 5). Informational.
    pub sequential_striped: bool,
    /// PRIORITY (byte 1 bits 2..0). Informational.
    pub priority: u8,
    /// Every CSCD descriptor, in list order (segments refer to them by
    /// index).
    pub targets: Vec<CopyTarget>,
    /// The segments, in list order: exactly one after a successful parse of
    /// a non-empty list, none for an empty list (which LIO completes with
    /// GOOD and nothing else).
    pub segments: Vec<BlockSegment>,
}

impl CopyList {
    /// The source and destination designators of `segment`.
    pub fn naas(&self, segment: &BlockSegment) -> Option<(&[u8; NAA_LEN], &[u8; NAA_LEN])> {
        Some((
            &self.targets.get(segment.src)?.naa,
            &self.targets.get(segment.dst)?.naa,
        ))
    }

    /// Whether the copy manager keeps the copy status for
    /// [`receive_copy_results`] (LIST ID USAGE other than 11b).
    pub fn keeps_status(&self) -> bool {
        self.list_id_usage != 0b11
    }
}

/// Parses and checks an EXTENDED COPY (LID1) parameter list exactly as LIO
/// does, with LIO's senses in LIO's order.
///
/// `param` is the data-out buffer cut to the CDB's PARAMETER LIST LENGTH;
/// `local_naa` is the NAA designator of the device that received the
/// command ([`crate::vpd::naa_designator`] of its company ID and serial).
///
/// The checks, in order:
/// - an empty list is accepted (no targets, no segments: GOOD, no I/O);
/// - shorter than the 16-byte header: PARAMETER LIST LENGTH ERROR;
/// - CSCD plus segment descriptor list lengths (added in 32 bits, wrapping
///   like LIO) above [`MAX_DESCRIPTOR_LIST_LEN`]: PARAMETER LIST LENGTH ERROR;
/// - non-zero INLINE DATA LENGTH: INVALID FIELD IN PARAMETER LIST;
/// - header and lists longer than `param`: PARAMETER LIST LENGTH ERROR;
/// - segment list (checked before the CSCD list): length not a multiple of
///   28: UNSUPPORTED SEGMENT DESCRIPTOR TYPE CODE; more than
///   [`MAX_SEGMENT_DESCRIPTORS`]: TOO MANY SEGMENT DESCRIPTORS; a type other
///   than 0x02: UNSUPPORTED SEGMENT DESCRIPTOR TYPE CODE; DESCRIPTOR LENGTH
///   not 0x18, or a CSCD ID above 0x7FF: INVALID FIELD IN PARAMETER LIST; no
///   segment at all: INVALID FIELD IN PARAMETER LIST;
/// - CSCD list: length not a multiple of 32: UNSUPPORTED TARGET DESCRIPTOR
///   TYPE CODE; more than [`MAX_TARGET_DESCRIPTORS`]: TOO MANY TARGET
///   DESCRIPTORS; a type other than 0xE4: UNSUPPORTED TARGET DESCRIPTOR TYPE
///   CODE; a designator that is not binary, not of the logical unit, not NAA,
///   not 16 bytes or not NAA 6: INVALID FIELD IN PARAMETER LIST;
/// - a segment naming a CSCD index past the list, or neither of whose
///   devices is `local_naa`: COPY ABORTED, COPY TARGET DEVICE NOT REACHABLE.
pub fn parse_lid1(param: &[u8], local_naa: &[u8; NAA_LEN]) -> Result<CopyList, Sense> {
    if param.is_empty() {
        return Ok(CopyList {
            list_id: 0,
            list_id_usage: 0,
            sequential_striped: false,
            priority: 0,
            targets: Vec::new(),
            segments: Vec::new(),
        });
    }
    if param.len() < HEADER_LEN {
        return Err(Sense::parameter_list_length_error());
    }
    let flags = u8_at(param, 1);
    let tdll = u32::from(be16(param, 2));
    let sdll = be32(param, 8);
    let inline_len = be32(param, 12);
    // 32-bit arithmetic as in the kernel, so that absurd lengths get the
    // same sense there and here (the descriptor checks below catch them).
    if tdll.wrapping_add(sdll) > MAX_DESCRIPTOR_LIST_LEN {
        return Err(Sense::parameter_list_length_error());
    }
    if inline_len != 0 {
        return Err(Sense::invalid_parameter_list());
    }
    let needed = (HEADER_LEN as u32)
        .wrapping_add(tdll)
        .wrapping_add(sdll)
        .wrapping_add(inline_len);
    if u32::try_from(param.len()).unwrap_or(u32::MAX) < needed {
        return Err(Sense::parameter_list_length_error());
    }
    let seg_list = param.get(HEADER_LEN + tdll as usize..).unwrap_or_default();
    let segments = parse_segments(seg_list, sdll)?;
    let target_list = param.get(HEADER_LEN..).unwrap_or_default();
    let targets = parse_targets(target_list, tdll)?;
    let list = CopyList {
        list_id: u8_at(param, 0),
        list_id_usage: (flags >> 3) & 0x03,
        sequential_striped: flags & 0x20 != 0,
        priority: flags & 0x07,
        targets,
        segments,
    };
    for segment in &list.segments {
        match list.naas(segment) {
            Some((src, dst)) if src == local_naa || dst == local_naa => {}
            _ => return Err(Sense::copy_target_device_not_reachable()),
        }
    }
    Ok(list)
}

/// The segment descriptor list (`sdll` bytes at the start of `list`).
fn parse_segments(list: &[u8], sdll: u32) -> Result<Vec<BlockSegment>, Sense> {
    if sdll % SEGMENT_DESCRIPTOR_LEN as u32 != 0 {
        return Err(Sense::unsupported_segment_descriptor_type());
    }
    if sdll > u32::from(MAX_SEGMENT_DESCRIPTORS) * SEGMENT_DESCRIPTOR_LEN as u32 {
        return Err(Sense::too_many_segment_descriptors());
    }
    let count = sdll as usize / SEGMENT_DESCRIPTOR_LEN;
    let mut segments = Vec::with_capacity(count);
    for k in 0..count {
        let d = list.get(k * SEGMENT_DESCRIPTOR_LEN..).unwrap_or_default();
        if u8_at(d, 0) != SEGMENT_BLOCK_TO_BLOCK {
            return Err(Sense::unsupported_segment_descriptor_type());
        }
        if be16(d, 2) != SEGMENT_BLOCK_TO_BLOCK_LEN {
            return Err(Sense::invalid_parameter_list());
        }
        let (src, dst) = (be16(d, 4), be16(d, 6));
        if src > MAX_CSCD_ID || dst > MAX_CSCD_ID {
            return Err(Sense::invalid_parameter_list());
        }
        segments.push(BlockSegment {
            src: usize::from(src),
            dst: usize::from(dst),
            blocks: be16(d, 10),
            src_lba: be64(d, 12),
            dst_lba: be64(d, 20),
            dc: u8_at(d, 1) & 0x02 != 0,
            cat: u8_at(d, 1) & 0x01 != 0,
        });
    }
    if segments.is_empty() {
        return Err(Sense::invalid_parameter_list());
    }
    Ok(segments)
}

/// The CSCD descriptor list (`tdll` bytes at the start of `list`).
fn parse_targets(list: &[u8], tdll: u32) -> Result<Vec<CopyTarget>, Sense> {
    if tdll % TARGET_DESCRIPTOR_LEN as u32 != 0 {
        return Err(Sense::unsupported_target_descriptor_type());
    }
    if tdll > u32::from(MAX_TARGET_DESCRIPTORS) * TARGET_DESCRIPTOR_LEN as u32 {
        return Err(Sense::too_many_target_descriptors());
    }
    let count = tdll as usize / TARGET_DESCRIPTOR_LEN;
    let mut targets = Vec::with_capacity(count);
    for k in 0..count {
        let d = list.get(k * TARGET_DESCRIPTOR_LEN..).unwrap_or_default();
        if u8_at(d, 0) != TARGET_DESCRIPTOR_ID {
            return Err(Sense::unsupported_target_descriptor_type());
        }
        targets.push(parse_identification(d)?);
    }
    Ok(targets)
}

/// One 0xE4 identification descriptor: a binary, logical-unit, NAA
/// designator of 16 bytes in NAA 6 format.
fn parse_identification(d: &[u8]) -> Result<CopyTarget, Sense> {
    let code_set = u8_at(d, 4) & 0x0f;
    let association = (u8_at(d, 5) >> 4) & 0x03;
    let designator_type = u8_at(d, 5) & 0x0f;
    let len = usize::from(u8_at(d, 7));
    if code_set != 0x1 || association != 0 || designator_type != 0x3 || len != NAA_LEN {
        return Err(Sense::invalid_parameter_list());
    }
    if u8_at(d, 8) & 0xf0 != 0x60 {
        return Err(Sense::invalid_parameter_list());
    }
    let mut naa = [0u8; NAA_LEN];
    for (k, b) in naa.iter_mut().enumerate() {
        *b = u8_at(d, 8 + k);
    }
    Ok(CopyTarget {
        naa,
        device_type: u8_at(d, 1) & 0x1f,
        block_len: be24(d, 29),
        relative_initiator_port: be16(d, 2),
    })
}

/// LIO copies only between devices of the same logical block size;
/// otherwise LOGICAL UNIT COMMUNICATION FAILURE (NOT READY 08/00).
pub fn check_block_sizes(src_block_size: u32, dst_block_size: u32) -> Result<(), Sense> {
    if src_block_size == dst_block_size {
        Ok(())
    } else {
        Err(Sense::logical_unit_communication_failure())
    }
}

/// How a copy ended, for COPY STATUS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CopyOutcome {
    /// Completed without errors (COPY MANAGER STATUS 01h).
    Completed,
    /// Terminated with an error (COPY MANAGER STATUS 02h).
    Failed,
}

/// The status of the last EXTENDED COPY, kept by the runtime per device
/// for RECEIVE COPY RESULTS with COPY STATUS. Copies run synchronously, so
/// there is never one in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CopyStatus {
    /// The copy's LIST IDENTIFIER.
    pub list_id: u8,
    /// Completed or failed.
    pub outcome: CopyOutcome,
    /// Number of segments fully processed.
    pub segments_processed: u16,
    /// Bytes written to destinations.
    pub bytes_transferred: u64,
}

impl CopyStatus {
    /// The 12-byte COPY STATUS parameter data (SPC-4 6.18.3): AVAILABLE DATA
    /// 8, HDD 0 and the COPY MANAGER STATUS, SEGMENTS PROCESSED, and the
    /// transfer count in the smallest unit (bytes, KiB, MiB, … up to EiB,
    /// TRANSFER COUNT UNITS 00h..06h) in which it fits 32 bits (rounded
    /// down).
    pub fn to_bytes(&self) -> [u8; COPY_STATUS_LEN] {
        let mut b = [0u8; COPY_STATUS_LEN];
        put32(&mut b, 0, (COPY_STATUS_LEN - 4) as u32);
        b[4] = match self.outcome {
            CopyOutcome::Completed => 0x01,
            CopyOutcome::Failed => 0x02,
        };
        put16(&mut b, 5, self.segments_processed);
        let mut units = 0u8;
        let mut count = self.bytes_transferred;
        while count > u64::from(u32::MAX) {
            count >>= 10;
            units += 1;
        }
        b[7] = units;
        put32(&mut b, 8, count as u32);
        b
    }
}

/// The OPERATING PARAMETERS parameter data, byte for byte LIO's: SNLID set,
/// the limits above, and the implemented descriptor type codes 0x02, 0xE4.
pub fn operating_parameters() -> [u8; OPERATING_PARAMETERS_LEN] {
    let mut b = [0u8; OPERATING_PARAMETERS_LEN];
    put32(&mut b, 0, (OPERATING_PARAMETERS_LEN - 4) as u32);
    b[4] = 0x01; // SNLID: list identifiers are optional.
    put16(&mut b, 8, MAX_TARGET_DESCRIPTORS);
    put16(&mut b, 10, MAX_SEGMENT_DESCRIPTORS);
    put32(&mut b, 12, MAX_DESCRIPTOR_LIST_LEN);
    put32(&mut b, 16, MAX_SEGMENT_LEN);
    put32(&mut b, 20, MAX_INLINE_DATA_LEN);
    // HELD DATA LIMIT and MAXIMUM STREAM DEVICE TRANSFER SIZE stay 0.
    put16(&mut b, 34, TOTAL_CONCURRENT_COPIES);
    b[36] = MAX_CONCURRENT_COPIES;
    b[37] = DATA_SEGMENT_GRANULARITY_LOG2;
    b[38] = INLINE_DATA_GRANULARITY_LOG2;
    b[39] = HELD_DATA_GRANULARITY_LOG2;
    b[43] = IMPLEMENTED_DESCRIPTORS.len() as u8;
    put_bytes(&mut b, 44, &IMPLEMENTED_DESCRIPTORS);
    b
}

/// Answers RECEIVE COPY RESULTS (opcode 0x84) with service action
/// `service_action` (CDB byte 1 bits 4..0), LIST IDENTIFIER `list_id` (CDB
/// byte 2) and ALLOCATION LENGTH `alloc_len` (CDB bytes 10..13); `last` is
/// the status of the device's last EXTENDED COPY that kept one (see
/// [`CopyList::keeps_status`]). The answer is cut to `alloc_len`.
///
/// - OPERATING PARAMETERS (03h): like LIO, a non-zero list identifier or an
///   allocation length below 54 is INVALID FIELD IN CDB; the answer is
///   [`operating_parameters`].
/// - COPY STATUS (00h): LIO does not implement it (INVALID FIELD IN CDB); we
///   answer [`CopyStatus::to_bytes`] of `last` when its list identifier is
///   `list_id`, and INVALID FIELD IN CDB when there is no such status.
/// - Every other service action (RECEIVE DATA, FAILED SEGMENT DETAILS, …):
///   INVALID FIELD IN CDB, like LIO.
pub fn receive_copy_results(
    service_action: u8,
    list_id: u8,
    alloc_len: u32,
    last: Option<&CopyStatus>,
) -> Result<Vec<u8>, Sense> {
    let mut data = match service_action {
        SA_OPERATING_PARAMETERS => {
            if list_id != 0 || alloc_len < OPERATING_PARAMETERS_MIN_ALLOC {
                return Err(Sense::invalid_cdb_field());
            }
            operating_parameters().to_vec()
        }
        SA_COPY_STATUS => match last {
            Some(status) if status.list_id == list_id => status.to_bytes().to_vec(),
            _ => return Err(Sense::invalid_cdb_field()),
        },
        _ => return Err(Sense::invalid_cdb_field()),
    };
    data.truncate(usize::try_from(alloc_len).unwrap_or(usize::MAX));
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sense::SenseKey;

    const LOCAL: [u8; 16] = [
        0x60, 0x01, 0x40, 0x51, 0xfe, 0x6b, 0x5a, 0x4a, 0xb0, 0x74, 0xd5, 0x99, 0x2a, 0x20, 0xc7,
        0x2f,
    ];
    const OTHER: [u8; 16] = [
        0x60, 0x01, 0x40, 0x5a, 0xbc, 0xde, 0xf0, 0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0,
        0x12,
    ];

    /// A 0xE4 descriptor for `naa`, disk, 512-byte blocks.
    fn target(naa: &[u8; 16]) -> Vec<u8> {
        let mut d = vec![0u8; 32];
        d[0] = 0xe4;
        d[1] = 0x00; // disk
        d[2..4].copy_from_slice(&7u16.to_be_bytes());
        d[4] = 0x01; // binary
        d[5] = 0x03; // LU association, NAA
        d[7] = 16;
        d[8..24].copy_from_slice(naa);
        d[29..32].copy_from_slice(&[0x00, 0x02, 0x00]);
        d
    }

    fn segment(src: u16, dst: u16, blocks: u16, src_lba: u64, dst_lba: u64) -> Vec<u8> {
        let mut d = vec![0u8; 28];
        d[0] = 0x02;
        d[1] = 0x02; // DC
        d[2..4].copy_from_slice(&0x18u16.to_be_bytes());
        d[4..6].copy_from_slice(&src.to_be_bytes());
        d[6..8].copy_from_slice(&dst.to_be_bytes());
        d[10..12].copy_from_slice(&blocks.to_be_bytes());
        d[12..20].copy_from_slice(&src_lba.to_be_bytes());
        d[20..28].copy_from_slice(&dst_lba.to_be_bytes());
        d
    }

    fn list(id: u8, flags: u8, targets: &[Vec<u8>], segments: &[Vec<u8>]) -> Vec<u8> {
        let tdll: usize = targets.iter().map(Vec::len).sum();
        let sdll: usize = segments.iter().map(Vec::len).sum();
        let mut p = vec![0u8; 16];
        p[0] = id;
        p[1] = flags;
        p[2..4].copy_from_slice(&(tdll as u16).to_be_bytes());
        p[8..12].copy_from_slice(&(sdll as u32).to_be_bytes());
        for t in targets {
            p.extend_from_slice(t);
        }
        for s in segments {
            p.extend_from_slice(s);
        }
        p
    }

    fn good_list() -> Vec<u8> {
        list(
            0x2a,
            0x18 | 0x20 | 0x05,
            &[target(&LOCAL), target(&OTHER)],
            &[segment(0, 1, 0x800, 0x1000, 0x2000)],
        )
    }

    #[test]
    fn parses_a_valid_list() {
        let l = parse_lid1(&good_list(), &LOCAL).unwrap();
        assert_eq!(l.list_id, 0x2a);
        assert_eq!(l.list_id_usage, 0b11);
        assert!(l.sequential_striped);
        assert_eq!(l.priority, 5);
        assert!(!l.keeps_status());
        assert_eq!(
            l.targets,
            vec![
                CopyTarget {
                    naa: LOCAL,
                    device_type: 0,
                    block_len: 512,
                    relative_initiator_port: 7,
                },
                CopyTarget {
                    naa: OTHER,
                    device_type: 0,
                    block_len: 512,
                    relative_initiator_port: 7,
                },
            ]
        );
        assert_eq!(
            l.segments,
            vec![BlockSegment {
                src: 0,
                dst: 1,
                blocks: 0x800,
                src_lba: 0x1000,
                dst_lba: 0x2000,
                dc: true,
                cat: false,
            }]
        );
        assert_eq!(l.naas(&l.segments[0]), Some((&LOCAL, &OTHER)));
        // The destination may be the local device instead, or both.
        assert!(parse_lid1(&good_list(), &OTHER).is_ok());
        let same = list(0, 0, &[target(&LOCAL)], &[segment(0, 0, 1, 0, 8)]);
        let l = parse_lid1(&same, &LOCAL).unwrap();
        assert_eq!(l.targets.len(), 1);
        assert!(l.keeps_status());
        // Trailing bytes past the lists are ignored.
        let mut long = good_list();
        long.extend_from_slice(&[0xff; 9]);
        assert!(parse_lid1(&long, &LOCAL).is_ok());
    }

    #[test]
    fn empty_list_is_a_no_op() {
        let l = parse_lid1(&[], &LOCAL).unwrap();
        assert!(l.targets.is_empty() && l.segments.is_empty());
    }

    #[test]
    fn header_errors() {
        let ple = Sense::parameter_list_length_error();
        assert_eq!(parse_lid1(&[0u8; 15], &LOCAL), Err(ple));
        // Descriptor lists longer than 1024 bytes.
        let mut p = good_list();
        p[8..12].copy_from_slice(&(1024u32 - 64 + 1).to_be_bytes());
        assert_eq!(parse_lid1(&p, &LOCAL), Err(ple));
        // Inline data.
        let mut p = good_list();
        p[12..16].copy_from_slice(&1u32.to_be_bytes());
        assert_eq!(parse_lid1(&p, &LOCAL), Err(Sense::invalid_parameter_list()));
        // The lists run past the parameter data.
        let p = good_list();
        assert_eq!(parse_lid1(&p[..p.len() - 1], &LOCAL), Err(ple));
        // A header alone, lists of length 0: no segment.
        assert_eq!(
            parse_lid1(&[0u8; 16], &LOCAL),
            Err(Sense::invalid_parameter_list())
        );
    }

    #[test]
    fn wrapping_lengths_get_the_kernels_sense() {
        // tdll + sdll wraps in 32 bits, as in the kernel: the segment list
        // length check answers.
        let mut p = vec![0u8; 64];
        p[2..4].copy_from_slice(&2u16.to_be_bytes());
        p[8..12].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(
            parse_lid1(&p, &LOCAL),
            Err(Sense::unsupported_segment_descriptor_type())
        );
        // A multiple of 28 that wraps: too many segments.
        let sdll = u32::MAX - (u32::MAX % 28) - 28 * 4;
        let tdll = (u32::MAX - sdll + 1 + 16) as u16;
        let mut p = vec![0u8; 64];
        p[2..4].copy_from_slice(&tdll.to_be_bytes());
        p[8..12].copy_from_slice(&sdll.to_be_bytes());
        assert_eq!(
            parse_lid1(&p, &LOCAL),
            Err(Sense::too_many_segment_descriptors())
        );
    }

    #[test]
    fn segment_errors() {
        let t = [target(&LOCAL), target(&OTHER)];
        let unsupported = Sense::unsupported_segment_descriptor_type();
        // Length not a multiple of 28.
        let mut p = list(0, 0, &t, &[segment(0, 1, 1, 0, 0)]);
        p.push(0);
        p[8..12].copy_from_slice(&29u32.to_be_bytes());
        assert_eq!(parse_lid1(&p, &LOCAL), Err(unsupported));
        // Several segments are fine; more than 16 are too many.
        let s = segment(0, 1, 1, 0, 0);
        let p = list(0, 0, &t, &vec![s.clone(); 16]);
        assert_eq!(parse_lid1(&p, &LOCAL).map(|l| l.segments.len()), Ok(16));
        let p = list(0, 0, &t, &vec![s.clone(); 17]);
        assert_eq!(
            parse_lid1(&p, &LOCAL),
            Err(Sense::too_many_segment_descriptors())
        );
        // Another type code.
        let mut s2 = s.clone();
        s2[0] = 0x01;
        assert_eq!(parse_lid1(&list(0, 0, &t, &[s2]), &LOCAL), Err(unsupported));
        // Wrong descriptor length.
        let mut s2 = s.clone();
        s2[3] = 0x14;
        assert_eq!(
            parse_lid1(&list(0, 0, &t, &[s2]), &LOCAL),
            Err(Sense::invalid_parameter_list())
        );
        // CSCD IDs above 0x7FF.
        for (src, dst) in [(0x800, 1), (0, 0xffff)] {
            let p = list(0, 0, &t, &[segment(src, dst, 1, 0, 0)]);
            assert_eq!(parse_lid1(&p, &LOCAL), Err(Sense::invalid_parameter_list()));
        }
        // Segment errors come before target errors.
        let mut bad_target = target(&LOCAL);
        bad_target[0] = 0xe5;
        let mut s2 = s;
        s2[0] = 0x0a;
        assert_eq!(
            parse_lid1(&list(0, 0, &[bad_target], &[s2]), &LOCAL),
            Err(unsupported)
        );
    }

    #[test]
    fn target_errors() {
        let s = [segment(0, 1, 1, 0, 0)];
        // CSCD list length not a multiple of 32 (the segment list after it
        // is fine).
        let mut p = vec![0u8; 16];
        p[2..4].copy_from_slice(&33u16.to_be_bytes());
        p[8..12].copy_from_slice(&28u32.to_be_bytes());
        p.extend_from_slice(&target(&LOCAL));
        p.push(0);
        p.extend_from_slice(&s[0]);
        assert_eq!(
            parse_lid1(&p, &LOCAL),
            Err(Sense::unsupported_target_descriptor_type())
        );
        // Up to 8 targets; 9 are too many.
        let t = target(&LOCAL);
        let p = list(0, 0, &vec![t.clone(); 8], &s);
        assert!(parse_lid1(&p, &LOCAL).is_ok());
        let p = list(0, 0, &vec![t.clone(); 9], &s);
        assert_eq!(
            parse_lid1(&p, &LOCAL),
            Err(Sense::too_many_target_descriptors())
        );
        // Another type code (0xE0 is a Fibre Channel N_Port name).
        let mut t2 = target(&OTHER);
        t2[0] = 0xe0;
        assert_eq!(
            parse_lid1(&list(0, 0, &[t.clone(), t2], &s), &LOCAL),
            Err(Sense::unsupported_target_descriptor_type())
        );
        // Designator checks: code set, association, type, length, NAA 6.
        for (at, value) in [
            (4, 0x02),
            (5, 0x13),
            (5, 0x23),
            (5, 0x01),
            (7, 8),
            (8, 0x50),
        ] {
            let mut t2 = target(&OTHER);
            t2[at] = value;
            assert_eq!(
                parse_lid1(&list(0, 0, &[t.clone(), t2], &s), &LOCAL),
                Err(Sense::invalid_parameter_list()),
                "byte {at} = {value:#x}"
            );
        }
        // The protocol identifier nibble and PIV are ignored, like the
        // peripheral type and block length.
        let mut t2 = target(&OTHER);
        t2[4] = 0x51;
        t2[5] = 0x83;
        t2[1] = 0x05;
        t2[29..32].copy_from_slice(&[0, 0x10, 0]);
        let l = parse_lid1(&list(0, 0, &[t.clone(), t2], &s), &LOCAL).unwrap();
        assert_eq!(
            (l.targets[1].device_type, l.targets[1].block_len),
            (5, 4096)
        );
        // A CSCD the segment does not use is still checked.
        let mut t3 = target(&OTHER);
        t3[8] = 0x20;
        let p = list(0, 0, &[t3, t], &[segment(1, 1, 1, 0, 0)]);
        assert_eq!(parse_lid1(&p, &LOCAL), Err(Sense::invalid_parameter_list()));
    }

    #[test]
    fn unreachable_devices() {
        let nr = Sense::copy_target_device_not_reachable();
        assert_eq!(nr.key, SenseKey::CopyAborted);
        // Neither side is the receiving device.
        let p = good_list();
        assert_eq!(parse_lid1(&p, &[0x60; 16]), Err(nr));
        // A CSCD index past the list.
        let p = list(0, 0, &[target(&LOCAL)], &[segment(0, 1, 1, 0, 0)]);
        assert_eq!(parse_lid1(&p, &LOCAL), Err(nr));
        // No CSCD list at all.
        let p = list(0, 0, &[], &[segment(0, 0, 1, 0, 0)]);
        assert_eq!(parse_lid1(&p, &LOCAL), Err(nr));
    }

    #[test]
    fn never_panics_on_garbage() {
        let mut seed = 0x1234_5678u32;
        for len in 0..200 {
            let mut p: Vec<u8> = (0..len)
                .map(|_| {
                    seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    (seed >> 16) as u8
                })
                .collect();
            let _ = parse_lid1(&p, &LOCAL);
            if p.len() >= 16 {
                p[2..4].copy_from_slice(&64u16.to_be_bytes());
                p[8..16].copy_from_slice(&[0, 0, 0, 28, 0, 0, 0, 0]);
                let _ = parse_lid1(&p, &LOCAL);
            }
        }
    }

    #[test]
    fn block_sizes() {
        assert_eq!(check_block_sizes(512, 512), Ok(()));
        assert_eq!(
            check_block_sizes(512, 4096),
            Err(Sense::logical_unit_communication_failure())
        );
    }

    #[test]
    fn chunks() {
        let s = BlockSegment {
            src: 0,
            dst: 1,
            blocks: 0x9000,
            src_lba: 10,
            dst_lba: 100,
            dc: false,
            cat: false,
        };
        let c: Vec<_> = s.chunks(512, MAX_CHUNK_BYTES).collect();
        assert_eq!(
            c,
            vec![
                CopyChunk {
                    src_lba: 10,
                    dst_lba: 100,
                    blocks: 0x8000
                },
                CopyChunk {
                    src_lba: 10 + 0x8000,
                    dst_lba: 100 + 0x8000,
                    blocks: 0x1000
                },
            ]
        );
        assert_eq!(s.bytes(512), 0x9000 * 512);
        assert_eq!(s.chunks(4096, 100).count(), 0x9000);
        assert_eq!(s.chunks(0, u64::MAX).count(), 1);
        let empty = BlockSegment { blocks: 0, ..s };
        assert_eq!(empty.chunks(512, MAX_CHUNK_BYTES).count(), 0);
    }

    #[test]
    fn operating_parameters_bytes() {
        let mut want = [0u8; 46];
        want[3] = 42;
        want[4] = 1;
        want[9] = 8;
        want[11] = 16;
        want[12..16].copy_from_slice(&[0, 0, 4, 0]);
        want[16..20].copy_from_slice(&[0x10, 0, 0, 0]);
        want[35] = 1;
        want[36] = 1;
        want[37..40].copy_from_slice(&[9, 9, 9]);
        want[43] = 2;
        want[44] = 0x02;
        want[45] = 0xe4;
        assert_eq!(operating_parameters(), want);
        assert_eq!(receive_copy_results(3, 0, 54, None).unwrap(), want.to_vec());
        assert_eq!(
            receive_copy_results(3, 0, 0xffff_ffff, None).unwrap().len(),
            46
        );
    }

    #[test]
    fn receive_copy_results_errors() {
        let e = Err(Sense::invalid_cdb_field());
        assert_eq!(receive_copy_results(3, 0, 53, None), e);
        assert_eq!(receive_copy_results(3, 1, 54, None), e);
        for sa in [1, 2, 4, 5, 0x1f] {
            assert_eq!(receive_copy_results(sa, 0, 1024, None), e);
        }
        // No copy status kept, or for another list.
        assert_eq!(receive_copy_results(0, 0, 1024, None), e);
        let st = CopyStatus {
            list_id: 3,
            outcome: CopyOutcome::Completed,
            segments_processed: 1,
            bytes_transferred: 4096,
        };
        assert_eq!(receive_copy_results(0, 4, 1024, Some(&st)), e);
    }

    #[test]
    fn copy_status_bytes() {
        let st = CopyStatus {
            list_id: 3,
            outcome: CopyOutcome::Completed,
            segments_processed: 1,
            bytes_transferred: 0x10_0000,
        };
        assert_eq!(
            receive_copy_results(0, 3, 1024, Some(&st)).unwrap(),
            vec![0, 0, 0, 8, 0x01, 0, 1, 0, 0, 0x10, 0, 0]
        );
        assert_eq!(
            receive_copy_results(0, 3, 5, Some(&st)).unwrap(),
            vec![0, 0, 0, 8, 0x01]
        );
        let failed = CopyStatus {
            outcome: CopyOutcome::Failed,
            segments_processed: 0,
            bytes_transferred: (5u64 << 32) + 7,
            ..st
        };
        // 5 GiB + 7 bytes does not fit 32 bits: reported in KiB.
        assert_eq!(
            failed.to_bytes(),
            [0, 0, 0, 8, 0x02, 0, 0, 1, 0x01, 0x40, 0, 0]
        );
        let huge = CopyStatus {
            bytes_transferred: u64::MAX,
            ..st
        };
        assert_eq!(huge.to_bytes()[7], 4);
    }
}
