//! Accept loop for plain TCP listeners.
//!
//! Owns the connection limit and graceful shutdown so that other transports (TLS, WebSocket)
//! only need to produce an `AsyncRead + AsyncWrite` stream and hand it to the same
//! connection task.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::Shared;
use crate::connection;
use crate::metrics::Metrics;

/// How long connections get to say goodbye after shutdown before they are aborted.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Pause after a failed accept (e.g. out of file descriptors) to avoid a hot loop.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

pub(crate) async fn serve(
    shared: Arc<Shared>,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let local = listener.local_addr()?;
    info!(%local, "mqtt listener started");
    let mut tasks: JoinSet<()> = JoinSet::new();
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            Some(done) = tasks.join_next(), if !tasks.is_empty() => log_join(done),
            accepted = listener.accept() => match accepted {
                Ok((stream, remote)) => {
                    let Ok(permit) = Arc::clone(&shared.connection_slots).try_acquire_owned() else {
                        Metrics::inc(&shared.metrics.connections_refused_total);
                        warn!(%remote, "connection limit reached, closing new connection");
                        drop(stream);
                        continue;
                    };
                    if let Err(e) = stream.set_nodelay(true) {
                        debug!(%remote, error = %e, "set_nodelay failed");
                    }
                    tasks.spawn(connection::run(
                        Arc::clone(&shared),
                        stream,
                        remote,
                        permit,
                        shutdown.clone(),
                    ));
                }
                Err(e) => {
                    warn!(%local, error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
        }
    }
    drop(listener);
    info!(%local, connections = tasks.len(), "mqtt listener stopping");
    let drain = async {
        while let Some(done) = tasks.join_next().await {
            log_join(done);
        }
    };
    if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
        warn!(%local, remaining = tasks.len(), "connections did not close in time, aborting them");
        tasks.shutdown().await;
    }
    info!(%local, "mqtt listener stopped");
    Ok(())
}

fn log_join(done: Result<(), tokio::task::JoinError>) {
    if let Err(e) = done
        && e.is_panic()
    {
        error!(error = %e, "connection task panicked");
    }
}
