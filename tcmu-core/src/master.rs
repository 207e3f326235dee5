//! The netlink side of TCMU as one object: device events in, the
//! mandatory replies out, and the recovery of devices that already exist
//! (the analogue of libtcmu's `tcmulib_initialize` and
//! `tcmulib_master_fd_ready`).
//!
//! [`Master::open`] joins the `TCM-USER` event group, opens the control
//! socket and tells the kernel that this process answers events
//! (SET_FEATURES): from then on the kernel waits, **without a timeout**,
//! for a reply to every ADDED, REMOVED and RECONFIG event it sends, and the
//! `enable` or `rmdir` that caused it hangs until then. So every event
//! comes out as an [`Event`] that must be answered exactly once:
//! [`accept`](Event::accept), [`refuse`](Event::refuse) (the reason is
//! logged), or [`leave`](Event::leave) for a device another process serves
//! (it answers). An `Event` dropped unanswered refuses itself and logs
//! that it did, so a forgotten event fails the `enable` instead of hanging
//! it. A message the kernel sent malformed but with a device id is refused
//! by [`Master::next_event`] itself before it reports the error.
//!
//! The master is synchronous and owns no thread: poll its descriptor
//! ([`AsFd`]; with feature `tokio`, register it through
//! `tcmu_core::reactor::register_readable`) and call
//! [`Master::next_event`] until it returns `Ok(None)`. An error for which
//! [`NetlinkError::is_overrun`] holds means events were lost: call
//! [`Master::recover`] again to find the devices that changed meanwhile.
//! The event socket is joined before anything else, so a device created
//! while [`Master::recover`] scans is seen either by the scan or as an
//! event (possibly both: an embedder ignores an ADDED for a device it
//! already serves, answering it).
//!
//! [`Master::recover`] finds the TCMU devices that exist already (created
//! before this process started, or served by a predecessor): an enabled
//! device comes out [`Existing::Running`], blocked (`action/block_dev`) with
//! its ring reset (`action/reset_ring`, commands a predecessor left get
//! BUSY and are retried) until the [`Blocked`] guard is unblocked or
//! dropped; a device whose `enable` still waits for its ADDED reply comes
//! out [`Existing::Pending`], an [`Event`] to answer like any other.
//!
//! Before exiting, or handing devices to a successor, switch replies off
//! ([`Master::set_replies`]) and answer the events already received: the
//! kernel then stops waiting for this process.
//!
//! Replies are sent through one control socket shared by the master and
//! its events (an `Arc<Mutex<_>>`), so events may be answered from any
//! thread, in any order, after any delay.

use std::collections::VecDeque;
use std::fmt;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::sync::{Arc, Mutex};

use tracing::{debug, error, warn};

use crate::configfs::{ConfigfsError, DeviceDir, RingResetLevel};
use crate::netlink::{ControlSocket, DeviceEvent, EventKind, EventSocket, NetlinkError, Reconfig};
use crate::uio::{self, TcmuName, UioDevice, UioError};

/// What answers events: the control socket, or a recorder in tests.
trait Sink: Send + fmt::Debug {
    fn set_features(&mut self, replies: bool) -> Result<(), NetlinkError>;
    fn reply(&mut self, kind: EventKind, device_id: u32, status: i32) -> Result<(), NetlinkError>;
}

impl Sink for ControlSocket {
    fn set_features(&mut self, replies: bool) -> Result<(), NetlinkError> {
        ControlSocket::set_features(self, replies)
    }

    fn reply(&mut self, kind: EventKind, device_id: u32, status: i32) -> Result<(), NetlinkError> {
        ControlSocket::reply(self, kind, device_id, status)
    }
}

/// The shared way to the kernel.
#[derive(Debug, Clone)]
struct Replier(Arc<Mutex<dyn Sink>>);

impl Replier {
    fn new(sink: impl Sink + 'static) -> Self {
        Self(Arc::new(Mutex::new(sink)))
    }

    fn sink(&self) -> std::sync::MutexGuard<'_, dyn Sink + 'static> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends `status` for the event; ENODEV (the kernel was not waiting:
    /// replies are off, or it was answered already) is not an error.
    fn reply(
        &self,
        kind: EventKind,
        device_id: u32,
        status: i32,
        what: &str,
    ) -> Result<(), NetlinkError> {
        match self.sink().reply(kind, device_id, status) {
            Ok(()) => {
                debug!("replied {status} to {kind:?} of {what}");
                Ok(())
            }
            Err(e) if e.kernel_errno() == Some(libc::ENODEV) => {
                debug!("kernel was not waiting for a {kind:?} reply for {what}");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

/// The netlink side of TCMU (see the [module documentation](self)).
#[derive(Debug)]
pub struct Master {
    events: EventSocket,
    replier: Replier,
    /// Events of a datagram not handed out yet.
    queue: VecDeque<DeviceEvent>,
}

impl Master {
    /// Joins the event group (non-blocking), opens the control socket and
    /// switches replies on. Fails with [`NetlinkError::FamilyNotFound`]
    /// when `target_core_user` is not loaded.
    pub fn open() -> Result<Self, NetlinkError> {
        let events = EventSocket::open()?;
        events.set_nonblocking(true)?;
        let mut control = ControlSocket::open()?;
        control.set_features(true)?;
        Ok(Self {
            events,
            replier: Replier::new(control),
            queue: VecDeque::new(),
        })
    }

    /// Tells the kernel whether this process answers events (SET_FEATURES).
    /// Switch replies off before exiting or handing devices over, then
    /// answer the events already received.
    pub fn set_replies(&self, on: bool) -> Result<(), NetlinkError> {
        self.replier.sink().set_features(on)
    }

    /// The next event, without waiting: `Ok(None)` when none is pending.
    ///
    /// Errors: [`NetlinkError::is_overrun`] means events were lost (call
    /// [`recover`](Self::recover) again); a malformed message is reported
    /// after it was refused, when it named a device the kernel may be
    /// waiting on ([`NetlinkError::pending_event`]). The master stays
    /// usable after any error.
    pub fn next_event(&mut self) -> Result<Option<Event>, NetlinkError> {
        loop {
            if let Some(event) = self.queue.pop_front() {
                return Ok(Some(Event::new(event, None, self.replier.clone())));
            }
            match self.events.recv() {
                Ok(events) => self.queue.extend(events),
                Err(e) if e.is_would_block() => return Ok(None),
                Err(e) => {
                    if let Some((kind, id)) = e.pending_event() {
                        let what = format!("malformed event (device id {id})");
                        if let Err(re) = self.replier.reply(kind, id, -libc::EINVAL, &what) {
                            error!("cannot refuse the {what}: {re}");
                        }
                    }
                    return Err(e);
                }
            }
        }
    }

    /// Finds the TCMU devices that exist already and claims those `wanted`
    /// accepts (it sees each device and whether it is enabled, e.g. to
    /// leave alone devices of a subtype another process serves, or devices
    /// served already). An enabled device is blocked and its ring reset
    /// before it is returned as [`Existing::Running`]; one whose `enable`
    /// waits comes back as [`Existing::Pending`].
    pub fn recover(
        &self,
        wanted: impl FnMut(&UioDevice, DeviceState) -> bool,
    ) -> Result<Vec<Existing>, UioError> {
        let found = uio::list_tcmu_devices()?;
        Ok(claim(
            found.into_iter().map(|u| {
                let dir = u.configfs();
                (u, dir)
            }),
            wanted,
            &self.replier,
        ))
    }
}

/// Whether an existing device is in use, as [`Master::recover`] finds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DeviceState {
    /// Enabled: initiators may be using it, a predecessor may have left
    /// commands on its ring.
    Enabled,
    /// Its `enable` waits for an ADDED reply.
    Enabling,
}

/// `user_<hba>/<device>`, for logs.
fn label(uio: &UioDevice) -> String {
    format!("user_{}/{}", uio.name.hba, uio.name.device)
}

/// The recovery of `found` devices (each with its configfs directory).
fn claim(
    found: impl Iterator<Item = (UioDevice, DeviceDir)>,
    mut wanted: impl FnMut(&UioDevice, DeviceState) -> bool,
    replier: &Replier,
) -> Vec<Existing> {
    let mut out = Vec::new();
    for (uio, dir) in found {
        let state = if dir.enabled().unwrap_or(true) {
            DeviceState::Enabled
        } else {
            DeviceState::Enabling
        };
        if !wanted(&uio, state) {
            continue;
        }
        match state {
            DeviceState::Enabled => out.push(Existing::Running(Blocked::block(uio, dir))),
            DeviceState::Enabling => match dir.dev_index() {
                Ok(device_id) => {
                    let event = DeviceEvent {
                        kind: EventKind::Added,
                        device: uio.raw_name.clone(),
                        minor: uio.index,
                        device_id,
                        reconfig: None,
                    };
                    out.push(Existing::Pending(Event::new(
                        event,
                        Some(uio),
                        replier.clone(),
                    )));
                }
                Err(e) => warn!(
                    "{}: cannot read its device index: {e}; left alone",
                    label(&uio)
                ),
            },
        }
    }
    out
}

impl AsFd for Master {
    /// The event socket: readable when events are pending.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.events.as_fd()
    }
}

impl AsRawFd for Master {
    fn as_raw_fd(&self) -> RawFd {
        self.events.as_raw_fd()
    }
}

/// A device that existed before [`Master::recover`] found it.
#[derive(Debug)]
#[must_use = "a running device stays blocked, a pending one waits for its reply"]
pub enum Existing {
    /// Enabled, now blocked with its ring reset: attach to it, then unblock.
    Running(Blocked),
    /// Its `enable` waits: attach to it (or not), then answer the event.
    Pending(Event),
}

impl Existing {
    /// The device's UIO minor.
    pub fn minor(&self) -> u32 {
        match self {
            Self::Running(b) => b.uio().index,
            Self::Pending(e) => e.minor(),
        }
    }
}

/// An enabled device blocked for recovery: the kernel answers its new
/// commands BUSY (initiators retry) until [`unblock`](Self::unblock) or
/// drop.
#[derive(Debug)]
#[must_use = "the device is unblocked when this is dropped"]
pub struct Blocked {
    uio: UioDevice,
    dir: DeviceDir,
    unblocked: bool,
}

impl Blocked {
    /// Blocks the device and resets its ring (failures are logged: the
    /// device is attached to anyway).
    fn block(uio: UioDevice, dir: DeviceDir) -> Self {
        let what = label(&uio);
        if let Err(e) = dir.block_dev(true) {
            warn!("{what}: cannot block the device: {e}");
        }
        if let Err(e) = dir.reset_ring(RingResetLevel::Busy) {
            warn!("{what}: cannot reset the ring: {e}");
        }
        Self {
            uio,
            dir,
            unblocked: false,
        }
    }

    /// The device.
    pub fn uio(&self) -> &UioDevice {
        &self.uio
    }

    /// Lets the kernel queue commands again.
    pub fn unblock(mut self) -> Result<(), ConfigfsError> {
        self.unblocked = true;
        self.dir.block_dev(false)
    }
}

impl Drop for Blocked {
    fn drop(&mut self) {
        if !self.unblocked {
            if let Err(e) = self.dir.block_dev(false) {
                warn!("{}: cannot unblock the device: {e}", label(&self.uio));
            }
        }
    }
}

/// A device event the kernel waits on (see the [module
/// documentation](self)): answer it exactly once.
#[derive(Debug)]
#[must_use = "the kernel waits for an answer: accept, refuse or leave the event"]
pub struct Event {
    event: DeviceEvent,
    uio: Option<UioDevice>,
    replier: Replier,
    answered: bool,
}

impl Event {
    fn new(event: DeviceEvent, uio: Option<UioDevice>, replier: Replier) -> Self {
        Self {
            event,
            uio,
            replier,
            answered: false,
        }
    }

    /// What happened.
    pub fn kind(&self) -> EventKind {
        self.event.kind
    }

    /// The UIO name, `tcm-user/<hba>/<device>[/<subtype>/<cfgstring>]`.
    pub fn device(&self) -> &str {
        &self.event.device
    }

    /// The UIO minor (N of `/dev/uioN`).
    pub fn minor(&self) -> u32 {
        self.event.minor
    }

    /// The LIO device index the reply names.
    pub fn device_id(&self) -> u32 {
        self.event.device_id
    }

    /// For a RECONFIG event, the change asked for.
    pub fn reconfig(&self) -> Option<&Reconfig> {
        self.event.reconfig.as_ref()
    }

    /// The parsed UIO name (subtype, cfgstring); `None` if it is not of the
    /// TCMU form.
    pub fn name(&self) -> Option<TcmuName> {
        match &self.uio {
            Some(u) => Some(u.name.clone()),
            None => uio::parse_uio_name(&self.event.device).ok(),
        }
    }

    /// The handler subtype the device names (`file` of `file//img`);
    /// empty when it has no `dev_config`.
    pub fn subtype(&self) -> Option<String> {
        self.name().map(|n| n.subtype)
    }

    /// The device as sysfs describes it (map size, paths), read now unless
    /// recovery found it.
    pub fn uio(&self) -> Result<UioDevice, UioError> {
        match &self.uio {
            Some(u) => Ok(u.clone()),
            None => uio::find_by_minor(self.event.minor),
        }
    }

    /// The event as decoded from the kernel's message.
    pub fn as_device_event(&self) -> &DeviceEvent {
        &self.event
    }

    fn answer(&mut self, status: i32) -> Result<(), NetlinkError> {
        self.answered = true;
        self.replier.reply(
            self.event.kind,
            self.event.device_id,
            status,
            &self.event.device,
        )
    }

    /// Answers success: the device is served (ADDED), let go (REMOVED), or
    /// reconfigured (RECONFIG).
    pub fn accept(mut self) -> Result<(), NetlinkError> {
        self.answer(0)
    }

    /// Answers failure with `errno` (positive, e.g. `libc::EINVAL`; the
    /// `enable`, `rmdir` or attribute write fails with it). `why` is logged
    /// at error level as given, so make it name the device.
    pub fn refuse(mut self, errno: i32, why: impl fmt::Display) -> Result<(), NetlinkError> {
        error!("{why}");
        self.answer(-errno.abs())
    }

    /// Sends no reply: the device belongs to another process (an
    /// out-of-process handler), which answers the event itself.
    pub fn leave(mut self) {
        self.answered = true;
        debug!(
            "{:?} of {} left to another process",
            self.event.kind, self.event.device
        );
    }
}

impl Drop for Event {
    fn drop(&mut self) {
        if self.answered {
            return;
        }
        error!(
            "{:?} event of {} dropped unanswered: refusing it",
            self.event.kind, self.event.device
        );
        if let Err(e) = self.answer(-libc::ECANCELED) {
            error!(
                "cannot refuse the {:?} event of {}: {e}",
                self.event.kind, self.event.device
            );
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::configfs::test_util::TempDir;

    /// Records what would have gone to the kernel.
    #[derive(Debug, Default)]
    struct Recorder {
        replies: Log,
        refuse_with: Option<i32>,
    }

    impl Sink for Recorder {
        fn set_features(&mut self, _: bool) -> Result<(), NetlinkError> {
            Ok(())
        }

        fn reply(&mut self, kind: EventKind, id: u32, status: i32) -> Result<(), NetlinkError> {
            if let Some(errno) = self.refuse_with {
                return Err(NetlinkError::Kernel(errno));
            }
            self.replies.lock().unwrap().push((kind, id, status));
            Ok(())
        }
    }

    type Log = Arc<Mutex<Vec<(EventKind, u32, i32)>>>;

    fn recorder() -> (Replier, Log) {
        let r = Recorder::default();
        let log = r.replies.clone();
        (Replier::new(r), log)
    }

    fn event(kind: EventKind, id: u32, replier: &Replier) -> Event {
        Event::new(
            DeviceEvent {
                kind,
                device: "tcm-user/1/d0/consumer/x".into(),
                minor: 3,
                device_id: id,
                reconfig: None,
            },
            None,
            replier.clone(),
        )
    }

    #[test]
    fn every_event_is_answered_once() {
        let (replier, log) = recorder();
        let ev = event(EventKind::Added, 7, &replier);
        assert_eq!(ev.subtype().as_deref(), Some("consumer"));
        assert_eq!(ev.name().unwrap().handler_config, "x");
        ev.accept().unwrap();
        event(EventKind::Reconfig, 8, &replier)
            .refuse(libc::EINVAL, "d0: no")
            .unwrap();
        event(EventKind::Removed, 9, &replier).leave();
        drop(event(EventKind::Added, 10, &replier));
        assert_eq!(
            *log.lock().unwrap(),
            [
                (EventKind::Added, 7, 0),
                (EventKind::Reconfig, 8, -libc::EINVAL),
                (EventKind::Added, 10, -libc::ECANCELED),
            ]
        );
    }

    #[test]
    fn a_kernel_not_waiting_is_no_error() {
        let enodev = Replier::new(Recorder {
            refuse_with: Some(libc::ENODEV),
            ..Recorder::default()
        });
        event(EventKind::Added, 1, &enodev).accept().unwrap();
        let einval = Replier::new(Recorder {
            refuse_with: Some(libc::EINVAL),
            ..Recorder::default()
        });
        let err = event(EventKind::Added, 1, &einval).accept().unwrap_err();
        assert_eq!(err.kernel_errno(), Some(libc::EINVAL));
    }

    fn fake_device(tmp: &TempDir, index: u32, name: &str, enabled: bool) -> (UioDevice, DeviceDir) {
        let dev = format!("core/{name}");
        tmp.file(
            &format!("{dev}/enable"),
            if enabled { "1\n" } else { "0\n" },
        );
        tmp.file(&format!("{dev}/action/block_dev"), "");
        tmp.file(&format!("{dev}/action/reset_ring"), "");
        tmp.file(
            &format!("{dev}/statistics/scsi_dev/indx"),
            &format!("{}\n", 40 + index),
        );
        let uio = UioDevice {
            index,
            name: uio::parse_uio_name(&format!("tcm-user/1/{name}/consumer/")).unwrap(),
            raw_name: format!("tcm-user/1/{name}/consumer/"),
            map_size: 4096,
            sysfs: tmp.path().join(format!("uio{index}")),
        };
        (uio, DeviceDir::at(tmp.path().join(dev)))
    }

    fn read(tmp: &TempDir, rel: &str) -> String {
        std::fs::read_to_string(tmp.path().join(rel)).unwrap()
    }

    #[test]
    fn recovery_blocks_running_devices_and_returns_pending_ones() {
        let tmp = TempDir::new("master-recover");
        let (replier, log) = recorder();
        let found = vec![
            fake_device(&tmp, 0, "run", true),
            fake_device(&tmp, 1, "wait", false),
            fake_device(&tmp, 2, "other", true),
        ];
        let mut seen = Vec::new();
        let existing = claim(
            found.into_iter(),
            |u, state| {
                seen.push((u.index, state));
                u.name.device != "other"
            },
            &replier,
        );
        assert_eq!(
            seen,
            [
                (0, DeviceState::Enabled),
                (1, DeviceState::Enabling),
                (2, DeviceState::Enabled)
            ]
        );
        assert_eq!(read(&tmp, "core/run/action/block_dev"), "1");
        assert_eq!(read(&tmp, "core/run/action/reset_ring"), "1");
        assert_eq!(read(&tmp, "core/other/action/block_dev"), "", "left alone");
        assert_eq!(read(&tmp, "core/wait/action/block_dev"), "");
        let mut it = existing.into_iter();
        let Some(Existing::Running(blocked)) = it.next() else {
            panic!("the enabled device comes first")
        };
        assert_eq!(blocked.uio().index, 0);
        let Some(Existing::Pending(pending)) = it.next() else {
            panic!("then the waiting one")
        };
        assert_eq!(
            (pending.kind(), pending.device_id(), pending.minor()),
            (EventKind::Added, 41, 1)
        );
        assert_eq!(pending.uio().unwrap().name.device, "wait");
        assert!(it.next().is_none());
        pending.accept().unwrap();
        assert_eq!(*log.lock().unwrap(), [(EventKind::Added, 41, 0)]);
        // Dropping the guard unblocks; unblock() does it explicitly.
        drop(blocked);
        assert_eq!(read(&tmp, "core/run/action/block_dev"), "0");
        let found = vec![fake_device(&tmp, 0, "run", true)];
        for e in claim(found.into_iter(), |_, _| true, &replier) {
            let Existing::Running(b) = e else { panic!() };
            assert_eq!(read(&tmp, "core/run/action/block_dev"), "1");
            b.unblock().unwrap();
            assert_eq!(read(&tmp, "core/run/action/block_dev"), "0");
        }
    }
}
