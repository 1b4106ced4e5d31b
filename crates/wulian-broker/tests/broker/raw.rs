//! Raw-socket cases: malformed input, timeouts, limits, windows, wills, QoS 2 dedup.

use std::time::Duration;

use bytes::Bytes;
use wulian_broker::{BrokerConfig, OutboundMessage, Properties, Protocol, QoS, ReasonCode};
use wulian_mqtt::{
    Ack, Disconnect, Packet, Publish, Subscribe, SubscribeFilter, SubscriptionOptions,
};

use crate::common::*;

fn publish(topic: &str, qos: QoS, packet_id: u16, payload: &'static [u8]) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain: false,
        topic: topic.into(),
        packet_id,
        payload: Bytes::from_static(payload),
        properties: Properties::default(),
    })
}

fn subscribe(filter: &str, qos: QoS) -> Packet {
    Packet::Subscribe(Subscribe {
        packet_id: 1,
        filters: vec![SubscribeFilter {
            filter: filter.into(),
            options: SubscriptionOptions {
                qos,
                ..SubscriptionOptions::default()
            },
        }],
        properties: Properties::default(),
    })
}

fn command(topic: &str, qos: QoS, payload: Bytes) -> OutboundMessage {
    OutboundMessage {
        topic: topic.into(),
        payload,
        qos,
        retain: false,
        properties: Properties::default(),
    }
}

async fn still_serves(b: &TestBroker) {
    Raw::connect(b.addr, connect_packet(Protocol::V311, "after", "dev1", 0)).await;
}

#[tokio::test]
async fn garbage_after_connect_closes_v311() {
    let b = start_default().await;
    let mut raw = Raw::connect(b.addr, connect_packet(Protocol::V311, "c", "dev1", 0)).await;
    // PUBLISH with a remaining length longer than 4 bytes.
    raw.send_bytes(&[0x30, 0xff, 0xff, 0xff, 0xff, 0x01]).await;
    assert!(raw.until_closed().await.is_empty());
    assert_eq!(b.broker.metrics().malformed_packets_total, 1);
    still_serves(&b).await;
}

#[tokio::test]
async fn garbage_after_connect_gets_disconnect_v5() {
    let b = start_default().await;
    let mut raw = Raw::connect(b.addr, connect_packet(Protocol::V5, "c", "dev1", 0)).await;
    // Reserved packet type 0.
    raw.send_bytes(&[0x00, 0x00, 0xde, 0xad]).await;
    match raw.until_closed().await.as_slice() {
        [Packet::Disconnect(d)] => assert_eq!(d.code, ReasonCode::MalformedPacket),
        other => panic!("expected DISCONNECT, got {other:?}"),
    }
    still_serves(&b).await;
}

#[tokio::test]
async fn oversized_packet_gets_packet_too_large() {
    let b = start(BrokerConfig {
        max_packet_size: 1024,
        ..Default::default()
    })
    .await;
    let mut raw = Raw::connect(b.addr, connect_packet(Protocol::V5, "c", "dev1", 0)).await;
    let big: &'static [u8] = Box::leak(vec![0u8; 2048].into_boxed_slice());
    raw.send(&publish("devices/dev1/t", QoS::AtMostOnce, 0, big))
        .await;
    match raw.until_closed().await.as_slice() {
        [Packet::Disconnect(d)] => assert_eq!(d.code, ReasonCode::PacketTooLarge),
        other => panic!("expected DISCONNECT, got {other:?}"),
    }
    assert_eq!(b.sink.count(), 0);
}

#[tokio::test]
async fn garbage_instead_of_connect() {
    let b = start_default().await;
    let mut raw = Raw::open(b.addr, Protocol::V311).await;
    raw.send_bytes(b"GET / HTTP/1.1\r\n\r\n").await;
    assert!(raw.until_closed().await.is_empty());
    // First packet valid but not CONNECT.
    let mut raw = Raw::open(b.addr, Protocol::V311).await;
    raw.send(&Packet::PingReq).await;
    assert!(raw.until_closed().await.is_empty());
    still_serves(&b).await;
}

#[tokio::test]
async fn unsupported_protocol_version() {
    let b = start_default().await;
    let mut raw = Raw::open(b.addr, Protocol::V311).await;
    // CONNECT, MQIsdp level 3 (MQTT 3.1).
    raw.send_bytes(&[
        0x10, 0x0f, 0x00, 0x06, b'M', b'Q', b'I', b's', b'd', b'p', 0x03, 0x02, 0x00, 0x3c, 0x00,
        0x01, b'c',
    ])
    .await;
    // 3.1.1 CONNACK with return code 1, then close.
    raw.until_closed().await;
    let mut raw = Raw::open(b.addr, Protocol::V311).await;
    raw.send_bytes(&[
        0x10, 0x0d, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x03, 0x02, 0x00, 0x3c, 0x00, 0x01, b'c',
    ])
    .await;
    let mut got = Vec::new();
    let mut buf = [0u8; 16];
    loop {
        use tokio::io::AsyncReadExt;
        match tokio::time::timeout(WAIT, raw.stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => panic!("not closed"),
        }
    }
    assert_eq!(got, vec![0x20, 0x02, 0x00, 0x01]);

    // A future level gets the 5.0 reason code.
    let mut raw = Raw::open(b.addr, Protocol::V5).await;
    raw.send_bytes(&[
        0x10, 0x0e, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x06, 0x02, 0x00, 0x3c, 0x00, 0x00, 0x01,
        b'c',
    ])
    .await;
    match raw.until_closed().await.as_slice() {
        [Packet::ConnAck(c)] => assert_eq!(c.code, ReasonCode::UnsupportedProtocolVersion),
        other => panic!("expected CONNACK, got {other:?}"),
    }
    assert_eq!(b.broker.metrics().malformed_packets_total, 3);
}

#[tokio::test]
async fn connect_timeout_closes() {
    let b = start(BrokerConfig {
        connect_timeout: Duration::from_millis(200),
        ..Default::default()
    })
    .await;
    let mut raw = Raw::open(b.addr, Protocol::V311).await;
    let started = tokio::time::Instant::now();
    assert!(raw.until_closed().await.is_empty());
    assert!(started.elapsed() >= Duration::from_millis(150));
    assert!(wait_until(|| b.broker.metrics().connections_current == 0).await);
}

#[tokio::test]
async fn keep_alive_timeout() {
    let b = start_default().await;
    let mut v5 = Raw::connect(b.addr, connect_packet(Protocol::V5, "a", "dev1", 1)).await;
    let mut v3 = Raw::connect(b.addr, connect_packet(Protocol::V311, "b", "dev1", 1)).await;
    // Pings keep it alive for a while.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        v5.send(&Packet::PingReq).await;
        assert_eq!(v5.recv().await, Some(Packet::PingResp));
    }
    let started = tokio::time::Instant::now();
    match v5.until_closed().await.as_slice() {
        [Packet::Disconnect(d)] => assert_eq!(d.code, ReasonCode::KeepAliveTimeout),
        other => panic!("expected DISCONNECT, got {other:?}"),
    }
    assert!(started.elapsed() >= Duration::from_millis(1000));
    assert!(v3.until_closed().await.is_empty());
}

#[tokio::test]
async fn connection_limit() {
    let b = start(BrokerConfig {
        max_connections: 1,
        ..Default::default()
    })
    .await;
    let _first = Raw::connect(b.addr, connect_packet(Protocol::V311, "a", "dev1", 0)).await;
    let mut second = Raw::open(b.addr, Protocol::V311).await;
    second
        .send(&Packet::Connect(connect_packet(
            Protocol::V311,
            "b",
            "dev1",
            0,
        )))
        .await;
    assert!(second.until_closed().await.is_empty());
    assert_eq!(b.broker.metrics().connections_refused_total, 1);
    drop(_first);
    assert!(wait_until(|| b.broker.metrics().connections_current == 0).await);
    still_serves(&b).await;
}

#[tokio::test]
async fn qos2_exactly_once_with_retransmission() {
    let b = start_default().await;
    let mut raw = Raw::connect(b.addr, connect_packet(Protocol::V5, "c", "dev1", 0)).await;
    let p = publish("devices/dev1/telemetry", QoS::ExactlyOnce, 7, b"once");
    raw.send(&p).await;
    assert!(
        matches!(raw.recv().await, Some(Packet::PubRec(a)) if a.packet_id == 7 && a.code == ReasonCode::Success)
    );
    // Retransmission with DUP before PUBREL: acknowledged, not delivered again.
    if let Packet::Publish(mut p) = p {
        p.dup = true;
        raw.send(&Packet::Publish(p)).await;
    }
    assert!(matches!(raw.recv().await, Some(Packet::PubRec(a)) if a.packet_id == 7));
    raw.send(&Packet::PubRel(Ack {
        packet_id: 7,
        code: ReasonCode::Success,
        properties: Properties::default(),
    }))
    .await;
    assert!(
        matches!(raw.recv().await, Some(Packet::PubComp(a)) if a.packet_id == 7 && a.code == ReasonCode::Success)
    );
    assert_eq!(b.sink.count(), 1);
    // Unknown PUBREL.
    raw.send(&Packet::PubRel(Ack {
        packet_id: 9,
        code: ReasonCode::Success,
        properties: Properties::default(),
    }))
    .await;
    assert!(
        matches!(raw.recv().await, Some(Packet::PubComp(a)) if a.code == ReasonCode::PacketIdentifierNotFound)
    );
}

#[tokio::test]
async fn inflight_window_and_queue_overflow() {
    let b = start(BrokerConfig {
        outgoing_queue: 2,
        ..Default::default()
    })
    .await;
    let mut connect = connect_packet(Protocol::V5, "c", "dev1", 0);
    connect.properties.receive_maximum = Some(1);
    let mut raw = Raw::connect(b.addr, connect).await;
    raw.subscribed("devices/dev1/commands/#", QoS::AtLeastOnce)
        .await;

    let cmd = |i: u8| {
        command(
            &format!("devices/dev1/commands/{i}"),
            QoS::AtLeastOnce,
            Bytes::from(vec![i]),
        )
    };
    assert_eq!(b.broker.publish("t1", cmd(0)), 1);
    let first = match raw.recv().await {
        Some(Packet::Publish(p)) => p,
        other => panic!("expected PUBLISH, got {other:?}"),
    };
    // Window of 1 is full: the next two wait in the queue, the fourth is dropped.
    assert_eq!(b.broker.publish("t1", cmd(1)), 1);
    assert_eq!(b.broker.publish("t1", cmd(2)), 1);
    assert_eq!(b.broker.publish("t1", cmd(3)), 0);
    assert_eq!(b.broker.metrics().messages_dropped_total, 1);
    assert!(raw.recv_within(Duration::from_millis(200)).await.is_err());

    let mut next = first;
    for expected in 1..=2u8 {
        raw.send(&Packet::PubAck(Ack {
            packet_id: next.packet_id,
            code: ReasonCode::Success,
            properties: Properties::default(),
        }))
        .await;
        next = match raw.recv().await {
            Some(Packet::Publish(p)) => p,
            other => panic!("expected PUBLISH, got {other:?}"),
        };
        assert_eq!(next.payload.as_ref(), &[expected]);
    }
}

#[tokio::test]
async fn client_maximum_packet_size_is_respected() {
    let b = start_default().await;
    let mut connect = connect_packet(Protocol::V5, "c", "dev1", 0);
    connect.properties.maximum_packet_size = Some(100);
    let mut raw = Raw::connect(b.addr, connect).await;
    raw.subscribed("devices/dev1/commands/#", QoS::AtMostOnce)
        .await;
    b.broker.publish(
        "t1",
        command(
            "devices/dev1/commands/big",
            QoS::AtMostOnce,
            Bytes::from(vec![0u8; 200]),
        ),
    );
    b.broker.publish(
        "t1",
        command(
            "devices/dev1/commands/small",
            QoS::AtMostOnce,
            Bytes::from_static(b"ok"),
        ),
    );
    match raw.recv().await {
        Some(Packet::Publish(p)) => assert_eq!(p.topic, "devices/dev1/commands/small"),
        other => panic!("expected PUBLISH, got {other:?}"),
    }
    assert_eq!(b.broker.metrics().messages_dropped_total, 1);
}

#[tokio::test]
async fn will_published_on_abnormal_disconnect_only() {
    let b = start_default().await;
    let mut connect = connect_packet(Protocol::V311, "w1", "dev1", 0);
    connect.will = will("devices/me/status", b"offline");
    let raw = Raw::connect(b.addr, connect).await;
    drop(raw);
    assert!(wait_until(|| b.sink.count() == 1).await);
    assert_eq!(
        b.sink.topics(),
        vec![("t1".to_string(), "devices/dev1/status".to_string())]
    );

    let mut connect = connect_packet(Protocol::V311, "w2", "dev1", 0);
    connect.will = will("devices/me/status", b"offline");
    let mut raw = Raw::connect(b.addr, connect).await;
    raw.send(&Packet::Disconnect(Disconnect {
        code: ReasonCode::Success,
        properties: Properties::default(),
    }))
    .await;
    raw.until_closed().await;
    assert!(wait_until(|| b.sink.disconnects.lock().len() == 2).await);
    assert_eq!(b.sink.count(), 1);
}

#[tokio::test]
async fn v5_subscription_identifier_is_delivered() {
    // MQTT-3.3.4-3: the PUBLISH carries the identifier of the matching subscription.
    let b = start_default().await;
    let mut raw = Raw::connect(b.addr, connect_packet(Protocol::V5, "c", "dev1", 0)).await;
    let mut sub = subscribe("devices/dev1/x", QoS::AtMostOnce);
    if let Packet::Subscribe(s) = &mut sub {
        s.properties.subscription_identifiers = vec![5];
    }
    raw.send(&sub).await;
    match raw.recv().await {
        Some(Packet::SubAck(s)) => assert_eq!(s.codes, vec![ReasonCode::Success]),
        other => panic!("expected SUBACK, got {other:?}"),
    }
    b.broker.publish(
        "t1",
        wulian_broker::OutboundMessage {
            topic: "devices/dev1/x".into(),
            payload: bytes::Bytes::from_static(b"hi"),
            qos: wulian_broker::QoS::AtMostOnce,
            retain: false,
            properties: Properties::default(),
        },
    );
    match raw.recv().await {
        Some(Packet::Publish(p)) => assert_eq!(p.properties.subscription_identifiers, vec![5]),
        other => panic!("expected PUBLISH, got {other:?}"),
    }
}

#[tokio::test]
async fn invalid_filter_gets_topic_filter_invalid() {
    let b = start_default().await;
    let mut raw = Raw::connect(b.addr, connect_packet(Protocol::V5, "c", "dev1", 0)).await;
    raw.send(&subscribe("devices/dev1/a#", QoS::AtMostOnce))
        .await;
    match raw.recv().await {
        Some(Packet::SubAck(s)) => assert_eq!(s.codes, vec![ReasonCode::TopicFilterInvalid]),
        other => panic!("expected SUBACK, got {other:?}"),
    }
    let mut raw = Raw::connect(b.addr, connect_packet(Protocol::V311, "d", "dev1", 0)).await;
    raw.send(&subscribe("devices/dev1/a#", QoS::AtMostOnce))
        .await;
    match raw.recv().await {
        Some(Packet::SubAck(s)) => assert!(s.codes[0].is_error()),
        other => panic!("expected SUBACK, got {other:?}"),
    }
}

/// Several packets in one socket write (one read on the broker's side).
fn one_write(protocol: Protocol, packets: &[Packet]) -> Vec<u8> {
    let mut out = bytes::BytesMut::new();
    for p in packets {
        wulian_mqtt::encode(p, protocol, &mut out).unwrap();
    }
    out.to_vec()
}

#[tokio::test]
async fn read_batch_answers_each_publish_in_order_v5() {
    let b = start_default().await;
    let mut raw = Raw::connect(b.addr, connect_packet(Protocol::V5, "dev1", "dev1", 30)).await;
    let topic = "devices/dev1/telemetry";
    raw.send_bytes(&one_write(
        Protocol::V5,
        &[
            publish(topic, QoS::AtLeastOnce, 1, b"one"),
            publish(topic, QoS::AtLeastOnce, 2, b"reject"),
            publish(topic, QoS::AtMostOnce, 0, b"three"),
            // Outside the device's policy: refused by the broker between sink batches.
            publish("devices/dev2/telemetry", QoS::AtLeastOnce, 4, b"four"),
            publish(topic, QoS::AtLeastOnce, 5, b"five"),
            Packet::PingReq,
            publish(topic, QoS::AtLeastOnce, 6, b"six"),
        ],
    ))
    .await;
    let mut answers = Vec::new();
    while answers.len() < 6 {
        match raw.recv().await {
            Some(Packet::PubAck(a)) => answers.push((a.packet_id, a.code)),
            Some(Packet::PingResp) => answers.push((0, ReasonCode::Success)),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        answers,
        [
            (1, ReasonCode::Success),
            (2, ReasonCode::QuotaExceeded),
            (4, ReasonCode::NotAuthorized),
            (5, ReasonCode::Success),
            (0, ReasonCode::Success),
            (6, ReasonCode::Success),
        ]
    );
    let payloads: Vec<Bytes> = b
        .sink
        .messages
        .lock()
        .iter()
        .map(|(_, m)| m.payload.clone())
        .collect();
    assert_eq!(payloads, ["one", "three", "five", "six"].map(Bytes::from));
}

#[tokio::test]
async fn read_batch_refusal_closes_after_earlier_acks_v311() {
    let b = start_default().await;
    let mut raw = Raw::connect(b.addr, connect_packet(Protocol::V311, "dev1", "dev1", 30)).await;
    let topic = "devices/dev1/telemetry";
    raw.send_bytes(&one_write(
        Protocol::V311,
        &[
            publish(topic, QoS::AtLeastOnce, 1, b"one"),
            publish(topic, QoS::AtMostOnce, 0, b"two"),
            publish(topic, QoS::AtLeastOnce, 3, b"three"),
            publish(topic, QoS::AtLeastOnce, 4, b"reject"),
            publish(topic, QoS::AtLeastOnce, 5, b"five"),
        ],
    ))
    .await;
    // 3.1.1 has no negative PUBACK: the messages before the refusal are acknowledged, in
    // order, then the connection closes; nothing after the refusal is acknowledged.
    let acks: Vec<u16> = raw
        .until_closed()
        .await
        .into_iter()
        .map(|p| match p {
            Packet::PubAck(a) => a.packet_id,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(acks, [1, 3]);
    let payloads: Vec<Bytes> = b
        .sink
        .messages
        .lock()
        .iter()
        .map(|(_, m)| m.payload.clone())
        .collect();
    assert_eq!(&payloads[..3], ["one", "two", "three"].map(Bytes::from));
}

/// A two-step sink (`MessageSink::stage_publish_batch`): subscribers get an accepted message
/// at once, the publisher's PUBACK waits for the durable step, and a failure there reaches
/// the publisher as a negative PUBACK (5.0) although the message was already routed.
#[tokio::test]
async fn two_step_sink_routes_before_durable_and_acks_after() {
    let b = start_default().await;
    b.sink
        .two_step
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let topic = "devices/dev1/telemetry";
    let mut sub = Raw::connect(b.addr, connect_packet(Protocol::V311, "sub", "dev1", 30)).await;
    sub.subscribed(topic, QoS::AtMostOnce).await;
    let mut publisher = Raw::connect(b.addr, connect_packet(Protocol::V5, "pub", "dev1", 30)).await;

    publisher
        .send(&publish(topic, QoS::AtLeastOnce, 7, b"hello"))
        .await;
    assert_eq!(sub.next_publish().await.payload, Bytes::from("hello"));
    // Not durable yet: no PUBACK.
    assert_eq!(
        publisher.recv_within(Duration::from_millis(300)).await,
        Err(()),
        "PUBACK before the durable step"
    );
    b.sink.durable_gate.notify_one();
    match publisher.recv().await {
        Some(Packet::PubAck(a)) => assert_eq!((a.packet_id, a.code), (7, ReasonCode::Success)),
        other => panic!("expected PUBACK, got {other:?}"),
    }
    assert_eq!(b.sink.count(), 1);

    // Refused when checked: never routed, refused at once.
    publisher
        .send(&publish(topic, QoS::AtLeastOnce, 8, b"reject"))
        .await;
    assert!(sub.no_publish_within(Duration::from_millis(200)).await);
    b.sink.durable_gate.notify_one();
    match publisher.recv().await {
        Some(Packet::PubAck(a)) => {
            assert_eq!((a.packet_id, a.code), (8, ReasonCode::QuotaExceeded))
        }
        other => panic!("expected PUBACK, got {other:?}"),
    }

    // Accepted, routed, then the durable step fails: a negative PUBACK.
    b.sink
        .fail_durable
        .store(true, std::sync::atomic::Ordering::SeqCst);
    publisher
        .send(&publish(topic, QoS::AtLeastOnce, 9, b"lost"))
        .await;
    assert_eq!(sub.next_publish().await.payload, Bytes::from("lost"));
    b.sink.durable_gate.notify_one();
    match publisher.recv().await {
        Some(Packet::PubAck(a)) => assert_eq!(
            (a.packet_id, a.code),
            (9, ReasonCode::ImplementationSpecificError)
        ),
        other => panic!("expected PUBACK, got {other:?}"),
    }
    assert_eq!(b.sink.count(), 1);
}

/// QoS 2 PUBLISHes of one read go to the sink as one batch, except a retransmission of a
/// packet id the batch already holds: it is answered after the batch, without the sink
/// (exactly once, MQTT-4.3.3-2), and every PUBREC keeps the order of its PUBLISH.
#[tokio::test]
async fn qos2_read_batch_keeps_exactly_once_and_order() {
    let b = start_default().await;
    let mut raw = Raw::connect(b.addr, connect_packet(Protocol::V5, "c", "dev1", 0)).await;
    let topic = "devices/dev1/telemetry";
    let mut dup = publish(topic, QoS::ExactlyOnce, 1, b"a");
    if let Packet::Publish(p) = &mut dup {
        p.dup = true;
    }
    raw.send_bytes(&one_write(
        Protocol::V5,
        &[
            publish(topic, QoS::ExactlyOnce, 1, b"a"),
            publish(topic, QoS::AtLeastOnce, 2, b"b"),
            publish(topic, QoS::ExactlyOnce, 3, b"c"),
            dup,
            publish(topic, QoS::ExactlyOnce, 4, b"reject"),
        ],
    ))
    .await;
    let mut answers = Vec::new();
    for _ in 0..5 {
        match raw.recv().await {
            Some(Packet::PubRec(a)) => answers.push(("PUBREC", a.packet_id, a.code)),
            Some(Packet::PubAck(a)) => answers.push(("PUBACK", a.packet_id, a.code)),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        answers,
        [
            ("PUBREC", 1, ReasonCode::Success),
            ("PUBACK", 2, ReasonCode::Success),
            ("PUBREC", 3, ReasonCode::Success),
            ("PUBREC", 1, ReasonCode::Success),
            ("PUBREC", 4, ReasonCode::QuotaExceeded),
        ]
    );
    let payloads: Vec<Bytes> = b
        .sink
        .messages
        .lock()
        .iter()
        .map(|(_, m)| m.payload.clone())
        .collect();
    assert_eq!(payloads, ["a", "b", "c"].map(Bytes::from));
    for id in [1, 3] {
        raw.send(&Packet::PubRel(Ack {
            packet_id: id,
            code: ReasonCode::Success,
            properties: Properties::default(),
        }))
        .await;
        assert!(
            matches!(raw.recv().await, Some(Packet::PubComp(a)) if a.packet_id == id && a.code == ReasonCode::Success)
        );
    }
}
