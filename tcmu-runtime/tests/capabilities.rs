//! Declared capabilities against the simulated kernel: what a handler
//! declares is what the VPD pages advertise and what dispatch calls; an
//! operation that turns out unsupported is withdrawn from both at once;
//! a command hook owns its command's buffers and its replies cannot leak
//! stale bytes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use tcmu_core::sim::{SimCompletion, SimData};
use tcmu_core::DataBuf;
use tcmu_runtime::tcmu_scsi::{Sense, UnmapParams};
use tcmu_runtime::testing::{cdb, sense_key_asc, SimLun};
use tcmu_runtime::{
    BlockError, BlockHandler, CmdOutcome, CmdReply, CommandHook, DeviceConfig, Handler,
    HandlerError, HandlerFactory, ScsiCmd, Unmap, Workers, WriteSame,
};

const BS: u64 = 512;
const BLOCKS: u64 = 256;

/// A vendor-specific opcode the hook answers with 5 bytes of data-in.
const VENDOR_DATA: u8 = 0xc0;
/// A vendor-specific opcode the hook answers after taking its buffers.
const VENDOR_TAKE_AND_PASS: u8 = 0xc1;
/// A vendor-specific opcode the hook fills 3 bytes of with io it did
/// itself, owning the buffers.
const VENDOR_FILL: u8 = 0xc2;

/// A vendor-specific opcode the hook answers at once while a task of its
/// own keeps the buffers for [`LEAK_FOR`].
const VENDOR_LEAK: u8 = 0xc3;
const LEAK_FOR: std::time::Duration = std::time::Duration::from_millis(300);

/// How often each optional operation was called, across threads.
static UNMAPS: AtomicUsize = AtomicUsize::new(0);
static WRITE_SAMES: AtomicUsize = AtomicUsize::new(0);
static HOOKED: AtomicUsize = AtomicUsize::new(0);

/// A memory disk whose file system "turns out" not to punch holes and
/// whose native WRITE SAME gives up: both declared, both unsupported.
struct Flaky {
    data: RefCell<Vec<u8>>,
    /// `wants` says yes only to vendor opcodes.
    hook_all: Cell<bool>,
}

#[async_trait(?Send)]
impl BlockHandler for Flaky {
    async fn read(&self, offset: u64, mut bufs: Vec<DataBuf>) -> Result<(), BlockError> {
        let d = self.data.borrow();
        let at = offset as usize;
        let len = tcmu_core::buf::total_len(&bufs);
        tcmu_core::buf::scatter(&mut bufs, &d[at..at + len]);
        Ok(())
    }
    async fn write(&self, offset: u64, bufs: Vec<DataBuf>) -> Result<(), BlockError> {
        let bytes = tcmu_core::buf::gather(&bufs, usize::MAX);
        let at = offset as usize;
        self.data.borrow_mut()[at..at + bytes.len()].copy_from_slice(&bytes);
        Ok(())
    }
    async fn flush(&self) -> Result<(), BlockError> {
        Ok(())
    }
}

#[async_trait(?Send)]
impl Unmap for Flaky {
    async fn unmap(&self, _offset: u64, _len: u64) -> Result<(), BlockError> {
        UNMAPS.fetch_add(1, Ordering::Relaxed);
        Err(BlockError::Unsupported)
    }
    fn unmap_params(&self) -> UnmapParams {
        UnmapParams {
            reads_zeroes: true,
            ..UnmapParams::default()
        }
    }
}

#[async_trait(?Send)]
impl WriteSame for Flaky {
    async fn write_same(&self, _: u64, _: u64, _: &[u8]) -> Result<(), BlockError> {
        WRITE_SAMES.fetch_add(1, Ordering::Relaxed);
        Err(BlockError::Unsupported)
    }
}

#[async_trait(?Send)]
impl CommandHook for Flaky {
    async fn handle_cmd(&self, mut cmd: ScsiCmd) -> CmdOutcome {
        HOOKED.fetch_add(1, Ordering::Relaxed);
        match cmd.opcode() {
            VENDOR_DATA => CmdOutcome::Done(CmdReply::data_in(cmd.data_mut(), b"hello")),
            VENDOR_TAKE_AND_PASS => {
                let _taken = cmd.take_data();
                CmdOutcome::NotHandled(cmd)
            }
            VENDOR_LEAK => {
                // A buggy hook: answers while "I/O" still owns the buffers.
                let mut bufs = cmd.take_data();
                tokio::task::spawn_local(async move {
                    tokio::time::sleep(LEAK_FOR).await;
                    bufs[0].copy_from(0, b"late");
                });
                CmdOutcome::Done(CmdReply::good())
            }
            VENDOR_FILL => {
                // Owns the buffers: could hand them to io_uring here.
                let mut bufs = cmd.take_data();
                bufs[0].copy_from(0, b"abc");
                CmdOutcome::Done(CmdReply::filled(&mut bufs, 3))
            }
            _ => CmdOutcome::NotHandled(cmd),
        }
    }
    fn wants(&self, cdb: &[u8]) -> bool {
        self.hook_all.get() || cdb.first().is_some_and(|&op| op >= 0xc0)
    }
}

/// Declares everything `Flaky` has, or (cfgstring `plain`) nothing.
struct FlakyFactory;

#[async_trait(?Send)]
impl HandlerFactory for FlakyFactory {
    fn subtype(&self) -> &str {
        "flaky"
    }
    fn cfg_desc(&self) -> &str {
        "plain, or empty for every capability"
    }
    fn check_config(&self, _: &str) -> Result<(), HandlerError> {
        Ok(())
    }
    async fn open(&self, c: &DeviceConfig) -> Result<Handler, HandlerError> {
        let disk = Flaky {
            data: RefCell::new(vec![0xaa; c.size as usize]),
            hook_all: Cell::new(c.cfgstring == "hook-all"),
        };
        let h = Handler::new(disk).device_params(|p| p.product = "Flaky disk".into());
        Ok(if c.cfgstring == "plain" {
            h.build()
        } else {
            h.unmap().write_same().commands().build()
        })
    }
}

fn open(cfgstring: &str) -> (SimLun, Workers) {
    let workers = Workers::start(1).unwrap();
    let lun = SimLun::open(
        &workers,
        Arc::new(FlakyFactory),
        DeviceConfig::new("flaky0", cfgstring, BS * BLOCKS, BS as u32),
    )
    .unwrap();
    (lun, workers)
}

/// INQUIRY VPD page `page`.
fn vpd(lun: &mut SimLun, page: u8) -> SimCompletion {
    lun.run(&cdb::inquiry_vpd(page, 255), SimData::In(255))
}

/// The LBPU bit of VPD page 0xB2 (UNMAP supported).
fn lbpu(lun: &mut SimLun) -> bool {
    let c = vpd(lun, 0xb2);
    assert_eq!(c.status, 0);
    c.data_in[5] & 0x80 != 0
}

#[test]
fn an_unsupported_unmap_is_withdrawn_from_vpd_and_dispatch_at_once() {
    let (mut lun, workers) = open("");
    assert!(lbpu(&mut lun), "UNMAP is declared");
    let before = UNMAPS.load(Ordering::Relaxed);
    let (c, list) = cdb::unmap(&[(8, 8)]);
    let r = lun.run(&c, SimData::Out(list.clone()));
    assert_eq!(r.status, 2);
    assert_eq!(
        sense_key_asc(&r),
        (5, 0x20, 0),
        "INVALID COMMAND OPCODE: the kernel's sd stops discarding"
    );
    // The next command hears that the inquiry data changed.
    let tur = lun.run(&cdb::TEST_UNIT_READY, SimData::None);
    let ua = Sense::unit_attention_inquiry_data_changed();
    assert_eq!(
        sense_key_asc(&tur),
        (6, ua.asc, ua.ascq),
        "UNIT ATTENTION, INQUIRY DATA HAS CHANGED"
    );
    assert!(!lbpu(&mut lun), "VPD B2 no longer advertises UNMAP");
    let b0 = vpd(&mut lun, 0xb0);
    assert_eq!(
        b0.read_len,
        Some(20),
        "VPD B0 is the short page, without UNMAP limits"
    );
    // Refused by the generic layer now, never reaching the handler.
    let r = lun.run(&c, SimData::Out(list));
    assert_eq!(sense_key_asc(&r), (5, 0x20, 0));
    assert_eq!(UNMAPS.load(Ordering::Relaxed), before + 1);
    lun.close();
    workers.shutdown();
}

#[test]
fn write_same_falls_back_to_writes_when_the_native_one_gives_up() {
    let (mut lun, workers) = open("");
    // WRITE SAME (16) of a pattern over 40 blocks.
    let block: Vec<u8> = (0..BS).map(|i| i as u8).collect();
    let r = lun.run(&cdb::rw16(0x93, 0, 100, 40), SimData::Out(block.clone()));
    assert_eq!(r.status, 0, "served by writes in the same command");
    let after_first = WRITE_SAMES.load(Ordering::Relaxed);
    let ua = lun.run(&cdb::TEST_UNIT_READY, SimData::None);
    assert_eq!(sense_key_asc(&ua).0, 6, "inquiry data changed");
    let back = lun.run(&cdb::read10(139, 1), SimData::In(BS as usize));
    assert_eq!(back.data_in, block);
    // WRITE SAME with UNMAP of zeroes: unmap gives up, writes do it.
    let r = lun.run(
        &cdb::rw16(0x93, 0x08, 100, 4),
        SimData::Out(vec![0; BS as usize]),
    );
    assert_eq!(r.status, 0, "served by writes in the same command");
    let ua = lun.run(&cdb::TEST_UNIT_READY, SimData::None);
    assert_eq!(sense_key_asc(&ua).0, 6, "inquiry data changed");
    let back = lun.run(&cdb::read10(100, 4), SimData::In(4 * BS as usize));
    assert!(back.data_in.iter().all(|&b| b == 0));
    assert_eq!(
        WRITE_SAMES.load(Ordering::Relaxed),
        after_first,
        "the native WRITE SAME is not called again once withdrawn"
    );
    lun.close();
    workers.shutdown();
}

#[test]
fn undeclared_capabilities_are_never_used() {
    let (mut lun, workers) = open("plain");
    assert!(!lbpu(&mut lun));
    let hooked = HOOKED.load(Ordering::Relaxed);
    let (c, list) = cdb::unmap(&[(8, 8)]);
    assert_eq!(
        sense_key_asc(&lun.run(&c, SimData::Out(list))),
        (5, 0x20, 0)
    );
    let r = lun.run(&[VENDOR_DATA, 0, 0, 0, 0, 0, 0, 0, 0, 0], SimData::In(16));
    assert_eq!(
        sense_key_asc(&r),
        (5, 0x20, 0),
        "no hook: unsupported opcode"
    );
    assert_eq!(HOOKED.load(Ordering::Relaxed), hooked);
    lun.close();
    workers.shutdown();
}

#[test]
fn a_hook_owns_its_buffers_and_its_answers_leak_nothing() {
    let (mut lun, workers) = open("");
    // Fill the data area with a recognisable earlier answer.
    let w = lun.run(&cdb::write10(0, 1), SimData::Out(vec![0x77; BS as usize]));
    assert_eq!(w.status, 0, "{:?}", sense_key_asc(&w));
    let r = lun.run(&cdb::read10(0, 1), SimData::In(BS as usize));
    assert_eq!(r.data_in, vec![0x77; BS as usize]);

    let r = lun.run(&[VENDOR_DATA, 0, 0, 0, 0, 0, 0, 0, 0, 0], SimData::In(16));
    assert_eq!(r.status, 0);
    assert_eq!(r.read_len, Some(5));
    assert_eq!(&r.data_in[..5], b"hello");
    assert!(r.data_in[5..].iter().all(|&b| b == 0), "{:?}", r.data_in);

    let r = lun.run(&[VENDOR_FILL, 0, 0, 0, 0, 0, 0, 0, 0, 0], SimData::In(16));
    assert_eq!((r.status, r.read_len), (0, Some(3)));
    assert_eq!(&r.data_in[..3], b"abc");
    assert!(r.data_in[3..].iter().all(|&b| b == 0));

    // Passed on without its buffers: failed, not served with none.
    let r = lun.run(
        &[VENDOR_TAKE_AND_PASS, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        SimData::In(16),
    );
    assert_eq!(sense_key_asc(&r), (4, 0x44, 0), "INTERNAL TARGET FAILURE");

    // Ordinary commands skip the hook (`wants`), and still work.
    let hooked = HOOKED.load(Ordering::Relaxed);
    let r = lun.run(&cdb::read10(0, 1), SimData::In(BS as usize));
    assert_eq!(r.data_in, vec![0x77; BS as usize]);
    assert_eq!(HOOKED.load(Ordering::Relaxed), hooked);
    lun.close();
    workers.shutdown();
}

#[test]
fn a_hook_that_wants_everything_passes_reads_and_writes_through() {
    let (mut lun, workers) = open("hook-all");
    let data: Vec<u8> = (0..2 * BS).map(|i| (i * 3) as u8).collect();
    let before = HOOKED.load(Ordering::Relaxed);
    assert_eq!(
        lun.run(&cdb::write10(10, 2), SimData::Out(data.clone()))
            .status,
        0
    );
    let r = lun.run(&cdb::read10(10, 2), SimData::In(data.len()));
    assert_eq!(r.data_in, data);
    assert!(HOOKED.load(Ordering::Relaxed) >= before + 2);
    lun.close();
    workers.shutdown();
}

#[test]
fn a_completion_waits_for_buffers_a_handler_left_in_use() {
    let (mut lun, workers) = open("");
    let start = std::time::Instant::now();
    let r = lun.run(&[VENDOR_LEAK, 0, 0, 0, 0, 0, 0, 0, 0, 0], SimData::In(16));
    assert!(
        start.elapsed() >= LEAK_FOR,
        "completed after {:?}, before the buffers were released",
        start.elapsed()
    );
    assert_eq!(r.status, 0);
    assert_eq!(
        &r.data_in[..4],
        b"late",
        "the late write landed in its own buffer"
    );
    // The device goes on.
    let r = lun.run(&cdb::read10(0, 1), SimData::In(BS as usize));
    assert_eq!(r.status, 0);
    lun.close();
    workers.shutdown();
}

#[test]
fn a_handler_sets_the_identity_the_generic_layer_reports() {
    let (mut lun, workers) = open("plain");
    let inq = lun.run(&[0x12, 0, 0, 0, 36, 0], SimData::In(36));
    assert_eq!(inq.status, 0);
    assert_eq!(
        &inq.data_in[16..32],
        b"Flaky disk      ",
        "product identification"
    );
    lun.close();
    workers.shutdown();
}
