//! The completion rules: how a command's answer reaches its data-in
//! buffers without leaking an earlier command's bytes.
//!
//! The kernel reuses the data area from command to command, and hands an
//! initiator back the whole data-in buffer of its command unless the
//! completion says fewer bytes are valid. So whatever is not filled with
//! this command's answer still holds whatever some earlier command (maybe
//! another initiator's) left there. Every completion of a command with
//! data-in buffers therefore follows these rules, which the functions
//! here apply:
//!
//! - an answer computed in memory ([`with_data`]) is copied into the
//!   buffers and the rest of the buffers is zeroed; when it is shorter
//!   than the buffers, `read_len` reports its length;
//! - buffers filled in place by I/O ([`filled`]) are zeroed past the bytes
//!   filled, and `read_len` reports that count;
//! - CHECK CONDITION carries its sense bytes (fixed format, at most 96
//!   bytes are sent) and no data.
//!
//! The functions work on bytes and status codes, so they need no SCSI
//! crate: `status` is the SCSI status byte ([`GOOD`], [`CHECK_CONDITION`],
//! …) and `sense` the sense bytes of a CHECK CONDITION (ignored
//! otherwise).

use crate::buf::{self, DataBuf};
use crate::ring::Completion;

/// SCSI status GOOD.
pub const GOOD: u8 = 0x00;

/// SCSI status CHECK CONDITION: the completion carries sense data.
pub const CHECK_CONDITION: u8 = 0x02;

/// The completion of a command answered from memory: `data` (the whole
/// answer, e.g. INQUIRY data or the blocks of a READ served from RAM) goes
/// into `bufs`, whatever the buffers hold beyond it is zeroed, and a
/// `data` shorter than the buffers is reported with `read_len`. An answer
/// longer than the buffers is cut to them.
///
/// With `status` [`CHECK_CONDITION`] the completion carries `sense`; the
/// buffers are still overwritten (with `data`, normally empty, and zeroes),
/// so nothing stale is left in them either.
pub fn with_data(bufs: &mut [DataBuf], status: u8, sense: &[u8], data: &[u8]) -> Completion {
    let total = buf::total_len(bufs);
    let placed = if total > 0 {
        buf::scatter(bufs, data)
    } else {
        0
    };
    if status == CHECK_CONDITION {
        return Completion::check_condition(sense);
    }
    let c = Completion::status(status);
    if !data.is_empty() && placed < total {
        c.with_read_len(placed as u32)
    } else {
        c
    }
}

/// The completion of a command whose buffers were filled in place (a
/// handler's I/O into the data area). With `filled` = `Some(n)`, the first
/// `n` bytes of `bufs` are the answer: the rest is zeroed and `read_len`
/// says `n`. With `None` the buffers are taken as wholly filled (or as
/// holding no data-in) and left alone.
///
/// With `status` [`CHECK_CONDITION`] the completion carries `sense` and the
/// buffers are left alone: the kernel returns no data with it.
pub fn filled(bufs: &mut [DataBuf], status: u8, sense: &[u8], filled: Option<u32>) -> Completion {
    if status == CHECK_CONDITION {
        return Completion::check_condition(sense);
    }
    let c = Completion::status(status);
    match filled {
        Some(n) => {
            buf::zero_beyond(bufs, n as usize);
            c.with_read_len(n)
        }
        None => c,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::ScratchArea;

    /// An area full of stale bytes and two buffers of 4 and 6 bytes.
    fn stale() -> (ScratchArea, Vec<DataBuf>) {
        let area = ScratchArea::new(64).unwrap();
        area.fill(0, 64, 0xee).unwrap();
        let bufs = vec![area.lend(8, 4).unwrap(), area.lend(32, 6).unwrap()];
        (area, bufs)
    }

    fn contents(area: &ScratchArea, bufs: Vec<DataBuf>) -> Vec<u8> {
        drop(bufs);
        let all = area.to_vec().unwrap();
        [&all[8..12], &all[32..38]].concat()
    }

    #[test]
    fn a_short_answer_is_zero_filled_and_reports_its_length() {
        let (area, mut bufs) = stale();
        let c = with_data(&mut bufs, GOOD, &[], &[1, 2, 3, 4, 5]);
        assert_eq!(c, Completion::good().with_read_len(5));
        assert_eq!(contents(&area, bufs), [1, 2, 3, 4, 5, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn an_answer_filling_the_buffers_needs_no_read_len() {
        let (area, mut bufs) = stale();
        let data: Vec<u8> = (1..=12).collect();
        let c = with_data(&mut bufs, GOOD, &[], &data);
        assert_eq!(c, Completion::good());
        assert_eq!(contents(&area, bufs), data[..10]);
    }

    #[test]
    fn no_answer_zeroes_the_buffers() {
        let (area, mut bufs) = stale();
        assert_eq!(with_data(&mut bufs, GOOD, &[], &[]), Completion::good());
        assert_eq!(contents(&area, bufs), [0; 10]);
        assert_eq!(with_data(&mut [], GOOD, &[], &[1]), Completion::good());
    }

    #[test]
    fn check_condition_carries_sense_and_leaves_nothing_stale() {
        let sense = [0x70, 0, 5, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x24, 0];
        let (area, mut bufs) = stale();
        let c = with_data(&mut bufs, CHECK_CONDITION, &sense, &[]);
        assert_eq!(c, Completion::check_condition(&sense));
        assert_eq!(c.read_len, None);
        assert_eq!(contents(&area, bufs), [0; 10]);

        let (area, mut bufs) = stale();
        let c = filled(&mut bufs, CHECK_CONDITION, &sense, Some(3));
        assert_eq!(c, Completion::check_condition(&sense));
        assert_eq!(contents(&area, bufs), [0xee; 10], "no data goes back");
    }

    #[test]
    fn filled_buffers_are_zeroed_past_the_count() {
        let (area, mut bufs) = stale();
        let c = filled(&mut bufs, GOOD, &[], Some(6));
        assert_eq!(c, Completion::good().with_read_len(6));
        assert_eq!(
            contents(&area, bufs),
            [0xee, 0xee, 0xee, 0xee, 0xee, 0xee, 0, 0, 0, 0]
        );

        let (area, mut bufs) = stale();
        assert_eq!(
            filled(&mut bufs, GOOD, &[], Some(0)),
            Completion::good().with_read_len(0)
        );
        assert_eq!(contents(&area, bufs), [0; 10]);

        let (area, mut bufs) = stale();
        assert_eq!(filled(&mut bufs, GOOD, &[], None), Completion::good());
        assert_eq!(contents(&area, bufs), [0xee; 10]);

        // Another status (CONDITION MET, BUSY…) keeps the rules.
        let (area, mut bufs) = stale();
        let c = filled(&mut bufs, 0x04, &[], Some(4));
        assert_eq!(c, Completion::status(0x04).with_read_len(4));
        assert_eq!(contents(&area, bufs)[4..], [0; 6]);
    }
}
