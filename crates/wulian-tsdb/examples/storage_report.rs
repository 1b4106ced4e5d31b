//! Measures what the storage layout costs: bytes per value on disk for a smooth 1 Hz sensor
//! series and a TSBS-"iot"-like random walk, bytes of memory per idle series, and ingest rate.
//!
//! ```text
//! cargo run -p wulian-tsdb --release --example storage_report
//! ```
//!
//! Memory is counted by a global allocator that tracks live heap bytes (hence the one
//! `unsafe` block: implementing `GlobalAlloc` requires it).
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use wulian_tsdb::{Config, Durability, SeriesKey, Tsdb, Value, WriteEntry, float_column_sizes};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; only a counter is kept.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

/// xorshift64*.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Uniform in [-1, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 52) as f64 - 1.0
    }
}

const START: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z, a partition boundary

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// 20 series, one day at 1 Hz: a daily temperature cycle plus slow drift and a little noise,
/// reported at 0.01 resolution (what a typical sensor sends).
fn smooth(series: usize) -> Vec<Vec<(i64, f64)>> {
    let mut rng = Rng(7);
    (0..series)
        .map(|s| {
            let mut drift = 0.0;
            (0..86_400i64)
                .map(|i| {
                    drift += rng.unit() * 0.002;
                    let day = (i as f64 / 86_400.0 * std::f64::consts::TAU).sin();
                    let v = 18.0 + s as f64 * 0.1 + 4.0 * day + drift + rng.unit() * 0.01;
                    (START + i * 1000, round2(v))
                })
                .collect()
        })
        .collect()
}

/// TSBS "iot"-like: 100 series (trucks × fields), one day at one reading per 10 s, each a
/// random walk with uniform steps in [-1, 1], clamped to [0, 100], truncated to 2 decimals.
fn random_walk(series: usize) -> Vec<Vec<(i64, f64)>> {
    let mut rng = Rng(11);
    (0..series)
        .map(|_| {
            let mut v = 50.0 + rng.unit() * 40.0;
            (0..8_640i64)
                .map(|i| {
                    v = (v + rng.unit()).clamp(0.0, 100.0);
                    (START + i * 10_000, (v * 100.0).trunc() / 100.0)
                })
                .collect()
        })
        .collect()
}

async fn disk_cost(name: &str, data: &[Vec<(i64, f64)>]) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = Config::new(dir.path());
    config.durability = Durability::Async {
        interval: Duration::from_millis(200),
    };
    let db = Tsdb::open(config).expect("open");
    let mut batch = Vec::with_capacity(1000);
    let mut points = 0u64;
    for (s, series) in data.iter().enumerate() {
        let key = SeriesKey::new("acme", format!("dev{s:04}"), "value");
        for &(ts, v) in series {
            batch.push(WriteEntry {
                series: key.clone(),
                ts,
                value: Value::F64(v),
            });
            if batch.len() == 1000 {
                points += batch.len() as u64;
                db.write(std::mem::take(&mut batch)).await.expect("write");
            }
        }
    }
    points += batch.len() as u64;
    db.write(batch).await.expect("write");
    let started = Instant::now();
    db.checkpoint().await.expect("flush");
    let flush = started.elapsed();
    let st = db.stats();
    db.close().await.expect("close");
    let (mut gorilla, mut decimal) = (0usize, 0usize);
    for series in data {
        let values: Vec<f64> = series.iter().map(|p| p.1).collect();
        let (g, d) = float_column_sizes(&values);
        gorilla += g;
        decimal += d.unwrap_or(g);
    }
    println!(
        "{name}: {points} values, {} block bytes in {} files = {:.3} bytes/value \
         (value column alone: Gorilla XOR {:.3} B/value, decimal mode {:.3} B/value); \
         flush of the whole head took {:.0} ms",
        st.block_bytes,
        st.block_files,
        st.block_bytes as f64 / points as f64,
        gorilla as f64 / points as f64,
        decimal as f64 / points as f64,
        flush.as_secs_f64() * 1000.0,
    );
}

async fn idle_series_memory(devices: usize, keys: usize) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = Config::new(dir.path());
    config.durability = Durability::Async {
        interval: Duration::from_millis(200),
    };
    let before = live();
    let db = Tsdb::open(config.clone()).expect("open");
    let mut batch = Vec::new();
    for d in 0..devices {
        for k in 0..keys {
            batch.push(WriteEntry {
                series: SeriesKey::new("acme", format!("device-{d:06}"), format!("key{k}")),
                ts: START + d as i64,
                value: Value::F64(21.5),
            });
        }
        if batch.len() >= 1000 {
            db.write(std::mem::take(&mut batch)).await.expect("write");
        }
    }
    db.write(batch).await.expect("write");
    db.checkpoint().await.expect("flush");
    let n = devices * keys;
    let after = live();
    println!(
        "idle series: {n} series, {:.0} bytes of heap per series after a flush \
         (series index, last-value cache, per-file chunk map)",
        (after - before) as f64 / n as f64
    );
    db.close().await.expect("close");
    drop(db);
    let before = live();
    let db = Tsdb::open(config).expect("reopen");
    let after = live();
    println!(
        "idle series: {:.0} bytes of heap per series after reopening (rebuilt from block indexes)",
        (after - before) as f64 / n as f64
    );
    drop(db);
}

async fn ingest_rate(durability: Durability, label: &str) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = Config::new(dir.path());
    config.durability = durability;
    // Small enough that background flushes (and compactions) happen during the run.
    config.checkpoint_bytes = 16 << 20;
    let db = Tsdb::open(config).expect("open");
    let tasks = 8;
    let batches = 1000;
    let per_batch = 100; // one device: 10 keys × 10 timestamps
    let started = Instant::now();
    let mut handles = Vec::new();
    for t in 0..tasks {
        let db = db.clone();
        handles.push(tokio::spawn(async move {
            let mut rng = Rng(t as u64 + 1);
            for b in 0..batches {
                let device = format!("dev{t}-{}", b % 50);
                let entries = (0..per_batch)
                    .map(|i| WriteEntry {
                        series: SeriesKey::new("acme", device.clone(), format!("k{}", i % 10)),
                        ts: START + (b * 10 + i / 10) as i64 * 1000,
                        value: Value::F64(round2(rng.unit() * 50.0)),
                    })
                    .collect();
                db.write(entries).await.expect("write");
            }
        }));
    }
    for h in handles {
        h.await.expect("task");
    }
    let elapsed = started.elapsed();
    let values = tasks * batches * per_batch;
    let st = db.stats();
    println!(
        "ingest ({label}): {values} values in {:.2} s = {:.0} values/s \
         ({tasks} writers, {per_batch} values per call, {} calls in {} group commits, \
         {} flushes during the run)",
        elapsed.as_secs_f64(),
        values as f64 / elapsed.as_secs_f64(),
        st.commit_requests,
        st.commit_groups,
        st.checkpoints
    );
    db.close().await.expect("close");
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    disk_cost("smooth 1 Hz sensor (20 series × 1 day)", &smooth(20)).await;
    disk_cost(
        "TSBS-iot-like random walk (100 series × 1 day at 10 s)",
        &random_walk(100),
    )
    .await;
    idle_series_memory(10_000, 10).await;
    ingest_rate(Durability::Sync, "Sync").await;
    ingest_rate(
        Durability::Async {
            interval: Duration::from_millis(100),
        },
        "Async 100 ms",
    )
    .await;
}
