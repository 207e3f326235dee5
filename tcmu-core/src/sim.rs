//! An in-memory stand-in for the kernel's side of a TCMU device, for unit
//! tests of the ring code, the runtime and handlers (feature `sim`).
//!
//! [`SimKernel`] lays out a mailbox, command ring and data area in anonymous
//! shared memory exactly as `target_core_user` does, posts commands (with
//! PAD entries at the wrap, data blocks allocated lowest-free-first so
//! buffers fragment into several iovecs, the CDB after the iovecs, command
//! ids lowest-free-first from 1), and reaps completions slot by slot from
//! its last reaped position to `cmd_tail`, the way the kernel does. A
//! completion flagged `KEEP_BUF` keeps its id and data blocks until
//! [`SimKernel::free_kept_buf`], like the kernel's `action/free_kept_buf`. It never replaces the real kernel in
//! acceptance tests.

use std::collections::HashMap;
use std::io;
use std::mem::offset_of;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use rustix::event::{eventfd, EventfdFlags};

use crate::doorbell::Doorbell;
use crate::layout::{
    CmdRequest, CmdResponse, EntryHeader, Mailbox, RingIovec, TmrEntry, CMD_ENTRY_SIZE,
    MAILBOX_FLAG_CAP_KEEP_BUF, MAILBOX_FLAG_CAP_OOOC, MAILBOX_FLAG_CAP_READ_LEN,
    MAILBOX_FLAG_CAP_TMR, MAILBOX_VERSION, OP_ALIGN_SIZE, OP_CMD, OP_MASK, OP_PAD, OP_TMR,
    SENSE_BUFFER_SIZE, UFLAG_KEEP_BUF, UFLAG_READ_LEN, UFLAG_UNKNOWN_OP,
};
use crate::mmap::{Mapping, OutOfBounds};

/// Shape of the simulated device.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Bytes of mailbox plus command ring (the data area starts here).
    pub ring_bytes: u32,
    /// Size of one data block.
    pub block_size: usize,
    /// Number of data blocks.
    pub data_blocks: usize,
    /// Mailbox capability flags.
    pub flags: u16,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            ring_bytes: 64 * 1024,
            block_size: 4096,
            data_blocks: 256,
            flags: MAILBOX_FLAG_CAP_OOOC
                | MAILBOX_FLAG_CAP_READ_LEN
                | MAILBOX_FLAG_CAP_TMR
                | MAILBOX_FLAG_CAP_KEEP_BUF,
        }
    }
}

/// Why the simulator could not post or reap.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    /// Not enough ring space or data blocks (the kernel would queue it).
    #[error("ring or data area full")]
    Full,
    /// The daemon completed a command id that is not in flight.
    #[error("completion for unknown command id {0}")]
    UnknownId(u16),
    /// `free_kept_buf` for a command not completed with `KEEP_BUF`.
    #[error("command id {0} holds no kept buffer")]
    NotKept(u16),
    /// Every command id is in use.
    #[error("no free command id")]
    NoId,
    /// [`SimKernel::reap_at_least`] ran out of time.
    #[error("only {got} of {want} completions within the time limit")]
    TimedOut {
        /// Completions reaped.
        got: usize,
        /// Completions waited for.
        want: usize,
    },
    /// A malformed slot at the reap position.
    #[error("malformed completion slot at {0:#x}")]
    Corrupt(u32),
    /// Memory access failure.
    #[error(transparent)]
    Bounds(#[from] OutOfBounds),
    /// Doorbell failure.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Data a simulated command carries.
#[derive(Debug, Clone)]
pub enum SimData {
    /// No data phase.
    None,
    /// Data-out (initiator to device).
    Out(Vec<u8>),
    /// Data-in of this many bytes (device to initiator).
    In(usize),
}

/// A completion as the simulated kernel reaped it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimCompletion {
    /// Command id.
    pub cmd_id: u16,
    /// SCSI status.
    pub status: u8,
    /// The 96-byte sense buffer.
    pub sense: Vec<u8>,
    /// Data-in bytes (the whole buffer, or `read_len` bytes when flagged).
    pub data_in: Vec<u8>,
    /// `read_len` when the daemon set `UFLAG_READ_LEN`.
    pub read_len: Option<u32>,
    /// Whether the daemon set `UFLAG_UNKNOWN_OP`.
    pub unknown_op: bool,
    /// Whether the daemon set `UFLAG_KEEP_BUF` (and the mailbox offers it).
    pub keep_buf: bool,
}

#[derive(Debug)]
struct InFlight {
    blocks: Vec<usize>,
    data_in: usize,
}

/// The daemon's half of a simulated device.
#[derive(Debug)]
pub struct SimDevice {
    /// The shared ring memory.
    pub map: Arc<Mapping>,
    /// Doorbell wired to the simulator.
    pub doorbell: Doorbell,
}

/// The kernel's half of a simulated device.
#[derive(Debug)]
pub struct SimKernel {
    map: Arc<Mapping>,
    cfg: SimConfig,
    cmdr_off: u32,
    cmdr_size: u32,
    head: u32,
    last_cleaned: u32,
    free: Vec<bool>,
    inflight: HashMap<u16, InFlight>,
    /// Completed with `KEEP_BUF`: id and blocks held until freed.
    kept: HashMap<u16, InFlight>,
    wake: OwnedFd,
    kick: OwnedFd,
}

fn round_up(n: usize, to: usize) -> usize {
    n.div_ceil(to) * to
}

impl SimKernel {
    /// Creates a simulated device and returns both halves.
    pub fn new(cfg: SimConfig) -> io::Result<(Self, SimDevice)> {
        let cmdr_off = std::mem::size_of::<Mailbox>() as u32;
        let len = cfg.ring_bytes as usize + cfg.block_size * cfg.data_blocks;
        let map = Arc::new(Mapping::anonymous(len)?);
        let cmdr_size = cfg.ring_bytes - cmdr_off;
        let io_err = |e: OutOfBounds| io::Error::other(e.to_string());
        map.write_u16(offset_of!(Mailbox, version), MAILBOX_VERSION)
            .map_err(io_err)?;
        map.write_u16(offset_of!(Mailbox, flags), cfg.flags)
            .map_err(io_err)?;
        map.write_u32(offset_of!(Mailbox, cmdr_off), cmdr_off)
            .map_err(io_err)?;
        map.write_u32(offset_of!(Mailbox, cmdr_size), cmdr_size)
            .map_err(io_err)?;
        let flags = EventfdFlags::NONBLOCK | EventfdFlags::CLOEXEC;
        let wake = eventfd(0, flags)?;
        let kick = eventfd(0, flags)?;
        let device = SimDevice {
            map: map.clone(),
            doorbell: Doorbell::Sim {
                wake: wake.try_clone()?,
                kick: kick.try_clone()?,
            },
        };
        let kernel = Self {
            map,
            cmdr_off,
            cmdr_size,
            head: 0,
            last_cleaned: 0,
            free: vec![true; cfg.data_blocks],
            inflight: HashMap::new(),
            kept: HashMap::new(),
            wake,
            kick,
            cfg,
        };
        Ok((kernel, device))
    }

    /// Number of commands posted and not yet reaped.
    pub fn inflight(&self) -> usize {
        self.inflight.len()
    }

    /// Ids of the commands completed with `KEEP_BUF` and not yet freed.
    pub fn kept(&self) -> Vec<u16> {
        let mut ids: Vec<u16> = self.kept.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// Frees the data buffer of a command completed with `KEEP_BUF` (the
    /// kernel's `action/free_kept_buf`); its id becomes free again.
    pub fn free_kept_buf(&mut self, cmd_id: u16) -> Result<(), SimError> {
        let cmd = self.kept.remove(&cmd_id).ok_or(SimError::NotKept(cmd_id))?;
        for &b in &cmd.blocks {
            self.free[b] = true;
        }
        Ok(())
    }

    /// The lowest id neither in flight nor kept, as the kernel's
    /// `xa_alloc` in 1..=0xffff picks it.
    fn free_id(&self) -> Option<u16> {
        (1..=u16::MAX).find(|id| !self.inflight.contains_key(id) && !self.kept.contains_key(id))
    }

    /// Current `cmd_head`.
    pub fn head(&self) -> u32 {
        self.head
    }

    fn ring_free(&self) -> u32 {
        let used = (self.head + self.cmdr_size - self.last_cleaned) % self.cmdr_size;
        self.cmdr_size - used - 1
    }

    fn data_off(&self) -> usize {
        self.cfg.ring_bytes as usize
    }

    fn alloc_blocks(&mut self, n: usize) -> Option<Vec<usize>> {
        let free: Vec<usize> = self
            .free
            .iter()
            .enumerate()
            .filter(|(_, f)| **f)
            .map(|(i, _)| i)
            .take(n)
            .collect();
        if free.len() < n {
            return None;
        }
        for &b in &free {
            self.free[b] = false;
        }
        Some(free)
    }

    /// Turns a list of blocks into iovecs (offset, len), merging neighbours.
    fn iovecs(&self, blocks: &[usize], mut len: usize) -> Vec<(u64, u64)> {
        let mut out: Vec<(u64, u64)> = Vec::new();
        let mut prev: Option<usize> = None;
        for &b in blocks {
            let chunk = len.min(self.cfg.block_size);
            len -= chunk;
            match (prev, out.last_mut()) {
                (Some(p), Some(last)) if p + 1 == b => last.1 += chunk as u64,
                _ => out.push((
                    (self.data_off() + b * self.cfg.block_size) as u64,
                    chunk as u64,
                )),
            }
            prev = Some(b);
        }
        out
    }

    /// Reserves `size` bytes at the head, inserting a PAD entry when the
    /// entry would run past the end of the ring; returns the entry's
    /// ring-relative position.
    fn reserve(&mut self, size: u32) -> Result<u32, SimError> {
        if self.head + size > self.cmdr_size {
            let pad = self.cmdr_size - self.head;
            if self.ring_free() < pad + size {
                return Err(SimError::Full);
            }
            let off = (self.cmdr_off + self.head) as usize;
            self.map.write_u32(off, pad | u32::from(OP_PAD))?;
            self.map.write_u16(off + 4, 0)?;
            self.map.write(off + 6, &[0, 0])?;
            self.head = 0;
        } else if self.ring_free() < size {
            return Err(SimError::Full);
        }
        Ok(self.head)
    }

    fn publish_head(&mut self, pos: u32, size: u32) -> Result<(), SimError> {
        self.head = (pos + size) % self.cmdr_size;
        self.map
            .store_u32_release(offset_of!(Mailbox, cmd_head), self.head)?;
        Ok(())
    }

    /// Posts a SCSI command; returns its command id. Ring the doorbell with
    /// [`notify`](Self::notify) to wake the daemon.
    pub fn post(&mut self, cdb: &[u8], data: SimData) -> Result<u16, SimError> {
        self.post_op(OP_CMD, cdb, data)
    }

    /// Posts an entry with an arbitrary opcode (to test unknown ones).
    pub fn post_op(&mut self, op: u8, cdb: &[u8], data: SimData) -> Result<u16, SimError> {
        let data_len = match &data {
            SimData::None => 0,
            SimData::Out(v) => v.len(),
            SimData::In(n) => *n,
        };
        let nblocks = data_len.div_ceil(self.cfg.block_size);
        let blocks = self.alloc_blocks(nblocks).ok_or(SimError::Full)?;
        let iovs = self.iovecs(&blocks, data_len);
        let base = round_up(
            (std::mem::size_of::<CmdRequest>() + iovs.len() * std::mem::size_of::<RingIovec>())
                .max(CMD_ENTRY_SIZE),
            OP_ALIGN_SIZE as usize,
        );
        let size = round_up(base + cdb.len(), OP_ALIGN_SIZE as usize) as u32;
        let pos = match self.reserve(size) {
            Ok(p) => p,
            Err(e) => {
                for &b in &blocks {
                    self.free[b] = true;
                }
                return Err(e);
            }
        };
        let Some(id) = self.free_id() else {
            for &b in &blocks {
                self.free[b] = true;
            }
            return Err(SimError::NoId);
        };
        let off = (self.cmdr_off + pos) as usize;
        self.map.fill(off, size as usize, 0)?;
        self.map
            .write_u32(off, size | u32::from(op & OP_MASK as u8))?;
        self.map
            .write_u16(off + offset_of!(EntryHeader, cmd_id), id)?;
        self.map
            .write_u32(off + offset_of!(CmdRequest, iov_cnt), iovs.len() as u32)?;
        let cdb_off = off + base;
        self.map
            .write_u64(off + offset_of!(CmdRequest, cdb_off), cdb_off as u64)?;
        for (i, (b, l)) in iovs.iter().enumerate() {
            let at = off + std::mem::size_of::<CmdRequest>() + i * std::mem::size_of::<RingIovec>();
            self.map.write_u64(at, *b)?;
            self.map.write_u64(at + 8, *l)?;
        }
        self.map.write(cdb_off, cdb)?;
        let mut data_in = 0;
        match &data {
            SimData::Out(v) => {
                let mut done = 0;
                for (b, l) in &iovs {
                    let l = *l as usize;
                    self.map.write(*b as usize, &v[done..done + l])?;
                    done += l;
                }
            }
            SimData::In(n) => {
                data_in = *n;
                // Stale bytes, to catch answers that fail to overwrite them.
                for (b, l) in &iovs {
                    self.map.fill(*b as usize, *l as usize, 0xa5)?;
                }
            }
            SimData::None => {}
        }
        self.inflight.insert(id, InFlight { blocks, data_in });
        self.publish_head(pos, size)?;
        Ok(id)
    }

    /// Posts a TMR notification naming `ids`.
    pub fn post_tmr(&mut self, tmr_type: u8, ids: &[u16]) -> Result<(), SimError> {
        let size = round_up(
            std::mem::size_of::<TmrEntry>() + 2 * ids.len(),
            OP_ALIGN_SIZE as usize,
        ) as u32;
        let pos = self.reserve(size)?;
        let off = (self.cmdr_off + pos) as usize;
        self.map.fill(off, size as usize, 0)?;
        self.map.write_u32(off, size | u32::from(OP_TMR))?;
        self.map
            .write(off + offset_of!(TmrEntry, tmr_type), &[tmr_type])?;
        self.map
            .write_u32(off + offset_of!(TmrEntry, cmd_cnt), ids.len() as u32)?;
        for (i, id) in ids.iter().enumerate() {
            self.map
                .write_u16(off + std::mem::size_of::<TmrEntry>() + 2 * i, *id)?;
        }
        self.publish_head(pos, size)
    }

    /// Wakes the daemon (the kernel's `uio_event_notify`).
    pub fn notify(&self) -> Result<(), SimError> {
        rustix::io::write(&self.wake, &1u64.to_ne_bytes()).map_err(io::Error::from)?;
        Ok(())
    }

    /// Whether the daemon rang the doorbell since the last call.
    pub fn take_kick(&self) -> bool {
        let mut b = [0u8; 8];
        rustix::io::read(&self.kick, &mut b).is_ok()
    }

    /// Reaps until at least `n` completions have come (polling every
    /// millisecond), in the order reaped; fails after `limit`.
    pub fn reap_at_least(
        &mut self,
        n: usize,
        limit: std::time::Duration,
    ) -> Result<Vec<SimCompletion>, SimError> {
        let deadline = std::time::Instant::now() + limit;
        let mut out = self.reap()?;
        while out.len() < n {
            if std::time::Instant::now() >= deadline {
                return Err(SimError::TimedOut {
                    got: out.len(),
                    want: n,
                });
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
            out.extend(self.reap()?);
        }
        Ok(out)
    }

    /// Reaps every completion the daemon published, in slot order.
    pub fn reap(&mut self) -> Result<Vec<SimCompletion>, SimError> {
        let tail = self.map.load_u32_acquire(offset_of!(Mailbox, cmd_tail))?;
        let mut out = Vec::new();
        while self.last_cleaned != tail {
            let pos = self.last_cleaned;
            let off = (self.cmdr_off + pos) as usize;
            let len_op = self.map.read_u32(off)?;
            let len = len_op & !OP_MASK;
            if len == 0 || pos + len > self.cmdr_size {
                return Err(SimError::Corrupt(pos));
            }
            let op = (len_op & OP_MASK) as u8;
            self.last_cleaned = (pos + len) % self.cmdr_size;
            if op == OP_PAD || op == OP_TMR {
                continue;
            }
            let id = self.map.read_u16(off + offset_of!(EntryHeader, cmd_id))?;
            let mut uflags = [0u8];
            self.map
                .read(off + offset_of!(EntryHeader, uflags), &mut uflags)?;
            let cmd = self.inflight.remove(&id).ok_or(SimError::UnknownId(id))?;
            let mut status = [0u8];
            self.map
                .read(off + offset_of!(CmdResponse, scsi_status), &mut status)?;
            let read_len = if uflags[0] & UFLAG_READ_LEN != 0 {
                Some(self.map.read_u32(off + offset_of!(CmdResponse, read_len))?)
            } else {
                None
            };
            let mut sense = vec![0u8; SENSE_BUFFER_SIZE];
            self.map
                .read(off + offset_of!(CmdResponse, sense), &mut sense)?;
            let want = read_len.map_or(cmd.data_in, |r| (r as usize).min(cmd.data_in));
            let mut data_in = vec![0u8; want];
            let mut done = 0;
            for (b, l) in self.iovecs(&cmd.blocks, cmd.data_in) {
                if done >= want {
                    break;
                }
                let n = (l as usize).min(want - done);
                self.map.read(b as usize, &mut data_in[done..done + n])?;
                done += n;
            }
            let keep_buf =
                uflags[0] & UFLAG_KEEP_BUF != 0 && self.cfg.flags & MAILBOX_FLAG_CAP_KEEP_BUF != 0;
            if !keep_buf {
                for &b in &cmd.blocks {
                    self.free[b] = true;
                }
            }
            out.push(SimCompletion {
                cmd_id: id,
                status: status[0],
                sense,
                data_in,
                read_len,
                unknown_op: uflags[0] & UFLAG_UNKNOWN_OP != 0,
                keep_buf,
            });
            if keep_buf {
                self.kept.insert(id, cmd);
            }
        }
        Ok(out)
    }
}
