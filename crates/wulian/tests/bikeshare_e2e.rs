//! The bike share end to end: the real binary, a lock speaking the smart-lock contract over MQTT
//! (Eclipse Paho, tests/clients/lock.py), a rider and an operator over HTTP with curl.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{Value, json};
use support::{TestServer, clients_dir, curl, eventually};

/// The parking fence's centre; the service area is a 4 km square around it.
const PARK: (f64, f64) = (30.2600, 120.1500);
/// Inside the service area, outside every parking fence.
const STREET: (f64, f64) = (30.2650, 120.1550);

fn call(
    server: &TestServer,
    auth: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
    extra: &[&str],
) -> (u16, Value) {
    let auth = format!("Authorization: Bearer {auth}");
    let url = format!("{}{path}", server.http);
    let mut args = vec!["-X", method, "-H", &auth];
    args.extend_from_slice(extra);
    args.push(&url);
    let body = body.map(|b| b.to_string());
    if let Some(body) = &body {
        args.extend([
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            body,
        ]);
    }
    curl(&args)
}

fn square(center: (f64, f64), half_deg: f64) -> Value {
    let (lat, lon) = center;
    json!({"type": "Polygon", "coordinates": [[
        [lon - half_deg, lat - half_deg], [lon + half_deg, lat - half_deg],
        [lon + half_deg, lat + half_deg], [lon - half_deg, lat + half_deg],
        [lon - half_deg, lat - half_deg]
    ]]})
}

/// A lock process and the lines it prints.
struct Lock {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
}

impl Lock {
    fn start(server: &TestServer, id: &str, token: &str, at: (f64, f64)) -> Lock {
        let mut child = Command::new("python3")
            .arg(clients_dir().join("lock.py"))
            .args([&server.mqtt_host, &server.mqtt_port.to_string(), id, token])
            .args([at.0.to_string(), at.1.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 with paho-mqtt");
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let lock = Lock {
            child,
            stdin,
            lines: rx,
        };
        lock.expect("ready");
        lock
    }

    fn send(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").unwrap();
        self.stdin.flush().unwrap();
    }

    /// Waits for a line starting with `prefix`; returns it.
    fn expect(&self, prefix: &str) -> String {
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(20))
                .unwrap_or_else(|_| panic!("the lock printed {prefix:?}"));
            if line.starts_with(prefix) {
                return line;
            }
        }
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

/// A valid PRC resident identity number for a birth date (ISO 7064 MOD 11-2 check character).
fn id_number(birth: &str, seq: u32) -> String {
    let first17 = format!("330106{birth}{seq:03}");
    const W: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
    let sum: u32 = first17
        .bytes()
        .zip(W)
        .map(|(b, w)| u32::from(b - b'0') * w)
        .sum();
    let check = b"10X98765432"[(sum % 11) as usize] as char;
    format!("{first17}{check}")
}

/// The operator's setup: the system's settings, fences (name, kind, polygon; capacity 10) and
/// bikes; returns the bikes' tokens.
fn set_up(
    server: &TestServer,
    admin: &str,
    settings: Value,
    zones: &[(&str, &str, Value)],
    bikes: &[&str],
) -> Vec<String> {
    let (code, body) = call(
        server,
        admin,
        "PUT",
        "/api/v1/bikeshare/system",
        Some(settings),
        &[],
    );
    assert_eq!(code, 200, "{body}");
    for (name, kind, polygon) in zones {
        let zone = json!({"kind": kind, "polygon": polygon, "properties": {"capacity": 10}});
        let path = format!("/api/v1/zones/{name}");
        let (code, body) = call(server, admin, "PUT", &path, Some(zone), &[]);
        assert!(code == 200 || code == 201, "{body}");
    }
    bikes
        .iter()
        .map(|id| {
            let bike = Some(json!({"id": id}));
            let (code, body) = call(server, admin, "POST", "/api/v1/bikeshare/bikes", bike, &[]);
            assert_eq!(code, 201, "{body}");
            body["token"].as_str().unwrap().to_string()
        })
        .collect()
}

fn trip_state(server: &TestServer, rider: &str, trip: &str) -> Value {
    let (code, body) = call(
        server,
        rider,
        "GET",
        &format!("/api/v1/rider/trips/{trip}"),
        None,
        &[],
    );
    assert_eq!(code, 200, "{body}");
    body
}

#[test]
fn a_rider_rents_rides_and_pays_and_the_lock_decides() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path());
    let admin = server.admin_key.clone().unwrap();

    // The operator sets the system up: settings, fences, two bikes.
    let tokens = set_up(
        &server,
        &admin,
        json!({
            "name": "Test city bikes", "payments_sandbox": true, "unlock_timeout_s": 3,
            "parking_policy": "grace", "grace_minutes": 5
        }),
        &[
            ("city", "service_area", square(PARK, 0.02)),
            ("blue-1", "parking", square(PARK, 0.0002)),
        ],
        &["bike-e2e-1", "bike-e2e-2"],
    );
    let mut lock = Lock::start(&server, "bike-e2e-1", &tokens[0], PARK);
    let mut lock2 = Lock::start(&server, "bike-e2e-2", &tokens[1], PARK);

    // A 12-year-old may not sign up; an adult may, and tops up through the sandbox provider.
    let form = |phone: &str, id: String| json!({"phone": phone, "name": "Lin", "real_name": "林小明", "id_number": id, "location_consent": true});
    let (code, body) = call(
        &server,
        "none",
        "POST",
        "/api/v1/rider/default/sign-up",
        Some(form("13800138001", id_number("20200101", 11))),
        &[],
    );
    assert_eq!(
        (code, body["code"].as_str()),
        (422, Some("under_age")),
        "{body}"
    );
    let (code, body) = call(
        &server,
        "none",
        "POST",
        "/api/v1/rider/default/sign-up",
        Some(form("13800138002", id_number("19900315", 12))),
        &[],
    );
    assert_eq!(code, 201, "{body}");
    let rider = body["token"].as_str().unwrap().to_string();
    let (code, body) = call(
        &server,
        &rider,
        "POST",
        "/api/v1/rider/wallet/top-ups",
        Some(json!({"amount": 5000, "idempotency_key": "t1"})),
        &[],
    );
    assert_eq!(code, 200, "{body}");
    let (code, body) = call(
        &server,
        &rider,
        "POST",
        "/api/v1/rider/wallet/top-ups",
        Some(json!({"amount": 6000, "idempotency_key": "t2"})),
        &[],
    );
    assert_eq!(
        (code, body["code"].as_str()),
        (422, Some("balance_cap_exceeded")),
        "no balance above ¥100: {body}"
    );

    // The bike is offered nearby.
    let nearby = eventually(Duration::from_secs(10), "the bike offered", || {
        let (_, body) = call(
            &server,
            &rider,
            "GET",
            &format!("/api/v1/rider/bikes/nearby?lat={}&lon={}", PARK.0, PARK.1),
            None,
            &[],
        );
        body["bikes"].as_array().filter(|b| b.len() == 2).cloned()
    });
    assert!(nearby.iter().any(|b| b["id"] == "bike-e2e-1"));

    // Rent: the trip rides only because the lock confirmed with the token.
    let key = ["-H", "Idempotency-Key: rent-1"];
    let (code, body) = call(
        &server,
        &rider,
        "POST",
        "/api/v1/rider/trips",
        Some(json!({"bike": "bike-e2e-1"})),
        &key,
    );
    assert_eq!(code, 201, "{body}");
    assert_eq!(body["trip"]["state"], "riding", "{body}");
    let trip = body["trip"]["id"].as_str().unwrap().to_string();
    assert_eq!(lock.expect("unlocked"), format!("unlocked {trip}"));
    assert_eq!(
        lock.expect("interval"),
        "interval 10",
        "riding reports every 10 s"
    );
    // A retried request returns the same trip and does not unlock again.
    let (code, body) = call(
        &server,
        &rider,
        "POST",
        "/api/v1/rider/trips",
        Some(json!({"bike": "bike-e2e-1"})),
        &key,
    );
    assert_eq!(
        (code, body["trip"]["id"].as_str()),
        (201, Some(trip.as_str())),
        "{body}"
    );
    // A second rental while riding is refused.
    let (code, body) = call(
        &server,
        &rider,
        "POST",
        "/api/v1/rider/trips",
        Some(json!({"bike": "bike-e2e-2"})),
        &["-H", "Idempotency-Key: rent-x"],
    );
    assert_eq!(
        (code, body["code"].as_str()),
        (409, Some("trip_in_progress")),
        "{body}"
    );

    // Ride, then lock outside the fences: the grace policy keeps the trip open.
    lock.send(&format!("report {} {}", STREET.0 - 0.001, STREET.1));
    lock.send(&format!("close {} {}", STREET.0, STREET.1));
    lock.expect("closed");
    let ending = eventually(
        Duration::from_secs(10),
        "the trip waiting outside the fences",
        || {
            let t = trip_state(&server, &rider, &trip);
            (t["trip"]["state"] == "ending").then_some(t)
        },
    );
    assert_eq!(ending["parking"]["parkable"], false, "{ending}");
    assert_eq!(
        ending["parking"]["nearest_parking"]["zone"], "blue-1",
        "{ending}"
    );
    // The rider reopens the lock, moves the bike into the fence and locks: settled, no fee.
    let (code, body) = call(
        &server,
        &rider,
        "POST",
        &format!("/api/v1/rider/trips/{trip}/resume"),
        None,
        &[],
    );
    assert_eq!(
        (code, body["trip"]["state"].as_str()),
        (200, Some("riding")),
        "{body}"
    );
    lock.send(&format!("close {} {}", PARK.0, PARK.1));
    let settled = eventually(Duration::from_secs(10), "the trip settled", || {
        let t = trip_state(&server, &rider, &trip);
        (t["trip"]["state"] == "settled").then_some(t)
    });
    let receipt = &settled["trip"];
    assert_eq!(receipt["end_zone"], "blue-1", "{receipt}");
    assert_eq!(receipt["out_of_fence"], false);
    let total = receipt["total"].as_i64().unwrap();
    assert!(total > 0, "a started period is charged: {receipt}");
    assert!(
        receipt["fare"]["lines"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["kind"] != "dispatch_fee")
    );
    let (_, me) = call(&server, &rider, "GET", "/api/v1/rider/me", None, &[]);
    assert_eq!(me["balance"].as_i64(), Some(5000 - total), "{me}");
    assert_eq!(
        lock.expect("interval"),
        "interval 300",
        "parked reports every 300 s"
    );

    // A forged confirmation does not start a trip: it fails, nothing is charged, the bike is
    // flagged and an inspection is ordered.
    lock2.send("mode wrong-token");
    let (code, body) = call(
        &server,
        &rider,
        "POST",
        "/api/v1/rider/trips",
        Some(json!({"bike": "bike-e2e-2"})),
        &["-H", "Idempotency-Key: rent-2"],
    );
    assert_eq!(code, 201, "{body}");
    assert_eq!(body["trip"]["state"], "failed", "{body}");
    let (_, fleet) = call(
        &server,
        &admin,
        "GET",
        "/api/v1/bikeshare/fleet?status=faulty",
        None,
        &[],
    );
    assert_eq!(fleet["bikes"][0]["id"], "bike-e2e-2", "{fleet}");
    let (_, orders) = call(
        &server,
        &admin,
        "GET",
        "/api/v1/bikeshare/work-orders?bike=bike-e2e-2",
        None,
        &[],
    );
    let order = orders["work_orders"][0]["id"].as_str().unwrap().to_string();
    // Assigned to a crew by PATCH, listed under it, unassigned by `null`.
    let patch = |body: Value| {
        call(
            &server,
            &admin,
            "PATCH",
            &format!("/api/v1/bikeshare/work-orders/{order}"),
            Some(body),
            &[],
        )
    };
    let (code, body) = patch(json!({"assignee": " North crew "}));
    assert_eq!(
        (code, &body["assignee"]),
        (200, &json!("North crew")),
        "{body}"
    );
    let (_, crew) = call(
        &server,
        &admin,
        "GET",
        "/api/v1/bikeshare/work-orders?assignee=North%20crew",
        None,
        &[],
    );
    assert_eq!(crew["work_orders"][0]["id"], json!(order), "{crew}");
    let (code, body) = patch(json!({}));
    assert_eq!(
        (code, &body["code"]),
        (422, &json!("empty_update")),
        "{body}"
    );
    let (code, body) = patch(json!({"assignee": "x".repeat(101)}));
    assert_eq!(
        (code, &body["code"]),
        (422, &json!("invalid_assignee")),
        "{body}"
    );
    let (code, body) = patch(json!({"note": "parts ordered"}));
    assert_eq!(
        (code, &body["assignee"]),
        (200, &json!("North crew")),
        "absent: unchanged"
    );
    let (code, body) = patch(json!({"assignee": null}));
    assert_eq!((code, &body["assignee"]), (200, &Value::Null), "{body}");
    let (code, body) = call(
        &server,
        &admin,
        "PATCH",
        &format!("/api/v1/bikeshare/work-orders/{order}"),
        Some(json!({"state": "done", "note": "lock replaced"})),
        &[],
    );
    assert_eq!(code, 200, "{body}");
    // A lock that never answers: the trip fails after the unlock timeout.
    lock2.send("mode silent");
    let (code, body) = call(
        &server,
        &rider,
        "POST",
        "/api/v1/rider/trips",
        Some(json!({"bike": "bike-e2e-2"})),
        &["-H", "Idempotency-Key: rent-3"],
    );
    assert_eq!(
        (code, body["trip"]["state"].as_str()),
        (201, Some("failed")),
        "{body}"
    );
    assert!(
        body["trip"]["failure"]
            .as_str()
            .unwrap()
            .contains("did not answer"),
        "{body}"
    );
    let (_, me) = call(&server, &rider, "GET", "/api/v1/rider/me", None, &[]);
    assert_eq!(
        me["balance"].as_i64(),
        Some(5000 - total),
        "failed trips cost nothing: {me}"
    );

    // The operator's views: the trip in the demand per cell, rebalancing, the event log, a
    // refund of the settled trip's charge (never more than was charged), riders with balances.
    let get = |path: &str| {
        let (code, body) = call(&server, &admin, "GET", path, None, &[]);
        assert_eq!(code, 200, "{path}: {body}");
        body
    };
    let demand = get("/api/v1/bikeshare/demand?days=1");
    let starts: u64 = demand["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["demand"].as_u64().unwrap())
        .sum();
    assert_eq!(starts, 1, "one trip started: {demand}");
    let rebalancing = get("/api/v1/bikeshare/rebalancing?max_moves=10");
    assert!(rebalancing["moves"].is_array(), "{rebalancing}");
    let events = get("/api/v1/bikeshare/events");
    let kinds: Vec<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_types"][0].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"trip_start")
            && kinds.contains(&"trip_end")
            && kinds.contains(&"maintenance"),
        "{events}"
    );
    let summary = get("/api/v1/bikeshare/fleet/summary");
    assert_eq!(summary["bikes"], 2, "{summary}");
    let riders = get("/api/v1/bikeshare/riders");
    let rider_id = riders["riders"][0]["rider"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let too_much = Some(
        json!({"amount": total + 1, "reason": "too much", "trip_id": trip, "idempotency_key": "r-1"}),
    );
    let (code, body) = call(
        &server,
        &admin,
        "POST",
        &format!("/api/v1/bikeshare/riders/{rider_id}/refunds"),
        too_much,
        &[],
    );
    assert_eq!(
        (code, body["code"].as_str()),
        (422, Some("refund_exceeds_charge")),
        "{body}"
    );
    let refund = Some(
        json!({"amount": total, "reason": "bumpy ride", "trip_id": trip, "idempotency_key": "r-2"}),
    );
    let (code, body) = call(
        &server,
        &admin,
        "POST",
        &format!("/api/v1/bikeshare/riders/{rider_id}/refunds"),
        refund,
        &[],
    );
    assert_eq!(
        (code, body["balance"].as_i64()),
        (200, Some(5000)),
        "{body}"
    );

    // The ledger balances.
    let (_, tb) = call(
        &server,
        &admin,
        "GET",
        "/api/v1/bikeshare/ledger/trial-balance",
        None,
        &[],
    );
    assert_eq!(tb["balanced"], true, "{tb}");

    // A trip survives a restart mid-ride.
    let (code, body) = call(
        &server,
        &rider,
        "POST",
        "/api/v1/rider/trips",
        Some(json!({"bike": "bike-e2e-1"})),
        &["-H", "Idempotency-Key: rent-4"],
    );
    assert_eq!(
        (code, body["trip"]["state"].as_str()),
        (201, Some("riding")),
        "{body}"
    );
    let trip = body["trip"]["id"].as_str().unwrap().to_string();
    drop(lock);
    drop(lock2);
    server.kill9();
    let server = TestServer::start(dir.path());
    assert_eq!(
        trip_state(&server, &rider, &trip)["trip"]["state"],
        "riding"
    );
    // The lock comes back, closed inside the fence: the trip settles.
    let _lock = Lock::start(&server, "bike-e2e-1", &tokens[0], PARK);
    eventually(
        Duration::from_secs(15),
        "the trip settled after the restart",
        || (trip_state(&server, &rider, &trip)["trip"]["state"] == "settled").then_some(()),
    );

    // The rider's data: export, then erasure.
    let (code, export) = call(&server, &rider, "GET", "/api/v1/rider/me/export", None, &[]);
    assert_eq!(code, 200);
    assert!(export["trips"].as_array().unwrap().len() >= 4, "{export}");
    let (code, _) = call(&server, &rider, "DELETE", "/api/v1/rider/me", None, &[]);
    assert_eq!(code, 204);
    let (code, _) = call(&server, &rider, "GET", "/api/v1/rider/me", None, &[]);
    assert_eq!(code, 401, "an erased account's token is gone");
    let (_, tb) = call(
        &server,
        &admin,
        "GET",
        "/api/v1/bikeshare/ledger/trial-balance",
        None,
        &[],
    );
    assert_eq!(tb["balanced"], true, "{tb}");
}

/// Validates a served GBFS document against its official schema (../shared/data/gbfs/v3.0).
fn assert_valid_gbfs(name: &str, doc: &Value) {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../..");
    let schema = root.join(format!("shared/data/gbfs/v3.0/{name}.json"));
    assert!(
        schema.exists(),
        "the official GBFS schemas are beside the checkout: {}",
        schema.display()
    );
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), doc.to_string()).unwrap();
    let out = Command::new("python3")
        .arg(
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../wulian-bikeshare/tests/validate_schema.py"),
        )
        .arg(&schema)
        .arg(file.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{name} is not valid GBFS 3.0:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_city_gets_valid_feeds_without_riders_in_them() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path());
    let admin = server.admin_key.clone().unwrap();
    let tokens = set_up(
        &server,
        &admin,
        json!({"name": "Feed city", "payments_sandbox": true, "gbfs_ttl_s": 0, "signups_per_address_per_hour": 2}),
        &[
            ("city", "service_area", square(PARK, 0.02)),
            ("blue-1", "parking", square(PARK, 0.0002)),
            ("station-forecourt", "no_parking", square(STREET, 0.0005)),
            (
                "promenade",
                "no_riding",
                square((STREET.0 + 0.003, STREET.1), 0.0005),
            ),
        ],
        &["bike-feed-1"],
    );
    let mut lock = Lock::start(&server, "bike-feed-1", &tokens[0], PARK);
    // Intervals other than the contract's defaults go to every lock's twin, once.
    let settings = json!({"name": "Feed city", "payments_sandbox": true, "gbfs_ttl_s": 0,
        "signups_per_address_per_hour": 2, "parked_interval_s": 600, "riding_interval_s": 15});
    let (code, body) = call(
        &server,
        &admin,
        "PUT",
        "/api/v1/bikeshare/system",
        Some(settings),
        &[],
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(lock.expect("intervals"), "intervals 600 15");

    // Discovery, then every feed it lists, each valid against the official schema.
    let (code, discovery) = curl(&[&format!("{}/gbfs/v3/default/gbfs.json", server.http)]);
    assert_eq!(code, 200, "{discovery}");
    assert_valid_gbfs("gbfs", &discovery);
    let feeds = discovery["data"]["feeds"].as_array().unwrap().clone();
    assert!(feeds.len() >= 7, "{discovery}");
    let vehicle_status_url = feeds
        .iter()
        .find(|f| f["name"] == "vehicle_status")
        .unwrap()["url"]
        .as_str()
        .unwrap()
        .to_string();
    for feed in &feeds {
        let (name, url) = (
            feed["name"].as_str().unwrap(),
            feed["url"].as_str().unwrap(),
        );
        let (code, doc) = curl(&[url]);
        assert_eq!(code, 200, "{name}: {doc}");
        assert_valid_gbfs(name, &doc);
    }
    let listed = eventually(
        Duration::from_secs(10),
        "the parked bike in vehicle_status",
        || {
            let (_, doc) = curl(&[&vehicle_status_url]);
            doc["data"]["vehicles"]
                .as_array()
                .filter(|v| v.len() == 1)
                .cloned()
        },
    );
    let public_id = listed[0]["vehicle_id"].as_str().unwrap().to_string();
    assert_ne!(
        public_id, "bike-feed-1",
        "the public id is not the bike's code"
    );
    assert_eq!(listed[0]["station_id"], "blue-1");

    // A ride: the bike disappears from the feed while on trip, and comes back with a new id.
    let (_, body) = call(
        &server,
        "none",
        "POST",
        "/api/v1/rider/default/sign-up",
        Some(
            json!({"phone": "13900139000", "name": "Wang", "real_name": "王芳", "id_number": id_number("19850704", 21), "location_consent": true}),
        ),
        &[],
    );
    let rider = body["token"].as_str().unwrap().to_string();
    let rider_id = body["rider"]["id"].as_str().unwrap().to_string();
    // Two sign-up attempts per address and hour in this system: the third is refused.
    let again = Some(
        json!({"phone": "13900139001", "name": "Li", "real_name": "李雷", "id_number": id_number("19800101", 31), "location_consent": false}),
    );
    let (code, _) = call(
        &server,
        "none",
        "POST",
        "/api/v1/rider/default/sign-up",
        again.clone(),
        &[],
    );
    assert_eq!(code, 201);
    let (code, body) = call(
        &server,
        "none",
        "POST",
        "/api/v1/rider/default/sign-up",
        again,
        &[],
    );
    assert_eq!(
        (code, body["code"].as_str()),
        (429, Some("too_many_signups")),
        "{body}"
    );
    let (code, body) = call(
        &server,
        &rider,
        "POST",
        "/api/v1/rider/trips",
        Some(json!({"bike": "bike-feed-1"})),
        &["-H", "Idempotency-Key: f-1"],
    );
    assert_eq!(
        (code, body["trip"]["state"].as_str()),
        (201, Some("riding")),
        "{body}"
    );
    let trip = body["trip"]["id"].as_str().unwrap().to_string();
    eventually(
        Duration::from_secs(5),
        "the bike on trip gone from vehicle_status",
        || {
            let (_, doc) = curl(&[&vehicle_status_url]);
            doc["data"]["vehicles"]
                .as_array()
                .filter(|v| v.is_empty())
                .map(|_| ())
        },
    );
    // Tampering during the ride opens an inspection; the bike stays on its trip for the city.
    lock.send("event tamper");
    eventually(Duration::from_secs(5), "the inspection order", || {
        let (_, orders) = call(
            &server,
            &admin,
            "GET",
            "/api/v1/bikeshare/work-orders",
            None,
            &[],
        );
        (orders["work_orders"].as_array()?.len() == 1).then_some(())
    });
    lock.send(&format!("report {} {}", PARK.0 + 0.001, PARK.1));
    lock.send(&format!("close {} {}", PARK.0, PARK.1));
    eventually(Duration::from_secs(10), "the trip settled", || {
        (trip_state(&server, &rider, &trip)["trip"]["state"] == "settled").then_some(())
    });
    let back = eventually(
        Duration::from_secs(5),
        "the bike back in vehicle_status",
        || {
            let (_, doc) = curl(&[&vehicle_status_url]);
            doc["data"]["vehicles"]
                .as_array()
                .filter(|v| v.len() == 1)
                .cloned()
        },
    );
    assert_ne!(
        back[0]["vehicle_id"].as_str().unwrap(),
        public_id,
        "ids rotate after every trip"
    );
    assert_eq!(
        back[0]["is_disabled"], true,
        "out of service after the ride: {back:?}"
    );
    // The city sees MDS transitions only: the trip ends, then the bike leaves service.
    let (_, events) = call(
        &server,
        &admin,
        "GET",
        "/api/v1/bikeshare/events",
        None,
        &[],
    );
    let kinds: Vec<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_types"][0].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["trip_start", "trip_end", "maintenance"], "{events}");

    // MDS: only with the city credential, in MDS' media type, with the trip and no rider.
    let (code, body) = call(
        &server,
        &admin,
        "POST",
        "/api/v1/bikeshare/city-credentials",
        Some(json!({"name": "Transport bureau"})),
        &[],
    );
    assert_eq!(code, 201, "{body}");
    let city = body["token"].as_str().unwrap().to_string();
    let hour = {
        let out = Command::new("date")
            .args(["-u", "+%Y-%m-%dT%H"])
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let (code, _) = call(&server, &admin, "GET", "/mds/default/vehicles", None, &[]);
    assert_eq!(code, 401, "an API key is not a city credential");
    let (code, _) = call(
        &server,
        &city,
        "GET",
        "/mds/default/vehicles",
        None,
        &["-H", "Accept: application/vnd.mds+json;version=1.2"],
    );
    assert_eq!(code, 406, "an older MDS version is not served");
    let (code, vehicles) = call(
        &server,
        &city,
        "GET",
        "/mds/default/vehicles",
        None,
        &["-H", "Accept: application/vnd.mds+json;version=2.0"],
    );
    assert_eq!(code, 200, "{vehicles}");
    assert_eq!(vehicles["version"], "2.0.0");
    assert_eq!(
        vehicles["vehicles"].as_array().unwrap().len(),
        1,
        "{vehicles}"
    );
    let (code, trips) = call(
        &server,
        &city,
        "GET",
        &format!("/mds/default/trips?end_time={hour}"),
        None,
        &[],
    );
    assert_eq!(code, 200, "{trips}");
    let trips = trips["trips"].as_array().unwrap().clone();
    assert_eq!(trips.len(), 1, "{trips:?}");
    assert_eq!(trips[0]["currency"], "CNY");
    for path in [
        "/mds/default/vehicles/status",
        &format!("/mds/default/events/historical?event_time={hour}"),
        &format!("/mds/default/telemetry?telemetry_time={hour}"),
    ] {
        let (code, doc) = call(&server, &city, "GET", path, None, &[]);
        assert_eq!(code, 200, "{path}: {doc}");
        let text = doc.to_string();
        for secret in [
            rider_id.as_str(),
            "13900139000",
            "bike-feed-1",
            trip.as_str(),
        ] {
            assert!(
                !text.contains(secret),
                "{secret} must not be in {path}: {text}"
            );
        }
    }
    let (code, body) = call(
        &server,
        &city,
        "GET",
        "/mds/default/trips?end_time=yesterday",
        None,
        &[],
    );
    assert_eq!(
        (code, body["code"].as_str()),
        (400, Some("invalid_query")),
        "{body}"
    );

    // The basemap consoles draw without internet tiles.
    let (code, _) = call(
        &server,
        &admin,
        "GET",
        "/api/v1/bikeshare/basemap",
        None,
        &[],
    );
    assert_eq!(code, 404);
    let bad = Some(json!({"type": "Feature"}));
    let (code, body) = call(
        &server,
        &admin,
        "PUT",
        "/api/v1/bikeshare/basemap",
        bad,
        &[],
    );
    assert_eq!(
        (code, body["code"].as_str()),
        (422, Some("invalid_basemap")),
        "{body}"
    );
    let map = json!({"type": "FeatureCollection", "features": [{"type": "Feature",
        "properties": {"layer": "water"}, "geometry": square(PARK, 0.01)}]});
    let (code, _) = call(
        &server,
        &admin,
        "PUT",
        "/api/v1/bikeshare/basemap",
        Some(map.clone()),
        &[],
    );
    assert_eq!(code, 204);
    let (code, body) = call(&server, &rider, "GET", "/api/v1/rider/basemap", None, &[]);
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        body["features"][0]["properties"],
        map["features"][0]["properties"]
    );
}
