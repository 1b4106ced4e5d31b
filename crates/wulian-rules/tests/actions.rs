//! The action model: JSON shape, validation on save, template rendering, raise and clear.

mod common;

use common::*;
use serde_json::{Value, json};
use wulian_rules::{Action, HttpMethod, ResolvedAction, Rule, RuleDefinition, RuleError, Severity};

fn compile_err(sql: &str, actions: Value) -> RuleError {
    let def = RuleDefinition {
        id: "r1".into(),
        sql: sql.into(),
        actions: serde_json::from_value(actions).expect("actions JSON"),
    };
    Rule::compile(def).expect_err("should not compile")
}

const SQL: &str = "SELECT device_id, temp, gps FROM 'devices/+/telemetry' WHERE temp > 50";

#[test]
fn action_json_round_trips() {
    let actions = json!([
        {"action": "alarm", "type": "overheat", "severity": "major", "clear_when_false": true},
        {"action": "republish", "topic": "alerts/${device_id}", "qos": 1, "retain": false},
        {"action": "command", "name": "fan", "params": {"speed": "${temp}"}},
        {"action": "write_telemetry", "keys": ["temp"]},
        {"action": "webhook", "url": "https://example.com/h", "method": "PUT", "headers": {"X-Dev": "${device_id}"}}
    ]);
    let parsed: Vec<Action> = serde_json::from_value(actions.clone()).unwrap();
    assert!(matches!(
        &parsed[0],
        Action::Alarm {
            severity: Severity::Major,
            clear_when_false: true,
            ..
        }
    ));
    assert!(matches!(
        &parsed[4],
        Action::Webhook {
            method: HttpMethod::Put,
            ..
        }
    ));
    let back = serde_json::to_value(&parsed).unwrap();
    assert_eq!(back[0], actions[0]);
    assert_eq!(back[1]["topic"], actions[1]["topic"]);
    // A typo in a field name is refused rather than ignored.
    let typo = serde_json::from_value::<Action>(
        json!({"action": "alarm", "type": "x", "severity": "major", "clear_when_flase": true}),
    );
    assert!(typo.is_err());
    let bad = serde_json::from_value::<Action>(
        json!({"action": "alarm", "type": "x", "severity": "huge"}),
    );
    assert!(bad.is_err());
}

#[test]
fn actions_are_validated_on_save() {
    let e = compile_err(SQL, json!([{"action": "republish", "topic": "a/+/b"}]));
    assert_eq!(
        e.to_string(),
        "action 0: republish topic must not contain wildcards"
    );
    let e = compile_err(
        SQL,
        json!([{"action": "alarm", "type": "ok", "severity": "minor"}, {"action": "republish", "topic": "x", "qos": 3}]),
    );
    assert_eq!(e.to_string(), "action 1: qos must be 0, 1 or 2, found 3");
    let e = compile_err(
        SQL,
        json!([{"action": "republish", "topic": "a/${device_id"}]),
    );
    assert!(e.to_string().contains("unclosed '${'"), "{e}");
    let e = compile_err(SQL, json!([{"action": "webhook", "url": "ftp://x"}]));
    assert!(e.to_string().contains("http:// or https://"), "{e}");
    let e = compile_err(SQL, json!([{"action": "webhook", "url": "${host}/x"}]));
    assert!(
        e.to_string().contains("http:// or https://"),
        "a templated scheme could go anywhere"
    );
    let e = compile_err(
        SQL,
        json!([{"action": "write_telemetry", "keys": ["humidity"]}]),
    );
    assert!(
        e.to_string().contains("\"humidity\" is not selected"),
        "{e}"
    );
    let e = compile_err(SQL, json!([{"action": "command", "name": "a/b"}]));
    assert!(e.to_string().contains("command name"), "{e}");
    let e = compile_err(
        SQL,
        json!([{"action": "alarm", "type": "", "severity": "minor"}]),
    );
    assert_eq!(e.code(), "rule_invalid_action");
    let e = compile_err("SELECT FROM 'x'", json!([]));
    assert_eq!(e.code(), "rule_parse_error");
    assert_eq!(
        e.to_string(),
        "invalid rule: line 1, column 8: expected expression, found 'FROM'"
    );
    let def = RuleDefinition {
        id: "bad id!".into(),
        sql: SQL.into(),
        actions: vec![],
    };
    assert_eq!(Rule::compile(def).unwrap_err().code(), "rule_invalid_id");
}

#[test]
fn templates_render_from_output_and_metadata() {
    let r = rule(
        SQL,
        json!([
            {"action": "republish", "topic": "alerts/${device_id}/${gps.lat}", "qos": 1,
             "payload": "${device_id} is at ${temp}°C (${gps}) via ${rule_id} $$5 $x"},
            {"action": "command", "name": "fan", "params": {"speed": "${temp}", "why": "temp ${temp}", "fixed": [1, "${gps.lon}"]}},
            {"action": "webhook", "url": "https://example.com/t/${tenant}?ts=${timestamp}",
             "headers": {"X-Device": "${device_id}"}},
            {"action": "webhook", "url": "http://h/", "method": "PUT", "body": "${topic}"}
        ]),
    );
    let out = run(
        &r,
        &[msg(
            "d1",
            NOW,
            json!({"temp": 55, "gps": {"lat": 1.5, "lon": 2}}),
        )],
    );
    let a = &out[0].actions;
    assert_eq!(
        a[0],
        ResolvedAction::Republish {
            topic: "alerts/d1/1.5".into(),
            payload: "d1 is at 55°C ({\"lat\":1.5,\"lon\":2}) via r1 $5 $x".into(),
            qos: 1,
            retain: false,
        }
    );
    assert_eq!(
        a[1],
        ResolvedAction::Command {
            device_id: "d1".into(),
            name: "fan".into(),
            params: json!({"speed": 55, "why": "temp 55", "fixed": [1, 2]}),
            timeout_ms: None,
        }
    );
    let ResolvedAction::Webhook {
        url,
        method,
        headers,
        body,
    } = &a[2]
    else {
        panic!("{:?}", a[2])
    };
    assert_eq!(url, &format!("https://example.com/t/t1?ts={NOW}"));
    assert_eq!(*method, HttpMethod::Post);
    assert_eq!(headers, &[("X-Device".to_string(), "d1".to_string())]);
    let body: Value = serde_json::from_str(body).unwrap();
    assert_eq!(
        body,
        json!({"device_id": "d1", "temp": 55, "gps": {"lat": 1.5, "lon": 2}})
    );
    let ResolvedAction::Webhook { body, .. } = &a[3] else {
        panic!()
    };
    assert_eq!(body, "devices/d1/telemetry");
}

#[test]
fn a_missing_template_name_is_an_error_not_a_broken_topic() {
    let r = rule(
        SQL,
        json!([
            {"action": "republish", "topic": "alerts/${site}"},
            {"action": "republish", "topic": "alerts/${device_id}"}
        ]),
    );
    let out = run(&r, &[msg("d1", NOW, json!({"temp": 55}))]);
    assert_eq!(out[0].actions.len(), 1, "the other action still fires");
    assert_eq!(out[0].action_errors.len(), 1);
    assert!(
        out[0].action_errors[0].contains("'${site}'"),
        "{:?}",
        out[0].action_errors
    );
    // A value that would make an invalid topic is refused too.
    let r = rule(
        "SELECT s FROM 'devices/+/telemetry'",
        json!([{"action": "republish", "topic": "x/${s}"}]),
    );
    let out = run(&r, &[msg("d1", NOW, json!({"s": "a/#"}))]);
    assert!(out[0].action_errors[0].contains("not a valid topic name"));
}

#[test]
fn write_telemetry_takes_selected_non_null_values() {
    let r = rule(
        "SELECT temp * 2 AS t2, missing AS m, avg(temp, '5m') AS temp_avg FROM 'devices/+/telemetry'",
        json!([{"action": "write_telemetry"}, {"action": "write_telemetry", "keys": ["temp_avg"]}]),
    );
    let out = run(&r, &[msg("d9", NOW, json!({"temp": 10}))]);
    let a = &out[0].actions;
    assert_eq!(
        a[0],
        ResolvedAction::WriteTelemetry {
            device_id: "d9".into(),
            timestamp_ms: NOW,
            values: serde_json::from_value(json!({"t2": 20, "temp_avg": 10.0})).unwrap(),
        }
    );
    let ResolvedAction::WriteTelemetry { values, .. } = &a[1] else {
        panic!()
    };
    assert_eq!(Value::Object(values.clone()), json!({"temp_avg": 10.0}));
}

#[test]
fn alarms_raise_on_match_and_clear_once_when_false() {
    let r = rule(
        "SELECT temp FROM 'devices/+/telemetry' WHERE temp > 50",
        json!([
            {"action": "alarm", "type": "overheat", "severity": "critical", "clear_when_false": true},
            {"action": "alarm", "type": "sticky", "severity": "minor"}
        ]),
    );
    let temps = [40, 60, 70, 30, 20, 80];
    let samples: Vec<_> = temps
        .iter()
        .enumerate()
        .map(|(i, t)| msg("d1", NOW + i as i64, json!({"temp": t})))
        .collect();
    let out = run(&r, &samples);
    let kinds: Vec<Vec<String>> = out
        .iter()
        .map(|o| {
            o.actions
                .iter()
                .map(|a| match a {
                    ResolvedAction::RaiseAlarm { alarm_type, .. } => format!("raise {alarm_type}"),
                    ResolvedAction::ClearAlarm { alarm_type } => format!("clear {alarm_type}"),
                    other => format!("{other:?}"),
                })
                .collect()
        })
        .collect();
    assert_eq!(
        kinds,
        vec![
            // State unknown at first: a clear, in case an alarm outlived a restart.
            vec!["clear overheat".to_string()],
            vec!["raise overheat".into(), "raise sticky".into()],
            vec!["raise overheat".into(), "raise sticky".into()],
            vec!["clear overheat".into()],
            vec![],
            vec!["raise overheat".into(), "raise sticky".into()],
        ]
    );
    let ResolvedAction::RaiseAlarm {
        severity, details, ..
    } = &out[1].actions[0]
    else {
        panic!()
    };
    assert_eq!(*severity, Severity::Critical);
    assert_eq!(details, &json!({"temp": 60}));
}

#[test]
fn dry_run_serialises_for_the_api() {
    let r = rule(
        SQL,
        json!([{"action": "alarm", "type": "hot", "severity": "warning"}]),
    );
    let out = run(
        &r,
        &[
            msg("d1", NOW, json!({"temp": 51})),
            msg("d1", NOW, json!({"temp": "x"})),
        ],
    );
    let v = serde_json::to_value(&out).unwrap();
    assert_eq!(
        v[0],
        json!({
            "index": 0,
            "matched": true,
            "output": {"device_id": "d1", "temp": 51, "gps": null},
            "actions": [{"action": "raise_alarm", "type": "hot", "severity": "warning",
                          "details": {"device_id": "d1", "temp": 51, "gps": null}}]
        })
    );
    assert_eq!(v[1]["matched"], json!(false));
    assert_eq!(v[1]["error"]["expression"], json!("temp > 50"));
    assert_eq!(
        v[1]["error"]["reason"],
        json!("cannot order string against number")
    );
}

#[test]
fn definitions_from_stored_json_report_the_failing_action() {
    let ok = RuleDefinition::from_json_actions(
        "site:1.hot",
        SQL,
        &json!([{"action": "alarm", "type": "hot", "severity": "major"}]),
    )
    .unwrap();
    assert_eq!(ok.actions.len(), 1);
    assert!(
        Rule::compile(ok).is_ok(),
        "':' is allowed in ids, as in the registry"
    );
    let e = RuleDefinition::from_json_actions(
        "r",
        SQL,
        &json!([{"action": "alarm", "type": "hot", "severity": "major"}, {"action": "alarms"}]),
    )
    .unwrap_err();
    assert!(
        matches!(&e, RuleError::InvalidAction { index: 1, reason } if reason.contains("alarms")),
        "{e}"
    );
    let e = RuleDefinition::from_json_actions("r", SQL, &json!({"action": "alarm"})).unwrap_err();
    assert!(e.to_string().contains("must be a JSON array"), "{e}");
    assert!(
        RuleDefinition::from_json_actions("r", SQL, &Value::Null)
            .unwrap()
            .actions
            .is_empty()
    );
    assert_eq!(Severity::Indeterminate.as_str(), "indeterminate");
    assert_eq!(HttpMethod::Put.as_str(), "PUT");
    let get = serde_json::from_value::<Action>(
        json!({"action": "webhook", "url": "https://x", "method": "GET"}),
    );
    assert!(get.is_err(), "webhooks push data: POST or PUT");
}
