//! One TCMU device for an embedder: its doorbell, its ring memory and its
//! command ring in one object.
//!
//! [`Device::open`] opens `/dev/uioN`, maps map0 and checks the mailbox.
//! Then, whenever its descriptor ([`AsFd`]) is readable:
//!
//! 1. [`ack`](Device::ack) the doorbell;
//! 2. take every [`next_entry`](Device::next_entry): a command
//!    ([`Entry::Cmd`]) is executed and completed, an entry of an unknown
//!    opcode or a malformed one is completed at once, a TMR notification
//!    needs no completion;
//! 3. complete commands — in any order, now or later — with
//!    [`complete_with_data`](Device::complete_with_data) (an answer made in
//!    memory), [`complete_filled`](Device::complete_filled) (buffers filled
//!    in place) or [`complete`](Device::complete) (a [`Completion`] built
//!    by hand, for commands without data-in);
//! 4. [`publish`](Device::publish) the batch, which also rings the kernel's
//!    doorbell.
//!
//! The first two completion functions apply the rules of [`crate::reply`]
//! (no stale bytes reach the initiator) and take the command by value, so
//! its buffers are gone before the kernel gets the memory back.
//!
//! The runtime uses the lower pieces ([`Doorbell`], [`Mapping`],
//! [`CommandRing`]) directly; this type is their composition for a
//! program with its own event loop.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::path::PathBuf;
use std::sync::Arc;

use crate::doorbell::Doorbell;
use crate::mmap::Mapping;
use crate::reply;
use crate::ring::{CmdEntry, CommandRing, Completion, Entry, RingError};
use crate::uio::UioDevice;

/// Why a device could not be opened or served.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeviceError {
    /// `/dev/uioN` could not be opened or mapped.
    #[error("cannot {op} {}: {source}", .path.display())]
    Open {
        /// `open` or `map`.
        op: &'static str,
        /// The device node.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The map size sysfs reports does not fit this machine's address
    /// space.
    #[error("map0 of {size:#x} bytes is too large to map")]
    TooLarge {
        /// The size reported.
        size: u64,
    },
    /// The ring is not as the ABI says.
    #[error(transparent)]
    Ring(#[from] RingError),
    /// Ringing the kernel's doorbell failed.
    #[error("cannot ring the doorbell: {0}")]
    Kick(#[source] io::Error),
}

/// A TCMU device's data path (see the [module documentation](self)).
#[derive(Debug)]
pub struct Device {
    doorbell: Doorbell,
    ring: CommandRing,
}

impl Device {
    /// Opens `/dev/uioN` of `uio` (read-write, non-blocking), maps its
    /// map0 and reads the mailbox.
    pub fn open(uio: &UioDevice) -> Result<Self, DeviceError> {
        let path = uio.dev_path();
        let size = usize::try_from(uio.map_size)
            .map_err(|_| DeviceError::TooLarge { size: uio.map_size })?;
        let err = |op| {
            let path = path.clone();
            move |source| DeviceError::Open { op, path, source }
        };
        let doorbell = Doorbell::open_uio(&path).map_err(err("open"))?;
        let map = Mapping::map_shared(doorbell.fd(), size).map_err(err("map"))?;
        Self::from_parts(Arc::new(map), doorbell)
    }

    /// A device over memory and a doorbell obtained otherwise (the
    /// simulator's, with feature `sim`).
    pub fn from_parts(map: Arc<Mapping>, doorbell: Doorbell) -> Result<Self, DeviceError> {
        Ok(Self {
            ring: CommandRing::new(map)?,
            doorbell,
        })
    }

    /// Consumes a pending wake-up; `false` when there was none. Call it
    /// before draining the ring, so a wake-up that arrives while draining
    /// is not lost.
    pub fn ack(&self) -> io::Result<bool> {
        self.doorbell.ack()
    }

    /// The next entry the kernel posted, or `None` once the ring is
    /// drained.
    pub fn next_entry(&mut self) -> Result<Option<Entry>, RingError> {
        self.ring.next_entry()
    }

    /// Completes command `cmd_id` with `c` as given (visible to the kernel
    /// after [`publish`](Self::publish)). For a command with data-in
    /// buffers prefer [`complete_with_data`](Self::complete_with_data) or
    /// [`complete_filled`](Self::complete_filled), which apply the
    /// completion rules.
    pub fn complete(&mut self, cmd_id: u16, c: &Completion) -> Result<(), RingError> {
        self.ring.complete(cmd_id, c)
    }

    /// Completes `cmd` with an answer made in memory, by
    /// [`reply::with_data`]: `data` copied into its buffers, the rest
    /// zeroed, `read_len` when shorter. `sense` is sent with a CHECK
    /// CONDITION `status`.
    pub fn complete_with_data(
        &mut self,
        mut cmd: CmdEntry,
        status: u8,
        sense: &[u8],
        data: &[u8],
    ) -> Result<(), RingError> {
        let c = reply::with_data(&mut cmd.data, status, sense, data);
        self.finish(cmd, &c)
    }

    /// Completes `cmd` whose buffers were filled in place, by
    /// [`reply::filled`]: with `Some(n)`, zeroed past `n` bytes and
    /// `read_len` n.
    pub fn complete_filled(
        &mut self,
        mut cmd: CmdEntry,
        status: u8,
        sense: &[u8],
        filled: Option<u32>,
    ) -> Result<(), RingError> {
        let c = reply::filled(&mut cmd.data, status, sense, filled);
        self.finish(cmd, &c)
    }

    /// Drops `cmd`'s buffers (giving the list back to the ring) and
    /// completes it.
    fn finish(&mut self, cmd: CmdEntry, c: &Completion) -> Result<(), RingError> {
        let CmdEntry {
            cmd_id, data, bidi, ..
        } = cmd;
        drop(bidi);
        self.ring.recycle(data);
        self.ring.complete(cmd_id, c)
    }

    /// Makes the completions written so far visible to the kernel and
    /// rings its doorbell.
    pub fn publish(&mut self) -> Result<(), DeviceError> {
        self.ring.publish()?;
        self.doorbell.kick().map_err(DeviceError::Kick)
    }

    /// The command ring, for what this type does not wrap (capabilities,
    /// buffers in use, a resync after a ring reset).
    pub fn ring(&self) -> &CommandRing {
        &self.ring
    }

    /// The command ring, mutably.
    pub fn ring_mut(&mut self) -> &mut CommandRing {
        &mut self.ring
    }

    /// The doorbell.
    pub fn doorbell(&self) -> &Doorbell {
        &self.doorbell
    }
}

impl AsFd for Device {
    /// The doorbell: readable when the kernel posted entries.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.doorbell.fd()
    }
}

impl AsRawFd for Device {
    fn as_raw_fd(&self) -> RawFd {
        self.doorbell.fd().as_raw_fd()
    }
}

#[cfg(all(test, feature = "sim"))]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::sim::{SimConfig, SimData, SimKernel};

    #[test]
    fn serves_a_simulated_device() {
        let (mut k, dev) = SimKernel::new(SimConfig::default()).unwrap();
        let mut d = Device::from_parts(dev.map, dev.doorbell).unwrap();
        // A READ(10) of one 4 KiB block, an INQUIRY with 255 bytes of room.
        let read = k
            .post(&[0x28, 0, 0, 0, 0, 0, 0, 0, 8, 0], SimData::In(4096))
            .unwrap();
        let inquiry = k.post(&[0x12, 0, 0, 0, 255, 0], SimData::In(255)).unwrap();
        k.notify().unwrap();
        assert!(d.ack().unwrap());
        let mut cmds = Vec::new();
        while let Some(e) = d.next_entry().unwrap() {
            let Entry::Cmd(c) = e else { panic!("{e:?}") };
            cmds.push(c);
        }
        assert!(!d.ack().unwrap(), "the wake-up was consumed");
        let c = cmds.remove(0);
        assert_eq!(c.cmd_id, read);
        d.complete_with_data(c, reply::GOOD, &[], &[0xab; 4096])
            .unwrap();
        let c = cmds.remove(0);
        d.complete_with_data(c, reply::GOOD, &[], &[1, 2, 3])
            .unwrap();
        d.publish().unwrap();
        assert!(k.take_kick());
        let done = k.reap().unwrap();
        assert_eq!(done[0].data_in, vec![0xab; 4096]);
        assert_eq!(done[0].read_len, None);
        assert_eq!(done[1].cmd_id, inquiry);
        assert_eq!(done[1].read_len, Some(3));
        assert_eq!(done[1].data_in, [1, 2, 3]);
        assert!(!d.ring().buffers_in_use(read));
    }
}
