use std::collections::HashSet;
use std::time::Duration;

use wulian_tsdb::{SeriesKey, Value, WriteEntry};

use super::*;

fn set(ids: &[&str]) -> HashSet<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

fn entry(device: &str, key: &str, ts: i64, value: Value) -> WriteEntry {
    WriteEntry {
        series: SeriesKey {
            tenant: "t1".to_string(),
            device: device.to_string(),
            key: key.to_string(),
        },
        ts,
        value,
    }
}

async fn next(sub: &mut LiveSubscription) -> Option<LiveRecv> {
    tokio::time::timeout(Duration::from_millis(200), sub.recv())
        .await
        .ok()
        .flatten()
}

#[test]
fn nothing_is_built_while_nobody_listens() {
    let hub = LiveEvents::new();
    let entries = [entry("d1", "temp", 1, Value::F64(1.5))];
    assert!(hub.telemetry_events("t1", "d1", &entries).is_none());
    let sub = hub.subscribe("t1", set(&["d1"]), false).unwrap();
    assert!(hub.telemetry_events("t1", "d1", &entries).is_some());
    assert!(hub.telemetry_events("t1", "d2", &entries).is_none());
    assert!(hub.telemetry_events("t2", "d1", &entries).is_none());
    drop(sub);
    assert!(hub.telemetry_events("t1", "d1", &entries).is_none());
    assert_eq!(hub.streams(), 0);
    assert!(
        hub.tenants.read().is_empty(),
        "the tenant's channel goes with its last stream"
    );
}

#[test]
fn telemetry_is_grouped_per_timestamp() {
    let hub = LiveEvents::new();
    let _sub = hub.subscribe("t1", set(&["d1"]), false).unwrap();
    let entries = [
        entry("d1", "temp", 10, Value::F64(21.5)),
        entry("d1", "on", 10, Value::Bool(true)),
        entry("d1", "temp", 20, Value::I64(22)),
        entry("d1", "mode", 20, Value::Str("eco".into())),
    ];
    let events = hub.telemetry_events("t1", "d1", &entries).unwrap();
    let json: Vec<_> = events
        .iter()
        .map(|e| serde_json::to_value(e).unwrap())
        .collect();
    assert_eq!(
        json,
        vec![
            serde_json::json!({"type": "telemetry", "device": "d1", "ts": 10, "values": {"temp": 21.5, "on": true}}),
            serde_json::json!({"type": "telemetry", "device": "d1", "ts": 20, "values": {"temp": 22, "mode": "eco"}}),
        ]
    );
}

#[tokio::test]
async fn streams_see_their_devices_and_their_tenant_only() {
    let hub = LiveEvents::new();
    let mut a = hub.subscribe("t1", set(&["d1"]), false).unwrap();
    let mut list = hub.subscribe("t1", HashSet::new(), true).unwrap();
    let mut other = hub.subscribe("t2", set(&["d1"]), true).unwrap();

    let entries = [entry("d1", "temp", 10, Value::F64(1.0))];
    let events = hub.telemetry_events("t1", "d1", &entries).unwrap();
    hub.publish("t1", events);
    let p = DevicePresence {
        online: true,
        ..DevicePresence::default()
    };
    hub.status("t1", "d9", "connected", &p);

    match next(&mut a).await {
        Some(LiveRecv::Event(e)) => assert!(matches!(*e, LiveEvent::Telemetry { .. })),
        other => panic!("{other:?}"),
    }
    assert!(next(&mut a).await.is_none(), "d9's status is not a's");
    match next(&mut list).await {
        Some(LiveRecv::Event(e)) => {
            assert_eq!(e.device(), "d9");
            assert!(matches!(
                *e,
                LiveEvent::Status {
                    change: "connected",
                    online: true,
                    ..
                }
            ));
        }
        other => panic!("{other:?}"),
    }
    assert!(
        next(&mut list).await.is_none(),
        "no telemetry for a status-only stream"
    );
    assert!(
        next(&mut other).await.is_none(),
        "another tenant's events never arrive"
    );
}

#[tokio::test]
async fn a_stream_changes_its_devices() {
    let hub = LiveEvents::new();
    let mut s = hub.subscribe("t1", set(&["d1"]), false).unwrap();
    s.set(set(&["d2"]), false).unwrap();
    assert!(!hub.watches("t1", "d1"));
    assert!(hub.watches("t1", "d2"));
    let entries = [entry("d2", "x", 1, Value::I64(1))];
    hub.publish("t1", hub.telemetry_events("t1", "d2", &entries).unwrap());
    assert!(matches!(next(&mut s).await, Some(LiveRecv::Event(_))));
    let too_many: HashSet<String> = (0..=MAX_DEVICES_PER_STREAM)
        .map(|i| format!("d{i}"))
        .collect();
    assert_eq!(s.set(too_many, false), Err(LiveError::TooManyDevices));
    assert!(
        hub.watches("t1", "d2"),
        "a refused change keeps the old set"
    );
}

#[tokio::test]
async fn a_stream_that_falls_behind_is_told_how_far() {
    let hub = LiveEvents::new();
    let mut s = hub.subscribe("t1", set(&["d1"]), false).unwrap();
    let total = CHANNEL_CAPACITY + 10;
    for i in 0..total {
        let entries = [entry("d1", "n", i as i64, Value::I64(i as i64))];
        hub.publish("t1", hub.telemetry_events("t1", "d1", &entries).unwrap());
    }
    match next(&mut s).await {
        Some(LiveRecv::Lagged(n)) => assert_eq!(n, 10),
        other => panic!("{other:?}"),
    }
    assert_eq!(hub.metrics.dropped.load(Ordering::Relaxed), 10);
    let mut received = 0;
    while let Some(LiveRecv::Event(_)) = next(&mut s).await {
        received += 1;
    }
    assert_eq!(
        received, CHANNEL_CAPACITY,
        "memory stays bounded by the channel"
    );
}
