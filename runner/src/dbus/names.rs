//! Bus names, object paths and interface names of the service, and the
//! escaping that turns device and handler names into object paths.

/// The well-known name the daemon owns on the system bus.
pub const BUS_NAME: &str = "org.kernel.TCMUService1";

/// The object path of the ObjectManager listing the handler objects
/// (what targetcli-fb reads to list `user:<subtype>` backstores).
pub const ROOT_PATH: &str = "/org/kernel/TCMUService1";

/// The interface of the handler objects (`ConfigDesc`, `CheckConfig`).
pub const HANDLER_INTERFACE: &str = "org.kernel.TCMUService1";

/// The object path of the handler manager (`RegisterHandler`).
pub const MANAGER_PATH: &str = "/org/kernel/TCMUService1/HandlerManager1";

/// The parent of the per-device objects; it serves its own ObjectManager.
pub const DEVICES_PATH: &str = "/org/kernel/TCMUService1/device";

/// The bus name an out-of-process handler for `subtype` owns.
pub fn external_bus_name(subtype: &str) -> String {
    format!("org.kernel.TCMUService1.HandlerManager1.{subtype}")
}

/// The object path at which an out-of-process handler serves its own
/// `CheckConfig`.
pub fn external_object_path(subtype: &str) -> String {
    format!("{MANAGER_PATH}/{subtype}")
}

/// The object path of the handler object for `subtype`.
pub fn handler_path(subtype: &str) -> String {
    format!("{ROOT_PATH}/{subtype}")
}

/// The object path of a device, `…/device/<hba>_<escaped name>`.
pub fn device_path(hba: u32, name: &str) -> String {
    format!("{DEVICES_PATH}/{hba}_{}", escape_path_element(name))
}

/// Escapes `s` into a valid object path element: ASCII letters and digits
/// stay, every other byte (`_` included, so the mapping is one-to-one)
/// becomes `_` and two lower-case hex digits. The empty string becomes `_`.
pub fn escape_path_element(s: &str) -> String {
    if s.is_empty() {
        return "_".to_owned();
    }
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("_{b:02x}"));
        }
    }
    out
}

/// Checks that an out-of-process handler's subtype can name both a bus
/// name element and an object path element (`[A-Za-z_][A-Za-z0-9_]*`, at
/// most 64 bytes); `Err` carries a message for the caller.
pub fn check_subtype(subtype: &str) -> Result<(), String> {
    let valid = !subtype.is_empty()
        && subtype.len() <= 64
        && subtype
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !subtype.as_bytes()[0].is_ascii_digit();
    if valid {
        Ok(())
    } else {
        Err(format!(
            "invalid subtype '{subtype}': expected letters, digits and '_', not starting with a digit"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zbus::ObjectPath;

    #[test]
    fn escapes_device_names() {
        assert_eq!(device_path(1, "d0"), "/org/kernel/TCMUService1/device/1_d0");
        assert_eq!(escape_path_element("disk-1.a_b"), "disk_2d1_2ea_5fb");
        assert_eq!(escape_path_element(""), "_");
        assert_eq!(escape_path_element("é"), "_c3_a9");
        for name in ["d0", "a-b", "x y", "_", "ünï", "9.9"] {
            let path = device_path(12, name);
            assert!(ObjectPath::try_from(path.as_str()).is_ok(), "{path}");
        }
        // One-to-one: '_' is escaped too.
        assert_ne!(escape_path_element("a_2d"), escape_path_element("a-"));
    }

    #[test]
    fn checks_subtypes() {
        assert!(check_subtype("glfs").is_ok());
        assert!(check_subtype("my_handler2").is_ok());
        for bad in ["", "2x", "a-b", "a.b", "a/b", &"x".repeat(65)] {
            assert!(check_subtype(bad).is_err(), "{bad}");
        }
        assert_eq!(
            external_bus_name("glfs"),
            "org.kernel.TCMUService1.HandlerManager1.glfs"
        );
        assert_eq!(
            external_object_path("glfs"),
            "/org/kernel/TCMUService1/HandlerManager1/glfs"
        );
    }
}
