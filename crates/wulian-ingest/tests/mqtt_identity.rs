//! The broker with wulian's authenticator over a real registry: applications with API key
//! policies next to devices, the installation admin's `$SYS` flag, anonymous listeners.
//! Raw MQTT 5 over TCP (built with the codec) so reason codes can be checked exactly.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use wulian_broker::{Authenticator, TransportInfo};
use wulian_broker::{
    Broker, BrokerConfig, ConnectRequest, Identity, InboundMessage, ListenerConfig, MessageSink,
    Principal, SinkError,
};
use wulian_ingest::DeviceAuthenticator;
use wulian_mqtt::{
    Connect, Packet, Protocol, Publish, QoS, ReasonCode, Subscribe, SubscribeFilter,
    SubscriptionOptions,
};
use wulian_registry::test_support::new_device;
use wulian_registry::{MqttPolicy, Registry, Scope, TopicRules};

const WAIT: Duration = Duration::from_secs(5);

struct AcceptAll;

#[async_trait::async_trait]
impl MessageSink for AcceptAll {
    async fn on_publish(&self, _: &Identity, _: &InboundMessage) -> Result<(), SinkError> {
        Ok(())
    }
}

struct Setup {
    registry: Arc<Registry>,
    admin_secret: String,
    plain: SocketAddr,
    anonymous: SocketAddr,
    _shutdown: tokio_util::sync::DropGuard,
}

async fn setup() -> Setup {
    let registry = Arc::new(Registry::open_in_memory().unwrap());
    let (_, admin) = registry.bootstrap().unwrap().unwrap();
    let broker = Broker::new(
        BrokerConfig::default(),
        DeviceAuthenticator::new(Arc::clone(&registry)),
        Arc::new(AcceptAll),
    );
    let shutdown = CancellationToken::new();
    let listen = async |config: ListenerConfig| {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (broker, shutdown) = (broker.clone(), shutdown.clone());
        tokio::spawn(async move { broker.serve_listener(listener, config, shutdown).await });
        addr
    };
    let plain = listen(ListenerConfig::tcp()).await;
    let mut anonymous_config = ListenerConfig::tcp();
    anonymous_config.allow_anonymous = true;
    let anonymous = listen(anonymous_config).await;
    Setup {
        registry,
        admin_secret: admin.secret,
        plain,
        anonymous,
        _shutdown: shutdown.drop_guard(),
    }
}

struct Client {
    stream: TcpStream,
    buf: BytesMut,
}

impl Client {
    async fn connect(
        addr: SocketAddr,
        client_id: &str,
        credentials: Option<(&str, &str)>,
    ) -> (Client, ReasonCode) {
        let mut client = Client {
            stream: TcpStream::connect(addr).await.unwrap(),
            buf: BytesMut::new(),
        };
        client
            .send(Packet::Connect(Connect {
                protocol: Protocol::V5,
                clean_start: true,
                keep_alive: 30,
                client_id: client_id.into(),
                username: credentials.map(|(u, _)| u.to_string()),
                password: credentials.map(|(_, p)| Bytes::from(p.to_string())),
                will: None,
                properties: Default::default(),
            }))
            .await;
        match client.recv().await {
            Some(Packet::ConnAck(ack)) => (client, ack.code),
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    async fn send(&mut self, packet: Packet) {
        let mut out = BytesMut::new();
        wulian_mqtt::encode(&packet, Protocol::V5, &mut out).unwrap();
        self.stream.write_all(&out).await.unwrap();
    }

    async fn recv(&mut self) -> Option<Packet> {
        let read = async {
            loop {
                if let Ok(Some(p)) = wulian_mqtt::decode(&mut self.buf, Protocol::V5, 1 << 20) {
                    return Some(p);
                }
                match self.stream.read_buf(&mut self.buf).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
        };
        tokio::time::timeout(WAIT, read)
            .await
            .expect("answer in time")
    }

    async fn subscribe(&mut self, filter: &str) -> ReasonCode {
        self.send(Packet::Subscribe(Subscribe {
            packet_id: 1,
            filters: vec![SubscribeFilter {
                filter: filter.into(),
                options: SubscriptionOptions {
                    qos: QoS::AtLeastOnce,
                    ..Default::default()
                },
            }],
            properties: Default::default(),
        }))
        .await;
        match self.recv().await {
            Some(Packet::SubAck(ack)) => ack.codes[0],
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }

    /// QoS 1 publish; the PUBACK reason code.
    async fn publish(&mut self, topic: &str, payload: &'static [u8]) -> ReasonCode {
        self.send(Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: topic.into(),
            packet_id: 2,
            payload: Bytes::from_static(payload),
            properties: Default::default(),
        }))
        .await;
        loop {
            match self.recv().await {
                Some(Packet::PubAck(ack)) => return ack.code,
                Some(Packet::Publish(_)) => {}
                other => panic!("expected PUBACK, got {other:?}"),
            }
        }
    }

    async fn next_publish(&mut self) -> Publish {
        loop {
            match self.recv().await {
                Some(Packet::Publish(p)) => return p,
                Some(_) => {}
                None => panic!("connection closed while waiting for a PUBLISH"),
            }
        }
    }
}

#[tokio::test]
async fn applications_get_their_key_policy() {
    let s = setup().await;
    let (_, token) = s
        .registry
        .create_device("default", &new_device("bike-1"))
        .unwrap();
    let reader = s
        .registry
        .create_api_key("default", "dashboard", Scope::ReadOnly)
        .unwrap();

    // Allowed subscribe: the application receives a device's telemetry.
    let (mut app, code) = Client::connect(s.plain, "", Some(("apikey", &reader.secret))).await;
    assert_eq!(code, ReasonCode::Success);
    assert_eq!(
        app.subscribe("devices/+/telemetry").await,
        ReasonCode::GrantedQoS1
    );
    let (mut device, code) = Client::connect(s.plain, "bike-1", Some(("bike-1", &token))).await;
    assert_eq!(code, ReasonCode::Success);
    assert_eq!(
        device
            .publish("devices/bike-1/telemetry", b"{\"t\":1}")
            .await,
        ReasonCode::Success
    );
    let got = app.next_publish().await;
    assert_eq!(got.topic, "devices/bike-1/telemetry");

    // A read-only key may not send commands (PUBACK 0x87) nor subscribe outside its policy.
    assert_eq!(
        app.publish("devices/bike-1/commands/unlock", b"{}").await,
        ReasonCode::NotAuthorized
    );
    let (mut app, _) = Client::connect(s.plain, "", Some(("apikey", &reader.secret))).await;
    assert_eq!(app.subscribe("#").await, ReasonCode::NotAuthorized);

    // A key with its own policy: deny beats allow, variables are replaced.
    let policy = MqttPolicy {
        publish: TopicRules {
            allow: vec!["apps/${key_id}/#".into(), "devices/+/commands/#".into()],
            deny: vec!["devices/bike-1/commands/#".into()],
        },
        subscribe: TopicRules {
            allow: vec!["apps/${key_id}/#".into()],
            deny: vec![],
        },
    };
    let custom = s
        .registry
        .create_api_key_with_policy("default", "ops", Scope::ReadWrite, Some(policy))
        .unwrap();
    let (mut ops, code) =
        Client::connect(s.plain, "ops-1", Some((&custom.key.id, &custom.secret))).await;
    assert_eq!(code, ReasonCode::Success);
    let own = format!("apps/{}/status", custom.key.id);
    assert_eq!(ops.publish(&own, b"up").await, ReasonCode::Success);
    assert_eq!(
        ops.publish("devices/bike-2/commands/x", b"{}").await,
        ReasonCode::Success
    );
    assert_eq!(
        ops.publish("devices/bike-1/commands/x", b"{}").await,
        ReasonCode::NotAuthorized
    );
    assert_eq!(
        ops.subscribe("devices/+/telemetry").await,
        ReasonCode::NotAuthorized
    );

    // An application may not take a device's client id (it would take over its session).
    let (_, code) = Client::connect(s.plain, "bike-1", Some(("apikey", &reader.secret))).await;
    assert_eq!(code, ReasonCode::ClientIdentifierNotValid);
    // A wrong or revoked key is refused like a wrong password.
    let (_, code) = Client::connect(s.plain, "", Some(("apikey", "wlk_nope"))).await;
    assert_eq!(code, ReasonCode::BadUserNameOrPassword);
}

#[tokio::test]
async fn identities_and_sys_access() {
    let s = setup().await;
    let auth = DeviceAuthenticator::new(Arc::clone(&s.registry));
    let request = |password: &str, anonymous: bool| ConnectRequest {
        protocol: Protocol::V5,
        client_id: String::new(),
        username: (!password.is_empty()).then(|| "apikey".to_string()),
        password: (!password.is_empty()).then(|| Bytes::from(password.to_string())),
        remote_addr: "127.0.0.1:1".parse().unwrap(),
        transport: TransportInfo {
            allow_anonymous: anonymous,
            ..TransportInfo::default()
        },
    };
    let admin = auth
        .authenticate(&request(&s.admin_secret, false))
        .await
        .unwrap();
    assert!(admin.sys_access);
    assert!(matches!(admin.principal, Principal::Application { .. }));
    let other = s
        .registry
        .create_api_key("default", "other admin", Scope::Admin)
        .unwrap();
    assert!(
        !auth
            .authenticate(&request(&other.secret, false))
            .await
            .unwrap()
            .sys_access
    );

    assert_eq!(
        auth.authenticate(&request("", false)).await.unwrap_err(),
        ReasonCode::BadUserNameOrPassword
    );
    let anonymous = auth.authenticate(&request("", true)).await.unwrap();
    assert!(matches!(anonymous.principal, Principal::Anonymous));
    assert_eq!(anonymous.tenant, "default");
    assert!(!anonymous.sys_access);

    // An empty user name without a password is no credential (gmqtt always sends one).
    let empty_username = ConnectRequest {
        username: Some(String::new()),
        ..request("", true)
    };
    let anonymous = auth.authenticate(&empty_username).await.unwrap();
    assert!(matches!(anonymous.principal, Principal::Anonymous));
    let empty_username = ConnectRequest {
        username: Some(String::new()),
        ..request("", false)
    };
    assert_eq!(
        auth.authenticate(&empty_username).await.unwrap_err(),
        ReasonCode::BadUserNameOrPassword
    );
}

#[tokio::test]
async fn anonymous_clients_only_on_anonymous_listeners() {
    let s = setup().await;
    s.registry
        .create_device("default", &new_device("bike-1"))
        .unwrap();
    let (_, code) = Client::connect(s.plain, "viewer", None).await;
    assert_eq!(code, ReasonCode::BadUserNameOrPassword);
    let (mut viewer, code) = Client::connect(s.anonymous, "viewer", None).await;
    assert_eq!(code, ReasonCode::Success);
    assert_eq!(viewer.subscribe("#").await, ReasonCode::GrantedQoS1);
    assert_eq!(viewer.subscribe("$SYS/#").await, ReasonCode::NotAuthorized);
    let (_, code) = Client::connect(s.anonymous, "bike-1", None).await;
    assert_eq!(code, ReasonCode::ClientIdentifierNotValid);
}
