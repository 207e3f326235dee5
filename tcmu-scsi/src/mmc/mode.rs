//! The mode pages of an optical drive (MMC-6 7) for MODE SENSE and MODE
//! SELECT (6) and (10): 01h read/write error recovery, 08h caching, 1Dh
//! time-out and protect, and 2Ah, the CD/DVD capabilities and mechanical
//! status page that Linux's sr driver reads to learn what the drive reads
//! and writes, whether it ejects and locks.
//!
//! An MM device's mode parameter header has no block descriptors and no
//! device-specific parameter; nothing is changeable (the changeable values
//! are all zero), so MODE SELECT accepts the current values only. Saved
//! values are not supported. Page 00h with current values answers the
//! header alone, as tcmu-runner's fbo handler does.

use crate::bytes::{be16, put16, u8_at};
use crate::mmc::config::{EJECT, LOCK, MECHANISM_TRAY};
use crate::mmc::Drive;
use crate::sense::Sense;

/// Read/write error recovery.
pub const READ_WRITE_ERROR_RECOVERY: u8 = 0x01;
/// Caching.
pub const CACHING: u8 = 0x08;
/// Time-out and protect.
pub const TIMEOUT_AND_PROTECT: u8 = 0x1d;
/// CD/DVD capabilities and mechanical status.
pub const CAPABILITIES: u8 = 0x2a;
/// Every page, in the order page 3Fh returns them.
pub const PAGES: [u8; 4] = [
    READ_WRITE_ERROR_RECOVERY,
    CACHING,
    TIMEOUT_AND_PROTECT,
    CAPABILITIES,
];

/// Page control 1: changeable values.
const PC_CHANGEABLE: u8 = 1;
/// Page control 3: saved values.
const PC_SAVED: u8 = 3;

/// Read speed reported in page 2Ah (obsolete fields, still read by Linux
/// for its speed): 8x DVD, in kB/s.
pub const READ_SPEED: u16 = 11_080;
/// Write speed reported in page 2Ah by a DVD-RAM drive: 5x DVD, in kB/s.
pub const WRITE_SPEED: u16 = 6_925;
/// Buffer size reported in page 2Ah, in KiB.
pub const BUFFER_KIB: u16 = 2048;

/// What the pages depend on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModeState {
    /// The drive (what page 2Ah says it writes).
    pub drive: Drive,
    /// WCE of the caching page.
    pub write_cache: bool,
    /// PREVENT ALLOW MEDIUM REMOVAL holds the medium (LOCK STATE of page
    /// 2Ah).
    pub locked: bool,
}

/// Mode page `code` with page control `pc` (0 current, 1 changeable, 2
/// default), or `None` for a page the drive does not have.
pub fn page(code: u8, pc: u8, state: &ModeState) -> Option<Vec<u8>> {
    let len = match code {
        READ_WRITE_ERROR_RECOVERY | CACHING => 12,
        TIMEOUT_AND_PROTECT => 10,
        CAPABILITIES => 22,
        _ => return None,
    };
    let mut p = vec![0u8; len];
    p[0] = code;
    p[1] = (len - 2) as u8;
    if pc == PC_CHANGEABLE {
        return Some(p);
    }
    match code {
        READ_WRITE_ERROR_RECOVERY => {
            p[3] = 5; // READ RETRY COUNT
            p[8] = 5; // WRITE RETRY COUNT
        }
        CACHING => {
            if state.write_cache {
                p[2] = 0x04; // WCE
            }
        }
        TIMEOUT_AND_PROTECT => {
            // GROUP 1 and GROUP 2 MINIMUM TIME-OUT: as long as it takes.
            p[6..10].fill(0xff);
        }
        _ => {
            // Reads CD-R, CD-RW, DVD-ROM, DVD-R and DVD-RAM media.
            p[2] = 0x3b;
            if state.drive.writes() {
                p[3] = 0x20; // writes DVD-RAM
            }
            p[6] = MECHANISM_TRAY | EJECT | LOCK | if state.locked { 0x02 } else { 0 };
            put16(&mut p, 8, READ_SPEED);
            put16(&mut p, 12, BUFFER_KIB);
            put16(&mut p, 14, READ_SPEED);
            if state.drive.writes() {
                put16(&mut p, 18, WRITE_SPEED);
                put16(&mut p, 20, WRITE_SPEED);
            }
        }
    }
    Some(p)
}

/// Answers MODE SENSE (before allocation-length truncation): the mode
/// parameter header of MODE SENSE (10) or (6), no block descriptors
/// (DBD and LLBAA change nothing), then the page, or every page for 3Fh.
pub fn mode_sense(
    state: &ModeState,
    ten: bool,
    pc: u8,
    page_code: u8,
    subpage: u8,
) -> Result<Vec<u8>, Sense> {
    if pc == PC_SAVED {
        return Err(Sense::saving_parameters_not_supported());
    }
    let header = if ten { 8 } else { 4 };
    let mut b = vec![0u8; header];
    match (page_code, subpage) {
        (0x3f, 0x00 | 0xff) => {
            for code in PAGES {
                b.extend(page(code, pc, state).unwrap_or_default());
            }
        }
        (0x3f, _) => return Err(Sense::invalid_field_in_cdb(3, None)),
        // The vendor page: the header alone.
        (0x00, 0x00) if pc == 0 => {}
        (code, 0x00) => match page(code, pc, state) {
            Some(p) => b.extend(p),
            None => return Err(Sense::invalid_field_in_cdb(2, Some(5))),
        },
        (code, _) if page(code, pc, state).is_some() => {
            return Err(Sense::invalid_field_in_cdb(3, None))
        }
        _ => return Err(Sense::invalid_field_in_cdb(2, Some(5))),
    }
    if ten {
        let len = (b.len() - 2) as u16;
        put16(&mut b, 0, len);
    } else {
        b[0] = (b.len() - 1) as u8;
    }
    Ok(b)
}

/// Checks a MODE SELECT parameter list (`list`, cut to the PARAMETER LIST
/// LENGTH): a mode parameter header of MODE SELECT (10) or (6) without
/// block descriptors, then whole pages the drive has, each equal to its
/// current values (the PS bit aside): nothing is changeable.
pub fn mode_select(state: &ModeState, ten: bool, list: &[u8]) -> Result<(), Sense> {
    let header = if ten { 8 } else { 4 };
    if list.len() < header {
        return Err(Sense::parameter_list_length_error());
    }
    let (bd_at, bd_len) = if ten {
        (6, usize::from(be16(list, 6)))
    } else {
        (3, usize::from(u8_at(list, 3)))
    };
    if bd_len != 0 {
        return Err(Sense::invalid_field_in_parameter_list(bd_at as u16, None));
    }
    let mut at = header;
    while at < list.len() {
        let code = u8_at(list, at) & 0x3f;
        if u8_at(list, at) & 0x40 != 0 {
            // SPF: a subpage, and this drive has none.
            return Err(Sense::invalid_field_in_parameter_list(at as u16, Some(6)));
        }
        let Some(current) = page(code, 0, state) else {
            return Err(Sense::invalid_field_in_parameter_list(at as u16, Some(5)));
        };
        let Some(sent) = list.get(at..at + current.len()) else {
            return Err(Sense::parameter_list_length_error());
        };
        if let Some(i) = (1..current.len()).find(|&i| sent[i] != current[i]) {
            return Err(Sense::invalid_field_in_parameter_list(
                (at + i) as u16,
                None,
            ));
        }
        at += current.len();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const RAM: ModeState = ModeState {
        drive: Drive::DvdRam,
        write_cache: true,
        locked: false,
    };

    #[test]
    fn capabilities_page() {
        let p = page(CAPABILITIES, 0, &RAM).unwrap();
        assert_eq!(p.len(), 22);
        assert_eq!(&p[..8], &[0x2a, 0x14, 0x3b, 0x20, 0, 0, 0x29, 0]);
        let locked = ModeState {
            locked: true,
            ..RAM
        };
        assert_eq!(page(CAPABILITIES, 0, &locked).unwrap()[6], 0x2b);
        let rom = ModeState {
            drive: Drive::DvdRom,
            ..RAM
        };
        let p = page(CAPABILITIES, 0, &rom).unwrap();
        assert_eq!(p[3], 0, "a DVD-ROM drive writes nothing");
        assert_eq!(&p[18..22], &[0, 0, 0, 0]);
        assert_eq!(page(CAPABILITIES, 1, &RAM).unwrap()[2..], [0; 20]);
    }

    #[test]
    fn sense() {
        let b = mode_sense(&RAM, true, 0, 0x3f, 0).unwrap();
        assert_eq!(b.len(), 8 + 12 + 12 + 10 + 22);
        assert_eq!(be16(&b, 0) as usize, b.len() - 2);
        assert_eq!(be16(&b, 6), 0, "no block descriptors");
        assert_eq!(&b[8..10], &[0x01, 0x0a]);
        let b = mode_sense(&RAM, false, 0, CACHING, 0).unwrap();
        assert_eq!(
            b,
            [15, 0, 0, 0, 0x08, 0x0a, 0x04, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(
            mode_sense(&RAM, true, 0, 0, 0).unwrap(),
            [0, 6, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(
            mode_sense(&RAM, true, 1, 0, 0),
            Err(Sense::invalid_field_in_cdb(2, Some(5)))
        );
        assert_eq!(
            mode_sense(&RAM, true, 3, CACHING, 0),
            Err(Sense::saving_parameters_not_supported())
        );
        assert_eq!(
            mode_sense(&RAM, true, 0, 0x0a, 0),
            Err(Sense::invalid_field_in_cdb(2, Some(5)))
        );
        assert_eq!(
            mode_sense(&RAM, true, 0, CACHING, 1),
            Err(Sense::invalid_field_in_cdb(3, None))
        );
        assert_eq!(
            mode_sense(&RAM, true, 0, 0x3f, 1),
            Err(Sense::invalid_field_in_cdb(3, None))
        );
        assert!(mode_sense(&RAM, true, 2, 0x3f, 0xff).is_ok());
    }

    #[test]
    fn select_takes_the_current_values_only() {
        let mut list = vec![0u8; 8];
        list.extend(page(READ_WRITE_ERROR_RECOVERY, 0, &RAM).unwrap());
        list.extend(page(CAPABILITIES, 0, &RAM).unwrap());
        assert_eq!(mode_select(&RAM, true, &list), Ok(()));
        // PS set: still the same page.
        list[8] |= 0x80;
        assert_eq!(mode_select(&RAM, true, &list), Ok(()));
        list[11] = 4; // read retry count
        assert_eq!(
            mode_select(&RAM, true, &list),
            Err(Sense::invalid_field_in_parameter_list(11, None))
        );
        list[11] = 5;
        assert_eq!(
            mode_select(&RAM, true, &list[..list.len() - 1]),
            Err(Sense::parameter_list_length_error())
        );
        let mut six = vec![0u8, 0, 0, 8];
        six.extend(page(CACHING, 0, &RAM).unwrap());
        assert_eq!(
            mode_select(&RAM, false, &six),
            Err(Sense::invalid_field_in_parameter_list(3, None))
        );
        six[3] = 0;
        assert_eq!(mode_select(&RAM, false, &six), Ok(()));
        six[4] = 0x0a;
        assert_eq!(
            mode_select(&RAM, false, &six),
            Err(Sense::invalid_field_in_parameter_list(4, Some(5)))
        );
        assert_eq!(
            mode_select(&RAM, false, &[0, 0]),
            Err(Sense::parameter_list_length_error())
        );
        assert_eq!(mode_select(&RAM, false, &[0, 0, 0, 0]), Ok(()));
    }
}
