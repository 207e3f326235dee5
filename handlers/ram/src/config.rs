//! The `ram` handler's configuration string: an optional size, then
//! optional injected faults.
//!
//! `dev_config=ram/64M;fail_read=100-199` gives the cfgstring
//! `64M;fail_read=100-199`. Grammar: `[SIZE][;OPTION]...`, fields
//! separated by `;` (the kernel's `control` file splits on commas, so
//! they cannot separate anything here).
//!
//! SIZE is a byte count (`1048576`), or a number with a binary suffix `K`,
//! `M`, `G`, `T` or `P` (case-insensitive, optionally followed by `B` or
//! `iB`: `64M`, `64MiB`, `1g`); none (an empty first field, or options
//! only) means "as large as the device".
//!
//! OPTIONs inject faults ([`crate::faults`]). RANGE is a logical block
//! (`100`) or an inclusive range of them (`100-199`), in the device's
//! logical block size; the range options may be given several times:
//!
//! | option | effect on a command touching RANGE |
//! |---|---|
//! | `fail_read=RANGE` | READ fails: MEDIUM ERROR, UNRECOVERED READ ERROR (03/11/00), INFORMATION = first failing block |
//! | `fail_write=RANGE` | WRITE fails: MEDIUM ERROR, WRITE ERROR (03/0C/00), INFORMATION = first failing block; nothing is written |
//! | `short_read=RANGE` | READ returns only the blocks before the range: GOOD with a residual; a READ starting inside it: as `fail_read` (TCMU cannot return GOOD with no data) |
//! | `hang_read=RANGE`, `hang_write=RANGE` | the command never completes on its own |
//! | `panic_read=RANGE`, `panic_write=RANGE` | the handler panics: HARDWARE ERROR, INTERNAL TARGET FAILURE (04/44/00) for that command only |
//! | `not_ready` | every read, write and flush: NOT READY, CAUSE NOT REPORTABLE (02/04/00) |
//! | `delay_ms=N` | every read and write first waits N ms (0 to 600000) |

use std::time::Duration;

use crate::faults::{BlockRange, FaultSet, RangeFault, RANGE_FAULT_KEYS};

/// The longest `delay_ms` accepted: ten minutes.
pub const MAX_DELAY_MS: u64 = 600_000;

/// Every option key, for messages.
const KNOWN_OPTIONS: &str = "fail_read, fail_write, short_read, hang_read, hang_write, \
                             panic_read, panic_write, not_ready, delay_ms";

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
    /// An option this handler does not know.
    #[error("ram handler: unknown option '{0}' (known: {KNOWN_OPTIONS})")]
    UnknownOption(String),
    /// An option given without the value it needs.
    #[error("ram handler: option '{key}' needs a value ({key}={expected})")]
    MissingValue {
        /// The option.
        key: String,
        /// What the value looks like.
        expected: &'static str,
    },
    /// A value given to an option that takes none.
    #[error("ram handler: option '{0}' takes no value")]
    UnexpectedValue(String),
    /// A value that is not what the option takes.
    #[error("ram handler: {key}={value}: {reason}")]
    BadValue {
        /// The option.
        key: String,
        /// The value given.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An option that may appear once given again.
    #[error("ram handler: option '{0}' given twice")]
    Repeated(String),
    /// Nothing between two separators, or after the last.
    #[error("ram handler: empty option in '{0}' (two ';' in a row or a trailing ';')")]
    EmptyOption(String),
}

/// A parsed `ram` cfgstring.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RamConfig {
    /// The requested size in bytes; `None` means the device size.
    pub size: Option<u64>,
    /// The faults to inject (none by default).
    pub faults: FaultSet,
}

impl RamConfig {
    /// Parses a cfgstring (the part after `ram/`).
    pub fn parse(cfgstring: &str) -> Result<Self, ConfigError> {
        let whole = cfgstring.trim();
        let mut fields = whole.split(';').map(str::trim).peekable();
        let mut config = Self::default();
        // The first field is the size unless it is an option.
        if let Some(first) = fields.next_if(|f| !is_option(f)) {
            if !first.is_empty() {
                let size = parse_size(first)?;
                if usize::try_from(size).is_err() {
                    return Err(ConfigError::TooLarge(first.to_owned()));
                }
                config.size = Some(size);
            }
        }
        for field in fields {
            if field.is_empty() {
                return Err(ConfigError::EmptyOption(whole.to_owned()));
            }
            config.faults.add_option(field)?;
        }
        Ok(config)
    }
}

/// Whether a field is an option rather than a size: it has a value, or it
/// is the name of an option.
fn is_option(field: &str) -> bool {
    field.contains('=')
        || ["not_ready", "delay_ms"].contains(&field)
        || RANGE_FAULT_KEYS.iter().any(|(key, _, _)| *key == field)
}

impl FaultSet {
    /// Adds one `KEY[=VALUE]` option.
    fn add_option(&mut self, field: &str) -> Result<(), ConfigError> {
        let (key, value) = match field.split_once('=') {
            Some((k, v)) => (k.trim(), Some(v.trim())),
            None => (field, None),
        };
        let bad = |reason: &str| ConfigError::BadValue {
            key: key.to_owned(),
            value: value.unwrap_or_default().to_owned(),
            reason: reason.to_owned(),
        };
        if let Some((_, effect, access)) = RANGE_FAULT_KEYS.iter().find(|(k, _, _)| *k == key) {
            let value = value.ok_or_else(|| ConfigError::MissingValue {
                key: key.to_owned(),
                expected: "LBA or FIRST-LAST",
            })?;
            let range = parse_range(value).map_err(&bad)?;
            self.ranges.push(RangeFault {
                effect: *effect,
                access: *access,
                range,
            });
            return Ok(());
        }
        match key {
            "not_ready" => {
                if value.is_some() {
                    return Err(ConfigError::UnexpectedValue(key.to_owned()));
                }
                if self.not_ready {
                    return Err(ConfigError::Repeated(key.to_owned()));
                }
                self.not_ready = true;
            }
            "delay_ms" => {
                let value = value.ok_or_else(|| ConfigError::MissingValue {
                    key: key.to_owned(),
                    expected: "milliseconds",
                })?;
                if self.delay.is_some() {
                    return Err(ConfigError::Repeated(key.to_owned()));
                }
                let ms = parse_number(value)
                    .ok_or_else(|| bad("not a number of milliseconds"))?
                    .filter(|ms| *ms <= MAX_DELAY_MS)
                    .ok_or_else(|| bad("more than 600000 (ten minutes)"))?;
                // 0 is accepted and injects nothing.
                self.delay = (ms > 0).then(|| Duration::from_millis(ms));
            }
            _ => return Err(ConfigError::UnknownOption(key.to_owned())),
        }
        Ok(())
    }
}

/// A decimal number: `None` if not digits, `Some(None)` if too large.
fn parse_number(s: &str) -> Option<Option<u64>> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(s.parse().ok())
}

/// `LBA` or `FIRST-LAST` (inclusive).
fn parse_range(s: &str) -> Result<BlockRange, &'static str> {
    let lba = |t: &str| match parse_number(t.trim()) {
        None => Err("not an LBA or FIRST-LAST range of LBAs (decimal)"),
        Some(None) => Err("LBA too large"),
        Some(Some(n)) => Ok(n),
    };
    let (first, last) = match s.split_once('-') {
        Some((a, b)) => (lba(a)?, lba(b)?),
        None => {
            let n = lba(s)?;
            (n, n)
        }
    };
    BlockRange::new(first, last).ok_or("LAST is smaller than FIRST")
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
        assert_eq!(RamConfig::parse(""), Ok(RamConfig::default()));
        assert_eq!(
            RamConfig::parse("8M"),
            Ok(RamConfig {
                size: Some(8 << 20),
                faults: FaultSet::default(),
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

    fn faults(cfg: &str) -> FaultSet {
        RamConfig::parse(cfg)
            .unwrap_or_else(|e| panic!("{cfg}: {e}"))
            .faults
    }

    fn refused(cfg: &str) -> String {
        RamConfig::parse(cfg)
            .expect_err(&format!("'{cfg}' was accepted"))
            .to_string()
    }

    #[test]
    fn parses_fault_options() {
        use crate::faults::{Access, Effect};

        let c = RamConfig::parse("64M;fail_read=100-199;fail_read=7;delay_ms=25").unwrap();
        assert_eq!(c.size, Some(64 << 20));
        assert_eq!(c.faults.ranges.len(), 2);
        assert_eq!(c.faults.ranges[0].effect, Effect::Fail);
        assert_eq!(c.faults.ranges[0].access, Access::Read);
        assert_eq!(c.faults.ranges[0].range, BlockRange::new(100, 199).unwrap());
        assert_eq!(c.faults.ranges[1].range, BlockRange::new(7, 7).unwrap());
        assert_eq!(c.faults.delay, Some(Duration::from_millis(25)));
        assert!(!c.faults.not_ready);

        // No size: an empty first field, or options from the start.
        for cfg in [";not_ready", "not_ready", " ; not_ready "] {
            let c = RamConfig::parse(cfg).unwrap();
            assert_eq!(c.size, None, "{cfg}");
            assert!(c.faults.not_ready, "{cfg}");
        }
        let c = RamConfig::parse("short_read=8-15").unwrap();
        assert_eq!(c.size, None);
        assert!(c.faults.has_short_reads());

        // Every key, and back to the same text.
        let all = "fail_read=1;fail_write=2-3;hang_read=4;hang_write=5;short_read=6-60;\
                   panic_read=7;panic_write=8-9;not_ready;delay_ms=600000";
        assert_eq!(faults(all).to_string(), all);
        assert_eq!(faults(" fail_write = 2 - 3 ").to_string(), "fail_write=2-3");
        assert_eq!(faults("delay_ms=0").delay, None, "0 injects nothing");
        assert_eq!(
            faults("fail_read=18446744073709551615").ranges[0]
                .range
                .first,
            u64::MAX
        );
        assert!(faults("").is_empty());
        assert!(faults("1G").is_empty());
    }

    #[test]
    fn refuses_bad_options_naming_the_key() {
        let cases = [
            ("64M;fail_reed=1", "unknown option 'fail_reed'"),
            (
                "64M;fail_read",
                "option 'fail_read' needs a value (fail_read=LBA or FIRST-LAST)",
            ),
            ("fail_read=", "fail_read=: not an LBA"),
            ("fail_read=x", "fail_read=x: not an LBA"),
            ("fail_write=-5", "fail_write=-5: not an LBA"),
            ("fail_write=5-", "fail_write=5-: not an LBA"),
            ("short_read=1-2-3", "short_read=1-2-3: not an LBA"),
            ("hang_read=0x10", "hang_read=0x10: not an LBA"),
            (
                "panic_read=20-10",
                "panic_read=20-10: LAST is smaller than FIRST",
            ),
            (
                "hang_write=99999999999999999999",
                "hang_write=99999999999999999999: LBA too large",
            ),
            ("not_ready=1", "option 'not_ready' takes no value"),
            ("not_ready;not_ready", "option 'not_ready' given twice"),
            (
                "delay_ms",
                "option 'delay_ms' needs a value (delay_ms=milliseconds)",
            ),
            ("hang_read", "option 'hang_read' needs a value"),
            ("delay_ms=abc", "delay_ms=abc: not a number of milliseconds"),
            ("delay_ms=-1", "delay_ms=-1: not a number of milliseconds"),
            ("delay_ms=600001", "delay_ms=600001: more than 600000"),
            (
                "delay_ms=99999999999999999999999",
                "delay_ms=99999999999999999999999: more than",
            ),
            ("delay_ms=5;delay_ms=6", "option 'delay_ms' given twice"),
            ("64M;;not_ready", "empty option in '64M;;not_ready'"),
            ("64M;", "empty option in '64M;'"),
            ("64M;32M", "unknown option '32M'"),
            ("64X;not_ready", "invalid size '64X'"),
            ("=5", "unknown option ''"),
        ];
        for (cfg, want) in cases {
            let msg = refused(cfg);
            assert!(msg.starts_with("ram handler: "), "{cfg}: {msg}");
            assert!(msg.contains(want), "{cfg}: got '{msg}', want '{want}'");
        }
        assert!(refused("bogus=1").contains("known: fail_read, fail_write"));
    }
}
