//! Broker counters.
//!
//! Plain atomics updated on the hot path without locks; [`MetricsSnapshot`] is the copyable
//! view handed to whatever exports metrics (the server's HTTP endpoint), so this crate does
//! not depend on a metrics library.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! metrics {
    (
        derived { $($(#[$ddoc:meta])* $dname:ident),* $(,)? }
        counters { $($(#[$doc:meta])* $name:ident),* $(,)? }
    ) => {
        /// Live counters; shared by all connections of one broker.
        #[derive(Debug, Default)]
        pub(crate) struct Metrics {
            $(pub(crate) $name: AtomicU64,)*
        }

        /// Point-in-time copy of the broker counters.
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        pub struct MetricsSnapshot {
            $($(#[$ddoc])* pub $dname: u64,)*
            $($(#[$doc])* pub $name: u64,)*
        }

        impl Metrics {
            /// The counters, with the derived values (read elsewhere) beside them.
            pub(crate) fn snapshot(&self, $($dname: u64),*) -> MetricsSnapshot {
                MetricsSnapshot {
                    $($dname,)*
                    $($name: self.$name.load(Ordering::Relaxed),)*
                }
            }
        }
    };
}

metrics! {
    derived {
        /// Connections currently open (CONNECT accepted or not yet), read off the connection
        /// limit's semaphore.
        connections_current,
    }
    counters {
        /// Connections accepted since start.
        connections_total,
        /// Connections moved to the application lane since start (applications after CONNECT,
        /// and every connection of a listener marked for the lane).
        application_lane_connections_total,
        /// Connections closed at once because `max_connections` was reached.
        connections_refused_total,
        /// CONNECTs refused by the authenticator.
        auth_failed_total,
        /// PUBLISH packets received from clients.
        publish_received_total,
        /// PUBLISH packets refused by the topic policy.
        publish_denied_total,
        /// PUBLISH packets the message sink refused.
        publish_rejected_total,
        /// Subscription filters refused by the topic policy.
        subscribe_denied_total,
        /// PUBLISH packets written to subscribers.
        messages_delivered_total,
        /// Messages dropped for a subscriber (queue full, too large for the client, expired, or
        /// refused QoS 0 publishes).
        messages_dropped_total,
        /// Packets that failed to decode (or broke the protocol).
        malformed_packets_total,
        /// Bytes read from client sockets.
        bytes_received_total,
        /// Bytes written to client sockets.
        bytes_sent_total,
        /// Persistent sessions that exist (connected or not).
        sessions_persistent,
        /// Persistent sessions removed because their expiry interval passed while offline.
        sessions_expired_total,
        /// Messages queued for offline persistent sessions.
        messages_queued_total,
        /// Messages dropped because an offline session's queue was full (`queue_overflow`).
        queue_overflow_total,
        /// Retained messages currently stored (all tenants).
        retained_messages,
        /// Writes to the durable store that failed (state kept in memory only).
        store_errors_total,
        /// Clients disconnected for publishing faster than the configured rate.
        publish_rate_limited_total,
    }
}

impl Metrics {
    pub(crate) fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn dec(counter: &AtomicU64) {
        counter.fetch_sub(1, Ordering::Relaxed);
    }
}
