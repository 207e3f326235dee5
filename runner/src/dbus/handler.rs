//! The handler objects, `/org/kernel/TCMUService1/<subtype>` with
//! interface `org.kernel.TCMUService1`: what targetcli-fb reads to list a
//! `user:<subtype>` backstore (`ConfigDesc`) and calls before creating one
//! (`CheckConfig`).
//!
//! targetcli passes the whole `dev_config`, `<subtype>/<cfgstring>` (for
//! `create cfgstring=/img` on `user:file`, `file//img`), and prints
//! `cfgstring invalid: <message>` when the answer is false. The answer
//! for a good configuration is `(true, "success")`, as tcmu-runner's.

use std::time::Duration;

use tcmu_runtime::{split_dev_config, HandlerError, Registry, Report};
use tracing::{debug, info};
use zbus::message::Header;
use zbus::{fdo, interface, Connection};

use super::access::require_root;
use super::names::{external_bus_name, external_object_path, HANDLER_INTERFACE};

/// How long a forwarded `CheckConfig` may take.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a handler's `CheckConfig` is answered.
#[derive(Clone)]
enum Backend {
    /// Compiled in: the registry's factory, as for a netlink ADDED event.
    Builtin(Registry),
    /// Another process, which serves its own `CheckConfig` at
    /// `/org/kernel/TCMUService1/HandlerManager1/<subtype>` under
    /// `org.kernel.TCMUService1.HandlerManager1.<subtype>`.
    External,
}

/// One handler object.
pub struct HandlerObject {
    subtype: String,
    cfg_desc: String,
    backend: Backend,
}

impl HandlerObject {
    /// The object of a compiled-in handler.
    pub fn builtin(registry: Registry, subtype: &str, cfg_desc: &str) -> Self {
        Self {
            subtype: subtype.to_owned(),
            cfg_desc: cfg_desc.to_owned(),
            backend: Backend::Builtin(registry),
        }
    }

    /// The object of an out-of-process handler.
    pub fn external(subtype: &str, cfg_desc: &str) -> Self {
        Self {
            subtype: subtype.to_owned(),
            cfg_desc: cfg_desc.to_owned(),
            backend: Backend::External,
        }
    }
}

/// Checks `dev_config` (`<subtype>/<cfgstring>`) against the compiled-in
/// handler `subtype`, with the very check a netlink ADDED event gets.
fn check_builtin(registry: &Registry, subtype: &str, dev_config: &str) -> Result<(), String> {
    let report = |e: HandlerError| Report(&e).to_string();
    let (given, _) = split_dev_config(dev_config).map_err(report)?;
    if given != subtype {
        return Err(format!(
            "configuration string '{dev_config}' is not for the '{subtype}' handler \
             (expected {subtype}/<config>)"
        ));
    }
    registry.check_dev_config(dev_config).map_err(report)
}

/// The `(is_valid, message)` answer for a check's result.
fn answer(result: Result<(), String>) -> (bool, String) {
    match result {
        Ok(()) => (true, "success".to_owned()),
        Err(msg) => (false, msg),
    }
}

/// Asks the out-of-process handler `subtype` to check `dev_config`; a
/// failed call is a refusal carrying the error.
async fn forward(conn: &Connection, subtype: &str, dev_config: &str) -> (bool, String) {
    let bus_name = external_bus_name(subtype);
    let path = external_object_path(subtype);
    let body = (dev_config,);
    let call = conn.call_method(
        Some(bus_name.as_str()),
        path.as_str(),
        Some(HANDLER_INTERFACE),
        "CheckConfig",
        &body,
    );
    match tokio::time::timeout(FORWARD_TIMEOUT, call).await {
        Err(_) => (
            false,
            format!(
                "handler {subtype} ({bus_name}) did not answer CheckConfig within {} s",
                FORWARD_TIMEOUT.as_secs()
            ),
        ),
        Ok(Err(e)) => (false, format!("handler {subtype} ({bus_name}): {e}")),
        Ok(Ok(reply)) => reply
            .body()
            .deserialize::<(bool, String)>()
            .unwrap_or_else(|e| {
                (
                    false,
                    format!("handler {subtype}: bad CheckConfig answer: {e}"),
                )
            }),
    }
}

#[interface(name = "org.kernel.TCMUService1")]
impl HandlerObject {
    /// The format of the configuration string.
    #[zbus(property(emits_changed_signal = "const"))]
    fn config_desc(&self) -> String {
        self.cfg_desc.clone()
    }

    /// Checks a configuration string (`<subtype>/<cfgstring>`) before a
    /// device is created with it. Root only.
    #[zbus(out_args("is_valid", "message"))]
    async fn check_config(
        &self,
        configstr: String,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> fdo::Result<(bool, String)> {
        require_root(conn, &header, "CheckConfig").await?;
        let (ok, message) = match &self.backend {
            Backend::Builtin(registry) => {
                answer(check_builtin(registry, &self.subtype, &configstr))
            }
            Backend::External => forward(conn, &self.subtype, &configstr).await,
        };
        if ok {
            debug!("D-Bus CheckConfig '{configstr}': valid");
        } else {
            info!("D-Bus CheckConfig '{configstr}': refused: {message}");
        }
        Ok((ok, message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_trait::async_trait;
    use std::sync::Arc;
    use tcmu_runtime::{DeviceConfig, Handler, HandlerFactory};

    struct Picky;

    #[async_trait(?Send)]
    impl HandlerFactory for Picky {
        fn subtype(&self) -> &str {
            "picky"
        }
        fn cfg_desc(&self) -> &str {
            "only 'good'"
        }
        fn check_config(&self, cfg: &str) -> Result<(), HandlerError> {
            if cfg == "good" {
                Ok(())
            } else {
                Err(HandlerError::invalid_config(format!(
                    "picky handler: '{cfg}' is not good"
                )))
            }
        }
        async fn open(&self, _: &DeviceConfig) -> Result<Handler, HandlerError> {
            Err(HandlerError::refused("never"))
        }
    }

    fn registry() -> Registry {
        let mut r = Registry::new();
        r.register(Arc::new(Picky));
        r
    }

    #[test]
    fn answers_like_tcmu_runner() {
        let r = registry();
        assert_eq!(
            answer(check_builtin(&r, "picky", "picky/good")),
            (true, "success".to_owned())
        );
        assert_eq!(
            answer(check_builtin(&r, "picky", "picky/bad")),
            (false, "picky handler: 'bad' is not good".to_owned())
        );
    }

    #[test]
    fn refuses_other_subtypes_and_bare_strings() {
        let r = registry();
        let (ok, msg) = answer(check_builtin(&r, "picky", "file//x"));
        assert!(!ok);
        assert!(msg.contains("not for the 'picky' handler"), "{msg}");
        let (ok, msg) = answer(check_builtin(&r, "picky", "good"));
        assert!(!ok);
        assert!(msg.contains("expected <subtype>/<config>"), "{msg}");
    }
}
