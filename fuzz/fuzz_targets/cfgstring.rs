//! Fuzz target `cfgstring`: every parser a handler configuration string
//! meets, on any text (`dev_config` from the kernel's netlink event or
//! configfs, or what targetcli passes to D-Bus `CheckConfig`).
//!
//! The input, read as UTF-8 (invalid sequences replaced), is tried both as a
//! whole `dev_config` (`<subtype>/<cfgstring>`) and as a bare cfgstring, by:
//! - [`split_dev_config`]: an accepted string has a non-empty subtype
//!   without `/` and splits back into the input;
//! - [`take_runner_options`] (tcmu-runner's `;tcmur_cmd_time_out=N`): no
//!   option is left in what it returns, taking options again changes
//!   nothing, and an option appended to the result is taken back out with
//!   its value; a refusal names the option;
//! - [`Registry::check_dev_config`] with the compiled-in `file` and `ram`
//!   factories (what D-Bus `CheckConfig` answers), and each factory's
//!   `check_config` on its own;
//! - the `ram` handler's [`RamConfig::parse`]: an accepted size is non-zero,
//!   fits the address space, and its plain byte count parses to the same;
//! - the `file` handler's [`FileConfig::check`]. That one looks at the
//!   filesystem (`stat` of the path and its directory), so absolute paths
//!   are checked under a scratch directory made for this process (a file,
//!   a directory, a FIFO, a dangling and a looping symlink), never where
//!   they point on the host; paths with `..` are only checked for being
//!   refused or accepted without touching the filesystem beyond that
//!   directory's parent chain;
//! - the `zbc` handler's [`ZbcConfig::parse`] (no filesystem access): an
//!   accepted path is absolute, and the layout its options give a few
//!   device sizes ([`Geometry::from_options`]) is refused with a message
//!   or holds together: a power-of-two zone size, at least one sequential
//!   zone, 1 to that many open zones, zones covering the device.
//!
//! Everywhere: nothing panics, a string accepted once is accepted again
//! with the same result, and every refusal is a non-empty message.

#![no_main]

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use tcmu_handler_file::{FileConfig, FileFactory};
use tcmu_handler_ram::{RamConfig, RamFactory};
use tcmu_handler_zbc::{Geometry, ZbcConfig};
use tcmu_runtime::{split_dev_config, take_runner_options, HandlerFactory, Registry, Report};

fuzz_target!(|data: &[u8]| one_input(&String::from_utf8_lossy(data)));

/// The option tcmu-runner takes out of every cfgstring.
const OPTION: &str = ";tcmur_cmd_time_out=";

/// A bug this target found, since fixed: when an option led the string,
/// `take_runner_options` removes it with the `;` after it; if the next part
/// is another option, that `;` was its separator, so the option is left at
/// the start of the handler's string: `;tcmur_cmd_time_out=1;tcmur_cmd_time_out=2;/x`
/// gives `tcmur_cmd_time_out=2;/x` (with option 1 applied). Saved as
/// `fuzz/artifacts/cfgstring/known-leading-option-pair*`. When this is
/// `true`, that one check is skipped for strings that start with an
/// option: the switch stays for bisecting.
const TOLERATE_LEADING_PAIR: bool = false;

/// Whether `s` starts with an option (see [`TOLERATE_LEADING_PAIR`]).
fn is_leading_pair(s: &str) -> bool {
    s.starts_with(OPTION)
}

/// The compiled-in factories, registered once.
fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        let mut r = Registry::new();
        r.register(Arc::new(FileFactory));
        r.register(Arc::new(RamFactory));
        r
    })
}

/// A scratch directory for file-handler paths, filled once: `disk.img` (a
/// regular file), `dir/` (a directory), `fifo`, `dangling` (a symlink to
/// nothing) and `loop` (a symlink to itself).
fn sandbox() -> &'static Path {
    static SANDBOX: OnceLock<PathBuf> = OnceLock::new();
    SANDBOX.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("tcmu-fuzz-cfgstring-{}", std::process::id()));
        let _ = std::fs::create_dir_all(dir.join("dir"));
        let _ = std::fs::write(dir.join("disk.img"), b"");
        let _ = std::os::unix::fs::symlink(dir.join("nothing"), dir.join("dangling"));
        let _ = std::os::unix::fs::symlink(dir.join("loop"), dir.join("loop"));
        let _ = rustix::fs::mknodat(
            rustix::fs::CWD,
            dir.join("fifo"),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        );
        dir
    })
}

/// Runs every parser on one input.
fn one_input(s: &str) {
    check_split(s);
    let taken = check_take(s);
    check_ram(s);
    check_file(s);
    check_zbc(s);
    check_registry(s);
    if let Some(rest) = &taken {
        check_ram(rest);
        check_file(rest);
        check_zbc(rest);
    }
    if let Ok((_, cfg)) = split_dev_config(s) {
        if let Some(rest) = check_take(cfg) {
            check_ram(&rest);
            check_file(&rest);
        }
    }
}

/// Checks that a refusal is a message.
fn check_message(what: &str, input: &str, e: &str) {
    assert!(
        !e.trim().is_empty(),
        "{what}({input:?}) refused with an empty message"
    );
}

/// [`split_dev_config`].
fn check_split(s: &str) {
    match split_dev_config(s) {
        Ok((subtype, cfg)) => {
            assert!(
                !subtype.is_empty() && !subtype.contains('/'),
                "{s:?}: subtype {subtype:?}"
            );
            assert_eq!(format!("{subtype}/{cfg}"), s, "split does not join back");
            assert_eq!(
                split_dev_config(s).ok(),
                Some((subtype, cfg)),
                "split differs the second time"
            );
        }
        Err(e) => check_message("split_dev_config", s, &Report(&e).to_string()),
    }
}

/// [`take_runner_options`]; returns the handler's part when accepted.
fn check_take(s: &str) -> Option<String> {
    let (rest, options) = match take_runner_options(s) {
        Ok(r) => r,
        Err(e) => {
            let e = Report(&e).to_string();
            check_message("take_runner_options", s, &e);
            assert!(
                e.contains("tcmur_cmd_time_out"),
                "{s:?}: refusal {e:?} does not name the option"
            );
            assert!(
                s.contains(OPTION),
                "{s:?} has no option yet was refused: {e}"
            );
            return None;
        }
    };
    assert!(
        !rest.contains(OPTION),
        "{s:?}: an option is left in {rest:?}"
    );
    if !(TOLERATE_LEADING_PAIR && is_leading_pair(s)) {
        assert!(
            !rest.starts_with(&OPTION[1..]) || s.starts_with(&OPTION[1..]),
            "{s:?}: taking the options made {rest:?}, which starts with one"
        );
    }
    assert!(rest.len() <= s.len(), "{s:?}: {rest:?} grew");
    assert_eq!(
        options.cmd_time_out.is_some(),
        s.contains(OPTION),
        "{s:?}: options {options:?}"
    );
    assert_eq!(
        take_runner_options(&rest).ok(),
        Some((rest.clone(), Default::default())),
        "{s:?}: taking the options out of {rest:?} again changed something"
    );
    assert_eq!(
        take_runner_options(s).ok(),
        Some((rest.clone(), options)),
        "{s:?}: differs the second time"
    );
    if let Some(n) = options.cmd_time_out {
        let appended = format!("{rest}{OPTION}{n}");
        assert_eq!(
            take_runner_options(&appended).ok(),
            Some((rest.clone(), options)),
            "{s:?}: the option appended to {rest:?} does not come back out"
        );
    }
    Some(rest)
}

/// The `ram` handler's parser and factory.
fn check_ram(cfg: &str) {
    let parsed = RamConfig::parse(cfg);
    match &parsed {
        Ok(c) => {
            if let Some(size) = c.size {
                assert!(size > 0, "{cfg:?}: size 0 accepted");
                assert!(
                    usize::try_from(size).is_ok(),
                    "{cfg:?}: {size} bytes accepted"
                );
                assert_eq!(
                    RamConfig::parse(&size.to_string()).map(|r| r.size),
                    Ok(Some(size)),
                    "{cfg:?}: its byte count {size} parses differently"
                );
            } else {
                assert!(
                    cfg.trim().is_empty(),
                    "{cfg:?}: no size from a non-empty string"
                );
            }
        }
        Err(e) => check_message("RamConfig::parse", cfg, &e.to_string()),
    }
    assert_eq!(
        RamConfig::parse(cfg),
        parsed,
        "{cfg:?}: differs the second time"
    );
    let factory = RamFactory.check_config(cfg);
    assert_eq!(
        factory.is_ok(),
        parsed.is_ok(),
        "{cfg:?}: factory and parser disagree"
    );
    if let Err(e) = factory {
        check_message("RamFactory::check_config", cfg, &Report(&e).to_string());
    }
}

/// The `zbc` handler's parser, and the layouts its options give.
fn check_zbc(cfg: &str) {
    let parsed = ZbcConfig::parse(cfg);
    assert_eq!(
        ZbcConfig::parse(cfg).map_err(|e| e.to_string()),
        parsed.as_ref().map(Clone::clone).map_err(|e| e.to_string()),
        "{cfg:?}: differs the second time"
    );
    let c = match parsed {
        Ok(c) => c,
        Err(e) => return check_message("ZbcConfig::parse", cfg, &e.to_string()),
    };
    assert!(c.path.is_absolute(), "{cfg:?}: relative path {:?}", c.path);
    for size in [0, 512, 4096, 64 << 20, (1 << 40) + 4096, u64::MAX] {
        match Geometry::from_options(&c.options, size) {
            Ok(g) => {
                assert!(g.zone_blocks.is_power_of_two(), "{cfg:?}: {g:?}");
                assert!(g.nr_conv < g.nr_zones, "{cfg:?}: {g:?}");
                assert!(
                    (1..=g.seq_zones()).contains(&g.max_open),
                    "{cfg:?}: {g:?}"
                );
                assert_eq!(g.size_bytes(), size, "{cfg:?}: {g:?}");
                assert!(
                    u64::from(g.nr_zones) * g.zone_blocks >= g.capacity,
                    "{cfg:?}: {g:?}"
                );
            }
            Err(e) => check_message("Geometry::from_options", cfg, &e),
        }
    }
}

/// The `file` handler's check, on paths moved into the sandbox.
fn check_file(cfg: &str) {
    let sandboxed;
    let path = if !cfg.starts_with('/') {
        // Empty or relative: refused before any filesystem access.
        cfg
    } else if cfg.split('/').any(|c| c == "..") || cfg.contains('\0') {
        // Could climb out of the sandbox: not given to the real check.
        return;
    } else {
        sandboxed = format!("{}{cfg}", sandbox().display());
        &sandboxed
    };
    let first = FileConfig::check(path);
    match &first {
        Ok(c) => {
            assert!(
                c.path.is_absolute(),
                "{path:?}: relative path {:?} accepted",
                c.path
            );
            assert_eq!(c.path, Path::new(path), "{path:?}: path changed");
        }
        Err(e) => check_message("FileConfig::check", path, &e.to_string()),
    }
    if !cfg.starts_with('/') {
        assert!(first.is_err(), "{cfg:?}: a relative path was accepted");
    }
    let again = FileConfig::check(path);
    assert_eq!(
        again.as_ref().map_err(ToString::to_string),
        first.as_ref().map_err(ToString::to_string),
        "{path:?}: differs the second time"
    );
    let factory = FileFactory.check_config(path);
    assert_eq!(
        factory.is_ok(),
        first.is_ok(),
        "{path:?}: factory and check disagree"
    );
    if let Err(e) = factory {
        check_message("FileFactory::check_config", path, &Report(&e).to_string());
    }
}

/// What D-Bus `CheckConfig` answers. The `file` subtype is left to
/// [`check_file`] unless its path is relative (no filesystem access).
fn check_registry(s: &str) {
    let file_path = split_dev_config(s)
        .ok()
        .filter(|(subtype, _)| *subtype == "file")
        .map(|(_, cfg)| cfg);
    if file_path.is_some_and(|p| p.contains('/')) {
        return;
    }
    match registry().check_dev_config(s) {
        Ok(()) => {
            let (subtype, cfg) = split_dev_config(s).expect("accepted without a subtype");
            assert!(
                registry().get(subtype).is_some(),
                "{s:?}: unknown subtype accepted"
            );
            let (rest, _) = take_runner_options(cfg).expect("accepted with a bad option");
            assert_eq!(
                registry().get(subtype).map(|f| f.check_config(&rest).is_ok()),
                Some(true),
                "{s:?}: accepted as a whole but not by its factory"
            );
        }
        Err(e) => check_message("check_dev_config", s, &Report(&e).to_string()),
    }
}
