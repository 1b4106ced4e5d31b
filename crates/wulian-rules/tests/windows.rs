//! Windowed aggregates per device, driven by message timestamps (never the wall clock).

mod common;

use common::*;
use serde_json::{Value, json};

fn outputs(sql: &str, samples: &[wulian_rules::Message]) -> Vec<Value> {
    let r = rule(sql, json!([]));
    run(&r, samples)
        .into_iter()
        .map(|res| match (res.output, res.error) {
            (Some(o), _) => Value::Object(o),
            (None, Some(e)) => json!({"error": e.reason}),
            (None, None) => json!({"not_matched": res.reason}),
        })
        .collect()
}

const MIN: i64 = 60_000;

#[test]
fn average_over_the_last_five_minutes_per_device() {
    let sql = "SELECT avg(temp, '5m') AS a, min(temp, '5m') AS lo, max(temp, '5m') AS hi, \
               sum(temp, '5m') AS s, count(temp, '5m') AS n FROM 'devices/+/telemetry'";
    let t0 = NOW;
    let out = outputs(
        sql,
        &[
            msg("d1", t0, json!({"temp": 10})),
            msg("d1", t0 + MIN, json!({"temp": 20})),
            msg("d2", t0 + MIN, json!({"temp": 100})),
            msg("d1", t0 + 2 * MIN, json!({"temp": 30})),
            // Exactly five minutes after the first sample: it leaves the window.
            msg("d1", t0 + 5 * MIN, json!({"temp": 40})),
            msg("d1", t0 + 20 * MIN, json!({"temp": 1})),
        ],
    );
    assert_eq!(
        out[0],
        json!({"a": 10.0, "lo": 10.0, "hi": 10.0, "s": 10.0, "n": 1})
    );
    assert_eq!(
        out[1],
        json!({"a": 15.0, "lo": 10.0, "hi": 20.0, "s": 30.0, "n": 2})
    );
    assert_eq!(
        out[2],
        json!({"a": 100.0, "lo": 100.0, "hi": 100.0, "s": 100.0, "n": 1}),
        "devices are separate"
    );
    assert_eq!(
        out[3],
        json!({"a": 20.0, "lo": 10.0, "hi": 30.0, "s": 60.0, "n": 3})
    );
    assert_eq!(
        out[4],
        json!({"a": 30.0, "lo": 20.0, "hi": 40.0, "s": 90.0, "n": 3})
    );
    assert_eq!(
        out[5],
        json!({"a": 1.0, "lo": 1.0, "hi": 1.0, "s": 1.0, "n": 1})
    );
}

#[test]
fn nulls_are_skipped_and_empty_windows_are_null() {
    let sql = "SELECT avg(temp, '1m') AS a, count(temp, '1m') AS n FROM 'devices/+/telemetry'";
    let out = outputs(
        sql,
        &[
            msg("d1", NOW, json!({"humidity": 3})),
            msg("d1", NOW + 1_000, json!({"temp": 4})),
            msg("d1", NOW + 2_000, json!({"temp": null})),
        ],
    );
    assert_eq!(out[0], json!({"a": null, "n": 0}));
    assert_eq!(out[1], json!({"a": 4.0, "n": 1}));
    assert_eq!(out[2], json!({"a": 4.0, "n": 1}));
}

#[test]
fn where_on_an_aggregate_and_windows_update_even_when_not_matched() {
    let sql = "SELECT avg(temp, '5m') AS a FROM 'devices/+/telemetry' WHERE avg(temp, '5m') > 50";
    let out = outputs(
        sql,
        &[
            msg("d1", NOW, json!({"temp": 40})),
            msg("d1", NOW + 1_000, json!({"temp": 70})),
            msg("d1", NOW + 2_000, json!({"temp": 100})),
        ],
    );
    assert_eq!(out[0]["not_matched"], json!("WHERE is false"));
    assert_eq!(
        out[1]["a"],
        json!(55.0),
        "the unmatched first sample still counts"
    );
    assert_eq!(out[2]["a"], json!(70.0));
}

#[test]
fn out_of_order_samples() {
    let sql = "SELECT sum(v, '10s') AS s FROM 'devices/+/telemetry'";
    let out = outputs(
        sql,
        &[
            msg("d1", NOW + 10_000, json!({"v": 1})),
            msg("d1", NOW + 5_000, json!({"v": 2})),
            // Older than the window relative to the newest sample: dropped.
            msg("d1", NOW, json!({"v": 4})),
            msg("d1", NOW + 16_000, json!({"v": 8})),
        ],
    );
    let s: Vec<_> = out.iter().map(|o| o["s"].clone()).collect();
    assert_eq!(s, [json!(1.0), json!(3.0), json!(3.0), json!(9.0)]);
}

#[test]
fn count_accepts_any_value_numeric_aggregates_do_not() {
    let out = outputs(
        "SELECT count(state, '1m') AS n FROM 'devices/+/telemetry'",
        &[
            msg("d1", NOW, json!({"state": "open"})),
            msg("d1", NOW + 1, json!({"state": true})),
        ],
    );
    assert_eq!(out[1]["n"], json!(2));
    let out = outputs(
        "SELECT avg(state, '1m') AS a FROM 'devices/+/telemetry'",
        &[msg("d1", NOW, json!({"state": "open"}))],
    );
    assert_eq!(
        out[0]["error"],
        json!("window aggregates need numbers, found string")
    );
}

#[test]
fn window_of_an_expression() {
    let out = outputs(
        "SELECT max(temp * 9 / 5 + 32, '1h') AS f FROM 'devices/+/telemetry'",
        &[
            msg("d1", NOW, json!({"temp": 100})),
            msg("d1", NOW + 1, json!({"temp": 0})),
        ],
    );
    assert_eq!(out[1]["f"], json!(212.0));
}
