//! `cargo xtask package-test` (also a step of `cargo xtask test`): checks
//! what a package manager and systemd see, on the host, without a VM.
//!
//! 1. `systemd-analyze verify` accepts the unit, as laid out by
//!    `xtask install --destdir` (with `--root`, so `ExecStart` resolves to
//!    our binary there), `man` renders the man page without warnings and
//!    logrotate parses our file.
//! 2. Our `.deb` ships the files Debian's C package ships at the same paths
//!    (binary, unit, D-Bus policy and activation file, logrotate file,
//!    `tcmu.conf`, man page), and nothing at a path the C package does not
//!    use; the C package is downloaded once into `target/debian/c/`.
//! 3. dpkg really installs both into a throwaway root under
//!    `target/pkgtest/`: the C package first, then ours as an upgrade
//!    (with a locally changed `tcmu.conf`, which must survive), then ours
//!    is removed and purged. dpkg runs the maintainer scripts chrooted
//!    there (`--root` without `--force-script-chrootless`), with busybox,
//!    dpkg's own binaries and stand-ins for systemctl, deb-systemd-helper,
//!    deb-systemd-invoke, update-rc.d and invoke-rc.d that log their calls:
//!    nothing reaches the host's dpkg database, `/etc` or systemd.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};

use crate::cmd;
use crate::deb;
use crate::install;
use crate::paths::Paths;
use crate::setup::Apt;

/// Files both packages must ship, at these paths.
const SHARED_FILES: &[&str] = &[
    "/usr/bin/tcmu-runner",
    "/lib/systemd/system/tcmu-runner.service",
    "/etc/dbus-1/system.d/tcmu-runner.conf",
    "/usr/share/dbus-1/system-services/org.kernel.TCMUService1.service",
    "/etc/logrotate.d/tcmu-runner",
    "/etc/tcmu/tcmu.conf",
    "/usr/share/man/man8/tcmu-runner.8.gz",
];

/// Our conffiles (the C package also has `/etc/init.d/tcmu-runner`).
const CONFFILES: &[&str] = &[
    "/etc/dbus-1/system.d/tcmu-runner.conf",
    "/etc/logrotate.d/tcmu-runner",
    "/etc/tcmu/tcmu.conf",
];

/// Host packages this step needs: systemd-analyze, man, logrotate (which
/// parses our file), busybox for the chroot.
const HOST_PACKAGES: &[&str] = &["systemd", "man-db", "logrotate", "busybox-static"];

/// Busybox applets the maintainer scripts (ours, the C package's,
/// dpkg-maintscript-helper) use inside the chroot.
const APPLETS: &[&str] = &[
    "sh", "chmod", "rm", "mv", "cat", "mkdir", "rmdir", "ln", "sed", "grep", "find", "md5sum",
    "readlink", "realpath", "basename", "dirname", "test", "[", "echo", "true", "false", "ls",
];

/// Tools replaced by stand-ins that append `NAME ARGS` to the call log.
/// `deb-systemd-helper was-enabled` answers yes, as on a first install.
const STUBS: &[&str] = &[
    "/usr/bin/systemctl",
    "/usr/bin/deb-systemd-helper",
    "/usr/bin/deb-systemd-invoke",
    "/usr/sbin/update-rc.d",
    "/usr/sbin/invoke-rc.d",
];

/// Where the stand-ins log, inside the chroot.
const CALL_LOG: &str = "var/log/xtask-calls";

/// Runs the whole step.
pub fn run(paths: &Paths) -> Result<()> {
    let start = Instant::now();
    if !is_root() {
        bail!("package-test needs root (dpkg --root runs the maintainer scripts in a chroot)");
    }
    Apt::default().ensure(HOST_PACKAGES)?;
    let work = paths.root.join("target/pkgtest");
    remove_dir_if_present(&work)?;
    fs::create_dir_all(&work).with_context(|| format!("cannot create {}", work.display()))?;

    verify_unit(paths, &work.join("install"))?;
    let ours = deb::build(paths)?;
    let theirs = debian_package(paths)?;
    compare_file_lists(&ours, &theirs)?;
    dpkg_round_trip(&work.join("root"), &ours, &theirs)?;
    println!(
        "package-test: all checks passed in {:.0} s",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// True when running as root (the chroot and the files' owners need it).
fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Removes a folder tree if it exists.
fn remove_dir_if_present(dir: &Path) -> Result<()> {
    match fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot remove {}", dir.display())),
    }
}

/// Step 1: `xtask install --destdir`, then `systemd-analyze verify --root`
/// and `man --warnings`.
fn verify_unit(paths: &Paths, destdir: &Path) -> Result<()> {
    let opts = install::Options {
        prefix: PathBuf::from("/usr"),
        destdir: destdir.to_owned(),
        no_build: false,
    };
    install::run(paths, &opts)?;
    // ExecReload runs `kill`, looked up in PATH inside the root.
    let kill = which("kill")?;
    fs::copy(&kill, destdir.join("usr/bin/kill"))
        .with_context(|| format!("cannot copy {}", kill.display()))?;
    // --man=no: systemd-analyze would ask the host's man, not the root's,
    // for man:tcmu-runner(8); the page is checked below instead.
    // --recursive-errors=no: the root holds no other units (sysinit.target).
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no", "--recursive-errors=no"])
        .arg(format!("--root={}", destdir.display()))
        .arg("tcmu-runner.service")
        .output()
        .context("cannot run systemd-analyze")?;
    let msgs = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() || !msgs.trim().is_empty() {
        bail!(
            "systemd-analyze verify rejects the unit ({}):\n{msgs}",
            out.status
        );
    }
    println!("ok   systemd-analyze verify: tcmu-runner.service accepted");
    let security = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(format!("--root={}", destdir.display()))
        .arg("tcmu-runner.service")
        .output()
        .context("cannot run systemd-analyze security")?;
    if let Some(line) = String::from_utf8_lossy(&security.stdout)
        .lines()
        .find(|l| l.contains("Overall exposure level"))
    {
        println!(
            "info systemd-analyze security: {}",
            line.trim_start_matches("→ ")
        );
    }
    let man = destdir.join("usr/share/man/man8/tcmu-runner.8.gz");
    let out = Command::new("man")
        .arg("--warnings")
        .arg("-l")
        .arg(&man)
        .env("MANWIDTH", "80")
        .env("MAN_KEEP_FORMATTING", "0")
        .output()
        .context("cannot run man")?;
    let warnings = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.success() && warnings.trim().is_empty() && !out.stdout.is_empty(),
        "man -l {} failed or warned ({}):\n{warnings}",
        man.display(),
        out.status
    );
    println!("ok   man --warnings: tcmu-runner(8) renders cleanly");
    check_logrotate(destdir)
}

/// `logrotate --debug` parses our file (and does nothing else: no
/// rotation, no postrotate script).
fn check_logrotate(destdir: &Path) -> Result<()> {
    let conf = destdir.join("etc/logrotate.d/tcmu-runner");
    let out = Command::new("logrotate")
        .arg("--debug")
        .arg("--state")
        .arg(destdir.join("logrotate.state"))
        .arg(&conf)
        .output()
        .context("cannot run logrotate")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(
        out.status.success()
            && !text.contains("error")
            && text.contains(
                "rotating pattern: /var/log/tcmu-runner*.log  10485760 bytes (7 rotations)"
            ),
        "logrotate does not accept {} ({}):\n{text}",
        conf.display(),
        out.status
    );
    println!("ok   logrotate --debug: /var/log/tcmu-runner*.log, 10 MiB, 7 rotations");
    Ok(())
}

/// Finds a program in PATH.
fn which(name: &str) -> Result<PathBuf> {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .with_context(|| format!("{name} is not in PATH"))
}

/// Debian's C package, downloaded once into `target/debian/c/`.
fn debian_package(paths: &Paths) -> Result<PathBuf> {
    let dir = paths.root.join("target/debian/c");
    let find = || -> Result<Option<PathBuf>> {
        let Ok(entries) = fs::read_dir(&dir) else {
            return Ok(None);
        };
        for e in entries {
            let p = e?.path();
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            if name.starts_with("tcmu-runner_") && name.ends_with(".deb") {
                return Ok(Some(p));
            }
        }
        Ok(None)
    };
    if let Some(p) = find()? {
        return Ok(p);
    }
    if crate::setup::download("tcmu-runner", &dir).is_err() {
        // Package lists may be missing on a fresh machine.
        Apt::default().update()?;
        crate::setup::download("tcmu-runner", &dir)?;
    }
    find()?.context("apt-get download tcmu-runner left no tcmu-runner_*.deb")
}

/// Step 2: the shared files are at the same paths in both packages, ours
/// ship nothing elsewhere, and our conffiles are the C package's minus its
/// init script.
fn compare_file_lists(ours: &Path, theirs: &Path) -> Result<()> {
    let our_files = deb::file_list(ours)?;
    let their_files = deb::file_list(theirs)?;
    for f in SHARED_FILES {
        ensure!(
            our_files.iter().any(|o| o == f),
            "our package lacks {f}: {our_files:?}"
        );
        ensure!(
            their_files.iter().any(|t| t == f),
            "Debian's package has no {f} (its list: {their_files:?})"
        );
    }
    let elsewhere: Vec<&String> = our_files
        .iter()
        .filter(|o| !their_files.contains(o))
        .collect();
    ensure!(
        elsewhere.is_empty(),
        "our package ships files at paths Debian's does not use: {elsewhere:?}"
    );
    let their_only: Vec<&String> = their_files
        .iter()
        .filter(|t| !our_files.contains(t))
        .collect();
    println!(
        "ok   file lists: the {} shared files are at Debian's paths; ours has {} files, all at paths of Debian's",
        SHARED_FILES.len(),
        our_files.len()
    );
    println!("info only in Debian's package: {their_only:?}");
    let our_conffiles = deb::conffiles(ours)?;
    ensure!(
        our_conffiles == CONFFILES,
        "our conffiles are {our_conffiles:?}, expected {CONFFILES:?}"
    );
    let their_conffiles = deb::conffiles(theirs)?;
    let mut expected: Vec<String> = their_conffiles
        .into_iter()
        .filter(|c| c != "/etc/init.d/tcmu-runner")
        .collect();
    expected.sort();
    ensure!(
        our_conffiles == expected,
        "conffiles differ from Debian's (minus the init script): ours {our_conffiles:?}, theirs {expected:?}"
    );
    println!("ok   conffiles: {our_conffiles:?}");
    Ok(())
}

/// A throwaway dpkg root: a fresh database, busybox, dpkg's binaries (for
/// dpkg-maintscript-helper) and logging stand-ins.
struct Root {
    /// The root folder.
    dir: PathBuf,
}

impl Root {
    /// Creates the root's skeleton.
    fn create(dir: &Path) -> Result<Self> {
        let root = Root {
            dir: dir.to_owned(),
        };
        for d in [
            "var/lib/dpkg/info",
            "var/lib/dpkg/updates",
            "var/lib/dpkg/triggers",
            "var/log",
            "bin",
            "usr/bin",
            "usr/sbin",
            "etc",
            "tmp",
            "dev",
            // "systemd is running": the scripts' start/stop branches run
            // (against the stand-ins).
            "run/systemd/system",
        ] {
            fs::create_dir_all(dir.join(d))
                .with_context(|| format!("cannot create {}/{d}", dir.display()))?;
        }
        // The scripts only ever write to /dev/null: a plain file will do
        // (no device node, which a container may not allow).
        for f in [
            "var/lib/dpkg/status",
            "var/lib/dpkg/available",
            CALL_LOG,
            "dev/null",
        ] {
            fs::write(dir.join(f), "").with_context(|| format!("cannot create {f}"))?;
        }
        root.copy_in(Path::new("/bin/busybox"))?;
        for applet in APPLETS {
            symlink("busybox", dir.join("bin").join(applet))
                .with_context(|| format!("cannot link applet {applet}"))?;
        }
        // dpkg-maintscript-helper (rm_conffile) is dpkg's own shell script;
        // it asks dpkg and dpkg-query about the root's database.
        for prog in ["dpkg", "dpkg-query"] {
            let path = which(prog)?;
            root.copy_in(&path)?;
            for lib in shared_libraries(&path)? {
                root.copy_in(&lib)?;
            }
        }
        root.copy_in(&which("dpkg-maintscript-helper")?)?;
        root.copy_in(Path::new("/usr/share/dpkg/sh/dpkg-error.sh"))?;
        for stub in STUBS {
            let name = Path::new(stub)
                .file_name()
                .context("stub without a name")?
                .to_string_lossy();
            // Every call succeeds: `deb-systemd-helper was-enabled` says
            // yes, as on a first installation.
            let script = format!("#!/bin/sh\necho \"{name} $*\" >> /{CALL_LOG}\nexit 0\n");
            let path = root.path(stub);
            fs::write(&path, script).with_context(|| format!("cannot write {}", path.display()))?;
            fs::set_permissions(&path, fs::Permissions::from_mode(0o755))?;
        }
        Ok(root)
    }

    /// A path inside the root.
    fn path(&self, abs: &str) -> PathBuf {
        self.dir.join(abs.trim_start_matches('/'))
    }

    /// Copies a host file to the same path inside the root (following
    /// symlinks: the root gets the file itself).
    fn copy_in(&self, host: &Path) -> Result<()> {
        let dest = self.dir.join(host.strip_prefix("/").unwrap_or(host));
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::copy(host, &dest)
            .with_context(|| format!("cannot copy {} into the root", host.display()))?;
        Ok(())
    }

    /// Runs dpkg on the root; `--log` keeps dpkg.log inside it too.
    fn dpkg(&self, args: &[&str]) -> Result<String> {
        let mut c = Command::new("dpkg");
        c.arg(format!("--root={}", self.dir.display()))
            .arg(format!(
                "--log={}",
                self.path("/var/log/dpkg.log").display()
            ))
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive");
        let line = cmd::describe(&c);
        let out = c.output().with_context(|| format!("cannot run {line}"))?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if !out.status.success() {
            bail!("`{line}` failed ({}):\n{text}", out.status);
        }
        println!("     $ {line}");
        for l in text.lines() {
            println!("       {l}");
        }
        Ok(text)
    }

    /// `dpkg-query --admindir` on the root's database.
    fn query(&self, format: &str, pkg: &str) -> Result<String> {
        let out = Command::new("dpkg-query")
            .arg(format!(
                "--admindir={}",
                self.path("/var/lib/dpkg").display()
            ))
            .args(["-W", &format!("-f={format}"), pkg])
            .output()
            .context("cannot run dpkg-query")?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Takes the calls the stand-ins logged since the last take.
    fn take_calls(&self) -> Result<String> {
        let path = self.path(CALL_LOG);
        let calls = fs::read_to_string(&path)?;
        fs::write(&path, "")?;
        Ok(calls)
    }
}

/// The shared libraries `ldd` lists for a program (the loader included).
fn shared_libraries(prog: &Path) -> Result<Vec<PathBuf>> {
    let out = cmd::output(Command::new("ldd").arg(prog))?;
    Ok(out
        .lines()
        .filter_map(|l| {
            let path = match l.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next()?,
                None => l.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect())
}

/// Fails unless every call in `want` appears in the logged `calls`.
fn expect_calls(step: &str, calls: &str, want: &[&str]) -> Result<()> {
    for w in want {
        ensure!(
            calls.lines().any(|l| l.trim() == *w),
            "{step}: expected the maintainer scripts to run `{w}`; they ran:\n{calls}"
        );
    }
    println!("ok   {step}: scripts ran {want:?}");
    Ok(())
}

/// Step 3: C package, then ours over it, then remove and purge ours.
fn dpkg_round_trip(dir: &Path, ours: &Path, theirs: &Path) -> Result<()> {
    let root = Root::create(dir)?;
    let ours_str = ours.to_str().context("package path is not UTF-8")?;
    let theirs_str = theirs.to_str().context("package path is not UTF-8")?;

    // The C package: its libraries (librbd1, libglib2.0-0, …) are not in
    // this root, hence --force-depends.
    root.dpkg(&["--force-depends", "--install", theirs_str])?;
    let c_version = root.query("${Version} ${db:Status-Abbrev}", "tcmu-runner")?;
    ensure!(
        c_version.trim().ends_with("ii"),
        "the C package is not installed: {c_version}"
    );
    ensure!(
        root.path("/etc/init.d/tcmu-runner").is_file(),
        "the C package left no /etc/init.d/tcmu-runner"
    );
    let calls = root.take_calls()?;
    expect_calls(
        "C package install",
        &calls,
        &["deb-systemd-invoke start tcmu-runner.service"],
    )?;
    println!("ok   Debian's package installed: {}", c_version.trim());

    // The administrator changed tcmu.conf: the change must survive.
    let conf = root.path("/etc/tcmu/tcmu.conf");
    let mut text = fs::read_to_string(&conf)?;
    text.push_str("log_level = 4\n");
    fs::write(&conf, &text)?;

    // libc6 is not in this root either.
    root.dpkg(&["--force-depends", "--force-confold", "--install", ours_str])?;
    let status = root.query("${Version} ${db:Status-Abbrev}", "tcmu-runner")?;
    ensure!(
        status.trim() == format!("{} ii", deb::version()),
        "after installing ours, dpkg reports tcmu-runner {status:?}, expected {} ii",
        deb::version()
    );
    println!("ok   ours replaced it: tcmu-runner {}", status.trim());
    for f in SHARED_FILES {
        ensure!(root.path(f).is_file(), "{f} is missing after the upgrade");
    }
    let owned = root.query("${db-fsys:Files}", "tcmu-runner")?;
    for f in SHARED_FILES {
        ensure!(
            owned.lines().any(|l| l.trim() == *f),
            "dpkg does not list {f} as ours: {owned}"
        );
    }
    println!(
        "ok   all {} files at Debian's paths, owned by the new package",
        SHARED_FILES.len()
    );
    let leftovers: Vec<&str> = [
        "/usr/lib/x86_64-linux-gnu/tcmu-runner/handler_qcow.so",
        "/usr/lib/x86_64-linux-gnu/tcmu-runner/handler_rbd.so",
        "/etc/init.d/tcmu-runner",
    ]
    .into_iter()
    .filter(|f| root.path(f).exists())
    .collect();
    ensure!(
        leftovers.is_empty(),
        "the C package's files remain: {leftovers:?}"
    );
    println!("ok   the C package's handlers and init script are gone");
    let version = cmd::output(Command::new(root.path("/usr/bin/tcmu-runner")).arg("-V"))?;
    // runner's VERSION: ours, then the tcmu-runner release served, last.
    let want = format!(
        "tcmu-runner {} (tcmu-rs), compatible with tcmu-runner 1.5.4",
        env!("CARGO_PKG_VERSION")
    );
    ensure!(
        version.trim() == want,
        "/usr/bin/tcmu-runner -V printed {version:?}, expected {want:?}"
    );
    println!("ok   /usr/bin/tcmu-runner is ours: {}", version.trim());
    let conffiles = root.query("${Conffiles}", "tcmu-runner")?;
    let registered: Vec<&str> = conffiles
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    ensure!(
        registered == CONFFILES,
        "registered conffiles {registered:?}, expected {CONFFILES:?}"
    );
    println!("ok   conffiles registered: {registered:?}");
    let kept = fs::read_to_string(&conf)?;
    ensure!(kept == text, "the changed /etc/tcmu/tcmu.conf was not kept");
    ensure!(
        root.path("/etc/tcmu/tcmu.conf.dpkg-dist").is_file(),
        "our tcmu.conf was not set aside as tcmu.conf.dpkg-dist"
    );
    println!("ok   the changed tcmu.conf was kept; ours is tcmu.conf.dpkg-dist");
    let calls = root.take_calls()?;
    expect_calls(
        "upgrade",
        &calls,
        &[
            "update-rc.d tcmu-runner remove",
            "deb-systemd-helper enable tcmu-runner.service",
            "systemctl --system daemon-reload",
            "deb-systemd-invoke restart tcmu-runner.service",
        ],
    )?;
    let audit = root.dpkg(&["--audit"])?;
    ensure!(audit.trim().is_empty(), "dpkg --audit: {audit}");

    ensure!(
        !calls.contains("systemctl reload"),
        "the upgrade from the C package reloaded instead of restarting:\n{calls}"
    );

    // Reinstalling ours (an upgrade from a build that knows SIGUSR1)
    // reloads the running daemon (an in-place upgrade) instead of
    // restarting it, and leaves the C package's clean-up alone.
    root.dpkg(&["--force-depends", "--force-confold", "--install", ours_str])?;
    let calls = root.take_calls()?;
    expect_calls(
        "reinstall",
        &calls,
        &[
            "systemctl --quiet is-active tcmu-runner.service",
            "systemctl reload tcmu-runner.service",
        ],
    )?;
    ensure!(
        !calls.contains("update-rc.d") && !calls.contains("deb-systemd-invoke restart"),
        "reinstalling ours ran update-rc.d or a restart:\n{calls}"
    );

    // The daemon's log and logrotate's old copy: kept by a removal, gone
    // with a purge (Debian policy 10.8).
    let logs = ["/var/log/tcmu-runner.log", "/var/log/tcmu-runner.log.1.gz"];
    for f in logs {
        fs::create_dir_all(root.path("/var/log"))?;
        fs::write(root.path(f), "a log line\n")?;
    }
    root.dpkg(&["--remove", "tcmu-runner"])?;
    let status = root.query("${db:Status-Abbrev}", "tcmu-runner")?;
    ensure!(
        status.trim() == "rc",
        "after --remove, tcmu-runner is {status:?}, expected rc"
    );
    for f in [
        "/usr/bin/tcmu-runner",
        "/lib/systemd/system/tcmu-runner.service",
    ] {
        ensure!(!root.path(f).exists(), "{f} remains after --remove");
    }
    ensure!(conf.is_file(), "--remove deleted the conffile tcmu.conf");
    for f in logs {
        ensure!(root.path(f).is_file(), "--remove deleted the log {f}");
    }
    let calls = root.take_calls()?;
    expect_calls(
        "remove",
        &calls,
        &["deb-systemd-invoke stop tcmu-runner.service"],
    )?;
    root.dpkg(&["--purge", "tcmu-runner"])?;
    let status = root.query("${db:Status-Abbrev}", "tcmu-runner")?;
    ensure!(
        status.trim().is_empty() || status.trim() == "pn" || status.trim() == "un",
        "after --purge, tcmu-runner is {status:?}"
    );
    for f in CONFFILES.iter().chain(&logs) {
        ensure!(!root.path(f).exists(), "{f} remains after --purge");
    }
    let calls = root.take_calls()?;
    expect_calls(
        "purge",
        &calls,
        &["deb-systemd-helper purge tcmu-runner.service"],
    )?;
    println!("ok   ours removed and purged cleanly (the log files with the purge)");
    Ok(())
}
