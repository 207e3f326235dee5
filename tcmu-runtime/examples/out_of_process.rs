//! An out-of-process handler: a program of its own that serves `user:xor`
//! backstores beside a running `tcmu-runner` daemon, the way tcmu-runner's
//! external handlers (gluster-block's, say) do.
//!
//! 1. It owns `org.kernel.TCMUService1.HandlerManager1.xor` on the system
//!    bus and answers `CheckConfig` there (the daemon forwards targetcli's
//!    checks of `xor/…` strings to it).
//! 2. It calls the daemon's `RegisterHandler("xor", …)`: targetcli then
//!    lists `user:xor` beside the daemon's own handlers, and the daemon
//!    leaves `xor` devices to this program.
//! 3. It serves those devices (recovering the ones that exist) and leaves
//!    every other device's events to the daemon.
//!
//! ```sh
//! tcmu-runner &                                                    # the daemon, as root
//! cargo run --release -p tcmu-runtime --example out_of_process &   # this, as root
//! targetcli /backstores/user:xor create name=x0 size=64M cfgstring=5a3c
//! ```
//!
//! Start it after the daemon: the daemon forgets registrations when it
//! restarts (as tcmu-runner does), and this program exits when its
//! registration is refused. SIGTERM or SIGINT stop it. The handler is the
//! `custom_handler` example's.

#[path = "custom_handler/xor.rs"]
mod xor;

use std::sync::Arc;

use tcmu_runtime::serve::{serve, terminated, Others, ServeOptions};
use tcmu_runtime::{HandlerFactory, Registry, Report};
use zbus::connection::Builder;

/// The subtype this program serves.
const SUBTYPE: &str = "xor";

/// The handler's object, at `/org/kernel/TCMUService1/HandlerManager1/xor`.
struct HandlerObject(Registry);

#[zbus::interface(name = "org.kernel.TCMUService1")]
impl HandlerObject {
    /// The format of the configuration string.
    #[zbus(property)]
    fn config_desc(&self) -> String {
        xor::XorFactory.cfg_desc().to_owned()
    }

    /// Checks `xor/<cfgstring>` as the daemon forwards it from targetcli.
    #[zbus(out_args("is_valid", "message"))]
    fn check_config(&self, configstr: String) -> (bool, String) {
        match self.0.check_dev_config(&configstr) {
            Ok(()) => (true, "success".to_owned()),
            Err(e) => (false, Report(&e).to_string()),
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let mut registry = Registry::new();
    registry.register(Arc::new(xor::XorFactory));

    let bus = Builder::system()
        .serve_at(
            format!("/org/kernel/TCMUService1/HandlerManager1/{SUBTYPE}"),
            HandlerObject(registry.clone()),
        )
        .name(format!("org.kernel.TCMUService1.HandlerManager1.{SUBTYPE}"))
        .build()
        .await?;
    let reply = bus
        .call_method(
            Some("org.kernel.TCMUService1"),
            "/org/kernel/TCMUService1/HandlerManager1",
            Some("org.kernel.TCMUService1.HandlerManager1"),
            "RegisterHandler",
            &(SUBTYPE, xor::XorFactory.cfg_desc()),
        )
        .await?;
    let (registered, message): (bool, String) = reply.body().deserialize()?;
    if !registered {
        return Err(format!("RegisterHandler refused: {message}").into());
    }
    tracing::info!("registered '{SUBTYPE}' with the daemon");

    // Beside the daemon: other subtypes' events are its to answer.
    let options = ServeOptions::new(Others::Leave).with_workers(1);
    serve(registry, options, terminated()?).await?;
    Ok(())
}
