//! The shared-memory layout of a TCMU device, as the kernel's
//! `include/uapi/linux/target_core_user.h` defines it.
//!
//! These types describe bytes; nothing in this crate ever forms a reference
//! to one of them inside the mapping (the kernel writes that memory
//! concurrently). The ring code reads and writes fields by the offsets these
//! definitions give (`core::mem::offset_of!`), and the tests below pin every
//! size and offset to the kernel's ABI.

/// The only mailbox version this crate speaks (`TCMU_MAILBOX_VERSION`).
pub const MAILBOX_VERSION: u16 = 2;

/// Mailbox flag: the kernel accepts out-of-order completions.
pub const MAILBOX_FLAG_CAP_OOOC: u16 = 1 << 0;
/// Mailbox flag: the kernel honours `read_len` when `UFLAG_READ_LEN` is set.
pub const MAILBOX_FLAG_CAP_READ_LEN: u16 = 1 << 1;
/// Mailbox flag: the kernel can send TMR notifications.
pub const MAILBOX_FLAG_CAP_TMR: u16 = 1 << 2;
/// Mailbox flag: the kernel can keep a command's data buffer after completion.
pub const MAILBOX_FLAG_CAP_KEEP_BUF: u16 = 1 << 3;

/// Entry opcode: padding up to the end of the ring.
pub const OP_PAD: u8 = 0;
/// Entry opcode: a SCSI command.
pub const OP_CMD: u8 = 1;
/// Entry opcode: a task management notification.
pub const OP_TMR: u8 = 2;
/// Low bits of `len_op` holding the opcode; the rest is the entry length.
pub const OP_MASK: u32 = 0x7;
/// Entries are aligned to this many bytes.
pub const OP_ALIGN_SIZE: u32 = 8;

/// User flag: the daemon did not understand this entry's opcode.
pub const UFLAG_UNKNOWN_OP: u8 = 0x1;
/// User flag: `rsp.read_len` holds the number of bytes actually read.
pub const UFLAG_READ_LEN: u8 = 0x2;
/// User flag: keep the data buffer (needs `CAP_KEEP_BUF`).
pub const UFLAG_KEEP_BUF: u8 = 0x4;

/// Size of the sense buffer in a response.
pub const SENSE_BUFFER_SIZE: usize = 96;

/// TMR types carried by a TMR entry (`TCMU_TMR_*`).
pub mod tmr {
    /// Unknown TMR.
    pub const UNKNOWN: u8 = 0;
    /// ABORT TASK.
    pub const ABORT_TASK: u8 = 1;
    /// ABORT TASK SET.
    pub const ABORT_TASK_SET: u8 = 2;
    /// CLEAR ACA.
    pub const CLEAR_ACA: u8 = 3;
    /// CLEAR TASK SET.
    pub const CLEAR_TASK_SET: u8 = 4;
    /// LOGICAL UNIT RESET.
    pub const LUN_RESET: u8 = 5;
    /// TARGET WARM RESET.
    pub const TARGET_WARM_RESET: u8 = 6;
    /// TARGET COLD RESET.
    pub const TARGET_COLD_RESET: u8 = 7;
    /// Pseudo LUN reset caused by a PERSISTENT RESERVE OUT.
    pub const LUN_RESET_PRO: u8 = 128;
}

/// `struct tcmu_mailbox`: at offset 0 of map0. `cmd_tail` sits on its own
/// 64-byte cache line because the daemon writes it while the kernel writes
/// `cmd_head`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Mailbox {
    /// Mailbox version, [`MAILBOX_VERSION`].
    pub version: u16,
    /// `MAILBOX_FLAG_*` capabilities of the kernel.
    pub flags: u16,
    /// Offset of the command ring from the start of the mapping.
    pub cmdr_off: u32,
    /// Size of the command ring in bytes.
    pub cmdr_size: u32,
    /// Written by the kernel: end of the posted entries (ring-relative).
    pub cmd_head: u32,
    /// Padding up to the next cache line.
    pub pad0: [u8; 48],
    /// Written by the daemon: end of the completed entries (ring-relative).
    pub cmd_tail: u32,
    /// Padding to the end of the cache line.
    pub pad1: [u8; 60],
}

/// `struct tcmu_cmd_entry_hdr`: the first 8 bytes of every ring entry.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct EntryHeader {
    /// Entry length (a multiple of 8) with the opcode in the low 3 bits.
    pub len_op: u32,
    /// Kernel command id, echoed in the completion.
    pub cmd_id: u16,
    /// Flags set by the kernel.
    pub kflags: u8,
    /// Flags set by the daemon (`UFLAG_*`).
    pub uflags: u8,
}

/// `struct iovec` as stored in a ring entry: `base` is an offset from the
/// start of the mapping, not a pointer.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct RingIovec {
    /// Offset of the buffer from the start of the mapping.
    pub base: u64,
    /// Length of the buffer in bytes.
    pub len: u64,
}

/// The request half of `struct tcmu_cmd_entry` (op = CMD), followed in the
/// ring by `iov_cnt + iov_bidi_cnt + iov_dif_cnt` [`RingIovec`]s.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct CmdRequest {
    /// Entry header.
    pub hdr: EntryHeader,
    /// Number of data iovecs.
    pub iov_cnt: u32,
    /// Number of bidirectional (data-in of a BIDI command) iovecs.
    pub iov_bidi_cnt: u32,
    /// Number of protection-information iovecs.
    pub iov_dif_cnt: u32,
    /// Offset of the CDB from the start of the mapping.
    pub cdb_off: u64,
    /// Reserved.
    pub pad1: u64,
    /// Reserved.
    pub pad2: u64,
}

/// The response half of `struct tcmu_cmd_entry`, written by the daemon over
/// the request bytes of the slot at the completion position.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct CmdResponse {
    /// Entry header (the daemon sets `cmd_id` and `uflags`).
    pub hdr: EntryHeader,
    /// SCSI status byte.
    pub scsi_status: u8,
    /// Reserved.
    pub pad1: u8,
    /// Reserved.
    pub pad2: u16,
    /// Bytes of data-in actually produced (with `UFLAG_READ_LEN`).
    pub read_len: u32,
    /// Sense data for CHECK CONDITION.
    pub sense: [u8; SENSE_BUFFER_SIZE],
}

/// `struct tcmu_tmr_entry` (op = TMR), followed by `cmd_cnt` u16 command ids.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct TmrEntry {
    /// Entry header.
    pub hdr: EntryHeader,
    /// One of the [`tmr`] types.
    pub tmr_type: u8,
    /// Reserved.
    pub pad1: u8,
    /// Reserved.
    pub pad2: u16,
    /// Number of command ids that follow.
    pub cmd_cnt: u32,
    /// Reserved.
    pub pad3: u64,
    /// Reserved.
    pub pad4: u64,
}

/// Size of `struct tcmu_cmd_entry` (the larger of request and response):
/// every command slot is at least this long.
pub const CMD_ENTRY_SIZE: usize = 112;

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{offset_of, size_of};

    #[test]
    fn mailbox_layout() {
        assert_eq!(offset_of!(Mailbox, version), 0);
        assert_eq!(offset_of!(Mailbox, flags), 2);
        assert_eq!(offset_of!(Mailbox, cmdr_off), 4);
        assert_eq!(offset_of!(Mailbox, cmdr_size), 8);
        assert_eq!(offset_of!(Mailbox, cmd_head), 12);
        assert_eq!(offset_of!(Mailbox, cmd_tail), 64);
        assert_eq!(size_of::<Mailbox>(), 128);
    }

    #[test]
    fn header_layout() {
        assert_eq!(size_of::<EntryHeader>(), 8);
        assert_eq!(offset_of!(EntryHeader, len_op), 0);
        assert_eq!(offset_of!(EntryHeader, cmd_id), 4);
        assert_eq!(offset_of!(EntryHeader, kflags), 6);
        assert_eq!(offset_of!(EntryHeader, uflags), 7);
    }

    #[test]
    fn request_layout() {
        assert_eq!(offset_of!(CmdRequest, iov_cnt), 8);
        assert_eq!(offset_of!(CmdRequest, iov_bidi_cnt), 12);
        assert_eq!(offset_of!(CmdRequest, iov_dif_cnt), 16);
        assert_eq!(offset_of!(CmdRequest, cdb_off), 24);
        assert_eq!(size_of::<CmdRequest>(), 48);
        assert_eq!(size_of::<RingIovec>(), 16);
    }

    #[test]
    fn response_layout() {
        assert_eq!(offset_of!(CmdResponse, scsi_status), 8);
        assert_eq!(offset_of!(CmdResponse, read_len), 12);
        assert_eq!(offset_of!(CmdResponse, sense), 16);
        assert_eq!(size_of::<CmdResponse>(), CMD_ENTRY_SIZE);
    }

    #[test]
    fn tmr_layout() {
        assert_eq!(offset_of!(TmrEntry, tmr_type), 8);
        assert_eq!(offset_of!(TmrEntry, cmd_cnt), 12);
        assert_eq!(size_of::<TmrEntry>(), 32);
    }
}
