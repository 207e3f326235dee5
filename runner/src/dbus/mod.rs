//! The D-Bus service `org.kernel.TCMUService1` on the system bus, as
//! targetcli-fb expects it from tcmu-runner:
//!
//! - `/org/kernel/TCMUService1`: an ObjectManager listing exactly the
//!   handler objects ([`object_manager`]);
//! - `/org/kernel/TCMUService1/<subtype>`, interface
//!   `org.kernel.TCMUService1`: `ConfigDesc` and `CheckConfig` ([`handler`]);
//! - `/org/kernel/TCMUService1/HandlerManager1`: `RegisterHandler` for
//!   out-of-process handlers ([`manager`], [`external`]);
//! - `/org/kernel/TCMUService1/device/<hba>_<name>`, interface
//!   `org.kernel.TCMUService1.Device1`: per-device statistics
//!   ([`device`]), under their own ObjectManager.
//!
//! Methods are for root only ([`access`], and the bus policy). The
//! service runs on its own thread and runtime, so a slow or missing bus
//! never delays I/O or netlink events; it reconnects on its own
//! ([`service`]).

mod access;
mod device;
pub mod external;
mod handler;
mod manager;
mod names;
mod object_manager;
mod service;

#[cfg(test)]
mod bus_test;

pub use external::ExternalHandlers;

use crate::devices::DeviceTable;
use tcmu_runtime::Registry;

/// Starts the D-Bus service on a thread of its own; it runs until the
/// process exits. An error means the thread could not be started.
pub fn start(
    registry: Registry,
    table: DeviceTable,
    external: ExternalHandlers,
) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let service = service::Service {
        registry,
        table,
        external,
        address: None,
    };
    std::thread::Builder::new()
        .name("dbus".to_owned())
        .spawn(move || runtime.block_on(service.run()))?;
    Ok(())
}
