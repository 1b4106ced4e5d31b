//! How long `vehicle_status.json` takes for a big fleet: 100,000 bikes (10 % on a trip) built
//! and serialised to bytes, rotating ids included, 20 runs, median reported.
//!
//! Run with `cargo run -p wulian-bikeshare --example gbfs_bench --release`.

use std::time::{Duration, Instant};

use wulian_bikeshare::gbfs::{self, FeedContext, VehicleIdKey, VehicleView};

const BIKES: usize = 100_000;
const RUNS: usize = 20;

fn main() {
    let ctx = FeedContext {
        system_id: "bench_shanghai".into(),
        languages: vec!["zh-CN".into(), "en".into()],
        base_url: "http://127.0.0.1:8080/gbfs/v3/bench".into(),
        ttl_s: 0,
        now_ms: 1_767_225_600_000,
    };
    let key = VehicleIdKey::new(b"bench secret, 32 bytes or more..");
    // A fixed pseudo-random walk over Shanghai, so every run sees the same fleet.
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut unit = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed >> 11) as f64 / (1u64 << 53) as f64
    };
    let vehicles: Vec<VehicleView> = (0..BIKES)
        .map(|i| VehicleView {
            bike_id: format!("bike-{i:06}"),
            lat: 31.10 + unit() * 0.25,
            lon: 121.30 + unit() * 0.35,
            is_reserved: i % 53 == 0,
            is_disabled: i % 31 == 0,
            on_trip: i % 10 == 0,
            battery_pct: Some(80),
            vehicle_type_id: "bike".into(),
            pricing_plan_id: (i % 20 == 0).then(|| "monthly".to_string()),
            station_id: (i % 5 == 0).then(|| format!("p-{}", i % 997)),
            last_reported_ms: ctx.now_ms - (i as i64 * 37) % 300_000,
            trips_completed: (i as u64 * 7) % 500,
        })
        .collect();

    let mut times: Vec<Duration> = Vec::with_capacity(RUNS);
    let mut size = 0;
    for _ in 0..RUNS {
        let start = Instant::now();
        let feed = gbfs::vehicle_status(&ctx, &key, &vehicles);
        let bytes = match feed.to_json() {
            Ok(bytes) => bytes,
            Err(e) => {
                eprintln!("serialisation failed: {e}");
                std::process::exit(1);
            }
        };
        times.push(start.elapsed());
        size = bytes.len();
        std::hint::black_box(bytes);
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "vehicle_status.json, {BIKES} bikes ({} listed), {:.1} MB: median {:.1} ms (min {:.1}, max {:.1}) over {RUNS} runs",
        BIKES - BIKES / 10,
        size as f64 / 1e6,
        ms(times[RUNS / 2]),
        ms(times[0]),
        ms(times[RUNS - 1]),
    );
}
