//! Asymmetric logical unit access (SPC-4 5.16): REPORT TARGET PORT GROUPS
//! (MAINTENANCE IN, service action 0x0A), SET TARGET PORT GROUPS
//! (MAINTENANCE OUT, service action 0x0A) and the TPGS field of standard
//! INQUIRY data, the way the kernel's LIO (`target_core_alua.c`) answers
//! them for a `fileio` disk.
//!
//! The target port groups are the device's configfs `alua/<group>/`
//! directories; the runtime reads them (tcmu-core's `alua` module) and
//! converts them to [`PortGroup`]s: only groups with a valid `tg_pt_gp_id`,
//! in LIO's list order (`default_tg_pt_gp` first, then the others in the
//! order their IDs were set — configfs does not say, ascending ID is the
//! usual approximation).
//!
//! LIO answers from the group of the LUN the command came through (the
//! "local" group): its access type gives INQUIRY's TPGS, its implicit
//! transition time goes in the extended RTPG header, and it decides whether
//! SET TARGET PORT GROUPS is allowed. A TCMU daemon is not told that LUN, so
//! [`local_group`] picks the group marked [`PortGroup::local`] (the runtime
//! marks the group holding an enabled target port, as tcmu-runner does), or
//! else the first group with member ports. With every port in one group (the
//! default) this is exactly LIO's answer.
//!
//! Senses carry no field pointer, like LIO's.

use crate::bytes::{be16, put32, u8_at};
use crate::sense::Sense;

/// SUPPORTED bit of the transitioning state (T_SUP).
pub const SUP_TRANSITIONING: u8 = 0x80;
/// SUPPORTED bit of the offline state (O_SUP).
pub const SUP_OFFLINE: u8 = 0x40;
/// SUPPORTED bit of the logical block dependent state (LBD_SUP).
pub const SUP_LBA_DEPENDENT: u8 = 0x10;
/// SUPPORTED bit of the unavailable state (U_SUP).
pub const SUP_UNAVAILABLE: u8 = 0x08;
/// SUPPORTED bit of the standby state (S_SUP).
pub const SUP_STANDBY: u8 = 0x04;
/// SUPPORTED bit of the active/non-optimized state (AN_SUP).
pub const SUP_ACTIVE_NON_OPTIMIZED: u8 = 0x02;
/// SUPPORTED bit of the active/optimized state (AO_SUP).
pub const SUP_ACTIVE_OPTIMIZED: u8 = 0x01;
/// The states LIO enables on a new group: all but logical block dependent.
pub const SUP_DEFAULT: u8 = SUP_TRANSITIONING
    | SUP_OFFLINE
    | SUP_UNAVAILABLE
    | SUP_STANDBY
    | SUP_ACTIVE_NON_OPTIMIZED
    | SUP_ACTIVE_OPTIMIZED;

/// STATUS CODE: no status available.
pub const STATUS_NONE: u8 = 0x00;
/// STATUS CODE: state altered by SET TARGET PORT GROUPS.
pub const STATUS_ALTERED_BY_EXPLICIT_STPG: u8 = 0x01;
/// STATUS CODE: state altered by implicit ALUA.
pub const STATUS_ALTERED_BY_IMPLICIT_ALUA: u8 = 0x02;

/// TPGS bits of INQUIRY byte 5 for implicit ALUA.
pub const TPGS_IMPLICIT: u8 = 0x10;
/// TPGS bits of INQUIRY byte 5 for explicit ALUA.
pub const TPGS_EXPLICIT: u8 = 0x20;

/// An asymmetric access state (SPC-4 table 307).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum AccessState {
    /// Active/optimized.
    ActiveOptimized = 0x0,
    /// Active/non-optimized.
    ActiveNonOptimized = 0x1,
    /// Standby.
    Standby = 0x2,
    /// Unavailable.
    Unavailable = 0x3,
    /// Logical block dependent.
    LbaDependent = 0x4,
    /// Offline (a secondary, per-port state).
    Offline = 0xe,
    /// Transitioning between states.
    Transitioning = 0xf,
}

impl AccessState {
    /// The 4-bit code.
    pub const fn code(self) -> u8 {
        self as u8
    }

    /// The state for a code (the high nibble is ignored); `None` for the
    /// reserved codes 5..=0xD.
    pub const fn from_code(code: u8) -> Option<Self> {
        Some(match code & 0x0f {
            0x0 => Self::ActiveOptimized,
            0x1 => Self::ActiveNonOptimized,
            0x2 => Self::Standby,
            0x3 => Self::Unavailable,
            0x4 => Self::LbaDependent,
            0xe => Self::Offline,
            0xf => Self::Transitioning,
            _ => return None,
        })
    }

    /// The SUPPORTED bit (`SUP_*`) that allows this state.
    pub const fn supported_bit(self) -> u8 {
        match self {
            Self::ActiveOptimized => SUP_ACTIVE_OPTIMIZED,
            Self::ActiveNonOptimized => SUP_ACTIVE_NON_OPTIMIZED,
            Self::Standby => SUP_STANDBY,
            Self::Unavailable => SUP_UNAVAILABLE,
            Self::LbaDependent => SUP_LBA_DEPENDENT,
            Self::Offline => SUP_OFFLINE,
            Self::Transitioning => SUP_TRANSITIONING,
        }
    }

    /// Whether this is a primary (per group) state; offline and
    /// transitioning are secondary (per port).
    pub const fn is_primary(self) -> bool {
        !matches!(self, Self::Offline | Self::Transitioning)
    }
}

/// How a group's state may change: the configfs `alua_access_type`
/// (`None`, `Implicit`, `Explicit`, `Implicit and Explicit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct AccessType {
    /// The device changes states itself (configfs `alua_access_state`).
    pub implicit: bool,
    /// Initiators change states with SET TARGET PORT GROUPS.
    pub explicit: bool,
}

impl AccessType {
    /// Both implicit and explicit: what LIO gives a new group.
    pub const BOTH: Self = Self {
        implicit: true,
        explicit: true,
    };

    /// The TPGS field as it sits in INQUIRY byte 5 (bits 5..4).
    pub const fn tpgs(self) -> u8 {
        let mut bits = 0;
        if self.implicit {
            bits |= TPGS_IMPLICIT;
        }
        if self.explicit {
            bits |= TPGS_EXPLICIT;
        }
        bits
    }

    /// The access type for TPGS bits as they sit in INQUIRY byte 5.
    pub const fn from_tpgs(bits: u8) -> Self {
        Self {
            implicit: bits & TPGS_IMPLICIT != 0,
            explicit: bits & TPGS_EXPLICIT != 0,
        }
    }
}

/// One target port group of the device.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PortGroup {
    /// TARGET PORT GROUP identifier (`tg_pt_gp_id`).
    pub id: u16,
    /// Primary asymmetric access state (`alua_access_state`).
    pub state: AccessState,
    /// PREF: the preferred group (`preferred`).
    pub preferred: bool,
    /// The SUPPORTED bits (`SUP_*`), from the `alua_support_*` files.
    pub supported: u8,
    /// STATUS CODE (`STATUS_*`, from `alua_access_status`).
    pub status: u8,
    /// Implicit transition time in seconds (`implicit_trans_secs`).
    pub implicit_transition_secs: u8,
    /// Access type (`alua_access_type`).
    pub access: AccessType,
    /// The relative target port identifiers of the member LUNs (from
    /// `members` and each LUN's `statistics/scsi_port/indx`), in `members`
    /// order.
    pub ports: Vec<u16>,
    /// Commands reach this device through a port of this group (see
    /// [`local_group`]).
    pub local: bool,
}

impl PortGroup {
    /// A group as LIO creates it: active/optimized, access type implicit and
    /// explicit, [`SUP_DEFAULT`], status none, not preferred, no ports.
    pub fn new(id: u16) -> Self {
        Self {
            id,
            state: AccessState::ActiveOptimized,
            preferred: false,
            supported: SUP_DEFAULT,
            status: STATUS_NONE,
            implicit_transition_secs: 0,
            access: AccessType::BOTH,
            ports: Vec::new(),
            local: false,
        }
    }

    /// Whether `state` is among the group's SUPPORTED states.
    pub const fn supports(&self, state: AccessState) -> bool {
        self.supported & state.supported_bit() != 0
    }
}

/// The target port commands reach the device through, as page 0x83 of
/// VPD names it (relative target port and target port group designators):
/// Linux's `scsi_dh_alua` and multipathd's `alua` prioritizer find a
/// path's group there, and attach to no device without it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TargetPortId {
    /// The RELATIVE TARGET PORT IDENTIFIER.
    pub rtpi: u16,
    /// The TARGET PORT GROUP it is in, if any.
    pub group: Option<u16>,
    /// The SCSI transport protocol identifier of its fabric (SPC-4: 0 FC,
    /// 4 SRP, 5 iSCSI, 6 SAS), if known; the designators then carry it
    /// with PIV set.
    pub protocol: Option<u8>,
}

/// The group LIO would answer for: the first group marked
/// [`PortGroup::local`], else the first group with member ports; `None` when
/// no group has a port (LIO then has no group for the LUN).
pub fn local_group(groups: &[PortGroup]) -> Option<&PortGroup> {
    groups
        .iter()
        .find(|g| g.local)
        .or_else(|| groups.iter().find(|g| !g.ports.is_empty()))
}

/// Puts the local group (see [`local_group`]) in `state` with the status
/// "altered by implicit ALUA", when its state is the device's to change:
/// its access type is implicit only (with explicit ALUA the initiators
/// set the states, with none there is nothing to change). Returns whether
/// it did. For a backend shared by several gateways that knows which one
/// may write (an image's exclusive lock): REPORT TARGET PORT GROUPS then
/// says where the writes go, whatever was configured.
pub fn set_local_state(groups: &mut [PortGroup], state: AccessState) -> bool {
    let index = groups
        .iter()
        .position(|g| g.local)
        .or_else(|| groups.iter().position(|g| !g.ports.is_empty()));
    let Some(group) = index.and_then(|i| groups.get_mut(i)) else {
        return false;
    };
    if !group.access.implicit || group.access.explicit {
        return false;
    }
    if group.state != state {
        group.state = state;
        group.status = STATUS_ALTERED_BY_IMPLICIT_ALUA;
    }
    true
}

/// The TPGS bits of standard INQUIRY byte 5 (to be OR-ed with SCCS, 3PC and
/// the rest): the local group's access type, 0 without a group. LIO sets
/// SCCS (0x80) in every standard INQUIRY answer of a device whose ALUA it
/// emulates (the `fileio` case), group or not.
pub fn tpgs_bits(groups: &[PortGroup]) -> u8 {
    local_group(groups).map_or(0, |g| g.access.tpgs())
}

/// The REPORT TARGET PORT GROUPS parameter data, byte for byte LIO's.
///
/// `extended` is the PARAMETER DATA FORMAT 001b of CDB byte 1 (LIO tests bit
/// 5 alone: `cdb[1] & 0x20`); `alloc_len` is CDB bytes 6..9. An allocation
/// length below the header (4 bytes, 8 extended) is INVALID FIELD IN CDB.
///
/// Like LIO: groups without ports are left out; a group descriptor (8 bytes
/// plus 4 per port) that does not fit in the allocation length is left out
/// but counted in RETURN DATA LENGTH, and later groups that do fit are still
/// written; the TARGET PORT COUNT is the port count modulo 256; the extended
/// header is format 1 with the local group's implicit transition time, but
/// RETURN DATA LENGTH counts the descriptors only, in both formats. The
/// answer is RETURN DATA LENGTH + 4 bytes, cut to `alloc_len` — so LIO's
/// extended answer lacks its last 4 bytes (the last port of the last group
/// written), and so does ours. Initiators that walk the list up to RETURN
/// DATA LENGTH + 4 (Linux `scsi_dh_alua`, sg3_utils) read group headers
/// only up to there and cope.
pub fn report_target_port_groups(
    groups: &[PortGroup],
    extended: bool,
    alloc_len: u32,
) -> Result<Vec<u8>, Sense> {
    let header = if extended { 8 } else { 4 };
    let alloc = usize::try_from(alloc_len).unwrap_or(usize::MAX);
    if alloc < header {
        return Err(Sense::invalid_cdb_field());
    }
    let mut body: Vec<u8> = Vec::new();
    let mut off = header;
    let mut rd_len: u32 = 0;
    for g in groups.iter().filter(|g| !g.ports.is_empty()) {
        let desc_len = 8usize.saturating_add(g.ports.len().saturating_mul(4));
        rd_len = rd_len.wrapping_add(desc_len as u32);
        if off.saturating_add(desc_len) > alloc {
            continue;
        }
        let pref = if g.preferred { 0x80 } else { 0x00 };
        body.extend_from_slice(&[pref | g.state.code(), g.supported]);
        body.extend_from_slice(&g.id.to_be_bytes());
        body.extend_from_slice(&[0, g.status, 0, g.ports.len() as u8]);
        for port in &g.ports {
            body.extend_from_slice(&[0, 0]);
            body.extend_from_slice(&port.to_be_bytes());
        }
        off += desc_len;
    }
    let mut data = vec![0u8; header];
    put32(&mut data, 0, rd_len);
    if extended {
        data[4] = 0x10;
        data[5] = local_group(groups).map_or(0, |g| g.implicit_transition_secs);
    }
    data.extend_from_slice(&body);
    // LIO completes with RETURN DATA LENGTH + 4 bytes in both formats, so
    // the extended answer loses its last 4 bytes; zeroes fill in for groups
    // that were counted but not written.
    let total = usize::try_from(rd_len)
        .unwrap_or(usize::MAX)
        .saturating_add(4);
    data.resize(total.min(alloc), 0);
    Ok(data)
}

/// Checks a SET TARGET PORT GROUPS parameter list (`param`, the data-out cut
/// to the CDB's PARAMETER LIST LENGTH) against the device's `groups`, the
/// way LIO does, and returns the requested changes in list order:
/// `(group id, state)` for a primary state, `(relative target port id,
/// AccessState::Offline)` for the secondary offline state of one port.
///
/// LIO's checks, in order:
/// - a list shorter than its 4-byte header: INVALID FIELD IN PARAMETER LIST;
/// - no local group, or explicit ALUA disabled on it: INVALID COMMAND
///   OPERATION CODE (this crate's [`Sense::invalid_command_opcode`]);
/// - then for each 4-byte descriptor from byte 4 on (a short last one reads
///   as zero-padded): a reserved state code, a state the local group does
///   not support, transitioning (never settable explicitly), a group ID no
///   group has, a state that group does not support, or (offline) a
///   relative port ID no member port has: INVALID FIELD IN PARAMETER LIST.
///
/// LIO applies the descriptors one by one and keeps the changes made before
/// a failing one; this returns all or nothing. Applying a change through
/// configfs (`alua_access_state`) needs the implicit access type on the
/// target group and refuses logical block dependent on an explicit group:
/// the runtime maps such a refusal to an error of its choice.
pub fn parse_set_target_port_groups(
    param: &[u8],
    groups: &[PortGroup],
) -> Result<Vec<(u16, AccessState)>, Sense> {
    if param.len() < 4 {
        return Err(Sense::invalid_parameter_list());
    }
    let local = match local_group(groups) {
        Some(g) if g.access.explicit => g,
        _ => return Err(Sense::invalid_command_opcode()),
    };
    let mut changes = Vec::new();
    let mut off = 4usize;
    while off < param.len() {
        let state =
            AccessState::from_code(u8_at(param, off)).ok_or(Sense::invalid_parameter_list())?;
        if !local.supports(state) || state == AccessState::Transitioning {
            return Err(Sense::invalid_parameter_list());
        }
        let id = be16(param, off + 2);
        let found = if state.is_primary() {
            groups.iter().any(|g| g.id == id && g.supports(state))
        } else {
            groups.iter().any(|g| g.ports.contains(&id))
        };
        if !found {
            return Err(Sense::invalid_parameter_list());
        }
        changes.push((id, state));
        off += 4;
    }
    Ok(changes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(id: u16, ports: &[u16]) -> PortGroup {
        PortGroup {
            ports: ports.to_vec(),
            ..PortGroup::new(id)
        }
    }

    /// default_tg_pt_gp with two ports, an empty group, and a standby,
    /// preferred group with one port.
    #[test]
    fn the_local_implicit_group_takes_the_backends_state() {
        let implicit = AccessType {
            implicit: true,
            explicit: false,
        };
        let mut remote = group(2, &[7]);
        remote.access = implicit;
        remote.state = AccessState::ActiveOptimized;
        let mut local = group(1, &[3]);
        local.access = implicit;
        local.local = true;
        let mut gs = vec![remote.clone(), local.clone()];
        assert!(set_local_state(&mut gs, AccessState::Transitioning));
        assert_eq!(gs[1].state, AccessState::Transitioning);
        assert_eq!(gs[1].status, STATUS_ALTERED_BY_IMPLICIT_ALUA);
        assert_eq!(gs[0], remote, "other groups are left alone");
        // The same state again changes nothing, not even the status.
        let mut same = vec![local.clone()];
        assert!(set_local_state(&mut same, AccessState::ActiveOptimized));
        assert_eq!(same[0].status, STATUS_NONE);
        // Explicit ALUA: the initiators' states stand.
        local.access = AccessType::BOTH;
        let mut gs = vec![local];
        assert!(!set_local_state(&mut gs, AccessState::ActiveNonOptimized));
        assert_eq!(gs[0].state, AccessState::ActiveOptimized);
        assert!(!set_local_state(&mut [], AccessState::ActiveOptimized));
    }

    fn groups() -> Vec<PortGroup> {
        let mut b = group(17, &[3]);
        b.state = AccessState::Standby;
        b.preferred = true;
        b.status = STATUS_ALTERED_BY_EXPLICIT_STPG;
        b.implicit_transition_secs = 9;
        b.supported = SUP_STANDBY | SUP_ACTIVE_OPTIMIZED;
        let mut a = group(0, &[1, 2]);
        a.implicit_transition_secs = 5;
        vec![a, group(4, &[]), b]
    }

    #[test]
    fn state_codes() {
        for code in 0..=0xffu8 {
            if let Some(s) = AccessState::from_code(code) {
                assert_eq!(s.code(), code & 0x0f);
            } else {
                assert!((5..=0xd).contains(&(code & 0x0f)));
            }
        }
        assert!(AccessState::Standby.is_primary());
        assert!(AccessState::LbaDependent.is_primary());
        assert!(!AccessState::Offline.is_primary());
        assert_eq!(SUP_DEFAULT, 0xcf);
        assert!(PortGroup::new(1).supports(AccessState::Offline));
        assert!(!PortGroup::new(1).supports(AccessState::LbaDependent));
    }

    #[test]
    fn tpgs() {
        assert_eq!(AccessType::BOTH.tpgs(), 0x30);
        assert_eq!(AccessType::from_tpgs(0x10).tpgs(), 0x10);
        assert_eq!(AccessType::default().tpgs(), 0);
        let mut g = groups();
        assert_eq!(tpgs_bits(&g), 0x30);
        g[0].access = AccessType {
            implicit: true,
            explicit: false,
        };
        assert_eq!(tpgs_bits(&g), 0x10);
        // The group marked local wins.
        g[2].local = true;
        assert_eq!(tpgs_bits(&g), 0x30);
        // No ports anywhere: no group, TPGS 0.
        assert_eq!(tpgs_bits(&[group(0, &[])]), 0);
        assert_eq!(tpgs_bits(&[]), 0);
    }

    #[test]
    fn rtpg_length_format() {
        let want = vec![
            0, 0, 0, 28, // RETURN DATA LENGTH
            0x00, 0xcf, 0, 0, 0, 0, 0, 2, // group 0: AO, default states
            0, 0, 0, 1, 0, 0, 0, 2, // ports 1 and 2
            0x82, 0x05, 0, 17, 0, 1, 0, 1, // group 17: PREF, standby
            0, 0, 0, 3,
        ];
        assert_eq!(report_target_port_groups(&groups(), false, 1024), Ok(want));
    }

    #[test]
    fn rtpg_extended_format() {
        let b = report_target_port_groups(&groups(), true, 1024).unwrap();
        assert_eq!(&b[..8], &[0, 0, 0, 28, 0x10, 5, 0, 0]);
        assert_eq!(&b[8..12], &[0x00, 0xcf, 0, 0]);
        // LIO's length: RETURN DATA LENGTH + 4, so the last port of group 17
        // is cut off.
        assert_eq!(b.len(), 4 + 28);
        assert_eq!(&b[24..], &[0x82, 0x05, 0, 17, 0, 1, 0, 1]);
        let mut g = groups();
        g[2].local = true;
        let b = report_target_port_groups(&g, true, 1024).unwrap();
        assert_eq!(b[5], 9);
        // RETURN DATA LENGTH does not count the 4 extra header bytes, and the
        // answer is RETURN DATA LENGTH + 4 long, as LIO sends it.
        let b = report_target_port_groups(&[], true, 1024).unwrap();
        assert_eq!(b, vec![0, 0, 0, 0]);
    }

    #[test]
    fn rtpg_truncation() {
        // Room for the header and group 17 (12 bytes) but not group 0 (16):
        // LIO skips group 0, writes group 17, and reports both lengths.
        let b = report_target_port_groups(&groups(), false, 4 + 12).unwrap();
        assert_eq!(
            b,
            vec![0, 0, 0, 28, 0x82, 0x05, 0, 17, 0, 1, 0, 1, 0, 0, 0, 3]
        );
        // Room for group 0 only.
        let b = report_target_port_groups(&groups(), false, 4 + 16 + 11).unwrap();
        assert_eq!(b.len(), 31);
        assert_eq!(&b[..8], &[0, 0, 0, 28, 0, 0xcf, 0, 0]);
        assert!(b[20..].iter().all(|&x| x == 0));
        // Header only.
        let b = report_target_port_groups(&groups(), false, 4).unwrap();
        assert_eq!(b, vec![0, 0, 0, 28]);
        let b = report_target_port_groups(&groups(), true, 9).unwrap();
        assert_eq!(b, vec![0, 0, 0, 28, 0x10, 5, 0, 0, 0]);
        // Too short for the header.
        assert_eq!(
            report_target_port_groups(&groups(), false, 3),
            Err(Sense::invalid_cdb_field())
        );
        assert_eq!(
            report_target_port_groups(&groups(), true, 7),
            Err(Sense::invalid_cdb_field())
        );
    }

    #[test]
    fn rtpg_port_count_wraps() {
        let ports: Vec<u16> = (1..=300).collect();
        let b = report_target_port_groups(&[group(1, &ports)], false, u32::MAX).unwrap();
        assert_eq!(b.len(), 4 + 8 + 1200);
        assert_eq!(b[11], (300 % 256) as u8);
        assert_eq!(&b[..4], &(1208u32).to_be_bytes());
    }

    fn stpg(descs: &[[u8; 4]]) -> Vec<u8> {
        let mut p = vec![0u8; 4];
        for d in descs {
            p.extend_from_slice(d);
        }
        p
    }

    #[test]
    fn stpg_valid() {
        let g = groups();
        let p = stpg(&[[0x02, 0, 0, 0], [0x00, 0, 0, 17], [0x0e, 0, 0, 3]]);
        assert_eq!(
            parse_set_target_port_groups(&p, &g),
            Ok(vec![
                (0, AccessState::Standby),
                (17, AccessState::ActiveOptimized),
                (3, AccessState::Offline),
            ])
        );
        // The reserved bits of the state byte are ignored; an empty group
        // can be set.
        let p = stpg(&[[0xf1, 0xff, 0, 4]]);
        assert_eq!(
            parse_set_target_port_groups(&p, &g),
            Ok(vec![(4, AccessState::ActiveNonOptimized)])
        );
        // A header alone changes nothing.
        assert_eq!(parse_set_target_port_groups(&[0; 4], &g), Ok(vec![]));
        // A short last descriptor reads as zero-padded: group 0 → AO.
        assert_eq!(
            parse_set_target_port_groups(&[0, 0, 0, 0, 0x00, 0], &g),
            Ok(vec![(0, AccessState::ActiveOptimized)])
        );
    }

    #[test]
    fn stpg_errors() {
        let g = groups();
        let ipl = Err(Sense::invalid_parameter_list());
        assert_eq!(parse_set_target_port_groups(&[0; 3], &g), ipl);
        assert_eq!(parse_set_target_port_groups(&[], &g), ipl);
        // Reserved state codes.
        for code in 5..=0xd {
            let p = stpg(&[[code, 0, 0, 0]]);
            assert_eq!(parse_set_target_port_groups(&p, &g), ipl, "{code}");
        }
        // Transitioning is never accepted explicitly.
        let p = stpg(&[[0x0f, 0, 0, 0]]);
        assert_eq!(parse_set_target_port_groups(&p, &g), ipl);
        // Not supported by the local group (LBD is off by default).
        let p = stpg(&[[0x04, 0, 0, 0]]);
        assert_eq!(parse_set_target_port_groups(&p, &g), ipl);
        // Unknown group, unknown port.
        let p = stpg(&[[0x00, 0, 0, 99]]);
        assert_eq!(parse_set_target_port_groups(&p, &g), ipl);
        let p = stpg(&[[0x0e, 0, 0, 99]]);
        assert_eq!(parse_set_target_port_groups(&p, &g), ipl);
        // Supported locally but not by the target group.
        let p = stpg(&[[0x03, 0, 0, 17]]);
        assert_eq!(parse_set_target_port_groups(&p, &g), ipl);
        // One bad descriptor fails the whole list.
        let p = stpg(&[[0x02, 0, 0, 0], [0x00, 0, 0, 99]]);
        assert_eq!(parse_set_target_port_groups(&p, &g), ipl);
    }

    #[test]
    fn stpg_needs_explicit_alua_on_the_local_group() {
        let mut g = groups();
        g[0].access.explicit = false;
        let p = stpg(&[[0x02, 0, 0, 0]]);
        assert_eq!(
            parse_set_target_port_groups(&p, &g),
            Err(Sense::invalid_command_opcode())
        );
        // The list length is checked first.
        assert_eq!(
            parse_set_target_port_groups(&[0; 2], &g),
            Err(Sense::invalid_parameter_list())
        );
        // No group with ports: no local group.
        assert_eq!(
            parse_set_target_port_groups(&p, &[group(0, &[])]),
            Err(Sense::invalid_command_opcode())
        );
        // The local group decides about explicit ALUA and the states.
        g[2].local = true;
        assert_eq!(
            parse_set_target_port_groups(&p, &g),
            Ok(vec![(0, AccessState::Standby)])
        );
        let p = stpg(&[[0x03, 0, 0, 0]]);
        assert_eq!(
            parse_set_target_port_groups(&p, &g),
            Err(Sense::invalid_parameter_list())
        );
    }
}
