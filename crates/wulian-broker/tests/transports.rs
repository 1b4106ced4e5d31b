//! The broker over every transport with real handshakes: TLS (rustls client), mutual TLS with
//! a CA set that changes at run time, WebSocket and WebSocket over TLS (tungstenite client),
//! anonymous listeners and per-listener limits. Certificates come from wulian-test-support (rcgen).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_util::sync::CancellationToken;
use wulian_broker::{
    Authenticator, Broker, BrokerConfig, ClientAuth, ClientCertAuthorities, ConnectRequest,
    Identity, InboundMessage, ListenerConfig, MessageSink, Principal, ReasonCode, SinkError,
    TlsConfig, TopicPolicy, Transport, TransportKind,
};
use wulian_mqtt::{Connect, Packet, Protocol, Publish, QoS};
use wulian_test_support::certs::{Ca, ca, leaf};

const WAIT: Duration = Duration::from_secs(5);

/// dev1/secret is a device; a verified client certificate is device "certdev"; no credentials
/// on an anonymous listener is anonymous. Records the transport kind of each success.
struct Auth {
    seen: parking_lot::Mutex<Vec<(TransportKind, String)>>,
}

#[async_trait::async_trait]
impl Authenticator for Auth {
    async fn authenticate(&self, req: &ConnectRequest) -> Result<Identity, ReasonCode> {
        let (principal, policy) = if req.transport.peer_certificates.is_some() {
            device("certdev")
        } else if req.username.as_deref() == Some("dev1")
            && req.password.as_deref() == Some(b"secret".as_slice())
        {
            device("dev1")
        } else if req.username.is_none() && req.transport.allow_anonymous {
            (Principal::Anonymous, TopicPolicy::anonymous())
        } else {
            return Err(ReasonCode::BadUserNameOrPassword);
        };
        let who = format!("{principal:?}");
        self.seen.lock().push((req.transport.kind, who));
        Ok(Identity {
            tenant: "t1".into(),
            principal,
            policy: std::sync::Arc::new(policy),
            sys_access: false,
        })
    }
}

fn device(id: &str) -> (Principal, TopicPolicy) {
    (
        Principal::Device {
            device_id: id.into(),
        },
        TopicPolicy::device(id),
    )
}

struct Sink;

#[async_trait::async_trait]
impl MessageSink for Sink {
    async fn on_publish(&self, _: &Identity, _: &InboundMessage) -> Result<(), SinkError> {
        Ok(())
    }
}

struct Server {
    broker: Broker,
    auth: Arc<Auth>,
    shutdown: CancellationToken,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Server {
    fn new() -> Server {
        let auth = Arc::new(Auth {
            seen: parking_lot::Mutex::new(Vec::new()),
        });
        let broker = Broker::new(BrokerConfig::default(), auth.clone(), Arc::new(Sink));
        Server {
            broker,
            auth,
            shutdown: CancellationToken::new(),
        }
    }

    async fn listen(&self, config: ListenerConfig) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (broker, shutdown) = (self.broker.clone(), self.shutdown.clone());
        tokio::spawn(async move { broker.serve_listener(listener, config, shutdown).await });
        addr
    }
}

// ---------------------------------------------------------------------------------------
// certificates

fn server_tls(ca: &Ca, client_auth: ClientAuth) -> TlsConfig {
    let (cert, key) = leaf(ca, "localhost", true);
    TlsConfig::from_der(vec![cert], key, client_auth).unwrap()
}

async fn tls_connect(
    addr: SocketAddr,
    ca: &Ca,
    client_cert: Option<(Vec<u8>, Vec<u8>)>,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match client_cert {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from(cert)],
                PrivateKeyDer::Pkcs8(key.into()),
            )
            .unwrap(),
    };
    let tcp = TcpStream::connect(addr).await?;
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
}

// ---------------------------------------------------------------------------------------
// a raw MQTT 5 client over any byte stream

fn connect_packet(credentials: Option<(&str, &str)>) -> Packet {
    Packet::Connect(Connect {
        protocol: Protocol::V5,
        clean_start: true,
        keep_alive: 30,
        client_id: String::new(),
        username: credentials.map(|(u, _)| u.to_string()),
        password: credentials.map(|(_, p)| Bytes::from(p.to_string())),
        will: None,
        properties: Default::default(),
    })
}

fn encode(packet: &Packet) -> Vec<u8> {
    let mut buf = BytesMut::new();
    wulian_mqtt::encode(packet, Protocol::V5, &mut buf).unwrap();
    buf.to_vec()
}

async fn read_packet<S: AsyncRead + Unpin>(stream: &mut S, buf: &mut BytesMut) -> Option<Packet> {
    let read = async {
        loop {
            if let Ok(Some(p)) = wulian_mqtt::decode(buf, Protocol::V5, 1 << 20) {
                return Some(p);
            }
            match stream.read_buf(buf).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(WAIT, read)
        .await
        .expect("no answer in time")
}

/// Sends CONNECT and returns the CONNACK reason code (None: the connection closed).
async fn mqtt_connect<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    credentials: Option<(&str, &str)>,
) -> Option<ReasonCode> {
    if stream
        .write_all(&encode(&connect_packet(credentials)))
        .await
        .is_err()
    {
        return None;
    }
    stream.flush().await.ok()?;
    match read_packet(stream, &mut BytesMut::new()).await? {
        Packet::ConnAck(ack) => Some(ack.code),
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------

/// A QoS 1 publish round trip as dev1: proves the stream works both ways after CONNACK.
async fn qos1_round_trip<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S, packet_id: u16) {
    let publish = Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: "devices/dev1/telemetry".into(),
        packet_id,
        payload: Bytes::from_static(b"{}"),
        properties: Default::default(),
    });
    stream.write_all(&encode(&publish)).await.unwrap();
    stream.flush().await.unwrap();
    match read_packet(stream, &mut BytesMut::new()).await {
        Some(Packet::PubAck(ack)) => assert_eq!(ack.packet_id, packet_id),
        other => panic!("expected PUBACK, got {other:?}"),
    }
}

#[tokio::test]
async fn tls_listener_serves_mqtt() {
    let server = Server::new();
    let ca = ca("server CA");
    let addr = server
        .listen(ListenerConfig::new(Transport::Tls(server_tls(
            &ca,
            ClientAuth::None,
        ))))
        .await;
    let mut tls = tls_connect(addr, &ca, None).await.unwrap();
    assert_eq!(
        mqtt_connect(&mut tls, Some(("dev1", "secret"))).await,
        Some(ReasonCode::Success)
    );
    qos1_round_trip(&mut tls, 7).await;
    assert_eq!(server.auth.seen.lock()[0].0, TransportKind::Tls);
    assert_eq!(
        server.broker.metrics().application_lane_connections_total,
        0
    );

    // Plain MQTT on a TLS port gets nowhere.
    let mut plain = TcpStream::connect(addr).await.unwrap();
    assert_eq!(
        mqtt_connect(&mut plain, Some(("dev1", "secret"))).await,
        None
    );
}

#[tokio::test]
async fn mutual_tls_accepts_registered_cas_only() {
    let server = Server::new();
    let server_ca = ca("server CA");
    let tenant_ca = ca("tenant CA");
    let other_ca = ca("someone else's CA");
    let cas = ClientCertAuthorities::new();
    let addr = server
        .listen(ListenerConfig::new(Transport::Tls(server_tls(
            &server_ca,
            ClientAuth::Optional(cas.clone()),
        ))))
        .await;

    // No CA registered yet: a client certificate fails the handshake (TLS 1.3 reports it on
    // the first read).
    let cert = leaf(&tenant_ca, "certdev", false);
    if let Ok(mut tls) = tls_connect(addr, &server_ca, Some(cert.clone())).await {
        assert_eq!(mqtt_connect(&mut tls, None).await, None);
    }

    // Registered: the certificate identifies the client, no password needed.
    assert_eq!(cas.replace(&[tenant_ca.der.to_vec()]), 1);
    let mut tls = tls_connect(addr, &server_ca, Some(cert)).await.unwrap();
    assert_eq!(
        mqtt_connect(&mut tls, None).await,
        Some(ReasonCode::Success)
    );
    assert!(
        server
            .auth
            .seen
            .lock()
            .iter()
            .any(|(_, who)| who.contains("certdev"))
    );

    // A certificate from an unknown CA is refused.
    let stranger = leaf(&other_ca, "certdev", false);
    if let Ok(mut tls) = tls_connect(addr, &server_ca, Some(stranger)).await {
        assert_eq!(mqtt_connect(&mut tls, None).await, None);
    }

    // Optional: clients without a certificate still log in with a password.
    let mut tls = tls_connect(addr, &server_ca, None).await.unwrap();
    assert_eq!(
        mqtt_connect(&mut tls, Some(("dev1", "secret"))).await,
        Some(ReasonCode::Success)
    );
}

#[tokio::test]
async fn required_client_certificates_refuse_clients_without_one() {
    let server = Server::new();
    let server_ca = ca("server CA");
    let cas = ClientCertAuthorities::new();
    cas.replace(&[ca("tenant CA").der.to_vec()]);
    let addr = server
        .listen(ListenerConfig::new(Transport::Tls(server_tls(
            &server_ca,
            ClientAuth::Required(cas),
        ))))
        .await;
    if let Ok(mut tls) = tls_connect(addr, &server_ca, None).await {
        assert_eq!(mqtt_connect(&mut tls, Some(("dev1", "secret"))).await, None);
    }
}

/// A WebSocket client: upgrade with subprotocol `mqtt`, then CONNECT and PUBLISH as binary
/// frames.
async fn websocket_session<S: AsyncRead + AsyncWrite + Unpin>(stream: S, url: &str) {
    let mut request = url.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("sec-websocket-protocol", "mqtt".parse().unwrap());
    let (mut ws, response) = tokio_tungstenite::client_async(request, stream)
        .await
        .unwrap();
    assert_eq!(
        response.headers().get("sec-websocket-protocol").unwrap(),
        "mqtt"
    );
    let frame = |p: &Packet| Message::Binary(Bytes::from(encode(p)));
    ws.send(frame(&connect_packet(Some(("dev1", "secret")))))
        .await
        .unwrap();
    let publish = Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: "devices/dev1/telemetry".into(),
        packet_id: 9,
        payload: Bytes::from_static(b"{}"),
        properties: Default::default(),
    });
    ws.send(frame(&publish)).await.unwrap();
    let mut buf = BytesMut::new();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("answer in time")
            .expect("open")
            .unwrap();
        let Message::Binary(data) = msg else { continue };
        buf.extend_from_slice(&data);
        while let Ok(Some(p)) = wulian_mqtt::decode(&mut buf, Protocol::V5, 1 << 20) {
            seen.push(p);
        }
    }
    assert!(matches!(&seen[0], Packet::ConnAck(a) if a.code == ReasonCode::Success));
    assert!(matches!(&seen[1], Packet::PubAck(a) if a.packet_id == 9));
}

#[tokio::test]
async fn websocket_listener_speaks_mqtt_in_binary_frames() {
    let server = Server::new();
    let addr = server
        .listen(ListenerConfig::new(Transport::Ws {
            path: "/mqtt".into(),
        }))
        .await;
    let tcp = TcpStream::connect(addr).await.unwrap();
    websocket_session(tcp, &format!("ws://{addr}/mqtt")).await;
    assert_eq!(server.auth.seen.lock()[0].0, TransportKind::Ws);

    // Another path is not an MQTT endpoint.
    let tcp = TcpStream::connect(addr).await.unwrap();
    let request = format!("ws://{addr}/other").into_client_request().unwrap();
    assert!(tokio_tungstenite::client_async(request, tcp).await.is_err());
}

#[tokio::test]
async fn secure_websocket_listener() {
    let server = Server::new();
    let ca = ca("server CA");
    let addr = server
        .listen(ListenerConfig::new(Transport::Wss {
            tls: server_tls(&ca, ClientAuth::None),
            path: "/mqtt".into(),
        }))
        .await;
    let tls = tls_connect(addr, &ca, None).await.unwrap();
    websocket_session(tls, &format!("wss://localhost:{}/mqtt", addr.port())).await;
    assert_eq!(server.auth.seen.lock()[0].0, TransportKind::Wss);
}

/// A listener marked for the application lane moves each socket there before its TLS or
/// WebSocket handshake, so those connections run on the lane too (application connections
/// on other TLS and WebSocket listeners cannot move after CONNECT).
#[tokio::test]
async fn a_lane_listener_serves_tls_and_wss_on_the_lane() {
    let server = Server::new();
    let ca = ca("server CA");
    let mut tls_config = ListenerConfig::new(Transport::Tls(server_tls(&ca, ClientAuth::None)));
    tls_config.application_lane = true;
    let tls_addr = server.listen(tls_config).await;
    let mut tls = tls_connect(tls_addr, &ca, None).await.unwrap();
    assert_eq!(
        mqtt_connect(&mut tls, Some(("dev1", "secret"))).await,
        Some(ReasonCode::Success)
    );
    qos1_round_trip(&mut tls, 3).await;
    assert_eq!(
        server.broker.metrics().application_lane_connections_total,
        1
    );

    let mut wss_config = ListenerConfig::new(Transport::Wss {
        tls: server_tls(&ca, ClientAuth::None),
        path: "/mqtt".into(),
    });
    wss_config.application_lane = true;
    let wss_addr = server.listen(wss_config).await;
    let stream = tls_connect(wss_addr, &ca, None).await.unwrap();
    websocket_session(stream, &format!("wss://localhost:{}/mqtt", wss_addr.port())).await;
    assert_eq!(
        server.broker.metrics().application_lane_connections_total,
        2
    );
    let kinds: Vec<TransportKind> = server.auth.seen.lock().iter().map(|s| s.0).collect();
    assert_eq!(kinds, [TransportKind::Tls, TransportKind::Wss]);
}

#[tokio::test]
async fn anonymous_only_where_the_listener_allows_it() {
    let server = Server::new();
    let closed = server.listen(ListenerConfig::tcp()).await;
    let mut open_config = ListenerConfig::tcp();
    open_config.allow_anonymous = true;
    let open = server.listen(open_config).await;

    let mut tcp = TcpStream::connect(closed).await.unwrap();
    assert_eq!(
        mqtt_connect(&mut tcp, None).await,
        Some(ReasonCode::BadUserNameOrPassword)
    );
    let mut tcp = TcpStream::connect(open).await.unwrap();
    assert_eq!(
        mqtt_connect(&mut tcp, None).await,
        Some(ReasonCode::Success)
    );
    assert!(server.auth.seen.lock()[0].1.contains("Anonymous"));
}

#[tokio::test]
async fn listener_limits_close_excess_connections() {
    let server = Server::new();
    let mut limited = ListenerConfig::tcp();
    limited.max_connections = Some(1);
    let addr = server.listen(limited).await;
    let mut first = TcpStream::connect(addr).await.unwrap();
    assert_eq!(
        mqtt_connect(&mut first, Some(("dev1", "secret"))).await,
        Some(ReasonCode::Success)
    );
    let mut second = TcpStream::connect(addr).await.unwrap();
    assert_eq!(
        mqtt_connect(&mut second, Some(("dev1", "secret"))).await,
        None
    );

    let mut rated = ListenerConfig::tcp();
    rated.connect_rate = Some(1);
    let addr = server.listen(rated).await;
    let mut first = TcpStream::connect(addr).await.unwrap();
    assert_eq!(
        mqtt_connect(&mut first, Some(("dev1", "secret"))).await,
        Some(ReasonCode::Success)
    );
    let mut second = TcpStream::connect(addr).await.unwrap();
    assert_eq!(
        mqtt_connect(&mut second, Some(("dev1", "secret"))).await,
        None
    );
}

#[test]
fn certificate_facts_and_chains() {
    let tenant_ca = ca("tenant CA");
    let (cert, _) = leaf(&tenant_ca, "bike-7", false);
    let facts = wulian_broker::x509::parse(&cert).unwrap();
    assert_eq!(facts.subject_cn.as_deref(), Some("bike-7"));
    assert_eq!(facts.issuer_cn.as_deref(), Some("tenant CA"));
    assert!(!facts.serial.is_empty());
    let ca_facts = wulian_broker::x509::parse(&tenant_ca.der).unwrap();
    assert_eq!(ca_facts.subject_cn.as_deref(), Some("tenant CA"));

    assert!(wulian_broker::chain_verifies(
        &tenant_ca.der,
        std::slice::from_ref(&cert)
    ));
    assert!(!wulian_broker::chain_verifies(&ca("other").der, &[cert]));
    assert!(wulian_broker::check_client_ca(&tenant_ca.der).is_ok());
    assert!(wulian_broker::check_client_ca(b"not a certificate").is_err());
}

#[tokio::test]
async fn websocket_refuses_other_subprotocols_and_text_frames() {
    let server = Server::new();
    let addr = server
        .listen(ListenerConfig::new(Transport::Ws {
            path: "/mqtt".into(),
        }))
        .await;
    // A subprotocol that is not MQTT: the upgrade is refused.
    let mut request = format!("ws://{addr}/mqtt").into_client_request().unwrap();
    request
        .headers_mut()
        .insert("sec-websocket-protocol", "chat".parse().unwrap());
    let tcp = TcpStream::connect(addr).await.unwrap();
    assert!(tokio_tungstenite::client_async(request, tcp).await.is_err());

    // A text frame ends the connection without an answer.
    let request = format!("ws://{addr}/mqtt").into_client_request().unwrap();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(request, tcp).await.unwrap();
    ws.send(Message::Text("CONNECT".into())).await.unwrap();
    let next = tokio::time::timeout(WAIT, ws.next())
        .await
        .expect("closed in time");
    assert!(
        !matches!(next, Some(Ok(Message::Binary(_)))),
        "answered a text frame: {next:?}"
    );
}
