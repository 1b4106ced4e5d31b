//! `/api/v1/devices/{id}/commands`: send a command and get the device's answer; command history.

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use wulian_common::blocking::run_blocking;
use wulian_ingest::commands::DEFAULT_TIMEOUT;
use wulian_ingest::{CommandError, CommandRequest};
use wulian_registry::Command;

use crate::error::{ApiError, ApiResult, Problem};
use crate::extract::{ApiJson, ApiQuery, Caller};
use crate::state::AppState;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendCommand {
    /// 1–64 characters of `A-Z a-z 0-9 _ . -`; the device receives it on `devices/{id}/commands/{name}`.
    pub name: String,
    /// Any JSON; passed to the device as `params`.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub params: serde_json::Value,
    /// How long to wait for the device's answer, 100–300,000 ms (default 10,000).
    pub timeout_ms: Option<u64>,
    /// true (default): answer when the device answers or the timeout passes.
    /// false: answer 202 at once; poll the command's URL for its status.
    pub wait: Option<bool>,
}

/// A command and, once the device answered, its answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CommandView {
    pub id: String,
    pub device_id: String,
    pub name: String,
    #[schema(value_type = Object)]
    pub params: serde_json::Value,
    /// pending, sent, succeeded, failed, timed_out or undelivered (the device was not subscribed).
    pub status: String,
    /// The device's answer (JSON, or a string if the answer was not JSON).
    #[schema(value_type = Option<Object>)]
    pub response: Option<serde_json::Value>,
    pub timeout_ms: u64,
    pub created_at: i64,
    pub updated_at: i64,
}

impl From<Command> for CommandView {
    fn from(c: Command) -> CommandView {
        CommandView {
            id: c.id,
            device_id: c.device_id,
            name: c.name,
            params: c.params,
            status: c.status.to_string(),
            response: c.response,
            timeout_ms: c.timeout_ms,
            created_at: c.created_at,
            updated_at: c.updated_at,
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListCommands {
    /// 1–1000, default 50.
    pub limit: Option<u32>,
    /// Only commands created before this time (ms); for paging back.
    pub before: Option<i64>,
}

#[utoipa::path(post, path = "/api/v1/devices/{id}/commands", tag = "commands", request_body = SendCommand,
    params(("id" = String, Path, description = "Device id")), security(("api_key" = [])),
    responses((status = 200, body = CommandView, description = "Finished: succeeded, failed, timed_out or undelivered"),
        (status = 202, body = CommandView, description = "Sent (wait = false)"),
        (status = 400, body = Problem), (status = 404, body = Problem)))]
pub async fn send_command(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<SendCommand>,
) -> ApiResult<(StatusCode, Json<CommandView>)> {
    caller.require_write()?;
    check_against_model(&state, caller.tenant(), &id, &body.name, &body.params).await?;
    let request = CommandRequest {
        name: body.name,
        params: body.params,
        timeout: body
            .timeout_ms
            .map_or(DEFAULT_TIMEOUT, Duration::from_millis),
    };
    let sent = state
        .commands
        .send(caller.tenant(), &id, request)
        .await
        .map_err(|e| match e {
            CommandError::Registry(e) => ApiError::from(e),
            CommandError::TooManyPending => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "too_many_pending",
                e.to_string(),
            ),
            other => ApiError::bad_request("invalid_command", other.to_string()),
        })?;
    if body.wait == Some(false) {
        return Ok((StatusCode::ACCEPTED, Json(sent.command.into())));
    }
    match sent.finished.await {
        Ok(done) => Ok((StatusCode::OK, Json(done.into()))),
        Err(_) => Err(ApiError::internal(
            "Command finished without a result.",
            &"sender dropped",
        )),
    }
}

/// Refuses a command the device's thing model does not declare, or parameters that break it
/// (422 `invalid_params` with one entry per violation). Devices without a model take anything.
async fn check_against_model(
    state: &AppState,
    tenant: &str,
    device: &str,
    name: &str,
    params: &serde_json::Value,
) -> ApiResult<()> {
    let Some(lifecycle) = state.pipeline.lifecycle() else {
        return Ok(());
    };
    let Some(profile) = lifecycle.models.profile(tenant, device).await else {
        return Ok(());
    };
    let violations = profile.model.check_command(name, params);
    if violations.is_empty() {
        return Ok(());
    }
    let detail = violations
        .iter()
        .map(|v| format!("{}: {}", v.key, v.detail))
        .collect::<Vec<_>>()
        .join("; ");
    Err(ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_params",
        format!(
            "the command breaks profile {:?}'s thing model: {detail}",
            profile.id
        ),
    )
    .with_errors(violations))
}

#[utoipa::path(get, path = "/api/v1/devices/{id}/commands", tag = "commands",
    params(("id" = String, Path, description = "Device id"), ListCommands), security(("api_key" = [])),
    responses((status = 200, body = Vec<CommandView>, description = "Newest first"), (status = 404, body = Problem)))]
pub async fn list_commands(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<ListCommands>,
) -> ApiResult<Json<Vec<CommandView>>> {
    let limit = q.limit.unwrap_or(50);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_query",
            "limit must be between 1 and 1000",
        ));
    }
    let tenant = caller.tenant().to_string();
    let commands = run_blocking(&state.registry, move |r| {
        r.get_device(&tenant, &id)?;
        r.list_commands(&tenant, &id, limit, q.before)
    })
    .await?;
    Ok(Json(commands.into_iter().map(CommandView::from).collect()))
}

#[utoipa::path(get, path = "/api/v1/devices/{id}/commands/{command_id}", tag = "commands",
    params(("id" = String, Path, description = "Device id"), ("command_id" = String, Path, description = "Command id")),
    security(("api_key" = [])),
    responses((status = 200, body = CommandView), (status = 404, body = Problem)))]
pub async fn get_command(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, command_id)): Path<(String, String)>,
) -> ApiResult<Json<CommandView>> {
    let tenant = caller.tenant().to_string();
    let command = run_blocking(&state.registry, move |r| {
        r.get_command(&tenant, &id, &command_id)
    })
    .await?;
    Ok(Json(command.into()))
}
