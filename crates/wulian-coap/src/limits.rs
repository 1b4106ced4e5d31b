//! The endpoint's limits: every queue and table is bounded, and each bound is configurable
//! (`[coap]` in the configuration file).

use std::time::Duration;

/// RFC 7252 §4.8.2: how long a Confirmable message's id may be retransmitted (the default
/// transmission parameters). Retransmissions within it are answered from the cache.
pub const EXCHANGE_LIFETIME: Duration = Duration::from_secs(247);

/// RFC 7252 §4.6: with an unknown path MTU, messages should fit in 1152 bytes.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 1152;

/// Room left in a response for the header, token and options, so that a response whose
/// payload fills the budget still fits in `max_message_bytes`.
pub const RESPONSE_OVERHEAD: usize = 32;

#[derive(Debug, Clone, PartialEq)]
pub struct CoapLimits {
    /// Largest datagram accepted; larger requests get 4.13 Request Entity Too Large. Also the
    /// largest response sent.
    pub max_message_bytes: usize,
    /// Requests per second per peer IP address (token bucket; 0 = unlimited).
    pub peer_rate: u32,
    /// Requests a peer may send in a burst above `peer_rate`.
    pub peer_burst: u32,
    /// Peer addresses tracked by the rate limiter at once.
    pub max_peers: usize,
    /// Exchanges remembered for deduplication (EXCHANGE_LIFETIME each); the oldest go first.
    pub dedup_capacity: usize,
    /// Requests processed at once; more get 5.03 Service Unavailable.
    pub max_in_flight: usize,
}

impl Default for CoapLimits {
    fn default() -> Self {
        CoapLimits {
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            // NB-IoT devices send a few messages an hour; a peer address far above this is a
            // gateway (raise it) or a fault.
            peer_rate: 20,
            peer_burst: 40,
            max_peers: 100_000,
            dedup_capacity: 100_000,
            max_in_flight: 256,
        }
    }
}

impl CoapLimits {
    /// The largest response payload that fits in one message.
    pub fn max_response_payload(&self) -> usize {
        self.max_message_bytes.saturating_sub(RESPONSE_OVERHEAD)
    }
}
