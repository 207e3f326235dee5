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
    /// and groups and their states change at any time.
    pub(crate) fn refresh_identity(&self) {
        let Some(dir) = &self.configfs else {
            return;
        };
        if let Ok(serial) = dir.unit_serial() {
            self.params.borrow_mut().unit_serial = serial;
        }
        match alua::port_groups(dir) {
            Ok(groups) => self.params.borrow_mut().port_groups = groups,
            Err(e) => debug!(device = %self.name, "no ALUA groups: {e}"),
        }
        if let Ok(group) = tcmu_core::alua::lu_group_id(dir) {
            self.params.borrow_mut().lu_group = group;
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
