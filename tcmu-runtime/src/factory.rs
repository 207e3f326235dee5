//! Handler factories and the registry of compiled-in handlers.
//!
//! A [`HandlerFactory`] is one backend type (subtype `file`, `ram`, …): it
//! validates configuration strings ([`HandlerFactory::check_config`], also
//! what D-Bus `CheckConfig` answers) and opens a [`BlockHandler`] for a
//! device. The [`Registry`] maps subtypes to factories.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;

use crate::handler::BlockHandler;

/// What a handler needs to know to open a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceConfig {
    /// The device's configfs name (`<dev>` in `user_<hba>/<dev>`).
    pub name: String,
    /// The handler's configuration: the part of `dev_config` after
    /// `<subtype>/` (for `file//var/lib/disk.img`, `/var/lib/disk.img`).
    pub cfgstring: String,
    /// Device size in bytes.
    pub size: u64,
    /// Logical block size in bytes.
    pub block_size: u32,
    /// Whether the write cache is enabled.
    pub write_cache: bool,
}

/// An opened device's handler.
pub type Handler = Box<dyn BlockHandler>;

/// One backend type.
#[async_trait(?Send)]
pub trait HandlerFactory: Send + Sync {
    /// The subtype in `user:<subtype>` and in `dev_config` (`file`, `ram`, …).
    fn subtype(&self) -> &str;

    /// A one-line description of the configuration string format (D-Bus
    /// `ConfigDesc`).
    fn cfg_desc(&self) -> &str;

    /// Checks a configuration string (the part after `<subtype>/`) without
    /// opening anything long-lived; `Err` carries a message for the user.
    fn check_config(&self, cfgstring: &str) -> Result<(), String>;

    /// Opens the backend for a device. Runs on the device's worker thread.
    async fn open(&self, config: &DeviceConfig) -> Result<Handler, String>;
}

/// The compiled-in handlers, by subtype.
#[derive(Default, Clone)]
pub struct Registry {
    factories: BTreeMap<String, Arc<dyn HandlerFactory>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.factories.keys()).finish()
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a factory; a later one with the same subtype replaces it.
    pub fn register(&mut self, factory: Arc<dyn HandlerFactory>) {
        self.factories.insert(factory.subtype().to_owned(), factory);
    }

    /// The factory for `subtype`.
    pub fn get(&self, subtype: &str) -> Option<Arc<dyn HandlerFactory>> {
        self.factories.get(subtype).cloned()
    }

    /// All registered factories, ordered by subtype.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<dyn HandlerFactory>> {
        self.factories.values()
    }

    /// Checks a full `dev_config` string (`<subtype>/<cfgstring>`), as
    /// targetcli's CheckConfig passes it.
    pub fn check_dev_config(&self, dev_config: &str) -> Result<(), String> {
        let (subtype, cfg) = split_dev_config(dev_config)?;
        let factory = self
            .get(subtype)
            .ok_or_else(|| format!("no handler for subtype '{subtype}'"))?;
        factory.check_config(cfg)
    }
}

/// Splits `dev_config` (`file//path`) into the subtype (`file`) and the
/// handler's configuration string (`/path`).
pub fn split_dev_config(dev_config: &str) -> Result<(&str, &str), String> {
    match dev_config.split_once('/') {
        Some((subtype, cfg)) if !subtype.is_empty() => Ok((subtype, cfg)),
        _ => Err(format!(
            "invalid configuration string '{dev_config}': expected <subtype>/<config>"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_dev_config() {
        assert_eq!(split_dev_config("file//a/b").unwrap(), ("file", "/a/b"));
        assert_eq!(split_dev_config("ram/64M").unwrap(), ("ram", "64M"));
        assert!(split_dev_config("noslash").is_err());
        assert!(split_dev_config("/x").is_err());
    }
}
