//! Where CPU work runs. Decode, compression and encoding go to rayon through
//! [`spawn_cpu`], never onto the async reactor; the caller's tracing span is kept.

use crate::error::{Error, Result};

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
