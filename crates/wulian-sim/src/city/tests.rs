use std::collections::HashSet;

use serde_json::Value;
use wulian_rules::geo::{Polygon, distance_m};

use super::*;
use crate::bike::Lock;
use crate::config::{CityConfig, LockRealism};

const HANGZHOU: (f64, f64) = (30.2590, 120.1490);

fn city() -> CityMap {
    CityMap::generate(HANGZHOU, 4_000.0, 600, 7)
}

fn polygons(map: &CityMap, kind: &str) -> Vec<Polygon> {
    map.zones()
        .iter()
        .filter(|z| z.kind == kind)
        .map(|z| Polygon::from_json(&z.polygon).unwrap())
        .collect()
}

fn water(map: &CityMap) -> Vec<Polygon> {
    map.basemap_geojson()["features"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["properties"]["layer"] == "water")
        .map(|f| Polygon::from_json(&f["geometry"]).unwrap())
        .collect()
}

/// The polygon's outer ring in metres east and north of the city's centre.
fn metres(p: &Polygon) -> Vec<(f64, f64)> {
    let k = M_PER_DEG * HANGZHOU.0.to_radians().cos();
    p.rings()[0]
        .iter()
        .map(|&(lon, lat)| ((lon - HANGZHOU.1) * k, (lat - HANGZHOU.0) * M_PER_DEG))
        .collect()
}

/// Whether two convex polygons overlap (separating-axis test).
fn overlap(a: &[(f64, f64)], b: &[(f64, f64)]) -> bool {
    for poly in [a, b] {
        for i in 0..poly.len() {
            let (p, q) = (poly[i], poly[(i + 1) % poly.len()]);
            let axis = (q.1 - p.1, p.0 - q.0);
            let project = |ring: &[(f64, f64)]| {
                ring.iter()
                    .map(|v| v.0 * axis.0 + v.1 * axis.1)
                    .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| {
                        (lo.min(x), hi.max(x))
                    })
            };
            let ((a0, a1), (b0, b1)) = (project(a), project(b));
            if a1 < b0 || b1 < a0 {
                return false;
            }
        }
    }
    true
}

#[test]
fn zones_are_valid_fences_in_the_right_numbers() {
    let map = city();
    let count = |kind: &str| map.zones().iter().filter(|z| z.kind == kind).count();
    assert_eq!(count("service_area"), 1);
    assert_eq!(count("parking"), 600);
    assert!(
        (3..=6).contains(&count("no_parking")),
        "{}",
        count("no_parking")
    );
    assert!(
        (1..=2).contains(&count("no_riding")),
        "{}",
        count("no_riding")
    );
    assert_eq!(
        map.zones().len(),
        1 + 600 + count("no_parking") + count("no_riding")
    );
    assert_eq!(map.zones()[0].name, "service-area");
    assert_eq!(map.zones()[1].name, "parking-0001");
    let mut names = HashSet::new();
    for zone in map.zones() {
        assert!(names.insert(zone.name.clone()), "duplicate {}", zone.name);
        assert!(
            zone.name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
            "{}",
            zone.name
        );
        assert!(zone.properties.is_object(), "{}", zone.name);
        assert_eq!(zone.polygon["type"], "Polygon");
        let ring = zone.polygon["coordinates"][0].as_array().unwrap();
        assert_eq!(ring.first(), ring.last(), "{} is closed", zone.name);
        // Counter-clockwise, as RFC 7946 wants exterior rings.
        let area2: f64 = ring
            .windows(2)
            .map(|w| {
                let (a, b) = (&w[0], &w[1]);
                a[0].as_f64().unwrap() * b[1].as_f64().unwrap()
                    - b[0].as_f64().unwrap() * a[1].as_f64().unwrap()
            })
            .sum();
        assert!(area2 > 0.0, "{} is counter-clockwise", zone.name);
        // The bike share's own reading of a zone accepts it.
        wulian_bikeshare::fence::Fence::from_zone(
            &zone.name,
            &zone.kind,
            &zone.polygon,
            &zone.properties,
        )
        .unwrap()
        .unwrap();
    }
    let parking = map.zones().iter().find(|z| z.kind == "parking").unwrap();
    assert!((10..=16).contains(&parking.properties["capacity"].as_u64().unwrap()));
    assert!(
        parking.properties["district"]
            .as_str()
            .unwrap()
            .contains(' ')
    );
    assert!(parking.properties["street"].is_string());
}

#[test]
fn parking_zones_are_inside_the_city_dry_apart_and_street_sized() {
    let map = city();
    let service = &polygons(&map, "service_area")[0];
    let water = water(&map);
    assert_eq!(water.len(), 2);
    let mut others = polygons(&map, "no_parking");
    others.extend(polygons(&map, "no_riding"));
    let parking = polygons(&map, "parking");
    let rings: Vec<Vec<(f64, f64)>> = parking.iter().map(metres).collect();
    for (p, ring) in parking.iter().zip(&rings) {
        let corners = p.rings()[0].clone();
        for &(lon, lat) in &corners {
            assert!(
                service.contains(lat, lon),
                "corner outside the service area"
            );
            assert!(
                !water.iter().any(|w| w.contains(lat, lon)),
                "corner in water"
            );
            assert!(
                !others.iter().any(|o| o.contains(lat, lon)),
                "corner in a fence"
            );
        }
        let (a, b, c) = (corners[0], corners[1], corners[2]);
        let (side1, side2) = (
            distance_m(a.1, a.0, b.1, b.0),
            distance_m(b.1, b.0, c.1, c.0),
        );
        let (long, short) = (side1.max(side2), side1.min(side2));
        // Haversine against the flat frame, and coordinates rounded to 0.1 m.
        assert!(
            (15.7..=24.3).contains(&long) && (5.7..=8.3).contains(&short),
            "{long} × {short}"
        );
        assert_eq!(ring.len(), 4);
    }
    // No obstacle vertex pokes into a parking zone either (the corner test above cannot see
    // a thin obstacle crossing a zone).
    for obstacle in water.iter().chain(&others) {
        for &(lon, lat) in &obstacle.rings()[0] {
            assert!(!parking.iter().any(|p| p.contains(lat, lon)));
        }
    }
    for i in 0..rings.len() {
        for j in i + 1..rings.len() {
            assert!(!overlap(&rings[i], &rings[j]), "parking {i} overlaps {j}");
        }
    }
    // Denser downtown: the inner half of the radius (a quarter of the area) holds well over a
    // quarter of the zones.
    let inner = map
        .parking_spots()
        .iter()
        .filter(|&&(lat, lon)| distance_m(lat, lon, HANGZHOU.0, HANGZHOU.1) < 2_000.0)
        .count();
    assert!(inner * 100 / 600 > 30, "{inner} of 600 downtown");
}

#[test]
fn other_fences_are_dry_and_sized_as_asked() {
    let map = city();
    let water = water(&map);
    for zone in map.zones().iter().filter(|z| z.kind.starts_with("no_")) {
        let p = Polygon::from_json(&zone.polygon).unwrap();
        for &(lon, lat) in &p.rings()[0] {
            assert!(
                !water.iter().any(|w| w.contains(lat, lon)),
                "{} in water",
                zone.name
            );
        }
        if zone.kind == "no_parking" {
            let ring = &p.rings()[0];
            let side = |i: usize| {
                let (a, b) = (ring[i], ring[(i + 1) % 4]);
                distance_m(a.1, a.0, b.1, b.0)
            };
            for i in 0..2 {
                assert!(
                    (79.0..=151.0).contains(&side(i)),
                    "{}: {}",
                    zone.name,
                    side(i)
                );
            }
        }
    }
    let names: Vec<&str> = map.zones().iter().map(|z| z.name.as_str()).collect();
    assert!(names.contains(&"no-riding-lakeside-promenade"));
    assert!(names.contains(&"no-parking-west-station"));
}

#[test]
fn parking_spots_are_the_zones_centres() {
    let map = city();
    let spots = map.parking_spots();
    let parking = polygons(&map, "parking");
    assert_eq!(spots.len(), parking.len());
    for (&(lat, lon), zone) in spots.iter().zip(&parking) {
        assert!(zone.contains(lat, lon));
    }
}

#[test]
fn the_basemap_has_districts_water_and_streets() {
    let map = city();
    let basemap = map.basemap_geojson();
    assert_eq!(basemap["type"], "FeatureCollection");
    let features = basemap["features"].as_array().unwrap();
    let layer = |name: &str| -> Vec<&Value> {
        features
            .iter()
            .filter(|f| f["properties"]["layer"] == name)
            .collect()
    };
    let (districts, water, streets) = (layer("district"), layer("water"), layer("street"));
    assert_eq!(
        districts.len() + water.len() + streets.len(),
        features.len()
    );
    assert!((5..=7).contains(&districts.len()), "{}", districts.len());
    assert_eq!(water.len(), 2);
    assert!(streets.len() > 50, "{}", streets.len());
    let district_polygons: Vec<Polygon> = districts
        .iter()
        .map(|f| Polygon::from_json(&f["geometry"]).unwrap())
        .collect();
    let names: HashSet<&str> = districts
        .iter()
        .map(|f| f["properties"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), districts.len(), "district names are distinct");
    assert!(names.contains("西湖区 Xihu") && names.contains("上城区 Shangcheng"));
    // The districts tile the city: every parking zone lies in one.
    for (lat, lon) in map.parking_spots() {
        let holders = district_polygons
            .iter()
            .filter(|d| d.contains(lat, lon))
            .count();
        assert_eq!(holders, 1);
    }
    let mut classes = HashSet::new();
    for s in &streets {
        assert_eq!(s["geometry"]["type"], "LineString");
        assert!(s["geometry"]["coordinates"].as_array().unwrap().len() >= 2);
        classes.insert(s["properties"]["class"].as_str().unwrap());
    }
    assert_eq!(classes, HashSet::from(["arterial", "local", "ring"]));
    let kinds: HashSet<&str> = water
        .iter()
        .map(|f| f["properties"]["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, HashSet::from(["lake", "river"]));
    // Streets stay out of the lake.
    let lake = water
        .iter()
        .find(|f| f["properties"]["kind"] == "lake")
        .map(|f| Polygon::from_json(&f["geometry"]).unwrap())
        .unwrap();
    for s in &streets {
        for v in s["geometry"]["coordinates"].as_array().unwrap() {
            let (lon, lat) = (v[0].as_f64().unwrap(), v[1].as_f64().unwrap());
            assert!(!lake.contains(lat, lon));
        }
    }
}

#[test]
fn the_same_seed_gives_the_same_city() {
    let (a, b) = (city(), city());
    assert_eq!(a, b);
    assert_eq!(a.basemap_geojson(), b.basemap_geojson());
    let other = CityMap::generate(HANGZHOU, 4_000.0, 600, 8);
    assert_ne!(a.zones(), other.zones());
    assert_ne!(a.parking_spots(), other.parking_spots());
}

#[test]
fn odd_arguments_give_a_valid_city() {
    // Too many zones for a small town: as many as fit, all valid.
    let small = CityMap::generate(HANGZHOU, 500.0, 5_000, 1);
    let parking = small.zones().iter().filter(|z| z.kind == "parking").count();
    assert!(parking > 20 && parking < 5_000, "{parking}");
    for (center, radius) in [
        ((f64::NAN, f64::INFINITY), f64::NAN),
        ((89.9, 179.99), 1e9),
        ((-60.0, -170.0), -5.0),
    ] {
        let map = CityMap::generate(center, radius, 50, 3);
        assert!((MIN_RADIUS_M..=MAX_RADIUS_M).contains(&map.radius_m()));
        for zone in map.zones() {
            Polygon::from_json(&zone.polygon).unwrap();
        }
        for f in map.basemap_geojson()["features"].as_array().unwrap() {
            if f["geometry"]["type"] == "Polygon" {
                Polygon::from_json(&f["geometry"]).unwrap();
            }
        }
    }
    let none = CityMap::generate(HANGZHOU, 4_000.0, 0, 1);
    assert!(none.parking_spots().is_empty());
}

#[test]
fn most_bikes_start_at_a_parking_spot() {
    let map = city();
    let spots = map.parking_spots();
    let config = CityConfig {
        parking_spots: spots.clone().into(),
        realism: LockRealism::none(),
        ..CityConfig::default()
    };
    let mut rng = crate::rng::Rng::new(11);
    let bikes = 2_000;
    let mut parked = 0;
    for _ in 0..bikes {
        let mut lock = Lock::new(&config, &mut rng, 1_767_225_600_000);
        let out = lock.link_up(1_767_225_600_000, &mut rng);
        let report = out.iter().find(|p| p.topic == "telemetry").unwrap();
        let (lat, lon) = (
            report.payload["lat"].as_f64().unwrap(),
            report.payload["lon"].as_f64().unwrap(),
        );
        // The start scatter (2.5 m) and a fresh fix's noise (3 m).
        if spots.iter().any(|&(a, b)| distance_m(lat, lon, a, b) < 6.0) {
            parked += 1;
        }
    }
    let share = parked as f64 / bikes as f64;
    assert!((0.76..0.85).contains(&share), "{share}");
}
