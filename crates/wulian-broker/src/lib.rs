//! wulian's MQTT broker: devices connect with MQTT 3.1.1 or 5.0, are authenticated by the
//! server's [`Authenticator`], publish into the server's [`MessageSink`], and receive
//! server-originated messages through [`Broker::publish`].
//!
//! The protocol is complete for both levels: persistent sessions (3.1.1 clean session = 0,
//! 5.0 clean start + session expiry) with bounded offline queues and redelivery, retained
//! messages, will delay, message expiry, topic aliases, subscription identifiers, shared
//! subscriptions, Receive Maximum, a per-client publish rate limit and `$SYS` statistics.
//! With [`BrokerConfig::data_dir`] set ([`Broker::open`]) sessions, their queues and
//! retained messages survive a restart.
//!
//! One module per job:
//! - `listener`: accept loop, connection limit, graceful shutdown;
//! - `connection`: one task per connection (decode, state machine, encode);
//! - `session`: per-client MQTT state, persistent sessions and the registry of clients;
//! - `mailbox`: a connection's inbox (routed deliveries and close requests);
//! - `router`: per-tenant subscription trees (with share groups) and non-blocking fan-out;
//! - `retained`: retained messages per tenant;
//! - `store`, `persist`: the durable [`Store`] (SQLite) and the glue to in-memory state;
//! - `housekeeping`: keep-alive expiry, session expiry, delayed wills and the `$SYS` ticker
//!   (`sys`);
//! - `alias`, `ratelimit`: per-connection topic aliases and publish rate limit;
//! - `auth`: the traits the server implements and the topic policy;
//! - `config`, `metrics`, `error`.

mod alias;
mod auth;
mod config;
mod connection;
mod error;
mod housekeeping;
mod lane;
mod listener;
mod mailbox;
mod metrics;
mod persist;
mod ratelimit;
mod retained;
mod router;
mod session;
mod store;
mod sys;
mod tls;
mod ws;
pub mod x509;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64};

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

pub use auth::{
    Authenticator, ConnectRequest, ConnectionInfo, DEVICE_ID_LEVEL, Durable, Identity,
    InboundMessage, MessageSink, Principal, SinkError, Staged, TopicPolicy, TransportInfo,
    TransportKind,
};
pub use config::{BrokerConfig, QueueOverflow};
pub use listener::{DEFAULT_WS_PATH, ListenerConfig, Transport};
pub use metrics::MetricsSnapshot;
pub use retained::RetainedSource;
pub use store::{SqliteStore, Store, StoreError, StoredMessage, StoredRetained, StoredSession};
pub use tls::{
    ClientAuth, ClientCertAuthorities, TlsConfig, TlsError, certificates_from_pem, chain_verifies,
    check_client_ca,
};

pub use wulian_mqtt::{Properties, Protocol, QoS, ReasonCode};

use metrics::Metrics;
use retained::Retained;
use router::{RoutedMessage, Router};
use session::{QueueLimits, SessionRegistry};

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

impl OutboundMessage {
    /// A JSON document at QoS 1 with content type `application/json`: what the platform
    /// publishes to devices and applications (commands, twins, alarms, presence, OTA jobs).
    pub fn json(topic: String, payload: impl Into<bytes::Bytes>, retain: bool) -> OutboundMessage {
        OutboundMessage {
            topic,
            payload: payload.into(),
            qos: QoS::AtLeastOnce,
            retain,
            properties: Properties {
                content_type: Some("application/json".to_string()),
                ..Properties::default()
            },
        }
    }
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
    /// One permit per authentication in progress (`max_concurrent_auth`).
    pub(crate) auth_slots: Semaphore,
    /// Durable state (None: in memory only).
    pub(crate) store: Option<Arc<dyn Store>>,
    pub(crate) retained: Retained,
    /// Answers retained messages for the topics it claims (see [`RetainedSource`]).
    pub(crate) retained_source: std::sync::OnceLock<Arc<dyn RetainedSource>>,
    /// The housekeeping task (session expiry, delayed wills) runs once per broker.
    pub(crate) housekeeping_started: AtomicBool,
    pub(crate) started_at: std::time::Instant,
    /// The application lanes (each started when first needed); None when disabled.
    pub(crate) lanes: Option<lane::Lanes>,
}

/// Messages queued for offline persistent sessions by one routing call.
type Parked = Vec<(Arc<session::Persistent>, session::Queued)>;

impl Shared {
    /// The application lane for a new connection (see [`lane::Lanes::pick`]); None when
    /// disabled by the configuration or when no lane's thread could start (application
    /// connections then stay where they are).
    pub(crate) fn lane(&self) -> Option<&lane::Lane> {
        self.lanes.as_ref()?.pick()
    }

    /// Milliseconds since the broker started: the clock of keep-alive deadlines.
    pub(crate) fn clock_ms(&self) -> u64 {
        u64::try_from(self.started_at.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Routes a message within a tenant, counting drops. Returns how many sessions got it and
    /// the messages queued for offline sessions, which the caller makes durable.
    fn route_inner(&self, tenant: &str, msg: RoutedMessage) -> (usize, Parked) {
        let msg = Arc::new(msg);
        if msg.retain && !self.claimed(&msg.topic) {
            self.retained.set(tenant, Arc::clone(&msg));
            self.metrics.retained_messages.store(
                self.retained.len() as u64,
                std::sync::atomic::Ordering::Relaxed,
            );
        }
        let outcome = self.route_waking(tenant, msg);
        if outcome.dropped > 0 {
            Metrics::add(&self.metrics.messages_dropped_total, outcome.dropped as u64);
        }
        if outcome.overflow > 0 {
            Metrics::add(&self.metrics.queue_overflow_total, outcome.overflow as u64);
        }
        if !outcome.parked.is_empty() {
            Metrics::add(
                &self.metrics.messages_queued_total,
                outcome.parked.len() as u64,
            );
        }
        (outcome.queued, outcome.parked)
    }

    /// Routes `msg`, then wakes its subscribers' tasks, those of each application lane
    /// together ([`lane::Wakes`]).
    fn route_waking(&self, tenant: &str, msg: Arc<RoutedMessage>) -> router::RouteOutcome {
        let mut wakes = lane::Wakes::default();
        let outcome = self.router.route(tenant, msg, &mut wakes);
        if let Some(lanes) = &self.lanes {
            lanes.wake(wakes);
        }
        outcome
    }

    /// Publishes into the broker-wide `$SYS` namespace (memory only: regenerated anyway).
    pub(crate) fn route_sys(&self, msg: RoutedMessage) {
        let msg = Arc::new(msg);
        self.retained.set(sys::SYS_NAMESPACE, Arc::clone(&msg));
        let outcome = self.route_waking(sys::SYS_NAMESPACE, msg);
        if outcome.dropped > 0 {
            Metrics::add(&self.metrics.messages_dropped_total, outcome.dropped as u64);
        }
    }

    /// The counters, with `connections_current` read off the connection limit's semaphore
    /// (every open connection holds one permit), so a connection needs no guard of its own.
    pub(crate) fn metrics_snapshot(&self) -> MetricsSnapshot {
        let limit = self.config.max_connections.min(Semaphore::MAX_PERMITS);
        let open = limit.saturating_sub(self.connection_slots.available_permits());
        self.metrics.snapshot(open as u64)
    }

    /// Whether a [`RetainedSource`] answers for `topic` (a tenant topic; `$SYS` is ours).
    pub(crate) fn claimed(&self, topic: &str) -> bool {
        self.retained_source
            .get()
            .is_some_and(|source| source.claims(topic))
    }

    /// The retained messages for a new subscription in a tenant's namespace: the stored ones
    /// and those of the retained source, by topic.
    pub(crate) fn retained_matching(&self, tenant: &str, filter: &str) -> Vec<Arc<RoutedMessage>> {
        let mut out = self.retained.matching(tenant, filter);
        let Some(source) = self.retained_source.get() else {
            return out;
        };
        if tenant == sys::SYS_NAMESPACE {
            return out;
        }
        // Stored before the source was attached (or by an older version): the source wins.
        out.retain(|m| !source.claims(&m.topic));
        let answered = source.matching(tenant, filter);
        if answered.is_empty() {
            return out;
        }
        out.extend(answered.into_iter().map(|m| {
            Arc::new(RoutedMessage::new(
                m.topic,
                m.payload,
                m.qos,
                true,
                &m.properties,
                None,
            ))
        }));
        out.sort_by(|a, b| a.topic.cmp(&b.topic));
        out
    }

    /// Routes a message and waits until what was queued for offline persistent sessions (and
    /// a retained message) is durable; used before acknowledging a client's PUBLISH.
    pub(crate) async fn route_durable(&self, tenant: &str, msg: RoutedMessage) -> usize {
        let retained = (msg.retain && !self.claimed(&msg.topic)).then(|| msg.retained_copy());
        let (queued, parked) = self.route_inner(tenant, msg);
        if let Some(copy) = retained {
            self.persist_retained(tenant, &copy).await;
        }
        self.persist_parked(parked).await;
        queued
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
        let auth_slots =
            Semaphore::new(config.max_concurrent_auth.clamp(1, Semaphore::MAX_PERMITS));
        let limits = QueueLimits {
            max: config.max_queued_messages,
            overflow: config.queue_overflow,
        };
        let lanes = config
            .application_lane
            .then(|| lane::Lanes::new(config.application_lane_threads));
        Broker {
            shared: Arc::new(Shared {
                config,
                auth,
                sink,
                router: Router::new(limits, 1),
                sessions: SessionRegistry::default(),
                metrics: Metrics::default(),
                next_conn_id: AtomicU64::new(1),
                connection_slots: slots,
                auth_slots,
                store: None,
                retained: Retained::default(),
                retained_source: std::sync::OnceLock::new(),
                housekeeping_started: AtomicBool::new(false),
                started_at: std::time::Instant::now(),
                lanes,
            }),
        }
    }

    /// Like [`Broker::new`], but with `config.data_dir` set opens the durable store there and
    /// restores persistent sessions, their queued messages and retained messages (blocking:
    /// call it at startup). Without a data dir this is `new`.
    pub fn open(
        config: BrokerConfig,
        auth: Arc<dyn Authenticator>,
        sink: Arc<dyn MessageSink>,
    ) -> Result<Broker, StoreError> {
        let store: Option<Arc<dyn Store>> = match &config.data_dir {
            Some(dir) => Some(Arc::new(SqliteStore::open(dir)?)),
            None => None,
        };
        Broker::with_store(config, auth, sink, store)
    }

    /// A broker on a given store implementation (None: in memory only).
    pub fn with_store(
        config: BrokerConfig,
        auth: Arc<dyn Authenticator>,
        sink: Arc<dyn MessageSink>,
        store: Option<Arc<dyn Store>>,
    ) -> Result<Broker, StoreError> {
        let mut broker = Broker::new(config, auth, sink);
        if let Some(store) = store
            && let Some(shared) = Arc::get_mut(&mut broker.shared)
        {
            persist::restore(shared, store.as_ref())?;
            shared.store = Some(store);
        }
        Ok(broker)
    }

    /// Accept loop on an already-bound listener until `shutdown` is cancelled; then stop
    /// accepting, send DISCONNECT ServerShuttingDown (0x8B) to 5.0 clients, close all
    /// connections and return once they are gone (at most about 5 s).
    pub async fn serve(
        &self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        self.serve_listener(listener, ListenerConfig::tcp(), shutdown)
            .await
    }

    /// Like [`serve`](Self::serve), for a listener of any transport with its own limits.
    /// Several listeners may serve one broker at once.
    pub async fn serve_listener(
        &self,
        listener: TcpListener,
        config: ListenerConfig,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        housekeeping::start(&self.shared, &shutdown);
        listener::serve(Arc::clone(&self.shared), listener, config, shutdown).await
    }

    /// Lets `source` answer retained messages for the topics it claims (once; later calls are
    /// ignored). Messages already stored for those topics are dropped, from the store too.
    pub fn set_retained_source(&self, source: Arc<dyn RetainedSource>) {
        if self.shared.retained_source.set(source).is_err() {
            tracing::warn!("a retained source is already attached; the new one is ignored");
            return;
        }
        let removed = self
            .shared
            .retained
            .remove_claimed(|t| self.shared.claimed(t));
        self.shared.metrics.retained_messages.store(
            self.shared.retained.len() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        if removed.is_empty() || self.shared.store.is_none() {
            return;
        }
        tracing::info!(
            count = removed.len(),
            "Retained messages now answered by the platform dropped from the broker's store."
        );
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let shared = Arc::clone(&self.shared);
            rt.spawn(async move {
                shared
                    .store_write("delete retained", move |s| s.delete_retained(&removed))
                    .await;
            });
        }
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
        if self.shared.store.is_none() {
            return self.shared.route_inner(tenant, routed).0;
        }
        // Messages queued for offline sessions (and a retained message) become durable in
        // the background: this call does not wait.
        let retained =
            (routed.retain && !self.shared.claimed(&routed.topic)).then(|| routed.retained_copy());
        let (queued, parked) = self.shared.route_inner(tenant, routed);
        if (!parked.is_empty() || retained.is_some())
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            let shared = Arc::clone(&self.shared);
            let tenant = tenant.to_owned();
            rt.spawn(async move {
                if let Some(copy) = retained {
                    shared.persist_retained(&tenant, &copy).await;
                }
                shared.persist_parked(parked).await;
            });
        }
        queued
    }

    /// Current counter values.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.shared.metrics_snapshot()
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

#[cfg(test)]
impl Broker {
    pub(crate) fn shared_for_tests(&self) -> Arc<Shared> {
        Arc::clone(&self.shared)
    }
}
