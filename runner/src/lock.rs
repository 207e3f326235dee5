//! One daemon at a time: an exclusive `flock` on a lock file under `/run`.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;

use rustix::fs::{flock, FlockOperation};

/// Holds the lock until dropped.
#[derive(Debug)]
pub struct InstanceLock {
    _file: File,
}

/// Takes the lock at `path`, or explains who holds it.
pub fn acquire(path: &Path) -> anyhow::Result<InstanceLock> {
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| anyhow::anyhow!("cannot open lock file {}: {e}", path.display()))?;
    if flock(&file, FlockOperation::NonBlockingLockExclusive).is_err() {
        let owner = std::fs::read_to_string(path).unwrap_or_default();
        anyhow::bail!(
            "another tcmu-runner is running (lock {} held by pid {})",
            path.display(),
            owner.trim()
        );
    }
    file.set_len(0)?;
    writeln!(file, "{}", std::process::id())?;
    Ok(InstanceLock { _file: file })
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
        drop(first);
        assert!(acquire(&path).is_ok());
        let _ = std::fs::remove_file(&path);
    }
}
