//! Per-device objects, `/org/kernel/TCMUService1/device/<hba>_<name>`
//! (see [`device_path`] for the escaping), interface
//! `org.kernel.TCMUService1.Device1`: the device's identity and its live
//! counters. Objects follow the daemon's [`DeviceTable`]; their
//! ObjectManager is `/org/kernel/TCMUService1/device`.

use std::collections::HashMap;

use tcmu_runtime::stats::LATENCY_BOUNDS_US;
use tcmu_runtime::StatsSnapshot;
use tracing::warn;
use zbus::{interface, Connection};

use super::names::device_path;
use crate::devices::{DeviceInfo, DeviceTable};

/// One device object. Counter properties read the live statistics on
/// every access and emit no change signals.
pub struct DeviceObject {
    info: DeviceInfo,
}

/// The histogram as `(upper bound in µs, count)` pairs, the last bound
/// `u64::MAX`.
fn histogram(snap: &StatsSnapshot) -> Vec<(u64, u64)> {
    LATENCY_BOUNDS_US
        .iter()
        .copied()
        .chain(std::iter::once(u64::MAX))
        .zip(snap.latency.iter().copied())
        .collect()
}

#[interface(name = "org.kernel.TCMUService1.Device1")]
impl DeviceObject {
    /// The configfs name (`<name>` in `user_<hba>/<name>`).
    #[zbus(property(emits_changed_signal = "const"))]
    fn name(&self) -> String {
        self.info.name.clone()
    }

    /// The HBA number (`<hba>` in `user_<hba>`).
    #[zbus(property(emits_changed_signal = "const"), name = "HBA")]
    fn hba(&self) -> u32 {
        self.info.hba
    }

    /// `dev_config`, `<subtype>/<cfgstring>`.
    #[zbus(property(emits_changed_signal = "const"))]
    fn config(&self) -> String {
        self.info.dev_config.clone()
    }

    /// Commands completed (any status).
    #[zbus(property(emits_changed_signal = "false"))]
    fn commands(&self) -> u64 {
        self.info.stats.snapshot().commands
    }

    /// READ commands completed with GOOD status.
    #[zbus(property(emits_changed_signal = "false"))]
    fn read_commands(&self) -> u64 {
        self.info.stats.snapshot().read_commands
    }

    /// WRITE commands completed with GOOD status.
    #[zbus(property(emits_changed_signal = "false"))]
    fn write_commands(&self) -> u64 {
        self.info.stats.snapshot().write_commands
    }

    /// Bytes read by READ commands completed with GOOD status.
    #[zbus(property(emits_changed_signal = "false"))]
    fn read_bytes(&self) -> u64 {
        self.info.stats.snapshot().read_bytes
    }

    /// Bytes written by WRITE commands completed with GOOD status.
    #[zbus(property(emits_changed_signal = "false"))]
    fn write_bytes(&self) -> u64 {
        self.info.stats.snapshot().write_bytes
    }

    /// Commands completed with a status other than GOOD.
    #[zbus(property(emits_changed_signal = "false"))]
    fn errors(&self) -> u64 {
        self.info.stats.snapshot().errors
    }

    /// Commands that ran past their time-out.
    #[zbus(property(emits_changed_signal = "false"))]
    fn timeouts(&self) -> u64 {
        self.info.stats.snapshot().timeouts
    }

    /// Commands aborted by a task management request.
    #[zbus(property(emits_changed_signal = "false"))]
    fn aborts(&self) -> u64 {
        self.info.stats.snapshot().aborts
    }

    /// Sum of all command latencies, in microseconds.
    #[zbus(property(emits_changed_signal = "false"))]
    fn latency_sum_microseconds(&self) -> u64 {
        self.info.stats.snapshot().latency_sum_us
    }

    /// Commands per latency bucket: `(upper bound in µs, count)`, the last
    /// bucket's bound `u64::MAX`; counts are not cumulative.
    #[zbus(property(emits_changed_signal = "false"))]
    fn latency_histogram(&self) -> Vec<(u64, u64)> {
        histogram(&self.info.stats.snapshot())
    }
}

/// Keeps `conn`'s device objects equal to `table`'s devices until the
/// connection goes away (the caller stops this future then).
pub async fn sync_devices(conn: Connection, table: DeviceTable) {
    let server = conn.object_server();
    let mut watch = table.subscribe();
    // Exported objects: path → UIO minor.
    let mut exported: HashMap<String, u32> = HashMap::new();
    loop {
        watch.borrow_and_update();
        let wanted: HashMap<String, DeviceInfo> = table
            .list()
            .into_iter()
            .map(|d| (device_path(d.hba, &d.name), d))
            .collect();
        let stale: Vec<String> = exported
            .iter()
            .filter(|(path, minor)| wanted.get(*path).map(|d| d.minor) != Some(**minor))
            .map(|(path, _)| path.clone())
            .collect();
        for path in stale {
            exported.remove(&path);
            if let Err(e) = server.remove::<DeviceObject, _>(path.as_str()).await {
                warn!("D-Bus: cannot remove {path}: {e}");
            }
        }
        for (path, info) in wanted {
            if exported.contains_key(&path) {
                continue;
            }
            let minor = info.minor;
            match server.at(path.as_str(), DeviceObject { info }).await {
                Ok(_) => {
                    exported.insert(path, minor);
                }
                Err(e) => warn!("D-Bus: cannot export {path}: {e}"),
            }
        }
        if watch.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tcmu_runtime::stats::LATENCY_BUCKETS;

    #[test]
    fn histogram_pairs_bounds_with_counts() {
        let mut snap = StatsSnapshot::default();
        snap.latency[0] = 3;
        snap.latency[LATENCY_BUCKETS - 1] = 1;
        let h = histogram(&snap);
        assert_eq!(h.len(), LATENCY_BUCKETS);
        assert_eq!(h[0], (10, 3));
        assert_eq!(h[LATENCY_BUCKETS - 1], (u64::MAX, 1));
    }
}
