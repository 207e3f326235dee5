//! Worker threads: thread-per-core, each running its own tokio-uring
//! runtime. A device is pinned to one worker; its ring task and all of its
//! commands are local tasks there. The control side talks to workers and
//! devices only through channels ([`Workers`], [`DeviceHandle`]).

use std::rc::Rc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use tcmu_scsi::{DeviceParams, DeviceState};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, error, info, warn};

use crate::control::Control;
use crate::ctx::DeviceCtx;
use crate::device::{self, RingSource};
use crate::error::DeviceError;
use crate::factory::{DeviceConfig, HandlerFactory};
use crate::handler::ReconfigRequest;
use crate::peers::{Peer, Peers};
use crate::stats::DeviceStats;

/// Everything needed to start serving a device.
#[derive(Debug)]
pub struct DeviceSpec {
    /// The handler's configuration.
    pub config: DeviceConfig,
    /// SCSI parameters of the device (the handler's unmap support is filled
    /// in at open).
    pub params: DeviceParams,
    /// Where the ring is.
    pub ring: RingSource,
    /// The device's configfs directory, to read the unit serial number
    /// when an initiator asks for it (targetcli sets it after `enable`).
    pub configfs: Option<tcmu_core::configfs::DeviceDir>,
    /// The daemon's options from the configuration string
    /// ([`take_runner_options`](crate::take_runner_options)).
    pub options: crate::RunnerOptions,
}

struct OpenRequest {
    spec: DeviceSpec,
    factory: Arc<dyn HandlerFactory>,
    id: u64,
    peers: Peers,
    reply: oneshot::Sender<Result<DeviceHandle, DeviceError>>,
}

/// A running device, as the control side sees it.
#[derive(Debug, Clone)]
pub struct DeviceHandle {
    name: String,
    control: mpsc::UnboundedSender<Control>,
    stats: Arc<DeviceStats>,
}

impl DeviceHandle {
    /// The device's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The device's live counters.
    pub fn stats(&self) -> Arc<DeviceStats> {
        self.stats.clone()
    }

    /// Stops reading new commands, waits for those in flight, closes the
    /// handler. Returns when the device is closed.
    pub async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self.control.send(Control::Close(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    /// Applies a configuration change.
    pub async fn reconfig(&self, req: ReconfigRequest) -> Result<(), DeviceError> {
        let (tx, rx) = oneshot::channel();
        self.control
            .send(Control::Reconfig(req, tx))
            .map_err(|_| DeviceError::NotRunning)?;
        match rx.await {
            Ok(r) => Ok(r?),
            Err(_) => Err(DeviceError::NotRunning),
        }
    }
}

/// The pool of worker threads.
#[derive(Debug)]
pub struct Workers {
    senders: Vec<mpsc::UnboundedSender<OpenRequest>>,
    threads: Vec<JoinHandle<()>>,
    next: AtomicUsize,
    next_id: AtomicU64,
    peers: Peers,
}

impl std::fmt::Debug for OpenRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenRequest")
            .field("device", &self.spec.config.name)
            .finish()
    }
}

impl Workers {
    /// Starts `count` worker threads (at least one).
    pub fn start(count: usize) -> std::io::Result<Self> {
        let mut senders = Vec::new();
        let mut threads = Vec::new();
        for i in 0..count.max(1) {
            let (tx, rx) = mpsc::unbounded_channel();
            let t = std::thread::Builder::new()
                .name(format!("tcmu-worker-{i}"))
                .spawn(move || tokio_uring::start(worker_loop(rx)))?;
            senders.push(tx);
            threads.push(t);
        }
        Ok(Self {
            senders,
            threads,
            next: AtomicUsize::new(0),
            next_id: AtomicU64::new(1),
            peers: Peers::default(),
        })
    }

    /// Opens the handler and starts serving the device on one of the
    /// workers; returns once the device is being served (or failed).
    pub async fn open(
        &self,
        spec: DeviceSpec,
        factory: Arc<dyn HandlerFactory>,
    ) -> Result<DeviceHandle, DeviceError> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.senders.len();
        let (tx, rx) = oneshot::channel();
        self.senders[i]
            .send(OpenRequest {
                spec,
                factory,
                id: self.next_id.fetch_add(1, Ordering::Relaxed),
                peers: self.peers.clone(),
                reply: tx,
            })
            .map_err(|_| DeviceError::WorkerGone)?;
        rx.await.unwrap_or(Err(DeviceError::WorkerGone))
    }

    /// Stops the workers (after every device was closed) and joins them.
    pub fn shutdown(self) {
        drop(self.senders);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

async fn worker_loop(mut rx: mpsc::UnboundedReceiver<OpenRequest>) {
    while let Some(req) = rx.recv().await {
        tokio::task::spawn_local(open_device(req));
    }
}

async fn open_device(req: OpenRequest) {
    let OpenRequest {
        spec,
        factory,
        id,
        peers,
        reply,
    } = req;
    let name = spec.config.name.clone();
    let handler = match factory.open(&spec.config).await {
        Ok(h) => h,
        Err(e) => {
            let _ = reply.send(Err(e.into()));
            return;
        }
    };
    let (ring, doorbell) = match spec.ring.open() {
        Ok(r) => r,
        Err(e) => {
            handler.block().close().await;
            let _ = reply.send(Err(e));
            return;
        }
    };
    let mut params = spec.params;
    // EXTENDED COPY works for every handler (reads and writes at worst).
    params.third_party_copy = true;
    let (tx, rx) = mpsc::unbounded_channel();
    peers.add(Peer {
        id,
        name: name.clone(),
        configfs: spec.configfs.clone(),
        serial: params.unit_serial.clone(),
        company_id: params.company_id,
        block_size: params.block_size,
        control: tx.clone(),
    });
    if let Some(dir) = &spec.configfs {
        // Without it the kernel never tells us about aborted commands.
        match dir.set_attr("tmr_notification", "1") {
            Ok(()) => debug!(device = %name, "TMR notifications on"),
            Err(e) => warn!(device = %name, "cannot turn TMR notifications on: {e}"),
        }
    }
    let write_cache = spec.config.write_cache || handler.has_write_cache();
    debug!(device = %name, "handler capabilities: {handler:?}");
    let cmd_time_out = match spec.options.cmd_time_out {
        Some(0) => None,
        Some(secs) => Some(std::time::Duration::from_secs(u64::from(secs))),
        None => device::cmd_time_out(spec.configfs.as_ref()),
    };
    let ctx = Rc::new(DeviceCtx::new(
        name.clone(),
        handler,
        params,
        DeviceState::new(write_cache),
        spec.configfs,
        id,
        peers,
        cmd_time_out,
    ));
    let handle = DeviceHandle {
        name: name.clone(),
        control: tx,
        stats: ctx.stats.clone(),
    };
    info!(device = %name, "serving");
    if reply.send(Ok(handle)).is_err() {
        error!(device = %name, "opener went away; closing");
        ctx.peers.remove(id);
        ctx.handler.block().close().await;
        return;
    }
    device::serve(ctx, ring, doorbell, rx).await;
}
