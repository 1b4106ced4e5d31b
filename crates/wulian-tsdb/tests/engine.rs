//! End-to-end tests of the engine through its public API, on real files in temp directories.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use wulian_tsdb::{
    Aggregation, Bucket, Config, Durability, Error, MAX_TIMESTAMP, Point, SeriesKey, Tsdb, Value,
    ValueKind, WriteEntry,
};

fn key(device: &str, key: &str) -> SeriesKey {
    SeriesKey::new("acme", device, key)
}

fn entry(series: &SeriesKey, ts: i64, value: Value) -> WriteEntry {
    WriteEntry {
        series: series.clone(),
        ts,
        value,
    }
}

fn f(series: &SeriesKey, ts: i64, v: f64) -> WriteEntry {
    entry(series, ts, Value::F64(v))
}

fn open(dir: &Path) -> Tsdb {
    Tsdb::open(Config::new(dir)).unwrap()
}

fn all(db: &Tsdb, series: &SeriesKey) -> Vec<Point> {
    db.range(series, 0, MAX_TIMESTAMP + 1, usize::MAX).points
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir.join("wal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    v.sort();
    v
}

/// Block files (the flushed data, which replaced the first version's snapshots).
fn block_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir.join("blocks"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

fn ts_of(points: &[Point]) -> Vec<i64> {
    points.iter().map(|p| p.ts).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_then_query_with_out_of_order_and_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let temp = key("d1", "temp");
    let door = key("d1", "door");
    let s = db
        .write(vec![
            f(&temp, 30, 3.0),
            f(&temp, 10, 1.0),
            f(&temp, 20, 2.0),
            entry(&door, 15, Value::Str("open".into())),
        ])
        .await
        .unwrap();
    assert_eq!(s.points, 4);
    // Late point, and a duplicate that replaces an earlier value.
    db.write(vec![f(&temp, 5, 0.5), f(&temp, 20, 2.5)])
        .await
        .unwrap();

    let pts = all(&db, &temp);
    assert_eq!(ts_of(&pts), vec![5, 10, 20, 30]);
    assert_eq!(pts[2].value, Value::F64(2.5), "last write wins");

    // Half-open range and limit truncation.
    let r = db.range(&temp, 10, 30, 10);
    assert_eq!(ts_of(&r.points), vec![10, 20]);
    assert!(!r.truncated);
    let r = db.range(&temp, 0, 100, 3);
    assert_eq!(ts_of(&r.points), vec![5, 10, 20]);
    assert!(r.truncated);
    let r = db.range(&temp, 0, 100, 4);
    assert!(!r.truncated);
    assert!(db.range(&key("d1", "nope"), 0, 100, 10).points.is_empty());

    // Latest and keys come from the device index, sorted by key.
    assert_eq!(
        db.keys("acme", "d1"),
        vec!["door".to_string(), "temp".to_string()]
    );
    assert_eq!(
        db.latest("acme", "d1"),
        vec![
            (
                "door".to_string(),
                Point {
                    ts: 15,
                    value: Value::Str("open".into())
                }
            ),
            (
                "temp".to_string(),
                Point {
                    ts: 30,
                    value: Value::F64(3.0)
                }
            ),
        ]
    );
    assert!(db.keys("acme", "other").is_empty());
    assert!(db.latest("other", "d1").is_empty());
    assert_eq!(db.series_kind(&temp), Some(ValueKind::Float));
    assert_eq!(db.series_kind(&door), Some(ValueKind::String));
    assert_eq!(db.series_kind(&key("d1", "nope")), None);

    let st = db.stats();
    assert_eq!((st.series, st.devices, st.points), (2, 1, 5));
    assert!(st.wal_bytes > 0);
    db.close().await.unwrap();
}

/// Every acknowledged write in `Sync` mode waited for an fsync, and each fsync is counted in
/// a latency bucket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wals_fsyncs_are_counted_with_their_latency() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    assert_eq!(db.stats().wal_fsync.counts.iter().sum::<u64>(), 0);
    let k = key("d", "x");
    for ts in 1..=3 {
        db.write(vec![f(&k, ts, 1.0)]).await.unwrap();
    }
    let fsync = db.stats().wal_fsync;
    // Written one after another, each acknowledged only after its own fsync.
    assert!(fsync.counts.iter().sum::<u64>() >= 3, "{fsync:?}");
    assert_eq!(fsync.counts.len(), wulian_tsdb::FSYNC_BUCKETS_US.len() + 1);
    db.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_point_does_not_replace_latest_but_rewrite_of_latest_does() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let k = key("d", "x");
    db.write(vec![f(&k, 100, 1.0)]).await.unwrap();
    db.write(vec![f(&k, 50, 9.0)]).await.unwrap();
    assert_eq!(
        db.latest("acme", "d")[0].1,
        Point {
            ts: 100,
            value: Value::F64(1.0)
        }
    );
    db.write(vec![f(&k, 100, 2.0)]).await.unwrap();
    assert_eq!(
        db.latest("acme", "d")[0].1,
        Point {
            ts: 100,
            value: Value::F64(2.0)
        }
    );
    db.write(vec![f(&k, 101, 3.0)]).await.unwrap();
    assert_eq!(
        db.latest("acme", "d")[0].1,
        Point {
            ts: 101,
            value: Value::F64(3.0)
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_aggregation_with_epoch_aligned_buckets() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let k = key("d", "n");
    // Buckets of 10 ms: [0,10): 1,3 ; [10,20): nothing ; [20,30): 10,-4,6 ; [1000,1010): 7
    db.write(vec![
        f(&k, 25, -4.0),
        f(&k, 1, 1.0),
        f(&k, 9, 3.0),
        f(&k, 21, 10.0),
        f(&k, 29, 6.0),
        f(&k, 1005, 7.0),
    ])
    .await
    .unwrap();
    let agg = |a| db.aggregate(&k, 0, 2000, 10, a).unwrap();
    let values = |a| {
        agg(a)
            .into_iter()
            .map(|b| (b.ts, b.value, b.count))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        values(Aggregation::Min),
        vec![
            (0, Value::F64(1.0), 2),
            (20, Value::F64(-4.0), 3),
            (1000, Value::F64(7.0), 1)
        ]
    );
    assert_eq!(
        values(Aggregation::Max),
        vec![
            (0, Value::F64(3.0), 2),
            (20, Value::F64(10.0), 3),
            (1000, Value::F64(7.0), 1)
        ]
    );
    assert_eq!(
        values(Aggregation::Sum),
        vec![
            (0, Value::F64(4.0), 2),
            (20, Value::F64(12.0), 3),
            (1000, Value::F64(7.0), 1)
        ]
    );
    assert_eq!(
        values(Aggregation::Avg),
        vec![
            (0, Value::F64(2.0), 2),
            (20, Value::F64(4.0), 3),
            (1000, Value::F64(7.0), 1)
        ]
    );
    assert_eq!(
        values(Aggregation::Count),
        vec![
            (0, Value::I64(2), 2),
            (20, Value::I64(3), 3),
            (1000, Value::I64(1), 1)
        ]
    );
    assert_eq!(
        values(Aggregation::First),
        vec![
            (0, Value::F64(1.0), 2),
            (20, Value::F64(10.0), 3),
            (1000, Value::F64(7.0), 1)
        ]
    );
    assert_eq!(
        values(Aggregation::Last),
        vec![
            (0, Value::F64(3.0), 2),
            (20, Value::F64(6.0), 3),
            (1000, Value::F64(7.0), 1)
        ]
    );

    // A range starting mid-bucket: the bucket keeps its epoch-aligned start but only counts
    // points in range.
    assert_eq!(
        db.aggregate(&k, 5, 26, 10, Aggregation::Count).unwrap(),
        vec![
            Bucket {
                ts: 0,
                value: Value::I64(1),
                count: 1
            },
            Bucket {
                ts: 20,
                value: Value::I64(2),
                count: 2
            },
        ]
    );
    // Epoch alignment with a large interval: ts 1005 is in the bucket starting at 1000 for 500.
    assert_eq!(
        db.aggregate(&k, 0, 2000, 500, Aggregation::Count).unwrap()[1].ts,
        1000
    );
    assert!(matches!(
        db.aggregate(&k, 0, 2000, 0, Aggregation::Avg),
        Err(Error::InvalidInterval)
    ));
    assert!(
        db.aggregate(&key("d", "none"), 0, 10, 1, Aggregation::Avg)
            .unwrap()
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn integer_series_aggregate_to_floats() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let k = key("d", "count");
    db.write(vec![
        entry(&k, 1, Value::I64(2)),
        entry(&k, 2, Value::I64(5)),
    ])
    .await
    .unwrap();
    let b = db.aggregate(&k, 0, 10, 10, Aggregation::Avg).unwrap();
    assert_eq!(b[0].value, Value::F64(3.5));
    let b = db.aggregate(&k, 0, 10, 10, Aggregation::Last).unwrap();
    assert_eq!(b[0].value, Value::I64(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_numeric_for_strings_and_bools_but_count_first_last_work() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let s = key("d", "state");
    let b = key("d", "on");
    db.write(vec![
        entry(&s, 1, Value::Str("a".into())),
        entry(&s, 2, Value::Str("b".into())),
        entry(&b, 1, Value::Bool(true)),
    ])
    .await
    .unwrap();
    for agg in [
        Aggregation::Min,
        Aggregation::Max,
        Aggregation::Avg,
        Aggregation::Sum,
    ] {
        match db.aggregate(&s, 0, 10, 10, agg) {
            Err(Error::NotNumeric { key, kind }) => {
                assert_eq!(key, "state");
                assert_eq!(kind, ValueKind::String);
            }
            other => panic!("{agg}: {other:?}"),
        }
        assert!(matches!(
            db.aggregate(&b, 0, 10, 10, agg),
            Err(Error::NotNumeric {
                kind: ValueKind::Bool,
                ..
            })
        ));
    }
    let one = |agg| db.aggregate(&s, 0, 10, 10, agg).unwrap().remove(0).value;
    assert_eq!(one(Aggregation::Count), Value::I64(2));
    assert_eq!(one(Aggregation::First), Value::Str("a".into()));
    assert_eq!(one(Aggregation::Last), Value::Str("b".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn type_mismatch_rejects_the_whole_batch() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let temp = key("d", "temp");
    let other = key("d", "other");
    db.write(vec![f(&temp, 1, 1.0)]).await.unwrap();
    let wal_before = db.stats().wal_bytes;

    // The bad value is last; the new series and the good point before it must not appear.
    let err = db
        .write(vec![
            entry(&other, 1, Value::Bool(true)),
            f(&temp, 2, 2.0),
            entry(&temp, 3, Value::Str("x".into())),
        ])
        .await
        .unwrap_err();
    match err {
        Error::TypeMismatch {
            key,
            expected,
            actual,
        } => {
            assert_eq!(key, "temp");
            assert_eq!(expected, ValueKind::Float);
            assert_eq!(actual, ValueKind::String);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(ts_of(&all(&db, &temp)), vec![1]);
    assert_eq!(db.series_kind(&other), None);
    assert_eq!(db.stats().wal_bytes, wal_before, "nothing was logged");

    // Within one batch, the first value fixes the kind of a new series.
    let fresh = key("d", "fresh");
    assert!(matches!(
        db.write(vec![entry(&fresh, 1, Value::I64(1)), f(&fresh, 2, 2.0)])
            .await,
        Err(Error::TypeMismatch {
            expected: ValueKind::Integer,
            actual: ValueKind::Float,
            ..
        })
    ));
    assert_eq!(db.series_kind(&fresh), None);

    // Integers are widened for float series, not the other way round.
    db.write(vec![entry(&temp, 4, Value::I64(4))])
        .await
        .unwrap();
    assert_eq!(all(&db, &temp)[1].value, Value::F64(4.0));
    let ints = key("d", "ints");
    db.write(vec![entry(&ints, 1, Value::I64(1))])
        .await
        .unwrap();
    assert!(matches!(
        db.write(vec![f(&ints, 2, 2.0)]).await,
        Err(Error::TypeMismatch { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_values_and_timestamps_are_rejected_before_logging() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let k = key("d", "x");
    for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        assert!(matches!(
            db.write(vec![f(&k, 1, 1.0), f(&k, 2, bad)]).await,
            Err(Error::NonFiniteValue { .. })
        ));
    }
    for ts in [-1, MAX_TIMESTAMP + 1, i64::MIN, i64::MAX] {
        assert!(matches!(
            db.write(vec![f(&k, 1, 1.0), f(&k, ts, 1.0)]).await,
            Err(Error::TimestampOutOfRange { ts: got }) if got == ts
        ));
    }
    assert!(matches!(
        db.write(vec![f(&SeriesKey::new("acme", "d", ""), 1, 1.0)])
            .await,
        Err(Error::InvalidSeriesKey { .. })
    ));
    assert_eq!(db.series_kind(&k), None);
    assert_eq!(db.stats().points, 0);
    // Both ends of the accepted range work.
    db.write(vec![f(&k, 0, 1.0), f(&k, MAX_TIMESTAMP, 2.0)])
        .await
        .unwrap();
    assert_eq!(ts_of(&all(&db, &k)), vec![0, MAX_TIMESTAMP]);
    assert_eq!(db.write(Vec::new()).await.unwrap().points, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_without_close_keeps_acknowledged_writes() {
    for durability in [
        Durability::Sync,
        Durability::Async {
            interval: Duration::from_millis(20),
        },
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::new(dir.path());
        config.durability = durability;
        let k = key("d", "x");
        {
            let db = Tsdb::open(config.clone()).unwrap();
            for i in 0..100 {
                db.write(vec![
                    f(&k, i, i as f64),
                    entry(&key("d", "s"), i, Value::Str(format!("v{i}"))),
                ])
                .await
                .unwrap();
            }
            // Dropped without close(): no flush, the WAL is all there is.
        }
        assert!(block_files(dir.path()).is_empty());
        let db = Tsdb::open(config).unwrap();
        let pts = all(&db, &k);
        assert_eq!(pts.len(), 100, "{durability:?}");
        assert_eq!(
            pts[99],
            Point {
                ts: 99,
                value: Value::F64(99.0)
            }
        );
        assert_eq!(db.latest("acme", "d")[0].1.value, Value::Str("v99".into()));
        assert_eq!(db.stats().points, 200);
    }
}

/// Writes `n` single-point batches to `k`, drops the handle (no close), returns the segments.
async fn write_and_crash(dir: &Path, config: Config, k: &SeriesKey, n: i64) -> Vec<PathBuf> {
    let db = Tsdb::open(config).unwrap();
    for i in 0..n {
        db.write(vec![f(k, i, i as f64)]).await.unwrap();
    }
    drop(db);
    segments(dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torn_tail_garbage_is_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let k = key("d", "x");
    let segs = write_and_crash(dir.path(), Config::new(dir.path()), &k, 10).await;
    assert_eq!(segs.len(), 1);
    let good_len = fs::metadata(&segs[0]).unwrap().len();
    // A half-written record: a plausible length, then too few bytes.
    let mut file = OpenOptions::new().append(true).open(&segs[0]).unwrap();
    file.write_all(&[200, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7])
        .unwrap();
    drop(file);

    let db = open(dir.path());
    assert_eq!(ts_of(&all(&db, &k)), (0..10).collect::<Vec<_>>());
    assert!(db.stats().recovered_torn_tail);
    assert_eq!(
        fs::metadata(&segs[0]).unwrap().len(),
        good_len,
        "tail cut off"
    );
    // The log continues cleanly after the cut.
    db.write(vec![f(&k, 10, 10.0)]).await.unwrap();
    drop(db);
    let db = open(dir.path());
    assert_eq!(all(&db, &k).len(), 11);
    assert!(
        !db.stats().recovered_torn_tail,
        "a clean log needs no repair"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torn_tail_mid_record_and_bad_checksum_at_tail() {
    let dir = tempfile::tempdir().unwrap();
    let k = key("d", "x");
    let segs = write_and_crash(dir.path(), Config::new(dir.path()), &k, 10).await;
    let bytes = fs::read(&segs[0]).unwrap();

    // Cut the last record in half.
    fs::write(&segs[0], &bytes[..bytes.len() - 5]).unwrap();
    let db = open(dir.path());
    assert_eq!(ts_of(&all(&db, &k)), (0..9).collect::<Vec<_>>());
    assert!(db.stats().recovered_torn_tail);
    drop(db);

    // A complete last record with a flipped bit (and nothing after it) is torn too.
    let bytes = fs::read(&segs[0]).unwrap();
    let mut flipped = bytes.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 0x01;
    fs::write(&segs[0], &flipped).unwrap();
    let db = open(dir.path());
    assert_eq!(ts_of(&all(&db, &k)), (0..8).collect::<Vec<_>>());
    drop(db);

    // Zeros appended (a file extended but never written) are cut as well.
    let mut file = OpenOptions::new().append(true).open(&segs[0]).unwrap();
    file.write_all(&[0u8; 4096]).unwrap();
    drop(file);
    let db = open(dir.path());
    assert_eq!(all(&db, &k).len(), 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damage_before_valid_records_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let k = key("d", "x");
    let segs = write_and_crash(dir.path(), Config::new(dir.path()), &k, 10).await;
    let mut bytes = fs::read(&segs[0]).unwrap();
    // Flip a byte inside the first record's payload (header 16 + frame header 8 + 3).
    bytes[16 + 8 + 3] ^= 0xff;
    fs::write(&segs[0], &bytes).unwrap();
    match Tsdb::open(Config::new(dir.path())) {
        Err(Error::Corrupt { file, offset, .. }) => {
            assert_eq!(file, segs[0]);
            assert_eq!(offset, 16);
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corruption_in_a_middle_segment_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    let k = key("d", "x");
    let mut config = Config::new(dir.path());
    config.wal_segment_bytes = 200;
    let segs = write_and_crash(dir.path(), config.clone(), &k, 40).await;
    assert!(segs.len() >= 3, "{segs:?}");

    // Sanity: intact, it opens.
    drop(Tsdb::open(config.clone()).unwrap());

    // Truncating a middle segment mid-record is corruption, not a torn tail.
    let middle = &segs[1];
    let bytes = fs::read(middle).unwrap();
    fs::write(middle, &bytes[..bytes.len() - 3]).unwrap();
    match Tsdb::open(config.clone()) {
        Err(Error::Corrupt { file, .. }) => assert_eq!(&file, middle),
        other => panic!("{other:?}"),
    }
    fs::write(middle, &bytes).unwrap();
    drop(Tsdb::open(config.clone()).unwrap());

    // A missing middle segment is corruption too.
    fs::remove_file(middle).unwrap();
    assert!(matches!(Tsdb::open(config), Err(Error::Corrupt { .. })));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoint_cuts_the_wal_and_reopen_has_everything() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::new(dir.path());
    config.wal_segment_bytes = 4096;
    config.checkpoint_bytes = 16 * 1024;
    let k = key("d", "x");
    let s = key("d", "s");
    {
        let db = Tsdb::open(config.clone()).unwrap();
        for i in 0..2000i64 {
            // Out of order within each batch, plus a string series.
            db.write(vec![
                f(&k, 2 * i + 1, i as f64),
                f(&k, 2 * i, -(i as f64)),
                entry(&s, i, Value::Str(format!("state-{}", i % 7))),
            ])
            .await
            .unwrap();
        }
        let st = db.stats();
        assert!(st.checkpoints >= 3, "{st:?}");
        // Flushes run in the background: while one is being written, up to another
        // checkpoint_bytes of WAL may arrive before writes wait for it.
        assert!(st.wal_bytes <= 2 * config.checkpoint_bytes + 8192, "{st:?}");
        assert!(st.block_bytes > 0 && st.block_files > 0, "{st:?}");
        // Segments covered by a snapshot are gone; at most a few remain.
        assert!(
            segments(dir.path()).len() <= 12,
            "{:?}",
            segments(dir.path())
        );
        assert!(dir.path().join("MANIFEST").exists());
        // One day partition: flushes add files, compaction keeps them below 4.
        assert!(
            (1..4).contains(&block_files(dir.path()).len()),
            "{:?}",
            block_files(dir.path())
        );
        // Crash: the tail after the last flush is only in the WAL.
    }
    let db = Tsdb::open(config.clone()).unwrap();
    let pts = all(&db, &k);
    assert_eq!(pts.len(), 4000);
    assert!(pts.windows(2).all(|w| w[0].ts + 1 == w[1].ts));
    assert_eq!(
        pts[3999],
        Point {
            ts: 3999,
            value: Value::F64(1999.0)
        }
    );
    assert_eq!(all(&db, &s).len(), 2000);
    assert_eq!(db.stats().points, 6000);

    // Close checkpoints everything: the WAL is left with one empty segment.
    db.write(vec![f(&k, 10_000, 1.0)]).await.unwrap();
    db.close().await.unwrap();
    let segs = segments(dir.path());
    assert_eq!(segs.len(), 1);
    assert_eq!(fs::metadata(&segs[0]).unwrap().len(), 16);
    let db = Tsdb::open(config).unwrap();
    assert_eq!(all(&db, &k).len(), 4001);
    assert_eq!(db.stats().wal_bytes, 16);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_checkpoint_then_more_writes() {
    let dir = tempfile::tempdir().unwrap();
    let k = key("d", "x");
    {
        let db = open(dir.path());
        db.write(vec![f(&k, 1, 1.0)]).await.unwrap();
        db.checkpoint().await.unwrap();
        assert_eq!(db.stats().checkpoints, 1);
        // Nothing new: a second checkpoint has nothing to do.
        db.checkpoint().await.unwrap();
        assert_eq!(db.stats().checkpoints, 1);
        db.write(vec![f(&k, 2, 2.0)]).await.unwrap();
    }
    let db = open(dir.path());
    assert_eq!(ts_of(&all(&db, &k)), vec![1, 2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_device_survives_reopen_via_wal_and_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let gone = key("gone", "x");
    let kept = key("kept", "x");
    {
        let db = open(dir.path());
        db.write(vec![
            f(&gone, 1, 1.0),
            entry(&key("gone", "y"), 1, Value::Bool(true)),
            f(&kept, 1, 1.0),
        ])
        .await
        .unwrap();
        db.delete_device("acme", "gone").await.unwrap();
        assert!(db.keys("acme", "gone").is_empty());
        assert!(db.latest("acme", "gone").is_empty());
        assert_eq!(db.stats().series, 1);
        // A deleted series can come back with another kind.
        db.write(vec![entry(&gone, 5, Value::Str("back".into()))])
            .await
            .unwrap();
        db.delete_device("acme", "gone").await.unwrap();
        db.delete_device("acme", "never-existed").await.unwrap();
    }
    // Replayed from the WAL.
    let db = open(dir.path());
    assert!(db.keys("acme", "gone").is_empty());
    assert_eq!(all(&db, &kept).len(), 1);
    db.close().await.unwrap();
    // Loaded from the snapshot written at close.
    let db = open(dir.path());
    assert!(db.keys("acme", "gone").is_empty());
    assert_eq!(db.keys("acme", "kept"), vec!["x".to_string()]);
    assert_eq!(db.stats().series, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_and_rewrite_in_one_group_respects_order() {
    let dir = tempfile::tempdir().unwrap();
    let k = key("d", "x");
    let db = open(dir.path());
    db.write(vec![f(&k, 1, 1.0)]).await.unwrap();
    // Issued concurrently so they are likely to share a group; the outcome must match the
    // order they reached the writer, whatever the grouping.
    let (a, b) = tokio::join!(
        db.delete_device("acme", "d"),
        db.write(vec![entry(&k, 2, Value::Str("s".into()))])
    );
    a.unwrap();
    match b {
        Ok(_) => assert_eq!(db.series_kind(&k), Some(ValueKind::String)),
        Err(Error::TypeMismatch { .. }) => assert_eq!(db.series_kind(&k), None),
        Err(other) => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commit_acks_many_concurrent_writers() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let mut tasks = Vec::new();
    for t in 0..50i64 {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..20i64 {
                let s = db
                    .write(vec![f(
                        &key(&format!("dev{t}"), "x"),
                        i,
                        (t * 100 + i) as f64,
                    )])
                    .await
                    .unwrap();
                assert_eq!(s.points, 1);
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    for t in 0..50i64 {
        let pts = all(&db, &key(&format!("dev{t}"), "x"));
        assert_eq!(ts_of(&pts), (0..20).collect::<Vec<_>>());
    }
    let st = db.stats();
    eprintln!(
        "group commit: {} requests in {} groups",
        st.commit_requests, st.commit_groups
    );
    assert_eq!(st.points, 1000);
    assert_eq!(st.commit_requests, 1000);
    assert!(st.commit_groups <= st.commit_requests);
    drop(db);
    let db = open(dir.path());
    assert_eq!(db.stats().points, 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_writes_of_different_kinds_cannot_both_win() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    for round in 0..20 {
        let k = key("race", &format!("k{round}"));
        let (a, b) = tokio::join!(
            db.write(vec![f(&k, 1, 1.0)]),
            db.write(vec![entry(&k, 2, Value::Bool(true))])
        );
        assert!(a.is_ok() != b.is_ok(), "round {round}: {a:?} {b:?}");
        assert_eq!(all(&db, &k).len(), 1);
    }
}

/// In sync mode a group is admitted while the previous one waits for its fsync (not yet in the
/// head): the kinds that group establishes, and its deletions, must still bind the next one.
/// Background writers keep the pipeline full so that the racing writes land in consecutive
/// groups; every acknowledged write must be readable at once and after a reopen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kinds_of_a_group_awaiting_its_fsync_bind_the_next_group() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::new(dir.path());
    config.durability = Durability::Sync;
    let db = Tsdb::open(config.clone()).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for t in 0..4i64 {
        let (db, stop) = (db.clone(), std::sync::Arc::clone(&stop));
        load.push(tokio::spawn(async move {
            let k = key(&format!("load{t}"), "x");
            let mut ts = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let batch: Vec<_> = (ts..ts + 500).map(|i| f(&k, i, i as f64)).collect();
                db.write(batch).await.unwrap();
                assert_eq!(all(&db, &k).len() as i64, ts + 500, "read your writes");
                ts += 500;
            }
            ts
        }));
    }
    let mut won = Vec::new();
    for round in 0..200 {
        let k = key("race", &format!("k{round}"));
        let (a, b) = tokio::join!(
            db.write(vec![f(&k, 1, 1.0)]),
            db.write(vec![entry(&k, 2, Value::Bool(true))])
        );
        assert!(a.is_ok() != b.is_ok(), "round {round}: {a:?} {b:?}");
        for r in [&a, &b] {
            if let Err(e) = r {
                assert!(matches!(e, Error::TypeMismatch { .. }), "{e:?}");
            }
        }
        assert_eq!(all(&db, &k).len(), 1);
        won.push((k, if a.is_ok() { 1 } else { 2 }));
        // A deletion followed by a write of another kind: fine in whatever groups they land.
        let device = format!("del{round}");
        let d = key(&device, "y");
        db.write(vec![f(&d, 1, 1.0)]).await.unwrap();
        let (x, y) = tokio::join!(
            db.delete_device("acme", &device),
            db.write(vec![entry(&d, 2, Value::Str("s".into()))])
        );
        x.unwrap();
        match y {
            Ok(_) => assert_eq!(db.series_kind(&d), Some(ValueKind::String)),
            Err(Error::TypeMismatch { .. }) => assert_eq!(db.series_kind(&d), None),
            Err(other) => panic!("{other:?}"),
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut written = Vec::new();
    for task in load {
        written.push(task.await.unwrap());
    }
    assert!(db.stats().commit_groups > 1);
    drop(db);
    let db = Tsdb::open(config).unwrap();
    for (t, n) in written.iter().enumerate() {
        assert_eq!(all(&db, &key(&format!("load{t}"), "x")).len() as i64, *n);
    }
    for (k, ts) in won {
        assert_eq!(ts_of(&all(&db, &k)), vec![ts]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_stops_writes_and_releases_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let k = key("d", "x");
    let db = open(dir.path());
    assert!(matches!(
        Tsdb::open(Config::new(dir.path())),
        Err(Error::Locked { .. })
    ));
    db.write(vec![f(&k, 1, 1.0)]).await.unwrap();
    db.close().await.unwrap();
    db.close().await.unwrap();
    assert!(matches!(
        db.write(vec![f(&k, 2, 2.0)]).await,
        Err(Error::Closed)
    ));
    assert!(matches!(
        db.delete_device("acme", "d").await,
        Err(Error::Closed)
    ));
    // Reads still work on what is in memory.
    assert_eq!(all(&db, &k).len(), 1);
    // The old handle is still alive, but the directory is free again.
    let again = open(dir.path());
    assert_eq!(all(&again, &k).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_durability_acks_and_persists() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::new(dir.path());
    config.durability = Durability::Async {
        interval: Duration::from_millis(5),
    };
    let k = key("d", "x");
    let db = Tsdb::open(config.clone()).unwrap();
    for i in 0..50 {
        db.write(vec![f(&k, i, 1.0)]).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(30)).await;
    db.close().await.unwrap();
    drop(db);
    let db = Tsdb::open(config).unwrap();
    assert_eq!(all(&db, &k).len(), 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torn_segment_header_after_rotation_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let k = key("d", "x");
    let segs = write_and_crash(dir.path(), Config::new(dir.path()), &k, 3).await;
    // A crash while creating the next segment leaves a short file.
    let next = segs[0].with_file_name("000000000002.wal");
    for torn in [&b"WLN"[..], &[0u8; 16][..]] {
        fs::write(&next, torn).unwrap();
        let db = open(dir.path());
        assert_eq!(all(&db, &k).len(), 3);
        assert!(db.stats().recovered_torn_tail);
        assert!(!next.exists());
    }
    let db = open(dir.path());
    db.write(vec![f(&k, 3, 3.0)]).await.unwrap();
    drop(db);
    assert_eq!(all(&open(dir.path()), &k).len(), 4);
    // A damaged header that is not a torn creation refuses to open.
    let mut bytes = fs::read(&segs[0]).unwrap();
    bytes[0] = b'X';
    fs::write(&segs[0], &bytes).unwrap();
    assert!(matches!(
        Tsdb::open(Config::new(dir.path())),
        Err(Error::Corrupt { offset: 0, .. })
    ));
}

/// With the real widths (1 min, 1 h) and day partitions: hourly aggregates over three days are
/// read from rollups, a late rewrite into a flushed day is seen at once (the day's rollups go
/// stale and its raw points answer), the writer then re-summarises that closed day in the
/// background, and raw retention keeps the day answering from its rollups.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hourly_aggregates_come_from_rollups_and_follow_late_writes() {
    const DAY: i64 = 86_400_000;
    const HOUR: i64 = 3_600_000;
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::new(dir.path());
    config.retention = Some(Duration::from_secs(2 * 86_400));
    config.flush_age = None;
    let db = Tsdb::open(config.clone()).unwrap();
    let k = key("boiler", "temp");
    let t0 = 20_000 * DAY;
    // Three days at 30 s, values with two decimals.
    let entries: Vec<WriteEntry> = (0..3 * 2880)
        .map(|i| f(&k, t0 + i * 30_000, (i % 500) as f64 / 100.0))
        .collect();
    db.write(entries).await.unwrap();
    db.checkpoint().await.unwrap();
    assert_eq!(db.stats().rollup_files, 6, "{:?}", db.stats());
    let hourly = |db: &Tsdb| {
        db.aggregate(&k, t0, t0 + 3 * DAY, HOUR, Aggregation::Sum)
            .unwrap()
    };
    let before = db.stats().rollup_reads;
    let first = hourly(&db);
    assert_eq!(first.len(), 72);
    assert!(first.iter().all(|b| b.count == 120));
    assert_eq!(db.stats().rollup_reads, before + 3);

    // A late rewrite into day 0 (hour 5), and a new day 3 so that day 0 is closed.
    db.write(vec![
        f(&k, t0 + 5 * HOUR + 30_000, 1000.0),
        f(&k, t0 + 3 * DAY, 1.0),
    ])
    .await
    .unwrap();
    let second = hourly(&db);
    assert_eq!(second[5].count, 120);
    assert!(second[5].value != first[5].value);
    // Unflushed points in day 0: day 0 comes from raw points, days 1 and 2 from rollups.
    assert_eq!(db.stats().rollup_reads, before + 5);
    db.checkpoint().await.unwrap();
    // Day 0 now has two files and a stale rollup; the writer re-summarises it in the
    // background (a compaction, as it has two files) after the next group commit.
    db.write(vec![f(&k, t0 + 3 * DAY + 1, 1.0)]).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let reads = db.stats().rollup_reads;
        let again = hourly(&db);
        assert_eq!(again, second);
        if db.stats().rollup_reads == reads + 3 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "day 0 was not re-summarised"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        db.write(vec![f(&k, t0 + 3 * DAY + 2, 1.0)]).await.unwrap();
    }

    // Raw retention drops days 0 and 1; their hourly buckets still answer, identically.
    let dropped = db.enforce_retention(t0 + 4 * DAY).await.unwrap();
    assert!(dropped >= 2, "{dropped}");
    assert!(db.range(&k, t0, t0 + 2 * DAY, 10).points.is_empty());
    assert_eq!(hourly(&db), second);
    drop(db);
    let db = Tsdb::open(config).unwrap();
    assert_eq!(hourly(&db), second);
    // A range starting mid-hour gets no partial bucket where only rollups are left.
    let cut = db
        .aggregate(
            &k,
            t0 + 30 * 60_000,
            t0 + 2 * HOUR,
            HOUR,
            Aggregation::Count,
        )
        .unwrap();
    assert_eq!(cut.len(), 1);
    assert_eq!(cut[0].ts, t0 + HOUR);
}
