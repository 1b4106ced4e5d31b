//! Fence lookups: the R-tree index against a linear scan over every polygon.
//!
//! A synthetic 20 km × 20 km city: N small parking zones (30 m squares and hexagons), N/20
//! no-parking and N/100 no-riding zones, and four large service areas (96-vertex circles of
//! 7 km). Query points are half uniform over the city, half within 60 m of a parking zone, as
//! bikes are. For N = 100, 1,000 and 10,000 it times 1,000,000 `locate` calls, then the same
//! points through two linear scans (plain, and with a bounding-box test before each polygon)
//! and checks that every answer agrees; a scan stops after 1,000,000 calls or 5 s.
//!
//! `cargo run -p wulian-bikeshare --release --example fence_bench [-- QUERIES]`

use std::hint::black_box;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use wulian_bikeshare::fence::{Fence, FenceIndex, FenceKind, Placement};

const CITY: (f64, f64) = (31.23, 121.47);
const HALF_SIDE_M: f64 = 10_000.0;
const M_PER_DEG_LAT: f64 = 111_195.0;
const SCAN_BUDGET: Duration = Duration::from_secs(5);

/// SplitMix64, seeded: the same city and points on every run.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A point `dx_m`, `dy_m` metres east and north of `(lat, lon)`.
    fn offset(lat: f64, lon: f64, dx_m: f64, dy_m: f64) -> (f64, f64) {
        let dlat = dy_m / M_PER_DEG_LAT;
        let dlon = dx_m / (M_PER_DEG_LAT * lat.to_radians().cos());
        (lat + dlat, lon + dlon)
    }

    /// A uniform point in the square of `half_m` metres around `(lat, lon)`.
    fn around(&mut self, (lat, lon): (f64, f64), half_m: f64) -> (f64, f64) {
        let dx = (self.unit() * 2.0 - 1.0) * half_m;
        let dy = (self.unit() * 2.0 - 1.0) * half_m;
        Rng::offset(lat, lon, dx, dy)
    }
}

/// A regular polygon of `n` vertices, `radius_m` from centre to vertex, as a GeoJSON Polygon.
fn regular(center: (f64, f64), radius_m: f64, n: usize, phase: f64) -> Value {
    let mut ring: Vec<[f64; 2]> = (0..n)
        .map(|i| {
            let a = phase + i as f64 * std::f64::consts::TAU / n as f64;
            let (lat, lon) =
                Rng::offset(center.0, center.1, radius_m * a.cos(), radius_m * a.sin());
            [lon, lat]
        })
        .collect();
    ring.push(ring[0]);
    json!({"type": "Polygon", "coordinates": [ring]})
}

fn city(parking: usize, rng: &mut Rng) -> Vec<Fence> {
    let mut fences = Vec::new();
    let mut add = |name: String, kind, polygon: Value| {
        fences.push(Fence::new(name, kind, &polygon, Value::Null).expect("valid polygon"));
    };
    for (i, (dx, dy)) in [(-5e3, -5e3), (5e3, -5e3), (-5e3, 5e3), (5e3, 5e3)]
        .into_iter()
        .enumerate()
    {
        let c = Rng::offset(CITY.0, CITY.1, dx, dy);
        add(
            format!("service-{i}"),
            FenceKind::ServiceArea,
            regular(c, 7_000.0, 96, 0.0),
        );
    }
    for i in 0..parking {
        let c = rng.around(CITY, HALF_SIDE_M);
        // 30 m squares (radius 21 m to a corner) and 30 m hexagons.
        let polygon = if i % 2 == 0 {
            regular(c, 21.2, 4, std::f64::consts::FRAC_PI_4)
        } else {
            regular(c, 15.0, 6, 0.0)
        };
        add(format!("P{i}"), FenceKind::Parking, polygon);
    }
    for i in 0..parking / 20 {
        let c = rng.around(CITY, HALF_SIDE_M);
        add(
            format!("NP{i}"),
            FenceKind::NoParking,
            regular(c, 35.0, 4, 0.3),
        );
    }
    for i in 0..parking / 100 {
        let c = rng.around(CITY, HALF_SIDE_M);
        add(
            format!("NR{i}"),
            FenceKind::NoRiding,
            regular(c, 150.0, 8, 0.0),
        );
    }
    fences
}

fn points(fences: &[Fence], n: usize, rng: &mut Rng) -> Vec<(f64, f64)> {
    let parking: Vec<&Fence> = fences
        .iter()
        .filter(|f| f.kind == FenceKind::Parking)
        .collect();
    (0..n)
        .map(|i| {
            if i % 2 == 0 || parking.is_empty() {
                rng.around(CITY, HALF_SIDE_M)
            } else {
                let f = parking[(rng.next_u64() % parking.len() as u64) as usize];
                let (x0, y0, x1, y1) = f.polygon.bbox();
                rng.around(((y0 + y1) / 2.0, (x0 + x1) / 2.0), 60.0)
            }
        })
        .collect()
}

/// The linear scan: every polygon in turn, optionally behind its bounding box, with the same
/// rules as the index (first parking zone in order wins, no service area means everywhere).
fn locate_linear<'a>(
    fences: &'a [Fence],
    bboxes: Option<&[(f64, f64, f64, f64)]>,
    has_service_area: bool,
    lat: f64,
    lon: f64,
) -> Placement<'a> {
    let mut p = Placement {
        in_service_area: !has_service_area,
        ..Placement::OUTSIDE
    };
    for (i, f) in fences.iter().enumerate() {
        if let Some(b) = bboxes {
            let (x0, y0, x1, y1) = b[i];
            if lon < x0 || lon > x1 || lat < y0 || lat > y1 {
                continue;
            }
        }
        if !f.polygon.contains(lat, lon) {
            continue;
        }
        match f.kind {
            FenceKind::ServiceArea => p.in_service_area = true,
            FenceKind::Parking => p.parking = p.parking.or(Some(&f.name)),
            FenceKind::NoParking => p.no_parking = true,
            FenceKind::NoRiding => p.no_riding = true,
        }
    }
    p
}

fn rate(calls: usize, took: Duration) -> String {
    let per_s = calls as f64 / took.as_secs_f64();
    if per_s >= 1e6 {
        format!("{:>8.2} M/s", per_s / 1e6)
    } else {
        format!("{:>8.1} k/s", per_s / 1e3)
    }
}

fn main() {
    let queries: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    println!("fence_bench: {queries} queries per run, scans capped at {SCAN_BUDGET:?}");
    println!(
        "{:>7} {:>7} {:>9} | {:>12} {:>8} | {:>12} {:>8} | {:>12} {:>8} | {:>12} | mismatches",
        "parking",
        "zones",
        "build",
        "index",
        "parkable",
        "scan",
        "calls",
        "scan+bbox",
        "calls",
        "nearest"
    );
    for parking in [100, 1_000, 10_000] {
        let mut rng = Rng(0xF3_4CE5 ^ parking as u64);
        let fences = city(parking, &mut rng);
        let zones = fences.len();
        let pts = points(&fences, queries, &mut rng);

        let t = Instant::now();
        let index = FenceIndex::new(fences.clone());
        let build = t.elapsed();

        let t = Instant::now();
        let mut parkable = 0usize;
        for &(lat, lon) in &pts {
            parkable += usize::from(black_box(index.locate(lat, lon)).parkable());
        }
        let index_took = t.elapsed();

        let has_service_area = fences.iter().any(|f| f.kind == FenceKind::ServiceArea);
        let bboxes: Vec<_> = fences.iter().map(|f| f.polygon.bbox()).collect();
        let mut mismatches = 0usize;
        let mut scan = |with_bbox: bool| {
            let t = Instant::now();
            let mut calls = 0;
            for chunk in pts.chunks(1024) {
                for &(lat, lon) in chunk {
                    let b = with_bbox.then_some(bboxes.as_slice());
                    let p = black_box(locate_linear(&fences, b, has_service_area, lat, lon));
                    mismatches += usize::from(p != index.locate(lat, lon));
                }
                calls += chunk.len();
                if t.elapsed() > SCAN_BUDGET {
                    break;
                }
            }
            (calls, t.elapsed())
        };
        // The scans' timings include one index lookup per call for the agreement check; it is
        // tiny next to a scan and subtracted below at the index's measured rate.
        let per_index_call = index_took.as_secs_f64() / queries as f64;
        let net = |(calls, took): (usize, Duration)| {
            let net = took.as_secs_f64() - per_index_call * calls as f64;
            (calls, Duration::from_secs_f64(net.max(1e-9)))
        };
        let plain = net(scan(false));
        let boxed = net(scan(true));

        let nearest_calls = queries / 10;
        let t = Instant::now();
        let mut found = 0usize;
        for &(lat, lon) in &pts[..nearest_calls] {
            found += usize::from(black_box(index.nearest_parking(lat, lon, 500.0)).is_some());
        }
        let nearest_took = t.elapsed();

        println!(
            "{:>7} {:>7} {:>7.1}ms | {} {:>7.1}% | {} {:>8} | {} {:>8} | {} | {}",
            parking,
            zones,
            build.as_secs_f64() * 1e3,
            rate(queries, index_took),
            100.0 * parkable as f64 / queries as f64,
            rate(plain.0, plain.1),
            plain.0,
            rate(boxed.0, boxed.1),
            boxed.0,
            rate(nearest_calls, nearest_took),
            mismatches,
        );
        black_box(found);
        assert_eq!(mismatches, 0, "the index disagrees with the linear scan");
    }
}
