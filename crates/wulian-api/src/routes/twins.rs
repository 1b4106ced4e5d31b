//! `/api/v1/devices/{id}/twin` (desired / reported / delta documents) and
//! `/api/v1/devices/{id}/status` (presence, connection details, counters, model violations).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Serialize;
use utoipa::ToSchema;
use wulian_ingest::Lifecycle;
use wulian_ingest::models::FlaggedViolations;
use wulian_registry::{Twin, TwinSection};
use wulian_tsdb::Value;

use crate::error::{ApiError, ApiResult, Problem};
use crate::extract::{ApiJson, Caller};
use crate::routes::devices::load_device;
use crate::routes::profiles::{if_match, with_etag};
use crate::routes::telemetry::telemetry_writer;
use crate::state::AppState;

/// Telemetry keys that, when a device reports them, describe its radio link.
const SIGNAL_KEYS: &[&str] = &[
    "rssi",
    "rsrp",
    "rsrq",
    "snr",
    "sinr",
    "signal",
    "signal_quality",
    "csq",
    "lqi",
];

pub(crate) fn lifecycle(state: &AppState) -> ApiResult<&Lifecycle> {
    state.pipeline.lifecycle().ok_or_else(|| {
        ApiError::internal(
            "Device lifecycle services are not attached.",
            &"pipeline has no lifecycle",
        )
    })
}

fn twin_response(twin: Twin) -> Response {
    let version = twin.version;
    with_etag(StatusCode::OK, twin, version)
}

#[utoipa::path(get, path = "/api/v1/devices/{id}/twin", tag = "twins",
    params(("id" = String, Path, description = "Device id")), security(("api_key" = [])),
    responses((status = 200, body = Object, description = "desired, reported, delta, versions; ETag = version"),
        (status = 404, body = Problem)))]
pub async fn get_twin(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let twin = lifecycle(&state)?.twins.get(caller.tenant(), &id).await?;
    Ok(twin_response(twin))
}

#[utoipa::path(patch, path = "/api/v1/devices/{id}/twin/desired", tag = "twins",
    request_body(content = Object, content_type = "application/merge-patch+json",
        description = "RFC 7386 merge patch of the desired document: members replace, null deletes"),
    params(("id" = String, Path, description = "Device id"),
        ("If-Match" = Option<String>, Header, description = "Apply only at this twin version (the ETag)")),
    security(("api_key" = [])),
    responses((status = 200, body = Object, description = "The twin after the patch"),
        (status = 404, body = Problem), (status = 412, body = Problem, description = "The twin changed since the If-Match version"),
        (status = 413, body = Problem, description = "The document would exceed 64 KiB"),
        (status = 422, body = Problem)))]
pub async fn patch_desired(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiJson(patch): ApiJson<serde_json::Value>,
) -> ApiResult<Response> {
    caller.require_write()?;
    let expected = if_match(&headers)?;
    let update = lifecycle(&state)?
        .twins
        .patch(caller.tenant(), &id, TwinSection::Desired, patch, expected)
        .await?;
    Ok(twin_response(update.twin))
}

#[utoipa::path(patch, path = "/api/v1/devices/{id}/twin/reported", tag = "twins",
    request_body(content = Object, content_type = "application/merge-patch+json",
        description = "RFC 7386 merge patch of the reported document (devices over HTTP)"),
    params(("id" = String, Path, description = "Device id"),
        ("If-Match" = Option<String>, Header, description = "Apply only at this twin version")),
    security(("device_token" = []), ("api_key" = [])),
    responses((status = 200, body = Object, description = "The twin after the patch"),
        (status = 401, body = Problem), (status = 412, body = Problem), (status = 413, body = Problem)))]
pub async fn patch_reported(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiJson(patch): ApiJson<serde_json::Value>,
) -> ApiResult<Response> {
    let tenant = telemetry_writer(&state, &headers, &id).await?;
    let expected = if_match(&headers)?;
    let lifecycle = lifecycle(&state)?;
    lifecycle
        .presence
        .seen(&tenant, &id, patch.to_string().len());
    let update = lifecycle
        .twins
        .patch(&tenant, &id, TwinSection::Reported, patch, expected)
        .await?;
    Ok(twin_response(update.twin))
}

/// A device's connectivity and health.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeviceStatus {
    pub device_id: String,
    /// Connected over MQTT right now.
    pub online: bool,
    /// Silent past its profile's inactivity timeout.
    pub inactive: bool,
    pub last_seen_at: Option<i64>,
    pub connected_at: Option<i64>,
    pub disconnected_at: Option<i64>,
    pub disconnect_reason: Option<String>,
    /// transport, protocol, client_id, remote_addr, keep_alive_s of the last connection.
    #[schema(value_type = Option<Object>)]
    pub connection: Option<serde_json::Value>,
    pub messages_in: u64,
    pub bytes_in: u64,
    /// The latest radio readings the device reported (rssi, rsrp, snr, …), if any.
    #[schema(value_type = Object)]
    pub signal: serde_json::Map<String, serde_json::Value>,
    /// The latest thing-model violations (profile validation `flag`), if any since the start.
    #[schema(value_type = Option<Object>)]
    pub model_violations: Option<FlaggedViolations>,
}

#[utoipa::path(get, path = "/api/v1/devices/{id}/status", tag = "devices",
    params(("id" = String, Path, description = "Device id")), security(("api_key" = [])),
    responses((status = 200, body = DeviceStatus), (status = 404, body = Problem)))]
pub async fn device_status(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<DeviceStatus>> {
    let device = load_device(&state, caller.tenant(), &id).await?;
    let lifecycle = lifecycle(&state)?;
    let presence = lifecycle.presence.get(caller.tenant(), &device.id);
    let mut signal = serde_json::Map::new();
    for (key, point) in state.tsdb.latest(caller.tenant(), &device.id) {
        if SIGNAL_KEYS.contains(&key.as_str()) {
            let value = match point.value {
                Value::F64(v) => serde_json::json!(v),
                Value::I64(v) => serde_json::json!(v),
                Value::Bool(v) => serde_json::json!(v),
                Value::Str(v) => serde_json::json!(v),
            };
            signal.insert(key, serde_json::json!({"value": value, "ts": point.ts}));
        }
    }
    Ok(Json(DeviceStatus {
        online: state.broker.is_connected(caller.tenant(), &device.id),
        inactive: presence.inactive,
        last_seen_at: presence.last_seen_at,
        connected_at: presence.connected_at,
        disconnected_at: presence.disconnected_at,
        disconnect_reason: presence.disconnect_reason,
        connection: presence.connection.map(|c| c.value()),
        messages_in: presence.messages_in,
        bytes_in: presence.bytes_in,
        signal,
        model_violations: lifecycle.models.flagged(caller.tenant(), &device.id),
        device_id: device.id,
    }))
}
