//! [`Error`]: libgfapi is missing, or one of its calls failed.

use std::io;

/// Why a libgfapi call could not be made or failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// libgfapi could not be loaded (not installed, or too old).
    #[error(
        "libgfapi is not available ({why}): install Debian's libgfapi0 package \
         (GlusterFS 6 or later) to serve glfs devices"
    )]
    Missing {
        /// What the dynamic loader said.
        why: String,
    },
    /// A call failed: what was being done, and the error number.
    #[error("{what}")]
    Call {
        /// What was being done (`glfs_init of volume vol0 at host1`).
        what: String,
        /// The error number libgfapi set.
        #[source]
        source: io::Error,
    },
}

impl Error {
    /// `what` failed with the (positive) error number `errno`; 0 becomes
    /// `EIO` (libgfapi does not always set `errno`).
    pub fn from_errno(what: impl Into<String>, errno: i32) -> Self {
        let errno = if errno > 0 { errno } else { libc::EIO };
        Self::Call {
            what: what.into(),
            source: io::Error::from_raw_os_error(errno),
        }
    }

    /// `what` failed with the calling thread's `errno`.
    pub(crate) fn last(what: impl Into<String>) -> Self {
        Self::from_errno(what, io::Error::last_os_error().raw_os_error().unwrap_or(0))
    }

    /// The error number (positive): `ENOSYS` for a missing library.
    pub fn errno(&self) -> i32 {
        match self {
            Self::Missing { .. } => libc::ENOSYS,
            Self::Call { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
        }
    }
}

impl Clone for Error {
    fn clone(&self) -> Self {
        match self {
            Self::Missing { why } => Self::Missing { why: why.clone() },
            Self::Call { what, .. } => Self::from_errno(what.clone(), self.errno()),
        }
    }
}
