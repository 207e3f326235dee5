//! Buffers in the ring's data area, lent to a command while it runs.
//!
//! Each iovec of a command entry becomes a [`DataBuf`]: an owned handle
//! (keeping the [`Mapping`] alive) to a byte range of the data area. The
//! kernel gives that range to this command alone until the command is
//! completed, so a handler may fill it (data-in) or read it (data-out)
//! without copying: with the `tokio-uring` feature a `DataBuf` is an
//! `IoBuf`/`IoBufMut` that io_uring reads into or writes from directly.
//!
//! # Who may make a `DataBuf`, and why
//!
//! A `DataBuf` is the exclusive handle to its bytes: io_uring (through
//! tokio-uring's `Slice`, which dereferences to `&mut [u8]`) and
//! [`preadv`] let the kernel write into it while the handle is held. Two
//! live `DataBuf`s over the same bytes would let safe code hold two
//! mutable views of one memory, so no safe function builds a `DataBuf`
//! over memory of the caller's choosing. They come from three places only:
//!
//! - the command ring ([`CommandRing::next_entry`](crate::CommandRing::next_entry)),
//!   over the data-area ranges the kernel lent to each command, checked
//!   against each other and against the ring's buffers still alive
//!   (whatever the shared memory says, see [`crate::ring`]);
//! - [`DataBuf::scratch`], a buffer over fresh anonymous memory that nothing
//!   else can reach;
//! - [`ScratchArea::lend`](crate::scratch::ScratchArea::lend), over memory
//!   the caller owns, checked disjoint from every other buffer the area has
//!   lent that is still alive; the owner reads and writes the area only
//!   while none is (see [`crate::scratch`]).
//!
//! [`DataBuf::split_off`] cuts a buffer in two disjoint pieces, so a buffer
//! and its pieces never overlap either.
//!
//! Everything that writes into a buffer — [`DataBuf::copy_from`],
//! [`DataBuf::zero_from`], [`scatter`], [`zero_beyond`], [`preadv`] — takes
//! it by `&mut`, like io_uring reads through tokio-uring do: while anyone
//! holds a shared view of a buffer's bytes (tokio-uring's `Slice`
//! dereferences to `&[u8]`), nothing can write them.
//!
//! # Completion
//!
//! The runtime must not complete a command while any of its buffers is
//! still inside an I/O operation, because completion hands the pages back
//! to the kernel for the next command — unless it completes with
//! `KEEP_BUF` and frees the buffer later. Every buffer the ring hands out
//! holds its command's [`BufLease`], so the ring can tell when the last one
//! of a command is gone ([`CommandRing::buffers_in_use`](crate::CommandRing::buffers_in_use)):
//! e.g. once an io_uring operation of an aborted command has finished.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::Arc;

use crate::mmap::{Mapping, OutOfBounds, RingClaim};

/// One command's claim on its data-area buffers: each of the command's
/// [`DataBuf`]s (and every piece of one) holds a clone, so the claim ends
/// when the last buffer is dropped.
#[derive(Debug, Default)]
pub struct BufLease {
    /// For a ring's buffers, the ring's hold on its mapping: no other ring
    /// may read the mapping while one of them lives.
    _ring: Option<Arc<RingClaim>>,
}

impl BufLease {
    /// A lease of buffers handed out by the ring holding `claim`.
    pub(crate) fn for_ring(claim: Arc<RingClaim>) -> Self {
        Self { _ring: Some(claim) }
    }
}

/// A range of the data area belonging to one command's iovec.
#[derive(Debug)]
pub struct DataBuf {
    map: Arc<Mapping>,
    /// The owning command's lease; `None` for buffers outside a ring.
    lease: Option<Arc<BufLease>>,
    offset: usize,
    len: usize,
    /// Bytes counted as initialised, as tokio-uring's buffer traits see them:
    /// `len` for data-out (write) buffers, starting at 0 for data-in (read)
    /// buffers and advanced by completed reads.
    init: usize,
}

impl DataBuf {
    /// A buffer over `[offset, offset + len)` of `map`, checked against the
    /// mapping's bounds. Crate-private: the caller (the ring, a
    /// [`ScratchArea`](crate::scratch::ScratchArea)) guarantees that no
    /// other live buffer covers any of these bytes.
    pub(crate) fn new(map: Arc<Mapping>, offset: usize, len: usize) -> Result<Self, OutOfBounds> {
        map.check(offset, len)?;
        Ok(Self {
            map,
            lease: None,
            offset,
            len,
            init: len,
        })
    }

    /// The same buffer, counted under `lease` (see [`BufLease`]).
    pub(crate) fn leased(mut self, lease: &Arc<BufLease>) -> Self {
        self.lease = Some(lease.clone());
        self
    }

    /// A zero-filled buffer of `len` bytes in fresh anonymous memory that
    /// nothing else can reach. To lend memory and look at it afterwards,
    /// use a [`ScratchArea`](crate::scratch::ScratchArea) instead.
    pub fn scratch(len: usize) -> std::io::Result<Self> {
        let map = Arc::new(Mapping::anonymous(len.max(1))?);
        Self::new(map, 0, len).map_err(|e| std::io::Error::other(e.to_string()))
    }

    /// The same buffer, counted under `lease` for a scratch area (see
    /// [`ScratchArea`](crate::scratch::ScratchArea)).
    pub(crate) fn with_lease(mut self, lease: Arc<BufLease>) -> Self {
        self.lease = Some(lease);
        self
    }

    /// Splits the buffer at `at`: `self` keeps `[0, at)`, the returned
    /// buffer is `[at, len)` of the same memory.
    pub fn split_off(&mut self, at: usize) -> Self {
        let at = at.min(self.len);
        let tail = Self {
            map: self.map.clone(),
            lease: self.lease.clone(),
            offset: self.offset + at,
            len: self.len - at,
            init: self.init.saturating_sub(at),
        };
        self.len = at;
        self.init = self.init.min(at);
        tail
    }

    /// Offset of this buffer from the start of the mapping.
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the buffer is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Shortens the buffer to at most `len` bytes.
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
        self.init = self.init.min(self.len);
    }

    /// Marks the whole buffer as not yet filled, so an io_uring read fills
    /// it from the start (for data-in).
    pub fn into_read_target(mut self) -> Self {
        self.init = 0;
        self
    }

    /// Marks the whole buffer as holding data (for data-out, or after a
    /// copy into it).
    pub fn into_filled(mut self) -> Self {
        self.init = self.len;
        self
    }

    /// How many bytes a read has filled so far (see [`into_read_target`](Self::into_read_target)).
    pub fn filled(&mut self) -> usize {
        self.init
    }

    /// Copies up to `self.len()` bytes from `src` into the buffer at `at`;
    /// returns how many were copied.
    pub fn copy_from(&mut self, at: usize, src: &[u8]) -> usize {
        let n = src.len().min(self.len.saturating_sub(at));
        if n == 0 {
            return 0;
        }
        match self.map.write(self.offset + at, &src[..n]) {
            Ok(()) => n,
            Err(_) => 0,
        }
    }

    /// Copies bytes starting at `at` into `dst`; returns how many were copied.
    pub fn copy_to(&self, at: usize, dst: &mut [u8]) -> usize {
        let n = dst.len().min(self.len.saturating_sub(at));
        if n == 0 {
            return 0;
        }
        match self.map.read(self.offset + at, &mut dst[..n]) {
            Ok(()) => n,
            Err(_) => 0,
        }
    }

    /// Zeroes `[at, len)`.
    pub fn zero_from(&mut self, at: usize) {
        if at < self.len {
            let _ = self.map.fill(self.offset + at, self.len - at, 0);
        }
    }

    /// Copies the whole buffer into a new vector.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = vec![0u8; self.len];
        self.copy_to(0, &mut v);
        v
    }

    fn raw_ptr(&self) -> *mut u8 {
        // `new` checked the range, so this cannot fail; a zero-length buffer
        // at the end of the mapping yields the one-past-the-end pointer.
        self.map
            .ptr_at(self.offset, self.len)
            .unwrap_or(std::ptr::NonNull::dangling().as_ptr())
    }
}

/// Total length of a list of buffers.
pub fn total_len(bufs: &[DataBuf]) -> usize {
    bufs.iter().map(DataBuf::len).sum()
}

/// Zeroes everything in `bufs` past their first `len` bytes.
pub fn zero_beyond(bufs: &mut [DataBuf], len: usize) {
    let mut start = 0;
    for b in bufs {
        if start + b.len() > len {
            b.zero_from(len.saturating_sub(start));
        }
        start += b.len();
    }
}

/// Keeps only the first `len` bytes of `bufs`: later buffers are dropped,
/// the last kept one shortened.
pub fn truncate_list(bufs: &mut Vec<DataBuf>, len: usize) {
    let mut left = len;
    bufs.retain_mut(|b| {
        if left == 0 {
            return false;
        }
        b.truncate(left);
        left -= b.len();
        true
    });
}

/// Splits a list of buffers at byte `at`: `bufs` keeps the first `at`
/// bytes, the returned list holds the rest.
pub fn split_list(bufs: &mut Vec<DataBuf>, at: usize) -> Vec<DataBuf> {
    let mut start = 0;
    let mut i = 0;
    while i < bufs.len() && start + bufs[i].len() <= at {
        start += bufs[i].len();
        i += 1;
    }
    let mut tail = bufs.split_off(i);
    if let Some(first) = tail.first_mut() {
        if at > start {
            let rest = first.split_off(at - start);
            let head = std::mem::replace(first, rest);
            bufs.push(head);
        }
    }
    tail
}

/// Copies `src` across `bufs` in order, zero-filling whatever is left of
/// them, and returns how many bytes of `src` were placed. Zero-filling keeps
/// a previous command's bytes from leaking to this initiator.
pub fn scatter(bufs: &mut [DataBuf], src: &[u8]) -> usize {
    let mut done = 0;
    for b in bufs {
        let n = b.copy_from(0, &src[done.min(src.len())..]);
        b.zero_from(n);
        done += n;
    }
    done
}

/// Copies `src` into `bufs` laid end to end, from byte `at` of the list
/// on, and returns how many bytes fit; nothing outside that range is
/// touched (unlike [`scatter`], which zero-fills).
pub fn copy_into(bufs: &mut [DataBuf], at: usize, src: &[u8]) -> usize {
    let mut start = 0;
    let mut done = 0;
    for b in bufs {
        let end = start + b.len();
        if done < src.len() && at + done < end {
            done += b.copy_from(at + done - start, &src[done..]);
        }
        start = end;
    }
    done
}

/// Copies bytes of `bufs` laid end to end, from byte `at` of the list on,
/// into `dst`, and returns how many there were.
pub fn copy_out_of(bufs: &[DataBuf], at: usize, dst: &mut [u8]) -> usize {
    let mut start = 0;
    let mut done = 0;
    for b in bufs {
        let end = start + b.len();
        if done < dst.len() && at + done < end {
            done += b.copy_to(at + done - start, &mut dst[done..]);
        }
        start = end;
    }
    done
}

/// Copies up to `max` bytes out of `bufs`, in order.
pub fn gather(bufs: &[DataBuf], max: usize) -> Vec<u8> {
    let total = total_len(bufs).min(max);
    let mut out = vec![0u8; total];
    let mut done = 0;
    for b in bufs {
        if done >= total {
            break;
        }
        done += b.copy_to(0, &mut out[done..]);
    }
    out
}

/// Most iovecs one `preadv2`/`pwritev2` takes (Linux `UIO_MAXIOV`).
pub const IOV_MAX: usize = 1024;

/// Buffers up to this count build their iovec array on the stack.
const STACK_IOVECS: usize = 8;

/// Reads from `fd` at `pos` into `bufs`, in order, with one `preadv2`
/// (at most [`IOV_MAX`] buffers), and returns how many bytes arrived.
///
/// This is the synchronous twin of an io_uring `readv`: the kernel copies
/// straight from the page cache into the data area. With `nowait` the call
/// passes `RWF_NOWAIT`, so it fails with `EAGAIN` instead of waiting for a
/// device (and with `EOPNOTSUPP` on files that cannot promise that).
/// Buffers' io_uring fill counts are not touched. The iovecs carry raw
/// addresses: no Rust reference into ring memory is made.
pub fn preadv(
    fd: BorrowedFd<'_>,
    pos: u64,
    bufs: &mut [DataBuf],
    nowait: bool,
) -> io::Result<usize> {
    // `&mut`: the kernel writes into the buffers, which nothing else may
    // look at meanwhile.
    vectored(fd, pos, bufs, nowait, libc::preadv2)
}

/// Writes `bufs`, in order, to `fd` at `pos` with one `pwritev2` (at most
/// [`IOV_MAX`] buffers) and returns how many bytes were written. `nowait`
/// as for [`preadv`].
pub fn pwritev(fd: BorrowedFd<'_>, pos: u64, bufs: &[DataBuf], nowait: bool) -> io::Result<usize> {
    vectored(fd, pos, bufs, nowait, libc::pwritev2)
}

/// The signature `preadv2` and `pwritev2` share.
type VectoredCall = unsafe extern "C" fn(
    libc::c_int,
    *const libc::iovec,
    libc::c_int,
    libc::off_t,
    libc::c_int,
) -> libc::ssize_t;

/// Runs `call` (`preadv2` or `pwritev2`) over the iovecs of `bufs`.
fn vectored(
    fd: BorrowedFd<'_>,
    pos: u64,
    bufs: &[DataBuf],
    nowait: bool,
    call: VectoredCall,
) -> io::Result<usize> {
    with_iovecs(bufs, |iov| {
        let pos = i64::try_from(pos).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: every iovec describes a live `DataBuf`'s range, checked
        // against its mapping (kept alive by the buffer's `Arc`) when the
        // buffer was made, and no other live buffer covers those bytes (see
        // the module documentation); the caller holds the buffers by `&mut`
        // when the kernel writes into them (`preadv`), so no view of those
        // bytes exists meanwhile; `iov` outlives the call, and its length
        // fits `c_int` (at most `IOV_MAX`).
        let n = unsafe {
            call(
                fd.as_raw_fd(),
                iov.as_ptr(),
                iov.len() as libc::c_int,
                pos,
                rw_flags(nowait),
            )
        };
        syscall_result(n)
    })
}

/// A syscall's byte count, or its errno.
fn syscall_result(n: isize) -> io::Result<usize> {
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

/// Calls `f` with the raw iovecs of the first [`IOV_MAX`] of `bufs`: on
/// the stack for up to `STACK_IOVECS` of them, in a vector otherwise.
fn with_iovecs<R>(bufs: &[DataBuf], f: impl FnOnce(&[libc::iovec]) -> R) -> R {
    let bufs = &bufs[..bufs.len().min(IOV_MAX)];
    let make = |b: &DataBuf| libc::iovec {
        iov_base: b.raw_ptr().cast(),
        iov_len: b.len,
    };
    if bufs.len() <= STACK_IOVECS {
        let mut iov = [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }; STACK_IOVECS];
        for (slot, b) in iov.iter_mut().zip(bufs) {
            *slot = make(b);
        }
        f(&iov[..bufs.len()])
    } else {
        let iov: Vec<libc::iovec> = bufs.iter().map(make).collect();
        f(&iov)
    }
}

fn rw_flags(nowait: bool) -> libc::c_int {
    if nowait {
        libc::RWF_NOWAIT
    } else {
        0
    }
}

#[cfg(feature = "tokio-uring")]
mod uring {
    use super::DataBuf;

    // SAFETY: the pointer stays valid and fixed while the `DataBuf` lives
    // (it holds an `Arc<Mapping>`, and the mapping never moves); `init` never
    // exceeds `len`, which is the total.
    unsafe impl tokio_uring::buf::IoBuf for DataBuf {
        fn stable_ptr(&self) -> *const u8 {
            self.raw_ptr()
        }

        fn bytes_init(&self) -> usize {
            self.init
        }

        fn bytes_total(&self) -> usize {
            self.len
        }
    }

    // SAFETY: as above; the memory is writable, and the kernel lent this
    // range to our command exclusively until the command completes.
    unsafe impl tokio_uring::buf::IoBufMut for DataBuf {
        fn stable_mut_ptr(&mut self) -> *mut u8 {
            self.raw_ptr()
        }

        unsafe fn set_init(&mut self, pos: usize) {
            if pos > self.init {
                self.init = pos.min(self.len);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scatter_and_gather() {
        let m = Arc::new(Mapping::anonymous(4096).unwrap());
        m.fill(0, 4096, 0xee).unwrap();
        let mut bufs = vec![
            DataBuf::new(m.clone(), 100, 4).unwrap(),
            DataBuf::new(m.clone(), 200, 4).unwrap(),
        ];
        assert_eq!(scatter(&mut bufs, &[1, 2, 3, 4, 5, 6]), 6);
        assert_eq!(gather(&bufs, 100), vec![1, 2, 3, 4, 5, 6, 0, 0]);
        assert_eq!(gather(&bufs, 3), vec![1, 2, 3]);
        zero_beyond(&mut bufs, 5);
        assert_eq!(gather(&bufs, 100), vec![1, 2, 3, 4, 5, 0, 0, 0]);
        scatter(&mut bufs, &[1, 2, 3, 4, 5, 6]);
        let mut list = bufs;
        truncate_list(&mut list, 6);
        assert_eq!(list.len(), 2);
        assert_eq!(total_len(&list), 6);
        truncate_list(&mut list, 3);
        assert_eq!(list.len(), 1);
        assert_eq!(total_len(&list), 3);
        assert!(DataBuf::new(m, 4090, 7).is_err());
    }

    #[test]
    fn copies_at_an_offset_of_a_list() {
        let area = crate::ScratchArea::new(64).unwrap();
        area.fill(0, 64, 0xee).unwrap();
        let mut bufs = vec![area.lend(0, 4).unwrap(), area.lend(32, 6).unwrap()];
        // From inside the first buffer across into the second.
        assert_eq!(copy_into(&mut bufs, 2, &[1, 2, 3, 4, 5]), 5);
        let mut out = [0u8; 10];
        assert_eq!(copy_out_of(&bufs, 0, &mut out), 10);
        assert_eq!(out, [0xee, 0xee, 1, 2, 3, 4, 5, 0xee, 0xee, 0xee]);
        // Past the end: what fits.
        assert_eq!(copy_into(&mut bufs, 8, &[9; 5]), 2);
        let mut tail = [0u8; 4];
        assert_eq!(copy_out_of(&bufs, 7, &mut tail), 3);
        assert_eq!(tail, [0xee, 9, 9, 0]);
        assert_eq!(copy_into(&mut bufs, 10, &[1]), 0);
    }

    #[test]
    fn split_lists() {
        let m = Arc::new(Mapping::anonymous(4096).unwrap());
        let bytes: Vec<u8> = (0..12).collect();
        let mut bufs = vec![
            DataBuf::new(m.clone(), 0, 4).unwrap(),
            DataBuf::new(m.clone(), 100, 4).unwrap(),
            DataBuf::new(m.clone(), 200, 4).unwrap(),
        ];
        scatter(&mut bufs, &bytes);
        // In the middle of a buffer.
        let tail = split_list(&mut bufs, 6);
        assert_eq!(gather(&bufs, 100), (0..6).collect::<Vec<u8>>());
        assert_eq!(gather(&tail, 100), (6..12).collect::<Vec<u8>>());
        // On a boundary, at 0 and past the end.
        let mut again = vec![
            DataBuf::new(m.clone(), 0, 4).unwrap(),
            DataBuf::new(m, 100, 4).unwrap(),
        ];
        assert_eq!(total_len(&split_list(&mut again, 4)), 4);
        assert_eq!(total_len(&again), 4);
        assert_eq!(total_len(&split_list(&mut again, 9)), 0);
        assert_eq!(total_len(&split_list(&mut again, 0)), 4);
        assert!(again.is_empty());
    }

    #[test]
    fn vectored_syscalls_move_bytes_between_file_and_buffers() {
        use rustix::fs::{memfd_create, MemfdFlags};
        use std::os::fd::AsFd;
        let fd = memfd_create("buf-test", MemfdFlags::CLOEXEC).unwrap();
        let m = Arc::new(Mapping::anonymous(4096).unwrap());
        let bytes: Vec<u8> = (1..=12).collect();
        // More buffers than fit the stack array, to cover both paths.
        for count in [3usize, 12] {
            let each = 12 / count;
            let mut bufs: Vec<DataBuf> = (0..count)
                .map(|i| DataBuf::new(m.clone(), 1000 - i * 64, each).unwrap())
                .collect();
            scatter(&mut bufs, &bytes);
            assert_eq!(pwritev(fd.as_fd(), 100, &bufs, false).unwrap(), 12);
            scatter(&mut bufs, &[0; 12]);
            assert_eq!(preadv(fd.as_fd(), 100, &mut bufs, false).unwrap(), 12);
            assert_eq!(gather(&bufs, 100), bytes);
            // Reading past the end of the file returns what is there.
            assert_eq!(preadv(fd.as_fd(), 106, &mut bufs, false).unwrap(), 6);
            assert_eq!(preadv(fd.as_fd(), 4096, &mut bufs, false).unwrap(), 0);
        }
    }

    #[test]
    fn scratch_is_zeroed() {
        let b = DataBuf::scratch(8192).unwrap();
        assert_eq!(b.len(), 8192);
        assert!(b.to_vec().iter().all(|&x| x == 0));
        assert_eq!(DataBuf::scratch(0).unwrap().len(), 0);
    }
}
