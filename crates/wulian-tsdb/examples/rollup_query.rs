//! Times a 30-day chart query: one device, one key, a point every 10 s for 30 days (259,200
//! points), read back as 720 hourly buckets, warm, through the Rust API. Compares the query
//! answered from the 1-hour rollups with the same query computed from the raw points (the
//! store reopened with rollup widths that do not tile an hour, so no rollup applies).
//!
//! ```text
//! cargo run -p wulian-tsdb --release --example rollup_query
//! ```

use std::time::{Duration, Instant};

use wulian_tsdb::{Aggregation, Config, Durability, SeriesKey, Tsdb, Value, WriteEntry};

const DAY: i64 = 86_400_000;
const DAYS: i64 = 30;
const STEP: i64 = 10_000;
const HOUR: i64 = 3_600_000;
/// 2026-01-01T00:00:00Z.
const START: i64 = 1_767_225_600_000;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let key = SeriesKey::new("acme", "boiler-1", "temp");
    let end = START + DAYS * DAY;
    let mut config = Config::new(dir.path());
    config.durability = Durability::Async {
        interval: Duration::from_millis(200),
    };
    config.flush_age = None;

    rt.block_on(async {
        let db = Tsdb::open(config.clone())?;
        let started = Instant::now();
        let mut batch = Vec::with_capacity(8640);
        let mut ts = START;
        while ts < end {
            // A smooth daily cycle at 0.01 °C resolution, as a real sensor reports it.
            let phase = ((ts - START) % DAY) as f64 / DAY as f64 * std::f64::consts::TAU;
            let v = (2150.0 + 300.0 * phase.sin()).round() / 100.0;
            batch.push(WriteEntry {
                series: key.clone(),
                ts,
                value: Value::F64(v),
            });
            if batch.len() == 8640 {
                db.write(std::mem::take(&mut batch)).await?;
            }
            ts += STEP;
        }
        if !batch.is_empty() {
            db.write(batch).await?;
        }
        db.checkpoint().await?;
        let st = db.stats();
        println!(
            "wrote {} points in {:?}: {} block files ({} bytes), {} rollup files ({} bytes)",
            (end - START) / STEP,
            started.elapsed(),
            st.block_files,
            st.block_bytes,
            st.rollup_files,
            st.rollup_bytes
        );
        db.close().await?;
        Ok::<_, wulian_tsdb::Error>(())
    })?;

    let rollups = Tsdb::open(config.clone())?;
    let with_rollups = time_query(&rollups, &key, end)?;
    let st = rollups.stats();
    drop(rollups);
    println!(
        "30 days as 720 hourly buckets, from rollups: median {:?}, p99 {:?}, max {:?}",
        with_rollups.median, with_rollups.p99, with_rollups.max
    );

    // The same data, rollups out of reach: every point is decoded and folded.
    let mut raw_config = config.clone();
    raw_config.rollup_widths = [Duration::from_secs(7), Duration::from_secs(7)];
    let raw = Tsdb::open(raw_config)?;
    let from_raw = time_query(&raw, &key, end)?;
    println!(
        "30 days as 720 hourly buckets, from raw points: median {:?}, p99 {:?}, max {:?}",
        from_raw.median, from_raw.p99, from_raw.max
    );
    println!(
        "rollups on disk: {} files, {} bytes ({:.1} bytes per raw point)",
        st.rollup_files,
        st.rollup_bytes,
        st.rollup_bytes as f64 / ((end - START) / STEP) as f64
    );
    Ok(())
}

struct Timing {
    median: Duration,
    p99: Duration,
    max: Duration,
}

/// Runs the 30-day hourly average 200 times after 5 warm-up runs and checks the answer.
fn time_query(db: &Tsdb, key: &SeriesKey, end: i64) -> Result<Timing, wulian_tsdb::Error> {
    let mut times = Vec::with_capacity(200);
    for i in 0..205 {
        let t = Instant::now();
        let buckets = db.aggregate(key, START, end, HOUR, Aggregation::Avg)?;
        let elapsed = t.elapsed();
        if buckets.len() != 720 || buckets.iter().any(|b| b.count != 360) {
            return Err(wulian_tsdb::Error::InvalidConfig {
                reason: format!("unexpected answer: {} buckets", buckets.len()),
            });
        }
        if i >= 5 {
            times.push(elapsed);
        }
    }
    times.sort_unstable();
    Ok(Timing {
        median: times[times.len() / 2],
        p99: times[times.len() * 99 / 100],
        max: times[times.len() - 1],
    })
}
