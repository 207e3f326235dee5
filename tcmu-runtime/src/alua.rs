//! ALUA from configfs: the device's target port groups as the SCSI layer
//! sees them, and SET TARGET PORT GROUPS written back.
//!
//! The kernel keeps a TCMU device's ALUA groups under
//! `<device>/alua/<group>/` and enforces their states itself (a command to
//! a standby group is refused before it reaches us); the daemon answers
//! REPORT and SET TARGET PORT GROUPS and the TPGS bits from those files.

use tcmu_core::alua::{self as cfs, GroupInfo};
use tcmu_core::configfs::{ConfigfsError, DeviceDir};
use tcmu_scsi::alua::{
    AccessState, AccessType, PortGroup, TargetPortId, STATUS_ALTERED_BY_EXPLICIT_STPG,
};
use tcmu_scsi::Sense;

/// The device's port groups that have an ID, and the port commands come
/// in through, for the SCSI layer.
pub(crate) fn port_groups(
    dir: &DeviceDir,
) -> Result<(Vec<PortGroup>, Option<TargetPortId>), ConfigfsError> {
    let groups = cfs::read_groups(dir)?;
    Ok((
        groups.iter().filter_map(port_group).collect(),
        target_port(&groups),
    ))
}

/// The port commands come in through: TCMU does not say which port a
/// command used, so, as tcmu-runner, the first member port whose portal
/// group is enabled (tcm_loop's have no `enable`: any), in group order.
/// Exact for the usual set-ups: one port per device, or (ceph-iscsi) one
/// enabled local port and the other gateways' ports disabled.
fn target_port(groups: &[GroupInfo]) -> Option<TargetPortId> {
    groups.iter().find_map(|g| {
        g.members
            .iter()
            .find(|m| m.enabled != Some(false))
            .map(|m| TargetPortId {
                rtpi: m.rtpi,
                group: g.id,
                protocol: protocol_identifier(&m.fabric, &m.wwn),
            })
    })
}

/// The SCSI transport protocol identifier (SPC-4 table 362) of a LIO
/// fabric's port; the emulating fabrics (tcm_loop, vhost, xen-pvscsi,
/// usb_gadget) take it from the target WWN's prefix, as tcm_loop does.
fn protocol_identifier(fabric: &str, wwn: &str) -> Option<u8> {
    const FCP: u8 = 0x0;
    const SRP: u8 = 0x4;
    const ISCSI: u8 = 0x5;
    const SAS: u8 = 0x6;
    match fabric.to_ascii_lowercase().as_str() {
        "iscsi" => Some(ISCSI),
        "srpt" => Some(SRP),
        "qla2xxx" | "tcm_fc" | "efct" => Some(FCP),
        _ => match wwn.split_once('.').map(|(prefix, _)| prefix) {
            Some("naa") => Some(SAS),
            Some("fc") => Some(FCP),
            Some("iqn" | "eui") => Some(ISCSI),
            _ => None,
        },
    }
}

fn port_group(g: &GroupInfo) -> Option<PortGroup> {
    let id = g.id?;
    Some(PortGroup {
        id,
        state: AccessState::from_code(g.access_state).unwrap_or(AccessState::ActiveOptimized),
        preferred: g.preferred,
        supported: g.supported_states,
        status: g.access_status,
        implicit_transition_secs: g.implicit_trans_secs,
        access: AccessType::from_tpgs(g.access_type),
        ports: g.members.iter().map(|m| m.rtpi).collect(),
        // Commands come in through an enabled port; tcm_loop has no
        // `enable`, so any member counts there.
        local: g.members.iter().any(|m| m.enabled != Some(false)),
    })
}

/// Applies SET TARGET PORT GROUPS: each group to its new state (with the
/// status "altered by SET TARGET PORT GROUPS"), or, for the offline state,
/// the port with that relative identifier offline. A write the kernel
/// refuses is SET TARGET PORT GROUPS COMMAND FAILED.
pub(crate) fn set_port_groups(
    dir: &DeviceDir,
    changes: &[(u16, AccessState)],
) -> Result<(), (Sense, String)> {
    let failed = |e: String| (Sense::set_target_port_groups_failed(), e);
    let groups = cfs::read_groups(dir).map_err(|e| failed(e.to_string()))?;
    for &(id, state) in changes {
        if state == AccessState::Offline {
            let member = groups
                .iter()
                .flat_map(|g| &g.members)
                .find(|m| m.rtpi == id)
                .ok_or_else(|| failed(format!("no port with relative identifier {id}")))?;
            cfs::set_port_offline(member, true).map_err(|e| failed(e.to_string()))?;
            continue;
        }
        let group = groups
            .iter()
            .find(|g| g.id == Some(id))
            .ok_or_else(|| failed(format!("no target port group {id}")))?;
        cfs::set_access_state(dir, &group.name, state.code())
            .and_then(|()| {
                cfs::set_access_status(dir, &group.name, STATUS_ALTERED_BY_EXPLICIT_STPG)
            })
            .map_err(|e| failed(e.to_string()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tcmu_core::alua::GroupMember;

    fn group(name: &str, id: u16, members: &[(&str, &str, u16, Option<bool>)]) -> GroupInfo {
        GroupInfo {
            name: name.to_owned(),
            id: Some(id),
            access_state: 0,
            access_status: 0,
            access_type: cfs::ACCESS_IMPLICIT,
            supported_states: 0xdf,
            preferred: false,
            implicit_trans_secs: 0,
            nonop_delay_msecs: 100,
            trans_delay_msecs: 0,
            members: members
                .iter()
                .map(|&(fabric, wwn, rtpi, enabled)| GroupMember {
                    fabric: fabric.to_owned(),
                    wwn: wwn.to_owned(),
                    tpgt: 1,
                    lun: 0,
                    rtpi,
                    enabled,
                    lun_dir: Default::default(),
                })
                .collect(),
        }
    }

    #[test]
    fn the_enabled_port_names_the_path() {
        // ceph-iscsi on gateway 2: its own port enabled, gateway 1's not.
        let groups = [
            group(
                "ao",
                1,
                &[("iSCSI", "iqn.2003-01.org.x:gw", 1, Some(false))],
            ),
            group(
                "ano1",
                2,
                &[("iSCSI", "iqn.2003-01.org.x:gw", 2, Some(true))],
            ),
        ];
        assert_eq!(
            target_port(&groups),
            Some(TargetPortId {
                rtpi: 2,
                group: Some(2),
                protocol: Some(5)
            })
        );
        // tcm_loop has no enable: its port counts; SAS for a naa WWN.
        let groups = [group("ao", 1, &[("loopback", "naa.5001405abc", 3, None)])];
        assert_eq!(
            target_port(&groups),
            Some(TargetPortId {
                rtpi: 3,
                group: Some(1),
                protocol: Some(6)
            })
        );
        assert_eq!(target_port(&[group("empty", 4, &[])]), None);
    }

    #[test]
    fn protocols_by_fabric_and_wwn() {
        assert_eq!(protocol_identifier("iSCSI", "iqn.x"), Some(5));
        assert_eq!(
            protocol_identifier("qla2xxx", "21:00:00:24:ff:00:00:01"),
            Some(0)
        );
        assert_eq!(protocol_identifier("srpt", "fe80::1"), Some(4));
        assert_eq!(
            protocol_identifier("loopback", "fc.2100001b32000001"),
            Some(0)
        );
        assert_eq!(protocol_identifier("vhost", "naa.500140512345"), Some(6));
        assert_eq!(protocol_identifier("xen-pvscsi", "whatever"), None);
    }
}
