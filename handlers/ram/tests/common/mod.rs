//! A `ram` device served by the real runtime (`Workers`, one worker) over
//! the simulated kernel, driven as fast as it answers: shared by the
//! micro-benchmark (`benches/ring.rs`) and the allocation test
//! (`tests/alloc_per_cmd.rs`).
//!
//! The simulated kernel runs on the calling thread and busy-polls for
//! completions (the real kernel reaps them inside the daemon's doorbell
//! write, so it never sleeps there either); the worker sleeps on its
//! doorbell like the daemon does.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tcmu_core::sim::SimData;
use tcmu_handler_ram::RamFactory;
use tcmu_runtime::testing::SimLun;
use tcmu_runtime::{DeviceConfig, Handler, HandlerError, HandlerFactory, Workers};

/// Logical block size of the device (a user backstore's default).
pub const BLOCK: u32 = 512;
/// Bytes per READ/WRITE.
pub const IO_BYTES: usize = 4096;
/// The 4k slots the commands cycle through (4 MiB, written once at start
/// so that neither reads nor writes allocate store chunks later).
pub const SLOTS: u32 = 1024;
/// Device size: the working set.
const DEV_BYTES: u64 = SLOTS as u64 * IO_BYTES as u64;

/// The command a run repeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// TEST UNIT READY: no data, answered by the generic layer.
    Tur,
    /// READ(10) of 4 KiB.
    Read,
    /// WRITE(10) of 4 KiB.
    Write,
}

impl Op {
    /// Name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Op::Tur => "tur",
            Op::Read => "read4k",
            Op::Write => "write4k",
        }
    }
}

/// [`RamFactory`], plus: the thread that opens the device (its worker)
/// has its heap allocations counted by [`tcmu_core::alloc_count::CountingAlloc`].
struct CountedRam;

#[async_trait(?Send)]
impl HandlerFactory for CountedRam {
    fn subtype(&self) -> &str {
        RamFactory.subtype()
    }
    fn cfg_desc(&self) -> &str {
        RamFactory.cfg_desc()
    }
    fn check_config(&self, cfgstring: &str) -> Result<(), HandlerError> {
        RamFactory.check_config(cfgstring)
    }
    async fn open(&self, config: &DeviceConfig) -> Result<Handler, HandlerError> {
        tcmu_core::alloc_count::count_this_thread();
        RamFactory.open(config).await
    }
}

/// One `ram` device on one worker, and the simulated kernel feeding it.
pub struct Rig {
    lun: Option<SimLun>,
    workers: Option<Workers>,
    cdb: [u8; 10],
    payload: Vec<u8>,
    slot: u32,
}

impl Rig {
    /// Starts one worker, opens the device and writes the whole working
    /// set once.
    pub fn new() -> Self {
        let workers = Workers::start(1).unwrap();
        let config = DeviceConfig::new("bench0", "", DEV_BYTES, BLOCK).with_write_cache(true);
        let lun =
            SimLun::open(&workers, Arc::new(CountedRam), config).expect("open the ram device");
        let mut rig = Self {
            lun: Some(lun),
            workers: Some(workers),
            cdb: [0; 10],
            payload: (0..IO_BYTES).map(|i| (i * 7) as u8).collect(),
            slot: 0,
        };
        rig.run(Op::Write, 32, u64::from(SLOTS));
        rig
    }

    fn kernel(&mut self) -> &mut tcmu_core::sim::SimKernel {
        &mut self.lun.as_mut().expect("open until dropped").kernel
    }

    /// Posts the next command of `op` (the next 4k slot for READ/WRITE).
    fn post(&mut self, op: Op) {
        let (opcode, data) = match op {
            Op::Tur => (0x00, SimData::None),
            Op::Read => (0x28, SimData::In(IO_BYTES)),
            Op::Write => (0x2a, SimData::Out(self.payload.clone())),
        };
        let len = if op == Op::Tur {
            self.cdb = [0; 10];
            6
        } else {
            let lba = self.slot * (IO_BYTES as u32 / BLOCK);
            self.slot = (self.slot + 1) % SLOTS;
            self.cdb = [opcode, 0, 0, 0, 0, 0, 0, 0, 0, 0];
            self.cdb[2..6].copy_from_slice(&lba.to_be_bytes());
            self.cdb[7..9].copy_from_slice(&((IO_BYTES as u32 / BLOCK) as u16).to_be_bytes());
            10
        };
        let cdb = self.cdb;
        self.kernel()
            .post(&cdb[..len], data)
            .expect("ring has room");
    }

    /// Runs `n` commands of `op`, keeping `depth` in flight (posting
    /// whenever one completes), and returns the wall time it took.
    pub fn run(&mut self, op: Op, depth: usize, n: u64) -> Duration {
        let start = Instant::now();
        let mut posted = 0u64;
        let mut done = 0u64;
        while posted < n && self.kernel().inflight() < depth {
            self.post(op);
            posted += 1;
        }
        self.kernel().notify().unwrap();
        let mut idle = 0u32;
        while done < n {
            let reaped = self.kernel().reap().unwrap();
            if reaped.is_empty() {
                idle += 1;
                if idle % 64 == 0 {
                    std::thread::yield_now();
                } else {
                    std::hint::spin_loop();
                }
                assert!(
                    idle < 50_000_000,
                    "no completion: {done} of {n} done, {} in flight",
                    self.kernel().inflight()
                );
                continue;
            }
            idle = 0;
            for c in &reaped {
                assert_eq!(c.status, 0, "{} failed: {c:?}", op.name());
            }
            done += reaped.len() as u64;
            let mut more = false;
            while posted < n && self.kernel().inflight() < depth {
                self.post(op);
                posted += 1;
                more = true;
            }
            if more {
                self.kernel().notify().unwrap();
            }
        }
        let elapsed = start.elapsed();
        self.kernel().take_kick();
        elapsed
    }

    /// Heap allocations per command on the device's worker thread, over
    /// `n` commands of `op` at `depth` after a warm-up.
    pub fn allocations_per_command(&mut self, op: Op, depth: usize, n: u64) -> f64 {
        self.run(op, depth, n / 4 + 64);
        let before = tcmu_core::alloc_count::allocations();
        self.run(op, depth, n);
        (tcmu_core::alloc_count::allocations() - before) as f64 / n as f64
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        if let Some(lun) = self.lun.take() {
            lun.close();
        }
        if let Some(w) = self.workers.take() {
            w.shutdown();
        }
    }
}
