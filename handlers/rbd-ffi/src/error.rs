//! [`Error`]: a librados or librbd call failed.

use std::io;

/// A librados or librbd call failed: what was being done, and the error
/// number the library returned (as an [`io::Error`] cause).
#[derive(Debug, thiserror::Error)]
#[error("{what}")]
pub struct Error {
    what: String,
    #[source]
    source: io::Error,
}

impl Error {
    /// `what` failed with the negative error number `ret` (librados and
    /// librbd return `-errno`).
    pub fn from_ret(what: impl Into<String>, ret: i64) -> Self {
        let errno = i32::try_from(ret.unsigned_abs()).unwrap_or(libc::EIO);
        Self {
            what: what.into(),
            source: io::Error::from_raw_os_error(errno),
        }
    }

    /// `what` failed for a reason of this crate's own (an argument the C
    /// API cannot take, such as a string with a NUL byte).
    pub fn invalid(what: impl Into<String>) -> Self {
        Self {
            what: what.into(),
            source: io::Error::from_raw_os_error(libc::EINVAL),
        }
    }

    /// The error number (positive), e.g. `libc::ENOENT`.
    pub fn errno(&self) -> i32 {
        self.source.raw_os_error().unwrap_or(libc::EIO)
    }
}

/// `Ok(ret)` for a non-negative return value, the error for a negative one.
pub(crate) fn check(what: impl FnOnce() -> String, ret: i64) -> Result<i64, Error> {
    if ret < 0 {
        Err(Error::from_ret(what(), ret))
    } else {
        Ok(ret)
    }
}

impl Clone for Error {
    fn clone(&self) -> Self {
        Self {
            what: self.what.clone(),
            source: io::Error::from_raw_os_error(self.errno()),
        }
    }
}
