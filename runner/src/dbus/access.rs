//! Who may call the service's methods: root only. The bus policy
//! (`runner/dist/dbus-1/system.d/tcmu-runner.conf`) refuses others first;
//! this is the second line, asking the bus for the caller's uid.

use zbus::fdo::{self, DBusProxy};
use zbus::message::Header;
use zbus::Connection;

/// The uid of the process that sent `header`'s message.
async fn caller_uid(conn: &Connection, header: &Header<'_>) -> fdo::Result<u32> {
    if !conn.is_bus() {
        // Peer to peer: the socket's credentials.
        let creds = conn
            .peer_creds()
            .await
            .map_err(|e| fdo::Error::AccessDenied(format!("cannot identify the caller: {e}")))?;
        return creds
            .unix_user_id()
            .ok_or_else(|| fdo::Error::AccessDenied("cannot identify the caller".to_owned()));
    }
    let sender = header
        .sender()
        .ok_or_else(|| fdo::Error::AccessDenied("the call has no sender".to_owned()))?;
    let bus = DBusProxy::new(conn).await?;
    bus.get_connection_unix_user(sender.clone().into()).await
}

/// Refuses `method` with `org.freedesktop.DBus.Error.AccessDenied` unless
/// the caller runs as root.
pub async fn require_root(conn: &Connection, header: &Header<'_>, method: &str) -> fdo::Result<()> {
    let uid = caller_uid(conn, header).await?;
    if uid == 0 {
        Ok(())
    } else {
        tracing::warn!("D-Bus: {method} refused to uid {uid}");
        Err(denied(method, uid))
    }
}

/// The error a non-root caller of `method` gets.
fn denied(method: &str, uid: u32) -> fdo::Error {
    fdo::Error::AccessDenied(format!(
        "{method} is only for root (the caller runs as uid {uid})"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn denial_names_the_method_and_uid() {
        let e = denied("CheckConfig", 65534);
        assert!(
            matches!(&e, fdo::Error::AccessDenied(m) if m.contains("CheckConfig") && m.contains("65534"))
        );
    }
}
