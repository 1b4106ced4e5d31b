//! `/api/v1/zones`: named polygons (parking areas, service areas, no-go areas) that rules test
//! points against with `in_zone(lat, lon, 'name')`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use wulian_common::blocking::run_blocking;
use wulian_registry::Zone;
use wulian_rules::ZoneResolver;
use wulian_rules::geo::Polygon;

use crate::error::{ApiError, ApiResult, Problem};
use crate::extract::{ApiJson, ApiQuery, Caller};
use crate::routes::twins::lifecycle;
use crate::state::AppState;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ZoneBody {
    /// Free-form, e.g. `parking`, `no_parking`, `service_area` (default `area`).
    pub kind: Option<String>,
    /// A GeoJSON Polygon (`{"type": "Polygon", "coordinates": [[[lon, lat], …]]}`, holes as
    /// further rings), its bare coordinates, or one ring; at most 10,000 vertices.
    #[schema(value_type = Object)]
    pub polygon: serde_json::Value,
    /// A JSON object of your own (capacity, opening hours, …).
    #[schema(value_type = Option<Object>)]
    pub properties: Option<serde_json::Value>,
}

#[utoipa::path(put, path = "/api/v1/zones/{name}", tag = "zones", request_body = ZoneBody,
    params(("name" = String, Path, description = "1–128 characters, no quotes or slashes")),
    security(("api_key" = [])),
    responses((status = 201, body = Object, description = "Created"), (status = 200, body = Object, description = "Replaced"),
        (status = 422, body = Problem, description = "The polygon is not a valid polygon (the detail says where)")))]
pub async fn put_zone(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<ZoneBody>,
) -> ApiResult<(StatusCode, Json<Zone>)> {
    caller.require_write()?;
    Polygon::from_json(&body.polygon).map_err(|reason| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            format!("polygon: {reason}"),
        )
    })?;
    let tenant = caller.tenant().to_string();
    let kind = body.kind.unwrap_or_else(|| "area".to_string());
    let properties = body
        .properties
        .unwrap_or_else(|| serde_json::Value::Object(Default::default()));
    let (zone, created) = run_blocking(&state.registry, move |r| {
        r.put_zone(&tenant, &name, &kind, &body.polygon, &properties)
    })
    .await?;
    reload(&state).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(zone)))
}

async fn reload(state: &AppState) -> ApiResult<()> {
    lifecycle(state)?
        .zones
        .reload()
        .await
        .map_err(|e| ApiError::internal("Reloading zones failed.", &e))?;
    Ok(())
}

#[utoipa::path(get, path = "/api/v1/zones", tag = "zones", security(("api_key" = [])),
    responses((status = 200, body = Vec<Object>, description = "By name")))]
pub async fn list_zones(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Vec<Zone>>> {
    let tenant = caller.tenant().to_string();
    Ok(Json(
        run_blocking(&state.registry, move |r| r.list_zones(&tenant)).await?,
    ))
}

#[utoipa::path(get, path = "/api/v1/zones/{name}", tag = "zones", params(("name" = String, Path)),
    security(("api_key" = [])), responses((status = 200, body = Object), (status = 404, body = Problem)))]
pub async fn get_zone(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<Zone>> {
    let tenant = caller.tenant().to_string();
    Ok(Json(
        run_blocking(&state.registry, move |r| r.get_zone(&tenant, &name)).await?,
    ))
}

#[utoipa::path(delete, path = "/api/v1/zones/{name}", tag = "zones", params(("name" = String, Path)),
    security(("api_key" = [])),
    responses((status = 204, description = "Deleted; rules naming it now report \"unknown zone\" errors"),
        (status = 404, body = Problem)))]
pub async fn delete_zone(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require_write()?;
    let tenant = caller.tenant().to_string();
    run_blocking(&state.registry, move |r| r.delete_zone(&tenant, &name)).await?;
    reload(&state).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct Point {
    pub lat: f64,
    pub lon: f64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Containment {
    pub zone: String,
    pub inside: bool,
}

#[utoipa::path(get, path = "/api/v1/zones/{name}/contains", tag = "zones",
    params(("name" = String, Path), Point), security(("api_key" = [])),
    responses((status = 200, body = Containment, description = "Whether the point is inside (what `in_zone` answers)"),
        (status = 404, body = Problem)))]
pub async fn contains(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    ApiQuery(point): ApiQuery<Point>,
) -> ApiResult<Json<Containment>> {
    let inside = lifecycle(&state)?
        .zones
        .contains(caller.tenant(), &name, point.lat, point.lon)
        .ok_or_else(|| ApiError::not_found("zone_not_found", format!("zone {name:?} not found")))?;
    Ok(Json(Containment { zone: name, inside }))
}
