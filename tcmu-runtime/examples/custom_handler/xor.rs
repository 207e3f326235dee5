//! The `xor` handler: a RAM disk that keeps its bytes XORed with a key
//! from its configuration string, `dev_config=xor/<hex key>` (e.g.
//! `xor/5a3c`). Initiators read back exactly what they wrote; the memory
//! holds it scrambled.

use std::cell::RefCell;

use tcmu_runtime::{async_trait, BlockError, BlockHandler, DataBuf, DeviceConfig, Handler};
use tcmu_runtime::{HandlerError, HandlerFactory};

/// Opens `xor` devices.
pub struct XorFactory;

/// The key of a configuration string: 1 to 64 bytes in hex.
fn parse_key(cfg: &str) -> Result<Vec<u8>, HandlerError> {
    let bad =
        || HandlerError::invalid_config(format!("xor: '{cfg}' is not a key of 1 to 64 hex bytes"));
    if cfg.is_empty() || cfg.len() % 2 != 0 || cfg.len() > 128 {
        return Err(bad());
    }
    (0..cfg.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(cfg.get(i..i + 2).unwrap_or("x"), 16).map_err(|_| bad()))
        .collect()
}

#[async_trait(?Send)]
impl HandlerFactory for XorFactory {
    fn subtype(&self) -> &str {
        "xor"
    }

    fn cfg_desc(&self) -> &str {
        "A key of 1 to 64 bytes in hex (xor/5a3c): the disk keeps its data XORed with it."
    }

    fn check_config(&self, cfg: &str) -> Result<(), HandlerError> {
        parse_key(cfg).map(|_| ())
    }

    async fn open(&self, dev: &DeviceConfig) -> Result<Handler, HandlerError> {
        let key = parse_key(&dev.cfgstring)?;
        let size = usize::try_from(dev.size)
            .map_err(|_| HandlerError::refused(format!("xor: {} bytes is too large", dev.size)))?;
        // Zeroed memory holds the key: the disk reads back zeroes.
        let data = (0..size).map(|i| key[i % key.len()]).collect();
        tracing::info!(device = %dev.name, size, "xor: serving with a {}-byte key", key.len());
        Ok(Handler::new(Xor {
            key,
            data: RefCell::new(data),
        })
        .build())
    }
}

/// One device: its scrambled bytes and the key.
struct Xor {
    key: Vec<u8>,
    data: RefCell<Vec<u8>>,
}

impl Xor {
    /// XORs `bytes`, which sit at byte `at` of the device, with the key.
    fn scramble(&self, at: usize, bytes: &mut [u8]) {
        for (i, b) in bytes.iter_mut().enumerate() {
            *b ^= self.key[(at + i) % self.key.len()];
        }
    }
}

#[async_trait(?Send)]
impl BlockHandler for Xor {
    // The runtime has checked every range against the device's size.
    async fn read(&self, offset: u64, mut bufs: Vec<DataBuf>) -> Result<(), BlockError> {
        let data = self.data.borrow();
        let mut at = offset as usize;
        for b in &mut bufs {
            let mut plain = data[at..at + b.len()].to_vec();
            self.scramble(at, &mut plain);
            at += b.copy_from(0, &plain);
        }
        Ok(())
    }

    async fn write(&self, offset: u64, bufs: Vec<DataBuf>) -> Result<(), BlockError> {
        let mut data = self.data.borrow_mut();
        let mut at = offset as usize;
        for b in &bufs {
            let dst = &mut data[at..at + b.len()];
            b.copy_to(0, dst);
            self.scramble(at, dst);
            at += b.len();
        }
        Ok(())
    }

    /// Memory: every acknowledged write is already where it goes.
    async fn flush(&self) -> Result<(), BlockError> {
        Ok(())
    }
}
