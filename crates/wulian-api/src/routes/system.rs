//! Health, metrics and the OpenAPI document.

use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{ApiResult, Problem};
use crate::extract::Caller;
use crate::state::AppState;

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// Always `ok` when the server answers.
    pub status: String,
    pub version: String,
}

#[utoipa::path(get, path = "/api/v1/health", tag = "system",
    responses((status = 200, body = Health, description = "Answers without credentials")))]
pub async fn health() -> Json<Health> {
    Json(Health {
        status: "ok".to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
    })
}

#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "system",
    responses((status = 200, description = "This document: the platform's API and the solutions' \
        (bike share) registered with `wulian_api::openapi::register`")))]
pub async fn openapi() -> impl IntoResponse {
    Json(crate::openapi::document())
}

#[utoipa::path(get, path = "/api/v1/metrics", tag = "system", security(("api_key" = [])),
    responses((status = 200, content_type = "text/plain", description = "Prometheus text format"),
        (status = 403, body = Problem, description = "Needs the installation admin key")))]
pub async fn metrics(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<impl IntoResponse> {
    caller.require_installation_admin()?;
    let b = state.broker.metrics();
    let i = &state.pipeline.metrics;
    let t = state.tsdb.stats();
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        ));
        out.push('\n');
    };
    metric(
        "wulian_mqtt_connections",
        "gauge",
        "MQTT connections open now.",
        b.connections_current,
    );
    metric(
        "wulian_mqtt_connections_total",
        "counter",
        "MQTT connections accepted.",
        b.connections_total,
    );
    metric(
        "wulian_mqtt_connections_refused_total",
        "counter",
        "MQTT connections refused at the connection limit.",
        b.connections_refused_total,
    );
    metric(
        "wulian_mqtt_auth_failed_total",
        "counter",
        "MQTT CONNECTs refused by authentication.",
        b.auth_failed_total,
    );
    metric(
        "wulian_mqtt_publish_received_total",
        "counter",
        "PUBLISH packets received.",
        b.publish_received_total,
    );
    metric(
        "wulian_mqtt_publish_denied_total",
        "counter",
        "PUBLISH packets refused by topic policy.",
        b.publish_denied_total,
    );
    metric(
        "wulian_mqtt_publish_rejected_total",
        "counter",
        "PUBLISH packets refused by the ingest pipeline.",
        b.publish_rejected_total,
    );
    metric(
        "wulian_mqtt_subscribe_denied_total",
        "counter",
        "Subscriptions refused by topic policy.",
        b.subscribe_denied_total,
    );
    metric(
        "wulian_mqtt_messages_delivered_total",
        "counter",
        "Messages delivered to subscribers.",
        b.messages_delivered_total,
    );
    metric(
        "wulian_mqtt_messages_dropped_total",
        "counter",
        "Messages dropped for full subscriber queues.",
        b.messages_dropped_total,
    );
    metric(
        "wulian_mqtt_malformed_packets_total",
        "counter",
        "Connections closed for malformed packets.",
        b.malformed_packets_total,
    );
    metric(
        "wulian_mqtt_received_bytes_total",
        "counter",
        "Bytes received from MQTT clients.",
        b.bytes_received_total,
    );
    metric(
        "wulian_mqtt_sent_bytes_total",
        "counter",
        "Bytes sent to MQTT clients.",
        b.bytes_sent_total,
    );
    metric(
        "wulian_mqtt_sessions_persistent",
        "gauge",
        "Persistent MQTT sessions, connected or not.",
        b.sessions_persistent,
    );
    metric(
        "wulian_mqtt_sessions_expired_total",
        "counter",
        "Persistent sessions removed when their expiry interval passed.",
        b.sessions_expired_total,
    );
    metric(
        "wulian_mqtt_messages_queued_total",
        "counter",
        "Messages queued for offline persistent sessions.",
        b.messages_queued_total,
    );
    metric(
        "wulian_mqtt_queue_overflow_total",
        "counter",
        "Messages dropped because an offline session's queue was full.",
        b.queue_overflow_total,
    );
    metric(
        "wulian_mqtt_application_lane_connections_total",
        "counter",
        "Connections moved to an application lane thread.",
        b.application_lane_connections_total,
    );
    metric(
        "wulian_mqtt_retained_messages",
        "gauge",
        "Retained messages stored.",
        b.retained_messages,
    );
    metric(
        "wulian_mqtt_store_errors_total",
        "counter",
        "Failed writes to the broker's session store.",
        b.store_errors_total,
    );
    metric(
        "wulian_mqtt_publish_rate_limited_total",
        "counter",
        "Clients disconnected for publishing faster than allowed.",
        b.publish_rate_limited_total,
    );
    metric(
        "wulian_ingest_messages_accepted_total",
        "counter",
        "Telemetry messages stored.",
        i.messages_accepted.load(Ordering::Relaxed),
    );
    metric(
        "wulian_ingest_messages_rejected_total",
        "counter",
        "Telemetry messages refused.",
        i.messages_rejected.load(Ordering::Relaxed),
    );
    metric(
        "wulian_ingest_points_total",
        "counter",
        "Telemetry points stored.",
        i.points_written.load(Ordering::Relaxed),
    );
    metric(
        "wulian_commands_answers_total",
        "counter",
        "Command answers matched to a waiting command.",
        i.command_answers.load(Ordering::Relaxed),
    );
    metric(
        "wulian_commands_pending",
        "gauge",
        "Commands awaiting an answer.",
        state.commands.pending() as u64,
    );
    metric(
        "wulian_tsdb_series",
        "gauge",
        "Series in the telemetry store.",
        t.series as u64,
    );
    metric(
        "wulian_tsdb_points",
        "gauge",
        "Points in the telemetry store.",
        t.points,
    );
    metric(
        "wulian_tsdb_wal_bytes",
        "gauge",
        "Bytes in the write-ahead log.",
        t.wal_bytes,
    );
    metric(
        "wulian_tsdb_commit_groups_total",
        "counter",
        "Group commits of the write-ahead log (one write, and one fsync when durable) since start.",
        t.commit_groups,
    );
    metric(
        "wulian_tsdb_commit_requests_total",
        "counter",
        "Writes and deletes carried by those group commits: requests per group is how well they share.",
        t.commit_requests,
    );
    metric(
        "wulian_tsdb_rollup_files",
        "gauge",
        "Rollup (1-minute and 1-hour summary) files.",
        t.rollup_files,
    );
    metric(
        "wulian_tsdb_rollup_bytes",
        "gauge",
        "Bytes in rollup files.",
        t.rollup_bytes,
    );
    metric(
        "wulian_tsdb_rollup_reads_total",
        "counter",
        "Series partitions answered from rollups instead of raw points.",
        t.rollup_reads,
    );
    metric(
        "wulian_tsdb_retention_files_deleted_total",
        "counter",
        "Block files deleted by telemetry retention since start.",
        t.retention_files_deleted,
    );
    metric(
        "wulian_tsdb_retention_partitions_rewritten_total",
        "counter",
        "Day partitions rewritten by retention without the series past their retention.",
        t.retention_partitions_rewritten,
    );
    metric(
        "wulian_tsdb_retention_series_dropped_total",
        "counter",
        "Series whose raw telemetry retention dropped entirely since start.",
        t.retention_series_dropped,
    );
    metric(
        "wulian_tsdb_retention_device_floors",
        "gauge",
        "Devices whose retention (profile or tenant) is shorter than the longest in force.",
        t.device_floors,
    );
    metric(
        "wulian_ingest_messages_flagged_total",
        "counter",
        "Telemetry messages stored although they broke their thing model (validation flag).",
        i.messages_flagged.load(Ordering::Relaxed),
    );
    let live = state.pipeline.live();
    metric(
        "wulian_live_streams",
        "gauge",
        "Live-update streams (console WebSockets on /api/v1/live) open now.",
        live.streams() as u64,
    );
    metric(
        "wulian_live_events_total",
        "counter",
        "Live events published to a tenant's channel (once, however many streams read them).",
        live.metrics.events.load(Ordering::Relaxed),
    );
    metric(
        "wulian_live_events_dropped_total",
        "counter",
        "Live events streams missed because they fell behind (counted per stream).",
        live.metrics.dropped.load(Ordering::Relaxed),
    );
    if let Some(l) = state.pipeline.lifecycle() {
        let counters = [
            (
                "wulian_ingest_model_violations_total",
                "Thing-model violations found in telemetry.",
                &l.models.violations_total,
            ),
            (
                "wulian_ingest_rate_limited_total",
                "Telemetry messages refused by a profile's rate limit.",
                &l.models.rate_limited_total,
            ),
            (
                "wulian_twin_updates_total",
                "Twin changes applied.",
                &l.twins.metrics.updates,
            ),
            (
                "wulian_twin_refused_total",
                "Twin patches refused.",
                &l.twins.metrics.refused,
            ),
            (
                "wulian_presence_connects_total",
                "Device connections seen by presence.",
                &l.presence.metrics.connects,
            ),
            (
                "wulian_presence_disconnects_total",
                "Device disconnections seen by presence.",
                &l.presence.metrics.disconnects,
            ),
            (
                "wulian_presence_inactive_total",
                "Devices that went silent past their profile's inactivity timeout.",
                &l.presence.metrics.became_inactive,
            ),
            (
                "wulian_ota_notified_total",
                "Devices sent an update job.",
                &l.ota.metrics.notified,
            ),
            (
                "wulian_ota_succeeded_total",
                "Devices that reported a successful update.",
                &l.ota.metrics.succeeded,
            ),
            (
                "wulian_ota_failed_total",
                "Devices whose update failed or timed out.",
                &l.ota.metrics.failed,
            ),
            (
                "wulian_ota_campaigns_aborted_total",
                "Campaigns aborted at their failure threshold.",
                &l.ota.metrics.campaigns_aborted,
            ),
        ];
        for (name, help, counter) in counters {
            metric(name, "counter", help, counter.load(Ordering::Relaxed));
        }
        let r = l.rules.engine().counters();
        for (name, help, value) in [
            (
                "wulian_rules_evaluated_total",
                "Rule evaluations (a message on a rule's topic filter).",
                r.evaluated,
            ),
            (
                "wulian_rules_matched_total",
                "Evaluations whose WHERE was true.",
                r.matched,
            ),
            (
                "wulian_rules_actions_queued_total",
                "Rule actions queued for the executor.",
                r.fired,
            ),
            (
                "wulian_rules_errors_total",
                "Rule evaluation and action-rendering errors.",
                r.errors,
            ),
            (
                "wulian_rules_actions_dropped_total",
                "Rule actions dropped because the queue was full.",
                r.dropped,
            ),
            (
                "wulian_rules_action_failures_total",
                "Rule actions the executor could not carry out.",
                r.action_failures,
            ),
        ] {
            metric(name, "counter", help, value);
        }
        metric(
            "wulian_rules_queue_length",
            "gauge",
            "Rule actions waiting for the executor.",
            l.rules.engine().queue_len() as u64,
        );
        let w = &l.webhooks.metrics;
        for (name, help, counter) in [
            (
                "wulian_webhooks_delivered_total",
                "Webhook requests delivered (2xx).",
                &w.delivered,
            ),
            (
                "wulian_webhooks_failed_attempts_total",
                "Webhook attempts that failed.",
                &w.failed_attempts,
            ),
            (
                "wulian_webhooks_dead_lettered_total",
                "Webhook requests moved to the dead-letter list.",
                &w.dead_lettered,
            ),
            (
                "wulian_webhooks_queue_full_total",
                "Webhook requests dead-lettered at once for a full queue.",
                &w.queue_full,
            ),
        ] {
            metric(name, "counter", help, counter.load(Ordering::Relaxed));
        }
        for (name, help, counter) in [
            (
                "wulian_alarms_raised_total",
                "Alarms raised (new, not repeated raises).",
                &l.alarms.metrics.raised,
            ),
            (
                "wulian_alarms_cleared_total",
                "Alarms cleared.",
                &l.alarms.metrics.cleared,
            ),
        ] {
            metric(name, "counter", help, counter.load(Ordering::Relaxed));
        }
    }
    if let Some(l) = state.pipeline.lifecycle() {
        out.push_str(&l.rules.latency.prometheus(
            "wulian_rules_action_latency_seconds",
            "Time from a rule firing to its action starting.",
        ));
    }
    let fsync = &t.wal_fsync;
    out.push_str(&wulian_common::metrics::histogram_text(
        "wulian_tsdb_wal_fsync_seconds",
        "Time the write-ahead log's fsyncs took; every durable acknowledgement waits for one.",
        &wulian_tsdb::FSYNC_BUCKETS_US.map(|us| us as f64 / 1e6),
        &fsync.counts,
        fsync.sum_us as f64 / 1e6,
    ));
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out))
}
