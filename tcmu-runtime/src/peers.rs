//! Every device this daemon serves, as other devices' EXTENDED COPY sees
//! them: found by NAA designator and asked to read or write over their
//! control channel, on their own worker thread (handlers are not `Send`).

use std::sync::{Arc, Mutex};

use tcmu_core::configfs::DeviceDir;
use tcmu_scsi::xcopy::NAA_LEN;
use tokio::sync::mpsc;

use crate::control::Control;

/// A served device, as other devices' copies see it.
#[derive(Debug, Clone)]
pub(crate) struct Peer {
    /// Unique among the devices of this daemon.
    pub id: u64,
    /// For logs.
    pub name: String,
    /// Where the current unit serial is read (it names the device).
    pub configfs: Option<DeviceDir>,
    /// The unit serial at open, used without configfs.
    pub serial: Option<String>,
    /// IEEE company ID of the NAA designator.
    pub company_id: u32,
    /// Logical block size.
    pub block_size: u32,
    /// The device task's control channel.
    pub control: mpsc::UnboundedSender<Control>,
}

impl Peer {
    fn naa(&self) -> [u8; NAA_LEN] {
        let serial = match &self.configfs {
            Some(dir) => dir.unit_serial().ok().flatten(),
            None => self.serial.clone(),
        };
        tcmu_scsi::vpd::naa_designator(self.company_id, serial.unwrap_or_default().as_bytes())
    }
}

/// Every device being served, shared by all workers.
#[derive(Debug, Clone, Default)]
pub(crate) struct Peers(Arc<Mutex<Vec<Peer>>>);

impl Peers {
    /// Registers a device.
    pub(crate) fn add(&self, peer: Peer) {
        if let Ok(mut all) = self.0.lock() {
            all.push(peer);
        }
    }

    /// Forgets device `id`.
    pub(crate) fn remove(&self, id: u64) {
        if let Ok(mut all) = self.0.lock() {
            all.retain(|p| p.id != id);
        }
    }

    /// The device other than `except` whose NAA designator is `naa`.
    pub(crate) fn find(&self, naa: &[u8; NAA_LEN], except: u64) -> Option<Peer> {
        let all = self.0.lock().ok()?.clone();
        all.into_iter().find(|p| p.id != except && p.naa() == *naa)
    }
}
