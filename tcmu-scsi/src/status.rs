//! SCSI status codes (SAM-5 table 40) as returned in the TCMU completion.

/// The SCSI status byte of a completed command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Status {
    /// The command completed successfully.
    Good = 0x00,
    /// Sense data describes an error or exception.
    CheckCondition = 0x02,
    /// PRE-FETCH: the requested blocks fit in the cache.
    ConditionMet = 0x04,
    /// The logical unit is busy; the initiator should retry.
    Busy = 0x08,
    /// A reservation conflict prevented the command.
    ReservationConflict = 0x18,
    /// The task set is full; the initiator should retry later.
    TaskSetFull = 0x28,
    /// The command was aborted by another I_T nexus.
    TaskAborted = 0x40,
}

impl Status {
    /// The status byte as sent on the wire.
    pub const fn code(self) -> u8 {
        self as u8
    }
}

#[cfg(test)]
mod tests {
    use super::Status;

    #[test]
    fn codes() {
        assert_eq!(Status::Good.code(), 0x00);
        assert_eq!(Status::CheckCondition.code(), 0x02);
        assert_eq!(Status::ConditionMet.code(), 0x04);
        assert_eq!(Status::Busy.code(), 0x08);
        assert_eq!(Status::ReservationConflict.code(), 0x18);
        assert_eq!(Status::TaskSetFull.code(), 0x28);
        assert_eq!(Status::TaskAborted.code(), 0x40);
    }
}
