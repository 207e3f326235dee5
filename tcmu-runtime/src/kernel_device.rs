//! Serving the kernel's devices: what a [`DeviceSpec`] is for a TCMU
//! device the kernel announced (read from sysfs and configfs), opening it
//! with the handler its `dev_config` names ([`Workers::open_uio`]), and the
//! change a netlink RECONFIG event asks for
//! ([`ReconfigRequest::from_event`]).
//!
//! These are the steps between `tcmu_core::master` (events, recovery) and
//! [`Workers`]: the daemon takes them for every device, and so does a
//! program that serves its own handlers.

use std::sync::Arc;

use tcmu_core::configfs::ConfigfsError;
use tcmu_core::netlink::Reconfig;
use tcmu_core::uio::UioDevice;
use tcmu_scsi::DeviceParams;

use crate::device::RingSource;
use crate::error::{DeviceError, HandlerError};
use crate::factory::{
    split_dev_config, take_runner_options, DeviceConfig, HandlerFactory, Registry,
};
use crate::handler::ReconfigRequest;
use crate::worker::{DeviceHandle, DeviceSpec, Workers};

impl DeviceSpec {
    /// What the runtime needs to serve the kernel's device `uio`: its size,
    /// logical block size, transfer limit, write cache and unit serial from
    /// configfs, its ring from sysfs, and the handler's configuration from
    /// its `dev_config`, with the daemon's own options
    /// (`;tcmur_cmd_time_out=N`) taken out.
    pub fn from_uio(uio: &UioDevice) -> Result<Self, DeviceError> {
        let name = &uio.name;
        if name.dev_config.is_empty() {
            return Err(HandlerError::invalid_config(
                "no dev_config set (expected <subtype>/<config>)",
            )
            .into());
        }
        let (handler_config, options) = take_runner_options(&name.handler_config)?;
        let dir = uio.configfs();
        let cfs = |source: ConfigfsError| DeviceError::Configfs {
            path: dir.path().to_owned(),
            source,
        };
        let size = dir.dev_size().map_err(cfs)?;
        let block_size = dir.block_size().map_err(cfs)?;
        if block_size == 0 {
            return Err(HandlerError::invalid_config("block size is 0").into());
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
        Ok(Self {
            config: DeviceConfig::new(name.device.clone(), handler_config, size, block_size)
                .with_write_cache(write_cache),
            params,
            ring: RingSource::Uio {
                path: uio.dev_path(),
                map_size: uio.map_size as usize,
            },
            configfs: Some(dir),
            options,
        })
    }
}

impl Registry {
    /// The factory for `uio`'s subtype, once it has checked the device's
    /// configuration string (without the daemon's options).
    pub fn factory_for(&self, uio: &UioDevice) -> Result<Arc<dyn HandlerFactory>, HandlerError> {
        let subtype = &uio.name.subtype;
        let factory = self.get(subtype).ok_or_else(|| {
            HandlerError::invalid_config(format!("no handler for subtype '{subtype}'"))
        })?;
        let (cfg, _) = take_runner_options(&uio.name.handler_config)?;
        factory.check_config(&cfg)?;
        Ok(factory)
    }
}

impl Workers {
    /// Starts serving the kernel's device `uio` with the handler of
    /// `registry` its `dev_config` names, on one of the workers. A bad
    /// configuration is refused before anything is opened.
    pub async fn open_uio(
        &self,
        registry: &Registry,
        uio: &UioDevice,
    ) -> Result<DeviceHandle, DeviceError> {
        let factory = registry.factory_for(uio)?;
        let spec = DeviceSpec::from_uio(uio)?;
        self.open(spec, factory).await
    }
}

impl ReconfigRequest {
    /// The change a netlink RECONFIG event asks for; a new `dev_config`
    /// becomes the handler's part of it (a malformed one is refused).
    pub fn from_event(change: &Reconfig) -> Result<Self, HandlerError> {
        Ok(match change {
            Reconfig::DevSize(n) => Self::Size(*n),
            Reconfig::WriteCache(on) => Self::WriteCache(*on),
            Reconfig::DevConfig(cfg) => {
                let (_, handler_part) = split_dev_config(cfg.trim_end())?;
                Self::Config(take_runner_options(handler_part)?.0)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn reconfig_events_become_requests() {
        assert_eq!(
            ReconfigRequest::from_event(&Reconfig::DevSize(4096)).unwrap(),
            ReconfigRequest::Size(4096)
        );
        assert_eq!(
            ReconfigRequest::from_event(&Reconfig::WriteCache(true)).unwrap(),
            ReconfigRequest::WriteCache(true)
        );
        assert_eq!(
            ReconfigRequest::from_event(&Reconfig::DevConfig(
                "file//a.img;tcmur_cmd_time_out=5\n".into()
            ))
            .unwrap(),
            ReconfigRequest::Config("/a.img".into())
        );
        assert!(ReconfigRequest::from_event(&Reconfig::DevConfig("nosubtype".into())).is_err());
    }
}
