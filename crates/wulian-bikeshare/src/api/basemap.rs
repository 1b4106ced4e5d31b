//! The tenant's basemap (districts, streets, water as GeoJSON) for maps drawn without internet
//! tiles: read by the console and the rider app, set by an admin (the demo sets its city's).
//! A deployment with a tile server says so in its configuration (`[map]`); the binary hands
//! that to these routes as a [`MapTiles`] request extension, and the maps use it instead.

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde::Serialize;
use serde_json::Value;
use wulian_api::ApiError;
use wulian_api::error::Problem;
use wulian_api::extract::{ApiJson, Caller};
use wulian_common::time::now_ms;

use super::openapi::{ApiKeyErrors, JsonBodyErrors, RiderErrors};
use super::rider::RiderCaller;
use super::{ApiResult, BikeApi, OrApi};
use crate::system;

pub(super) fn routes() -> Router<BikeApi> {
    Router::new()
        .route(
            "/api/v1/bikeshare/basemap",
            get(operator_basemap).put(put_basemap),
        )
        .route("/api/v1/rider/basemap", get(rider_basemap))
        .route("/api/v1/bikeshare/basemap/tiles", get(operator_tiles))
        .route("/api/v1/rider/basemap/tiles", get(rider_tiles))
}

/// Where the maps get their tiles. All empty (the default): draw the tenant's GeoJSON basemap.
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct MapTiles {
    /// A MapLibre style document (vector tiles, with its own glyphs and sprites); wins over
    /// `tiles`.
    pub style_url: Option<String>,
    /// Raster tile URL templates with `{z}`, `{x}` and `{y}`.
    pub tiles: Vec<String>,
    /// The raster tiles' size in pixels.
    pub tile_size: u16,
    /// Shown on the map, as the tiles' licence asks.
    pub attribution: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/bikeshare/basemap/tiles", tag = "bikeshare",
    security(("api_key" = [])),
    responses((status = 200, body = MapTiles, description = "The deployment's tile server, or \
            nothing (empty `tiles`, no `style_url`): then draw the GeoJSON basemap"),
        ApiKeyErrors))]
pub(super) async fn operator_tiles(
    _caller: Caller,
    tiles: Option<Extension<MapTiles>>,
) -> Json<MapTiles> {
    Json(tiles.map(|Extension(t)| t).unwrap_or_default())
}

#[utoipa::path(get, path = "/api/v1/rider/basemap/tiles", tag = "rider app",
    security(("rider_token" = [])),
    responses((status = 200, body = MapTiles, description = "The deployment's tile server, or \
            nothing (empty `tiles`, no `style_url`): then draw the GeoJSON basemap"),
        RiderErrors))]
pub(super) async fn rider_tiles(
    _rider: RiderCaller,
    tiles: Option<Extension<MapTiles>>,
) -> Json<MapTiles> {
    Json(tiles.map(|Extension(t)| t).unwrap_or_default())
}

async fn stored(s: &BikeApi, tenant: &str) -> ApiResult<Response> {
    let t = tenant.to_string();
    match s
        .bikes
        .db
        .run(move |c| system::basemap(c, &t))
        .await
        .api()?
    {
        Some(body) => Ok((
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/geo+json"),
            )],
            body,
        )
            .into_response()),
        None => Err(ApiError::not_found(
            "basemap_not_found",
            "no basemap is set; PUT a GeoJSON FeatureCollection or configure a tile server",
        )),
    }
}

#[utoipa::path(get, path = "/api/v1/bikeshare/basemap", tag = "bikeshare",
    security(("api_key" = [])),
    responses((status = 200, body = Object, content_type = "application/geo+json",
            description = "The basemap: a GeoJSON FeatureCollection of districts, streets and \
            water (`layer` property)"),
        (status = 404, body = Problem, content_type = "application/problem+json",
            description = "No basemap is set (`basemap_not_found`)"),
        ApiKeyErrors))]
pub(super) async fn operator_basemap(
    caller: Caller,
    State(s): State<BikeApi>,
) -> ApiResult<Response> {
    stored(&s, caller.tenant()).await
}

#[utoipa::path(get, path = "/api/v1/rider/basemap", tag = "rider app",
    security(("rider_token" = [])),
    responses((status = 200, body = Object, content_type = "application/geo+json",
            description = "The basemap: a GeoJSON FeatureCollection of districts, streets and \
            water (`layer` property)"),
        (status = 404, body = Problem, content_type = "application/problem+json",
            description = "No basemap is set (`basemap_not_found`)"),
        RiderErrors))]
pub(super) async fn rider_basemap(r: RiderCaller, State(s): State<BikeApi>) -> ApiResult<Response> {
    stored(&s, &r.tenant).await
}

#[utoipa::path(put, path = "/api/v1/bikeshare/basemap", tag = "bikeshare",
    request_body(content = Object, description = "A GeoJSON FeatureCollection, at most 8 MiB"),
    security(("api_key" = [])),
    responses((status = 204, description = "Stored"),
        (status = 403, body = Problem, content_type = "application/problem+json",
            description = "Needs an admin API key (`forbidden`)"),
        (status = 422, body = Problem, content_type = "application/problem+json",
            description = "Not a FeatureCollection (`invalid_basemap`) or too large \
                (`basemap_too_large`)"),
        JsonBodyErrors, ApiKeyErrors))]
pub(super) async fn put_basemap(
    caller: Caller,
    State(s): State<BikeApi>,
    ApiJson(basemap): ApiJson<Value>,
) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    let t = caller.tenant().to_string();
    s.bikes
        .db
        .tx(move |tx| system::put_basemap(tx, &t, &basemap, now_ms()))
        .await
        .api()?;
    Ok(StatusCode::NO_CONTENT)
}
