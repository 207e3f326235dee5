//! A CDB copied out of the command ring. Every fixed-length CDB (6 to 16
//! bytes) and variable-length ones up to 32 bytes are kept inline, so
//! reading a command allocates nothing for it; longer ones (up to 260
//! bytes) go to the heap.

use std::fmt;
use std::ops::Deref;

/// The longest CDB kept inline.
pub const CDB_INLINE_LEN: usize = 32;

/// The bytes of one CDB; dereferences to `&[u8]`.
#[derive(Clone)]
pub struct Cdb(Repr);

#[derive(Clone)]
enum Repr {
    Inline {
        bytes: [u8; CDB_INLINE_LEN],
        len: u8,
    },
    Heap(Box<[u8]>),
}

impl Cdb {
    /// A copy of `bytes`.
    pub fn from_slice(bytes: &[u8]) -> Self {
        Self::filled(bytes.len(), |dst| dst.copy_from_slice(bytes))
    }

    /// A CDB of `len` bytes written by `fill` (which may fail: the error is
    /// passed on).
    pub(crate) fn try_filled<E>(
        len: usize,
        fill: impl FnOnce(&mut [u8]) -> Result<(), E>,
    ) -> Result<Self, E> {
        if len <= CDB_INLINE_LEN {
            let mut bytes = [0u8; CDB_INLINE_LEN];
            fill(&mut bytes[..len])?;
            Ok(Self(Repr::Inline {
                bytes,
                len: len as u8,
            }))
        } else {
            let mut bytes = vec![0u8; len].into_boxed_slice();
            fill(&mut bytes)?;
            Ok(Self(Repr::Heap(bytes)))
        }
    }

    fn filled(len: usize, fill: impl FnOnce(&mut [u8])) -> Self {
        match Self::try_filled::<std::convert::Infallible>(len, |b| {
            fill(b);
            Ok(())
        }) {
            Ok(c) => c,
            Err(never) => match never {},
        }
    }

    /// The CDB's bytes.
    pub fn as_slice(&self) -> &[u8] {
        match &self.0 {
            Repr::Inline { bytes, len } => &bytes[..usize::from(*len)],
            Repr::Heap(b) => b,
        }
    }
}

impl Deref for Cdb {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl AsRef<[u8]> for Cdb {
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl fmt::Debug for Cdb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cdb({:02x?})", self.as_slice())
    }
}

impl PartialEq for Cdb {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for Cdb {}

impl PartialEq<[u8]> for Cdb {
    fn eq(&self, other: &[u8]) -> bool {
        self.as_slice() == other
    }
}

impl PartialEq<Vec<u8>> for Cdb {
    fn eq(&self, other: &Vec<u8>) -> bool {
        self.as_slice() == other.as_slice()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_cdbs_inline_long_ones_on_the_heap() {
        for len in [0, 6, 10, 16, 32, 33, 260] {
            let bytes: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let c = Cdb::from_slice(&bytes);
            assert_eq!(&*c, &bytes[..]);
            assert_eq!(c, bytes);
            assert_eq!(matches!(c.0, Repr::Inline { .. }), len <= CDB_INLINE_LEN);
        }
    }
}
