//! wulian's MQTT broker: devices connect with MQTT 3.1.1 or 5.0, are authenticated by the
//! server's [`Authenticator`], publish into the server's [`MessageSink`], and receive
//! server-originated messages through [`Broker::publish`].
//!
//! One module per job so later issues (TLS/WebSocket listeners, persistent sessions,
//! retained messages, shared subscriptions) are additions rather than rewrites:
//! - `listener`: accept loop, connection limit, graceful shutdown;
//! - `connection`: one task per connection (decode, state machine, encode);
//! - `session`: per-client MQTT state and the registry of connected clients;
//! - `router`: per-tenant subscription trees and non-blocking fan-out;
//! - `auth`: the traits the server implements and the topic policy;
//! - `config`, `metrics`, `error`.

mod auth;
mod config;
mod connection;
mod error;
mod listener;
mod metrics;
mod router;
mod session;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

pub use auth::{
    Authenticator, ConnectRequest, ConnectionInfo, Identity, InboundMessage, MessageSink,
    Principal, SinkError, TopicPolicy,
};
pub use config::BrokerConfig;
pub use metrics::MetricsSnapshot;
pub use wulian_mqtt::{Properties, Protocol, QoS, ReasonCode};

use metrics::Metrics;
use router::{RoutedMessage, Router};
use session::SessionRegistry;

/// A message the server publishes to clients (e.g. a command to a device).
#[derive(Clone, Debug)]
pub struct OutboundMessage {
    pub topic: String,
    pub payload: bytes::Bytes,
    pub qos: QoS,
    pub retain: bool,
    /// MQTT 5.0 properties forwarded to 5.0 subscribers (response topic, correlation data,
    /// user properties, content type, payload format indicator, message expiry).
    pub properties: Properties,
}

/// State shared by the listeners and all connection tasks.
pub(crate) struct Shared {
    pub(crate) config: BrokerConfig,
    pub(crate) auth: Arc<dyn Authenticator>,
    pub(crate) sink: Arc<dyn MessageSink>,
    pub(crate) router: Router,
    pub(crate) sessions: SessionRegistry,
    pub(crate) metrics: Metrics,
    pub(crate) next_conn_id: AtomicU64,
    /// One permit per open connection (`max_connections`).
    pub(crate) connection_slots: Arc<Semaphore>,
}

impl Shared {
    /// Routes a message within a tenant, counting drops; returns how many sessions got it.
    pub(crate) fn route(&self, tenant: &str, msg: RoutedMessage) -> usize {
        let outcome = self.router.route(tenant, Arc::new(msg));
        if outcome.dropped > 0 {
            Metrics::add(&self.metrics.messages_dropped_total, outcome.dropped as u64);
        }
        outcome.queued
    }
}

/// The MQTT broker. Cheap to clone; all clones share one state.
#[derive(Clone)]
pub struct Broker {
    shared: Arc<Shared>,
}

impl Broker {
    pub fn new(
        config: BrokerConfig,
        auth: Arc<dyn Authenticator>,
        sink: Arc<dyn MessageSink>,
    ) -> Broker {
        let slots = Arc::new(Semaphore::new(
            config.max_connections.min(Semaphore::MAX_PERMITS),
        ));
        Broker {
            shared: Arc::new(Shared {
                config,
                auth,
                sink,
                router: Router::default(),
                sessions: SessionRegistry::default(),
                metrics: Metrics::default(),
                next_conn_id: AtomicU64::new(1),
                connection_slots: slots,
            }),
        }
    }

    /// Accept loop on an already-bound listener until `shutdown` is cancelled; then stop
    /// accepting, send DISCONNECT ServerShuttingDown (0x8B) to 5.0 clients, close all
    /// connections and return once they are gone (at most about 5 s).
    pub async fn serve(
        &self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        listener::serve(Arc::clone(&self.shared), listener, shutdown).await
    }

    /// Server-originated publish into `tenant`'s namespace. Returns how many sessions it was
    /// queued to (0 for an invalid topic name).
    pub fn publish(&self, tenant: &str, msg: OutboundMessage) -> usize {
        if !wulian_mqtt::topic::is_valid_topic_name(&msg.topic) {
            tracing::warn!(tenant, topic = %msg.topic, "server publish to invalid topic name ignored");
            return 0;
        }
        let routed = RoutedMessage::new(
            msg.topic,
            msg.payload,
            msg.qos,
            msg.retain,
            &msg.properties,
            None,
        );
        self.shared.route(tenant, routed)
    }

    /// Current counter values.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.shared.metrics.snapshot()
    }

    /// Closes the connection of `client_id` in `tenant` (MQTT 5 clients get DISCONNECT with
    /// `code`, e.g. `AdministrativeAction` when a device is deleted or its token rotated).
    /// Returns whether such a client was connected.
    pub fn disconnect(&self, tenant: &str, client_id: &str, code: ReasonCode) -> bool {
        self.shared.sessions.kick(tenant, client_id, code)
    }

    /// Is a client with this id currently connected in `tenant`?
    pub fn is_connected(&self, tenant: &str, client_id: &str) -> bool {
        self.shared.sessions.is_connected(tenant, client_id)
    }
}
