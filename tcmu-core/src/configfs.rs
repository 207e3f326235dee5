//! configfs and module-parameter helpers.
//!
//! Every TCMU backstore has a configfs directory,
//! `/sys/kernel/config/target/core/user_<hba>/<device>/`, through which the
//! kernel exposes its attributes (`attrib/*`), its actions (`action/*`), its
//! state (`enable`, `info`) and its SCSI identity (`wwn/*`,
//! `statistics/scsi_dev/*`). [`DeviceDir`] names one such directory and reads
//! or writes its files; it holds nothing but the path, so it is cheap to
//! clone and never goes stale in a way that matters (a removed device simply
//! makes every call fail with [`ConfigfsError::Read`]/[`ConfigfsError::Write`]).
//!
//! Writes are a single `write(2)` of the whole value, as configfs and sysfs
//! store methods expect; a short write is an error, never retried with the
//! remainder. Reads return the text with surrounding whitespace trimmed.
//!
//! [`set_module_param`] and [`module_param`] do the same for
//! `/sys/module/<module>/parameters/<name>` (e.g. `target_core_user`'s
//! `block_netlink` and `reset_netlink`). Every function that touches a fixed
//! system path has an `_in`/[`DeviceDir::at`] twin taking another root, so
//! the parsing is tested against a fake tree.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Where LIO keeps its backstores in configfs.
pub const CONFIGFS_CORE: &str = "/sys/kernel/config/target/core";

/// Where sysfs exposes loaded modules and their parameters.
pub const SYS_MODULE: &str = "/sys/module";

/// An error reading or writing a configfs or sysfs file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigfsError {
    /// The file could not be read (missing device, missing attribute,
    /// permission).
    #[error("cannot read {}: {source}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: io::Error,
    },
    /// The file could not be written, or the kernel refused the value (the
    /// store method's errno, typically `EINVAL`, is in `source`).
    #[error("cannot write {value:?} to {}: {source}", .path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The value that was being written.
        value: String,
        /// The underlying I/O error.
        #[source]
        source: io::Error,
    },
    /// The file was read but its contents were not what was expected.
    #[error("unexpected contents {value:?} in {}: expected {expected}", .path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the file contained (trimmed).
        value: String,
        /// What was expected instead.
        expected: &'static str,
    },
}

impl ConfigfsError {
    /// The OS error number behind a read or write failure, if any (for
    /// example `EINVAL` when the kernel rejects a written value).
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            Self::Read { source, .. } | Self::Write { source, .. } => source.raw_os_error(),
            Self::Parse { .. } => None,
        }
    }
}

/// How `action/reset_ring` completes the commands still outstanding on the
/// ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum RingResetLevel {
    /// Complete them with SCSI status BUSY, so initiators retry.
    Busy = 1,
    /// Complete them with CHECK CONDITION (a hard failure).
    CheckCondition = 2,
}

/// What a user backstore's configfs `info` file says.
///
/// The file is the generic LIO line (`Status: ACTIVATED  Max Queue Depth:
/// 128  SectorSize: 512  HwMaxSectors: 128`) followed by the TCMU part
/// (`Config: <dev_config> Size: <bytes> MaxDataAreaMB: <n>
/// DataPagesPerBlk: <n> CmdRingSizeMB: <n>`). Fields that older or newer
/// kernels omit are `None`; only `Size` is required.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// `Status:` — whether the device is exported (ACTIVATED) or not.
    pub activated: Option<bool>,
    /// `Max Queue Depth:`.
    pub max_queue_depth: Option<u32>,
    /// `SectorSize:` — the logical block size.
    pub sector_size: Option<u32>,
    /// `HwMaxSectors:`.
    pub hw_max_sectors: Option<u32>,
    /// `Config:` — the device's `dev_config` (`<subtype>/<cfgstring>`);
    /// `None` when the kernel prints `NULL` (no configuration set).
    pub config: Option<String>,
    /// `Size:` — the device size in bytes.
    pub size: u64,
    /// `MaxDataAreaMB:`.
    pub max_data_area_mb: Option<u32>,
    /// `DataPagesPerBlk:` (kernel 5.14 and later).
    pub data_pages_per_blk: Option<u32>,
    /// `CmdRingSizeMB:` (kernel 5.19 and later).
    pub cmd_ring_size_mb: Option<u32>,
}

impl DeviceInfo {
    /// Parses the text of a user backstore's `info` file; `None` when it has
    /// no `Config: … Size: <n>` part.
    pub fn parse(text: &str) -> Option<Self> {
        let config_at = text.find("Config: ")?;
        let (generic, backend) = text.split_at(config_at);
        let backend = backend.strip_prefix("Config: ")?;
        // The cfgstring may contain spaces; what follows it is numeric, so
        // the last " Size: " ends it.
        let size_at = backend.rfind(" Size: ")?;
        let config = backend[..size_at].trim();
        let tail = &backend[size_at + " Size: ".len()..];
        let size = leading_number(tail)?;
        let activated = generic
            .find("Status: ")
            .map(|at| &generic[at + "Status: ".len()..])
            .and_then(|rest| {
                if rest.starts_with("ACTIVATED") {
                    Some(true)
                } else if rest.starts_with("DEACTIVATED") {
                    Some(false)
                } else {
                    None
                }
            });
        Some(Self {
            activated,
            max_queue_depth: number_after(generic, "Max Queue Depth: "),
            sector_size: number_after(generic, "SectorSize: "),
            hw_max_sectors: number_after(generic, "HwMaxSectors: "),
            config: (!config.is_empty() && config != "NULL").then(|| config.to_owned()),
            size,
            max_data_area_mb: number_after(tail, "MaxDataAreaMB: "),
            data_pages_per_blk: number_after(tail, "DataPagesPerBlk: "),
            cmd_ring_size_mb: number_after(tail, "CmdRingSizeMB: "),
        })
    }
}

/// The decimal number at the start of `text`, if any.
fn leading_number<T: std::str::FromStr>(text: &str) -> Option<T> {
    let end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    text[..end].parse().ok()
}

/// The decimal number right after the first `key` in `text`, if any.
fn number_after<T: std::str::FromStr>(text: &str, key: &str) -> Option<T> {
    let at = text.find(key)?;
    leading_number(&text[at + key.len()..])
}

/// Parses an unsigned integer the way the kernel's `kstrtoul(…, 0)` accepts
/// it: decimal, or hexadecimal with a `0x` prefix.
pub(crate) fn parse_kernel_uint(text: &str) -> Option<u64> {
    let text = text.trim();
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

/// Reads a whole text file, tolerating non-UTF-8 bytes.
pub(crate) fn read_text(path: &Path) -> Result<String, ConfigfsError> {
    fs::read(path)
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .map_err(|source| ConfigfsError::Read {
            path: path.to_owned(),
            source,
        })
}

/// Writes `value` to an existing configfs/sysfs file in one `write(2)`.
pub(crate) fn write_text(path: &Path, value: &str) -> Result<(), ConfigfsError> {
    let err = |source| ConfigfsError::Write {
        path: path.to_owned(),
        value: value.to_owned(),
        source,
    };
    let mut file = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .map_err(err)?;
    let written = file.write(value.as_bytes()).map_err(err)?;
    if written == value.len() {
        Ok(())
    } else {
        Err(err(io::Error::new(
            io::ErrorKind::WriteZero,
            format!("short write: {written} of {} bytes", value.len()),
        )))
    }
}

/// One user backstore's configfs directory,
/// `/sys/kernel/config/target/core/user_<hba>/<device>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DeviceDir {
    path: PathBuf,
}

impl DeviceDir {
    /// The directory of device `device` on HBA `user_<hba>`.
    pub fn new(hba: u32, device: &str) -> Self {
        Self {
            path: Path::new(CONFIGFS_CORE)
                .join(format!("user_{hba}"))
                .join(device),
        }
    }

    /// A device directory at an arbitrary path (a fake tree in tests).
    pub fn at(path: PathBuf) -> Self {
        Self { path }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the directory exists (the device has not been removed).
    pub fn exists(&self) -> bool {
        self.path.is_dir()
    }

    /// Reads `<dir>/<rel>`, trimmed.
    fn read(&self, rel: &str) -> Result<String, ConfigfsError> {
        read_text(&self.path.join(rel)).map(|text| text.trim().to_owned())
    }

    /// Writes `value` to `<dir>/<rel>`.
    fn write(&self, rel: &str, value: &str) -> Result<(), ConfigfsError> {
        write_text(&self.path.join(rel), value)
    }

    /// Reads `<dir>/<rel>` as an unsigned number.
    fn read_u64(&self, rel: &str) -> Result<u64, ConfigfsError> {
        let value = self.read(rel)?;
        parse_kernel_uint(&value).ok_or_else(|| ConfigfsError::Parse {
            path: self.path.join(rel),
            value,
            expected: "an unsigned integer",
        })
    }

    /// Reads `<dir>/<rel>` as a `u32`.
    fn read_u32(&self, rel: &str) -> Result<u32, ConfigfsError> {
        let value = self.read_u64(rel)?;
        u32::try_from(value).map_err(|_| ConfigfsError::Parse {
            path: self.path.join(rel),
            value: value.to_string(),
            expected: "a 32-bit unsigned integer",
        })
    }

    /// Blocks (`true`) or unblocks (`false`) the device through
    /// `action/block_dev`: while blocked the kernel puts no new command on
    /// the ring and answers them BUSY instead (initiators retry).
    pub fn block_dev(&self, blocked: bool) -> Result<(), ConfigfsError> {
        self.write("action/block_dev", if blocked { "1" } else { "0" })
    }

    /// Resets the command ring through `action/reset_ring`: outstanding
    /// commands are completed as `level` says and `cmd_head`/`cmd_tail` go
    /// back to 0.
    pub fn reset_ring(&self, level: RingResetLevel) -> Result<(), ConfigfsError> {
        self.write("action/reset_ring", &(level as u8).to_string())
    }

    /// Releases the data buffer of a command completed with
    /// `TCMU_UFLAG_KEEP_BUF`, through `action/free_kept_buf`.
    pub fn free_kept_buf(&self, cmd_id: u16) -> Result<(), ConfigfsError> {
        self.write("action/free_kept_buf", &cmd_id.to_string())
    }

    /// Reads `attrib/<name>`, trimmed.
    pub fn attr(&self, name: &str) -> Result<String, ConfigfsError> {
        self.read(&format!("attrib/{name}"))
    }

    /// Reads `attrib/<name>` as an unsigned number.
    pub fn attr_u64(&self, name: &str) -> Result<u64, ConfigfsError> {
        self.read_u64(&format!("attrib/{name}"))
    }

    /// Writes `attrib/<name>`. For `dev_config`, `dev_size` and
    /// `emulate_write_cache` on an enabled device the kernel first sends a
    /// RECONFIG_DEVICE netlink event and waits for the daemon's reply.
    pub fn set_attr(&self, name: &str, value: &str) -> Result<(), ConfigfsError> {
        self.write(&format!("attrib/{name}"), value)
    }

    /// Writes `key=value[,key=value…]` parameters to `control`
    /// (`dev_config=`, `dev_size=`, `hw_block_size=`, …); only valid before
    /// the device is enabled.
    pub fn control(&self, params: &str) -> Result<(), ConfigfsError> {
        self.write("control", params)
    }

    /// Whether the device is enabled (configured), from `enable`.
    pub fn enabled(&self) -> Result<bool, ConfigfsError> {
        let value = self.read("enable")?;
        match value.as_str() {
            "0" => Ok(false),
            "1" => Ok(true),
            _ => Err(ConfigfsError::Parse {
                path: self.path.join("enable"),
                value,
                expected: "0 or 1",
            }),
        }
    }

    /// Enables the device by writing 1 to `enable`; with netlink replies
    /// supported this blocks until the daemon answers ADDED_DEVICE.
    pub fn enable(&self) -> Result<(), ConfigfsError> {
        self.write("enable", "1")
    }

    /// The device index LIO assigned (`statistics/scsi_dev/indx`); this is
    /// the DEVICE_ID of the TCM-USER netlink messages.
    pub fn dev_index(&self) -> Result<u32, ConfigfsError> {
        self.read_u32("statistics/scsi_dev/indx")
    }

    /// The T10 unit serial number from `wwn/vpd_unit_serial`
    /// (`T10 VPD Unit Serial Number: <serial>`); `None` when it is empty.
    pub fn unit_serial(&self) -> Result<Option<String>, ConfigfsError> {
        const PREFIX: &str = "T10 VPD Unit Serial Number:";
        let value = self.read("wwn/vpd_unit_serial")?;
        match value.strip_prefix(PREFIX) {
            Some(serial) => {
                let serial = serial.trim();
                Ok((!serial.is_empty()).then(|| serial.to_owned()))
            }
            None if value.is_empty() => Ok(None),
            None => Err(ConfigfsError::Parse {
                path: self.path.join("wwn/vpd_unit_serial"),
                value,
                expected: "\"T10 VPD Unit Serial Number: <serial>\"",
            }),
        }
    }

    /// Parses the `info` file.
    pub fn info(&self) -> Result<DeviceInfo, ConfigfsError> {
        let path = self.path.join("info");
        let text = read_text(&path)?;
        DeviceInfo::parse(&text).ok_or_else(|| ConfigfsError::Parse {
            path,
            value: text.trim().to_owned(),
            expected: "\"Config: <cfg> Size: <bytes> …\"",
        })
    }

    /// The device size in bytes, from `info`.
    pub fn dev_size(&self) -> Result<u64, ConfigfsError> {
        self.info().map(|info| info.size)
    }

    /// The block size the backstore reports (`attrib/hw_block_size`).
    pub fn block_size(&self) -> Result<u32, ConfigfsError> {
        self.read_u32("attrib/hw_block_size")
    }

    /// The largest transfer in blocks (`attrib/hw_max_sectors`).
    pub fn max_sectors(&self) -> Result<u32, ConfigfsError> {
        self.read_u32("attrib/hw_max_sectors")
    }

    /// Whether a volatile write cache is reported
    /// (`attrib/emulate_write_cache` non-zero).
    pub fn write_cache(&self) -> Result<bool, ConfigfsError> {
        self.attr_u64("emulate_write_cache").map(|v| v != 0)
    }

    /// The kernel's per-command timeout in seconds (`attrib/cmd_time_out`;
    /// 0 disables it).
    pub fn cmd_time_out(&self) -> Result<u32, ConfigfsError> {
        self.read_u32("attrib/cmd_time_out")
    }
}

/// Writes a module parameter, `/sys/module/<module>/parameters/<name>`.
pub fn set_module_param(module: &str, name: &str, value: &str) -> Result<(), ConfigfsError> {
    set_module_param_in(Path::new(SYS_MODULE), module, name, value)
}

/// Reads a module parameter, `/sys/module/<module>/parameters/<name>`,
/// trimmed.
pub fn module_param(module: &str, name: &str) -> Result<String, ConfigfsError> {
    module_param_in(Path::new(SYS_MODULE), module, name)
}

/// [`set_module_param`] under another sysfs `module` root.
pub fn set_module_param_in(
    root: &Path,
    module: &str,
    name: &str,
    value: &str,
) -> Result<(), ConfigfsError> {
    write_text(&root.join(module).join("parameters").join(name), value)
}

/// [`module_param`] under another sysfs `module` root.
pub fn module_param_in(root: &Path, module: &str, name: &str) -> Result<String, ConfigfsError> {
    read_text(&root.join(module).join("parameters").join(name)).map(|v| v.trim().to_owned())
}

#[cfg(test)]
pub(crate) mod test_util {
    //! A throwaway directory for fake sysfs/configfs trees (std only).
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A unique temporary directory, removed on drop.
    pub(crate) struct TempDir(PathBuf);

    impl TempDir {
        pub(crate) fn new(tag: &str) -> Self {
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let path = std::env::temp_dir().join(format!(
                "tcmu-core-{tag}-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = std::fs::remove_dir_all(&path);
            std::fs::create_dir_all(&path).unwrap();
            Self(path)
        }

        pub(crate) fn path(&self) -> &Path {
            &self.0
        }

        /// Creates `rel` (and its parents) with `contents`.
        pub(crate) fn file(&self, rel: &str, contents: &str) -> PathBuf {
            let path = self.0.join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, contents).unwrap();
            path
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::test_util::TempDir;
    use super::*;

    const INFO_61: &str = "Status: ACTIVATED  Max Queue Depth: 128  SectorSize: 512  \
        HwMaxSectors: 128\n        Config: file//var/tmp/disk 1.img Size: 1073741824 \
        MaxDataAreaMB: 1024 DataPagesPerBlk: 1 CmdRingSizeMB: 8\n";

    fn fake_device(tmp: &TempDir) -> DeviceDir {
        tmp.file("dev/enable", "1\n");
        tmp.file("dev/info", INFO_61);
        tmp.file("dev/attrib/hw_block_size", "4096\n");
        tmp.file("dev/attrib/hw_max_sectors", "128\n");
        tmp.file("dev/attrib/emulate_write_cache", "1\n");
        tmp.file("dev/attrib/cmd_time_out", "30\n");
        tmp.file("dev/attrib/max_data_area_mb", "0x400\n");
        tmp.file("dev/statistics/scsi_dev/indx", "7\n");
        tmp.file(
            "dev/wwn/vpd_unit_serial",
            "T10 VPD Unit Serial Number: 3f8a-11\n",
        );
        tmp.file("dev/action/block_dev", "unblocked\n");
        tmp.file("dev/action/reset_ring", "");
        tmp.file("dev/control", "");
        DeviceDir::at(tmp.path().join("dev"))
    }

    #[test]
    fn new_builds_the_configfs_path() {
        let dir = DeviceDir::new(3, "disk0");
        assert_eq!(
            dir.path(),
            Path::new("/sys/kernel/config/target/core/user_3/disk0")
        );
    }

    #[test]
    fn reads_attributes() {
        let tmp = TempDir::new("cfs-read");
        let dev = fake_device(&tmp);
        assert!(dev.exists());
        assert!(dev.enabled().unwrap());
        assert_eq!(dev.block_size().unwrap(), 4096);
        assert_eq!(dev.max_sectors().unwrap(), 128);
        assert!(dev.write_cache().unwrap());
        assert_eq!(dev.cmd_time_out().unwrap(), 30);
        assert_eq!(dev.attr("hw_block_size").unwrap(), "4096");
        assert_eq!(dev.attr_u64("max_data_area_mb").unwrap(), 1024);
        assert_eq!(dev.dev_index().unwrap(), 7);
        assert_eq!(dev.unit_serial().unwrap().as_deref(), Some("3f8a-11"));
        assert_eq!(dev.dev_size().unwrap(), 1 << 30);
    }

    #[test]
    fn writes_actions_and_attributes() {
        let tmp = TempDir::new("cfs-write");
        let dev = fake_device(&tmp);
        dev.block_dev(true).unwrap();
        assert_eq!(dev.read("action/block_dev").unwrap(), "1");
        dev.block_dev(false).unwrap();
        assert_eq!(dev.read("action/block_dev").unwrap(), "0");
        dev.reset_ring(RingResetLevel::Busy).unwrap();
        assert_eq!(dev.read("action/reset_ring").unwrap(), "1");
        dev.reset_ring(RingResetLevel::CheckCondition).unwrap();
        assert_eq!(dev.read("action/reset_ring").unwrap(), "2");
        dev.set_attr("cmd_time_out", "0").unwrap();
        assert_eq!(dev.cmd_time_out().unwrap(), 0);
        dev.control("dev_size=1048576,dev_config=file//x").unwrap();
        assert_eq!(
            dev.read("control").unwrap(),
            "dev_size=1048576,dev_config=file//x"
        );
    }

    #[test]
    fn missing_files_are_errors_with_the_path() {
        let tmp = TempDir::new("cfs-missing");
        let dev = fake_device(&tmp);
        let err = dev.attr("nope").unwrap_err();
        assert!(matches!(err, ConfigfsError::Read { .. }));
        assert!(err.to_string().contains("attrib/nope"), "{err}");
        assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
        // Writing never creates a file that is not there.
        let err = dev.set_attr("nope", "1").unwrap_err();
        assert!(matches!(err, ConfigfsError::Write { .. }));
        assert!(!dev.path().join("attrib/nope").exists());
        let err = dev.free_kept_buf(3).unwrap_err();
        assert!(err.to_string().contains("free_kept_buf"), "{err}");
    }

    #[test]
    fn bad_contents_are_parse_errors() {
        let tmp = TempDir::new("cfs-bad");
        let dev = fake_device(&tmp);
        tmp.file("dev/attrib/hw_block_size", "lots\n");
        let err = dev.block_size().unwrap_err();
        assert!(matches!(err, ConfigfsError::Parse { .. }), "{err}");
        tmp.file("dev/attrib/hw_max_sectors", "4294967296\n");
        assert!(matches!(
            dev.max_sectors().unwrap_err(),
            ConfigfsError::Parse { .. }
        ));
        tmp.file("dev/enable", "maybe\n");
        assert!(matches!(
            dev.enabled().unwrap_err(),
            ConfigfsError::Parse { .. }
        ));
        tmp.file("dev/info", "Status: DEACTIVATED  Max Queue Depth: 0\n");
        assert!(matches!(
            dev.info().unwrap_err(),
            ConfigfsError::Parse { .. }
        ));
        tmp.file("dev/wwn/vpd_unit_serial", "garbage\n");
        assert!(matches!(
            dev.unit_serial().unwrap_err(),
            ConfigfsError::Parse { .. }
        ));
    }

    #[test]
    fn empty_unit_serial_is_none() {
        let tmp = TempDir::new("cfs-serial");
        let dev = fake_device(&tmp);
        tmp.file("dev/wwn/vpd_unit_serial", "T10 VPD Unit Serial Number: \n");
        assert_eq!(dev.unit_serial().unwrap(), None);
        tmp.file("dev/wwn/vpd_unit_serial", "");
        assert_eq!(dev.unit_serial().unwrap(), None);
    }

    #[test]
    fn info_of_a_6_1_kernel() {
        let info = DeviceInfo::parse(INFO_61).unwrap();
        assert_eq!(
            info,
            DeviceInfo {
                activated: Some(true),
                max_queue_depth: Some(128),
                sector_size: Some(512),
                hw_max_sectors: Some(128),
                config: Some("file//var/tmp/disk 1.img".into()),
                size: 1 << 30,
                max_data_area_mb: Some(1024),
                data_pages_per_blk: Some(1),
                cmd_ring_size_mb: Some(8),
            }
        );
    }

    #[test]
    fn info_of_older_kernels_and_unconfigured_devices() {
        let old = "Status: DEACTIVATED  Max Queue Depth: 0  SectorSize: 512  \
            HwMaxSectors: 128\n        Config: NULL Size: 0 MaxDataAreaMB: 8\n";
        let info = DeviceInfo::parse(old).unwrap();
        assert_eq!(info.activated, Some(false));
        assert_eq!(info.config, None);
        assert_eq!(info.size, 0);
        assert_eq!(info.max_data_area_mb, Some(8));
        assert_eq!(info.data_pages_per_blk, None);
        assert_eq!(info.cmd_ring_size_mb, None);

        let oldest = "Config: rbd/pool/img Size: 4096\n";
        let info = DeviceInfo::parse(oldest).unwrap();
        assert_eq!(info.activated, None);
        assert_eq!(info.config.as_deref(), Some("rbd/pool/img"));
        assert_eq!(info.size, 4096);

        assert_eq!(DeviceInfo::parse("Config: x Size: big"), None);
        assert_eq!(DeviceInfo::parse(""), None);
    }

    #[test]
    fn kernel_uints() {
        assert_eq!(parse_kernel_uint("0x1000\n"), Some(4096));
        assert_eq!(parse_kernel_uint("0X10"), Some(16));
        assert_eq!(parse_kernel_uint(" 42 "), Some(42));
        assert_eq!(parse_kernel_uint("0x"), None);
        assert_eq!(parse_kernel_uint("-1"), None);
    }

    #[test]
    fn module_params() {
        let tmp = TempDir::new("cfs-modparam");
        tmp.file("target_core_user/parameters/block_netlink", "unblocked\n");
        assert_eq!(
            module_param_in(tmp.path(), "target_core_user", "block_netlink").unwrap(),
            "unblocked"
        );
        set_module_param_in(tmp.path(), "target_core_user", "block_netlink", "1").unwrap();
        assert_eq!(
            module_param_in(tmp.path(), "target_core_user", "block_netlink").unwrap(),
            "1"
        );
        let err =
            set_module_param_in(tmp.path(), "target_core_user", "reset_netlink", "1").unwrap_err();
        assert!(err.to_string().contains("reset_netlink"), "{err}");
    }
}
