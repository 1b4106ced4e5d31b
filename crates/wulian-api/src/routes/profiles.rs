//! `/api/v1/profiles`: device profiles with their thing model, validation policy and settings.
//! A profile's JSON is its export format: what `GET` returns can be `POST`ed to another
//! installation or tenant as is (server-set fields are ignored on import).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::ToSchema;
use wulian_common::blocking::run_blocking;
use wulian_registry::{NewProfile, Profile, ProfileSettings, ThingModel, ValidationMode};

use crate::error::{ApiError, ApiResult, Problem};
use crate::extract::{ApiJson, Caller};
use crate::state::AppState;

/// A profile as created or replaced. `version`, `tenant`, `created_at`, `updated_at` and
/// `provisioning_enabled` may be present (an exported profile) and are ignored.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProfileBody {
    /// 1–128 characters of `A-Z a-z 0-9 _ . : -`; devices name it in their `profile` field.
    pub id: String,
    pub name: Option<String>,
    pub description: Option<String>,
    /// The thing model: `properties`, `events`, `commands`, `allow_undeclared`.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub model: ThingModel,
    /// `reject`, `flag` (default) or `off`.
    #[serde(default)]
    #[schema(value_type = String)]
    pub validation: ValidationMode,
    /// `report_interval_s`, `inactivity_timeout_s`, `max_messages_per_minute`, and
    /// `retention_days` (1–36500: days the raw telemetry of the profile's devices is kept;
    /// omitted or null inherits the tenant's, then the installation's retention).
    #[serde(default)]
    #[schema(value_type = ProfileSettingsSchema)]
    pub settings: ProfileSettings,
    #[serde(default)]
    #[schema(ignore)]
    pub version: Option<i64>,
    #[serde(default)]
    #[schema(ignore)]
    pub tenant: Option<String>,
    #[serde(default)]
    #[schema(ignore)]
    pub created_at: Option<i64>,
    #[serde(default)]
    #[schema(ignore)]
    pub updated_at: Option<i64>,
    #[serde(default)]
    #[schema(ignore)]
    pub provisioning_enabled: Option<bool>,
}

/// The OpenAPI shape of a profile's `settings` (every field optional).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ProfileSettingsSchema {
    /// How often devices are expected to report (seconds).
    #[schema(minimum = 1)]
    report_interval_s: Option<u32>,
    /// A device silent this long is inactive (seconds); defaults to three report intervals.
    #[schema(minimum = 1)]
    inactivity_timeout_s: Option<u32>,
    /// Telemetry messages a device may send per minute.
    #[schema(minimum = 1)]
    max_messages_per_minute: Option<u32>,
    /// Days the raw telemetry of the profile's devices is kept; omitted or null inherits the
    /// tenant's retention, then the installation's. Whole days are dropped by the hourly
    /// retention task; hourly and minute summaries stay for their own retention.
    #[schema(minimum = 1, maximum = 36500)]
    retention_days: Option<u32>,
}

impl ProfileBody {
    fn into_new(self) -> NewProfile {
        NewProfile {
            id: self.id,
            name: self.name,
            description: self.description,
            model: self.model,
            validation: self.validation,
            settings: self.settings,
        }
    }
}

/// `body` as JSON with `status` and an `ETag` of `version` (profiles, twins and rules use it for
/// optimistic concurrency with `If-Match`).
pub(crate) fn with_etag(status: StatusCode, body: impl serde::Serialize, version: i64) -> Response {
    let mut response = (status, Json(body)).into_response();
    if let Ok(value) = HeaderValue::from_str(&etag(version)) {
        response.headers_mut().insert(header::ETAG, value);
    }
    response
}

fn profile_response(status: StatusCode, profile: Profile) -> Response {
    let version = profile.version;
    with_etag(status, profile, version)
}

pub(crate) fn etag(version: i64) -> String {
    format!("\"{version}\"")
}

/// The version an `If-Match` header asks for: `"3"`, `W/"3"` or `3`. `*` means any.
pub(crate) fn if_match(headers: &HeaderMap) -> ApiResult<Option<i64>> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or("").trim();
    if text == "*" {
        return Ok(None);
    }
    text.trim_start_matches("W/")
        .trim_matches('"')
        .parse()
        .map(Some)
        .map_err(|_| {
            ApiError::bad_request(
                "invalid_if_match",
                format!(
                    "If-Match must be a version as the ETag gives it, e.g. \"3\"; got {text:?}"
                ),
            )
        })
}

#[utoipa::path(post, path = "/api/v1/profiles", tag = "profiles", request_body = ProfileBody,
    security(("api_key" = [])),
    responses((status = 201, body = Object, description = "Created (version 1)"),
        (status = 409, body = Problem, description = "The id is taken in this tenant"),
        (status = 422, body = Problem, description = "A field or the thing model is invalid; the detail names its path")))]
pub async fn create_profile(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<ProfileBody>,
) -> ApiResult<Response> {
    caller.require_write()?;
    let tenant = caller.tenant().to_string();
    let new = body.into_new();
    let profile = run_blocking(&state.registry, move |r| r.create_profile(&tenant, &new)).await?;
    tracing::info!(tenant = %profile.tenant, profile = %profile.id, "Profile created.");
    Ok(profile_response(StatusCode::CREATED, profile))
}

#[utoipa::path(get, path = "/api/v1/profiles", tag = "profiles", security(("api_key" = [])),
    responses((status = 200, body = Vec<Object>, description = "The tenant's profiles by id")))]
pub async fn list_profiles(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Vec<Profile>>> {
    let tenant = caller.tenant().to_string();
    Ok(Json(
        run_blocking(&state.registry, move |r| r.list_profiles(&tenant)).await?,
    ))
}

#[utoipa::path(get, path = "/api/v1/profiles/{profile_id}", tag = "profiles",
    params(("profile_id" = String, Path)), security(("api_key" = [])),
    responses((status = 200, body = Object, description = "The profile; ETag carries its version"),
        (status = 404, body = Problem)))]
pub async fn get_profile(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let tenant = caller.tenant().to_string();
    let profile = run_blocking(&state.registry, move |r| r.get_profile(&tenant, &id)).await?;
    Ok(profile_response(StatusCode::OK, profile))
}

#[utoipa::path(put, path = "/api/v1/profiles/{profile_id}", tag = "profiles", request_body = ProfileBody,
    params(("profile_id" = String, Path), ("If-Match" = Option<String>, Header, description = "The version to replace (the ETag); 412 if it changed")),
    security(("api_key" = [])),
    responses((status = 200, body = Object, description = "Replaced; version + 1"),
        (status = 404, body = Problem), (status = 412, body = Problem, description = "Changed since the If-Match version"),
        (status = 422, body = Problem)))]
pub async fn replace_profile(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<ProfileBody>,
) -> ApiResult<Response> {
    caller.require_write()?;
    let expected = if_match(&headers)?;
    let tenant = caller.tenant().to_string();
    let new = body.into_new();
    let profile = run_blocking(&state.registry, move |r| {
        r.replace_profile(&tenant, &id, &new, expected)
    })
    .await?;
    tracing::info!(tenant = %profile.tenant, profile = %profile.id, version = profile.version, "Profile replaced.");
    Ok(profile_response(StatusCode::OK, profile))
}

#[utoipa::path(delete, path = "/api/v1/profiles/{profile_id}", tag = "profiles",
    params(("profile_id" = String, Path)), security(("api_key" = [])),
    responses((status = 204, description = "Deleted"), (status = 404, body = Problem),
        (status = 409, body = Problem, description = "Devices still use the profile")))]
pub async fn delete_profile(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require_write()?;
    let tenant = caller.tenant().to_string();
    let profile = id.clone();
    run_blocking(&state.registry, move |r| {
        r.delete_profile(&tenant, &profile)
    })
    .await?;
    tracing::info!(tenant = %caller.tenant(), profile = %id, "Profile deleted.");
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportProfile {
    /// The new profile's id.
    pub id: String,
    pub name: Option<String>,
    /// `dtdl` (an Azure DTDL v2/v3 interface) or `tsl` (an Alibaba-style TSL document).
    pub format: String,
    /// The interface or TSL document.
    #[schema(value_type = Object)]
    pub document: serde_json::Value,
    /// `reject`, `flag` (default) or `off`.
    #[serde(default)]
    #[schema(value_type = String)]
    pub validation: ValidationMode,
}

#[derive(Debug, serde::Serialize, ToSchema)]
pub struct ImportedProfile {
    #[schema(value_type = Object)]
    pub profile: Profile,
    /// What could not be converted (each names the field and why).
    pub warnings: Vec<String>,
}

#[utoipa::path(post, path = "/api/v1/profiles/import", tag = "profiles", request_body = ImportProfile,
    security(("api_key" = [])),
    responses((status = 201, body = ImportedProfile, description = "Created from the document, with what was skipped"),
        (status = 409, body = Problem), (status = 422, body = Problem, description = "Not a DTDL interface / TSL document, or an unknown format")))]
pub async fn import_profile(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<ImportProfile>,
) -> ApiResult<(StatusCode, Json<ImportedProfile>)> {
    caller.require_write()?;
    let imported = match body.format.as_str() {
        "dtdl" => wulian_registry::model_import::from_dtdl(&body.document)?,
        "tsl" => wulian_registry::model_import::from_tsl(&body.document)?,
        other => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_field",
                format!("format: {other:?} is not dtdl or tsl"),
            ));
        }
    };
    let new = NewProfile {
        id: body.id,
        name: body.name,
        description: Some(format!("Imported from {}", body.format.to_uppercase())),
        model: imported.model,
        validation: body.validation,
        settings: ProfileSettings::default(),
    };
    let tenant = caller.tenant().to_string();
    let profile = run_blocking(&state.registry, move |r| r.create_profile(&tenant, &new)).await?;
    Ok((
        StatusCode::CREATED,
        Json(ImportedProfile {
            profile,
            warnings: imported.warnings,
        }),
    ))
}
