//! `/org/kernel/TCMUService1/HandlerManager1`, interface
//! `org.kernel.TCMUService1.HandlerManager1`: out-of-process handlers
//! register their subtype here.
//!
//! As with tcmu-runner: the caller first owns
//! `org.kernel.TCMUService1.HandlerManager1.<subtype>` and serves
//! `CheckConfig` at `/org/kernel/TCMUService1/HandlerManager1/<subtype>`,
//! then calls `RegisterHandler(subtype, cfg_desc)`. The answer is `(true,
//! "succeeded")` once that name has an owner, or `(false, "Cannot find
//! handler bus name: …")`. The daemon then exports a handler object for
//! the subtype (targetcli lists it; its `CheckConfig` is forwarded) and
//! leaves that subtype's devices to the other process. The registration
//! is dropped when the name's owner leaves the bus. tcmu-runner has no
//! `UnregisterHandler`, and neither has this.

use futures::StreamExt;
use tcmu_runtime::Registry;
use tracing::{info, warn};
use zbus::fdo::{self, DBusProxy};
use zbus::message::Header;
use zbus::names::BusName;
use zbus::{interface, Connection};

use super::access::require_root;
use super::external::{External, ExternalHandlers};
use super::handler::HandlerObject;
use super::names::{check_subtype, external_bus_name, handler_path};

/// The handler manager object.
pub struct HandlerManager {
    registry: Registry,
    external: ExternalHandlers,
}

impl HandlerManager {
    /// A manager refusing `registry`'s subtypes and recording into
    /// `external`.
    pub fn new(registry: Registry, external: ExternalHandlers) -> Self {
        Self { registry, external }
    }

    async fn register(
        &self,
        conn: &Connection,
        subtype: &str,
        cfg_desc: &str,
    ) -> Result<(), String> {
        check_subtype(subtype)?;
        if self.registry.get(subtype).is_some() {
            return Err(format!(
                "handler '{subtype}' is built into tcmu-runner; another process cannot register it"
            ));
        }
        let owner = name_owner(conn, subtype).await.ok_or_else(|| {
            format!(
                "Cannot find handler bus name: {}",
                external_bus_name(subtype)
            )
        })?;
        adopt(conn, &self.external, subtype, cfg_desc, &owner)
            .await
            .map_err(|e| format!("cannot export handler '{subtype}': {e}"))?;
        info!("D-Bus: out-of-process handler '{subtype}' registered by {owner}");
        Ok(())
    }
}

/// The unique name owning `org.kernel.TCMUService1.HandlerManager1.<subtype>`.
pub async fn name_owner(conn: &Connection, subtype: &str) -> Option<String> {
    let name = BusName::try_from(external_bus_name(subtype)).ok()?;
    let bus = DBusProxy::new(conn).await.ok()?;
    bus.get_name_owner(name).await.ok().map(|o| o.to_string())
}

/// Records `subtype` as served by `owner`, exports its handler object and
/// watches for `owner` leaving the bus, which drops both.
pub async fn adopt(
    conn: &Connection,
    external: &ExternalHandlers,
    subtype: &str,
    cfg_desc: &str,
    owner: &str,
) -> zbus::Result<()> {
    let bus_name = external_bus_name(subtype);
    // Watch before publishing, so a departure in between is not missed.
    let bus = DBusProxy::new(conn).await?;
    let mut changes = bus
        .receive_name_owner_changed_with_args(&[(0, bus_name.as_str())])
        .await?;
    external.insert(
        subtype,
        External {
            cfg_desc: cfg_desc.to_owned(),
            owner: owner.to_owned(),
        },
    );
    let server = conn.object_server();
    let path = handler_path(subtype);
    // A re-registration replaces the object (its ConfigDesc may differ).
    let _ = server.remove::<HandlerObject, _>(path.as_str()).await;
    server
        .at(path.as_str(), HandlerObject::external(subtype, cfg_desc))
        .await?;
    let conn = conn.clone();
    let external = external.clone();
    let subtype = subtype.to_owned();
    let owner = owner.to_owned();
    tokio::spawn(async move {
        while let Some(signal) = changes.next().await {
            let Ok(args) = signal.args() else { continue };
            let left = args.old_owner().as_ref().map(|o| o.as_str()) == Some(owner.as_str());
            if !left {
                continue;
            }
            if external.remove_if_owner(&subtype, &owner) {
                info!("D-Bus: out-of-process handler '{subtype}' left the bus; unregistered");
                let path = handler_path(&subtype);
                if let Err(e) = conn
                    .object_server()
                    .remove::<HandlerObject, _>(path.as_str())
                    .await
                {
                    warn!("D-Bus: cannot remove {path}: {e}");
                }
            }
            break;
        }
    });
    Ok(())
}

#[interface(name = "org.kernel.TCMUService1.HandlerManager1")]
impl HandlerManager {
    /// Registers an out-of-process handler for `subtype`. Root only.
    #[zbus(out_args("succeeded", "message"))]
    async fn register_handler(
        &self,
        subtype: String,
        cfgstr_desc: String,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> fdo::Result<(bool, String)> {
        require_root(conn, &header, "RegisterHandler").await?;
        Ok(match self.register(conn, &subtype, &cfgstr_desc).await {
            Ok(()) => (true, "succeeded".to_owned()),
            Err(msg) => {
                warn!("D-Bus: RegisterHandler '{subtype}' refused: {msg}");
                (false, msg)
            }
        })
    }
}
