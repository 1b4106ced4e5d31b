//! Accept loops for the MQTT listeners: plain TCP, TLS, WebSocket and WebSocket over TLS.
//!
//! Owns the connection limits (broker-wide and per listener), the per-listener connect rate,
//! the transport handshakes and graceful shutdown, so that every transport only has to
//! produce an `AsyncRead + AsyncWrite` stream for the same connection task.
//!
//! Handshakes (TLS, WebSocket upgrade) run in the connection's own task under the CONNECT
//! deadline, never in the accept loop, so a slow or hostile client cannot stall accepting.
//! What authentication needs to know about the transport ([`TransportInfo`]: the kind, the
//! listener's anonymous setting, the verified client certificate) travels to the connection
//! task with the stream, so the protocol code stays transport-agnostic.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};
use wulian_mqtt::ReasonCode;

use crate::Shared;
use crate::auth::{TransportInfo, TransportKind};
use crate::connection::{self, Accepted, Permits};
use crate::metrics::Metrics;
use crate::tls::TlsConfig;
use crate::ws;

/// How long connections get to say goodbye after shutdown before they are aborted.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Pause after a failed accept (e.g. out of file descriptors) to avoid a hot loop.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Room for WebSocket framing on top of the largest MQTT packet.
const WS_FRAME_SLACK: usize = 1024;
/// The default WebSocket path.
pub const DEFAULT_WS_PATH: &str = "/mqtt";

/// How clients reach a listener.
#[derive(Clone, Debug)]
pub enum Transport {
    Tcp,
    Tls(TlsConfig),
    /// WebSocket upgrade on `path` (e.g. `/mqtt`).
    Ws {
        path: String,
    },
    Wss {
        tls: TlsConfig,
        path: String,
    },
}

impl Transport {
    pub fn kind(&self) -> TransportKind {
        match self {
            Transport::Tcp => TransportKind::Tcp,
            Transport::Tls(_) => TransportKind::Tls,
            Transport::Ws { .. } => TransportKind::Ws,
            Transport::Wss { .. } => TransportKind::Wss,
        }
    }
}

/// One listener's transport and limits. The broker-wide `max_connections` applies as well.
#[derive(Clone, Debug)]
pub struct ListenerConfig {
    pub transport: Transport,
    /// Open connections through this listener; `None` = only the broker-wide limit.
    pub max_connections: Option<usize>,
    /// New connections per second (token bucket, bursts up to one second's worth); excess
    /// connections are closed at once. `None` = unlimited.
    pub connect_rate: Option<u32>,
    /// Admit clients without credentials (development only).
    pub allow_anonymous: bool,
    /// Serve every connection of this listener on the application lane from the start, TLS
    /// and WebSocket included (for a listener that applications use; see `lane.rs`).
    pub application_lane: bool,
}

impl ListenerConfig {
    /// A plain TCP listener with no limits of its own.
    pub fn tcp() -> ListenerConfig {
        ListenerConfig::new(Transport::Tcp)
    }

    pub fn new(transport: Transport) -> ListenerConfig {
        ListenerConfig {
            transport,
            max_connections: None,
            connect_rate: None,
            allow_anonymous: false,
            application_lane: false,
        }
    }
}

/// Token bucket for the connect rate.
struct RateLimit {
    per_sec: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimit {
    fn new(per_sec: u32) -> RateLimit {
        let per_sec = f64::from(per_sec.max(1));
        RateLimit {
            per_sec,
            tokens: per_sec,
            last: Instant::now(),
        }
    }

    fn allow(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.per_sec).min(self.per_sec);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

pub(crate) async fn serve(
    shared: Arc<Shared>,
    listener: TcpListener,
    config: ListenerConfig,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let local = listener.local_addr()?;
    let kind = config.transport.kind();
    info!(%local, transport = kind.as_str(), anonymous = config.allow_anonymous, "mqtt listener started");
    let listener_slots = config
        .max_connections
        .map(|n| Arc::new(Semaphore::new(n.min(Semaphore::MAX_PERMITS))));
    let mut rate = config.connect_rate.map(RateLimit::new);
    // Ids share the connections' counter: unique either way.
    let listener_id = shared.next_conn_id.fetch_add(1, Ordering::Relaxed);
    let config = Arc::new(config);
    // Tracked, not joined: a `JoinSet` keeps a handle and list entry per task (~64 bytes of
    // every idle connection); a tracker only counts them.
    let tasks = TaskTracker::new();
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, remote)) => {
                    if let Some(rate) = &mut rate
                        && !rate.allow(Instant::now())
                    {
                        Metrics::inc(&shared.metrics.connections_refused_total);
                        debug!(%remote, %local, "connect rate exceeded, closing new connection");
                        continue;
                    }
                    let listener_permit = match &listener_slots {
                        None => None,
                        Some(slots) => match Arc::clone(slots).try_acquire_owned() {
                            Ok(permit) => Some(permit),
                            Err(_) => {
                                Metrics::inc(&shared.metrics.connections_refused_total);
                                warn!(%remote, %local, "listener connection limit reached, closing new connection");
                                continue;
                            }
                        },
                    };
                    let Ok(permit) = Arc::clone(&shared.connection_slots).try_acquire_owned() else {
                        Metrics::inc(&shared.metrics.connections_refused_total);
                        warn!(%remote, "connection limit reached, closing new connection");
                        continue;
                    };
                    if let Err(e) = stream.set_nodelay(true) {
                        debug!(%remote, error = %e, "set_nodelay failed");
                    }
                    let permits = Permits { _broker: permit, _listener: listener_permit };
                    if config.application_lane && let Some(lane) = shared.lane() {
                        // The raw socket moves before any handshake, so TLS and WebSocket
                        // connections of this listener run on the lane too.
                        let socket = match stream.into_std() {
                            Ok(socket) => socket,
                            Err(e) => {
                                debug!(%remote, error = %e, "could not move the connection to the application lane");
                                continue;
                            }
                        };
                        Metrics::inc(&shared.metrics.application_lane_connections_total);
                        let (shared, config, shutdown) =
                            (Arc::clone(&shared), Arc::clone(&config), shutdown.clone());
                        let on_lane = lane.adopt(socket, move |stream| {
                            open(shared, config, listener_id, stream, remote, permits, shutdown)
                        });
                        // Tracked here, so shutdown still waits for it.
                        tasks.spawn(async move { on_lane.await.ok(); });
                    } else if let Transport::Tcp = config.transport {
                        // Spawned as it is: this future is what an idle client costs for as
                        // long as it stays connected, so no wrapper around it.
                        let transport = transport_info(&config, None);
                        let accepted =
                            Accepted::new(&shared, listener_id, stream, remote, transport, permits);
                        tasks.spawn(connection::run(accepted, shutdown.clone()));
                    } else {
                        tasks.spawn(open(
                            Arc::clone(&shared),
                            Arc::clone(&config),
                            listener_id,
                            stream,
                            remote,
                            permits,
                            shutdown.clone(),
                        ));
                    }
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
    // Connections past CONNACK wait for close requests, not for the token.
    shared
        .sessions
        .kick_listener(listener_id, ReasonCode::ServerShuttingDown);
    tasks.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, tasks.wait())
        .await
        .is_err()
    {
        // They end with the runtime; a connection before CONNECT also at its deadline.
        warn!(%local, remaining = tasks.len(), "connections did not close in time");
    }
    info!(%local, "mqtt listener stopped");
    Ok(())
}

/// What authentication learns about a connection of this listener.
fn transport_info(
    config: &ListenerConfig,
    peer_certificates: Option<Vec<Vec<u8>>>,
) -> TransportInfo {
    TransportInfo {
        kind: config.transport.kind(),
        allow_anonymous: config.allow_anonymous,
        peer_certificates,
    }
}

/// Runs the transport handshakes of a TLS or WebSocket connection (bounded by the CONNECT
/// deadline), then the connection. Plain TCP connections skip this.
async fn open(
    shared: Arc<Shared>,
    config: Arc<ListenerConfig>,
    listener: u64,
    stream: TcpStream,
    remote: SocketAddr,
    permits: Permits,
    shutdown: CancellationToken,
) {
    let kind = config.transport.kind();
    let deadline = shared.config.connect_timeout;
    let max_frame = shared.config.max_packet_size.saturating_add(WS_FRAME_SLACK);
    // Each handshake is bounded by the CONNECT deadline; the connection applies its own
    // afterwards.
    let step = |what: &'static str| Step {
        what,
        kind,
        remote,
        deadline,
        shutdown: &shutdown,
    };
    let (shared, config, shutdown) = (&shared, &*config, &shutdown);
    let run = Run {
        shared,
        config,
        listener,
        remote,
        permits,
        shutdown,
    };
    // Handshakes are boxed, so they are freed when done: a task's future is as large as its
    // largest state for the connection's whole life, and a WebSocket upgrade is ~20 KB.
    // The match ends before the connection is awaited, and with it the transport values.
    let connection = match &config.transport {
        Transport::Tcp => run.start(stream, None),
        Transport::Tls(tls) => {
            let Some(stream) = Box::pin(step("TLS").bound(tls_accept(tls, stream))).await else {
                return;
            };
            let peer = peer_certificates(&stream);
            run.start(stream, peer)
        }
        Transport::Ws { path } => {
            let upgrade = Box::pin(step("WebSocket").bound(ws::accept(stream, path, max_frame)));
            let Some(stream) = upgrade.await else {
                return;
            };
            run.start(stream, None)
        }
        Transport::Wss { tls, path } => {
            let (upgrade, peer) = {
                let Some(stream) = Box::pin(step("TLS").bound(tls_accept(tls, stream))).await
                else {
                    return;
                };
                let peer = peer_certificates(&stream);
                let upgrade = step("WebSocket").bound(ws::accept(stream, path, max_frame));
                (Box::pin(upgrade), peer)
            };
            let Some(stream) = upgrade.await else {
                return;
            };
            run.start(stream, peer)
        }
    };
    connection.await;
}

/// A connection of any transport, boxed.
type Connection = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The connection of [`open`], once its transport is ready.
struct Run<'a> {
    shared: &'a Arc<Shared>,
    config: &'a ListenerConfig,
    listener: u64,
    remote: SocketAddr,
    permits: Permits,
    shutdown: &'a CancellationToken,
}

impl Run<'_> {
    /// The connection, boxed: this task keeps only a pointer to it, not the transport value
    /// it was handed (a TLS stream is ~1 KB) next to it.
    fn start<S>(self, stream: S, peer_certificates: Option<Vec<Vec<u8>>>) -> Connection
    where
        S: AsyncRead + AsyncWrite + crate::lane::Detach + Unpin + Send + Sync + 'static,
    {
        let transport = transport_info(self.config, peer_certificates);
        let accepted = Accepted::new(
            self.shared,
            self.listener,
            stream,
            self.remote,
            transport,
            self.permits,
        );
        Box::pin(connection::run(accepted, self.shutdown.clone()))
    }
}

/// One transport handshake of a connection, for [`Step::bound`].
struct Step<'a> {
    what: &'static str,
    kind: TransportKind,
    remote: SocketAddr,
    deadline: Duration,
    shutdown: &'a CancellationToken,
}

impl Step<'_> {
    /// Runs `handshake` until it finishes, the deadline passes or the server shuts down;
    /// failures are logged at debug level (scanners and broken clients are common).
    async fn bound<T, E: std::fmt::Display>(
        self,
        handshake: impl Future<Output = Result<T, E>>,
    ) -> Option<T> {
        let (what, remote, transport) = (self.what, self.remote, self.kind.as_str());
        tokio::select! {
            _ = self.shutdown.cancelled() => None,
            result = tokio::time::timeout(self.deadline, handshake) => match result {
                Ok(Ok(stream)) => Some(stream),
                Ok(Err(error)) => {
                    debug!(%remote, transport, %error, "{what} handshake failed");
                    None
                }
                Err(_) => {
                    debug!(%remote, transport, "{what} handshake timed out");
                    None
                }
            },
        }
    }
}

async fn tls_accept(
    tls: &TlsConfig,
    stream: TcpStream,
) -> std::io::Result<tokio_rustls::server::TlsStream<TcpStream>> {
    tokio_rustls::TlsAcceptor::from(Arc::clone(&tls.server))
        .accept(stream)
        .await
}

fn peer_certificates<S>(stream: &tokio_rustls::server::TlsStream<S>) -> Option<Vec<Vec<u8>>> {
    let (_, session) = stream.get_ref();
    session
        .peer_certificates()
        .map(|chain| chain.iter().map(|c| c.as_ref().to_vec()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A TLS or WebSocket connection's task keeps its future for the connection's whole
    /// life; the handshakes (a WebSocket upgrade is ~20 KB) must not be part of it.
    #[tokio::test]
    async fn handshakes_are_not_kept_in_the_task() {
        struct Refuse;
        #[async_trait::async_trait]
        impl crate::auth::Authenticator for Refuse {
            async fn authenticate(
                &self,
                _req: &crate::auth::ConnectRequest,
            ) -> Result<crate::auth::Identity, ReasonCode> {
                Err(ReasonCode::NotAuthorized)
            }
        }
        #[async_trait::async_trait]
        impl crate::auth::MessageSink for Refuse {
            async fn on_publish(
                &self,
                _i: &crate::auth::Identity,
                _m: &crate::auth::InboundMessage,
            ) -> Result<(), crate::auth::SinkError> {
                Ok(())
            }
        }
        let broker = crate::Broker::new(
            crate::BrokerConfig::default(),
            Arc::new(Refuse),
            Arc::new(Refuse),
        );
        let shared = broker.shared_for_tests();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stream = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let remote = stream.local_addr().unwrap();
        let permits = Permits {
            _broker: Arc::clone(&shared.connection_slots)
                .try_acquire_owned()
                .unwrap(),
            _listener: None,
        };
        let config = Arc::new(ListenerConfig::new(Transport::Ws {
            path: DEFAULT_WS_PATH.to_owned(),
        }));
        let task = open(
            shared,
            config,
            1,
            stream,
            remote,
            permits,
            CancellationToken::new(),
        );
        let size = std::mem::size_of_val(&task);
        assert!(size <= 512, "the handshake task's future is {size} bytes");
    }

    #[test]
    fn rate_limit_refills() {
        let start = Instant::now();
        let mut rate = RateLimit::new(2);
        rate.last = start;
        assert!(rate.allow(start));
        assert!(rate.allow(start));
        assert!(!rate.allow(start));
        assert!(rate.allow(start + Duration::from_millis(600)));
        assert!(!rate.allow(start + Duration::from_millis(600)));
    }
}
