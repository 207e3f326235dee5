//! Asynchronous image I/O: each `Image::aio_*` call submits one librbd
//! operation and returns an [`Op`], a future of its result.
//!
//! # Who owns what, and when
//!
//! An operation's memory — the ring's [`DataBuf`]s it reads into or writes
//! from, its own byte buffers (WRITE SAME's pattern, COMPARE AND WRITE's
//! data), the iovec array and the miscompare offset librbd fills — lives
//! in one heap block handed to librbd as the completion's argument. Only
//! librbd's completion callback frees it, on a librbd thread, after
//! librbd is done with every byte. The [`Op`] future merely watches a
//! shared flag, so dropping it (a command aborted, or timed out and
//! cancelled) frees nothing: a late read still lands in buffers the
//! command holds, and the runtime hands that ring memory back to the
//! kernel only once those buffers are dropped (see `tcmu_core::buf`).
//!
//! The callback never blocks: it reads the result, releases the
//! completion, drops the operation's memory, publishes the result with
//! atomics and wakes the task that waits (a waker registered through
//! [`AtomicWaker`]).
//!
//! The image must stay open while operations are in flight; `rbd_close`
//! (dropping the [`Image`]) waits for them.

use std::future::Future;
use std::pin::Pin;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::task::AtomicWaker;
use libc::{c_int, c_void, iovec};
use tcmu_core::DataBuf;
use tokio_uring::buf::{IoBuf, IoBufMut};

use crate::error::Error;
use crate::image::Image;
use crate::sys;

/// What a finished operation returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Done {
    /// librbd's return value: bytes or 0 on success, `-errno` on failure
    /// (`-EILSEQ` for a compare-and-write that miscompared).
    pub ret: i64,
    /// For a miscompare: the image offset of the first differing byte.
    pub mismatch_offset: u64,
}

impl Done {
    /// The error number of a failed operation (positive), if it failed.
    pub fn errno(&self) -> Option<i32> {
        (self.ret < 0).then(|| i32::try_from(-self.ret).unwrap_or(libc::EIO))
    }
}

/// The result slot an operation's callback fills and its [`Op`] reads.
#[derive(Debug, Default)]
struct Shared {
    done: AtomicBool,
    ret: AtomicI64,
    mismatch: AtomicU64,
    waker: AtomicWaker,
}

/// An operation in flight: resolves once librbd completed it. Dropping
/// it does not cancel the operation (librbd cannot), and the operation's
/// buffers stay alive until it completes.
#[derive(Debug)]
#[must_use = "an Op does nothing to the operation; await it to learn its result"]
pub struct Op {
    shared: Arc<Shared>,
}

impl Future for Op {
    type Output = Done;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Done> {
        let s = &self.shared;
        let ready = || {
            s.done.load(Ordering::Acquire).then(|| Done {
                ret: s.ret.load(Ordering::Relaxed),
                mismatch_offset: s.mismatch.load(Ordering::Relaxed),
            })
        };
        if let Some(d) = ready() {
            return Poll::Ready(d);
        }
        s.waker.register(cx.waker());
        match ready() {
            Some(d) => Poll::Ready(d),
            None => Poll::Pending,
        }
    }
}

/// The iovecs of an operation, pointing into its own `DataBuf`s.
struct Iovecs(Vec<iovec>);

// SAFETY: the raw pointers point into the `DataBuf`s of the same
// `OpState`, which are `Send` and move with it; nothing else reads them.
unsafe impl Send for Iovecs {}

/// Everything an operation needs alive until librbd completes it.
struct OpState {
    shared: Arc<Shared>,
    _bufs: Vec<DataBuf>,
    _iov: Iovecs,
    _bytes: Vec<u8>,
    mismatch: u64,
}

/// librbd's completion callback for every operation of this module.
///
/// # Safety
///
/// `arg` must be the `OpState` pointer `submit` handed to librbd with this
/// completion, and librbd calls this exactly once per completion.
unsafe extern "C" fn on_complete(c: sys::rbd_completion_t, arg: *mut c_void) {
    // SAFETY: `arg` is the Box `submit` leaked for this completion, and
    // this is the one call that takes it back.
    let state = unsafe { Box::from_raw(arg.cast::<OpState>()) };
    // SAFETY: `c` is this operation's live completion; released once, here
    // (the state no longer refers to it).
    let ret = unsafe { sys::rbd_aio_get_return_value(c) };
    // SAFETY: as above.
    unsafe { sys::rbd_aio_release(c) };
    let mismatch = state.mismatch;
    let shared = state.shared.clone();
    // librbd is done with every byte: the buffers go before the result is
    // published, so a command that sees its result has them back.
    drop(state);
    shared.mismatch.store(mismatch, Ordering::Relaxed);
    shared.ret.store(ret as i64, Ordering::Relaxed);
    shared.done.store(true, Ordering::Release);
    shared.waker.wake();
}

/// Hands `state` to librbd through a new completion and calls `start`
/// with the completion and the state's address (for pointers into it);
/// `start` submits the operation and returns librbd's answer. On a
/// refusal (negative answer) nothing was submitted: the completion and
/// the state are freed here.
fn submit(
    what: &str,
    state: OpState,
    start: impl FnOnce(sys::rbd_completion_t, *mut OpState) -> i64,
) -> Result<Op, Error> {
    let shared = state.shared.clone();
    let raw = Box::into_raw(Box::new(state));
    let mut c: sys::rbd_completion_t = ptr::null_mut();
    // SAFETY: `raw` stays valid until the callback frees it; `c` is a
    // valid out-pointer.
    let ret = unsafe { sys::rbd_aio_create_completion(raw.cast(), Some(on_complete), &mut c) };
    if ret < 0 {
        // SAFETY: librbd has not taken `raw`: we still own it.
        drop(unsafe { Box::from_raw(raw) });
        return Err(Error::from_ret(
            format!("{what}: cannot create a completion"),
            ret.into(),
        ));
    }
    let ret = start(c, raw);
    if ret < 0 {
        // SAFETY: librbd refused the operation before queueing it (its
        // C entry points validate, then dispatch), so the callback will
        // not run: the completion and the state are still ours.
        unsafe {
            sys::rbd_aio_release(c);
            drop(Box::from_raw(raw));
        }
        return Err(Error::from_ret(what.to_owned(), ret));
    }
    Ok(Op { shared })
}

fn state(bufs: Vec<DataBuf>, iov: Vec<iovec>, bytes: Vec<u8>) -> OpState {
    OpState {
        shared: Arc::new(Shared::default()),
        _bufs: bufs,
        _iov: Iovecs(iov),
        _bytes: bytes,
        mismatch: 0,
    }
}

fn iov_count(iov: &[iovec]) -> Result<c_int, Error> {
    c_int::try_from(iov.len()).map_err(|_| Error::invalid("too many buffers for one operation"))
}

impl Image {
    /// Reads `bufs.iter().map(len).sum()` bytes at `off` straight into
    /// `bufs` (`rbd_aio_readv`).
    pub fn aio_readv(&self, off: u64, mut bufs: Vec<DataBuf>) -> Result<Op, Error> {
        let iov: Vec<iovec> = bufs
            .iter_mut()
            .map(|b| iovec {
                iov_base: b.stable_mut_ptr().cast(),
                iov_len: b.bytes_total(),
            })
            .collect();
        let cnt = iov_count(&iov)?;
        let st = state(bufs, iov, Vec::new());
        submit("rbd_aio_readv", st, |c, s| {
            // SAFETY: the iovecs describe the live `DataBuf`s owned by the
            // state (heap memory that does not move); each range was lent
            // to this command alone and stays alive until the callback
            // drops it; the image is open.
            let iov = unsafe { (*s)._iov.0.as_ptr() };
            // SAFETY: as above.
            unsafe { sys::rbd_aio_readv(self.raw(), iov, cnt, off, c) }.into()
        })
    }

    /// Writes `bufs` at `off` straight from them (`rbd_aio_writev`).
    pub fn aio_writev(&self, off: u64, bufs: Vec<DataBuf>) -> Result<Op, Error> {
        let iov: Vec<iovec> = bufs
            .iter()
            .map(|b| iovec {
                iov_base: b.stable_ptr().cast_mut().cast(),
                iov_len: b.bytes_total(),
            })
            .collect();
        let cnt = iov_count(&iov)?;
        let st = state(bufs, iov, Vec::new());
        submit("rbd_aio_writev", st, |c, s| {
            // SAFETY: as in `aio_readv`; librbd only reads the ranges.
            let iov = unsafe { (*s)._iov.0.as_ptr() };
            // SAFETY: as above.
            unsafe { sys::rbd_aio_writev(self.raw(), iov, cnt, off, c) }.into()
        })
    }

    /// Waits for every write acknowledged so far to be durable
    /// (`rbd_aio_flush`).
    pub fn aio_flush(&self) -> Result<Op, Error> {
        submit(
            "rbd_aio_flush",
            state(Vec::new(), Vec::new(), Vec::new()),
            |c, _| {
                // SAFETY: open image, fresh completion.
                unsafe { sys::rbd_aio_flush(self.raw(), c) }.into()
            },
        )
    }

    /// Discards `len` bytes at `off` (`rbd_aio_discard`): whole objects
    /// are removed, partial ones zeroed (or left, below
    /// `rbd_discard_granularity_bytes`).
    pub fn aio_discard(&self, off: u64, len: u64) -> Result<Op, Error> {
        submit(
            "rbd_aio_discard",
            state(Vec::new(), Vec::new(), Vec::new()),
            |c, _| {
                // SAFETY: open image, fresh completion.
                unsafe { sys::rbd_aio_discard(self.raw(), off, len, c) }.into()
            },
        )
    }

    /// Writes zeroes over `len` bytes at `off` (`rbd_aio_write_zeroes`).
    pub fn aio_write_zeroes(&self, off: u64, len: u64) -> Result<Op, Error> {
        let len = usize::try_from(len).map_err(|_| Error::invalid("write zeroes too long"))?;
        submit(
            "rbd_aio_write_zeroes",
            state(Vec::new(), Vec::new(), Vec::new()),
            |c, _| {
                // SAFETY: open image, fresh completion.
                unsafe { sys::rbd_aio_write_zeroes(self.raw(), off, len, c, 0, 0) }.into()
            },
        )
    }

    /// Writes `pattern` repeatedly over `len` bytes at `off`
    /// (`rbd_aio_writesame`; `len` a multiple of the pattern's length).
    pub fn aio_writesame(&self, off: u64, len: u64, pattern: Vec<u8>) -> Result<Op, Error> {
        let len = usize::try_from(len).map_err(|_| Error::invalid("write same too long"))?;
        let plen = pattern.len();
        submit(
            "rbd_aio_writesame",
            state(Vec::new(), Vec::new(), pattern),
            |c, s| {
                // SAFETY: the pattern is the state's heap buffer, alive until
                // the callback; open image, fresh completion.
                let p = unsafe { (*s)._bytes.as_ptr() };
                // SAFETY: as above.
                unsafe { sys::rbd_aio_writesame(self.raw(), off, len, p.cast(), plen, c, 0) }.into()
            },
        )
    }

    /// Compares the bytes at `off` with `compare` and, if equal, writes
    /// `write` there, atomically on the OSD (`rbd_aio_compare_and_write`:
    /// librbd takes at most one 512-byte sector). A miscompare completes
    /// with `-EILSEQ` and [`Done::mismatch_offset`].
    pub fn aio_compare_and_write(
        &self,
        off: u64,
        compare: &[u8],
        write: &[u8],
    ) -> Result<Op, Error> {
        if compare.len() != write.len() {
            return Err(Error::invalid(
                "compare and write: buffers of different lengths",
            ));
        }
        let len = compare.len();
        let mut bytes = Vec::with_capacity(2 * len);
        bytes.extend_from_slice(compare);
        bytes.extend_from_slice(write);
        submit(
            "rbd_aio_compare_and_write",
            state(Vec::new(), Vec::new(), bytes),
            |c, s| {
                // SAFETY: both halves live in the state's heap buffer and the
                // miscompare slot in the state itself, all alive until the
                // callback; open image, fresh completion.
                let (cmp, mismatch) =
                    unsafe { ((*s)._bytes.as_ptr(), ptr::addr_of_mut!((*s).mismatch)) };
                // SAFETY: as above; `cmp + len` is inside the 2 × len buffer.
                let ret = unsafe {
                    sys::rbd_aio_compare_and_write(
                        self.raw(),
                        off,
                        len,
                        cmp.cast(),
                        cmp.add(len).cast(),
                        c,
                        mismatch,
                        0,
                    )
                };
                ret as i64
            },
        )
    }
}
