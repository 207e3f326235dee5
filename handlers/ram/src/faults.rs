//! Injected faults: what a `ram` device does wrong on purpose, so that the
//! runtime's error paths and an initiator's error handling can be tested
//! against a disk that fails exactly where and how a test asks.
//!
//! A [`FaultSet`] is plain data, parsed from the cfgstring by
//! [`crate::config`] and replaced as a whole when the device is
//! reconfigured. It decides, for one access, a [`Verdict`]; the handler
//! carries it out (delay, error, hang, panic, short read). Nothing here
//! does I/O or waits.
//!
//! Which fault wins when several apply: `not_ready` first; otherwise the
//! fault on the lowest logical block the access touches (the block a real
//! disk would reach first); on the same block, panic before hang before
//! fail before a short read.

use std::fmt;
use std::time::Duration;

/// An inclusive range of logical blocks, `first..=last`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockRange {
    /// The first block in the range.
    pub first: u64,
    /// The last block in the range (inclusive, `>= first`).
    pub last: u64,
}

impl BlockRange {
    /// The range `first..=last`; `None` when `last < first`.
    pub fn new(first: u64, last: u64) -> Option<Self> {
        (first <= last).then_some(Self { first, last })
    }

    /// The lowest block of the `blocks` blocks from `lba` on that lies in
    /// this range, if any.
    pub fn first_hit(&self, lba: u64, blocks: u64) -> Option<u64> {
        let end = lba.saturating_add(blocks.checked_sub(1)?);
        (end >= self.first && lba <= self.last).then(|| lba.max(self.first))
    }
}

impl fmt::Display for BlockRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

/// Which way data moves in an access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// From the device (READ, the compare half of COMPARE AND WRITE, the
    /// source of a copy, VERIFY).
    Read,
    /// To the device (WRITE, WRITE SAME, UNMAP, the write half of COMPARE
    /// AND WRITE, the destination of a copy).
    Write,
}

/// What a range fault does to an access that touches its range. The
/// order of the variants is the order of precedence on one block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Effect {
    /// The handler panics (the runtime must fail only this command).
    Panic,
    /// The access never completes on its own: its future stays pending
    /// until it is dropped.
    Hang,
    /// The access fails: MEDIUM ERROR with the first failing block in
    /// INFORMATION. A failed write writes nothing.
    Fail,
    /// A READ command returns only the blocks before the range, with GOOD
    /// status and a residual; one that starts inside the range has none to
    /// return and fails like [`Effect::Fail`] (the kernel ignores a
    /// residual of the whole transfer).
    Short,
}

/// One range fault: an effect on accesses of one direction that touch a
/// range of blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RangeFault {
    /// What happens.
    pub effect: Effect,
    /// To which accesses.
    pub access: Access,
    /// The blocks it covers.
    pub range: BlockRange,
}

/// The cfgstring keys of range faults, with what each injects.
pub const RANGE_FAULT_KEYS: [(&str, Effect, Access); 7] = [
    ("fail_read", Effect::Fail, Access::Read),
    ("fail_write", Effect::Fail, Access::Write),
    ("hang_read", Effect::Hang, Access::Read),
    ("hang_write", Effect::Hang, Access::Write),
    ("short_read", Effect::Short, Access::Read),
    ("panic_read", Effect::Panic, Access::Read),
    ("panic_write", Effect::Panic, Access::Write),
];

impl RangeFault {
    /// The cfgstring key of this fault (`fail_read`, …).
    pub fn key(&self) -> &'static str {
        RANGE_FAULT_KEYS
            .iter()
            .find(|(_, effect, access)| *effect == self.effect && *access == self.access)
            .map_or("?", |(key, _, _)| key)
    }
}

impl fmt::Display for RangeFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.key(), self.range)
    }
}

/// What the faults make of one access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// No fault applies: serve the access.
    Serve,
    /// `not_ready` is set: answer NOT READY.
    NotReady,
    /// A range fault applies, first at block `lba`.
    Hit {
        /// The fault.
        fault: RangeFault,
        /// The lowest block of the access inside the fault's range.
        lba: u64,
    },
}

/// Every fault injected into one device. The default injects nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FaultSet {
    /// Faults on ranges of blocks, in cfgstring order.
    pub ranges: Vec<RangeFault>,
    /// Every read, write and flush answers NOT READY.
    pub not_ready: bool,
    /// Every read and write waits this long before anything else happens.
    pub delay: Option<Duration>,
}

impl FaultSet {
    /// Whether nothing is injected.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty() && !self.not_ready && self.delay.is_none()
    }

    /// Whether some READ commands are to be answered short.
    pub fn has_short_reads(&self) -> bool {
        self.ranges.iter().any(|f| f.effect == Effect::Short)
    }

    /// The verdict for a handler-level access of `blocks` blocks from
    /// `lba`. Short reads do not apply here: they shape the answer to a
    /// READ command ([`FaultSet::for_read_command`]), not the bytes a read
    /// moves.
    pub fn for_access(&self, access: Access, lba: u64, blocks: u64) -> Verdict {
        self.decide(lba, blocks, |f| {
            f.access == access && f.effect != Effect::Short
        })
    }

    /// The verdict for a READ command of `blocks` blocks from `lba`,
    /// short reads included.
    pub fn for_read_command(&self, lba: u64, blocks: u64) -> Verdict {
        self.decide(lba, blocks, |f| f.access == Access::Read)
    }

    /// The first range fault that starts beyond the last block of a
    /// device of `blocks` blocks, if any (such a fault could never apply).
    pub fn outside(&self, blocks: u64) -> Option<&RangeFault> {
        self.ranges.iter().find(|f| f.range.first >= blocks)
    }

    fn decide(&self, lba: u64, blocks: u64, applies: impl Fn(&RangeFault) -> bool) -> Verdict {
        if self.not_ready {
            return Verdict::NotReady;
        }
        self.ranges
            .iter()
            .filter(|f| applies(f))
            .filter_map(|f| f.range.first_hit(lba, blocks).map(|at| (at, f)))
            .min_by_key(|(at, f)| (*at, f.effect))
            .map_or(Verdict::Serve, |(at, f)| Verdict::Hit {
                fault: *f,
                lba: at,
            })
    }
}

/// The faults in cfgstring form (`fail_read=8-15;delay_ms=20`), empty
/// when there are none.
impl fmt::Display for FaultSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut sep = "";
        for fault in &self.ranges {
            write!(f, "{sep}{fault}")?;
            sep = ";";
        }
        if self.not_ready {
            write!(f, "{sep}not_ready")?;
            sep = ";";
        }
        if let Some(d) = self.delay {
            write!(f, "{sep}delay_ms={}", d.as_millis())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn range(first: u64, last: u64) -> BlockRange {
        BlockRange::new(first, last).unwrap()
    }

    fn fault(effect: Effect, access: Access, first: u64, last: u64) -> RangeFault {
        RangeFault {
            effect,
            access,
            range: range(first, last),
        }
    }

    #[test]
    fn ranges_find_the_first_block_they_share() {
        assert!(BlockRange::new(5, 4).is_none());
        let r = range(10, 19);
        assert_eq!(r.first_hit(0, 10), None);
        assert_eq!(r.first_hit(0, 11), Some(10));
        assert_eq!(r.first_hit(12, 4), Some(12));
        assert_eq!(r.first_hit(19, 100), Some(19));
        assert_eq!(r.first_hit(20, 1), None);
        assert_eq!(r.first_hit(15, 0), None, "no blocks, no hit");
        assert_eq!(range(7, 7).first_hit(u64::MAX - 1, 5), None);
        assert_eq!(
            range(u64::MAX, u64::MAX).first_hit(u64::MAX - 1, 5),
            Some(u64::MAX),
            "no overflow at the end of the LBA space"
        );
        assert_eq!(r.to_string(), "10-19");
        assert_eq!(range(3, 3).to_string(), "3");
    }

    #[test]
    fn lowest_block_wins_then_the_harsher_effect() {
        let set = FaultSet {
            ranges: vec![
                fault(Effect::Fail, Access::Read, 20, 29),
                fault(Effect::Short, Access::Read, 10, 19),
                fault(Effect::Hang, Access::Read, 20, 20),
                fault(Effect::Fail, Access::Write, 0, 100),
            ],
            ..FaultSet::default()
        };
        // The short read lies first, but plain accesses ignore it.
        assert_eq!(
            set.for_access(Access::Read, 5, 20),
            Verdict::Hit {
                fault: set.ranges[2],
                lba: 20
            },
            "hang and fail both start at 20: hang wins"
        );
        assert_eq!(
            set.for_read_command(5, 20),
            Verdict::Hit {
                fault: set.ranges[1],
                lba: 10
            }
        );
        assert_eq!(
            set.for_access(Access::Read, 21, 4),
            Verdict::Hit {
                fault: set.ranges[0],
                lba: 21
            }
        );
        assert_eq!(set.for_access(Access::Read, 0, 10), Verdict::Serve);
        assert_eq!(set.for_access(Access::Read, 30, 8), Verdict::Serve);
        assert_eq!(
            set.for_access(Access::Write, 100, 8),
            Verdict::Hit {
                fault: set.ranges[3],
                lba: 100
            }
        );
        assert!(set.has_short_reads());
        assert!(!set.is_empty());
    }

    #[test]
    fn not_ready_overrides_everything() {
        let set = FaultSet {
            ranges: vec![fault(Effect::Panic, Access::Write, 0, 0)],
            not_ready: true,
            delay: None,
        };
        assert_eq!(set.for_access(Access::Write, 0, 1), Verdict::NotReady);
        assert_eq!(set.for_read_command(9, 1), Verdict::NotReady);
    }

    #[test]
    fn displays_in_cfgstring_form() {
        assert_eq!(FaultSet::default().to_string(), "");
        assert!(FaultSet::default().is_empty());
        let set = FaultSet {
            ranges: vec![
                fault(Effect::Fail, Access::Read, 8, 15),
                fault(Effect::Panic, Access::Write, 3, 3),
            ],
            not_ready: true,
            delay: Some(Duration::from_millis(20)),
        };
        assert_eq!(
            set.to_string(),
            "fail_read=8-15;panic_write=3;not_ready;delay_ms=20"
        );
        assert_eq!(set.outside(16), None);
        assert_eq!(set.outside(8), Some(&set.ranges[0]));
    }
}
