//! Device lifecycle end to end with the real binary: a profile with a thing model (curl), a
//! device that keeps its twin in step over MQTT 5 (Eclipse Paho), presence published and kept
//! across a restart.

mod support;

use std::process::Command;

use serde_json::{Value, json};
use support::*;

fn api(
    server: &TestServer,
    key: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let auth = format!("Authorization: Bearer {key}");
    let url = format!("{}/api/v1{path}", server.http);
    let mut args = vec!["-X", method, "-H", &auth, &url];
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

#[test]
fn a_device_catches_up_with_its_twin_and_its_model_is_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path());
    let admin = server.admin_key.clone().unwrap();
    let (code, body) = api(
        &server,
        &admin,
        "POST",
        "/profiles",
        Some(json!({
            "id": "thermo",
            "validation": "reject",
            "model": {"properties": [{"name": "temp", "type": "double", "unit": "°C", "min": -40, "max": 85}]}
        })),
    );
    assert_eq!(code, 201, "{body}");
    let device = server.cli_json(
        &admin,
        &["devices", "create", "th-1", "--profile", "thermo"],
    );
    let token = device["token"].as_str().unwrap().to_string();

    // The operator changes the desired state while the device is offline.
    let (code, body) = api(
        &server,
        &admin,
        "PATCH",
        "/devices/th-1/twin/desired",
        Some(json!({"interval_s": 30, "led": "green"})),
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["delta"], json!({"interval_s": 30, "led": "green"}));

    let out = Command::new("python3")
        .arg(clients_dir().join("twin_device.py"))
        .args([
            &server.mqtt_host,
            &server.mqtt_port.to_string(),
            "th-1",
            &token,
        ])
        .output()
        .expect("python3 with paho-mqtt");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();

    // What it missed was waiting for it, retained.
    assert_eq!(r["delta"]["retain"], true, "{r}");
    assert_eq!(
        r["delta"]["body"]["delta"],
        json!({"interval_s": 30, "led": "green"}),
        "{r}"
    );
    assert_eq!(r["report"], 0, "{r}");
    // twin/get answers with the whole twin and the request's correlation data.
    assert_eq!(r["twin_correlation"], "req-1", "{r}");
    assert_eq!(
        r["twin"]["reported"],
        json!({"interval_s": 30, "led": "green"}),
        "{r}"
    );
    assert_eq!(r["twin"]["delta"], json!({}), "{r}");
    // Refusals carry MQTT 5 reason codes: 0x99 payload format invalid, 0x97 quota exceeded.
    assert_eq!(r["report_bad_json"], 0x99, "{r}");
    assert_eq!(r["report_array"], 0x99, "{r}");
    assert_eq!(r["report_too_large"], 0x97, "{r}");
    assert_eq!(r["telemetry_ok"], 0, "{r}");
    assert_eq!(r["telemetry_out_of_range"], 0x99, "{r}");
    // Its own presence, retained: online.
    assert_eq!(r["presence"]["online"], true, "{r}");

    let (_, twin) = api(&server, &admin, "GET", "/devices/th-1/twin", None);
    assert_eq!(twin["delta"], json!({}), "{twin}");
    assert_eq!(twin["reported_version"], 1, "{twin}");
    let (_, latest) = api(
        &server,
        &admin,
        "GET",
        "/devices/th-1/telemetry/latest",
        None,
    );
    assert_eq!(latest["values"]["temp"]["value"], 21.5, "{latest}");
    assert_eq!(latest["units"]["temp"], "°C");

    let status = eventually(std::time::Duration::from_secs(10), "device offline", || {
        let (_, s) = api(&server, &admin, "GET", "/devices/th-1/status", None);
        (s["online"] == false && s["disconnected_at"].is_i64()).then_some(s)
    });
    assert_eq!(status["connection"]["protocol"], "5.0", "{status}");
    assert_eq!(status["connection"]["transport"], "mqtt", "{status}");
    assert_eq!(status["connection"]["listener"], "tcp", "{status}");
    assert_eq!(status["connection"]["tls"], false, "{status}");
    let messages = status["messages_in"].as_u64().unwrap();
    assert!(messages >= 7, "{status}");

    // Presence and the twin survive a restart.
    assert_eq!(server.terminate().code(), Some(0));
    let server = TestServer::start(dir.path());
    let (_, after) = api(&server, &admin, "GET", "/devices/th-1/status", None);
    assert_eq!(after["messages_in"].as_u64(), Some(messages), "{after}");
    assert_eq!(after["last_seen_at"], status["last_seen_at"], "{after}");
    let (_, twin) = api(&server, &admin, "GET", "/devices/th-1/twin", None);
    assert_eq!(twin["reported"], json!({"interval_s": 30, "led": "green"}));
    // The retained presence a new subscriber gets says what the platform knows now: offline
    // (answered from the presence tracker, not from a copy the broker kept before the restart).
    let out = Command::new("mosquitto_sub")
        .args(server.mqtt_args())
        .args(["-u", "dashboard", "-P", &admin])
        .args(["-t", "devices/+/presence", "-C", "1", "-W", "10", "-v"])
        .output()
        .expect("mosquitto_sub is installed");
    let line = String::from_utf8_lossy(&out.stdout);
    let (topic, body) = line
        .trim()
        .split_once(' ')
        .expect("a retained presence message");
    assert_eq!(topic, "devices/th-1/presence");
    let body: Value = serde_json::from_str(body).unwrap();
    assert_eq!(body["online"], false, "{body}");
    assert_eq!(body["last_seen_at"], status["last_seen_at"], "{body}");
}

#[test]
fn bulk_import_reports_bad_lines_and_rotation_has_a_grace_period() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path());
    let admin = server.admin_key.clone().unwrap();

    // 1,200 devices (three batches), two bad lines and one duplicate.
    let mut csv = String::from("id,name,profile,labels\n");
    for i in 0..1200 {
        csv.push_str(&format!("lock-{i:04},Lock {i},lock,zone=z{}\n", i % 7));
    }
    csv.push_str("bad id,x,lock,\n");
    csv.push_str("lock-0001,again,lock,\n");
    csv.push_str("lock-x,x,lock,nolabel\n");
    let input = dir.path().join("devices.csv");
    std::fs::write(&input, csv).unwrap();
    let tokens = dir.path().join("tokens.csv");
    let out = server.cli(
        &admin,
        &[
            "devices",
            "import",
            input.to_str().unwrap(),
            "--tokens-out",
            tokens.to_str().unwrap(),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "failed lines make the exit code non-zero"
    );
    assert!(stderr.contains("line 1202:"), "{stderr}");
    assert!(
        stderr.contains("line 1203:") && stderr.contains("already_exists"),
        "{stderr}"
    );
    assert!(
        stderr.contains("line 1204:") && stderr.contains("key=value"),
        "{stderr}"
    );
    assert!(
        stderr.contains("Imported 1200 device(s); 3 line(s) failed."),
        "{stderr}"
    );
    let tokens = std::fs::read_to_string(&tokens).unwrap();
    assert_eq!(
        tokens.lines().count(),
        1201,
        "header + one token per device"
    );
    let (_, page) = api(
        &server,
        &admin,
        "GET",
        "/devices?label=zone:z3&limit=1",
        None,
    );
    assert_eq!(page["total"], 171, "{page}"); // i % 7 == 3 for i < 1200

    // The imported token works; after a rotation with grace, old and new both work.
    let old = tokens
        .lines()
        .find(|l| l.starts_with("lock-0042,"))
        .unwrap()
        .split(',')
        .nth(1)
        .unwrap()
        .to_string();
    let post = |token: &str| {
        curl(&[
            "-X",
            "POST",
            "-H",
            &format!("Authorization: Bearer {token}"),
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            r#"{"battery": 88}"#,
            &format!("{}/api/v1/devices/lock-0042/telemetry", server.http),
        ])
        .0
    };
    assert_eq!(post(&old), 200);
    let rotated = server.cli_json(
        &admin,
        &["devices", "rotate-token", "lock-0042", "--grace-s", "600"],
    );
    let new = rotated["token"].as_str().unwrap();
    assert_eq!(
        post(&old),
        200,
        "the old token works during the grace period"
    );
    assert_eq!(post(new), 200);
    server.cli_json(&admin, &["devices", "rotate-token", "lock-0042"]);
    assert_eq!(post(&old), 401);
    assert_eq!(post(new), 401, "an immediate rotation ends every grace");
}

#[test]
fn a_firmware_campaign_reaches_a_paho_device_that_downloads_by_ranges() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path());
    let admin = server.admin_key.clone().unwrap();
    let device = server.cli_json(
        &admin,
        &["devices", "create", "gw-1", "--profile", "gateway"],
    );
    let token = device["token"].as_str().unwrap().to_string();

    // Upload with curl, declaring the SHA-256.
    let image: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    let path = dir.path().join("gw-2.0.bin");
    std::fs::write(&path, &image).unwrap();
    let sha = String::from_utf8(
        Command::new("sha256sum")
            .arg(&path)
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .split_whitespace()
    .next()
    .unwrap()
    .to_string();
    let (code, fw) = curl(&[
        "-X",
        "POST",
        "-H",
        &format!("Authorization: Bearer {admin}"),
        "-H",
        "Content-Type: application/octet-stream",
        "--data-binary",
        &format!("@{}", path.display()),
        &format!(
            "{}/api/v1/firmware?profile=gateway&version=2.0&sha256={sha}",
            server.http
        ),
    ]);
    assert_eq!(code, 201, "{fw}");

    // The campaign starts while the device is offline: its job waits, retained.
    let (code, campaign) = api(
        &server,
        &admin,
        "POST",
        "/ota/campaigns",
        Some(json!({"name": "2.0", "firmware_id": fw["id"], "target": {"devices": ["gw-1"]}})),
    );
    assert_eq!(code, 201, "{campaign}");
    let out = Command::new("python3")
        .arg(clients_dir().join("ota_device.py"))
        .args([
            &server.mqtt_host,
            &server.mqtt_port.to_string(),
            &server.http,
            "gw-1",
            &token,
        ])
        .output()
        .expect("python3 with paho-mqtt");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["job"]["_retained"], true, "{r}");
    assert_eq!(r["job"]["firmware"]["version"], "2.0", "{r}");
    assert_eq!(r["range_status"], json!([206, 206]), "{r}");
    assert_eq!(r["sha_ok"], true, "{r}");
    assert_eq!(r["acks"], json!([0, 0, 0, 0, 0]), "{r}");

    let id = campaign["id"].as_str().unwrap();
    let done = eventually(
        std::time::Duration::from_secs(10),
        "campaign completed",
        || {
            let (_, c) = api(
                &server,
                &admin,
                "GET",
                &format!("/ota/campaigns/{id}"),
                None,
            );
            (c["status"] == "completed").then_some(c)
        },
    );
    assert_eq!(done["counts"]["succeeded"], 1, "{done}");

    // The CLI uploads with a progress bar (hashing first); the server checks the hash.
    std::fs::write(&path, vec![7u8; 100_000]).unwrap();
    let fw2 = server.cli_json(
        &admin,
        &[
            "firmware",
            "upload",
            path.to_str().unwrap(),
            "--profile",
            "gateway",
            "--version",
            "2.1",
        ],
    );
    assert_eq!(fw2["size"], 100_000, "{fw2}");
    let listed = server.cli_json(&admin, &["firmware", "list"]);
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");
}

#[test]
fn a_rule_raises_an_alarm_that_an_application_receives_over_mqtt() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path());
    let admin = server.admin_key.clone().unwrap();
    let device = server.cli_json(&admin, &["devices", "create", "boiler-9"]);
    let token = device["token"].as_str().unwrap().to_string();
    let (code, body) = api(
        &server,
        &admin,
        "POST",
        "/rules",
        Some(json!({
            "id": "overheat",
            "sql": "SELECT device_id, temp FROM 'devices/+/telemetry' WHERE temp > 80",
            "actions": [{"action": "alarm", "type": "overheat", "severity": "critical"}]
        })),
    );
    assert_eq!(code, 201, "{body}");

    // An application (a read-only API key: its default policy allows alarms/#) listens.
    let (code, key) = api(
        &server,
        &admin,
        "POST",
        "/api-keys",
        Some(json!({"name": "ops-dashboard", "scope": "read_only"})),
    );
    assert_eq!(code, 201, "{key}");
    let sub = std::process::Command::new("mosquitto_sub")
        .args(server.mqtt_args())
        .args([
            "-V",
            "mqttv5",
            "-u",
            "dashboard",
            "-P",
            key["secret"].as_str().unwrap(),
        ])
        .args(["-t", "alarms/#", "-C", "1", "-W", "15", "-v"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("mosquitto_sub is installed");
    // mosquitto_sub gives no sign when its subscription is in place: publish until it has
    // received the alarm (later raises of the open alarm are "updated" events).
    let mut sub = sub;
    for _ in 0..20 {
        let out = mosquitto_pub(
            &server,
            &[
                "-V",
                "mqttv5",
                "-i",
                "boiler-9",
                "-u",
                "boiler-9",
                "-P",
                &token,
                "-q",
                "1",
                "-t",
                "devices/boiler-9/telemetry",
                "-m",
                r#"{"temp": 93.5}"#,
            ],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
        if sub.try_wait().unwrap().is_some() {
            break;
        }
    }
    let output = sub.wait_with_output().unwrap();
    let line = String::from_utf8_lossy(&output.stdout).to_string();
    let (topic, payload) = line.trim().split_once(' ').expect("topic and payload");
    assert_eq!(topic, "alarms/boiler-9/overheat");
    let event: Value = serde_json::from_str(payload).unwrap();
    assert!(
        event["change"] == "raised" || event["change"] == "updated",
        "{event}"
    );
    assert_eq!(event["alarm"]["severity"], "critical");
    assert_eq!(event["alarm"]["details"]["temp"], 93.5);
    assert_eq!(event["alarm"]["source"], "rule:overheat");
}

#[test]
fn the_simulated_city_reports_and_answers_commands() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("wulian.toml");
    std::fs::write(&config, "[simulation]\nbikes = 3\nair_sensors = 1\n").unwrap();
    let server = TestServer::start_with_args(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap(), "--simulate-city"],
    );
    let admin = server.admin_key.clone().unwrap();
    // Printed once the city is provisioned (fences, bike share, devices).
    server.wait_for_line("Simulated city: ");
    let (_, page) = api(
        &server,
        &admin,
        "GET",
        "/devices?label=simulated:true",
        None,
    );
    assert_eq!(page["total"], 4, "{page}");
    let latest = eventually(std::time::Duration::from_secs(20), "bike telemetry", || {
        let (_, l) = api(
            &server,
            &admin,
            "GET",
            "/devices/bike-0001/telemetry/latest",
            None,
        );
        l["values"]["lat"]["value"].as_f64().map(|_| l)
    });
    assert_eq!(latest["units"]["battery"], "%", "{latest}");
    eventually(std::time::Duration::from_secs(20), "air telemetry", || {
        let (_, l) = api(
            &server,
            &admin,
            "GET",
            "/devices/aq-001/telemetry/latest",
            None,
        );
        l["values"]["pm25"]["value"].as_f64()
    });
    // A simulated lock answers a command over MQTT like firmware would.
    let (code, answer) = api(
        &server,
        &admin,
        "POST",
        "/devices/bike-0002/commands",
        Some(json!({"name": "ring", "params": {"seconds": 2}, "timeout_ms": 10000})),
    );
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer["status"], "succeeded", "{answer}");
    assert_eq!(answer["response"]["result"]["rang_s"], 2, "{answer}");
    assert_eq!(server.terminate().code(), Some(0));
}
