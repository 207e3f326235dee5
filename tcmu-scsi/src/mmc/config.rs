//! GET CONFIGURATION (MMC-6 6.6): the feature header with the current
//! profile, then feature descriptors in ascending order of feature code.
//!
//! The features are those of a DVD drive without audio: the profile list,
//! core, morphing (operational change events), removable medium (a tray
//! that ejects, loads and locks), random readable, multi-read, CD read and
//! DVD read; a DVD-RAM drive adds random writable, incremental streaming
//! writable, formattable, hardware defect management, restricted
//! overwrite and CD track at once; and the time-out feature. Features a
//! DVD-RAM medium uses are current while one is loaded; features of CD
//! recording are listed but never current.

use crate::bytes::{put16, put32};
use crate::mmc::{Drive, DriveState, BLOCK_SIZE, DVD_BLOCKING};
use crate::sense::Sense;

/// Feature codes this drive reports.
pub mod feature {
    /// Profile List.
    pub const PROFILE_LIST: u16 = 0x0000;
    /// Core.
    pub const CORE: u16 = 0x0001;
    /// Morphing.
    pub const MORPHING: u16 = 0x0002;
    /// Removable Medium.
    pub const REMOVABLE_MEDIUM: u16 = 0x0003;
    /// Random Readable.
    pub const RANDOM_READABLE: u16 = 0x0010;
    /// Multi-Read.
    pub const MULTI_READ: u16 = 0x001d;
    /// CD Read.
    pub const CD_READ: u16 = 0x001e;
    /// DVD Read.
    pub const DVD_READ: u16 = 0x001f;
    /// Random Writable.
    pub const RANDOM_WRITABLE: u16 = 0x0020;
    /// Incremental Streaming Writable.
    pub const INCREMENTAL_STREAMING_WRITABLE: u16 = 0x0021;
    /// Formattable.
    pub const FORMATTABLE: u16 = 0x0023;
    /// Hardware Defect Management.
    pub const HARDWARE_DEFECT_MANAGEMENT: u16 = 0x0024;
    /// Restricted Overwrite.
    pub const RESTRICTED_OVERWRITE: u16 = 0x0026;
    /// CD Track at Once.
    pub const CD_TRACK_AT_ONCE: u16 = 0x002d;
    /// Timeout.
    pub const TIMEOUT: u16 = 0x0105;
}

/// Loading mechanism type "tray" (bits 7-5), in the removable medium
/// feature and mode page 2Ah.
pub const MECHANISM_TRAY: u8 = 0x20;
/// The drive can eject the medium (START STOP UNIT with LOEJ).
pub const EJECT: u8 = 0x08;
/// PREVENT ALLOW MEDIUM REMOVAL locks the medium in.
pub const LOCK: u8 = 0x01;

/// The REQUESTED TYPE field (byte 1, bits 1-0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestedType {
    /// 00b: every feature from the starting feature number on.
    All,
    /// 01b: the current features from the starting feature number on.
    Current,
    /// 10b: the feature with the starting feature number only.
    One,
}

impl RequestedType {
    /// The field's value; `None` for the reserved 11b.
    pub const fn from_bits(rt: u8) -> Option<Self> {
        match rt & 0x03 {
            0 => Some(RequestedType::All),
            1 => Some(RequestedType::Current),
            2 => Some(RequestedType::One),
            _ => None,
        }
    }
}

/// One feature descriptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Feature {
    /// Feature code.
    pub code: u16,
    /// VERSION (4 bits).
    pub version: u8,
    /// PERSISTENT: the feature is always current.
    pub persistent: bool,
    /// CURRENT: the feature is active now (with the loaded medium).
    pub current: bool,
    /// The feature-dependent data.
    pub data: Vec<u8>,
}

impl Feature {
    fn new(code: u16, version: u8, persistent: bool, current: bool, data: Vec<u8>) -> Self {
        Self {
            code,
            version,
            persistent,
            current: current || persistent,
            data,
        }
    }

    /// The descriptor's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = vec![0u8; 4];
        put16(&mut b, 0, self.code);
        b[2] = (self.version & 0x0f) << 2 | u8::from(self.persistent) << 1 | u8::from(self.current);
        b[3] = self.data.len() as u8;
        b.extend_from_slice(&self.data);
        b
    }
}

/// The logical block size, blocking and PP bytes shared by the random
/// readable and writable features.
fn block_data(data: &mut [u8], at: usize) {
    put32(data, at, BLOCK_SIZE);
    put16(data, at + 4, DVD_BLOCKING);
    if let Some(pp) = data.get_mut(at + 6) {
        *pp = 0x01; // PP: blocking is the same everywhere
    }
}

/// Every feature of the drive in `state`, in ascending order, with the
/// current bits for its medium.
pub fn features(state: &DriveState) -> Vec<Feature> {
    let present = state.present();
    let readable = present.is_some();
    let writable = present.is_some_and(|m| m.writable);
    let current = state.current_profile();

    let profiles = state.drive.profiles();
    let mut list = vec![0u8; 4 * profiles.len()];
    for (i, p) in profiles.iter().enumerate() {
        put16(&mut list, 4 * i, p.code());
        list[4 * i + 2] = u8::from(current == Some(*p));
    }

    let mut core = vec![0u8; 8];
    put32(&mut core, 0, 0x0000_0001); // physical interface: SCSI family
    core[4] = 0x01; // DBE: device busy events are reported

    let mut random_readable = vec![0u8; 8];
    block_data(&mut random_readable, 0);

    let mut out = vec![
        Feature::new(feature::PROFILE_LIST, 0, true, true, list),
        Feature::new(feature::CORE, 1, true, true, core),
        // OCEvent: operational change events; no asynchronous GESN.
        Feature::new(feature::MORPHING, 1, true, true, vec![0x02, 0, 0, 0]),
        Feature::new(
            feature::REMOVABLE_MEDIUM,
            0,
            true,
            true,
            vec![MECHANISM_TRAY | EJECT | LOCK, 0, 0, 0],
        ),
        Feature::new(
            feature::RANDOM_READABLE,
            0,
            false,
            readable,
            random_readable,
        ),
        Feature::new(feature::MULTI_READ, 0, false, false, Vec::new()),
        Feature::new(feature::CD_READ, 2, false, false, vec![0; 4]),
        Feature::new(feature::DVD_READ, 0, false, readable, Vec::new()),
    ];
    if state.drive == Drive::DvdRam {
        let mut random_writable = vec![0u8; 12];
        put32(&mut random_writable, 0, present.map_or(0, |m| m.last_lba()));
        block_data(&mut random_writable, 4);
        out.extend([
            Feature::new(
                feature::RANDOM_WRITABLE,
                1,
                false,
                writable,
                random_writable,
            ),
            Feature::new(
                feature::INCREMENTAL_STREAMING_WRITABLE,
                1,
                false,
                false,
                vec![0; 4],
            ),
            Feature::new(feature::FORMATTABLE, 0, false, writable, Vec::new()),
            Feature::new(
                feature::HARDWARE_DEFECT_MANAGEMENT,
                1,
                false,
                writable,
                vec![0; 4],
            ),
            Feature::new(feature::RESTRICTED_OVERWRITE, 0, false, false, Vec::new()),
            Feature::new(feature::CD_TRACK_AT_ONCE, 2, false, false, vec![0; 4]),
        ]);
    }
    out.push(Feature::new(feature::TIMEOUT, 1, false, true, vec![0; 4]));
    out
}

/// Answers GET CONFIGURATION (before allocation-length truncation): the
/// 8-byte feature header (data length, current profile) and the features
/// the REQUESTED TYPE `rt` selects from `start` on. A reserved requested
/// type is INVALID FIELD IN CDB.
pub fn get_configuration(state: &DriveState, rt: u8, start: u16) -> Result<Vec<u8>, Sense> {
    let rt = RequestedType::from_bits(rt).ok_or(Sense::invalid_field_in_cdb(1, Some(1)))?;
    let mut b = vec![0u8; 8];
    put16(&mut b, 6, state.current_profile().map_or(0, |p| p.code()));
    for f in features(state) {
        let wanted = match rt {
            RequestedType::All => f.code >= start,
            RequestedType::Current => f.code >= start && f.current,
            RequestedType::One => f.code == start,
        };
        if wanted {
            b.extend_from_slice(&f.to_bytes());
        }
    }
    let len = (b.len() - 4) as u32;
    put32(&mut b, 0, len);
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bytes::{be16, be32};
    use crate::mmc::Medium;

    fn ram(loaded: bool) -> DriveState {
        let mut s = DriveState::new(
            Drive::DvdRam,
            Medium {
                blocks: 4096,
                writable: true,
            },
        );
        s.loaded = loaded;
        s
    }

    fn rom() -> DriveState {
        DriveState::new(
            Drive::DvdRom,
            Medium {
                blocks: 100,
                writable: false,
            },
        )
    }

    /// The feature codes of an answer, with their current bits.
    fn listed(b: &[u8]) -> Vec<(u16, bool)> {
        let mut out = Vec::new();
        let mut at = 8;
        while at + 4 <= b.len() {
            out.push((be16(b, at), b[at + 2] & 1 != 0));
            at += 4 + usize::from(b[at + 3]);
        }
        out
    }

    #[test]
    fn everything_from_zero() {
        let b = get_configuration(&ram(true), 0, 0).unwrap();
        assert_eq!(be32(&b, 0) as usize, b.len() - 4);
        assert_eq!(be16(&b, 6), 0x12);
        let codes: Vec<u16> = listed(&b).iter().map(|f| f.0).collect();
        assert_eq!(
            codes,
            [
                0x00, 0x01, 0x02, 0x03, 0x10, 0x1d, 0x1e, 0x1f, 0x20, 0x21, 0x23, 0x24, 0x26, 0x2d,
                0x105
            ]
        );
        // The profile list: DVD-RAM current, then DVD-ROM, CD-RW, CD-ROM.
        assert_eq!(&b[8..12], &[0, 0, 0x03, 16]);
        assert_eq!(&b[12..16], &[0, 0x12, 1, 0]);
        assert_eq!(&b[16..20], &[0, 0x10, 0, 0]);
        // The random writable feature: last LBA 4095, 2048-byte blocks.
        let rw = b.windows(4).position(|w| w == [0, 0x20, 0x05, 12]).unwrap();
        assert_eq!(be32(&b, rw + 4), 4095);
        assert_eq!(be32(&b, rw + 8), 2048);
        assert_eq!(be16(&b, rw + 12), 16);
    }

    #[test]
    fn requested_types() {
        let s = ram(true);
        // Current only, from 0x20: random writable, formattable, defect
        // management, timeout.
        let b = get_configuration(&s, 1, 0x20).unwrap();
        assert_eq!(
            listed(&b),
            [(0x20, true), (0x23, true), (0x24, true), (0x105, true)]
        );
        // One feature, or none but the header.
        let b = get_configuration(&s, 2, 0x24).unwrap();
        assert_eq!(listed(&b), [(0x24, true)]);
        let b = get_configuration(&s, 2, 0x25).unwrap();
        assert_eq!(b.len(), 8);
        assert_eq!(be32(&b, 0), 4);
        assert_eq!(
            get_configuration(&s, 3, 0),
            Err(Sense::invalid_field_in_cdb(1, Some(1)))
        );
        // All from 0x28 starts past the writing features of DVD-RAM.
        let b = get_configuration(&s, 0, 0x28).unwrap();
        assert_eq!(listed(&b), [(0x2d, false), (0x105, true)]);
    }

    #[test]
    fn no_medium() {
        let b = get_configuration(&ram(false), 0, 0).unwrap();
        assert_eq!(be16(&b, 6), 0, "no current profile");
        let current: Vec<u16> = listed(&b)
            .into_iter()
            .filter(|f| f.1)
            .map(|f| f.0)
            .collect();
        assert_eq!(current, [0x00, 0x01, 0x02, 0x03, 0x105]);
        // No profile is current.
        assert_eq!(&b[12..16], &[0, 0x12, 0, 0]);
    }

    #[test]
    fn a_read_only_drive_lists_no_writing() {
        let b = get_configuration(&rom(), 0, 0).unwrap();
        assert_eq!(be16(&b, 6), 0x10);
        let codes: Vec<u16> = listed(&b).iter().map(|f| f.0).collect();
        assert_eq!(
            codes,
            [0x00, 0x01, 0x02, 0x03, 0x10, 0x1d, 0x1e, 0x1f, 0x105]
        );
        assert_eq!(&b[8..20], &[0, 0, 0x03, 8, 0, 0x10, 1, 0, 0, 0x08, 0, 0]);
        // What Linux asks to decide whether the drive writes: from 0x20
        // there is no random writable feature.
        let b = get_configuration(&rom(), 0, 0x20).unwrap();
        assert_eq!(listed(&b), [(0x105, true)]);
    }
}
