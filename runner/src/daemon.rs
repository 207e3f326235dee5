//! The control loop: attach to existing devices, then serve the kernel's
//! netlink device events until SIGTERM/SIGINT, or until SIGUSR2 asks this
//! daemon to hand its devices over to a successor (see [`crate::takeover`];
//! SIGUSR1 starts one, see [`crate::upgrade`]).
//!
//! Every event the kernel sends gets a `*_DONE` reply, success or not: once
//! this daemon has told the kernel it replies (SET_FEATURES), the kernel
//! waits for that reply with no timeout, so a dropped event would hang
//! `enable` or `rmdir` forever. The mechanism — sockets, replies, events
//! that cannot be forgotten, the blocking and ring reset of recovery — is
//! `tcmu_core::master`; this module keeps the policy: which handler serves
//! a device, which devices belong to an out-of-process handler or to
//! another daemon ([`Scope`]), workers.

use std::collections::HashMap;

use crate::dbus::ExternalHandlers;
use crate::devices::{DeviceInfo, DeviceTable};
use crate::lock::InstanceLock;
use crate::scope::Scope;
use crate::service_manager;
use crate::upgrade::{self, Launch};
use tcmu_core::configfs::DeviceDir;
use tcmu_core::master::{DeviceState, Event, Existing, Master};
use tcmu_core::netlink::{EventKind, NetlinkError};
use tcmu_core::uio::UioDevice;
use tcmu_runtime::{DeviceHandle, ReconfigRequest, Registry, Report, Workers};
use tokio::io::unix::AsyncFd;
use tokio::signal::unix::{signal, SignalKind};
use tracing::{debug, error, info, warn};

/// A device being served.
struct Served {
    handle: DeviceHandle,
    /// `<hba>/<device>`, for logs.
    label: String,
    /// Its configfs directory (to block it at a hand-over).
    dir: DeviceDir,
}

/// The daemon's state on the control thread.
pub struct Daemon {
    registry: Registry,
    workers: Workers,
    /// Served devices by UIO minor.
    devices: HashMap<u32, Served>,
    /// The same devices, as the reporting side (D-Bus, metrics) sees them.
    table: DeviceTable,
    /// Subtypes served by another process (D-Bus `RegisterHandler`):
    /// their devices are left to it, events unanswered (it answers).
    external: ExternalHandlers,
    /// The devices this daemon serves; the others' events go unanswered
    /// (their daemon answers).
    scope: Scope,
}

/// What a daemon is made of, from `main`.
pub struct Parts {
    /// The compiled-in handlers.
    pub registry: Registry,
    /// The threads that serve devices.
    pub workers: Workers,
    /// The served devices as D-Bus and metrics see them.
    pub table: DeviceTable,
    /// Out-of-process handlers (D-Bus `RegisterHandler`).
    pub external: ExternalHandlers,
    /// The devices to serve.
    pub scope: Scope,
}

/// The errno a device is refused with.
const REFUSED: i32 = libc::EINVAL;

/// Why an event is refused: the errno, and the message to log.
type Refusal = (i32, String);

/// Who serves a device that this daemon leaves alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Elsewhere {
    /// A handler in another process, registered over D-Bus for the
    /// device's subtype.
    OutOfProcess,
    /// Another daemon: this one serves only the devices its scope names.
    OtherDaemon,
}

/// Logs a failed reply to an event.
fn replied(kind: EventKind, what: &str, r: Result<(), NetlinkError>) {
    if let Err(e) = r {
        error!("cannot reply to {kind:?} of {what}: {e}");
    }
}

fn label(uio: &UioDevice) -> String {
    format!("user_{}/{}", uio.name.hba, uio.name.device)
}

/// Loads `target_core_user` if it is not loaded yet.
fn load_module() {
    if std::path::Path::new("/sys/module/target_core_user").exists() {
        return;
    }
    match std::process::Command::new("modprobe")
        .arg("target_core_user")
        .status()
    {
        Ok(s) if s.success() => info!("loaded target_core_user"),
        Ok(s) => warn!("modprobe target_core_user failed ({s})"),
        Err(e) => warn!("cannot run modprobe: {e}"),
    }
}

impl Daemon {
    /// Connects to the kernel: joins the event group before anything else
    /// (so no event between scan and join is lost), then tells the kernel
    /// this daemon replies to events.
    pub fn connect(parts: Parts) -> anyhow::Result<(Self, Master)> {
        load_module();
        let master = Master::open()?;
        let Parts {
            registry,
            workers,
            table,
            external,
            scope,
        } = parts;
        Ok((
            Self {
                registry,
                workers,
                devices: HashMap::new(),
                table,
                external,
                scope,
            },
            master,
        ))
    }

    /// Starts serving a device on a worker; the error is the message to
    /// log. [`Daemon::adopt`] then records it.
    async fn start(&self, uio: &UioDevice) -> Result<DeviceHandle, String> {
        self.workers
            .open_uio(&self.registry, uio)
            .await
            .map_err(|e| Report(&e).to_string())
    }

    /// Records a device [`Daemon::start`] started.
    fn adopt(&mut self, uio: &UioDevice, handle: DeviceHandle) {
        self.table.insert(DeviceInfo {
            minor: uio.index,
            hba: uio.name.hba,
            name: uio.name.device.clone(),
            dev_config: uio.name.dev_config.clone(),
            stats: handle.stats(),
        });
        self.devices.insert(
            uio.index,
            Served {
                handle,
                label: label(uio),
                dir: uio.configfs(),
            },
        );
    }

    /// Opens and starts serving a device; the error is the message to log.
    async fn open(&mut self, uio: &UioDevice) -> Result<(), String> {
        let handle = self.start(uio).await?;
        self.adopt(uio, handle);
        Ok(())
    }

    /// Attaches to every TCMU device that exists already, all at once: a
    /// device blocked by a predecessor (a restart or a takeover) waits for
    /// its own recovery only, not for the devices before it. A configured
    /// device comes blocked with its ring reset (commands in flight under
    /// a previous daemon get BUSY and are retried by the initiator) and is
    /// unblocked as soon as it is served.
    pub async fn recover_all(&mut self, master: &Master) {
        let found = master.recover(|uio, state| {
            !self.devices.contains_key(&uio.index) && self.recovers(uio, state)
        });
        let found = match found {
            Ok(f) => f,
            Err(e) => {
                error!("cannot list UIO devices: {e}");
                return;
            }
        };
        let this = &*self;
        let started = futures::future::join_all(found.into_iter().map(|existing| async move {
            match existing {
                Existing::Running(blocked) => {
                    let uio = blocked.uio().clone();
                    let result = this.start(&uio).await;
                    let what = label(&uio);
                    match blocked.unblock() {
                        // The end of a take-over's pause (tests measure it here).
                        Ok(()) => debug!("{what}: unblocked"),
                        Err(e) => warn!("{what}: cannot unblock the device: {e}"),
                    }
                    Some((uio, None, result))
                }
                Existing::Pending(ev) => match ev.uio() {
                    Ok(uio) => {
                        let result = this.start(&uio).await;
                        Some((uio, Some(ev), result))
                    }
                    Err(e) => {
                        let what = ev.device().to_owned();
                        let r = ev.refuse(
                            libc::ENODEV,
                            format!("{what}: cannot find its UIO device: {e}"),
                        );
                        replied(EventKind::Added, &what, r);
                        None
                    }
                },
            }
        }))
        .await;
        for (uio, pending, result) in started.into_iter().flatten() {
            self.recovered(&uio, pending, result);
        }
    }

    /// Whether this daemon recovers `uio`: not a device left to another
    /// process, nor a running device of a subtype not built in.
    fn recovers(&self, uio: &UioDevice, state: DeviceState) -> bool {
        let what = label(uio);
        if !self.scope.includes(&uio.name) {
            debug!(
                "{what}: left to another daemon (this one serves {})",
                self.scope
            );
            return false;
        }
        if self.external.contains(&uio.name.subtype) {
            info!(
                "{what}: left to the out-of-process '{}' handler",
                uio.name.subtype
            );
            return false;
        }
        // A running device of a subtype not built in may be served by an
        // out-of-process handler that has not registered (yet): its ring
        // is not ours to reset, as with tcmu-runner.
        if state == DeviceState::Enabled && self.registry.get(&uio.name.subtype).is_none() {
            warn!(
                "{what}: no handler for subtype '{}'; left alone ({})",
                uio.name.subtype, uio.name.dev_config
            );
            return false;
        }
        true
    }

    /// Records the outcome of a recovery; a device whose `enable` waits
    /// gets its ADDED reply.
    fn recovered(
        &mut self,
        uio: &UioDevice,
        pending: Option<Event>,
        result: Result<DeviceHandle, String>,
    ) {
        let what = label(uio);
        let reply = match result {
            Ok(handle) => {
                self.adopt(uio, handle);
                info!("{what}: recovered ({})", uio.name.dev_config);
                pending.map(Event::accept)
            }
            Err(msg) => {
                let why = format!("{what}: cannot serve device: {msg}");
                match pending {
                    Some(ev) => Some(ev.refuse(REFUSED, why)),
                    None => {
                        error!("{why}");
                        None
                    }
                }
            }
        };
        if let Some(r) = reply {
            replied(EventKind::Added, &what, r);
        }
    }

    /// Handles one kernel event and replies to it.
    pub async fn handle_event(&mut self, ev: Event) {
        let what = ev.device().to_owned();
        let kind = ev.kind();
        debug!("event {kind:?} for {what} (minor {})", ev.minor());
        if !self.devices.contains_key(&ev.minor()) {
            if let Some(whom) = self.served_elsewhere(&ev) {
                match whom {
                    Elsewhere::OutOfProcess => {
                        info!("{what}: {kind:?} left to its out-of-process handler")
                    }
                    Elsewhere::OtherDaemon => debug!("{what}: {kind:?} left to another daemon"),
                }
                ev.leave();
                return;
            }
        }
        let result = match kind {
            EventKind::Added => self.added(&ev).await,
            EventKind::Removed => {
                if let Some(s) = self.devices.remove(&ev.minor()) {
                    self.table.remove(ev.minor());
                    s.handle.close().await;
                    info!("{}: removed", s.label);
                }
                Ok(())
            }
            EventKind::Reconfig => self.reconfig(&ev).await,
        };
        let r = match result {
            Ok(()) => ev.accept(),
            Err((errno, why)) => ev.refuse(errno, why),
        };
        replied(kind, &what, r);
    }

    /// Who serves the device of `ev` if not this daemon: an out-of-process
    /// handler of its subtype, or (this daemon serving only some devices)
    /// another daemon.
    fn served_elsewhere(&self, ev: &Event) -> Option<Elsewhere> {
        if ev.subtype().is_some_and(|s| self.external.contains(&s)) {
            Some(Elsewhere::OutOfProcess)
        } else if self.scope.is_restricted() && !ev.name().is_some_and(|n| self.scope.includes(&n))
        {
            Some(Elsewhere::OtherDaemon)
        } else {
            None
        }
    }

    async fn added(&mut self, ev: &Event) -> Result<(), Refusal> {
        if self.devices.contains_key(&ev.minor()) {
            return Ok(());
        }
        let uio = ev.uio().map_err(|e| {
            (
                libc::ENODEV,
                format!("{}: cannot find its UIO device: {e}", ev.device()),
            )
        })?;
        let what = label(&uio);
        match self.open(&uio).await {
            Ok(()) => {
                info!("{what}: added ({})", uio.name.dev_config);
                Ok(())
            }
            Err(msg) => Err((REFUSED, format!("{what}: refused: {msg}"))),
        }
    }

    async fn reconfig(&mut self, ev: &Event) -> Result<(), Refusal> {
        let Some(served) = self.devices.get(&ev.minor()) else {
            return Err((
                libc::ENODEV,
                format!(
                    "{}: reconfiguration of a device not served here",
                    ev.device()
                ),
            ));
        };
        let Some(change) = ev.reconfig() else {
            return Ok(());
        };
        let req = ReconfigRequest::from_event(change)
            .map_err(|e| (REFUSED, format!("{}: {}", served.label, Report(&e))))?;
        served.handle.reconfig(req).await.map_err(|e| {
            (
                REFUSED,
                format!("{}: reconfiguration refused: {}", served.label, Report(&e)),
            )
        })
    }

    /// Reads and handles every event already queued on `master`, without
    /// waiting for more.
    async fn drain_events(&mut self, master: &mut AsyncFd<Master>) {
        loop {
            match master.get_mut().next_event() {
                Ok(Some(ev)) => self.handle_event(ev).await,
                Ok(None) => return,
                Err(e) if e.is_overrun() => {
                    warn!("netlink events were lost; rescanning devices");
                    self.recover_all(master.get_ref()).await;
                }
                // A malformed event naming a device was refused already.
                Err(e) => error!("bad netlink message: {e}"),
            }
        }
    }

    /// Hands every device over to a successor (SIGUSR2, see
    /// [`crate::takeover`]) and stops.
    ///
    /// Replies are switched off first, then the events already sent are
    /// answered: the kernel waits for a reply only to an event it sent
    /// while replies were on, and each of those is in `events` by now. So
    /// no `enable`/`rmdir` waits on this daemon once it is gone; one made
    /// in the gap before the successor starts returns at once and the
    /// successor finds the device at its scan. Then every device is
    /// blocked (new commands are answered BUSY and retried by the
    /// initiator), the commands in flight finish, the handlers close. The
    /// devices stay blocked: the successor resets their rings (empty but
    /// for entries never started, which the reset answers BUSY) and
    /// unblocks them.
    pub async fn hand_over(mut self, master: &mut AsyncFd<Master>) {
        if let Err(e) = master.get_ref().set_replies(false) {
            warn!("hand-over: cannot tell the kernel to stop waiting for replies: {e}");
        }
        self.drain_events(master).await;
        let start = std::time::Instant::now();
        for s in self.devices.values() {
            if let Err(e) = s.dir.block_dev(true) {
                warn!(
                    "{}: cannot block the device for the hand-over: {e}",
                    s.label
                );
            }
        }
        info!(
            "hand-over: {} device(s) blocked; finishing the commands in flight",
            self.devices.len()
        );
        // A doorbell rung just before the block still reaches the device
        // tasks: let them read those entries before they are told to close.
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        let devices: Vec<Served> = self.devices.drain().map(|(_, s)| s).collect();
        futures::future::join_all(devices.iter().map(|s| s.handle.close())).await;
        info!(
            "hand-over: {} device(s) closed {} ms after blocking them; left blocked for the successor",
            devices.len(),
            start.elapsed().as_millis()
        );
        self.workers.shutdown();
    }

    /// Closes every device (waiting for commands in flight), tells the
    /// kernel not to wait for replies any more, answers the events that
    /// came meanwhile, and stops the workers.
    pub async fn shutdown(mut self, master: &mut AsyncFd<Master>) {
        // The table keeps the devices: the metrics file's last write
        // reports their final counters.
        let devices: Vec<Served> = self.devices.drain().map(|(_, s)| s).collect();
        futures::future::join_all(devices.iter().map(|s| s.handle.close())).await;
        if let Err(e) = master.get_ref().set_replies(false) {
            warn!("cannot tell the kernel to stop waiting for replies: {e}");
        }
        self.answer_late_events(master.get_mut());
        self.workers.shutdown();
    }

    /// Answers the events sent while this daemon was closing its devices
    /// (the kernel waits for those: an `rmdir` or `enable` made during a
    /// `systemctl stop` would hang otherwise): a removal is accepted, the
    /// rest refused. Another process's devices are left to it.
    fn answer_late_events(&self, master: &mut Master) {
        loop {
            let ev = match master.next_event() {
                Ok(Some(ev)) => ev,
                Ok(None) => return,
                Err(e) if e.is_overrun() => {
                    warn!("netlink events were lost while shutting down");
                    continue;
                }
                Err(e) => {
                    error!("bad netlink message while shutting down: {e}");
                    continue;
                }
            };
            let (kind, what) = (ev.kind(), ev.device().to_owned());
            if self.served_elsewhere(&ev).is_some() {
                ev.leave();
                continue;
            }
            let r = match kind {
                EventKind::Removed => ev.accept(),
                _ => ev.refuse(
                    libc::ENODEV,
                    format!("{what}: {kind:?} refused: tcmu-runner is shutting down"),
                ),
            };
            replied(kind, &what, r);
        }
    }
}

/// Runs the daemon until a termination signal; `on_ready` runs once the
/// devices that existed at start-up are served. `lock` is held while this
/// daemon has devices: a hand-over releases it as soon as they are closed,
/// which is what the successor waits for. `launch` says how to start a
/// successor for an in-place upgrade (SIGUSR1, see [`crate::upgrade`]).
pub async fn run(
    parts: Parts,
    lock: InstanceLock,
    launch: Option<Launch>,
    on_ready: impl FnOnce(),
) -> anyhow::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut usr1 = signal(SignalKind::user_defined1())?;
    let mut usr2 = signal(SignalKind::user_defined2())?;
    let mut handing_over = false;
    let mut successor: Option<upgrade::Successor> = None;
    let (mut daemon, master) = Daemon::connect(parts)?;
    let mut events = tcmu_core::reactor::register_readable(master)?;
    daemon.recover_all(events.get_ref()).await;
    if daemon.scope.is_restricted() {
        info!(
            "serving {}; every other device is left to other daemons",
            daemon.scope
        );
    }
    info!(
        "tcmu-runner ready: serving {} device(s), handlers: {:?}",
        daemon.devices.len(),
        daemon.registry
    );
    on_ready();
    service_manager::ready(&format!("serving {} device(s)", daemon.devices.len()));
    loop {
        tokio::select! {
            _ = term.recv() => { info!("SIGTERM: shutting down"); break; }
            _ = int.recv() => { info!("SIGINT: shutting down"); break; }
            _ = usr2.recv() => {
                info!("SIGUSR2: handing the devices over to a successor");
                handing_over = true;
                break;
            }
            _ = usr1.recv() => {
                if let Some(s) = upgrade::start(launch.as_ref(), &successor) {
                    successor = Some(s);
                }
            }
            why = upgrade::successor_failed(&mut successor) => {
                let pid = successor.take().map_or(0, |s| s.pid());
                upgrade::report_failure(pid, &why, daemon.devices.len());
            }
            _ = hup.recv() => match crate::logging::reopen() {
                Ok(()) => info!("SIGHUP: log file reopened"),
                Err(e) => error!("SIGHUP: cannot reopen the log file: {e}"),
            },
            ready = events.readable_mut() => {
                // Readiness is cleared before reading: an event arriving
                // during the drain sets it again.
                ready?.clear_ready();
                daemon.drain_events(&mut events).await;
            }
        }
    }
    if handing_over {
        // No STOPPING=1 here: a successor has made itself the service's
        // main process by now, and the message would stop the service.
        daemon.hand_over(&mut events).await;
        // The successor may start recovering now: every device is closed
        // and the workers have stopped (no UIO device is open here any
        // more). The rest of the exit (metrics, D-Bus) overlaps with it.
        drop(lock);
        info!("tcmu-runner stopped (handed over)");
        return Ok(());
    }
    service_manager::stopping("finishing the commands in flight");
    daemon.shutdown(&mut events).await;
    drop(lock);
    info!("tcmu-runner stopped");
    Ok(())
}
