//! The C peer: Debian's `tcmu-runner` package, unpacked (not installed)
//! under `target/bench/c-root/`, and the plain `file` handler Debian does
//! not ship, built from the same Debian source package.
//!
//! Everything is cached under `target/bench/` and keyed by the package
//! version apt offers: a second run does nothing; a new Debian revision
//! rebuilds. Nothing on the host is replaced: the packages are only
//! downloaded and unpacked; apt installs the build dependencies of
//! `handler_file` (cmake, pkg-config and the `-dev` packages its
//! `CMakeLists.txt` checks for at configure time) and adds a `deb-src`
//! source for `apt-get source` when the machine has none.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::cmd;
use crate::setup::{self, Apt};

/// The Debian binary package of the C daemon.
const PACKAGE: &str = "tcmu-runner";

/// Debian's library package the daemon links against (`libtcmu.so.2`).
const LIB_PACKAGE: &str = "libtcmu2";

/// What configuring tcmu-runner's `CMakeLists.txt` and building
/// `handler_file` needs: cmake's `pkg_check_modules` insists on glib
/// (gio-unix-2.0) and libkmod, `find_library` on libnl-3/libnl-genl-3
/// (libnl-genl-3-dev pulls libnl-3-dev); `dpkg-dev` runs `apt-get source`
/// and gives Debian's compiler flags. The runtime libraries of the
/// daemon come with these (libglib2.0-0, libkmod2, libnl-*-200, zlib1g).
const BUILD_PACKAGES: &[&str] = &[
    "cmake",
    "make",
    "gcc",
    "pkg-config",
    "dpkg-dev",
    "libglib2.0-dev",
    "libkmod-dev",
    "libnl-genl-3-dev",
];

/// The shared libraries the unpacked daemon and libtcmu load (the
/// packages' Depends, but librbd1: only Debian's rbd handler wants it, and
/// the daemon skips a handler it cannot load).
const RUNTIME_PACKAGES: &[&str] = &[
    "libglib2.0-0",
    "libkmod2",
    "libnl-3-200",
    "libnl-genl-3-200",
    "zlib1g",
];

/// The C peer, ready to run in the guest.
pub struct CPeer {
    /// Debian's version of the packages (e.g. `1.5.4-4.1`).
    pub version: String,
    /// The daemon, `c-root/usr/bin/tcmu-runner`.
    pub bin: PathBuf,
    /// The folder holding `libtcmu.so.2` (for `LD_LIBRARY_PATH`).
    pub lib_dir: PathBuf,
    /// The `--handler-path` folder: our `handler_file.so` and links to
    /// Debian's handlers.
    pub handlers: PathBuf,
}

impl CPeer {
    /// The guest variables the tests and benchmarks find the C daemon by:
    /// `C_TCMU_BIN`, `C_TCMU_LIBDIR`, `C_TCMU_HANDLERS`.
    pub fn guest_env(&self) -> Vec<(String, String)> {
        let s = |p: &Path| p.display().to_string();
        vec![
            ("C_TCMU_BIN".into(), s(&self.bin)),
            ("C_TCMU_LIBDIR".into(), s(&self.lib_dir)),
            ("C_TCMU_HANDLERS".into(), s(&self.handlers)),
        ]
    }
}

/// Makes sure the C peer is built and unpacked under `dir`
/// (`target/bench/`), doing only what the cache does not hold.
pub fn ensure(dir: &Path, apt: &mut Apt) -> Result<CPeer> {
    let version = package_version(apt, PACKAGE)?;
    let root = dir.join("c-root");
    let handlers = dir.join("c-handlers");
    let stamp = dir.join("c-peer.version");
    let cached = fs::read_to_string(&stamp).unwrap_or_default();
    if cached.trim() == version {
        if let Ok(peer) = locate(&root, &handlers, &version) {
            if peer.handlers.join("handler_file.so").is_file() {
                return Ok(peer);
            }
        }
    }
    eprintln!("xtask: preparing the C peer: Debian's {PACKAGE} {version} and its file handler");
    apt.ensure(BUILD_PACKAGES)?;
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    fs::remove_file(&stamp).ok();
    unpack(dir, &root, &version)?;

    // The source package, and handler_file built from it.
    let src_parent = dir.join("c-src");
    clear(&src_parent)?;
    if setup::ensure_deb_src_source()? {
        apt.refresh()?;
    }
    cmd::run(
        Command::new("apt-get")
            .args(["-o", "APT::Sandbox::User=root", "source"])
            .arg(format!("{PACKAGE}={version}"))
            .current_dir(&src_parent),
    )
    .context("apt-get source tcmu-runner failed")?;
    let src = fs::read_dir(&src_parent)
        .with_context(|| format!("cannot list {}", src_parent.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.join("CMakeLists.txt").is_file())
        .with_context(|| format!("apt-get source left no tree in {}", src_parent.display()))?;
    let so = build_handler(&src, &dir.join("c-build"))?;

    let lib_dir = multiarch_dir(&root)?;
    clear(&handlers)?;
    fs::copy(&so, handlers.join("handler_file.so"))
        .with_context(|| format!("cannot copy {}", so.display()))?;
    link_debian_handlers(&lib_dir, &handlers)?;
    let peer = locate(&root, &handlers, &version)?;
    check_runs(&peer)?;
    fs::write(&stamp, format!("{version}\n"))
        .with_context(|| format!("cannot write {}", stamp.display()))?;
    Ok(peer)
}

/// Makes sure Debian's C daemon and its own handlers (`file_zbc`, `fbo`,
/// `qcow`, `rbd`) are unpacked under `dir` (`target/vm/c-peer/`), with
/// nothing built: what a test against one of Debian's handlers needs (the
/// zbc differential of `t-26-zbc`). Cached like [`ensure`].
pub fn ensure_debian(dir: &Path, apt: &mut Apt) -> Result<CPeer> {
    apt.ensure(RUNTIME_PACKAGES)?;
    let version = package_version(apt, PACKAGE)?;
    let root = dir.join("c-root");
    let handlers = dir.join("c-handlers");
    let stamp = dir.join("c-debian.version");
    let cached = fs::read_to_string(&stamp).unwrap_or_default();
    if cached.trim() == version {
        if let Ok(peer) = locate(&root, &handlers, &version) {
            if peer.handlers.join("handler_file_zbc.so").exists() {
                return Ok(peer);
            }
        }
    }
    eprintln!("xtask: unpacking Debian's {PACKAGE} {version} (the C peer of the VM tests)");
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    fs::remove_file(&stamp).ok();
    unpack(dir, &root, &version)?;
    let lib_dir = multiarch_dir(&root)?;
    clear(&handlers)?;
    link_debian_handlers(&lib_dir, &handlers)?;
    let peer = locate(&root, &handlers, &version)?;
    check_runs(&peer)?;
    fs::write(&stamp, format!("{version}\n"))
        .with_context(|| format!("cannot write {}", stamp.display()))?;
    Ok(peer)
}

/// Debian's ceph-iscsi: the gateway tools (`rbd-target-api`, `gwcli`) that
/// create `user:rbd` LUNs through rtslib on Ceph iSCSI gateways.
const CEPH_ISCSI: &str = "ceph-iscsi";

/// What ceph-iscsi's Python code imports (its package's Depends but
/// `tcmu-runner`, which the tests replace with ours).
const CEPH_ISCSI_PACKAGES: &[&str] = &[
    "python3-configshell-fb",
    "python3-cryptography",
    "python3-flask",
    "python3-netifaces",
    "python3-openssl",
    "python3-rados",
    "python3-rbd",
    "python3-requests",
    "python3-rtslib-fb",
];

/// Makes sure Debian's ceph-iscsi is unpacked (not installed: it depends
/// on Debian's C daemon) under `dir` (`target/vm/ceph-iscsi/`) and its
/// Python dependencies are installed; returns the unpacked root (`usr/bin`
/// and `usr/lib/python3/dist-packages` below it). Cached by version.
pub fn ensure_ceph_iscsi(dir: &Path, apt: &mut Apt) -> Result<PathBuf> {
    apt.ensure(CEPH_ISCSI_PACKAGES)?;
    let version = package_version(apt, CEPH_ISCSI)?;
    let root = dir.join("root");
    let api = root.join("usr/bin/rbd-target-api");
    let stamp = dir.join("ceph-iscsi.version");
    if fs::read_to_string(&stamp).unwrap_or_default().trim() == version && api.exists() {
        return Ok(root);
    }
    eprintln!(
        "xtask: unpacking Debian's {CEPH_ISCSI} {version} (t-58-ceph-iscsi drives ours with it)"
    );
    fs::remove_file(&stamp).ok();
    let debs = dir.join("debs");
    clear(&debs)?;
    setup::download(&format!("{CEPH_ISCSI}={version}"), &debs)?;
    extract_all(&debs, &root)?;
    if !api.exists() {
        bail!("{CEPH_ISCSI} {version} unpacked without {}", api.display());
    }
    fs::write(&stamp, format!("{version}\n"))
        .with_context(|| format!("cannot write {}", stamp.display()))?;
    Ok(root)
}

/// The version of `pkg` apt offers (updating apt's lists once if it knows
/// none).
fn package_version(apt: &mut Apt, pkg: &str) -> Result<String> {
    match candidate_version(pkg) {
        Ok(v) => Ok(v),
        Err(first) => {
            apt.update()?;
            candidate_version(pkg).context(first)
        }
    }
}

/// Downloads Debian's binary packages of `version` into `dir/c-debs` and
/// unpacks them (nothing installed) into `root`.
fn unpack(dir: &Path, root: &Path, version: &str) -> Result<()> {
    let debs = dir.join("c-debs");
    clear(&debs)?;
    for pkg in [PACKAGE, LIB_PACKAGE] {
        setup::download(&format!("{pkg}={version}"), &debs)?;
    }
    extract_all(&debs, root)
}

/// Unpacks every `.deb` of `debs` into `root` (emptied first).
fn extract_all(debs: &Path, root: &Path) -> Result<()> {
    clear(root)?;
    for deb in files_with_ext(debs, "deb")? {
        cmd::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(root))
            .with_context(|| format!("unpacking {} failed", deb.display()))?;
    }
    Ok(())
}

/// Links Debian's handlers (`lib_dir/tcmu-runner/*.so`) into `handlers`.
fn link_debian_handlers(lib_dir: &Path, handlers: &Path) -> Result<()> {
    let debian_handlers = lib_dir.join("tcmu-runner");
    for h in files_with_ext(&debian_handlers, "so")? {
        let Some(name) = h.file_name() else { continue };
        std::os::unix::fs::symlink(&h, handlers.join(name))
            .with_context(|| format!("cannot link {}", h.display()))?;
    }
    Ok(())
}

/// Runs the unpacked daemon here: a broken unpack fails now, not in the
/// guest. (`-V` exits 1 after printing the version.)
fn check_runs(peer: &CPeer) -> Result<()> {
    let out = Command::new(&peer.bin)
        .arg("-V")
        .env("LD_LIBRARY_PATH", &peer.lib_dir)
        .output()
        .with_context(|| format!("cannot run {}", peer.bin.display()))?;
    let v =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    // The loader's own complaints name the binary too: look for the
    // version line.
    if !v.lines().any(|l| l.trim().starts_with("tcmu-runner ")) {
        bail!(
            "the unpacked C tcmu-runner does not run: `{} -V` printed {v:?}",
            peer.bin.display()
        );
    }
    eprintln!("xtask: C peer ready: {}", v.trim());
    Ok(())
}

/// Configures the source tree with Debian's compiler flags (as its
/// `debian/rules` builds it, minus the handlers not needed) and builds
/// `handler_file`; returns the `.so`.
fn build_handler(src: &Path, build: &Path) -> Result<PathBuf> {
    clear(build)?;
    let flags = |name: &str| -> Result<String> {
        cmd::output(
            Command::new("dpkg-buildflags")
                .args(["--get", name])
                .env("DEB_BUILD_MAINT_OPTIONS", "hardening=+all"),
        )
        .map(|s| s.trim().to_owned())
    };
    cmd::run(
        Command::new("cmake")
            .arg("-S")
            .arg(src)
            .arg("-B")
            .arg(build)
            .args([
                "-DCMAKE_BUILD_TYPE=None",
                "-Dwith-glfs=false",
                "-Dwith-rbd=false",
                "-Dwith-qcow=false",
                "-Dwith-zbc=false",
                "-Dwith-fbo=false",
                "-Dwith-tcmalloc=false",
                "-DSUPPORT_SYSTEMD=OFF",
            ])
            .env("CFLAGS", flags("CFLAGS")?)
            .env("CPPFLAGS", flags("CPPFLAGS")?)
            .env("LDFLAGS", flags("LDFLAGS")?),
    )
    .context("cmake (configuring tcmu-runner's source) failed")?;
    cmd::run(Command::new("make").arg("handler_file").current_dir(build))
        .context("make handler_file failed")?;
    let so = build.join("handler_file.so");
    if !so.is_file() {
        bail!("make handler_file left no {}", so.display());
    }
    Ok(so)
}

/// The paths of an unpacked peer, failing if the daemon is missing.
fn locate(root: &Path, handlers: &Path, version: &str) -> Result<CPeer> {
    let bin = root.join("usr/bin/tcmu-runner");
    if !bin.is_file() {
        bail!("{} is missing", bin.display());
    }
    Ok(CPeer {
        version: version.to_owned(),
        lib_dir: multiarch_dir(root)?,
        handlers: handlers.to_owned(),
        bin,
    })
}

/// `usr/lib/<multiarch triplet>` of the unpacked root: the folder holding
/// `libtcmu.so.2`.
fn multiarch_dir(root: &Path) -> Result<PathBuf> {
    let lib = root.join("usr/lib");
    fs::read_dir(&lib)
        .with_context(|| format!("cannot list {}", lib.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.join("libtcmu.so.2").exists())
        .with_context(|| format!("no libtcmu.so.2 under {}", lib.display()))
}

/// The version of `pkg` apt would install.
fn candidate_version(pkg: &str) -> Result<String> {
    let out = cmd::output(Command::new("apt-cache").args(["policy", pkg]))?;
    out.lines()
        .find_map(|l| l.trim().strip_prefix("Candidate:"))
        .map(str::trim)
        .filter(|v| !v.is_empty() && *v != "(none)")
        .map(str::to_owned)
        .with_context(|| format!("apt knows no candidate version of {pkg}:\n{out}"))
}

/// Removes `dir` if present and creates it empty.
fn clear(dir: &Path) -> Result<()> {
    if dir.exists() {
        fs::remove_dir_all(dir).with_context(|| format!("cannot clear {}", dir.display()))?;
    }
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))
}

/// The files of `dir` whose name ends in `.ext`, sorted.
fn files_with_ext(dir: &Path, ext: &str) -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    v.sort();
    Ok(v)
}
