//! The `qcow` handler's configuration string: the image's path.
//!
//! tcmu-runner's format: `dev_config=qcow//var/lib/vm.qcow2` gives the
//! cfgstring `/var/lib/vm.qcow2`. The image must exist (the handler does
//! not create images: `qemu-img create -f qcow2` does) and start with a
//! qcow2 header, version 2 or 3, with a valid cluster size. Checking reads
//! the header's first 24 bytes and changes nothing.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// The four bytes every qcow and qcow2 image starts with: `QFI\xfb`.
const QCOW_MAGIC: [u8; 4] = *b"QFI\xfb";

/// The header bytes read: magic, version, backing file offset and size,
/// cluster_bits (big-endian u32 at byte 20).
const HEADER_LEN: usize = 24;

/// The cluster sizes qcow2 allows: 512 bytes to 2 MiB (cluster_bits 9–21).
const CLUSTER_BITS: std::ops::RangeInclusive<u32> = 9..=21;

/// Why a `qcow` cfgstring was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// No path at all (`qcow/`).
    #[error("qcow handler: no image path given (expected qcow//path/to/image.qcow2)")]
    Empty,
    /// A relative path: the daemon's working directory is meaningless.
    #[error("qcow handler: path {0} is not absolute")]
    NotAbsolute(PathBuf),
    /// Nothing at the path.
    #[error("qcow handler: image {0} does not exist (create it with qemu-img create -f qcow2)")]
    Missing(PathBuf),
    /// The path is a directory, device, socket…
    #[error("qcow handler: {0} is not a regular file")]
    WrongType(PathBuf),
    /// The file does not start with the qcow magic.
    #[error("qcow handler: {0} is not a qcow2 image")]
    NotQcow(PathBuf),
    /// A qcow header of a version imago cannot serve.
    #[error("qcow handler: {path} is a qcow version {version} image; only qcow2 (versions 2 and 3) is supported")]
    Version {
        /// The image.
        path: PathBuf,
        /// The version its header gives.
        version: u32,
    },
    /// Opening or reading the file failed (permissions, I/O).
    #[error("qcow handler: cannot read {path}")]
    Access {
        /// The image.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// A checked `qcow` cfgstring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QcowConfig {
    /// The image's absolute path.
    pub path: PathBuf,
    /// The qcow2 version in its header (2 or 3).
    pub version: u32,
    /// The image's cluster size in bytes (allocation and discard unit).
    pub cluster_size: u64,
}

impl QcowConfig {
    /// Checks a cfgstring (the part after `qcow/`) against the filesystem.
    pub fn check(cfgstring: &str) -> Result<Self, ConfigError> {
        if cfgstring.is_empty() {
            return Err(ConfigError::Empty);
        }
        let path = Path::new(cfgstring);
        if !path.is_absolute() {
            return Err(ConfigError::NotAbsolute(path.to_owned()));
        }
        let access = |source| ConfigError::Access {
            path: path.to_owned(),
            source,
        };
        match std::fs::metadata(path) {
            Ok(m) if m.is_file() => {}
            Ok(_) => return Err(ConfigError::WrongType(path.to_owned())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(ConfigError::Missing(path.to_owned()))
            }
            Err(e) => return Err(access(e)),
        }
        let mut header = [0u8; HEADER_LEN];
        match File::open(path).and_then(|mut f| f.read_exact(&mut header)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return Err(ConfigError::NotQcow(path.to_owned()))
            }
            Err(e) => return Err(access(e)),
        }
        if header[..4] != QCOW_MAGIC {
            return Err(ConfigError::NotQcow(path.to_owned()));
        }
        let be32 = |at: usize| {
            u32::from_be_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
        };
        let version = be32(4);
        if !(2..=3).contains(&version) {
            return Err(ConfigError::Version {
                path: path.to_owned(),
                version,
            });
        }
        let cluster_bits = be32(20);
        if !CLUSTER_BITS.contains(&cluster_bits) {
            return Err(ConfigError::NotQcow(path.to_owned()));
        }
        Ok(Self {
            path: path.to_owned(),
            version,
            cluster_size: 1 << cluster_bits,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use std::io::Write;

    fn file_with(bytes: &[u8]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(bytes).unwrap();
        f
    }

    fn check(f: &tempfile::NamedTempFile) -> Result<QcowConfig, ConfigError> {
        QcowConfig::check(f.path().to_str().unwrap())
    }

    /// A qcow2 header's first 24 bytes.
    fn header(version: u8, cluster_bits: u8) -> Vec<u8> {
        let mut h = vec![b'Q', b'F', b'I', 0xfb, 0, 0, 0, version];
        h.extend_from_slice(&[0; 12]);
        h.extend_from_slice(&[0, 0, 0, cluster_bits]);
        h
    }

    #[test]
    fn accepts_qcow2_versions_2_and_3() {
        for version in [2u8, 3] {
            let f = file_with(&header(version, 16));
            let cfg = check(&f).unwrap();
            assert_eq!(cfg.version, u32::from(version));
            assert_eq!(cfg.cluster_size, 65536);
        }
    }

    #[test]
    fn messages_name_the_problem() {
        let msg = |r: Result<QcowConfig, ConfigError>| r.unwrap_err().to_string();
        assert!(msg(QcowConfig::check("")).contains("no image path"));
        assert_eq!(
            msg(QcowConfig::check("vm.qcow2")),
            "qcow handler: path vm.qcow2 is not absolute"
        );
        assert!(msg(QcowConfig::check("/no/such/vm.qcow2")).contains("does not exist"));
        assert!(msg(QcowConfig::check("/tmp")).contains("is not a regular file"));
        let raw = file_with(&[0u8; 512]);
        assert!(msg(check(&raw)).ends_with("is not a qcow2 image"));
        let short = file_with(b"QF");
        assert!(msg(check(&short)).ends_with("is not a qcow2 image"));
        let v1 = file_with(&header(1, 12));
        assert!(msg(check(&v1)).contains("qcow version 1 image"));
        let odd_clusters = file_with(&header(3, 30));
        assert!(msg(check(&odd_clusters)).ends_with("is not a qcow2 image"));
    }
}
