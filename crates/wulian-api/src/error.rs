//! The one place where errors become HTTP responses: RFC 9457 problem documents
//! (`application/problem+json`) with a stable machine-readable `code`.
//!
//! 4xx are the caller's doing and are not logged as errors; 5xx hide their details from the
//! caller and are logged once, here.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub detail: String,
    /// Per-item errors (e.g. every thing-model violation of a payload), as the `errors` member.
    pub errors: Option<serde_json::Value>,
}

pub type ApiResult<T> = Result<T, ApiError>;

/// The problem document as it goes on the wire.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// `urn:wulian:problem:{code}`.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// Stable error code, e.g. `device_not_found`, `invalid_json`, `type_mismatch`.
    pub code: String,
    /// Present when several things are wrong at once: one entry per offending key, each with
    /// `key`, `code` and `detail`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Object>>)]
    pub errors: Option<serde_json::Value>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            detail: detail.into(),
            errors: None,
        }
    }

    /// Adds the `errors` member.
    pub fn with_errors(mut self, errors: impl serde::Serialize) -> ApiError {
        self.errors = serde_json::to_value(errors).ok();
        self
    }

    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, detail)
    }

    pub fn not_found(code: &'static str, detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, code, detail)
    }

    pub fn forbidden(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", detail)
    }

    pub fn unauthorized(code: &'static str, detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, code, detail)
    }

    /// A server-side failure: logged with its cause, reported to the caller without it.
    pub fn internal(context: &str, error: &dyn std::fmt::Display) -> ApiError {
        tracing::error!(error = %error, "{context}");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "the server failed to handle the request; the failure is logged",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = Problem {
            kind: format!("urn:wulian:problem:{}", self.code),
            title: self
                .status
                .canonical_reason()
                .unwrap_or("Error")
                .to_string(),
            status: self.status.as_u16(),
            detail: self.detail,
            code: self.code.to_string(),
            errors: self.errors,
        };
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        let mut response = (self.status, body).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<wulian_registry::Error> for ApiError {
    fn from(error: wulian_registry::Error) -> ApiError {
        use wulian_registry::Error as E;
        match error {
            E::NotFound { kind, id } => ApiError::new(
                StatusCode::NOT_FOUND,
                not_found_code(kind),
                format!("{kind} {id:?} not found"),
            ),
            E::AlreadyExists { kind, id } => ApiError::new(
                StatusCode::CONFLICT,
                "already_exists",
                format!("{kind} {id:?} already exists"),
            ),
            E::Invalid { field, reason } => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_field",
                format!("{field}: {reason}"),
            ),
            E::Conflict(detail) => ApiError::new(StatusCode::CONFLICT, "conflict", detail),
            e @ E::VersionMismatch { .. } => ApiError::new(
                StatusCode::PRECONDITION_FAILED,
                "version_mismatch",
                format!("{e}; read the resource again and retry"),
            ),
            e @ E::TooLarge { .. } => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", e.to_string())
            }
            other => ApiError::internal("Registry error.", &other),
        }
    }
}

fn not_found_code(kind: &str) -> &'static str {
    match kind {
        "device" => "device_not_found",
        "tenant" => "tenant_not_found",
        "api key" | "api_key" => "api_key_not_found",
        "command" => "command_not_found",
        "profile" => "profile_not_found",
        "firmware" => "firmware_not_found",
        "campaign" => "campaign_not_found",
        "alarm" => "alarm_not_found",
        "rule" => "rule_not_found",
        "dead letter" => "dead_letter_not_found",
        "webhook" => "webhook_not_found",
        "zone" => "zone_not_found",
        _ => "not_found",
    }
}
