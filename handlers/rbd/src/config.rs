//! The `rbd` cfgstring: `<pool>/<image>[;osd_op_timeout=N][;conf=PATH][;id=NAME]`.
//!
//! tcmu-runner's format, read the same way: the pool is everything before
//! the first `/`, the image everything after it up to the first `;`, then
//! `;`-separated options (the daemon's own `tcmur_cmd_time_out=N` is taken
//! out before the handler sees the string). Unlike tcmu-runner, which
//! ignores what it does not know, an unknown option or a malformed value is
//! refused: a misspelt `osd_op_timout=` silently ignored would leave a
//! gateway without the time-out its operator asked for.

use std::path::PathBuf;

/// A parsed cfgstring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RbdConfig {
    /// The RADOS pool.
    pub pool: String,
    /// The image in it.
    pub image: String,
    /// `osd_op_timeout=N`: seconds after which librados fails an OSD
    /// operation (`rados_osd_op_timeout`).
    pub osd_op_timeout: Option<u32>,
    /// `conf=PATH`: the Ceph configuration file (default: librados' own
    /// search, `/etc/ceph/ceph.conf`).
    pub conf: Option<PathBuf>,
    /// `id=NAME`: the client name without `client.` (default: `admin`).
    pub id: Option<String>,
}

/// Why a cfgstring was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// No `/` between pool and image.
    #[error("rbd: '{0}': expected <pool>/<image>[;osd_op_timeout=N][;conf=PATH][;id=NAME]")]
    Format(String),
    /// An empty pool or image name.
    #[error("rbd: '{0}': the pool and the image name must not be empty")]
    EmptyName(String),
    /// An option this handler does not know.
    #[error("rbd: unknown option '{0}' (known: osd_op_timeout=, conf=, id=)")]
    UnknownOption(String),
    /// An option with a bad value.
    #[error("rbd: invalid {key} '{value}': {why}")]
    BadValue {
        /// The option.
        key: &'static str,
        /// Its value.
        value: String,
        /// What is wrong with it.
        why: &'static str,
    },
}

impl RbdConfig {
    /// Parses a cfgstring (without the daemon's options).
    pub fn parse(cfg: &str) -> Result<Self, ConfigError> {
        let (spec, options) = match cfg.split_once(';') {
            Some((spec, rest)) => (spec, Some(rest)),
            None => (cfg, None),
        };
        let (pool, image) = spec
            .split_once('/')
            .ok_or_else(|| ConfigError::Format(cfg.to_owned()))?;
        if pool.is_empty() || image.is_empty() {
            return Err(ConfigError::EmptyName(cfg.to_owned()));
        }
        let mut out = Self {
            pool: pool.to_owned(),
            image: image.to_owned(),
            osd_op_timeout: None,
            conf: None,
            id: None,
        };
        for opt in options.into_iter().flat_map(|o| o.split(';')) {
            if opt.is_empty() {
                continue;
            }
            let (key, value) = opt
                .split_once('=')
                .ok_or_else(|| ConfigError::UnknownOption(opt.to_owned()))?;
            let bad = |key, why| ConfigError::BadValue {
                key,
                value: value.to_owned(),
                why,
            };
            match key {
                "osd_op_timeout" => {
                    let secs = value
                        .parse::<u32>()
                        .map_err(|_| bad("osd_op_timeout", "expected whole seconds"))?;
                    if secs == 0 {
                        return Err(bad("osd_op_timeout", "must be at least 1 second"));
                    }
                    out.osd_op_timeout = Some(secs);
                }
                "conf" => {
                    if !value.starts_with('/') {
                        return Err(bad("conf", "expected an absolute path"));
                    }
                    out.conf = Some(PathBuf::from(value));
                }
                "id" => {
                    if value.is_empty() || value.contains(char::is_whitespace) {
                        return Err(bad("id", "expected a client name such as 'admin'"));
                    }
                    out.id = Some(value.to_owned());
                }
                _ => return Err(ConfigError::UnknownOption(opt.to_owned())),
            }
        }
        Ok(out)
    }

    /// `pool/image`, for messages.
    pub fn spec(&self) -> String {
        format!("{}/{}", self.pool, self.image)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_tcmu_runner_strings() {
        let c = RbdConfig::parse("rbd/disk1").unwrap();
        assert_eq!((c.pool.as_str(), c.image.as_str()), ("rbd", "disk1"));
        assert_eq!((c.osd_op_timeout, c.conf, c.id), (None, None, None));
        let c = RbdConfig::parse("p/i;osd_op_timeout=30;conf=/etc/ceph/x.conf;id=gw").unwrap();
        assert_eq!(c.osd_op_timeout, Some(30));
        assert_eq!(
            c.conf.as_deref(),
            Some(std::path::Path::new("/etc/ceph/x.conf"))
        );
        assert_eq!(c.id.as_deref(), Some("gw"));
        assert_eq!(c.spec(), "p/i");
        // Empty parts are skipped, as tcmu-runner's strtok does.
        assert_eq!(
            RbdConfig::parse("p/i;;id=a;").unwrap().id.as_deref(),
            Some("a")
        );
    }

    #[test]
    fn refuses_what_it_cannot_serve() {
        for bad in [
            "",
            "noslash",
            "/img",
            "pool/",
            "p/i;osd_op_timout=30",
            "p/i;osd_op_timeout=0",
            "p/i;osd_op_timeout=ten",
            "p/i;conf=relative.conf",
            "p/i;id=",
            "p/i;verbose",
        ] {
            assert!(RbdConfig::parse(bad).is_err(), "{bad}");
        }
        let e = RbdConfig::parse("p/i;osd_op_timout=30")
            .unwrap_err()
            .to_string();
        assert!(e.contains("osd_op_timout"), "{e}");
    }
}
