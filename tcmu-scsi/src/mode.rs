//! MODE SENSE (6/10) and MODE SELECT (6/10) (SPC-4 6.11-6.14, 7.5).
//!
//! Pages, as the kernel reports them for a `fileio` disk: 0x01 read-write
//! error recovery, 0x08 caching (WCE from [`DeviceState::write_cache`],
//! DRA set), 0x0A control (GLTSD, unrestricted reordering, TAS, busy timeout
//! 0xFFFF, self-test time 30) and 0x1C informational exceptions. Unlike the
//! kernel, WCE is changeable (so MODE SELECT can toggle the write cache) and
//! saved values are refused with SAVING PARAMETERS NOT SUPPORTED.

use crate::bytes::{be16, be24, be32, be64, put16, put32, put64, u8_at};
use crate::device::{DeviceParams, DeviceState};
use crate::sense::Sense;

/// The mode pages we report, in the order page 0x3F lists them.
pub const MODE_PAGES: [u8; 4] = [0x01, 0x08, 0x0a, 0x1c];

/// Page control 0: current values.
pub const PC_CURRENT: u8 = 0;
/// Page control 1: changeable values (a mask).
pub const PC_CHANGEABLE: u8 = 1;
/// Page control 2: default values.
pub const PC_DEFAULT: u8 = 2;
/// Page control 3: saved values (not supported).
pub const PC_SAVED: u8 = 3;

/// DEVICE-SPECIFIC PARAMETER for a disk: DPOFUA (DPO and FUA supported).
const DEVICE_SPECIFIC_DPOFUA: u8 = 0x10;

/// One mode page (without subpage) for page control `pc` (0, 1 or 2), or
/// `None` for a page we do not have.
pub fn page(code: u8, pc: u8, state: &DeviceState) -> Option<Vec<u8>> {
    let changeable = pc == PC_CHANGEABLE;
    let mut p = match code {
        0x01 | 0x1c => vec![0u8; 12],
        0x08 => vec![0u8; 20],
        0x0a => vec![0u8; 12],
        _ => return None,
    };
    let plen = (p.len() - 2) as u8;
    if let [c, l, ..] = p.as_mut_slice() {
        *c = code;
        *l = plen;
    }
    match (code, p.as_mut_slice()) {
        (0x08, [_, _, b2, _, _, _, _, _, _, _, _, _, b12, ..]) => {
            let wce = match pc {
                PC_CHANGEABLE => true,
                PC_DEFAULT => state.default_write_cache,
                _ => state.write_cache,
            };
            if wce {
                *b2 = 0x04; // WCE
            }
            if !changeable {
                *b12 = 0x20; // DRA: read ahead disabled
            }
        }
        (0x0a, [_, _, b2, b3, _, b5, _, _, b8, b9, _, b11, ..]) if !changeable => {
            *b2 = 0x02; // GLTSD
            *b3 = 0x10; // QUEUE ALGORITHM MODIFIER 1: unrestricted reordering
            *b5 = 0x40; // TAS
            *b8 = 0xff; // BUSY TIMEOUT PERIOD
            *b9 = 0xff;
            *b11 = 30; // EXTENDED SELF-TEST COMPLETION TIME
        }
        _ => {}
    }
    Some(p)
}

/// The block descriptor MODE SENSE reports, or `None` with DBD. The block
/// count is the kernel's (its `get_blocks`, i.e. the last LBA), so that our
/// answer matches `fileio`'s byte for byte.
fn block_descriptor(params: &DeviceParams, ten: bool, llbaa: bool) -> (Vec<u8>, bool) {
    let count = params.last_lba();
    if ten && llbaa && count > u64::from(u32::MAX) {
        let mut d = vec![0u8; 16];
        put64(&mut d, 0, count);
        put32(&mut d, 12, params.block_size);
        (d, true)
    } else {
        let mut d = vec![0u8; 8];
        put32(&mut d, 0, u32::try_from(count).unwrap_or(u32::MAX));
        put32(&mut d, 4, params.block_size & 0x00ff_ffff);
        (d, false)
    }
}

/// Answer a MODE SENSE (before allocation-length truncation).
#[allow(clippy::too_many_arguments)]
pub fn mode_sense(
    params: &DeviceParams,
    state: &DeviceState,
    ten: bool,
    dbd: bool,
    llbaa: bool,
    pc: u8,
    page_code: u8,
    subpage: u8,
) -> Result<Vec<u8>, Sense> {
    if pc == PC_SAVED {
        return Err(Sense::saving_parameters_not_supported());
    }
    let codes: &[u8] = if page_code == 0x3f {
        if subpage != 0x00 && subpage != 0xff {
            return Err(Sense::invalid_field_in_cdb(3, None));
        }
        &MODE_PAGES
    } else if MODE_PAGES.contains(&page_code) {
        if subpage != 0 {
            return Err(Sense::invalid_field_in_cdb(3, None));
        }
        std::slice::from_ref(&page_code)
    } else {
        return Err(Sense::invalid_field_in_cdb(2, Some(5)));
    };

    let header_len = if ten { 8 } else { 4 };
    let mut b = vec![0u8; header_len];
    let dsp_at = if ten { 3 } else { 2 };
    if let Some(x) = b.get_mut(dsp_at) {
        *x = DEVICE_SPECIFIC_DPOFUA;
    }
    if !dbd {
        let (desc, long) = block_descriptor(params, ten, llbaa);
        if ten {
            if long {
                if let Some(x) = b.get_mut(4) {
                    *x = 0x01; // LONGLBA
                }
            }
            put16(&mut b, 6, desc.len() as u16);
        } else if let Some(x) = b.get_mut(3) {
            *x = desc.len() as u8;
        }
        b.extend_from_slice(&desc);
    }
    for &code in codes {
        if let Some(p) = page(code, pc, state) {
            // MODE SENSE (6) data must fit its one-byte length.
            if !ten && b.len() + p.len() > 256 {
                break;
            }
            b.extend_from_slice(&p);
        }
    }
    if ten {
        let len = u16::try_from(b.len() - 2).unwrap_or(u16::MAX);
        put16(&mut b, 0, len);
    } else {
        let len = (b.len() - 1) as u8;
        if let Some(x) = b.get_mut(0) {
            *x = len;
        }
    }
    Ok(b)
}

/// The highest set bit of a non-zero byte.
fn top_bit(x: u8) -> u8 {
    7 - x.leading_zeros().min(7) as u8
}

/// Apply a MODE SELECT parameter list (already cut to the parameter list
/// length). Every page must be one of ours with the length and contents
/// MODE SENSE reports, except for changeable bits; only WCE is changeable.
/// Nothing changes unless the whole list is accepted.
pub fn mode_select(
    params: &DeviceParams,
    state: &mut DeviceState,
    ten: bool,
    list: &[u8],
) -> Result<(), Sense> {
    let ipl = |at: usize, bit: Option<u8>| {
        Sense::invalid_field_in_parameter_list(u16::try_from(at).unwrap_or(u16::MAX), bit)
    };
    let header_len = if ten { 8 } else { 4 };
    if list.len() < header_len {
        return Err(Sense::parameter_list_length_error());
    }
    let (bd_len, long) = if ten {
        (usize::from(be16(list, 6)), u8_at(list, 4) & 0x01 != 0)
    } else {
        (usize::from(u8_at(list, 3)), false)
    };
    let want = if long { 16 } else { 8 };
    if bd_len != 0 && bd_len != want {
        return Err(ipl(if ten { 6 } else { 3 }, None));
    }
    if list.len() < header_len + bd_len {
        return Err(Sense::parameter_list_length_error());
    }
    if bd_len != 0 {
        let at = header_len;
        let (count, block_len, len_at) = if long {
            (be64(list, at), be32(list, at + 12), at + 12)
        } else {
            (u64::from(be32(list, at)), be24(list, at + 5), at + 5)
        };
        // 0 means "no change"; also accept what MODE SENSE reports and the
        // true block count.
        let reported = block_descriptor(params, ten, long).0;
        let reported_count = if long {
            be64(&reported, 0)
        } else {
            u64::from(be32(&reported, 0))
        };
        if count != 0 && count != reported_count && count != params.num_blocks {
            return Err(ipl(at, None));
        }
        if block_len != params.block_size {
            return Err(ipl(len_at, None));
        }
    }

    let mut write_cache = state.write_cache;
    let mut at = header_len + bd_len;
    while at < list.len() {
        if at + 2 > list.len() {
            return Err(Sense::parameter_list_length_error());
        }
        let b0 = u8_at(list, at);
        let code = b0 & 0x3f;
        if b0 & 0x40 != 0 {
            // SPF: we have no subpages.
            return Err(ipl(at, Some(6)));
        }
        let Some(current) = page(code, PC_CURRENT, state) else {
            return Err(ipl(at, Some(5)));
        };
        let Some(changeable) = page(code, PC_CHANGEABLE, state) else {
            return Err(ipl(at, Some(5)));
        };
        let plen = usize::from(u8_at(list, at + 1));
        if plen + 2 != current.len() {
            return Err(ipl(at + 1, None));
        }
        let Some(given) = list.get(at..at + current.len()) else {
            return Err(Sense::parameter_list_length_error());
        };
        for (i, ((&g, &c), &m)) in given
            .iter()
            .zip(current.iter())
            .zip(changeable.iter())
            .enumerate()
            .skip(2)
        {
            let diff = (g ^ c) & !m;
            if diff != 0 {
                return Err(ipl(at + i, Some(top_bit(diff))));
            }
        }
        if code == 0x08 {
            write_cache = u8_at(given, 2) & 0x04 != 0;
        }
        at += current.len();
    }
    state.write_cache = write_cache;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> DeviceParams {
        DeviceParams::new(512, 2048)
    }

    fn sense(
        state: &DeviceState,
        ten: bool,
        dbd: bool,
        pc: u8,
        page: u8,
        sub: u8,
    ) -> Result<Vec<u8>, Sense> {
        mode_sense(&params(), state, ten, dbd, false, pc, page, sub)
    }

    const CACHING_CURRENT_WCE: [u8; 20] = [
        0x08, 0x12, 0x04, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x20, 0, 0, 0, 0, 0, 0, 0,
    ];
    const CONTROL: [u8; 12] = [0x0a, 0x0a, 0x02, 0x10, 0, 0x40, 0, 0, 0xff, 0xff, 0, 30];
    const RW_RECOVERY: [u8; 12] = [0x01, 0x0a, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    const INFO_EXC: [u8; 12] = [0x1c, 0x0a, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];

    #[test]
    fn pages_current() {
        let s = DeviceState::new(true);
        assert_eq!(page(0x08, 0, &s), Some(CACHING_CURRENT_WCE.to_vec()));
        assert_eq!(page(0x0a, 0, &s), Some(CONTROL.to_vec()));
        assert_eq!(page(0x01, 0, &s), Some(RW_RECOVERY.to_vec()));
        assert_eq!(page(0x1c, 0, &s), Some(INFO_EXC.to_vec()));
        assert_eq!(page(0x02, 0, &s), None);
        let s = DeviceState::new(false);
        assert_eq!(page(0x08, 0, &s).map(|p| p[2]), Some(0));
    }

    #[test]
    fn pages_changeable_default() {
        let mut s = DeviceState::new(false);
        let mut ch = vec![0u8; 20];
        ch[0] = 0x08;
        ch[1] = 0x12;
        ch[2] = 0x04;
        assert_eq!(page(0x08, 1, &s), Some(ch));
        assert_eq!(
            page(0x0a, 1, &s),
            Some({
                let mut v = vec![0u8; 12];
                v[0] = 0x0a;
                v[1] = 0x0a;
                v
            })
        );
        s.write_cache = true;
        assert_eq!(page(0x08, 2, &s).map(|p| p[2]), Some(0));
        assert_eq!(page(0x08, 0, &s).map(|p| p[2]), Some(4));
    }

    #[test]
    fn sense6_single_page_with_descriptor() {
        let b = sense(&DeviceState::new(true), false, false, 0, 0x08, 0).unwrap_or_default();
        assert_eq!(&b[..4], &[3 + 8 + 20, 0, 0x10, 8]);
        assert_eq!(&b[4..12], &[0, 0, 0x07, 0xff, 0, 0, 0x02, 0x00]);
        assert_eq!(&b[12..], &CACHING_CURRENT_WCE);
    }

    #[test]
    fn sense6_all_pages_dbd() {
        let b = sense(&DeviceState::new(true), false, true, 0, 0x3f, 0).unwrap_or_default();
        assert_eq!(&b[..4], &[3 + 12 + 20 + 12 + 12, 0, 0x10, 0]);
        let mut want = RW_RECOVERY.to_vec();
        want.extend_from_slice(&CACHING_CURRENT_WCE);
        want.extend_from_slice(&CONTROL);
        want.extend_from_slice(&INFO_EXC);
        assert_eq!(&b[4..], &want[..]);
        let b2 = sense(&DeviceState::new(true), false, true, 0, 0x3f, 0xff).unwrap_or_default();
        assert_eq!(b, b2);
    }

    #[test]
    fn sense10_layouts() {
        let s = DeviceState::new(false);
        let b = sense(&s, true, false, 0, 0x0a, 0).unwrap_or_default();
        assert_eq!(&b[..8], &[0, 6 + 8 + 12, 0, 0x10, 0, 0, 0, 8]);
        assert_eq!(&b[8..16], &[0, 0, 0x07, 0xff, 0, 0, 0x02, 0x00]);
        assert_eq!(&b[16..], &CONTROL);
        let b = sense(&s, true, true, 0, 0x01, 0).unwrap_or_default();
        assert_eq!(&b[..8], &[0, 6 + 12, 0, 0x10, 0, 0, 0, 0]);

        // LLBAA on a small device still gets the short descriptor.
        let b = mode_sense(&params(), &s, true, false, true, 0, 0x01, 0).unwrap_or_default();
        assert_eq!(&b[4..8], &[0, 0, 0, 8]);

        // LLBAA on a big device: long descriptor.
        let big = DeviceParams::new(4096, (1 << 32) + 2);
        let b = mode_sense(&big, &s, true, false, true, 0, 0x01, 0).unwrap_or_default();
        assert_eq!(&b[..8], &[0, 6 + 16 + 12, 0, 0x10, 1, 0, 0, 16]);
        assert_eq!(&b[8..16], &[0, 0, 0, 1, 0, 0, 0, 1]);
        assert_eq!(&b[16..24], &[0, 0, 0, 0, 0, 0, 0x10, 0]);
        // Without LLBAA: short descriptor saturated.
        let b = mode_sense(&big, &s, true, false, false, 0, 0x01, 0).unwrap_or_default();
        assert_eq!(&b[8..16], &[0xff, 0xff, 0xff, 0xff, 0, 0, 0x10, 0]);
    }

    #[test]
    fn sense_errors() {
        let s = DeviceState::default();
        assert_eq!(
            sense(&s, false, false, 3, 0x08, 0),
            Err(Sense::saving_parameters_not_supported())
        );
        assert_eq!(
            sense(&s, false, false, 0, 0x03, 0),
            Err(Sense::invalid_field_in_cdb(2, Some(5)))
        );
        assert_eq!(
            sense(&s, false, false, 0, 0x08, 1),
            Err(Sense::invalid_field_in_cdb(3, None))
        );
        assert_eq!(
            sense(&s, true, false, 0, 0x3f, 1),
            Err(Sense::invalid_field_in_cdb(3, None))
        );
    }

    #[test]
    fn sense_changeable_all() {
        let s = DeviceState::default();
        let b = sense(&s, false, true, 1, 0x3f, 0).unwrap_or_default();
        // Only WCE (caching page byte 2) is set past the page headers.
        let caching = 4 + 12;
        assert_eq!(b[caching + 2], 0x04);
        assert_eq!(b.iter().filter(|&&x| x == 0x04).count(), 1);
    }

    fn select_list(sense_output: &[u8], ten: bool) -> Vec<u8> {
        let mut v = sense_output.to_vec();
        // Mode data length is reserved in MODE SELECT.
        v[0] = 0;
        if ten {
            v[1] = 0;
        }
        v
    }

    #[test]
    fn select_round_trip_and_wce_flip() {
        for ten in [false, true] {
            let p = params();
            let mut s = DeviceState::new(true);
            let out = mode_sense(&p, &s, ten, false, false, 0, 0x3f, 0).unwrap_or_default();
            let list = select_list(&out, ten);
            assert_eq!(mode_select(&p, &mut s, ten, &list), Ok(()));
            assert!(s.write_cache);
            // Also fed back verbatim (mode data length not cleared).
            assert_eq!(mode_select(&p, &mut s, ten, &out), Ok(()));

            // Flip WCE off in the caching page.
            let hdr = if ten { 8 } else { 4 };
            let caching = hdr + 8 + 12;
            let mut off = list.clone();
            assert_eq!(off[caching], 0x08);
            off[caching + 2] = 0;
            assert_eq!(mode_select(&p, &mut s, ten, &off), Ok(()));
            assert!(!s.write_cache);
            assert_eq!(mode_select(&p, &mut s, ten, &list), Ok(()));
            assert!(s.write_cache);
        }
    }

    #[test]
    fn select_rejects_changes() {
        let p = params();
        let mut s = DeviceState::new(false);
        let out = mode_sense(&p, &s, false, true, false, 0, 0x0a, 0).unwrap_or_default();
        let mut list = select_list(&out, false);
        list[4 + 5] = 0x00; // clear TAS
        assert_eq!(
            mode_select(&p, &mut s, false, &list),
            Err(Sense::invalid_field_in_parameter_list(9, Some(6)))
        );
        // A WCE change in a rejected list does not stick.
        let out = mode_sense(&p, &s, false, true, false, 0, 0x3f, 0).unwrap_or_default();
        let mut list = select_list(&out, false);
        list[4 + 12 + 2] = 0x04; // WCE on
        list[4 + 12 + 20 + 11] = 0; // control page: self-test time
        assert_eq!(
            mode_select(&p, &mut s, false, &list),
            Err(Sense::invalid_field_in_parameter_list(47, Some(4)))
        );
        assert!(!s.write_cache);
    }

    #[test]
    fn select_errors() {
        let p = params();
        let mut s = DeviceState::default();
        let plle = Err(Sense::parameter_list_length_error());
        assert_eq!(mode_select(&p, &mut s, false, &[0, 0, 0]), plle);
        assert_eq!(mode_select(&p, &mut s, true, &[0; 7]), plle);
        // Header only: nothing to do.
        assert_eq!(mode_select(&p, &mut s, false, &[0; 4]), Ok(()));
        // Block descriptor length 8 but no descriptor.
        assert_eq!(mode_select(&p, &mut s, false, &[0, 0, 0, 8]), plle);
        // Bad block descriptor length.
        assert_eq!(
            mode_select(&p, &mut s, false, &[0, 0, 0, 4, 0, 0, 0, 0]),
            Err(Sense::invalid_field_in_parameter_list(3, None))
        );
        // Wrong block length in the descriptor.
        assert_eq!(
            mode_select(&p, &mut s, false, &[0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0x10, 0]),
            Err(Sense::invalid_field_in_parameter_list(9, None))
        );
        // Block count 0 ("no change") and the true count are accepted.
        assert_eq!(
            mode_select(&p, &mut s, false, &[0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 2, 0]),
            Ok(())
        );
        assert_eq!(
            mode_select(&p, &mut s, false, &[0, 0, 0, 8, 0, 0, 8, 0, 0, 0, 2, 0]),
            Ok(())
        );
        assert_eq!(
            mode_select(&p, &mut s, false, &[0, 0, 0, 8, 0, 0, 9, 0, 0, 0, 2, 0]),
            Err(Sense::invalid_field_in_parameter_list(4, None))
        );
        // Unknown page.
        assert_eq!(
            mode_select(&p, &mut s, false, &[0, 0, 0, 0, 0x03, 0x16]),
            Err(Sense::invalid_field_in_parameter_list(4, Some(5)))
        );
        // Subpage format.
        assert_eq!(
            mode_select(&p, &mut s, false, &[0, 0, 0, 0, 0x48, 0x01, 0, 0x12]),
            Err(Sense::invalid_field_in_parameter_list(4, Some(6)))
        );
        // Wrong page length.
        assert_eq!(
            mode_select(&p, &mut s, false, &[0, 0, 0, 0, 0x08, 0x0a]),
            Err(Sense::invalid_field_in_parameter_list(5, None))
        );
        // Truncated page.
        assert_eq!(
            mode_select(&p, &mut s, false, &[0, 0, 0, 0, 0x08, 0x12, 0]),
            plle
        );
        // Dangling byte after the header.
        assert_eq!(mode_select(&p, &mut s, false, &[0, 0, 0, 0, 0x08]), plle);
    }

    #[test]
    fn top_bits() {
        assert_eq!(top_bit(0x80), 7);
        assert_eq!(top_bit(0x01), 0);
        assert_eq!(top_bit(0x14), 4);
    }
}
