//! The OpenAPI document, generated from the handlers' annotations so it cannot drift from the
//! code. Served at `/api/v1/openapi.json`.
//!
//! Solutions that bring their own routes (the bike share) live in crates that depend on this one,
//! so they cannot be listed in [`ApiDoc`]; they [`register`] their own generated document when
//! their router is built, and [`document`] serves the platform's merged with theirs.

use std::collections::BTreeMap;
use std::sync::{PoisonError, RwLock};

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::routes::session::SessionCookieScheme;
use crate::routes::{
    alarms, certificates, commands, devices, export, fleet, lineprotocol, live, ota, profiles,
    provisioning, rules, session, system, telemetry, tenants, twins, users, zones,
};

#[derive(OpenApi)]
#[openapi(
    info(title = "wulian API", description = "Devices, telemetry and commands of a wulian installation. \
        Errors are RFC 9457 problem documents (application/problem+json) with a stable `code`."),
    paths(
        system::health, system::openapi, system::metrics,
        tenants::list_tenants, tenants::create_tenant, tenants::get_tenant, tenants::update_tenant,
        tenants::delete_tenant,
        tenants::list_api_keys, tenants::create_api_key, tenants::revoke_api_key,
        users::create_user, users::list_users, users::get_user, users::update_user,
        users::delete_user, users::reset_password,
        session::login, session::current, session::logout, session::change_password,
        devices::create_device, devices::list_devices, devices::get_device, devices::update_device,
        devices::delete_device, devices::rotate_token, devices::import_devices, twins::device_status,
        live::live_websocket,
        twins::get_twin, twins::patch_desired, twins::patch_reported,
        profiles::create_profile, profiles::list_profiles, profiles::get_profile,
        profiles::replace_profile, profiles::delete_profile, profiles::import_profile,
        provisioning::enable_provisioning, provisioning::disable_provisioning,
        provisioning::add_serials, provisioning::list_serials, provisioning::claim,
        provisioning::list_audit,
        zones::put_zone, zones::list_zones, zones::get_zone, zones::delete_zone, zones::contains,
        rules::create_rule, rules::list_rules, rules::get_rule, rules::replace_rule,
        rules::enable_rule, rules::disable_rule, rules::delete_rule, rules::dry_run,
        rules::dry_run_stored, rules::replay,
        alarms::list_alarms, alarms::get_alarm, alarms::raise_alarm, alarms::acknowledge_alarm,
        alarms::clear_alarm, alarms::alarm_stream, alarms::alarm_websocket, alarms::add_alarm_webhook,
        alarms::list_alarm_webhooks, alarms::delete_alarm_webhook, alarms::list_dead_letters,
        alarms::replay_dead_letter, alarms::delete_dead_letter,
        ota::upload_firmware, ota::list_firmware, ota::get_firmware, ota::delete_firmware,
        ota::public_key, ota::create_campaign, ota::list_campaigns, ota::get_campaign,
        ota::campaign_devices, ota::cancel_campaign, ota::report_progress, ota::download_firmware,
        telemetry::query_telemetry, telemetry::latest_telemetry, telemetry::post_telemetry,
        export::export_telemetry, export::export_group, fleet::fleet_latest, fleet::fleet_telemetry,
        lineprotocol::write_v2, lineprotocol::write_v1,
        commands::send_command, commands::list_commands, commands::get_command,
        certificates::add_ca_certificate, certificates::list_ca_certificates,
        certificates::delete_ca_certificate, certificates::revoke_certificate,
    ),
    modifiers(&SecuritySchemes, &SessionCookieScheme),
    tags(
        (name = "devices", description = "The device registry"),
        (name = "profiles", description = "Device profiles: thing models, validation, settings"),
        (name = "twins", description = "Desired and reported device state"),
        (name = "provisioning", description = "Claim provisioning and the audit log"),
        (name = "ota", description = "Firmware, signatures and update campaigns"),
        (name = "zones", description = "Named polygons for in_zone (parking areas, service areas)"),
        (name = "rules", description = "The rule engine: rules, dry runs, replays"),
        (name = "alarms", description = "Alarms, their notifications, and webhook dead letters"),
        (name = "telemetry", description = "Time series sent by devices"),
        (name = "commands", description = "Requests to devices and their answers"),
        (name = "tenants", description = "Tenants (installation admin)"),
        (name = "api keys", description = "Machine credentials"),
        (name = "users", description = "People: operator accounts of the web console"),
        (name = "sessions", description = "Console login (session cookie), logout, CSRF token, own password"),
        (name = "certificates", description = "Device identity by X.509 certificate (mutual TLS)"),
        (name = "system", description = "Health, metrics, this document"),
    )
)]
pub struct ApiDoc;

/// The documents solutions registered, by name: building a router again (tests build many)
/// replaces its solution's document instead of adding a second copy.
static EXTENSIONS: RwLock<BTreeMap<&'static str, utoipa::openapi::OpenApi>> =
    RwLock::new(BTreeMap::new());

/// Adds a solution's paths, schemas, security schemes and tags to the served document. `name`
/// identifies the solution (e.g. `"bikeshare"`); registering it again replaces its document.
///
/// Where a solution's path, schema or security scheme has the name of one of the platform's,
/// the platform's wins (`utoipa::openapi::OpenApi::merge`), so solutions name their schemas
/// distinctly; the bike share's tests check that none is shadowed.
pub fn register(name: &'static str, doc: utoipa::openapi::OpenApi) {
    EXTENSIONS
        .write()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(name, doc);
}

/// The served document: [`ApiDoc`] merged with every registered solution's, in name order.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    let extensions = EXTENSIONS.read().unwrap_or_else(PoisonError::into_inner);
    for extension in extensions.values() {
        doc.merge(extension.clone());
    }
    doc
}

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
        components.add_security_scheme(
            "provisioning_secret",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("A profile's provisioning secret (`wlp_…`)"))
                    .build(),
            ),
        );
    }
}
