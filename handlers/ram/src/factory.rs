//! [`RamFactory`]: the `ram` subtype.

use async_trait::async_trait;
use tcmu_runtime::{DeviceConfig, Handler, HandlerError, HandlerFactory};

use crate::config::RamConfig;
use crate::handler::RamHandler;

/// The `ram` handler type: `dev_config=ram/<size>` (or `ram/` for the
/// device size), optionally followed by injected faults
/// (`ram/64M;fail_read=100-199`, see [`crate::config`]). Construct with `RamFactory` (a unit struct) or
/// `RamFactory::default()`.
#[derive(Debug, Clone, Copy, Default)]
pub struct RamFactory;

#[async_trait(?Send)]
impl HandlerFactory for RamFactory {
    fn subtype(&self) -> &str {
        "ram"
    }

    fn cfg_desc(&self) -> &str {
        "RAM disk size (bytes, or with a K/M/G/T suffix such as 64M); empty for the device size. \
         Test faults may follow, each after a semicolon (RANGE = LBA or FIRST-LAST): fail_read=RANGE, \
         fail_write=RANGE, short_read=RANGE, hang_read=RANGE, hang_write=RANGE, \
         panic_read=RANGE, panic_write=RANGE, not_ready, delay_ms=N"
    }

    fn check_config(&self, cfgstring: &str) -> Result<(), HandlerError> {
        RamConfig::parse(cfgstring)
            .map(|_| ())
            .map_err(HandlerError::invalid_config)
    }

    async fn open(&self, config: &DeviceConfig) -> Result<Handler, HandlerError> {
        let parsed = RamConfig::parse(&config.cfgstring).map_err(HandlerError::invalid_config)?;
        let size = match parsed.size {
            Some(size) if size < config.size => {
                return Err(HandlerError::refused(format!(
                    "ram handler: '{}' ({size} bytes) is smaller than device {} ({} bytes)",
                    config.cfgstring.trim(),
                    config.name,
                    config.size
                )))
            }
            Some(size) => size,
            None => config.size,
        };
        tracing::debug!(device = %config.name, size, "ram handler: opening");
        let handler = RamHandler::new(size)?
            .named(&config.name)
            .with_geometry(config.size, config.block_size);
        handler.check_faults(&parsed.faults)?;
        if !parsed.faults.is_empty() {
            tracing::warn!(device = %config.name, "ram handler: injecting faults: {}", parsed.faults);
        }
        Ok(Handler::new(handler.with_faults(parsed.faults))
            .unmap()
            .write_same()
            .compare_and_write()
            .copy_offload()
            .commands()
            .build())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn dev(cfg: &str, size: u64) -> DeviceConfig {
        DeviceConfig::new("ram0", cfg, size, 512)
    }

    #[test]
    fn checks_config() {
        let f = RamFactory;
        assert_eq!(f.subtype(), "ram");
        assert!(f.check_config("").is_ok());
        assert!(f.check_config("64M").is_ok());
        let msg = f.check_config("64Q").unwrap_err().to_string();
        assert!(msg.contains("invalid size '64Q'"), "{msg}");
    }

    #[test]
    fn opens_with_device_or_configured_size() {
        tokio_uring::start(async {
            let f = RamFactory;
            assert!(f.open(&dev("", 1 << 20)).await.is_ok());
            assert!(f.open(&dev("2M", 1 << 20)).await.is_ok());
            let msg = f.open(&dev("4K", 1 << 20)).await.err().unwrap().to_string();
            assert!(msg.contains("smaller than device ram0"), "{msg}");
            assert!(f.open(&dev("nope", 1 << 20)).await.is_err());
        });
    }

    #[test]
    fn the_daemons_own_options_ride_along() {
        // tcmu-runner's `;tcmur_cmd_time_out=N` shares the separator; the
        // registry takes it out before the handler parses the rest.
        let mut registry = tcmu_runtime::Registry::default();
        registry.register(std::sync::Arc::new(RamFactory));
        for dev_config in [
            "ram/;tcmur_cmd_time_out=30;fail_read=1-2",
            "ram/64M;tcmur_cmd_time_out=5;not_ready",
            "ram/;fail_write=3;tcmur_cmd_time_out=5",
        ] {
            assert!(
                registry.check_dev_config(dev_config).is_ok(),
                "{dev_config}"
            );
        }
        let msg = registry
            .check_dev_config("ram/;tcmur_cmd_time_out=30;fail_read=2-1")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("fail_read=2-1"), "{msg}");
    }

    #[test]
    fn faults_are_checked_and_opened() {
        let f = RamFactory;
        assert!(f.cfg_desc().contains("fail_read=RANGE"));
        assert!(f.check_config("64M;fail_read=0-7;delay_ms=5").is_ok());
        let msg = f.check_config("64M;fail_read=7-0").unwrap_err().to_string();
        assert!(
            msg.contains("fail_read=7-0: LAST is smaller than FIRST"),
            "{msg}"
        );
        tokio_uring::start(async {
            // 2048 blocks of 512 bytes: 2047 is the last.
            assert!(f.open(&dev(";short_read=2047", 1 << 20)).await.is_ok());
            let msg = f
                .open(&dev(";hang_read=2048-4000", 1 << 20))
                .await
                .err()
                .unwrap()
                .to_string();
            assert!(
                msg.contains("hang_read=2048-4000 starts beyond the device's last block (2047)"),
                "{msg}"
            );
        });
    }
}
