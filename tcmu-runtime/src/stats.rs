//! Per-device statistics: command, byte, error and timeout counters and a
//! latency histogram, updated lock-free by the device's worker and read by
//! anyone holding the [`DeviceStats`] (the daemon's metrics file, D-Bus).
//!
//! What is counted, and when:
//!
//! - A command is recorded once, when the device task writes its completion
//!   to the ring; its latency runs from the moment it was read off the ring
//!   to then (queueing behind the range locks and the handler included).
//!   Commands read off the ring together share one start time, and commands
//!   that finish together one end time (one clock reading per burst, not
//!   two per command).
//!   Unknown ring entries and TMRs are not SCSI commands and are not counted.
//! - Read and write bytes are what crossed the ring for READ (6/10/12/16)
//!   and WRITE (6/10/12/16) or WRITE AND VERIFY commands that completed with
//!   GOOD status: the data-out length of a write, and for a read the bytes
//!   returned (`read_len` when the answer was shorter than the buffer). That
//!   is what an initiator counts (fio's `io_bytes`, `iostat`).
//! - WRITE SAME, UNMAP, COMPARE AND WRITE, VERIFY, EXTENDED COPY and FORMAT
//!   UNIT count as commands only: the bytes they change are not bytes the
//!   initiator transferred, and adding them would make the byte counters
//!   disagree with every initiator-side tool.
//! - An error is any completion whose status is not GOOD (CHECK CONDITION,
//!   BUSY, …); such commands add no bytes.
//! - A timeout is a command that ran longer than the device's time-out:
//!   `tcmur_cmd_time_out` from its configuration string, else
//!   `attrib/cmd_time_out` (read when the device is opened; 0 disables it).
//!   It is counted once, as soon as the device task sees it past the limit
//!   while it still runs (the task looks at least once a second), or when
//!   it completes, whichever comes first.
//! - An abort is a command cancelled by a TMR (ABORT TASK, LUN RESET, …)
//!   and answered TASK ABORTED; it is not counted as a command.
//! - An ALUA state change is the handler's
//!   [`alua_state`](crate::BlockHandler::alua_state) settling on another
//!   primary state (for rbd: this gateway took the image's lock, or lost
//!   it), counted when the next command sees it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (inclusive, microseconds) of the latency histogram's
/// buckets; a last, unbounded bucket catches everything slower.
pub const LATENCY_BOUNDS_US: [u64; 16] = [
    10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000,
    1_000_000, 10_000_000,
];

/// Number of histogram buckets, the unbounded one included.
pub const LATENCY_BUCKETS: usize = LATENCY_BOUNDS_US.len() + 1;

/// Which way a command moved data, for the byte counters (see the module
/// documentation for what each class includes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Data-in (READ and friends): counted in `read_bytes`.
    Read,
    /// Data-out that lands on the medium (WRITE and friends).
    Write,
    /// Everything else (INQUIRY, UNMAP, …): counted as a command only.
    Other,
}

impl Direction {
    /// Classifies a CDB by its operation code.
    pub fn of_cdb(cdb: &[u8]) -> Self {
        // WRITE SAME 0x41/0x93, UNMAP 0x42, COMPARE AND WRITE 0x89, VERIFY
        // 0x2f/0xaf/0x8f, EXTENDED COPY 0x83 and FORMAT UNIT 0x04 fall
        // through to Other on purpose: their data-out is not what they
        // write.
        match cdb.first().copied() {
            // READ 6/10/12/16
            Some(0x08 | 0x28 | 0xa8 | 0x88) => Direction::Read,
            // WRITE 6/10/12/16, WRITE AND VERIFY 10/12/16
            Some(0x0a | 0x2a | 0xaa | 0x8a | 0x2e | 0xae | 0x8e) => Direction::Write,
            _ => Direction::Other,
        }
    }
}

/// Live counters of one device.
#[derive(Debug, Default)]
pub struct DeviceStats {
    commands: AtomicU64,
    read_commands: AtomicU64,
    write_commands: AtomicU64,
    read_bytes: AtomicU64,
    write_bytes: AtomicU64,
    errors: AtomicU64,
    timeouts: AtomicU64,
    aborts: AtomicU64,
    alua_changes: AtomicU64,
    latency_sum_us: AtomicU64,
    latency: [AtomicU64; LATENCY_BUCKETS],
}

/// A point-in-time copy of a device's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Commands completed (any status).
    pub commands: u64,
    /// READ commands completed with GOOD status.
    pub read_commands: u64,
    /// WRITE commands completed with GOOD status.
    pub write_commands: u64,
    /// Bytes moved by READ commands completed with GOOD status.
    pub read_bytes: u64,
    /// Bytes moved by WRITE commands completed with GOOD status.
    pub write_bytes: u64,
    /// Commands completed with a status other than GOOD.
    pub errors: u64,
    /// Commands that ran past their time-out.
    pub timeouts: u64,
    /// Commands aborted by a TMR.
    pub aborts: u64,
    /// Times the handler's ALUA state settled on another state.
    pub alua_changes: u64,
    /// Sum of all command latencies, in microseconds.
    pub latency_sum_us: u64,
    /// Commands per latency bucket (bounds in [`LATENCY_BOUNDS_US`]), not
    /// cumulative.
    pub latency: [u64; LATENCY_BUCKETS],
}

/// Bytes a completed command moved for the byte counters: `buffer` is the
/// total length of its data buffers; a READ answered with `read_len` moved
/// only that much.
pub fn moved_bytes(dir: Direction, buffer: u64, read_len: Option<u32>) -> u64 {
    match (dir, read_len) {
        (Direction::Read, Some(n)) => u64::from(n).min(buffer),
        _ => buffer,
    }
}

impl DeviceStats {
    /// Counts one completed command.
    pub fn record(&self, dir: Direction, bytes: u64, status: u8, latency: Duration) {
        self.commands.fetch_add(1, Ordering::Relaxed);
        if status == 0 {
            match dir {
                Direction::Read => {
                    self.read_commands.fetch_add(1, Ordering::Relaxed);
                    self.read_bytes.fetch_add(bytes, Ordering::Relaxed);
                }
                Direction::Write => {
                    self.write_commands.fetch_add(1, Ordering::Relaxed);
                    self.write_bytes.fetch_add(bytes, Ordering::Relaxed);
                }
                Direction::Other => {}
            }
        } else {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.latency_sum_us.fetch_add(us, Ordering::Relaxed);
        let bucket = LATENCY_BOUNDS_US
            .iter()
            .position(|&bound| us <= bound)
            .unwrap_or(LATENCY_BOUNDS_US.len());
        self.latency[bucket].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a command that ran past its time-out.
    pub fn record_timeout(&self) {
        self.timeouts.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one command aborted by a TMR.
    pub fn record_abort(&self) {
        self.aborts.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts the handler's ALUA state settling on another state.
    pub fn record_alua_change(&self) {
        self.alua_changes.fetch_add(1, Ordering::Relaxed);
    }

    /// Reads every counter.
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            commands: self.commands.load(Ordering::Relaxed),
            read_commands: self.read_commands.load(Ordering::Relaxed),
            write_commands: self.write_commands.load(Ordering::Relaxed),
            read_bytes: self.read_bytes.load(Ordering::Relaxed),
            write_bytes: self.write_bytes.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            timeouts: self.timeouts.load(Ordering::Relaxed),
            aborts: self.aborts.load(Ordering::Relaxed),
            alua_changes: self.alua_changes.load(Ordering::Relaxed),
            latency_sum_us: self.latency_sum_us.load(Ordering::Relaxed),
            latency: std::array::from_fn(|i| self.latency[i].load(Ordering::Relaxed)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_reads_writes_errors_and_buckets() {
        let s = DeviceStats::default();
        s.record(Direction::Read, 4096, 0, Duration::from_micros(7));
        s.record(Direction::Write, 8192, 0, Duration::from_micros(300));
        s.record(Direction::Write, 8192, 2, Duration::from_secs(20));
        s.record(Direction::Other, 0, 0, Duration::from_micros(10));
        let snap = s.snapshot();
        assert_eq!(snap.commands, 4);
        assert_eq!((snap.read_commands, snap.read_bytes), (1, 4096));
        assert_eq!((snap.write_commands, snap.write_bytes), (1, 8192));
        assert_eq!(snap.errors, 1);
        assert_eq!(snap.latency[0], 2); // 7 µs and 10 µs
        assert_eq!(snap.latency[5], 1); // 300 µs: the ≤ 500 µs bucket
        assert_eq!(snap.latency[LATENCY_BUCKETS - 1], 1);
        assert_eq!(snap.latency.iter().sum::<u64>(), 4);
    }

    #[test]
    fn read_len_limits_read_bytes_only() {
        assert_eq!(moved_bytes(Direction::Read, 4096, Some(512)), 512);
        assert_eq!(moved_bytes(Direction::Read, 512, Some(4096)), 512);
        assert_eq!(moved_bytes(Direction::Read, 4096, None), 4096);
        assert_eq!(moved_bytes(Direction::Write, 4096, Some(512)), 4096);
    }

    #[test]
    fn timeouts_are_counted_apart() {
        let s = DeviceStats::default();
        s.record_timeout();
        let snap = s.snapshot();
        assert_eq!((snap.timeouts, snap.commands), (1, 0));
    }

    #[test]
    fn classifies_opcodes() {
        assert_eq!(Direction::of_cdb(&[0x28]), Direction::Read);
        assert_eq!(Direction::of_cdb(&[0x8a]), Direction::Write);
        assert_eq!(Direction::of_cdb(&[0x12]), Direction::Other);
        for op in [0x41, 0x93, 0x42, 0x89, 0x2f, 0x8f, 0x83, 0x04] {
            assert_eq!(Direction::of_cdb(&[op]), Direction::Other, "{op:#x}");
        }
        assert_eq!(Direction::of_cdb(&[]), Direction::Other);
    }
}
