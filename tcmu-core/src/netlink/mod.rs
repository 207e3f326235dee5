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
//!   [`AsFd`](std::os::fd::AsFd). Open it *before* scanning `/sys/class/uio` at start-up, so no
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
//!
//! The module is two halves: the wire format (`wire.rs`: message and
//! attribute types, [`parse_events`], [`encode_request`]), which needs no
//! kernel, and the sockets (`socket.rs`: [`EventSocket`], [`ControlSocket`],
//! family resolution). [`crate::master::Master`] builds the event loop's
//! obligations (every event answered) on top of both.

use std::io;

use netlink_packet_core::DecodeError;

mod socket;
mod wire;

pub use socket::{family_available, ControlSocket, EventSocket};
pub use wire::{
    attr, encode_request, parse_events, DeviceEvent, EventKind, Reconfig, TcmuAttr, TcmuCommand,
    TcmuMessage,
};

/// The generic netlink family name `target_core_user` registers.
pub const FAMILY_NAME: &str = "TCM-USER";

/// The family version (the `version` of the generic netlink header).
pub const FAMILY_VERSION: u8 = 2;

/// The multicast group the kernel sends device events to.
pub const MCAST_GROUP: &str = "config";

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

    /// For an event that could not be decoded but named its device, the
    /// event's kind and the DEVICE_ID the kernel may be waiting on: the
    /// reply must be the matching `*_DONE`.
    pub fn pending_event(&self) -> Option<(EventKind, u32)> {
        match self {
            Self::MissingAttribute {
                command,
                device_id: Some(id),
                ..
            } => [EventKind::Added, EventKind::Removed, EventKind::Reconfig]
                .into_iter()
                .find(|k| k.command().name() == *command)
                .map(|k| (k, *id)),
            _ => None,
        }
    }
}

pub(crate) fn socket_error(op: &'static str) -> impl FnOnce(io::Error) -> NetlinkError {
    move |source| NetlinkError::Socket { op, source }
}

pub(crate) fn decode_error(context: &'static str) -> impl FnOnce(DecodeError) -> NetlinkError {
    move |source| NetlinkError::Decode { context, source }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

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
        let missing = |command| NetlinkError::MissingAttribute {
            command,
            attribute: "MINOR",
            device_id: Some(4),
        };
        assert_eq!(
            missing("RECONFIG_DEVICE").pending_event(),
            Some((EventKind::Reconfig, 4))
        );
        assert_eq!(
            missing("ADDED_DEVICE").pending_event(),
            Some((EventKind::Added, 4))
        );
        assert_eq!(missing("SET_FEATURES").pending_event(), None);
    }
}
