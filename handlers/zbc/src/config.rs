//! The `zbc` handler's configuration string, tcmu-runner's format:
//!
//! ```text
//! [OPTION[/OPTION]...@]PATH
//! ```
//!
//! (`dev_config=zbc/model-HA/zsize-64@/var/lib/zbc.raw`, or
//! `dev_config=zbc//var/lib/zbc.raw` for no options). The options are
//! tcmu-runner's:
//!
//! | option | meaning | default |
//! |---|---|---|
//! | `model-HM`, `model-HA` | host managed or host aware | `HM` |
//! | `lba-512`, `lba-4096` | logical block size in bytes | 512 |
//! | `zsize-N` | zone size in MiB, a power of two | 256 |
//! | `conv-N` | conventional zones at the start of the disk (0 allowed) | 1% of the zones, at least 1 |
//! | `open-N` | maximum (HM) or optimal (HA) number of open zones, at least 1 | 128 |
//!
//! and two of ours, to test initiators against zones a real disk can lose:
//! `readonly-Z` and `offline-Z` (`Z` a zone number or an inclusive range
//! `FIRST-LAST`, repeatable) make sequential zones READ ONLY or OFFLINE
//! while the option is there; they change nothing in the file.
//!
//! Checking never touches the file system beyond looking: the path must be
//! absolute, its directory must exist, and an existing path must be a
//! regular file. Every refusal names the option or the path at fault.

use std::fs;
use std::io;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

use tcmu_scsi::ZonedModel;

/// Largest zone size accepted, in MiB: Linux wants a zone's sectors to fit
/// in 32 bits and their number to be a power of two (2^31 sectors).
pub const MAX_ZONE_MIB: u64 = 1 << 20;

/// The `zbc` cfgstring's format, for D-Bus `ConfigDesc`.
pub const CFG_DESC: &str = "[model-HM|model-HA/][lba-512|lba-4096/][zsize-<MiB>/][conv-<n>/][open-<n>/][readonly-<zone>[-<zone>]/][offline-<zone>[-<zone>]@]<absolute path of the backing file>. Defaults: host managed, 512-byte blocks, 256 MiB zones, 1% conventional zones (at least 1), 128 open zones. Options that differ from what an existing file holds reformat it only if it holds no data.";

/// Why a `zbc` cfgstring was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// No path.
    #[error("zbc handler: no backing file given (expected zbc/[options@]/path/to/file)")]
    NoPath,
    /// Options without the `@` that ends them.
    #[error("zbc handler: options '{0}' are not followed by '@' and the backing file's path")]
    NoAt(String),
    /// An option we do not know.
    #[error("zbc handler: unknown option '{0}' (known: model-, lba-, zsize-, conv-, open-, readonly-, offline-)")]
    UnknownOption(String),
    /// A known option with a bad value.
    #[error("zbc handler: option '{option}': {why}")]
    BadValue {
        /// The option as given.
        option: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The same option twice.
    #[error("zbc handler: option '{0}' is given twice")]
    Repeated(String),
    /// A relative path.
    #[error("zbc handler: path {0} is not absolute")]
    NotAbsolute(PathBuf),
    /// The folder of the backing file is missing.
    #[error("zbc handler: directory {0} does not exist")]
    NoDirectory(PathBuf),
    /// The path exists and is not a regular file.
    #[error("zbc handler: {0} is not a regular file")]
    NotAFile(PathBuf),
    /// `stat` failed.
    #[error("zbc handler: cannot access {path}")]
    Access {
        /// What could not be examined.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// The options of a cfgstring; `None` where not given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ZbcOptions {
    /// `model-`.
    pub model: Option<ZonedModel>,
    /// `lba-`, in bytes.
    pub lba_size: Option<u32>,
    /// `zsize-`, in MiB.
    pub zone_mib: Option<u64>,
    /// `conv-`.
    pub conv: Option<u32>,
    /// `open-`.
    pub open: Option<u32>,
    /// `readonly-`: zone numbers.
    pub read_only: Vec<RangeInclusive<u32>>,
    /// `offline-`: zone numbers.
    pub offline: Vec<RangeInclusive<u32>>,
}

impl ZbcOptions {
    /// Whether any option of the disk's format is given (the ones the file
    /// keeps: model, block size, zone size, conventional and open zones).
    pub fn format_given(&self) -> bool {
        self.model.is_some()
            || self.lba_size.is_some()
            || self.zone_mib.is_some()
            || self.conv.is_some()
            || self.open.is_some()
    }
}

/// A parsed `zbc` cfgstring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZbcConfig {
    /// The backing file.
    pub path: PathBuf,
    /// The options.
    pub options: ZbcOptions,
}

fn bad(option: &str, why: &'static str) -> ConfigError {
    ConfigError::BadValue {
        option: option.to_owned(),
        why,
    }
}

/// A decimal number with nothing around it.
fn number<T: std::str::FromStr>(option: &str, value: &str) -> Result<T, ConfigError> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad(option, "not a decimal number"));
    }
    value.parse().map_err(|_| bad(option, "number too large"))
}

/// `Z` or `FIRST-LAST`.
fn zones(option: &str, value: &str) -> Result<RangeInclusive<u32>, ConfigError> {
    let (first, last) = match value.split_once('-') {
        Some((a, b)) => (number(option, a)?, number(option, b)?),
        None => {
            let z = number(option, value)?;
            (z, z)
        }
    };
    if first > last {
        return Err(bad(option, "the range is reversed"));
    }
    Ok(first..=last)
}

/// Sets an option given once only.
fn set<T>(slot: &mut Option<T>, value: T, name: &str) -> Result<(), ConfigError> {
    if slot.is_some() {
        return Err(ConfigError::Repeated(name.to_owned()));
    }
    *slot = Some(value);
    Ok(())
}

impl ZbcOptions {
    /// Parses the options part (between `zbc/` and `@`), `/`-separated.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let mut o = ZbcOptions::default();
        for option in text.split('/').filter(|t| !t.is_empty()) {
            let (name, value) = option
                .split_once('-')
                .ok_or_else(|| ConfigError::UnknownOption(option.to_owned()))?;
            match name {
                "model" => {
                    let m = match value {
                        "HM" => ZonedModel::HostManaged,
                        "HA" => ZonedModel::HostAware,
                        _ => {
                            return Err(bad(
                                option,
                                "the model is HM (host managed) or HA (host aware)",
                            ))
                        }
                    };
                    set(&mut o.model, m, "model-")?;
                }
                "lba" => {
                    let n: u32 = number(option, value)?;
                    if n != 512 && n != 4096 {
                        return Err(bad(option, "the logical block size is 512 or 4096 bytes"));
                    }
                    set(&mut o.lba_size, n, "lba-")?;
                }
                "zsize" => {
                    let n: u64 = number(option, value)?;
                    if n == 0 || !n.is_power_of_two() || n > MAX_ZONE_MIB {
                        return Err(bad(
                            option,
                            "the zone size is a power of two of MiB, from 1 to 1048576",
                        ));
                    }
                    set(&mut o.zone_mib, n, "zsize-")?;
                }
                "conv" => {
                    let n: u32 = number(option, value)?;
                    set(&mut o.conv, n, "conv-")?;
                }
                "open" => {
                    let n: u32 = number(option, value)?;
                    if n == 0 {
                        return Err(bad(option, "at least one zone must be allowed open"));
                    }
                    set(&mut o.open, n, "open-")?;
                }
                "readonly" => o.read_only.push(zones(option, value)?),
                "offline" => o.offline.push(zones(option, value)?),
                _ => return Err(ConfigError::UnknownOption(option.to_owned())),
            }
        }
        Ok(o)
    }
}

impl ZbcConfig {
    /// Parses a cfgstring (the part after `zbc/`), without looking at the
    /// file system.
    pub fn parse(cfgstring: &str) -> Result<Self, ConfigError> {
        let cfg = cfgstring.trim_end_matches('\n');
        let (options, path) = if cfg.starts_with('/') {
            (ZbcOptions::default(), cfg)
        } else if let Some((opts, path)) = cfg.split_once('@') {
            (ZbcOptions::parse(opts)?, path)
        } else if cfg.is_empty() {
            return Err(ConfigError::NoPath);
        } else {
            // No '@': either a relative path or options without a path;
            // name the options if they parse as such.
            return match ZbcOptions::parse(cfg) {
                Ok(_) => Err(ConfigError::NoAt(cfg.to_owned())),
                Err(ConfigError::UnknownOption(_)) => {
                    Err(ConfigError::NotAbsolute(PathBuf::from(cfg)))
                }
                Err(e) => Err(e),
            };
        };
        if path.is_empty() {
            return Err(ConfigError::NoPath);
        }
        let path = Path::new(path);
        if !path.is_absolute() {
            return Err(ConfigError::NotAbsolute(path.to_owned()));
        }
        Ok(Self {
            path: path.to_owned(),
            options,
        })
    }

    /// Parses a cfgstring and checks its path: an absolute path in an
    /// existing directory, a regular file if it exists. Creates nothing.
    pub fn check(cfgstring: &str) -> Result<Self, ConfigError> {
        let cfg = Self::parse(cfgstring)?;
        if let Some(dir) = cfg.path.parent() {
            match fs::metadata(dir) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => return Err(ConfigError::NoDirectory(dir.to_owned())),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(ConfigError::NoDirectory(dir.to_owned()))
                }
                Err(source) => {
                    return Err(ConfigError::Access {
                        path: dir.to_owned(),
                        source,
                    })
                }
            }
        }
        match fs::metadata(&cfg.path) {
            Ok(m) if m.is_file() => Ok(cfg),
            Ok(_) => Err(ConfigError::NotAFile(cfg.path)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(cfg),
            Err(source) => Err(ConfigError::Access {
                path: cfg.path,
                source,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn err(cfg: &str) -> String {
        ZbcConfig::parse(cfg).unwrap_err().to_string()
    }

    #[test]
    fn plain_path_and_defaults() {
        let c = ZbcConfig::parse("/var/lib/zbc.raw").unwrap();
        assert_eq!(c.path, Path::new("/var/lib/zbc.raw"));
        assert_eq!(c.options, ZbcOptions::default());
        assert!(!c.options.format_given());
        // '@' with no options, as tcmu-runner accepts it.
        let c = ZbcConfig::parse("@/var/lib/zbc.raw").unwrap();
        assert_eq!(c.options, ZbcOptions::default());
        // A path holding '@' needs no options to be taken whole.
        let c = ZbcConfig::parse("/var/a@b.raw").unwrap();
        assert_eq!(c.path, Path::new("/var/a@b.raw"));
    }

    #[test]
    fn every_option() {
        let c = ZbcConfig::parse(
            "model-HA/lba-4096/zsize-64/conv-0/open-12/readonly-3/offline-5-7/readonly-9@/z.raw",
        )
        .unwrap();
        let o = &c.options;
        assert_eq!(o.model, Some(ZonedModel::HostAware));
        assert_eq!(o.lba_size, Some(4096));
        assert_eq!(o.zone_mib, Some(64));
        assert_eq!(o.conv, Some(0));
        assert_eq!(o.open, Some(12));
        assert_eq!(o.read_only, vec![3..=3, 9..=9]);
        assert_eq!(o.offline, vec![5..=7]);
        assert!(o.format_given());
        let c = ZbcConfig::parse("model-HM/@/z.raw").unwrap();
        assert_eq!(c.options.model, Some(ZonedModel::HostManaged));
        let c = ZbcConfig::parse("readonly-2@/z.raw").unwrap();
        assert!(!c.options.format_given());
    }

    #[test]
    fn refusals_name_the_option() {
        assert_eq!(
            err("model-XX@/z"),
            "zbc handler: option 'model-XX': the model is HM (host managed) or HA (host aware)"
        );
        assert!(err("lba-1024@/z").contains("'lba-1024'"));
        assert!(err("lba-512x@/z").contains("'lba-512x': not a decimal number"));
        assert!(err("zsize-3@/z").contains("'zsize-3': the zone size is a power of two"));
        assert!(err("zsize-0@/z").contains("'zsize-0'"));
        assert!(err("zsize-2097152@/z").contains("'zsize-2097152'"));
        assert!(err("open-0@/z").contains("'open-0'"));
        assert!(err("conv--1@/z").contains("'conv--1'"));
        assert!(err("conv-99999999999@/z").contains("number too large"));
        assert!(err("offline-5-3@/z").contains("reversed"));
        assert_eq!(
            err("speed-9@/z"),
            "zbc handler: unknown option 'speed-9' (known: model-, lba-, zsize-, conv-, open-, readonly-, offline-)"
        );
        assert!(err("model@/z").contains("unknown option 'model'"));
        assert_eq!(
            err("model-HM/model-HA@/z"),
            "zbc handler: option 'model-' is given twice"
        );
        assert_eq!(
            err("model-HM/zsize-4"),
            "zbc handler: options 'model-HM/zsize-4' are not followed by '@' and the backing file's path"
        );
        assert_eq!(err("model-HM@"), err(""));
        assert_eq!(err("zbc.raw"), "zbc handler: path zbc.raw is not absolute");
        assert_eq!(
            err("model-HM@z.raw"),
            "zbc handler: path z.raw is not absolute"
        );
    }

    #[test]
    fn checks_the_path() {
        let msg = ZbcConfig::check("/no/such/dir/z.raw")
            .unwrap_err()
            .to_string();
        assert_eq!(msg, "zbc handler: directory /no/such/dir does not exist");
        let dir = std::env::temp_dir();
        let msg = ZbcConfig::check(dir.to_str().unwrap())
            .unwrap_err()
            .to_string();
        assert!(msg.contains("is not a regular file"), "{msg}");
        let missing = dir.join(format!("tcmu-zbc-check-{}.raw", std::process::id()));
        ZbcConfig::check(missing.to_str().unwrap()).unwrap();
        assert!(!missing.exists(), "checking creates nothing");
    }
}
