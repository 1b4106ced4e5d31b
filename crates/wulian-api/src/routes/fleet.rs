//! Queries across many devices of a tenant: `GET /api/v1/telemetry/latest` (last values from
//! the last-value cache) and `GET /api/v1/telemetry` (bucketed aggregates per device or merged
//! across the group). The group is `devices=a,b`, or `profile=` and/or `label=k:v,…`.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use crate::routes::telemetry::time_range;
use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use wulian_common::blocking::run_blocking;
use wulian_registry::DeviceQuery;
use wulian_tsdb::{Aggregation, PartialBucket, SeriesKey, Tsdb};

use crate::error::{ApiError, ApiResult, Problem};
use crate::extract::{ApiQuery, Caller};
use crate::routes::telemetry::{PointView, aggregate_plan, value_json};
use crate::state::AppState;

/// Most ids `devices=` may list.
pub const MAX_LISTED_DEVICES: usize = 1_000;
/// Most devices a `profile`/`label` group may match.
pub const MAX_GROUP_DEVICES: usize = 100_000;
/// Most devices an aggregate query may cover.
pub const MAX_AGGREGATE_DEVICES: usize = 10_000;
/// Most points (buckets, including filled ones) an aggregate answer may hold in all.
pub const MAX_ANSWER_POINTS: i64 = 1_000_000;
const DAY_MS: i64 = 86_400_000;
const PAGE: u32 = 1_000;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct FleetLatestQuery {
    /// Comma-separated device ids (at most 1000). Not with `profile`/`label`.
    pub devices: Option<String>,
    /// Devices of this profile.
    pub profile: Option<String>,
    /// Comma-separated `key:value` pairs a device must all carry.
    pub label: Option<String>,
    /// Comma-separated keys; all keys when absent.
    pub keys: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct FleetLatestView {
    /// Devices in the group.
    pub device_count: usize,
    /// Per device (every device of the group, `{}` if it has no values), the newest point of
    /// each key.
    pub devices: BTreeMap<String, BTreeMap<String, PointView>>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct FleetQuery {
    /// Comma-separated device ids (at most 1000). Not with `profile`/`label`.
    pub devices: Option<String>,
    /// Devices of this profile.
    pub profile: Option<String>,
    /// Comma-separated `key:value` pairs a device must all carry.
    pub label: Option<String>,
    /// Comma-separated keys; every key of each device when absent.
    pub keys: Option<String>,
    /// Start, inclusive, ms since the epoch. Default: 24 hours before `to`.
    pub from: Option<i64>,
    /// End, exclusive, ms since the epoch. Default: now (plus one ms).
    pub to: Option<i64>,
    /// min, max, avg, sum, count, first, last. Default avg with `max_points`.
    pub agg: Option<String>,
    /// Bucket width in ms (aligned to the epoch). Or `max_points`.
    pub interval: Option<i64>,
    /// At most this many buckets per series: picks `interval` (whole seconds).
    pub max_points: Option<i64>,
    /// `device` (default): series per device; `merged`: one series per key across the group.
    pub group: Option<String>,
    /// Empty buckets: `none` (default, left out), `null`, `previous` (the last value before),
    /// `zero`. Filled buckets carry `count: 0`.
    pub fill: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct FleetTelemetryView {
    pub from: i64,
    pub to: i64,
    pub agg: String,
    pub interval: i64,
    /// `device` or `merged`.
    pub group: String,
    pub fill: String,
    /// Devices in the group.
    pub device_count: usize,
    /// `group=device`: per device, per key, buckets ascending.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub devices: Option<BTreeMap<String, BTreeMap<String, Vec<PointView>>>>,
    /// `group=merged`: per key, the group's buckets ascending (`count` = points of all devices).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub series: Option<BTreeMap<String, Vec<PointView>>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fill {
    None,
    Null,
    Previous,
    Zero,
}

impl Fill {
    fn parse(s: Option<&str>) -> ApiResult<Fill> {
        Ok(match s.unwrap_or("none") {
            "none" => Fill::None,
            "null" => Fill::Null,
            "previous" => Fill::Previous,
            "zero" => Fill::Zero,
            other => {
                return Err(ApiError::bad_request(
                    "invalid_query",
                    format!("fill {other:?} is not one of none, null, previous, zero"),
                ));
            }
        })
    }

    fn as_str(self) -> &'static str {
        match self {
            Fill::None => "none",
            Fill::Null => "null",
            Fill::Previous => "previous",
            Fill::Zero => "zero",
        }
    }
}

/// Trimmed, non-empty, first occurrence of each.
pub(crate) fn split_list(s: Option<&str>) -> Vec<String> {
    let mut seen = HashSet::new();
    s.into_iter()
        .flat_map(|s| s.split(','))
        .map(str::trim)
        .filter(|k| !k.is_empty() && seen.insert(k.to_string()))
        .map(str::to_string)
        .collect()
}

/// The device ids of the group, in the caller's tenant, sorted.
pub(crate) async fn resolve_group(
    state: &AppState,
    tenant: &str,
    devices: Option<&str>,
    profile: Option<&str>,
    label: Option<&str>,
) -> ApiResult<Vec<String>> {
    let tenant = tenant.to_string();
    if let Some(devices) = devices {
        if profile.is_some() || label.is_some() {
            return Err(ApiError::bad_request(
                "invalid_query",
                "devices cannot be combined with profile or label",
            ));
        }
        let mut ids = split_list(Some(devices));
        if ids.is_empty() {
            return Err(ApiError::bad_request(
                "invalid_query",
                "devices lists no device",
            ));
        }
        if ids.len() > MAX_LISTED_DEVICES {
            return Err(ApiError::bad_request(
                "invalid_query",
                format!("devices lists more than {MAX_LISTED_DEVICES} ids; use profile or label"),
            ));
        }
        ids.sort();
        let checked = ids.clone();
        // Another tenant's device answers 404, like a missing one.
        run_blocking(&state.registry, move |r| {
            checked
                .iter()
                .try_for_each(|id| r.get_device(&tenant, id).map(|_| ()))
        })
        .await?;
        return Ok(ids);
    }
    if profile.is_none() && label.is_none() {
        return Err(ApiError::bad_request(
            "missing_parameter",
            "name the group: devices=a,b or profile= and/or label=k:v",
        ));
    }
    let mut labels = Vec::new();
    for pair in split_list(label) {
        let Some((k, v)) = pair.split_once(':') else {
            return Err(ApiError::bad_request(
                "invalid_query",
                format!("label filter {pair:?} must be key:value"),
            ));
        };
        labels.push((k.to_string(), v.to_string()));
    }
    let mut query = DeviceQuery {
        limit: PAGE,
        cursor: None,
        profile: profile.map(str::to_string),
        label: labels,
        search: None,
    };
    run_blocking(&state.registry, move |r| {
        let mut ids = Vec::new();
        loop {
            let page = r.list_devices(&tenant, &query)?;
            if page.total > MAX_GROUP_DEVICES as u64 {
                return Err(ApiError::bad_request(
                    "too_many_devices",
                    format!(
                        "the group holds {} devices, more than {MAX_GROUP_DEVICES}; narrow it",
                        page.total
                    ),
                ));
            }
            ids.extend(page.devices.into_iter().map(|d| d.id));
            match page.next_cursor {
                Some(cursor) => query.cursor = Some(cursor),
                None => return Ok(ids),
            }
        }
    })
    .await
}

#[utoipa::path(get, path = "/api/v1/telemetry/latest", tag = "telemetry",
    params(FleetLatestQuery), security(("api_key" = [])),
    responses((status = 200, body = FleetLatestView), (status = 400, body = Problem),
        (status = 404, body = Problem, description = "A device listed in `devices` does not exist")))]
pub async fn fleet_latest(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<FleetLatestQuery>,
) -> ApiResult<Json<FleetLatestView>> {
    let ids = resolve_group(
        &state,
        caller.tenant(),
        q.devices.as_deref(),
        q.profile.as_deref(),
        q.label.as_deref(),
    )
    .await?;
    let keys: BTreeSet<String> = split_list(q.keys.as_deref()).into_iter().collect();
    let tenant = caller.tenant().to_string();
    let tsdb = state.tsdb.clone();
    // From memory only, but thousands of devices: keep it off the async workers.
    let devices = tokio::task::spawn_blocking(move || {
        ids.into_iter()
            .map(|id| {
                let values = tsdb
                    .latest(&tenant, &id)
                    .into_iter()
                    .filter(|(k, _)| keys.is_empty() || keys.contains(k))
                    .map(|(k, p)| {
                        (
                            k,
                            PointView {
                                ts: p.ts,
                                value: value_json(&p.value),
                                count: None,
                            },
                        )
                    })
                    .collect();
                (id, values)
            })
            .collect::<BTreeMap<_, _>>()
    })
    .await
    .map_err(|e| ApiError::internal("Latest query task failed.", &e))?;
    Ok(Json(FleetLatestView {
        device_count: devices.len(),
        devices,
    }))
}

#[utoipa::path(get, path = "/api/v1/telemetry", tag = "telemetry",
    params(FleetQuery), security(("api_key" = [])),
    responses((status = 200, body = FleetTelemetryView), (status = 400, body = Problem),
        (status = 404, body = Problem, description = "A device listed in `devices` does not exist")))]
pub async fn fleet_telemetry(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<FleetQuery>,
) -> ApiResult<Json<FleetTelemetryView>> {
    let (from, to) = time_range(q.from, q.to, |to| to.saturating_sub(DAY_MS))?;
    let Some((agg, interval)) =
        aggregate_plan(q.agg.as_deref(), q.interval, q.max_points, from, to)?
    else {
        return Err(ApiError::bad_request(
            "missing_parameter",
            "group queries aggregate: give agg and interval, or max_points",
        ));
    };
    let merged = match q.group.as_deref().unwrap_or("device") {
        "device" => false,
        "merged" => true,
        other => {
            return Err(ApiError::bad_request(
                "invalid_query",
                format!("group {other:?} is not one of device, merged"),
            ));
        }
    };
    let fill = Fill::parse(q.fill.as_deref())?;
    let ids = resolve_group(
        &state,
        caller.tenant(),
        q.devices.as_deref(),
        q.profile.as_deref(),
        q.label.as_deref(),
    )
    .await?;
    if ids.len() > MAX_AGGREGATE_DEVICES {
        return Err(ApiError::bad_request(
            "too_many_devices",
            format!(
                "the group holds {} devices; aggregate queries cover at most {MAX_AGGREGATE_DEVICES}",
                ids.len()
            ),
        ));
    }
    let keys = split_list(q.keys.as_deref());
    let tenant = caller.tenant().to_string();
    let tsdb = state.tsdb.clone();
    let device_count = ids.len();
    let grid = Grid {
        from,
        to,
        interval,
        agg,
        fill,
    };
    let (devices, series) =
        tokio::task::spawn_blocking(move || read_group(&tsdb, &tenant, &ids, &keys, grid, merged))
            .await
            .map_err(|e| ApiError::internal("Group query task failed.", &e))??;
    Ok(Json(FleetTelemetryView {
        from,
        to,
        agg: agg.as_str().to_string(),
        interval,
        group: if merged { "merged" } else { "device" }.to_string(),
        fill: fill.as_str().to_string(),
        device_count,
        devices,
        series,
    }))
}

#[derive(Debug, Clone, Copy)]
struct Grid {
    from: i64,
    to: i64,
    interval: i64,
    agg: Aggregation,
    fill: Fill,
}

type Series = BTreeMap<String, Vec<PointView>>;
type GroupAnswer = (Option<BTreeMap<String, Series>>, Option<Series>);

fn read_group(
    tsdb: &Tsdb,
    tenant: &str,
    ids: &[String],
    keys: &[String],
    grid: Grid,
    merged: bool,
) -> ApiResult<GroupAnswer> {
    let mut budget = MAX_ANSWER_POINTS;
    let mut spend = |points: i64| {
        budget -= points;
        if budget < 0 {
            Err(ApiError::bad_request(
                "too_many_buckets",
                format!(
                    "the answer would hold more than {MAX_ANSWER_POINTS} points; widen interval, narrow the range, the keys or the group"
                ),
            ))
        } else {
            Ok(())
        }
    };
    let mut per_device: BTreeMap<String, Series> = BTreeMap::new();
    let mut merged_buckets: BTreeMap<String, BTreeMap<i64, PartialBucket>> = BTreeMap::new();
    for device in ids {
        let device_keys = if keys.is_empty() {
            tsdb.keys(tenant, device)
        } else {
            keys.to_vec()
        };
        let mut device_series = Series::new();
        for key in device_keys {
            let series = SeriesKey::new(tenant, device.as_str(), key.as_str());
            if grid.agg.needs_numbers()
                && let Some(kind) = tsdb.series_kind(&series)
                && !kind.is_numeric()
            {
                return Err(ApiError::bad_request(
                    "not_numeric",
                    format!(
                        "{} needs numbers; key {key:?} of device {device:?} holds {kind} values",
                        grid.agg.as_str()
                    ),
                ));
            }
            let partials = tsdb
                .partial_aggregate(&series, grid.from, grid.to, grid.interval)
                .map_err(|e| ApiError::internal("Group aggregate query failed.", &e))?;
            if merged {
                let slot = merged_buckets.entry(key).or_default();
                for b in partials {
                    match slot.get_mut(&b.ts) {
                        Some(existing) => existing.merge(&b),
                        None => {
                            slot.insert(b.ts, b);
                        }
                    }
                }
            } else {
                let points = filled(&partials, grid);
                spend(points.len() as i64)?;
                device_series.insert(key, points);
            }
        }
        if !merged {
            per_device.insert(device.clone(), device_series);
        }
    }
    if !merged {
        return Ok((Some(per_device), None));
    }
    let mut out = Series::new();
    for (key, buckets) in merged_buckets {
        let partials: Vec<PartialBucket> = buckets.into_values().collect();
        let points = filled(&partials, grid);
        spend(points.len() as i64)?;
        out.insert(key, points);
    }
    Ok((None, Some(out)))
}

/// Buckets as points, with the empty buckets of the grid filled per `grid.fill`.
fn filled(partials: &[PartialBucket], grid: Grid) -> Vec<PointView> {
    let view = |b: &PartialBucket| PointView {
        ts: b.ts,
        value: value_json(&b.value(grid.agg)),
        count: Some(b.count),
    };
    if grid.fill == Fill::None {
        return partials.iter().map(view).collect();
    }
    let start = grid.from - grid.from.rem_euclid(grid.interval);
    let mut out = Vec::new();
    let mut next = partials.iter().peekable();
    let mut previous = serde_json::Value::Null;
    let mut ts = start;
    while ts < grid.to {
        match next.peek() {
            Some(b) if b.ts == ts => {
                let point = view(b);
                previous = point.value.clone();
                out.push(point);
                next.next();
            }
            _ => out.push(PointView {
                ts,
                value: match grid.fill {
                    Fill::Zero => serde_json::Value::from(0),
                    Fill::Previous => previous.clone(),
                    Fill::Null | Fill::None => serde_json::Value::Null,
                },
                count: Some(0),
            }),
        }
        ts = ts.saturating_add(grid.interval);
    }
    out
}
