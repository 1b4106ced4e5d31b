//! Over-the-air updates: firmware (`/firmware`), the signing key (`/ota/public-key`),
//! campaigns (`/ota/campaigns`), and the device side: the download with range requests
//! (`/devices/{id}/firmware/{firmware_id}`) and progress over HTTP (`/devices/{id}/ota/progress`).

use std::io::SeekFrom;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use utoipa::{IntoParams, ToSchema};
use wulian_common::blocking::run_blocking;
use wulian_ingest::{OtaError, OtaService};
use wulian_registry::{Campaign, CampaignDevice, CampaignTarget, Firmware, NewCampaign};

use crate::error::{ApiError, ApiResult, Problem};
use crate::extract::{ApiBytes, ApiJson, ApiQuery, Caller};
use crate::routes::telemetry::telemetry_writer;
use crate::routes::twins::lifecycle;
use crate::state::AppState;

/// Bytes read from the firmware file per body chunk.
const DOWNLOAD_CHUNK: usize = 64 * 1024;

fn ota(state: &AppState) -> ApiResult<&OtaService> {
    Ok(&lifecycle(state)?.ota)
}

impl From<OtaError> for ApiError {
    fn from(error: OtaError) -> ApiError {
        match error {
            OtaError::Registry(e) => ApiError::from(e),
            e @ OtaError::HashMismatch { .. } => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "hash_mismatch",
                e.to_string(),
            ),
            e @ OtaError::TooLarge { .. } => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                e.to_string(),
            ),
            e @ OtaError::Empty => ApiError::bad_request("empty_body", e.to_string()),
            e @ OtaError::Body(_) => ApiError::bad_request("invalid_body", e.to_string()),
            other => ApiError::internal("OTA storage failed.", &other),
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct UploadFirmware {
    /// The device profile the image is for.
    pub profile: String,
    /// 1–64 characters; unique per profile.
    pub version: String,
    /// The image's SHA-256 (hex) as the uploader computed it; a mismatch stores nothing (422).
    pub sha256: String,
}

#[utoipa::path(post, path = "/api/v1/firmware", tag = "ota", params(UploadFirmware),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The image"),
    security(("api_key" = [])),
    responses((status = 201, body = Object, description = "Stored, hashed and signed: id, profile, version, size, sha256, signature"),
        (status = 409, body = Problem, description = "This version of the profile exists"),
        (status = 413, body = Problem, description = "Over ota.max_firmware_bytes"),
        (status = 422, body = Problem, description = "hash_mismatch: the bytes do not have the declared SHA-256")))]
pub async fn upload_firmware(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<UploadFirmware>,
    body: Body,
) -> ApiResult<(StatusCode, Json<Firmware>)> {
    caller.require_write()?;
    if q.sha256.len() != 64 || !q.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::bad_request(
            "invalid_query",
            "sha256 must be 64 hexadecimal digits",
        ));
    }
    let ota = ota(&state)?;
    let firmware = ota
        .store_firmware(
            caller.tenant(),
            &q.profile,
            &q.version,
            &q.sha256,
            body.into_data_stream(),
            ota.max_firmware_bytes(),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(firmware)))
}

#[utoipa::path(get, path = "/api/v1/firmware", tag = "ota", security(("api_key" = [])),
    responses((status = 200, body = Vec<Object>, description = "Newest first")))]
pub async fn list_firmware(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Vec<Firmware>>> {
    let tenant = caller.tenant().to_string();
    Ok(Json(
        run_blocking(&state.registry, move |r| r.list_firmware(&tenant)).await?,
    ))
}

#[utoipa::path(get, path = "/api/v1/firmware/{firmware_id}", tag = "ota", params(("firmware_id" = String, Path)),
    security(("api_key" = [])), responses((status = 200, body = Object), (status = 404, body = Problem)))]
pub async fn get_firmware(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Firmware>> {
    let tenant = caller.tenant().to_string();
    Ok(Json(
        run_blocking(&state.registry, move |r| r.get_firmware(&tenant, &id)).await?,
    ))
}

#[utoipa::path(delete, path = "/api/v1/firmware/{firmware_id}", tag = "ota", params(("firmware_id" = String, Path)),
    security(("api_key" = [])),
    responses((status = 204), (status = 404, body = Problem), (status = 409, body = Problem, description = "Used by a campaign")))]
pub async fn delete_firmware(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require_write()?;
    ota(&state)?.delete_firmware(caller.tenant(), &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PublicKey {
    pub algorithm: String,
    /// The raw 32-byte Ed25519 public key, hex. Firmware signatures are over the image's
    /// 32-byte SHA-256 digest.
    pub public_key: String,
}

#[utoipa::path(get, path = "/api/v1/ota/public-key", tag = "ota", security(("api_key" = [])),
    responses((status = 200, body = PublicKey)))]
pub async fn public_key(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<PublicKey>> {
    let key = ota(&state)?.public_key(caller.tenant()).await?;
    Ok(Json(PublicKey {
        algorithm: "Ed25519".to_string(),
        public_key: hex_string(&key),
    }))
}

fn hex_string(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCampaign {
    pub name: String,
    pub firmware_id: String,
    /// `{"profile"?, "labels"?: {k: v}, "devices"?: [ids]}`: devices matching all filters.
    #[schema(value_type = Object)]
    pub target: CampaignTarget,
    /// Devices updated at once (default: all).
    pub batch_size: Option<u32>,
    /// Or a share of the targeted devices at once, 1–100.
    pub batch_percent: Option<u32>,
    /// Abort when more than this share of finished devices failed (default 20).
    pub failure_threshold_pct: Option<u32>,
    /// … and at least this many failed (default 1).
    pub min_failures: Option<u32>,
    /// A device not finished this long after its notification has failed (default 3600).
    pub device_timeout_s: Option<u32>,
}

#[utoipa::path(post, path = "/api/v1/ota/campaigns", tag = "ota", request_body = CreateCampaign,
    security(("api_key" = [])),
    responses((status = 201, body = Object, description = "Running; the first batch is notified"),
        (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn create_campaign(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateCampaign>,
) -> ApiResult<(StatusCode, Json<Campaign>)> {
    caller.require_write()?;
    let new = NewCampaign {
        name: body.name,
        firmware_id: body.firmware_id,
        target: body.target,
        batch_size: body.batch_size,
        batch_percent: body.batch_percent,
        failure_threshold_pct: body.failure_threshold_pct.unwrap_or(20),
        min_failures: body.min_failures.unwrap_or(1),
        device_timeout_ms: i64::from(body.device_timeout_s.unwrap_or(3600)) * 1000,
    };
    let campaign = ota(&state)?.create_campaign(caller.tenant(), new).await?;
    Ok((StatusCode::CREATED, Json(campaign)))
}

#[utoipa::path(get, path = "/api/v1/ota/campaigns", tag = "ota", security(("api_key" = [])),
    responses((status = 200, body = Vec<Object>)))]
pub async fn list_campaigns(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Vec<Campaign>>> {
    let tenant = caller.tenant().to_string();
    Ok(Json(
        run_blocking(&state.registry, move |r| r.list_campaigns(&tenant)).await?,
    ))
}

#[utoipa::path(get, path = "/api/v1/ota/campaigns/{campaign_id}", tag = "ota", params(("campaign_id" = String, Path)),
    security(("api_key" = [])),
    responses((status = 200, body = Object, description = "With counts: pending, in_progress, succeeded, failed, cancelled"),
        (status = 404, body = Problem)))]
pub async fn get_campaign(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Campaign>> {
    let tenant = caller.tenant().to_string();
    Ok(Json(
        run_blocking(&state.registry, move |r| r.get_campaign(&tenant, &id)).await?,
    ))
}

#[utoipa::path(get, path = "/api/v1/ota/campaigns/{campaign_id}/devices", tag = "ota",
    params(("campaign_id" = String, Path)), security(("api_key" = [])),
    responses((status = 200, body = Vec<Object>, description = "device_id, state, progress, error, notified_at, updated_at")))]
pub async fn campaign_devices(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Vec<CampaignDevice>>> {
    let tenant = caller.tenant().to_string();
    Ok(Json(
        run_blocking(&state.registry, move |r| r.campaign_devices(&tenant, &id)).await?,
    ))
}

#[utoipa::path(post, path = "/api/v1/ota/campaigns/{campaign_id}/cancel", tag = "ota",
    params(("campaign_id" = String, Path)), security(("api_key" = [])),
    responses((status = 200, body = Object, description = "Cancelled: unfinished devices are cancelled, job messages withdrawn"),
        (status = 404, body = Problem)))]
pub async fn cancel_campaign(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Campaign>> {
    caller.require_write()?;
    Ok(Json(
        ota(&state)?.cancel_campaign(caller.tenant(), &id).await?,
    ))
}

#[utoipa::path(post, path = "/api/v1/devices/{id}/ota/progress", tag = "ota",
    request_body(content = Object, description = "`{\"campaign\", \"state\": downloading|downloaded|installing|succeeded|failed, \"progress\"?: 0-100, \"error\"?}`"),
    params(("id" = String, Path, description = "Device id")), security(("device_token" = []), ("api_key" = [])),
    responses((status = 200, body = Object), (status = 404, body = Problem), (status = 409, body = Problem, description = "Already finished"),
        (status = 422, body = Problem)))]
pub async fn report_progress(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiBytes(body): ApiBytes,
) -> ApiResult<Json<CampaignDevice>> {
    let tenant = telemetry_writer(&state, &headers, &id).await?;
    Ok(Json(ota(&state)?.report(&tenant, &id, &body).await?))
}

#[utoipa::path(get, path = "/api/v1/devices/{id}/firmware/{firmware_id}", tag = "ota",
    params(("id" = String, Path, description = "Device id"), ("firmware_id" = String, Path),
        ("Range" = Option<String>, Header, description = "bytes=a-b, bytes=a- or bytes=-n")),
    security(("device_token" = []), ("api_key" = [])),
    responses((status = 200, description = "The image"), (status = 206, description = "The requested range"),
        (status = 404, body = Problem), (status = 416, body = Problem)))]
pub async fn download_firmware(
    State(state): State<AppState>,
    Path((id, firmware_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let tenant = telemetry_writer(&state, &headers, &id).await?;
    let firmware = run_blocking(&state.registry, move |r| {
        r.get_firmware(&tenant, &firmware_id)
    })
    .await?;
    let ota = ota(&state)?;
    let path = ota.firmware_path(&firmware);
    let size = firmware.size;
    let range = match headers.get(header::RANGE) {
        None => None,
        Some(value) => Some(
            parse_range(value.to_str().unwrap_or(""), size).ok_or_else(|| {
                ApiError::new(
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    "range_not_satisfiable",
                    format!("the image has {size} bytes; ask for one range as bytes=first-last"),
                )
            })?,
        ),
    };
    let (start, end) = range.unwrap_or((0, size.saturating_sub(1)));
    let len = end + 1 - start;
    let mut file = tokio::fs::File::open(&path)
        .await
        .map_err(|e| ApiError::internal("Opening a firmware file failed.", &e))?;
    file.seek(SeekFrom::Start(start))
        .await
        .map_err(|e| ApiError::internal("Seeking in a firmware file failed.", &e))?;
    let stream = futures_util::stream::unfold((file, len), |(mut file, left)| async move {
        if left == 0 {
            return None;
        }
        let want = usize::try_from(left)
            .unwrap_or(usize::MAX)
            .min(DOWNLOAD_CHUNK);
        let mut buf = vec![0u8; want];
        match file.read(&mut buf).await {
            Ok(0) => Some((
                Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "firmware file shorter than recorded",
                )),
                (file, 0),
            )),
            Ok(n) => {
                buf.truncate(n);
                Some((
                    Ok::<_, std::io::Error>(Bytes::from(buf)),
                    (file, left - n as u64),
                ))
            }
            Err(e) => Some((Err(e), (file, 0))),
        }
    });
    let mut response = Body::from_stream(stream).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    if let Ok(v) = HeaderValue::from_str(&format!("\"{}\"", firmware.sha256)) {
        h.insert(header::ETAG, v);
    }
    if range.is_some() {
        *response.status_mut() = StatusCode::PARTIAL_CONTENT;
        if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{end}/{size}")) {
            response.headers_mut().insert(header::CONTENT_RANGE, v);
        }
    }
    Ok(response)
}

/// One byte range (RFC 9110 §14.1.2) of a `size`-byte resource, as inclusive `(first, last)`;
/// `None` when it is malformed, has several ranges, or is not satisfiable.
pub(crate) fn parse_range(value: &str, size: u64) -> Option<(u64, u64)> {
    let spec = value.trim().strip_prefix("bytes=")?;
    if spec.contains(',') || size == 0 {
        return None;
    }
    let (first, last) = spec.split_once('-')?;
    let (first, last) = (first.trim(), last.trim());
    if first.is_empty() {
        // Suffix: the last n bytes.
        let n: u64 = last.parse().ok()?;
        if n == 0 {
            return None;
        }
        return Some((size.saturating_sub(n), size - 1));
    }
    let first: u64 = first.parse().ok()?;
    let last = if last.is_empty() {
        size - 1
    } else {
        last.parse::<u64>().ok()?.min(size - 1)
    };
    (first <= last && first < size).then_some((first, last))
}

#[cfg(test)]
mod tests {
    use super::parse_range;

    #[test]
    fn ranges_per_rfc_9110() {
        assert_eq!(parse_range("bytes=0-99", 1000), Some((0, 99)));
        assert_eq!(parse_range("bytes=900-", 1000), Some((900, 999)));
        assert_eq!(parse_range("bytes=-100", 1000), Some((900, 999)));
        assert_eq!(parse_range("bytes=-5000", 1000), Some((0, 999)));
        assert_eq!(parse_range("bytes=990-2000", 1000), Some((990, 999)));
        assert_eq!(parse_range("bytes=1000-", 1000), None);
        assert_eq!(parse_range("bytes=5-1", 1000), None);
        assert_eq!(parse_range("bytes=0-1,5-6", 1000), None);
        assert_eq!(parse_range("items=0-1", 1000), None);
        assert_eq!(parse_range("bytes=-0", 1000), None);
        assert_eq!(parse_range("bytes=x-1", 1000), None);
    }
}
