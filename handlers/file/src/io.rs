//! Zero-copy vectored I/O between a file and ring buffers.
//!
//! Two ways of moving bytes, both straight between the page cache and the
//! ring's data area (no copy of ours):
//!
//! - **inline**: a synchronous `preadv2`/`pwritev2` on the worker thread,
//!   chosen per file by [`Inline`]. Linux 6.1's io_uring cannot do buffered
//!   I/O on tmpfs (or buffered writes on ext4) without handing each one to
//!   an `iou-wrk` thread, which costs two thread switches per command; a
//!   copy from memory costs less than that. On files that can say "this
//!   would wait" (`RWF_NOWAIT`) the inline attempt is only a first try.
//! - **io_uring** `readv`/`writev`, for everything that might wait for a
//!   device. Short transfers are finished here:
//!   - a short read is resubmitted with the same buffers: tokio-uring
//!     advances each buffer's initialised length, so the next `readv`
//!     continues where the last one stopped; end of file zero-fills the
//!     rest, so no stale bytes of an earlier command reach the initiator;
//!   - a short write is resubmitted with the unwritten tail, expressed as
//!     tokio-uring [`Slice`]s of the same buffers (no copy).
//!
//! At most [`IOV_MAX`] buffers go into one submission. The buffers move into
//! each io_uring operation and back; if the caller's future is dropped,
//! tokio-uring keeps them alive until the kernel has finished with them.
//!
//! (`File::writev_at_all` is not used: it panics when a `writev` makes no
//! progress, e.g. with a trailing zero-length buffer.)

use std::cell::Cell;
use std::io;
use std::os::fd::BorrowedFd;

use tcmu_core::buf::split_list;
use tcmu_core::DataBuf;
use tokio_uring::buf::{BoundedBuf, Slice};
use tokio_uring::fs::File;

pub use tcmu_core::buf::IOV_MAX;

/// Largest transfer done inline; bigger ones go to io_uring, whose worker
/// threads copy in parallel instead of holding up the device's other
/// commands. (Below this, inline wins at every queue depth measured: in
/// the test VM, `tests/vm/ab.sh` with `TCMU_FILE_INLINE=never` against the
/// default gave +33% IOPS at 4k QD1 and equal IOPS with 7–16% less daemon
/// CPU per I/O at QD8 and QD32.)
pub const INLINE_MAX_BYTES: usize = 256 * 1024;

/// Environment variable that overrides the policy of every file opened
/// afterwards: `never` (io_uring only) or `nowait` (no inline copy without
/// `RWF_NOWAIT`), for comparing the paths on one machine.
pub const INLINE_ENV: &str = "TCMU_FILE_INLINE";

/// Whether a transfer is first tried as a synchronous syscall on the
/// worker thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inline {
    /// Always (memory-backed files: tmpfs, ramfs). Such a file never waits
    /// for a device, and io_uring in Linux 6.1 would punt it to a worker.
    Always,
    /// First with `RWF_NOWAIT`, which the page cache serves at once or
    /// refuses with `EAGAIN`; then through io_uring. A file that refuses
    /// `RWF_NOWAIT` itself (`EOPNOTSUPP`) is moved to [`Inline::Never`].
    NoWait,
    /// Never: io_uring only.
    Never,
}

/// The inline policy of a file: [`INLINE_ENV`]'s when set (`never` or
/// `nowait`), else from what the file is and its filesystem.
pub fn policy_for(file: BorrowedFd<'_>) -> Inline {
    // Linux's `TMPFS_MAGIC` and `RAMFS_MAGIC` (include/uapi/linux/magic.h).
    const MEMORY_FILESYSTEMS: [i64; 2] = [0x0102_1994, 0x8584_58f6];
    match std::env::var(INLINE_ENV).as_deref() {
        Ok("never") => return Inline::Never,
        Ok("nowait") => return Inline::NoWait,
        _ => {}
    }
    // A block device node lives on devtmpfs, whose magic is tmpfs's:
    // never take it for memory.
    let block_device = rustix::fs::fstat(file)
        .is_ok_and(|st| rustix::fs::FileType::from_raw_mode(st.st_mode).is_block_device());
    if block_device {
        return Inline::NoWait;
    }
    match rustix::fs::fstatfs(file) {
        #[allow(clippy::unnecessary_cast)] // f_type's width differs per arch
        Ok(st) if MEMORY_FILESYSTEMS.contains(&(st.f_type as i64)) => Inline::Always,
        _ => Inline::NoWait,
    }
}

/// What an inline attempt left for io_uring.
enum Rest {
    /// Nothing: the transfer is complete.
    Done,
    /// The file would have waited (or cannot promise not to): these
    /// buffers, from this position.
    Wait {
        pos: u64,
        bufs: Vec<DataBuf>,
        /// The file refused `RWF_NOWAIT` itself.
        unsupported: bool,
    },
}

/// Which way a transfer goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    /// File to buffers.
    Read,
    /// Buffers to file.
    Write,
}

/// Tries `bufs` inline as `policy` allows; returns what is left for
/// io_uring (all of it when `policy` says no), `None` when nothing is.
fn inline_first(
    policy: &Cell<Inline>,
    dir: Dir,
    fd: BorrowedFd<'_>,
    pos: u64,
    bufs: Vec<DataBuf>,
) -> io::Result<Option<(u64, Vec<DataBuf>)>> {
    let Some(nowait) = inline_mode(policy, tcmu_core::buf::total_len(&bufs)) else {
        return Ok(Some((pos, bufs)));
    };
    match transfer_inline(dir, fd, pos, bufs, nowait)? {
        Rest::Done => Ok(None),
        Rest::Wait {
            pos,
            bufs,
            unsupported,
        } => {
            if unsupported {
                nowait_refused(policy);
            }
            Ok(Some((pos, bufs)))
        }
    }
}

/// Whether `policy` lets a transfer of `total` bytes go inline: `None` if
/// not, else whether with `RWF_NOWAIT`.
fn inline_mode(policy: &Cell<Inline>, total: usize) -> Option<bool> {
    match policy.get() {
        Inline::Never => None,
        _ if total > INLINE_MAX_BYTES => None,
        Inline::Always => Some(false),
        Inline::NoWait => Some(true),
    }
}

/// The file refused `RWF_NOWAIT` itself: io_uring only from now on.
fn nowait_refused(policy: &Cell<Inline>) {
    tracing::debug!("file handler: RWF_NOWAIT unsupported here, using io_uring only");
    policy.set(Inline::Never);
}

/// Moves all of `bufs` inline in one syscall, if `policy` allows and the
/// file serves the whole transfer without waiting: `Some(result)`, else
/// `None` and the caller goes through [`read()`] or [`write()`], which redo
/// any part done here (the same bytes at the same place). A read at or
/// past the end of the file is left to them too (they zero-fill).
fn transfer_now(
    policy: &Cell<Inline>,
    total: usize,
    mut transfer: impl FnMut(bool) -> io::Result<usize>,
) -> Option<io::Result<()>> {
    let nowait = inline_mode(policy, total)?;
    loop {
        return match transfer(nowait) {
            Ok(n) if n == total => Some(Ok(())),
            Ok(_) => None,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => match leave_for_uring(nowait, &e) {
                Some(unsupported) => {
                    if unsupported {
                        nowait_refused(policy);
                    }
                    None
                }
                None => Some(Err(e)),
            },
        };
    }
}

/// Fills `bufs` from `fd` at `pos` right away, when [`read()`] would do it
/// inline in one syscall; `None` otherwise (see `transfer_now`).
pub fn read_now(
    fd: BorrowedFd<'_>,
    policy: &Cell<Inline>,
    pos: u64,
    bufs: &mut [DataBuf],
) -> Option<io::Result<()>> {
    let total = tcmu_core::buf::total_len(bufs);
    transfer_now(policy, total, |nowait| {
        tcmu_core::buf::preadv(fd, pos, bufs, nowait)
    })
}

/// Writes `bufs` to `fd` at `pos` right away, when [`write()`] would do it
/// inline in one syscall; `None` otherwise.
pub fn write_now(
    fd: BorrowedFd<'_>,
    policy: &Cell<Inline>,
    pos: u64,
    bufs: &[DataBuf],
) -> Option<io::Result<()>> {
    let total = tcmu_core::buf::total_len(bufs);
    transfer_now(policy, total, |nowait| {
        tcmu_core::buf::pwritev(fd, pos, bufs, nowait)
    })
}

/// Whether a `RWF_NOWAIT` transfer should go to io_uring after `e`.
fn leave_for_uring(nowait: bool, e: &io::Error) -> Option<bool> {
    if !nowait {
        None
    } else if e.kind() == io::ErrorKind::WouldBlock {
        Some(false)
    } else if e.raw_os_error() == Some(libc::EOPNOTSUPP) {
        Some(true)
    } else {
        None
    }
}

/// Moves `bufs` inline until done or, with `nowait`, until the file would
/// wait. A read past the end of the file zero-fills the rest.
fn transfer_inline(
    dir: Dir,
    fd: BorrowedFd<'_>,
    mut pos: u64,
    mut bufs: Vec<DataBuf>,
    nowait: bool,
) -> io::Result<Rest> {
    while tcmu_core::buf::total_len(&bufs) > 0 {
        let moved = match dir {
            Dir::Read => tcmu_core::buf::preadv(fd, pos, &mut bufs, nowait),
            Dir::Write => tcmu_core::buf::pwritev(fd, pos, &bufs, nowait),
        };
        match moved {
            Ok(0) if dir == Dir::Read => {
                // End of file: the rest of the device reads as zeroes.
                tcmu_core::buf::zero_beyond(&mut bufs, 0);
                break;
            }
            Ok(0) => return Err(no_progress(pos)),
            Ok(n) => {
                pos += n as u64;
                bufs = split_list(&mut bufs, n);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => match leave_for_uring(nowait, &e) {
                Some(unsupported) => {
                    return Ok(Rest::Wait {
                        pos,
                        bufs,
                        unsupported,
                    })
                }
                None => return Err(e),
            },
        }
    }
    Ok(Rest::Done)
}

fn no_progress(pos: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::WriteZero,
        format!("write made no progress at offset {pos}"),
    )
}

/// Splits `bufs` into groups of at most [`IOV_MAX`].
fn batches(mut bufs: Vec<DataBuf>) -> Vec<Vec<DataBuf>> {
    let mut out = Vec::with_capacity(bufs.len().div_ceil(IOV_MAX).max(1));
    while bufs.len() > IOV_MAX {
        let rest = bufs.split_off(IOV_MAX);
        out.push(bufs);
        bufs = rest;
    }
    out.push(bufs);
    out
}

/// Fills `bufs`, in order, from `file` (whose descriptor is `fd`) at `pos`,
/// inline as `policy` allows and through io_uring otherwise; bytes past
/// the end of the file read as zeroes.
pub async fn read(
    file: &File,
    fd: BorrowedFd<'_>,
    policy: &Cell<Inline>,
    pos: u64,
    bufs: Vec<DataBuf>,
) -> io::Result<()> {
    match inline_first(policy, Dir::Read, fd, pos, bufs)? {
        None => Ok(()),
        Some((pos, bufs)) => read_at(file, pos, bufs).await,
    }
}

/// Writes `bufs`, in order, to `file` (descriptor `fd`) at `pos`, inline
/// as `policy` allows and through io_uring otherwise; all of them or an
/// error.
pub async fn write(
    file: &File,
    fd: BorrowedFd<'_>,
    policy: &Cell<Inline>,
    pos: u64,
    bufs: Vec<DataBuf>,
) -> io::Result<()> {
    match inline_first(policy, Dir::Write, fd, pos, bufs)? {
        None => Ok(()),
        Some((pos, bufs)) => write_at(file, pos, bufs).await,
    }
}

/// Fills `bufs`, in order, from `file` at `pos`; bytes past the end of the
/// file read as zeroes.
pub async fn read_at(file: &File, pos: u64, bufs: Vec<DataBuf>) -> io::Result<()> {
    let mut pos = pos;
    for batch in batches(bufs) {
        pos += read_batch(file, pos, batch).await?;
    }
    Ok(())
}

async fn read_batch(file: &File, pos: u64, bufs: Vec<DataBuf>) -> io::Result<u64> {
    let want = tcmu_core::buf::total_len(&bufs);
    let mut bufs: Vec<DataBuf> = bufs
        .into_iter()
        .filter(|b| !b.is_empty())
        .map(DataBuf::into_read_target)
        .collect();
    let mut done = 0usize;
    while done < want {
        let (res, back) = file.readv_at(bufs, pos + done as u64).await;
        bufs = back;
        match res {
            Ok(0) => {
                // End of file: the rest of the device reads as zeroes.
                for b in &mut bufs {
                    let filled = b.filled();
                    b.zero_from(filled);
                }
                break;
            }
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(want as u64)
}

/// Writes `bufs`, in order, to `file` at `pos`, all of them or an error.
pub async fn write_at(file: &File, pos: u64, bufs: Vec<DataBuf>) -> io::Result<()> {
    let mut pos = pos;
    for batch in batches(bufs) {
        pos += write_batch(file, pos, batch).await?;
    }
    Ok(())
}

async fn write_batch(file: &File, pos: u64, bufs: Vec<DataBuf>) -> io::Result<u64> {
    let want = tcmu_core::buf::total_len(&bufs);
    let mut rest: Vec<Slice<DataBuf>> = bufs
        .into_iter()
        .filter(|b| !b.is_empty())
        .map(|b| b.into_filled().slice_full())
        .collect();
    let mut done = 0usize;
    while !rest.is_empty() {
        let (res, back) = file.writev_at(rest, pos + done as u64).await;
        match res {
            Ok(0) => return Err(no_progress(pos + done as u64)),
            Ok(n) => {
                done += n;
                rest = advance(back, n);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => rest = back,
            Err(e) => return Err(e),
        }
    }
    Ok(want as u64)
}

/// Drops the first `n` bytes from a list of slices.
fn advance(slices: Vec<Slice<DataBuf>>, mut n: usize) -> Vec<Slice<DataBuf>> {
    let mut out = Vec::with_capacity(slices.len());
    for s in slices {
        let len = s.bytes_total();
        if n >= len {
            n -= len;
        } else if n > 0 {
            out.push(s.slice(n..));
            n = 0;
        } else {
            out.push(s);
        }
    }
    out
}

/// Writes `len` bytes of `pattern` repeated at `pos`, through a buffer of at
/// most `max_chunk` bytes (rounded to whole patterns) built once.
pub async fn write_pattern(
    file: &File,
    pos: u64,
    len: u64,
    pattern: &[u8],
    max_chunk: usize,
) -> io::Result<()> {
    if pattern.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "empty WRITE SAME pattern",
        ));
    }
    if len == 0 {
        return Ok(());
    }
    let per_chunk = (max_chunk / pattern.len()).max(1);
    let chunk_len = usize::try_from(len)
        .unwrap_or(usize::MAX)
        .min(per_chunk * pattern.len());
    let mut buf = Vec::with_capacity(chunk_len);
    while buf.len() < chunk_len {
        let n = (chunk_len - buf.len()).min(pattern.len());
        buf.extend_from_slice(&pattern[..n]);
    }
    // Every chunk but the last is a whole number of patterns, so each write
    // starts on a pattern boundary.
    let mut done = 0u64;
    while done < len {
        let n = (len - done).min(buf.len() as u64) as usize;
        let (res, slice) = file.write_all_at(buf.slice(..n), pos + done).await;
        buf = slice.into_inner();
        res?;
        done += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::os::fd::AsFd;

    use tcmu_core::ScratchArea;

    use super::*;

    /// Writes then reads a pattern under each policy, through many small
    /// buffers, one transfer larger than [`INLINE_MAX_BYTES`] and a read
    /// that runs past the end of the file.
    #[test]
    fn every_policy_moves_the_same_bytes() {
        let dir = std::env::temp_dir();
        tokio_uring::start(async {
            for policy in [Inline::Always, Inline::NoWait, Inline::Never] {
                let path = dir.join(format!("tcmu-file-io-{}-{policy:?}", std::process::id()));
                let std_file = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(&path)
                    .unwrap();
                let fd_file = std_file.try_clone().unwrap();
                let file = File::from_std(std_file);
                let cell = Cell::new(policy);
                let size = 2 * INLINE_MAX_BYTES;
                let map = ScratchArea::new(size).unwrap();
                let pattern: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
                map.write(0, &pattern).unwrap();
                // 4k in 8 pieces of 512 bytes.
                let small = |base: usize| -> Vec<DataBuf> {
                    (0..8)
                        .map(|i| map.lend(base + i * 512, 512).unwrap())
                        .collect()
                };
                write(&file, fd_file.as_fd(), &cell, 0, small(0))
                    .await
                    .unwrap();
                let big = vec![map.lend(0, size).unwrap()];
                write(&file, fd_file.as_fd(), &cell, 4096, big)
                    .await
                    .unwrap();
                map.fill(0, size, 0xee).unwrap();
                read(&file, fd_file.as_fd(), &cell, 0, small(0))
                    .await
                    .unwrap();
                assert_eq!(tcmu_core::buf::gather(&small(0), 4096), pattern[..4096]);
                // The last 2k of the file, then 2k past its end.
                let end = 4096 + size as u64;
                read(&file, fd_file.as_fd(), &cell, end - 2048, small(8192))
                    .await
                    .unwrap();
                let got = tcmu_core::buf::gather(&small(8192), 4096);
                assert_eq!(got[..2048], pattern[size - 2048..]);
                assert!(
                    got[2048..].iter().all(|&b| b == 0),
                    "{policy:?}: tail not zeroed"
                );
                let big = vec![map.lend(0, size).unwrap()];
                read(&file, fd_file.as_fd(), &cell, 4096, big)
                    .await
                    .unwrap();
                let mut back = vec![0u8; size];
                map.read(0, &mut back).unwrap();
                assert!(back == pattern, "{policy:?}: large read differs");
                std::fs::remove_file(&path).unwrap();
            }
        });
    }

    /// The synchronous fast path moves whole transfers the policy allows
    /// inline, and leaves everything else (io_uring only, too large, a
    /// read past the end of the file) to the async path.
    #[test]
    fn the_fast_path_takes_only_whole_inline_transfers() {
        use rustix::fs::{memfd_create, MemfdFlags};
        let fd = memfd_create("fast", MemfdFlags::CLOEXEC).unwrap();
        rustix::fs::ftruncate(&fd, 16384).unwrap();
        let map = ScratchArea::new(2 * INLINE_MAX_BYTES).unwrap();
        let pattern: Vec<u8> = (0..4096).map(|i| (i * 11 % 253) as u8).collect();
        map.write(0, &pattern).unwrap();
        let piece = |off, len| map.lend(off, len).unwrap();
        let four_k = || vec![piece(0, 1024), piece(1024, 3072)];
        let always = Cell::new(Inline::Always);
        assert!(matches!(
            write_now(fd.as_fd(), &always, 8192, &four_k()),
            Some(Ok(()))
        ));
        map.fill(0, 4096, 0).unwrap();
        assert!(matches!(
            read_now(fd.as_fd(), &always, 8192, &mut four_k()),
            Some(Ok(()))
        ));
        assert_eq!(tcmu_core::buf::gather(&four_k(), 4096), pattern);
        // Not taken: io_uring only, over the inline limit, past the end.
        let never = Cell::new(Inline::Never);
        assert!(read_now(fd.as_fd(), &never, 0, &mut four_k()).is_none());
        let mut big = vec![piece(0, 2 * INLINE_MAX_BYTES)];
        assert!(read_now(fd.as_fd(), &always, 0, &mut big).is_none());
        drop(big);
        assert!(read_now(fd.as_fd(), &always, 14336, &mut four_k()).is_none());
        // A cached read with RWF_NOWAIT is served, unless the file refuses
        // the flag itself, which moves it to io_uring for good.
        let nowait = Cell::new(Inline::NoWait);
        map.fill(0, 4096, 0).unwrap();
        match read_now(fd.as_fd(), &nowait, 8192, &mut four_k()) {
            Some(r) => {
                r.unwrap();
                assert_eq!(tcmu_core::buf::gather(&four_k(), 4096), pattern);
            }
            None => assert_eq!(nowait.get(), Inline::Never),
        }
    }

    #[test]
    fn memory_files_are_served_inline() {
        use rustix::fs::{memfd_create, MemfdFlags};
        let fd = memfd_create("policy", MemfdFlags::CLOEXEC).unwrap();
        assert_eq!(policy_for(fd.as_fd()), Inline::Always);
    }

    #[test]
    fn advance_skips_written_bytes() {
        let map = ScratchArea::new(4096).unwrap();
        let mk = |off, len| map.lend(off, len).unwrap().slice_full();
        let lens = |v: &[Slice<DataBuf>]| v.iter().map(|s| s.bytes_total()).collect::<Vec<_>>();
        let v = advance(vec![mk(0, 10), mk(100, 20), mk(200, 5)], 15);
        assert_eq!(lens(&v), vec![15, 5]);
        assert_eq!(v[0].begin(), 5);
        let v = advance(v, 15);
        assert_eq!(lens(&v), vec![5]);
        let v = advance(v, 5);
        assert!(v.is_empty());
        let v = advance(vec![mk(0, 10)], 0);
        assert_eq!(lens(&v), vec![10]);
    }

    #[test]
    fn batches_respect_iov_max() {
        let map = ScratchArea::new(4096).unwrap();
        let bufs: Vec<DataBuf> = (0..2 * IOV_MAX + 3)
            .map(|i| map.lend(i % 4096, 1).unwrap())
            .collect();
        let sizes: Vec<usize> = batches(bufs).iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![IOV_MAX, IOV_MAX, 3]);
        assert_eq!(batches(Vec::new()).len(), 1);
    }
}
