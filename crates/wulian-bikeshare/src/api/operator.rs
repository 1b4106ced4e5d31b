//! The operator's API: the system's settings and plans, bikes, the fleet, trips, riders and
//! their money, work orders, demand and rebalancing, city credentials.

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, patch, post, put};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, HashSet};
use utoipa::{IntoParams, ToSchema};
use wulian_api::error::Problem;
use wulian_api::extract::{ApiJson, ApiQuery, Caller};
use wulian_common::time::now_ms;

use super::openapi::{ApiKeyErrors, JsonBodyErrors};
use super::{ApiResult, BikeApi, OrApi};
use crate::city::{self, CityToken};
use crate::error::Error;
use crate::ledger::{self, Journal, JournalEntryView, PassHolding};
use crate::pricing::{PassProduct, PricingPlan};
use crate::riders::Rider;
use crate::system::{self, Settings};
use crate::trips::{self, Trip};
use crate::vehicle_events::{self, VehicleEvent};
use crate::{cells, ops, wallet, workorders};

pub(super) fn routes() -> Router<BikeApi> {
    Router::new()
        .route("/api/v1/bikeshare/system", get(get_system).put(put_system))
        .route("/api/v1/bikeshare/plans", get(list_plans))
        .route("/api/v1/bikeshare/plans/{plan_id}", put(put_plan))
        .route("/api/v1/bikeshare/pass-products", get(list_pass_products))
        .route(
            "/api/v1/bikeshare/pass-products/{pass_id}",
            put(put_pass_product),
        )
        .route("/api/v1/bikeshare/bikes", post(register_bike))
        .route("/api/v1/bikeshare/fleet", get(fleet))
        .route("/api/v1/bikeshare/fleet/summary", get(fleet_summary))
        .route("/api/v1/bikeshare/locate", get(locate))
        .route("/api/v1/bikeshare/trips", get(list_trips))
        .route("/api/v1/bikeshare/trips/{trip_id}", get(get_trip))
        .route("/api/v1/bikeshare/riders", get(list_riders))
        .route("/api/v1/bikeshare/riders/{rider_id}", get(get_rider))
        .route(
            "/api/v1/bikeshare/riders/{rider_id}/top-ups",
            post(operator_top_up),
        )
        .route("/api/v1/bikeshare/riders/{rider_id}/refunds", post(refund))
        .route("/api/v1/bikeshare/ledger/trial-balance", get(trial_balance))
        .route(
            "/api/v1/bikeshare/work-orders",
            get(list_work_orders).post(create_work_order),
        )
        .route(
            "/api/v1/bikeshare/work-orders/{order_id}",
            patch(update_work_order),
        )
        .route("/api/v1/bikeshare/events", get(list_events))
        .route("/api/v1/bikeshare/demand", get(demand))
        .route("/api/v1/bikeshare/rebalancing", get(rebalancing))
        .route(
            "/api/v1/bikeshare/city-credentials",
            get(list_city).post(create_city),
        )
        .route(
            "/api/v1/bikeshare/city-credentials/{credential_id}",
            axum::routing::delete(revoke_city),
        )
}

#[utoipa::path(get, path = "/api/v1/bikeshare/system", tag = "bikeshare",
    security(("api_key" = [])),
    responses((status = 200, body = Settings, description = "The tenant's bike share settings"),
        (status = 404, body = Problem, content_type = "application/problem+json",
            description = "The bike share is not enabled for the tenant (`bikeshare_not_enabled`)"),
        ApiKeyErrors))]
pub(super) async fn get_system(
    caller: Caller,
    State(s): State<BikeApi>,
) -> ApiResult<Json<Settings>> {
    Ok(Json(s.bikes.settings(caller.tenant()).api()?))
}

#[utoipa::path(put, path = "/api/v1/bikeshare/system", tag = "bikeshare",
    request_body(content = Settings, description = "Every field is optional (defaults in \
        docs/bike-share.md)"),
    security(("api_key" = [])),
    responses((status = 200, body = Settings, description = "Enabled (the smart-lock profile and \
            the default plans are created if missing) or updated"),
        (status = 403, body = Problem, content_type = "application/problem+json",
            description = "Needs an admin API key (`forbidden`)"),
        (status = 422, body = Problem, content_type = "application/problem+json",
            description = "A setting is out of range (`invalid_settings`) or the body has an \
                unknown field or a wrong type (`invalid_body`)"),
        JsonBodyErrors, ApiKeyErrors))]
pub(super) async fn put_system(
    caller: Caller,
    State(s): State<BikeApi>,
    ApiJson(settings): ApiJson<Settings>,
) -> ApiResult<Json<Settings>> {
    caller.require_admin()?;
    Ok(Json(s.bikes.enable(caller.tenant(), settings).await.api()?))
}

#[derive(Serialize, ToSchema)]
pub(super) struct PlanList {
    pub plans: Vec<PricingPlan>,
}

#[utoipa::path(get, path = "/api/v1/bikeshare/plans", tag = "bikeshare",
    security(("api_key" = [])),
    responses((status = 200, body = PlanList, description = "The pricing plans (GBFS \
            `system_pricing_plans`)"),
        ApiKeyErrors))]
pub(super) async fn list_plans(
    caller: Caller,
    State(s): State<BikeApi>,
) -> ApiResult<Json<PlanList>> {
    let t = caller.tenant().to_string();
    let plans = s.bikes.db.run(move |c| system::plans(c, &t)).await.api()?;
    Ok(Json(PlanList { plans }))
}

#[utoipa::path(put, path = "/api/v1/bikeshare/plans/{plan_id}", tag = "bikeshare",
    params(("plan_id" = String, Path, description = "The plan's id, equal to the body's `id`")),
    request_body = PricingPlan, security(("api_key" = [])),
    responses((status = 200, body = PricingPlan, description = "Created or replaced"),
        (status = 403, body = Problem, content_type = "application/problem+json",
            description = "Needs an admin API key (`forbidden`)"),
        (status = 404, body = Problem, content_type = "application/problem+json",
            description = "The bike share is not enabled for the tenant (`bikeshare_not_enabled`)"),
        (status = 422, body = Problem, content_type = "application/problem+json",
            description = "The path and body ids differ (`id_mismatch`), a field is out of range \
                (`invalid_plan`), or the body has an unknown field or a wrong type (`invalid_body`)"),
        JsonBodyErrors, ApiKeyErrors))]
pub(super) async fn put_plan(
    caller: Caller,
    State(s): State<BikeApi>,
    Path(id): Path<String>,
    ApiJson(plan): ApiJson<PricingPlan>,
) -> ApiResult<Json<PricingPlan>> {
    let plan_id = plan.id.clone();
    let plan = put_item(&caller, &s, &id, &plan_id, plan, "plan", system::put_plan).await?;
    Ok(Json(plan))
}

/// Stores one catalogue item (a plan, a pass product) under the path's id, then reloads the
/// tenant so new trips use it.
async fn put_item<T: Clone + Send + 'static>(
    caller: &Caller,
    s: &BikeApi,
    path_id: &str,
    item_id: &str,
    item: T,
    what: &str,
    store: fn(&rusqlite::Connection, &str, &T) -> crate::Result<()>,
) -> ApiResult<T> {
    caller.require_admin()?;
    if item_id != path_id {
        return Err(super::api_error(Error::invalid(
            "id_mismatch",
            format!("the {what}'s id must match the path"),
        )));
    }
    let (t, stored) = (caller.tenant().to_string(), item.clone());
    s.bikes
        .db
        .tx(move |tx| store(tx, &t, &stored))
        .await
        .api()?;
    s.bikes.load_tenant(caller.tenant()).await.api()?;
    Ok(item)
}

#[derive(Serialize, ToSchema)]
pub(super) struct PassProductList {
    pub pass_products: Vec<PassProduct>,
}

#[utoipa::path(get, path = "/api/v1/bikeshare/pass-products", tag = "bikeshare",
    security(("api_key" = [])),
    responses((status = 200, body = PassProductList, description = "The ride passes riders can buy"),
        ApiKeyErrors))]
pub(super) async fn list_pass_products(
    caller: Caller,
    State(s): State<BikeApi>,
) -> ApiResult<Json<PassProductList>> {
    let t = caller.tenant().to_string();
    let pass_products = s
        .bikes
        .db
        .run(move |c| system::pass_products(c, &t))
        .await
        .api()?;
    Ok(Json(PassProductList { pass_products }))
}

#[utoipa::path(put, path = "/api/v1/bikeshare/pass-products/{pass_id}", tag = "bikeshare",
    params(("pass_id" = String, Path, description = "The product's id, equal to the body's `id`")),
    request_body = PassProduct, security(("api_key" = [])),
    responses((status = 200, body = PassProduct, description = "Created or replaced"),
        (status = 403, body = Problem, content_type = "application/problem+json",
            description = "Needs an admin API key (`forbidden`)"),
        (status = 404, body = Problem, content_type = "application/problem+json",
            description = "The bike share is not enabled for the tenant (`bikeshare_not_enabled`)"),
        (status = 422, body = Problem, content_type = "application/problem+json",
            description = "The path and body ids differ (`id_mismatch`), a field is out of range \
                (`invalid_pass`), or the body has an unknown field or a wrong type (`invalid_body`)"),
        JsonBodyErrors, ApiKeyErrors))]
pub(super) async fn put_pass_product(
    caller: Caller,
    State(s): State<BikeApi>,
    Path(id): Path<String>,
    ApiJson(pass): ApiJson<PassProduct>,
) -> ApiResult<Json<PassProduct>> {
    let pass_id = pass.id.clone();
    let what = "pass product";
    let pass = put_item(
        &caller,
        &s,
        &id,
        &pass_id,
        pass,
        what,
        system::put_pass_product,
    )
    .await?;
    Ok(Json(pass))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NewBike {
    /// The bike's code, also its device id (globally unique).
    id: String,
    #[serde(default)]
    name: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub(super) struct RegisteredBike {
    /// The bike's device, of the smart-lock profile.
    #[schema(value_type = Object)]
    pub bike: wulian_registry::Device,
    /// The lock's device token (`wld_…`), shown only this once.
    pub token: String,
}

#[utoipa::path(post, path = "/api/v1/bikeshare/bikes", tag = "bikeshare", request_body = NewBike,
    security(("api_key" = [])),
    responses((status = 201, body = RegisteredBike, description = "Registered"),
        (status = 403, body = Problem, content_type = "application/problem+json",
            description = "Needs a read-write API key (`forbidden`)"),
        (status = 404, body = Problem, content_type = "application/problem+json",
            description = "The bike share is not enabled for the tenant (`bikeshare_not_enabled`)"),
        (status = 409, body = Problem, content_type = "application/problem+json",
            description = "A device with this id exists (`already_exists`)"),
        (status = 422, body = Problem, content_type = "application/problem+json",
            description = "An invalid id or name (`invalid_field`), or the body has an unknown \
                field or a wrong type (`invalid_body`)"),
        JsonBodyErrors, ApiKeyErrors))]
pub(super) async fn register_bike(
    caller: Caller,
    State(s): State<BikeApi>,
    ApiJson(bike): ApiJson<NewBike>,
) -> ApiResult<(StatusCode, Json<RegisteredBike>)> {
    caller.require_write()?;
    let (device, token) = s
        .bikes
        .register_bike(caller.tenant(), &bike.id, bike.name)
        .await
        .api()?;
    Ok((
        StatusCode::CREATED,
        Json(RegisteredBike {
            bike: device,
            token,
        }),
    ))
}

#[derive(Serialize, ToSchema)]
pub(super) struct FleetList {
    pub bikes: Vec<ops::FleetBike>,
}

#[utoipa::path(get, path = "/api/v1/bikeshare/fleet", tag = "bikeshare", params(ops::FleetQuery),
    security(("api_key" = [])),
    responses((status = 200, body = FleetList, description = "Bikes by id, with status, last \
            position and battery, parking zone, trips and idle time"),
        (status = 400, body = Problem, content_type = "application/problem+json",
            description = "A malformed parameter (`invalid_query`)"),
        (status = 404, body = Problem, content_type = "application/problem+json",
            description = "The bike share is not enabled for the tenant (`bikeshare_not_enabled`)"),
        (status = 422, body = Problem, content_type = "application/problem+json",
            description = "An unknown `status` (`invalid_status`)"),
        ApiKeyErrors))]
pub(super) async fn fleet(
    caller: Caller,
    State(s): State<BikeApi>,
    ApiQuery(q): ApiQuery<ops::FleetQuery>,
) -> ApiResult<Json<FleetList>> {
    let bikes = s.bikes.fleet(caller.tenant(), &q).api()?;
    Ok(Json(FleetList { bikes }))
}

#[utoipa::path(get, path = "/api/v1/bikeshare/fleet/summary", tag = "bikeshare",
    security(("api_key" = [])),
    responses((status = 200, body = ops::FleetSummary, description = "Bikes per status"),
        (status = 404, body = Problem, content_type = "application/problem+json",
            description = "The bike share is not enabled for the tenant (`bikeshare_not_enabled`)"),
        ApiKeyErrors))]
pub(super) async fn fleet_summary(
    caller: Caller,
    State(s): State<BikeApi>,
) -> ApiResult<Json<ops::FleetSummary>> {
    Ok(Json(s.bikes.fleet_summary(caller.tenant()).api()?))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct Point {
    /// Latitude, -90 to 90.
    pub lat: f64,
    /// Longitude, -180 to 180.
    pub lon: f64,
}

#[utoipa::path(get, path = "/api/v1/bikeshare/locate", tag = "bikeshare", params(Point),
    security(("api_key" = [])),
    responses((status = 200, body = Object, description = "Where the point stands with respect \
            to the fences: `in_service_area`, `parking_zone`, `no_parking`, `no_riding`, \
            `parkable`, `nearest_parking` (`zone`, `distance_m`) within 2 km or null, and \
            `cell`, the H3 cell (resolution 9) that demand and rebalancing count it in"),
        (status = 400, body = Problem, content_type = "application/problem+json",
            description = "A missing or malformed parameter (`invalid_query`)"),
        (status = 404, body = Problem, content_type = "application/problem+json",
            description = "The bike share is not enabled for the tenant (`bikeshare_not_enabled`)"),
        (status = 422, body = Problem, content_type = "application/problem+json",
            description = "Not a position (`invalid_position`)"),
        ApiKeyErrors))]
pub(super) async fn locate(
    caller: Caller,
    State(s): State<BikeApi>,
    ApiQuery(p): ApiQuery<Point>,
) -> ApiResult<Json<Value>> {
    let mut placement = s.bikes.placement(caller.tenant(), p.lat, p.lon).api()?;
    if let Value::Object(m) = &mut placement {
        let cell = cells::cell(p.lat, p.lon, cells::DEFAULT_RESOLUTION).ok();
        m.insert("cell".into(), cell.into());
    }
    Ok(Json(placement))
}

#[derive(Serialize, ToSchema)]
pub(super) struct TripList {
    pub trips: Vec<Trip>,
}

#[utoipa::path(get, path = "/api/v1/bikeshare/trips", tag = "bikeshare", params(trips::TripQuery),
    security(("api_key" = [])),
    responses((status = 200, body = TripList, description = "Newest first, without routes (a trip's route comes with `GET /api/v1/bikeshare/trips/{trip_id}`)"),
        (status = 400, body = Problem, content_type = "application/problem+json",
            description = "A malformed parameter (`invalid_query`)"),
        ApiKeyErrors))]
pub(super) async fn list_trips(
    caller: Caller,
    State(s): State<BikeApi>,
    ApiQuery(q): ApiQuery<trips::TripQuery>,
) -> ApiResult<Json<TripList>> {
    let t = caller.tenant().to_string();
    let list = s
        .bikes
        .db
        .run(move |c| Ok(trips::list(c, &t, &q)?))
        .await
        .api()?;
    Ok(Json(TripList { trips: list }))
}

/// One step of a trip's state history.
#[derive(Serialize, ToSchema)]
pub(super) struct TripStep {
    pub at: i64,
    pub state: String,
    pub detail: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub(super) struct TripDetail {
    pub trip: Trip,
    /// Oldest first.
    pub history: Vec<TripStep>,
}

#[utoipa::path(get, path = "/api/v1/bikeshare/trips/{trip_id}", tag = "bikeshare",
    params(("trip_id" = String, Path)), security(("api_key" = [])),
    responses((status = 200, body = TripDetail, description = "The trip with its state history"),
        (status = 404, body = Problem, content_type = "application/problem+json",
            description = "No such trip in the tenant (`trip_not_found`)"),
        ApiKeyErrors))]
pub(super) async fn get_trip(
    caller: Caller,
    State(s): State<BikeApi>,
    Path(id): Path<String>,
) -> ApiResult<Json<TripDetail>> {
    let trip = s.bikes.trip(caller.tenant(), &id).await.api()?;
    let tid = trip.id.clone();
    let history = s
        .bikes
        .db
        .run(move |c| Ok(trips::history(c, &tid)?))
        .await
        .api()?;
    let history = history
        .into_iter()
        .map(|(at, state, detail)| TripStep { at, state, detail })
        .collect();
    Ok(Json(TripDetail { trip, history }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct Page {
    /// At most this many (default 100).
    limit: Option<u32>,
    /// Rider id to start after (paging, ids ascending).
    after: Option<String>,
    /// Riders whose id is this, whose phone ends with these digits (4 or more), or whose
    /// display or legal name contains it (2 to 64 characters).
    search: Option<String>,
}

/// The rider as the caller may see them: a city regulator not at all (the city's data are the
/// MDS feeds, without rider identities), a read-only caller without the real-name fields and
/// with the phone masked; operators and admins in full, for support.
fn rider_view(caller: &Caller, mut rider: Rider) -> ApiResult<Rider> {
    refuse_regulator(caller)?;
    if !caller.key.scope.can_write() {
        rider.phone = rider.masked_phone();
        rider.real_name = None;
        rider.id_number_last4 = None;
        rider.birth_date = None;
    }
    Ok(rider)
}

fn refuse_regulator(caller: &Caller) -> ApiResult<()> {
    if caller.is_city_regulator() {
        return Err(super::api_error(Error::forbidden(
            "forbidden",
            "riders' personal data is not shared with the city",
        )));
    }
    Ok(())
}

/// The tenant's riders matching `search` (see [`Page::search`]), by id.
fn search_riders(
    c: &rusqlite::Connection,
    tenant: &str,
    search: &str,
    limit: u32,
    after: Option<&str>,
) -> crate::Result<Vec<String>> {
    let search = search.trim();
    if !(2..=64).contains(&search.chars().count()) {
        return Err(Error::invalid(
            "invalid_search",
            "search: 2 to 64 characters",
        ));
    }
    let digits = search.len() >= 4 && search.bytes().all(|b| b.is_ascii_digit());
    let like = format!(
        "%{}%",
        search
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_")
    );
    let mut stmt = c.prepare(
        "SELECT r.id FROM rider_tenants t JOIN riders r ON r.id = t.rider
         WHERE t.tenant = ?1 AND (?2 IS NULL OR r.id > ?2)
           AND (r.id = ?3 OR (?4 AND r.phone LIKE '%' || ?3)
                OR r.display_name LIKE ?5 ESCAPE '\\' OR r.real_name LIKE ?5 ESCAPE '\\')
         ORDER BY r.id LIMIT ?6",
    )?;
    let ids = stmt
        .query_map(
            rusqlite::params![tenant, after, search, digits, like, limit.clamp(1, 1000)],
            |r| r.get(0),
        )?
        .collect::<rusqlite::Result<Vec<String>>>()?;
    Ok(ids)
}

#[derive(Serialize, ToSchema)]
pub(super) struct RiderSummary {
    pub rider: Rider,
    /// In minor units (fen); negative when the rider owes money.
    pub balance: i64,
}

#[derive(Serialize, ToSchema)]
pub(super) struct RiderList {
    pub riders: Vec<RiderSummary>,
}

#[utoipa::path(get, path = "/api/v1/bikeshare/riders", tag = "bikeshare", params(Page),
    security(("api_key" = [])),
    responses((status = 200, body = RiderList, description = "The tenant's riders by id, with \
            their balance; read-only callers see no real-name fields and a masked phone"),
        (status = 400, body = Problem, content_type = "application/problem+json",
            description = "A malformed parameter (`invalid_query`)"),
        (status = 403, body = Problem, content_type = "application/problem+json",
            description = "A city regulator (`forbidden`): riders are not the city's data"),
        (status = 422, body = Problem, content_type = "application/problem+json",
            description = "A search shorter than 2 or longer than 64 characters \
                (`invalid_search`)"),
        ApiKeyErrors))]
pub(super) async fn list_riders(
    caller: Caller,
    State(s): State<BikeApi>,
    ApiQuery(p): ApiQuery<Page>,
) -> ApiResult<Json<RiderList>> {
    refuse_regulator(&caller)?;
    let t = caller.tenant().to_string();
    let riders = s
        .bikes
        .db
        .run(move |c| {
            let limit = p.limit.unwrap_or(100);
            let ids = match p.search.as_deref() {
                Some(q) if !q.trim().is_empty() => {
                    search_riders(c, &t, q, limit, p.after.as_deref())?
                }
                _ => wallet::tenant_riders(c, &t, limit, p.after.as_deref())?,
            };
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                if let Some(rider) = crate::riders::get(c, &id)? {
                    let balance = ledger::rider_balance(c, &id)?;
                    out.push(RiderSummary { rider, balance });
                }
            }
            Ok(out)
        })
        .await
        .api()?;
    let riders = riders
        .into_iter()
        .map(|r| {
            Ok(RiderSummary {
                rider: rider_view(&caller, r.rider)?,
                balance: r.balance,
            })
        })
        .collect::<ApiResult<_>>()?;
    Ok(Json(RiderList { riders }))
}

#[derive(Serialize, ToSchema)]
pub(super) struct RiderDetail {
    pub rider: Rider,
    /// In minor units (fen).
    pub balance: i64,
    /// Every journal line of the rider, oldest first, with the balance after each.
    pub statement: Vec<JournalEntryView>,
    pub passes: Vec<PassHolding>,
}

#[utoipa::path(get, path = "/api/v1/bikeshare/riders/{rider_id}", tag = "bikeshare",
    params(("rider_id" = String, Path)), security(("api_key" = [])),
    responses((status = 200, body = RiderDetail, description = "The rider with balance, \
            statement and passes; read-only callers see no real-name fields and a masked phone"),
        (status = 403, body = Problem, content_type = "application/problem+json",
            description = "A city regulator (`forbidden`): riders are not the city's data"),
        (status = 404, body = Problem, content_type = "application/problem+json",
            description = "No such rider in the tenant (`rider_not_found`)"),
        ApiKeyErrors))]
pub(super) async fn get_rider(
    caller: Caller,
    State(s): State<BikeApi>,
    Path(id): Path<String>,
) -> ApiResult<Json<RiderDetail>> {
    refuse_regulator(&caller)?;
    let t = caller.tenant().to_string();
    let out = s
        .bikes
        .db
        .run(move |c| {
            wallet::check_tenant(c, &t, &id)?;
            let rider = crate::riders::get(c, &id)?
                .ok_or_else(|| Error::not_found("rider_not_found", format!("no rider {id}")))?;
            Ok(RiderDetail {
                rider,
                balance: ledger::rider_balance(c, &id)?,
                statement: ledger::rider_statement(c, &id)?,
                passes: ledger::passes(c, &id)?,
            })
        })
        .await
        .api()?;
    let out = RiderDetail {
        rider: rider_view(&caller, out.rider)?,
        ..out
    };
    Ok(Json(out))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct DeskTopUp {
    /// In minor units (fen), positive.
    amount: i64,
    /// The desk's receipt number or the bank transfer's reference.
    reference: String,
}

/// A journal just posted and the rider's balance after it.
#[derive(Serialize, ToSchema)]
pub(super) struct LedgerPosting {
    pub journal: Journal,
    /// In minor units (fen).
    pub balance: i64,
}

#[utoipa::path(post, path = "/api/v1/bikeshare/riders/{rider_id}/top-ups", tag = "bikeshare",
    params(("rider_id" = String, Path)), request_body = DeskTopUp, security(("api_key" = [])),
    responses((status = 200, body = LedgerPosting, description = "Booked at the operator's desk; \
            the same `reference` again returns the same journal"),
        (status = 403, body = Problem, content_type = "application/problem+json",
            description = "Needs a read-write API key (`forbidden`)"),
        (status = 404, body = Problem, content_type = "application/problem+json",
            description = "No such rider in the tenant (`rider_not_found`)"),
        (status = 409, body = Problem, content_type = "application/problem+json",
            description = "The reference was booked differently (`idempotency_conflict`, \
                `duplicate_provider_reference`)"),
        (status = 422, body = Problem, content_type = "application/problem+json",
            description = "An invalid amount or reference (`invalid_amount`, \
                `invalid_argument`), a balance above the cap (`balance_cap_exceeded`), or the \
                body has an unknown field or a wrong type (`invalid_body`)"),
        JsonBodyErrors, ApiKeyErrors))]
pub(super) async fn operator_top_up(
    caller: Caller,
    State(s): State<BikeApi>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<DeskTopUp>,
) -> ApiResult<Json<LedgerPosting>> {
    caller.require_write()?;
    let t = caller.tenant().to_string();
    let journal = s
        .bikes
        .db
        .tx(move |tx| {
            wallet::check_tenant(tx, &t, &id)?;
            let desk = ledger::OperatorDesk::new();
            let key = format!("desk:{}:{}", id, body.reference);
            let j = ledger::top_up(
                tx,
                &id,
                body.amount,
                ledger::PaymentProvider::name(&desk),
                &body.reference,
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
    Ok(Json(journal))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RefundRequest {
    /// In minor units (fen), positive.
    amount: i64,
    reason: String,
    /// The trip refunded, or `journal_id` of the charge or pass purchase.
    #[serde(default)]
    trip_id: Option<String>,
    #[serde(default)]
    journal_id: Option<i64>,
    /// Makes the refund safe to retry.
    idempotency_key: String,
}

#[utoipa::path(post, path = "/api/v1/bikeshare/riders/{rider_id}/refunds", tag = "bikeshare",
    params(("rider_id" = String, Path)), request_body = RefundRequest,
    security(("api_key" = [])),
    responses((status = 200, body = LedgerPosting, description = "Refunded to the balance; the \
            same `idempotency_key` again returns the same journal"),
        (status = 403, body = Problem, content_type = "application/problem+json",
            description = "Needs a read-write API key (`forbidden`)"),
        (status = 404, body = Problem, content_type = "application/problem+json",
            description = "No such rider in the tenant (`rider_not_found`), the trip has no \
                charge (`charge_not_found`), no such journal (`journal_not_found`), or the \
                journal is another rider's (`rider_mismatch`)"),
        (status = 409, body = Problem, content_type = "application/problem+json",
            description = "The key was used for another operation (`idempotency_conflict`)"),
        (status = 422, body = Problem, content_type = "application/problem+json",
            description = "Not exactly one of `trip_id` and `journal_id` (`invalid_refund`), an \
                invalid amount or argument (`invalid_amount`, `invalid_argument`), more than is \
                left to refund (`refund_exceeds_charge`), a journal that is no charge or pass \
                purchase (`not_refundable`), or the body has an unknown field or a wrong type \
                (`invalid_body`)"),
        JsonBodyErrors, ApiKeyErrors))]
pub(super) async fn refund(
    caller: Caller,
    State(s): State<BikeApi>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<RefundRequest>,
) -> ApiResult<Json<LedgerPosting>> {
    caller.require_write()?;
    let of = match (body.trip_id, body.journal_id) {
        (Some(trip), None) => ledger::RefundOf::Trip(trip),
        (None, Some(j)) => ledger::RefundOf::Journal(j),
        _ => {
            return Err(super::api_error(Error::invalid(
                "invalid_refund",
                "name exactly one of trip_id and journal_id",
            )));
        }
    };
    let t = caller.tenant().to_string();
    let out = s
        .bikes
        .db
        .tx(move |tx| {
            wallet::check_tenant(tx, &t, &id)?;
            let key = format!("refund:{}:{}", id, body.idempotency_key);
            let j = ledger::refund(tx, &id, body.amount, &body.reason, &of, &key, now_ms())?;
            Ok(LedgerPosting {
                journal: j,
                balance: ledger::rider_balance(tx, &id)?,
            })
        })
        .await
        .api()?;
    Ok(Json(out))
}

#[derive(Serialize, ToSchema)]
pub(super) struct TrialBalance {
    /// The sum of every entry of the installation's ledger: always 0.
    pub sum: i64,
    pub balanced: bool,
}

#[utoipa::path(get, path = "/api/v1/bikeshare/ledger/trial-balance", tag = "bikeshare",
    security(("api_key" = [])),
    responses((status = 200, body = TrialBalance, description = "The ledger sums to zero and \
            every journal balances (a violation is a 500, logged)"),
        (status = 403, body = Problem, content_type = "application/problem+json",
            description = "Needs an admin API key (`forbidden`)"),
        ApiKeyErrors))]
pub(super) async fn trial_balance(
    caller: Caller,
    State(s): State<BikeApi>,
) -> ApiResult<Json<TrialBalance>> {
    caller.require_admin()?;
    let out = s
        .bikes
        .db
        .run(|c| {
            let sum = ledger::trial_balance(c)?;
            ledger::verify(c)?;
            Ok(TrialBalance {
                sum,
                balanced: sum == 0,
            })
        })
        .await
        .api()?;
    Ok(Json(out))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct OrderQuery {
    /// `open`, `in_progress`, `done` or `cancelled`.
    state: Option<String>,
    bike: Option<String>,
    /// `rebalance`, `repair`, `battery` or `inspect`; looks among the newest 1,000 orders
    /// that match the other filters.
    kind: Option<String>,
    /// Orders assigned to exactly this crew or person; empty: the unassigned ones.
    assignee: Option<String>,
    /// At most this many (default 100).
    limit: Option<u32>,
}

#[derive(Serialize, ToSchema)]
pub(super) struct WorkOrderList {
    pub work_orders: Vec<workorders::WorkOrder>,
}

#[utoipa::path(get, path = "/api/v1/bikeshare/work-orders", tag = "bikeshare", params(OrderQuery),
    security(("api_key" = [])),
    responses((status = 200, body = WorkOrderList, description = "Newest first"),
        (status = 400, body = Problem, content_type = "application/problem+json",
            description = "A malformed parameter (`invalid_query`)"),
        (status = 422, body = Problem, content_type = "application/problem+json",
            description = "An unknown `kind` (`invalid_kind`)"),
        ApiKeyErrors))]
pub(super) async fn list_work_orders(
    caller: Caller,
    State(s): State<BikeApi>,
    ApiQuery(q): ApiQuery<OrderQuery>,
) -> ApiResult<Json<WorkOrderList>> {
    let kind = match q.kind.as_deref() {
        None | Some("") => None,
        Some(k) => Some(workorders::Kind::parse(k).ok_or_else(|| {
            super::api_error(Error::invalid(
                "invalid_kind",
                format!("unknown kind {k:?}; one of rebalance, repair, battery, inspect"),
            ))
        })?),
    };
    let t = caller.tenant().to_string();
    let limit = q.limit.unwrap_or(100).clamp(1, 1000) as usize;
    let orders = s
        .bikes
        .db
        .run(move |c| {
            let fetch = if kind.is_some() { 1000 } else { limit as u32 };
            let filter = workorders::Filter {
                state: q.state.as_deref(),
                bike: q.bike.as_deref(),
                assignee: q.assignee.as_deref(),
            };
            let mut orders = workorders::list(c, &t, &filter, fetch)?;
            if let Some(kind) = kind {
                orders.retain(|o| o.kind == kind);
                orders.truncate(limit);
            }
            Ok(orders)
        })
        .await
        .api()?;
    Ok(Json(WorkOrderList {
        work_orders: orders,
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NewWorkOrder {
    bike: String,
    kind: workorders::Kind,
    /// 1 to 500 characters.
    reason: String,
    /// Who works on it: a crew or a person, free text up to 100 characters (optional). An
    /// order already open keeps its own; PATCH changes it.
    #[serde(default)]
    assignee: Option<String>,
}

#[utoipa::path(post, path = "/api/v1/bikeshare/work-orders", tag = "bikeshare",
    request_body = NewWorkOrder, security(("api_key" = [])),
    responses((status = 201, body = workorders::WorkOrder, description = "Opened, or the open \
            order of this kind for the bike (one per kind and bike)"),
        (status = 403, body = Problem, content_type = "application/problem+json",
            description = "Needs a read-write API key (`forbidden`)"),
        (status = 404, body = Problem, content_type = "application/problem+json",
            description = "No such bike (`bike_not_found`)"),
        (status = 422, body = Problem, content_type = "application/problem+json",
            description = "An empty or too long reason (`invalid_reason`), a too long assignee \
                or one with control characters (`invalid_assignee`), or the body has an unknown \
                field or a wrong type (`invalid_body`)"),
        JsonBodyErrors, ApiKeyErrors))]
pub(super) async fn create_work_order(
    caller: Caller,
    State(s): State<BikeApi>,
    ApiJson(body): ApiJson<NewWorkOrder>,
) -> ApiResult<(StatusCode, Json<workorders::WorkOrder>)> {
    caller.require_write()?;
    if s.bikes.snapshot(caller.tenant(), &body.bike).is_none() {
        return Err(super::api_error(Error::not_found(
            "bike_not_found",
            format!("no bike {}", body.bike),
        )));
    }
    if body.reason.trim().is_empty() || body.reason.len() > 500 {
        return Err(super::api_error(Error::invalid(
            "invalid_reason",
            "reason: 1 to 500 characters",
        )));
    }
    let order = s
        .bikes
        .open_work_order(
            caller.tenant(),
            &body.bike,
            body.kind,
            &body.reason,
            &format!("key:{}", caller.key.id),
            body.assignee.as_deref(),
        )
        .await
        .api()?;
    Ok((StatusCode::CREATED, Json(order)))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct WorkOrderUpdate {
    /// The next state; absent: the state stays (to change only the assignee or the note).
    #[serde(default)]
    state: Option<workorders::State>,
    #[serde(default)]
    note: Option<String>,
    /// A crew or a person (up to 100 characters); `null` or `""` unassigns; absent: unchanged.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    assignee: Option<Option<String>>,
}

/// A field that is present (even as `null`) becomes `Some`, so PATCH tells "unassign" from
/// "leave as is".
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

#[utoipa::path(patch, path = "/api/v1/bikeshare/work-orders/{order_id}", tag = "bikeshare",
    params(("order_id" = String, Path)), request_body = WorkOrderUpdate,
    security(("api_key" = [])),
    responses((status = 200, body = workorders::WorkOrder, description = "Updated; closing the \
            last order that held a bike back returns it to service"),
        (status = 403, body = Problem, content_type = "application/problem+json",
            description = "Needs a read-write API key (`forbidden`)"),
        (status = 404, body = Problem, content_type = "application/problem+json",
            description = "No such work order (`work_order_not_found`)"),
        (status = 409, body = Problem, content_type = "application/problem+json",
            description = "The order cannot go to that state (`invalid_transition`), or it is \
                done or cancelled and the PATCH only reassigns it (`order_closed`)"),
        (status = 422, body = Problem, content_type = "application/problem+json",
            description = "Nothing to change (`empty_update`), a too long assignee or one with \
                control characters (`invalid_assignee`), or the body has an unknown field or a \
                wrong type (`invalid_body`)"),
        JsonBodyErrors, ApiKeyErrors))]
pub(super) async fn update_work_order(
    caller: Caller,
    State(s): State<BikeApi>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<WorkOrderUpdate>,
) -> ApiResult<Json<workorders::WorkOrder>> {
    caller.require_write()?;
    if body.state.is_none() && body.note.is_none() && body.assignee.is_none() {
        return Err(super::api_error(Error::invalid(
            "empty_update",
            "send at least one of state, note, assignee",
        )));
    }
    let assignee = match body.assignee {
        Some(a) => Some(workorders::check_assignee(a.as_deref()).map_err(super::api_error)?),
        None => None,
    };
    let change = workorders::Change {
        state: body.state,
        note: body.note,
        assignee,
    };
    Ok(Json(
        s.bikes
            .update_work_order(caller.tenant(), &id, change)
            .await
            .api()?,
    ))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct EventQuery {
    /// From this time on (ms since the epoch; default a day ago).
    from: Option<i64>,
    /// Before this time (ms; default now).
    to: Option<i64>,
    /// At most this many, 1 to 10,000 (default 1,000).
    limit: Option<u32>,
}

#[derive(Serialize, ToSchema)]
pub(super) struct VehicleEventList {
    pub events: Vec<VehicleEvent>,
}

#[utoipa::path(get, path = "/api/v1/bikeshare/events", tag = "bikeshare", params(EventQuery),
    security(("api_key" = [])),
    responses((status = 200, body = VehicleEventList, description = "The vehicle event log in \
            MDS vocabulary, oldest first"),
        (status = 400, body = Problem, content_type = "application/problem+json",
            description = "A malformed parameter (`invalid_query`)"),
        ApiKeyErrors))]
pub(super) async fn list_events(
    caller: Caller,
    State(s): State<BikeApi>,
    ApiQuery(q): ApiQuery<EventQuery>,
) -> ApiResult<Json<VehicleEventList>> {
    let t = caller.tenant().to_string();
    let now = now_ms();
    let events = s
        .bikes
        .db
        .run(move |c| {
            vehicle_events::between(
                c,
                &t,
                q.from.unwrap_or(now - 86_400_000),
                q.to.unwrap_or(now + 1),
                q.limit.unwrap_or(1000).clamp(1, 10_000),
            )
        })
        .await
        .api()?;
    Ok(Json(VehicleEventList { events }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct DemandQuery {
    /// Days back, 1 to 90 (default 7).
    days: Option<u32>,
}

/// The report with what a heat map needs next to it.
#[derive(Serialize, ToSchema)]
pub(super) struct DemandView {
    #[serde(flatten)]
    pub report: ops::DemandReport,
    /// The centre (`[lat, lon]`) of every cell the rows name.
    pub cell_centers: BTreeMap<String, [f64; 2]>,
    /// The tenant's time zone as an offset from UTC, for grouping rows by local hour of day.
    pub utc_offset_minutes: i32,
}

#[utoipa::path(get, path = "/api/v1/bikeshare/demand", tag = "bikeshare", params(DemandQuery),
    security(("api_key" = [])),
    responses((status = 200, body = DemandView, description = "Supply and demand per H3 \
            cell (resolution 9) and hour, with the cells' centres"),
        (status = 400, body = Problem, content_type = "application/problem+json",
            description = "A malformed parameter (`invalid_query`)"),
        (status = 404, body = Problem, content_type = "application/problem+json",
            description = "The bike share is not enabled for the tenant (`bikeshare_not_enabled`)"),
        ApiKeyErrors))]
pub(super) async fn demand(
    caller: Caller,
    State(s): State<BikeApi>,
    ApiQuery(q): ApiQuery<DemandQuery>,
) -> ApiResult<Json<DemandView>> {
    let (_, report) = s
        .bikes
        .demand(caller.tenant(), q.days.unwrap_or(7))
        .await
        .api()?;
    let cell_centers = report
        .rows
        .iter()
        .filter_map(|r| {
            let (lat, lon) = cells::cell_center(&r.cell).ok()?;
            Some((r.cell.clone(), [lat, lon]))
        })
        .collect();
    let timezone = s.bikes.settings(caller.tenant()).api()?.timezone;
    Ok(Json(DemandView {
        report,
        cell_centers,
        utc_offset_minutes: wallet::utc_offset_minutes(&timezone),
    }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct RebalanceQuery {
    /// At most this many moves, 1 to 1,000 (default 50).
    max_moves: Option<usize>,
    /// The local hour of day (0 to 23) to plan for, e.g. tomorrow's morning peak; default the
    /// coming hour.
    hour: Option<u8>,
}

/// The suggestion with what a map and a dispatcher need next to it.
#[derive(Serialize, ToSchema)]
pub(super) struct RebalancingView {
    #[serde(flatten)]
    pub rebalancing: ops::Rebalancing,
    /// The centre (`[lat, lon]`) of every cell a move names, to draw the moves on a map.
    pub cell_centers: BTreeMap<String, [f64; 2]>,
    /// Per donor cell, available bikes in it without an open rebalance order, as many as the
    /// moves from it take: the bikes to name in rebalance work orders.
    pub candidates: BTreeMap<String, Vec<String>>,
}

#[utoipa::path(get, path = "/api/v1/bikeshare/rebalancing", tag = "bikeshare",
    params(RebalanceQuery), security(("api_key" = [])),
    responses((status = 200, body = RebalancingView, description = "Moves from surplus to \
            deficit cells for the coming hour, nearest pairs first, with the cells' centres \
            and candidate bikes per donor cell"),
        (status = 400, body = Problem, content_type = "application/problem+json",
            description = "A malformed parameter (`invalid_query`)"),
        (status = 422, body = Problem, content_type = "application/problem+json",
            description = "An hour past 23 (`invalid_hour`)"),
        (status = 404, body = Problem, content_type = "application/problem+json",
            description = "The bike share is not enabled for the tenant (`bikeshare_not_enabled`)"),
        ApiKeyErrors))]
pub(super) async fn rebalancing(
    caller: Caller,
    State(s): State<BikeApi>,
    ApiQuery(q): ApiQuery<RebalanceQuery>,
) -> ApiResult<Json<RebalancingView>> {
    let tenant = caller.tenant().to_string();
    let max_moves = q.max_moves.unwrap_or(50);
    let rebalancing = match q.hour {
        None => s.bikes.rebalancing(&tenant, max_moves).await.api()?,
        Some(hour) if hour > 23 => {
            return Err(super::api_error(Error::invalid(
                "invalid_hour",
                "hour: 0 to 23 (local time)",
            )));
        }
        // The same suggestion as for the coming hour, from that hour's expected demand.
        Some(hour) => {
            let offset = wallet::utc_offset_minutes(&s.bikes.settings(&tenant).api()?.timezone);
            let (sd, _) = s.bikes.demand(&tenant, 7).await.api()?;
            let expected_demand = sd.expected_demand(hour, offset);
            let supply = s.bikes.supply_now(&tenant).api()?;
            let moves =
                cells::suggest_rebalancing(&supply, &expected_demand, max_moves.clamp(1, 1000));
            ops::Rebalancing {
                hour_of_day: hour,
                moves,
                supply,
                expected_demand,
            }
        }
    };
    let mut cell_centers = BTreeMap::new();
    let mut wanted: HashMap<String, usize> = HashMap::new();
    for m in &rebalancing.moves {
        for c in [&m.from_cell, &m.to_cell] {
            if let Ok((lat, lon)) = cells::cell_center(c) {
                cell_centers.insert(c.clone(), [lat, lon]);
            }
        }
        *wanted.entry(m.from_cell.clone()).or_default() += m.bikes as usize;
    }
    let candidates = if wanted.is_empty() {
        BTreeMap::new()
    } else {
        // Bikes already sent elsewhere are not offered twice.
        let t = tenant.clone();
        let busy: HashSet<String> = s
            .bikes
            .db
            .run(move |c| {
                let mut busy = HashSet::new();
                for state in ["open", "in_progress"] {
                    let filter = workorders::Filter {
                        state: Some(state),
                        ..Default::default()
                    };
                    for o in workorders::list(c, &t, &filter, 1000)? {
                        if o.kind == workorders::Kind::Rebalance {
                            busy.insert(o.bike);
                        }
                    }
                }
                Ok(busy)
            })
            .await
            .api()?;
        let available = s
            .bikes
            .fleet(
                &tenant,
                &ops::FleetQuery {
                    status: Some("available".into()),
                    limit: Some(100_000),
                    ..Default::default()
                },
            )
            .api()?;
        pick_candidates(
            available.iter().filter_map(|b| {
                let cell = cells::cell(b.snapshot.lat?, b.snapshot.lon?, cells::DEFAULT_RESOLUTION);
                Some((b.id.as_str(), cell.ok()?))
            }),
            &wanted,
            &busy,
        )
    };
    Ok(Json(RebalancingView {
        rebalancing,
        cell_centers,
        candidates,
    }))
}

/// Up to `wanted[cell]` bikes of each wanted cell, in the order given, skipping `busy` ones.
fn pick_candidates<'a>(
    bikes: impl Iterator<Item = (&'a str, String)>,
    wanted: &HashMap<String, usize>,
    busy: &HashSet<String>,
) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (id, cell) in bikes {
        let Some(&n) = wanted.get(&cell) else {
            continue;
        };
        if busy.contains(id) {
            continue;
        }
        let list = out.entry(cell).or_default();
        if list.len() < n {
            list.push(id.to_string());
        }
    }
    out
}

#[derive(Serialize, ToSchema)]
pub(super) struct CityCredentialList {
    pub credentials: Vec<CityToken>,
}

#[utoipa::path(get, path = "/api/v1/bikeshare/city-credentials", tag = "bikeshare",
    security(("api_key" = [])),
    responses((status = 200, body = CityCredentialList, description = "The MDS credentials, \
            revoked ones included"),
        (status = 403, body = Problem, content_type = "application/problem+json",
            description = "Needs an admin API key (`forbidden`)"),
        ApiKeyErrors))]
pub(super) async fn list_city(
    caller: Caller,
    State(s): State<BikeApi>,
) -> ApiResult<Json<CityCredentialList>> {
    caller.require_admin()?;
    let t = caller.tenant().to_string();
    let credentials = s.bikes.db.run(move |c| city::list(c, &t)).await.api()?;
    Ok(Json(CityCredentialList { credentials }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NewCityCredential {
    /// Who holds it (the city's department), 1 to 100 characters.
    name: String,
}

#[derive(Serialize, ToSchema)]
pub(super) struct CreatedCityCredential {
    pub credential: CityToken,
    /// The bearer token for `/mds/{tenant}/…`, shown only this once.
    pub token: String,
}

#[utoipa::path(post, path = "/api/v1/bikeshare/city-credentials", tag = "bikeshare",
    request_body = NewCityCredential, security(("api_key" = [])),
    responses((status = 201, body = CreatedCityCredential, description = "Created"),
        (status = 403, body = Problem, content_type = "application/problem+json",
            description = "Needs an admin API key (`forbidden`)"),
        (status = 422, body = Problem, content_type = "application/problem+json",
            description = "An empty or too long name (`invalid_name`), or the body has an \
                unknown field or a wrong type (`invalid_body`)"),
        JsonBodyErrors, ApiKeyErrors))]
pub(super) async fn create_city(
    caller: Caller,
    State(s): State<BikeApi>,
    ApiJson(body): ApiJson<NewCityCredential>,
) -> ApiResult<(StatusCode, Json<CreatedCityCredential>)> {
    caller.require_admin()?;
    let t = caller.tenant().to_string();
    let (cred, token) = s
        .bikes
        .db
        .tx(move |tx| city::create(tx, &t, &body.name, now_ms()))
        .await
        .api()?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedCityCredential {
            credential: cred,
            token,
        }),
    ))
}

#[utoipa::path(delete, path = "/api/v1/bikeshare/city-credentials/{credential_id}",
    tag = "bikeshare", params(("credential_id" = String, Path)), security(("api_key" = [])),
    responses((status = 204, description = "Revoked; the token stops working at once"),
        (status = 403, body = Problem, content_type = "application/problem+json",
            description = "Needs an admin API key (`forbidden`)"),
        (status = 404, body = Problem, content_type = "application/problem+json",
            description = "No live credential with this id (`city_token_not_found`)"),
        ApiKeyErrors))]
pub(super) async fn revoke_city(
    caller: Caller,
    State(s): State<BikeApi>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    let t = caller.tenant().to_string();
    s.bikes
        .db
        .tx(move |tx| city::revoke(tx, &t, &id, now_ms()))
        .await
        .api()?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn riders_db() -> rusqlite::Connection {
        let c = rusqlite::Connection::open_in_memory().unwrap();
        c.execute_batch(crate::riders::SCHEMA).unwrap();
        c.execute_batch(wallet::SCHEMA).unwrap();
        let rows = [
            ("r-a", "+8613800138000", "Li", "李雷", "t1"),
            ("r-b", "+8613900139001", "Wang_1", "王芳", "t1"),
            ("r-c", "+8613700138000", "Li Ming", "李明", "t2"),
        ];
        for (id, phone, name, real, tenant) in rows {
            c.execute(
                "INSERT INTO riders (id, phone, display_name, real_name, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, 0, 0)",
                rusqlite::params![id, phone, name, real],
            )
            .unwrap();
            c.execute(
                "INSERT INTO rider_tenants (rider, tenant, created_at) VALUES (?1, ?2, 0)",
                rusqlite::params![id, tenant],
            )
            .unwrap();
        }
        c
    }

    #[test]
    fn rider_search_matches_id_phone_tail_and_names_within_the_tenant() {
        let c = riders_db();
        let find = |q: &str| search_riders(&c, "t1", q, 100, None).unwrap();
        assert_eq!(find("r-b"), ["r-b"]);
        // The phone's last digits, not digits in its middle.
        assert_eq!(find("8000"), ["r-a"]);
        assert!(find("1380").is_empty());
        // Names, in either script; r-c has "Li" too but is another tenant's.
        assert_eq!(find("Li"), ["r-a"]);
        assert_eq!(find("王芳"), ["r-b"]);
        // LIKE's wildcards are literal: "_1" matches only the name with an underscore.
        assert_eq!(find("g_1"), ["r-b"]);
        assert!(find("%%").is_empty());
        // Paging continues after the given id.
        assert!(
            search_riders(&c, "t1", "Li", 100, Some("r-a"))
                .unwrap()
                .is_empty()
        );
        let err = search_riders(&c, "t1", "x", 100, None).unwrap_err();
        assert!(err.to_string().contains("2 to 64"), "{err}");
    }

    fn caller(scope: wulian_registry::Scope, role: Option<wulian_registry::Role>) -> Caller {
        let key = wulian_registry::ApiKey {
            id: "k-1".into(),
            tenant: "t1".into(),
            name: "test".into(),
            scope,
            installation_admin: false,
            created_at: 0,
            last_used_at: None,
            revoked: false,
            mqtt_policy: None,
        };
        let session = role.map(|role| wulian_registry::Session {
            id: "s-1".into(),
            tenant: "t1".into(),
            username: "someone".into(),
            role,
            csrf_token: "x".into(),
            created_at: 0,
            last_seen_at: 0,
            idle_timeout_ms: 1,
            expires_at: 1,
        });
        Caller { key, session }
    }

    fn rider() -> Rider {
        let c = riders_db();
        crate::riders::get(&c, "r-a").unwrap().unwrap()
    }

    #[test]
    fn riders_are_shown_by_role() {
        use wulian_registry::{Role, Scope};
        let full = rider_view(&caller(Scope::ReadWrite, Some(Role::Operator)), rider()).unwrap();
        assert_eq!(full.phone.as_deref(), Some("+8613800138000"));
        assert_eq!(full.real_name.as_deref(), Some("李雷"));
        // Read-only: a masked phone and no real-name fields, whether a viewer or a read-only key.
        for c in [
            caller(Scope::ReadOnly, Some(Role::Viewer)),
            caller(Scope::ReadOnly, None),
        ] {
            let seen = rider_view(&c, rider()).unwrap();
            assert_eq!(seen.phone.as_deref(), Some("+86 138****8000"));
            assert_eq!(seen.real_name, None);
            assert_eq!(seen.id_number_last4, None);
            assert_eq!(seen.display_name.as_deref(), Some("Li"));
        }
        let city = caller(Scope::ReadOnly, Some(Role::CityRegulator));
        assert!(rider_view(&city, rider()).is_err());
        assert!(refuse_regulator(&city).is_err());
    }

    #[test]
    fn candidates_fill_each_donor_cell_up_to_its_moves_skipping_busy_bikes() {
        let wanted = HashMap::from([("c1".to_string(), 2), ("c2".to_string(), 1)]);
        let busy = HashSet::from(["b2".to_string()]);
        let bikes = [
            ("b1", "c1"),
            ("b2", "c1"),
            ("b3", "c9"),
            ("b4", "c1"),
            ("b5", "c1"),
            ("b6", "c2"),
        ];
        let out = pick_candidates(
            bikes.iter().map(|&(b, c)| (b, c.to_string())),
            &wanted,
            &busy,
        );
        assert_eq!(out["c1"], ["b1", "b4"]);
        assert_eq!(out["c2"], ["b6"]);
        assert_eq!(out.len(), 2);
    }
}
