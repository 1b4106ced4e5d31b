//! The resources (docs/coap.md): authenticate the device by id and token, then store its
//! telemetry, hand it its pending commands, or take its answer to one. The same pipeline and
//! command service as MQTT and HTTP, so validation and status are identical.

use std::sync::Arc;

use coap_lite::{Packet, ResponseType};
use wulian_common::blocking::run_blocking;
use wulian_ingest::{CommandService, Pipeline};
use wulian_registry::{Registry, TwinSection};

use crate::limits::CoapLimits;
use crate::metrics::CoapMetrics;
use crate::payload;
use crate::request::{self, Request, Resource};
use crate::wire::Reply;

/// Seconds a device is told to wait (Max-Age of 5.03) when the telemetry store is failing.
const STORE_RETRY_SECS: u32 = 30;

/// What the resources reach.
pub struct Services {
    pub registry: Arc<Registry>,
    pub pipeline: Arc<Pipeline>,
    pub commands: Arc<CommandService>,
    pub limits: CoapLimits,
    pub metrics: Arc<CoapMetrics>,
}

/// The response to one request (never a panic: every refusal is a response code).
pub async fn handle(services: &Services, packet: &Packet) -> Reply {
    let limits = &services.limits;
    let request = match request::parse(
        packet,
        limits.max_message_bytes,
        limits.max_response_payload(),
    ) {
        Ok(request) => request,
        Err(reply) => return reply,
    };
    let tenant = match authenticate(services, &request).await {
        Ok(tenant) => tenant,
        Err(reply) => return reply,
    };
    let device = request.device_id.as_str();
    services.commands.note_poller(&tenant, device);
    match &request.resource {
        Resource::Telemetry => {
            let body = match payload::to_json(request.content_format, &packet.payload) {
                Ok(body) => body,
                Err(reply) => return reply,
            };
            if body.is_empty() {
                return Reply::error(
                    ResponseType::BadRequest,
                    "invalid_json: empty payload; send telemetry JSON (docs/device-contract.md)",
                );
            }
            match services
                .pipeline
                .ingest_telemetry(&tenant, device, &body)
                .await
            {
                Ok(_) => {
                    CoapMetrics::add(&services.metrics.telemetry_accepted);
                    with_commands(services, &tenant, &request, ResponseType::Changed, false).await
                }
                Err(error) if error.is_client_error() => {
                    // Like HTTP's 422: the payload is well-formed, the value does not fit.
                    let code = if error.code() == "type_mismatch" {
                        ResponseType::UnprocessableEntity
                    } else {
                        ResponseType::BadRequest
                    };
                    Reply::error(code, format!("{}: {error}", error.code()))
                }
                Err(error) => {
                    tracing::error!(tenant = %tenant, device_id = %device, error = %error, "CoAP telemetry not stored.");
                    Reply::error(
                        ResponseType::ServiceUnavailable,
                        "store_unavailable: retry later",
                    )
                    .with_max_age(STORE_RETRY_SECS)
                }
            }
        }
        Resource::Twin | Resource::TwinDelta | Resource::TwinReported => {
            twin(services, &tenant, &request, packet).await
        }
        Resource::Commands => {
            with_commands(services, &tenant, &request, ResponseType::Content, true).await
        }
        Resource::CommandResponse { command_id } => {
            let body = match payload::to_json(request.content_format, &packet.payload) {
                Ok(body) => body,
                Err(reply) => return reply,
            };
            if body.is_empty() {
                return Reply::error(
                    ResponseType::BadRequest,
                    "invalid_json: empty payload; send the command's answer as JSON",
                );
            }
            let matched =
                services
                    .commands
                    .resolve(&tenant, device, Some(command_id.as_bytes()), &body);
            if !matched {
                return Reply::error(
                    ResponseType::NotFound,
                    format!(
                        "no command {command_id:?} of this device is waiting for an answer \
                         (unknown, already answered or timed out)"
                    ),
                );
            }
            CoapMetrics::add(&services.metrics.command_answers);
            with_commands(services, &tenant, &request, ResponseType::Changed, false).await
        }
    }
}

/// The twin resources: the whole twin, its delta, or a reported patch.
async fn twin(services: &Services, tenant: &str, request: &Request, packet: &Packet) -> Reply {
    let Some(lifecycle) = services.pipeline.lifecycle() else {
        return Reply::error(ResponseType::ServiceUnavailable, "twins are not available");
    };
    let twins = &lifecycle.twins;
    let device = request.device_id.as_str();
    let result = match request.resource {
        Resource::TwinReported => {
            let body = match payload::to_json(request.content_format, &packet.payload) {
                Ok(body) => body,
                Err(reply) => return reply,
            };
            let patch: serde_json::Value = match serde_json::from_slice(&body) {
                Ok(patch) => patch,
                Err(e) => {
                    return Reply::error(ResponseType::BadRequest, format!("invalid_json: {e}"));
                }
            };
            twins
                .patch(tenant, device, TwinSection::Reported, patch, None)
                .await
                .map(|update| serde_json::json!({"version": update.twin.version, "delta": update.twin.delta}))
        }
        Resource::TwinDelta => twins
            .get(tenant, device)
            .await
            .map(|t| serde_json::json!({"version": t.version, "delta": t.delta})),
        _ => twins
            .get(tenant, device)
            .await
            .map(|t| serde_json::to_value(t).unwrap_or_default()),
    };
    match result {
        Ok(body) => {
            let text = body.to_string();
            if text.len() > request.response_budget {
                // One block per response: larger documents go over HTTP.
                return Reply::error(
                    ResponseType::NotImplemented,
                    format!(
                        "the answer is {} bytes, more than one response carries; read the twin over HTTP (GET /api/v1/devices/{{id}}/twin)",
                        text.len()
                    ),
                );
            }
            let code = if request.resource == Resource::TwinReported {
                ResponseType::Changed
            } else {
                ResponseType::Content
            };
            Reply::json(code, text)
        }
        Err(wulian_registry::Error::TooLarge { size, limit, .. }) => Reply::error(
            ResponseType::RequestEntityTooLarge,
            format!(
                "twin_too_large: the reported document would be {size} bytes; the limit is {limit}"
            ),
        ),
        Err(e @ wulian_registry::Error::Invalid { .. }) => {
            Reply::error(ResponseType::BadRequest, format!("invalid_twin: {e}"))
        }
        Err(error) => {
            tracing::error!(tenant, device_id = %device, error = %error, "CoAP twin request failed.");
            Reply::error(ResponseType::InternalServerError, "registry unavailable")
        }
    }
}

/// The device's tenant, or 4.01 for a missing or wrong token, an unknown or disabled device
/// (indistinguishably, as over MQTT and HTTP).
async fn authenticate(services: &Services, request: &Request) -> Result<String, Reply> {
    let Some(token) = request.token.clone() else {
        return Err(Reply::error(
            ResponseType::Unauthorized,
            "missing_credentials: add the device token as ?t=<token>",
        ));
    };
    let device_id = request.device_id.clone();
    let found = run_blocking(&services.registry, move |r| {
        r.authenticate_device(&device_id, &token)
    })
    .await;
    match found {
        Ok(Some(identity)) => Ok(identity.tenant),
        Ok(None) => Err(Reply::error(
            ResponseType::Unauthorized,
            "invalid_credentials: unknown device or wrong token",
        )),
        Err(error) => {
            tracing::error!(error = %error, "Registry failed during CoAP authentication.");
            Err(Reply::error(
                ResponseType::InternalServerError,
                "registry unavailable",
            ))
        }
    }
}

/// `code`, carrying the device's pending commands as a JSON array (as many as fit the
/// response); with none, an empty payload — or `[]` when the client asked for commands.
async fn with_commands(
    services: &Services,
    tenant: &str,
    request: &Request,
    code: ResponseType,
    always: bool,
) -> Reply {
    let taken = services
        .commands
        .take_for_device(
            tenant,
            &request.device_id,
            request.response_budget,
            services.limits.max_response_payload(),
        )
        .await;
    if taken.is_empty() && !always {
        return Reply::new(code);
    }
    services
        .metrics
        .commands_delivered
        .fetch_add(taken.len() as u64, std::sync::atomic::Ordering::Relaxed);
    let bodies: Vec<&str> = taken.iter().map(|c| c.body.as_str()).collect();
    Reply::json(code, format!("[{}]", bodies.join(",")))
}
