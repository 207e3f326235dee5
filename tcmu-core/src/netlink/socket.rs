//! The `TCM-USER` sockets: the event socket joined to the `config`
//! multicast group, the control socket for requests and replies, and
//! family resolution through the generic netlink controller.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};

use netlink_packet_core::{ErrorBuffer, ErrorMessage, Parseable, NLMSG_ERROR};
use netlink_packet_generic::constants::GENL_ID_CTRL;
use netlink_packet_generic::ctrl::nlas::GenlCtrlAttrs;
use netlink_packet_generic::ctrl::{GenlCtrl, GenlCtrlCmd};
use netlink_packet_generic::GenlMessage;
use netlink_sys::protocols::NETLINK_GENERIC;
use netlink_sys::{Socket, SocketAddr};

use super::wire::{
    encode, encode_request, parse_events, parse_family_reply, split_messages, DeviceEvent,
    EventKind, FamilyInfo, TcmuMessage,
};
use super::{decode_error, socket_error, NetlinkError, FAMILY_NAME, MCAST_GROUP};

/// Receive buffer size; the kernel sends each event in its own datagram of
/// at most `NLMSG_GOODSIZE` (a page or 8 KiB).
const RECV_BUF_LEN: usize = 64 * 1024;

/// Socket receive buffer requested for the event socket, so a burst of
/// events (many devices enabled at once) does not overrun it.
const EVENT_SOCKET_RCVBUF: libc::c_int = 1 << 20;

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
