//! Per-device retention policies on a store with the real layout (day partitions, 1-minute and
//! 1-hour rollups): which partitions are deleted whole and which are rewritten, what raw reads
//! and rollups answer afterwards, across a restart and late writes. (Random operations against
//! a model, and crashes between the steps, are in `model.rs`.)

use std::collections::HashMap;
use std::time::Duration;

use wulian_tsdb::{
    Aggregation, Bucket, Config, MAX_TIMESTAMP, RetentionPolicy, SeriesKey, Tsdb, Value, WriteEntry,
};

const DAY: i64 = 86_400_000;
const HOUR: i64 = 3_600_000;
/// Day 0 of the data (a partition start).
const T0: i64 = 20_000 * DAY;
/// Mid-day 40: the data covers days 0 to 39.
const NOW: i64 = T0 + 40 * DAY + 12 * HOUR;

fn days(n: u64) -> Option<Duration> {
    Some(Duration::from_secs(n * 86_400))
}

/// Tenant `a` keeps 7 days; the "tracker" profile's devices 2 days (in both tenants); the
/// installation default is 30 days; `b/forever` is kept forever.
fn policy() -> RetentionPolicy {
    let mut p = RetentionPolicy::uniform(days(30));
    p.tenants.insert("a".into(), days(7));
    p.devices.insert(("a".into(), "tracker".into()), days(2));
    p.devices.insert(("b".into(), "tracker".into()), days(2));
    p.devices.insert(("b".into(), "forever".into()), None);
    p
}

fn temp(tenant: &str, device: &str) -> SeriesKey {
    SeriesKey::new(tenant, device, "temp")
}

/// Every device's first day of data: `b/forever` starts on day 5, so days 0–4 expire for
/// every device (deleted whole) while days 5–37 keep it (rewritten).
fn devices() -> Vec<(SeriesKey, i64)> {
    vec![
        (temp("a", "plain"), 0),
        (temp("a", "tracker"), 0),
        (temp("b", "plain"), 0),
        (temp("b", "tracker"), 0),
        (temp("b", "forever"), 5),
    ]
}

/// A point every 10 minutes, 144 a day.
const PER_DAY: usize = 144;

fn value(ts: i64) -> Value {
    Value::F64(((ts / 600_000) % 400) as f64 / 10.0)
}

fn open(dir: &std::path::Path) -> Tsdb {
    let mut config = Config::new(dir);
    config.flush_age = None;
    Tsdb::open(config).unwrap()
}

async fn fill(db: &Tsdb) {
    let old = SeriesKey::new("a", "plain", "old");
    for day in 0..40 {
        let mut entries = Vec::new();
        for (k, first) in devices() {
            if day < first {
                continue;
            }
            for i in 0..PER_DAY as i64 {
                let ts = T0 + day * DAY + i * 600_000;
                entries.push(WriteEntry {
                    series: k.clone(),
                    ts,
                    value: value(ts),
                });
            }
        }
        if day < 20 {
            // A key the device stopped sending on day 20: all of it is past 7 days.
            entries.push(WriteEntry {
                series: old.clone(),
                ts: T0 + day * DAY,
                value: Value::I64(day),
            });
        }
        db.write(entries).await.unwrap();
    }
    // One flush: one block file and fresh rollups per day.
    db.checkpoint().await.unwrap();
}

/// The first raw timestamp each device keeps: the start of the day its cutoff falls in.
fn kept_from() -> HashMap<String, i64> {
    HashMap::from([
        ("a/plain".to_string(), T0 + 33 * DAY),
        ("a/tracker".to_string(), T0 + 38 * DAY),
        ("b/plain".to_string(), T0 + 10 * DAY),
        ("b/tracker".to_string(), T0 + 38 * DAY),
        ("b/forever".to_string(), T0 + 5 * DAY),
    ])
}

fn daily(db: &Tsdb, k: &SeriesKey, agg: Aggregation) -> Vec<Bucket> {
    db.aggregate(k, T0, T0 + 40 * DAY, DAY, agg).unwrap()
}

/// Raw reads hold exactly each device's kept days; daily sums (from hourly rollups where raw
/// data is gone) equal `sums`.
fn check(db: &Tsdb, sums: &HashMap<SeriesKey, Vec<Bucket>>, ctx: &str) {
    let from = kept_from();
    for (k, first) in devices() {
        let name = format!("{}/{}", k.tenant, k.device);
        let points = db.range(&k, 0, MAX_TIMESTAMP + 1, usize::MAX).points;
        assert_eq!(
            points[0].ts, from[&name],
            "{ctx}: first raw point of {name}"
        );
        let kept_days = (T0 + 40 * DAY - from[&name]) / DAY;
        assert_eq!(points.len(), kept_days as usize * PER_DAY, "{ctx}: {name}");
        assert_eq!(db.keys(&k.tenant, &k.device), vec!["temp"], "{ctx}: {name}");
        // Every day with data still aggregates, identically, whether its raw data is there.
        let got = daily(db, &k, Aggregation::Sum);
        assert_eq!(got.len(), 40 - first as usize, "{ctx}: {name}");
        assert_eq!(&got, &sums[&k], "{ctx}: daily sums of {name}");
        let hourly = db
            .aggregate(&k, T0 + 2 * DAY, T0 + 3 * DAY, HOUR, Aggregation::Count)
            .unwrap();
        if first <= 2 {
            assert_eq!(hourly.len(), 24, "{ctx}: {name}");
            assert!(hourly.iter().all(|b| b.count == 6), "{ctx}: {name}");
        }
    }
    let old = SeriesKey::new("a", "plain", "old");
    assert!(
        db.range(&old, 0, MAX_TIMESTAMP, 10).points.is_empty(),
        "{ctx}"
    );
    assert_eq!(db.latest("a", "plain").len(), 1, "{ctx}");
    // Its daily counts remain, from the rollups.
    assert_eq!(daily(db, &old, Aggregation::Count).len(), 20, "{ctx}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_policies_drop_the_right_partitions_and_keep_rollups() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    fill(&db).await;
    assert_eq!(db.stats().block_files, 40);
    let mut sums: HashMap<SeriesKey, Vec<Bucket>> = devices()
        .into_iter()
        .map(|(k, _)| {
            let s = daily(&db, &k, Aggregation::Sum);
            (k, s)
        })
        .collect();

    let report = db.enforce_retention_policy(NOW, &policy()).await.unwrap();
    // Days 0–4: every series expired, deleted whole. Days 5–37: b/forever (and others) still
    // there, rewritten without the expired series. Days 38–39: nothing expired.
    assert_eq!(report.files_deleted, 5, "{report:?}");
    assert_eq!(report.partitions_rewritten, 33, "{report:?}");
    assert_eq!(report.files_rewritten, 33, "{report:?}");
    assert_eq!(report.series_dropped, 1, "{report:?}");
    assert_eq!(report.partitions_failed, 0, "{report:?}");
    // Something is kept forever: no store-wide floor; four devices have their own.
    assert_eq!(report.floor, 0, "{report:?}");
    assert_eq!(report.device_floors, 4, "{report:?}");
    let stats = db.stats();
    assert_eq!(stats.block_files, 35, "{stats:?}");
    assert_eq!(stats.retention_files_deleted, 5);
    assert_eq!(stats.retention_partitions_rewritten, 33);
    assert_eq!(stats.device_floors, 4);
    check(&db, &sums, "after retention");

    // Idempotent.
    let again = db.enforce_retention_policy(NOW, &policy()).await.unwrap();
    assert_eq!(
        (
            again.files_deleted,
            again.partitions_rewritten,
            again.series_dropped
        ),
        (0, 0, 0),
        "{again:?}"
    );
    drop(db);
    let db = open(dir.path());
    check(&db, &sums, "reopened after retention");
    assert_eq!(db.stats().device_floors, 4);

    // Late writes: below a device's floor, discarded (also after a restart); for the device
    // kept forever, into a day whose files were deleted whole, kept — and that day's rollups
    // keep answering for the others.
    let late = vec![
        WriteEntry {
            series: temp("a", "tracker"),
            ts: T0 + 20 * DAY + 1,
            value: Value::F64(99.0),
        },
        WriteEntry {
            series: temp("b", "forever"),
            ts: T0 + DAY + 1,
            value: Value::F64(7.0),
        },
    ];
    let compactions = db.stats().compactions;
    db.write(late).await.unwrap();
    db.checkpoint().await.unwrap();
    let forever = temp("b", "forever");
    let day1 = db.range(&forever, T0 + DAY, T0 + 2 * DAY, 10).points;
    assert_eq!(day1.len(), 1);
    let mut with_late = daily(&db, &forever, Aggregation::Sum);
    assert_eq!(with_late.len(), 36);
    assert_eq!(with_late.remove(0).value, Value::F64(7.0));
    assert_eq!(with_late, sums[&forever]);
    sums.get_mut(&forever).unwrap().insert(
        0,
        Bucket {
            ts: T0 + DAY,
            value: Value::F64(7.0),
            count: 1,
        },
    );
    let check_sums = |db: &Tsdb, ctx: &str| {
        for (k, _) in devices() {
            assert_eq!(daily(db, &k, Aggregation::Sum), sums[&k], "{ctx}: {k}");
        }
    };
    // Day 1's rollups are stale now (a newer file), yet still serve the devices whose raw
    // data there is gone; the writer rebuilds them in the background, carrying those
    // devices' summaries forward.
    check_sums(&db, "late writes flushed");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while db.stats().compactions == compactions {
        assert!(std::time::Instant::now() < deadline, "day 1 not rebuilt");
        tokio::time::sleep(Duration::from_millis(20)).await;
        // Any write gives the writer a turn.
        db.write(vec![WriteEntry {
            series: SeriesKey::new("c", "nudge", "x"),
            ts: T0 + 39 * DAY,
            value: Value::F64(1.0),
        }])
        .await
        .unwrap();
    }
    check_sums(&db, "after the rebuild");
    db.close().await.unwrap();
    drop(db);
    let db = open(dir.path());
    check_sums(&db, "reopened after the rebuild");
    let on_disk = std::fs::read_dir(dir.path().join("blocks"))
        .unwrap()
        .count() as u64;
    assert_eq!(on_disk, db.stats().block_files);
    assert!(
        db.range(&temp("a", "tracker"), T0, T0 + 38 * DAY, 10)
            .points
            .is_empty()
    );
}

/// `enforce_retention(now)` is the uniform policy of `Config::retention`: one store-wide
/// floor, no device floors, whole files only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_config_retention_is_a_uniform_policy() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::new(dir.path());
    config.flush_age = None;
    config.retention = days(30);
    let db = Tsdb::open(config).unwrap();
    fill(&db).await;
    let deleted = db.enforce_retention(NOW).await.unwrap();
    assert_eq!(deleted, 10);
    let stats = db.stats();
    assert_eq!(stats.device_floors, 0);
    assert_eq!(stats.retention_partitions_rewritten, 0);
    let points = db
        .range(&temp("a", "plain"), 0, MAX_TIMESTAMP, usize::MAX)
        .points;
    assert_eq!(points[0].ts, T0 + 10 * DAY);
    // The same through the policy API finds nothing more to do.
    let report = db
        .enforce_retention_policy(NOW, &RetentionPolicy::uniform(days(30)))
        .await
        .unwrap();
    assert_eq!(report.files_deleted, 0);
    assert_eq!(report.floor, T0 + 10 * DAY);
}
