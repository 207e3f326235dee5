//! The file handler against real files under the temp directory, inside a
//! tokio-uring runtime, with buffers in an anonymous mapping standing in for
//! the ring's data area.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use tcmu_core::{DataBuf, ScratchArea};
use tcmu_handler_file::{FileFactory, FileHandler};
use tcmu_runtime::testing::TempPath;
use tcmu_runtime::{
    BlockError, BlockHandler, DeviceConfig, HandlerFactory, LbaStatus, ReconfigRequest, Unmap,
    WriteSame,
};

fn dev(path: &TempPath, size: u64) -> DeviceConfig {
    DeviceConfig::new("file0", path.cfg(), size, 512).with_write_cache(true)
}

fn bufs(map: &ScratchArea, spans: &[(usize, usize)]) -> Vec<DataBuf> {
    spans
        .iter()
        .map(|&(off, len)| map.lend(off, len).unwrap())
        .collect()
}

fn bytes(map: &ScratchArea, off: usize, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    map.read(off, &mut v).unwrap();
    v
}

fn pattern(len: usize, seed: u32) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(31).wrapping_add(seed) % 253) as u8)
        .collect()
}

#[test]
fn creates_the_file_and_grows_it_never_shrinks() {
    tokio_uring::start(async {
        let p = TempPath::new("tcmu-handler-file", "create.img");
        let h = FileHandler::open(&dev(&p, 1 << 20)).await.unwrap();
        let m = fs::metadata(p.path()).unwrap();
        assert_eq!(m.len(), 1 << 20);
        assert_eq!(m.permissions().mode() & 0o777, 0o600);
        drop(h);

        // A short file grows to the device size; its data stays.
        fs::write(p.path(), [0x5a; 1000]).unwrap();
        let h = FileHandler::open(&dev(&p, 8192)).await.unwrap();
        assert_eq!(fs::metadata(p.path()).unwrap().len(), 8192);
        let map = ScratchArea::new(8192).unwrap();
        map.fill(0, 8192, 0xee).unwrap();
        h.read(0, bufs(&map, &[(0, 8192)])).await.unwrap();
        let got = bytes(&map, 0, 8192);
        assert!(got[..1000].iter().all(|&b| b == 0x5a));
        assert!(got[1000..].iter().all(|&b| b == 0));
        drop(h);

        // A larger file is never shrunk.
        let _h = FileHandler::open(&dev(&p, 4096)).await.unwrap();
        assert_eq!(fs::metadata(p.path()).unwrap().len(), 8192);
    });
}

#[test]
fn writes_scattered_buffers_and_reads_them_back() {
    tokio_uring::start(async {
        let p = TempPath::new("tcmu-handler-file", "rw.img");
        let h = FileFactory.open(&dev(&p, 4 << 20)).await.unwrap();
        let map = ScratchArea::new(256 << 10).unwrap();
        let data = pattern(20000, 7);
        // Data-out: three buffers at odd places in the "data area".
        map.write(4096, &data[..4096]).unwrap();
        map.write(40960, &data[4096..4096 + 333]).unwrap();
        map.write(65536, &data[4429..]).unwrap();
        let out = bufs(&map, &[(4096, 4096), (40960, 333), (65536, 20000 - 4429)]);
        h.write(1 << 20, out).await.unwrap();

        // Data-in: split differently, pre-filled with garbage.
        map.fill(131072, 65536, 0xee).unwrap();
        let inb = bufs(&map, &[(131072, 10), (150000, 15000), (180000, 4990)]);
        h.read(1 << 20, inb).await.unwrap();
        let mut got = bytes(&map, 131072, 10);
        got.extend(bytes(&map, 150000, 15000));
        got.extend(bytes(&map, 180000, 4990));
        assert_eq!(got, data);
        h.flush().await.unwrap();

        // And the file really holds them.
        let on_disk = fs::read(p.path()).unwrap();
        assert_eq!(&on_disk[1 << 20..(1 << 20) + 20000], &data[..]);
    });
}

#[test]
fn more_buffers_than_iov_max() {
    tokio_uring::start(async {
        let p = TempPath::new("tcmu-handler-file", "iovmax.img");
        let h = FileHandler::open(&dev(&p, 4 << 20)).await.unwrap();
        let n = 2100;
        let map = ScratchArea::new(2 * n * 512).unwrap();
        let data = pattern(n * 512, 3);
        map.write(0, &data).unwrap();
        let spans: Vec<(usize, usize)> = (0..n).map(|i| (i * 512, 512)).collect();
        h.write(4096, bufs(&map, &spans)).await.unwrap();
        let spans: Vec<(usize, usize)> = (0..n).map(|i| (n * 512 + i * 512, 512)).collect();
        h.read(4096, bufs(&map, &spans)).await.unwrap();
        assert_eq!(bytes(&map, n * 512, n * 512), data);
        // Writes with write-through (write cache off) and empty buffers.
        h.reconfig(&ReconfigRequest::WriteCache(false))
            .await
            .unwrap();
        h.write(0, bufs(&map, &[(0, 0), (0, 512), (0, 0)]))
            .await
            .unwrap();
    });
}

#[test]
fn reads_past_eof_are_zeroes() {
    tokio_uring::start(async {
        let p = TempPath::new("tcmu-handler-file", "eof.img");
        let h = FileHandler::open(&dev(&p, 65536)).await.unwrap();
        let map = ScratchArea::new(65536).unwrap();
        map.fill(0, 8192, 0x11).unwrap();
        h.write(0, bufs(&map, &[(0, 8192)])).await.unwrap();
        // Someone truncates the file under us: 1000 bytes are left.
        fs::OpenOptions::new()
            .write(true)
            .open(p.path())
            .unwrap()
            .set_len(1000)
            .unwrap();
        map.fill(0, 65536, 0xee).unwrap();
        // The EOF falls inside the second buffer; the third is all past it.
        h.read(0, bufs(&map, &[(0, 600), (1000, 3496), (8192, 4096)]))
            .await
            .unwrap();
        assert!(bytes(&map, 0, 600).iter().all(|&b| b == 0x11));
        let second = bytes(&map, 1000, 3496);
        assert!(second[..400].iter().all(|&b| b == 0x11));
        assert!(second[400..].iter().all(|&b| b == 0));
        assert!(bytes(&map, 8192, 4096).iter().all(|&b| b == 0));
        // Entirely past the end.
        map.fill(0, 4096, 0xee).unwrap();
        h.read(32768, bufs(&map, &[(0, 4096)])).await.unwrap();
        assert!(bytes(&map, 0, 4096).iter().all(|&b| b == 0));
    });
}

#[test]
fn unmap_punches_holes() {
    tokio_uring::start(async {
        let p = TempPath::new("tcmu-handler-file", "unmap.img");
        let size = 4u64 << 20;
        let h = FileHandler::open(&dev(&p, size)).await.unwrap();
        assert!(h.supports_unmap(), "temp dir filesystem cannot punch holes");
        let params = h.unmap_params();
        assert!(params.reads_zeroes);

        h.write_same(0, size, &[0x77; 512]).await.unwrap();
        h.flush().await.unwrap();
        let before = fs::metadata(p.path()).unwrap().blocks();

        h.unmap(1 << 20, 2 << 20).await.unwrap();
        let m = fs::metadata(p.path()).unwrap();
        assert_eq!(m.len(), size);
        assert!(
            m.blocks() + (1 << 20) / 512 <= before,
            "st_blocks {} -> {}",
            before,
            m.blocks()
        );

        let map = ScratchArea::new(4 << 20).unwrap();
        h.read(0, bufs(&map, &[(0, 4 << 20)])).await.unwrap();
        let got = bytes(&map, 0, 4 << 20);
        assert!(got[..1 << 20].iter().all(|&b| b == 0x77));
        assert!(got[1 << 20..3 << 20].iter().all(|&b| b == 0));
        assert!(got[3 << 20..].iter().all(|&b| b == 0x77));
        assert!(h.unmap(0, 0).await.is_ok());
    });
}

#[test]
fn write_same_repeats_the_pattern() {
    tokio_uring::start(async {
        let p = TempPath::new("tcmu-handler-file", "ws.img");
        let h = FileHandler::open(&dev(&p, 8 << 20)).await.unwrap();
        // More than one 1 MiB chunk, and a length that is not a multiple
        // of the chunk.
        let pat = pattern(4096, 11);
        let len = (2 << 20) + 3 * 4096;
        h.write_same(8192, len as u64, &pat).await.unwrap();
        let disk = fs::read(p.path()).unwrap();
        assert!(disk[..8192].iter().all(|&b| b == 0));
        for (i, chunk) in disk[8192..8192 + len].chunks(4096).enumerate() {
            assert_eq!(chunk, &pat[..], "block {i}");
        }
        assert!(disk[8192 + len..].iter().all(|&b| b == 0));

        // All zeroes: the ZERO_RANGE fast path (or writes).
        h.write_same(8192, 4096 * 5, &[0; 4096]).await.unwrap();
        let disk = fs::read(p.path()).unwrap();
        assert!(disk[..8192 + 4096 * 5].iter().all(|&b| b == 0));
        assert_eq!(&disk[8192 + 4096 * 5..8192 + 4096 * 6], &pat[..]);

        // An empty pattern is an error, not a hang.
        let err = h.write_same(0, 512, &[]).await.unwrap_err();
        assert!(matches!(err, BlockError::Io(_)), "{err}");
    });
}

#[test]
fn reconfig_grows_and_refuses_a_new_path() {
    tokio_uring::start(async {
        let p = TempPath::new("tcmu-handler-file", "reconfig.img");
        let h = FileHandler::open(&dev(&p, 4096)).await.unwrap();
        h.reconfig(&ReconfigRequest::Size(65536)).await.unwrap();
        assert_eq!(fs::metadata(p.path()).unwrap().len(), 65536);
        // Shrinking the device never shrinks the file.
        h.reconfig(&ReconfigRequest::Size(4096)).await.unwrap();
        assert_eq!(fs::metadata(p.path()).unwrap().len(), 65536);
        h.reconfig(&ReconfigRequest::Config(p.cfg())).await.unwrap();
        let msg = h
            .reconfig(&ReconfigRequest::Config("/tmp/other.img".into()))
            .await
            .unwrap_err();
        assert_eq!(
            msg.to_string(),
            "changing the file of a running device is not supported"
        );
        h.reconfig(&ReconfigRequest::WriteCache(false))
            .await
            .unwrap();
        h.close().await;
    });
}

#[test]
fn factory_checks_config() {
    let f = FileFactory;
    assert_eq!(f.subtype(), "file");
    assert_eq!(
        f.check_config("/no/such/dir/disk.img")
            .unwrap_err()
            .to_string(),
        "file handler: directory /no/such/dir does not exist"
    );
    assert_eq!(
        f.check_config("disk.img").unwrap_err().to_string(),
        "file handler: path disk.img is not absolute"
    );
    let p = TempPath::new("tcmu-handler-file", "check.img");
    assert!(f.check_config(&p.cfg()).is_ok());
    assert!(!p.path().exists(), "check_config must not create the file");
    fs::create_dir(p.path()).unwrap();
    let msg = f.check_config(&p.cfg()).unwrap_err().to_string();
    fs::remove_dir(p.path()).unwrap();
    assert!(
        msg.ends_with("is not a regular file or a block device"),
        "{msg}"
    );

    tokio_uring::start(async {
        let msg = FileFactory
            .open(&DeviceConfig::new("x", "/no/such/dir/disk.img", 4096, 512))
            .await
            .err()
            .unwrap()
            .to_string();
        assert_eq!(msg, "file handler: directory /no/such/dir does not exist");
    });
}

#[test]
fn lba_status_reports_holes() {
    use tcmu_runtime::tcmu_scsi::lba_status::Provisioning;
    tokio_uring::start(async {
        let p = TempPath::new("tcmu-handler-file", "lba-status.img");
        let size = 4u64 << 20;
        let h = FileHandler::open(&dev(&p, size)).await.unwrap();
        h.write_same(0, size, &[0x77; 512]).await.unwrap();
        h.unmap(1 << 20, 1 << 20).await.unwrap();
        let x = h.lba_status(0, size, 512).await.unwrap();
        let total: u64 = x.iter().map(|e| e.blocks).sum();
        assert_eq!(total, size / 512);
        assert_eq!(x[0].status, Provisioning::Mapped);
        assert_eq!(x[0].blocks, 2048);
        assert_eq!(x[1].status, Provisioning::Deallocated);
        assert_eq!(x[1].blocks, 2048);
        assert_eq!(x[2].status, Provisioning::Mapped);
    });
}
