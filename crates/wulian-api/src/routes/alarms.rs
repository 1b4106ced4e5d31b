//! `/api/v1/alarms` (list, raise, acknowledge, clear, live stream), alarm webhooks, and the
//! webhook dead-letter list (`/api/v1/webhooks/dead-letters`: inspect, replay, drop).

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::error::RecvError;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use utoipa::{IntoParams, ToSchema};
use wulian_common::blocking::run_blocking;
use wulian_ingest::WebhookRequest;
use wulian_registry::{Alarm, AlarmQuery, AlarmWebhook, DeadLetter};

use crate::error::{ApiError, ApiResult, Problem};
use crate::extract::{ApiJson, ApiQuery, Caller};
use crate::routes::twins::lifecycle;
use crate::state::AppState;
use crate::websocket::{Credential, Socket, accept, authenticate};

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListAlarms {
    pub device_id: Option<String>,
    #[serde(rename = "type")]
    #[param(rename = "type")]
    pub alarm_type: Option<String>,
    /// `open` (active or acknowledged), `active`, `acknowledged` or `cleared`.
    pub status: Option<String>,
    /// `critical`, `major`, `minor`, `warning` or `indeterminate`.
    pub severity: Option<String>,
    /// Alarms created before this time (ms), for paging back.
    pub before: Option<i64>,
    /// With `before`: the id of the previous page's last alarm, whose `created_at` is
    /// `before`; the page then continues with the alarms of that same millisecond after it
    /// (the order is `created_at` newest first, then `id`), so no alarm is skipped or repeated.
    pub before_id: Option<String>,
    /// 1–1000, default 100.
    pub limit: Option<u32>,
}

#[utoipa::path(get, path = "/api/v1/alarms", tag = "alarms", params(ListAlarms), security(("api_key" = [])),
    responses((status = 200, body = Vec<Object>, description = "Newest first (then by id); the next page: `before` = the last alarm's `created_at`, `before_id` = its `id`"),
        (status = 422, body = Problem, description = "An unknown `status` or `severity`, a `limit` out of range, or `before_id` without `before`")))]
pub async fn list_alarms(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ListAlarms>,
) -> ApiResult<Json<Vec<Alarm>>> {
    let tenant = caller.tenant().to_string();
    let query = AlarmQuery {
        device_id: q.device_id,
        alarm_type: q.alarm_type,
        status: q.status,
        severity: q.severity,
        before: q.before,
        before_id: q.before_id,
        limit: q.limit.unwrap_or(100),
    };
    Ok(Json(
        run_blocking(&state.registry, move |r| r.list_alarms(&tenant, &query)).await?,
    ))
}

#[utoipa::path(get, path = "/api/v1/alarms/{alarm_id}", tag = "alarms", params(("alarm_id" = String, Path)),
    security(("api_key" = [])), responses((status = 200, body = Object), (status = 404, body = Problem)))]
pub async fn get_alarm(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Alarm>> {
    let tenant = caller.tenant().to_string();
    Ok(Json(
        run_blocking(&state.registry, move |r| r.get_alarm(&tenant, &id)).await?,
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RaiseAlarm {
    pub device_id: String,
    /// 1–64 of `A-Z a-z 0-9 _ . -`.
    #[serde(rename = "type")]
    pub alarm_type: String,
    /// critical, major, minor, warning or indeterminate.
    pub severity: String,
    /// A JSON object (at most 16 KiB).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub details: Option<serde_json::Value>,
}

#[utoipa::path(post, path = "/api/v1/alarms", tag = "alarms", request_body = RaiseAlarm, security(("api_key" = [])),
    responses((status = 200, body = Object, description = "The alarm: new, or the open one of this device and type, counted"),
        (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn raise_alarm(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<RaiseAlarm>,
) -> ApiResult<Json<Alarm>> {
    caller.require_write()?;
    let details = body
        .details
        .unwrap_or_else(|| serde_json::Value::Object(Default::default()));
    let alarm = lifecycle(&state)?
        .alarms
        .raise(
            caller.tenant(),
            &body.device_id,
            &body.alarm_type,
            &body.severity,
            &format!("api:{}", caller.key.id),
            details,
        )
        .await?;
    Ok(Json(alarm))
}

#[utoipa::path(post, path = "/api/v1/alarms/{alarm_id}/ack", tag = "alarms", params(("alarm_id" = String, Path)),
    security(("api_key" = [])),
    responses((status = 200, body = Object), (status = 404, body = Problem), (status = 409, body = Problem, description = "Not active")))]
pub async fn acknowledge_alarm(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Alarm>> {
    caller.require_write()?;
    let by = caller.actor();
    Ok(Json(
        lifecycle(&state)?
            .alarms
            .acknowledge(caller.tenant(), &id, &by)
            .await?,
    ))
}

#[utoipa::path(post, path = "/api/v1/alarms/{alarm_id}/clear", tag = "alarms", params(("alarm_id" = String, Path)),
    security(("api_key" = [])),
    responses((status = 200, body = Object), (status = 404, body = Problem), (status = 409, body = Problem, description = "Already cleared")))]
pub async fn clear_alarm(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Alarm>> {
    caller.require_write()?;
    Ok(Json(
        lifecycle(&state)?
            .alarms
            .clear_by_id(caller.tenant(), &id)
            .await?,
    ))
}

#[utoipa::path(get, path = "/api/v1/alarms/stream", tag = "alarms", security(("api_key" = [])),
    responses((status = 200, content_type = "text/event-stream",
        description = "Server-sent events: one `alarm` event per change (`{\"change\", \"alarm\"}`), `lagged` when the stream fell behind")))]
pub async fn alarm_stream(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let rx = lifecycle(&state)?.alarms.subscribe();
    let tenant = caller.tenant().to_string();
    let stream = futures_util::stream::unfold((rx, tenant), |(mut rx, tenant)| async move {
        loop {
            match rx.recv().await {
                Ok(event) if event.tenant == tenant => {
                    let data = serde_json::to_string(&event).unwrap_or_default();
                    return Some((Ok(Event::default().event("alarm").data(data)), (rx, tenant)));
                }
                Ok(_) => continue,
                Err(RecvError::Lagged(n)) => {
                    let event = Event::default().event("lagged").data(n.to_string());
                    return Some((Ok(event), (rx, tenant)));
                }
                Err(RecvError::Closed) => return None,
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

#[utoipa::path(get, path = "/api/v1/alarms/ws", tag = "alarms", security(("api_key" = []), ("session_cookie" = [])),
    responses((status = 101, description = "WebSocket: one text message per alarm change (`{\"change\", \"alarm\"}`), `{\"lagged\": n}` when the socket fell behind"),
        (status = 400, body = Problem, description = "Not a WebSocket upgrade request"),
        (status = 401, body = Problem, description = "No credential (Authorization, session cookie, or a `wulian.bearer.<API key>` subprotocol), or an unknown one"),
        (status = 403, body = Problem, description = "`origin_mismatch`: a session cookie from a page of another origin")))]
pub async fn alarm_websocket(
    State(state): State<AppState>,
    caller: Result<Caller, ApiError>,
    mut request: axum::extract::Request,
) -> ApiResult<axum::response::Response> {
    let (caller, credential) =
        authenticate(&state.registry, caller, request.headers(), request.uri()).await?;
    let rx = lifecycle(&state)?.alarms.subscribe();
    let tenant = caller.tenant().to_string();
    let registry = std::sync::Arc::clone(&state.registry);
    accept(
        &mut request,
        PROTOCOL,
        WebSocketConfig::default(),
        move |ws| async move { stream_alarms(ws, rx, &tenant, &registry, &credential).await },
    )
}

/// The subprotocol a browser offers (and the server picks) beside `wulian.bearer.<key>`.
const PROTOCOL: &str = "wulian.alarms";

/// Sends the tenant's alarm changes until the client closes or goes away; pings every 30 s so
/// idle proxies keep the connection, and ends the socket when its credential no longer
/// authenticates (a revoked key, a signed-out session), checked as often.
async fn stream_alarms(
    ws: Socket,
    mut rx: tokio::sync::broadcast::Receiver<wulian_ingest::AlarmEvent>,
    tenant: &str,
    registry: &std::sync::Arc<wulian_registry::Registry>,
    credential: &Credential,
) {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let (mut tx, mut incoming) = ws.split();
    let every = Duration::from_secs(30);
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        let outgoing = tokio::select! {
            event = rx.recv() => match event {
                Ok(event) if event.tenant == tenant => {
                    Message::text(serde_json::to_string(&event).unwrap_or_default())
                }
                Ok(_) => continue,
                Err(RecvError::Lagged(n)) => Message::text(format!("{{\"lagged\": {n}}}")),
                Err(RecvError::Closed) => break,
            },
            _ = ping.tick() => {
                if credential.still_valid(registry, tenant).await == Some(false) {
                    break;
                }
                Message::Ping(Vec::new().into())
            }
            msg = incoming.next() => match msg {
                // Pongs and anything the client sends are ignored; a close or an error ends it.
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(_)) => continue,
            },
        };
        if tx.send(outgoing).await.is_err() {
            break;
        }
    }
    let _closed = tx.close().await;
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddWebhook {
    /// http:// or https://; alarm changes are POSTed to it as JSON (`{"change", "alarm"}`).
    pub url: String,
}

#[utoipa::path(post, path = "/api/v1/alarms/webhooks", tag = "alarms", request_body = AddWebhook,
    security(("api_key" = [])), responses((status = 201, body = Object), (status = 422, body = Problem)))]
pub async fn add_alarm_webhook(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<AddWebhook>,
) -> ApiResult<(StatusCode, Json<AlarmWebhook>)> {
    caller.require_admin()?;
    let tenant = caller.tenant().to_string();
    let hook = run_blocking(&state.registry, move |r| {
        r.add_alarm_webhook(&tenant, &body.url)
    })
    .await?;
    Ok((StatusCode::CREATED, Json(hook)))
}

#[utoipa::path(get, path = "/api/v1/alarms/webhooks", tag = "alarms", security(("api_key" = [])),
    responses((status = 200, body = Vec<Object>)))]
pub async fn list_alarm_webhooks(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Vec<AlarmWebhook>>> {
    let tenant = caller.tenant().to_string();
    Ok(Json(
        run_blocking(&state.registry, move |r| r.list_alarm_webhooks(&tenant)).await?,
    ))
}

#[utoipa::path(delete, path = "/api/v1/alarms/webhooks/{webhook_id}", tag = "alarms",
    params(("webhook_id" = String, Path)), security(("api_key" = [])),
    responses((status = 204), (status = 404, body = Problem)))]
pub async fn delete_alarm_webhook(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    let tenant = caller.tenant().to_string();
    run_blocking(&state.registry, move |r| {
        r.delete_alarm_webhook(&tenant, &id)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListDeadLetters {
    /// 1–1000, default 100.
    pub limit: Option<u32>,
}

#[utoipa::path(get, path = "/api/v1/webhooks/dead-letters", tag = "alarms", params(ListDeadLetters),
    security(("api_key" = [])),
    responses((status = 200, body = Vec<Object>, description = "Webhook requests that failed every attempt, newest first")))]
pub async fn list_dead_letters(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ListDeadLetters>,
) -> ApiResult<Json<Vec<DeadLetter>>> {
    let tenant = caller.tenant().to_string();
    let limit = q.limit.unwrap_or(100);
    Ok(Json(
        run_blocking(&state.registry, move |r| {
            r.list_dead_letters(&tenant, limit)
        })
        .await?,
    ))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Replayed {
    pub id: String,
    /// The request is queued again (with a fresh set of attempts).
    pub queued: bool,
}

#[utoipa::path(post, path = "/api/v1/webhooks/dead-letters/{letter_id}/replay", tag = "alarms",
    params(("letter_id" = String, Path)), security(("api_key" = [])),
    responses((status = 202, body = Replayed), (status = 404, body = Problem)))]
pub async fn replay_dead_letter(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<Replayed>)> {
    caller.require_write()?;
    let webhooks = &lifecycle(&state)?.webhooks;
    let tenant = caller.tenant().to_string();
    let letter_id = id.clone();
    let letter = run_blocking(&state.registry, move |r| {
        r.take_dead_letter(&tenant, &letter_id)
    })
    .await?;
    webhooks.send(WebhookRequest {
        tenant: caller.tenant().to_string(),
        source: letter.source,
        url: letter.url,
        method: letter.method,
        headers: letter.headers,
        body: letter.body,
    });
    Ok((StatusCode::ACCEPTED, Json(Replayed { id, queued: true })))
}

#[utoipa::path(delete, path = "/api/v1/webhooks/dead-letters/{letter_id}", tag = "alarms",
    params(("letter_id" = String, Path)), security(("api_key" = [])),
    responses((status = 204), (status = 404, body = Problem)))]
pub async fn delete_dead_letter(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require_write()?;
    let tenant = caller.tenant().to_string();
    run_blocking(&state.registry, move |r| r.take_dead_letter(&tenant, &id)).await?;
    Ok(StatusCode::NO_CONTENT)
}
