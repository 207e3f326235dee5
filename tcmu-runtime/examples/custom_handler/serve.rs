//! Serving the devices of a registry's handlers from the kernel's events,
//! with `tcmu_core::master` and the runtime's workers: recover the devices
//! that exist, then answer every ADDED, REMOVED and RECONFIG event.

use std::collections::HashMap;
use std::future::Future;

use tcmu_runtime::tcmu_core::master::{Event, Existing, Master};
use tcmu_runtime::tcmu_core::netlink::EventKind;
use tcmu_runtime::tcmu_core::reactor::register_readable;
use tcmu_runtime::{DeviceHandle, ReconfigRequest, Registry, Report, Workers};

/// Logs to stderr (colours only on a terminal).
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// A future that completes on SIGTERM or SIGINT (the handlers are set up
/// now).
pub fn on_termination() -> std::io::Result<impl Future<Output = ()>> {
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

/// What to do with events for subtypes this program does not serve.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Others {
    /// Refuse them: this program is the only TCMU daemon.
    Refuse,
    /// Leave them unanswered for the daemon running beside it.
    #[allow(dead_code)] // out_of_process.rs's choice
    Leave,
}

/// The devices served, by UIO minor.
type Served = HashMap<u32, DeviceHandle>;

/// Serves the registry's subtypes until `shutdown` completes.
pub async fn run(
    registry: Registry,
    others: Others,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Box<dyn std::error::Error>> {
    let workers = Workers::start(1)?;
    let master = Master::open()?;
    let mut served = Served::new();
    // Devices made before we started (or served by a predecessor).
    for existing in master.recover(|uio, _| registry.get(&uio.name.subtype).is_some())? {
        match existing {
            Existing::Running(blocked) => {
                let uio = blocked.uio();
                match workers.open_uio(&registry, uio).await {
                    Ok(handle) => drop(served.insert(uio.index, handle)),
                    Err(e) => tracing::error!("{}: cannot serve: {}", uio.raw_name, Report(&e)),
                }
                blocked.unblock()?;
            }
            Existing::Pending(event) => {
                answer(event, &registry, &workers, &mut served, others).await
            }
        }
    }
    tracing::info!("serving {} device(s); waiting for events", served.len());
    let mut master = register_readable(master)?;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            ready = master.readable_mut() => {
                ready?.clear_ready();
                loop {
                    match master.get_mut().next_event() {
                        Ok(Some(event)) => answer(event, &registry, &workers, &mut served, others).await,
                        Ok(None) => break,
                        Err(e) => tracing::error!("netlink: {e}"),
                    }
                }
            }
        }
    }
    // The only daemon owns the kernel's switch; beside one, leave it on.
    if others == Others::Refuse {
        master.get_ref().set_replies(false)?;
    }
    for handle in served.values() {
        handle.close().await;
    }
    workers.shutdown();
    Ok(())
}

/// Answers one event: every event the kernel sends waits for its answer.
async fn answer(
    event: Event,
    registry: &Registry,
    workers: &Workers,
    served: &mut Served,
    others: Others,
) {
    let ours = event.subtype().is_some_and(|s| registry.get(&s).is_some());
    if !ours && !served.contains_key(&event.minor()) {
        match others {
            Others::Leave => event.leave(),
            Others::Refuse => {
                let why = format!("{}: no handler here for it", event.device());
                let _ = event.refuse(22 /* EINVAL */, why);
            }
        }
        return;
    }
    let result = match event.kind() {
        EventKind::Added if served.contains_key(&event.minor()) => Ok(()),
        EventKind::Added => match event.uio() {
            Ok(uio) => workers
                .open_uio(registry, &uio)
                .await
                .map(|handle| drop(served.insert(uio.index, handle)))
                .map_err(|e| Report(&e).to_string()),
            Err(e) => Err(e.to_string()),
        },
        EventKind::Removed => {
            if let Some(handle) = served.remove(&event.minor()) {
                handle.close().await;
            }
            Ok(())
        }
        EventKind::Reconfig => match (served.get(&event.minor()), event.reconfig()) {
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
    let kind = event.kind();
    let what = event.device().to_owned();
    let sent = match result {
        Ok(()) => {
            tracing::info!("{what}: {kind:?} done");
            event.accept()
        }
        Err(why) => event.refuse(
            22, /* EINVAL */
            format!("{what}: {kind:?} refused: {why}"),
        ),
    };
    if let Err(e) = sent {
        tracing::error!("{what}: cannot answer the kernel: {e}");
    }
}
