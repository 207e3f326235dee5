//! The `TCM-USER` wire format: commands, attributes, messages and events,
//! encoded and decoded with `netlink-packet-core`/`netlink-packet-generic`.
//! Everything here is a function of bytes, tested without a kernel.

use netlink_packet_core::{
    parse_i32, parse_string, parse_u16, parse_u32, parse_u64, parse_u8, DecodeError, DefaultNla,
    Emitable, ErrorContext, NetlinkBuffer, NetlinkHeader, NetlinkMessage, Nla, NlaBuffer,
    NlasIterator, Parseable, ParseableParametrized, NLM_F_ACK, NLM_F_REQUEST,
};
use netlink_packet_generic::constants::{
    CTRL_ATTR_FAMILY_ID, CTRL_ATTR_MCAST_GROUPS, CTRL_ATTR_MCAST_GRP_ID, CTRL_ATTR_MCAST_GRP_NAME,
    GENL_HDRLEN,
};
use netlink_packet_generic::{GenlFamily, GenlHeader, GenlMessage};

use super::{decode_error, NetlinkError, FAMILY_NAME, FAMILY_VERSION};

/// The commands of the family (`enum tcmu_genl_cmd`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum TcmuCommand {
    /// Kernel → daemon: a device was enabled.
    AddedDevice = 1,
    /// Kernel → daemon: a device is being removed.
    RemovedDevice = 2,
    /// Kernel → daemon: `dev_config`, `dev_size` or `emulate_write_cache`
    /// is being changed.
    ReconfigDevice = 3,
    /// Daemon → kernel: reply to [`TcmuCommand::AddedDevice`].
    AddedDeviceDone = 4,
    /// Daemon → kernel: reply to [`TcmuCommand::RemovedDevice`].
    RemovedDeviceDone = 5,
    /// Daemon → kernel: reply to [`TcmuCommand::ReconfigDevice`].
    ReconfigDeviceDone = 6,
    /// Daemon → kernel: announce features (SUPP_KERN_CMD_REPLY).
    SetFeatures = 7,
}

impl TcmuCommand {
    /// The command with number `cmd`, if it is one of the family's.
    pub fn from_u8(cmd: u8) -> Option<Self> {
        Some(match cmd {
            1 => Self::AddedDevice,
            2 => Self::RemovedDevice,
            3 => Self::ReconfigDevice,
            4 => Self::AddedDeviceDone,
            5 => Self::RemovedDeviceDone,
            6 => Self::ReconfigDeviceDone,
            7 => Self::SetFeatures,
            _ => return None,
        })
    }

    /// The kernel's name for the command, without the `TCMU_CMD_` prefix.
    pub fn name(self) -> &'static str {
        match self {
            Self::AddedDevice => "ADDED_DEVICE",
            Self::RemovedDevice => "REMOVED_DEVICE",
            Self::ReconfigDevice => "RECONFIG_DEVICE",
            Self::AddedDeviceDone => "ADDED_DEVICE_DONE",
            Self::RemovedDeviceDone => "REMOVED_DEVICE_DONE",
            Self::ReconfigDeviceDone => "RECONFIG_DEVICE_DONE",
            Self::SetFeatures => "SET_FEATURES",
        }
    }
}

/// The attribute numbers of the family (`enum tcmu_genl_attr`).
pub mod attr {
    /// String: the UIO name, `tcm-user/<hba>/<device>[/<dev_config>]`.
    pub const DEVICE: u16 = 1;
    /// u32: the UIO minor (N of `/dev/uioN`).
    pub const MINOR: u16 = 2;
    /// Padding the kernel may insert to align a u64 (no value).
    pub const PAD: u16 = 3;
    /// String: the new `dev_config` of a RECONFIG_DEVICE.
    pub const DEV_CFG: u16 = 4;
    /// u64: the new size in bytes of a RECONFIG_DEVICE.
    pub const DEV_SIZE: u16 = 5;
    /// u8: the new `emulate_write_cache` of a RECONFIG_DEVICE.
    pub const WRITECACHE: u16 = 6;
    /// s32: the daemon's status in a `*_DONE` reply (0 or -errno).
    pub const CMD_STATUS: u16 = 7;
    /// u32: the LIO device index (`statistics/scsi_dev/indx`).
    pub const DEVICE_ID: u16 = 8;
    /// u8: in SET_FEATURES, 1 if the daemon sends `*_DONE` replies.
    pub const SUPP_KERN_CMD_REPLY: u16 = 9;
}

/// One attribute of a `TCM-USER` message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TcmuAttr {
    /// [`attr::DEVICE`].
    Device(String),
    /// [`attr::MINOR`].
    Minor(u32),
    /// [`attr::PAD`].
    Pad,
    /// [`attr::DEV_CFG`].
    DevConfig(String),
    /// [`attr::DEV_SIZE`].
    DevSize(u64),
    /// [`attr::WRITECACHE`].
    WriteCache(u8),
    /// [`attr::CMD_STATUS`].
    CmdStatus(i32),
    /// [`attr::DEVICE_ID`].
    DeviceId(u32),
    /// [`attr::SUPP_KERN_CMD_REPLY`].
    SuppKernCmdReply(u8),
    /// An attribute this crate does not know (a newer kernel's), kept raw.
    Other(DefaultNla),
}

/// Copies `bytes` to the start of `buffer` (which `Emitable` sizes for it).
fn put(buffer: &mut [u8], bytes: &[u8]) {
    if let Some(dst) = buffer.get_mut(..bytes.len()) {
        dst.copy_from_slice(bytes);
    }
}

/// Copies `s` and a terminating NUL to the start of `buffer`.
fn put_string(buffer: &mut [u8], s: &str) {
    put(buffer, s.as_bytes());
    if let Some(nul) = buffer.get_mut(s.len()) {
        *nul = 0;
    }
}

impl Nla for TcmuAttr {
    fn value_len(&self) -> usize {
        match self {
            Self::Device(s) | Self::DevConfig(s) => s.len() + 1,
            Self::Minor(_) | Self::CmdStatus(_) | Self::DeviceId(_) => 4,
            Self::Pad => 0,
            Self::DevSize(_) => 8,
            Self::WriteCache(_) | Self::SuppKernCmdReply(_) => 1,
            Self::Other(nla) => nla.value_len(),
        }
    }

    fn kind(&self) -> u16 {
        match self {
            Self::Device(_) => attr::DEVICE,
            Self::Minor(_) => attr::MINOR,
            Self::Pad => attr::PAD,
            Self::DevConfig(_) => attr::DEV_CFG,
            Self::DevSize(_) => attr::DEV_SIZE,
            Self::WriteCache(_) => attr::WRITECACHE,
            Self::CmdStatus(_) => attr::CMD_STATUS,
            Self::DeviceId(_) => attr::DEVICE_ID,
            Self::SuppKernCmdReply(_) => attr::SUPP_KERN_CMD_REPLY,
            Self::Other(nla) => nla.kind(),
        }
    }

    fn emit_value(&self, buffer: &mut [u8]) {
        match self {
            Self::Device(s) | Self::DevConfig(s) => put_string(buffer, s),
            Self::Minor(v) | Self::DeviceId(v) => put(buffer, &v.to_ne_bytes()),
            Self::CmdStatus(v) => put(buffer, &v.to_ne_bytes()),
            Self::DevSize(v) => put(buffer, &v.to_ne_bytes()),
            Self::WriteCache(v) | Self::SuppKernCmdReply(v) => put(buffer, &[*v]),
            Self::Pad => {}
            Self::Other(nla) => nla.emit_value(buffer),
        }
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Parseable<NlaBuffer<&'a T>> for TcmuAttr {
    fn parse(buf: &NlaBuffer<&'a T>) -> Result<Self, DecodeError> {
        let value = buf.value();
        Ok(match buf.kind() {
            attr::DEVICE => {
                Self::Device(parse_string(value).context("invalid TCMU_ATTR_DEVICE value")?)
            }
            attr::MINOR => Self::Minor(parse_u32(value).context("invalid TCMU_ATTR_MINOR value")?),
            attr::PAD => Self::Pad,
            attr::DEV_CFG => {
                Self::DevConfig(parse_string(value).context("invalid TCMU_ATTR_DEV_CFG value")?)
            }
            attr::DEV_SIZE => {
                Self::DevSize(parse_u64(value).context("invalid TCMU_ATTR_DEV_SIZE value")?)
            }
            attr::WRITECACHE => {
                Self::WriteCache(parse_u8(value).context("invalid TCMU_ATTR_WRITECACHE value")?)
            }
            attr::CMD_STATUS => {
                Self::CmdStatus(parse_i32(value).context("invalid TCMU_ATTR_CMD_STATUS value")?)
            }
            attr::DEVICE_ID => {
                Self::DeviceId(parse_u32(value).context("invalid TCMU_ATTR_DEVICE_ID value")?)
            }
            attr::SUPP_KERN_CMD_REPLY => Self::SuppKernCmdReply(
                parse_u8(value).context("invalid TCMU_ATTR_SUPP_KERN_CMD_REPLY value")?,
            ),
            _ => Self::Other(DefaultNla::parse(buf)?),
        })
    }
}

/// A `TCM-USER` message: the generic netlink command and its attributes.
///
/// This is the payload type of `GenlMessage<TcmuMessage>`. The command is
/// kept as a raw number so that messages of a newer kernel still parse; see
/// [`TcmuMessage::command`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcmuMessage {
    /// The generic netlink command number.
    pub cmd: u8,
    /// The attributes, in wire order.
    pub attrs: Vec<TcmuAttr>,
}

impl TcmuMessage {
    /// A message with command `cmd`.
    pub fn new(cmd: TcmuCommand, attrs: Vec<TcmuAttr>) -> Self {
        Self {
            cmd: cmd as u8,
            attrs,
        }
    }

    /// The reply to an event of kind `kind` for device `device_id`: the
    /// matching `*_DONE` with CMD_STATUS `status` (0 or -errno).
    pub fn done(kind: EventKind, device_id: u32, status: i32) -> Self {
        Self::new(
            kind.done_command(),
            vec![TcmuAttr::CmdStatus(status), TcmuAttr::DeviceId(device_id)],
        )
    }

    /// SET_FEATURES announcing whether the daemon sends `*_DONE` replies.
    pub fn set_features(kernel_cmd_reply: bool) -> Self {
        Self::new(
            TcmuCommand::SetFeatures,
            vec![TcmuAttr::SuppKernCmdReply(u8::from(kernel_cmd_reply))],
        )
    }

    /// The command, if it is one this crate knows.
    pub fn command(&self) -> Option<TcmuCommand> {
        TcmuCommand::from_u8(self.cmd)
    }

    fn find<T>(&self, pick: impl Fn(&TcmuAttr) -> Option<T>) -> Option<T> {
        self.attrs.iter().find_map(pick)
    }
}

impl GenlFamily for TcmuMessage {
    fn family_name() -> &'static str {
        FAMILY_NAME
    }

    fn command(&self) -> u8 {
        self.cmd
    }

    fn version(&self) -> u8 {
        FAMILY_VERSION
    }
}

impl Emitable for TcmuMessage {
    fn buffer_len(&self) -> usize {
        self.attrs.as_slice().buffer_len()
    }

    fn emit(&self, buffer: &mut [u8]) {
        self.attrs.as_slice().emit(buffer)
    }
}

impl ParseableParametrized<[u8], GenlHeader> for TcmuMessage {
    fn parse_with_param(buf: &[u8], header: GenlHeader) -> Result<Self, DecodeError> {
        let attrs = NlasIterator::new(buf)
            .map(|nla| nla.and_then(|nla| TcmuAttr::parse(&nla)))
            .collect::<Result<Vec<_>, _>>()
            .context("failed to parse TCM-USER attributes")?;
        Ok(Self {
            cmd: header.cmd,
            attrs,
        })
    }
}

/// What happened to a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// ADDED_DEVICE: the device was enabled; open it.
    Added,
    /// REMOVED_DEVICE: the device is going away; close it.
    Removed,
    /// RECONFIG_DEVICE: a setting is changing; see [`DeviceEvent::reconfig`].
    Reconfig,
}

impl EventKind {
    /// The event's command.
    pub fn command(self) -> TcmuCommand {
        match self {
            Self::Added => TcmuCommand::AddedDevice,
            Self::Removed => TcmuCommand::RemovedDevice,
            Self::Reconfig => TcmuCommand::ReconfigDevice,
        }
    }

    /// The command that answers the event.
    pub fn done_command(self) -> TcmuCommand {
        match self {
            Self::Added => TcmuCommand::AddedDeviceDone,
            Self::Removed => TcmuCommand::RemovedDeviceDone,
            Self::Reconfig => TcmuCommand::ReconfigDeviceDone,
        }
    }

    /// The kind of an event command; `None` for the other commands.
    pub fn from_command(cmd: TcmuCommand) -> Option<Self> {
        match cmd {
            TcmuCommand::AddedDevice => Some(Self::Added),
            TcmuCommand::RemovedDevice => Some(Self::Removed),
            TcmuCommand::ReconfigDevice => Some(Self::Reconfig),
            _ => None,
        }
    }
}

/// The change a RECONFIG_DEVICE event asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reconfig {
    /// A new `dev_config` (`<subtype>/<cfgstring>`), exactly as written to
    /// `attrib/dev_config` (it may end with a newline).
    DevConfig(String),
    /// A new device size in bytes.
    DevSize(u64),
    /// Write cache emulation switched on or off.
    WriteCache(bool),
}

/// A device event multicast by the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceEvent {
    /// What happened.
    pub kind: EventKind,
    /// The UIO name, `tcm-user/<hba>/<device>[/<dev_config>]`.
    pub device: String,
    /// The UIO minor (N of `/dev/uioN`).
    pub minor: u32,
    /// The LIO device index, to be echoed in the reply.
    pub device_id: u32,
    /// For [`EventKind::Reconfig`], the change; `None` otherwise.
    pub reconfig: Option<Reconfig>,
}

impl DeviceEvent {
    /// The event a message carries; `Ok(None)` for commands that are not
    /// events (or unknown to this crate).
    pub fn from_message(msg: &TcmuMessage) -> Result<Option<Self>, NetlinkError> {
        let Some(command) = msg.command() else {
            return Ok(None);
        };
        let Some(kind) = EventKind::from_command(command) else {
            return Ok(None);
        };
        let device_id = msg.find(|a| match a {
            TcmuAttr::DeviceId(v) => Some(*v),
            _ => None,
        });
        let missing = |attribute| NetlinkError::MissingAttribute {
            command: command.name(),
            attribute,
            device_id,
        };
        let device = msg
            .find(|a| match a {
                TcmuAttr::Device(s) => Some(s.clone()),
                _ => None,
            })
            .ok_or_else(|| missing("DEVICE"))?;
        let minor = msg
            .find(|a| match a {
                TcmuAttr::Minor(v) => Some(*v),
                _ => None,
            })
            .ok_or_else(|| missing("MINOR"))?;
        let device_id = device_id.ok_or_else(|| missing("DEVICE_ID"))?;
        let reconfig = match kind {
            EventKind::Reconfig => Some(
                msg.find(|a| match a {
                    TcmuAttr::DevConfig(s) => Some(Reconfig::DevConfig(s.clone())),
                    TcmuAttr::DevSize(v) => Some(Reconfig::DevSize(*v)),
                    TcmuAttr::WriteCache(v) => Some(Reconfig::WriteCache(*v != 0)),
                    _ => None,
                })
                .ok_or_else(|| missing("DEV_CFG, DEV_SIZE or WRITECACHE"))?,
            ),
            EventKind::Added | EventKind::Removed => None,
        };
        Ok(Some(Self {
            kind,
            device,
            minor,
            device_id,
            reconfig,
        }))
    }
}

/// Splits a datagram into its netlink messages: each header and the bytes
/// after it (up to the header's length).
pub(super) fn split_messages(mut data: &[u8]) -> Result<Vec<(NetlinkHeader, &[u8])>, NetlinkError> {
    let mut messages = Vec::new();
    while !data.is_empty() {
        let buf = NetlinkBuffer::new_checked(data).map_err(decode_error("netlink header"))?;
        let header = NetlinkHeader::parse(&buf).map_err(decode_error("netlink header"))?;
        messages.push((header, buf.payload()));
        // new_checked guarantees 16 <= length <= data.len().
        let step = (header.length as usize + 3) & !3;
        data = data.get(step..).unwrap_or_default();
    }
    Ok(messages)
}

/// Decodes the device events in one datagram received on the event socket,
/// given the resolved family id. Messages of other families and netlink
/// control messages are skipped, and so are `TCM-USER` messages that are
/// not events; a malformed or truncated message is an error.
pub fn parse_events(datagram: &[u8], family_id: u16) -> Result<Vec<DeviceEvent>, NetlinkError> {
    let mut events = Vec::new();
    for (header, payload) in split_messages(datagram)? {
        if header.message_type != family_id {
            continue;
        }
        let msg = GenlMessage::<TcmuMessage>::parse_with_param(payload, header.message_type)
            .map_err(decode_error("TCM-USER message"))?;
        if let Some(event) = DeviceEvent::from_message(&msg.payload)? {
            events.push(event);
        }
    }
    Ok(events)
}

/// Serialises a generic netlink request with `NLM_F_REQUEST | NLM_F_ACK`.
pub(super) fn encode<F>(genl: GenlMessage<F>, seq: u32) -> Vec<u8>
where
    F: GenlFamily + Emitable + std::fmt::Debug,
{
    let mut msg = NetlinkMessage::from(genl);
    msg.header.flags = NLM_F_REQUEST | NLM_F_ACK;
    msg.header.sequence_number = seq;
    msg.finalize();
    let mut buf = vec![0; msg.buffer_len()];
    msg.serialize(&mut buf);
    buf
}

/// Serialises `msg` as a request to the kernel for family `family_id`,
/// with sequence number `seq` and `NLM_F_REQUEST | NLM_F_ACK`.
pub fn encode_request(msg: TcmuMessage, family_id: u16, seq: u32) -> Vec<u8> {
    let mut genl = GenlMessage::from_payload(msg);
    genl.set_resolved_family_id(family_id);
    encode(genl, seq)
}

/// What the controller says about the family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct FamilyInfo {
    pub(super) id: u16,
    pub(super) groups: Vec<(String, u32)>,
}

impl FamilyInfo {
    pub(super) fn group(&self, name: &str) -> Option<u32> {
        self.groups
            .iter()
            .find(|(group, _)| group == name)
            .map(|(_, id)| *id)
    }
}

/// Reads the family id and multicast groups from a controller NEWFAMILY
/// reply (generic header included), ignoring every other attribute so a
/// newer kernel's additions do not break start-up.
pub(super) fn parse_family_reply(payload: &[u8]) -> Result<FamilyInfo, NetlinkError> {
    const CONTEXT: &str = "generic netlink controller reply";
    let err = decode_error(CONTEXT);
    GenlHeader::parse(payload).map_err(decode_error(CONTEXT))?;
    let attrs = payload.get(GENL_HDRLEN..).unwrap_or_default();
    let mut id = None;
    let mut groups = Vec::new();
    for nla in NlasIterator::new(attrs) {
        let nla = nla.map_err(decode_error(CONTEXT))?;
        match nla.kind() {
            CTRL_ATTR_FAMILY_ID => {
                id = Some(parse_u16(nla.value()).map_err(decode_error(CONTEXT))?);
            }
            CTRL_ATTR_MCAST_GROUPS => {
                for group in NlasIterator::new(nla.value()) {
                    let group = group.map_err(decode_error(CONTEXT))?;
                    let (mut name, mut group_id) = (None, None);
                    for field in NlasIterator::new(group.value()) {
                        let field = field.map_err(decode_error(CONTEXT))?;
                        match field.kind() {
                            CTRL_ATTR_MCAST_GRP_NAME => {
                                name = Some(
                                    parse_string(field.value()).map_err(decode_error(CONTEXT))?,
                                );
                            }
                            CTRL_ATTR_MCAST_GRP_ID => {
                                group_id =
                                    Some(parse_u32(field.value()).map_err(decode_error(CONTEXT))?);
                            }
                            _ => {}
                        }
                    }
                    if let (Some(name), Some(group_id)) = (name, group_id) {
                        groups.push((name, group_id));
                    }
                }
            }
            _ => {}
        }
    }
    let id = id.ok_or_else(|| err(DecodeError::from("no CTRL_ATTR_FAMILY_ID")))?;
    Ok(FamilyInfo { id, groups })
}

#[cfg(test)]
mod tests {
    use super::super::MCAST_GROUP;
    use super::*;

    const FAMILY: u16 = 0x1d;

    /// Appends one attribute the way the kernel's `nla_put` lays it out.
    fn nla(out: &mut Vec<u8>, kind: u16, value: &[u8]) {
        out.extend_from_slice(&(4 + value.len() as u16).to_ne_bytes());
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(value);
        while out.len() & 3 != 0 {
            out.push(0);
        }
    }

    fn nla_string(out: &mut Vec<u8>, kind: u16, s: &str) {
        let mut value = s.as_bytes().to_vec();
        value.push(0);
        nla(out, kind, &value);
    }

    /// A whole netlink message as the kernel multicasts it: `nlmsghdr`
    /// (seq 0, port 0, no flags), `genlmsghdr` (cmd, version 2), then the
    /// attributes.
    fn kernel_message(message_type: u16, cmd: u8, attrs: &[u8]) -> Vec<u8> {
        let len = 16 + 4 + attrs.len();
        let mut out = Vec::new();
        out.extend_from_slice(&(len as u32).to_ne_bytes());
        out.extend_from_slice(&message_type.to_ne_bytes());
        out.extend_from_slice(&0u16.to_ne_bytes());
        out.extend_from_slice(&0u32.to_ne_bytes());
        out.extend_from_slice(&0u32.to_ne_bytes());
        out.extend_from_slice(&[cmd, 2, 0, 0]);
        out.extend_from_slice(attrs);
        out
    }

    /// The common prefix of every event (`tcmu_netlink_event_init`).
    fn event_attrs(name: &str, minor: u32, device_id: u32) -> Vec<u8> {
        let mut attrs = Vec::new();
        nla_string(&mut attrs, attr::DEVICE, name);
        nla(&mut attrs, attr::MINOR, &minor.to_ne_bytes());
        nla(&mut attrs, attr::DEVICE_ID, &device_id.to_ne_bytes());
        attrs
    }

    #[test]
    fn parses_added_device() {
        let attrs = event_attrs("tcm-user/1/d0/file//tmp/x", 3, 7);
        let datagram = kernel_message(FAMILY, 1, &attrs);
        let events = parse_events(&datagram, FAMILY).unwrap();
        assert_eq!(
            events,
            [DeviceEvent {
                kind: EventKind::Added,
                device: "tcm-user/1/d0/file//tmp/x".into(),
                minor: 3,
                device_id: 7,
                reconfig: None,
            }]
        );
    }

    #[test]
    fn parses_removed_device() {
        let attrs = event_attrs("tcm-user/2/gone", 0, 0);
        let events = parse_events(&kernel_message(FAMILY, 2, &attrs), FAMILY).unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].kind, EventKind::Removed);
        assert_eq!(events[0].device, "tcm-user/2/gone");
        assert_eq!(events[0].reconfig, None);
    }

    #[test]
    fn parses_reconfig_dev_config() {
        let mut attrs = event_attrs("tcm-user/1/d0/file//old", 1, 2);
        nla_string(&mut attrs, attr::DEV_CFG, "file//new\n");
        let events = parse_events(&kernel_message(FAMILY, 3, &attrs), FAMILY).unwrap();
        assert_eq!(events[0].kind, EventKind::Reconfig);
        assert_eq!(
            events[0].reconfig,
            Some(Reconfig::DevConfig("file//new\n".into()))
        );
    }

    #[test]
    fn parses_reconfig_dev_size_with_and_without_pad() {
        let size = 10u64 << 30;
        // x86-64: nla_put_u64_64bit adds no padding.
        let mut attrs = event_attrs("tcm-user/1/d0", 1, 2);
        nla(&mut attrs, attr::DEV_SIZE, &size.to_ne_bytes());
        let events = parse_events(&kernel_message(FAMILY, 3, &attrs), FAMILY).unwrap();
        assert_eq!(events[0].reconfig, Some(Reconfig::DevSize(size)));
        // Architectures without efficient unaligned access: a PAD attribute
        // (no value) first.
        let mut attrs = event_attrs("tcm-user/1/d0", 1, 2);
        nla(&mut attrs, attr::PAD, &[]);
        nla(&mut attrs, attr::DEV_SIZE, &size.to_ne_bytes());
        let events = parse_events(&kernel_message(FAMILY, 3, &attrs), FAMILY).unwrap();
        assert_eq!(events[0].reconfig, Some(Reconfig::DevSize(size)));
    }

    #[test]
    fn parses_reconfig_write_cache() {
        for (value, expected) in [(1u8, true), (0, false)] {
            let mut attrs = event_attrs("tcm-user/1/d0", 1, 2);
            nla(&mut attrs, attr::WRITECACHE, &[value]);
            let events = parse_events(&kernel_message(FAMILY, 3, &attrs), FAMILY).unwrap();
            assert_eq!(events[0].reconfig, Some(Reconfig::WriteCache(expected)));
        }
    }

    #[test]
    fn parses_several_messages_in_one_datagram_and_skips_others() {
        let mut datagram = kernel_message(FAMILY, 1, &event_attrs("tcm-user/1/a", 0, 10));
        // Another family's message, a TCM-USER non-event, and an unknown
        // future TCM-USER command are skipped.
        datagram.extend(kernel_message(FAMILY + 1, 1, &event_attrs("x", 9, 9)));
        datagram.extend(kernel_message(FAMILY, 7, &[]));
        datagram.extend(kernel_message(FAMILY, 42, &[]));
        datagram.extend(kernel_message(
            FAMILY,
            2,
            &event_attrs("tcm-user/1/b", 1, 11),
        ));
        let events = parse_events(&datagram, FAMILY).unwrap();
        let seen: Vec<_> = events
            .iter()
            .map(|e| (e.kind, e.device.as_str(), e.device_id))
            .collect();
        assert_eq!(
            seen,
            [
                (EventKind::Added, "tcm-user/1/a", 10),
                (EventKind::Removed, "tcm-user/1/b", 11)
            ]
        );
    }

    #[test]
    fn unknown_attributes_are_kept_not_fatal() {
        let mut attrs = event_attrs("tcm-user/1/d0", 1, 2);
        nla(&mut attrs, 200, &[1, 2, 3]);
        let datagram = kernel_message(FAMILY, 1, &attrs);
        let (header, payload) = split_messages(&datagram).unwrap().remove(0);
        let msg = GenlMessage::<TcmuMessage>::parse_with_param(payload, header.message_type)
            .unwrap()
            .payload;
        assert_eq!(
            msg.attrs.last(),
            Some(&TcmuAttr::Other(DefaultNla::new(200, vec![1, 2, 3])))
        );
        assert_eq!(parse_events(&datagram, FAMILY).unwrap().len(), 1);
    }

    #[test]
    fn truncated_messages_are_errors() {
        let datagram = kernel_message(FAMILY, 1, &event_attrs("tcm-user/1/d0", 1, 2));
        for cut in [1, 15, 16, 19, 20, 27, datagram.len() - 1] {
            let err = parse_events(&datagram[..cut], FAMILY).unwrap_err();
            assert!(
                matches!(err, NetlinkError::Decode { .. }),
                "cut {cut}: {err}"
            );
        }
        // A length field that claims less than the attributes need: the
        // attributes are cut inside the message.
        let mut short = datagram.clone();
        short[0..4].copy_from_slice(&30u32.to_ne_bytes());
        short.truncate(32);
        assert!(parse_events(&short, FAMILY).is_err());
        // A zero length never loops.
        let mut zero = datagram;
        zero[0..4].copy_from_slice(&0u32.to_ne_bytes());
        assert!(parse_events(&zero, FAMILY).is_err());
        // Garbage after a good message.
        let mut trailing = kernel_message(FAMILY, 2, &event_attrs("tcm-user/1/d0", 1, 2));
        trailing.extend_from_slice(&[1, 2, 3, 4]);
        assert!(parse_events(&trailing, FAMILY).is_err());
    }

    #[test]
    fn wrong_attribute_sizes_are_errors() {
        let mut attrs = Vec::new();
        nla_string(&mut attrs, attr::DEVICE, "tcm-user/1/d0");
        nla(&mut attrs, attr::MINOR, &[1, 0]);
        nla(&mut attrs, attr::DEVICE_ID, &2u32.to_ne_bytes());
        let err = parse_events(&kernel_message(FAMILY, 1, &attrs), FAMILY).unwrap_err();
        assert!(matches!(err, NetlinkError::Decode { .. }), "{err}");
        assert!(err.to_string().contains("MINOR"), "{err}");
    }

    #[test]
    fn missing_attributes_report_the_device_id() {
        let mut attrs = Vec::new();
        nla_string(&mut attrs, attr::DEVICE, "tcm-user/1/d0");
        nla(&mut attrs, attr::DEVICE_ID, &5u32.to_ne_bytes());
        let err = parse_events(&kernel_message(FAMILY, 1, &attrs), FAMILY).unwrap_err();
        assert!(
            matches!(
                err,
                NetlinkError::MissingAttribute {
                    command: "ADDED_DEVICE",
                    attribute: "MINOR",
                    device_id: Some(5)
                }
            ),
            "{err}"
        );
        assert_eq!(err.pending_device_id(), Some(5));

        // A RECONFIG_DEVICE without any change.
        let attrs = event_attrs("tcm-user/1/d0", 1, 6);
        let err = parse_events(&kernel_message(FAMILY, 3, &attrs), FAMILY).unwrap_err();
        assert_eq!(err.pending_device_id(), Some(6));

        let mut attrs = Vec::new();
        nla_string(&mut attrs, attr::DEVICE, "tcm-user/1/d0");
        nla(&mut attrs, attr::MINOR, &1u32.to_ne_bytes());
        let err = parse_events(&kernel_message(FAMILY, 2, &attrs), FAMILY).unwrap_err();
        assert_eq!(err.pending_device_id(), None);
    }

    #[test]
    fn encodes_replies_as_the_kernel_expects() {
        let bytes = encode_request(TcmuMessage::done(EventKind::Added, 3, -5), FAMILY, 7);
        let mut expected = Vec::new();
        expected.extend_from_slice(&36u32.to_ne_bytes()); // nlmsg_len
        expected.extend_from_slice(&FAMILY.to_ne_bytes()); // nlmsg_type
        expected.extend_from_slice(&(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
        expected.extend_from_slice(&7u32.to_ne_bytes()); // nlmsg_seq
        expected.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_pid
        expected.extend_from_slice(&[4, 2, 0, 0]); // ADDED_DEVICE_DONE, version 2
        nla(&mut expected, attr::CMD_STATUS, &(-5i32).to_ne_bytes());
        nla(&mut expected, attr::DEVICE_ID, &3u32.to_ne_bytes());
        assert_eq!(bytes, expected);

        for (kind, cmd) in [
            (EventKind::Removed, 5u8),
            (EventKind::Reconfig, 6),
            (EventKind::Added, 4),
        ] {
            let bytes = encode_request(TcmuMessage::done(kind, 1, 0), FAMILY, 1);
            assert_eq!(bytes[16], cmd);
        }
    }

    #[test]
    fn encodes_set_features() {
        let bytes = encode_request(TcmuMessage::set_features(true), FAMILY, 1);
        let mut expected = Vec::new();
        expected.extend_from_slice(&28u32.to_ne_bytes());
        expected.extend_from_slice(&FAMILY.to_ne_bytes());
        expected.extend_from_slice(&(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
        expected.extend_from_slice(&1u32.to_ne_bytes());
        expected.extend_from_slice(&0u32.to_ne_bytes());
        expected.extend_from_slice(&[7, 2, 0, 0]);
        nla(&mut expected, attr::SUPP_KERN_CMD_REPLY, &[1]);
        assert_eq!(bytes, expected);
    }

    #[test]
    fn attributes_round_trip() {
        let msg = TcmuMessage::new(
            TcmuCommand::ReconfigDevice,
            vec![
                TcmuAttr::Device("tcm-user/1/d0".into()),
                TcmuAttr::Minor(4),
                TcmuAttr::Pad,
                TcmuAttr::DevSize(u64::MAX),
                TcmuAttr::DevConfig("rbd/p/i".into()),
                TcmuAttr::WriteCache(1),
                TcmuAttr::CmdStatus(-19),
                TcmuAttr::DeviceId(9),
                TcmuAttr::SuppKernCmdReply(0),
                TcmuAttr::Other(DefaultNla::new(77, vec![9; 5])),
            ],
        );
        let bytes = encode_request(msg.clone(), FAMILY, 3);
        let (header, payload) = split_messages(&bytes).unwrap().remove(0);
        assert_eq!(header.length as usize, bytes.len());
        let parsed = GenlMessage::<TcmuMessage>::parse_with_param(payload, header.message_type)
            .unwrap()
            .payload;
        assert_eq!(parsed, msg);
    }

    #[test]
    fn parses_the_controller_reply() {
        // CTRL_CMD_NEWFAMILY as ctrl_fill_info builds it, trimmed to what
        // we read plus attributes we must skip.
        let mut group = Vec::new();
        nla(&mut group, CTRL_ATTR_MCAST_GRP_ID, &12u32.to_ne_bytes());
        nla_string(&mut group, CTRL_ATTR_MCAST_GRP_NAME, MCAST_GROUP);
        let mut groups = Vec::new();
        nla(&mut groups, 1, &group);
        let mut payload = vec![1, 2, 0, 0];
        nla_string(&mut payload, 2, FAMILY_NAME); // CTRL_ATTR_FAMILY_NAME
        nla(&mut payload, CTRL_ATTR_FAMILY_ID, &FAMILY.to_ne_bytes());
        nla(&mut payload, 3, &2u32.to_ne_bytes()); // CTRL_ATTR_VERSION
        nla(&mut payload, 99, &[0; 8]); // something newer
        nla(&mut payload, CTRL_ATTR_MCAST_GROUPS, &groups);
        let info = parse_family_reply(&payload).unwrap();
        assert_eq!(info.id, FAMILY);
        assert_eq!(info.group(MCAST_GROUP), Some(12));
        assert_eq!(info.group("other"), None);

        let err = parse_family_reply(&[1, 2, 0, 0]).unwrap_err();
        assert!(matches!(err, NetlinkError::Decode { .. }), "{err}");
        assert!(parse_family_reply(&[1, 2]).is_err());
    }
}
