//! `/api/v1/live` with a real WebSocket client (tokio-tungstenite) against the API served on
//! loopback: telemetry, twin and command events of the subscribed devices, tenant isolation,
//! refused credentials, the Origin rule for session cookies, subscribe messages and the
//! `lagged` notice of a socket that fell behind.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use futures_util::{SinkExt, StreamExt};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tower::ServiceExt;

type Ws = WebSocketStream<TcpStream>;

const WAIT: Duration = Duration::from_secs(5);

struct Live {
    p: support::Platform,
    addr: SocketAddr,
    _shutdown: tokio_util::sync::DropGuard,
}

async fn start() -> Live {
    let p = support::platform();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    tokio::spawn(wulian_api::serve(
        listener,
        p.router.clone(),
        shutdown.clone(),
    ));
    Live {
        p,
        addr,
        _shutdown: shutdown.drop_guard(),
    }
}

impl Live {
    /// An API call (in process); `auth` is a bearer secret or a `cookie:` header value.
    async fn call(
        &self,
        method: &str,
        uri: &str,
        auth: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = Request::builder().method(method).uri(uri);
        req = match auth.strip_prefix("cookie:") {
            Some(cookie) => req.header("cookie", cookie),
            None => req.header("authorization", format!("Bearer {auth}")),
        };
        let body = match body {
            Some(body) => {
                req = req.header("content-type", "application/json");
                Body::from(body.to_string())
            }
            None => Body::empty(),
        };
        let resp =
            tokio::time::timeout(WAIT, self.p.router.clone().oneshot(req.body(body).unwrap()))
                .await
                .expect("an answer")
                .unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let mut value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if let Some(cookie) = headers.get("set-cookie") {
            value["set-cookie"] = json!(cookie.to_str().unwrap());
        }
        (status, value)
    }

    /// `/api/v1/metrics` as the installation admin.
    async fn metrics(&self) -> String {
        let req = Request::builder()
            .uri("/api/v1/metrics")
            .header("authorization", format!("Bearer {}", self.p.admin))
            .body(Body::empty())
            .unwrap();
        let resp = tokio::time::timeout(WAIT, self.p.router.clone().oneshot(req))
            .await
            .expect("an answer")
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    /// A device of the tenant `key` administers; returns its token.
    async fn device(&self, key: &str, id: &str) -> String {
        let (s, d) = self
            .call("POST", "/api/v1/devices", key, Some(json!({"id": id})))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{d}");
        d["token"].as_str().unwrap().to_string()
    }

    /// A second tenant and its admin key.
    async fn tenant(&self, id: &str) -> String {
        let admin = self.p.admin.clone();
        let (s, t) = self
            .call(
                "POST",
                "/api/v1/tenants",
                &admin,
                Some(json!({"id": id, "name": id})),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{t}");
        let (s, key) = self
            .call(
                "POST",
                "/api/v1/api-keys",
                &admin,
                Some(json!({"name": "admin", "scope": "admin", "tenant": id})),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{key}");
        key["secret"].as_str().unwrap().to_string()
    }

    /// Opens `/api/v1/live{query}` with these extra headers.
    async fn open(&self, query: &str, headers: &[(&str, &str)]) -> Result<Ws, WsError> {
        let mut request = format!("ws://{}/api/v1/live{query}", self.addr)
            .into_client_request()
            .unwrap();
        for (name, value) in headers {
            request.headers_mut().insert(
                axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        let stream = TcpStream::connect(self.addr).await.unwrap();
        let (ws, response) = tokio_tungstenite::client_async(request, stream).await?;
        assert_eq!(response.status(), 101);
        Ok(ws)
    }

    /// Opens with an API key and waits for the `subscribed` confirmation.
    async fn open_key(&self, query: &str, key: &str) -> (Ws, Value) {
        let mut ws = self
            .open(query, &[("authorization", &format!("Bearer {key}"))])
            .await
            .expect("the upgrade");
        let first = next(&mut ws).await.expect("a subscribed message");
        assert_eq!(first["type"], "subscribed", "{first}");
        (ws, first)
    }
}

/// The HTTP status of a refused upgrade, and its problem code.
async fn refused(result: Result<Ws, WsError>) -> (u16, String) {
    match result {
        Err(WsError::Http(response)) => {
            let body: Value = response
                .body()
                .as_deref()
                .and_then(|b| serde_json::from_slice(b).ok())
                .unwrap_or(Value::Null);
            (
                response.status().as_u16(),
                body["code"].as_str().unwrap_or_default().to_string(),
            )
        }
        Err(other) => panic!("expected an HTTP refusal, got {other}"),
        Ok(_) => panic!("the upgrade was accepted"),
    }
}

/// The next JSON message, or `None` when none comes within a short while.
async fn next(ws: &mut Ws) -> Option<Value> {
    next_within(ws, WAIT).await
}

async fn next_within(ws: &mut Ws, wait: Duration) -> Option<Value> {
    tokio::time::timeout(wait, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(text))) => return Some(serde_json::from_str(&text).unwrap()),
                Some(Ok(Message::Close(_))) | None => return None,
                Some(Ok(_)) => continue,
                Some(Err(error)) => panic!("{error}"),
            }
        }
    })
    .await
    .ok()
    .flatten()
}

/// Waits for the next message of `kind`, skipping others.
async fn next_of(ws: &mut Ws, kind: &str) -> Value {
    loop {
        let msg = next(ws)
            .await
            .unwrap_or_else(|| panic!("no {kind} message"));
        if msg["type"] == kind {
            return msg;
        }
    }
}

#[tokio::test]
async fn a_device_page_gets_its_telemetry_twin_and_commands_live() {
    let live = start().await;
    let admin = live.p.admin.clone();
    let token = live.device(&admin, "d1").await;
    live.device(&admin, "d2").await;

    let (mut ws, subscribed) = live.open_key("?devices=d1", &admin).await;
    assert_eq!(
        subscribed,
        json!({"type": "subscribed", "devices": ["d1"], "status": "devices"})
    );

    // Telemetry of d2 is not d1's; d1's arrives with its values, one event per timestamp.
    let (s, _) = live
        .call("POST", "/api/v1/devices/d2/telemetry", &admin, None)
        .await;
    assert_ne!(s, StatusCode::OK, "an API key cannot post as a device");
    let body = json!([{"ts": 1_700_000_000_000_i64, "temp": 21.5, "door": "open"}, {"ts": 1_700_000_001_000_i64, "temp": 21.75}]);
    let (s, r) = live
        .call("POST", "/api/v1/devices/d1/telemetry", &token, Some(body))
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    let first = next(&mut ws).await.unwrap();
    assert_eq!(
        first,
        json!({"type": "telemetry", "device": "d1", "ts": 1_700_000_000_000_i64, "values": {"temp": 21.5, "door": "open"}})
    );
    let second = next(&mut ws).await.unwrap();
    assert_eq!(second["values"], json!({"temp": 21.75}));

    // A desired property set through the API.
    let (s, r) = live
        .call(
            "PATCH",
            "/api/v1/devices/d1/twin/desired",
            &admin,
            Some(json!({"interval_s": 30})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    let twin = next_of(&mut ws, "twin").await;
    assert_eq!(twin["device"], "d1");
    assert_eq!(twin["section"], "desired");
    assert_eq!(twin["desired"], json!({"interval_s": 30}));
    assert_eq!(twin["delta"], json!({"interval_s": 30}));

    // A command to a device that is not connected: stored, then undelivered.
    let (s, r) = live
        .call(
            "POST",
            "/api/v1/devices/d1/commands",
            &admin,
            Some(json!({"name": "ring", "params": {}})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    let command = next_of(&mut ws, "command").await;
    assert_eq!(command["device"], "d1");
    assert_eq!(command["command"]["id"], r["id"]);
    assert_eq!(command["command"]["status"], "undelivered");
    assert!(command["command"].get("tenant").is_some());

    // Switching to d2 by message: d1's telemetry stops.
    ws.send(Message::text(
        json!({"type": "subscribe", "devices": ["d2"]}).to_string(),
    ))
    .await
    .unwrap();
    let msg = next(&mut ws).await.unwrap();
    assert_eq!(
        msg,
        json!({"type": "subscribed", "devices": ["d2"], "status": "devices"})
    );
    live.call(
        "POST",
        "/api/v1/devices/d1/telemetry",
        &token,
        Some(json!({"temp": 1.0})),
    )
    .await;
    assert!(
        next_within(&mut ws, Duration::from_millis(300))
            .await
            .is_none()
    );

    // Bad messages get an error and keep the socket.
    ws.send(Message::text("{\"type\": \"nope\"}"))
        .await
        .unwrap();
    assert_eq!(next(&mut ws).await.unwrap()["code"], "invalid_message");
    ws.send(Message::text(
        json!({"type": "subscribe", "devices": ["ghost"]}).to_string(),
    ))
    .await
    .unwrap();
    assert_eq!(next(&mut ws).await.unwrap()["code"], "device_not_found");
    ws.send(Message::text(
        json!({"type": "subscribe", "status": "some"}).to_string(),
    ))
    .await
    .unwrap();
    assert_eq!(next(&mut ws).await.unwrap()["code"], "invalid_query");
}

#[tokio::test]
async fn tenants_never_see_each_other_and_bad_credentials_never_upgrade() {
    let live = start().await;
    let admin = live.p.admin.clone();
    let token = live.device(&admin, "d1").await;
    let other = live.tenant("acme").await;
    live.device(&other, "o1").await;

    // Another tenant's device reads as missing, like everywhere in the API.
    assert_eq!(
        refused(
            live.open(
                "?devices=d1",
                &[("authorization", &format!("Bearer {other}"))]
            )
            .await
        )
        .await,
        (404, "device_not_found".to_string())
    );
    let (mut theirs, _) = live.open_key("?devices=o1&status=all", &other).await;
    let (mut ours, _) = live.open_key("?devices=d1&status=all", &admin).await;
    live.call(
        "POST",
        "/api/v1/devices/d1/telemetry",
        &token,
        Some(json!({"temp": 20.0})),
    )
    .await;
    assert_eq!(next(&mut ours).await.unwrap()["device"], "d1");
    assert!(
        next_within(&mut theirs, Duration::from_millis(300))
            .await
            .is_none(),
        "acme's socket gets nothing of the default tenant"
    );

    assert_eq!(
        refused(
            live.open("", &[("authorization", "Bearer wlk_wrong")])
                .await
        )
        .await,
        (401, "invalid_credentials".to_string())
    );
    assert_eq!(refused(live.open("", &[]).await).await.0, 401);
    // A browser signed in with an API key offers it as a subprotocol; the server picks
    // `wulian.live` (a browser fails a connection whose server picks none).
    let offered = format!("wulian.live, wulian.bearer.{admin}");
    let mut ws = live
        .open("?devices=d1", &[("sec-websocket-protocol", &offered)])
        .await
        .expect("the key as a subprotocol");
    assert_eq!(next(&mut ws).await.unwrap()["type"], "subscribed");
    assert_eq!(
        refused(
            live.open(
                "",
                &[(
                    "sec-websocket-protocol",
                    "wulian.live, wulian.bearer.wlk_wrong"
                )]
            )
            .await
        )
        .await,
        (401, "invalid_credentials".to_string())
    );
    assert_eq!(
        refused(
            live.open(
                "?status=everything",
                &[("authorization", &format!("Bearer {admin}"))]
            )
            .await
        )
        .await,
        (400, "invalid_query".to_string())
    );
    assert_eq!(
        refused(
            live.open("?nope=1", &[("authorization", &format!("Bearer {admin}"))])
                .await
        )
        .await,
        (400, "unknown_parameter".to_string())
    );
    // Not an upgrade: a problem document, not a hang.
    let (s, r) = live.call("GET", "/api/v1/live", &admin, None).await;
    assert_eq!(
        (s, r["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("not_a_websocket"))
    );
    assert!(
        live.call("GET", "/api/v1/openapi.json", &admin, None)
            .await
            .1["paths"]["/api/v1/live"]
            .is_object()
    );
}

#[tokio::test]
async fn a_console_session_needs_a_page_of_this_server() {
    let live = start().await;
    let admin = live.p.admin.clone();
    live.device(&admin, "d1").await;
    let (s, r) = live
        .call(
            "POST",
            "/api/v1/users",
            &admin,
            Some(
                json!({"username": "vera", "role": "viewer", "password": "correct horse battery"}),
            ),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{r}");
    let (s, r) = live
        .call("POST", "/api/v1/session", "", Some(json!({"tenant": "default", "username": "vera", "password": "correct horse battery"})))
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    let cookie = r["set-cookie"]
        .as_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let here = format!("http://{}", live.addr);

    assert_eq!(
        refused(live.open("?devices=d1", &[("cookie", &cookie)]).await).await,
        (403, "origin_mismatch".to_string())
    );
    assert_eq!(
        refused(
            live.open(
                "?devices=d1",
                &[("cookie", &cookie), ("origin", "http://evil.example")]
            )
            .await
        )
        .await,
        (403, "origin_mismatch".to_string())
    );
    // A viewer may watch (reading is all a stream does).
    let mut ws = live
        .open("?devices=d1", &[("cookie", &cookie), ("origin", &here)])
        .await
        .expect("a page of this server");
    assert_eq!(next(&mut ws).await.unwrap()["type"], "subscribed");
    assert_eq!(
        refused(
            live.open(
                "",
                &[("cookie", "wulian_session=wls_forged"), ("origin", &here)]
            )
            .await
        )
        .await,
        (401, "session_expired".to_string())
    );
}

#[tokio::test]
async fn a_socket_that_falls_behind_is_told_how_many_events_it_missed() {
    let live = start().await;
    let admin = live.p.admin.clone();
    let token = live.device(&admin, "d1").await;
    let (mut ws, _) = live.open_key("?devices=d1", &admin).await;

    // One request with more timestamps than a channel holds: the events are published on this
    // (single-threaded) runtime in one go, before the socket's task can forward any.
    let total = 1_800;
    let points: Vec<Value> = (0..total)
        .map(|i| json!({"ts": 1_700_000_000_000_i64 + i, "n": i}))
        .collect();
    let (s, r) = live
        .call(
            "POST",
            "/api/v1/devices/d1/telemetry",
            &token,
            Some(Value::Array(points)),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    let lagged = next(&mut ws).await.unwrap();
    let capacity = wulian_ingest::live::CHANNEL_CAPACITY as i64;
    assert_eq!(
        lagged,
        json!({"type": "lagged", "dropped": total - capacity})
    );
    let mut received = 0;
    let mut last = None;
    while let Some(msg) = next_within(&mut ws, Duration::from_millis(500)).await {
        received += 1;
        last = Some(msg);
    }
    assert_eq!(received, capacity, "the newest events are kept");
    assert_eq!(last.unwrap()["values"]["n"], json!((total - 1) as f64));

    // The hub's counters are on /api/v1/metrics: one stream open, every event published once,
    // the ones this socket missed counted as dropped.
    let metrics = live.metrics().await;
    assert!(metrics.contains("\nwulian_live_streams 1\n"), "{metrics}");
    assert!(
        metrics.contains(&format!("\nwulian_live_events_total {total}\n")),
        "{metrics}"
    );
    let dropped = total - capacity;
    assert!(
        metrics.contains(&format!("\nwulian_live_events_dropped_total {dropped}\n")),
        "{metrics}"
    );
    drop(ws);
    // The server notices the closed socket on its own time.
    let closed = tokio::time::timeout(WAIT, async {
        loop {
            if live.metrics().await.contains("\nwulian_live_streams 0\n") {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(closed.is_ok(), "the stream count falls back to 0");
}

/// Fan-out cost: 100 sockets watch one device
/// while telemetry is posted; prints the posting rate with and without them and the delay
/// from a POST's answer to the last socket's receipt. Run with
/// `cargo test --release -p wulian-api --test live -- --ignored --nocapture fan_out`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check"]
async fn fan_out_to_100_sockets() {
    const SOCKETS: usize = 100;
    const MESSAGES: usize = 500;
    let live = start().await;
    let admin = live.p.admin.clone();
    let token = live.device(&admin, "d1").await;

    let post_all = |n: usize| {
        let live = &live;
        let token = token.clone();
        async move {
            let started = std::time::Instant::now();
            for i in 0..n {
                let body = json!({"n": i as f64});
                let (s, _) = live
                    .call("POST", "/api/v1/devices/d1/telemetry", &token, Some(body))
                    .await;
                assert_eq!(s, StatusCode::OK);
            }
            started.elapsed()
        }
    };
    let alone = post_all(MESSAGES).await;

    let mut sockets = Vec::new();
    for _ in 0..SOCKETS {
        sockets.push(live.open_key("?devices=d1", &admin).await.0);
    }
    let readers: Vec<_> = sockets
        .into_iter()
        .map(|mut ws| {
            tokio::spawn(async move {
                let mut got = 0;
                let mut lagged = 0;
                while got < MESSAGES {
                    match next(&mut ws).await {
                        Some(msg) if msg["type"] == "telemetry" => got += 1,
                        Some(msg) if msg["type"] == "lagged" => {
                            let n = msg["dropped"].as_u64().unwrap() as usize;
                            lagged += n;
                            got += n;
                        }
                        Some(_) => {}
                        None => break,
                    }
                }
                (std::time::Instant::now(), lagged)
            })
        })
        .collect();
    let watched = post_all(MESSAGES).await;
    let posted_at = std::time::Instant::now();
    let mut last = posted_at;
    let mut dropped = 0;
    for reader in readers {
        let (done, lagged) = reader.await.unwrap();
        last = last.max(done);
        dropped += lagged;
    }
    println!(
        "{MESSAGES} posts: {:.0}/s without sockets, {:.0}/s with {SOCKETS} sockets watching; \
         {} events delivered, {dropped} dropped; last socket done {:?} after the last answer",
        MESSAGES as f64 / alone.as_secs_f64(),
        MESSAGES as f64 / watched.as_secs_f64(),
        SOCKETS * MESSAGES - dropped,
        last.saturating_duration_since(posted_at),
    );
}
