//! [`FastPath`]: reads and writes of clusters already allocated in the
//! top image, straight between the image file and the ring, on the worker.
//!
//! The slow path (the image's driver on a blocking thread, through a bounce
//! buffer) learns, after each command, where the guest clusters around it
//! (an aligned window of clusters) live in the image file. Clusters that are plain data of the top image's
//! own file and may be written in place (imago's shallow mapping
//! `Raw { writable: true }`: a standard cluster with refcount 1, neither
//! compressed, nor zero, nor in a backing file) go into a [`MappingCache`].
//! A command whose every cluster is cached is served with the file
//! handler's engine ([`tcmu_handler_file::io`]: an inline
//! `preadv2`/`pwritev2` where it cannot wait for a device, io_uring
//! otherwise), zero copy, on the worker thread; anything else takes the
//! slow path unchanged, which allocates clusters, copies on write and reads
//! backing files.
//!
//! Fast-path writes only overwrite clusters the image's metadata already
//! maps, so the metadata never changes under them. The file is opened as
//! imago opens it (buffered, read-write, not `O_DIRECT`): both descriptors
//! share the file's page cache, and imago's `sync` (an `fsync` of the same
//! file) makes the fast path's writes durable too.
//!
//! # Invalidation
//!
//! Only a discard (UNMAP, WRITE SAME with UNMAP) frees clusters that the
//! cache may hold; the handler never resizes an image, and the slow path's
//! writes never move a cluster that is writable in place. A freed cluster
//! may later be allocated to another guest offset, so a stale mapping
//! would read or write another offset's data. A discard therefore, before
//! the driver runs it ([`FastPath::begin_discard`]):
//!
//! 1. drops the cached mappings of its range, advances the [`Gate`]'s
//!    epoch and marks a discard in progress, so that no mapping learnt
//!    before or during the discard is inserted ([`FastPath::epoch`],
//!    [`FastPath::learn`]);
//! 2. takes the gate's lock exclusively, which waits until every
//!    fast-path command already running has finished: those hold it
//!    shared across their I/O. While the discard holds it, new fast-path
//!    attempts (`try_read`, never waiting) give way to the slow path, which
//!    queues behind the discard on the image's own lock.
//!
//! A fast-path command aborted while its io_uring operations are in flight
//! does not let go of the gate: its transfer moves to a task of the worker
//! and finishes there (`Finish`), so the kernel never writes to a cluster
//! after a discard freed it.
//!
//! The [`DiscardGuard`] moves into the discard's blocking work and is
//! dropped when that work ends, even if the command was aborted meanwhile:
//! only then does the epoch advance again and the discard stop counting.
//!
//! The cache belongs to the worker thread that serves the device
//! (`RefCell`); the gate is shared with that blocking work.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fs::OpenOptions;
use std::future::Future;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tcmu_core::buf::split_list;
use tcmu_core::DataBuf;
use tcmu_handler_file::io::{self as file_io, Inline};
use tokio::sync::{OwnedRwLockReadGuard, OwnedRwLockWriteGuard, RwLock};

/// At most this many cluster mappings are cached per device: 16 bytes of
/// key and value each (about 1.2 MiB with the map's overhead), covering
/// 4 GiB of hot data with qcow2's default 64 KiB clusters. Enough for the
/// working set of random I/O benchmarks and most guests; a miss only costs
/// one trip through the slow path, which refills the entry.
pub const CACHE_ENTRIES: usize = 64 * 1024;

/// Guest cluster index → offset of that cluster in the image file, for
/// clusters of the top image that can be written in place.
#[derive(Debug, Default)]
pub struct MappingCache {
    map: HashMap<u64, u64>,
}

impl MappingCache {
    /// The host offset of guest cluster `cluster`, if cached.
    pub fn get(&self, cluster: u64) -> Option<u64> {
        self.map.get(&cluster).copied()
    }

    /// Caches `cluster` at `host`, evicting an arbitrary entry when full.
    pub fn insert(&mut self, cluster: u64, host: u64) {
        if self.map.len() >= CACHE_ENTRIES && !self.map.contains_key(&cluster) {
            if let Some(victim) = self.map.keys().next().copied() {
                self.map.remove(&victim);
            }
        }
        self.map.insert(cluster, host);
    }

    /// Forgets clusters `first..=last`.
    pub fn invalidate(&mut self, first: u64, last: u64) {
        let count = last.saturating_sub(first).saturating_add(1);
        if count >= self.map.len() as u64 {
            self.map.retain(|&c, _| c < first || c > last);
        } else {
            for c in first..=last {
                self.map.remove(&c);
            }
        }
    }

    /// How many mappings are cached.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// What fast-path commands and discards synchronise on (see the module
/// documentation).
#[derive(Debug, Default)]
pub struct Gate {
    /// Fast-path commands hold it shared across their I/O, a discard alone.
    lock: Arc<RwLock<()>>,
    /// Advanced when a discard starts and when it ends.
    epoch: AtomicU64,
    /// Discards started and not yet over.
    discarding: AtomicUsize,
}

/// A discard in progress: holds the gate exclusively; dropping it (when
/// the discard's work is over) lets the fast path and the cache go on.
#[derive(Debug)]
pub struct DiscardGuard {
    gate: Arc<Gate>,
    _lock: OwnedRwLockWriteGuard<()>,
}

impl Drop for DiscardGuard {
    fn drop(&mut self) {
        self.gate.epoch.fetch_add(1, Ordering::AcqRel);
        self.gate.discarding.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The image file as the fast path moves bytes through it.
#[derive(Debug)]
struct FastIo {
    /// The image file, for io_uring.
    file: tokio_uring::fs::File,
    /// A duplicate descriptor, for the inline attempts.
    meta: std::fs::File,
    read_policy: Cell<Inline>,
    write_policy: Cell<Inline>,
}

/// Which way a transfer goes.
#[derive(Debug, Clone, Copy)]
enum Dir {
    Read,
    Write,
}

impl FastIo {
    /// Moves `bufs` through the file at `runs`, in order, holding the
    /// gate shared (`_shared`) until the last byte has moved.
    async fn transfer(
        self: Rc<Self>,
        dir: Dir,
        runs: Runs,
        mut bufs: Vec<DataBuf>,
        _shared: OwnedRwLockReadGuard<()>,
    ) -> io::Result<()> {
        for (pos, len) in runs {
            let rest = split_list(&mut bufs, len);
            let piece = std::mem::replace(&mut bufs, rest);
            let fd = self.meta.as_fd();
            match dir {
                Dir::Read => file_io::read(&self.file, fd, &self.read_policy, pos, piece).await?,
                Dir::Write => {
                    file_io::write(&self.file, fd, &self.write_policy, pos, piece).await?
                }
            }
        }
        Ok(())
    }
}

/// A fast-path transfer that runs to its end even if its command is
/// dropped (aborted) meanwhile: an io_uring operation already submitted
/// goes on in the kernel, and the gate must stay held until it is over,
/// or a discard could free (and a write reallocate) a cluster it still
/// writes. Dropped unfinished, it moves itself to a task of the worker.
struct Finish(Option<Pin<Box<dyn Future<Output = io::Result<()>>>>>);

impl Future for Finish {
    type Output = io::Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let Some(f) = this.0.as_mut() else {
            return Poll::Ready(Err(io::Error::other(
                "fast-path transfer polled after it ended",
            )));
        };
        let out = f.as_mut().poll(cx);
        if out.is_ready() {
            this.0 = None;
        }
        out
    }
}

impl Drop for Finish {
    fn drop(&mut self) {
        let Some(rest) = self.0.take() else {
            return;
        };
        if std::thread::panicking() {
            return;
        }
        // Commands are dropped on their worker, inside its runtime; should
        // one be dropped anywhere else, spawning fails and the transfer is
        // dropped as it would have been.
        let spawned = std::panic::catch_unwind(AssertUnwindSafe(move || {
            tokio_uring::spawn(async move {
                if let Err(e) = rest.await {
                    tracing::debug!("qcow handler: an aborted fast-path transfer failed: {e}");
                }
            })
        }));
        if spawned.is_err() {
            tracing::warn!("qcow handler: an aborted fast-path transfer could not be finished");
        }
    }
}

/// The fast path of one qcow2 image (see the module documentation).
#[derive(Debug)]
pub struct FastPath {
    /// The image file.
    io: Rc<FastIo>,
    /// log2 of the cluster size.
    cluster_bits: u32,
    cache: RefCell<MappingCache>,
    gate: Arc<Gate>,
    /// Commands served by the fast path (for tests and debugging).
    hits: Cell<u64>,
}

/// Host-contiguous pieces of a request: (position in the file, length).
type Runs = Vec<(u64, usize)>;

impl FastPath {
    /// Opens the image file at `path` again, read-write and buffered as
    /// imago does, for clusters of `cluster_size` bytes (a power of two).
    pub fn open(path: &Path, cluster_size: u64) -> io::Result<Self> {
        let std_file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)?;
        let meta = std_file.try_clone()?;
        let policy = file_io::policy_for(meta.as_fd());
        Ok(Self {
            io: Rc::new(FastIo {
                file: tokio_uring::fs::File::from_std(std_file),
                meta,
                read_policy: Cell::new(policy),
                write_policy: Cell::new(policy),
            }),
            cluster_bits: cluster_size.max(1).trailing_zeros(),
            cache: RefCell::new(MappingCache::default()),
            gate: Arc::new(Gate::default()),
            hits: Cell::new(0),
        })
    }

    /// How many commands the fast path has served.
    pub fn hits(&self) -> u64 {
        self.hits.get()
    }

    /// How many cluster mappings are cached.
    pub fn cached(&self) -> usize {
        self.cache.borrow().len()
    }

    /// The epoch a slow-path command notes before it starts, to hand to
    /// [`learn`](Self::learn) with the mappings it found.
    pub fn epoch(&self) -> u64 {
        self.gate.epoch.load(Ordering::Acquire)
    }

    /// Caches `mappings` (guest cluster, host offset) found by a slow-path
    /// command that started at `epoch`, unless a discard started since
    /// (or is running): they may predate it.
    pub fn learn(&self, epoch: u64, mappings: &[(u64, u64)]) {
        if mappings.is_empty()
            || self.gate.discarding.load(Ordering::Acquire) != 0
            || self.epoch() != epoch
        {
            return;
        }
        let mut cache = self.cache.borrow_mut();
        for &(cluster, host) in mappings {
            cache.insert(cluster, host);
        }
    }

    /// Starts a discard of `len` bytes at `offset`: forgets their clusters
    /// and waits for fast-path commands in flight. Keep the guard until
    /// the discard's work is over.
    pub async fn begin_discard(&self, offset: u64, len: u64) -> DiscardGuard {
        self.gate.discarding.fetch_add(1, Ordering::AcqRel);
        self.gate.epoch.fetch_add(1, Ordering::AcqRel);
        if len > 0 {
            let first = offset >> self.cluster_bits;
            let last = offset.saturating_add(len - 1) >> self.cluster_bits;
            self.cache.borrow_mut().invalidate(first, last);
        }
        // Counted before waiting, so that a dropped future still undoes it.
        let pending = PendingDiscard(self.gate.clone());
        let lock = self.gate.lock.clone().write_owned().await;
        let gate = pending.defuse();
        DiscardGuard { gate, _lock: lock }
    }

    /// The host-contiguous runs of `len` bytes at guest `offset`, if every
    /// cluster is cached.
    fn runs(&self, offset: u64, len: usize) -> Option<Runs> {
        if len == 0 {
            return None;
        }
        let cache = self.cache.borrow();
        let cs = 1u64 << self.cluster_bits;
        let end = offset.checked_add(len as u64)?;
        let mut runs: Runs = Vec::with_capacity(1);
        let mut pos = offset;
        while pos < end {
            let cluster = pos >> self.cluster_bits;
            let within = pos & (cs - 1);
            let host = cache.get(cluster)? + within;
            let n = (cs - within).min(end - pos);
            match runs.last_mut() {
                Some((at, l)) if *at + *l as u64 == host => *l += n as usize,
                _ => runs.push((host, n as usize)),
            }
            pos += n;
        }
        Some(runs)
    }

    /// Serves a read of guest `offset` on the fast path if it can: the
    /// result, or the buffers back when the slow path must do it.
    pub async fn read(
        &self,
        offset: u64,
        bufs: Vec<DataBuf>,
    ) -> Result<io::Result<()>, Vec<DataBuf>> {
        self.transfer(Dir::Read, offset, bufs).await
    }

    /// Serves a write at guest `offset` on the fast path if it can: the
    /// result, or the buffers back when the slow path must do it.
    pub async fn write(
        &self,
        offset: u64,
        bufs: Vec<DataBuf>,
    ) -> Result<io::Result<()>, Vec<DataBuf>> {
        self.transfer(Dir::Write, offset, bufs).await
    }

    async fn transfer(
        &self,
        dir: Dir,
        offset: u64,
        bufs: Vec<DataBuf>,
    ) -> Result<io::Result<()>, Vec<DataBuf>> {
        let Ok(shared) = self.gate.lock.clone().try_read_owned() else {
            return Err(bufs);
        };
        let Some(runs) = self.runs(offset, tcmu_core::buf::total_len(&bufs)) else {
            return Err(bufs);
        };
        self.hits.set(self.hits.get() + 1);
        let io = self.io.clone();
        Ok(Finish(Some(Box::pin(io.transfer(dir, runs, bufs, shared)))).await)
    }

    /// Reads right away (one inline syscall), when the whole request is
    /// one cached host run the file serves without waiting.
    pub fn read_now(&self, offset: u64, bufs: &mut [DataBuf]) -> Option<io::Result<()>> {
        let len = tcmu_core::buf::total_len(bufs);
        self.now(offset, len, |pos| {
            file_io::read_now(self.io.meta.as_fd(), &self.io.read_policy, pos, bufs)
        })
    }

    /// Writes right away (one inline syscall), when the whole request is
    /// one cached host run the file takes without waiting.
    pub fn write_now(&self, offset: u64, bufs: &[DataBuf]) -> Option<io::Result<()>> {
        let len = tcmu_core::buf::total_len(bufs);
        self.now(offset, len, |pos| {
            file_io::write_now(self.io.meta.as_fd(), &self.io.write_policy, pos, bufs)
        })
    }

    /// Runs `transfer` at the file position of `len` bytes at `offset`
    /// when they are one cached host run, holding the gate shared (never
    /// waiting for it); counts a hit when `transfer` did the work.
    fn now(
        &self,
        offset: u64,
        len: usize,
        transfer: impl FnOnce(u64) -> Option<io::Result<()>>,
    ) -> Option<io::Result<()>> {
        let _shared = self.gate.lock.try_read().ok()?;
        let runs = self.runs(offset, len)?;
        let [(pos, _)] = runs[..] else {
            return None;
        };
        let r = transfer(pos)?;
        self.hits.set(self.hits.get() + 1);
        Some(r)
    }
}

/// A discard counted in the gate but not yet holding its lock: undoes the
/// count if dropped (the command was aborted while waiting).
struct PendingDiscard(Arc<Gate>);

impl PendingDiscard {
    fn defuse(self) -> Arc<Gate> {
        let gate = self.0.clone();
        std::mem::forget(self);
        gate
    }
}

impl Drop for PendingDiscard {
    fn drop(&mut self) {
        self.0.epoch.fetch_add(1, Ordering::AcqRel);
        self.0.discarding.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use futures::FutureExt;

    #[test]
    fn an_aborted_transfer_holds_the_gate_until_it_ends() {
        tokio_uring::start(async {
            let lock = Arc::new(RwLock::new(()));
            let shared = lock.clone().try_read_owned().unwrap();
            let done = Rc::new(Cell::new(false));
            let d = done.clone();
            let mut f = Finish(Some(Box::pin(async move {
                let _shared = shared;
                tokio::task::yield_now().await;
                tokio::task::yield_now().await;
                d.set(true);
                Ok(())
            })));
            assert!((&mut f).now_or_never().is_none(), "in flight");
            drop(f); // the command was aborted
            let _alone = lock.write().await;
            assert!(done.get(), "the discard waited for the transfer to end");
        });
    }

    #[test]
    fn the_cache_is_bounded_and_forgets_ranges() {
        let mut c = MappingCache::default();
        for i in 0..(CACHE_ENTRIES as u64 + 10) {
            c.insert(i, i * 2);
        }
        assert_eq!(c.len(), CACHE_ENTRIES);
        c.insert(1 << 40, 7);
        assert_eq!(c.get(1 << 40), Some(7));
        let before = c.len();
        c.invalidate(0, u64::MAX);
        assert!(c.is_empty(), "{before} entries, all in range");
        for i in 0..100 {
            c.insert(i, i);
        }
        c.invalidate(10, 19);
        assert_eq!(c.len(), 90);
        assert_eq!(c.get(9), Some(9));
        assert_eq!(c.get(10), None);
        assert_eq!(c.get(19), None);
        assert_eq!(c.get(20), Some(20));
    }
}
