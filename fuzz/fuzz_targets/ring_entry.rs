//! Fuzz target `ring_entry`: tcmu-core's command-ring walk
//! ([`CommandRing::new`], [`CommandRing::next_entry`],
//! [`CommandRing::complete`], [`CommandRing::publish`]) against a hostile
//! kernel.
//!
//! The input is a [`Scenario`], read with `arbitrary`: a ring geometry and a
//! few batches of entries. The harness plays the kernel: it lays each batch
//! out the way `target_core_user` does (entries from `cmd_head`, a PAD
//! entry where one would not fit before the end of the ring, never more
//! than the free space before the published `cmd_tail`), then lets the
//! daemon's side read, complete and publish. Most of what the fuzzer picks
//! is well-formed, so that it gets deep; each piece can also be malformed:
//! iovecs into the mailbox, the ring, past the end of the map or anywhere
//! (`Raw`), CDB offsets outside their entry, claimed iovec and TMR counts
//! larger than the entry, entries with arbitrary headers and lengths, PAD,
//! TMR and unknown opcodes, a geometry that lies, `cmd_head` anywhere,
//! bytes poked anywhere before or after the daemon reads, and command ids
//! posted again while their earlier command is still running.
//!
//! Invariants checked on every input:
//! - nothing panics, hangs or touches memory outside the mapping;
//! - every [`DataBuf`] handed out lies in the data area: offset at or after
//!   the end of the command ring, end at or before the end of the mapping;
//! - no buffer handed out overlaps another of its command or a buffer still
//!   alive (a command whose iovecs would is refused: `Entry::Invalid`);
//! - a CDB has the length its opcode implies;
//! - completing and publishing writes nothing outside the command ring
//!   except `cmd_tail`, and `cmd_tail` stays an aligned position inside it;
//! - the reader never goes round the ring past `cmd_head`;
//! - after an `Err` the ring is abandoned (nothing more is asked of it).
//!
//! While the kernel's side stays well-formed (no lying geometry, no raw
//! header or head, no poke into the mailbox or ring), the harness also
//! knows what every entry must come back as, and checks it exactly: a
//! well-formed command returns its id, its CDB (from inside its own entry)
//! and its iovecs unchanged; a command whose iovecs or CDB lie outside the
//! data area or the entry is refused (never followed); a TMR returns its
//! ids; each completion lands in the next unfilled command slot with the
//! status, sense (cut to 96 bytes), `read_len` and flags asked for; and
//! `cmd_tail` ends right after the last slot filled.
//!
//! Seeds (`fuzz/seeds/ring_entry/`) are inputs picked from a fuzzing
//! corpus: arbitrary-encoded scenarios, which `cargo fuzz fmt ring_entry
//! FILE` prints.

#![no_main]

use std::collections::VecDeque;
use std::mem::size_of;
use std::sync::Arc;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use tcmu_core::layout::{
    CmdRequest, Mailbox, RingIovec, TmrEntry, CMD_ENTRY_SIZE, MAILBOX_FLAG_CAP_KEEP_BUF,
    MAILBOX_FLAG_CAP_READ_LEN, MAILBOX_VERSION, OP_CMD, OP_PAD, OP_TMR, SENSE_BUFFER_SIZE,
    UFLAG_KEEP_BUF, UFLAG_READ_LEN, UFLAG_UNKNOWN_OP,
};
use tcmu_core::ring::cdb_len;
use tcmu_core::{CmdEntry, CommandRing, Completion, DataBuf, Entry, Mapping};

fuzz_target!(|scenario: Scenario| run(&scenario));

/// Offset of the command ring when the geometry is not overridden: right
/// after the mailbox, as the kernel puts it.
const MAILBOX_SIZE: usize = size_of::<Mailbox>();
/// Mailbox field offsets (pinned by tcmu-core's layout tests).
const MB_VERSION: usize = 0;
const MB_FLAGS: usize = 2;
const MB_CMDR_OFF: usize = 4;
const MB_CMDR_SIZE: usize = 8;
const MB_HEAD: usize = 12;
const MB_TAIL: usize = 64;
/// Bytes of a command entry before its iovec array.
const REQ_SIZE: usize = size_of::<CmdRequest>();
/// Bytes of one iovec.
const IOV_SIZE: usize = size_of::<RingIovec>();
/// Bytes of a TMR entry before its command ids.
const TMR_SIZE: usize = size_of::<TmrEntry>();
/// Offset of the status byte, `read_len` and sense in a completed entry.
const RSP_STATUS: usize = 8;
const RSP_READ_LEN: usize = 12;
const RSP_SENSE: usize = 16;
/// Bounds that keep one input fast.
const MAX_BATCHES: usize = 4;
const MAX_ENTRIES: usize = 32;
const MAX_IOVECS: usize = 12;
const MAX_POKES: usize = 8;
const MAX_COMPLETIONS: usize = 64;

/// Size of the command ring.
#[derive(Debug, Arbitrary)]
enum RingSize {
    /// 1 KiB: room for a handful of commands, so it wraps often.
    Small,
    /// 4 KiB.
    Page,
    /// 256 bytes: two commands at most.
    Tiny,
    /// 64 bytes (the least tcmu-core accepts) up to 8 KiB, 8-aligned.
    Other(u16),
}

impl RingSize {
    fn bytes(&self) -> u32 {
        match *self {
            RingSize::Small => 1024,
            RingSize::Page => 4096,
            RingSize::Tiny => 256,
            RingSize::Other(n) => (u32::from(n % 8192) & !7).max(64),
        }
    }
}

/// The mapping and what the mailbox says about it.
#[derive(Debug, Arbitrary)]
struct Geometry {
    size: RingSize,
    /// Extra 8-byte units between the mailbox and the ring (0..=63).
    gap: u8,
    /// Data area in pages, 1 or 2.
    data_pages: u8,
    /// `cmd_head` = `cmd_tail` at start, in 8-byte units (reduced mod size).
    start: u16,
    /// The mailbox's capability flags.
    flags: u16,
    /// A different mailbox version.
    version: Option<u16>,
    /// A `cmdr_off` other than the real one.
    claimed_off: Option<u32>,
    /// A `cmdr_size` other than the real one.
    claimed_size: Option<u32>,
    /// A `cmd_tail` anywhere, instead of `start`.
    claimed_tail: Option<u32>,
}

/// How a command picks its id.
#[derive(Debug, Arbitrary)]
enum IdSpec {
    /// The next id of the kernel's counter (unique while it does not wrap).
    Next,
    /// An id of a recent command, counted back from the last (which may
    /// still be running: the reuse case).
    Reuse(u8),
    /// Any id below 4096. (tcmu-core keeps a table indexed by id, so very
    /// high ids cost time on every run; `EntrySpec::Raw` reaches them.)
    Raw(u16),
}

/// One iovec of a command.
#[derive(Debug, Arbitrary)]
enum IovSpec {
    /// Inside the data area: start and length reduced to fit.
    Data { at: u16, len: u16 },
    /// The last `len` bytes of the mapping (reduced to fit).
    Tail { len: u16 },
    /// Starts in the data area, ends past the end of the mapping.
    Past { at: u16, over: u8 },
    /// Starts in the mailbox or the command ring.
    Ring { at: u16, len: u16 },
    /// Anything.
    Raw { base: u64, len: u64 },
}

/// Where the CDB of a command is.
#[derive(Debug, Arbitrary)]
enum CdbAt {
    /// Right after the iovecs, where the kernel puts it.
    Normal,
    /// That place moved by some bytes either way.
    Moved(i16),
    /// Anywhere.
    Raw(u64),
}

/// A SCSI command entry.
#[derive(Debug, Arbitrary)]
struct CmdSpec {
    id: IdSpec,
    /// The CDB: its opcode (and byte 7, for variable-length CDBs) decides
    /// its length, zero-padded or cut to it.
    cdb: Vec<u8>,
    data: Vec<IovSpec>,
    bidi: Vec<IovSpec>,
    /// DIF iovecs (0..=3): counted and laid out, never returned.
    dif: u8,
    cdb_at: CdbAt,
    /// Spare 8-byte units at the end of the entry (0..=7).
    slack: u8,
    /// Iovec counts other than the real ones.
    claimed_counts: Option<(u32, u32, u32)>,
}

/// One entry the kernel posts.
#[derive(Debug, Arbitrary)]
enum EntrySpec {
    Cmd(CmdSpec),
    Tmr {
        tmr_type: u8,
        ids: Vec<u16>,
        /// A `cmd_cnt` other than the number of ids.
        claimed_cnt: Option<u32>,
    },
    /// A PAD in the middle of the ring (the kernel only pads to the end,
    /// but the reader must skip any), `8 * (1 + len % 16)` bytes.
    Pad {
        len: u8,
    },
    /// An opcode the daemon does not know (3..=7), `112 + 8 * (len % 8)`
    /// bytes.
    Unknown {
        op: u8,
        id: IdSpec,
        len: u8,
    },
    /// A header as given, followed by `body`; laid out as `len_op` says when
    /// that fits, else as long as the body (and the model stops there).
    Raw {
        len_op: u32,
        cmd_id: u16,
        body: Vec<u8>,
    },
}

/// Bytes written anywhere in the mapping (offset reduced mod its length).
#[derive(Debug, Arbitrary)]
enum Poke {
    Byte(u32, u8),
    Word(u32, u32),
    Quad(u32, u64),
}

/// `cmd_head` after a batch.
#[derive(Debug, Arbitrary)]
enum HeadSpec {
    /// Right after the last entry, as the kernel sets it.
    AfterLast,
    /// Anything.
    Raw(u32),
}

/// The answer to one command.
#[derive(Debug, Arbitrary)]
struct Reply {
    status: u8,
    /// Sense bytes (0..=255; more than 96 are cut), filled from `seed`.
    sense_len: u8,
    seed: u8,
    read_len: Option<u32>,
    /// `KEEP_BUF`: the buffers stay the command's after completion (kept
    /// alive by the harness until a later batch releases them), where the
    /// kernel offers it.
    keep: bool,
}

/// One round: the kernel posts, the daemon reads, completes, publishes.
#[derive(Debug, Arbitrary)]
struct Batch {
    /// The kernel resets the ring first (`action/reset_ring`): both indexes
    /// to 0, every outstanding command forgotten, then `resync`.
    reset: bool,
    entries: Vec<EntrySpec>,
    head: HeadSpec,
    /// Pokes after posting, before the daemon reads.
    pokes: Vec<Poke>,
    /// Pokes after the daemon read, before it completes (a kernel
    /// rewriting slots it has handed over).
    late_pokes: Vec<Poke>,
    /// Which outstanding commands to complete, in order: each picks an
    /// index into the outstanding list (mod its length).
    picks: Vec<(u8, Reply)>,
    /// Complete all the rest at the end of the batch (oldest first).
    finish: bool,
    /// Drop the buffers of commands left outstanding (a handler that has
    /// finished with them but not yet completed).
    release_rest: bool,
    /// One more completion than there are commands to complete.
    extra_completion: bool,
    /// Drop the buffers kept by `KEEP_BUF` completions, first thing (the
    /// runtime's `free_kept_buf`).
    release_kept: bool,
}

/// A whole input.
#[derive(Debug, Arbitrary)]
struct Scenario {
    geometry: Geometry,
    batches: Vec<Batch>,
}

/// What an entry must come back as, while the model holds.
#[derive(Debug)]
enum Expect {
    /// A well-formed command: exactly this.
    Cmd {
        cmd_id: u16,
        cdb: Vec<u8>,
        data: Vec<(usize, usize)>,
        bidi: Vec<(usize, usize)>,
    },
    /// A command with an iovec outside the data area or a CDB outside its
    /// entry: refused, its buffers never handed out.
    Refused { cmd_id: u16 },
    /// A command entry the model does not predict (claimed counts, raw
    /// header): a command or a refusal with this id.
    AnyCmd { cmd_id: u16 },
    /// A TMR: exactly this.
    Tmr { tmr_type: u8, cmd_ids: Vec<u16> },
    /// A TMR the model does not predict.
    AnyTmr,
    /// An unknown opcode.
    Unknown { cmd_id: u16, op: u8 },
}

impl Expect {
    /// The id of a command entry.
    fn cmd_id(&self) -> Option<u16> {
        match *self {
            Expect::Cmd { cmd_id, .. } | Expect::Refused { cmd_id } | Expect::AnyCmd { cmd_id } => {
                Some(cmd_id)
            }
            _ => None,
        }
    }
}

/// Bugs this target found in tcmu-core/src/ring.rs, since fixed. First, an entry
/// whose length carries it past `cmd_head` (not one the kernel writes) is
/// followed, so the reader misses `cmd_head` and goes round the ring for
/// ever: returning the same entries again and again, or spinning inside
/// `next_entry` when only PAD entries are in the way. The first failing
/// input is saved as `fuzz/artifacts/ring_entry/known-lap-past-head`.
/// Second, the same in `complete`: it re-reads the headers of slots already
/// read, and when the kernel has rewritten one (a length past the read
/// position), the tail jumps over the read position and can spin for ever
/// over PAD/TMR entries (`known-complete-spins`).
/// Both are refused as a corrupt ring now. When this is `true`, such rings
/// are recognised beforehand (see [`crosses_head`]) and not read: the
/// switch stays for bisecting.
const TOLERATE_LAP: bool = false;

/// Whether the walk `next_entry` makes from `from` jumps over `cmd_head`:
/// the same header checks (an entry shorter than its header or running
/// past the end of the ring stops it with an error), then an entry longer
/// than the distance left to `cmd_head`, or a full lap.
fn crosses_head(map: &Mapping, view: &View, from: u32) -> bool {
    match map.load_u32_acquire(MB_HEAD) {
        Ok(head) if head < view.ring_size => crosses(map, view, from, head),
        _ => false,
    }
}

/// Whether a walk of the ring from `from` that follows entry lengths jumps
/// over `head` (or never meets it).
fn crosses(map: &Mapping, view: &View, from: u32, head: u32) -> bool {
    let size = view.ring_size;
    let mut pos = from;
    for _ in 0..=size / 8 {
        if pos == head {
            return false;
        }
        let Ok(len_op) = map.read_u32(view.ring_off + pos as usize) else {
            return false;
        };
        let len = len_op & !7;
        if len < 8 || u64::from(pos) + u64::from(len) > u64::from(size) {
            return false;
        }
        if len > (head + size - pos) % size {
            return true;
        }
        pos = (pos + len) % size;
    }
    true
}

/// A slot that takes a completion, as the kernel reaps them: every entry
/// except PAD and TMR, in ring order.
#[derive(Debug, Clone, Copy)]
struct Slot {
    pos: u32,
    len: u32,
}

/// A command read and not yet completed.
#[derive(Debug)]
struct Outstanding {
    cmd_id: u16,
    unknown: bool,
    /// The command itself, buffers included, while the "handler" holds it.
    cmd: Option<CmdEntry>,
}

/// The kernel's side and the model of what the daemon must see.
struct Kernel {
    map: Arc<Mapping>,
    /// Where the ring really is.
    off: usize,
    size: u32,
    /// Where the data area really is.
    data_start: usize,
    data_len: usize,
    /// The kernel's `cmd_head`.
    head: u32,
    /// Ids the kernel gave out, newest last (for reuse).
    recent: VecDeque<u16>,
    next_id: u16,
    /// False once the kernel's side is no longer well-formed: from then on
    /// only the invariants are checked.
    model: bool,
    /// Entries posted and not yet read.
    expected: VecDeque<Expect>,
    /// Slots read and not yet completed into, in ring order.
    slots: VecDeque<Slot>,
    /// Slots posted and not yet read, in ring order.
    unread_slots: VecDeque<Slot>,
    /// Where the daemon's reader is (it stops exactly at `cmd_head`).
    reader_pos: u32,
    /// Where the daemon's `cmd_tail` must be: after the last slot it
    /// completed into.
    daemon_tail: u32,
    /// Buffers of commands completed with `KEEP_BUF`, still alive.
    kept: Vec<CmdEntry>,
}

/// `n` rounded up to a multiple of 8.
fn round8(n: usize) -> usize {
    (n + 7) & !7
}

impl Kernel {
    fn map_len(&self) -> usize {
        self.map.len()
    }

    fn ring_off(&self, pos: u32) -> usize {
        self.off + pos as usize
    }

    /// Free bytes between the kernel's head and the published tail, one
    /// 8-byte unit kept empty so that a full ring is not an empty one.
    fn free(&self) -> u32 {
        let tail = self.map.load_u32_acquire(MB_TAIL).unwrap_or(self.head);
        let tail = if tail < self.size && tail % 8 == 0 {
            tail
        } else {
            self.head
        };
        let used = (self.head + self.size - tail) % self.size;
        self.size - used - 8
    }

    /// A fresh or reused command id.
    fn id(&mut self, spec: &IdSpec) -> u16 {
        let id = match *spec {
            IdSpec::Next => {
                let id = self.next_id;
                self.next_id = self.next_id.wrapping_add(1);
                id
            }
            IdSpec::Reuse(back) => {
                let n = self.recent.len();
                if n == 0 {
                    0
                } else {
                    self.recent[n - 1 - usize::from(back) % n]
                }
            }
            IdSpec::Raw(id) => id % 4096,
        };
        self.recent.push_back(id);
        if self.recent.len() > 16 {
            self.recent.pop_front();
        }
        id
    }

    /// Reserves `len` bytes at the head, padding to the end of the ring
    /// first if they do not fit before it; `None` when the ring is full.
    fn reserve(&mut self, len: usize) -> Option<u32> {
        let len = u32::try_from(len).ok()?;
        let to_end = self.size - self.head;
        let pad = if len > to_end { to_end } else { 0 };
        if u64::from(len) + u64::from(pad) > u64::from(self.free()) {
            return None;
        }
        if pad > 0 {
            self.write_header(self.head, pad, OP_PAD, 0);
            self.head = 0;
        }
        let pos = self.head;
        self.head = (self.head + len) % self.size;
        Some(pos)
    }

    fn write_header(&self, pos: u32, len: u32, op: u8, cmd_id: u16) {
        let off = self.ring_off(pos);
        let _ = self.map.write_u32(off, len | u32::from(op));
        let _ = self.map.write_u16(off + 4, cmd_id);
        let _ = self.map.write(off + 6, &[0, 0]);
    }

    /// Base and length of an iovec, and whether it lies in the data area.
    fn iovec(&self, spec: &IovSpec) -> (u64, u64, bool) {
        let (ds, dl, ml) = (self.data_start, self.data_len, self.map_len());
        let (base, len) = match *spec {
            IovSpec::Data { at, len } => {
                let at = usize::from(at) % dl;
                (ds + at, usize::from(len) % (dl - at + 1))
            }
            IovSpec::Tail { len } => {
                let len = usize::from(len) % (dl + 1);
                (ml - len, len)
            }
            IovSpec::Past { at, over } => {
                let at = usize::from(at) % dl;
                (ds + at, ml - (ds + at) + 1 + usize::from(over))
            }
            IovSpec::Ring { at, len } => (usize::from(at) % ds, usize::from(len)),
            IovSpec::Raw { base, len } => {
                let ok = usize::try_from(base).is_ok_and(|b| b >= ds)
                    && base.checked_add(len).is_some_and(|end| end <= ml as u64);
                return (base, len, ok);
            }
        };
        let ok = base >= ds && base + len <= ml;
        (base as u64, len as u64, ok)
    }

    /// Lays out a command entry; `false` when the ring is full.
    fn post_cmd(&mut self, spec: &CmdSpec) -> bool {
        let data: Vec<_> = spec.data.iter().take(MAX_IOVECS).collect();
        let bidi: Vec<_> = spec.bidi.iter().take(MAX_IOVECS).collect();
        let dif = usize::from(spec.dif % 4);
        let n_iov = data.len() + bidi.len() + dif;
        let opcode = spec.cdb.first().copied().unwrap_or(0);
        let byte7 = spec.cdb.get(7).copied().unwrap_or(0);
        let clen = cdb_len(opcode, byte7);
        let mut cdb = spec.cdb.clone();
        cdb.resize(clen, 0);
        let body = REQ_SIZE + n_iov * IOV_SIZE;
        let len = round8(body + clen).max(CMD_ENTRY_SIZE) + 8 * usize::from(spec.slack % 8);
        let Some(pos) = self.reserve(len) else {
            return false;
        };
        let cmd_id = self.id(&spec.id);
        let off = self.ring_off(pos);
        let end = off + len;
        let _ = self.map.fill(off, len, 0);
        self.write_header(pos, len as u32, OP_CMD, cmd_id);
        let (ic, bc, dc) =
            spec.claimed_counts
                .unwrap_or((data.len() as u32, bidi.len() as u32, dif as u32));
        let _ = self.map.write_u32(off + 8, ic);
        let _ = self.map.write_u32(off + 12, bc);
        let _ = self.map.write_u32(off + 16, dc);
        let mut all_ok = true;
        let mut expect_data = Vec::new();
        let mut expect_bidi = Vec::new();
        let dif_spec = IovSpec::Data { at: 0, len: 512 };
        let dif_iovs = vec![&dif_spec; dif];
        let iovs = data
            .iter()
            .map(|s| (s, 0))
            .chain(bidi.iter().map(|s| (s, 1)))
            .chain(dif_iovs.iter().map(|s| (s, 2)));
        for (i, (s, kind)) in iovs.enumerate() {
            let (base, blen, ok) = self.iovec(s);
            let at = off + REQ_SIZE + i * IOV_SIZE;
            let _ = self.map.write_u64(at, base);
            let _ = self.map.write_u64(at + 8, blen);
            match kind {
                0 => expect_data.push((base as usize, blen as usize)),
                1 => expect_bidi.push((base as usize, blen as usize)),
                _ => {}
            }
            if kind != 2 {
                all_ok &= ok;
            }
        }
        let normal = (off + body) as u64;
        let cdb_off = match spec.cdb_at {
            CdbAt::Normal => normal,
            CdbAt::Moved(d) => normal.wrapping_add_signed(i64::from(d)),
            CdbAt::Raw(at) => at,
        };
        let _ = self.map.write(off + body, &cdb);
        let _ = self.map.write_u64(off + 24, cdb_off);
        // The CDB the parser must find: inside the entry, past the request
        // header, as long as its own opcode says.
        let cdb_found = usize::try_from(cdb_off)
            .ok()
            .filter(|&at| at >= off + REQ_SIZE && at < end)
            .and_then(|at| {
                let mut first = [0u8; 8];
                let avail = (end - at).min(8);
                self.map.read(at, &mut first[..avail]).ok()?;
                let n = cdb_len(first[0], first[7]);
                let mut cdb = vec![0u8; n];
                (at + n <= end).then_some(())?;
                self.map.read(at, &mut cdb).ok()?;
                Some(cdb)
            });
        let expect = match (spec.claimed_counts, cdb_found) {
            (Some(_), _) => Expect::AnyCmd { cmd_id },
            (None, Some(cdb)) if all_ok => Expect::Cmd {
                cmd_id,
                cdb,
                data: expect_data,
                bidi: expect_bidi,
            },
            (None, _) => Expect::Refused { cmd_id },
        };
        self.expected.push_back(expect);
        self.unread_slots.push_back(Slot {
            pos,
            len: len as u32,
        });
        true
    }

    /// Lays out one entry; `false` when the ring is full.
    fn post(&mut self, spec: &EntrySpec) -> bool {
        match spec {
            EntrySpec::Cmd(c) => self.post_cmd(c),
            EntrySpec::Tmr {
                tmr_type,
                ids,
                claimed_cnt,
            } => {
                let ids: Vec<u16> = ids.iter().copied().take(64).collect();
                let len = round8(TMR_SIZE + 2 * ids.len());
                let Some(pos) = self.reserve(len) else {
                    return false;
                };
                let off = self.ring_off(pos);
                let _ = self.map.fill(off, len, 0);
                self.write_header(pos, len as u32, OP_TMR, 0);
                let _ = self.map.write(off + 8, &[*tmr_type]);
                let cnt = claimed_cnt.unwrap_or(ids.len() as u32);
                let _ = self.map.write_u32(off + 12, cnt);
                for (i, id) in ids.iter().enumerate() {
                    let _ = self.map.write_u16(off + TMR_SIZE + 2 * i, *id);
                }
                self.expected.push_back(match claimed_cnt {
                    None => Expect::Tmr {
                        tmr_type: *tmr_type,
                        cmd_ids: ids,
                    },
                    Some(_) => Expect::AnyTmr,
                });
                true
            }
            EntrySpec::Pad { len } => {
                let len = 8 * (1 + usize::from(len % 16));
                let Some(pos) = self.reserve(len) else {
                    return false;
                };
                self.write_header(pos, len as u32, OP_PAD, 0);
                true
            }
            EntrySpec::Unknown { op, id, len } => {
                let op = 3 + op % 5;
                let len = CMD_ENTRY_SIZE + 8 * usize::from(len % 8);
                let Some(pos) = self.reserve(len) else {
                    return false;
                };
                let cmd_id = self.id(id);
                let _ = self.map.fill(self.ring_off(pos), len, 0);
                self.write_header(pos, len as u32, op, cmd_id);
                self.expected.push_back(Expect::Unknown { cmd_id, op });
                self.unread_slots.push_back(Slot {
                    pos,
                    len: len as u32,
                });
                true
            }
            EntrySpec::Raw {
                len_op,
                cmd_id,
                body,
            } => {
                let body = &body[..body.len().min(512)];
                let claimed = (len_op & !7) as usize;
                let physical = round8(8 + body.len());
                let honest = claimed >= 8
                    && claimed >= physical
                    && claimed <= (self.size - self.head) as usize;
                let len = if honest { claimed } else { physical };
                let Some(pos) = self.reserve(len) else {
                    return false;
                };
                let off = self.ring_off(pos);
                let _ = self.map.fill(off, len, 0);
                let _ = self.map.write_u32(off, *len_op);
                let _ = self.map.write_u16(off + 4, *cmd_id);
                let _ = self.map.write(off + 8, body);
                if !honest {
                    self.model = false;
                    return true;
                }
                match (len_op & 7) as u8 {
                    OP_PAD => {}
                    OP_TMR => self.expected.push_back(Expect::AnyTmr),
                    OP_CMD => {
                        self.expected.push_back(Expect::AnyCmd { cmd_id: *cmd_id });
                        self.unread_slots.push_back(Slot {
                            pos,
                            len: len as u32,
                        });
                    }
                    op => {
                        self.expected.push_back(Expect::Unknown {
                            cmd_id: *cmd_id,
                            op,
                        });
                        self.unread_slots.push_back(Slot {
                            pos,
                            len: len as u32,
                        });
                    }
                }
                true
            }
        }
    }

    /// Writes a poke; pokes into the mailbox or the ring end the model.
    fn poke(&mut self, p: &Poke) {
        let len = self.map_len() as u64;
        let (at, bytes) = match *p {
            Poke::Byte(at, v) => (at, vec![v]),
            Poke::Word(at, v) => (at, v.to_ne_bytes().to_vec()),
            Poke::Quad(at, v) => (at, v.to_ne_bytes().to_vec()),
        };
        let at = (u64::from(at) % len) as usize;
        let n = bytes.len().min(self.map_len() - at);
        let _ = self.map.write(at, &bytes[..n]);
        if at < self.data_start {
            self.model = false;
        }
    }
}

/// Runs one scenario.
fn run(s: &Scenario) {
    let g = &s.geometry;
    let size = g.size.bytes();
    let off = MAILBOX_SIZE + 8 * usize::from(g.gap % 64);
    let data_len = 4096 * (1 + usize::from(g.data_pages % 2));
    let data_start = off + size as usize;
    let Ok(map) = Mapping::anonymous(data_start + data_len) else {
        return;
    };
    let map = Arc::new(map);
    let start = (u32::from(g.start) * 8) % size;
    let _ = map.write_u16(MB_VERSION, g.version.unwrap_or(MAILBOX_VERSION));
    let _ = map.write_u16(MB_FLAGS, g.flags);
    let _ = map.write_u32(MB_CMDR_OFF, g.claimed_off.unwrap_or(off as u32));
    let _ = map.write_u32(MB_CMDR_SIZE, g.claimed_size.unwrap_or(size));
    let _ = map.write_u32(MB_HEAD, start);
    let _ = map.write_u32(MB_TAIL, g.claimed_tail.unwrap_or(start));
    let honest = g.version.is_none_or(|v| v == MAILBOX_VERSION)
        && g.claimed_off.is_none_or(|o| o as usize == off)
        && g.claimed_size.is_none_or(|s| s == size)
        && g.claimed_tail.is_none_or(|t| t == start);

    let ring = CommandRing::new(map.clone());
    let mut ring = match ring {
        Ok(r) => r,
        Err(e) => {
            assert!(!honest, "a well-formed mailbox was refused: {e}");
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    // The ring as the daemon sees it (the mailbox may lie).
    let seen_off = map.read_u32(MB_CMDR_OFF).unwrap_or(0) as usize;
    let seen_size = ring.size();
    let seen_data_start = seen_off + seen_size as usize;
    assert!(
        seen_data_start <= map.len() && seen_size >= 64 && seen_off >= MAILBOX_SIZE,
        "accepted a ring at {seen_off:#x}+{seen_size:#x} in a {:#x}-byte map",
        map.len()
    );

    let mut k = Kernel {
        map: map.clone(),
        off,
        size,
        data_start,
        data_len,
        head: start,
        recent: VecDeque::new(),
        next_id: 0,
        model: honest,
        expected: VecDeque::new(),
        slots: VecDeque::new(),
        unread_slots: VecDeque::new(),
        reader_pos: map.read_u32(MB_TAIL).unwrap_or(0),
        daemon_tail: map.read_u32(MB_TAIL).unwrap_or(0),
        kept: Vec::new(),
    };
    let view = View {
        map_len: map.len(),
        ring_off: seen_off,
        ring_size: seen_size,
        data_start: seen_data_start,
    };
    let mut outstanding: Vec<Outstanding> = Vec::new();
    for batch in s.batches.iter().take(MAX_BATCHES) {
        if run_batch(&mut k, &mut ring, &view, &mut outstanding, batch).is_err() {
            // The ring reported an error: a daemon abandons it.
            return;
        }
    }
}

/// Where the daemon believes things are.
struct View {
    map_len: usize,
    ring_off: usize,
    ring_size: u32,
    data_start: usize,
}

/// Why a batch stopped the scenario.
struct Abandoned;

/// Posts, reads, completes and publishes one batch.
fn run_batch(
    k: &mut Kernel,
    ring: &mut CommandRing,
    view: &View,
    outstanding: &mut Vec<Outstanding>,
    batch: &Batch,
) -> Result<(), Abandoned> {
    if batch.reset {
        let _ = k.map.store_u32_release(MB_HEAD, 0);
        let _ = k.map.store_u32_release(MB_TAIL, 0);
        k.head = 0;
        k.expected.clear();
        k.slots.clear();
        k.unread_slots.clear();
        k.reader_pos = 0;
        k.daemon_tail = 0;
        k.kept.clear();
        outstanding.clear();
        if ring.resync().is_err() {
            return Err(Abandoned);
        }
    }
    if batch.release_kept {
        k.kept.clear();
    }

    // The kernel posts.
    for e in batch.entries.iter().take(MAX_ENTRIES) {
        if !k.post(e) {
            break;
        }
    }
    let head = match batch.head {
        HeadSpec::AfterLast => k.head,
        HeadSpec::Raw(h) => {
            if h != k.head {
                k.model = false;
            }
            h
        }
    };
    let _ = k.map.store_u32_release(MB_HEAD, head);
    for p in batch.pokes.iter().take(MAX_POKES) {
        k.poke(p);
    }

    // The daemon reads everything posted. One lap of the ring holds at most
    // size/8 entries; more means the reader went past cmd_head.
    if TOLERATE_LAP && crosses_head(&k.map, view, k.reader_pos) {
        return Err(Abandoned);
    }
    let max_reads = view.ring_size as usize / 8 + 1;
    let mut reads = 0;
    loop {
        // A command whose id belongs to a command with buffers still alive
        // (running, or kept) must be refused as a corrupt ring.
        let reused = k.model
            && k.expected
                .front()
                .and_then(Expect::cmd_id)
                .is_some_and(|id| {
                    outstanding
                        .iter()
                        .filter_map(|o| o.cmd.as_ref())
                        .chain(&k.kept)
                        .any(|c| c.cmd_id == id && !(c.data.is_empty() && c.bidi.is_empty()))
                });
        // A command whose buffers would overlap each other or a buffer
        // still alive (running, or kept) must be refused, never lent.
        let live = live_ranges(outstanding, &k.kept);
        if k.model && !reused {
            let overlapping = match k.expected.front() {
                Some(Expect::Cmd { data, bidi, .. }) => {
                    let new: Vec<(usize, usize)> = data.iter().chain(bidi).copied().collect();
                    overlap(&new, &live)
                }
                _ => false,
            };
            if overlapping {
                if let Some(Expect::Cmd { cmd_id, .. }) = k.expected.pop_front() {
                    k.expected.push_front(Expect::Refused { cmd_id });
                }
            }
        }
        let entry = match ring.next_entry() {
            Ok(Some(e)) => e,
            Ok(None) => {
                k.reader_pos = k.map.load_u32_acquire(MB_HEAD).unwrap_or(0);
                break;
            }
            Err(e) => {
                assert!(!e.to_string().is_empty());
                if k.model {
                    let x = k.expected.front();
                    assert!(
                        reused || matches!(x, Some(Expect::AnyTmr)),
                        "error {e} for an entry that must be {x:?}"
                    );
                }
                return Err(Abandoned);
            }
        };
        assert!(
            !reused,
            "{entry:?} read while its id's earlier buffers are alive"
        );
        reads += 1;
        assert!(
            reads <= max_reads,
            "read {reads} entries from a {}-byte ring without meeting cmd_head",
            view.ring_size
        );
        check_entry(k, view, &entry);
        if let Entry::Cmd(cmd) = &entry {
            let new: Vec<(usize, usize)> = cmd
                .data
                .iter()
                .chain(&cmd.bidi)
                .map(|b| (b.offset(), b.len()))
                .collect();
            assert!(
                !overlap(&new, &live),
                "buffers {new:x?} of command {} overlap each other or live ones {live:x?}",
                cmd.cmd_id
            );
        }
        match entry {
            Entry::Cmd(cmd) => outstanding.push(Outstanding {
                cmd_id: cmd.cmd_id,
                unknown: false,
                cmd: Some(cmd),
            }),
            Entry::Unknown { cmd_id, .. } => outstanding.push(Outstanding {
                cmd_id,
                unknown: true,
                cmd: None,
            }),
            Entry::Invalid { cmd_id, .. } => outstanding.push(Outstanding {
                cmd_id,
                unknown: false,
                cmd: None,
            }),
            Entry::Tmr(_) => {}
            // A kind of entry this target does not know yet.
            _ => return Err(Abandoned),
        }
    }
    if k.model {
        assert!(
            k.expected.is_empty(),
            "cmd_head reached with entries unread: {:?}",
            k.expected
        );
    }

    for p in batch.late_pokes.iter().take(MAX_POKES) {
        k.poke(p);
    }

    // The daemon completes and publishes; nothing outside the ring but
    // cmd_tail may change.
    if TOLERATE_LAP && crosses(&k.map, view, k.daemon_tail, k.reader_pos) {
        return Err(Abandoned);
    }
    let before = snapshot(&k.map);
    let mut completions = Vec::new();
    for (pick, reply) in batch.picks.iter().take(MAX_COMPLETIONS) {
        if outstanding.is_empty() {
            break;
        }
        let i = usize::from(*pick) % outstanding.len();
        completions.push((outstanding.remove(i), Some(reply)));
    }
    if batch.finish {
        completions.extend(outstanding.drain(..).map(|o| (o, None)));
    }
    if batch.release_rest {
        for o in outstanding.iter_mut() {
            o.cmd = None;
        }
    }
    let mut result = Ok(());
    for (o, reply) in completions {
        let c = completion(o.unknown, reply);
        // Buffers go before the completion, as the runtime does it, unless
        // the completion keeps them.
        if let Some(cmd) = o.cmd {
            if c.keep_buf && ring.can_keep_buffers() {
                k.kept.push(cmd);
            }
        }
        if complete(k, ring, o.cmd_id, &c).is_err() {
            result = Err(Abandoned);
            break;
        }
    }
    if result.is_ok() && k.model && batch.extra_completion && outstanding.is_empty() {
        assert!(
            ring.complete(0, &Completion::good()).is_err(),
            "a completion with no command to complete was accepted"
        );
    }
    let published = result.is_ok() && ring.publish().is_ok();
    if !published {
        result = Err(Abandoned);
    }
    check_writes(k, view, &before, published);
    result
}

/// `(offset, len)` of every buffer still alive: held by a command read
/// and not completed, or kept by a `KEEP_BUF` completion.
fn live_ranges(outstanding: &[Outstanding], kept: &[CmdEntry]) -> Vec<(usize, usize)> {
    outstanding
        .iter()
        .filter_map(|o| o.cmd.as_ref())
        .chain(kept)
        .flat_map(|c| c.data.iter().chain(&c.bidi))
        .map(|b| (b.offset(), b.len()))
        .collect()
}

/// Whether any two of the non-empty `new` ranges overlap, or one of them
/// overlaps a non-empty `live` range (all `(offset, len)`).
fn overlap(new: &[(usize, usize)], live: &[(usize, usize)]) -> bool {
    let meets = |a: &(usize, usize), b: &(usize, usize)| {
        a.1 > 0 && b.1 > 0 && a.0 < b.0.saturating_add(b.1) && b.0 < a.0.saturating_add(a.1)
    };
    new.iter().enumerate().any(|(i, a)| {
        new[i + 1..].iter().any(|b| meets(a, b)) || live.iter().any(|b| meets(a, b))
    })
}

/// The completion for a command.
fn completion(unknown: bool, reply: Option<&Reply>) -> Completion {
    if unknown {
        return Completion::unknown_op();
    }
    let Some(r) = reply else {
        return Completion::good();
    };
    let mut c = Completion::status(r.status);
    c.sense = (0..r.sense_len).map(|i| i ^ r.seed).collect();
    if let Some(n) = r.read_len {
        c = c.with_read_len(n);
    }
    if r.keep {
        c = c.keeping_buffer();
    }
    c
}

/// Completes one command and checks where it landed.
fn complete(
    k: &mut Kernel,
    ring: &mut CommandRing,
    cmd_id: u16,
    c: &Completion,
) -> Result<(), Abandoned> {
    let slot = k.slots.pop_front();
    let result = ring.complete(cmd_id, c);
    if !k.model {
        return result.map_err(|_| Abandoned);
    }
    let Some(slot) = slot else {
        panic!("completing {cmd_id} with no slot read");
    };
    if let Err(e) = result {
        // Only a slot the model could not vouch for may be refused.
        assert!(
            (slot.len as usize) < CMD_ENTRY_SIZE,
            "completion of {cmd_id} into {slot:?} failed: {e}"
        );
        return Err(Abandoned);
    }
    k.daemon_tail = (slot.pos + slot.len) % k.size;
    let off = k.ring_off(slot.pos);
    let id = k.map.read_u16(off + 4).unwrap_or(0);
    let mut uflags = [0u8];
    let _ = k.map.read(off + 7, &mut uflags);
    let mut status = [0u8];
    let _ = k.map.read(off + RSP_STATUS, &mut status);
    let read_len = k.map.read_u32(off + RSP_READ_LEN).unwrap_or(0);
    let mut sense = [0u8; SENSE_BUFFER_SIZE];
    let _ = k.map.read(off + RSP_SENSE, &mut sense);
    let flags = k.map.read_u16(MB_FLAGS).unwrap_or(0);
    let want_read_len = c.read_len.is_some() && flags & MAILBOX_FLAG_CAP_READ_LEN != 0;
    let want_keep = c.keep_buf && flags & MAILBOX_FLAG_CAP_KEEP_BUF != 0;
    let mut want_sense = [0u8; SENSE_BUFFER_SIZE];
    let n = c.sense.len().min(SENSE_BUFFER_SIZE);
    want_sense[..n].copy_from_slice(&c.sense[..n]);
    assert_eq!(id, cmd_id, "completion in {slot:?} has the wrong id");
    assert_eq!(
        uflags[0] & UFLAG_UNKNOWN_OP != 0,
        c.unknown_op,
        "UNKNOWN_OP flag"
    );
    assert_eq!(
        uflags[0] & UFLAG_READ_LEN != 0,
        want_read_len,
        "READ_LEN flag"
    );
    assert_eq!(uflags[0] & UFLAG_KEEP_BUF != 0, want_keep, "KEEP_BUF flag");
    assert_eq!(status[0], c.status, "status");
    assert_eq!(read_len, c.read_len.unwrap_or(0), "read_len");
    assert_eq!(sense, want_sense, "sense");
    Ok(())
}

/// A copy of the whole mapping.
fn snapshot(map: &Mapping) -> Vec<u8> {
    let mut v = vec![0u8; map.len()];
    let _ = map.read(0, &mut v);
    v
}

/// Checks that completing and publishing wrote only inside the command
/// ring (as the daemon sees it) and `cmd_tail`, and that `cmd_tail` is a
/// position in the ring; with the model, exactly where the next slot
/// starts.
fn check_writes(k: &mut Kernel, view: &View, before: &[u8], published: bool) {
    let after = snapshot(&k.map);
    // Slice comparisons (one memcmp each), not a loop over bytes: the
    // coverage instrumentation would make that the slowest part of a run.
    let ring_end = view.ring_off + view.ring_size as usize;
    let outside = [
        0..MB_TAIL,
        MB_TAIL + 4..view.ring_off.max(MB_TAIL + 4),
        ring_end..after.len(),
    ];
    for r in outside {
        if r.start < r.end && before[r.clone()] != after[r.clone()] {
            let i = r
                .clone()
                .find(|&i| before[i] != after[i])
                .unwrap_or(r.start);
            panic!(
                "completing wrote byte {i:#x} outside the ring {:#x}..{ring_end:#x}",
                view.ring_off
            );
        }
    }
    if !published {
        // cmd_tail holds whatever the kernel (a poke) left there.
        return;
    }
    let tail = k.map.read_u32(MB_TAIL).unwrap_or(0);
    assert!(
        tail < view.ring_size && tail % 8 == 0,
        "published cmd_tail {tail:#x} is not a position in the {:#x}-byte ring",
        view.ring_size
    );
    if k.model {
        // Right after the last slot completed, or further on over PAD and
        // TMR entries only (a completion attempt skips those first).
        let mut at = k.daemon_tail;
        while at != tail && at != k.reader_pos {
            let len_op = k.map.read_u32(k.ring_off(at)).unwrap_or(0);
            if !matches!((len_op & 7) as u8, OP_PAD | OP_TMR) || len_op & !7 == 0 {
                break;
            }
            at = (at + (len_op & !7)) % k.size;
        }
        assert_eq!(
            tail, at,
            "published cmd_tail is not after the last slot completed (from {:#x})",
            k.daemon_tail
        );
    }
    // Later batches measure from here.
    k.daemon_tail = tail;
}

/// Checks an entry against the invariants and, while it holds, the model.
fn check_entry(k: &mut Kernel, view: &View, entry: &Entry) {
    if let Entry::Cmd(cmd) = entry {
        for b in cmd.data.iter().chain(&cmd.bidi) {
            check_buf(view, b);
        }
        assert!(!cmd.cdb.is_empty(), "empty CDB");
        let byte7 = cmd.cdb.get(7).copied().unwrap_or(0);
        assert_eq!(
            cmd.cdb.len(),
            cdb_len(cmd.cdb[0], byte7),
            "CDB {:02x?} of the wrong length",
            cmd.cdb
        );
    }
    if !k.model {
        return;
    }
    let Some(want) = k.expected.pop_front() else {
        panic!("read {entry:?} past the last entry posted");
    };
    let takes_slot = !matches!(entry, Entry::Tmr(_));
    match (&want, entry) {
        (
            Expect::Cmd {
                cmd_id,
                cdb,
                data,
                bidi,
            },
            Entry::Cmd(c),
        ) => {
            assert_eq!(c.cmd_id, *cmd_id, "command id");
            assert_eq!(&c.cdb, cdb, "CDB of command {cmd_id}");
            let got: Vec<_> = c.data.iter().map(|b| (b.offset(), b.len())).collect();
            assert_eq!(&got, data, "data iovecs of command {cmd_id}");
            let got: Vec<_> = c.bidi.iter().map(|b| (b.offset(), b.len())).collect();
            assert_eq!(&got, bidi, "bidi iovecs of command {cmd_id}");
        }
        (Expect::AnyCmd { cmd_id }, Entry::Cmd(c)) => {
            assert_eq!(c.cmd_id, *cmd_id, "command id");
        }
        (
            Expect::Refused { cmd_id } | Expect::AnyCmd { cmd_id },
            Entry::Invalid { cmd_id: i, why },
        ) => {
            assert_eq!(i, cmd_id, "command id of a refused entry");
            assert!(!why.is_empty(), "refused with no reason");
        }
        (Expect::Tmr { tmr_type, cmd_ids }, Entry::Tmr(t)) => {
            assert_eq!((t.tmr_type, &t.cmd_ids), (*tmr_type, cmd_ids), "TMR");
        }
        (Expect::AnyTmr, Entry::Tmr(_)) => {}
        (Expect::Unknown { cmd_id, op }, Entry::Unknown { cmd_id: i, op: o }) => {
            assert_eq!((*i, *o), (*cmd_id, *op), "unknown entry");
        }
        (want, got) => panic!("expected {want:?}, read {got:?}"),
    }
    if takes_slot {
        match k.unread_slots.pop_front() {
            Some(s) => k.slots.push_back(s),
            None => panic!("read {entry:?} with no slot posted"),
        }
    }
}

/// Checks that a buffer lies in the data area.
fn check_buf(view: &View, b: &DataBuf) {
    assert!(
        b.offset() >= view.data_start
            && b.offset()
                .checked_add(b.len())
                .is_some_and(|end| end <= view.map_len),
        "buffer {:#x}+{:#x} outside the data area {:#x}..{:#x}",
        b.offset(),
        b.len(),
        view.data_start,
        view.map_len
    );
}
