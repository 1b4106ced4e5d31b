//! Micro-benchmark: evaluations per second of 100 enabled rules over a realistic telemetry
//! message, the per-message cost on the ingest path, and the rule-to-action latency through
//! the bounded queue.
//!
//! Run: `cargo run --release -p wulian-rules --example bench_rules [messages] [scenario]`
//! (default 200 000 messages; `scenario` runs only the scenarios whose name contains it).
//! One line per scenario; docs/rules.md records the results.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use wulian_rules::{EngineConfig, Message, NoZones, Rule, RuleDefinition, RuleEngine};

const DEVICES: usize = 1_000;

type RuleSet = Box<dyn Fn() -> Vec<Rule>>;

fn rule(id: String, sql: String, actions: Value) -> Rule {
    let def = RuleDefinition {
        id,
        sql,
        actions: serde_json::from_value(actions).unwrap_or_default(),
    };
    match Rule::compile(def) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("bench rule does not compile: {e}");
            std::process::exit(1);
        }
    }
}

/// Ten kinds of rule, ten thresholds each, all on the telemetry topic (the worst case: every
/// rule's filter matches every message).
/// `quiet` raises every threshold out of reach of the generated data, which is the steady
/// state of real alert rules: evaluated on every message, firing rarely.
fn hundred_rules(filter_for: impl Fn(usize) -> String, quiet: bool) -> Vec<Rule> {
    let mut rules = Vec::new();
    for n in 0..100 {
        let i = n / 10 + if quiet { 1_000 } else { 0 };
        let f = filter_for(n);
        let (sql, actions) = match n % 10 {
            0 => (
                format!("SELECT device_id, temp FROM '{f}' WHERE temp > {}", 50 + i),
                json!([{"action": "alarm", "type": "overheat", "severity": "major", "clear_when_false": true}]),
            ),
            1 => (
                format!(
                    "SELECT device_id, humidity FROM '{f}' WHERE humidity BETWEEN {i} AND {} AND battery < 20",
                    i + 5
                ),
                json!([{"action": "alarm", "type": "dry", "severity": "minor"}]),
            ),
            2 => (
                format!(
                    "SELECT avg(temp, '5m') AS temp_avg_5m FROM '{f}' WHERE avg(temp, '5m') > {}",
                    60 + i
                ),
                json!([{"action": "write_telemetry"}]),
            ),
            3 => (
                format!(
                    "SELECT device_id, distance(gps.lat, gps.lon, 48.8566, 2.3522) AS d FROM '{f}' WHERE distance(gps.lat, gps.lon, 48.8566, 2.3522) > {}",
                    20_000 + 1_000 * i
                ),
                json!([{"action": "republish", "topic": "alerts/${device_id}/geofence", "qos": 1}]),
            ),
            4 => (
                format!(
                    "SELECT device_id, upper(status) AS s FROM '{f}' WHERE status IN ('error', 'fault') OR rssi < -{}",
                    95 + i
                ),
                json!([{"action": "alarm", "type": "link", "severity": "warning"}]),
            ),
            5 => (
                format!(
                    "SELECT device_id, CASE WHEN temp > 30 THEN 'hot' ELSE 'ok' END AS level FROM '{f}' WHERE temp * 1.8 + 32 > {}",
                    120 + i
                ),
                json!([{"action": "republish", "topic": "levels/${device_id}"}]),
            ),
            6 => (
                format!(
                    "SELECT * FROM '{f}' WHERE battery IS NOT NULL AND battery < {}",
                    if quiet { -1 } else { 2 + i as i64 }
                ),
                json!([{"action": "command", "name": "power_save", "params": {"level": "${battery}"}}]),
            ),
            7 => (
                format!(
                    "SELECT device_id, gps FROM '{f}' WHERE NOT point_in_polygon(gps.lat, gps.lon, '[[2.25,48.81],[2.42,48.81],[2.42,48.90],[2.25,48.90]]') AND temp > {}",
                    40 + i
                ),
                json!([{"action": "webhook", "url": "https://example.com/hook/${device_id}"}]),
            ),
            8 => (
                format!(
                    "SELECT device_id, max(rssi, '10m') AS worst FROM '{f}' WHERE startswith(device_id, 'dev-{i}9') AND max(rssi, '10m') < -60"
                ),
                json!([{"action": "alarm", "type": "weak", "severity": "indeterminate"}]),
            ),
            _ => (
                format!(
                    "SELECT device_id, round(temp, 1) AS t, humidity FROM '{f}' WHERE temp > {} AND humidity > 0",
                    20 + i
                ),
                json!([{"action": "republish", "topic": "derived/${device_id}", "qos": 0}]),
            ),
        };
        rules.push(rule(format!("r{n}"), sql, actions));
    }
    rules
}

fn messages(count: usize) -> Vec<Message> {
    let t0 = 1_700_000_000_000_i64;
    (0..count)
        .map(|k| {
            let d = k % DEVICES;
            let device = format!("dev-{d:04}");
            let wave = (k % 97) as f64;
            Message {
                tenant: "t1".into(),
                topic: format!("devices/{device}/telemetry"),
                device_id: device,
                timestamp_ms: t0 + (k as i64) * 10,
                payload: json!({
                    "temp": 18.0 + wave * 0.5,
                    "humidity": 40.0 + (k % 13) as f64,
                    "battery": 100 - (k % 100) as i64,
                    "rssi": -60 - (k % 50) as i64,
                    "status": if k % 500 == 0 { "error" } else { "ok" },
                    "gps": {"lat": 48.80 + (d % 20) as f64 * 0.01, "lon": 2.20 + (d % 30) as f64 * 0.01},
                    "fw": "1.4.2"
                }),
            }
        })
        .collect()
}

struct Run {
    per_msg: Vec<Duration>,
    total: Duration,
    /// CPU time of the thread that called `process` (user + system), immune to other load.
    cpu: Duration,
    fired: u64,
    dropped: u64,
    evaluated: u64,
    action_latency: Vec<Duration>,
}

fn run(rules: Vec<Rule>, msgs: &[Message]) -> Run {
    let (engine, mut rx) = RuleEngine::new(
        EngineConfig {
            queue_capacity: 100_000,
            ..EngineConfig::default()
        },
        Arc::new(NoZones),
    );
    engine.replace_all("t1", rules);
    // A consumer thread stands in for the host's executor and measures queue latency.
    let consumer = std::thread::spawn(move || {
        let mut lat = Vec::new();
        while let Some(inv) = rx.blocking_recv() {
            lat.push(inv.enqueued_at.elapsed());
        }
        lat
    });
    let mut per_msg = Vec::with_capacity(msgs.len());
    let cpu_start = thread_cpu();
    let start = Instant::now();
    for m in msgs {
        let t = Instant::now();
        engine.process(m);
        per_msg.push(t.elapsed());
    }
    let total = start.elapsed();
    let cpu = thread_cpu().saturating_sub(cpu_start);
    let c = engine.counters();
    drop(engine);
    let action_latency = consumer.join().unwrap_or_default();
    Run {
        per_msg,
        total,
        cpu,
        fired: c.fired,
        dropped: c.dropped,
        evaluated: c.evaluated,
        action_latency,
    }
}

/// This thread's CPU time from /proc (clock ticks, assumed 100 Hz: precise enough over
/// runs of seconds).
fn thread_cpu() -> Duration {
    let Ok(stat) = std::fs::read_to_string("/proc/thread-self/stat") else {
        return Duration::ZERO;
    };
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    v.sort_unstable();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn report(name: &str, r: &mut Run, n: usize) {
    let secs = r.total.as_secs_f64();
    let cpu = r.cpu.as_secs_f64();
    println!(
        "{name:<40} wall {:>9.0} msg/s {:>10.0} eval/s | CPU {:>7.2} µs/msg {:>6.0} ns/eval | wall per msg p50 {:>7.2} µs p99 {:>8.2} µs | fired {:>8} dropped {} | action latency p50 {:>8.1} µs p99 {:>8.1} µs",
        n as f64 / secs,
        r.evaluated as f64 / secs,
        cpu * 1e6 / n as f64,
        if r.evaluated > 0 {
            cpu * 1e9 / r.evaluated as f64
        } else {
            0.0
        },
        pct(&mut r.per_msg, 0.50).as_secs_f64() * 1e6,
        pct(&mut r.per_msg, 0.99).as_secs_f64() * 1e6,
        r.fired,
        r.dropped,
        pct(&mut r.action_latency, 0.50).as_secs_f64() * 1e6,
        pct(&mut r.action_latency, 0.99).as_secs_f64() * 1e6,
    );
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200_000);
    // Optional second argument: run only the scenarios whose name contains it.
    let only = std::env::args().nth(2).unwrap_or_default();
    let msgs = messages(n);

    // Reference: what the host pays to parse this payload from bytes once.
    let bytes: Vec<Vec<u8>> = msgs
        .iter()
        .take(10_000)
        .map(|m| serde_json::to_vec(&m.payload).unwrap_or_default())
        .collect();
    let t = Instant::now();
    let mut parsed = 0usize;
    for b in &bytes {
        if serde_json::from_slice::<Value>(b).is_ok() {
            parsed += 1;
        }
    }
    let parse_us = t.elapsed().as_secs_f64() * 1e6 / parsed.max(1) as f64;
    println!(
        "payload: {} bytes, serde_json::from_slice {:.2} µs/message",
        bytes.first().map_or(0, Vec::len),
        parse_us
    );

    let scenarios: [(&str, RuleSet); 5] = [
        ("no rules", Box::new(Vec::new)),
        (
            "100 threshold rules on one filter",
            Box::new(|| {
                (0..100)
                    .map(|i| {
                        rule(
                            format!("t{i}"),
                            format!(
                                "SELECT device_id, temp FROM 'devices/+/telemetry' WHERE temp > {}",
                                100 + i
                            ),
                            json!([{"action": "alarm", "type": "hot", "severity": "major"}]),
                        )
                    })
                    .collect()
            }),
        ),
        (
            "100 rules on one filter, rarely firing",
            Box::new(|| hundred_rules(|_| "devices/+/telemetry".into(), true)),
        ),
        (
            "100 rules on one filter, storm",
            Box::new(|| hundred_rules(|_| "devices/+/telemetry".into(), false)),
        ),
        (
            "100 rules, one device each",
            Box::new(|| hundred_rules(|i| format!("devices/dev-{:04}/telemetry", i * 10), false)),
        ),
    ];
    for (name, rules) in scenarios {
        if name.contains(only.as_str()) {
            let mut r = run(rules(), &msgs);
            report(name, &mut r, n);
        }
    }
}
