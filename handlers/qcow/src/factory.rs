//! [`QcowFactory`]: the `qcow` subtype.

use async_trait::async_trait;
use tcmu_runtime::{DeviceConfig, Handler, HandlerFactory};

use crate::config::QcowConfig;
use crate::handler::QcowHandler;

/// The `qcow` handler type: `dev_config=qcow//path/to/image.qcow2`.
/// Construct with `QcowFactory` (a unit struct) or `QcowFactory::default()`.
#[derive(Debug, Clone, Copy, Default)]
pub struct QcowFactory;

#[async_trait(?Send)]
impl HandlerFactory for QcowFactory {
    fn subtype(&self) -> &str {
        "qcow"
    }

    fn cfg_desc(&self) -> &str {
        "The path to the qcow2 image to use as a backstore (made with qemu-img create -f qcow2)."
    }

    fn check_config(&self, cfgstring: &str) -> Result<(), String> {
        QcowConfig::check(cfgstring)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    async fn open(&self, config: &DeviceConfig) -> Result<Handler, String> {
        Ok(Box::new(QcowHandler::open(config).await?))
    }
}
