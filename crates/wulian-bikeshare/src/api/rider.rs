//! The rider app's API: sign-up with real-name verification, bikes nearby, renting and riding,
//! the wallet, and the rider's privacy rights (consent, export, erasure). Authenticated with
//! the rider's own bearer token, never an API key.

use axum::Json;
use axum::Router;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post, put};
use serde::Deserialize;
use serde_json::{Value, json};
use wulian_api::ApiError;
use wulian_api::extract::{ApiJson, ApiQuery};
use wulian_common::time::now_ms;

use super::{ApiResult, BikeApi, OrApi, api_error};
use crate::error::Error;
use crate::riders::{self, Rider};
use crate::trips::{self, TripState};
use crate::{ledger, system, wallet};

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

async fn sign_up(
    State(s): State<BikeApi>,
    Path(tenant): Path<String>,
    ApiJson(body): ApiJson<riders::SignUp>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    if !s.bikes.is_enabled(&tenant) {
        return Err(api_error(Error::not_found(
            "bikeshare_not_found",
            "no bike share here",
        )));
    }
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
    Ok((
        StatusCode::CREATED,
        Json(json!({"rider": rider, "token": token})),
    ))
}

async fn me(r: RiderCaller, State(s): State<BikeApi>) -> ApiResult<Json<Value>> {
    let id = r.rider.id.clone();
    let balance = s
        .bikes
        .db
        .run(move |c| Ok(ledger::rider_balance(c, &id)?))
        .await
        .api()?;
    Ok(Json(
        json!({"rider": r.rider, "balance": balance, "currency": ledger::CURRENCY}),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Consent {
    location: bool,
}

async fn consent(
    r: RiderCaller,
    State(s): State<BikeApi>,
    ApiJson(body): ApiJson<Consent>,
) -> ApiResult<Json<Value>> {
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
    Ok(Json(json!({"rider": rider})))
}

/// Everything stored about the rider (PIPL's right of access and portability).
async fn export(r: RiderCaller, State(s): State<BikeApi>) -> ApiResult<Json<Value>> {
    let (t, id) = (r.tenant.clone(), r.rider.id.clone());
    let out = s
        .bikes
        .db
        .run(move |c| {
            let account = riders::export(c, &id)?;
            let trips = trips::list(
                c,
                &t,
                &trips::TripQuery {
                    rider: Some(id.clone()),
                    limit: Some(1000),
                    ..Default::default()
                },
            )?;
            Ok(json!({
                "exported_at": now_ms(),
                "account": account,
                "trips": trips,
                "statement": ledger::rider_statement(c, &id)?,
                "passes": ledger::passes(c, &id)?,
            }))
        })
        .await
        .api()?;
    Ok(Json(out))
}

/// Erases the account (PIPL's right to deletion): no live trip, no debt; a positive balance is
/// paid out at the desk. Trips stay only de-identified (the ledger must still balance).
async fn erase(r: RiderCaller, State(s): State<BikeApi>) -> ApiResult<StatusCode> {
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

#[derive(Deserialize)]
struct Near {
    lat: f64,
    lon: f64,
    radius_m: Option<f64>,
    limit: Option<usize>,
}

async fn nearby(
    r: RiderCaller,
    State(s): State<BikeApi>,
    ApiQuery(q): ApiQuery<Near>,
) -> ApiResult<Json<Value>> {
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
    Ok(Json(json!({"bikes": bikes})))
}

async fn zones(r: RiderCaller, State(s): State<BikeApi>) -> ApiResult<Json<Value>> {
    Ok(Json(s.bikes.fences_geojson(&r.tenant).api()?))
}

async fn parking(
    r: RiderCaller,
    State(s): State<BikeApi>,
    ApiQuery(q): ApiQuery<super::operator::Point>,
) -> ApiResult<Json<Value>> {
    Ok(Json(s.bikes.placement(&r.tenant, q.lat, q.lon).api()?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Rent {
    bike: String,
}

/// Rents a bike. Send an `Idempotency-Key` header: a retried request returns the same trip and
/// never rents twice. Answers once the lock confirmed (201, `riding`) or the unlock failed
/// (201, `failed`, nothing charged).
async fn rent(
    r: RiderCaller,
    State(s): State<BikeApi>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<Rent>,
) -> ApiResult<(StatusCode, Json<Value>)> {
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
    Ok((StatusCode::CREATED, Json(json!({"trip": trip}))))
}

async fn my_trips(r: RiderCaller, State(s): State<BikeApi>) -> ApiResult<Json<Value>> {
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
    Ok(Json(json!({"trips": list})))
}

/// A trip of the rider; while riding, with the fare so far.
async fn my_trip(
    r: RiderCaller,
    State(s): State<BikeApi>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let trip = s.bikes.trip(&r.tenant, &id).await.api()?;
    if trip.rider != r.rider.id {
        return Err(api_error(Error::not_found(
            "trip_not_found",
            format!("no trip {id}"),
        )));
    }
    let mut out = json!({"trip": trip});
    if matches!(trip.state, TripState::Riding | TripState::Ending) {
        let so_far = s.bikes.fare_so_far(&r.tenant, &trip).await.api()?;
        out["fare_so_far"] = serde_json::to_value(so_far).unwrap_or(Value::Null);
        if let Some(pos) = s
            .bikes
            .snapshot(&r.tenant, &trip.bike)
            .and_then(|b| b.position())
        {
            out["parking"] = s
                .bikes
                .placement(&r.tenant, pos.0, pos.1)
                .unwrap_or(Value::Null);
        }
    }
    Ok(Json(out))
}

async fn resume(
    r: RiderCaller,
    State(s): State<BikeApi>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let trip = s
        .bikes
        .resume_trip(&r.tenant, &r.rider.id, &id)
        .await
        .api()?;
    Ok(Json(json!({"trip": trip})))
}

async fn wallet_view(r: RiderCaller, State(s): State<BikeApi>) -> ApiResult<Json<Value>> {
    let (t, id) = (r.tenant.clone(), r.rider.id.clone());
    let out = s
        .bikes
        .db
        .run(move |c| {
            let plans = system::plans(c, &t)?;
            Ok(json!({
                "currency": ledger::CURRENCY,
                "balance": ledger::rider_balance(c, &id)?,
                "max_top_up": ledger::max_top_up(c, &id)?,
                "statement": ledger::rider_statement(c, &id)?,
                "passes": ledger::passes(c, &id)?,
                "pass_products": system::pass_products(c, &t)?,
                "plans": plans,
            }))
        })
        .await
        .api()?;
    Ok(Json(out))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RiderTopUp {
    amount: i64,
    idempotency_key: String,
}

async fn top_up(
    r: RiderCaller,
    State(s): State<BikeApi>,
    ApiJson(body): ApiJson<RiderTopUp>,
) -> ApiResult<Json<Value>> {
    if !s.bikes.settings(&r.tenant).api()?.payments_sandbox {
        return Err(api_error(Error::Rule {
            status: 503,
            code: "payment_provider_unavailable",
            message: "no online payment provider is configured; top up at a service desk".into(),
        }));
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
            Ok(json!({"journal": j, "balance": ledger::rider_balance(tx, &id)?}))
        })
        .await
        .api()?;
    Ok(Json(out))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BuyPass {
    pass_id: String,
    idempotency_key: String,
}

async fn buy_pass(
    r: RiderCaller,
    State(s): State<BikeApi>,
    ApiJson(body): ApiJson<BuyPass>,
) -> ApiResult<Json<Value>> {
    let (t, id) = (r.tenant.clone(), r.rider.id.clone());
    let out = s
        .bikes
        .db
        .tx(move |tx| {
            let product = system::pass_products(tx, &t)?
                .into_iter()
                .find(|p| p.id == body.pass_id)
                .ok_or_else(|| Error::not_found("pass_product_not_found", format!("no pass product {}", body.pass_id)))?;
            let key = format!("pass:{id}:{}", body.idempotency_key);
            let (journal, holding) = ledger::buy_pass(tx, &id, &product, &key, now_ms())?;
            Ok(json!({"journal": journal, "pass": holding, "balance": ledger::rider_balance(tx, &id)?}))
        })
        .await
        .api()?;
    Ok(Json(out))
}
