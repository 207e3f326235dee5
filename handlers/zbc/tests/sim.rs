//! The zbc handler end to end: devices served by the real runtime over the
//! simulated kernel, on real files under the temp directory. Every answer
//! is checked as the kernel would pass it on: status, sense bytes, data.
//! The expected sense codes are written out by hand (key, ASC, ASCQ), not
//! built with `tcmu_scsi::Sense`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::sync::Arc;

use tcmu_core::sim::{SimCompletion, SimData};
use tcmu_handler_zbc::ZbcFactory;
use tcmu_runtime::testing::{assert_check, assert_good, cdb, sense_key_asc, SimLun, TempPath};
use tcmu_runtime::{DeviceConfig, ReconfigRequest, Report, Workers};

const MIB: u64 = 1 << 20;

struct Lun {
    lun: SimLun,
    bs: usize,
}

impl Lun {
    fn open(workers: &Workers, cfg: &str, size: u64, bs: u32) -> Result<Self, String> {
        let config = DeviceConfig::new("zbc0", cfg, size, bs).with_write_cache(true);
        SimLun::open(workers, Arc::new(ZbcFactory), config)
            .map(|lun| Self {
                lun,
                bs: bs as usize,
            })
            .map_err(|e| Report(&e).to_string())
    }

    fn run(&mut self, c: &[u8], data: SimData) -> SimCompletion {
        self.lun.run(c, data)
    }

    fn write(&mut self, lba: u64, data: &[u8]) -> SimCompletion {
        let blocks = (data.len() / self.bs) as u32;
        self.run(
            &cdb::rw16(0x8a, 0, lba, blocks),
            SimData::Out(data.to_vec()),
        )
    }

    fn read(&mut self, lba: u64, blocks: u32) -> SimCompletion {
        self.run(
            &cdb::rw16(0x88, 0, lba, blocks),
            SimData::In(blocks as usize * self.bs),
        )
    }

    fn zone_out(&mut self, sa: u8, lba: u64, all: bool) -> SimCompletion {
        let mut c = [0u8; 16];
        c[0] = 0x94;
        c[1] = sa;
        c[2..10].copy_from_slice(&lba.to_be_bytes());
        c[14] = u8::from(all);
        self.run(&c, SimData::None)
    }

    /// REPORT ZONES from `lba` with `options`: (zone list length, the
    /// descriptors as (type, condition, start, length, write pointer)).
    fn report(&mut self, lba: u64, options: u8) -> Vec<(u8, u8, u64, u64, u64)> {
        let mut c = [0u8; 16];
        c[0] = 0x95;
        c[2..10].copy_from_slice(&lba.to_be_bytes());
        c[10..14].copy_from_slice(&65536u32.to_be_bytes());
        c[14] = options;
        let done = self.run(&c, SimData::In(65536));
        assert_eq!(done.status, 0, "REPORT ZONES: {:?}", sense_key_asc(&done));
        let d = &done.data_in;
        let list = u32::from_be_bytes([d[0], d[1], d[2], d[3]]) as usize;
        let be = |b: &[u8]| u64::from_be_bytes(b.try_into().unwrap());
        (0..list / 64)
            .map(|i| {
                let z = &d[64 + 64 * i..128 + 64 * i];
                (
                    z[0],
                    z[1] >> 4,
                    be(&z[16..24]),
                    be(&z[8..16]),
                    be(&z[24..32]),
                )
            })
            .collect()
    }

    fn close(self) {
        self.lun.close();
    }
}

const CLOSE: u8 = 1;
const FINISH: u8 = 2;
const OPEN: u8 = 3;
const RESET: u8 = 4;

/// A 8 MiB host-managed disk of 1 MiB zones: one conventional, seven
/// sequential of 2048 blocks, at most 3 open.
const HM_OPTS: &str = "model-HM/zsize-1/conv-1/open-3";
const HM: &str = "model-HM/zsize-1/conv-1/open-3@";
const Z: u64 = 2048;

#[test]
fn the_disk_reports_itself_zoned() {
    let workers = Workers::start(1).unwrap();
    let f = TempPath::new("tcmu-handler-zbc", "identity.raw");
    let mut lun = Lun::open(&workers, &format!("{HM}{}", &f.cfg()), 8 * MIB, 512).unwrap();
    let inq = lun.run(&[0x12, 0, 0, 0, 96, 0], SimData::In(96));
    assert_good(&inq);
    assert_eq!(inq.data_in[0], 0x14, "host-managed device type");
    assert_eq!(&inq.data_in[16..31], b"TCMU ZBC device");
    let pages = lun.run(&[0x12, 1, 0x00, 0, 64, 0], SimData::In(64));
    assert!(pages.data_in[4..].contains(&0xb6));
    let b6 = lun.run(&[0x12, 1, 0xb6, 0, 64, 0], SimData::In(64));
    assert_good(&b6);
    assert_eq!(&b6.data_in[..5], &[0x14, 0xb6, 0, 0x3c, 1]);
    assert_eq!(&b6.data_in[16..20], &[0, 0, 0, 3], "maximum open zones");
    let rc = lun.run(&cdb::rw16(0x9e, 0x10, 0, 32), SimData::In(32));
    assert_good(&rc);
    assert_eq!(
        &rc.data_in[..12],
        &[0, 0, 0, 0, 0, 0, 0x3f, 0xff, 0, 0, 2, 0]
    );
    assert_eq!(rc.data_in[12], 0x10, "RC BASIS 01b");
    let zones = lun.report(0, 0);
    assert_eq!(zones.len(), 8);
    assert_eq!(zones[0], (1, 0, 0, Z, u64::MAX));
    assert_eq!(zones[1], (2, 1, Z, Z, Z));
    assert_eq!(zones[7], (2, 1, 7 * Z, Z, 7 * Z));
    lun.close();
    workers.shutdown();
}

#[test]
fn zone_rules_reach_the_initiator() {
    let workers = Workers::start(1).unwrap();
    let f = TempPath::new("tcmu-handler-zbc", "rules.raw");
    let mut lun = Lun::open(&workers, &format!("{HM}{}", &f.cfg()), 8 * MIB, 512).unwrap();
    let data: Vec<u8> = (0..8 * 512).map(|i| (i * 7 % 251) as u8).collect();
    assert_good(&lun.write(Z, &data));
    let r = lun.read(Z, 16);
    assert_good(&r);
    assert_eq!(&r.data_in[..4096], &data[..]);
    assert!(
        r.data_in[4096..].iter().all(|&b| b == 0),
        "past the write pointer: zeroes"
    );
    assert_eq!(
        lun.report(Z, 0x02)[0],
        (2, 2, Z, Z, Z + 8),
        "implicitly open"
    );
    // Not at the write pointer, across a zone end, conventional into
    // sequential (write and, host managed, read).
    assert_check(&lun.write(Z, &data), (5, 0x21, 0x04));
    assert_check(&lun.write(2 * Z - 4, &data), (5, 0x21, 0x04));
    assert_check(&lun.write(Z - 4, &data), (5, 0x21, 0x05));
    assert_check(&lun.read(Z - 4, 8), (5, 0x21, 0x06));
    assert_good(&lun.read(2 * Z - 4, 8));
    // Conventional zones: anywhere.
    assert_good(&lun.write(100, &data));
    assert_good(&lun.write(3, &data));
    // A full zone refuses writes.
    assert_good(&lun.zone_out(FINISH, Z, false));
    assert_eq!(lun.report(Z, 0)[0], (2, 0xe, Z, Z, 2 * Z));
    assert_check(&lun.write(2 * Z - 1, &data[..512]), (5, 0x24, 0x00));
    // What FINISH left past the old write pointer reads as zeroes.
    let r = lun.read(Z + 8, 8);
    assert!(r.data_in.iter().all(|&b| b == 0));
    // RESET makes it EMPTY and its data zeroes.
    assert_good(&lun.zone_out(RESET, Z, false));
    assert_eq!(lun.report(Z, 0)[0], (2, 1, Z, Z, Z));
    assert!(lun.read(Z, 8).data_in.iter().all(|&b| b == 0));
    // Zone ids: not a zone start, conventional, past the end.
    assert_check(&lun.zone_out(OPEN, Z + 1, false), (5, 0x24, 0));
    assert_check(&lun.zone_out(RESET, 0, false), (5, 0x24, 0));
    assert_check(&lun.zone_out(CLOSE, 8 * Z, false), (5, 0x21, 0));
    // A bad service action and reporting option.
    let mut bad = [0u8; 16];
    bad[0] = 0x95;
    bad[1] = 0x06;
    assert_check(&lun.run(&bad, SimData::In(512)), (5, 0x24, 0));
    bad[1] = 0;
    bad[10..14].copy_from_slice(&512u32.to_be_bytes());
    bad[14] = 0x08;
    assert_check(&lun.run(&bad, SimData::In(512)), (5, 0x24, 0));
    lun.close();
    workers.shutdown();
}

#[test]
fn open_zone_limits() {
    let workers = Workers::start(1).unwrap();
    let f = TempPath::new("tcmu-handler-zbc", "open.raw");
    let mut lun = Lun::open(&workers, &format!("{HM}{}", &f.cfg()), 8 * MIB, 512).unwrap();
    let block = vec![0xa5u8; 512];
    for z in 1..=3 {
        assert_good(&lun.zone_out(OPEN, z * Z, false));
    }
    assert_check(&lun.zone_out(OPEN, 4 * Z, false), (7, 0x55, 0x0e));
    assert_check(&lun.write(4 * Z, &block), (7, 0x55, 0x0e));
    assert_good(&lun.write(Z, &block));
    assert_good(&lun.zone_out(CLOSE, 2 * Z, false));
    // Room again: an implicit open, then an explicit open closes it.
    assert_good(&lun.write(4 * Z, &block));
    assert_eq!(lun.report(0, 0x02).len(), 1);
    assert_good(&lun.zone_out(OPEN, 5 * Z, false));
    assert!(lun.report(0, 0x02).is_empty());
    assert_eq!(lun.report(0, 0x04), vec![(2, 4, 4 * Z, Z, 4 * Z + 1)]);
    assert_eq!(lun.report(0, 0x03).len(), 3);
    assert_good(&lun.zone_out(CLOSE, 0, true));
    assert!(lun.report(0, 0x03).is_empty());
    // FINISH ALL and RESET ALL.
    assert_good(&lun.zone_out(FINISH, 0, true));
    assert_eq!(lun.report(0, 0x05).len(), 2);
    assert_good(&lun.zone_out(RESET, 0, true));
    assert_eq!(lun.report(0, 0x01).len(), 7);
    lun.close();
    workers.shutdown();
}

#[test]
fn state_and_data_survive_reopening() {
    let workers = Workers::start(1).unwrap();
    let f = TempPath::new("tcmu-handler-zbc", "persist.raw");
    let cfg = format!("{HM}{}", &f.cfg());
    let data: Vec<u8> = (0..4096).map(|i| (i % 253) as u8).collect();
    let before = {
        let mut lun = Lun::open(&workers, &cfg, 8 * MIB, 512).unwrap();
        assert_good(&lun.write(Z, &data));
        assert_good(&lun.write(7, &data));
        assert_good(&lun.zone_out(OPEN, 3 * Z, false));
        assert_good(&lun.write(4 * Z, &data));
        assert_good(&lun.zone_out(CLOSE, 4 * Z, false));
        assert_good(&lun.zone_out(FINISH, 5 * Z, false));
        // Zone records are in the file as soon as they change, before any
        // SYNCHRONIZE CACHE or close: a killed daemon loses nothing.
        let raw = fs::read(f.path()).unwrap();
        let record = |i: usize| &raw[48 + 64 * i..48 + 64 * (i + 1)];
        assert_eq!(
            record(1)[16..24],
            (Z + 8).to_le_bytes(),
            "zone 1's write pointer"
        );
        assert_eq!(record(3)[25], 3, "zone 3 explicitly open");
        assert_eq!(record(4)[25], 4, "zone 4 closed");
        assert_eq!(record(5)[25], 0xe, "zone 5 full");
        let r = lun.report(0, 0);
        lun.close();
        r
    };
    for again in [cfg.clone(), format!("/{}", &f.cfg())] {
        let mut lun = Lun::open(&workers, &again, 8 * MIB, 512).unwrap();
        assert_eq!(lun.report(0, 0), before, "reopened with {again}");
        assert_eq!(lun.read(Z, 8).data_in, data);
        assert_eq!(lun.read(7, 8).data_in, data);
        lun.close();
    }
    // A different layout with data in the file: refused, with the reason.
    let e = Lun::open(&workers, &format!("zsize-2@{}", &f.cfg()), 8 * MIB, 512)
        .err()
        .unwrap();
    assert!(e.contains("zsize-2 (the file has zsize-1)"), "{e}");
    assert!(e.contains("3 of 7 sequential zones written"), "{e}");
    let e = Lun::open(&workers, &format!("/{}", &f.cfg()), 16 * MIB, 512)
        .err()
        .unwrap();
    assert!(e.contains("a 16777216-byte device"), "{e}");
    // Another open limit is changed in place.
    let mut lun = Lun::open(&workers, &format!("open-1@{}", &f.cfg()), 8 * MIB, 512).unwrap();
    let b6 = lun.run(&[0x12, 1, 0xb6, 0, 64, 0], SimData::In(64));
    assert_eq!(&b6.data_in[16..20], &[0, 0, 0, 1]);
    // With no data left, another layout reformats.
    assert_good(&lun.zone_out(RESET, 0, true));
    assert_good(&lun.run(&[0x04, 0, 0, 0, 0, 0], SimData::None));
    lun.close();
    let mut lun = Lun::open(
        &workers,
        &format!("model-HA/zsize-2@{}", &f.cfg()),
        8 * MIB,
        512,
    )
    .unwrap();
    let zones = lun.report(0, 0);
    assert_eq!(zones.len(), 4);
    assert_eq!(zones[1], (3, 1, 4096, 4096, 4096));
    lun.close();
    workers.shutdown();
}

#[test]
fn files_that_are_not_zoned_disks_are_refused() {
    let workers = Workers::start(1).unwrap();
    let f = TempPath::new("tcmu-handler-zbc", "foreign.raw");
    fs::write(f.path(), b"precious data").unwrap();
    let e = Lun::open(&workers, &format!("/{}", &f.cfg()), 8 * MIB, 512)
        .err()
        .unwrap();
    assert!(e.contains("holds data but no zbc metadata"), "{e}");
    assert_eq!(fs::read(f.path()).unwrap(), b"precious data");
    // All holes: formatted.
    fs::write(f.path(), b"").unwrap();
    fs::File::options()
        .write(true)
        .open(f.path())
        .unwrap()
        .set_len(MIB)
        .unwrap();
    Lun::open(&workers, &format!("{HM}{}", &f.cfg()), 8 * MIB, 512)
        .unwrap()
        .close();
    // Damaged metadata is reported, not formatted over.
    let mut bytes = fs::read(f.path()).unwrap();
    bytes[48 + 64 * 2 + 25] = 0x4; // zone 2 CLOSED at its start
    fs::write(f.path(), &bytes).unwrap();
    let e = Lun::open(&workers, &format!("/{}", &f.cfg()), 8 * MIB, 512)
        .err()
        .unwrap();
    assert!(
        e.contains("damaged zbc metadata: zone 2: condition Closed"),
        "{e}"
    );
    workers.shutdown();
}

#[test]
fn tcmu_runners_files_are_served_and_brought_to_version_1() {
    let workers = Workers::start(1).unwrap();
    let f = TempPath::new("tcmu-handler-zbc", "v0.raw");
    let cfg = format!("{HM}{}", &f.cfg());
    let mut lun = Lun::open(&workers, &cfg, 8 * MIB, 512).unwrap();
    assert_good(&lun.write(Z, &[7u8; 4096]));
    lun.close();
    // What tcmu-runner writes: the same layout, version byte 0.
    let mut bytes = fs::read(f.path()).unwrap();
    assert_eq!(bytes[44], 1);
    bytes[44] = 0;
    fs::write(f.path(), &bytes).unwrap();
    let mut lun = Lun::open(&workers, &cfg, 8 * MIB, 512).unwrap();
    assert_eq!(
        lun.report(Z, 0)[0],
        (2, 2, Z, Z, Z + 8),
        "implicitly open, as it was left"
    );
    assert_eq!(lun.read(Z, 8).data_in, vec![7u8; 4096]);
    lun.close();
    assert_eq!(fs::read(f.path()).unwrap()[44], 1, "version 1 written");
    // A newer version is refused.
    let mut bytes = fs::read(f.path()).unwrap();
    bytes[44] = 2;
    fs::write(f.path(), &bytes).unwrap();
    let e = Lun::open(&workers, &cfg, 8 * MIB, 512).err().unwrap();
    assert!(e.contains("metadata version 2 is newer"), "{e}");
    workers.shutdown();
}

#[test]
fn host_aware_and_4k_blocks() {
    let workers = Workers::start(1).unwrap();
    let f = TempPath::new("tcmu-handler-zbc", "ha4k.raw");
    let mut lun = Lun::open(
        &workers,
        &format!("model-HA/lba-4096/zsize-1/conv-1@{}", &f.cfg()),
        8 * MIB,
        4096,
    )
    .unwrap();
    let inq = lun.run(&[0x12, 0, 0, 0, 36, 0], SimData::In(36));
    assert_eq!(inq.data_in[0], 0x00);
    let b1 = lun.run(&[0x12, 1, 0xb1, 0, 64, 0], SimData::In(64));
    assert_eq!(b1.data_in[8], 0x10, "ZONED: host aware");
    let zones = lun.report(0, 0);
    assert_eq!(zones.len(), 8);
    assert_eq!(zones[1], (3, 1, 256, 256, 256));
    // Sequential write preferred: anywhere, across zones.
    let data = vec![0x5au8; 8192];
    assert_good(&lun.write(300, &data));
    assert_good(&lun.write(511, &data));
    let zones = lun.report(0, 0);
    assert_eq!(
        zones[1],
        (3, 0xe, 256, 256, 512),
        "written to its end: full"
    );
    assert_eq!(zones[2], (3, 2, 512, 256, 513), "implicitly open");
    assert_eq!(lun.read(300, 2).data_in, data);
    lun.close();
    workers.shutdown();
}

#[test]
fn write_same_is_checked_whole_and_reconfig_changes_faults() {
    let workers = Workers::start(1).unwrap();
    let f = TempPath::new("tcmu-handler-zbc", "ws.raw");
    let mut lun = Lun::open(&workers, &format!("{HM}{}", &f.cfg()), 8 * MIB, 512).unwrap();
    let block = vec![0x11u8; 512];
    let mut ws = [0u8; 16];
    ws[0] = 0x93;
    ws[2..10].copy_from_slice(&Z.to_be_bytes());
    ws[10..14].copy_from_slice(&(Z as u32 + 1).to_be_bytes());
    assert_check(&lun.run(&ws, SimData::Out(block.clone())), (5, 0x21, 0x05));
    assert_eq!(lun.report(Z, 0)[0].4, Z, "nothing written");
    ws[10..14].copy_from_slice(&16u32.to_be_bytes());
    assert_good(&lun.run(&ws, SimData::Out(block)));
    assert_eq!(lun.report(Z, 0)[0].4, Z + 16);
    // Faults, through a new dev_config.
    lun.lun
        .reconfig(ReconfigRequest::Config(format!(
            "{HM_OPTS}/readonly-2/offline-3@{}",
            &f.cfg()
        )))
        .unwrap();
    assert_eq!(lun.report(0, 0x06).len(), 1);
    assert_check(&lun.write(2 * Z, &[0; 512]), (7, 0x27, 0x08));
    assert_check(&lun.read(3 * Z, 1), (7, 0x2c, 0x0e));
    assert_check(&lun.zone_out(RESET, 3 * Z, false), (7, 0x2c, 0x0e));
    let e = lun
        .lun
        .reconfig(ReconfigRequest::Config(format!("zsize-2@{}", &f.cfg())))
        .unwrap_err();
    assert!(
        Report(&e).to_string().contains("keeps its layout"),
        "{}",
        Report(&e)
    );
    lun.lun
        .reconfig(ReconfigRequest::Config(format!("{HM}{}", &f.cfg())))
        .unwrap();
    assert_good(&lun.write(2 * Z, &[0; 512]));
    assert!(lun.lun.reconfig(ReconfigRequest::Size(16 * MIB)).is_err());
    lun.close();
    workers.shutdown();
}
