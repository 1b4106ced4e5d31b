//! Interoperability with MQTT.js, the Node.js client behind many gateways and dashboards: the
//! test in `interop/mqttjs/` drives the real binary over MQTT 3.1.1 and 5.0 (telemetry at QoS
//! 0/1/2, a command sent through the API and answered, telemetry over a WebSocket listener).
//! Node.js and npm must be installed;
//! `npm ci` runs once per checkout (skipped when `node_modules` exists).

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::TestServer;

fn interop_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../interop/mqttjs")
}

/// Runs `cmd` to completion, killing it after `timeout`, with its output captured.
fn run_bounded(mut cmd: Command, timeout: Duration) -> Output {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {what} (is Node.js 20 with npm installed?): {e}"));
    let deadline = Instant::now() + timeout;
    loop {
        if child.try_wait().expect("wait for child").is_some() {
            return child.wait_with_output().expect("collect output");
        }
        if Instant::now() >= deadline {
            child.kill().ok();
            let out = child.wait_with_output().expect("collect output");
            panic!(
                "{what} did not finish within {timeout:?}\nstdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn npm_ci(dir: &Path) {
    if dir.join("node_modules/mqtt/package.json").exists() {
        return;
    }
    let mut cmd = Command::new("npm");
    cmd.args(["ci", "--no-audit", "--no-fund"]).current_dir(dir);
    let out = run_bounded(cmd, Duration::from_secs(300));
    assert!(
        out.status.success(),
        "npm ci failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn mqttjs_device_telemetry_and_commands() {
    let dir = interop_dir();
    npm_ci(&dir);

    let data = tempfile::tempdir().unwrap();
    let config = data.path().join("wulian.toml");
    std::fs::write(
        &config,
        "[[mqtt.listeners]]\nkind = \"ws\"\naddr = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    let server = TestServer::start_with_args(data.path(), &["--config", config.to_str().unwrap()]);
    let ws = server.wait_for_line("MQTT ws listening on ");
    let admin = server
        .admin_key
        .clone()
        .expect("first start prints the admin key");
    let device = server.cli_json(&admin, &["devices", "create", "mqttjs-1"]);
    let token = device["token"].as_str().expect("the device's token");

    let mut cmd = Command::new("node");
    cmd.args(["--test", "--test-reporter=spec"])
        .current_dir(&dir)
        .env("WULIAN_HTTP", &server.http)
        .env(
            "WULIAN_MQTT",
            format!("mqtt://{}:{}", server.mqtt_host, server.mqtt_port),
        )
        .env("WULIAN_MQTT_WS", format!("ws://{ws}"))
        .env("WULIAN_API_KEY", &admin)
        .env("WULIAN_DEVICE_ID", "mqttjs-1")
        .env("WULIAN_DEVICE_TOKEN", token);
    let out = run_bounded(cmd, Duration::from_secs(120));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "node --test failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Five tests: telemetry and commands, each over 3.1.1 and 5.0, and telemetry over WebSocket.
    assert!(stdout.contains("pass 5"), "{stdout}");
}
