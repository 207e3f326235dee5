//! [`Conn`]: one incarnation of a device's cluster connection — a librados
//! client of its own, the pool, the open image — and the blocking steps
//! around it: opening with bounded time-outs, the service map, and the
//! clean-up of our own earlier incarnations' blocklist entries.
//!
//! Each device has its own client (as tcmu-runner's rbd handler does), so
//! a blocklisted or stuck client affects one device, and reopening one
//! device (a new client, a new address) leaves the others alone.
//!
//! Everything here blocks; the handler runs it on blocking threads.

use std::sync::Mutex;
use std::time::Duration;

use tcmu_rbd_ffi::{Cluster, Error as RbdError, Image, ImageInfo, IoCtx};
use tracing::{debug, info, warn};

use crate::config::RbdConfig;

/// How long connecting to the monitors and each monitor command may take
/// (`client_mount_timeout`, `rados_mon_op_timeout`) when opening a device.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The bound of a configuration check (D-Bus CheckConfig, and before a
/// device is opened): connect, open the pool and look at the image, each
/// librados step limited to this, the whole check to
/// [`CHECK_DEADLINE`].
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(4);

/// The wall-clock bound of a whole configuration check.
pub const CHECK_DEADLINE: Duration = Duration::from_secs(6);

/// The service the daemon registers in the cluster's service map, as
/// tcmu-runner does (ceph-iscsi's tools look for it).
pub const SERVICE: &str = "tcmu-runner";

/// Addresses of our own clients that were shut down: their blocklist
/// entries (if another gateway or our own next incarnation blocklisted
/// them) are removed at the next open, as tcmu-runner does. Only clients
/// already shut down are listed, so nothing listed can write again.
static STALE_ADDRS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// What purpose a client is made for: librados time-outs differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// A configuration check: everything bounded by [`CHECK_TIMEOUT`].
    Check,
    /// Serving a device.
    Serve,
}

/// One incarnation of a device's connection. Dropping it closes the image
/// (releasing the exclusive lock if the cluster is reachable), the pool and
/// the client, in that order, and lists the client's address as stale.
#[derive(Debug)]
pub struct Conn {
    /// Dropped first (fields drop in declaration order): closes the image,
    /// then the pool and the client it holds.
    image: Image,
    /// Size and object size at open.
    pub info: ImageInfo,
    /// The client's address (blocklist entries name it).
    pub addrs: String,
    /// The client's global id (`client.<gid>` owns our lock).
    pub gid: u64,
    /// The image has the exclusive-lock feature.
    pub exclusive_lock: bool,
    /// Another client held the exclusive lock when the image was opened
    /// (another gateway is the active one).
    pub locked_elsewhere: bool,
    /// The name under which we are registered in the service map.
    pub daemon: Option<String>,
    /// The OSD op time-out in force (seconds).
    pub osd_op_timeout: u32,
    /// `rbd_discard_granularity_bytes`, if readable.
    pub discard_granularity: Option<u64>,
    /// Dropped last: lists the address once the client is shut down.
    _stale: StaleOnDrop,
}

impl Conn {
    /// The open image.
    pub fn image(&self) -> &Image {
        &self.image
    }

    /// The client.
    pub fn cluster(&self) -> &Cluster {
        self.image.ioctx().cluster()
    }
}

/// Lists an address in [`STALE_ADDRS`] when dropped.
#[derive(Debug)]
struct StaleOnDrop(String);

impl Drop for StaleOnDrop {
    fn drop(&mut self) {
        if !self.0.is_empty() {
            if let Ok(mut stale) = STALE_ADDRS.lock() {
                stale.push(std::mem::take(&mut self.0));
            }
        }
    }
}

/// A configured client, connected: librados' configuration file (the
/// cfgstring's `conf=`, else the default search), the cfgstring's id,
/// bounded time-outs, no librbd cache (a gateway must not hold
/// acknowledged writes another gateway cannot see), and the OSD op
/// time-out. Returns the client and the OSD op time-out in force.
fn connect(cfg: &RbdConfig, purpose: Purpose) -> Result<(Cluster, u32), RbdError> {
    let cluster = Cluster::create(cfg.id.as_deref())?;
    match &cfg.conf {
        Some(path) => cluster.read_conf(Some(path)).map_err(|e| {
            RbdError::from_ret(
                format!("cannot read {}: {e}", path.display()),
                -i64::from(e.errno()),
            )
        })?,
        // The default search path may find nothing (a monitor address from
        // the environment will do, or connecting says what is missing).
        None => {
            if let Err(e) = cluster.read_conf(None) {
                debug!("rbd: no default Ceph configuration read: {e}");
            }
        }
    }
    let bound = match purpose {
        Purpose::Check => CHECK_TIMEOUT,
        Purpose::Serve => CONNECT_TIMEOUT,
    };
    let secs = bound.as_secs().to_string();
    cluster.conf_set("client_mount_timeout", &secs)?;
    cluster.conf_set("rados_mon_op_timeout", &secs)?;
    cluster.conf_set("rbd_cache", "false")?;
    let osd_op_timeout = match purpose {
        Purpose::Check => bound.as_secs() as u32,
        Purpose::Serve => effective_osd_op_timeout(&cluster, cfg.osd_op_timeout),
    };
    cluster.conf_set("rados_osd_op_timeout", &osd_op_timeout.to_string())?;
    cluster.connect()?;
    Ok((cluster, osd_op_timeout))
}

/// The OSD op time-out to use: the cfgstring's, else the configuration's,
/// provided it is longer than the time the cluster needs to notice a dead
/// OSD (`osd_heartbeat_grace + osd_heartbeat_interval`: failing an op
/// earlier fails what another OSD would soon have served); otherwise that
/// sum plus 5 s, as tcmu-runner does. An OSD op therefore never waits
/// forever.
fn effective_osd_op_timeout(cluster: &Cluster, wanted: Option<u32>) -> u32 {
    let num = |k: &str| -> Option<f64> { cluster.conf_get(k).ok()?.trim().parse().ok() };
    let grace = num("osd_heartbeat_grace").unwrap_or(20.0);
    let interval = num("osd_heartbeat_interval").unwrap_or(6.0);
    let floor = grace + interval;
    let configured = num("rados_osd_op_timeout").unwrap_or(0.0);
    match wanted {
        Some(t) if f64::from(t) > floor => t,
        Some(t) => {
            let raised = (floor + 5.0).ceil() as u32;
            warn!(
                "rbd: osd_op_timeout={t} is not longer than osd_heartbeat_grace + \
                 osd_heartbeat_interval ({floor} s): using {raised} s"
            );
            raised
        }
        None if configured > floor => configured.ceil() as u32,
        None => (floor + 5.0).ceil() as u32,
    }
}

/// Opens a device's connection: client, pool, image (read-write), and
/// cleans up our earlier incarnations' blocklist entries.
pub fn open(cfg: &RbdConfig) -> Result<Conn, RbdError> {
    let (cluster, osd_op_timeout) = connect(cfg, Purpose::Serve)?;
    let discard_granularity = cluster
        .conf_get("rbd_discard_granularity_bytes")
        .ok()
        .and_then(|v| v.trim().parse().ok());
    let gid = cluster.instance_id();
    let addrs = cluster.addrs().unwrap_or_default();
    let cluster = std::sync::Arc::new(cluster);
    let ioctx = std::sync::Arc::new(IoCtx::create(cluster, &cfg.pool)?);
    let image = Image::open(ioctx, &cfg.image, false)?;
    let info = image.stat()?;
    let exclusive_lock = image.has_exclusive_lock()?;
    // Only what RTPG reports depends on it: a failed query counts as free.
    let locked_elsewhere = exclusive_lock && image.lock_owners().is_ok_and(|o| !o.is_empty());
    let conn = Conn {
        image,
        info,
        _stale: StaleOnDrop(addrs.clone()),
        addrs,
        gid,
        exclusive_lock,
        locked_elsewhere,
        daemon: None,
        osd_op_timeout,
        discard_granularity,
    };
    remove_stale_blocklist_entries(conn.cluster());
    Ok(conn)
}

/// Checks that `cfg` names a reachable cluster with that pool and image,
/// as quickly as the cluster answers and within [`CHECK_TIMEOUT`] per
/// step; returns the image's size.
pub fn probe(cfg: &RbdConfig) -> Result<u64, RbdError> {
    let (cluster, _) = connect(cfg, Purpose::Check)?;
    let ioctx = std::sync::Arc::new(IoCtx::create(std::sync::Arc::new(cluster), &cfg.pool)?);
    let image = Image::open(ioctx, &cfg.image, true)?;
    image.size()
}

/// Registers `conn` in the service map as `<host>:<pool>/<image>` of
/// daemon type `portal`, as tcmu-runner does.
pub fn register_service(conn: &mut Conn, cfg: &RbdConfig) -> Result<(), RbdError> {
    let host = rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned();
    let daemon = format!("{host}:{}", cfg.spec());
    let id = conn.image().id()?;
    conn.cluster().service_register(
        SERVICE,
        &daemon,
        &[
            ("pool_name", &cfg.pool),
            ("image_name", &cfg.image),
            ("image_id", &id),
            ("daemon_type", "portal"),
            ("daemon_prefix", &host),
        ],
    )?;
    conn.daemon = Some(daemon);
    Ok(())
}

/// Counters reported in the service map.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    /// We hold the exclusive lock.
    pub lock_owner: bool,
    /// Times the lock was taken from us (or we were blocklisted).
    pub lock_lost: u64,
    /// Times the connection was reopened for another reason.
    pub conn_lost: u64,
    /// Commands that timed out (librados' OSD op time-out, or the
    /// daemon's command time-out).
    pub cmd_timed_out: u64,
}

/// Publishes `status` in the service map (keys as tcmu-runner's).
pub fn update_status(conn: &Conn, status: Status) -> Result<(), RbdError> {
    if conn.daemon.is_none() {
        return Ok(());
    }
    let (lost, conn_lost, timed_out) = (
        status.lock_lost.to_string(),
        status.conn_lost.to_string(),
        status.cmd_timed_out.to_string(),
    );
    conn.cluster().service_update_status(&[
        (
            "lock_owner",
            if status.lock_owner { "true" } else { "false" },
        ),
        ("lock_lost_cnt", &lost),
        ("conn_lost_cnt", &conn_lost),
        ("cmd_timed_out_cnt", &timed_out),
    ])
}

/// Removes the blocklist entries of our own clients that were shut down
/// (see [`STALE_ADDRS`]); best effort, logged.
fn remove_stale_blocklist_entries(cluster: &Cluster) {
    let stale: Vec<String> = match STALE_ADDRS.lock() {
        Ok(mut s) => std::mem::take(&mut *s),
        Err(_) => return,
    };
    for entry in stale {
        for addr in split_addrs(&entry) {
            // Newer monitors say "blocklist", older ones "blacklist".
            let rm = |word: &str| {
                cluster.mon_command(&format!(
                    r#"{{"prefix": "osd {word}", "{word}op": "rm", "addr": "{addr}"}}"#
                ))
            };
            match rm("blocklist").or_else(|_| rm("blacklist")) {
                Ok(_) => info!("rbd: removed the blocklist entry of our earlier client {addr}"),
                Err(e) => debug!("rbd: blocklist entry {addr} not removed: {e}"),
            }
        }
    }
}

/// The addresses of a `rados_getaddrs` string: `a` or `[a,b]`, with any
/// `v1:`/`v2:`/`any:` prefix kept (the monitor parses it).
fn split_addrs(s: &str) -> Vec<String> {
    s.trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty() && !a.contains('"'))
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_split() {
        assert_eq!(split_addrs("127.0.0.1:0/123"), vec!["127.0.0.1:0/123"]);
        assert_eq!(
            split_addrs("[v2:127.0.0.1:0/1,v1:127.0.0.1:0/1]"),
            vec!["v2:127.0.0.1:0/1", "v1:127.0.0.1:0/1"]
        );
        assert!(split_addrs("[]").is_empty());
    }
}
