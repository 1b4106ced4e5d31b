//! Property-style tests: random writes (out of order, duplicates, kind mismatches), deletes,
//! flushes, compactions, clean and unclean restarts, injected crashes between the steps of a
//! flush or a compaction; after each step every query is compared with a trivial model.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Duration;

use wulian_tsdb::{
    Aggregation, Bucket, Config, Error, FaultPoint, Point, SeriesKey, Tsdb, Value, ValueKind,
    WriteEntry, inject_fault,
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

#[derive(Default)]
struct Model {
    series: BTreeMap<SeriesKey, (ValueKind, BTreeMap<i64, Value>)>,
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
    }

    fn drop_before(&mut self, floor: i64) {
        for s in self.series.values_mut() {
            s.1.retain(|ts, _| *ts >= floor);
        }
        self.series.retain(|_, s| !s.1.is_empty());
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
        let Some((kind, _)) = self.series.get(k) else {
            return Ok(Vec::new());
        };
        if agg.needs_numbers() && !kind.is_numeric() {
            return Err(());
        }
        let mut buckets: BTreeMap<i64, Vec<Point>> = BTreeMap::new();
        for p in self.range(k, from, to) {
            buckets.entry(p.ts - p.ts % interval).or_default().push(p);
        }
        Ok(buckets
            .into_iter()
            .map(|(ts, pts)| {
                let nums: Vec<f64> = pts.iter().filter_map(|p| p.value.as_f64()).collect();
                let value = match agg {
                    Aggregation::Min => {
                        Value::F64(nums.iter().copied().fold(f64::INFINITY, f64::min))
                    }
                    Aggregation::Max => {
                        Value::F64(nums.iter().copied().fold(f64::NEG_INFINITY, f64::max))
                    }
                    Aggregation::Sum => Value::F64(nums.iter().sum()),
                    Aggregation::Avg => Value::F64(nums.iter().sum::<f64>() / pts.len() as f64),
                    Aggregation::Count => Value::I64(pts.len() as i64),
                    Aggregation::First => pts[0].value.clone(),
                    Aggregation::Last => pts[pts.len() - 1].value.clone(),
                };
                Bucket {
                    ts,
                    value,
                    count: pts.len() as u64,
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

fn random_value(rng: &mut Rng, key: &str) -> Value {
    // Mostly the key's usual kind, sometimes another (refused, or widened int → float).
    let kind = if rng.chance(5) {
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
    c.partition = Duration::from_millis(1000);
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

fn check(db: &Tsdb, model: &Model, rng: &mut Rng, ctx: &str) {
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
        let from = rng.below(12_000) as i64;
        let to = from + rng.below(6_000) as i64;
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
        let interval = [1, 7, 100, 1000, 2500, 100_000][rng.below(6) as usize];
        for agg in Aggregation::ALL {
            let got = db.aggregate(&k, from, to, interval, agg);
            let want = model.aggregate(&k, from, to, interval, agg);
            match (got, want) {
                (Ok(g), Ok(w)) => {
                    assert_eq!(g, w, "{ctx}: {agg} of {k} [{from},{to}) / {interval}")
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
            value: random_value(rng, k),
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
        let (mut flushes, mut explicit) = (0u64, 0u64);
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
                    db.close().await.unwrap();
                    drop(db);
                    db = Tsdb::open(cfg.clone()).unwrap();
                }
                93..=96 => {
                    // Crash: no close (a background flush may be in progress).
                    flushes += db.stats().checkpoints;
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
        eprintln!("seed {seed}: {flushes} flushes, {explicit} explicit flush calls");
        db.close().await.unwrap();
        drop(db);
        let db = Tsdb::open(cfg).unwrap();
        check(&db, &model, &mut rng, &format!("seed {seed} reopened"));
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
    match db.aggregate(&k, 0, 1000, 100, Aggregation::Count) {
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
    model.drop_before(15_000);
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
