//! [`FboHandler`]: one optical drive and its disc, a file.
//!
//! The handler owns the file twice over, like the `file` handler: an
//! io_uring [`tokio_uring::fs::File`] for data (shared with a background
//! format) and a duplicate `std` handle (same open file description) for
//! the inline copies. The drive (is a disc loaded, may it be removed, is
//! it being formatted, which events are pending) lives in a `Drive`
//! behind an `Rc<RefCell<…>>` that is never borrowed across an `.await`;
//! a background FORMAT UNIT holds the other reference.
//!
//! The data path is the runtime's `read` and `write`, zero copy between
//! the file and the ring's data area. The command hook answers the MMC
//! commands from [`tcmu_scsi::mmc`], and takes every command while the
//! drive is not ready (tray open, formatting) or, on a read-only disc, the
//! writes: [`CommandHook::wants`] says so with no allocation, so a ready
//! drive's reads and writes never see the hook.

use std::cell::{Cell, RefCell};
use std::fs::OpenOptions;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use async_trait::async_trait;
use tcmu_core::buf::{self, DataBuf};
use tcmu_handler_file::io::{self as file_io, Inline};
use tcmu_runtime::{
    BlockError, BlockHandler, CmdOutcome, CmdReply, CommandHook, DeviceConfig, HandlerError,
    ReconfigRequest, ScsiCmd,
};
use tcmu_scsi::mmc::events::{EventQueue, MediaEvent, OperationalEvent};
use tcmu_scsi::mmc::{self, config, disc, format, mode, structure};
use tcmu_scsi::mmc::{Drive as DriveKind, DriveState, Medium, Prevent, BLOCK_SIZE};
use tcmu_scsi::opcode as op;
use tcmu_scsi::{Command, Sense};
use tracing::{info, warn};

use crate::config::FboConfig;

/// Bytes of zeroes a background format writes at a time (its progress
/// moves in these steps).
pub const FORMAT_CHUNK: usize = 1 << 20;

/// The drive's state and its pending events.
#[derive(Debug)]
struct Drive {
    state: DriveState,
    events: EventQueue,
}

/// The background format, if one runs.
type FormatTask = Option<tokio::task::JoinHandle<()>>;

/// One optical drive.
pub struct FboHandler {
    /// The device's name, for logs.
    name: String,
    path: PathBuf,
    /// `ro/`: a DVD-ROM drive, the file opened read-only.
    read_only: bool,
    /// Data, and the zeroes of a format.
    file: Rc<tokio_uring::fs::File>,
    /// Inline copies.
    std_file: std::fs::File,
    policy: Cell<Inline>,
    drive: Rc<RefCell<Drive>>,
    format_task: RefCell<FormatTask>,
}

impl std::fmt::Debug for FboHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FboHandler")
            .field("name", &self.name)
            .field("path", &self.path)
            .field("read_only", &self.read_only)
            .field("drive", &self.drive.borrow().state)
            .finish_non_exhaustive()
    }
}

/// REPORT LUNS.
const REPORT_LUNS: u8 = 0xa0;

/// Commands a drive answers whatever its state (as tcmu-runner's, plus
/// REPORT LUNS, which the runtime answers for the target).
fn always_answered(opcode: u8) -> bool {
    matches!(
        opcode,
        op::INQUIRY
            | op::REQUEST_SENSE
            | REPORT_LUNS
            | mmc::GET_CONFIGURATION
            | mmc::GET_EVENT_STATUS_NOTIFICATION
    )
}

/// Commands answered with the tray open (the rest are NOT READY, MEDIUM
/// NOT PRESENT).
fn answered_without_medium(opcode: u8) -> bool {
    always_answered(opcode)
        || matches!(
            opcode,
            op::MODE_SENSE_6
                | op::MODE_SENSE_10
                | op::MODE_SELECT_6
                | op::MODE_SELECT_10
                | op::START_STOP_UNIT
                | mmc::PREVENT_ALLOW_MEDIUM_REMOVAL
                | mmc::READ_FORMAT_CAPACITIES
                | mmc::MECHANISM_STATUS
                | mmc::READ_DISC_STRUCTURE
                | op::MAINTENANCE_IN
        )
}

/// Commands that change the medium.
fn writes_medium(opcode: u8) -> bool {
    matches!(
        opcode,
        op::WRITE_6
            | op::WRITE_10
            | op::WRITE_12
            | op::WRITE_16
            | op::WRITE_VERIFY_10
            | op::WRITE_VERIFY_16
            | op::WRITE_SAME_10
            | op::WRITE_SAME_16
            | op::COMPARE_AND_WRITE
            | op::UNMAP
            | op::FORMAT_UNIT
    )
}

/// The commands the hook answers in every state.
fn hooked(opcode: u8) -> bool {
    matches!(
        opcode,
        mmc::PREVENT_ALLOW_MEDIUM_REMOVAL
            | mmc::READ_FORMAT_CAPACITIES
            | mmc::READ_TOC_PMA_ATIP
            | mmc::GET_CONFIGURATION
            | mmc::GET_EVENT_STATUS_NOTIFICATION
            | mmc::READ_DISC_INFORMATION
            | mmc::READ_TRACK_INFORMATION
            | mmc::READ_DISC_STRUCTURE
            | mmc::MECHANISM_STATUS
            | op::START_STOP_UNIT
            | op::READ_CAPACITY_10
            | op::MODE_SENSE_6
            | op::MODE_SENSE_10
            | op::FORMAT_UNIT
    )
}

/// `data` cut to an allocation length.
fn upto(data: &[u8], alloc_len: u16) -> &[u8] {
    &data[..data.len().min(usize::from(alloc_len))]
}

impl FboHandler {
    /// Opens (creating with mode 0600 if missing, unless `ro/`) the disc's
    /// file for `config`. Must run inside a tokio-uring runtime.
    pub async fn open(config: &DeviceConfig) -> Result<Self, HandlerError> {
        let (cfg, _) = FboConfig::check(&config.cfgstring).map_err(HandlerError::invalid_config)?;
        let path = cfg.path.clone();
        let blocks = config.size / u64::from(BLOCK_SIZE);
        let blocks = u32::try_from(blocks).map_err(|_| {
            HandlerError::refused(format!(
                "fbo handler: {} bytes is more than an optical disc's 2^32 blocks of {BLOCK_SIZE} bytes",
                config.size
            ))
        })?;
        if blocks == 0 {
            return Err(HandlerError::refused(format!(
                "fbo handler: a disc of {} bytes holds no {BLOCK_SIZE}-byte block",
                config.size
            )));
        }
        let mut opts = OpenOptions::new();
        opts.read(true).custom_flags(libc::O_CLOEXEC);
        if !cfg.read_only {
            opts.write(true).create(true).mode(0o600);
        }
        let std_file = opts.open(&path).map_err(|e| {
            HandlerError::io(format!("fbo handler: cannot open {}", path.display()), e)
        })?;
        if config.size % u64::from(BLOCK_SIZE) != 0 {
            warn!(
                device = %config.name,
                "fbo handler: the device size {} is not a multiple of {BLOCK_SIZE}: the disc has {blocks} blocks",
                config.size
            );
        }
        let dup = std_file.try_clone().map_err(|e| {
            HandlerError::io(
                format!("fbo handler: cannot duplicate {}", path.display()),
                e,
            )
        })?;
        let policy = file_io::policy_for(std_file.as_fd());
        let kind = if cfg.read_only {
            DriveKind::DvdRom
        } else {
            DriveKind::DvdRam
        };
        let medium = Medium {
            blocks,
            writable: !cfg.read_only,
        };
        let mut events = EventQueue::default();
        // The drive's features "changed" as it came up.
        events.post_operational(OperationalEvent::FEATURE_CHANGE);
        info!(
            device = %config.name,
            path = %path.display(),
            "fbo handler: {} with a {} disc of {blocks} blocks",
            if cfg.read_only { "DVD-ROM drive" } else { "DVD-RAM drive" },
            if cfg.read_only { "DVD-ROM" } else { "DVD-RAM" },
        );
        Ok(Self {
            name: config.name.clone(),
            path,
            read_only: cfg.read_only,
            file: Rc::new(tokio_uring::fs::File::from_std(std_file)),
            std_file: dup,
            policy: Cell::new(policy),
            drive: Rc::new(RefCell::new(Drive {
                state: DriveState::new(kind, medium),
                events,
            })),
            format_task: RefCell::new(None),
        })
    }

    /// The disc's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the drive is a DVD-ROM drive serving its disc read-only.
    pub fn read_only(&self) -> bool {
        self.read_only
    }

    /// The drive as the MMC answers see it (for tests and logs).
    pub fn drive_state(&self) -> DriveState {
        self.drive.borrow().state.clone()
    }

    /// Whether the drive is not ready for most commands: the tray is open
    /// or a format runs.
    fn busy_or_empty(&self) -> bool {
        let d = self.drive.borrow();
        !d.state.loaded || d.state.format_progress.is_some()
    }

    /// What a command gets before it is looked at: NOT READY while a
    /// format runs or the tray is open, DATA PROTECT for a write to a
    /// read-only disc.
    fn gate(&self, opcode: u8) -> Option<Sense> {
        let d = self.drive.borrow();
        if let Some(p) = d.state.format_progress {
            if !always_answered(opcode) {
                return Some(Sense::format_in_progress(p));
            }
        }
        if !d.state.loaded && !answered_without_medium(opcode) {
            return Some(Sense::medium_not_present_tray_open());
        }
        if self.read_only && writes_medium(opcode) {
            return Some(Sense::write_protected());
        }
        None
    }

    /// The MMC mode pages' view of the drive.
    fn mode_state(&self) -> mode::ModeState {
        let d = self.drive.borrow();
        mode::ModeState {
            drive: d.state.drive,
            write_cache: true,
            locked: d.state.prevent.locked(),
        }
    }

    /// START STOP UNIT: LOEJ with START loads the disc, without it ejects
    /// it (refused while PREVENT ALLOW MEDIUM REMOVAL holds it); without
    /// LOEJ the spindle "turns" and nothing changes.
    fn start_stop(&self, start: bool, loej: bool, power_condition: u8) -> CmdReply {
        if power_condition != 0 {
            return CmdReply::check(Sense::invalid_field_in_cdb(4, Some(7)));
        }
        if !loej {
            return CmdReply::good();
        }
        let mut d = self.drive.borrow_mut();
        if start {
            if !d.state.loaded {
                d.state.loaded = true;
                d.events.post_media(MediaEvent::NewMedia);
                info!(device = %self.name, "fbo handler: disc loaded");
            }
        } else if d.state.loaded {
            if d.state.prevent.locked() {
                return CmdReply::check(Sense::medium_removal_prevented());
            }
            d.state.loaded = false;
            d.events.post_media(MediaEvent::MediaRemoval);
            info!(device = %self.name, "fbo handler: disc ejected");
        }
        CmdReply::good()
    }

    /// FORMAT UNIT: checked, then the whole disc written with zeroes, in
    /// the background with IMMED (progress in REQUEST SENSE).
    async fn format_unit(&self, cmd: &ScsiCmd) -> CmdReply {
        let list = buf::gather(cmd.data(), format::PARAMETER_LIST_LEN);
        let (request, blocks) = {
            let mut d = self.drive.borrow_mut();
            let request = match format::format_unit(cmd.cdb(), &list, &d.state) {
                Ok(r) => r,
                Err(s) => return CmdReply::check(s),
            };
            // Not ready from here on: no command slips in between.
            d.state.format_progress = Some(0);
            d.events.post_busy();
            (request, d.state.medium.blocks)
        };
        info!(device = %self.name, immed = request.immed, "fbo handler: formatting {blocks} blocks");
        let job = format_job(
            self.name.clone(),
            Rc::clone(&self.file),
            Rc::clone(&self.drive),
            u64::from(blocks) * u64::from(BLOCK_SIZE),
        );
        if request.immed {
            *self.format_task.borrow_mut() = Some(tokio_uring::spawn(async move {
                let _ = job.await;
            }));
            return CmdReply::good();
        }
        match job.await {
            Ok(()) => CmdReply::good(),
            Err(_) => CmdReply::check(Sense::medium_error_write()),
        }
    }

    /// REQUEST SENSE while formatting: the progress, as data.
    fn request_sense(cmd: &mut ScsiCmd, progress: u16) -> CmdReply {
        let Ok(Command::RequestSense { desc, alloc_len }) = tcmu_scsi::decode(cmd.cdb()) else {
            return CmdReply::check(Sense::invalid_field_in_cdb(1, Some(0)));
        };
        let s = Sense::format_in_progress(progress);
        let data = if desc {
            s.to_descriptor()
        } else {
            s.to_fixed().to_vec()
        };
        CmdReply::data_in(cmd.data_mut(), upto(&data, u16::from(alloc_len)))
    }

    /// The MMC commands, and those whose answer depends on the drive.
    async fn answer(&self, cmd: &mut ScsiCmd) -> Option<CmdReply> {
        let command = match tcmu_scsi::decode(cmd.cdb()) {
            Ok(c) => c,
            Err(s) => return Some(CmdReply::check(s)),
        };
        let data = |r: Result<Vec<u8>, Sense>, alloc_len: u16, cmd: &mut ScsiCmd| match r {
            Ok(d) => CmdReply::data_in(cmd.data_mut(), upto(&d, alloc_len)),
            Err(s) => CmdReply::check(s),
        };
        let reply = match command {
            Command::PreventAllowMediumRemoval { prevent } => {
                self.drive.borrow_mut().state.prevent = Prevent::from_bits(prevent);
                CmdReply::good()
            }
            Command::StartStopUnit {
                start,
                loej,
                power_condition,
                ..
            } => self.start_stop(start, loej, power_condition),
            Command::ReadFormatCapacities { alloc_len } => {
                let r = disc::read_format_capacities(&self.drive.borrow().state);
                data(Ok(r), alloc_len, cmd)
            }
            Command::ReadToc {
                msf,
                format,
                track,
                alloc_len,
            } => {
                let r = disc::read_toc(&self.drive.borrow().state, msf, format, track);
                data(r, alloc_len, cmd)
            }
            Command::GetConfiguration {
                rt,
                start,
                alloc_len,
            } => {
                let r = config::get_configuration(&self.drive.borrow().state, rt, start);
                data(r, alloc_len, cmd)
            }
            Command::GetEventStatus {
                polled,
                classes,
                alloc_len,
            } => {
                let r = {
                    let mut d = self.drive.borrow_mut();
                    let d = &mut *d;
                    d.events.answer(&d.state, polled, classes, alloc_len)
                };
                data(r, alloc_len, cmd)
            }
            Command::ReadDiscInformation {
                data_type,
                alloc_len,
            } => {
                let r = disc::read_disc_information(&self.drive.borrow().state, data_type);
                data(r, alloc_len, cmd)
            }
            Command::ReadTrackInformation {
                address_type,
                address,
                alloc_len,
                ..
            } => {
                let r =
                    disc::read_track_information(&self.drive.borrow().state, address_type, address);
                data(r, alloc_len, cmd)
            }
            Command::ReadDiscStructure {
                media_type,
                layer,
                format,
                alloc_len,
                ..
            } => {
                let r = structure::read_disc_structure(
                    &self.drive.borrow().state,
                    media_type,
                    layer,
                    format,
                );
                data(r, alloc_len, cmd)
            }
            Command::MechanismStatus { alloc_len } => {
                let r = disc::mechanism_status(&self.drive.borrow().state);
                data(Ok(r), alloc_len, cmd)
            }
            Command::ReadCapacity10 => {
                let r = disc::read_capacity(cmd.cdb(), &self.drive.borrow().state);
                match r {
                    Ok(b) => CmdReply::data_in(cmd.data_mut(), &b),
                    Err(s) => CmdReply::check(s),
                }
            }
            Command::ModeSense {
                pc,
                page,
                subpage,
                alloc_len,
                ten,
                ..
            } => {
                let r = mode::mode_sense(&self.mode_state(), ten, pc, page, subpage);
                data(r, alloc_len, cmd)
            }
            Command::FormatUnit { .. } => self.format_unit(cmd).await,
            _ => return None,
        };
        Some(reply)
    }
}

/// Writes `len` bytes of zeroes over the disc from its start, moving the
/// drive's format progress, then syncs; the drive is ready again at the
/// end, whatever happened.
async fn format_job(
    name: String,
    file: Rc<tokio_uring::fs::File>,
    drive: Rc<RefCell<Drive>>,
    len: u64,
) -> io::Result<()> {
    let mut zeroes = vec![0u8; FORMAT_CHUNK];
    let mut done = 0u64;
    let mut result = Ok(());
    while done < len {
        let n = (len - done).min(FORMAT_CHUNK as u64) as usize;
        zeroes.truncate(n);
        let (r, back) = file.write_all_at(zeroes, done).await;
        zeroes = back;
        if let Err(e) = r {
            result = Err(e);
            break;
        }
        done += n as u64;
        let progress = (done * 0x1_0000 / len).min(0xffff) as u16;
        drive.borrow_mut().state.format_progress = Some(progress);
    }
    if result.is_ok() {
        result = file.sync_data().await;
    }
    match &result {
        Ok(()) => info!(device = %name, "fbo handler: format done"),
        Err(e) => warn!(device = %name, "fbo handler: format failed: {e}"),
    }
    let mut d = drive.borrow_mut();
    d.state.format_progress = None;
    d.events.post_busy();
    result
}

#[async_trait(?Send)]
impl BlockHandler for FboHandler {
    async fn read(&self, offset: u64, bufs: Vec<DataBuf>) -> Result<(), BlockError> {
        let fd = self.std_file.as_fd();
        file_io::read(&self.file, fd, &self.policy, offset, bufs).await?;
        Ok(())
    }

    async fn write(&self, offset: u64, bufs: Vec<DataBuf>) -> Result<(), BlockError> {
        if self.read_only {
            return Err(BlockError::Sense(Sense::write_protected()));
        }
        let fd = self.std_file.as_fd();
        file_io::write(&self.file, fd, &self.policy, offset, bufs).await?;
        Ok(())
    }

    fn read_now(&self, offset: u64, bufs: &mut [DataBuf]) -> Option<Result<(), BlockError>> {
        let fd = self.std_file.as_fd();
        file_io::read_now(fd, &self.policy, offset, bufs).map(|r| r.map_err(BlockError::from))
    }

    fn write_now(&self, offset: u64, bufs: &[DataBuf]) -> Option<Result<(), BlockError>> {
        if self.read_only {
            return Some(Err(BlockError::Sense(Sense::write_protected())));
        }
        let fd = self.std_file.as_fd();
        file_io::write_now(fd, &self.policy, offset, bufs).map(|r| r.map_err(BlockError::from))
    }

    async fn flush(&self) -> Result<(), BlockError> {
        if self.read_only {
            return Ok(());
        }
        if self.policy.get() == Inline::Always {
            rustix::fs::fdatasync(&self.std_file).map_err(io::Error::from)?;
            return Ok(());
        }
        self.file.sync_data().await?;
        Ok(())
    }

    async fn reconfig(&self, change: &ReconfigRequest) -> Result<(), HandlerError> {
        let blocks = u64::from(self.drive.borrow().state.medium.blocks);
        match change {
            ReconfigRequest::Size(size) if *size / u64::from(BLOCK_SIZE) != blocks => {
                Err(HandlerError::refused(
                    "fbo handler: the size of a disc cannot change while it is in the drive",
                ))
            }
            ReconfigRequest::Config(cfg) => {
                let new = FboConfig::parse(cfg).map_err(HandlerError::invalid_config)?;
                if new.path != self.path || new.read_only != self.read_only {
                    return Err(HandlerError::refused(
                        "fbo handler: changing the disc or its ro/ of a running drive is not supported",
                    ));
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    async fn close(&self) {
        if let Some(task) = self.format_task.borrow_mut().take() {
            task.abort();
        }
        if let Err(e) = self.flush().await {
            warn!(device = %self.name, "fbo handler: final sync of {} failed: {e:?}", self.path.display());
        }
    }
}

#[async_trait(?Send)]
impl CommandHook for FboHandler {
    async fn handle_cmd(&self, mut cmd: ScsiCmd) -> CmdOutcome {
        let opcode = cmd.opcode();
        if let Some(sense) = self.gate(opcode) {
            return CmdOutcome::Done(CmdReply::check(sense));
        }
        if opcode == op::REQUEST_SENSE {
            let progress = self.drive.borrow().state.format_progress;
            return match progress {
                Some(p) => CmdOutcome::Done(Self::request_sense(&mut cmd, p)),
                None => CmdOutcome::NotHandled(cmd),
            };
        }
        if opcode == op::TEST_UNIT_READY {
            return CmdOutcome::NotHandled(cmd);
        }
        match self.answer(&mut cmd).await {
            Some(reply) => CmdOutcome::Done(reply),
            None => CmdOutcome::NotHandled(cmd),
        }
    }

    fn wants(&self, cdb: &[u8]) -> bool {
        let Some(&opcode) = cdb.first() else {
            return false;
        };
        hooked(opcode) || (self.read_only && writes_medium(opcode)) || self.busy_or_empty()
    }
}
