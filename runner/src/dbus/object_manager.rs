//! The ObjectManager at `/org/kernel/TCMUService1`.
//!
//! targetcli-fb turns **every** object `GetManagedObjects` returns into a
//! `user:<last path element>` backstore and reads its `ConfigDesc` from
//! the returned properties. zbus's own ObjectManager reports every object
//! below it (the handler manager and the per-device objects too), so this
//! one lists exactly the handler objects, compiled-in and out-of-process,
//! as tcmu-runner's does. zbus still emits `InterfacesAdded`/`Removed`
//! from here when handler objects come and go; the device objects have
//! their own ObjectManager at `/org/kernel/TCMUService1/device`.

use std::collections::HashMap;

use tcmu_runtime::Registry;
use zbus::fdo::{self, ManagedObjects};
use zbus::names::OwnedInterfaceName;
use zbus::{interface, OwnedObjectPath, OwnedVariant, Variant};

use super::external::ExternalHandlers;
use super::names::{handler_path, HANDLER_INTERFACE};

/// The root ObjectManager.
pub struct HandlerList {
    registry: Registry,
    external: ExternalHandlers,
}

impl HandlerList {
    /// Lists `registry`'s handlers and the registered external ones.
    pub fn new(registry: Registry, external: ExternalHandlers) -> Self {
        Self { registry, external }
    }

    /// `(subtype, ConfigDesc)` of every handler object.
    fn handlers(&self) -> Vec<(String, String)> {
        let mut all: Vec<(String, String)> = self
            .registry
            .iter()
            .map(|f| (f.subtype().to_owned(), f.cfg_desc().to_owned()))
            .collect();
        all.extend(
            self.external
                .list()
                .into_iter()
                .map(|(subtype, e)| (subtype, e.cfg_desc)),
        );
        all
    }
}

/// The `GetManagedObjects` answer for `handlers`.
fn managed_objects(handlers: &[(String, String)]) -> fdo::Result<ManagedObjects> {
    let iface = OwnedInterfaceName::try_from(HANDLER_INTERFACE)
        .map_err(|e| fdo::Error::Failed(e.to_string()))?;
    let mut objects = ManagedObjects::new();
    for (subtype, cfg_desc) in handlers {
        let path = OwnedObjectPath::try_from(handler_path(subtype))
            .map_err(|e| fdo::Error::Failed(e.to_string()))?;
        let desc = OwnedVariant::try_from(Variant::from(cfg_desc.as_str()))
            .map_err(|e| fdo::Error::Failed(e.to_string()))?;
        let props = HashMap::from([("ConfigDesc".to_owned(), desc)]);
        objects.insert(path, HashMap::from([(iface.clone(), props)]));
    }
    Ok(objects)
}

#[interface(name = "org.freedesktop.DBus.ObjectManager")]
impl HandlerList {
    /// The handler objects and their `org.kernel.TCMUService1` properties.
    async fn get_managed_objects(&self) -> fdo::Result<ManagedObjects> {
        managed_objects(&self.handlers())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_handlers_with_their_config_desc() {
        let objects = managed_objects(&[
            ("file".to_owned(), "a path".to_owned()),
            ("ram".to_owned(), "a size".to_owned()),
        ])
        .unwrap();
        assert_eq!(objects.len(), 2);
        let path = OwnedObjectPath::try_from("/org/kernel/TCMUService1/file").unwrap();
        let ifaces = &objects[&path];
        let props = &ifaces[&OwnedInterfaceName::try_from(HANDLER_INTERFACE).unwrap()];
        let desc: String = props["ConfigDesc"].clone().try_into().unwrap();
        assert_eq!(desc, "a path");
    }
}
