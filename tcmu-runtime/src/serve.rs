//! Serving a registry's handlers without the `tcmu-runner` daemon: the
//! whole life of the kernel's devices in one call ([`serve`]).
//!
//! It opens the netlink side (`tcmu_core::master`), recovers the devices of
//! the registry's subtypes that exist already (blocked, ring reset, served,
//! unblocked; one whose `enable` waits is answered once open), then answers
//! every ADDED, REMOVED and RECONFIG event — the kernel waits for each
//! answer with no time-out — until the shutdown future completes. Then
//! every device is closed (commands in flight finish first) and the workers
//! stop.
//!
//! Events for subtypes the registry does not have are refused, or left
//! unanswered for a daemon running beside this program
//! ([`Others`]). The kernel's "daemon answers events" switch is global:
//! the only daemon turns it off when it stops, so that a later `enable`
//! does not wait for a process that is gone; a program beside a daemon
//! leaves it on, for the daemon.
//!
//! The `tcmu-runner` daemon has a control loop of its own with more policy
//! (out-of-process handlers registered over D-Bus, hand-over to a
//! successor, the device table its D-Bus service and metrics read).
//!
//! ```no_run
//! # async fn demo(registry: tcmu_runtime::Registry) -> Result<(), tcmu_runtime::serve::ServeError> {
//! use tcmu_runtime::serve::{serve, terminated, Others, ServeOptions};
//! serve(registry, ServeOptions::new(Others::Refuse), terminated()?).await
//! # }
//! ```

use std::collections::HashMap;
use std::future::Future;

use tcmu_core::master::{Event, Existing, Master};
use tcmu_core::netlink::{EventKind, NetlinkError};
use tcmu_core::reactor::register_readable;
use tcmu_core::uio::UioError;
use tracing::{error, info};

use crate::error::Report;
use crate::factory::Registry;
use crate::handler::ReconfigRequest;
use crate::worker::{DeviceHandle, Workers};

/// What to do with events for subtypes the registry does not serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Others {
    /// Refuse them: this program is the only TCMU daemon.
    Refuse,
    /// Leave them unanswered, for the daemon running beside this program
    /// (an out-of-process handler).
    Leave,
}

/// How [`serve`] runs.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServeOptions {
    /// Events of other subtypes.
    pub others: Others,
    /// Worker threads (each a tokio-uring runtime serving its devices).
    pub workers: usize,
}

impl ServeOptions {
    /// One worker thread per CPU, and `others` for other subtypes.
    pub fn new(others: Others) -> Self {
        Self {
            others,
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }

    /// With `n` worker threads (at least one).
    pub fn with_workers(mut self, n: usize) -> Self {
        self.workers = n.max(1);
        self
    }
}

/// Why [`serve`] could not start or stopped early.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The netlink side failed (`target_core_user` not loaded, …).
    #[error("netlink")]
    Netlink(#[from] NetlinkError),
    /// The existing devices could not be listed.
    #[error("cannot list the TCMU devices")]
    Uio(#[from] UioError),
    /// The worker threads or the event loop failed.
    #[error("I/O")]
    Io(#[from] std::io::Error),
}

/// A future that completes on SIGTERM or SIGINT; the signal handlers are
/// installed when this is called. Must be called inside a tokio runtime.
pub fn terminated() -> std::io::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let (mut term, mut int) = (
        signal(SignalKind::terminate())?,
        signal(SignalKind::interrupt())?,
    );
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

/// The devices served, by UIO minor.
type Served = HashMap<u32, DeviceHandle>;

/// Serves the devices of `registry`'s subtypes until `shutdown` completes
/// (see the [module documentation](self)). Must run inside a tokio runtime
/// with I/O and signals enabled (the control side; devices run on worker
/// threads of their own).
pub async fn serve(
    registry: Registry,
    options: ServeOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let workers = Workers::start(options.workers)?;
    let master = Master::open()?;
    let mut server = Server {
        registry,
        workers,
        others: options.others,
        served: Served::new(),
    };
    server.recover(&master).await?;
    info!(
        "serving {} device(s); waiting for events",
        server.served.len()
    );
    let mut master = register_readable(master)?;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            ready = master.readable_mut() => {
                ready?.clear_ready();
                loop {
                    match master.get_mut().next_event() {
                        Ok(Some(event)) => server.answer(event).await,
                        Ok(None) => break,
                        Err(e) if e.is_overrun() => {
                            error!("netlink events were lost; looking for the devices again");
                            server.recover(master.get_ref()).await?;
                        }
                        // A malformed event naming a device was refused.
                        Err(e) => error!("netlink: {}", Report(&e)),
                    }
                }
            }
        }
    }
    if server.others == Others::Refuse {
        if let Err(e) = master.get_ref().set_replies(false) {
            error!("cannot tell the kernel to stop waiting for replies: {e}");
        }
    }
    let count = server.served.len();
    for handle in server.served.values() {
        handle.close().await;
    }
    server.workers.shutdown();
    info!("stopped: {count} device(s) closed");
    Ok(())
}

/// The state of [`serve`].
struct Server {
    registry: Registry,
    workers: Workers,
    others: Others,
    served: Served,
}

impl Server {
    /// Serves the devices of the registry's subtypes that exist and are not
    /// served yet.
    async fn recover(&mut self, master: &Master) -> Result<(), ServeError> {
        let found = master.recover(|uio, _| {
            !self.served.contains_key(&uio.index) && self.registry.get(&uio.name.subtype).is_some()
        })?;
        for existing in found {
            match existing {
                Existing::Running(blocked) => {
                    let uio = blocked.uio();
                    match self.workers.open_uio(&self.registry, uio).await {
                        Ok(handle) => {
                            info!("{}: recovered", uio.raw_name);
                            self.served.insert(uio.index, handle);
                        }
                        Err(e) => error!("{}: cannot serve: {}", uio.raw_name, Report(&e)),
                    }
                    if let Err(e) = blocked.unblock() {
                        error!("cannot unblock a recovered device: {e}");
                    }
                }
                Existing::Pending(event) => self.answer(event).await,
            }
        }
        Ok(())
    }

    /// Answers one event (every event the kernel sends waits for it).
    async fn answer(&mut self, event: Event) {
        let ours = event
            .subtype()
            .is_some_and(|s| self.registry.get(&s).is_some());
        if !ours && !self.served.contains_key(&event.minor()) {
            match self.others {
                Others::Leave => event.leave(),
                Others::Refuse => {
                    let why = format!("{}: no handler here for it", event.device());
                    if let Err(e) = event.refuse(libc::EINVAL, why) {
                        error!("cannot answer the kernel: {e}");
                    }
                }
            }
            return;
        }
        let result = match event.kind() {
            EventKind::Added if self.served.contains_key(&event.minor()) => Ok(()),
            EventKind::Added => match event.uio() {
                Ok(uio) => match self.workers.open_uio(&self.registry, &uio).await {
                    Ok(handle) => {
                        self.served.insert(uio.index, handle);
                        Ok(())
                    }
                    Err(e) => Err(Report(&e).to_string()),
                },
                Err(e) => Err(Report(&e).to_string()),
            },
            EventKind::Removed => {
                if let Some(handle) = self.served.remove(&event.minor()) {
                    handle.close().await;
                }
                Ok(())
            }
            EventKind::Reconfig => match (self.served.get(&event.minor()), event.reconfig()) {
                (Some(handle), Some(change)) => match ReconfigRequest::from_event(change) {
                    Ok(req) => handle
                        .reconfig(req)
                        .await
                        .map_err(|e| Report(&e).to_string()),
                    Err(e) => Err(Report(&e).to_string()),
                },
                _ => Ok(()),
            },
        };
        let (kind, what) = (event.kind(), event.device().to_owned());
        let sent = match result {
            Ok(()) => {
                info!("{what}: {kind:?} done");
                event.accept()
            }
            Err(why) => event.refuse(libc::EINVAL, format!("{what}: {kind:?} refused: {why}")),
        };
        if let Err(e) = sent {
            error!("{what}: cannot answer the kernel: {e}");
        }
    }
}
