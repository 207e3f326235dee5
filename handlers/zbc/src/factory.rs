//! [`ZbcFactory`]: the `zbc` subtype.

use async_trait::async_trait;
use tcmu_runtime::{DeviceConfig, Handler, HandlerError, HandlerFactory};

use crate::config::{ZbcConfig, CFG_DESC};
use crate::handler::ZbcHandler;

/// The `zbc` handler type: `dev_config=zbc/[options@]/path/to/file` (see
/// [`crate::config`]). Construct with `ZbcFactory` (a unit struct) or
/// `ZbcFactory::default()`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ZbcFactory;

/// The product identification of a zoned disk, as tcmu-runner reports it.
pub const PRODUCT: &str = "TCMU ZBC device";

#[async_trait(?Send)]
impl HandlerFactory for ZbcFactory {
    fn subtype(&self) -> &str {
        "zbc"
    }

    fn cfg_desc(&self) -> &str {
        CFG_DESC
    }

    fn check_config(&self, cfgstring: &str) -> Result<(), HandlerError> {
        ZbcConfig::check(cfgstring)
            .map(|_| ())
            .map_err(HandlerError::invalid_config)
    }

    async fn open(&self, config: &DeviceConfig) -> Result<Handler, HandlerError> {
        let zbc = ZbcHandler::open(config).await?;
        let g = zbc.geometry();
        let zoned = zbc.zoned_params();
        Ok(Handler::new(zbc)
            .commands()
            .volatile_write_cache()
            .device_params(move |p| {
                // The transfer limits of configfs are in its blocks: they
                // keep their size in bytes when the disk's blocks differ.
                p.set_block_size(g.lba_size);
                p.num_blocks = g.capacity;
                p.product = PRODUCT.to_owned();
                p.zoned = Some(zoned);
            })
            .build())
    }
}
