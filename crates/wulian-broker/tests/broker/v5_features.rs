//! MQTT 5.0 features beyond the basics: topic aliases both ways, Receive Maximum enforced
//! inbound, the publish rate limit, `$SYS` statistics and their access rule, and refusal of
//! unsupported enhanced authentication.

use std::time::Duration;

use bytes::Bytes;
use wulian_broker::{BrokerConfig, OutboundMessage, Properties, Protocol, QoS, ReasonCode};
use wulian_mqtt::{Packet, Publish};

use crate::common::*;
use crate::sessions::subscribe;

fn aliased(topic: &str, alias: Option<u16>, qos: QoS, packet_id: u16) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain: false,
        topic: topic.into(),
        packet_id,
        payload: Bytes::from_static(b"x"),
        properties: Properties {
            topic_alias: alias,
            ..Properties::default()
        },
    })
}

async fn expect_disconnect(raw: &mut Raw, code: ReasonCode) {
    let got = raw.until_closed().await;
    match got.last() {
        Some(Packet::Disconnect(d)) => assert_eq!(d.code, code),
        other => panic!("expected DISCONNECT {code:?}, got {other:?}"),
    }
}

/// MQTT-3.3.2-12: an alias set by the client stands for its topic in later PUBLISHes with an
/// empty topic name. The broker announces Topic Alias Maximum (config, default 32).
#[tokio::test]
async fn inbound_topic_alias() {
    let b = start_default().await;
    let (mut raw, ack) =
        Raw::connect_ack(b.addr, connect_packet(Protocol::V5, "c", "dev1", 0)).await;
    assert_eq!(ack.properties.topic_alias_maximum, Some(32));
    raw.send(&aliased("devices/dev1/a", Some(1), QoS::AtLeastOnce, 1))
        .await;
    assert!(matches!(raw.recv().await, Some(Packet::PubAck(_))));
    raw.send(&aliased("", Some(1), QoS::AtLeastOnce, 2)).await;
    match raw.recv().await {
        Some(Packet::PubAck(a)) => assert_eq!(a.code, ReasonCode::Success),
        other => panic!("expected PUBACK, got {other:?}"),
    }
    let topics: Vec<String> = b.sink.topics().into_iter().map(|(_, t)| t).collect();
    assert_eq!(topics, vec!["devices/dev1/a", "devices/dev1/a"]);
}

/// MQTT-3.3.2-9: an alias above the announced maximum is Topic Alias invalid (0x94).
#[tokio::test]
async fn inbound_topic_alias_out_of_range() {
    let b = start(BrokerConfig {
        topic_alias_maximum: 2,
        ..BrokerConfig::default()
    })
    .await;
    let mut raw = Raw::connect(b.addr, connect_packet(Protocol::V5, "c", "dev1", 0)).await;
    raw.send(&aliased("devices/dev1/a", Some(3), QoS::AtMostOnce, 0))
        .await;
    expect_disconnect(&mut raw, ReasonCode::TopicAliasInvalid).await;
    // An alias never set is a protocol error.
    let mut raw = Raw::connect(b.addr, connect_packet(Protocol::V5, "d", "dev1", 0)).await;
    raw.send(&aliased("", Some(1), QoS::AtMostOnce, 0)).await;
    expect_disconnect(&mut raw, ReasonCode::ProtocolError).await;
}

/// MQTT-3.3.2-14 / 3.3.2.3.4: the broker assigns aliases up to the client's Topic Alias
/// Maximum; a repeated topic is sent as alias only.
#[tokio::test]
async fn outbound_topic_alias() {
    let b = start_default().await;
    let mut c = connect_packet(Protocol::V5, "c", "dev1", 0);
    c.properties.topic_alias_maximum = Some(1);
    let mut raw = Raw::connect(b.addr, c).await;
    raw.subscribed("devices/dev1/#", QoS::AtMostOnce).await;
    for topic in ["devices/dev1/a", "devices/dev1/a", "devices/dev1/b"] {
        b.broker.publish(
            "t1",
            OutboundMessage {
                topic: topic.into(),
                payload: Bytes::from_static(b"x"),
                qos: QoS::AtMostOnce,
                retain: false,
                properties: Properties::default(),
            },
        );
    }
    let first = raw.next_publish().await;
    assert_eq!(
        (first.topic.as_str(), first.properties.topic_alias),
        ("devices/dev1/a", Some(1))
    );
    let second = raw.next_publish().await;
    assert_eq!(
        (second.topic.as_str(), second.properties.topic_alias),
        ("", Some(1))
    );
    // No alias left for a second topic (maximum 1): sent in full.
    let third = raw.next_publish().await;
    assert_eq!(
        (third.topic.as_str(), third.properties.topic_alias),
        ("devices/dev1/b", None)
    );
}

/// MQTT-3.3.4-9 / 4.9: a client sending more unacknowledged QoS 2 PUBLISHes than the
/// Receive Maximum the broker announced is disconnected with 0x93.
#[tokio::test]
async fn receive_maximum_enforced_inbound() {
    let b = start(BrokerConfig {
        max_inflight: 2,
        ..BrokerConfig::default()
    })
    .await;
    let (mut raw, ack) =
        Raw::connect_ack(b.addr, connect_packet(Protocol::V5, "c", "dev1", 0)).await;
    assert_eq!(ack.properties.receive_maximum, Some(2));
    for id in 1..=3 {
        raw.send(&aliased("devices/dev1/q", None, QoS::ExactlyOnce, id))
            .await;
    }
    expect_disconnect(&mut raw, ReasonCode::ReceiveMaximumExceeded).await;
}

/// Per-client publish rate limit: beyond it, DISCONNECT 0x96 Message rate too high (counted).
#[tokio::test]
async fn publish_rate_limit() {
    let b = start(BrokerConfig {
        max_publish_rate: 2,
        ..BrokerConfig::default()
    })
    .await;
    let mut raw = Raw::connect(b.addr, connect_packet(Protocol::V5, "c", "dev1", 0)).await;
    for _ in 0..3 {
        raw.send(&aliased("devices/dev1/r", None, QoS::AtMostOnce, 0))
            .await;
    }
    expect_disconnect(&mut raw, ReasonCode::MessageRateTooHigh).await;
    assert_eq!(b.broker.metrics().publish_rate_limited_total, 1);
    assert_eq!(b.sink.count(), 2);

    let b = start(BrokerConfig {
        max_publish_bytes_rate: 1,
        ..BrokerConfig::default()
    })
    .await;
    let mut raw = Raw::connect(b.addr, connect_packet(Protocol::V311, "c", "dev1", 0)).await;
    for _ in 0..2 {
        raw.send(&aliased("devices/dev1/r", None, QoS::AtMostOnce, 0))
            .await;
    }
    // 3.1.1 has no DISCONNECT from the server: the connection is closed.
    assert!(raw.until_closed().await.is_empty());
}

/// `$SYS/broker/...` statistics are published periodically as retained messages; only
/// identities with `sys_access` may subscribe (others get 0x87), and `$SYS` topics are not
/// matched by a leading wildcard (MQTT-4.7.2-1).
#[tokio::test]
async fn sys_statistics_and_access() {
    let b = start(BrokerConfig {
        sys_interval: Duration::from_millis(100),
        ..BrokerConfig::default()
    })
    .await;
    let mut ops = Raw::connect(b.addr, connect_packet(Protocol::V5, "ops", "ops", 0)).await;
    // Let the first statistics be published (retained).
    tokio::time::sleep(Duration::from_millis(300)).await;
    ops.send(&subscribe("$SYS/broker/clients/connected", QoS::AtMostOnce))
        .await;
    match ops.recv().await {
        Some(Packet::SubAck(s)) => assert_eq!(s.codes, vec![ReasonCode::Success]),
        other => panic!("expected SUBACK, got {other:?}"),
    }
    let p = ops.next_publish().await;
    assert_eq!(p.topic, "$SYS/broker/clients/connected");
    assert!(p.retain, "first one comes from the retained store");
    let n: u64 = std::str::from_utf8(&p.payload).unwrap().parse().unwrap();
    assert!(n >= 1);
    // Periodic updates keep coming.
    let p = ops.next_publish().await;
    assert_eq!(p.topic, "$SYS/broker/clients/connected");

    let mut dev = Raw::connect(b.addr, connect_packet(Protocol::V5, "d", "dev1", 0)).await;
    dev.send(&subscribe("$SYS/#", QoS::AtMostOnce)).await;
    match dev.recv().await {
        Some(Packet::SubAck(s)) => assert_eq!(s.codes, vec![ReasonCode::NotAuthorized]),
        other => panic!("expected SUBACK, got {other:?}"),
    }
    dev.subscribed("devices/dev1/#", QoS::AtMostOnce).await;
    assert!(dev.no_publish_within(Duration::from_millis(300)).await);
}

/// MQTT-4.12.0-1 / 3.2.2.2: a CONNECT with an Authentication Method the broker does not
/// support gets CONNACK 0x8C Bad authentication method.
#[tokio::test]
async fn unsupported_auth_method() {
    let b = start_default().await;
    let mut c = connect_packet(Protocol::V5, "c", "dev1", 0);
    c.properties.authentication_method = Some("SCRAM-SHA-256".into());
    let mut raw = Raw::open(b.addr, Protocol::V5).await;
    raw.send(&Packet::Connect(c)).await;
    match raw.recv().await {
        Some(Packet::ConnAck(a)) => assert_eq!(a.code, ReasonCode::BadAuthenticationMethod),
        other => panic!("expected CONNACK 0x8C, got {other:?}"),
    }
    assert!(raw.until_closed().await.is_empty());
}

/// MQTT 5.0 4.8.2: each message on a shared subscription goes to one session of the group
/// (round robin here); offline persistent members get no share; retained messages are not
/// sent for shared subscriptions.
#[tokio::test]
async fn shared_subscription_round_robin() {
    let b = start_default().await;
    b.broker.publish(
        "t1",
        OutboundMessage {
            topic: "devices/dev1/jobs".into(),
            payload: Bytes::from_static(b"retained"),
            qos: QoS::AtMostOnce,
            retain: true,
            properties: Properties::default(),
        },
    );
    let mut members = Vec::new();
    for id in ["m1", "m2"] {
        let (mut raw, ack) =
            Raw::connect_ack(b.addr, connect_packet(Protocol::V5, id, "dev1", 0)).await;
        assert_eq!(ack.properties.shared_subscription_available, Some(1));
        raw.send(&subscribe(
            "$share/workers/devices/dev1/jobs",
            QoS::AtMostOnce,
        ))
        .await;
        match raw.recv().await {
            Some(Packet::SubAck(s)) => assert_eq!(s.codes, vec![ReasonCode::Success]),
            other => panic!("expected SUBACK, got {other:?}"),
        }
        assert!(
            raw.no_publish_within(Duration::from_millis(100)).await,
            "no retained"
        );
        members.push(raw);
    }
    // A persistent member that is offline.
    let mut c = connect_packet(Protocol::V5, "m3", "dev1", 0);
    c.clean_start = false;
    c.properties.session_expiry_interval = Some(60);
    let mut m3 = Raw::connect(b.addr, c).await;
    m3.subscribed("$share/workers/devices/dev1/jobs", QoS::AtLeastOnce)
        .await;
    drop(m3);
    assert!(wait_until(|| !b.broker.is_connected("t1", "m3")).await);
    tokio::time::sleep(Duration::from_millis(100)).await;

    for _ in 0..4 {
        let n = b.broker.publish(
            "t1",
            OutboundMessage {
                topic: "devices/dev1/jobs".into(),
                payload: Bytes::from_static(b"job"),
                qos: QoS::AtMostOnce,
                retain: false,
                properties: Properties::default(),
            },
        );
        assert_eq!(n, 1, "exactly one member of the group");
    }
    for raw in &mut members {
        raw.next_publish().await;
        raw.next_publish().await;
        assert!(raw.no_publish_within(Duration::from_millis(100)).await);
    }
    // The offline member got nothing queued.
    let mut c = connect_packet(Protocol::V5, "m3", "dev1", 0);
    c.clean_start = false;
    c.properties.session_expiry_interval = Some(60);
    let (mut m3, ack) = Raw::connect_ack(b.addr, c).await;
    assert!(ack.session_present);
    assert!(m3.no_publish_within(Duration::from_millis(200)).await);
}
