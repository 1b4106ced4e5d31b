//! Mutual TLS end to end in process: the broker's TLS listener with the registry's CA set,
//! wulian's authenticator mapping certificates to devices, rcgen certificates (wulian-test-support), a rustls
//! client speaking MQTT 5 built with the codec.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use wulian_broker::{
    Broker, BrokerConfig, ClientAuth, ClientCertAuthorities, Identity, InboundMessage,
    ListenerConfig, MessageSink, SinkError, TlsConfig, Transport,
};
use wulian_ingest::DeviceAuthenticator;
use wulian_mqtt::{Connect, Packet, Protocol, ReasonCode};
use wulian_registry::Registry;
use wulian_registry::test_support::{new_device, new_tenant};
use wulian_test_support::certs::{Ca, ca, leaf};

struct AcceptAll;

#[async_trait::async_trait]
impl MessageSink for AcceptAll {
    async fn on_publish(&self, _: &Identity, _: &InboundMessage) -> Result<(), SinkError> {
        Ok(())
    }
}

/// CONNECT over TLS with a client certificate; the CONNACK code, or None when the handshake
/// or the connection failed.
async fn connect(addr: SocketAddr, server_ca: &Ca, cert: (Vec<u8>, Vec<u8>)) -> Option<ReasonCode> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(server_ca.der.clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_client_auth_cert(
        vec![CertificateDer::from(cert.0)],
        PrivateKeyDer::Pkcs8(cert.1.into()),
    )
    .unwrap();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .ok()?;
    let mut out = BytesMut::new();
    let connect = Packet::Connect(Connect {
        protocol: Protocol::V5,
        clean_start: true,
        keep_alive: 30,
        client_id: String::new(),
        username: None,
        password: None,
        will: None,
        properties: Default::default(),
    });
    wulian_mqtt::encode(&connect, Protocol::V5, &mut out).unwrap();
    tls.write_all(&out).await.ok()?;
    let mut buf = BytesMut::new();
    let read = async {
        loop {
            if let Ok(Some(Packet::ConnAck(ack))) =
                wulian_mqtt::decode(&mut buf, Protocol::V5, 1 << 20)
            {
                return Some(ack.code);
            }
            match tls.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .expect("answer in time")
}

#[tokio::test]
async fn device_certificates_identify_devices_of_the_issuing_tenant() {
    let registry = Arc::new(Registry::open_in_memory().unwrap());
    registry.bootstrap().unwrap();
    registry.create_tenant(&new_tenant("other")).unwrap();
    registry
        .create_device("default", &new_device("bike-1"))
        .unwrap();
    registry
        .create_device("other", &new_device("bike-2"))
        .unwrap();
    let tenant_ca = ca("default tenant CA");
    registry
        .add_ca_certificate("default", "fleet", "default tenant CA", &tenant_ca.der)
        .unwrap();

    let cas = ClientCertAuthorities::new();
    assert_eq!(cas.replace(&registry.all_ca_certificates().unwrap()), 1);
    let server_ca = ca("server CA");
    let (server_cert, server_key) = leaf(&server_ca, "localhost", true);
    let tls =
        TlsConfig::from_der(vec![server_cert], server_key, ClientAuth::Required(cas)).unwrap();
    let broker = Broker::new(
        BrokerConfig::default(),
        DeviceAuthenticator::new(Arc::clone(&registry)),
        Arc::new(AcceptAll),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    tokio::spawn({
        let broker = broker.clone();
        async move {
            broker
                .serve_listener(listener, ListenerConfig::new(Transport::Tls(tls)), shutdown)
                .await
        }
    });

    // Issued by the tenant's CA for its device: connected as that device.
    let bike1 = leaf(&tenant_ca, "bike-1", false);
    assert_eq!(
        connect(addr, &server_ca, bike1.clone()).await,
        Some(ReasonCode::Success)
    );

    // The default tenant's CA cannot vouch for another tenant's device.
    let bike2 = leaf(&tenant_ca, "bike-2", false);
    assert_eq!(
        connect(addr, &server_ca, bike2).await,
        Some(ReasonCode::NotAuthorized)
    );
    // Nor for a device that does not exist.
    let ghost = leaf(&tenant_ca, "ghost", false);
    assert_eq!(
        connect(addr, &server_ca, ghost).await,
        Some(ReasonCode::NotAuthorized)
    );
    // A certificate from an unknown CA fails the TLS handshake.
    let stranger = leaf(&ca("stranger"), "bike-1", false);
    assert_eq!(connect(addr, &server_ca, stranger).await, None);

    // Revoked (by serial): refused; another certificate of the same device still works.
    let serial = wulian_broker::x509::parse(&bike1.0).unwrap().serial;
    registry
        .revoke_device_certificate("default", "bike-1", Some(&serial.to_uppercase()), None)
        .unwrap();
    assert_eq!(
        connect(addr, &server_ca, bike1).await,
        Some(ReasonCode::NotAuthorized)
    );
    let renewed = leaf(&tenant_ca, "bike-1", false);
    let fingerprint = wulian_registry::certificate_fingerprint(&renewed.0);
    assert_eq!(
        connect(addr, &server_ca, renewed.clone()).await,
        Some(ReasonCode::Success)
    );
    // Revoked by fingerprint.
    registry
        .revoke_device_certificate("default", "bike-1", None, Some(&fingerprint))
        .unwrap();
    assert_eq!(
        connect(addr, &server_ca, renewed).await,
        Some(ReasonCode::NotAuthorized)
    );
    assert_eq!(
        registry
            .list_revoked_certificates("default", "bike-1")
            .unwrap()
            .len(),
        2
    );
}
