//! `cargo xtask install`: lay out the daemon and its system files the way
//! a package does.
//!
//! The files come from `runner/dist/`; their places follow Debian's
//! tcmu-runner package, relative to a prefix (default `/usr`) and under a
//! staging folder (`--destdir`, default none): the binary in `P/bin`, the
//! D-Bus activation file in `P/share/dbus-1/system-services`, the man page
//! (gzipped) in `P/share/man/man8`, the systemd unit in `/lib/systemd/system`
//! for the `/usr` prefix (Debian 12's place) and `P/lib/systemd/system`
//! otherwise, and the D-Bus policy, logrotate file and `tcmu.conf` under
//! `/etc`. An existing `tcmu.conf` is never overwritten: the example goes
//! next to it as `tcmu.conf.dist`.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::paths::Paths;

/// Where the unmodified files install the binary (the unit's `ExecStart`,
/// the activation file's `Exec`).
const DEFAULT_BINARY: &str = "/usr/bin/tcmu-runner";

/// Options of `cargo xtask install`.
pub struct Options {
    /// Installation prefix (absolute).
    pub prefix: PathBuf,
    /// Staging folder prepended to every path; empty for the live system.
    pub destdir: PathBuf,
    /// Use the existing `target/release/tcmu-runner`.
    pub no_build: bool,
}

impl Options {
    /// Parses `[--prefix P] [--destdir D] [--no-build]`.
    pub fn parse(args: &[String]) -> Result<Self> {
        let mut opts = Options {
            prefix: PathBuf::from("/usr"),
            destdir: PathBuf::new(),
            no_build: false,
        };
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            match arg.as_str() {
                "--prefix" => {
                    opts.prefix = it.next().context("--prefix needs a folder")?.into();
                }
                "--destdir" => {
                    opts.destdir = it.next().context("--destdir needs a folder")?.into();
                }
                "--no-build" => opts.no_build = true,
                other => bail!("install: unknown argument {other:?}"),
            }
        }
        if !opts.prefix.is_absolute() {
            bail!(
                "install: --prefix must be absolute, got {}",
                opts.prefix.display()
            );
        }
        Ok(opts)
    }
}

/// How a file is written.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Copied as it is.
    Plain,
    /// `/usr/bin/tcmu-runner` inside is replaced by the prefix's binary.
    NamesBinary,
    /// Gzipped (`gzip -9n`, reproducible).
    Gzip,
    /// A configuration file the administrator owns: never overwritten.
    Config,
}

/// One installed file: source under `runner/dist` (or the build), target,
/// mode, kind.
struct Item {
    /// Source file.
    src: PathBuf,
    /// Final path, destdir included.
    dest: PathBuf,
    /// Permission bits.
    mode: u32,
    /// How to write it.
    kind: Kind,
}

/// Joins an absolute path under the destdir (`D` + `/x/y` = `D/x/y`).
fn under(destdir: &Path, abs: &Path) -> PathBuf {
    let rel = abs.strip_prefix("/").unwrap_or(abs);
    if destdir.as_os_str().is_empty() {
        Path::new("/").join(rel)
    } else {
        destdir.join(rel)
    }
}

/// The systemd unit folder for a prefix: Debian 12 keeps package units in
/// `/lib/systemd/system`; other prefixes get `P/lib/systemd/system`, which
/// systemd also reads for `/usr/local`.
fn unit_dir(prefix: &Path) -> PathBuf {
    if prefix == Path::new("/usr") {
        PathBuf::from("/lib/systemd/system")
    } else {
        prefix.join("lib/systemd/system")
    }
}

/// Everything `install` writes.
fn items(paths: &Paths, opts: &Options) -> Vec<Item> {
    let dist = paths.root.join("runner/dist");
    let d = &opts.destdir;
    let p = &opts.prefix;
    let item = |src: PathBuf, dest: PathBuf, mode, kind| Item {
        src,
        dest: under(d, &dest),
        mode,
        kind,
    };
    vec![
        item(
            paths.release_runner(),
            p.join("bin/tcmu-runner"),
            0o755,
            Kind::Plain,
        ),
        item(
            dist.join("tcmu-runner.service"),
            unit_dir(p).join("tcmu-runner.service"),
            0o644,
            Kind::NamesBinary,
        ),
        item(
            dist.join("dbus-1/system-services/org.kernel.TCMUService1.service"),
            p.join("share/dbus-1/system-services/org.kernel.TCMUService1.service"),
            0o644,
            Kind::NamesBinary,
        ),
        item(
            dist.join("tcmu-runner.8"),
            p.join("share/man/man8/tcmu-runner.8.gz"),
            0o644,
            Kind::Gzip,
        ),
        item(
            dist.join("dbus-1/system.d/tcmu-runner.conf"),
            PathBuf::from("/etc/dbus-1/system.d/tcmu-runner.conf"),
            0o644,
            Kind::Plain,
        ),
        item(
            dist.join("logrotate/tcmu-runner"),
            PathBuf::from("/etc/logrotate.d/tcmu-runner"),
            0o644,
            Kind::Plain,
        ),
        item(
            dist.join("tcmu.conf"),
            PathBuf::from("/etc/tcmu/tcmu.conf"),
            0o644,
            Kind::Config,
        ),
    ]
}

/// `cargo xtask install`: builds (unless `--no-build`) and installs; returns
/// the paths written.
pub fn run(paths: &Paths, opts: &Options) -> Result<Vec<PathBuf>> {
    if !opts.no_build {
        crate::build_runner(paths)?;
    }
    let binary = opts.prefix.join("bin/tcmu-runner");
    let binary = binary.to_str().context("the prefix is not UTF-8")?;
    let live = opts.destdir.as_os_str().is_empty();
    if live {
        warn_if_packaged(&under(&opts.destdir, &opts.prefix.join("bin/tcmu-runner")));
    }
    let mut written = Vec::new();
    for item in items(paths, opts) {
        let data =
            fs::read(&item.src).with_context(|| format!("cannot read {}", item.src.display()))?;
        let data = match item.kind {
            Kind::Plain | Kind::Config => data,
            Kind::NamesBinary => String::from_utf8(data)
                .with_context(|| format!("{} is not UTF-8", item.src.display()))?
                .replace(DEFAULT_BINARY, binary)
                .into_bytes(),
            Kind::Gzip => gzip(&data)?,
        };
        let mut dest = item.dest.clone();
        if item.kind == Kind::Config && dest.exists() {
            let mut name = dest.clone().into_os_string();
            name.push(".dist");
            dest = PathBuf::from(name);
            println!(
                "kept       {} (exists; the example is {})",
                item.dest.display(),
                dest.display()
            );
        }
        write_atomically(&dest, &data, item.mode)?;
        println!("installed  {}", dest.display());
        written.push(dest);
    }
    if live {
        println!(
            "next: systemctl daemon-reload && systemctl enable --now tcmu-runner \
             (D-Bus picks up the policy and activation file by itself)"
        );
    }
    Ok(written)
}

/// Warns when a package owns `path`: dpkg would put its own file back on
/// the package's next upgrade, and removing the package would delete ours.
fn warn_if_packaged(path: &Path) {
    let owner = Command::new("dpkg-query")
        .arg("--search")
        .arg(path)
        .stderr(Stdio::null())
        .output();
    if let Ok(out) = owner {
        if out.status.success() {
            let text = String::from_utf8_lossy(&out.stdout);
            let pkg = text.split(':').next().unwrap_or_default().trim();
            eprintln!(
                "xtask: warning: {} belongs to the package {pkg}; `cargo xtask deb` \
                 and `dpkg -i` replace it properly",
                path.display()
            );
        }
    }
}

/// Writes `data` to a temporary file beside `dest`, then renames it over
/// `dest`: a running binary is replaced, never rewritten in place (which
/// fails with ETXTBSY), and a reader never sees half a file.
fn write_atomically(dest: &Path, data: &[u8], mode: u32) -> Result<()> {
    let dir = dest
        .parent()
        .with_context(|| format!("{} has no parent folder", dest.display()))?;
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let name = dest
        .file_name()
        .with_context(|| format!("{} has no file name", dest.display()))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(".xtask-new");
    let tmp = dir.join(tmp_name);
    let result = (|| -> Result<()> {
        let mut f =
            fs::File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
        f.write_all(data)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        f.set_permissions(fs::Permissions::from_mode(mode))
            .with_context(|| format!("cannot chmod {}", tmp.display()))?;
        f.sync_all()
            .with_context(|| format!("cannot sync {}", tmp.display()))?;
        fs::rename(&tmp, dest)
            .with_context(|| format!("cannot rename {} to {}", tmp.display(), dest.display()))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Compresses with `gzip -9n` (no name or time stamp: the same input gives
/// the same bytes).
fn gzip(data: &[u8]) -> Result<Vec<u8>> {
    let mut child = Command::new("gzip")
        .args(["-9n", "-c"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot run gzip")?;
    // Write from a thread: gzip may fill its output pipe before it has read
    // all its input.
    let mut stdin = child.stdin.take().context("gzip has no stdin")?;
    let input = data.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().context("gzip failed")?;
    writer
        .join()
        .map_err(|_| anyhow::anyhow!("the thread feeding gzip panicked"))?
        .context("cannot feed gzip")?;
    if !out.status.success() {
        bail!("gzip failed ({})", out.status);
    }
    Ok(out.stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destdir_and_prefix() {
        assert_eq!(
            under(Path::new("/tmp/d"), Path::new("/usr/bin/x")),
            PathBuf::from("/tmp/d/usr/bin/x")
        );
        assert_eq!(
            under(Path::new(""), Path::new("/etc/x")),
            PathBuf::from("/etc/x")
        );
        assert_eq!(
            unit_dir(Path::new("/usr")),
            PathBuf::from("/lib/systemd/system")
        );
        assert_eq!(
            unit_dir(Path::new("/usr/local")),
            PathBuf::from("/usr/local/lib/systemd/system")
        );
    }

    #[test]
    fn options() {
        let args: Vec<String> = ["--prefix", "/opt/t", "--destdir", "/tmp/s", "--no-build"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        let o = Options::parse(&args).unwrap();
        assert_eq!(o.prefix, PathBuf::from("/opt/t"));
        assert_eq!(o.destdir, PathBuf::from("/tmp/s"));
        assert!(o.no_build);
        assert!(Options::parse(&["--prefix".into(), "rel".into()]).is_err());
    }
}
