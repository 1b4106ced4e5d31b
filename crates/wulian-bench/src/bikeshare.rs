//! The `bikeshare` scenario: a simulated city against a running `wulian serve`.
//!
//! It sets the bike share up through the REST API (system settings, a service area and
//! parking fences, N smart-lock bikes by bulk import, riders signed up and topped up through the
//! sandbox), runs a lock farm (one MQTT 3.1.1 connection per bike, spoken with `wulian_mqtt`'s
//! codec over tokio sockets bound to 127.0.0.1..=127.0.0.N, a few KiB each), and then drives
//! riders at a fixed rate of trip starts for a fixed time. Each start is
//! `POST /api/v1/rider/trips`, which answers only after the lock confirmed the unlock, so its
//! latency is the unlock round trip (API call → command → lock confirmation → response). The
//! locks answer `unlock` at once (no motor delay: the platform is measured), ride for
//! `--ride-secs` and lock again inside a parking fence. Meanwhile GBFS `vehicle_status` is
//! fetched (first request after the cache aged, and an immediate repeat) and the server's CPU
//! and RSS are sampled. Everything is bounded by timeouts; network errors are counted, never
//! fatal once the load runs.

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use bytes::{Buf, Bytes, BytesMut};
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream, lookup_host};
use tokio::sync::{Mutex, Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::{sleep, sleep_until, timeout, timeout_at};
use wulian_mqtt::{
    Connect, Packet, Properties, Protocol, Publish, QoS, ReasonCode, RetainHandling, Subscribe,
    SubscribeFilter, SubscriptionOptions,
};

use crate::cli::{Bikeshare, Common};
use crate::proc_stats;
use crate::report;

// ---------------------------------------------------------------------------------------------
// A minimal HTTP/1.1 client: keep-alive connections in a pool, Content-Length and chunked
// bodies. Enough for a benchmark against our own server; every call has a deadline.

struct Http {
    addr: SocketAddr,
    host: String,
    pool: std::sync::Mutex<Vec<TcpStream>>,
    timeout: Duration,
}

struct Resp {
    status: u16,
    body: Bytes,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

impl Http {
    async fn new(url: &str, timeout: Duration) -> anyhow::Result<Http> {
        let hostport = url
            .strip_prefix("http://")
            .context("--url must start with http://")?
            .trim_end_matches('/');
        let addr = lookup_host(hostport)
            .await
            .with_context(|| format!("resolve {hostport}"))?
            .find(SocketAddr::is_ipv4)
            .context("the server has no IPv4 address")?;
        Ok(Http {
            addr,
            host: hostport.to_string(),
            pool: std::sync::Mutex::new(Vec::new()),
            timeout,
        })
    }

    async fn request(
        &self,
        method: &str,
        path: &str,
        auth: Option<&str>,
        extra: &[(&str, &str)],
        body: Option<&Value>,
    ) -> anyhow::Result<Resp> {
        let body = body.map(|b| b.to_string());
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\n", self.host);
        if let Some(a) = auth {
            head.push_str(&format!("Authorization: Bearer {a}\r\n"));
        }
        for (k, v) in extra {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        match &body {
            Some(b) => head.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{b}",
                b.len()
            )),
            None => head.push_str("\r\n"),
        }
        let deadline = tokio::time::Instant::now() + self.timeout;
        // A pooled connection the server closed fails before any byte is read; retry it once on
        // a fresh connection.
        for attempt in 0..2 {
            let pooled = if attempt == 0 {
                self.pool.lock().ok().and_then(|mut p| p.pop())
            } else {
                None
            };
            let reused = pooled.is_some();
            let mut stream = match pooled {
                Some(s) => s,
                None => {
                    let s = timeout_at(deadline, TcpStream::connect(self.addr))
                        .await
                        .context("HTTP connect timed out")?
                        .context("HTTP connect")?;
                    s.set_nodelay(true).ok();
                    s
                }
            };
            match timeout_at(deadline, exchange(&mut stream, head.as_bytes())).await {
                Err(_) => bail!("HTTP {method} {path} timed out"),
                Ok(Ok((resp, keep))) => {
                    if keep && let Ok(mut p) = self.pool.lock() {
                        p.push(stream);
                    }
                    return Ok(resp);
                }
                Ok(Err(Exchange::Stale)) if reused => continue,
                Ok(Err(Exchange::Stale)) => bail!("HTTP {method} {path}: connection closed"),
                Ok(Err(Exchange::Failed(e))) => return Err(e.context(format!("{method} {path}"))),
            }
        }
        bail!("HTTP {method} {path}: connection closed twice")
    }
}

enum Exchange {
    /// Closed before any response byte.
    Stale,
    Failed(anyhow::Error),
}

impl From<std::io::Error> for Exchange {
    fn from(e: std::io::Error) -> Self {
        Exchange::Failed(e.into())
    }
}

async fn exchange(stream: &mut TcpStream, request: &[u8]) -> Result<(Resp, bool), Exchange> {
    if stream.write_all(request).await.is_err() {
        return Err(Exchange::Stale);
    }
    let mut buf = BytesMut::with_capacity(8192);
    let header_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i;
        }
        let n = match stream.read_buf(&mut buf).await {
            Ok(n) => n,
            Err(_) if buf.is_empty() => return Err(Exchange::Stale),
            Err(e) => return Err(e.into()),
        };
        if n == 0 {
            return Err(if buf.is_empty() {
                Exchange::Stale
            } else {
                Exchange::Failed(anyhow::anyhow!("closed inside the response head"))
            });
        }
        if buf.len() > 64 * 1024 {
            return Err(Exchange::Failed(anyhow::anyhow!("response head too long")));
        }
    };
    let head = String::from_utf8_lossy(&buf[..header_end]).to_string();
    buf.advance(header_end + 4);
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Exchange::Failed(anyhow::anyhow!("bad status line")))?;
    let (mut length, mut chunked, mut keep) = (None, false, true);
    for line in lines {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_ascii_lowercase());
        match k.as_str() {
            "content-length" => length = v.parse::<usize>().ok(),
            "transfer-encoding" => chunked = v.contains("chunked"),
            "connection" => keep = !v.contains("close"),
            _ => {}
        }
    }
    let body = if chunked {
        let mut out = BytesMut::new();
        loop {
            let line_end = loop {
                if let Some(i) = find(&buf, b"\r\n") {
                    break i;
                }
                if stream.read_buf(&mut buf).await? == 0 {
                    return Err(Exchange::Failed(anyhow::anyhow!("closed inside a chunk")));
                }
            };
            let size_text = String::from_utf8_lossy(&buf[..line_end]).to_string();
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| Exchange::Failed(anyhow::anyhow!("bad chunk size")))?;
            buf.advance(line_end + 2);
            while buf.len() < size + 2 {
                if stream.read_buf(&mut buf).await? == 0 {
                    return Err(Exchange::Failed(anyhow::anyhow!("closed inside a chunk")));
                }
            }
            out.extend_from_slice(&buf[..size]);
            buf.advance(size + 2);
            if size == 0 {
                break out.freeze();
            }
        }
    } else if let Some(len) = length {
        while buf.len() < len {
            if stream.read_buf(&mut buf).await? == 0 {
                return Err(Exchange::Failed(anyhow::anyhow!("closed inside the body")));
            }
        }
        buf.split_to(len).freeze()
    } else {
        // No length: the body runs to the end of the connection.
        while stream.read_buf(&mut buf).await? > 0 {}
        keep = false;
        buf.freeze()
    };
    Ok((Resp { status, body }, keep))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

// ---------------------------------------------------------------------------------------------
// Deterministic randomness (no extra dependency).

#[derive(Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // splitmix64
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

// ---------------------------------------------------------------------------------------------
// The city: a square service area and small square parking fences; bikes stand at their
// centres.

const M_PER_DEG_LAT: f64 = 111_320.0;

struct City {
    center: (f64, f64),
    half_side_m: f64,
    /// Parking fence centres (lat, lon).
    spots: Vec<(f64, f64)>,
}

/// Parking fences are squares of this side, metres.
const PARKING_SIDE_M: f64 = 40.0;

impl City {
    fn generate(center: (f64, f64), radius_m: f64, parking: usize, seed: u64) -> City {
        let mut rng = Rng(seed);
        let inner = radius_m * 0.9;
        let spots = (0..parking.max(1))
            .map(|_| {
                let dy = (rng.unit() * 2.0 - 1.0) * inner;
                let dx = (rng.unit() * 2.0 - 1.0) * inner;
                offset(center, dy, dx)
            })
            .collect();
        City {
            center,
            half_side_m: radius_m,
            spots,
        }
    }
}

fn offset((lat, lon): (f64, f64), north_m: f64, east_m: f64) -> (f64, f64) {
    let dlat = north_m / M_PER_DEG_LAT;
    let dlon = east_m / (M_PER_DEG_LAT * lat.to_radians().cos());
    (lat + dlat, lon + dlon)
}

/// A counter-clockwise square ring of `[lon, lat]` around a point.
fn square(center: (f64, f64), half_m: f64) -> Value {
    let (s, w) = offset(center, -half_m, -half_m);
    let (n, e) = offset(center, half_m, half_m);
    let r = |v: f64| (v * 1e7).round() / 1e7;
    json!({"type": "Polygon", "coordinates": [[
        [r(w), r(s)], [r(e), r(s)], [r(e), r(n)], [r(w), r(n)], [r(w), r(s)]
    ]]})
}

// ---------------------------------------------------------------------------------------------
// Riders: valid, unique mainland phone numbers and resident identity numbers.

/// ISO 7064 MOD 11-2 check character of the first 17 digits.
fn id_check_char(first17: &[u8; 17]) -> char {
    const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
    let sum: u32 = first17
        .iter()
        .zip(WEIGHTS)
        .map(|(d, w)| u32::from(d.saturating_sub(b'0')) * w)
        .sum();
    b"10X98765432"[(sum % 11) as usize] as char
}

fn rider_identity(i: usize, nonce: u32) -> Value {
    let k = i / 1000;
    let year = 1970 + k % 35;
    let day = 1 + (k / 35) % 28;
    let month = 1 + (k / (35 * 28)) % 12;
    let first17 = format!("330106{year:04}{month:02}{day:02}{:03}", i % 1000);
    let id_number = match <[u8; 17]>::try_from(first17.as_bytes()) {
        Ok(d) => format!("{first17}{}", id_check_char(&d)),
        Err(_) => first17,
    };
    // 139 + 4 digits of run nonce + 4 of... keep 8 subscriber digits unique per rider.
    let phone = format!(
        "+86139{:08}",
        (u64::from(nonce) * 100_000 + i as u64) % 100_000_000
    );
    json!({
        "phone": phone,
        "name": format!("rider{i}"),
        "real_name": "王小明",
        "id_number": id_number,
        "location_consent": true,
    })
}

// ---------------------------------------------------------------------------------------------
// The lock farm.

/// Bike states shared by the farm and the riders.
const FREE: u8 = 0;
const RESERVED: u8 = 1;
const RIDING: u8 = 2;
const COOLING: u8 = 3;
const RETIRED: u8 = 9;

#[derive(Default)]
struct FarmCounters {
    reports: AtomicU64,
    unlock_commands: AtomicU64,
    other_commands: AtomicU64,
    locked_events: AtomicU64,
    write_errors: AtomicU64,
    disconnects: AtomicU64,
    decode_errors: AtomicU64,
}

struct Farm {
    state: Vec<AtomicU8>,
    counters: FarmCounters,
    spots: Vec<(f64, f64)>,
    ride: Duration,
    parked_interval: Duration,
    riding_interval: Duration,
    cooldown: Duration,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn encode(packet: &Packet, out: &mut BytesMut) -> anyhow::Result<()> {
    wulian_mqtt::encode(packet, Protocol::V311, out).context("encode")
}

fn publish(topic: String, payload: Vec<u8>, packet_id: u16) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic,
        packet_id,
        payload: Bytes::from(payload),
        properties: Properties::default(),
    })
}

fn report_payload(pos: (f64, f64), battery: u8, locked: bool) -> Vec<u8> {
    let speed = if locked { 0.0 } else { 12.5 };
    format!(
        r#"{{"ts":{},"lat":{:.6},"lon":{:.6},"battery":{battery},"locked":{locked},"speed":{speed},"fix":3}}"#,
        now_ms(),
        pos.0,
        pos.1
    )
    .into_bytes()
}

/// Opens one lock's connection: TCP from `source`, CONNECT, CONNACK, SUBSCRIBE to its
/// commands, then its first state report.
async fn lock_connect(
    broker: SocketAddr,
    source: Ipv4Addr,
    id: &str,
    token: &str,
    first_report: Vec<u8>,
    subscribe: bool,
    deadline: Instant,
) -> anyhow::Result<(TcpStream, BytesMut)> {
    let socket = TcpSocket::new_v4().context("socket")?;
    socket
        .bind(SocketAddr::new(IpAddr::V4(source), 0))
        .with_context(|| format!("bind {source}"))?;
    let mut stream = timeout_at(deadline.into(), socket.connect(broker))
        .await
        .context("TCP connect timed out")?
        .context("TCP connect")?;
    stream.set_nodelay(true).ok();
    let mut out = BytesMut::with_capacity(256);
    encode(
        &Packet::Connect(Connect {
            protocol: Protocol::V311,
            clean_start: true,
            keep_alive: 0,
            username: Some(id.to_string()),
            client_id: id.to_string(),
            password: Some(Bytes::copy_from_slice(token.as_bytes())),
            will: None,
            properties: Properties::default(),
        }),
        &mut out,
    )?;
    if subscribe {
        encode(
            &Packet::Subscribe(Subscribe {
                packet_id: 1,
                filters: vec![SubscribeFilter {
                    filter: format!("devices/{id}/commands/+"),
                    options: SubscriptionOptions {
                        qos: QoS::AtLeastOnce,
                        no_local: false,
                        retain_as_published: false,
                        retain_handling: RetainHandling::default(),
                    },
                }],
                properties: Properties::default(),
            }),
            &mut out,
        )?;
    }
    encode(
        &publish(format!("devices/{id}/telemetry"), first_report, 2),
        &mut out,
    )?;
    timeout_at(deadline.into(), stream.write_all(&out))
        .await
        .context("CONNECT write timed out")?
        .context("write CONNECT")?;
    let mut buf = BytesMut::with_capacity(128);
    // Wait for CONNACK and SUBACK (a sleepy lock: CONNACK and the report's PUBACK).
    let (mut connacked, mut subacked) = (false, false);
    for _ in 0..16 {
        let n = timeout_at(deadline.into(), stream.read_buf(&mut buf))
            .await
            .context("no CONNACK/SUBACK in time")?
            .context("read CONNACK")?;
        if n == 0 {
            bail!("connection closed during connect");
        }
        while let Some(p) = wulian_mqtt::decode(&mut buf, Protocol::V311, 64 * 1024)? {
            match p {
                Packet::ConnAck(a) if a.code == ReasonCode::Success => connacked = true,
                Packet::ConnAck(a) => bail!("CONNACK refused: {:?}", a.code),
                Packet::SubAck(_) if subscribe => subacked = true,
                Packet::PubAck(_) if !subscribe => subacked = true,
                _ => {}
            }
        }
        if connacked && subacked {
            buf.reserve(0);
            return Ok((stream, buf));
        }
    }
    bail!("no CONNACK/SUBACK")
}

/// A lock asleep between reports (a cellular lock in power saving): it connects, sends one
/// report, waits for its PUBACK and disconnects.
async fn sleepy_report(
    broker: SocketAddr,
    source: Ipv4Addr,
    id: &str,
    token: &str,
    pos: (f64, f64),
    deadline: Instant,
) -> anyhow::Result<()> {
    let (mut stream, _) = lock_connect(
        broker,
        source,
        id,
        token,
        report_payload(pos, 90, true),
        false,
        deadline,
    )
    .await?;
    let mut out = BytesMut::new();
    encode(
        &Packet::Disconnect(wulian_mqtt::Disconnect {
            code: ReasonCode::Success,
            properties: Properties::default(),
        }),
        &mut out,
    )?;
    timeout_at(deadline.into(), stream.write_all(&out))
        .await
        .ok();
    Ok(())
}

#[derive(Default)]
struct SleepyCounters {
    ok: AtomicU64,
    failed: AtomicU64,
}

/// Sleepy locks report at their parked interval: `(id, token)` cycled at
/// `len / interval` reports per second until `end`.
#[allow(clippy::too_many_arguments)]
async fn sleepy_cycle(
    broker: SocketAddr,
    sources: Vec<Ipv4Addr>,
    bikes: Arc<Vec<(usize, String, String)>>,
    spots: Vec<(f64, f64)>,
    interval: Duration,
    end: Instant,
    concurrency: usize,
    counters: Arc<SleepyCounters>,
) {
    if bikes.is_empty() {
        return;
    }
    let period = interval.as_secs_f64() / bikes.len() as f64;
    let period = Duration::from_secs_f64(period.max(1e-6));
    let limit = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut set = JoinSet::new();
    let mut next = tokio::time::Instant::now();
    let mut k = 0usize;
    while next < end.into() {
        sleep_until(next).await;
        next += period;
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            counters.failed.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let (i, id, token) = bikes[k % bikes.len()].clone();
        k += 1;
        let source = sources[i % sources.len()];
        let pos = spots[i % spots.len()];
        let counters = counters.clone();
        set.spawn(async move {
            let r = sleepy_report(
                broker,
                source,
                &id,
                &token,
                pos,
                Instant::now() + Duration::from_secs(10),
            )
            .await;
            drop(permit);
            let c = if r.is_ok() {
                &counters.ok
            } else {
                &counters.failed
            };
            c.fetch_add(1, Ordering::Relaxed);
        });
        while set.try_join_next().is_some() {}
    }
    timeout(Duration::from_secs(15), async {
        while set.join_next().await.is_some() {}
    })
    .await
    .ok();
    set.shutdown().await;
}

/// One lock, connected: reports on its interval, answers `unlock` at once, rides, locks.
async fn lock_loop(
    idx: usize,
    id: String,
    mut stream: TcpStream,
    mut buf: BytesMut,
    farm: Arc<Farm>,
    mut stop: watch::Receiver<bool>,
    seed: u64,
) {
    let mut rng = Rng(seed);
    let mut pos = farm.spots[idx % farm.spots.len()];
    let battery = 60 + (rng.below(40) as u8);
    let mut packet_id: u16 = 2;
    let telemetry_topic = format!("devices/{id}/telemetry");
    // Parked reports are spread over the interval so the fleet reports evenly.
    let parked_ms = farm.parked_interval.as_millis() as u64;
    let mut next_report =
        tokio::time::Instant::now() + Duration::from_millis((rng.next() % parked_ms.max(1)).max(1));
    let mut ride_end: Option<(tokio::time::Instant, String)> = None;
    let mut cool_until: Option<tokio::time::Instant> = None;
    let mut out = BytesMut::new();
    loop {
        let mut wake = next_report;
        if let Some((t, _)) = &ride_end {
            wake = wake.min(*t);
        }
        if let Some(t) = cool_until {
            wake = wake.min(t);
        }
        tokio::select! {
            _ = stop.changed() => break,
            r = stream.read_buf(&mut buf) => {
                match r {
                    Ok(0) | Err(_) => {
                        farm.counters.disconnects.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                    Ok(_) => {}
                }
                loop {
                    let p = match wulian_mqtt::decode(&mut buf, Protocol::V311, 1024 * 1024) {
                        Ok(Some(p)) => p,
                        Ok(None) => break,
                        Err(_) => {
                            farm.counters.decode_errors.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                    };
                    let Packet::Publish(p) = p else { continue };
                    if p.qos != QoS::AtMostOnce {
                        let ack = Packet::PubAck(wulian_mqtt::Ack {
                            packet_id: p.packet_id,
                            code: ReasonCode::Success,
                            properties: Properties::default(),
                        });
                        encode(&ack, &mut out).ok();
                    }
                    if !p.topic.ends_with("/unlock") {
                        farm.counters.other_commands.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    farm.counters.unlock_commands.fetch_add(1, Ordering::Relaxed);
                    let cmd: Value = serde_json::from_slice(&p.payload).unwrap_or(Value::Null);
                    let params = &cmd["params"];
                    let answer = json!({
                        "id": cmd["id"],
                        "status": "ok",
                        "result": {"unlocked": true, "trip_id": params["trip_id"], "token": params["token"]},
                    });
                    packet_id = packet_id.wrapping_add(1).max(1);
                    encode(&publish(format!("devices/{id}/commands/unlock/response"),
                        answer.to_string().into_bytes(), packet_id), &mut out).ok();
                    farm.state[idx].store(RIDING, Ordering::Relaxed);
                    let trip = params["trip_id"].as_str().unwrap_or_default().to_string();
                    let now = tokio::time::Instant::now();
                    ride_end = Some((now + farm.ride, trip));
                    cool_until = None;
                    next_report = now + farm.riding_interval;
                }
            }
            _ = sleep_until(wake) => {
                let now = tokio::time::Instant::now();
                if ride_end.as_ref().is_some_and(|(t, _)| *t <= now) {
                    let Some((_, trip)) = ride_end.take() else { continue };
                    // End at another parking fence, a few metres from its centre.
                    let spot = farm.spots[rng.below(farm.spots.len())];
                    pos = offset(spot, (rng.unit() - 0.5) * 10.0, (rng.unit() - 0.5) * 10.0);
                    let event = format!(
                        r#"{{"ts":{},"lat":{:.6},"lon":{:.6},"trip_id":"{trip}"}}"#,
                        now_ms(), pos.0, pos.1
                    );
                    packet_id = packet_id.wrapping_add(1).max(1);
                    encode(&publish(format!("devices/{id}/events/locked"), event.into_bytes(),
                        packet_id), &mut out).ok();
                    packet_id = packet_id.wrapping_add(1).max(1);
                    encode(&publish(telemetry_topic.clone(), report_payload(pos, battery, true),
                        packet_id), &mut out).ok();
                    farm.counters.locked_events.fetch_add(1, Ordering::Relaxed);
                    farm.counters.reports.fetch_add(1, Ordering::Relaxed);
                    farm.state[idx].store(COOLING, Ordering::Relaxed);
                    cool_until = Some(now + farm.cooldown);
                    next_report = now + farm.parked_interval;
                } else if cool_until.is_some_and(|t| t <= now) {
                    cool_until = None;
                    farm.state[idx].compare_exchange(COOLING, FREE,
                        Ordering::Relaxed, Ordering::Relaxed).ok();
                } else if next_report <= now {
                    let riding = ride_end.is_some();
                    packet_id = packet_id.wrapping_add(1).max(1);
                    encode(&publish(telemetry_topic.clone(), report_payload(pos, battery, !riding),
                        packet_id), &mut out).ok();
                    farm.counters.reports.fetch_add(1, Ordering::Relaxed);
                    next_report = now + if riding { farm.riding_interval } else { farm.parked_interval };
                }
            }
        }
        if !out.is_empty() {
            let w = timeout(Duration::from_secs(10), stream.write_all(&out)).await;
            out.clear();
            if !matches!(w, Ok(Ok(()))) {
                farm.counters.write_errors.fetch_add(1, Ordering::Relaxed);
                farm.counters.disconnects.fetch_add(1, Ordering::Relaxed);
                return;
            }
            // Keep idle locks small: give back a grown buffer.
            if out.capacity() > 4096 {
                out = BytesMut::new();
            }
        }
        if buf.is_empty() && buf.capacity() > 4096 {
            buf = BytesMut::new();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Riders.

#[derive(Default)]
struct Outcomes {
    riding: u64,
    failed: u64,
    conflict: BTreeMap<String, u64>,
    other: BTreeMap<u16, u64>,
    errors: u64,
    first_error: Option<String>,
    failures: BTreeMap<String, u64>,
}

struct Rider {
    token: String,
}

// ---------------------------------------------------------------------------------------------

pub async fn run(common: &Common, args: &Bikeshare) -> anyhow::Result<Value> {
    let http = Arc::new(
        Http::new(
            &args.url,
            Duration::from_secs(args.http_timeout_secs.max(1)),
        )
        .await?,
    );
    let key = args.api_key.clone();
    let broker = lookup_host((common.host.as_str(), common.port))
        .await
        .context("resolve the broker address")?
        .find(SocketAddr::is_ipv4)
        .context("the broker has no IPv4 address")?;
    let nonce = (now_ms() / 1000 % 1000) as u32;
    let baseline = common.broker_pid.and_then(proc_stats::sample);
    let setup_started = Instant::now();

    // 1. The system.
    let settings = json!({
        "name": "wulian-bench city",
        "payments_sandbox": true,
        // Every simulated rider signs up from loopback.
        "signups_per_address_per_hour": 0,
        "gbfs_ttl_s": 10,
        "unlock_timeout_s": args.unlock_timeout_s,
    });
    let r = http
        .request(
            "PUT",
            "/api/v1/bikeshare/system",
            Some(&key),
            &[],
            Some(&settings),
        )
        .await?;
    if !(200..300).contains(&r.status) {
        bail!(
            "PUT /api/v1/bikeshare/system: {} {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        );
    }
    eprintln!("bikeshare: system on");

    // 2. Fences.
    let city = City::generate(
        (args.center_lat, args.center_lon),
        args.radius_m,
        args.parking_zones,
        args.seed,
    );
    let mut zones = vec![(
        "service-area".to_string(),
        json!({"kind": "service_area", "polygon": square(city.center, city.half_side_m), "properties": {}}),
    )];
    for (i, spot) in city.spots.iter().enumerate() {
        zones.push((
            format!("parking-{i:05}"),
            json!({"kind": "parking", "polygon": square(*spot, PARKING_SIDE_M / 2.0), "properties": {"capacity": 20}}),
        ));
    }
    let t = Instant::now();
    let zone_results = parallel(args.setup_parallel, zones, {
        let http = http.clone();
        let key = key.clone();
        move |(name, body)| {
            let http = http.clone();
            let key = key.clone();
            async move {
                let r = http
                    .request(
                        "PUT",
                        &format!("/api/v1/zones/{name}"),
                        Some(&key),
                        &[],
                        Some(&body),
                    )
                    .await?;
                if !(200..300).contains(&r.status) {
                    bail!(
                        "PUT zone {name}: {} {}",
                        r.status,
                        String::from_utf8_lossy(&r.body)
                    );
                }
                Ok(())
            }
        }
    })
    .await;
    let zone_errors: Vec<_> = zone_results
        .iter()
        .filter_map(|r| r.as_ref().err())
        .collect();
    if let Some(e) = zone_errors.first() {
        bail!("{} zones failed, first: {e:#}", zone_errors.len());
    }
    let zones_secs = t.elapsed().as_secs_f64();
    eprintln!(
        "bikeshare: {} zones in {zones_secs:.1} s",
        zone_results.len()
    );

    // 3. Bikes, by bulk import (1,000 per request), tokens from the answers.
    let t = Instant::now();
    let batches: Vec<Vec<usize>> = (0..args.bikes)
        .collect::<Vec<_>>()
        .chunks(1000)
        .map(<[usize]>::to_vec)
        .collect();
    let prefix = args.prefix.clone();
    let imported = parallel(args.import_parallel, batches, {
        let http = http.clone();
        let key = key.clone();
        move |batch: Vec<usize>| {
            let http = http.clone();
            let key = key.clone();
            let prefix = prefix.clone();
            async move {
                let devices: Vec<Value> = batch
                    .iter()
                    .map(|i| json!({"id": format!("{prefix}{i:06}"), "profile": "smart-lock"}))
                    .collect();
                let r = http
                    .request(
                        "POST",
                        "/api/v1/devices/import",
                        Some(&key),
                        &[],
                        Some(&json!({"devices": devices})),
                    )
                    .await?;
                if r.status != 200 {
                    bail!("import: {} {}", r.status, String::from_utf8_lossy(&r.body));
                }
                let v = r.json();
                if let Some(e) = v["errors"].as_array().and_then(|e| e.first()) {
                    bail!("import refused an entry: {e}");
                }
                let mut out = Vec::new();
                for c in v["created"].as_array().into_iter().flatten() {
                    let (Some(idx), Some(tok)) = (c["index"].as_u64(), c["token"].as_str()) else {
                        bail!("import answer without index/token: {c}");
                    };
                    let Some(i) = batch.get(idx as usize) else {
                        bail!("import answer index out of range");
                    };
                    out.push((*i, tok.to_string()));
                }
                Ok(out)
            }
        }
    })
    .await;
    let mut tokens: Vec<Option<String>> = vec![None; args.bikes];
    for r in imported {
        for (i, tok) in r? {
            tokens[i] = Some(tok);
        }
    }
    let import_secs = t.elapsed().as_secs_f64();
    eprintln!(
        "bikeshare: {} bikes imported in {import_secs:.1} s",
        args.bikes
    );

    // 4. Riders: sign up and top up.
    let rider_count = if args.riders > 0 {
        args.riders
    } else {
        ((args.rate as f64) * (args.ride_secs as f64 + args.cooldown_secs as f64 + 5.0) * 1.3)
            .ceil() as usize
    };
    let t = Instant::now();
    let tenant = args.tenant.clone();
    let signed = parallel(args.setup_parallel, (0..rider_count).collect(), {
        let http = http.clone();
        move |i: usize| {
            let http = http.clone();
            let tenant = tenant.clone();
            async move {
                let r = http
                    .request(
                        "POST",
                        &format!("/api/v1/rider/{tenant}/sign-up"),
                        None,
                        &[],
                        Some(&rider_identity(i, nonce)),
                    )
                    .await?;
                if r.status != 201 {
                    bail!(
                        "sign-up {i}: {} {}",
                        r.status,
                        String::from_utf8_lossy(&r.body)
                    );
                }
                let token = r.json()["token"]
                    .as_str()
                    .context("sign-up without token")?
                    .to_string();
                let r = http
                    .request(
                        "POST",
                        "/api/v1/rider/wallet/top-ups",
                        Some(&token),
                        &[],
                        Some(&json!({"amount": 10000, "idempotency_key": "bench-initial"})),
                    )
                    .await?;
                if r.status != 200 {
                    bail!(
                        "top-up {i}: {} {}",
                        r.status,
                        String::from_utf8_lossy(&r.body)
                    );
                }
                Ok(Rider { token })
            }
        }
    })
    .await;
    let mut riders = Vec::with_capacity(rider_count);
    let mut rider_errors = 0usize;
    let mut rider_first_error = None;
    for r in signed {
        match r {
            Ok(r) => riders.push(r),
            Err(e) => {
                rider_errors += 1;
                rider_first_error.get_or_insert(format!("{e:#}"));
            }
        }
    }
    if riders.is_empty() {
        bail!(
            "no rider signed up: {}",
            rider_first_error.unwrap_or_default()
        );
    }
    let riders_secs = t.elapsed().as_secs_f64();
    eprintln!(
        "bikeshare: {} riders in {riders_secs:.1} s ({rider_errors} failed)",
        riders.len()
    );

    // 5. The lock farm.
    let farm = Arc::new(Farm {
        state: (0..args.bikes).map(|_| AtomicU8::new(RETIRED)).collect(),
        counters: FarmCounters::default(),
        spots: city.spots.clone(),
        ride: Duration::from_secs(args.ride_secs),
        parked_interval: Duration::from_secs(args.parked_interval_secs.max(1)),
        riding_interval: Duration::from_secs(args.riding_interval_secs.max(1)),
        cooldown: Duration::from_secs(args.cooldown_secs),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let sources: Vec<Ipv4Addr> = (1..=args.source_addrs.max(1))
        .map(|i| Ipv4Addr::new(127, 0, 0, i))
        .collect();
    let limit = Arc::new(Semaphore::new(common.connect_concurrency.max(1)));
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Result<u64, String>>();
    let mut locks = JoinSet::new();
    let farm_started = Instant::now();
    let connect_timeout = Duration::from_secs(common.connect_timeout_secs.max(1));
    let awake = args.bikes.min(args.max_connected);
    let mut sleepy_bikes = Vec::new();
    for (i, tok) in tokens.into_iter().enumerate() {
        let Some(tok) = tok else { continue };
        if i >= awake {
            sleepy_bikes.push((i, format!("{}{i:06}", args.prefix), tok));
            continue;
        }
        let permit = limit.clone().acquire_owned().await.context("semaphore")?;
        let id = format!("{}{i:06}", args.prefix);
        let source = sources[i % sources.len()];
        let farm = farm.clone();
        let stop = stop_rx.clone();
        let done = done_tx.clone();
        let seed = args.seed ^ (i as u64).wrapping_mul(0x9E37_79B9);
        locks.spawn(async move {
            let t = Instant::now();
            let pos = farm.spots[i % farm.spots.len()];
            let first = report_payload(pos, 90, true);
            let r = lock_connect(broker, source, &id, &tok, first, true, t + connect_timeout).await;
            drop(permit);
            drop(tok);
            match r {
                Ok((stream, buf)) => {
                    farm.counters.reports.fetch_add(1, Ordering::Relaxed);
                    farm.state[i].store(FREE, Ordering::Relaxed);
                    done.send(Ok(t.elapsed().as_micros() as u64)).ok();
                    drop(done);
                    lock_loop(i, id, stream, buf, farm, stop, seed).await;
                }
                Err(e) => {
                    done.send(Err(format!("{e:#}"))).ok();
                }
            }
        });
    }
    drop(done_tx);
    let mut connect_hist = report::histogram();
    let (mut connected, mut connect_failed, mut connect_first_error) = (0usize, 0usize, None);
    while let Ok(Some(r)) = timeout(connect_timeout + Duration::from_secs(5), done_rx.recv()).await
    {
        match r {
            Ok(us) => {
                connected += 1;
                report::record(&mut connect_hist, us);
            }
            Err(e) => {
                connect_failed += 1;
                connect_first_error.get_or_insert(e);
            }
        }
    }
    let farm_connect_secs = farm_started.elapsed().as_secs_f64();
    eprintln!(
        "bikeshare: {connected} locks connected in {farm_connect_secs:.1} s ({connect_failed} failed)"
    );
    // Sleepy locks: each reports once now (connect, report, disconnect), then on its interval.
    let sleepy_bikes = Arc::new(sleepy_bikes);
    let t = Instant::now();
    let first_pass = parallel(
        common.connect_concurrency,
        (0..sleepy_bikes.len()).collect(),
        {
            let (sleepy_bikes, sources, spots) =
                (sleepy_bikes.clone(), sources.clone(), city.spots.clone());
            move |k: usize| {
                let (i, id, token) = sleepy_bikes[k].clone();
                let source = sources[i % sources.len()];
                let pos = spots[i % spots.len()];
                async move {
                    sleepy_report(
                        broker,
                        source,
                        &id,
                        &token,
                        pos,
                        Instant::now() + connect_timeout,
                    )
                    .await
                }
            }
        },
    )
    .await;
    let sleepy_first_ok = first_pass.iter().filter(|r| r.is_ok()).count();
    let sleepy_first_error = first_pass
        .iter()
        .find_map(|r| r.as_ref().err().map(|e| format!("{e:#}")));
    let sleepy_first_secs = t.elapsed().as_secs_f64();
    eprintln!(
        "bikeshare: {sleepy_first_ok}/{} sleepy locks reported in {sleepy_first_secs:.1} s",
        sleepy_bikes.len()
    );
    let bikes_reporting = connected + sleepy_first_ok;

    // 6. Wait until the bike share offers the bikes (generic imports are picked up within 30 s).
    let t = Instant::now();
    let mut available = 0u64;
    let mut summary = Value::Null;
    while t.elapsed() < Duration::from_secs(args.ready_timeout_secs) {
        if let Ok(r) = http
            .request(
                "GET",
                "/api/v1/bikeshare/fleet/summary",
                Some(&key),
                &[],
                None,
            )
            .await
        {
            summary = r.json();
            available = summary["by_status"]["available"].as_u64().unwrap_or(0);
            if available as usize >= bikes_reporting * 99 / 100 {
                break;
            }
        }
        sleep(Duration::from_secs(1)).await;
    }
    let ready_secs = t.elapsed().as_secs_f64();
    eprintln!("bikeshare: {available} bikes available after {ready_secs:.1} s: {summary}");
    let after_setup = common.broker_pid.and_then(proc_stats::sample);

    // 7. GBFS before the load: the feed's first build with all bikes parked.
    let mut gbfs_idle = report::histogram();
    let gbfs_path = format!("/gbfs/v3/{}/vehicle_status.json", args.tenant);
    let mut idle_size = (0usize, 0usize);
    for _ in 0..3 {
        sleep(Duration::from_millis(1100)).await;
        let t = Instant::now();
        if let Ok(r) = http.request("GET", &gbfs_path, None, &[], None).await {
            report::record(&mut gbfs_idle, t.elapsed().as_micros() as u64);
            idle_size = (r.body.len(), vehicle_count(&r.json()));
        }
    }

    // 8. The load: riders at a fixed rate, GBFS probes, server samples.
    let load_started = Instant::now();
    let load_end = load_started + Duration::from_secs(args.duration_secs);
    let (rider_tx, mut rider_rx) = mpsc::channel::<usize>(riders.len());
    for i in 0..riders.len() {
        rider_tx.try_send(i).ok();
    }
    let riders = Arc::new(riders);
    let outcomes = Arc::new(Mutex::new(Outcomes::default()));
    let unlock_hist = Arc::new(Mutex::new(report::histogram()));
    let gbfs = tokio::spawn(gbfs_probe(
        http.clone(),
        gbfs_path.clone(),
        load_end,
        args.gbfs_interval_ms,
    ));
    let sampler = tokio::spawn(sample_server(common.broker_pid, load_end));
    let sleepy_counters = Arc::new(SleepyCounters::default());
    let sleepy_task = tokio::spawn(sleepy_cycle(
        broker,
        sources.clone(),
        sleepy_bikes.clone(),
        city.spots.clone(),
        Duration::from_secs(args.parked_interval_secs.max(1)),
        load_end,
        common.connect_concurrency,
        sleepy_counters.clone(),
    ));
    let mut rng = Rng(args.seed ^ 0xD1CE);
    let (mut offered, mut no_rider, mut no_bike) = (0u64, 0u64, 0u64);
    let mut rents = JoinSet::new();
    let period = Duration::from_secs_f64(1.0 / args.rate.max(1) as f64);
    let mut next = tokio::time::Instant::from_std(load_started);
    let run_id = format!("{nonce}-{}", now_ms());
    while next < tokio::time::Instant::from_std(load_end) {
        sleep_until(next).await;
        next += period;
        offered += 1;
        let Ok(rider) = rider_rx.try_recv() else {
            no_rider += 1;
            continue;
        };
        let mut bike = None;
        for _ in 0..64 {
            let b = rng.below(args.bikes);
            if farm.state[b]
                .compare_exchange(FREE, RESERVED, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
            {
                bike = Some(b);
                break;
            }
        }
        let Some(bike) = bike else {
            no_bike += 1;
            rider_tx.try_send(rider).ok();
            continue;
        };
        let (http, riders, farm, outcomes, hist, rider_tx) = (
            http.clone(),
            riders.clone(),
            farm.clone(),
            outcomes.clone(),
            unlock_hist.clone(),
            rider_tx.clone(),
        );
        let bike_id = format!("{}{bike:06}", args.prefix);
        let idem = format!("bench-{run_id}-{offered}");
        let hold = Duration::from_secs(args.ride_secs + args.cooldown_secs);
        rents.spawn(async move {
            let t = Instant::now();
            let r = http
                .request(
                    "POST",
                    "/api/v1/rider/trips",
                    Some(&riders[rider].token),
                    &[("Idempotency-Key", &idem)],
                    Some(&json!({"bike": bike_id})),
                )
                .await;
            let us = t.elapsed().as_micros() as u64;
            let mut riding = false;
            {
                let mut o = outcomes.lock().await;
                match r {
                    Ok(resp) if resp.status == 201 => {
                        let v = resp.json();
                        match v["trip"]["state"].as_str() {
                            Some("riding") => {
                                riding = true;
                                o.riding += 1;
                                report::record(&mut *hist.lock().await, us);
                            }
                            Some("failed") => {
                                o.failed += 1;
                                let why = v["trip"]["failure"].as_str().unwrap_or("?").to_string();
                                *o.failures.entry(why).or_default() += 1;
                            }
                            other => {
                                *o.conflict.entry(format!("201 {other:?}")).or_default() += 1;
                            }
                        }
                    }
                    Ok(resp) if resp.status == 409 => {
                        let code = resp.json()["code"].as_str().unwrap_or("?").to_string();
                        *o.conflict.entry(code).or_default() += 1;
                    }
                    Ok(resp) => {
                        *o.other.entry(resp.status).or_default() += 1;
                        o.first_error.get_or_insert_with(|| {
                            format!("{} {}", resp.status, String::from_utf8_lossy(&resp.body))
                        });
                    }
                    Err(e) => {
                        o.errors += 1;
                        o.first_error.get_or_insert(format!("{e:#}"));
                    }
                }
            }
            if riding {
                // The lock ends the ride; the rider may rent again once it settled.
                sleep(hold).await;
            } else {
                // The bike's state is unknown (flagged, or never unlocked): leave it alone.
                farm.state[bike]
                    .compare_exchange(RESERVED, RETIRED, Ordering::Relaxed, Ordering::Relaxed)
                    .ok();
            }
            rider_tx.send(rider).await.ok();
        });
        // Reap finished rent tasks so the set stays small.
        while rents.try_join_next().is_some() {}
    }
    let load_secs = load_started.elapsed().as_secs_f64();
    let load_sample = common.broker_pid.and_then(proc_stats::sample);
    eprintln!("bikeshare: load done ({offered} offered); draining");
    // Drain: outstanding rents answer within the unlock timeout; rides end after ride_secs.
    let drain_deadline = tokio::time::Instant::now()
        + Duration::from_secs(args.ride_secs + args.cooldown_secs + args.http_timeout_secs + 5);
    while let Ok(Some(_)) = timeout_at(drain_deadline, rents.join_next()).await {}
    rents.shutdown().await;
    let gbfs = gbfs.await.unwrap_or(Value::Null);
    sleepy_task.await.ok();
    let server = sampler.await.unwrap_or(Value::Null);

    // 9. Trips as the server saw them.
    let trips = server_trips(
        &http,
        &key,
        &args.tenant,
        now_ms() - (load_started.elapsed().as_millis() as i64) - 1000,
    )
    .await;
    let after = common.broker_pid.and_then(proc_stats::sample);
    let c = &farm.counters;
    let farm_stats = json!({
        "reports": c.reports.load(Ordering::Relaxed),
        "unlock_commands": c.unlock_commands.load(Ordering::Relaxed),
        "other_commands": c.other_commands.load(Ordering::Relaxed),
        "locked_events": c.locked_events.load(Ordering::Relaxed),
        "disconnects": c.disconnects.load(Ordering::Relaxed),
        "write_errors": c.write_errors.load(Ordering::Relaxed),
        "decode_errors": c.decode_errors.load(Ordering::Relaxed),
    });
    let self_rss = proc_stats::sample(std::process::id()).map(|s| s.rss_kib);
    stop_tx.send(true).ok();
    timeout(Duration::from_secs(30), async {
        while locks.join_next().await.is_some() {}
    })
    .await
    .ok();
    locks.shutdown().await;

    let o = outcomes.lock().await;
    let h = unlock_hist.lock().await;
    let rss_per_bike = |s: Option<proc_stats::Sample>| {
        s.map(|s| s.rss_kib as f64 * 1024.0 / args.bikes.max(1) as f64)
    };
    let grown_per_bike = match (baseline, after_setup) {
        (Some(b), Some(a)) => {
            Some((a.rss_kib as f64 - b.rss_kib as f64) * 1024.0 / args.bikes.max(1) as f64)
        }
        _ => None,
    };
    Ok(json!({
        "scenario": "bikeshare",
        "label": common.label,
        "bikes": args.bikes,
        "riders": riders.len(),
        "rate_target": args.rate,
        "duration_secs": args.duration_secs,
        "ride_secs": args.ride_secs,
        "parking_zones": args.parking_zones,
        "setup": {
            "zones_secs": zones_secs,
            "import_secs": import_secs,
            "bikes_per_sec": args.bikes as f64 / import_secs.max(1e-9),
            "riders_secs": riders_secs,
            "rider_errors": rider_errors,
            "rider_first_error": rider_first_error,
            "total_secs": setup_started.elapsed().as_secs_f64() - load_secs,
            "available_before_load": available,
            "ready_secs": ready_secs,
        },
        "lock_farm": {
            "connected": connected,
            "failed": connect_failed,
            "sleepy_locks": sleepy_bikes.len(),
            "sleepy_first_reports_ok": sleepy_first_ok,
            "sleepy_first_reports_secs": sleepy_first_secs,
            "sleepy_first_error": sleepy_first_error,
            "sleepy_reports_during_load_ok": sleepy_counters.ok.load(Ordering::Relaxed),
            "sleepy_reports_during_load_failed": sleepy_counters.failed.load(Ordering::Relaxed),
            "first_error": connect_first_error,
            "connect_secs": farm_connect_secs,
            "connects_per_sec": connected as f64 / farm_connect_secs.max(1e-9),
            "connect_latency": report::latency(&connect_hist),
            "source_addrs": sources.len(),
            "load_generator_rss_kib": self_rss,
            "counters": farm_stats,
        },
        "trips": {
            "offered": offered,
            "skipped_no_free_rider": no_rider,
            "skipped_no_free_bike": no_bike,
            "started_riding": o.riding,
            "achieved_starts_per_sec": o.riding as f64 / load_secs.max(1e-9),
            "failed": o.failed,
            "failure_reasons": o.failures,
            "conflicts": o.conflict,
            "other_status": o.other.iter().map(|(k, v)| (k.to_string(), *v)).collect::<BTreeMap<_, _>>(),
            "network_errors": o.errors,
            "first_error": o.first_error,
            "server": trips,
        },
        "unlock_round_trip": latency_full(&h),
        "gbfs_vehicle_status": {
            "idle_first_ms": report::latency(&gbfs_idle),
            "idle_body_bytes": idle_size.0,
            "idle_vehicles": idle_size.1,
            "under_load": gbfs,
        },
        "server": {
            "load": server,
            "rss_kib_baseline": baseline.map(|s| s.rss_kib),
            "rss_kib_after_setup": after_setup.map(|s| s.rss_kib),
            "rss_kib_end_of_load": load_sample.map(|s| s.rss_kib),
            "rss_bytes_per_bike_total": rss_per_bike(load_sample),
            "rss_bytes_per_bike_grown_in_setup": grown_per_bike,
            "cpu_secs_whole_run": proc_stats::delta(baseline, after),
        },
    }))
}

fn latency_full(h: &Histogram<u64>) -> Value {
    if h.is_empty() {
        return Value::Null;
    }
    let ms = |us: u64| us as f64 / 1000.0;
    json!({
        "samples": h.len(),
        "p50_ms": ms(h.value_at_quantile(0.50)),
        "p90_ms": ms(h.value_at_quantile(0.90)),
        "p99_ms": ms(h.value_at_quantile(0.99)),
        "p999_ms": ms(h.value_at_quantile(0.999)),
        "max_ms": ms(h.max()),
        "mean_ms": h.mean() / 1000.0,
    })
}

fn vehicle_count(v: &Value) -> usize {
    v["data"]["vehicles"].as_array().map_or(0, Vec::len)
}

/// Runs `f` over `items`, at most `parallel` at once; results in input order.
async fn parallel<I, T, F, Fut>(parallel: usize, items: Vec<I>, f: F) -> Vec<anyhow::Result<T>>
where
    I: Send + 'static,
    T: Send + 'static,
    F: Fn(I) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>> + Send + 'static,
{
    let limit = Arc::new(Semaphore::new(parallel.max(1)));
    let mut set = JoinSet::new();
    let n = items.len();
    for (i, item) in items.into_iter().enumerate() {
        let Ok(permit) = limit.clone().acquire_owned().await else {
            break;
        };
        let fut = f(item);
        set.spawn(async move {
            let r = fut.await;
            drop(permit);
            (i, r)
        });
    }
    let mut out: Vec<Option<anyhow::Result<T>>> = (0..n).map(|_| None).collect();
    while let Some(r) = set.join_next().await {
        if let Ok((i, r)) = r {
            out[i] = Some(r);
        }
    }
    out.into_iter()
        .map(|r| r.unwrap_or_else(|| Err(anyhow::anyhow!("task failed"))))
        .collect()
}

/// GBFS `vehicle_status` while the load runs: every interval one request after the cache aged
/// past its second ("first") and an immediate repeat ("repeat", served from the cache).
async fn gbfs_probe(http: Arc<Http>, path: String, end: Instant, interval_ms: u64) -> Value {
    let (mut first, mut repeat) = (report::histogram(), report::histogram());
    let (mut bytes, mut vehicles, mut errors) = (0usize, 0usize, 0u64);
    let mut min_vehicles = usize::MAX;
    while Instant::now() + Duration::from_millis(interval_ms) < end {
        sleep(Duration::from_millis(interval_ms.max(1100))).await;
        for h in [&mut first, &mut repeat] {
            let t = Instant::now();
            match http.request("GET", &path, None, &[], None).await {
                Ok(r) if r.status == 200 => {
                    report::record(h, t.elapsed().as_micros() as u64);
                    bytes = r.body.len();
                    vehicles = vehicle_count(&r.json());
                    min_vehicles = min_vehicles.min(vehicles);
                }
                _ => errors += 1,
            }
        }
    }
    json!({
        "first_after_1s": latency_full(&first),
        "repeat": latency_full(&repeat),
        "body_bytes": bytes,
        "vehicles_last": vehicles,
        "vehicles_min": if min_vehicles == usize::MAX { 0 } else { min_vehicles },
        "errors": errors,
    })
}

/// The server's CPU (percent of one core) and RSS, sampled every second until `end`.
async fn sample_server(pid: Option<u32>, end: Instant) -> Value {
    let Some(pid) = pid else { return Value::Null };
    let start = proc_stats::sample(pid);
    let started = Instant::now();
    let (mut peak_rss, mut peak_cpu) = (0u64, 0f64);
    let mut prev = start;
    let mut prev_t = Instant::now();
    while Instant::now() < end {
        sleep(Duration::from_secs(1)).await;
        let s = proc_stats::sample(pid);
        if let (Some(p), Some(s)) = (prev, s) {
            let secs = prev_t.elapsed().as_secs_f64();
            let cpu =
                (s.cpu_ticks.saturating_sub(p.cpu_ticks)) as f64 / 100.0 / secs.max(1e-3) * 100.0;
            peak_cpu = peak_cpu.max(cpu);
            peak_rss = peak_rss.max(s.rss_kib);
        }
        prev = s;
        prev_t = Instant::now();
    }
    let secs = started.elapsed().as_secs_f64();
    match (start, prev) {
        (Some(a), Some(b)) => json!({
            "window_secs": secs,
            "cpu_secs": b.cpu_ticks.saturating_sub(a.cpu_ticks) as f64 / 100.0,
            "cpu_percent_avg": b.cpu_ticks.saturating_sub(a.cpu_ticks) as f64 / 100.0 / secs * 100.0,
            "cpu_percent_peak_1s": peak_cpu,
            "rss_kib_start": a.rss_kib,
            "rss_kib_peak": peak_rss,
        }),
        _ => Value::Null,
    }
}

/// The trips requested since `from` (ms), by state, and how long settlement took after the
/// lock closed.
async fn server_trips(http: &Http, key: &str, tenant: &str, from: i64) -> Value {
    let _ = tenant;
    let mut seen = HashSet::new();
    let mut by_state: BTreeMap<String, u64> = BTreeMap::new();
    let mut settle = report::histogram();
    let mut out_of_fence = 0u64;
    let mut cursor: Option<i64> = None;
    for _ in 0..10_000 {
        let mut path = format!("/api/v1/bikeshare/trips?from={from}&limit=1000");
        if let Some(c) = cursor {
            path.push_str(&format!("&to={c}"));
        }
        let Ok(r) = http.request("GET", &path, Some(key), &[], None).await else {
            break;
        };
        let v = r.json();
        let Some(page) = v["trips"].as_array() else {
            break;
        };
        let mut fresh = 0;
        let mut min_at = i64::MAX;
        for t in page {
            min_at = min_at.min(t["requested_at"].as_i64().unwrap_or(i64::MAX));
            let Some(id) = t["id"].as_str() else { continue };
            if !seen.insert(id.to_string()) {
                continue;
            }
            fresh += 1;
            let state = t["state"].as_str().unwrap_or("?").to_string();
            if let (Some(l), Some(s)) = (t["locked_at"].as_i64(), t["settled_at"].as_i64()) {
                report::record(&mut settle, (s - l).max(0) as u64 * 1000);
            }
            if t["out_of_fence"].as_bool() == Some(true) {
                out_of_fence += 1;
            }
            *by_state.entry(state).or_default() += 1;
        }
        if fresh == 0 || page.len() < 1000 {
            break;
        }
        cursor = Some(min_at + 1);
    }
    json!({
        "requested": seen.len(),
        "by_state": by_state,
        "out_of_fence": out_of_fence,
        "lock_to_settled": latency_full(&settle),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resident_ids_carry_a_valid_check_character() {
        // GB 11643-1999's example number.
        assert_eq!(id_check_char(b"11010519491231002"), 'X');
        let a = rider_identity(0, 1);
        let b = rider_identity(1000, 1);
        assert_ne!(a["id_number"], b["id_number"]);
        assert_eq!(a["id_number"].as_str().map(str::len), Some(18));
    }

    #[test]
    fn squares_are_closed_counter_clockwise_rings() {
        let sq = square((30.0, 120.0), 20.0);
        let ring = sq["coordinates"][0].as_array().unwrap();
        assert_eq!(ring.len(), 5);
        assert_eq!(ring[0], ring[4]);
        // Shoelace: positive area for counter-clockwise.
        let pts: Vec<(f64, f64)> = ring
            .iter()
            .map(|p| (p[0].as_f64().unwrap(), p[1].as_f64().unwrap()))
            .collect();
        let area: f64 = pts
            .windows(2)
            .map(|w| w[0].0 * w[1].1 - w[1].0 * w[0].1)
            .sum();
        assert!(area > 0.0);
    }
}
