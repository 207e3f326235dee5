//! The errors of the handler API.
//!
//! - [`BlockError`]: a data-path operation failed; the runtime turns it
//!   into SCSI status and sense data.
//! - [`CompareError`]: a compare (COMPARE AND WRITE, VERIFY) found a
//!   difference, or the backend failed.
//! - [`HandlerError`]: a configuration string, an open or a
//!   reconfiguration was refused; the message reaches the user (D-Bus
//!   `CheckConfig`, the daemon's log, the refused `enable`).
//! - [`DeviceError`]: the runtime could not serve a device (the handler
//!   refused it, or its ring could not be opened).
//!
//! Every error says what went wrong in its own words and keeps its cause
//! as [`std::error::Error::source`], never both: print a whole chain with
//! [`Report`].

use std::error::Error;
use std::fmt;
use std::io;

use tcmu_scsi::Sense;

/// Why a handler operation failed; the runtime turns it into SCSI status.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BlockError {
    /// The backend's I/O failed: MEDIUM ERROR (read or write flavour).
    #[error("I/O error")]
    Io(#[from] io::Error),
    /// The backend's I/O failed at a known logical block: MEDIUM ERROR
    /// (read or write flavour) reporting `lba` in the INFORMATION field.
    #[error("I/O error at LBA {lba}")]
    IoAt {
        /// The first logical block that could not be read or written.
        lba: u64,
        /// What went wrong.
        #[source]
        source: io::Error,
    },
    /// The backend is temporarily unreachable: NOT READY (the initiator
    /// retries).
    #[error("backend not ready: {0}")]
    NotReady(String),
    /// The backend cannot take the command now but will soon (a cluster
    /// lock being taken, a connection being re-established): status BUSY,
    /// which initiators retry without counting it as an error (Linux's SCSI
    /// layer requeues it; tcmu-runner answers `TCMU_STS_BUSY` alike).
    #[error("backend busy: {0}")]
    Busy(String),
    /// The handler does not implement this operation. From an operation it
    /// declared (see [`HandlerBuilder`](crate::HandlerBuilder)) this
    /// withdraws the capability: the runtime stops advertising it and
    /// falls back to its generic implementation where there is one.
    #[error("operation not supported by this handler")]
    Unsupported,
    /// A specific SCSI answer.
    #[error("check condition: {0:?}")]
    Sense(Sense),
}

/// Why a compare-and-write or verify did not write.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CompareError {
    /// The data differ; the value is the byte offset of the first
    /// difference, counted from the start of the compared range.
    #[error("miscompare at byte {0}")]
    Miscompare(u64),
    /// The backend failed.
    #[error(transparent)]
    Block(#[from] BlockError),
}

/// Why a handler refused a configuration string, an open or a
/// reconfiguration. Its [`Report`] is what the user reads.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandlerError {
    /// The configuration string is not valid for this handler: a message,
    /// or the handler's own parse error (with its causes).
    #[error(transparent)]
    InvalidConfig(Box<dyn Error + Send + Sync + 'static>),
    /// The request is valid but cannot be honoured (a device larger than
    /// its image, a change a running device does not support).
    #[error("{0}")]
    Refused(String),
    /// A system call on the backend failed.
    #[error("{what}")]
    Io {
        /// What was being done (`cannot open /srv/disk.img`).
        what: String,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
    /// The backend's own library failed.
    #[error("{what}")]
    Backend {
        /// What was being done.
        what: String,
        /// Why it failed.
        #[source]
        source: Box<dyn Error + Send + Sync + 'static>,
    },
}

impl HandlerError {
    /// An invalid configuration string: a message (`&str`, `String`) or
    /// the handler's own parse error.
    pub fn invalid_config(why: impl Into<Box<dyn Error + Send + Sync + 'static>>) -> Self {
        Self::InvalidConfig(why.into())
    }

    /// A valid request that cannot be honoured, with the reason.
    pub fn refused(why: impl Into<String>) -> Self {
        Self::Refused(why.into())
    }

    /// A failed system call: `what` was being done, `source` is why.
    pub fn io(what: impl Into<String>, source: io::Error) -> Self {
        Self::Io {
            what: what.into(),
            source,
        }
    }

    /// A failure of the backend's library: `what` was being done, `source`
    /// is why.
    pub fn backend(
        what: impl Into<String>,
        source: impl Into<Box<dyn Error + Send + Sync + 'static>>,
    ) -> Self {
        Self::Backend {
            what: what.into(),
            source: source.into(),
        }
    }
}

/// Why a device could not be opened, served or reconfigured
/// ([`Workers::open`](crate::Workers::open),
/// [`DeviceHandle::reconfig`](crate::DeviceHandle::reconfig)).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeviceError {
    /// The handler refused it.
    #[error(transparent)]
    Handler(#[from] HandlerError),
    /// The device's configfs attributes could not be read.
    #[error("cannot read the device's configfs directory {path}")]
    Configfs {
        /// The directory.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: tcmu_core::configfs::ConfigfsError,
    },
    /// The device's UIO node could not be opened or mapped.
    #[error("cannot open {path}")]
    Ring {
        /// The UIO node.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The mapped memory is not a command ring this runtime speaks.
    #[error("bad command ring")]
    BadRing(#[source] tcmu_core::RingError),
    /// The worker thread the device was given to is gone.
    #[error("worker thread is gone")]
    WorkerGone,
    /// The device is not (or no longer) served.
    #[error("device is not running")]
    NotRunning,
}

/// Displays an error with its whole chain of causes, `outer: inner: …`:
/// what logs, D-Bus answers and netlink refusals print.
///
/// ```
/// use tcmu_runtime::{HandlerError, Report};
/// let e = HandlerError::io("cannot open /srv/a.img", std::io::ErrorKind::NotFound.into());
/// assert_eq!(Report(&e).to_string(), "cannot open /srv/a.img: entity not found");
/// ```
#[derive(Clone, Copy)]
pub struct Report<'a>(pub &'a (dyn Error + 'a));

impl fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(c) = cause {
            write!(f, ": {c}")?;
            cause = c.source();
        }
        Ok(())
    }
}

impl fmt::Debug for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_print_once() {
        let e = BlockError::from(io::Error::other("disk on fire"));
        assert_eq!(e.to_string(), "I/O error");
        assert_eq!(Report(&e).to_string(), "I/O error: disk on fire");
        let e = BlockError::IoAt {
            lba: 7,
            source: io::Error::other("bad sector"),
        };
        assert_eq!(Report(&e).to_string(), "I/O error at LBA 7: bad sector");
        let e = HandlerError::backend("cannot connect", io::Error::other("refused"));
        assert_eq!(Report(&e).to_string(), "cannot connect: refused");
        let e = CompareError::from(BlockError::from(io::Error::other("x")));
        assert_eq!(Report(&e).to_string(), "I/O error: x");
    }
}
