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
mod websocket;

use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::{delete, get, patch, post};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::timeout::TimeoutLayer;

pub use error::ApiError;
pub use state::AppState;

use routes::{
    alarms, certificates, commands, devices, export, fleet, lineprotocol, live, ota, profiles,
    provisioning, rules, session, system, telemetry, tenants, twins, users, zones,
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
    router_with(state, limits, Router::new())
}

/// The API with `extra` routes beside it (solutions such as the bike share bring their own,
/// with their own state). They share the body limit, the timeout and the problem+json
/// fallbacks; `extra` must not set a fallback of its own.
pub fn router_with(state: AppState, limits: &HttpLimits, extra: Router) -> Router {
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
            get(tenants::get_tenant)
                .patch(tenants::update_tenant)
                .delete(tenants::delete_tenant),
        )
        .route(
            "/api-keys",
            get(tenants::list_api_keys).post(tenants::create_api_key),
        )
        .route("/api-keys/{key_id}", delete(tenants::revoke_api_key))
        .route("/users", get(users::list_users).post(users::create_user))
        .route(
            "/users/{username}",
            get(users::get_user)
                .patch(users::update_user)
                .delete(users::delete_user),
        )
        .route("/users/{username}/password", post(users::reset_password))
        .route(
            "/session",
            get(session::current)
                .post(session::login)
                .delete(session::logout),
        )
        .route("/session/password", post(session::change_password))
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
        .route("/devices/import", post(devices::import_devices))
        .route("/live", get(live::live_websocket))
        .route("/devices/{id}/token", post(devices::rotate_token))
        .route("/devices/{id}/status", get(twins::device_status))
        .route("/devices/{id}/twin", get(twins::get_twin))
        .route("/devices/{id}/twin/desired", patch(twins::patch_desired))
        .route("/devices/{id}/twin/reported", patch(twins::patch_reported))
        .route(
            "/profiles",
            get(profiles::list_profiles).post(profiles::create_profile),
        )
        .route("/profiles/import", post(profiles::import_profile))
        .route(
            "/profiles/{profile_id}",
            get(profiles::get_profile)
                .put(profiles::replace_profile)
                .delete(profiles::delete_profile),
        )
        .route(
            "/profiles/{profile_id}/provisioning",
            post(provisioning::enable_provisioning).delete(provisioning::disable_provisioning),
        )
        .route(
            "/profiles/{profile_id}/serials",
            get(provisioning::list_serials).post(provisioning::add_serials),
        )
        .route("/provision/claim", post(provisioning::claim))
        .route("/audit", get(provisioning::list_audit))
        .route("/zones", get(zones::list_zones))
        .route(
            "/zones/{name}",
            get(zones::get_zone)
                .put(zones::put_zone)
                .delete(zones::delete_zone),
        )
        .route("/zones/{name}/contains", get(zones::contains))
        .route("/rules", get(rules::list_rules).post(rules::create_rule))
        .route("/rules/dry-run", post(rules::dry_run))
        .route(
            "/rules/{rule_id}",
            get(rules::get_rule)
                .put(rules::replace_rule)
                .delete(rules::delete_rule),
        )
        .route("/rules/{rule_id}/enable", post(rules::enable_rule))
        .route("/rules/{rule_id}/disable", post(rules::disable_rule))
        .route("/rules/{rule_id}/dry-run", post(rules::dry_run_stored))
        .route("/rules/{rule_id}/replay", post(rules::replay))
        .route(
            "/alarms",
            get(alarms::list_alarms).post(alarms::raise_alarm),
        )
        .route("/alarms/stream", get(alarms::alarm_stream))
        .route("/alarms/ws", get(alarms::alarm_websocket))
        .route(
            "/alarms/webhooks",
            get(alarms::list_alarm_webhooks).post(alarms::add_alarm_webhook),
        )
        .route(
            "/alarms/webhooks/{webhook_id}",
            delete(alarms::delete_alarm_webhook),
        )
        .route("/alarms/{alarm_id}", get(alarms::get_alarm))
        .route("/alarms/{alarm_id}/ack", post(alarms::acknowledge_alarm))
        .route("/alarms/{alarm_id}/clear", post(alarms::clear_alarm))
        .route("/webhooks/dead-letters", get(alarms::list_dead_letters))
        .route(
            "/webhooks/dead-letters/{letter_id}",
            delete(alarms::delete_dead_letter),
        )
        .route(
            "/webhooks/dead-letters/{letter_id}/replay",
            post(alarms::replay_dead_letter),
        )
        .route(
            "/firmware",
            get(ota::list_firmware).post(ota::upload_firmware),
        )
        .route(
            "/firmware/{firmware_id}",
            get(ota::get_firmware).delete(ota::delete_firmware),
        )
        .route("/ota/public-key", get(ota::public_key))
        .route(
            "/ota/campaigns",
            get(ota::list_campaigns).post(ota::create_campaign),
        )
        .route("/ota/campaigns/{campaign_id}", get(ota::get_campaign))
        .route(
            "/ota/campaigns/{campaign_id}/devices",
            get(ota::campaign_devices),
        )
        .route(
            "/ota/campaigns/{campaign_id}/cancel",
            post(ota::cancel_campaign),
        )
        .route(
            "/devices/{id}/firmware/{firmware_id}",
            get(ota::download_firmware),
        )
        .route("/devices/{id}/ota/progress", post(ota::report_progress))
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
        .route("/telemetry/export", get(export::export_group))
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
        .with_state(state)
        .merge(extra)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limits.max_body_bytes))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            limits.request_timeout,
        ))
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
/// finish (graceful shutdown). Each request carries its peer's address (`ConnectInfo`; the
/// login throttle counts failures per address).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(async move { shutdown.cancelled().await })
    .await
}
