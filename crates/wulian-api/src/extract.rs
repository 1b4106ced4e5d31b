//! Request extractors that turn every rejection into a problem document, and the caller's
//! identity from the `Authorization: Bearer` header.

use axum::extract::rejection::{BytesRejection, JsonRejection, QueryRejection};
use axum::extract::{FromRef, FromRequest, FromRequestParts, Query, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use bytes::Bytes;
use serde::de::DeserializeOwned;
use wulian_common::blocking::run_blocking;
use wulian_registry::{ApiKey, Scope};

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

/// An application authenticated by API key. Every handler that takes a `Caller` is
/// authenticated; handlers check the scope they need with the `require_*` methods.
#[derive(Debug, Clone)]
pub struct Caller {
    pub key: ApiKey,
}

impl Caller {
    pub fn tenant(&self) -> &str {
        &self.key.tenant
    }

    pub fn require_write(&self) -> Result<(), ApiError> {
        if self.key.scope.can_write() {
            Ok(())
        } else {
            Err(ApiError::forbidden("this API key is read-only"))
        }
    }

    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.key.scope.can_admin() {
            Ok(())
        } else {
            Err(ApiError::forbidden("this action needs an admin API key"))
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
// authenticate API keys the same way.
impl<S> FromRequestParts<S> for Caller
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let state = AppState::from_ref(state);
        let Some(secret) = bearer(&parts.headers)? else {
            return Err(ApiError::unauthorized(
                "missing_credentials",
                "this endpoint needs Authorization: Bearer <api key>",
            ));
        };
        let secret = secret.to_string();
        let key = run_blocking(&state.registry, move |r| r.authenticate_api_key(&secret))
            .await
            .map_err(|e| ApiError::internal("API key lookup failed.", &e))?;
        match key {
            Some(key) => Ok(Caller { key }),
            None => Err(ApiError::unauthorized(
                "invalid_credentials",
                "unknown or revoked API key",
            )),
        }
    }
}
