//! The city's feeds: GBFS 3.0 (public, as the standard intends) under `/gbfs/v3/{tenant}/` and
//! MDS 2.0 under `/mds/{tenant}/`, which opens only to the tenant's city credentials and
//! answers in MDS' versioned media type.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use utoipa::IntoParams;
use wulian_api::ApiError;
use wulian_api::error::Problem;
use wulian_api::extract::ApiQuery;

use super::openapi::CityErrors;
use super::{ApiResult, BikeApi, OrApi, api_error};
use crate::error::Error;
use crate::gbfs::FeedName;
use crate::{city, feeds, mds};

pub(super) fn routes() -> Router<BikeApi> {
    Router::new()
        .route("/gbfs/v3/{tenant}/{feed}", get(gbfs_feed))
        .route("/mds/{tenant}/vehicles", get(vehicles))
        .route("/mds/{tenant}/vehicles/status", get(vehicles_status))
        .route("/mds/{tenant}/vehicles/{device_id}", get(vehicle))
        .route("/mds/{tenant}/trips", get(trips))
        .route("/mds/{tenant}/events/historical", get(events_historical))
        .route("/mds/{tenant}/events/recent", get(events_recent))
        .route("/mds/{tenant}/telemetry", get(telemetry))
}

/// Where this server is reached, from the request (feeds link to each other absolutely).
fn origin(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            h.chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c))
        })
        .unwrap_or("localhost");
    format!("http://{host}")
}

fn json_bytes(content_type: &'static str, bytes: Vec<u8>) -> Response {
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        bytes,
    )
        .into_response()
}

#[utoipa::path(get, path = "/gbfs/v3/{tenant}/{feed}", tag = "city feeds",
    params(("tenant" = String, Path, description = "The bike share's tenant"),
        ("feed" = String, Path, description = "`gbfs.json` (the discovery feed listing the \
            others), `gbfs_versions`, `system_information`, `vehicle_types`, \
            `station_information`, `station_status`, `vehicle_status`, `system_pricing_plans` or \
            `geofencing_zones`, with or without `.json`")),
    responses((status = 200, body = Object, description = "The feed as GBFS 3.0 defines it \
            (https://github.com/MobilityData/gbfs/blob/v3.0/gbfs.md), with `ttl` and \
            `last_updated`; public, no credentials"),
        (status = 404, body = Problem, content_type = "application/problem+json",
            description = "No such feed (`feed_not_found`) or no bike share here \
                (`system_not_found`)")))]
pub(super) async fn gbfs_feed(
    State(s): State<BikeApi>,
    Path((tenant, feed)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let Some(feed) = FeedName::parse(&feed) else {
        return Err(ApiError::not_found(
            "feed_not_found",
            format!("no GBFS feed {feed:?}; see gbfs.json"),
        ));
    };
    if !s.bikes.is_enabled(&tenant) {
        return Err(ApiError::not_found(
            "system_not_found",
            "no bike share here",
        ));
    }
    if feed == FeedName::VehicleStatus {
        let cached = s.bikes.vehicle_status_feed(&tenant).await.api()?;
        let gzip_ok = headers
            .get(header::ACCEPT_ENCODING)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(',').any(|e| e.trim().starts_with("gzip")));
        let (body, encoding) = if gzip_ok {
            (cached.gzip.clone(), Some("gzip"))
        } else {
            (cached.json.clone(), None)
        };
        let mut response = json_bytes("application/json", body);
        let h = response.headers_mut();
        h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
        if let Some(encoding) = encoding {
            h.insert(header::CONTENT_ENCODING, HeaderValue::from_static(encoding));
        }
        return Ok(response);
    }
    let base = format!("{}/gbfs/v3/{tenant}", origin(&headers));
    let bytes = s.bikes.gbfs_feed(&tenant, feed, &base).api()?;
    Ok(json_bytes("application/json", bytes.as_ref().clone()))
}

/// Checks the city credential and the media type a client accepts.
async fn city(s: &BikeApi, tenant: &str, headers: &HeaderMap) -> ApiResult<String> {
    if let Some(accept) = headers.get(header::ACCEPT).and_then(|a| a.to_str().ok()) {
        let ok = accept.split(',').any(|part| {
            let part = part.trim();
            part.starts_with("*/*")
                || part.starts_with("application/*")
                || part.starts_with("application/json")
                || (part.starts_with("application/vnd.mds+json")
                    && (!part.contains("version=") || part.contains("version=2.0")))
        });
        if !ok {
            return Err(ApiError::new(
                StatusCode::NOT_ACCEPTABLE,
                "not_acceptable",
                format!("this server speaks {}", mds::MEDIA_TYPE),
            ));
        }
    }
    let Some(token) = wulian_api::extract::bearer(headers)? else {
        return Err(ApiError::unauthorized(
            "missing_credentials",
            "MDS needs Authorization: Bearer <city credential>",
        ));
    };
    let token = token.to_string();
    let owner = s
        .bikes
        .db
        .run(move |c| city::authenticate(c, &token))
        .await
        .map_err(api_error)?;
    match owner {
        Some(t) if t == tenant => Ok(format!("{}/mds/{tenant}", origin(headers))),
        // A credential of another city (tenant) learns nothing about this one.
        _ => Err(ApiError::unauthorized(
            "invalid_credentials",
            "unknown or revoked city credential",
        )),
    }
}

/// The credential check and the response context of an MDS request.
async fn open(s: &BikeApi, tenant: &str, headers: &HeaderMap) -> ApiResult<mds::MdsContext> {
    let base = city(s, tenant, headers).await?;
    s.bikes.mds_context(tenant, &base).await.api()
}

/// A record the builders refuse is the server's fault, not the city's query.
fn mds_build(e: mds::MdsError) -> ApiError {
    api_error(Error::Internal(format!("MDS response: {e}")))
}

fn mds_api(e: mds::MdsError) -> ApiError {
    api_error(feeds::mds_error(e))
}

fn mds_body<T: serde::Serialize>(r: &mds::Response<T>) -> ApiResult<Response> {
    let bytes = r
        .to_json()
        .map_err(|e| api_error(Error::Internal(format!("MDS serialisation: {e}"))))?;
    Ok(json_bytes(mds::MEDIA_TYPE, bytes))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct PageQuery {
    /// Page number, from 1.
    #[serde(rename = "page[number]")]
    number: Option<u32>,
    /// Items per page.
    #[serde(rename = "page[size]")]
    size: Option<u32>,
}

#[utoipa::path(get, path = "/mds/{tenant}/vehicles", tag = "city feeds",
    params(("tenant" = String, Path), PageQuery), security(("city_credential" = [])),
    responses((status = 200, body = Object, content_type = "application/vnd.mds+json;version=2.0",
            description = "MDS 2.0 Provider `/vehicles` \
            (https://github.com/openmobilityfoundation/mobility-data-specification/tree/2.0.0/provider): \
            every vehicle, paged with `links`"),
        (status = 400, body = Problem, content_type = "application/problem+json",
            description = "A malformed parameter (`invalid_query`)"),
        (status = 404, body = Problem, content_type = "application/problem+json",
            description = "The bike share is not enabled for the tenant (`bikeshare_not_enabled`)"),
        CityErrors))]
pub(super) async fn vehicles(
    State(s): State<BikeApi>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    ApiQuery(p): ApiQuery<PageQuery>,
) -> ApiResult<Response> {
    let ctx = open(&s, &tenant, &headers).await?;
    let list = s.bikes.mds_vehicles(&tenant).api()?;
    mds_body(&mds::vehicles_response(
        &ctx,
        &list,
        feeds::page(p.number, p.size),
    ))
}

#[utoipa::path(get, path = "/mds/{tenant}/vehicles/{device_id}", tag = "city feeds",
    params(("tenant" = String, Path),
        ("device_id" = String, Path, description = "The vehicle's MDS `device_id` (a UUID)")),
    security(("city_credential" = [])),
    responses((status = 200, body = Object, content_type = "application/vnd.mds+json;version=2.0",
            description = "MDS 2.0 Provider `/vehicles/{device_id}`: one vehicle"),
        (status = 404, body = Problem, content_type = "application/problem+json",
            description = "No such vehicle (`vehicle_not_found`) or the bike share is not \
                enabled for the tenant (`bikeshare_not_enabled`)"),
        CityErrors))]
pub(super) async fn vehicle(
    State(s): State<BikeApi>,
    Path((tenant, device_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let ctx = open(&s, &tenant, &headers).await?;
    let list = s.bikes.mds_vehicles(&tenant).api()?;
    match list.iter().find(|v| ctx.device_id(&v.bike_id) == device_id) {
        Some(v) => mds_body(&mds::vehicle_response(&ctx, v)),
        None => Err(ApiError::not_found(
            "vehicle_not_found",
            format!("no vehicle {device_id}"),
        )),
    }
}

#[utoipa::path(get, path = "/mds/{tenant}/vehicles/status", tag = "city feeds",
    params(("tenant" = String, Path), PageQuery), security(("city_credential" = [])),
    responses((status = 200, body = Object, content_type = "application/vnd.mds+json;version=2.0",
            description = "MDS 2.0 Provider `/vehicles/status`: every vehicle's current state \
            and last event, paged with `links`"),
        (status = 400, body = Problem, content_type = "application/problem+json",
            description = "A malformed parameter (`invalid_query`)"),
        (status = 404, body = Problem, content_type = "application/problem+json",
            description = "The bike share is not enabled for the tenant (`bikeshare_not_enabled`)"),
        CityErrors))]
pub(super) async fn vehicles_status(
    State(s): State<BikeApi>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    ApiQuery(p): ApiQuery<PageQuery>,
) -> ApiResult<Response> {
    let ctx = open(&s, &tenant, &headers).await?;
    let list = s.bikes.mds_vehicle_status(&tenant).await.api()?;
    let r = mds::vehicles_status_response(&ctx, &list, feeds::page(p.number, p.size))
        .map_err(mds_build)?;
    mds_body(&r)
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct TripsQuery {
    /// Required: the UTC hour the trips ended in, `YYYY-MM-DDTHH`.
    end_time: Option<String>,
}

fn hour(value: Option<String>, name: &str) -> ApiResult<mds::HourWindow> {
    let Some(v) = value else {
        return Err(ApiError::bad_request(
            "missing_parameter",
            format!("{name}=YYYY-MM-DDTHH is required"),
        ));
    };
    mds::HourWindow::parse(&v).map_err(mds_api)
}

#[utoipa::path(get, path = "/mds/{tenant}/trips", tag = "city feeds",
    params(("tenant" = String, Path), TripsQuery), security(("city_credential" = [])),
    responses((status = 200, body = Object, content_type = "application/vnd.mds+json;version=2.0",
            description = "MDS 2.0 Provider `/trips`: the trips that ended in the hour, without \
            rider identity"),
        (status = 400, body = Problem, content_type = "application/problem+json",
            description = "The hour is missing (`missing_parameter`) or a parameter is malformed \
                (`invalid_query`)"),
        (status = 404, body = Problem, content_type = "application/problem+json",
            description = "The bike share is not enabled for the tenant (`bikeshare_not_enabled`)"),
        CityErrors))]
pub(super) async fn trips(
    State(s): State<BikeApi>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<TripsQuery>,
) -> ApiResult<Response> {
    let ctx = open(&s, &tenant, &headers).await?;
    let window = hour(q.end_time, "end_time")?;
    let list = s
        .bikes
        .mds_trips(&tenant, window.start_ms, window.end_ms)
        .await
        .api()?;
    mds_body(&mds::trips_response(&ctx, &list).map_err(mds_build)?)
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct EventsQuery {
    /// Required: the UTC hour of the events, `YYYY-MM-DDTHH`.
    event_time: Option<String>,
}

#[utoipa::path(get, path = "/mds/{tenant}/events/historical", tag = "city feeds",
    params(("tenant" = String, Path), EventsQuery), security(("city_credential" = [])),
    responses((status = 200, body = Object, content_type = "application/vnd.mds+json;version=2.0",
            description = "MDS 2.0 Provider `/events/historical`: the vehicle events of the hour"),
        (status = 400, body = Problem, content_type = "application/problem+json",
            description = "The hour is missing (`missing_parameter`) or a parameter is malformed \
                (`invalid_query`)"),
        (status = 404, body = Problem, content_type = "application/problem+json",
            description = "The bike share is not enabled for the tenant (`bikeshare_not_enabled`)"),
        CityErrors))]
pub(super) async fn events_historical(
    State(s): State<BikeApi>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<EventsQuery>,
) -> ApiResult<Response> {
    let ctx = open(&s, &tenant, &headers).await?;
    let window = hour(q.event_time, "event_time")?;
    let list = s
        .bikes
        .mds_events(&tenant, window.start_ms, window.end_ms)
        .await
        .api()?;
    mds_body(&mds::events_historical_response(&ctx, &list).map_err(mds_build)?)
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct RecentQuery {
    /// Required: from this time on (ms since the epoch).
    start_time: Option<i64>,
    /// Required: before this time (ms).
    end_time: Option<i64>,
    /// Page number, from 1.
    #[serde(rename = "page[number]")]
    number: Option<u32>,
    /// Items per page.
    #[serde(rename = "page[size]")]
    size: Option<u32>,
}

#[utoipa::path(get, path = "/mds/{tenant}/events/recent", tag = "city feeds",
    params(("tenant" = String, Path), RecentQuery), security(("city_credential" = [])),
    responses((status = 200, body = Object, content_type = "application/vnd.mds+json;version=2.0",
            description = "MDS 2.0 Provider `/events/recent`: the vehicle events of the last two \
            weeks in the window, paged with `links`"),
        (status = 400, body = Problem, content_type = "application/problem+json",
            description = "`start_time` or `end_time` is missing (`missing_parameter`) or a \
                parameter is malformed (`invalid_query`)"),
        (status = 404, body = Problem, content_type = "application/problem+json",
            description = "The bike share is not enabled for the tenant (`bikeshare_not_enabled`)"),
        CityErrors))]
pub(super) async fn events_recent(
    State(s): State<BikeApi>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<RecentQuery>,
) -> ApiResult<Response> {
    let ctx = open(&s, &tenant, &headers).await?;
    let (Some(start), Some(end)) = (q.start_time, q.end_time) else {
        return Err(ApiError::bad_request(
            "missing_parameter",
            "start_time and end_time (ms) are required",
        ));
    };
    let range = mds::recent_window(start, end, ctx.now_ms).map_err(mds_api)?;
    let list = s.bikes.mds_events(&tenant, range.0, range.1).await.api()?;
    let r = mds::events_recent_response(&ctx, &list, range, feeds::page(q.number, q.size))
        .map_err(mds_build)?;
    mds_body(&r)
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct TelemetryQuery {
    /// Required: the UTC hour of the telemetry, `YYYY-MM-DDTHH`.
    telemetry_time: Option<String>,
}

#[utoipa::path(get, path = "/mds/{tenant}/telemetry", tag = "city feeds",
    params(("tenant" = String, Path), TelemetryQuery), security(("city_credential" = [])),
    responses((status = 200, body = Object, content_type = "application/vnd.mds+json;version=2.0",
            description = "MDS 2.0 Provider `/telemetry`: the vehicles' positions in the hour, \
            rounded to 4 decimals"),
        (status = 400, body = Problem, content_type = "application/problem+json",
            description = "The hour is missing (`missing_parameter`) or a parameter is malformed \
                (`invalid_query`)"),
        (status = 404, body = Problem, content_type = "application/problem+json",
            description = "The bike share is not enabled for the tenant (`bikeshare_not_enabled`)"),
        CityErrors))]
pub(super) async fn telemetry(
    State(s): State<BikeApi>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<TelemetryQuery>,
) -> ApiResult<Response> {
    let ctx = open(&s, &tenant, &headers).await?;
    let window = hour(q.telemetry_time, "telemetry_time")?;
    let list = s
        .bikes
        .mds_telemetry(&tenant, window.start_ms, window.end_ms, 200_000)
        .await
        .api()?;
    mds_body(&mds::telemetry_response(&ctx, &list).map_err(mds_build)?)
}
