//! [`GlfsFactory`]: the `glfs` subtype.
//!
//! Checking a cfgstring (D-Bus CheckConfig, and the daemon's check before
//! it opens a device) parses it, loads libgfapi (refusing, with the
//! package to install, when it is missing) and connects to the volume —
//! all within [`CHECK_DEADLINE`], so a stopped glusterd, an unknown
//! server or volume is refused in seconds with its cause, never a hung
//! `enable`. The connection made is kept for the device that usually
//! follows ([`conn`](crate::conn::connect)).
//!
//! Opening connects (or shares the volume's connection), opens the file —
//! creating it if missing — and sizes it: a file smaller than the device
//! grows to the device's size, as tcmu-runner does; a larger one is
//! refused, naming both sizes. All of it within [`OPEN_DEADLINE`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tcmu_glfs_ffi::{Error as GlfsError, File};
use tcmu_runtime::{blocking, DeviceConfig, Handler, HandlerError, HandlerFactory};
use tracing::info;

use crate::config::GlfsConfig;
use crate::conn;
use crate::handler::GlfsHandler;

/// The bound of a configuration check.
pub const CHECK_DEADLINE: Duration = Duration::from_secs(10);

/// The bound of opening a device (connect, open or create, size).
pub const OPEN_DEADLINE: Duration = Duration::from_secs(30);

/// The `glfs` handler type.
#[derive(Debug, Default)]
pub struct GlfsFactory;

/// Makes a gfapi error the user's message: what failed, with a hint for
/// the usual causes.
pub(crate) fn refusal(cfg: &GlfsConfig, e: GlfsError) -> HandlerError {
    if let GlfsError::Missing { .. } = e {
        return HandlerError::refused(format!("glfs: {}: {e}", cfg.spec()));
    }
    let hint = match e.errno() {
        libc::ENOENT => " (no such volume, or no such directory in it)",
        libc::ENOTCONN | libc::ECONNREFUSED | libc::ETIMEDOUT | libc::EHOSTUNREACH => {
            " (glusterd unreachable, or the volume not started)"
        }
        libc::EACCES | libc::EPERM => " (access refused)",
        _ => "",
    };
    HandlerError::backend(format!("glfs: {}{hint}", cfg.spec()), e)
}

fn parse(cfg: &str) -> Result<GlfsConfig, HandlerError> {
    GlfsConfig::parse(cfg).map_err(HandlerError::invalid_config)
}

/// Loads libgfapi, or says what is missing.
fn library(cfg: &GlfsConfig) -> Result<(), HandlerError> {
    tcmu_glfs_ffi::api()
        .map(|_| ())
        .map_err(|e| refusal(cfg, e))
}

/// Opens (creating) `cfg`'s file on the volume's connection and brings it
/// to `size` bytes. Blocks.
fn open_file(cfg: &GlfsConfig, size: u64) -> Result<File, HandlerError> {
    let fs = conn::connect(cfg).map_err(|e| refusal(cfg, e))?;
    let file = File::create(fs.clone(), &cfg.path);
    let file = match file {
        Ok(f) => f,
        Err(e) => {
            conn::linger(fs);
            return Err(refusal(cfg, e));
        }
    };
    drop(fs);
    match size_file(cfg, &file, size) {
        Ok(()) => Ok(file),
        Err(e) => {
            // Closed (and the connection let go) without making the
            // refusal wait for it.
            conn::release_file(Arc::new(file));
            Err(e)
        }
    }
}

/// Brings `file` to `size` bytes, or refuses a larger one. Blocks.
fn size_file(cfg: &GlfsConfig, file: &File, size: u64) -> Result<(), HandlerError> {
    let have = file.size().map_err(|e| refusal(cfg, e))?;
    if have > size {
        return Err(HandlerError::refused(format!(
            "glfs: {} is {have} bytes, larger than the device ({size} bytes): create the \
             device with the file's size, or use another file",
            cfg.spec()
        )));
    }
    if have < size {
        file.truncate(size).map_err(|e| refusal(cfg, e))?;
        info!("glfs: {} grown from {have} to {size} bytes", cfg.spec());
    }
    Ok(())
}

#[async_trait(?Send)]
impl HandlerFactory for GlfsFactory {
    fn subtype(&self) -> &str {
        "glfs"
    }

    fn cfg_desc(&self) -> &str {
        "glfs config string is of the form: volume@hostname/filename where volume is the \
         Gluster volume, hostname a server of it running glusterd, and filename the path of \
         the backing file in the volume (created if missing)"
    }

    fn check_config(&self, cfgstring: &str) -> Result<(), HandlerError> {
        let cfg = parse(cfgstring)?;
        library(&cfg)?;
        let what = format!("glfs: {}", cfg.spec());
        let probe = cfg.clone();
        let fs = conn::within(what, CHECK_DEADLINE, move || {
            conn::connect(&probe).map_err(|e| refusal(&probe, e))
        })?;
        // Kept for the device that usually follows a check.
        conn::linger(fs);
        Ok(())
    }

    async fn open(&self, config: &DeviceConfig) -> Result<Handler, HandlerError> {
        let cfg = parse(&config.cfgstring)?;
        library(&cfg)?;
        let started = Instant::now();
        let (open_cfg, size) = (cfg.clone(), config.size);
        let what = format!("glfs: opening {}", cfg.spec());
        let file = blocking::run(move || {
            conn::within(what, OPEN_DEADLINE, move || open_file(&open_cfg, size))
        })
        .await
        .map_err(|e| HandlerError::refused(format!("glfs: {}: {e}", cfg.spec())))??;
        let file = Arc::new(file);
        info!(
            device = %config.name,
            "glfs: opened {} ({} bytes) in {} ms; the connection has {} users",
            cfg.spec(),
            config.size,
            started.elapsed().as_millis(),
            conn::users(&cfg.server, cfg.port, &cfg.volume)
        );
        let handler = GlfsHandler::new(&config.name, cfg, &config.cfgstring, config.size, file);
        Ok(Handler::new(handler)
            .unmap()
            .write_same()
            // gfapi's write-behind may hold acknowledged writes in the
            // client: SYNCHRONIZE CACHE (fdatasync) makes them durable.
            .volatile_write_cache()
            .build())
    }
}
