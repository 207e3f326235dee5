//! The table of served devices, shared by the control loop (which fills
//! it) and the daemon's reporting surfaces (D-Bus objects, the metrics
//! file), which read it and watch it for changes.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use tcmu_runtime::DeviceStats;
use tokio::sync::watch;

/// What the reporting side knows of one served device.
#[derive(Debug, Clone)]
pub struct DeviceInfo {
    /// The UIO minor (`uioN`), the table's key.
    pub minor: u32,
    /// The HBA number in `user_<hba>`.
    pub hba: u32,
    /// The device's configfs name.
    pub name: String,
    /// `dev_config` as the kernel reports it (`file//path`).
    pub dev_config: String,
    /// The device's live counters.
    pub stats: Arc<DeviceStats>,
}

impl DeviceInfo {
    /// `user_<hba>/<name>`, the configfs path under `target/core`.
    #[allow(dead_code)] // for the metrics file (in progress)
    pub fn label(&self) -> String {
        format!("user_{}/{}", self.hba, self.name)
    }
}

/// Served devices by UIO minor; cloning shares the table.
#[derive(Debug, Clone)]
pub struct DeviceTable {
    devices: Arc<RwLock<BTreeMap<u32, DeviceInfo>>>,
    /// Bumped on every change, for watchers.
    generation: Arc<watch::Sender<u64>>,
}

impl Default for DeviceTable {
    fn default() -> Self {
        Self {
            devices: Arc::default(),
            generation: Arc::new(watch::channel(0).0),
        }
    }
}

impl DeviceTable {
    /// Adds (or replaces) a device.
    pub fn insert(&self, info: DeviceInfo) {
        if let Ok(mut d) = self.devices.write() {
            d.insert(info.minor, info);
        }
        self.generation.send_modify(|g| *g += 1);
    }

    /// Removes a device.
    pub fn remove(&self, minor: u32) {
        if let Ok(mut d) = self.devices.write() {
            d.remove(&minor);
        }
        self.generation.send_modify(|g| *g += 1);
    }

    /// Every served device, ordered by minor.
    pub fn list(&self) -> Vec<DeviceInfo> {
        self.devices
            .read()
            .map(|d| d.values().cloned().collect())
            .unwrap_or_default()
    }

    /// A receiver that sees a new value after every change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_remove_and_watch() {
        let t = DeviceTable::default();
        let mut rx = t.subscribe();
        t.insert(DeviceInfo {
            minor: 3,
            hba: 1,
            name: "d0".into(),
            dev_config: "ram/1M".into(),
            stats: Arc::default(),
        });
        assert!(rx.has_changed().unwrap());
        rx.mark_unchanged();
        assert_eq!(t.list()[0].label(), "user_1/d0");
        t.remove(3);
        assert!(rx.has_changed().unwrap());
        assert!(t.list().is_empty());
    }
}
