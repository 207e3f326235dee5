//! Connections: one [`Fs`] (a gfapi virtual mount) per (server, port,
//! volume), shared by every device on that volume and kept while any of
//! them uses it.
//!
//! `glfs_init` takes milliseconds but `glfs_fini` about ten seconds, so
//! devices opened and closed on a volume must not pay for a connection
//! each: the cache hands out the live one, and a connection made by a
//! configuration check (or left by the last device) lingers for
//! [`LINGER`], so the `enable` that follows targetcli's CheckConfig, or a
//! device re-created at once, finds it. The last user to let go finishes
//! it on a thread of its own.
//!
//! Everything here blocks; [`within`] runs it under a bound.

use std::collections::HashMap;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tcmu_glfs_ffi::{Error as GlfsError, File, Fs};
use tcmu_runtime::HandlerError;
use tracing::{debug, info};

use crate::config::GlfsConfig;

/// How long an unused connection is kept.
pub const LINGER: Duration = Duration::from_secs(30);

/// gfapi's log level: errors and warnings (`GF_LOG_WARNING`).
const GFAPI_LOG_LEVEL: i32 = 5;

/// The environment variable naming gfapi's log file (default:
/// `tcmu-runner-glfs.log` in `$TCMU_LOGDIR`, else `/var/log`).
pub const LOG_ENV: &str = "TCMU_GLFS_LOG";

type Key = (String, u16, String);

/// One slot per (server, port, volume): connecting holds it, so two
/// devices on one volume opened together make one connection.
type Slot = Arc<Mutex<Weak<Fs>>>;

static SLOTS: Mutex<Option<HashMap<Key, Slot>>> = Mutex::new(None);

/// Connections nobody uses, kept until the instant given.
static LINGERING: Mutex<Vec<(Instant, Arc<Fs>)>> = Mutex::new(Vec::new());

fn key(cfg: &GlfsConfig) -> Key {
    (cfg.server.clone(), cfg.port, cfg.volume.clone())
}

fn slot(cfg: &GlfsConfig) -> Option<Slot> {
    let mut slots = SLOTS.lock().ok()?;
    Some(
        slots
            .get_or_insert_with(HashMap::new)
            .entry(key(cfg))
            .or_default()
            .clone(),
    )
}

/// gfapi's log file.
fn log_file() -> String {
    if let Ok(f) = std::env::var(LOG_ENV) {
        if !f.is_empty() {
            return f;
        }
    }
    let dir = std::env::var("TCMU_LOGDIR")
        .ok()
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| "/var/log".into());
    format!("{dir}/tcmu-runner-glfs.log")
}

/// Drops the lingering connections whose time is up, each finished on a
/// thread of its own (`glfs_fini` waits about ten seconds).
fn prune() {
    let expired: Vec<Arc<Fs>> = match LINGERING.lock() {
        Ok(mut l) => {
            let now = Instant::now();
            let (gone, kept) = std::mem::take(&mut *l)
                .into_iter()
                .partition(|(until, _)| *until <= now);
            *l = kept;
            gone.into_iter().map(|(_, fs)| fs).collect()
        }
        Err(_) => Vec::new(),
    };
    for fs in expired {
        release(fs);
    }
}

/// Keeps `fs` for [`LINGER`] more.
pub fn linger(fs: Arc<Fs>) {
    if let Ok(mut l) = LINGERING.lock() {
        l.retain(|(_, f)| !Arc::ptr_eq(f, &fs));
        l.push((Instant::now() + LINGER, fs));
    }
}

/// Lets go of `fs` without waiting: if this was the last user, the
/// connection is finished on a thread of its own.
pub fn release(fs: Arc<Fs>) {
    if Arc::strong_count(&fs) > 1 {
        return;
    }
    let name = format!("{}@{}", fs.volume(), fs.server());
    let spawned = std::thread::Builder::new()
        .name("glfs-fini".into())
        .spawn(move || {
            let started = Instant::now();
            drop(fs);
            info!(
                "glfs: disconnected from {name} ({} ms)",
                started.elapsed().as_millis()
            );
        });
    if let Err(e) = spawned {
        debug!("glfs: no thread to disconnect from a volume: {e}");
    }
}

/// Drops `file` without waiting (closing waits for its operations in
/// flight), then lets go of its connection.
pub fn release_file(file: Arc<File>) {
    let _ = std::thread::Builder::new()
        .name("glfs-close".into())
        .spawn(move || {
            let fs = file.fs().clone();
            drop(file);
            linger(fs);
        });
}

/// The connection to `cfg`'s volume: the live one, or a new one. Blocks.
pub fn connect(cfg: &GlfsConfig) -> Result<Arc<Fs>, GlfsError> {
    prune();
    let slot =
        slot(cfg).ok_or_else(|| GlfsError::from_errno("connection cache poisoned", libc::EIO))?;
    let mut live = slot
        .lock()
        .map_err(|_| GlfsError::from_errno("connection cache poisoned", libc::EIO))?;
    if let Some(fs) = live.upgrade() {
        debug!(
            "glfs: reusing the connection to {}@{} ({} users)",
            cfg.volume,
            cfg.server,
            Arc::strong_count(&fs) - 1
        );
        return Ok(fs);
    }
    let started = Instant::now();
    let fs = Arc::new(Fs::connect(
        &cfg.volume,
        &cfg.server,
        cfg.port,
        &log_file(),
        GFAPI_LOG_LEVEL,
    )?);
    *live = Arc::downgrade(&fs);
    info!(
        "glfs: connected to volume {} at {}:{} in {} ms",
        cfg.volume,
        cfg.server,
        cfg.port,
        started.elapsed().as_millis()
    );
    Ok(fs)
}

/// How many holders the live connection to `volume` at `server:port` has
/// (devices' files, the connection itself while it lingers), 0 if none.
pub fn users(server: &str, port: u16, volume: &str) -> usize {
    let slot = SLOTS.lock().ok().and_then(|s| {
        s.as_ref()?
            .get(&(server.to_owned(), port, volume.to_owned()))
            .cloned()
    });
    slot.and_then(|s| s.lock().ok().map(|w| w.strong_count()))
        .unwrap_or(0)
}

/// Runs `f` on a thread of its own and waits at most `bound` for it;
/// `what` names the step in the refusal. A late result is dropped on that
/// thread (a file closed, a connection let go).
pub fn within<T: Send + 'static>(
    what: String,
    bound: Duration,
    f: impl FnOnce() -> Result<T, HandlerError> + Send + 'static,
) -> Result<T, HandlerError> {
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("glfs-connect".into())
        .spawn(move || {
            let _ = tx.send(f());
        })
        .map_err(|e| HandlerError::io(format!("{what}: cannot start a thread"), e))?;
    match rx.recv_timeout(bound) {
        Ok(r) => r,
        Err(_) => Err(HandlerError::refused(format!(
            "{what}: no answer within {} s (server or bricks unreachable?)",
            bound.as_secs()
        ))),
    }
}
