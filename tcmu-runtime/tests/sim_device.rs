//! The runtime end to end against the simulated kernel: commands go through
//! the ring, the generic SCSI layer and a handler, and come back as
//! completions, out of order and batched.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::cell::RefCell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tcmu_core::buf;
use tcmu_core::sim::{SimCompletion, SimData, SimKernel};
use tcmu_core::DataBuf;
use tcmu_runtime::tcmu_scsi::UnmapParams;
use tcmu_runtime::testing::cdb::{self, rw10, rw16 as cdb16};
use tcmu_runtime::testing::{sense_key_asc, SimLun, SimOptions};
use tcmu_runtime::{
    BlockError, BlockHandler, DeviceConfig, Handler, HandlerError, HandlerFactory, Unmap, Workers,
};

const BS: u64 = 512;
const BLOCKS: u64 = 2048;
const VERY_SLOW_LBA: u64 = 1777;
const HUNG_LBA: u64 = 1900;
/// Reads and writes of these blocks take the synchronous fast path
/// (`read_now`, `write_now`); everything else the async one.
const FAST_LBAS: std::ops::Range<u64> = 1500..1700;
/// A fast-path read here panics.
const PANIC_NOW_LBA: u64 = 1650;
/// Transfers served by the fast path, from any worker thread.
static SERVED_NOW: AtomicUsize = AtomicUsize::new(0);

/// A memory disk whose reads of LBA 0 are slow (to force out-of-order
/// completion), whose reads at LBA 1000 fail (at 1001: busy), whose reads at
/// [`VERY_SLOW_LBA`] outlast a one-second `cmd_time_out` and whose reads at
/// [`HUNG_LBA`] never finish.
struct MemDisk(RefCell<Vec<u8>>);

#[async_trait(?Send)]
impl BlockHandler for MemDisk {
    async fn read(&self, offset: u64, mut bufs: Vec<DataBuf>) -> Result<(), BlockError> {
        if offset == 1000 * BS {
            return Err(BlockError::Io(std::io::Error::other("injected")));
        }
        if offset == 1001 * BS {
            return Err(BlockError::Busy("injected".into()));
        }
        if offset == HUNG_LBA * BS {
            // Holds its buffers until cancelled.
            let _bufs = bufs;
            std::future::pending::<()>().await;
            return Ok(());
        }
        if offset == 0 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        if offset == VERY_SLOW_LBA * BS {
            tokio::time::sleep(Duration::from_millis(1100)).await;
        }
        let d = self.0.borrow();
        let at = offset as usize;
        let len = tcmu_core::buf::total_len(&bufs);
        tcmu_core::buf::scatter(&mut bufs, &d[at..at + len]);
        Ok(())
    }
    async fn write(&self, offset: u64, bufs: Vec<DataBuf>) -> Result<(), BlockError> {
        let bytes = tcmu_core::buf::gather(&bufs, usize::MAX);
        let at = offset as usize;
        self.0.borrow_mut()[at..at + bytes.len()].copy_from_slice(&bytes);
        Ok(())
    }
    async fn flush(&self) -> Result<(), BlockError> {
        Ok(())
    }
    fn read_now(&self, offset: u64, bufs: &mut [DataBuf]) -> Option<Result<(), BlockError>> {
        if !FAST_LBAS.contains(&(offset / BS)) {
            return None;
        }
        assert_ne!(offset / BS, PANIC_NOW_LBA, "injected panic in read_now");
        let d = self.0.borrow();
        let at = offset as usize;
        let len = tcmu_core::buf::total_len(bufs);
        tcmu_core::buf::scatter(bufs, &d[at..at + len]);
        SERVED_NOW.fetch_add(1, Ordering::Relaxed);
        Some(Ok(()))
    }
    fn write_now(&self, offset: u64, bufs: &[DataBuf]) -> Option<Result<(), BlockError>> {
        if !FAST_LBAS.contains(&(offset / BS)) {
            return None;
        }
        let bytes = tcmu_core::buf::gather(bufs, usize::MAX);
        let at = offset as usize;
        self.0.borrow_mut()[at..at + bytes.len()].copy_from_slice(&bytes);
        SERVED_NOW.fetch_add(1, Ordering::Relaxed);
        Some(Ok(()))
    }
    fn cmd_timed_out(&self, cdb: &[u8]) {
        if let Ok(mut all) = TIMED_OUT_ALL.lock() {
            all.push(cdb.to_vec());
        }
    }
}

/// Only thin provisioning is native: WRITE SAME, COMPARE AND WRITE, VERIFY
/// and FORMAT UNIT go through the runtime's generic fallbacks.
#[async_trait(?Send)]
impl Unmap for MemDisk {
    async fn unmap(&self, offset: u64, len: u64) -> Result<(), BlockError> {
        self.0.borrow_mut()[offset as usize..(offset + len) as usize].fill(0);
        Ok(())
    }
    fn unmap_params(&self) -> UnmapParams {
        UnmapParams {
            reads_zeroes: true,
            ..UnmapParams::default()
        }
    }
}

/// Every CDB reported through `cmd_timed_out`, from any worker thread.
static TIMED_OUT_ALL: std::sync::Mutex<Vec<Vec<u8>>> = std::sync::Mutex::new(Vec::new());

struct MemFactory;

#[async_trait(?Send)]
impl HandlerFactory for MemFactory {
    fn subtype(&self) -> &str {
        "mem"
    }
    fn cfg_desc(&self) -> &str {
        "nothing"
    }
    fn check_config(&self, _: &str) -> Result<(), HandlerError> {
        Ok(())
    }
    async fn open(&self, c: &DeviceConfig) -> Result<Handler, HandlerError> {
        Ok(
            Handler::new(MemDisk(RefCell::new(vec![0; c.size as usize])))
                .unmap()
                .volatile_write_cache()
                .build(),
        )
    }
}

/// One `mem` device on its own worker.
struct Rig {
    lun: SimLun,
    handle: tcmu_runtime::DeviceHandle,
    _workers: Workers,
}

impl Rig {
    fn new() -> Self {
        Self::with_configfs(None)
    }

    fn with_configfs(configfs: Option<tcmu_core::configfs::DeviceDir>) -> Self {
        Self::with(configfs, Default::default())
    }

    fn with(
        configfs: Option<tcmu_core::configfs::DeviceDir>,
        options: tcmu_runtime::RunnerOptions,
    ) -> Self {
        let workers = Workers::start(1).unwrap();
        let lun = SimLun::open_with(
            &workers,
            Arc::new(MemFactory),
            DeviceConfig::new("sim0", "", BS * BLOCKS, BS as u32).with_write_cache(true),
            SimOptions::default()
                .with_configfs(configfs)
                .with_options(options),
        )
        .unwrap();
        let handle = lun.handle().clone();
        Self {
            lun,
            handle,
            _workers: workers,
        }
    }

    /// Rings, and collects `n` completions (in the order reaped).
    fn collect(&mut self, n: usize) -> Vec<SimCompletion> {
        self.lun.notify();
        self.lun.collect(n)
    }

    fn run(&mut self, cdb: &[u8], data: SimData) -> SimCompletion {
        self.lun.run(cdb, data)
    }

    fn kernel(&mut self) -> &mut SimKernel {
        &mut self.lun.kernel
    }

    fn close(self) {
        self.lun.close();
    }
}

#[test]
fn write_then_read_back() {
    let mut rig = Rig::new();
    let data: Vec<u8> = (0..8 * BS as usize).map(|i| (i * 7) as u8).collect();
    let w = rig.run(&rw10(0x2a, 100, 8), SimData::Out(data.clone()));
    assert_eq!(w.status, 0);
    let r = rig.run(&rw10(0x28, 100, 8), SimData::In(data.len()));
    assert_eq!(r.status, 0);
    assert_eq!(r.data_in, data);
    rig.close();
}

#[test]
fn the_synchronous_fast_path_serves_and_fails_alone() {
    let mut rig = Rig::new();
    let data: Vec<u8> = (0..8 * BS as usize).map(|i| (i * 13) as u8).collect();
    let before = SERVED_NOW.load(Ordering::Relaxed);
    let w = rig.run(&rw10(0x2a, 1600, 8), SimData::Out(data.clone()));
    assert_eq!(w.status, 0);
    let r = rig.run(&rw10(0x28, 1600, 8), SimData::In(data.len()));
    assert_eq!(r.status, 0);
    assert_eq!(r.data_in, data);
    assert!(
        SERVED_NOW.load(Ordering::Relaxed) >= before + 2,
        "the write and the read took the fast path"
    );
    // The same bytes through the async path (outside FAST_LBAS).
    let w = rig.run(&rw10(0x2a, 200, 8), SimData::Out(data.clone()));
    assert_eq!(w.status, 0);
    let r = rig.run(&rw10(0x28, 200, 8), SimData::In(data.len()));
    assert_eq!(r.data_in, data);
    // A panic in read_now fails its command only.
    let c = rig.run(&rw10(0x28, PANIC_NOW_LBA as u32, 1), SimData::In(512));
    assert_eq!(c.status, 2);
    assert_eq!(sense_key_asc(&c), (4, 0x44, 0), "INTERNAL TARGET FAILURE");
    let r = rig.run(&rw10(0x28, 1600, 8), SimData::In(data.len()));
    assert_eq!(r.data_in, data);
    rig.close();
}

#[test]
fn emulated_answers_are_short_and_zero_filled() {
    let mut rig = Rig::new();
    // INQUIRY with a 255-byte allocation: 36 bytes of answer, READ_LEN set.
    let c = rig.run(&[0x12, 0, 0, 0, 255, 0], SimData::In(255));
    assert_eq!(c.status, 0);
    assert_eq!(c.read_len, Some(36));
    assert_eq!(&c.data_in[8..15], b"LIO-ORG");
    // READ CAPACITY(10)
    let c = rig.run(&[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], SimData::In(8));
    assert_eq!(c.status, 0);
    assert_eq!(c.data_in, [0, 0, 0x07, 0xff, 0, 0, 2, 0]);
}

#[test]
fn errors_become_sense() {
    let mut rig = Rig::new();
    let c = rig.run(&rw10(0x28, BLOCKS as u32 - 1, 2), SimData::In(1024));
    assert_eq!(c.status, 2);
    assert_eq!(sense_key_asc(&c), (5, 0x21, 0));
    let c = rig.run(&rw10(0x28, 1000, 1), SimData::In(512));
    assert_eq!(c.status, 2);
    assert_eq!(sense_key_asc(&c), (3, 0x11, 0), "MEDIUM ERROR on read");
    let c = rig.run(&rw10(0x28, 1001, 1), SimData::In(512));
    assert_eq!(c.status, 0x08, "BUSY, no sense");
    assert_eq!(sense_key_asc(&c), (0, 0, 0));
    let c = rig.run(&[0xee, 0, 0, 0, 0, 0, 0, 0, 0, 0], SimData::None);
    assert_eq!(sense_key_asc(&c), (5, 0x20, 0), "invalid opcode");
}

#[test]
fn completions_come_back_out_of_order() {
    let mut rig = Rig::new();
    let slow = rig
        .kernel()
        .post(&rw10(0x28, 0, 1), SimData::In(512))
        .unwrap();
    let fast: Vec<u16> = (0..8)
        .map(|i| {
            rig.kernel()
                .post(&rw10(0x28, 10 + i, 1), SimData::In(512))
                .unwrap()
        })
        .collect();
    let done = rig.collect(9);
    assert_eq!(done.last().unwrap().cmd_id, slow, "slow read finished last");
    let mut ids: Vec<u16> = done[..8].iter().map(|c| c.cmd_id).collect();
    ids.sort_unstable();
    assert_eq!(ids, fast);
    assert!(done.iter().all(|c| c.status == 0));
}

#[test]
fn unmap_zeroes_blocks() {
    let mut rig = Rig::new();
    rig.run(&rw10(0x2a, 5, 1), SimData::Out(vec![0xff; 512]));
    let (unmap, list) = cdb::unmap(&[(5, 1)]);
    let c = rig.run(&unmap, SimData::Out(list));
    assert_eq!(c.status, 0, "sense {:?}", &c.sense[..18]);
    let r = rig.run(&rw10(0x28, 5, 1), SimData::In(512));
    assert_eq!(r.data_in, vec![0u8; 512]);
}

#[test]
fn many_commands_through_a_small_ring() {
    let mut rig = Rig::new();
    for round in 0..50u32 {
        let data = vec![round as u8; 4096];
        rig.run(&rw10(0x2a, round * 8, 8), SimData::Out(data.clone()));
        let r = rig.run(&rw10(0x28, round * 8, 8), SimData::In(4096));
        assert_eq!(r.data_in, data);
    }
    let _ = buf::total_len(&[]);
}

#[test]
fn longer_buffers_than_the_cdb_get_zeroes_and_a_residual() {
    let mut rig = Rig::new();
    rig.run(&rw10(0x2a, 9, 1), SimData::Out(vec![0x5a; 512]));
    // The simulator fills data-in buffers with stale 0xa5 bytes first.
    let r = rig.run(&rw10(0x28, 9, 1), SimData::In(4096));
    assert_eq!(r.status, 0);
    assert_eq!(r.read_len, Some(512));
    assert_eq!(r.data_in, vec![0x5a; 512]);
}

#[test]
fn compare_and_write_by_fallback() {
    let mut rig = Rig::new();
    rig.run(&rw10(0x2a, 20, 1), SimData::Out(vec![1; 512]));
    let caw = {
        let mut c = vec![0u8; 16];
        c[0] = 0x89;
        c[2..10].copy_from_slice(&20u64.to_be_bytes());
        c[13] = 1;
        c
    };
    // Equal: the second half is written.
    let mut out = vec![1u8; 512];
    out.extend(vec![2u8; 512]);
    let c = rig.run(&caw, SimData::Out(out));
    assert_eq!(c.status, 0, "sense {:?}", &c.sense[..18]);
    let r = rig.run(&rw10(0x28, 20, 1), SimData::In(512));
    assert_eq!(r.data_in, vec![2u8; 512]);
    // Different at byte 100: MISCOMPARE, INFORMATION = 100, nothing written.
    let mut out = vec![2u8; 512];
    out[100] = 9;
    out.extend(vec![3u8; 512]);
    let c = rig.run(&caw, SimData::Out(out));
    assert_eq!(c.status, 2);
    assert_eq!(sense_key_asc(&c), (0x0e, 0x1d, 0));
    assert_eq!(c.sense[0] & 0x80, 0x80, "VALID");
    assert_eq!(&c.sense[3..7], &100u32.to_be_bytes());
    let r = rig.run(&rw10(0x28, 20, 1), SimData::In(512));
    assert_eq!(r.data_in, vec![2u8; 512]);
}

#[test]
fn verify_compares_data() {
    let mut rig = Rig::new();
    let data: Vec<u8> = (0..1024).map(|i| (i % 251) as u8).collect();
    rig.run(&rw10(0x2a, 30, 2), SimData::Out(data.clone()));
    // BYTCHK=1, equal.
    let mut v = rw10(0x2f, 30, 2);
    v[1] = 0x02;
    assert_eq!(rig.run(&v, SimData::Out(data.clone())).status, 0);
    // BYTCHK=1, different in the second block.
    let mut bad = data.clone();
    bad[700] ^= 1;
    let c = rig.run(&v, SimData::Out(bad));
    assert_eq!(sense_key_asc(&c), (0x0e, 0x1d, 0));
    assert_eq!(&c.sense[3..7], &700u32.to_be_bytes());
    // BYTCHK=3: one block compared with each.
    rig.run(&rw10(0x2a, 40, 3), SimData::Out(vec![7; 1536]));
    let mut v = rw10(0x2f, 40, 3);
    v[1] = 0x06;
    assert_eq!(rig.run(&v, SimData::Out(vec![7; 512])).status, 0);
    let c = rig.run(&v, SimData::Out(vec![8; 512]));
    assert_eq!(sense_key_asc(&c), (0x0e, 0x1d, 0));
}

#[test]
fn write_same_by_fallback_and_format() {
    let mut rig = Rig::new();
    // WRITE SAME(16) of a pattern over 300 blocks, without native support.
    let block: Vec<u8> = (0..512).map(|i| i as u8).collect();
    let c = rig.run(&cdb16(0x93, 0, 100, 300), SimData::Out(block.clone()));
    assert_eq!(c.status, 0, "sense {:?}", &c.sense[..18]);
    let r = rig.run(&rw10(0x28, 399, 1), SimData::In(512));
    assert_eq!(r.data_in, block);
    // FORMAT UNIT leaves every block reading zeroes.
    assert_eq!(rig.run(&[0x04, 0, 0, 0, 0, 0], SimData::None).status, 0);
    let r = rig.run(&rw10(0x28, 100, 8), SimData::In(4096));
    assert_eq!(r.data_in, vec![0; 4096]);
}

#[test]
fn lba_status_without_handler_support_is_all_mapped() {
    let mut rig = Rig::new();
    let c = rig.run(&cdb16(0x9e, 0x12, 2000, 64), SimData::In(64));
    assert_eq!(c.status, 0);
    assert_eq!(&c.data_in[..4], &[0, 0, 0, 20]);
    assert_eq!(&c.data_in[8..16], &2000u64.to_be_bytes());
    assert_eq!(&c.data_in[16..20], &48u32.to_be_bytes());
    assert_eq!(c.data_in[20], 0, "mapped");
    assert_eq!(c.read_len, Some(24));
}

/// An EXTENDED COPY (LID1) parameter list with one target (this device,
/// named by `naa`) and one block-to-block segment.
fn xcopy_list(naa: &[u8; 16], list_id: u8, blocks: u16, src: u64, dst: u64) -> Vec<u8> {
    let mut p = vec![0u8; 16];
    p[0] = list_id;
    p[2..4].copy_from_slice(&32u16.to_be_bytes());
    p[8..12].copy_from_slice(&28u32.to_be_bytes());
    let mut t = vec![0u8; 32];
    t[0] = 0xe4;
    t[4..8].copy_from_slice(&[0x01, 0x03, 0x00, 0x10]);
    t[8..24].copy_from_slice(naa);
    t[29..32].copy_from_slice(&[0, 2, 0]);
    p.extend(t);
    let mut s = vec![0u8; 28];
    s[0] = 0x02;
    s[3] = 0x18;
    s[10..12].copy_from_slice(&blocks.to_be_bytes());
    s[12..20].copy_from_slice(&src.to_be_bytes());
    s[20..28].copy_from_slice(&dst.to_be_bytes());
    p.extend(s);
    p
}

#[test]
fn extended_copy_within_the_device() {
    let mut rig = Rig::new();
    let data: Vec<u8> = (0..4 * 512).map(|i| (i % 253) as u8).collect();
    rig.run(&rw10(0x2a, 50, 4), SimData::Out(data.clone()));
    let naa = tcmu_runtime::tcmu_scsi::vpd::naa_designator(0x001405, b"");
    let list = xcopy_list(&naa, 7, 4, 50, 1500);
    let mut cdb = vec![0u8; 16];
    cdb[0] = 0x83;
    cdb[10..14].copy_from_slice(&(list.len() as u32).to_be_bytes());
    let c = rig.run(&cdb, SimData::Out(list));
    assert_eq!(c.status, 0, "sense {:?}", &c.sense[..18]);
    let r = rig.run(&rw10(0x28, 1500, 4), SimData::In(data.len()));
    assert_eq!(r.data_in, data);
    // RECEIVE COPY RESULTS, COPY STATUS of list 7: completed, 1 segment,
    // 2048 bytes.
    let mut rcr = vec![0u8; 16];
    rcr[0] = 0x84;
    rcr[2] = 7;
    rcr[13] = 12;
    let c = rig.run(&rcr, SimData::In(12));
    assert_eq!(c.status, 0);
    assert_eq!(c.data_in, [0, 0, 0, 8, 1, 0, 1, 0, 0, 0, 8, 0]);
    // A copy past the end aborts with COPY TARGET DEVICE NOT REACHABLE.
    let list = xcopy_list(&naa, 8, 4, 50, BLOCKS - 2);
    let mut cdb = vec![0u8; 16];
    cdb[0] = 0x83;
    cdb[10..14].copy_from_slice(&(list.len() as u32).to_be_bytes());
    let c = rig.run(&cdb, SimData::Out(list));
    assert_eq!(sense_key_asc(&c), (0x0a, 0x0d, 0x02));
    // Another device's NAA is not reachable.
    let other = tcmu_runtime::tcmu_scsi::vpd::naa_designator(0x001405, b"nobody");
    let mut list = xcopy_list(&naa, 9, 1, 0, 0);
    list[24..40].copy_from_slice(&other);
    let c = rig.run(&cdb, SimData::Out(list));
    assert_eq!(c.status, 2);
}

#[test]
fn statistics_count_what_crossed_the_ring() {
    let mut rig = Rig::new();
    let stats = rig.handle.stats();
    let ok = |c: SimCompletion| assert_eq!(c.status, 0, "sense {:?}", &c.sense[..18]);
    ok(rig.run(&rw10(0x2a, 100, 8), SimData::Out(vec![1; 4096])));
    ok(rig.run(&rw10(0x28, 100, 8), SimData::In(4096)));
    // One block into a 4 KiB buffer: 512 bytes moved, not 4096.
    ok(rig.run(&rw10(0x28, 9, 1), SimData::In(4096)));
    // WRITE AND VERIFY(10) is a write.
    ok(rig.run(&rw10(0x2e, 300, 2), SimData::Out(vec![2; 1024])));
    // Failures: a MEDIUM ERROR and a write past the end move nothing.
    assert_eq!(rig.run(&rw10(0x28, 1000, 1), SimData::In(512)).status, 2);
    let past_end = rw10(0x2a, BLOCKS as u32 - 1, 2);
    assert_eq!(rig.run(&past_end, SimData::Out(vec![0; 1024])).status, 2);
    // WRITE SAME(10) of 16 blocks and UNMAP: commands, not written bytes.
    ok(rig.run(
        &[0x41, 0, 0, 0, 0, 200, 0, 0, 16, 0],
        SimData::Out(vec![7; 512]),
    ));
    let (unmap, list) = cdb::unmap(&[(200, 4)]);
    ok(rig.run(&unmap, SimData::Out(list)));
    // INQUIRY: a command, no data bytes.
    ok(rig.run(&[0x12, 0, 0, 0, 255, 0], SimData::In(255)));

    // Completions are recorded before they are published: the counters
    // are complete as soon as the last completion is reaped.
    let s = stats.snapshot();
    assert_eq!(s.commands, 9);
    assert_eq!((s.read_commands, s.read_bytes), (2, 4096 + 512));
    assert_eq!((s.write_commands, s.write_bytes), (2, 4096 + 1024));
    assert_eq!(s.errors, 2);
    assert_eq!(s.timeouts, 0);
    assert_eq!(s.latency.iter().sum::<u64>(), s.commands);
    rig.close();
}

#[test]
fn latency_covers_the_handler() {
    let mut rig = Rig::new();
    let stats = rig.handle.stats();
    // The read of LBA 0 sleeps 200 ms in the handler.
    assert_eq!(rig.run(&rw10(0x28, 0, 1), SimData::In(512)).status, 0);
    let s = stats.snapshot();
    assert!(s.latency_sum_us >= 200_000, "{}", s.latency_sum_us);
    let slow_bucket = tcmu_runtime::stats::LATENCY_BOUNDS_US
        .iter()
        .position(|&b| b >= 200_000)
        .unwrap();
    assert_eq!(s.latency[slow_bucket], 1, "{:?}", s.latency);
    rig.close();
}

#[test]
fn commands_slower_than_cmd_time_out_are_timeouts() {
    let dir = std::env::temp_dir().join(format!("tcmu-sim-timeout-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("attrib")).unwrap();
    std::fs::write(dir.join("attrib/cmd_time_out"), "1\n").unwrap();
    let mut rig = Rig::with_configfs(Some(tcmu_core::configfs::DeviceDir::at(dir.clone())));
    let stats = rig.handle.stats();
    let fast = rig.run(&rw10(0x28, 5, 1), SimData::In(512));
    assert_eq!(fast.status, 0);
    assert_eq!(stats.snapshot().timeouts, 0);
    let slow = rig.run(&rw10(0x28, VERY_SLOW_LBA as u32, 1), SimData::In(512));
    assert_eq!(slow.status, 0);
    let s = stats.snapshot();
    assert_eq!((s.timeouts, s.commands, s.errors), (1, 2, 0));
    rig.close();
    let _ = std::fs::remove_dir_all(dir);
}

/// A temporary stand-in for a device's configfs directory, with the files
/// the runtime writes.
fn fake_configfs(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("tcmu-sim-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("attrib")).unwrap();
    std::fs::create_dir_all(dir.join("action")).unwrap();
    std::fs::write(dir.join("attrib/cmd_time_out"), "0\n").unwrap();
    std::fs::write(dir.join("attrib/tmr_notification"), "0\n").unwrap();
    std::fs::write(dir.join("action/free_kept_buf"), "").unwrap();
    dir
}

#[test]
fn an_aborted_hung_command_is_answered_and_the_device_goes_on() {
    // No configfs: no KEEP_BUF; the answer waits for the buffers.
    let mut rig = Rig::new();
    let stats = rig.handle.stats();
    let hung = rig
        .kernel()
        .post(&rw10(0x28, HUNG_LBA as u32, 8), SimData::In(4096))
        .unwrap();
    assert_eq!(rig.run(&rw10(0x28, 5, 1), SimData::In(512)).status, 0);
    assert_eq!(
        rig.kernel().inflight(),
        1,
        "the hung read is still in flight"
    );
    rig.kernel()
        .post_tmr(tcmu_core::layout::tmr::ABORT_TASK, &[hung])
        .unwrap();
    let done = rig.collect(1);
    assert_eq!(done[0].cmd_id, hung);
    assert_eq!(done[0].status, 0x40, "TASK ABORTED");
    assert!(!done[0].keep_buf);
    assert_eq!(stats.snapshot().aborts, 1);
    // A TMR naming a command that already finished changes nothing.
    rig.kernel()
        .post_tmr(tcmu_core::layout::tmr::LUN_RESET, &[hung])
        .unwrap();
    assert_eq!(rig.run(&rw10(0x28, 6, 1), SimData::In(512)).status, 0);
    assert_eq!(stats.snapshot().aborts, 1);
    rig.close();
}

#[test]
fn an_aborted_command_keeps_its_buffer_until_it_is_freed() {
    let dir = fake_configfs("keep");
    let mut rig = Rig::with_configfs(Some(tcmu_core::configfs::DeviceDir::at(dir.clone())));
    assert_eq!(
        std::fs::read_to_string(dir.join("attrib/tmr_notification")).unwrap(),
        "1",
        "the device turns TMR notifications on"
    );
    let hung = rig
        .kernel()
        .post(&rw10(0x28, HUNG_LBA as u32, 8), SimData::In(4096))
        .unwrap();
    rig.kernel().notify().unwrap();
    std::thread::sleep(Duration::from_millis(50));
    rig.kernel()
        .post_tmr(tcmu_core::layout::tmr::LUN_RESET, &[hung])
        .unwrap();
    let done = rig.collect(1);
    assert_eq!((done[0].cmd_id, done[0].status), (hung, 0x40));
    assert!(done[0].keep_buf, "completed with KEEP_BUF");
    assert_eq!(rig.kernel().kept(), vec![hung]);
    // Once the cancelled future dropped its buffers, the runtime frees the
    // kept buffer through action/free_kept_buf.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let freed = std::fs::read_to_string(dir.join("action/free_kept_buf")).unwrap();
        if freed == hung.to_string() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "kept buffer never freed ({freed:?})"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    rig.kernel().free_kept_buf(hung).unwrap();
    assert_eq!(rig.run(&rw10(0x28, 7, 1), SimData::In(512)).status, 0);
    rig.close();
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_kept_buffer_is_freed_only_after_its_completion_is_published() {
    // The kernel refuses action/free_kept_buf for a command whose KEEP_BUF
    // completion it has not seen; the buffer would then stay taken for
    // good. A command aborted in the same ring batch that brought it has
    // nothing in flight, so its buffer could be freed at once: the
    // completion must reach the ring first. A FIFO in place of the
    // attribute blocks the daemon at the moment it frees the buffer.
    let dir = fake_configfs("keep-batch");
    let fifo = dir.join("action/free_kept_buf");
    std::fs::remove_file(&fifo).unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success(), "mkfifo failed");
    let mut rig = Rig::with_configfs(Some(tcmu_core::configfs::DeviceDir::at(dir.clone())));
    let id = rig
        .kernel()
        .post(&rw10(0x28, 5, 8), SimData::In(4096))
        .unwrap();
    rig.kernel()
        .post_tmr(tcmu_core::layout::tmr::ABORT_TASK, &[id])
        .unwrap();
    rig.kernel().notify().unwrap();
    let done = rig.kernel().reap_at_least(1, Duration::from_secs(10));
    // Whatever happened, let a blocked daemon go on before asserting.
    let freed = std::fs::read_to_string(&fifo).unwrap();
    let done = done.expect("the TASK ABORTED completion was not published before the free");
    assert_eq!((done[0].cmd_id, done[0].status), (id, 0x40));
    assert!(done[0].keep_buf, "completed with KEEP_BUF");
    assert_eq!(freed, id.to_string());
    rig.kernel().free_kept_buf(id).unwrap();
    assert_eq!(rig.run(&rw10(0x28, 7, 1), SimData::In(512)).status, 0);
    rig.close();
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_command_past_tcmur_cmd_time_out_is_reported_while_it_runs() {
    let options = tcmu_runtime::RunnerOptions {
        cmd_time_out: Some(1),
    };
    let mut rig = Rig::with(None, options);
    let stats = rig.handle.stats();
    let cdb = rw10(0x28, HUNG_LBA as u32, 1);
    let hung = rig.kernel().post(&cdb, SimData::In(512)).unwrap();
    rig.kernel().notify().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while stats.snapshot().timeouts == 0 {
        assert!(Instant::now() < deadline, "no time-out reported");
        std::thread::sleep(Duration::from_millis(20));
    }
    let waited = deadline - Duration::from_secs(5);
    assert!(waited.elapsed() >= Duration::from_secs(1));
    assert!(
        TIMED_OUT_ALL.lock().unwrap().contains(&cdb.to_vec()),
        "the handler hook saw the CDB"
    );
    assert_eq!(rig.kernel().inflight(), 1, "still running: only reported");
    // Reported once, however long it runs.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(stats.snapshot().timeouts, 1);
    rig.kernel()
        .post_tmr(tcmu_core::layout::tmr::ABORT_TASK, &[hung])
        .unwrap();
    assert_eq!(rig.collect(1)[0].status, 0x40);
    rig.close();
}

#[test]
fn closing_cancels_a_hung_command_after_the_grace_period() {
    let mut rig = Rig::new();
    rig.kernel()
        .post(&rw10(0x28, HUNG_LBA as u32, 1), SimData::In(512))
        .unwrap();
    assert_eq!(rig.run(&rw10(0x28, 5, 1), SimData::In(512)).status, 0);
    let t = Instant::now();
    rig.close();
    let took = t.elapsed();
    assert!(
        took >= tcmu_runtime::CLOSE_GRACE
            && took < tcmu_runtime::CLOSE_GRACE + Duration::from_secs(2),
        "close took {took:?}"
    );
}

/// The ALUA state [`Shared`] reports: an `AccessState` code, or 0xff for
/// none.
static SHARED_STATE: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0xff);

/// A memory disk that plays a backend shared by gateways: its ALUA state
/// is whatever the test puts in [`SHARED_STATE`].
struct Shared(MemDisk);

#[async_trait(?Send)]
impl BlockHandler for Shared {
    async fn read(&self, offset: u64, bufs: Vec<DataBuf>) -> Result<(), BlockError> {
        self.0.read(offset, bufs).await
    }
    async fn write(&self, offset: u64, bufs: Vec<DataBuf>) -> Result<(), BlockError> {
        self.0.write(offset, bufs).await
    }
    async fn flush(&self) -> Result<(), BlockError> {
        Ok(())
    }
    fn alua_state(&self) -> Option<tcmu_runtime::tcmu_scsi::alua::AccessState> {
        tcmu_runtime::tcmu_scsi::alua::AccessState::from_code(SHARED_STATE.load(Ordering::Relaxed))
    }
}

struct SharedFactory;

#[async_trait(?Send)]
impl HandlerFactory for SharedFactory {
    fn subtype(&self) -> &str {
        "shared"
    }
    fn cfg_desc(&self) -> &str {
        "nothing"
    }
    fn check_config(&self, _: &str) -> Result<(), HandlerError> {
        Ok(())
    }
    async fn open(&self, c: &DeviceConfig) -> Result<Handler, HandlerError> {
        Ok(Handler::new(Shared(MemDisk(RefCell::new(vec![0; c.size as usize])))).build())
    }
}

#[test]
fn a_settled_alua_state_change_is_a_unit_attention() {
    use tcmu_runtime::tcmu_scsi::alua::AccessState;
    let set = |s: Option<AccessState>| {
        SHARED_STATE.store(s.map_or(0xff, AccessState::code), Ordering::Relaxed)
    };
    let workers = Workers::start(1).unwrap();
    let mut lun = SimLun::open(
        &workers,
        Arc::new(SharedFactory),
        DeviceConfig::new("shared0", "", BS * BLOCKS, BS as u32),
    )
    .unwrap();
    let tur = [0u8; 6];
    let mut tur_answer = || sense_key_asc(&lun.run(&tur, SimData::None));
    let ua = (0x6, 0x2a, 0x06);
    assert_eq!(tur_answer(), (0, 0, 0), "no state: nothing to report");
    // The first state seen, with no configured group to differ from.
    set(Some(AccessState::ActiveOptimized));
    assert_eq!(tur_answer(), (0, 0, 0));
    // The writer moves away: one unit attention, then GOOD.
    set(Some(AccessState::ActiveNonOptimized));
    assert_eq!(tur_answer(), ua);
    assert_eq!(tur_answer(), (0, 0, 0));
    // Transitioning on the way back raises nothing; settling does.
    set(Some(AccessState::Transitioning));
    assert_eq!(tur_answer(), (0, 0, 0));
    set(Some(AccessState::ActiveOptimized));
    assert_eq!(tur_answer(), ua);
    assert_eq!(tur_answer(), (0, 0, 0));
    assert_eq!(lun.handle().stats().snapshot().alua_changes, 2);
    set(None);
    lun.close();
    workers.shutdown();
}
