//! A device served by the real runtime over the simulated kernel, for
//! tests of handlers and of the runtime itself (feature `sim`).
//!
//! [`SimLun`] opens a device on [`Workers`] with a handler factory and
//! feeds it through `tcmu_core::sim::SimKernel`, which posts commands and
//! reaps completions the way `target_core_user` does. The simulated kernel
//! runs on the calling thread; the device task runs on its worker, as in
//! the daemon. This is for unit tests only: acceptance runs against the
//! real kernel.
//!
//! ```
//! # use std::sync::Arc;
//! # use tcmu_runtime::testing::{cdb, SimLun};
//! # use tcmu_runtime::{DeviceConfig, Workers};
//! # use tcmu_core::sim::SimData;
//! # fn demo(factory: Arc<dyn tcmu_runtime::HandlerFactory>) {
//! let workers = Workers::start(1).unwrap();
//! let mut lun = SimLun::open(&workers, factory, DeviceConfig::new("lun0", "", 1 << 20, 512)).unwrap();
//! let done = lun.run(&cdb::write10(0, 1), SimData::Out(vec![7; 512]));
//! assert_eq!(done.status, 0);
//! lun.close();
//! workers.shutdown();
//! # }
//! ```

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tcmu_core::configfs::DeviceDir;
use tcmu_core::sim::{SimCompletion, SimConfig, SimData, SimKernel};
use tcmu_scsi::DeviceParams;

use crate::device::RingSource;
use crate::error::DeviceError;
use crate::factory::{DeviceConfig, HandlerFactory, RunnerOptions};
use crate::handler::ReconfigRequest;
use crate::worker::{DeviceHandle, DeviceSpec, Workers};

/// How long [`SimLun::collect`] waits for completions.
pub const COLLECT_TIMEOUT: Duration = Duration::from_secs(10);

/// More about a simulated device than its [`DeviceConfig`] says.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct SimOptions {
    /// The simulated ring's geometry.
    pub ring: SimConfig,
    /// A configfs directory (a fake tree in a temporary folder) for the
    /// unit serial, ALUA groups and kept buffers.
    pub configfs: Option<DeviceDir>,
    /// The daemon's options from the configuration string.
    pub options: RunnerOptions,
}

impl SimOptions {
    /// With `configfs` as the device's configfs directory.
    pub fn with_configfs(mut self, configfs: Option<DeviceDir>) -> Self {
        self.configfs = configfs;
        self
    }

    /// With the daemon's `options`.
    pub fn with_options(mut self, options: RunnerOptions) -> Self {
        self.options = options;
        self
    }
}

/// One device served by the runtime, fed by a simulated kernel.
#[derive(Debug)]
pub struct SimLun {
    /// The simulated kernel: post commands, reap completions.
    pub kernel: SimKernel,
    handle: DeviceHandle,
}

impl SimLun {
    /// Opens `config` with `factory` on one of `workers`.
    pub fn open(
        workers: &Workers,
        factory: Arc<dyn HandlerFactory>,
        config: DeviceConfig,
    ) -> Result<Self, DeviceError> {
        Self::open_with(workers, factory, config, SimOptions::default())
    }

    /// Opens `config` with `factory` on one of `workers`, as `options` say.
    pub fn open_with(
        workers: &Workers,
        factory: Arc<dyn HandlerFactory>,
        config: DeviceConfig,
        options: SimOptions,
    ) -> Result<Self, DeviceError> {
        let (kernel, dev) = SimKernel::new(options.ring).map_err(|source| DeviceError::Ring {
            path: "simulated ring".into(),
            source,
        })?;
        let block_size = config.block_size.max(1);
        let spec = DeviceSpec {
            params: DeviceParams::new(block_size, config.size / u64::from(block_size)),
            config,
            ring: RingSource::Mapped {
                map: dev.map,
                doorbell: dev.doorbell,
            },
            configfs: options.configfs,
            options: options.options,
        };
        let handle = futures::executor::block_on(workers.open(spec, factory))?;
        Ok(Self { kernel, handle })
    }

    /// The device, as the control side sees it.
    pub fn handle(&self) -> &DeviceHandle {
        &self.handle
    }

    /// Posts a command and rings the doorbell; returns its command id.
    ///
    /// # Panics
    /// When the ring has no room.
    pub fn post(&mut self, cdb: &[u8], data: SimData) -> u16 {
        #[allow(clippy::expect_used)]
        let id = self
            .kernel
            .post(cdb, data)
            .expect("the simulated ring has room");
        self.notify();
        id
    }

    /// Rings the doorbell.
    ///
    /// # Panics
    /// When the simulated doorbell fails.
    pub fn notify(&self) {
        #[allow(clippy::expect_used)]
        self.kernel.notify().expect("ring the simulated doorbell");
    }

    /// Waits (at most [`COLLECT_TIMEOUT`]) for `n` completions, in the
    /// order reaped.
    ///
    /// # Panics
    /// When fewer arrive in time.
    pub fn collect(&mut self, n: usize) -> Vec<SimCompletion> {
        #[allow(clippy::expect_used)]
        self.kernel
            .reap_at_least(n, COLLECT_TIMEOUT)
            .expect("completions in time")
    }

    /// Posts one command and waits for its completion.
    pub fn run(&mut self, cdb: &[u8], data: SimData) -> SimCompletion {
        self.post(cdb, data);
        self.collect(1).remove(0)
    }

    /// Applies a configuration change, as a netlink RECONFIG_DEVICE does.
    pub fn reconfig(&self, req: ReconfigRequest) -> Result<(), DeviceError> {
        futures::executor::block_on(self.handle.reconfig(req))
    }

    /// Closes the device (its commands in flight finish first); dropping
    /// a `SimLun` does the same.
    pub fn close(self) {
        drop(self);
    }
}

impl Drop for SimLun {
    fn drop(&mut self) {
        futures::executor::block_on(self.handle.close());
    }
}

/// CDBs for tests.
pub mod cdb {
    /// READ (10) of `blocks` blocks at `lba`.
    pub fn read10(lba: u32, blocks: u16) -> [u8; 10] {
        rw10(0x28, lba, blocks)
    }

    /// WRITE (10) of `blocks` blocks at `lba`.
    pub fn write10(lba: u32, blocks: u16) -> [u8; 10] {
        rw10(0x2a, lba, blocks)
    }

    /// A 10-byte CDB of the READ/WRITE (10) shape with operation code `op`.
    pub fn rw10(op: u8, lba: u32, blocks: u16) -> [u8; 10] {
        let mut c = [op, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        c[2..6].copy_from_slice(&lba.to_be_bytes());
        c[7..9].copy_from_slice(&blocks.to_be_bytes());
        c
    }

    /// A 16-byte CDB of the READ/WRITE (16) shape with operation code
    /// `op`, byte 1 `b1`.
    pub fn rw16(op: u8, b1: u8, lba: u64, blocks: u32) -> [u8; 16] {
        let mut c = [0u8; 16];
        c[0] = op;
        c[1] = b1;
        c[2..10].copy_from_slice(&lba.to_be_bytes());
        c[10..14].copy_from_slice(&blocks.to_be_bytes());
        c
    }

    /// TEST UNIT READY.
    pub const TEST_UNIT_READY: [u8; 6] = [0; 6];

    /// SYNCHRONIZE CACHE (10) of the whole device.
    pub const SYNCHRONIZE_CACHE_10: [u8; 10] = [0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0];

    /// INQUIRY of VPD page `page`, at most `alloc_len` bytes.
    pub fn inquiry_vpd(page: u8, alloc_len: u16) -> [u8; 6] {
        let len = alloc_len.to_be_bytes();
        [0x12, 1, page, len[0], len[1], 0]
    }

    /// UNMAP of the `(lba, blocks)` ranges: the CDB and its parameter list
    /// (the data-out of the command).
    pub fn unmap(ranges: &[(u64, u32)]) -> ([u8; 10], Vec<u8>) {
        let descriptors = 16 * ranges.len();
        let mut list = vec![0u8; 8 + descriptors];
        list[0..2].copy_from_slice(&((6 + descriptors) as u16).to_be_bytes());
        list[2..4].copy_from_slice(&(descriptors as u16).to_be_bytes());
        for (i, (lba, blocks)) in ranges.iter().enumerate() {
            let d = &mut list[8 + 16 * i..][..16];
            d[0..8].copy_from_slice(&lba.to_be_bytes());
            d[8..12].copy_from_slice(&blocks.to_be_bytes());
        }
        let len = (list.len() as u16).to_be_bytes();
        ([0x42, 0, 0, 0, 0, 0, 0, len[0], len[1], 0], list)
    }
}

/// The sense key, ASC and ASCQ of a completion with fixed-format sense
/// (zeroes when it has none).
pub fn sense_key_asc(c: &SimCompletion) -> (u8, u8, u8) {
    match c.sense.get(..14) {
        Some(s) => (s[2] & 0xf, s[12], s[13]),
        None => (0, 0, 0),
    }
}

/// Panics unless `c` is GOOD, naming the sense it carries instead.
#[track_caller]
pub fn assert_good(c: &SimCompletion) {
    assert_eq!(
        c.status,
        0,
        "expected GOOD, got status {:#04x} with sense {:02x?}",
        c.status,
        sense_key_asc(c)
    );
}

/// Panics unless `c` is CHECK CONDITION with sense key, ASC and ASCQ
/// `want`.
#[track_caller]
pub fn assert_check(c: &SimCompletion, want: (u8, u8, u8)) {
    assert_eq!(
        c.status, 2,
        "expected CHECK CONDITION {want:02x?}, got status {:#04x}",
        c.status
    );
    assert_eq!(sense_key_asc(c), want, "sense key, ASC, ASCQ");
}

/// A path under the temporary directory, unique to this process and call,
/// whose file (if any) is removed when the value is dropped: the backing
/// file of a handler under test.
#[derive(Debug)]
pub struct TempPath(PathBuf);

impl TempPath {
    /// A new path named after `prefix` and `name` (`name` ends the file
    /// name, so it may carry an extension); nothing is created.
    pub fn new(prefix: &str, name: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("{prefix}-{}-{n}-{name}", std::process::id()));
        let _ = std::fs::remove_file(&p);
        Self(p)
    }

    /// The path.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// The path as a string, for a cfgstring (temporary paths are UTF-8
    /// in tests; a path that is not is shown lossily).
    pub fn cfg(&self) -> String {
        self.0.to_string_lossy().into_owned()
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
