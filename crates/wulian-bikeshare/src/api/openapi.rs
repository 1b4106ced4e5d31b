//! The bike share's part of the OpenAPI document: the handlers' `#[utoipa::path]` annotations,
//! listed in [`BikeShareApi`], which [`super::router`] registers with the platform
//! (`wulian_api::openapi::register`) so that `GET /api/v1/openapi.json` serves both.
//!
//! Schemas are named so that none shadows one of the platform's (`BikeShareSettings`, not
//! `Settings`): on a clash the platform's would win the merge. `tests/openapi.rs` checks that
//! and that every route of `src/api/` is documented.

use std::collections::BTreeMap;

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Content, Ref, RefOr, Response, ResponseBuilder};
use utoipa::{IntoResponses, Modify, OpenApi};
use wulian_api::error::Problem;

use super::{basemap, city, operator, rider};

#[derive(OpenApi)]
#[openapi(
    paths(
        operator::get_system, operator::put_system, operator::list_plans, operator::put_plan,
        operator::list_pass_products, operator::put_pass_product, operator::register_bike,
        operator::fleet, operator::fleet_summary, operator::locate, operator::list_trips,
        operator::get_trip, operator::list_riders, operator::get_rider, operator::operator_top_up,
        operator::refund, operator::trial_balance, operator::list_work_orders,
        operator::create_work_order, operator::update_work_order, operator::list_events,
        operator::demand, operator::rebalancing, operator::list_city, operator::create_city,
        operator::revoke_city,
        basemap::operator_basemap, basemap::put_basemap, basemap::rider_basemap,
        basemap::operator_tiles, basemap::rider_tiles,
        rider::sign_up, rider::me, rider::erase, rider::consent, rider::export, rider::nearby,
        rider::zones, rider::parking, rider::my_trips, rider::rent, rider::my_trip, rider::resume,
        rider::wallet_view, rider::top_up, rider::buy_pass,
        city::gbfs_feed, city::vehicles, city::vehicles_status, city::vehicle, city::trips,
        city::events_historical, city::events_recent, city::telemetry,
    ),
    components(schemas(Problem)),
    modifiers(&SecuritySchemes),
    tags(
        (name = "bikeshare", description = "The operator's bike share (API keys): settings, \
            plans and passes, bikes and the fleet, trips, riders and their money, work orders, \
            demand and rebalancing, city credentials. Amounts are integer minor units (fen)."),
        (name = "rider app", description = "The rider app, authenticated with the rider's own \
            token (`rider_token`): sign-up, bikes nearby, renting, the wallet, privacy rights."),
        (name = "city feeds", description = "Open data for the city: public GBFS 3.0 feeds, and \
            MDS 2.0 Provider for the regulator with a city credential (`city_credential`)."),
    )
)]
pub struct BikeShareApi;

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "rider_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A rider's token, returned once by sign-up (`POST /api/v1/rider/{tenant}/sign-up`)",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "city_credential",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A city credential for MDS, created by the operator \
                         (`POST /api/v1/bikeshare/city-credentials`, shown once)",
                    ))
                    .build(),
            ),
        );
    }
}

fn problem(description: &str) -> RefOr<Response> {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/problem+json",
            Content::new(Some(Ref::from_schema_name("Problem"))),
        )
        .build()
        .into()
}

fn problems(list: &[(&str, &str)]) -> BTreeMap<String, RefOr<Response>> {
    list.iter()
        .map(|(status, description)| (status.to_string(), problem(description)))
        .collect()
}

/// How an API-key request is refused before the handler runs.
pub(super) struct ApiKeyErrors;

impl IntoResponses for ApiKeyErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        problems(&[(
            "401",
            "No API key (`missing_credentials`), or a malformed, unknown or revoked one \
             (`invalid_credentials`)",
        )])
    }
}

/// How a rider-token request is refused before the handler runs.
pub(super) struct RiderErrors;

impl IntoResponses for RiderErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        problems(&[(
            "401",
            "No rider token (`missing_credentials`), or a malformed, unknown or revoked one, \
             e.g. of an erased account (`invalid_credentials`)",
        )])
    }
}

/// How an MDS request is refused before the handler runs.
pub(super) struct CityErrors;

impl IntoResponses for CityErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        problems(&[
            (
                "401",
                "No city credential (`missing_credentials`), or a malformed, unknown or revoked \
                 one, or one of another tenant (`invalid_credentials`)",
            ),
            (
                "406",
                "`Accept` names neither JSON nor MDS 2.0 (`not_acceptable`)",
            ),
        ])
    }
}

/// How a JSON request body is refused before the handler runs (422 `invalid_body`, a body that
/// is JSON but not the expected shape, is listed with each handler's own 422s).
pub(super) struct JsonBodyErrors;

impl IntoResponses for JsonBodyErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        problems(&[
            (
                "400",
                "The body is not JSON (`invalid_json`, `invalid_body`)",
            ),
            (
                "413",
                "The body exceeds `http.max_body_bytes` (`body_too_large`)",
            ),
            (
                "415",
                "`Content-Type` is not `application/json` (`unsupported_media_type`)",
            ),
        ])
    }
}
