//! The OpenAPI document, generated from the handlers' annotations so it cannot drift from the
//! code. Served at `/api/v1/openapi.json`.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::routes::{
    certificates, commands, devices, export, fleet, lineprotocol, system, telemetry, tenants,
};

#[derive(OpenApi)]
#[openapi(
    info(title = "wulian API", description = "Devices, telemetry and commands of a wulian installation. \
        Errors are RFC 9457 problem documents (application/problem+json) with a stable `code`."),
    paths(
        system::health, system::openapi, system::metrics,
        tenants::list_tenants, tenants::create_tenant, tenants::get_tenant, tenants::delete_tenant,
        tenants::list_api_keys, tenants::create_api_key, tenants::revoke_api_key,
        devices::create_device, devices::list_devices, devices::get_device, devices::update_device,
        devices::delete_device, devices::rotate_token,
        telemetry::query_telemetry, telemetry::latest_telemetry, telemetry::post_telemetry,
        export::export_telemetry, fleet::fleet_latest, fleet::fleet_telemetry,
        lineprotocol::write_v2, lineprotocol::write_v1,
        commands::send_command, commands::list_commands, commands::get_command,
        certificates::add_ca_certificate, certificates::list_ca_certificates,
        certificates::delete_ca_certificate, certificates::revoke_certificate,
    ),
    modifiers(&SecuritySchemes),
    tags(
        (name = "devices", description = "The device registry"),
        (name = "telemetry", description = "Time series sent by devices"),
        (name = "commands", description = "Requests to devices and their answers"),
        (name = "tenants", description = "Tenants (installation admin)"),
        (name = "api keys", description = "Machine credentials"),
        (name = "certificates", description = "Device identity by X.509 certificate (mutual TLS)"),
        (name = "system", description = "Health, metrics, this document"),
    )
)]
pub struct ApiDoc;

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An API key (`wlk_…`)"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "device_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("A device token (`wld_…`)"))
                    .build(),
            ),
        );
    }
}
