//! [`QcowHandler`]: one device served from a qcow2 or qcow image.
//!
//! The [`Image`] resolves guest offsets to clusters (allocating on write,
//! reading through to backing images, inflating compressed clusters) and
//! reads or writes the image file synchronously: [`imago`] for qcow2,
//! [`crate::qcow1`] for qcow version 1. That work (the slow path) runs on
//! the worker's blocking threads ([`tcmu_runtime::blocking`]), never on the
//! worker thread itself, so a busy or slow image does not stall the other
//! devices pinned to the same worker; it goes through a bounce buffer,
//! copied to or from the ring.
//!
//! qcow2 clusters already allocated in the image file and writable in
//! place take the [`FastPath`] once a slow-path command has learnt their
//! mappings: zero copy between the file and the ring, on the worker, with
//! the file handler's engine (inline only where the file cannot wait,
//! io_uring otherwise). qcow version 1 images always take the slow path.
//!
//! UNMAP (and WRITE SAME with UNMAP) discards clusters so that they read
//! back as zeroes (imago's `discard_to_zero`: clusters are marked zero,
//! partial clusters written with zeroes). That needs qcow2 version 3;
//! version 2 and qcow version 1 images report no thin provisioning.
//! Discarding rewrites mappings other commands may be using, so the image
//! sits behind a read-write lock: reads, writes and flushes share it, a
//! discard takes it alone. A discard also invalidates the fast path's
//! mappings of its range and waits for its commands in flight first (see
//! [`crate::fast`]).

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
use crate::fast::FastPath;
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
    /// Data of clusters already allocated in the top image, moved on the
    /// worker (qcow2 images without an external data file only).
    fast: Option<FastPath>,
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

/// A slow-path command learns the mappings of the aligned window of this
/// many clusters around what it touched (2 MiB with 64 KiB clusters): the
/// L2 table it just used is in imago's cache (an L2 table maps
/// cluster size / 8 ≥ 64 clusters, a multiple of 32, so an aligned window
/// never spans two and the lookup never reads metadata from disk),
/// contiguous clusters come in one lookup, and a cold cache warms up this
/// many times faster.
const LEARN_WINDOW_CLUSTERS: u64 = 32;

/// The mappings a slow-path command learnt, if `wanted` (errors only
/// cost the fast path a miss).
fn mappings_if(
    wanted: bool,
    op: &mut dyn ImageOp,
    offset: u64,
    len: usize,
    cluster_size: u64,
) -> Vec<(u64, u64)> {
    if !wanted {
        return Vec::new();
    }
    let window = cluster_size.saturating_mul(LEARN_WINDOW_CLUSTERS).max(1);
    let start = offset / window * window;
    let end = offset
        .saturating_add(len as u64)
        .div_ceil(window)
        .saturating_mul(window);
    op.image()
        .data_mappings(start, end - start, cluster_size)
        .unwrap_or_default()
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
        let fast = if image.maps_own_file() && checked.cluster_size.is_power_of_two() {
            match FastPath::open(&path, checked.cluster_size) {
                Ok(fast) => Some(fast),
                Err(e) => {
                    tracing::warn!(device = %config.name, image = %path.display(), "qcow handler: no fast path, cannot open the image again: {}", Report(&e));
                    None
                }
            }
        } else {
            None
        };
        Ok(Self {
            name: config.name.clone(),
            path,
            image: Arc::new(RwLock::new(image)),
            virtual_size,
            cluster_size: checked.cluster_size,
            block_size: config.block_size.max(1),
            version: checked.version,
            fast,
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

    /// How many commands the fast path has served (0 without one).
    pub fn fast_path_hits(&self) -> u64 {
        self.fast.as_ref().map_or(0, FastPath::hits)
    }

    /// How many cluster mappings the fast path has cached.
    pub fn fast_path_cached(&self) -> usize {
        self.fast.as_ref().map_or(0, FastPath::cached)
    }

    /// Before a slow-path command: the fast path's epoch, if there is a
    /// fast path to teach the command's mappings to.
    fn learning(&self) -> Option<u64> {
        self.fast.as_ref().map(FastPath::epoch)
    }

    /// After a slow-path command that started at `epoch`: caches the
    /// mappings it found.
    fn learn(&self, epoch: Option<u64>, mappings: &[(u64, u64)]) {
        if let (Some(fast), Some(epoch)) = (&self.fast, epoch) {
            fast.learn(epoch, mappings);
        }
    }

    fn failed(&self, what: &str, offset: u64, e: BlockError) -> BlockError {
        tracing::error!(device = %self.name, offset, "qcow handler: {what} failed: {}", Report(&e));
        e
    }
}

#[async_trait(?Send)]
impl BlockHandler for QcowHandler {
    async fn read(&self, offset: u64, bufs: Vec<DataBuf>) -> Result<(), BlockError> {
        let bufs = match &self.fast {
            Some(fast) => match fast.read(offset, bufs).await {
                Ok(r) => return r.map_err(|e| self.failed("read", offset, e.into())),
                Err(bufs) => bufs,
            },
            None => bufs,
        };
        let learn = self.learning();
        let cluster_size = self.cluster_size;
        let mappings = with_image(&self.image, false, move |op| {
            let mut bufs = bufs;
            let len = total_len(&bufs);
            let mut bounce = vec![0u8; len];
            op.image().read(&mut bounce[..], offset)?;
            scatter(&mut bufs, &bounce);
            Ok(mappings_if(learn.is_some(), op, offset, len, cluster_size))
        })
        .await
        .map_err(|e| self.failed("read", offset, e))?;
        self.learn(learn, &mappings);
        Ok(())
    }

    async fn write(&self, offset: u64, bufs: Vec<DataBuf>) -> Result<(), BlockError> {
        let bufs = match &self.fast {
            Some(fast) => match fast.write(offset, bufs).await {
                Ok(r) => return r.map_err(|e| self.failed("write", offset, e.into())),
                Err(bufs) => bufs,
            },
            None => bufs,
        };
        let learn = self.learning();
        let cluster_size = self.cluster_size;
        let mappings = with_image(&self.image, false, move |op| {
            let bounce = gather(&bufs, usize::MAX);
            op.image().write(&bounce[..], offset)?;
            let len = bounce.len();
            Ok(mappings_if(learn.is_some(), op, offset, len, cluster_size))
        })
        .await
        .map_err(|e| self.failed("write", offset, e))?;
        self.learn(learn, &mappings);
        Ok(())
    }

    fn read_now(&self, offset: u64, bufs: &mut [DataBuf]) -> Option<Result<(), BlockError>> {
        let r = self.fast.as_ref()?.read_now(offset, bufs)?;
        Some(r.map_err(|e| self.failed("read", offset, e.into())))
    }

    fn write_now(&self, offset: u64, bufs: &[DataBuf]) -> Option<Result<(), BlockError>> {
        let r = self.fast.as_ref()?.write_now(offset, bufs)?;
        Some(r.map_err(|e| self.failed("write", offset, e.into())))
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
        // Forget the range's mappings and wait for fast-path commands in
        // flight before any cluster is freed; the guard lives until the
        // discard's work is over, even if this command is aborted.
        let guard = match &self.fast {
            Some(fast) => Some(fast.begin_discard(offset, len).await),
            None => None,
        };
        with_image(&self.image, true, move |op| {
            let _guard = guard;
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

    /// Runs `f` as a worker does: in a tokio-uring runtime.
    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio_uring::start(f)
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

    /// `len` bytes that differ every byte and with `seed`.
    fn pattern(len: usize, seed: u32) -> Vec<u8> {
        (0..len as u32)
            .map(|i| (i.wrapping_mul(31).wrapping_add(seed) % 251) as u8)
            .collect()
    }

    /// Reads `len` bytes at `offset` through `h`, into two ring buffers.
    async fn read_back(h: &QcowHandler, offset: u64, len: usize) -> Vec<u8> {
        let area = ScratchArea::new(len).unwrap();
        area.write(0, &vec![0xEE; len]).unwrap();
        let split = len / 3;
        let bufs = vec![
            area.lend(0, split).unwrap(),
            area.lend(split, len - split).unwrap(),
        ];
        h.read(offset, bufs).await.unwrap();
        area.to_vec().unwrap()
    }

    /// Writes `data` at `offset` through `h`, from two ring buffers.
    async fn write_at(h: &QcowHandler, offset: u64, data: &[u8]) {
        let (a, b) = data.split_at(data.len() / 2);
        h.write(offset, vec![scratch_with(a), scratch_with(b)])
            .await
            .unwrap();
    }

    /// The image's bytes as QEMU reads them.
    fn converted(dir: &Path, img: &Path) -> Vec<u8> {
        let raw = dir.join("converted.raw");
        qemu_img(&[
            "convert",
            "-O",
            "raw",
            img.to_str().unwrap(),
            raw.to_str().unwrap(),
        ]);
        std::fs::read(&raw).unwrap()
    }

    #[test]
    fn allocated_clusters_take_the_fast_path() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("fast.qcow2");
        qemu_img(&["create", "-q", "-f", "qcow2", img.to_str().unwrap(), "16M"]);
        let mut expected = vec![0u8; 16 * MIB as usize];
        block_on(async {
            let h = QcowHandler::open(&config(&img, 16 * MIB)).await.unwrap();
            // First writes allocate: the slow path, which learns the mappings.
            let first = pattern(MIB as usize, 1);
            write_at(&h, MIB, &first).await;
            expected[MIB as usize..][..first.len()].copy_from_slice(&first);
            assert_eq!(h.fast_path_hits(), 0);
            assert_eq!(h.fast_path_cached(), 16, "a MiB of 64 KiB clusters");
            // Overwrites inside the allocated range, across clusters and
            // unaligned: the fast path.
            for (at, len, seed) in [
                (MIB + 512, 4096, 2),
                (MIB + 60 * 1024, 8 * 1024, 3),
                (MIB + 100 * 1024 + 512, 300 * 1024, 4),
                (2 * MIB - 512, 512, 5),
            ] {
                let data = pattern(len, seed);
                let hits = h.fast_path_hits();
                write_at(&h, at, &data).await;
                assert_eq!(h.fast_path_hits(), hits + 1, "write at {at}");
                expected[at as usize..][..len].copy_from_slice(&data);
                let hits = h.fast_path_hits();
                assert_eq!(read_back(&h, at, len).await, data, "read at {at}");
                assert_eq!(h.fast_path_hits(), hits + 1, "read at {at}");
            }
            // The sync read/write entry points (tried first by the runtime).
            let mut one = vec![scratch_with(&[0u8; 4096])];
            // (`None` when the file would have waited: read() does it.)
            let hits = h.fast_path_hits();
            if let Some(r) = h.read_now(MIB + 4096, &mut one) {
                r.unwrap();
                assert_eq!(one[0].to_vec(), expected[(MIB + 4096) as usize..][..4096]);
                assert_eq!(h.fast_path_hits(), hits + 1);
            }
            let data = pattern(4096, 7);
            if let Some(r) = h.write_now(MIB + 8192, &[scratch_with(&data)]) {
                r.unwrap();
                expected[(MIB + 8192) as usize..][..4096].copy_from_slice(&data);
            } else {
                write_at(&h, MIB + 8192, &data).await;
                expected[(MIB + 8192) as usize..][..4096].copy_from_slice(&data);
            }
            assert_eq!(read_back(&h, MIB + 8192, 4096).await, data);
            // Partly unallocated: the slow path, which allocates.
            let hits = h.fast_path_hits();
            let data = pattern(128 * 1024, 6);
            write_at(&h, 2 * MIB - 64 * 1024, &data).await;
            assert_eq!(h.fast_path_hits(), hits);
            expected[(2 * MIB - 64 * 1024) as usize..][..data.len()].copy_from_slice(&data);
            assert_eq!(
                read_back(&h, MIB - 4096, 2 * MIB as usize).await,
                expected[(MIB - 4096) as usize..][..2 * MIB as usize]
            );
            h.flush().await.unwrap();
            h.close().await;
        });
        qemu_img(&["check", "-q", img.to_str().unwrap()]);
        assert!(converted(dir.path(), &img) == expected);
        // A cold cache: one slow read learns its whole window.
        block_on(async {
            let h = QcowHandler::open(&config(&img, 16 * MIB)).await.unwrap();
            let at = MIB as usize + 4096;
            assert_eq!(read_back(&h, at as u64, 4096).await, expected[at..][..4096]);
            assert_eq!(h.fast_path_hits(), 0);
            assert_eq!(
                h.fast_path_cached(),
                16,
                "the allocated MiB of the first 2 MiB"
            );
            let at = MIB as usize + 700 * 1024;
            assert_eq!(read_back(&h, at as u64, 4096).await, expected[at..][..4096]);
            assert_eq!(h.fast_path_hits(), 1);
            h.close().await;
        });
    }

    #[test]
    fn discarded_clusters_leave_the_fast_path() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("discard.qcow2");
        qemu_img(&["create", "-q", "-f", "qcow2", img.to_str().unwrap(), "8M"]);
        block_on(async {
            let h = QcowHandler::open(&config(&img, 8 * MIB)).await.unwrap();
            let a = pattern(256 * 1024, 1);
            write_at(&h, MIB, &a).await;
            assert_eq!(read_back(&h, MIB, a.len()).await, a);
            let hits = h.fast_path_hits();
            assert!(hits > 0);
            // Discard the range, let imago free its clusters (at flush),
            // then allocate elsewhere: the freed clusters may be reused.
            let unmap: &dyn Unmap = &h;
            unmap.unmap(MIB, 256 * 1024).await.unwrap();
            assert_eq!(h.fast_path_cached(), 0);
            h.flush().await.unwrap();
            let b = pattern(256 * 1024, 2);
            write_at(&h, 4 * MIB, &b).await;
            // The discarded range reads zeroes, not the other data.
            assert!(read_back(&h, MIB, a.len()).await.iter().all(|&x| x == 0));
            assert_eq!(read_back(&h, 4 * MIB, b.len()).await, b);
            // Writing there again allocates (slow), then it is fast again.
            write_at(&h, MIB, &a).await;
            let hits = h.fast_path_hits();
            assert_eq!(read_back(&h, MIB, a.len()).await, a);
            assert_eq!(h.fast_path_hits(), hits + 1);
            assert_eq!(read_back(&h, 4 * MIB, b.len()).await, b);
            h.close().await;
        });
        qemu_img(&["check", "-q", img.to_str().unwrap()]);
    }

    #[test]
    fn backing_clusters_are_written_on_the_slow_path() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base.qcow2");
        qemu_img(&["create", "-q", "-f", "qcow2", base.to_str().unwrap(), "4M"]);
        let base_data = pattern(2 * MIB as usize, 9);
        block_on(async {
            let h = QcowHandler::open(&config(&base, 4 * MIB)).await.unwrap();
            write_at(&h, 0, &base_data).await;
            h.close().await;
        });
        let top = dir.path().join("top.qcow2");
        qemu_img(&[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            base.to_str().unwrap(),
            "-F",
            "qcow2",
            top.to_str().unwrap(),
        ]);
        let mut expected = vec![0u8; 4 * MIB as usize];
        expected[..base_data.len()].copy_from_slice(&base_data);
        block_on(async {
            let h = QcowHandler::open(&config(&top, 4 * MIB)).await.unwrap();
            // Reads of backing clusters: right, and not cached (the base
            // file's clusters are not the top image's).
            assert_eq!(
                read_back(&h, 0, MIB as usize).await,
                expected[..MIB as usize]
            );
            assert_eq!(h.fast_path_cached(), 0);
            // A write into a backing cluster copies it up: the slow path.
            let data = pattern(4096, 3);
            write_at(&h, 64 * 1024 + 512, &data).await;
            assert_eq!(h.fast_path_hits(), 0);
            expected[64 * 1024 + 512..][..4096].copy_from_slice(&data);
            // Now the top image's own: fast, and the rest of that cluster
            // is the backing file's copy.
            assert_eq!(h.fast_path_cached(), 1);
            assert_eq!(
                read_back(&h, 64 * 1024, 64 * 1024).await,
                expected[64 * 1024..128 * 1024]
            );
            assert_eq!(h.fast_path_hits(), 1);
            // A read across the copied cluster and backing ones: slow, right.
            assert_eq!(read_back(&h, 0, 256 * 1024).await, expected[..256 * 1024]);
            assert_eq!(h.fast_path_hits(), 1);
            h.close().await;
        });
        qemu_img(&["check", "-q", top.to_str().unwrap()]);
        assert!(converted(dir.path(), &top) == expected);
        // The backing file is untouched.
        assert!(converted(dir.path(), &base)[..base_data.len()] == base_data[..]);
    }

    #[test]
    fn images_with_subclusters_are_refused() {
        // Extended L2 entries (subclusters) let a cluster be allocated in
        // part; imago 0.2 refuses such images. Should it learn them, the
        // fast path only takes whole clusters mapped raw (see
        // `Image::data_mappings`): turn this into a data check then.
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("ext.qcow2");
        qemu_img(&[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            "extended_l2=on",
            img.to_str().unwrap(),
            "4M",
        ]);
        assert!(block_on(QcowHandler::open(&config(&img, 4 * MIB))).is_err());
    }

    #[test]
    fn a_smaller_device_keeps_its_fast_path() {
        // The handler never resizes the image (a larger size is refused),
        // so no cluster moves and the cache stays valid.
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("resize.qcow2");
        qemu_img(&["create", "-q", "-f", "qcow2", img.to_str().unwrap(), "8M"]);
        block_on(async {
            let h = QcowHandler::open(&config(&img, 4 * MIB)).await.unwrap();
            let data = pattern(128 * 1024, 4);
            write_at(&h, MIB, &data).await;
            h.reconfig(&ReconfigRequest::Size(8 * MIB)).await.unwrap();
            assert!(h.reconfig(&ReconfigRequest::Size(16 * MIB)).await.is_err());
            let hits = h.fast_path_hits();
            assert_eq!(read_back(&h, MIB, data.len()).await, data);
            assert_eq!(h.fast_path_hits(), hits + 1);
            h.close().await;
        });
    }

    #[test]
    fn qcow_version_1_images_have_no_fast_path() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("v1.qcow");
        qemu_img(&["create", "-q", "-f", "qcow", img.to_str().unwrap(), "8M"]);
        block_on(async {
            let h = QcowHandler::open(&config(&img, 8 * MIB)).await.unwrap();
            let data = pattern(8192, 4);
            write_at(&h, MIB, &data).await;
            assert_eq!(read_back(&h, MIB, data.len()).await, data);
            assert_eq!((h.fast_path_hits(), h.fast_path_cached()), (0, 0));
            h.close().await;
        });
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
