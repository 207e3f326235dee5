//! [`QcowHandler`]: one device served from a qcow2 or qcow image.
//!
//! The [`Image`] resolves guest offsets to clusters (allocating on write,
//! reading through to backing images, inflating compressed clusters) and
//! reads or writes the image file synchronously: [`imago`] for qcow2,
//! [`crate::qcow1`] for qcow version 1. That work runs on the worker's
//! blocking threads ([`tcmu_runtime::blocking`]), never on the worker
//! thread itself, so a busy or slow image does not stall the other devices
//! pinned to the same worker. Each command still goes through a bounce
//! buffer, copied to or from the ring.
//!
//! UNMAP (and WRITE SAME with UNMAP) discards clusters so that they read
//! back as zeroes (imago's `discard_to_zero`: clusters are marked zero,
//! partial clusters written with zeroes). That needs qcow2 version 3;
//! version 2 and qcow version 1 images report no thin provisioning.
//! Discarding rewrites mappings other commands may be using, so the image
//! sits behind a read-write lock: reads, writes and flushes share it, a
//! discard takes it alone.

use std::io;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use tcmu_core::buf::{gather, scatter, total_len};
use tcmu_core::DataBuf;
use tcmu_runtime::{
    blocking, BlockError, BlockHandler, DeviceConfig, HandlerError, ReconfigRequest, Report, Unmap,
};
use tcmu_scsi::UnmapParams;

use crate::config::QcowConfig;
use crate::image::Image;

/// The image, shared with the blocking threads that do its I/O.
type SharedImage = Arc<RwLock<Image>>;

/// A [`BlockHandler`] over a qcow2 or qcow image.
pub struct QcowHandler {
    /// The device's name (for log lines).
    name: String,
    /// The image file.
    path: PathBuf,
    /// The image, with its metadata caches (exclusive only for discards).
    image: SharedImage,
    /// The image's virtual size in bytes.
    virtual_size: u64,
    /// The image's cluster size in bytes.
    cluster_size: u64,
    /// The device's logical block size in bytes.
    block_size: u32,
    /// The qcow version: 1 (qcow), 2 or 3 (qcow2). UNMAP needs 3: the
    /// others have no zero clusters.
    version: u32,
}

impl std::fmt::Debug for QcowHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QcowHandler")
            .field("name", &self.name)
            .field("path", &self.path)
            .field("virtual_size", &self.virtual_size)
            .field("cluster_size", &self.cluster_size)
            .finish()
    }
}

/// Runs `op` on the image from a blocking thread, holding the image lock
/// shared (or, with `exclusive`, alone) for it.
async fn with_image<T, F>(image: &SharedImage, exclusive: bool, op: F) -> Result<T, BlockError>
where
    F: FnOnce(&mut dyn ImageOp) -> io::Result<T> + Send + 'static,
    T: Send + 'static,
{
    let image = image.clone();
    blocking::run(move || {
        let poisoned = || io::Error::other("the image lock was poisoned by a panic");
        if exclusive {
            let mut guard = image.write().map_err(|_| poisoned())?;
            op(&mut Exclusive(&mut guard))
        } else {
            let guard = image.read().map_err(|_| poisoned())?;
            op(&mut Shared(&guard))
        }
    })
    .await?
    .map_err(BlockError::Io)
}

/// What runs on the image from a blocking thread.
trait ImageOp {
    /// The image, shared.
    fn image(&self) -> &Image;
    /// The image, alone (only under the exclusive lock).
    fn image_mut(&mut self) -> io::Result<&mut Image>;
}

struct Shared<'a>(&'a Image);
struct Exclusive<'a>(&'a mut Image);

impl ImageOp for Shared<'_> {
    fn image(&self) -> &Image {
        self.0
    }
    fn image_mut(&mut self) -> io::Result<&mut Image> {
        Err(io::Error::other("the image is not held exclusively"))
    }
}

impl ImageOp for Exclusive<'_> {
    fn image(&self) -> &Image {
        self.0
    }
    fn image_mut(&mut self) -> io::Result<&mut Image> {
        Ok(self.0)
    }
}

impl QcowHandler {
    /// Opens the image named by `config`'s cfgstring for reading and
    /// writing (backing images read-only). Refuses a device larger than the
    /// image's virtual size.
    pub async fn open(config: &DeviceConfig) -> Result<Self, HandlerError> {
        let checked = QcowConfig::check(&config.cfgstring).map_err(HandlerError::invalid_config)?;
        let path = checked.path;
        let opened = {
            let path = path.clone();
            let version = checked.version;
            blocking::run(move || Image::open(&path, version)).await
        };
        let open_error = |e: &dyn std::error::Error| {
            HandlerError::refused(format!(
                "qcow handler: cannot open {}: {}",
                path.display(),
                Report(e)
            ))
        };
        let image = opened.map_err(|e| open_error(&e))?.map_err(|e| {
            HandlerError::io(format!("qcow handler: cannot open {}", path.display()), e)
        })?;
        let virtual_size = image.size();
        if config.size > virtual_size {
            return Err(HandlerError::refused(format!(
                "qcow handler: device {} ({} bytes) is larger than the virtual size of {} ({virtual_size} bytes)",
                config.name,
                config.size,
                path.display()
            )));
        }
        tracing::info!(
            device = %config.name,
            image = %path.display(),
            version = checked.version,
            virtual_size,
            "qcow handler: image opened"
        );
        Ok(Self {
            name: config.name.clone(),
            path,
            image: Arc::new(RwLock::new(image)),
            virtual_size,
            cluster_size: checked.cluster_size,
            block_size: config.block_size.max(1),
            version: checked.version,
        })
    }

    /// Writes cached metadata (imago's L2 tables and refcount blocks; a
    /// qcow version 1 image has none) to the image, then makes the image
    /// file durable (`fsync`).
    async fn write_out(&self) -> Result<(), BlockError> {
        with_image(&self.image, false, |op| op.image().write_out()).await
    }

    /// The image's virtual size in bytes.
    pub fn virtual_size(&self) -> u64 {
        self.virtual_size
    }

    /// Whether the image can deallocate clusters (qcow2 version 3: version
    /// 2 and qcow version 1 images cannot mark clusters as reading zeroes).
    pub fn supports_unmap(&self) -> bool {
        self.version >= 3
    }

    fn failed(&self, what: &str, offset: u64, e: BlockError) -> BlockError {
        tracing::error!(device = %self.name, offset, "qcow handler: {what} failed: {}", Report(&e));
        e
    }
}

#[async_trait(?Send)]
impl BlockHandler for QcowHandler {
    async fn read(&self, offset: u64, mut bufs: Vec<DataBuf>) -> Result<(), BlockError> {
        with_image(&self.image, false, move |op| {
            let mut bounce = vec![0u8; total_len(&bufs)];
            op.image().read(&mut bounce[..], offset)?;
            scatter(&mut bufs, &bounce);
            Ok(())
        })
        .await
        .map_err(|e| self.failed("read", offset, e))
    }

    async fn write(&self, offset: u64, bufs: Vec<DataBuf>) -> Result<(), BlockError> {
        with_image(&self.image, false, move |op| {
            let bounce = gather(&bufs, usize::MAX);
            op.image().write(&bounce[..], offset)
        })
        .await
        .map_err(|e| self.failed("write", offset, e))
    }

    async fn flush(&self) -> Result<(), BlockError> {
        self.write_out()
            .await
            .map_err(|e| self.failed("flush", 0, e))
    }

    async fn reconfig(&self, change: &ReconfigRequest) -> Result<(), HandlerError> {
        match change {
            ReconfigRequest::Size(size) if *size > self.virtual_size => {
                Err(HandlerError::refused(format!(
                    "qcow handler: {size} bytes is larger than the virtual size of {} ({} bytes); \
                 grow the image first (qemu-img resize)",
                    self.path.display(),
                    self.virtual_size
                )))
            }
            ReconfigRequest::Config(cfg)
                if QcowConfig::check(cfg).map(|c| c.path).ok().as_ref() != Some(&self.path) =>
            {
                Err(HandlerError::refused(
                    "qcow handler: the image of a running device cannot be changed",
                ))
            }
            _ => Ok(()),
        }
    }

    async fn close(&self) {
        if let Err(e) = self.write_out().await {
            tracing::error!(device = %self.name, image = %self.path.display(), "qcow handler: cannot write the image's metadata out on close: {}", Report(&e));
        }
    }
}

#[async_trait(?Send)]
impl Unmap for QcowHandler {
    async fn unmap(&self, offset: u64, len: u64) -> Result<(), BlockError> {
        with_image(&self.image, true, move |op| {
            op.image_mut()?.discard_to_zero(offset, len)
        })
        .await
        .map_err(|e| self.failed("discard", offset, e))
    }

    fn unmap_params(&self) -> UnmapParams {
        // A cluster is what can be freed; anything smaller is written with
        // zeroes. The granularity is a hint, so a cluster smaller than a
        // block (512-byte clusters, 4 KiB blocks) counts as one block.
        let granularity = (self.cluster_size / u64::from(self.block_size)).max(1);
        UnmapParams {
            granularity: u32::try_from(granularity).unwrap_or(u32::MAX),
            reads_zeroes: true,
            ..UnmapParams::default()
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use std::path::Path;
    use std::process::Command;
    use tcmu_core::ScratchArea;

    const MIB: u64 = 1 << 20;

    /// Runs qemu-img (from qemu-utils, which the project's set-up installs).
    fn qemu_img(args: &[&str]) -> String {
        let out = Command::new("qemu-img")
            .args(args)
            .output()
            .expect("qemu-img must be installed (Debian's qemu-utils)");
        assert!(
            out.status.success(),
            "qemu-img {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn config(path: &Path, size: u64) -> DeviceConfig {
        DeviceConfig::new("q0", path.to_str().unwrap(), size, 512).with_write_cache(true)
    }

    fn scratch_with(bytes: &[u8]) -> DataBuf {
        let mut buf = DataBuf::scratch(bytes.len()).unwrap();
        buf.copy_from(0, bytes);
        buf
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn writes_read_back_and_leave_a_consistent_image() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("disk.qcow2");
        qemu_img(&["create", "-q", "-f", "qcow2", img.to_str().unwrap(), "16M"]);
        block_on(async {
            let h = QcowHandler::open(&config(&img, 16 * MIB)).await.unwrap();
            assert_eq!(h.virtual_size(), 16 * MIB);
            let data: Vec<u8> = (0..96 * 1024).map(|i| (i * 7 % 251) as u8).collect();
            // Two ring buffers for one command, the second starting mid-cluster.
            let (a, b) = data.split_at(40 * 1024);
            h.write(3 * MIB + 512, vec![scratch_with(a), scratch_with(b)])
                .await
                .unwrap();
            h.flush().await.unwrap();
            let got = ScratchArea::new(data.len()).unwrap();
            h.read(3 * MIB + 512, vec![got.lend_all().unwrap()])
                .await
                .unwrap();
            assert_eq!(got.to_vec().unwrap(), data);
            // Never written: zeroes.
            let zeros = ScratchArea::new(4096).unwrap();
            zeros.write(0, &[0xAA; 4096]).unwrap();
            h.read(9 * MIB, vec![zeros.lend_all().unwrap()])
                .await
                .unwrap();
            assert!(zeros.to_vec().unwrap().iter().all(|&b| b == 0));
            h.close().await;
        });
        // qemu-img finds the image consistent and the data where it was written.
        qemu_img(&["check", "-q", img.to_str().unwrap()]);
        let raw = dir.path().join("disk.raw");
        qemu_img(&[
            "convert",
            "-O",
            "raw",
            img.to_str().unwrap(),
            raw.to_str().unwrap(),
        ]);
        let bytes = std::fs::read(&raw).unwrap();
        let at = (3 * MIB + 512) as usize;
        assert_eq!(bytes[at], 0);
        assert_eq!(bytes[at + 1], 7);
        assert_eq!(bytes[at + 96 * 1024 - 1], ((96 * 1024 - 1) * 7 % 251) as u8);
    }

    #[test]
    fn reads_through_to_a_backing_image() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base.raw");
        let mut content = vec![0u8; 4 * MIB as usize];
        content[MIB as usize..MIB as usize + 4].copy_from_slice(b"BASE");
        std::fs::write(&base, &content).unwrap();
        let top = dir.path().join("top.qcow2");
        qemu_img(&[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            base.to_str().unwrap(),
            "-F",
            "raw",
            top.to_str().unwrap(),
        ]);
        block_on(async {
            let h = QcowHandler::open(&config(&top, 4 * MIB)).await.unwrap();
            let got = ScratchArea::new(512).unwrap();
            h.read(MIB, vec![got.lend_all().unwrap()]).await.unwrap();
            assert_eq!(&got.to_vec().unwrap()[..4], b"BASE");
            h.write(MIB, vec![scratch_with(&[b'T'; 512])])
                .await
                .unwrap();
            h.read(MIB, vec![got.lend_all().unwrap()]).await.unwrap();
            assert_eq!(&got.to_vec().unwrap()[..4], b"TTTT");
            h.close().await;
        });
        // The backing file is untouched.
        assert_eq!(&std::fs::read(&base).unwrap()[MIB as usize..][..4], b"BASE");
        qemu_img(&["check", "-q", top.to_str().unwrap()]);
    }

    #[test]
    fn unmapped_ranges_read_back_as_zeroes() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("thin.qcow2");
        qemu_img(&["create", "-q", "-f", "qcow2", img.to_str().unwrap(), "8M"]);
        block_on(async {
            let h = QcowHandler::open(&config(&img, 8 * MIB)).await.unwrap();
            assert!(h.supports_unmap());
            let unmap: &dyn Unmap = &h;
            let params = unmap.unmap_params();
            assert_eq!(
                params.granularity, 128,
                "64 KiB clusters of 512-byte blocks"
            );
            assert!(params.reads_zeroes);
            h.write(MIB, vec![scratch_with(&[0x5A; 256 * 1024])])
                .await
                .unwrap();
            // Two whole clusters and part of a third.
            unmap.unmap(MIB + 4096, 160 * 1024).await.unwrap();
            let got = ScratchArea::new(256 * 1024).unwrap();
            h.read(MIB, vec![got.lend_all().unwrap()]).await.unwrap();
            let got = got.to_vec().unwrap();
            let (head, rest) = got.split_at(4096);
            let (gone, tail) = rest.split_at(160 * 1024);
            assert!(head.iter().all(|&b| b == 0x5A));
            assert!(gone.iter().all(|&b| b == 0));
            assert!(tail.iter().all(|&b| b == 0x5A));
            h.close().await;
        });
        qemu_img(&["check", "-q", img.to_str().unwrap()]);
    }

    #[test]
    fn version_2_images_report_no_thin_provisioning() {
        // compat=0.10 is qcow2 version 2, which has no zero clusters.
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("v2.qcow2");
        qemu_img(&[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            "compat=0.10",
            img.to_str().unwrap(),
            "8M",
        ]);
        block_on(async {
            let h = QcowHandler::open(&config(&img, 8 * MIB)).await.unwrap();
            assert!(!h.supports_unmap());
            h.close().await;
        });
    }

    #[test]
    fn qcow_version_1_images_are_served_without_thin_provisioning() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("v1.qcow");
        qemu_img(&["create", "-q", "-f", "qcow", img.to_str().unwrap(), "8M"]);
        block_on(async {
            let h = QcowHandler::open(&config(&img, 8 * MIB)).await.unwrap();
            assert_eq!(h.virtual_size(), 8 * MIB);
            assert!(!h.supports_unmap(), "qcow version 1 has no zero clusters");
            h.write(MIB, vec![scratch_with(&[0x11; 4096])])
                .await
                .unwrap();
            h.close().await;
        });
        let raw = dir.path().join("v1.raw");
        qemu_img(&[
            "convert",
            "-f",
            "qcow",
            "-O",
            "raw",
            img.to_str().unwrap(),
            raw.to_str().unwrap(),
        ]);
        let bytes = std::fs::read(&raw).unwrap();
        assert!(bytes[MIB as usize..][..4096].iter().all(|&b| b == 0x11));
    }

    #[test]
    fn refuses_a_device_larger_than_the_image() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("small.qcow2");
        qemu_img(&["create", "-q", "-f", "qcow2", img.to_str().unwrap(), "8M"]);
        let err = block_on(QcowHandler::open(&config(&img, 16 * MIB)))
            .unwrap_err()
            .to_string();
        assert!(err.contains("is larger than the virtual size"), "{err}");
        // Smaller is fine: the device sees the image's first bytes.
        block_on(async {
            let h = QcowHandler::open(&config(&img, 4 * MIB)).await.unwrap();
            let e = h
                .reconfig(&ReconfigRequest::Size(32 * MIB))
                .await
                .unwrap_err()
                .to_string();
            assert!(e.contains("qemu-img resize"), "{e}");
            h.reconfig(&ReconfigRequest::Size(8 * MIB)).await.unwrap();
            h.close().await;
        });
    }
}
