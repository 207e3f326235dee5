//! Fuzz target `tcmu_conf`: the `/etc/tcmu/tcmu.conf` reader of the
//! `tcmu-runner` binary (`runner/src/conf.rs`): its line parser
//! [`conf::parse`] and the whole load ([`conf::load_text`]: the `config`
//! crate layering the file over the command line and the defaults, then
//! typed values with fallbacks).
//!
//! `runner` is a binary crate with no library target, so this target
//! compiles `conf.rs` (and `cli.rs`, which it names for
//! `Layers::from_cli`) into itself as modules, by path: nothing in `runner`
//! changes, and the code fuzzed is the code shipped.
//!
//! The input is the file's text (invalid UTF-8 replaced, as `conf::load`
//! reads it); its first byte also picks the command-line layer (`-d`,
//! `-l DIR`). Invariants:
//! - nothing panics, and nothing in the file is fatal;
//! - every line that is neither blank nor a comment becomes exactly one
//!   entry or one problem, and every problem names its line;
//! - only known keys become entries, in line order;
//! - the settings are always in range: log level 0..=5, absolute log
//!   directory and metrics file, metrics interval ≥ 1 s, ring poll ≤ the
//!   runtime's maximum;
//! - a value in the file wins: the last good line of a key sets it;
//! - the settings written back out as a tcmu.conf read back the same, with
//!   no problem.

#![no_main]

use std::path::{Path, PathBuf};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;

/// `runner/src/cli.rs`: `conf` names `crate::cli::Cli`.
#[allow(dead_code)]
#[path = "../../runner/src/cli.rs"]
mod cli;
/// `runner/src/conf.rs`, the code under test.
#[allow(dead_code)]
#[path = "../../runner/src/conf.rs"]
mod conf;

use conf::{Layers, RawValue, Settings, KNOWN_KEYS, MAX_LOG_LEVEL};

fuzz_target!(|data: &[u8]| {
    let (layers, text) = match data.split_first() {
        Some((&b, rest)) => (layers(b), rest),
        None => (layers(0), data),
    };
    one_input(&layers, &String::from_utf8_lossy(text));
});

/// The command-line layer: bit 0 is `-d`, bit 1 `-l /srv/log`.
fn layers(b: u8) -> Layers {
    Layers {
        path: PathBuf::from("/nonexistent/tcmu.conf"),
        cli_debug: b & 1 != 0,
        cli_log_dir: (b & 2 != 0).then(|| PathBuf::from("/srv/log")),
        env_log_dir: None,
    }
}

/// Runs the parser and the loader on one file.
fn one_input(layers: &Layers, text: &str) {
    let parsed = check_parse(text);
    let defaults = layers.defaults();
    let loaded = conf::load_text(layers, Some(text), &defaults);
    for p in &loaded.problems {
        assert!(!p.trim().is_empty(), "an empty problem for {text:?}");
    }
    check_range(&loaded.settings, text);
    check_file_wins(text, &parsed, &loaded.settings);
    check_round_trip(layers, &loaded.settings);
}

/// The line parser; returns what it parsed.
fn check_parse(text: &str) -> conf::Parsed {
    let parsed = conf::parse(text);
    let meaningful = text
        .lines()
        .filter(|l| {
            let l = l.trim();
            !l.is_empty() && !l.starts_with('#')
        })
        .count();
    assert_eq!(
        parsed.entries.len() + parsed.problems.len(),
        meaningful,
        "{text:?}: {} lines with content gave {} entries and {} problems",
        meaningful,
        parsed.entries.len(),
        parsed.problems.len()
    );
    let lines = text.lines().count();
    let mut last = 0;
    for e in &parsed.entries {
        assert!(
            KNOWN_KEYS.contains(&e.key.as_str()),
            "unknown key {:?} kept",
            e.key
        );
        assert!(
            e.line > last && e.line <= lines,
            "entry line {} out of order",
            e.line
        );
        last = e.line;
    }
    for p in &parsed.problems {
        assert!(
            p.starts_with("line "),
            "problem {p:?} does not name its line"
        );
    }
    assert_eq!(
        conf::parse(text),
        parsed,
        "{text:?} parses differently the second time"
    );
    parsed
}

/// Every setting is one the daemon can use.
fn check_range(s: &Settings, text: &str) {
    assert!(
        s.log_level <= MAX_LOG_LEVEL,
        "{text:?}: log level {}",
        s.log_level
    );
    assert!(s.log_dir.is_absolute(), "{text:?}: log dir {:?}", s.log_dir);
    if let Some(f) = &s.metrics_file {
        assert!(f.is_absolute(), "{text:?}: metrics file {f:?}");
    }
    assert!(
        s.metrics_interval >= Duration::from_secs(1),
        "{text:?}: metrics interval {:?}",
        s.metrics_interval
    );
    assert!(
        s.ring_poll <= tcmu_runtime::poll::MAX_RING_POLL,
        "{text:?}: ring poll {:?}",
        s.ring_poll
    );
}

/// The last line of a key, if its value is good, sets the key.
fn check_file_wins(text: &str, parsed: &conf::Parsed, s: &Settings) {
    for key in KNOWN_KEYS {
        let Some(e) = parsed.entries.iter().rev().find(|e| e.key == *key) else {
            continue;
        };
        let RawValue::Text(v) = &e.value else {
            continue;
        };
        match *key {
            "log_level" => {
                if let Ok(n) = v.trim().parse::<i64>() {
                    let want = n.clamp(0, i64::from(MAX_LOG_LEVEL));
                    assert_eq!(i64::from(s.log_level), want, "{text:?}: log_level");
                }
            }
            "log_dir" if v.starts_with('/') => {
                assert_eq!(s.log_dir, Path::new(v), "{text:?}: log_dir");
            }
            "metrics_file" if v.is_empty() => {
                assert_eq!(s.metrics_file, None, "{text:?}: metrics_file");
            }
            "metrics_file" if v.starts_with('/') => {
                assert_eq!(
                    s.metrics_file.as_deref(),
                    Some(Path::new(v)),
                    "{text:?}: metrics_file"
                );
            }
            "metrics_interval" => {
                if let Ok(n) = v.trim().parse::<u64>() {
                    if n >= 1 {
                        assert_eq!(s.metrics_interval, Duration::from_secs(n), "{text:?}");
                    }
                }
            }
            _ => {}
        }
    }
}

/// A value written as tcmu.conf reads it back: quoted when it has to be;
/// `None` when it cannot be written (both quote characters, a line break).
fn quote(v: &str) -> Option<String> {
    if v.contains(['\n', '\r']) {
        return None;
    }
    let plain = !v.is_empty() && v.trim() == v && !v.contains('#') && !v.starts_with(['"', '\'']);
    if plain {
        Some(v.to_owned())
    } else if !v.contains('"') {
        Some(format!("\"{v}\""))
    } else if !v.contains('\'') {
        Some(format!("'{v}'"))
    } else {
        None
    }
}

/// The settings, written out and read back, are the same and raise no
/// problem.
fn check_round_trip(layers: &Layers, s: &Settings) {
    let path = |p: &Path| p.to_str().and_then(quote);
    let (Some(log_dir), Some(metrics_file)) = (
        path(&s.log_dir),
        match &s.metrics_file {
            None => Some("\"\"".to_owned()),
            Some(f) => path(f),
        },
    ) else {
        return;
    };
    let text = format!(
        "log_level = {}\nlog_dir = {log_dir}\nmetrics_file = {metrics_file}\n\
         metrics_interval = {}\nring_poll_us = {}\n",
        s.log_level,
        s.metrics_interval.as_secs(),
        s.ring_poll.as_micros()
    );
    // A different starting point, so that every value must come from the
    // text.
    let mut other = layers.defaults();
    other.log_level = (s.log_level + 1) % (MAX_LOG_LEVEL + 1);
    let again = conf::load_text(layers, Some(&text), &other);
    assert_eq!(
        again.problems,
        Vec::<String>::new(),
        "{text:?} raised problems"
    );
    assert_eq!(&again.settings, s, "{text:?} reads back differently");
}
