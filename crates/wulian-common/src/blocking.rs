//! Running synchronous storage calls (SQLite, file I/O) from async code without stalling the
//! runtime's worker threads.

use std::sync::Arc;

/// Runs `f` on tokio's blocking pool with a shared handle to `resource`.
///
/// A panic inside `f` is a bug, not an input error: it is propagated (resumed) in the caller
/// rather than turned into a value that a handler might mistake for "not found".
pub async fn run_blocking<R, T, F>(resource: &Arc<R>, f: F) -> T
where
    R: Send + Sync + 'static + ?Sized,
    T: Send + 'static,
    F: FnOnce(&R) -> T + Send + 'static,
{
    let resource = Arc::clone(resource);
    match tokio::task::spawn_blocking(move || f(&resource)).await {
        Ok(value) => value,
        Err(error) => std::panic::resume_unwind(error.into_panic()),
    }
}
