//! Handler factories and the registry of compiled-in handlers.
//!
//! A [`HandlerFactory`] is one backend type (subtype `file`, `ram`, …): it
//! validates configuration strings ([`HandlerFactory::check_config`], also
//! what D-Bus `CheckConfig` answers) and opens a [`Handler`] for a
//! device. The [`Registry`] maps subtypes to factories.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;

use crate::capability::Handler;
use crate::error::HandlerError;

/// What a handler needs to know to open a device.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeviceConfig {
    /// The device's configfs name (`<dev>` in `user_<hba>/<dev>`).
    pub name: String,
    /// The handler's configuration: the part of `dev_config` after
    /// `<subtype>/` (for `file//var/lib/disk.img`, `/var/lib/disk.img`).
    pub cfgstring: String,
    /// Device size in bytes.
    pub size: u64,
    /// Logical block size in bytes.
    pub block_size: u32,
    /// Whether the write cache is enabled.
    pub write_cache: bool,
}

impl DeviceConfig {
    /// The configuration of device `name` with handler configuration
    /// `cfgstring`, `size` bytes in `block_size`-byte blocks, write cache
    /// off.
    pub fn new(
        name: impl Into<String>,
        cfgstring: impl Into<String>,
        size: u64,
        block_size: u32,
    ) -> Self {
        Self {
            name: name.into(),
            cfgstring: cfgstring.into(),
            size,
            block_size,
            write_cache: false,
        }
    }

    /// The same with the write cache on or off.
    pub fn with_write_cache(mut self, on: bool) -> Self {
        self.write_cache = on;
        self
    }
}

/// One backend type.
#[async_trait(?Send)]
pub trait HandlerFactory: Send + Sync {
    /// The subtype in `user:<subtype>` and in `dev_config` (`file`, `ram`, …).
    fn subtype(&self) -> &str;

    /// A one-line description of the configuration string format (D-Bus
    /// `ConfigDesc`).
    fn cfg_desc(&self) -> &str;

    /// Checks a configuration string (the part after `<subtype>/`) without
    /// opening anything long-lived; the error's [`Report`](crate::Report)
    /// is the message the user reads. The runtime checks again before
    /// [`open`](Self::open), so a bad string is refused promptly.
    fn check_config(&self, cfgstring: &str) -> Result<(), HandlerError>;

    /// Opens the backend for a device and declares what it can do
    /// ([`Handler::new`]). Runs on the device's worker thread.
    ///
    /// The daemon and [`Workers::open_uio`](crate::Workers::open_uio) call
    /// [`check_config`](Self::check_config) first and refuse the device if
    /// it fails; [`Workers::open`](crate::Workers::open) and the test rig
    /// pass `config` as given. Parse the cfgstring here anyway (that is how
    /// `open` learns its options) and return its error.
    async fn open(&self, config: &DeviceConfig) -> Result<Handler, HandlerError>;
}

/// The compiled-in handlers, by subtype.
#[derive(Default, Clone)]
pub struct Registry {
    factories: BTreeMap<String, Arc<dyn HandlerFactory>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.factories.keys()).finish()
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a factory; a later one with the same subtype replaces it.
    pub fn register(&mut self, factory: Arc<dyn HandlerFactory>) {
        self.factories.insert(factory.subtype().to_owned(), factory);
    }

    /// The factory for `subtype`.
    pub fn get(&self, subtype: &str) -> Option<Arc<dyn HandlerFactory>> {
        self.factories.get(subtype).cloned()
    }

    /// All registered factories, ordered by subtype.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<dyn HandlerFactory>> {
        self.factories.values()
    }

    /// Checks a full `dev_config` string (`<subtype>/<cfgstring>`), as
    /// targetcli's CheckConfig passes it.
    /// The daemon's own options (`;tcmur_cmd_time_out=N`) are checked and
    /// taken out first, as the handler never sees them.
    pub fn check_dev_config(&self, dev_config: &str) -> Result<(), HandlerError> {
        let (subtype, cfg) = split_dev_config(dev_config)?;
        let factory = self.get(subtype).ok_or_else(|| {
            HandlerError::invalid_config(format!("no handler for subtype '{subtype}'"))
        })?;
        let (cfg, _) = take_runner_options(cfg)?;
        factory.check_config(&cfg)
    }
}

/// Splits `dev_config` (`file//path`) into the subtype (`file`) and the
/// handler's configuration string (`/path`).
pub fn split_dev_config(dev_config: &str) -> Result<(&str, &str), HandlerError> {
    match dev_config.split_once('/') {
        Some((subtype, cfg)) if !subtype.is_empty() => Ok((subtype, cfg)),
        _ => Err(HandlerError::invalid_config(format!(
            "invalid configuration string '{dev_config}': expected <subtype>/<config>"
        ))),
    }
}

/// Options of the daemon itself that ride in a handler's configuration
/// string, as tcmu-runner's do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunnerOptions {
    /// `tcmur_cmd_time_out=N`: seconds after which a command still in
    /// flight is logged (with its CDB), counted as timed out and reported to
    /// the handler; `Some(0)` turns the check off.
    pub cmd_time_out: Option<u32>,
}

/// The key of the per-device command timeout, as tcmu-runner spells it.
const CMD_TIME_OUT_KEY: &str = "tcmur_cmd_time_out=";

/// Takes the daemon's own options out of a handler's configuration string.
///
/// tcmu-runner accepts `;tcmur_cmd_time_out=N` anywhere in the string:
/// gluster-block appends it (`vol@host/dir/id;tcmur_cmd_time_out=130`), and
/// it may lead the string (`;tcmur_cmd_time_out=30;/var/disk.img`). The
/// option and its leading `;` are removed (a leading option takes its
/// trailing `;` too), so the handler sees `/var/disk.img`; other `;key=value`
/// parts (`rbd/pool/img;osd_op_timeout=30`) are left to the handler. Unlike
/// tcmu-runner, which reads the number with `atoi`, a value that is not a
/// whole number of seconds is refused. The last of repeated options wins.
pub fn take_runner_options(cfgstring: &str) -> Result<(String, RunnerOptions), HandlerError> {
    let mut rest = cfgstring.to_owned();
    let mut options = RunnerOptions::default();
    let mut leading = false;
    let mut from = 0;
    while let Some(found) = rest[from..].find(';') {
        let semi = from + found;
        let arg = semi + 1;
        if !rest[arg..].starts_with(CMD_TIME_OUT_KEY) {
            from = arg;
            continue;
        }
        let value_start = arg + CMD_TIME_OUT_KEY.len();
        let value_end = rest[value_start..]
            .find(';')
            .map_or(rest.len(), |i| value_start + i);
        let value = &rest[value_start..value_end];
        let secs = value.parse::<u32>().map_err(|_| {
            HandlerError::invalid_config(format!(
                "invalid tcmur_cmd_time_out '{value}' in '{cfgstring}': expected a whole number of seconds"
            ))
        })?;
        options.cmd_time_out = Some(secs);
        leading |= semi == 0;
        // The next part keeps its own separator.
        rest.replace_range(semi..value_end, "");
        from = semi;
    }
    // Options that led the string leave the separator before the handler's
    // part: `;tcmur_cmd_time_out=30;/path` is `/path`.
    if leading && rest.starts_with(';') {
        rest.remove(0);
    }
    Ok((rest, options))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_dev_config() {
        assert_eq!(split_dev_config("file//a/b").unwrap(), ("file", "/a/b"));
        assert_eq!(split_dev_config("ram/64M").unwrap(), ("ram", "64M"));
        assert!(split_dev_config("noslash").is_err());
        assert!(split_dev_config("/x").is_err());
    }

    fn take(s: &str) -> (String, Option<u32>) {
        let (rest, o) = take_runner_options(s).unwrap();
        (rest, o.cmd_time_out)
    }

    #[test]
    fn runner_options_are_taken_out() {
        assert_eq!(take("/var/disk.img"), ("/var/disk.img".into(), None));
        assert_eq!(
            take(";tcmur_cmd_time_out=30;/var/disk.img"),
            ("/var/disk.img".into(), Some(30))
        );
        assert_eq!(
            take("vol@host/dir/id;tcmur_cmd_time_out=130"),
            ("vol@host/dir/id".into(), Some(130))
        );
        assert_eq!(
            take("pool/img;tcmur_cmd_time_out=5;osd_op_timeout=30"),
            ("pool/img;osd_op_timeout=30".into(), Some(5))
        );
        assert_eq!(
            take("pool/img;osd_op_timeout=30"),
            ("pool/img;osd_op_timeout=30".into(), None)
        );
        assert_eq!(
            take(";tcmur_cmd_time_out=1;;tcmur_cmd_time_out=0"),
            ("".into(), Some(0))
        );
        assert_eq!(take(";tcmur_cmd_time_out=7"), ("".into(), Some(7)));
        // Found by the cfgstring fuzz target: two leading options.
        assert_eq!(
            take(";tcmur_cmd_time_out=1;tcmur_cmd_time_out=2;/x"),
            ("/x".into(), Some(2))
        );
    }

    #[test]
    fn bad_runner_options_are_refused() {
        for bad in [
            ";tcmur_cmd_time_out=;/x",
            ";tcmur_cmd_time_out=-1;/x",
            "/x;tcmur_cmd_time_out=ten",
            "/x;tcmur_cmd_time_out=99999999999",
        ] {
            let e = take_runner_options(bad).unwrap_err().to_string();
            assert!(e.contains("tcmur_cmd_time_out"), "{bad}: {e}");
        }
    }
}
