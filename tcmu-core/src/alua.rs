//! A device's ALUA target port groups, read from configfs, and their state
//! changes written back.
//!
//! LIO keeps a device's target port groups under
//! `/sys/kernel/config/target/core/<hba>/<device>/alua/<group>/` — there is
//! always `default_tg_pt_gp`, which every LUN exporting the device joins when
//! it is created (unless ALUA is passed through to the backstore). Each group
//! directory holds `tg_pt_gp_id` (empty until an ID is set), the state
//! (`alua_access_state`, `alua_access_status`), the access type
//! (`alua_access_type`), the supported states (`alua_support_*`), `preferred`,
//! `implicit_trans_secs`, the delays, and `members`: one line per member LUN,
//! `<fabric>/<wwn>/tpgt_<tag>/lun_<n>`, each followed by a NUL byte.
//!
//! A member's relative target port identifier (what REPORT TARGET PORT
//! GROUPS reports for it) is the `statistics/scsi_port/indx` file of the
//! fabric LUN directory,
//! `/sys/kernel/config/target/<fabric>/<wwn>/tpgt_<tag>/lun/lun_<n>/`
//! (`target_core_stat.c` prints the very RTPI RTPG uses). `members` names
//! iSCSI LUNs with the fabric name `iSCSI` while their directory is `iscsi`;
//! [`read_groups`] looks for the name as given, then in lower case.
//!
//! This module knows nothing of SCSI: the runtime converts each
//! [`GroupInfo`] with an ID into a `tcmu_scsi::alua::PortGroup` (state,
//! supported bits, status and TPGS bits are the wire values; `ports` are the
//! members' [`GroupMember::rtpi`]; `local` when a member's port is
//! [`GroupMember::enabled`]).
//!
//! Writing `alua_access_state` is an implicit transition for LIO: it needs
//! the group's access type to include implicit ALUA, refuses logical block
//! dependent on a group that also allows explicit ALUA, sets the status to
//! "Altered by Implicit ALUA" and queues ASYMMETRIC ACCESS STATE CHANGED unit
//! attentions itself. To mirror a SET TARGET PORT GROUPS, write the state
//! with [`set_access_state`] and then the status
//! [`STATUS_ALTERED_BY_EXPLICIT_STPG`] with [`set_access_status`].

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::configfs::{parse_kernel_uint, read_text, write_text, ConfigfsError, DeviceDir};

/// The group every LUN of the device starts in.
pub const DEFAULT_GROUP: &str = "default_tg_pt_gp";

/// STATUS CODE "no status" (`alua_access_status` "None").
pub const STATUS_NONE: u8 = 0x00;
/// STATUS CODE "altered by explicit STPG".
pub const STATUS_ALTERED_BY_EXPLICIT_STPG: u8 = 0x01;
/// STATUS CODE "altered by implicit ALUA".
pub const STATUS_ALTERED_BY_IMPLICIT_ALUA: u8 = 0x02;

/// Access type bit for implicit ALUA, as in INQUIRY byte 5.
pub const ACCESS_IMPLICIT: u8 = 0x10;
/// Access type bit for explicit ALUA, as in INQUIRY byte 5.
pub const ACCESS_EXPLICIT: u8 = 0x20;

/// The `alua_support_*` files and the SUPPORTED bit each sets (SPC-4 table
/// 306, as LIO defines them).
const SUPPORT_FILES: [(&str, u8); 7] = [
    ("alua_support_transitioning", 0x80),
    ("alua_support_offline", 0x40),
    ("alua_support_lba_dependent", 0x10),
    ("alua_support_unavailable", 0x08),
    ("alua_support_standby", 0x04),
    ("alua_support_active_nonoptimized", 0x02),
    ("alua_support_active_optimized", 0x01),
];

/// One member LUN of a target port group.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GroupMember {
    /// The fabric as `members` names it (`loopback`, `iSCSI`, `vhost`, …).
    pub fabric: String,
    /// The target WWN (`naa.…`, `iqn.…`).
    pub wwn: String,
    /// The target portal group tag.
    pub tpgt: u16,
    /// The LUN number in that portal group.
    pub lun: u64,
    /// Relative target port identifier (`statistics/scsi_port/indx`).
    pub rtpi: u16,
    /// The portal group's `enable`; `None` for fabrics without that file
    /// (tcm_loop).
    pub enabled: Option<bool>,
    /// The fabric LUN directory,
    /// `/sys/kernel/config/target/<fabric>/<wwn>/tpgt_<tag>/lun/lun_<n>`.
    pub lun_dir: PathBuf,
}

/// One target port group of a device, as configfs shows it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GroupInfo {
    /// The directory name under `alua/`.
    pub name: String,
    /// `tg_pt_gp_id`; `None` while no ID is set (LIO then leaves the group
    /// out of REPORT TARGET PORT GROUPS and SET TARGET PORT GROUPS).
    pub id: Option<u16>,
    /// `alua_access_state`: the ASYMMETRIC ACCESS STATE code (0..=4, 0xE,
    /// 0xF).
    pub access_state: u8,
    /// `alua_access_status` as a STATUS CODE (`STATUS_*`).
    pub access_status: u8,
    /// `alua_access_type` as TPGS bits ([`ACCESS_IMPLICIT`] |
    /// [`ACCESS_EXPLICIT`]).
    pub access_type: u8,
    /// The SUPPORTED byte of REPORT TARGET PORT GROUPS, from the
    /// `alua_support_*` files (T_SUP 0x80, O_SUP 0x40, LBD_SUP 0x10, U_SUP
    /// 0x08, S_SUP 0x04, AN_SUP 0x02, AO_SUP 0x01).
    pub supported_states: u8,
    /// `preferred`.
    pub preferred: bool,
    /// `implicit_trans_secs` (0..=255).
    pub implicit_trans_secs: u8,
    /// `nonop_delay_msecs`.
    pub nonop_delay_msecs: u32,
    /// `trans_delay_msecs`.
    pub trans_delay_msecs: u32,
    /// The member LUNs, in `members` order.
    pub members: Vec<GroupMember>,
}

/// Reads every target port group of `dev`: `default_tg_pt_gp` first, then
/// the groups with an ID in ascending ID order, then those without one by
/// name. (LIO lists groups in the order their IDs were set, which configfs
/// does not show; this is the usual order.)
pub fn read_groups(dev: &DeviceDir) -> Result<Vec<GroupInfo>, ConfigfsError> {
    let alua = dev.path().join("alua");
    let entries = fs::read_dir(&alua).map_err(|source| read_error(&alua, source))?;
    let mut groups = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| read_error(&alua, source))?;
        if !entry.path().is_dir() {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        groups.push(read_group(dev, &name)?);
    }
    groups.sort_by(|a, b| {
        let key = |g: &GroupInfo| (g.name != DEFAULT_GROUP, g.id.is_none(), g.id);
        key(a).cmp(&key(b)).then_with(|| a.name.cmp(&b.name))
    });
    Ok(groups)
}

/// Reads the target port group `name` of `dev`.
pub fn read_group(dev: &DeviceDir, name: &str) -> Result<GroupInfo, ConfigfsError> {
    let dir = group_dir(dev, name)?;
    let id_text = read_trimmed(&dir.join("tg_pt_gp_id"))?;
    let id = if id_text.is_empty() {
        None
    } else {
        Some(number(&dir.join("tg_pt_gp_id"), &id_text, u16::MAX.into())? as u16)
    };
    let mut supported_states = 0;
    for (file, bit) in SUPPORT_FILES {
        if read_number(&dir.join(file), 1)? != 0 {
            supported_states |= bit;
        }
    }
    let members_path = dir.join("members");
    let members_text = read_trimmed(&members_path)?;
    let mut members = Vec::new();
    for line in members_text.split(['\n', '\0']) {
        let line = line.trim();
        if !line.is_empty() {
            members.push(read_member(dev, &members_path, line)?);
        }
    }
    Ok(GroupInfo {
        name: name.to_owned(),
        id,
        access_state: read_number(&dir.join("alua_access_state"), 0x0f)? as u8,
        access_status: read_status(&dir.join("alua_access_status"))?,
        access_type: read_access_type(&dir.join("alua_access_type"))?,
        supported_states,
        preferred: read_number(&dir.join("preferred"), 1)? != 0,
        implicit_trans_secs: read_number(&dir.join("implicit_trans_secs"), 255)? as u8,
        nonop_delay_msecs: read_number(&dir.join("nonop_delay_msecs"), u32::MAX.into())? as u32,
        trans_delay_msecs: read_number(&dir.join("trans_delay_msecs"), u32::MAX.into())? as u32,
        members,
    })
}

/// Sets the primary access state of group `name` (an implicit transition
/// for LIO; see the module documentation) by writing `alua_access_state`.
/// The kernel answers `EINVAL` (in [`ConfigfsError::Write`]) when the group
/// has no ID, lacks implicit ALUA or does not support `state`.
pub fn set_access_state(dev: &DeviceDir, name: &str, state: u8) -> Result<(), ConfigfsError> {
    write_text(
        &group_dir(dev, name)?.join("alua_access_state"),
        &state.to_string(),
    )
}

/// Sets the STATUS CODE of group `name` (`STATUS_*`) by writing
/// `alua_access_status`.
pub fn set_access_status(dev: &DeviceDir, name: &str, status: u8) -> Result<(), ConfigfsError> {
    write_text(
        &group_dir(dev, name)?.join("alua_access_status"),
        &status.to_string(),
    )
}

/// Sets (`true`) or clears the secondary offline state of one member's port
/// by writing `alua_tg_pt_offline` in its fabric LUN directory (SET TARGET
/// PORT GROUPS with the offline state names a port by its RTPI).
pub fn set_port_offline(member: &GroupMember, offline: bool) -> Result<(), ConfigfsError> {
    write_text(
        &member.lun_dir.join("alua_tg_pt_offline"),
        if offline { "1" } else { "0" },
    )
}

/// The ID of the logical unit group the device belongs to
/// (`core/alua/lu_gps/<group>/members` lists it as `<hba>/<device>`; every
/// device joins `default_lu_gp`, ID 0, when created), or `None` if it is
/// in none.
pub fn lu_group_id(dev: &DeviceDir) -> Result<Option<u16>, ConfigfsError> {
    let path = dev.path();
    let (Some(name), Some(hba_dir)) = (path.file_name(), path.parent()) else {
        return Ok(None);
    };
    let (Some(hba), Some(core)) = (hba_dir.file_name(), hba_dir.parent()) else {
        return Ok(None);
    };
    let me = format!("{}/{}", hba.to_string_lossy(), name.to_string_lossy());
    let groups = core.join("alua/lu_gps");
    let entries = match fs::read_dir(&groups) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(read_error(&groups, e)),
    };
    for entry in entries {
        let dir = entry.map_err(|e| read_error(&groups, e))?.path();
        let Ok(members) = read_trimmed(&dir.join("members")) else {
            continue;
        };
        if members.split(['\n', '\0']).any(|line| line.trim() == me) {
            return Ok(Some(
                read_number(&dir.join("lu_gp_id"), u64::from(u16::MAX))? as u16,
            ));
        }
    }
    Ok(None)
}

/// `<dev>/alua/<name>`, refusing names that would leave that directory.
fn group_dir(dev: &DeviceDir, name: &str) -> Result<PathBuf, ConfigfsError> {
    let alua = dev.path().join("alua");
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']) {
        return Err(ConfigfsError::Parse {
            path: alua,
            value: name.to_owned(),
            expected: "a target port group name",
        });
    }
    Ok(alua.join(name))
}

/// One `members` line, `<fabric>/<wwn>/tpgt_<tag>/lun_<n>`, with its RTPI
/// and portal group state read from the fabric's configfs tree.
fn read_member(dev: &DeviceDir, members: &Path, line: &str) -> Result<GroupMember, ConfigfsError> {
    let bad = || ConfigfsError::Parse {
        path: members.to_owned(),
        value: line.to_owned(),
        expected: "<fabric>/<wwn>/tpgt_<tag>/lun_<n>",
    };
    let (fabric, rest) = line.split_once('/').ok_or_else(bad)?;
    let (rest, lun) = rest.rsplit_once('/').ok_or_else(bad)?;
    let (wwn, tpgt) = rest.rsplit_once('/').ok_or_else(bad)?;
    let tpgt: u16 = tpgt
        .strip_prefix("tpgt_")
        .and_then(|t| t.parse().ok())
        .ok_or_else(bad)?;
    let lun: u64 = lun
        .strip_prefix("lun_")
        .and_then(|l| l.parse().ok())
        .ok_or_else(bad)?;
    let unsafe_component = |c: &str| c.is_empty() || c == "." || c == "..";
    if unsafe_component(fabric) || wwn.split('/').any(unsafe_component) {
        return Err(bad());
    }
    // core/<hba>/<device> → the configfs target root.
    let root = dev.path().ancestors().nth(3).unwrap_or(Path::new("/"));
    let tpg_rel = Path::new(wwn).join(format!("tpgt_{tpgt}"));
    let lower = fabric.to_lowercase();
    let tpg_dir = [fabric, lower.as_str()]
        .iter()
        .map(|f| root.join(f).join(&tpg_rel))
        .find(|p| p.is_dir())
        .unwrap_or_else(|| root.join(fabric).join(&tpg_rel));
    let lun_dir = tpg_dir.join("lun").join(format!("lun_{lun}"));
    let rtpi = read_number(&lun_dir.join("statistics/scsi_port/indx"), u16::MAX.into())? as u16;
    let enable = tpg_dir.join("enable");
    let enabled = if enable.exists() {
        Some(read_number(&enable, 1)? != 0)
    } else {
        None
    };
    Ok(GroupMember {
        fabric: fabric.to_owned(),
        wwn: wwn.to_owned(),
        tpgt,
        lun,
        rtpi,
        enabled,
        lun_dir,
    })
}

fn read_error(path: &Path, source: io::Error) -> ConfigfsError {
    ConfigfsError::Read {
        path: path.to_owned(),
        source,
    }
}

/// The file's text with surrounding whitespace and NULs removed.
fn read_trimmed(path: &Path) -> Result<String, ConfigfsError> {
    Ok(read_text(path)?
        .trim_matches(|c: char| c.is_whitespace() || c == '\0')
        .to_owned())
}

/// `text` (read from `path`) as a number no larger than `max`.
fn number(path: &Path, text: &str, max: u64) -> Result<u64, ConfigfsError> {
    parse_kernel_uint(text)
        .filter(|&v| v <= max)
        .ok_or_else(|| ConfigfsError::Parse {
            path: path.to_owned(),
            value: text.to_owned(),
            expected: "an unsigned integer in range",
        })
}

fn read_number(path: &Path, max: u64) -> Result<u64, ConfigfsError> {
    let text = read_trimmed(path)?;
    number(path, &text, max)
}

/// `alua_access_status`: LIO prints the status as text (and takes it as a
/// number, which is accepted too).
fn read_status(path: &Path) -> Result<u8, ConfigfsError> {
    let text = read_trimmed(path)?;
    match text.as_str() {
        "None" | "0" => Ok(STATUS_NONE),
        "Altered by Explicit STPG" | "1" => Ok(STATUS_ALTERED_BY_EXPLICIT_STPG),
        "Altered by Implicit ALUA" | "2" => Ok(STATUS_ALTERED_BY_IMPLICIT_ALUA),
        _ => Err(ConfigfsError::Parse {
            path: path.to_owned(),
            value: text,
            expected: "None, Altered by Explicit STPG or Altered by Implicit ALUA",
        }),
    }
}

/// `alua_access_type`: LIO prints the type as text (and takes it as a
/// number 0..=3, which is accepted too).
fn read_access_type(path: &Path) -> Result<u8, ConfigfsError> {
    let text = read_trimmed(path)?;
    match text.as_str() {
        "None" | "0" => Ok(0),
        "Implicit" | "1" => Ok(ACCESS_IMPLICIT),
        "Explicit" | "2" => Ok(ACCESS_EXPLICIT),
        "Implicit and Explicit" | "3" => Ok(ACCESS_IMPLICIT | ACCESS_EXPLICIT),
        _ => Err(ConfigfsError::Parse {
            path: path.to_owned(),
            value: text,
            expected: "None, Implicit, Explicit or Implicit and Explicit",
        }),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::configfs::test_util::TempDir;

    const DEV: &str = "core/user_1/disk0";
    const LOOP_WWN: &str = "naa.5001405a1b2c3d4e";
    const ISCSI_WWN: &str = "iqn.2003-01.org.linux-iscsi.host.x8664:sn.0123456789ab";

    #[test]
    fn logical_unit_group() {
        let tmp = TempDir::new("lu-gp");
        let dev = DeviceDir::at(tmp.path().join(DEV));
        tmp.file(&format!("{DEV}/enable"), "1\n");
        assert_eq!(lu_group_id(&dev).unwrap(), None);
        tmp.file("core/alua/lu_gps/default_lu_gp/lu_gp_id", "0\n");
        tmp.file("core/alua/lu_gps/default_lu_gp/members", "user_1/other\n");
        tmp.file("core/alua/lu_gps/mine/lu_gp_id", "7\n");
        tmp.file(
            "core/alua/lu_gps/mine/members",
            "user_2/disk0\nuser_1/disk0\n",
        );
        assert_eq!(lu_group_id(&dev).unwrap(), Some(7));
    }

    fn group(tmp: &TempDir, name: &str, id: &str, members: &str) {
        let g = format!("{DEV}/alua/{name}");
        tmp.file(&format!("{g}/tg_pt_gp_id"), id);
        tmp.file(&format!("{g}/alua_access_state"), "0\n");
        tmp.file(&format!("{g}/alua_access_status"), "None\n");
        tmp.file(&format!("{g}/alua_access_type"), "Implicit and Explicit\n");
        for (file, bit) in SUPPORT_FILES {
            let on = if bit == 0x10 { "0\n" } else { "1\n" };
            tmp.file(&format!("{g}/{file}"), on);
        }
        tmp.file(&format!("{g}/alua_write_metadata"), "0\n");
        tmp.file(&format!("{g}/preferred"), "0\n");
        tmp.file(&format!("{g}/implicit_trans_secs"), "0\n");
        tmp.file(&format!("{g}/nonop_delay_msecs"), "100\n");
        tmp.file(&format!("{g}/trans_delay_msecs"), "0\n");
        tmp.file(&format!("{g}/members"), members);
    }

    fn lun(tmp: &TempDir, dir: &str, wwn: &str, tpgt: u16, lun: u64, rtpi: u16) {
        let l = format!("{dir}/{wwn}/tpgt_{tpgt}/lun/lun_{lun}");
        tmp.file(
            &format!("{l}/statistics/scsi_port/indx"),
            &format!("{rtpi}\n"),
        );
        tmp.file(&format!("{l}/alua_tg_pt_offline"), "0\n");
    }

    /// A device exported over tcm_loop (LUN 0, RTPI 1) and iSCSI (LUN 2 of
    /// TPG 1, RTPI 3, enabled; LUN 0 of TPG 2, RTPI 4, disabled); the
    /// iSCSI ports moved to groups `ao` (ID 2) and `remote` (ID 7); a group
    /// `fresh` without an ID.
    fn tree() -> (TempDir, DeviceDir) {
        let tmp = TempDir::new("alua");
        group(
            &tmp,
            DEFAULT_GROUP,
            "0\n",
            &format!("loopback/{LOOP_WWN}/tpgt_1/lun_0\n\0"),
        );
        group(
            &tmp,
            "remote",
            "7\n",
            &format!("iSCSI/{ISCSI_WWN}/tpgt_2/lun_0\n\0"),
        );
        group(
            &tmp,
            "ao",
            "2\n",
            &format!("iSCSI/{ISCSI_WWN}/tpgt_1/lun_2\n\0"),
        );
        group(&tmp, "fresh", "", "");
        lun(&tmp, "loopback", LOOP_WWN, 1, 0, 1);
        lun(&tmp, "iscsi", ISCSI_WWN, 1, 2, 3);
        lun(&tmp, "iscsi", ISCSI_WWN, 2, 0, 4);
        tmp.file(&format!("iscsi/{ISCSI_WWN}/tpgt_1/enable"), "1\n");
        tmp.file(&format!("iscsi/{ISCSI_WWN}/tpgt_2/enable"), "0\n");
        let dev = DeviceDir::at(tmp.path().join(DEV));
        (tmp, dev)
    }

    #[test]
    fn reads_every_group_in_lio_order() {
        let (tmp, dev) = tree();
        let groups = read_groups(&dev).unwrap();
        let names: Vec<_> = groups.iter().map(|g| g.name.as_str()).collect();
        assert_eq!(names, [DEFAULT_GROUP, "ao", "remote", "fresh"]);
        let ids: Vec<_> = groups.iter().map(|g| g.id).collect();
        assert_eq!(ids, [Some(0), Some(2), Some(7), None]);

        let d = &groups[0];
        assert_eq!(d.access_state, 0);
        assert_eq!(d.access_status, STATUS_NONE);
        assert_eq!(d.access_type, 0x30);
        assert_eq!(d.supported_states, 0xcf);
        assert!(!d.preferred);
        assert_eq!(d.implicit_trans_secs, 0);
        assert_eq!(d.nonop_delay_msecs, 100);
        assert_eq!(d.trans_delay_msecs, 0);
        assert_eq!(
            d.members,
            vec![GroupMember {
                fabric: "loopback".into(),
                wwn: LOOP_WWN.into(),
                tpgt: 1,
                lun: 0,
                rtpi: 1,
                enabled: None,
                lun_dir: tmp
                    .path()
                    .join(format!("loopback/{LOOP_WWN}/tpgt_1/lun/lun_0")),
            }]
        );
        let ao = &groups[1].members[0];
        assert_eq!((ao.fabric.as_str(), ao.tpgt, ao.lun), ("iSCSI", 1, 2));
        assert_eq!((ao.rtpi, ao.enabled), (3, Some(true)));
        assert!(ao.lun_dir.starts_with(tmp.path().join("iscsi")));
        let remote = &groups[2].members[0];
        assert_eq!((remote.rtpi, remote.enabled), (4, Some(false)));
        assert!(groups[3].members.is_empty());
    }

    #[test]
    fn reads_states_types_and_statuses() {
        let (tmp, dev) = tree();
        let g = format!("{DEV}/alua/ao");
        tmp.file(&format!("{g}/alua_access_state"), "2\n");
        tmp.file(
            &format!("{g}/alua_access_status"),
            "Altered by Explicit STPG\n",
        );
        tmp.file(&format!("{g}/alua_access_type"), "Explicit\n");
        tmp.file(&format!("{g}/alua_support_lba_dependent"), "1\n");
        tmp.file(&format!("{g}/alua_support_offline"), "0\n");
        tmp.file(&format!("{g}/preferred"), "1\n");
        tmp.file(&format!("{g}/implicit_trans_secs"), "255\n");
        let ao = read_group(&dev, "ao").unwrap();
        assert_eq!(ao.access_state, 2);
        assert_eq!(ao.access_status, STATUS_ALTERED_BY_EXPLICIT_STPG);
        assert_eq!(ao.access_type, ACCESS_EXPLICIT);
        assert_eq!(ao.supported_states, 0xcf - 0x40 + 0x10);
        assert!(ao.preferred);
        assert_eq!(ao.implicit_trans_secs, 255);
        for (text, want) in [
            ("Implicit\n", ACCESS_IMPLICIT),
            ("None\n", 0),
            ("Implicit and Explicit\n", 0x30),
        ] {
            tmp.file(&format!("{g}/alua_access_type"), text);
            assert_eq!(read_group(&dev, "ao").unwrap().access_type, want);
        }
        tmp.file(
            &format!("{g}/alua_access_status"),
            "Altered by Implicit ALUA\n",
        );
        assert_eq!(
            read_group(&dev, "ao").unwrap().access_status,
            STATUS_ALTERED_BY_IMPLICIT_ALUA
        );
        // The numeric forms the files accept on write read back too.
        tmp.file(&format!("{g}/alua_access_status"), "1");
        tmp.file(&format!("{g}/alua_access_type"), "2");
        let ao = read_group(&dev, "ao").unwrap();
        assert_eq!(ao.access_status, STATUS_ALTERED_BY_EXPLICIT_STPG);
        assert_eq!(ao.access_type, ACCESS_EXPLICIT);
    }

    #[test]
    fn members_with_several_luns() {
        let (tmp, dev) = tree();
        tmp.file(
            &format!("{DEV}/alua/{DEFAULT_GROUP}/members"),
            &format!("loopback/{LOOP_WWN}/tpgt_1/lun_0\n\0iSCSI/{ISCSI_WWN}/tpgt_1/lun_2\n\0"),
        );
        let d = read_group(&dev, DEFAULT_GROUP).unwrap();
        let rtpis: Vec<_> = d.members.iter().map(|m| m.rtpi).collect();
        assert_eq!(rtpis, [1, 3]);
    }

    #[test]
    fn bad_contents_are_errors() {
        let (tmp, dev) = tree();
        let g = format!("{DEV}/alua/ao");
        let parse = |dev: &DeviceDir| {
            matches!(
                read_group(dev, "ao").unwrap_err(),
                ConfigfsError::Parse { .. }
            )
        };
        tmp.file(&format!("{g}/alua_access_status"), "Unknown\n");
        assert!(parse(&dev));
        tmp.file(&format!("{g}/alua_access_status"), "None\n");
        tmp.file(&format!("{g}/alua_access_type"), "Sometimes\n");
        assert!(parse(&dev));
        tmp.file(&format!("{g}/alua_access_type"), "Implicit\n");
        tmp.file(&format!("{g}/tg_pt_gp_id"), "65536\n");
        assert!(parse(&dev));
        tmp.file(&format!("{g}/tg_pt_gp_id"), "2\n");
        tmp.file(&format!("{g}/implicit_trans_secs"), "256\n");
        assert!(parse(&dev));
        tmp.file(&format!("{g}/implicit_trans_secs"), "0\n");
        for line in [
            "iSCSI",
            "iSCSI/x/lun_0",
            "iSCSI/x/tpgt_a/lun_0",
            "iSCSI/x/tpgt_1/lun_",
            "iSCSI//tpgt_1/lun_0",
            "../x/tpgt_1/lun_0",
            "iSCSI/a/../b/tpgt_1/lun_0",
        ] {
            tmp.file(&format!("{g}/members"), &format!("{line}\n"));
            assert!(parse(&dev), "{line}");
        }
        // A member whose LUN directory is gone: a read error.
        tmp.file(&format!("{g}/members"), "iSCSI/nope/tpgt_1/lun_0\n");
        let err = read_group(&dev, "ao").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOENT), "{err}");
        assert!(err.to_string().contains("scsi_port/indx"), "{err}");
        // Missing attribute, missing group, a name that escapes alua/.
        assert!(matches!(
            read_group(&dev, "nope").unwrap_err(),
            ConfigfsError::Read { .. }
        ));
        for name in ["", "..", "a/b"] {
            assert!(matches!(
                read_group(&dev, name).unwrap_err(),
                ConfigfsError::Parse { .. }
            ));
        }
        assert!(read_groups(&DeviceDir::at(tmp.path().join("none"))).is_err());
    }

    #[test]
    fn writes_state_status_and_offline() {
        let (tmp, dev) = tree();
        set_access_state(&dev, "ao", 2).unwrap();
        set_access_status(&dev, "ao", STATUS_ALTERED_BY_EXPLICIT_STPG).unwrap();
        let g = tmp.path().join(DEV).join("alua/ao");
        assert_eq!(
            fs::read_to_string(g.join("alua_access_state")).unwrap(),
            "2"
        );
        assert_eq!(
            fs::read_to_string(g.join("alua_access_status")).unwrap(),
            "1"
        );
        let groups = read_groups(&dev).unwrap();
        let member = &groups[1].members[0];
        set_port_offline(member, true).unwrap();
        assert_eq!(
            fs::read_to_string(member.lun_dir.join("alua_tg_pt_offline")).unwrap(),
            "1"
        );
        set_port_offline(member, false).unwrap();
        assert_eq!(
            fs::read_to_string(member.lun_dir.join("alua_tg_pt_offline")).unwrap(),
            "0"
        );
        // Writing never creates a group or a file.
        let err = set_access_state(&dev, "nope", 0).unwrap_err();
        assert!(matches!(err, ConfigfsError::Write { .. }), "{err}");
        assert!(!tmp.path().join(DEV).join("alua/nope").exists());
        assert!(matches!(
            set_access_state(&dev, "../x", 0).unwrap_err(),
            ConfigfsError::Parse { .. }
        ));
    }
}
