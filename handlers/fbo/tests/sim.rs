//! The fbo handler end to end: drives served by the real runtime over the
//! simulated kernel, on real files under the temp directory. Expected sense
//! codes are written out by hand (key, ASC, ASCQ), not built with
//! `tcmu_scsi::Sense`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tcmu_core::sim::{SimCompletion, SimData};
use tcmu_handler_fbo::FboFactory;
use tcmu_runtime::testing::{assert_check, assert_good, cdb, SimLun, TempPath};
use tcmu_runtime::{DeviceConfig, ReconfigRequest, Report, Workers};

const MIB: u64 = 1 << 20;
const BS: usize = 2048;

fn open(workers: &Workers, cfg: &str, size: u64) -> Result<SimLun, String> {
    // configfs's default hw_block_size: the disc's 2048 wins.
    let config = DeviceConfig::new("fbo0", cfg, size, 512).with_write_cache(true);
    SimLun::open(workers, Arc::new(FboFactory), config).map_err(|e| Report(&e).to_string())
}

/// A pattern block: every byte is `lba + i` (mod 251).
fn pattern(lba: u32, blocks: usize) -> Vec<u8> {
    (0..blocks * BS)
        .map(|i| ((lba as usize * BS + i) % 251) as u8)
        .collect()
}

fn read10(lun: &mut SimLun, lba: u32, blocks: u16) -> SimCompletion {
    lun.run(
        &cdb::read10(lba, blocks),
        SimData::In(usize::from(blocks) * BS),
    )
}

fn write10(lun: &mut SimLun, lba: u32, data: &[u8]) -> SimCompletion {
    lun.run(
        &cdb::write10(lba, (data.len() / BS) as u16),
        SimData::Out(data.to_vec()),
    )
}

const TUR: [u8; 6] = [0; 6];
const EJECT: [u8; 6] = [0x1b, 0, 0, 0, 0x02, 0];
const LOAD: [u8; 6] = [0x1b, 0, 0, 0, 0x03, 0];

fn prevent(on: bool) -> [u8; 6] {
    [0x1e, 0, 0, 0, u8::from(on), 0]
}

fn get_configuration(rt: u8, start: u16, alloc: u16) -> [u8; 10] {
    let [s0, s1] = start.to_be_bytes();
    let [a0, a1] = alloc.to_be_bytes();
    [0x46, rt, s0, s1, 0, 0, 0, a0, a1, 0]
}

/// GET EVENT STATUS NOTIFICATION, polled, for the media class.
const GESN_MEDIA: [u8; 10] = [0x4a, 0x01, 0, 0, 1 << 4, 0, 0, 0, 8, 0];

fn request_sense(lun: &mut SimLun) -> SimCompletion {
    lun.run(&[0x03, 0, 0, 0, 18, 0], SimData::In(18))
}

/// A full-format FORMAT UNIT of `blocks` blocks, IMMED as asked.
fn format_unit(lun: &mut SimLun, blocks: u32, immed: bool) -> SimCompletion {
    let mut list = vec![0u8, if immed { 0x02 } else { 0 }, 0, 8];
    list.extend_from_slice(&blocks.to_be_bytes());
    list.extend_from_slice(&[0, 0, 0x08, 0x00]);
    lun.run(&[0x04, 0x11, 0, 0, 0, 0], SimData::Out(list))
}

#[test]
fn an_optical_drive_with_2048_byte_blocks() {
    let workers = Workers::start(1).unwrap();
    let path = TempPath::new("tcmu-handler-fbo", "rw.iso");
    let mut lun = open(&workers, &path.cfg(), 8 * MIB).unwrap();
    // The file is created (as tcmu-runner does).
    assert!(path.path().exists());

    let inq = lun.run(&[0x12, 0, 0, 0, 96, 0], SimData::In(96));
    assert_good(&inq);
    assert_eq!(inq.data_in[0], 0x05, "peripheral device type 5");
    assert_eq!(inq.data_in[1], 0x80, "removable medium");
    assert_eq!(&inq.data_in[16..21], b"VOPTA");

    let cap = lun.run(&[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], SimData::In(8));
    assert_good(&cap);
    assert_eq!(
        cap.data_in,
        [&(4096u32 - 1).to_be_bytes()[..], &2048u32.to_be_bytes()[..]].concat()
    );

    let data = pattern(10, 3);
    assert_good(&write10(&mut lun, 10, &data));
    let r = read10(&mut lun, 10, 3);
    assert_good(&r);
    assert_eq!(r.data_in, data);
    // Block 10 is 20 KiB into the file.
    assert_good(&lun.run(&[0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0], SimData::None));
    let file = fs::read(path.path()).unwrap();
    assert_eq!(&file[10 * BS..13 * BS], &data[..]);
    // READ (12) and past the end.
    let r12 = lun.run(&[0xa8, 0, 0, 0, 0, 11, 0, 0, 0, 1, 0, 0], SimData::In(BS));
    assert_good(&r12);
    assert_eq!(r12.data_in, &data[BS..2 * BS]);
    assert_check(&read10(&mut lun, 4095, 2), (5, 0x21, 0));

    // GET CONFIGURATION: DVD-RAM is the current profile.
    let gc = lun.run(&get_configuration(0, 0, 64), SimData::In(64));
    assert_good(&gc);
    assert_eq!(&gc.data_in[6..8], &[0x00, 0x12]);
    // The profile list lists DVD-RAM as current.
    assert_eq!(&gc.data_in[8..10], &[0, 0]);
    assert_eq!(&gc.data_in[12..15], &[0x00, 0x12, 0x01]);
    // READ TOC format 0: track 1 at 0, the lead-out at the end.
    let toc = lun.run(&[0x43, 0, 0, 0, 0, 0, 0, 0, 20, 0], SimData::In(20));
    assert_good(&toc);
    assert_eq!(&toc.data_in[..4], &[0, 18, 1, 1]);
    assert_eq!(&toc.data_in[13..15], &[0x17, 0xaa]);
    assert_eq!(&toc.data_in[16..20], &4096u32.to_be_bytes());
    assert_check(
        &lun.run(&[0x43, 0, 0x05, 0, 0, 0, 0, 0, 20, 0], SimData::In(20)),
        (5, 0x24, 0),
    );
    // The operational change of a drive that just came up, reported once.
    let gesn = [0x4a, 0x01, 0, 0, 1 << 1, 0, 0, 0, 8, 0];
    let e = lun.run(&gesn, SimData::In(8));
    assert_good(&e);
    assert_eq!(e.data_in[2], 0x01, "operational change class");
    assert_eq!(e.data_in[4] & 0x0f, 2, "change notification");
    let e = lun.run(&gesn, SimData::In(8));
    assert_eq!(e.data_in[4] & 0x0f, 0, "consumed");
    // Asynchronous GESN is refused.
    assert_check(
        &lun.run(&[0x4a, 0, 0, 0, 0x10, 0, 0, 0, 8, 0], SimData::In(8)),
        (5, 0x24, 0),
    );
    lun.close();
    workers.shutdown();
}

#[test]
fn a_read_only_disc_is_write_protected() {
    let workers = Workers::start(1).unwrap();
    let path = TempPath::new("tcmu-handler-fbo", "ro.iso");
    let image = pattern(0, 64);
    fs::write(path.path(), &image).unwrap();
    let mut lun = open(&workers, &format!("ro/{}", &path.cfg()), image.len() as u64).unwrap();

    let r = read10(&mut lun, 0, 64);
    assert_good(&r);
    assert_eq!(r.data_in, image);
    assert_check(&write10(&mut lun, 0, &pattern(7, 1)), (7, 0x27, 0));
    // WRITE AND VERIFY, WRITE (16) and FORMAT UNIT too.
    assert_check(
        &lun.run(&cdb::rw10(0x2e, 1, 1), SimData::Out(vec![1; BS])),
        (7, 0x27, 0),
    );
    assert_check(
        &lun.run(&cdb::rw16(0x8a, 0, 1, 1), SimData::Out(vec![1; BS])),
        (7, 0x27, 0),
    );
    assert_check(&format_unit(&mut lun, 64, false), (7, 0x27, 0));
    assert_eq!(
        fs::read(path.path()).unwrap(),
        image,
        "the image is unchanged"
    );

    // DVD-ROM: current profile 0010h, no DVD-RAM in the list.
    let gc = lun.run(&get_configuration(0, 0, 64), SimData::In(64));
    assert_good(&gc);
    assert_eq!(&gc.data_in[6..8], &[0x00, 0x10]);
    let list_len = usize::from(gc.data_in[11]);
    let profiles: Vec<u16> = gc.data_in[12..12 + list_len]
        .chunks(4)
        .map(|p| u16::from_be_bytes([p[0], p[1]]))
        .collect();
    assert_eq!(profiles, [0x10, 0x08]);
    // Page 2Ah writes nothing.
    let ms = lun.run(&[0x5a, 0, 0x2a, 0, 0, 0, 0, 0, 40, 0], SimData::In(40));
    assert_good(&ms);
    assert_eq!(ms.data_in[8], 0x2a);
    assert_eq!(ms.data_in[8 + 3], 0, "no write capability");
    lun.close();

    // A read-only drive needs its image.
    let missing = TempPath::new("tcmu-handler-fbo", "missing.iso");
    let e = open(&workers, &format!("ro/{}", &missing.cfg()), 8 * MIB).unwrap_err();
    assert!(e.contains("needs an existing image"), "{e}");
    assert!(!missing.path().exists());
    workers.shutdown();
}

#[test]
fn eject_and_load_with_media_events_and_the_removal_lock() {
    let workers = Workers::start(1).unwrap();
    let path = TempPath::new("tcmu-handler-fbo", "eject.iso");
    let mut lun = open(&workers, &path.cfg(), 4 * MIB).unwrap();
    assert_good(&write10(&mut lun, 0, &pattern(0, 1)));
    // Drain the start-up operational event.
    assert_good(&lun.run(&[0x4a, 0x01, 0, 0, 0x52, 0, 0, 0, 8, 0], SimData::In(8)));

    // Locked in: the eject is refused, page 2Ah says locked.
    assert_good(&lun.run(&prevent(true), SimData::None));
    assert_check(&lun.run(&EJECT, SimData::None), (5, 0x53, 0x02));
    let ms = lun.run(&[0x1a, 0, 0x2a, 0, 40, 0], SimData::In(40));
    assert_good(&ms);
    assert_eq!(ms.data_in[4 + 6] & 0x03, 0x03, "lock supported, locked");
    assert_good(&lun.run(&TUR, SimData::None));

    // Allowed: the eject opens the tray.
    assert_good(&lun.run(&prevent(false), SimData::None));
    let ms = lun.run(&[0x1a, 0, 0x2a, 0, 40, 0], SimData::In(40));
    assert_eq!(ms.data_in[4 + 6] & 0x03, 0x01, "lock supported, unlocked");
    assert_good(&lun.run(&EJECT, SimData::None));
    assert_check(&lun.run(&TUR, SimData::None), (2, 0x3a, 0x02));
    assert_check(&read10(&mut lun, 0, 1), (2, 0x3a, 0x02));
    assert_check(&write10(&mut lun, 0, &pattern(5, 1)), (2, 0x3a, 0x02));
    assert_check(
        &lun.run(&[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], SimData::In(8)),
        (2, 0x3a, 0x02),
    );
    // The media event: removal, tray open, no medium.
    let e = lun.run(&GESN_MEDIA, SimData::In(8));
    assert_good(&e);
    assert_eq!(e.data_in[2], 0x04, "media class");
    assert_eq!(&e.data_in[4..6], &[3, 0x01]);
    // No current profile without a disc.
    let gc = lun.run(&get_configuration(0, 0, 8), SimData::In(8));
    assert_good(&gc);
    assert_eq!(&gc.data_in[6..8], &[0, 0]);
    // MECHANISM STATUS: door open.
    let m = lun.run(&[0xbd, 0, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0], SimData::In(8));
    assert_good(&m);
    assert_eq!(m.data_in[1] & 0x10, 0x10);

    // Load: new media, the data is back.
    assert_good(&lun.run(&LOAD, SimData::None));
    let e = lun.run(&GESN_MEDIA, SimData::In(8));
    assert_eq!(&e.data_in[4..6], &[2, 0x02]);
    let e = lun.run(&GESN_MEDIA, SimData::In(8));
    assert_eq!(&e.data_in[4..6], &[0, 0x02], "reported once");
    assert_good(&lun.run(&TUR, SimData::None));
    let r = read10(&mut lun, 0, 1);
    assert_good(&r);
    assert_eq!(r.data_in, pattern(0, 1));
    lun.close();
    workers.shutdown();
}

#[test]
fn format_unit_in_the_background_reports_progress_then_reads_zeroes() {
    let workers = Workers::start(1).unwrap();
    let path = TempPath::new("tcmu-handler-fbo", "format.iso");
    let size = 32 * MIB;
    let blocks = (size / BS as u64) as u32;
    let mut lun = open(&workers, &path.cfg(), size).unwrap();
    for lba in [0, blocks / 2, blocks - 4] {
        assert_good(&write10(&mut lun, lba, &pattern(lba, 4)));
    }
    // Fields: a wrong block count and a missing FMTDATA are refused.
    assert_check(&format_unit(&mut lun, blocks - 1, true), (5, 0x26, 0));
    assert_check(
        &lun.run(&[0x04, 0x01, 0, 0, 0, 0], SimData::None),
        (5, 0x24, 0),
    );

    assert_good(&format_unit(&mut lun, blocks, true));
    // Right after IMMED's GOOD the drive is formatting.
    let rs = request_sense(&mut lun);
    assert_good(&rs);
    assert_eq!(
        (rs.data_in[2] & 0x0f, rs.data_in[12], rs.data_in[13]),
        (2, 4, 4)
    );
    assert_eq!(rs.data_in[15] & 0x80, 0x80, "SKSV");
    assert_check(&lun.run(&TUR, SimData::None), (2, 4, 4));
    assert_check(&read10(&mut lun, 0, 1), (2, 4, 4));
    // GET CONFIGURATION is still answered.
    assert_good(&lun.run(&get_configuration(0, 0, 8), SimData::In(8)));

    let mut seen = vec![u16::from_be_bytes([rs.data_in[16], rs.data_in[17]])];
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let rs = request_sense(&mut lun);
        assert_good(&rs);
        if rs.data_in[2] & 0x0f == 0 {
            break;
        }
        assert_eq!((rs.data_in[12], rs.data_in[13]), (4, 4));
        seen.push(u16::from_be_bytes([rs.data_in[16], rs.data_in[17]]));
        assert!(Instant::now() < deadline, "format still running: {seen:?}");
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(
        seen.windows(2).all(|w| w[0] <= w[1]),
        "progress never goes back: {seen:?}"
    );
    assert_good(&lun.run(&TUR, SimData::None));
    for lba in [0, blocks / 2, blocks - 4] {
        let r = read10(&mut lun, lba, 4);
        assert_good(&r);
        assert!(r.data_in.iter().all(|&b| b == 0), "LBA {lba} reads zeroes");
    }
    // The device busy event of the format.
    let e = lun.run(&[0x4a, 0x01, 0, 0, 1 << 6, 0, 0, 0, 8, 0], SimData::In(8));
    assert_good(&e);
    assert_eq!(e.data_in[2], 0x06);

    // Without IMMED, the answer comes when it is done.
    assert_good(&write10(&mut lun, 3, &pattern(3, 1)));
    assert_good(&format_unit(&mut lun, blocks, false));
    assert_good(&lun.run(&TUR, SimData::None));
    let r = read10(&mut lun, 3, 1);
    assert!(r.data_in.iter().all(|&b| b == 0));
    lun.close();
    workers.shutdown();
}

#[test]
fn the_disc_keeps_its_size_and_file() {
    let workers = Workers::start(1).unwrap();
    let path = TempPath::new("tcmu-handler-fbo", "reconfig.iso");
    let lun = open(&workers, &path.cfg(), 4 * MIB).unwrap();
    assert!(lun.reconfig(ReconfigRequest::Size(4 * MIB)).is_ok());
    assert!(lun.reconfig(ReconfigRequest::Size(8 * MIB)).is_err());
    assert!(lun
        .reconfig(ReconfigRequest::Config(format!("ro/{}", &path.cfg())))
        .is_err());
    assert!(lun.reconfig(ReconfigRequest::Config(path.cfg())).is_ok());
    lun.close();
    // Less than a block is no disc.
    let e = open(&workers, &path.cfg(), 1024).unwrap_err();
    assert!(e.contains("holds no 2048-byte block"), "{e}");
    workers.shutdown();
}
