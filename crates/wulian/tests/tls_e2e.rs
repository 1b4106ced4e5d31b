//! TLS and mutual TLS end to end with the real binary and mosquitto_pub: certificates made by
//! `wulian certs`, a TLS listener from `[[mqtt.listeners]]`, the CA registered with
//! `wulian ca add`, a device connecting with its token over TLS and then with its certificate
//! alone, a revoked certificate and one from an unknown CA refused; Eclipse Paho over
//! WebSocket and WebSocket over TLS. Needs mosquitto-clients and paho-mqtt.

mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use support::*;

/// `wulian serve` with a configuration file; the addresses it printed.
struct Server {
    child: Child,
    http: String,
    tls_port: u16,
    ws_port: u16,
    wss_port: u16,
    admin: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

impl Server {
    fn start(data_dir: &Path, config: &Path) -> Server {
        let mut child = Command::new(BIN)
            .args([
                "serve",
                "--http-addr",
                "127.0.0.1:0",
                "--mqtt-addr",
                "127.0.0.1:0",
            ])
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--config")
            .arg(config)
            .env("WULIAN_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn wulian serve");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let (mut http, mut tls, mut ws, mut wss, mut admin) = (None, None, None, None, None);
        let port = |addr: &str| -> u16 {
            let addr = addr.trim_end_matches("/mqtt");
            addr.rsplit_once(':').unwrap().1.parse().unwrap()
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while http.is_none() || tls.is_none() || ws.is_none() || wss.is_none() || admin.is_none() {
            let line = rx
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .expect("wulian serve printed its addresses");
            if let Some(key) = line.strip_prefix("admin API key: ") {
                admin = Some(key.to_string());
            } else if let Some(addr) = line.strip_prefix("HTTP API listening on ") {
                http = Some(addr.to_string());
            } else if let Some(addr) = line.strip_prefix("MQTT tls listening on ") {
                tls = Some(port(addr));
            } else if let Some(addr) = line.strip_prefix("MQTT ws listening on ") {
                ws = Some(port(addr));
            } else if let Some(addr) = line.strip_prefix("MQTT wss listening on ") {
                wss = Some(port(addr));
            }
        }
        Server {
            child,
            http: http.unwrap(),
            tls_port: tls.unwrap(),
            ws_port: ws.unwrap(),
            wss_port: wss.unwrap(),
            admin: admin.unwrap(),
        }
    }

    fn cli(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .env("WULIAN_URL", &self.http)
            .env("WULIAN_API_KEY", &self.admin)
            .output()
            .expect("run wulian CLI")
    }

    fn cli_ok(&self, args: &[&str]) -> serde_json::Value {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "wulian {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
    }

    /// mosquitto_pub over TLS to `localhost` (the server certificate's name), QoS 1.
    fn publish(&self, certs: &Path, extra: &[&str], payload: &str) -> Output {
        Command::new("mosquitto_pub")
            .args(["-h", "localhost", "-p", &self.tls_port.to_string()])
            .arg("--cafile")
            .arg(certs.join("ca.pem"))
            .args(["-q", "1", "-t", "devices/bike-1/telemetry", "-m", payload])
            .args(extra)
            .output()
            .expect("mosquitto_pub is installed (apt-get install mosquitto-clients)")
    }
}

/// Runs `wulian certs ...` and returns its standard output.
fn certs(args: &[&str]) -> String {
    let out = Command::new(BIN)
        .arg("certs")
        .args(args)
        .output()
        .expect("run wulian certs");
    assert!(
        out.status.success(),
        "wulian certs {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn mosquitto_over_tls_with_tokens_and_device_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let certs_dir = dir.path().join("certs");
    let c = certs_dir.to_str().unwrap();
    certs(&["ca", "--out", c]);
    certs(&[
        "server",
        "--ca",
        c,
        "--dns",
        "localhost",
        "--ip",
        "127.0.0.1",
    ]);
    let issued = certs(&["device", "--ca", c, "--device-id", "bike-1"]);
    let serial = issued
        .split("(serial ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .expect("certs device prints the serial")
        .to_string();
    // The key files are private.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(certs_dir.join("ca.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "ca.key is readable by others");

    let config = dir.path().join("wulian.toml");
    std::fs::write(
        &config,
        format!(
            "[[mqtt.listeners]]\nkind = \"tls\"\naddr = \"127.0.0.1:0\"\n\
             cert = \"{c}/server.pem\"\nkey = \"{c}/server.key\"\nclient_auth = \"optional\"\n\n\
             [[mqtt.listeners]]\nkind = \"ws\"\naddr = \"127.0.0.1:0\"\n\n\
             [[mqtt.listeners]]\nkind = \"wss\"\naddr = \"127.0.0.1:0\"\n\
             cert = \"{c}/server.pem\"\nkey = \"{c}/server.key\"\n"
        ),
    )
    .unwrap();
    let server = Server::start(&dir.path().join("data"), &config);
    let device = server.cli_ok(&["devices", "create", "bike-1"]);
    let token = device["token"].as_str().unwrap().to_string();

    // TLS with the device token.
    let out = server.publish(
        &certs_dir,
        &["-i", "bike-1", "-u", "bike-1", "-P", &token],
        r#"{"ts": 1000, "values": {"temp": 20.5}}"#,
    );
    assert!(
        out.status.success(),
        "mosquitto_pub over TLS: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Mutual TLS: once the tenant registered its CA, the certificate alone identifies bike-1.
    let device_tls = [
        "-i".to_string(),
        "bike-1".to_string(),
        "--cert".to_string(),
        certs_dir.join("bike-1.pem").display().to_string(),
        "--key".to_string(),
        certs_dir.join("bike-1.key").display().to_string(),
    ];
    let device_tls: Vec<&str> = device_tls.iter().map(String::as_str).collect();
    server.cli_ok(&["ca", "add", &format!("{c}/ca.pem"), "--name", "fleet"]);
    let listed = server.cli_ok(&["ca", "list"]);
    assert_eq!(listed.as_array().unwrap().len(), 1);
    eventually(Duration::from_secs(10), "certificate login", || {
        server
            .publish(
                &certs_dir,
                &device_tls,
                r#"{"ts": 2000, "values": {"temp": 21.5}}"#,
            )
            .status
            .success()
            .then_some(())
    });
    let latest = server.cli_ok(&["devices", "latest", "bike-1"]);
    assert_eq!(latest["values"]["temp"]["value"], 21.5, "{latest}");

    // A certificate from a CA nobody registered is refused.
    let other = dir.path().join("other");
    let o = other.to_str().unwrap();
    certs(&["ca", "--out", o]);
    certs(&["device", "--ca", o, "--device-id", "bike-1"]);
    let stranger = [
        "-i".to_string(),
        "bike-1".to_string(),
        "--cert".to_string(),
        other.join("bike-1.pem").display().to_string(),
        "--key".to_string(),
        other.join("bike-1.key").display().to_string(),
    ];
    let stranger: Vec<&str> = stranger.iter().map(String::as_str).collect();
    let out = server.publish(&certs_dir, &stranger, r#"{"temp": 99}"#);
    assert!(
        !out.status.success(),
        "a stranger's certificate was accepted"
    );

    // Revoked: refused from now on.
    server.cli_ok(&["ca", "revoke", "bike-1", "--serial", &serial]);
    let out = server.publish(&certs_dir, &device_tls, r#"{"temp": 99}"#);
    assert!(!out.status.success(), "a revoked certificate was accepted");
    let latest = server.cli_ok(&["devices", "latest", "bike-1"]);
    assert_eq!(latest["values"]["temp"]["value"], 21.5, "{latest}");

    // Eclipse Paho over WebSocket and over WebSocket with TLS, with the device token.
    for (port, ts, tls) in [(server.ws_port, 3000, false), (server.wss_port, 4000, true)] {
        let out = paho_ws_publish(port, &token, ts, tls.then(|| certs_dir.join("ca.pem")));
        assert!(
            out.status.success(),
            "paho over {}: {}{}",
            if tls { "wss" } else { "ws" },
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let (code, body) = curl(&[
        "-H",
        &format!("Authorization: Bearer {}", server.admin),
        &format!(
            "{}/api/v1/devices/bike-1/telemetry?keys=ws&from=0&to=10000",
            server.http
        ),
    ]);
    assert_eq!(code, 200, "{body}");
    let points = body["series"]["ws"].as_array().expect("ws series");
    assert_eq!(points.len(), 2, "{body}");
}

/// Publishes `{"ts": ts, "values": {"ws": 1}}` as bike-1 with Paho over WebSocket (`/mqtt`,
/// subprotocol `mqtt`), with TLS when `ca` is given; QoS 1, waits for the PUBACK.
fn paho_ws_publish(port: u16, token: &str, ts: u64, ca: Option<std::path::PathBuf>) -> Output {
    const SCRIPT: &str = r#"
import sys
import paho.mqtt.client as mqtt
port, token, ts, ca = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bike-1", transport="websockets")
c.ws_set_options(path="/mqtt")
if ca:
    c.tls_set(ca_certs=ca)
c.username_pw_set("bike-1", token)
c.connect("localhost", port, keepalive=30)
c.loop_start()
info = c.publish("devices/bike-1/telemetry", '{"ts": %s, "values": {"ws": 1}}' % ts, qos=1)
info.wait_for_publish(timeout=10)
ok = info.is_published()
c.disconnect()
c.loop_stop()
print("published" if ok else "not published")
sys.exit(0 if ok else 1)
"#;
    let ca = ca.map(|p| p.display().to_string()).unwrap_or_default();
    Command::new("python3")
        .args(["-c", SCRIPT, &port.to_string(), token, &ts.to_string(), &ca])
        .output()
        .expect("python3 with paho-mqtt")
}
