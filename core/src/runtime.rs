//! Where CPU work runs. Decode, compression and encoding go to rayon through
//! [`spawn_cpu`], never onto the async reactor; the caller's tracing span is kept.
//!
//! [`Control`] is how a long operation (gc's apply, say) reports progress and learns
//! that whoever started it wants it to stop. Stopping is cooperative: the operation
//! checks between its steps and returns what it finished, so it never stops halfway
//! through one write.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::error::{Error, Result};

/// Progress (`done` of `total` steps) and a cancel flag, shared between a long
/// operation and its watcher. `total` is 0 while the operation does not know it yet.
#[derive(Debug, Default)]
pub struct Control {
    cancelled: AtomicBool,
    done: AtomicU64,
    total: AtomicU64,
}

impl Control {
    /// Asks the operation to stop at its next check.
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst)
    }

    /// Starts a stage of `total` steps, none done yet.
    pub fn start_stage(&self, total: u64) {
        self.done.store(0, Ordering::SeqCst);
        self.total.store(total, Ordering::SeqCst);
    }

    /// Counts `n` more steps as done.
    pub fn advance(&self, n: u64) {
        self.done.fetch_add(n, Ordering::SeqCst);
    }

    /// `(done, total)` of the current stage.
    pub fn progress(&self) -> (u64, u64) {
        (
            self.done.load(Ordering::SeqCst),
            self.total.load(Ordering::SeqCst),
        )
    }
}

/// Runs `f` on the rayon pool and awaits its result without blocking the reactor.
pub async fn spawn_cpu<F, T>(f: F) -> Result<T>
where
    F: FnOnce() -> Result<T> + Send + 'static,
    T: Send + 'static,
{
    let span = tracing::Span::current();
    let (tx, rx) = tokio::sync::oneshot::channel();
    rayon::spawn(move || {
        let _enter = span.enter();
        let _ = tx.send(f());
    });
    rx.await
        .map_err(|_| Error::internal("a CPU task was dropped before it finished"))?
}
