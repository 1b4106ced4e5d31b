//! The telemetry surface beyond one device's JSON: InfluxDB line protocol writes, streamed CSV
//! export, fleet queries (latest values and aggregates across devices), chart downsampling.
//! In-process (`Router::oneshot`) on real stores in a temporary directory.

mod support;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;
use wulian_registry::{NewDevice, Registry};
use wulian_tsdb::{SeriesKey, Tsdb, Value as TsValue, WriteEntry};

struct Api {
    router: Router,
    admin: String,
    registry: Arc<Registry>,
    tsdb: Tsdb,
    _dir: tempfile::TempDir,
}

async fn start() -> Api {
    let p = support::platform();
    Api {
        router: p.router,
        admin: p.admin,
        registry: p.registry,
        tsdb: p.tsdb,
        _dir: p.dir,
    }
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    text: String,
    json: Value,
}

impl Api {
    async fn send(&self, method: &str, uri: &str, headers: &[(&str, &str)], body: &str) -> Answer {
        let mut req = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Body::from(body.to_string())).unwrap();
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8(bytes.to_vec()).unwrap();
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Answer {
            status,
            headers,
            text,
            json,
        }
    }

    async fn get(&self, uri: &str, key: &str) -> Answer {
        self.send(
            "GET",
            uri,
            &[("authorization", &format!("Bearer {key}"))],
            "",
        )
        .await
    }

    async fn post_json(&self, uri: &str, key: &str, body: Value) -> Answer {
        self.send(
            "POST",
            uri,
            &[
                ("authorization", &format!("Bearer {key}")),
                ("content-type", "application/json"),
            ],
            &body.to_string(),
        )
        .await
    }

    /// `POST /api/v2/write` with `Authorization: Token`.
    async fn write_v2(&self, query: &str, key: &str, body: &str) -> Answer {
        self.send(
            "POST",
            &format!("/api/v2/write?org=acme&bucket=b{query}"),
            &[("authorization", &format!("Token {key}"))],
            body,
        )
        .await
    }

    /// A new tenant with a key of `scope`; returns the key.
    async fn tenant(&self, id: &str, scope: &str) -> String {
        let a = self
            .post_json(
                "/api/v1/tenants",
                &self.admin,
                json!({"id": id, "name": id}),
            )
            .await;
        assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
        self.key(id, scope).await
    }

    async fn key(&self, tenant: &str, scope: &str) -> String {
        let a = self
            .post_json(
                "/api/v1/api-keys",
                &self.admin,
                json!({"name": scope, "scope": scope, "tenant": tenant}),
            )
            .await;
        assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
        a.json["secret"].as_str().unwrap().to_string()
    }

    async fn device(&self, key: &str, id: &str, profile: &str, labels: Value) {
        let a = self
            .post_json(
                "/api/v1/devices",
                key,
                json!({"id": id, "profile": profile, "labels": labels}),
            )
            .await;
        assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
    }
}

fn assert_problem(a: &Answer, status: StatusCode, code: &str) {
    assert_eq!(a.status, status, "{}", a.text);
    assert_eq!(
        a.headers.get("content-type").unwrap(),
        "application/problem+json"
    );
    assert_eq!(a.json["code"], code, "{}", a.text);
}

async fn write(tsdb: &Tsdb, tenant: &str, device: &str, key: &str, points: &[(i64, TsValue)]) {
    tsdb.write(
        points
            .iter()
            .map(|(ts, v)| WriteEntry {
                series: SeriesKey::new(tenant, device, key),
                ts: *ts,
                value: v.clone(),
            })
            .collect(),
    )
    .await
    .unwrap();
}

const T0: i64 = 1_700_000_000_000;

#[tokio::test]
async fn line_protocol_v2_telegraf_body() {
    let api = start().await;
    let key = api.tenant("acme", "read_write").await;
    api.device(&key, "gw-1", "gw", json!({})).await;
    api.device(&key, "gw-2", "gw", json!({})).await;
    // What Telegraf's outputs.influxdb_v2 sends (global tag device_id), plus the other forms.
    let body = "\
cpu,cpu=cpu-total,device_id=gw-1,host=gw-1 usage_idle=98.5,usage_user=1.25 1700000000000000000
mem,device_id=gw-1,host=gw-1 total=8589934592i,available_percent=61.2,free=123u 1700000000000000000
system,device_id=gw-1 uptime=3600i,n_cpus=2i,load1=0.12 1700000001000000000
# a comment, and a blank line

telemetry,device=gw-2 temp=21.5,ok=true,state=\"idle, \\\"ready\\\"\" 1700000000500000000
net,device_id=gw-2,if\\=name=eth\\ 0,device=ignored bytes_sent=42i 1700000000000000000
";
    let a = api.write_v2("", &key, body).await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{}", a.text);

    let a = api
        .get(
            &format!(
                "/api/v1/devices/gw-1/telemetry?from={T0}&to={}",
                T0 + 10_000
            ),
            &key,
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    let s = &a.json["series"];
    assert_eq!(s["cpu.usage_idle"], json!([{"ts": T0, "value": 98.5}]));
    assert_eq!(s["mem.total"][0]["value"], json!(8_589_934_592_i64));
    assert_eq!(s["mem.free"][0]["value"], json!(123));
    assert_eq!(
        s["system.uptime"],
        json!([{"ts": T0 + 1000, "value": 3600}])
    );
    let latest = api.get("/api/v1/devices/gw-2/telemetry/latest", &key).await;
    let v = &latest.json["values"];
    assert_eq!(v["temp"], json!({"ts": T0 + 500, "value": 21.5}));
    assert_eq!(v["ok"]["value"], json!(true));
    assert_eq!(v["state"]["value"], json!("idle, \"ready\""));
    assert_eq!(v["net.bytes_sent"], json!({"ts": T0, "value": 42}));
}

#[tokio::test]
async fn line_protocol_precisions_and_receive_time() {
    let api = start().await;
    let key = api.tenant("acme", "read_write").await;
    api.device(&key, "d1", "p", json!({})).await;
    for (precision, ts) in [
        ("ns", "1700000000000000000"),
        ("us", "1700000000001000"),
        ("ms", "1700000000002"),
        ("s", "1700000003"),
    ] {
        let a = api
            .write_v2(
                &format!("&precision={precision}"),
                &key,
                &format!("telemetry,device_id=d1 v=1 {ts}\n"),
            )
            .await;
        assert_eq!(a.status, StatusCode::NO_CONTENT, "{precision}: {}", a.text);
    }
    let before = wulian_common::time::now_ms();
    let a = api.write_v2("", &key, "telemetry,device_id=d1 w=1\n").await;
    assert_eq!(a.status, StatusCode::NO_CONTENT);
    let a = api
        .get(
            &format!(
                "/api/v1/devices/d1/telemetry?keys=v&from={T0}&to={}",
                T0 + 10_000
            ),
            &key,
        )
        .await;
    let ts: Vec<i64> = a.json["series"]["v"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["ts"].as_i64().unwrap())
        .collect();
    assert_eq!(ts, vec![T0, T0 + 1, T0 + 2, T0 + 3000]);
    let latest = api.get("/api/v1/devices/d1/telemetry/latest", &key).await;
    let w = latest.json["values"]["w"]["ts"].as_i64().unwrap();
    assert!(w >= before && w <= wulian_common::time::now_ms());
}

#[tokio::test]
async fn line_protocol_v1_auth_forms() {
    let api = start().await;
    let key = api.tenant("acme", "read_write").await;
    api.device(&key, "d1", "p", json!({})).await;
    let line = "telemetry,device_id=d1 v=1 1700000000000\n";
    let a = api
        .send(
            "POST",
            &format!("/write?db=telegraf&rp=&precision=ms&u=telegraf&p={key}"),
            &[],
            line,
        )
        .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{}", a.text);
    let basic = base64(&format!("telegraf:{key}"));
    let a = api
        .send(
            "POST",
            "/write?db=telegraf&precision=ms",
            &[("authorization", &format!("Basic {basic}"))],
            "telemetry,device_id=d1 v=2 1700000000001\n",
        )
        .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{}", a.text);
    let a = api
        .send(
            "POST",
            "/api/v2/write?precision=ms",
            &[("authorization", &format!("Bearer {key}"))],
            "telemetry,device_id=d1 v=3 1700000000002\n",
        )
        .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{}", a.text);
    let a = api
        .get(
            &format!(
                "/api/v1/devices/d1/telemetry?keys=v&from={T0}&to={}",
                T0 + 10
            ),
            &key,
        )
        .await;
    assert_eq!(a.json["series"]["v"].as_array().unwrap().len(), 3);

    // Credentials: none, wrong, read-only.
    let a = api.send("POST", "/write?db=x", &[], line).await;
    assert_problem(&a, StatusCode::UNAUTHORIZED, "missing_credentials");
    let a = api.send("POST", "/write?db=x&p=wlk_nope", &[], line).await;
    assert_problem(&a, StatusCode::UNAUTHORIZED, "invalid_credentials");
    let a = api
        .send(
            "POST",
            "/api/v2/write",
            &[("authorization", "Token wlk_nope")],
            line,
        )
        .await;
    assert_problem(&a, StatusCode::UNAUTHORIZED, "invalid_credentials");
    let ro = api.key("acme", "read_only").await;
    let a = api.write_v2("", &ro, line).await;
    assert_problem(&a, StatusCode::FORBIDDEN, "forbidden");
}

fn base64(s: &str) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in s.as_bytes().chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[tokio::test]
async fn line_protocol_errors_store_nothing() {
    let api = start().await;
    let key = api.tenant("acme", "read_write").await;
    api.device(&key, "d1", "p", json!({})).await;
    let other = api.tenant("other", "read_write").await;
    api.device(&other, "theirs", "p", json!({})).await;
    let good = "telemetry,device_id=d1 a=1 1700000000000000000\n";
    for (body, status, code, needle) in [
        (
            "telemetry,device_id=d1 b=\n",
            StatusCode::BAD_REQUEST,
            "invalid_line_protocol",
            "line 2: missing value",
        ),
        (
            "telemetry,device_id=d1 b=1 x\n",
            StatusCode::BAD_REQUEST,
            "invalid_line_protocol",
            "line 2: invalid timestamp",
        ),
        (
            "telemetry,host=h b=1\n",
            StatusCode::BAD_REQUEST,
            "invalid_line_protocol",
            "line 2: no device_id",
        ),
        (
            "telemetry,device_id=d1 b=1 -5\n",
            StatusCode::BAD_REQUEST,
            "invalid_line_protocol",
            "line 2: timestamp -5 is out of range",
        ),
        (
            "telemetry,device_id=d1 b=18446744073709551615u\n",
            StatusCode::BAD_REQUEST,
            "invalid_line_protocol",
            "line 2: unsigned",
        ),
        (
            "bad\\ name,device_id=d1 b=1\n",
            StatusCode::BAD_REQUEST,
            "invalid_line_protocol",
            "line 2: series key",
        ),
        (
            "telemetry,device_id=ghost b=1\n",
            StatusCode::BAD_REQUEST,
            "unknown_device",
            "line 2: device \"ghost\" not found",
        ),
        (
            "telemetry,device_id=theirs b=1\n",
            StatusCode::BAD_REQUEST,
            "unknown_device",
            "line 2: device \"theirs\" not found",
        ),
        (
            "telemetry,device_id=d1 b=1\ntelemetry,device_id=d1 b=\"s\"\n",
            StatusCode::UNPROCESSABLE_ENTITY,
            "type_mismatch",
            "line 3",
        ),
    ] {
        let a = api.write_v2("", &key, &format!("{good}{body}")).await;
        assert_problem(&a, status, code);
        let detail = a.json["detail"].as_str().unwrap();
        assert!(detail.contains(needle), "{body:?}: {detail}");
    }
    // A value that does not fit a stored series names its line too.
    let a = api.write_v2("", &key, good).await;
    assert_eq!(a.status, StatusCode::NO_CONTENT);
    let a = api
        .write_v2("", &key, "\n\ntelemetry,device_id=d1 a=\"text\"\n")
        .await;
    assert_problem(&a, StatusCode::UNPROCESSABLE_ENTITY, "type_mismatch");
    assert!(a.json["detail"].as_str().unwrap().contains("line 3"));
    // Integers into a float series are fine, as for JSON.
    let a = api
        .write_v2(
            "",
            &key,
            "telemetry,device_id=d1 a=2i 1700000000001000000\n",
        )
        .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{}", a.text);
    // Nothing of the refused requests was stored: only `a` exists.
    let latest = api.get("/api/v1/devices/d1/telemetry/latest", &key).await;
    assert_eq!(
        latest.json["values"],
        json!({"a": {"ts": T0 + 1, "value": 2.0}})
    );
    let theirs = api
        .get("/api/v1/devices/theirs/telemetry/latest", &other)
        .await;
    assert_eq!(theirs.json["values"], json!({}));

    let a = api.write_v2("&precision=fortnights", &key, good).await;
    assert_problem(&a, StatusCode::BAD_REQUEST, "invalid_query");
    let a = api
        .send(
            "POST",
            "/api/v2/write",
            &[
                ("authorization", &format!("Token {key}")),
                ("content-encoding", "gzip"),
            ],
            good,
        )
        .await;
    assert_problem(
        &a,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    );
    let big = good.repeat(64 * 1024 / good.len() + 1);
    let a = api.write_v2("", &key, &big).await;
    assert_problem(&a, StatusCode::PAYLOAD_TOO_LARGE, "body_too_large");
    let a = api.write_v2("", &key, "").await;
    assert_eq!(a.status, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn csv_export_streams_every_point() {
    let api = start().await;
    let key = api.tenant("acme", "read_only").await;
    let rw = api.key("acme", "read_write").await;
    api.device(&rw, "d1", "p", json!({})).await;
    // More than two chunks of one key, and a string key that needs quoting.
    let n = 12_345;
    let points: Vec<(i64, TsValue)> = (0..n)
        .map(|i| (T0 + i * 1000, TsValue::F64(i as f64 / 4.0)))
        .collect();
    write(&api.tsdb, "acme", "d1", "temp", &points).await;
    write(
        &api.tsdb,
        "acme",
        "d1",
        "note",
        &[
            (T0, TsValue::Str("a, \"b\"".into())),
            (T0 + 5, TsValue::Str("plain".into())),
        ],
    )
    .await;
    write(
        &api.tsdb,
        "acme",
        "d1",
        "on",
        &[(T0 + 1, TsValue::Bool(true))],
    )
    .await;

    let a = api
        .get("/api/v1/devices/d1/telemetry/export?format=csv", &key)
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    assert_eq!(a.headers["content-type"], "text/csv; charset=utf-8");
    assert_eq!(
        a.headers["content-disposition"],
        "attachment; filename=\"d1-telemetry.csv\""
    );
    let lines: Vec<&str> = a.text.lines().collect();
    assert_eq!(lines[0], "time,ts_ms,key,value");
    assert_eq!(lines.len(), 1 + 2 + 1 + n as usize);
    // Keys in order (note, on, temp), each ascending.
    assert_eq!(
        lines[1],
        "2023-11-14T22:13:20.000Z,1700000000000,note,\"a, \"\"b\"\"\""
    );
    assert_eq!(
        lines[2],
        "2023-11-14T22:13:20.005Z,1700000000005,note,plain"
    );
    assert_eq!(lines[3], "2023-11-14T22:13:20.001Z,1700000000001,on,true");
    assert_eq!(lines[4], "2023-11-14T22:13:20.000Z,1700000000000,temp,0");
    assert_eq!(lines[5], "2023-11-14T22:13:21.000Z,1700000001000,temp,0.25");
    let temps: Vec<i64> = lines[4..]
        .iter()
        .map(|l| l.split(',').nth(1).unwrap().parse().unwrap())
        .collect();
    assert!(
        temps.windows(2).all(|w| w[1] - w[0] == 1000),
        "no gaps, no repeats"
    );

    // keys and a range; `to` exclusive.
    let a = api
        .get(
            &format!(
                "/api/v1/devices/d1/telemetry/export?keys=temp&from={}&to={}",
                T0 + 1000,
                T0 + 4000
            ),
            &key,
        )
        .await;
    assert_eq!(a.text.lines().count(), 1 + 3, "{}", a.text);

    let a = api
        .get("/api/v1/devices/d1/telemetry/export?format=xml", &key)
        .await;
    assert_problem(&a, StatusCode::BAD_REQUEST, "invalid_query");
    let a = api
        .get("/api/v1/devices/d1/telemetry/export?from=5&to=5", &key)
        .await;
    assert_problem(&a, StatusCode::BAD_REQUEST, "invalid_range");
    let other = api.tenant("other", "admin").await;
    let a = api.get("/api/v1/devices/d1/telemetry/export", &other).await;
    assert_problem(&a, StatusCode::NOT_FOUND, "device_not_found");
}

#[tokio::test]
async fn fleet_latest_by_ids_profile_and_label() {
    let api = start().await;
    let key = api.tenant("acme", "admin").await;
    api.device(&key, "a", "meter", json!({"site": "north"}))
        .await;
    api.device(&key, "b", "meter", json!({"site": "south"}))
        .await;
    api.device(&key, "c", "lock", json!({"site": "north"}))
        .await;
    let other = api.tenant("other", "admin").await;
    api.device(&other, "x", "meter", json!({"site": "north"}))
        .await;
    for (d, tenant) in [("a", "acme"), ("b", "acme"), ("c", "acme"), ("x", "other")] {
        write(
            &api.tsdb,
            tenant,
            d,
            "temp",
            &[(T0, TsValue::F64(1.0)), (T0 + 1, TsValue::F64(2.0))],
        )
        .await;
        write(&api.tsdb, tenant, d, "rssi", &[(T0, TsValue::I64(-70))]).await;
    }
    let a = api
        .get("/api/v1/telemetry/latest?profile=meter", &key)
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    assert_eq!(a.json["device_count"], 2);
    assert_eq!(
        a.json["devices"]["a"],
        json!({"rssi": {"ts": T0, "value": -70}, "temp": {"ts": T0 + 1, "value": 2.0}})
    );
    let a = api
        .get("/api/v1/telemetry/latest?label=site:north&keys=temp", &key)
        .await;
    let devices: Vec<&String> = a.json["devices"].as_object().unwrap().keys().collect();
    assert_eq!(devices, ["a", "c"]);
    assert_eq!(
        a.json["devices"]["c"],
        json!({"temp": {"ts": T0 + 1, "value": 2.0}})
    );
    let a = api
        .get(
            "/api/v1/telemetry/latest?profile=meter&label=site:south",
            &key,
        )
        .await;
    assert_eq!(a.json["device_count"], 1);
    let a = api
        .get("/api/v1/telemetry/latest?devices=c,a,c", &key)
        .await;
    assert_eq!(a.json["device_count"], 2);
    // Another tenant's device is missing, whichever way it is asked for.
    let a = api.get("/api/v1/telemetry/latest?devices=a,x", &key).await;
    assert_problem(&a, StatusCode::NOT_FOUND, "device_not_found");
    let a = api
        .get("/api/v1/telemetry/latest?profile=meter", &other)
        .await;
    assert_eq!(a.json["device_count"], 1);
    assert!(a.json["devices"]["x"].is_object());

    let a = api.get("/api/v1/telemetry/latest", &key).await;
    assert_problem(&a, StatusCode::BAD_REQUEST, "missing_parameter");
    let a = api
        .get("/api/v1/telemetry/latest?devices=a&profile=meter", &key)
        .await;
    assert_problem(&a, StatusCode::BAD_REQUEST, "invalid_query");
    let a = api
        .get("/api/v1/telemetry/latest?label=nocolon", &key)
        .await;
    assert_problem(&a, StatusCode::BAD_REQUEST, "invalid_query");
    let a = api.get("/api/v1/telemetry/latest?profil=meter", &key).await;
    assert_problem(&a, StatusCode::BAD_REQUEST, "unknown_parameter");
}

/// 10,000 devices with 3 keys each; times `GET /telemetry/latest?profile=` (printed, not
/// asserted: `cargo test -p wulian-api --test telemetry_more fleet_latest_10k -- --nocapture`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_latest_10k_devices() {
    let api = start().await;
    let key = api.tenant("acme", "read_only").await;
    let n = 10_000;
    let started = Instant::now();
    let registry = Arc::clone(&api.registry);
    tokio::task::spawn_blocking(move || {
        for i in 0..n {
            let new = NewDevice {
                id: format!("m-{i:05}"),
                name: None,
                profile: Some("meter".into()),
                labels: [("site".to_string(), format!("s{}", i % 10))].into(),
                attributes: None,
                disabled: false,
            };
            registry.create_device("acme", &new).unwrap();
        }
    })
    .await
    .unwrap();
    let mut entries = Vec::new();
    for i in 0..n {
        let device = format!("m-{i:05}");
        for (k, v) in [
            ("temp", TsValue::F64(20.0 + i as f64 / 100.0)),
            ("rssi", TsValue::I64(-60 - i % 30)),
            ("on", TsValue::Bool(i % 2 == 0)),
        ] {
            entries.push(WriteEntry {
                series: SeriesKey::new("acme", device.as_str(), k),
                ts: T0 + i,
                value: v,
            });
        }
    }
    api.tsdb.write(entries).await.unwrap();
    eprintln!("setup: {n} devices in {:?}", started.elapsed());

    let mut times = Vec::new();
    for _ in 0..3 {
        // Timed up to the last byte of the body, before the test parses it.
        let t = Instant::now();
        let req = Request::get("/api/v1/telemetry/latest?profile=meter")
            .header("authorization", format!("Bearer {key}"))
            .body(Body::empty())
            .unwrap();
        let resp = api.router.clone().oneshot(req).await.unwrap();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        times.push((t.elapsed(), bytes.len()));
        let a = api
            .get("/api/v1/telemetry/latest?profile=meter", &key)
            .await;
        assert_eq!(a.status, StatusCode::OK);
        assert_eq!(a.json["device_count"], n);
        assert_eq!(
            a.json["devices"]["m-09999"]["rssi"]["value"],
            -60 - 9999 % 30
        );
    }
    let t = Instant::now();
    let a = api
        .get("/api/v1/telemetry/latest?label=site:s3&keys=temp", &key)
        .await;
    let label_time = t.elapsed();
    assert_eq!(a.json["device_count"], 1000);
    // Where the time goes: the registry listing vs. the last-value cache.
    let t = Instant::now();
    let registry = Arc::clone(&api.registry);
    let ids = tokio::task::spawn_blocking(move || {
        let mut q = wulian_registry::DeviceQuery {
            limit: 1000,
            profile: Some("meter".into()),
            ..Default::default()
        };
        let mut ids = Vec::new();
        loop {
            let page = registry.list_devices("acme", &q).unwrap();
            ids.extend(page.devices.into_iter().map(|d| d.id));
            match page.next_cursor {
                Some(c) => q.cursor = Some(c),
                None => break ids,
            }
        }
    })
    .await
    .unwrap();
    let listing = t.elapsed();
    let t = Instant::now();
    let values: usize = ids.iter().map(|id| api.tsdb.latest("acme", id).len()).sum();
    let cache = t.elapsed();
    assert_eq!(values, 3 * n as usize);
    eprintln!(
        "fleet latest, {n} devices x 3 keys (profile=), (time, body bytes): {times:?} (registry listing {listing:?}, \
         last-value cache {cache:?}); 1,000 devices by label, 1 key: {label_time:?}"
    );
}

#[tokio::test]
async fn fleet_aggregates_per_device_and_merged() {
    let api = start().await;
    let key = api.tenant("acme", "read_only").await;
    let rw = api.key("acme", "read_write").await;
    api.device(&rw, "a", "meter", json!({})).await;
    api.device(&rw, "b", "meter", json!({})).await;
    api.device(&rw, "c", "lock", json!({})).await;
    // Bucket 0 (T0..T0+60s): a has 1, 3; b has 10. Bucket 2: b has 7. Bucket 1 is empty.
    write(
        &api.tsdb,
        "acme",
        "a",
        "temp",
        &[
            (T0 + 1000, TsValue::F64(1.0)),
            (T0 + 2000, TsValue::F64(3.0)),
        ],
    )
    .await;
    write(
        &api.tsdb,
        "acme",
        "b",
        "temp",
        &[
            (T0 + 500, TsValue::F64(10.0)),
            (T0 + 121_000, TsValue::F64(7.0)),
        ],
    )
    .await;
    write(
        &api.tsdb,
        "acme",
        "b",
        "mode",
        &[(T0, TsValue::Str("eco".into()))],
    )
    .await;
    let t0 = T0 - T0 % 60_000; // bucket alignment
    let base = format!(
        "/api/v1/telemetry?profile=meter&keys=temp&from={t0}&to={}&interval=60000",
        t0 + 180_000
    );

    let a = api.get(&format!("{base}&agg=avg&group=merged"), &key).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    assert_eq!(a.json["device_count"], 2);
    assert_eq!(a.json["group"], "merged");
    let temp = &a.json["series"]["temp"];
    let shift = T0 - t0;
    assert!(shift + 2000 < 60_000, "the test's points share bucket 0");
    assert_eq!(
        temp[0]["value"].as_f64().unwrap(),
        14.0 / 3.0,
        "sum/count, not avg of avgs"
    );
    assert_eq!(temp[0]["count"], 3);
    assert_eq!(
        temp[1],
        json!({"ts": t0 + 120_000, "value": 7.0, "count": 1})
    );
    assert_eq!(temp.as_array().unwrap().len(), 2);

    let a = api
        .get(&format!("{base}&agg=first&group=merged"), &key)
        .await;
    assert_eq!(a.json["series"]["temp"][0]["value"], 10.0);
    let a = api
        .get(&format!("{base}&agg=max&group=merged&fill=null"), &key)
        .await;
    assert_eq!(
        a.json["series"]["temp"],
        json!([
            {"ts": t0, "value": 10.0, "count": 3},
            {"ts": t0 + 60_000, "value": null, "count": 0},
            {"ts": t0 + 120_000, "value": 7.0, "count": 1},
        ])
    );
    let a = api
        .get(&format!("{base}&agg=sum&group=merged&fill=previous"), &key)
        .await;
    assert_eq!(a.json["series"]["temp"][1]["value"], 14.0);
    let a = api
        .get(&format!("{base}&agg=count&group=merged&fill=zero"), &key)
        .await;
    assert_eq!(a.json["series"]["temp"][1]["value"], 0);

    let a = api.get(&format!("{base}&agg=avg"), &key).await;
    assert_eq!(a.json["group"], "device");
    assert_eq!(
        a.json["devices"]["a"]["temp"],
        json!([{"ts": t0, "value": 2.0, "count": 2}])
    );
    assert_eq!(a.json["devices"]["b"]["temp"][0]["value"], 10.0);

    // All keys of each device; avg of a string key is refused.
    let all = format!(
        "/api/v1/telemetry?devices=a,b&from={t0}&to={}&interval=60000",
        t0 + 180_000
    );
    let a = api.get(&format!("{all}&agg=last"), &key).await;
    assert_eq!(a.json["devices"]["b"]["mode"][0]["value"], "eco");
    let a = api.get(&format!("{all}&agg=avg"), &key).await;
    assert_problem(&a, StatusCode::BAD_REQUEST, "not_numeric");

    for (query, code) in [
        ("profile=meter", "missing_parameter"),
        ("profile=meter&agg=avg", "missing_parameter"),
        (
            "profile=meter&agg=avg&interval=1000&group=both",
            "invalid_query",
        ),
        (
            "profile=meter&agg=avg&interval=1000&fill=linear",
            "invalid_query",
        ),
        (
            "profile=meter&agg=avg&interval=1000&max_points=5",
            "invalid_query",
        ),
        ("profile=meter&agg=avg&interval=1", "too_many_buckets"),
        ("profile=meter&max_points=0", "invalid_query"),
    ] {
        let a = api.get(&format!("/api/v1/telemetry?{query}"), &key).await;
        assert_problem(&a, StatusCode::BAD_REQUEST, code);
    }
}

#[tokio::test]
async fn max_points_downsamples_a_30_day_chart() {
    let api = start().await;
    let key = api.tenant("acme", "admin").await;
    api.device(&key, "d1", "meter", json!({})).await;
    let day = 86_400_000;
    let from = T0 + 123;
    let to = from + 30 * day;
    // One point every 10 minutes for 30 days.
    let points: Vec<(i64, TsValue)> = (0..30 * 144)
        .map(|i| (from + i * 600_000, TsValue::F64((i % 100) as f64)))
        .collect();
    write(&api.tsdb, "acme", "d1", "temp", &points).await;
    for n in [1, 7, 100, 500, 1000] {
        let a = api
            .get(
                &format!("/api/v1/devices/d1/telemetry?from={from}&to={to}&max_points={n}"),
                &key,
            )
            .await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.text);
        assert_eq!(a.json["agg"], "avg");
        let interval = a.json["interval"].as_i64().unwrap();
        assert_eq!(interval % 1000, 0);
        assert!(interval >= 30 * day / n);
        let got = a.json["series"]["temp"].as_array().unwrap();
        assert!(got.len() as i64 <= n, "{n}: {}", got.len());
        let count: u64 = got.iter().map(|p| p["count"].as_u64().unwrap()).sum();
        assert_eq!(count, 30 * 144);
        let a = api
            .get(
                &format!("/api/v1/telemetry?devices=d1&from={from}&to={to}&max_points={n}&agg=max&group=merged&fill=null"),
                &key,
            )
            .await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.text);
        assert!(a.json["series"]["temp"].as_array().unwrap().len() as i64 <= n);
    }
    let a = api
        .get(
            &format!("/api/v1/devices/d1/telemetry?from={from}&to={to}&max_points=10&limit=5"),
            &key,
        )
        .await;
    assert_problem(&a, StatusCode::BAD_REQUEST, "invalid_query");
}

#[tokio::test]
async fn openapi_lists_the_new_endpoints() {
    let api = start().await;
    let a = api.send("GET", "/api/v1/openapi.json", &[], "").await;
    for path in [
        "/api/v2/write",
        "/write",
        "/api/v1/devices/{id}/telemetry/export",
        "/api/v1/telemetry",
        "/api/v1/telemetry/latest",
    ] {
        assert!(a.json["paths"][path].is_object(), "openapi lacks {path}");
    }
}
