//! Memory of one's own, lent out as [`DataBuf`]s.
//!
//! A [`ScratchArea`] owns an anonymous mapping that nothing else can reach.
//! It lends [`DataBuf`]s over parts of it — to a handler, to io_uring, to
//! [`preadv`](crate::buf::preadv) — and reads and writes it itself, under
//! two rules that keep every byte with exactly one user at a time:
//!
//! - [`lend`](ScratchArea::lend) checks the new buffer against every buffer
//!   the area lent before that is still alive (a buffer and every piece
//!   [`split_off`](DataBuf::split_off) it count as alive until the last of
//!   them is dropped): overlapping ones are refused;
//! - the owner's [`read`](ScratchArea::read), [`write`](ScratchArea::write),
//!   [`fill`](ScratchArea::fill) and [`to_vec`](ScratchArea::to_vec) work
//!   only while no lent buffer is alive, and fail with
//!   [`ScratchError::Lent`] otherwise.
//!
//! So the usual shape is: write the area, lend buffers, hand them to the
//! I/O (which consumes them), and once the I/O is done and the buffers are
//! gone, read the area back. A handler that keeps a buffer it was lent
//! makes the read-back fail instead of racing with it.
//!
//! The runtime's generic fallbacks (compare, verify, WRITE SAME by plain
//! writes) work this way, and so do handler unit tests that need buffers at
//! chosen offsets.

use std::io;
use std::sync::atomic::{fence, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::buf::{BufLease, DataBuf};
use crate::mmap::{Mapping, OutOfBounds};

/// Why a [`ScratchArea`] refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ScratchError {
    /// The range lies outside the area.
    #[error(transparent)]
    OutOfBounds(#[from] OutOfBounds),
    /// The range overlaps a buffer lent earlier that is still alive.
    #[error("{len} bytes at {offset:#x} overlap a buffer of the scratch area still lent out")]
    Overlap {
        /// Requested offset.
        offset: usize,
        /// Requested length.
        len: usize,
    },
    /// The owner may not touch the area while buffers are lent out.
    #[error("{count} buffer(s) of the scratch area are still lent out")]
    Lent {
        /// How many loans are alive.
        count: usize,
    },
}

impl From<ScratchError> for io::Error {
    fn from(e: ScratchError) -> Self {
        let kind = match e {
            ScratchError::OutOfBounds(_) => io::ErrorKind::InvalidInput,
            ScratchError::Overlap { .. } | ScratchError::Lent { .. } => io::ErrorKind::ResourceBusy,
        };
        io::Error::new(kind, e)
    }
}

/// One range lent out; alive while `lease` has other holders.
#[derive(Debug)]
struct Loan {
    offset: usize,
    len: usize,
    lease: Arc<BufLease>,
}

impl Loan {
    fn alive(&self) -> bool {
        Arc::strong_count(&self.lease) > 1
    }
}

/// Zero-filled memory of one's own that lends disjoint [`DataBuf`]s (see
/// the [module documentation](self)).
#[derive(Debug)]
pub struct ScratchArea {
    map: Arc<Mapping>,
    len: usize,
    /// Loans made and perhaps alive; the lock makes "check, then act" one
    /// step against a concurrent `lend`.
    loans: Mutex<Vec<Loan>>,
}

impl ScratchArea {
    /// A zero-filled area of `len` bytes.
    pub fn new(len: usize) -> io::Result<Self> {
        Ok(Self {
            map: Arc::new(Mapping::anonymous(len.max(1))?),
            len,
            loans: Mutex::new(Vec::new()),
        })
    }

    /// Size in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the area has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The loans, with those no longer alive forgotten. The Acquire fence
    /// orders everything a dropped buffer's last user did before the
    /// owner's next access (the drop decremented the count with Release).
    fn live_loans(&self) -> MutexGuard<'_, Vec<Loan>> {
        let mut loans = self.loans.lock().unwrap_or_else(|e| e.into_inner());
        loans.retain(Loan::alive);
        fence(Ordering::Acquire);
        loans
    }

    fn check(&self, offset: usize, len: usize) -> Result<(), OutOfBounds> {
        crate::mmap::check_range(offset, len, self.len)
    }

    /// Lends `[offset, offset + len)` as a buffer, refusing a range outside
    /// the area or overlapping a buffer lent before that is still alive.
    pub fn lend(&self, offset: usize, len: usize) -> Result<DataBuf, ScratchError> {
        self.check(offset, len)?;
        let mut loans = self.live_loans();
        let end = offset + len;
        if len > 0
            && loans
                .iter()
                .any(|l| l.len > 0 && offset < l.offset + l.len && l.offset < end)
        {
            return Err(ScratchError::Overlap { offset, len });
        }
        let lease = Arc::new(BufLease::default());
        let buf = DataBuf::new(self.map.clone(), offset, len)?.with_lease(lease.clone());
        loans.push(Loan { offset, len, lease });
        Ok(buf)
    }

    /// Lends the whole area as one buffer.
    pub fn lend_all(&self) -> Result<DataBuf, ScratchError> {
        self.lend(0, self.len)
    }

    /// How many lent buffers (counting a buffer and its pieces once) are
    /// still alive.
    pub fn lent(&self) -> usize {
        self.live_loans().len()
    }

    /// Runs `f` if no lent buffer is alive, holding the lock so that none is
    /// lent meanwhile.
    fn exclusive<T>(&self, f: impl FnOnce() -> Result<T, OutOfBounds>) -> Result<T, ScratchError> {
        let loans = self.live_loans();
        if !loans.is_empty() {
            return Err(ScratchError::Lent { count: loans.len() });
        }
        let out = f()?;
        drop(loans);
        Ok(out)
    }

    /// Copies `out.len()` bytes at `offset` out of the area.
    pub fn read(&self, offset: usize, out: &mut [u8]) -> Result<(), ScratchError> {
        self.exclusive(|| {
            self.check(offset, out.len())?;
            self.map.read(offset, out)
        })
    }

    /// Copies `data` into the area at `offset`.
    pub fn write(&self, offset: usize, data: &[u8]) -> Result<(), ScratchError> {
        self.exclusive(|| {
            self.check(offset, data.len())?;
            self.map.write(offset, data)
        })
    }

    /// Sets `len` bytes at `offset` to `byte`.
    pub fn fill(&self, offset: usize, len: usize, byte: u8) -> Result<(), ScratchError> {
        self.exclusive(|| {
            self.check(offset, len)?;
            self.map.fill(offset, len, byte)
        })
    }

    /// Copies the whole area into a new vector.
    pub fn to_vec(&self) -> Result<Vec<u8>, ScratchError> {
        let mut v = vec![0u8; self.len];
        self.read(0, &mut v)?;
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn lends_disjoint_buffers_only() {
        let area = ScratchArea::new(4096).unwrap();
        let a = area.lend(0, 100).unwrap();
        let b = area.lend(100, 100).unwrap();
        assert_eq!(area.lent(), 2);
        for (off, len) in [(0, 1), (99, 2), (150, 10), (50, 200)] {
            assert_eq!(
                area.lend(off, len).unwrap_err(),
                ScratchError::Overlap { offset: off, len }
            );
        }
        assert!(matches!(
            area.lend(4000, 97),
            Err(ScratchError::OutOfBounds(_))
        ));
        // Empty buffers overlap nothing.
        let empty = area.lend(50, 0).unwrap();
        drop(a);
        let again = area.lend(0, 100).unwrap();
        drop((again, b, empty));
        assert_eq!(area.lent(), 0);
    }

    #[test]
    fn a_piece_keeps_its_loan_alive() {
        let area = ScratchArea::new(4096).unwrap();
        let mut whole = area.lend_all().unwrap();
        let tail = whole.split_off(2048);
        drop(whole);
        assert_eq!(area.lent(), 1);
        assert!(area.lend(0, 10).is_err(), "the loan covers the whole range");
        assert_eq!(area.to_vec().unwrap_err(), ScratchError::Lent { count: 1 });
        drop(tail);
        assert_eq!(area.to_vec().unwrap().len(), 4096);
    }

    #[test]
    fn the_owner_sees_what_the_borrower_wrote() {
        let area = ScratchArea::new(16).unwrap();
        area.write(0, &[1; 16]).unwrap();
        let mut b = area.lend(4, 8).unwrap();
        assert!(matches!(
            area.write(0, &[0]),
            Err(ScratchError::Lent { .. })
        ));
        assert!(matches!(area.fill(0, 1, 0), Err(ScratchError::Lent { .. })));
        assert_eq!(b.to_vec(), vec![1; 8]);
        b.copy_from(0, &[9, 9]);
        drop(b);
        let got = area.to_vec().unwrap();
        assert_eq!(&got[..6], &[1, 1, 1, 1, 9, 9]);
        area.fill(0, 16, 0).unwrap();
        let mut one = [7u8];
        area.read(15, &mut one).unwrap();
        assert_eq!(one, [0]);
        assert!(area.read(16, &mut one).is_err());
        let e: io::Error = ScratchError::Lent { count: 1 }.into();
        assert_eq!(e.kind(), io::ErrorKind::ResourceBusy);
    }

    #[test]
    fn an_empty_area() {
        let area = ScratchArea::new(0).unwrap();
        assert!(area.is_empty());
        assert_eq!(area.lend_all().unwrap().len(), 0);
        assert!(area.to_vec().unwrap().is_empty());
    }
}
