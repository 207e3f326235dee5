//! The `TCM-USER` generic netlink family: device events from the kernel and
//! the daemon's replies.
//!
//! `target_core_user` registers the generic netlink family `TCM-USER`
//! (version 2, no family header) with one multicast group, `config`. When a
//! backstore is enabled, disabled or reconfigured, the kernel multicasts
//! ADDED_DEVICE, REMOVED_DEVICE or RECONFIG_DEVICE to that group, naming the
//! device by its UIO name, UIO minor and LIO device index (DEVICE_ID).
//! Once a daemon has sent SET_FEATURES with SUPP_KERN_CMD_REPLY=1, the
//! kernel waits, **with no timeout**, for the matching `*_DONE` reply
//! carrying the status and the DEVICE_ID: every event must be answered.
//!
//! Two sockets, two roles:
//! - [`EventSocket`] joins the group and decodes events into
//!   [`DeviceEvent`]s. It is blocking by default; a runtime makes it
//!   non-blocking with [`EventSocket::set_nonblocking`] and polls it through
//!   [`AsFd`]. Open it *before* scanning `/sys/class/uio` at start-up, so no
//!   device added in between is missed.
//! - [`ControlSocket`] sends unicast requests (SET_FEATURES, the `*_DONE`
//!   replies) and waits for the kernel's ack; a refusal comes back as
//!   [`NetlinkError::Kernel`] (ENODEV for a reply the kernel is not waiting
//!   for).
//!
//! Both resolve the family and group ids through the generic netlink
//! controller (CTRL_CMD_GETFAMILY) when opened. Messages are built and
//! parsed with `netlink-packet-core`/`netlink-packet-generic`:
//! [`TcmuMessage`] is the family's payload type and [`TcmuAttr`] its
//! attributes. The wire format is reachable without a kernel through
//! [`parse_events`] and [`encode_request`], which is how it is unit-tested;
//! the sockets themselves need the `target_core_user` module.
//!
//! All sockets and buffers are owned by the socket types; nothing here
//! spawns threads or keeps global state.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};

use netlink_packet_core::{
    parse_i32, parse_string, parse_u16, parse_u32, parse_u64, parse_u8, DecodeError, DefaultNla,
    Emitable, ErrorBuffer, ErrorContext, ErrorMessage, NetlinkBuffer, NetlinkHeader,
    NetlinkMessage, Nla, NlaBuffer, NlasIterator, Parseable, ParseableParametrized, NLMSG_ERROR,
    NLM_F_ACK, NLM_F_REQUEST,
};
use netlink_packet_generic::constants::{
    CTRL_ATTR_FAMILY_ID, CTRL_ATTR_MCAST_GROUPS, CTRL_ATTR_MCAST_GRP_ID, CTRL_ATTR_MCAST_GRP_NAME,
    GENL_HDRLEN, GENL_ID_CTRL,
};
use netlink_packet_generic::ctrl::nlas::GenlCtrlAttrs;
use netlink_packet_generic::ctrl::{GenlCtrl, GenlCtrlCmd};
use netlink_packet_generic::{GenlFamily, GenlHeader, GenlMessage};
use netlink_sys::protocols::NETLINK_GENERIC;
use netlink_sys::{Socket, SocketAddr};

/// The generic netlink family name `target_core_user` registers.
pub const FAMILY_NAME: &str = "TCM-USER";

/// The family version (the `version` of the generic netlink header).
pub const FAMILY_VERSION: u8 = 2;

/// The multicast group the kernel sends device events to.
pub const MCAST_GROUP: &str = "config";

/// Receive buffer size; the kernel sends each event in its own datagram of
/// at most `NLMSG_GOODSIZE` (a page or 8 KiB).
const RECV_BUF_LEN: usize = 64 * 1024;

/// Socket receive buffer requested for the event socket, so a burst of
/// events (many devices enabled at once) does not overrun it.
const EVENT_SOCKET_RCVBUF: libc::c_int = 1 << 20;

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

/// An error of the netlink layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetlinkError {
    /// A socket operation failed (including `WouldBlock` on a non-blocking
    /// socket, see [`NetlinkError::is_would_block`], and `ENOBUFS` when
    /// events were lost, see [`NetlinkError::is_overrun`]).
    #[error("netlink socket: cannot {op}: {source}")]
    Socket {
        /// What was being done.
        op: &'static str,
        /// The underlying I/O error.
        #[source]
        source: io::Error,
    },
    /// The generic netlink controller does not know the family.
    #[error("generic netlink family {family} not found: is target_core_user loaded?")]
    FamilyNotFound {
        /// The family looked for.
        family: &'static str,
    },
    /// The family exists but has no such multicast group.
    #[error("generic netlink family {family} has no multicast group {group:?}")]
    GroupNotFound {
        /// The family.
        family: &'static str,
        /// The group looked for.
        group: &'static str,
    },
    /// A message could not be decoded.
    #[error("malformed netlink message ({context}): {source}")]
    Decode {
        /// Which message or part of it.
        context: &'static str,
        /// What the decoder said.
        #[source]
        source: DecodeError,
    },
    /// An event lacks an attribute it must carry. If `device_id` is known
    /// the kernel is still waiting for a reply for it; answer with an error
    /// status (see [`NetlinkError::pending_device_id`]).
    #[error("TCM-USER {command} message without the {attribute} attribute")]
    MissingAttribute {
        /// The command's name, e.g. `ADDED_DEVICE`.
        command: &'static str,
        /// The missing attribute's name.
        attribute: &'static str,
        /// The DEVICE_ID of the message, if it had one.
        device_id: Option<u32>,
    },
    /// A datagram was larger than the receive buffer and was cut.
    #[error("a {len}-byte netlink datagram does not fit the {capacity}-byte receive buffer")]
    Truncated {
        /// The datagram's size.
        len: usize,
        /// The buffer's size.
        capacity: usize,
    },
    /// The kernel refused a request; the value is the (positive) errno,
    /// e.g. `ENODEV` for a `*_DONE` the kernel was not waiting for.
    #[error("the kernel refused the request: {}", errno_text(.0))]
    Kernel(i32),
}

/// The text of an errno.
fn errno_text(errno: &i32) -> io::Error {
    io::Error::from_raw_os_error(*errno)
}

impl NetlinkError {
    /// Whether this is a non-blocking socket's "nothing to read now".
    pub fn is_would_block(&self) -> bool {
        matches!(self, Self::Socket { source, .. } if source.kind() == io::ErrorKind::WouldBlock)
    }

    /// Whether the socket's receive buffer overran (`ENOBUFS`): events were
    /// lost, and the daemon must rescan `/sys/class/uio` to resynchronise.
    pub fn is_overrun(&self) -> bool {
        matches!(self, Self::Socket { source, .. } if source.raw_os_error() == Some(libc::ENOBUFS))
    }

    /// The errno of a kernel refusal ([`NetlinkError::Kernel`]).
    pub fn kernel_errno(&self) -> Option<i32> {
        match self {
            Self::Kernel(errno) => Some(*errno),
            _ => None,
        }
    }

    /// For an event that could not be decoded but named its device, the
    /// DEVICE_ID the kernel may be waiting on.
    pub fn pending_device_id(&self) -> Option<u32> {
        match self {
            Self::MissingAttribute { device_id, .. } => *device_id,
            _ => None,
        }
    }
}

fn socket_error(op: &'static str) -> impl FnOnce(io::Error) -> NetlinkError {
    move |source| NetlinkError::Socket { op, source }
}

fn decode_error(context: &'static str) -> impl FnOnce(DecodeError) -> NetlinkError {
    move |source| NetlinkError::Decode { context, source }
}

/// Splits a datagram into its netlink messages: each header and the bytes
/// after it (up to the header's length).
fn split_messages(mut data: &[u8]) -> Result<Vec<(NetlinkHeader, &[u8])>, NetlinkError> {
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
fn encode<F>(genl: GenlMessage<F>, seq: u32) -> Vec<u8>
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
struct FamilyInfo {
    id: u16,
    groups: Vec<(String, u32)>,
}

impl FamilyInfo {
    fn group(&self, name: &str) -> Option<u32> {
        self.groups
            .iter()
            .find(|(group, _)| group == name)
            .map(|(_, id)| *id)
    }
}

/// Reads the family id and multicast groups from a controller NEWFAMILY
/// reply (generic header included), ignoring every other attribute so a
/// newer kernel's additions do not break start-up.
fn parse_family_reply(payload: &[u8]) -> Result<FamilyInfo, NetlinkError> {
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

/// A bound generic netlink socket with its receive buffer and sequence
/// counter.
#[derive(Debug)]
struct Channel {
    socket: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl Channel {
    fn open() -> Result<Self, NetlinkError> {
        let mut socket =
            Socket::new(NETLINK_GENERIC).map_err(socket_error("open a NETLINK_GENERIC socket"))?;
        socket.bind_auto().map_err(socket_error("bind"))?;
        Ok(Self {
            socket,
            seq: 0,
            buf: Vec::with_capacity(RECV_BUF_LEN),
        })
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1).max(1);
        self.seq
    }

    fn send(&self, bytes: &[u8]) -> Result<(), NetlinkError> {
        let kernel = SocketAddr::new(0, 0);
        loop {
            match self.socket.send_to(bytes, &kernel, 0) {
                Ok(sent) if sent == bytes.len() => return Ok(()),
                Ok(sent) => {
                    return Err(NetlinkError::Socket {
                        op: "send",
                        source: io::Error::new(
                            io::ErrorKind::WriteZero,
                            format!("sent {sent} of {} bytes", bytes.len()),
                        ),
                    })
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(socket_error("send")(err)),
            }
        }
    }

    /// Receives one datagram into `self.buf`; returns its length and the
    /// sender's port (0 for the kernel).
    fn recv(&mut self) -> Result<(usize, u32), NetlinkError> {
        loop {
            self.buf.clear();
            self.buf.reserve(RECV_BUF_LEN);
            let capacity = self.buf.capacity();
            // MSG_TRUNC makes recv report the datagram's real length.
            match self.socket.recv_from(&mut self.buf, libc::MSG_TRUNC) {
                Ok((len, _)) if len > self.buf.len() => {
                    return Err(NetlinkError::Truncated { len, capacity })
                }
                Ok((len, from)) => return Ok((len, from.port_number())),
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(socket_error("receive")(err)),
            }
        }
    }

    /// Sends a request (built with sequence number `seq` and `NLM_F_ACK`)
    /// and reads until the kernel's ack for it. Every other message with
    /// that sequence number is handed to `on_reply` with its type and
    /// payload.
    fn transact(
        &mut self,
        request: &[u8],
        seq: u32,
        mut on_reply: impl FnMut(u16, &[u8]) -> Result<(), NetlinkError>,
    ) -> Result<(), NetlinkError> {
        self.send(request)?;
        loop {
            let (len, from) = self.recv()?;
            if from != 0 {
                continue;
            }
            let datagram = self.buf.get(..len).unwrap_or_default();
            for (header, payload) in split_messages(datagram)? {
                if header.sequence_number != seq {
                    continue;
                }
                if header.message_type == NLMSG_ERROR {
                    let ack = ErrorBuffer::new_checked(&payload)
                        .and_then(|buf| ErrorMessage::parse(&buf))
                        .map_err(decode_error("netlink ack"))?;
                    return match ack.code {
                        None => Ok(()),
                        Some(code) => Err(NetlinkError::Kernel(code.get().saturating_abs())),
                    };
                }
                on_reply(header.message_type, payload)?;
            }
        }
    }

    /// Asks the generic netlink controller about `family`.
    fn resolve_family(&mut self, family: &'static str) -> Result<FamilyInfo, NetlinkError> {
        let seq = self.next_seq();
        let request = encode(
            GenlMessage::from_payload(GenlCtrl {
                cmd: GenlCtrlCmd::GetFamily,
                nlas: vec![GenlCtrlAttrs::FamilyName(family.to_owned())],
            }),
            seq,
        );
        let mut info = None;
        let result = self.transact(&request, seq, |message_type, payload| {
            if message_type == GENL_ID_CTRL {
                info = Some(parse_family_reply(payload)?);
            }
            Ok(())
        });
        match result {
            Err(NetlinkError::Kernel(libc::ENOENT)) => Err(NetlinkError::FamilyNotFound { family }),
            Err(err) => Err(err),
            Ok(()) => info.ok_or(NetlinkError::FamilyNotFound { family }),
        }
    }

    /// Sends a `TCM-USER` request and waits for its ack.
    fn request(&mut self, family_id: u16, msg: TcmuMessage) -> Result<(), NetlinkError> {
        let seq = self.next_seq();
        let request = encode_request(msg, family_id, seq);
        self.transact(&request, seq, |_, _| Ok(()))
    }
}

/// The socket that receives the kernel's device events: bound, and joined
/// to the `TCM-USER` family's `config` multicast group.
#[derive(Debug)]
pub struct EventSocket {
    channel: Channel,
    family_id: u16,
    group_id: u32,
}

impl EventSocket {
    /// Resolves the family and its `config` group through the generic
    /// netlink controller and joins the group. Fails with
    /// [`NetlinkError::FamilyNotFound`] when `target_core_user` is not
    /// loaded.
    pub fn open() -> Result<Self, NetlinkError> {
        Self::open_group(FAMILY_NAME, MCAST_GROUP)
    }

    /// Joins multicast group `group` of generic netlink family `family`
    /// (tests use the always-present controller family `nlctrl`).
    fn open_group(family: &'static str, group: &'static str) -> Result<Self, NetlinkError> {
        let mut channel = Channel::open()?;
        let info = channel.resolve_family(family)?;
        let group_id = info
            .group(group)
            .ok_or(NetlinkError::GroupNotFound { family, group })?;
        channel
            .socket
            .set_rx_buf_sz(EVENT_SOCKET_RCVBUF)
            .map_err(socket_error("set the receive buffer size"))?;
        channel
            .socket
            .add_membership(group_id)
            .map_err(socket_error("join the multicast group"))?;
        Ok(Self {
            channel,
            family_id: info.id,
            group_id,
        })
    }

    /// Receives the next device events. Blocks (on a blocking socket) until
    /// a datagram with at least one event arrives; one datagram may hold
    /// several. On a non-blocking socket, returns an error for which
    /// [`NetlinkError::is_would_block`] holds when nothing is pending.
    pub fn recv(&mut self) -> Result<Vec<DeviceEvent>, NetlinkError> {
        loop {
            let (len, from) = self.channel.recv()?;
            if from != 0 {
                continue;
            }
            let datagram = self.channel.buf.get(..len).unwrap_or_default();
            let events = parse_events(datagram, self.family_id)?;
            if !events.is_empty() {
                return Ok(events);
            }
        }
    }

    /// Makes the socket non-blocking (`true`) or blocking again (`false`).
    pub fn set_nonblocking(&self, nonblocking: bool) -> Result<(), NetlinkError> {
        self.channel
            .socket
            .set_non_blocking(nonblocking)
            .map_err(socket_error("set O_NONBLOCK"))
    }

    /// The family id the kernel assigned to `TCM-USER`.
    pub fn family_id(&self) -> u16 {
        self.family_id
    }

    /// The id of the `config` multicast group.
    pub fn group_id(&self) -> u32 {
        self.group_id
    }
}

impl AsFd for EventSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.channel.socket.as_fd()
    }
}

impl AsRawFd for EventSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.channel.socket.as_raw_fd()
    }
}

/// The socket for requests to the kernel: SET_FEATURES and the `*_DONE`
/// replies. Each call waits for the kernel's ack.
#[derive(Debug)]
pub struct ControlSocket {
    channel: Channel,
    family_id: u16,
}

impl ControlSocket {
    /// Resolves the family through the generic netlink controller. Fails
    /// with [`NetlinkError::FamilyNotFound`] when `target_core_user` is not
    /// loaded.
    pub fn open() -> Result<Self, NetlinkError> {
        let mut channel = Channel::open()?;
        let info = channel.resolve_family(FAMILY_NAME)?;
        Ok(Self {
            channel,
            family_id: info.id,
        })
    }

    /// Tells the kernel whether this daemon answers events with `*_DONE`
    /// replies (SET_FEATURES, SUPP_KERN_CMD_REPLY). Once `true`, every
    /// event must be answered: the kernel waits without a timeout.
    pub fn set_features(&mut self, kernel_cmd_reply: bool) -> Result<(), NetlinkError> {
        self.channel
            .request(self.family_id, TcmuMessage::set_features(kernel_cmd_reply))
    }

    /// Answers an event of kind `kind` for device `device_id` with `status`
    /// (0 or -errno) and waits for the ack. A refusal is
    /// [`NetlinkError::Kernel`]; ENODEV means the kernel was not waiting for
    /// this reply (replies not enabled for the device, or already answered).
    pub fn reply(
        &mut self,
        kind: EventKind,
        device_id: u32,
        status: i32,
    ) -> Result<(), NetlinkError> {
        self.channel
            .request(self.family_id, TcmuMessage::done(kind, device_id, status))
    }

    /// The family id the kernel assigned to `TCM-USER`.
    pub fn family_id(&self) -> u16 {
        self.family_id
    }
}

/// Whether the `TCM-USER` family is registered, i.e. `target_core_user` is
/// loaded (in this network namespace's view of generic netlink).
pub fn family_available() -> bool {
    Channel::open()
        .and_then(|mut channel| channel.resolve_family(FAMILY_NAME))
        .is_ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

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

    #[test]
    fn error_helpers() {
        let would_block = NetlinkError::Socket {
            op: "receive",
            source: io::Error::from(io::ErrorKind::WouldBlock),
        };
        assert!(would_block.is_would_block());
        assert!(!would_block.is_overrun());
        let overrun = NetlinkError::Socket {
            op: "receive",
            source: io::Error::from_raw_os_error(libc::ENOBUFS),
        };
        assert!(overrun.is_overrun());
        assert!(!overrun.is_would_block());
        let refused = NetlinkError::Kernel(libc::ENODEV);
        assert_eq!(refused.kernel_errno(), Some(libc::ENODEV));
        assert!(refused.to_string().contains("No such device"), "{refused}");
        assert_eq!(would_block.kernel_errno(), None);
    }

    /// The controller path against the real kernel, with the family that is
    /// always registered: resolve `nlctrl` (id 16, group `notify`), join the
    /// group, and see a non-blocking receive report "would block".
    #[test]
    fn resolves_and_joins_a_real_family() {
        let mut channel = Channel::open().unwrap();
        let info = channel.resolve_family("nlctrl").unwrap();
        assert_eq!(info.id, GENL_ID_CTRL);
        assert!(info.group("notify").is_some(), "{info:?}");
        let err = channel.resolve_family("no-such-family").unwrap_err();
        assert!(
            matches!(
                err,
                NetlinkError::FamilyNotFound {
                    family: "no-such-family"
                }
            ),
            "{err}"
        );

        let mut events = EventSocket::open_group("nlctrl", "notify").unwrap();
        assert_eq!(events.family_id(), GENL_ID_CTRL);
        assert!(events.as_raw_fd() >= 0);
        events.set_nonblocking(true).unwrap();
        // A family registered meanwhile would send a (non-TCMU) notification
        // first; drain a bounded number of those.
        let mut would_block = false;
        for _ in 0..100 {
            match events.recv() {
                Err(err) if err.is_would_block() => {
                    would_block = true;
                    break;
                }
                Err(NetlinkError::Decode { .. }) | Ok(_) => continue,
                Err(err) => panic!("unexpected error: {err}"),
            }
        }
        assert!(would_block);
        let err = EventSocket::open_group("nlctrl", "no-such-group").unwrap_err();
        assert!(matches!(err, NetlinkError::GroupNotFound { .. }), "{err}");
    }

    /// Without `target_core_user` (as on the build machine) opening fails
    /// with the clear message; with it, both sockets open. Either way
    /// something is asserted.
    #[test]
    fn open_reports_a_missing_module_clearly() {
        if family_available() {
            let events = EventSocket::open().unwrap();
            assert!(events.family_id() >= 0x10);
            events.set_nonblocking(true).unwrap();
            ControlSocket::open().unwrap();
        } else {
            for err in [
                EventSocket::open().unwrap_err(),
                ControlSocket::open().unwrap_err(),
            ] {
                match &err {
                    NetlinkError::FamilyNotFound { .. } => assert_eq!(
                        err.to_string(),
                        "generic netlink family TCM-USER not found: is target_core_user loaded?"
                    ),
                    // A sandbox without netlink sockets at all.
                    NetlinkError::Socket { op, .. } => {
                        assert!(op.contains("NETLINK_GENERIC") || *op == "bind", "{err}")
                    }
                    other => panic!("unexpected error: {other}"),
                }
            }
        }
    }
}
