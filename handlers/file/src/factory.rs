//! [`FileFactory`]: the `file` subtype.

use async_trait::async_trait;
use tcmu_runtime::{DeviceConfig, Handler, HandlerFactory};

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

    fn check_config(&self, cfgstring: &str) -> Result<(), String> {
        FileConfig::check(cfgstring)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    async fn open(&self, config: &DeviceConfig) -> Result<Handler, String> {
        Ok(Box::new(FileHandler::open(config).await?))
    }
}
