//! `cargo xtask ha-test [--c] [--no-build]`: highly available gateways on
//! two kernels (issue 25).
//!
//! Two test VMs, each with its own kernel and its own daemon, joined by a
//! virtual Ethernet that exists only on this machine: each QEMU's
//! virtio-net card sends its frames as UDP datagrams to the other QEMU on
//! 127.0.0.1 (`-netdev dgram`), so the guests reach each other at
//! 10.99.0.1 and 10.99.0.2 and nothing else. VM "a"
//! (`tests/vm/ha/node-a.sh`) runs the Ceph cluster, one gateway and the
//! initiator (open-iscsi, udev, multipathd) and drives the test; VM "b"
//! (`tests/vm/ha/node-b.sh`) runs the other gateway and an agent that
//! carries out what "a" asks of it (`tests/vm/ha/agent.py`). When "a"
//! asks for it (a file in its output folder), xtask kills "b"'s QEMU — a
//! power cut — and boots it again (its gateway comes back as the
//! standby). `--c` runs the
//! same rounds with Debian's C tcmu-runner and its `handler_rbd.so` as
//! both gateways, for the failover times to compare.

use std::fs;
use std::net::UdpSocket;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::paths::Paths;
use crate::vm::{self, GuestRun, Outcome};
use crate::{setup, VmOptions};

/// What `cargo xtask help` says of `ha-test`.
pub const USAGE: &str = "  ha-test [--c] [--no-build] [--timeout SECS]
                        two gateway VMs (own kernels, a virtual network on
                        this machine only) on one rbd image, an initiator
                        with open-iscsi + multipathd: failover on SIGKILL
                        and on power-off, the returning gateway fenced,
                        active-active reads; --c: the same with Debian's C
                        tcmu-runner as both gateways; failover times in
                        target/ha/<daemon>/summary.txt
";

/// Host packages the guests run beyond the test VM's usual ones.
const HA_PACKAGES: &[&str] = &["multipath-tools", "open-iscsi"];

/// How many times VM "b" may boot (its power is cut once on purpose).
const B_BOOTS: u32 = 3;

/// The file VM "a" creates in its output folder to have VM "b"'s QEMU
/// killed: a power cut (once per run).
const POWER_OFF_REQUEST: &str = "power-off-b";

/// `ha-test`'s options.
pub struct Options {
    /// Debian's C tcmu-runner as the gateways instead of ours.
    c_daemon: bool,
    /// Use the existing release build.
    no_build: bool,
    /// Limit for each VM run.
    timeout: Duration,
}

impl Options {
    /// Parses the command line.
    pub fn parse(args: &[String]) -> Result<Self> {
        let mut o = Options {
            c_daemon: false,
            no_build: false,
            timeout: Duration::from_secs(2400),
        };
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            match arg.as_str() {
                "--c" => o.c_daemon = true,
                "--no-build" => o.no_build = true,
                "--timeout" => {
                    o.timeout = Duration::from_secs(crate::next_u64(&mut it, "--timeout")?)
                }
                other => bail!("ha-test: unknown argument {other:?}\n\n{USAGE}"),
            }
        }
        Ok(o)
    }
}

/// Runs the two-VM HA test and reports the guest's summary.
pub fn run(paths: &Paths, opts: &Options) -> Result<()> {
    let kernel = setup::run(paths)?;
    setup::Apt::default().ensure(HA_PACKAGES)?;
    if !opts.no_build {
        crate::build_runner(paths)?;
    }
    let daemon = if opts.c_daemon { "c" } else { "ours" };
    let dir = paths.root.join("target/ha").join(daemon);
    if dir.exists() {
        fs::remove_dir_all(&dir).with_context(|| format!("cannot clear {}", dir.display()))?;
    }
    let [port_a, port_b] = free_udp_ports()?;
    let vm_opts = VmOptions {
        timeout: opts.timeout,
        fio_runtime: 20,
        no_build: true,
        positional: Vec::new(),
    };
    let peer_env = crate::c_peer_env(paths)?;
    let node = |name: &str, mac: u8, local: u16, remote: u16| -> Result<GuestRun> {
        let script = paths.tests_vm.join(format!("ha/node-{name}.sh"));
        let mut run = crate::guest_run(paths, &vm_opts, script, None)?;
        run.extra_env.extend(peer_env.iter().cloned());
        run.extra_env.extend([
            ("HA_DAEMON".into(), daemon.into()),
            ("HA_DIR".into(), dir.display().to_string()),
        ]);
        run.qemu_args = network_args(mac, local, remote);
        Ok(run)
    };
    let run_a = node("a", 1, port_a, port_b)?;
    let mut run_b = node("b", 2, port_b, port_a)?;
    let a_done = AtomicBool::new(false);
    let b_stop = AtomicBool::new(false);
    let power_off_request = dir.join("a/out").join(POWER_OFF_REQUEST);
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| {
            let outcome = vm::boot_in(paths, &kernel, &run_a, &dir.join("a"), None);
            a_done.store(true, Ordering::Relaxed);
            outcome
        });
        // VM b's power switch: pulled once when a asks (the request file
        // stays: removing it under the guest's create made that fail), and
        // when a is done.
        s.spawn(|| {
            let mut cut = false;
            while !a_done.load(Ordering::Relaxed) {
                if !cut && power_off_request.exists() {
                    eprintln!("xtask: ha-test: VM a asks for VM b's power to be cut");
                    b_stop.store(true, Ordering::Relaxed);
                    cut = true;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            b_stop.store(true, Ordering::Relaxed);
        });
        let b = boot_b(paths, &kernel, &mut run_b, &dir, &a_done, &b_stop);
        (a.join(), b)
    });
    let a = a.map_err(|_| anyhow::anyhow!("the thread running VM a panicked"))??;
    let b = b?;
    let summary = dir.join("a/out/ha-summary.txt");
    match fs::read_to_string(&summary) {
        Ok(text) => {
            let dest = dir.join("summary.txt");
            fs::write(&dest, &text).with_context(|| format!("cannot write {}", dest.display()))?;
            println!("{text}");
        }
        Err(e) => eprintln!(
            "xtask: ha-test: no summary from VM a ({}: {e})",
            summary.display()
        ),
    }
    eprintln!("xtask: ha-test: VM b:");
    let b_result = b.into_result();
    eprintln!("xtask: ha-test: VM a:");
    a.into_result()?;
    b_result
}

/// Boots VM "b" until it reports a result or "a" is done: its power is
/// cut once on purpose (`stop`: QEMU killed, no result file), and each boot
/// after that brings its gateway back. `HA_BOOT` tells the guest which
/// boot it is.
fn boot_b(
    paths: &Paths,
    kernel: &setup::Kernel,
    run: &mut GuestRun,
    dir: &Path,
    a_done: &AtomicBool,
    stop: &AtomicBool,
) -> Result<Outcome> {
    let base_env = run.extra_env.clone();
    let mut boot = 1;
    loop {
        run.extra_env = base_env.clone();
        run.extra_env.push(("HA_BOOT".into(), boot.to_string()));
        let boot_dir = dir.join(format!("b{boot}"));
        stop.store(a_done.load(Ordering::Relaxed), Ordering::Relaxed);
        let outcome = vm::boot_in(paths, kernel, run, &boot_dir, Some(stop))?;
        let powered_off = outcome.status.is_none() && outcome.problem.is_none();
        if !powered_off || a_done.load(Ordering::Relaxed) || boot >= B_BOOTS {
            return Ok(outcome);
        }
        eprintln!("xtask: ha-test: VM b powered off (boot {boot}); booting it again");
        boot += 1;
    }
}

/// QEMU arguments for a virtio-net card whose frames go as UDP datagrams
/// from 127.0.0.1:`local` to 127.0.0.1:`remote` (the other VM's card).
fn network_args(mac: u8, local: u16, remote: u16) -> Vec<String> {
    vec![
        "-netdev".into(),
        format!(
            "dgram,id=ha,local.type=inet,local.host=127.0.0.1,local.port={local},\
             remote.type=inet,remote.host=127.0.0.1,remote.port={remote}"
        ),
        "-device".into(),
        format!("virtio-net-pci,netdev=ha,mac=52:54:00:99:00:{mac:02x}"),
    ]
}

/// Two different UDP ports on 127.0.0.1 that nobody uses now (both
/// sockets are held while the second is chosen, so they cannot be the
/// same).
fn free_udp_ports() -> Result<[u16; 2]> {
    let bind = || UdpSocket::bind("127.0.0.1:0").context("cannot bind a UDP socket on 127.0.0.1");
    let (a, b) = (bind()?, bind()?);
    Ok([a.local_addr()?.port(), b.local_addr()?.port()])
}
