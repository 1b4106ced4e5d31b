//! Telemetry export beyond plain CSV: Parquet (read back with the parquet crate), gzip (as a
//! file and as a transfer encoding), and the group export across devices. In-process
//! (`Router::oneshot`) on real stores in a temporary directory.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use axum::routing::get;
use bytes::Bytes;
use http_body_util::BodyExt;
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::Field;
use serde_json::{Value, json};
use tower::ServiceExt;
use wulian_api::AppState;
use wulian_api::routes::export::{self, CHUNK_POINTS};
use wulian_broker::{Broker, BrokerConfig};
use wulian_ingest::{CommandService, DeviceAuthenticator, Pipeline};
use wulian_tsdb::{SeriesKey, Tsdb, Value as TsValue, WriteEntry};

mod support;

const T0: i64 = 1_700_000_000_000;
/// Every request of these tests finishes well within this.
const TIMEOUT: Duration = Duration::from_secs(60);

struct Api {
    router: Router,
    /// The group export mounted on its own, so these tests do not depend on where the main
    /// router mounts it.
    group: Router,
    admin: String,
    tsdb: Tsdb,
    _dir: tempfile::TempDir,
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    /// Data frames the body arrived in.
    frames: usize,
}

impl Answer {
    fn text(&self) -> String {
        String::from_utf8(self.body.to_vec()).unwrap()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

fn start() -> Api {
    let p = support::platform();
    // A state over the same registry and store for the group export; the pipeline, broker
    // and command service are required by `AppState` but unused by the export.
    let pipeline = Pipeline::new(p.tsdb.clone());
    let broker = Broker::new(
        BrokerConfig::default(),
        DeviceAuthenticator::new(Arc::clone(&p.registry)),
        pipeline.clone(),
    );
    let state = AppState {
        registry: Arc::clone(&p.registry),
        tsdb: p.tsdb.clone(),
        commands: CommandService::new(Arc::clone(&p.registry), broker.clone()),
        pipeline,
        broker,
    };
    let group = Router::new()
        .route("/api/v1/telemetry/export", get(export::export_group))
        .with_state(state);
    Api {
        router: p.router,
        group,
        admin: p.admin,
        tsdb: p.tsdb,
        _dir: p.dir,
    }
}

impl Api {
    async fn send(
        &self,
        router: &Router,
        method: &str,
        uri: &str,
        headers: &[(&str, &str)],
        body: Value,
    ) -> Answer {
        let mut req = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if !body.is_null() {
            req = req.header("content-type", "application/json");
        }
        let body = if body.is_null() {
            Body::empty()
        } else {
            Body::from(body.to_string())
        };
        let req = req.body(body).unwrap();
        let call = async {
            let resp = router.clone().oneshot(req).await.unwrap();
            let status = resp.status();
            let headers = resp.headers().clone();
            let mut body = resp.into_body();
            let (mut bytes, mut frames) = (Vec::new(), 0);
            while let Some(frame) = body.frame().await {
                if let Ok(data) = frame.unwrap().into_data() {
                    frames += 1;
                    bytes.extend_from_slice(&data);
                }
            }
            Answer {
                status,
                headers,
                body: Bytes::from(bytes),
                frames,
            }
        };
        tokio::time::timeout(TIMEOUT, call)
            .await
            .expect("request timed out")
    }

    async fn get(&self, uri: &str, key: &str, extra: &[(&str, &str)]) -> Answer {
        let auth = format!("Bearer {key}");
        let mut headers = vec![("authorization", auth.as_str())];
        headers.extend_from_slice(extra);
        let router = if uri.starts_with("/api/v1/telemetry/export") {
            &self.group
        } else {
            &self.router
        };
        self.send(router, "GET", uri, &headers, Value::Null).await
    }

    /// A new tenant with a key of `scope`; returns the key.
    async fn tenant(&self, id: &str, scope: &str) -> String {
        let auth = format!("Bearer {}", self.admin);
        let a = self
            .send(
                &self.router,
                "POST",
                "/api/v1/tenants",
                &[("authorization", &auth)],
                json!({"id": id, "name": id}),
            )
            .await;
        assert_eq!(a.status, StatusCode::CREATED, "{}", a.text());
        let a = self
            .send(
                &self.router,
                "POST",
                "/api/v1/api-keys",
                &[("authorization", &auth)],
                json!({"name": scope, "scope": scope, "tenant": id}),
            )
            .await;
        assert_eq!(a.status, StatusCode::CREATED, "{}", a.text());
        a.json()["secret"].as_str().unwrap().to_string()
    }

    async fn device(&self, key: &str, id: &str, labels: Value) {
        let a = self
            .send(
                &self.router,
                "POST",
                "/api/v1/devices",
                &[("authorization", &format!("Bearer {key}"))],
                json!({"id": id, "profile": "p", "labels": labels}),
            )
            .await;
        assert_eq!(a.status, StatusCode::CREATED, "{}", a.text());
    }

    async fn write(&self, device: &str, key: &str, points: &[(i64, TsValue)]) {
        self.tsdb
            .write(
                points
                    .iter()
                    .map(|(ts, v)| WriteEntry {
                        series: SeriesKey::new("acme", device, key),
                        ts: *ts,
                        value: v.clone(),
                    })
                    .collect(),
            )
            .await
            .unwrap();
    }
}

fn assert_problem(a: &Answer, status: StatusCode, code: &str) {
    assert_eq!(a.status, status, "{}", a.text());
    assert_eq!(a.json()["code"], code, "{}", a.text());
}

/// One exported row: device, key, ts, value.
type Row = (String, String, i64, TsValue);

/// Reads a Parquet body back with the parquet crate: the rows, and the number of row groups.
fn read_parquet(body: &Bytes) -> (Vec<Row>, usize) {
    let reader = SerializedFileReader::new(body.clone()).expect("a valid Parquet file");
    let groups = reader.metadata().num_row_groups();
    let schema: Vec<String> = reader
        .metadata()
        .file_metadata()
        .schema_descr()
        .columns()
        .iter()
        .map(|c| c.name().to_string())
        .collect();
    assert_eq!(
        schema,
        [
            "device_id",
            "key",
            "ts",
            "value_double",
            "value_int",
            "value_bool",
            "value_string"
        ]
    );
    let mut rows = Vec::new();
    for row in reader.get_row_iter(None).unwrap() {
        let row = row.unwrap();
        let fields: Vec<&Field> = row.get_column_iter().map(|(_, f)| f).collect();
        let text = |f: &Field| match f {
            Field::Str(s) => s.clone(),
            other => panic!("expected a string, got {other:?}"),
        };
        let ts = match fields[2] {
            Field::TimestampMillis(ms) => *ms,
            other => panic!("expected a timestamp, got {other:?}"),
        };
        let set: Vec<TsValue> = fields[3..]
            .iter()
            .filter_map(|f| match f {
                Field::Null => None,
                Field::Double(v) => Some(TsValue::F64(*v)),
                Field::Long(v) => Some(TsValue::I64(*v)),
                Field::Bool(v) => Some(TsValue::Bool(*v)),
                Field::Str(s) => Some(TsValue::Str(s.clone())),
                other => panic!("unexpected value field {other:?}"),
            })
            .collect();
        assert_eq!(set.len(), 1, "exactly one value column per row: {row:?}");
        rows.push((text(fields[0]), text(fields[1]), ts, set[0].clone()));
    }
    (rows, groups)
}

fn gunzip(body: &[u8]) -> String {
    use std::io::Read;
    let mut out = String::new();
    flate2::read::GzDecoder::new(body)
        .read_to_string(&mut out)
        .expect("a valid gzip stream");
    out
}

/// d1: more than two windows of floats, integers at the edges of i64, booleans, strings.
async fn sample(api: &Api) -> Vec<Row> {
    let n = 2 * CHUNK_POINTS as i64 + 345;
    let temps: Vec<(i64, TsValue)> = (0..n)
        .map(|i| (T0 + i * 1000, TsValue::F64(i as f64 / 4.0 - 100.0)))
        .collect();
    let counts = vec![
        (T0, TsValue::I64(i64::MIN)),
        (T0 + 1, TsValue::I64(i64::MAX)),
        (T0 + 2, TsValue::I64(9_007_199_254_740_993)),
    ];
    let ons = vec![(T0, TsValue::Bool(true)), (T0 + 7, TsValue::Bool(false))];
    let notes = vec![(T0 + 3, TsValue::Str("a, \"b\"\nc".into()))];
    api.write("d1", "temp", &temps).await;
    api.write("d1", "count", &counts).await;
    api.write("d1", "on", &ons).await;
    api.write("d1", "note", &notes).await;
    let mut rows = Vec::new();
    // Keys sorted, each ascending.
    for (key, points) in [
        ("count", &counts),
        ("note", &notes),
        ("on", &ons),
        ("temp", &temps),
    ] {
        for (ts, v) in points.iter() {
            rows.push(("d1".to_string(), key.to_string(), *ts, v.clone()));
        }
    }
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parquet_export_reads_back_value_for_value() {
    let api = start();
    let key = api.tenant("acme", "read_only").await;
    let rw = api.tenant_key("acme", "read_write").await;
    api.device(&rw, "d1", json!({})).await;
    let want = sample(&api).await;

    let a = api
        .get(
            "/api/v1/devices/d1/telemetry/export?format=parquet",
            &key,
            &[],
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!(a.headers["content-type"], "application/vnd.apache.parquet");
    assert_eq!(
        a.headers["content-disposition"],
        "attachment; filename=\"d1-telemetry.parquet\""
    );
    let (rows, groups) = read_parquet(&a.body);
    assert_eq!(rows, want);
    // Row groups of at least a window's rows: (count, note, on, temp's first window), temp's
    // second window, the rest.
    assert_eq!(groups, 3);
    assert!(a.frames >= groups, "streamed: {} frames", a.frames);

    // A range and a key list; an empty answer is still a valid file.
    let a = api
        .get(
            &format!(
                "/api/v1/devices/d1/telemetry/export?format=parquet&keys=temp,count&from={}&to={}",
                T0 + 1,
                T0 + 3000
            ),
            &key,
            &[],
        )
        .await;
    let (rows, _) = read_parquet(&a.body);
    let expected: Vec<Row> = want
        .iter()
        .filter(|r| (r.1 == "temp" || r.1 == "count") && r.2 > T0 && r.2 < T0 + 3000)
        .cloned()
        .collect();
    // Keys in the order asked for.
    let mut expected_ordered: Vec<Row> =
        expected.iter().filter(|r| r.1 == "temp").cloned().collect();
    expected_ordered.extend(expected.iter().filter(|r| r.1 == "count").cloned());
    assert_eq!(rows, expected_ordered);
    let a = api
        .get(
            "/api/v1/devices/d1/telemetry/export?format=parquet&keys=nothing",
            &key,
            &[],
        )
        .await;
    assert_eq!(read_parquet(&a.body), (vec![], 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_export_gzip_as_file_and_as_transfer_encoding() {
    let api = start();
    let key = api.tenant("acme", "read_only").await;
    let rw = api.tenant_key("acme", "read_write").await;
    api.device(&rw, "d1", json!({})).await;
    sample(&api).await;
    let uri = "/api/v1/devices/d1/telemetry/export";
    let plain = api.get(uri, &key, &[]).await;
    assert_eq!(plain.status, StatusCode::OK);
    assert!(plain.headers.get("content-encoding").is_none());
    let text = plain.text();
    assert!(
        text.starts_with("time,ts_ms,key,value\n"),
        "{}",
        &text[..80]
    );
    assert!(
        text.contains("\"a, \"\"b\"\"\nc\""),
        "quoted string with a newline"
    );
    assert!(text.contains(",count,-9223372036854775808\n"));

    let file = api.get(&format!("{uri}?compression=gzip"), &key, &[]).await;
    assert_eq!(file.status, StatusCode::OK);
    assert_eq!(file.headers["content-type"], "application/gzip");
    assert_eq!(
        file.headers["content-disposition"],
        "attachment; filename=\"d1-telemetry.csv.gz\""
    );
    assert!(file.body.len() * 3 < text.len(), "compressed");
    assert_eq!(gunzip(&file.body), text);

    let transfer = api
        .get(uri, &key, &[("accept-encoding", "br;q=1, gzip;q=0.8")])
        .await;
    assert_eq!(transfer.headers["content-encoding"], "gzip");
    assert_eq!(transfer.headers["content-type"], "text/csv; charset=utf-8");
    assert_eq!(transfer.headers["vary"], "accept-encoding");
    assert_eq!(gunzip(&transfer.body), text);
    assert!(transfer.frames > 1, "streamed: {} frames", transfer.frames);

    let off = api
        .get(
            &format!("{uri}?compression=none"),
            &key,
            &[("accept-encoding", "gzip")],
        )
        .await;
    assert!(off.headers.get("content-encoding").is_none());
    assert_eq!(off.text(), text);
    let refused = api.get(uri, &key, &[("accept-encoding", "gzip;q=0")]).await;
    assert_eq!(refused.text(), text);

    // An empty export is a header, compressed or not.
    let empty = api
        .get(&format!("{uri}?keys=none&compression=gzip"), &key, &[])
        .await;
    assert_eq!(gunzip(&empty.body), "time,ts_ms,key,value\n");

    for bad in [
        "compression=br",
        "format=parquet&compression=gzip",
        "format=xml",
    ] {
        let a = api.get(&format!("{uri}?{bad}"), &key, &[]).await;
        assert_problem(&a, StatusCode::BAD_REQUEST, "invalid_query");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_export_by_ids_and_label_in_csv_and_parquet() {
    let api = start();
    let key = api.tenant("acme", "read_only").await;
    let rw = api.tenant_key("acme", "read_write").await;
    api.device(&rw, "b", json!({"site": "north"})).await;
    api.device(&rw, "a", json!({"site": "north"})).await;
    api.device(&rw, "c", json!({"site": "south"})).await;
    let pts = |base: f64| -> Vec<(i64, TsValue)> {
        (0..3)
            .map(|i| (T0 + i, TsValue::F64(base + i as f64)))
            .collect()
    };
    api.write("a", "temp", &pts(10.0)).await;
    api.write("a", "hum", &pts(50.0)).await;
    api.write("b", "temp", &pts(20.0)).await;
    api.write("c", "temp", &pts(30.0)).await;
    api.write("c", "state", &[(T0, TsValue::Str("idle".into()))])
        .await;

    let a = api
        .get("/api/v1/telemetry/export?devices=c,a", &key, &[])
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!(
        a.headers["content-disposition"],
        "attachment; filename=\"telemetry-export.csv\""
    );
    let text = a.text();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "device_id,time,ts_ms,key,value");
    // Devices in id order, then keys, then time.
    assert_eq!(lines[1], "a,2023-11-14T22:13:20.000Z,1700000000000,hum,50");
    assert_eq!(lines[4], "a,2023-11-14T22:13:20.000Z,1700000000000,temp,10");
    assert_eq!(
        lines[7],
        "c,2023-11-14T22:13:20.000Z,1700000000000,state,idle"
    );
    assert_eq!(lines[8], "c,2023-11-14T22:13:20.000Z,1700000000000,temp,30");
    assert_eq!(lines.len(), 1 + 6 + 1 + 3);

    let a = api
        .get(
            "/api/v1/telemetry/export?label=site:north&keys=temp&format=parquet",
            &key,
            &[],
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let (rows, groups) = read_parquet(&a.body);
    assert_eq!(groups, 1, "small series share a row group");
    let want: Vec<Row> = ["a", "b"]
        .iter()
        .zip([10.0, 20.0])
        .flat_map(|(d, base)| {
            (0..3).map(move |i| {
                (
                    d.to_string(),
                    "temp".to_string(),
                    T0 + i,
                    TsValue::F64(base + i as f64),
                )
            })
        })
        .collect();
    assert_eq!(rows, want);

    let a = api
        .get(
            "/api/v1/telemetry/export?devices=a,b&compression=gzip&from=1700000000001",
            &key,
            &[],
        )
        .await;
    let text = gunzip(&a.body);
    assert_eq!(text.lines().count(), 1 + 2 + 2 + 2, "{text}");

    let a = api
        .get("/api/v1/telemetry/export?devices=a,zz", &key, &[])
        .await;
    assert_problem(&a, StatusCode::NOT_FOUND, "device_not_found");
    let a = api.get("/api/v1/telemetry/export", &key, &[]).await;
    assert_problem(&a, StatusCode::BAD_REQUEST, "missing_parameter");
    let a = api
        .get(
            "/api/v1/telemetry/export?devices=a&label=site:north",
            &key,
            &[],
        )
        .await;
    assert_problem(&a, StatusCode::BAD_REQUEST, "invalid_query");
    let a = api
        .get("/api/v1/telemetry/export?devices=a&keys=,", &key, &[])
        .await;
    assert_problem(&a, StatusCode::BAD_REQUEST, "invalid_query");
    // Another tenant sees none of these devices.
    let other = api.tenant("other", "admin").await;
    let a = api
        .get("/api/v1/telemetry/export?devices=a", &other, &[])
        .await;
    assert_problem(&a, StatusCode::NOT_FOUND, "device_not_found");
    let a = api
        .get("/api/v1/telemetry/export?label=site:north", &other, &[])
        .await;
    assert_eq!(a.text(), "device_id,time,ts_ms,key,value\n");
}

impl Api {
    /// Another key of an existing tenant.
    async fn tenant_key(&self, tenant: &str, scope: &str) -> String {
        let auth = format!("Bearer {}", self.admin);
        let a = self
            .send(
                &self.router,
                "POST",
                "/api/v1/api-keys",
                &[("authorization", &auth)],
                json!({"name": scope, "scope": scope, "tenant": tenant}),
            )
            .await;
        assert_eq!(a.status, StatusCode::CREATED, "{}", a.text());
        a.json()["secret"].as_str().unwrap().to_string()
    }
}
