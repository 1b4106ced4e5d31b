//! The open-data feeds end to end: every GBFS 3.0 feed built from realistic inputs (zones of
//! every kind, pricing plans, 1,000 bikes, some on a trip) and validated against the official
//! schemas by `tests/validate_schema.py`; MDS 2.0 payloads validated against a schema
//! transcribed from the spec (openmobilityfoundation/mds-openapi, release 2.0); privacy
//! (no bikes on a trip, rotating ids, no rider data) and the MDS state machine.
//!
//! The GBFS schemas are read from `shared/data/gbfs/v3.0` beside the workspace; Python 3 with
//! the `jsonschema` package must be installed (CI installs it with pip).

use std::collections::{BTreeSet, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use wulian_bikeshare::fence::FenceKind;
use wulian_bikeshare::gbfs::{
    self, FeedContext, FeedName, License, LocalizedText, ManifestDataset, PolicyLink,
    StationCounts, SystemInfo, VehicleIdKey, VehicleTypeCount, VehicleTypeInfo, VehicleView,
    VersionLink, ZoneView,
};
use wulian_bikeshare::mds::{
    self, EventType, HourWindow, Location, MdsContext, MdsEvent, MdsTelemetry, MdsTrip, MdsVehicle,
    MdsVehicleStatus, Page, TripType, VehicleState,
};

/// 2026-01-01T00:00:00Z.
const NOW: i64 = 1_767_225_600_000;
const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
const VALIDATOR_TIMEOUT: Duration = Duration::from_secs(120);

// ---------------------------------------------------------------------------------------------
// Running the validator
// ---------------------------------------------------------------------------------------------

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The official GBFS 3.0 schemas; the test fails loudly without them.
fn schema_dir() -> PathBuf {
    let dir = manifest_dir().join("../../../shared/data/gbfs/v3.0");
    assert!(
        dir.join("vehicle_status.json").is_file(),
        "the official GBFS 3.0 JSON schemas are missing: expected them in {} \
         (shared/data/gbfs/v3.0 beside the workspace, as on CI)",
        dir.display()
    );
    dir
}

/// Runs `python3 tests/validate_schema.py <schema> <doc>` with a deadline; returns whether the
/// document is valid and what the script printed.
fn validate(schema: &Path, doc: &[u8]) -> (bool, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let doc_path = dir.path().join("doc.json");
    std::fs::write(&doc_path, doc).expect("write doc");
    let out_path = dir.path().join("out.txt");
    let out = File::create(&out_path).expect("output file");
    let err = out.try_clone().expect("output file");
    let mut child = Command::new("python3")
        .arg(manifest_dir().join("tests/validate_schema.py"))
        .arg(schema)
        .arg(&doc_path)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("python3 is needed to validate the feeds: {e}"));
    let deadline = Instant::now() + VALIDATOR_TIMEOUT;
    let status = loop {
        match child.try_wait().expect("wait for python3") {
            Some(status) => break status,
            None if Instant::now() > deadline => {
                // Best effort: the test fails below either way.
                child.kill().ok();
                child.wait().ok();
                panic!("validate_schema.py took longer than {VALIDATOR_TIMEOUT:?}");
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    let printed = std::fs::read_to_string(&out_path).unwrap_or_default();
    match status.code() {
        Some(0) => (true, printed),
        Some(1) => (false, printed),
        _ => panic!(
            "validate_schema.py could not run (is the jsonschema package installed? \
             pip install jsonschema): {printed}"
        ),
    }
}

fn assert_valid(schema: &Path, doc: &[u8], what: &str) {
    let (ok, printed) = validate(schema, doc);
    assert!(
        ok,
        "{what} does not validate against {}:\n{printed}",
        schema.display()
    );
}

fn to_value<T: serde::Serialize>(x: &T) -> Value {
    serde_json::to_value(x).expect("serialise")
}

// ---------------------------------------------------------------------------------------------
// GBFS fixture: a Shanghai system
// ---------------------------------------------------------------------------------------------

fn ctx() -> FeedContext {
    FeedContext {
        system_id: "wulian_acme_shanghai".into(),
        languages: vec!["zh-CN".into(), "en".into()],
        base_url: "http://127.0.0.1:8080/gbfs/v3/acme".into(),
        ttl_s: 60,
        now_ms: NOW,
    }
}

/// A rectangle around (lat, lon), half-sizes in degrees, as GeoJSON positions; clockwise
/// when asked (the builders must fix the orientation), unclosed every other time.
fn rect(lat: f64, lon: f64, half_lat: f64, half_lon: f64, clockwise: bool) -> Vec<[f64; 2]> {
    let mut ring = vec![
        [lon - half_lon, lat - half_lat],
        [lon + half_lon, lat - half_lat],
        [lon + half_lon, lat + half_lat],
        [lon - half_lon, lat + half_lat],
    ];
    if clockwise {
        ring.reverse();
    }
    let first = ring[0];
    ring.push(first);
    ring
}

fn polygon(rings: Vec<Vec<[f64; 2]>>) -> Value {
    json!({"type": "Polygon", "coordinates": rings})
}

fn zone(id: &str, name: &str, kind: FenceKind, geometry: Value, properties: Value) -> ZoneView {
    ZoneView {
        zone_id: id.into(),
        name: name.into(),
        kind,
        geometry,
        properties,
    }
}

/// Parking zone centres, by zone id.
const PARKING: [(&str, f64, f64); 6] = [
    ("p-renmin", 31.232_417, 121.475_183),
    ("p-jingan", 31.223_716, 121.445_922),
    ("p-xintiandi", 31.219_872, 121.474_505),
    ("p-bund", 31.240_521, 121.490_197),
    ("p-lujiazui", 31.235_144, 121.505_826),
    ("p-xujiahui", 31.195_332, 121.437_412),
];

fn zones() -> Vec<ZoneView> {
    let h = 0.000_4; // ~45 m
    let mut zones = vec![
        // Service areas first in the input: the builder must reorder by precedence.
        zone(
            "sa-puxi",
            "浦西运营区",
            FenceKind::ServiceArea,
            polygon(vec![rect(31.22, 121.46, 0.045, 0.04, true)]),
            json!({}),
        ),
        zone(
            "sa-pudong",
            "浦东运营区",
            FenceKind::ServiceArea,
            json!({"type": "MultiPolygon", "coordinates": [
                [rect(31.235, 121.515, 0.012, 0.015, false)],
                [rect(31.205, 121.53, 0.005, 0.005, true)]
            ]}),
            json!({"maximum_speed_kph": 15}),
        ),
    ];
    for (i, &(id, lat, lon)) in PARKING.iter().enumerate() {
        let geometry = polygon(vec![rect(lat, lon, h, h * 1.2, i % 2 == 0)]);
        // One zone arrives as a GeoJSON Feature, as some registries store them.
        let geometry = if id == "p-jingan" {
            json!({"type": "Feature", "properties": {}, "geometry": geometry})
        } else {
            geometry
        };
        let properties = match id {
            "p-renmin" => json!({"capacity": 20}),
            "p-bund" => json!({"capacity": 5}),
            "p-xujiahui" => json!({"capacity": 40, "opening_hours": "24/7"}),
            _ => json!({}),
        };
        zones.push(zone(
            id,
            &format!("停车点 {id}"),
            FenceKind::Parking,
            geometry,
            properties,
        ));
    }
    let (lat, lon) = (PARKING[0].1, PARKING[0].2);
    let (jlat, jlon) = (PARKING[1].1, PARKING[1].2);
    zones.extend([
        // A fire hydrant carved out of the People's Square parking zone.
        zone(
            "np-hydrant",
            "消防栓",
            FenceKind::NoParking,
            polygon(vec![rect(lat + 0.000_1, lon, 0.000_05, 0.000_05, false)]),
            json!({}),
        ),
        zone(
            "np-metro",
            "地铁口",
            FenceKind::NoParking,
            polygon(vec![rect(31.228, 121.47, 0.000_3, 0.000_3, true)]),
            json!({}),
        ),
        // Overlaps the Jing'an parking zone only partly: not carved.
        zone(
            "np-partial",
            "公交站",
            FenceKind::NoParking,
            polygon(vec![rect(jlat + h, jlon, 0.000_2, 0.000_2, false)]),
            json!({}),
        ),
        zone(
            "nr-park",
            "人民公园",
            FenceKind::NoRiding,
            polygon(vec![
                rect(31.231, 121.472, 0.002, 0.002, false),
                rect(31.231, 121.472, 0.000_5, 0.000_5, false),
            ]),
            json!({}),
        ),
        zone(
            "nr-bund",
            "外滩步行区",
            FenceKind::NoRiding,
            polygon(vec![rect(31.238, 121.49, 0.003, 0.000_6, true)]),
            json!({"maximum_speed_kph": 0}),
        ),
    ]);
    zones
}

/// Deterministic pseudo-random numbers in [0, 1).
struct Lcg(u64);

impl Lcg {
    fn unit(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn bike_code(i: usize) -> String {
    format!("bike-{i:06}")
}

fn vehicles(n: usize) -> Vec<VehicleView> {
    let mut rng = Lcg(42);
    (0..n)
        .map(|i| {
            let (mut lat, mut lon) = (31.18 + rng.unit() * 0.08, 121.42 + rng.unit() * 0.08);
            let station = (i % 7 == 0).then(|| PARKING[(i / 7) % PARKING.len()]);
            if let Some((_, plat, plon)) = station {
                // Somewhere inside the zone, with more decimals than GBFS publishes.
                lat = plat + (rng.unit() - 0.5) * 0.000_3;
                lon = plon + (rng.unit() - 0.5) * 0.000_3;
            }
            VehicleView {
                bike_id: bike_code(i),
                lat,
                lon,
                is_reserved: i % 17 == 5,
                is_disabled: i % 23 == 7,
                on_trip: i % 10 == 3,
                battery_pct: Some(u8::try_from(i % 101).unwrap()),
                vehicle_type_id: "bike".into(),
                pricing_plan_id: (i % 50 == 0).then(|| "monthly".to_string()),
                station_id: station.map(|(id, _, _)| id.to_string()),
                last_reported_ms: NOW - i64::try_from(i * 997 % 300_000).unwrap(),
                trips_completed: u64::try_from(i * 3 % 41).unwrap(),
            }
        })
        .collect()
}

/// What the integrator counts per parking zone.
fn station_counts(vehicles: &[VehicleView]) -> Vec<StationCounts> {
    PARKING
        .iter()
        .map(|&(id, _, _)| {
            let here: Vec<_> = vehicles
                .iter()
                .filter(|v| !v.on_trip && v.station_id.as_deref() == Some(id))
                .collect();
            let available = here
                .iter()
                .filter(|v| !v.is_disabled && !v.is_reserved)
                .count();
            StationCounts {
                zone_id: id.into(),
                available: vec![VehicleTypeCount {
                    vehicle_type_id: "bike".into(),
                    count: u32::try_from(available).unwrap(),
                }],
                disabled: u32::try_from(here.iter().filter(|v| v.is_disabled).count()).unwrap(),
            }
        })
        // One zone without counts: it must still be listed, empty.
        .filter(|c| c.zone_id != "p-xujiahui")
        .collect()
}

/// GBFS plan entries as `pricing::to_gbfs` renders them.
fn plans() -> Vec<Value> {
    vec![
        json!({
            "plan_id": "standard",
            "name": [{"text": "标准计费", "language": "zh-CN"}, {"text": "Standard", "language": "en"}],
            "currency": "CNY",
            "price": 0,
            "is_taxable": false,
            "description": [
                {"text": "每15分钟1.5元", "language": "zh-CN"},
                {"text": "CNY 1.50 per started 15 minutes", "language": "en"}
            ],
            "per_min_pricing": [{"start": 0, "rate": 1.5, "interval": 15}],
            "surge_pricing": false
        }),
        json!({
            "plan_id": "monthly",
            "name": [{"text": "月卡", "language": "zh-CN"}, {"text": "Monthly pass", "language": "en"}],
            "currency": "CNY",
            "price": 0,
            "is_taxable": false,
            "description": [
                {"text": "每次骑行前2小时免费", "language": "zh-CN"},
                {"text": "First 2 hours of every ride free", "language": "en"}
            ],
            "per_min_pricing": [{"start": 120, "rate": 1.5, "interval": 15}]
        }),
    ]
}

fn system_info(ctx: &FeedContext) -> SystemInfo {
    let per_language = |zh: &str, en: &str| {
        vec![
            LocalizedText {
                text: zh.into(),
                language: "zh-CN".into(),
            },
            LocalizedText {
                text: en.into(),
                language: "en".into(),
            },
        ]
    };
    let mut info = SystemInfo::new(ctx, "物联单车", "gbfs@bike.example.com");
    info.name = per_language("物联单车", "Wulian Bike");
    info.operator = Some(per_language("物联出行有限公司", "Wulian Mobility Ltd."));
    info.phone_number = Some("+862161234567".into());
    info.email = Some("service@bike.example.com".into());
    info.url = Some("https://bike.example.com".into());
    info.start_date = Some("2025-06-01".into());
    info.manifest_url = Some("http://127.0.0.1:8080/gbfs/manifest.json".into());
    info.terms = Some(PolicyLink {
        url: per_language(
            "https://bike.example.com/zh/terms",
            "https://bike.example.com/en/terms",
        ),
        last_updated: "2025-05-20".into(),
    });
    info.privacy = Some(PolicyLink {
        url: per_language(
            "https://bike.example.com/zh/privacy",
            "https://bike.example.com/en/privacy",
        ),
        last_updated: "2025-05-20".into(),
    });
    info
}

fn bike_type() -> VehicleTypeInfo {
    VehicleTypeInfo::bicycle("bike", "单车", "standard", &["standard", "monthly"])
}

/// Every feed of the fixture as JSON bytes, by schema file name.
fn all_feeds(vehicles: &[VehicleView]) -> Vec<(&'static str, Vec<u8>)> {
    let ctx = ctx();
    let key = VehicleIdKey::new(SECRET);
    let zones = zones();
    let plans = plans();
    let type_ids = vec!["bike".to_string()];
    let other = VersionLink {
        version: "2.3".into(),
        url: "http://127.0.0.1:8080/gbfs/v2/acme/gbfs.json".into(),
    };
    let datasets = [
        ManifestDataset {
            system_id: ctx.system_id.clone(),
            versions: vec![
                VersionLink {
                    version: "3.0".into(),
                    url: ctx.feed_url(FeedName::Gbfs),
                },
                other.clone(),
            ],
        },
        ManifestDataset {
            system_id: "wulian_acme_hangzhou".into(),
            versions: vec![VersionLink {
                version: "3.0".into(),
                url: "http://127.0.0.1:8080/gbfs/v3/acme-hz/gbfs.json".into(),
            }],
        },
    ];
    let json = |r: serde_json::Result<Vec<u8>>| r.expect("serialise");
    vec![
        (
            "gbfs",
            json(gbfs::gbfs(&ctx, &FeedName::PUBLISHED).to_json()),
        ),
        (
            "gbfs_versions",
            json(gbfs::gbfs_versions(&ctx, &[other]).to_json()),
        ),
        ("manifest", json(gbfs::manifest(&ctx, &datasets).to_json())),
        (
            "system_information",
            json(
                gbfs::system_information(&ctx, &system_info(&ctx))
                    .unwrap()
                    .to_json(),
            ),
        ),
        (
            "vehicle_types",
            json(gbfs::vehicle_types(&ctx, &[bike_type()]).unwrap().to_json()),
        ),
        (
            "vehicle_status",
            json(gbfs::vehicle_status(&ctx, &key, vehicles).to_json()),
        ),
        (
            "geofencing_zones",
            json(
                gbfs::geofencing_zones(&ctx, &zones, &type_ids)
                    .unwrap()
                    .to_json(),
            ),
        ),
        (
            "station_information",
            json(gbfs::station_information(&ctx, &zones).unwrap().to_json()),
        ),
        (
            "station_status",
            json(
                gbfs::station_status(&ctx, &zones, &station_counts(vehicles), &type_ids).to_json(),
            ),
        ),
        (
            "system_pricing_plans",
            json(gbfs::system_pricing_plans(&ctx, &plans).unwrap().to_json()),
        ),
    ]
}

fn feed(vehicles: &[VehicleView], name: &str) -> Value {
    let bytes = all_feeds(vehicles)
        .into_iter()
        .find(|(n, _)| *n == name)
        .map(|(_, b)| b)
        .unwrap_or_else(|| panic!("no feed {name}"));
    serde_json::from_slice(&bytes).expect("feed is JSON")
}

/// Every key of every object in `v`.
fn keys(v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(map) => {
            for (k, x) in map {
                out.insert(k.clone());
                keys(x, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|x| keys(x, out)),
        _ => {}
    }
}

/// Every number stored under `lat`/`lon` or inside `coordinates` in `v`.
fn coordinates(v: &Value, inside: bool, out: &mut Vec<f64>) {
    match v {
        Value::Object(map) => {
            for (k, x) in map {
                let here = inside || matches!(k.as_str(), "lat" | "lon" | "lng" | "coordinates");
                coordinates(x, here, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|x| coordinates(x, inside, out)),
        Value::Number(n) if inside => out.push(n.as_f64().unwrap()),
        _ => {}
    }
}

fn decimals(x: f64) -> usize {
    let s = x.to_string();
    s.split_once('.').map_or(0, |(_, frac)| frac.len())
}

// ---------------------------------------------------------------------------------------------
// GBFS
// ---------------------------------------------------------------------------------------------

#[test]
fn every_gbfs_feed_validates_against_its_official_schema() {
    let dir = schema_dir();
    let vehicles = vehicles(1000);
    for (name, bytes) in all_feeds(&vehicles) {
        assert_valid(&dir.join(format!("{name}.json")), &bytes, name);
    }
    // The validator really validates: a vehicle without an id and off the globe is refused,
    // and every error is reported with its path.
    let mut broken = feed(&vehicles, "vehicle_status");
    let first = &mut broken["data"]["vehicles"][0];
    first.as_object_mut().unwrap().remove("vehicle_id");
    first["lat"] = json!(91.0);
    broken["last_updated"] = json!("yesterday");
    let (ok, printed) = validate(
        &dir.join("vehicle_status.json"),
        broken.to_string().as_bytes(),
    );
    assert!(!ok, "a broken feed passed:\n{printed}");
    assert!(printed.contains("/data/vehicles/0"), "{printed}");
    assert!(printed.contains("/last_updated"), "{printed}");
}

#[test]
fn bikes_on_a_trip_are_not_listed_and_ids_rotate_after_each_trip() {
    let ctx = ctx();
    let key = VehicleIdKey::new(SECRET);
    let fleet = vehicles(1000);
    let status = gbfs::vehicle_status(&ctx, &key, &fleet);
    let listed = &status.data.vehicles;
    assert_eq!(listed.len(), fleet.iter().filter(|v| !v.on_trip).count());
    let expected: HashSet<String> = fleet
        .iter()
        .filter(|v| !v.on_trip)
        .map(|v| gbfs::public_vehicle_id(SECRET, &v.bike_id, v.trips_completed))
        .collect();
    let published: HashSet<String> = listed.iter().map(|v| v.vehicle_id.to_string()).collect();
    assert_eq!(
        published, expected,
        "ids are the keyed HMACs, one per listed bike"
    );
    for v in fleet.iter().filter(|v| v.on_trip) {
        let id = gbfs::public_vehicle_id(SECRET, &v.bike_id, v.trips_completed);
        assert!(
            !published.contains(&id),
            "{} is on a trip but listed",
            v.bike_id
        );
    }
    assert!(
        listed.iter().any(|v| v.is_reserved),
        "reserved bikes stay listed"
    );

    // One bike through a trip: listed, hidden while riding, listed under a new id after.
    let mut bike = fleet[1].clone();
    bike.on_trip = false;
    let before = gbfs::vehicle_status(&ctx, &key, std::slice::from_ref(&bike))
        .data
        .vehicles[0]
        .vehicle_id;
    let again = gbfs::vehicle_status(&ctx, &key, std::slice::from_ref(&bike))
        .data
        .vehicles[0]
        .vehicle_id;
    assert_eq!(before, again, "stable between trips");
    bike.on_trip = true;
    assert!(
        gbfs::vehicle_status(&ctx, &key, std::slice::from_ref(&bike))
            .data
            .vehicles
            .is_empty()
    );
    bike.on_trip = false;
    bike.trips_completed += 1;
    let after = gbfs::vehicle_status(&ctx, &key, std::slice::from_ref(&bike))
        .data
        .vehicles[0]
        .vehicle_id;
    assert_ne!(before, after, "rotated after the trip");

    // Ids look random: 32 hex digits, unique, unrelated to the code, keyed.
    let id = before.to_string();
    assert_eq!(id.len(), 32);
    assert!(
        id.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    );
    assert!(!id.contains("000001"));
    assert_ne!(
        gbfs::public_vehicle_id(b"another tenant's secret.........", &bike.bike_id, 1),
        id
    );
    let many: HashSet<String> = (0..10_000)
        .map(|n| gbfs::public_vehicle_id(SECRET, "bike-000001", n))
        .collect();
    assert_eq!(many.len(), 10_000);
}

#[test]
fn feeds_carry_no_rider_data_nor_internal_bike_codes() {
    let fleet = vehicles(1000);
    for (name, bytes) in all_feeds(&fleet) {
        let text = String::from_utf8(bytes).unwrap();
        assert!(
            !text.contains("bike-0"),
            "{name} publishes an internal bike code"
        );
        let mut found = BTreeSet::new();
        keys(&serde_json::from_str(&text).unwrap(), &mut found);
        for key in &found {
            for word in [
                "rider", "user", "customer", "member", "account", "token", "trip", "battery",
            ] {
                assert!(!key.contains(word), "{name} has a field {key:?}");
            }
        }
    }
    let status = feed(&fleet, "vehicle_status");
    let allowed: BTreeSet<&str> = [
        "vehicle_id",
        "lat",
        "lon",
        "is_reserved",
        "is_disabled",
        "vehicle_type_id",
        "last_reported",
        "station_id",
        "pricing_plan_id",
    ]
    .into();
    for v in status["data"]["vehicles"].as_array().unwrap() {
        for k in v.as_object().unwrap().keys() {
            assert!(
                allowed.contains(k.as_str()),
                "unexpected vehicle field {k:?}"
            );
        }
    }
}

#[test]
fn coordinates_are_published_with_at_most_six_decimals() {
    let fleet = vehicles(1000);
    for name in ["vehicle_status", "station_information", "geofencing_zones"] {
        let mut numbers = Vec::new();
        coordinates(&feed(&fleet, name), false, &mut numbers);
        assert!(numbers.len() > 10, "{name}");
        for x in numbers {
            assert!(decimals(x) <= 6, "{name}: {x} has more than 6 decimals");
        }
    }
    let status = gbfs::vehicle_status(&ctx(), &VehicleIdKey::new(SECRET), &fleet);
    let listed: Vec<&VehicleView> = fleet.iter().filter(|v| !v.on_trip).collect();
    for (v, out) in listed.iter().zip(&status.data.vehicles) {
        assert!((v.lat - out.lat).abs() <= 5.1e-7 && (v.lon - out.lon).abs() <= 5.1e-7);
    }
}

#[test]
fn geofencing_rules_follow_the_documented_mapping() {
    let fleet = vehicles(10);
    let doc = feed(&fleet, "geofencing_zones");
    let features = doc["data"]["geofencing_zones"]["features"]
        .as_array()
        .unwrap();
    let zones = zones();
    assert_eq!(features.len(), zones.len());
    let name_of = |f: &Value| {
        f["properties"]["name"][0]["text"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let kind_of = |name: &str| zones.iter().find(|z| z.name == name).unwrap().kind;
    let kinds: Vec<FenceKind> = features.iter().map(|f| kind_of(&name_of(f))).collect();
    let mut sorted = kinds.clone();
    sorted.sort_by_key(|k| match k {
        FenceKind::NoRiding => 0,
        FenceKind::NoParking => 1,
        FenceKind::Parking => 2,
        FenceKind::ServiceArea => 3,
    });
    assert_eq!(
        kinds, sorted,
        "restrictions come first so that they win where zones overlap"
    );
    assert_eq!(
        name_of(&features[0]),
        "人民公园",
        "input order within a kind"
    );
    for f in features {
        let rules = f["properties"]["rules"].as_array().unwrap();
        assert_eq!(rules.len(), 1);
        let r = &rules[0];
        let triple = (
            r["ride_start_allowed"].as_bool().unwrap(),
            r["ride_end_allowed"].as_bool().unwrap(),
            r["ride_through_allowed"].as_bool().unwrap(),
        );
        let (expected, station_parking) = match kind_of(&name_of(f)) {
            FenceKind::NoRiding => ((false, false, false), None),
            FenceKind::NoParking => ((true, false, true), None),
            FenceKind::Parking => ((true, true, true), Some(true)),
            FenceKind::ServiceArea => ((true, false, true), Some(true)),
        };
        assert_eq!(triple, expected, "{}", name_of(f));
        assert_eq!(r["station_parking"].as_bool(), station_parking);
        assert_eq!(r["vehicle_type_ids"], json!(["bike"]));
        assert_eq!(
            f["properties"]["name"].as_array().unwrap().len(),
            2,
            "both languages"
        );
        assert_eq!(f["geometry"]["type"], "MultiPolygon");
    }
    let speed = |name: &str| {
        let f = features.iter().find(|f| name_of(f) == name).unwrap();
        f["properties"]["rules"][0]["maximum_speed_kph"].as_u64()
    };
    assert_eq!(speed("浦东运营区"), Some(15));
    assert_eq!(speed("外滩步行区"), Some(0));
    assert_eq!(speed("浦西运营区"), None);
    assert_eq!(
        doc["data"]["global_rules"],
        json!([{"vehicle_type_ids": ["bike"], "ride_start_allowed": false,
                "ride_end_allowed": false, "ride_through_allowed": true}])
    );
    // Without a service area the whole city is one.
    let parking_only: Vec<ZoneView> = zones
        .into_iter()
        .filter(|z| z.kind == FenceKind::Parking)
        .collect();
    let doc = to_value(&gbfs::geofencing_zones(&ctx(), &parking_only, &[]).unwrap());
    assert_eq!(
        doc["data"]["global_rules"],
        json!([{"ride_start_allowed": true, "ride_end_allowed": false,
                "ride_through_allowed": true, "station_parking": true}])
    );
    // Right-hand rule: exteriors counter-clockwise, holes clockwise.
    let doc = feed(&fleet, "geofencing_zones");
    for f in doc["data"]["geofencing_zones"]["features"]
        .as_array()
        .unwrap()
    {
        for poly in f["geometry"]["coordinates"].as_array().unwrap() {
            for (i, ring) in poly.as_array().unwrap().iter().enumerate() {
                let pts: Vec<(f64, f64)> = ring
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| (p[0].as_f64().unwrap(), p[1].as_f64().unwrap()))
                    .collect();
                assert_eq!(pts.first(), pts.last(), "closed");
                let area2: f64 = pts
                    .windows(2)
                    .map(|w| w[0].0 * w[1].1 - w[1].0 * w[0].1)
                    .sum();
                assert_eq!(area2 > 0.0, i == 0, "{}: ring {i}", name_of(f));
            }
        }
    }
}

#[test]
fn parking_zones_are_virtual_stations_with_consistent_status() {
    let fleet = vehicles(1000);
    let info = feed(&fleet, "station_information");
    let status = feed(&fleet, "station_status");
    let stations = info["data"]["stations"].as_array().unwrap();
    let ids: Vec<&str> = stations
        .iter()
        .map(|s| s["station_id"].as_str().unwrap())
        .collect();
    let parking_ids: Vec<&str> = PARKING.iter().map(|p| p.0).collect();
    assert_eq!(ids, parking_ids);
    let status_ids: Vec<&str> = status["data"]["stations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["station_id"].as_str().unwrap())
        .collect();
    assert_eq!(status_ids, parking_ids, "every station has a status");
    for (s, &(id, lat, lon)) in stations.iter().zip(&PARKING) {
        assert_eq!(s["is_virtual_station"], true);
        assert!(
            (s["lat"].as_f64().unwrap() - lat).abs() < 1e-6,
            "{id}: centroid"
        );
        assert!(
            (s["lon"].as_f64().unwrap() - lon).abs() < 1e-6,
            "{id}: centroid"
        );
        let rings = s["station_area"]["coordinates"][0]
            .as_array()
            .unwrap()
            .len();
        let expected = if id == "p-renmin" { 2 } else { 1 };
        assert_eq!(
            rings, expected,
            "{id}: only wholly-contained restrictions become holes"
        );
    }
    assert_eq!(stations[0]["capacity"], 20);
    assert!(stations[1].get("capacity").is_none());

    let counts = station_counts(&fleet);
    for s in status["data"]["stations"].as_array().unwrap() {
        let id = s["station_id"].as_str().unwrap();
        let available = s["num_vehicles_available"].as_u64().unwrap();
        let by_type: u64 = s["vehicle_types_available"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["count"].as_u64().unwrap())
            .sum();
        assert_eq!(available, by_type, "{id}");
        let counted = counts.iter().find(|c| c.zone_id == id);
        assert_eq!(
            available,
            counted.map_or(0, |c| u64::from(c.available[0].count)),
            "{id}"
        );
        assert_eq!(s["vehicle_types_available"][0]["vehicle_type_id"], "bike");
        let disabled = s["num_vehicles_disabled"].as_u64().unwrap();
        match id {
            "p-renmin" => assert_eq!(
                s["num_docks_available"].as_u64(),
                Some(20u64.saturating_sub(available + disabled))
            ),
            "p-bund" => assert_eq!(s["num_docks_available"], 0, "a full zone has no free place"),
            "p-xujiahui" => assert_eq!(
                (available, s["num_docks_available"].as_u64()),
                (0, Some(40))
            ),
            _ => assert!(s.get("num_docks_available").is_none(), "{id}: unlimited"),
        }
        assert_eq!(
            (s["is_renting"].as_bool(), s["is_returning"].as_bool()),
            (Some(true), Some(true))
        );
    }
    // Bikes standing in a zone name it.
    let vs = feed(&fleet, "vehicle_status");
    let at_stations = vs["data"]["vehicles"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v.get("station_id").is_some())
        .count();
    assert!(at_stations > 50);
}

#[test]
fn builders_refuse_inputs_that_would_break_the_spec() {
    let ctx = ctx();
    let mut zones = zones();
    zones.push(zone(
        "broken",
        "broken",
        FenceKind::Parking,
        json!({"type": "LineString", "coordinates": [[121.0, 31.0], [121.1, 31.1]]}),
        json!({}),
    ));
    let err = gbfs::geofencing_zones(&ctx, &zones, &[]).unwrap_err();
    assert!(err.to_string().contains("\"broken\""), "{err}");
    assert!(gbfs::station_information(&ctx, &zones).is_err());

    let mut plans = plans();
    plans.push(plans[0].clone());
    assert!(
        gbfs::system_pricing_plans(&ctx, &plans).is_err(),
        "duplicate plan_id"
    );
    assert!(gbfs::system_pricing_plans(&ctx, &[json!("standard")]).is_err());

    let mut ebike = bike_type();
    ebike.propulsion_type = gbfs::PropulsionType::ElectricAssist;
    assert!(
        gbfs::vehicle_types(&ctx, &[ebike.clone()]).is_err(),
        "needs a range"
    );
    ebike.max_range_meters = Some(40_000.0);
    assert!(gbfs::vehicle_types(&ctx, &[ebike]).is_ok());

    let mut info = system_info(&ctx);
    info.name.truncate(1);
    assert!(
        gbfs::system_information(&ctx, &info).is_err(),
        "a language without a name"
    );
    let mut info = system_info(&ctx);
    info.phone_number = Some("021-6123 4567".into());
    assert!(gbfs::system_information(&ctx, &info).is_err());
    let mut info = system_info(&ctx);
    info.license = Some(License::Url("https://bike.example.com/license".into()));
    let doc = to_value(&gbfs::system_information(&ctx, &info).unwrap());
    assert!(doc["data"].get("license_id").is_none());

    // A bike without a valid fix cannot be found: left out, not published as null.
    let mut fleet = vehicles(3);
    fleet[0].lat = f64::NAN;
    fleet[1].lon = 181.0;
    let doc = to_value(&gbfs::vehicle_status(
        &ctx,
        &VehicleIdKey::new(SECRET),
        &fleet,
    ));
    assert_eq!(doc["data"]["vehicles"].as_array().unwrap().len(), 1);

    assert_eq!(
        FeedName::parse("vehicle_status.json"),
        Some(FeedName::VehicleStatus)
    );
    assert_eq!(FeedName::parse("manifest"), None);
    assert_eq!(
        ctx.feed_url(FeedName::SystemInformation),
        "http://127.0.0.1:8080/gbfs/v3/acme/system_information.json"
    );
}

// ---------------------------------------------------------------------------------------------
// MDS fixture
// ---------------------------------------------------------------------------------------------

fn mds_ctx() -> MdsContext {
    MdsContext {
        provider_id: "5f7114d1-4091-46ee-b492-e55875f7de00".into(),
        data_provider_id: None,
        namespace: *b"acme-tenant-ns-1",
        base_url: "http://127.0.0.1:8080/mds/v2/acme".into(),
        now_ms: NOW,
        ttl_ms: 30_000,
    }
}

fn at(lat: f64, lon: f64) -> Location {
    Location {
        speed_kmh: Some(14.4),
        heading_deg: Some(87.0),
        horizontal_accuracy_m: Some(4.5),
        satellites: Some(9),
        ..Location::new(lat, lon)
    }
}

fn event(
    bike: usize,
    ts: i64,
    state: VehicleState,
    types: &[EventType],
    trip: Option<&str>,
) -> MdsEvent {
    MdsEvent {
        bike_id: bike_code(bike),
        timestamp_ms: ts,
        vehicle_state: state,
        event_types: types.to_vec(),
        location: at(31.23 + bike as f64 * 1e-4, 121.47),
        battery_pct: Some(80),
        trip_ids: trip.map(|t| vec![t.to_string()]).unwrap_or_default(),
        publication_time_ms: Some(ts + 1000),
        associated_ticket: None,
    }
}

fn mds_trips() -> Vec<MdsTrip> {
    (0..20)
        .map(|i| MdsTrip {
            trip_id: format!("t-{i:04}"),
            bike_id: bike_code(i),
            trip_type: (i % 2 == 0).then_some(TripType::Rider),
            start_ms: NOW - 3_600_000 + i as i64 * 60_000,
            end_ms: NOW - 3_000_000 + i as i64 * 61_000,
            start: at(31.23, 121.47),
            end: at(31.24, 121.48),
            distance_m: 1500 + i as u32,
            publication_time_ms: Some(NOW),
            accessibility_attributes: Vec::new(),
            parking_category: Some(mds::ParkingCategory::OtherValid),
            parking_verification_url: None,
            standard_cost: Some(150),
            actual_cost: Some(if i % 3 == 0 { 0 } else { 150 }),
            currency: Some("CNY".into()),
        })
        .collect()
}

fn mds_events() -> Vec<MdsEvent> {
    use EventType as E;
    use VehicleState as S;
    let t0 = NOW - 3_600_000;
    vec![
        event(1, t0, S::Reserved, &[E::ReservationStart], None),
        event(1, t0 + 1, S::OnTrip, &[E::TripStart], Some("t-0001")),
        event(
            1,
            t0 + 2,
            S::NonOperational,
            &[E::TripEnd, E::BatteryLow],
            Some("t-0001"),
        ),
        event(2, t0 + 3, S::Removed, &[E::MaintenancePickUp], None),
        event(2, t0 + 4, S::Available, &[E::ProviderDropOff], None),
        event(3, t0 + 5, S::NonContactable, &[E::CommsLost], None),
        event(3, t0 + 6, S::Missing, &[E::NotLocated], None),
        event(3, t0 + 7, S::Available, &[E::Located], None),
        event(
            4,
            t0 + 8,
            S::Elsewhere,
            &[E::TripLeaveJurisdiction],
            Some("t-0004"),
        ),
    ]
}

fn mds_telemetry() -> Vec<MdsTelemetry> {
    (0..30)
        .map(|i| MdsTelemetry {
            bike_id: bike_code(i % 5),
            timestamp_ms: NOW - 3_600_000 + i as i64 * 10_000,
            location: at(31.23 + i as f64 * 1e-5, 121.47),
            battery_pct: Some(90),
            trip_ids: if i % 2 == 0 {
                vec!["t-0001".into()]
            } else {
                Vec::new()
            },
            tipped_over: (i == 7).then_some(true),
        })
        .collect()
}

fn mds_statuses() -> Vec<MdsVehicleStatus> {
    mds_events()
        .into_iter()
        .map(|e| MdsVehicleStatus {
            last_telemetry: MdsTelemetry {
                bike_id: e.bike_id.clone(),
                timestamp_ms: e.timestamp_ms,
                location: e.location,
                battery_pct: e.battery_pct,
                trip_ids: Vec::new(),
                tipped_over: None,
            },
            last_event: e,
        })
        .collect()
}

/// A draft-7 schema for one MDS 2.0 Provider response, transcribed from the spec
/// (mds-openapi `reference/provider.yaml` and `models/*`, micromobility mode). Objects are
/// closed (`additionalProperties: false`) so that no field outside the spec, a rider's above
/// all, can slip in.
fn mds_schema(payload: &str, item: &str, realtime: bool, links: bool) -> Value {
    let uuid = json!({"type": "string",
        "pattern": "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"});
    let ts = json!({"type": "integer", "minimum": 0});
    let uri_or_null = json!({"type": ["string", "null"], "format": "uri"});
    let definitions = json!({
        "uuid": uuid,
        "timestamp": ts,
        "gps": {
            "type": "object", "required": ["lat", "lng"], "additionalProperties": false,
            "properties": {
                "lat": {"type": "number", "minimum": -90, "maximum": 90},
                "lng": {"type": "number", "minimum": -180, "maximum": 180},
                "altitude": {"type": "number"}, "heading": {"type": "number"},
                "speed": {"type": "number"}, "horizontal_accuracy": {"type": "number"},
                "vertical_accuracy": {"type": "number"},
                "satellites": {"type": "integer", "minimum": 0}
            }
        },
        "percent": {"type": "integer", "minimum": 0, "maximum": 100},
        "vehicle_state": {"enum": ["removed", "available", "non_operational", "reserved",
            "on_trip", "non_contactable", "missing", "elsewhere"]},
        "event_type": {"enum": ["agency_drop_off", "agency_pick_up", "battery_charged",
            "battery_low", "changed_geographies", "comms_lost", "comms_restored",
            "compliance_pick_up", "decommissioned", "located", "maintenance",
            "maintenance_pick_up", "not_located", "off_hours", "on_hours", "provider_drop_off",
            "rebalance_pick_up", "reservation_cancel", "reservation_start", "system_resume",
            "system_suspend", "trip_cancel", "trip_end", "trip_enter_jurisdiction",
            "trip_leave_jurisdiction", "trip_start", "unspecified"]},
        "uuids": {"type": "array", "items": {"$ref": "#/definitions/uuid"}},
        "accessibility": {"type": "array", "items": {"enum": ["adaptive"]}},
        "vehicle": {
            "type": "object", "additionalProperties": false,
            "required": ["device_id", "provider_id", "vehicle_id", "vehicle_type", "propulsion_types"],
            "properties": {
                "device_id": {"$ref": "#/definitions/uuid"},
                "provider_id": {"$ref": "#/definitions/uuid"},
                "data_provider_id": {"$ref": "#/definitions/uuid"},
                "vehicle_id": {"type": "string", "minLength": 1},
                "vehicle_type": {"enum": ["bicycle", "bus", "cargo_bicycle", "car",
                    "delivery_robot", "moped", "motorcycle", "scooter_standing",
                    "scooter_seated", "truck", "other"]},
                "propulsion_types": {"type": "array", "minItems": 1, "uniqueItems": true,
                    "items": {"enum": ["human", "electric_assist", "electric", "combustion",
                        "combustion_diesel", "hybrid", "hydrogen_fuel_cell", "plug_in_hybrid"]}},
                "accessibility_attributes": {"$ref": "#/definitions/accessibility"},
                "vehicle_attributes": {"type": "object", "additionalProperties": false,
                    "properties": {"year": {"type": "integer"}, "make": {"type": "string"},
                        "model": {"type": "string"}}},
                "battery_capacity": {"type": "integer", "minimum": 0},
                "fuel_capacity": {"type": "integer", "minimum": 0},
                "maximum_speed": {"type": "integer", "minimum": 0}
            }
        },
        "event": {
            "type": "object", "additionalProperties": false,
            "required": ["device_id", "provider_id", "event_id", "vehicle_state", "event_types",
                "timestamp", "location"],
            "properties": {
                "device_id": {"$ref": "#/definitions/uuid"},
                "provider_id": {"$ref": "#/definitions/uuid"},
                "data_provider_id": {"$ref": "#/definitions/uuid"},
                "event_id": {"$ref": "#/definitions/uuid"},
                "vehicle_state": {"$ref": "#/definitions/vehicle_state"},
                "event_types": {"type": "array", "minItems": 1,
                    "items": {"$ref": "#/definitions/event_type"}},
                "timestamp": {"$ref": "#/definitions/timestamp"},
                "publication_time": {"$ref": "#/definitions/timestamp"},
                "location": {"$ref": "#/definitions/gps"},
                "event_geographies": {"$ref": "#/definitions/uuids"},
                "battery_percent": {"$ref": "#/definitions/percent"},
                "fuel_percent": {"$ref": "#/definitions/percent"},
                "trip_ids": {"$ref": "#/definitions/uuids"},
                "associated_ticket": {"type": "string"}
            },
            "if": {"required": ["event_types"], "properties": {"event_types": {"contains":
                {"enum": ["trip_start", "trip_end", "trip_cancel", "trip_enter_jurisdiction",
                    "trip_leave_jurisdiction"]}}}},
            "then": {"required": ["trip_ids"], "properties": {"trip_ids": {"minItems": 1}}}
        },
        "telemetry": {
            "type": "object", "additionalProperties": false,
            "required": ["device_id", "provider_id", "telemetry_id", "timestamp", "trip_ids",
                "journey_id", "location"],
            "properties": {
                "device_id": {"$ref": "#/definitions/uuid"},
                "provider_id": {"$ref": "#/definitions/uuid"},
                "data_provider_id": {"$ref": "#/definitions/uuid"},
                "telemetry_id": {"$ref": "#/definitions/uuid"},
                "timestamp": {"$ref": "#/definitions/timestamp"},
                "trip_ids": {"oneOf": [{"$ref": "#/definitions/uuids"}, {"type": "null"}]},
                "journey_id": {"oneOf": [{"$ref": "#/definitions/uuid"}, {"type": "null"}]},
                "stop_id": {"$ref": "#/definitions/uuid"},
                "location": {"$ref": "#/definitions/gps"},
                "location_type": {"enum": ["street", "sidewalk", "crosswalk", "garage", "bike_lane"]},
                "battery_percent": {"$ref": "#/definitions/percent"},
                "fuel_percent": {"$ref": "#/definitions/percent"},
                "tipped_over": {"type": "boolean"}
            }
        },
        "vehicle_status": {
            "type": "object", "additionalProperties": false,
            "required": ["device_id", "provider_id", "last_event", "last_telemetry"],
            "properties": {
                "device_id": {"$ref": "#/definitions/uuid"},
                "provider_id": {"$ref": "#/definitions/uuid"},
                "data_provider_id": {"$ref": "#/definitions/uuid"},
                "last_event": {"$ref": "#/definitions/event"},
                "last_telemetry": {"$ref": "#/definitions/telemetry"}
            }
        },
        "trip": {
            "type": "object", "additionalProperties": false,
            "required": ["provider_id", "device_id", "trip_id", "start_time", "end_time",
                "start_location", "end_location", "duration", "distance"],
            "properties": {
                "provider_id": {"$ref": "#/definitions/uuid"},
                "data_provider_id": {"$ref": "#/definitions/uuid"},
                "device_id": {"$ref": "#/definitions/uuid"},
                "journey_id": {"$ref": "#/definitions/uuid"},
                "trip_id": {"$ref": "#/definitions/uuid"},
                "trip_type": {"enum": ["rider", "rebalance", "maintenance"]},
                "start_time": {"$ref": "#/definitions/timestamp"},
                "end_time": {"$ref": "#/definitions/timestamp"},
                "start_location": {"$ref": "#/definitions/gps"},
                "end_location": {"$ref": "#/definitions/gps"},
                "duration": {"type": "integer", "minimum": 0},
                "distance": {"type": "integer", "minimum": 0},
                "publication_time": {"$ref": "#/definitions/timestamp"},
                "accessibility_attributes": {"$ref": "#/definitions/accessibility"},
                "parking_verification_url": uri_or_null,
                "parking_category": {"enum": ["corral", "curb", "rack", "other_valid", "invalid"]},
                "standard_cost": {"type": ["integer", "null"], "minimum": 0},
                "actual_cost": {"type": ["integer", "null"], "minimum": 0},
                "currency": {"type": "string", "pattern": "^[A-Z]{3}$"}
            }
        },
        "links": {
            "type": "object", "required": ["next"], "additionalProperties": false,
            "properties": {"first": uri_or_null, "last": uri_or_null, "prev": uri_or_null,
                "next": uri_or_null}
        }
    });
    let mut required = vec![json!("version"), json!(payload)];
    let mut properties = serde_json::Map::new();
    properties.insert(
        "version".into(),
        json!({"type": "string", "pattern": "^2\\.(\\d|[1-9]\\d+)\\.(\\d|[1-9]\\d+)$"}),
    );
    properties.insert(
        payload.into(),
        json!({"type": "array", "items": {"$ref": format!("#/definitions/{item}")}}),
    );
    if realtime {
        required.extend([json!("last_updated"), json!("ttl")]);
        properties.insert(
            "last_updated".into(),
            json!({"$ref": "#/definitions/timestamp"}),
        );
        properties.insert(
            "ttl".into(),
            json!({"type": "integer", "minimum": 0, "maximum": 300_000}),
        );
    }
    if links {
        properties.insert("links".into(), json!({"$ref": "#/definitions/links"}));
    }
    json!({
        "$schema": "http://json-schema.org/draft-07/schema#",
        "definitions": definitions,
        "type": "object",
        "required": required,
        "additionalProperties": false,
        "properties": properties,
    })
}

fn mds_validate(schema: Value, doc: &[u8], what: &str) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("schema.json");
    std::fs::write(&path, schema.to_string()).expect("write schema");
    assert_valid(&path, doc, what);
}

fn fleet_of(n: usize) -> Vec<MdsVehicle> {
    (0..n)
        .map(|i| {
            let mut v = MdsVehicle::bicycle(&bike_code(i));
            if i % 2 == 0 {
                v.vehicle_attributes = Some(mds::VehicleAttributes {
                    year: Some(2025),
                    make: Some("Wulian".into()),
                    model: Some("C1".into()),
                });
            }
            v
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// MDS
// ---------------------------------------------------------------------------------------------

#[test]
fn mds_payloads_match_the_mds_2_0_provider_schema() {
    let ctx = mds_ctx();
    let fleet = fleet_of(30);
    let page = Page::new(Some(1), Some(10));
    let cases: Vec<(&str, Value, Vec<u8>)> = vec![
        (
            "/vehicles",
            mds_schema("vehicles", "vehicle", true, true),
            mds::vehicles_response(&ctx, &fleet, page)
                .to_json()
                .unwrap(),
        ),
        (
            "/vehicles/{device_id}",
            mds_schema("vehicles", "vehicle", true, true),
            mds::vehicle_response(&ctx, &fleet[3]).to_json().unwrap(),
        ),
        (
            "/vehicles/status",
            mds_schema("vehicles_status", "vehicle_status", true, true),
            mds::vehicles_status_response(&ctx, &mds_statuses(), page)
                .unwrap()
                .to_json()
                .unwrap(),
        ),
        (
            "/vehicles/status/{device_id}",
            mds_schema("vehicles_status", "vehicle_status", true, true),
            mds::vehicle_status_response(&ctx, &mds_statuses()[2])
                .unwrap()
                .to_json()
                .unwrap(),
        ),
        (
            "/trips",
            mds_schema("trips", "trip", false, false),
            mds::trips_response(&ctx, &mds_trips())
                .unwrap()
                .to_json()
                .unwrap(),
        ),
        (
            "/telemetry",
            mds_schema("telemetry", "telemetry", false, false),
            mds::telemetry_response(&ctx, &mds_telemetry())
                .unwrap()
                .to_json()
                .unwrap(),
        ),
        (
            "/events/historical",
            mds_schema("events", "event", false, false),
            mds::events_historical_response(&ctx, &mds_events())
                .unwrap()
                .to_json()
                .unwrap(),
        ),
        (
            "/events/recent",
            mds_schema("events", "event", false, true),
            mds::events_recent_response(&ctx, &mds_events(), (NOW - 3_600_000, NOW), page)
                .unwrap()
                .to_json()
                .unwrap(),
        ),
    ];
    for (endpoint, schema, body) in cases {
        mds_validate(schema, &body, endpoint);
    }
    // The schema really checks: a 1.x-style version, a rider field and a trip event without
    // its trip are refused.
    let mut broken = to_value(&mds::events_historical_response(&ctx, &mds_events()).unwrap());
    broken["version"] = json!("2.0");
    broken["events"][0]["rider_id"] = json!("r-1");
    broken["events"][1]
        .as_object_mut()
        .unwrap()
        .remove("trip_ids");
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("schema.json");
    std::fs::write(
        &path,
        mds_schema("events", "event", false, false).to_string(),
    )
    .unwrap();
    let (ok, printed) = validate(&path, broken.to_string().as_bytes());
    assert!(!ok, "a broken MDS body passed:\n{printed}");
    for needle in ["/version", "/events/0", "/events/1"] {
        assert!(
            printed.contains(needle),
            "{needle} not reported:\n{printed}"
        );
    }

    // Field by field where the schema cannot say it: units, ids, nulls.
    let trips = to_value(&mds::trips_response(&ctx, &mds_trips()).unwrap());
    assert_eq!(trips["version"], "2.0.0");
    assert!(trips.get("last_updated").is_none() && trips.get("links").is_none());
    let t = &trips["trips"][1];
    assert_eq!(t["duration"], 600 + 61 - 60, "seconds, rounded");
    assert_eq!(t["trip_id"], ctx.trip_id("t-0001"));
    assert_eq!(t["device_id"], ctx.device_id("bike-000001"));
    assert_eq!(
        (t["standard_cost"].as_u64(), t["currency"].as_str()),
        (Some(150), Some("CNY"))
    );
    assert!(t.get("route").is_none() && t.get("fare_attributes").is_none());
    assert!(
        (t["start_location"]["speed"].as_f64().unwrap() - 4.0).abs() < 1e-9,
        "m/s"
    );
    let tel = to_value(&mds::telemetry_response(&ctx, &mds_telemetry()).unwrap());
    assert_eq!(tel["telemetry"][0]["journey_id"], Value::Null);
    assert_eq!(
        tel["telemetry"][1]["trip_ids"],
        Value::Null,
        "not on a trip"
    );
    assert_eq!(
        tel["telemetry"][0]["trip_ids"],
        json!([ctx.trip_id("t-0001")])
    );
    let vehicles = to_value(&mds::vehicles_response(&ctx, &fleet, page));
    let v = &vehicles["vehicles"][1];
    assert_eq!(v["vehicle_id"], "bike-000001");
    assert_eq!(
        (v["vehicle_type"].as_str(), v["propulsion_types"].clone()),
        (Some("bicycle"), json!(["human"]))
    );
    assert!(
        v.get("battery_capacity").is_none(),
        "a pedal bike has no battery capacity"
    );
    assert_eq!(
        (vehicles["last_updated"].as_i64(), vehicles["ttl"].as_u64()),
        (Some(NOW), Some(30_000))
    );
    let events = to_value(&mds::events_historical_response(&ctx, &mds_events()).unwrap());
    assert_eq!(
        events["events"][2]["event_types"],
        json!(["trip_end", "battery_low"])
    );
    assert_eq!(events["events"][2]["vehicle_state"], "non_operational");
    assert_eq!(mds::MEDIA_TYPE, "application/vnd.mds+json;version=2.0");
}

#[test]
fn mds_pagination_walks_every_page_by_its_links() {
    let mut ctx = mds_ctx();
    ctx.ttl_ms = 10_000_000;
    let fleet = fleet_of(2_500);
    let mut page = Page::new(None, Some(1000));
    let mut seen = HashSet::new();
    let mut pages = 0;
    loop {
        let body = to_value(&mds::vehicles_response(&ctx, &fleet, page));
        assert_eq!(body["ttl"], 300_000, "ttl capped at 5 minutes");
        pages += 1;
        for v in body["vehicles"].as_array().unwrap() {
            assert!(
                seen.insert(v["device_id"].as_str().unwrap().to_string()),
                "served twice"
            );
        }
        let links = &body["links"];
        assert_eq!(
            links["first"],
            "http://127.0.0.1:8080/mds/v2/acme/vehicles?page%5Bnumber%5D=1&page%5Bsize%5D=1000"
        );
        assert_eq!(
            links["last"],
            "http://127.0.0.1:8080/mds/v2/acme/vehicles?page%5Bnumber%5D=3&page%5Bsize%5D=1000"
        );
        if page.number == 1 {
            assert_eq!(links["prev"], Value::Null);
        } else {
            assert!(
                links["prev"]
                    .as_str()
                    .unwrap()
                    .contains(&format!("%5D={}&", page.number - 1))
            );
        }
        let Some(next) = links["next"].as_str() else {
            break;
        };
        let number = next
            .split("page%5Bnumber%5D=")
            .nth(1)
            .and_then(|rest| rest.split('&').next())
            .and_then(|n| n.parse().ok())
            .expect("next names a page number");
        page = Page::new(Some(number), Some(1000));
        assert!(pages < 10, "links loop");
    }
    assert_eq!((pages, seen.len()), (3, 2_500));

    // Recent events keep their range in the links; an empty page still says where to go.
    let events: Vec<MdsEvent> = (0..5).flat_map(|_| mds_events()).collect();
    let body = to_value(
        &mds::events_recent_response(
            &ctx,
            &events,
            (NOW - 3_600_000, NOW),
            Page::new(Some(2), Some(20)),
        )
        .unwrap(),
    );
    assert_eq!(body["events"].as_array().unwrap().len(), 20);
    assert!(body.get("ttl").is_none(), "recent events carry no ttl");
    let next = body["links"]["next"].as_str().unwrap();
    assert!(next.starts_with(&format!(
        "http://127.0.0.1:8080/mds/v2/acme/events/recent?start_time={}&end_time={NOW}&",
        NOW - 3_600_000
    )));
    let beyond = to_value(&mds::vehicles_response(
        &ctx,
        &fleet,
        Page::new(Some(99), Some(1000)),
    ));
    assert_eq!(beyond["vehicles"], json!([]));
    assert_eq!(beyond["links"]["next"], Value::Null);

    // Query parameters.
    let hour = HourWindow::parse("2025-12-31T23").unwrap();
    assert_eq!((hour.start_ms, hour.end_ms), (NOW - 3_600_000, NOW));
    assert!(HourWindow::parse("2025-12-31T24").is_err());
    assert!(mds::recent_window(NOW - 1000, NOW, NOW).is_ok());
    assert!(
        mds::recent_window(NOW, NOW - 1000, NOW).is_err(),
        "reversed"
    );
    assert!(
        mds::recent_window(NOW - 15 * 86_400_000, NOW, NOW).is_err(),
        "older than 2 weeks"
    );
}

#[test]
fn mds_state_machine_follows_the_micromobility_table() {
    use EventType as E;
    use VehicleState as S;
    let allowed = [
        (S::Available, E::TripStart, S::OnTrip),
        (S::Reserved, E::TripStart, S::OnTrip),
        (S::OnTrip, E::TripEnd, S::Available),
        (S::OnTrip, E::TripCancel, S::Available),
        (S::Available, E::ReservationStart, S::Reserved),
        (S::Reserved, E::ReservationCancel, S::Available),
        (S::Available, E::BatteryLow, S::NonOperational),
        (S::NonOperational, E::BatteryCharged, S::Available),
        (S::Available, E::Maintenance, S::NonOperational),
        (S::NonOperational, E::Maintenance, S::Available),
        (S::Available, E::MaintenancePickUp, S::Removed),
        (S::NonOperational, E::MaintenancePickUp, S::Removed),
        (S::Available, E::RebalancePickUp, S::Removed),
        (S::Removed, E::ProviderDropOff, S::Available),
        (S::OnTrip, E::CommsLost, S::NonContactable),
        (S::NonContactable, E::CommsRestored, S::OnTrip),
        (S::NonContactable, E::NotLocated, S::Missing),
        (S::Missing, E::Located, S::Available),
        (S::OnTrip, E::TripLeaveJurisdiction, S::Elsewhere),
        (S::Elsewhere, E::TripEnterJurisdiction, S::OnTrip),
        (S::Missing, E::Decommissioned, S::Removed),
        (S::OnTrip, E::ChangedGeographies, S::OnTrip),
        (S::Available, E::OffHours, S::NonOperational),
        (S::NonOperational, E::OnHours, S::Available),
    ];
    for (from, event, to) in allowed {
        assert!(
            mds::transition_allowed(from, event, to),
            "{from} -{event}-> {to}"
        );
    }
    let refused = [
        (S::Available, E::TripEnd, S::Available),
        (S::Removed, E::TripStart, S::OnTrip),
        (S::OnTrip, E::BatteryLow, S::NonOperational),
        (S::NonOperational, E::TripStart, S::OnTrip),
        (S::Reserved, E::RebalancePickUp, S::Removed),
        (S::OnTrip, E::MaintenancePickUp, S::Removed),
        (S::Missing, E::CommsRestored, S::Available),
        (S::NonContactable, E::Located, S::Available),
        (S::Available, E::BatteryCharged, S::Available),
        (S::Available, E::TripStart, S::Available),
        (S::NonContactable, E::CommsLost, S::NonContactable),
    ];
    for (from, event, to) in refused {
        assert!(
            !mds::transition_allowed(from, event, to),
            "{from} -{event}-> {to}"
        );
    }
    // Several types in one event pass through states that are then discarded.
    assert!(mds::events_allowed(
        S::OnTrip,
        &[E::TripEnd, E::BatteryLow],
        S::NonOperational
    ));
    assert!(!mds::events_allowed(
        S::OnTrip,
        &[E::BatteryLow, E::TripEnd],
        S::NonOperational
    ));
    assert!(!mds::events_allowed(S::Available, &[], S::Available));
    // Every event of the fixture follows from its predecessor of the same bike.
    let events = mds_events();
    for pair in events.windows(2).filter(|w| w[0].bike_id == w[1].bike_id) {
        assert!(
            mds::events_allowed(
                pair[0].vehicle_state,
                &pair[1].event_types,
                pair[1].vehicle_state
            ),
            "{:?} then {:?}",
            pair[0].event_types,
            pair[1].event_types
        );
    }
    // The table uses every micromobility event type and reaches every state.
    for &event in EventType::ALL {
        assert!(
            mds::transitions().iter().any(|t| t.event == event),
            "{event} unused"
        );
    }
    for &state in VehicleState::ALL {
        assert!(
            mds::transitions().iter().any(|t| t.to == state),
            "{state} unreachable"
        );
        assert_eq!(VehicleState::parse(state.as_str()), Some(state));
        assert_eq!(to_value(&state), json!(state.as_str()));
    }
    assert_eq!(
        to_value(&E::TripEnterJurisdiction),
        json!("trip_enter_jurisdiction")
    );
    assert_eq!(
        VehicleState::parse("unknown"),
        None,
        "1.x's unknown is gone in 2.0"
    );
}

#[test]
fn mds_carries_no_rider_identity() {
    let ctx = mds_ctx();
    let bodies = [
        to_value(&mds::vehicles_response(
            &ctx,
            &fleet_of(5),
            Page::new(None, None),
        )),
        to_value(
            &mds::vehicles_status_response(&ctx, &mds_statuses(), Page::new(None, None)).unwrap(),
        ),
        to_value(&mds::trips_response(&ctx, &mds_trips()).unwrap()),
        to_value(&mds::telemetry_response(&ctx, &mds_telemetry()).unwrap()),
        to_value(&mds::events_historical_response(&ctx, &mds_events()).unwrap()),
    ];
    for body in &bodies {
        let mut found = BTreeSet::new();
        keys(body, &mut found);
        for key in &found {
            for word in [
                "rider", "user", "customer", "member", "account", "token", "name", "phone", "email",
            ] {
                assert!(!key.contains(word), "MDS payload has a field {key:?}");
            }
        }
        let text = body.to_string();
        assert!(!text.contains("t-00"), "internal trip ids stay internal");
    }
}

#[test]
fn mds_ids_are_stable_uuids_per_tenant() {
    let ctx = mds_ctx();
    let id = ctx.device_id("bike-000001");
    assert_eq!(id, ctx.device_id("bike-000001"), "stable");
    assert_ne!(id, ctx.device_id("bike-000002"));
    let mut other = mds_ctx();
    other.namespace = *b"other-tenant-ns1";
    assert_ne!(id, other.device_id("bike-000001"), "namespaced per tenant");
    assert_ne!(
        ctx.trip_id("bike-000001"),
        id,
        "devices and trips never collide"
    );
    let b = id.as_bytes();
    assert_eq!(id.len(), 36);
    assert_eq!((b[8], b[13], b[18], b[23]), (b'-', b'-', b'-', b'-'));
    assert_eq!(b[14], b'8', "version 8");
    assert!(matches!(b[19], b'8' | b'9' | b'a' | b'b'), "RFC variant");
    assert_eq!(
        mds::uuid_v5_like(&ctx.namespace, "x"),
        mds::uuid_v5_like(&ctx.namespace, "x")
    );
    // Event and telemetry ids are unique across the fixture.
    let events = to_value(&mds::events_historical_response(&ctx, &mds_events()).unwrap());
    let ids: HashSet<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), mds_events().len());
}

#[test]
fn mds_builders_refuse_records_that_break_the_spec() {
    let ctx = mds_ctx();
    let mut trip_event = mds_events()[1].clone();
    trip_event.trip_ids.clear();
    let err = mds::events_historical_response(&ctx, &[trip_event]).unwrap_err();
    assert!(err.to_string().contains("trip_ids"), "{err}");
    let mut no_type = mds_events()[0].clone();
    no_type.event_types.clear();
    assert!(mds::events_historical_response(&ctx, &[no_type]).is_err());
    let mut lost = mds_events()[0].clone();
    lost.location.lat = f64::NAN;
    assert!(mds::events_historical_response(&ctx, &[lost]).is_err());

    let mut trip = mds_trips()[0].clone();
    trip.currency = Some("rmb".into());
    assert!(mds::trips_response(&ctx, &[trip]).is_err());
    let mut trip = mds_trips()[0].clone();
    trip.end_ms = trip.start_ms - 1;
    assert!(mds::trips_response(&ctx, &[trip]).is_err());

    let mut tel = mds_telemetry()[0].clone();
    tel.battery_pct = Some(101);
    assert!(mds::telemetry_response(&ctx, &[tel]).is_err());
    let mut status = mds_statuses()[0].clone();
    status.last_telemetry.bike_id = "bike-999999".into();
    assert!(mds::vehicle_status_response(&ctx, &status).is_err());
}
