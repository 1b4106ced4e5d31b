//! Request extractors that turn every rejection into a problem document, and the caller's
//! identity: an API key from the `Authorization: Bearer` header, or a person's console session
//! from the `wulian_session` cookie (with the CSRF check that cookies need).

use axum::extract::rejection::{BytesRejection, JsonRejection, QueryRejection};
use axum::extract::{FromRef, FromRequest, FromRequestParts, Query, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use bytes::Bytes;
use serde::de::DeserializeOwned;
use wulian_common::blocking::run_blocking;
use wulian_registry::{ApiKey, Role, Scope, Session};

use crate::error::ApiError;
use crate::state::AppState;

/// `axum::Json`, with problem+json rejections.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    let detail = rejection.body_text();
    match rejection {
        JsonRejection::JsonSyntaxError(_) => ApiError::bad_request("invalid_json", detail),
        JsonRejection::JsonDataError(_) => {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_body", detail)
        }
        JsonRejection::MissingJsonContentType(_) => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "expected Content-Type: application/json",
        ),
        JsonRejection::BytesRejection(bytes) => bytes_rejection(bytes),
        _ => ApiError::bad_request("invalid_body", detail),
    }
}

pub(crate) fn bytes_rejection(rejection: BytesRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            "request body exceeds the configured limit (http.max_body_bytes)",
        )
    } else {
        ApiError::bad_request("invalid_body", rejection.body_text())
    }
}

/// A raw body with problem+json rejections (used where the body is not necessarily JSON).
pub struct ApiBytes(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for ApiBytes {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        Bytes::from_request(req, state)
            .await
            .map(ApiBytes)
            .map_err(bytes_rejection)
    }
}

/// `axum::extract::Query` with problem+json rejections. Query structs use
/// `deny_unknown_fields`, so a misspelt parameter is an error rather than silently ignored.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(value)) => Ok(ApiQuery(value)),
            Err(rejection) => Err(query_rejection(rejection)),
        }
    }
}

fn query_rejection(rejection: QueryRejection) -> ApiError {
    let detail = rejection.body_text();
    if detail.contains("unknown field") {
        ApiError::bad_request("unknown_parameter", detail)
    } else {
        ApiError::bad_request("invalid_query", detail)
    }
}

/// The bearer token of a request, if any.
pub fn bearer(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    let Some(value) = headers.get(axum::http::header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value.to_str().map_err(|_| {
        ApiError::unauthorized("invalid_credentials", "malformed Authorization header")
    })?;
    match value.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(Some(token.trim()))
        }
        _ => Err(ApiError::unauthorized(
            "invalid_credentials",
            "expected Authorization: Bearer <api key>",
        )),
    }
}

/// Name of the console's session cookie (`POST /api/v1/session` sets it).
pub const SESSION_COOKIE: &str = "wulian_session";
/// The header that must carry the session's CSRF token on every state-changing request that
/// the session cookie authenticates.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The value of the session cookie, if the request carries one (the first, should there be
/// several).
pub fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.trim_matches('"'))
        .filter(|value| !value.is_empty())
}

/// Refuses (403) a request that does not carry `session`'s CSRF token in `X-CSRF-Token`.
pub fn check_csrf(headers: &HeaderMap, session: &Session) -> Result<(), ApiError> {
    let Some(presented) = headers.get(CSRF_HEADER) else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "csrf_token_missing",
            "a request authenticated by the session cookie that changes anything must carry \
             X-CSRF-Token (from POST or GET /api/v1/session)",
        ));
    };
    if constant_time_eq(presented.as_bytes(), session.csrf_token.as_bytes()) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "csrf_token_invalid",
            "X-CSRF-Token does not match the session's token (GET /api/v1/session tells it)",
        ))
    }
}

/// Equality without an early exit on the first differing byte.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Who is calling: an application by API key, or a person by console session. Every handler
/// that takes a `Caller` is authenticated; handlers check the scope they need with the
/// `require_*` methods, which work the same for both.
///
/// For a session, `key` is a stand-in built from the user, so the scope checks and every
/// handler that reads `caller.key` keep working: id `user:<username>`, name the user name, the
/// scope of the user's role ([`Role::scope`]: admin → admin, operator → read_write, viewer and
/// city_regulator → read_only), never the installation admin, no MQTT policy, `created_at`
/// the session's start. Handlers that must tell people from keys, or one role from another,
/// use [`Caller::session`], [`Caller::role`] or [`Caller::is_city_regulator`].
#[derive(Debug, Clone)]
pub struct Caller {
    pub key: ApiKey,
    /// The console session, when a person authenticated with the session cookie.
    pub session: Option<Session>,
}

impl Caller {
    /// An application with its API key.
    pub fn from_api_key(key: ApiKey) -> Caller {
        Caller { key, session: None }
    }

    /// A person with their session (see the type's documentation for the stand-in key).
    pub fn from_session(session: Session) -> Caller {
        let key = ApiKey {
            id: format!("user:{}", session.username),
            tenant: session.tenant.clone(),
            name: session.username.clone(),
            scope: session.role.scope(),
            installation_admin: false,
            created_at: session.created_at,
            last_used_at: Some(session.last_seen_at),
            revoked: false,
            mqtt_policy: None,
        };
        Caller {
            key,
            session: Some(session),
        }
    }

    pub fn tenant(&self) -> &str {
        &self.key.tenant
    }

    /// The person's role; `None` for an API key.
    pub fn role(&self) -> Option<Role> {
        self.session.as_ref().map(|s| s.role)
    }

    /// Whether a city's regulator is calling (read-only, and solutions may narrow further).
    pub fn is_city_regulator(&self) -> bool {
        self.role() == Some(Role::CityRegulator)
    }

    /// The person's user name; `None` for an API key.
    pub fn username(&self) -> Option<&str> {
        self.session.as_ref().map(|s| s.username.as_str())
    }

    /// Who acted, for audit logs: `api_key:<id>` or `user:<username>`.
    pub fn actor(&self) -> String {
        match &self.session {
            Some(session) => format!("user:{}", session.username),
            None => format!("api_key:{}", self.key.id),
        }
    }

    /// The session, or 403 `session_required` for an API key.
    pub fn require_session(&self) -> Result<&Session, ApiError> {
        self.session.as_ref().ok_or_else(|| {
            ApiError::new(
                StatusCode::FORBIDDEN,
                "session_required",
                "this endpoint is for people logged in with a session (POST /api/v1/session), \
                 not API keys",
            )
        })
    }

    pub fn require_write(&self) -> Result<(), ApiError> {
        if self.key.scope.can_write() {
            Ok(())
        } else {
            Err(ApiError::forbidden(match self.role() {
                Some(role) => format!("the {role} role may only read"),
                None => "this API key is read-only".to_string(),
            }))
        }
    }

    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.key.scope.can_admin() {
            Ok(())
        } else {
            Err(ApiError::forbidden(match self.role() {
                Some(role) => format!("this action needs the admin role; yours is {role}"),
                None => "this action needs an admin API key".to_string(),
            }))
        }
    }

    pub fn require_installation_admin(&self) -> Result<(), ApiError> {
        if self.key.installation_admin && self.key.scope == Scope::Admin {
            Ok(())
        } else {
            Err(ApiError::forbidden(
                "this action needs the installation's admin API key",
            ))
        }
    }
}

// Generic over the router's state so that solutions with a state of their own (the bike share)
// authenticate API keys and sessions the same way.
//
// A bearer header wins over a cookie, and a bad one is refused rather than falling back to the
// cookie. Requests with an API key need no CSRF token: a browser never adds that header on
// another site's behalf. A cookie, which it does add, must come with the session's CSRF token on
// every method but GET, HEAD, OPTIONS and TRACE.
impl<S> FromRequestParts<S> for Caller
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let state = AppState::from_ref(state);
        if let Some(secret) = bearer(&parts.headers)? {
            let secret = secret.to_string();
            let key = run_blocking(&state.registry, move |r| r.authenticate_api_key(&secret))
                .await
                .map_err(|e| ApiError::internal("API key lookup failed.", &e))?;
            return match key {
                Some(key) => Ok(Caller::from_api_key(key)),
                None => Err(ApiError::unauthorized(
                    "invalid_credentials",
                    "unknown or revoked API key",
                )),
            };
        }
        let Some(token) = session_cookie(&parts.headers) else {
            return Err(ApiError::unauthorized(
                "missing_credentials",
                "this endpoint needs Authorization: Bearer <api key>, or a session cookie \
                 (POST /api/v1/session)",
            ));
        };
        let token = token.to_string();
        let session = run_blocking(&state.registry, move |r| r.authenticate_session(&token))
            .await
            .map_err(|e| ApiError::internal("Session lookup failed.", &e))?;
        let Some(session) = session else {
            return Err(ApiError::unauthorized(
                "session_expired",
                "the session cookie is unknown or has expired; log in again \
                 (POST /api/v1/session)",
            ));
        };
        if !parts.method.is_safe() {
            check_csrf(&parts.headers, &session)?;
        }
        Ok(Caller::from_session(session))
    }
}

/// Refuses a WebSocket upgrade authenticated by the session cookie whose `Origin` is not this
/// server (cross-site WebSocket hijacking: browsers send cookies with a WebSocket handshake to
/// any site and apply no CORS check to it). `Origin`
/// must name the `Host`, the `X-Forwarded-Host` of a reverse proxy, or the request's authority;
/// a page can set none of these.
pub(crate) fn same_origin(headers: &HeaderMap, uri: &axum::http::Uri) -> Result<(), ApiError> {
    let origin = headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .and_then(|o| o.split_once("://"))
        .map(|(_, authority)| authority.trim_end_matches('/'));
    let Some(origin) = origin else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "origin_mismatch",
            "a WebSocket authenticated by the session cookie must come from a console page of \
             this server (Origin header); applications use Authorization: Bearer <api key>",
        ));
    };
    let named = |name: header::HeaderName| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|host| host.trim().eq_ignore_ascii_case(origin))
    };
    let by_uri = uri
        .authority()
        .is_some_and(|a| a.as_str().eq_ignore_ascii_case(origin));
    if named(header::HOST) || named(header::HeaderName::from_static("x-forwarded-host")) || by_uri {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "origin_mismatch",
            format!(
                "Origin {origin:?} is not this server; a WebSocket authenticated by the session \
                 cookie must come from this server's console"
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderMap, header};

    fn check(pairs: &[(&str, &str)], uri: &str) -> Result<(), String> {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(
                header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        same_origin(&headers, &uri.parse().unwrap()).map_err(|e| e.code.to_string())
    }

    #[test]
    fn a_session_socket_must_come_from_this_server() {
        let here = ("host", "127.0.0.1:8080");
        assert_eq!(
            check(&[here, ("origin", "http://127.0.0.1:8080")], "/ws"),
            Ok(())
        );
        assert_eq!(
            check(
                &[
                    ("host", "Console.Example"),
                    ("origin", "https://console.example")
                ],
                "/ws"
            ),
            Ok(())
        );
        // Behind a proxy that rewrites Host.
        assert_eq!(
            check(
                &[
                    ("host", "127.0.0.1:8080"),
                    ("x-forwarded-host", "iot.example.com"),
                    ("origin", "https://iot.example.com")
                ],
                "/ws"
            ),
            Ok(())
        );
        let refused = Err("origin_mismatch".to_string());
        // Another port of the same host is the same site for cookies, not the same origin.
        assert_eq!(
            check(&[here, ("origin", "http://127.0.0.1:9999")], "/ws"),
            refused
        );
        assert_eq!(
            check(&[here, ("origin", "http://evil.example")], "/ws"),
            refused
        );
        assert_eq!(check(&[here, ("origin", "null")], "/ws"), refused);
        assert_eq!(check(&[here], "/ws"), refused);
    }
}
