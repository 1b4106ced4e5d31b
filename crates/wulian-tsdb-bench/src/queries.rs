//! The query set, after TSBS "iot", with the windows and thresholds every engine uses, and the
//! driver that times each query on one engine.
//!
//! Every engine answers each query with an [`Answer`]: how many values, buckets, groups or
//! trucks it returned and the sum of the returned numbers (trucks: the sum of their indexes),
//! so that the report can check that the engines agree.

use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::{Value as Json, json};

use crate::generate::{Dataset, LOAD_CAPACITY, Truck};
use crate::measure::{Answer, time_query};

/// `fuel_state` at or below which a truck is low on fuel (TSBS low-fuel).
pub const LOW_FUEL: f64 = 0.1;
/// Share of `load_capacity` at or above which a truck is highly loaded (TSBS high-load).
pub const HIGH_LOAD: f64 = 0.9;
/// Mean velocity below which a truck is stationary (TSBS stationary-trucks).
pub const STATIONARY: f64 = 1.0;
/// Mean velocity of a 10-minute bucket above which the truck was driving, and how many of the
/// 24 buckets of the last 4 hours must be driving (TSBS long-driving-sessions).
pub const DRIVING: f64 = 1.0;
pub const LONG_SESSION_BUCKETS: u64 = 22;
pub const HOUR_MS: i64 = 3_600_000;
pub const TEN_MIN_MS: i64 = 600_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Query {
    Raw1d,
    HourlyAvgSpan,
    LatestAll,
    LastLoc,
    LowFuel,
    HighLoad,
    StationaryTrucks,
    LongDrivingSessions,
    AvgLoad,
    FleetHourlyVelocity,
}

impl Query {
    pub const ALL: [Query; 10] = [
        Query::Raw1d,
        Query::HourlyAvgSpan,
        Query::LatestAll,
        Query::LastLoc,
        Query::LowFuel,
        Query::HighLoad,
        Query::StationaryTrucks,
        Query::LongDrivingSessions,
        Query::AvgLoad,
        Query::FleetHourlyVelocity,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Query::Raw1d => "raw_1d",
            Query::HourlyAvgSpan => "hourly_avg_span",
            Query::LatestAll => "latest_all",
            Query::LastLoc => "last_loc",
            Query::LowFuel => "low_fuel",
            Query::HighLoad => "high_load",
            Query::StationaryTrucks => "stationary_trucks",
            Query::LongDrivingSessions => "long_driving_sessions",
            Query::AvgLoad => "avg_load",
            Query::FleetHourlyVelocity => "fleet_hourly_velocity",
        }
    }

    pub fn doc(self) -> &'static str {
        match self {
            Query::Raw1d => {
                "truck_0, its 7 readings fields, every point of the first day (or the span if shorter)"
            }
            Query::HourlyAvgSpan => "truck_0, velocity, hourly average over the whole span",
            Query::LatestAll => "latest value of every field (10) of every truck",
            Query::LastLoc => {
                "TSBS last-loc: latest latitude and longitude of every truck of one fleet"
            }
            Query::LowFuel => {
                "TSBS low-fuel: trucks of one fleet whose latest fuel_state is <= 0.1"
            }
            Query::HighLoad => {
                "TSBS high-load: trucks of one fleet whose latest current_load is >= 0.9 x load_capacity"
            }
            Query::StationaryTrucks => {
                "TSBS stationary-trucks: trucks of one fleet whose mean velocity over the last 10 minutes is < 1"
            }
            Query::LongDrivingSessions => {
                "TSBS long-driving-sessions: trucks of one fleet with mean velocity > 1 in more than 22 of the 24 10-minute buckets of the last 4 hours"
            }
            Query::AvgLoad => {
                "TSBS avg-load: mean current_load / load_capacity per (fleet, model, load_capacity) over the whole span, every truck (a fleet-wide scan)"
            }
            Query::FleetHourlyVelocity => {
                "every truck's velocity, hourly mean across the fleet over the first day (a fleet-wide full-day scan)"
            }
        }
    }
}

/// A truck's registry attributes that the queries group or filter by.
#[derive(Clone, Debug)]
pub struct TruckInfo {
    pub name: String,
    pub fleet: String,
    pub model: String,
    pub load_capacity: u32,
}

impl TruckInfo {
    fn of(t: &Truck) -> Result<TruckInfo> {
        let tag = |k: &str| -> Result<String> {
            t.tags
                .iter()
                .find(|(name, _)| *name == k)
                .map(|(_, v)| v.clone())
                .with_context(|| format!("truck {} has no tag {k}", t.name))
        };
        Ok(TruckInfo {
            name: t.name.clone(),
            fleet: tag("fleet")?,
            model: tag("model")?,
            load_capacity: tag("load_capacity")?.parse()?,
        })
    }
}

/// The windows and the fleet every engine queries. Windows are `[from, to)` in ms.
pub struct Plan {
    pub trucks: Vec<TruckInfo>,
    /// truck_0's fleet, so that the fleet queries have trucks.
    pub fleet: String,
    /// Indexes of the trucks of `fleet`.
    pub fleet_trucks: Vec<usize>,
    pub span: (i64, i64),
    /// The first day (or the span if shorter).
    pub day: (i64, i64),
    /// The last 10 minutes.
    pub last_10m: (i64, i64),
    /// The last 4 hours, ending on a multiple of 10 minutes.
    pub last_4h: (i64, i64),
}

impl Plan {
    pub fn new(d: &Dataset) -> Result<Plan> {
        let trucks: Vec<TruckInfo> = d.trucks.iter().map(TruckInfo::of).collect::<Result<_>>()?;
        let fleet = trucks.first().context("no trucks")?.fleet.clone();
        let fleet_trucks = (0..trucks.len())
            .filter(|&i| trucks[i].fleet == fleet)
            .collect();
        let end_10m = d.end_ms - d.end_ms.rem_euclid(TEN_MIN_MS);
        Ok(Plan {
            trucks,
            fleet,
            fleet_trucks,
            span: (d.start_ms, d.end_ms),
            day: (d.start_ms, (d.start_ms + 86_400_000).min(d.end_ms)),
            last_10m: ((d.end_ms - TEN_MIN_MS).max(d.start_ms), d.end_ms),
            last_4h: ((end_10m - 4 * HOUR_MS).max(d.start_ms), end_10m),
        })
    }

    /// The index of `truck_<n>`.
    pub fn truck_index(name: &str) -> Result<f64> {
        let n: u32 = name
            .strip_prefix("truck_")
            .with_context(|| format!("not a truck name: {name}"))?
            .parse()
            .with_context(|| format!("not a truck name: {name}"))?;
        Ok(f64::from(n))
    }

    /// The load capacities, for engines that filter per capacity.
    pub fn load_capacities() -> &'static [u32] {
        &LOAD_CAPACITY
    }

    pub fn describe(&self) -> Json {
        json!({
            "fleet": self.fleet,
            "fleet_trucks": self.fleet_trucks.len(),
            "span": [self.span.0, self.span.1],
            "day": [self.day.0, self.day.1],
            "last_10m": [self.last_10m.0, self.last_10m.1],
            "last_4h": [self.last_4h.0, self.last_4h.1],
        })
    }
}

/// One engine's implementation of the query set.
pub trait Engine {
    fn run(&mut self, q: Query, plan: &Plan) -> Result<Answer>;
    /// The query in the engine's own language, for the report (`None` for the Rust API).
    fn text(&self, q: Query, plan: &Plan) -> Option<String>;
}

/// How often each query runs.
#[derive(Clone, Copy)]
pub struct Repeat {
    pub runs: usize,
    /// A query stops repeating after this long (at least 3 runs).
    pub budget: Duration,
}

/// Times every query on `engine`: `{"queries": {...}, "query_text": {...}, "query_doc": {...}}`.
pub fn run_all(engine: &mut dyn Engine, plan: &Plan, repeat: Repeat) -> Result<Json> {
    let mut queries = serde_json::Map::new();
    let mut texts = serde_json::Map::new();
    let mut docs = serde_json::Map::new();
    for q in Query::ALL {
        let t = time_query(repeat.runs, repeat.budget, || engine.run(q, plan))
            .with_context(|| format!("query {}", q.name()))?;
        eprintln!(
            "  {:<24} p50 {:>10.3} ms  p99 {:>10.3} ms  ({} runs)  result {} checksum {:.3}",
            q.name(),
            t.p50_ms,
            t.p99_ms,
            t.runs,
            t.answer.count,
            t.answer.checksum
        );
        queries.insert(
            q.name().into(),
            json!({
                "runs": t.runs,
                "p50_ms": t.p50_ms,
                "p99_ms": t.p99_ms,
                "result": t.answer.count,
                "checksum": t.answer.checksum,
            }),
        );
        if let Some(text) = engine.text(q, plan) {
            texts.insert(q.name().into(), json!(text));
        }
        docs.insert(q.name().into(), json!(q.doc()));
    }
    Ok(json!({
        "queries": queries,
        "query_text": texts,
        "query_doc": docs,
        "plan": plan.describe(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate::generate;

    #[test]
    fn plan_windows_and_fleet() {
        let d = generate(20, 6.0, 3, 500);
        let p = Plan::new(&d).unwrap();
        assert!(p.fleet_trucks.contains(&0));
        assert!(p.fleet_trucks.iter().all(|&i| p.trucks[i].fleet == p.fleet));
        assert_eq!(p.day, (d.start_ms, d.end_ms));
        assert_eq!(p.last_4h.1 % TEN_MIN_MS, 0);
        assert_eq!(p.last_4h.1 - p.last_4h.0, 4 * HOUR_MS);
        assert_eq!(p.last_10m.1 - p.last_10m.0, TEN_MIN_MS);
        assert_eq!(Plan::truck_index("truck_17").unwrap(), 17.0);
        assert!(Plan::truck_index("lorry_1").is_err());
    }
}
