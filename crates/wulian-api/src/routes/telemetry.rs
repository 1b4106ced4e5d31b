//! `/api/v1/devices/{id}/telemetry`: ingest over HTTP (device token), range and aggregate
//! queries, and latest values.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use wulian_common::blocking::run_blocking;
use wulian_common::time::now_ms;
use wulian_tsdb::{Aggregation, Point, SeriesKey, Value};

use crate::error::{ApiError, ApiResult, Problem};
use crate::extract::{ApiBytes, ApiQuery, Caller, bearer};
use crate::routes::devices::load_device;
use crate::state::AppState;

/// Most points one raw query returns; beyond it the answer says `truncated`.
pub const MAX_QUERY_POINTS: usize = 100_000;
pub const DEFAULT_QUERY_POINTS: usize = 10_000;
/// Most buckets one aggregate query may ask for per key.
pub const MAX_BUCKETS: i64 = 100_000;
const DAY_MS: i64 = 86_400_000;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct TelemetryQuery {
    /// Comma-separated keys; all of the device's keys when absent.
    pub keys: Option<String>,
    /// Start, inclusive, ms since the epoch. Default: 24 hours before `to`.
    pub from: Option<i64>,
    /// End, exclusive, ms since the epoch. Default: now (plus one ms, so that now is included).
    pub to: Option<i64>,
    /// Aggregate per time bucket: min, max, avg, sum, count, first, last. Needs `interval`.
    pub agg: Option<String>,
    /// Bucket width in ms (buckets are aligned to the epoch). Needs `agg`.
    pub interval: Option<i64>,
    /// Most points per key for raw queries (default 10,000, at most 100,000).
    pub limit: Option<usize>,
    /// Chart downsampling: at most this many buckets per key. Picks `interval` (whole
    /// seconds, the smallest that keeps the epoch-aligned buckets of the range within the
    /// number); `agg` defaults to `avg`. Not together with `interval`.
    pub max_points: Option<i64>,
}

/// One point or bucket.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PointView {
    /// Milliseconds since the epoch (bucket start for aggregates).
    pub ts: i64,
    /// A number, boolean or string.
    #[schema(value_type = Object)]
    pub value: serde_json::Value,
    /// Points in the bucket (aggregates only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TelemetryView {
    pub device_id: String,
    pub from: i64,
    pub to: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agg: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval: Option<i64>,
    /// Points per key, ascending by time.
    pub series: BTreeMap<String, Vec<PointView>>,
    /// Keys whose points were cut at `limit`.
    pub truncated: Vec<String>,
    /// The unit of each key that the device's thing model gives one.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub units: BTreeMap<String, String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LatestView {
    pub device_id: String,
    /// The newest point of each key.
    pub values: BTreeMap<String, PointView>,
    /// The unit of each key that the device's thing model gives one.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub units: BTreeMap<String, String>,
}

/// Units of `keys` from the device's thing model (empty without a profile record).
pub(crate) async fn units<'a>(
    state: &AppState,
    tenant: &str,
    device: &str,
    keys: impl Iterator<Item = &'a String>,
) -> BTreeMap<String, String> {
    let Some(lifecycle) = state.pipeline.lifecycle() else {
        return BTreeMap::new();
    };
    let Some(profile) = lifecycle.models.profile(tenant, device).await else {
        return BTreeMap::new();
    };
    keys.filter_map(|k| {
        let unit = profile.model.property(k)?.unit.clone()?;
        Some((k.clone(), unit))
    })
    .collect()
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct IngestView {
    /// Points stored (durable when this response is sent).
    pub accepted: usize,
}

pub(crate) fn value_json(value: &Value) -> serde_json::Value {
    match value {
        Value::F64(f) => serde_json::Number::from_f64(*f)
            .map_or(serde_json::Value::Null, serde_json::Value::Number),
        Value::I64(i) => serde_json::Value::from(*i),
        Value::Bool(b) => serde_json::Value::Bool(*b),
        Value::Str(s) => serde_json::Value::String(s.clone()),
    }
}

fn point_view(point: &Point) -> PointView {
    PointView {
        ts: point.ts,
        value: value_json(&point.value),
        count: None,
    }
}

#[utoipa::path(get, path = "/api/v1/devices/{id}/telemetry", tag = "telemetry",
    params(("id" = String, Path, description = "Device id"), TelemetryQuery), security(("api_key" = [])),
    responses((status = 200, body = TelemetryView), (status = 400, body = Problem), (status = 404, body = Problem)))]
pub async fn query_telemetry(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<TelemetryQuery>,
) -> ApiResult<Json<TelemetryView>> {
    load_device(&state, caller.tenant(), &id).await?;
    let (from, to) = time_range(q.from, q.to, |to| to.saturating_sub(DAY_MS))?;
    let keys = requested_keys(&state, q.keys.as_deref(), caller.tenant(), &id);
    let plan = query_plan(&q, from, to)?;
    let (agg, interval) = match plan {
        QueryPlan::Raw { .. } => (None, None),
        QueryPlan::Aggregate { agg, interval } => (Some(agg.as_str().to_string()), Some(interval)),
    };
    let (tsdb, tenant, device) = (state.tsdb.clone(), caller.tenant().to_string(), id.clone());
    // Reads of flushed data decode block files: keep them off the async workers.
    let (series, truncated) = tokio::task::spawn_blocking(move || {
        read_series(&tsdb, &tenant, &device, keys, from, to, plan)
    })
    .await
    .map_err(|e| ApiError::internal("Telemetry query task failed.", &e))??;
    let units = units(&state, caller.tenant(), &id, series.keys()).await;
    Ok(Json(TelemetryView {
        device_id: id,
        from,
        to,
        agg,
        interval,
        series,
        truncated,
        units,
    }))
}

#[utoipa::path(get, path = "/api/v1/devices/{id}/telemetry/latest", tag = "telemetry",
    params(("id" = String, Path, description = "Device id")), security(("api_key" = [])),
    responses((status = 200, body = LatestView), (status = 404, body = Problem)))]
pub async fn latest_telemetry(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<LatestView>> {
    load_device(&state, caller.tenant(), &id).await?;
    let values: BTreeMap<String, PointView> = state
        .tsdb
        .latest(caller.tenant(), &id)
        .into_iter()
        .map(|(key, point)| (key, point_view(&point)))
        .collect();
    let units = units(&state, caller.tenant(), &id, values.keys()).await;
    Ok(Json(LatestView {
        device_id: id,
        values,
        units,
    }))
}

/// The `[from, to)` of a query: `to` defaults to now (inclusive), `from` to `default_from(to)`.
pub(crate) fn time_range(
    from: Option<i64>,
    to: Option<i64>,
    default_from: impl FnOnce(i64) -> i64,
) -> ApiResult<(i64, i64)> {
    let to = to.unwrap_or_else(|| now_ms().saturating_add(1));
    let from = from.unwrap_or_else(|| default_from(to));
    if from >= to {
        return Err(ApiError::bad_request(
            "invalid_range",
            "from must be before to",
        ));
    }
    Ok((from, to))
}

/// The keys a device query names (`keys=a,b`), or all of the device's keys.
pub(crate) fn requested_keys(
    state: &AppState,
    keys: Option<&str>,
    tenant: &str,
    device: &str,
) -> Vec<String> {
    match keys {
        Some(keys) => keys
            .split(',')
            .filter(|k| !k.is_empty())
            .map(str::to_string)
            .collect(),
        None => state.tsdb.keys(tenant, device),
    }
}

/// What a telemetry query asks for, validated before any data is read.
#[derive(Debug, Clone, Copy)]
enum QueryPlan {
    Raw { limit: usize },
    Aggregate { agg: Aggregation, interval: i64 },
}

fn query_plan(q: &TelemetryQuery, from: i64, to: i64) -> ApiResult<QueryPlan> {
    match aggregate_plan(q.agg.as_deref(), q.interval, q.max_points, from, to)? {
        Some((agg, interval)) => {
            if q.limit.is_some() {
                return Err(ApiError::bad_request(
                    "invalid_query",
                    "limit applies to raw queries only",
                ));
            }
            Ok(QueryPlan::Aggregate { agg, interval })
        }
        None => {
            let limit = q.limit.unwrap_or(DEFAULT_QUERY_POINTS);
            if !(1..=MAX_QUERY_POINTS).contains(&limit) {
                return Err(ApiError::bad_request(
                    "invalid_query",
                    format!("limit must be between 1 and {MAX_QUERY_POINTS}"),
                ));
            }
            Ok(QueryPlan::Raw { limit })
        }
    }
}

/// The aggregation and bucket width a query asks for (`agg` with `interval`, or `max_points`
/// with an optional `agg`, default avg), validated against the range; `None` for raw queries.
pub(crate) fn aggregate_plan(
    agg: Option<&str>,
    interval: Option<i64>,
    max_points: Option<i64>,
    from: i64,
    to: i64,
) -> ApiResult<Option<(Aggregation, i64)>> {
    let parse_agg = |name: &str| -> ApiResult<Aggregation> {
        name.parse().map_err(|_| {
            ApiError::bad_request(
                "invalid_query",
                format!("agg {name:?} is not one of min, max, avg, sum, count, first, last"),
            )
        })
    };
    let (agg, interval) = match (agg, interval, max_points) {
        (None, None, None) => return Ok(None),
        (_, Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "invalid_query",
                "give either interval or max_points, not both",
            ));
        }
        (agg, None, Some(max_points)) => {
            if !(1..=MAX_BUCKETS).contains(&max_points) {
                return Err(ApiError::bad_request(
                    "invalid_query",
                    format!("max_points must be between 1 and {MAX_BUCKETS}"),
                ));
            }
            let agg = agg.map_or(Ok(Aggregation::Avg), parse_agg)?;
            (agg, downsample_interval(from, to, max_points))
        }
        (Some(agg), Some(interval), None) => {
            let agg = parse_agg(agg)?;
            if interval < 1 {
                return Err(ApiError::bad_request(
                    "invalid_query",
                    "interval must be at least 1 ms",
                ));
            }
            (agg, interval)
        }
        (Some(_), None, None) => {
            return Err(ApiError::bad_request(
                "missing_parameter",
                "agg needs interval (ms) or max_points",
            ));
        }
        (None, Some(_), None) => {
            return Err(ApiError::bad_request(
                "missing_parameter",
                "interval needs agg",
            ));
        }
    };
    if (to - from) / interval > MAX_BUCKETS {
        return Err(ApiError::bad_request(
            "too_many_buckets",
            format!(
                "the range holds more than {MAX_BUCKETS} buckets of {interval} ms; widen interval or narrow the range"
            ),
        ));
    }
    Ok(Some((agg, interval)))
}

/// Epoch-aligned buckets of `interval` that `[from, to)` touches.
fn bucket_count(from: i64, to: i64, interval: i64) -> i64 {
    (to - 1).div_euclid(interval) - from.div_euclid(interval) + 1
}

/// The bucket width for at most `max_points` buckets over `[from, to)` (`from < to`,
/// `max_points >= 1`): `ceil((to - from) / max_points)` rounded up to a whole second, widened
/// (by seconds, then doubling) until the epoch-aligned buckets the range touches are at most
/// `max_points`.
pub(crate) fn downsample_interval(from: i64, to: i64, max_points: i64) -> i64 {
    let span = (to - from).max(1);
    let per_point = (span + max_points - 1) / max_points;
    let mut interval = ((per_point + 999) / 1000).max(1) * 1000;
    let mut steps = 0;
    while bucket_count(from, to, interval) > max_points {
        interval = if steps < 64 {
            interval + 1000
        } else {
            interval.saturating_mul(2)
        };
        steps += 1;
    }
    // Whole minutes or hours: such buckets are answered from the store's rollups (fewer
    // buckets than asked for is fine; more never happens since this only rounds up).
    for unit in [3_600_000, 60_000] {
        if interval >= unit {
            return ((interval + unit - 1) / unit).saturating_mul(unit);
        }
    }
    interval
}

type SeriesViews = BTreeMap<String, Vec<PointView>>;

/// Runs a validated query for each key; blocking (it may read block files).
fn read_series(
    tsdb: &wulian_tsdb::Tsdb,
    tenant: &str,
    device: &str,
    keys: Vec<String>,
    from: i64,
    to: i64,
    plan: QueryPlan,
) -> ApiResult<(SeriesViews, Vec<String>)> {
    let mut series = BTreeMap::new();
    let mut truncated = Vec::new();
    for key in keys {
        let series_key = SeriesKey {
            tenant: tenant.to_string(),
            device: device.to_string(),
            key: key.clone(),
        };
        let points = match plan {
            QueryPlan::Raw { limit } => {
                let result = tsdb
                    .try_range(&series_key, from, to, limit)
                    .map_err(|e| ApiError::internal("Range query failed.", &e))?;
                if result.truncated {
                    truncated.push(key.clone());
                }
                result.points.iter().map(point_view).collect()
            }
            QueryPlan::Aggregate { agg, interval } => tsdb
                .aggregate(&series_key, from, to, interval, agg)
                .map_err(|e| match e {
                    wulian_tsdb::Error::NotNumeric { .. } => {
                        ApiError::bad_request("not_numeric", e.to_string())
                    }
                    other => ApiError::internal("Aggregate query failed.", &other),
                })?
                .iter()
                .map(|b| PointView {
                    ts: b.ts,
                    value: value_json(&b.value),
                    count: Some(b.count),
                })
                .collect(),
        };
        series.insert(key, points);
    }
    Ok((series, truncated))
}

/// Who may post telemetry for a device: the device itself (its token), or an application key
/// with write scope in the device's tenant (gateways that relay for devices).
pub(crate) async fn telemetry_writer(
    state: &AppState,
    headers: &HeaderMap,
    device_id: &str,
) -> ApiResult<String> {
    let Some(secret) = bearer(headers)? else {
        return Err(ApiError::unauthorized(
            "missing_credentials",
            "posting telemetry needs Authorization: Bearer <device token>",
        ));
    };
    let (id, secret) = (device_id.to_string(), secret.to_string());
    let registry = &state.registry;
    if secret.starts_with(wulian_registry::API_KEY_PREFIX) {
        let key = run_blocking(registry, move |r| r.authenticate_api_key(&secret))
            .await
            .map_err(|e| ApiError::internal("API key lookup failed.", &e))?
            .ok_or_else(|| {
                ApiError::unauthorized("invalid_credentials", "unknown or revoked API key")
            })?;
        let caller = Caller::from_api_key(key);
        caller.require_write()?;
        load_device(state, caller.tenant(), &id).await?;
        return Ok(caller.key.tenant);
    }
    let identity = run_blocking(registry, move |r| r.authenticate_device(&id, &secret))
        .await
        .map_err(|e| ApiError::internal("Device lookup failed.", &e))?;
    match identity {
        Some(identity) => Ok(identity.tenant),
        None => Err(ApiError::unauthorized(
            "invalid_credentials",
            "unknown device or wrong token",
        )),
    }
}

#[utoipa::path(post, path = "/api/v1/devices/{id}/telemetry", tag = "telemetry",
    params(("id" = String, Path, description = "Device id")),
    request_body(content = Object, description = "`{\"temp\": 21.5}`, `{\"ts\": 1700000000000, \"values\": {...}}` or an array of these"),
    security(("device_token" = []), ("api_key" = [])),
    responses((status = 200, body = IngestView), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 413, body = Problem), (status = 422, body = Problem, description = "A value does not fit its series' type")))]
pub async fn post_telemetry(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiBytes(body): ApiBytes,
) -> ApiResult<Json<IngestView>> {
    let tenant = telemetry_writer(&state, &headers, &id).await?;
    match state.pipeline.ingest_telemetry(&tenant, &id, &body).await {
        Ok(accepted) => Ok(Json(IngestView { accepted })),
        Err(error) if error.is_client_error() => {
            let status = match error.code() {
                "type_mismatch" | "model_violation" => StatusCode::UNPROCESSABLE_ENTITY,
                "rate_limited" => StatusCode::TOO_MANY_REQUESTS,
                _ => StatusCode::BAD_REQUEST,
            };
            let mut problem = ApiError::new(status, error.code(), error.to_string());
            if !error.violations().is_empty() {
                problem = problem.with_errors(error.violations());
            }
            Err(problem)
        }
        Err(error) => Err(ApiError::internal("Storing telemetry failed.", &error)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn downsampling_never_exceeds_max_points() {
        let day = 86_400_000;
        for (from, to, n) in [
            (0, 30 * day, 500),
            (1_700_000_000_123, 1_700_000_000_123 + 30 * day, 500),
            (12_345, 12_345 + 3_600_000, 7),
            (999_999_999, 1_000_000_001, 1),
            (5, 6, 1),
            (1_000, 61_000, 100),
        ] {
            let i = downsample_interval(from, to, n);
            assert_eq!(i % 1000, 0, "{from} {to} {n}");
            assert!(bucket_count(from, to, i) <= n, "{from} {to} {n}: {i}");
            assert!(i >= (to - from) / n);
        }
        assert_eq!(downsample_interval(0, 30 * 86_400_000, 720), 3_600_000);
        // A week in 1,000 points: 604.8 s buckets become 11 minutes (rollup-friendly).
        assert_eq!(downsample_interval(0, 7 * 86_400_000, 1000), 660_000);
    }
}
