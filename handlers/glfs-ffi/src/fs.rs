//! [`Fs`], a virtual mount of a volume, and [`File`], a file open in one.
//!
//! Everything here blocks (connecting, opening, `fstat`, `ftruncate`,
//! closing, and above all `glfs_fini`, which waits about ten seconds for
//! gfapi's threads): callers run it on threads that may block. The
//! asynchronous I/O of a [`File`] is in [`crate::aio`].

use std::ffi::{c_int, CString};
use std::ptr::NonNull;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::sys::{api, glfs_fd_t, glfs_t, Api};

/// How long dropping a [`File`] waits for its operations in flight before
/// it gives up closing it (the file and its mount are then left open
/// rather than closed under gfapi's feet).
const CLOSE_WAIT: Duration = Duration::from_secs(120);

fn c_string(what: &str, s: &str) -> Result<CString, Error> {
    CString::new(s)
        .map_err(|_| Error::from_errno(format!("{what}: a NUL byte in {s:?}"), libc::EINVAL))
}

/// A virtual mount of one volume (`glfs_t`), initialised: its volfile came
/// from the server and gfapi's threads serve its files. Shared by every
/// [`File`] opened in it; `glfs_fini` when the last one goes.
#[derive(Debug)]
pub struct Fs {
    api: &'static Api,
    raw: NonNull<glfs_t>,
    volume: String,
    server: String,
}

// SAFETY: a glfs_t may be used from any thread, and by several at once:
// gfapi locks its own state (tcmu-runner, qemu and Samba share one
// between threads the same way).
unsafe impl Send for Fs {}
// SAFETY: as above.
unsafe impl Sync for Fs {}

impl Fs {
    /// Mounts `volume` with its volfile from `server` (`tcp`, `port`,
    /// 24007 for glusterd), logging to `logfile` at gfapi level `loglevel`
    /// (0 none … 7 info … 9 trace). Blocks until gfapi has the volume's
    /// graph, or failed.
    pub fn connect(
        volume: &str,
        server: &str,
        port: u16,
        logfile: &str,
        loglevel: i32,
    ) -> Result<Self, Error> {
        let api = api()?;
        let vol = c_string("glfs_new", volume)?;
        let host = c_string("glfs_set_volfile_server", server)?;
        let log = c_string("glfs_set_logging", logfile)?;
        // SAFETY: a NUL-terminated name; gfapi copies it.
        let raw = unsafe { (api.new)(vol.as_ptr()) };
        let raw = NonNull::new(raw).ok_or_else(|| Error::last(format!("glfs_new({volume})")))?;
        // From here the mount is finished (glfs_fini) on every path.
        let fs = Self {
            api,
            raw,
            volume: volume.to_owned(),
            server: server.to_owned(),
        };
        // SAFETY: a live glfs_t, NUL-terminated strings gfapi copies.
        let ret = unsafe {
            (api.set_volfile_server)(
                fs.raw.as_ptr(),
                c"tcp".as_ptr(),
                host.as_ptr(),
                c_int::from(port),
            )
        };
        if ret < 0 {
            return Err(Error::last(format!("glfs_set_volfile_server({server})")));
        }
        // SAFETY: as above.
        let ret = unsafe { (api.set_logging)(fs.raw.as_ptr(), log.as_ptr(), loglevel) };
        if ret < 0 {
            return Err(Error::last(format!("glfs_set_logging({logfile})")));
        }
        // SAFETY: a configured glfs_t, initialised once.
        let ret = unsafe { (api.init)(fs.raw.as_ptr()) };
        if ret < 0 {
            return Err(Error::last(format!(
                "cannot mount volume {volume} from {server} (glfs_init)"
            )));
        }
        Ok(fs)
    }

    /// The volume's name.
    pub fn volume(&self) -> &str {
        &self.volume
    }

    /// The volfile server's name.
    pub fn server(&self) -> &str {
        &self.server
    }

    pub(crate) fn api_ref(&self) -> &'static Api {
        self.api
    }
}

impl Drop for Fs {
    fn drop(&mut self) {
        // SAFETY: a glfs_t of ours, finished once; no File of it is left
        // (each holds an Arc of this Fs).
        unsafe { (self.api.fini)(self.raw.as_ptr()) };
    }
}

/// Counts a file's operations in flight, so closing waits for them.
#[derive(Debug, Default)]
pub(crate) struct Inflight {
    count: Mutex<usize>,
    idle: Condvar,
}

/// One operation in flight: counted while it lives.
#[derive(Debug)]
pub(crate) struct InflightGuard(Arc<Inflight>);

impl InflightGuard {
    pub(crate) fn new(inflight: &Arc<Inflight>) -> Self {
        if let Ok(mut n) = inflight.count.lock() {
            *n += 1;
        }
        Self(inflight.clone())
    }
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        if let Ok(mut n) = self.0.count.lock() {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.0.idle.notify_all();
            }
        }
    }
}

impl Inflight {
    /// Waits until no operation is in flight, up to `bound`; whether none is.
    fn wait_idle(&self, bound: Duration) -> bool {
        let deadline = Instant::now() + bound;
        let Ok(mut n) = self.count.lock() else {
            return false;
        };
        while *n > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            n = match self.idle.wait_timeout(n, left) {
                Ok((n, _)) => n,
                Err(_) => return false,
            };
        }
        true
    }
}

/// A file open in a volume (`glfs_fd_t`). Dropping it waits for its
/// operations in flight, then closes it.
#[derive(Debug)]
pub struct File {
    pub(crate) raw: NonNull<glfs_fd_t>,
    pub(crate) fs: Arc<Fs>,
    pub(crate) inflight: Arc<Inflight>,
    path: String,
}

// SAFETY: a glfs_fd_t may be used from any thread and by several at once
// (gfapi reference-counts and locks it); operations in flight keep only
// the raw pointer, and closing waits for them.
unsafe impl Send for File {}
// SAFETY: as above.
unsafe impl Sync for File {}

impl File {
    /// Opens `path` of the volume read-write, creating it (mode 0600) if
    /// it does not exist (`glfs_creat`: an existing file is opened as it
    /// is, not truncated).
    pub fn create(fs: Arc<Fs>, path: &str) -> Result<Self, Error> {
        let p = c_string("glfs_creat", path)?;
        // SAFETY: a live mount, a NUL-terminated path gfapi copies.
        let raw = unsafe { (fs.api.creat)(fs.raw.as_ptr(), p.as_ptr(), libc::O_RDWR, 0o600) };
        Self::wrap(fs, raw, path, "cannot open or create")
    }

    /// Opens an existing `path` of the volume with `flags` (`O_RDONLY`,
    /// `O_RDWR`, …; not `O_CREAT`).
    pub fn open(fs: Arc<Fs>, path: &str, flags: i32) -> Result<Self, Error> {
        let p = c_string("glfs_open", path)?;
        // SAFETY: as in `create`.
        let raw = unsafe { (fs.api.open)(fs.raw.as_ptr(), p.as_ptr(), flags) };
        Self::wrap(fs, raw, path, "cannot open")
    }

    fn wrap(fs: Arc<Fs>, raw: *mut glfs_fd_t, path: &str, what: &str) -> Result<Self, Error> {
        match NonNull::new(raw) {
            Some(raw) => Ok(Self {
                raw,
                fs,
                inflight: Arc::default(),
                path: path.to_owned(),
            }),
            None => Err(Error::last(format!(
                "{what} {path} in volume {}",
                fs.volume()
            ))),
        }
    }

    /// The file's path in its volume.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The mount the file is open in.
    pub fn fs(&self) -> &Arc<Fs> {
        &self.fs
    }

    /// The file's size in bytes (`glfs_fstat`).
    pub fn size(&self) -> Result<u64, Error> {
        // SAFETY: `stat` is plain old data; all zeroes is a valid value.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: an open fd, a valid out-pointer.
        let ret = unsafe { (self.fs.api.fstat)(self.raw.as_ptr(), &mut st) };
        if ret < 0 {
            return Err(Error::last(format!("glfs_fstat of {}", self.path)));
        }
        Ok(u64::try_from(st.st_size).unwrap_or(0))
    }

    /// Sets the file's size to `len` bytes (`glfs_ftruncate`).
    pub fn truncate(&self, len: u64) -> Result<(), Error> {
        let off = libc::off_t::try_from(len)
            .map_err(|_| Error::from_errno(format!("{len} bytes: too large"), libc::EFBIG))?;
        // SAFETY: an open fd; null pre/post stat pointers are allowed.
        let ret = unsafe {
            (self.fs.api.ftruncate)(
                self.raw.as_ptr(),
                off,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
        };
        if ret < 0 {
            return Err(Error::last(format!(
                "glfs_ftruncate of {} to {len} bytes",
                self.path
            )));
        }
        Ok(())
    }

    /// How many operations are in flight now.
    pub fn in_flight(&self) -> usize {
        self.inflight.count.lock().map(|n| *n).unwrap_or(0)
    }
}

impl Drop for File {
    fn drop(&mut self) {
        if !self.inflight.wait_idle(CLOSE_WAIT) {
            // gfapi still has operations on this fd: leave it (and its
            // mount) open rather than close it under them.
            std::mem::forget(self.fs.clone());
            return;
        }
        // SAFETY: an open fd of ours with nothing in flight, closed once.
        unsafe { (self.fs.api.close)(self.raw.as_ptr()) };
    }
}
