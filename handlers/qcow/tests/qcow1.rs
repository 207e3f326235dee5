//! qcow version 1 images end to end: made by `qemu-img` (and, where
//! qemu-img cannot, by hand), served by the real runtime over the
//! simulated kernel, then judged by qemu-img (`compare` against the bytes
//! the test expects) and by the driver's own consistency check, as
//! `qemu-img check` does not support the format. Backing files are
//! compared byte for byte before and after.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use tcmu_core::sim::{SimCompletion, SimData};
use tcmu_handler_qcow::qcow1::check::check;
use tcmu_handler_qcow::QcowFactory;
use tcmu_runtime::testing::{assert_good, cdb, SimLun};
use tcmu_runtime::{DeviceConfig, HandlerFactory, Report, Workers};

const MIB: u64 = 1 << 20;
const BS: usize = 512;

/// Runs qemu-img (Debian's qemu-utils) in `dir`; returns whether it
/// succeeded, after showing what it said.
fn qemu_img_in(dir: &Path, args: &[&str]) -> bool {
    let out = Command::new("qemu-img")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("qemu-img must be installed (Debian's qemu-utils)");
    if !out.status.success() {
        eprintln!(
            "qemu-img {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out.status.success()
}

/// Runs qemu-img in `dir`, which must succeed.
#[track_caller]
fn qemu_img(dir: &Path, args: &[&str]) {
    assert!(qemu_img_in(dir, args), "qemu-img {args:?} failed");
}

/// `len` bytes of a pattern that differs every byte and with `seed`.
fn pattern(len: usize, seed: u32) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(31).wrapping_add(seed) % 251) as u8)
        .collect()
}

/// A raw file's bytes with a recognisable pattern in some of its clusters
/// and zeroes elsewhere (so compression has something to squeeze).
fn base_content(len: usize) -> Vec<u8> {
    let mut b = vec![0u8; len];
    for (n, chunk) in b.chunks_mut(64 * 1024).enumerate() {
        if n % 3 != 1 {
            let len = chunk.len().min(16 * 1024);
            chunk[..len].copy_from_slice(&pattern(len, n as u32));
        }
    }
    b
}

/// A scratch folder for one test, removed at the end.
fn scratch() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// One device over an image, with the expected disk contents alongside.
struct Lun {
    lun: SimLun,
}

impl Lun {
    fn open(workers: &Workers, image: &Path, size: u64) -> Result<Self, String> {
        let config = DeviceConfig::new("qcow1", image.to_str().unwrap(), size, BS as u32)
            .with_write_cache(true);
        SimLun::open(workers, Arc::new(QcowFactory), config)
            .map(|lun| Self { lun })
            .map_err(|e| Report(&e).to_string())
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> SimCompletion {
        let blocks = (data.len() / BS) as u32;
        self.lun.run(
            &cdb::rw16(0x8a, 0, offset / BS as u64, blocks),
            SimData::Out(data.to_vec()),
        )
    }

    fn read(&mut self, offset: u64, len: usize) -> Vec<u8> {
        let blocks = (len / BS) as u32;
        let done = self.lun.run(
            &cdb::rw16(0x88, 0, offset / BS as u64, blocks),
            SimData::In(len),
        );
        assert_good(&done);
        done.data_in
    }

    /// Reads the whole device, 256 KiB at a time.
    fn read_all(&mut self, size: u64) -> Vec<u8> {
        let mut all = Vec::with_capacity(size as usize);
        let mut at = 0;
        while at < size {
            let n = (size - at).min(256 * 1024) as usize;
            all.extend(self.read(at, n));
            at += n as u64;
        }
        all
    }

    fn sync(&mut self) {
        assert_good(&self.lun.run(&cdb::SYNCHRONIZE_CACHE_10, SimData::None));
    }
}

/// Writes `data` at `offset` through the device and into `expected`.
fn write_both(lun: &mut Lun, expected: &mut [u8], offset: u64, data: &[u8]) {
    assert_good(&lun.write(offset, data));
    expected[offset as usize..offset as usize + data.len()].copy_from_slice(data);
}

/// The writes every test does, as (offset, length, pattern seed): single
/// blocks, a write across clusters and the first L2 table boundary (2 MiB,
/// for 4 KiB clusters and for 512-byte ones), partial clusters, the last
/// block, an overwrite, and a write of two ring buffers' worth.
fn patterns(size: u64) -> Vec<(u64, usize, u32)> {
    vec![
        (0, BS, 1),
        (5 * BS as u64, 3 * BS, 2),
        (2 * MIB - 3 * BS as u64, 200 * 1024, 3),
        (3 * MIB + 1536, BS, 4),
        (size - BS as u64, BS, 5),
        (2 * MIB, 8 * 1024, 6),
        (5 * MIB + 4096, 512 * 1024, 7),
    ]
}

/// Writes [`patterns`] through the device and into `expected`.
fn write_patterns(lun: &mut Lun, expected: &mut [u8]) {
    for (at, len, seed) in patterns(expected.len() as u64) {
        write_both(lun, expected, at, &pattern(len, seed));
    }
}

/// The image matches `expected` (qemu-img compare reads the image with
/// QEMU's own qcow driver) and the driver's check finds nothing wrong.
#[track_caller]
fn assert_image(dir: &Path, image: &Path, expected: &[u8]) {
    let raw = dir.join("expected.raw");
    fs::write(&raw, expected).unwrap();
    let report = check(image).unwrap();
    assert!(report.problems.is_empty(), "{report:#?}");
    let same = qemu_img_in(
        dir,
        &[
            "compare",
            "-f",
            "qcow",
            "-F",
            "raw",
            image.to_str().unwrap(),
            raw.to_str().unwrap(),
        ],
    );
    if !same {
        let got = dir.join("got.raw");
        qemu_img(
            dir,
            &[
                "convert",
                "-f",
                "qcow",
                "-O",
                "raw",
                image.to_str().unwrap(),
                got.to_str().unwrap(),
            ],
        );
        let got = fs::read(&got).unwrap();
        let first = got.iter().zip(expected).position(|(a, b)| a != b);
        panic!("qemu-img compare: the image differs from the expected bytes, first at {first:?}");
    }
}

/// Serves `image` (over whatever backing it has), writes the patterns,
/// reads everything back, closes, checks with qemu-img; then reopens and
/// reads it all again. `expected` starts as what the image holds.
fn serve_and_verify(dir: &Path, image: &Path, mut expected: Vec<u8>) {
    let size = expected.len() as u64;
    let workers = Workers::start(1).unwrap();
    {
        let mut lun = Lun::open(&workers, image, size).unwrap();
        assert!(
            lun.read_all(size) == expected,
            "the image reads back as it was made"
        );
        write_patterns(&mut lun, &mut expected);
        lun.sync();
        assert!(lun.read_all(size) == expected, "the writes read back");
        lun.lun.close();
    }
    assert_image(dir, image, &expected);
    {
        let mut lun = Lun::open(&workers, image, size).unwrap();
        assert!(
            lun.read_all(size) == expected,
            "the writes read back after reopening"
        );
    }
    workers.shutdown();
}

#[test]
fn a_plain_image_reads_zeroes_and_keeps_writes() {
    let dir = scratch();
    let img = dir.path().join("plain.qcow");
    qemu_img(
        dir.path(),
        &["create", "-q", "-f", "qcow", "plain.qcow", "8M"],
    );
    serve_and_verify(dir.path(), &img, vec![0; 8 * MIB as usize]);
    let report = check(&img).unwrap();
    assert!(
        report.data_clusters > 0 && report.l2_tables >= 3,
        "{report:?}"
    );
}

#[test]
fn an_overlay_on_a_raw_file_named_relative_to_its_folder() {
    let dir = scratch();
    let content = base_content(8 * MIB as usize);
    fs::write(dir.path().join("base.raw"), &content).unwrap();
    // A relative name: resolved against the overlay's folder, not the
    // daemon's working directory.
    qemu_img(
        dir.path(),
        &[
            "create", "-q", "-f", "qcow", "-b", "base.raw", "-F", "raw", "top.qcow",
        ],
    );
    serve_and_verify(dir.path(), &dir.path().join("top.qcow"), content.clone());
    assert!(
        fs::read(dir.path().join("base.raw")).unwrap() == content,
        "the backing file is untouched"
    );
}

#[test]
fn an_overlay_on_a_smaller_raw_file_reads_zeroes_past_its_end() {
    let dir = scratch();
    let content = base_content(3 * MIB as usize + 1000);
    fs::write(dir.path().join("base.raw"), &content).unwrap();
    qemu_img(
        dir.path(),
        &[
            "create", "-q", "-f", "qcow", "-b", "base.raw", "-F", "raw", "top.qcow", "8M",
        ],
    );
    let mut expected = content.clone();
    expected.resize(8 * MIB as usize, 0);
    serve_and_verify(dir.path(), &dir.path().join("top.qcow"), expected);
    assert!(fs::read(dir.path().join("base.raw")).unwrap() == content);
}

#[test]
fn an_overlay_on_a_qcow2_image() {
    let dir = scratch();
    let content = base_content(8 * MIB as usize);
    fs::write(dir.path().join("content.raw"), &content).unwrap();
    qemu_img(
        dir.path(),
        &[
            "convert",
            "-f",
            "raw",
            "-O",
            "qcow2",
            "content.raw",
            "base.qcow2",
        ],
    );
    let before = fs::read(dir.path().join("base.qcow2")).unwrap();
    qemu_img(
        dir.path(),
        &[
            "create",
            "-q",
            "-f",
            "qcow",
            "-b",
            "base.qcow2",
            "-F",
            "qcow2",
            "top.qcow",
        ],
    );
    serve_and_verify(dir.path(), &dir.path().join("top.qcow"), content);
    assert!(fs::read(dir.path().join("base.qcow2")).unwrap() == before);
}

#[test]
fn a_chain_of_qcow_images_over_raw() {
    let dir = scratch();
    let content = base_content(8 * MIB as usize);
    fs::write(dir.path().join("content.raw"), &content).unwrap();
    // qcow over raw, with a pattern of its own; then qcow over that.
    qemu_img(
        dir.path(),
        &[
            "create",
            "-q",
            "-f",
            "qcow",
            "-b",
            "content.raw",
            "-F",
            "raw",
            "mid.qcow",
        ],
    );
    let mut expected = content.clone();
    {
        let workers = Workers::start(1).unwrap();
        let mut lun = Lun::open(&workers, &dir.path().join("mid.qcow"), 8 * MIB).unwrap();
        write_both(&mut lun, &mut expected, MIB + 512, &pattern(64 * 1024, 9));
        drop(lun);
        workers.shutdown();
    }
    let mid = fs::read(dir.path().join("mid.qcow")).unwrap();
    qemu_img(
        dir.path(),
        &[
            "create", "-q", "-f", "qcow", "-b", "mid.qcow", "-F", "qcow", "top.qcow",
        ],
    );
    serve_and_verify(dir.path(), &dir.path().join("top.qcow"), expected);
    assert!(fs::read(dir.path().join("mid.qcow")).unwrap() == mid);
    assert!(fs::read(dir.path().join("content.raw")).unwrap() == content);
}

#[test]
fn a_compressed_image_reads_and_rewrites_its_clusters() {
    let dir = scratch();
    let content = base_content(8 * MIB as usize);
    fs::write(dir.path().join("content.raw"), &content).unwrap();
    // qemu-img 10.0 exits 1, silently, after writing a good compressed
    // qcow image (its final empty compressed write fails): judge the image
    // by what it holds, not by the exit status.
    let args = "convert -c -f raw -O qcow content.raw c.qcow";
    qemu_img_in(dir.path(), &args.split(' ').collect::<Vec<_>>());
    let img = dir.path().join("c.qcow");
    let args = "compare -f qcow -F raw c.qcow content.raw";
    qemu_img(dir.path(), &args.split(' ').collect::<Vec<_>>());
    let report = check(&img).unwrap();
    assert!(
        report.compressed_clusters > 100,
        "qemu-img compressed: {report:?}"
    );
    // The writes hit compressed clusters part way (512 bytes of 4 KiB).
    serve_and_verify(dir.path(), &img, content);
}

/// A qcow version 1 image written by hand: `cluster_bits`, `l2_bits`,
/// `size` bytes, over `backing` (a name stored as given). qemu-img cannot
/// make one with a backing file and clusters larger than a block.
fn handmade(path: &Path, size: u64, cluster_bits: u8, l2_bits: u8, backing: Option<&str>) {
    let name = backing.unwrap_or("").as_bytes();
    let l1_offset = (48 + name.len() as u64).next_multiple_of(8);
    let l1_entries = size.div_ceil(1 << (cluster_bits + l2_bits));
    let mut h = vec![0u8; (l1_offset + 8 * l1_entries) as usize];
    h[..8].copy_from_slice(b"QFI\xfb\0\0\0\x01");
    if backing.is_some() {
        h[8..16].copy_from_slice(&48u64.to_be_bytes());
        h[16..20].copy_from_slice(&(name.len() as u32).to_be_bytes());
        h[48..48 + name.len()].copy_from_slice(name);
    }
    h[24..32].copy_from_slice(&size.to_be_bytes());
    h[32] = cluster_bits;
    h[33] = l2_bits;
    h[40..48].copy_from_slice(&l1_offset.to_be_bytes());
    fs::write(path, h).unwrap();
}

#[test]
fn partial_clusters_over_a_backing_file_keep_its_bytes() {
    // 64 KiB clusters over raw: every 512-byte write fills a cluster from
    // the backing file first.
    let dir = scratch();
    let content = base_content(8 * MIB as usize);
    fs::write(dir.path().join("base.raw"), &content).unwrap();
    let img = dir.path().join("big.qcow");
    handmade(&img, 8 * MIB, 16, 9, Some("base.raw"));
    // QEMU agrees on what the hand-made image holds.
    assert_image(dir.path(), &img, &content);
    serve_and_verify(dir.path(), &img, content.clone());
    assert!(fs::read(dir.path().join("base.raw")).unwrap() == content);
}

#[test]
fn an_absolute_backing_name_and_a_size_that_is_not_whole_clusters() {
    let dir = scratch();
    let base = dir.path().join("base.raw");
    let content = base_content(4 * MIB as usize);
    fs::write(&base, &content).unwrap();
    let img = dir.path().join("odd.qcow");
    // 8 MiB minus 3 blocks: the last cluster is partly beyond the disk.
    let size = 8 * MIB - 3 * BS as u64;
    handmade(&img, size, 12, 8, Some(base.to_str().unwrap()));
    let mut expected = content.clone();
    expected.resize(size as usize, 0);
    serve_and_verify(dir.path(), &img, expected);
}

#[test]
fn concurrent_writes_to_one_new_cluster_all_land() {
    let dir = scratch();
    let img = dir.path().join("race.qcow");
    handmade(&img, 8 * MIB, 16, 9, None);
    let workers = Workers::start(1).unwrap();
    let mut lun = Lun::open(&workers, &img, 8 * MIB).unwrap();
    let mut expected = vec![0u8; 8 * MIB as usize];
    // 32 single-block writes into the same two 64 KiB clusters, in flight
    // together: each allocates or finds the cluster another allocated.
    for i in 0..32u64 {
        let data = pattern(BS, 100 + i as u32);
        let at = MIB + i * 4096 + 512;
        expected[at as usize..at as usize + BS].copy_from_slice(&data);
        lun.lun
            .post(&cdb::rw16(0x8a, 0, at / BS as u64, 1), SimData::Out(data));
    }
    for done in lun.lun.collect(32) {
        assert_good(&done);
    }
    assert!(lun.read_all(8 * MIB) == expected);
    drop(lun);
    workers.shutdown();
    assert_image(dir.path(), &img, &expected);
    let report = check(&img).unwrap();
    assert_eq!(report.data_clusters, 2, "{report:?}");
}

/// What `check_config` and opening say about `image`.
fn refusal(image: &Path) -> String {
    match QcowFactory.check_config(image.to_str().unwrap()) {
        Err(e) => Report(&e).to_string(),
        Ok(()) => {
            let workers = Workers::start(1).unwrap();
            let e = Lun::open(&workers, image, MIB).err();
            workers.shutdown();
            e.expect("the image is refused")
        }
    }
}

/// Overwrites `bytes` at `at` of the file at `path`.
fn patch(path: &Path, at: usize, bytes: &[u8]) {
    let mut b = fs::read(path).unwrap();
    b[at..at + bytes.len()].copy_from_slice(bytes);
    fs::write(path, b).unwrap();
}

#[test]
fn encrypted_and_malformed_images_are_refused_with_the_reason() {
    let dir = scratch();
    let make = |name: &str| -> PathBuf {
        qemu_img(dir.path(), &["create", "-q", "-f", "qcow", name, "8M"]);
        dir.path().join(name)
    };
    let encrypted = make("aes.qcow");
    patch(&encrypted, 36, &1u32.to_be_bytes());
    let e = refusal(&encrypted);
    assert!(
        e.contains("aes.qcow cannot be served: the image is encrypted (crypt_method 1)"),
        "{e}"
    );

    let clusters = make("clusters.qcow");
    patch(&clusters, 32, &[20]);
    let e = refusal(&clusters);
    assert!(e.contains("cluster_bits 20 is out of range"), "{e}");

    let l1 = make("l1.qcow");
    patch(&l1, 40, &(1u64 << 40).to_be_bytes());
    let e = refusal(&l1);
    assert!(
        e.contains("the L1 table (32 bytes at 0x10000000000) ends past the end of the file"),
        "{e}"
    );

    let backing = make("backing.qcow");
    let mut b = fs::read(&backing).unwrap();
    let end = b.len() as u64;
    b[8..16].copy_from_slice(&end.to_be_bytes());
    b[16..20].copy_from_slice(&8u32.to_be_bytes());
    b.extend_from_slice(b"gone.raw");
    fs::write(&backing, b).unwrap();
    let e = refusal(&backing);
    assert!(
        e.contains("cannot open its backing file") && e.contains("gone.raw"),
        "{e}"
    );

    let truncated = dir.path().join("short.qcow");
    fs::write(&truncated, b"QFI\xfb\0\0\0\x01\0\0").unwrap();
    let e = refusal(&truncated);
    assert!(
        e.contains("the qcow header is truncated (10 of 48 bytes)"),
        "{e}"
    );

    let version = make("v9.qcow");
    patch(&version, 7, &[9]);
    let e = refusal(&version);
    assert!(
        e.contains("qcow version 9 image; only qcow (version 1) and qcow2"),
        "{e}"
    );
}

#[test]
fn a_backing_chain_that_loops_is_refused() {
    let dir = scratch();
    let a = dir.path().join("a.qcow");
    let b = dir.path().join("b.qcow");
    handmade(&a, 8 * MIB, 12, 9, Some("b.qcow"));
    handmade(&b, 8 * MIB, 12, 9, Some("a.qcow"));
    let e = refusal(&a);
    assert!(e.contains("deeper than 16 images (a loop?)"), "{e}");
}

/// The crash test's child: writes, flushes, writes on, dies (SIGABRT, no
/// close, no destructors) before any further flush.
const CRASH_CHILD: &str = "TCMU_QCOW1_CRASH_IMAGE";

#[test]
fn a_kill_after_synchronize_cache_leaves_a_consistent_image() {
    if let Ok(image) = std::env::var(CRASH_CHILD) {
        let workers = Workers::start(1).unwrap();
        let mut lun = Lun::open(&workers, Path::new(&image), 8 * MIB).unwrap();
        let mut expected = vec![0u8; 8 * MIB as usize];
        write_patterns(&mut lun, &mut expected);
        lun.sync();
        // After the flush: more allocations, then death mid-stream.
        for i in 0..64u64 {
            lun.lun.post(
                &cdb::rw16(0x8a, 0, (6 * MIB + i * 8192) / BS as u64, 1),
                SimData::Out(pattern(BS, 200 + i as u32)),
            );
        }
        std::process::abort();
    }
    let dir = scratch();
    let img = dir.path().join("crash.qcow");
    qemu_img(
        dir.path(),
        &["create", "-q", "-f", "qcow", "crash.qcow", "8M"],
    );
    let status = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_kill_after_synchronize_cache_leaves_a_consistent_image",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CRASH_CHILD, &img)
        .status()
        .unwrap();
    assert!(!status.success(), "the child dies: {status}");
    let report = check(&img).unwrap();
    assert!(report.problems.is_empty(), "{report:#?}");
    // What was written before the flush is all there (whatever of the
    // later writes made it, QEMU reads the image without complaint).
    let mut expected = vec![0u8; 8 * MIB as usize];
    let workers = Workers::start(1).unwrap();
    let mut lun = Lun::open(&workers, &img, 8 * MIB).unwrap();
    let got = lun.read_all(8 * MIB);
    drop(lun);
    workers.shutdown();
    for (at, len, seed) in patterns(8 * MIB) {
        expected[at as usize..at as usize + len].copy_from_slice(&pattern(len, seed));
    }
    assert!(
        got[..6 * MIB as usize] == expected[..6 * MIB as usize],
        "the flushed writes survive"
    );
    let raw = dir.path().join("now.raw");
    fs::write(&raw, &got).unwrap();
    qemu_img(
        dir.path(),
        &[
            "compare",
            "-f",
            "qcow",
            "-F",
            "raw",
            "crash.qcow",
            "now.raw",
        ],
    );
}
