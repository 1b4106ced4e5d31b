//! `/api/v1/session`: people log in to the console with a user name and password, get a session
//! cookie and a CSRF token, and log out.
//!
//! The cookie: `wulian_session=<wls_…>; Path=/; HttpOnly; SameSite=Strict; Max-Age=<lifetime>`,
//! plus `Secure` when `sessions.secure_cookies` is on or the request reached a TLS-terminating
//! proxy (`X-Forwarded-Proto: https`, `Forwarded: proto=https`). wulian's own HTTP listener is
//! plain HTTP, so the flag cannot follow the connection; trusting the proxy's header is safe
//! here because a forged one can only make the cookie stricter.
//!
//! CSRF: synchronizer tokens. Each session has its own random token, returned at login and by
//! `GET /session`; the [`Caller`] extractor refuses (403) any request but GET/HEAD/OPTIONS that a
//! cookie authenticates without it in `X-CSRF-Token`. `SameSite=Strict` is a second line.
//!
//! Failed logins are throttled per (tenant, user name) and per client address (the TCP peer;
//! behind a proxy every client shares the proxy's address, see docs/api.md), answered 429 with
//! `Retry-After`, and audited without the password — and without the user name when no such
//! user exists, since people type passwords into the name field. An unknown user costs the same
//! hash as a known one.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Json;
use axum::Router;
use axum::extract::connect_info::ConnectInfo;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use wulian_common::blocking::run_blocking;
use wulian_registry::{
    LoginCheck, LoginThrottle, NewAuditEntry, PasswordChange, Session, SessionTimeouts,
};

use crate::error::{ApiError, ApiResult, Problem};
use crate::extract::{ApiJson, Caller, SESSION_COOKIE, check_csrf, session_cookie};
use crate::routes::users::user_error;
use crate::state::AppState;

/// Sessions and the login throttle. The binary applies its `[sessions]` configuration with
/// [`with_sessions`]; a router without it uses [`SessionConfig::default`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    /// A session unused this long ends.
    pub idle_timeout: Duration,
    /// A session ends this long after login, however active.
    pub lifetime: Duration,
    /// Always mark the cookie `Secure` (the deployment is served over HTTPS).
    pub secure_cookies: bool,
    /// Failed logins per (tenant, user name) within `failure_window` before 429.
    pub max_failures_per_user: u32,
    /// Failed logins per client address within `failure_window` before 429.
    pub max_failures_per_client: u32,
    pub failure_window: Duration,
}

impl Default for SessionConfig {
    fn default() -> SessionConfig {
        SessionConfig {
            // A working day.
            idle_timeout: Duration::from_secs(8 * 3600),
            lifetime: Duration::from_secs(7 * 24 * 3600),
            // The default listener is plain HTTP on loopback.
            secure_cookies: false,
            max_failures_per_user: 10,
            // Higher than per user: an office behind one NAT address shares it.
            max_failures_per_client: 30,
            failure_window: Duration::from_secs(15 * 60),
        }
    }
}

impl SessionConfig {
    pub fn timeouts(&self) -> SessionTimeouts {
        SessionTimeouts {
            idle: self.idle_timeout,
            lifetime: self.lifetime,
        }
    }

    pub fn throttle(&self) -> LoginThrottle {
        LoginThrottle {
            max_failures_per_user: self.max_failures_per_user,
            max_failures_per_client: self.max_failures_per_client,
            window: self.failure_window,
        }
    }
}

/// `router` with session settings for its handlers.
pub fn with_sessions(router: Router, config: SessionConfig) -> Router {
    router.layer(axum::Extension(config))
}

/// The router's [`SessionConfig`].
pub struct Settings(pub SessionConfig);

impl<S: Send + Sync> FromRequestParts<S> for Settings {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Settings(
            parts
                .extensions
                .get::<SessionConfig>()
                .cloned()
                .unwrap_or_default(),
        ))
    }
}

/// The client's address: the TCP peer `serve` records; `unknown` where none is recorded
/// (in-process requests).
pub struct ClientAddr(pub String);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientAddr(
            parts
                .extensions
                .get::<ConnectInfo<std::net::SocketAddr>>()
                .map_or_else(|| "unknown".to_string(), |info| info.0.ip().to_string()),
        ))
    }
}

/// Password hashes (Argon2id: ~19 MiB and tens of milliseconds each) running at once. More
/// would let a burst of logins take the machine's memory and every core.
const MAX_CONCURRENT_HASHES: usize = 4;
/// How long a request waits for a hashing slot before 503 `busy`.
const HASH_WAIT: Duration = Duration::from_secs(10);
static HASHING: AtomicUsize = AtomicUsize::new(0);

/// A slot to hash or verify one password; move it into the blocking closure so it is held
/// for as long as the work runs, even if the request goes away.
pub(crate) struct HashPermit(());

impl Drop for HashPermit {
    fn drop(&mut self) {
        HASHING.fetch_sub(1, Ordering::AcqRel);
    }
}

pub(crate) async fn hash_permit() -> ApiResult<HashPermit> {
    let deadline = Instant::now() + HASH_WAIT;
    loop {
        let running = HASHING.load(Ordering::Acquire);
        if running < MAX_CONCURRENT_HASHES
            && HASHING
                .compare_exchange(running, running + 1, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            return Ok(HashPermit(()));
        }
        if Instant::now() >= deadline {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                "too many password checks are running; retry in a moment",
            ));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A refusal: a problem document, or 429 with `Retry-After`.
pub enum Refusal {
    Api(ApiError),
    Throttled(Duration),
}

impl From<ApiError> for Refusal {
    fn from(error: ApiError) -> Refusal {
        Refusal::Api(error)
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::Api(error) => error.into_response(),
            Refusal::Throttled(wait) => {
                let secs = wait.as_secs().max(1);
                let mut response = ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too_many_attempts",
                    format!("too many failed password attempts; retry in {secs} s"),
                )
                .into_response();
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs));
                response
            }
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Login {
    pub tenant: String,
    /// Case-insensitive.
    pub username: String,
    pub password: String,
}

/// The session as the console sees it. The cookie itself is never in a body.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SessionView {
    pub tenant: String,
    pub username: String,
    /// admin, operator, viewer or city_regulator.
    pub role: String,
    /// Send it back in `X-CSRF-Token` on every request but GET/HEAD/OPTIONS.
    pub csrf_token: String,
    pub session_id: String,
    pub created_at: i64,
    /// The session's absolute end (ms since the epoch).
    pub expires_at: i64,
    /// The session ends if no request comes for this long.
    pub idle_timeout_secs: i64,
}

impl From<&Session> for SessionView {
    fn from(s: &Session) -> SessionView {
        SessionView {
            tenant: s.tenant.clone(),
            username: s.username.clone(),
            role: s.role.to_string(),
            csrf_token: s.csrf_token.clone(),
            session_id: s.id.clone(),
            created_at: s.created_at,
            expires_at: s.expires_at,
            idle_timeout_secs: s.idle_timeout_ms / 1000,
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePassword {
    pub old_password: String,
    /// At least 10 characters, not the user name, not a common password.
    pub new_password: String,
}

#[utoipa::path(post, path = "/api/v1/session", tag = "sessions", request_body = Login,
    responses(
        (status = 200, body = SessionView, description = "Logged in",
            headers(("Set-Cookie" = String, description = "wulian_session=…; Path=/; HttpOnly; SameSite=Strict; Max-Age=…[; Secure]"))),
        (status = 401, body = Problem, description = "`invalid_credentials`: unknown tenant or user, wrong password, or disabled user (not told apart)"),
        (status = 429, body = Problem, description = "`too_many_attempts`; see Retry-After"),
        (status = 503, body = Problem, description = "`busy`: too many password checks at once")))]
pub async fn login(
    State(state): State<AppState>,
    Settings(config): Settings,
    ClientAddr(client): ClientAddr,
    headers: HeaderMap,
    ApiJson(body): ApiJson<Login>,
) -> Result<Response, Refusal> {
    let Login {
        tenant,
        username,
        password,
    } = body;
    let username = username.trim().to_ascii_lowercase();
    let throttle = config.throttle();
    let wait = {
        let (tenant, username, client) = (tenant.clone(), username.clone(), client.clone());
        run_blocking(&state.registry, move |r| {
            r.login_throttled(&tenant, &username, &client, &throttle)
        })
        .await
        .map_err(ApiError::from)?
    };
    if let Some(wait) = wait {
        tracing::debug!(tenant = %tenant, client = %client, "Login refused: too many failures.");
        return Err(Refusal::Throttled(wait));
    }
    let permit = hash_permit().await?;
    let check = {
        let (tenant, username) = (tenant.clone(), username.clone());
        run_blocking(&state.registry, move |r| {
            let _permit = permit;
            r.verify_login(&tenant, &username, &password)
        })
        .await
        .map_err(ApiError::from)?
    };
    let actor = format!("client:{client}");
    let user = match check {
        LoginCheck::Valid(user) => user,
        refused => {
            let (target, outcome) = match refused {
                LoginCheck::UnknownUser => ("(unknown user)", "unknown_user"),
                LoginCheck::Disabled => (username.as_str(), "user_disabled"),
                _ => (username.as_str(), "wrong_password"),
            };
            {
                let (tenant, username, client) = (tenant.clone(), username.clone(), client.clone());
                run_blocking(&state.registry, move |r| {
                    r.record_login_failure(&tenant, &username, &client, &throttle)
                })
                .await
                .map_err(ApiError::from)?;
            }
            audit(
                &state,
                &tenant,
                &actor,
                "session.login",
                target,
                outcome,
                "",
            )
            .await;
            tracing::info!(tenant = %tenant, client = %client, outcome, "Login refused.");
            return Err(ApiError::unauthorized(
                "invalid_credentials",
                "unknown tenant or user, or wrong password",
            )
            .into());
        }
    };
    let timeouts = config.timeouts();
    // A session the browser still presents is replaced, so it ends now rather than idling on.
    let replaced = session_cookie(&headers).map(str::to_string);
    let new = {
        let (tenant, username) = (user.tenant.clone(), user.username.clone());
        run_blocking(&state.registry, move |r| {
            if let Some(old) = replaced {
                r.delete_session(&old)?;
            }
            let new = r.create_session(&tenant, &username, &timeouts)?;
            r.clear_login_failures(&tenant, &username)?;
            Ok::<_, wulian_registry::Error>(new)
        })
        .await
        .map_err(|e| match e {
            // Disabled or deleted since the password was checked.
            wulian_registry::Error::NotFound { .. } => ApiError::unauthorized(
                "invalid_credentials",
                "unknown tenant or user, or wrong password",
            ),
            other => other.into(),
        })?
    };
    let session = &new.session;
    audit(
        &state,
        &session.tenant,
        &actor,
        "session.login",
        &session.username,
        "ok",
        &session.id,
    )
    .await;
    tracing::info!(tenant = %session.tenant, username = %session.username, session_id = %session.id, "User logged in.");
    let secure = config.secure_cookies || forwarded_https(&headers);
    let max_age = (session.expires_at - session.created_at) / 1000;
    let cookie = cookie_header(&new.token, max_age, secure)?;
    Ok((
        StatusCode::OK,
        [(header::SET_COOKIE, cookie), no_store()],
        Json(SessionView::from(session)),
    )
        .into_response())
}

#[utoipa::path(get, path = "/api/v1/session", tag = "sessions", security(("session_cookie" = [])),
    responses((status = 200, body = SessionView, description = "Who is logged in, with the CSRF token"),
        (status = 401, body = Problem, description = "`missing_credentials`, `session_expired`"),
        (status = 403, body = Problem, description = "`session_required`: an API key has no session")))]
pub async fn current(caller: Caller) -> ApiResult<Response> {
    let session = caller.require_session()?;
    Ok(([no_store()], Json(SessionView::from(session))).into_response())
}

#[utoipa::path(delete, path = "/api/v1/session", tag = "sessions", security(("session_cookie" = [])),
    params(("X-CSRF-Token" = String, Header, description = "The session's CSRF token")),
    responses((status = 204, description = "Logged out; the cookie is cleared (also when the session had already ended)"),
        (status = 403, body = Problem, description = "`csrf_token_missing`, `csrf_token_invalid`")))]
pub async fn logout(
    State(state): State<AppState>,
    Settings(config): Settings,
    headers: HeaderMap,
) -> ApiResult<Response> {
    if let Some(token) = session_cookie(&headers) {
        let token = token.to_string();
        let session = {
            let token = token.clone();
            run_blocking(&state.registry, move |r| r.authenticate_session(&token))
                .await
                .map_err(|e| ApiError::internal("Session lookup failed.", &e))?
        };
        // An ended session has nothing to protect; a live one is ended only with its token.
        if let Some(session) = session {
            check_csrf(&headers, &session)?;
            run_blocking(&state.registry, move |r| r.delete_session(&token)).await?;
            audit(
                &state,
                &session.tenant,
                &format!("user:{}", session.username),
                "session.logout",
                &session.username,
                "ok",
                &session.id,
            )
            .await;
            tracing::info!(tenant = %session.tenant, username = %session.username, session_id = %session.id, "User logged out.");
        }
    }
    let secure = config.secure_cookies || forwarded_https(&headers);
    Ok((
        StatusCode::NO_CONTENT,
        [
            (header::SET_COOKIE, cookie_header("", 0, secure)?),
            no_store(),
        ],
    )
        .into_response())
}

#[utoipa::path(post, path = "/api/v1/session/password", tag = "sessions", request_body = ChangePassword,
    security(("session_cookie" = [])),
    params(("X-CSRF-Token" = String, Header, description = "The session's CSRF token")),
    responses((status = 204, description = "Changed; the user's other sessions ended, this one stays"),
        (status = 403, body = Problem, description = "`wrong_password` (the old one), `session_required`, `csrf_token_missing`, `csrf_token_invalid`"),
        (status = 422, body = Problem, description = "`weak_password`: the new password breaks a rule"),
        (status = 429, body = Problem, description = "`too_many_attempts`; see Retry-After")))]
pub async fn change_password(
    State(state): State<AppState>,
    Settings(config): Settings,
    ClientAddr(client): ClientAddr,
    caller: Caller,
    ApiJson(body): ApiJson<ChangePassword>,
) -> Result<StatusCode, Refusal> {
    let session = caller.require_session()?.clone();
    let throttle = config.throttle();
    // A stolen cookie must not become a way to guess the password.
    let wait = {
        let (tenant, username, client) = (
            session.tenant.clone(),
            session.username.clone(),
            client.clone(),
        );
        run_blocking(&state.registry, move |r| {
            r.login_throttled(&tenant, &username, &client, &throttle)
        })
        .await
        .map_err(ApiError::from)?
    };
    if let Some(wait) = wait {
        return Err(Refusal::Throttled(wait));
    }
    let permit = hash_permit().await?;
    let outcome = {
        let (tenant, username, id) = (
            session.tenant.clone(),
            session.username.clone(),
            session.id.clone(),
        );
        run_blocking(&state.registry, move |r| {
            let _permit = permit;
            r.change_password(
                &tenant,
                &username,
                &body.old_password,
                &body.new_password,
                &id,
            )
        })
        .await
        .map_err(user_error)?
    };
    let actor = caller.actor();
    match outcome {
        PasswordChange::Changed => {
            audit(
                &state,
                &session.tenant,
                &actor,
                "user.password_change",
                &session.username,
                "ok",
                "",
            )
            .await;
            tracing::info!(tenant = %session.tenant, username = %session.username, "User changed their password.");
            Ok(StatusCode::NO_CONTENT)
        }
        PasswordChange::WrongPassword => {
            let (tenant, username) = (session.tenant.clone(), session.username.clone());
            run_blocking(&state.registry, move |r| {
                r.record_login_failure(&tenant, &username, &client, &throttle)
            })
            .await
            .map_err(ApiError::from)?;
            audit(
                &state,
                &session.tenant,
                &actor,
                "user.password_change",
                &session.username,
                "wrong_password",
                "",
            )
            .await;
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "wrong_password",
                "old_password is not the current password",
            )
            .into())
        }
    }
}

/// Whether a proxy in front says the client used HTTPS.
fn forwarded_https(headers: &HeaderMap) -> bool {
    let text = |name: HeaderName| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let proto = text(HeaderName::from_static("x-forwarded-proto")).is_some_and(|v| {
        v.split(',')
            .next()
            .is_some_and(|p| p.trim().eq_ignore_ascii_case("https"))
    });
    let forwarded = text(header::FORWARDED).is_some_and(|v| {
        v.split([';', ','])
            .any(|pair| pair.trim().eq_ignore_ascii_case("proto=https"))
    });
    proto || forwarded
}

/// The session cookie (an empty value with `Max-Age=0` clears it).
fn cookie_header(token: &str, max_age_secs: i64, secure: bool) -> ApiResult<HeaderValue> {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::try_from(format!(
        "{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age_secs}{secure}"
    ))
    .map_err(|e| ApiError::internal("Building the session cookie failed.", &e))
}

/// Responses with a CSRF token or a cookie are not for caches.
fn no_store() -> (HeaderName, HeaderValue) {
    (header::CACHE_CONTROL, HeaderValue::from_static("no-store"))
}

/// Records an audit entry; a failure to record is logged, not the caller's problem.
pub(crate) async fn audit(
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

/// The `session_cookie` security scheme of the OpenAPI document.
pub struct SessionCookieScheme;

impl utoipa::Modify for SessionCookieScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme(
                "session_cookie",
                SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                    SESSION_COOKIE,
                    "A console session (POST /api/v1/session). Every method but GET, HEAD and \
                     OPTIONS also needs the session's X-CSRF-Token header.",
                ))),
            );
    }
}
