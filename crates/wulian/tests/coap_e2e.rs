//! The CoAP endpoint end to end: the real binary with `[coap]` enabled, libcoap's
//! `coap-client` as the device (Debian `libcoap3-bin`; scripts/test.sh installs it), curl and
//! the CLI as the application, and a raw UDP socket for what coap-client will not send
//! (a retransmission with the same message id, garbage, an oversized datagram).

mod support;

use std::net::UdpSocket;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::{Value, json};
use support::*;

/// coap-client under the name this system gives it (the TLS-less build is enough).
fn coap_client() -> &'static str {
    for name in [
        "coap-client",
        "coap-client-notls",
        "coap-client-openssl",
        "coap-client-gnutls",
    ] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {name}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if found {
            return name;
        }
    }
    panic!("coap-client is installed (apt-get install libcoap3-bin)");
}

struct Coap {
    server: TestServer,
    port: u16,
    admin: String,
}

impl Coap {
    fn start(dir: &Path) -> Coap {
        let config = dir.join("wulian.toml");
        std::fs::write(&config, "[coap]\nenabled = true\naddr = \"127.0.0.1:0\"\n").unwrap();
        let data = dir.join("data");
        let server = TestServer::start_with_args(&data, &["--config", config.to_str().unwrap()]);
        let addr = server.wait_for_line("CoAP listening on ");
        let port = addr.rsplit_once(':').unwrap().1.parse().unwrap();
        let admin = server
            .admin_key
            .clone()
            .expect("first start prints the admin key");
        Coap {
            server,
            port,
            admin,
        }
    }

    fn create_device(&self, id: &str) -> String {
        let device = self
            .server
            .cli_json(&self.admin, &["devices", "create", id]);
        device["token"].as_str().unwrap().to_string()
    }

    fn uri(&self, path: &str) -> String {
        format!("coap://127.0.0.1:{}/{path}", self.port)
    }

    /// Runs coap-client (at most 10 s: `-B` ends it whatever the server does).
    fn client(&self, args: &[&str]) -> Output {
        Command::new(coap_client())
            .args(["-B", "10"])
            .args(args)
            .output()
            .expect("run coap-client")
    }

    fn api(&self, args: &[&str]) -> (u16, Value) {
        let auth = format!("Authorization: Bearer {}", self.admin);
        let mut all = vec!["-H", &auth];
        all.extend_from_slice(args);
        curl(&all)
    }

    fn latest(&self, device: &str) -> Value {
        let (code, body) = self.api(&[&format!(
            "{}/api/v1/devices/{device}/telemetry/latest",
            self.server.http
        )]);
        assert_eq!(code, 200, "{body}");
        body["values"].clone()
    }

    fn points(&self, device: &str, key: &str) -> Vec<Value> {
        let (code, body) = self.api(&[&format!(
            "{}/api/v1/devices/{device}/telemetry?keys={key}",
            self.server.http
        )]);
        assert_eq!(code, 200, "{body}");
        body["series"][key].as_array().cloned().unwrap_or_default()
    }

    fn command(&self, device: &str, id: &str) -> Value {
        let (code, body) = self.api(&[&format!(
            "{}/api/v1/devices/{device}/commands/{id}",
            self.server.http
        )]);
        assert_eq!(code, 200, "{body}");
        body
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn telemetry_commands_and_refusals_with_coap_client() {
    let dir = tempfile::tempdir().unwrap();
    let coap = Coap::start(dir.path());
    let token = coap.create_device("nb-1");
    let telemetry = coap.uri(&format!("devices/nb-1/telemetry?t={token}"));

    // Confirmable POST (coap-client's default), JSON without and with Content-Format.
    let out = coap.client(&[
        "-m",
        "post",
        "-e",
        r#"{"temp": 21.5, "door": "closed"}"#,
        &telemetry,
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let out = coap.client(&[
        "-m",
        "post",
        "-t",
        "json",
        "-e",
        r#"{"battery": 87}"#,
        &telemetry,
    ]);
    assert!(out.status.success(), "{}", text(&out));
    // Non-confirmable: a NON response, the point stored all the same.
    let out = coap.client(&["-N", "-m", "post", "-e", r#"{"rssi": -97}"#, &telemetry]);
    assert!(out.status.success(), "{}", text(&out));
    // The same document in CBOR (Content-Format 60): {"hum": 40}.
    let cbor = dir.path().join("reading.cbor");
    std::fs::write(&cbor, b"\xa1\x63hum\x18\x28").unwrap();
    let out = coap.client(&[
        "-m",
        "post",
        "-t",
        "60",
        "-f",
        cbor.to_str().unwrap(),
        &telemetry,
    ]);
    assert!(
        out.status.success() && !text(&out).contains("4."),
        "{}",
        text(&out)
    );
    let latest = coap.latest("nb-1");
    assert_eq!(latest["hum"]["value"], 40.0, "{latest}");
    assert_eq!(latest["temp"]["value"], 21.5, "{latest}");
    assert_eq!(latest["door"]["value"], "closed", "{latest}");
    assert_eq!(latest["battery"]["value"], 87.0, "{latest}");
    assert_eq!(latest["rssi"]["value"], -97.0, "{latest}");

    // Refusals: precise codes with a diagnostic, and never the token echoed back.
    let wrong = coap.uri("devices/nb-1/telemetry?t=wld_0000");
    let out = coap.client(&["-m", "post", "-e", r#"{"temp": 1}"#, &wrong]);
    let said = text(&out);
    assert!(said.contains("4.01"), "{said}");
    let out = coap.client(&["-m", "post", "-e", r#"{"temp": 21.5"#, &telemetry]);
    let said = text(&out);
    assert!(
        said.contains("4.00") && said.contains("invalid_json"),
        "{said}"
    );
    assert!(!said.contains(&token), "{said}");
    let out = coap.client(&["-m", "post", "-e", r#"{"temp": "hot"}"#, &telemetry]);
    let said = text(&out);
    assert!(
        said.contains("4.22") && said.contains("type_mismatch"),
        "{said}"
    );
    let out = coap.client(&["-m", "post", "-t", "text/plain", "-e", "21.5", &telemetry]);
    assert!(text(&out).contains("4.15"), "{}", text(&out));
    let out = coap.client(&["-m", "get", &telemetry]);
    assert!(text(&out).contains("4.05"), "{}", text(&out));
    let out = coap.client(&[
        "-m",
        "post",
        "-e",
        "{}",
        &coap.uri(&format!("devices/nb-1/attributes?t={token}")),
    ]);
    assert!(text(&out).contains("4.04"), "{}", text(&out));
    assert_eq!(coap.latest("nb-1")["temp"]["value"], 21.5);

    // A command sent over REST waits for the device's next uplink and rides in its response.
    let (code, sent) = coap.api(&[
        "-X",
        "POST",
        "-H",
        "Content-Type: application/json",
        "-d",
        &json!({"name": "reboot", "params": {"delay": 5}, "timeout_ms": 60000, "wait": false})
            .to_string(),
        &format!("{}/api/v1/devices/nb-1/commands", coap.server.http),
    ]);
    assert_eq!(code, 202, "{sent}");
    assert_eq!(sent["status"], "pending", "{sent}");
    let command_id = sent["id"].as_str().unwrap().to_string();

    let out = coap.client(&["-m", "post", "-e", r#"{"temp": 22.0}"#, &telemetry]);
    assert!(out.status.success(), "{}", text(&out));
    let delivered: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("commands in the uplink's response ({e}): {}", text(&out)));
    assert_eq!(
        delivered,
        json!([{"id": command_id, "name": "reboot", "params": {"delay": 5}}])
    );
    assert_eq!(coap.command("nb-1", &command_id)["status"], "sent");
    // Handed out once: the next poll is empty.
    let out = coap.client(&[
        "-m",
        "get",
        &coap.uri(&format!("devices/nb-1/commands?t={token}")),
    ]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "[]",
        "{}",
        text(&out)
    );

    // The device answers; the command succeeds with its answer.
    let answer_uri = coap.uri(&format!(
        "devices/nb-1/commands/{command_id}/response?t={token}"
    ));
    let out = coap.client(&[
        "-m",
        "post",
        "-e",
        r#"{"result": "rebooting"}"#,
        &answer_uri,
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let done = coap.command("nb-1", &command_id);
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["response"], json!({"result": "rebooting"}));
    // A second answer to a finished command: 4.04.
    let out = coap.client(&["-m", "post", "-e", r#"{"result": "again"}"#, &answer_uri]);
    assert!(text(&out).contains("4.04"), "{}", text(&out));

    // A command nobody fetches in time is undelivered.
    let (code, never) = coap.api(&[
        "-X",
        "POST",
        "-H",
        "Content-Type: application/json",
        "-d",
        &json!({"name": "ping", "timeout_ms": 300}).to_string(),
        &format!("{}/api/v1/devices/nb-1/commands", coap.server.http),
    ]);
    assert_eq!(code, 200, "{never}");
    assert_eq!(never["status"], "undelivered", "{never}");
}

/// A CoAP request built by hand (RFC 7252 §3): header, token, options in order, payload.
fn request(
    confirmable: bool,
    message_id: u16,
    token: &[u8],
    path: &[&str],
    query: &str,
    payload: &[u8],
) -> Vec<u8> {
    let kind = if confirmable { 0 } else { 1 };
    let mut out = vec![0x40 | (kind << 4) | token.len() as u8, 0x02];
    out.extend(message_id.to_be_bytes());
    out.extend(token);
    let mut last = 0u16;
    let mut option = |out: &mut Vec<u8>, number: u16, value: &[u8]| {
        let delta = number - last;
        last = number;
        assert!(delta < 13 && value.len() < 269);
        if value.len() < 13 {
            out.push(((delta as u8) << 4) | value.len() as u8);
        } else {
            out.push(((delta as u8) << 4) | 13);
            out.push((value.len() - 13) as u8);
        }
        out.extend(value);
    };
    for segment in path {
        option(&mut out, 11, segment.as_bytes());
    }
    option(&mut out, 15, query.as_bytes());
    if !payload.is_empty() {
        out.push(0xFF);
        out.extend(payload);
    }
    out
}

fn exchange(socket: &UdpSocket, datagram: &[u8]) -> Vec<u8> {
    socket.send(datagram).unwrap();
    let mut buf = [0u8; 2048];
    let len = socket
        .recv(&mut buf)
        .expect("a response within the timeout");
    buf[..len].to_vec()
}

#[test]
fn retransmissions_garbage_and_oversized_datagrams() {
    let dir = tempfile::tempdir().unwrap();
    let coap = Coap::start(dir.path());
    let token = coap.create_device("nb-2");
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.connect(("127.0.0.1", coap.port)).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let query = format!("t={token}");
    let path = ["devices", "nb-2", "telemetry"];

    // The same Confirmable message twice (its ACK "lost"): one point, the same ACK twice.
    // No `ts`, so a second store would add a second point at a later receive time.
    let con = request(true, 0x5151, &[7, 7], &path, &query, br#"{"count": 1}"#);
    let first = exchange(&socket, &con);
    std::thread::sleep(Duration::from_millis(50));
    let second = exchange(&socket, &con);
    assert_eq!(first, second);
    assert_eq!(first[0] >> 4 & 0x3, 2, "an ACK");
    assert_eq!(first[1], 0x44, "2.04 Changed");
    assert_eq!(&first[2..4], &[0x51, 0x51], "the request's message id");
    assert_eq!(&first[4..6], &[7, 7], "the request's token");
    assert_eq!(coap.points("nb-2", "count").len(), 1);
    // A new message id is a new message.
    exchange(
        &socket,
        &request(true, 0x5152, &[8], &path, &query, br#"{"count": 2}"#),
    );
    assert_eq!(coap.points("nb-2", "count").len(), 2);

    // Garbage is dropped (too short, version 3, a Non-confirmable "response"); text that
    // happens to read as a Confirmable message ("G" = version 1, CON) gets a Reset; a CoAP
    // ping (empty CON) gets a Reset; and the server keeps serving.
    for garbage in [&b""[..], b"\x40", b"\xff\xff\xff\xff\xff", &[0x55; 300]] {
        socket.send(garbage).unwrap();
    }
    let reset = exchange(&socket, b"GET / HTTP/1.1\r\n\r\n");
    assert_eq!(reset, vec![0x70, 0x00, b'T', b' ']);
    let reset = exchange(&socket, &[0x40, 0x00, 0x12, 0x34]);
    assert_eq!(reset, vec![0x70, 0x00, 0x12, 0x34]);
    // A Confirmable request with a reserved option delta (15): a format error, Reset.
    let reset = exchange(&socket, &[0x40, 0x02, 0x00, 0x09, 0xF0]);
    assert_eq!(reset, vec![0x70, 0x00, 0x00, 0x09]);

    // Larger than max_message_bytes (1152): 4.13 with Size1.
    let big = format!(r#"{{"blob": "{}"}}"#, "x".repeat(1500));
    let response = exchange(
        &socket,
        &request(true, 0x5153, &[9], &path, &query, big.as_bytes()),
    );
    assert_eq!(response[1], 0x8D, "4.13 Request Entity Too Large");

    let ok = exchange(
        &socket,
        &request(true, 0x5154, &[], &path, &query, br#"{"count": 3}"#),
    );
    assert_eq!(ok[1], 0x44, "still serving");
    assert_eq!(coap.points("nb-2", "count").len(), 3);
}

#[test]
fn twin_over_coap_with_coap_client() {
    let dir = tempfile::tempdir().unwrap();
    let coap = Coap::start(dir.path());
    let token = coap.create_device("nb-7");
    let (code, body) = coap.api(&[
        "-X",
        "PATCH",
        "-H",
        "Content-Type: application/merge-patch+json",
        "--data-binary",
        r#"{"interval_s": 3600}"#,
        &format!("{}/api/v1/devices/nb-7/twin/desired", coap.server.http),
    ]);
    assert_eq!(code, 200, "{body}");

    // The device asks for what to do on its next uplink, applies it and reports it.
    let out = coap.client(&[
        "-m",
        "get",
        &coap.uri(&format!("devices/nb-7/twin/delta?t={token}")),
    ]);
    let delta: Value = serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim())
        .unwrap_or_else(|_| panic!("JSON delta: {}", text(&out)));
    assert_eq!(delta["delta"], json!({"interval_s": 3600}), "{delta}");
    let out = coap.client(&[
        "-m",
        "post",
        "-t",
        "json",
        "-e",
        r#"{"interval_s": 3600, "battery_mv": 3610}"#,
        &coap.uri(&format!("devices/nb-7/twin/reported?t={token}")),
    ]);
    let after: Value = serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim())
        .unwrap_or_else(|_| panic!("JSON answer: {}", text(&out)));
    assert_eq!(after["delta"], json!({}), "{after}");
    let (_, twin) = coap.api(&[&format!("{}/api/v1/devices/nb-7/twin", coap.server.http)]);
    assert_eq!(twin["reported"]["battery_mv"], 3610, "{twin}");

    // Not a merge patch: 4.00 with a diagnostic.
    let out = coap.client(&[
        "-m",
        "post",
        "-t",
        "json",
        "-e",
        "[1, 2]",
        &coap.uri(&format!("devices/nb-7/twin/reported?t={token}")),
    ]);
    assert!(
        text(&out).contains("4.00") && text(&out).contains("merge patch"),
        "{}",
        text(&out)
    );
}
