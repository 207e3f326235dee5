//! `cargo xtask <command>`: project tasks that need more than `cargo`.
//!
//! Commands:
//! - `setup`: install the host packages and build the cached test VM
//!   (Debian kernel + busybox initramfs under `target/vm/`).
//! - `vm-test [FILTER]`: build `tcmu-runner` and the library crates'
//!   examples in release and run the acceptance tests
//!   (`tests/vm/run-all.sh`) inside the VM.
//! - `demo`: like `vm-test`, but run `tests/vm/demo.sh`.
//! - `vm-run SCRIPT`: boot the VM and run any guest script (no build).
//! - `debvm-test [SCRIPT]`: build the package and run a script (default
//!   `tests/debvm/lifecycle.sh`) in the Debian VM, a debootstrapped bookworm
//!   booting systemd (image cached under `target/debvm/`).
//! - `debvm-image`: build that image (and its initramfs) without booting.
//! - `test`: the docs' links, unit tests, clippy, rustfmt, rustdoc,
//!   `package-test`, then `vm-test` and `debvm-test`.
//! - `check-docs [--verbose]`: every link of the repository's Markdown files
//!   resolves (relative files, `#anchors`, references).
//! - `fuzz [--runs N] [--sanitizer S] [TARGET]`: run the cargo-fuzz targets under `fuzz/`.
//! - `install [--prefix P] [--destdir D] [--no-build]`: lay out the daemon
//!   and its system files as a package does.
//! - `deb`: build the Debian package (cargo-deb) into `target/debian/`.
//! - `bench`: fio on the kernel's `fileio`, Debian's C tcmu-runner and
//!   ours in one VM boot; `target/bench/report.md` and `report.png`.
//! - `microbench [ARGS]`: the criterion micro-benchmark of the data path
//!   over the simulated kernel (no VM), in seconds.
//! - `ha-test [--c]`: two gateway VMs on one rbd image, an initiator with
//!   open-iscsi and multipathd, failovers (`tests/vm/ha/`); not part of
//!   `test`.
//! - `soak [--minutes N]`: the long restart and takeover test in the VM
//!   (`tests/vm/soak.sh`); summary in `target/soak/summary.txt`.
//! - `semver [--baseline-rev REV | --baseline-version VER]`: the library
//!   crates' public API against a baseline (cargo-semver-checks).
//! - `package-test`: check the unit, the package's files and a dpkg
//!   upgrade from Debian's C package in a throwaway root (part of `test`).

mod bench;
mod checks;
mod cmd;
mod deb;
mod debvm;
mod docs;
mod fuzz;
mod ha;
mod hash;
mod install;
mod microbench;
mod paths;
mod pkgtest;
mod semver;
mod setup;
mod soak;
mod vm;

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::paths::Paths;
use crate::vm::GuestRun;

/// What `cargo xtask help` prints (`{BENCH}`, `{MICROBENCH}`, `{SOAK}`, `{HA}`,
/// `{SEMVER}` and `{CHECK_DOCS}` stand for [`bench::USAGE`],
/// [`microbench::USAGE`], [`soak::USAGE`], [`ha::USAGE`], [`semver::USAGE`] and
/// [`docs::USAGE`]).
const USAGE_TEMPLATE: &str = "\
usage: cargo xtask <command> [options]

commands:
  setup                 install host packages (apt), fetch the Debian kernel,
                        build the VM initramfs (all cached under target/vm/)
  vm-test [FILTER]      build tcmu-runner and the library examples (release)
                        and run tests/vm/t-*.sh in
                        the VM; FILTER selects tests by name (extended regex,
                        e.g. t-10 or 't-10|t-30'); each host variable
                        GUEST_<NAME> goes to the tests as $<NAME>
  demo                  build tcmu-runner (release) and run tests/vm/demo.sh
                        in the VM
  vm-run SCRIPT [ARG]   boot the VM and run SCRIPT (a path on this host) in it,
                        without building anything; ARG goes to $XT_ARG, and
                        each host variable GUEST_<NAME> to $<NAME>
  debvm-test [SCRIPT]   build the package (cargo xtask deb) and run SCRIPT
                        (default tests/debvm/lifecycle.sh) in the Debian VM:
                        bookworm with systemd as PID 1, its image made once
                        with debootstrap (target/debvm/root.img); the script
                        finds the package as $TCMU_DEB
  debvm-image           build (or check up to date) the Debian VM's image and
                        initramfs under target/debvm/ without booting
  test                  check-docs, cargo test, clippy -D warnings,
                        fmt --check, doc, package-test, vm-test, debvm-test
{CHECK_DOCS}  fuzz [--runs N] [--sanitizer S] [TARGET]
                        run each cargo-fuzz target under fuzz/ (or TARGET) for
                        N executions (default 1000000); fails on any crash;
                        S: cargo fuzz's sanitizer (default address; none is
                        faster)
  install [--prefix P] [--destdir D] [--no-build]
                        build tcmu-runner (release) and install it with its
                        systemd unit, D-Bus policy and activation file,
                        logrotate file, tcmu.conf (never overwritten) and man
                        page, at Debian's paths (default prefix /usr)
  deb                   build the Debian package target/debian/tcmu-runner_*.deb
                        (cargo-deb, installed when missing); `dpkg -i` it to
                        replace Debian's C tcmu-runner
{BENCH}{MICROBENCH}{SOAK}{HA}{SEMVER}  package-test          systemd-analyze verify the unit, compare the .deb with
                        Debian's tcmu-runner package, install both with dpkg
                        into a throwaway root under target/pkgtest/ (root)

options (vm-test, demo, vm-run, debvm-test, test):
  --timeout SECS        fail when the guest has not finished after SECS
                        (default 2700, or $XTASK_VM_TIMEOUT)
  --fio-runtime SECS    fio run time per job in the guest tests
                        (default 60, or $FIO_RUNTIME)
  --no-build            vm-test/demo: use the existing target/release/tcmu-runner;
                        debvm-test: the existing target/debian package

environment passed on to the guest: FIO_RUNTIME, TEST_TIMEOUT (seconds per
test), TCMU_DEBUG (start the daemon with -d), HARNESS_SELFTEST (run the test
scripts against kernel fileio stand-ins, to check the harness itself),
CONFORMANCE_REPORT_ONLY (t-35 reports mismatches with fileio without failing),
ISCSI_TEST_CU (iscsi-test-cu families or suites t-80-iscsi runs, e.g.
SCSI,iSCSI; default: a list of SBC/SPC suites), CHURN_ROUNDS, CHURN_LUNS,
CHURN_EXPORT, CHURN_EXPORT_EVERY, CHURN_PARALLEL, CHURN_RSS_SLACK_KIB
(t-43-churn's size), and any GUEST_<NAME> as <NAME>. XTASK_VM_KERNEL_ARGS:
words added to the guest kernel's command line (e.g. idle=poll).
Console: terminal and target/vm/console.log; guest reports and daemon logs:
target/vm/out/.
";

/// The usage text.
fn usage() -> String {
    USAGE_TEMPLATE
        .replace("{BENCH}", bench::USAGE)
        .replace("{MICROBENCH}", microbench::USAGE)
        .replace("{SOAK}", soak::USAGE)
        .replace("{HA}", ha::USAGE)
        .replace("{SEMVER}", semver::USAGE)
        .replace("{CHECK_DOCS}", docs::USAGE)
}

/// Options shared by the commands that boot the VM.
struct VmOptions {
    /// Wall-clock limit for the whole guest run.
    timeout: Duration,
    /// `FIO_RUNTIME` passed to the guest tests.
    fio_runtime: u64,
    /// Skip `cargo build --release -p tcmu-runner`.
    no_build: bool,
    /// Positional arguments left after the options.
    positional: Vec<String>,
}

impl VmOptions {
    /// Parses `--timeout`, `--fio-runtime`, `--no-build` and positional
    /// arguments; defaults come from the environment.
    fn parse(args: &[String]) -> Result<Self> {
        let mut opts = VmOptions {
            timeout: Duration::from_secs(env_u64("XTASK_VM_TIMEOUT")?.unwrap_or(2700)),
            fio_runtime: env_u64("FIO_RUNTIME")?.unwrap_or(60),
            no_build: false,
            positional: Vec::new(),
        };
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            match arg.as_str() {
                "--timeout" => {
                    let v = it.next().context("--timeout needs a value (seconds)")?;
                    opts.timeout = Duration::from_secs(parse_u64("--timeout", v)?);
                }
                "--fio-runtime" => {
                    let v = it.next().context("--fio-runtime needs a value (seconds)")?;
                    opts.fio_runtime = parse_u64("--fio-runtime", v)?;
                }
                "--no-build" => opts.no_build = true,
                s if s.starts_with("--") => bail!("unknown option {s}\n\n{}", usage()),
                s => opts.positional.push(s.to_owned()),
            }
        }
        Ok(opts)
    }

    /// Returns the single optional positional argument, failing on more.
    fn at_most_one(&self, what: &str) -> Result<Option<&str>> {
        match self.positional.as_slice() {
            [] => Ok(None),
            [one] => Ok(Some(one)),
            _ => bail!(
                "{what}: expected at most one argument, got {:?}",
                self.positional
            ),
        }
    }
}

/// Parses a non-negative integer option value.
fn parse_u64(name: &str, v: &str) -> Result<u64> {
    v.parse()
        .with_context(|| format!("{name}: {v:?} is not a whole number"))
}

/// Reads an optional integer from the environment.
fn env_u64(name: &str) -> Result<Option<u64>> {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => parse_u64(name, &v).map(Some),
        _ => Ok(None),
    }
}

/// The number that follows option `name` on a command line (`--runs N`).
fn next_u64<'a>(args: &mut impl Iterator<Item = &'a String>, name: &str) -> Result<u64> {
    let v = args
        .next()
        .with_context(|| format!("{name} needs a value"))?;
    parse_u64(name, v)
}

/// Runs the command line; exit status 1 on any failure.
fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        // A failed VM run already printed its verdict and summary line,
        // which must stay the last line of output.
        Err(e) if e.is::<vm::Reported>() => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Dispatches the command line.
fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((command, rest)) = args.split_first() else {
        eprint!("{}", usage());
        bail!("no command given");
    };
    let paths = Paths::discover()?;
    match command.as_str() {
        "setup" => {
            if !rest.is_empty() {
                bail!("setup takes no arguments");
            }
            setup::run(&paths).map(|_| ())
        }
        "vm-test" => {
            let opts = VmOptions::parse(rest)?;
            let filter = opts.at_most_one("vm-test")?.map(str::to_owned);
            vm_test(&paths, &opts, filter)
        }
        "demo" => {
            let opts = VmOptions::parse(rest)?;
            opts.at_most_one("demo")?;
            let kernel = setup::run(&paths)?;
            if !opts.no_build {
                build_runner(&paths)?;
            }
            let run = guest_run(&paths, &opts, paths.tests_vm.join("demo.sh"), None)?;
            vm::boot_and_run(&paths, &kernel, &run)?.into_result()
        }
        "vm-run" => {
            let opts = VmOptions::parse(rest)?;
            let (script, arg) = match opts.positional.as_slice() {
                [s] => (s.clone(), None),
                [s, a] => (s.clone(), Some(a.clone())),
                _ => bail!("vm-run: expected SCRIPT [ARG]"),
            };
            let script =
                std::path::absolute(&script).with_context(|| format!("cannot resolve {script}"))?;
            let kernel = setup::run(&paths)?;
            let mut run = guest_run(&paths, &opts, script, None)?;
            run.extra_env
                .push(("XT_ARG".into(), arg.unwrap_or_default()));
            run.extra_env.extend(c_peer_env(&paths)?);
            vm::boot_and_run(&paths, &kernel, &run)?.into_result()
        }
        "debvm-test" => debvm::run(&paths, &VmOptions::parse(rest)?),
        "debvm-image" => {
            if !rest.is_empty() {
                bail!("debvm-image takes no arguments");
            }
            debvm::prepare(&paths)
        }
        "test" => {
            let opts = VmOptions::parse(rest)?;
            opts.at_most_one("test")?;
            checks::run_host_checks(&paths)?;
            pkgtest::run(&paths)?;
            vm_test(&paths, &opts, None)?;
            // The package's life under systemd; reuses the release build
            // vm-test made (about 5 min, 6 with the image built).
            debvm::run(&paths, &opts)
        }
        "check-docs" => docs::run(&paths, &docs::Options::parse(rest)?),
        "fuzz" => fuzz::run(&paths, &fuzz::Options::parse(rest)?),
        "install" => install::run(&paths, &install::Options::parse(rest)?).map(|_| ()),
        "deb" => {
            if !rest.is_empty() {
                bail!("deb takes no arguments");
            }
            deb::build(&paths).map(|_| ())
        }
        "bench" => bench::run(&paths, &bench::Options::parse(rest)?),
        "microbench" => microbench::run(&paths, rest),
        "soak" => soak::run(&paths, &soak::Options::parse(rest)?),
        "ha-test" => ha::run(&paths, &ha::Options::parse(rest)?),
        "semver" => semver::run(&paths, &semver::Options::parse(rest)?),
        "package-test" => {
            if !rest.is_empty() {
                bail!("package-test takes no arguments");
            }
            pkgtest::run(&paths)
        }
        "help" | "-h" | "--help" => {
            print!("{}", usage());
            Ok(())
        }
        other => bail!("unknown command {other:?}\n\n{}", usage()),
    }
}

/// `vm-test`: set up, build, run the acceptance suite in the VM.
fn vm_test(paths: &Paths, opts: &VmOptions, filter: Option<String>) -> Result<()> {
    let kernel = setup::run(paths)?;
    if !opts.no_build {
        build_runner(paths)?;
    }
    let mut run = guest_run(paths, opts, paths.tests_vm.join("run-all.sh"), filter)?;
    run.extra_env.extend(c_peer_env(paths)?);
    vm::boot_and_run(paths, &kernel, &run)?.into_result()
}

/// Debian's peers of the tests, unpacked: the C tcmu-runner under
/// `target/vm/c-peer/` for the tests that compare with it (`t-26-zbc`
/// against its `handler_file_zbc.so`), as the guest variables
/// `C_TCMU_BIN`, `C_TCMU_LIBDIR`, `C_TCMU_HANDLERS`; ceph-iscsi under
/// `target/vm/ceph-iscsi/` (`t-58-ceph-iscsi`), as `CEPH_ISCSI_ROOT`.
fn c_peer_env(paths: &Paths) -> Result<Vec<(String, String)>> {
    let mut apt = setup::Apt::default();
    let peer = bench::cpeer::ensure_debian(&paths.root.join("target/vm/c-peer"), &mut apt)?;
    let ceph_iscsi =
        bench::cpeer::ensure_ceph_iscsi(&paths.root.join("target/vm/ceph-iscsi"), &mut apt)?;
    let mut env = peer.guest_env();
    env.push((
        "CEPH_ISCSI_ROOT".into(),
        ceph_iscsi.to_string_lossy().into_owned(),
    ));
    Ok(env)
}

/// Builds the daemon the guest tests run, and the library crates'
/// examples they run too (`$EXAMPLES_DIR`). Two builds: the examples'
/// dev-dependencies turn on features (the simulator) that the daemon
/// binary must not be rebuilt with.
fn build_runner(paths: &Paths) -> Result<()> {
    // The rbd handler links librbd and librados.
    setup::Apt::default().ensure(setup::RBD_PACKAGES)?;
    cmd::run(
        cmd::cargo()
            .args(["build", "--release", "-p", "tcmu-runner"])
            .current_dir(&paths.root),
    )
    .context("building tcmu-runner (release) failed")?;
    cmd::run(
        cmd::cargo()
            .args([
                "build",
                "--release",
                "-p",
                "tcmu-core",
                "-p",
                "tcmu-runtime",
                "--examples",
            ])
            .current_dir(&paths.root),
    )
    .context("building the examples of tcmu-core and tcmu-runtime (release) failed")
}

/// Describes one guest run: script, environment and limits.
fn guest_run(
    paths: &Paths,
    opts: &VmOptions,
    script: std::path::PathBuf,
    filter: Option<String>,
) -> Result<GuestRun> {
    if !script.is_file() {
        bail!("guest script {} does not exist", script.display());
    }
    // The guest mounts fresh tmpfs over these: the host's files are hidden.
    if ["/run", "/dev", "/proc", "/sys"]
        .iter()
        .any(|d| script.starts_with(d))
    {
        bail!(
            "guest script {} is under a folder the guest hides (tmpfs/pseudo fs); put it elsewhere",
            script.display()
        );
    }
    Ok(GuestRun {
        script,
        timeout: opts.timeout,
        extra_env: vec![
            (
                "TCMU_RUNNER".into(),
                paths.release_runner().display().to_string(),
            ),
            (
                "EXAMPLES_DIR".into(),
                paths
                    .root
                    .join("target/release/examples")
                    .display()
                    .to_string(),
            ),
            ("FIO_RUNTIME".into(), opts.fio_runtime.to_string()),
            ("TEST_FILTER".into(), filter.unwrap_or_default()),
        ]
        .into_iter()
        .chain(guest_variables())
        .collect(),
        kernel_args: std::env::var("XTASK_VM_KERNEL_ARGS")
            .unwrap_or_default()
            .split_whitespace()
            .map(String::from)
            .collect(),
        qemu_args: Vec::new(),
    })
}

/// The host's `GUEST_<NAME>` variables, as `<NAME>` for the guest (test
/// knobs such as `GUEST_CHURN_LUNS=64`).
fn guest_variables() -> impl Iterator<Item = (String, String)> {
    std::env::vars().filter_map(|(k, v)| {
        k.strip_prefix("GUEST_")
            .filter(|name| !name.is_empty())
            .map(|name| (name.to_owned(), v))
    })
}
