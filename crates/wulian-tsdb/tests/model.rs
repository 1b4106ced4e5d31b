//! Property-style tests: random writes (out of order, duplicates, kind mismatches), deletes,
//! flushes, compactions, clean and unclean restarts, injected crashes between the steps of a
//! flush or a compaction, retention of raw data (store-wide and per device) and of rollups;
//! after each step every query is compared with a trivial model.
//!
//! The stores use 1-second partitions and rollup widths of 10 ms and 100 ms (standing for 1
//! minute and 1 hour), so that rollups are written, go stale, are rebuilt and outlive raw
//! data within a few hundred operations. The model computes aggregates from points only, with
//! the engine's documented summation order (per fine bucket, then per coarse bucket, then per
//! interval), so sums served from rollups must match it bit for bit.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Duration;

use wulian_tsdb::{
    Aggregation, Bucket, Config, Error, FaultPoint, Point, RetentionPolicy, SeriesKey, Tsdb, Value,
    ValueKind, WriteEntry, inject_fault,
};

/// xorshift64*.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// The rollup widths of the test stores (fine, coarse).
const WIDTHS: [i64; 2] = [10, 100];
const PARTITION: i64 = 1000;

#[derive(Default)]
struct Model {
    /// Raw points (at or above the retention floor).
    series: BTreeMap<SeriesKey, (ValueKind, BTreeMap<i64, Value>)>,
    /// Points below the raw floor whose partitions still have rollups.
    archive: BTreeMap<SeriesKey, (ValueKind, BTreeMap<i64, Value>)>,
    floor: i64,
    /// Per-device floors above `floor` (per-device retention policies).
    device_floors: HashMap<(String, String), i64>,
    rollup_floors: [i64; 2],
}

/// One bucket's summary, as the model computes it.
#[derive(Clone)]
struct Summary {
    ts: i64,
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
    first: Value,
    last: Value,
}

/// Per bucket of `width`: points added one by one from 0.
fn summarise(points: &[Point], width: i64) -> Vec<Summary> {
    let mut out: Vec<Summary> = Vec::new();
    for p in points {
        let ts = p.ts - p.ts % width;
        if out.last().is_none_or(|s| s.ts != ts) {
            out.push(Summary {
                ts,
                count: 0,
                sum: 0.0,
                min: f64::INFINITY,
                max: f64::NEG_INFINITY,
                first: p.value.clone(),
                last: p.value.clone(),
            });
        }
        let Some(s) = out.last_mut() else { continue };
        s.count += 1;
        s.last = p.value.clone();
        if let Some(v) = p.value.as_f64() {
            s.sum += v;
            s.min = s.min.min(v);
            s.max = s.max.max(v);
        }
    }
    out
}

/// Summaries folded into buckets of `width`: the first one's sum plus the others in order.
fn fold(parts: Vec<Summary>, width: i64) -> Vec<Summary> {
    let mut out: Vec<Summary> = Vec::new();
    for p in parts {
        let ts = p.ts - p.ts % width;
        match out.last_mut() {
            Some(s) if s.ts == ts => {
                s.count += p.count;
                s.sum += p.sum;
                s.min = s.min.min(p.min);
                s.max = s.max.max(p.max);
                s.last = p.last;
            }
            _ => out.push(Summary { ts, ..p }),
        }
    }
    out
}

/// The rollup level whose buckets tile `interval`.
fn level_of(interval: i64) -> Option<usize> {
    if interval % WIDTHS[1] == 0 {
        Some(1)
    } else if interval % WIDTHS[0] == 0 {
        Some(0)
    } else {
        None
    }
}

impl Model {
    /// Same rules as the engine: all-or-nothing, the first value fixes a kind, integers widen
    /// to floats.
    fn write(&mut self, entries: &[WriteEntry]) -> bool {
        let mut new_kinds: HashMap<&SeriesKey, ValueKind> = HashMap::new();
        let mut coerced = Vec::new();
        for e in entries {
            let known = new_kinds
                .get(&e.series)
                .copied()
                .or_else(|| self.series.get(&e.series).map(|s| s.0));
            let v = match (known, &e.value) {
                (None, v) => {
                    new_kinds.insert(&e.series, v.kind());
                    v.clone()
                }
                (Some(k), v) if k == v.kind() => v.clone(),
                (Some(ValueKind::Float), Value::I64(i)) => Value::F64(*i as f64),
                _ => return false,
            };
            coerced.push((e.series.clone(), e.ts, v));
        }
        for (k, ts, v) in coerced {
            if ts < self.floor_of(&k) {
                // Below the retention floor: accepted and discarded.
                continue;
            }
            let kind = v.kind();
            self.series
                .entry(k)
                .or_insert_with(|| (kind, BTreeMap::new()))
                .1
                .insert(ts, v);
        }
        true
    }

    fn delete_device(&mut self, tenant: &str, device: &str) {
        self.series
            .retain(|k, _| !(k.tenant == tenant && k.device == device));
        self.archive
            .retain(|k, _| !(k.tenant == tenant && k.device == device));
    }

    /// The raw retention floor of a series: the store-wide one or its device's.
    fn floor_of(&self, k: &SeriesKey) -> i64 {
        self.device_floors
            .get(&(k.tenant.clone(), k.device.clone()))
            .map_or(self.floor, |f| self.floor.max(*f))
    }

    /// Raw retention at `floor` (rollups keep summarising what it drops), then rollup
    /// retention at `rollup_floors`.
    fn retain(&mut self, floor: i64, rollup_floors: [i64; 2]) {
        self.floor = self.floor.max(floor);
        self.cut(rollup_floors);
    }

    /// Retention by `policy` at `now`, as documented for `enforce_retention_policy`: the
    /// store-wide floor at the longest retention, each device with data (or a floor already)
    /// at its own if that is higher; floors never go down.
    fn retain_policy(&mut self, now: i64, policy: &RetentionPolicy, rollups: [i64; 2]) {
        let floor = |r: i64| {
            let cut = (now - r).max(0);
            cut - cut % PARTITION
        };
        let ms = |d: Duration| d.as_millis() as i64;
        if let Some(longest) = policy.longest() {
            self.floor = self.floor.max(floor(ms(longest)));
        }
        let mut devices: Vec<(String, String)> = self
            .series
            .keys()
            .map(|k| (k.tenant.clone(), k.device.clone()))
            .chain(self.device_floors.keys().cloned())
            .collect();
        devices.sort();
        devices.dedup();
        let mut next = HashMap::new();
        for (t, d) in devices {
            let mut f = self.device_floors.get(&(t.clone(), d.clone())).copied();
            if let Some(r) = policy.retention_of(&t, &d) {
                f = Some(f.unwrap_or(i64::MIN).max(floor(ms(r))));
            }
            if let Some(f) = f.filter(|f| *f > self.floor) {
                next.insert((t, d), f);
            }
        }
        self.device_floors = next;
        self.cut([floor(rollups[0]), floor(rollups[1])]);
    }

    /// Moves the raw points below each series' floor to the archive, then applies the rollup
    /// floors.
    fn cut(&mut self, rollup_floors: [i64; 2]) {
        for (have, new) in self.rollup_floors.iter_mut().zip(rollup_floors) {
            *have = (*have).max(new);
        }
        let floors: Vec<i64> = self.series.keys().map(|k| self.floor_of(k)).collect();
        for ((k, s), floor) in self.series.iter_mut().zip(floors) {
            let kept = s.1.split_off(&floor);
            let gone = std::mem::replace(&mut s.1, kept);
            if !gone.is_empty() {
                self.archive
                    .entry(k.clone())
                    .or_insert_with(|| (s.0, BTreeMap::new()))
                    .1
                    .extend(gone);
            }
        }
        self.series.retain(|_, s| !s.1.is_empty());
        // A partition below both rollup floors has no rollup left.
        let oldest = self.rollup_floors[0].min(self.rollup_floors[1]);
        for s in self.archive.values_mut() {
            s.1 = s.1.split_off(&oldest);
        }
        self.archive.retain(|_, s| !s.1.is_empty());
    }

    /// Retention as the engine applies it at `now` with the given retentions (ms).
    fn retain_at(&mut self, now: i64, raw: i64, rollups: [i64; 2]) {
        let floor = |r: i64| {
            let cut = (now - r).max(0);
            cut - cut % PARTITION
        };
        self.retain(floor(raw), [floor(rollups[0]), floor(rollups[1])]);
    }

    fn range(&self, k: &SeriesKey, from: i64, to: i64) -> Vec<Point> {
        match self.series.get(k) {
            Some((_, pts)) if from < to => pts
                .range(from..to)
                .map(|(ts, v)| Point {
                    ts: *ts,
                    value: v.clone(),
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    fn aggregate(
        &self,
        k: &SeriesKey,
        from: i64,
        to: i64,
        interval: i64,
        agg: Aggregation,
    ) -> Result<Vec<Bucket>, ()> {
        let Some(kind) = self
            .series
            .get(k)
            .or_else(|| self.archive.get(k))
            .map(|s| s.0)
        else {
            return Ok(Vec::new());
        };
        if agg.needs_numbers() && !kind.is_numeric() {
            return Err(());
        }
        let level = level_of(interval);
        // Below the raw floor only whole rollup buckets inside the range count, from a level
        // whose rollups are still kept (coarse buckets can be folded from fine ones).
        let mut points: Vec<Point> = Vec::new();
        if let (Some(level), Some((_, archived))) = (level, self.archive.get(k)) {
            let w = WIDTHS[level];
            let kept_from = if level == 0 {
                self.rollup_floors[0]
            } else {
                self.rollup_floors[0].min(self.rollup_floors[1])
            };
            for (ts, v) in archived.range(kept_from..) {
                let start = ts - ts % w;
                if start >= from && start + w <= to {
                    points.push(Point {
                        ts: *ts,
                        value: v.clone(),
                    });
                }
            }
        }
        points.extend(self.range(k, from, to));
        let summaries = match level {
            None => summarise(&points, interval),
            Some(0) => fold(summarise(&points, WIDTHS[0]), interval),
            Some(_) => fold(fold(summarise(&points, WIDTHS[0]), WIDTHS[1]), interval),
        };
        Ok(summaries
            .into_iter()
            .map(|s| {
                let value = match agg {
                    Aggregation::Min => Value::F64(s.min),
                    Aggregation::Max => Value::F64(s.max),
                    Aggregation::Sum => Value::F64(s.sum),
                    Aggregation::Avg => Value::F64(s.sum / s.count as f64),
                    Aggregation::Count => Value::I64(s.count as i64),
                    Aggregation::First => s.first,
                    Aggregation::Last => s.last,
                };
                Bucket {
                    ts: s.ts,
                    value,
                    count: s.count,
                }
            })
            .collect())
    }

    fn latest(&self, tenant: &str, device: &str) -> Vec<(String, Point)> {
        self.series
            .iter()
            .filter(|(k, _)| k.tenant == tenant && k.device == device)
            .filter_map(|(k, (_, pts))| {
                pts.iter().next_back().map(|(ts, v)| {
                    (
                        k.key.clone(),
                        Point {
                            ts: *ts,
                            value: v.clone(),
                        },
                    )
                })
            })
            .collect()
    }
}

const TENANTS: [&str; 2] = ["t0", "t1"];
const DEVICES: [&str; 3] = ["d0", "d1", "d2"];
const KEYS: [&str; 5] = ["temp", "count", "on", "state", "hum"];

fn all_keys() -> Vec<SeriesKey> {
    let mut v = Vec::new();
    for t in TENANTS {
        for d in DEVICES {
            for k in KEYS {
                v.push(SeriesKey::new(t, d, k));
            }
        }
    }
    v
}

fn random_value(rng: &mut Rng, key: &str, fixed_kinds: bool) -> Value {
    // Mostly the key's usual kind, sometimes another (refused, or widened int → float).
    let kind = if !fixed_kinds && rng.chance(5) {
        rng.below(4)
    } else {
        match key {
            "temp" | "hum" => 0,
            "count" => 1,
            "on" => 2,
            _ => 3,
        }
    };
    match kind {
        0 => {
            if rng.chance(50) {
                Value::F64((rng.below(20_000) as f64 - 10_000.0) / 100.0)
            } else {
                let v = f64::from_bits(rng.next());
                Value::F64(if v.is_finite() { v } else { 1.5 })
            }
        }
        1 => Value::I64(if rng.chance(80) {
            rng.below(1000) as i64 - 500
        } else {
            rng.next() as i64
        }),
        2 => Value::Bool(rng.chance(50)),
        _ => Value::Str(["idle", "run", "", "fault", "héllo"][rng.below(5) as usize].to_string()),
    }
}

fn config(dir: &Path) -> Config {
    let mut c = Config::new(dir);
    c.partition = Duration::from_millis(PARTITION as u64);
    c.rollup_widths = WIDTHS.map(|w| Duration::from_millis(w as u64));
    c.rollup_1m_retention = None;
    c.rollup_1h_retention = None;
    c.compaction_files = 3;
    c.wal_segment_bytes = 2048;
    c.checkpoint_bytes = 1 << 40;
    c.flush_age = None;
    c
}

/// Flushes also start on their own (in the background) every few KiB of WAL.
fn config_auto(dir: &Path, checkpoint_bytes: u64) -> Config {
    let mut c = config(dir);
    c.checkpoint_bytes = checkpoint_bytes;
    c
}

/// Bucket lists equal, a NaN sum (overflowing partial sums of opposite signs) equal to NaN.
fn same_buckets(a: &[Bucket], b: &[Bucket]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.ts == y.ts
                && x.count == y.count
                && match (&x.value, &y.value) {
                    (Value::F64(p), Value::F64(q)) => p == q || (p.is_nan() && q.is_nan()),
                    (p, q) => p == q,
                }
        })
}

fn check(db: &Tsdb, model: &Model, rng: &mut Rng, ctx: &str) {
    check_span(db, model, rng, ctx, 12_000);
}

/// Compares every query with the model; random ranges start below `span`.
fn check_span(db: &Tsdb, model: &Model, rng: &mut Rng, ctx: &str, span: u64) {
    for k in all_keys() {
        let full = db.try_range(&k, 0, i64::MAX, usize::MAX).unwrap();
        let want = model.range(&k, 0, i64::MAX);
        assert_eq!(full.points, want, "{ctx}: full range of {k}");
        assert!(!full.truncated);
        assert_eq!(
            db.series_kind(&k),
            model.series.get(&k).map(|s| s.0),
            "{ctx}: kind of {k}"
        );
        let mut from = rng.below(span) as i64;
        let mut to = from + rng.below(span / 2 + 1) as i64;
        if rng.chance(50) {
            // Aligned ranges, served from rollups where they are usable.
            from -= from % 100;
            to -= to % 100;
        }
        let limit = rng.below(20) as usize;
        let got = db.try_range(&k, from, to, limit).unwrap();
        let want = model.range(&k, from, to);
        assert_eq!(
            got.truncated,
            want.len() > limit,
            "{ctx}: truncation of {k}"
        );
        assert_eq!(
            got.points,
            want[..want.len().min(limit)],
            "{ctx}: range of {k} [{from},{to}) limit {limit}"
        );
        let interval = [1, 7, 10, 30, 100, 1000, 2500, 100_000][rng.below(8) as usize];
        for agg in Aggregation::ALL {
            let got = db.aggregate(&k, from, to, interval, agg);
            let want = model.aggregate(&k, from, to, interval, agg);
            match (got, want) {
                (Ok(g), Ok(w)) => {
                    assert!(
                        same_buckets(&g, &w),
                        "{ctx}: {agg} of {k} [{from},{to}) / {interval}:\n engine {g:?}\n model  {w:?}"
                    )
                }
                (Err(Error::NotNumeric { .. }), Err(())) => {}
                (g, w) => panic!("{ctx}: {agg} of {k}: engine {g:?}, model {w:?}"),
            }
        }
    }
    for t in TENANTS {
        for d in DEVICES {
            let latest = model.latest(t, d);
            assert_eq!(db.latest(t, d), latest, "{ctx}: latest of {t}/{d}");
            let keys: Vec<String> = latest.into_iter().map(|(k, _)| k).collect();
            assert_eq!(db.keys(t, d), keys, "{ctx}: keys of {t}/{d}");
        }
    }
    assert_eq!(db.stats().series, model.series.len(), "{ctx}: series count");
}

async fn random_write(db: &Tsdb, model: &mut Model, rng: &mut Rng, ts_hi: i64) {
    random_write_with(db, model, rng, ts_hi, false).await;
}

async fn random_write_with(
    db: &Tsdb,
    model: &mut Model,
    rng: &mut Rng,
    ts_hi: i64,
    fixed_kinds: bool,
) {
    let n = 1 + rng.below(12) as usize;
    let mut entries = Vec::with_capacity(n);
    for _ in 0..n {
        let t = TENANTS[rng.below(2) as usize];
        let d = DEVICES[rng.below(3) as usize];
        let k = KEYS[rng.below(5) as usize];
        let ts = if rng.chance(70) {
            ts_hi - rng.below(50) as i64
        } else {
            rng.below(ts_hi.max(1) as u64) as i64
        };
        entries.push(WriteEntry {
            series: SeriesKey::new(t, d, k),
            ts: ts.max(0),
            value: random_value(rng, k, fixed_kinds),
        });
    }
    let accepted = model.write(&entries);
    let result = db.write(entries).await;
    assert_eq!(result.is_ok(), accepted, "{result:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_operations_match_the_model() {
    // More seeds: WULIAN_TSDB_MODEL_SEEDS=200 cargo test -p wulian-tsdb --release --test model
    let seeds: u64 = std::env::var("WULIAN_TSDB_MODEL_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(6);
    for seed in 1..=seeds {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let mut model = Model::default();
        let cfg = config_auto(dir.path(), 512 + 512 * (seed % 4));
        // Flushes counted over every opening, and explicit flush calls.
        let (mut flushes, mut explicit, mut rollup_reads) = (0u64, 0u64, 0u64);
        let mut db = Tsdb::open(cfg.clone()).unwrap();
        let mut ts_hi = 100i64;
        for step in 0..400 {
            let ctx = format!("seed {seed} step {step}");
            match rng.below(100) {
                0..=69 => {
                    ts_hi += rng.below(60) as i64;
                    random_write(&db, &mut model, &mut rng, ts_hi).await;
                }
                70..=73 => {
                    let t = TENANTS[rng.below(2) as usize];
                    let d = DEVICES[rng.below(3) as usize];
                    db.delete_device(t, d).await.unwrap();
                    model.delete_device(t, d);
                }
                74..=83 => {
                    explicit += 1;
                    db.checkpoint().await.unwrap();
                }
                84..=87 => {
                    db.compact().await.unwrap();
                }
                88..=92 => {
                    flushes += db.stats().checkpoints;
                    rollup_reads += db.stats().rollup_reads;
                    db.close().await.unwrap();
                    drop(db);
                    db = Tsdb::open(cfg.clone()).unwrap();
                }
                93..=96 => {
                    // Crash: no close (a background flush may be in progress).
                    flushes += db.stats().checkpoints;
                    rollup_reads += db.stats().rollup_reads;
                    drop(db);
                    db = Tsdb::open(cfg.clone()).unwrap();
                }
                _ => check(&db, &model, &mut rng, &ctx),
            }
        }
        check(&db, &model, &mut rng, &format!("seed {seed} end"));
        let st = db.stats();
        eprintln!("seed {seed}: {st:?}");
        flushes += st.checkpoints;
        rollup_reads += st.rollup_reads;
        // Aggregates were answered from fresh rollups above the raw floor too, and matched.
        assert!(
            rollup_reads > 0,
            "seed {seed}: no query was answered from rollups"
        );
        eprintln!("seed {seed}: {flushes} flushes, {explicit} explicit flush calls");
        db.close().await.unwrap();
        drop(db);
        let db = Tsdb::open(cfg).unwrap();
        check(&db, &model, &mut rng, &format!("seed {seed} reopened"));
    }
}

/// Raw retention, rollup retention, late writes (also below the floor), deletes, flushes,
/// compactions, background rollup rebuilds and restarts: aggregates answered from rollups
/// (also for partitions whose raw data is gone) equal the model's. Kinds stay fixed per key,
/// so that a series' rollups never change kind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollups_match_the_model_across_retention() {
    let seeds: u64 = std::env::var("WULIAN_TSDB_MODEL_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4);
    const RAW: i64 = 3_000;
    const ROLLUPS: [i64; 2] = [6_000, 10_000];
    for seed in 1..=seeds {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = Rng(seed.wrapping_mul(0x2545_f491_4f6c_dd1d) | 1);
        let mut model = Model::default();
        let mut cfg = config_auto(dir.path(), 2048 + 1024 * (seed % 3));
        cfg.retention = Some(Duration::from_millis(RAW as u64));
        cfg.rollup_1m_retention = Some(Duration::from_millis(ROLLUPS[0] as u64));
        cfg.rollup_1h_retention = Some(Duration::from_millis(ROLLUPS[1] as u64));
        let mut db = Tsdb::open(cfg.clone()).unwrap();
        let mut ts_hi = 100i64;
        let (mut rollups_seen, mut rollup_reads) = (0, 0);
        for step in 0..400 {
            let ctx = format!("seed {seed} step {step}");
            match rng.below(100) {
                0..=64 => {
                    ts_hi += rng.below(150) as i64;
                    random_write_with(&db, &mut model, &mut rng, ts_hi, true).await;
                }
                65..=67 => {
                    let t = TENANTS[rng.below(2) as usize];
                    let d = DEVICES[rng.below(3) as usize];
                    db.delete_device(t, d).await.unwrap();
                    model.delete_device(t, d);
                }
                68..=74 => db.checkpoint().await.unwrap(),
                75..=77 => {
                    db.compact().await.unwrap();
                }
                78..=84 => {
                    db.enforce_retention(ts_hi).await.unwrap();
                    model.retain_at(ts_hi, RAW, ROLLUPS);
                }
                85..=87 => {
                    rollup_reads += db.stats().rollup_reads;
                    db.close().await.unwrap();
                    drop(db);
                    db = Tsdb::open(cfg.clone()).unwrap();
                }
                88..=89 => {
                    rollup_reads += db.stats().rollup_reads;
                    drop(db);
                    db = Tsdb::open(cfg.clone()).unwrap();
                }
                _ => {
                    rollups_seen = rollups_seen.max(db.stats().rollup_files);
                    check_span(&db, &model, &mut rng, &ctx, ts_hi as u64 + 500);
                }
            }
        }
        check_span(
            &db,
            &model,
            &mut rng,
            &format!("seed {seed} end"),
            ts_hi as u64 + 500,
        );
        assert!(
            rollups_seen > 0,
            "seed {seed}: no rollup file was ever written"
        );
        rollup_reads += db.stats().rollup_reads;
        assert!(
            rollup_reads > 0,
            "seed {seed}: no query was answered from rollups"
        );
        db.close().await.unwrap();
        drop(db);
        let db = Tsdb::open(cfg).unwrap();
        let on_disk = std::fs::read_dir(dir.path().join("rollups"))
            .unwrap()
            .count() as u64;
        assert_eq!(on_disk, db.stats().rollup_files, "seed {seed}");
        check_span(
            &db,
            &model,
            &mut rng,
            &format!("seed {seed} reopened"),
            ts_hi as u64 + 500,
        );
    }
}

/// Stops a flush or compaction after each of its steps, as a crash would, and checks that the
/// reopened store holds exactly what was acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_between_flush_and_compaction_steps() {
    let points = [
        FaultPoint::FlushAfterRotate,
        FaultPoint::FlushAfterBlocks,
        FaultPoint::FlushAfterManifest,
        FaultPoint::CompactAfterWrite,
        FaultPoint::CompactAfterManifest,
    ];
    for (i, point) in points.into_iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = Rng(1000 + i as u64);
        let mut model = Model::default();
        let mut ts_hi = 100;
        {
            let db = Tsdb::open(config(dir.path())).unwrap();
            for round in 0..3 {
                for _ in 0..30 {
                    ts_hi += rng.below(40) as i64;
                    random_write(&db, &mut model, &mut rng, ts_hi).await;
                }
                if round == 1 {
                    db.delete_device("t0", "d1").await.unwrap();
                    model.delete_device("t0", "d1");
                }
                db.checkpoint().await.unwrap();
            }
            for _ in 0..30 {
                random_write(&db, &mut model, &mut rng, ts_hi).await;
            }
            db.delete_device("t1", "d0").await.unwrap();
            model.delete_device("t1", "d0");
            inject_fault(dir.path(), point);
            let result = match point {
                FaultPoint::CompactAfterWrite | FaultPoint::CompactAfterManifest => {
                    db.compact().await
                }
                _ => db.checkpoint().await.map(|()| 0),
            };
            assert!(result.is_err(), "{point:?}: {result:?}");
            // The writer stopped as if the process had died.
            assert!(matches!(
                db.write(vec![WriteEntry {
                    series: SeriesKey::new("t0", "d0", "temp"),
                    ts: 1,
                    value: Value::F64(1.0),
                }])
                .await,
                Err(Error::WalFailed)
            ));
        }
        let db = Tsdb::open(config(dir.path())).unwrap();
        check(&db, &model, &mut rng, &format!("{point:?} reopened"));
        // And it keeps working.
        for _ in 0..20 {
            random_write(&db, &mut model, &mut rng, ts_hi).await;
        }
        db.checkpoint().await.unwrap();
        db.compact().await.unwrap();
        check(
            &db,
            &model,
            &mut rng,
            &format!("{point:?} after more writes"),
        );
        drop(db);
        let db = Tsdb::open(config(dir.path())).unwrap();
        check(&db, &model, &mut rng, &format!("{point:?} reopened twice"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_chunk_is_reported_with_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let k = SeriesKey::new("t", "d", "temp");
    {
        let db = Tsdb::open(config(dir.path())).unwrap();
        let entries = (0..500)
            .map(|i| WriteEntry {
                series: k.clone(),
                ts: i,
                value: Value::F64(i as f64 * 0.25),
            })
            .collect();
        db.write(entries).await.unwrap();
        db.close().await.unwrap();
    }
    let file = dir.path().join("blocks").join("000000000001.blk");
    let mut bytes = std::fs::read(&file).unwrap();
    // The first chunk starts right after the 36-byte header; damage its payload.
    bytes[36 + 8 + 5] ^= 0x20;
    std::fs::write(&file, &bytes).unwrap();
    let db = Tsdb::open(config(dir.path())).unwrap();
    // An interval no rollup serves, so the damaged chunk must be read.
    match db.aggregate(&k, 0, 1000, 7, Aggregation::Count) {
        Err(Error::Corrupt {
            file: f, offset, ..
        }) => {
            assert_eq!(f, file);
            assert_eq!(offset, 36);
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        db.try_range(&k, 0, 1000, 10),
        Err(Error::Corrupt { .. })
    ));
    // The other partitions, latest and keys still answer.
    assert_eq!(db.try_range(&k, 1000, 2000, 10).unwrap().points, vec![]);
    assert_eq!(db.latest("t", "d")[0].1.ts, 499);
    // Buckets the partition's rollups tile are answered from them, without the damaged chunk.
    let hourly = db.aggregate(&k, 0, 1000, 100, Aggregation::Sum).unwrap();
    assert_eq!(hourly.len(), 5);
    assert_eq!(hourly[0].count, 100);
    let want: f64 = (0..100).map(|i| i as f64 * 0.25).sum();
    assert_eq!(hourly[0].value, Value::F64(want));
    // A damaged rollup frame is Corrupt too, naming the rollup file.
    drop(db);
    let rollup = dir.path().join("rollups").join("000000000001-100.rup");
    let mut bytes = std::fs::read(&rollup).unwrap();
    bytes[44 + 8 + 3] ^= 0x20;
    std::fs::write(&rollup, &bytes).unwrap();
    let db = Tsdb::open(config(dir.path())).unwrap();
    match db.aggregate(&k, 0, 1000, 100, Aggregation::Sum) {
        Err(Error::Corrupt {
            file: f, offset, ..
        }) => {
            assert_eq!(f, rollup);
            assert_eq!(offset, 44);
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_drops_whole_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.retention = Some(Duration::from_millis(5000));
    let old = SeriesKey::new("t", "old", "x");
    let live = SeriesKey::new("t", "live", "x");
    let mut model = Model::default();
    let mut rng = Rng(77);
    let db = Tsdb::open(cfg.clone()).unwrap();
    let mut entries = Vec::new();
    for ts in (0..20_000).step_by(100) {
        entries.push(WriteEntry {
            series: live.clone(),
            ts,
            value: Value::I64(ts),
        });
        if ts < 9_000 {
            entries.push(WriteEntry {
                series: old.clone(),
                ts,
                value: Value::Bool(ts % 200 == 0),
            });
        }
    }
    assert!(model.write(&entries));
    for chunk in entries.chunks(50) {
        db.write(chunk.to_vec()).await.unwrap();
        db.checkpoint().await.unwrap();
    }
    let files_before = db.stats().block_files;
    // now = 20_500: cutoff 15_500, floor 15_000 (partition start).
    let dropped = db.enforce_retention(20_500).await.unwrap();
    assert!(dropped >= 15, "{dropped} of {files_before}");
    model.retain(15_000, [0, 0]);
    check(&db, &model, &mut rng, "after retention");
    assert!(db.keys("t", "old").is_empty());
    // Idempotent; a write below the floor is accepted and discarded.
    assert_eq!(db.enforce_retention(20_500).await.unwrap(), 0);
    db.write(vec![WriteEntry {
        series: live.clone(),
        ts: 100,
        value: Value::I64(1),
    }])
    .await
    .unwrap();
    check(&db, &model, &mut rng, "write below the floor");
    drop(db);
    let db = Tsdb::open(cfg.clone()).unwrap();
    check(&db, &model, &mut rng, "reopened after retention");
    let on_disk = std::fs::read_dir(dir.path().join("blocks"))
        .unwrap()
        .count() as u64;
    assert_eq!(on_disk, db.stats().block_files);
    // Without a configured retention nothing happens.
    db.close().await.unwrap();
    drop(db);
    let db = Tsdb::open(config(dir.path())).unwrap();
    assert_eq!(db.enforce_retention(i64::MAX / 2).await.unwrap(), 0);
    check(&db, &model, &mut rng, "no retention configured");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushes_start_on_their_own_in_the_background() {
    let dir = tempfile::tempdir().unwrap();
    let db = Tsdb::open(config_auto(dir.path(), 1024)).unwrap();
    let mut model = Model::default();
    let mut rng = Rng(5);
    let mut ts_hi = 100;
    for _ in 0..300 {
        ts_hi += rng.below(30) as i64;
        random_write(&db, &mut model, &mut rng, ts_hi).await;
    }
    let st = db.stats();
    assert!(st.checkpoints >= 3, "{st:?}");
    assert!(st.wal_bytes < 8 * 1024, "{st:?}");
    check(&db, &model, &mut rng, "after automatic flushes");
}

/// A torn record at the WAL tail after flushes: the flushed data comes from the block files,
/// the acknowledged tail from the WAL, and the torn record is cut off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torn_wal_tail_on_top_of_block_files() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(4242);
    let mut model = Model::default();
    let mut ts_hi = 100;
    {
        let db = Tsdb::open(config_auto(dir.path(), 1500)).unwrap();
        for _ in 0..200 {
            ts_hi += rng.below(30) as i64;
            random_write(&db, &mut model, &mut rng, ts_hi).await;
        }
        assert!(db.stats().block_files > 0);
        // Crash without close.
    }
    let mut segments: Vec<_> = std::fs::read_dir(dir.path().join("wal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    segments.sort();
    let last = segments.last().unwrap();
    let mut f = std::fs::OpenOptions::new().append(true).open(last).unwrap();
    f.write_all(&[60, 0, 0, 0, 9, 9, 9, 9, 1, 2, 3]).unwrap();
    drop(f);
    let db = Tsdb::open(config_auto(dir.path(), 1500)).unwrap();
    assert!(db.stats().recovered_torn_tail);
    check(&db, &model, &mut rng, "after a torn tail");
}

/// Retention must not be blocked by a partition whose rollups cannot be rebuilt (a damaged
/// chunk): it drops the partition's raw data and its stale rollups, which would otherwise look
/// fresh once no newer file is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_drops_stale_rollups_it_cannot_rebuild() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.retention = Some(Duration::from_millis(3000));
    let k = SeriesKey::new("t", "d", "temp");
    let write = |db: &Tsdb, from: i64, to: i64, v: f64| {
        let entries: Vec<WriteEntry> = (from..to)
            .step_by(10)
            .map(|ts| WriteEntry {
                series: k.clone(),
                ts,
                value: Value::F64(v),
            })
            .collect();
        let db = db.clone();
        async move { db.write(entries).await.unwrap() }
    };
    {
        let db = Tsdb::open(cfg.clone()).unwrap();
        write(&db, 0, 7000, 1.0).await;
        db.checkpoint().await.unwrap();
        // Generations 1..=7, one file and its rollups per partition; the late rewrite goes
        // to generation 8 and makes partition 0's rollups stale. Close starts no rebuild.
        write(&db, 0, 500, 2.0).await;
        db.close().await.unwrap();
    }
    let late = dir.path().join("blocks").join("000000000008.blk");
    let mut bytes = std::fs::read(&late).unwrap();
    bytes[36 + 8 + 5] ^= 0x20;
    std::fs::write(&late, &bytes).unwrap();
    let db = Tsdb::open(cfg).unwrap();
    let before = db.stats().rollup_files;
    // Floor 4000: partitions 0..4 go; partition 0's rebuild fails on the damaged chunk.
    assert!(db.enforce_retention(7000).await.unwrap() >= 4);
    assert_eq!(db.stats().rollup_files, before - 2, "{:?}", db.stats());
    assert_eq!(
        db.aggregate(&k, 0, 1000, 100, Aggregation::Count).unwrap(),
        vec![]
    );
    // The other dropped partitions answer from their (fresh) rollups.
    let kept = db
        .aggregate(&k, 1000, 2000, 100, Aggregation::Count)
        .unwrap();
    assert_eq!(kept.len(), 10);
    assert_eq!(kept[0].count, 10);
}

/// Per-device retention (a tenant's, a device's, a default, and a device kept forever on odd
/// seeds, so that the store-wide floor stays put there), with policy changes, late writes
/// (also below a device's floor), deletes, flushes, compactions, background rollup rebuilds
/// and restarts: raw reads hold exactly what each device's retention keeps, and aggregates
/// over whole rollup buckets still cover what it dropped, bit for bit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_device_retention_matches_the_model() {
    let seeds: u64 = std::env::var("WULIAN_TSDB_MODEL_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4);
    const ROLLUPS: [i64; 2] = [8_000, 12_000];
    let ms = |v: i64| Duration::from_millis(v as u64);
    for seed in 1..=seeds {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let mut model = Model::default();
        let mut cfg = config_auto(dir.path(), 2048 + 1024 * (seed % 3));
        cfg.rollup_1m_retention = Some(ms(ROLLUPS[0]));
        cfg.rollup_1h_retention = Some(ms(ROLLUPS[1]));
        let mut policy = RetentionPolicy::uniform(Some(ms(4_000)));
        policy.tenants.insert("t0".into(), Some(ms(2_500)));
        policy
            .devices
            .insert(("t0".into(), "d1".into()), Some(ms(1_200)));
        policy.devices.insert(
            ("t1".into(), "d2".into()),
            if seed % 2 == 1 { None } else { Some(ms(6_000)) },
        );
        let mut db = Tsdb::open(cfg.clone()).unwrap();
        let mut ts_hi = 100i64;
        let (mut rewritten, mut deleted, mut rollup_reads) = (0, 0, 0);
        for step in 0..400 {
            let ctx = format!("seed {seed} step {step}");
            match rng.below(100) {
                0..=63 => {
                    ts_hi += rng.below(150) as i64;
                    random_write_with(&db, &mut model, &mut rng, ts_hi, true).await;
                }
                64..=65 => {
                    let t = TENANTS[rng.below(2) as usize];
                    let d = DEVICES[rng.below(3) as usize];
                    db.delete_device(t, d).await.unwrap();
                    model.delete_device(t, d);
                }
                66..=71 => db.checkpoint().await.unwrap(),
                72..=74 => {
                    db.compact().await.unwrap();
                }
                75..=83 => {
                    let report = db.enforce_retention_policy(ts_hi, &policy).await.unwrap();
                    model.retain_policy(ts_hi, &policy, ROLLUPS);
                    assert_eq!(report.floor, model.floor, "{ctx}: {report:?}");
                    assert_eq!(
                        report.device_floors,
                        model.device_floors.len(),
                        "{ctx}: {report:?}"
                    );
                    assert_eq!(report.partitions_failed, 0, "{ctx}: {report:?}");
                    rewritten += report.partitions_rewritten;
                    deleted += report.files_deleted;
                }
                84 => {
                    // Policies change: retentions shorten or grow (floors never go down).
                    let t = TENANTS[rng.below(2) as usize];
                    let r = 800 + rng.below(4_000) as i64;
                    if rng.chance(50) {
                        policy.tenants.insert(t.into(), Some(ms(r)));
                    } else {
                        let d = DEVICES[rng.below(3) as usize];
                        policy.devices.insert((t.into(), d.into()), Some(ms(r)));
                    }
                }
                85..=87 => {
                    rollup_reads += db.stats().rollup_reads;
                    db.close().await.unwrap();
                    drop(db);
                    db = Tsdb::open(cfg.clone()).unwrap();
                }
                88..=89 => {
                    rollup_reads += db.stats().rollup_reads;
                    drop(db);
                    db = Tsdb::open(cfg.clone()).unwrap();
                }
                _ => check_span(&db, &model, &mut rng, &ctx, ts_hi as u64 + 500),
            }
        }
        check_span(
            &db,
            &model,
            &mut rng,
            &format!("seed {seed} end"),
            ts_hi as u64 + 500,
        );
        rollup_reads += db.stats().rollup_reads;
        eprintln!(
            "seed {seed}: {rewritten} partitions rewritten, {deleted} files deleted, {rollup_reads} rollup reads"
        );
        assert!(rewritten > 0, "seed {seed}: no partition was rewritten");
        if seed % 2 == 0 {
            // (With a device kept forever, random late writes keep every partition live.)
            assert!(deleted > 0, "seed {seed}: no file was deleted");
        }
        assert!(rollup_reads > 0, "seed {seed}: no rollup was read");
        db.close().await.unwrap();
        drop(db);
        let db = Tsdb::open(cfg).unwrap();
        let on_disk = |sub: &str| std::fs::read_dir(dir.path().join(sub)).unwrap().count() as u64;
        assert_eq!(on_disk("blocks"), db.stats().block_files, "seed {seed}");
        assert_eq!(on_disk("rollups"), db.stats().rollup_files, "seed {seed}");
        check_span(
            &db,
            &model,
            &mut rng,
            &format!("seed {seed} reopened"),
            ts_hi as u64 + 500,
        );
    }
}

/// Stops a per-device retention after each of its steps, as a crash would: the reopened store
/// shows either the data before it or after it (never a device's dropped points again), and
/// the next call finishes the job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_during_per_device_retention() {
    let ms = |v: i64| Duration::from_millis(v as u64);
    let mut policy = RetentionPolicy::uniform(Some(ms(5_000)));
    policy.tenants.insert("t0".into(), Some(ms(3_000)));
    policy
        .devices
        .insert(("t0".into(), "d1".into()), Some(ms(1_500)));
    // Kept forever, so the store-wide floor stays at 0 and only device floors act.
    policy.devices.insert(("t1".into(), "d2".into()), None);
    const NOW: i64 = 8_000;
    for point in [
        FaultPoint::CompactAfterWrite,
        FaultPoint::CompactAfterManifest,
        FaultPoint::RetentionAfterRewrite,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = Rng(31);
        let mut model = Model::default();
        {
            let db = Tsdb::open(config(dir.path())).unwrap();
            // One flush per partition, in time order: each partition gets one file and fresh
            // rollups, so the first step that can fail is the first rewrite. t1/d2 starts at
            // 2000: partitions 0 and 1 expire for every device (deleted whole).
            for part in 0..8 {
                let mut entries = Vec::new();
                for ts in (part * 1000..(part + 1) * 1000).step_by(50) {
                    for t in TENANTS {
                        for d in DEVICES {
                            if (t, d) == ("t1", "d2") && ts < 2_000 {
                                continue;
                            }
                            entries.push(WriteEntry {
                                series: SeriesKey::new(t, d, "temp"),
                                ts,
                                value: Value::F64((ts % 700) as f64 / 10.0),
                            });
                        }
                    }
                }
                assert!(model.write(&entries));
                db.write(entries).await.unwrap();
                db.checkpoint().await.unwrap();
            }
            inject_fault(dir.path(), point);
            let result = db.enforce_retention_policy(NOW, &policy).await;
            assert!(result.is_err(), "{point:?}: {result:?}");
        }
        let before = Model {
            series: model.series.clone(),
            ..Model::default()
        };
        model.retain_policy(NOW, &policy, [i64::MAX / 2, i64::MAX / 2]);
        let db = Tsdb::open(config(dir.path())).unwrap();
        match point {
            // Nothing stored yet: the step is lost, not the data.
            FaultPoint::CompactAfterWrite => check(&db, &before, &mut rng, "after write"),
            // The floors are stored with the first rewrite: everything below them is gone
            // at once, rewritten or not.
            _ => check(&db, &model, &mut rng, &format!("{point:?} reopened")),
        }
        let report = db.enforce_retention_policy(NOW, &policy).await.unwrap();
        check(&db, &model, &mut rng, &format!("{point:?} finished"));
        if point == FaultPoint::RetentionAfterRewrite {
            // Only the whole partitions were left; their chunks were hidden at open.
            assert_eq!(report.partitions_rewritten, 0, "{report:?}");
            assert_eq!(report.files_deleted, 2, "{report:?}");
        } else {
            assert!(report.partitions_rewritten > 0, "{report:?}");
        }
        // A write below a device's floor is discarded; above it, kept.
        let late = vec![
            WriteEntry {
                series: SeriesKey::new("t0", "d1", "temp"),
                ts: 5_100,
                value: Value::F64(1.0),
            },
            WriteEntry {
                series: SeriesKey::new("t1", "d2", "temp"),
                ts: 100,
                value: Value::F64(2.0),
            },
        ];
        assert!(model.write(&late));
        db.write(late).await.unwrap();
        db.checkpoint().await.unwrap();
        db.compact().await.unwrap();
        check(&db, &model, &mut rng, &format!("{point:?} late writes"));
        db.close().await.unwrap();
        drop(db);
        let db = Tsdb::open(config(dir.path())).unwrap();
        check(&db, &model, &mut rng, &format!("{point:?} reopened twice"));
        let on_disk = std::fs::read_dir(dir.path().join("blocks"))
            .unwrap()
            .count() as u64;
        assert_eq!(on_disk, db.stats().block_files, "{point:?}");
    }
}
