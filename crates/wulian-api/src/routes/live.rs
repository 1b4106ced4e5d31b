//! `/api/v1/live`: a WebSocket of live device events for the caller's tenant — telemetry as it
//! is stored, connection changes, twin changes and command states — fed by the ingest crate's
//! [`LiveEvents`] hub.
//!
//! The client picks what it watches in the query (`?devices=a,b&status=all`) and may change it
//! at any time with a text message `{"type": "subscribe", "devices": [...], "status": "all"}`;
//! the server confirms every subscription with a `subscribed` message. A socket that falls
//! behind (a slow browser) loses the oldest events and gets `{"type": "lagged", "dropped": n}`;
//! memory per tenant is bounded by the hub's channel, not by the number of sockets.

use std::collections::HashSet;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use utoipa::IntoParams;
use wulian_common::blocking::run_blocking;
use wulian_ingest::live::MAX_DEVICES_PER_STREAM;
use wulian_ingest::{LiveEvents, LiveRecv, LiveSubscription};
use wulian_registry::Registry;

use crate::error::{ApiError, ApiResult, Problem};
use crate::extract::{ApiQuery, Caller};
use crate::state::AppState;
use crate::websocket::{Credential, accept, authenticate};

/// How often the socket's credential is checked again: a revoked key, a logout, an expired
/// session or a disabled user ends the stream within this time.
const REAUTH_EVERY: Duration = Duration::from_secs(30);
/// Pings keep idle proxies from closing the connection.
const PING_EVERY: Duration = Duration::from_secs(30);
/// A socket that accepts nothing for this long (a stalled client) is closed.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest client message (a subscription of the most devices with long ids fits).
const MAX_CLIENT_MESSAGE: usize = 256 * 1024;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct LiveQuery {
    /// Comma-separated ids of the tenant's devices whose telemetry, connection, twin and
    /// commands to stream (at most 1000).
    pub devices: Option<String>,
    /// `all`: connection changes of every device of the tenant (for device lists); `devices`
    /// (the default): only of the devices above.
    pub status: Option<String>,
}

/// A client's message: replaces what the socket watches.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, tag = "type", rename_all = "snake_case")]
enum ClientMessage {
    Subscribe {
        #[serde(default)]
        devices: Vec<String>,
        #[serde(default)]
        status: Option<String>,
    },
}

#[utoipa::path(get, path = "/api/v1/live", tag = "devices", params(LiveQuery),
    security(("api_key" = []), ("session_cookie" = [])),
    responses((status = 101, description = "WebSocket of JSON text messages, each with a `type`: \
        `subscribed` (`devices`, `status`), `telemetry` (`device`, `ts`, `values`), \
        `status` (`device`, `change`: connected | disconnected | inactive | active, `online`, `inactive`, `last_seen_at`, `at`), \
        `twin` (`device`, `section`, `version`, `desired`, `reported`, `delta`), \
        `command` (`device`, `command`: the command record with its status and answer), \
        `lagged` (`dropped`: events skipped because the socket fell behind), \
        `error` (`code`, `detail`: a refused subscribe message; the socket stays open)"),
        (status = 400, body = Problem, description = "Not a WebSocket upgrade (`not_a_websocket`) or a bad query"),
        (status = 401, body = Problem),
        (status = 403, body = Problem, description = "`origin_mismatch`: a session cookie from a page of another origin"),
        (status = 404, body = Problem, description = "`device_not_found`: a device of `devices` is not in the caller's tenant"),
        (status = 503, body = Problem, description = "`too_many_streams`")))]
pub async fn live_websocket(
    State(state): State<AppState>,
    caller: Result<Caller, ApiError>,
    ApiQuery(q): ApiQuery<LiveQuery>,
    mut request: axum::extract::Request,
) -> ApiResult<axum::response::Response> {
    let (caller, credential) =
        authenticate(&state.registry, caller, request.headers(), request.uri()).await?;
    let all_status = parse_status(q.status.as_deref())?;
    let devices = parse_devices(q.devices.as_deref().unwrap_or("").split(','))?;
    let tenant = caller.tenant().to_string();
    check_devices(&state.registry, &tenant, &devices).await?;
    let subscription = subscribe(state.pipeline.live(), &tenant, devices, all_status)?;
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_CLIENT_MESSAGE))
        .max_frame_size(Some(MAX_CLIENT_MESSAGE));
    let registry = std::sync::Arc::clone(&state.registry);
    accept(&mut request, PROTOCOL, config, move |ws| async move {
        let stream = Stream {
            registry,
            tenant,
            credential,
            subscription,
        };
        stream.run(ws).await;
    })
}

/// The subprotocol a browser offers (and the server picks) when it also offers its API key.
const PROTOCOL: &str = "wulian.live";
fn parse_status(status: Option<&str>) -> ApiResult<bool> {
    match status {
        None | Some("devices") => Ok(false),
        Some("all") => Ok(true),
        Some(other) => Err(ApiError::bad_request(
            "invalid_query",
            format!("status must be `all` or `devices`, not {other:?}"),
        )),
    }
}

fn parse_devices<'a>(ids: impl Iterator<Item = &'a str>) -> ApiResult<HashSet<String>> {
    let devices: HashSet<String> = ids
        .map(str::trim)
        .filter(|id| !id.is_empty())
        .map(str::to_string)
        .collect();
    if devices.len() > MAX_DEVICES_PER_STREAM {
        return Err(ApiError::bad_request(
            "too_many_devices",
            format!("a live stream may watch at most {MAX_DEVICES_PER_STREAM} devices"),
        ));
    }
    Ok(devices)
}

/// 404 `device_not_found` unless every device is the tenant's (another tenant's device reads
/// as missing, like everywhere in the API).
async fn check_devices(
    registry: &std::sync::Arc<Registry>,
    tenant: &str,
    devices: &HashSet<String>,
) -> ApiResult<()> {
    if devices.is_empty() {
        return Ok(());
    }
    let (tenant, ids) = (tenant.to_string(), devices.clone());
    run_blocking(registry, move |r| {
        ids.iter()
            .try_for_each(|id| r.get_device(&tenant, id).map(|_| ()))
    })
    .await?;
    Ok(())
}

fn subscribe(
    live: &std::sync::Arc<LiveEvents>,
    tenant: &str,
    devices: HashSet<String>,
    all_status: bool,
) -> ApiResult<LiveSubscription> {
    live.subscribe(tenant, devices, all_status).map_err(|e| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_streams",
            e.to_string(),
        )
    })
}

struct Stream {
    registry: std::sync::Arc<Registry>,
    tenant: String,
    credential: Credential,
    subscription: LiveSubscription,
}

/// Why a stream ends, when the server ends it.
enum End {
    /// The client closed, went away or stalled.
    Gone,
    /// The credential stopped working.
    Unauthorized,
}

impl Stream {
    async fn run<S>(mut self, ws: tokio_tungstenite::WebSocketStream<S>)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let (mut tx, mut incoming) = ws.split();
        let mut ping =
            tokio::time::interval_at(tokio::time::Instant::now() + PING_EVERY, PING_EVERY);
        let mut reauth =
            tokio::time::interval_at(tokio::time::Instant::now() + REAUTH_EVERY, REAUTH_EVERY);
        let mut outgoing = Some(Message::text(self.subscribed()));
        let end = loop {
            if let Some(message) = outgoing.take() {
                match tokio::time::timeout(SEND_TIMEOUT, tx.send(message)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) | Err(_) => break End::Gone,
                }
            }
            outgoing = tokio::select! {
                next = self.subscription.recv() => match next {
                    Some(LiveRecv::Event(event)) => {
                        Some(Message::text(serde_json::to_string(&*event).unwrap_or_default()))
                    }
                    Some(LiveRecv::Lagged(n)) => {
                        Some(Message::text(json!({"type": "lagged", "dropped": n}).to_string()))
                    }
                    None => break End::Gone,
                },
                _ = ping.tick() => Some(Message::Ping(Vec::new().into())),
                _ = reauth.tick() => {
                    if self.credential.still_valid(&self.registry, &self.tenant).await == Some(false) {
                        break End::Unauthorized;
                    }
                    None
                }
                msg = incoming.next() => match msg {
                    Some(Ok(Message::Text(text))) => Some(Message::text(self.on_message(text.as_str()).await)),
                    Some(Ok(Message::Binary(_))) => Some(Message::text(error_message(
                        "invalid_message",
                        "send JSON text messages",
                    ))),
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break End::Gone,
                    // Pings are answered by tungstenite; pongs need nothing.
                    Some(Ok(_)) => None,
                },
            };
        };
        if let End::Unauthorized = end {
            let frame = CloseFrame {
                code: CloseCode::Policy,
                reason: "the credential no longer authenticates; sign in again".into(),
            };
            let _sent =
                tokio::time::timeout(SEND_TIMEOUT, tx.send(Message::Close(Some(frame)))).await;
        }
        let _closed = tokio::time::timeout(SEND_TIMEOUT, tx.close()).await;
    }

    fn subscribed(&self) -> String {
        let mut devices: Vec<&String> = self.subscription.devices().iter().collect();
        devices.sort();
        let status = if self.subscription.all_status() {
            "all"
        } else {
            "devices"
        };
        json!({"type": "subscribed", "devices": devices, "status": status}).to_string()
    }

    /// Handles a client's message; returns the answer (`subscribed` or `error`).
    async fn on_message(&mut self, text: &str) -> String {
        let ClientMessage::Subscribe { devices, status } =
            match serde_json::from_str::<ClientMessage>(text) {
                Ok(message) => message,
                Err(error) => {
                    return error_message(
                        "invalid_message",
                        &format!(
                            "expected {{\"type\": \"subscribe\", \"devices\": [...], \
                             \"status\": \"all\" | \"devices\"}}: {error}"
                        ),
                    );
                }
            };
        let checked = async {
            let all_status = parse_status(status.as_deref())?;
            let devices = parse_devices(devices.iter().map(String::as_str))?;
            check_devices(&self.registry, &self.tenant, &devices).await?;
            Ok::<_, ApiError>((devices, all_status))
        };
        match checked.await {
            Ok((devices, all_status)) => match self.subscription.set(devices, all_status) {
                Ok(()) => self.subscribed(),
                Err(error) => error_message("too_many_devices", &error.to_string()),
            },
            Err(error) => error_message(error.code, &error.detail),
        }
    }
}

fn error_message(code: &str, detail: &str) -> String {
    json!({"type": "error", "code": code, "detail": detail}).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscriptions_are_parsed_strictly() {
        assert!(!parse_status(None).unwrap());
        assert!(parse_status(Some("all")).unwrap());
        assert_eq!(
            parse_status(Some("everything")).unwrap_err().code,
            "invalid_query"
        );
        let devices = parse_devices(" a, b,,a ".split(',')).unwrap();
        assert_eq!(devices.len(), 2);
        let many = (0..=MAX_DEVICES_PER_STREAM)
            .map(|i| format!("d{i}"))
            .collect::<Vec<_>>()
            .join(",");
        assert_eq!(
            parse_devices(many.split(',')).unwrap_err().code,
            "too_many_devices"
        );
    }
}
