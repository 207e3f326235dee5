//! A handler of your own, served by `tcmu-runtime` without the
//! `tcmu-runner` daemon: `user:xor` backstores, RAM disks that keep their
//! data XORed with a key (`dev_config=xor/<hex key>`).
//!
//! ```sh
//! cargo run --release -p tcmu-runtime --example custom_handler   # as root
//! mkdir /sys/kernel/config/target/core/user_1/x0
//! echo dev_size=67108864 > /sys/kernel/config/target/core/user_1/x0/control
//! echo dev_config=xor/5a3c > /sys/kernel/config/target/core/user_1/x0/control
//! echo 1 > /sys/kernel/config/target/core/user_1/x0/enable
//! ```
//!
//! Then export it through any fabric. It is the only TCMU daemon while it
//! runs: devices of other subtypes are refused. SIGTERM or SIGINT stop it.
//! `xor.rs` is the handler; `tcmu_runtime::serve` does the rest (recovery
//! of existing devices, the kernel's events and their answers).

mod xor;

use std::sync::Arc;

use tcmu_runtime::serve::{serve, terminated, Others, ServeOptions};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Logs to stderr, in colour only on a terminal.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let mut registry = tcmu_runtime::Registry::new();
    registry.register(Arc::new(xor::XorFactory));
    // The only TCMU daemon here: other subtypes are refused.
    let options = ServeOptions::new(Others::Refuse).with_workers(1);
    serve(registry, options, terminated()?).await?;
    Ok(())
}
