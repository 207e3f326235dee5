//! The doorbell between the kernel and the daemon.
//!
//! For a real device it is the `/dev/uioN` file: it becomes readable when the
//! kernel posts entries (reading returns a 4-byte event count), and writing
//! any 4 bytes tells the kernel to reap completions. For the simulator
//! (feature `sim`) it is a pair of eventfds with the same meaning.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::Path;

use rustix::fs::{Mode, OFlags};

/// How the kernel and the daemon wake each other.
#[derive(Debug)]
#[non_exhaustive]
pub enum Doorbell {
    /// A real TCMU device: the opened `/dev/uioN`.
    Uio(OwnedFd),
    /// The simulator: `wake` is signalled by the simulated kernel, `kick` by
    /// the daemon.
    #[cfg(feature = "sim")]
    Sim {
        /// Readable when the simulated kernel posted entries.
        wake: OwnedFd,
        /// Written by the daemon after publishing completions.
        kick: OwnedFd,
    },
}

fn would_block(e: &rustix::io::Errno) -> bool {
    *e == rustix::io::Errno::AGAIN || *e == rustix::io::Errno::WOULDBLOCK
}

impl Doorbell {
    /// Opens `/dev/uioN` read-write and non-blocking.
    pub fn open_uio(path: &Path) -> io::Result<Self> {
        let fd = rustix::fs::open(
            path,
            OFlags::RDWR | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Self::Uio(fd))
    }

    /// The descriptor to wait on for readability, and (for UIO) to mmap.
    pub fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Self::Uio(fd) => fd.as_fd(),
            #[cfg(feature = "sim")]
            Self::Sim { wake, .. } => wake.as_fd(),
        }
    }

    /// Consumes a pending wake-up; returns `false` when there was none.
    pub fn ack(&self) -> io::Result<bool> {
        let mut buf = [0u8; 8];
        let (fd, len) = match self {
            Self::Uio(fd) => (fd, 4),
            #[cfg(feature = "sim")]
            Self::Sim { wake, .. } => (wake, 8),
        };
        match rustix::io::read(fd, &mut buf[..len]) {
            Ok(_) => Ok(true),
            Err(e) if would_block(&e) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Tells the kernel that completions were published.
    pub fn kick(&self) -> io::Result<()> {
        let res = match self {
            Self::Uio(fd) => rustix::io::write(fd, &1u32.to_ne_bytes()),
            #[cfg(feature = "sim")]
            Self::Sim { kick, .. } => rustix::io::write(kick, &1u64.to_ne_bytes()),
        };
        match res {
            Ok(_) => Ok(()),
            // An eventfd counter at its maximum still means "kicked".
            Err(e) if would_block(&e) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

impl AsFd for Doorbell {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd()
    }
}

impl AsRawFd for Doorbell {
    fn as_raw_fd(&self) -> RawFd {
        self.fd().as_raw_fd()
    }
}
