//! The `fbo` handler's configuration string, tcmu-runner's:
//! `dev_config=fbo/[ro/]<path>`, so the cfgstring is `[ro/]<path>`:
//! `/srv/iso/debian.iso` or `ro//srv/iso/debian.iso`.
//!
//! The options come before the path, each followed by `/`; the path is
//! absolute (it starts with the `/` that ends the options). The one option
//! is `ro` (any case): a DVD-ROM drive with a DVD-ROM disc, the file
//! opened read-only. Without it the drive is a DVD-RAM drive and the disc
//! a writable DVD-RAM disc.
//!
//! Checking creates nothing: the path's directory must exist, and if the
//! path exists it must be a regular file or a block device (symbolic links
//! are followed). A missing file is created when the device opens, as
//! tcmu-runner does; with `ro/` it must exist (an empty read-only disc
//! would be of no use).

use std::fs;
use std::io;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

/// What targetcli shows as the cfgstring's format.
pub const CFG_DESC: &str =
    "[ro/]PATH: the file (or block device) holding the disc, created if missing; \
     with ro/ a DVD-ROM drive serving an existing image (an ISO) read-only, \
     without it a DVD-RAM drive and disc";

/// Why an `fbo` cfgstring was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// Nothing at all (`fbo/`).
    #[error("fbo handler: no file path given (expected fbo/[ro/]/path/to/file)")]
    Empty,
    /// Options but no path after them.
    #[error(
        "fbo handler: '{0}': no file path after the options (expected fbo/[ro/]/path/to/file)"
    )]
    NoPath(String),
    /// An option this handler does not have.
    #[error("fbo handler: unknown option '{0}' (the only option is ro/)")]
    UnknownOption(String),
    /// The directory that would hold the file is missing.
    #[error("fbo handler: directory {0} does not exist")]
    NoDirectory(PathBuf),
    /// The would-be directory is something else.
    #[error("fbo handler: {0} is not a directory")]
    NotADirectory(PathBuf),
    /// The path exists but is a directory, socket, FIFO…
    #[error("fbo handler: {0} is not a regular file or a block device")]
    WrongType(PathBuf),
    /// `ro/` with no image to serve.
    #[error("fbo handler: {0} does not exist: a read-only (ro/) disc needs an existing image")]
    ReadOnlyMissing(PathBuf),
    /// `stat` failed for another reason (permissions, I/O).
    #[error("fbo handler: cannot access {path}")]
    Access {
        /// The path that could not be examined.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// What is at the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backing {
    /// A regular file.
    RegularFile,
    /// A block device.
    BlockDevice,
    /// Nothing yet: opening creates a regular file.
    Missing,
}

/// A parsed `fbo` cfgstring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FboConfig {
    /// `ro/`: a DVD-ROM drive and disc, the file opened read-only.
    pub read_only: bool,
    /// The disc's absolute path.
    pub path: PathBuf,
}

impl FboConfig {
    /// Parses a cfgstring (what follows `fbo/`), without looking at the
    /// file system.
    pub fn parse(cfgstring: &str) -> Result<Self, ConfigError> {
        if cfgstring.is_empty() {
            return Err(ConfigError::Empty);
        }
        let mut rest = cfgstring;
        let mut read_only = false;
        while !rest.starts_with('/') {
            let Some((option, after)) = rest.split_once('/') else {
                return Err(ConfigError::NoPath(cfgstring.to_owned()));
            };
            if option.eq_ignore_ascii_case("ro") {
                read_only = true;
            } else {
                return Err(ConfigError::UnknownOption(option.to_owned()));
            }
            rest = after;
        }
        if rest.len() == 1 {
            return Err(ConfigError::NoPath(cfgstring.to_owned()));
        }
        Ok(Self {
            read_only,
            path: PathBuf::from(rest),
        })
    }

    /// Parses a cfgstring and checks its path against the file system;
    /// returns what is there.
    pub fn check(cfgstring: &str) -> Result<(Self, Backing), ConfigError> {
        let cfg = Self::parse(cfgstring)?;
        let backing = backing(&cfg.path)?;
        if cfg.read_only && backing == Backing::Missing {
            return Err(ConfigError::ReadOnlyMissing(cfg.path));
        }
        Ok((cfg, backing))
    }
}

/// What is at `path` (whose directory must exist).
fn backing(path: &Path) -> Result<Backing, ConfigError> {
    if let Some(dir) = path.parent() {
        match fs::metadata(dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(ConfigError::NotADirectory(dir.to_owned())),
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
    match fs::metadata(path) {
        Ok(m) if m.file_type().is_file() => Ok(Backing::RegularFile),
        Ok(m) if m.file_type().is_block_device() => Ok(Backing::BlockDevice),
        Ok(_) => Err(ConfigError::WrongType(path.to_owned())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Backing::Missing),
        Err(source) => Err(ConfigError::Access {
            path: path.to_owned(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn parse(s: &str) -> Result<(bool, String), String> {
        FboConfig::parse(s)
            .map(|c| (c.read_only, c.path.display().to_string()))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn tcmu_runners_format() {
        assert_eq!(
            parse("/srv/iso/d.iso"),
            Ok((false, "/srv/iso/d.iso".into()))
        );
        assert_eq!(
            parse("ro//srv/iso/d.iso"),
            Ok((true, "/srv/iso/d.iso".into()))
        );
        assert_eq!(parse("RO//x"), Ok((true, "/x".into())));
        assert_eq!(parse("ro/ro//x"), Ok((true, "/x".into())));
    }

    #[test]
    fn refusals() {
        assert_eq!(
            parse(""),
            Err("fbo handler: no file path given (expected fbo/[ro/]/path/to/file)".into())
        );
        assert_eq!(
            parse("rw//x"),
            Err("fbo handler: unknown option 'rw' (the only option is ro/)".into())
        );
        assert!(parse("ro/")
            .unwrap_err()
            .contains("no file path after the options"));
        assert!(parse("ro").unwrap_err().contains("no file path"));
        assert!(parse("/").unwrap_err().contains("no file path"));
        assert!(parse("relative/x")
            .unwrap_err()
            .contains("unknown option 'relative'"));
    }

    #[test]
    fn the_file_system() {
        let dir = std::env::temp_dir();
        let missing = dir.join(format!("tcmu-fbo-config-{}.iso", std::process::id()));
        let m = missing.display();
        assert_eq!(
            FboConfig::check(&format!("{m}")).unwrap().1,
            Backing::Missing
        );
        let e = FboConfig::check(&format!("ro/{m}"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("needs an existing image"), "{e}");
        let e = FboConfig::check("/no/such/dir/x.iso")
            .unwrap_err()
            .to_string();
        assert_eq!(e, "fbo handler: directory /no/such/dir does not exist");
        let e = FboConfig::check(&format!("ro/{}", dir.display())).unwrap_err();
        assert!(matches!(e, ConfigError::WrongType(_)));
        assert_eq!(FboConfig::check("/dev/null").map(|c| c.1).ok(), None);
    }
}
