//! [`ZbcHandler`]: one emulated zoned disk over its backing file.
//!
//! The handler owns the file twice over, like the `file` handler: an
//! io_uring [`tokio_uring::fs::File`] for data and hole punching, and a
//! duplicate `std` handle (same open file description) for the inline
//! copies and the zone records it writes through. Zone state lives in
//! [`Zones`], behind a `RefCell` that is never borrowed across an
//! `.await`; zone locks make each write's check, data and write pointer
//! update one step.
//!
//! The data path is the runtime's `read` and `write`, so every way of
//! writing — WRITE, WRITE SAME's and COMPARE AND WRITE's fallbacks,
//! EXTENDED COPY into the disk — obeys the zone rules and moves bytes with
//! no copy of ours. The command hook answers ZBC IN and ZBC OUT, formats
//! for FORMAT UNIT, and checks a WRITE SAME's whole range before the
//! runtime writes it piece by piece.

use std::cell::{Cell, RefCell};
use std::fs::OpenOptions;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use tcmu_core::buf::{self, DataBuf};
use tcmu_handler_file::io::{self as file_io, Inline};
use tcmu_runtime::{
    BlockError, BlockHandler, CmdOutcome, CmdReply, CommandHook, DeviceConfig, HandlerError,
    ReconfigRequest, ScsiCmd,
};
use tcmu_scsi::opcode as op;
use tcmu_scsi::zbc::{self as wire, ReportingOptions, ZoneAction};
use tcmu_scsi::{Command, Sense, ZonedModel, ZonedParams};
use tracing::{info, warn};

use crate::config::ZbcConfig;
use crate::geometry::Geometry;
use crate::locks::ZoneLocks;
use crate::meta;
use crate::store::{self, Plan};
use crate::zones::{Fault, Zones};

/// Largest buffer of zeroes written where a file system neither punches
/// holes nor zeroes ranges.
const ZERO_CHUNK: usize = 1 << 20;

/// One emulated zoned disk.
#[derive(Debug)]
pub struct ZbcHandler {
    /// The device's name, for logs.
    name: String,
    /// The cfgstring it was opened with, or last reconfigured to.
    cfgstring: RefCell<String>,
    path: PathBuf,
    /// Data and hole punching.
    file: tokio_uring::fs::File,
    /// Inline copies, zone records, `fdatasync`.
    meta: std::fs::File,
    policy: Cell<Inline>,
    /// The data's offset in the file.
    data_off: u64,
    /// Logical block size.
    bs: u64,
    zones: RefCell<Zones>,
    locks: ZoneLocks,
    /// Holes can be punched here (cleared by the first `EOPNOTSUPP`).
    punch: Cell<bool>,
    /// Ranges can be zeroed with `FALLOC_FL_ZERO_RANGE`.
    zero_range: Cell<bool>,
}

fn is_unsupported(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::EOPNOTSUPP)
}

/// The cfgstring's faults, checked against the layout.
fn faults(
    path: &Path,
    cfg: &ZbcConfig,
    g: &Geometry,
) -> Result<Vec<(std::ops::RangeInclusive<u32>, Fault)>, HandlerError> {
    let named = cfg
        .options
        .read_only
        .iter()
        .map(|r| (r.clone(), Fault::ReadOnly, "readonly"))
        .chain(
            cfg.options
                .offline
                .iter()
                .map(|r| (r.clone(), Fault::Offline, "offline")),
        );
    let mut out = Vec::new();
    for (zones, fault, name) in named {
        if *zones.end() >= g.nr_zones || *zones.start() < g.nr_conv {
            return Err(HandlerError::invalid_config(format!(
                "zbc handler: {}: option '{name}-{}-{}': only sequential zones {}..{} can be made {name}",
                path.display(),
                zones.start(),
                zones.end(),
                g.nr_conv,
                g.nr_zones.saturating_sub(1)
            )));
        }
        out.push((zones, fault));
    }
    Ok(out)
}

impl ZbcHandler {
    /// Opens (creating with mode 0600 if missing) the backing file for
    /// `config`: serves the zoned disk it holds, formats it when it is new
    /// or holds no data, or refuses it with the reason (see the crate
    /// documentation). Must run inside a tokio-uring runtime.
    pub async fn open(config: &DeviceConfig) -> Result<Self, HandlerError> {
        let cfg = ZbcConfig::check(&config.cfgstring).map_err(HandlerError::invalid_config)?;
        let path = cfg.path.clone();
        let std_file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(&path)
            .map_err(|e| {
                HandlerError::io(format!("zbc handler: cannot open {}", path.display()), e)
            })?;
        let md = std_file.metadata().map_err(|e| {
            HandlerError::io(format!("zbc handler: cannot stat {}", path.display()), e)
        })?;
        if !md.is_file() {
            return Err(HandlerError::invalid_config(format!(
                "zbc handler: {} is not a regular file",
                path.display()
            )));
        }
        let found = store::inspect(&path, &std_file, md.len())?;
        let (geometry, records) = match store::plan(
            &path,
            &std_file,
            found,
            &cfg.options,
            config.size,
        )? {
            Plan::Use(g, records) => (g, records),
            Plan::RewriteHeader(g, records, why) => {
                store::write_header(&path, &std_file, &g)?;
                info!(device = %config.name, path = %path.display(), "zbc handler: {why}");
                (g, records)
            }
            Plan::Format(g, why) => {
                let records = store::format(&path, &std_file, &g)?;
                info!(device = %config.name, path = %path.display(), "zbc handler: formatted as {g} ({why})");
                (g, records)
            }
        };
        let faults = faults(&path, &cfg, &geometry)?;
        if !faults.is_empty() {
            warn!(device = %config.name, "zbc handler: zones made read only or offline by the cfgstring: {faults:?}");
        }
        if geometry.lba_size != config.block_size {
            warn!(
                device = %config.name,
                "zbc handler: the disk has {}-byte blocks, the backstore's hw_block_size is {}: the disk's size wins",
                geometry.lba_size,
                config.block_size
            );
        }
        let zones = Zones::new(geometry.clone(), records, &faults);
        let meta = std_file.try_clone().map_err(|e| {
            HandlerError::io(
                format!("zbc handler: cannot duplicate {}", path.display()),
                e,
            )
        })?;
        let policy = file_io::policy_for(meta.as_fd());
        let handler = Self {
            name: config.name.clone(),
            cfgstring: RefCell::new(config.cfgstring.clone()),
            path,
            file: tokio_uring::fs::File::from_std(std_file),
            meta,
            policy: Cell::new(policy),
            data_off: meta::meta_size(geometry.nr_zones),
            bs: u64::from(geometry.lba_size),
            zones: RefCell::new(zones),
            locks: ZoneLocks::default(),
            punch: Cell::new(true),
            zero_range: Cell::new(true),
        };
        // Zones closed because the open limit went down.
        handler.persist().map_err(|e| {
            HandlerError::io(
                format!(
                    "zbc handler: cannot write the zone table of {}",
                    handler.path.display()
                ),
                e,
            )
        })?;
        let z = handler.zones.borrow();
        info!(
            device = %config.name,
            path = %handler.path.display(),
            "zbc handler: {}, {} zones of {} MiB ({} conventional), {}-byte blocks, {} open zones {}; {} zones hold data, {} open",
            match geometry.model {
                ZonedModel::HostManaged => "host managed",
                ZonedModel::HostAware => "host aware",
            },
            geometry.nr_zones,
            geometry.zone_mib(),
            geometry.nr_conv,
            geometry.lba_size,
            match geometry.model {
                ZonedModel::HostManaged => "at most",
                ZonedModel::HostAware => "optimal",
            },
            geometry.max_open,
            z.zones_with_data(),
            z.open_count(),
        );
        drop(z);
        Ok(handler)
    }

    /// The disk's layout.
    pub fn geometry(&self) -> Geometry {
        self.zones.borrow().geometry().clone()
    }

    /// What the generic layer reports for this disk.
    pub fn zoned_params(&self) -> ZonedParams {
        let g = self.geometry();
        match g.model {
            ZonedModel::HostManaged => ZonedParams::host_managed(g.max_open),
            ZonedModel::HostAware => ZonedParams::host_aware(g.max_open),
        }
    }

    /// The backing file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes the zone records that changed to the file (into the page
    /// cache: they survive the daemon's death, and `flush` makes them
    /// durable with the data).
    fn persist(&self) -> io::Result<()> {
        let mut zones = self.zones.borrow_mut();
        let changed = zones.take_changed();
        let mut i = 0;
        while i < changed.len() {
            // A run of consecutive zones, in one write.
            let first = changed[i];
            let mut bytes = Vec::with_capacity(meta::ZONE_LEN);
            let mut next = first;
            while i < changed.len() && changed[i] == next {
                if let Some(r) = zones.record(next) {
                    bytes.extend_from_slice(&r.encode());
                }
                next += 1;
                i += 1;
            }
            self.meta.write_all_at(&bytes, meta::zone_offset(first))?;
        }
        Ok(())
    }

    /// Byte offset and length in the file of `blocks` blocks at `lba`.
    fn span(&self, lba: u64, blocks: u64) -> (u64, u64) {
        (self.data_off + lba * self.bs, blocks * self.bs)
    }

    /// Makes `blocks` blocks at `lba` read as zeroes and drop their space:
    /// a hole where the file system punches them; if it does not and
    /// `must`, zeroes by `FALLOC_FL_ZERO_RANGE` or, failing that, written.
    async fn clear(&self, lba: u64, blocks: u64, must: bool) -> io::Result<()> {
        let (off, len) = self.span(lba, blocks);
        if len == 0 {
            return Ok(());
        }
        if self.punch.get() {
            let flags = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
            match self.file.fallocate(off, len, flags).await {
                Ok(()) => return Ok(()),
                Err(e) if is_unsupported(&e) => {
                    info!(device = %self.name, "zbc handler: the file system does not punch holes");
                    self.punch.set(false);
                }
                Err(e) => return Err(e),
            }
        }
        if !must {
            return Ok(());
        }
        if self.zero_range.get() {
            let flags = libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE;
            match self.file.fallocate(off, len, flags).await {
                Ok(()) => return Ok(()),
                Err(e) if is_unsupported(&e) => self.zero_range.set(false),
                Err(e) => return Err(e),
            }
        }
        let block = vec![0u8; self.bs as usize];
        file_io::write_pattern(&self.file, off, len, &block, ZERO_CHUNK).await
    }

    /// `fdatasync`: data and zone records.
    async fn sync(&self) -> io::Result<()> {
        if self.policy.get() == Inline::Always {
            // Memory: nothing to wait for.
            return rustix::fs::fdatasync(&self.meta).map_err(io::Error::from);
        }
        self.file.sync_data().await
    }

    /// The range of zones a run of blocks touches.
    fn zones_of(&self, lba: u64, blocks: u64) -> std::ops::RangeInclusive<u32> {
        let g = self.zones.borrow();
        let g = g.geometry();
        g.zone_of(lba)..=g.zone_of(lba + blocks.max(1) - 1)
    }

    /// A ZBC OUT action.
    async fn zone_action(&self, action: ZoneAction, lba: u64, count: u16, all: bool) -> CmdReply {
        // Checked before waiting for the zones, and again after.
        let targets = match self.zones.borrow().targets(action, lba, count, all) {
            Ok(t) => t,
            Err(s) => return CmdReply::check(s),
        };
        let _held = match (all, targets.first(), targets.last()) {
            (true, ..) => self.locks.lock_all().await,
            (false, Some(&a), Some(&b)) => self.locks.lock(a..=b).await,
            (false, ..) => return CmdReply::good(),
        };
        let targets = match self.zones.borrow().targets(action, lba, count, all) {
            Ok(t) => t,
            Err(s) => return CmdReply::check(s),
        };
        let r = match action {
            ZoneAction::Finish => self.finish(&targets).await,
            ZoneAction::ResetWritePointer => self.reset(&targets).await,
            ZoneAction::Open | ZoneAction::Close => {
                let applied = self.zones.borrow_mut().apply(action, &targets);
                match applied {
                    Err(s) => return CmdReply::check(s),
                    Ok(()) => self.persist(),
                }
            }
        };
        match r {
            Ok(()) => CmdReply::good(),
            Err(e) => {
                warn!(device = %self.name, "zbc handler: {} failed: {e}", action.name());
                CmdReply::check(Sense::medium_error_write())
            }
        }
    }

    /// FINISH ZONE: what lies past each write pointer is zeroed first, so
    /// the zone never reads stale bytes once FULL.
    async fn finish(&self, targets: &[u32]) -> io::Result<()> {
        let ranges = self.zones.borrow().finish_ranges(targets);
        for (lba, blocks) in ranges {
            self.clear(lba, blocks, true).await?;
        }
        let applied = self.zones.borrow_mut().apply(ZoneAction::Finish, targets);
        if let Err(s) = applied {
            warn!(device = %self.name, "zbc handler: FINISH ZONE refused after its check: {s:?}");
        }
        self.persist()
    }

    /// RESET WRITE POINTER: the zones are EMPTY first (they read as
    /// zeroes from then on), then their space goes back to the file
    /// system where it can be.
    async fn reset(&self, targets: &[u32]) -> io::Result<()> {
        let ranges = self.zones.borrow().written_ranges(targets);
        let applied = self
            .zones
            .borrow_mut()
            .apply(ZoneAction::ResetWritePointer, targets);
        if let Err(s) = applied {
            warn!(device = %self.name, "zbc handler: RESET WRITE POINTER refused after its check: {s:?}");
        }
        self.persist()?;
        for (lba, blocks) in ranges {
            if let Err(e) = self.clear(lba, blocks, false).await {
                // Reads past the write pointer are zeroes anyway.
                warn!(device = %self.name, "zbc handler: cannot free zone data at LBA {lba}: {e}");
            }
        }
        Ok(())
    }

    /// FORMAT UNIT: every zone reset, the conventional ones zeroed, the
    /// whole data area given back to the file system, made durable.
    async fn format_unit(&self) -> io::Result<()> {
        let _all = self.locks.lock_all().await;
        let (conv_blocks, capacity) = {
            let z = self.zones.borrow();
            let g = z.geometry();
            (g.zone_start(g.nr_conv), g.capacity)
        };
        self.zones.borrow_mut().reset_all();
        self.persist()?;
        self.clear(0, conv_blocks, true).await?;
        self.clear(conv_blocks, capacity - conv_blocks, false)
            .await?;
        self.sync().await
    }

    /// Replaces the cfgstring's faults, if the new cfgstring keeps the
    /// file and its layout.
    fn reconfigure(&self, cfgstring: &str) -> Result<(), HandlerError> {
        let cfg = ZbcConfig::parse(cfgstring).map_err(HandlerError::invalid_config)?;
        if cfg.path != self.path {
            return Err(HandlerError::refused(
                "zbc handler: changing the backing file of a running device is not supported",
            ));
        }
        let g = self.geometry();
        let want = g
            .with_options(&cfg.options, g.size_bytes())
            .map_err(HandlerError::refused)?;
        if want != g {
            return Err(HandlerError::refused(format!(
                "zbc handler: a running device keeps its layout ({g}); asked for {}",
                want.differences(&g).join(", ")
            )));
        }
        let faults = faults(&self.path, &cfg, &g)?;
        self.zones.borrow_mut().set_faults(&faults);
        self.persist()
            .map_err(|e| HandlerError::io("zbc handler: cannot write the zone table", e))?;
        info!(device = %self.name, "zbc handler: faults now {faults:?}");
        *self.cfgstring.borrow_mut() = cfgstring.to_owned();
        Ok(())
    }
}

#[async_trait(?Send)]
impl BlockHandler for ZbcHandler {
    async fn read(&self, offset: u64, mut bufs: Vec<DataBuf>) -> Result<(), BlockError> {
        let len = buf::total_len(&bufs) as u64;
        let (lba, blocks) = (offset / self.bs, len / self.bs);
        if blocks == 0 {
            return Ok(());
        }
        let runs = self
            .zones
            .borrow()
            .read(lba, blocks)
            .map_err(BlockError::Sense)?;
        let fd = self.meta.as_fd();
        let mut at = self.data_off + offset;
        for (k, run) in runs.iter().enumerate() {
            let n = (run.blocks * self.bs) as usize;
            let mut part = if k + 1 == runs.len() {
                std::mem::take(&mut bufs)
            } else {
                let rest = buf::split_list(&mut bufs, n);
                std::mem::replace(&mut bufs, rest)
            };
            if run.from_file {
                file_io::read(&self.file, fd, &self.policy, at, part).await?;
            } else {
                buf::zero_beyond(&mut part, 0);
            }
            at += n as u64;
        }
        Ok(())
    }

    async fn write(&self, offset: u64, bufs: Vec<DataBuf>) -> Result<(), BlockError> {
        let len = buf::total_len(&bufs) as u64;
        let (lba, blocks) = (offset / self.bs, len / self.bs);
        if blocks == 0 {
            return Ok(());
        }
        let _held = self.locks.lock(self.zones_of(lba, blocks)).await;
        self.zones
            .borrow_mut()
            .begin_write(lba, blocks)
            .map_err(BlockError::Sense)?;
        self.persist()?;
        let fd = self.meta.as_fd();
        file_io::write(&self.file, fd, &self.policy, self.data_off + offset, bufs).await?;
        self.zones.borrow_mut().end_write(lba, blocks);
        self.persist()?;
        Ok(())
    }

    fn read_now(&self, offset: u64, bufs: &mut [DataBuf]) -> Option<Result<(), BlockError>> {
        let len = buf::total_len(bufs) as u64;
        let (lba, blocks) = (offset / self.bs, len / self.bs);
        if blocks == 0 {
            return Some(Ok(()));
        }
        let runs = match self.zones.borrow().read(lba, blocks) {
            Ok(runs) => runs,
            Err(s) => return Some(Err(BlockError::Sense(s))),
        };
        match runs.as_slice() {
            [run] if run.from_file => {
                let fd = self.meta.as_fd();
                file_io::read_now(fd, &self.policy, self.data_off + offset, bufs)
                    .map(|r| r.map_err(BlockError::from))
            }
            [_] => {
                buf::zero_beyond(bufs, 0);
                Some(Ok(()))
            }
            // File data and zeroes: the async path splits the buffers.
            _ => None,
        }
    }

    fn write_now(&self, offset: u64, bufs: &[DataBuf]) -> Option<Result<(), BlockError>> {
        let len = buf::total_len(bufs) as u64;
        let (lba, blocks) = (offset / self.bs, len / self.bs);
        if blocks == 0 {
            return Some(Ok(()));
        }
        // Nothing here yields, so the zones need not be held: only free.
        if !self.locks.is_free(&self.zones_of(lba, blocks)) {
            return None;
        }
        if let Err(s) = self.zones.borrow_mut().begin_write(lba, blocks) {
            return Some(Err(BlockError::Sense(s)));
        }
        if let Err(e) = self.persist() {
            return Some(Err(e.into()));
        }
        // None: the file would wait; `write` admits the write again (the
        // zone is already open) and moves the same bytes.
        let fd = self.meta.as_fd();
        let written = file_io::write_now(fd, &self.policy, self.data_off + offset, bufs)?;
        Some(match written {
            Ok(()) => {
                self.zones.borrow_mut().end_write(lba, blocks);
                self.persist().map_err(BlockError::from)
            }
            Err(e) => Err(e.into()),
        })
    }

    async fn flush(&self) -> Result<(), BlockError> {
        Ok(self.sync().await?)
    }

    async fn reconfig(&self, change: &ReconfigRequest) -> Result<(), HandlerError> {
        match change {
            ReconfigRequest::Size(size) if *size != self.geometry().size_bytes() => {
                Err(HandlerError::refused(
                    "zbc handler: the size of a zoned disk is part of its layout and cannot change while it runs",
                ))
            }
            ReconfigRequest::Config(cfg) if *cfg != *self.cfgstring.borrow() => {
                self.reconfigure(cfg)
            }
            _ => Ok(()),
        }
    }

    async fn close(&self) {
        if let Err(e) = self.sync().await {
            warn!(device = %self.name, "zbc handler: final sync of {} failed: {e}", self.path.display());
        }
    }
}

#[async_trait(?Send)]
impl CommandHook for ZbcHandler {
    async fn handle_cmd(&self, mut cmd: ScsiCmd) -> CmdOutcome {
        let command = match tcmu_scsi::decode(cmd.cdb()) {
            Ok(c) => c,
            Err(s) => return CmdOutcome::Done(CmdReply::check(s)),
        };
        let reply = match command {
            Command::ReportZones {
                lba,
                alloc_len,
                options,
                partial,
            } => {
                let Some(options) = ReportingOptions::from_code(options) else {
                    return CmdOutcome::Done(CmdReply::check(Sense::invalid_field_in_cdb(
                        14,
                        Some(5),
                    )));
                };
                let report = self.zones.borrow().report(lba, options, partial, alloc_len);
                match report {
                    Ok(data) => CmdReply::data_in(cmd.data_mut(), &data),
                    Err(s) => CmdReply::check(s),
                }
            }
            Command::ZoneAction {
                action,
                lba,
                count,
                all,
            } => self.zone_action(action, lba, count, all).await,
            Command::Unsupported(wire::ZBC_IN | wire::ZBC_OUT) => {
                CmdReply::check(Sense::invalid_field_in_cdb(1, Some(4)))
            }
            Command::FormatUnit {
                fmtpinfo,
                longlist,
                fmtdata,
            } => {
                let list = buf::gather(cmd.data(), 64);
                if let Err(s) =
                    tcmu_scsi::emulate::check_format_unit(fmtpinfo, longlist, fmtdata, &list)
                {
                    return CmdOutcome::Done(CmdReply::check(s));
                }
                match self.format_unit().await {
                    Ok(()) => CmdReply::good(),
                    Err(e) => {
                        warn!(device = %self.name, "zbc handler: FORMAT UNIT failed: {e}");
                        CmdReply::check(Sense::medium_error_write())
                    }
                }
            }
            Command::WriteSame { lba, blocks, .. } => {
                // The whole range obeys the zone rules, or none of it is
                // written; the runtime checks the rest and writes it.
                let blocks = u64::from(blocks);
                let capacity = self.geometry().capacity;
                let within = lba.checked_add(blocks).is_some_and(|end| end <= capacity);
                if blocks > 0 && within {
                    if let Err(s) = self.zones.borrow().check_write(lba, blocks) {
                        return CmdOutcome::Done(CmdReply::check(s));
                    }
                }
                return CmdOutcome::NotHandled(cmd);
            }
            _ => return CmdOutcome::NotHandled(cmd),
        };
        CmdOutcome::Done(reply)
    }

    fn wants(&self, cdb: &[u8]) -> bool {
        matches!(
            cdb.first(),
            Some(
                &(wire::ZBC_IN
                    | wire::ZBC_OUT
                    | op::FORMAT_UNIT
                    | op::WRITE_SAME_10
                    | op::WRITE_SAME_16
                    | op::VARIABLE_LENGTH)
            )
        )
    }
}
