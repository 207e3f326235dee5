//! The `file` handler's configuration string: the backing file's path.
//!
//! tcmu-runner's format: `dev_config=file//var/lib/disk.img` gives the
//! cfgstring `/var/lib/disk.img`. Checking never creates anything: the path
//! must be absolute, its directory must exist, and if the path exists it
//! must be a regular file or a block device (symlinks are followed).

use std::fs;
use std::io;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

/// Why a `file` cfgstring was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// No path at all (`file/`).
    #[error("file handler: no file path given (expected file//path/to/file)")]
    Empty,
    /// A relative path: the daemon's working directory is meaningless.
    #[error("file handler: path {0} is not absolute")]
    NotAbsolute(PathBuf),
    /// The directory that would hold the file is missing.
    #[error("file handler: directory {0} does not exist")]
    NoDirectory(PathBuf),
    /// The would-be directory is something else.
    #[error("file handler: {0} is not a directory")]
    NotADirectory(PathBuf),
    /// The path exists but is a directory, socket, FIFO…
    #[error("file handler: {0} is not a regular file or a block device")]
    WrongType(PathBuf),
    /// `stat` failed for another reason (permissions, I/O).
    #[error("file handler: cannot access {path}")]
    Access {
        /// The path that could not be examined.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// What kind of object backs the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backing {
    /// A regular file (grown to the device size on open).
    RegularFile,
    /// A block device (its size is fixed).
    BlockDevice,
    /// Nothing yet: open creates a regular file.
    Missing,
}

/// A checked `file` cfgstring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileConfig {
    /// The backing file's absolute path.
    pub path: PathBuf,
    /// What is at `path` now.
    pub backing: Backing,
}

impl FileConfig {
    /// Checks a cfgstring (the part after `file/`) against the filesystem.
    pub fn check(cfgstring: &str) -> Result<Self, ConfigError> {
        if cfgstring.is_empty() {
            return Err(ConfigError::Empty);
        }
        let path = Path::new(cfgstring);
        if !path.is_absolute() {
            return Err(ConfigError::NotAbsolute(path.to_owned()));
        }
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
        let backing = match fs::metadata(path) {
            Ok(m) if m.file_type().is_file() => Backing::RegularFile,
            Ok(m) if m.file_type().is_block_device() => Backing::BlockDevice,
            Ok(_) => return Err(ConfigError::WrongType(path.to_owned())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Backing::Missing,
            Err(source) => {
                return Err(ConfigError::Access {
                    path: path.to_owned(),
                    source,
                })
            }
        };
        Ok(Self {
            path: path.to_owned(),
            backing,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn messages_name_the_problem() {
        let msg = FileConfig::check("/no/such/dir/disk.img")
            .unwrap_err()
            .to_string();
        assert_eq!(msg, "file handler: directory /no/such/dir does not exist");

        let msg = FileConfig::check("relative/disk.img")
            .unwrap_err()
            .to_string();
        assert_eq!(msg, "file handler: path relative/disk.img is not absolute");

        let msg = FileConfig::check("").unwrap_err().to_string();
        assert!(msg.contains("no file path"), "{msg}");

        let tmp = std::env::temp_dir();
        let msg = FileConfig::check(tmp.to_str().unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("is not a regular file or a block device"),
            "{msg}"
        );

        let msg = FileConfig::check("/proc/self/status/x")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("is not a directory"), "{msg}");
    }

    #[test]
    fn accepts_missing_files_and_never_creates_them() {
        let path = std::env::temp_dir().join(format!(
            "tcmu-file-check-{}-missing.img",
            std::process::id()
        ));
        let cfg = FileConfig::check(path.to_str().unwrap()).unwrap();
        assert_eq!(cfg.backing, Backing::Missing);
        assert!(!path.exists());
    }

    #[test]
    fn recognises_block_devices_and_files() {
        let cfg = FileConfig::check("/proc/self/exe").unwrap();
        assert_eq!(cfg.backing, Backing::RegularFile);
        if Path::new("/dev/loop0").exists() {
            let cfg = FileConfig::check("/dev/loop0").unwrap();
            assert_eq!(cfg.backing, Backing::BlockDevice);
        }
        // A character device is refused.
        assert!(matches!(
            FileConfig::check("/dev/null"),
            Err(ConfigError::WrongType(_))
        ));
    }
}
