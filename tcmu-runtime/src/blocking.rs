//! Running blocking backend work off the worker thread.
//!
//! Every device pinned to a worker shares that worker's thread: a handler
//! that calls a blocking library (synchronous file I/O, a client library
//! without an async API) inside a command stalls every other device there.
//! [`run`] moves such work to a thread of the worker's blocking pool (tokio's
//! `spawn_blocking`, threads started on demand and kept for a while) and
//! lets the worker go on until it is done.
//!
//! Buffers moved into the closure stay the command's while it runs: if the
//! command is aborted meanwhile (a TMR), the runtime keeps the buffers out of
//! the kernel's hands until the closure has dropped them, so late writes
//! never land in memory another command owns.
//!
//! The closure owns what it works on, buffers included, and can hand them
//! back with its result:
//!
//! ```no_run
//! # async fn demo(file: std::sync::Arc<std::fs::File>, bufs: Vec<tcmu_runtime::DataBuf>)
//! # -> Result<(), tcmu_runtime::BlockError> {
//! use tcmu_runtime::{blocking, tcmu_core};
//! let (read, mut bufs) = blocking::run(move || {
//!     let mut bufs = bufs;
//!     let fd = std::os::fd::AsFd::as_fd(&*file);
//!     (tcmu_core::buf::preadv(fd, 0, &mut bufs, false), bufs)
//! })
//! .await?;
//! let n = read?;
//! // Back on the worker: patch the buffers, e.g. from a cache.
//! tcmu_core::buf::copy_into(&mut bufs, 0, &[0xff][..n.min(1)]);
//! # Ok(()) }
//! ```

use tcmu_scsi::Sense;
use tracing::error;

use crate::error::BlockError;

/// Runs `work` on a blocking thread and returns its result; the calling
/// worker thread serves other devices meanwhile. Must be called on a worker
/// (inside the runtime). A panic in `work` becomes
/// [`BlockError::Sense`] with INTERNAL TARGET FAILURE, as a panic in a
/// handler's future does.
pub async fn run<T, F>(work: F) -> Result<T, BlockError>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    match tokio::task::spawn_blocking(work).await {
        Ok(v) => Ok(v),
        Err(e) => {
            if e.is_panic() {
                error!("blocking handler work panicked");
            } else {
                error!("blocking handler work was cancelled: {e}");
            }
            Err(BlockError::Sense(Sense::internal_target_failure()))
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn runs_off_the_calling_thread_and_reports_panics() {
        tokio_uring::start(async {
            let here = std::thread::current().id();
            let there = run(move || std::thread::current().id()).await.unwrap();
            assert_ne!(here, there);
            let r = run(|| -> u8 { panic!("boom") }).await;
            assert!(matches!(r, Err(BlockError::Sense(_))));
        });
    }
}
