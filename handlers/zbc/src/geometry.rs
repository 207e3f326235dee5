//! [`Geometry`]: the zone layout of an emulated disk, from the
//! cfgstring's options and the device size (or from a backing file's
//! metadata), with tcmu-runner's defaults and rules.

use std::fmt;

use tcmu_scsi::ZonedModel;

use crate::config::ZbcOptions;

/// Default zone size in MiB.
pub const DEFAULT_ZONE_MIB: u64 = 256;
/// Default number of open zones (before the cap of [`Geometry::new`]).
pub const DEFAULT_OPEN: u32 = 128;
/// Default logical block size.
pub const DEFAULT_LBA_SIZE: u32 = 512;

const MIB: u64 = 1 << 20;

/// The layout of an emulated zoned disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Geometry {
    /// Host managed or host aware.
    pub model: ZonedModel,
    /// Logical block size in bytes (512 or 4096).
    pub lba_size: u32,
    /// Number of logical blocks.
    pub capacity: u64,
    /// Logical blocks per zone, a power of two; the last zone may be
    /// shorter.
    pub zone_blocks: u64,
    /// Number of zones.
    pub nr_zones: u32,
    /// Conventional zones, the first ones of the disk.
    pub nr_conv: u32,
    /// Maximum (host managed) or optimal (host aware) number of open zones.
    pub max_open: u32,
}

impl Geometry {
    /// The layout for a device of `dev_size` bytes: `conv` conventional
    /// zones (`None`: 1% of the zones, at least 1) and `open` open zones,
    /// capped as tcmu-runner caps it: at half the sequential zones (at
    /// least 1) once it reaches that. Refused, with the reason, when the
    /// device is not a whole number of blocks or has no room for a
    /// sequential zone.
    pub fn new(
        model: ZonedModel,
        lba_size: u32,
        zone_mib: u64,
        conv: Option<u32>,
        open: u32,
        dev_size: u64,
    ) -> Result<Self, String> {
        let lba = u64::from(lba_size.max(1));
        if dev_size % lba != 0 {
            return Err(format!(
                "the device size ({dev_size} bytes) is not a multiple of the {lba_size}-byte logical block"
            ));
        }
        let capacity = dev_size / lba;
        let zone_blocks = (zone_mib.saturating_mul(MIB) / lba).max(1);
        let nr_zones = u32::try_from(capacity.div_ceil(zone_blocks))
            .map_err(|_| format!("{} zones are too many", capacity.div_ceil(zone_blocks)))?;
        let nr_conv = match conv {
            Some(n) => n,
            None => (nr_zones / 100).max(1),
        };
        if nr_conv >= nr_zones {
            return Err(format!(
                "{nr_conv} conventional zone(s) leave no sequential zone: the device holds {nr_zones} zone(s) of {zone_mib} MiB"
            ));
        }
        let half = ((nr_zones - nr_conv) / 2).max(1);
        Ok(Self {
            model,
            lba_size,
            capacity,
            zone_blocks,
            nr_zones,
            nr_conv,
            max_open: if open >= half { half } else { open },
        })
    }

    /// The layout the options ask for on a device of `dev_size` bytes,
    /// with the defaults for what they leave out.
    pub fn from_options(o: &ZbcOptions, dev_size: u64) -> Result<Self, String> {
        Self::new(
            o.model.unwrap_or(ZonedModel::HostManaged),
            o.lba_size.unwrap_or(DEFAULT_LBA_SIZE),
            o.zone_mib.unwrap_or(DEFAULT_ZONE_MIB),
            o.conv,
            o.open.unwrap_or(DEFAULT_OPEN),
            dev_size,
        )
    }

    /// This layout with what the options give changed, on a device of
    /// `dev_size` bytes: what a cfgstring asks of an existing file.
    pub fn with_options(&self, o: &ZbcOptions, dev_size: u64) -> Result<Self, String> {
        Self::new(
            o.model.unwrap_or(self.model),
            o.lba_size.unwrap_or(self.lba_size),
            o.zone_mib.unwrap_or_else(|| self.zone_mib()),
            Some(o.conv.unwrap_or(self.nr_conv)),
            o.open.unwrap_or(self.max_open),
            dev_size,
        )
    }

    /// The zone size in MiB.
    pub fn zone_mib(&self) -> u64 {
        self.zone_blocks * u64::from(self.lba_size) / MIB
    }

    /// The device size in bytes.
    pub fn size_bytes(&self) -> u64 {
        self.capacity * u64::from(self.lba_size)
    }

    /// Number of sequential (write pointer) zones.
    pub fn seq_zones(&self) -> u32 {
        self.nr_zones - self.nr_conv
    }

    /// The first LBA of zone `i`.
    pub fn zone_start(&self, i: u32) -> u64 {
        u64::from(i) * self.zone_blocks
    }

    /// The length in blocks of zone `i` (the last one may be shorter).
    pub fn zone_len(&self, i: u32) -> u64 {
        let start = self.zone_start(i);
        self.zone_blocks.min(self.capacity.saturating_sub(start))
    }

    /// The zone holding `lba` (which must be below the capacity).
    pub fn zone_of(&self, lba: u64) -> u32 {
        u32::try_from(lba / self.zone_blocks).unwrap_or(u32::MAX)
    }

    /// What differs between this layout and `other`, as cfgstring options
    /// (`zsize-4 (file: zsize-8)`), capacity included.
    pub fn differences(&self, other: &Geometry) -> Vec<String> {
        let mut d = Vec::new();
        let mut diff = |what: String, was: String| {
            if what != was {
                d.push(format!("{what} (the file has {was})"));
            }
        };
        diff(model_option(self.model), model_option(other.model));
        diff(
            format!("lba-{}", self.lba_size),
            format!("lba-{}", other.lba_size),
        );
        diff(
            format!("zsize-{}", self.zone_mib()),
            format!("zsize-{}", other.zone_mib()),
        );
        diff(
            format!("conv-{}", self.nr_conv),
            format!("conv-{}", other.nr_conv),
        );
        diff(
            format!("open-{}", self.max_open),
            format!("open-{}", other.max_open),
        );
        diff(
            format!("a {}-byte device", self.size_bytes()),
            format!("a {}-byte device", other.size_bytes()),
        );
        d
    }

    /// Whether `other` differs only in the number of open zones, which can
    /// change without touching a zone.
    pub fn same_but_open(&self, other: &Geometry) -> bool {
        Geometry {
            max_open: self.max_open,
            ..other.clone()
        } == *self
    }
}

/// `model-HM` or `model-HA`.
pub fn model_option(m: ZonedModel) -> String {
    match m {
        ZonedModel::HostManaged => "model-HM".into(),
        ZonedModel::HostAware => "model-HA".into(),
    }
}

/// As cfgstring options: `model-HM/lba-512/zsize-256/conv-1/open-128`.
impl fmt::Display for Geometry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/lba-{}/zsize-{}/conv-{}/open-{}",
            model_option(self.model),
            self.lba_size,
            self.zone_mib(),
            self.nr_conv,
            self.max_open
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    const HM: ZonedModel = ZonedModel::HostManaged;

    #[test]
    fn defaults_as_tcmu_runner() {
        // 64 GiB of 256 MiB zones: 256 zones, 2 conventional, 128 open.
        let g = Geometry::from_options(&ZbcOptions::default(), 64 << 30).unwrap();
        assert_eq!(g.to_string(), "model-HM/lba-512/zsize-256/conv-2/open-127");
        assert_eq!(
            (g.nr_zones, g.zone_blocks, g.capacity),
            (256, 1 << 19, 1 << 27)
        );
        // open-128 reaches half of the 254 sequential zones (127): capped.
        let g = Geometry::new(HM, 4096, 4, None, 128, 64 << 20).unwrap();
        assert_eq!(
            (g.nr_zones, g.nr_conv, g.max_open, g.zone_blocks),
            (16, 1, 7, 1024)
        );
        let g = Geometry::new(HM, 512, 4, Some(0), 3, 64 << 20).unwrap();
        assert_eq!((g.nr_conv, g.max_open), (0, 3));
        // At least one open zone.
        let g = Geometry::new(HM, 512, 4, Some(2), 128, 12 << 20).unwrap();
        assert_eq!(g.max_open, 1);
    }

    #[test]
    fn runt_last_zone() {
        let g = Geometry::new(HM, 512, 4, Some(1), 8, 10 << 20).unwrap();
        assert_eq!(g.nr_zones, 3);
        assert_eq!(g.zone_len(2), 4096);
        assert_eq!(g.zone_len(1), 8192);
        assert_eq!(g.zone_start(2), 16384);
        assert_eq!(g.zone_of(16383), 1);
        assert_eq!(g.zone_of(16384), 2);
    }

    #[test]
    fn refusals() {
        let e = Geometry::new(HM, 4096, 4, None, 8, (64 << 20) + 512).unwrap_err();
        assert!(e.contains("not a multiple of the 4096-byte"), "{e}");
        let e = Geometry::new(HM, 512, 256, None, 8, 64 << 20).unwrap_err();
        assert!(e.contains("leave no sequential zone"), "{e}");
        let e = Geometry::new(HM, 512, 4, Some(16), 8, 64 << 20).unwrap_err();
        assert!(e.contains("16 conventional zone(s)"), "{e}");
    }

    #[test]
    fn comparing_with_a_file() {
        let file = Geometry::new(HM, 512, 4, Some(1), 6, 64 << 20).unwrap();
        let same = ZbcOptions {
            zone_mib: Some(4),
            ..ZbcOptions::default()
        };
        assert_eq!(file.with_options(&same, 64 << 20).unwrap(), file);
        let open = ZbcOptions {
            open: Some(4),
            ..ZbcOptions::default()
        };
        let wanted = file.with_options(&open, 64 << 20).unwrap();
        assert!(wanted.same_but_open(&file));
        assert_eq!(
            wanted.differences(&file),
            vec!["open-4 (the file has open-6)"]
        );
        let other = ZbcOptions {
            zone_mib: Some(8),
            model: Some(ZonedModel::HostAware),
            ..ZbcOptions::default()
        };
        let wanted = file.with_options(&other, 64 << 20).unwrap();
        assert!(!wanted.same_but_open(&file));
        assert_eq!(
            wanted.differences(&file),
            vec![
                "model-HA (the file has model-HM)",
                "zsize-8 (the file has zsize-4)",
                "open-3 (the file has open-6)"
            ]
        );
        let bigger = file
            .with_options(&ZbcOptions::default(), 128 << 20)
            .unwrap();
        assert_eq!(
            bigger.differences(&file),
            vec!["a 134217728-byte device (the file has a 67108864-byte device)"]
        );
    }
}
