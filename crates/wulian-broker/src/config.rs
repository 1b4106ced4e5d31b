//! Broker tunables.
//!
//! Kept in one plain struct so the server wiring can fill it from its own configuration file
//! and tests can shrink timeouts; every limit the broker enforces on clients lives here.

use std::path::PathBuf;
use std::time::Duration;

/// What happens when a message arrives for an offline session whose queue is full.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum QueueOverflow {
    /// Drop the oldest queued message to make room (the newest data wins).
    #[default]
    DropOldest,
    /// Drop the arriving message.
    DropNewest,
}

/// Limits and timeouts of one broker instance (shared by all of its listeners).
#[derive(Clone, Debug)]
pub struct BrokerConfig {
    /// Maximum number of simultaneously open client connections; further connections are
    /// accepted and closed immediately.
    pub max_connections: usize,
    /// How long a fresh connection may take to deliver its CONNECT packet.
    pub connect_timeout: Duration,
    /// Largest packet (in bytes, fixed header included) accepted from a client; announced to
    /// MQTT 5.0 clients as Maximum Packet Size.
    pub max_packet_size: usize,
    /// Receive Maximum announced to 5.0 clients (inbound QoS 2 window) and the cap on
    /// unacknowledged outgoing QoS 1/2 messages per connection.
    pub max_inflight: u16,
    /// Capacity of each connection's outgoing message queue; messages routed to a full queue
    /// are dropped (and counted) rather than blocking the publisher.
    pub outgoing_queue: usize,
    /// Upper bound on the keep alive a 5.0 client may ask for (0 = no cap). When the client
    /// asks for more (or for none) the broker answers with Server Keep Alive.
    pub max_keep_alive: u16,
    /// Where persistent sessions, their queued messages and retained messages are stored
    /// (`broker.sqlite`); None keeps them in memory only (lost on restart).
    pub data_dir: Option<PathBuf>,
    /// Upper bound on the session expiry interval a client may ask for (seconds); also the
    /// expiry of MQTT 3.1.1 persistent sessions (clean session = 0). 0 disables persistent
    /// sessions; `u32::MAX` lets sessions live forever.
    pub max_session_expiry_secs: u32,
    /// Most messages queued for one offline persistent session.
    pub max_queued_messages: usize,
    /// Which message to drop when that queue is full.
    pub queue_overflow: QueueOverflow,
    /// Topic Alias Maximum announced to 5.0 clients (aliases they may use towards us; 0 =
    /// none).
    pub topic_alias_maximum: u16,
    /// PUBLISH packets per second one client may send (0 = unlimited); beyond it the client
    /// is disconnected (5.0: 0x96 Message rate too high).
    pub max_publish_rate: u32,
    /// Payload bytes per second one client may publish (0 = unlimited); same consequence.
    pub max_publish_bytes_rate: u64,
    /// How often `$SYS/broker/...` statistics are published (zero: never).
    pub sys_interval: Duration,
    /// Authentications in progress at once (at least 1); further CONNECTs wait their turn
    /// within the connect timeout. Authenticators run on the blocking pool: without a bound, a
    /// burst of connects starts a thread for each (each with its stack and allocator arena).
    pub max_concurrent_auth: usize,
    /// Serve application connections (API-key clients) over plain TCP on a thread of their
    /// own, so a fleet's publishing devices cannot delay them (see `lane.rs`).
    pub application_lane: bool,
    /// Threads of the application lane (0: one per core, at most four); a new connection goes
    /// to the least busy.
    pub application_lane_threads: usize,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            max_connections: 10_000,
            connect_timeout: Duration::from_secs(10),
            max_packet_size: 1024 * 1024,
            max_inflight: 64,
            outgoing_queue: 1000,
            max_keep_alive: 0,
            data_dir: None,
            max_session_expiry_secs: 7 * 24 * 3600,
            max_queued_messages: 1000,
            queue_overflow: QueueOverflow::DropOldest,
            topic_alias_maximum: 32,
            max_publish_rate: 0,
            max_publish_bytes_rate: 0,
            sys_interval: Duration::from_secs(10),
            // Twice the cores, at least 4: authentication is short work on the blocking pool.
            max_concurrent_auth: std::thread::available_parallelism()
                .map_or(4, |n| n.get().saturating_mul(2))
                .max(4),
            application_lane: true,
            application_lane_threads: 0,
        }
    }
}
