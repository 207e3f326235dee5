//! `tcmu-runner`: the tcmu-rs daemon, a drop-in for the C tcmu-runner.
//!
//! Start-up: parse flags, read tcmu.conf ([`conf`]), set up logging, start
//! watching tcmu.conf for changes ([`start_config`]), start the worker
//! threads, take the single-instance lock (with `--takeover`, after asking
//! the running daemon to hand over: see [`takeover`]), raise the open-files
//! limit, then hand over to the control loop in [`daemon`] on a
//! current-thread tokio runtime.
#![forbid(unsafe_code)]

mod cli;
mod conf;
mod daemon;
mod dbus;
mod devices;
mod handlers;
mod lock;
mod logging;
mod metrics;
mod scope;
mod service_manager;
mod takeover;
mod upgrade;

use clap::Parser;
use tokio::sync::watch;
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

/// Reads tcmu.conf, installs the logger at its settings and starts the
/// watcher that re-reads the file on change (applying log level and
/// directory changes at once). The returned [`conf::ConfWatch`] must live as
/// long as the daemon; its `subscribe()` gives a
/// `tokio::sync::watch::Receiver<conf::Settings>` for other parts (the
/// metrics writer follows `metrics_file` and `metrics_interval` there).
fn start_config(cli: &cli::Cli) -> anyhow::Result<conf::ConfWatch> {
    let layers = conf::Layers::from_cli(cli);
    let loaded = conf::load_initial(&layers);
    // A log_dir in tcmu.conf that cannot be used must not keep the daemon
    // (and every LUN) down: log where -l/$TCMU_LOGDIR/the default say. The
    // settings keep the file's value, so only a new value is tried again.
    let fallback = layers.defaults().log_dir;
    let log = match logging::init(&loaded.settings) {
        Err(e) if loaded.settings.log_dir != fallback => {
            let log = logging::init(&conf::Settings {
                log_dir: fallback,
                ..loaded.settings.clone()
            })?;
            error!("{e:#}; log_dir from {} not used", layers.path.display());
            log
        }
        other => other?,
    };
    loaded.log_problems(&layers.path);
    info!(
        "configuration {}: log level {} ({}), log dir {}",
        layers.path.display(),
        loaded.settings.log_level,
        logging::level_name(loaded.settings.log_level),
        loaded.settings.log_dir.display()
    );
    let watch = conf::watch(layers, loaded.settings, move |old, new| log.apply(old, new))?;
    Ok(watch)
}

/// Sets the workers' ring polling (tcmu.conf `ring_poll_us`) and says so.
fn apply_ring_poll(window: std::time::Duration) {
    tcmu_runtime::set_ring_poll(window);
    if window.is_zero() {
        info!("ring_poll_us 0: idle devices sleep at once");
    } else {
        info!(
            "ring_poll_us {}: idle devices poll their rings that long before sleeping",
            window.as_micros()
        );
    }
}

fn main() -> std::process::ExitCode {
    // Started by a daemon's SIGUSR1 only to start its successor.
    if let Some(code) = upgrade::run_starter() {
        return code;
    }
    let cli = cli::Cli::parse();
    let conf = match start_config(&cli) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("tcmu-runner: {e:#}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match run(&cli, conf.subscribe()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: &cli::Cli, mut conf: watch::Receiver<conf::Settings>) -> anyhow::Result<()> {
    let registry = handlers::registry();
    // Resolved now: after a package upgrade the same path names the new
    // binary, which SIGUSR1 starts as this daemon's successor.
    let launch = upgrade::Launch::current();
    let count = cli.workers.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    // Workers first: a successor (--takeover) does its slow start-up
    // before the running daemon pauses the devices.
    let workers = tcmu_runtime::Workers::start(count)?;
    let lock = if cli.takeover {
        takeover::take_over(&cli.lock_file)?
    } else {
        lock::acquire(&cli.lock_file)?
    };
    if let Some(n) = cli.nofile {
        raise_nofile(n);
    }
    if let Some(p) = &cli.handler_path {
        info!(
            "--handler-path {} ignored: handlers are compiled in",
            p.display()
        );
    }
    info!(
        "tcmu-runner {} starting with {count} worker(s)",
        env!("CARGO_PKG_VERSION")
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let table = devices::DeviceTable::default();
    let external = dbus::ExternalHandlers::default();
    // The bus name appears once devices are recovered.
    let start_dbus = {
        let (registry, table, external) = (registry.clone(), table.clone(), external.clone());
        let no_dbus = cli.no_dbus;
        move || {
            if no_dbus {
                info!("--no-dbus: not serving org.kernel.TCMUService1");
            } else if let Err(e) = dbus::start(registry, table, external) {
                warn!("cannot start the D-Bus service: {e}");
            }
        }
    };
    let scope = scope::Scope::only(cli.devices.clone());
    // The metrics writer follows tcmu.conf's metrics_file/metrics_interval.
    // Ring polling follows ring_poll_us.
    let (metrics_tx, metrics_rx, mut ring_poll) = {
        let first = conf.borrow_and_update();
        apply_ring_poll(first.ring_poll);
        let (tx, rx) = watch::channel(metrics::MetricsSettings::from(&*first));
        (tx, rx, first.ring_poll)
    };
    rt.block_on(async {
        tokio::spawn(async move {
            while conf.changed().await.is_ok() {
                let settings = conf.borrow_and_update().clone();
                if settings.ring_poll != ring_poll {
                    ring_poll = settings.ring_poll;
                    apply_ring_poll(ring_poll);
                }
                let next = metrics::MetricsSettings::from(&settings);
                metrics_tx.send_if_modified(|cur| {
                    let changed = *cur != next;
                    *cur = next;
                    changed
                });
            }
        });
        let metrics = metrics::spawn(table.clone(), metrics_rx);
        let result = daemon::run(
            daemon::Parts {
                registry,
                workers,
                table,
                external,
                scope,
            },
            lock,
            launch,
            start_dbus,
        )
        .await;
        metrics.shutdown().await;
        result
    })
}
