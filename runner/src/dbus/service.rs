//! The connection's life: connect, publish every object and own the
//! name; when the bus goes away (or is not there yet), keep trying with
//! back-off and publish everything again. Nothing here touches the data
//! path or the netlink loop: it all runs on the D-Bus thread.

use std::time::Duration;

use tcmu_runtime::Registry;
use tracing::{debug, info, warn};
use zbus::connection::Builder;
use zbus::{fdo, Connection};

use super::device::sync_devices;
use super::external::ExternalHandlers;
use super::handler::HandlerObject;
use super::manager::{adopt, name_owner, HandlerManager};
use super::names::{handler_path, BUS_NAME, DEVICES_PATH, MANAGER_PATH, ROOT_PATH};
use super::object_manager::HandlerList;
use crate::devices::DeviceTable;

/// First wait after a failed attempt; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// Longest wait between attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(4);

/// What the service publishes.
pub struct Service {
    /// The compiled-in handlers.
    pub registry: Registry,
    /// The served devices.
    pub table: DeviceTable,
    /// Out-of-process handlers.
    pub external: ExternalHandlers,
    /// The bus address; `None` for the system bus (which honours
    /// `DBUS_SYSTEM_BUS_ADDRESS`).
    pub address: Option<String>,
}

impl Service {
    /// Connects with every object in place and the name requested.
    async fn connect(&self) -> zbus::Result<Connection> {
        let mut builder = match &self.address {
            Some(a) => Builder::address(a.as_str()),
            None => Builder::system(),
        };
        builder = builder
            .serve_at(
                ROOT_PATH,
                HandlerList::new(self.registry.clone(), self.external.clone()),
            )
            .serve_at(DEVICES_PATH, fdo::ObjectManager)
            .serve_at(
                MANAGER_PATH,
                HandlerManager::new(self.registry.clone(), self.external.clone()),
            );
        for f in self.registry.iter() {
            builder = builder.serve_at(
                handler_path(f.subtype()),
                HandlerObject::builtin(self.registry.clone(), f.subtype(), f.cfg_desc()),
            );
        }
        builder.name(BUS_NAME).build().await
    }

    /// Re-publishes the out-of-process handlers still on the bus (a new
    /// bus daemon knows none of them), drops the others.
    async fn restore_external(&self, conn: &Connection) {
        for (subtype, ext) in self.external.list() {
            match name_owner(conn, &subtype).await {
                Some(owner) => {
                    if let Err(e) =
                        adopt(conn, &self.external, &subtype, &ext.cfg_desc, &owner).await
                    {
                        warn!("D-Bus: cannot re-export handler '{subtype}': {e}");
                    }
                }
                None => {
                    self.external.remove(&subtype);
                    info!("D-Bus: out-of-process handler '{subtype}' is gone; unregistered");
                }
            }
        }
    }

    /// Serves until the process ends, reconnecting whenever the bus goes
    /// away.
    pub async fn run(self) {
        let mut backoff = FIRST_BACKOFF;
        let mut failing = false;
        loop {
            match self.connect().await {
                Ok(conn) => {
                    info!("D-Bus: serving {BUS_NAME} on the system bus");
                    failing = false;
                    backoff = FIRST_BACKOFF;
                    self.restore_external(&conn).await;
                    tokio::select! {
                        _ = conn.closed() => {}
                        _ = sync_devices(conn.clone(), self.table.clone()) => {}
                    }
                    warn!("D-Bus: lost the system bus; reconnecting");
                }
                Err(e) if !failing => {
                    warn!(
                        "D-Bus: cannot serve {BUS_NAME}: {e}; serving I/O without it and retrying"
                    );
                    failing = true;
                }
                Err(e) => debug!("D-Bus: still no bus: {e}"),
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}
