//! The rbd handler against a real Ceph cluster, started by the test.
//!
//! Each test starts its own throwaway cluster with `tests/ceph-cluster.sh`
//! (one monitor, one memstore OSD, no network beyond 127.0.0.1; about 8 s,
//! and 8 s more for the ceph-mgr the service map needs) and serves
//! `user:rbd` devices from it through the whole runtime, fed by the
//! simulated kernel (`tcmu_runtime::testing::SimLun`). Ceph's own tools
//! (`rbd export`, `rbd diff`, `rbd du`, `ceph osd blocklist ls`, `ceph
//! service dump`) check what reached the cluster.
//!
//! A cluster that cannot be started fails the test: these tests need Debian's
//! ceph-mon, ceph-osd, ceph-mgr and ceph-common, which `cargo xtask test`
//! installs, and root (the daemons run as the caller).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tcmu_core::sim::{SimCompletion, SimData};
use tcmu_handler_rbd::RbdFactory;
use tcmu_runtime::testing::{cdb, sense_key_asc, SimLun};
use tcmu_runtime::{DeviceConfig, HandlerFactory, Report, Workers};

/// SCSI status BUSY.
const BUSY: u8 = 0x08;
/// SCSI status CHECK CONDITION.
const CHECK: u8 = 0x02;
const MIB: u64 = 1 << 20;

/// A cluster of our own; stopped (daemons killed, folder removed) on drop.
struct TestCluster {
    dir: PathBuf,
    conf: PathBuf,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ceph-cluster.sh")
}

impl TestCluster {
    fn start(auth: &str, mgr: bool) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("tcmu-rbd-cluster-")
            .tempdir()
            .expect("a temporary folder")
            .keep();
        let started = Instant::now();
        let mut cmd = Command::new("bash");
        // A stopped OSD is marked down after 4 s, so osd_op_timeout=6 is
        // long enough for the handler to accept.
        cmd.env("CEPH_TEST_HEARTBEAT_GRACE", "4")
            .env("CEPH_TEST_HEARTBEAT_INTERVAL", "1");
        cmd.arg(script()).arg("start").arg(&dir).arg(auth);
        if mgr {
            cmd.arg("mgr");
        }
        let out = cmd.output().expect("run tests/ceph-cluster.sh");
        let cluster = Self {
            conf: dir.join("ceph.conf"),
            dir,
        };
        assert!(
            out.status.success(),
            "cannot start a Ceph cluster (are ceph-mon, ceph-osd, ceph-mgr and ceph-common \
             installed? `cargo xtask setup` installs them): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!(
            "cluster ({auth}{}) up in {:.1} s at {}",
            if mgr { ", mgr" } else { "" },
            started.elapsed().as_secs_f64(),
            cluster.dir.display()
        );
        cluster
    }

    fn tool(&self, tool: &str, args: &[&str]) -> String {
        let out = Command::new(tool)
            .arg("-c")
            .arg(&self.conf)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {tool}: {e}"));
        assert!(
            out.status.success(),
            "{tool} {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn rbd(&self, args: &[&str]) -> String {
        self.tool("rbd", args)
    }

    fn ceph(&self, args: &[&str]) -> String {
        self.tool("ceph", args)
    }

    /// A new image of `mib` MiB in pool `rbd`.
    fn image(&self, name: &str, mib: u64) {
        self.rbd(&[
            "create",
            "--size",
            &format!("{mib}M"),
            &format!("rbd/{name}"),
        ]);
    }

    /// The image's bytes, as `rbd export` writes them.
    fn export(&self, name: &str) -> Vec<u8> {
        let file = self.dir.join(format!("{name}.export"));
        let _ = std::fs::remove_file(&file);
        self.rbd(&["export", &format!("rbd/{name}"), file.to_str().unwrap()]);
        let data = std::fs::read(&file).unwrap();
        std::fs::remove_file(&file).unwrap();
        data
    }

    /// The cfgstring of image `name` with this cluster's configuration.
    fn cfg(&self, name: &str, extra: &str) -> String {
        format!("rbd/{name};conf={}{extra}", self.conf.display())
    }

    /// What the cluster says about itself, for a failure message: its
    /// status, the OSD's operations in flight, whether a fresh client is
    /// served, and the last lines of every log (each command bounded).
    fn diagnose(&self) -> String {
        let conf = self.conf.to_str().unwrap();
        let asok = self.dir.join("run/osd.0.asok");
        let asok = asok.to_str().unwrap();
        let runs: [(&str, Vec<&str>); 5] = [
            ("ceph -s", vec!["ceph", "-c", conf, "-s"]),
            ("ceph osd dump", vec!["ceph", "-c", conf, "osd", "dump"]),
            (
                "osd.0 ops in flight",
                vec!["ceph", "--admin-daemon", asok, "dump_ops_in_flight"],
            ),
            (
                "osd.0 recent ops",
                vec!["ceph", "--admin-daemon", asok, "dump_historic_ops"],
            ),
            (
                "a fresh client lists pool rbd",
                vec!["rados", "-c", conf, "-p", "rbd", "ls"],
            ),
        ];
        let mut out = String::new();
        for (what, argv) in runs {
            let r = Command::new("timeout").arg("15").args(&argv).output();
            out += &match r {
                Ok(o) => format!(
                    "\n=== {what} (status {}):\n{}{}",
                    o.status,
                    tail(&String::from_utf8_lossy(&o.stdout), 40),
                    tail(&String::from_utf8_lossy(&o.stderr), 10)
                ),
                Err(e) => format!("\n=== {what}: cannot run: {e}"),
            };
        }
        if let Ok(logs) = std::fs::read_dir(self.dir.join("log")) {
            for log in logs.flatten() {
                let text = std::fs::read_to_string(log.path()).unwrap_or_default();
                out += &format!("\n=== {}:\n{}", log.path().display(), tail(&text, 25));
            }
        }
        out
    }

    /// The PID of a daemon (`osd.0`, `mon.a`).
    fn pid(&self, daemon: &str) -> i32 {
        let s = std::fs::read_to_string(self.dir.join(format!("run/{daemon}.pid"))).unwrap();
        s.trim().parse().unwrap()
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        // The OSD may be stopped (SIGSTOP) if a test failed midway.
        if let Ok(s) = std::fs::read_to_string(self.dir.join("run/osd.0.pid")) {
            let _ = Command::new("kill").args(["-CONT", s.trim()]).status();
        }
        if std::thread::panicking() {
            // The logs outlive a failed test.
            let kept = std::env::temp_dir().join(format!(
                "{}-failed-logs",
                self.dir.file_name().unwrap().to_string_lossy()
            ));
            let _ = Command::new("cp")
                .arg("-a")
                .arg(self.dir.join("log"))
                .arg(&kept)
                .status();
            eprintln!("the cluster's logs are kept in {}", kept.display());
        }
        let _ = Command::new("bash")
            .arg(script())
            .arg("stop")
            .arg(&self.dir)
            .status();
    }
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let mut t = lines[lines.len().saturating_sub(n)..].join("\n");
    t.push('\n');
    t
}

/// Bytes of a recognisable pattern: `seed` mixed with the offset.
fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ ((i >> 9) as u8))
        .collect()
}

/// Runs a command until it is not answered BUSY (the lock being taken,
/// the connection reopened), for at most `secs`.
fn until_not_busy(lun: &mut SimLun, cdb: &[u8], data: &SimData, secs: u64) -> SimCompletion {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let c = lun.run(cdb, data.clone());
        if c.status != BUSY || Instant::now() > deadline {
            return c;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn write(lun: &mut SimLun, lba: u32, data: Vec<u8>) {
    let blocks = (data.len() / 512) as u16;
    let c = until_not_busy(lun, &cdb::write10(lba, blocks), &SimData::Out(data), 30);
    assert_eq!(c.status, 0, "WRITE at {lba}: {:?}", sense_key_asc(&c));
}

fn read(lun: &mut SimLun, lba: u32, len: usize) -> Vec<u8> {
    let c = until_not_busy(
        lun,
        &cdb::read10(lba, (len / 512) as u16),
        &SimData::In(len),
        30,
    );
    assert_eq!(c.status, 0, "READ at {lba}: {:?}", sense_key_asc(&c));
    c.data_in
}

fn open(
    workers: &Workers,
    factory: &Arc<RbdFactory>,
    name: &str,
    cfg: &str,
    size: u64,
    block: u32,
) -> SimLun {
    let f: Arc<dyn HandlerFactory> = factory.clone();
    SimLun::open(workers, f, DeviceConfig::new(name, cfg, size, block))
        .unwrap_or_else(|e| panic!("open {cfg}: {}", Report(&e)))
}

fn step(name: &str) {
    eprintln!("--- {name}");
}

/// UNMAP of `blocks` blocks at `lba` (one descriptor).
fn unmap_cdb_and_list(lba: u64, blocks: u32) -> ([u8; 10], Vec<u8>) {
    let mut list = vec![0u8; 24];
    list[0..2].copy_from_slice(&22u16.to_be_bytes());
    list[2..4].copy_from_slice(&16u16.to_be_bytes());
    list[8..16].copy_from_slice(&lba.to_be_bytes());
    list[16..20].copy_from_slice(&blocks.to_be_bytes());
    let mut c = [0x42, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    c[7..9].copy_from_slice(&24u16.to_be_bytes());
    (c, list)
}

/// COMPARE AND WRITE of one block at `lba`.
fn caw_cdb(lba: u64) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[0] = 0x89;
    c[2..10].copy_from_slice(&lba.to_be_bytes());
    c[13] = 1;
    c
}

/// The allocated bytes `rbd du` reports for an image.
fn used_bytes(cluster: &TestCluster, name: &str) -> u64 {
    let out = cluster.rbd(&["du", "--format", "json", &format!("rbd/{name}")]);
    let key = "\"used_size\":";
    let at = out.find(key).expect("used_size in rbd du") + key.len();
    out[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap()
}

/// The handler's log lines on the test's output.
fn log_to_test_output() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("tcmu_handler_rbd=debug,tcmu_runtime=info")
        .try_init();
}

/// One cluster at a time: the tests time OSD operations (a stopped OSD
/// past `osd_op_timeout`, and its return), which a second cluster starting
/// or stopping on the same cores disturbs.
fn one_cluster_at_a_time() -> MutexGuard<'static, ()> {
    static CLUSTERS: Mutex<()> = Mutex::new(());
    CLUSTERS.lock().unwrap_or_else(PoisonError::into_inner)
}

#[test]
fn rbd_handler_on_a_real_cluster() {
    let _one = one_cluster_at_a_time();
    log_to_test_output();
    let cluster = TestCluster::start("none", true);
    let workers = Workers::start(2).unwrap();
    let factory = Arc::new(RbdFactory::default());

    step("cfgstrings: a good one passes, bad ones are refused with their cause");
    cluster.image("data", 16);
    factory.check_config(&cluster.cfg("data", "")).unwrap();
    factory
        .check_config(&cluster.cfg("data", ";osd_op_timeout=30;id=admin"))
        .unwrap();
    let refused = |cfg: &str, want: &str| {
        let started = Instant::now();
        let e = factory.check_config(cfg).expect_err(cfg);
        let msg = Report(&e).to_string();
        eprintln!("refused in {} ms: {msg}", started.elapsed().as_millis());
        assert!(msg.contains(want), "{cfg}: '{msg}' does not say '{want}'");
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "{cfg}: refused too slowly"
        );
    };
    refused(&cluster.cfg("nosuchimage", ""), "no such pool or image");
    refused(
        &format!("nosuchpool/data;conf={}", cluster.conf.display()),
        "no such pool or image",
    );
    refused("rbd/data;conf=/nonexistent/ceph.conf", "no such file");
    refused(&cluster.cfg("data", ";osd_op_timout=30"), "unknown option");
    refused("data", "expected <pool>/<image>");
    // A cluster that is not there: a configuration naming a monitor port
    // nobody listens on.
    let dead = cluster.dir.join("dead.conf");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(
        &dead,
        format!("[global]\nmon host = 127.0.0.1:{port}\nauth client required = none\n"),
    )
    .unwrap();
    refused(&format!("rbd/data;conf={}", dead.display()), "unreachable");

    step("a device whose size differs from the image's is refused, naming both");
    let f: Arc<dyn HandlerFactory> = factory.clone();
    let e = SimLun::open(
        &workers,
        f,
        DeviceConfig::new("wrong", cluster.cfg("data", ""), 32 * MIB, 512),
    )
    .expect_err("a 32 MiB device on a 16 MiB image");
    let msg = Report(&e).to_string();
    assert!(
        msg.contains(&(32 * MIB).to_string()) && msg.contains(&(16 * MIB).to_string()),
        "{msg}"
    );

    step("data round trip: our writes in `rbd export`, `rbd import` through our reads");
    let mut lun = open(
        &workers,
        &factory,
        "data",
        &cluster.cfg("data", ""),
        16 * MIB,
        512,
    );
    let first = pattern(1, 256 * 1024);
    write(&mut lun, 2048, first.clone());
    let last = pattern(2, 64 * 1024);
    write(&mut lun, (16 * MIB / 512) as u32 - 128, last.clone());
    assert_eq!(read(&mut lun, 2048, first.len()), first);
    let image = cluster.export("data");
    assert_eq!(image.len() as u64, 16 * MIB);
    assert_eq!(&image[1 << 20..(1 << 20) + first.len()], &first[..]);
    assert_eq!(&image[image.len() - last.len()..], &last[..]);
    // SYNCHRONIZE CACHE (10).
    let c = lun.run(&[0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0], SimData::None);
    assert_eq!(c.status, 0);
    // Our writes took the exclusive lock, and it is ours.
    let locks = cluster.rbd(&["lock", "ls", "rbd/data"]);
    assert!(locks.contains("auto "), "rbd lock ls: {locks}");
    let imported_file = cluster.dir.join("import.bin");
    let imported = pattern(3, 4 * MIB as usize);
    std::fs::write(&imported_file, &imported).unwrap();
    cluster.rbd(&["import", imported_file.to_str().unwrap(), "rbd/imported"]);
    let mut imp = open(
        &workers,
        &factory,
        "imp",
        &cluster.cfg("imported", ""),
        4 * MIB,
        512,
    );
    for (i, chunk) in imported.chunks(256 * 1024).enumerate() {
        assert_eq!(
            read(&mut imp, (i * 512) as u32, chunk.len()),
            chunk,
            "chunk {i}"
        );
    }
    imp.close();

    step("the service map shows the device, with its lock");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let dump = cluster.ceph(&["service", "dump", "--format", "json"]);
        let status = cluster.ceph(&["service", "status", "--format", "json"]);
        if dump.contains("tcmu-runner")
            && dump.contains(":rbd/data")
            && dump.contains("\"daemon_type\":\"portal\"")
            && status.contains("\"lock_owner\":\"true\"")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no tcmu-runner daemon with the lock in the service map:\n{dump}\n{status}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    step("UNMAP frees whole objects (rbd du); VPD B0 advertises the granularity");
    cluster.image("thin", 16);
    let mut thin = open(
        &workers,
        &factory,
        "thin",
        &cluster.cfg("thin", ""),
        16 * MIB,
        512,
    );
    for i in 0..64u32 {
        write(&mut thin, i * 512, pattern(i as u8, 256 * 1024));
    }
    assert_eq!(used_bytes(&cluster, "thin"), 16 * MIB);
    let (c, list) = unmap_cdb_and_list(0, (8 * MIB / 512) as u32);
    let done = until_not_busy(&mut thin, &c, &SimData::Out(list), 30);
    assert_eq!(done.status, 0, "UNMAP: {:?}", sense_key_asc(&done));
    assert_eq!(used_bytes(&cluster, "thin"), 8 * MIB);
    assert!(read(&mut thin, 0, 64 * 1024).iter().all(|&b| b == 0));
    let vpd = thin.run(&[0x12, 1, 0xb0, 0, 64, 0], SimData::In(64));
    assert_eq!(vpd.status, 0);
    let gran = u32::from_be_bytes(vpd.data_in[28..32].try_into().unwrap());
    assert_eq!(gran, 65536 / 512, "OPTIMAL UNMAP GRANULARITY");
    thin.close();

    step("WRITE SAME: a pattern, and zeroes");
    let block = pattern(9, 512);
    let ws = cdb::rw16(0x93, 0, 4096, 64);
    let done = until_not_busy(&mut lun, &ws, &SimData::Out(block.clone()), 30);
    assert_eq!(done.status, 0, "WRITE SAME: {:?}", sense_key_asc(&done));
    let image = cluster.export("data");
    for i in 0..64 {
        let at = 4096 * 512 + i * 512;
        assert_eq!(&image[at..at + 512], &block[..], "block {i}");
    }
    let done = until_not_busy(
        &mut lun,
        &cdb::rw16(0x93, 0, 2048, 512),
        &SimData::Out(vec![0; 512]),
        30,
    );
    assert_eq!(
        done.status,
        0,
        "WRITE SAME of zeroes: {:?}",
        sense_key_asc(&done)
    );
    assert!(read(&mut lun, 2048, 256 * 1024).iter().all(|&b| b == 0));

    step("COMPARE AND WRITE, native (one 512-byte sector): match, then miscompare");
    let (a, b) = (pattern(20, 512), pattern(21, 512));
    write(&mut lun, 10, a.clone());
    let caw = |lun: &mut SimLun, lba: u64, cmp: &[u8], new: &[u8]| {
        let mut data = cmp.to_vec();
        data.extend_from_slice(new);
        until_not_busy(lun, &caw_cdb(lba), &SimData::Out(data), 30)
    };
    let done = caw(&mut lun, 10, &a, &b);
    assert_eq!(done.status, 0, "{:?}", sense_key_asc(&done));
    assert_eq!(read(&mut lun, 10, 512), b);
    let mut wrong = a.clone();
    wrong[100] ^= 0xff;
    let done = caw(&mut lun, 10, &wrong, &a);
    assert_eq!(done.status, CHECK);
    assert_eq!(sense_key_asc(&done), (0x0e, 0x1d, 0), "MISCOMPARE");
    // Compared against b (on the image), the first difference is at 0.
    assert_eq!(u32::from_be_bytes(done.sense[3..7].try_into().unwrap()), 0);
    assert_eq!(read(&mut lun, 10, 512), b);

    step("COMPARE AND WRITE, emulated (4096-byte blocks: more than librbd takes)");
    cluster.image("big", 8);
    let mut big = open(
        &workers,
        &factory,
        "big",
        &cluster.cfg("big", ""),
        8 * MIB,
        4096,
    );
    let (a, b) = (pattern(30, 4096), pattern(31, 4096));
    let c = until_not_busy(&mut big, &cdb::write10(3, 1), &SimData::Out(a.clone()), 30);
    assert_eq!(c.status, 0);
    let done = caw(&mut big, 3, &a, &b);
    assert_eq!(done.status, 0, "{:?}", sense_key_asc(&done));
    let mut wrong = b.clone();
    wrong[1000] ^= 1;
    let done = caw(&mut big, 3, &wrong, &a);
    assert_eq!(sense_key_asc(&done), (0x0e, 0x1d, 0), "MISCOMPARE");
    assert_eq!(
        u32::from_be_bytes(done.sense[3..7].try_into().unwrap()),
        1000
    );
    let c = big.run(&cdb::read10(3, 1), SimData::In(4096));
    assert_eq!(c.data_in, b);
    big.close();

    step("the lock between two clients: the second breaks it, the first is fenced and reopens");
    cluster.image("shared", 8);
    let cfg = cluster.cfg("shared", "");
    let mut first = open(&workers, &factory, "first", &cfg, 8 * MIB, 512);
    let mut second = open(&workers, &factory, "second", &cfg, 8 * MIB, 512);
    // Reads need no lock.
    assert_eq!(first.run(&cdb::read10(0, 1), SimData::In(512)).status, 0);
    assert_eq!(second.run(&cdb::read10(0, 1), SimData::In(512)).status, 0);
    let x = pattern(40, 4096);
    // The first write takes the lock (and waits for it, up to a second,
    // before it would be answered BUSY).
    write(&mut first, 0, x.clone());
    let y = pattern(41, 4096);
    write(&mut second, 0, y.clone());
    let blocklist = cluster.ceph(&["osd", "blocklist", "ls"]);
    assert!(
        blocklist.contains("127.0.0.1"),
        "the first client is blocklisted: {blocklist}"
    );
    // The first is fenced: its writes are answered BUSY while the second
    // holds the lock, and none lands.
    let z = pattern(42, 4096);
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        let c = first.run(&cdb::write10(8, 8), SimData::Out(z.clone()));
        assert_eq!(c.status, BUSY, "{:?}", sense_key_asc(&c));
        std::thread::sleep(Duration::from_millis(100));
    }
    let image = cluster.export("shared");
    assert_eq!(&image[..4096], &y[..], "the second's write stands");
    assert_ne!(
        &image[4096..8192],
        &z[..],
        "a write of the fenced client landed"
    );
    // Reads go on once the first has reopened.
    assert_eq!(read(&mut first, 0, 4096), y);
    // After the hold-off, a write takes the lock back (breaking the
    // second's) and lands.
    write(&mut first, 8, z.clone());
    let c = second.run(&cdb::write10(16, 8), SimData::Out(x.clone()));
    assert_eq!(c.status, BUSY, "the second is fenced in turn");
    let image = cluster.export("shared");
    assert_eq!(&image[4096..8192], &z[..]);
    assert_ne!(&image[8192..12288], &x[..]);
    // Both reopened: the blocklist entries of their earlier clients were
    // removed at the reopen (once the old clients were shut down).
    let _ = read(&mut second, 0, 512);
    let _ = read(&mut first, 0, 512);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let bl = cluster.ceph(&["osd", "blocklist", "ls"]);
        if !bl.contains("127.0.0.1") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "stale blocklist entries left: {bl}"
        );
        std::thread::sleep(Duration::from_millis(500));
        // Another reopen removes what the last one could not.
        let _ = first.run(&cdb::read10(0, 1), SimData::In(512));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = cluster.ceph(&["service", "status", "--format", "json"]);
        if status.contains("\"lock_lost_cnt\":\"1\"") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no lock_lost_cnt 1 in the service map: {status}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    first.close();
    second.close();

    step("an OSD stopped past osd_op_timeout: BUSY, counted; I/O resumes after SIGCONT");
    let mut slow = open(
        &workers,
        &factory,
        "slow",
        &cluster.cfg("data", ";osd_op_timeout=6"),
        16 * MIB,
        512,
    );
    let d = pattern(50, 4096);
    write(&mut slow, 64, d.clone());
    let osd = cluster.pid("osd.0");
    assert!(Command::new("kill")
        .args(["-STOP", &osd.to_string()])
        .status()
        .unwrap()
        .success());
    let started = Instant::now();
    // Writes and reads in flight while the OSD is stopped, long enough to
    // be marked down (heartbeat grace 4 s) and for the ops to time out.
    for i in 0..8u32 {
        slow.post(&cdb::write10(1024 + i * 8, 8), SimData::Out(d.clone()));
        slow.post(&cdb::read10(64, 8), SimData::In(4096));
    }
    let first = slow
        .kernel
        .reap_at_least(1, Duration::from_secs(40))
        .expect("an answer while the OSD is stopped");
    let waited = started.elapsed();
    std::thread::sleep(Duration::from_secs(15).saturating_sub(waited));
    assert!(Command::new("kill")
        .args(["-CONT", &osd.to_string()])
        .status()
        .unwrap()
        .success());
    let mut answers = first;
    let rest = 16 - answers.len();
    if rest > 0 {
        answers.extend(
            slow.kernel
                .reap_at_least(rest, Duration::from_secs(60))
                .expect("the other answers"),
        );
    }
    for c in &answers {
        assert!(
            c.status == BUSY || c.status == 0,
            "while the OSD was stopped: {:?}",
            sense_key_asc(c)
        );
    }
    assert!(
        answers.iter().any(|c| c.status == BUSY),
        "no command timed out"
    );
    assert!(
        waited >= Duration::from_secs(5),
        "first answer after {waited:?}"
    );
    eprintln!(
        "first timed-out command answered after {:.1} s",
        waited.as_secs_f64()
    );
    let resumed = Instant::now();
    // The OSD was marked down while stopped: it has to boot into the map
    // and peer again, which takes seconds on an idle host and over a
    // minute on a loaded one.
    let back = until_not_busy(&mut slow, &cdb::read10(64, 8), &SimData::In(4096), 240);
    assert_eq!(
        back.status,
        0,
        "a read {:.0} s after the OSD resumed: {:?}\n{}",
        resumed.elapsed().as_secs_f64(),
        sense_key_asc(&back),
        cluster.diagnose()
    );
    assert_eq!(back.data_in, d, "data written before the OSD stopped");
    for i in 0..8u32 {
        write(&mut slow, 1024 + i * 8, d.clone());
    }
    eprintln!(
        "I/O back {:.1} s after the OSD resumed",
        resumed.elapsed().as_secs_f64()
    );
    write(&mut slow, 72, d.clone());
    slow.close();

    lun.close();
    workers.shutdown();
}

#[test]
fn rbd_handler_with_cephx() {
    let _one = one_cluster_at_a_time();
    log_to_test_output();
    let cluster = TestCluster::start("cephx", false);
    let workers = Workers::start(1).unwrap();
    let factory = Arc::new(RbdFactory::default());
    cluster.image("secure", 8);

    step("cephx: a gateway user of its own (id=) with its keyring");
    let keyring = cluster.dir.join("client.gw.keyring");
    cluster.ceph(&[
        "auth",
        "get-or-create",
        "client.gw",
        "mon",
        "profile rbd",
        "osd",
        "profile rbd pool=rbd",
        "-o",
        keyring.to_str().unwrap(),
    ]);
    let conf = cluster.dir.join("gw.conf");
    let main = std::fs::read_to_string(&cluster.conf).unwrap();
    let main = main.replace(
        &format!("keyring = {}/keyring", cluster.dir.display()),
        &format!("keyring = {}", keyring.display()),
    );
    std::fs::write(&conf, main).unwrap();
    let cfg = format!("rbd/secure;conf={};id=gw", conf.display());
    factory.check_config(&cfg).unwrap();
    let mut lun = open(&workers, &factory, "secure", &cfg, 8 * MIB, 512);
    let d = pattern(60, 64 * 1024);
    write(&mut lun, 100, d.clone());
    assert_eq!(read(&mut lun, 100, d.len()), d);
    assert_eq!(
        &cluster.export("secure")[100 * 512..100 * 512 + d.len()],
        &d[..]
    );
    lun.close();

    step("cephx: an unknown id is refused, saying so");
    let e = factory
        .check_config(&format!("rbd/secure;conf={};id=nobody", conf.display()))
        .expect_err("an unknown client");
    let msg = Report(&e).to_string();
    assert!(
        msg.contains("authentication") || msg.contains("permission") || msg.contains("denied"),
        "{msg}"
    );
    workers.shutdown();
}

/// The process's CPU time so far (user + system), from /proc/self/stat.
fn process_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<u64> = after
        .split(' ')
        .skip(11)
        .take(2)
        .map(|v| v.parse().unwrap())
        .collect();
    // Linux's USER_HZ is 100 on every architecture we build for.
    Duration::from_millis((f[0] + f[1]) * 10)
}

/// CPU per I/O and IOPS of 4k random reads and writes at queue depth 32
/// through the handler (the simulated kernel's side included), beside
/// `rbd bench` (librbd alone) on the same image. A measurement, not a
/// check: `cargo test -p tcmu-handler-rbd --test cluster -- --ignored
/// --nocapture cpu_per_io`.
#[test]
#[ignore]
fn cpu_per_io() {
    let _one = one_cluster_at_a_time();
    let cluster = TestCluster::start("none", false);
    cluster.image("bench", 64);
    cluster.rbd(&[
        "bench",
        "--io-type",
        "write",
        "--io-size",
        "4M",
        "--io-total",
        "64M",
        "--io-pattern",
        "seq",
        "rbd/bench",
    ]);
    let workers = Workers::start(1).unwrap();
    let factory = Arc::new(RbdFactory::default());
    let mut lun = open(
        &workers,
        &factory,
        "bench",
        &cluster.cfg("bench", ""),
        64 * MIB,
        512,
    );
    let total = 6000u32;
    let mut seed = 12345u32;
    let mut next_lba = move || {
        seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
        (seed >> 8) % (64 * 2048 / 8) * 8
    };
    for kind in ["write", "read", "write", "read"] {
        let post = |lun: &mut SimLun, lba: u32| {
            if kind == "write" {
                lun.post(&cdb::write10(lba, 8), SimData::Out(vec![7u8; 4096]));
            } else {
                lun.post(&cdb::read10(lba, 8), SimData::In(4096));
            }
        };
        let (cpu0, t0) = (process_cpu(), Instant::now());
        for _ in 0..32 {
            post(&mut lun, next_lba());
        }
        let (mut posted, mut done) = (32u32, 0u32);
        while done < total {
            let got = lun
                .kernel
                .reap_at_least(1, Duration::from_secs(30))
                .unwrap();
            for c in &got {
                assert_eq!(c.status, 0, "{kind}: {:?}", sense_key_asc(c));
            }
            done += got.len() as u32;
            for _ in 0..got.len() {
                if posted < total {
                    post(&mut lun, next_lba());
                    posted += 1;
                }
            }
        }
        let (cpu, t) = (process_cpu() - cpu0, t0.elapsed());
        eprintln!(
            "ours {kind}: {:.0} IOPS, {:.1} µs CPU per I/O",
            f64::from(total) / t.as_secs_f64(),
            cpu.as_secs_f64() * 1e6 / f64::from(total)
        );
    }
    lun.close();
    workers.shutdown();
    for kind in ["write", "read"] {
        let out = Command::new("bash")
            .arg("-c")
            .arg(format!(
                "TIMEFORMAT='%U %S %R'; time rbd -c {} bench --io-type {kind} --io-size 4K \
                 --io-threads 32 --io-total {} --io-pattern rand rbd/bench >/dev/null",
                cluster.conf.display(),
                u64::from(total) * 4096
            ))
            .output()
            .unwrap();
        let t = String::from_utf8_lossy(&out.stderr);
        let f: Vec<f64> = t
            .split_whitespace()
            .filter_map(|v| v.parse().ok())
            .collect();
        eprintln!(
            "rbd bench {kind}: {:.0} IOPS, {:.1} µs CPU per I/O (incl. start-up)",
            f64::from(total) / f[2],
            (f[0] + f[1]) * 1e6 / f64::from(total)
        );
    }
}
