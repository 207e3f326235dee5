//! Zoned block devices (ZBC, and SBC-4's host-aware model): the wire side
//! of zones, with no zone state.
//!
//! What a zoned disk answers like any other disk but with zoned fields
//! (the peripheral device type, VPD pages 0xB1 and 0xB6, READ CAPACITY
//! (16)'s RC BASIS, REPORT SUPPORTED OPERATION CODES) comes from
//! [`DeviceParams::zoned`](crate::DeviceParams::zoned) through the generic
//! emulation. This module has the rest of the vocabulary a handler that
//! keeps zones needs: the ZBC IN and ZBC OUT commands (decoded by
//! [`decode`](crate::decode) into [`Command::ReportZones`](crate::Command::ReportZones)
//! and [`Command::ZoneAction`](crate::Command::ZoneAction)), zone types and
//! conditions, REPORT ZONES reporting options and parameter data
//! ([`report_zones`]), and the ZBC sense codes (on [`Sense`]).
//!
//! Zone state (conditions, write pointers, open zones) is the handler's:
//! the generic emulation answers ZBC IN and ZBC OUT with INVALID COMMAND
//! OPERATION CODE when nothing else did.

use crate::bytes::{put32, put64};
use crate::sense::{Sense, SenseKey};

/// ZBC OUT (zone actions).
pub const ZBC_OUT: u8 = 0x94;
/// ZBC IN (REPORT ZONES).
pub const ZBC_IN: u8 = 0x95;
/// ZBC IN service action REPORT ZONES.
pub const SA_REPORT_ZONES: u8 = 0x00;
/// ZBC OUT service action CLOSE ZONE.
pub const SA_CLOSE_ZONE: u8 = 0x01;
/// ZBC OUT service action FINISH ZONE.
pub const SA_FINISH_ZONE: u8 = 0x02;
/// ZBC OUT service action OPEN ZONE.
pub const SA_OPEN_ZONE: u8 = 0x03;
/// ZBC OUT service action RESET WRITE POINTER.
pub const SA_RESET_WRITE_POINTER: u8 = 0x04;

/// Length of a zone descriptor, and of the REPORT ZONES header.
pub const DESCRIPTOR_LEN: usize = 64;

/// The "not reported" value of the VPD page 0xB6 counts.
pub const NOT_REPORTED: u32 = u32::MAX;

/// A zoned device's model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ZonedModel {
    /// Host managed (ZBC): peripheral device type 0x14, sequential write
    /// required zones; the host must write them at the write pointer.
    HostManaged,
    /// Host aware (SBC-4): a direct-access block device (type 0) with the
    /// ZONED field of VPD page 0xB1 set to 01b, and sequential write
    /// preferred zones that accept writes anywhere.
    HostAware,
}

impl ZonedModel {
    /// The peripheral device type the model reports.
    pub const fn peripheral_device_type(self) -> u8 {
        match self {
            ZonedModel::HostManaged => PERIPHERAL_HOST_MANAGED,
            ZonedModel::HostAware => crate::inquiry::PERIPHERAL_DISK,
        }
    }

    /// The type of the device's write pointer zones.
    pub const fn sequential_zone_type(self) -> ZoneType {
        match self {
            ZonedModel::HostManaged => ZoneType::SequentialWriteRequired,
            ZonedModel::HostAware => ZoneType::SequentialWritePreferred,
        }
    }
}

/// Peripheral device type of a host-managed zoned block device.
pub const PERIPHERAL_HOST_MANAGED: u8 = 0x14;

/// What the generic layer reports for a zoned device (set by its handler
/// through [`DeviceParams::zoned`](crate::DeviceParams::zoned)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZonedParams {
    /// Host managed or host aware.
    pub model: ZonedModel,
    /// URSWRZ (VPD page 0xB6): reads of sequential write required zones
    /// are unrestricted (past the write pointer, across zones). Linux
    /// refuses host-managed disks without it.
    pub unrestricted_reads: bool,
    /// OPTIMAL NUMBER OF OPEN SEQUENTIAL WRITE PREFERRED ZONES (host aware;
    /// [`NOT_REPORTED`] otherwise).
    pub optimal_open: u32,
    /// OPTIMAL NUMBER OF NON-SEQUENTIALLY WRITTEN SEQUENTIAL WRITE
    /// PREFERRED ZONES (host aware; [`NOT_REPORTED`] otherwise).
    pub optimal_non_sequential: u32,
    /// MAXIMUM NUMBER OF OPEN SEQUENTIAL WRITE REQUIRED ZONES (host
    /// managed; [`NOT_REPORTED`] for no limit and for host-aware devices).
    pub max_open: u32,
}

impl ZonedParams {
    /// A host-managed device with unrestricted reads and at most
    /// `max_open` open zones.
    pub const fn host_managed(max_open: u32) -> Self {
        Self {
            model: ZonedModel::HostManaged,
            unrestricted_reads: true,
            optimal_open: NOT_REPORTED,
            optimal_non_sequential: NOT_REPORTED,
            max_open,
        }
    }

    /// A host-aware device that works best with at most `optimal_open`
    /// open zones, as many of them written out of order.
    pub const fn host_aware(optimal_open: u32) -> Self {
        Self {
            model: ZonedModel::HostAware,
            unrestricted_reads: true,
            optimal_open,
            optimal_non_sequential: optimal_open,
            max_open: NOT_REPORTED,
        }
    }
}

/// A zone's type (the ZONE TYPE field of a zone descriptor).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ZoneType {
    /// Conventional: no write pointer, written anywhere.
    Conventional,
    /// Sequential write required (host managed).
    SequentialWriteRequired,
    /// Sequential write preferred (host aware).
    SequentialWritePreferred,
}

impl ZoneType {
    /// The field's value.
    pub const fn code(self) -> u8 {
        match self {
            ZoneType::Conventional => 0x1,
            ZoneType::SequentialWriteRequired => 0x2,
            ZoneType::SequentialWritePreferred => 0x3,
        }
    }

    /// The type of a field value; `None` for reserved ones.
    pub const fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0x1 => ZoneType::Conventional,
            0x2 => ZoneType::SequentialWriteRequired,
            0x3 => ZoneType::SequentialWritePreferred,
            _ => return None,
        })
    }

    /// Whether zones of this type have a write pointer.
    pub const fn has_write_pointer(self) -> bool {
        !matches!(self, ZoneType::Conventional)
    }
}

/// A zone's condition (the ZONE CONDITION field of a zone descriptor).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ZoneCondition {
    /// NOT WRITE POINTER: a conventional zone.
    NotWritePointer,
    /// EMPTY: the write pointer is at the zone's start.
    Empty,
    /// IMPLICITLY OPENED: opened by a write.
    ImplicitlyOpen,
    /// EXPLICITLY OPENED: opened by OPEN ZONE.
    ExplicitlyOpen,
    /// CLOSED: written, not open.
    Closed,
    /// READ ONLY.
    ReadOnly,
    /// FULL: the write pointer is at the zone's end.
    Full,
    /// OFFLINE: neither readable nor writable.
    Offline,
}

impl ZoneCondition {
    /// The field's value.
    pub const fn code(self) -> u8 {
        match self {
            ZoneCondition::NotWritePointer => 0x0,
            ZoneCondition::Empty => 0x1,
            ZoneCondition::ImplicitlyOpen => 0x2,
            ZoneCondition::ExplicitlyOpen => 0x3,
            ZoneCondition::Closed => 0x4,
            ZoneCondition::ReadOnly => 0xd,
            ZoneCondition::Full => 0xe,
            ZoneCondition::Offline => 0xf,
        }
    }

    /// The condition of a field value; `None` for reserved ones.
    pub const fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0x0 => ZoneCondition::NotWritePointer,
            0x1 => ZoneCondition::Empty,
            0x2 => ZoneCondition::ImplicitlyOpen,
            0x3 => ZoneCondition::ExplicitlyOpen,
            0x4 => ZoneCondition::Closed,
            0xd => ZoneCondition::ReadOnly,
            0xe => ZoneCondition::Full,
            0xf => ZoneCondition::Offline,
            _ => return None,
        })
    }

    /// IMPLICITLY or EXPLICITLY OPENED.
    pub const fn is_open(self) -> bool {
        matches!(
            self,
            ZoneCondition::ImplicitlyOpen | ZoneCondition::ExplicitlyOpen
        )
    }
}

/// The action of a ZBC OUT command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ZoneAction {
    /// CLOSE ZONE.
    Close,
    /// FINISH ZONE.
    Finish,
    /// OPEN ZONE.
    Open,
    /// RESET WRITE POINTER.
    ResetWritePointer,
}

impl ZoneAction {
    /// The action of a ZBC OUT service action; `None` for the others.
    pub const fn from_service_action(sa: u8) -> Option<Self> {
        Some(match sa {
            SA_CLOSE_ZONE => ZoneAction::Close,
            SA_FINISH_ZONE => ZoneAction::Finish,
            SA_OPEN_ZONE => ZoneAction::Open,
            SA_RESET_WRITE_POINTER => ZoneAction::ResetWritePointer,
            _ => return None,
        })
    }

    /// The ZBC OUT service action.
    pub const fn service_action(self) -> u8 {
        match self {
            ZoneAction::Close => SA_CLOSE_ZONE,
            ZoneAction::Finish => SA_FINISH_ZONE,
            ZoneAction::Open => SA_OPEN_ZONE,
            ZoneAction::ResetWritePointer => SA_RESET_WRITE_POINTER,
        }
    }

    /// The action's name, for logs.
    pub const fn name(self) -> &'static str {
        match self {
            ZoneAction::Close => "CLOSE ZONE",
            ZoneAction::Finish => "FINISH ZONE",
            ZoneAction::Open => "OPEN ZONE",
            ZoneAction::ResetWritePointer => "RESET WRITE POINTER",
        }
    }
}

/// Which zones REPORT ZONES lists (its REPORTING OPTIONS field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReportingOptions {
    /// Every zone (00h).
    All,
    /// EMPTY zones (01h).
    Empty,
    /// IMPLICITLY OPENED zones (02h).
    ImplicitlyOpen,
    /// EXPLICITLY OPENED zones (03h).
    ExplicitlyOpen,
    /// CLOSED zones (04h).
    Closed,
    /// FULL zones (05h).
    Full,
    /// READ ONLY zones (06h).
    ReadOnly,
    /// OFFLINE zones (07h).
    Offline,
    /// Zones with RESET WRITE POINTER RECOMMENDED set (10h).
    ResetRecommended,
    /// Zones with NON-SEQUENTIAL WRITE RESOURCES ACTIVE set (11h).
    NonSequential,
    /// NOT WRITE POINTER zones (3Fh).
    NotWritePointer,
}

impl ReportingOptions {
    /// The option of a field value (6 bits); `None` for reserved ones.
    pub const fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0x00 => ReportingOptions::All,
            0x01 => ReportingOptions::Empty,
            0x02 => ReportingOptions::ImplicitlyOpen,
            0x03 => ReportingOptions::ExplicitlyOpen,
            0x04 => ReportingOptions::Closed,
            0x05 => ReportingOptions::Full,
            0x06 => ReportingOptions::ReadOnly,
            0x07 => ReportingOptions::Offline,
            0x10 => ReportingOptions::ResetRecommended,
            0x11 => ReportingOptions::NonSequential,
            0x3f => ReportingOptions::NotWritePointer,
            _ => return None,
        })
    }

    /// Whether a zone is listed.
    pub fn matches(self, zone: &ZoneDescriptor) -> bool {
        let c = zone.condition;
        match self {
            ReportingOptions::All => true,
            ReportingOptions::Empty => c == ZoneCondition::Empty,
            ReportingOptions::ImplicitlyOpen => c == ZoneCondition::ImplicitlyOpen,
            ReportingOptions::ExplicitlyOpen => c == ZoneCondition::ExplicitlyOpen,
            ReportingOptions::Closed => c == ZoneCondition::Closed,
            ReportingOptions::Full => c == ZoneCondition::Full,
            ReportingOptions::ReadOnly => c == ZoneCondition::ReadOnly,
            ReportingOptions::Offline => c == ZoneCondition::Offline,
            ReportingOptions::ResetRecommended => zone.reset_recommended,
            ReportingOptions::NonSequential => zone.non_sequential,
            ReportingOptions::NotWritePointer => c == ZoneCondition::NotWritePointer,
        }
    }
}

/// One zone as REPORT ZONES describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ZoneDescriptor {
    /// ZONE TYPE.
    pub zone_type: ZoneType,
    /// ZONE CONDITION.
    pub condition: ZoneCondition,
    /// RESET: RESET WRITE POINTER RECOMMENDED.
    pub reset_recommended: bool,
    /// NON_SEQ: NON-SEQUENTIAL WRITE RESOURCES ACTIVE.
    pub non_sequential: bool,
    /// ZONE LENGTH in logical blocks.
    pub length: u64,
    /// ZONE START LBA.
    pub start: u64,
    /// WRITE POINTER LBA (meaningless, and reported as all ones by
    /// convention, for zones without a valid write pointer).
    pub write_pointer: u64,
}

impl ZoneDescriptor {
    /// The 64-byte descriptor (ZBC-2 6.2.5).
    pub fn to_bytes(&self) -> [u8; DESCRIPTOR_LEN] {
        let mut b = [0u8; DESCRIPTOR_LEN];
        b[0] = self.zone_type.code();
        b[1] = (self.condition.code() << 4)
            | (u8::from(self.non_sequential) << 1)
            | u8::from(self.reset_recommended);
        put64(&mut b, 8, self.length);
        put64(&mut b, 16, self.start);
        put64(&mut b, 24, self.write_pointer);
        b
    }
}

/// REPORT ZONES parameter data (ZBC-2 6.2.5): the 64-byte header (ZONE
/// LIST LENGTH, SAME = 0, MAXIMUM LBA = `max_lba`) and a descriptor for
/// each of `zones` that `options` selects, cut to `alloc_len` bytes.
///
/// `zones` are the device's zones from the one holding the ZONE START LBA
/// on, in order. The ZONE LIST LENGTH counts every selected zone, or with
/// `partial` only those whose descriptors fit in `alloc_len`; only the
/// descriptors that fit are built, so a short allocation length on a
/// device of many zones costs a scan, not a large buffer.
pub fn report_zones(
    max_lba: u64,
    zones: impl IntoIterator<Item = ZoneDescriptor>,
    options: ReportingOptions,
    partial: bool,
    alloc_len: u32,
) -> Vec<u8> {
    let alloc = usize::try_from(alloc_len).unwrap_or(usize::MAX);
    let after_header = alloc.saturating_sub(DESCRIPTOR_LEN);
    // Descriptors that fit whole, and those that at least start, in
    // `alloc_len`.
    let whole = (after_header / DESCRIPTOR_LEN) as u64;
    let started = after_header.div_ceil(DESCRIPTOR_LEN) as u64;
    let mut out = vec![0u8; DESCRIPTOR_LEN];
    let mut listed: u64 = 0;
    for zone in zones.into_iter().filter(|z| options.matches(z)) {
        if partial && listed >= whole {
            break;
        }
        if listed < started {
            out.extend_from_slice(&zone.to_bytes());
        }
        listed += 1;
    }
    let list_len = listed.saturating_mul(DESCRIPTOR_LEN as u64);
    put32(&mut out, 0, u32::try_from(list_len).unwrap_or(u32::MAX));
    put64(&mut out, 8, max_lba);
    out.truncate(alloc);
    out
}

/// The sense codes of zoned block devices (ZBC-2 and SPC-5's list), as
/// Linux's `scsi_debug` and tcmu-runner's zbc handler send them: no
/// INFORMATION, no field pointer.
impl Sense {
    /// UNALIGNED WRITE COMMAND (05/21/04): a write to a sequential write
    /// required zone that does not start at its write pointer.
    pub const fn unaligned_write_command() -> Self {
        Self::new(SenseKey::IllegalRequest, 0x21, 0x04)
    }

    /// WRITE BOUNDARY VIOLATION (05/21/05): a write that crosses from one
    /// sequential write required zone into the next, or from a
    /// conventional zone into a write pointer zone.
    pub const fn write_boundary_violation() -> Self {
        Self::new(SenseKey::IllegalRequest, 0x21, 0x05)
    }

    /// ATTEMPT TO READ INVALID DATA (05/21/06): on a host-managed device, a
    /// read that crosses from a conventional zone into a write pointer
    /// zone.
    pub const fn attempt_to_read_invalid_data() -> Self {
        Self::new(SenseKey::IllegalRequest, 0x21, 0x06)
    }

    /// READ BOUNDARY VIOLATION (05/21/07).
    pub const fn read_boundary_violation() -> Self {
        Self::new(SenseKey::IllegalRequest, 0x21, 0x07)
    }

    /// INSUFFICIENT ZONE RESOURCES (07/55/0E): opening one more zone would
    /// exceed the maximum number of open zones.
    pub const fn insufficient_zone_resources() -> Self {
        Self::new(SenseKey::DataProtect, 0x55, 0x0e)
    }

    /// ZONE IS READ ONLY (07/27/08).
    pub const fn zone_is_read_only() -> Self {
        Self::new(SenseKey::DataProtect, 0x27, 0x08)
    }

    /// ZONE IS OFFLINE (07/2C/0E).
    pub const fn zone_is_offline() -> Self {
        Self::new(SenseKey::DataProtect, 0x2c, 0x0e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone(i: u64, condition: ZoneCondition) -> ZoneDescriptor {
        ZoneDescriptor {
            zone_type: if condition == ZoneCondition::NotWritePointer {
                ZoneType::Conventional
            } else {
                ZoneType::SequentialWriteRequired
            },
            condition,
            reset_recommended: false,
            non_sequential: false,
            length: 0x100,
            start: i * 0x100,
            write_pointer: if condition == ZoneCondition::NotWritePointer {
                u64::MAX
            } else {
                i * 0x100 + 8
            },
        }
    }

    fn list_len(b: &[u8]) -> u32 {
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }

    #[test]
    fn codes_round_trip() {
        for c in 0..=0xffu8 {
            if let Some(t) = ZoneType::from_code(c) {
                assert_eq!(t.code(), c);
            }
            if let Some(z) = ZoneCondition::from_code(c) {
                assert_eq!(z.code(), c);
            }
            if let Some(a) = ZoneAction::from_service_action(c) {
                assert_eq!(a.service_action(), c);
            }
        }
        let options: Vec<u8> = (0..0x40u8)
            .filter(|&c| ReportingOptions::from_code(c).is_some())
            .collect();
        assert_eq!(
            options,
            vec![0, 1, 2, 3, 4, 5, 6, 7, 0x10, 0x11, 0x3f],
            "the reporting options of ZBC-1 and tcmu-runner"
        );
        assert_eq!(ZoneAction::from_service_action(0), None);
        assert_eq!(ZoneAction::from_service_action(5), None);
    }

    #[test]
    fn descriptor_layout() {
        let mut z = zone(3, ZoneCondition::Closed);
        z.non_sequential = true;
        z.reset_recommended = true;
        let b = z.to_bytes();
        assert_eq!(&b[..2], &[0x02, 0x43]);
        assert_eq!(&b[8..16], &0x100u64.to_be_bytes());
        assert_eq!(&b[16..24], &0x300u64.to_be_bytes());
        assert_eq!(&b[24..32], &0x308u64.to_be_bytes());
        assert!(b[2..8].iter().chain(&b[32..]).all(|&x| x == 0));
        let c = zone(0, ZoneCondition::NotWritePointer).to_bytes();
        assert_eq!(&c[..2], &[0x01, 0x00]);
        assert_eq!(&c[24..32], &[0xff; 8]);
    }

    #[test]
    fn report_all_and_filtered() {
        let zones = [
            zone(0, ZoneCondition::NotWritePointer),
            zone(1, ZoneCondition::Empty),
            zone(2, ZoneCondition::Closed),
            zone(3, ZoneCondition::Empty),
        ];
        let b = report_zones(0x3ff, zones, ReportingOptions::All, false, 4096);
        assert_eq!(b.len(), 64 + 4 * 64);
        assert_eq!(list_len(&b), 256);
        assert_eq!(&b[4..8], &[0, 0, 0, 0], "SAME = 0");
        assert_eq!(&b[8..16], &0x3ffu64.to_be_bytes());
        assert_eq!(&b[64..128], &zones[0].to_bytes());
        let b = report_zones(0x3ff, zones, ReportingOptions::Empty, false, 4096);
        assert_eq!(list_len(&b), 128);
        assert_eq!(&b[64..128], &zones[1].to_bytes());
        assert_eq!(&b[128..192], &zones[3].to_bytes());
        let b = report_zones(0x3ff, zones, ReportingOptions::Full, false, 4096);
        assert_eq!((b.len(), list_len(&b)), (64, 0));
        let b = report_zones(0x3ff, zones, ReportingOptions::NotWritePointer, false, 4096);
        assert_eq!(list_len(&b), 64);
    }

    #[test]
    fn report_partial_and_truncated() {
        let zones: Vec<ZoneDescriptor> = (0..10).map(|i| zone(i, ZoneCondition::Empty)).collect();
        // Room for 2 descriptors: without PARTIAL the list length counts
        // all 10, with it only the 2 that fit.
        let b = report_zones(0x9ff, zones.clone(), ReportingOptions::All, false, 64 * 3);
        assert_eq!((b.len(), list_len(&b)), (192, 640));
        let b = report_zones(0x9ff, zones.clone(), ReportingOptions::All, true, 64 * 3);
        assert_eq!((b.len(), list_len(&b)), (192, 128));
        // Not a multiple of 64: the descriptor cut short is there only
        // without PARTIAL (with it, the data ends after the list).
        let b = report_zones(
            0x9ff,
            zones.clone(),
            ReportingOptions::All,
            false,
            64 * 3 + 10,
        );
        assert_eq!((b.len(), list_len(&b)), (202, 640));
        assert_eq!(&b[192..202], &zones[2].to_bytes()[..10]);
        let b = report_zones(
            0x9ff,
            zones.clone(),
            ReportingOptions::All,
            true,
            64 * 3 + 10,
        );
        assert_eq!((b.len(), list_len(&b)), (192, 128));
        // Shorter than the header.
        let b = report_zones(0x9ff, zones.clone(), ReportingOptions::All, false, 10);
        assert_eq!((b.len(), list_len(&b)), (10, 640));
        assert!(report_zones(0x9ff, zones, ReportingOptions::All, true, 0).is_empty());
    }

    #[test]
    fn models() {
        assert_eq!(ZonedModel::HostManaged.peripheral_device_type(), 0x14);
        assert_eq!(ZonedModel::HostAware.peripheral_device_type(), 0x00);
        let hm = ZonedParams::host_managed(8);
        assert_eq!((hm.max_open, hm.optimal_open), (8, NOT_REPORTED));
        let ha = ZonedParams::host_aware(8);
        assert_eq!((ha.max_open, ha.optimal_non_sequential), (NOT_REPORTED, 8));
        assert!(ZoneType::SequentialWritePreferred.has_write_pointer());
        assert!(!ZoneType::Conventional.has_write_pointer());
        assert!(ZoneCondition::ExplicitlyOpen.is_open());
        assert!(!ZoneCondition::Closed.is_open());
    }

    #[test]
    fn sense_codes() {
        let kaq = |s: Sense| (s.key.code(), s.asc, s.ascq);
        assert_eq!(kaq(Sense::unaligned_write_command()), (5, 0x21, 0x04));
        assert_eq!(kaq(Sense::write_boundary_violation()), (5, 0x21, 0x05));
        assert_eq!(kaq(Sense::attempt_to_read_invalid_data()), (5, 0x21, 0x06));
        assert_eq!(kaq(Sense::read_boundary_violation()), (5, 0x21, 0x07));
        assert_eq!(kaq(Sense::insufficient_zone_resources()), (7, 0x55, 0x0e));
        assert_eq!(kaq(Sense::zone_is_read_only()), (7, 0x27, 0x08));
        assert_eq!(kaq(Sense::zone_is_offline()), (7, 0x2c, 0x0e));
    }
}
