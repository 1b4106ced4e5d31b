//! The query set in SQL over ThingsBoard's `ts_kv` / `ts_kv_latest` layout, shared by the
//! PostgreSQL and SQLite runs (the same text runs on both), and the rows they write.
//!
//! Keys are the dictionary's integer ids (ThingsBoard resolves key names to ids in the
//! application before it queries); device attributes (fleet, model, load capacity) are in a
//! `device` table, as ThingsBoard keeps them outside `ts_kv` (in `attribute_kv`).

use std::collections::BTreeMap;

use crate::generate::{DIAGNOSTICS, Dataset, READINGS};
use crate::queries::{
    DRIVING, HIGH_LOAD, LONG_SESSION_BUCKETS, LOW_FUEL, Plan, Query, STATIONARY, TEN_MIN_MS,
};

/// Key id of a field name (readings 0–6, diagnostics 7–9).
pub fn key_id(name: &str) -> i32 {
    READINGS
        .iter()
        .chain(DIAGNOSTICS.iter())
        .position(|k| *k == name)
        .map_or(-1, |i| i as i32)
}

/// How a query's rows become an [`crate::measure::Answer`]: every row adds its last column
/// (a double), or the index of the truck named in its first column.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Fold {
    LastColumn,
    TruckIndex,
}

/// The SQL of a query, and how to fold its rows.
pub fn query(q: Query, plan: &Plan) -> (String, Fold) {
    let fleet = &plan.fleet;
    let truck0 = &plan.trucks[0].name;
    let velocity = key_id("velocity");
    let load = key_id("current_load");
    let one_device = format!("entity_id = (SELECT entity_id FROM device WHERE name = '{truck0}')");
    let sql = match q {
        Query::Raw1d => format!(
            "SELECT key, ts, dbl_v FROM ts_kv WHERE {one_device} AND key BETWEEN 0 AND 6 AND ts >= {} AND ts < {}",
            plan.day.0, plan.day.1
        ),
        Query::HourlyAvgSpan => format!(
            "SELECT ts / 3600000 AS hour, avg(dbl_v) FROM ts_kv WHERE {one_device} AND key = {velocity} AND ts >= {} AND ts < {} GROUP BY hour",
            plan.span.0, plan.span.1
        ),
        Query::LatestAll => "SELECT key, ts, coalesce(dbl_v, long_v) FROM ts_kv_latest".to_string(),
        Query::LastLoc => format!(
            "SELECT d.name, l.key, l.dbl_v FROM ts_kv_latest l JOIN device d ON d.entity_id = l.entity_id WHERE d.fleet = '{fleet}' AND l.key IN ({}, {})",
            key_id("latitude"),
            key_id("longitude")
        ),
        Query::LowFuel => format!(
            "SELECT d.name, l.dbl_v FROM ts_kv_latest l JOIN device d ON d.entity_id = l.entity_id WHERE d.fleet = '{fleet}' AND l.key = {} AND l.dbl_v <= {LOW_FUEL}",
            key_id("fuel_state")
        ),
        Query::HighLoad => format!(
            "SELECT d.name, l.dbl_v FROM ts_kv_latest l JOIN device d ON d.entity_id = l.entity_id WHERE d.fleet = '{fleet}' AND l.key = {load} AND l.dbl_v >= {HIGH_LOAD} * d.load_capacity"
        ),
        Query::StationaryTrucks => format!(
            "SELECT d.name, avg(t.dbl_v) FROM ts_kv t JOIN device d ON d.entity_id = t.entity_id WHERE d.fleet = '{fleet}' AND t.key = {velocity} AND t.ts >= {} AND t.ts < {} GROUP BY d.name HAVING avg(t.dbl_v) < {STATIONARY}",
            plan.last_10m.0, plan.last_10m.1
        ),
        Query::LongDrivingSessions => format!(
            "SELECT name, count(*) FROM (SELECT d.name AS name, t.ts / {TEN_MIN_MS} AS bucket, avg(t.dbl_v) AS v FROM ts_kv t JOIN device d ON d.entity_id = t.entity_id WHERE d.fleet = '{fleet}' AND t.key = {velocity} AND t.ts >= {} AND t.ts < {} GROUP BY d.name, bucket) s WHERE v > {DRIVING} GROUP BY name HAVING count(*) > {LONG_SESSION_BUCKETS}",
            plan.last_4h.0, plan.last_4h.1
        ),
        Query::AvgLoad => format!(
            "SELECT d.fleet, d.model, d.load_capacity, avg(t.dbl_v) / d.load_capacity FROM ts_kv t JOIN device d ON d.entity_id = t.entity_id WHERE t.key = {load} AND t.ts >= {} AND t.ts < {} GROUP BY d.fleet, d.model, d.load_capacity",
            plan.span.0, plan.span.1
        ),
        Query::FleetHourlyVelocity => format!(
            "SELECT ts / 3600000 AS hour, avg(dbl_v) FROM ts_kv WHERE key = {velocity} AND ts >= {} AND ts < {} GROUP BY hour",
            plan.day.0, plan.day.1
        ),
    };
    let fold = if q == Query::LongDrivingSessions {
        Fold::TruckIndex
    } else {
        Fold::LastColumn
    };
    (sql, fold)
}

/// One value row: truck index, key id, ts, and the value in `long_v` or `dbl_v`.
#[derive(Clone, Copy, Debug)]
pub struct KvRow {
    pub truck: u32,
    pub key: i32,
    pub ts: i64,
    pub long_v: Option<i64>,
    pub dbl_v: Option<f64>,
}

/// A write request as rows, and its latest row per (truck, key), sorted by (truck, key) so
/// that concurrent writers lock `ts_kv_latest` rows in the same order (no deadlocks).
pub struct Batch {
    pub rows: Vec<KvRow>,
    pub latest: Vec<KvRow>,
}

pub fn batches(d: &Dataset) -> Vec<Batch> {
    d.requests
        .iter()
        .map(|request| {
            let mut rows = Vec::with_capacity(request.len() * 7);
            let mut latest: BTreeMap<(u32, i32), KvRow> = BTreeMap::new();
            for row in request {
                for (f, v) in row.fields() {
                    let (long_v, dbl_v) = if row.table.is_int(f) {
                        (Some(v as i64), None)
                    } else {
                        (None, Some(v))
                    };
                    let r = KvRow {
                        truck: row.truck,
                        key: row.table.key_id(f) as i32,
                        ts: row.ts,
                        long_v,
                        dbl_v,
                    };
                    rows.push(r);
                    let e = latest.entry((r.truck, r.key)).or_insert(r);
                    if r.ts >= e.ts {
                        *e = r;
                    }
                }
            }
            Batch {
                rows,
                latest: latest.into_values().collect(),
            }
        })
        .collect()
}

/// Every key name with its id, for `ts_kv_dictionary`.
pub fn dictionary() -> Vec<(&'static str, i32)> {
    READINGS
        .iter()
        .chain(DIAGNOSTICS.iter())
        .map(|k| (*k, key_id(k)))
        .collect()
}

/// The `device` rows: (index, name, fleet, model, load capacity).
pub fn devices(plan: &Plan) -> Vec<(u32, &str, &str, &str, i32)> {
    plan.trucks
        .iter()
        .enumerate()
        .map(|(i, t)| {
            (
                i as u32,
                t.name.as_str(),
                t.fleet.as_str(),
                t.model.as_str(),
                t.load_capacity as i32,
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate::{Table, generate};

    #[test]
    fn key_ids_follow_the_generator() {
        assert_eq!(key_id("latitude"), 0);
        assert_eq!(key_id("velocity"), Table::Readings.key_id(3) as i32);
        assert_eq!(key_id("status"), Table::Diagnostics.key_id(2) as i32);
        assert_eq!(key_id("nope"), -1);
    }

    #[test]
    fn batches_keep_every_value_and_the_latest_per_key() {
        let d = generate(5, 1.0, 7, 100);
        let b = batches(&d);
        let values: usize = b.iter().map(|b| b.rows.len()).sum();
        assert_eq!(values as u64, d.values);
        for batch in &b {
            for w in batch.latest.windows(2) {
                assert!((w[0].truck, w[0].key) < (w[1].truck, w[1].key));
            }
            for l in &batch.latest {
                let max = batch
                    .rows
                    .iter()
                    .filter(|r| r.truck == l.truck && r.key == l.key)
                    .map(|r| r.ts)
                    .max();
                assert_eq!(max, Some(l.ts));
            }
        }
    }
}
