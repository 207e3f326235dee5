//! A complete TCMU program without an async runtime: serves every device of
//! subtype `consumer` (`dev_config=consumer/`) from RAM, with `tcmu-core`
//! for the kernel interface and `tcmu-scsi` for the SCSI commands, in one
//! thread around poll(2) — the analogue of tcmu-runner's `consumer.c`.
//!
//! ```text
//! cargo run --release -p tcmu-core --example consumer
//! # elsewhere, as root:
//! mkdir -p /sys/kernel/config/target/core/user_1/ram0
//! echo dev_size=67108864 > /sys/kernel/config/target/core/user_1/ram0/control
//! echo dev_config=consumer/ > /sys/kernel/config/target/core/user_1/ram0/control
//! echo 1 > /sys/kernel/config/target/core/user_1/ram0/enable
//! ```
//!
//! Devices that exist when it starts are taken over; devices of other
//! subtypes are refused (their `enable` fails with EINVAL). SIGTERM or
//! SIGINT closes the devices, tells the kernel to stop waiting for replies
//! and exits 0. It logs to stderr.

use std::collections::{hash_map, HashMap};
use std::error::Error;
use std::io::Read;
use std::os::unix::net::UnixStream;
use std::process::ExitCode;

use rustix::event::{poll, PollFd, PollFlags};
use tcmu_core::master::{Event, Existing, Master};
use tcmu_core::netlink::{EventKind, NetlinkError, Reconfig};
use tcmu_core::reply::{CHECK_CONDITION, GOOD};
use tcmu_core::uio::UioDevice;
use tcmu_core::{buf, CmdEntry, Completion, Device, Entry, RingError};
use tcmu_scsi::{DeviceParams, DeviceState, Outcome, Sense};
use tracing::{error, info, warn};

/// The subtype this program serves.
const SUBTYPE: &str = "consumer";

/// One device served from a vector of bytes.
struct Disk {
    name: String,
    device: Device,
    params: DeviceParams,
    state: DeviceState,
    data: Vec<u8>,
}

impl Disk {
    /// Attaches to a device: its size and block size from configfs, its
    /// ring from `/dev/uioN`.
    fn open(uio: &UioDevice) -> Result<Self, Box<dyn Error>> {
        let dir = uio.configfs();
        let size = dir.dev_size()?;
        let block_size = dir.block_size()?;
        if block_size == 0 {
            return Err("block size is 0".into());
        }
        let mut params = DeviceParams::new(block_size, size / u64::from(block_size));
        params.unit_serial = dir.unit_serial().ok().flatten();
        Ok(Self {
            name: format!("user_{}/{}", uio.name.hba, uio.name.device),
            device: Device::open(uio)?,
            params,
            state: DeviceState::new(dir.write_cache()?),
            data: vec![0; usize::try_from(size)?],
        })
    }

    /// Runs every command the kernel posted and publishes the answers.
    fn serve(&mut self) {
        if let Err(e) = self.device.ack() {
            warn!("{}: cannot read the doorbell: {e}", self.name);
        }
        loop {
            let done = match self.device.next_entry() {
                Ok(Some(Entry::Cmd(cmd))) => self.execute(cmd),
                Ok(Some(Entry::Unknown { cmd_id, .. })) => {
                    self.device.complete(cmd_id, &Completion::unknown_op())
                }
                Ok(Some(Entry::Invalid { cmd_id, why })) => {
                    warn!("{}: malformed command {cmd_id}: {why}", self.name);
                    let sense = Sense::internal_target_failure().to_fixed();
                    self.device
                        .complete(cmd_id, &Completion::check_condition(&sense))
                }
                // Every command is answered at once: nothing to abort.
                Ok(Some(_)) => Ok(()),
                Ok(None) => break,
                Err(e) => Err(e),
            };
            if let Err(e) = done {
                error!("{}: the command ring is broken: {e}", self.name);
                break;
            }
        }
        if let Err(e) = self.device.publish() {
            error!("{}: cannot publish completions: {e}", self.name);
        }
    }

    /// Executes one command: decoded and answered by `tcmu-scsi`, except
    /// the data transfers, which move bytes between the ring and `data`.
    /// (`execute` reads the data-out of the commands it parses itself —
    /// MODE SELECT, UNMAP, WRITE SAME —, not of those it leaves to us.)
    fn execute(&mut self, cmd: CmdEntry) -> Result<(), RingError> {
        let command = match tcmu_scsi::decode(&cmd.cdb) {
            Ok(c) => c,
            Err(sense) => return self.fail(cmd, sense),
        };
        let data_out = if command.wants_data_out() {
            buf::gather(&cmd.data, usize::MAX)
        } else {
            Vec::new()
        };
        let outcome = tcmu_scsi::execute(&command, &self.params, &mut self.state, &data_out);
        let bs = u64::from(self.params.block_size);
        // Ranges were checked against the capacity by `execute`.
        let span = |lba: u64, blocks: u32| {
            let start = (lba * bs) as usize;
            start..start + (u64::from(blocks) * bs) as usize
        };
        match outcome {
            Outcome::Done(resp) => {
                let sense = resp.sense.map(|s| s.to_fixed());
                let sense = sense.as_ref().map_or(&[][..], |s| &s[..]);
                self.device
                    .complete_with_data(cmd, resp.status.code(), sense, &resp.data_in)
            }
            // The answer goes into the command's buffers by the completion
            // rules: a longer buffer is zeroed past it, with a residual.
            Outcome::Read { lba, blocks, .. } => {
                let range = span(lba, blocks);
                self.device
                    .complete_with_data(cmd, GOOD, &[], &self.data[range])
            }
            // Data-out is copied from the command's buffers straight into
            // the disk.
            Outcome::Write { lba, blocks, .. } => {
                let range = span(lba, blocks);
                if buf::total_len(&cmd.data) != range.len() {
                    return self.fail(cmd, Sense::invalid_field_in_command_iu());
                }
                let mut at = range.start;
                for b in &cmd.data {
                    at += b.copy_to(0, &mut self.data[at..at + b.len()]);
                }
                self.good(cmd)
            }
            Outcome::WriteSame {
                lba, blocks, block, ..
            } => {
                let range = span(lba, blocks);
                for chunk in self.data[range].chunks_mut(block.len().max(1)) {
                    chunk.copy_from_slice(&block[..chunk.len()]);
                }
                self.good(cmd)
            }
            Outcome::CompareAndWrite { lba, blocks, .. } => {
                let range = span(lba, blocks);
                let payload = buf::gather(&cmd.data, usize::MAX);
                if payload.len() != 2 * range.len() {
                    return self.fail(cmd, Sense::invalid_field_in_command_iu());
                }
                let (expected, new) = payload.split_at(range.len());
                match first_difference(&self.data[range.clone()], expected) {
                    Some(at) => self.fail(cmd, Sense::miscompare(at)),
                    None => {
                        self.data[range].copy_from_slice(new);
                        self.good(cmd)
                    }
                }
            }
            Outcome::Verify { lba, blocks, same } => {
                let range = span(lba, blocks);
                let payload = buf::gather(&cmd.data, usize::MAX);
                let expected: Vec<u8> = if same {
                    payload.iter().copied().cycle().take(range.len()).collect()
                } else {
                    payload
                };
                match first_difference(&self.data[range], &expected) {
                    Some(at) => self.fail(cmd, Sense::miscompare(at)),
                    None => self.good(cmd),
                }
            }
            Outcome::Format => {
                self.data.fill(0);
                self.good(cmd)
            }
            // RAM needs no flush.
            Outcome::Flush => self.good(cmd),
            // Not advertised (no thin provisioning, no copy offload, no
            // ALUA here).
            _ => self.fail(cmd, Sense::invalid_command_opcode()),
        }
    }

    fn good(&mut self, cmd: CmdEntry) -> Result<(), RingError> {
        self.device.complete_with_data(cmd, GOOD, &[], &[])
    }

    fn fail(&mut self, cmd: CmdEntry, sense: Sense) -> Result<(), RingError> {
        self.device
            .complete_with_data(cmd, CHECK_CONDITION, &sense.to_fixed(), &[])
    }

    /// Applies a RECONFIG event; the error is the reason to refuse it.
    fn reconfigure(&mut self, change: Option<&Reconfig>) -> Result<(), String> {
        match change {
            Some(Reconfig::DevSize(size)) => {
                let blocks = size / u64::from(self.params.block_size);
                self.data
                    .resize(usize::try_from(*size).map_err(|e| e.to_string())?, 0);
                self.params.num_blocks = blocks;
                self.state.unit_attention = Some(Sense::unit_attention_capacity_changed());
                Ok(())
            }
            Some(Reconfig::WriteCache(on)) => {
                self.state.write_cache = *on;
                Ok(())
            }
            Some(Reconfig::DevConfig(cfg)) if cfg.trim_end() == format!("{SUBTYPE}/") => Ok(()),
            Some(Reconfig::DevConfig(cfg)) => Err(format!("cannot change dev_config to {cfg:?}")),
            None => Ok(()),
        }
    }
}

/// The offset of the first byte where `a` and `b` differ.
fn first_difference(a: &[u8], b: &[u8]) -> Option<u64> {
    a.iter().zip(b).position(|(x, y)| x != y).map(|i| i as u64)
}

/// Every device being served, by UIO minor.
type Disks = HashMap<u32, Disk>;

/// Answers one kernel event. Each path accepts or refuses it exactly once
/// (an `Event` dropped unanswered would refuse itself).
fn handle(event: Event, disks: &mut Disks) {
    let minor = event.minor();
    let answered = match event.kind() {
        EventKind::Added => added(event, disks),
        EventKind::Removed => {
            if let Some(disk) = disks.remove(&minor) {
                info!("{}: removed", disk.name);
            }
            event.accept()
        }
        EventKind::Reconfig => match disks.get_mut(&minor) {
            Some(disk) => match disk.reconfigure(event.reconfig()) {
                Ok(()) => {
                    info!("{}: reconfigured: {:?}", disk.name, event.reconfig());
                    event.accept()
                }
                Err(why) => {
                    let why = format!("{}: {why}", disk.name);
                    event.refuse(libc::EINVAL, why)
                }
            },
            None => {
                let why = format!("{}: not served here", event.device());
                event.refuse(libc::ENODEV, why)
            }
        },
    };
    if let Err(e) = answered {
        error!("cannot answer the kernel: {e}");
    }
}

/// Answers an ADDED event: attaches to a `consumer` device, refuses others.
fn added(event: Event, disks: &mut Disks) -> Result<(), NetlinkError> {
    let subtype = event.subtype().unwrap_or_default();
    if subtype != SUBTYPE {
        let why = format!(
            "{}: subtype '{subtype}' is not served here (only '{SUBTYPE}')",
            event.device()
        );
        return event.refuse(libc::EINVAL, why);
    }
    let hash_map::Entry::Vacant(slot) = disks.entry(event.minor()) else {
        // Served already (recovery may have found it first).
        return event.accept();
    };
    match event.uio().map_err(Box::from).and_then(|u| Disk::open(&u)) {
        Ok(disk) => {
            info!("{}: added ({} bytes)", disk.name, disk.data.len());
            slot.insert(disk);
            event.accept()
        }
        Err(e) => {
            let why = format!("{}: cannot serve it: {e}", event.device());
            event.refuse(libc::EINVAL, why)
        }
    }
}

/// Attaches to the `consumer` devices that exist already (except those
/// served): running ones stay blocked until attached, pending ones are
/// answered like ADDED events.
fn recover(master: &Master, disks: &mut Disks) -> Result<(), Box<dyn Error>> {
    let found =
        master.recover(|uio, _| uio.name.subtype == SUBTYPE && !disks.contains_key(&uio.index))?;
    for existing in found {
        match existing {
            Existing::Running(blocked) => {
                let uio = blocked.uio().clone();
                match Disk::open(&uio) {
                    Ok(disk) => {
                        info!("{}: recovered ({} bytes)", disk.name, disk.data.len());
                        disks.insert(uio.index, disk);
                    }
                    Err(e) => error!("{}: cannot serve it: {e}", uio.raw_name),
                }
                blocked.unblock()?;
            }
            Existing::Pending(event) => handle(event, disks),
        }
    }
    Ok(())
}

/// Answers every event the kernel has sent.
fn drain_events(master: &mut Master, disks: &mut Disks) -> Result<(), Box<dyn Error>> {
    loop {
        match master.next_event() {
            Ok(Some(event)) => handle(event, disks),
            Ok(None) => return Ok(()),
            Err(e) if e.is_overrun() => {
                warn!("netlink events were lost: rescanning");
                recover(master, disks)?;
            }
            Err(e) => warn!("bad netlink message: {e}"),
        }
    }
}

fn run() -> Result<(), Box<dyn Error>> {
    // SIGTERM and SIGINT write a byte to this socket pair: the poll loop
    // sees the signal as one more readable descriptor.
    let (signals, signal_tx) = UnixStream::pair()?;
    signals.set_nonblocking(true)?;
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::low_level::pipe::register(sig, signal_tx.try_clone()?)?;
    }

    // Join the event group first, then look for devices made before.
    let mut master = Master::open()?;
    let mut disks = Disks::new();
    recover(&master, &mut disks)?;
    info!("consumer ready: serving {} device(s)", disks.len());

    loop {
        let minors: Vec<u32> = disks.keys().copied().collect();
        let mut fds = vec![
            PollFd::new(&signals, PollFlags::IN),
            PollFd::new(&master, PollFlags::IN),
        ];
        fds.extend(
            minors
                .iter()
                .map(|m| PollFd::new(&disks[m].device, PollFlags::IN)),
        );
        match poll(&mut fds, None) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
        let ready: Vec<bool> = fds.iter().map(|f| !f.revents().is_empty()).collect();
        drop(fds);
        if ready[0] {
            let mut byte = [0u8; 16];
            let _ = (&signals).read(&mut byte);
            info!("signal received: stopping");
            break;
        }
        if ready[1] {
            drain_events(&mut master, &mut disks)?;
        }
        for (minor, _) in minors.iter().zip(&ready[2..]).filter(|(_, r)| **r) {
            if let Some(disk) = disks.get_mut(minor) {
                disk.serve();
            }
        }
    }

    // Every command was answered as it came: closing the devices loses
    // nothing. Then the kernel stops waiting for this process's replies,
    // and the events already sent are answered.
    let count = disks.len();
    disks.clear();
    master.set_replies(false)?;
    drain_events(&mut master, &mut disks)?;
    info!("consumer stopped: {count} device(s) closed");
    Ok(())
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e}");
            ExitCode::FAILURE
        }
    }
}
