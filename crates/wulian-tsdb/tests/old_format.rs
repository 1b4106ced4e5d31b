//! A store written by the previous on-disk format (block files version 1, rollup files
//! version 2, made by the engine as of commit d6730ab) opens and answers exactly like the data
//! it was made from. The fixture is `tests/data/v1-store.tar`; `write_fixture` below is how it
//! was made (`cargo test -p wulian-tsdb --test old_format -- --ignored` at that commit).

use std::path::Path;
use std::process::Command;

use wulian_tsdb::{Aggregation, Config, MAX_TIMESTAMP, Point, SeriesKey, Tsdb, Value, WriteEntry};

/// 2026-01-01T00:00:00Z.
const START: i64 = 1_767_225_600_000;

/// Deterministic data over two day partitions: decimal floats (1 Hz, 2 decimals), full
/// precision floats, integers, booleans, strings, and one series with awkward floats.
fn fixture() -> Vec<WriteEntry> {
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut out = Vec::new();
    let e = |device: &str, key: &str, ts: i64, value: Value| WriteEntry {
        series: SeriesKey::new("acme", device, key),
        ts,
        value,
    };
    let mut temp = 2000i64;
    for i in 0..4000i64 {
        // Two bursts: the end of day one and the start of day two.
        let ts = START + 86_400_000 - 2_000_000 + i * 1000;
        temp += (rnd() % 21) as i64 - 10;
        out.push(e("d1", "temp", ts, Value::F64(temp as f64 / 100.0)));
        if i % 3 == 0 {
            out.push(e("d1", "noise", ts, Value::F64(f64::from_bits(rnd() >> 2))));
            out.push(e("d2", "count", ts, Value::I64(rnd() as i64 >> 40)));
        }
        if i % 7 == 0 {
            out.push(e("d2", "open", ts, Value::Bool(rnd() % 2 == 0)));
            out.push(e("d2", "state", ts, Value::Str(format!("s{}", rnd() % 4))));
        }
    }
    let awkward = [
        0.0,
        -0.0,
        5e-324,
        2.2e-308,
        f64::MAX,
        f64::MIN,
        0.1,
        1.0 / 3.0,
        -7.25,
    ];
    for (i, v) in awkward.iter().enumerate() {
        out.push(e("d3", "odd", START + i as i64 * 10, Value::F64(*v)));
    }
    out
}

fn expected(key: &SeriesKey) -> Vec<Point> {
    let mut pts: Vec<Point> = fixture()
        .into_iter()
        .filter(|e| &e.series == key)
        .map(|e| Point {
            ts: e.ts,
            value: e.value,
        })
        .collect();
    pts.sort_by_key(|p| p.ts);
    pts
}

fn keys() -> Vec<SeriesKey> {
    [
        ("d1", "temp"),
        ("d1", "noise"),
        ("d2", "count"),
        ("d2", "open"),
        ("d2", "state"),
        ("d3", "odd"),
    ]
    .iter()
    .map(|(d, k)| SeriesKey::new("acme", *d, *k))
    .collect()
}

fn same(a: &[Point], b: &[Point]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.ts == y.ts
                && match (&x.value, &y.value) {
                    (Value::F64(p), Value::F64(q)) => p.to_bits() == q.to_bits(),
                    (p, q) => p == q,
                }
        })
}

#[test]
#[ignore = "writes the fixture; run at the commit that made the old format"]
fn write_fixture() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("v1-store");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let db = Tsdb::open(Config::new(&store)).unwrap();
    rt.block_on(async {
        for batch in fixture().chunks(1000) {
            db.write(batch.to_vec()).await.unwrap();
        }
        db.checkpoint().await.unwrap();
        db.close().await.unwrap();
    });
    drop(db);
    std::fs::remove_file(store.join("LOCK")).unwrap();
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/v1-store.tar");
    let status = Command::new("tar")
        .arg("-cf")
        .arg(&out)
        .arg("-C")
        .arg(dir.path())
        .arg("v1-store")
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn a_store_in_the_previous_format_opens_and_answers() {
    let dir = tempfile::tempdir().unwrap();
    let tar = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/v1-store.tar");
    let status = Command::new("tar")
        .arg("-xf")
        .arg(&tar)
        .arg("-C")
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(status.success());
    let store = dir.path().join("v1-store");
    let check = |db: &Tsdb| {
        for key in keys() {
            let got = db.range(&key, 0, MAX_TIMESTAMP + 1, usize::MAX).points;
            assert!(same(&got, &expected(&key)), "{key}");
            // A narrow window inside the data.
            let want: Vec<Point> = expected(&key)
                .into_iter()
                .filter(|p| p.ts >= START + 86_400_000 && p.ts < START + 86_400_000 + 60_000)
                .collect();
            let got = db
                .range(
                    &key,
                    START + 86_400_000,
                    START + 86_400_000 + 60_000,
                    usize::MAX,
                )
                .points;
            assert!(same(&got, &want), "{key} window");
        }
        // Hourly maxima of the decimal series (from the rollups where they are used).
        let key = SeriesKey::new("acme", "d1", "temp");
        let buckets = db
            .aggregate(
                &key,
                START,
                START + 2 * 86_400_000,
                3_600_000,
                Aggregation::Max,
            )
            .unwrap();
        let pts = expected(&key);
        assert_eq!(buckets.len(), 2);
        for b in &buckets {
            let max = pts
                .iter()
                .filter(|p| p.ts >= b.ts && p.ts < b.ts + 3_600_000)
                .filter_map(|p| p.value.as_f64())
                .fold(f64::MIN, f64::max);
            assert_eq!(b.value.as_f64(), Some(max));
        }
    };
    let mut config = Config::new(&store);
    config.compaction_files = 2;
    let db = Tsdb::open(config.clone()).unwrap();
    check(&db);
    // Compaction rewrites the old files in the current format; the answers stay the same.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        db.write(vec![WriteEntry {
            series: SeriesKey::new("acme", "d9", "x"),
            ts: START + 5,
            value: Value::I64(1),
        }])
        .await
        .unwrap();
        db.checkpoint().await.unwrap();
        db.compact().await.unwrap();
        db.close().await.unwrap();
    });
    drop(db);
    let db = Tsdb::open(config).unwrap();
    check(&db);
}
