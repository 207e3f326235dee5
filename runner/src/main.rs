//! `tcmu-runner`: the tcmu-rs daemon, a drop-in for the C tcmu-runner.
//!
//! Start-up: parse flags, set up logging, take the single-instance lock,
//! raise the open-files limit, start the worker threads, then hand over to
//! the control loop in [`daemon`] on a current-thread tokio runtime.
#![forbid(unsafe_code)]

mod cli;
mod daemon;
mod dbus;
mod devices;
mod handlers;
mod lock;
mod logging;

use clap::Parser;
use tracing::{error, info, warn};

fn raise_nofile(n: u64) {
    let limit = rustix::process::Rlimit {
        current: Some(n),
        maximum: Some(n),
    };
    if let Err(e) = rustix::process::setrlimit(rustix::process::Resource::Nofile, limit) {
        warn!("cannot raise the open-files limit to {n}: {e}");
    }
}

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    let level = if cli.debug { 4 } else { logging::DEFAULT_LEVEL };
    let dir = logging::log_dir(cli.log_dir.as_deref());
    if let Err(e) = logging::init(level, &dir) {
        eprintln!("tcmu-runner: {e:#}");
        return std::process::ExitCode::FAILURE;
    }
    match run(&cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: &cli::Cli) -> anyhow::Result<()> {
    let _lock = lock::acquire(&cli.lock_file)?;
    if let Some(n) = cli.nofile {
        raise_nofile(n);
    }
    if let Some(p) = &cli.handler_path {
        info!(
            "--handler-path {} ignored: handlers are compiled in",
            p.display()
        );
    }
    let registry = handlers::registry();
    let count = cli.workers.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let workers = tcmu_runtime::Workers::start(count)?;
    info!(
        "tcmu-runner {} starting with {count} worker(s)",
        env!("CARGO_PKG_VERSION")
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let table = devices::DeviceTable::default();
    let external = dbus::ExternalHandlers::default();
    // The bus name appears once devices are recovered (systemd's Type=dbus).
    let start_dbus = {
        let (registry, table, external) = (registry.clone(), table.clone(), external.clone());
        move || {
            if let Err(e) = dbus::start(registry, table, external) {
                warn!("cannot start the D-Bus service: {e}");
            }
        }
    };
    rt.block_on(daemon::run(registry, workers, table, external, start_dbus))
}
