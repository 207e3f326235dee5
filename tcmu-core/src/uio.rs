//! UIO discovery: which `/sys/class/uio/uioN` devices are TCMU backstores.
//!
//! `target_core_user` registers one UIO device per enabled backstore and
//! names it `tcm-user/<hba>/<device>/<subtype>/<cfgstring>` (or
//! `tcm-user/<hba>/<device>` when no `dev_config` is set). Its single memory
//! map, map0, is the mailbox, command ring and data area; sysfs reports its
//! size in hex in `maps/map0/size`.
//!
//! This module only reads sysfs: [`list_tcmu_devices`] scans for TCMU
//! devices (at start-up, to recover devices created before the daemon), and
//! [`find_by_minor`] looks up the device a netlink event names. Opening
//! `/dev/uioN` and mapping map0 belong to [`crate::doorbell`] and
//! [`crate::mmap`]. The `_in` variants take another sysfs root so the
//! parsing is tested against a fake tree.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::configfs::{self, DeviceDir};

/// Where sysfs lists UIO devices.
pub const SYSFS_UIO: &str = "/sys/class/uio";

/// The prefix of every TCMU UIO device name.
pub const NAME_PREFIX: &str = "tcm-user/";

/// An error discovering or describing a UIO device.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UioError {
    /// A sysfs file or directory could not be read.
    #[error("cannot read {}: {source}", .path.display())]
    Read {
        /// The file or directory.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: io::Error,
    },
    /// A UIO name is not of the form `tcm-user/<hba>/<device>[/<config>]`.
    #[error("UIO name {name:?} is not a TCMU device name: {reason}")]
    BadName {
        /// The name as read.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A sysfs file had unexpected contents.
    #[error("unexpected contents {value:?} in {}: expected {expected}", .path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What it contained (trimmed).
        value: String,
        /// What was expected instead.
        expected: &'static str,
    },
    /// A directory that should be `.../uioN` is named otherwise.
    #[error("{} is not a UIO device directory (expected a name like uio0)", .path.display())]
    BadDir {
        /// The directory.
        path: PathBuf,
    },
    /// No UIO device has this minor number.
    #[error("no UIO device with minor {minor} under {}", .root.display())]
    NotFound {
        /// The minor looked for.
        minor: u32,
        /// The sysfs directory searched.
        root: PathBuf,
    },
}

/// A parsed TCMU UIO device name,
/// `tcm-user/<hba>/<device>/<subtype>/<cfgstring>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TcmuName {
    /// The HBA number N of the configfs directory `user_N`.
    pub hba: u32,
    /// The device (configfs directory) name.
    pub device: String,
    /// The whole `dev_config`, `<subtype>/<cfgstring>` (e.g.
    /// `file//var/lib/disk.img`); empty when none was set.
    pub dev_config: String,
    /// The handler subtype, the part of `dev_config` before the first `/`
    /// (e.g. `file`); empty when `dev_config` is.
    pub subtype: String,
    /// The handler's cfgstring, the part of `dev_config` after
    /// `<subtype>/` (e.g. `/var/lib/disk.img`); may be empty.
    pub handler_config: String,
}

impl TcmuName {
    /// The device's configfs directory.
    pub fn configfs(&self) -> DeviceDir {
        DeviceDir::new(self.hba, &self.device)
    }
}

/// Parses a UIO device name `tcm-user/<hba>/<device>[/<subtype>/<cfgstring>]`.
pub fn parse_uio_name(name: &str) -> Result<TcmuName, UioError> {
    let bad = |reason| UioError::BadName {
        name: name.to_owned(),
        reason,
    };
    let rest = name
        .strip_prefix(NAME_PREFIX)
        .ok_or_else(|| bad("it does not start with \"tcm-user/\""))?;
    let mut parts = rest.splitn(3, '/');
    let hba = parts
        .next()
        .and_then(|hba| {
            // u32::from_str accepts a leading '+'; the kernel prints digits only.
            (!hba.is_empty() && hba.bytes().all(|b| b.is_ascii_digit()))
                .then(|| hba.parse::<u32>().ok())
                .flatten()
        })
        .ok_or_else(|| bad("the HBA number is not a decimal u32"))?;
    let device = parts
        .next()
        .filter(|device| !device.is_empty())
        .ok_or_else(|| bad("the device name is missing"))?;
    let dev_config = parts.next().unwrap_or("");
    let (subtype, handler_config) = dev_config.split_once('/').unwrap_or((dev_config, ""));
    Ok(TcmuName {
        hba,
        device: device.to_owned(),
        dev_config: dev_config.to_owned(),
        subtype: subtype.to_owned(),
        handler_config: handler_config.to_owned(),
    })
}

/// A TCMU UIO device as sysfs describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UioDevice {
    /// N of `uioN`, which is also the UIO minor number.
    pub index: u32,
    /// The parsed name.
    pub name: TcmuName,
    /// The name exactly as sysfs gives it (without the trailing newline).
    pub raw_name: String,
    /// The size in bytes of map0 (mailbox, command ring and data area).
    pub map_size: u64,
    /// The device's sysfs directory, e.g. `/sys/class/uio/uio0`.
    pub sysfs: PathBuf,
}

/// Reads a sysfs attribute, dropping the one trailing newline sysfs adds.
fn read_attr(path: &Path) -> Result<String, UioError> {
    let bytes = fs::read(path).map_err(|source| UioError::Read {
        path: path.to_owned(),
        source,
    })?;
    let mut text = String::from_utf8_lossy(&bytes).into_owned();
    if text.ends_with('\n') {
        text.pop();
    }
    Ok(text)
}

/// N of a `uioN` directory name.
fn uio_index(dir_name: &str) -> Option<u32> {
    let digits = dir_name.strip_prefix("uio")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Whether an error means the device disappeared while being read.
fn vanished(err: &UioError) -> bool {
    matches!(err, UioError::Read { source, .. } if source.kind() == io::ErrorKind::NotFound)
}

impl UioDevice {
    /// Describes the UIO device whose sysfs directory is `dir` (e.g.
    /// `/sys/class/uio/uio0`): reads `name` and `maps/map0/size`.
    pub fn from_sysfs(dir: &Path) -> Result<Self, UioError> {
        let index = dir
            .file_name()
            .and_then(|name| name.to_str())
            .and_then(uio_index)
            .ok_or_else(|| UioError::BadDir {
                path: dir.to_owned(),
            })?;
        let raw_name = read_attr(&dir.join("name"))?;
        let name = parse_uio_name(&raw_name)?;
        let size_path = dir.join("maps/map0/size");
        let size_text = read_attr(&size_path)?;
        let map_size = configfs::parse_kernel_uint(&size_text).ok_or_else(|| UioError::Parse {
            path: size_path,
            value: size_text.trim().to_owned(),
            expected: "a size such as 0x40800000",
        })?;
        Ok(Self {
            index,
            name,
            raw_name,
            map_size,
            sysfs: dir.to_owned(),
        })
    }

    /// The character device, `/dev/uioN`.
    pub fn dev_path(&self) -> PathBuf {
        PathBuf::from(format!("/dev/uio{}", self.index))
    }

    /// The device's configfs directory.
    pub fn configfs(&self) -> DeviceDir {
        self.name.configfs()
    }
}

/// Every TCMU device in `/sys/class/uio`, sorted by index. Empty when the
/// UIO class does not exist (the `uio` module is not loaded).
pub fn list_tcmu_devices() -> Result<Vec<UioDevice>, UioError> {
    list_tcmu_devices_in(Path::new(SYSFS_UIO))
}

/// [`list_tcmu_devices`] under another root. UIO devices that are not TCMU
/// devices are skipped, and so are devices that vanish during the scan.
pub fn list_tcmu_devices_in(root: &Path) -> Result<Vec<UioDevice>, UioError> {
    let read_err = |source| UioError::Read {
        path: root.to_owned(),
        source,
    };
    let entries = match fs::read_dir(root) {
        Ok(entries) => entries,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(read_err(err)),
    };
    let mut devices = Vec::new();
    for entry in entries {
        let entry = entry.map_err(read_err)?;
        let file_name = entry.file_name();
        if file_name.to_str().and_then(uio_index).is_none() {
            continue;
        }
        let dir = entry.path();
        match read_attr(&dir.join("name")) {
            Ok(name) if name.starts_with(NAME_PREFIX) => {}
            Ok(_) => continue,
            Err(err) if vanished(&err) => continue,
            Err(err) => return Err(err),
        }
        match UioDevice::from_sysfs(&dir) {
            Ok(device) => devices.push(device),
            Err(err) if vanished(&err) => continue,
            Err(err) => return Err(err),
        }
    }
    devices.sort_by_key(|device| device.index);
    Ok(devices)
}

/// The TCMU device with UIO minor `minor` (the MINOR of a netlink event).
pub fn find_by_minor(minor: u32) -> Result<UioDevice, UioError> {
    find_by_minor_in(Path::new(SYSFS_UIO), minor)
}

/// [`find_by_minor`] under another root.
pub fn find_by_minor_in(root: &Path, minor: u32) -> Result<UioDevice, UioError> {
    let dir = root.join(format!("uio{minor}"));
    match UioDevice::from_sysfs(&dir) {
        Err(err) if vanished(&err) && !dir.exists() => Err(UioError::NotFound {
            minor,
            root: root.to_owned(),
        }),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::configfs::test_util::TempDir;

    fn fake_uio(tmp: &TempDir, index: u32, name: &str, size: &str) {
        tmp.file(&format!("uio{index}/name"), &format!("{name}\n"));
        tmp.file(&format!("uio{index}/maps/map0/size"), &format!("{size}\n"));
        tmp.file(&format!("uio{index}/version"), "2\n");
    }

    #[test]
    fn parses_full_names() {
        let name = parse_uio_name("tcm-user/1/disk0/file//var/lib/a b.img").unwrap();
        assert_eq!(
            name,
            TcmuName {
                hba: 1,
                device: "disk0".into(),
                dev_config: "file//var/lib/a b.img".into(),
                subtype: "file".into(),
                handler_config: "/var/lib/a b.img".into(),
            }
        );
        assert_eq!(
            name.configfs().path(),
            Path::new("/sys/kernel/config/target/core/user_1/disk0")
        );

        let rbd = parse_uio_name("tcm-user/12/r/rbd/pool/image;osd_op_timeout=30").unwrap();
        assert_eq!(rbd.subtype, "rbd");
        assert_eq!(rbd.handler_config, "pool/image;osd_op_timeout=30");
    }

    #[test]
    fn parses_names_without_config() {
        let name = parse_uio_name("tcm-user/1/d0").unwrap();
        assert_eq!(name.hba, 1);
        assert_eq!(name.device, "d0");
        assert_eq!(name.dev_config, "");
        assert_eq!(name.subtype, "");
        assert_eq!(name.handler_config, "");

        let bare = parse_uio_name("tcm-user/1/d0/ram").unwrap();
        assert_eq!(bare.subtype, "ram");
        assert_eq!(bare.handler_config, "");
    }

    #[test]
    fn rejects_other_names() {
        for bad in [
            "uio_pci_generic",
            "tcm-user",
            "tcm-user/",
            "tcm-user/x/d0",
            "tcm-user/+1/d0",
            "tcm-user/1",
            "tcm-user/1/",
            "tcm-user/99999999999/d0",
            "tcm-userX/1/d0",
        ] {
            let err = parse_uio_name(bad).unwrap_err();
            assert!(matches!(err, UioError::BadName { .. }), "{bad}: {err}");
        }
    }

    #[test]
    fn reads_a_device_from_sysfs() {
        let tmp = TempDir::new("uio-one");
        fake_uio(&tmp, 3, "tcm-user/2/d/file//tmp/x", "0x40800000");
        let dev = UioDevice::from_sysfs(&tmp.path().join("uio3")).unwrap();
        assert_eq!(dev.index, 3);
        assert_eq!(dev.raw_name, "tcm-user/2/d/file//tmp/x");
        assert_eq!(dev.name.hba, 2);
        assert_eq!(dev.map_size, 0x4080_0000);
        assert_eq!(dev.sysfs, tmp.path().join("uio3"));
        assert_eq!(dev.dev_path(), Path::new("/dev/uio3"));
        assert_eq!(
            dev.configfs().path(),
            Path::new("/sys/kernel/config/target/core/user_2/d")
        );
    }

    #[test]
    fn from_sysfs_errors() {
        let tmp = TempDir::new("uio-errors");
        fake_uio(&tmp, 0, "tcm-user/1/d0", "big");
        let err = UioDevice::from_sysfs(&tmp.path().join("uio0")).unwrap_err();
        assert!(matches!(err, UioError::Parse { .. }), "{err}");
        assert!(err.to_string().contains("map0/size"), "{err}");

        tmp.file("uio1/name", "tcm-user/1/d1\n");
        let err = UioDevice::from_sysfs(&tmp.path().join("uio1")).unwrap_err();
        assert!(matches!(err, UioError::Read { .. }), "{err}");

        tmp.file("notuio/name", "tcm-user/1/d1\n");
        let err = UioDevice::from_sysfs(&tmp.path().join("notuio")).unwrap_err();
        assert!(matches!(err, UioError::BadDir { .. }), "{err}");
    }

    #[test]
    fn lists_only_tcmu_devices_in_index_order() {
        let tmp = TempDir::new("uio-list");
        fake_uio(&tmp, 10, "tcm-user/1/b/file//b", "0x1000");
        fake_uio(&tmp, 2, "tcm-user/1/a", "0x2000");
        fake_uio(&tmp, 5, "uio_pci_generic", "0x100");
        tmp.file("README", "not a device\n");
        let devices = list_tcmu_devices_in(tmp.path()).unwrap();
        let seen: Vec<_> = devices
            .iter()
            .map(|d| (d.index, d.name.device.as_str(), d.map_size))
            .collect();
        assert_eq!(seen, [(2, "a", 0x2000), (10, "b", 0x1000)]);
    }

    #[test]
    fn a_missing_uio_class_is_an_empty_list() {
        let tmp = TempDir::new("uio-none");
        let devices = list_tcmu_devices_in(&tmp.path().join("absent")).unwrap();
        assert!(devices.is_empty());
    }

    #[test]
    fn finds_by_minor() {
        let tmp = TempDir::new("uio-minor");
        fake_uio(&tmp, 4, "tcm-user/3/z/ram/", "4096");
        let dev = find_by_minor_in(tmp.path(), 4).unwrap();
        assert_eq!(dev.name.device, "z");
        assert_eq!(dev.map_size, 4096);
        let err = find_by_minor_in(tmp.path(), 5).unwrap_err();
        assert!(matches!(err, UioError::NotFound { minor: 5, .. }), "{err}");
        fake_uio(&tmp, 6, "uio_hv_generic", "4096");
        let err = find_by_minor_in(tmp.path(), 6).unwrap_err();
        assert!(matches!(err, UioError::BadName { .. }), "{err}");
    }
}
