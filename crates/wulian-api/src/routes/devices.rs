//! `/api/v1/devices`: create, list, get, update, delete devices and rotate their tokens.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use wulian_common::blocking::run_blocking;
use wulian_registry::{Device, DevicePatch, DeviceQuery, NewDevice};

use crate::error::{ApiError, ApiResult, Problem};
use crate::extract::{ApiJson, ApiQuery, Caller};
use crate::state::AppState;

/// A device as the API shows it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeviceView {
    pub id: String,
    pub name: String,
    pub profile: String,
    pub labels: BTreeMap<String, String>,
    /// Free-form JSON object.
    #[schema(value_type = Object)]
    pub attributes: serde_json::Value,
    pub disabled: bool,
    /// Whether the device has an MQTT connection right now.
    pub connected: bool,
    /// Milliseconds since the Unix epoch.
    pub created_at: i64,
    pub updated_at: i64,
    /// The device's secret: present only in the response that created or rotated it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

impl DeviceView {
    pub(crate) fn new(device: Device, connected: bool, token: Option<String>) -> DeviceView {
        DeviceView {
            id: device.id,
            name: device.name,
            profile: device.profile,
            labels: device.labels,
            attributes: device.attributes,
            disabled: device.disabled,
            connected,
            created_at: device.created_at,
            updated_at: device.updated_at,
            token,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateDevice {
    /// 1–128 characters of `A-Z a-z 0-9 _ . : -`, unique in the installation (it is the MQTT client id).
    pub id: String,
    pub name: Option<String>,
    /// Defaults to `default`.
    pub profile: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[schema(value_type = Option<Object>)]
    pub attributes: Option<serde_json::Value>,
    #[serde(default)]
    pub disabled: bool,
}

/// Fields to change; absent fields stay as they are. `labels` and `attributes` are replaced whole.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateDevice {
    pub name: Option<String>,
    pub profile: Option<String>,
    pub labels: Option<BTreeMap<String, String>>,
    #[schema(value_type = Option<Object>)]
    pub attributes: Option<serde_json::Value>,
    pub disabled: Option<bool>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListDevices {
    /// 1–1000, default 100.
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    pub profile: Option<String>,
    /// Comma-separated `key:value` pairs; a device must carry all of them.
    pub label: Option<String>,
    /// Case-insensitive substring of the id or name.
    pub search: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DevicePageView {
    pub devices: Vec<DeviceView>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
    /// Devices matching the filters, across all pages.
    pub total: u64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TokenView {
    pub device_id: String,
    /// Shown once; only its hash is stored.
    pub token: String,
}

#[utoipa::path(post, path = "/api/v1/devices", tag = "devices", request_body = CreateDevice,
    security(("api_key" = [])),
    responses((status = 201, body = DeviceView, description = "Created; carries the device's first token"),
        (status = 409, body = Problem, description = "The id is taken"),
        (status = 422, body = Problem, description = "A field is invalid")))]
pub async fn create_device(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateDevice>,
) -> ApiResult<(StatusCode, Json<DeviceView>)> {
    caller.require_write()?;
    let tenant = caller.tenant().to_string();
    let new = new_device(body);
    let (device, token) =
        run_blocking(&state.registry, move |r| r.create_device(&tenant, &new)).await?;
    tracing::info!(tenant = %device.tenant, device_id = %device.id, "Device created.");
    Ok((
        StatusCode::CREATED,
        Json(DeviceView::new(device, false, Some(token))),
    ))
}

/// Devices per bulk import request.
pub const MAX_IMPORT_BATCH: usize = 1000;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportDevices {
    /// 1–1000 devices, each as for `POST /devices`.
    pub devices: Vec<serde_json::Value>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ImportedDevice {
    /// Position in the request's `devices` array (from 0).
    pub index: usize,
    pub id: String,
    /// Shown once; only its hash is stored.
    pub token: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ImportError {
    pub index: usize,
    /// The id, when the entry had one.
    pub id: Option<String>,
    /// `invalid_body`, `invalid_field` or `already_exists`.
    pub code: String,
    pub detail: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ImportResult {
    pub created: Vec<ImportedDevice>,
    pub errors: Vec<ImportError>,
}

#[utoipa::path(post, path = "/api/v1/devices/import", tag = "devices", request_body = ImportDevices,
    security(("api_key" = [])),
    responses((status = 200, body = ImportResult,
        description = "Every valid entry is created; each invalid one is reported by index and the rest still go in")))]
pub async fn import_devices(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<ImportDevices>,
) -> ApiResult<Json<ImportResult>> {
    caller.require_write()?;
    if body.devices.is_empty() || body.devices.len() > MAX_IMPORT_BATCH {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            format!("devices: 1 to {MAX_IMPORT_BATCH} entries per request"),
        ));
    }
    let tenant = caller.tenant().to_string();
    let result = run_blocking(&state.registry, move |r| {
        let mut result = ImportResult {
            created: Vec::new(),
            errors: Vec::new(),
        };
        for (index, entry) in body.devices.into_iter().enumerate() {
            let id = entry.get("id").and_then(|v| v.as_str()).map(str::to_string);
            let parsed: Result<CreateDevice, _> = serde_json::from_value(entry);
            let outcome = match parsed {
                Err(e) => Err(("invalid_body", e.to_string())),
                Ok(body) => r
                    .create_device(&tenant, &new_device(body))
                    .map_err(|e| match e {
                        wulian_registry::Error::AlreadyExists { .. } => {
                            ("already_exists", e.to_string())
                        }
                        wulian_registry::Error::Invalid { .. } => ("invalid_field", e.to_string()),
                        other => ("internal_error", other.to_string()),
                    }),
            };
            match outcome {
                Ok((device, token)) => result.created.push(ImportedDevice {
                    index,
                    id: device.id,
                    token,
                }),
                Err((code, detail)) => result.errors.push(ImportError {
                    index,
                    id,
                    code: code.to_string(),
                    detail,
                }),
            }
        }
        result
    })
    .await;
    tracing::info!(
        tenant = %caller.tenant(),
        created = result.created.len(),
        failed = result.errors.len(),
        "Devices imported."
    );
    Ok(Json(result))
}

fn new_device(body: CreateDevice) -> NewDevice {
    NewDevice {
        id: body.id,
        name: body.name,
        profile: body.profile,
        labels: body.labels,
        attributes: body.attributes,
        disabled: body.disabled,
    }
}

#[utoipa::path(get, path = "/api/v1/devices", tag = "devices", params(ListDevices),
    security(("api_key" = [])),
    responses((status = 200, body = DevicePageView), (status = 400, body = Problem)))]
pub async fn list_devices(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ListDevices>,
) -> ApiResult<Json<DevicePageView>> {
    let mut labels = Vec::new();
    for pair in q
        .label
        .iter()
        .flat_map(|l| l.split(','))
        .filter(|p| !p.is_empty())
    {
        let Some((k, v)) = pair.split_once(':') else {
            return Err(ApiError::bad_request(
                "invalid_query",
                format!("label filter {pair:?} must be key:value"),
            ));
        };
        labels.push((k.to_string(), v.to_string()));
    }
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_query",
            "limit must be between 1 and 1000",
        ));
    }
    let query = DeviceQuery {
        limit,
        cursor: q.cursor,
        profile: q.profile,
        label: labels,
        search: q.search,
    };
    let tenant = caller.tenant().to_string();
    let page = run_blocking(&state.registry, move |r| r.list_devices(&tenant, &query)).await?;
    let devices = page
        .devices
        .into_iter()
        .map(|d| {
            let connected = state.broker.is_connected(caller.tenant(), &d.id);
            DeviceView::new(d, connected, None)
        })
        .collect();
    Ok(Json(DevicePageView {
        devices,
        next_cursor: page.next_cursor,
        total: page.total,
    }))
}

#[utoipa::path(get, path = "/api/v1/devices/{id}", tag = "devices",
    params(("id" = String, Path, description = "Device id")), security(("api_key" = [])),
    responses((status = 200, body = DeviceView), (status = 404, body = Problem)))]
pub async fn get_device(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<DeviceView>> {
    let device = load_device(&state, caller.tenant(), &id).await?;
    let connected = state.broker.is_connected(caller.tenant(), &device.id);
    Ok(Json(DeviceView::new(device, connected, None)))
}

#[utoipa::path(patch, path = "/api/v1/devices/{id}", tag = "devices", request_body = UpdateDevice,
    params(("id" = String, Path, description = "Device id")), security(("api_key" = [])),
    responses((status = 200, body = DeviceView), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn update_device(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<UpdateDevice>,
) -> ApiResult<Json<DeviceView>> {
    caller.require_write()?;
    let patch = DevicePatch {
        name: body.name,
        profile: body.profile,
        labels: body.labels,
        attributes: body.attributes,
        disabled: body.disabled,
    };
    let tenant = caller.tenant().to_string();
    let device = run_blocking(&state.registry, move |r| {
        r.update_device(&tenant, &id, &patch)
    })
    .await?;
    if device.disabled {
        disconnect(&state, caller.tenant(), &device.id, "disabled");
    }
    let connected = state.broker.is_connected(caller.tenant(), &device.id);
    Ok(Json(DeviceView::new(device, connected, None)))
}

#[utoipa::path(delete, path = "/api/v1/devices/{id}", tag = "devices",
    params(("id" = String, Path, description = "Device id")), security(("api_key" = [])),
    responses((status = 204, description = "Deleted with its telemetry and commands"), (status = 404, body = Problem)))]
pub async fn delete_device(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require_write()?;
    let tenant = caller.tenant().to_string();
    let device_id = id.clone();
    run_blocking(&state.registry, move |r| {
        r.delete_device(&tenant, &device_id)
    })
    .await?;
    disconnect(&state, caller.tenant(), &id, "deleted");
    if let Some(lifecycle) = state.pipeline.lifecycle() {
        lifecycle.device_deleted(caller.tenant(), &id);
    }
    state
        .tsdb
        .delete_device(caller.tenant(), &id)
        .await
        .map_err(|e| ApiError::internal("Deleting device telemetry failed.", &e))?;
    tracing::info!(tenant = %caller.tenant(), device_id = %id, "Device deleted.");
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct RotateToken {
    /// Seconds the current token keeps working (0–2,592,000; default 0: it stops at once and
    /// the device's live connection is closed).
    pub grace_s: Option<u32>,
}

#[utoipa::path(post, path = "/api/v1/devices/{id}/token", tag = "devices",
    params(("id" = String, Path, description = "Device id"), RotateToken), security(("api_key" = [])),
    responses((status = 200, body = TokenView, description = "The new token (shown once)"),
        (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn rotate_token(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<RotateToken>,
) -> ApiResult<Json<TokenView>> {
    caller.require_write()?;
    let tenant = caller.tenant().to_string();
    let device_id = id.clone();
    let grace_ms = i64::from(q.grace_s.unwrap_or(0)) * 1000;
    let token = run_blocking(&state.registry, move |r| {
        r.rotate_device_token_with_grace(&tenant, &device_id, grace_ms)
    })
    .await?;
    if grace_ms == 0 {
        // The old token stops working at once, including for a connection it opened.
        disconnect(&state, caller.tenant(), &id, "token rotated");
    }
    tracing::info!(tenant = %caller.tenant(), device_id = %id, grace_ms, "Device token rotated.");
    Ok(Json(TokenView {
        device_id: id,
        token,
    }))
}

/// The device `id` of `tenant`, or `device_not_found` (also for other tenants' devices).
pub(crate) async fn load_device(state: &AppState, tenant: &str, id: &str) -> ApiResult<Device> {
    let (tenant, id) = (tenant.to_string(), id.to_string());
    Ok(run_blocking(&state.registry, move |r| r.get_device(&tenant, &id)).await?)
}

/// Closes a device's live MQTT connection after a change that revokes its right to it.
pub(crate) fn disconnect(state: &AppState, tenant: &str, device_id: &str, why: &str) {
    if state.broker.disconnect(
        tenant,
        device_id,
        wulian_broker::ReasonCode::AdministrativeAction,
    ) {
        tracing::info!(tenant, device_id, why, "Device disconnected.");
    }
}
