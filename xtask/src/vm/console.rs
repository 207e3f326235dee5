//! Streaming the guest console to the terminal and `console.log`, and
//! spotting the markers the guest prints.

use std::fs::File;
use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Marker `init.sh` prints once the guest's init runs.
const UP_MARKER: &str = "XTASK-GUEST-UP";

/// What the guest kernel prints when it panics.
const PANIC_MARKER: &str = "Kernel panic - not syncing";

/// What the console readers learnt, shared with the supervising thread.
#[derive(Clone)]
pub struct State(Arc<Mutex<Inner>>);

/// The fields behind [`State`].
struct Inner {
    /// When QEMU was started.
    start: Instant,
    /// Time from start to [`UP_MARKER`].
    boot: Option<Duration>,
    /// Last `N passed, N failed` line seen.
    summary: Option<String>,
    /// The kernel's panic line, once seen.
    panic: Option<String>,
}

impl State {
    /// Fresh state for a VM started at `start`.
    pub fn new(start: Instant) -> Self {
        State(Arc::new(Mutex::new(Inner {
            start,
            boot: None,
            summary: None,
            panic: None,
        })))
    }

    /// Runs `f` on the locked state (a poisoned lock is still usable).
    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        let mut guard = self.0.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut guard)
    }

    /// Time the guest took to reach init, once seen.
    pub fn boot_time(&self) -> Option<Duration> {
        self.with(|i| i.boot)
    }

    /// The guest kernel's panic line, once seen (a VM that may reboot
    /// would otherwise boot again after it).
    pub fn panic(&self) -> Option<String> {
        self.with(|i| i.panic.clone())
    }

    /// The last summary line printed on the console.
    pub fn summary(&self) -> Option<String> {
        self.with(|i| i.summary.clone())
    }

    /// Looks at one complete console line.
    fn line(&self, line: &str) {
        self.with(|i| {
            if i.boot.is_none() && line.contains(UP_MARKER) {
                i.boot = Some(i.start.elapsed());
            }
            if i.panic.is_none() && line.contains(PANIC_MARKER) {
                i.panic = Some(line.trim().to_owned());
            }
            if is_summary(line) {
                i.summary = Some(line.trim().to_owned());
            }
        });
    }
}

/// True for a line of the form `N passed, N failed`.
pub fn is_summary(line: &str) -> bool {
    let words: Vec<&str> = line.split_whitespace().collect();
    matches!(words.as_slice(),
        [p, "passed,", f, "failed"]
            if p.parse::<u32>().is_ok() && f.parse::<u32>().is_ok())
}

/// Copies `src` to the terminal (stdout, or stderr when `to_stderr`) as it
/// arrives and to `log` without carriage returns, feeding complete lines
/// to `state`.
pub fn tee(
    mut src: impl Read + Send + 'static,
    log: Arc<Mutex<File>>,
    state: State,
    to_stderr: bool,
) -> JoinHandle<()> {
    thread::spawn(move || {
        let mut buf = [0u8; 8192];
        let mut pending: Vec<u8> = Vec::new();
        loop {
            let n = match src.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let chunk = &buf[..n];
            // Terminal errors (a closed pipe) must not stop the log.
            if to_stderr {
                let mut e = std::io::stderr();
                e.write_all(chunk).ok();
                e.flush().ok();
            } else {
                let mut o = std::io::stdout();
                o.write_all(chunk).ok();
                o.flush().ok();
            }
            let clean: Vec<u8> = chunk.iter().copied().filter(|&b| b != b'\r').collect();
            if let Ok(mut f) = log.lock() {
                f.write_all(&clean).ok();
            }
            pending.extend_from_slice(&clean);
            while let Some(pos) = pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = pending.drain(..=pos).collect();
                state.line(&String::from_utf8_lossy(&line));
            }
        }
        if !pending.is_empty() {
            state.line(&String::from_utf8_lossy(&pending));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::{is_summary, State};

    #[test]
    fn a_panic_is_noticed() {
        let state = State::new(std::time::Instant::now());
        state.line("[   12.3] sd 2:0:1:0: [sdb] Attached SCSI disk");
        assert_eq!(state.panic(), None);
        state.line("[   45.6] Kernel panic - not syncing: Attempted to kill init! \r");
        assert_eq!(
            state.panic().as_deref(),
            Some("[   45.6] Kernel panic - not syncing: Attempted to kill init!")
        );
    }

    #[test]
    fn summary_lines() {
        assert!(is_summary("6 passed, 0 failed"));
        assert!(is_summary("  0 passed, 2 failed\n"));
        assert!(!is_summary("PASS t-10-fs"));
        assert!(!is_summary("x passed, 0 failed"));
    }
}
