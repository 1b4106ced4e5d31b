//! The application lane: a thread and runtime of their own for application connections.
//!
//! Applications (API-key clients: dashboards, rule engines, integrations) are few, and one of
//! them often subscribes to a whole fleet (`devices/+/telemetry`). On the shared workers its
//! connection task waits its turn behind every device task that has a packet to handle; with
//! a thousand publishing devices that turn comes late, its acknowledgements are read late, its
//! in-flight window stays closed and its queue overflows. On a thread of its own the kernel
//! schedules it as soon as its socket has data, whatever the devices are doing.
//!
//! When it may (root, or `CAP_SYS_NICE`), the lane's thread also raises its scheduling priority
//! ([`LANE_NICE`]): on a machine the devices keep busy, a thread of normal priority still waits
//! for the cores in turn with the device workers, and its queue overflows while it waits.
//!
//! Only a plain TCP socket can move from one runtime's reactor to another's. A TLS or
//! WebSocket stream keeps state that its crate cannot rebuild around a moved socket, so an
//! application connection of that kind moves only when its listener is marked for the lane
//! (`ListenerConfig::application_lane`): then the raw socket moves as it is accepted, before
//! any handshake, and the whole connection runs here.

use std::io;

use tokio::net::TcpStream;
use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The lane thread's nice value when the process may lower it (0 is normal, -20 the highest).
pub(crate) const LANE_NICE: i32 = -5;

thread_local! {
    /// Set on lane threads: a connection already there does not move again.
    static ON_LANE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether the caller runs on an application lane's thread (a broker's connections only ever
/// run on that broker's lane).
pub(crate) fn on_lane() -> bool {
    ON_LANE.with(std::cell::Cell::get)
}

/// The lane's runtime. Dropping it stops the thread; connections still on it end.
pub(crate) struct Lane {
    handle: Handle,
    _stop: oneshot::Sender<()>,
}

impl Lane {
    /// Starts the lane's thread with a single-threaded runtime.
    pub(crate) fn start() -> io::Result<Lane> {
        let (handle_tx, handle_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("mqtt-app-lane".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        handle_tx.send(Err(e)).ok();
                        return;
                    }
                };
                raise_priority();
                ON_LANE.with(|on| on.set(true));
                handle_tx.send(Ok(runtime.handle().clone())).ok();
                // Runs the lane's tasks until the lane is dropped (the sender goes away).
                runtime.block_on(async {
                    stop_rx.await.ok();
                });
            })?;
        // Blocks the caller (a runtime worker, once per broker) while the thread builds its
        // runtime: well under a millisecond.
        let handle = handle_rx
            .recv()
            .map_err(|_| io::Error::other("the application lane's thread ended at start"))??;
        Ok(Lane {
            handle,
            _stop: stop_tx,
        })
    }

    #[cfg(test)]
    pub(crate) fn spawn<F>(&self, future: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handle.spawn(future)
    }

    /// Runs `serve` on the lane with `socket` (detached from the runtime that accepted it)
    /// registered with the lane's reactor, which only the lane's own context can do.
    pub(crate) fn adopt<F, Fut>(&self, socket: std::net::TcpStream, serve: F) -> JoinHandle<()>
    where
        F: FnOnce(TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.handle.spawn(async move {
            match TcpStream::from_std(socket) {
                Ok(stream) => serve(stream).await,
                Err(e) => tracing::debug!(error = %e, "could not register the connection with the application lane"),
            }
        })
    }
}

/// Gives the calling thread [`LANE_NICE`], if the process is allowed to.
fn raise_priority() {
    let thread = rustix::thread::gettid();
    match rustix::process::setpriority_process(Some(thread), LANE_NICE) {
        Ok(()) => tracing::debug!(nice = LANE_NICE, "application lane priority raised"),
        // Unprivileged: the lane still has its own thread, at normal priority.
        Err(e) => tracing::debug!(error = %e, "application lane keeps normal priority"),
    }
}

/// A connection's stream that may move to the application lane.
pub(crate) trait Detach: Sized {
    /// The plain TCP socket, detached from the current runtime's reactor (the inner result
    /// fails if the reactor refuses to let it go: the socket is then closed), or the stream
    /// itself when it cannot move.
    fn detach(self) -> Result<io::Result<std::net::TcpStream>, Self> {
        Err(self)
    }
}

impl Detach for TcpStream {
    fn detach(self) -> Result<io::Result<std::net::TcpStream>, Self> {
        Ok(self.into_std())
    }
}

impl<S> Detach for tokio_rustls::server::TlsStream<S> {}

impl<S> Detach for crate::ws::WsIo<S> {}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_tasks_on_its_own_thread_and_ends_them_when_dropped() {
        let lane = Lane::start().unwrap();
        let name = lane
            .spawn(async { std::thread::current().name().map(str::to_owned) })
            .await
            .unwrap();
        assert_eq!(name.as_deref(), Some("mqtt-app-lane"));
        let forever = lane.spawn(std::future::pending::<()>());
        drop(lane);
        let ended = tokio::time::timeout(std::time::Duration::from_secs(5), forever)
            .await
            .expect("the lane's tasks end with it");
        assert!(ended.unwrap_err().is_cancelled());
    }
}
