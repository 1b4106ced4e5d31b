//! What the API's WebSocket endpoints (`/alarms/ws`, `/live`) share: who the caller is, the
//! RFC 6455 handshake, and checking the credential again while a socket stays open.
//!
//! Three ways in: `Authorization: Bearer <API key>` (applications); the console's session
//! cookie, only from this server's own pages (`extract::same_origin`: browsers send cookies
//! with a cross-site WebSocket handshake); and an API key offered as a subprotocol
//! (`wulian.bearer.<key>`), because a browser cannot set `Authorization` on a WebSocket.

use std::future::Future;
use std::sync::Arc;

use axum::extract::Request;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use wulian_common::blocking::run_blocking;
use wulian_registry::Registry;

use crate::error::{ApiError, ApiResult};
use crate::extract::{Caller, bearer, session_cookie};

/// Prefix of the offered subprotocol that carries an API key (`new WebSocket(url,
/// [protocol, "wulian.bearer." + key])`). Other sites cannot use it without the key, so it needs
/// no Origin check.
const BEARER_PROTOCOL_PREFIX: &str = "wulian.bearer.";

/// A server-side WebSocket over the upgraded HTTP connection.
pub(crate) type Socket = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// What authenticated the handshake, kept to check it again while the socket is open.
pub(crate) enum Credential {
    ApiKey(String),
    Session(String),
}

/// The caller of a WebSocket handshake and its credential. `caller` is the usual extractor's
/// answer; without a header credential, an API key offered as a subprotocol is tried.
pub(crate) async fn authenticate(
    registry: &Arc<Registry>,
    caller: Result<Caller, ApiError>,
    headers: &HeaderMap,
    uri: &axum::http::Uri,
) -> ApiResult<(Caller, Credential)> {
    let (caller, credential) = match caller {
        Ok(caller) => (caller, Credential::of(headers)?),
        Err(error) if error.code == "missing_credentials" => {
            protocol_caller(registry, &offered_protocols(headers), error).await?
        }
        Err(error) => return Err(error),
    };
    if caller.session.is_some() {
        crate::extract::same_origin(headers, uri)?;
    }
    Ok((caller, credential))
}

/// Answers the handshake (101, naming `protocol` when the client offered it: a browser fails the
/// connection otherwise) and runs `serve` on the socket once the connection is upgraded.
pub(crate) fn accept<F, Fut>(
    request: &mut Request,
    protocol: &'static str,
    config: WebSocketConfig,
    serve: F,
) -> ApiResult<Response>
where
    F: FnOnce(Socket) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let key = websocket_key(request.headers())?;
    let offers_protocol = offered_protocols(request.headers())
        .iter()
        .any(|p| p == protocol);
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(&key);
    let upgrade = hyper::upgrade::on(request);
    tokio::spawn(async move {
        let upgraded = match upgrade.await {
            Ok(upgraded) => upgraded,
            Err(error) => {
                tracing::debug!(error = %error, protocol, "WebSocket upgrade failed.");
                return;
            }
        };
        let socket =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config))
                .await;
        serve(socket).await;
    });
    let mut response = axum::http::Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header("upgrade", "websocket")
        .header("connection", "Upgrade")
        .header("sec-websocket-accept", accept);
    if offers_protocol {
        response = response.header("sec-websocket-protocol", protocol);
    }
    response
        .body(axum::body::Body::empty())
        .map_err(|e| ApiError::internal("Building the upgrade response failed.", &e))
}

impl Credential {
    fn of(headers: &HeaderMap) -> ApiResult<Credential> {
        if let Some(secret) = bearer(headers)? {
            return Ok(Credential::ApiKey(secret.to_string()));
        }
        session_cookie(headers)
            .map(|token| Credential::Session(token.to_string()))
            .ok_or_else(|| {
                ApiError::unauthorized("missing_credentials", "no API key or session cookie")
            })
    }

    /// Whether the credential still authenticates someone of `tenant`. `None`: the registry
    /// could not tell (the socket stays open and the next check decides).
    pub(crate) async fn still_valid(&self, registry: &Arc<Registry>, tenant: &str) -> Option<bool> {
        let tenant = tenant.to_string();
        let result = match self {
            Credential::ApiKey(secret) => {
                let secret = secret.clone();
                run_blocking(registry, move |r| {
                    r.authenticate_api_key(&secret)
                        .map(|key| key.is_some_and(|k| k.tenant == tenant))
                })
                .await
            }
            Credential::Session(token) => {
                let token = token.clone();
                run_blocking(registry, move |r| {
                    r.authenticate_session(&token)
                        .map(|s| s.is_some_and(|s| s.tenant == tenant))
                })
                .await
            }
        };
        match result {
            Ok(valid) => Some(valid),
            Err(error) => {
                tracing::warn!(error = %error, "Re-checking a WebSocket's credential failed.");
                None
            }
        }
    }
}

fn offered_protocols(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all("sec-websocket-protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

/// The caller named by an API key offered as a subprotocol; `missing` when none is offered.
async fn protocol_caller(
    registry: &Arc<Registry>,
    offered: &[String],
    missing: ApiError,
) -> ApiResult<(Caller, Credential)> {
    let Some(secret) = offered
        .iter()
        .find_map(|p| p.strip_prefix(BEARER_PROTOCOL_PREFIX))
        .map(str::to_string)
    else {
        return Err(missing);
    };
    let lookup = secret.clone();
    let key = run_blocking(registry, move |r| r.authenticate_api_key(&lookup))
        .await
        .map_err(|e| ApiError::internal("API key lookup failed.", &e))?
        .ok_or_else(|| {
            ApiError::unauthorized("invalid_credentials", "unknown or revoked API key")
        })?;
    Ok((Caller::from_api_key(key), Credential::ApiKey(secret)))
}

/// The handshake's `Sec-WebSocket-Key`, once the request is a WebSocket upgrade (RFC 6455).
fn websocket_key(headers: &HeaderMap) -> ApiResult<Vec<u8>> {
    let has = |name: &str, token: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|v| v.trim().eq_ignore_ascii_case(token))
    };
    headers
        .get("sec-websocket-key")
        .map(|k| k.as_bytes().to_vec())
        .filter(|_| has("upgrade", "websocket") && has("connection", "upgrade"))
        .filter(|_| has("sec-websocket-version", "13"))
        .ok_or_else(|| {
            ApiError::bad_request(
                "not_a_websocket",
                "this endpoint speaks WebSocket (RFC 6455): send Upgrade: websocket, \
                 Connection: Upgrade, Sec-WebSocket-Version: 13 and a Sec-WebSocket-Key",
            )
        })
}
