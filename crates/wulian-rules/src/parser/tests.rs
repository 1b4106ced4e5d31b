use super::*;

fn err(sql: &str) -> ParseError {
    match parse(sql) {
        Ok(_) => panic!("expected a parse error for {sql:?}"),
        Err(e) => e,
    }
}

/// Renders an expression's tree with explicit parentheses, to check precedence.
fn shape(e: &Expr) -> String {
    match &e.kind {
        ExprKind::Literal(v) => v.to_string(),
        ExprKind::Field(p) => p
            .iter()
            .map(|s| match s {
                PathSeg::Key(k) => k.clone(),
                PathSeg::Index(i) => format!("[{i}]"),
            })
            .collect::<Vec<_>>()
            .join("."),
        ExprKind::Meta(m) => format!("{m:?}"),
        ExprKind::Neg(x) => format!("(-{})", shape(x)),
        ExprKind::Not(x) => format!("(NOT {})", shape(x)),
        ExprKind::Binary(op, l, r) => format!("({} {op:?} {})", shape(l), shape(r)),
        ExprKind::IsNull { expr, negated } => format!(
            "({} IS{} NULL)",
            shape(expr),
            if *negated { " NOT" } else { "" }
        ),
        ExprKind::In {
            expr,
            list,
            negated,
        } => format!(
            "({} {}IN {})",
            shape(expr),
            if *negated { "NOT " } else { "" },
            list.iter().map(shape).collect::<Vec<_>>().join(",")
        ),
        ExprKind::Between {
            expr,
            low,
            high,
            negated,
        } => format!(
            "({} {}BETWEEN {} {})",
            shape(expr),
            if *negated { "NOT " } else { "" },
            shape(low),
            shape(high)
        ),
        ExprKind::Call(f, args) => format!(
            "{f:?}({})",
            args.iter().map(shape).collect::<Vec<_>>().join(",")
        ),
        ExprKind::Aggregate { func, buffer } => format!("{func:?}#{buffer}"),
        ExprKind::Get(b, s) => format!("{}->{s:?}", shape(b)),
        ExprKind::Case { .. } => "CASE".into(),
        ExprKind::PointInPolygon(..) => "PIP".into(),
    }
}

fn where_shape(cond: &str) -> String {
    let q = parse(&format!("SELECT * FROM '#' WHERE {cond}")).unwrap();
    shape(q.filter.as_ref().unwrap())
}

#[test]
fn precedence_follows_sql() {
    assert_eq!(where_shape("a + b * c > 1"), "((a Add (b Mul c)) Gt 1)");
    assert_eq!(where_shape("a - b - c = 0"), "(((a Sub b) Sub c) Eq 0)");
    assert_eq!(where_shape("a OR b AND NOT c"), "(a Or (b And (NOT c)))");
    assert_eq!(
        where_shape("NOT a = 1 AND b <> 2"),
        "((NOT (a Eq 1)) And (b NotEq 2))"
    );
    assert_eq!(
        where_shape("x || 'a' = 'ya'"),
        "((x Concat \"a\") Eq \"ya\")"
    );
    assert_eq!(where_shape("-a * 2 < 3"), "(((-a) Mul 2) Lt 3)");
    assert_eq!(where_shape("-5 = x"), "(-5 Eq x)");
    assert_eq!(
        where_shape("x BETWEEN 1 AND 2 AND y IS NOT NULL"),
        "((x BETWEEN 1 2) And (y IS NOT NULL))"
    );
    assert_eq!(
        where_shape("x NOT IN (1, 2) OR x not between 3 and 4"),
        "((x NOT IN 1,2) Or (x NOT BETWEEN 3 4))"
    );
    assert_eq!(where_shape("(a OR b) AND c"), "((a Or b) And c)");
    assert_eq!(where_shape("a % 2 = 0"), "((a Rem 2) Eq 0)");
}

#[test]
fn paths_metadata_and_keywords() {
    assert_eq!(where_shape("gps.lat > 1"), "(gps.lat Gt 1)");
    assert_eq!(where_shape("readings[0] > 1"), "(readings.[0] Gt 1)");
    assert_eq!(where_shape("a['b c'][-1] = 1"), "(a.b c.[-1] Eq 1)");
    assert_eq!(where_shape("\"select\" = 1"), "(select Eq 1)");
    assert_eq!(where_shape("device_id = 'd'"), "(DeviceId Eq \"d\")");
    assert_eq!(where_shape("TIMESTAMP > 0"), "(Timestamp Gt 0)");
    assert_eq!(where_shape("end_time > 0"), "(end_time Gt 0)");
    assert_eq!(
        where_shape("json_decode(s).a = 1"),
        "(JsonDecode(s)->Key(\"a\") Eq 1)"
    );
    assert_eq!(where_shape("select_count = 1"), "(select_count Eq 1)");
}

#[test]
fn output_names() {
    let q =
        parse("SELECT device_id, gps.lat, temp * 2 AS t2, avg(temp, '5m'), * FROM '#'").unwrap();
    let names: Vec<_> = q
        .select
        .iter()
        .map(|s| match s {
            SelectItem::Star => "*".to_string(),
            SelectItem::Expr { name, .. } => name.clone(),
        })
        .collect();
    assert_eq!(names, ["device_id", "lat", "t2", "avg(temp, '5m')", "*"]);
}

#[test]
fn aggregates_share_buffers() {
    let q = parse(
        "SELECT avg(temp, '5m') AS a, max(temp, '5m') AS b, avg(temp, '1h') AS c, count(x, '5m') AS d \
         FROM '#' WHERE avg(temp, '5m') > 1",
    )
    .unwrap();
    assert_eq!(q.buffers.len(), 3);
    assert_eq!(q.buffers[0].window_ms, 300_000);
    assert!(q.buffers[0].numeric);
    assert!(!q.buffers[2].numeric, "count alone accepts any value");
}

#[test]
fn errors_point_at_the_token() {
    let e = err("SELECT temp, humidity WHERE temp > 5");
    assert_eq!((e.line, e.column, e.offset), (1, 23, 22));
    assert_eq!(e.found, "'WHERE'");
    assert_eq!(
        e.to_string(),
        "line 1, column 23: expected ',', AS or FROM, found 'WHERE'"
    );

    let e = err("SELECT temp AS t WHERE temp > 5");
    assert_eq!(
        e.to_string(),
        "line 1, column 18: expected ',' or FROM, found 'WHERE'"
    );

    let e = err("SELECT temp\nFROM devices/+/telemetry");
    assert_eq!((e.line, e.column), (2, 6));
    assert!(e.expected[0].contains("quoted topic filter"), "{e}");

    let e = err("SELECT * FROM 'a' WHERE temp >");
    assert_eq!(
        e.to_string(),
        "line 1, column 31: expected expression, found end of input"
    );

    let e = err("SELECT * FROM 'a' WHERE temp > 5 temp");
    assert_eq!(e.column, 34);
    assert_eq!(e.expected, ["an operator", "end of input"]);

    let e = err("FROM 'a'");
    assert_eq!(
        e.to_string(),
        "line 1, column 1: expected SELECT, found 'FROM'"
    );

    let e = err("SELECT (a + 1 FROM 'a'");
    assert_eq!(e.expected, ["')'"]);
    assert_eq!(e.found, "'FROM'");

    // The unclosed string swallows "FROM ", so the error is the last quote's string.
    let e = err("SELECT 'abc FROM 'a'");
    assert_eq!(e.found, "end of input");
    assert!(e.expected[0].contains("starts at offset 19"), "{e}");
    let e = err("SELECT 'abc");
    assert_eq!(e.found, "end of input");
    assert!(e.expected[0].contains("closing '"), "{e}");

    let e = err("SELECT a # b FROM 'x'");
    assert_eq!((e.column, e.found.as_str()), (10, "'#'"));

    let e = err("SELECT CASE WHEN a THEN 1 FROM 'x'");
    assert_eq!(e.expected, ["WHEN", "ELSE", "END"]);

    let e = err("SELECT a IS 3 FROM 'x'");
    assert_eq!(e.expected, ["NOT", "NULL"]);

    let e = err("SELECT 12abc FROM 'x'");
    assert_eq!((e.column, e.found.as_str()), (8, "'12abc'"));
}

#[test]
fn validation_errors() {
    let e = err("SELECT frobnicate(temp) FROM 'a'");
    assert_eq!((e.column, e.found.as_str()), (8, "'frobnicate'"));
    assert!(e.expected[0].contains("known function"));

    let e = err("SELECT round(1, 2, 3) FROM 'a'");
    assert_eq!(e.column, 8);
    assert_eq!(e.expected, ["1 to 2 argument(s) for round(), got 3"]);

    let e = err("SELECT distance(1, 2) FROM 'a'");
    assert_eq!(e.expected, ["4 argument(s) for distance(), got 2"]);

    let e = err("SELECT now(1) FROM 'a'");
    assert_eq!(e.expected, ["0 argument(s) for now(), got 1"]);

    let e = err("SELECT * FROM 'devices/#/x'");
    assert_eq!(e.column, 15);
    assert!(e.expected[0].contains("valid MQTT topic filter"), "{e}");

    let e = err("SELECT avg(temp, '5x') FROM 'a'");
    assert_eq!((e.column, e.found.as_str()), (18, "''5x''"));
    assert!(e.expected[0].contains("window literal"));
    assert!(
        parse("SELECT avg(temp, '2d') FROM 'a'").is_err(),
        "longer than a day"
    );
    assert!(
        parse("SELECT avg(temp, '500ms') FROM 'a'").is_err(),
        "shorter than a second"
    );
    assert!(
        parse("SELECT avg(temp, window) FROM 'a'").is_err(),
        "window must be a literal"
    );
    let e = err("SELECT avg(temp) FROM 'a'");
    assert!(
        e.expected[0].starts_with("2 arguments for avg(value, 'window')"),
        "{e}"
    );

    let e = err("SELECT avg(max(t, '1m'), '5m') FROM 'a'");
    assert!(e.expected[0].contains("no aggregate inside"), "{e}");

    let e = err("SELECT point_in_polygon(lat, lon, '[[0,0],[1,1]]') FROM 'a'");
    assert!(e.expected[0].contains("3 distinct vertices"), "{e}");

    let e = err("SELECT format_time(timestamp, 'yyyy') FROM 'a'");
    assert!(e.expected[0].starts_with("a time format"), "{e}");

    let e = err("SELECT json_get(p, 'a..b') FROM 'a'");
    assert!(e.expected[0].starts_with("a JSON path"), "{e}");

    let e = err("SELECT topic(0) FROM 'a'");
    assert!(e.expected[0].contains("from 1"), "{e}");

    let e = err("SELECT a, b AS a FROM 'x'");
    assert_eq!(e.column, 11);
    assert!(e.expected[0].contains("distinct output name"), "{e}");

    let e = err("SELECT a AS from FROM 'x'");
    assert_eq!(e.expected, ["an output name after AS"]);
}

#[test]
fn hostile_input_is_an_error_not_a_crash() {
    let deep = format!("SELECT {}1{} FROM 'a'", "(".repeat(500), ")".repeat(500));
    assert!(err(&deep).expected[0].contains("nested"));
    let nots = format!("SELECT * FROM 'a' WHERE {} true", "NOT ".repeat(500));
    assert!(parse(&nots).is_err());
    let negs = format!("SELECT {}1 FROM 'a'", "-".repeat(3) + &"- ".repeat(500));
    assert!(parse(&negs).is_err());
    let huge = "x".repeat(crate::lexer::MAX_RULE_LEN + 1);
    assert!(err(&huge).expected[0].contains("at most"));
    // Unicode columns count characters.
    let e = err("SELECT 'héllo' % FROM 'a'");
    assert_eq!(e.column, 18);
    assert!(parse("SELECT 99999999999999999999 AS big FROM 'a'").is_ok());
    assert!(parse("SELECT 1e999 FROM 'a'").is_err());
}
