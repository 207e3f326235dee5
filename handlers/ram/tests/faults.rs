//! Injected faults end to end: `ram` devices under the real runtime
//! (`Workers`, one worker thread for all of them) and the simulated
//! kernel. Each fault must reach the initiator as the exact status, sense
//! bytes and `read_len` the kernel would pass on, while the faulty
//! device's other blocks and another device on the same worker keep
//! serving.
//!
//! The expected sense bytes are written out by hand (fixed format, as the
//! daemon sends them), not built with `tcmu_scsi::Sense`, so that a
//! change in the encoder cannot hide here.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use tcmu_core::sim::{SimCompletion, SimData};
use tcmu_handler_ram::RamFactory;
use tcmu_runtime::testing::SimLun;
use tcmu_runtime::{DeviceConfig, ReconfigRequest, Report, Workers};

/// Logical block size of every device here.
const BS: usize = 512;
/// Blocks per device (1 MiB).
const BLOCKS: u64 = 2048;

/// One device and the simulated kernel feeding it.
struct Lun(SimLun);

impl std::ops::Deref for Lun {
    type Target = SimLun;
    fn deref(&self) -> &SimLun {
        &self.0
    }
}

impl std::ops::DerefMut for Lun {
    fn deref_mut(&mut self) -> &mut SimLun {
        &mut self.0
    }
}

impl Lun {
    fn open(workers: &Workers, name: &str, cfgstring: &str) -> Self {
        let config = DeviceConfig::new(name, cfgstring, BLOCKS * BS as u64, BS as u32)
            .with_write_cache(true);
        let lun = SimLun::open(workers, Arc::new(RamFactory), config)
            .unwrap_or_else(|e| panic!("open {name} ({cfgstring}): {}", Report(&e)));
        Self(lun)
    }

    /// Posts a command and rings the doorbell; returns its id.
    fn post(&mut self, cdb: &[u8], data: SimData) -> u16 {
        self.0.post(cdb, data)
    }

    /// Waits for `n` completions (in the order reaped).
    fn collect(&mut self, n: usize) -> Vec<SimCompletion> {
        self.0.collect(n)
    }

    fn run(&mut self, cdb: &[u8], data: SimData) -> SimCompletion {
        self.0.run(cdb, data)
    }

    fn write(&mut self, lba: u32, data: &[u8]) -> SimCompletion {
        let blocks = (data.len() / BS) as u16;
        self.run(&rw10(0x2a, lba, blocks), SimData::Out(data.to_vec()))
    }

    fn read(&mut self, lba: u32, blocks: u16) -> SimCompletion {
        self.run(
            &rw10(0x28, lba, blocks),
            SimData::In(usize::from(blocks) * BS),
        )
    }

    /// Replaces the device's dev_config (the part after `ram/`).
    fn reconfig(&self, cfgstring: &str) -> Result<(), String> {
        self.0
            .reconfig(ReconfigRequest::Config(cfgstring.into()))
            .map_err(|e| Report(&e).to_string())
    }

    /// A clean write-then-read round trip of 8 blocks at `lba`.
    fn round_trip(&mut self, lba: u32, seed: u8) {
        let data = pattern(8, seed);
        let w = self.write(lba, &data);
        assert_eq!(
            (w.status, w.read_len),
            (0, None),
            "write at {lba}: {}",
            brief(&w)
        );
        let r = self.read(lba, 8);
        assert_eq!(r.status, 0, "read at {lba}: {}", brief(&r));
        assert!(r.data_in == data, "wrong data read back at {lba}");
    }
}

/// Two devices on one worker: `faulty` with the faults under test, and
/// `clean`, which must not notice them.
struct Rig {
    workers: Option<Workers>,
    faulty: Lun,
    clean: Lun,
}

impl Rig {
    fn new(faults: &str) -> Self {
        let workers = Workers::start(1).unwrap();
        let faulty = Lun::open(&workers, "faulty", faults);
        let clean = Lun::open(&workers, "clean", "");
        Self {
            workers: Some(workers),
            faulty,
            clean,
        }
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        if let Some(workers) = self.workers.take() {
            futures::executor::block_on(self.faulty.handle().close());
            futures::executor::block_on(self.clean.handle().close());
            workers.shutdown();
        }
    }
}

fn rw10(op: u8, lba: u32, blocks: u16) -> Vec<u8> {
    let mut c = vec![op, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    c[2..6].copy_from_slice(&lba.to_be_bytes());
    c[7..9].copy_from_slice(&blocks.to_be_bytes());
    c
}

fn pattern(blocks: usize, seed: u8) -> Vec<u8> {
    (0..blocks * BS)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// Fixed-format sense as SPC lays it out: response code 0x70 (0xF0 with
/// VALID when INFORMATION is given), key, INFORMATION, additional length
/// 10, ASC, ASCQ; the rest of the 96-byte buffer zero.
fn fixed_sense(key: u8, asc: u8, ascq: u8, information: Option<u32>) -> Vec<u8> {
    let mut s = vec![0u8; 96];
    s[0] = 0x70;
    s[2] = key;
    if let Some(info) = information {
        s[0] |= 0x80;
        s[3..7].copy_from_slice(&info.to_be_bytes());
    }
    s[7] = 10;
    s[12] = asc;
    s[13] = ascq;
    s
}

/// A completion without its data, for messages.
fn brief(c: &SimCompletion) -> String {
    format!(
        "status {:#04x}, sense {:02x?}, read_len {:?}, {} bytes in",
        c.status,
        &c.sense[..18],
        c.read_len,
        c.data_in.len()
    )
}

/// CHECK CONDITION with exactly `sense`.
fn assert_check(c: &SimCompletion, sense: &[u8], what: &str) {
    assert_eq!(c.status, 2, "{what}: {}", brief(c));
    assert_eq!(c.sense, sense, "{what}: sense bytes");
    assert_eq!(c.read_len, None, "{what}: read_len");
}

#[test]
fn failed_reads_and_writes_report_medium_error_at_the_first_bad_block() {
    let mut rig = Rig::new("");
    let old = pattern(8, 7);
    assert_eq!(rig.faulty.write(196, &old).status, 0);
    rig.faulty
        .reconfig("fail_read=100-103;fail_read=1500;fail_write=200-201")
        .unwrap();
    let c = rig.faulty.write(100, &pattern(4, 8));
    assert_eq!(c.status, 0, "writes may go to fail_read blocks");

    let c = rig.faulty.read(98, 4);
    assert_check(
        &c,
        &fixed_sense(0x03, 0x11, 0x00, Some(100)),
        "READ of 98-101",
    );
    let c = rig.faulty.read(102, 8);
    assert_check(
        &c,
        &fixed_sense(0x03, 0x11, 0x00, Some(102)),
        "READ of 102-109",
    );
    let c = rig.faulty.read(1400, 200);
    assert_check(
        &c,
        &fixed_sense(0x03, 0x11, 0x00, Some(1500)),
        "READ of 1400-1599",
    );
    let c = rig.faulty.write(201, &pattern(2, 1));
    assert_check(
        &c,
        &fixed_sense(0x03, 0x0c, 0x00, Some(201)),
        "WRITE of 201-202",
    );
    let c = rig.faulty.write(196, &pattern(8, 9));
    assert_check(
        &c,
        &fixed_sense(0x03, 0x0c, 0x00, Some(200)),
        "WRITE of 196-203",
    );
    // A failed write wrote nothing, not even the blocks before the fault.
    let c = rig.faulty.read(196, 8);
    assert_eq!(c.status, 0);
    assert!(
        c.data_in == old,
        "blocks 196-203 changed by the failed writes"
    );

    // Blocks next to the faults, and the other device, serve as usual.
    rig.faulty.round_trip(104, 1);
    rig.faulty.round_trip(90, 2);
    rig.faulty.round_trip(202, 3);
    rig.clean.round_trip(100, 4);
    rig.clean.round_trip(200, 5);
}

#[test]
fn not_ready_answers_test_unit_ready_reads_writes_and_flushes() {
    let mut rig = Rig::new("not_ready");
    let not_ready = fixed_sense(0x02, 0x04, 0x00, None);
    let c = rig.faulty.read(0, 1);
    assert_check(&c, &not_ready, "READ");
    let c = rig.faulty.write(0, &pattern(1, 0));
    assert_check(&c, &not_ready, "WRITE");
    let c = rig
        .faulty
        .run(&[0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0], SimData::None);
    assert_check(&c, &not_ready, "SYNCHRONIZE CACHE(10)");
    let c = rig.faulty.run(&[0; 6], SimData::None);
    assert_check(&c, &not_ready, "TEST UNIT READY");
    // What the generic layer answers alone is unaffected.
    let c = rig
        .faulty
        .run(&[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], SimData::In(8));
    assert_eq!(c.status, 0, "READ CAPACITY(10): {}", brief(&c));
    rig.clean.round_trip(0, 1);
}

#[test]
fn a_capacity_change_is_reported_before_the_handler_sees_commands() {
    // short_read makes the handler take READs in handle_cmd.
    let mut rig = Rig::new("short_read=50-59");
    let size = BLOCKS * BS as u64 * 2;
    futures::executor::block_on(rig.faulty.handle().reconfig(ReconfigRequest::Size(size))).unwrap();
    let ua = fixed_sense(0x06, 0x2a, 0x09, None);
    // A READ the handler cuts short (it answers it in handle_cmd).
    let c = rig.faulty.read(48, 4);
    assert_check(&c, &ua, "READ after a resize");
    let c = rig.faulty.read(48, 4);
    assert_eq!(
        (c.status, c.read_len),
        (0, Some(2 * BS as u32)),
        "READ after the unit attention: {}",
        brief(&c)
    );
}

#[test]
fn short_reads_are_good_with_the_blocks_before_the_range() {
    let mut rig = Rig::new("");
    let data = pattern(16, 3);
    assert_eq!(rig.faulty.write(40, &data).status, 0);
    rig.faulty.reconfig("short_read=50-59").unwrap();

    // 40-55: blocks 40-49 come back, GOOD, read_len 10 blocks.
    let c = rig.faulty.read(40, 16);
    assert_eq!(c.status, 0, "{}", brief(&c));
    assert_eq!(c.read_len, Some(10 * BS as u32));
    assert!(
        c.data_in == data[..10 * BS],
        "wrong blocks before the range"
    );
    assert!(c.sense.iter().all(|&b| b == 0), "no sense with GOOD");
    // Starting inside the range: no block to return. GOOD with read_len 0
    // would reach the initiator as a full GOOD read (the kernel ignores
    // read_len 0), so it is a MEDIUM ERROR at the READ's first block.
    let c = rig.faulty.read(55, 2);
    assert_check(
        &c,
        &fixed_sense(0x03, 0x11, 0x00, Some(55)),
        "READ of 55-56",
    );
    // Not touching it: whole.
    let c = rig.faulty.read(60, 1);
    assert_eq!((c.status, c.read_len), (0, None), "{}", brief(&c));
    // Out of range is still the generic layer's LBA OUT OF RANGE.
    let c = rig.faulty.read(BLOCKS as u32 - 1, 2);
    assert_check(
        &c,
        &fixed_sense(0x05, 0x21, 0x00, None),
        "READ past the end",
    );
    // Writes are untouched by short reads.
    let new = pattern(2, 99);
    assert_eq!(rig.faulty.write(54, &new).status, 0);
    rig.clean.round_trip(50, 7);

    // Cleared at run time: the same read is whole, and the data kept.
    rig.faulty.reconfig("").unwrap();
    let c = rig.faulty.read(40, 16);
    assert_eq!((c.status, c.read_len), (0, None));
    assert!(
        c.data_in[..14 * BS] == data[..14 * BS],
        "blocks 40-53 changed"
    );
    assert!(c.data_in[14 * BS..] == new[..], "blocks 54-55 not written");
}

#[test]
fn a_delay_holds_only_the_delayed_commands() {
    let mut rig = Rig::new("delay_ms=1000");
    let start = Instant::now();
    rig.faulty.post(&rw10(0x28, 0, 1), SimData::In(BS));
    // Meanwhile the other device on the same worker answers at once.
    for lba in [0, 8, 16] {
        rig.clean.round_trip(lba, 1);
    }
    assert!(
        start.elapsed() < Duration::from_millis(800),
        "the clean device waited for the delayed one: {:?}",
        start.elapsed()
    );
    assert_eq!(
        rig.faulty.kernel.inflight(),
        1,
        "the delayed READ is still running"
    );
    let c = rig.faulty.collect(1).remove(0);
    let took = start.elapsed();
    assert_eq!(c.status, 0, "{}", brief(&c));
    assert!(took >= Duration::from_millis(1000), "READ took {took:?}");
    // Generic answers are not delayed.
    let start = Instant::now();
    assert_eq!(rig.faulty.run(&[0; 6], SimData::None).status, 0);
    assert!(start.elapsed() < Duration::from_millis(800));
}

#[test]
fn a_panic_fails_only_its_command() {
    let mut rig = Rig::new("panic_read=10;panic_write=20-29");
    let internal_target_failure = fixed_sense(0x04, 0x44, 0x00, None);
    let c = rig.faulty.read(8, 4);
    assert_check(
        &c,
        &internal_target_failure,
        "READ across the panic_read block",
    );
    let c = rig.faulty.write(25, &pattern(1, 0));
    assert_check(
        &c,
        &internal_target_failure,
        "WRITE in the panic_write range",
    );
    // The device, its worker and the other device carry on.
    rig.faulty.round_trip(0, 1);
    rig.faulty.round_trip(11, 2);
    assert_eq!(rig.faulty.read(10, 1).status, 2, "and it panics again");
    rig.faulty.round_trip(30, 3);
    rig.clean.round_trip(10, 4);
}

#[test]
fn a_hung_command_stays_pending_while_others_complete() {
    let mut rig = Rig::new("hang_read=500-509;hang_write=600");
    let hung_read = rig.faulty.post(&rw10(0x28, 505, 1), SimData::In(BS));
    let hung_write = rig
        .faulty
        .post(&rw10(0x2a, 596, 8), SimData::Out(pattern(8, 1)));
    // Other commands, on both devices and around the hung ones, finish.
    rig.faulty.round_trip(510, 1);
    rig.faulty.round_trip(601, 2);
    rig.faulty.round_trip(100, 3);
    assert_eq!(
        rig.faulty.read(596, 8).status,
        0,
        "hang_write does not hang reads"
    );
    rig.clean.round_trip(505, 4);
    std::thread::sleep(Duration::from_millis(200));
    let reaped = rig.faulty.kernel.reap().unwrap();
    assert!(
        reaped.is_empty(),
        "hung commands {hung_read}/{hung_write} completed: {reaped:?}"
    );
    assert_eq!(rig.faulty.kernel.inflight(), 2);
    // Clearing the faults does not release them (only an abort will);
    // new commands to those blocks are served.
    rig.faulty.reconfig("").unwrap();
    rig.faulty.round_trip(505, 5);
    assert_eq!(rig.faulty.kernel.inflight(), 2);
    // ABORT TASK drops their futures: TASK ABORTED, and the hung write
    // wrote nothing (blocks 596-600; 601 on were written above).
    rig.faulty
        .kernel
        .post_tmr(tcmu_core::layout::tmr::ABORT_TASK, &[hung_read, hung_write])
        .unwrap();
    rig.faulty.kernel.notify().unwrap();
    let mut aborted: Vec<(u16, u8)> = rig
        .faulty
        .collect(2)
        .iter()
        .map(|c| (c.cmd_id, c.status))
        .collect();
    aborted.sort_unstable();
    let mut want = vec![(hung_read, 0x40), (hung_write, 0x40)];
    want.sort_unstable();
    assert_eq!(aborted, want, "TASK ABORTED for both");
    let c = rig.faulty.read(596, 5);
    assert_eq!(c.status, 0);
    assert!(c.data_in.iter().all(|&b| b == 0), "the aborted write wrote");
    rig.clean.round_trip(505, 6);
}

#[test]
fn faults_change_at_run_time_and_the_data_stays() {
    let mut rig = Rig::new("");
    let data = pattern(8, 42);
    assert_eq!(rig.faulty.write(300, &data).status, 0);

    rig.faulty
        .reconfig("fail_read=302;fail_write=300-307")
        .unwrap();
    let c = rig.faulty.read(300, 8);
    assert_check(
        &c,
        &fixed_sense(0x03, 0x11, 0x00, Some(302)),
        "READ after the reconfig",
    );
    let c = rig.faulty.write(300, &pattern(8, 0));
    assert_check(
        &c,
        &fixed_sense(0x03, 0x0c, 0x00, Some(300)),
        "WRITE after the reconfig",
    );

    // Refused changes keep the current faults.
    let err = rig.faulty.reconfig("fail_read=x").unwrap_err();
    assert!(err.contains("fail_read=x: not an LBA"), "{err}");
    let err = rig.faulty.reconfig("2M;fail_read=1").unwrap_err();
    assert!(err.contains("cannot resize through dev_config"), "{err}");
    let err = rig.faulty.reconfig("fail_read=2048").unwrap_err();
    assert!(
        err.contains("beyond the device's last block (2047)"),
        "{err}"
    );
    assert_eq!(rig.faulty.read(300, 8).status, 2, "still failing");

    // Same size given explicitly, no faults: the data written before.
    rig.faulty.reconfig("1M").unwrap();
    let c = rig.faulty.read(300, 8);
    assert_eq!(c.status, 0);
    assert!(
        c.data_in == data,
        "the data written before the faults changed"
    );
}
