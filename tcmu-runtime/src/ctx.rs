//! What every command of a device needs from it ([`DeviceCtx`]), shared by
//! the device task, its commands and other devices' EXTENDED COPY requests
//! on the same worker thread.

use std::cell::RefCell;

use tcmu_scsi::{DeviceParams, DeviceState, Sense};
use tracing::{debug, info};

use crate::alua;
use crate::capability::{Capability, Handler};
use crate::peers::Peers;
use crate::range_lock::RangeLocks;

/// Everything a command needs from its device.
pub(crate) struct DeviceCtx {
    /// Device name, for logs.
    pub name: String,
    /// The backend.
    pub handler: Handler,
    /// Static parameters (changed only by reconfiguration).
    pub params: RefCell<DeviceParams>,
    /// Mutable SCSI state (write cache, unit attentions).
    pub state: RefCell<DeviceState>,
    /// Where the unit serial number is read from, if anywhere.
    pub configfs: Option<tcmu_core::configfs::DeviceDir>,
    /// LBA range locks (COMPARE AND WRITE atomicity).
    pub locks: RangeLocks,
    /// This device's key in `peers`.
    pub id: u64,
    /// Every device of the daemon, for EXTENDED COPY.
    pub peers: Peers,
    /// Counters of completed commands.
    pub stats: std::sync::Arc<crate::stats::DeviceStats>,
    /// The kernel's per-command timeout, read at open; commands slower
    /// than this are counted as timeouts.
    pub cmd_time_out: Option<std::time::Duration>,
    /// The last settled (primary) ALUA state the handler reported (see
    /// [`DeviceCtx::note_alua_state`]).
    alua_state: std::cell::Cell<Option<tcmu_scsi::alua::AccessState>>,
}

impl DeviceCtx {
    /// The context of a device served by `handler`; the SCSI parameters
    /// advertise what the handler declared.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        name: String,
        mut handler: Handler,
        mut params: DeviceParams,
        state: DeviceState,
        configfs: Option<tcmu_core::configfs::DeviceDir>,
        id: u64,
        peers: Peers,
        cmd_time_out: Option<std::time::Duration>,
    ) -> Self {
        handler.adjust_params(&mut params);
        let ctx = Self {
            name,
            handler,
            params: RefCell::new(params),
            state: RefCell::new(state),
            configfs,
            locks: RangeLocks::default(),
            alua_state: std::cell::Cell::new(None),
            id,
            peers,
            stats: std::sync::Arc::default(),
            cmd_time_out,
        };
        ctx.advertise_capabilities();
        ctx
    }

    /// Makes the SCSI parameters (what the VPD pages report) say what the
    /// handler's active capabilities are.
    fn advertise_capabilities(&self) {
        self.params.borrow_mut().unmap = self.handler.unmap_params();
    }

    /// Re-reads what identifies the device — the unit serial number and
    /// the ALUA port groups — from configfs before a command that reports
    /// or uses them: targetcli sets the serial after the device is enabled,
    /// and groups and their states change at any time. The handler's
    /// [`alua_state`](crate::BlockHandler::alua_state), if it has one,
    /// overrides its own implicit group's state.
    pub(crate) fn refresh_identity(&self) {
        let Some(dir) = &self.configfs else {
            return;
        };
        if let Ok(serial) = dir.unit_serial() {
            self.params.borrow_mut().unit_serial = serial;
        }
        match alua::port_groups(dir) {
            Ok((mut groups, port)) => {
                if let Some(state) = self.handler.block().alua_state() {
                    tcmu_scsi::alua::set_local_state(&mut groups, state);
                }
                let mut params = self.params.borrow_mut();
                params.port_groups = groups;
                params.target_port = port;
            }
            Err(e) => debug!(device = %self.name, "no ALUA groups: {e}"),
        }
        if let Ok(group) = tcmu_core::alua::lu_group_id(dir) {
            self.params.borrow_mut().lu_group = group;
        }
    }

    /// Raises ASYMMETRIC ACCESS STATE CHANGED when the handler's
    /// [`alua_state`](crate::BlockHandler::alua_state) settled on another
    /// primary state (the writer moved here, or away), so the initiator
    /// asks REPORT TARGET PORT GROUPS again. Transitioning in between
    /// raises nothing: one unit attention per move. Called per command:
    /// for handlers without a state it is one call returning `None`.
    pub(crate) fn note_alua_state(&self) {
        let Some(now) = self.handler.block().alua_state() else {
            return;
        };
        if !now.is_primary() || self.alua_state.get() == Some(now) {
            return;
        }
        // The first time: against what RTPG reported from configfs.
        let before = self.alua_state.replace(Some(now)).or_else(|| {
            tcmu_scsi::alua::local_group(&self.params.borrow().port_groups).map(|g| g.state)
        });
        if before.is_some_and(|b| b != now) {
            self.stats.record_alua_change();
            info!(device = %self.name, "ALUA state of this gateway's group now {now:?}: unit attention ASYMMETRIC ACCESS STATE CHANGED");
            self.state.borrow_mut().unit_attention =
                Some(Sense::unit_attention_asymmetric_access_state_changed());
        }
    }

    /// Stops using a capability the handler declared, after one of its
    /// operations answered `Unsupported`: dispatch stops calling it, and
    /// the SCSI parameters the VPD pages are built from change with it, in
    /// this one step. Initiators learn of it from a unit attention
    /// (INQUIRY DATA HAS CHANGED). Returns whether it was still active.
    pub(crate) fn withdraw(&self, cap: Capability) -> bool {
        if !self.handler.withdraw(cap) {
            return false;
        }
        info!(device = %self.name, "handler does not support {cap} after all: no longer used or advertised");
        self.advertise_capabilities();
        self.state.borrow_mut().unit_attention = Some(Sense::unit_attention_inquiry_data_changed());
        true
    }
}
