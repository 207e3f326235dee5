//! Fuzz target `scsi_cdb`: the CDB decoder and the generic emulation of
//! `tcmu-scsi`, on any bytes an initiator can send and any device the
//! runtime can describe.
//!
//! Input layout, chosen so that a seed is a plain CDB behind one length byte
//! (see `fuzz/seeds/scsi_cdb/`):
//!
//! | bytes      | meaning                                                   |
//! |------------|-----------------------------------------------------------|
//! | 0          | CDB length `n`, 0..=255                                   |
//! | 1..=n      | the CDB                                                   |
//! | next 2     | data-out length `m`, big-endian                           |
//! | next `m`   | the data-out buffer                                       |
//! | the rest   | the device, a [`Device`] read with `arbitrary`            |
//!
//! Each part is cut short where the input ends, and missing device bytes
//! give the defaults: 512-byte blocks, 2^20 blocks, the kernel's
//! thin-provisioning limits, write cache off, no unit attention.
//!
//! Besides "nothing panics", every input checks the contracts the runtime
//! relies on (each assertion names the one it checks):
//! - decoding ignores bytes past the length the opcode's group implies (the
//!   runtime may copy more of the ring than the CDB);
//! - an answer has sense data exactly when its status is CHECK CONDITION,
//!   and that sense survives the descriptor-format round trip;
//! - data-in never exceeds the CDB's allocation length;
//! - READ, WRITE, WRITE SAME and UNMAP requests are non-empty, lie within
//!   the device and respect its transfer, WRITE SAME and UNMAP limits;
//! - a pending unit attention is reported and cleared as [`execute`]
//!   documents;
//! - a command that does not want the data-out buffer answers the same
//!   without it;
//! - on a zoned device, every page and the standard INQUIRY data carry its
//!   peripheral device type, and REPORT ZONES data built with
//!   [`zbc::report_zones`] from the command's fields and zones made of the
//!   device's bytes keeps to the allocation length and lists only whole
//!   descriptors of the zones the reporting options select.

#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use tcmu_scsi::opcode::cdb_len;
use tcmu_scsi::zbc::{self, ReportingOptions, ZoneCondition, ZoneDescriptor, ZoneType};
use tcmu_scsi::{
    decode, execute, Command, DeviceParams, DeviceState, Outcome, Sense, Status, UnmapParams,
    ZonedParams,
};

fuzz_target!(|data: &[u8]| one_input(data));

/// Logical block size: the usual ones first, then odd ones.
#[derive(Debug, Arbitrary)]
enum BlockSize {
    B512,
    B4096,
    /// 512 + 8 bytes of protection information, as some disks format.
    B520,
    B4160,
    One,
    /// Anything up to 64 KiB, 0 included.
    Other(u16),
}

impl BlockSize {
    /// The size in bytes.
    fn bytes(&self) -> u32 {
        match *self {
            BlockSize::B512 => 512,
            BlockSize::B4096 => 4096,
            BlockSize::B520 => 520,
            BlockSize::B4160 => 4160,
            BlockSize::One => 1,
            BlockSize::Other(n) => u32::from(n),
        }
    }
}

/// Device size in blocks, with the edges of the LBA arithmetic.
#[derive(Debug, Arbitrary)]
enum NumBlocks {
    Mebi,
    Zero,
    One,
    /// READ CAPACITY (10) reports 0xFFFFFFFF from here on.
    FourGi,
    JustBelowFourGi,
    Max,
    MaxMinusOne,
    Other(u64),
}

impl NumBlocks {
    /// The number of blocks.
    fn blocks(&self) -> u64 {
        match *self {
            NumBlocks::Mebi => 1 << 20,
            NumBlocks::Zero => 0,
            NumBlocks::One => 1,
            NumBlocks::FourGi => 1 << 32,
            NumBlocks::JustBelowFourGi => (1 << 32) - 1,
            NumBlocks::Max => u64::MAX,
            NumBlocks::MaxMinusOne => u64::MAX - 1,
            NumBlocks::Other(n) => n,
        }
    }
}

/// A limit in blocks where 0 means "none".
#[derive(Debug, Arbitrary)]
enum Limit {
    Default,
    Unlimited,
    Other(u32),
}

impl Limit {
    /// The limit, `default` standing for [`Limit::Default`].
    fn value(&self, default: u32) -> u32 {
        match *self {
            Limit::Default => default,
            Limit::Unlimited => 0,
            Limit::Other(n) => n,
        }
    }
}

/// Thin provisioning: on by default so that UNMAP seeds reach the parser.
#[derive(Debug, Arbitrary)]
enum Thin {
    KernelDefaults,
    Off,
    Custom {
        max_lba_count: u32,
        max_descriptors: u32,
        granularity: u32,
        alignment: u32,
        reads_zeroes: bool,
    },
}

impl Thin {
    /// `DeviceParams::unmap`.
    fn params(&self) -> Option<UnmapParams> {
        match *self {
            Thin::KernelDefaults => Some(UnmapParams::default()),
            Thin::Off => None,
            Thin::Custom {
                max_lba_count,
                max_descriptors,
                granularity,
                alignment,
                reads_zeroes,
            } => Some(UnmapParams {
                max_lba_count,
                max_descriptors,
                granularity,
                alignment,
                reads_zeroes,
            }),
        }
    }
}

/// The unit attention pending when the command arrives.
#[derive(Debug, Arbitrary)]
enum Attention {
    None,
    Reset,
    ModeParametersChanged,
    CapacityChanged,
    InquiryDataChanged,
    LunsChanged,
}

impl Attention {
    /// `DeviceState::unit_attention`.
    fn sense(&self) -> Option<Sense> {
        match self {
            Attention::None => None,
            Attention::Reset => Some(Sense::unit_attention_reset()),
            Attention::ModeParametersChanged => {
                Some(Sense::unit_attention_mode_parameters_changed())
            }
            Attention::CapacityChanged => Some(Sense::unit_attention_capacity_changed()),
            Attention::InquiryDataChanged => Some(Sense::unit_attention_inquiry_data_changed()),
            Attention::LunsChanged => Some(Sense::unit_attention_luns_changed()),
        }
    }
}

/// INQUIRY identity strings. The unit serial is cut to 254 bytes, the most
/// configfs `wwn/vpd_unit_serial` accepts.
#[derive(Debug, Arbitrary)]
enum Identity {
    Default,
    Custom {
        vendor: String,
        product: String,
        revision: String,
        serial: Option<String>,
        company_id: u32,
    },
}

/// A zoned model, or none.
#[derive(Debug, Arbitrary)]
enum Zoned {
    No,
    HostManaged { max_open: u32, unrestricted_reads: bool },
    HostAware { optimal_open: u32 },
}

impl Zoned {
    /// `DeviceParams::zoned`.
    fn params(&self) -> Option<ZonedParams> {
        match *self {
            Zoned::No => None,
            Zoned::HostManaged {
                max_open,
                unrestricted_reads,
            } => Some(ZonedParams {
                unrestricted_reads,
                ..ZonedParams::host_managed(max_open)
            }),
            Zoned::HostAware { optimal_open } => Some(ZonedParams::host_aware(optimal_open)),
        }
    }
}

/// One zone of a REPORT ZONES answer, from fuzzer bytes.
#[derive(Debug, Arbitrary)]
struct FuzzZone {
    zone_type: u8,
    condition: u8,
    reset_recommended: bool,
    non_sequential: bool,
    length: u64,
    write_pointer: u64,
}

impl FuzzZone {
    /// The descriptor of the zone starting at `start` (reserved codes
    /// become a conventional zone).
    fn descriptor(&self, start: u64) -> ZoneDescriptor {
        ZoneDescriptor {
            zone_type: ZoneType::from_code(self.zone_type & 3).unwrap_or(ZoneType::Conventional),
            condition: ZoneCondition::from_code(self.condition & 0xf)
                .unwrap_or(ZoneCondition::NotWritePointer),
            reset_recommended: self.reset_recommended,
            non_sequential: self.non_sequential,
            length: self.length,
            start,
            write_pointer: self.write_pointer,
        }
    }
}

/// Everything about the device that the fuzzer chooses.
#[derive(Debug, Arbitrary)]
struct Device {
    block_size: BlockSize,
    num_blocks: NumBlocks,
    max_transfer: Limit,
    max_write_same: Limit,
    thin: Thin,
    /// WCE as currently set.
    write_cache: bool,
    /// The default WCE differs from the current one (a MODE SELECT ran).
    wce_changed: bool,
    attention: Attention,
    identity: Identity,
    solid_state: bool,
    /// `DeviceParams::version_descriptors`: the long INQUIRY of newer kernels.
    version_descriptors: Option<u16>,
    zoned: Zoned,
    /// The zones a REPORT ZONES answer lists (at most 64 of them).
    zones: Vec<FuzzZone>,
}

impl Device {
    /// The static parameters.
    fn params(&self) -> DeviceParams {
        let mut p = DeviceParams::new(self.block_size.bytes(), self.num_blocks.blocks());
        p.max_transfer_blocks = self.max_transfer.value(p.max_transfer_blocks);
        p.max_write_same_blocks = self.max_write_same.value(p.max_write_same_blocks);
        p.unmap = self.thin.params();
        p.solid_state = self.solid_state;
        p.version_descriptors = self.version_descriptors;
        p.zoned = self.zoned.params();
        if let Identity::Custom {
            vendor,
            product,
            revision,
            serial,
            company_id,
        } = &self.identity
        {
            p.vendor.clone_from(vendor);
            p.product.clone_from(product);
            p.revision.clone_from(revision);
            p.unit_serial = serial.as_deref().map(|s| cut(s, 254).to_owned());
            p.company_id = *company_id;
        }
        p
    }

    /// The state before the command.
    fn state(&self) -> DeviceState {
        let mut s = DeviceState::new(self.write_cache);
        s.default_write_cache = self.write_cache != self.wce_changed;
        s.unit_attention = self.attention.sense();
        s
    }
}

/// The longest prefix of `s` of at most `max` bytes ending on a character
/// boundary.
fn cut(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Splits off the first `n` bytes of `data`, or all of it if shorter.
fn take(data: &[u8], n: usize) -> (&[u8], &[u8]) {
    data.split_at(n.min(data.len()))
}

/// Runs one fuzz input (layout in the module header).
fn one_input(data: &[u8]) {
    let Some((&n, rest)) = data.split_first() else {
        check_decode(&[]);
        return;
    };
    let (cdb, rest) = take(rest, usize::from(n));
    let Some(cmd) = check_decode(cdb) else {
        return;
    };
    let (m, rest) = take(rest, 2);
    let m = match *m {
        [hi, lo] => u16::from_be_bytes([hi, lo]),
        [hi] => u16::from(hi) << 8,
        _ => 0,
    };
    let (data_out, rest) = take(rest, usize::from(m));
    // Device::arbitrary fails only on data it cannot use at all.
    let Ok(device) = Device::arbitrary(&mut Unstructured::new(rest)) else {
        return;
    };
    check_execute(&cmd, &device.params(), &device.state(), data_out);
    if let Command::ReportZones {
        lba,
        alloc_len,
        options,
        partial,
    } = cmd
    {
        check_report_zones(&device, lba, alloc_len, options, partial);
    }
}

/// REPORT ZONES data for the device's zones (laid end to end from `lba`)
/// keeps the allocation length, counts whole descriptors and lists exactly
/// the zones `options` selects.
fn check_report_zones(device: &Device, lba: u64, alloc_len: u32, options: u8, partial: bool) {
    let Some(options) = ReportingOptions::from_code(options) else {
        return;
    };
    let mut start = lba;
    let zones: Vec<ZoneDescriptor> = device
        .zones
        .iter()
        .take(64)
        .map(|z| {
            let d = z.descriptor(start);
            start = start.wrapping_add(z.length);
            d
        })
        .collect();
    let data = zbc::report_zones(u64::MAX, zones.iter().copied(), options, partial, alloc_len);
    let alloc = usize::try_from(alloc_len).unwrap_or(usize::MAX);
    assert!(data.len() <= alloc, "REPORT ZONES: {} bytes for {alloc}", data.len());
    let selected: Vec<&ZoneDescriptor> = zones.iter().filter(|z| options.matches(z)).collect();
    let Some(header) = data.get(..4) else {
        return;
    };
    let list_len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
    assert_eq!(list_len % zbc::DESCRIPTOR_LEN, 0, "a zone list of part of a descriptor");
    let listed = list_len / zbc::DESCRIPTOR_LEN;
    if partial {
        assert!(
            64 + list_len <= alloc.max(64),
            "PARTIAL lists {listed} zones that do not fit in {alloc} bytes"
        );
    } else {
        assert_eq!(listed, selected.len(), "zone list length without PARTIAL");
    }
    for (i, chunk) in data.get(64..).unwrap_or_default().chunks(64).enumerate() {
        let want = selected.get(i).map(|z| z.to_bytes());
        assert_eq!(
            want.as_ref().map(|w| &w[..chunk.len()]),
            Some(chunk),
            "descriptor {i} of the report"
        );
    }
}

/// Decodes `cdb`, checks the decoder's contracts and returns the command.
fn check_decode(cdb: &[u8]) -> Option<Command> {
    let decoded = decode(cdb);
    if let (Some(&opcode), Ok(_)) = (cdb.first(), &decoded) {
        if let Some(len) = cdb_len(opcode).filter(|&len| cdb.len() > len) {
            assert_eq!(
                decode(&cdb[..len]),
                decoded,
                "decode depends on bytes past the {len}-byte CDB {cdb:02x?}"
            );
        }
    }
    match decoded {
        Ok(cmd) => Some(cmd),
        Err(sense) => {
            check_sense(&sense);
            None
        }
    }
}

/// The ALLOCATION LENGTH of a command that returns data-in, if it has one.
fn alloc_len(cmd: &Command) -> Option<u64> {
    match *cmd {
        Command::RequestSense { alloc_len, .. } => Some(alloc_len.into()),
        Command::Inquiry { alloc_len, .. } => Some(alloc_len.into()),
        Command::ModeSense { alloc_len, .. } => Some(alloc_len.into()),
        // No allocation length in the CDB: the parameter data is 8 bytes.
        Command::ReadCapacity10 => Some(8),
        Command::ReadCapacity16 { alloc_len } => Some(alloc_len.into()),
        Command::ReportSupportedOpcodes { alloc_len, .. } => Some(alloc_len.into()),
        _ => None,
    }
}

/// Checks that sense data serializes and parses back.
fn check_sense(sense: &Sense) {
    let _ = sense.to_fixed();
    let desc = sense.to_descriptor();
    assert_eq!(
        Sense::parse(&desc),
        Some(*sense),
        "descriptor sense {desc:02x?} does not parse back"
    );
}

/// Whether a pending unit attention survives this command ([`execute`]'s
/// documented exceptions).
fn keeps_unit_attention(cmd: &Command) -> bool {
    matches!(cmd, Command::Inquiry { .. })
}

/// Executes `cmd` on a copy of `state` and checks the outcome and the
/// state it leaves.
fn check_execute(cmd: &Command, params: &DeviceParams, state: &DeviceState, data_out: &[u8]) {
    let mut after = state.clone();
    let outcome = execute(cmd, params, &mut after, data_out);

    if !cmd.wants_data_out() && !data_out.is_empty() {
        let mut again = state.clone();
        assert_eq!(
            execute(cmd, params, &mut again, &[]),
            outcome,
            "{cmd:?} does not want data-out but its answer depends on it"
        );
        assert_eq!(again, after, "{cmd:?}: state depends on ignored data-out");
    }

    if let Some(ua) = state.unit_attention {
        if keeps_unit_attention(cmd) {
            assert_eq!(after.unit_attention, Some(ua), "{cmd:?} consumed the UA");
        } else {
            assert_eq!(after.unit_attention, None, "{cmd:?} left the UA pending");
            if !matches!(cmd, Command::RequestSense { .. }) {
                match &outcome {
                    Outcome::Done(r) => assert_eq!(
                        (r.status, r.sense),
                        (Status::CheckCondition, Some(ua)),
                        "{cmd:?} did not report the pending UA"
                    ),
                    other => panic!("{cmd:?} with a UA pending gave {other:?}"),
                }
            }
        }
    }

    check_outcome(cmd, params, &outcome);
}

/// Checks that `blocks` at `lba` is a non-empty range within the device.
fn check_range(what: &str, params: &DeviceParams, lba: u64, blocks: u32) {
    assert!(blocks > 0, "{what}: zero blocks");
    assert!(
        lba.checked_add(u64::from(blocks))
            .is_some_and(|end| end <= params.num_blocks),
        "{what}: {blocks} blocks at {lba} past the end ({} blocks)",
        params.num_blocks
    );
}

/// Checks `blocks` against a limit where 0 means none.
fn check_limit(what: &str, blocks: u32, limit: u32) {
    assert!(
        limit == 0 || blocks <= limit,
        "{what}: {blocks} blocks over the limit of {limit}"
    );
}

/// The READ/WRITE limit the device enforces (0 = none).
fn accepted(params: &DeviceParams) -> u32 {
    if params.max_transfer_blocks == 0 {
        0
    } else {
        u32::try_from(params.accepted_transfer_blocks()).unwrap_or(u32::MAX)
    }
}

/// Checks what [`execute`] asked for against the device.
fn check_outcome(cmd: &Command, params: &DeviceParams, outcome: &Outcome) {
    match outcome {
        Outcome::Done(r) => {
            if let (Command::Inquiry { .. }, Some(&ptype)) = (cmd, r.data_in.first()) {
                assert_eq!(
                    ptype,
                    params.peripheral_device_type(),
                    "{cmd:?}: the peripheral device type"
                );
            }
            assert_eq!(
                r.status == Status::CheckCondition,
                r.sense.is_some(),
                "{cmd:?}: status {:?} with sense {:?}",
                r.status,
                r.sense
            );
            if let Some(sense) = &r.sense {
                check_sense(sense);
            }
            if let Some(limit) = alloc_len(cmd) {
                let len = u64::try_from(r.data_in.len()).unwrap_or(u64::MAX);
                assert!(
                    len <= limit,
                    "{cmd:?}: {len} bytes of data-in for allocation length {limit}"
                );
            }
        }
        Outcome::Read { lba, blocks, .. } => {
            check_range("READ", params, *lba, *blocks);
            check_limit("READ", *blocks, accepted(params));
        }
        Outcome::Write { lba, blocks, .. } => {
            check_range("WRITE", params, *lba, *blocks);
            check_limit("WRITE", *blocks, accepted(params));
        }
        Outcome::Unmap(ranges) => {
            let Some(limits) = &params.unmap else {
                panic!("{cmd:?}: UNMAP {ranges:?} on a device without thin provisioning");
            };
            assert!(!ranges.is_empty(), "{cmd:?}: empty UNMAP list");
            assert!(
                u64::try_from(ranges.len()).unwrap_or(u64::MAX)
                    <= u64::from(limits.max_descriptors),
                "{cmd:?}: {} UNMAP descriptors over the limit of {}",
                ranges.len(),
                limits.max_descriptors
            );
            for r in ranges {
                check_range("UNMAP", params, r.lba, r.blocks);
                assert!(
                    r.blocks <= limits.max_lba_count,
                    "{cmd:?}: UNMAP of {} blocks over the limit of {}",
                    r.blocks,
                    limits.max_lba_count
                );
            }
        }
        Outcome::WriteSame {
            lba,
            blocks,
            unmap,
            block,
        } => {
            check_range("WRITE SAME", params, *lba, *blocks);
            check_limit("WRITE SAME", *blocks, params.max_write_same_blocks);
            assert!(
                !*unmap || params.unmap.is_some(),
                "{cmd:?}: WRITE SAME with UNMAP on a device without thin provisioning"
            );
            assert_eq!(
                u64::try_from(block.len()).ok(),
                Some(u64::from(params.block_size)),
                "{cmd:?}: WRITE SAME block of the wrong size"
            );
        }
        // Flush, and whatever variants tcmu-scsi adds later: no panic is
        // all that is checked.
        _ => {}
    }
}
