//! ALUA from configfs: the device's target port groups as the SCSI layer
//! sees them, and SET TARGET PORT GROUPS written back.
//!
//! The kernel keeps a TCMU device's ALUA groups under
//! `<device>/alua/<group>/` and enforces their states itself (a command to
//! a standby group is refused before it reaches us); the daemon answers
//! REPORT and SET TARGET PORT GROUPS and the TPGS bits from those files.

use tcmu_core::alua::{self as cfs, GroupInfo};
use tcmu_core::configfs::{ConfigfsError, DeviceDir};
use tcmu_scsi::alua::{AccessState, AccessType, PortGroup, STATUS_ALTERED_BY_EXPLICIT_STPG};
use tcmu_scsi::Sense;

/// The device's port groups that have an ID, for the SCSI layer.
pub(crate) fn port_groups(dir: &DeviceDir) -> Result<Vec<PortGroup>, ConfigfsError> {
    Ok(cfs::read_groups(dir)?
        .iter()
        .filter_map(port_group)
        .collect())
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
