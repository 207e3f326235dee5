//! Walking the command ring: reading posted entries and writing completions.
//!
//! The kernel appends entries at `cmd_head`; the daemon reads them from its
//! own position ([`CommandRing::next_entry`]) and writes completions at
//! `cmd_tail` ([`CommandRing::complete`], [`CommandRing::publish`]).
//!
//! Completions may come in any order (`CAP_OOOC`): a completion is written
//! into the slot at the tail, whatever command that slot first carried,
//! relabelled with the completed command's id. The kernel reads completions
//! slot by slot, skipping PAD and TMR entries, so this works as long as every
//! slot the tail passes has already been read — which holds because the
//! tail never passes the read position.
//!
//! Everything an entry says is copied out of shared memory and validated
//! (lengths, alignment, iovecs inside the data area, CDB inside the entry)
//! before use; a malformed entry is a [`RingError`], never a panic.
//!
//! The ring is also what keeps [`DataBuf`]s from aliasing (see
//! [`crate::buf`]): a command whose iovecs overlap each other, or overlap a
//! buffer of an earlier command that is still alive, is handed out as
//! [`Entry::Invalid`], never as buffers. The kernel never lends the same
//! bytes twice, so this costs a well-behaved ring nothing but the check;
//! it holds whatever is written into the memory. Only one `CommandRing`
//! at a time reads a [`Mapping`] (its buffers included).

use std::mem::offset_of;
use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;

use crate::buf::{BufLease, DataBuf};
use crate::cdb::Cdb;
use crate::layout::{
    CmdRequest, CmdResponse, EntryHeader, Mailbox, RingIovec, TmrEntry, CMD_ENTRY_SIZE,
    MAILBOX_VERSION, OP_ALIGN_SIZE, OP_CMD, OP_MASK, OP_PAD, OP_TMR, SENSE_BUFFER_SIZE,
    UFLAG_KEEP_BUF, UFLAG_READ_LEN, UFLAG_UNKNOWN_OP,
};
use crate::mmap::{Mapping, OutOfBounds, RingClaim};

/// Something in the ring is not as the ABI says.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RingError {
    /// The mailbox has a version this crate does not speak.
    #[error("unsupported mailbox version {0} (expected {MAILBOX_VERSION})")]
    Version(u16),
    /// The mailbox describes a ring that does not fit the mapping.
    #[error(
        "mailbox describes a ring at {off:#x}+{size:#x} outside the {map_len:#x}-byte mapping"
    )]
    Geometry {
        /// `cmdr_off`.
        off: u32,
        /// `cmdr_size`.
        size: u32,
        /// Size of the mapping.
        map_len: usize,
    },
    /// An entry at `pos` is malformed.
    #[error("malformed ring entry at {pos:#x}: {why}")]
    Corrupt {
        /// Ring-relative position of the entry.
        pos: u32,
        /// What is wrong with it.
        why: &'static str,
    },
    /// More completions than read commands.
    #[error("no read command slot left to complete into")]
    NoSlot,
    /// Another [`CommandRing`] (or buffers it handed out) still uses the
    /// mapping.
    #[error("the mapping is already read by another command ring")]
    InUse,
    /// An access outside the mapping.
    #[error(transparent)]
    Bounds(#[from] OutOfBounds),
}

/// A SCSI command read from the ring, with everything copied out.
#[derive(Debug)]
pub struct CmdEntry {
    /// Kernel command id, echoed in the completion.
    pub cmd_id: u16,
    /// The CDB bytes (6 to 260 bytes).
    pub cdb: Cdb,
    /// Data buffers: data-out to read from, or data-in to fill.
    pub data: Vec<DataBuf>,
    /// Data-in buffers of a bidirectional command.
    pub bidi: Vec<DataBuf>,
}

/// A task management notification (needs `attrib/tmr_notification=1`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TmrNotice {
    /// One of [`crate::layout::tmr`].
    pub tmr_type: u8,
    /// Ids of the commands the TMR aborts.
    pub cmd_ids: Vec<u16>,
}

/// One entry read from the ring.
#[derive(Debug)]
#[non_exhaustive]
pub enum Entry {
    /// A SCSI command to execute and complete.
    Cmd(CmdEntry),
    /// A TMR notification (needs no completion).
    Tmr(TmrNotice),
    /// An entry with an opcode this daemon does not know; it must be
    /// completed with [`Completion::unknown_op`].
    Unknown {
        /// Command id from the header.
        cmd_id: u16,
        /// The unknown opcode.
        op: u8,
    },
    /// A command entry whose header is sound but whose iovecs or CDB lie
    /// outside the data area or the entry: nothing it points at is
    /// followed; it must be failed (completed with an error) by its id.
    Invalid {
        /// Command id from the header.
        cmd_id: u16,
        /// What is wrong with it.
        why: &'static str,
    },
}

/// What to write back for one command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    /// SCSI status byte.
    pub status: u8,
    /// Sense bytes (at most 96 are written).
    pub sense: Vec<u8>,
    /// Data-in bytes actually produced, when fewer than the buffers hold.
    pub read_len: Option<u32>,
    /// Whether to flag the entry as not understood.
    pub unknown_op: bool,
    /// Whether the kernel must keep the command's data buffer after this
    /// completion (`UFLAG_KEEP_BUF`, only where the kernel offers
    /// `CAP_KEEP_BUF`) until the daemon frees it (`action/free_kept_buf`).
    pub keep_buf: bool,
}

impl Completion {
    /// GOOD status, no sense.
    pub fn good() -> Self {
        Self::status(0)
    }

    /// A status with no sense data.
    pub fn status(status: u8) -> Self {
        Self {
            status,
            sense: Vec::new(),
            read_len: None,
            unknown_op: false,
            keep_buf: false,
        }
    }

    /// CHECK CONDITION with the given sense bytes.
    pub fn check_condition(sense: &[u8]) -> Self {
        Self {
            status: 2,
            sense: sense.to_vec(),
            read_len: None,
            unknown_op: false,
            keep_buf: false,
        }
    }

    /// The answer to an entry with an unknown opcode.
    pub fn unknown_op() -> Self {
        Self {
            unknown_op: true,
            ..Self::good()
        }
    }

    /// Asks the kernel to keep the data buffer (see [`Completion::keep_buf`]).
    pub fn keeping_buffer(mut self) -> Self {
        self.keep_buf = true;
        self
    }

    /// Sets the number of data-in bytes produced.
    pub fn with_read_len(mut self, len: u32) -> Self {
        self.read_len = Some(len);
        self
    }
}

const MB_FLAGS: usize = offset_of!(Mailbox, flags);
const MB_HEAD: usize = offset_of!(Mailbox, cmd_head);
const MB_TAIL: usize = offset_of!(Mailbox, cmd_tail);

/// Length of a CDB, from its opcode (and, for variable-length CDBs, its
/// additional-length byte), as SAM defines the opcode groups.
pub fn cdb_len(opcode: u8, byte7: u8) -> usize {
    match opcode >> 5 {
        0 => 6,
        1 | 2 => 10,
        3 if opcode == 0x7f => 8 + usize::from(byte7),
        4 => 16,
        5 => 12,
        _ => 10,
    }
}

/// The daemon's view of one device's command ring.
#[derive(Debug)]
pub struct CommandRing {
    map: Arc<Mapping>,
    cmdr_off: usize,
    cmdr_size: u32,
    flags: u16,
    /// Ring-relative position of the next entry to read.
    next: u32,
    /// Ring-relative position of the next completion slot.
    tail: u32,
    /// Start of the data area (end of the command ring).
    data_start: usize,
    /// What the ring remembers per command id (the kernel hands out the
    /// lowest free ids, so this stays as long as the deepest queue seen).
    ids: Vec<Option<IdSlot>>,
    /// Commands whose buffers may still be alive (see [`Listed`]).
    live: Vec<Listed>,
    /// The iovecs of the command being read, `(start, len)` in entry order.
    iovecs: Vec<(usize, usize)>,
    /// The same as `[start, end)` ranges, sorted (empty ones left out).
    sorted: Vec<(usize, usize)>,
    /// This ring's hold on the mapping, shared by every lease.
    claim: Arc<RingClaim>,
    /// Emptied buffer lists given back with [`recycle`](Self::recycle), to
    /// hold the next commands' buffers without allocating.
    spare_lists: Vec<Vec<DataBuf>>,
}

/// What the ring remembers about one command id.
#[derive(Debug)]
struct IdSlot {
    /// Held by every buffer of the id's latest command.
    lease: Arc<BufLease>,
    /// The data-area ranges `[start, end)` of those buffers, sorted.
    ranges: Vec<(usize, usize)>,
    /// Counts the id's commands, so that an entry of [`CommandRing::live`]
    /// about an earlier one is told apart.
    generation: u32,
}

/// A command in [`CommandRing::live`]: its id and generation, and the
/// bounds `[lo, hi)` of its ranges, which let the overlap check pass over
/// it with two comparisons when a new command's ranges lie elsewhere.
#[derive(Debug, Clone, Copy)]
struct Listed {
    id: u16,
    generation: u32,
    lo: usize,
    hi: usize,
}

impl IdSlot {
    fn in_use(&self) -> bool {
        Arc::strong_count(&self.lease) > 1
    }
}

/// Most buffer lists [`CommandRing::recycle`] keeps (a deep queue's worth).
const SPARE_LISTS: usize = 256;

/// Longest buffer list worth keeping: most commands have a few buffers, and
/// a rare huge list should not stay allocated.
const SPARE_LIST_CAPACITY: usize = 64;

impl CommandRing {
    /// Validates the mailbox of `map` and starts reading at its `cmd_tail`
    /// (after a ring reset, both indexes are 0). Fails with
    /// [`RingError::InUse`] while another ring, or a buffer one handed out,
    /// uses the mapping.
    pub fn new(map: Arc<Mapping>) -> Result<Self, RingError> {
        let claim = RingClaim::new(&map).ok_or(RingError::InUse)?;
        let version = map.read_u16(offset_of!(Mailbox, version))?;
        if version != MAILBOX_VERSION {
            return Err(RingError::Version(version));
        }
        let off = map.read_u32(offset_of!(Mailbox, cmdr_off))?;
        let size = map.read_u32(offset_of!(Mailbox, cmdr_size))?;
        let geometry = RingError::Geometry {
            off,
            size,
            map_len: map.len(),
        };
        let end = (off as usize).checked_add(size as usize);
        if size < 64
            || size % OP_ALIGN_SIZE != 0
            || (off as usize) < std::mem::size_of::<Mailbox>()
            || end.is_none_or(|e| e > map.len())
        {
            return Err(geometry);
        }
        let flags = map.read_u16(MB_FLAGS)?;
        let tail = map.load_u32_acquire(MB_TAIL)?;
        if tail >= size || tail % OP_ALIGN_SIZE != 0 {
            return Err(RingError::Corrupt {
                pos: tail,
                why: "cmd_tail outside the ring",
            });
        }
        Ok(Self {
            cmdr_off: off as usize,
            cmdr_size: size,
            flags,
            next: tail,
            tail,
            data_start: off as usize + size as usize,
            map,
            ids: Vec::new(),
            live: Vec::new(),
            iovecs: Vec::new(),
            sorted: Vec::new(),
            claim: Arc::new(claim),
            spare_lists: Vec::new(),
        })
    }

    /// Takes back a command's buffer list once the command is done with
    /// it: its buffers are dropped, and the emptied list holds a later
    /// command's buffers, so reading a command need not allocate.
    pub fn recycle(&mut self, mut list: Vec<DataBuf>) {
        list.clear();
        if list.capacity() > 0
            && list.capacity() <= SPARE_LIST_CAPACITY
            && self.spare_lists.len() < SPARE_LISTS
        {
            self.spare_lists.push(list);
        }
    }

    /// The kernel's capability flags (`MAILBOX_FLAG_*`).
    pub fn flags(&self) -> u16 {
        self.flags
    }

    /// The mapping this ring lives in.
    pub fn mapping(&self) -> &Arc<Mapping> {
        &self.map
    }

    /// Size of the command ring in bytes.
    pub fn size(&self) -> u32 {
        self.cmdr_size
    }

    /// Whether the kernel offers `KEEP_BUF` completions.
    pub fn can_keep_buffers(&self) -> bool {
        self.flags & crate::layout::MAILBOX_FLAG_CAP_KEEP_BUF != 0
    }

    /// Whether any data buffer of command `cmd_id` is still alive (held by
    /// a handler, or by an I/O operation that outlived its future).
    pub fn buffers_in_use(&self, cmd_id: u16) -> bool {
        self.ids
            .get(usize::from(cmd_id))
            .and_then(Option::as_ref)
            .is_some_and(IdSlot::in_use)
    }

    /// The slot of `cmd_id` (made the first time the id is seen, then
    /// reused).
    fn slot(&mut self, cmd_id: u16) -> &mut IdSlot {
        let i = usize::from(cmd_id);
        if self.ids.len() <= i {
            self.ids.resize_with(i + 1, || None);
        }
        let claim = &self.claim;
        self.ids[i].get_or_insert_with(|| IdSlot {
            lease: Arc::new(BufLease::for_ring(claim.clone())),
            ranges: Vec::new(),
            generation: 0,
        })
    }

    /// Whether the sorted ranges in `self.sorted` (not empty) overlap each
    /// other or a buffer of another command still alive.
    ///
    /// Only the listed commands whose bounds meet the new ranges' bounds
    /// are looked at closely; those found finished (or superseded by a
    /// newer command of their id) are forgotten then, the others when the
    /// list has grown past twice the ids in use. The kernel reuses the
    /// data-area blocks of finished commands, so what the new ranges meet
    /// is mostly finished, and forgotten on the way.
    fn overlaps_live(&mut self) -> bool {
        if self.sorted.windows(2).any(|w| w[1].0 < w[0].1) {
            return true;
        }
        let (lo, hi) = match (self.sorted.first(), self.sorted.last()) {
            (Some(first), Some(last)) => (first.0, last.1),
            _ => return false,
        };
        let ids = &self.ids;
        let new = &self.sorted;
        let current = |l: &Listed| {
            ids.get(usize::from(l.id))
                .and_then(Option::as_ref)
                .filter(|slot| slot.generation == l.generation && slot.in_use())
        };
        let mut hit = false;
        let mut i = 0;
        while i < self.live.len() {
            let l = self.live[i];
            if l.hi <= lo || hi <= l.lo {
                i += 1;
                continue;
            }
            let Some(slot) = current(&l) else {
                self.live.swap_remove(i);
                continue;
            };
            hit = hit
                || slot.ranges.iter().any(|&(start, end)| {
                    // The first new range ending after `start` (ends are
                    // sorted too: the new ranges are disjoint).
                    let i = new.partition_point(|r| r.1 <= start);
                    new.get(i).is_some_and(|r| r.0 < end)
                });
            i += 1;
        }
        if self.live.len() > 2 * ids.len() + 16 {
            self.live.retain(|l| current(l).is_some());
        }
        // A buffer dropped on another thread wrote its bytes before its
        // Release decrement of the lease: order them before the kernel's
        // next use of the memory and ours.
        fence(Ordering::Acquire);
        hit
    }

    /// Whether the kernel has posted entries not yet read.
    pub fn has_pending(&self) -> Result<bool, RingError> {
        Ok(self.map.load_u32_acquire(MB_HEAD)? != self.next)
    }

    /// Whether every read command has been completed.
    pub fn is_idle(&self) -> bool {
        self.tail == self.next
    }

    fn entry_off(&self, pos: u32) -> usize {
        self.cmdr_off + pos as usize
    }

    /// Reads the header at `pos`, returning (length, opcode, cmd id).
    fn header(&self, pos: u32) -> Result<(u32, u8, u16), RingError> {
        let off = self.entry_off(pos);
        let len_op = self.map.read_u32(off + offset_of!(EntryHeader, len_op))?;
        let cmd_id = self.map.read_u16(off + offset_of!(EntryHeader, cmd_id))?;
        let len = len_op & !OP_MASK;
        let op = (len_op & OP_MASK) as u8;
        let corrupt = |why| RingError::Corrupt { pos, why };
        if len < 8 {
            return Err(corrupt("entry shorter than its header"));
        }
        if u64::from(pos) + u64::from(len) > u64::from(self.cmdr_size) {
            return Err(corrupt("entry runs past the end of the ring"));
        }
        Ok((len, op, cmd_id))
    }

    /// Bytes from `from` forward to `to` (the whole ring when equal).
    fn distance(&self, from: u32, to: u32) -> u32 {
        if to > from {
            to - from
        } else {
            self.cmdr_size - from + to
        }
    }

    fn advance(&self, pos: u32, len: u32) -> u32 {
        let n = pos + len;
        if n >= self.cmdr_size {
            n - self.cmdr_size
        } else {
            n
        }
    }

    /// Reads the next posted entry, skipping PAD entries; `None` when the
    /// read position has caught up with `cmd_head`.
    pub fn next_entry(&mut self) -> Result<Option<Entry>, RingError> {
        let head = self.map.load_u32_acquire(MB_HEAD)?;
        if head >= self.cmdr_size {
            return Err(RingError::Corrupt {
                pos: head,
                why: "cmd_head outside the ring",
            });
        }
        loop {
            if self.next == head {
                return Ok(None);
            }
            let pos = self.next;
            let (len, op, cmd_id) = self.header(pos)?;
            // An entry reaching past cmd_head would have the reader lap the
            // ring over entries it already took.
            if len > self.distance(pos, head) {
                return Err(RingError::Corrupt {
                    pos,
                    why: "entry runs past cmd_head",
                });
            }
            let entry = match op {
                OP_PAD => None,
                OP_CMD => Some(self.command(pos, len, cmd_id)?),
                OP_TMR => Some(Entry::Tmr(self.parse_tmr(pos, len)?)),
                other => Some(Entry::Unknown { cmd_id, op: other }),
            };
            self.next = self.advance(pos, len);
            if let Some(e) = entry {
                return Ok(Some(e));
            }
        }
    }

    /// A command entry: the command, or an [`Entry::Invalid`] to fail when
    /// its own fields are wrong or its buffers would overlap live ones. A
    /// command id whose previous command still has buffers alive means the
    /// ring cannot be trusted: an error.
    fn command(&mut self, pos: u32, len: u32, cmd_id: u16) -> Result<Entry, RingError> {
        if self.buffers_in_use(cmd_id) {
            return Err(RingError::Corrupt {
                pos,
                why: "command id reused while its previous command's buffers are in use",
            });
        }
        let mut iovecs = std::mem::take(&mut self.iovecs);
        iovecs.clear();
        let parsed = self.parse_cmd(pos, len, &mut iovecs);
        let entry = match parsed {
            Ok((cdb, iov_cnt)) => Ok(self.lend(cmd_id, cdb, iov_cnt, &iovecs)),
            Err(RingError::Corrupt { why, .. }) => Ok(Entry::Invalid { cmd_id, why }),
            Err(e) => Err(e),
        };
        self.iovecs = iovecs;
        entry
    }

    /// Hands out the buffers of a parsed command (`iovecs`: its data then
    /// bidi iovecs, each inside the data area), unless they overlap.
    fn lend(&mut self, cmd_id: u16, cdb: Cdb, iov_cnt: usize, iovecs: &[(usize, usize)]) -> Entry {
        self.sorted.clear();
        self.sorted.extend(
            iovecs
                .iter()
                .filter(|&&(_, len)| len > 0)
                .map(|&(start, len)| (start, start + len)),
        );
        self.sorted.sort_unstable();
        if !self.sorted.is_empty() && self.overlaps_live() {
            return Entry::Invalid {
                cmd_id,
                why: "iovecs overlap each other or a buffer still in use",
            };
        }
        let map = self.map.clone();
        let mut data = self.spare_lists.pop().unwrap_or_default();
        data.reserve(iov_cnt);
        let mut bidi = Vec::with_capacity(iovecs.len() - iov_cnt);
        let sorted = std::mem::take(&mut self.sorted);
        let slot = self.slot(cmd_id);
        slot.ranges.clear();
        slot.ranges.extend_from_slice(&sorted);
        slot.generation = slot.generation.wrapping_add(1);
        let (generation, lease) = (slot.generation, slot.lease.clone());
        for (i, &(base, blen)) in iovecs.iter().enumerate() {
            // Checked against the mapping by `parse_cmd`.
            let Ok(buf) = DataBuf::new(map.clone(), base, blen) else {
                continue;
            };
            let buf = buf.leased(&lease);
            if i < iov_cnt {
                data.push(buf);
            } else {
                bidi.push(buf);
            }
        }
        if let (Some(first), Some(last)) = (sorted.first(), sorted.last()) {
            self.live.push(Listed {
                id: cmd_id,
                generation,
                lo: first.0,
                hi: last.1,
            });
        }
        self.sorted = sorted;
        Entry::Cmd(CmdEntry {
            cmd_id,
            cdb,
            data,
            bidi,
        })
    }

    /// Reads a command entry's iovecs (into `iovecs`, each checked to lie
    /// in the data area) and its CDB; returns the CDB and how many iovecs
    /// are data (the rest are bidi).
    fn parse_cmd(
        &self,
        pos: u32,
        len: u32,
        iovecs: &mut Vec<(usize, usize)>,
    ) -> Result<(Cdb, usize), RingError> {
        let off = self.entry_off(pos);
        let corrupt = |why| RingError::Corrupt { pos, why };
        if (len as usize) < CMD_ENTRY_SIZE {
            return Err(corrupt("command entry shorter than struct tcmu_cmd_entry"));
        }
        let iov_cnt = self.map.read_u32(off + offset_of!(CmdRequest, iov_cnt))? as usize;
        let bidi_cnt = self
            .map
            .read_u32(off + offset_of!(CmdRequest, iov_bidi_cnt))? as usize;
        let dif_cnt = self
            .map
            .read_u32(off + offset_of!(CmdRequest, iov_dif_cnt))? as usize;
        let cdb_off = self.map.read_u64(off + offset_of!(CmdRequest, cdb_off))?;
        let iov_room =
            (len as usize - std::mem::size_of::<CmdRequest>()) / std::mem::size_of::<RingIovec>();
        let fits = iov_cnt
            .checked_add(bidi_cnt)
            .and_then(|n| n.checked_add(dif_cnt))
            .is_some_and(|n| n <= iov_room);
        if !fits {
            return Err(corrupt("more iovecs than the entry holds"));
        }
        let iov_base = off + std::mem::size_of::<CmdRequest>();
        iovecs.reserve(iov_cnt + bidi_cnt);
        for i in 0..iov_cnt + bidi_cnt {
            let at = iov_base + i * std::mem::size_of::<RingIovec>();
            let base = self.map.read_u64(at + offset_of!(RingIovec, base))?;
            let blen = self.map.read_u64(at + offset_of!(RingIovec, len))?;
            let (base, blen) = match (usize::try_from(base), usize::try_from(blen)) {
                (Ok(b), Ok(l)) if b >= self.data_start => (b, l),
                _ => return Err(corrupt("iovec outside the data area")),
            };
            self.map
                .check(base, blen)
                .map_err(|_| corrupt("iovec outside the data area"))?;
            iovecs.push((base, blen));
        }
        // The CDB must lie inside this entry.
        let cdb_off = usize::try_from(cdb_off).map_err(|_| corrupt("CDB offset too large"))?;
        let entry_end = off + len as usize;
        if cdb_off < iov_base || cdb_off >= entry_end {
            return Err(corrupt("CDB outside its entry"));
        }
        let mut first = [0u8; 8];
        let avail = (entry_end - cdb_off).min(8);
        self.map.read(cdb_off, &mut first[..avail])?;
        let clen = cdb_len(first[0], first[7]);
        if cdb_off + clen > entry_end {
            return Err(corrupt("CDB runs past its entry"));
        }
        let cdb = Cdb::try_filled(clen, |b| self.map.read(cdb_off, b))?;
        Ok((cdb, iov_cnt))
    }

    fn parse_tmr(&self, pos: u32, len: u32) -> Result<TmrNotice, RingError> {
        let off = self.entry_off(pos);
        if (len as usize) < std::mem::size_of::<TmrEntry>() {
            return Err(RingError::Corrupt {
                pos,
                why: "TMR entry shorter than struct tcmu_tmr_entry",
            });
        }
        let mut t = [0u8; 1];
        self.map
            .read(off + offset_of!(TmrEntry, tmr_type), &mut t)?;
        let cnt = self.map.read_u32(off + offset_of!(TmrEntry, cmd_cnt))? as usize;
        let room = (len as usize - std::mem::size_of::<TmrEntry>()) / 2;
        if cnt > room {
            return Err(RingError::Corrupt {
                pos,
                why: "more TMR command ids than the entry holds",
            });
        }
        let ids_off = off + std::mem::size_of::<TmrEntry>();
        let mut cmd_ids = Vec::with_capacity(cnt);
        for i in 0..cnt {
            cmd_ids.push(self.map.read_u16(ids_off + 2 * i)?);
        }
        Ok(TmrNotice {
            tmr_type: t[0],
            cmd_ids,
        })
    }

    /// Writes the completion of command `cmd_id` into the slot at the tail
    /// and advances the tail. Not visible to the kernel until [`publish`](Self::publish).
    pub fn complete(&mut self, cmd_id: u16, c: &Completion) -> Result<(), RingError> {
        // Find the next slot that carries a command: PAD and TMR slots are
        // skipped by the kernel when it reaps, and so here.
        let (pos, len) = loop {
            if self.tail == self.next {
                return Err(RingError::NoSlot);
            }
            let (len, op, _) = self.header(self.tail)?;
            // Slots were checked when read; one rewritten since must not
            // carry the tail past the read position.
            if len > self.distance(self.tail, self.next) {
                return Err(RingError::Corrupt {
                    pos: self.tail,
                    why: "completion slot runs past the entries read",
                });
            }
            if op == OP_PAD || op == OP_TMR {
                self.tail = self.advance(self.tail, len);
                continue;
            }
            if (len as usize) < CMD_ENTRY_SIZE {
                return Err(RingError::Corrupt {
                    pos: self.tail,
                    why: "completion slot too short",
                });
            }
            break (self.tail, len);
        };
        let off = self.entry_off(pos);
        let mut uflags = 0u8;
        if c.unknown_op {
            uflags |= UFLAG_UNKNOWN_OP;
        }
        if c.read_len.is_some() && self.flags & crate::layout::MAILBOX_FLAG_CAP_READ_LEN != 0 {
            uflags |= UFLAG_READ_LEN;
        }
        if c.keep_buf && self.can_keep_buffers() {
            uflags |= UFLAG_KEEP_BUF;
        }
        let mut rsp = [0u8; CMD_ENTRY_SIZE - 8];
        rsp[offset_of!(CmdResponse, scsi_status) - 8] = c.status;
        let rl = offset_of!(CmdResponse, read_len) - 8;
        rsp[rl..rl + 4].copy_from_slice(&c.read_len.unwrap_or(0).to_ne_bytes());
        let s = offset_of!(CmdResponse, sense) - 8;
        let n = c.sense.len().min(SENSE_BUFFER_SIZE);
        rsp[s..s + n].copy_from_slice(&c.sense[..n]);
        self.map
            .write_u16(off + offset_of!(EntryHeader, cmd_id), cmd_id)?;
        self.map
            .write(off + offset_of!(EntryHeader, uflags), &[uflags])?;
        self.map.write(off + 8, &rsp)?;
        self.tail = self.advance(pos, len);
        Ok(())
    }

    /// Makes every completion written so far visible to the kernel
    /// (Release store of `cmd_tail`). Ring the doorbell afterwards.
    pub fn publish(&self) -> Result<(), RingError> {
        self.map.store_u32_release(MB_TAIL, self.tail)?;
        Ok(())
    }

    /// Re-reads the indexes after the kernel reset the ring
    /// (`action/reset_ring`): reading and completing restart at `cmd_tail`.
    pub fn resync(&mut self) -> Result<(), RingError> {
        let tail = self.map.load_u32_acquire(MB_TAIL)?;
        self.next = tail;
        self.tail = tail;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cdb_lengths() {
        assert_eq!(cdb_len(0x00, 0), 6);
        assert_eq!(cdb_len(0x28, 0), 10);
        assert_eq!(cdb_len(0x88, 0), 16);
        assert_eq!(cdb_len(0xa8, 0), 12);
        assert_eq!(cdb_len(0x7f, 24), 32);
    }

    #[test]
    fn rejects_bad_mailbox() {
        let m = Arc::new(Mapping::anonymous(4096).unwrap());
        assert!(matches!(
            CommandRing::new(m.clone()),
            Err(RingError::Version(0))
        ));
        m.write_u16(0, MAILBOX_VERSION).unwrap();
        m.write_u32(4, 128).unwrap();
        m.write_u32(8, 1 << 20).unwrap();
        assert!(matches!(
            CommandRing::new(m),
            Err(RingError::Geometry { .. })
        ));
    }
}
