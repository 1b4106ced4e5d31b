//! The endpoint over a real UDP socket on loopback, with the real registry, telemetry store,
//! pipeline and command service (the broker in memory, no MQTT client connected).

use std::sync::Arc;
use std::time::Duration;

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType, ResponseType};
use serde_json::{Value, json};
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;
use wulian_broker::{Broker, BrokerConfig};
use wulian_coap::{CoapLimits, CoapServer};
use wulian_ingest::{CommandRequest, CommandService, DeviceAuthenticator, Pipeline};
use wulian_registry::test_support::{new_device, registry_with_tenant};
use wulian_registry::{CommandStatus, Registry};
use wulian_tsdb::Tsdb;

struct Harness {
    _dir: tempfile::TempDir,
    registry: Arc<Registry>,
    tsdb: Tsdb,
    commands: Arc<CommandService>,
    token: String,
    client: UdpSocket,
    shutdown: CancellationToken,
    served: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn start(limits: CoapLimits) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let (registry, _) = registry_with_tenant("acme").unwrap();
    let (_, token) = registry.create_device("acme", &new_device("nb-1")).unwrap();
    let registry = Arc::new(registry);
    let tsdb = Tsdb::open(wulian_tsdb::Config::new(dir.path().join("tsdb"))).unwrap();
    let pipeline = Pipeline::new(tsdb.clone());
    let broker = Broker::new(
        BrokerConfig::default(),
        DeviceAuthenticator::new(Arc::clone(&registry)),
        pipeline.clone(),
    );
    let commands = CommandService::new(Arc::clone(&registry), broker);
    pipeline.attach_commands(Arc::clone(&commands));
    let server = CoapServer::new(
        Arc::clone(&registry),
        pipeline,
        Arc::clone(&commands),
        limits,
    );
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let served = {
        let shutdown = shutdown.clone();
        tokio::spawn(async move { server.serve(socket, shutdown).await })
    };
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    client.connect(addr).await.unwrap();
    Harness {
        _dir: dir,
        registry,
        tsdb,
        commands,
        token,
        client,
        shutdown,
        served,
    }
}

fn request(
    kind: MessageType,
    id: u16,
    method: RequestType,
    path: &str,
    token: &str,
    body: &[u8],
) -> Packet {
    let mut p = Packet::new();
    p.header.set_version(1);
    p.header.set_type(kind);
    p.header.message_id = id;
    p.header.code = MessageClass::Request(method);
    p.set_token(id.to_be_bytes().to_vec());
    for segment in path.split('/') {
        p.add_option(CoapOption::UriPath, segment.as_bytes().to_vec());
    }
    p.add_option(CoapOption::UriQuery, format!("t={token}").into_bytes());
    p.payload = body.to_vec();
    p
}

impl Harness {
    /// Sends a request and waits for its answer, retransmitting the same message (same id)
    /// every 2 s as a CoAP client does (RFC 7252 §4.2): UDP may drop a datagram when the
    /// machine is busy, and the server deduplicates retransmissions.
    async fn exchange(&self, packet: &Packet) -> Packet {
        let bytes = packet.to_bytes_unlimited().unwrap();
        for _ in 0..7 {
            self.client.send(&bytes).await.unwrap();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
            let mut buf = [0u8; 2048];
            while let Ok(len) = tokio::time::timeout_at(deadline, self.client.recv(&mut buf)).await
            {
                let answer = Packet::from_bytes(&buf[..len.unwrap()]).unwrap();
                // A late answer to an earlier retransmission of another request is skipped.
                if answer.get_token() == packet.get_token() {
                    return answer;
                }
            }
        }
        panic!("no response after 7 transmissions");
    }

    async fn post(&self, id: u16, path: &str, body: &str) -> Packet {
        let p = request(
            MessageType::Confirmable,
            id,
            RequestType::Post,
            path,
            &self.token,
            body.as_bytes(),
        );
        self.exchange(&p).await
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), self.served)
            .await
            .expect("serve returns after shutdown")
            .unwrap()
            .unwrap();
    }
}

fn code(p: &Packet) -> MessageClass {
    p.header.code
}

fn response(code: ResponseType) -> MessageClass {
    MessageClass::Response(code)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_ride_on_the_next_uplink() {
    let h = start(CoapLimits::default()).await;
    // Not yet seen over CoAP: a command is undelivered at once, as for an offline MQTT device.
    let early = h
        .commands
        .send(
            "acme",
            "nb-1",
            CommandRequest {
                name: "early".into(),
                params: json!({}),
                timeout: Duration::from_secs(5),
            },
        )
        .await
        .unwrap();
    assert_eq!(early.command.status, CommandStatus::Undelivered);

    let ack = h
        .post(1, "devices/nb-1/telemetry", r#"{"temp": 20.5}"#)
        .await;
    assert_eq!(code(&ack), response(ResponseType::Changed));
    assert!(ack.payload.is_empty(), "no command waiting, no payload");

    // Seen now: the next command waits for the device.
    let sent = h
        .commands
        .send(
            "acme",
            "nb-1",
            CommandRequest {
                name: "unlock".into(),
                params: json!({"trip": 42}),
                timeout: Duration::from_secs(20),
            },
        )
        .await
        .unwrap();
    assert_eq!(sent.command.status, CommandStatus::Pending);
    let id = sent.command.id.clone();

    let ack = h
        .post(2, "devices/nb-1/telemetry", r#"{"temp": 20.6}"#)
        .await;
    assert_eq!(code(&ack), response(ResponseType::Changed));
    assert_eq!(
        ack.get_first_option(CoapOption::ContentFormat),
        Some(&vec![50])
    );
    let delivered: Value = serde_json::from_slice(&ack.payload).unwrap();
    assert_eq!(
        delivered,
        json!([{"id": id, "name": "unlock", "params": {"trip": 42}}])
    );
    assert_eq!(
        h.registry.get_command("acme", "nb-1", &id).unwrap().status,
        CommandStatus::Sent
    );

    // The ACK was "lost": the retransmitted uplink gets the same commands, stored once.
    let again = h
        .post(2, "devices/nb-1/telemetry", r#"{"temp": 20.6}"#)
        .await;
    assert_eq!(again, ack);
    // Stored once: one point with that value (counting points in the store's stats would also
    // count a copy written again by a background flush).
    let stored = h
        .tsdb
        .range(
            &wulian_tsdb::SeriesKey::new("acme", "nb-1", "temp"),
            0,
            i64::MAX,
            100,
        )
        .points;
    let copies = stored
        .iter()
        .filter(|p| p.value == wulian_tsdb::Value::F64(20.6))
        .count();
    assert_eq!(copies, 1, "{stored:?}");

    let answer = h
        .post(
            3,
            &format!("devices/nb-1/commands/{id}/response"),
            r#"{"error": "jammed"}"#,
        )
        .await;
    assert_eq!(code(&answer), response(ResponseType::Changed));
    let done = tokio::time::timeout(Duration::from_secs(5), sent.finished)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(done.status, CommandStatus::Failed);
    assert_eq!(done.response, Some(json!({"error": "jammed"})));

    // Late or unknown answers: 4.04 with a diagnostic.
    let late = h
        .post(
            4,
            &format!("devices/nb-1/commands/{id}/response"),
            r#"{"ok": true}"#,
        )
        .await;
    assert_eq!(code(&late), response(ResponseType::NotFound));
    assert!(String::from_utf8_lossy(&late.payload).contains(&id));

    // Polling explicitly: 2.05 with [] when nothing waits.
    let get = request(
        MessageType::Confirmable,
        5,
        RequestType::Get,
        "devices/nb-1/commands",
        &h.token,
        b"",
    );
    let polled = h.exchange(&get).await;
    assert_eq!(code(&polled), response(ResponseType::Content));
    assert_eq!(polled.payload, b"[]");

    // A command never fetched within its timeout is undelivered.
    let missed = h
        .commands
        .send(
            "acme",
            "nb-1",
            CommandRequest {
                name: "missed".into(),
                params: json!(null),
                timeout: Duration::from_millis(200),
            },
        )
        .await
        .unwrap();
    let missed = tokio::time::timeout(Duration::from_secs(5), missed.finished)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(missed.status, CommandStatus::Undelivered);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_are_cut_to_the_response_size() {
    let limits = CoapLimits {
        max_message_bytes: 256,
        ..CoapLimits::default()
    };
    let h = start(limits).await;
    h.post(1, "devices/nb-1/telemetry", r#"{"n": 1}"#).await;
    let big = h
        .commands
        .send(
            "acme",
            "nb-1",
            CommandRequest {
                name: "big".into(),
                params: json!("x".repeat(400)),
                timeout: Duration::from_secs(10),
            },
        )
        .await
        .unwrap();
    let mut small = Vec::new();
    for i in 0..4 {
        let sent = h
            .commands
            .send(
                "acme",
                "nb-1",
                CommandRequest {
                    name: format!("s{i}"),
                    params: json!({"pad": "y".repeat(40)}),
                    timeout: Duration::from_secs(10),
                },
            )
            .await
            .unwrap();
        small.push(sent.command.id);
    }
    // 224 bytes of commands per response: two small ones each time; the big one never fits.
    let mut got = Vec::new();
    for id in 2..5 {
        let ack = h.post(id, "devices/nb-1/telemetry", r#"{"n": 2}"#).await;
        assert!(ack.payload.len() <= 224, "{}", ack.payload.len());
        let commands: Vec<Value> = if ack.payload.is_empty() {
            Vec::new()
        } else {
            serde_json::from_slice(&ack.payload).unwrap()
        };
        got.extend(
            commands
                .iter()
                .map(|c| c["id"].as_str().unwrap().to_string()),
        );
    }
    assert_eq!(got, small);
    let big = tokio::time::timeout(Duration::from_secs(5), big.finished)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(big.status, CommandStatus::Undelivered);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_layer_and_refusals() {
    let h = start(CoapLimits::default()).await;

    // NON → NON with the request's token (and a message id of ours).
    let non = request(
        MessageType::NonConfirmable,
        10,
        RequestType::Post,
        "devices/nb-1/telemetry",
        &h.token,
        br#"{"a": 1}"#,
    );
    let reply = h.exchange(&non).await;
    assert_eq!(reply.header.get_type(), MessageType::NonConfirmable);
    assert_eq!(reply.get_token(), &10u16.to_be_bytes());
    assert_eq!(code(&reply), response(ResponseType::Changed));

    let wrong = request(
        MessageType::Confirmable,
        11,
        RequestType::Post,
        "devices/nb-1/telemetry",
        "wld_nope",
        br#"{"a": 1}"#,
    );
    let reply = h.exchange(&wrong).await;
    assert_eq!(reply.header.get_type(), MessageType::Acknowledgement);
    assert_eq!(reply.header.message_id, 11);
    assert_eq!(code(&reply), response(ResponseType::Unauthorized));
    assert_eq!(
        reply.payload,
        b"invalid_credentials: unknown device or wrong token"
    );

    let reply = h.post(12, "devices/nb-1/telemetry", r#"{"a": [1]}"#).await;
    assert_eq!(code(&reply), response(ResponseType::BadRequest));
    let diagnostic = String::from_utf8_lossy(&reply.payload).into_owned();
    assert!(diagnostic.starts_with("unsupported_value"), "{diagnostic}");

    // application/xml (41) is not taken.
    let mut xml = request(
        MessageType::Confirmable,
        13,
        RequestType::Post,
        "devices/nb-1/telemetry",
        &h.token,
        b"<a>1</a>",
    );
    xml.add_option(CoapOption::ContentFormat, vec![41]);
    let reply = h.exchange(&xml).await;
    assert_eq!(
        code(&reply),
        response(ResponseType::UnsupportedContentFormat)
    );
    assert_eq!(h.tsdb.stats().points, 1);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_rate_a_confirmable_request_gets_5_03() {
    let limits = CoapLimits {
        peer_rate: 1,
        peer_burst: 2,
        ..CoapLimits::default()
    };
    let h = start(limits).await;
    let get = |id| {
        request(
            MessageType::Confirmable,
            id,
            RequestType::Get,
            "devices/nb-1/commands",
            &h.token,
            b"",
        )
    };
    assert_eq!(
        code(&h.exchange(&get(1)).await),
        response(ResponseType::Content)
    );
    assert_eq!(
        code(&h.exchange(&get(2)).await),
        response(ResponseType::Content)
    );
    let refused = h.exchange(&get(3)).await;
    assert_eq!(code(&refused), response(ResponseType::ServiceUnavailable));
    assert_eq!(refused.get_first_option(CoapOption::MaxAge), Some(&vec![1]));
    // A refused request is not remembered: its retry after Max-Age is processed.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        code(&h.exchange(&get(3)).await),
        response(ResponseType::Content)
    );
    h.stop().await;
}
