//! `/api/v1/rules`: create, update, enable and disable rules (validated on save, with the
//! parse error's line, column and expectation), try them on sample messages (dry run) or on
//! stored telemetry (replay), and read their counters.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use wulian_common::blocking::run_blocking;
use wulian_common::time::now_ms;
use wulian_ingest::RuleHost;
use wulian_ingest::rules::json_value;
use wulian_registry::{NewRule, StoredRule};
use wulian_rules::{DryRunResult, Message, Rule, RuleDefinition, RuleError, RuleStats};
use wulian_tsdb::SeriesKey;

use crate::error::{ApiError, ApiResult, Problem};
use crate::extract::{ApiJson, Caller};
use crate::routes::devices::load_device;
use crate::routes::profiles::{if_match, with_etag};
use crate::routes::twins::lifecycle;
use crate::state::AppState;

/// Samples per dry run.
pub const MAX_DRY_RUN_SAMPLES: usize = 1000;
/// Messages a replay builds from stored telemetry.
pub const MAX_REPLAY_MESSAGES: usize = 10_000;
/// Results a replay returns (the matched ones first).
const MAX_REPLAY_RESULTS: usize = 100;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleBody {
    /// 1–128 of `A-Z a-z 0-9 _ . : -`.
    pub id: String,
    pub name: Option<String>,
    pub description: Option<String>,
    /// `SELECT … FROM '<topic filter>' [WHERE …]` (docs/rules.md).
    pub sql: String,
    /// The actions (docs/rules.md): alarm, republish, command, write_telemetry, webhook.
    #[serde(default)]
    #[schema(value_type = Vec<Object>)]
    pub actions: serde_json::Value,
    /// Default true.
    pub enabled: Option<bool>,
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
    pub stats: Option<serde_json::Value>,
}

/// A stored rule with its live counters.
#[derive(Debug, Serialize, ToSchema)]
pub struct RuleView {
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub rule: StoredRule,
    /// Evaluations, matches and errors since start (enabled rules only).
    #[schema(value_type = Option<Object>)]
    pub stats: Option<RuleStats>,
}

/// A rule that does not compile: 422 with the parse position in `errors`.
fn rule_error(error: RuleError) -> ApiError {
    let detail = error.to_string();
    let extra = match &error {
        RuleError::Parse(p) => serde_json::json!([{
            "line": p.line, "column": p.column, "offset": p.offset,
            "expected": p.expected, "found": p.found,
        }]),
        RuleError::InvalidAction { index, reason } => {
            serde_json::json!([{"action": index, "reason": reason}])
        }
        RuleError::InvalidId(_) => serde_json::json!([]),
    };
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, error.code(), detail).with_errors(extra)
}

fn compile(
    tenant: &str,
    id: &str,
    sql: &str,
    actions: &serde_json::Value,
    host: &RuleHost,
) -> ApiResult<Rule> {
    let rule = RuleDefinition::from_json_actions(id, sql, actions)
        .and_then(Rule::compile)
        .map_err(rule_error)?;
    // Zones are resolved at run time; refuse names that resolve to nothing now rather than
    // save a rule that could only ever fail.
    for zone in rule.zone_names() {
        if host.zones().contains(tenant, &zone, 0.0, 0.0).is_none() {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "rule_unknown_zone",
                format!("in_zone: the tenant has no zone {zone:?}"),
            ));
        }
    }
    Ok(rule)
}

fn view(state: &AppState, rule: StoredRule) -> RuleView {
    let stats = state
        .pipeline
        .lifecycle()
        .and_then(|l| l.rules.engine().rule_stats(&rule.tenant, &rule.id));
    RuleView { rule, stats }
}

fn rule_response(status: StatusCode, view: RuleView) -> Response {
    let version = view.rule.version;
    with_etag(status, view, version)
}

fn new_rule(body: RuleBody) -> NewRule {
    NewRule {
        name: body.name.unwrap_or_else(|| body.id.clone()),
        id: body.id,
        description: body.description.unwrap_or_default(),
        sql: body.sql,
        actions: if body.actions.is_null() {
            serde_json::Value::Array(Vec::new())
        } else {
            body.actions
        },
        enabled: body.enabled.unwrap_or(true),
    }
}

#[utoipa::path(post, path = "/api/v1/rules", tag = "rules", request_body = RuleBody, security(("api_key" = [])),
    responses((status = 201, body = RuleView, description = "Saved; installed at once when enabled"),
        (status = 409, body = Problem),
        (status = 422, body = Problem, description = "rule_parse_error (errors: line, column, offset, expected, found), rule_invalid_action (errors: action, reason)")))]
pub async fn create_rule(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<RuleBody>,
) -> ApiResult<Response> {
    caller.require_write()?;
    let host = &lifecycle(&state)?.rules;
    let new = new_rule(body);
    let compiled = compile(caller.tenant(), &new.id, &new.sql, &new.actions, host)?;
    let tenant = caller.tenant().to_string();
    let stored = run_blocking(&state.registry, move |r| r.create_rule(&tenant, &new)).await?;
    host.apply(&stored, compiled);
    tracing::info!(tenant = %stored.tenant, rule = %stored.id, enabled = stored.enabled, "Rule created.");
    Ok(rule_response(StatusCode::CREATED, view(&state, stored)))
}

#[utoipa::path(get, path = "/api/v1/rules", tag = "rules", security(("api_key" = [])),
    responses((status = 200, body = Vec<RuleView>)))]
pub async fn list_rules(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Vec<RuleView>>> {
    let tenant = caller.tenant().to_string();
    let rules = run_blocking(&state.registry, move |r| r.list_rules(&tenant)).await?;
    Ok(Json(rules.into_iter().map(|r| view(&state, r)).collect()))
}

#[utoipa::path(get, path = "/api/v1/rules/{rule_id}", tag = "rules", params(("rule_id" = String, Path)),
    security(("api_key" = [])), responses((status = 200, body = RuleView), (status = 404, body = Problem)))]
pub async fn get_rule(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let tenant = caller.tenant().to_string();
    let rule = run_blocking(&state.registry, move |r| r.get_rule(&tenant, &id)).await?;
    Ok(rule_response(StatusCode::OK, view(&state, rule)))
}

#[utoipa::path(put, path = "/api/v1/rules/{rule_id}", tag = "rules", request_body = RuleBody,
    params(("rule_id" = String, Path), ("If-Match" = Option<String>, Header, description = "The version to replace")),
    security(("api_key" = [])),
    responses((status = 200, body = RuleView), (status = 404, body = Problem), (status = 412, body = Problem),
        (status = 422, body = Problem)))]
pub async fn replace_rule(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<RuleBody>,
) -> ApiResult<Response> {
    caller.require_write()?;
    let expected = if_match(&headers)?;
    let host = &lifecycle(&state)?.rules;
    let new = new_rule(body);
    let compiled = compile(caller.tenant(), &new.id, &new.sql, &new.actions, host)?;
    let tenant = caller.tenant().to_string();
    let stored = run_blocking(&state.registry, move |r| {
        r.replace_rule(&tenant, &id, &new, expected)
    })
    .await?;
    host.apply(&stored, compiled);
    Ok(rule_response(StatusCode::OK, view(&state, stored)))
}

async fn set_enabled(
    state: &AppState,
    caller: &Caller,
    id: String,
    enabled: bool,
) -> ApiResult<Response> {
    caller.require_write()?;
    let host = &lifecycle(state)?.rules;
    let tenant = caller.tenant().to_string();
    let stored = run_blocking(&state.registry, move |r| {
        r.set_rule_enabled(&tenant, &id, enabled)
    })
    .await?;
    let compiled = RuleHost::compile(&stored).map_err(rule_error)?;
    host.apply(&stored, compiled);
    Ok(rule_response(StatusCode::OK, view(state, stored)))
}

#[utoipa::path(post, path = "/api/v1/rules/{rule_id}/enable", tag = "rules", params(("rule_id" = String, Path)),
    security(("api_key" = [])), responses((status = 200, body = RuleView), (status = 404, body = Problem)))]
pub async fn enable_rule(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    set_enabled(&state, &caller, id, true).await
}

#[utoipa::path(post, path = "/api/v1/rules/{rule_id}/disable", tag = "rules", params(("rule_id" = String, Path)),
    security(("api_key" = [])), responses((status = 200, body = RuleView), (status = 404, body = Problem)))]
pub async fn disable_rule(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    set_enabled(&state, &caller, id, false).await
}

#[utoipa::path(delete, path = "/api/v1/rules/{rule_id}", tag = "rules", params(("rule_id" = String, Path)),
    security(("api_key" = [])), responses((status = 204), (status = 404, body = Problem)))]
pub async fn delete_rule(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require_write()?;
    let host = &lifecycle(&state)?.rules;
    let (tenant, rule) = (caller.tenant().to_string(), id.clone());
    run_blocking(&state.registry, move |r| r.delete_rule(&tenant, &rule)).await?;
    host.remove(caller.tenant(), &id);
    Ok(StatusCode::NO_CONTENT)
}

/// A sample message for a dry run.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Sample {
    pub device_id: String,
    /// Default `devices/{device_id}/telemetry`.
    pub topic: Option<String>,
    /// Default now.
    pub timestamp_ms: Option<i64>,
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DryRun {
    /// A rule to try; without it (on `/rules/{id}/dry-run`), the stored rule.
    pub sql: Option<String>,
    #[serde(default)]
    #[schema(value_type = Vec<Object>)]
    pub actions: serde_json::Value,
    /// Up to 1,000 messages, evaluated in order (windows accumulate across them).
    pub samples: Vec<Sample>,
}

fn samples_to_messages(tenant: &str, samples: Vec<Sample>) -> ApiResult<Vec<Message>> {
    if samples.len() > MAX_DRY_RUN_SAMPLES {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            format!("samples: at most {MAX_DRY_RUN_SAMPLES}"),
        ));
    }
    let now = now_ms();
    Ok(samples
        .into_iter()
        .map(|s| Message {
            tenant: tenant.to_string(),
            topic: s
                .topic
                .unwrap_or_else(|| wulian_common::topics::telemetry_topic(&s.device_id)),
            device_id: s.device_id,
            timestamp_ms: s.timestamp_ms.unwrap_or(now),
            payload: s.payload,
        })
        .collect())
}

#[utoipa::path(post, path = "/api/v1/rules/dry-run", tag = "rules", request_body = DryRun, security(("api_key" = [])),
    responses((status = 200, body = Vec<Object>, description = "Per sample: matched, output, reason or error, the actions that would fire"),
        (status = 422, body = Problem)))]
pub async fn dry_run(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<DryRun>,
) -> ApiResult<Json<Vec<DryRunResult>>> {
    let host = &lifecycle(&state)?.rules;
    let Some(sql) = &body.sql else {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            "sql: required",
        ));
    };
    let rule = compile(caller.tenant(), "dry-run", sql, &body.actions, host)?;
    let messages = samples_to_messages(caller.tenant(), body.samples)?;
    Ok(Json(rule.dry_run_with(
        &messages,
        host.zones().as_ref(),
        now_ms(),
    )))
}

#[utoipa::path(post, path = "/api/v1/rules/{rule_id}/dry-run", tag = "rules", request_body = DryRun,
    params(("rule_id" = String, Path)), security(("api_key" = [])),
    responses((status = 200, body = Vec<Object>), (status = 404, body = Problem)))]
pub async fn dry_run_stored(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<DryRun>,
) -> ApiResult<Json<Vec<DryRunResult>>> {
    let host = &lifecycle(&state)?.rules;
    let tenant = caller.tenant().to_string();
    let stored = run_blocking(&state.registry, move |r| r.get_rule(&tenant, &id)).await?;
    let rule = RuleHost::compile(&stored).map_err(rule_error)?;
    let messages = samples_to_messages(caller.tenant(), body.samples)?;
    Ok(Json(rule.dry_run_with(
        &messages,
        host.zones().as_ref(),
        now_ms(),
    )))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Replay {
    pub device_id: String,
    /// Start, inclusive (ms).
    pub from: i64,
    /// End, exclusive (ms).
    pub to: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReplayResult {
    /// Messages rebuilt from stored telemetry (one per timestamp; at most 10,000, the oldest).
    pub messages: usize,
    pub matched: usize,
    pub errors: usize,
    /// Actions that would have fired.
    pub actions: usize,
    /// The first results (matched ones first), at most 100.
    #[schema(value_type = Vec<Object>)]
    pub results: Vec<DryRunResult>,
}

#[utoipa::path(post, path = "/api/v1/rules/{rule_id}/replay", tag = "rules", request_body = Replay,
    params(("rule_id" = String, Path)), security(("api_key" = [])),
    responses((status = 200, body = ReplayResult, description = "What the rule would have done on the stored telemetry (no side effects)"),
        (status = 404, body = Problem)))]
pub async fn replay(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<Replay>,
) -> ApiResult<Json<ReplayResult>> {
    if body.from >= body.to {
        return Err(ApiError::bad_request(
            "invalid_range",
            "from must be before to",
        ));
    }
    let host = &lifecycle(&state)?.rules;
    let tenant = caller.tenant().to_string();
    let stored = run_blocking(&state.registry, move |r| r.get_rule(&tenant, &id)).await?;
    let rule = RuleHost::compile(&stored).map_err(rule_error)?;
    load_device(&state, caller.tenant(), &body.device_id).await?;
    let (tsdb, tenant, device) = (
        state.tsdb.clone(),
        caller.tenant().to_string(),
        body.device_id.clone(),
    );
    let (from, to) = (body.from, body.to);
    let messages = tokio::task::spawn_blocking(move || {
        let mut readings = Vec::new();
        for key in tsdb.keys(&tenant, &device) {
            let series = SeriesKey {
                tenant: tenant.clone(),
                device: device.clone(),
                key: key.clone(),
            };
            let points = tsdb.range(&series, from, to, MAX_REPLAY_MESSAGES).points;
            readings.extend(
                points
                    .into_iter()
                    .map(|p| (p.ts, key.clone(), json_value(&p.value))),
            );
        }
        wulian_rules::messages_from_readings(&tenant, &device, readings, MAX_REPLAY_MESSAGES)
    })
    .await
    .map_err(|e| ApiError::internal("Replay task failed.", &e))?;
    let mut results = rule.dry_run_with(&messages, host.zones().as_ref(), now_ms());
    let matched = results.iter().filter(|r| r.matched).count();
    let errors = results.iter().filter(|r| r.error.is_some()).count();
    let actions = results.iter().map(|r| r.actions.len()).sum();
    results.sort_by_key(|r| (!r.matched, r.index));
    results.truncate(MAX_REPLAY_RESULTS);
    Ok(Json(ReplayResult {
        messages: messages.len(),
        matched,
        errors,
        actions,
        results,
    }))
}
