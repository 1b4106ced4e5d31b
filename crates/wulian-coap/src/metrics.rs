//! Counters for /api/v1/metrics. No per-device labels (docs/style.md).

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct CoapMetrics {
    /// Datagrams read from the socket.
    pub datagrams_received: AtomicU64,
    /// Requests processed (duplicates and refusals before processing not included).
    pub requests: AtomicU64,
    /// Requests answered with a 4.xx or 5.xx code.
    pub errors: AtomicU64,
    /// Retransmitted requests answered from the exchange cache (or dropped while the first
    /// copy was still being processed).
    pub duplicates: AtomicU64,
    /// Datagrams that are not CoAP messages (dropped or answered with RST).
    pub malformed: AtomicU64,
    /// Requests larger than `max_message_bytes` (4.13).
    pub oversized: AtomicU64,
    /// Requests refused by the per-peer rate or the in-flight limit (5.03).
    pub throttled: AtomicU64,
    /// Exchanges evicted from a full deduplication cache before their lifetime ended.
    pub dedup_evicted: AtomicU64,
    /// Telemetry messages stored.
    pub telemetry_accepted: AtomicU64,
    /// Commands handed to devices in responses.
    pub commands_delivered: AtomicU64,
    /// Command answers matched to a waiting command.
    pub command_answers: AtomicU64,
}

impl CoapMetrics {
    pub(crate) fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters in Prometheus text format, named `wulian_coap_*`, for the binary to append
    /// to /api/v1/metrics.
    pub fn prometheus_text(&self) -> String {
        let mut out = String::new();
        for (name, help, counter) in [
            (
                "wulian_coap_datagrams_received_total",
                "UDP datagrams received by the CoAP endpoint.",
                &self.datagrams_received,
            ),
            (
                "wulian_coap_requests_total",
                "CoAP requests processed.",
                &self.requests,
            ),
            (
                "wulian_coap_errors_total",
                "CoAP requests answered with a 4.xx or 5.xx code.",
                &self.errors,
            ),
            (
                "wulian_coap_duplicates_total",
                "Retransmitted CoAP requests answered from the exchange cache.",
                &self.duplicates,
            ),
            (
                "wulian_coap_malformed_total",
                "Datagrams that were not valid CoAP messages.",
                &self.malformed,
            ),
            (
                "wulian_coap_oversized_total",
                "CoAP requests over the message size limit (4.13).",
                &self.oversized,
            ),
            (
                "wulian_coap_throttled_total",
                "CoAP requests refused by the rate or in-flight limit (5.03).",
                &self.throttled,
            ),
            (
                "wulian_coap_dedup_evicted_total",
                "Exchanges evicted early from the full deduplication cache.",
                &self.dedup_evicted,
            ),
            (
                "wulian_coap_telemetry_accepted_total",
                "Telemetry messages stored from CoAP.",
                &self.telemetry_accepted,
            ),
            (
                "wulian_coap_commands_delivered_total",
                "Commands delivered in CoAP responses.",
                &self.commands_delivered,
            ),
            (
                "wulian_coap_command_answers_total",
                "Command answers received over CoAP.",
                &self.command_answers,
            ),
        ] {
            let value = counter.load(Ordering::Relaxed);
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}\n"
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text_names_every_counter() {
        let m = CoapMetrics::default();
        CoapMetrics::add(&m.requests);
        let text = m.prometheus_text();
        assert!(text.contains("\nwulian_coap_requests_total 1\n"), "{text}");
        assert_eq!(text.matches("# TYPE ").count(), 11);
    }
}
