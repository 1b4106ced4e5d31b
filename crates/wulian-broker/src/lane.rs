//! The application lanes: threads and runtimes of their own for application connections.
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
//!
//! There are a few lanes ([`Lanes`]), one per core by default: a thousand application
//! subscribers of one topic (a fan-out) are then served on every core, not one. A new
//! connection goes to the lane with the fewest; lanes start as they are first needed.

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

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

/// The application lanes of a broker, each started on first use.
pub(crate) struct Lanes {
    slots: Box<[OnceLock<Option<Lane>>]>,
}

impl Lanes {
    /// Room for `threads` lanes (0: one per core, at most four); none is started yet.
    pub(crate) fn new(threads: usize) -> Lanes {
        // Applications are few, but a fan-out's deliveries are many: one lane per core.
        let threads = match threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get().min(4)),
            n => n,
        };
        Lanes {
            slots: (0..threads).map(|_| OnceLock::new()).collect(),
        }
    }

    /// The lane for a new connection: an idle lane if one is started, else a lane not yet
    /// started (started now), else the started lane with the fewest connections. `None` when
    /// no lane could start (connections then stay where they are).
    pub(crate) fn pick(&self) -> Option<&Lane> {
        let mut best: Option<&Lane> = None;
        for (index, slot) in self.slots.iter().enumerate() {
            let lane = match slot.get() {
                Some(started) => started.as_ref(),
                None if best.is_some_and(|b| b.connections() == 0) => break,
                None => slot
                    .get_or_init(|| match Lane::start(index) {
                        Ok(lane) => Some(lane),
                        Err(e) => {
                            tracing::warn!(error = %e, lane = index, "could not start an application lane");
                            None
                        }
                    })
                    .as_ref(),
            };
            if let Some(lane) = lane
                && best.is_none_or(|b| lane.connections() < b.connections())
            {
                best = Some(lane);
            }
        }
        best
    }
}

/// One lane's runtime. Dropping it stops the thread; connections still on it end.
pub(crate) struct Lane {
    handle: Handle,
    /// Connections running here now.
    connections: Arc<AtomicUsize>,
    _stop: oneshot::Sender<()>,
}

/// Decrements a lane's connection count when its connection's task ends.
struct Counted(Arc<AtomicUsize>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Lane {
    /// Starts lane number `index`: its thread with a single-threaded runtime.
    fn start(index: usize) -> io::Result<Lane> {
        let (handle_tx, handle_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name(format!("mqtt-app-lane-{index}"))
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
            connections: Arc::new(AtomicUsize::new(0)),
            _stop: stop_tx,
        })
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
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
        self.connections.fetch_add(1, Ordering::Relaxed);
        let counted = Counted(Arc::clone(&self.connections));
        self.handle.spawn(async move {
            let _counted = counted;
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
        let lane = Lane::start(3).unwrap();
        let name = lane
            .spawn(async { std::thread::current().name().map(str::to_owned) })
            .await
            .unwrap();
        assert_eq!(name.as_deref(), Some("mqtt-app-lane-3"));
        let forever = lane.spawn(std::future::pending::<()>());
        drop(lane);
        let ended = tokio::time::timeout(std::time::Duration::from_secs(5), forever)
            .await
            .expect("the lane's tasks end with it");
        assert!(ended.unwrap_err().is_cancelled());
    }

    /// A connected pair: the server side as a std socket, ready to be adopted.
    async fn socket_pair() -> (std::net::TcpStream, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (server.into_std().unwrap(), client)
    }

    #[tokio::test]
    async fn connections_spread_over_the_lanes_and_free_their_place_when_they_end() {
        let lanes = Lanes::new(2);
        let lane_name = || async { std::thread::current().name().map(str::to_owned) };
        let mut clients = Vec::new();
        let mut names = Vec::new();
        let mut ends = Vec::new();
        for _ in 0..4 {
            let (socket, client) = socket_pair().await;
            let (end_tx, end_rx) = oneshot::channel::<()>();
            let (name_tx, name_rx) = oneshot::channel();
            let lane = lanes.pick().unwrap();
            lane.adopt(socket, move |_stream| async move {
                name_tx.send(lane_name().await).ok();
                end_rx.await.ok();
            });
            names.push(name_rx.await.unwrap().unwrap());
            clients.push(client);
            ends.push(end_tx);
        }
        assert_eq!(
            names,
            [
                "mqtt-app-lane-0",
                "mqtt-app-lane-1",
                "mqtt-app-lane-0",
                "mqtt-app-lane-1"
            ]
        );
        // Both connections of lane 0 end: the next one goes there.
        drop(ends.remove(2));
        drop(ends.remove(0));
        let lane0 = &lanes.slots[0].get().unwrap().as_ref().unwrap();
        for _ in 0..100 {
            if lane0.connections() == 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let (socket, _client) = socket_pair().await;
        let (name_tx, name_rx) = oneshot::channel();
        lanes
            .pick()
            .unwrap()
            .adopt(socket, move |_stream| async move {
                name_tx.send(lane_name().await).ok();
            });
        assert_eq!(name_rx.await.unwrap().as_deref(), Some("mqtt-app-lane-0"));
    }
}
