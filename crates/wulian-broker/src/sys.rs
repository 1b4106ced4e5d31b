//! `$SYS/` broker statistics.
//!
//! Every `sys_interval` the broker publishes its counters as retained messages into a
//! broker-wide namespace of its own ([`SYS_NAMESPACE`]) rather than into any tenant's: the
//! figures span all tenants, so only identities with `sys_access` may subscribe to `$SYS/`
//! filters, and their subscriptions are routed from this namespace.

use bytes::Bytes;
use wulian_mqtt::{Properties, QoS};

use crate::Shared;
use crate::router::RoutedMessage;

/// The router namespace of `$SYS` topics (no tenant id starts with `$`).
pub(crate) const SYS_NAMESPACE: &str = "$SYS";

/// Is this (valid) filter one for the `$SYS` namespace?
pub(crate) fn is_sys_filter(filter: &str) -> bool {
    filter == "$SYS" || filter.starts_with("$SYS/")
}

/// Publishes the current statistics (retained, QoS 0).
pub(crate) fn publish_stats(shared: &Shared) {
    let m = shared.metrics_snapshot();
    let uptime = shared.started_at.elapsed().as_secs();
    let stats: [(&str, u64); 7] = [
        (
            "$SYS/broker/clients/connected",
            shared.sessions.connected_count() as u64,
        ),
        ("$SYS/broker/messages/received", m.publish_received_total),
        ("$SYS/broker/messages/sent", m.messages_delivered_total),
        ("$SYS/broker/bytes/received", m.bytes_received_total),
        ("$SYS/broker/bytes/sent", m.bytes_sent_total),
        (
            "$SYS/broker/subscriptions/count",
            shared.router.subscription_count() as u64,
        ),
        ("$SYS/broker/uptime", uptime),
    ];
    for (topic, value) in stats {
        let msg = RoutedMessage::new(
            topic.to_owned(),
            Bytes::from(value.to_string()),
            QoS::AtMostOnce,
            true,
            &Properties::default(),
            None,
        );
        shared.route_sys(msg);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sys_filters() {
        assert!(is_sys_filter("$SYS/#"));
        assert!(is_sys_filter("$SYS/broker/+"));
        assert!(!is_sys_filter("$SYSX/a"));
        assert!(!is_sys_filter("#"));
    }
}
