//! Health, metrics and the OpenAPI document.

use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};

use crate::error::{ApiResult, Problem};
use crate::extract::Caller;
use crate::openapi::ApiDoc;
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
    responses((status = 200, description = "This document")))]
pub async fn openapi() -> impl IntoResponse {
    Json(ApiDoc::openapi())
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
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out))
}
