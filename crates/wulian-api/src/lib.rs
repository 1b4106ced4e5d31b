//! wulian's REST API under `/api/v1`: JSON over HTTP, bearer API keys for applications, device
//! tokens for devices posting telemetry, RFC 9457 problem documents for every error, and an
//! OpenAPI document generated from the handlers.
//!
//! The crate knows the registry, the telemetry store and the ingest pipeline only through their
//! public APIs; it owns no state of its own beyond what `AppState` hands it.

pub mod error;
pub mod extract;
pub mod openapi;
pub mod routes;
pub mod state;

use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::timeout::TimeoutLayer;

pub use error::ApiError;
pub use state::AppState;

use routes::{
    certificates, commands, devices, export, fleet, lineprotocol, system, telemetry, tenants,
};

/// Limits of the HTTP front end.
#[derive(Debug, Clone)]
pub struct HttpLimits {
    /// Largest request body accepted; larger ones get 413 `body_too_large`.
    pub max_body_bytes: usize,
    /// A request still running after this gets 408 and is dropped. Must exceed the longest
    /// command timeout (300 s) so a waiting command call is not cut short.
    pub request_timeout: Duration,
}

impl Default for HttpLimits {
    fn default() -> HttpLimits {
        HttpLimits {
            max_body_bytes: 1024 * 1024,
            request_timeout: Duration::from_secs(310),
        }
    }
}

pub fn router(state: AppState, limits: &HttpLimits) -> Router {
    let api = Router::new()
        .route("/health", get(system::health))
        .route("/openapi.json", get(system::openapi))
        .route("/metrics", get(system::metrics))
        .route(
            "/tenants",
            get(tenants::list_tenants).post(tenants::create_tenant),
        )
        .route(
            "/tenants/{tenant}",
            get(tenants::get_tenant).delete(tenants::delete_tenant),
        )
        .route(
            "/api-keys",
            get(tenants::list_api_keys).post(tenants::create_api_key),
        )
        .route("/api-keys/{key_id}", delete(tenants::revoke_api_key))
        .route(
            "/devices",
            get(devices::list_devices).post(devices::create_device),
        )
        .route(
            "/devices/{id}",
            get(devices::get_device)
                .patch(devices::update_device)
                .delete(devices::delete_device),
        )
        .route("/devices/{id}/token", post(devices::rotate_token))
        .route(
            "/ca-certificates",
            get(certificates::list_ca_certificates).post(certificates::add_ca_certificate),
        )
        .route(
            "/ca-certificates/{ca_id}",
            delete(certificates::delete_ca_certificate),
        )
        .route(
            "/devices/{id}/certificates/revoke",
            post(certificates::revoke_certificate),
        )
        .route(
            "/devices/{id}/telemetry",
            get(telemetry::query_telemetry).post(telemetry::post_telemetry),
        )
        .route(
            "/devices/{id}/telemetry/latest",
            get(telemetry::latest_telemetry),
        )
        .route(
            "/devices/{id}/telemetry/export",
            get(export::export_telemetry),
        )
        .route("/telemetry", get(fleet::fleet_telemetry))
        .route("/telemetry/latest", get(fleet::fleet_latest))
        .route(
            "/devices/{id}/commands",
            get(commands::list_commands).post(commands::send_command),
        )
        .route(
            "/devices/{id}/commands/{command_id}",
            get(commands::get_command),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed);
    Router::new()
        .nest("/api/v1", api)
        // InfluxDB-compatible line protocol writes (Telegraf, InfluxDB client libraries).
        .route("/api/v2/write", post(lineprotocol::write_v2))
        .route("/write", post(lineprotocol::write_v1))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limits.max_body_bytes))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            limits.request_timeout,
        ))
        .with_state(state)
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not support the method; see /api/v1/openapi.json",
    )
}

async fn not_found() -> ApiError {
    ApiError::not_found(
        "route_not_found",
        "no such endpoint; see /api/v1/openapi.json",
    )
}

/// Serves `router` on `listener` until `shutdown` is cancelled, then lets requests in flight
/// finish (graceful shutdown).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}
