//! One daemon at a time: an exclusive `flock` on a lock file under `/run`,
//! holding the owner's pid (a successor started with `--takeover` reads it
//! to ask the owner to hand over, then waits for the lock).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;

use rustix::fs::{flock, FlockOperation};

/// Holds the lock until dropped.
#[derive(Debug)]
pub struct InstanceLock {
    _file: File,
}

fn open(path: &Path) -> anyhow::Result<File> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| anyhow::anyhow!("cannot open lock file {}: {e}", path.display()))
}

/// Tries the lock once: `Ok(None)` when another process holds it.
fn try_lock(path: &Path) -> anyhow::Result<Option<InstanceLock>> {
    let mut file = open(path)?;
    if flock(&file, FlockOperation::NonBlockingLockExclusive).is_err() {
        return Ok(None);
    }
    file.set_len(0)?;
    writeln!(file, "{}", std::process::id())?;
    Ok(Some(InstanceLock { _file: file }))
}

/// The pid written in the lock file at `path` by its holder, if it reads
/// as one.
pub fn holder_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Takes the lock at `path`, or explains who holds it.
pub fn acquire(path: &Path) -> anyhow::Result<InstanceLock> {
    match try_lock(path)? {
        Some(lock) => Ok(lock),
        None => {
            let owner = std::fs::read_to_string(path).unwrap_or_default();
            anyhow::bail!(
                "another tcmu-runner is running (lock {} held by pid {})",
                path.display(),
                owner.trim()
            )
        }
    }
}

/// What [`acquire_or_else`] found.
pub enum Attempt {
    /// The lock is ours.
    Taken(InstanceLock),
    /// Another process holds it.
    Held,
}

/// Takes the lock at `path` if it is free, without waiting.
pub fn acquire_or_else(path: &Path) -> anyhow::Result<Attempt> {
    Ok(match try_lock(path)? {
        Some(lock) => Attempt::Taken(lock),
        None => Attempt::Held,
    })
}

/// Takes the lock at `path`, polling every few milliseconds until its
/// holder lets go; fails once `limit` has passed.
pub fn acquire_within(path: &Path, limit: std::time::Duration) -> anyhow::Result<InstanceLock> {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(lock) = try_lock(path)? {
            return Ok(lock);
        }
        if std::time::Instant::now() >= deadline {
            anyhow::bail!(
                "the running tcmu-runner (pid {}) did not release {} within {} s",
                holder_pid(path).map_or_else(|| "unknown".to_owned(), |p| p.to_string()),
                path.display(),
                limit.as_secs()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_instance_is_refused() {
        let path = std::env::temp_dir().join(format!("tcmu-lock-test-{}", std::process::id()));
        let first = acquire(&path).unwrap();
        let err = acquire(&path).unwrap_err().to_string();
        assert!(err.contains("another tcmu-runner"), "{err}");
        assert_eq!(holder_pid(&path), Some(std::process::id() as i32));
        assert!(matches!(acquire_or_else(&path).unwrap(), Attempt::Held));
        drop(first);
        assert!(acquire(&path).is_ok());
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn waiting_for_the_lock_ends_when_it_is_released_or_times_out() {
        let path = std::env::temp_dir().join(format!("tcmu-lock-wait-{}", std::process::id()));
        let first = acquire(&path).unwrap();
        let err = acquire_within(&path, std::time::Duration::from_millis(50))
            .unwrap_err()
            .to_string();
        assert!(err.contains("did not release"), "{err}");
        let releaser = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(50));
            drop(first);
        });
        assert!(acquire_within(&path, std::time::Duration::from_secs(10)).is_ok());
        releaser.join().unwrap();
        let _ = std::fs::remove_file(&path);
    }
}
