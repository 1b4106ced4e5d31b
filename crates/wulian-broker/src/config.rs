//! Broker tunables.
//!
//! Kept in one plain struct so the server wiring can fill it from its own configuration file
//! and tests can shrink timeouts; every limit the broker enforces on clients lives here.

use std::time::Duration;

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
        }
    }
}
