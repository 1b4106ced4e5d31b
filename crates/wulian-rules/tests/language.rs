//! The expression language through the public API: literals, paths, operators, every
//! function, SQL null semantics and run-time errors.

mod common;

use common::*;
use serde_json::{Value, json};
use wulian_rules::StaticZones;
use wulian_rules::geo::Polygon;

#[test]
fn literals_paths_and_metadata() {
    assert_eq!(ev("1"), json!(1));
    assert_eq!(ev("2.5"), json!(2.5));
    assert_eq!(ev("'it''s'"), json!("it's"));
    assert_eq!(ev("true"), json!(true));
    assert_eq!(ev("null"), Value::Null);
    assert_eq!(ev("temp"), json!(21.5));
    assert_eq!(ev("gps.lat"), json!(48.8566));
    assert_eq!(ev("readings[0]"), json!(10));
    assert_eq!(ev("readings[-1]"), json!(30));
    assert_eq!(ev("readings[9]"), Value::Null);
    assert_eq!(ev("\"weird key\""), json!(7));
    assert_eq!(ev("payload['weird key']"), json!(7));
    assert_eq!(ev("missing.deeper"), Value::Null);
    assert_eq!(ev("temp.x"), Value::Null, "a step into a scalar is null");
    assert_eq!(ev("device_id"), json!("d1"));
    assert_eq!(ev("tenant"), json!("t1"));
    assert_eq!(ev("topic"), json!("devices/d1/telemetry"));
    assert_eq!(ev("timestamp"), json!(NOW - 1_000));
    assert_eq!(ev("topic(2)"), json!("d1"));
    assert_eq!(ev("topic(3)"), json!("telemetry"));
    assert_eq!(ev("topic(4)"), Value::Null);
    assert_eq!(ev("json_decode(nested).a.b[1]"), json!(2));
}

#[test]
fn arithmetic_and_comparison() {
    assert_eq!(ev("1 + 2 * 3"), json!(7));
    assert_eq!(ev("(1 + 2) * 3"), json!(9));
    assert_eq!(ev("7 / 2"), json!(3.5));
    assert_eq!(ev("7 % 3"), json!(1));
    assert_eq!(ev("7.5 % 2"), json!(1.5));
    assert_eq!(ev("-count"), json!(-3));
    assert_eq!(ev("temp * 2 - 3"), json!(40.0));
    assert_eq!(
        ev("9223372036854775807 + 1"),
        json!(9.223372036854776e18),
        "overflow goes to float"
    );
    assert_eq!(ev("1 = 1.0"), json!(true));
    assert_eq!(ev("'a' < 'b'"), json!(true));
    assert_eq!(ev("false < true"), json!(true));
    assert_eq!(ev("count <> 3"), json!(false));
    assert_eq!(ev("count != 4"), json!(true));
    assert_eq!(
        ev("'3' = 3"),
        json!(false),
        "different types are unequal, not an error"
    );
    assert_eq!(ev("name || '-' || count"), json!("Sensor-A-3"));
    assert_eq!(ev("temp BETWEEN 20 AND 22"), json!(true));
    assert_eq!(ev("temp NOT BETWEEN 20 AND 22"), json!(false));
    assert_eq!(ev("count IN (1, 2, 3)"), json!(true));
    assert_eq!(ev("count NOT IN (1, 2)"), json!(true));
    assert_eq!(ev("name IN ('x', 'Sensor-A')"), json!(true));
    assert_eq!(
        ev("CASE WHEN temp > 30 THEN 'hot' WHEN temp > 20 THEN 'warm' ELSE 'cold' END"),
        json!("warm")
    );
    assert_eq!(
        ev("CASE count WHEN 1 THEN 'one' WHEN 3 THEN 'three' END"),
        json!("three")
    );
    assert_eq!(ev("CASE count WHEN 1 THEN 'one' END"), Value::Null);
}

#[test]
fn null_semantics_are_sql() {
    // Arithmetic, concatenation and comparison with null are null.
    assert_eq!(ev("nothing + 1"), Value::Null);
    assert_eq!(ev("missing * 2"), Value::Null);
    assert_eq!(ev("missing || 'x'"), Value::Null);
    assert_eq!(ev("missing = 1"), Value::Null);
    assert_eq!(
        ev("missing = null"),
        Value::Null,
        "even null = null is unknown"
    );
    assert_eq!(ev("missing <> 1"), Value::Null);
    assert_eq!(ev("NOT (missing > 1)"), Value::Null);
    // Three-valued logic.
    assert_eq!(ev("missing > 1 AND false"), json!(false));
    assert_eq!(ev("missing > 1 AND true"), Value::Null);
    assert_eq!(ev("missing > 1 OR true"), json!(true));
    assert_eq!(ev("missing > 1 OR false"), Value::Null);
    // IS NULL is never unknown; missing and explicit null are the same.
    assert_eq!(ev("missing IS NULL"), json!(true));
    assert_eq!(ev("nothing IS NULL"), json!(true));
    assert_eq!(ev("temp IS NOT NULL"), json!(true));
    // IN: unknown when not found and the list has a null; BETWEEN with a null bound.
    assert_eq!(ev("5 IN (1, null)"), Value::Null);
    assert_eq!(ev("1 IN (1, null)"), json!(true));
    assert_eq!(ev("missing IN (1, 2)"), Value::Null);
    assert_eq!(ev("5 BETWEEN null AND 10"), Value::Null);
    assert_eq!(ev("50 BETWEEN null AND 10"), json!(false));
    // A CASE condition that is unknown is not taken.
    assert_eq!(
        ev("CASE WHEN missing > 1 THEN 'a' ELSE 'b' END"),
        json!("b")
    );
    assert_eq!(ev("coalesce(missing, nothing, 5)"), json!(5));
}

#[test]
fn where_that_is_null_or_false_does_not_match() {
    let r = rule(
        "SELECT temp FROM 'devices/+/telemetry' WHERE temp > 50",
        json!([]),
    );
    let out = run(
        &r,
        &[
            msg("d1", NOW, json!({"temp": 60})),
            msg("d1", NOW, json!({"temp": 40})),
            msg("d1", NOW, json!({"humidity": 40})),
        ],
    );
    assert!(out[0].matched);
    assert_eq!(out[0].output.as_ref().unwrap()["temp"], json!(60));
    assert!(!out[1].matched);
    assert_eq!(out[1].reason.as_deref(), Some("WHERE is false"));
    assert!(!out[2].matched);
    assert!(out[2].reason.as_deref().unwrap().contains("null"));
}

#[test]
fn type_errors_name_the_failing_expression() {
    let e = ev_err("name > 3");
    assert_eq!(e.expression, "name > 3");
    assert_eq!(e.reason, "cannot order string against number");
    assert_eq!(e.offset, 7);

    let e = ev_err("count + upper(count)");
    assert_eq!(e.expression, "upper(count)");
    assert!(e.reason.contains("needs a string, found number"), "{e}");

    let e = ev_err("name + 1");
    assert!(e.reason.contains("use || to join strings"), "{e}");
    assert_eq!(ev_err("1 / 0").reason, "division by zero");
    assert_eq!(ev_err("count % 0").reason, "division by zero");
    assert!(ev_err("NOT temp").reason.contains("expected a boolean"));
    assert!(ev_err("sqrt(-1)").reason.contains("negative"));
    assert!(ev_err("ln(0)").reason.contains("not positive"));
    assert!(
        ev_err("power(10, 400)")
            .reason
            .contains("not a finite number")
    );

    let r = rule("SELECT * FROM 'devices/+/telemetry' WHERE temp", json!([]));
    let out = run(&r, &[msg("d1", NOW, json!({"temp": 3}))]);
    let e = out[0].error.as_ref().unwrap();
    assert_eq!(e.expression, "temp");
    assert!(e.reason.starts_with("WHERE expected a boolean"), "{e}");
    assert!(
        e.to_string().starts_with("in `temp` (offset 42): WHERE"),
        "{e}"
    );
}

#[test]
fn math_functions() {
    assert_eq!(ev("abs(-3)"), json!(3));
    assert_eq!(ev("abs(-2.5)"), json!(2.5));
    assert_eq!(ev("round(2.5)"), json!(3));
    assert_eq!(ev("round(-2.5)"), json!(-3));
    assert_eq!(ev("round(2.71828, 2)"), json!(2.72));
    assert_eq!(ev("round(1234, -2)"), json!(1200));
    assert_eq!(ev("floor(2.7)"), json!(2));
    assert_eq!(ev("ceil(2.1)"), json!(3));
    assert_eq!(ev("floor(-2.1)"), json!(-3));
    assert_eq!(ev("sqrt(16)"), json!(4.0));
    assert_eq!(ev("power(2, 10)"), json!(1024.0));
    assert_eq!(ev("pow(9, 0.5)"), json!(3.0));
    assert_eq!(ev("ln(1)"), json!(0.0));
    assert_eq!(ev("log10(1000)"), json!(3.0));
    assert_eq!(ev("least(3, 1, 2)"), json!(1));
    assert_eq!(ev("greatest(3, 1.5, missing, 2)"), json!(3));
    assert_eq!(ev("least('b', 'a')"), json!("a"));
    assert_eq!(ev("greatest(missing, nothing)"), Value::Null);
    assert_eq!(ev("abs(missing)"), Value::Null);
    assert!(ev_err("least(1, 'a')").reason.contains("cannot order"));
    assert!(ev_err("round(1.5, 'x')").reason.contains("round digits"));
    assert!(ev_err("abs('x')").reason.contains("abs needs a number"));
}

#[test]
fn string_functions() {
    assert_eq!(ev("lower(name)"), json!("sensor-a"));
    assert_eq!(ev("upper(name)"), json!("SENSOR-A"));
    assert_eq!(
        ev("concat(name, ':', count, missing, on)"),
        json!("Sensor-A:3true")
    );
    assert_eq!(ev("substring(name, 1, 6)"), json!("Sensor"));
    assert_eq!(ev("substring(name, 8)"), json!("A"));
    assert_eq!(
        ev("substring(name, 0, 3)"),
        json!("Se"),
        "SQL: start 0 eats one of the length"
    );
    assert_eq!(ev("substring('héllo', 2, 2)"), json!("él"));
    assert_eq!(ev("length(name)"), json!(8));
    assert_eq!(ev("length('héllo')"), json!(5));
    assert_eq!(ev("length(readings)"), json!(3));
    assert_eq!(ev("trim('  x  ')"), json!("x"));
    assert_eq!(ev("contains(name, 'sor')"), json!(true));
    assert_eq!(ev("contains(readings, 20)"), json!(true));
    assert_eq!(ev("startswith(name, 'Sen')"), json!(true));
    assert_eq!(ev("endswith(name, 'B')"), json!(false));
    assert_eq!(ev("replace(name, '-', '_')"), json!("Sensor_A"));
    assert_eq!(ev("replace(name, '', '_')"), json!("Sensor-A"));
    assert_eq!(ev("upper(missing)"), Value::Null);
    assert_eq!(ev("contains(missing, 'a')"), Value::Null);
    assert!(ev_err("substring(name, 1, -1)").reason.contains("negative"));
    assert!(ev_err("length(3)").reason.contains("length needs"));
    assert!(
        ev_err("replace(name, 1, 'x')")
            .reason
            .contains("three strings")
    );
}

#[test]
fn time_functions() {
    assert_eq!(ev("now()"), json!(NOW));
    assert_eq!(
        ev("format_time(timestamp)"),
        json!("2023-11-14T22:13:19.000Z")
    );
    assert_eq!(
        ev("format_time(0, 'rfc3339')"),
        json!("1970-01-01T00:00:00.000Z")
    );
    assert_eq!(ev("format_time(now(), 'date')"), json!("2023-11-14"));
    assert_eq!(ev("format_time(now(), 'time')"), json!("22:13:20"));
    assert_eq!(
        ev("format_time(now() - 60000, 'rfc3339_seconds')"),
        json!("2023-11-14T22:12:20Z")
    );
    assert_eq!(ev("format_time(missing)"), Value::Null);
    assert!(ev_err("format_time(1e18)").reason.contains("outside years"));
    assert!(
        ev_err("format_time(0, name)")
            .reason
            .contains("unknown time format")
    );
}

#[test]
fn json_functions() {
    assert_eq!(ev("json_get(gps, 'lat')"), json!(48.8566));
    assert_eq!(ev("json_get(payload, 'readings[2]')"), json!(30));
    assert_eq!(
        ev("json_get(nested, 'a.b[0]')"),
        json!(1),
        "a string is parsed as JSON"
    );
    assert_eq!(ev("json_get(payload, 'gps.alt')"), Value::Null);
    assert_eq!(ev("json_get(payload, '[''weird key'']')"), json!(7));
    assert_eq!(
        ev("json_encode(gps)"),
        json!("{\"lat\":48.8566,\"lon\":2.3522}")
    );
    assert_eq!(ev("json_encode(name)"), json!("\"Sensor-A\""));
    assert_eq!(ev("json_decode('[1,2]')[1]"), json!(2));
    assert_eq!(ev("coalesce(missing, name)"), json!("Sensor-A"));
    assert_eq!(ev("coalesce(missing)"), Value::Null);
    assert!(ev_err("json_get(name, 'a')").reason.contains("not JSON"));
    assert!(ev_err("json_decode('{')").reason.contains("json_decode"));
    // A path computed at run time is checked at run time.
    assert!(
        ev_err("json_get(gps, 'a' || '[x]')")
            .reason
            .contains("is not an index")
    );
    assert_eq!(ev("json_get(gps, 'l' || 'on')"), json!(2.3522));
}

#[test]
fn geo_functions() {
    // Eiffel Tower to Notre-Dame: about 4.1 km.
    let d = ev("distance(48.8584, 2.2945, 48.8530, 2.3499)");
    let d = d.as_f64().unwrap();
    assert!((d - 4_100.0).abs() < 100.0, "{d}");
    assert_eq!(
        ev("distance(gps.lat, gps.lon, gps.lat, gps.lon)"),
        json!(0.0)
    );
    assert_eq!(ev("distance(missing, 0, 0, 0)"), Value::Null);
    assert!(
        ev_err("distance(91, 0, 0, 0)")
            .reason
            .contains("out of range")
    );

    // Central Paris box, [lon, lat] vertices.
    let paris = "'[[2.25,48.81],[2.42,48.81],[2.42,48.90],[2.25,48.90]]'";
    assert_eq!(
        ev(&format!("point_in_polygon(gps.lat, gps.lon, {paris})")),
        json!(true)
    );
    assert_eq!(
        ev(&format!("point_in_polygon(51.5, -0.1, {paris})")),
        json!(false)
    );
    assert_eq!(
        ev(
            "point_in_polygon(1, 1, '{\"type\":\"Polygon\",\"coordinates\":[[[0,0],[2,0],[2,2],[0,2],[0,0]]]}')"
        ),
        json!(true)
    );
    // A polygon that comes from the payload is parsed at run time.
    let v = eval_on(
        "point_in_polygon(lat, lon, zone)",
        json!({"lat": 1, "lon": 1, "zone": [[0,0],[2,0],[2,2],[0,2]]}),
    )
    .unwrap();
    assert_eq!(v, json!(true));
    let e = eval_on("point_in_polygon(1, 1, zone)", json!({"zone": "[[0,0]]"})).unwrap_err();
    assert!(e.reason.contains("3 distinct"), "{e}");

    let mut zones = StaticZones::new();
    zones.insert(
        "t1",
        "depot",
        Polygon::from_text("[[2.25,48.81],[2.42,48.81],[2.42,48.90],[2.25,48.90]]").unwrap(),
    );
    zones.insert(
        "t2",
        "elsewhere",
        Polygon::from_text("[[0,0],[1,0],[1,1]]").unwrap(),
    );
    let p = sample_payload();
    assert_eq!(
        eval_with("in_zone(gps.lat, gps.lon, 'depot')", p.clone(), &zones).unwrap(),
        json!(true)
    );
    assert_eq!(
        eval_with("in_zone(0.0, 0.0, 'depot')", p.clone(), &zones).unwrap(),
        json!(false)
    );
    let e = eval_with("in_zone(gps.lat, gps.lon, 'elsewhere')", p.clone(), &zones).unwrap_err();
    assert_eq!(
        e.reason, "unknown zone \"elsewhere\"",
        "zones are per tenant"
    );
    let e = eval_on("in_zone(gps.lat, gps.lon, 'depot')", p).unwrap_err();
    assert!(e.reason.contains("unknown zone"));
}

#[test]
fn star_and_multiple_outputs() {
    let r = rule(
        "SELECT *, device_id, temp * 2 AS double FROM 'devices/+/telemetry'",
        json!([]),
    );
    let out = run(&r, &[msg("d7", NOW, json!({"temp": 2, "x": "y"}))]);
    let o = out[0].output.as_ref().unwrap();
    assert_eq!(
        Value::Object(o.clone()),
        json!({"temp": 2, "x": "y", "device_id": "d7", "double": 4})
    );
}

#[test]
fn topic_filter_decides_first() {
    let r = rule("SELECT * FROM 'devices/+/events/#'", json!([]));
    let out = run(&r, &[msg("d1", NOW, json!({}))]);
    assert!(!out[0].matched);
    assert!(
        out[0]
            .reason
            .as_deref()
            .unwrap()
            .contains("does not match the FROM filter")
    );
    assert_eq!(r.topic_filter(), "devices/+/events/#");
}

#[test]
fn zone_names_are_listed_for_validation() {
    let r = rule(
        "SELECT in_zone(lat, lon, 'a') AS x FROM '#' WHERE in_zone(lat, lon, 'b') OR in_zone(lat, lon, 'a')",
        json!([]),
    );
    assert_eq!(r.zone_names(), ["a", "b"]);
}

#[test]
fn a_null_argument_gives_null_for_every_ordinary_function() {
    for expr in [
        "round(temp, missing)",
        "format_time(timestamp, missing)",
        "json_get(gps, missing)",
        "substring(name, missing)",
        "topic(missing)",
        "power(missing, 2)",
        "in_zone(1, 2, missing)",
        "point_in_polygon(1, 2, missing)",
        "contains(readings, missing)",
    ] {
        assert_eq!(ev(expr), Value::Null, "{expr}");
    }
    assert_eq!(ev("json_encode(missing)"), json!("null"));
    assert_eq!(ev("concat(missing)"), json!(""));
}

#[test]
fn the_fast_threshold_path_agrees_with_the_general_evaluator() {
    let values = [
        json!(null),
        json!(49),
        json!(50),
        json!(50.0),
        json!(50.5),
        json!(-1e300),
        json!(9223372036854775807i64),
        json!("51"),
        json!(true),
        json!([51]),
    ];
    for op in ["=", "<>", "<", "<=", ">", ">="] {
        for (fast_where, general_where) in [
            (format!("temp {op} 50"), format!("temp {op} 50 AND true")),
            (format!("50 {op} temp"), format!("50 {op} temp AND true")),
        ] {
            let fast = rule(
                &format!("SELECT temp FROM '#' WHERE {fast_where}"),
                json!([]),
            );
            let general = rule(
                &format!("SELECT temp FROM '#' WHERE {general_where}"),
                json!([]),
            );
            let mut samples: Vec<_> = values
                .iter()
                .map(|v| msg("d1", NOW, json!({"temp": v})))
                .collect();
            samples.push(msg("d1", NOW, json!({"other": 1})));
            for (f, g) in run(&fast, &samples).iter().zip(run(&general, &samples)) {
                assert_eq!(
                    f.matched, g.matched,
                    "{fast_where} on {:?}",
                    samples[f.index].payload
                );
                assert_eq!(f.output, g.output);
                assert_eq!(f.error.is_some(), g.error.is_some(), "{fast_where}");
                if let (Some(fe), Some(ge)) = (&f.error, &g.error) {
                    assert_eq!(fe.reason, ge.reason);
                }
                if f.error.is_none() {
                    assert_eq!(
                        f.reason, g.reason,
                        "{fast_where} on {:?}",
                        samples[f.index].payload
                    );
                }
            }
        }
    }
}
