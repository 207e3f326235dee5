//! [`FileFactory`]: the `file` subtype.

use async_trait::async_trait;
use tcmu_runtime::{DeviceConfig, Handler, HandlerError, HandlerFactory};

use crate::config::FileConfig;
use crate::handler::FileHandler;

/// The `file` handler type: `dev_config=file//path/to/file`. Construct with
/// `FileFactory` (a unit struct) or `FileFactory::default()`.
#[derive(Debug, Clone, Copy, Default)]
pub struct FileFactory;

#[async_trait(?Send)]
impl HandlerFactory for FileFactory {
    fn subtype(&self) -> &str {
        "file"
    }

    fn cfg_desc(&self) -> &str {
        "The path to the file to use as a backstore."
    }

    fn check_config(&self, cfgstring: &str) -> Result<(), HandlerError> {
        FileConfig::check(cfgstring)
            .map(|_| ())
            .map_err(HandlerError::invalid_config)
    }

    async fn open(&self, config: &DeviceConfig) -> Result<Handler, HandlerError> {
        let file = FileHandler::open(config).await?;
        let mut handler = Handler::new(file);
        // Holes are punched where the file system supports it; a file
        // system that turns out not to (EOPNOTSUPP later) makes the runtime
        // withdraw UNMAP.
        if handler.backend().supports_unmap() {
            handler = handler.unmap();
        }
        // Holes are deallocated blocks only in a regular file.
        if !handler.backend().is_block_device() {
            handler = handler.lba_status();
        }
        Ok(handler.write_same().volatile_write_cache().build())
    }
}
