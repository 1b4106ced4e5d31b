//! Shared fixtures: an in-process broker on 127.0.0.1:0, a test authenticator and a
//! recording sink, rumqttc clients whose events are pumped into bounded channels, and raw
//! socket helpers built on the codec for cases rumqttc cannot produce.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use wulian_broker::{
    Authenticator, Broker, BrokerConfig, ConnectRequest, ConnectionInfo, Identity, InboundMessage,
    MessageSink, Principal, Properties, Protocol, ReasonCode, SinkError, Staged, TopicPolicy,
};
use wulian_mqtt::{Connect, LastWill, Packet};

/// How long any single wait in a test may take.
pub const WAIT: Duration = Duration::from_secs(5);

/// Accepts "dev1"/"secret" (tenant t1, device dev1), "dev2"/"secret" (t1, dev2),
/// "t2dev1"/"secret" (tenant t2, device dev1), "ops"/"secret" (t1, `$SYS` access) and
/// "app"/"secret" (t1, an application that may read every device's topics and publish
/// commands to them).
pub struct TestAuth;

#[async_trait::async_trait]
impl Authenticator for TestAuth {
    async fn authenticate(&self, req: &ConnectRequest) -> Result<Identity, ReasonCode> {
        if req.username.as_deref() == Some("ops") && req.password.as_deref() == Some(b"secret") {
            // An installation operator: may read `$SYS`.
            return Ok(Identity {
                tenant: "t1".into(),
                principal: Principal::Anonymous,
                policy: Arc::new(TopicPolicy {
                    publish: vec!["ops/#".into()],
                    subscribe: vec!["ops/#".into()],
                    ..TopicPolicy::default()
                }),
                sys_access: true,
            });
        }
        if req.username.as_deref() == Some("app") && req.password.as_deref() == Some(b"secret") {
            return Ok(Identity {
                tenant: "t1".into(),
                principal: Principal::Application {
                    key_id: "app".into(),
                },
                policy: Arc::new(TopicPolicy {
                    publish: vec!["devices/+/commands/#".into()],
                    subscribe: vec!["devices/#".into()],
                    ..TopicPolicy::default()
                }),
                sys_access: false,
            });
        }
        let (tenant, device) = match req.username.as_deref() {
            Some("dev1") => ("t1", "dev1"),
            Some("dev2") => ("t1", "dev2"),
            Some("t2dev1") => ("t2", "dev1"),
            _ => return Err(ReasonCode::BadUserNameOrPassword),
        };
        if req.password.as_deref() != Some(b"secret".as_slice()) {
            return Err(ReasonCode::BadUserNameOrPassword);
        }
        Ok(Identity {
            tenant: tenant.into(),
            principal: Principal::Device {
                device_id: device.into(),
            },
            policy: TopicPolicy::own_device(),
            sys_access: false,
        })
    }
}

/// Records everything; rejects payload "reject" (or everything while `reject` is set).
#[derive(Default)]
pub struct TestSink {
    pub messages: Mutex<Vec<(String, InboundMessage)>>,
    pub reject: AtomicBool,
    pub connects: Mutex<Vec<String>>,
    pub disconnects: Mutex<Vec<(String, String)>>,
    /// Two steps (`stage_publish_batch`): QoS 0/1 batches are accepted at once and made
    /// "durable" (recorded) when `durable_gate` is notified, once per batch.
    pub two_step: AtomicBool,
    pub durable_gate: tokio::sync::Notify,
    /// The durable step of a two-step batch fails.
    pub fail_durable: AtomicBool,
}

impl TestSink {
    pub fn topics(&self) -> Vec<(String, String)> {
        self.messages
            .lock()
            .iter()
            .map(|(t, m)| (t.clone(), m.topic.clone()))
            .collect()
    }

    pub fn count(&self) -> usize {
        self.messages.lock().len()
    }
}

#[async_trait::async_trait]
impl MessageSink for TestSink {
    async fn on_publish(&self, identity: &Identity, msg: &InboundMessage) -> Result<(), SinkError> {
        if self.reject.load(Ordering::SeqCst) || msg.payload.as_ref() == b"reject" {
            return Err(SinkError {
                code: ReasonCode::QuotaExceeded,
                reason: "test sink says no".into(),
            });
        }
        self.messages
            .lock()
            .push((identity.tenant.clone(), msg.clone()));
        Ok(())
    }

    async fn stage_publish_batch<'a>(
        &'a self,
        identity: &Identity,
        msgs: &[InboundMessage],
    ) -> Staged<'a> {
        if !self.two_step.load(Ordering::SeqCst) {
            return Staged {
                accepted: self.on_publish_batch(identity, msgs).await,
                durable: None,
            };
        }
        let refused = |m: &InboundMessage| m.payload.as_ref() == b"reject";
        let accepted = msgs
            .iter()
            .map(|m| {
                if refused(m) {
                    Err(SinkError {
                        code: ReasonCode::QuotaExceeded,
                        reason: "test sink says no".into(),
                    })
                } else {
                    Ok(())
                }
            })
            .collect();
        let tenant = identity.tenant.clone();
        let kept: Vec<InboundMessage> = msgs.iter().filter(|m| !refused(m)).cloned().collect();
        let n = msgs.len();
        let durable = async move {
            self.durable_gate.notified().await;
            if self.fail_durable.load(Ordering::SeqCst) {
                let failed = Err(SinkError {
                    code: ReasonCode::ImplementationSpecificError,
                    reason: "test sink could not store it".into(),
                });
                return vec![failed; n];
            }
            let mut messages = self.messages.lock();
            messages.extend(kept.into_iter().map(|m| (tenant.clone(), m)));
            vec![Ok(()); n]
        };
        Staged {
            accepted,
            durable: Some(Box::pin(durable)),
        }
    }

    async fn on_connect(&self, _identity: &Identity, info: &ConnectionInfo) {
        self.connects.lock().push(info.client_id.clone());
    }

    async fn on_disconnect(&self, identity: &Identity, reason: &str) {
        let who = match &identity.principal {
            Principal::Device { device_id } => device_id.clone(),
            other => format!("{other:?}"),
        };
        self.disconnects.lock().push((who, reason.to_owned()));
    }
}

pub struct TestBroker {
    pub broker: Broker,
    pub addr: SocketAddr,
    pub sink: Arc<TestSink>,
    pub shutdown: CancellationToken,
    pub serve: JoinHandle<std::io::Result<()>>,
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub async fn start(config: BrokerConfig) -> TestBroker {
    let sink = Arc::new(TestSink::default());
    let broker = Broker::new(config, Arc::new(TestAuth), sink.clone());
    serve(broker, sink).await
}

/// A broker on `config.data_dir` (durable sessions and retained messages).
pub async fn start_durable(config: BrokerConfig) -> TestBroker {
    let sink = Arc::new(TestSink::default());
    let broker = Broker::open(config, Arc::new(TestAuth), sink.clone()).expect("open broker store");
    serve(broker, sink).await
}

/// Shuts the broker down and waits until every connection is closed.
pub async fn stop(mut b: TestBroker) {
    b.shutdown.cancel();
    let serve = std::mem::replace(&mut b.serve, tokio::spawn(async { Ok(()) }));
    match tokio::time::timeout(Duration::from_secs(10), serve).await {
        Ok(Ok(Ok(()))) => {}
        other => panic!("broker did not stop cleanly: {other:?}"),
    }
}

async fn serve(broker: Broker, sink: Arc<TestSink>) -> TestBroker {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let serve = tokio::spawn({
        let broker = broker.clone();
        let shutdown = shutdown.clone();
        async move { broker.serve(listener, shutdown).await }
    });
    TestBroker {
        broker,
        addr,
        sink,
        shutdown,
        serve,
    }
}

pub async fn start_default() -> TestBroker {
    start(BrokerConfig::default()).await
}

/// Polls `f` until it holds (true) or [`WAIT`] passes (false).
pub async fn wait_until(mut f: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::time::Instant::now() < deadline {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    f()
}

// ---------------------------------------------------------------------------------------
// rumqttc clients

pub struct V4Client {
    pub client: rumqttc::AsyncClient,
    pub events: mpsc::Receiver<Result<rumqttc::Event, rumqttc::ConnectionError>>,
}

pub fn v4_client(addr: SocketAddr, client_id: &str, user: &str, pass: &str) -> V4Client {
    let mut opts = rumqttc::MqttOptions::new(client_id, addr.ip().to_string(), addr.port());
    opts.set_credentials(user, pass);
    opts.set_keep_alive(Duration::from_secs(30));
    let (client, mut eventloop) = rumqttc::AsyncClient::new(opts, 100);
    let (tx, events) = mpsc::channel(1000);
    tokio::spawn(async move {
        loop {
            let ev = eventloop.poll().await;
            let stop = ev.is_err();
            if tx.send(ev).await.is_err() || stop {
                break;
            }
        }
    });
    V4Client { client, events }
}

impl V4Client {
    /// Next incoming packet, or the connection error.
    pub async fn incoming(&mut self) -> Result<rumqttc::Packet, String> {
        loop {
            match tokio::time::timeout(WAIT, self.events.recv()).await {
                Err(_) => return Err("timeout".into()),
                Ok(None) => return Err("event loop gone".into()),
                Ok(Some(Err(e))) => return Err(format!("{e:?}")),
                Ok(Some(Ok(rumqttc::Event::Incoming(p)))) => return Ok(p),
                Ok(Some(Ok(rumqttc::Event::Outgoing(_)))) => {}
            }
        }
    }

    /// Skips incoming packets until `f` picks one; panics on error or timeout.
    pub async fn expect<T>(&mut self, mut f: impl FnMut(&rumqttc::Packet) -> Option<T>) -> T {
        loop {
            let p = self.incoming().await.expect("connection failed");
            if let Some(t) = f(&p) {
                return t;
            }
        }
    }

    /// Waits for the connection to fail; returns the error text.
    pub async fn expect_error(&mut self) -> String {
        loop {
            match self.incoming().await {
                Ok(_) => {}
                Err(e) => return e,
            }
        }
    }

    /// True if no PUBLISH arrives within `d`.
    pub async fn no_publish_within(&mut self, d: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + d;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Err(_) => return true,
                Ok(Some(Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(_))))) => {
                    return false;
                }
                Ok(Some(Ok(_))) => {}
                Ok(Some(Err(_))) | Ok(None) => return true,
            }
        }
    }
}

pub mod v5 {
    pub use rumqttc::v5::mqttbytes::QoS;
    pub use rumqttc::v5::mqttbytes::v5::*;
    pub use rumqttc::v5::{AsyncClient, ConnectionError, Event, MqttOptions, StateError};
}

pub struct V5Client {
    pub client: v5::AsyncClient,
    pub events: mpsc::Receiver<Result<v5::Event, v5::ConnectionError>>,
}

pub fn v5_options(addr: SocketAddr, client_id: &str, user: &str, pass: &str) -> v5::MqttOptions {
    let mut opts = v5::MqttOptions::new(client_id, addr.ip().to_string(), addr.port());
    opts.set_credentials(user, pass);
    opts.set_keep_alive(Duration::from_secs(30));
    opts
}

pub fn v5_client(addr: SocketAddr, client_id: &str, user: &str, pass: &str) -> V5Client {
    v5_client_with(v5_options(addr, client_id, user, pass))
}

pub fn v5_client_with(opts: v5::MqttOptions) -> V5Client {
    let (client, mut eventloop) = v5::AsyncClient::new(opts, 100);
    let (tx, events) = mpsc::channel(1000);
    tokio::spawn(async move {
        loop {
            let ev = eventloop.poll().await;
            let stop = ev.is_err();
            if tx.send(ev).await.is_err() || stop {
                break;
            }
        }
    });
    V5Client { client, events }
}

impl V5Client {
    pub async fn incoming(&mut self) -> Result<v5::Packet, v5::ConnectionError> {
        loop {
            match tokio::time::timeout(WAIT, self.events.recv()).await {
                Err(_) => panic!("timed out waiting for a v5 event"),
                Ok(None) => panic!("v5 event loop gone"),
                Ok(Some(Err(e))) => return Err(e),
                Ok(Some(Ok(v5::Event::Incoming(p)))) => return Ok(p),
                Ok(Some(Ok(v5::Event::Outgoing(_)))) => {}
            }
        }
    }

    pub async fn expect<T>(&mut self, mut f: impl FnMut(&v5::Packet) -> Option<T>) -> T {
        loop {
            let p = self.incoming().await.expect("connection failed");
            if let Some(t) = f(&p) {
                return t;
            }
        }
    }

    pub async fn connack(&mut self) -> v5::ConnAck {
        self.expect(|p| match p {
            v5::Packet::ConnAck(c) => Some(c.clone()),
            _ => None,
        })
        .await
    }

    pub async fn expect_error(&mut self) -> v5::ConnectionError {
        loop {
            if let Err(e) = self.incoming().await {
                return e;
            }
        }
    }

    /// Waits for a DISCONNECT from the broker and returns its reason code.
    pub async fn expect_server_disconnect(&mut self) -> v5::DisconnectReasonCode {
        match self.expect_error().await {
            v5::ConnectionError::MqttState(v5::StateError::ServerDisconnect {
                reason_code,
                ..
            }) => reason_code,
            other => panic!("expected a server DISCONNECT, got {other:?}"),
        }
    }

    pub async fn no_publish_within(&mut self, d: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + d;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Err(_) => return true,
                Ok(Some(Ok(v5::Event::Incoming(v5::Packet::Publish(_))))) => return false,
                Ok(Some(Ok(_))) => {}
                Ok(Some(Err(_))) | Ok(None) => return true,
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// raw sockets

pub struct Raw {
    pub stream: TcpStream,
    pub buf: BytesMut,
    pub protocol: Protocol,
}

pub fn connect_packet(protocol: Protocol, client_id: &str, user: &str, keep_alive: u16) -> Connect {
    Connect {
        protocol,
        clean_start: true,
        keep_alive,
        client_id: client_id.into(),
        username: Some(user.into()),
        password: Some(Bytes::from_static(b"secret")),
        will: None,
        properties: Properties::default(),
    }
}

pub fn will(topic: &str, payload: &'static [u8]) -> Option<LastWill> {
    Some(LastWill {
        topic: topic.into(),
        payload: Bytes::from_static(payload),
        qos: wulian_mqtt::QoS::AtMostOnce,
        retain: false,
        properties: Properties::default(),
    })
}

impl Raw {
    pub async fn open(addr: SocketAddr, protocol: Protocol) -> Raw {
        Raw {
            stream: TcpStream::connect(addr).await.unwrap(),
            buf: BytesMut::new(),
            protocol,
        }
    }

    /// Opens a socket, sends `connect` and returns the CONNACK (which must be a success).
    pub async fn connect_ack(addr: SocketAddr, connect: Connect) -> (Raw, wulian_mqtt::ConnAck) {
        let mut raw = Raw::open(addr, connect.protocol).await;
        raw.send(&Packet::Connect(connect)).await;
        match raw.recv().await {
            Some(Packet::ConnAck(c)) => {
                assert_eq!(c.code, ReasonCode::Success);
                (raw, c)
            }
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    /// Next PUBLISH, answering nothing; skips other packets. Panics on timeout or close.
    pub async fn next_publish(&mut self) -> wulian_mqtt::Publish {
        loop {
            match self.recv().await {
                Some(Packet::Publish(p)) => return p,
                Some(_) => {}
                None => panic!("connection closed while waiting for PUBLISH"),
            }
        }
    }

    /// True if no PUBLISH arrives within `d`.
    pub async fn no_publish_within(&mut self, d: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + d;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.recv_within(left).await {
                Err(()) | Ok(None) => return true,
                Ok(Some(Packet::Publish(_))) => return false,
                Ok(Some(_)) => {}
            }
        }
    }

    /// Opens a socket, sends `connect` and expects a successful CONNACK.
    pub async fn connect(addr: SocketAddr, connect: Connect) -> Raw {
        let mut raw = Raw::open(addr, connect.protocol).await;
        raw.send(&Packet::Connect(connect)).await;
        match raw.recv().await {
            Some(Packet::ConnAck(c)) => assert_eq!(c.code, ReasonCode::Success),
            other => panic!("expected CONNACK, got {other:?}"),
        }
        raw
    }

    /// Subscribes to `filter` (packet id 1) and expects a SUBACK.
    pub async fn subscribed(&mut self, filter: &str, qos: wulian_mqtt::QoS) {
        self.send(&crate::sessions::subscribe(filter, qos)).await;
        assert!(matches!(self.recv().await, Some(Packet::SubAck(_))));
    }

    pub async fn send(&mut self, packet: &Packet) {
        let mut out = BytesMut::new();
        wulian_mqtt::encode(packet, self.protocol, &mut out).unwrap();
        self.stream.write_all(&out).await.unwrap();
    }

    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// Next packet; None when the broker closed the connection. Panics on timeout.
    pub async fn recv(&mut self) -> Option<Packet> {
        self.recv_within(WAIT)
            .await
            .expect("timed out waiting for a packet")
    }

    /// Err(()) on timeout, Ok(None) on close.
    pub async fn recv_within(&mut self, d: Duration) -> Result<Option<Packet>, ()> {
        let deadline = tokio::time::Instant::now() + d;
        loop {
            if let Some(p) = wulian_mqtt::decode(&mut self.buf, self.protocol, usize::MAX)
                .expect("broker sent a malformed packet")
            {
                return Ok(Some(p));
            }
            match tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf)).await {
                Err(_) => return Err(()),
                Ok(Ok(0)) | Ok(Err(_)) => return Ok(None),
                Ok(Ok(_)) => {}
            }
        }
    }

    /// Reads until the broker closes; returns the packets received meanwhile.
    pub async fn until_closed(&mut self) -> Vec<Packet> {
        let mut got = Vec::new();
        while let Some(p) = self.recv().await {
            got.push(p);
        }
        got
    }
}
