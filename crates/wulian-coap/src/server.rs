//! The UDP loop: read a datagram, let the message layer decide what it is, answer
//! retransmissions from the exchange cache, apply the per-peer rate and the in-flight limit,
//! and process each request on its own task (telemetry waits for fsync; others need not wait
//! behind it).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use coap_lite::{MessageType, Packet, ResponseType};
use parking_lot::Mutex;
use tokio::net::UdpSocket;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use wulian_ingest::{CommandService, Pipeline};
use wulian_registry::Registry;

use crate::dedup::{DedupCache, Seen};
use crate::handler::{self, Services};
use crate::limits::{CoapLimits, EXCHANGE_LIFETIME};
use crate::metrics::CoapMetrics;
use crate::rate::RateLimiter;
use crate::request;
use crate::wire::{self, Inbound, Reply};

/// Pause after a failing receive, so a broken socket does not spin the loop.
const RECEIVE_ERROR_PAUSE: Duration = Duration::from_millis(10);

/// The CoAP endpoint. Cheap to clone.
#[derive(Clone)]
pub struct CoapServer {
    shared: Arc<Shared>,
}

struct Shared {
    services: Services,
    // Short critical sections only, never across an await.
    dedup: Mutex<DedupCache>,
    rate: Mutex<RateLimiter>,
    in_flight: Arc<Semaphore>,
    /// Message ids of our Non-confirmable responses.
    next_id: AtomicU16,
}

impl CoapServer {
    pub fn new(
        registry: Arc<Registry>,
        pipeline: Arc<Pipeline>,
        commands: Arc<CommandService>,
        limits: CoapLimits,
    ) -> CoapServer {
        let dedup = DedupCache::new(limits.dedup_capacity, EXCHANGE_LIFETIME);
        let rate = RateLimiter::new(limits.peer_rate, limits.peer_burst, limits.max_peers);
        let in_flight = Arc::new(Semaphore::new(
            limits.max_in_flight.clamp(1, Semaphore::MAX_PERMITS),
        ));
        // §4.4: message ids should not start at a predictable value.
        let first_id = u16::try_from(wulian_common::time::now_ms() & 0xFFFF).unwrap_or(0);
        CoapServer {
            shared: Arc::new(Shared {
                services: Services {
                    registry,
                    pipeline,
                    commands,
                    limits,
                    metrics: Arc::new(CoapMetrics::default()),
                },
                dedup: Mutex::new(dedup),
                rate: Mutex::new(rate),
                in_flight,
                next_id: AtomicU16::new(first_id),
            }),
        }
    }

    /// The endpoint's counters, for /api/v1/metrics.
    pub fn metrics(&self) -> Arc<CoapMetrics> {
        Arc::clone(&self.shared.services.metrics)
    }

    /// Serves requests on an already-bound socket until `shutdown` is cancelled, then waits
    /// for the requests in progress to be answered.
    pub async fn serve(&self, socket: UdpSocket, shutdown: CancellationToken) -> io::Result<()> {
        let socket = Arc::new(socket);
        let tasks = TaskTracker::new();
        let max = self.shared.services.limits.max_message_bytes;
        // One byte more than allowed tells an oversized datagram from one that fits exactly.
        let mut buf = vec![0u8; max + 1];
        loop {
            let received = tokio::select! {
                _ = shutdown.cancelled() => break,
                received = socket.recv_from(&mut buf) => received,
            };
            let (len, peer) = match received {
                Ok(received) => received,
                Err(error) => {
                    // E.g. an ICMP port unreachable for an earlier response: not fatal.
                    tracing::debug!(error = %error, "CoAP receive failed.");
                    tokio::time::sleep(RECEIVE_ERROR_PAUSE).await;
                    continue;
                }
            };
            let metrics = &self.shared.services.metrics;
            CoapMetrics::add(&metrics.datagrams_received);
            let datagram = &buf[..len];
            if len > max {
                self.oversized(&socket, datagram, peer).await;
                continue;
            }
            match wire::classify(datagram) {
                Inbound::Ignore { malformed } => {
                    if malformed {
                        CoapMetrics::add(&metrics.malformed);
                    }
                }
                Inbound::Reset {
                    message_id,
                    malformed,
                } => {
                    if malformed {
                        CoapMetrics::add(&metrics.malformed);
                    }
                    send(&socket, &wire::reset(message_id), peer).await;
                }
                Inbound::Request(packet) => self.dispatch(&socket, &tasks, packet, peer).await,
            }
        }
        tasks.close();
        tasks.wait().await;
        Ok(())
    }

    /// A request larger than the limit: 4.13 when its header and token are readable.
    async fn oversized(&self, socket: &UdpSocket, datagram: &[u8], peer: SocketAddr) {
        let metrics = &self.shared.services.metrics;
        CoapMetrics::add(&metrics.oversized);
        let Some(header) = wire::peek_header(datagram) else {
            return;
        };
        let Some(token) = wire::peek_token(datagram, &header) else {
            return;
        };
        if header.version != 1 || !header.is_request {
            return;
        }
        CoapMetrics::add(&metrics.errors);
        let reply = request::too_large(self.shared.services.limits.max_message_bytes);
        let bytes = reply.encode(
            header.confirmable,
            header.message_id,
            self.fresh_id(),
            &token,
        );
        send(socket, &bytes, peer).await;
    }

    async fn dispatch(
        &self,
        socket: &Arc<UdpSocket>,
        tasks: &TaskTracker,
        packet: Packet,
        peer: SocketAddr,
    ) {
        let shared = &self.shared;
        let metrics = &shared.services.metrics;
        let confirmable = packet.header.get_type() == MessageType::Confirmable;
        let message_id = packet.header.message_id;
        let now = Instant::now();
        let (seen, evicted) = shared.dedup.lock().check(peer, message_id, now);
        if evicted > 0 {
            metrics.dedup_evicted.fetch_add(evicted, Ordering::Relaxed);
        }
        match seen {
            Seen::New => {}
            Seen::InProgress => {
                CoapMetrics::add(&metrics.duplicates);
                return;
            }
            Seen::Answered(bytes) => {
                CoapMetrics::add(&metrics.duplicates);
                send(socket, &bytes, peer).await;
                return;
            }
        }
        let admitted = shared.rate.lock().admit(peer.ip(), now);
        let permit = match admitted {
            Ok(()) => Arc::clone(&shared.in_flight)
                .try_acquire_owned()
                .map_err(|_| 1),
            Err(wait) => Err(wait),
        };
        let permit = match permit {
            Ok(permit) => permit,
            Err(wait) => {
                shared.dedup.lock().forget(peer, message_id);
                CoapMetrics::add(&metrics.throttled);
                // A Non-confirmable request needs no answer; a refusal would only add traffic.
                if confirmable {
                    let reply = Reply::error(
                        ResponseType::ServiceUnavailable,
                        "too many requests; retry after Max-Age seconds",
                    )
                    .with_max_age(wait);
                    let bytes = reply.encode(true, message_id, 0, packet.get_token());
                    send(socket, &bytes, peer).await;
                }
                return;
            }
        };
        let (server, socket) = (self.clone(), Arc::clone(socket));
        tasks.spawn(async move {
            let services = &server.shared.services;
            let reply = handler::handle(services, &packet).await;
            CoapMetrics::add(&services.metrics.requests);
            if reply.is_error() {
                CoapMetrics::add(&services.metrics.errors);
            }
            let mut bytes = reply.encode(confirmable, message_id, server.fresh_id(), packet.get_token());
            if bytes.len() > services.limits.max_message_bytes {
                // Budgets keep responses within the limit; this guards against a mistake.
                tracing::error!(bytes = bytes.len(), "CoAP response over the message size limit.");
                bytes = Reply::error(ResponseType::InternalServerError, "response too large")
                    .encode(confirmable, message_id, server.fresh_id(), packet.get_token());
            }
            tracing::debug!(%peer, code = %coap_lite::MessageClass::Response(reply.code), "CoAP request answered.");
            send(&socket, &bytes, peer).await;
            server.shared.dedup.lock().complete(peer, message_id, bytes);
            drop(permit);
        });
    }

    fn fresh_id(&self) -> u16 {
        self.shared.next_id.fetch_add(1, Ordering::Relaxed)
    }
}

async fn send(socket: &UdpSocket, bytes: &[u8], peer: SocketAddr) {
    if bytes.is_empty() {
        // Encoding failed (a bug, logged where it happened): an empty datagram helps no one.
        return;
    }
    if let Err(error) = socket.send_to(bytes, peer).await {
        tracing::debug!(%peer, error = %error, "CoAP send failed.");
    }
}
