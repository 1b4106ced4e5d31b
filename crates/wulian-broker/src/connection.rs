//! One task per client connection: read and decode, run the MQTT state machine, encode and
//! write.
//!
//! A single task owns the socket, so there is no lock between reading and writing and the
//! order of acknowledgements is the order of the packets they answer. The task waits on the
//! socket and on its mailbox: routed deliveries (only while the in-flight window has room) and
//! close requests (session takeover, `Broker::disconnect`, keep-alive expiry found by the
//! housekeeping sweep, shutdown of its listener). PUBLISH handling awaits the message sink
//! before acknowledging, which applies backpressure to that client only. The transport is
//! generic so TLS and WebSocket streams can reuse it.
//!
//! An idle client keeps this task for as long as it is connected, so its resting state is
//! kept small (docs/benchmarks.md, "Idle connection memory"): brief phases are boxed, rarely
//! used state is allocated on first use, and there is no per-connection timer or waiter.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, warn};
use wulian_mqtt::{
    Ack, ConnAck, Connect, Disconnect, Packet, Properties, Protocol, Publish, QoS, ReasonCode,
    RetainHandling, SubAck, Subscribe, UnsubAck, Unsubscribe, topic,
};

use crate::Shared;
use crate::alias::{AliasError, Aliases};
use crate::auth::{
    ConnectRequest, ConnectionInfo, Identity, InboundMessage, Principal, SinkError, Staged,
    TransportInfo, TransportKind, rewrite_me,
};
use crate::error::{Close, ConnectionError, truncate_reason};
use crate::housekeeping::end_session;
use crate::lane::{Detach, Lane};
use crate::mailbox::{Mailbox, listener_mailbox};
use crate::metrics::Metrics;
use crate::persist;
use crate::ratelimit::RateLimiter;
use crate::router::{Delivery, MAX_FILTER_LEVELS, RoutedMessage, SubEntry, SubscriberId};
use crate::session::{Lazy, OutState, Parked, PendingWill, Persistent, PushOutcome, Session};
use crate::store;
use crate::sys::{self, SYS_NAMESPACE};

/// A client that stops reading gets this long per write before we give up on it.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Write buffer size at which we stop batching deliveries and flush.
const MAX_WRITE_BATCH: usize = 64 * 1024;
/// Bytes one socket read may take at once (the per-thread scratch buffer's size).
const READ_CHUNK: usize = 16 * 1024;
/// A write buffer that grew past this is released after a flush rather than kept idle.
const KEEP_WRITE_BUFFER: usize = 4 * 1024;

thread_local! {
    /// Sockets are read into this per-thread scratch buffer and only the bytes that arrived are
    /// copied into the connection's own buffer. An idle connection therefore holds no read
    /// buffer at all — at 15,000 idle clients a preallocated 8 KiB each was ~120 MB.
    static READ_SCRATCH: std::cell::RefCell<Box<[u8]>> =
        std::cell::RefCell::new(vec![0; READ_CHUNK].into_boxed_slice());
}
/// Time left to send the last DISCONNECT and close the socket.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a CONNECT resuming a session waits for the previous connection to hand it over.
const TAKEOVER_WAIT: Duration = Duration::from_secs(5);

/// What the listener hands a connection task. Boxed: a task's future keeps what it captured
/// for its whole life, so it captures one pointer rather than these.
pub(crate) struct Accepted<S> {
    shared: Arc<Shared>,
    /// The listener's id (see [`crate::session::SessionRegistry::kick_listener`]).
    listener: u64,
    conn_id: SubscriberId,
    stream: S,
    remote: SocketAddr,
    /// What authentication needs to know about the transport.
    transport: TransportInfo,
    permits: Permits,
}

impl<S> Accepted<S> {
    pub(crate) fn new(
        shared: &Arc<Shared>,
        listener: u64,
        stream: S,
        remote: SocketAddr,
        transport: TransportInfo,
        permits: Permits,
    ) -> Box<Accepted<S>> {
        Box::new(Accepted {
            conn_id: shared.next_conn_id.fetch_add(1, Ordering::Relaxed),
            shared: Arc::clone(shared),
            listener,
            stream,
            remote,
            transport,
            permits,
        })
    }
}

/// Connection-limit permits (broker-wide, the listener's own), held for the lifetime of a
/// connection and never read.
pub(crate) struct Permits {
    pub(crate) _broker: OwnedSemaphorePermit,
    pub(crate) _listener: Option<OwnedSemaphorePermit>,
}

/// Serves one accepted connection until it ends; never panics on input and logs its end.
///
/// Memory: an idle client keeps this future for as long as it stays connected, so it holds
/// only the session loop's resting state ([`Active`] and its wait); the handshake, CONNACK
/// and the final clean-up are large but brief and run boxed.
pub(crate) fn run<S>(
    accepted: Box<Accepted<S>>,
    shutdown: CancellationToken,
) -> impl Future<Output = ()>
where
    S: AsyncRead + AsyncWrite + Detach + Unpin + Send + 'static,
{
    // Debug level: an enabled span costs ~0.5 KiB per connection in the subscriber for as long
    // as the connection lives, a quarter of an idle connection's budget. Events at info level
    // and above carry the client id and tenant themselves; the handshake has its own span.
    let span = tracing::debug_span!(
        "mqtt_connection",
        remote = %accepted.remote,
        conn_id = accepted.conn_id,
    );
    InSpan {
        span: (!span.is_disabled()).then(|| Box::new(span)),
        inner: async move {
            let Some(mut active) = Box::pin(establish(accepted, &shutdown)).await else {
                return;
            };
            let close = active.run(&shutdown).await;
            Box::pin(active.finish(close)).await;
        },
    }
}

pin_project_lite::pin_project! {
    /// `Instrument` for a span that is nearly always disabled: boxed, a disabled span costs the
    /// connection's future 8 bytes instead of a whole `Span`.
    struct InSpan<F> {
        #[pin]
        inner: F,
        span: Option<Box<tracing::Span>>,
    }
}

impl<F: Future> Future for InSpan<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let _entered = this.span.as_ref().map(|span| span.enter());
        this.inner.poll(cx)
    }
}

/// CONNECT, authentication and CONNACK, under a span of their own (the connection's span is
/// at debug level). `None` when the connection ended here.
///
/// An application on plain TCP moves to the application lane ([`crate::lane`]) once
/// authenticated; this future then waits for it to end there (and returns `None`), so the
/// listener's tracker still counts it.
async fn establish<S>(accepted: Box<Accepted<S>>, shutdown: &CancellationToken) -> Option<Active<S>>
where
    S: AsyncRead + AsyncWrite + Detach + Unpin + Send,
{
    let Accepted {
        shared,
        listener,
        conn_id,
        stream,
        remote,
        transport,
        permits,
    } = *accepted;
    Metrics::inc(&shared.metrics.connections_total);
    let span = tracing::info_span!("mqtt_connect", %remote, conn_id);
    let kind = transport.kind;
    let t = Transport {
        stream,
        bufs: None,
        protocol: Protocol::V311,
        shared,
    };
    let connect = async move {
        let (t, connect, identity) = match handshake(t, remote, transport, shutdown).await {
            Ok(Some(accepted)) => accepted,
            Ok(None) => return None,
            Err(ConnectionError::Io(e)) => {
                debug!(error = %e, "connection failed before CONNECT");
                return None;
            }
            Err(e) => {
                warn!(error = %e, "connection refused during CONNECT");
                return None;
            }
        };
        let ids = (listener, conn_id, kind);
        let moves =
            matches!(identity.principal, Principal::Application { .. }) && !crate::lane::on_lane();
        let shared = moves.then(|| Arc::clone(&t.shared));
        let t = match shared.as_deref().and_then(Shared::lane) {
            None => t,
            Some(lane) => match t.detach() {
                Err(t) => t,
                Ok(Err(e)) => {
                    debug!(error = %e, "could not move the connection to the application lane");
                    return None;
                }
                Ok(Ok(detached)) => {
                    Metrics::inc(&detached.shared.metrics.application_lane_connections_total);
                    let connect = (connect, identity, remote);
                    let moved = detached.admit_on(lane, connect, ids, permits, shutdown.clone());
                    return Some(Err(moved));
                }
            },
        };
        Active::accept(t, connect, identity, remote, ids, permits)
            .await
            .map_err(|e| warn!(error = %e, "connection refused during CONNECT"))
            .ok()
            .map(Ok)
    };
    match connect.instrument(span).await? {
        Ok((active, info)) => active.admitted(info).await,
        Err(moved) => {
            moved.await.ok();
            None
        }
    }
}

/// The connection ids [`Active::accept`] takes: listener, connection, transport.
type ConnIds = (u64, SubscriberId, TransportKind);

/// A TCP connection's state between authentication and CONNACK, detached from the runtime
/// that accepted it (see [`crate::lane`]).
struct Detached {
    socket: std::net::TcpStream,
    bufs: Option<Box<Buffers>>,
    protocol: Protocol,
    shared: Arc<Shared>,
}

impl Detached {
    /// Runs the rest of the connection (CONNACK, session, clean-up) as a task on `lane`.
    fn admit_on(
        self,
        lane: &Lane,
        (connect, identity, remote): (Connect, Identity, SocketAddr),
        ids: ConnIds,
        permits: Permits,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let span = tracing::Span::current();
        let (bufs, protocol, shared) = (self.bufs, self.protocol, self.shared);
        let connection = move |stream| async move {
            let t = Transport {
                stream,
                bufs,
                protocol,
                shared,
            };
            let accepted = Active::accept(t, connect, identity, remote, ids, permits).await;
            let (active, info) = match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    warn!(error = %e, "connection refused during CONNECT");
                    return;
                }
            };
            let Some(mut active) = active.admitted(info).await else {
                return;
            };
            let close = active.run(&shutdown).await;
            Box::pin(active.finish(close)).await;
        };
        lane.adopt(self.socket, move |stream| {
            connection(stream).instrument(span)
        })
    }
}

/// Bytes read but not decoded yet, and bytes encoded but not written yet.
#[derive(Default)]
struct Buffers {
    rbuf: BytesMut,
    wbuf: BytesMut,
}

/// Socket plus buffers; encodes and decodes at the negotiated protocol level.
struct Transport<S> {
    stream: S,
    /// Allocated while either buffer holds something: an idle client holds none (two empty
    /// `BytesMut` would be 64 bytes of every connection's resting state).
    bufs: Option<Box<Buffers>>,
    protocol: Protocol,
    shared: Arc<Shared>,
}

impl<S: Detach> Transport<S> {
    /// The socket and buffers, detached from this runtime (the inner error: the reactor kept
    /// the socket, which is then closed); the transport itself when its stream cannot move.
    fn detach(self) -> Result<std::io::Result<Detached>, Transport<S>> {
        let Transport {
            stream,
            bufs,
            protocol,
            shared,
        } = self;
        match stream.detach() {
            Ok(socket) => Ok(socket.map(|socket| Detached {
                socket,
                bufs,
                protocol,
                shared,
            })),
            Err(stream) => Err(Transport {
                stream,
                bufs,
                protocol,
                shared,
            }),
        }
    }
}

impl<S> Transport<S> {
    fn bufs(&mut self) -> &mut Buffers {
        self.bufs.get_or_insert_with(Box::default)
    }

    /// Bytes read and not decoded yet.
    fn rbuf(&self) -> &[u8] {
        self.bufs.as_ref().map_or(&[], |b| &b.rbuf[..])
    }

    /// Length of what is queued for writing.
    fn wlen(&self) -> usize {
        self.bufs.as_ref().map_or(0, |b| b.wbuf.len())
    }

    /// Drops queued output past `len` (a packet that must not go out after all).
    fn truncate_output(&mut self, len: usize) {
        if let Some(b) = &mut self.bufs {
            b.wbuf.truncate(len);
        }
    }

    /// Gives the buffers back once both are empty, unless the write buffer is a large one
    /// kept for a stream of deliveries (see [`Transport::release_write_buffer`]).
    fn release_idle(&mut self) {
        if self.bufs.as_ref().is_some_and(|b| {
            b.rbuf.is_empty() && b.wbuf.is_empty() && b.wbuf.capacity() <= KEEP_WRITE_BUFFER
        }) {
            self.bufs = None;
        }
    }

    /// Whether a large write buffer is kept between flushes.
    fn holds_large_write_buffer(&self) -> bool {
        self.bufs
            .as_ref()
            .is_some_and(|b| b.wbuf.capacity() > KEEP_WRITE_BUFFER)
    }

    /// Drops a large, empty write buffer (the deliveries it was kept for have stopped).
    fn release_write_buffer(&mut self) {
        if let Some(b) = &mut self.bufs
            && b.wbuf.is_empty()
        {
            b.wbuf = BytesMut::new();
        }
        self.release_idle();
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Transport<S> {
    fn try_decode(&mut self) -> Result<Option<Packet>, wulian_mqtt::DecodeError> {
        let Some(bufs) = &mut self.bufs else {
            return Ok(None);
        };
        wulian_mqtt::decode(
            &mut bufs.rbuf,
            self.protocol,
            self.shared.config.max_packet_size,
        )
    }

    /// Reads more bytes; Ok(0) at end of stream. Cancel safe: bytes are moved out of the
    /// scratch buffer in the same poll that read them.
    async fn read_more(&mut self) -> std::io::Result<usize> {
        self.release_idle();
        std::future::poll_fn(|cx| self.poll_read_more(cx)).await
    }

    /// One read into the thread's scratch buffer, kept (and counted) only when it brought
    /// something.
    fn poll_read_more(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        let (stream, bufs) = (&mut self.stream, &mut self.bufs);
        let read = READ_SCRATCH.with_borrow_mut(|scratch| {
            let mut buf = tokio::io::ReadBuf::new(scratch);
            match Pin::new(&mut *stream).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) => {
                    let filled = buf.filled();
                    if !filled.is_empty() {
                        // Allocated only now that there is something to keep.
                        let bufs = bufs.get_or_insert_with(Box::default);
                        bufs.rbuf.extend_from_slice(filled);
                    }
                    Poll::Ready(Ok(filled.len()))
                }
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            }
        });
        if let Poll::Ready(Ok(n)) = read {
            Metrics::add(&self.shared.metrics.bytes_received_total, n as u64);
        }
        read
    }

    fn queue(&mut self, packet: &Packet) -> Result<(), ConnectionError> {
        let protocol = self.protocol;
        wulian_mqtt::encode(packet, protocol, &mut self.bufs().wbuf)?;
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), ConnectionError> {
        if self.wlen() == 0 {
            self.release_idle();
            return Ok(());
        }
        // The socket nearly always takes everything at once: try that without a timer, and
        // keep the timed wait (a timer is ~100 bytes in every connection's resting state)
        // boxed for a client that stopped reading.
        let mut written = 0;
        let done = std::future::poll_fn(|cx| Poll::Ready(self.write_now(cx, &mut written))).await?;
        if !done {
            Box::pin(self.flush_slow(written)).await?;
        }
        self.flushed();
        Ok(())
    }

    /// Writes and flushes what the stream takes without waiting; true when everything went.
    fn write_now(&mut self, cx: &mut Context<'_>, written: &mut usize) -> std::io::Result<bool> {
        let mut stream = Pin::new(&mut self.stream);
        let wbuf = self.bufs.as_ref().map_or(&[][..], |b| &b.wbuf[..]);
        while *written < wbuf.len() {
            match stream.as_mut().poll_write(cx, &wbuf[*written..]) {
                Poll::Ready(Ok(0)) => return Err(std::io::ErrorKind::WriteZero.into()),
                Poll::Ready(Ok(n)) => *written += n,
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => return Ok(false),
            }
        }
        // TLS and WebSocket streams buffer what they are handed.
        match stream.poll_flush(cx) {
            Poll::Ready(result) => result.map(|()| true),
            Poll::Pending => Ok(false),
        }
    }

    /// The rest of a flush, bounded by the write timeout.
    async fn flush_slow(&mut self, written: usize) -> Result<(), ConnectionError> {
        let wbuf = self.bufs.as_ref().map_or(&[][..], |b| &b.wbuf[..]);
        let stream = &mut self.stream;
        let write = async {
            stream
                .write_all(wbuf.get(written..).unwrap_or_default())
                .await?;
            stream.flush().await
        };
        tokio::time::timeout(WRITE_TIMEOUT, write)
            .await
            .map_err(|_| ConnectionError::WriteTimeout)??;
        Ok(())
    }

    /// Counts what was sent and empties the write buffer.
    fn flushed(&mut self) {
        Metrics::add(&self.shared.metrics.bytes_sent_total, self.wlen() as u64);
        // A subscriber taking a stream of deliveries fills batches of up to MAX_WRITE_BATCH:
        // its buffer is kept while deliveries keep coming (the session loop releases it when
        // its queue is empty) rather than freed and regrown, copy by copy, for every batch.
        if let Some(b) = &mut self.bufs {
            if b.wbuf.capacity() > 2 * MAX_WRITE_BATCH {
                b.wbuf = BytesMut::new();
            } else {
                b.wbuf.clear();
            }
        }
        self.release_idle();
    }

    async fn send(&mut self, packet: &Packet) -> Result<(), ConnectionError> {
        self.queue(packet)?;
        self.flush().await
    }

    /// Best effort: flush what is queued and close the socket, bounded in time.
    async fn close(&mut self) {
        let closing = async {
            if let Err(e) = self.flush().await {
                debug!(error = %e, "final flush failed");
            }
            if let Err(e) = self.stream.shutdown().await {
                debug!(error = %e, "socket shutdown failed");
            }
        };
        if tokio::time::timeout(CLOSE_TIMEOUT, closing).await.is_err() {
            debug!("closing the socket timed out");
        }
    }
}

fn connack(code: ReasonCode, properties: Properties) -> Packet {
    Packet::ConnAck(ConnAck {
        session_present: false,
        code,
        properties,
    })
}

/// Waits (bounded) until no connection is attached to a persistent session.
async fn wait_detached(p: &Persistent) {
    let deadline = Instant::now() + TAKEOVER_WAIT;
    loop {
        let detached = p.state.lock().online.is_none();
        if detached {
            return;
        }
        if Instant::now() >= deadline {
            warn!("previous connection did not release the session in time, taking it over");
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Protocol level byte of a (possibly incomplete or malformed) CONNECT at the start of
/// `buf`, used to answer a CONNECT we cannot decode in the client's own protocol.
fn peek_connect_level(buf: &[u8]) -> Option<u8> {
    if buf.first()? >> 4 != 1 {
        return None;
    }
    // Remaining length: 1 to 4 bytes, high bit = continuation.
    let mut pos = 1;
    loop {
        let b = *buf.get(pos)?;
        pos += 1;
        if b & 0x80 == 0 {
            break;
        }
        if pos > 4 {
            return None;
        }
    }
    let name_len = usize::from(u16::from_be_bytes([*buf.get(pos)?, *buf.get(pos + 1)?]));
    buf.get(pos + 2 + name_len).copied()
}

/// CONNECT within the timeout and authentication. `None` when the connection ended here
/// (answered and closed, or gone).
async fn handshake<S>(
    mut t: Transport<S>,
    remote: SocketAddr,
    transport: TransportInfo,
    shutdown: &CancellationToken,
) -> Result<Option<(Transport<S>, Connect, Identity)>, ConnectionError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let shared = Arc::clone(&t.shared);
    let config = &shared.config;
    let first = tokio::select! {
        _ = shutdown.cancelled() => return Ok(None),
        read = tokio::time::timeout(config.connect_timeout, read_connect(&mut t)) => match read {
            Err(_) => {
                debug!("no CONNECT within the connect timeout");
                t.close().await;
                return Err(ConnectionError::ConnectTimeout);
            }
            Ok(read) => read?,
        },
    };
    let connect = match first {
        None => {
            debug!("connection closed before CONNECT");
            return Ok(None);
        }
        Some(Packet::Connect(c)) => c,
        Some(other) => {
            Metrics::inc(&shared.metrics.malformed_packets_total);
            debug!(packet = packet_name(&other), "first packet was not CONNECT");
            t.close().await;
            return Err(ConnectionError::FirstPacketNotConnect);
        }
    };
    t.protocol = connect.protocol;
    let v5 = connect.protocol == Protocol::V5;

    if connect.client_id.is_empty() && !connect.clean_start && !v5 {
        // MQTT-3.1.3-8: a 3.1.1 client without id must ask for a clean session.
        t.send(&connack(
            ReasonCode::ClientIdentifierNotValid,
            Properties::default(),
        ))
        .await?;
        t.close().await;
        debug!("empty client id without clean session refused");
        return Ok(None);
    }

    if let Some(method) = &connect.properties.authentication_method
        && !shared.auth.supports_auth_method(method)
    {
        // MQTT-4.12.0-1: an unsupported authentication method gets 0x8C and the close.
        Metrics::inc(&shared.metrics.auth_failed_total);
        info!(client_id = %connect.client_id, %method, "unsupported authentication method");
        t.send(&connack(
            ReasonCode::BadAuthenticationMethod,
            Properties::default(),
        ))
        .await?;
        t.close().await;
        return Ok(None);
    }

    let request = ConnectRequest {
        protocol: connect.protocol,
        client_id: connect.client_id.clone(),
        username: connect.username.clone(),
        password: connect.password.clone(),
        remote_addr: remote,
        transport,
    };
    let authenticate = async {
        // Never closed, so a permit always comes.
        let _slot = shared.auth_slots.acquire().await.ok();
        shared.auth.authenticate(&request).await
    };
    let authenticated = tokio::select! {
        _ = shutdown.cancelled() => return Ok(None),
        auth = tokio::time::timeout(config.connect_timeout, authenticate) => auth,
    };
    let identity = match authenticated {
        Ok(Ok(identity)) => identity,
        Ok(Err(code)) => {
            let code = if code.is_error() {
                code
            } else {
                ReasonCode::NotAuthorized
            };
            Metrics::inc(&shared.metrics.auth_failed_total);
            info!(
                client_id = %connect.client_id,
                username = connect.username.as_deref().unwrap_or(""),
                ?code,
                "authentication failed"
            );
            t.send(&connack(code, Properties::default())).await?;
            t.close().await;
            return Ok(None);
        }
        Err(_) => {
            warn!(client_id = %connect.client_id, "authenticator timed out");
            t.send(&connack(
                ReasonCode::ServerUnavailable,
                Properties::default(),
            ))
            .await?;
            t.close().await;
            return Ok(None);
        }
    };
    Ok(Some((t, connect, identity)))
}

/// Reads the first packet, answering undecodable CONNECTs as well as the protocol allows.
async fn read_connect<S>(t: &mut Transport<S>) -> Result<Option<Packet>, ConnectionError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        let level = peek_connect_level(t.rbuf());
        match t.try_decode() {
            Ok(Some(packet)) => return Ok(Some(packet)),
            Ok(None) => {}
            Err(e) => {
                Metrics::inc(&t.shared.metrics.malformed_packets_total);
                let code = e.reason_code();
                warn!(error = %e, ?level, "undecodable CONNECT");
                let reply = if code == ReasonCode::UnsupportedProtocolVersion {
                    // 3.1.1 return code 1 for old levels, the 5.0 reason code for newer ones.
                    Some(if level.is_some_and(|l| l > 5) {
                        Protocol::V5
                    } else {
                        Protocol::V311
                    })
                } else if level == Some(5) {
                    Some(Protocol::V5)
                } else {
                    None
                };
                if let Some(protocol) = reply {
                    t.protocol = protocol;
                    t.queue(&connack(code, Properties::default()))?;
                }
                t.close().await;
                return Err(e.into());
            }
        }
        if t.read_more().await? == 0 {
            return Ok(None);
        }
    }
}

/// A PUBLISH after the broker's own checks.
enum Prepared {
    /// Answered without the sink (MQTT 5 `0x87`, a QoS 2 retransmission): the PUBACK (QoS 1)
    /// or PUBREC (QoS 2) to send.
    Reply(QoS, Ack),
    /// For the sink, with its packet identifier.
    Sink(InboundMessage, u16),
}

/// PUBLISHes of one socket read (QoS 2 see `Active::batchable`), prepared and waiting for the sink together.
#[derive(Default)]
struct PublishBatch {
    msgs: Vec<InboundMessage>,
    ids: Vec<u16>,
}

/// Messages a connection sends before its routed deliveries: a resumed session's queue and
/// retained messages for new subscriptions. Usually empty, and then only a null pointer.
#[derive(Default)]
struct Pending(Lazy<VecDeque<Delivery>>);

impl Pending {
    fn is_empty(&self) -> bool {
        self.0.get().is_none()
    }

    fn push_back(&mut self, d: Delivery) {
        self.0.make_mut().push_back(d);
    }

    fn pop_front(&mut self) -> Option<Delivery> {
        let queue = self.0.get_mut()?;
        let d = queue.pop_front();
        if queue.is_empty() {
            self.0.take();
        }
        d
    }

    /// Everything, oldest first.
    fn take(&mut self) -> VecDeque<Delivery> {
        self.0.take()
    }
}

/// What woke the session loop (see [`Active::poll_event`]).
enum Event {
    Kicked(ReasonCode),
    Read(std::io::Result<usize>),
    Delivery(Delivery),
}

/// A connection past CONNACK: what an idle client keeps for as long as it is connected, so
/// rarely used state is boxed or allocated on first use.
struct Active<S> {
    t: Transport<S>,
    identity: Identity,
    /// Shared with the session registry's key.
    client_id: Arc<str>,
    /// Effective keep alive in seconds (after the broker's cap).
    keep_alive: u16,
    session: Session,
    /// Maximum Packet Size the client announced (5.0).
    client_max_packet: Option<u32>,
    /// Topic aliases in both directions (5.0).
    aliases: Aliases,
    /// Publish rate limit of this client; None when the broker sets none.
    rate: Option<Box<RateLimiter>>,
    /// False when a 5.0 client asked for no reason strings.
    problem_info: bool,
    /// Registered in the tenant's router (at the first SUBSCRIBE for a clean session: an
    /// unsubscribed client cannot be routed to).
    routed: bool,
    /// Registered in the `$SYS` namespace (on first use).
    sys_registered: bool,
    /// Which of reading and delivering goes first in the next wait (they alternate).
    reads_first: bool,
    /// Still in the router and session registry; released by [`Active::release`], or by
    /// `Drop` when the task ends otherwise (panic, abort).
    registered: bool,
    /// The sink was told about this connection (so it must hear about its end).
    notified_connect: bool,
    /// Routed deliveries and close requests (session takeover, `Broker::disconnect`).
    deliveries: Mailbox,
    /// Messages to send before anything from `deliveries`: a resumed session's queue and
    /// retained messages for new subscriptions.
    pending: Pending,
    /// The persistent session (3.1.1 clean session = 0, 5.0 session expiry > 0 or resumed).
    persistent: Option<Arc<Persistent>>,
    conn_id: SubscriberId,
    /// Identity in the router: the persistent session's, else the connection's.
    sub_id: SubscriberId,
    /// Session expiry interval in seconds (`u32::MAX` = never), after the broker's cap.
    session_expiry: u32,
    _permits: Permits,
}

impl<S> Active<S> {
    /// Unregisters the connection from the router and the session registry. A persistent
    /// session stays in the router; releasing it marks it offline, which `finish` does only
    /// after parking or ending it, so a resuming connection sees the final state.
    fn release(&mut self, persistent: Option<&Persistent>) {
        if !std::mem::take(&mut self.registered) {
            return;
        }
        let shared = &self.t.shared;
        if self.sys_registered {
            shared.router.unregister(SYS_NAMESPACE, self.sub_id);
        }
        match persistent {
            None => {
                if self.routed {
                    shared.router.unregister(&self.identity.tenant, self.sub_id);
                }
            }
            Some(p) => {
                let mut st = p.state.lock();
                if st.online == Some(self.conn_id) {
                    st.online = None;
                    st.offline_since = Some(Instant::now());
                    st.offline_since_ms = Some(store::now_ms());
                }
            }
        }
        shared
            .sessions
            .unregister(&self.identity.tenant, &self.client_id, self.conn_id);
    }
}

impl<S> Drop for Active<S> {
    fn drop(&mut self) {
        let persistent = self.persistent.take();
        self.release(persistent.as_deref());
    }
}

impl<S> Active<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    /// Sends CONNACK and tells the sink about the connection; None when the client is
    /// already gone.
    async fn admitted(mut self, info: ConnectionInfo) -> Option<Active<S>> {
        if let Err(e) = self.t.flush().await {
            self.finish(e.into()).await;
            return None;
        }
        let sink = Arc::clone(&self.t.shared.sink);
        sink.on_connect(&self.identity, &info).await;
        self.notified_connect = true;
        Some(self)
    }

    /// Registers the client (taking over an older connection with the same id) and queues
    /// CONNACK.
    async fn accept(
        t: Transport<S>,
        connect: Connect,
        identity: Identity,
        remote: SocketAddr,
        (listener, conn_id, transport): ConnIds,
        permits: Permits,
    ) -> Result<(Active<S>, ConnectionInfo), ConnectionError> {
        let shared = Arc::clone(&t.shared);
        let config = &shared.config;
        let v5 = connect.protocol == Protocol::V5;
        let mut props = Properties::default();

        let client_id = if connect.client_id.is_empty() {
            // A device's client id is its device id, so that takeover, presence and
            // `Broker::disconnect` find it whether or not the client named itself.
            let assigned = match &identity.principal {
                Principal::Device { device_id } => device_id.clone(),
                Principal::Application { .. } | Principal::Anonymous => {
                    let nanos = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.subsec_nanos())
                        .unwrap_or_default();
                    format!("wulian-{conn_id:x}-{nanos:08x}")
                }
            };
            if v5 {
                props.assigned_client_identifier = Some(assigned.clone());
            }
            assigned
        } else {
            connect.client_id
        };

        let cap = config.max_keep_alive;
        let keep_alive = if v5 && cap > 0 && (connect.keep_alive == 0 || connect.keep_alive > cap) {
            props.server_keep_alive = Some(cap);
            cap
        } else {
            connect.keep_alive
        };

        let window = if v5 {
            connect
                .properties
                .receive_maximum
                .unwrap_or(u16::MAX)
                .min(config.max_inflight)
        } else {
            config.max_inflight
        };
        let client_max_packet = if v5 {
            connect.properties.maximum_packet_size
        } else {
            None
        };

        // Session expiry: 3.1.1 clean session = 0 asks for a session without end (capped).
        let requested_expiry = if v5 {
            connect.properties.session_expiry_interval.unwrap_or(0)
        } else if connect.clean_start {
            0
        } else {
            u32::MAX
        };
        let session_expiry = requested_expiry.min(config.max_session_expiry_secs);
        if v5 && session_expiry != requested_expiry {
            // MQTT-3.2.2-? : the server tells the client the expiry it will use.
            props.session_expiry_interval = Some(session_expiry);
        }

        let aliases = if v5 {
            Aliases::new(
                config.topic_alias_maximum,
                connect.properties.topic_alias_maximum.unwrap_or(0),
            )
        } else {
            Aliases::new(0, 0)
        };
        let rate = (config.max_publish_rate > 0 || config.max_publish_bytes_rate > 0).then(|| {
            Box::new(RateLimiter::new(
                config.max_publish_rate,
                config.max_publish_bytes_rate,
            ))
        });
        let (postbox, deliveries) = listener_mailbox(config.outgoing_queue, listener);
        let client_id: Arc<str> = client_id.into();
        let took_over =
            shared
                .sessions
                .register(&identity.tenant, &client_id, conn_id, postbox.clone());
        // From here on dropping `active` unregisters the client, whatever happens next.
        let mut active = Active {
            t,
            identity,
            client_id,
            keep_alive,
            session: Session::new(window, connect.will),
            client_max_packet,
            aliases,
            rate,
            problem_info: connect.properties.request_problem_information != Some(0),
            routed: false,
            sys_registered: false,
            reads_first: false,
            registered: true,
            notified_connect: false,
            deliveries,
            pending: Pending::default(),
            persistent: None,
            conn_id,
            sub_id: conn_id,
            session_expiry,
            _permits: permits,
        };
        let (tenant, client_id) = (&active.identity.tenant, &active.client_id);

        let mut session_present = false;
        if let Some(p) = shared.sessions.persistent(tenant, client_id) {
            // A connection still attached was told to close by `register`; wait for it to
            // hand the session back.
            wait_detached(&p).await;
            if connect.clean_start {
                // MQTT-3.1.2-6 / MQTT-3.1.2-4: a clean start discards the old session.
                end_session(&shared, &p).await;
            } else {
                let mut st = p.state.lock();
                if !st.ended {
                    // MQTT-3.2.2-2 (session present) and MQTT-4.1.0-1 (state resumed).
                    st.online = Some(conn_id);
                    st.offline_since = None;
                    st.offline_since_ms = None;
                    st.expiry_secs = session_expiry;
                    // The session resumed before the will delay passed: no will.
                    st.will = None;
                    let inflight = std::mem::take(&mut st.inflight);
                    let session = &mut active.session;
                    session.outgoing.import(&inflight);
                    *session.inbound_qos2.make_mut() =
                        std::mem::take(&mut st.inbound_qos2).into_iter().collect();
                    *session.subscriptions.make_mut() = st
                        .subscriptions
                        .iter()
                        .map(|(filter, entry)| (filter.clone(), *entry))
                        .collect();
                    for q in std::mem::take(&mut st.queue) {
                        active.pending.push_back(q.delivery);
                    }
                    session_present = true;
                    drop(st);
                    active.persistent = Some(p);
                }
            }
        }
        let (tenant, client_id) = (&active.identity.tenant, &active.client_id);
        if active.persistent.is_none() && session_expiry > 0 {
            let p = Arc::new(Persistent {
                tenant: tenant.clone(),
                client_id: client_id.to_string(),
                sub_id: shared.next_conn_id.fetch_add(1, Ordering::Relaxed),
                state: parking_lot::Mutex::new(Parked {
                    online: Some(conn_id),
                    expiry_secs: session_expiry,
                    ..Parked::default()
                }),
            });
            shared.sessions.insert_persistent(Arc::clone(&p));
            Metrics::inc(&shared.metrics.sessions_persistent);
            active.persistent = Some(p);
        }
        if let Some(p) = &active.persistent {
            // A persistent session is routed to (or queued for) from the start.
            shared.router.attach(tenant, p.sub_id, Some(postbox), p);
            active.sub_id = p.sub_id;
            active.routed = true;
            let (tenant, cid) = (tenant.clone(), client_id.clone());
            shared
                .store_write("create session", move |s| {
                    s.put_session(&tenant, &cid, session_expiry, None)
                })
                .await;
        }

        if v5 {
            props.receive_maximum = Some(config.max_inflight.max(1));
            props.maximum_packet_size = u32::try_from(config.max_packet_size).ok();
            props.topic_alias_maximum = Some(config.topic_alias_maximum);
            props.retain_available = Some(1);
            props.wildcard_subscription_available = Some(1);
            props.shared_subscription_available = Some(1);
            props.subscription_identifier_available = Some(1);
            // Maximum QoS is left out: absent means 2 (sending 2 is a protocol error).
        }
        active.t.queue(&Packet::ConnAck(ConnAck {
            session_present,
            code: ReasonCode::Success,
            properties: props,
        }))?;
        info!(
            client_id = %active.client_id,
            tenant = %active.identity.tenant,
            protocol = ?connect.protocol,
            keep_alive,
            took_over,
            session_present,
            session_expiry,
            username = connect.username.as_deref().unwrap_or(""),
            "client connected"
        );
        let info = ConnectionInfo {
            protocol: connect.protocol,
            client_id: active.client_id.to_string(),
            remote_addr: remote,
            keep_alive,
            transport,
        };
        active.resend_inflight().map_err(|close| match close {
            Close::Failed(e) => e,
            other => ConnectionError::Io(std::io::Error::other(other.describe())),
        })?;
        Ok((active, info))
    }

    /// MQTT-4.4.0-1: after resuming a session, unacknowledged PUBLISH packets are resent
    /// with DUP = 1 and their original packet identifiers, and PUBRELs are resent.
    fn resend_inflight(&mut self) -> Result<(), Close> {
        let entries = self.session.outgoing.export();
        for e in entries {
            match (e.state, &e.delivery) {
                (OutState::Released, _) => {
                    self.queue(&Packet::PubRel(ack(e.packet_id, ReasonCode::Success, None)))?;
                    self.session.outgoing.import(std::slice::from_ref(&e));
                }
                (_, Some(d)) => {
                    if let Some(packet) = self.publish_packet(d, e.packet_id, true) {
                        self.queue(&packet)?;
                        self.session.outgoing.import(std::slice::from_ref(&e));
                        Metrics::inc(&self.metrics().messages_delivered_total);
                    }
                }
                (_, None) => {}
            }
        }
        Ok(())
    }

    fn v5(&self) -> bool {
        self.t.protocol == Protocol::V5
    }

    /// A packet arrived: the keep alive starts again (one and a half periods, MQTT-3.1.2-24).
    fn touch(&self) {
        if self.keep_alive > 0 {
            let deadline = self.t.shared.clock_ms() + u64::from(self.keep_alive) * 1500;
            self.deliveries.set_keep_alive_deadline(deadline);
        }
    }

    fn metrics(&self) -> &Metrics {
        &self.t.shared.metrics
    }

    /// Reason string for acks, unless the client asked not to get them.
    fn reason(&self, reason: impl Into<String>) -> Option<String> {
        (self.v5() && self.problem_info).then(|| truncate_reason(reason.into()))
    }

    /// The session loop; returns why it ended.
    async fn run(&mut self, shutdown: &CancellationToken) -> Close {
        // No timer: the housekeeping sweep closes the connection once this deadline passes.
        self.touch();
        // Shutdown arrives as a close request (`kick_listener`), not by waiting on the token
        // (~70 bytes per connection, and a waiter list shared by every connection): the
        // listener asks the registered connections, and one registered since sees the token.
        if shutdown.is_cancelled() {
            return Close::Shutdown;
        }

        // Packets pipelined behind CONNECT are already buffered.
        if let Err(close) = Box::pin(self.drain_inbound()).await {
            return close;
        }
        loop {
            if !self.pending.is_empty() {
                if let Err(close) = Box::pin(self.deliver_pending()).await {
                    return close;
                }
                if let Err(e) = self.t.flush().await {
                    return e.into();
                }
            }
            if self.t.holds_large_write_buffer() && self.deliveries.is_empty() {
                self.t.release_write_buffer();
            }
            // The pending queue goes first; only then the routed deliveries.
            let window_open = self.session.outgoing.has_room() && self.pending.is_empty();
            self.t.release_idle();
            let step: Result<(), Close> =
                match std::future::poll_fn(|cx| self.poll_event(cx, window_open)).await {
                    Event::Kicked(code) => Err(match code {
                        ReasonCode::SessionTakenOver => Close::TakenOver,
                        ReasonCode::KeepAliveTimeout => Close::KeepAliveTimeout,
                        ReasonCode::ServerShuttingDown => Close::Shutdown,
                        code => Close::refused(code, "closed by the server"),
                    }),
                    Event::Read(Ok(0)) => Err(Close::ConnectionLost),
                    Event::Read(Ok(_)) => Box::pin(self.drain_inbound()).await,
                    Event::Read(Err(e)) => Err(Close::Failed(e.into())),
                    Event::Delivery(delivery) => self.deliver_batch(delivery),
                };
            if let Err(close) = step {
                return close;
            }
            if let Err(e) = self.t.flush().await {
                return e.into();
            }
        }
    }

    /// What the session loop waits for: a close request, bytes from the client, or (while the
    /// in-flight window has room) a routed delivery. One hand-written poll rather than a
    /// `select!` over three futures, which every idle connection would carry in its resting
    /// state. Reads and deliveries take turns going first, so neither starves the other.
    fn poll_event(&mut self, cx: &mut Context<'_>, window_open: bool) -> Poll<Event> {
        if let Poll::Ready(code) = self.deliveries.poll_kicked(cx) {
            return Poll::Ready(Event::Kicked(code));
        }
        self.reads_first = !self.reads_first;
        for read in [self.reads_first, !self.reads_first] {
            if read {
                if let Poll::Ready(r) = self.t.poll_read_more(cx) {
                    return Poll::Ready(Event::Read(r));
                }
            } else if window_open && let Poll::Ready(d) = self.deliveries.poll_recv(cx) {
                return Poll::Ready(Event::Delivery(d));
            }
        }
        Poll::Pending
    }

    /// Handles every complete packet in the read buffer.
    async fn drain_inbound(&mut self) -> Result<(), Close> {
        // Consecutive PUBLISHes go to the sink as one batch (one durable write for all of them;
        // see `batchable` for QoS 2); anything else first completes the batch, so answers keep
        // the packets' order.
        let mut batch = PublishBatch::default();
        let result = self.drain_packets(&mut batch).await;
        // Messages prepared before a closing packet are still handled and answered first.
        let completed = self.publish_batch(&mut batch).await;
        result.and(completed)?;
        // Answer promptly even when the sink was slow.
        self.t.flush().await?;
        Ok(())
    }

    async fn drain_packets(&mut self, batch: &mut PublishBatch) -> Result<(), Close> {
        loop {
            match self.t.try_decode() {
                Ok(Some(packet)) => {
                    self.touch();
                    match packet {
                        Packet::Publish(p) if self.batchable(&p, batch) => {
                            match self.prepare_publish(p)? {
                                Prepared::Sink(msg, packet_id) => {
                                    batch.msgs.push(msg);
                                    batch.ids.push(packet_id);
                                }
                                Prepared::Reply(qos, a) => {
                                    self.publish_batch(batch).await?;
                                    self.queue(&publish_packet_ack(qos, a))?;
                                }
                            }
                        }
                        packet => {
                            self.publish_batch(batch).await?;
                            self.handle(packet).await?;
                            // Answer promptly even when the sink was slow.
                            self.t.flush().await?;
                        }
                    }
                }
                Ok(None) => return Ok(()),
                Err(e) => {
                    Metrics::inc(&self.metrics().malformed_packets_total);
                    warn!(client_id = %self.client_id, tenant = %self.identity.tenant, error = %e, "malformed packet");
                    return Err(Close::refused(e.reason_code(), e.to_string()));
                }
            }
        }
    }

    /// Whether a PUBLISH may join the read batch. QoS 0/1 always; QoS 2 unless the batch
    /// already holds its packet id (a retransmission must see the first one recorded, to be
    /// answered without the sink: exactly once) or it would pass the window counting the
    /// batch's QoS 2 messages. Otherwise it is handled on its own, after the batch.
    fn batchable(&self, p: &Publish, batch: &PublishBatch) -> bool {
        if p.qos != QoS::ExactlyOnce {
            return true;
        }
        let mut in_batch = 0;
        for (m, &id) in batch.msgs.iter().zip(&batch.ids) {
            if m.qos == QoS::ExactlyOnce {
                if id == p.packet_id {
                    return false;
                }
                in_batch += 1;
            }
        }
        self.session.inbound_qos2.len() + in_batch
            < usize::from(self.t.shared.config.max_inflight.max(1))
    }

    async fn handle(&mut self, packet: Packet) -> Result<(), Close> {
        match packet {
            Packet::Publish(p) => self.on_publish(p).await,
            Packet::PubAck(a) => {
                match self.session.outgoing.state(a.packet_id) {
                    Some(OutState::Qos1Sent) => {
                        self.session.outgoing.complete(a.packet_id);
                    }
                    state => debug!(packet_id = a.packet_id, ?state, "unexpected PUBACK ignored"),
                }
                Ok(())
            }
            Packet::PubRec(a) => self.on_pubrec(a),
            Packet::PubComp(a) => {
                match self.session.outgoing.state(a.packet_id) {
                    Some(OutState::Released) => {
                        self.session.outgoing.complete(a.packet_id);
                    }
                    state => debug!(
                        packet_id = a.packet_id,
                        ?state,
                        "unexpected PUBCOMP ignored"
                    ),
                }
                Ok(())
            }
            Packet::PubRel(a) => {
                let code = if self.session.inbound_qos2.remove(&a.packet_id) {
                    ReasonCode::Success
                } else {
                    ReasonCode::PacketIdentifierNotFound
                };
                self.queue(&Packet::PubComp(ack(a.packet_id, code, None)))
            }
            Packet::Subscribe(s) => self.on_subscribe(s).await,
            Packet::Unsubscribe(u) => self.on_unsubscribe(u).await,
            Packet::PingReq => self.queue(&Packet::PingResp),
            Packet::Disconnect(d) => {
                if let Some(expiry) = d.properties.session_expiry_interval {
                    if self.session_expiry == 0 && expiry > 0 {
                        // MQTT-3.14.2-2
                        return Err(self.protocol_error(
                            ReasonCode::ProtocolError,
                            "session expiry cannot be set on DISCONNECT when it was 0 at CONNECT",
                        ));
                    }
                    self.session_expiry = expiry.min(self.t.shared.config.max_session_expiry_secs);
                }
                let with_will = self.v5() && d.code != ReasonCode::NORMAL_DISCONNECTION;
                Err(Close::ClientDisconnect { with_will })
            }
            Packet::Connect(_) => {
                Err(self.protocol_error(ReasonCode::ProtocolError, "second CONNECT"))
            }
            Packet::Auth(_) => Err(self.protocol_error(
                ReasonCode::ProtocolError,
                "enhanced authentication is not supported",
            )),
            other @ (Packet::ConnAck(_)
            | Packet::SubAck(_)
            | Packet::UnsubAck(_)
            | Packet::PingResp) => Err(self.protocol_error(
                ReasonCode::ProtocolError,
                format!("{} is not sent by clients", packet_name(&other)),
            )),
        }
    }

    fn protocol_error(&self, code: ReasonCode, reason: impl Into<String>) -> Close {
        let reason = reason.into();
        Metrics::inc(&self.metrics().malformed_packets_total);
        warn!(client_id = %self.client_id, tenant = %self.identity.tenant, ?code, %reason, "protocol violation");
        Close::refused(code, reason)
    }

    fn queue(&mut self, packet: &Packet) -> Result<(), Close> {
        self.t.queue(packet).map_err(Close::Failed)
    }

    /// A single PUBLISH, handled on its own (QoS 2, or outside a read batch).
    async fn on_publish(&mut self, p: Publish) -> Result<(), Close> {
        match self.prepare_publish(p)? {
            Prepared::Reply(qos, a) => self.queue(&publish_packet_ack(qos, a)),
            Prepared::Sink(msg, packet_id) => {
                let sink = Arc::clone(&self.t.shared.sink);
                let result = sink.on_publish(&self.identity, &msg).await;
                self.finish_publish(msg, packet_id, result).await
            }
        }
    }

    /// Everything before the sink: rate limit, topic alias, QoS 2 duplicates and window,
    /// `devices/me` rewrite, topic validity and policy. Queues nothing itself, so that a read
    /// batch can answer its earlier messages first.
    fn prepare_publish(&mut self, mut p: Publish) -> Result<Prepared, Close> {
        Metrics::inc(&self.metrics().publish_received_total);
        if let Some(rate) = &mut self.rate
            && !rate.allow(p.payload.len())
        {
            Metrics::inc(&self.metrics().publish_rate_limited_total);
            warn!(client_id = %self.client_id, tenant = %self.identity.tenant, "publish rate limit exceeded");
            return Err(Close::refused(
                ReasonCode::MessageRateTooHigh,
                "publish rate limit exceeded",
            ));
        }
        let topic = std::mem::take(&mut p.topic);
        p.topic = match self
            .aliases
            .resolve_inbound(topic, p.properties.topic_alias)
        {
            Ok(topic) => topic,
            Err(AliasError::OutOfRange(a)) => {
                return Err(self.protocol_error(
                    ReasonCode::TopicAliasInvalid,
                    format!("topic alias {a} is out of range"),
                ));
            }
            Err(AliasError::Unknown(a)) => {
                return Err(self.protocol_error(
                    ReasonCode::ProtocolError,
                    format!("topic alias {a} was never set"),
                ));
            }
            Err(AliasError::EmptyTopic) => {
                return Err(self.protocol_error(
                    ReasonCode::TopicNameInvalid,
                    "empty topic name without topic alias",
                ));
            }
        };
        if p.qos == QoS::ExactlyOnce {
            if self.session.inbound_qos2.contains(&p.packet_id) {
                // Retransmission of a message already handed to the sink: exactly once.
                return Ok(Prepared::Reply(
                    QoS::ExactlyOnce,
                    ack(p.packet_id, ReasonCode::Success, None),
                ));
            }
            if self.session.inbound_qos2.len()
                >= usize::from(self.t.shared.config.max_inflight.max(1))
            {
                return Err(self.protocol_error(
                    ReasonCode::ReceiveMaximumExceeded,
                    "too many unacknowledged QoS 2 publishes",
                ));
            }
        }
        let topic = rewrite_me(&self.identity.principal, &p.topic).unwrap_or(p.topic);
        if !topic::is_valid_topic_name(&topic) {
            return Err(self.protocol_error(
                ReasonCode::TopicNameInvalid,
                format!("invalid topic name {topic:?}"),
            ));
        }
        if !self.identity.allows_publish(&topic) {
            Metrics::inc(&self.metrics().publish_denied_total);
            warn!(client_id = %self.client_id, tenant = %self.identity.tenant, %topic, "publish not authorised");
            let reason = format!("not authorised to publish to {topic}");
            return match (self.v5(), p.qos) {
                (true, QoS::AtMostOnce) | (false, _) => {
                    Err(Close::refused(ReasonCode::NotAuthorized, reason))
                }
                (true, qos) => {
                    let reason = self.reason(reason);
                    Ok(Prepared::Reply(
                        qos,
                        ack(p.packet_id, ReasonCode::NotAuthorized, reason),
                    ))
                }
            };
        }

        let msg = InboundMessage {
            topic,
            payload: p.payload,
            qos: p.qos,
            retain: p.retain,
            properties: inbound_properties(p.properties),
        };
        Ok(Prepared::Sink(msg, p.packet_id))
    }

    /// After the sink answered for one message: route and acknowledge it, or refuse it.
    async fn finish_publish(
        &mut self,
        msg: InboundMessage,
        packet_id: u16,
        result: Result<(), SinkError>,
    ) -> Result<(), Close> {
        let qos = msg.qos;
        match result {
            Ok(()) => {
                self.route_accepted(msg).await;
                self.acknowledge(qos, packet_id, None, Ok(()))
            }
            Err(e) => self.acknowledge(qos, packet_id, Some(&msg.topic), Err(e)),
        }
    }

    /// Queues the PUBACK/PUBREC for a message the sink accepted, or refuses it: a negative
    /// acknowledgement (5.0) or closing the connection (3.1.1, which has no negative PUBACK).
    fn acknowledge(
        &mut self,
        qos: QoS,
        packet_id: u16,
        topic: Option<&str>,
        result: Result<(), SinkError>,
    ) -> Result<(), Close> {
        match result {
            Ok(()) => match qos {
                QoS::AtMostOnce => Ok(()),
                QoS::AtLeastOnce => {
                    self.queue(&Packet::PubAck(ack(packet_id, ReasonCode::Success, None)))
                }
                QoS::ExactlyOnce => {
                    self.session.inbound_qos2.make_mut().insert(packet_id);
                    self.queue(&Packet::PubRec(ack(packet_id, ReasonCode::Success, None)))
                }
            },
            Err(e) => {
                Metrics::inc(&self.metrics().publish_rejected_total);
                let code = if e.code.is_error() {
                    e.code
                } else {
                    ReasonCode::UnspecifiedError
                };
                warn!(client_id = %self.client_id, tenant = %self.identity.tenant, topic = topic.unwrap_or("(already routed)"), packet_id, ?code, reason = %e.reason, "message sink rejected publish");
                match (self.v5(), qos) {
                    (true, QoS::AtMostOnce) => Ok(()),
                    (true, qos) => {
                        let reason = self.reason(e.reason);
                        self.queue(&publish_ack(qos, packet_id, code, reason))
                    }
                    // 3.1.1 has no negative PUBACK: closing is the only refusal.
                    (false, _) => Err(Close::refused(code, e.reason)),
                }
            }
        }
    }

    /// Hands a read batch of prepared PUBLISHes to the sink at once, then routes and
    /// acknowledges (or refuses) each in order. On a refusal that closes the connection
    /// (3.1.1), the messages after it are neither routed nor acknowledged.
    ///
    /// With a two-step sink ([`MessageSink::stage_publish_batch`]) the accepted messages are
    /// routed as soon as they are checked and acknowledged once they are durable: subscribers
    /// do not wait for the disk, the publisher's PUBACK still does.
    async fn publish_batch(&mut self, batch: &mut PublishBatch) -> Result<(), Close> {
        if batch.msgs.is_empty() {
            return Ok(());
        }
        let sink = Arc::clone(&self.t.shared.sink);
        let Staged { accepted, durable } =
            sink.stage_publish_batch(&self.identity, &batch.msgs).await;
        let msgs = std::mem::take(&mut batch.msgs);
        let ids = std::mem::take(&mut batch.ids);
        let mut accepted = accepted.into_iter();
        let Some(durable) = durable else {
            for (msg, packet_id) in msgs.into_iter().zip(ids) {
                let result = accepted.next().unwrap_or_else(too_few_results);
                self.finish_publish(msg, packet_id, result).await?;
            }
            return Ok(());
        };
        // Route now, in order; a 3.1.1 refusal ends the connection, so nothing after it is
        // routed or acknowledged (the durable step still completes for the ones before).
        let mut answers = Vec::with_capacity(msgs.len());
        for (msg, packet_id) in msgs.into_iter().zip(ids) {
            let qos = msg.qos;
            match accepted.next().unwrap_or_else(too_few_results) {
                Ok(()) => {
                    self.route_accepted(msg).await;
                    answers.push((qos, packet_id, None));
                }
                Err(e) => {
                    let closes = !self.v5();
                    answers.push((qos, packet_id, Some((msg.topic, e))));
                    if closes {
                        break;
                    }
                }
            }
        }
        let mut durable = durable.await.into_iter();
        for (qos, packet_id, refusal) in answers {
            let stored = durable.next().unwrap_or_else(too_few_results);
            match refusal {
                Some((topic, e)) => self.acknowledge(qos, packet_id, Some(&topic), Err(e))?,
                None => self.acknowledge(qos, packet_id, None, stored)?,
            }
        }
        Ok(())
    }

    fn on_pubrec(&mut self, a: Ack) -> Result<(), Close> {
        match self.session.outgoing.state(a.packet_id) {
            Some(OutState::Qos2Sent) if a.code.is_error() => {
                self.session.outgoing.complete(a.packet_id);
                Ok(())
            }
            Some(OutState::Qos2Sent | OutState::Released) => {
                self.session.outgoing.release(a.packet_id);
                self.queue(&Packet::PubRel(ack(a.packet_id, ReasonCode::Success, None)))
            }
            _ => self.queue(&Packet::PubRel(ack(
                a.packet_id,
                ReasonCode::PacketIdentifierNotFound,
                None,
            ))),
        }
    }

    async fn on_subscribe(&mut self, s: Subscribe) -> Result<(), Close> {
        // At most one subscription identifier; the decoder rejects 0.
        let sub_id = s.properties.subscription_identifiers.first().copied();
        let mut codes = Vec::with_capacity(s.filters.len());
        let mut granted = Vec::new();
        let mut sys_granted = Vec::new();
        for f in s.filters {
            // `$share/{group}/{filter}`: policy and validity apply to the filter proper.
            let (share, filter) = match topic::shared_subscription(&f.filter) {
                Some((group, inner)) => (
                    Some(group.to_owned()),
                    rewrite_me(&self.identity.principal, inner).unwrap_or_else(|| inner.to_owned()),
                ),
                None => (
                    None,
                    rewrite_me(&self.identity.principal, &f.filter).unwrap_or(f.filter.clone()),
                ),
            };
            if share.is_some() && f.options.no_local {
                // MQTT-3.8.3-4
                return Err(self.protocol_error(
                    ReasonCode::ProtocolError,
                    "no local on a shared subscription",
                ));
            }
            let code = if f.filter.starts_with("$share/") && share.is_none() {
                debug!(filter = %f.filter, "malformed shared subscription");
                ReasonCode::TopicFilterInvalid
            } else if !topic::is_valid_topic_filter(&filter)
                || filter.split('/').count() > MAX_FILTER_LEVELS
            {
                debug!(%filter, "invalid topic filter");
                ReasonCode::TopicFilterInvalid
            } else if share.is_none() && sys::is_sys_filter(&filter) {
                if self.identity.sys_access {
                    // Broker statistics: routed from the broker-wide namespace.
                    if !self.sys_registered {
                        self.t.shared.router.register(
                            SYS_NAMESPACE,
                            self.sub_id,
                            self.deliveries.postbox(),
                        );
                        self.sys_registered = true;
                    }
                    let mut options = f.options;
                    options.qos = options.qos.min(QoS::ExactlyOnce);
                    let entry = SubEntry {
                        options,
                        id: sub_id,
                    };
                    self.t.shared.router.subscribe(
                        SYS_NAMESPACE,
                        self.sub_id,
                        &filter,
                        options,
                        sub_id,
                    );
                    let existed = self
                        .session
                        .subscriptions
                        .make_mut()
                        .insert(filter.clone(), entry)
                        .is_some();
                    sys_granted.push((filter, entry, existed));
                    granted_code(options.qos)
                } else {
                    Metrics::inc(&self.metrics().subscribe_denied_total);
                    warn!(client_id = %self.client_id, tenant = %self.identity.tenant, %filter, "$SYS subscription not authorised");
                    ReasonCode::NotAuthorized
                }
            } else if !self.identity.allows_subscribe(&filter) {
                Metrics::inc(&self.metrics().subscribe_denied_total);
                warn!(client_id = %self.client_id, tenant = %self.identity.tenant, %filter, "subscribe not authorised");
                ReasonCode::NotAuthorized
            } else {
                let mut options = f.options;
                options.qos = options.qos.min(QoS::ExactlyOnce);
                let entry = SubEntry {
                    options,
                    id: sub_id,
                };
                // The router and the session know a shared subscription by its full name.
                let filter = match &share {
                    Some(group) => format!("$share/{group}/{filter}"),
                    None => filter,
                };
                if !self.routed {
                    self.t.shared.router.register(
                        &self.identity.tenant,
                        self.sub_id,
                        self.deliveries.postbox(),
                    );
                    self.routed = true;
                }
                self.t.shared.router.subscribe(
                    &self.identity.tenant,
                    self.sub_id,
                    &filter,
                    options,
                    sub_id,
                );
                debug!(%filter, qos = ?options.qos, "subscribed");
                let code = match options.qos {
                    QoS::AtMostOnce => ReasonCode::GRANTED_QOS0,
                    QoS::AtLeastOnce => ReasonCode::GrantedQoS1,
                    QoS::ExactlyOnce => ReasonCode::GrantedQoS2,
                };
                let existed = self
                    .session
                    .subscriptions
                    .make_mut()
                    .insert(filter.clone(), entry)
                    .is_some();
                if let Some(p) = &self.persistent {
                    p.state.lock().subscriptions.insert(filter.clone(), entry);
                }
                granted.push((filter, entry, existed));
                code
            };
            codes.push(code);
        }
        if let Some(p) = &self.persistent
            && !granted.is_empty()
        {
            // Write-through before SUBACK: the subscription survives a restart once acknowledged.
            let (tenant, cid) = (p.tenant.clone(), p.client_id.clone());
            let subs: Vec<(String, SubEntry)> =
                granted.iter().map(|(f, e, _)| (f.clone(), *e)).collect();
            self.t
                .shared
                .store_write("subscribe", move |s| {
                    for (filter, e) in &subs {
                        s.put_subscription(&tenant, &cid, filter, e.options, e.id)?;
                    }
                    Ok(())
                })
                .await;
        }
        self.queue(&Packet::SubAck(SubAck {
            packet_id: s.packet_id,
            codes,
            properties: Properties::default(),
        }))?;
        let tenant = self.identity.tenant.clone();
        for (filter, entry, existed) in granted {
            // Retained messages are not sent for shared subscriptions (MQTT 5.0 4.8.2).
            if !filter.starts_with("$share/") {
                self.queue_retained(&tenant, &filter, entry, existed);
            }
        }
        for (filter, entry, existed) in sys_granted {
            self.queue_retained(SYS_NAMESPACE, &filter, entry, existed);
        }
        Ok(())
    }

    /// Queues the retained messages matching a new subscription, per its Retain Handling
    /// (MQTT-3.3.1-9, MQTT-3.3.1-10, MQTT-3.3.1-11); they carry RETAIN = 1 (MQTT-3.3.1-8).
    fn queue_retained(&mut self, namespace: &str, filter: &str, entry: SubEntry, existed: bool) {
        let send = match entry.options.retain_handling {
            RetainHandling::SendAtSubscribe => true,
            RetainHandling::SendAtSubscribeIfNew => !existed,
            RetainHandling::DoNotSend => false,
        };
        if !send {
            return;
        }
        for msg in self.t.shared.retained_matching(namespace, filter) {
            let qos = msg.qos.min(entry.options.qos);
            self.pending.push_back(Delivery {
                msg,
                qos,
                retain: true,
                sub_ids: entry.id.into_iter().collect(),
            });
        }
    }

    async fn on_unsubscribe(&mut self, u: Unsubscribe) -> Result<(), Close> {
        let mut codes = Vec::with_capacity(u.filters.len());
        let mut removed = Vec::new();
        for filter in u.filters {
            let filter = match topic::shared_subscription(&filter) {
                Some((group, inner)) => match rewrite_me(&self.identity.principal, inner) {
                    Some(inner) => format!("$share/{group}/{inner}"),
                    None => filter,
                },
                None => rewrite_me(&self.identity.principal, &filter).unwrap_or(filter),
            };
            let namespace = if sys::is_sys_filter(&filter) {
                SYS_NAMESPACE
            } else {
                self.identity.tenant.as_str()
            };
            let existed = self.session.subscriptions.remove(&filter).is_some()
                && self
                    .t
                    .shared
                    .router
                    .unsubscribe(namespace, self.sub_id, &filter);
            if existed
                && namespace != SYS_NAMESPACE
                && let Some(p) = &self.persistent
            {
                p.state.lock().subscriptions.remove(&filter);
                removed.push(filter);
            }
            codes.push(if existed {
                ReasonCode::Success
            } else {
                ReasonCode::NoSubscriptionExisted
            });
        }
        if let Some(p) = &self.persistent
            && !removed.is_empty()
        {
            let (tenant, cid) = (p.tenant.clone(), p.client_id.clone());
            self.t
                .shared
                .store_write("unsubscribe", move |s| {
                    for filter in &removed {
                        s.delete_subscription(&tenant, &cid, filter)?;
                    }
                    Ok(())
                })
                .await;
        }
        self.queue(&Packet::UnsubAck(UnsubAck {
            packet_id: u.packet_id,
            codes,
            properties: Properties::default(),
        }))
    }

    /// Encodes `first` and whatever else is queued, while the in-flight window has room
    /// and the write buffer is not too large.
    fn deliver_batch(&mut self, first: Delivery) -> Result<(), Close> {
        self.deliver(first)?;
        while self.session.outgoing.has_room() && self.t.wlen() < MAX_WRITE_BATCH {
            match self.deliveries.try_recv() {
                Some(d) => self.deliver(d)?,
                None => break,
            }
        }
        Ok(())
    }

    /// Delivers from the pending queue while the in-flight window has room.
    async fn deliver_pending(&mut self) -> Result<(), Close> {
        while self.session.outgoing.has_room() {
            let Some(d) = self.pending.pop_front() else {
                break;
            };
            self.deliver(d)?;
            if self.t.wlen() >= MAX_WRITE_BATCH {
                self.t.flush().await?;
            }
        }
        Ok(())
    }

    /// The PUBLISH for a delivery, or None when the message expired (counted as dropped).
    fn publish_packet(&self, d: &Delivery, packet_id: u16, dup: bool) -> Option<Packet> {
        let msg = &d.msg;
        let v5 = self.v5();
        let mut properties = if v5 {
            msg.properties.clone()
        } else {
            Properties::default()
        };
        if let Some(expiry) = msg.properties.message_expiry_interval {
            let waited = u32::try_from(msg.received_at.elapsed().as_secs()).unwrap_or(u32::MAX);
            if waited >= expiry {
                // MQTT-3.3.2-5: an expired message is not delivered.
                Metrics::inc(&self.metrics().messages_dropped_total);
                debug!(topic = %msg.topic, "message expired before delivery");
                return None;
            }
            if v5 {
                // MQTT-3.3.2-6: forward the remaining lifetime.
                properties.message_expiry_interval = Some(expiry - waited);
            }
        }
        if v5 {
            properties.subscription_identifiers = d.sub_ids.clone();
        }
        Some(Packet::Publish(Publish {
            dup,
            qos: d.qos,
            retain: d.retain,
            topic: msg.topic.clone(),
            packet_id,
            payload: msg.payload.clone(),
            properties,
        }))
    }

    fn deliver(&mut self, d: Delivery) -> Result<(), Close> {
        let packet_id = match d.qos {
            QoS::AtMostOnce => 0,
            _ => self.session.outgoing.next_packet_id(),
        };
        let Some(mut packet) = self.publish_packet(&d, packet_id, false) else {
            return Ok(());
        };
        let topic = &d.msg.topic;
        // Outbound topic alias (5.0): a known alias replaces the topic name.
        let mut new_alias = false;
        if let Packet::Publish(p) = &mut packet
            && let Some((alias, known)) = self.aliases.outbound(topic)
        {
            p.properties.topic_alias = Some(alias);
            if known {
                p.topic.clear();
            }
            new_alias = !known;
        }
        let before = self.t.wlen();
        if let Err(e) = self.t.queue(&packet) {
            self.t.truncate_output(before);
            if new_alias {
                self.aliases.unassign(topic);
            }
            Metrics::inc(&self.metrics().messages_dropped_total);
            warn!(client_id = %self.client_id, tenant = %self.identity.tenant, %topic, error = %e, "could not encode message for client, dropped");
            return Ok(());
        }
        let size = self.t.wlen() - before;
        if self
            .client_max_packet
            .is_some_and(|max| u32::try_from(size).map_or(true, |size| size > max))
        {
            if new_alias {
                self.aliases.unassign(topic);
            }
            self.t.truncate_output(before);
            Metrics::inc(&self.metrics().messages_dropped_total);
            debug!(%topic, size, "message larger than the client's maximum packet size, dropped");
            return Ok(());
        }
        if d.qos != QoS::AtMostOnce {
            self.session.outgoing.commit(packet_id, d);
        }
        Metrics::inc(&self.metrics().messages_delivered_total);
        Ok(())
    }

    /// Tells the client why (5.0), closes the socket, publishes the will if due and notifies
    /// the sink.
    async fn finish(&mut self, close: Close) {
        let description = close.describe();
        match &close {
            Close::ClientDisconnect { .. } | Close::ConnectionLost | Close::Shutdown => {
                debug!(reason = %description, "connection closed")
            }
            Close::Failed(ConnectionError::Io(_)) => {
                debug!(reason = %description, "connection closed")
            }
            _ => {
                info!(client_id = %self.client_id, tenant = %self.identity.tenant, reason = %description, "connection closed")
            }
        }
        if let (true, Some(code)) = (self.v5(), close.disconnect_code()) {
            // Always carry a reason string: besides helping the client, it makes the packet
            // include a property length, which some clients (rumqttc 0.25) require.
            let reason = match &close {
                Close::Refused { reason, .. } => reason.clone(),
                other => other.describe(),
            };
            let disconnect = Packet::Disconnect(Disconnect {
                code,
                properties: Properties {
                    reason_string: Some(reason),
                    ..Properties::default()
                },
            });
            if let Err(e) = self.t.queue(&disconnect) {
                debug!(error = %e, "could not encode DISCONNECT");
            }
        }
        if !matches!(close, Close::Failed(_)) {
            self.t.close().await;
        }
        let will = if close.publishes_will() {
            self.session.will.take().map(|w| *w)
        } else {
            None
        };
        // Cloned, not taken: should this task be aborted half-way, `Drop` still releases it.
        let will = match self.persistent.clone() {
            Some(p) if self.session_expiry > 0 => self.park(&p, will).await,
            Some(p) => {
                // Session expiry 0: the session ends with the connection (MQTT-3.1.2-23).
                // Ended before it is released, so a resuming connection cannot pick it up.
                end_session(&self.t.shared, &p).await;
                self.release(Some(&p));
                will
            }
            None => {
                // Stop routing to this connection before anything slow happens.
                self.release(None);
                will
            }
        };
        if let Some(will) = will {
            publish_will(&self.t.shared, &self.identity, will, Some(self.sub_id)).await;
        }
        let sink = Arc::clone(&self.t.shared.sink);
        if self.notified_connect {
            sink.on_disconnect(&self.identity, &description).await;
        }
    }

    /// Takes a persistent session offline: further messages are queued for it, unacknowledged
    /// and undelivered messages are kept, and the state is written to the store. Returns the
    /// will if it must be published now (no will delay).
    async fn park(
        &mut self,
        p: &Arc<Persistent>,
        will: Option<wulian_mqtt::LastWill>,
    ) -> Option<wulian_mqtt::LastWill> {
        let shared = Arc::clone(&self.t.shared);
        let limits = shared.router.limits();
        let mut overflow = 0;
        {
            // Restored or retained messages not yet sent go first; nothing else can be
            // queued to the session while the router still points at this connection.
            let mut st = p.state.lock();
            for d in self.pending.take() {
                if st.push(d, limits, &shared.router.next_seq).0 != PushOutcome::Queued {
                    overflow += 1;
                }
            }
        }
        overflow += shared
            .router
            .park(&self.identity.tenant, p.sub_id, &mut self.deliveries);
        if overflow > 0 {
            Metrics::add(&shared.metrics.queue_overflow_total, overflow as u64);
        }
        let now_ms = store::now_ms();
        let delay = will
            .as_ref()
            .and_then(|w| w.properties.will_delay_interval)
            .unwrap_or(0);
        let (will_now, snapshot) = {
            let mut st = p.state.lock();
            st.inflight = self.session.outgoing.export();
            st.inbound_qos2 = self.session.inbound_qos2.take().into_iter().collect();
            st.expiry_secs = self.session_expiry;
            st.offline_since = Some(Instant::now());
            st.offline_since_ms = Some(now_ms);
            let will_now = match will {
                Some(w) if delay > 0 => {
                    // MQTT 5.0 3.1.3.2.2: the will waits for the delay or the session's end.
                    let wait = Duration::from_secs(u64::from(delay.min(self.session_expiry)));
                    st.will = Some(PendingWill {
                        will: w,
                        identity: self.identity.clone(),
                        due: Instant::now() + wait,
                    });
                    None
                }
                other => other,
            };
            let snapshot = shared.store.is_some().then(|| {
                let n = st.inflight.len() as u64;
                let base = shared.router.next_seq.fetch_add(n + 1, Ordering::Relaxed);
                (persist::snapshot(p, &st, now_ms, base), base + n)
            });
            (will_now, snapshot)
        };
        if let Some((snapshot, watermark)) = snapshot {
            shared
                .store_write("save session", move |s| {
                    s.save_snapshot(&snapshot, watermark)
                })
                .await;
        }
        // Only now release the session (which marks it offline): a connection resuming it, or
        // a clean start deleting it, comes after the snapshot.
        self.release(Some(p));
        debug!(expiry = self.session_expiry, "persistent session parked");
        will_now
    }

    /// Fans a message the sink accepted out to the tenant's subscribers (and makes what is
    /// queued for offline sessions durable before the caller acknowledges).
    async fn route_accepted(&self, msg: InboundMessage) {
        route_inbound(
            &self.t.shared,
            &self.identity.tenant,
            msg,
            Some(self.sub_id),
        )
        .await;
    }
}

async fn route_inbound(
    shared: &Shared,
    tenant: &str,
    msg: InboundMessage,
    origin: Option<SubscriberId>,
) {
    let routed = RoutedMessage::new(
        msg.topic,
        msg.payload,
        msg.qos,
        msg.retain,
        &msg.properties,
        origin,
    );
    shared.route_durable(tenant, routed).await;
}

/// Publishes a client's will on its behalf (policy check, sink, routing).
pub(crate) async fn publish_will(
    shared: &Shared,
    identity: &Identity,
    will: wulian_mqtt::LastWill,
    origin: Option<SubscriberId>,
) {
    let topic = rewrite_me(&identity.principal, &will.topic).unwrap_or(will.topic);
    if !topic::is_valid_topic_name(&topic) || !identity.allows_publish(&topic) {
        Metrics::inc(&shared.metrics.publish_denied_total);
        warn!(tenant = %identity.tenant, %topic, "will not authorised, dropped");
        return;
    }
    let msg = InboundMessage {
        topic,
        payload: will.payload,
        qos: will.qos,
        retain: will.retain,
        properties: inbound_properties(will.properties),
    };
    match shared.sink.on_publish(identity, &msg).await {
        Ok(()) => {
            debug!(topic = %msg.topic, "will published");
            route_inbound(shared, &identity.tenant, msg, origin).await;
        }
        Err(e) => {
            Metrics::inc(&shared.metrics.publish_rejected_total);
            warn!(topic = %msg.topic, code = ?e.code, reason = %e.reason, "message sink rejected will");
        }
    }
}

fn granted_code(qos: QoS) -> ReasonCode {
    match qos {
        QoS::AtMostOnce => ReasonCode::GRANTED_QOS0,
        QoS::AtLeastOnce => ReasonCode::GrantedQoS1,
        QoS::ExactlyOnce => ReasonCode::GrantedQoS2,
    }
}

/// Properties of a client PUBLISH as handed to the sink (connection-scoped ones removed).
fn inbound_properties(mut p: Properties) -> Properties {
    p.topic_alias = None;
    p.subscription_identifiers.clear();
    p
}

fn ack(packet_id: u16, code: ReasonCode, reason: Option<String>) -> Ack {
    Ack {
        packet_id,
        code,
        properties: Properties {
            reason_string: reason,
            ..Properties::default()
        },
    }
}

/// PUBACK (QoS 1) or PUBREC (QoS 2) for an inbound publish.
/// A sink answered for fewer messages than it was given: the rest are refused.
fn too_few_results() -> Result<(), SinkError> {
    Err(SinkError {
        code: ReasonCode::ImplementationSpecificError,
        reason: "message sink returned too few results".to_string(),
    })
}

fn publish_ack(qos: QoS, packet_id: u16, code: ReasonCode, reason: Option<String>) -> Packet {
    publish_packet_ack(qos, ack(packet_id, code, reason))
}

/// PUBREC for QoS 2, else PUBACK.
fn publish_packet_ack(qos: QoS, a: Ack) -> Packet {
    match qos {
        QoS::ExactlyOnce => Packet::PubRec(a),
        _ => Packet::PubAck(a),
    }
}

fn packet_name(p: &Packet) -> &'static str {
    match p {
        Packet::Connect(_) => "CONNECT",
        Packet::ConnAck(_) => "CONNACK",
        Packet::Publish(_) => "PUBLISH",
        Packet::PubAck(_) => "PUBACK",
        Packet::PubRec(_) => "PUBREC",
        Packet::PubRel(_) => "PUBREL",
        Packet::PubComp(_) => "PUBCOMP",
        Packet::Subscribe(_) => "SUBSCRIBE",
        Packet::SubAck(_) => "SUBACK",
        Packet::Unsubscribe(_) => "UNSUBSCRIBE",
        Packet::UnsubAck(_) => "UNSUBACK",
        Packet::PingReq => "PINGREQ",
        Packet::PingResp => "PINGRESP",
        Packet::Disconnect(_) => "DISCONNECT",
        Packet::Auth(_) => "AUTH",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Refuse;

    #[async_trait::async_trait]
    impl crate::auth::Authenticator for Refuse {
        async fn authenticate(&self, _req: &ConnectRequest) -> Result<Identity, ReasonCode> {
            Err(ReasonCode::NotAuthorized)
        }
    }

    #[async_trait::async_trait]
    impl crate::auth::MessageSink for Refuse {
        async fn on_publish(&self, _i: &Identity, _m: &InboundMessage) -> Result<(), SinkError> {
            Err(SinkError {
                code: ReasonCode::UnspecifiedError,
                reason: String::new(),
            })
        }
    }

    /// An idle client keeps its connection task's future for as long as it is connected: it
    /// must stay the session loop's resting state, with the handshake, CONNACK and clean-up
    /// boxed (docs/benchmarks.md, "Idle connection memory").
    #[tokio::test]
    async fn idle_connection_future_stays_small() {
        let broker = crate::Broker::new(
            crate::BrokerConfig::default(),
            Arc::new(Refuse),
            Arc::new(Refuse),
        );
        let shared = broker.shared_for_tests();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stream = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let permit = Arc::clone(&shared.connection_slots)
            .try_acquire_owned()
            .unwrap();
        let permits = Permits {
            _broker: permit,
            _listener: None,
        };
        let remote = stream.local_addr().unwrap();
        let transport = TransportInfo::default();
        let accepted = Accepted::new(&shared, 1, stream, remote, transport, permits);
        let connection = run(accepted, CancellationToken::new());
        let future = std::mem::size_of_val(&connection);
        let active = std::mem::size_of::<Active<tokio::net::TcpStream>>();
        eprintln!("connection future {future} B, Active {active} B");
        // tokio allocates a task as its future plus ~104 bytes of header and trailer, rounded
        // up to 128-byte cache lines, and the listener's task tracker adds 8 bytes: up to 528
        // bytes (release builds are ~8 smaller) the task takes 640.
        assert!(active <= 336, "Active<TcpStream> is {active} bytes");
        assert!(future <= 528, "the connection future is {future} bytes");
    }

    #[test]
    fn peek_level() {
        // CONNECT, remaining length 0x10, "MQTT", level 5
        let buf = [0x10, 0x10, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x02];
        assert_eq!(peek_connect_level(&buf), Some(5));
        assert_eq!(peek_connect_level(&buf[..8]), None);
        assert_eq!(peek_connect_level(&[0x30, 0x00]), None);
        assert_eq!(
            peek_connect_level(&[0x10, 0xff, 0xff, 0xff, 0xff, 0x01]),
            None
        );
        assert_eq!(peek_connect_level(&[]), None);
    }
}
