//! apt: bookworm-backports source, package installation, downloads.

use std::fs;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

use super::{PACKAGES, QEMU_PACKAGE};
use crate::cmd;

/// The sources file this task adds when no backports source exists.
const BACKPORTS_FILE: &str = "/etc/apt/sources.list.d/bookworm-backports.sources";

/// Tracks whether `apt-get update` already ran during this invocation.
#[derive(Default)]
pub struct Apt {
    /// `apt-get update` ran in this process.
    updated: bool,
}

impl Apt {
    /// Runs `apt-get update` once per xtask invocation.
    pub fn update(&mut self) -> Result<()> {
        if !self.updated {
            cmd::run(Command::new("apt-get").arg("update")).context("apt-get update failed")?;
            self.updated = true;
        }
        Ok(())
    }

    /// Runs `apt-get update` again even if it already ran (after adding a
    /// source).
    pub fn refresh(&mut self) -> Result<()> {
        self.updated = false;
        self.update()
    }

    /// Installs whatever is missing from [`PACKAGES`] and [`QEMU_PACKAGE`];
    /// does not touch apt at all when everything is installed.
    pub fn ensure_packages(&mut self) -> Result<()> {
        if !missing_packages(&[QEMU_PACKAGE])?.is_empty() {
            eprintln!("xtask: installing missing packages: {QEMU_PACKAGE}");
            ensure_backports_source()?;
            self.update()?;
            apt_install(&["-t", "bookworm-backports", QEMU_PACKAGE])?;
            check_installed(&[QEMU_PACKAGE])?;
        }
        self.ensure(PACKAGES)
    }

    /// Installs whatever is missing from `wanted` (from the machine's
    /// default suites); does not touch apt at all when everything is
    /// installed.
    pub fn ensure(&mut self, wanted: &[&str]) -> Result<()> {
        let missing = missing_packages(wanted)?;
        if missing.is_empty() {
            return Ok(());
        }
        eprintln!("xtask: installing missing packages: {}", missing.join(" "));
        self.update()?;
        apt_install(&missing)?;
        check_installed(wanted)
    }
}

/// Fails unless every package of `wanted` is installed.
fn check_installed(wanted: &[&str]) -> Result<()> {
    let still = missing_packages(wanted)?;
    if !still.is_empty() {
        bail!(
            "packages still missing after apt-get install: {}",
            still.join(" ")
        );
    }
    Ok(())
}

/// `apt-get install -y --no-install-recommends ARGS`, non-interactive.
fn apt_install(args: &[&str]) -> Result<()> {
    cmd::run(
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends"])
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
    .context("apt-get install failed (are you root?)")
}

/// Returns the packages of `wanted` that `dpkg-query` does not report as
/// installed.
fn missing_packages<'a>(wanted: &[&'a str]) -> Result<Vec<&'a str>> {
    // dpkg-query exits 1 when a package is unknown; its stdout still lists
    // the known ones, so the exit status is deliberately ignored.
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Package} ${db:Status-Abbrev}\\n"])
        .args(wanted)
        .output()
        .context("cannot run dpkg-query (is this a Debian machine?)")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    Ok(wanted
        .iter()
        .copied()
        .filter(|pkg| {
            !stdout.lines().any(|line| {
                let mut f = line.split_whitespace();
                let name = f.next().unwrap_or_default();
                // Multi-arch names come back as "name:arch".
                let name = name.split(':').next().unwrap_or_default();
                name == *pkg && f.next().is_some_and(|s| s.starts_with("ii"))
            })
        })
        .collect())
}

/// Adds bookworm-backports as a deb822 `.sources` file unless some apt
/// source already names it. The mirror URI and keyring are taken from the
/// machine's existing Debian `bookworm` source.
fn ensure_backports_source() -> Result<()> {
    let sources = read_sources()?;
    if sources
        .iter()
        .any(|(_, text)| text.contains("bookworm-backports"))
    {
        return Ok(());
    }
    add_source(&sources, BACKPORTS_FILE, "deb", "bookworm-backports")
}

/// Writes a deb822 `.sources` file at `file` for `types` and `suite`, with
/// the mirror and keyring of the machine's Debian `bookworm` source.
fn add_source(sources: &[(String, String)], file: &str, types: &str, suite: &str) -> Result<()> {
    let (uri, signed_by) = sources
        .iter()
        .find_map(|(path, text)| debian_source(path, text))
        .context(
            "found no Debian bookworm source in /etc/apt/sources.list* to take the mirror from",
        )?;
    let mut stanza = format!("Types: {types}\nURIs: {uri}\nSuites: {suite}\nComponents: main\n");
    if let Some(key) = signed_by {
        stanza.push_str(&format!("Signed-By: {key}\n"));
    }
    eprintln!("xtask: adding {file} (mirror {uri})");
    fs::write(file, stanza).with_context(|| format!("cannot write {file} (are you root?)"))
}

/// The mirror URI of the machine's Debian `bookworm` source (what
/// `debootstrap` fetches from: the only archive these machines reach).
pub fn debian_mirror() -> Result<String> {
    read_sources()?
        .iter()
        .find_map(|(path, text)| debian_source(path, text))
        .map(|(uri, _)| uri)
        .context(
            "found no Debian bookworm source in /etc/apt/sources.list* to take the mirror from",
        )
}

/// The sources file [`ensure_deb_src_source`] adds.
const DEB_SRC_FILE: &str = "/etc/apt/sources.list.d/bookworm-src.sources";

/// Adds a `deb-src` source for bookworm (for `apt-get source`) as a deb822
/// `.sources` file unless some apt source already has one, with the mirror
/// and keyring of the machine's Debian `bookworm` source. Returns whether it
/// added one (apt's lists then need an update).
pub fn ensure_deb_src_source() -> Result<bool> {
    let sources = read_sources()?;
    if sources.iter().any(|(path, text)| has_deb_src(path, text)) {
        return Ok(false);
    }
    add_source(&sources, DEB_SRC_FILE, "deb-src", "bookworm")?;
    Ok(true)
}

/// Whether one sources file has a `deb-src` entry for the `bookworm` suite.
fn has_deb_src(path: &str, text: &str) -> bool {
    if path.ends_with(".sources") {
        text.split("\n\n").any(|stanza| {
            let field = |name: &str| {
                stanza
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.trim().eq_ignore_ascii_case(name).then(|| v.to_owned())
                    })
                    .unwrap_or_default()
            };
            let enabled = !field("Enabled").trim().eq_ignore_ascii_case("no");
            enabled
                && field("Types").split_whitespace().any(|t| t == "deb-src")
                && field("Suites").split_whitespace().any(|s| s == "bookworm")
        })
    } else {
        text.lines().any(|line| {
            let line = line.split('#').next().unwrap_or_default();
            let mut words = line.split_whitespace();
            words.next() == Some("deb-src") && words.any(|w| w == "bookworm")
        })
    }
}

/// Reads `/etc/apt/sources.list` and every `.list`/`.sources` file under
/// `/etc/apt/sources.list.d/` as (path, text).
fn read_sources() -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    let main = Path::new("/etc/apt/sources.list");
    if main.exists() {
        let text = fs::read_to_string(main).context("cannot read /etc/apt/sources.list")?;
        out.push((main.display().to_string(), text));
    }
    let dir = Path::new("/etc/apt/sources.list.d");
    if dir.is_dir() {
        let mut entries: Vec<_> = fs::read_dir(dir)
            .context("cannot list /etc/apt/sources.list.d")?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "list" || e == "sources"))
            .collect();
        entries.sort();
        for p in entries {
            let text =
                fs::read_to_string(&p).with_context(|| format!("cannot read {}", p.display()))?;
            out.push((p.display().to_string(), text));
        }
    }
    Ok(out)
}

/// Finds the URI (and `Signed-By`, for deb822) of a source serving the
/// `bookworm` suite in one sources file, one-line or deb822 format.
fn debian_source(path: &str, text: &str) -> Option<(String, Option<String>)> {
    if path.ends_with(".sources") {
        for stanza in text.split("\n\n") {
            let field = |name: &str| {
                stanza.lines().find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    (k.trim().eq_ignore_ascii_case(name)).then(|| v.trim().to_owned())
                })
            };
            let suites = field("Suites").unwrap_or_default();
            let types = field("Types").unwrap_or_default();
            if types.split_whitespace().any(|t| t == "deb")
                && suites.split_whitespace().any(|s| s == "bookworm")
            {
                let uri = field("URIs")?.split_whitespace().next()?.to_owned();
                return Some((uri, field("Signed-By")));
            }
        }
        None
    } else {
        text.lines().find_map(|line| {
            let line = line.split('#').next()?.trim();
            let mut words = line.split_whitespace();
            if words.next()? != "deb" {
                return None;
            }
            let mut uri = words.next()?;
            // Skip an options block like "[arch=amd64 signed-by=...]".
            if uri.starts_with('[') {
                while !uri.ends_with(']') {
                    uri = words.next()?;
                }
                uri = words.next()?;
            }
            (words.next()? == "bookworm").then(|| (uri.to_owned(), None))
        })
    }
}

/// `apt-get download PACKAGE` into `dir`.
pub fn download(pkg: &str, dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    cmd::run(
        Command::new("apt-get")
            // The target folder is not the _apt user's: download as root.
            .args(["-o", "APT::Sandbox::User=root", "download", pkg])
            .current_dir(dir),
    )
    .with_context(|| format!("downloading {pkg} failed"))
}

#[cfg(test)]
mod tests {
    use super::debian_source;

    #[test]
    fn deb822_source() {
        let text = "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\nComponents: main\nSigned-By: /k.gpg\n\nTypes: deb\nURIs: http://x/debian-security\nSuites: bookworm-security\n";
        assert_eq!(
            debian_source("/d.sources", text),
            Some(("http://mirror.example/debian".into(), Some("/k.gpg".into())))
        );
    }

    #[test]
    fn deb_src_sources() {
        use super::has_deb_src;
        let src = "Types: deb-src\nURIs: http://m/debian\nSuites: bookworm\nComponents: main\n";
        assert!(has_deb_src("/a.sources", src));
        assert!(!has_deb_src("/a.sources", &format!("{src}Enabled: no\n")));
        assert!(!has_deb_src(
            "/a.sources",
            "Types: deb\nURIs: http://m/debian\nSuites: bookworm\n"
        ));
        assert!(has_deb_src(
            "/x.list",
            "deb-src http://m/debian bookworm main\n"
        ));
        assert!(!has_deb_src(
            "/x.list",
            "# deb-src http://m/debian bookworm main\n"
        ));
        assert!(!has_deb_src(
            "/x.list",
            "deb-src http://m/debian bookworm-updates main\n"
        ));
    }

    #[test]
    fn one_line_source() {
        let text = "# c\ndeb [arch=amd64] http://m.example/debian bookworm main\n";
        assert_eq!(
            debian_source("/etc/apt/sources.list", text),
            Some(("http://m.example/debian".into(), None))
        );
        assert_eq!(
            debian_source("/x.list", "deb http://s/ bookworm-security main\n"),
            None
        );
    }
}
