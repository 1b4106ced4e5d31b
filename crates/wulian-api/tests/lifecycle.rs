//! Profiles with thing models, validation on ingest, units, command checks, twins with merge
//! patches and versions, and device status — through the REST API, in-process on real stores.

mod support;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

struct Reply {
    status: StatusCode,
    etag: Option<String>,
    body: Value,
}

async fn send(
    p: &support::Platform,
    method: &str,
    uri: &str,
    bearer: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> Reply {
    let mut all: Vec<(&str, &str)> = headers.to_vec();
    if body.is_some() && !headers.iter().any(|(n, _)| *n == "content-type") {
        all.push(("content-type", "application/json"));
    }
    let body = body.map_or_else(Vec::new, |v| v.to_string().into_bytes());
    let (status, headers, bytes) = send_raw(p, method, uri, bearer, &all, body).await;
    Reply {
        status,
        etag: headers.get("etag").map(|v| v.to_str().unwrap().to_string()),
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    }
}

async fn send_raw(
    p: &support::Platform,
    method: &str,
    uri: &str,
    bearer: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .header("authorization", format!("Bearer {bearer}"));
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let resp = p
        .router
        .clone()
        .oneshot(req.body(Body::from(body)).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    (status, headers, bytes)
}

fn sensor_profile(validation: &str) -> Value {
    json!({
        "id": "sensor",
        "name": "Temperature sensor",
        "validation": validation,
        "settings": {"report_interval_s": 60},
        "model": {
            "properties": [
                {"name": "temp", "type": "double", "unit": "°C", "min": -40, "max": 85, "precision": 1},
                {"name": "state", "type": "string", "enum": ["ok", "fault"]}
            ],
            "commands": [{"name": "set_interval", "params": [
                {"name": "seconds", "type": "integer", "min": 10, "max": 3600, "required": true}
            ]}],
            "allow_undeclared": false
        }
    })
}

/// Creates the profile and a device in it; returns the device's token.
async fn device_with_profile(p: &support::Platform, validation: &str) -> String {
    let r = send(
        p,
        "POST",
        "/api/v1/profiles",
        &p.admin,
        &[],
        Some(sensor_profile(validation)),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.etag.as_deref(), Some("\"1\""));
    let r = send(
        p,
        "POST",
        "/api/v1/devices",
        &p.admin,
        &[],
        Some(json!({"id": "s1", "profile": "sensor"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED);
    r.body["token"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn profiles_crud_export_and_concurrency() {
    let p = support::platform();
    device_with_profile(&p, "reject").await;
    let got = send(&p, "GET", "/api/v1/profiles/sensor", &p.admin, &[], None).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.body["model"]["properties"][0]["unit"], "°C");
    assert_eq!(got.body["version"], 1);

    // The exported JSON is accepted back as is.
    let mut export = got.body.clone();
    export["validation"] = json!("flag");
    let put = send(
        &p,
        "PUT",
        "/api/v1/profiles/sensor",
        &p.admin,
        &[("if-match", "\"1\"")],
        Some(export.clone()),
    )
    .await;
    assert_eq!(put.status, StatusCode::OK, "{}", put.body);
    assert_eq!(put.body["version"], 2);
    assert_eq!(put.etag.as_deref(), Some("\"2\""));
    // A stale If-Match is refused.
    let stale = send(
        &p,
        "PUT",
        "/api/v1/profiles/sensor",
        &p.admin,
        &[("if-match", "\"1\"")],
        Some(export),
    )
    .await;
    assert_eq!(stale.status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(stale.body["code"], "version_mismatch");

    // Broken models name their path.
    let mut bad = sensor_profile("reject");
    bad["id"] = json!("bad");
    bad["model"]["properties"][0]["max"] = json!(-50);
    let r = send(&p, "POST", "/api/v1/profiles", &p.admin, &[], Some(bad)).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        r.body["detail"]
            .as_str()
            .unwrap()
            .contains("properties[0].max"),
        "{}",
        r.body
    );
    let r = send(
        &p,
        "POST",
        "/api/v1/profiles",
        &p.admin,
        &[],
        Some(json!({"id": "x", "model": {"properties": [{"name": "t", "type": "float"}]}})),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);

    // In use: not deletable; another tenant does not see it.
    let r = send(&p, "DELETE", "/api/v1/profiles/sensor", &p.admin, &[], None).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    let list = send(&p, "GET", "/api/v1/profiles", &p.admin, &[], None).await;
    assert_eq!(list.body.as_array().unwrap().len(), 1);
    let r = send(
        &p,
        "POST",
        "/api/v1/tenants",
        &p.admin,
        &[],
        Some(json!({"id": "other", "name": "o"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let key = send(
        &p,
        "POST",
        "/api/v1/api-keys",
        &p.admin,
        &[],
        Some(json!({"name": "k", "scope": "admin", "tenant": "other"})),
    )
    .await;
    let other = key.body["secret"].as_str().unwrap();
    let r = send(&p, "GET", "/api/v1/profiles/sensor", other, &[], None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.body["code"], "profile_not_found");
}

#[tokio::test]
async fn reject_mode_refuses_with_every_violation_and_stores_nothing() {
    let p = support::platform();
    let token = device_with_profile(&p, "reject").await;
    let uri = "/api/v1/devices/s1/telemetry";
    let bad = send(
        &p,
        "POST",
        uri,
        &token,
        &[],
        Some(json!({"temp": 90.5, "state": "melted", "rpm": 3})),
    )
    .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", bad.body);
    assert_eq!(bad.body["code"], "model_violation");
    let codes: Vec<&str> = bad.body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["code"].as_str().unwrap())
        .collect();
    assert_eq!(codes, ["undeclared", "not_in_enum", "above_max"]); // by key: rpm, state, temp
    assert!(
        bad.body["detail"]
            .as_str()
            .unwrap()
            .contains("90.5 °C is above the maximum 85 °C")
    );

    let ok = send(
        &p,
        "POST",
        uri,
        &token,
        &[],
        Some(json!({"temp": 21.5, "state": "ok"})),
    )
    .await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
    let latest = send(
        &p,
        "GET",
        "/api/v1/devices/s1/telemetry/latest",
        &p.admin,
        &[],
        None,
    )
    .await;
    assert_eq!(latest.body["values"]["temp"]["value"], 21.5);
    assert!(
        latest.body["values"].get("rpm").is_none(),
        "nothing of the refused message is stored"
    );
    assert_eq!(latest.body["units"]["temp"], "°C");
}

#[tokio::test]
async fn flag_mode_stores_and_shows_the_violations() {
    let p = support::platform();
    let token = device_with_profile(&p, "flag").await;
    let r = send(
        &p,
        "POST",
        "/api/v1/devices/s1/telemetry",
        &token,
        &[],
        Some(json!({"temp": "hot"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let status = send(&p, "GET", "/api/v1/devices/s1/status", &p.admin, &[], None).await;
    assert_eq!(status.status, StatusCode::OK);
    assert_eq!(
        status.body["model_violations"]["violations"][0]["code"],
        "wrong_type"
    );
    assert_eq!(status.body["messages_in"], 1);
    assert!(status.body["last_seen_at"].as_i64().unwrap() > 0);
    assert_eq!(status.body["online"], false);
}

#[tokio::test]
async fn commands_are_checked_against_the_model() {
    let p = support::platform();
    device_with_profile(&p, "reject").await;
    let uri = "/api/v1/devices/s1/commands";
    let r = send(
        &p,
        "POST",
        uri,
        &p.admin,
        &[],
        Some(json!({"name": "set_interval", "params": {"seconds": 5}})),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    assert_eq!(r.body["code"], "invalid_params");
    assert_eq!(r.body["errors"][0]["code"], "below_min");
    let r = send(
        &p,
        "POST",
        uri,
        &p.admin,
        &[],
        Some(json!({"name": "reboot"})),
    )
    .await;
    assert_eq!(r.body["errors"][0]["code"], "unknown_command");
    // A valid command passes the check (and is undelivered: the device is offline).
    let r = send(
        &p,
        "POST",
        uri,
        &p.admin,
        &[],
        Some(json!({"name": "set_interval", "params": {"seconds": 60}, "wait": false})),
    )
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
}

#[tokio::test]
async fn twins_merge_version_and_delta() {
    let p = support::platform();
    let token = device_with_profile(&p, "off").await;
    let twin = send(&p, "GET", "/api/v1/devices/s1/twin", &p.admin, &[], None).await;
    assert_eq!(twin.body["version"], 0);
    assert_eq!(twin.etag.as_deref(), Some("\"0\""));

    let merge = [("content-type", "application/merge-patch+json")];
    let r = send(
        &p,
        "PATCH",
        "/api/v1/devices/s1/twin/desired",
        &p.admin,
        &merge,
        Some(json!({"interval_s": 30, "led": {"color": "red", "on": true}})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["version"], 1);
    assert_eq!(
        r.body["delta"],
        json!({"interval_s": 30, "led": {"color": "red", "on": true}})
    );

    // The device reports over HTTP with its token; the delta shrinks to what is left.
    let r = send(
        &p,
        "PATCH",
        "/api/v1/devices/s1/twin/reported",
        &token,
        &[],
        Some(json!({"interval_s": 30, "led": {"color": "red", "on": false}})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["delta"], json!({"led": {"on": true}}));
    assert_eq!(r.body["version"], 2);

    // Conditional update with a stale version is refused; null deletes.
    let stale = [("if-match", "\"1\"")];
    let r = send(
        &p,
        "PATCH",
        "/api/v1/devices/s1/twin/desired",
        &p.admin,
        &stale,
        Some(json!({"led": null})),
    )
    .await;
    assert_eq!(r.status, StatusCode::PRECONDITION_FAILED);
    let current = [("if-match", "\"2\"")];
    let r = send(
        &p,
        "PATCH",
        "/api/v1/devices/s1/twin/desired",
        &p.admin,
        &current,
        Some(json!({"led": null})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["desired"], json!({"interval_s": 30}));
    assert_eq!(r.body["delta"], json!({}));

    // Limits and bad input.
    let big = "x".repeat(40 * 1024);
    let r = send(
        &p,
        "PATCH",
        "/api/v1/devices/s1/twin/desired",
        &p.admin,
        &[],
        Some(json!({"blob": big})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "32 KB documents must fit");
    let r = send(
        &p,
        "PATCH",
        "/api/v1/devices/s1/twin/desired",
        &p.admin,
        &[],
        Some(json!({"blob2": big})),
    )
    .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(r.body["code"], "too_large");
    let r = send(
        &p,
        "PATCH",
        "/api/v1/devices/s1/twin/desired",
        &p.admin,
        &[],
        Some(json!([1, 2])),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let r = send(
        &p,
        "PATCH",
        "/api/v1/devices/s1/twin/reported",
        "wld_wrong",
        &[],
        Some(json!({})),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = send(&p, "GET", "/api/v1/devices/nope/twin", &p.admin, &[], None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let bad_tag = [("if-match", "yesterday")];
    let r = send(
        &p,
        "PATCH",
        "/api/v1/devices/s1/twin/desired",
        &p.admin,
        &bad_tag,
        Some(json!({})),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn claim_provisioning_is_single_use_audited_and_rate_limited() {
    let p = support::platform();
    let r = send(
        &p,
        "POST",
        "/api/v1/profiles",
        &p.admin,
        &[],
        Some(json!({"id": "lock"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let r = send(
        &p,
        "POST",
        "/api/v1/profiles/lock/provisioning",
        &p.admin,
        &[],
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let secret = r.body["secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("wlp_"));
    let got = send(&p, "GET", "/api/v1/profiles/lock", &p.admin, &[], None).await;
    assert_eq!(got.body["provisioning_enabled"], true);
    assert!(
        !got.body.to_string().contains(&secret),
        "the secret is shown once"
    );
    let r = send(
        &p,
        "POST",
        "/api/v1/profiles/lock/serials",
        &p.admin,
        &[],
        Some(json!({"serials": ["SN-0001", "SN-0002"]})),
    )
    .await;
    assert_eq!(r.body["added"], 2);

    let claim = |serial: &str| json!({"tenant": "default", "profile": "lock", "serial": serial});
    let r = send(
        &p,
        "POST",
        "/api/v1/provision/claim",
        &secret,
        &[],
        Some(claim("SN-0001")),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let token = r.body["token"].as_str().unwrap().to_string();
    assert_eq!(r.body["device_id"], "SN-0001");
    // The token is the device's own: it can post telemetry.
    let t = send(
        &p,
        "POST",
        "/api/v1/devices/SN-0001/telemetry",
        &token,
        &[],
        Some(json!({"v": 1})),
    )
    .await;
    assert_eq!(t.status, StatusCode::OK);

    let r = send(
        &p,
        "POST",
        "/api/v1/provision/claim",
        &secret,
        &[],
        Some(claim("SN-0001")),
    )
    .await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (StatusCode::CONFLICT, Some("already_claimed"))
    );
    let r = send(
        &p,
        "POST",
        "/api/v1/provision/claim",
        &secret,
        &[],
        Some(claim("SN-9999")),
    )
    .await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("serial_not_registered"))
    );
    let r = send(
        &p,
        "POST",
        "/api/v1/provision/claim",
        "wlp_wrong",
        &[],
        Some(claim("SN-0002")),
    )
    .await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_credentials"))
    );

    // Every attempt is in the audit log.
    let audit = send(&p, "GET", "/api/v1/audit?limit=10", &p.admin, &[], None).await;
    let outcomes: Vec<&str> = audit
        .body
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "device.claim")
        .map(|e| e["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(
        outcomes,
        [
            "invalid_credentials",
            "serial_not_registered",
            "already_claimed",
            "ok"
        ]
    );

    // Rate limit: at most 60 attempts per profile per minute.
    for _ in 0..56 {
        send(
            &p,
            "POST",
            "/api/v1/provision/claim",
            "wlp_wrong",
            &[],
            Some(claim("SN-0002")),
        )
        .await;
    }
    let r = send(
        &p,
        "POST",
        "/api/v1/provision/claim",
        &secret,
        &[],
        Some(claim("SN-0002")),
    )
    .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.body);

    // Turning provisioning off stops the secret.
    let r = send(
        &p,
        "DELETE",
        "/api/v1/profiles/lock/provisioning",
        &p.admin,
        &[],
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn ota_upload_sign_download_and_a_staged_campaign() {
    use sha2::{Digest, Sha256};
    let p = support::platform();
    for i in 1..=3 {
        let r = send(
            &p,
            "POST",
            "/api/v1/devices",
            &p.admin,
            &[],
            Some(json!({"id": format!("gw-{i}"), "profile": "gw"})),
        )
        .await;
        assert_eq!(r.status, StatusCode::CREATED);
    }
    let image: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let sha = hex(&Sha256::digest(&image));
    let octets = [("content-type", "application/octet-stream")];
    let upload = |sha: String| {
        let (p, image) = (&p, image.clone());
        async move {
            let uri = format!("/api/v1/firmware?profile=gw&version=1.0.0&sha256={sha}");
            send_raw(p, "POST", &uri, &p.admin, &octets, image).await
        }
    };

    // A wrong declared hash stores nothing.
    let (status, _, body) = upload("0".repeat(64)).await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        String::from_utf8_lossy(&body)
    );
    let listed = send(&p, "GET", "/api/v1/firmware", &p.admin, &[], None).await;
    assert_eq!(listed.body, json!([]));
    assert_eq!(upload("xyz".into()).await.0, StatusCode::BAD_REQUEST);

    let (status, _, body) = upload(sha.clone()).await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&body)
    );
    let fw: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(fw["size"], 200_000);
    assert_eq!(fw["sha256"], sha);
    assert_eq!(
        upload(sha.clone()).await.0,
        StatusCode::CONFLICT,
        "a version exists once per profile"
    );

    // The signature verifies with the tenant's public key, over the SHA-256 digest.
    let key = send(&p, "GET", "/api/v1/ota/public-key", &p.admin, &[], None).await;
    let public = unhex(key.body["public_key"].as_str().unwrap());
    let signature = unhex(fw["signature"].as_str().unwrap());
    ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, &public)
        .verify(&Sha256::digest(&image), &signature)
        .expect("the firmware signature verifies");

    // Download: whole and by ranges (RFC 9110).
    let fw_id = fw["id"].as_str().unwrap().to_string();
    let url = format!("/api/v1/devices/gw-1/firmware/{fw_id}");
    let (status, headers, bytes) = send_raw(&p, "GET", &url, &p.admin, &[], Vec::new()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["accept-ranges"], "bytes");
    assert_eq!(bytes, image);
    let (status, headers, bytes) = send_raw(
        &p,
        "GET",
        &url,
        &p.admin,
        &[("range", "bytes=100000-")],
        Vec::new(),
    )
    .await;
    assert_eq!(status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(headers["content-range"], "bytes 100000-199999/200000");
    assert_eq!(bytes, image[100_000..]);
    let (status, _, _) = send_raw(
        &p,
        "GET",
        &url,
        &p.admin,
        &[("range", "bytes=300000-")],
        Vec::new(),
    )
    .await;
    assert_eq!(status, StatusCode::RANGE_NOT_SATISFIABLE);

    // A campaign over three devices, one at a time.
    let r = send(
        &p,
        "POST",
        "/api/v1/ota/campaigns",
        &p.admin,
        &[],
        Some(json!({
            "name": "1.0.0 rollout", "firmware_id": fw_id, "target": {"profile": "gw"},
            "batch_size": 1, "failure_threshold_pct": 50, "min_failures": 2
        })),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let campaign = r.body["id"].as_str().unwrap().to_string();
    assert_eq!(r.body["counts"]["in_progress"], 1);
    assert_eq!(r.body["counts"]["pending"], 2);
    let report = |device: &'static str, state: &'static str| {
        let body = json!({"campaign": campaign, "state": state, "progress": 50})
            .to_string()
            .into_bytes();
        let p = &p;
        async move {
            let uri = format!("/api/v1/devices/{device}/ota/progress");
            send_raw(
                p,
                "POST",
                &uri,
                &p.admin,
                &[("content-type", "application/json")],
                body,
            )
            .await
            .0
        }
    };
    assert_eq!(report("gw-1", "downloading").await, StatusCode::OK);
    assert_eq!(
        report("gw-2", "downloading").await,
        StatusCode::CONFLICT,
        "gw-2 was not notified yet"
    );
    assert_eq!(
        report("gw-1", "rebooting").await,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    assert_eq!(report("gw-1", "succeeded").await, StatusCode::OK);
    assert_eq!(
        report("gw-1", "failed").await,
        StatusCode::CONFLICT,
        "finished is final"
    );
    p.ota.tick().await.unwrap();
    let c = send(
        &p,
        "GET",
        &format!("/api/v1/ota/campaigns/{campaign}"),
        &p.admin,
        &[],
        None,
    )
    .await;
    assert_eq!(c.body["counts"]["succeeded"], 1);
    assert_eq!(
        c.body["counts"]["in_progress"], 1,
        "the next device is notified"
    );
    // One failure of two finished: min_failures (2) is not reached, so it goes on.
    assert_eq!(report("gw-2", "failed").await, StatusCode::OK);
    p.ota.tick().await.unwrap();
    assert_eq!(report("gw-3", "failed").await, StatusCode::OK);
    p.ota.tick().await.unwrap();
    let c = send(
        &p,
        "GET",
        &format!("/api/v1/ota/campaigns/{campaign}"),
        &p.admin,
        &[],
        None,
    )
    .await;
    assert_eq!(c.body["status"], "aborted", "{}", c.body);
    assert!(
        c.body["status_reason"].as_str().unwrap().contains("2 of 3"),
        "{}",
        c.body
    );
    let devices = send(
        &p,
        "GET",
        &format!("/api/v1/ota/campaigns/{campaign}/devices"),
        &p.admin,
        &[],
        None,
    )
    .await;
    let states: Vec<&str> = devices
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["succeeded", "failed", "failed"]);
    // Firmware in use cannot be deleted.
    let r = send(
        &p,
        "DELETE",
        &format!("/api/v1/firmware/{fw_id}"),
        &p.admin,
        &[],
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// A local HTTP receiver for webhooks: records bodies; answers `status`.
async fn webhook_receiver(
    status: StatusCode,
) -> (String, tokio::sync::mpsc::UnboundedReceiver<Value>) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: axum::body::Bytes| {
            let tx = tx.clone();
            async move {
                tx.send(serde_json::from_slice(&body).unwrap_or(Value::Null))
                    .ok();
                status
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.ok() });
    (url, rx)
}

#[tokio::test]
async fn alarms_dedup_lifecycle_stream_and_webhooks_with_dead_letters() {
    let p = support::platform();
    let r = send(
        &p,
        "POST",
        "/api/v1/devices",
        &p.admin,
        &[],
        Some(json!({"id": "pump-1"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let (url, mut received) = webhook_receiver(StatusCode::OK).await;
    let r = send(
        &p,
        "POST",
        "/api/v1/alarms/webhooks",
        &p.admin,
        &[],
        Some(json!({"url": url})),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);

    // The live stream sees the change.
    let req = Request::builder()
        .uri("/api/v1/alarms/stream")
        .header("authorization", format!("Bearer {}", p.admin))
        .body(Body::empty())
        .unwrap();
    let resp = p.router.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut stream = resp.into_body().into_data_stream();

    let raise = json!({"device_id": "pump-1", "type": "overpressure", "severity": "major", "details": {"bar": 9.1}});
    let first = send(
        &p,
        "POST",
        "/api/v1/alarms",
        &p.admin,
        &[],
        Some(raise.clone()),
    )
    .await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    assert_eq!(
        (first.body["status"].as_str(), first.body["count"].as_u64()),
        (Some("active"), Some(1))
    );
    let again = send(&p, "POST", "/api/v1/alarms", &p.admin, &[], Some(raise)).await;
    assert_eq!(
        again.body["id"], first.body["id"],
        "deduplicated per device and type"
    );
    assert_eq!(again.body["count"], 2);

    use futures_util::StreamExt;
    let frame = tokio::time::timeout(std::time::Duration::from_secs(5), stream.next())
        .await
        .expect("an SSE event")
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&frame);
    assert!(
        text.contains("event: alarm") && text.contains("\"change\":\"raised\""),
        "{text}"
    );

    // Two changes (raised, then updated); concurrent webhook workers may deliver them in
    // either order.
    let mut hooks = Vec::new();
    for _ in 0..2 {
        hooks.push(
            tokio::time::timeout(std::time::Duration::from_secs(5), received.recv())
                .await
                .unwrap()
                .unwrap(),
        );
    }
    let raised = hooks
        .iter()
        .find(|h| h["change"] == "raised")
        .expect("a raised notification");
    assert_eq!(raised["alarm"]["details"]["bar"], 9.1);
    assert!(hooks.iter().any(|h| h["change"] == "updated"));

    let id = first.body["id"].as_str().unwrap();
    let acked = send(
        &p,
        "POST",
        &format!("/api/v1/alarms/{id}/ack"),
        &p.admin,
        &[],
        None,
    )
    .await;
    assert_eq!(acked.body["status"], "acknowledged");
    let again = send(
        &p,
        "POST",
        &format!("/api/v1/alarms/{id}/ack"),
        &p.admin,
        &[],
        None,
    )
    .await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    let cleared = send(
        &p,
        "POST",
        &format!("/api/v1/alarms/{id}/clear"),
        &p.admin,
        &[],
        None,
    )
    .await;
    assert_eq!(cleared.body["status"], "cleared");
    let open = send(&p, "GET", "/api/v1/alarms?status=open", &p.admin, &[], None).await;
    assert_eq!(open.body, json!([]));
    let history = send(
        &p,
        "GET",
        "/api/v1/alarms?device_id=pump-1",
        &p.admin,
        &[],
        None,
    )
    .await;
    assert_eq!(history.body.as_array().unwrap().len(), 1);
    // Severity is filtered by the server; a page continues after the last alarm's id.
    for (query, expected) in [
        ("severity=major", 1),
        ("severity=critical", 0),
        ("severity=major&type=overpressure&device_id=pump-1", 1),
        ("severity=major&type=other", 0),
    ] {
        let r = send(
            &p,
            "GET",
            &format!("/api/v1/alarms?{query}"),
            &p.admin,
            &[],
            None,
        )
        .await;
        assert_eq!(
            r.body.as_array().map(Vec::len),
            Some(expected),
            "{query}: {}",
            r.body
        );
    }
    let created = cleared.body["created_at"].as_i64().unwrap();
    let after = send(
        &p,
        "GET",
        &format!("/api/v1/alarms?before={created}&before_id={id}"),
        &p.admin,
        &[],
        None,
    )
    .await;
    assert_eq!(
        after.body,
        json!([]),
        "the page after the only alarm is empty"
    );
    for query in ["severity=apocalyptic", "before_id=al-1"] {
        let r = send(
            &p,
            "GET",
            &format!("/api/v1/alarms?{query}"),
            &p.admin,
            &[],
            None,
        )
        .await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{query}");
    }
    let bad = send(
        &p,
        "POST",
        "/api/v1/alarms",
        &p.admin,
        &[],
        Some(json!({"device_id": "pump-1", "type": "x", "severity": "apocalyptic"})),
    )
    .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);

    // A webhook that keeps failing ends in the dead-letter list (2 attempts in tests); replay
    // sends it again.
    let (failing, mut failing_rx) = webhook_receiver(StatusCode::SERVICE_UNAVAILABLE).await;
    let hooks = send(&p, "GET", "/api/v1/alarms/webhooks", &p.admin, &[], None).await;
    let hook_id = hooks.body[0]["id"].as_str().unwrap();
    send(
        &p,
        "DELETE",
        &format!("/api/v1/alarms/webhooks/{hook_id}"),
        &p.admin,
        &[],
        None,
    )
    .await;
    send(
        &p,
        "POST",
        "/api/v1/alarms/webhooks",
        &p.admin,
        &[],
        Some(json!({"url": failing})),
    )
    .await;
    send(
        &p,
        "POST",
        "/api/v1/alarms",
        &p.admin,
        &[],
        Some(json!({"device_id": "pump-1", "type": "leak", "severity": "critical"})),
    )
    .await;
    for _ in 0..2 {
        tokio::time::timeout(std::time::Duration::from_secs(5), failing_rx.recv())
            .await
            .unwrap();
    }
    let letters = loop {
        let l = send(
            &p,
            "GET",
            "/api/v1/webhooks/dead-letters",
            &p.admin,
            &[],
            None,
        )
        .await;
        if !l.body.as_array().unwrap().is_empty() {
            break l.body;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(letters[0]["attempts"], 2);
    assert_eq!(letters[0]["last_error"], "HTTP 503");
    assert!(
        letters[0]["body_text"]
            .as_str()
            .unwrap()
            .contains("\"leak\"")
    );
    let letter = letters[0]["id"].as_str().unwrap();
    let r = send(
        &p,
        "POST",
        &format!("/api/v1/webhooks/dead-letters/{letter}/replay"),
        &p.admin,
        &[],
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    tokio::time::timeout(std::time::Duration::from_secs(5), failing_rx.recv())
        .await
        .unwrap();
    let r = send(
        &p,
        "POST",
        &format!("/api/v1/webhooks/dead-letters/{letter}/replay"),
        &p.admin,
        &[],
        None,
    )
    .await;
    assert_eq!(
        r.status,
        StatusCode::NOT_FOUND,
        "a replayed letter leaves the list"
    );
}

#[tokio::test]
async fn profiles_import_from_dtdl_and_tsl() {
    let p = support::platform();
    let dtdl = json!({
        "@context": "dtmi:dtdl:context;3", "@id": "dtmi:example:Sensor;1", "@type": "Interface",
        "contents": [
            {"@type": ["Telemetry", "Temperature"], "name": "temp", "schema": "double", "unit": "degreeCelsius"},
            {"@type": "Telemetry", "name": "accel", "schema": {"@type": "Object", "fields": []}}
        ]
    });
    let r = send(
        &p,
        "POST",
        "/api/v1/profiles/import",
        &p.admin,
        &[],
        Some(json!({"id": "sensor", "format": "dtdl", "document": dtdl})),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["profile"]["model"]["properties"][0]["unit"], "°C");
    assert_eq!(r.body["warnings"].as_array().unwrap().len(), 1);
    let tsl = json!({"properties": [{"identifier": "pm25", "dataType": {"type": "float", "specs": {"min": "0", "max": "1000"}}}]});
    let r = send(
        &p,
        "POST",
        "/api/v1/profiles/import",
        &p.admin,
        &[],
        Some(json!({"id": "aq", "format": "tsl", "document": tsl, "validation": "reject"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["profile"]["model"]["properties"][0]["max"], 1000.0);
    let r = send(
        &p,
        "POST",
        "/api/v1/profiles/import",
        &p.admin,
        &[],
        Some(json!({"id": "x", "format": "yaml", "document": {}})),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let r = send(
        &p,
        "POST",
        "/api/v1/profiles/import",
        &p.admin,
        &[],
        Some(json!({"id": "x", "format": "dtdl", "document": {"@type": "Telemetry"}})),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn rules_validate_fire_actions_dry_run_and_replay() {
    let p = support::platform();
    let r = send(
        &p,
        "POST",
        "/api/v1/devices",
        &p.admin,
        &[],
        Some(json!({"id": "boiler-1"})),
    )
    .await;
    let token = r.body["token"].as_str().unwrap().to_string();
    let (url, mut hooks) = webhook_receiver(StatusCode::OK).await;

    // A rule that does not parse says where and what.
    let bad = json!({"id": "hot", "sql": "SELECT temp WHERE temp > 50", "actions": []});
    let r = send(&p, "POST", "/api/v1/rules", &p.admin, &[], Some(bad)).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    assert_eq!(r.body["code"], "rule_parse_error");
    assert_eq!(r.body["errors"][0]["line"], 1);
    assert_eq!(r.body["errors"][0]["column"], 13);
    let bad_action = json!({"id": "hot", "sql": "SELECT temp FROM 'devices/+/telemetry'", "actions": [{"action": "explode"}]});
    let r = send(&p, "POST", "/api/v1/rules", &p.admin, &[], Some(bad_action)).await;
    assert_eq!(r.body["code"], "rule_invalid_action", "{}", r.body);
    let zone = json!({"id": "z", "sql": "SELECT 1 AS x FROM 'devices/+/telemetry' WHERE in_zone(lat, lon, 'depot')"});
    let r = send(&p, "POST", "/api/v1/rules", &p.admin, &[], Some(zone)).await;
    assert_eq!(r.body["code"], "rule_unknown_zone", "{}", r.body);

    let rule = json!({
        "id": "hot", "name": "Boiler too hot",
        "sql": "SELECT device_id, temp, temp * 1.8 + 32 AS temp_f FROM 'devices/+/telemetry' WHERE temp > 50",
        "actions": [
            {"action": "alarm", "type": "overheat", "severity": "major", "clear_when_false": true},
            {"action": "write_telemetry", "keys": ["temp_f"]},
            {"action": "webhook", "url": url}
        ]
    });
    let r = send(&p, "POST", "/api/v1/rules", &p.admin, &[], Some(rule)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.etag.as_deref(), Some("\"1\""));

    let post = |temp: f64, ts: i64| {
        let (p, token) = (&p, token.clone());
        async move {
            send(
                p,
                "POST",
                "/api/v1/devices/boiler-1/telemetry",
                &token,
                &[],
                Some(json!({"ts": ts, "temp": temp})),
            )
            .await
            .status
        }
    };
    assert_eq!(post(60.0, 1_000_000).await, StatusCode::OK);
    let hook = tokio::time::timeout(std::time::Duration::from_secs(5), hooks.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(hook["temp_f"], 140.0);
    let alarms = loop {
        let a = send(&p, "GET", "/api/v1/alarms?status=open", &p.admin, &[], None).await;
        if !a.body.as_array().unwrap().is_empty() {
            break a.body;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    assert_eq!(alarms[0]["type"], "overheat");
    assert_eq!(alarms[0]["source"], "rule:hot");
    // Derived telemetry, at the message's timestamp.
    let derived = loop {
        let t = send(
            &p,
            "GET",
            "/api/v1/devices/boiler-1/telemetry?keys=temp_f&from=0&to=2000000",
            &p.admin,
            &[],
            None,
        )
        .await;
        if t.body["series"]["temp_f"]
            .as_array()
            .is_some_and(|s| !s.is_empty())
        {
            break t.body;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    assert_eq!(
        derived["series"]["temp_f"][0],
        json!({"ts": 1_000_000, "value": 140.0})
    );

    // Back to normal: the alarm clears.
    assert_eq!(post(20.0, 1_001_000).await, StatusCode::OK);
    loop {
        let a = send(&p, "GET", "/api/v1/alarms?status=open", &p.admin, &[], None).await;
        if a.body.as_array().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let got = send(&p, "GET", "/api/v1/rules/hot", &p.admin, &[], None).await;
    assert_eq!(got.body["stats"]["evaluated"], 2, "{}", got.body);
    assert_eq!(got.body["stats"]["matched"], 1);

    // Dry run: no side effects.
    let dry = json!({"sql": "SELECT temp FROM 'devices/+/telemetry' WHERE temp > 50",
                     "actions": [{"action": "alarm", "type": "x", "severity": "minor"}],
                     "samples": [{"device_id": "boiler-1", "payload": {"temp": 70}}, {"device_id": "boiler-1", "payload": {"temp": 1}}]});
    let r = send(
        &p,
        "POST",
        "/api/v1/rules/dry-run",
        &p.admin,
        &[],
        Some(dry),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body[0]["matched"], true);
    assert_eq!(r.body[1]["matched"], false);
    assert_eq!(r.body[0]["actions"].as_array().unwrap().len(), 1);

    // Replay over the stored telemetry: one of two messages would have matched.
    let r = send(
        &p,
        "POST",
        "/api/v1/rules/hot/replay",
        &p.admin,
        &[],
        Some(json!({"device_id": "boiler-1", "from": 0, "to": 2_000_000})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        (r.body["messages"].as_u64(), r.body["matched"].as_u64()),
        (Some(2), Some(1)),
        "{}",
        r.body
    );

    // Disabled: telemetry no longer fires it.
    let r = send(&p, "POST", "/api/v1/rules/hot/disable", &p.admin, &[], None).await;
    assert_eq!(r.body["enabled"], false);
    assert_eq!(post(90.0, 1_002_000).await, StatusCode::OK);
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert!(hooks.try_recv().is_err(), "a disabled rule fires nothing");
    let r = send(&p, "DELETE", "/api/v1/rules/hot", &p.admin, &[], None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn alarms_stream_over_a_websocket() {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let p = support::platform();
    send(
        &p,
        "POST",
        "/api/v1/devices",
        &p.admin,
        &[],
        Some(json!({"id": "fan-1"})),
    )
    .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    tokio::spawn(wulian_api::serve(
        listener,
        p.router.clone(),
        shutdown.clone(),
    ));

    // Without the upgrade headers: a problem, not a hang.
    let r = send(&p, "GET", "/api/v1/alarms/ws", &p.admin, &[], None).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.body["code"], "not_a_websocket");

    let mut request = format!("ws://{addr}/api/v1/alarms/ws")
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {}", p.admin).parse().unwrap(),
    );
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut ws, response) = tokio_tungstenite::client_async(request, stream)
        .await
        .unwrap();
    assert_eq!(response.status(), 101);

    let raise = json!({"device_id": "fan-1", "type": "stalled", "severity": "minor"});
    let r = send(&p, "POST", "/api/v1/alarms", &p.admin, &[], Some(raise)).await;
    assert_eq!(r.status, StatusCode::OK);
    let msg = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        loop {
            match ws.next().await {
                Some(Ok(m)) if m.is_text() => return m,
                Some(Ok(_)) => continue,
                other => panic!("{other:?}"),
            }
        }
    })
    .await
    .expect("an alarm message");
    let event: Value = serde_json::from_str(msg.to_text().unwrap()).unwrap();
    assert_eq!(event["change"], "raised");
    assert_eq!(event["alarm"]["type"], "stalled");

    // A wrong key never upgrades.
    let mut request = format!("ws://{addr}/api/v1/alarms/ws")
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("authorization", "Bearer wlk_nope".parse().unwrap());
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    assert!(
        tokio_tungstenite::client_async(request, stream)
            .await
            .is_err()
    );

    // A browser cannot set Authorization on a WebSocket: it offers the key as a subprotocol,
    // and the server picks the alarm protocol it offered beside it.
    let mut request = format!("ws://{addr}/api/v1/alarms/ws")
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        format!("wulian.alarms, wulian.bearer.{}", p.admin)
            .parse()
            .unwrap(),
    );
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (_ws, response) = tokio_tungstenite::client_async(request, stream)
        .await
        .unwrap();
    assert_eq!(response.status(), 101);
    assert_eq!(
        response.headers()["sec-websocket-protocol"],
        "wulian.alarms"
    );
    shutdown.cancel();
}

#[tokio::test]
async fn zones_feed_in_zone_rules() {
    let p = support::platform();
    let r = send(
        &p,
        "POST",
        "/api/v1/devices",
        &p.admin,
        &[],
        Some(json!({"id": "bike-7"})),
    )
    .await;
    let token = r.body["token"].as_str().unwrap().to_string();
    // West Lake's north shore, roughly: a square of about 1 km.
    let square = json!({"type": "Polygon", "coordinates": [[[120.14, 30.25], [120.15, 30.25], [120.15, 30.26], [120.14, 30.26], [120.14, 30.25]]]});
    let r = send(
        &p,
        "PUT",
        "/api/v1/zones/Depot%20A",
        &p.admin,
        &[],
        Some(json!({"kind": "parking", "polygon": square, "properties": {"capacity": 40}})),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let r = send(
        &p,
        "PUT",
        "/api/v1/zones/Depot%20A",
        &p.admin,
        &[],
        Some(json!({"kind": "parking", "polygon": square})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "a second PUT replaces");
    let bad = send(
        &p,
        "PUT",
        "/api/v1/zones/bad",
        &p.admin,
        &[],
        Some(json!({"polygon": [[1, 2], [3, 4]]})),
    )
    .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        bad.body["detail"].as_str().unwrap().contains("at least 3"),
        "{}",
        bad.body
    );
    let inside = send(
        &p,
        "GET",
        "/api/v1/zones/Depot%20A/contains?lat=30.255&lon=120.145",
        &p.admin,
        &[],
        None,
    )
    .await;
    assert_eq!(inside.body["inside"], true);

    let rule = json!({"id": "parked-outside",
        "sql": "SELECT device_id, lat, lon FROM 'devices/+/telemetry' WHERE NOT in_zone(lat, lon, 'Depot A')",
        "actions": [{"action": "alarm", "type": "outside_depot", "severity": "warning", "clear_when_false": true}]});
    let r = send(&p, "POST", "/api/v1/rules", &p.admin, &[], Some(rule)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let open_alarms = || {
        let p = &p;
        async move {
            send(p, "GET", "/api/v1/alarms?status=open", &p.admin, &[], None)
                .await
                .body
                .as_array()
                .unwrap()
                .len()
        }
    };
    let post = |lat: f64, lon: f64| {
        let (p, token) = (&p, token.clone());
        async move {
            send(
                p,
                "POST",
                "/api/v1/devices/bike-7/telemetry",
                &token,
                &[],
                Some(json!({"lat": lat, "lon": lon})),
            )
            .await
            .status
        }
    };
    assert_eq!(post(30.255, 120.145).await, StatusCode::OK);
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert_eq!(open_alarms().await, 0, "inside the zone: no alarm");
    assert_eq!(post(30.30, 120.20).await, StatusCode::OK);
    let mut waited = 0;
    while open_alarms().await == 0 && waited < 100 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        waited += 1;
    }
    assert_eq!(open_alarms().await, 1, "outside: an alarm");
    assert_eq!(post(30.255, 120.145).await, StatusCode::OK);
    let mut waited = 0;
    while open_alarms().await == 1 && waited < 100 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        waited += 1;
    }
    assert_eq!(open_alarms().await, 0, "back inside: cleared");

    let r = send(&p, "DELETE", "/api/v1/zones/Depot%20A", &p.admin, &[], None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = send(
        &p,
        "GET",
        "/api/v1/zones/Depot%20A/contains?lat=1&lon=1",
        &p.admin,
        &[],
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

/// Telemetry retention per profile (any write key of the tenant) and per tenant (installation
/// admin): set, shown, validated with the field named, cleared; the registry hands them to the
/// retention task, and the OpenAPI document describes them.
#[tokio::test]
async fn profile_and_tenant_retention_settings() {
    let p = support::platform();
    let mut body = sensor_profile("flag");
    body["settings"]["retention_days"] = json!(2);
    let r = send(
        &p,
        "POST",
        "/api/v1/profiles",
        &p.admin,
        &[],
        Some(body.clone()),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["settings"]["retention_days"], 2);
    assert_eq!(r.body["settings"]["report_interval_s"], 60);
    let r = send(
        &p,
        "POST",
        "/api/v1/devices",
        &p.admin,
        &[],
        Some(json!({"id": "s1", "profile": "sensor"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED);

    // Out of range: 422 naming the field and the allowed range; nothing changes.
    for bad in [json!(0), json!(36_501)] {
        let mut b = body.clone();
        b["settings"]["retention_days"] = bad.clone();
        let r = send(&p, "PUT", "/api/v1/profiles/sensor", &p.admin, &[], Some(b)).await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{bad}: {}",
            r.body
        );
        assert_eq!(r.body["code"], "invalid_field");
        let detail = r.body["detail"].as_str().unwrap();
        assert!(
            detail.starts_with("settings.retention_days: ") && detail.contains("from 1 to 36500"),
            "{detail}"
        );
    }
    let mut b = body.clone();
    b["settings"]["retention_days"] = json!("forever");
    let r = send(&p, "PUT", "/api/v1/profiles/sensor", &p.admin, &[], Some(b)).await;
    assert!(r.status.is_client_error(), "{}", r.body);
    let got = send(&p, "GET", "/api/v1/profiles/sensor", &p.admin, &[], None).await;
    assert_eq!(got.body["settings"]["retention_days"], 2);
    assert_eq!(got.body["version"], 1);

    // The retention task's view: the device through its profile.
    let o = p.registry.retention_overrides().unwrap();
    assert_eq!(o.effective_days("default", "s1", Some(30)), Some(2));

    // The tenant's retention: installation admin only; null clears it.
    let r = send(
        &p,
        "PATCH",
        "/api/v1/tenants/default",
        &p.admin,
        &[],
        Some(json!({"retention_days": 7})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["retention_days"], 7);
    let r = send(
        &p,
        "PATCH",
        "/api/v1/tenants/default",
        &p.admin,
        &[],
        Some(json!({"retention_days": 0})),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    assert!(
        r.body["detail"]
            .as_str()
            .unwrap()
            .starts_with("retention_days: "),
        "{}",
        r.body
    );
    // Leaving the field out keeps it.
    let r = send(
        &p,
        "PATCH",
        "/api/v1/tenants/default",
        &p.admin,
        &[],
        Some(json!({"name": "Renamed"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["name"], "Renamed");
    assert_eq!(r.body["retention_days"], 7);
    let o = p.registry.retention_overrides().unwrap();
    assert_eq!(o.effective_days("default", "other-device", None), Some(7));
    assert_eq!(o.effective_days("default", "s1", None), Some(2));
    let got = send(&p, "GET", "/api/v1/tenants/default", &p.admin, &[], None).await;
    assert_eq!(got.body["retention_days"], 7);

    // A tenant's own admin may read its tenant but not change its retention.
    let r = send(
        &p,
        "POST",
        "/api/v1/tenants",
        &p.admin,
        &[],
        Some(json!({"id": "other", "name": "o"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.body["retention_days"], Value::Null);
    let key = send(
        &p,
        "POST",
        "/api/v1/api-keys",
        &p.admin,
        &[],
        Some(json!({"name": "k", "scope": "admin", "tenant": "other"})),
    )
    .await;
    let other = key.body["secret"].as_str().unwrap();
    let r = send(
        &p,
        "PATCH",
        "/api/v1/tenants/other",
        other,
        &[],
        Some(json!({"retention_days": 36500})),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    let r = send(
        &p,
        "PATCH",
        "/api/v1/tenants/nope",
        &p.admin,
        &[],
        Some(json!({"retention_days": 3})),
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);
    let r = send(
        &p,
        "PATCH",
        "/api/v1/tenants/default",
        &p.admin,
        &[],
        Some(json!({"retention_days": null})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["retention_days"], Value::Null);
    assert!(p.registry.retention_overrides().unwrap().tenants.is_empty());

    // Null on the profile inherits again (and the field is left out of its JSON).
    let mut b = body.clone();
    b["settings"]["retention_days"] = Value::Null;
    let r = send(&p, "PUT", "/api/v1/profiles/sensor", &p.admin, &[], Some(b)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(
        r.body["settings"].get("retention_days").is_none(),
        "{}",
        r.body
    );
    assert!(p.registry.retention_overrides().unwrap().devices.is_empty());

    // Documented, and counted in the metrics.
    let doc = send(&p, "GET", "/api/v1/openapi.json", &p.admin, &[], None).await;
    assert!(doc.body["paths"]["/api/v1/tenants/{tenant}"]["patch"].is_object());
    let schemas = &doc.body["components"]["schemas"];
    assert_eq!(
        schemas["ProfileSettingsSchema"]["properties"]["retention_days"]["maximum"],
        36500
    );
    assert!(schemas["UpdateTenant"]["properties"]["retention_days"].is_object());
    assert!(schemas["TenantView"]["properties"]["retention_days"].is_object());
    let (status, _, metrics) =
        send_raw(&p, "GET", "/api/v1/metrics", &p.admin, &[], Vec::new()).await;
    assert_eq!(status, StatusCode::OK);
    let metrics = String::from_utf8(metrics).unwrap();
    assert!(metrics.contains("wulian_tsdb_retention_partitions_rewritten_total 0"));
    // Histograms: cumulative buckets in seconds, ending with +Inf.
    assert!(metrics.contains("# TYPE wulian_tsdb_wal_fsync_seconds histogram"));
    assert!(metrics.contains("wulian_tsdb_wal_fsync_seconds_bucket{le=\"0.0001\"} "));
    assert!(metrics.contains("wulian_tsdb_wal_fsync_seconds_bucket{le=\"+Inf\"} "));
    assert!(metrics.contains("wulian_rules_action_latency_seconds_bucket{le=\"0.001\"} "));
}
