//! End to end with the real binary and the clients users use: the `wulian` CLI, mosquitto_pub,
//! Eclipse Paho (Python) and curl. Needs `mosquitto-clients`, `curl` and `paho-mqtt`
//! (scripts/test.sh installs them).

mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use support::*;

/// A Paho device process that answers commands; killed on drop.
struct PahoDevice(Child);

impl PahoDevice {
    fn start(server: &TestServer, id: &str, token: &str, version: &str, mode: &str) -> PahoDevice {
        let mut child = Command::new("python3")
            .arg(clients_dir().join("device.py"))
            .args([
                &server.mqtt_host,
                &server.mqtt_port.to_string(),
                id,
                token,
                version,
                mode,
            ])
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 with paho-mqtt");
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "paho device did not come up");
        PahoDevice(child)
    }
}

impl PahoDevice {
    /// The device's next line of output, skipping command lines.
    fn next_line(&mut self) -> String {
        let mut reader = BufReader::new(self.0.stdout.as_mut().unwrap());
        loop {
            let mut line = String::new();
            assert!(
                reader.read_line(&mut line).unwrap() > 0,
                "paho device ended without a word"
            );
            if !line.starts_with("command ") {
                return line.trim().to_string();
            }
        }
    }
}

impl Drop for PahoDevice {
    fn drop(&mut self) {
        self.0.kill().ok();
        self.0.wait().ok();
    }
}

fn telemetry(server: &TestServer, key: &str, device: &str, query: &str) -> Value {
    let (code, body) = curl(&[
        "-H",
        &format!("Authorization: Bearer {key}"),
        &format!("{}/api/v1/devices/{device}/telemetry?{query}", server.http),
    ]);
    assert_eq!(code, 200, "{body}");
    body
}

#[test]
fn device_life_with_real_clients_survives_kill_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path());
    let admin = server
        .admin_key
        .clone()
        .expect("first start prints the admin key");
    assert!(admin.starts_with("wlk_"));

    // The CLI creates devices through the API; the token is shown once.
    let bike = server.cli_json(
        &admin,
        &[
            "devices",
            "create",
            "bike-1",
            "--name",
            "Bike 1",
            "--label",
            "city=shanghai",
        ],
    );
    let token = bike["token"].as_str().unwrap().to_string();
    let lock = server.cli_json(
        &admin,
        &["devices", "create", "lock-9", "--profile", "smart-lock"],
    );
    let lock_token = lock["token"].as_str().unwrap().to_string();
    let listed = server.cli(&admin, &["devices", "list", "--label", "city:shanghai"]);
    let listed = String::from_utf8(listed.stdout).unwrap();
    assert!(
        listed.contains("bike-1") && !listed.contains("lock-9"),
        "{listed}"
    );

    // mosquitto_pub, MQTT 3.1.1 and 5.0, QoS 0 and 1: both telemetry forms.
    let auth = ["-i", "bike-1", "-u", "bike-1", "-P", &token];
    for (version, qos, payload) in [
        (
            "mqttv311",
            "1",
            r#"{"ts": 1000, "values": {"temp": 21.5, "door": "closed"}}"#,
        ),
        ("mqttv5", "1", r#"{"ts": 2000, "values": {"temp": 22.5}}"#),
        (
            "mqttv311",
            "0",
            r#"[{"ts": 3000, "temp": 23.5}, {"ts": 4000, "temp": 24.5}]"#,
        ),
    ] {
        let mut args = vec![
            "-V",
            version,
            "-q",
            qos,
            "-t",
            "devices/bike-1/telemetry",
            "-m",
            payload,
        ];
        args.extend(auth);
        let out = mosquitto_pub(&server, &args);
        assert!(
            out.status.success(),
            "mosquitto_pub {version}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The same device over HTTP with its token, with curl.
    let (code, body) = curl(&[
        "-X",
        "POST",
        "-H",
        &format!("Authorization: Bearer {token}"),
        "-H",
        "Content-Type: application/json",
        "-d",
        r#"{"ts": 5000, "values": {"temp": 25.5, "moving": true}}"#,
        &format!("{}/api/v1/devices/bike-1/telemetry", server.http),
    ]);
    assert_eq!((code, body), (200, json!({"accepted": 2})));

    // QoS 0 is fire-and-forget: wait until it has landed before reading.
    let temps = eventually(Duration::from_secs(5), "QoS 0 telemetry", || {
        let v = telemetry(&server, &admin, "bike-1", "keys=temp&from=0&to=10000");
        let temps = v["series"]["temp"].as_array().unwrap().clone();
        (temps.len() == 5).then_some(temps)
    });
    let values: Vec<f64> = temps.iter().map(|p| p["value"].as_f64().unwrap()).collect();
    assert_eq!(values, [21.5, 22.5, 23.5, 24.5, 25.5]);
    let agg = telemetry(
        &server,
        &admin,
        "bike-1",
        "keys=temp&from=0&to=10000&agg=max&interval=10000",
    );
    assert_eq!(
        agg["series"]["temp"],
        json!([{"ts": 0, "value": 25.5, "count": 5}])
    );
    let latest = server.cli_json(&admin, &["devices", "latest", "bike-1"]);
    assert_eq!(latest["values"]["door"]["value"], "closed");
    assert_eq!(
        latest["values"]["moving"],
        json!({"ts": 5000, "value": true})
    );

    // Commands: a Paho device on MQTT 5 and one on 3.1.1 answer; the API returns the answer.
    {
        let _v5 = PahoDevice::start(&server, "bike-1", &token, "5", "answer");
        let c = server.cli_json(
            &admin,
            &[
                "devices",
                "command",
                "bike-1",
                "unlock",
                "--params",
                r#"{"trip": 42}"#,
            ],
        );
        assert_eq!(c["status"], "succeeded", "{c}");
        assert_eq!(c["response"]["echo"], json!({"trip": 42}));
    }
    {
        let _v3 = PahoDevice::start(&server, "lock-9", &lock_token, "311", "fail");
        let out = server.cli(
            &admin,
            &[
                "devices",
                "command",
                "lock-9",
                "unlock",
                "--timeout-ms",
                "5000",
            ],
        );
        let c: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(c["status"], "failed", "{c}");
        assert_eq!(c["response"]["error"], "jammed");
        assert!(
            !out.status.success(),
            "a failed command is a failing CLI call"
        );
    }
    {
        let _silent = PahoDevice::start(&server, "lock-9", &lock_token, "5", "ignore");
        let c = server.cli(
            &admin,
            &[
                "devices",
                "command",
                "lock-9",
                "ping",
                "--timeout-ms",
                "300",
            ],
        );
        let c: Value = serde_json::from_slice(&c.stdout).unwrap();
        assert_eq!(c["status"], "timed_out", "{c}");
    }
    let history = server.cli_json(&admin, &["devices", "commands", "lock-9"]);
    let statuses: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["timed_out", "failed"]);

    // kill -9: everything acknowledged is still there after a restart, and no new admin key.
    server.kill9();
    let server = TestServer::start(dir.path());
    assert!(
        server.admin_key.is_none(),
        "the admin key is created only once"
    );
    let v = telemetry(
        &server,
        &admin,
        "bike-1",
        "keys=temp,door,moving&from=0&to=10000",
    );
    assert_eq!(v["series"]["temp"].as_array().unwrap().len(), 5);
    assert_eq!(v["series"]["door"][0]["value"], "closed");
    assert_eq!(v["series"]["moving"][0]["value"], true);
    let history = server.cli_json(&admin, &["devices", "commands", "bike-1"]);
    assert_eq!(history[0]["status"], "succeeded");

    // A rotated token replaces the old one at once, and closes the connection it opened
    // (MQTT 5 DISCONNECT 0x98 Administrative action).
    let mut connected = PahoDevice::start(&server, "bike-1", &token, "5", "answer");
    let rotated = server.cli_json(&admin, &["devices", "rotate-token", "bike-1"]);
    assert_eq!(connected.next_line(), "disconnected 152");
    let new_token = rotated["token"].as_str().unwrap();
    let out = mosquitto_pub(
        &server,
        &[
            "-i",
            "bike-1",
            "-u",
            "bike-1",
            "-P",
            &token,
            "-t",
            "devices/bike-1/telemetry",
            "-m",
            "{}",
        ],
    );
    assert!(!out.status.success(), "the old token must be refused");
    let out = mosquitto_pub(
        &server,
        &[
            "-q",
            "1",
            "-i",
            "bike-1",
            "-u",
            "bike-1",
            "-P",
            new_token,
            "-t",
            "devices/bike-1/telemetry",
            "-m",
            r#"{"ts": 6000, "temp": 26.5}"#,
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // SIGTERM: a clean stop with exit code 0, and the last write is still there afterwards.
    let status = server.terminate();
    assert_eq!(status.code(), Some(0));
    let server = TestServer::start(dir.path());
    let v = telemetry(&server, &admin, "bike-1", "keys=temp&from=6000&to=7000");
    assert_eq!(v["series"]["temp"], json!([{"ts": 6000, "value": 26.5}]));
}

#[test]
fn devices_are_refused_outside_their_namespace() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path());
    let admin = server.admin_key.clone().unwrap();
    let d1 = server.cli_json(&admin, &["devices", "create", "meter-1"]);
    server.cli_json(&admin, &["devices", "create", "meter-2"]);
    let token = d1["token"].as_str().unwrap();

    let out = Command::new("python3")
        .arg(clients_dir().join("refusals.py"))
        .args([
            &server.mqtt_host,
            &server.mqtt_port.to_string(),
            "meter-1",
            token,
            "meter-2",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["v5_wrong_token"], 0x86, "{r}");
    assert_eq!(
        r["v311_wrong_token"], 0x86,
        "paho maps 3.1.1 return code 4 to 0x86: {r}"
    );
    assert_eq!(r["v5_unknown_device"], 0x86, "{r}");
    assert_eq!(r["v5_client_id_mismatch"], 0x85, "{r}");
    assert_eq!(r["v5_publish_other"], 0x87, "{r}");
    assert_eq!(r["v5_publish_bad_json"], 0x99, "{r}");
    assert_eq!(r["v5_publish_object_value"], 0x99, "{r}");
    assert_eq!(r["v5_publish_me_alias"], 0, "{r}");
    assert_eq!(r["v5_subscribe_other"], json!([0x87]), "{r}");
    assert_eq!(r["v5_subscribe_wildcard"], json!([0x87]), "{r}");
    assert_eq!(r["v5_subscribe_own"], json!([1]), "{r}");
    assert_eq!(r["v311_publish_other_closed"], true, "{r}");

    // Refusals are counted, the server keeps serving, and nothing was written for meter-2.
    let counter = |name: &str| metric(&server, &admin, name);
    assert!(counter("wulian_mqtt_publish_denied_total") >= 2);
    assert!(counter("wulian_mqtt_subscribe_denied_total") >= 2);
    assert!(counter("wulian_mqtt_auth_failed_total") >= 3);
    assert!(counter("wulian_ingest_messages_rejected_total") >= 2);
    let v = telemetry(&server, &admin, "meter-2", "from=0");
    assert_eq!(v["series"], json!({}));
    let v = telemetry(&server, &admin, "meter-1", "keys=alias&from=0&to=10000");
    assert_eq!(v["series"]["alias"], json!([{"ts": 5000, "value": 1.0}]));

    // Malformed bytes and an oversized packet close only that connection.
    use std::io::{Read, Write};
    let addr = format!("{}:{}", server.mqtt_host, server.mqtt_port);
    for garbage in [
        &[0x10u8, 0xff, 0xff, 0xff, 0xff, 0x7f][..],
        &[0xf0, 0x00],
        b"GET / HTTP/1.1\r\n\r\n",
    ] {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(garbage).unwrap();
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).unwrap_or(0);
        assert_eq!(n, 0, "the connection must be closed for {garbage:?}");
    }
    let big = dir.path().join("big.json");
    std::fs::write(&big, "x".repeat(2 * 1024 * 1024)).unwrap();
    let big = big.to_str().unwrap();
    let out = mosquitto_pub(
        &server,
        &[
            "-V",
            "mqttv311",
            "-q",
            "1",
            "-i",
            "meter-1",
            "-u",
            "meter-1",
            "-P",
            token,
            "-t",
            "devices/meter-1/telemetry",
            "-f",
            big,
        ],
    );
    assert!(!out.status.success(), "an oversized packet must be refused");
    let out = mosquitto_pub(
        &server,
        &[
            "-q",
            "1",
            "-i",
            "meter-1",
            "-u",
            "meter-1",
            "-P",
            token,
            "-t",
            "devices/meter-1/telemetry",
            "-m",
            r#"{"ts": 7000, "ok": 1}"#,
        ],
    );
    assert!(
        out.status.success(),
        "the server still serves: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The value of a counter in the server's Prometheus metrics.
fn metric(server: &TestServer, key: &str, name: &str) -> u64 {
    let out = Command::new("curl")
        .args([
            "-sS",
            "-H",
            &format!("Authorization: Bearer {key}"),
            &format!("{}/api/v1/metrics", server.http),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "curl /api/v1/metrics");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("{name} missing from metrics"))
        .parse()
        .unwrap()
}

/// QoS 0 telemetry waits for its batch (`storage.qos0_batch_ms`); an orderly shutdown writes
/// what is still waiting before the store closes, so nothing a QoS 0 publisher sent before
/// SIGTERM is lost.
#[test]
fn qos0_telemetry_waiting_for_its_batch_is_written_at_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    // A window far longer than the test, so the messages are certainly still waiting.
    let config = qos0_window_config(dir.path(), 600_000);
    let config = config.to_str().unwrap();
    let data = dir.path().join("data");
    let server = TestServer::start_with_args(&data, &["--config", config]);
    let admin = server.admin_key.clone().unwrap();
    let token = server.cli_json(&admin, &["devices", "create", "meter-7"])["token"]
        .as_str()
        .unwrap()
        .to_string();

    // 50 messages, one per line, QoS 0, from one mosquitto_pub.
    let lines: String = (1..=50)
        .map(|i| format!("{{\"ts\": {i}000, \"values\": {{\"n\": {i}}}}}\n"))
        .collect();
    let mut publisher = Command::new("mosquitto_pub")
        .args(server.mqtt_args())
        .args(["-i", "meter-7", "-u", "meter-7", "-P", &token])
        .args(["-q", "0", "-t", "devices/meter-7/telemetry", "-l"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("mosquitto_pub is installed");
    {
        use std::io::Write;
        let mut stdin = publisher.stdin.take().unwrap();
        stdin.write_all(lines.as_bytes()).unwrap();
    }
    assert!(publisher.wait().unwrap().success());
    eventually(Duration::from_secs(10), "50 publishes received", || {
        (metric(&server, &admin, "wulian_mqtt_publish_received_total") >= 50).then_some(())
    });
    let stored = |server: &TestServer| {
        telemetry(server, &admin, "meter-7", "keys=n&from=0&to=100000")["series"]["n"]
            .as_array()
            .map_or(0, Vec::len)
    };
    assert_eq!(stored(&server), 0, "the batch waits for its window");

    assert!(server.terminate().success());
    let server = TestServer::start_with_args(&data, &["--config", config]);
    assert_eq!(
        stored(&server),
        50,
        "written at shutdown, durable across the restart"
    );
}

/// A configuration file in `dir` whose QoS 0 telemetry waits `ms` for its batch.
fn qos0_window_config(dir: &Path, ms: u64) -> PathBuf {
    let config = dir.join("wulian.toml");
    std::fs::write(&config, format!("[storage]\nqos0_batch_ms = {ms}\n")).unwrap();
    config
}

/// A server in `dir` whose QoS 0 telemetry waits `ms` for its batch.
fn with_qos0_window(dir: &Path, ms: u64) -> TestServer {
    let config = qos0_window_config(dir, ms);
    TestServer::start_with_args(&dir.join("data"), &["--config", config.to_str().unwrap()])
}

/// The QoS 0 writes of one batch window reach the store's writer together and share a few
/// group commits (one WAL write and fsync each), not one each.
#[test]
fn qos0_telemetry_of_many_devices_in_one_window_shares_group_commits() {
    const DEVICES: usize = 20;
    let dir = tempfile::tempdir().unwrap();
    // Long enough for every publisher below to land in the same window.
    let server = with_qos0_window(dir.path(), 5000);
    let admin = server.admin_key.clone().unwrap();
    let tokens: Vec<(String, String)> = (0..DEVICES)
        .map(|i| {
            let id = format!("meter-{i}");
            let created = server.cli_json(&admin, &["devices", "create", &id]);
            (id, created["token"].as_str().unwrap().to_string())
        })
        .collect();
    let groups_before = metric(&server, &admin, "wulian_tsdb_commit_groups_total");
    let requests_before = metric(&server, &admin, "wulian_tsdb_commit_requests_total");
    for (id, token) in &tokens {
        let topic = format!("devices/{id}/telemetry");
        let out = mosquitto_pub(
            &server,
            &[
                "-i",
                id,
                "-u",
                id,
                "-P",
                token,
                "-q",
                "0",
                "-t",
                &topic,
                "-m",
                r#"{"n": 1}"#,
            ],
        );
        assert!(out.status.success(), "{out:?}");
    }
    eventually(Duration::from_secs(20), "the batch written", || {
        let requests = metric(&server, &admin, "wulian_tsdb_commit_requests_total");
        (requests >= requests_before + DEVICES as u64).then_some(())
    });
    let groups = metric(&server, &admin, "wulian_tsdb_commit_groups_total") - groups_before;
    assert!(
        groups <= 3,
        "{DEVICES} QoS 0 writes of one window took {groups} group commits"
    );
}

/// A device's QoS 0 reading waiting for its batch is stored before the device's later QoS 1
/// reading: with the same timestamp, the later value is the one kept (last write wins), and
/// rules see them in the order they were sent.
#[test]
fn a_devices_waiting_qos0_reading_is_stored_before_its_later_qos1_reading() {
    let dir = tempfile::tempdir().unwrap();
    let server = with_qos0_window(dir.path(), 2000);
    let admin = server.admin_key.clone().unwrap();
    let token = server.cli_json(&admin, &["devices", "create", "meter-9"])["token"]
        .as_str()
        .unwrap()
        .to_string();
    let publish = |qos: &str, n: u32| {
        let message = format!(r#"{{"ts": 1000, "values": {{"n": {n}}}}}"#);
        let out = mosquitto_pub(
            &server,
            &[
                "-i",
                "meter-9",
                "-u",
                "meter-9",
                "-P",
                &token,
                "-q",
                qos,
                "-t",
                "devices/meter-9/telemetry",
                "-m",
                &message,
            ],
        );
        assert!(out.status.success(), "{out:?}");
    };
    publish("0", 90);
    eventually(
        Duration::from_secs(10),
        "the QoS 0 publish received",
        || (metric(&server, &admin, "wulian_mqtt_publish_received_total") >= 1).then_some(()),
    );
    publish("1", 20);
    // Past the window: a QoS 0 write still waiting would have landed by now.
    std::thread::sleep(Duration::from_millis(2500));
    let points = telemetry(&server, &admin, "meter-9", "keys=n&from=0&to=100000");
    let points = points["series"]["n"].as_array().unwrap().clone();
    assert_eq!(points.len(), 1, "one timestamp: {points:?}");
    assert_eq!(
        points[0]["value"].as_f64(),
        Some(20.0),
        "the later reading wins: {points:?}"
    );
    // The QoS 1 PUBACK waited for an fsync, which the metrics time.
    assert!(metric(&server, &admin, "wulian_tsdb_wal_fsync_seconds_count") >= 1);
}
