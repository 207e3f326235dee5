//! Which devices this daemon serves: every TCMU device (the default, as
//! tcmu-runner), or only those named with `--device` (tcmu-rs extension).
//!
//! A restricted daemon leaves every other device alone: it neither
//! recovers it at start-up nor answers its netlink events, so another
//! daemon (started with its own `--lock-file`, and `--no-dbus` unless it
//! is the one that serves targetcli) can serve it. Two daemons on one
//! host serving two gateways' LUNs of the same image is the HA test's
//! picture; handlers in separate processes (a crash in one does not take
//! the others' devices down) is the everyday use.
//!
//! Mind the kernel's one global switch: a daemon that stops tells the
//! kernel to stop waiting for replies to device events, for every daemon.
//! The others keep serving; an `enable` made afterwards just does not wait
//! for its daemon to open the device.

use std::fmt;

use tcmu_core::uio::TcmuName;

/// The devices a daemon serves.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    /// `None`: every device; else the names given, each a configfs device
    /// name (`disk0`) or one qualified by its HBA (`user_1/disk0`).
    only: Option<Vec<String>>,
}

impl Scope {
    /// Only the devices named (see [`Scope`]); every device when `names`
    /// is empty.
    pub fn only(names: Vec<String>) -> Self {
        Self {
            only: (!names.is_empty()).then_some(names),
        }
    }

    /// Whether this daemon serves the device called `name`.
    pub fn includes(&self, name: &TcmuName) -> bool {
        let Some(only) = &self.only else {
            return true;
        };
        let qualified = format!("user_{}/{}", name.hba, name.device);
        only.iter().any(|n| *n == name.device || *n == qualified)
    }

    /// Whether some devices are left to other daemons.
    pub fn is_restricted(&self) -> bool {
        self.only.is_some()
    }
}

impl fmt::Display for Scope {
    /// For logs: "every device" or "only device(s) a, user_2/b".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.only {
            None => f.write_str("every device"),
            Some(names) => write!(f, "only device(s) {}", names.join(", ")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(hba: u32, device: &str) -> TcmuName {
        TcmuName {
            hba,
            device: device.to_owned(),
            dev_config: "rbd/rbd/img".to_owned(),
            subtype: "rbd".to_owned(),
            handler_config: "rbd/img".to_owned(),
        }
    }

    #[test]
    fn every_device_by_default() {
        assert!(Scope::default().includes(&name(1, "a")));
        assert!(Scope::only(vec![]).includes(&name(7, "z")));
        assert!(!Scope::default().is_restricted());
        assert_eq!(Scope::default().to_string(), "every device");
    }

    #[test]
    fn named_devices_by_name_or_hba_and_name() {
        let s = Scope::only(vec!["gw1".into(), "user_2/disk".into()]);
        assert!(s.is_restricted());
        assert!(s.includes(&name(1, "gw1")));
        assert!(s.includes(&name(5, "gw1")));
        assert!(s.includes(&name(2, "disk")));
        assert!(!s.includes(&name(3, "disk")));
        assert!(!s.includes(&name(1, "gw2")));
        assert!(!s.includes(&name(1, "gw")));
        assert_eq!(s.to_string(), "only device(s) gw1, user_2/disk");
    }
}
