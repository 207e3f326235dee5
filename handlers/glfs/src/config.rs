//! [`GlfsConfig`]: the cfgstring `<volume>@<server>/<path>`.
//!
//! As tcmu-runner reads it: the volume is what comes before the first `@`,
//! the server what lies between it and the next `/`, the path the rest
//! (the file's path inside the volume; sub-directories allowed). The
//! volfile server is reached over TCP on glusterd's port 24007, or on the
//! port given as `<server>:<port>`.

use std::fmt;

/// glusterd's port, where clients fetch a volume's volfile.
pub const GLUSTERD_PORT: u16 = 24007;

/// A parsed `glfs` cfgstring.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GlfsConfig {
    /// The volume's name.
    pub volume: String,
    /// The volfile server (glusterd's host name or address).
    pub server: String,
    /// glusterd's port.
    pub port: u16,
    /// The file's path in the volume, starting with `/`.
    pub path: String,
}

/// Why a cfgstring is not `<volume>@<server>/<path>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// No `@` between volume and server.
    #[error("glfs: '{0}': expected <volume>@<server>/<path in volume>, found no '@'")]
    NoAt(String),
    /// Nothing before the `@`.
    #[error("glfs: '{0}': the volume name (before '@') is empty")]
    EmptyVolume(String),
    /// A volume name with a character Gluster does not allow in one.
    #[error("glfs: '{0}': the volume name {1:?} may hold only letters, digits, '-' and '_'")]
    BadVolume(String, String),
    /// No `/` after the server.
    #[error(
        "glfs: '{0}': expected <volume>@<server>/<path in volume>, found no '/' after the server"
    )]
    NoPath(String),
    /// Nothing between `@` and `/`.
    #[error("glfs: '{0}': the server name (between '@' and '/') is empty")]
    EmptyServer(String),
    /// A `:port` that is not a port number.
    #[error("glfs: '{0}': {1:?} is not a port number (1-65535)")]
    BadPort(String, String),
    /// Nothing after the server's `/`, or a path naming a directory.
    #[error("glfs: '{0}': the path of the file in the volume is empty or ends with '/'")]
    EmptyPath(String),
    /// A NUL byte or a control character.
    #[error("glfs: {0:?}: control characters are not allowed")]
    Control(String),
}

impl GlfsConfig {
    /// Parses the part of `dev_config` after `glfs/`.
    pub fn parse(cfg: &str) -> Result<Self, ConfigError> {
        let owned = || cfg.to_owned();
        if cfg.chars().any(char::is_control) {
            return Err(ConfigError::Control(owned()));
        }
        let (volume, rest) = cfg
            .split_once('@')
            .ok_or_else(|| ConfigError::NoAt(owned()))?;
        if volume.is_empty() {
            return Err(ConfigError::EmptyVolume(owned()));
        }
        if !volume
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(ConfigError::BadVolume(owned(), volume.to_owned()));
        }
        let (server, path) = rest
            .split_once('/')
            .ok_or_else(|| ConfigError::NoPath(owned()))?;
        let (server, port) = match server.rsplit_once(':') {
            // A bare IPv6 address has several colons and no port.
            Some((host, port)) if !host.contains(':') => {
                let p = port
                    .parse::<u16>()
                    .ok()
                    .filter(|&p| p != 0)
                    .ok_or_else(|| ConfigError::BadPort(owned(), port.to_owned()))?;
                (host, p)
            }
            _ => (server, GLUSTERD_PORT),
        };
        if server.is_empty() {
            return Err(ConfigError::EmptyServer(owned()));
        }
        let path = path.trim_start_matches('/');
        if path.is_empty() || path.ends_with('/') {
            return Err(ConfigError::EmptyPath(owned()));
        }
        Ok(Self {
            volume: volume.to_owned(),
            server: server.to_owned(),
            port,
            path: format!("/{path}"),
        })
    }

    /// The file, as logs and messages name it: `volume@server:/path`.
    pub fn spec(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for GlfsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.port == GLUSTERD_PORT {
            write!(f, "{}@{}:{}", self.volume, self.server, self.path)
        } else {
            write!(
                f,
                "{}@{}:{}:{}",
                self.volume, self.server, self.port, self.path
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcmu_runners_format_is_read() {
        let c = GlfsConfig::parse("vol0@gluster1.example.com/block-store/disk0.img");
        assert_eq!(
            c,
            Ok(GlfsConfig {
                volume: "vol0".into(),
                server: "gluster1.example.com".into(),
                port: GLUSTERD_PORT,
                path: "/block-store/disk0.img".into(),
            })
        );
        let c = GlfsConfig::parse("v_1-a@10.0.0.5//disk").map(|c| (c.server, c.path));
        assert_eq!(c, Ok(("10.0.0.5".into(), "/disk".into())));
    }

    #[test]
    fn a_port_and_ipv6_addresses() {
        let c = GlfsConfig::parse("v@host:24010/d").map(|c| (c.server, c.port));
        assert_eq!(c, Ok(("host".into(), 24010)));
        let c = GlfsConfig::parse("v@fe80::1/d").map(|c| (c.server, c.port));
        assert_eq!(c, Ok(("fe80::1".into(), GLUSTERD_PORT)));
        assert!(matches!(
            GlfsConfig::parse("v@host:0/d"),
            Err(ConfigError::BadPort(..))
        ));
        assert!(matches!(
            GlfsConfig::parse("v@host:x/d"),
            Err(ConfigError::BadPort(..))
        ));
    }

    /// Which error a malformed string must give.
    type Expect = fn(&ConfigError) -> bool;

    #[test]
    fn malformed_strings_are_refused_with_their_cause() {
        let cases: &[(&str, Expect)] = &[
            ("", |e| matches!(e, ConfigError::NoAt(_))),
            ("vol/host/disk", |e| matches!(e, ConfigError::NoAt(_))),
            ("@host/disk", |e| matches!(e, ConfigError::EmptyVolume(_))),
            ("v o@host/disk", |e| matches!(e, ConfigError::BadVolume(..))),
            ("vol@host", |e| matches!(e, ConfigError::NoPath(_))),
            ("vol@/disk", |e| matches!(e, ConfigError::EmptyServer(_))),
            ("vol@host/", |e| matches!(e, ConfigError::EmptyPath(_))),
            ("vol@host/dir/", |e| matches!(e, ConfigError::EmptyPath(_))),
            ("vol@host/a\0b", |e| matches!(e, ConfigError::Control(_))),
        ];
        for (cfg, is) in cases {
            match GlfsConfig::parse(cfg) {
                Err(e) => {
                    assert!(is(&e), "{cfg:?}: {e}");
                    assert!(e.to_string().starts_with("glfs: "), "{e}");
                }
                Ok(c) => panic!("{cfg:?} accepted as {c:?}"),
            }
        }
    }

    #[test]
    fn the_spec_names_volume_server_and_path() {
        let c = GlfsConfig::parse("vol@h/d.img").map(|c| c.spec());
        assert_eq!(c.as_deref(), Ok("vol@h:/d.img"));
        let c = GlfsConfig::parse("vol@h:1/d.img").map(|c| c.spec());
        assert_eq!(c.as_deref(), Ok("vol@h:1:/d.img"));
    }
}
