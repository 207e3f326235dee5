//! The backing file's metadata: encoding, decoding and checking (the
//! format is described in the crate documentation).
//!
//! Nothing here does I/O: [`Header`] and [`ZoneRecord`] turn into bytes
//! and back, and their `decode` says whether a header and its zone table
//! describe a disk this handler can serve, or why not.

use tcmu_scsi::zbc::{ZoneCondition, ZoneType};
use tcmu_scsi::ZonedModel;

use crate::geometry::Geometry;

/// The magic number, `'U' << 24 | 'Z' << 16 | 'B' << 8 | 'C'` stored little
/// endian (the bytes `CBZU`), as tcmu-runner's zbc handler writes it.
pub const MAGIC: u32 = 0x555a_4243;
/// The format version this handler writes. Version 0 is what tcmu-runner
/// writes (the byte is padding there, always zero); this handler reads
/// both and refuses newer ones.
pub const VERSION: u8 = 1;
/// Length of the header.
pub const HEADER_LEN: usize = 48;
/// Length of a zone record.
pub const ZONE_LEN: usize = 64;
/// The data starts at the metadata's end rounded up to this.
pub const ALIGN: u64 = 4096;

/// Byte offset of the version in the header.
const VERSION_AT: usize = 44;

/// The header's model value of a host-managed disk.
const MODEL_HM: u32 = 0x14;
/// The header's model value of a host-aware disk.
const MODEL_HA: u32 = 0x00;

/// Length of the metadata (header and zone table) of `nr_zones` zones,
/// rounded up to [`ALIGN`]: the data's offset in the file.
pub fn meta_size(nr_zones: u32) -> u64 {
    let raw = HEADER_LEN as u64 + ZONE_LEN as u64 * u64::from(nr_zones);
    raw.div_ceil(ALIGN) * ALIGN
}

/// Byte offset of zone `i`'s record in the file.
pub fn zone_offset(i: u32) -> u64 {
    HEADER_LEN as u64 + ZONE_LEN as u64 * u64::from(i)
}

/// The file's header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Format version (0: tcmu-runner's).
    pub version: u8,
    /// The disk's layout.
    pub geometry: Geometry,
}

fn le32(b: &[u8], at: usize) -> u32 {
    let mut x = [0u8; 4];
    if let Some(s) = b.get(at..at + 4) {
        x.copy_from_slice(s);
    }
    u32::from_le_bytes(x)
}

fn le64(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    if let Some(s) = b.get(at..at + 8) {
        x.copy_from_slice(s);
    }
    u64::from_le_bytes(x)
}

fn put(b: &mut [u8], at: usize, v: &[u8]) {
    if let Some(d) = b.get_mut(at..at + v.len()) {
        d.copy_from_slice(v);
    }
}

impl Header {
    /// The header of `geometry` in the current version.
    pub fn new(geometry: Geometry) -> Self {
        Self {
            version: VERSION,
            geometry,
        }
    }

    /// The 48 bytes.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let g = &self.geometry;
        let mut b = [0u8; HEADER_LEN];
        put(&mut b, 0, &MAGIC.to_le_bytes());
        let model = match g.model {
            ZonedModel::HostManaged => MODEL_HM,
            ZonedModel::HostAware => MODEL_HA,
        };
        put(&mut b, 4, &model.to_le_bytes());
        put(&mut b, 8, &g.capacity.to_le_bytes());
        put(&mut b, 16, &g.lba_size.to_le_bytes());
        // The zone size fits: at most 2^31 blocks (see config::MAX_ZONE_MIB).
        put(
            &mut b,
            20,
            &u32::try_from(g.zone_blocks)
                .unwrap_or(u32::MAX)
                .to_le_bytes(),
        );
        put(&mut b, 24, &g.nr_zones.to_le_bytes());
        put(&mut b, 28, &g.nr_conv.to_le_bytes());
        put(&mut b, 32, &g.max_open.to_le_bytes());
        // 36..44: tcmu-runner's open zone counters, never maintained in
        // the file by either implementation: zero.
        b[VERSION_AT] = self.version;
        b
    }

    /// Whether `b` starts with the magic number.
    pub fn has_magic(b: &[u8]) -> bool {
        b.len() >= 4 && le32(b, 0) == MAGIC
    }

    /// Decodes and checks a header (at least [`HEADER_LEN`] bytes).
    pub fn decode(b: &[u8]) -> Result<Self, String> {
        if b.len() < HEADER_LEN {
            return Err(format!(
                "the file is shorter than its {HEADER_LEN}-byte header"
            ));
        }
        if !Self::has_magic(b) {
            return Err("no zbc magic number".into());
        }
        let version = b[VERSION_AT];
        if version > VERSION {
            return Err(format!(
                "metadata version {version} is newer than this handler's ({VERSION})"
            ));
        }
        let model = match le32(b, 4) {
            MODEL_HM => ZonedModel::HostManaged,
            MODEL_HA => ZonedModel::HostAware,
            m => return Err(format!("unknown zone model {m:#x}")),
        };
        let capacity = le64(b, 8);
        let lba_size = le32(b, 16);
        let zone_blocks = u64::from(le32(b, 20));
        let nr_zones = le32(b, 24);
        let nr_conv = le32(b, 28);
        let max_open = le32(b, 32);
        if lba_size != 512 && lba_size != 4096 {
            return Err(format!("logical block size {lba_size}"));
        }
        if capacity == 0 {
            return Err("a capacity of 0 blocks".into());
        }
        if zone_blocks == 0 || !zone_blocks.is_power_of_two() {
            return Err(format!(
                "zone size {zone_blocks} blocks is not a power of two"
            ));
        }
        if zone_blocks * u64::from(lba_size) < 1 << 20 {
            return Err(format!("zone size {zone_blocks} blocks is under 1 MiB"));
        }
        if u64::from(nr_zones) != capacity.div_ceil(zone_blocks) {
            return Err(format!(
                "{nr_zones} zones of {zone_blocks} blocks for {capacity} blocks"
            ));
        }
        if nr_conv >= nr_zones {
            return Err(format!("{nr_conv} conventional zones of {nr_zones}"));
        }
        if max_open == 0 || max_open > nr_zones {
            return Err(format!("{max_open} open zones of {nr_zones}"));
        }
        Ok(Self {
            version,
            geometry: Geometry {
                model,
                lba_size,
                capacity,
                zone_blocks,
                nr_zones,
                nr_conv,
                max_open,
            },
        })
    }
}

/// One zone as the file keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ZoneRecord {
    /// First LBA.
    pub start: u64,
    /// Length in blocks.
    pub len: u64,
    /// Write pointer (all ones for conventional zones).
    pub wp: u64,
    /// Zone type.
    pub zone_type: ZoneType,
    /// Condition (never READ ONLY or OFFLINE: those come from the
    /// cfgstring).
    pub cond: ZoneCondition,
    /// NON_SEQ: written out of order (host aware).
    pub non_seq: bool,
    /// RESET WRITE POINTER RECOMMENDED.
    pub reset: bool,
}

impl ZoneRecord {
    /// The record of zone `i` of a freshly formatted disk.
    pub fn fresh(g: &Geometry, i: u32) -> Self {
        let start = g.zone_start(i);
        let conv = i < g.nr_conv;
        Self {
            start,
            len: g.zone_len(i),
            wp: if conv { u64::MAX } else { start },
            zone_type: if conv {
                ZoneType::Conventional
            } else {
                g.model.sequential_zone_type()
            },
            cond: if conv {
                ZoneCondition::NotWritePointer
            } else {
                ZoneCondition::Empty
            },
            non_seq: false,
            reset: false,
        }
    }

    /// The 64 bytes.
    pub fn encode(&self) -> [u8; ZONE_LEN] {
        let mut b = [0u8; ZONE_LEN];
        put(&mut b, 0, &self.start.to_le_bytes());
        put(&mut b, 8, &self.len.to_le_bytes());
        put(&mut b, 16, &self.wp.to_le_bytes());
        b[24] = self.zone_type.code();
        b[25] = self.cond.code();
        b[26] = u8::from(self.non_seq);
        b[27] = u8::from(self.reset);
        b
    }

    /// Decodes and checks the record of zone `i` of a disk laid out as
    /// `g`.
    pub fn decode(b: &[u8], g: &Geometry, i: u32) -> Result<Self, String> {
        let at = |what: &str| format!("zone {i}: {what}");
        if b.len() < ZONE_LEN {
            return Err(at("record cut short"));
        }
        let start = le64(b, 0);
        let len = le64(b, 8);
        let wp = le64(b, 16);
        if start != g.zone_start(i) || len != g.zone_len(i) {
            return Err(at(&format!(
                "starts at {start} for {len} blocks, expected {} for {}",
                g.zone_start(i),
                g.zone_len(i)
            )));
        }
        let zone_type =
            ZoneType::from_code(b[24]).ok_or_else(|| at(&format!("zone type {:#x}", b[24])))?;
        let expected_type = if i < g.nr_conv {
            ZoneType::Conventional
        } else {
            g.model.sequential_zone_type()
        };
        if zone_type != expected_type {
            return Err(at(&format!(
                "type {zone_type:?} where the layout has {expected_type:?}"
            )));
        }
        let cond = ZoneCondition::from_code(b[25])
            .ok_or_else(|| at(&format!("zone condition {:#x}", b[25])))?;
        let end = start + len;
        let ok = match cond {
            ZoneCondition::NotWritePointer => zone_type == ZoneType::Conventional,
            _ if zone_type == ZoneType::Conventional => false,
            ZoneCondition::Empty => wp == start,
            ZoneCondition::ImplicitlyOpen | ZoneCondition::ExplicitlyOpen => {
                wp >= start && wp < end
            }
            ZoneCondition::Closed => wp > start && wp < end,
            ZoneCondition::Full => wp == end,
            ZoneCondition::ReadOnly | ZoneCondition::Offline => false,
        };
        if !ok {
            return Err(at(&format!(
                "condition {cond:?} with its write pointer at {wp} (zone {start}..{end})"
            )));
        }
        if b[26] > 1 || b[27] > 1 {
            return Err(at("attribute flags other than 0 or 1"));
        }
        Ok(Self {
            start,
            len,
            wp,
            zone_type,
            cond,
            non_seq: b[26] == 1,
            reset: b[27] == 1,
        })
    }

    /// Whether the zone has data written since it was last reset.
    pub fn has_data(&self) -> bool {
        self.zone_type.has_write_pointer() && self.wp != self.start
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn geometry() -> Geometry {
        Geometry::new(ZonedModel::HostManaged, 512, 4, Some(1), 8, 10 << 20).unwrap()
    }

    #[test]
    fn sizes() {
        assert_eq!(meta_size(1), 4096);
        assert_eq!(meta_size(63), 4096);
        assert_eq!(meta_size(64), 8192);
        assert_eq!(zone_offset(0), 48);
        assert_eq!(zone_offset(2), 176);
    }

    #[test]
    fn header_round_trip_and_layout() {
        let h = Header::new(geometry());
        let b = h.encode();
        assert_eq!(&b[..4], b"CBZU");
        assert_eq!(&b[4..8], &[0x14, 0, 0, 0]);
        assert_eq!(le64(&b, 8), 20480);
        assert_eq!(le32(&b, 16), 512);
        assert_eq!(le32(&b, 20), 8192);
        assert_eq!(le32(&b, 24), 3);
        assert_eq!(le32(&b, 28), 1);
        assert_eq!(le32(&b, 32), 1);
        assert_eq!(b[44], VERSION);
        assert_eq!(Header::decode(&b).unwrap(), h);
        // tcmu-runner's own files: version 0.
        let mut c = b;
        c[44] = 0;
        assert_eq!(Header::decode(&c).unwrap().version, 0);
    }

    #[test]
    fn header_refusals() {
        let b = Header::new(geometry()).encode();
        let with = |at: usize, v: &[u8]| {
            let mut c = b;
            c[at..at + v.len()].copy_from_slice(v);
            Header::decode(&c).unwrap_err()
        };
        assert_eq!(with(0, b"ABCD"), "no zbc magic number");
        assert!(with(44, &[2]).contains("version 2 is newer"));
        assert!(with(4, &[1]).contains("unknown zone model 0x1"));
        assert!(with(16, &[0, 4]).contains("logical block size 1024"));
        assert!(with(20, &[0, 0x30, 0, 0]).contains("not a power of two"));
        assert!(with(20, &[0, 0x04, 0, 0]).contains("under 1 MiB"));
        assert!(with(24, &[4]).contains("4 zones of 8192 blocks"));
        assert!(with(28, &[3]).contains("3 conventional zones of 3"));
        assert!(with(32, &[0]).contains("0 open zones"));
        assert!(Header::decode(&b[..40]).unwrap_err().contains("shorter"));
    }

    #[test]
    fn zone_records() {
        let g = geometry();
        let conv = ZoneRecord::fresh(&g, 0);
        assert_eq!(conv.wp, u64::MAX);
        assert_eq!(conv.cond, ZoneCondition::NotWritePointer);
        let seq = ZoneRecord::fresh(&g, 2);
        assert_eq!((seq.start, seq.len, seq.wp), (16384, 4096, 16384));
        assert_eq!(seq.zone_type, ZoneType::SequentialWriteRequired);
        let b = seq.encode();
        assert_eq!(b[24..28], [2, 1, 0, 0]);
        assert_eq!(ZoneRecord::decode(&b, &g, 2).unwrap(), seq);
        assert_eq!(ZoneRecord::decode(&conv.encode(), &g, 0).unwrap(), conv);
        assert!(!seq.has_data());

        let bad = |r: ZoneRecord, i: u32| ZoneRecord::decode(&r.encode(), &g, i).unwrap_err();
        let closed_at = |wp| ZoneRecord {
            wp,
            cond: ZoneCondition::Closed,
            ..seq
        };
        assert!(bad(closed_at(16384), 2).contains("condition Closed"));
        assert!(ZoneRecord::decode(&closed_at(16385).encode(), &g, 2)
            .unwrap()
            .has_data());
        assert!(bad(closed_at(16384 + 4096), 2).contains("condition Closed"));
        let full = ZoneRecord {
            wp: 16384 + 4096,
            cond: ZoneCondition::Full,
            ..seq
        };
        ZoneRecord::decode(&full.encode(), &g, 2).unwrap();
        assert!(bad(seq, 1).contains("zone 1: starts at 16384"));
        let conv_as_seq = ZoneRecord {
            cond: ZoneCondition::Empty,
            ..conv
        };
        assert!(bad(conv_as_seq, 0).contains("condition Empty"));
        let ro = ZoneRecord {
            cond: ZoneCondition::ReadOnly,
            ..seq
        };
        assert!(bad(ro, 2).contains("ReadOnly"));
        let mut b = seq.encode();
        b[24] = 3;
        assert!(ZoneRecord::decode(&b, &g, 2)
            .unwrap_err()
            .contains("type SequentialWritePreferred"));
        b[24] = 9;
        assert!(ZoneRecord::decode(&b, &g, 2)
            .unwrap_err()
            .contains("zone type 0x9"));
        let mut b = seq.encode();
        b[26] = 2;
        assert!(ZoneRecord::decode(&b, &g, 2).unwrap_err().contains("flags"));
    }
}
