//! Random rule text and random payloads: the parser and the evaluator answer with errors,
//! never panics. A deterministic generator keeps failures reproducible.

mod common;

use common::*;
use serde_json::{Value, json};
use wulian_rules::{Rule, RuleDefinition};

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }
}

const PIECES: &[&str] = &[
    "SELECT",
    "FROM",
    "WHERE",
    "AS",
    "AND",
    "OR",
    "NOT",
    "IS",
    "NULL",
    "IN",
    "BETWEEN",
    "CASE",
    "WHEN",
    "THEN",
    "ELSE",
    "END",
    "true",
    "false",
    "temp",
    "gps.lat",
    "readings[0]",
    "a['b']",
    "\"x y\"",
    "device_id",
    "timestamp",
    "topic",
    "payload",
    "0",
    "1",
    "-1",
    "2.5",
    "1e3",
    "'devices/+/telemetry'",
    "'#'",
    "'a'",
    "'5m'",
    "'[[0,0],[1,0],[1,1]]'",
    "(",
    ")",
    ",",
    "*",
    "+",
    "-",
    "/",
    "%",
    "=",
    "!=",
    "<>",
    "<",
    "<=",
    ">",
    ">=",
    "||",
    ".",
    "[",
    "]",
    "abs(",
    "round(",
    "least(",
    "concat(",
    "substring(",
    "length(",
    "json_get(",
    "json_decode(",
    "coalesce(",
    "distance(",
    "point_in_polygon(",
    "in_zone(",
    "topic(",
    "avg(",
    "count(",
    "format_time(",
    "now()",
    "sqrt(",
    "upper(",
    "--",
    "\n",
    "'",
    "\"",
    "é",
    "#",
];

fn payloads() -> Vec<Value> {
    vec![
        json!({"temp": 21.5, "gps": {"lat": 1, "lon": 2}, "readings": [1, "x", null], "a": {"b": "c"}}),
        json!({"temp": "hot", "gps": "nowhere", "readings": {}, "x y": [[]]}),
        json!([1, 2, 3]),
        json!("just a string"),
        json!(null),
        json!({"temp": 1e300, "readings": [9223372036854775807i64, -9223372036854775808i64]}),
    ]
}

const ATOMS: &[&str] = &[
    "temp",
    "gps.lat",
    "gps.lon",
    "readings[0]",
    "readings[-1]",
    "a['b']",
    "\"x y\"",
    "device_id",
    "timestamp",
    "topic",
    "payload",
    "0",
    "1",
    "-1",
    "2.5",
    "1e3",
    "'a'",
    "''",
    "true",
    "false",
    "null",
    "missing",
];

const CALLS: &[(&str, usize)] = &[
    ("abs", 1),
    ("round", 2),
    ("floor", 1),
    ("sqrt", 1),
    ("power", 2),
    ("ln", 1),
    ("least", 3),
    ("greatest", 2),
    ("lower", 1),
    ("concat", 3),
    ("substring", 3),
    ("length", 1),
    ("trim", 1),
    ("contains", 2),
    ("replace", 3),
    ("format_time", 1),
    ("json_get", 2),
    ("json_encode", 1),
    ("json_decode", 1),
    ("coalesce", 2),
    ("distance", 4),
    ("topic", 1),
];

const OPS: &[&str] = &[
    "+", "-", "*", "/", "%", "||", "=", "<>", "<", "<=", ">", ">=", "AND", "OR",
];

/// A random expression that is usually well-formed (compound forms in parentheses, since
/// comparisons do not chain and `NOT` binds loosely, as in SQL).
fn expr(rng: &mut XorShift, depth: u32) -> String {
    if depth == 0 {
        return rng.pick(ATOMS).to_string();
    }
    match rng.next() % 9 {
        0 | 1 => rng.pick(ATOMS).to_string(),
        2 => format!(
            "({} {} {})",
            expr(rng, depth - 1),
            rng.pick(OPS),
            expr(rng, depth - 1)
        ),
        3 => {
            let (name, n) = CALLS[(rng.next() % CALLS.len() as u64) as usize];
            let args: Vec<String> = (0..n).map(|_| expr(rng, depth - 1)).collect();
            format!("{name}({})", args.join(", "))
        }
        4 => format!("(NOT {})", expr(rng, depth - 1)),
        5 => format!(
            "({} IN ({}, {}))",
            expr(rng, depth - 1),
            expr(rng, depth - 1),
            expr(rng, depth - 1)
        ),
        6 => format!(
            "({} BETWEEN {} AND {})",
            expr(rng, depth - 1),
            expr(rng, depth - 1),
            expr(rng, depth - 1)
        ),
        7 => format!(
            "CASE WHEN {} THEN {} ELSE {} END",
            expr(rng, depth - 1),
            expr(rng, depth - 1),
            expr(rng, depth - 1)
        ),
        _ => {
            let agg = rng.pick(&["avg", "min", "max", "sum", "count"]);
            format!("({agg}({}, '1m') IS NULL)", rng.pick(ATOMS))
        }
    }
}

#[test]
fn random_rule_text_never_panics() {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let (mut compiled, mut refused) = (0, 0);
    for round in 0..3_000 {
        let mut sql = format!(
            "SELECT {} AS v, {} AS w FROM 'devices/+/telemetry' WHERE {}",
            expr(&mut rng, 3),
            expr(&mut rng, 2),
            expr(&mut rng, 3)
        );
        // Every fourth text is damaged: a piece spliced in at a random character.
        if round % 4 == 0 {
            let at = (rng.next() % sql.chars().count() as u64) as usize;
            let byte = sql.char_indices().nth(at).map_or(sql.len(), |(i, _)| i);
            sql.insert_str(byte, rng.pick(PIECES));
        }
        let def = RuleDefinition {
            id: "fuzz".into(),
            sql: sql.clone(),
            actions: vec![],
        };
        match Rule::compile(def) {
            Err(e) => {
                refused += 1;
                assert!(!e.to_string().is_empty());
                if round % 4 != 0 && std::env::var("FUZZ_SHOW").is_ok() {
                    eprintln!("{sql}\n  -> {e}");
                }
            }
            Ok(rule) => {
                compiled += 1;
                let msgs: Vec<_> = payloads()
                    .into_iter()
                    .enumerate()
                    .map(|(i, p)| msg("d1", NOW + i as i64, p))
                    .collect();
                let out = run(&rule, &msgs);
                assert_eq!(out.len(), msgs.len(), "{sql}");
            }
        }
    }
    // Both the evaluator and the error paths must be reached, or this test proves little.
    assert!(
        compiled > 1_000 && refused > 300,
        "compiled {compiled}, refused {refused}"
    );
}

#[test]
fn error_positions_are_inside_the_text() {
    let mut rng = XorShift(42);
    for _ in 0..2_000 {
        let n = 1 + rng.next() % 12;
        let sql: String = (0..n)
            .map(|_| rng.pick(PIECES))
            .collect::<Vec<_>>()
            .join(" ");
        if let Err(e) = Rule::check_sql(&sql) {
            assert!(e.offset <= sql.len(), "{sql:?}: {e:?}");
            assert!(e.line >= 1 && e.column >= 1);
            assert!(!e.expected.is_empty(), "{sql:?}");
        }
    }
}
