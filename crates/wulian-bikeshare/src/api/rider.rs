//! The rider app's API: sign-up with real-name verification, bikes nearby, renting and riding,
//! the wallet, and the rider's privacy rights (consent, export, erasure). Authenticated with
//! the rider's own bearer token, never an API key.

use axum::Json;
use axum::Router;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post, put};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use wulian_api::ApiError;
use wulian_api::error::Problem;
use wulian_api::extract::{ApiJson, ApiQuery};
use wulian_common::time::now_ms;

use super::openapi::{JsonBodyErrors, RiderErrors};
use super::operator::{LedgerPosting, Point, TripList};
use super::{ApiResult, BikeApi, OrApi, api_error};
use crate::error::Error;
use crate::ledger::{self, Journal, JournalEntryView, PassHolding};
use crate::ops::NearbyBike;
use crate::pricing::{Fare, PassProduct, PricingPlan};
use crate::riders::{self, Rider};
use crate::trips::{self, Trip, TripState};
use crate::{system, wallet};

pub(super) fn routes() -> Router<BikeApi> {
    Router::new()
        .route("/api/v1/rider/{tenant}/sign-up", post(sign_up))
        .route("/api/v1/rider/me", get(me).delete(erase))
        .route("/api/v1/rider/me/consent", put(consent))
        .route("/api/v1/rider/me/export", get(export))
        .route("/api/v1/rider/bikes/nearby", get(nearby))
        .route("/api/v1/rider/zones", get(zones))
        .route("/api/v1/rider/parking", get(parking))
        .route("/api/v1/rider/trips", get(my_trips).post(rent))
        .route("/api/v1/rider/trips/{trip_id}", get(my_trip))
        .route("/api/v1/rider/trips/{trip_id}/resume", post(resume))
        .route("/api/v1/rider/wallet", get(wallet_view))
        .route("/api/v1/rider/wallet/top-ups", post(top_up))
        .route("/api/v1/rider/wallet/passes", post(buy_pass))
}

/// The client's address, when the server records it (`wulian_api::serve` does).
pub(super) struct ClientAddr(pub Option<std::net::IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientAddr(
            parts
                .extensions
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|c| c.0.ip()),
        ))
    }
}

/// A rider authenticated by their token.
pub(super) struct RiderCaller {
    pub tenant: String,
    pub rider: Rider,
}

impl FromRequestParts<BikeApi> for RiderCaller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &BikeApi,
    ) -> Result<Self, Self::Rejection> {
        let Some(token) = wulian_api::extract::bearer(&parts.headers)? else {
            return Err(ApiError::unauthorized(
                "missing_credentials",
                "this endpoint needs Authorization: Bearer <rider token>",
            ));
        };
        let token = token.to_string();
        let found = state
            .bikes
            .db
            .run(move |c| {
                let Some(rider) = riders::authenticate(c, &token)? else {
                    return Ok(None);
                };
                let tenant: Option<String> = rusqlite::OptionalExtension::optional(c.query_row(
                    "SELECT tenant FROM rider_tenants WHERE rider = ?1",
                    [&rider.id],
                    |r| r.get(0),
                ))?;
                Ok(tenant.map(|t| (t, rider)))
            })
            .await
            .map_err(api_error)?;
        match found {
            Some((tenant, rider)) => Ok(RiderCaller { tenant, rider }),
            None => Err(ApiError::unauthorized(
                "invalid_credentials",
                "unknown or revoked rider token",
            )),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub(super) struct SignedUp {
    pub rider: Rider,
    /// The rider's bearer token (`rider_token`), shown only this once.
    pub token: String,
}

#[utoipa::path(post, path = "/api/v1/rider/{tenant}/sign-up", tag = "rider app",
    params(("tenant" = String, Path, description = "The bike share's tenant")),
    request_body = riders::SignUp,
    responses((status = 201, body = SignedUp, description = "Signed up, real name verified"),
        (status = 404, body = Problem, content_type = "application/problem+json",
            description = "No bike share for this tenant (`bikeshare_not_found`)"),
        (status = 409, body = Problem, content_type = "application/problem+json",
            description = "The phone number or identity number is registered \
                (`phone_taken`, `id_number_registered`)"),
        (status = 429, body = Problem, content_type = "application/problem+json",
            description = "Too many sign-ups from this address in the past hour \
                (`too_many_signups`)"),
        (status = 422, body = Problem, content_type = "application/problem+json",
            description = "An invalid field (`invalid_phone`, `invalid_name`, \
                `invalid_id_number`, `implausible_birth_date`), a rider under 12 (`under_age`), \
                or the body has an unknown field or a wrong type (`invalid_body`)"),
        JsonBodyErrors))]
pub(super) async fn sign_up(
    State(s): State<BikeApi>,
    Path(tenant): Path<String>,
    ClientAddr(address): ClientAddr,
    ApiJson(body): ApiJson<riders::SignUp>,
) -> ApiResult<(StatusCode, Json<SignedUp>)> {
    if !s.bikes.is_enabled(&tenant) {
        return Err(api_error(Error::not_found(
            "bikeshare_not_found",
            "no bike share here",
        )));
    }
    s.bikes.check_signup(&tenant, address).api()?;
    let pepper = s.bikes.pepper.clone();
    let (rider, token) = s
        .bikes
        .db
        .tx(move |tx| {
            let now = now_ms();
            let (rider, token) = riders::sign_up(tx, &body, &pepper, now)?;
            wallet::bind_rider(tx, &tenant, &rider.id, now)?;
            Ok((rider, token))
        })
        .await
        .api()?;
    Ok((StatusCode::CREATED, Json(SignedUp { rider, token })))
}

#[derive(Serialize, ToSchema)]
pub(super) struct Me {
    pub rider: Rider,
    /// In minor units of `currency`; negative when the rider owes money.
    pub balance: i64,
    /// ISO 4217.
    pub currency: &'static str,
}

#[utoipa::path(get, path = "/api/v1/rider/me", tag = "rider app", security(("rider_token" = [])),
    responses((status = 200, body = Me, description = "The rider's account and balance"),
        RiderErrors))]
pub(super) async fn me(r: RiderCaller, State(s): State<BikeApi>) -> ApiResult<Json<Me>> {
    let id = r.rider.id.clone();
    let balance = s
        .bikes
        .db
        .run(move |c| Ok(ledger::rider_balance(c, &id)?))
        .await
        .api()?;
    Ok(Json(Me {
        rider: r.rider,
        balance,
        currency: ledger::CURRENCY,
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Consent {
    /// Allows location processing (routes stored with trips).
    location: bool,
}

#[derive(Serialize, ToSchema)]
pub(super) struct RiderView {
    pub rider: Rider,
}

#[utoipa::path(put, path = "/api/v1/rider/me/consent", tag = "rider app", request_body = Consent,
    security(("rider_token" = [])),
    responses((status = 200, body = RiderView, description = "The decision is recorded with its \
            time"),
        (status = 422, body = Problem, content_type = "application/problem+json",
            description = "The body has an unknown field or a wrong type (`invalid_body`)"),
        JsonBodyErrors, RiderErrors))]
pub(super) async fn consent(
    r: RiderCaller,
    State(s): State<BikeApi>,
    ApiJson(body): ApiJson<Consent>,
) -> ApiResult<Json<RiderView>> {
    let id = r.rider.id.clone();
    let rider = s
        .bikes
        .db
        .tx(move |tx| {
            riders::set_location_consent(tx, &id, body.location, now_ms())?;
            riders::get(tx, &id)?.ok_or_else(|| Error::not_found("rider_not_found", "rider gone"))
        })
        .await
        .api()?;
    Ok(Json(RiderView { rider }))
}

#[derive(Serialize, ToSchema)]
pub(super) struct RiderExport {
    /// When the export was made (ms since the epoch).
    pub exported_at: i64,
    /// Every stored field of the account, the identity number only as its peppered hash.
    #[schema(value_type = Object)]
    pub account: Value,
    /// The newest 1,000 trips.
    pub trips: Vec<Trip>,
    pub statement: Vec<JournalEntryView>,
    pub passes: Vec<PassHolding>,
}

/// Everything stored about the rider (PIPL's right of access and portability).
#[utoipa::path(get, path = "/api/v1/rider/me/export", tag = "rider app",
    security(("rider_token" = [])),
    responses((status = 200, body = RiderExport, description = "Everything stored about the \
            rider: account, trips, statement, passes"),
        RiderErrors))]
pub(super) async fn export(
    r: RiderCaller,
    State(s): State<BikeApi>,
) -> ApiResult<Json<RiderExport>> {
    let (t, id) = (r.tenant.clone(), r.rider.id.clone());
    let out = s
        .bikes
        .db
        .run(move |c| {
            let account = riders::export(c, &id)?;
            let trips = trips::list_with_routes(
                c,
                &t,
                &trips::TripQuery {
                    rider: Some(id.clone()),
                    limit: Some(1000),
                    ..Default::default()
                },
            )?;
            Ok(RiderExport {
                exported_at: now_ms(),
                account,
                trips,
                statement: ledger::rider_statement(c, &id)?,
                passes: ledger::passes(c, &id)?,
            })
        })
        .await
        .api()?;
    Ok(Json(out))
}

/// Erases the account (PIPL's right to deletion): no live trip, no debt; a positive balance is
/// paid out at the desk. Trips stay only de-identified (the ledger must still balance).
#[utoipa::path(delete, path = "/api/v1/rider/me", tag = "rider app",
    security(("rider_token" = [])),
    responses((status = 204, description = "Erased: personal fields deleted, the token stops \
            working, a positive balance is paid out at the desk, trips stay de-identified"),
        (status = 409, body = Problem, content_type = "application/problem+json",
            description = "A trip is live (`trip_in_progress`) or the balance is negative \
                (`balance_negative`)"),
        RiderErrors))]
pub(super) async fn erase(r: RiderCaller, State(s): State<BikeApi>) -> ApiResult<StatusCode> {
    let (t, id) = (r.tenant.clone(), r.rider.id.clone());
    s.bikes
        .db
        .tx(move |tx| {
            if trips::list(
                tx,
                &t,
                &trips::TripQuery {
                    rider: Some(id.clone()),
                    limit: Some(1000),
                    ..Default::default()
                },
            )?
            .iter()
            .any(|tr| tr.state.is_live())
            {
                return Err(Error::conflict(
                    "trip_in_progress",
                    "end your trip before deleting the account",
                ));
            }
            let balance = ledger::rider_balance(tx, &id)?;
            if balance < 0 {
                return Err(Error::conflict(
                    "balance_negative",
                    "settle the outstanding balance before deleting the account",
                ));
            }
            let now = now_ms();
            if balance > 0 {
                let desk = ledger::OperatorDesk::new();
                let reference = ledger::ProviderRef(format!("erasure-{id}"));
                ledger::payout_with(
                    tx,
                    &desk,
                    &id,
                    balance,
                    &reference,
                    &format!("erase:{id}"),
                    now,
                )?;
            }
            let alias = format!("erased-{}", &crate::ids::random_hex(6)?);
            trips::deidentify_rider(tx, &t, &id, &alias)?;
            riders::erase(tx, &id, now)?;
            Ok(())
        })
        .await
        .api()?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct Near {
    /// Latitude, -90 to 90.
    lat: f64,
    /// Longitude, -180 to 180.
    lon: f64,
    /// Search radius, 10 to 5,000 m (default 500).
    radius_m: Option<f64>,
    /// At most this many, 1 to 500 (default 50).
    limit: Option<usize>,
}

#[derive(Serialize, ToSchema)]
pub(super) struct NearbyList {
    pub bikes: Vec<NearbyBike>,
}

#[utoipa::path(get, path = "/api/v1/rider/bikes/nearby", tag = "rider app", params(Near),
    security(("rider_token" = [])),
    responses((status = 200, body = NearbyList, description = "Bikes that can be rented, \
            nearest first"),
        (status = 400, body = Problem, content_type = "application/problem+json",
            description = "A missing or malformed parameter (`invalid_query`)"),
        (status = 404, body = Problem, content_type = "application/problem+json",
            description = "The bike share is not enabled for the tenant (`bikeshare_not_enabled`)"),
        (status = 422, body = Problem, content_type = "application/problem+json",
            description = "Not a position (`invalid_position`)"),
        RiderErrors))]
pub(super) async fn nearby(
    r: RiderCaller,
    State(s): State<BikeApi>,
    ApiQuery(q): ApiQuery<Near>,
) -> ApiResult<Json<NearbyList>> {
    let bikes = s
        .bikes
        .nearby(
            &r.tenant,
            q.lat,
            q.lon,
            q.radius_m.unwrap_or(500.0),
            q.limit.unwrap_or(50),
        )
        .api()?;
    Ok(Json(NearbyList { bikes }))
}

#[utoipa::path(get, path = "/api/v1/rider/zones", tag = "rider app",
    security(("rider_token" = [])),
    responses((status = 200, body = Object, description = "The fences as a GeoJSON \
            FeatureCollection of Polygons; each feature's properties: `name`, `kind` (parking, \
            no_parking, no_riding, service_area, …) and the zone's own `properties`"),
        (status = 404, body = Problem, content_type = "application/problem+json",
            description = "The bike share is not enabled for the tenant (`bikeshare_not_enabled`)"),
        RiderErrors))]
pub(super) async fn zones(r: RiderCaller, State(s): State<BikeApi>) -> ApiResult<Json<Value>> {
    Ok(Json(s.bikes.fences_geojson(&r.tenant).api()?))
}

#[utoipa::path(get, path = "/api/v1/rider/parking", tag = "rider app", params(Point),
    security(("rider_token" = [])),
    responses((status = 200, body = Object, description = "Whether a bike may be left here: \
            `in_service_area`, `parking_zone`, `no_parking`, `no_riding`, `parkable`, and \
            `nearest_parking` (`zone`, `distance_m`) within 2 km or null"),
        (status = 400, body = Problem, content_type = "application/problem+json",
            description = "A missing or malformed parameter (`invalid_query`)"),
        (status = 404, body = Problem, content_type = "application/problem+json",
            description = "The bike share is not enabled for the tenant (`bikeshare_not_enabled`)"),
        (status = 422, body = Problem, content_type = "application/problem+json",
            description = "Not a position (`invalid_position`)"),
        RiderErrors))]
pub(super) async fn parking(
    r: RiderCaller,
    State(s): State<BikeApi>,
    ApiQuery(q): ApiQuery<Point>,
) -> ApiResult<Json<Value>> {
    Ok(Json(s.bikes.placement(&r.tenant, q.lat, q.lon).api()?))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Rent {
    /// The bike's code.
    bike: String,
}

/// A trip of the rider; while riding, with the fare so far and where the bike stands.
#[derive(Serialize, ToSchema)]
pub(super) struct RiderTrip {
    pub trip: Trip,
    /// What the trip would cost if it ended now inside a parking fence (`riding`, `ending`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fare_so_far: Option<Fare>,
    /// Where the bike stands with respect to the fences (`riding`, `ending`, with a position):
    /// as `GET /api/v1/rider/parking` answers, or null.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub parking: Option<Value>,
}

impl RiderTrip {
    fn of(trip: Trip) -> RiderTrip {
        RiderTrip {
            trip,
            fare_so_far: None,
            parking: None,
        }
    }
}

/// Rents a bike. Send an `Idempotency-Key` header: a retried request returns the same trip and
/// never rents twice. Answers once the lock confirmed (201, `riding`) or the unlock failed
/// (201, `failed`, nothing charged).
#[utoipa::path(post, path = "/api/v1/rider/trips", tag = "rider app", request_body = Rent,
    params(("Idempotency-Key" = Option<String>, Header, description = "1 to 128 printable \
        characters; a retry with the same key returns the same trip and never rents twice")),
    security(("rider_token" = [])),
    responses((status = 201, body = RiderTrip, description = "Once the lock confirmed \
            (`riding`) or the unlock failed (`failed`, nothing charged)"),
        (status = 403, body = Problem, content_type = "application/problem+json",
            description = "The account may not rent (`rider_not_active`) or owes money \
                (`balance_negative`)"),
        (status = 404, body = Problem, content_type = "application/problem+json",
            description = "No such bike (`bike_not_found`) or no bike share here \
                (`bikeshare_not_enabled`)"),
        (status = 409, body = Problem, content_type = "application/problem+json",
            description = "The bike cannot be rented (`bike_unavailable`, `bike_battery_low`, \
                `bike_faulty`, `bike_offline`, `outside_service_area`) or the rider has a trip \
                running (`trip_in_progress`)"),
        (status = 422, body = Problem, content_type = "application/problem+json",
            description = "A malformed `Idempotency-Key` (`invalid_idempotency_key`), or the body \
                has an unknown field or a wrong type (`invalid_body`)"),
        JsonBodyErrors, RiderErrors))]
pub(super) async fn rent(
    r: RiderCaller,
    State(s): State<BikeApi>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<Rent>,
) -> ApiResult<(StatusCode, Json<RiderTrip>)> {
    let key = match headers.get("idempotency-key") {
        Some(v) => Some(
            v.to_str()
                .map_err(|_| {
                    api_error(Error::invalid(
                        "invalid_idempotency_key",
                        "Idempotency-Key must be ASCII",
                    ))
                })?
                .to_string(),
        ),
        None => None,
    };
    let trip = s
        .bikes
        .start_trip(&r.tenant, &r.rider.id, &body.bike, key)
        .await
        .api()?;
    Ok((StatusCode::CREATED, Json(RiderTrip::of(trip))))
}

#[utoipa::path(get, path = "/api/v1/rider/trips", tag = "rider app",
    security(("rider_token" = [])),
    responses((status = 200, body = TripList, description = "The rider's newest 100 trips"),
        RiderErrors))]
pub(super) async fn my_trips(
    r: RiderCaller,
    State(s): State<BikeApi>,
) -> ApiResult<Json<TripList>> {
    let (t, id) = (r.tenant.clone(), r.rider.id.clone());
    let list = s
        .bikes
        .db
        .run(move |c| {
            Ok(trips::list(
                c,
                &t,
                &trips::TripQuery {
                    rider: Some(id),
                    limit: Some(100),
                    ..Default::default()
                },
            )?)
        })
        .await
        .api()?;
    Ok(Json(TripList { trips: list }))
}

/// A trip of the rider; while riding, with the fare so far.
#[utoipa::path(get, path = "/api/v1/rider/trips/{trip_id}", tag = "rider app",
    params(("trip_id" = String, Path)), security(("rider_token" = [])),
    responses((status = 200, body = RiderTrip, description = "The trip; while riding or \
            waiting outside a fence, with the fare so far and where the bike stands"),
        (status = 404, body = Problem, content_type = "application/problem+json",
            description = "No such trip of this rider (`trip_not_found`)"),
        RiderErrors))]
pub(super) async fn my_trip(
    r: RiderCaller,
    State(s): State<BikeApi>,
    Path(id): Path<String>,
) -> ApiResult<Json<RiderTrip>> {
    let trip = s.bikes.trip(&r.tenant, &id).await.api()?;
    if trip.rider != r.rider.id {
        return Err(api_error(Error::not_found(
            "trip_not_found",
            format!("no trip {id}"),
        )));
    }
    let mut out = RiderTrip::of(trip);
    if matches!(out.trip.state, TripState::Riding | TripState::Ending) {
        out.fare_so_far = Some(s.bikes.fare_so_far(&r.tenant, &out.trip).await.api()?);
        if let Some(pos) = s
            .bikes
            .snapshot(&r.tenant, &out.trip.bike)
            .and_then(|b| b.position())
        {
            out.parking = Some(
                s.bikes
                    .placement(&r.tenant, pos.0, pos.1)
                    .unwrap_or(Value::Null),
            );
        }
    }
    Ok(Json(out))
}

#[utoipa::path(post, path = "/api/v1/rider/trips/{trip_id}/resume", tag = "rider app",
    params(("trip_id" = String, Path)), security(("rider_token" = [])),
    responses((status = 200, body = RiderTrip, description = "The lock reopened: riding again, \
            to move the bike into a parking fence"),
        (status = 404, body = Problem, content_type = "application/problem+json",
            description = "No such trip of this rider (`trip_not_found`)"),
        (status = 409, body = Problem, content_type = "application/problem+json",
            description = "The trip is not waiting outside a fence (`trip_not_ending`) or the lock \
                did not open (`lock_did_not_open`)"),
        RiderErrors))]
pub(super) async fn resume(
    r: RiderCaller,
    State(s): State<BikeApi>,
    Path(id): Path<String>,
) -> ApiResult<Json<RiderTrip>> {
    let trip = s
        .bikes
        .resume_trip(&r.tenant, &r.rider.id, &id)
        .await
        .api()?;
    Ok(Json(RiderTrip::of(trip)))
}

#[derive(Serialize, ToSchema)]
pub(super) struct Wallet {
    /// ISO 4217; every amount is in its minor units (fen).
    pub currency: &'static str,
    pub balance: i64,
    /// The largest top-up the balance cap allows now.
    pub max_top_up: i64,
    pub statement: Vec<JournalEntryView>,
    pub passes: Vec<PassHolding>,
    /// What the rider can buy.
    pub pass_products: Vec<PassProduct>,
    pub plans: Vec<PricingPlan>,
}

#[utoipa::path(get, path = "/api/v1/rider/wallet", tag = "rider app",
    security(("rider_token" = [])),
    responses((status = 200, body = Wallet, description = "Balance, statement, passes, and what \
            can be bought"),
        RiderErrors))]
pub(super) async fn wallet_view(
    r: RiderCaller,
    State(s): State<BikeApi>,
) -> ApiResult<Json<Wallet>> {
    let (t, id) = (r.tenant.clone(), r.rider.id.clone());
    let out = s
        .bikes
        .db
        .run(move |c| {
            Ok(Wallet {
                currency: ledger::CURRENCY,
                balance: ledger::rider_balance(c, &id)?,
                max_top_up: ledger::max_top_up(c, &id)?,
                statement: ledger::rider_statement(c, &id)?,
                passes: ledger::passes(c, &id)?,
                pass_products: system::pass_products(c, &t)?,
                plans: system::plans(c, &t)?,
            })
        })
        .await
        .api()?;
    Ok(Json(out))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RiderTopUp {
    /// In minor units (fen), positive.
    amount: i64,
    /// Makes the top-up safe to retry.
    idempotency_key: String,
}

#[utoipa::path(post, path = "/api/v1/rider/wallet/top-ups", tag = "rider app",
    request_body = RiderTopUp, security(("rider_token" = [])),
    responses((status = 200, body = LedgerPosting, description = "Topped up through the sandbox \
            provider; the same `idempotency_key` again returns the same journal"),
        (status = 404, body = Problem, content_type = "application/problem+json",
            description = "The bike share is not enabled for the tenant (`bikeshare_not_enabled`)"),
        (status = 409, body = Problem, content_type = "application/problem+json",
            description = "The key was used for another operation (`idempotency_conflict`)"),
        (status = 422, body = Problem, content_type = "application/problem+json",
            description = "An invalid amount or key (`invalid_amount`, `invalid_argument`), a \
                balance above the cap (`balance_cap_exceeded`), or the body has an unknown field \
                or a wrong type (`invalid_body`)"),
        (status = 503, body = Problem, content_type = "application/problem+json",
            description = "No online payment provider: the system's `payments_sandbox` is off \
                (`payment_provider_unavailable`); riders top up at a service desk"),
        JsonBodyErrors, RiderErrors))]
pub(super) async fn top_up(
    r: RiderCaller,
    State(s): State<BikeApi>,
    ApiJson(body): ApiJson<RiderTopUp>,
) -> ApiResult<Json<LedgerPosting>> {
    if !s.bikes.settings(&r.tenant).api()?.payments_sandbox {
        // Built here rather than through `api_error`, which hides every 5xx as a 500.
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "payment_provider_unavailable",
            "no online payment provider is configured; top up at a service desk",
        ));
    }
    let id = r.rider.id.clone();
    let out = s
        .bikes
        .db
        .tx(move |tx| {
            let key = format!("rider-top-up:{id}:{}", body.idempotency_key);
            let j = ledger::top_up_with(
                tx,
                &wallet::SandboxProvider,
                &id,
                body.amount,
                &key,
                now_ms(),
            )?;
            Ok(LedgerPosting {
                journal: j,
                balance: ledger::rider_balance(tx, &id)?,
            })
        })
        .await
        .api()?;
    Ok(Json(out))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct BuyPass {
    /// The pass product.
    pass_id: String,
    /// Makes the purchase safe to retry.
    idempotency_key: String,
}

#[derive(Serialize, ToSchema)]
pub(super) struct PassPurchase {
    pub journal: Journal,
    pub pass: PassHolding,
    /// In minor units (fen).
    pub balance: i64,
}

#[utoipa::path(post, path = "/api/v1/rider/wallet/passes", tag = "rider app",
    request_body = BuyPass, security(("rider_token" = [])),
    responses((status = 200, body = PassPurchase, description = "Bought from the balance; the \
            same `idempotency_key` again returns the same purchase"),
        (status = 404, body = Problem, content_type = "application/problem+json",
            description = "No such pass product (`pass_product_not_found`)"),
        (status = 409, body = Problem, content_type = "application/problem+json",
            description = "The key was used for another operation (`idempotency_conflict`)"),
        (status = 422, body = Problem, content_type = "application/problem+json",
            description = "The balance does not cover the price (`insufficient_balance`), an \
                invalid key (`invalid_argument`), or the body has an unknown field or a wrong \
                type (`invalid_body`)"),
        JsonBodyErrors, RiderErrors))]
pub(super) async fn buy_pass(
    r: RiderCaller,
    State(s): State<BikeApi>,
    ApiJson(body): ApiJson<BuyPass>,
) -> ApiResult<Json<PassPurchase>> {
    let (t, id) = (r.tenant.clone(), r.rider.id.clone());
    let out = s
        .bikes
        .db
        .tx(move |tx| {
            let product = system::pass_products(tx, &t)?
                .into_iter()
                .find(|p| p.id == body.pass_id)
                .ok_or_else(|| {
                    Error::not_found(
                        "pass_product_not_found",
                        format!("no pass product {}", body.pass_id),
                    )
                })?;
            let key = format!("pass:{id}:{}", body.idempotency_key);
            let (journal, holding) = ledger::buy_pass(tx, &id, &product, &key, now_ms())?;
            Ok(PassPurchase {
                journal,
                pass: holding,
                balance: ledger::rider_balance(tx, &id)?,
            })
        })
        .await
        .api()?;
    Ok(Json(out))
}
