//! [`FboFactory`]: the `fbo` subtype.

use async_trait::async_trait;
use tcmu_runtime::{DeviceConfig, Handler, HandlerError, HandlerFactory};
use tcmu_scsi::mmc::{MmcParams, BLOCK_SIZE};

use crate::config::{FboConfig, CFG_DESC};
use crate::handler::FboHandler;

/// The `fbo` handler type: `dev_config=fbo/[ro/]/path/to/file` (see
/// [`crate::config`]). Construct with `FboFactory` (a unit struct) or
/// `FboFactory::default()`.
#[derive(Debug, Clone, Copy, Default)]
pub struct FboFactory;

/// The product identification of the drive, as tcmu-runner reports it.
pub const PRODUCT: &str = "VOPTA";

/// The product revision level, as tcmu-runner reports it.
pub const REVISION: &str = "0001";

#[async_trait(?Send)]
impl HandlerFactory for FboFactory {
    fn subtype(&self) -> &str {
        "fbo"
    }

    fn cfg_desc(&self) -> &str {
        CFG_DESC
    }

    fn check_config(&self, cfgstring: &str) -> Result<(), HandlerError> {
        FboConfig::check(cfgstring)
            .map(|_| ())
            .map_err(HandlerError::invalid_config)
    }

    async fn open(&self, config: &DeviceConfig) -> Result<Handler, HandlerError> {
        let fbo = FboHandler::open(config).await?;
        let drive = fbo.drive_state();
        let blocks = drive.medium.blocks;
        Ok(Handler::new(fbo)
            .commands()
            .volatile_write_cache()
            .device_params(move |p| {
                // An optical disc has 2048-byte blocks whatever configfs
                // says; the transfer limits keep their size in bytes.
                p.set_block_size(BLOCK_SIZE);
                p.num_blocks = u64::from(blocks);
                p.product = PRODUCT.to_owned();
                p.revision = REVISION.to_owned();
                p.mmc = Some(MmcParams { drive: drive.drive });
            })
            .build())
    }
}
