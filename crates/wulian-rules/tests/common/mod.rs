//! Helpers shared by the integration tests.
#![allow(dead_code)]

use serde_json::{Value, json};
use wulian_rules::{DryRunResult, EvalError, Message, NoZones, Rule, RuleDefinition, ZoneResolver};

/// 2023-11-14T22:13:20Z
pub const NOW: i64 = 1_700_000_000_000;

pub fn msg(device: &str, ts: i64, payload: Value) -> Message {
    Message {
        tenant: "t1".into(),
        device_id: device.into(),
        topic: format!("devices/{device}/telemetry"),
        timestamp_ms: ts,
        payload,
    }
}

pub fn rule(sql: &str, actions: Value) -> Rule {
    let definition = RuleDefinition {
        id: "r1".into(),
        sql: sql.into(),
        actions: serde_json::from_value(actions).expect("actions JSON"),
    };
    match Rule::compile(definition) {
        Ok(r) => r,
        Err(e) => panic!("rule {sql:?} does not compile: {e}"),
    }
}

pub fn run(r: &Rule, samples: &[Message]) -> Vec<DryRunResult> {
    run_with(r, samples, &NoZones)
}

pub fn run_with(r: &Rule, samples: &[Message], zones: &dyn ZoneResolver) -> Vec<DryRunResult> {
    r.dry_run_with(samples, zones, NOW)
}

/// Evaluates one expression against a payload: `Ok(value)` or the evaluation error.
pub fn eval_on(expr: &str, payload: Value) -> Result<Value, EvalError> {
    eval_with(expr, payload, &NoZones)
}

pub fn eval_with(expr: &str, payload: Value, zones: &dyn ZoneResolver) -> Result<Value, EvalError> {
    let r = rule(
        &format!("SELECT {expr} AS v FROM 'devices/+/telemetry'"),
        json!([]),
    );
    let mut out = run_with(&r, &[msg("d1", NOW - 1_000, payload)], zones);
    let res = out.remove(0);
    match (res.output, res.error) {
        (Some(o), _) => Ok(o.get("v").cloned().unwrap_or(Value::Null)),
        (None, Some(e)) => Err(e),
        (None, None) => panic!("neither output nor error: {:?}", res.reason),
    }
}

/// Evaluates an expression that must succeed.
pub fn ev(expr: &str) -> Value {
    eval_on(expr, sample_payload()).unwrap_or_else(|e| panic!("{expr}: {e}"))
}

/// Evaluates an expression that must fail, returning the error.
pub fn ev_err(expr: &str) -> EvalError {
    match eval_on(expr, sample_payload()) {
        Ok(v) => panic!("{expr} should fail, gave {v}"),
        Err(e) => e,
    }
}

pub fn sample_payload() -> Value {
    json!({
        "temp": 21.5,
        "count": 3,
        "name": "Sensor-A",
        "on": true,
        "nothing": null,
        "gps": {"lat": 48.8566, "lon": 2.3522},
        "readings": [10, 20, 30],
        "weird key": 7,
        "nested": "{\"a\": {\"b\": [1, 2]}}"
    })
}
