//! READ DISC STRUCTURE (MMC-6 6.22) of DVD media: physical format
//! information, copyright information, disc manufacturing information, the
//! DVD-RAM medium status, and the list of the structures there are.
//!
//! Single-layer discs only: a LAYER NUMBER other than 0, a MEDIA TYPE
//! other than DVD (BD is 1h) and a format the disc does not have are
//! INVALID FIELD IN CDB. The list (format FFh) answers without a disc;
//! every other format needs one.

use crate::bytes::put16;
use crate::mmc::{Drive, DriveState, Medium};
use crate::sense::Sense;

/// Physical format information.
pub const PHYSICAL: u8 = 0x00;
/// Copyright information.
pub const COPYRIGHT: u8 = 0x01;
/// Disc manufacturing information.
pub const MANUFACTURING: u8 = 0x04;
/// DVD-RAM medium status.
pub const DVD_RAM_MEDIUM_STATUS: u8 = 0x09;
/// The list of the disc structures the drive reports.
pub const STRUCTURE_LIST: u8 = 0xff;

/// The first physical sector of the data area of a DVD-ROM disc.
pub const DVD_ROM_START_SECTOR: u32 = 0x03_0000;
/// The first physical sector of the data area of a DVD-RAM disc.
pub const DVD_RAM_START_SECTOR: u32 = 0x03_1000;

/// What disc manufacturing information holds (the rest of its 2048 bytes
/// are zero).
pub const MANUFACTURER: &[u8] = b"VIRTUAL FB OPT";

/// Length of a layer descriptor and of the manufacturing information.
const LONG_STRUCTURE: usize = 2048;

/// A structure's data behind its 4-byte header (DATA LENGTH counts the
/// two reserved bytes and the data).
fn with_header(data: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8; 4];
    put16(&mut b, 0, (data.len() + 2) as u16);
    b.extend_from_slice(data);
    b
}

/// The physical format information of layer 0.
fn physical(m: &Medium) -> Vec<u8> {
    let mut d = vec![0u8; LONG_STRUCTURE];
    let start = if m.writable {
        // BOOK TYPE 1h (DVD-RAM), PART VERSION 2h.
        d[0] = 0x12;
        DVD_RAM_START_SECTOR
    } else {
        // BOOK TYPE 0h (DVD-ROM), PART VERSION 2h.
        d[0] = 0x02;
        DVD_ROM_START_SECTOR
    };
    d[1] = 0x0f; // 120 mm, maximum rate not specified
                 // One layer, parallel track path; LAYER TYPE rewritable or embossed.
    d[2] = if m.writable { 0x04 } else { 0x01 };
    let end = start.saturating_add(m.last_lba());
    d[4..8].copy_from_slice(&start.to_be_bytes());
    d[8..12].copy_from_slice(&end.to_be_bytes());
    with_header(&d)
}

/// The structures a disc in `state` has, with the length READ DISC
/// STRUCTURE returns for each.
fn list(state: &DriveState) -> Vec<(u8, usize)> {
    let mut l = vec![
        (PHYSICAL, 4 + LONG_STRUCTURE),
        (COPYRIGHT, 8),
        (MANUFACTURING, 4 + LONG_STRUCTURE),
    ];
    if state.drive == Drive::DvdRam && state.medium.writable {
        l.push((DVD_RAM_MEDIUM_STATUS, 8));
    }
    l
}

/// Answers READ DISC STRUCTURE (before allocation-length truncation) for
/// MEDIA TYPE `media_type` (byte 1, bits 3-0), LAYER NUMBER `layer` and
/// FORMAT CODE `format`.
pub fn read_disc_structure(
    state: &DriveState,
    media_type: u8,
    layer: u8,
    format: u8,
) -> Result<Vec<u8>, Sense> {
    if media_type != 0 {
        return Err(Sense::invalid_field_in_cdb(1, Some(3)));
    }
    if layer != 0 {
        return Err(Sense::invalid_field_in_cdb(6, None));
    }
    if format == STRUCTURE_LIST {
        let mut l = list(state);
        // The list itself: its header and one entry a structure.
        l.push((STRUCTURE_LIST, 4 + 4 * (l.len() + 1)));
        let mut data = Vec::with_capacity(4 * l.len());
        for (code, len) in l {
            // RDS: readable with READ DISC STRUCTURE; not sendable.
            data.extend_from_slice(&[code, 0x40]);
            data.extend_from_slice(&(len as u16).to_be_bytes());
        }
        return Ok(with_header(&data));
    }
    if !list(state).iter().any(|&(code, _)| code == format) {
        return Err(Sense::invalid_field_in_cdb(7, None));
    }
    let m = state.medium_or_not_ready()?;
    Ok(match format {
        PHYSICAL => physical(m),
        // No copy protection, no region restrictions.
        COPYRIGHT => with_header(&[0, 0, 0, 0]),
        MANUFACTURING => {
            let mut d = vec![0u8; LONG_STRUCTURE];
            d[..MANUFACTURER.len()].copy_from_slice(MANUFACTURER);
            with_header(&d)
        }
        // Not in a cartridge, not write protected; DISC TYPE
        // IDENTIFICATION 10h.
        _ => with_header(&[0, 0x10, 0, 0]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bytes::{be16, be32};

    fn state(writable: bool) -> DriveState {
        DriveState::new(
            if writable {
                Drive::DvdRam
            } else {
                Drive::DvdRom
            },
            Medium {
                blocks: 0x1000,
                writable,
            },
        )
    }

    #[test]
    fn physical_format() {
        let b = read_disc_structure(&state(true), 0, 0, PHYSICAL).unwrap();
        assert_eq!(b.len(), 2052);
        assert_eq!(be16(&b, 0), 2050);
        assert_eq!(&b[4..7], &[0x12, 0x0f, 0x04]);
        assert_eq!(be32(&b, 8), DVD_RAM_START_SECTOR);
        assert_eq!(be32(&b, 12), DVD_RAM_START_SECTOR + 0xfff);
        let b = read_disc_structure(&state(false), 0, 0, PHYSICAL).unwrap();
        assert_eq!(&b[4..7], &[0x02, 0x0f, 0x01]);
        assert_eq!(be32(&b, 8), DVD_ROM_START_SECTOR);
    }

    #[test]
    fn other_formats() {
        let s = state(true);
        assert_eq!(
            read_disc_structure(&s, 0, 0, COPYRIGHT).unwrap(),
            [0, 6, 0, 0, 0, 0, 0, 0]
        );
        let b = read_disc_structure(&s, 0, 0, MANUFACTURING).unwrap();
        assert_eq!(&b[4..18], MANUFACTURER);
        assert_eq!(
            read_disc_structure(&s, 0, 0, DVD_RAM_MEDIUM_STATUS).unwrap(),
            [0, 6, 0, 0, 0, 0x10, 0, 0]
        );
        assert_eq!(
            read_disc_structure(&state(false), 0, 0, DVD_RAM_MEDIUM_STATUS),
            Err(Sense::invalid_field_in_cdb(7, None))
        );
        assert_eq!(
            read_disc_structure(&s, 0, 0, 0x02),
            Err(Sense::invalid_field_in_cdb(7, None))
        );
        assert_eq!(
            read_disc_structure(&s, 0, 1, PHYSICAL),
            Err(Sense::invalid_field_in_cdb(6, None))
        );
        assert_eq!(
            read_disc_structure(&s, 1, 0, PHYSICAL),
            Err(Sense::invalid_field_in_cdb(1, Some(3)))
        );
    }

    #[test]
    fn the_list_needs_no_disc() {
        let mut s = state(true);
        s.loaded = false;
        let b = read_disc_structure(&s, 0, 0, STRUCTURE_LIST).unwrap();
        assert_eq!(
            b,
            [
                0, 22, 0, 0, 0x00, 0x40, 0x08, 0x04, 0x01, 0x40, 0, 8, 0x04, 0x40, 0x08, 0x04,
                0x09, 0x40, 0, 8, 0xff, 0x40, 0, 24
            ]
        );
        assert_eq!(
            read_disc_structure(&s, 0, 0, PHYSICAL),
            Err(Sense::medium_not_present_tray_open())
        );
    }
}
