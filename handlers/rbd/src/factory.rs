//! [`RbdFactory`]: the `rbd` subtype.
//!
//! Checking a cfgstring (D-Bus CheckConfig, and the daemon's check before
//! it opens a device) parses it and then asks the cluster: connect, open
//! the pool, look at the image — each librados step bounded by
//! [`CHECK_TIMEOUT`](crate::conn::CHECK_TIMEOUT), the whole check by
//! [`CHECK_DEADLINE`], so an unreachable
//! cluster is refused in seconds, never a hung `enable`. A check that
//! passed is remembered for [`CHECK_CACHE`] (targetcli's CheckConfig is
//! followed at once by the kernel's ADDED event for the same string).
//!
//! Opening connects for good (a client of the device's own), compares the
//! image's size with the device's (a mismatch is refused, naming both),
//! registers the device in the cluster's service map and declares what the
//! handler does natively.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tcmu_runtime::{blocking, DeviceConfig, Handler, HandlerError, HandlerFactory, Report};
use tracing::{info, warn};

use crate::config::RbdConfig;
use crate::conn::{self, CHECK_DEADLINE};
use crate::handler::RbdHandler;

/// How long a passed check is taken as still valid.
pub const CHECK_CACHE: Duration = Duration::from_secs(30);

/// The bound of opening a device (connect, pool, image, size).
pub const OPEN_DEADLINE: Duration = Duration::from_secs(30);

/// The `rbd` handler type. Construct with `RbdFactory::default()`.
#[derive(Debug, Default)]
pub struct RbdFactory {
    /// cfgstrings whose check passed, and when.
    checked: Mutex<HashMap<String, Instant>>,
}

/// Makes a librados error the user's message: what failed, and why.
fn refusal(cfg: &RbdConfig, e: &tcmu_rbd_ffi::Error) -> HandlerError {
    let hint = match e.errno() {
        libc::ENOENT => " (no such pool or image)",
        libc::ETIMEDOUT | libc::EINTR => " (cluster unreachable)",
        libc::EACCES | libc::EPERM | libc::ENOTCONN => {
            " (authentication refused: check id= and the keyring)"
        }
        _ => "",
    };
    HandlerError::backend(format!("rbd: {}{hint}", cfg.spec()), e.clone())
}

impl RbdFactory {
    /// Asks the cluster about `cfg`, within [`CHECK_DEADLINE`].
    fn probe(&self, cfgstring: &str, cfg: &RbdConfig) -> Result<(), HandlerError> {
        if let Ok(checked) = self.checked.lock() {
            if checked
                .get(cfgstring)
                .is_some_and(|t| t.elapsed() < CHECK_CACHE)
            {
                return Ok(());
            }
        }
        if let Some(path) = &cfg.conf {
            if !path.is_file() {
                return Err(HandlerError::invalid_config(format!(
                    "rbd: conf={}: no such file",
                    path.display()
                )));
            }
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let probe_cfg = cfg.clone();
        std::thread::Builder::new()
            .name("rbd-check".into())
            .spawn(move || {
                let _ = tx.send(conn::probe(&probe_cfg));
            })
            .map_err(|e| HandlerError::io("rbd: cannot start the configuration check", e))?;
        match rx.recv_timeout(CHECK_DEADLINE) {
            Ok(Ok(_size)) => {
                if let Ok(mut checked) = self.checked.lock() {
                    checked.retain(|_, t| t.elapsed() < CHECK_CACHE);
                    checked.insert(cfgstring.to_owned(), Instant::now());
                }
                Ok(())
            }
            Ok(Err(e)) => Err(refusal(cfg, &e)),
            Err(_) => Err(HandlerError::refused(format!(
                "rbd: {}: the cluster did not answer within {} s (cluster unreachable?)",
                cfg.spec(),
                CHECK_DEADLINE.as_secs()
            ))),
        }
    }
}

#[async_trait(?Send)]
impl HandlerFactory for RbdFactory {
    fn subtype(&self) -> &str {
        "rbd"
    }

    fn cfg_desc(&self) -> &str {
        "RBD config string is of the form: poolname/devicename[;option1;option2;...] where \
         poolname is an existing RADOS pool, devicename the RBD image (with the exclusive-lock \
         feature for fencing), and the options osd_op_timeout=N (seconds), \
         conf=/etc/ceph/cluster.conf, id=user."
    }

    fn check_config(&self, cfgstring: &str) -> Result<(), HandlerError> {
        let cfg = RbdConfig::parse(cfgstring).map_err(HandlerError::invalid_config)?;
        self.probe(cfgstring, &cfg)
    }

    async fn open(&self, config: &DeviceConfig) -> Result<Handler, HandlerError> {
        let cfg = RbdConfig::parse(&config.cfgstring).map_err(HandlerError::invalid_config)?;
        let open_cfg = cfg.clone();
        let started = Instant::now();
        let opened = tokio::time::timeout(
            OPEN_DEADLINE,
            blocking::run(move || {
                let mut c = conn::open(&open_cfg)?;
                if let Err(e) = conn::register_service(&mut c, &open_cfg) {
                    warn!("rbd: {} (the device is served all the same)", Report(&e));
                }
                Ok::<_, tcmu_rbd_ffi::Error>(c)
            }),
        )
        .await
        .map_err(|_| {
            HandlerError::refused(format!(
                "rbd: {}: opening took more than {} s (cluster unreachable?)",
                cfg.spec(),
                OPEN_DEADLINE.as_secs()
            ))
        })?
        .map_err(|e| HandlerError::refused(format!("rbd: {}: {}", cfg.spec(), Report(&e))))?;
        let conn = opened.map_err(|e| refusal(&cfg, &e))?;
        if conn.info.size != config.size {
            let msg = format!(
                "rbd: the device size {} differs from the size of image {} ({} bytes): \
                 create the device with the image's size, or resize the image (rbd resize)",
                config.size,
                cfg.spec(),
                conn.info.size
            );
            let _ = blocking::run(move || drop(conn)).await;
            return Err(HandlerError::refused(msg));
        }
        if !conn.exclusive_lock {
            warn!(
                device = %config.name,
                "rbd: image {} has no exclusive-lock feature: writes are not fenced, so only \
                 one gateway may serve it (rbd feature enable {} exclusive-lock)",
                cfg.spec(),
                cfg.spec()
            );
        }
        info!(
            device = %config.name,
            address = %conn.addrs,
            osd_op_timeout = conn.osd_op_timeout,
            "rbd: opened {} ({} bytes, {} KiB objects) in {} ms",
            cfg.spec(),
            conn.info.size,
            conn.info.obj_size / 1024,
            started.elapsed().as_millis()
        );
        let handler = RbdHandler::new(
            &config.name,
            cfg,
            &config.cfgstring,
            config.size,
            config.block_size,
            conn,
        );
        Ok(Handler::new(handler)
            .unmap()
            .write_same()
            .compare_and_write()
            // librbd's cache is off, so acknowledged writes are on the OSDs
            // already; reporting a write cache spares a flush after every
            // write, while SYNCHRONIZE CACHE and FUA still reach librbd.
            .volatile_write_cache()
            .build())
    }
}
