//! The control loop: attach to existing devices, then serve the kernel's
//! netlink device events until SIGTERM/SIGINT, or until SIGUSR2 asks this
//! daemon to hand its devices over to a successor (see [`crate::takeover`];
//! SIGUSR1 starts one, see [`crate::upgrade`]).
//!
//! Every event the kernel sends gets a `*_DONE` reply, success or not: once
//! this daemon has told the kernel it replies (SET_FEATURES), the kernel
//! waits for that reply with no timeout, so a dropped event would hang
//! `enable` or `rmdir` forever.

use std::collections::HashMap;
use std::sync::Arc;

use crate::dbus::ExternalHandlers;
use crate::devices::{DeviceInfo, DeviceTable};
use crate::lock::InstanceLock;
use crate::service_manager;
use crate::upgrade::{self, Launch};
use tcmu_core::configfs::{self, DeviceDir, RingResetLevel};
use tcmu_core::netlink::{ControlSocket, DeviceEvent, EventKind, EventSocket, Reconfig};
use tcmu_core::uio::{self, UioDevice};
use tcmu_runtime::tcmu_scsi::DeviceParams;
use tcmu_runtime::{
    split_dev_config, take_runner_options, DeviceConfig, DeviceHandle, DeviceSpec, HandlerError,
    HandlerFactory, ReconfigRequest, Registry, Report, RingSource, Workers,
};
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
    control: ControlSocket,
    /// Served devices by UIO minor.
    devices: HashMap<u32, Served>,
    /// The same devices, as the reporting side (D-Bus, metrics) sees them.
    table: DeviceTable,
    /// Subtypes served by another process (D-Bus `RegisterHandler`):
    /// their devices are left to it, events unanswered (it answers).
    external: ExternalHandlers,
}

/// Errors a device can be refused with, as the errno the kernel gets.
const REFUSED: i32 = -libc::EINVAL;

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

/// Builds what the runtime needs to serve `uio`, checking its
/// configuration first.
fn device_spec(
    registry: &Registry,
    uio: &UioDevice,
) -> Result<(DeviceSpec, Arc<dyn HandlerFactory>), String> {
    let name = &uio.name;
    if name.dev_config.is_empty() {
        return Err("no dev_config set (expected <subtype>/<config>)".to_owned());
    }
    let factory = registry
        .get(&name.subtype)
        .ok_or_else(|| format!("no handler for subtype '{}'", name.subtype))?;
    let report = |e: HandlerError| Report(&e).to_string();
    let (handler_config, options) = take_runner_options(&name.handler_config).map_err(report)?;
    factory.check_config(&handler_config).map_err(report)?;
    let dir = uio.configfs();
    let cfs = |e: configfs::ConfigfsError| format!("cannot read configfs: {e}");
    let size = dir.dev_size().map_err(cfs)?;
    let block_size = dir.block_size().map_err(cfs)?;
    if block_size == 0 {
        return Err("block size is 0".to_owned());
    }
    let max_sectors = dir.max_sectors().map_err(cfs)?;
    let write_cache = dir.write_cache().map_err(cfs)?;
    let mut params = DeviceParams::new(block_size, size / u64::from(block_size));
    params.max_transfer_blocks = max_sectors;
    params.optimal_transfer_blocks = max_sectors;
    params.unit_serial = dir.unit_serial().ok().flatten();
    // 96-byte standard INQUIRY with version descriptors, as Debian 12's
    // kernel answers for its own backstores; the transport is not known
    // to a TCMU daemon.
    params.version_descriptors = Some(0);
    let spec = DeviceSpec {
        config: DeviceConfig::new(name.device.clone(), handler_config, size, block_size)
            .with_write_cache(write_cache),
        params,
        ring: RingSource::Uio {
            path: uio.dev_path(),
            map_size: uio.map_size as usize,
        },
        configfs: Some(dir),
        options,
    };
    Ok((spec, factory))
}

impl Daemon {
    /// Connects to the kernel: joins the event group before anything else
    /// (so no event between scan and join is lost), then tells the kernel
    /// this daemon replies to events.
    pub fn connect(
        registry: Registry,
        workers: Workers,
        table: DeviceTable,
        external: ExternalHandlers,
    ) -> anyhow::Result<(Self, EventSocket)> {
        load_module();
        let events = EventSocket::open()?;
        events.set_nonblocking(true)?;
        let mut control = ControlSocket::open()?;
        control.set_features(true)?;
        Ok((
            Self {
                registry,
                workers,
                control,
                devices: HashMap::new(),
                table,
                external,
            },
            events,
        ))
    }

    fn reply(&mut self, kind: EventKind, device_id: u32, status: i32, what: &str) {
        match self.control.reply(kind, device_id, status) {
            Ok(()) => debug!("replied {status} to {kind:?} of {what}"),
            // ENODEV: the kernel was not waiting (replies not enabled for
            // this device, or already answered).
            Err(e) if e.kernel_errno() == Some(libc::ENODEV) => {
                debug!("kernel was not waiting for a {kind:?} reply for {what}")
            }
            Err(e) => error!("cannot reply to {kind:?} of {what}: {e}"),
        }
    }

    /// Starts serving a device on a worker; the error is the message to
    /// log. [`Daemon::adopt`] then records it.
    async fn start(&self, uio: &UioDevice) -> Result<DeviceHandle, String> {
        let (spec, factory) = device_spec(&self.registry, uio)?;
        self.workers
            .open(spec, factory)
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
    /// its own recovery only, not for the devices before it.
    pub async fn recover_all(&mut self) {
        let found = match uio::list_tcmu_devices() {
            Ok(f) => f,
            Err(e) => {
                error!("cannot list UIO devices: {e}");
                return;
            }
        };
        let todo: Vec<(UioDevice, bool)> = found
            .into_iter()
            .filter(|uio| !self.devices.contains_key(&uio.index))
            .filter_map(|uio| self.recovery_kind(&uio).map(|configured| (uio, configured)))
            .collect();
        let this = &*self;
        let started =
            futures::future::join_all(todo.into_iter().map(|(uio, configured)| async move {
                let result = this.recover(&uio, configured).await;
                (uio, configured, result)
            }))
            .await;
        for (uio, configured, result) in started {
            self.recovered(&uio, configured, result);
        }
    }

    /// Whether this daemon recovers `uio`: `Some(true)` for a configured
    /// (enabled) device, `Some(false)` for one whose `enable` still waits
    /// for an ADDED reply, `None` for one left to another process.
    fn recovery_kind(&self, uio: &UioDevice) -> Option<bool> {
        let what = label(uio);
        if self.external.contains(&uio.name.subtype) {
            info!(
                "{what}: left to the out-of-process '{}' handler",
                uio.name.subtype
            );
            return None;
        }
        // A running device of a subtype not built in may be served by an
        // out-of-process handler that has not registered (yet): its ring
        // is not ours to reset, as with tcmu-runner.
        let configured = uio.configfs().enabled().unwrap_or(true);
        if configured && self.registry.get(&uio.name.subtype).is_none() {
            warn!(
                "{what}: no handler for subtype '{}'; left alone ({})",
                uio.name.subtype, uio.name.dev_config
            );
            return None;
        }
        Some(configured)
    }

    /// Attaches to one existing device. A configured device has its ring
    /// reset (commands in flight under a previous daemon get BUSY and are
    /// retried by the initiator) while blocked, and is unblocked as soon
    /// as it is served.
    async fn recover(&self, uio: &UioDevice, configured: bool) -> Result<DeviceHandle, String> {
        let dir: DeviceDir = uio.configfs();
        let what = label(uio);
        if configured {
            if let Err(e) = dir.block_dev(true) {
                warn!("{what}: cannot block the device: {e}");
            }
            if let Err(e) = dir.reset_ring(RingResetLevel::Busy) {
                warn!("{what}: cannot reset the ring: {e}");
            }
        }
        let result = self.start(uio).await;
        if configured {
            match dir.block_dev(false) {
                // The end of a take-over's pause (tests measure it here).
                Ok(()) => debug!("{what}: unblocked"),
                Err(e) => warn!("{what}: cannot unblock the device: {e}"),
            }
        }
        result
    }

    /// Records the outcome of [`Daemon::recover`]; a device whose `enable`
    /// waits gets its ADDED reply.
    fn recovered(
        &mut self,
        uio: &UioDevice,
        configured: bool,
        result: Result<DeviceHandle, String>,
    ) {
        let what = label(uio);
        let status = match result {
            Ok(handle) => {
                self.adopt(uio, handle);
                info!("{what}: recovered ({})", uio.name.dev_config);
                0
            }
            Err(msg) => {
                error!("{what}: cannot serve device: {msg}");
                REFUSED
            }
        };
        if !configured {
            match uio.configfs().dev_index() {
                Ok(id) => self.reply(EventKind::Added, id, status, &what),
                Err(e) => warn!("{what}: cannot read its device index: {e}"),
            }
        }
    }

    /// Handles one kernel event and replies to it.
    pub async fn handle_event(&mut self, ev: DeviceEvent) {
        let what = ev.device.clone();
        debug!("event {:?} for {what} (minor {})", ev.kind, ev.minor);
        if !self.devices.contains_key(&ev.minor) && self.is_external(&ev.device) {
            info!("{what}: {:?} left to its out-of-process handler", ev.kind);
            return;
        }
        let status = match ev.kind {
            EventKind::Added => self.added(&ev).await,
            EventKind::Removed => {
                if let Some(s) = self.devices.remove(&ev.minor) {
                    self.table.remove(ev.minor);
                    s.handle.close().await;
                    info!("{}: removed", s.label);
                }
                0
            }
            EventKind::Reconfig => self.reconfig(&ev).await,
        };
        self.reply(ev.kind, ev.device_id, status, &what);
    }

    /// Whether the device named `uio_name` (`tcm-user/<hba>/<dev>/<subtype>/…`)
    /// belongs to an out-of-process handler.
    fn is_external(&self, uio_name: &str) -> bool {
        uio::parse_uio_name(uio_name).is_ok_and(|n| self.external.contains(&n.subtype))
    }

    async fn added(&mut self, ev: &DeviceEvent) -> i32 {
        if self.devices.contains_key(&ev.minor) {
            return 0;
        }
        let uio = match uio::find_by_minor(ev.minor) {
            Ok(u) => u,
            Err(e) => {
                error!("{}: cannot find its UIO device: {e}", ev.device);
                return -libc::ENODEV;
            }
        };
        let what = label(&uio);
        match self.open(&uio).await {
            Ok(()) => {
                info!("{what}: added ({})", uio.name.dev_config);
                0
            }
            Err(msg) => {
                error!("{what}: refused: {msg}");
                REFUSED
            }
        }
    }

    async fn reconfig(&mut self, ev: &DeviceEvent) -> i32 {
        let Some(served) = self.devices.get(&ev.minor) else {
            warn!("{}: reconfiguration of a device not served here", ev.device);
            return -libc::ENODEV;
        };
        let req = match &ev.reconfig {
            Some(Reconfig::DevSize(n)) => ReconfigRequest::Size(*n),
            Some(Reconfig::WriteCache(on)) => ReconfigRequest::WriteCache(*on),
            Some(Reconfig::DevConfig(cfg)) => {
                match split_dev_config(cfg.trim_end()).and_then(|(_, c)| take_runner_options(c)) {
                    Ok((c, _)) => ReconfigRequest::Config(c),
                    Err(e) => {
                        error!("{}: {}", served.label, Report(&e));
                        return REFUSED;
                    }
                }
            }
            None => return 0,
        };
        match served.handle.reconfig(req).await {
            Ok(()) => 0,
            Err(e) => {
                error!("{}: reconfiguration refused: {}", served.label, Report(&e));
                REFUSED
            }
        }
    }

    /// Reads and handles every event already queued on `events`, without
    /// waiting for more.
    async fn drain_events(&mut self, events: &mut AsyncFd<EventSocket>) {
        loop {
            match events.get_mut().recv() {
                Ok(evs) => {
                    for ev in evs {
                        self.handle_event(ev).await;
                    }
                }
                Err(e) if e.is_would_block() => return,
                Err(e) if e.is_overrun() => {
                    warn!("netlink events were lost; rescanning devices");
                    self.recover_all().await;
                }
                Err(e) => {
                    if let Some(id) = e.pending_device_id() {
                        self.reply(EventKind::Added, id, REFUSED, "malformed event");
                    }
                    error!("bad netlink message: {e}");
                }
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
    pub async fn hand_over(mut self, events: &mut AsyncFd<EventSocket>) {
        if let Err(e) = self.control.set_features(false) {
            warn!("hand-over: cannot tell the kernel to stop waiting for replies: {e}");
        }
        self.drain_events(events).await;
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
    /// kernel not to wait for replies any more, and stops the workers.
    pub async fn shutdown(mut self) {
        // The table keeps the devices: the metrics file's last write
        // reports their final counters.
        let devices: Vec<Served> = self.devices.drain().map(|(_, s)| s).collect();
        futures::future::join_all(devices.iter().map(|s| s.handle.close())).await;
        if let Err(e) = self.control.set_features(false) {
            warn!("cannot tell the kernel to stop waiting for replies: {e}");
        }
        self.workers.shutdown();
    }
}

/// Runs the daemon until a termination signal; `on_ready` runs once the
/// devices that existed at start-up are served. `lock` is held while this
/// daemon has devices: a hand-over releases it as soon as they are closed,
/// which is what the successor waits for. `launch` says how to start a
/// successor for an in-place upgrade (SIGUSR1, see [`crate::upgrade`]).
pub async fn run(
    registry: Registry,
    workers: Workers,
    table: DeviceTable,
    external: ExternalHandlers,
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
    let (mut daemon, events) = Daemon::connect(registry, workers, table, external)?;
    let mut events = tcmu_core::reactor::register_readable(events)?;
    daemon.recover_all().await;
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
    daemon.shutdown().await;
    drop(lock);
    info!("tcmu-runner stopped");
    Ok(())
}
