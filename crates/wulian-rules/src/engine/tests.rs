use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::*;
use crate::action::ResolvedAction;
use crate::dispatch::{ActionError, ActionExecutor};
use crate::rule::RuleDefinition;
use crate::zones::NoZones;

fn rule(id: &str, sql: &str, actions: serde_json::Value) -> Rule {
    Rule::compile(RuleDefinition {
        id: id.into(),
        sql: sql.into(),
        actions: serde_json::from_value(actions).unwrap(),
    })
    .unwrap()
}

fn msg(tenant: &str, device: &str, ts: i64, payload: serde_json::Value) -> Message {
    Message {
        tenant: tenant.into(),
        device_id: device.into(),
        topic: format!("devices/{device}/telemetry"),
        timestamp_ms: ts,
        payload,
    }
}

fn engine(queue: usize) -> (RuleEngine, InvocationReceiver) {
    RuleEngine::new(
        EngineConfig {
            queue_capacity: queue,
            ..EngineConfig::default()
        },
        Arc::new(NoZones),
    )
}

fn republish(topic: &str) -> serde_json::Value {
    json!([{"action": "republish", "topic": topic}])
}

#[test]
fn routes_by_tenant_and_topic_and_counts() {
    let (e, mut rx) = engine(100);
    e.install(
        "t1",
        rule(
            "hot",
            "SELECT temp FROM 'devices/+/telemetry' WHERE temp > 50",
            republish("alerts/${device_id}"),
        ),
    );
    e.install(
        "t1",
        rule(
            "events",
            "SELECT * FROM 'devices/+/events/#'",
            republish("ev"),
        ),
    );
    e.install(
        "t2",
        rule("all", "SELECT * FROM '#'", republish("t2/${device_id}")),
    );

    assert!(e.wants("t1", "devices/d1/telemetry"));
    assert!(!e.wants("t1", "other/topic"));
    assert!(!e.wants("t3", "devices/d1/telemetry"));

    assert_eq!(e.process(&msg("t1", "d1", 1, json!({"temp": 60}))), 1);
    assert_eq!(e.process(&msg("t1", "d1", 2, json!({"temp": 10}))), 0);
    assert_eq!(e.process(&msg("t1", "d1", 3, json!({"temp": "x"}))), 0);
    assert_eq!(
        e.process(&msg("t3", "d1", 4, json!({"temp": 60}))),
        0,
        "no rules for t3"
    );

    let inv = rx.try_recv().unwrap();
    assert_eq!(
        (
            inv.tenant.as_str(),
            inv.rule_id.as_str(),
            inv.device_id.as_str()
        ),
        ("t1", "hot", "d1")
    );
    assert!(matches!(&inv.action, ResolvedAction::Republish { topic, .. } if topic == "alerts/d1"));
    assert!(rx.try_recv().is_none(), "t2's rule never saw t1's messages");

    let c = e.counters();
    assert_eq!(
        (c.evaluated, c.matched, c.fired, c.errors, c.dropped),
        (3, 1, 1, 1, 0)
    );
    let s = e.rule_stats("t1", "hot").unwrap();
    assert_eq!((s.evaluated, s.matched, s.errors), (3, 1, 1));
    assert!(
        s.last_error
            .unwrap()
            .contains("cannot order string against number")
    );
    assert_eq!(e.rule_stats("t1", "events").unwrap().evaluated, 0);
    assert!(e.rule_stats("t1", "nope").is_none());
    let mut ids = e.rule_ids("t1");
    ids.sort();
    assert_eq!(ids, ["events", "hot"]);
}

#[test]
fn a_full_queue_drops_and_counts_without_blocking() {
    let (e, mut rx) = engine(2);
    e.install(
        "t1",
        rule("r", "SELECT * FROM 'devices/+/telemetry'", republish("x")),
    );
    let started = std::time::Instant::now();
    for i in 0..10 {
        e.process(&msg("t1", "d1", i, json!({"v": i})));
    }
    assert!(started.elapsed() < Duration::from_secs(2));
    let c = e.counters();
    assert_eq!((c.fired, c.dropped), (2, 8));
    assert_eq!(e.queue_len(), 2);
    // The oldest are kept; room frees up as the executor drains.
    assert!(rx.try_recv().is_some());
    e.process(&msg("t1", "d1", 11, json!({})));
    assert_eq!(e.counters().fired, 3);
    drop(rx);
    e.process(&msg("t1", "d1", 12, json!({})));
    assert_eq!(
        e.counters().dropped,
        9,
        "an executor that is gone drops too"
    );
}

#[test]
fn reinstall_keeps_state_only_when_the_sql_is_unchanged() {
    let (e, mut rx) = engine(100);
    let sql = "SELECT count(v, '1h') AS n FROM 'devices/+/telemetry'";
    let with = |topic: &str| rule("r", sql, republish(topic));
    e.install("t1", with("a"));
    e.process(&msg("t1", "d1", 1_000, json!({"v": 1})));
    e.process(&msg("t1", "d1", 2_000, json!({"v": 1})));
    e.install("t1", with("b"));
    e.process(&msg("t1", "d1", 3_000, json!({"v": 1})));
    let last = |rx: &mut InvocationReceiver| {
        let mut last = None;
        while let Some(i) = rx.try_recv() {
            last = Some(i);
        }
        last.unwrap()
    };
    let inv = last(&mut rx);
    assert!(
        matches!(&inv.action, ResolvedAction::Republish { topic, payload, .. } if topic == "b" && payload == r#"{"n":3}"#),
        "{inv:?}"
    );
    e.install(
        "t1",
        rule(
            "r",
            "SELECT count(v, '2h') AS n FROM 'devices/+/telemetry'",
            republish("c"),
        ),
    );
    e.process(&msg("t1", "d1", 4_000, json!({"v": 1})));
    let inv = last(&mut rx);
    assert!(
        matches!(&inv.action, ResolvedAction::Republish { payload, .. } if payload == r#"{"n":1}"#),
        "{inv:?}"
    );
    assert_eq!(e.rule_ids("t1").len(), 1, "same id replaces");
}

#[test]
fn remove_and_replace_all() {
    let (e, _rx) = engine(10);
    e.install("t1", rule("a", "SELECT * FROM 'x/#'", json!([])));
    e.install("t1", rule("b", "SELECT * FROM 'y/#'", json!([])));
    assert!(e.remove("t1", "a"));
    assert!(!e.remove("t1", "a"));
    assert!(!e.wants("t1", "x/1"));
    assert!(e.wants("t1", "y/1"));
    e.replace_all("t1", vec![rule("c", "SELECT * FROM 'z'", json!([]))]);
    assert_eq!(e.rule_ids("t1"), ["c"]);
    e.replace_all("t1", vec![]);
    assert!(e.rule_ids("t1").is_empty());
}

#[test]
fn window_state_is_bounded_per_tenant() {
    let (e, _rx) = RuleEngine::new(
        EngineConfig {
            queue_capacity: 10,
            windows: WindowLimits {
                max_devices: SHARDS,
                ..WindowLimits::default()
            },
        },
        Arc::new(NoZones),
    );
    e.install(
        "t1",
        rule(
            "r",
            "SELECT avg(v, '1m') AS a FROM 'devices/+/telemetry'",
            json!([]),
        ),
    );
    e.install(
        "t1",
        rule("plain", "SELECT v FROM 'devices/+/telemetry'", json!([])),
    );
    for d in 0..200 {
        e.process(&msg("t1", &format!("d{d}"), 1, json!({"v": 1})));
    }
    let tracked = e.rule_stats("t1", "r").unwrap().tracked_devices;
    assert!((1..=SHARDS).contains(&tracked), "{tracked}");
    assert_eq!(
        e.rule_stats("t1", "plain").unwrap().tracked_devices,
        0,
        "stateless"
    );
}

#[test]
fn state_of_a_removed_or_changed_rule_is_dropped() {
    let (e, mut rx) = engine(100);
    let counting = |sql_window: &str| {
        rule(
            "r",
            &format!("SELECT count(v, '{sql_window}') AS n FROM 'devices/+/telemetry'"),
            republish("x"),
        )
    };
    e.install("t1", counting("1h"));
    e.install(
        "t1",
        rule(
            "other",
            "SELECT max(v, '1h') AS m FROM 'devices/+/telemetry'",
            json!([]),
        ),
    );
    e.process(&msg("t1", "d1", 1, json!({"v": 1})));
    assert_eq!(e.rule_stats("t1", "r").unwrap().tracked_devices, 1);
    assert!(e.remove("t1", "r"));
    e.process(&msg("t1", "d1", 2, json!({"v": 1})));
    // Reinstalled with the same SQL after removal: a new rule, fresh state.
    e.install("t1", counting("1h"));
    e.process(&msg("t1", "d1", 3, json!({"v": 1})));
    let mut last = None;
    while let Some(i) = rx.try_recv() {
        last = Some(i);
    }
    let inv = last.unwrap();
    assert!(
        matches!(&inv.action, ResolvedAction::Republish { payload, .. } if payload == r#"{"n":1}"#),
        "{inv:?}"
    );
}

#[test]
fn many_rules_cost_only_the_matching_ones() {
    let (e, _rx) = engine(10_000);
    for i in 0..100 {
        e.install(
            "t1",
            rule(
                &format!("r{i}"),
                &format!("SELECT * FROM 'site/{i}/+'"),
                json!([]),
            ),
        );
    }
    e.install(
        "t1",
        rule("all", "SELECT * FROM 'devices/+/telemetry'", json!([])),
    );
    e.process(&msg("t1", "d1", 1, json!({})));
    assert_eq!(
        e.counters().evaluated,
        1,
        "only the matching filter is evaluated"
    );
}

struct Recorder {
    seen: tokio::sync::mpsc::UnboundedSender<ActionInvocation>,
}

impl ActionExecutor for Recorder {
    async fn execute(&self, invocation: ActionInvocation) -> Result<(), ActionError> {
        let fail = invocation.device_id == "bad";
        self.seen.send(invocation).expect("test receiver alive");
        if fail {
            Err(ActionError("device refused".into()))
        } else {
            Ok(())
        }
    }
}

#[tokio::test]
async fn the_dispatcher_feeds_the_executor_and_counts_failures() {
    let (e, rx) = engine(100);
    e.install(
        "t1",
        rule(
            "r",
            "SELECT * FROM 'devices/+/telemetry'",
            republish("out/${device_id}"),
        ),
    );
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel();
    let task = tokio::spawn(rx.run(Recorder { seen: seen_tx }));
    e.process(&msg("t1", "good", 1, json!({})));
    e.process(&msg("t1", "bad", 2, json!({})));
    for want in ["good", "bad"] {
        let inv = tokio::time::timeout(Duration::from_secs(5), seen_rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(inv.device_id, want);
    }
    drop(e);
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn failures_are_counted() {
    let (e, rx) = engine(100);
    e.install(
        "t1",
        rule("r", "SELECT * FROM 'devices/+/telemetry'", republish("out")),
    );
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(rx.run(Recorder { seen: seen_tx }));
    e.process(&msg("t1", "bad", 1, json!({})));
    e.process(&msg("t1", "good", 2, json!({})));
    for _ in 0..2 {
        tokio::time::timeout(Duration::from_secs(5), seen_rx.recv())
            .await
            .unwrap()
            .unwrap();
    }
    // `run` counts the failure right after `execute` returns; give it a moment.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while e.counters().action_failures < 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "failure not counted"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(e.counters().action_failures, 1);
}

#[test]
fn a_batch_that_half_fits_keeps_its_first_actions() {
    let (e, mut rx) = engine(3);
    e.install(
        "t1",
        rule(
            "r",
            "SELECT * FROM 'devices/+/telemetry'",
            json!([{"action": "republish", "topic": "first"}, {"action": "republish", "topic": "second"}]),
        ),
    );
    assert_eq!(e.process(&msg("t1", "d1", 1, json!({}))), 2);
    assert_eq!(e.process(&msg("t1", "d1", 2, json!({}))), 1);
    assert_eq!(
        (e.counters().fired, e.counters().dropped, e.queue_len()),
        (3, 1, 3)
    );
    let topics: Vec<String> = std::iter::from_fn(|| rx.try_recv())
        .map(|i| match i.action {
            ResolvedAction::Republish { topic, .. } => format!("{}:{topic}", i.timestamp_ms),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(topics, ["1:first", "1:second", "2:first"]);
    assert_eq!(e.queue_len(), 0, "taking an invocation frees its place");
}

#[test]
fn the_public_types_can_be_shared_across_tasks() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<RuleEngine>();
    send_sync::<Rule>();
    send_sync::<ActionInvocation>();
    send::<InvocationReceiver>();
}
