//! Drives the real `wulian` binary: starts `wulian serve` on port 0 in a data directory, reads
//! the addresses and the first-start admin key from its output, and kills it when dropped.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Mutex, mpsc};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_wulian");

pub struct TestServer {
    pub child: Child,
    pub http: String,
    pub mqtt_host: String,
    pub mqtt_port: u16,
    /// Only on the first start of a data directory.
    pub admin_key: Option<String>,
    /// The rest of the server's standard output, line by line (see [`TestServer::wait_for_line`]).
    pub stdout: Mutex<mpsc::Receiver<String>>,
}

impl TestServer {
    pub fn start(data_dir: &Path) -> TestServer {
        TestServer::start_with_args(data_dir, &[])
    }

    /// Like [`TestServer::start`], with extra `wulian serve` arguments (e.g.
    /// `--mqtt-allow-anonymous`, `--config FILE`).
    pub fn start_with_args(data_dir: &Path, extra_args: &[&str]) -> TestServer {
        let mut child = Command::new(BIN)
            .args([
                "serve",
                "--http-addr",
                "127.0.0.1:0",
                "--mqtt-addr",
                "127.0.0.1:0",
                "--data-dir",
            ])
            .arg(data_dir)
            .args(extra_args)
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
        let (mut http, mut mqtt, mut admin_key) = (None, None, None);
        let deadline = Instant::now() + Duration::from_secs(30);
        while http.is_none() || mqtt.is_none() {
            let line = rx
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .expect("wulian serve printed its addresses");
            if let Some(key) = line.strip_prefix("admin API key: ") {
                admin_key = Some(key.to_string());
            } else if let Some(addr) = line.strip_prefix("HTTP API listening on ") {
                http = Some(addr.to_string());
            } else if let Some(addr) = line.strip_prefix("MQTT listening on ") {
                mqtt = Some(addr.to_string());
            }
        }
        let mqtt = mqtt.unwrap();
        let (host, port) = mqtt.rsplit_once(':').unwrap();
        TestServer {
            child,
            http: http.unwrap(),
            mqtt_host: host.to_string(),
            mqtt_port: port.parse().unwrap(),
            admin_key,
            stdout: Mutex::new(rx),
        }
    }

    /// Waits up to 30 s for a line of the server's output starting with `prefix` (e.g. `MQTT ws
    /// listening on ` for an extra listener) and returns the rest of it.
    pub fn wait_for_line(&self, prefix: &str) -> String {
        let rx = self.stdout.lock().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let line = rx
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .unwrap_or_else(|_| panic!("wulian serve printed a line starting with {prefix:?}"));
            if let Some(rest) = line.strip_prefix(prefix) {
                return rest.to_string();
            }
        }
    }

    /// SIGKILL: no flush, no goodbye — what a power cut looks like to the process.
    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM and wait for the exit status.
    pub fn terminate(mut self) -> ExitStatus {
        signal(self.child.id(), "TERM");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "wulian did not stop after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs the CLI against this server with `key`.
    pub fn cli(&self, key: &str, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .env("WULIAN_URL", &self.http)
            .env("WULIAN_API_KEY", key)
            .output()
            .expect("run wulian CLI")
    }

    /// Runs the CLI and parses its standard output as JSON, asserting success.
    pub fn cli_json(&self, key: &str, args: &[&str]) -> Value {
        let out = self.cli(key, args);
        assert!(
            out.status.success(),
            "wulian {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("CLI printed JSON")
    }

    pub fn mqtt_args(&self) -> Vec<String> {
        vec![
            "-h".into(),
            self.mqtt_host.clone(),
            "-p".into(),
            self.mqtt_port.to_string(),
        ]
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

pub fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// curl, as a user would type it; returns (HTTP status, body as JSON or Null).
pub fn curl(args: &[&str]) -> (u16, Value) {
    let out = Command::new("curl")
        .args(["-sS", "-o", "-", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl is installed (apt-get install curl)");
    assert!(
        out.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (
        code.trim().parse().unwrap(),
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}

pub fn mosquitto_pub(server: &TestServer, args: &[&str]) -> Output {
    Command::new("mosquitto_pub")
        .args(server.mqtt_args())
        .args(args)
        .output()
        .expect("mosquitto_pub is installed (apt-get install mosquitto-clients)")
}

pub fn clients_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients")
}

/// Polls `f` until it returns Some, or panics after `timeout`.
pub fn eventually<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
