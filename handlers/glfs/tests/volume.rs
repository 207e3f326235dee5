//! The glfs handler against a real Gluster volume on this machine.
//!
//! The test starts Debian's glusterd (package `glusterfs-server`) with a
//! working directory, run directory, socket and log of its own under a
//! temporary directory, creates a one-brick volume on a host name that
//! resolves to a loopback address (Gluster refuses `127.0.0.1` and
//! `localhost` as brick hosts by string), serves devices on it through the
//! whole runtime (the simulated kernel), and stops glusterd and the brick
//! when it ends. The brick directory must take `trusted.*` extended
//! attributes (ext4 does; tmpfs does not). glusterd listens on its fixed
//! port 24007, on 127.0.0.1 only. Nothing is skipped: a missing glusterd
//! or a host name that does not resolve to loopback fails the test.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::ToSocketAddrs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tcmu_handler_glfs::factory::CHECK_DEADLINE;
use tcmu_handler_glfs::{conn, GlfsFactory};
use tcmu_runtime::tcmu_core::sim::SimData;
use tcmu_runtime::testing::{cdb, sense_key_asc, SimLun};
use tcmu_runtime::{DeviceConfig, HandlerFactory, ReconfigRequest, Report, Workers};

const MIB: u64 = 1 << 20;

/// A glusterd of our own with one started one-brick volume.
struct Cluster {
    dir: tempfile::TempDir,
    host: String,
    volume: String,
    glusterd: Option<Child>,
}

impl Cluster {
    fn sock(&self) -> PathBuf {
        self.dir.path().join("run/glusterd.socket")
    }

    fn brick(&self) -> PathBuf {
        self.dir.path().join("brick")
    }

    /// `gluster <args>` against our glusterd; its output, or the failure.
    fn cli(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new("gluster")
            .arg(format!("--glusterd-sock={}", self.sock().display()))
            .arg(format!(
                "--log-file={}",
                self.dir.path().join("log/cli.log").display()
            ))
            .arg("--mode=script")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("gluster: {e}"))?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if out.status.success() {
            Ok(text)
        } else {
            Err(format!("gluster {args:?}: {}: {text}", out.status))
        }
    }

    fn start() -> Self {
        let host = loopback_host_name();
        let dir = tempfile::Builder::new()
            .prefix("tcmu-glfs-")
            .tempdir_in("/tmp")
            .unwrap();
        for d in ["work", "run", "log", "brick"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        let p = dir.path().display();
        let vol = format!(
            "volume management\n\
             \x20   type mgmt/glusterd\n\
             \x20   option working-directory {p}/work\n\
             \x20   option run-directory {p}/run\n\
             \x20   option glusterd-sockfile {p}/run/glusterd.socket\n\
             \x20   option transport-type socket\n\
             \x20   option transport.socket.listen-port 24007\n\
             \x20   option transport.socket.bind-address 127.0.0.1\n\
             \x20   option ping-timeout 0\n\
             \x20   option event-threads 1\n\
             end-volume\n"
        );
        let volfile = dir.path().join("glusterd.vol");
        std::fs::write(&volfile, vol).unwrap();
        let started = Instant::now();
        let child = Command::new("glusterd")
            .arg("-N")
            .arg("-f")
            .arg(&volfile)
            .arg("-p")
            .arg(dir.path().join("run/glusterd.pid"))
            .arg("-l")
            .arg(dir.path().join("log/glusterd.log"))
            .stdin(Stdio::null())
            .spawn()
            .expect("glusterd (Debian package glusterfs-server) starts");
        let mut c = Self {
            dir,
            host,
            volume: format!("tcmu{}", std::process::id()),
            glusterd: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match c.cli(&["volume", "list"]) {
                Ok(_) => break,
                Err(e) if Instant::now() > deadline => panic!("glusterd never answered: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
            if let Some(Ok(Some(st))) = c.glusterd.as_mut().map(Child::try_wait) {
                panic!("glusterd exited: {st} (see {}/log)", c.dir.path().display());
            }
        }
        let brick = format!("{}:{}", c.host, c.brick().display());
        c.cli(&["volume", "create", &c.volume, &brick, "force"])
            .unwrap();
        c.cli(&["volume", "start", &c.volume]).unwrap();
        eprintln!(
            "glusterd and volume {} on {brick} up in {} ms",
            c.volume,
            started.elapsed().as_millis()
        );
        c
    }

    /// Stops glusterd (the brick keeps running).
    fn stop_glusterd(&mut self) {
        if let Some(mut child) = self.glusterd.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The pid of the volume's brick process, from its pid file.
    fn brick_pid(&self) -> Option<i32> {
        let dir = self.dir.path().join("run/vols").join(&self.volume);
        let entry = std::fs::read_dir(dir)
            .ok()?
            .flatten()
            .find(|e| e.path().extension().is_some_and(|x| x == "pid"))?;
        std::fs::read_to_string(entry.path())
            .ok()?
            .trim()
            .parse()
            .ok()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.glusterd.is_some() {
            let _ = self.cli(&["volume", "stop", &self.volume, "force"]);
        }
        if let Some(pid) = self.brick_pid() {
            // The brick process this test's glusterd started (by its pid).
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
        self.stop_glusterd();
    }
}

/// This machine's host name, which must resolve to a loopback address.
fn loopback_host_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_owned();
    let addrs: Vec<_> = (host.as_str(), 0)
        .to_socket_addrs()
        .unwrap_or_else(|e| panic!("host name {host} does not resolve: {e}"))
        .collect();
    assert!(
        !addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback()),
        "host name {host} resolves to {addrs:?}, not only to loopback addresses: the \
         test keeps Gluster's traffic on loopback"
    );
    assert_ne!(
        host, "localhost",
        "Gluster refuses localhost as a brick host"
    );
    host
}

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 9) as u8)
        .collect()
}

fn write16(lun: &mut SimLun, lba: u64, data: Vec<u8>) {
    let blocks = (data.len() / 512) as u32;
    let c = lun.run(&cdb::rw16(0x8a, 0, lba, blocks), SimData::Out(data));
    assert_eq!(c.status, 0, "WRITE(16) at {lba}: {:?}", sense_key_asc(&c));
}

fn read16(lun: &mut SimLun, lba: u64, blocks: u32) -> Vec<u8> {
    let c = lun.run(
        &cdb::rw16(0x88, 0, lba, blocks),
        SimData::In(blocks as usize * 512),
    );
    assert_eq!(c.status, 0, "READ(16) at {lba}: {:?}", sense_key_asc(&c));
    c.data_in
}

fn write_same16(lun: &mut SimLun, lba: u64, blocks: u32, block: Vec<u8>) -> u8 {
    let mut c = [0u8; 16];
    c[0] = 0x93;
    c[2..10].copy_from_slice(&lba.to_be_bytes());
    c[10..14].copy_from_slice(&blocks.to_be_bytes());
    lun.run(&c, SimData::Out(block)).status
}

fn sync_cache(lun: &mut SimLun) -> u8 {
    lun.run(&[0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0], SimData::None)
        .status
}

fn brick_bytes(path: &Path, at: u64, len: usize) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(path).unwrap();
    let mut v = vec![0u8; len];
    f.read_exact_at(&mut v, at).unwrap();
    v
}

#[test]
fn devices_on_a_real_volume() {
    let t0 = Instant::now();
    let mut cluster = Cluster::start();
    let (host, vol) = (cluster.host.clone(), cluster.volume.clone());
    let factory: Arc<dyn HandlerFactory> = Arc::new(GlfsFactory);

    // CheckConfig: good, malformed, unknown volume (within the bound).
    let cfg0 = format!("{vol}@{host}/disk0.img");
    let t = Instant::now();
    factory
        .check_config(&cfg0)
        .unwrap_or_else(|e| panic!("{}", Report(&e)));
    eprintln!("check_config connected in {} ms", t.elapsed().as_millis());
    let bad = factory.check_config(&format!("{vol}@{host}")).unwrap_err();
    assert!(
        Report(&bad).to_string().contains("no '/'"),
        "{}",
        Report(&bad)
    );
    let t = Instant::now();
    let unknown = factory
        .check_config(&format!("nosuchvol@{host}/x"))
        .unwrap_err();
    let took = t.elapsed();
    let msg = Report(&unknown).to_string();
    eprintln!("unknown volume refused in {} ms: {msg}", took.as_millis());
    assert!(msg.contains("nosuchvol"), "{msg}");
    assert!(took < CHECK_DEADLINE + Duration::from_secs(1), "{took:?}");

    let workers = Workers::start(2).unwrap();
    let open = |name: &str, cfg: &str, size: u64| {
        SimLun::open(
            &workers,
            factory.clone(),
            DeviceConfig::new(name, cfg, size, 512),
        )
    };

    // A new file is created with the device's size.
    let t = Instant::now();
    let mut lun0 = open("lun0", &cfg0, 8 * MIB).unwrap_or_else(|e| panic!("{}", Report(&e)));
    eprintln!("lun0 opened in {} ms", t.elapsed().as_millis());
    let file0 = cluster.brick().join("disk0.img");
    assert_eq!(std::fs::metadata(&file0).unwrap().len(), 8 * MIB);

    // Writes and reads, straight and vectored through gfapi.
    let a = pattern(1, 256 * 1024);
    write16(&mut lun0, 100, a.clone());
    assert_eq!(read16(&mut lun0, 100, 512), a);
    let b = pattern(7, 4096);
    write16(&mut lun0, 16383 - 7, b.clone());
    assert_eq!(read16(&mut lun0, 16383 - 7, 8), b);
    assert_eq!(sync_cache(&mut lun0), 0);
    // What gfapi wrote is in the brick's file.
    assert_eq!(brick_bytes(&file0, 100 * 512, a.len()), a);
    assert_eq!(brick_bytes(&file0, (16383 - 7) * 512, b.len()), b);

    // Many commands in flight at once.
    let ids: Vec<u16> = (0..32u64)
        .map(|i| {
            lun0.post(
                &cdb::rw16(0x8a, 0, 2000 + i * 8, 8),
                SimData::Out(pattern(i as u8, 4096)),
            )
        })
        .collect();
    let done = lun0.collect(ids.len());
    assert!(done.iter().all(|c| c.status == 0));
    for i in 0..32u64 {
        assert_eq!(read16(&mut lun0, 2000 + i * 8, 8), pattern(i as u8, 4096));
    }

    // UNMAP punches a hole: zeroes read back.
    let (c, param) = cdb::unmap(&[(100, 64)]);
    let r = lun0.run(&c, SimData::Out(param));
    assert_eq!(r.status, 0, "UNMAP: {:?}", sense_key_asc(&r));
    assert_eq!(read16(&mut lun0, 100, 64), vec![0; 64 * 512]);
    assert_eq!(read16(&mut lun0, 164, 448), a[64 * 512..].to_vec());

    // WRITE SAME: zeroes (zerofill) and a pattern.
    assert_eq!(write_same16(&mut lun0, 200, 100, vec![0; 512]), 0);
    assert_eq!(read16(&mut lun0, 200, 100), vec![0; 100 * 512]);
    assert_eq!(read16(&mut lun0, 300, 312), a[200 * 512..].to_vec());
    let blk = pattern(9, 512);
    assert_eq!(write_same16(&mut lun0, 4000, 300, blk.clone()), 0);
    assert_eq!(read16(&mut lun0, 4000, 300), blk.repeat(300));
    assert_eq!(sync_cache(&mut lun0), 0);
    assert_eq!(brick_bytes(&file0, 4000 * 512, 300 * 512), blk.repeat(300));

    // gfapi directly: a vectored read into buffers of several sizes lands
    // in each of them, in order.
    let fs = conn::connect(&tcmu_handler_glfs::GlfsConfig::parse(&cfg0).unwrap()).unwrap();
    let file = tcmu_glfs_ffi::File::open(fs, "/disk0.img", libc::O_RDONLY).unwrap();
    let sizes = [512usize, 3 * 512, 4096, 1024];
    let bufs: Vec<_> = sizes
        .iter()
        .map(|&n| tcmu_runtime::DataBuf::scratch(n).unwrap())
        .collect();
    let done = futures::executor::block_on(file.aio_preadv(4000 * 512, bufs).unwrap());
    assert_eq!(done.result(), Ok(sizes.iter().sum::<usize>() as u64));
    let got: Vec<u8> = done.bufs.iter().flat_map(|b| b.to_vec()).collect();
    assert_eq!(got, blk.repeat(300)[..got.len()].to_vec());
    drop(done);
    drop(file);

    // A second device on the same volume shares the connection.
    let cfg1 = format!("{vol}@{host}/disk1.img");
    let t = Instant::now();
    let mut lun1 = open("lun1", &cfg1, 4 * MIB).unwrap_or_else(|e| panic!("{}", Report(&e)));
    eprintln!(
        "lun1 opened in {} ms (shared connection)",
        t.elapsed().as_millis()
    );
    let users = conn::users(&host, 24007, &vol);
    assert!(users >= 2, "{users} users of the volume's connection");
    write16(&mut lun1, 0, pattern(3, 8192));
    assert_eq!(read16(&mut lun1, 0, 16), pattern(3, 8192));
    // Closing one leaves the other serving at once.
    let t = Instant::now();
    lun1.close();
    assert_eq!(read16(&mut lun0, 2000, 8), pattern(0, 4096));
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());

    // RECONFIG of the size grows the file.
    lun0.reconfig(ReconfigRequest::Size(12 * MIB))
        .unwrap_or_else(|e| panic!("{}", Report(&e)));
    assert_eq!(std::fs::metadata(&file0).unwrap().len(), 12 * MIB);
    let shrink = lun0.reconfig(ReconfigRequest::Size(4 * MIB)).unwrap_err();
    assert!(Report(&shrink).to_string().contains("shrinking"));
    lun0.close();

    // A file larger than the device is refused, naming both sizes; a
    // smaller one grows.
    let big = open("lun2", &cfg0, 4 * MIB).unwrap_err();
    let msg = Report(&big).to_string();
    assert!(msg.contains(&(12 * MIB).to_string()), "{msg}");
    assert!(msg.contains(&(4 * MIB).to_string()), "{msg}");
    let grown = open("lun3", &cfg1, 6 * MIB).unwrap_or_else(|e| panic!("{}", Report(&e)));
    assert_eq!(
        std::fs::metadata(cluster.brick().join("disk1.img"))
            .unwrap()
            .len(),
        6 * MIB
    );
    // The data written before the reopen is still there.
    let mut grown = grown;
    assert_eq!(read16(&mut grown, 0, 16), pattern(3, 8192));
    grown.close();

    // The brick killed under a device: writes are first taken by gfapi's
    // write-behind (about 1 MiB), then answered NOT READY, BECOMING READY
    // (retried by initiators), none hangs; once the volume is started
    // again, I/O resumes on the same connection, SYNCHRONIZE CACHE
    // succeeds, and every write acknowledged before or during the outage
    // reads back.
    let cfg4 = format!("{vol}@{host}/disk4.img");
    let mut lun4 = open("lun4", &cfg4, 4 * MIB).unwrap_or_else(|e| panic!("{}", Report(&e)));
    let before = pattern(44, 64 * 1024);
    write16(&mut lun4, 0, before.clone());
    assert_eq!(sync_cache(&mut lun4), 0);
    let brick = cluster.brick_pid().expect("the brick's pid file");
    let _ = Command::new("kill")
        .args(["-9", &brick.to_string()])
        .status();
    let t = Instant::now();
    let mut acked = 0u64;
    loop {
        let lba = 1024 + acked * 8;
        let c = lun4.run(
            &cdb::rw16(0x8a, 0, lba, 8),
            SimData::Out(pattern(lba as u8, 4096)),
        );
        if c.status != 0 {
            assert_eq!(
                sense_key_asc(&c),
                (2, 4, 1),
                "the answer with the brick down"
            );
            break;
        }
        acked += 1;
        assert!(
            acked < 768,
            "{acked} writes acknowledged with the brick killed"
        );
    }
    eprintln!(
        "brick killed: NOT READY after {acked} acknowledged writes, {} ms",
        t.elapsed().as_millis()
    );
    // glusterd restarts a brick it has seen die: asked again until I/O
    // goes through.
    let t = Instant::now();
    let mut asked = Instant::now() - Duration::from_secs(10);
    loop {
        if asked.elapsed() >= Duration::from_secs(3) {
            cluster.cli(&["volume", "start", &vol, "force"]).unwrap();
            asked = Instant::now();
        }
        let c = lun4.run(&cdb::rw16(0x8a, 0, 512, 8), SimData::Out(pattern(46, 4096)));
        if c.status == 0 {
            break;
        }
        assert_eq!(
            sense_key_asc(&c),
            (2, 4, 1),
            "the answer while the brick comes back"
        );
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "I/O did not resume within 60 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!(
        "brick restarted: I/O resumed after {} ms",
        t.elapsed().as_millis()
    );
    assert_eq!(sync_cache(&mut lun4), 0);
    assert_eq!(read16(&mut lun4, 0, 128), before);
    assert_eq!(read16(&mut lun4, 512, 8), pattern(46, 4096));
    for i in 0..acked {
        let lba = 1024 + i * 8;
        assert_eq!(
            read16(&mut lun4, lba, 8),
            pattern(lba as u8, 4096),
            "a write acknowledged during the outage, at LBA {lba}"
        );
    }
    lun4.close();

    // With glusterd gone, a volume not connected yet is refused in time.
    cluster.stop_glusterd();
    let t = Instant::now();
    let down = factory
        .check_config(&format!("other@{host}/x"))
        .unwrap_err();
    let took = t.elapsed();
    eprintln!(
        "stopped glusterd refused in {} ms: {}",
        took.as_millis(),
        Report(&down)
    );
    assert!(took < CHECK_DEADLINE + Duration::from_secs(1), "{took:?}");
    assert!(Report(&down).to_string().contains("other"));

    workers.shutdown();
    drop(cluster);
    eprintln!("whole test: {} ms", t0.elapsed().as_millis());
}

/// A missing libgfapi is refused by CheckConfig naming what to install
/// (run in a child process of this test binary, with the library's name
/// pointed at a file that does not exist: libgfapi is loaded once per
/// process).
#[test]
fn a_missing_libgfapi_is_named() {
    if std::env::var_os(tcmu_glfs_ffi::LIBRARY_ENV).is_some() {
        let e = GlfsFactory
            .check_config("vol@host/disk")
            .expect_err("refused");
        let msg = Report(&e).to_string();
        assert!(msg.contains("libgfapi0"), "{msg}");
        assert!(msg.contains("libgfapi-missing.so.0"), "{msg}");
        return;
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["a_missing_libgfapi_is_named", "--exact", "--nocapture"])
        .env(tcmu_glfs_ffi::LIBRARY_ENV, "libgfapi-missing.so.0")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("1 passed"), "{text}");
}
