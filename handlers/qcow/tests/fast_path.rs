//! The qcow2 fast path under load: many reads and writes in flight over
//! the simulated kernel, on clusters the mapping cache knows, racing
//! UNMAPs of other clusters whose host clusters are then freed (at
//! SYNCHRONIZE CACHE) and reallocated to other guest offsets. A stale
//! mapping would read or write another offset's data; every read is
//! checked against a model of the disk, and the image against it at the
//! end (qemu-img compare, qemu-img check).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use tcmu_core::sim::SimData;
use tcmu_handler_qcow::QcowFactory;
use tcmu_runtime::testing::{assert_good, cdb, SimLun};
use tcmu_runtime::{DeviceConfig, Workers};

const MIB: u64 = 1 << 20;
const BS: usize = 512;
const CLUSTER: usize = 64 * 1024;
const SIZE: usize = 8 * MIB as usize;
const CLUSTERS: usize = SIZE / CLUSTER;
const IO: usize = 4096;

fn qemu_img(dir: &Path, args: &[&str]) {
    let out = Command::new("qemu-img")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("qemu-img must be installed (Debian's qemu-utils)");
    assert!(
        out.status.success(),
        "qemu-img {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A small deterministic generator (xorshift), so failures replay.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn fill(len: usize, seed: u64) -> Vec<u8> {
    (0..len as u64)
        .map(|i| (i.wrapping_mul(131).wrapping_add(seed.wrapping_mul(7)) % 253) as u8 | 1)
        .collect()
}

fn read_cdb(offset: usize, len: usize) -> [u8; 16] {
    cdb::rw16(0x88, 0, (offset / BS) as u64, (len / BS) as u32)
}

fn write_cdb(offset: usize, len: usize) -> [u8; 16] {
    cdb::rw16(0x8a, 0, (offset / BS) as u64, (len / BS) as u32)
}

#[test]
fn fast_path_io_racing_unmaps_stays_right() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("race.qcow2");
    qemu_img(
        dir.path(),
        &["create", "-q", "-f", "qcow2", img.to_str().unwrap(), "8M"],
    );
    let workers = Workers::start(1).unwrap();
    let config = DeviceConfig::new("race", img.to_str().unwrap(), SIZE as u64, BS as u32)
        .with_write_cache(true);
    let mut lun = SimLun::open(&workers, Arc::new(QcowFactory), config).unwrap();

    // Allocate every cluster (the slow path, which fills the cache).
    let mut model = vec![0u8; SIZE];
    for at in (0..SIZE).step_by(256 * 1024) {
        let data = fill(256 * 1024, at as u64);
        assert_good(&lun.run(&write_cdb(at, data.len()), SimData::Out(data.clone())));
        model[at..][..data.len()].copy_from_slice(&data);
    }

    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for round in 0..24u64 {
        // Clusters to discard this round; reads and writes keep off them.
        let mut discard = HashSet::new();
        while discard.len() < 6 {
            discard.insert(rng.below(CLUSTERS));
        }
        let mut busy: HashSet<usize> = HashSet::new(); // 4 KiB blocks written
        let mut reads: HashMap<u16, usize> = HashMap::new();
        let mut writes: Vec<(usize, Vec<u8>)> = Vec::new();
        let mut posted = 0;
        // Reads and writes first, so some are in flight when the UNMAP
        // arrives, then more after it.
        for phase in 0..2 {
            for _ in 0..24 {
                let cluster = loop {
                    let c = rng.below(CLUSTERS);
                    if !discard.contains(&c) {
                        break c;
                    }
                };
                let block = cluster * (CLUSTER / IO) + rng.below(CLUSTER / IO);
                let at = block * IO;
                if rng.below(2) == 0 {
                    if busy.insert(block) {
                        let data = fill(IO, round * 1000 + at as u64);
                        lun.post(&write_cdb(at, IO), SimData::Out(data.clone()));
                        writes.push((at, data));
                        posted += 1;
                    }
                } else if !busy.contains(&block) {
                    // No write to this block is in flight (those come
                    // later in `busy` only if posted before: checked).
                    busy.insert(block);
                    let id = lun.post(&read_cdb(at, IO), SimData::In(IO));
                    reads.insert(id, at);
                    posted += 1;
                }
            }
            if phase == 0 {
                // One UNMAP per cluster (one descriptor each, as the
                // device advertises), all in flight together.
                for &c in &discard {
                    let (unmap, list) =
                        cdb::unmap(&[(((c * CLUSTER) / BS) as u64, (CLUSTER / BS) as u32)]);
                    lun.post(&unmap, SimData::Out(list));
                    posted += 1;
                }
            }
        }
        let done = lun.collect(posted);
        assert_eq!(done.len(), posted);
        for c in &done {
            assert_good(c);
            if let Some(&at) = reads.get(&c.cmd_id) {
                assert!(
                    c.data_in[..] == model[at..][..IO],
                    "round {round}: read at {at} is not what was written there"
                );
            }
        }
        for &c in &discard {
            model[c * CLUSTER..][..CLUSTER].fill(0);
        }
        for (at, data) in writes {
            model[at..][..IO].copy_from_slice(&data);
        }
        // Free the discarded clusters; the next round's writes to them
        // allocate again, possibly reusing them for other offsets.
        assert_good(&lun.run(&cdb::SYNCHRONIZE_CACHE_10, SimData::None));
        // Rewrite two discarded clusters whole (slow path: allocation).
        for &c in discard.iter().take(2) {
            let data = fill(CLUSTER, round * 7 + c as u64);
            assert_good(&lun.run(&write_cdb(c * CLUSTER, CLUSTER), SimData::Out(data.clone())));
            model[c * CLUSTER..][..CLUSTER].copy_from_slice(&data);
        }
    }

    // Everything, through the device and then through QEMU.
    for at in (0..SIZE).step_by(256 * 1024) {
        let done = lun.run(&read_cdb(at, 256 * 1024), SimData::In(256 * 1024));
        assert_good(&done);
        assert!(done.data_in[..] == model[at..][..256 * 1024], "at {at}");
    }
    lun.close();
    workers.shutdown();
    let raw = dir.path().join("expected.raw");
    std::fs::write(&raw, &model).unwrap();
    qemu_img(dir.path(), &["check", "-q", img.to_str().unwrap()]);
    qemu_img(
        dir.path(),
        &[
            "compare",
            "-q",
            "-f",
            "qcow2",
            "-F",
            "raw",
            img.to_str().unwrap(),
            raw.to_str().unwrap(),
        ],
    );
}
