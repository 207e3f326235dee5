//! What the emulation knows about a device: static parameters (from configfs
//! and the handler, owned by the runtime) and mutable state (changed by
//! MODE SELECT and by the runtime, one per device).

use crate::alua::PortGroup;
use crate::mmc::MmcParams;
use crate::sense::Sense;
use crate::xcopy::CopyStatus;
use crate::zbc::ZonedParams;

/// Thin-provisioning limits, reported in the Block Limits VPD page and
/// enforced on UNMAP. Values are used literally (as in the kernel): a limit
/// of 0 allows nothing, `u32::MAX` is effectively unlimited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnmapParams {
    /// MAXIMUM UNMAP LBA COUNT: most blocks one UNMAP descriptor may name.
    pub max_lba_count: u32,
    /// MAXIMUM UNMAP BLOCK DESCRIPTOR COUNT per UNMAP command.
    pub max_descriptors: u32,
    /// OPTIMAL UNMAP GRANULARITY in blocks.
    pub granularity: u32,
    /// UNMAP GRANULARITY ALIGNMENT in blocks (UGAVALID is set when non-zero,
    /// like the kernel).
    pub alignment: u32,
    /// LBPRZ: unmapped blocks read back as zeroes.
    pub reads_zeroes: bool,
}

impl Default for UnmapParams {
    /// The kernel `fileio` values for a regular file: 8192 blocks, one
    /// descriptor, granularity 1, alignment 0, LBPRZ clear.
    fn default() -> Self {
        Self {
            max_lba_count: 0x2000,
            max_descriptors: 1,
            granularity: 1,
            alignment: 0,
            reads_zeroes: false,
        }
    }
}

/// The transfer size accepted whatever the advertised maximum (the kernel
/// `fileio` backstore's limit, 8 MiB).
pub const ACCEPTED_TRANSFER_BYTES: u64 = 8 << 20;

/// Static device parameters, filled by the runtime from configfs and the
/// handler. The emulation never changes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceParams {
    /// Logical block size in bytes (`hw_block_size`).
    pub block_size: u32,
    /// Number of logical blocks (`dev_size / block_size`).
    pub num_blocks: u64,
    /// MAXIMUM TRANSFER LENGTH in blocks (`hw_max_sectors`), advertised in
    /// the Block Limits page; READ/WRITE longer than
    /// [`accepted_transfer_blocks`](Self::accepted_transfer_blocks) fail
    /// with INVALID FIELD IN CDB. 0 = no limit.
    pub max_transfer_blocks: u32,
    /// OPTIMAL TRANSFER LENGTH in blocks (Block Limits VPD).
    pub optimal_transfer_blocks: u32,
    /// Thin provisioning (UNMAP, WRITE SAME with UNMAP); `None` = not
    /// supported.
    pub unmap: Option<UnmapParams>,
    /// MAXIMUM WRITE SAME LENGTH in blocks. 0 = no limit.
    pub max_write_same_blocks: u32,
    /// MAXIMUM COMPARE AND WRITE LENGTH in blocks (Block Limits VPD); 0
    /// means COMPARE AND WRITE is not supported.
    pub max_compare_write_blocks: u8,
    /// T10 vendor identification (8 bytes on the wire, space padded).
    pub vendor: String,
    /// Product identification (16 bytes on the wire, space padded).
    pub product: String,
    /// Product revision level (4 bytes on the wire, space padded).
    pub revision: String,
    /// Unit serial number (configfs `wwn/vpd_unit_serial`); also the source
    /// of the NAA designator in VPD page 0x83.
    pub unit_serial: Option<String>,
    /// IEEE company ID of the NAA designator (the kernel's default OUI
    /// 00-14-05).
    pub company_id: u32,
    /// Non-rotating medium (Block Device Characteristics VPD).
    pub solid_state: bool,
    /// The device's ALUA target port groups (configfs `alua/`); empty when
    /// unknown, which leaves ALUA out (TPGS 0, no REPORT/SET TARGET PORT
    /// GROUPS).
    pub port_groups: Vec<PortGroup>,
    /// The logical unit group the device belongs to (configfs
    /// `core/alua/lu_gps`), reported in VPD page 0x83.
    pub lu_group: Option<u16>,
    /// The target port commands come in through (configfs: the enabled
    /// member port of the ALUA groups), reported in VPD page 0x83.
    pub target_port: Option<crate::alua::TargetPortId>,
    /// EXTENDED COPY and RECEIVE COPY RESULTS are served (3PC).
    pub third_party_copy: bool,
    /// Version descriptors in standard INQUIRY data: `None` gives the
    /// 36-byte answer of kernels up to 6.1 (Debian 12); `Some(transport)`
    /// gives the 96-byte answer of later kernels with SAM-5, the transport
    /// descriptor `transport` (e.g. 0x0C60 SAS-3 for tcm_loop, 0x0960 iSCSI,
    /// 0 if unknown), SPC-4 and SBC-3.
    pub version_descriptors: Option<u16>,
    /// A zoned block device (host managed or host aware): the peripheral
    /// device type, VPD pages 0xB1 and 0xB6, READ CAPACITY (16)'s RC BASIS
    /// and the ZBC commands of REPORT SUPPORTED OPERATION CODES follow it.
    /// `None` for an ordinary disk. Zone state is the handler's (see
    /// [`crate::zbc`]).
    pub zoned: Option<ZonedParams>,
    /// An optical drive (MMC): peripheral device type 5 with a removable
    /// medium, the SPC VPD pages only, the MMC mode pages. `None` for a
    /// disk. The medium is the handler's (see [`crate::mmc`]).
    pub mmc: Option<MmcParams>,
}

impl DeviceParams {
    /// Parameters for a device of `num_blocks` blocks of `block_size` bytes,
    /// with the TCMU defaults: 128-block transfers, no thin provisioning,
    /// 4096-block WRITE SAME, 1-block COMPARE AND WRITE (like the kernel),
    /// "LIO-ORG"/"TCMU device"/"0002", no serial.
    pub fn new(block_size: u32, num_blocks: u64) -> Self {
        Self {
            block_size,
            num_blocks,
            max_transfer_blocks: 128,
            optimal_transfer_blocks: 128,
            unmap: None,
            max_write_same_blocks: 0x1000,
            max_compare_write_blocks: 1,
            vendor: "LIO-ORG".to_owned(),
            product: "TCMU device".to_owned(),
            revision: "0002".to_owned(),
            unit_serial: None,
            company_id: 0x001405,
            solid_state: false,
            version_descriptors: None,
            port_groups: Vec::new(),
            lu_group: None,
            target_port: None,
            third_party_copy: false,
            zoned: None,
            mmc: None,
        }
    }

    /// The peripheral device type of INQUIRY and every VPD page: 0x05 for
    /// an optical drive, 0x14 for a host-managed zoned device, 0 (direct
    /// access) otherwise.
    pub fn peripheral_device_type(&self) -> u8 {
        if self.mmc.is_some() {
            return crate::mmc::PERIPHERAL_MMC;
        }
        self.zoned
            .as_ref()
            .map_or(crate::inquiry::PERIPHERAL_DISK, |z| {
                z.model.peripheral_device_type()
            })
    }

    /// Changes the logical block size to `block_size`, keeping the size of
    /// the device and of its transfer limits in bytes (rounded down, never
    /// to nothing): for a handler whose medium has its own block size (2048
    /// bytes for an optical disc, a zoned disk's format) whatever the
    /// backstore's `hw_block_size` says.
    pub fn set_block_size(&mut self, block_size: u32) {
        let (old, new) = (
            u64::from(self.block_size.max(1)),
            u64::from(block_size.max(1)),
        );
        let scale = |n: u32| u32::try_from((u64::from(n) * old / new).max(1)).unwrap_or(u32::MAX);
        if self.max_transfer_blocks != 0 {
            self.max_transfer_blocks = scale(self.max_transfer_blocks);
        }
        self.optimal_transfer_blocks = scale(self.optimal_transfer_blocks);
        self.num_blocks = self.num_blocks.saturating_mul(old) / new;
        self.block_size = block_size;
    }

    /// The longest READ/WRITE accepted: the advertised maximum, but at
    /// least [`ACCEPTED_TRANSFER_BYTES`] worth of blocks. TCMU devices
    /// advertise the kernel's small default (128 blocks), some initiators
    /// (libiscsi's test suite, for one) ignore the Block Limits page, and
    /// the kernel's own `fileio` backstore and the C tcmu-runner accept
    /// such transfers; the kernel refuses whatever does not fit the ring's
    /// data area before it reaches us.
    pub fn accepted_transfer_blocks(&self) -> u64 {
        let floor = ACCEPTED_TRANSFER_BYTES / u64::from(self.block_size.max(1));
        u64::from(self.max_transfer_blocks).max(floor)
    }

    /// The last LBA (0 for an empty device).
    pub fn last_lba(&self) -> u64 {
        self.num_blocks.saturating_sub(1)
    }

    /// The device's NAA designator (VPD page 0x83), which EXTENDED COPY
    /// uses to name it.
    pub fn naa(&self) -> [u8; 16] {
        let serial = self.unit_serial.as_deref().unwrap_or("");
        crate::vpd::naa_designator(self.company_id, serial.as_bytes())
    }

    /// Check that `blocks` blocks starting at `lba` lie within the device.
    pub fn check_range(&self, lba: u64, blocks: u64) -> Result<(), Sense> {
        match lba.checked_add(blocks) {
            Some(end) if end <= self.num_blocks => Ok(()),
            _ => Err(Sense::lba_out_of_range()),
        }
    }
}

/// Mutable per-device state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceState {
    /// WCE: the volatile write cache is enabled. When false the runtime
    /// should make every write durable (treat it as FUA).
    pub write_cache: bool,
    /// The WCE value reported as the default (MODE SENSE page control 2).
    pub default_write_cache: bool,
    /// A pending unit attention: reported (and cleared) by the next command
    /// other than INQUIRY and REQUEST SENSE, or by REQUEST SENSE.
    pub unit_attention: Option<Sense>,
    /// The status of the last EXTENDED COPY, for RECEIVE COPY RESULTS.
    pub last_copy: Option<CopyStatus>,
}

impl DeviceState {
    /// State with the write cache enabled or not (configfs
    /// `emulate_write_cache`), no unit attention pending.
    pub fn new(write_cache: bool) -> Self {
        Self {
            write_cache,
            default_write_cache: write_cache,
            unit_attention: None,
            last_copy: None,
        }
    }
}

impl Default for DeviceState {
    /// Write cache disabled (the kernel's default for TCMU devices).
    fn default() -> Self {
        Self::new(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        let p = DeviceParams::new(512, 100);
        assert!(p.check_range(0, 100).is_ok());
        assert!(p.check_range(99, 1).is_ok());
        assert!(p.check_range(100, 0).is_ok());
        assert_eq!(p.check_range(100, 1), Err(Sense::lba_out_of_range()));
        assert_eq!(p.check_range(u64::MAX, 2), Err(Sense::lba_out_of_range()));
        assert_eq!(p.last_lba(), 99);
        assert_eq!(DeviceParams::new(512, 0).last_lba(), 0);
    }

    #[test]
    fn peripheral_device_type() {
        let mut p = DeviceParams::new(512, 100);
        assert_eq!(p.peripheral_device_type(), 0x00);
        p.zoned = Some(ZonedParams::host_managed(4));
        assert_eq!(p.peripheral_device_type(), 0x14);
        p.zoned = Some(ZonedParams::host_aware(4));
        assert_eq!(p.peripheral_device_type(), 0x00);
    }

    #[test]
    fn optical_device_type() {
        let mut p = DeviceParams::new(2048, 100);
        p.mmc = Some(MmcParams {
            drive: crate::mmc::Drive::DvdRom,
        });
        assert_eq!(p.peripheral_device_type(), 0x05);
    }

    #[test]
    fn block_size_changes_keep_bytes() {
        let mut p = DeviceParams::new(512, 4096);
        p.max_transfer_blocks = 1024;
        p.optimal_transfer_blocks = 2;
        p.set_block_size(2048);
        assert_eq!(
            (
                p.block_size,
                p.num_blocks,
                p.max_transfer_blocks,
                p.optimal_transfer_blocks
            ),
            (2048, 1024, 256, 1)
        );
        p.max_transfer_blocks = 0;
        p.set_block_size(512);
        assert_eq!((p.num_blocks, p.max_transfer_blocks), (4096, 0));
    }

    #[test]
    fn defaults() {
        let s = DeviceState::default();
        assert!(!s.write_cache);
        assert_eq!(UnmapParams::default().max_lba_count, 0x2000);
    }
}
