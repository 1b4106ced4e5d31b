//! The REST API in-process (`Router::oneshot`), on real stores in a temporary directory:
//! authentication, scopes, tenant isolation, and a problem document for every kind of bad input.

mod support;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

struct Api {
    router: Router,
    admin: String,
    _dir: tempfile::TempDir,
}

async fn start() -> Api {
    let p = support::platform();
    Api {
        router: p.router,
        admin: p.admin,
        _dir: p.dir,
    }
}

impl Api {
    async fn call(
        &self,
        method: &str,
        uri: &str,
        key: Option<&str>,
        body: Option<Body>,
    ) -> (StatusCode, String, Value) {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(key) = key {
            req = req.header("authorization", format!("Bearer {key}"));
        }
        let has_body = body.is_some();
        if has_body {
            req = req.header("content-type", "application/json");
        }
        let req = req.body(body.unwrap_or_else(Body::empty)).unwrap();
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let content_type = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, content_type, json)
    }

    async fn json(&self, method: &str, uri: &str, key: &str, body: Value) -> (StatusCode, Value) {
        let (s, _, v) = self
            .call(method, uri, Some(key), Some(Body::from(body.to_string())))
            .await;
        (s, v)
    }

    async fn get(&self, uri: &str, key: &str) -> (StatusCode, Value) {
        let (s, _, v) = self.call("GET", uri, Some(key), None).await;
        (s, v)
    }

    /// Asserts a problem document with the given status and code.
    async fn expect_problem(
        &self,
        method: &str,
        uri: &str,
        key: Option<&str>,
        body: Option<&str>,
        status: StatusCode,
        code: &str,
    ) {
        let (s, ct, v) = self
            .call(method, uri, key, body.map(|b| Body::from(b.to_string())))
            .await;
        assert_eq!(s, status, "{method} {uri}: {v}");
        assert_eq!(ct, "application/problem+json", "{method} {uri}");
        assert_eq!(v["code"], code, "{method} {uri}: {v}");
        assert_eq!(v["status"], status.as_u16());
        assert_eq!(v["type"], format!("urn:wulian:problem:{code}"));
        assert!(v["detail"].as_str().is_some_and(|d| !d.is_empty()));
    }

    /// A new tenant with an admin key; returns the key.
    async fn tenant(&self, id: &str) -> String {
        let (s, _) = self
            .json(
                "POST",
                "/api/v1/tenants",
                &self.admin,
                json!({"id": id, "name": id}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED);
        let (s, key) = self
            .json(
                "POST",
                "/api/v1/api-keys",
                &self.admin,
                json!({"name": "admin", "scope": "admin", "tenant": id}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{key}");
        key["secret"].as_str().unwrap().to_string()
    }
}

#[tokio::test]
async fn health_and_openapi_need_no_credentials() {
    let api = start().await;
    let (s, _, v) = api.call("GET", "/api/v1/health", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["status"], "ok");
    let (s, _, doc) = api.call("GET", "/api/v1/openapi.json", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/api/v1/devices",
        "/api/v1/devices/{id}",
        "/api/v1/devices/{id}/token",
        "/api/v1/devices/{id}/telemetry",
        "/api/v1/devices/{id}/telemetry/latest",
        "/api/v1/devices/{id}/commands",
        "/api/v1/tenants",
        "/api/v1/api-keys",
    ] {
        assert!(doc["paths"][path].is_object(), "openapi lacks {path}");
    }
}

#[tokio::test]
async fn device_crud_pagination_and_filters() {
    let api = start().await;
    let key = api.admin.clone();
    let (s, d) = api
        .json("POST", "/api/v1/devices", &key, json!({"id": "bike-1", "name": "Bike 1", "profile": "lock", "labels": {"city": "sh"}, "attributes": {"color": "orange"}}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{d}");
    assert!(d["token"].as_str().unwrap().starts_with("wld_"));
    assert_eq!(d["labels"]["city"], "sh");
    assert_eq!(d["connected"], false);

    let (s, d) = api.get("/api/v1/devices/bike-1", &key).await;
    assert_eq!(s, StatusCode::OK);
    assert!(d.get("token").is_none(), "the token is shown only once");
    assert_eq!(d["attributes"]["color"], "orange");

    let (s, d) = api
        .json(
            "PATCH",
            "/api/v1/devices/bike-1",
            &key,
            json!({"name": "Renamed", "labels": {"city": "bj"}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{d}");
    assert_eq!(d["name"], "Renamed");
    assert_eq!(d["labels"], json!({"city": "bj"}));

    for i in 0..25 {
        let profile = if i % 2 == 0 { "even" } else { "odd" };
        let (s, _) = api
            .json("POST", "/api/v1/devices", &key, json!({"id": format!("s-{i:02}"), "profile": profile, "labels": {"zone": format!("z{}", i % 3)}}))
            .await;
        assert_eq!(s, StatusCode::CREATED);
    }
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let uri = format!("/api/v1/devices?limit=10&search=s-{cursor}");
        let (s, page) = api.get(&uri, &key).await;
        assert_eq!(s, StatusCode::OK, "{page}");
        assert_eq!(page["total"], 25);
        seen.extend(
            page["devices"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["id"].as_str().unwrap().to_string()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(seen.len(), 25);
    let (_, page) = api
        .get("/api/v1/devices?profile=even&label=zone:z0", &key)
        .await;
    let ids: Vec<&str> = page["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["s-00", "s-06", "s-12", "s-18", "s-24"]);

    let (s, _, _) = api
        .call("DELETE", "/api/v1/devices/bike-1", Some(&key), None)
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    api.expect_problem(
        "GET",
        "/api/v1/devices/bike-1",
        Some(&key),
        None,
        StatusCode::NOT_FOUND,
        "device_not_found",
    )
    .await;
}

#[tokio::test]
async fn tenants_never_see_each_other() {
    let api = start().await;
    let a = api.tenant("acme").await;
    let b = api.tenant("globex").await;
    let (s, d) = api
        .json("POST", "/api/v1/devices", &a, json!({"id": "a-dev"}))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let token = d["token"].as_str().unwrap().to_string();
    let (s, _, _) = api
        .call(
            "POST",
            "/api/v1/devices/a-dev/telemetry",
            Some(&token),
            Some(Body::from(r#"{"temp": 20}"#)),
        )
        .await;
    assert_eq!(s, StatusCode::OK);

    // Tenant B can neither read nor change nor command A's device, and cannot tell it exists.
    for (method, uri, body) in [
        ("GET", "/api/v1/devices/a-dev", None),
        ("PATCH", "/api/v1/devices/a-dev", Some(r#"{"name": "x"}"#)),
        ("DELETE", "/api/v1/devices/a-dev", None),
        ("POST", "/api/v1/devices/a-dev/token", None),
        ("GET", "/api/v1/devices/a-dev/telemetry", None),
        ("GET", "/api/v1/devices/a-dev/telemetry/latest", None),
        ("GET", "/api/v1/devices/a-dev/commands", None),
        (
            "POST",
            "/api/v1/devices/a-dev/commands",
            Some(r#"{"name": "unlock"}"#),
        ),
        (
            "POST",
            "/api/v1/devices/a-dev/telemetry",
            Some(r#"{"temp": 99}"#),
        ),
    ] {
        api.expect_problem(
            method,
            uri,
            Some(&b),
            body,
            StatusCode::NOT_FOUND,
            "device_not_found",
        )
        .await;
    }
    let (_, page) = api.get("/api/v1/devices", &b).await;
    assert_eq!(page["total"], 0);
    // B's keys cannot manage tenants or A's keys.
    api.expect_problem(
        "GET",
        "/api/v1/tenants",
        Some(&b),
        None,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    api.expect_problem(
        "GET",
        "/api/v1/api-keys?tenant=acme",
        Some(&b),
        None,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    api.expect_problem(
        "GET",
        "/api/v1/tenants/acme",
        Some(&b),
        None,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;

    // A's data is intact.
    let (s, latest) = api.get("/api/v1/devices/a-dev/telemetry/latest", &a).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(latest["values"]["temp"]["value"], 20.0);
    let (_, d) = api.get("/api/v1/devices/a-dev", &a).await;
    assert_eq!(d["name"], "a-dev");
}

#[tokio::test]
async fn scopes_are_enforced() {
    let api = start().await;
    let (_, ro) = api
        .json(
            "POST",
            "/api/v1/api-keys",
            &api.admin,
            json!({"name": "dash", "scope": "read_only"}),
        )
        .await;
    let ro = ro["secret"].as_str().unwrap().to_string();
    let (_, rw) = api
        .json(
            "POST",
            "/api/v1/api-keys",
            &api.admin,
            json!({"name": "app", "scope": "read_write"}),
        )
        .await;
    let rw = rw["secret"].as_str().unwrap().to_string();
    api.expect_problem(
        "POST",
        "/api/v1/devices",
        Some(&ro),
        Some(r#"{"id": "x"}"#),
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    let (s, _) = api
        .json("POST", "/api/v1/devices", &rw, json!({"id": "x"}))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, _) = api.get("/api/v1/devices/x", &ro).await;
    assert_eq!(s, StatusCode::OK);
    api.expect_problem(
        "POST",
        "/api/v1/api-keys",
        Some(&rw),
        Some(r#"{"name": "n", "scope": "admin"}"#),
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    api.expect_problem(
        "POST",
        "/api/v1/tenants",
        Some(&rw),
        Some(r#"{"name": "n"}"#),
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;

    // A revoked key stops working at once.
    let (_, keys) = api.get("/api/v1/api-keys", &api.admin).await;
    let ro_id = keys
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "dash")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (s, _, _) = api
        .call(
            "DELETE",
            &format!("/api/v1/api-keys/{ro_id}"),
            Some(&api.admin),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    api.expect_problem(
        "GET",
        "/api/v1/devices/x",
        Some(&ro),
        None,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
    )
    .await;
}

#[tokio::test]
async fn bad_input_gets_precise_problems() {
    let api = start().await;
    let key = api.admin.clone();
    let (_, d) = api
        .json("POST", "/api/v1/devices", &key, json!({"id": "d1"}))
        .await;
    let token = d["token"].as_str().unwrap().to_string();

    api.expect_problem(
        "GET",
        "/api/v1/devices",
        None,
        None,
        StatusCode::UNAUTHORIZED,
        "missing_credentials",
    )
    .await;
    api.expect_problem(
        "GET",
        "/api/v1/devices",
        Some("wlk_0000"),
        None,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
    )
    .await;
    api.expect_problem(
        "POST",
        "/api/v1/devices",
        Some(&key),
        Some("{not json"),
        StatusCode::BAD_REQUEST,
        "invalid_json",
    )
    .await;
    api.expect_problem(
        "POST",
        "/api/v1/devices",
        Some(&key),
        Some(r#"{"id": "a/b"}"#),
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
    )
    .await;
    api.expect_problem(
        "POST",
        "/api/v1/devices",
        Some(&key),
        Some(r#"{"id": "d2", "colour": 1}"#),
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_body",
    )
    .await;
    api.expect_problem(
        "POST",
        "/api/v1/devices",
        Some(&key),
        Some(r#"{"id": "d1"}"#),
        StatusCode::CONFLICT,
        "already_exists",
    )
    .await;
    api.expect_problem(
        "GET",
        "/api/v1/devices?limitt=5",
        Some(&key),
        None,
        StatusCode::BAD_REQUEST,
        "unknown_parameter",
    )
    .await;
    api.expect_problem(
        "GET",
        "/api/v1/devices/d1/telemetry?from=abc",
        Some(&key),
        None,
        StatusCode::BAD_REQUEST,
        "invalid_query",
    )
    .await;
    api.expect_problem(
        "GET",
        "/api/v1/devices/d1/telemetry?agg=avg",
        Some(&key),
        None,
        StatusCode::BAD_REQUEST,
        "missing_parameter",
    )
    .await;
    api.expect_problem(
        "GET",
        "/api/v1/devices/d1/telemetry?agg=median&interval=1000",
        Some(&key),
        None,
        StatusCode::BAD_REQUEST,
        "invalid_query",
    )
    .await;
    api.expect_problem(
        "GET",
        "/api/v1/devices/d1/telemetry?from=0&to=1000000000000&agg=avg&interval=1",
        Some(&key),
        None,
        StatusCode::BAD_REQUEST,
        "too_many_buckets",
    )
    .await;
    api.expect_problem(
        "GET",
        "/api/v1/devices/nope",
        Some(&key),
        None,
        StatusCode::NOT_FOUND,
        "device_not_found",
    )
    .await;
    api.expect_problem(
        "PUT",
        "/api/v1/devices/d1",
        Some(&key),
        None,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    )
    .await;
    api.expect_problem(
        "GET",
        "/api/v1/nothing-here",
        Some(&key),
        None,
        StatusCode::NOT_FOUND,
        "route_not_found",
    )
    .await;

    // Device-token ingest: wrong token, bad JSON, unsupported values, a body over the limit.
    let post = "/api/v1/devices/d1/telemetry";
    api.expect_problem(
        "POST",
        post,
        None,
        Some(r#"{"t": 1}"#),
        StatusCode::UNAUTHORIZED,
        "missing_credentials",
    )
    .await;
    api.expect_problem(
        "POST",
        post,
        Some("wld_wrong"),
        Some(r#"{"t": 1}"#),
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
    )
    .await;
    api.expect_problem(
        "POST",
        "/api/v1/devices/unknown/telemetry",
        Some(&token),
        Some(r#"{"t": 1}"#),
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
    )
    .await;
    api.expect_problem(
        "POST",
        post,
        Some(&token),
        Some("{\"t\": "),
        StatusCode::BAD_REQUEST,
        "invalid_json",
    )
    .await;
    api.expect_problem(
        "POST",
        post,
        Some(&token),
        Some(r#"{"t": [1, 2]}"#),
        StatusCode::BAD_REQUEST,
        "unsupported_value",
    )
    .await;
    api.expect_problem(
        "POST",
        post,
        Some(&token),
        Some(r#"{"ts": "yesterday", "t": 1}"#),
        StatusCode::BAD_REQUEST,
        "invalid_timestamp",
    )
    .await;
    let big = format!(r#"{{"s": "{}"}}"#, "x".repeat(70 * 1024));
    api.expect_problem(
        "POST",
        post,
        Some(&token),
        Some(&big),
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
    )
    .await;

    // Stored data survives every refusal; a string where a number is stored is refused.
    let (s, _, v) = api
        .call(
            "POST",
            post,
            Some(&token),
            Some(Body::from(r#"{"ts": 1000, "t": 1.5}"#)),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["accepted"], 1);
    api.expect_problem(
        "POST",
        post,
        Some(&token),
        Some(r#"{"ts": 2000, "t": "hot"}"#),
        StatusCode::UNPROCESSABLE_ENTITY,
        "type_mismatch",
    )
    .await;
    let (_, _, v) = api
        .call(
            "POST",
            post,
            Some(&token),
            Some(Body::from(r#"{"ts": 3000, "mode": "eco"}"#)),
        )
        .await;
    assert_eq!(v["accepted"], 1);
    api.expect_problem(
        "GET",
        "/api/v1/devices/d1/telemetry?keys=mode&from=0&to=10000&agg=avg&interval=1000",
        Some(&key),
        None,
        StatusCode::BAD_REQUEST,
        "not_numeric",
    )
    .await;
    let (s, v) = api
        .get("/api/v1/devices/d1/telemetry?keys=t&from=0&to=10000", &key)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["series"]["t"], json!([{"ts": 1000, "value": 1.5}]));
}

#[tokio::test]
async fn telemetry_queries_and_aggregates() {
    let api = start().await;
    let key = api.admin.clone();
    let (_, d) = api
        .json("POST", "/api/v1/devices", &key, json!({"id": "s1"}))
        .await;
    let token = d["token"].as_str().unwrap().to_string();
    // Out of order, a duplicate (last write wins), an array of both forms.
    let body = json!([
        {"ts": 60_000, "values": {"temp": 3.0}},
        {"ts": 0, "temp": 1.0, "on": true},
        {"ts": 30_000, "values": {"temp": 2.0}},
        {"ts": 60_000, "values": {"temp": 4.0}},
        {"ts": 90_000, "values": {"temp": 6.0}}
    ]);
    let (s, _, v) = api
        .call(
            "POST",
            "/api/v1/devices/s1/telemetry",
            Some(&token),
            Some(Body::from(body.to_string())),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (_, v) = api
        .get(
            "/api/v1/devices/s1/telemetry?keys=temp&from=0&to=100000",
            &key,
        )
        .await;
    let temps: Vec<(i64, f64)> = v["series"]["temp"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["ts"].as_i64().unwrap(), p["value"].as_f64().unwrap()))
        .collect();
    assert_eq!(
        temps,
        [(0, 1.0), (30_000, 2.0), (60_000, 4.0), (90_000, 6.0)]
    );
    let (_, v) = api
        .get(
            "/api/v1/devices/s1/telemetry?keys=temp&from=0&to=120000&agg=avg&interval=60000",
            &key,
        )
        .await;
    assert_eq!(
        v["series"]["temp"],
        json!([{"ts": 0, "value": 1.5, "count": 2}, {"ts": 60000, "value": 5.0, "count": 2}])
    );
    for (agg, first, second) in [("min", 1.0, 4.0), ("max", 2.0, 6.0), ("sum", 3.0, 10.0)] {
        let (_, v) = api.get(&format!("/api/v1/devices/s1/telemetry?keys=temp&from=0&to=120000&agg={agg}&interval=60000"), &key).await;
        assert_eq!(v["series"]["temp"][0]["value"], first, "{agg}");
        assert_eq!(v["series"]["temp"][1]["value"], second, "{agg}");
    }
    let (_, v) = api
        .get(
            "/api/v1/devices/s1/telemetry?keys=temp&from=0&to=120000&agg=count&interval=60000",
            &key,
        )
        .await;
    assert_eq!(v["series"]["temp"][0]["value"], 2);
    let (_, v) = api
        .get(
            "/api/v1/devices/s1/telemetry?keys=temp&from=0&to=100000&limit=2",
            &key,
        )
        .await;
    assert_eq!(v["series"]["temp"].as_array().unwrap().len(), 2);
    assert_eq!(v["truncated"], json!(["temp"]));
    // Without keys: every key of the device.
    let (_, v) = api
        .get("/api/v1/devices/s1/telemetry?from=0&to=100000", &key)
        .await;
    assert_eq!(v["series"]["on"], json!([{"ts": 0, "value": true}]));
    let (_, v) = api.get("/api/v1/devices/s1/telemetry/latest", &key).await;
    assert_eq!(v["values"]["temp"], json!({"ts": 90000, "value": 6.0}));
    assert_eq!(v["values"]["on"], json!({"ts": 0, "value": true}));
}

#[tokio::test]
async fn commands_to_offline_devices_are_undelivered_and_kept() {
    let api = start().await;
    let key = api.admin.clone();
    api.json("POST", "/api/v1/devices", &key, json!({"id": "lock-1"}))
        .await;
    let (s, c) = api
        .json(
            "POST",
            "/api/v1/devices/lock-1/commands",
            &key,
            json!({"name": "unlock", "params": {"trip": 7}, "timeout_ms": 500}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{c}");
    assert_eq!(c["status"], "undelivered");
    assert_eq!(c["params"], json!({"trip": 7}));
    let id = c["id"].as_str().unwrap();
    let (s, got) = api
        .get(&format!("/api/v1/devices/lock-1/commands/{id}"), &key)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(got["status"], "undelivered");
    let (_, list) = api.get("/api/v1/devices/lock-1/commands", &key).await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    api.expect_problem(
        "POST",
        "/api/v1/devices/lock-1/commands",
        Some(&key),
        Some(r#"{"name": "a/b"}"#),
        StatusCode::BAD_REQUEST,
        "invalid_command",
    )
    .await;
    api.expect_problem(
        "POST",
        "/api/v1/devices/lock-1/commands",
        Some(&key),
        Some(r#"{"name": "x", "timeout_ms": 5}"#),
        StatusCode::BAD_REQUEST,
        "invalid_command",
    )
    .await;
}

#[tokio::test]
async fn api_keys_carry_mqtt_policies() {
    let api = start().await;
    let policy = json!({"publish": {"allow": ["apps/${key_id}/#"]},
                        "subscribe": {"allow": ["devices/+/telemetry"], "deny": ["devices/secret/#"]}});
    let (s, key) = api
        .json(
            "POST",
            "/api/v1/api-keys",
            &api.admin,
            json!({"name": "dashboard", "scope": "read_only", "mqtt_policy": policy}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{key}");
    assert_eq!(
        key["mqtt_policy"]["publish"]["allow"][0],
        "apps/${key_id}/#"
    );
    assert_eq!(
        key["mqtt_policy"]["subscribe"]["deny"][0],
        "devices/secret/#"
    );

    // Without a policy the scope's default is shown.
    let (_, plain) = api
        .json(
            "POST",
            "/api/v1/api-keys",
            &api.admin,
            json!({"name": "plain", "scope": "read_write"}),
        )
        .await;
    assert_eq!(
        plain["mqtt_policy"]["publish"]["allow"][0],
        "devices/+/commands/#"
    );

    api.expect_problem(
        "POST",
        "/api/v1/api-keys",
        Some(&api.admin),
        Some(r#"{"name": "bad", "scope": "read_only", "mqtt_policy": {"publish": {"allow": ["a/#/b"]}}}"#),
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
    )
    .await;
}

#[tokio::test]
async fn ca_certificates_and_revocations() {
    let api = start().await;
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "fleet CA");
    let ca_pem = params.self_signed(&key).unwrap().pem();

    let (s, ca) = api
        .json(
            "POST",
            "/api/v1/ca-certificates",
            &api.admin,
            json!({"name": "fleet", "certificate": ca_pem}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{ca}");
    assert_eq!(ca["subject"], "fleet CA");
    assert_eq!(ca["fingerprint"].as_str().unwrap().len(), 64);
    assert_eq!(ca["certificate"].as_str().unwrap().trim(), ca_pem.trim());
    let (s, list) = api.get("/api/v1/ca-certificates", &api.admin).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(list.as_array().unwrap().len(), 1);

    let body = json!({"name": "again", "certificate": ca_pem}).to_string();
    api.expect_problem(
        "POST",
        "/api/v1/ca-certificates",
        Some(&api.admin),
        Some(&body),
        StatusCode::CONFLICT,
        "already_exists",
    )
    .await;
    api.expect_problem(
        "POST",
        "/api/v1/ca-certificates",
        Some(&api.admin),
        Some(r#"{"name": "junk", "certificate": "not a certificate"}"#),
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
    )
    .await;
    let (_, reader) = api
        .json(
            "POST",
            "/api/v1/api-keys",
            &api.admin,
            json!({"name": "reader", "scope": "read_only"}),
        )
        .await;
    let reader = reader["secret"].as_str().unwrap();
    api.expect_problem(
        "GET",
        "/api/v1/ca-certificates",
        Some(reader),
        None,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;

    let uri = format!("/api/v1/ca-certificates/{}", ca["id"].as_str().unwrap());
    let (s, _, _) = api.call("DELETE", &uri, Some(&api.admin), None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    api.expect_problem(
        "DELETE",
        &uri,
        Some(&api.admin),
        None,
        StatusCode::NOT_FOUND,
        "ca_certificate_not_found",
    )
    .await;

    // Revocations.
    let (s, _) = api
        .json(
            "POST",
            "/api/v1/devices",
            &api.admin,
            json!({"id": "lock-1"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, revoked) = api
        .json(
            "POST",
            "/api/v1/devices/lock-1/certificates/revoke",
            &api.admin,
            json!({"serial": "0A:1B"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{revoked}");
    assert_eq!(revoked["serial"], "0a1b");
    api.expect_problem(
        "POST",
        "/api/v1/devices/lock-1/certificates/revoke",
        Some(&api.admin),
        Some("{}"),
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
    )
    .await;
    api.expect_problem(
        "POST",
        "/api/v1/devices/nobody/certificates/revoke",
        Some(&api.admin),
        Some(r#"{"serial": "01"}"#),
        StatusCode::NOT_FOUND,
        "device_not_found",
    )
    .await;
}
