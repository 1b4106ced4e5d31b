use super::*;
use serde_json::json;

/// A square of `side_m` metres centred on (lat, lon), as a GeoJSON ring.
fn square(lat: f64, lon: f64, side_m: f64) -> Value {
    let h_lat = side_m / 2.0 / 111_195.0;
    let h_lon = h_lat / lat.to_radians().cos();
    json!([
        [lon - h_lon, lat - h_lat],
        [lon + h_lon, lat - h_lat],
        [lon + h_lon, lat + h_lat],
        [lon - h_lon, lat + h_lat],
        [lon - h_lon, lat - h_lat]
    ])
}

fn fence(name: &str, kind: FenceKind, polygon: Value) -> Fence {
    Fence::new(name, kind, &polygon, Value::Null).unwrap()
}

/// SplitMix64: a seeded generator, enough for test points.
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
    fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }
}

#[test]
fn kinds_parse_and_print() {
    for kind in FenceKind::ALL {
        assert_eq!(FenceKind::parse(kind.as_str()), Some(kind));
        assert_eq!(kind.to_string(), kind.as_str());
    }
    assert_eq!(FenceKind::parse("geofence"), None);
    assert_eq!(FenceKind::parse("Parking"), None);
    assert_eq!(
        serde_json::to_value(FenceKind::NoParking).unwrap(),
        "no_parking"
    );
}

#[test]
fn fences_from_zones() {
    let poly = json!({"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 0]]]});
    let f = Fence::from_zone("a", "parking", &poly, &json!({"capacity": 8}))
        .unwrap()
        .unwrap();
    assert_eq!(f.kind, FenceKind::Parking);
    assert_eq!(f.properties["capacity"], 8);
    assert_eq!(
        Fence::from_zone("b", "geofence", &poly, &json!({})),
        Ok(None)
    );
    let null_props = Fence::from_zone("c", "no_riding", &poly, &Value::Null);
    assert_eq!(null_props.unwrap().unwrap().properties, json!({}));

    let err = Fence::from_zone("bad", "parking", &json!([[0, 0], [1, 1]]), &json!({})).unwrap_err();
    assert!(matches!(err, FenceError::Polygon { ref name, .. } if name == "bad"));
    assert!(err.to_string().contains("\"bad\"") && err.to_string().contains("3 distinct"));
    let err = Fence::new("p", FenceKind::Parking, &poly, json!([1])).unwrap_err();
    assert_eq!(err, FenceError::Properties { name: "p".into() });
}

#[test]
fn inside_outside_and_holes() {
    let donut = json!({"type": "Polygon", "coordinates": [
        [[0, 0], [10, 0], [10, 10], [0, 10], [0, 0]],
        [[4, 4], [6, 4], [6, 6], [4, 6], [4, 4]]
    ]});
    let index = FenceIndex::new(vec![fence("donut", FenceKind::Parking, donut)]);
    assert_eq!(index.locate(2.0, 2.0).parking, Some("donut"));
    assert_eq!(index.locate(5.0, 5.0).parking, None, "in the hole");
    assert_eq!(index.locate(20.0, 5.0).parking, None);
    assert!(
        index.locate(2.0, 2.0).parkable(),
        "no service area: served everywhere"
    );
    assert!(index.locate(20.0, 5.0).in_service_area);
    assert!(!index.locate(5.0, 5.0).parkable());

    // Nearest from the hole's centre: 1° to the hole's edge, measured along the meridian.
    let n = index.nearest_parking_detail(5.0, 5.0, 500_000.0);
    assert!(n.is_none(), "111 km is past the 100 km cap");
    let n = index.nearest_parking_detail(5.0, 4.5, 100_000.0).unwrap();
    assert_eq!(n.name, "donut");
    assert!((n.distance_m - distance_m(5.0, 4.5, 5.0, 4.0)).abs() < 1e-6);
    assert!((n.bearing_deg - 270.0).abs() < 0.1, "{}", n.bearing_deg);
}

#[test]
fn shared_edges_belong_to_one_zone() {
    let left = fence(
        "left",
        FenceKind::Parking,
        json!([[0, 0], [1, 0], [1, 1], [0, 1]]),
    );
    let right = fence(
        "right",
        FenceKind::Parking,
        json!([[1, 0], [2, 0], [2, 1], [1, 1]]),
    );
    let index = FenceIndex::new(vec![left, right]);
    // On the shared edge x = 1 and on vertices: exactly one zone, never a panic.
    for lat in [0.25, 0.5, 0.75] {
        assert!(index.locate(lat, 1.0).parking.is_some(), "lat {lat}");
    }
    for (lat, lon) in [(0.0, 0.0), (1.0, 2.0), (0.0, 1.0), (1.0, 1.0), (0.5, 0.0)] {
        let _ = index.locate(lat, lon);
        let n = index.nearest_parking(lat, lon, 10.0).unwrap();
        assert!(n.1 < 1e-6, "on the boundary: {n:?}");
    }
}

#[test]
fn overlaps_no_parking_wins_and_service_areas_count() {
    let index = FenceIndex::new(vec![
        fence(
            "city",
            FenceKind::ServiceArea,
            json!([[0, 0], [10, 0], [10, 10], [0, 10]]),
        ),
        fence(
            "blue-b",
            FenceKind::Parking,
            json!([[1, 1], [3, 1], [3, 3], [1, 3]]),
        ),
        fence(
            "blue-a",
            FenceKind::Parking,
            json!([[2, 2], [4, 2], [4, 4], [2, 4]]),
        ),
        fence(
            "hydrant",
            FenceKind::NoParking,
            json!([[2.5, 2.5], [3.5, 2.5], [3.5, 3.5], [2.5, 3.5]]),
        ),
        fence(
            "plaza",
            FenceKind::NoRiding,
            json!([[8, 8], [9, 8], [9, 9], [8, 9]]),
        ),
        fence(
            "beach",
            FenceKind::Parking,
            json!([[11, 1], [12, 1], [12, 2], [11, 2]]),
        ),
    ]);
    let p = index.locate(2.2, 2.2);
    assert_eq!(p.parking, Some("blue-b"), "overlap: first in fence order");
    assert!(p.in_service_area && p.parkable());
    let p = index.locate(3.0, 3.0);
    assert!(
        p.parking.is_some() && p.no_parking && !p.parkable(),
        "{p:?}"
    );
    let p = index.locate(1.5, 11.5);
    assert_eq!(p.parking, Some("beach"));
    assert!(
        !p.in_service_area && !p.parkable(),
        "outside the service area"
    );
    let p = index.locate(8.5, 8.5);
    assert!(p.no_riding && p.in_service_area && !p.parkable());
    let p = index.locate(5.0, 5.0);
    assert_eq!(
        p,
        Placement {
            in_service_area: true,
            parking: None,
            no_parking: false,
            no_riding: false
        }
    );
    assert_eq!(index.len(), 6);
    assert_eq!(index.get("hydrant").unwrap().kind, FenceKind::NoParking);
    assert!(index.get("nope").is_none());
    assert_eq!(index.fences()[1].name, "blue-b");
    // Overlapping parking zones at distance 0: first in fence order.
    assert_eq!(index.nearest_parking(2.5, 2.5, 0.0), Some(("blue-b", 0.0)));
}

#[test]
fn invalid_positions_are_outside() {
    let index = FenceIndex::default();
    assert!(index.is_empty());
    assert!(index.locate(1.0, 1.0).in_service_area);
    for (lat, lon) in [
        (f64::NAN, 0.0),
        (0.0, f64::NAN),
        (91.0, 0.0),
        (0.0, -180.5),
        (f64::INFINITY, 0.0),
    ] {
        assert_eq!(index.locate(lat, lon), Placement::OUTSIDE);
        assert_eq!(index.nearest_parking(lat, lon, 100.0), None);
    }
    let index = FenceIndex::new(vec![fence("p", FenceKind::Parking, square(0.0, 0.0, 30.0))]);
    assert_eq!(index.nearest_parking(0.0, 0.0, f64::NAN), None);
    assert_eq!(index.nearest_parking(0.0, 0.0, -1.0), None);
    assert_eq!(
        index.nearest_parking(0.0, 0.0, f64::INFINITY),
        Some(("p", 0.0))
    );
    // Poles and the antimeridian do not panic.
    let _ = index.locate(90.0, 180.0);
    let _ = index.nearest_parking(-90.0, -180.0, 1e9);
}

#[test]
fn nearest_parking_in_metres() {
    let (lat, lon) = (31.23, 121.47);
    let north = 120.0 / 111_195.0;
    let index = FenceIndex::new(vec![
        // A 20 m square whose south edge is 110 m north of the point.
        fence("blue", FenceKind::Parking, square(lat + north, lon, 20.0)),
        // A no-parking zone right at the point does not count.
        fence("red", FenceKind::NoParking, square(lat, lon, 20.0)),
        fence(
            "far",
            FenceKind::Parking,
            square(lat - 5.0 * north, lon, 20.0),
        ),
    ]);
    let n = index.nearest_parking_detail(lat, lon, 1_000.0).unwrap();
    assert_eq!(n.name, "blue");
    assert!((n.distance_m - 110.0).abs() < 0.5, "{}", n.distance_m);
    assert!(
        n.bearing_deg < 0.01 || n.bearing_deg > 359.99,
        "north: {}",
        n.bearing_deg
    );
    assert_eq!(
        index.nearest_parking(lat, lon, 100.0),
        None,
        "beyond the limit"
    );
    let inside = index.nearest_parking(lat + north, lon, 0.0).unwrap();
    assert_eq!(inside, ("blue", 0.0));
}

/// Brute force: every fence, in order, with the same policy.
fn locate_linear(fences: &[Fence], lat: f64, lon: f64) -> Placement<'_> {
    let mut p = Placement {
        in_service_area: !fences.iter().any(|f| f.kind == FenceKind::ServiceArea),
        ..Placement::OUTSIDE
    };
    for f in fences.iter().filter(|f| f.polygon.contains(lat, lon)) {
        match f.kind {
            FenceKind::ServiceArea => p.in_service_area = true,
            FenceKind::Parking => p.parking = p.parking.or(Some(&f.name)),
            FenceKind::NoParking => p.no_parking = true,
            FenceKind::NoRiding => p.no_riding = true,
        }
    }
    p
}

/// Brute force: the nearest parking zone at any distance, the first on ties.
fn nearest_linear(fences: &[Fence], lat: f64, lon: f64) -> Option<(&str, f64)> {
    let mut best: Option<(&str, f64)> = None;
    for f in fences.iter().filter(|f| f.kind == FenceKind::Parking) {
        let d = distance_to_polygon_m(&f.polygon, lat, lon).0;
        if best.is_none_or(|b| d < b.1) {
            best = Some((&f.name, d));
        }
    }
    best
}

#[test]
fn nearest_matches_brute_force_far_north() {
    // At 78° N a degree of longitude is a fifth of a degree of latitude: the search's
    // degree-to-metre bound must still find the true nearest zone.
    let mut rng = Rng(78);
    let (lat0, lon0) = (78.22, 15.65);
    let fences: Vec<Fence> = (0..1_000)
        .map(|i| {
            let (lat, lon) = (
                rng.range(lat0 - 0.05, lat0 + 0.05),
                rng.range(lon0 - 0.25, lon0 + 0.25),
            );
            fence(
                &format!("p{i}"),
                FenceKind::Parking,
                square(lat, lon, rng.range(10.0, 80.0)),
            )
        })
        .collect();
    let index = FenceIndex::new(fences.clone());
    for _ in 0..300 {
        let (lat, lon) = (
            rng.range(lat0 - 0.06, lat0 + 0.06),
            rng.range(lon0 - 0.3, lon0 + 0.3),
        );
        let nearest = nearest_linear(&fences, lat, lon);
        for max in [100.0, 1_000.0, MAX_NEAREST_DISTANCE_M] {
            assert_eq!(
                index.nearest_parking(lat, lon, max),
                nearest.filter(|n| n.1 <= max)
            );
        }
    }
}

#[test]
fn ten_thousand_zones_match_brute_force() {
    let mut rng = Rng(0x5EED);
    let (lat0, lon0) = (31.23, 121.47);
    let (dlat, dlon) = (0.09, 0.105); // about 20 km × 20 km
    let mut fences = Vec::with_capacity(10_050);
    fences.push(fence(
        "west",
        FenceKind::ServiceArea,
        json!([
            [lon0 - dlon, lat0 - dlat],
            [lon0 + 0.01, lat0 - dlat],
            [lon0, lat0 + dlat],
            [lon0 - dlon, lat0 + dlat]
        ]),
    ));
    for i in 0..10_000 {
        let (lat, lon) = (
            rng.range(lat0 - dlat, lat0 + dlat),
            rng.range(lon0 - dlon, lon0 + dlon),
        );
        let kind = match i % 10 {
            0 => FenceKind::NoParking,
            1 => FenceKind::NoRiding,
            _ => FenceKind::Parking,
        };
        fences.push(fence(
            &format!("z{i}"),
            kind,
            square(lat, lon, rng.range(10.0, 300.0)),
        ));
    }
    let index = FenceIndex::new(fences.clone());
    let mut hits = 0;
    for i in 0..1_000 {
        let (lat, lon) = if i % 2 == 0 {
            (
                rng.range(lat0 - dlat, lat0 + dlat),
                rng.range(lon0 - dlon, lon0 + dlon),
            )
        } else {
            // Near a random zone, so many points land inside one.
            let (x0, y0, x1, y1) = fences[1 + i % 10_000].polygon.bbox();
            (
                rng.range(y0 - 0.001, y1 + 0.001),
                rng.range(x0 - 0.001, x1 + 0.001),
            )
        };
        let got = index.locate(lat, lon);
        assert_eq!(got, locate_linear(&fences, lat, lon), "at ({lat}, {lon})");
        hits += usize::from(got.parking.is_some());
        let nearest = nearest_linear(&fences, lat, lon);
        for max in [50.0, 400.0, 5_000.0] {
            assert_eq!(
                index.nearest_parking(lat, lon, max),
                nearest.filter(|n| n.1 <= max),
                "nearest within {max} m of ({lat}, {lon})"
            );
        }
    }
    assert!(hits > 150, "the test should exercise parking hits: {hits}");
}
