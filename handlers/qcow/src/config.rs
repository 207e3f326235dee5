//! The `qcow` handler's configuration string: the image's path.
//!
//! tcmu-runner's format: `dev_config=qcow//var/lib/vm.qcow2` gives the
//! cfgstring `/var/lib/vm.qcow2`. The image must exist (the handler does
//! not create images: `qemu-img create -f qcow2` (or `-f qcow`) does) and
//! start with a qcow2 header, version 2 or 3, with a valid cluster size, or
//! a qcow version 1 header that is not encrypted (see
//! [`crate::qcow1::header`]). The format is told by the header's magic and
//! version, never by the file name. Checking reads the header (at most 48
//! bytes) and changes nothing.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use crate::qcow1::header::{
    Header, HeaderError, HEADER_LEN as QCOW1_HEADER_LEN, MAGIC as QCOW_MAGIC,
};

/// The qcow2 header bytes read: magic, version, backing file offset and
/// size, cluster_bits (big-endian u32 at byte 20).
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
    #[error("qcow handler: {0} is not a qcow2 or qcow image")]
    NotQcow(PathBuf),
    /// A qcow header of a version no one serves.
    #[error("qcow handler: {path} is a qcow version {version} image; only qcow (version 1) and qcow2 (versions 2 and 3) are supported")]
    Version {
        /// The image.
        path: PathBuf,
        /// The version its header gives.
        version: u32,
    },
    /// A qcow version 1 header that cannot be served (encrypted, bad
    /// geometry).
    #[error("qcow handler: {path} cannot be served")]
    Qcow1 {
        /// The image.
        path: PathBuf,
        /// What is wrong with its header.
        #[source]
        source: HeaderError,
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
    /// The version in its header: 1 (qcow), 2 or 3 (qcow2).
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
        let mut header = Vec::with_capacity(QCOW1_HEADER_LEN);
        File::open(path)
            .and_then(|f| f.take(QCOW1_HEADER_LEN as u64).read_to_end(&mut header))
            .map_err(access)?;
        if header.len() < 8 || header[..4] != QCOW_MAGIC {
            return Err(ConfigError::NotQcow(path.to_owned()));
        }
        let be32 = |at: usize| {
            u32::from_be_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
        };
        let version = be32(4);
        if version == 1 {
            let parsed = Header::parse(&header).map_err(|source| ConfigError::Qcow1 {
                path: path.to_owned(),
                source,
            })?;
            return Ok(Self {
                path: path.to_owned(),
                version,
                cluster_size: parsed.cluster_size(),
            });
        }
        if header.len() < HEADER_LEN {
            return Err(ConfigError::NotQcow(path.to_owned()));
        }
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
        assert!(msg(check(&raw)).ends_with("is not a qcow2 or qcow image"));
        let short = file_with(b"QF");
        assert!(msg(check(&short)).ends_with("is not a qcow2 or qcow image"));
        let v4 = file_with(&header(4, 16));
        assert!(msg(check(&v4)).contains("qcow version 4 image"));
        let odd_clusters = file_with(&header(3, 30));
        assert!(msg(check(&odd_clusters)).ends_with("is not a qcow2 or qcow image"));
    }

    /// A qcow version 1 header: 8 MiB, 4 KiB clusters, `crypt_method`.
    fn v1_header(crypt_method: u32) -> Vec<u8> {
        let mut h = vec![0u8; 48];
        h[..8].copy_from_slice(b"QFI\xfb\0\0\0\x01");
        h[24..32].copy_from_slice(&(8u64 << 20).to_be_bytes());
        h[32] = 12;
        h[33] = 9;
        h[36..40].copy_from_slice(&crypt_method.to_be_bytes());
        h[40..48].copy_from_slice(&48u64.to_be_bytes());
        h
    }

    #[test]
    fn accepts_qcow_version_1_and_refuses_encrypted_ones() {
        let v1 = file_with(&v1_header(0));
        let cfg = check(&v1).unwrap();
        assert_eq!((cfg.version, cfg.cluster_size), (1, 4096));
        let encrypted = file_with(&v1_header(1));
        let e = check(&encrypted).unwrap_err();
        let msg = tcmu_runtime::Report(&e).to_string();
        assert!(
            msg.contains("cannot be served: the image is encrypted (crypt_method 1)"),
            "{msg}"
        );
        let truncated = file_with(&v1_header(0)[..30]);
        let e = check(&truncated).unwrap_err();
        assert!(tcmu_runtime::Report(&e)
            .to_string()
            .contains("truncated (30 of 48 bytes)"));
    }
}
