//! The `ram` handler's configuration string: an optional size.
//!
//! `dev_config=ram/64M` gives the cfgstring `64M`. Accepted: a byte count
//! (`1048576`), or a number with a binary suffix `K`, `M`, `G`, `T` or `P`
//! (case-insensitive, optionally followed by `B` or `iB`: `64M`, `64MiB`,
//! `1g`). An empty cfgstring means "as large as the device".

/// Why a `ram` cfgstring was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// Not a number with an optional suffix.
    #[error("ram handler: invalid size '{0}' (expected bytes or a number with K, M, G, T or P, e.g. 64M)")]
    Invalid(String),
    /// A size of zero bytes.
    #[error("ram handler: size '{0}' is zero")]
    Zero(String),
    /// More bytes than a `u64` (or this machine's address space) holds.
    #[error("ram handler: size '{0}' is too large")]
    TooLarge(String),
}

/// A parsed `ram` cfgstring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RamConfig {
    /// The requested size in bytes; `None` means the device size.
    pub size: Option<u64>,
}

impl RamConfig {
    /// Parses a cfgstring (the part after `ram/`).
    pub fn parse(cfgstring: &str) -> Result<Self, ConfigError> {
        let s = cfgstring.trim();
        if s.is_empty() {
            return Ok(Self { size: None });
        }
        let size = parse_size(s)?;
        if usize::try_from(size).is_err() {
            return Err(ConfigError::TooLarge(s.to_owned()));
        }
        Ok(Self { size: Some(size) })
    }
}

/// Parses `64M`-style sizes (binary multiples) into bytes.
pub fn parse_size(s: &str) -> Result<u64, ConfigError> {
    let invalid = || ConfigError::Invalid(s.to_owned());
    let digits_end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, suffix) = s.split_at(digits_end);
    if digits.is_empty() {
        return Err(invalid());
    }
    let number: u64 = digits
        .parse()
        .map_err(|_| ConfigError::TooLarge(s.to_owned()))?;
    let suffix = suffix.to_ascii_lowercase();
    let unit = suffix
        .strip_suffix("ib")
        .or_else(|| suffix.strip_suffix('b'))
        .unwrap_or(&suffix);
    let shift = match unit {
        "" if suffix.is_empty() || suffix == "b" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        "p" => 50,
        _ => return Err(invalid()),
    };
    let bytes = number
        .checked_mul(1u64 << shift)
        .ok_or_else(|| ConfigError::TooLarge(s.to_owned()))?;
    if bytes == 0 {
        return Err(ConfigError::Zero(s.to_owned()));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn parses_sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("4096B"), Ok(4096));
        assert_eq!(parse_size("64M"), Ok(64 << 20));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("64mb"), Ok(64 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("2k"), Ok(2048));
        assert_eq!(parse_size("1T"), Ok(1 << 40));
    }

    #[test]
    fn empty_means_device_size() {
        assert_eq!(RamConfig::parse(""), Ok(RamConfig { size: None }));
        assert_eq!(
            RamConfig::parse("8M"),
            Ok(RamConfig {
                size: Some(8 << 20)
            })
        );
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["M", "12X", "1.5G", "-1", "64 M", "ib", "1iB"] {
            let err = parse_size(bad).unwrap_err();
            assert!(matches!(err, ConfigError::Invalid(_)), "{bad}: {err}");
            assert!(err.to_string().contains(bad), "{err}");
        }
        assert!(matches!(parse_size("0"), Err(ConfigError::Zero(_))));
        assert!(matches!(
            parse_size("99999999999999999999"),
            Err(ConfigError::TooLarge(_))
        ));
        assert!(matches!(
            parse_size("16384P"),
            Err(ConfigError::TooLarge(_))
        ));
    }
}
