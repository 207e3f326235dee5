//! `cargo xtask soak [--minutes N]`: the long restart test. Boots the VM
//! and runs `tests/vm/soak.sh`: mixed fio on 4 LUNs with periodic kill -9
//! and SIGTERM restarts, takeovers, resizes and removal/re-adding of a
//! spare LUN; the guest's pass/fail summary is copied to
//! `target/soak/summary.txt` and printed. Not part of `vm-test`.

use std::fs;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::paths::Paths;
use crate::{setup, vm, VmOptions};

/// What `cargo xtask help` says of `soak`.
pub const USAGE: &str = "  soak [--minutes N] [--event-secs S] [--no-build]
                        the soak test in the VM (tests/vm/soak.sh): fio
                        (randwrite+verify, randrw, sequential) on 4 LUNs for
                        N minutes (default 10, or $SOAK_MINUTES) with an
                        event every S seconds (default 15): kill -9 and
                        SIGTERM restarts, takeovers, resizes, removal and
                        re-adding of a spare LUN; prints the summary and
                        writes it to target/soak/summary.txt
";

/// `soak`'s options.
pub struct Options {
    /// Minutes of fio and events.
    minutes: u64,
    /// Seconds between events.
    event_secs: u64,
    /// Use the existing release build.
    no_build: bool,
}

impl Options {
    /// Parses the command line; defaults from the environment.
    pub fn parse(args: &[String]) -> Result<Self> {
        let mut o = Options {
            minutes: crate::env_u64("SOAK_MINUTES")?.unwrap_or(10),
            event_secs: crate::env_u64("SOAK_EVENT_SECS")?.unwrap_or(15),
            no_build: false,
        };
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let mut value = |name: &str| crate::next_u64(&mut it, name);
            match arg.as_str() {
                "--minutes" => o.minutes = value("--minutes")?,
                "--event-secs" => o.event_secs = value("--event-secs")?,
                "--no-build" => o.no_build = true,
                other => bail!("soak: unknown argument {other:?}\n\n{USAGE}"),
            }
        }
        if o.minutes == 0 || o.event_secs < 5 {
            bail!("soak: --minutes must be at least 1 and --event-secs at least 5");
        }
        Ok(o)
    }
}

/// Runs the soak test and reports its summary.
pub fn run(paths: &Paths, opts: &Options) -> Result<()> {
    let kernel = setup::run(paths)?;
    if !opts.no_build {
        crate::build_runner(paths)?;
    }
    // Boot, set-up and the final checks take a few minutes under TCG.
    let vm_opts = VmOptions {
        timeout: Duration::from_secs(opts.minutes * 60 + 900),
        fio_runtime: 30,
        no_build: true,
        positional: Vec::new(),
    };
    let mut run = crate::guest_run(paths, &vm_opts, paths.tests_vm.join("soak.sh"), None)?;
    run.extra_env
        .push(("SOAK_MINUTES".into(), opts.minutes.to_string()));
    run.extra_env
        .push(("SOAK_EVENT_SECS".into(), opts.event_secs.to_string()));
    let outcome = vm::boot_and_run(paths, &kernel, &run)?;
    let guest_summary = paths.vm.join("out/soak/summary.txt");
    let dest_dir = paths.root.join("target/soak");
    fs::create_dir_all(&dest_dir)
        .with_context(|| format!("cannot create {}", dest_dir.display()))?;
    let dest = dest_dir.join("summary.txt");
    match fs::read_to_string(&guest_summary) {
        Ok(text) => {
            fs::write(&dest, &text).with_context(|| format!("cannot write {}", dest.display()))?;
            println!("{text}");
            eprintln!("xtask: soak summary written to {}", dest.display());
        }
        Err(e) => {
            let _ = fs::remove_file(&dest);
            eprintln!(
                "xtask: the guest wrote no soak summary ({}: {e})",
                guest_summary.display()
            );
        }
    }
    outcome.into_result()
}
