//! A command as a handler that sees commands first gets it ([`ScsiCmd`]),
//! and its answer ([`CmdReply`]).
//!
//! A [`CommandHook`](crate::CommandHook) receives each command *owning*
//! its data buffers, so it can hand them to io_uring (zero copy) or to a
//! blocking thread. It either answers the command itself — building the
//! reply with [`CmdReply`]'s constructors, which apply the rules that keep
//! one initiator from reading another's stale bytes — or gives the command
//! back, buffers and all, for the generic layer
//! ([`CmdOutcome::NotHandled`]).

use tcmu_core::buf::{self, DataBuf};
use tcmu_core::{reply, Cdb};
use tcmu_scsi::{Sense, Status};

/// A SCSI command handed to [`CommandHook::handle_cmd`](crate::CommandHook::handle_cmd).
///
/// It owns the command's data buffers (data-out to read from, or data-in
/// to fill): take them with [`take_data`](Self::take_data) to move them
/// into I/O. A command given back with [`CmdOutcome::NotHandled`] must
/// still hold all of them.
#[derive(Debug)]
#[non_exhaustive]
pub struct ScsiCmd {
    cdb: Cdb,
    data: Vec<DataBuf>,
    /// The length of `data` when the command arrived.
    data_len: usize,
}

impl ScsiCmd {
    /// A command with its CDB and buffers (the runtime makes these; tests
    /// of a hook may too).
    pub fn new(cdb: Cdb, data: Vec<DataBuf>) -> Self {
        let data_len = buf::total_len(&data);
        Self {
            cdb,
            data,
            data_len,
        }
    }

    /// The CDB.
    pub fn cdb(&self) -> &[u8] {
        self.cdb.as_slice()
    }

    /// The operation code (the CDB's first byte).
    pub fn opcode(&self) -> u8 {
        self.cdb().first().copied().unwrap_or(0)
    }

    /// The data buffers, in order.
    pub fn data(&self) -> &[DataBuf] {
        &self.data
    }

    /// The data buffers, to fill (data-in).
    pub fn data_mut(&mut self) -> &mut [DataBuf] {
        &mut self.data
    }

    /// Total length of the data buffers the command arrived with.
    pub fn data_len(&self) -> usize {
        self.data_len
    }

    /// Takes the data buffers out, e.g. to hand them to io_uring. A command
    /// whose buffers were taken must be answered by the hook.
    pub fn take_data(&mut self) -> Vec<DataBuf> {
        std::mem::take(&mut self.data)
    }

    /// Whether the command still holds every buffer it arrived with.
    pub(crate) fn is_whole(&self) -> bool {
        buf::total_len(&self.data) == self.data_len
    }

    /// The CDB and the buffers.
    pub(crate) fn into_parts(self) -> (Cdb, Vec<DataBuf>) {
        (self.cdb, self.data)
    }
}

/// What a [`CommandHook`](crate::CommandHook) did with a command.
#[derive(Debug)]
pub enum CmdOutcome {
    /// The hook answered it.
    Done(CmdReply),
    /// The hook gives it back, with all its buffers, for the generic layer
    /// (and the handler's `read`/`write`/… methods).
    NotHandled(ScsiCmd),
}

/// A hook's own answer to a command.
///
/// Build it with the constructors: [`data_in`](Self::data_in) and
/// [`filled`](Self::filled) zero whatever of the buffers the answer does
/// not cover and report the shorter length, so no earlier command's bytes
/// reach the initiator. A GOOD answer without them ([`good`](Self::good))
/// to a command with data-in buffers tells the kernel that every byte was
/// filled.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CmdReply {
    /// SCSI status.
    pub status: Status,
    /// Sense data, for CHECK CONDITION.
    pub sense: Option<Sense>,
    /// Bytes of data-in produced, when fewer than the buffers hold.
    pub read_len: Option<u32>,
}

impl CmdReply {
    /// GOOD.
    pub fn good() -> Self {
        Self::status(Status::Good)
    }

    /// A status without sense data (BUSY, RESERVATION CONFLICT, …).
    pub fn status(status: Status) -> Self {
        Self {
            status,
            sense: None,
            read_len: None,
        }
    }

    /// CHECK CONDITION with `sense`.
    pub fn check(sense: Sense) -> Self {
        Self {
            status: Status::CheckCondition,
            sense: Some(sense),
            read_len: None,
        }
    }

    /// GOOD with `data` as data-in: copied into `bufs` in order, the rest of
    /// them zeroed, and a shorter answer reported as such. Bytes beyond the
    /// buffers are dropped (the initiator's allocation length wins).
    pub fn data_in(bufs: &mut [DataBuf], data: &[u8]) -> Self {
        let placed = reply::with_data(bufs, reply::GOOD, &[], data);
        Self {
            read_len: placed.read_len,
            ..Self::good()
        }
    }

    /// GOOD after the hook filled the first `len` bytes of `bufs` itself
    /// (e.g. with io_uring): the rest is zeroed and the shorter length
    /// reported. The kernel takes a length of 0 as a full transfer of the
    /// (zeroed) buffers: a hook that produced nothing for a read should
    /// answer CHECK CONDITION instead.
    pub fn filled(bufs: &mut [DataBuf], len: usize) -> Self {
        if len >= buf::total_len(bufs) {
            return Self::good();
        }
        let filled = reply::filled(bufs, reply::GOOD, &[], u32::try_from(len).ok());
        Self {
            read_len: filled.read_len,
            ..Self::good()
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use tcmu_core::ScratchArea;

    #[test]
    fn data_in_zeroes_what_it_does_not_cover() {
        let area = ScratchArea::new(64).unwrap();
        area.fill(0, 64, 0xee).unwrap();
        let mut bufs = [area.lend(0, 8).unwrap(), area.lend(32, 8).unwrap()];
        let r = CmdReply::data_in(&mut bufs, &[1, 2, 3]);
        assert_eq!(r.read_len, Some(3));
        assert_eq!(r.status, Status::Good);
        drop(bufs);
        let got = area.to_vec().unwrap();
        assert_eq!(got[..8], [1, 2, 3, 0, 0, 0, 0, 0]);
        assert_eq!(got[8..32], [0xee; 24], "outside the buffers");
        assert_eq!(got[32..40], [0; 8]);

        let mut bufs = [area.lend(0, 8).unwrap()];
        assert_eq!(CmdReply::data_in(&mut bufs, &[9; 20]).read_len, None);
        assert_eq!(CmdReply::filled(&mut bufs, 5).read_len, Some(5));
        assert_eq!(CmdReply::filled(&mut bufs, 8).read_len, None);
        drop(bufs);
        assert_eq!(area.to_vec().unwrap()[..8], [9, 9, 9, 9, 9, 0, 0, 0]);
    }

    #[test]
    fn a_command_knows_when_buffers_were_taken() {
        let area = ScratchArea::new(16).unwrap();
        let data = vec![area.lend_all().unwrap()];
        let mut cmd = ScsiCmd::new(Cdb::from_slice(&[0x28; 10]), data);
        assert_eq!(cmd.opcode(), 0x28);
        assert_eq!(cmd.data_len(), 16);
        assert!(cmd.is_whole());
        let taken = cmd.take_data();
        assert!(!cmd.is_whole());
        drop(taken);
    }
}
