//! Claim provisioning (`/profiles/{id}/provisioning`, `/profiles/{id}/serials`,
//! `/provision/claim`) and the audit log (`/audit`).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use wulian_common::blocking::run_blocking;
use wulian_common::time::now_ms;
use wulian_registry::{AuditEntry, NewAuditEntry, ProvisioningSerial};

use crate::error::{ApiError, ApiResult, Problem};
use crate::extract::{ApiJson, ApiQuery, Caller, bearer};
use crate::state::AppState;

/// Claim attempts per profile per minute, successful or not.
pub const CLAIMS_PER_MINUTE: u64 = 60;
const CLAIM_ACTION: &str = "device.claim";

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ProvisioningSecret {
    pub profile: String,
    /// Shown once; only its hash is stored. Firmware of this profile carries it.
    pub secret: String,
}

#[utoipa::path(post, path = "/api/v1/profiles/{profile_id}/provisioning", tag = "provisioning",
    params(("profile_id" = String, Path)), security(("api_key" = [])),
    responses((status = 200, body = ProvisioningSecret, description = "Claim provisioning on, with a new secret (the previous one stops working)"),
        (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn enable_provisioning(
    State(state): State<AppState>,
    caller: Caller,
    Path(profile): Path<String>,
) -> ApiResult<Json<ProvisioningSecret>> {
    caller.require_admin()?;
    let (tenant, id) = (caller.tenant().to_string(), profile.clone());
    let secret = run_blocking(&state.registry, move |r| {
        r.set_provisioning_secret(&tenant, &id)
    })
    .await?;
    audit(
        &state,
        caller.tenant(),
        &caller.actor(),
        "provisioning.enable",
        &profile,
        "ok",
        "",
    )
    .await;
    Ok(Json(ProvisioningSecret { profile, secret }))
}

#[utoipa::path(delete, path = "/api/v1/profiles/{profile_id}/provisioning", tag = "provisioning",
    params(("profile_id" = String, Path)), security(("api_key" = [])),
    responses((status = 204, description = "Claim provisioning off"), (status = 404, body = Problem)))]
pub async fn disable_provisioning(
    State(state): State<AppState>,
    caller: Caller,
    Path(profile): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    let (tenant, id) = (caller.tenant().to_string(), profile.clone());
    run_blocking(&state.registry, move |r| {
        r.disable_provisioning(&tenant, &id)
    })
    .await?;
    audit(
        &state,
        caller.tenant(),
        &caller.actor(),
        "provisioning.disable",
        &profile,
        "ok",
        "",
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddSerials {
    /// Serial numbers (device id rules: they become the devices' ids), up to 10,000 per call.
    pub serials: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SerialsAdded {
    /// Serials that were not registered before.
    pub added: usize,
}

#[utoipa::path(post, path = "/api/v1/profiles/{profile_id}/serials", tag = "provisioning",
    request_body = AddSerials, params(("profile_id" = String, Path)), security(("api_key" = [])),
    responses((status = 200, body = SerialsAdded), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn add_serials(
    State(state): State<AppState>,
    caller: Caller,
    Path(profile): Path<String>,
    ApiJson(body): ApiJson<AddSerials>,
) -> ApiResult<Json<SerialsAdded>> {
    caller.require_write()?;
    let tenant = caller.tenant().to_string();
    let added = run_blocking(&state.registry, move |r| {
        r.add_provisioning_serials(&tenant, &profile, &body.serials)
    })
    .await?;
    Ok(Json(SerialsAdded { added }))
}

#[utoipa::path(get, path = "/api/v1/profiles/{profile_id}/serials", tag = "provisioning",
    params(("profile_id" = String, Path)), security(("api_key" = [])),
    responses((status = 200, body = Vec<Object>, description = "serial, created_at, claimed_at")))]
pub async fn list_serials(
    State(state): State<AppState>,
    caller: Caller,
    Path(profile): Path<String>,
) -> ApiResult<Json<Vec<ProvisioningSerial>>> {
    let tenant = caller.tenant().to_string();
    Ok(Json(
        run_blocking(&state.registry, move |r| {
            r.list_provisioning_serials(&tenant, &profile)
        })
        .await?,
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimRequest {
    pub tenant: String,
    pub profile: String,
    pub serial: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ClaimedDevice {
    pub tenant: String,
    /// The serial.
    pub device_id: String,
    pub profile: String,
    /// The device's own token: shown once, store it in the device.
    pub token: String,
}

#[utoipa::path(post, path = "/api/v1/provision/claim", tag = "provisioning", request_body = ClaimRequest,
    security(("provisioning_secret" = [])),
    responses((status = 201, body = ClaimedDevice),
        (status = 401, body = Problem, description = "Wrong or disabled provisioning secret, or no such profile"),
        (status = 403, body = Problem, description = "serial_not_registered"),
        (status = 409, body = Problem, description = "already_claimed: each serial claims once"),
        (status = 429, body = Problem, description = "Too many claims for this profile in the last minute")))]
pub async fn claim(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<ClaimRequest>,
) -> ApiResult<(StatusCode, Json<ClaimedDevice>)> {
    let Some(secret) = bearer(&headers)?.map(str::to_string) else {
        return Err(ApiError::unauthorized(
            "missing_credentials",
            "claiming needs Authorization: Bearer <provisioning secret>",
        ));
    };
    let target = format!("{}/{}", body.profile, body.serial);
    let (tenant, prefix) = (body.tenant.clone(), format!("{}/", body.profile));
    let since = now_ms() - 60_000;
    let recent = run_blocking(&state.registry, move |r| {
        r.count_audit_since(&tenant, CLAIM_ACTION, &prefix, since)
    })
    .await?;
    if recent >= CLAIMS_PER_MINUTE {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("at most {CLAIMS_PER_MINUTE} claims per profile per minute; retry later"),
        ));
    }
    let (tenant, profile, serial) = (
        body.tenant.clone(),
        body.profile.clone(),
        body.serial.clone(),
    );
    let outcome = run_blocking(&state.registry, move |r| {
        r.claim_device(&tenant, &profile, &serial, &secret)
    })
    .await?;
    let actor = format!("device:{}", body.serial);
    match outcome {
        Ok((device, token)) => {
            audit(
                &state,
                &body.tenant,
                &actor,
                CLAIM_ACTION,
                &target,
                "ok",
                "",
            )
            .await;
            tracing::info!(tenant = %body.tenant, profile = %body.profile, device_id = %device.id, "Device claimed.");
            Ok((
                StatusCode::CREATED,
                Json(ClaimedDevice {
                    tenant: device.tenant,
                    device_id: device.id,
                    profile: device.profile,
                    token,
                }),
            ))
        }
        Err(refusal) => {
            audit(
                &state,
                &body.tenant,
                &actor,
                CLAIM_ACTION,
                &target,
                refusal.code(),
                "",
            )
            .await;
            tracing::info!(tenant = %body.tenant, profile = %body.profile, code = refusal.code(), "Device claim refused.");
            let (status, detail) = match refusal {
                wulian_registry::ClaimRefusal::BadSecret => (
                    StatusCode::UNAUTHORIZED,
                    "unknown profile, provisioning off, or wrong provisioning secret",
                ),
                wulian_registry::ClaimRefusal::SerialNotRegistered => (
                    StatusCode::FORBIDDEN,
                    "this serial number is not registered for the profile",
                ),
                wulian_registry::ClaimRefusal::AlreadyClaimed => (
                    StatusCode::CONFLICT,
                    "this serial number has already claimed its credentials; ask the operator to rotate the device's token",
                ),
            };
            Err(ApiError::new(status, refusal.code(), detail))
        }
    }
}

async fn audit(
    state: &AppState,
    tenant: &str,
    actor: &str,
    action: &str,
    target: &str,
    outcome: &str,
    detail: &str,
) {
    let (tenant, actor, action, target, outcome, detail) = (
        tenant.to_string(),
        actor.to_string(),
        action.to_string(),
        target.to_string(),
        outcome.to_string(),
        detail.to_string(),
    );
    let result = run_blocking(&state.registry, move |r| {
        r.record_audit(
            &tenant,
            &NewAuditEntry {
                actor: &actor,
                action: &action,
                target: &target,
                outcome: &outcome,
                detail: &detail,
            },
        )
    })
    .await;
    if let Err(error) = result {
        tracing::error!(error = %error, "Writing the audit log failed.");
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListAudit {
    /// 1–1000, default 100.
    pub limit: Option<u32>,
    /// Entries older than this entry id (paging back).
    pub before: Option<i64>,
}

#[utoipa::path(get, path = "/api/v1/audit", tag = "provisioning", params(ListAudit), security(("api_key" = [])),
    responses((status = 200, body = Vec<Object>, description = "Newest first: id, at, actor, action, target, outcome, detail"),
        (status = 403, body = Problem)))]
pub async fn list_audit(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ListAudit>,
) -> ApiResult<Json<Vec<AuditEntry>>> {
    caller.require_admin()?;
    let tenant = caller.tenant().to_string();
    let limit = q.limit.unwrap_or(100);
    Ok(Json(
        run_blocking(&state.registry, move |r| {
            r.list_audit(&tenant, limit, q.before)
        })
        .await?,
    ))
}
