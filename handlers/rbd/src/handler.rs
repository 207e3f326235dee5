//! [`RbdHandler`]: one device served from an RBD image.
//!
//! # The data path
//!
//! Reads and writes go to librbd as asynchronous vectored operations
//! straight from and into the ring's data area (`rbd_aio_readv`,
//! `rbd_aio_writev`); SYNCHRONIZE CACHE and FUA are `rbd_aio_flush`, UNMAP
//! `rbd_aio_discard`, WRITE SAME `rbd_aio_write_zeroes` or
//! `rbd_aio_writesame`, and a COMPARE AND WRITE within one 512-byte sector
//! `rbd_aio_compare_and_write`, atomic on the OSD. librbd completes on its
//! own threads; see `tcmu_rbd_ffi::aio` for how buffers outlive aborted
//! commands.
//!
//! # The exclusive lock
//!
//! As tcmu-runner's implicit ALUA does for ceph-iscsi: reads need no lock;
//! the first write (UNMAP, WRITE SAME, COMPARE AND WRITE count as writes)
//! starts taking the image's exclusive lock in the background — breaking
//! (and so blocklisting) whoever holds it — and every write meanwhile is
//! answered BUSY, which initiators retry. Once held, the lock is kept
//! (`rbd_lock_acquire`: librbd no longer hands it over on request).
//!
//! When another client takes it (breaking ours blocklists this client) an
//! operation fails with `EBLOCKLISTED` or `EROFS`: that command and every
//! one after it is answered BUSY, the lock-lost counter goes up, and the
//! device reopens its connection (a new client, a new address) in the
//! background. Nothing of ours is written after that: the old client is
//! fenced by the OSDs, and the new one writes only once it holds the lock
//! again. It takes the lock back only on a write, and not within
//! [`LOCK_HOLDOFF`] of losing it, so two gateways that both receive writes
//! hand the lock over at most once per hold-off instead of many times a
//! second (each hand-over adds a blocklist entry to the OSD map).
//!
//! An operation that times out (`osd_op_timeout`) is answered BUSY and
//! counted; it affects this device alone.

use std::cell::{Cell, RefCell};
use std::io;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tcmu_core::buf;
use tcmu_core::scratch::ScratchArea;
use tcmu_core::DataBuf;
use tcmu_rbd_ffi::{Done, Error as RbdError, Op};
use tcmu_runtime::{
    blocking, BlockError, BlockHandler, CompareAndWrite, CompareError, HandlerError,
    ReconfigRequest, Report, Unmap, WriteSame,
};
use tcmu_scsi::alua::AccessState;
use tcmu_scsi::UnmapParams;
use tracing::{debug, error, info, warn};

use crate::config::RbdConfig;
use crate::conn::{self, Conn, Status};

/// After the lock was taken from us, how long writes are answered BUSY
/// before this device takes it back (unless [`HOLDOFF_ENV`] says
/// otherwise).
pub const LOCK_HOLDOFF: Duration = Duration::from_secs(5);

/// The daemon's environment variable that overrides [`LOCK_HOLDOFF`], in
/// milliseconds (tests lengthen it to look at the data while another client
/// holds the lock).
pub const HOLDOFF_ENV: &str = "TCMU_RBD_LOCK_HOLDOFF_MS";

/// The hold-off in force.
fn lock_holdoff() -> Duration {
    std::env::var(HOLDOFF_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(LOCK_HOLDOFF, Duration::from_millis)
}

/// How long a reopen waits for the old client to close before it opens the
/// new one anyway (the close goes on in the background).
const CLOSE_WAIT: Duration = Duration::from_secs(10);

/// Between failed attempts to reopen the connection.
const REOPEN_RETRY: Duration = Duration::from_secs(2);

/// Events are published in the service map at most this often (bursts of
/// time-outs come together), as tcmu-runner batches them.
const STATUS_BATCH: Duration = Duration::from_secs(1);

/// A command that finds the device not ready for it (the lock being taken,
/// the connection reopened) waits this long for that to change before it
/// is answered BUSY: most then need no retry at all, and those that do are
/// retried about once a second instead of in a tight loop that would
/// starve the cluster of CPU.
const BUSY_WAIT: Duration = Duration::from_secs(1);

/// librbd takes a compare-and-write within one sector of this size.
const CAW_SECTOR: u64 = 512;

/// Where the device stands with the image's exclusive lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LockState {
    /// The image has no exclusive-lock feature: writes go ahead unfenced.
    NotUsed,
    /// Not held; the next write starts taking it.
    Unlocked,
    /// Being taken in the background.
    Locking,
    /// Held.
    Locked,
}

/// The counters the service map shows (see [`Status`]).
#[derive(Debug, Default)]
struct Counters {
    lock_lost: Cell<u64>,
    conn_lost: Cell<u64>,
    cmd_timed_out: Cell<u64>,
}

/// The device's state, shared with its background tasks (lock taking,
/// reopening, status reports), all on the device's worker thread.
#[derive(Debug)]
struct Inner {
    /// The device's name, for logs.
    name: String,
    cfg: RbdConfig,
    cfgstring: String,
    /// The device's size in bytes.
    size: Cell<u64>,
    /// The current connection; `None` while reopening.
    conn: RefCell<Option<Arc<Conn>>>,
    /// Incarnation of `conn`: results of an older one are not news.
    generation: Cell<u64>,
    lock: Cell<LockState>,
    /// When the lock was last taken from us (for [`LOCK_HOLDOFF`]).
    lost_at: Cell<Option<Instant>>,
    /// Another client held the lock when we opened the image and we have
    /// not held it since (RTPG: active/non-optimized, not the configured
    /// state).
    held_elsewhere: Cell<bool>,
    /// The hold-off in force ([`LOCK_HOLDOFF`], [`HOLDOFF_ENV`]).
    holdoff: Duration,
    reopening: Cell<bool>,
    closed: Cell<bool>,
    counters: Counters,
    /// A status report is scheduled.
    report_pending: Cell<bool>,
    /// Operations timed out since the last one that completed.
    timing_out: Cell<u64>,
    /// Woken when the lock or the connection changes.
    changed: tokio::sync::Notify,
}

/// A [`BlockHandler`] over an RBD image.
#[derive(Debug)]
pub struct RbdHandler {
    inner: Rc<Inner>,
    unmap: UnmapParams,
}

/// What an operation was, for error answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Read,
    Write,
    Flush,
}

fn busy(why: impl Into<String>) -> BlockError {
    BlockError::Busy(why.into())
}

impl RbdHandler {
    /// Serves device `name` (of `size` bytes, `block_size`-byte blocks)
    /// over the open connection `conn`, made from `cfgstring`.
    pub(crate) fn new(
        name: &str,
        cfg: RbdConfig,
        cfgstring: &str,
        size: u64,
        block_size: u32,
        conn: Conn,
    ) -> Self {
        let unmap = unmap_params(&conn, block_size);
        let locked_elsewhere = conn.locked_elsewhere;
        let lock = if conn.exclusive_lock {
            LockState::Unlocked
        } else {
            LockState::NotUsed
        };
        let inner = Rc::new(Inner {
            name: name.to_owned(),
            cfg,
            cfgstring: cfgstring.to_owned(),
            size: Cell::new(size),
            conn: RefCell::new(Some(Arc::new(conn))),
            generation: Cell::new(0),
            lock: Cell::new(lock),
            lost_at: Cell::new(None),
            held_elsewhere: Cell::new(locked_elsewhere),
            holdoff: lock_holdoff(),
            reopening: Cell::new(false),
            closed: Cell::new(false),
            counters: Counters::default(),
            report_pending: Cell::new(false),
            timing_out: Cell::new(0),
            changed: tokio::sync::Notify::new(),
        });
        Inner::report(&inner);
        Self { inner, unmap }
    }

    /// Whether this device holds the image's exclusive lock now.
    pub fn holds_lock(&self) -> bool {
        self.inner.lock.get() == LockState::Locked
    }

    /// The counters the service map shows.
    pub fn status(&self) -> Status {
        self.inner.status()
    }

    /// Submits an operation on the current connection (for reads:
    /// whatever the lock; for writes: only while the lock is held) and
    /// waits for it. The connection is not held across the wait, so a
    /// reopen can close it (librbd's close waits for the operation).
    async fn run(
        &self,
        kind: Kind,
        submit: impl FnOnce(&Conn) -> Result<Op, RbdError>,
    ) -> Result<Done, BlockError> {
        let inner = &self.inner;
        let deadline = Instant::now() + BUSY_WAIT;
        let (op, generation) = {
            let conn = loop {
                // Made before the check, so a change in between wakes it.
                let changed = inner.changed.notified();
                let ready = match kind {
                    Kind::Write => Inner::conn_for_write(inner),
                    Kind::Read | Kind::Flush => inner.conn_for_read(),
                };
                match ready {
                    Ok(conn) => break conn,
                    Err(BlockError::Busy(why)) => {
                        let left = deadline.saturating_duration_since(Instant::now());
                        if left.is_zero() {
                            return Err(BlockError::Busy(why));
                        }
                        let _ = tokio::time::timeout(left, changed).await;
                    }
                    Err(e) => return Err(e),
                }
            };
            let op = submit(&conn).map_err(|e| inner.failed(kind, inner.generation.get(), &e))?;
            (op, inner.generation.get())
        };
        let done = op.await;
        match done.errno() {
            None => {
                let timed_out = inner.timing_out.replace(0);
                if timed_out > 0 {
                    info!(device = %inner.name, "rbd: operations complete again, after {timed_out} timed out");
                }
                Ok(done)
            }
            Some(libc::EILSEQ) => Ok(done),
            Some(errno) => {
                let e = RbdError::from_ret(format!("{kind:?} failed"), -i64::from(errno));
                Err(Inner::failed_rc(inner, kind, generation, &e))
            }
        }
    }
}

/// The UNMAP limits: granularity and alignment from
/// `rbd_discard_granularity_bytes` (else the object size); up to four
/// objects per descriptor, as tcmu-runner allows. Unmapped blocks may
/// keep their data below the granularity, so LBPRZ stays clear.
fn unmap_params(conn: &Conn, block_size: u32) -> UnmapParams {
    let bs = u64::from(block_size.max(1));
    let obj = conn.info.obj_size.max(bs);
    let gran = conn.discard_granularity.filter(|&g| g >= bs).unwrap_or(obj);
    let blocks = |bytes: u64| u32::try_from(bytes / bs).unwrap_or(u32::MAX).max(1);
    UnmapParams {
        max_lba_count: blocks(4 * obj),
        max_descriptors: 16,
        granularity: blocks(gran),
        // As tcmu-runner: granules start at multiples of the granularity
        // (an alignment of one granularity is that, with UGAVALID set).
        alignment: blocks(gran),
        reads_zeroes: false,
    }
}

impl Inner {
    fn status(&self) -> Status {
        Status {
            lock_owner: self.lock.get() == LockState::Locked,
            lock_lost: self.counters.lock_lost.get(),
            conn_lost: self.counters.conn_lost.get(),
            cmd_timed_out: self.counters.cmd_timed_out.get(),
        }
    }

    fn current(&self) -> Option<Arc<Conn>> {
        self.conn.borrow().clone()
    }

    fn conn_for_read(&self) -> Result<Arc<Conn>, BlockError> {
        if self.closed.get() {
            return Err(BlockError::NotReady("rbd: device closing".into()));
        }
        self.current()
            .ok_or_else(|| busy("rbd: reconnecting to the cluster"))
    }

    /// The connection, if writes may go to it now; otherwise why not,
    /// having started what lets them go (taking the lock).
    fn conn_for_write(this: &Rc<Self>) -> Result<Arc<Conn>, BlockError> {
        let conn = this.conn_for_read()?;
        match this.lock.get() {
            LockState::Locked | LockState::NotUsed => Ok(conn),
            LockState::Locking => Err(busy("rbd: taking the exclusive lock")),
            LockState::Unlocked => {
                if let Some(at) = this.lost_at.get() {
                    let since = at.elapsed();
                    if since < this.holdoff {
                        return Err(busy(format!(
                            "rbd: the exclusive lock moved to another client {} ms ago",
                            since.as_millis()
                        )));
                    }
                }
                Self::start_locking(this, conn);
                Err(busy("rbd: taking the exclusive lock"))
            }
        }
    }

    /// Takes the exclusive lock in the background: breaks the holder's
    /// lock (librbd blocklists it), then acquires and keeps it.
    fn start_locking(this: &Rc<Self>, conn: Arc<Conn>) {
        this.lock.set(LockState::Locking);
        let generation = this.generation.get();
        info!(device = %this.name, image = %this.cfg.spec(), "rbd: taking the exclusive lock");
        let inner = this.clone();
        tokio::task::spawn_local(async move {
            let started = Instant::now();
            let r = blocking::run(move || acquire(&conn)).await;
            if inner.generation.get() != generation || inner.closed.get() {
                return;
            }
            match r {
                Ok(Ok(broken)) => {
                    inner.lock.set(LockState::Locked);
                    inner.held_elsewhere.set(false);
                    inner.changed.notify_waiters();
                    if broken.is_empty() {
                        info!(device = %inner.name, "rbd: exclusive lock acquired in {} ms", started.elapsed().as_millis());
                    } else {
                        warn!(
                            device = %inner.name,
                            "rbd: exclusive lock acquired in {} ms, after breaking the lock of {} (blocklisted)",
                            started.elapsed().as_millis(),
                            broken.join(", ")
                        );
                    }
                }
                Ok(Err(e)) if is_fenced(e.errno()) => {
                    warn!(device = %inner.name, "rbd: cannot take the exclusive lock: {}", Report(&e));
                    inner.lock.set(LockState::Unlocked);
                    Self::lost(&inner, generation, true);
                }
                Ok(Err(e)) => {
                    warn!(device = %inner.name, "rbd: cannot take the exclusive lock (the next write retries): {}", Report(&e));
                    inner.lock.set(LockState::Unlocked);
                    inner.changed.notify_waiters();
                }
                Err(e) => {
                    error!(device = %inner.name, "rbd: taking the exclusive lock failed: {}", Report(&e));
                    inner.lock.set(LockState::Unlocked);
                }
            }
            Self::report(&inner);
        });
    }

    /// The answer for a failed operation of incarnation `generation`,
    /// acting on what the failure says about the connection.
    fn failed_rc(this: &Rc<Self>, kind: Kind, generation: u64, e: &RbdError) -> BlockError {
        let errno = e.errno();
        if is_fenced(errno) {
            Self::lost(this, generation, this.lock.get() == LockState::Locked);
            return busy(format!("rbd: {}", Report(e)));
        }
        if errno == libc::ETIMEDOUT {
            let n = this.counters.cmd_timed_out.get() + 1;
            this.counters.cmd_timed_out.set(n);
            this.timing_out.set(this.timing_out.get() + 1);
            // An OSD outage times out every command in flight: log the
            // first ones and then every power of two.
            if n <= 4 || n.is_power_of_two() {
                warn!(device = %this.name, "rbd: {kind:?} timed out (osd_op_timeout): answered BUSY ({n} so far)");
            }
            Self::report(this);
            return busy("rbd: OSD operation timed out");
        }
        this.failed(kind, generation, e)
    }

    /// The answer for an operation librbd refused or failed for another
    /// reason.
    fn failed(&self, kind: Kind, _generation: u64, e: &RbdError) -> BlockError {
        warn!(device = %self.name, "rbd: {kind:?}: {}", Report(e));
        match e.errno() {
            libc::EINVAL => BlockError::Sense(tcmu_scsi::Sense::invalid_field_in_cdb(0, None)),
            n => BlockError::Io(io::Error::from_raw_os_error(n)),
        }
    }

    /// This incarnation was fenced (blocklisted, or the lock taken from
    /// it): count it and reopen, once.
    fn lost(this: &Rc<Self>, generation: u64, had_lock: bool) {
        if generation != this.generation.get() || this.reopening.get() || this.closed.get() {
            return;
        }
        if had_lock {
            this.counters
                .lock_lost
                .set(this.counters.lock_lost.get() + 1);
            warn!(
                device = %this.name,
                image = %this.cfg.spec(),
                "rbd: lost the exclusive lock (another client took it; we are blocklisted): \
                 writes answered BUSY, reopening"
            );
        } else {
            this.counters
                .conn_lost
                .set(this.counters.conn_lost.get() + 1);
            warn!(device = %this.name, image = %this.cfg.spec(), "rbd: our client is blocklisted: reopening");
        }
        this.lost_at.set(Some(Instant::now()));
        Self::reopen(this);
    }

    /// Drops the current connection and opens a new one (a new client) in
    /// the background, retrying until it works or the device closes.
    fn reopen(this: &Rc<Self>) {
        this.reopening.set(true);
        this.generation.set(this.generation.get() + 1);
        if this.lock.get() != LockState::NotUsed {
            this.lock.set(LockState::Unlocked);
        }
        let old = this.conn.borrow_mut().take();
        Self::report(this);
        let inner = this.clone();
        tokio::task::spawn_local(async move {
            if let Some(old) = old {
                // Close the old client first (its operations fail at once:
                // it is fenced; or within osd_op_timeout), so the new one's
                // open finds its address among the stale ones to unblock;
                // but never wait for it more than CLOSE_WAIT.
                let closing = Instant::now();
                let close = blocking::run(move || drop(old));
                match tokio::time::timeout(CLOSE_WAIT, close).await {
                    Ok(_) => {
                        debug!(device = %inner.name, "rbd: old client closed in {} ms", closing.elapsed().as_millis())
                    }
                    Err(_) => warn!(
                        device = %inner.name,
                        "rbd: the old client did not close within {} s; opening a new one meanwhile",
                        CLOSE_WAIT.as_secs()
                    ),
                }
            }
            let started = Instant::now();
            let mut attempts = 0u32;
            loop {
                if inner.closed.get() {
                    return;
                }
                attempts += 1;
                let cfg = inner.cfg.clone();
                match blocking::run(move || conn::open(&cfg)).await {
                    Ok(Ok(mut c)) => {
                        if inner.closed.get() {
                            tokio::task::spawn_blocking(move || drop(c));
                            return;
                        }
                        let cfg = inner.cfg.clone();
                        let c = blocking::run(move || {
                            if let Err(e) = conn::register_service(&mut c, &cfg) {
                                warn!("rbd: {}", Report(&e));
                            }
                            c
                        })
                        .await;
                        let Ok(c) = c else { continue };
                        info!(
                            device = %inner.name,
                            address = %c.addrs,
                            "rbd: reopened {} after {} ms ({attempts} attempt(s))",
                            inner.cfg.spec(),
                            started.elapsed().as_millis()
                        );
                        *inner.conn.borrow_mut() = Some(Arc::new(c));
                        inner.reopening.set(false);
                        inner.changed.notify_waiters();
                        Self::report(&inner);
                        return;
                    }
                    Ok(Err(e)) => {
                        warn!(device = %inner.name, "rbd: reopen attempt {attempts} failed: {}", Report(&e));
                    }
                    Err(e) => {
                        warn!(device = %inner.name, "rbd: reopen attempt {attempts} failed: {}", Report(&e))
                    }
                }
                tokio::time::sleep(REOPEN_RETRY).await;
            }
        });
    }

    /// Publishes the status in the service map soon (batched).
    fn report(this: &Rc<Self>) {
        if this.report_pending.replace(true) {
            return;
        }
        let inner = this.clone();
        tokio::task::spawn_local(async move {
            tokio::time::sleep(STATUS_BATCH).await;
            inner.report_pending.set(false);
            if inner.closed.get() {
                return;
            }
            let Some(conn) = inner.current() else { return };
            let status = inner.status();
            let name = inner.name.clone();
            let _ = blocking::run(move || {
                if let Err(e) = conn::update_status(&conn, status) {
                    debug!(device = %name, "rbd: {}", Report(&e));
                }
            })
            .await;
        });
    }
}

/// An error number that means this client may write no more:
/// blocklisted (`EBLOCKLISTED` is `ESHUTDOWN`), or the lock is gone
/// (`EROFS`).
fn is_fenced(errno: i32) -> bool {
    errno == libc::ESHUTDOWN || errno == libc::EROFS
}

/// Takes the exclusive lock of `conn`'s image for good: nothing to do if
/// we hold it; otherwise breaks the holder's lock (librbd blocklists its
/// address) and acquires. Returns the owners whose lock was broken.
fn acquire(conn: &Conn) -> Result<Vec<String>, RbdError> {
    let image = conn.image();
    if image.is_lock_owner()? {
        return Ok(Vec::new());
    }
    let owners = image.lock_owners()?;
    for owner in &owners {
        image.lock_break(owner)?;
    }
    image.lock_acquire()?;
    Ok(owners)
}

#[async_trait(?Send)]
impl BlockHandler for RbdHandler {
    async fn read(&self, offset: u64, bufs: Vec<DataBuf>) -> Result<(), BlockError> {
        self.run(Kind::Read, |c| c.image().aio_readv(offset, bufs))
            .await
            .map(drop)
    }

    async fn write(&self, offset: u64, bufs: Vec<DataBuf>) -> Result<(), BlockError> {
        self.run(Kind::Write, |c| c.image().aio_writev(offset, bufs))
            .await
            .map(drop)
    }

    /// Where the writes go, for REPORT TARGET PORT GROUPS under implicit
    /// ALUA: here while we hold the lock (active/optimized), on their way
    /// while we take it (transitioning), elsewhere once it was taken from
    /// us (active/non-optimized, until a write here takes it back), and
    /// the same when another gateway held it as we opened the image (a
    /// gateway coming back must not draw writes, and the lock, to itself).
    /// Before anyone held the lock, the configured state stands: each
    /// gateway reports what ceph-iscsi set up (the owner's group
    /// active/optimized), so initiators send writes to one gateway.
    fn alua_state(&self) -> Option<AccessState> {
        match self.inner.lock.get() {
            LockState::NotUsed => None,
            LockState::Locked => Some(AccessState::ActiveOptimized),
            LockState::Locking => Some(AccessState::Transitioning),
            LockState::Unlocked => (self.inner.lost_at.get().is_some()
                || self.inner.held_elsewhere.get())
            .then_some(AccessState::ActiveNonOptimized),
        }
    }

    /// With the exclusive lock in use and not held here, there is nothing
    /// to flush: librbd's cache is off, so every write we acknowledged is
    /// on the OSDs already, and we write only while holding the lock. And
    /// librbd would take the lock for a flush on its own (it counts as a
    /// write), so a standby gateway that gets SYNCHRONIZE CACHE (Linux
    /// sends one when a path's disk goes away) would grab the lock from
    /// the active one and be blocklisted by it on its next write.
    async fn flush(&self) -> Result<(), BlockError> {
        if matches!(
            self.inner.lock.get(),
            LockState::Unlocked | LockState::Locking
        ) {
            return Ok(());
        }
        self.run(Kind::Flush, |c| c.image().aio_flush())
            .await
            .map(drop)
    }

    fn cmd_timed_out(&self, _cdb: &[u8]) {
        let c = &self.inner.counters.cmd_timed_out;
        c.set(c.get() + 1);
        Inner::report(&self.inner);
    }

    async fn reconfig(&self, change: &ReconfigRequest) -> Result<(), HandlerError> {
        match change {
            ReconfigRequest::Size(size) => {
                let conn = self.inner.current().ok_or_else(|| {
                    HandlerError::refused("rbd: reconnecting to the cluster; retry")
                })?;
                let image_size = blocking::run(move || conn.image().size())
                    .await
                    .map_err(|e| HandlerError::refused(format!("rbd: {}", Report(&e))))?
                    .map_err(|e| HandlerError::backend("rbd: cannot read the image size", e))?;
                if image_size != *size {
                    return Err(HandlerError::refused(format!(
                        "rbd: the new device size {size} differs from the size of image {} ({image_size} bytes): \
                         resize the image first (rbd resize)",
                        self.inner.cfg.spec()
                    )));
                }
                self.inner.size.set(*size);
                info!(device = %self.inner.name, "rbd: device size now {size} bytes, as the image");
                Ok(())
            }
            ReconfigRequest::Config(cfg) if *cfg != self.inner.cfgstring => {
                Err(HandlerError::refused(
                    "rbd: changing the image of a running device is not supported",
                ))
            }
            _ => Ok(()),
        }
    }

    async fn close(&self) {
        let inner = &self.inner;
        inner.closed.set(true);
        inner.generation.set(inner.generation.get() + 1);
        let conn = inner.conn.borrow_mut().take();
        if let Some(conn) = conn {
            // Releases the lock (rbd_close does) so another gateway or our
            // successor takes it without breaking it.
            let _ = blocking::run(move || drop(conn)).await;
        }
        debug!(device = %inner.name, "rbd: closed {}", inner.cfg.spec());
    }
}

#[async_trait(?Send)]
impl Unmap for RbdHandler {
    async fn unmap(&self, offset: u64, len: u64) -> Result<(), BlockError> {
        if len == 0 {
            return Ok(());
        }
        self.run(Kind::Write, |c| c.image().aio_discard(offset, len))
            .await
            .map(drop)
    }

    fn unmap_params(&self) -> UnmapParams {
        self.unmap.clone()
    }
}

#[async_trait(?Send)]
impl WriteSame for RbdHandler {
    async fn write_same(&self, offset: u64, len: u64, pattern: &[u8]) -> Result<(), BlockError> {
        if len == 0 {
            return Ok(());
        }
        if pattern.iter().all(|&b| b == 0) {
            return self
                .run(Kind::Write, |c| c.image().aio_write_zeroes(offset, len))
                .await
                .map(drop);
        }
        let pattern = pattern.to_vec();
        self.run(Kind::Write, |c| {
            c.image().aio_writesame(offset, len, pattern)
        })
        .await
        .map(drop)
    }
}

#[async_trait(?Send)]
impl CompareAndWrite for RbdHandler {
    async fn compare_and_write(
        &self,
        offset: u64,
        compare: &[u8],
        write: Vec<DataBuf>,
    ) -> Result<(), CompareError> {
        let len = compare.len() as u64;
        if offset % CAW_SECTOR + len <= CAW_SECTOR {
            // One sector: atomic on the OSD, against every client.
            let data = buf::gather(&write, compare.len());
            drop(write);
            let done = self
                .run(Kind::Write, |c| {
                    c.image().aio_compare_and_write(offset, compare, &data)
                })
                .await?;
            if done.errno() == Some(libc::EILSEQ) {
                let at = done.mismatch_offset.saturating_sub(offset);
                return Err(CompareError::Miscompare(at));
            }
            return Ok(());
        }
        // Larger: read, compare, write. The runtime holds the range against
        // this daemon's other commands; other clients of the image are not
        // excluded (librbd offers no multi-sector compare-and-write).
        let area = ScratchArea::new(compare.len()).map_err(BlockError::Io)?;
        let target = area
            .lend_all()
            .map_err(|e| BlockError::Io(io::Error::from(e)))?;
        // The read needs no lock, but the write will: take it first, so the
        // compare is against data no other gateway writes meanwhile.
        drop(Inner::conn_for_write(&self.inner)?);
        self.run(Kind::Read, |c| c.image().aio_readv(offset, vec![target]))
            .await?;
        // The read's buffer was dropped before its result was published.
        let current = area
            .to_vec()
            .map_err(|e| BlockError::Io(io::Error::from(e)))?;
        if let Some(at) = current.iter().zip(compare).position(|(a, b)| a != b) {
            return Err(CompareError::Miscompare(at as u64));
        }
        self.run(Kind::Write, |c| c.image().aio_writev(offset, write))
            .await?;
        Ok(())
    }
}
