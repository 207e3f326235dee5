//! Asynchronous file I/O: each `File::aio_*` call submits one gfapi
//! operation (the `GFAPI_6.0` `glfs_*_async` calls) and returns an
//! [`Op`], a future of its result.
//!
//! # Who owns what, and when
//!
//! An operation's memory — the ring's [`DataBuf`]s it reads into or writes
//! from, a byte buffer of its own (a WRITE SAME pattern), the iovec array
//! pointing into them — lives in one heap block handed to gfapi as the
//! callback's `data`. Only the callback takes it back, on a gfapi thread,
//! once gfapi is done with every byte; it then hands the [`DataBuf`]s to
//! the [`Op`] with the result (a short read's caller zeroes what was not
//! read). Dropping an [`Op`] (a command aborted, or timed out) frees
//! nothing early: a late read still lands in buffers the operation holds,
//! and the runtime gives that ring memory back to the kernel only once
//! they are dropped (see `tcmu_core::buf`).
//!
//! The callback never blocks: it reads the result and `errno`, moves the
//! buffers into the result slot and wakes the task that waits. Every
//! operation is counted by its [`File`], whose drop waits for the count to
//! reach zero before `glfs_close`.

use std::ffi::{c_int, c_void};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures::task::AtomicWaker;
use libc::{iovec, off_t, ssize_t};
use tcmu_core::DataBuf;
use tokio_uring::buf::{IoBuf, IoBufMut};

use crate::error::Error;
use crate::fs::{File, InflightGuard};
use crate::sys::{glfs_fd_t, glfs_stat, Api};

/// What a finished operation returned.
#[derive(Debug)]
pub struct Done {
    /// gfapi's return value: bytes read or written, 0, or -1 on failure.
    pub ret: i64,
    /// The error number of a failed operation (positive), 0 on success.
    pub errno: i32,
    /// The operation's ring buffers, given back.
    pub bufs: Vec<DataBuf>,
}

impl Done {
    /// The byte count (or 0) of a successful operation, the error number
    /// of a failed one.
    pub fn result(&self) -> Result<u64, i32> {
        if self.ret < 0 {
            Err(if self.errno > 0 {
                self.errno
            } else {
                libc::EIO
            })
        } else {
            Ok(self.ret.unsigned_abs())
        }
    }
}

/// The result slot an operation's callback fills and its [`Op`] takes.
#[derive(Debug, Default)]
struct Shared {
    slot: Mutex<Option<Done>>,
    waker: AtomicWaker,
}

impl Shared {
    fn take(&self) -> Option<Done> {
        self.slot.lock().ok().and_then(|mut s| s.take())
    }
}

/// An operation in flight: resolves once gfapi completed it. Dropping it
/// does not cancel the operation (gfapi cannot); its buffers stay alive
/// until it completes.
#[derive(Debug)]
#[must_use = "an Op does nothing to the operation; await it to learn its result"]
pub struct Op {
    shared: Arc<Shared>,
}

impl Future for Op {
    type Output = Done;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Done> {
        if let Some(d) = self.shared.take() {
            return Poll::Ready(d);
        }
        self.shared.waker.register(cx.waker());
        match self.shared.take() {
            Some(d) => Poll::Ready(d),
            None => Poll::Pending,
        }
    }
}

/// The iovecs of an operation, pointing into its own buffers.
struct Iovecs {
    _v: Vec<iovec>,
}

// SAFETY: the raw pointers point into the `DataBuf`s or the byte buffer of
// the same `OpState`, which are `Send` and move with it; nothing else
// reads them.
unsafe impl Send for Iovecs {}

/// Everything an operation needs alive until gfapi completes it.
struct OpState {
    shared: Arc<Shared>,
    bufs: Vec<DataBuf>,
    iov: Iovecs,
    _bytes: Vec<u8>,
    _counted: InflightGuard,
}

/// gfapi's callback for every operation of this module.
///
/// # Safety
///
/// `data` must be the `OpState` pointer `submit` handed to gfapi with this
/// operation, and gfapi calls this exactly once per accepted operation.
unsafe extern "C" fn on_complete(
    _fd: *mut glfs_fd_t,
    ret: ssize_t,
    _prestat: *mut glfs_stat,
    _poststat: *mut glfs_stat,
    data: *mut c_void,
) {
    // gfapi sets errno for a failed operation before calling back.
    let errno = if ret < 0 {
        io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO)
    } else {
        0
    };
    // SAFETY: `data` is the Box `submit` leaked for this operation, and
    // this is the one call that takes it back.
    let state = unsafe { Box::from_raw(data.cast::<OpState>()) };
    let OpState {
        shared,
        bufs,
        iov,
        _bytes,
        _counted,
    } = *state;
    drop(iov);
    drop(_bytes);
    if let Ok(mut slot) = shared.slot.lock() {
        *slot = Some(Done {
            ret: ret as i64,
            errno,
            bufs,
        });
    }
    shared.waker.wake();
    // `_counted` goes last: the file may be closed once it is gone.
    drop(_counted);
}

impl File {
    /// Hands the operation's memory to gfapi through `start`, which
    /// receives the API, the fd, the iovecs (pointer and count: heap memory
    /// that does not move when the state is boxed) and the state's address
    /// (the callback's argument), and returns gfapi's answer. On a refusal
    /// (-1) gfapi never calls back: the state is freed here and the error
    /// returned.
    fn submit(
        &self,
        what: &str,
        bufs: Vec<DataBuf>,
        iov: Vec<iovec>,
        bytes: Vec<u8>,
        start: impl FnOnce(&Api, *mut glfs_fd_t, *const iovec, c_int, *mut c_void) -> c_int,
    ) -> Result<Op, Error> {
        let cnt = c_int::try_from(iov.len())
            .map_err(|_| Error::from_errno("too many buffers for one operation", libc::EINVAL))?;
        let iov_ptr = iov.as_ptr();
        let shared = Arc::new(Shared::default());
        let state = OpState {
            shared: shared.clone(),
            bufs,
            iov: Iovecs { _v: iov },
            _bytes: bytes,
            _counted: InflightGuard::new(&self.inflight),
        };
        let raw = Box::into_raw(Box::new(state));
        let ret = start(
            self.fs.api_ref(),
            self.raw.as_ptr(),
            iov_ptr,
            cnt,
            raw.cast(),
        );
        if ret < 0 {
            let e = Error::last(format!("{what} on {}", self.path()));
            // SAFETY: gfapi refused the operation before winding it, so the
            // callback will not run: the state is still ours.
            drop(unsafe { Box::from_raw(raw) });
            return Err(e);
        }
        Ok(Op { shared })
    }

    /// Reads `bufs.iter().map(len).sum()` bytes at `off` straight into
    /// `bufs` (`glfs_preadv_async`). Fewer bytes come back at the end of
    /// the file: the result says how many.
    pub fn aio_preadv(&self, off: u64, mut bufs: Vec<DataBuf>) -> Result<Op, Error> {
        let iov: Vec<iovec> = bufs
            .iter_mut()
            .map(|b| iovec {
                iov_base: b.stable_mut_ptr().cast(),
                iov_len: b.bytes_total(),
            })
            .collect();
        let off = offset(off)?;
        self.submit(
            "glfs_preadv_async",
            bufs,
            iov,
            Vec::new(),
            |api, fd, iov, cnt, arg| {
                // SAFETY: the iovecs describe the live `DataBuf`s the state
                // owns (memory that does not move), each lent to this command
                // alone, alive until the callback takes them; the fd is open
                // (closing waits for this operation); `arg` is the callback's.
                unsafe { (api.preadv_async)(fd, iov, cnt, off, 0, on_complete, arg) }
            },
        )
    }

    /// Writes `bufs` at `off` straight from them (`glfs_pwritev_async`).
    pub fn aio_pwritev(&self, off: u64, bufs: Vec<DataBuf>) -> Result<Op, Error> {
        let iov: Vec<iovec> = bufs
            .iter()
            .map(|b| iovec {
                iov_base: b.stable_ptr().cast_mut().cast(),
                iov_len: b.bytes_total(),
            })
            .collect();
        let off = offset(off)?;
        self.submit(
            "glfs_pwritev_async",
            bufs,
            iov,
            Vec::new(),
            |api, fd, iov, cnt, arg| {
                // SAFETY: as in `aio_preadv`; gfapi only reads the ranges.
                unsafe { (api.pwritev_async)(fd, iov, cnt, off, 0, on_complete, arg) }
            },
        )
    }

    /// Writes `bytes` `times` times in a row at `off`, in one operation
    /// (one iovec per copy, all over the same buffer).
    pub fn aio_pwrite_repeated(&self, off: u64, bytes: Vec<u8>, times: usize) -> Result<Op, Error> {
        let off = offset(off)?;
        let base = bytes.as_ptr().cast_mut().cast::<c_void>();
        let iov: Vec<iovec> = (0..times)
            .map(|_| iovec {
                iov_base: base,
                iov_len: bytes.len(),
            })
            .collect();
        self.submit(
            "glfs_pwritev_async",
            Vec::new(),
            iov,
            bytes,
            |api, fd, iov, cnt, arg| {
                // SAFETY: the iovecs point into the state's byte buffer (heap
                // memory that does not move), alive until the callback; gfapi
                // only reads it; the fd is open.
                unsafe { (api.pwritev_async)(fd, iov, cnt, off, 0, on_complete, arg) }
            },
        )
    }

    /// Waits for every acknowledged write to be durable
    /// (`glfs_fdatasync_async`).
    pub fn aio_fdatasync(&self) -> Result<Op, Error> {
        self.submit(
            "glfs_fdatasync_async",
            Vec::new(),
            Vec::new(),
            Vec::new(),
            |api, fd, _, _, arg| {
                // SAFETY: an open fd; `arg` is the callback's.
                unsafe { (api.fdatasync_async)(fd, on_complete, arg) }
            },
        )
    }

    /// Deallocates `len` bytes at `off` (`glfs_discard_async`: a hole
    /// punched in the brick's file, which then reads as zeroes).
    pub fn aio_discard(&self, off: u64, len: u64) -> Result<Op, Error> {
        let off = offset(off)?;
        let len = usize::try_from(len)
            .map_err(|_| Error::from_errno("discard too long", libc::EINVAL))?;
        self.submit(
            "glfs_discard_async",
            Vec::new(),
            Vec::new(),
            Vec::new(),
            |api, fd, _, _, arg| {
                // SAFETY: an open fd; `arg` is the callback's.
                unsafe { (api.discard_async)(fd, off, len, on_complete, arg) }
            },
        )
    }

    /// Writes zeroes over `len` bytes at `off` (`glfs_zerofill_async`).
    pub fn aio_zerofill(&self, off: u64, len: u64) -> Result<Op, Error> {
        let (off, len) = (offset(off)?, offset(len)?);
        self.submit(
            "glfs_zerofill_async",
            Vec::new(),
            Vec::new(),
            Vec::new(),
            |api, fd, _, _, arg| {
                // SAFETY: an open fd; `arg` is the callback's.
                unsafe { (api.zerofill_async)(fd, off, len, on_complete, arg) }
            },
        )
    }
}

fn offset(v: u64) -> Result<off_t, Error> {
    off_t::try_from(v)
        .map_err(|_| Error::from_errno(format!("{v}: beyond the largest offset"), libc::EINVAL))
}
