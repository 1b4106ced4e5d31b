//! wulian-tsdb, embedded: ingest with `Durability::Sync`, WAL replay, flush and compaction,
//! the query set through the Rust API, and the many-devices latest/idle-memory measurement.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde_json::{Value as Json, json};
use wulian_tsdb::{
    Aggregation, Config, Durability, PartialBucket, SeriesKey, Tsdb, Value, WriteEntry,
};

use crate::generate::{DIAGNOSTICS, Dataset, READINGS};
use crate::measure::{Answer, dir_bytes, proc_status, time_query, tree_cpu_secs};
use crate::queries::{
    DRIVING, Engine, HIGH_LOAD, HOUR_MS, LONG_SESSION_BUCKETS, LOW_FUEL, Plan, Query, Repeat,
    STATIONARY, TEN_MIN_MS, run_all,
};
use crate::{Scale, common, dataset};

const TENANT: &str = "bench";
/// A bucket width that puts every timestamp in one bucket (starting at the epoch).
const WHOLE: i64 = 1 << 62;

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

/// Writes the data set's requests from `writers` concurrent tasks; returns the wall time.
pub(crate) fn ingest(
    rt: &tokio::runtime::Runtime,
    db: &Tsdb,
    d: &Arc<Dataset>,
    writers: usize,
) -> Result<f64> {
    let names: Arc<Vec<String>> = Arc::new(d.trucks.iter().map(|t| t.name.clone()).collect());
    let keys: Arc<Vec<&'static str>> =
        Arc::new(READINGS.iter().chain(DIAGNOSTICS.iter()).copied().collect());
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..writers {
            let (db, d, next, names, keys) = (
                db.clone(),
                Arc::clone(d),
                Arc::clone(&next),
                Arc::clone(&names),
                Arc::clone(&keys),
            );
            tasks.push(tokio::spawn(async move {
                // Each writer builds its next request while the current one is in flight (the
                // other engines get theirs prepared before the clock starts; building all of
                // them up front would put ~1 GB of entries into the peak-memory figure).
                let build = |i: usize| {
                    let request = d.requests.get(i)?;
                    let mut entries = Vec::with_capacity(request.len() * 7);
                    for row in request {
                        let device = &names[row.truck as usize];
                        for (f, v) in row.fields() {
                            entries.push(WriteEntry {
                                series: SeriesKey::new(
                                    TENANT,
                                    device.as_str(),
                                    keys[row.table.key_id(f)],
                                ),
                                ts: row.ts,
                                value: if row.table.is_int(f) {
                                    Value::I64(v as i64)
                                } else {
                                    Value::F64(v)
                                },
                            });
                        }
                    }
                    Some(entries)
                };
                let mut current = build(next.fetch_add(1, Ordering::Relaxed));
                while let Some(entries) = current.take() {
                    // `biased`: the write is polled first, so it is queued before the build.
                    let (written, following) = tokio::join!(biased; db.write(entries), async {
                        build(next.fetch_add(1, Ordering::Relaxed))
                    });
                    written?;
                    current = following;
                }
                Ok::<(), wulian_tsdb::Error>(())
            }));
        }
        for t in tasks {
            t.await.context("writer task")??;
        }
        Ok::<(), anyhow::Error>(())
    })?;
    Ok(started.elapsed().as_secs_f64())
}

pub fn bench(scale: &Scale, dir: &Path, checkpoint_mib: u64) -> Result<Json> {
    let d = Arc::new(dataset(scale));
    let plan = Plan::new(&d)?;
    let rt = runtime()?;
    let rss_before = proc_status("self", "VmRSS")?;
    let mut config = Config::new(dir);
    config.durability = Durability::Sync;
    config.checkpoint_bytes = checkpoint_mib << 20;
    let db = Tsdb::open(config.clone())?;
    let cpu_before = tree_cpu_secs(std::process::id())?;
    let ingest_secs = ingest(&rt, &db, &d, scale.writers)?;
    let cpu = tree_cpu_secs(std::process::id())? - cpu_before;
    let after_ingest = db.stats();

    // WAL replay: drop the store without a flush (as a crash would leave it) and reopen.
    drop(db);
    let started = Instant::now();
    let db = Tsdb::open(config.clone())?;
    let replay_secs = started.elapsed().as_secs_f64();
    let replayed = db.stats();
    let replayed_points = replayed.points - replayed.block_points;
    if replayed.points != d.values {
        bail!(
            "reopened store holds {} points, {} were written",
            replayed.points,
            d.values
        );
    }

    let started = Instant::now();
    rt.block_on(db.checkpoint())?;
    rt.block_on(db.compact())?;
    let flush_compact = started.elapsed().as_secs_f64();
    let st = db.stats();
    let bytes = dir_bytes(dir);

    let mut engine = WulianEngine { db: &db };
    let queries = run_all(
        &mut engine,
        &plan,
        Repeat {
            runs: scale.query_runs,
            budget: scale.budget(),
        },
    )?;
    let peak = proc_status("self", "VmHWM")?;
    rt.block_on(db.close())?;
    drop(db);
    let reopened = Tsdb::open(config)?;
    let points_stored = reopened.stats().points;
    drop(reopened);

    let mut out = common(scale, &d);
    let o = out.as_object_mut().context("report is an object")?;
    o.insert("engine".into(), json!("wulian-tsdb"));
    o.insert(
        "settings".into(),
        json!(format!(
            "embedded, Durability::Sync (fsync per group commit), checkpoint_bytes {checkpoint_mib} MiB, otherwise default Config (1-day partitions, compaction at 4 files)"
        )),
    );
    o.insert("ingest_secs".into(), json!(ingest_secs));
    o.insert(
        "values_per_sec".into(),
        json!(d.values as f64 / ingest_secs),
    );
    o.insert("cpu_secs".into(), json!(cpu));
    o.insert("values_per_cpu_sec".into(), json!(d.values as f64 / cpu));
    o.insert(
        "cpu_note".into(),
        json!("CPU time of the whole benchmark process during ingest: the engine and the load generator building the write batches"),
    );
    o.insert("commit_groups".into(), json!(after_ingest.commit_groups));
    o.insert(
        "commit_requests".into(),
        json!(after_ingest.commit_requests),
    );
    o.insert(
        "flushes_during_ingest".into(),
        json!(after_ingest.checkpoints),
    );
    o.insert("replay_secs".into(), json!(replay_secs));
    o.insert("replayed_points".into(), json!(replayed_points));
    o.insert(
        "replay_values_per_sec".into(),
        json!(replayed_points as f64 / replay_secs),
    );
    o.insert("flush_compact_secs".into(), json!(flush_compact));
    o.insert("block_files".into(), json!(st.block_files));
    o.insert("bytes_on_disk".into(), json!(bytes));
    o.insert(
        "bytes_per_value".into(),
        json!(bytes as f64 / d.values as f64),
    );
    // The raw points (blocks, WAL, manifest) and the rollups (derived summaries kept longer)
    // separately: the bytes-per-value goal is about the stored readings.
    o.insert("rollup_bytes".into(), json!(st.rollup_bytes));
    o.insert(
        "raw_bytes_per_value".into(),
        json!(bytes.saturating_sub(st.rollup_bytes) as f64 / d.values as f64),
    );
    o.insert(
        "rollup_bytes_per_value".into(),
        json!(st.rollup_bytes as f64 / d.values as f64),
    );
    o.insert("points_stored".into(), json!(points_stored));
    o.insert(
        "peak_rss_bytes".into(),
        json!(peak.saturating_sub(rss_before)),
    );
    o.insert(
        "rss_note".into(),
        json!("VmHWM of the benchmark process minus its VmRSS before Tsdb::open (the pre-generated data set)"),
    );
    crate::merge(o, queries)?;
    Ok(out)
}

pub(crate) struct WulianEngine<'a> {
    pub(crate) db: &'a Tsdb,
}

impl WulianEngine<'_> {
    fn series(&self, device: &str, key: &str) -> SeriesKey {
        SeriesKey::new(TENANT, device, key)
    }

    /// The latest value of `key` of a device, from the last-value cache.
    fn latest(&self, device: &str, key: &str) -> Option<f64> {
        self.db
            .latest(TENANT, device)
            .into_iter()
            .find(|(k, _)| k == key)
            .and_then(|(_, p)| p.value.as_f64())
    }

    /// The mean of a series over `[from, to)`, `None` without points.
    fn mean(&self, device: &str, key: &str, (from, to): (i64, i64)) -> Result<Option<f64>> {
        let b = self
            .db
            .aggregate(&self.series(device, key), from, to, WHOLE, Aggregation::Avg)?;
        Ok(b.first().and_then(|b| b.value.as_f64()))
    }
}

fn add_buckets(a: &mut Answer, buckets: &[wulian_tsdb::Bucket]) {
    for b in buckets {
        if let Some(v) = b.value.as_f64() {
            a.add(v);
        }
    }
}

/// Merges one series' partial buckets into per-bucket totals.
fn merge_into(totals: &mut BTreeMap<i64, PartialBucket>, buckets: Vec<PartialBucket>) {
    for b in buckets {
        match totals.get_mut(&b.ts) {
            Some(t) => t.merge(&b),
            None => {
                totals.insert(b.ts, b);
            }
        }
    }
}

impl Engine for WulianEngine<'_> {
    fn run(&mut self, q: Query, plan: &Plan) -> Result<Answer> {
        let mut a = Answer::default();
        let truck0 = plan.trucks[0].name.as_str();
        let fleet = plan.fleet_trucks.iter().map(|&i| &plan.trucks[i]);
        match q {
            Query::Raw1d => {
                for key in READINGS {
                    let r = self.db.try_range(
                        &self.series(truck0, key),
                        plan.day.0,
                        plan.day.1,
                        1 << 20,
                    )?;
                    for p in r.points {
                        a.add(p.value.as_f64().unwrap_or(0.0));
                    }
                }
            }
            Query::HourlyAvgSpan => {
                let b = self.db.aggregate(
                    &self.series(truck0, "velocity"),
                    plan.span.0,
                    plan.span.1,
                    HOUR_MS,
                    Aggregation::Avg,
                )?;
                add_buckets(&mut a, &b);
            }
            Query::LatestAll => {
                for t in &plan.trucks {
                    for (_, p) in self.db.latest(TENANT, &t.name) {
                        a.add(p.value.as_f64().unwrap_or(0.0));
                    }
                }
            }
            Query::LastLoc => {
                for t in fleet {
                    for (k, p) in self.db.latest(TENANT, &t.name) {
                        if k == "latitude" || k == "longitude" {
                            a.add(p.value.as_f64().unwrap_or(0.0));
                        }
                    }
                }
            }
            Query::LowFuel => {
                for t in fleet {
                    if let Some(v) = self.latest(&t.name, "fuel_state")
                        && v <= LOW_FUEL
                    {
                        a.add(v);
                    }
                }
            }
            Query::HighLoad => {
                for t in fleet {
                    if let Some(v) = self.latest(&t.name, "current_load")
                        && v >= HIGH_LOAD * f64::from(t.load_capacity)
                    {
                        a.add(v);
                    }
                }
            }
            Query::StationaryTrucks => {
                for t in fleet {
                    if let Some(v) = self.mean(&t.name, "velocity", plan.last_10m)?
                        && v < STATIONARY
                    {
                        a.add(v);
                    }
                }
            }
            Query::LongDrivingSessions => {
                for t in fleet {
                    let b = self.db.aggregate(
                        &self.series(&t.name, "velocity"),
                        plan.last_4h.0,
                        plan.last_4h.1,
                        TEN_MIN_MS,
                        Aggregation::Avg,
                    )?;
                    let driving = b
                        .iter()
                        .filter(|b| b.value.as_f64().is_some_and(|v| v > DRIVING))
                        .count() as u64;
                    if driving > LONG_SESSION_BUCKETS {
                        a.add(Plan::truck_index(&t.name)?);
                    }
                }
            }
            Query::AvgLoad => {
                let mut groups: BTreeMap<(&str, &str, u32), PartialBucket> = BTreeMap::new();
                for t in &plan.trucks {
                    let b = self.db.partial_aggregate(
                        &self.series(&t.name, "current_load"),
                        plan.span.0,
                        plan.span.1,
                        WHOLE,
                    )?;
                    let Some(b) = b.into_iter().next() else {
                        continue;
                    };
                    let g = (t.fleet.as_str(), t.model.as_str(), t.load_capacity);
                    match groups.get_mut(&g) {
                        Some(total) => total.merge(&b),
                        None => {
                            groups.insert(g, b);
                        }
                    }
                }
                for ((_, _, cap), b) in groups {
                    a.add(b.sum / b.count as f64 / f64::from(cap));
                }
            }
            Query::FleetHourlyVelocity => {
                let mut totals = BTreeMap::new();
                for t in &plan.trucks {
                    merge_into(
                        &mut totals,
                        self.db.partial_aggregate(
                            &self.series(&t.name, "velocity"),
                            plan.day.0,
                            plan.day.1,
                            HOUR_MS,
                        )?,
                    );
                }
                for b in totals.values() {
                    a.add(b.sum / b.count as f64);
                }
            }
        }
        Ok(a)
    }

    fn text(&self, _q: Query, _plan: &Plan) -> Option<String> {
        None
    }
}

/// Many devices, few keys each: the time of `latest()` over every device, and the memory an
/// idle series costs once the store is reopened (head holding only the last-value caches and
/// the block indexes).
pub fn many_devices(
    dir: &Path,
    devices: usize,
    keys: usize,
    points: usize,
    query_runs: usize,
) -> Result<Json> {
    let rt = runtime()?;
    let names: Vec<String> = (0..devices).map(|i| format!("device_{i}")).collect();
    let key_names: Vec<String> = (0..keys).map(|k| format!("key_{k}")).collect();
    let config = Config::new(dir);
    let db = Tsdb::open(config.clone())?;
    let started = Instant::now();
    rt.block_on(async {
        let mut batch = Vec::with_capacity(10_000);
        for p in 0..points {
            for name in &names {
                for key in &key_names {
                    batch.push(WriteEntry {
                        series: SeriesKey::new(TENANT, name.as_str(), key.as_str()),
                        ts: crate::generate::START_MS + p as i64 * 10_000,
                        value: Value::F64(p as f64),
                    });
                    if batch.len() == 10_000 {
                        db.write(std::mem::take(&mut batch)).await?;
                    }
                }
            }
        }
        if !batch.is_empty() {
            db.write(batch).await?;
        }
        db.close().await?;
        Ok::<(), wulian_tsdb::Error>(())
    })?;
    let write_secs = started.elapsed().as_secs_f64();
    drop(db);

    let rss_before = proc_status("self", "VmRSS")?;
    let started = Instant::now();
    let db = Tsdb::open(config)?;
    let open_secs = started.elapsed().as_secs_f64();
    let rss_after = proc_status("self", "VmRSS")?;
    let series = db.stats().series;
    let expected = devices * keys;
    if series != expected {
        bail!("reopened store has {series} series, {expected} were written");
    }
    let t = time_query(query_runs, std::time::Duration::from_secs(30), || {
        let mut a = Answer::default();
        for name in &names {
            for (_, p) in db.latest(TENANT, name) {
                a.add(p.value.as_f64().unwrap_or(0.0));
            }
        }
        Ok(a)
    })?;
    if t.answer.count != expected as u64 {
        bail!(
            "latest() returned {} values, expected {expected}",
            t.answer.count
        );
    }
    let bytes = dir_bytes(dir);
    Ok(json!({
        "engine": "wulian-tsdb",
        "devices": devices,
        "keys_per_device": keys,
        "points_per_series": points,
        "series": series,
        "write_secs": write_secs,
        "reopen_secs": open_secs,
        "bytes_on_disk": bytes,
        "idle_rss_bytes": rss_after.saturating_sub(rss_before),
        "idle_bytes_per_series": rss_after.saturating_sub(rss_before) as f64 / series as f64,
        "idle_note": "VmRSS growth of the process across Tsdb::open of the closed (fully flushed) store: every series idle, only its last-value cache, index entries and block index in memory",
        "latest_all": {
            "runs": t.runs,
            "p50_ms": t.p50_ms,
            "p99_ms": t.p99_ms,
            "result": t.answer.count,
        },
    }))
}
