//! Crash consistency of HTTP telemetry ingest: concurrent writers post batches, the server is
//! SIGKILLed while requests are in flight, restarted on the same data directory, and every point
//! whose request was answered 200 must be there with its value. Four kill/restart cycles, with
//! ingestion continuing in between: three plain SIGKILLs mid-ingest (before the third the server
//! is also stopped cleanly once, so that WAL is replayed on top of block files), and a fourth
//! SIGKILL 40 ms after a SIGTERM, i.e. during the orderly shutdown and its final flush.
//!
//! The server has no setting for the flush threshold (256 MiB of WAL, or an hour), so the three
//! plain kills interrupt WAL appends and group commits; only the fourth can land in a flush (the
//! shutdown one). Flush and compaction interruption step by step is covered at the engine level
//! by `wulian-tsdb`'s `tests/model.rs` (fault hooks between the steps).

mod support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::TestServer;

const WRITERS: u64 = 6;
const BATCH: u64 = 40;
/// 2026-01-01T00:00:00Z; each writer has its own range of timestamps, 1 ms apart.
const BASE: i64 = 1_767_225_600_000;
const WRITER_SPAN: i64 = 100_000_000;
const DEVICE: &str = "crash-1";

/// The value stored at `ts`: a decimal that depends on the timestamp, so a point that came
/// back under the wrong timestamp (or a torn value) is noticed.
fn value_at(ts: i64) -> f64 {
    ((ts.rem_euclid(1_000_003)) as f64) / 100.0 + 0.25
}

/// One HTTP/1.1 request over a fresh connection (`Connection: close`); returns status and body.
fn http(
    addr: &str,
    method: &str,
    path: &str,
    auth: &str,
    body: &[u8],
) -> std::io::Result<(u16, Vec<u8>)> {
    let addr = addr.strip_prefix("http://").unwrap_or(addr);
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {auth}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no end of headers"))?;
    let headers = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let status: u16 = headers
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other("no status"))?;
    let mut body = raw[split + 4..].to_vec();
    if headers.contains("transfer-encoding: chunked") {
        body = dechunk(&body)?;
    }
    Ok((status, body))
}

fn dechunk(mut data: &[u8]) -> std::io::Result<Vec<u8>> {
    let bad = || std::io::Error::other("bad chunked body");
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n").ok_or_else(bad)?;
        let size_text = std::str::from_utf8(&data[..line_end]).map_err(|_| bad())?;
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| bad())?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size + 2 {
            return Err(bad());
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// Posts batches until `stop` or until the server dies; returns the timestamps of the batches
/// answered 200, and whether a request was cut by the server's death (in flight at the kill).
fn writer(
    addr: String,
    token: String,
    w: u64,
    next: Arc<Mutex<i64>>,
    stop: Arc<AtomicBool>,
) -> (Vec<i64>, bool) {
    let mut acked = Vec::new();
    let path = format!("/api/v1/devices/{DEVICE}/telemetry");
    while !stop.load(Ordering::Relaxed) {
        let first = {
            let mut n = next.lock().unwrap();
            let first = *n;
            *n += BATCH as i64;
            first
        };
        let ts: Vec<i64> = (0..BATCH as i64).map(|i| first + i).collect();
        // Out of order within the batch, like a device flushing its buffer.
        let mut order = ts.clone();
        order.reverse();
        let body: Vec<Value> = order
            .iter()
            .map(|&t| serde_json::json!({"ts": t, "values": {"v": value_at(t)}}))
            .collect();
        let body = serde_json::to_vec(&body).unwrap();
        match http(&addr, "POST", &path, &token, &body) {
            Ok((200, reply)) => {
                let reply: Value = serde_json::from_slice(&reply).expect("200 with JSON");
                assert_eq!(reply["accepted"], BATCH, "writer {w}: {reply}");
                acked.extend(ts);
            }
            Ok((status, reply)) => panic!(
                "writer {w}: unexpected HTTP {status}: {}",
                String::from_utf8_lossy(&reply)
            ),
            // The server died under us: this batch is not acknowledged.
            Err(error) => {
                eprintln!("writer {w}: request cut by the kill ({error})");
                return (acked, true);
            }
        }
    }
    (acked, false)
}

/// Every point of the device's key `v`, paged through with from/to and limit.
fn all_points(addr: &str, admin: &str) -> BTreeMap<i64, f64> {
    let mut points = BTreeMap::new();
    let end = BASE + WRITERS as i64 * WRITER_SPAN;
    let mut from = BASE;
    loop {
        let path =
            format!("/api/v1/devices/{DEVICE}/telemetry?keys=v&from={from}&to={end}&limit=100000");
        let (status, body) = http(addr, "GET", &path, admin, b"").expect("query");
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        let body: Value = serde_json::from_slice(&body).expect("JSON");
        let series = body["series"]["v"].as_array().cloned().unwrap_or_default();
        let Some(last) = series.last() else { break };
        let last_ts = last["ts"].as_i64().unwrap();
        for p in &series {
            points.insert(p["ts"].as_i64().unwrap(), p["value"].as_f64().unwrap());
        }
        if series.len() < 100_000 {
            break;
        }
        from = last_ts + 1;
    }
    points
}

fn verify(server: &TestServer, admin: &str, acked: &[i64], cycle: &str) {
    let stored = all_points(&server.http, admin);
    let mut missing = 0usize;
    for ts in acked {
        match stored.get(ts) {
            Some(&v) => assert_eq!(v, value_at(*ts), "{cycle}: wrong value at ts {ts}"),
            None => missing += 1,
        }
    }
    assert_eq!(
        missing,
        0,
        "{cycle}: {missing} of {} acknowledged points lost",
        acked.len()
    );
    // Points whose request was cut may or may not be there, but never with a wrong value.
    for (ts, v) in &stored {
        assert_eq!(
            *v,
            value_at(*ts),
            "{cycle}: unacknowledged point with a wrong value"
        );
    }
    eprintln!(
        "{cycle}: {} acknowledged points all present ({} stored)",
        acked.len(),
        stored.len()
    );
}

#[test]
fn acknowledged_http_telemetry_survives_sigkill_mid_ingest() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let mut server = TestServer::start(dir.path());
    let admin = server
        .admin_key
        .clone()
        .expect("first start prints the admin key");
    let device = server.cli_json(&admin, &["devices", "create", DEVICE]);
    let token = device["token"].as_str().unwrap().to_string();

    let next: Vec<Arc<Mutex<i64>>> = (0..WRITERS)
        .map(|w| Arc::new(Mutex::new(BASE + w as i64 * WRITER_SPAN)))
        .collect();
    let mut acked: Vec<i64> = Vec::new();
    for cycle in 1..=4 {
        if cycle == 3 {
            // Once cleanly, so that the head is flushed to block files and the last cycle's
            // WAL replays on top of them.
            assert!(server.terminate().success());
            server = TestServer::start(dir.path());
            verify(&server, &admin, &acked, "clean restart before cycle 3");
        }
        let stop = Arc::new(AtomicBool::new(false));
        let handles: Vec<_> = (0..WRITERS)
            .map(|w| {
                let (addr, token, next, stop) = (
                    server.http.clone(),
                    token.clone(),
                    Arc::clone(&next[w as usize]),
                    Arc::clone(&stop),
                );
                std::thread::spawn(move || writer(addr, token, w, next, stop))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(1200 + 300 * cycle as u64));
        if cycle == 4 {
            // SIGTERM starts the orderly shutdown, whose last step flushes the head to block
            // files; the SIGKILL 40 ms later lands in or around that flush.
            support::signal(server.child.id(), "TERM");
            std::thread::sleep(Duration::from_millis(40));
        }
        // SIGKILL while the writers are mid-request; only then tell them to stop.
        server.kill9();
        let blocks: Vec<String> = std::fs::read_dir(dir.path().join("tsdb/blocks"))
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        eprintln!("cycle {cycle}: killed; block files left: {blocks:?}");
        stop.store(true, Ordering::Relaxed);
        let before = acked.len();
        let mut cut = 0;
        for h in handles {
            let (ts, was_cut) = h.join().expect("writer thread");
            acked.extend(ts);
            cut += usize::from(was_cut);
        }
        assert!(
            cut > 0,
            "cycle {cycle}: no request was in flight at the kill"
        );
        assert!(
            acked.len() > before,
            "cycle {cycle}: no batch was acknowledged before the kill"
        );
        server = TestServer::start(dir.path());
        assert!(server.admin_key.is_none(), "restart kept the registry");
        verify(&server, &admin, &acked, &format!("cycle {cycle}"));
    }
    assert!(server.terminate().success());
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );
}
