//! Conformance: the MQTT 5 test suite of the Python client gmqtt (`tests/test_mqtt5.py` in its
//! PyPI source package) against the real binary. The pinned sdist is downloaded once with
//! `pip download`, checked against its SHA-256 and cached under the cargo target directory;
//! pytest, pytest-asyncio and pytest-timeout must be installed (scripts/test.sh does it).
//!
//! The suite's clients log in as an application with an API key whose policy allows every
//! topic (`interop/gmqtt/wulian_auth.py` hands them the key as their password). Every test
//! must pass except those in `interop/gmqtt/expected-failures.txt`, and those must fail.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::TestServer;

const GMQTT_VERSION: &str = "0.8.0";
const GMQTT_SDIST_SHA256: &str = "61fb7641109f57ca29f73d2d8f2cb487de49d76338ef8c68228db961b6e9696a";
const SUITE: &str = "tests/test_mqtt5.py";

fn interop_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../interop/gmqtt")
}

/// Runs `cmd` to completion, killing it after `timeout`, with its output captured.
fn run_bounded(mut cmd: Command, timeout: Duration) -> Output {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {what} (is python3 installed?): {e}"));
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
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn check(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn sha256(file: &Path) -> String {
    let mut cmd = Command::new("python3");
    cmd.args([
        "-c",
        "import hashlib, sys; print(hashlib.sha256(open(sys.argv[1], 'rb').read()).hexdigest())",
    ])
    .arg(file);
    let out = run_bounded(cmd, Duration::from_secs(30));
    check(&out, "sha256");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The unpacked, verified gmqtt sdist (downloaded on first use, then cached).
fn gmqtt_sdist() -> PathBuf {
    let cache = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("gmqtt");
    let unpacked = cache.join(format!("gmqtt-{GMQTT_VERSION}"));
    if unpacked.join(SUITE).exists() {
        return unpacked;
    }
    std::fs::create_dir_all(&cache).unwrap();
    let archive = cache.join(format!("gmqtt-{GMQTT_VERSION}.tar.gz"));
    if !archive.exists() {
        // `--no-binary gmqtt`, not `:all:`: only gmqtt must come as source; pip may still use
        // wheels of setuptools to read its metadata.
        let mut cmd = Command::new("python3");
        cmd.args(["-m", "pip", "download", "--quiet", "--no-binary", "gmqtt"])
            .args(["--no-deps", "--dest"])
            .arg(&cache)
            .arg(format!("gmqtt=={GMQTT_VERSION}"));
        check(
            &run_bounded(cmd, Duration::from_secs(240)),
            "pip download gmqtt",
        );
    }
    let digest = sha256(&archive);
    if digest != GMQTT_SDIST_SHA256 {
        std::fs::remove_file(&archive).ok();
        panic!(
            "{} has SHA-256 {digest}, expected {GMQTT_SDIST_SHA256}",
            archive.display()
        );
    }
    // Unpack beside the final directory, then rename: an interrupted run leaves no half tree.
    let staging = tempfile::tempdir_in(&cache).unwrap();
    let mut cmd = Command::new("tar");
    cmd.arg("xzf").arg(&archive).arg("-C").arg(staging.path());
    check(&run_bounded(cmd, Duration::from_secs(60)), "tar xzf");
    let staged = staging.path().join(format!("gmqtt-{GMQTT_VERSION}"));
    if std::fs::rename(&staged, &unpacked).is_err() {
        // Another test process unpacked it first.
        assert!(
            unpacked.join(SUITE).exists(),
            "unpack {}",
            archive.display()
        );
    }
    unpacked
}

/// Test ids (`tests/test_mqtt5.py::name`) listed in the expected-failures file.
fn expected_failures() -> BTreeSet<String> {
    let text = std::fs::read_to_string(interop_dir().join("expected-failures.txt"))
        .expect("interop/gmqtt/expected-failures.txt");
    text.lines()
        .map(|line| line.split('#').next().unwrap().trim())
        .filter(|line| !line.is_empty())
        .map(str::to_string)
        .collect()
}

/// The value of attribute `name` in the tag text `tag`.
fn attribute(tag: &str, name: &str) -> Option<String> {
    let start = tag.find(&format!(" {name}=\""))? + name.len() + 3;
    let len = tag[start..].find('"')?;
    Some(tag[start..start + len].to_string())
}

/// (passed, not passed) test ids from pytest's JUnit XML report.
fn outcomes(junit: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let (mut passed, mut failed) = (BTreeSet::new(), BTreeSet::new());
    for case in junit.split("<testcase").skip(1) {
        let case = case.split("</testcase>").next().unwrap();
        let tag = &case[..case.find('>').unwrap_or(case.len())];
        let class = attribute(tag, "classname").expect("testcase classname");
        let name = attribute(tag, "name").expect("testcase name");
        let id = format!("{}.py::{name}", class.replace('.', "/"));
        let ok = !["<failure", "<error", "<skipped"]
            .iter()
            .any(|bad| case.contains(bad));
        if ok {
            passed.insert(id);
        } else {
            failed.insert(id);
        }
    }
    (passed, failed)
}

#[test]
fn gmqtt_mqtt5_suite() {
    let sdist = gmqtt_sdist();
    let data = tempfile::tempdir().unwrap();
    let server = TestServer::start(data.path());
    let admin = server
        .admin_key
        .clone()
        .expect("first start prints the admin key");
    let key = server.cli_json(
        &admin,
        &[
            "keys",
            "create",
            "gmqtt",
            "--scope",
            "read_write",
            "--mqtt-policy",
            r##"{"publish": {"allow": ["#"]}, "subscribe": {"allow": ["#"]}}"##,
        ],
    );
    let secret = key["secret"].as_str().expect("the key's secret");

    let report = data.path().join("junit.xml");
    let mut cmd = Command::new("python3");
    cmd.args(["-m", "pytest", SUITE, "-v", "-p", "no:cacheprovider"])
        .args(["-p", "wulian_auth", "--timeout", "60"])
        .args(["-o", "asyncio_default_fixture_loop_scope=function"])
        .arg(format!("--junitxml={}", report.display()))
        .current_dir(&sdist)
        .env("PYTHONPATH", interop_dir())
        .env("HOST", &server.mqtt_host)
        .env("PORT", server.mqtt_port.to_string())
        .env("USERNAME", "apikey")
        .env("WULIAN_MQTT_PASSWORD", secret)
        .env_remove("TOKEN")
        .env_remove("PASSWORD");
    let out = run_bounded(cmd, Duration::from_secs(240));
    let log = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let junit = std::fs::read_to_string(&report)
        .unwrap_or_else(|e| panic!("pytest wrote no report ({e}); is pytest installed?\n{log}"));
    let (passed, failed) = outcomes(&junit);
    assert!(
        passed.len() + failed.len() >= 16,
        "gmqtt's suite has 16 tests, pytest ran {}:\n{log}",
        passed.len() + failed.len()
    );

    let expected = expected_failures();
    let unexpected: Vec<_> = failed.difference(&expected).collect();
    let now_passing: Vec<_> = expected.intersection(&passed).collect();
    let unknown: Vec<_> = expected
        .iter()
        .filter(|id| !passed.contains(*id) && !failed.contains(*id))
        .collect();
    assert!(
        unexpected.is_empty() && now_passing.is_empty() && unknown.is_empty(),
        "gmqtt {GMQTT_VERSION} suite: {} passed, {} failed\n\
         failed, not in interop/gmqtt/expected-failures.txt: {unexpected:?}\n\
         listed as expected failures but passed (remove them): {now_passing:?}\n\
         listed but not run (renamed?): {unknown:?}\n{log}",
        passed.len(),
        failed.len()
    );
}
