//! [`QcowFactory`]: the `qcow` subtype.

use async_trait::async_trait;
use tcmu_runtime::{DeviceConfig, Handler, HandlerError, HandlerFactory};

use crate::config::QcowConfig;
use crate::handler::QcowHandler;

/// The `qcow` handler type: `dev_config=qcow//path/to/image.qcow2` (a
/// qcow2 image, or a qcow version 1 one).
/// Construct with `QcowFactory` (a unit struct) or `QcowFactory::default()`.
#[derive(Debug, Clone, Copy, Default)]
pub struct QcowFactory;

#[async_trait(?Send)]
impl HandlerFactory for QcowFactory {
    fn subtype(&self) -> &str {
        "qcow"
    }

    fn cfg_desc(&self) -> &str {
        "The path to the qcow2 or qcow image to use as a backstore (made with qemu-img create -f qcow2, or -f qcow)."
    }

    fn check_config(&self, cfgstring: &str) -> Result<(), HandlerError> {
        QcowConfig::check(cfgstring)
            .map(|_| ())
            .map_err(HandlerError::invalid_config)
    }

    async fn open(&self, config: &DeviceConfig) -> Result<Handler, HandlerError> {
        let image = QcowHandler::open(config).await?;
        // imago keeps metadata in write-back caches until a flush, and a
        // qcow version 1 image's data is not durable before an fdatasync.
        let mut handler = Handler::new(image).volatile_write_cache();
        if handler.backend().supports_unmap() {
            handler = handler.unmap();
        }
        Ok(handler.build())
    }
}
