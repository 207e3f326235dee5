//! What a drive says of the disc in it: READ CAPACITY, READ TOC/PMA/ATIP,
//! READ DISC INFORMATION, READ TRACK INFORMATION, READ FORMAT CAPACITIES,
//! and MECHANISM STATUS, which describes the drive itself.
//!
//! A DVD disc here is one session holding one data track that covers the
//! whole disc: track 1 starts at LBA 0 and the lead-out follows the last
//! block. Commands about the disc answer NOT READY, MEDIUM NOT PRESENT
//! while the tray is open; READ FORMAT CAPACITIES and MECHANISM STATUS
//! answer without one.

use crate::bytes::{be32, put16, put32, u8_at};
use crate::mmc::{lba_to_msf, Drive, DriveState, Medium, BLOCK_SIZE, DVD_BLOCKING};
use crate::sense::Sense;

/// The track number of the lead-out in READ TOC.
pub const LEAD_OUT: u8 = 0xaa;

/// ADR 1 (current position) and CONTROL 4 (a data track, recorded
/// uninterrupted): track 1 of every disc, and the lead-out of a DVD-ROM.
pub const ADR_CONTROL_DATA: u8 = 0x14;
/// ADR 1 and CONTROL 7 (data, copy permitted, recorded incrementally): the
/// lead-out of a writable disc, as tcmu-runner reports it.
pub const ADR_CONTROL_WRITABLE_LEAD_OUT: u8 = 0x17;

/// READ CAPACITY (10) of an MMC device (the CDB's bytes): the last LBA and
/// the block length. RELADR and PMI (obsolete for MM devices) and a
/// non-zero LOGICAL BLOCK ADDRESS are INVALID FIELD IN CDB.
pub fn read_capacity(cdb: &[u8], state: &DriveState) -> Result<[u8; 8], Sense> {
    if u8_at(cdb, 1) & 0x01 != 0 {
        return Err(Sense::invalid_field_in_cdb(1, Some(0)));
    }
    if u8_at(cdb, 8) & 0x01 != 0 {
        return Err(Sense::invalid_field_in_cdb(8, Some(0)));
    }
    if be32(cdb, 2) != 0 {
        return Err(Sense::invalid_field_in_cdb(2, None));
    }
    let m = state.medium_or_not_ready()?;
    let mut b = [0u8; 8];
    put32(&mut b, 0, m.last_lba());
    put32(&mut b, 4, BLOCK_SIZE);
    Ok(b)
}

/// An address as READ TOC reports it: 4 bytes, LBA or (with `msf`)
/// reserved, minutes, seconds, frames.
fn address(lba: u32, msf: bool) -> [u8; 4] {
    if msf {
        let [m, s, f] = lba_to_msf(lba);
        [0, m, s, f]
    } else {
        lba.to_be_bytes()
    }
}

/// A TOC track descriptor.
fn track_descriptor(control: u8, track: u8, lba: u32, msf: bool) -> [u8; 8] {
    let a = address(lba, msf);
    [0, control, track, 0, a[0], a[1], a[2], a[3]]
}

/// Answers READ TOC/PMA/ATIP (before allocation-length truncation) for
/// FORMAT `format` (byte 2, or the obsolete byte 9 field when that is
/// zero: [`decode`](crate::decode) resolves it), starting track `track`.
///
/// Format 0 (TOC): track 1 and the lead-out; starting at track 0 or 1
/// lists both, at AAh the lead-out only, at another track is INVALID FIELD
/// IN CDB. Format 1 (session information): session 1, its first track at
/// LBA 0. PMA, ATIP, CD-TEXT and the raw TOC have no meaning for DVD media
/// and, like reserved formats, are INVALID FIELD IN CDB.
pub fn read_toc(state: &DriveState, msf: bool, format: u8, track: u8) -> Result<Vec<u8>, Sense> {
    match format {
        0 if track > 1 && track != LEAD_OUT => Err(Sense::invalid_field_in_cdb(6, None)),
        0 => {
            let m = state.medium_or_not_ready()?;
            let mut b = vec![0u8, 0, 1, 1];
            if track <= 1 {
                b.extend_from_slice(&track_descriptor(ADR_CONTROL_DATA, 1, 0, msf));
            }
            let lead_out = if m.writable {
                ADR_CONTROL_WRITABLE_LEAD_OUT
            } else {
                ADR_CONTROL_DATA
            };
            b.extend_from_slice(&track_descriptor(lead_out, LEAD_OUT, m.blocks, msf));
            let len = (b.len() - 2) as u16;
            put16(&mut b, 0, len);
            Ok(b)
        }
        1 => {
            state.medium_or_not_ready()?;
            let mut b = vec![0u8, 10, 1, 1];
            b.extend_from_slice(&track_descriptor(ADR_CONTROL_DATA, 1, 0, msf));
            Ok(b)
        }
        _ => Err(Sense::invalid_field_in_cdb(2, Some(3))),
    }
}

/// Length of the standard disc information.
pub const DISC_INFORMATION_LEN: usize = 34;

/// Answers READ DISC INFORMATION (before allocation-length truncation):
/// the standard disc information (DATA TYPE 000b; the track and POW
/// resources types are INVALID FIELD IN CDB). One complete session of one
/// track; a DVD-RAM disc is erasable and random writable, a DVD-ROM disc
/// complete. Unrestricted use is set.
pub fn read_disc_information(state: &DriveState, data_type: u8) -> Result<Vec<u8>, Sense> {
    if data_type != 0 {
        return Err(Sense::invalid_field_in_cdb(1, Some(2)));
    }
    let m = state.medium_or_not_ready()?;
    let mut b = vec![0u8; DISC_INFORMATION_LEN];
    put16(&mut b, 0, (DISC_INFORMATION_LEN - 2) as u16);
    // ERASABLE, STATE OF LAST SESSION 11b (complete), DISC STATUS 11b
    // (random writable) or 10b (complete).
    b[2] = if m.writable { 0x1f } else { 0x0e };
    b[3] = 1; // first track on the disc
    b[4] = 1; // sessions (LSB)
    b[5] = 1; // first track in the last session (LSB)
    b[6] = 1; // last track in the last session (LSB)
    b[7] = 0x20; // URU: unrestricted use
    Ok(b)
}

/// Length of the track information (MMC-6).
pub const TRACK_INFORMATION_LEN: usize = 48;

/// Answers READ TRACK INFORMATION (before allocation-length truncation)
/// for ADDRESS/NUMBER TYPE `address_type` (byte 1, bits 1-0) and the
/// LOGICAL BLOCK ADDRESS/TRACK/SESSION NUMBER `address`: the one track,
/// for an LBA on the disc, track 1 or session 1. Anything else (the
/// lead-in, the invisible track, another session, an LBA past the disc,
/// the reserved type 11b) is INVALID FIELD IN CDB or LOGICAL BLOCK
/// ADDRESS OUT OF RANGE.
pub fn read_track_information(
    state: &DriveState,
    address_type: u8,
    address: u32,
) -> Result<Vec<u8>, Sense> {
    match address_type {
        0..=2 => {}
        _ => return Err(Sense::invalid_field_in_cdb(1, Some(1))),
    }
    let m = state.medium_or_not_ready()?;
    match address_type {
        0 if address >= m.blocks => return Err(Sense::lba_out_of_range()),
        1 | 2 if address != 1 => return Err(Sense::invalid_field_in_cdb(2, None)),
        _ => {}
    }
    Ok(track_information(m))
}

/// The track information of the disc's one track.
fn track_information(m: &Medium) -> Vec<u8> {
    let mut b = vec![0u8; TRACK_INFORMATION_LEN];
    put16(&mut b, 0, (TRACK_INFORMATION_LEN - 2) as u16);
    b[2] = 1; // track number (LSB)
    b[3] = 1; // session number (LSB)
    b[5] = ADR_CONTROL_DATA & 0x0f; // TRACK MODE: data, uninterrupted
    b[6] = 0x01; // DATA MODE 1
    put32(&mut b, 8, 0); // track start address
    put32(&mut b, 20, u32::from(DVD_BLOCKING)); // blocking factor
    put32(&mut b, 24, m.blocks); // track size
    b
}

/// Capacity descriptor type 10b: formatted media, current capacity.
pub const DESCRIPTOR_FORMATTED: u8 = 0x02;
/// Capacity descriptor type 11b: no media present, maximum capacity.
pub const DESCRIPTOR_NO_MEDIA: u8 = 0x03;

/// Answers READ FORMAT CAPACITIES (before allocation-length truncation):
/// the current/maximum capacity descriptor (the loaded disc as formatted,
/// or with the tray open the capacity of the disc that was in it as "no
/// media present"), then, for a DVD-RAM disc in a DVD-RAM drive, the one
/// format it can be given: a full format (type 00h) of the same size.
pub fn read_format_capacities(state: &DriveState) -> Vec<u8> {
    let m = &state.medium;
    let descriptor = |blocks: u32, type_byte: u8| {
        let mut d = [0u8; 8];
        put32(&mut d, 0, blocks);
        d[4] = type_byte;
        let [_, b1, b2, b3] = BLOCK_SIZE.to_be_bytes();
        d[5] = b1;
        d[6] = b2;
        d[7] = b3;
        d
    };
    let mut b = vec![0u8; 4];
    let current = if state.loaded {
        DESCRIPTOR_FORMATTED
    } else {
        DESCRIPTOR_NO_MEDIA
    };
    b.extend_from_slice(&descriptor(m.blocks, current));
    if state.loaded && m.writable && state.drive == Drive::DvdRam {
        // FORMAT TYPE 00h (full format), in bits 7-2 of byte 4.
        b.extend_from_slice(&descriptor(m.blocks, 0x00));
    }
    b[3] = (b.len() - 4) as u8;
    b
}

/// Length of the MECHANISM STATUS header (there are no slot tables).
pub const MECHANISM_STATUS_LEN: usize = 8;

/// Answers MECHANISM STATUS (before allocation-length truncation): no
/// changer, the mechanism idle or reading at the LBA of the I/O in flight,
/// the door open while the tray is.
pub fn mechanism_status(state: &DriveState) -> Vec<u8> {
    let mut b = vec![0u8; MECHANISM_STATUS_LEN];
    if let Some(lba) = state.active_lba {
        b[1] = 0x20; // MECHANISM STATE 001b: playing (reading or writing)
        let [_, l1, l2, l3] = lba.to_be_bytes();
        b[2] = l1;
        b[3] = l2;
        b[4] = l3;
    }
    if !state.loaded {
        b[1] |= 0x10; // DOOR OPEN
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bytes::be16;

    fn state(writable: bool, blocks: u32) -> DriveState {
        DriveState::new(
            if writable {
                Drive::DvdRam
            } else {
                Drive::DvdRom
            },
            Medium { blocks, writable },
        )
    }

    #[test]
    fn capacity() {
        let s = state(true, 4096);
        let cdb = [0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(
            read_capacity(&cdb, &s).unwrap(),
            [0, 0, 0x0f, 0xff, 0, 0, 0x08, 0]
        );
        let mut bad = cdb;
        bad[8] = 1;
        assert_eq!(
            read_capacity(&bad, &s),
            Err(Sense::invalid_field_in_cdb(8, Some(0)))
        );
        bad = cdb;
        bad[1] = 1;
        assert_eq!(
            read_capacity(&bad, &s),
            Err(Sense::invalid_field_in_cdb(1, Some(0)))
        );
        bad = cdb;
        bad[5] = 1;
        assert_eq!(
            read_capacity(&bad, &s),
            Err(Sense::invalid_field_in_cdb(2, None))
        );
        let mut out = s.clone();
        out.loaded = false;
        assert_eq!(
            read_capacity(&cdb, &out),
            Err(Sense::medium_not_present_tray_open())
        );
    }

    #[test]
    fn toc() {
        let s = state(false, 1000);
        let b = read_toc(&s, false, 0, 0).unwrap();
        assert_eq!(
            b,
            [0, 18, 1, 1, 0, 0x14, 1, 0, 0, 0, 0, 0, 0, 0x14, 0xaa, 0, 0, 0, 0x03, 0xe8]
        );
        assert_eq!(read_toc(&s, false, 0, 1).unwrap(), b);
        // MSF: track 1 at 00:02:00, lead-out at 1150 frames = 00:15:25.
        let b = read_toc(&s, true, 0, 0).unwrap();
        assert_eq!(&b[8..12], &[0, 0, 2, 0]);
        assert_eq!(&b[16..20], &[0, 0, 15, 25]);
        // The lead-out alone.
        let b = read_toc(&s, false, 0, LEAD_OUT).unwrap();
        assert_eq!(b, [0, 10, 1, 1, 0, 0x14, 0xaa, 0, 0, 0, 0x03, 0xe8]);
        assert_eq!(
            read_toc(&s, false, 0, 2),
            Err(Sense::invalid_field_in_cdb(6, None))
        );
        // Session information.
        assert_eq!(
            read_toc(&s, false, 1, 0).unwrap(),
            [0, 10, 1, 1, 0, 0x14, 1, 0, 0, 0, 0, 0]
        );
        for f in 2..16 {
            assert_eq!(
                read_toc(&s, false, f, 0),
                Err(Sense::invalid_field_in_cdb(2, Some(3)))
            );
        }
        // A writable disc's lead-out.
        assert_eq!(read_toc(&state(true, 1000), false, 0, 0).unwrap()[13], 0x17);
    }

    #[test]
    fn disc_and_track_information() {
        let s = state(true, 1000);
        let b = read_disc_information(&s, 0).unwrap();
        assert_eq!(b.len(), 34);
        assert_eq!(&b[..8], &[0, 32, 0x1f, 1, 1, 1, 1, 0x20]);
        assert_eq!(
            read_disc_information(&state(false, 10), 0).unwrap()[2],
            0x0e
        );
        assert_eq!(
            read_disc_information(&s, 1),
            Err(Sense::invalid_field_in_cdb(1, Some(2)))
        );

        let t = read_track_information(&s, 1, 1).unwrap();
        assert_eq!(t.len(), 48);
        assert_eq!(be16(&t, 0), 46);
        assert_eq!(&t[2..8], &[1, 1, 0, 4, 1, 0]);
        assert_eq!(be32(&t, 24), 1000);
        assert_eq!(read_track_information(&s, 0, 999).unwrap(), t);
        assert_eq!(read_track_information(&s, 2, 1).unwrap(), t);
        assert_eq!(
            read_track_information(&s, 0, 1000),
            Err(Sense::lba_out_of_range())
        );
        assert_eq!(
            read_track_information(&s, 1, 0),
            Err(Sense::invalid_field_in_cdb(2, None))
        );
        assert_eq!(
            read_track_information(&s, 1, 0xff),
            Err(Sense::invalid_field_in_cdb(2, None))
        );
        assert_eq!(
            read_track_information(&s, 3, 1),
            Err(Sense::invalid_field_in_cdb(1, Some(1)))
        );
    }

    #[test]
    fn format_capacities() {
        let mut s = state(true, 0x1000);
        assert_eq!(
            read_format_capacities(&s),
            [0, 0, 0, 16, 0, 0, 0x10, 0, 0x02, 0, 0x08, 0, 0, 0, 0x10, 0, 0, 0, 0x08, 0]
        );
        s.loaded = false;
        assert_eq!(
            read_format_capacities(&s),
            [0, 0, 0, 8, 0, 0, 0x10, 0, 0x03, 0, 0x08, 0]
        );
        assert_eq!(read_format_capacities(&state(false, 0x1000)).len(), 12);
    }

    #[test]
    fn mechanism() {
        let mut s = state(true, 100);
        assert_eq!(mechanism_status(&s), [0; 8]);
        s.active_lba = Some(0x012345);
        s.loaded = false;
        assert_eq!(mechanism_status(&s), [0, 0x30, 0x01, 0x23, 0x45, 0, 0, 0]);
    }
}
