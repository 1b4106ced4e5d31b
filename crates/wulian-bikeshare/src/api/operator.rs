//! The operator's API: the system's settings and plans, bikes, the fleet, trips, riders and
//! their money, work orders, demand and rebalancing, city credentials.

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, patch, post, put};
use serde::Deserialize;
use serde_json::{Value, json};
use wulian_api::extract::{ApiJson, ApiQuery, Caller};
use wulian_common::time::now_ms;

use super::{ApiResult, BikeApi, OrApi};
use crate::error::Error;
use crate::pricing::{PassProduct, PricingPlan};
use crate::system::{self, Settings};
use crate::{city, ledger, ops, trips, vehicle_events, wallet, workorders};

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

async fn get_system(caller: Caller, State(s): State<BikeApi>) -> ApiResult<Json<Settings>> {
    Ok(Json(s.bikes.settings(caller.tenant()).api()?))
}

async fn put_system(
    caller: Caller,
    State(s): State<BikeApi>,
    ApiJson(settings): ApiJson<Settings>,
) -> ApiResult<Json<Settings>> {
    caller.require_admin()?;
    Ok(Json(s.bikes.enable(caller.tenant(), settings).await.api()?))
}

async fn list_plans(caller: Caller, State(s): State<BikeApi>) -> ApiResult<Json<Value>> {
    let t = caller.tenant().to_string();
    let plans = s.bikes.db.run(move |c| system::plans(c, &t)).await.api()?;
    Ok(Json(json!({"plans": plans})))
}

async fn put_plan(
    caller: Caller,
    State(s): State<BikeApi>,
    Path(id): Path<String>,
    ApiJson(plan): ApiJson<PricingPlan>,
) -> ApiResult<Json<PricingPlan>> {
    caller.require_admin()?;
    if plan.id != id {
        return Err(super::api_error(Error::invalid(
            "id_mismatch",
            "the plan's id must match the path",
        )));
    }
    let (t, p) = (caller.tenant().to_string(), plan.clone());
    s.bikes
        .db
        .tx(move |tx| system::put_plan(tx, &t, &p))
        .await
        .api()?;
    s.bikes.load_tenant(caller.tenant()).await.api()?;
    Ok(Json(plan))
}

async fn list_pass_products(caller: Caller, State(s): State<BikeApi>) -> ApiResult<Json<Value>> {
    let t = caller.tenant().to_string();
    let passes = s
        .bikes
        .db
        .run(move |c| system::pass_products(c, &t))
        .await
        .api()?;
    Ok(Json(json!({"pass_products": passes})))
}

async fn put_pass_product(
    caller: Caller,
    State(s): State<BikeApi>,
    Path(id): Path<String>,
    ApiJson(pass): ApiJson<PassProduct>,
) -> ApiResult<Json<PassProduct>> {
    caller.require_admin()?;
    if pass.id != id {
        return Err(super::api_error(Error::invalid(
            "id_mismatch",
            "the pass product's id must match the path",
        )));
    }
    let (t, p) = (caller.tenant().to_string(), pass.clone());
    s.bikes
        .db
        .tx(move |tx| system::put_pass_product(tx, &t, &p))
        .await
        .api()?;
    s.bikes.load_tenant(caller.tenant()).await.api()?;
    Ok(Json(pass))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewBike {
    id: String,
    #[serde(default)]
    name: Option<String>,
}

async fn register_bike(
    caller: Caller,
    State(s): State<BikeApi>,
    ApiJson(bike): ApiJson<NewBike>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    caller.require_write()?;
    let (device, token) = s
        .bikes
        .register_bike(caller.tenant(), &bike.id, bike.name)
        .await
        .api()?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"bike": device, "token": token})),
    ))
}

async fn fleet(
    caller: Caller,
    State(s): State<BikeApi>,
    ApiQuery(q): ApiQuery<ops::FleetQuery>,
) -> ApiResult<Json<Value>> {
    let bikes = s.bikes.fleet(caller.tenant(), &q).api()?;
    Ok(Json(json!({"bikes": bikes})))
}

async fn fleet_summary(
    caller: Caller,
    State(s): State<BikeApi>,
) -> ApiResult<Json<ops::FleetSummary>> {
    Ok(Json(s.bikes.fleet_summary(caller.tenant()).api()?))
}

#[derive(Deserialize)]
pub(super) struct Point {
    pub lat: f64,
    pub lon: f64,
}

async fn locate(
    caller: Caller,
    State(s): State<BikeApi>,
    ApiQuery(p): ApiQuery<Point>,
) -> ApiResult<Json<Value>> {
    Ok(Json(
        s.bikes.placement(caller.tenant(), p.lat, p.lon).api()?,
    ))
}

async fn list_trips(
    caller: Caller,
    State(s): State<BikeApi>,
    ApiQuery(q): ApiQuery<trips::TripQuery>,
) -> ApiResult<Json<Value>> {
    let t = caller.tenant().to_string();
    let list = s
        .bikes
        .db
        .run(move |c| Ok(trips::list(c, &t, &q)?))
        .await
        .api()?;
    Ok(Json(json!({"trips": list})))
}

async fn get_trip(
    caller: Caller,
    State(s): State<BikeApi>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let trip = s.bikes.trip(caller.tenant(), &id).await.api()?;
    let tid = trip.id.clone();
    let history = s
        .bikes
        .db
        .run(move |c| Ok(trips::history(c, &tid)?))
        .await
        .api()?;
    let history: Vec<Value> = history
        .into_iter()
        .map(|(at, state, detail)| json!({"at": at, "state": state, "detail": detail}))
        .collect();
    Ok(Json(json!({"trip": trip, "history": history})))
}

#[derive(Deserialize)]
struct Page {
    limit: Option<u32>,
    after: Option<String>,
}

async fn list_riders(
    caller: Caller,
    State(s): State<BikeApi>,
    ApiQuery(p): ApiQuery<Page>,
) -> ApiResult<Json<Value>> {
    let t = caller.tenant().to_string();
    let riders = s
        .bikes
        .db
        .run(move |c| {
            let ids = wallet::tenant_riders(c, &t, p.limit.unwrap_or(100), p.after.as_deref())?;
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                if let Some(r) = crate::riders::get(c, &id)? {
                    out.push(json!({"rider": r, "balance": ledger::rider_balance(c, &id)?}));
                }
            }
            Ok(out)
        })
        .await
        .api()?;
    Ok(Json(json!({"riders": riders})))
}

async fn get_rider(
    caller: Caller,
    State(s): State<BikeApi>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let t = caller.tenant().to_string();
    let out = s
        .bikes
        .db
        .run(move |c| {
            wallet::check_tenant(c, &t, &id)?;
            let rider = crate::riders::get(c, &id)?
                .ok_or_else(|| Error::not_found("rider_not_found", format!("no rider {id}")))?;
            Ok(json!({
                "rider": rider,
                "balance": ledger::rider_balance(c, &id)?,
                "statement": ledger::rider_statement(c, &id)?,
                "passes": ledger::passes(c, &id)?,
            }))
        })
        .await
        .api()?;
    Ok(Json(out))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TopUp {
    amount: i64,
    /// The desk's receipt number or the bank transfer's reference.
    reference: String,
}

async fn operator_top_up(
    caller: Caller,
    State(s): State<BikeApi>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<TopUp>,
) -> ApiResult<Json<Value>> {
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
            Ok(json!({"journal": j, "balance": ledger::rider_balance(tx, &id)?}))
        })
        .await
        .api()?;
    Ok(Json(journal))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Refund {
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

async fn refund(
    caller: Caller,
    State(s): State<BikeApi>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<Refund>,
) -> ApiResult<Json<Value>> {
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
            Ok(json!({"journal": j, "balance": ledger::rider_balance(tx, &id)?}))
        })
        .await
        .api()?;
    Ok(Json(out))
}

async fn trial_balance(caller: Caller, State(s): State<BikeApi>) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    let out = s
        .bikes
        .db
        .run(|c| {
            let sum = ledger::trial_balance(c)?;
            ledger::verify(c)?;
            Ok(json!({"sum": sum, "balanced": sum == 0}))
        })
        .await
        .api()?;
    Ok(Json(out))
}

#[derive(Deserialize)]
struct OrderQuery {
    state: Option<String>,
    bike: Option<String>,
    limit: Option<u32>,
}

async fn list_work_orders(
    caller: Caller,
    State(s): State<BikeApi>,
    ApiQuery(q): ApiQuery<OrderQuery>,
) -> ApiResult<Json<Value>> {
    let t = caller.tenant().to_string();
    let orders = s
        .bikes
        .db
        .run(move |c| {
            workorders::list(
                c,
                &t,
                q.state.as_deref(),
                q.bike.as_deref(),
                q.limit.unwrap_or(100),
            )
        })
        .await
        .api()?;
    Ok(Json(json!({"work_orders": orders})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewOrder {
    bike: String,
    kind: workorders::Kind,
    reason: String,
}

async fn create_work_order(
    caller: Caller,
    State(s): State<BikeApi>,
    ApiJson(body): ApiJson<NewOrder>,
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
        )
        .await
        .api()?;
    Ok((StatusCode::CREATED, Json(order)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OrderUpdate {
    state: workorders::State,
    #[serde(default)]
    note: Option<String>,
}

async fn update_work_order(
    caller: Caller,
    State(s): State<BikeApi>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<OrderUpdate>,
) -> ApiResult<Json<workorders::WorkOrder>> {
    caller.require_write()?;
    Ok(Json(
        s.bikes
            .update_work_order(caller.tenant(), &id, body.state, body.note)
            .await
            .api()?,
    ))
}

#[derive(Deserialize)]
struct EventQuery {
    from: Option<i64>,
    to: Option<i64>,
    limit: Option<u32>,
}

async fn list_events(
    caller: Caller,
    State(s): State<BikeApi>,
    ApiQuery(q): ApiQuery<EventQuery>,
) -> ApiResult<Json<Value>> {
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
    Ok(Json(json!({"events": events})))
}

#[derive(Deserialize)]
struct DemandQuery {
    days: Option<u32>,
}

async fn demand(
    caller: Caller,
    State(s): State<BikeApi>,
    ApiQuery(q): ApiQuery<DemandQuery>,
) -> ApiResult<Json<ops::DemandReport>> {
    let (_, report) = s
        .bikes
        .demand(caller.tenant(), q.days.unwrap_or(7))
        .await
        .api()?;
    Ok(Json(report))
}

#[derive(Deserialize)]
struct RebalanceQuery {
    max_moves: Option<usize>,
}

async fn rebalancing(
    caller: Caller,
    State(s): State<BikeApi>,
    ApiQuery(q): ApiQuery<RebalanceQuery>,
) -> ApiResult<Json<ops::Rebalancing>> {
    Ok(Json(
        s.bikes
            .rebalancing(caller.tenant(), q.max_moves.unwrap_or(50))
            .await
            .api()?,
    ))
}

async fn list_city(caller: Caller, State(s): State<BikeApi>) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    let t = caller.tenant().to_string();
    let list = s.bikes.db.run(move |c| city::list(c, &t)).await.api()?;
    Ok(Json(json!({"credentials": list})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewCity {
    name: String,
}

async fn create_city(
    caller: Caller,
    State(s): State<BikeApi>,
    ApiJson(body): ApiJson<NewCity>,
) -> ApiResult<(StatusCode, Json<Value>)> {
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
        Json(json!({"credential": cred, "token": token})),
    ))
}

async fn revoke_city(
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
