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
//! task in a task-local, so the protocol code stays transport-agnostic.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::Shared;
use crate::auth::{TransportInfo, TransportKind};
use crate::connection;
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

tokio::task_local! {
    static TRANSPORT: TransportInfo;
}

/// The transport of the connection whose task is running (plain TCP outside a listener).
pub(crate) fn current_transport() -> TransportInfo {
    TRANSPORT.try_with(Clone::clone).unwrap_or_default()
}

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

/// Permits held for the lifetime of a connection.
struct Permits {
    broker: OwnedSemaphorePermit,
    _listener: Option<OwnedSemaphorePermit>,
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
    let config = Arc::new(config);
    let mut tasks: JoinSet<()> = JoinSet::new();
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            Some(done) = tasks.join_next(), if !tasks.is_empty() => log_join(done),
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
                    let permits = Permits { broker: permit, _listener: listener_permit };
                    tasks.spawn(open(
                        Arc::clone(&shared),
                        Arc::clone(&config),
                        stream,
                        remote,
                        permits,
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

/// Runs the transport handshakes (bounded by the CONNECT deadline), then the connection.
async fn open(
    shared: Arc<Shared>,
    config: Arc<ListenerConfig>,
    stream: TcpStream,
    remote: SocketAddr,
    permits: Permits,
    shutdown: CancellationToken,
) {
    let Permits {
        broker: permit,
        _listener: _listener_permit,
    } = permits;
    let kind = config.transport.kind();
    let info = |peer_certificates| TransportInfo {
        kind,
        allow_anonymous: config.allow_anonymous,
        peer_certificates,
    };
    let deadline = shared.config.connect_timeout;
    let max_frame = shared.config.max_packet_size.saturating_add(WS_FRAME_SLACK);
    // Each handshake is bounded by the CONNECT deadline; `run` applies its own afterwards.
    let step = |what: &'static str| Step {
        what,
        kind,
        remote,
        deadline,
        shutdown: &shutdown,
    };
    match &config.transport {
        Transport::Tcp => run(&shared, info(None), stream, remote, permit, &shutdown).await,
        Transport::Tls(tls) => {
            // Boxed, like the other non-TCP arms: this task's future would otherwise be as
            // large as a TLS or WebSocket handshake for every plain TCP client too.
            Box::pin(async {
                let Some(stream) = step("TLS").bound(tls_accept(tls, stream)).await else {
                    return;
                };
                let peer = peer_certificates(&stream);
                run(&shared, info(peer), stream, remote, permit, &shutdown).await;
            })
            .await;
        }
        Transport::Ws { path } => {
            Box::pin(async {
                let upgrade = ws::accept(stream, path, max_frame);
                let Some(stream) = step("WebSocket").bound(upgrade).await else {
                    return;
                };
                run(&shared, info(None), stream, remote, permit, &shutdown).await;
            })
            .await;
        }
        Transport::Wss { tls, path } => {
            Box::pin(async {
                let Some(stream) = step("TLS").bound(tls_accept(tls, stream)).await else {
                    return;
                };
                let peer = peer_certificates(&stream);
                let upgrade = ws::accept(stream, path, max_frame);
                let Some(stream) = step("WebSocket").bound(upgrade).await else {
                    return;
                };
                run(&shared, info(peer), stream, remote, permit, &shutdown).await;
            })
            .await;
        }
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

async fn run<S>(
    shared: &Arc<Shared>,
    info: TransportInfo,
    stream: S,
    remote: SocketAddr,
    permit: OwnedSemaphorePermit,
    shutdown: &CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // Boxed: the accept task's future is as large as its largest state, and it is allocated
    // for every connection; keeping the per-transport connection futures behind a pointer
    // makes an idle plain-TCP client pay for neither TLS nor WebSocket state.
    Box::pin(TRANSPORT.scope(
        info,
        connection::run(Arc::clone(shared), stream, remote, permit, shutdown.clone()),
    ))
    .await;
}

fn log_join(done: Result<(), tokio::task::JoinError>) {
    if let Err(e) = done
        && e.is_panic()
    {
        error!(error = %e, "connection task panicked");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
