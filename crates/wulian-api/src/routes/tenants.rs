//! `/api/v1/tenants` and `/api/v1/api-keys`: who may use the installation.
//!
//! Tenants are managed only with the installation's admin key (created on first start). Within
//! a tenant, admin keys manage that tenant's keys; the installation admin may also act on any
//! tenant's keys by naming the tenant, which is how a new tenant gets its first key. A tenant's
//! telemetry retention is the installation admin's to set too (it is the installation's disk).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use wulian_common::blocking::run_blocking;
use wulian_registry::{ApiKey, MqttPolicy, NewTenant, Scope, Tenant, TenantPatch, TopicRules};

use crate::error::{ApiError, ApiResult, Problem};
use crate::extract::{ApiJson, ApiQuery, Caller};
use crate::state::AppState;

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TenantView {
    pub id: String,
    pub name: String,
    pub created_at: i64,
    /// Days the raw telemetry of the tenant's devices is kept, unless their profile sets its
    /// own (`settings.retention_days`); null: the installation's `storage.retention_days`.
    pub retention_days: Option<u32>,
}

impl From<Tenant> for TenantView {
    fn from(t: Tenant) -> TenantView {
        TenantView {
            id: t.id,
            name: t.name,
            created_at: t.created_at,
            retention_days: t.retention_days,
        }
    }
}

/// A JSON merge patch of a tenant: fields left out stay as they are.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateTenant {
    /// 1 to 200 characters.
    pub name: Option<String>,
    /// Days of raw telemetry to keep, 1 to 36500; `null` goes back to the installation's
    /// `storage.retention_days`. Applied by the hourly retention task, a whole day at a time;
    /// the hourly and minute summaries keep their own retention.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<u32>, minimum = 1, maximum = 36500)]
    pub retention_days: Option<Option<u32>>,
}

/// For merge-patch fields: a field that is present (even `null`) is `Some`, an absent one
/// (through `#[serde(default)]`) `None`.
fn present<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    /// Optional slug (`[a-z0-9][a-z0-9-]{0,62}`); generated when absent.
    pub id: Option<String>,
    pub name: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ApiKeyView {
    pub id: String,
    pub tenant: String,
    pub name: String,
    /// admin, read_write or read_only.
    pub scope: String,
    pub installation_admin: bool,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub revoked: bool,
    /// What the key may do when an application connects over MQTT with it (the key's own
    /// policy, or its scope's default).
    pub mqtt_policy: MqttPolicyBody,
    /// The secret: present only in the response that created the key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

impl ApiKeyView {
    fn new(key: ApiKey, secret: Option<String>) -> ApiKeyView {
        let mqtt_policy = key.effective_mqtt_policy().into();
        ApiKeyView {
            mqtt_policy,
            id: key.id,
            tenant: key.tenant,
            name: key.name,
            scope: key.scope.to_string(),
            installation_admin: key.installation_admin,
            created_at: key.created_at,
            last_used_at: key.last_used_at,
            revoked: key.revoked,
            secret,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKey {
    pub name: String,
    /// admin, read_write or read_only.
    pub scope: String,
    /// Another tenant (installation admin only); the caller's tenant when absent.
    pub tenant: Option<String>,
    /// MQTT topic policy for applications connecting with this key; the scope's default when
    /// absent (read_only: subscribe `devices/+/telemetry`, `devices/+/events/#`,
    /// `devices/+/twin/updated`, `devices/+/presence`, `alarms/#`; read_write and
    /// admin: also publish `devices/+/commands/#` and subscribe `devices/+/commands/+/response`).
    pub mqtt_policy: Option<MqttPolicyBody>,
}

/// Allow and deny topic filters for one direction; deny beats allow. Filters may use
/// `${tenant}` and `${key_id}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TopicRulesBody {
    #[serde(default)]
    pub allow: Vec<String>,
    #[serde(default)]
    pub deny: Vec<String>,
}

/// `{"publish": {"allow": [...], "deny": [...]}, "subscribe": {...}}`
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MqttPolicyBody {
    #[serde(default)]
    pub publish: TopicRulesBody,
    #[serde(default)]
    pub subscribe: TopicRulesBody,
}

impl From<MqttPolicy> for MqttPolicyBody {
    fn from(p: MqttPolicy) -> MqttPolicyBody {
        let rules = |r: TopicRules| TopicRulesBody {
            allow: r.allow,
            deny: r.deny,
        };
        MqttPolicyBody {
            publish: rules(p.publish),
            subscribe: rules(p.subscribe),
        }
    }
}

impl From<MqttPolicyBody> for MqttPolicy {
    fn from(p: MqttPolicyBody) -> MqttPolicy {
        let rules = |r: TopicRulesBody| TopicRules {
            allow: r.allow,
            deny: r.deny,
        };
        MqttPolicy {
            publish: rules(p.publish),
            subscribe: rules(p.subscribe),
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct TenantParam {
    /// Another tenant (installation admin only); the caller's tenant when absent.
    pub tenant: Option<String>,
}

/// The tenant an admin call acts on: the caller's own, or (installation admin only) another.
fn target_tenant(caller: &Caller, requested: Option<String>) -> ApiResult<String> {
    caller.require_admin()?;
    match requested {
        Some(t) if t != caller.tenant() => {
            caller.require_installation_admin()?;
            Ok(t)
        }
        _ => Ok(caller.tenant().to_string()),
    }
}

#[utoipa::path(get, path = "/api/v1/tenants", tag = "tenants", security(("api_key" = [])),
    responses((status = 200, body = Vec<TenantView>), (status = 403, body = Problem)))]
pub async fn list_tenants(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Vec<TenantView>>> {
    caller.require_installation_admin()?;
    let tenants = run_blocking(&state.registry, |r| r.list_tenants()).await?;
    Ok(Json(tenants.into_iter().map(TenantView::from).collect()))
}

#[utoipa::path(post, path = "/api/v1/tenants", tag = "tenants", request_body = CreateTenant,
    security(("api_key" = [])),
    responses((status = 201, body = TenantView), (status = 403, body = Problem), (status = 409, body = Problem)))]
pub async fn create_tenant(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateTenant>,
) -> ApiResult<(StatusCode, Json<TenantView>)> {
    caller.require_installation_admin()?;
    let new = NewTenant {
        id: body.id,
        name: body.name,
    };
    let tenant = run_blocking(&state.registry, move |r| r.create_tenant(&new)).await?;
    tracing::info!(tenant_id = %tenant.id, "Tenant created.");
    Ok((StatusCode::CREATED, Json(tenant.into())))
}

#[utoipa::path(get, path = "/api/v1/tenants/{tenant}", tag = "tenants",
    params(("tenant" = String, Path, description = "Tenant id")), security(("api_key" = [])),
    responses((status = 200, body = TenantView), (status = 404, body = Problem)))]
pub async fn get_tenant(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<TenantView>> {
    // A tenant may read its own record; other tenants need the installation admin.
    if id != caller.tenant() {
        caller.require_installation_admin()?;
    }
    let tenant = run_blocking(&state.registry, move |r| r.get_tenant(&id)).await?;
    Ok(Json(tenant.into()))
}

#[utoipa::path(patch, path = "/api/v1/tenants/{tenant}", tag = "tenants", request_body = UpdateTenant,
    params(("tenant" = String, Path, description = "Tenant id")), security(("api_key" = [])),
    responses((status = 200, body = TenantView), (status = 403, body = Problem),
        (status = 404, body = Problem),
        (status = 422, body = Problem, description = "A field is invalid, e.g. `retention_days` out of 1–36500")))]
pub async fn update_tenant(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<UpdateTenant>,
) -> ApiResult<Json<TenantView>> {
    caller.require_installation_admin()?;
    let patch = TenantPatch {
        name: body.name,
        retention_days: body.retention_days,
    };
    let tenant = run_blocking(&state.registry, move |r| r.update_tenant(&id, &patch)).await?;
    tracing::info!(tenant_id = %tenant.id, retention_days = tenant.retention_days, "Tenant updated.");
    Ok(Json(tenant.into()))
}

#[utoipa::path(delete, path = "/api/v1/tenants/{tenant}", tag = "tenants",
    params(("tenant" = String, Path, description = "Tenant id")), security(("api_key" = [])),
    responses((status = 204, description = "Deleted with its keys, devices and commands"), (status = 404, body = Problem),
        (status = 409, body = Problem)))]
pub async fn delete_tenant(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require_installation_admin()?;
    if id == caller.tenant() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            "the installation admin's own tenant cannot be deleted",
        ));
    }
    let tenant = id.clone();
    let devices = run_blocking(&state.registry, move |r| {
        let devices = r.all_device_ids(&tenant)?;
        r.delete_tenant(&tenant)?;
        Ok::<_, wulian_registry::Error>(devices)
    })
    .await?;
    for device in devices {
        crate::routes::devices::disconnect(&state, &id, &device, "tenant deleted");
        state
            .tsdb
            .delete_device(&id, &device)
            .await
            .map_err(|e| ApiError::internal("Deleting tenant telemetry failed.", &e))?;
    }
    tracing::info!(tenant_id = %id, "Tenant deleted.");
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/v1/api-keys", tag = "api keys", params(TenantParam),
    security(("api_key" = [])), responses((status = 200, body = Vec<ApiKeyView>), (status = 403, body = Problem)))]
pub async fn list_api_keys(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<TenantParam>,
) -> ApiResult<Json<Vec<ApiKeyView>>> {
    let tenant = target_tenant(&caller, q.tenant)?;
    let keys = run_blocking(&state.registry, move |r| r.list_api_keys(&tenant)).await?;
    Ok(Json(
        keys.into_iter().map(|k| ApiKeyView::new(k, None)).collect(),
    ))
}

#[utoipa::path(post, path = "/api/v1/api-keys", tag = "api keys", request_body = CreateApiKey,
    security(("api_key" = [])),
    responses((status = 201, body = ApiKeyView, description = "Created; `secret` is shown only here"),
        (status = 403, body = Problem), (status = 422, body = Problem)))]
pub async fn create_api_key(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateApiKey>,
) -> ApiResult<(StatusCode, Json<ApiKeyView>)> {
    let tenant = target_tenant(&caller, body.tenant)?;
    let scope: Scope = body.scope.parse().map_err(|_| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            "scope: must be admin, read_write or read_only",
        )
    })?;
    let name = body.name;
    let policy = body.mqtt_policy.map(MqttPolicy::from);
    let created = run_blocking(&state.registry, move |r| {
        r.get_tenant(&tenant)?;
        r.create_api_key_with_policy(&tenant, &name, scope, policy)
    })
    .await?;
    tracing::info!(tenant = %created.key.tenant, key_id = %created.key.id, scope = %created.key.scope, "API key created.");
    Ok((
        StatusCode::CREATED,
        Json(ApiKeyView::new(created.key, Some(created.secret))),
    ))
}

#[utoipa::path(delete, path = "/api/v1/api-keys/{key_id}", tag = "api keys",
    params(("key_id" = String, Path, description = "API key id"), TenantParam), security(("api_key" = [])),
    responses((status = 204, description = "Revoked"), (status = 404, body = Problem)))]
pub async fn revoke_api_key(
    State(state): State<AppState>,
    caller: Caller,
    Path(key_id): Path<String>,
    ApiQuery(q): ApiQuery<TenantParam>,
) -> ApiResult<StatusCode> {
    let tenant = target_tenant(&caller, q.tenant)?;
    let id = key_id.clone();
    run_blocking(&state.registry, move |r| r.revoke_api_key(&tenant, &id)).await?;
    tracing::info!(key_id = %key_id, "API key revoked.");
    Ok(StatusCode::NO_CONTENT)
}
