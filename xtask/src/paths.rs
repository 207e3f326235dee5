//! Where things live: the workspace, the VM cache under `target/vm/`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// Paths used by every command.
pub struct Paths {
    /// Workspace root (the folder holding the top `Cargo.toml`).
    pub root: PathBuf,
    /// `tests/vm/`: the guest-side scripts.
    pub tests_vm: PathBuf,
    /// `target/vm/`: everything the VM needs, cached between runs.
    pub vm: PathBuf,
}

impl Paths {
    /// Finds the workspace from this crate's manifest directory.
    ///
    /// The guest sees the host's root filesystem at the same paths, and the
    /// kernel command line cannot carry spaces, so paths with whitespace are
    /// refused here with a clear message.
    pub fn discover() -> Result<Self> {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
        let root = manifest
            .parent()
            .context("xtask's manifest directory has no parent")?
            .canonicalize()
            .context("cannot resolve the workspace root")?;
        let root_str = root.to_str().context("workspace path is not UTF-8")?;
        if root_str.chars().any(char::is_whitespace) {
            bail!("the workspace path {root_str:?} contains whitespace; the VM tests need a path without spaces");
        }
        Ok(Paths {
            tests_vm: root.join("tests/vm"),
            vm: root.join("target/vm"),
            root,
        })
    }

    /// The release build of the daemon, `target/release/tcmu-runner`.
    pub fn release_runner(&self) -> PathBuf {
        self.root.join("target/release/tcmu-runner")
    }
}
